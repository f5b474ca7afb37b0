"""Event operations: list, load, create, move, cancel.

Moving or cancelling changes the event under its row lock and queues one job that
tells everyone registered (bot/outreach/jobs.py): the turn stays short, and a
cancelled event can be neither cancelled again nor moved, so nobody hears twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from bot.outreach import events, jobs
from bot.outreach.operations import checks
from bot.outreach.operations.errors import Invalid, WrongState
from bot.outreach.operations.request import Request
from storage.models import Event

# More places than any hall in the region; the column is a 32-bit integer.
MOST_PLACES = 100_000


@dataclass(frozen=True)
class NewEvent:
    titles: Mapping[str, str]
    starts_at: datetime | str
    place: str
    descriptions: Mapping[str, str] = field(default_factory=dict)
    municipality: str | None = None  # None: every municipality
    capacity: int | None = None  # None: no limit


@dataclass(frozen=True)
class Move:
    id: int
    starts_at: datetime | str | None = None
    place: str | None = None


@dataclass(frozen=True)
class Line:
    id: int
    title: str
    starts_at: datetime
    going: int


@dataclass(frozen=True)
class Card:
    id: int
    title: str
    starts_at: datetime
    place: str
    capacity: int | None
    status: str
    going: int


@dataclass(frozen=True)
class Created:
    id: int


@dataclass(frozen=True)
class Changed:
    """The event as it is now; `going` residents are being told by job `job_id`."""

    id: int
    starts_at: datetime
    status: str
    going: int
    job_id: int


async def open_event(req: Request, event_id: int, field: str = "id") -> Event:
    """An upcoming, scheduled event for an input field (a broadcast's audience), or Invalid."""
    found = await req.session.get(Event, event_id)
    if found is None or found.status != "scheduled":
        raise Invalid(field, "unknown", value=str(event_id))
    return found


async def listing(req: Request) -> list[Line]:
    req.permit("event.list")
    fallback = req.settings.language_fallback
    found = await events.upcoming_for(req.session, None, req.now)
    going = await events.going_to(req.session, [e.id for e in found])
    return [
        Line(
            e.id,
            events.title_in(e, req.actor.language, fallback),
            e.starts_at,
            going.get(e.id, 0),
        )
        for e in found
    ]


async def load(req: Request, event_id: int) -> Card:
    req.permit("event.load")
    found = await req.find(Event, event_id, "event")
    return Card(
        id=found.id,
        title=events.title_in(found, req.actor.language, req.settings.language_fallback),
        starts_at=found.starts_at,
        place=found.place,
        capacity=found.capacity,
        status=found.status,
        going=await events.going(req.session, found.id),
    )


async def create(req: Request, new: NewEvent) -> Created:
    req.permit("event.create")
    titles = checks.texts("titles", new.titles, checks.TITLE_LIMIT)
    descriptions = checks.texts(
        "descriptions", new.descriptions, req.settings.max_text_length, required=False
    )
    starts_at = checks.moment("starts_at", new.starts_at, req.now, req.settings.tz_name)
    place = checks.text("place", new.place, checks.PLACE_LIMIT)
    if new.municipality is not None:
        checks.municipalities("municipality", [new.municipality], req.content)
    capacity = checks.whole("capacity", new.capacity, 1, MOST_PLACES)
    created = await events.create(
        req.session,
        titles=titles,
        # A description is read under its title: only in the languages that have one.
        descriptions={lang: text for lang, text in descriptions.items() if lang in titles},
        starts_at=starts_at,
        place=place,
        municipality=new.municipality,
        capacity=capacity,
        now=req.now,
    )
    req.schedule_changed = True  # its reminders are new moments
    return Created(created.id)


async def _upcoming_locked(req: Request, event_id: int) -> Event:
    """The event under its row lock, refused unless it is scheduled and still ahead."""
    found = await req.locked(Event, event_id, "event")
    if found.status != "scheduled":
        raise WrongState("event", str(event_id), found.status)
    if found.starts_at <= req.now:
        raise WrongState("event", str(event_id), "over")
    return found


async def _changed(req: Request, event: Event, *, cancelled: bool, old_start: datetime) -> Changed:
    event.version += 1
    job = await jobs.queue(
        req.session,
        "event_notice",
        {
            "event_id": event.id,
            "version": event.version,
            "cancelled": cancelled,
            "old_start": old_start.isoformat(),
        },
        actor=req.actor,
        now=req.now,
    )
    req.schedule_changed = True  # reminders follow the new time, or stop; the job is due
    return Changed(
        event.id, event.starts_at, event.status, await events.going(req.session, event.id), job.id
    )


async def move(req: Request, change: Move) -> Changed:
    req.permit("event.move")
    if change.starts_at in (None, "") and change.place in (None, ""):
        raise Invalid("starts_at", "empty")
    starts_at = place = None
    if change.starts_at not in (None, ""):
        starts_at = checks.moment("starts_at", change.starts_at, req.now, req.settings.tz_name)
    if change.place not in (None, ""):
        place = checks.text("place", change.place, checks.PLACE_LIMIT)
    found = await _upcoming_locked(req, change.id)
    old_start = found.starts_at
    found.starts_at = starts_at or found.starts_at
    found.place = place or found.place
    return await _changed(req, found, cancelled=False, old_start=old_start)


async def cancel(req: Request, event_id: int) -> Changed:
    req.permit("event.cancel")
    found = await _upcoming_locked(req, event_id)
    found.status = "cancelled"
    return await _changed(req, found, cancelled=True, old_start=found.starts_at)
