"""How much database work one resident's turn costs: statements and commits, not time.

A turn is storing the event (accept) and processing it (the engine): a burst stores a whole
`getUpdates` answer at once, but one lone message pays for its own. Delivery (the outbox
dispatcher's claim and finish) is counted by benchmarks/inbound.py, not budgeted here.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, select

from bot.config import Settings
from bot.engine.engine import Engine
from bot.vocabulary.messages import Inbound, Kind
from flows.content import load_content
from storage.models import Identity, InboxEvent, OutboxMessage, Resident

STATEMENTS = 6
COMMITS = 2
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
