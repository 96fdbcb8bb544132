"""Roles: every ``/v1`` route refuses (403) every role it does not serve, and says so.

The table below is the specification: which role set each route serves. A test checks
that it lists every route the app has, so a new route cannot slip in unlisted.
"""

from __future__ import annotations

import json

import httpx
from fastapi.routing import APIRoute

from services.dispatch.auth import ROLE_DEPENDENCIES
from services.oversight import audit, tokens
from services.oversight.audit import Actor
from shared.clock import utc_now
from shared.db import create_pool
from tests.integration.dispatch.helpers import ADMIN_TOKEN, square

SUB = "/v1/subscriptions/sub_x"
SIL = "/v1/silences/sil_x"
#: (method, path) -> the role(s) that the route serves (besides the bootstrap token)
ROUTES: dict[tuple[str, str], str | tuple[str, ...]] = {
    ("POST", "/v1/subscriptions"): "admin",
    ("GET", "/v1/subscriptions"): "admin",
    ("GET", SUB): "admin",
    ("PATCH", SUB): "admin",
    ("POST", SUB + "/disable"): "admin",
    ("DELETE", SUB): "admin",
    ("POST", SUB + "/rotate-secret"): "admin",
    ("GET", "/v1/deliveries"): "admin",
    ("GET", "/v1/deliveries/1"): "admin",
    ("POST", "/v1/deliveries/replay"): "admin",
    ("POST", "/v1/deliveries/1/replay"): "admin",
    ("POST", "/v1/tokens"): "admin",
    ("GET", "/v1/tokens"): "admin",
    ("POST", "/v1/tokens/nope/revoke"): "admin",
    ("GET", "/v1/incidents"): "dispatcher",
    ("GET", "/v1/incidents/inc-x"): "dispatcher",
    ("POST", "/v1/incidents/inc-x/outcome"): "dispatcher",
    ("GET", "/v1/incidents/inc-x/outcome"): "dispatcher",
    ("GET", "/v1/audit"): "auditor",
    ("GET", "/v1/audit/verify"): "auditor",
    ("GET", "/v1/report?from=2026-11-01&to=2026-11-30"): "analyst",
    # the review queue and decisions, and silences: reviewers (supervisors on the floor)
    ("GET", "/v1/reviews"): "reviewer",
    ("POST", "/v1/reviews/inc-x"): "reviewer",
    ("POST", "/v1/silences"): "reviewer",
    ("GET", "/v1/silences"): "reviewer",
    ("GET", SIL): "reviewer",
    ("PATCH", SIL): "reviewer",
    ("POST", SIL + "/expire"): "reviewer",
    # the console's data: everyone on the floor
    ("GET", "/v1/console/feed"): ("dispatcher", "reviewer"),
    ("GET", "/v1/console/map"): ("dispatcher", "reviewer"),
    ("GET", "/v1/console/incidents/inc-x"): ("dispatcher", "reviewer"),
    ("GET", "/v1/console/sensors"): ("dispatcher", "reviewer"),
}
#: Endless event streams: only the status line is read.
STREAMS = {"/v1/console/feed"}
ROLES = tokens.ROLES


def _template(path: str) -> str:
    """The route template a concrete test path exercises (ids replaced by {param})."""
    return path.split("?")[0]


def _served(roles: str | tuple[str, ...]) -> set[str]:
    return {roles} if isinstance(roles, str) else set(roles)


async def _call(
    client: httpx.AsyncClient, method: str, path: str, body: object, headers: dict[str, str]
) -> tuple[int, str]:
    """Status and body of one call (of a stream, the status and nothing more)."""
    async with client.stream(method, path, json=body, headers=headers) as response:
        if path in STREAMS and response.status_code == 200:
            return response.status_code, ""
        return response.status_code, (await response.aread()).decode()


def test_every_v1_route_is_in_the_table_and_carries_one_role_dependency():
    from services.dispatch.api import v1
    from services.dispatch.console import api as console_api

    concrete = {(m, _template(p)) for m, p in ROUTES}
    for route in [*v1.routes, *console_api.v1.routes]:
        assert isinstance(route, APIRoute)
        role_deps = [d for d in route.dependencies if d in ROLE_DEPENDENCIES]
        assert len(role_deps) == 1, f"{route.path} needs exactly one role-set dependency"
        for method in route.methods:
            matches = [p for m, p in concrete if m == method and route.path_regex.match(p)]
            assert matches, f"{method} {route.path} is missing from ROUTES"


