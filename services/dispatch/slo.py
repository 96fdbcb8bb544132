"""The shot-to-alert SLO: what a dispatcher lives through, counted once per alert.

The product promise is an alert at the dispatch centre within :data:`SLO_S` seconds of the
shot. The SLI is per delivery (one subscriber, one message):

* a subscriber's *first* alert of an incident (event ``created``) is timed from the
  incident's first shot; a later one (an update, a cancellation) from the incident's latest
  round, the one that caused it;
* it is *good* when the receiver acknowledged it within :data:`SLO_S`, *bad* as soon as it
  is older than that without an acknowledgement — counted then (a CAD that is down is a
  breach while it lasts, not silence), and not again when it finally arrives;
* the oldest undelivered alert per subscription is a gauge, so an alert rule pages while
  one waits.

:func:`judge_acknowledged` is pure; :func:`refresh` carries the database's view into the
metrics (called every few seconds by the delivery workers).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from services.dispatch import metrics, store

#: The shot-to-alert objective, seconds (the product's promise to dispatch centres).
SLO_S = 60.0

Kind = Literal["first", "update"]


def kind_of(event: str) -> Kind:
    """``first`` for a subscriber's first message of an incident (``created``), else
    ``update``."""
    return "first" if event == "created" else "update"


def due_at(event: str, record: dict[str, Any]) -> datetime:
    """When the alert's clock started: the first shot for a first alert, the latest round
    for a later one. Raises KeyError/ValueError on a record without those times."""
    field = "shot_time" if kind_of(event) == "first" else "last_shot_time"
    return datetime.fromisoformat(str(record[field]).replace("Z", "+00:00"))


def judge_acknowledged(latency_s: float, slo_s: float = SLO_S) -> Literal["good", "bad"]:
    """An acknowledged alert is good when it arrived within the SLO (its boundary included)."""
    return "good" if latency_s <= slo_s else "bad"


async def observe_acknowledged(
    conn: store.Conn, delivery_id: int, event: str, channel: str, latency_s: float
) -> None:
    """Record an acknowledged alert's latency and, unless it was counted bad already (it
    passed the SLO while undelivered), its SLO event."""
    kind = kind_of(event)
    metrics.ALERT_LATENCY.labels(kind, channel).observe(max(0.0, latency_s))
    if judge_acknowledged(latency_s) == "good":
        metrics.SLO_EVENTS.labels(kind, "good").inc()
    elif await store.mark_slo_breach(conn, delivery_id):
        metrics.SLO_EVENTS.labels(kind, "bad").inc()


async def refresh(conn: store.Conn, now: datetime) -> None:
    """Count alerts that just passed the SLO undelivered; refresh the per-subscription
    gauges of undelivered alerts and of subscriptions dispatch disabled itself."""
    for event in await store.mark_slo_breaches(conn, slo_s=SLO_S):
        metrics.SLO_EVENTS.labels(kind_of(event), "bad").inc()
    ages = await store.oldest_undelivered(conn)
    _replace(
        metrics.OLDEST_UNDELIVERED,
        {a.subscription_id: max(0.0, (now - a.oldest_due_at).total_seconds()) for a in ages},
    )
    _replace(metrics.UNDELIVERED, {a.subscription_id: float(a.undelivered) for a in ages})
    _replace(
        metrics.SUBSCRIPTION_DISABLED,
        {sub: 1.0 for sub, _ in await store.disabled_by_receivers(conn)},
    )


def _replace(gauge: Any, values: dict[str, float]) -> None:
    """Set one label per key and remove the labels no longer present (a subscription whose
    alerts all arrived disappears from the gauge instead of keeping its last age)."""
    for key, value in values.items():
        gauge.labels(key).set(value)
    for labels in list(gauge._metrics):  # prometheus_client keeps children by label tuple
        if labels[0] not in values:
            gauge.remove(*labels)
