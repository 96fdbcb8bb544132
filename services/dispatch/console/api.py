"""Routes of the console, the reviewer and the silences (thin adapters).

``/console`` and its static assets are open (they hold no data); every data route is under
``/v1`` with the admin API's bearer tokens and roles (:mod:`services.dispatch.auth`):
the console's data serves dispatchers and reviewers, the review queue, decisions and
silences reviewers (supervisors on the floor). The page keeps the token in the tab's
``sessionStorage`` and reads the live feed with ``fetch`` (``EventSource`` cannot send an
``Authorization`` header), reconnecting with ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.dispatch import holds, store
from services.dispatch.api import V1_DEPENDENCIES, StateDep, _check_geofence
from services.dispatch.auth import CONSOLE, REVIEWER
from services.dispatch.console import feed as console_feed
from shared.schemas import IncidentClass, UtcTime

STATIC = Path(__file__).with_name("static")

pages = APIRouter(include_in_schema=False)
# Authentication on the router (401), authorisation per route (403): the console's data
# serves dispatchers and reviewers, the review queue, decisions and silences reviewers.
v1 = APIRouter(prefix="/v1", dependencies=V1_DEPENDENCIES)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecisionIn(_In):
    decision: Literal["confirm", "reclassify", "reject"]
    reviewed_by: str = Field(min_length=1, max_length=200, description="The reviewer's name")
    reason: str = Field(min_length=1, max_length=2000, description="Why (kept with the version)")
    classification: IncidentClass | None = Field(default=None, description="reclassify only")
    rounds: int | None = Field(default=None, ge=1, le=1000, description="reclassify only")

    @model_validator(mode="after")
    def _reclassify_fields(self) -> DecisionIn:
        if self.decision != "reclassify" and (self.classification or self.rounds):
            raise ValueError("classification/rounds: only with decision 'reclassify'")
        if self.decision == "reclassify" and self.classification is None and self.rounds is None:
            raise ValueError("classification: reclassify needs a classification or rounds")
        return self


class SilenceIn(_In):
    area: dict[str, Any] = Field(description="GeoJSON Polygon or MultiPolygon, [lon, lat]")
    starts_at: UtcTime | None = Field(default=None, description="Default: now")
    ends_at: UtcTime
    classes: list[IncidentClass] | None = Field(
        default=None, min_length=1, description="Only these classes (default: every class)"
    )
    include_high_gunfire: bool = Field(
        default=False,
        description="Also hold gunfire at or above the probability floor (explicit only)",
    )
    author: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)

    @field_validator("area")
    @classmethod
    def _area(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_geofence(value)


class SilencePatch(_In):
    area: dict[str, Any] | None = None
    starts_at: UtcTime | None = None
    ends_at: UtcTime | None = None
    classes: list[IncidentClass] | None = Field(default=None, min_length=1)
    include_high_gunfire: bool | None = None
    author: str = Field(min_length=1, max_length=200, description="Who changes it")
    reason: str = Field(min_length=1, max_length=2000, description="Why")

    @field_validator("area")
    @classmethod
    def _area(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else _check_geofence(value)


class ExpireIn(_In):
    author: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)


# --- pages ----------------------------------------------------------------------------------


@pages.get("/console")
async def console_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@pages.get("/console/static/{name}")
async def console_asset(name: str) -> FileResponse:
    path = (STATIC / name).resolve()
    if path.parent != STATIC.resolve() or not path.is_file():
        raise HTTPException(404, f"asset {name} not found")
    return FileResponse(path)


# --- live feed and views --------------------------------------------------------------------


# An endless event stream is not an operation an OpenAPI client (or fuzzer) can call and
# check: documented in the README instead.
@v1.get("/console/feed", tags=["console"], include_in_schema=False, dependencies=[CONSOLE])
async def feed(
    request: Request,
    state: StateDep,
    after: Annotated[int | None, Query(ge=0, description="Last feed id seen")] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-Sent Events: every incident version as stored (``id`` = feed sequence).
    With ``Last-Event-ID`` (or ``after``) what was missed comes first; without, the latest
    200 versions."""
    if last_event_id is not None and last_event_id.isdigit():
        after = int(last_event_id)
    live = state.feed
    if live is None:
        raise HTTPException(503, "the live feed is not running in this instance")
    queue = live.subscribe()

    async def stream() -> Any:
        try:
            first = await (
                console_feed.recent(state.pool)
                if after is None
                else console_feed.catch_up(state.pool, after)
            )
            sent = {e["seq"] for e in first}
            yield b"retry: 1000\n\n"
            for event in first:
                yield console_feed.sse(event)
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), 15.0)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if event is None:
                    return
                if event["seq"] in sent:
                    continue
                yield console_feed.sse(event)
        finally:
            live.unsubscribe(queue)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@v1.get("/console/map", tags=["console"], dependencies=[CONSOLE])
