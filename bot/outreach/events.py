"""Events: residents RSVP; reminders go out before the start; changes reach everyone going."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.delivery.dispatch import NOTICE_PRIORITY
from bot.outreach.notices import enqueue_many
from bot.vocabulary.i18n import Translator
from bot.vocabulary.messages import Reply
from flows import notices
from storage.models import Event, Resident, Rsvp


def title_in(event: Event, lang: str, fallback: tuple[str, ...]) -> str:
    return notices.pick(event.titles, lang, fallback) or ""


def description_in(event: Event, lang: str, fallback: tuple[str, ...]) -> str:
    """In the language the title is shown in, so a resident never reads two languages."""
    for code in (lang, *fallback):
        if event.titles.get(code):
            return event.descriptions.get(code) or ""
    return ""


async def create(
    session: AsyncSession,
    *,
    titles: dict[str, str],
    starts_at: datetime,
    place: str,
    now: datetime,
    municipality: str | None = None,
    descriptions: dict[str, str] | None = None,
    capacity: int | None = None,
) -> Event:
    event = Event(
        titles={k: v for k, v in titles.items() if v},
        descriptions={k: v for k, v in (descriptions or {}).items() if v},
        starts_at=starts_at,
        place=place,
        municipality=municipality,
        capacity=capacity,
        created_at=now,
    )
    session.add(event)
    await session.flush()
    return event


async def upcoming_for(
    session: AsyncSession, municipality: str | None, now: datetime
) -> list[Event]:
    query = select(Event).where(Event.status == "scheduled", Event.starts_at > now)
    if municipality:
        query = query.where((Event.municipality == municipality) | Event.municipality.is_(None))
    return list((await session.execute(query.order_by(Event.starts_at).limit(10))).scalars())


async def going(session: AsyncSession, event_id: int) -> int:
    return (await going_to(session, [event_id])).get(event_id, 0)


async def going_to(session: AsyncSession, event_ids: list[int]) -> dict[int, int]:
    """How many are going to each event, in one grouped query (events nobody is going
    to are absent)."""
    if not event_ids:
        return {}
    counted = await session.execute(
        select(Rsvp.event_id, func.count())
        .where(Rsvp.event_id.in_(event_ids), Rsvp.status == "going")
        .group_by(Rsvp.event_id)
    )
    return {event_id: count for event_id, count in counted.all()}


async def rsvp(session: AsyncSession, event_id: int, resident_id: int, attend: bool) -> str:
    """`going`, `cancelled`, `full` or `gone` (the event is over or cancelled)."""
    event = await session.get(Event, event_id, with_for_update=True)
    if event is None or event.status != "scheduled":
        return "gone"
    found = await session.scalar(
        select(Rsvp).where(Rsvp.event_id == event_id, Rsvp.resident_id == resident_id)
    )
    if not attend:
        if found is not None:
            found.status = "cancelled"
        return "cancelled"
    if found is not None and found.status == "going":
        return "going"
    if event.capacity is not None and await going(session, event_id) >= event.capacity:
        return "full"
    if found is None:
        session.add(Rsvp(event_id=event_id, resident_id=resident_id, status="going"))
    else:
        found.status = "going"
    return "going"


def _attendees(event_id: int) -> Select[tuple[Resident]]:
    return (
        select(Resident)
        .join(Rsvp, Rsvp.resident_id == Resident.id)
        .where(Rsvp.event_id == event_id, Rsvp.status == "going")
    )


async def change(
    session: AsyncSession,
    event_id: int,
    *,
    now: datetime,
    fallback: tuple[str, ...],
    tz_name: str,
    starts_at: datetime | None = None,
    place: str | None = None,
    cancel: bool = False,
) -> int:
    """Move or cancel an event and tell everyone going; reminders follow the new time."""
    event = await session.get(Event, event_id, with_for_update=True)
    if event is None:
        raise LookupError(f"no event {event_id}")
    old_start = event.starts_at
    if cancel:
        event.status = "cancelled"
    if starts_at is not None:
        event.starts_at = starts_at
    if place is not None:
        event.place = place
    event.version += 1
    return await announce_change(
        session,
        event,
        cancelled=cancel,
        old_start=old_start,
        now=now,
        fallback=fallback,
        tz_name=tz_name,
    )


async def announce_change(
    session: AsyncSession,
    event: Event,
    *,
    cancelled: bool,
    old_start: datetime,
    now: datetime,
    fallback: tuple[str, ...],
    tz_name: str,
) -> int:
    """Tell everyone going that the event moved (to its time and place now) or was
    cancelled; at most once per resident and change (`event.version`), so a rerun after
    a crash tells nobody twice. Returns how many were told now."""
    moved_to, place_now = event.starts_at, event.place

    def render(t: Translator) -> Reply:
        title = title_in(event, t.lang, fallback)
        if cancelled:
            return notices.event_cancelled(t, title, old_start)
        return notices.event_moved(t, title, moved_to, place_now)

    return await enqueue_many(
        session,
        _attendees(event.id),
        render,
        now=now,
        kind="event",
        priority=NOTICE_PRIORITY,
        tz_name=tz_name,
        dedupe_prefix=f"evchg:{event.id}:{event.version}",
    )


def _due_offset(event: Event, now: datetime, offsets: tuple[timedelta, ...]) -> timedelta | None:
    """The reminder due now: the nearest offset already passed, so a late start sends one."""
    for offset in sorted(offsets):
        if event.starts_at - offset <= now < event.starts_at:
            return offset
    return None


async def remind_due(
    session: AsyncSession,
    now: datetime,
    offsets: tuple[timedelta, ...],
    fallback: tuple[str, ...],
    tz_name: str,
) -> int:
    horizon = now + max(offsets, default=timedelta(0))
    events = (
        await session.execute(
            select(Event).where(
                Event.status == "scheduled", Event.starts_at > now, Event.starts_at <= horizon
            )
        )
    ).scalars()
    queued = 0
    for event in list(events):
        offset = _due_offset(event, now, offsets)
        if offset is None:
            continue
        hours = int(offset.total_seconds() // 3600)
        queued += await enqueue_many(
            session,
            _attendees(event.id),
            lambda t, e=event: notices.reminder(
                t, title_in(e, t.lang, fallback), e.starts_at, e.place, e.id
            ),
            now=now,
            kind="reminder",
            priority=NOTICE_PRIORITY,
            tz_name=tz_name,
            dedupe_prefix=f"rem:{event.id}:{event.version}:{hours}h",
        )
    return queued


async def upcoming(
    session: AsyncSession, now: datetime, offsets: tuple[timedelta, ...]
) -> list[datetime]:
    found = (
        await session.execute(
            select(Event.starts_at).where(Event.status == "scheduled", Event.starts_at > now)
        )
    ).scalars()
    return [start - offset for start in found for offset in offsets if start - offset > now]
