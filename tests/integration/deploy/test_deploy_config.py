"""docker-compose.yml and the Prometheus config, checked statically (Docker does not run here).

Checks what breaks a deployment silently: a service that is not wired, an environment
variable no settings class reads (a typo means the default is used), a default password, and
a Prometheus config or rule that does not load.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from services.ingest.settings import IngestSettings
from shared.settings import CommonSettings

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _known_env_names() -> set[str]:
    """Every environment variable some settings class of ours reads."""
    names: set[str] = set()
    classes: list[type[CommonSettings]] = [CommonSettings, IngestSettings]
    try:
        from services.locator.settings import LocatorSettings

        classes.append(LocatorSettings)
    except ImportError:
        pass
    try:
        from services.dispatch.settings import DispatchSettings

        classes.append(DispatchSettings)
    except ImportError:
        pass
    for cls in classes:
        prefix = cls.model_config.get("env_prefix", "")
        for name, field in cls.model_fields.items():
            alias = field.validation_alias
            if alias is not None and hasattr(alias, "choices"):
                names.update(str(c).upper() for c in alias.choices)
            else:
                names.add(f"{prefix}{name}".upper())
    return names


def test_every_part_of_the_system_is_a_service() -> None:
    services = COMPOSE["services"]
    assert {
        "kafka",
        "postgres",
        "ingest",
        "locator",
        "dispatch",
        "prometheus",
        "alertmanager",
        "grafana",
    } <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["postgres"]["image"].startswith("postgres:")
    for name in ("ingest", "locator", "dispatch"):
        assert services[name]["command"] == ["shotline", name]


def test_every_shotline_variable_in_compose_is_read_by_a_settings_class() -> None:
    known = _known_env_names()
    for name in ("ingest", "locator", "dispatch", "migrate"):
        env = COMPOSE["services"][name]["environment"]
        for variable in env:
            if variable.startswith(("SHOTLINE_", "KAFKA_", "DATABASE_")):
                assert variable in known, f"{name}: {variable} is read by no settings class"


def test_no_secret_has_a_default_in_compose() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for secret in ("POSTGRES_PASSWORD", "SHOTLINE_DISPATCH_ADMIN_TOKEN", "GRAFANA_ADMIN_PASSWORD"):
        assert f"${{{secret}:?" in text, f"{secret} must be required, not defaulted"


def test_prometheus_scrapes_every_service_port_that_compose_exposes() -> None:
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        t for job in prom["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    assert targets == {"ingest:8080", "locator:9102", "dispatch:8090"}


needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (apt install prometheus; make test does it as root)",
)


def promtool(*args: str) -> None:
    """Run promtool; fails the test with its output unless it succeeds."""
    result = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_accepts_the_config_and_rules() -> None:
    promtool("check", "config", str(ROOT / "deploy/prometheus/prometheus.yml"))


@needs_promtool
def test_the_alert_rules_fire_as_their_unit_tests_say() -> None:
    """deploy/prometheus/rules_test.yml: e.g. a locator above 50 ms p99 for 10 minutes is
    ticketed, with Kafka's ack p99 recorded beside it."""
    promtool("test", "rules", str(ROOT / "deploy/prometheus/rules_test.yml"))


RULES = yaml.safe_load((ROOT / "deploy/prometheus/rules.yml").read_text())
ALERTS = {
    rule["alert"]: rule for group in RULES["groups"] for rule in group["rules"] if "alert" in rule
}
ALERTMANAGER = ROOT / "deploy/alertmanager/alertmanager.yml"


def test_the_alerts_an_sre_needs_exist_and_page():
    """A service down, consumer lag, an open breaker, a subscription disabled by its
    receiver, alerts undelivered past the SLO and dead letters each page a human."""
    pages = {
        "ServiceDown": "up",
        "LocatorConsumerLag": "shotline_locator_consumer_lag",
        "DispatchConsumerLag": "shotline_dispatch_consumer_lag",
        "DeliveryCircuitOpen": "shotline_dispatch_breaker_state",
        "SubscriptionDisabled": "shotline_dispatch_subscription_disabled",
        "UndeliveredAlertsOlderThan60s": "shotline_dispatch_oldest_undelivered_alert_seconds",
        "ShotToAlertSLOBreached": "shotline_dispatch_slo_events_total",
        "DeadLettersPresent": "shotline_dispatch_dead_letters",
    }
    for alert, metric in pages.items():
        assert alert in ALERTS, alert
        assert metric in ALERTS[alert]["expr"], alert
        assert ALERTS[alert]["labels"]["severity"] == "page", alert
    for name, rule in ALERTS.items():
        assert rule["labels"]["severity"] in ("page", "ticket"), name


