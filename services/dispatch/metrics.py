"""Dispatch metrics (definitions only)."""

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import service_registry

#: This service's metrics only (its ``/metrics``); see :func:`shared.metrics.service_registry`.
REGISTRY = service_registry()

_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_E2E = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300)

INCIDENTS_CONSUMED = Counter(
    "shotline_dispatch_incidents_consumed_total",
    "Incident records consumed, by result",
    ["result"],  # stored, duplicate, stale, poison
    registry=REGISTRY,
)
DELIVERIES_CREATED = Counter(
    "shotline_dispatch_outbox_rows_total",
    "Outbox rows written, by channel",
    ["channel"],
    registry=REGISTRY,
)
SAME_SHOT = Counter(
    "shotline_dispatch_same_shot_incidents_total",
    "Incident versions stored that another zone's incident already reported (one shot heard "
    "across a zone boundary); subscribers alerted to that one are not alerted again",
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "shotline_dispatch_deliveries_total",
    "Delivery attempts finished, by resulting status and channel",
    ["status", "channel"],  # delivered, retry, failed, dead, deferred
    registry=REGISTRY,
)
ATTEMPT_DURATION = Histogram(
    "shotline_dispatch_attempt_duration_seconds",
    "Duration of one delivery attempt (HTTP request to the receiver)",
    ["channel"],
    buckets=_FAST,
    registry=REGISTRY,
)
DEAD_LETTERS = Gauge(
    "shotline_dispatch_dead_letters",
    "Deliveries in the dead-letter state (refreshed periodically)",
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "shotline_dispatch_queue_depth",
    "Pending deliveries (refreshed periodically)",
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "shotline_dispatch_in_flight", "Deliveries being sent by this instance", registry=REGISTRY
)
SHOT_TO_ACK = Histogram(
    "shotline_dispatch_shot_to_ack_seconds",
    "End to end: first shot's emission time to the receiver's acknowledgement",
    ["channel"],
    buckets=_E2E,
    registry=REGISTRY,
)
DETECTION_TO_ACK = Histogram(
    "shotline_dispatch_detection_to_ack_seconds",
    "First detection received by ingest to the receiver's acknowledgement",
    ["channel"],
    buckets=_E2E,
    registry=REGISTRY,
)
CONSUMED_TO_ACK = Histogram(
    "shotline_dispatch_consumed_to_ack_seconds",
    "Incident version stored by dispatch to the receiver's acknowledgement",
    ["channel"],
    buckets=_FAST,
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "shotline_dispatch_consumer_lag",
    "Records on the incidents topic not yet consumed, per partition (after each fetch)",
    ["partition"],
    registry=REGISTRY,
)
BREAKER_STATE = Gauge(
    "shotline_dispatch_breaker_state",
    "Circuit breaker per endpoint: 0 closed, 1 half-open, 2 open",
    ["endpoint"],
    registry=REGISTRY,
)
SUBSCRIPTIONS_DISABLED = Counter(
    "shotline_dispatch_subscriptions_disabled_total",
    "Subscriptions disabled automatically (e.g. 410 Gone), by reason",
    ["reason"],
    registry=REGISTRY,
)

# --- the shot-to-alert SLO (services.dispatch.slo) -------------------------------------------

_SLI = (1, 2, 3, 5, 10, 15, 20, 30, 45, 60, 90, 120, 300, 900, 3600)

ALERT_LATENCY = Histogram(
    "shotline_dispatch_alert_latency_seconds",
    "The SLI: shot to the receiver's acknowledgement. kind=first: a subscriber's first alert "
    "of an incident, from its first shot; kind=update: a later one, from the round that "
    "caused it",
    ["kind", "channel"],
    buckets=_SLI,
    registry=REGISTRY,
)
SLO_EVENTS = Counter(
    "shotline_dispatch_slo_events_total",
    "Alerts judged against the 60 s SLO, each once: good = acknowledged within 60 s of its "
    "shot; bad = not acknowledged 60 s after it (counted then, delivered or not)",
    ["kind", "result"],
    registry=REGISTRY,
)
OLDEST_UNDELIVERED = Gauge(
    "shotline_dispatch_oldest_undelivered_alert_seconds",
    "Per subscription: age (from its shot) of the oldest alert that did not arrive "
    "(pending, failed or dead); absent when every alert arrived",
    ["subscription_id"],
    registry=REGISTRY,
)
UNDELIVERED = Gauge(
    "shotline_dispatch_undelivered_alerts",
    "Per subscription: alerts that did not arrive (pending, failed or dead)",
    ["subscription_id"],
    registry=REGISTRY,
)
SUBSCRIPTION_DISABLED = Gauge(
    "shotline_dispatch_subscription_disabled",
    "1 per subscription that dispatch switched off itself (its receiver answered 410 Gone); "
    "one an operator disabled is not listed",
    ["subscription_id"],
    registry=REGISTRY,
)
DOWNGRADES = Counter(
    "shotline_dispatch_gunfire_downgrades_total",
    "Messages planned to subscribers alerted to an incident as gunfire that is now classified "
    "otherwise, by what they are told: downgraded (still of a class they take) or cancelled",
    ["told"],
    registry=REGISTRY,
)
SUPERSEDED = Counter(
    "shotline_dispatch_deliveries_superseded_total",
    "Outbox rows never to be sent: collapsed into a newer version of their incident, older "
    "than one sent, after a cancel, or re-planned after a subscription change",
    registry=REGISTRY,
)
PLACES_REFRESHES = Counter(
    "shotline_dispatch_places_refreshes_total",
    "Rebuilds of the in-memory place index from the city's layers, by result (a failed one "
    "leaves the previous index answering)",
    ["result"],  # rebuilt, failed
    registry=REGISTRY,
)
PLACES_LOOKUP = Histogram(
    "shotline_dispatch_places_lookup_seconds",
    "Time to name one incident version's place (areas, nearest address and intersection)",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
    registry=REGISTRY,
)


_REVIEW = (1, 2, 5, 10, 15, 20, 30, 45, 60, 120, 300)

REVIEW_QUEUED = Counter(
    "shotline_dispatch_review_queued_total",
    "Incidents queued for human review (a review-required subscription waits for them)",
    registry=REGISTRY,
)
REVIEW_DECISION_S = Histogram(
    "shotline_dispatch_review_decision_seconds",
    "Time from an incident queued for review to a reviewer's decision, by decision",
    ["decision"],  # confirm, reclassify, reject
    buckets=_REVIEW,
    registry=REGISTRY,
)
REVIEW_LATE = Counter(
    "shotline_dispatch_review_late_total",
    "Review decisions taken after the review deadline (the incident went out unreviewed)",
    registry=REGISTRY,
)
REVIEW_UNREVIEWED = Counter(
    "shotline_dispatch_review_unreviewed_total",
    "Incidents delivered unreviewed because the review deadline passed (fail open)",
    registry=REGISTRY,
)
REVIEW_QUEUE_LENGTH = Gauge(
    "shotline_dispatch_review_queue_length",
    "Incidents waiting for a reviewer's decision",
    registry=REGISTRY,
)
REVIEW_QUEUE_OLDEST_S = Gauge(
    "shotline_dispatch_review_queue_oldest_seconds",
    "How long the oldest undecided incident has waited in the review queue (queue wait)",
    registry=REGISTRY,
)
SILENCED = Counter(
    "shotline_dispatch_silenced_total",
    "Incident versions whose delivery a silence held",
    registry=REGISTRY,
)