async def test_each_role_is_refused_every_route_it_does_not_serve(
    make_settings, services, database_url
):
    service = await services(make_settings(consume=False, workers=False))
    pool = await create_pool(database_url)
    try:
        issued = {
            role: (
                await tokens.create_token(
                    pool, f"u-{role}", role, actor=Actor("t", "t"), now=utc_now()
                )
            )[1]
            for role in ROLES
        }
        stored = await pool.fetch("SELECT token_hash FROM api_tokens")
        assert all(
            bytes(r["token_hash"]) not in {t.encode() for t in issued.values()} for r in stored
        )  # only hashes are kept
    finally:
        await pool.close()
    async with httpx.AsyncClient(base_url=service.url) as client:
        for (method, path), roles in ROUTES.items():
            body = {} if method in {"POST", "PATCH"} else None
            served = _served(roles)
            for role, token in issued.items():
                status, text = await _call(
                    client, method, path, body, {"Authorization": f"Bearer {token}"}
                )
                if role in served:
                    assert status not in (401, 403), (role, method, path)
                else:
                    assert status == 403, (role, method, path, text)
                    assert f"role {role!r} may not use this route" in json.loads(text)["detail"]
            bootstrap, _ = await _call(
                client, method, path, body, {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            )
            assert bootstrap not in (401, 403), (method, path)
            anonymous, _ = await _call(client, method, path, body, {})
            assert anonymous == 401, (method, path)


async def test_a_revoked_token_is_refused_at_once_and_admins_manage_tokens_over_http(
    make_settings, services
):
    service = await services(make_settings(consume=False, workers=False))
    boot = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=service.url) as client:
        created = await client.post(
            "/v1/tokens", json={"user": "a.analyst", "role": "analyst"}, headers=boot
        )
        assert created.status_code == 201, created.text
        token, token_id = created.json()["token"], created.json()["token_id"]
        mine = {"Authorization": f"Bearer {token}"}
        listed = (await client.get("/v1/tokens", headers=boot)).json()
        assert [t["token_id"] for t in listed] == [token_id]
        assert "token" not in listed[0] and "token_hash" not in listed[0]  # shown once
        ok = await client.get(
            "/v1/report", params={"from": "2026-11-01", "to": "2026-11-30"}, headers=mine
        )
        assert ok.status_code == 200 and ok.json()["figures"]["1_alerts"]
        bad = await client.post("/v1/tokens", json={"user": "x", "role": "root"}, headers=boot)
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "role"
        revoked = await client.post(f"/v1/tokens/{token_id}/revoke", headers=boot)
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        again = await client.get(
            "/v1/report", params={"from": "2026-11-01", "to": "2026-11-30"}, headers=mine
        )
        assert again.status_code == 401
        audit = await client.get("/v1/audit", headers=boot)
        assert [r["action"] for r in audit.json()] == ["token.create", "token.revoke"]


async def test_changes_and_exact_reads_are_audited_with_the_user_and_role(
    make_settings, services, database_url
):
    service = await services(make_settings(consume=False, workers=False))
    pool = await create_pool(database_url)
    try:
        now = utc_now()
        _, admin = await tokens.create_token(
            pool, "a.admin", "admin", actor=Actor("t", "t"), now=now
        )
        _, dispatcher = await tokens.create_token(
            pool, "d.disp", "dispatcher", actor=Actor("t", "t"), now=now
        )
        async with httpx.AsyncClient(base_url=service.url) as client:
            as_admin = {"Authorization": f"Bearer {admin}"}
            as_dispatcher = {"Authorization": f"Bearer {dispatcher}"}
            created = await client.post(
                "/v1/subscriptions",
                headers=as_admin,
                json={
                    "name": "pd",
                    "channel": "webhook",
                    "url": "https://cad.example/h",
                    "geofence": square(-79.99, 40.44),
                },
            )
            assert created.status_code == 201, created.text
            sub_id = created.json()["subscription_id"]
            await client.post(f"/v1/subscriptions/{sub_id}/rotate-secret", headers=as_admin)
            refused = await client.get("/v1/incidents", headers=as_admin)
            assert refused.status_code == 403  # a refusal changes and reads nothing
            await client.get("/v1/incidents", headers=as_dispatcher)
            await client.get("/v1/subscriptions", headers=as_admin)  # no exact data: no row
        rows = [
            (r["actor"], r["role"], r["action"], r["target"]) for r in await audit.list_rows(pool)
        ][2:]  # after the two token.create rows
        assert rows == [
            ("a.admin", "admin", "POST /v1/subscriptions", "/v1/subscriptions"),
            ("a.admin", "admin", "POST /v1/subscriptions/{subscription_id}/rotate-secret", sub_id),
            ("d.disp", "dispatcher", "incident.read", "list"),
        ]
        assert (await audit.verify(pool)).ok
    finally:
        await pool.close()
