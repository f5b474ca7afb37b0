"""Sending at the platforms' pace without making anyone wait for an answer.

Staff send a broadcast to hundreds of residents; while it goes out, a resident who
writes is answered within a second, the bot keeps to Telegram's limits (in all and
per chat), nobody is woken at night by an announcement, and when Telegram says
"too many requests" every message still arrives, once.
"""

from __future__ import annotations

import asyncio
import time as monotonic_time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.app import Khma
from bot.channels.base import Held, Transient
from bot.config import Settings
from bot.delivery.dispatch import (
    BULK_PRIORITY,
    NOTICE_PRIORITY,
    REPLY_PRIORITY,
    ChannelRate,
    Dispatcher,
    DispatchPolicy,
    in_quiet_hours,
)
from bot.delivery.ratelimit import RateLimiter, RateLimitTimeout
from bot.vocabulary.messages import Reply
from storage import queries
from storage.db import Database
from storage.models import OutboxMessage, utcnow
from tests.fakes.telegram_api import SentMessage, TelegramStandIn
from tests.harness import TOKEN, settings_for

TBILISI = ZoneInfo("Asia/Tbilisi")
NIGHT = (time(22, 0), time(9, 0))
ANNOUNCEMENT = "Community meeting on Saturday at 11:00 in the library."
CAMPAIGN_UPDATE = "The petition for the Marneuli bus route has 1,000 signatures."


def policy(rate: float, chat_rate: float, **extra: object) -> DispatchPolicy:
    """Telegram paced at `rate` messages a second in all and `chat_rate` per chat."""
    return DispatchPolicy(
        idle_wait=0.05,
        first_backoff=0.05,
        rates={"telegram": ChannelRate(rate, chat_rate)},
        **extra,
    )


@asynccontextmanager
async def paced_khma(
    db: Database,
    api: TelegramStandIn,
    dispatch: DispatchPolicy,
    clock: Callable[[], datetime] = utcnow,
) -> AsyncIterator[Khma]:
    """Like `running_khma`, but with a dispatch policy of the test's own."""
    khma = Khma(settings_for(api), db=db, clock=clock, policy=dispatch)
    await khma.start()
    try:
        yield khma
    finally:
        await khma.stop()


async def queue_bulk(
    db: Database, chats: list[int], text: str = ANNOUNCEMENT, *, kind: str = "broadcast"
) -> None:
    async with db.transaction() as session:
        session.add_all(
            OutboxMessage(
                channel="telegram",
                address=str(chat),
                kind=kind,
                priority=BULK_PRIORITY,
                payload=Reply(text).to_json(),
            )
            for chat in chats
        )


async def queue_notice(db: Database, chat: int, text: str) -> None:
    async with db.transaction() as session:
        session.add(
            OutboxMessage(
                channel="telegram",
                address=str(chat),
                kind="status",
                priority=NOTICE_PRIORITY,
                payload=Reply(text).to_json(),
            )
        )


def received(api: TelegramStandIn, text: str) -> list[SentMessage]:
    return [message for message in api.sent if message.text == text]


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


async def outbox_statuses(db: Database, kind: str) -> dict[str, int]:
    async with db.transaction() as session:
        statuses = (
            await session.execute(select(OutboxMessage.status).where(OutboxMessage.kind == kind))
        ).scalars()
        counts: dict[str, int] = {}
        for status in statuses:
            counts[status] = counts.get(status, 0) + 1
        return counts


class ShiftableClock:
    """Wall-clock time that runs normally from a moment the test chooses, and can be moved."""

    def __init__(self, at: datetime) -> None:
        self.set(at)

    def set(self, at: datetime) -> None:
        self._base = at.astimezone(UTC)
        self._started = monotonic_time.monotonic()

    def __call__(self) -> datetime:
        return self._base + timedelta(seconds=monotonic_time.monotonic() - self._started)


# --- what residents and staff experience ---------------------------------------------------


