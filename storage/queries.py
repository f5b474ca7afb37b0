"""The queries the engine and the dispatcher share, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, Update, bindparam, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, contains_eager, selectinload

from storage.models import Identity, InboxEvent, OutboxMessage, Report, Resident, StaffMember


async def identity_for(session: AsyncSession, channel: str, address: str) -> Identity | None:
    query = (
        select(Identity)
        .where(Identity.channel == channel, Identity.address == address)
        .options(selectinload(Identity.resident))
        # FOR NO KEY UPDATE on PostgreSQL: a turn changes no key, so it need not wait for
        # the key-share locks that outbox rows referencing this identity take while a
        # broadcast is being queued (FOR UPDATE would). One turn per identity still holds.
        .with_for_update(key_share=True)
    )
    return (await session.execute(query)).scalar_one_or_none()


def _pending_heads() -> Select:
    earlier = aliased(InboxEvent)
    blocked = exists().where(
        earlier.channel == InboxEvent.channel,
        earlier.address == InboxEvent.address,
        earlier.status == "pending",
        earlier.id < InboxEvent.id,
    )
    return (
        select(InboxEvent.id, InboxEvent.payload)
        .where(InboxEvent.status == "pending", ~blocked)
        .order_by(InboxEvent.id)
        .limit(bindparam("limit"))
    )


# The statements of every turn are built once: building one costs more CPU than running it.
PENDING_HEADS = _pending_heads()
"""The oldest pending event of up to `limit` conversations, each the conversation's first:
events of different residents, which may be processed side by side. A plain read with no
lock: `TAKE_EVENT` decides, inside the turn's transaction, who processes an event."""


def _take_event() -> Update:
    inbox = InboxEvent.__table__
    still_pending = (
        select(inbox.c.id)
        .where(inbox.c.id == bindparam("event_id"), inbox.c.status == "pending")
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return (
        update(inbox)
        .where(inbox.c.id == still_pending)
        .values(status="done", processed_at=bindparam("now"), payload=bindparam("kept"))
    )


TAKE_EVENT = _take_event()
"""Mark an event done (`event_id`, `now`, `kept`: what is kept of its payload) as the first
statement of its turn: the row stays locked until the turn commits (or rolls back, leaving it
pending), and a process that finds it locked or already done updates nothing and leaves it."""


@dataclass(frozen=True)
class Conversation:
    """Who is writing, loaded for a turn in one statement."""

    identity: Identity | None
    staff_role: str | None
    has_held: bool


def _conversation() -> tuple[Select, Select]:
    channel, address = bindparam("channel"), bindparam("address")
    role = (
        select(StaffMember.role)
        .where(StaffMember.channel == channel, StaffMember.address == address)
        .scalar_subquery()
    )
    held = exists().where(
        OutboxMessage.channel == channel,
        OutboxMessage.address == address,
        OutboxMessage.status == "held",
    )
    query = (
        select(Identity, role.label("staff_role"), held.label("has_held"))
        .join(Identity.resident)
        .options(contains_eager(Identity.resident))
        .where(Identity.channel == channel, Identity.address == address)
        .with_for_update(of=Identity, key_share=True)
    )
    return query, select(role)


_CONVERSATION, _STAFF_ROLE = _conversation()


async def conversation_for(session: AsyncSession, channel: str, address: str) -> Conversation:
    """The identity (locked for the turn) with its resident, the staff role of the address and
    whether the platform held messages back for it: one statement instead of four."""
    where = {"channel": channel, "address": address}
    row = (await session.execute(_CONVERSATION, where)).one_or_none()
    if row is None:
        return Conversation(None, await session.scalar(_STAFF_ROLE, where), False)
    return Conversation(row[0], row[1], bool(row[2]))


async def reports_of(session: AsyncSession, resident_id: int, limit: int = 20) -> list[Report]:
    query = (
        select(Report)
        .where(Report.resident_id == resident_id)
        .order_by(Report.created_at.desc(), Report.id.desc())
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def anonymise_reports(session: AsyncSession, resident_id: int) -> None:
    await session.execute(
        update(Report)
        .where(Report.resident_id == resident_id)
        .values(resident_id=None, anonymous=True, shared_name=None, gender=None, age_group=None)
    )


async def forget_messages(session: AsyncSession, resident: Resident) -> None:
    """What we said to a resident, what they sent and what went wrong with it may hold
    personal data: blank it all, errors included, and stop what is still queued for them
    (a message in flight stays stopped: its outcome is written only under its claim)."""
    for identity in await resident.awaitable_attrs.identities:
        theirs = or_(
            OutboxMessage.identity_id == identity.id,
            (OutboxMessage.channel == identity.channel)
            & (OutboxMessage.address == identity.address),
        )
        await session.execute(
            update(OutboxMessage)
            .where(theirs, OutboxMessage.status.in_(("pending", "sending", "held", "welcome")))
            .values(status="cancelled", claim_token=None, claimed_until=None)
        )
        await session.execute(
            update(OutboxMessage).where(theirs).values(payload={}, last_error=None)
        )
        sent = (InboxEvent.channel == identity.channel) & (InboxEvent.address == identity.address)
        await session.execute(
            update(InboxEvent)
            .where(sent, InboxEvent.status == "failed")
            .values(status="erased")  # nothing left to retry
        )
        await session.execute(
            update(InboxEvent)
            .where(sent, InboxEvent.status != "pending")
            .values(payload={}, error=None)
        )


async def mark_unreachable(
    session: AsyncSession, channel: str, address: str, now: datetime
) -> None:
    await session.execute(
        update(Identity)
        .where(Identity.channel == channel, Identity.address == address)
        .values(unreachable_at=now)
    )


async def release_held(session: AsyncSession, channel: str, address: str) -> None:
    """The resident wrote again: what the platform held back may go now (Viber status 12)."""
    await session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.channel == channel,
            OutboxMessage.address == address,
            OutboxMessage.status == "held",
        )
        .values(status="pending", last_error=None)
    )


async def stop_sending(session: AsyncSession, channel: str, address: str, reason: str) -> None:
    await session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.channel == channel,
            OutboxMessage.address == address,
            OutboxMessage.status.in_(("pending", "held")),
        )
        .values(status="unreachable", last_error=reason)
    )


async def record_delivery(
    session: AsyncSession, channel: str, platform_message_id: str, status: str
) -> None:
    await session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.channel == channel,
            OutboxMessage.platform_message_id == platform_message_id,
        )
        .values(delivery_status=status)
    )


async def take_welcome(
    session: AsyncSession, channel: str, address: str, now: datetime
) -> list[dict]:
    """Replies kept for the answer to Viber's `conversation_started`, marked sent with it."""
    rows = list(
        (
            await session.execute(
                select(OutboxMessage)
                .where(
                    OutboxMessage.channel == channel,
                    OutboxMessage.address == address,
                    OutboxMessage.status == "welcome",
                )
                .order_by(OutboxMessage.id)
                .with_for_update()
            )
        ).scalars()
    )
    for row in rows:
        row.status, row.sent_at, row.delivery_status = "sent", now, "welcome"
    return [row.payload for row in rows]


async def inbox_status(session: AsyncSession, channel: str, external_id: str) -> str | None:
    return await session.scalar(
        select(InboxEvent.status).where(
            InboxEvent.channel == channel, InboxEvent.external_id == external_id
        )
    )
