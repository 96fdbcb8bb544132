"""Locator metrics (definitions only)."""

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import service_registry

#: This service's metrics only (its ``/metrics``); see :func:`shared.metrics.service_registry`.
REGISTRY = service_registry()

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

DETECTIONS_CONSUMED = Counter(
    "shotline_locator_detections_consumed_total",
    "Detection records read from the detections topic (valid ones, duplicates included)",
    registry=REGISTRY,
)
DETECTIONS_IGNORED = Counter(
    "shotline_locator_detections_ignored_total",
    "Detections the engines ignored, by reason",
    # duplicate (same detection id), late, same_onset (a second report of one onset, within
    # 1 ms at one sensor), round_merged (a located "round" within a firearm cycle, 30 ms, of
    # one its incident has: one round located twice; counted per round, not per detection)
    ["reason"],
    registry=REGISTRY,
)
INCIDENTS_PUBLISHED = Counter(
    "shotline_locator_incidents_published_total",
    "Incident versions acknowledged by Kafka, by classification and event",
    ["classification", "event"],
    registry=REGISTRY,
)
PROCESSING_LATENCY = Histogram(
    "shotline_locator_processing_latency_seconds",
    "From consuming an incident's last detection (or its window's physics deadline, if later) "
    "to Kafka's ack of the incident: the locator's own delay, physics wait excluded",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
PUBLISH_ACK_LATENCY = Histogram(
    "shotline_locator_publish_ack_latency_seconds",
    "From handing an incident version to the Kafka producer to Kafka's ack: the broker's "
    "share of the processing latency (high here and low there = look at Kafka)",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
DELIVERY_DELAY = Histogram(
    "shotline_locator_delivery_delay_seconds",
    "From ingest accepting a detection (received_at) to this locator consuming it: Kafka's "
    "and the consumer's share before the locator's own work (windows wait for it when behind)",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
WINDOW_CLOSE_DELAY = Histogram(
    "shotline_locator_window_close_delay_seconds",
    "From a zone's window deadline to the instant its window was closed: the loop's wait "
    "(a step in progress) plus the hold for records still on their way",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
END_TO_END_LATENCY = Histogram(
    "shotline_locator_end_to_end_latency_seconds",
    "From first_detection_received_at (ingest) to Kafka's ack of the incident version",
    buckets=(0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "shotline_locator_dead_letters_total",
    "Poison detection records sent to the dead-letter topic",
    registry=REGISTRY,
)
SENSOR_FLAGGED = Gauge(
    "shotline_locator_sensor_flagged",
    "1 if the sensor's arrivals are consistently off (drifting clock), else 0",
    ["zone", "sensor_id"],
    registry=REGISTRY,
)
SENSOR_MEDIAN_RESIDUAL = Gauge(
    "shotline_locator_sensor_median_residual_seconds",
    "Median signed arrival residual of the sensor over its recent solves",
    ["zone", "sensor_id"],
    registry=REGISTRY,
)
SENSORS_FLAGGED = Gauge(
    "shotline_locator_sensors_flagged",
    "Sensors currently flagged as unhealthy",
    registry=REGISTRY,
)
RETAINED_DETECTIONS = Gauge(
    "shotline_locator_retained_detections",
    "Detections held undecided by this instance's engines",
    registry=REGISTRY,
)
PARTITIONS_PAUSED = Gauge(
    "shotline_locator_partitions_paused",
    "1 while fetching is paused for back-pressure",
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "shotline_locator_consumer_lag",
    "Records on the detections topic not yet consumed, per assigned partition",
    ["partition"],
    registry=REGISTRY,
)
ZONES = Gauge("shotline_locator_zones", "Zones with an engine on this instance", registry=REGISTRY)
