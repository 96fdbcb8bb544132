"""Who may call which admin-API route: bearer tokens, roles, and the audit of every call.

* :func:`authenticate` (on the whole ``/v1`` router): the bootstrap token
  (``SHOTLINE_DISPATCH_ADMIN_TOKEN``) or a live per-user token (``shotline tokens add``);
  401 otherwise. The principal is kept in ``request.state.principal``.
* One dependency per role set, put on each route: :data:`ADMIN` (subscriptions,
  deliveries, tokens), :data:`DISPATCHER` (incidents with exact data, outcomes),
  :data:`REVIEWER` (the review queue and decisions, and silences: a supervisor on the
  floor), :data:`CONSOLE` (the console's data: dispatchers and reviewers), :data:`ANALYST`
  (reports: coarse locations only), :data:`AUDITOR` (the audit log). A role outside the
  set gets a 403 naming the role and the roles the route serves. The bootstrap token
  passes every set: it is the operator's way in, to create the first users.
* :class:`AuditMiddleware` appends a row to the hash-chained audit log for every accepted
  change (any method but GET) and every read of an incident's exact data (route paths in
  :data:`EXACT_READS`), before the response leaves.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.oversight import audit, tokens

log = logging.getLogger("shotline.dispatch.auth")

BOOTSTRAP = "bootstrap"
#: Routes whose GET returns an incident's exact location or detections (audited reads).
EXACT_READS = frozenset(
    {
        "/v1/incidents",
        "/v1/incidents/{incident_id}",
        "/v1/console/feed",
        "/v1/console/incidents/{incident_id}",
    }
)
#: Routes that write their own audit rows (in the transaction of the change).
SELF_AUDITED = frozenset({"/v1/tokens", "/v1/tokens/{token_id}/revoke"})


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    bootstrap: bool = False

    @property
    def actor(self) -> audit.Actor:
        return audit.Actor(self.name, BOOTSTRAP if self.bootstrap else self.role)


def _unauthorized() -> HTTPException:
    return HTTPException(
        401, "missing, wrong or revoked bearer token", headers={"WWW-Authenticate": "Bearer"}
    )


async def authenticate(request: Request) -> Principal:
    """401 unless the request carries the bootstrap token or a live per-user token."""
    state = request.app.state.dispatch
    scheme, _, presented = (request.headers.get("authorization") or "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise _unauthorized()
    expected = state.settings.admin_token.get_secret_value()
    if hmac.compare_digest(presented.encode(), expected.encode()):
        principal = Principal(BOOTSTRAP, "admin", bootstrap=True)
    else:
        row = await tokens.lookup(state.pool, presented)
        if row is None:
            raise _unauthorized()
        principal = Principal(row.user_name, row.role)
    request.state.principal = principal
    return principal


def allow(*roles: str) -> Any:
    """A dependency admitting the bootstrap token and these roles; 403 for any other."""
    served = ", ".join(roles)

    async def check(request: Request) -> Principal:
        principal: Principal = request.state.principal
        if principal.bootstrap or principal.role in roles:
            return principal
        raise HTTPException(
            403, f"role {principal.role!r} may not use this route (it serves: {served})"
        )

    check.__name__ = f"allow_{'_'.join(roles)}"
    return Depends(check)


ADMIN = allow("admin")
DISPATCHER = allow("dispatcher")
REVIEWER = allow("reviewer")
CONSOLE = allow("dispatcher", "reviewer")
ANALYST = allow("analyst")
AUDITOR = allow("auditor")
ROLE_DEPENDENCIES = (ADMIN, DISPATCHER, REVIEWER, CONSOLE, ANALYST, AUDITOR)


class AuditMiddleware:
    """Audit accepted changes and exact reads of ``/v1`` (pure ASGI, before the response)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return

        async def send_audited(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                await self._record(scope, message["status"])
            await send(message)

        await self.app(scope, receive, send_audited)

    @staticmethod
    async def _record(scope: Scope, status: int) -> None:
        route = scope.get("route")
        principal = (scope.get("state") or {}).get("principal")
        if route is None or principal is None:
            return
        path = getattr(route, "path", "")
        method = scope["method"]
        params = dict(scope.get("path_params") or {})
        if method == "GET":
            if path not in EXACT_READS:
                return
            action = "incident.read"
            target = str(params.get("incident_id", "list"))
        else:
            if path in SELF_AUDITED:
                return
            action = f"{method} {path}"
            target = next(iter(params.values()), path) if params else path
        state = scope["app"].state.dispatch
        detail: dict[str, Any] = {"status": status, "path": scope["path"]}
        if scope.get("query_string"):
            detail["query"] = scope["query_string"].decode("latin-1")
        await audit.append(
            state.pool, principal.actor, action, str(target), detail, at=state.clock()
        )
