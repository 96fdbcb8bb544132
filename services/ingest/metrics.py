"""Ingest metrics (definitions only)."""

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "shotline_ingest_requests_total",
    "POST /v1/detections requests by HTTP status",
    ["status"],
)
DETECTIONS = Counter(
    "shotline_ingest_detections_total",
    "Detections by per-item outcome",
    ["outcome"],  # accepted, duplicate, rejected
)
ACK_LATENCY = Histogram(
    "shotline_ingest_kafka_ack_seconds",
    "Time from handing a batch to the producer to Kafka's acknowledgement",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REQUEST_LATENCY = Histogram(
    "shotline_ingest_request_duration_seconds",
    "Time to answer POST /v1/detections",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DEDUP_ENTRIES = Gauge(
    "shotline_ingest_dedup_entries", "Detection ids remembered for duplicate replies"
)
ARRIVAL_DELAY = Histogram(
    "shotline_ingest_arrival_delay_seconds",
    "Time from a pulse's arrival at the sensor to its acceptance by ingest",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
