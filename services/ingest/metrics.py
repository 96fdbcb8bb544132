"""Ingest metrics (definitions only)."""

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import service_registry

#: This service's metrics only (its ``/metrics``); see :func:`shared.metrics.service_registry`.
REGISTRY = service_registry()

REQUESTS = Counter(
    "shotline_ingest_requests_total",
    "POST /v1/detections requests by HTTP status",
    ["status"],
    registry=REGISTRY,
)
DETECTIONS = Counter(
    "shotline_ingest_detections_total",
    "Detections by per-item outcome",
    ["outcome"],  # accepted, duplicate, rejected
    registry=REGISTRY,
)
ACK_LATENCY = Histogram(
    "shotline_ingest_kafka_ack_seconds",
    "Time from handing a batch to the producer to Kafka's acknowledgement",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
REQUEST_LATENCY = Histogram(
    "shotline_ingest_request_duration_seconds",
    "Time to answer POST /v1/detections",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
DEDUP_ENTRIES = Gauge(
    "shotline_ingest_dedup_entries",
    "Detection ids remembered for duplicate replies",
    registry=REGISTRY,
)
ARRIVAL_DELAY = Histogram(
    "shotline_ingest_arrival_delay_seconds",
    "Time from a pulse's arrival at the sensor to its acceptance by ingest",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
