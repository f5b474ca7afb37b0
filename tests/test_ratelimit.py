"""Pacing that holds in every second, whenever the second starts.

The platforms count messages per second, not on average: a token bucket that starts
full lets its burst and a second's refill through within one second (58 messages
against a limit of 30 were counted at the stand-in). These tests grant permits on a
fake clock and count every sliding one-second window.
"""

from __future__ import annotations

import asyncio

from bot.delivery.ratelimit import RateLimiter
from tests.test_dispatch import FakeTime


def busiest_second(moments: list[float]) -> int:
    """The most permits in any window (t - 1 s, t], counted at every permit."""
    ordered = sorted(moments)
    start = 0
    most = 0
    for end, moment in enumerate(ordered):
        while ordered[start] + 1.0 <= moment:
            start += 1
        most = max(most, end - start + 1)
    return most


async def grant_all(pacer: RateLimiter, fake: FakeTime, addresses: list[tuple[str, bool]]):
    granted: list[float] = []

    async def send(address: str, urgent: bool) -> None:
        await pacer.acquire(address, urgent=urgent)
        granted.append(fake.now)

    await asyncio.gather(*(send(address, urgent) for address, urgent in addresses))
    return granted


async def test_a_broadcast_never_exceeds_the_rate_in_any_second() -> None:
    fake = FakeTime()
    pacer = RateLimiter(30, 1, clock=fake, sleep=fake.sleep)
    # 300 residents, a reply now and then among them, all waiting at once.
    wanted = [(f"resident-{n}", n % 25 == 0) for n in range(300)]
    granted = await grant_all(pacer, fake, wanted)
    assert len(granted) == 300
    assert busiest_second(granted) <= 30
    assert max(granted) < 11.0, "and the broadcast still goes at about the full rate"


async def test_a_full_burst_is_still_counted_against_the_second_it_went_in() -> None:
    fake = FakeTime()
    pacer = RateLimiter(30, clock=fake, sleep=fake.sleep, burst=30)  # starts full
    granted = await grant_all(pacer, fake, [(f"r{n}", False) for n in range(120)])
    assert granted.count(0.0) == 30, "a quiet bot answers the first thirty at once"
    assert busiest_second(granted) == 30, "but nothing more until that second is over"


async def test_a_fractional_rate_rounds_down() -> None:
    fake = FakeTime()
    pacer = RateLimiter(29.1, clock=fake, sleep=fake.sleep, burst=29.1)
    granted = await grant_all(pacer, fake, [(f"r{n}", n % 2 == 0) for n in range(150)])
    assert busiest_second(granted) == 29


async def test_after_a_pause_the_window_still_holds() -> None:
    fake = FakeTime()
    pacer = RateLimiter(10, clock=fake, sleep=fake.sleep, burst=10)
    first = await grant_all(pacer, fake, [(f"a{n}", False) for n in range(10)])
    pacer.pause(0.5)
    later = await grant_all(pacer, fake, [(f"b{n}", False) for n in range(30)])
    assert busiest_second(first + later) <= 10
