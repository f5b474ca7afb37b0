"""Putting one message for one resident into the outbox, in their language.

A resident may use two linked apps: a notice goes once, to the app they used
last, and never to an app that blocked us. A `dedupe_key` makes a notice exist
at most once, whichever process or rerun creates it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    Select,
    String,
    case,
    cast,
    exists,
    func,
    literal,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.vocabulary.i18n import Translator
from bot.vocabulary.languages import LANGUAGES
from bot.vocabulary.messages import Reply
from storage.models import Identity, OutboxMessage, Resident


async def reachable_identity(session: AsyncSession, resident_id: int) -> Identity | None:
    return await session.scalar(
        select(Identity)
        .where(Identity.resident_id == resident_id, Identity.unreachable_at.is_(None))
        .order_by(Identity.last_inbound_at.desc().nulls_last(), Identity.id.desc())
        .limit(1)
    )


def reached(
    recipients: Select[tuple[Resident]], *, after: int | None = None, through: int | None = None
) -> Select[Any]:
    """Each of `recipients` once, on the app `reachable_identity` would pick, in one query.

    Rows: identity_id, resident_id, channel, address, last_inbound_at, language. The
    broadcast preview counts these rows and the broadcast queues them, so what staff
    were shown is what goes out. `after` and `through` keep to one range of resident ids
    (both the residents and the identities ranked), so queuing one chunk of a large
    audience reads that chunk, not everyone.
    """
    if after is not None:
        recipients = recipients.where(Resident.id > after)
    if through is not None:
        recipients = recipients.where(Resident.id <= through)
    chosen = recipients.subquery()
    apps = select(
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
    ).where(Identity.unreachable_at.is_(None))
    if after is not None:
        apps = apps.where(Identity.resident_id > after)
    if through is not None:
        apps = apps.where(Identity.resident_id <= through)
    ranked = apps.subquery()
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
    after: int | None = None,
    through: int | None = None,
) -> int:
    """Queue one message for each of many residents in one statement, whatever their number.

    The same rules as `enqueue` (the app used last, never a blocked one, at most once
    per `dedupe_prefix` and resident), but set-based: one `INSERT … SELECT … ON CONFLICT
    DO NOTHING` in which the database picks each resident's app and their language's
    text, and the unique `dedupe_key` skips whoever already has theirs (a rerun after a
    crash, another process). The message is rendered once per language, in Python.
    `after`/`through` limit it to one range of resident ids (see `reached`).
    """
    found = reached(recipients, after=after, through=through).order_by(None).subquery()
    key = literal(f"{dedupe_prefix}:", String()) + cast(found.c.resident_id, String())
    # Whoever already has theirs is skipped by an index lookup, before any row is built
    # (reminders rerun every round); ON CONFLICT covers a race with another process.
    fresh = ~exists().where(OutboxMessage.dedupe_key == key)
    languages = LANGUAGES  # rendered in each; a resident's language is always one of them
    payload_type = OutboxMessage.__table__.c.payload.type
    payload = case(
        *(
            (
                found.c.language == lang,
                literal(render(Translator(lang, tz_name)).to_json(), payload_type),
            )
            for lang in languages
        )
    )
    moment = OutboxMessage.__table__.c.created_at.type
    rows = select(
        found.c.channel,
        found.c.address,
        found.c.identity_id,
        literal(kind, String()),
        literal(priority, Integer()),
        payload,
        literal("pending", String()),
        literal(0, Integer()),
        literal(now, moment),
        literal(now, moment),
        key,
        literal(broadcast_id, BigInteger()),
    ).where(found.c.language.in_(languages), fresh)
    statement = insert_ignoring_duplicates(session, OutboxMessage).from_select(
        [
            "channel",
            "address",
            "identity_id",
            "kind",
            "priority",
            "payload",
            "status",
            "attempts",
            "next_attempt_at",
            "created_at",
            "dedupe_key",
            "broadcast_id",
        ],
        rows,
        include_defaults=False,
    )
    result = await session.execute(statement.on_conflict_do_nothing(index_elements=["dedupe_key"]))
    return max(0, result.rowcount or 0)


def insert_ignoring_duplicates(session: AsyncSession, model: Any) -> Any:
    """An INSERT of this database's dialect, which knows `ON CONFLICT DO NOTHING`."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)
