"""The dispatcher: sends outbox rows, replies first, and records what happened.

Rows are claimed (status `sending` with a lease) before they are sent, so a
second process skips them and a crashed process's rows come back when the lease
ends: a crash loses nothing and repeats at most the messages in flight.

Each claim carries a token, and every outcome (sent, retry later, put back,
held, unreachable, a part of a long reply out) is written only where the row is
still `sending` under that token. A broadcast cancelled while one of its
messages is in flight therefore stays cancelled, whatever the platform answers,
and a process whose claim was taken over can no longer record anything.

Leases are short and renewed, rather than instance heartbeats: a lane's lease
(`DispatchPolicy.live_lease` for replies, `lease` for bulk) is extended every
third of its length for the rows the process still holds, in one statement, and
a row is sent only while its lease is known to hold. After a `kill -9` nothing
renews, so the dead process's replies come back within `live_lease` (4 s) and
per-chat order stops holding later replies behind them. A second live process on
PostgreSQL never takes a row whose lease is being renewed, and a process that
cannot renew (the database is gone) stops sending the rows it can no longer be
sure of. This needs no table of instances and no start-up step, and a renewal is
one statement every couple of seconds only while rows are in hand.

Two lanes run side by side so a broadcast never stands between a resident and
their answer:

* the live lane takes rows with priority below `BULK_PRIORITY` (replies in a
  conversation, personal notices) and is never held by quiet hours;
* the bulk lane takes broadcasts and campaign updates, a few at a time, and
  claims nothing during quiet hours (local time, `tz_name`).

Within a lane one resident's messages go out in order: a row waits while an
older row of the same lane to the same address is still unsent. Across lanes
nothing waits: a reply never waits for a broadcast row (say, one waiting for
the morning).

Every send passes the channel's `RateLimiter` (global rate and one chat's rate),
with live rows served before bulk ones; when a platform still says "retry after",
the whole channel pauses for that long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time as monotonic_time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    case,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import OperationalError

from bot.channels.base import Channel, Held, Rejected, RetryLater, Unreachable
from bot.delivery.ratelimit import RateLimiter, RateLimitTimeout
from bot.vocabulary.messages import Reply
from bot.waiting import rest, unless_stopped
from storage import queries
from storage.db import Database, is_outage
from storage.failures import describe, trace
from storage.models import OutboxMessage, utcnow

if TYPE_CHECKING:
    from bot.config import Settings

__all__ = [
    "BULK_PRIORITY",
    "DEFAULT_RATES",
    "NOTICE_PRIORITY",
    "REPLY_PRIORITY",
    "ChannelRate",
    "ClaimLost",
    "Claimed",
    "DispatchPolicy",
    "Dispatcher",
    "in_quiet_hours",
]

log = logging.getLogger(__name__)

REPLY_PRIORITY = 0
"""A reply in a live conversation: the resident is looking at the chat."""
NOTICE_PRIORITY = 10
"""A personal notice: a status change, an answer, an event reminder, a follow-up question."""
BULK_PRIORITY = 20
"""Bulk: broadcasts and campaign updates. Every priority from here up goes in the bulk lane."""

_OUTBOX = OutboxMessage.__table__
_WRITE_TRIES = 3
# Pace a little under the platform's limit. Our token bucket and the platform's are not
# one clock: network jitter bunches our evenly spaced messages on arrival, and at exactly
# the limit that earns an occasional 429, whose pause holds up answers too.
PACING_HEADROOM = 0.97
# Candidates read per claimed slot: rows queued behind an earlier message to the same
# chat are passed over, so a resident with many queued replies cannot fill a claim.
_LOOK_AHEAD = 4


@dataclass(frozen=True)
class ChannelRate:
    """How fast one channel may send: in all, and to any one chat."""

    per_second: float
    per_chat_per_second: float | None = None

    def __post_init__(self) -> None:
        if not self.per_second > 0:
            raise ValueError("per_second must be positive")
        if self.per_chat_per_second is not None and not self.per_chat_per_second > 0:
            raise ValueError("per_chat_per_second must be positive (or None for no limit)")


# The platforms' documented limits; channels not named here (the terminal chat) are not paced.
DEFAULT_RATES: Mapping[str, ChannelRate] = MappingProxyType(
    {"telegram": ChannelRate(30.0, 1.0), "viber": ChannelRate(30.0, 1.0)}
)


@dataclass(frozen=True)
class DispatchPolicy:
    """How the dispatcher works; `from_settings` builds the one a deployment runs with.

    `batch`/`concurrency` are the live lane's rows in hand and sends at once;
    `bulk_batch`/`bulk_concurrency` the bulk lane's, kept small so claimed bulk rows
    never wait long in the rate limiter (their lease keeps running meanwhile).
    """

    batch: int = 50
    concurrency: int = 16
    bulk_batch: int = 20
    bulk_concurrency: int = 8
    lease: timedelta = timedelta(seconds=60)
    live_lease: timedelta = timedelta(seconds=4)
    max_attempts: int = 8
    first_backoff: float = 1.0
    max_backoff: float = 300.0
    idle_wait: float = 1.0
    rates: Mapping[str, ChannelRate] = field(default_factory=lambda: DEFAULT_RATES)
    quiet_hours: tuple[time, time] | None = None
    tz_name: str = "Asia/Tbilisi"

    def __post_init__(self) -> None:
        for name in ("batch", "concurrency", "bulk_batch", "bulk_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.lease <= timedelta(0) or self.live_lease <= timedelta(0):
            raise ValueError("leases must be positive")
        ZoneInfo(self.tz_name)  # an unknown zone fails at start, not at 22:00

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> DispatchPolicy:
        """The policy the settings describe; `overrides` replace any field (tests, tuning)."""
        values: dict[str, Any] = {
            "lease": timedelta(seconds=settings.dispatch_lease),
            "rates": {
                "telegram": ChannelRate(settings.telegram_rate, settings.telegram_chat_rate),
                "viber": ChannelRate(settings.viber_rate, settings.viber_chat_rate),
            },
            "quiet_hours": settings.quiet_hours,
            "tz_name": settings.tz_name,
        }
        values.update(overrides)
        return cls(**values)


def in_quiet_hours(now: datetime, quiet_hours: tuple[time, time] | None, tz_name: str) -> bool:
    """Whether `now` falls in [start, end) local time; a window may wrap midnight (22:00-09:00).

    A window whose start equals its end is empty: "no quiet hours", not "always quiet".
    """
    if quiet_hours is None:
        return False
    start, end = quiet_hours
    local = now.astimezone(ZoneInfo(tz_name)).time().replace(tzinfo=None)
    if start <= end:
        return start <= local < end
    return local >= start or local < end


@dataclass(frozen=True)
class Claimed:
    id: int
    channel: str
    address: str
    payload: dict
    attempts: int
    claimed_at: float = 0.0  # monotonic; how long the row has been in hand
    token: str = ""  # the claim's token: outcomes are written only under it
    parts_sent: int = 0  # parts of a long reply already out


class ClaimLost(Exception):
    """The row is no longer ours (cancelled, or another process took it over): stop."""


@dataclass(frozen=True)
class _Lane:
    """One stream of claims: which priorities, how many rows in hand and in flight."""

    name: str
    urgent: bool
    batch: int
    concurrency: int
    lease: timedelta

    @property
    def refill(self) -> int:
        """Claim again once this many slots are free: at once for replies, in chunks for bulk."""
        return 1 if self.urgent else max(1, self.batch // 2)


class _GroupCommit:
    """Records `sent` outcomes together: whoever finds no write under way writes what is
    waiting, and everything that finishes meanwhile waits for the next write. Alone, a
    message is recorded at once; in a burst, dozens share one statement and one commit.
    """

    _MAX = 200  # rows per statement, to keep the IN list and the CASE small

    def __init__(
        self, write: Callable[[list[tuple[Claimed, str | None]]], Awaitable[set[int]]]
    ) -> None:
        self._write = write
        self._waiting: list[tuple[Claimed, str | None, asyncio.Future[bool]]] = []
        self._writing = False

    async def record(self, row: Claimed, message_id: str | None) -> bool:
        """True once the row is recorded as sent; False if its claim no longer held."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((row, message_id, done))
        if not self._writing:
            self._writing = True
            try:
                while self._waiting:
                    batch, self._waiting = self._waiting[: self._MAX], self._waiting[self._MAX :]
                    await self._settle(batch)
            finally:
                self._writing = False
                for _row, _id, waiting in self._waiting:  # cancelled mid-way: nobody hangs
                    if not waiting.done():
                        waiting.set_exception(RuntimeError("recording stopped"))
                self._waiting = []
        return await done

    async def _settle(self, batch: list[tuple[Claimed, str | None, asyncio.Future[bool]]]) -> None:
        try:
            marked = await self._write([(row, message_id) for row, message_id, _ in batch])
        except Exception as error:  # each waiter logs it; the lease brings the rows back
            for _row, _id, waiting in batch:
                if not waiting.done():
                    waiting.set_exception(error)
            return
        except BaseException:
            for _row, _id, waiting in batch:
                if not waiting.done():
                    waiting.set_exception(RuntimeError("recording stopped"))
            raise
        for row, _id, waiting in batch:
            if not waiting.done():
                waiting.set_result(row.id in marked)


