"""One process schedules, the database decides: leadership by advisory lock, work at due moments.

Every test runs on SQLite and on PostgreSQL (the `db` fixture). Advisory locks belong to
the whole PostgreSQL database, not to the test's schema, so each test contends for a
lock key of its own and never meets another test run sharing the same server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import BigInteger, bindparam, text

from bot.schedule.leader import SCHEDULER_LOCK_KEY, Leadership, lock_key_for
from bot.schedule.scheduler import Scheduler
from storage.db import Database
from tests.harness import eventually

RETRY = 0.2
SINGLE_PROCESS = "SQLite is the single-process store: every process using it leads"


def now() -> datetime:
    return datetime.now(UTC)


def lock_key() -> int:
    return secrets.randbits(62) + 1


class Running:
    """Something with `run(stop)` running as a task, stopped like bot/app.py stops loops."""

    def __init__(self, runner: Leadership | Scheduler) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(runner.run(self.stop))

    async def halt(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, timeout=5)


@contextlib.asynccontextmanager
async def running(*runners: Leadership | Scheduler) -> AsyncIterator[list[Running]]:
    started = [Running(runner) for runner in runners]
    try:
        yield started
    finally:
        for item in started:
            if not item.task.done():
                await item.halt()


class FakeDue:
    """Stands in for the database: records each `work(now)`, lists moments still ahead."""

    def __init__(self, moments: list[datetime] | None = None, fail_first: int = 0) -> None:
        self.moments = list(moments or [])
        self.calls: list[datetime] = []
        self.fail_first = fail_first
        self.upcoming_calls = 0

    async def work(self, at: datetime) -> int:
        self.calls.append(at)
        if len(self.calls) <= self.fail_first:
            raise RuntimeError("the database hiccupped")
        return 1

    async def upcoming(self, at: datetime) -> list[datetime]:
        self.upcoming_calls += 1
        return [moment for moment in self.moments if moment > at]

    def calls_at_or_after(self, moment: datetime) -> int:
        return sum(1 for call in self.calls if call >= moment)


def scheduler_for(
    db: Database, due: FakeDue, *, resync_every: float = 60.0, key: int | None = None
) -> Scheduler:
    return Scheduler(
        work=due.work,
        upcoming=due.upcoming,
        clock=now,
        resync_every=resync_every,
        leadership=Leadership(db, key=key or lock_key(), retry=RETRY),
    )


async def lock_holder_pid(db: Database, key: int) -> int | None:
    """The PostgreSQL backend holding advisory lock `key` (a bigint key splits in two)."""
    query = text(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND classid::text::bigint = :high AND objid::text::bigint = :low"
    ).bindparams(bindparam("high", type_=BigInteger), bindparam("low", type_=BigInteger))
    async with db.engine.connect() as conn:
        result = await conn.execute(query, {"high": key >> 32, "low": key & 0xFFFFFFFF})
        return result.scalar()


# (a) leadership


def test_the_lock_key_is_fixed_and_schemas_get_their_own() -> None:
    digest = hashlib.sha256(b"khma scheduler").digest()
    assert SCHEDULER_LOCK_KEY == int.from_bytes(digest[:8], "big") >> 1 < 2**63
    assert lock_key_for(None) == SCHEDULER_LOCK_KEY
    assert lock_key_for("t_a") == lock_key_for("t_a") != lock_key_for("t_b")
    assert all(0 <= lock_key_for(s) < 2**63 for s in ("t_a", "public", "x" * 63))


async def test_exactly_one_leader_and_the_other_takes_over(db: Database) -> None:
    key = lock_key()
    first, second = Leadership(db, key=key, retry=RETRY), Leadership(db, key=key, retry=RETRY)
    async with running(first, second) as (run_first, run_second):
        await eventually(lambda: first.is_leader or second.is_leader)
        if db.is_sqlite:
            # SINGLE_PROCESS: there is nothing to contend for, both lead.
            await eventually(lambda: first.is_leader and second.is_leader)
            return
        await asyncio.sleep(3 * RETRY)  # several retries by the follower
        assert [first.is_leader, second.is_leader].count(True) == 1
        leader, follower = (first, second) if first.is_leader else (second, first)
        assert leader.became_leader.is_set() and not follower.became_leader.is_set()
        assert await lock_holder_pid(db, key) is not None

        await (run_first if leader is first else run_second).halt()
        assert not leader.is_leader

        await asyncio.wait_for(follower.became_leader.wait(), timeout=3)
        assert follower.is_leader


async def test_a_leader_whose_connection_dies_steps_down(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip(SINGLE_PROCESS + "; there is no lock connection to lose")
    key = lock_key()
    first, second = Leadership(db, key=key, retry=RETRY), Leadership(db, key=key, retry=RETRY)
    losses: list[Leadership] = []

    def note_loss(leadership: Leadership) -> Callable[[], Awaitable[None]]:
        async def on_loss() -> None:
            losses.append(leadership)

        return on_loss

    first.on_loss, second.on_loss = note_loss(first), note_loss(second)
    async with running(first, second):
        await eventually(lambda: first.is_leader or second.is_leader)
        leader, follower = (first, second) if first.is_leader else (second, first)
        pid = await lock_holder_pid(db, key)
        assert pid is not None

        async with db.engine.connect() as conn:  # as if the process had died
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

        await eventually(lambda: follower.is_leader and not leader.is_leader, timeout=4)
        assert losses == [leader]
        await asyncio.sleep(3 * RETRY)  # the old leader retries, and stays a follower
        assert follower.is_leader and not leader.is_leader
        assert await lock_holder_pid(db, key) not in (None, pid)


# (b) catch-up and due moments


async def test_work_runs_at_start_and_at_the_upcoming_moment(db: Database) -> None:
    moment = now() + timedelta(seconds=0.3)
    due = FakeDue([moment])
    scheduler = scheduler_for(db, due)
    async with running(scheduler) as (run,):
        await asyncio.wait_for(scheduler.leadership.became_leader.wait(), timeout=3)
        assert len(due.calls) == 1 and due.calls[0] < moment  # catch-up after downtime
        assert scheduler.scheduled() == [moment]

        await eventually(lambda: due.calls_at_or_after(moment) == 1, timeout=3)
        assert scheduler.scheduled() == []
        await run.halt()
    assert not scheduler.running and scheduler.scheduled() == []
    assert len(due.calls) == 2


# (c) resync


async def test_resync_picks_up_a_moment_added_after_start(db: Database) -> None:
    due = FakeDue()
    scheduler = scheduler_for(db, due)
    async with running(scheduler):
        await asyncio.wait_for(scheduler.leadership.became_leader.wait(), timeout=3)
        assert len(due.calls) == 1 and scheduler.scheduled() == []

        moment = now() + timedelta(seconds=0.3)
        due.moments += [moment, moment, now() - timedelta(seconds=5)]  # dupes, the past
        await scheduler.resync()
        assert scheduler.scheduled() == [moment]

        await eventually(lambda: due.calls_at_or_after(moment) == 1, timeout=3)
        assert len(due.calls) == 2


async def test_the_periodic_resync_works_and_replans_without_being_asked(db: Database) -> None:
    due = FakeDue()
    scheduler = scheduler_for(db, due, resync_every=0.25)
    async with running(scheduler):
        await asyncio.wait_for(scheduler.leadership.became_leader.wait(), timeout=3)
        later = now() + timedelta(seconds=30)
        due.moments.append(later)  # as if another process or the CLI had created it
        await eventually(lambda: scheduler.scheduled() == [later], timeout=3)
        assert len(due.calls) >= 2  # the periodic round also calls work

        due.moments.remove(later)  # cancelled elsewhere
        await eventually(lambda: scheduler.scheduled() == [], timeout=3)


# (d) two processes


async def test_two_schedulers_on_one_database_work_once_per_moment(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip(SINGLE_PROCESS + ", so two schedulers on it would both work")
    key = lock_key()
    first_moment = now() + timedelta(seconds=0.5)
    due = FakeDue([first_moment])  # shared: both processes see the same database
    first, second = scheduler_for(db, due, key=key), scheduler_for(db, due, key=key)
    async with running(first, second) as (run_first, run_second):
        await eventually(lambda: first.running or second.running)
        await eventually(lambda: due.calls_at_or_after(first_moment) >= 1, timeout=3)
        await asyncio.sleep(0.3)
        assert due.calls_at_or_after(first_moment) == 1
        assert len(due.calls) == 2  # one catch-up, by the leader alone
        assert [first.running, second.running].count(True) == 1

        # The leader stops; the other catches up, then serves the next moment, once.
        leader, follower = (first, second) if first.running else (second, first)
        second_moment = now() + timedelta(seconds=0.8)
        due.moments.append(second_moment)
        await (run_first if leader is first else run_second).halt()
        await asyncio.wait_for(follower.leadership.became_leader.wait(), timeout=3)
        assert len(due.calls) == 3 and follower.scheduled() == [second_moment]
        await eventually(lambda: due.calls_at_or_after(second_moment) >= 1, timeout=3)
        await asyncio.sleep(0.2)
        assert due.calls_at_or_after(second_moment) == 1


async def test_stepping_down_lets_work_in_progress_finish(db: Database) -> None:
    begun: list[datetime] = []
    finished: list[datetime] = []

    async def slow_work(at: datetime) -> int:
        begun.append(at)
        await asyncio.sleep(0.3)
        finished.append(at)
        return 0

    async def nothing_upcoming(at: datetime) -> list[datetime]:
        return []

    scheduler = Scheduler(
        work=slow_work,
        upcoming=nothing_upcoming,
        clock=now,
        resync_every=0.1,
        leadership=Leadership(db, key=lock_key(), retry=RETRY),
    )
    async with running(scheduler) as (run,):
        await asyncio.wait_for(scheduler.leadership.became_leader.wait(), timeout=3)
        await eventually(lambda: len(begun) == 2)  # the periodic round is inside work
        assert len(finished) == 1
        await run.halt()
    assert len(finished) == 2  # it finished rather than being cancelled half-way
    assert len(begun) == 2  # and no round started after stepping down


async def test_a_leader_that_cannot_start_lets_go_and_tries_again(db: Database) -> None:
    key = lock_key()
    leadership = Leadership(db, key=key, retry=RETRY)
    gains: list[str] = []
    losses: list[str] = []

    async def on_gain() -> None:
        gains.append("gain")
        if len(gains) == 1:
            raise RuntimeError("could not start")

    async def on_loss() -> None:
        losses.append("loss")

    leadership.on_gain, leadership.on_loss = on_gain, on_loss
    async with running(leadership):
        await asyncio.wait_for(leadership.became_leader.wait(), timeout=3)
        assert gains == ["gain", "gain"] and losses == ["loss"]  # the failed start undone
        assert leadership.is_leader
        if not db.is_sqlite:
            assert await lock_holder_pid(db, key) is not None
    assert losses == ["loss", "loss"]
    if not db.is_sqlite:
        assert await lock_holder_pid(db, key) is None  # released on stop


# (e) errors


async def test_an_error_in_work_is_logged_and_later_work_still_runs(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    moment = now() + timedelta(seconds=0.3)
    due = FakeDue([moment], fail_first=1)  # the catch-up fails
    scheduler = scheduler_for(db, due)
    with caplog.at_level(logging.ERROR, logger="bot.schedule.scheduler"):
        async with running(scheduler) as (run,):
            await asyncio.wait_for(scheduler.leadership.became_leader.wait(), timeout=3)
            assert scheduler.running and scheduler.scheduled() == [moment]
            await eventually(lambda: due.calls_at_or_after(moment) == 1, timeout=3)
            assert await scheduler.run_due() == 1
            assert not run.task.done()
    failures = [r for r in caplog.records if r.name == "bot.schedule.scheduler" and r.exc_info]
    assert len(failures) == 1
    assert "the database hiccupped" in str(failures[0].exc_info[1])
    assert len(due.calls) == 3


async def test_an_error_listing_upcoming_keeps_the_current_plan(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    moment = now() + timedelta(seconds=30)
    due = FakeDue([moment])
    scheduler = scheduler_for(db, due)
    async with running(scheduler):
        await asyncio.wait_for(scheduler.leadership.became_leader.wait(), timeout=3)

        async def broken(at: datetime) -> list[datetime]:
            raise RuntimeError("no answer")

        scheduler.upcoming = broken
        with caplog.at_level(logging.ERROR, logger="bot.schedule.scheduler"):
            await scheduler.resync()
        assert scheduler.scheduled() == [moment]
        assert any(r.exc_info for r in caplog.records if r.name == "bot.schedule.scheduler")