async def test_a_resident_is_answered_within_a_second_while_a_broadcast_goes_out(db) -> None:
    recipients = list(range(20_000, 20_300))
    async with (
        TelegramStandIn(token=TOKEN) as api,
        paced_khma(db, api, policy(rate=50, chat_rate=1)) as khma,
    ):
        await queue_bulk(db, recipients)
        khma.dispatcher.wake()
        await until(lambda: len(received(api, ANNOUNCEMENT)) >= 60)  # the burst is spent
        waits = []
        for chat in (601, 602, 603):
            asked_at = monotonic_time.monotonic()
            api.command_update(chat, "/start")
            [answer] = await api.wait_for_messages(chat, 1, timeout=5)
            waits.append(answer.at - asked_at)
            await asyncio.sleep(0.2)
        still_going = len(received(api, ANNOUNCEMENT)) < len(recipients)
    assert still_going, "the broadcast was still running while residents wrote"
    assert max(waits) < 1.0, f"residents waited {waits} s for an answer"


async def test_a_broadcast_keeps_to_telegrams_pace_in_all_and_per_chat(db) -> None:
    rate, chat_rate = 50.0, 2.0
    everyone = list(range(30_000, 30_150))
    followers = everyone[:3]  # they also follow a campaign: two bulk messages each
    async with (
        TelegramStandIn(token=TOKEN) as api,
        paced_khma(db, api, policy(rate=rate, chat_rate=chat_rate)) as khma,
    ):
        await queue_bulk(db, everyone)
        await queue_bulk(db, followers, CAMPAIGN_UPDATE, kind="campaign")
        khma.dispatcher.wake()
        total = len(everyone) + len(followers)
        await until(lambda: len(api.sent) >= total)
    times = sorted(message.at for message in api.sent)
    burst, slack = rate, 3  # one second's worth at once; a few in flight on the wire
    for first in range(len(times)):
        for last in range(first, len(times)):
            allowed = burst + rate * (times[last] - times[first]) + slack
            assert last - first + 1 <= allowed, "more than the global rate allows"
    for chat in followers:
        announcement, update = api.sent_to(chat)
        assert (announcement.text, update.text) == (ANNOUNCEMENT, CAMPAIGN_UPDATE)
        assert update.at - announcement.at >= 1 / chat_rate - 0.05, "one chat was flooded"
    assert len(api.sent) == total
    assert await outbox_statuses(db, "broadcast") == {"sent": len(everyone)}


async def test_announcements_wait_for_the_morning_but_answers_do_not(db) -> None:
    day = datetime.now(TBILISI).date() + timedelta(days=2)  # ahead of every row's due time
    clock = ShiftableClock(datetime.combine(day, time(23, 30), TBILISI))
    recipients = list(range(40_000, 40_020))
    night_owl = recipients[0]  # has an announcement waiting, and writes at 23:30
    dispatch = policy(rate=100, chat_rate=20, quiet_hours=NIGHT, tz_name="Asia/Tbilisi")
    async with TelegramStandIn(token=TOKEN) as api, paced_khma(db, api, dispatch, clock) as khma:
        await queue_bulk(db, recipients)
        await queue_notice(db, 40_500, "Your report KK-2025-000042 is now in review.")
        khma.dispatcher.wake()
        api.command_update(night_owl, "/start")
        [welcome] = await api.wait_for_messages(night_owl, 1, timeout=5)
        assert welcome.text != ANNOUNCEMENT
        await api.wait_for_messages(40_500, 1, timeout=5)  # a personal notice is not held
        await asyncio.sleep(0.3)  # several rounds of the bulk lane
        assert received(api, ANNOUNCEMENT) == []
        assert await outbox_statuses(db, "broadcast") == {"pending": len(recipients)}

        clock.set(datetime.combine(day + timedelta(days=1), time(9, 5), TBILISI))
        await until(lambda: len(received(api, ANNOUNCEMENT)) == len(recipients))
    assert await outbox_statuses(db, "broadcast") == {"sent": len(recipients)}
    assert [m.text for m in api.sent_to(night_owl)][-1] == ANNOUNCEMENT


async def test_only_the_leading_process_sends_bulk_but_every_process_answers(db) -> None:
    """Pacing is counted per process: a second process must not double a broadcast's rate."""
    leading = False
    recipients = list(range(41_000, 41_010))
    async with TelegramStandIn(token=TOKEN) as api, paced_khma(db, api, policy(100, 20)) as khma:
        khma.dispatcher.sends_bulk = lambda: leading
        await queue_bulk(db, recipients)
        await queue_notice(db, 41_500, "Your report KK-2025-000042 is now in review.")
        khma.dispatcher.wake()
        await api.wait_for_messages(41_500, 1, timeout=5)
        await asyncio.sleep(0.3)  # several rounds of the bulk lane
        assert received(api, ANNOUNCEMENT) == [], "a follower leaves bulk to the leader"

        leading = True  # the leader died and this process took over
        await until(lambda: len(received(api, ANNOUNCEMENT)) == len(recipients))
    assert await outbox_statuses(db, "broadcast") == {"sent": len(recipients)}


