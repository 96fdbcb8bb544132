"""The ``shotline dispatch`` process itself, killed with SIGKILL in the middle of a send.

``test_crash_and_scale_out.py`` crashes the service in-process; this one kills the real
process the way an OOM killer or a lost node does, then starts another: the alert still
arrives, as a retry of the same message (same webhook-id, same body), and the successor
exits 0 on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import httpx
import orjson

from shared.schemas import IncidentRecord
from tests.integration.dispatch.helpers import ADMIN_TOKEN, incident, square
from tests.support.processes import kill_leftovers, start_service, stop_cleanly


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start_process(make_settings, port: int) -> asyncio.subprocess.Process:  # type: ignore[no-untyped-def]
    settings = make_settings()  # the fixture's broker, database, topics and group
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "DATABASE_URL": settings.database_url,
        "SHOTLINE_INCIDENTS_TOPIC": settings.incidents_topic,
        "SHOTLINE_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "SHOTLINE_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "SHOTLINE_LOG_LEVEL": "WARNING",
        "SHOTLINE_DISPATCH_ADMIN_TOKEN": ADMIN_TOKEN,
        "SHOTLINE_DISPATCH_GROUP_ID": settings.group_id,
        "SHOTLINE_DISPATCH_PORT": str(port),
        "SHOTLINE_DISPATCH_POLL_INTERVAL_S": "0.1",
        # one attempt may take 2.5 s at most, so a dead worker's claim expires after 3 s
        "SHOTLINE_DISPATCH_POOL_TIMEOUT_S": "0.5",
        "SHOTLINE_DISPATCH_CONNECT_TIMEOUT_S": "0.5",
        "SHOTLINE_DISPATCH_WRITE_TIMEOUT_S": "0.5",
        "SHOTLINE_DISPATCH_READ_TIMEOUT_S": "1.0",
        "SHOTLINE_DISPATCH_LEASE_S": "3.0",
        "SHOTLINE_DISPATCH_ALLOWED_TARGET_NETWORKS": '["127.0.0.0/8"]',  # its receiver
    }
    process = await start_service("dispatch", env)
    async with httpx.AsyncClient(timeout=2) as client:
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            assert process.returncode is None, "dispatch exited at start-up"
            try:
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return process
            except httpx.TransportError:
                pass
            assert asyncio.get_running_loop().time() < deadline, "dispatch never became ready"
            await asyncio.sleep(0.2)


async def test_a_dispatch_process_killed_mid_send_is_followed_by_the_same_alert_once_more(
    make_settings, receivers, publish
) -> None:
    port = _free_port()
    first = await _start_process(make_settings, port)
    successor = None
    try:
        cad = await receivers(hang=True)  # holds the first attempt open
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10,
        ) as client:
            created = await client.post(
                "/v1/subscriptions",
                json={"name": "pd", "channel": "webhook", "url": cad.url,
                      "geofence": square(-79.99, 40.44)},
            )
            assert created.status_code == 201, created.text
        record: IncidentRecord = incident()
        await publish(record)
        await cad.wait_for(1, timeout_s=30)
        first.send_signal(signal.SIGKILL)  # dies mid-request: its claim outlives it
        assert await first.wait() == -signal.SIGKILL

        cad.hang = False
        successor = await _start_process(make_settings, _free_port())
        retried = await cad.wait_for(2, timeout_s=30)
        await asyncio.sleep(0.5)  # would a third send show up?
        assert len(cad.received) == 2
        assert retried[0].headers["webhook-id"] == retried[1].headers["webhook-id"]
        assert retried[0].body == retried[1].body  # the same alert, not a second one
        assert orjson.loads(retried[1].body)["data"]["incident_id"] == record.incident_id

        await stop_cleanly(successor)
    finally:
        await kill_leftovers(first, successor)
