"""``shotline dispatch dead-letters list`` and ``replay`` against the real database."""

from __future__ import annotations

import asyncio
import os
import sys

from tests.integration.dispatch.helpers import admin, eventually, incident, square

CLI = [sys.executable, "-c", "from services.dispatch.cli import app; app()"]


async def _cli(database_url: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "DATABASE_URL": database_url, "COLUMNS": "250"}
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_dead_letters_are_listed_and_replayed_from_the_command_line(
    make_settings, services, receivers, publish, database_url
):
    service = await services(make_settings(max_attempts=1))
    down = await receivers(default=502)
    async with admin(service) as client:
        await client.post(
            "/v1/subscriptions",
            json={
                "name": "pd",
                "channel": "webhook",
                "url": down.url,
                "geofence": square(-79.99, 40.44),
            },
        )
        record = incident()
        await publish(record)

        async def dead() -> bool:
            rows = (await client.get("/v1/deliveries", params={"status": "dead"})).json()
            return len(rows) == 1

        await eventually(dead, what="a dead letter")
        code, out, err = await _cli(database_url, "dead-letters", "list")
        assert code == 0, err
        assert record.incident_id in out and "1 dead letter" in err

        code, _, err = await _cli(database_url, "replay", "999999")
        assert code == 2 and "delivery 999999 not found" in err

        down.default = 200
        code, out, err = await _cli(database_url, "replay", "--all-dead")
        assert code == 0, err
        assert "replayed 1 delivery" in out

        async def delivered() -> bool:
            rows = (await client.get("/v1/deliveries", params={"status": "delivered"})).json()
            return len(rows) == 1

        await eventually(delivered, what="replayed delivery acknowledged")
    assert len({r.headers["webhook-id"] for r in down.received}) == 1


async def test_what_did_not_arrive_is_one_list_and_one_replay_from_the_command_line(
    make_settings, services, receivers, publish, database_url
):
    """A refused delivery (failed) and an exhausted one (dead) are both listed by
    `shotline dispatch undelivered` and both sent again by `replay --all-undelivered`."""
    service = await services(make_settings(max_attempts=1))
    refuses = await receivers(default=400)
    down = await receivers(default=502)
    async with admin(service) as client:
        for name, receiver in (("refuses", refuses), ("down", down)):
            await client.post(
                "/v1/subscriptions",
                json={
                    "name": name,
                    "channel": "webhook",
                    "url": receiver.url,
                    "geofence": square(-79.99, 40.44),
                },
            )
        record = incident()
        await publish(record)

        async def both() -> bool:
            rows = (await client.get("/v1/deliveries", params={"status": "undelivered"})).json()
            return len(rows) == 2

        await eventually(both, what="a failed and a dead delivery")
        code, out, err = await _cli(database_url, "undelivered")
        assert code == 0, err
        assert "failed" in out and "dead" in out and "2 undelivered" in err

        refuses.default = down.default = 200
        code, out, err = await _cli(database_url, "replay", "--all-undelivered")
        assert code == 0, err
        assert "replayed 2 deliveries" in out

        async def delivered() -> bool:
            rows = (await client.get("/v1/deliveries", params={"status": "delivered"})).json()
            return len(rows) == 2

        await eventually(delivered, what="both replayed and acknowledged")
