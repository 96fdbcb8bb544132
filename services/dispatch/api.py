"""The dispatch admin API: subscriptions, deliveries (dead letters, replay), incidents, outcomes.

Every ``/v1`` route needs ``Authorization: Bearer <SHOTLINE_DISPATCH_ADMIN_TOKEN>`` (401
otherwise). ``/healthz``, ``/readyz`` and ``/metrics`` are open (probes and scrapers).
Errors are JSON ``{"detail": …, "errors": [{"field", "reason"}]}``; a 422 names the field.

A webhook subscription's signing secret is returned only by the create and the rotate
responses; it is never listed again.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import pathlib
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import asyncpg
import httpx
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from fastapi_offline import FastAPIOffline
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.dispatch import clips, store
from services.dispatch import metrics as dispatch_metrics
from services.dispatch.auth import (
    ADMIN,
    ANALYST,
    AUDITOR,
    DISPATCHER,
    AuditMiddleware,
    Principal,
    authenticate,
)
from services.dispatch.routing import validate_geofence
from services.dispatch.settings import DispatchSettings
from services.dispatch.signing import generate_secret
from services.dispatch.targets import literal_refusal
from services.oversight import audit, records, tokens
from services.oversight.generate import report_params, shotline_version
from services.oversight.report import build_report
from services.oversight.settings import OversightSettings
from shared.clock import Clock
from shared.kafka import BrokerUnavailable, broker_answers
from shared.metrics import metrics_response
from shared.schemas import IncidentClass, IncidentEvent, UtcTime

SCHEMAS_DIR = pathlib.Path(__file__).with_name("schemas")
ALERT_SCHEMA_PATH = SCHEMAS_DIR / "alert.schema.json"
EIDO_SCHEMA_PATH = SCHEMAS_DIR / "eido-body.schema.json"

Evidence = Literal["casings", "victim", "witness", "arrest", "weapon_recovered", "none"]
Finding = Literal["confirmed", "unconfirmed", "unfounded"]
Format = Literal["json", "cap", "eido"]
Channel = Literal["webhook", "push"]
#: ``undelivered`` = ``failed`` or ``dead``: one view of what did not arrive.
DeliveryStatus = Literal["pending", "delivered", "failed", "dead", "superseded", "undelivered"]


@dataclass
class ApiState:
    settings: DispatchSettings
    pool: asyncpg.Pool
    bootstrap_servers: str
    clock: Clock
    plan: Any = None  # store.Planner: review decisions are planned like consumed versions
    gate: Any = None  # store.Gate
    feed: Any = None  # console.feed.ConsoleFeed


# --------------------------------------------------------------------------------------------
# Request / response bodies
# --------------------------------------------------------------------------------------------


#: The largest id PostgreSQL's bigint holds: a larger one in a path or query is a 422.
MAX_BIGINT = 2**63 - 1


def _printable(value: str) -> str:
    """Refuse control characters (NUL above all: PostgreSQL cannot store it) and lone
    surrogates (not encodable as UTF-8) in a free string; tab and line breaks are text."""
    for char in value:
        code = ord(char)
        if (code < 0x20 and char not in "\t\n\r") or 0x7F <= code <= 0x9F:
            raise ValueError(f"must not contain the control character U+{code:04X}")
        if 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"must not contain the lone surrogate U+{code:04X}")
    return value


def _one_line(value: str) -> str:
    _printable(value)
    if any(char in value for char in "\t\n\r"):
        raise ValueError("must be one line (no tab or line break)")
    return value


#: A free string: printable text, line breaks allowed.
Text = Annotated[str, AfterValidator(_printable)]
#: A name, a token, a URL or an id: one line of printable text.
Line = Annotated[str, AfterValidator(_one_line)]
#: An id in a path or a query: bounded, one line.
IdParam = Annotated[str, AfterValidator(_one_line), Field(min_length=1, max_length=200)]


def _printable_json(value: Any) -> Any:
    """Every key and string inside a JSON value is printable (they are stored as JSONB)."""
    if isinstance(value, str):
        _printable(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _printable(key)
            _printable_json(item)
    elif isinstance(value, list):
        for item in value:
            _printable_json(item)
    return value


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebPushKeys(_In):
    p256dh: Line = Field(
        min_length=16, max_length=200, description="Browser's P-256 public key, base64url"
    )
    auth: Line = Field(
        min_length=8, max_length=200, description="Browser's auth secret, base64url (write-only)"
    )


class WebPushInfo(_In):
    """A browser PushSubscription as ``PushSubscription.toJSON()`` gives it."""

    endpoint: Line = Field(max_length=2048, description="The push service URL of this browser")
    keys: WebPushKeys
    expirationTime: float | None = Field(  # the browser's own field name
        default=None, ge=0, le=1e15, description="Milliseconds since 1970, as the browser gives"
    )

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _check_url(value)


class FcmInfo(_In):
    token: Line = Field(
        min_length=8, max_length=4096, description="FCM registration token (write-only)"
    )


class PushTarget(_In):
    """Exactly one of a Web Push subscription or an FCM registration token."""

    webpush: WebPushInfo | None = None
    fcm: FcmInfo | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> PushTarget:
        if (self.webpush is None) == (self.fcm is None):
            raise ValueError("give exactly one of 'webpush' or 'fcm'")
        return self


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    try:
        # what delivery's HTTP client will build: a URL it cannot build could never be sent
        httpx.Request("POST", value)
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        raise ValueError(f"the HTTP client cannot send to it: {exc}") from None
    return value


def _refused_targets(
    settings: DispatchSettings, url: str | None, push: PushTarget | None
) -> list[dict[str, str]]:
    """422 problems for target URLs whose host is an address dispatch may not send to (an IP
    literal or localhost; other names are checked at every connect, see ``targets``)."""
    endpoint = push.webpush.endpoint if push is not None and push.webpush is not None else None
    problems = []
    for name, value in (("url", url), ("push.webpush.endpoint", endpoint)):
        reason = (
            None
            if value is None
            else literal_refusal(urlsplit(value).hostname or "", settings.allowed_target_networks)
        )
        if reason is not None:
            problems.append(
                {
                    "field": name,
                    "reason": f"{reason}: alerts go only to public addresses and to the "
                    "networks in SHOTLINE_DISPATCH_ALLOWED_TARGET_NETWORKS",
                }
            )
    return problems


def _check_geofence(value: dict[str, Any]) -> dict[str, Any]:
    _printable_json(value)
    validate_geofence(value)  # raises ValueError naming the problem
    return value


class SubscriptionIn(_In):
    name: Line = Field(min_length=1, max_length=200)
    channel: Channel
    geofence: dict[str, Any] = Field(
        description="GeoJSON Polygon or MultiPolygon (lon, lat order), WGS84"
    )
    classes: list[IncidentClass] = Field(
        default=["gunfire", "probable_gunfire"], min_length=1, description="Wanted classes"
    )
    min_probability: float = Field(default=0.5, ge=0, le=1)
    events: list[IncidentEvent] = Field(default=["created", "updated", "cancelled"], min_length=1)
    format: Format = Field(default="json", description="Webhook body format")
    url: Line | None = Field(
        default=None, max_length=2048, description="Webhook URL (webhook channel)"
    )
    push: PushTarget | None = Field(default=None, description="Push target (push channel)")
    review: Literal["none", "required"] = Field(
        default="none",
        description="required: told only after a reviewer decided, or marked unreviewed "
        "once the review deadline passed",
    )

    @field_validator("geofence")
    @classmethod
    def _geofence(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_geofence(value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value)

    @model_validator(mode="after")
    def _channel_fields(self) -> SubscriptionIn:
        if self.channel == "webhook":
            if self.url is None:
                raise ValueError("url: required for a webhook subscription")
            if self.push is not None:
                raise ValueError("push: not allowed for a webhook subscription")
        else:
            if self.push is None:
                raise ValueError("push: required for a push subscription")
            if self.url is not None:
                raise ValueError("url: not allowed for a push subscription")
            if self.format != "json":
                raise ValueError("format: push subscriptions carry the native JSON alert only")
        return self


def _absent(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # "leave unchanged" is absence, not a null default


class SubscriptionPatch(_In):
    """The fields to change. Omit a field to keep it; ``null`` is refused (422): no field
    of a subscription can be emptied."""

    name: Line = Field(default=None, min_length=1, max_length=200, json_schema_extra=_absent)
    geofence: dict[str, Any] = Field(default=None, json_schema_extra=_absent)
    classes: list[IncidentClass] = Field(default=None, min_length=1, json_schema_extra=_absent)
    min_probability: float = Field(default=None, ge=0, le=1, json_schema_extra=_absent)
    events: list[IncidentEvent] = Field(default=None, min_length=1, json_schema_extra=_absent)
    format: Format = Field(default=None, json_schema_extra=_absent)
    url: Line = Field(default=None, max_length=2048, json_schema_extra=_absent)
    push: PushTarget = Field(default=None, json_schema_extra=_absent)
    status: Literal["active", "disabled"] = Field(default=None, json_schema_extra=_absent)
    review: Literal["none", "required"] = Field(default=None, json_schema_extra=_absent)

    @field_validator("geofence")
    @classmethod
    def _geofence(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_geofence(value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)


class RotateIn(_In):
    overlap_s: float | None = Field(
        default=None,
        ge=0,
        le=30 * 86_400,
        description="How long the current secret keeps signing (default from settings)",
    )


class OutcomeIn(_In):
    units_dispatched: int = Field(ge=0, le=10_000)
    arrival_time: UtcTime | None = Field(default=None, description="First unit on scene")
    evidence: list[Evidence] = Field(min_length=1)
    call_911: bool = Field(description="Whether a 911 call came in for this incident")
    disposition: Text = Field(default="", max_length=10_000)
    # CAD linkage (all optional: a centre sends what its CAD holds)
    cad_event_number: Line | None = Field(default=None, max_length=200)
    entry_time: UtcTime | None = Field(default=None, description="Call entered in CAD")
    dispatch_time: UtcTime | None = Field(default=None, description="First unit dispatched")
    on_scene_time: UtcTime | None = Field(default=None, description="First unit on scene")
    clear_time: UtcTime | None = Field(default=None, description="Last unit cleared")
    units: list[Annotated[Line, Field(max_length=100)]] = Field(
        default=[], max_length=1000, description="Unit call signs"
    )
    initial_priority: Line | None = Field(default=None, max_length=50)
    final_priority: Line | None = Field(default=None, max_length=50)
    final_call_type: Line | None = Field(default=None, max_length=200)
    finding: Finding | None = Field(
        default=None,
        description="confirmed (it happened), unconfirmed (no evidence either way), "
        "unfounded (found not to be gunfire)",
    )
    report_taken: bool = Field(default=False, description="A police report was written")

    @model_validator(mode="after")
    def _none_alone(self) -> OutcomeIn:
        if "none" in self.evidence and len(set(self.evidence)) > 1:
            raise ValueError("evidence: 'none' cannot be combined with other evidence")
        times = [
            (name, getattr(self, name))
            for name in ("entry_time", "dispatch_time", "on_scene_time", "clear_time")
            if getattr(self, name) is not None
        ]
        for (first, a), (then, b) in itertools.pairwise(times):
            if b < a:
                raise ValueError(f"{then}: is before {first}")
        return self


class ReplayFilter(_In):
    status: Literal["dead", "failed", "undelivered"] = Field(
        default="undelivered", description="undelivered = dead and failed: all that did not arrive"
    )
    subscription_id: IdParam | None = None
    incident_id: IdParam | None = None
    since: UtcTime | None = Field(default=None, description="Created at or after")
    until: UtcTime | None = Field(default=None, description="Created before")


MASK = "********"


def _masked_push(push: dict[str, Any] | None) -> dict[str, Any] | None:
    """The push target without its secrets: the Web Push ``keys.auth`` (it lets anyone who
    holds it, with the endpoint, write to that browser) and the FCM registration token."""
    if push is None:
        return None
    out = json.loads(json.dumps(push))  # a deep copy of plain JSON
    webpush = out.get("webpush")
    keys = webpush.get("keys") if isinstance(webpush, dict) else None
    if isinstance(keys, dict) and "auth" in keys:
        keys["auth"] = MASK
    fcm = out.get("fcm")
    if isinstance(fcm, dict) and "token" in fcm:
        fcm["token"] = MASK
    return out


def _public(sub: store.SubscriptionRow) -> dict[str, Any]:
    """A subscription as the API shows it: never with a secret (the webhook signing secret,
    the Web Push auth secret, the FCM token are write-only)."""
    out = asdict(sub)
    out["push"] = _masked_push(out["push"])
    return out


# --------------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------------


def _state(request: Request) -> ApiState:
    return request.app.state.dispatch  # type: ignore[no-any-return]


#: Declares the bearer scheme in the OpenAPI document (Swagger UI's "Authorize" then sends
#: it); the check itself is :func:`~services.dispatch.auth.authenticate`'s (401) and each
#: route's role set's (403).
_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="adminToken",
    description="A per-user token (`shotline tokens add`) or the bootstrap "
    "SHOTLINE_DISPATCH_ADMIN_TOKEN, sent as `Authorization: Bearer <token>`",
)


StateDep = Annotated[ApiState, Depends(_state)]
PrincipalDep = Annotated[Principal, Depends(authenticate)]
SubscriptionId = Annotated[IdParam, Path(description="e.g. sub_3f2a9c0d1e4b5a69")]
IncidentId = Annotated[IdParam, Path(description="The locator's incident id")]
DeliveryId = Annotated[int, Path(ge=1, le=MAX_BIGINT)]


class FieldProblem(BaseModel):
    field: str = Field(description="The input at fault: a body path, a parameter, a header")
    reason: str


class ErrorBody(BaseModel):
    """Every error answer of this API."""

    detail: str
    errors: list[FieldProblem] = Field(
        default_factory=list, description="Per input (422: at least one)"
    )


def _error_doc(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error_doc("The request cannot be read (e.g. a body that is not JSON)"),
    401: _error_doc("Missing, wrong or revoked bearer token"),
    403: _error_doc("The token's role does not serve this route"),
    404: _error_doc("No such subscription, delivery or incident"),
    409: _error_doc("The request conflicts with the resource's state"),
    415: _error_doc("A body that is not application/json"),
    422: _error_doc("Invalid input; each error names its field"),
}


async def require_json_body(request: Request) -> None:
    """415 for a body that is not ``application/json`` (a bodiless request passes)."""
    has_body = request.headers.get("content-length", "0") != "0" or (
        "transfer-encoding" in request.headers
    )
    media = (request.headers.get("content-type") or "").partition(";")[0].strip().lower()
    if has_body and media != "application/json":
        raise HTTPException(
            415,
            {
                "detail": "the body must be JSON: send Content-Type: application/json",
                "errors": [{"field": "Content-Type", "reason": "must be application/json"}],
            },
        )


#: Every ``/v1`` router's: the bearer scheme, authentication (401), a JSON body (415).
V1_DEPENDENCIES = [Depends(_BEARER), Depends(authenticate), Depends(require_json_body)]
# Authentication on the router (401), authorisation per route: one role-set dependency each.
v1 = APIRouter(prefix="/v1", dependencies=V1_DEPENDENCIES, responses=ERROR_RESPONSES)


def _not_found(what: str, ident: object) -> HTTPException:
    return HTTPException(404, f"{what} {ident} not found")


@v1.post("/subscriptions", status_code=201, tags=["subscriptions"], dependencies=[ADMIN])
async def create_subscription(body: SubscriptionIn, state: StateDep) -> dict[str, Any]:
    """Create a subscription. For webhooks the response carries ``secret``: shown only now."""
    problems = _refused_targets(state.settings, body.url, body.push)
    if problems:
        raise HTTPException(422, {"detail": "invalid request", "errors": problems})
    secret = generate_secret() if body.channel == "webhook" else None
    sub = await store.create_subscription(
        state.pool,
        name=body.name,
        channel=body.channel,
        geofence=body.geofence,
        classes=body.classes,
        min_probability=body.min_probability,
        events=body.events,
        format=body.format,
        url=body.url,
        push=None if body.push is None else body.push.model_dump(exclude_none=True),
        secret=secret,
        review=body.review,
    )
    out = _public(sub)
    if secret is not None:
        out["secret"] = secret
    return out


@v1.get("/subscriptions", tags=["subscriptions"], dependencies=[ADMIN])
async def list_subscriptions(
    state: StateDep,
    status: Literal["active", "disabled"] | None = None,
    channel: Channel | None = None,
) -> list[dict[str, Any]]:
    subs = await store.list_subscriptions(state.pool, status=status, channel=channel)
    return [_public(s) for s in subs]


@v1.get("/subscriptions/{subscription_id}", tags=["subscriptions"], dependencies=[ADMIN])
async def get_subscription(subscription_id: SubscriptionId, state: StateDep) -> dict[str, Any]:
    sub = await store.get_subscription(state.pool, subscription_id)
    if sub is None:
        raise _not_found("subscription", subscription_id)
    return _public(sub)


@v1.patch("/subscriptions/{subscription_id}", tags=["subscriptions"], dependencies=[ADMIN])
async def update_subscription(
    subscription_id: SubscriptionId, body: SubscriptionPatch, state: StateDep
) -> dict[str, Any]:
    """Change fields (the channel is fixed); ``status: active`` re-enables a disabled one."""
    current = await store.get_subscription(state.pool, subscription_id)
    if current is None:
        raise _not_found("subscription", subscription_id)
    changes = body.model_dump(exclude_unset=True)
    if "push" in changes and body.push is not None:
        changes["push"] = body.push.model_dump(exclude_none=True)
    problems = []
    if current.channel == "webhook" and ("push" in changes or changes.get("url", "") is None):
        problems.append(
            {
                "field": "push" if "push" in changes else "url",
                "reason": "a webhook subscription needs a url and takes no push target",
            }
        )
    if current.channel == "push" and (
        "url" in changes
        or changes.get("push", {}) is None
        or changes.get("format", "json") != "json"
    ):
        problems.append(
            {
                "field": "url" if "url" in changes else "push",
                "reason": "a push subscription needs a push target, no url, format json",
            }
        )
    problems += _refused_targets(state.settings, body.url, body.push)
    if problems:
        raise HTTPException(422, {"detail": "invalid request", "errors": problems})
    if not changes:
        return _public(current)
    sub = await store.update_subscription(state.pool, subscription_id, changes)
    if sub is None:
        raise _not_found("subscription", subscription_id)
    return _public(sub)


@v1.post("/subscriptions/{subscription_id}/disable", tags=["subscriptions"], dependencies=[ADMIN])
async def disable_subscription(subscription_id: SubscriptionId, state: StateDep) -> dict[str, Any]:
    """Stop alerting this subscriber; its pending deliveries are marked failed."""
    async with state.pool.acquire() as conn, conn.transaction():
        sub = await store.disable_subscription(conn, subscription_id, store.OPERATOR_DISABLED)
        if sub is None:
            raise _not_found("subscription", subscription_id)
        await store.fail_pending_of(conn, subscription_id, "subscription disabled")
    return _public(sub)


@v1.delete("/subscriptions/{subscription_id}", tags=["subscriptions"], dependencies=[ADMIN])
async def delete_subscription(subscription_id: SubscriptionId, state: StateDep) -> dict[str, Any]:
    """Same as disable: rows are kept (deliveries refer to them, for the record)."""
    return await disable_subscription(subscription_id, state)


@v1.post(
    "/subscriptions/{subscription_id}/rotate-secret", tags=["subscriptions"], dependencies=[ADMIN]
)
async def rotate_secret(
    subscription_id: SubscriptionId, state: StateDep, body: RotateIn | None = None
) -> dict[str, Any]:
    """New signing secret (shown only now). The old one keeps signing until ``valid_until``:
    during the overlap every request carries both signatures."""
    sub = await store.get_subscription(state.pool, subscription_id)
    if sub is None:
        raise _not_found("subscription", subscription_id)
    if sub.channel != "webhook":
        raise HTTPException(409, f"subscription {subscription_id} is not a webhook")
    overlap = (
        state.settings.secret_overlap_s
        if body is None or body.overlap_s is None
        else (body.overlap_s)
    )
    valid_until = state.clock() + timedelta(seconds=overlap)
    secret = generate_secret()
    await store.rotate_secret(state.pool, subscription_id, secret, valid_until)
    return {
        "subscription_id": subscription_id,
        "secret": secret,
        "previous_secret_valid_until": valid_until,
    }


@v1.get("/deliveries", tags=["deliveries"], dependencies=[ADMIN])
async def list_deliveries(
    state: StateDep,
    status: DeliveryStatus | None = None,
    subscription_id: Annotated[IdParam | None, Query()] = None,
    incident_id: Annotated[IdParam | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after_id: Annotated[
        int, Query(ge=0, le=MAX_BIGINT, description="Page: ids greater than this")
    ] = 0,
) -> list[dict[str, Any]]:
    """Deliveries, oldest first; ``status=undelivered`` lists what did not arrive (failed
    and dead), ``status=dead`` the dead letters alone."""
    return await store.list_deliveries(
        state.pool,
        status=status,
        subscription_id=subscription_id,
        incident_id=incident_id,
        limit=limit,
        after_id=after_id,
    )


@v1.get("/deliveries/{delivery_id:int}", tags=["deliveries"], dependencies=[ADMIN])
async def get_delivery(delivery_id: DeliveryId, state: StateDep) -> dict[str, Any]:
    """One delivery with every attempt (start, finish, status code, error, duration)."""
    found = await store.get_delivery(state.pool, delivery_id)
    if found is None:
        raise _not_found("delivery", delivery_id)
    return found


@v1.post("/deliveries/replay", tags=["deliveries"], dependencies=[ADMIN])
async def replay_many(body: ReplayFilter, state: StateDep) -> dict[str, Any]:
    """Replay every matching undelivered (dead and failed; or one of them) delivery; each
    keeps its webhook-id."""
    ids = await store.replay(
        state.pool,
        status=body.status,
        subscription_id=body.subscription_id,
        incident_id=body.incident_id,
        since=body.since,
        until=body.until,
    )
    return {"replayed": len(ids), "delivery_ids": ids}


@v1.post("/deliveries/{delivery_id:int}/replay", tags=["deliveries"], dependencies=[ADMIN])
async def replay_one(delivery_id: DeliveryId, state: StateDep) -> dict[str, Any]:
    """Send a dead or failed delivery again, with the same webhook-id and body."""
    status = await store.delivery_status(state.pool, delivery_id)
    if status is None:
        raise _not_found("delivery", delivery_id)
    if status not in {"dead", "failed"}:
        raise HTTPException(
            409,
            f"delivery {delivery_id} is {status}; only dead or failed deliveries can be replayed",
        )
    ids = await store.replay(state.pool, delivery_id=delivery_id, status=status)
    if not ids:
        raise HTTPException(
            409, f"delivery {delivery_id}'s subscription is disabled; enable it first"
        )
    return {"replayed": 1, "delivery_ids": ids}


@v1.get("/incidents", tags=["incidents"], dependencies=[DISPATCHER])
async def list_incidents(
    state: StateDep,
    zone: Annotated[IdParam | None, Query()] = None,
    before: Annotated[UtcTime | None, Query(description="Shot time before (paging)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Incidents as received, newest shot first."""
    return await store.list_incidents(state.pool, limit=limit, zone=zone, before=before)


