"""Alert message formats (pure): native JSON, OASIS CAP 1.2, NENA EIDO.

One entry point::

    render(fmt, incident, event, *, sender, previous=None, message_id=None, references=())
        -> RenderedBody(content_type, body)

Rendering is a deterministic function of its arguments - no clock, no randomness - so every
retry of a delivery carries a byte-identical body (only the signature headers change with the
attempt time). Hence no ``now`` argument: times inside messages come from the incident itself
(``published_at`` is the message time, e.g. CAP ``<sent>``), which also lets an Update's CAP
``<references>`` to the previous message be rebuilt from the previous record alone.

* ``event`` is what this subscriber is told (see
  :func:`services.dispatch.routing.delivery_event`); it may differ from ``incident.event``.
* ``sender`` identifies this Shotline installation, e.g. ``"shotline.city.example"``
  (CAP ``<sender>``, EIDO issuing element and agency id; JSON ``sender``).
* ``previous`` is the version this subscriber got last (for the JSON ``previous_version``
  and the EIDO notes, and the *downgraded* wording); pass it for updated, downgraded and
  cancelled messages whenever it is known.
* ``message_id`` names this one message (the delivery's webhook-id): the CAP
  ``<identifier>`` is built from it, so it is unique per message of a sender (one incident
  version is different messages to different subscribers: an Alert to one, an Update to
  another). Without it the identifier names the incident version only (documentation).
* ``references``: CAP ``sender,identifier,sent`` of *every* earlier message this subscriber
  may have received about the incident, oldest first (CAP ``<references>``). Without them
  an Update/Cancel references ``previous`` by its message-id-less identifier.
* ``event`` ``downgraded``: an incident alerted as gunfire that is now classified as
  something else, while it still matches the subscription (see
  :func:`services.dispatch.routing.delivery_event`) - said loudly in every format.
* ``place`` is the version's place words (:class:`~services.dispatch.gazetteer.Place`, stored
  with the version): the native JSON ``place`` object, CAP ``<areaDesc>`` text and one
  ``<geocode>`` per area layer, an EIDO civic address and cross streets. ``None`` (no city
  layer loaded) renders exactly what was rendered before places existed.

Raises ``ValueError`` for an unknown format/event, an empty sender, or a ``previous`` that is
not an earlier version of the same incident.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, get_args

from services.dispatch.gazetteer import Place
from services.dispatch.model import DELIVERY_EVENTS, DeliveryEvent
from shared.schemas import IncidentRecord

FormatName = Literal["json", "cap", "eido"]
FORMAT_NAMES: tuple[str, ...] = get_args(FormatName)
EVENTS: tuple[str, ...] = DELIVERY_EVENTS


class RenderedBody(NamedTuple):
    """An HTTP body and its ``Content-Type`` (unpacks as ``content_type, body = render(...)``)."""

    content_type: str
    body: bytes


def check_arguments(
    incident: IncidentRecord, event: str, sender: str, previous: IncidentRecord | None
) -> None:
    """Common argument checks of every renderer (raises ValueError)."""
    if event not in EVENTS:
        raise ValueError(f"event must be one of {EVENTS}, not {event!r}")
    if not sender or any(c.isspace() or c in ",<&" for c in sender):
        # CAP forbids spaces, commas and the restricted characters < and & in <sender>
        raise ValueError("sender must be a non-empty identifier without spaces, ',', '<', '&'")
    if previous is not None and (
        previous.incident_id != incident.incident_id or previous.version >= incident.version
    ):
        raise ValueError("previous must be an earlier version of the same incident")


def render(
    fmt: FormatName,
    incident: IncidentRecord,
    event: DeliveryEvent,
    *,
    sender: str,
    previous: IncidentRecord | None = None,
    audio: list[dict[str, str]] | None = None,
    message_id: str | None = None,
    references: Sequence[str] = (),
    place: Place | None = None,
) -> RenderedBody:
    """Render one alert message in ``fmt`` (see the module docstring for the contract).
    ``audio`` (clip links, services/dispatch/clips.py) is carried by JSON and CAP."""
    # imported here so that importing the package does not pull every renderer's deps
    if fmt == "json":
        from services.dispatch.formats import json as renderer
    elif fmt == "cap":
        from services.dispatch.formats import cap as renderer  # type: ignore[no-redef]
    elif fmt == "eido":
        from services.dispatch.formats import eido as renderer  # type: ignore[no-redef]
    else:
        raise ValueError(f"format must be one of {FORMAT_NAMES}, not {fmt!r}")
    check_arguments(incident, event, sender, previous)
    extra: dict[str, Any] = {}
    if fmt in ("json", "cap") and audio:
        extra["audio"] = audio
    if place is not None:
        extra["place"] = place
    if fmt == "cap":
        extra["message_id"] = message_id
        extra["references"] = references
    return renderer.render(incident, event, sender=sender, previous=previous, **extra)