async def map_layers(state: StateDep) -> dict[str, Any]:
    """What the map draws besides incidents: sensors, geofences, active silences, tiles."""
    sensors = await state.pool.fetch(
        "SELECT sensor_id, zone, lat, lon, status, last_seen_at FROM sensors ORDER BY sensor_id"
    )
    subs = await store.list_subscriptions(state.pool, status="active")
    now = state.clock()
    return {
        "tile_url": state.settings.console_tile_url,
        "sensors": [dict(s) for s in sensors],
        "geofences": [
            {
                "subscription_id": s.subscription_id,
                "name": s.name,
                "review": s.review,
                "geofence": s.geofence,
            }
            for s in subs
        ],
        "silences": [
            s
            for s in await holds.list_silences(state.pool)
            if s["expired_at"] is None and s["ends_at"] > now
        ],
    }


@v1.get("/console/incidents/{incident_id}", tags=["console"], dependencies=[CONSOLE])
async def incident_page(incident_id: str, state: StateDep) -> dict[str, Any]:
    """Every version, every delivery with its attempts, outcomes, review, silences."""
    found = await store.get_incident(state.pool, incident_id)
    if found is None:
        raise HTTPException(404, f"incident {incident_id} not found")
    found["outcomes"] = await store.list_outcomes(state.pool, incident_id)
    for d in found["deliveries"]:
        full = await store.get_delivery(state.pool, d["delivery_id"])
        d["attempt_log"] = [] if full is None else full["attempt_log"]
    names = {s.subscription_id: s.name for s in await store.list_subscriptions(state.pool)}
    for d in found["deliveries"]:
        d["subscription_name"] = names.get(d["subscription_id"], "")
    found["review_queue"] = await state.pool.fetchrow(
        "SELECT queued_at, deadline_at, decided_at, decision, reviewed_by, late "
        "FROM dispatch_review_queue WHERE incident_id = $1",
        incident_id,
    )
    found["review_queue"] = None if found["review_queue"] is None else dict(found["review_queue"])
    found["silence_holds"] = [
        dict(r)
        for r in await state.pool.fetch(
            "SELECT silence_id, held_at, released_at, outcome FROM dispatch_silence_holds "
            "WHERE incident_id = $1",
            incident_id,
        )
    ]
    return found


@v1.get("/console/sensors", tags=["console"], dependencies=[CONSOLE])
async def sensors_page(
    state: StateDep, hours: Annotated[float, Query(gt=0, le=24 * 30)] = 24.0
) -> list[dict[str, Any]]:
    """Each sensor's last-seen time and status, and the health the locator's incidents show:
    how often it contributed, how often the solver rejected its pulse (an outlier: a bad
    clock, a reflection, a moved sensor)."""
    rows = await state.pool.fetch(
        """WITH recent AS (
             SELECT record FROM dispatch_incidents
             WHERE shot_time > now() - make_interval(secs => $1)),
           used AS (SELECT jsonb_array_elements_text(record->'sensors_used') AS s FROM recent),
           rej AS (SELECT jsonb_array_elements_text(record->'sensors_rejected') AS s FROM recent)
           SELECT s.sensor_id, s.zone, s.lat, s.lon, s.status, s.last_seen_at,
                  (SELECT count(*) FROM used WHERE used.s = s.sensor_id) AS used,
                  (SELECT count(*) FROM rej WHERE rej.s = s.sensor_id) AS rejected
           FROM sensors s ORDER BY s.sensor_id""",
        hours * 3600,
    )
    drift = await _locator_health(state.settings.console_locator_metrics_url)
    out = []
    for r in rows:
        row = dict(r)
        heard = row["used"] + row["rejected"]
        row["rejected_share"] = None if heard == 0 else row["rejected"] / heard
        health = drift.get(row["sensor_id"], {})
        row["median_residual_s"] = health.get("median_residual_s")
        row["flagged"] = health.get("flagged")
        out.append(row)
    return out


