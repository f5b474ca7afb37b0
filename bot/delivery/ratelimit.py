"""Pacing what one channel sends, so the platform never has to tell us to slow down.

Telegram and Viber each allow about 30 messages a second in all and about one a
second to one chat; beyond that they answer 429 and may stop the bot for a while.
A `RateLimiter` per channel keeps us under both limits:

* a global token bucket (`per_second`, with a small burst, a tenth of a second's
  worth, so a moment's lateness of the event loop is made up rather than lost);
* a sliding one-second window: at most `per_second` (rounded down) permits in any
  second, whenever it starts. A token bucket alone allows its burst *plus* a
  second's refill within one second (58 messages against a limit of 30 when it
  started full), and the platforms count in every second, not on average;
* a minimum interval between two messages to the same address
  (`1 / per_address_per_second`), so one chat never sees a flood; an urgent
  message keeps that interval from the previous urgent one only, so an answer is
  not held up because the broadcast reached the same chat a moment before (at
  most one message of each kind per interval: a pair, never a flood);
* precedence: an urgent acquirer (a reply or a personal notice) takes the next
  token before any waiting bulk acquirer (a broadcast), so a running broadcast
  delays a reply by one token's interval at most, never by its queue;
* `pause(seconds)`: the platform said "retry after"; nobody sends until then.

The clock and the sleep are injectable so the scheduling can be unit-tested with
a fake clock, without waiting in real time.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]

_PRUNE_MIN = 1024
_WHOLE = 1.0 - 1e-9  # a token, allowing for float rounding in the refill


class RateLimitTimeout(TimeoutError):
    """The permit could not be granted within the time the caller allowed.

    The dispatcher sets that time from a row's lease: a row still waiting when its
    lease is half gone is put back rather than sent after another process could
    have claimed it.
    """


@dataclass(order=True)
class _Waiter:
    rank: tuple[int, int]
    address: str = field(compare=False)
    deadline: float | None = field(compare=False)
    granted: asyncio.Future[None] = field(compare=False)


class RateLimiter:
    """A global token bucket and sliding window plus a per-address interval, urgent first.

    One instance per channel, shared by everything in the process that sends on
    it. All bookkeeping happens on the event loop's thread, so no locks are
    needed; waiting acquirers are served by one short-lived task (the "pump")
    that exists only while someone waits.
    """

    def __init__(
        self,
        per_second: float,
        per_address_per_second: float | None = None,
        *,
        burst: float | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not per_second > 0:
            raise ValueError("per_second must be positive")
        if per_address_per_second is not None and not per_address_per_second > 0:
            raise ValueError("per_address_per_second must be positive (or None for no limit)")
        self.per_second = float(per_second)
        self.capacity = float(burst) if burst is not None else max(1.0, self.per_second / 10)
        if self.capacity < 1:
            raise ValueError("burst must allow at least one message")
        # The permits of the last second: a new one waits until the oldest is a second old.
        self.per_window = max(1, math.floor(self.per_second + 1e-9))
        self._recent: collections.deque[float] = collections.deque(maxlen=self.per_window)
        self.spacing = 1.0 / per_address_per_second if per_address_per_second else 0.0
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._updated = clock()
        self._paused_until = -math.inf
        self._next_for: dict[str, float] = {}  # after any message: what bulk waits for
        self._next_urgent_for: dict[str, float] = {}  # after an urgent one: what urgent waits for
        self._prune_at = _PRUNE_MIN
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        self._kick = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    # --- what callers use -----------------------------------------------------------

    async def acquire(
        self, address: str, *, urgent: bool = False, max_wait: float | None = None
    ) -> None:
        """Wait until one message to `address` may be sent now, and count it as sent.

        `urgent` puts the caller ahead of every bulk acquirer waiting for a token.
        Raises `RateLimitTimeout` if not granted within `max_wait` seconds (then
        nothing is counted). Cancelling the caller while it waits is safe.
        """
        now = self._clock()
        self._refill(now)
        if not self._waiters and self._ready(address, now, urgent) and self._may_take(now):
            self._take(address, now, urgent)
            return
        waiter = _Waiter(
            rank=(0 if urgent else 1, next(self._seq)),
            address=address,
            deadline=None if max_wait is None else now + max(0.0, max_wait),
            granted=asyncio.get_running_loop().create_future(),
        )
        bisect.insort(self._waiters, waiter)
        self._kick.set()
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run_pump(), name="rate limiter")
        try:
            await waiter.granted
        except asyncio.CancelledError:
            self._forget(waiter)
            raise

    def pause(self, seconds: float) -> None:
        """Send nothing for `seconds` (the platform's retry_after), then restart gently.

        The bucket is emptied so that sending resumes at the steady rate, not with
        a burst that would earn the next 429 straight away.
        """
        if seconds <= 0:
            return
        now = self._clock()
        self._refill(now)
        self._paused_until = max(self._paused_until, now + seconds)
        self._tokens = 0.0
        self._updated = self._paused_until
        self._kick.set()

    def paused_for(self) -> float:
        """Seconds left of the current pause (0 when not paused)."""
        return max(0.0, self._paused_until - self._clock())

    @property
    def waiting(self) -> int:
        """How many acquirers are waiting (for tests and diagnostics)."""
        return len(self._waiters)

    # --- bookkeeping ----------------------------------------------------------------

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(
                self.capacity, self._tokens + (now - self._updated) * self.per_second
            )
            self._updated = now

    def _next_at(self, address: str, urgent: bool) -> float:
        return (self._next_urgent_for if urgent else self._next_for).get(address, -math.inf)

    def _ready(self, address: str, now: float, urgent: bool) -> bool:
        return now >= self._paused_until and self._next_at(address, urgent) <= now

    def _may_take(self, now: float) -> bool:
        return self._tokens >= _WHOLE and self._window_opens() <= now

    def _window_opens(self) -> float:
        """When the sliding window has room for one more permit."""
        if len(self._recent) < self.per_window:
            return -math.inf
        return self._recent[0] + 1.0

    def _take(self, address: str, now: float, urgent: bool) -> None:
        self._tokens -= 1.0
        self._recent.append(now)
        if self.spacing:
            self._next_for[address] = now + self.spacing
            if urgent:
                self._next_urgent_for[address] = now + self.spacing
            if len(self._next_for) >= self._prune_at:
                self._prune(now)

    def _prune(self, now: float) -> None:
        """Forget addresses whose interval has passed; the maps never grow without bound."""
        self._next_for = {a: t for a, t in self._next_for.items() if t > now}
        self._next_urgent_for = {a: t for a, t in self._next_urgent_for.items() if t > now}
        self._prune_at = max(_PRUNE_MIN, 2 * len(self._next_for))

    def _forget(self, waiter: _Waiter) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
            self._kick.set()

    def _grant_due(self) -> float:
        """Grant every permit possible now, in rank order; return seconds until the next chance.

        A waiter whose address is still inside its interval is skipped, so bulk
        messages to other chats are not held up by it; but once the best-ranked
        eligible waiter finds no token, nobody ranked below it may take one.
        """
        now = self._clock()
        self._refill(now)
        next_chance = math.inf
        still: list[_Waiter] = []
        blocked = False
        for waiter in self._waiters:
            if waiter.granted.done():
                continue
            if waiter.deadline is not None and (
                now >= waiter.deadline or waiter.deadline < self._paused_until
            ):
                waiter.granted.set_exception(
                    RateLimitTimeout(f"no permit for {waiter.address} in time")
                )
                continue
            urgent = waiter.rank[0] == 0
            if not blocked and now < self._paused_until:
                next_chance = min(next_chance, self._paused_until)
            elif not blocked and (at := self._next_at(waiter.address, urgent)) > now:
                next_chance = min(next_chance, at)
            elif not blocked and self._may_take(now):
                self._take(waiter.address, now, urgent)
                waiter.granted.set_result(None)
                continue
            elif not blocked:
                blocked = True
                refilled = now + max(0.0, 1.0 - self._tokens) / self.per_second
                next_chance = min(next_chance, max(refilled, self._window_opens()))
            still.append(waiter)
            if waiter.deadline is not None:
                next_chance = min(next_chance, waiter.deadline)
        self._waiters = still
        return next_chance - now

    async def _run_pump(self) -> None:
        try:
            while self._waiters:
                self._kick.clear()
                delay = self._grant_due()
                if not self._waiters:
                    break
                await self._nap(delay)
        except Exception as error:  # a bug here must not leave senders waiting forever
            log.exception("rate limiter failed")
            for waiter in self._waiters:
                if not waiter.granted.done():
                    waiter.granted.set_exception(error)
            self._waiters.clear()

    async def _nap(self, delay: float) -> None:
        """Sleep until the next chance, or until a new acquirer or a pause changes the plan."""
        if self._kick.is_set():
            return
        kicked = asyncio.ensure_future(self._kick.wait())
        waits: set[asyncio.Future[object]] = {kicked}
        if math.isfinite(delay):
            waits.add(asyncio.ensure_future(self._sleep(max(0.0, delay))))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
