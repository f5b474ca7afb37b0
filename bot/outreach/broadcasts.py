"""Broadcasts: create, preview, send now or later, cancel, and count what happened."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.delivery.dispatch import BULK_PRIORITY
from bot.outreach.audience import Audience, residents
from bot.outreach.notices import enqueue_many
from bot.vocabulary.messages import Reply
from flows.notices import pick
from storage.models import Broadcast, OutboxMessage, Resident

# Residents per transaction while a broadcast is queued: a few tens of milliseconds of
# work, so a resident's turn waits at most that long behind it, even on SQLite.
CHUNK = 2000
# How soon the scheduler takes up a broadcast that is due but not (fully) queued.
RESUME_AFTER = timedelta(seconds=1)


@dataclass(frozen=True)
class Progress:
    queued: int
    sent: int
    delivered: int
    failed: int
    unreachable: int
    cancelled: int

    @property
    def waiting(self) -> int:
        return self.queued


def _reply(broadcast: Broadcast, lang: str, fallback: tuple[str, ...]) -> Reply:
    text = pick(broadcast.texts, lang, fallback) or ""
    if broadcast.link:
        text = f"{text}\n\n{broadcast.link}"
    return Reply(text=text, photo_id=broadcast.photo_id)


async def create(
    session: AsyncSession,
    *,
    texts: dict[str, str],
    audience: Audience,
    now: datetime,
    send_at: datetime | None = None,
    photo_id: str | None = None,
    link: str | None = None,
    created_by: str | None = None,
) -> Broadcast:
    """A confirmed broadcast: `scheduled`, due at `send_at` (now when not given)."""
    if not any(texts.values()):
        raise ValueError("a broadcast needs a text in at least one language")
    broadcast = Broadcast(
        texts={k: v for k, v in texts.items() if v},
        audience=audience.to_json(),
        status="scheduled",
        send_at=send_at or now,
        photo_id=photo_id,
        link=link,
        created_by=created_by,
        created_at=now,
    )
    session.add(broadcast)
    await session.flush()
    return broadcast


async def start_due(
    session: AsyncSession, now: datetime, fallback: tuple[str, ...], tz_name: str
) -> int:
    """Start every broadcast whose time has come and queue the first chunk of each.

    The rest is queued by `queue_next`, one chunk per transaction (`DueWork` runs it
    outside any resident's turn), so a broadcast to 100,000 residents never holds the
    database for long. Returns the messages queued here.
    """
    due = (
        await session.execute(
            select(Broadcast)
            .where(Broadcast.status == "scheduled", Broadcast.send_at <= now)
            .with_for_update(skip_locked=True)
        )
    ).scalars()
    queued = 0
    for broadcast in list(due):
        broadcast.status = "sending"
        broadcast.started_at = now
        queued += await _queue_chunk(session, broadcast, now, fallback, tz_name)
    return queued


async def queue_next(
    session: AsyncSession,
    now: datetime,
    fallback: tuple[str, ...],
    tz_name: str,
    chunk: int | None = None,
) -> int | None:
    """Queue the next chunk of one sending broadcast; None when none has any left.

    The broadcast row stays locked while its chunk is queued, so a cancel waits for the
    chunk (and then cancels it too) or the chunk finds the broadcast cancelled.
    """
    broadcast = await session.scalar(
        select(Broadcast)
        .where(Broadcast.status == "sending", Broadcast.queued_at.is_(None))
        .order_by(Broadcast.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if broadcast is None:
        return None
    return await _queue_chunk(session, broadcast, now, fallback, tz_name, chunk)


async def _queue_chunk(
    session: AsyncSession,
    broadcast: Broadcast,
    now: datetime,
    fallback: tuple[str, ...],
    tz_name: str,
    chunk: int | None = None,
) -> int:
    """Residents after `queued_through`, up to `chunk` of them by id: queue theirs, move on.

    A crash between chunks loses nothing: the next round starts after the last chunk
    committed, and the unique dedupe key makes a repeated chunk queue nobody twice.
    """
    size = chunk or CHUNK
    after = broadcast.queued_through or 0
    through = await session.scalar(
        select(Resident.id)
        .where(Resident.id > after)
        .order_by(Resident.id)
        .offset(size - 1)
        .limit(1)
    )
    queued = await enqueue_many(
        session,
        residents(Audience.from_json(broadcast.audience)),
        lambda t: _reply(broadcast, t.lang, fallback),
        now=now,
        kind="broadcast",
        priority=BULK_PRIORITY,
        tz_name=tz_name,
        dedupe_prefix=f"bc:{broadcast.id}",
        broadcast_id=broadcast.id,
        after=after,
        through=through,
    )
    if through is None:
        broadcast.queued_at = now
    else:
        broadcast.queued_through = through
    return queued


async def cancel(session: AsyncSession, broadcast_id: int, now: datetime) -> str | None:
    """Stop a scheduled or sending broadcast: nothing still waiting goes out. Returns the
    status it had ("scheduled" or "sending"), or None if there was nothing to stop.

    Waiting includes what Viber held back (status 12): it would otherwise be released
    and sent the next time that resident writes, long after staff stopped it.
    """
    broadcast = await session.get(Broadcast, broadcast_id, with_for_update=True)
    if broadcast is None or broadcast.status in ("cancelled", "done"):
        return None
    was = broadcast.status
    broadcast.status = "cancelled"
    broadcast.cancelled_at = now
    await session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.broadcast_id == broadcast_id,
            # "sending" too: a message being sent right now may still arrive, but its
            # outcome is not recorded (its claim no longer holds): never retried or held.
            OutboxMessage.status.in_(("pending", "held", "sending")),
        )
        .values(status="cancelled")
    )
    return was


async def progress(session: AsyncSession, broadcast_id: int) -> Progress:
    rows = await session.execute(
        select(OutboxMessage.status, OutboxMessage.delivery_status, func.count())
        .where(OutboxMessage.broadcast_id == broadcast_id)
        .group_by(OutboxMessage.status, OutboxMessage.delivery_status)
    )
    by_status: Counter[str] = Counter()
    delivered = 0
    for status, delivery, count in rows:
        by_status[status] += count
        if delivery in ("delivered", "seen"):
            delivered += count
    return Progress(
        queued=by_status["pending"] + by_status["sending"] + by_status["held"],
        sent=by_status["sent"],
        delivered=delivered,
        failed=by_status["failed"],
        unreachable=by_status["unreachable"],
        cancelled=by_status["cancelled"],
    )


async def finish_sent(session: AsyncSession) -> None:
    """A sending broadcast, queued to the end, with nothing left to send is done."""
    sending = (
        await session.execute(
            select(Broadcast).where(Broadcast.status == "sending", Broadcast.queued_at.is_not(None))
        )
    ).scalars()
    for broadcast in list(sending):
        if (await progress(session, broadcast.id)).queued == 0:
            broadcast.status = "done"


async def upcoming(session: AsyncSession, now: datetime) -> list[datetime]:
    """When scheduled broadcasts fall due; and a moment from now while one is due or half
    queued, so a "send now" (or a queuing a restart interrupted) is taken up at once by
    the scheduler's next resync rather than at its next periodic round."""
    found = await session.execute(
        select(Broadcast.send_at).where(Broadcast.status == "scheduled", Broadcast.send_at > now)
    )
    moments = [moment for moment in found.scalars() if moment is not None]
    unfinished = await session.scalar(
        select(Broadcast.id)
        .where(
            or_(
                and_(Broadcast.status == "scheduled", Broadcast.send_at <= now),
                and_(Broadcast.status == "sending", Broadcast.queued_at.is_(None)),
            )
        )
        .limit(1)
    )
    if unfinished is not None:
        moments.append(now + RESUME_AFTER)
    return moments