@v1.get("/incidents/{incident_id}", tags=["incidents"], dependencies=[DISPATCHER])
async def get_incident(incident_id: IncidentId, state: StateDep) -> dict[str, Any]:
    """The current record, every version as received, every delivery, every outcome."""
    found = await store.get_incident(state.pool, incident_id)
    if found is None:
        raise _not_found("incident", incident_id)
    found["outcomes"] = await store.list_outcomes(state.pool, incident_id)
    return found


@v1.post(
    "/incidents/{incident_id}/outcome",
    status_code=201,
    tags=["incidents"],
    dependencies=[DISPATCHER],
)
async def post_outcome(incident_id: IncidentId, body: OutcomeIn, state: StateDep) -> dict[str, Any]:
    """Record what the dispatch centre found; each POST is a new outcome version."""
    row = await store.add_outcome(
        state.pool,
        incident_id,
        units_dispatched=body.units_dispatched,
        arrival_time=body.arrival_time,
        evidence=body.evidence,
        call_911=body.call_911,
        disposition=body.disposition,
        cad=body.model_dump(include=set(store.CAD_FIELDS)),
    )
    if row is None:
        raise _not_found("incident", incident_id)
    return row


@v1.get("/incidents/{incident_id}/outcome", tags=["incidents"], dependencies=[DISPATCHER])
async def get_outcomes(incident_id: IncidentId, state: StateDep) -> list[dict[str, Any]]:
    """Every outcome version of the incident, oldest first."""
    if not await store.incident_exists(state.pool, incident_id):
        raise _not_found("incident", incident_id)
    return await store.list_outcomes(state.pool, incident_id)


