"""A broadcast to many residents is queued in short chunks, outside anyone's turn.

Queuing a broadcast to 100,000 residents used to be one transaction: on SQLite a
resident's reply waited behind it, on PostgreSQL nobody was answered until it ended.
Now the scheduler queues one chunk of residents per transaction, remembers how far it
got, and a rerun after a crash queues nobody twice; a cancel stops what is left.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import event, func, select

from bot.outreach import broadcasts
from bot.outreach.audience import Audience
from bot.outreach.due import DueWork
from storage.db import Database
from storage.models import Broadcast, OutboxMessage
from tests.fakes.telegram_api import TelegramStandIn
from tests.harness import TOKEN, eventually, running_khma, settings_for
from tests.test_multiprocess import residents

MANY = 3000
CHUNK = 250
FIRST_CHAT = 70_000
ANNOUNCEMENT = "Собрание жителей в четверг в 18:00"


async def broadcast_now(db: Database) -> int:
    async with db.transaction() as session:
        created = await broadcasts.create(
            session, texts={"ru": ANNOUNCEMENT}, audience=Audience(), now=datetime.now(UTC)
        )
        return created.id


async def queued(db: Database, broadcast_id: int) -> tuple[int, int]:
    """Rows queued for the broadcast, and how many distinct residents' apps they go to."""
    async with db.transaction() as session:
        rows, apps = (
            await session.execute(
                select(func.count(), func.count(OutboxMessage.identity_id.distinct())).where(
                    OutboxMessage.broadcast_id == broadcast_id
                )
            )
        ).one()
    return rows, apps


async def state_of(db: Database, broadcast_id: int) -> Broadcast:
    async with db.transaction() as session:
        found = await session.get(Broadcast, broadcast_id)
        assert found is not None
        return found


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broadcasts, "CHUNK", CHUNK)


async def test_a_resident_is_answered_while_a_broadcast_is_being_queued(db, small_chunks) -> None:
    async with (
        TelegramStandIn(token=TOKEN) as api,
        running_khma(db, api, QUIET_HOURS="off") as khma,
    ):
        await residents(db, MANY, first_chat=FIRST_CHAT)
        broadcast_id = await broadcast_now(db)
        # The scheduler queues the first chunks, then waits here until the resident
        # has been answered: a queuing that held the database would never get here.
        answered = asyncio.Event()
        chunks = 0

        async def pause_after_two_chunks() -> None:
            nonlocal chunks
            chunks += 1
            if chunks == 2:
                await asyncio.wait_for(answered.wait(), timeout=60)

        khma.due.between_chunks = pause_after_two_chunks
        queuing = asyncio.create_task(khma.scheduler.run_due())
        await eventually(lambda: chunks == 2, timeout=30)

        writer = FIRST_CHAT + MANY - 1  # among the last to be queued
        api.command_update(writer, "/menu", first_name="Rauf", language_code="ru")
        await eventually(lambda: bool(api.sent_to(writer)), timeout=30)
        rows, _ = await queued(db, broadcast_id)
        assert rows == 3 * CHUNK, "answered while the broadcast was a third queued"
        assert (await state_of(db, broadcast_id)).queued_at is None
        assert ANNOUNCEMENT not in (api.sent_to(writer)[0].text or "")

        answered.set()
        await asyncio.wait_for(queuing, timeout=120)
        assert await queued(db, broadcast_id) == (MANY, MANY), "everyone, once"
        assert (await state_of(db, broadcast_id)).queued_at is not None