async def test_when_telegram_says_too_many_requests_every_message_still_arrives_once(db) -> None:
    recipients = list(range(50_000, 50_060))
    async with (
        TelegramStandIn(token=TOKEN) as api,
        paced_khma(db, api, policy(rate=50, chat_rate=1)) as khma,
    ):
        api.rate_limit(10, retry_after=1)  # Telegram allows far less than we were told
        await queue_bulk(db, recipients)
        khma.dispatcher.wake()
        await asyncio.sleep(0.3)
        api.command_update(777, "/start")
        await until(lambda: len(api.sent) >= len(recipients) + 1, timeout=15)
        await asyncio.sleep(0.2)  # nothing more may come
    assert api.too_many_requests > 0
    assert sorted(m.chat_id for m in api.sent) == [777, *recipients]
    async with db.transaction() as session:
        rows = (await session.execute(select(OutboxMessage))).scalars().all()
    assert {(row.status, row.attempts) for row in rows} == {("sent", 1)}, (
        "a 429 is not a failed attempt"
    )


# --- policy --------------------------------------------------------------------------------


def test_quiet_hours_wrap_midnight_in_tbilisi_time() -> None:
    def at(hour: int, minute: int) -> datetime:
        return datetime(2025, 3, 14, hour, minute, tzinfo=TBILISI)

    for quiet in (at(22, 0), at(23, 30), at(0, 0), at(8, 59)):
        assert in_quiet_hours(quiet, NIGHT, "Asia/Tbilisi")
    for awake in (at(9, 0), at(12, 0), at(21, 59)):
        assert not in_quiet_hours(awake, NIGHT, "Asia/Tbilisi")
    assert in_quiet_hours(datetime(2025, 3, 14, 19, 30, tzinfo=UTC), NIGHT, "Asia/Tbilisi")
    assert in_quiet_hours(at(13, 0), (time(12, 0), time(14, 0)), "Asia/Tbilisi")
    assert not in_quiet_hours(at(23, 30), None, "Asia/Tbilisi")


def test_the_policy_follows_the_settings() -> None:
    settings = Settings.from_env(
        {"TELEGRAM_RATE": "25", "TELEGRAM_CHAT_RATE": "0.5", "VIBER_RATE": "10"}
    )
    built = DispatchPolicy.from_settings(settings, idle_wait=0.1)
    assert built.rates["telegram"] == ChannelRate(25.0, 0.5)
    assert built.rates["viber"] == ChannelRate(10.0, 1.0)
    assert built.quiet_hours == NIGHT and built.tz_name == "Asia/Tbilisi"
    assert built.lease == timedelta(seconds=60) and built.idle_wait == 0.1
    assert (
        DispatchPolicy.from_settings(Settings.from_env({"QUIET_HOURS": "off"})).quiet_hours is None
    )
    assert REPLY_PRIORITY < NOTICE_PRIORITY < BULK_PRIORITY


# --- the rate limiter, on a fake clock ---------------------------------------------------------


