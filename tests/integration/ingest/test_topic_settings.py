"""Topics ingest creates follow the settings (a real cluster needs replicas)."""

from __future__ import annotations

import uuid

from aiokafka.admin import AIOKafkaAdminClient


async def test_a_new_detections_topic_gets_the_configured_replication_factor(
    start_ingest, kafka_bootstrap
):
    topic = f"replicated-{uuid.uuid4().hex[:8]}"
    await start_ingest(detections_topic=topic, topic_partitions=2, topic_replication_factor=3)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert [len(p["replicas"]) for p in described["partitions"]] == [3, 3]
