"""Putting one message for one resident into the outbox, in their language.

A resident may use two linked apps: a notice goes once, to the app they used
last, and never to an app that blocked us. A `dedupe_key` makes a notice exist
at most once, whichever process or rerun creates it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.vocabulary.i18n import Translator
from bot.vocabulary.messages import Reply
from storage.models import Identity, OutboxMessage, Resident

# Rows per INSERT: large enough to make a 10,000-resident broadcast a few statements,
# small enough to stay under SQLite's and asyncpg's limits on bound parameters.
CHUNK = 500


async def reachable_identity(session: AsyncSession, resident_id: int) -> Identity | None:
    return await session.scalar(
        select(Identity)
        .where(Identity.resident_id == resident_id, Identity.unreachable_at.is_(None))
        .order_by(Identity.last_inbound_at.desc().nulls_last(), Identity.id.desc())
        .limit(1)
    )


def reached(recipients: Select[tuple[Resident]]) -> Select[Any]:
    """Each of `recipients` once, on the app `reachable_identity` would pick, in one query.

    Rows: identity_id, resident_id, channel, address, last_inbound_at, language. The
    broadcast preview counts these rows and the broadcast queues them, so what staff
    were shown is what goes out.
    """
    chosen = recipients.subquery()
    ranked = (
        select(
            Identity.id.label("identity_id"),
            Identity.resident_id,
            Identity.channel,
            Identity.address,
            Identity.last_inbound_at,
            func.row_number()
            .over(
                partition_by=Identity.resident_id,
                order_by=(Identity.last_inbound_at.desc().nulls_last(), Identity.id.desc()),
            )
            .label("rank"),
        )
        .where(Identity.unreachable_at.is_(None))
        .subquery()
    )
    return (
        select(
            ranked.c.identity_id,
            ranked.c.resident_id,
            ranked.c.channel,
            ranked.c.address,
            ranked.c.last_inbound_at,
            chosen.c.language,
        )
        .join(chosen, chosen.c.id == ranked.c.resident_id)
        .where(ranked.c.rank == 1, chosen.c.language.is_not(None))
        .order_by(ranked.c.resident_id)
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


async def enqueue_many(
    session: AsyncSession,
    recipients: Select[tuple[Resident]],
    render: Callable[[Translator], Reply],
    *,
    now: datetime,
    kind: str,
    priority: int,
    dedupe_prefix: str,
    tz_name: str = "Asia/Tbilisi",
    broadcast_id: int | None = None,
) -> int:
    """Queue one message for each of many residents with a handful of statements.

    The same rules as `enqueue` (the app used last, never a blocked one, at most once
    per `dedupe_prefix` and resident), but a broadcast to thousands must not cost
    several queries per resident while it holds SQLite's only write lock.
    """
    payloads: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    found = await session.execute(reached(recipients))
    for identity_id, resident_id, channel, address, _last, language in found:
        if language not in payloads:
            payloads[language] = render(Translator(language, tz_name)).to_json()
        rows.append(
            {
                "channel": channel,
                "address": address,
                "identity_id": identity_id,
                "kind": kind,
                "priority": priority,
                "payload": payloads[language],
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "dedupe_key": f"{dedupe_prefix}:{resident_id}",
                "broadcast_id": broadcast_id,
            }
        )
    queued = 0
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        already = set(
            (
                await session.execute(
                    select(OutboxMessage.dedupe_key).where(
                        OutboxMessage.dedupe_key.in_([row["dedupe_key"] for row in chunk])
                    )
                )
            ).scalars()
        )
        fresh = [row for row in chunk if row["dedupe_key"] not in already]
        if fresh:
            await session.execute(insert(OutboxMessage), fresh)
            queued += len(fresh)
    return queued