async def _locator_health(url: str | None) -> dict[str, dict[str, float]]:
    """Per sensor, the locator's clock health from its /metrics (empty when unreachable:
    the page then shows the rest)."""
    if not url:
        return {}
    try:
        async with httpx.AsyncClient(timeout=1.0) as client:
            text = (await client.get(url)).text
    except httpx.HTTPError:
        return {}
    names = {
        "shotline_locator_sensor_median_residual_seconds": "median_residual_s",
        "shotline_locator_sensor_flagged": "flagged",
    }
    out: dict[str, dict[str, float]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in names and "sensor_id" in sample.labels:
                    out.setdefault(sample.labels["sensor_id"], {})[names[sample.name]] = (
                        sample.value
                    )
    except ValueError:
        return {}
    return out


# --- review ---------------------------------------------------------------------------------


@v1.get("/reviews", tags=["review"], dependencies=[REVIEWER])
async def review_queue(state: StateDep) -> list[dict[str, Any]]:
    """Incidents waiting for a decision, earliest deadline first."""
    return await holds.review_queue(state.pool)


@v1.post("/reviews/{incident_id}", status_code=201, tags=["review"], dependencies=[REVIEWER])
async def decide(incident_id: str, body: DecisionIn, state: StateDep) -> dict[str, Any]:
    """Confirm, reclassify or reject: stored as the incident's next version (a reject is a
    Cancel to every subscriber that was told)."""
    try:
        version = await holds.decide(
            state.pool,
            incident_id,
            body.decision,
            reviewed_by=body.reviewed_by,
            reason=body.reason,
            now=state.clock(),
            plan=state.plan,
            gate=state.gate,
            classification=body.classification,
            rounds=body.rounds,
        )
    except LookupError as exc:
        raise HTTPException(404, f"incident {incident_id} not found") from exc
    except holds.ReviewConflict as exc:
        raise HTTPException(409, str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(
            422,
            {"detail": "invalid request", "errors": [{"field": "decision", "reason": str(exc)}]},
        ) from exc
    return version.model_dump(mode="json")


# --- silences -------------------------------------------------------------------------------


def _window_problem(starts_at: datetime, ends_at: datetime) -> None:
    if ends_at <= starts_at:
        raise HTTPException(
            422,
            {
                "detail": "invalid request",
                "errors": [{"field": "ends_at", "reason": "must be after starts_at"}],
            },
        )


@v1.post("/silences", status_code=201, tags=["silences"], dependencies=[REVIEWER])
async def create_silence(body: SilenceIn, state: StateDep) -> dict[str, Any]:
    """Hold the delivery of incidents in an area for a while (a known event, a drill).

    Silences serve the ``reviewer`` role: the supervisor on the dispatch floor, who decides
    what the floor is told (the bootstrap token passes too)."""
    starts_at = body.starts_at or state.clock()
    _window_problem(starts_at, body.ends_at)
    return await holds.create_silence(
        state.pool,
        area=body.area,
        starts_at=starts_at,
        ends_at=body.ends_at,
        classes=body.classes,
        include_high_gunfire=body.include_high_gunfire,
        author=body.author,
        reason=body.reason,
    )


@v1.get("/silences", tags=["silences"], dependencies=[REVIEWER])
async def list_silences(state: StateDep) -> list[dict[str, Any]]:
    return await holds.list_silences(state.pool)


@v1.get("/silences/{silence_id}", tags=["silences"], dependencies=[REVIEWER])
async def get_silence(silence_id: str, state: StateDep) -> dict[str, Any]:
    """The silence, its history (who changed what and why) and the incidents it held."""
    found = await holds.get_silence(state.pool, silence_id)
    if found is None:
        raise HTTPException(404, f"silence {silence_id} not found")
    return found


@v1.patch("/silences/{silence_id}", tags=["silences"], dependencies=[REVIEWER])
async def change_silence(silence_id: str, body: SilencePatch, state: StateDep) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True, exclude={"author", "reason"})
    current = await holds.get_silence(state.pool, silence_id)
    if current is None:
        raise HTTPException(404, f"silence {silence_id} not found")
    _window_problem(
        changes.get("starts_at", current["starts_at"]), changes.get("ends_at", current["ends_at"])
    )
    row = await holds.change_silence(
        state.pool, silence_id, changes, actor=body.author, reason=body.reason
    )
    if row is None:
        raise HTTPException(409, f"silence {silence_id} is expired; create a new one")
    return row


@v1.post("/silences/{silence_id}/expire", tags=["silences"], dependencies=[REVIEWER])
async def expire_silence(silence_id: str, body: ExpireIn, state: StateDep) -> dict[str, Any]:
    """End the silence now; what it held and is still relevant is delivered."""
    row = await holds.expire_silence(
        state.pool, silence_id, now=state.clock(), actor=body.author, reason=body.reason
    )
    if row is None:
        if await holds.get_silence(state.pool, silence_id) is None:
            raise HTTPException(404, f"silence {silence_id} not found")
        raise HTTPException(409, f"silence {silence_id} is expired already")
    return row