class Dispatcher:
    def __init__(
        self,
        db: Database,
        channels: Mapping[str, Channel],
        *,
        policy: DispatchPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
        limiters: Mapping[str, RateLimiter] | None = None,
        sends_bulk: Callable[[], bool] = lambda: True,
    ) -> None:
        self.db = db
        # Rate limits are counted per process, and the platforms count per bot: only one
        # process (the scheduler's leader) sends bulk, so several processes still keep
        # a broadcast at the platform's pace. Every process answers its residents.
        self.sends_bulk = sends_bulk
        self.channels = channels
        self.policy = policy or DispatchPolicy()
        self.clock = clock
        if limiters is None:
            limiters = {
                name: RateLimiter(rate.per_second * PACING_HEADROOM, rate.per_chat_per_second)
                for name, rate in self.policy.rates.items()
                if name in channels
            }
        self.limiters: dict[str, RateLimiter] = dict(limiters)
        live_lease = min(self.policy.live_lease, self.policy.lease)
        self.live = _Lane("live", True, self.policy.batch, self.policy.concurrency, live_lease)
        self.bulk = _Lane(
            "bulk", False, self.policy.bulk_batch, self.policy.bulk_concurrency, self.policy.lease
        )
        self._sent = _GroupCommit(self._record_sent)
        # Whether the lane's last claim left due rows behind (behind a row in flight, or
        # beyond its limit): only then does a finished send make the lane look again at once.
        self._more = {self.live.name: True, self.bulk.name: True}
        # The claims in hand, per lane: (row id, token) -> monotonic time their lease ends.
        self._leases: dict[str, dict[tuple[int, str], float]] = {
            self.live.name: {},
            self.bulk.name: {},
        }
        # Claims started per lane: an outcome written while a claim ran may have freed a
        # row that claim found waiting, so the lane looks once more.
        self._claims = {self.live.name: 0, self.bulk.name: 0}
        # Outcomes that may have freed a waiting row, per lane: one recorded while a claim
        # ran keeps that claim from clearing `_more`.
        self._freed = {self.live.name: 0, self.bulk.name: 0}
        self._wakes = {self.live.name: asyncio.Event(), self.bulk.name: asyncio.Event()}
        self._sends = {
            self.live.name: asyncio.Semaphore(self.live.concurrency),
            self.bulk.name: asyncio.Semaphore(self.bulk.concurrency),
        }
        self._quiet = False

    def _look_again(self, lane: str) -> None:
        """A row of the lane may be due now that was not at its last claim."""
        self._more[lane] = True
        self._freed[lane] += 1

    def wake(self, *, bulk: bool = True) -> None:
        """Something new is in the outbox: the lanes look now rather than after idle_wait.
        `bulk=False` when only replies and notices were queued (saves the bulk lane a look)."""
        self._wakes[self.live.name].set()
        if bulk:
            self._wakes[self.bulk.name].set()

    async def run(self, stop: asyncio.Event) -> None:
        """Run both lanes until `stop`; rows still waiting for a permit then go back."""
        async with self._renewing():
            await asyncio.gather(self._run_lane(self.live, stop), self._run_lane(self.bulk, stop))

    async def dispatch_once(self) -> int:
        """Claim and send what is due in each lane once (the terminal chat drives it this way)."""
        total = 0
        async with self._renewing():
            for lane in (self.live, self.bulk):
                if not self._lane_open(lane):
                    continue
                claimed = await self._claim(lane, lane.batch)
                await asyncio.gather(*(self._deliver(row, lane) for row in claimed))
                total += len(claimed)
        return total

    # --- leases ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _renewing(self) -> AsyncIterator[None]:
        """Renew the leases of the rows in hand while the body runs (until they are done)."""
        done = asyncio.Event()
        renewals = [asyncio.create_task(self._renew(lane, done)) for lane in (self.live, self.bulk)]
        try:
            yield
        finally:
            done.set()
            await asyncio.gather(*renewals, return_exceptions=True)

    async def _renew(self, lane: _Lane, done: asyncio.Event) -> None:
        """Every third of the lease, extend the lease of every row of the lane still in hand."""
        interval = lane.lease.total_seconds() / 3
        never = asyncio.Event()
        while not done.is_set():
            await rest(done, never, timeout=interval)
            if done.is_set():
                continue
            # A claim made since the last renewal holds past the next one: only older
            # claims are extended, so a steady trickle of quick replies renews nothing.
            fresh = monotonic_time.monotonic() + lane.lease.total_seconds() * 0.8
            due = [claim for claim, ends in self._leases[lane.name].items() if ends < fresh]
            if not due:
                continue
            try:
                await self._extend(lane, due)
            except Exception as error:
                log.warning("renewing %s claims failed (%s)", lane.name, describe(error))

    async def _extend(self, lane: _Lane, claims: list[tuple[int, str]]) -> None:
        started = monotonic_time.monotonic()
        async with self.db.transaction() as session:
            kept = {
                (id_, token)
                for id_, token in await session.execute(
                    update(_OUTBOX)
                    .where(
                        tuple_(_OUTBOX.c.id, _OUTBOX.c.claim_token).in_(claims),
                        _OUTBOX.c.status == "sending",
                    )
                    .values(claimed_until=self.clock() + lane.lease)
                    .returning(_OUTBOX.c.id, _OUTBOX.c.claim_token)
                )
            }
        held = self._leases[lane.name]
        for claim in claims:
            if claim not in held:
                continue  # finished meanwhile
            if claim in kept:
                held[claim] = started + lane.lease.total_seconds()
            else:
                del held[claim]  # cancelled or taken over: not ours to send any more

    def _holds(self, row: Claimed, lane: _Lane) -> bool:
        """Whether the row's lease surely holds for a while yet: only then is it sent.

        A third of the lease is kept in reserve for the send itself; renewals run every
        third, so while they succeed a row in hand always passes.
        """
        ends = self._leases[lane.name].get((row.id, row.token))
        reserve = lane.lease.total_seconds() / 3
        return ends is not None and monotonic_time.monotonic() < ends - reserve

    # --- the lanes ------------------------------------------------------------------

    def _lane_open(self, lane: _Lane) -> bool:
        if lane.urgent:
            return True
        if not self.sends_bulk():
            return False
        quiet = in_quiet_hours(self.clock(), self.policy.quiet_hours, self.policy.tz_name)
        if quiet != self._quiet:
            self._quiet = quiet
            if quiet:
                log.info("quiet hours began: bulk messages wait for the morning")
            else:
                log.info("quiet hours ended: bulk messages go out again")
        return not quiet

    async def _run_lane(self, lane: _Lane, stop: asyncio.Event) -> None:
        """Keep up to `lane.batch` rows in hand, claiming more as soon as slots free up.

        No batch is awaited as a whole, so one slow send never holds up the next reply.
        """
        wake = self._wakes[lane.name]
        in_hand: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            in_hand.discard(task)
            if self._more[lane.name]:
                wake.set()  # a slot is free, and the next row to that address may be due

        while not stop.is_set():
            wake.clear()
            free = lane.batch - len(in_hand)
            claimed: list[Claimed] = []
            if free >= lane.refill and self._lane_open(lane):
                try:
                    claimed = await self._claim(lane, free)
                except Exception as error:
                    # The class and where, not the text: it lists the chats' platform ids.
                    if not is_outage(error):  # an outage is logged once, by the database
                        log.error("claiming %s rows failed\n%s", lane.name, trace(error))
            for row in claimed:
                task = asyncio.create_task(self._deliver(row, lane, stop), name=f"outbox {row.id}")
                in_hand.add(task)
                task.add_done_callback(done)
            if claimed and len(claimed) == free:
                continue
            await rest(stop, wake, timeout=self.policy.idle_wait)
        if in_hand:
            await asyncio.gather(*in_hand, return_exceptions=True)

    async def _claim(self, lane: _Lane, limit: int) -> list[Claimed]:
        """Lease up to `limit` due rows of the lane, each the oldest open one for its chat,
        in one `UPDATE … RETURNING` (one statement, one commit per claim).

        The rows are chosen by nested subqueries, each bounded whatever the planner
        believes about the table: right after a broadcast adds thousands of rows,
        PostgreSQL's statistics still describe the table before them, and a plain
        correlated NOT EXISTS over the lane became a nested loop over every pending row
        (seconds per claim). So the due candidates are read first under a LIMIT (the
        innermost query), and only those few are checked for an older open row to the
        same chat (an index probe each, on ix_outbox_conversation); the first `limit` of
        the rest are locked (rows another process holds are skipped on PostgreSQL) and
        claimed under one new token.
        """
        now = self.clock()
        started = monotonic_time.monotonic()
        self._claims[lane.name] += 1
        freed = self._freed[lane.name]
        token = secrets.token_hex(8)
        due = self._due(_OUTBOX, now)
        candidates = (
            select(_OUTBOX.c.id, _OUTBOX.c.channel, _OUTBOX.c.address, _OUTBOX.c.priority)
            .where(due, self._in_lane(_OUTBOX, lane), _OUTBOX.c.channel.in_(list(self.channels)))
            .order_by(_OUTBOX.c.priority, _OUTBOX.c.id)
            .limit(limit * _LOOK_AHEAD)
            .subquery("candidates")
        )
        earlier = _OUTBOX.alias("earlier")
        # A later message to a chat waits until the earlier one is out, so one resident's
        # replies arrive in the order they were written.
        waits = (
            select(earlier.c.id)
            .where(
                earlier.c.channel == candidates.c.channel,
                earlier.c.address == candidates.c.address,
                earlier.c.status.in_(("pending", "sending")),
                earlier.c.id < candidates.c.id,
                self._in_lane(earlier, lane),
            )
            .exists()
        )
        # MATERIALIZED: each step runs once. Inlined, PostgreSQL (believing the table
        # nearly empty) ran the chooser again for every row of the table.
        heads = (
            select(candidates.c.id)
            .where(~waits)
            .order_by(candidates.c.priority, candidates.c.id)
            .limit(limit)
            .cte("heads")
            .prefix_with("MATERIALIZED", dialect="postgresql")
        )
        free = (
            select(_OUTBOX.c.id)
            .where(_OUTBOX.c.id.in_(select(heads.c.id)), due)
            .with_for_update(skip_locked=True)
            .cte("free")
            .prefix_with("MATERIALIZED", dialect="postgresql")
        )
        async with self.db.transaction() as session:
            rows = (
                await session.execute(
                    update(_OUTBOX)
                    .where(_OUTBOX.c.id.in_(select(free.c.id)), due)
                    .values(
                        status="sending",
                        claimed_until=now + lane.lease,
                        claim_token=token,
                        attempts=_OUTBOX.c.attempts + 1,
                    )
                    .returning(
                        _OUTBOX.c.id,
                        _OUTBOX.c.channel,
                        _OUTBOX.c.address,
                        _OUTBOX.c.payload,
                        _OUTBOX.c.attempts,
                        _OUTBOX.c.parts_sent,
                        _OUTBOX.c.priority,
                    )
                )
            ).all()
        # A full claim may have left due rows behind: look again as soon as a slot frees.
        # Rows waiting behind one in flight are woken by that row's outcome instead.
        self._more[lane.name] = len(rows) >= limit or self._freed[lane.name] != freed
        at = monotonic_time.monotonic()
        held = self._leases[lane.name]
        claimed = []
        for r in sorted(rows, key=lambda r: (r.priority, r.id)):
            held[(r.id, token)] = started + lane.lease.total_seconds()
            claimed.append(
                Claimed(r.id, r.channel, r.address, r.payload, r.attempts, at, token, r.parts_sent)
            )
        return claimed

    @staticmethod
    def _due(table: Any, now: datetime) -> ColumnElement[bool]:
        return or_(
            (table.c.status == "pending") & (table.c.next_attempt_at <= now),
            (table.c.status == "sending") & (table.c.claimed_until < now),
        )

    @staticmethod
    def _in_lane(table: Any, lane: _Lane) -> ColumnElement[bool]:
        priority = table.c.priority
        return priority < BULK_PRIORITY if lane.urgent else priority >= BULK_PRIORITY

    # --- one row --------------------------------------------------------------------

    async def _deliver(self, row: Claimed, lane: _Lane, stop: asyncio.Event | None = None) -> None:
        try:
            if not await self._permit(row, lane, stop):
                return
            async with self._sends[lane.name]:
                if not await self._send(row, lane):
                    # Put back, failed or stopped (rare): a row to the same chat behind it
                    # may be due now, so the lane looks again when this one is done.
                    self._look_again(lane.name)
        except Exception as error:
            # Only recording can fail here; the lease brings the row back later.
            if not is_outage(error):  # an outage is logged once, by the database
                log.error("outbox %s: could not record the outcome (%s)", row.id, describe(error))
        finally:
            self._leases[lane.name].pop((row.id, row.token), None)

    async def _permit(self, row: Claimed, lane: _Lane, stop: asyncio.Event | None) -> bool:
        """Wait for the channel's rate limiter; False (row put back) if it took too long.

        A row waits at most half its lease, so it is never sent after another process
        could have taken it over; a shutdown returns waiting rows at once.
        """
        limiter = self.limiters.get(row.channel)
        if limiter is None:
            return True
        budget = self.policy.lease.total_seconds() / 2
        left = budget - (monotonic_time.monotonic() - row.claimed_at)
        acquire = limiter.acquire(row.address, urgent=lane.urgent, max_wait=max(0.0, left))
        try:
            if stop is None:
                await acquire
                return True
            finished, _ = await unless_stopped(stop, acquire)
        except RateLimitTimeout:
            await self._release(row, after=limiter.paused_for())
            return False
        if not finished:
            await self._release(row, after=0.0)
        return finished

    async def _send(self, row: Claimed, lane: _Lane) -> bool:
        """Send the row and record the outcome; True if it went out (recorded as sent)."""
        if not self._holds(row, lane):
            log.warning("outbox %s: lease not renewed in time; left for its next claim", row.id)
            return False
        channel = self.channels[row.channel]

        async def part_sent(count: int) -> None:
            """Record each part of a long reply as it goes; stop if the claim is gone."""
            if not self._holds(row, lane) or not await self._write(
                update(_OUTBOX).where(*self._mine(row)).values(parts_sent=count)
            ):
                raise ClaimLost(row.id)

        try:
            message_id = await channel.send(
                row.address,
                Reply.from_json(row.payload),
                first_part=row.parts_sent,
                part_sent=part_sent,
            )
        except ClaimLost:
            log.info("outbox %s: cancelled or taken over while being sent; stopped", row.id)
        except RetryLater as error:
            limiter = self.limiters.get(row.channel)
            if limiter is not None:
                limiter.pause(error.after)
            await self._reschedule(row, error.after, str(error), count_attempt=False)
        except Unreachable as error:
            await self._unreachable(row, str(error))
        except Held as error:
            await self._finish(row, status="held", error=str(error))
        except Rejected as error:
            log.warning("outbox %s rejected by %s: %s", row.id, row.channel, error)
            await self._finish(row, status="failed", error=str(error))
        except Exception as error:
            if row.attempts >= self.policy.max_attempts:
                log.error("outbox %s failed %d times, giving up", row.id, row.attempts)
                await self._finish(row, status="failed", error=describe(error))
            else:
                backoff = min(
                    self.policy.first_backoff * 2 ** (row.attempts - 1), self.policy.max_backoff
                )
                await self._reschedule(row, backoff, describe(error), count_attempt=True)
        else:
            await self._finish(row, status="sent", message_id=message_id)
            return True
        return False

    # --- recording ------------------------------------------------------------------

    @staticmethod
    def _mine(row: Claimed) -> tuple[ColumnElement[bool], ...]:
        """The row, while this claim on it still holds."""
        return (
            _OUTBOX.c.id == row.id,
            _OUTBOX.c.claim_token == row.token,
            _OUTBOX.c.status == "sending",
        )

    async def _write(self, statement: Any) -> bool:
        """Run one UPDATE, retrying briefly if the database is busy: a sent message that is
        not recorded as sent would go out again once its lease ends. False if it changed
        nothing (the claim no longer held)."""
        for attempt in range(_WRITE_TRIES):
            try:
                async with self.db.transaction() as session:
                    result = await session.execute(statement)
                return bool(result.rowcount)
            except OperationalError:
                if attempt == _WRITE_TRIES - 1:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)
        return False

    async def _outcome(self, row: Claimed, what: str, **values: Any) -> None:
        """Write an outcome under the row's claim; a cancel or a takeover wins over it."""
        values.update(claimed_until=None, claim_token=None)
        if not await self._write(update(_OUTBOX).where(*self._mine(row)).values(**values)):
            log.info("outbox %s: %s not recorded: cancelled or taken over", row.id, what)

    async def _finish(
        self, row: Claimed, *, status: str, message_id: str | None = None, error: str | None = None
    ) -> None:
        if status == "sent":
            if not await self._sent.record(row, message_id):
                log.info("outbox %s: sent, not recorded: cancelled or taken over", row.id)
            return
        await self._outcome(
            row, status, status=status, sent_at=None, last_error=error[:2000] if error else None
        )

    async def _record_sent(self, sent: list[tuple[Claimed, str | None]]) -> set[int]:
        """Mark these rows sent in one statement (each under its claim); the ids it marked.

        The same statement says whether a later row to the same chat waits in the row's
        lane: only then does the lane look again at once (per-chat order held it back),
        so a lone reply costs no empty claim after it.
        """
        now = self.clock()
        claims = dict(self._claims)
        later = _OUTBOX.alias("later")
        followed = (
            select(later.c.id)
            .where(
                later.c.channel == _OUTBOX.c.channel,
                later.c.address == _OUTBOX.c.address,
                later.c.status == "pending",
                later.c.id > _OUTBOX.c.id,
                (later.c.priority < BULK_PRIORITY) == (_OUTBOX.c.priority < BULK_PRIORITY),
            )
            .correlate(_OUTBOX)
            .exists()
        )
        ids = case(
            *((_OUTBOX.c.id == row.id, literal(sent_id, String(64))) for row, sent_id in sent),
            else_=_OUTBOX.c.platform_message_id,
        )
        result = await self._rows(
            update(_OUTBOX)
            .where(
                tuple_(_OUTBOX.c.id, _OUTBOX.c.claim_token).in_([(r.id, r.token) for r, _ in sent]),
                _OUTBOX.c.status == "sending",
            )
            .values(
                status="sent",
                sent_at=now,
                platform_message_id=ids,
                claimed_until=None,
                claim_token=None,
                last_error=None,
            )
            .returning(_OUTBOX.c.id, _OUTBOX.c.priority, followed)
        )
        for _id, priority, waiting in result:
            lane = self.live if priority < BULK_PRIORITY else self.bulk
            if waiting or claims[lane.name] != self._claims[lane.name]:
                self._look_again(lane.name)
        return {id_ for id_, _priority, _waiting in result}

    async def _rows(self, statement: Any) -> list[Any]:
        """Run one statement that returns rows, retrying briefly if the database is busy."""
        for attempt in range(_WRITE_TRIES):
            try:
                async with self.db.transaction() as session:
                    return list((await session.execute(statement)).all())
            except OperationalError:
                if attempt == _WRITE_TRIES - 1:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)
        return []

    async def _reschedule(
        self, row: Claimed, after: float, error: str, count_attempt: bool
    ) -> None:
        await self._outcome(
            row,
            "retry",
            status="pending",
            attempts=row.attempts if count_attempt else row.attempts - 1,
            next_attempt_at=self.clock() + timedelta(seconds=after),
            last_error=error[:2000],
        )

    async def _release(self, row: Claimed, *, after: float) -> None:
        """Put back a row that was never sent: not an attempt, and no error to record."""
        await self._outcome(
            row,
            "release",
            status="pending",
            attempts=row.attempts - 1,
            next_attempt_at=self.clock() + timedelta(seconds=after),
        )

    async def _unreachable(self, row: Claimed, error: str) -> None:
        """Mark the resident unreachable and stop everything still queued for them."""
        now = self.clock()
        async with self.db.transaction() as session:
            await queries.mark_unreachable(session, row.channel, row.address, now)
            await session.execute(
                update(_OUTBOX)
                .where(
                    _OUTBOX.c.channel == row.channel,
                    _OUTBOX.c.address == row.address,
                    or_(and_(*self._mine(row)), _OUTBOX.c.status == "pending"),
                )
                .values(
                    status="unreachable",
                    claimed_until=None,
                    claim_token=None,
                    last_error=error[:2000],
                )
            )