class FakeTime:
    """A monotonic clock that only moves when the limiter sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)
        self.now += seconds


def limiter(fake: FakeTime, per_second: float, per_chat: float | None = None) -> RateLimiter:
    return RateLimiter(per_second, per_chat, burst=1, clock=fake, sleep=fake.sleep)


async def test_an_answer_takes_the_next_token_before_a_waiting_broadcast() -> None:
    fake = FakeTime()
    pacer = limiter(fake, per_second=10)
    await pacer.acquire("spent")  # the bucket is empty now
    order: list[tuple[str, float]] = []

    async def send(address: str, urgent: bool) -> None:
        await pacer.acquire(address, urgent=urgent)
        order.append((address, round(fake.now, 6)))

    await asyncio.gather(
        send("bulk-1", False), send("bulk-2", False), send("reply", True), send("bulk-3", False)
    )
    assert order == [("reply", 0.1), ("bulk-1", 0.2), ("bulk-2", 0.3), ("bulk-3", 0.4)]


async def test_one_chat_waits_its_interval_without_holding_up_other_chats() -> None:
    fake = FakeTime()
    pacer = RateLimiter(100, 1, clock=fake, sleep=fake.sleep)
    await pacer.acquire("nino", urgent=True)
    granted: dict[str, float] = {}

    async def send(address: str, urgent: bool) -> None:
        await pacer.acquire(address, urgent=urgent)
        granted[address] = fake.now

    await asyncio.gather(send("nino", True), send("rauf", False), send("anna", False))
    assert granted["nino"] == pytest.approx(1.0), "one message a second to one chat"
    assert granted["rauf"] < 0.1 and granted["anna"] < 0.1, "others were not held up"


async def test_an_answer_is_not_held_because_the_broadcast_just_reached_the_same_chat() -> None:
    fake = FakeTime()
    pacer = RateLimiter(100, 1, clock=fake, sleep=fake.sleep)
    await pacer.acquire("nino")  # the broadcast reaches Nino, who is writing to us
    await pacer.acquire("nino", urgent=True)
    assert fake.now == 0.0, "her answer goes at once"
    await pacer.acquire("nino", urgent=True)
    assert fake.now == pytest.approx(1.0), "answers keep one a second among themselves"
    await pacer.acquire("nino")
    assert fake.now == pytest.approx(2.0), "bulk keeps its interval from any message"


async def test_a_pause_stops_everyone_and_sending_resumes_gently() -> None:
    fake = FakeTime()
    pacer = RateLimiter(10, clock=fake, sleep=fake.sleep)  # a burst of 10 available
    pacer.pause(2.0)
    assert pacer.paused_for() == pytest.approx(2.0)
    with pytest.raises(RateLimitTimeout):
        await pacer.acquire("in a hurry", urgent=True, max_wait=1.0)
    await pacer.acquire("patient")
    first = fake.now
    await pacer.acquire("next")
    assert first == pytest.approx(2.1) and fake.now == pytest.approx(2.2), "no burst after 429"


async def test_a_cancelled_wait_takes_nothing() -> None:
    fake = FakeTime()
    pacer = limiter(fake, per_second=1)
    await pacer.acquire("first")
    waiting = asyncio.create_task(pacer.acquire("gone", urgent=True))
    await asyncio.sleep(0)
    assert pacer.waiting == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert pacer.waiting == 0
    await pacer.acquire("next")
    assert fake.now == pytest.approx(1.0)


class StallingChannel:
    """A platform that holds each send until the test lets it fail, like a slow 502."""

    name = "telegram"

    def __init__(self) -> None:
        self.attempts = 0
        self.in_flight = asyncio.Event()
        self.answer = asyncio.Event()

    async def send(self, address: str, reply: Reply, **parts: object) -> str | None:
        self.attempts += 1
        self.in_flight.set()
        await self.answer.wait()
        raise Transient("502 Bad Gateway")


class HoldingChannel:
    """Viber, which answers a message in flight with status 12 (held until the resident
    writes again) only after the test lets it."""

    name = "viber"

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.in_flight = asyncio.Event()
        self.answer = asyncio.Event()

    async def send(self, address: str, reply: Reply, **parts: object) -> str | None:
        if not self.in_flight.is_set():
            self.in_flight.set()
            await self.answer.wait()
            raise Held("viber status 12: too many messages without a reply")
        self.sent.append(reply.text)
        return "token"


@asynccontextmanager
async def cancelled_in_flight(
    db: Database, channel: StallingChannel | HoldingChannel, address: str
) -> AsyncIterator[Dispatcher]:
    """One broadcast message to `address`, taken by a dispatcher; staff cancel the broadcast
    while the platform still holds the message, then the platform answers. The body runs
    with the dispatcher still going."""
    from bot.outreach import broadcasts
    from bot.outreach.audience import Audience

    async with db.transaction() as session:
        broadcast = await broadcasts.create(
            session, texts={"ka": ANNOUNCEMENT}, audience=Audience(), now=utcnow()
        )
        session.add(
            OutboxMessage(
                channel=channel.name,
                address=address,
                kind="broadcast",
                priority=BULK_PRIORITY,
                payload=Reply(ANNOUNCEMENT).to_json(),
                broadcast_id=broadcast.id,
            )
        )
    dispatcher = Dispatcher(db, {channel.name: channel}, policy=policy(100, 20))
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    try:
        await asyncio.wait_for(channel.in_flight.wait(), 5)
        async with db.transaction() as session:
            assert await broadcasts.cancel(session, broadcast.id, utcnow())
        channel.answer.set()
        yield dispatcher
    finally:
        stop.set()
        await running


async def test_a_broadcast_cancelled_while_a_message_is_in_flight_is_not_retried(db) -> None:
    channel = StallingChannel()  # the platform fails the message staff no longer want sent
    async with cancelled_in_flight(db, channel, "42000"):
        await asyncio.sleep(0.5)  # many rounds of the bulk lane, several backoffs long
    assert channel.attempts == 1, "not retried after the cancellation"
    assert await outbox_statuses(db, "broadcast") == {"cancelled": 1}


async def test_a_broadcast_cancelled_while_viber_holds_it_is_never_sent(db) -> None:
    """cancelled → held → sent was possible: the held outcome overwrote the cancel, and the
    resident's next message released the broadcast staff had stopped."""
    resident = "pqR3stUvWxYz0123456789=="
    channel = HoldingChannel()  # Viber answers status 12
    async with cancelled_in_flight(db, channel, resident) as dispatcher:
        await asyncio.sleep(0.3)  # time enough to record the answer, were it recorded
        assert await outbox_statuses(db, "broadcast") == {"cancelled": 1}
        async with db.transaction() as session:  # the resident writes again
            await queries.release_held(session, "viber", resident)
        dispatcher.wake()
        await asyncio.sleep(0.3)  # several rounds of the bulk lane
    assert channel.sent == [], "a cancelled broadcast never goes out"
    assert await outbox_statuses(db, "broadcast") == {"cancelled": 1}


