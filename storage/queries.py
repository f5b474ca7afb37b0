"""The queries the engine and the dispatcher share, in one place."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, selectinload

from storage.models import Identity, InboxEvent, OutboxMessage, Report, Resident


async def identity_for(session: AsyncSession, channel: str, address: str) -> Identity | None:
    query = (
        select(Identity)
        .where(Identity.channel == channel, Identity.address == address)
        .options(selectinload(Identity.resident))
        .with_for_update()
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
    """What we said to a resident and what they sent may hold personal data: blank it."""
    for identity in await resident.awaitable_attrs.identities:
        await session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.identity_id == identity.id,
                OutboxMessage.status.not_in(("pending", "sending")),
            )
            .values(payload={})
        )
        await session.execute(
            update(InboxEvent)
            .where(
                InboxEvent.channel == identity.channel,
                InboxEvent.address == identity.address,
                InboxEvent.status != "pending",
            )
            .values(payload={})
        )


async def mark_unreachable(
    session: AsyncSession, channel: str, address: str, now: datetime
) -> None:
    await session.execute(
        update(Identity)
        .where(Identity.channel == channel, Identity.address == address)
        .values(unreachable_at=now)
    )