class TokenIn(_In):
    user: str = Field(min_length=1, max_length=200, description="Who holds the token")
    role: Literal["admin", "dispatcher", "reviewer", "analyst", "auditor"]


@v1.post("/tokens", status_code=201, tags=["tokens"], dependencies=[ADMIN])
async def create_token(body: TokenIn, state: StateDep, who: PrincipalDep) -> dict[str, Any]:
    """A per-user token with a role; ``token`` is in this response only (stored hashed)."""
    row, token = await tokens.create_token(
        state.pool, body.user, body.role, actor=who.actor, now=state.clock()
    )
    return {**asdict(row), "token": token}


@v1.get("/tokens", tags=["tokens"], dependencies=[ADMIN])
async def list_tokens(state: StateDep) -> list[dict[str, Any]]:
    return [asdict(t) for t in await tokens.list_tokens(state.pool)]


@v1.post("/tokens/{token_id}/revoke", tags=["tokens"], dependencies=[ADMIN])
async def revoke_token(token_id: str, state: StateDep, who: PrincipalDep) -> dict[str, Any]:
    """Revoke at once: the token's next request gets a 401."""
    row = await tokens.revoke_token(state.pool, token_id, actor=who.actor, now=state.clock())
    if row is None:
        raise _not_found("token", token_id)
    return asdict(row)