def test_every_alert_has_a_rule_unit_test_in_which_it_fires():
    tests = yaml.safe_load((ROOT / "deploy/prometheus/rules_test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert set(ALERTS) - fired == set(), "alerts without a unit test that makes them fire"


def test_prometheus_sends_alerts_to_the_alertmanager_of_compose():
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = [
        t
        for am in prom["alerting"]["alertmanagers"]
        for c in am["static_configs"]
        for t in c["targets"]
    ]
    assert targets == ["alertmanager:9093"]
    assert COMPOSE["services"]["alertmanager"]["ports"] == ["9093:9093"]


needs_amtool = pytest.mark.skipif(
    shutil.which("amtool") is None,
    reason="amtool not installed (apt install prometheus-alertmanager; make test does it as root)",
)


def amtool(*args: str) -> str:
    result = subprocess.run(["amtool", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@needs_amtool
def test_amtool_accepts_the_alertmanager_config():
    amtool("check-config", str(ALERTMANAGER))


@needs_amtool
def test_every_page_reaches_the_pager_and_every_ticket_the_queue():
    """Routed as Alertmanager itself routes them (amtool config routes test), with the
    labels each alert carries."""
    for name, rule in ALERTS.items():
        severity = rule["labels"]["severity"]
        receiver = amtool(
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER}",
            f"alertname={name}",
            f"severity={severity}",
        ).strip()
        assert receiver == {"page": "page", "ticket": "ticket"}[severity], (name, receiver)


def _defined_metric_names() -> set[str]:
    """Every metric and sample name the three services' registries expose."""
    from services.dispatch import metrics as dispatch_metrics
    from services.ingest import metrics as ingest_metrics
    from services.locator import metrics as locator_metrics

    names: set[str] = set()
    for registry in (ingest_metrics.REGISTRY, locator_metrics.REGISTRY, dispatch_metrics.REGISTRY):
        for metric in registry.collect():
            names.add(metric.name)
            names.update(sample.name for sample in metric.samples)
    return names


def test_dashboard_queries_only_metrics_the_services_define() -> None:
    """A panel on a misspelt metric shows 'no data' exactly when an SRE needs it."""
    import json
    import re

    defined = _defined_metric_names()
    rules = (ROOT / "deploy/prometheus/rules.yml").read_text()
    recorded = set(re.findall(r"record: (\S+)", rules))
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/shotline.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\b(shotline[_:][a-z0-9_:]+)", target["expr"]):
                base = re.sub(r"_(bucket|total)$", "", name)
                assert base in defined or name in defined or name in recorded, (
                    f"panel {panel['title']!r} queries unknown metric {name}"
                )


def test_make_test_installs_the_system_tools_before_the_tests_need_them() -> None:
    """CI runs `make test`: promtool and amtool are installed there (as root, with apt-get)
    by one script that later tools join, before pytest runs; .ci/run is exactly `make test`."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\ntest: install") :].split("\n\n")[0]
    steps = [line.strip() for line in recipe.splitlines()[1:] if line.startswith("\t")]
    assert steps == [".ci/system-packages", "$(BIN)/ruff check .", "$(BIN)/pytest"]
    script = (ROOT / ".ci/system-packages").read_text()
    assert "PACKAGES=(prometheus prometheus-alertmanager chromium)" in script
    assert "TOOLS=(promtool amtool chromium)" in script
    assert (ROOT / ".ci/system-packages").stat().st_mode & 0o111
    assert (ROOT / ".ci/run").read_text().rstrip().endswith("\nmake test")


def test_the_system_packages_script_is_idempotent() -> None:
    """Run again with everything installed (or as a user who cannot install): it exits 0
    without touching apt."""
    result = subprocess.run(
        [str(ROOT / ".ci/system-packages")], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    if shutil.which("promtool") and shutil.which("amtool") and shutil.which("chromium"):
        assert result.stderr == ""
