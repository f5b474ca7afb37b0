"""The queries the engine and the dispatcher share, in one place."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, selectinload

from storage.models import Identity, InboxEvent, OutboxMessage, Report, Resident


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


async def next_inbox_event(session: AsyncSession) -> InboxEvent | None:
    """The oldest pending event whose resident has nothing older waiting: per-resident order
    holds even when several processes take events at once."""
    earlier = aliased(InboxEvent)
    blocked = exists().where(
        earlier.channel == InboxEvent.channel,
        earlier.address == InboxEvent.address,
        earlier.status == "pending",
        earlier.id < InboxEvent.id,
    )
    query = (
        select(InboxEvent)
        .where(InboxEvent.status == "pending", ~blocked)
        .order_by(InboxEvent.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return (await session.execute(query)).scalar_one_or_none()


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
