"""Reminders, event notices and audience counts are set-based: their cost in statements
does not grow with the number of residents, and a round with nothing new to queue reads
no resident at all (the scheduler runs one every 30 seconds)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import event, func, insert, select, update

from bot.outreach import broadcasts, events, loop
from bot.outreach.audience import Audience, summarise
from storage.db import Database
from storage.models import Identity, OutboxMessage, Report, Rsvp
from tests.test_multiprocess import residents

TZ = "Asia/Tbilisi"
OFFSETS = (timedelta(hours=24), timedelta(hours=2))


class Statements:
    """Counts the SQL statements sent to the database while active."""

    def __init__(self, db: Database) -> None:
        self.count = 0
        self.on = False
        event.listen(db.engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, *_args) -> None:
        if self.on:
            self.count += 1

    async def of(self, work) -> tuple[object, int]:
        self.count, self.on = 0, True
        try:
            result = await work()
        finally:
            self.on = False
        return result, self.count


async def event_with(db: Database, going: list[int], starts_at: datetime) -> int:
    async with db.transaction() as session:
        created = await events.create(
            session,
            titles={"ru": "Встреча о воде", "ka": "შეხვედრა წყალზე"},
            starts_at=starts_at,
            place="Марнеули, дом культуры",
            now=starts_at - timedelta(days=3),
        )
        await session.execute(
            insert(Rsvp), [{"event_id": created.id, "resident_id": rid} for rid in going]
        )
        return created.id


async def outbox_count(db: Database, kind: str) -> tuple[int, int]:
    async with db.transaction() as session:
        rows, keys = (
            await session.execute(
                select(func.count(), func.count(OutboxMessage.dedupe_key.distinct())).where(
                    OutboxMessage.kind == kind
                )
            )
        ).one()
    return rows, keys


async def remind(db: Database, now: datetime) -> int:
    async with db.transaction() as session:
        return await events.remind_due(session, now, OFFSETS, ("ru",), TZ)


async def test_reminders_cost_the_same_statements_for_ten_or_a_thousand_going(db) -> None:
    now = datetime.now(UTC)
    few = await residents(db, 10, first_chat=10_000)
    many = await residents(db, 1000, first_chat=20_000)
    await event_with(db, few, now + timedelta(hours=1))
    counter = Statements(db)
    queued, for_few = await counter.of(lambda: remind(db, now))
    assert queued == 10
    await event_with(db, many, now + timedelta(hours=1, minutes=30))
    queued, for_both = await counter.of(lambda: remind(db, now))
    assert queued == 1000
    assert for_both <= 2 * for_few, "a few statements per event, none per resident"
    queued, again = await counter.of(lambda: remind(db, now))
    assert queued == 0 and again <= for_both, "the next round queues nobody twice"
    assert await outbox_count(db, "reminder") == (1010, 1010)


async def test_moving_an_event_tells_everyone_going_in_a_few_statements(db) -> None:
    now = datetime.now(UTC)
    going = await residents(db, 800, first_chat=30_000)
    event_id = await event_with(db, going, now + timedelta(days=2))
    counter = Statements(db)

    async def move() -> int:
        async with db.transaction() as session:
            return await events.change(
                session,
                event_id,
                now=now,
                fallback=("ru",),
                tz_name=TZ,
                starts_at=now + timedelta(days=3),
            )

    told, statements = await counter.of(move)
    assert told == 800 and statements <= 8
    async with db.transaction() as session:
        payload = await session.scalar(
            select(OutboxMessage.payload).where(OutboxMessage.kind == "event").limit(1)
        )
    assert "Встреча о воде" in payload["text"], "in the resident's language"


async def test_follow_ups_are_asked_once_and_later_rounds_read_no_report(db) -> None:
    now = datetime.now(UTC)
    authors = await residents(db, 200, first_chat=40_000)
    async with db.transaction() as session:
        await session.execute(
            insert(Report),
            [
                {
                    "reference": f"KH-{n:06d}",
                    "kind": "need",
                    "resident_id": rid,
                    "channel": "telegram",
                    "language": "ru",
                    "status": "resolved",
                    "resolved_at": now - timedelta(days=30),
                    "media": [],
                    "created_at": now - timedelta(days=40),
                    "updated_at": now - timedelta(days=30),
                }
                for n, rid in enumerate(authors)
            ],
        )
    after = timedelta(days=14)
    counter = Statements(db)

    async def followups(at: datetime = now) -> int:
        async with db.transaction() as session:
            return await loop.followups_due(session, at, after, TZ)

    assert (await counter.of(followups))[0] == 200
    queued, statements = await counter.of(followups)
    assert queued == 0 and statements == 1, "one query that finds nothing new"
    assert await outbox_count(db, "followup") == (200, 200)
    # Reopened and resolved again the next day: asked again, once, two weeks later.
    async with db.transaction() as session:
        await session.execute(
            update(Report)
            .where(Report.reference == "KH-000007")
            .values(resolved_at=now + timedelta(days=1))
        )
    later = now + timedelta(days=15)
    assert (await counter.of(lambda: followups(later)))[0] == 1
    assert (await counter.of(lambda: followups(later)))[0] == 0
    assert await outbox_count(db, "followup") == (201, 201)


async def test_the_audience_is_counted_by_the_database(db) -> None:
    now = datetime.now(UTC)
    await residents(db, 600, first_chat=50_000)
    viber = await residents(db, 300, first_chat=60_000)
    async with db.transaction() as session:
        # Half of these write on Viber, 100 of them not within the last 24 hours.
        await session.execute(
            update(Identity)
            .where(Identity.resident_id.in_(viber))
            .values(channel="viber", last_inbound_at=now - timedelta(hours=1))
        )
        await session.execute(
            update(Identity)
            .where(Identity.resident_id.in_(viber[:100]))
            .values(last_inbound_at=now - timedelta(days=3))
        )
    counter = Statements(db)

    async def count():
        async with db.transaction() as session:
            return await summarise(session, Audience(), {"ka": "…"}, now)

    summary, statements = await counter.of(count)
    assert statements == 1
    assert dict(summary.per_channel) == {"telegram": 600, "viber": 300}
    assert dict(summary.fallback) == {"ru": 900}
    assert summary.viber_outside_window == 100
    assert summary.total == 900
    # What staff were shown is what is queued.
    async with db.transaction() as session:
        created = await broadcasts.create(session, texts={"ka": "…"}, audience=Audience(), now=now)
        assert await broadcasts.start_due(session, now, ("ka",), TZ) == summary.total
        assert created.id
