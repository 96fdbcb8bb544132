"""The shot-to-alert SLO as a dispatcher lives it, and "did not arrive" as one view.

Real broker, database and HTTP receivers. The SLO judgement runs in the delivery workers
every few seconds (``slo.refresh``); the tests call it directly with their own clock so they
need not wait for it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.dispatch import metrics, slo
from tests.integration.dispatch.helpers import admin, eventually, incident, square


def _value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def _slo(kind: str, result: str) -> float:
    return _value("shotline_dispatch_slo_events_total", kind=kind, result=result)


async def _subscribe(client, url: str, name: str = "Zone 2 CAD") -> str:
    answer = await client.post(
        "/v1/subscriptions",
        json={"name": name, "channel": "webhook", "url": url, "geofence": square(-79.99, 40.44)},
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["subscription_id"])


async def test_a_cad_outage_is_a_breach_while_it_lasts_and_is_counted_once(
    make_settings, services, receivers, publish
):
    """A first alert 90 s after its shot, to a CAD that answers 503: the gauge shows its age,
    the SLI counts one bad event at once (not silence until a retry succeeds), and neither
    later refreshes nor the late acknowledgement count it again."""
    service = await services(make_settings(max_attempts=50))
    cad = await receivers(default=503)
    async with admin(service) as client:
        sub = await _subscribe(client, cad.url)
        record = incident()
        record = record.model_copy(
            update={
                "shot_time": datetime.now(UTC) - timedelta(seconds=90),
                "last_shot_time": datetime.now(UTC) - timedelta(seconds=89),
            }
        )
        bad_before, good_before = _slo("first", "bad"), _slo("first", "good")
        await publish(record)
        await cad.wait_for(1)

        await slo.refresh(service.pool, datetime.now(UTC))
        age = _value("shotline_dispatch_oldest_undelivered_alert_seconds", subscription_id=sub)
        assert 89 < age < 120, age
        assert _value("shotline_dispatch_undelivered_alerts", subscription_id=sub) == 1
        assert _slo("first", "bad") - bad_before == 1
        await slo.refresh(service.pool, datetime.now(UTC))
        assert _slo("first", "bad") - bad_before == 1, "one late alert is one bad event"

        cad.default = 200

        async def delivered() -> bool:
            rows = (await client.get("/v1/deliveries", params={"status": "delivered"})).json()
            return len(rows) == 1

        await eventually(delivered, what="the CAD back up acknowledging", timeout_s=15)
        await slo.refresh(service.pool, datetime.now(UTC))
    assert _slo("first", "bad") - bad_before == 1, "its late acknowledgement is not counted"
    assert _slo("first", "good") == good_before
    assert (
        metrics.REGISTRY.get_sample_value(
            "shotline_dispatch_oldest_undelivered_alert_seconds", {"subscription_id": sub}
        )
        is None
    ), "a subscription whose alerts all arrived leaves the gauge"
    late = _value(
        "shotline_dispatch_alert_latency_seconds_bucket", kind="first", channel="webhook", le="60.0"
    )
    total = _value("shotline_dispatch_alert_latency_seconds_count", kind="first", channel="webhook")
    assert total - late >= 1, "the acknowledgement's latency (> 60 s) is in the SLI histogram"


async def test_a_first_alert_is_timed_from_the_shot_and_an_update_from_its_round(
    make_settings, services, receivers, publish
):
    """The incident began 50 s ago (its first alert, to a subscriber who hears of it only
    now, is within the SLO); its update is caused by a round 70 s after the first shot —
    timed from that round, it is good; timed from the first shot it would be bad."""
    service = await services(make_settings())
    cad = await receivers()
    async with admin(service) as client:
        await _subscribe(client, cad.url)
        now = datetime.now(UTC)
        first = incident().model_copy(
            update={"shot_time": now - timedelta(seconds=50), "last_shot_time": now}
        )
        before = {(k, r): _slo(k, r) for k in ("first", "update") for r in ("good", "bad")}
        await publish(first)
        await cad.wait_for(1)
        update = first.model_copy(
            update={
                "version": 2,
                "event": "updated",
                "shot_time": now - timedelta(seconds=70),
                "last_shot_time": datetime.now(UTC),
                "rounds": 4,
            }
        )
        await publish(update)
        await cad.wait_for(2)

        async def judged() -> bool:
            return _slo("update", "good") - before["update", "good"] == 1

        await eventually(judged, what="the update judged")
    assert _slo("first", "good") - before["first", "good"] == 1
    assert _slo("first", "bad") == before["first", "bad"]
    assert _slo("update", "bad") == before["update", "bad"]


async def test_failed_and_dead_are_one_view_of_what_did_not_arrive_and_replay_covers_both(
    make_settings, services, receivers, publish
):
    service = await services(make_settings(max_attempts=1))
    refuses = await receivers(default=400)  # failed at once
    down = await receivers(default=502)  # dead after its one attempt
    async with admin(service) as client:
        await _subscribe(client, refuses.url, "refuses")
        await _subscribe(client, down.url, "down")
        await publish(incident())

        async def both_gone() -> bool:
            rows = (await client.get("/v1/deliveries", params={"status": "undelivered"})).json()
            return sorted(r["status"] for r in rows) == ["dead", "failed"]

        await eventually(both_gone, what="one failed and one dead delivery")
        await slo.refresh(service.pool, datetime.now(UTC))
        subs = (await client.get("/v1/subscriptions")).json()
        for sub in subs:  # neither is forgotten: both page until replayed
            assert (
                _value(
                    "shotline_dispatch_undelivered_alerts", subscription_id=sub["subscription_id"]
                )
                == 1
            ), sub["name"]
        refuses.default = down.default = 200
        answer = await client.post("/v1/deliveries/replay", json={})
        assert answer.status_code == 200, answer.text
        assert answer.json()["replayed"] == 2

        async def all_arrived() -> bool:
            rows = (await client.get("/v1/deliveries", params={"status": "delivered"})).json()
            return len(rows) == 2

        await eventually(all_arrived, what="both replayed and acknowledged")
        assert (await client.get("/v1/deliveries", params={"status": "undelivered"})).json() == []
        await slo.refresh(service.pool, datetime.now(UTC))
        for sub in subs:
            assert (
                metrics.REGISTRY.get_sample_value(
                    "shotline_dispatch_undelivered_alerts",
                    {"subscription_id": sub["subscription_id"]},
                )
                is None
            )


async def test_a_410_disables_a_subscription_only_with_a_gauge_that_pages(
    make_settings, services, receivers, publish
):
    """The receiver says Gone: dispatch disables the subscription and says so on
    shotline_dispatch_subscription_disabled (SubscriptionDisabled pages); a subscription an
    operator disabled is not paged for, and its rows leave the undelivered gauge."""
    service = await services(make_settings())
    gone = await receivers(default=410)
    quiet = await receivers(default=503)
    async with admin(service) as client:
        gone_sub = await _subscribe(client, gone.url, "gone")
        quiet_sub = await _subscribe(client, quiet.url, "switched off")
        await publish(incident())
        await gone.wait_for(1)
        await quiet.wait_for(1)
        assert (await client.post(f"/v1/subscriptions/{quiet_sub}/disable")).status_code == 200

        async def disabled() -> bool:
            sub = (await client.get(f"/v1/subscriptions/{gone_sub}")).json()
            return sub["status"] == "disabled"

        await eventually(disabled, what="the 410 subscription disabled")
        await slo.refresh(service.pool, datetime.now(UTC))
    assert _value("shotline_dispatch_subscription_disabled", subscription_id=gone_sub) == 1
    assert (
        metrics.REGISTRY.get_sample_value(
            "shotline_dispatch_subscription_disabled", {"subscription_id": quiet_sub}
        )
        is None
    )
    assert _value("shotline_dispatch_undelivered_alerts", subscription_id=gone_sub) == 1
    assert (
        metrics.REGISTRY.get_sample_value(
            "shotline_dispatch_undelivered_alerts", {"subscription_id": quiet_sub}
        )
        is None
    )