class CancellingChannel:
    """Sends parts one by one; staff cancel the broadcast after its first part went."""

    name = "telegram"

    def __init__(self, cancel: Callable[[], Awaitable[None]]) -> None:
        self.cancel = cancel
        self.sent: list[int] = []

    async def send(
        self, address: str, reply: Reply, *, first_part: int = 0, part_sent=None
    ) -> str | None:
        for index in range(first_part, 3):
            self.sent.append(index)
            if index == 0:
                await self.cancel()
            if part_sent is not None and index < 2:
                await part_sent(index + 1)
        return "3"


async def test_a_broadcast_cancelled_between_the_parts_of_a_long_text_stops_there(db) -> None:
    from bot.delivery.dispatch import Dispatcher
    from bot.outreach import broadcasts
    from bot.outreach.audience import Audience

    async with db.transaction() as session:
        broadcast = await broadcasts.create(
            session, texts={"ka": ANNOUNCEMENT}, audience=Audience(), now=utcnow()
        )
        session.add(
            OutboxMessage(
                channel="telegram",
                address="42000",
                kind="broadcast",
                priority=BULK_PRIORITY,
                payload=Reply(ANNOUNCEMENT).to_json(),
                broadcast_id=broadcast.id,
            )
        )

    async def cancel() -> None:
        async with db.transaction() as session:
            await broadcasts.cancel(session, broadcast.id, utcnow())

    channel = CancellingChannel(cancel)
    dispatcher = Dispatcher(db, {"telegram": channel}, policy=policy(100, 20))
    await dispatcher.dispatch_once()
    assert channel.sent == [0], "no part after the cancel"
    assert await outbox_statuses(db, "broadcast") == {"cancelled": 1}


async def test_a_long_reply_cut_short_by_flood_control_never_repeats_a_part(db) -> None:
    """Three parts at Telegram's 4,096-character maximum; Telegram allows one a second, so
    the second and third parts each meet a 429. Each part arrives once, in order."""
    parts = ["ა" * 4096, "ბ" * 4096, "გ" * 4096]
    async with TelegramStandIn(token=TOKEN) as api, paced_khma(db, api, policy(100, 20)) as khma:
        api.rate_limit(1.0, retry_after=1)
        await queue_notice(db, 42, "".join(parts))
        khma.dispatcher.wake()
        await until(lambda: len(api.sent_to(42)) >= 3 or api.too_many_requests >= 6, 20)
        await asyncio.sleep(0.5)  # a repeated part would arrive by now
    assert api.too_many_requests >= 1, "flood control cut the reply short"
    assert [m.text for m in api.sent_to(42)] == parts
    async with db.transaction() as session:
        [row] = (await session.execute(select(OutboxMessage))).scalars()
    assert (row.status, row.parts_sent) == ("sent", 2)