@v1.get("/audit", tags=["audit"], dependencies=[AUDITOR])
async def list_audit(
    state: StateDep,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[dict[str, Any]]:
    """Audit rows in order (each with its hash and its predecessor's)."""
    return await audit.list_rows(state.pool, after_seq=after_seq, limit=limit)


@v1.get("/audit/verify", tags=["audit"], dependencies=[AUDITOR])
async def verify_audit(state: StateDep) -> dict[str, Any]:
    """Recompute the chain; ``first_bad_seq`` names the first edited/inserted/deleted row."""
    return asdict(await audit.verify(state.pool))


@v1.get("/report", tags=["report"], dependencies=[ANALYST])
async def get_report(
    state: StateDep,
    start: Annotated[date, Query(alias="from", description="First day (UTC)")],
    end: Annotated[date, Query(alias="to", description="Last day (UTC, inclusive)")],
    areas: Annotated[str | None, Query(description="Areas layer name")] = None,
) -> dict[str, Any]:
    """The oversight report's figures (``report.json``): coarse locations only."""
    if end < start:
        raise HTTPException(
            422, {"detail": "invalid request", "errors": [{"field": "to", "reason": "before from"}]}
        )
    params = report_params(start, end, areas, OversightSettings())
    async with (
        state.pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        try:
            inputs = await records.read_inputs(conn, params)
        except ValueError as exc:
            raise HTTPException(
                422,
                {"detail": "invalid request", "errors": [{"field": "areas", "reason": str(exc)}]},
            ) from None
    # Seconds of CPU for a year of a big city: off the loop that also delivers alerts
    return await asyncio.to_thread(build_report, inputs, params, version=shotline_version())


# --------------------------------------------------------------------------------------------
# App
# --------------------------------------------------------------------------------------------


def _alert_schema(path: pathlib.Path = ALERT_SCHEMA_PATH) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except FileNotFoundError:
        return {"type": "object", "description": f"(schema file {path.name} missing)"}


def _embeddable(schema: dict[str, Any], prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A JSON Schema made embeddable in the OpenAPI document: its ``$defs`` become
    components named ``<prefix>_<name>`` and its ``#/$defs/`` references point there."""
    text = json.dumps(schema).replace('"#/$defs/', f'"#/components/schemas/{prefix}_')
    rewritten = json.loads(text)
    defs = rewritten.pop("$defs", {})
    for key in ("$schema", "$id"):
        rewritten.pop(key, None)
    return rewritten, {f"{prefix}_{name}": value for name, value in defs.items()}


#: The official CAP 1.2 schema (OASIS); a copy ships in the project's tests.
CAP_XSD_URL = "http://docs.oasis-open.org/emergency/cap/v1.2/CAP-v1.2.xsd"

#: Standard Webhooks headers on every webhook request (see ``signing``).
WEBHOOK_HEADERS: list[dict[str, Any]] = [
    {
        "name": "webhook-id",
        "in": "header",
        "required": True,
        "description": "The message id: the same on every retry and replay of one message; "
        "drop a message whose id you have already processed",
        "schema": {"type": "string", "pattern": "^msg_[A-Za-z0-9_-]+$"},
    },
    {
        "name": "webhook-timestamp",
        "in": "header",
        "required": True,
        "description": "Seconds since 1970 (UTC) of this attempt; refuse one far from your "
        "clock (replay protection)",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    {
        "name": "webhook-signature",
        "in": "header",
        "required": True,
        "description": "Space-separated `v1,<base64 HMAC-SHA256>` of "
        "`<webhook-id>.<webhook-timestamp>.<body>` with the subscription's secret; two "
        "signatures while a rotated secret overlaps",
        "schema": {"type": "string", "pattern": "^v1,[A-Za-z0-9+/=]+( v1,[A-Za-z0-9+/=]+)*$"},
    },
]


def _webhook(
    summary: str, description: str, media_type: str, schema: dict[str, Any], example: str | None
) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {
        "post": {
            "summary": summary,
            "description": description,
            "operationId": "webhook_" + summary.split()[0].lower(),
            "parameters": WEBHOOK_HEADERS,
            "requestBody": {"required": True, "content": {media_type: content}},
            "responses": {
                "2XX": {"description": "Acknowledged; any other status is retried or fails"}
            },
        }
    }


def _examples_dir() -> pathlib.Path:
    return SCHEMAS_DIR / "examples"


def _example_text(name: str) -> str | None:
    try:
        return (_examples_dir() / name).read_text()
    except FileNotFoundError:
        return None


def webhooks_document() -> tuple[dict[str, Any], dict[str, Any]]:
    """The OpenAPI ``webhooks`` section (one entry per body format) and the components it
    refers to, built from the same schema files the tests validate real bodies with."""
    alert, alert_defs = _embeddable(_alert_schema(), "IncidentAlert")
    eido, eido_defs = _embeddable(_alert_schema(EIDO_SCHEMA_PATH), "EidoAlert")
    components = {**alert_defs, **eido_defs, "IncidentAlert": alert, "EidoAlert": eido}
    json_example = _example_text("json-v1-created.json")
    hooks = {
        "incident-alert": _webhook(
            "JSON alert (format json)",
            "What a webhook subscriber with `format: json` receives, signed per Standard Webhooks.",
            "application/json",
            {"$ref": "#/components/schemas/IncidentAlert"},
            None if json_example is None else json.loads(json_example),
        ),
        "incident-alert-cap": _webhook(
            "CAP alert (format cap)",
            "What a webhook subscriber with `format: cap` receives: one OASIS CAP 1.2 "
            f"`<alert>` document, valid against the official schema {CAP_XSD_URL}. An "
            "`Update` or `Cancel` references the earlier messages of the incident that this "
            "subscriber received.",
            "application/common-alerting-protocol+xml",
            {
                "type": "string",
                "description": f"A CAP 1.2 alert (XML), valid against {CAP_XSD_URL}",
                "externalDocs": {"description": "CAP 1.2 XML Schema", "url": CAP_XSD_URL},
                "xml": {"name": "alert", "namespace": "urn:oasis:names:tc:emergency:cap:1.2"},
            },
            _example_text("cap-v1-created.xml"),
        ),
        "incident-alert-eido": _webhook(
            "EIDO alert (format eido)",
            "What a webhook subscriber with `format: eido` receives: one NENA Emergency "
            "Incident Data Object in JSON (`application/json`).",
            "application/json",
            {"$ref": "#/components/schemas/EidoAlert"},
            None,  # an EIDO body holds "$ref" members: as an example, tools take it for a link
        ),
    }
    return hooks, components


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route serves on the request's path."""
    methods: set[str] = set()
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.path_regex.match(request.url.path):
            methods |= route.methods
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def create_app(state: ApiState) -> FastAPI:
    """The admin ASGI app over an already connected pool (the service owns its life)."""
    app = FastAPIOffline(  # Swagger UI and ReDoc from files in the package: no CDN
        title="Shotline dispatch",
        version="1.0",
        summary="Subscriptions, delivery records and outcome feedback for gunfire alerts.",
    )
    app.state.dispatch = state
    app.include_router(v1)
    # signed, expiring clip links (no admin token); errors in the API's one shape
    app.include_router(clips.router, responses=ERROR_RESPONSES)
    from services.dispatch.console import api as console_api  # its routes import this module

    app.include_router(console_api.v1, responses=ERROR_RESPONSES)
    app.include_router(console_api.pages)
    app.add_middleware(AuditMiddleware)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "Not ready"}})
    async def readyz() -> JSONResponse:
        """Ready when PostgreSQL answers a query and Kafka a metadata request, each within
        ``readiness_timeout_s`` (a frozen broker still accepts TCP connections)."""
        timeout_s = state.settings.readiness_timeout_s
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(store.ping(state.pool), timeout_s)
            checks["database"] = "ok"
        except (
            OSError,
            TimeoutError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.exceptions.InternalClientError,
        ) as exc:
            checks["database"] = f"unreachable: {exc.__class__.__name__}"
        try:
            await broker_answers(
                state.bootstrap_servers,
                timeout_s=timeout_s,
                connection=state.settings.kafka_connection(),
            )
            checks["broker"] = "ok"
        except BrokerUnavailable:
            checks["broker"] = "unreachable"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body, content_type = metrics_response(dispatch_metrics.REGISTRY)
        return Response(body, media_type=content_type)

    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = original_openapi()
        hooks, components = webhooks_document()
        doc["webhooks"] = hooks
        doc.setdefault("components", {}).setdefault("schemas", {}).update(components)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            loc = [str(p) for p in e["loc"] if p not in ("body", "query", "path")]
            msg = str(e["msg"]).removeprefix("Value error, ")
            # model-level errors name their field as "field: reason"
            head, sep, tail = msg.partition(": ")
            if not loc and sep and " " not in head:
                loc, msg = [head], tail
            errors.append({"field": ".".join(loc) or "body", "reason": msg})
        return JSONResponse({"detail": "invalid request", "errors": errors}, status_code=422)

    @app.exception_handler(asyncpg.DataError)
    async def _data_error(_: Request, exc: asyncpg.DataError) -> JSONResponse:
        # The models refuse what PostgreSQL cannot store; this is the net under them.
        return JSONResponse(
            {
                "detail": "invalid request",
                "errors": [{"field": "request", "reason": f"the database refused a value: {exc}"}],
            },
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = exc.detail if isinstance(exc.detail, dict) else {"detail": exc.detail}
        headers = exc.headers
        if exc.status_code == 405:
            # Starlette names the methods of the first route on the path only; one route
            # per method means Allow must gather them all (RFC 9110 §15.5.6).
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(app, request))}
        return JSONResponse(body, status_code=exc.status_code, headers=headers)

    return app