async def test_a_turn_does_not_wait_for_the_chunk_being_queued_on_postgresql(
    db, small_chunks
) -> None:
    """The engine locks a resident's identity FOR NO KEY UPDATE: the outbox rows a chunk
    inserts hold key-share locks on the identities they reference, which FOR UPDATE
    waits for. (SQLite has one writer at a time; there the chunks are kept short.)"""
    if db.is_sqlite:
        pytest.skip("row locks are PostgreSQL's")
    async with (
        TelegramStandIn(token=TOKEN) as api,
        running_khma(db, api, QUIET_HOURS="off") as khma,
    ):
        await residents(db, MANY, first_chat=FIRST_CHAT)
        broadcast_id = await broadcast_now(db)
        inserted, answered = asyncio.Event(), asyncio.Event()
        original = broadcasts.enqueue_many

        async def hold_the_chunk_open(*args, **kwargs) -> int:
            count = await original(*args, **kwargs)
            inserted.set()
            await asyncio.wait_for(answered.wait(), timeout=60)  # inside its transaction
            return count

        broadcasts.enqueue_many = hold_the_chunk_open  # type: ignore[assignment]
        try:
            queuing = asyncio.create_task(khma.scheduler.run_due())
            await asyncio.wait_for(inserted.wait(), timeout=30)
            writer = FIRST_CHAT  # in the first chunk, whose rows are not yet committed
            api.command_update(writer, "/menu", first_name="Nino", language_code="ru")
            await eventually(lambda: bool(api.sent_to(writer)), timeout=30)
            assert await queued(db, broadcast_id) == (0, 0), "the chunk was still open"
        finally:
            answered.set()
            broadcasts.enqueue_many = original  # type: ignore[assignment]
        await asyncio.wait_for(queuing, timeout=120)
        assert await queued(db, broadcast_id) == (MANY, MANY)


async def test_queuing_resumes_after_a_crash_and_queues_nobody_twice(db, small_chunks) -> None:
    await residents(db, 1000, first_chat=FIRST_CHAT)
    broadcast_id = await broadcast_now(db)
    now = datetime.now(UTC)
    async with db.transaction() as session:
        assert await broadcasts.start_due(session, now, ("ru",), "Asia/Tbilisi") == CHUNK
    # A crash in the middle of the second chunk: its transaction never commits.
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            assert await broadcasts.queue_next(session, now, ("ru",), "Asia/Tbilisi") == CHUNK
            raise RuntimeError("kill -9")
    # A crash after a chunk's rows were committed but before its progress was kept
    # (the worst case a change in the order of writes could produce).
    async with db.transaction() as session:
        await broadcasts.queue_next(session, now, ("ru",), "Asia/Tbilisi")
    async with db.transaction() as session:
        found = await session.get(Broadcast, broadcast_id)
        found.queued_through = None
    assert await queued(db, broadcast_id) == (2 * CHUNK, 2 * CHUNK)

    due = DueWork(db, settings_for(None))
    statements = count_statements(db)
    assert await due.queue_broadcasts(now) == 1000 - 2 * CHUNK
    assert await queued(db, broadcast_id) == (1000, 1000), "the rest, and nobody twice"
    assert (await state_of(db, broadcast_id)).queued_at is not None
    chunks = 1000 // CHUNK + 1
    assert len(statements) <= 6 * chunks + 2, "a handful of statements per chunk, not per row"
    assert await due.queue_broadcasts(now) == 0


async def test_a_cancel_stops_what_is_left_to_queue(db, small_chunks) -> None:
    await residents(db, 1000, first_chat=FIRST_CHAT)
    broadcast_id = await broadcast_now(db)
    now = datetime.now(UTC)
    async with db.transaction() as session:
        await broadcasts.start_due(session, now, ("ru",), "Asia/Tbilisi")
    async with db.transaction() as session:
        assert await broadcasts.queue_next(session, now, ("ru",), "Asia/Tbilisi") == CHUNK
    async with db.transaction() as session:
        assert await broadcasts.cancel(session, broadcast_id, now) == "sending"
    assert await DueWork(db, settings_for(None)).queue_broadcasts(now) == 0
    async with db.transaction() as session:
        statuses = dict(
            (
                await session.execute(
                    select(OutboxMessage.status, func.count())
                    .where(OutboxMessage.broadcast_id == broadcast_id)
                    .group_by(OutboxMessage.status)
                )
            ).all()
        )
    assert statuses == {"cancelled": 2 * CHUNK}


def count_statements(db: Database) -> list[str]:
    seen: list[str] = []

    @event.listens_for(db.engine.sync_engine, "before_cursor_execute")
    def record(_conn, _cursor, statement, *_args) -> None:
        seen.append(statement)

    return seen
