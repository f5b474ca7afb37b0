"""Putting one message for one resident into the outbox, in their language.

A resident may use two linked apps: a notice goes once, to the app they used
last, and never to an app that blocked us. A `dedupe_key` makes a notice exist
at most once, whichever process or rerun creates it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.i18n import Translator
from bot.messages import Reply
from storage.models import Identity, OutboxMessage, Resident

REPLY = 0
NOTICE = 10
BULK = 20


async def reachable_identity(session: AsyncSession, resident_id: int) -> Identity | None:
    return await session.scalar(
        select(Identity)
        .where(Identity.resident_id == resident_id, Identity.unreachable_at.is_(None))
        .order_by(Identity.last_inbound_at.desc().nulls_last(), Identity.id.desc())
        .limit(1)
    )


async def enqueue(
    session: AsyncSession,
    resident: Resident,
    render: Callable[[Translator], Reply],
    *,
    now: datetime,
    kind: str,
    priority: int,
    tz_name: str = "Asia/Tbilisi",
    dedupe_key: str | None = None,
    broadcast_id: int | None = None,
) -> bool:
    """Queue `render` in the resident's language; False if unreachable or already queued."""
    identity = await reachable_identity(session, resident.id)
    if identity is None or resident.language is None:
        return False
    if dedupe_key is not None:
        exists = await session.scalar(
            select(OutboxMessage.id).where(OutboxMessage.dedupe_key == dedupe_key)
        )
        if exists is not None:
            return False
    row = OutboxMessage(
        channel=identity.channel,
        address=identity.address,
        identity_id=identity.id,
        kind=kind,
        priority=priority,
        payload=render(Translator(resident.language, tz_name)).to_json(),
        next_attempt_at=now,
        created_at=now,
        dedupe_key=dedupe_key,
        broadcast_id=broadcast_id,
    )
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return False  # another process queued it a moment ago
    return True
