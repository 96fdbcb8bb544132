"""Every Shotline metric lives in its own service's registry, none in the process-wide one.

Under ``shotline run`` the three services share a process: a metric registered in
prometheus_client's default registry would be served by no ``/metrics`` at all (each serves
its own registry), and one registered in another service's registry would be counted under
the wrong job.
"""

from __future__ import annotations

import importlib
import pkgutil

import prometheus_client
import pytest
from prometheus_client.metrics import MetricWrapperBase

import services

SERVICES = ("ingest", "locator", "dispatch")


def _import_everything() -> None:
    for module in pkgutil.walk_packages(services.__path__, "services."):
        importlib.import_module(module.name)


def test_no_shotline_metric_is_in_the_default_registry() -> None:
    _import_everything()
    stray = sorted(
        metric.name
        for metric in prometheus_client.REGISTRY.collect()
        if metric.name.startswith("shotline")
    )
    assert stray == [], "define them in services/<name>/metrics.py with registry=REGISTRY"


@pytest.mark.parametrize("service", SERVICES)
def test_a_services_metrics_are_its_own_and_named_after_it(service: str) -> None:
    module = importlib.import_module(f"services.{service}.metrics")
    names = {
        metric.name
        for metric in module.REGISTRY.collect()
        if not metric.name.startswith(("process_", "python_"))
    }
    assert names and all(n.startswith(f"shotline_{service}_") for n in names), names
    defined = [v for v in vars(module).values() if isinstance(v, MetricWrapperBase)]
    assert defined
    for metric in defined:
        assert metric in module.REGISTRY._collector_to_names, metric
