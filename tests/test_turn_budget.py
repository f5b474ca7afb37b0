"""How much database work one resident's turn costs: statements and commits, not time.

A turn is storing the event (accept) and processing it (the engine): a burst stores a whole
`getUpdates` answer at once, but one lone message pays for its own. Its delivery (the outbox
dispatcher's claim and finish of the reply) has a budget of its own; benchmarks/inbound.py
counts all of them under load.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, select

from bot.config import Settings
from bot.delivery.dispatch import Dispatcher, DispatchPolicy
from bot.engine.engine import Engine
from bot.vocabulary.messages import Inbound, Kind, Reply
from flows.content import load_content
from storage.models import Identity, InboxEvent, OutboxMessage, Resident
from tests.harness import eventually

STATEMENTS = 6
COMMITS = 2
# One live reply sent alone (a steady pace, nothing to batch with): claim, then record.
DELIVERY_STATEMENTS = 2
DELIVERY_COMMITS = 2
CHAT = "4242"


class Counted:
    """Statements and commits the database engine sees while the block runs."""

    def __init__(self, sync_engine: Any) -> None:
        self.engine = sync_engine
        self.counts: Counter[str] = Counter()

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        self.counts["statements"] += 1
        self.counts[statement.split(None, 1)[0].upper()] += 1

    def _commit(self, *_args: Any) -> None:
        self.counts["commits"] += 1

    def __enter__(self) -> Counter[str]:
        event.listen(self.engine, "before_cursor_execute", self._statement)
        event.listen(self.engine, "commit", self._commit)
        return self.counts

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine, "commit", self._commit)


async def _onboarded(db) -> None:
    now = datetime.now(UTC)
    async with db.transaction() as session:
        resident = Resident(language="ka", municipality="marneuli", consent=True, consent_at=now)
        session.add(Identity(channel="telegram", address=CHAT, resident=resident, created_at=now))


def _says(external_id: str, text: str) -> Inbound:
    return Inbound(
        channel="telegram",
        address=CHAT,
        external_id=external_id,
        kind=Kind.TEXT,
        text=text,
        display_name="Nino",
        platform_language="ka",
    )


@pytest.mark.parametrize("text", ["/menu", "1"])
async def test_one_turn_stays_within_its_statement_and_commit_budget(db, text) -> None:
    engine = Engine(db, Settings.from_env({}), load_content())
    await _onboarded(db)
    # The resident opens the menu first, so "1" is a real choice in it (a report's categories).
    await engine.accept_many([_says("1", "/menu")])
    assert await engine.process_next()

    with Counted(db.engine.sync_engine) as counts:
        await engine.accept_many([_says("2", text)])
        assert await engine.process_next()

    async with db.transaction() as session:
        statuses = (await session.scalars(select(InboxEvent.status))).all()
        replies = (
            await session.scalars(select(OutboxMessage).where(OutboxMessage.address == CHAT))
        ).all()
    assert statuses == ["done", "done"]
    assert len(replies) == 2 and all(reply.status == "pending" for reply in replies)
    # accept: INSERT inbox; engine: the pending heads, then the turn itself: UPDATE inbox
    # (taken), SELECT identity+resident+staff role+held, UPDATE identities, INSERT outbox.
    assert counts["statements"] <= STATEMENTS, counts
    assert counts["commits"] <= COMMITS, counts


async def test_a_batch_of_updates_is_stored_in_one_statement(db) -> None:
    engine = Engine(db, Settings.from_env({}), load_content())
    batch = [_says(str(n), "/menu") for n in range(100)]
    with Counted(db.engine.sync_engine) as counts:
        await engine.accept_many(batch)
        await engine.accept_many(batch[:10])  # Telegram sends again: duplicates are skipped
    assert counts["statements"] == 2 and counts["commits"] == 2, counts
    async with db.transaction() as session:
        stored = (await session.scalars(select(InboxEvent.external_id))).all()
    assert sorted(stored, key=int) == [str(n) for n in range(100)]


class Chat:
    """A channel that only notes what it was given: delivery without a platform."""

    name = "telegram"

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, address: str, reply: Reply, **_parts: Any) -> str | None:
        self.sent.append(reply.text)
        return str(len(self.sent))


async def test_a_lone_reply_is_claimed_and_recorded_in_one_statement_each(db) -> None:
    engine = Engine(db, Settings.from_env({}), load_content())
    chat = Chat()
    # No idle looks while counting: only the turn's wake makes a lane look.
    dispatcher = Dispatcher(db, {"telegram": chat}, policy=DispatchPolicy(idle_wait=60))
    engine.notify = lambda: dispatcher.wake(bulk=False)  # as bot/app.py wires it
    await _onboarded(db)
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    try:
        await asyncio.sleep(0.2)  # both lanes' first looks (at start) are over
        await engine.accept_many([_says("1", "/menu")])
        with Counted(db.engine.sync_engine) as counts:
            assert await engine.process_next()
            before = Counter(counts)
            await eventually(lambda: len(chat.sent) == 1)
            await eventually(lambda: counts["commits"] - before["commits"] >= DELIVERY_COMMITS)
            await asyncio.sleep(0.1)  # nothing more follows: no empty look after the reply
        delivery = counts - before
    finally:
        stop.set()
        await running
    async with db.transaction() as session:
        statuses = (await session.scalars(select(OutboxMessage.status))).all()
    assert statuses == ["sent"]
    assert delivery["statements"] <= DELIVERY_STATEMENTS, delivery
    assert delivery["commits"] <= DELIVERY_COMMITS, delivery
