"""How fast Khma sends one broadcast to everyone, and whether residents still get answers.

What it measures
    One broadcast to N consenting residents (half on Telegram, half on Viber, languages
    spread over ka, az, hy and ru, municipalities spread), sent by a real in-process Khma
    to the Telegram and Viber stand-ins on loopback. Each stand-in refuses whatever goes
    beyond the allowed global rate with 429 and a retry-after (the Viber stand-in has no
    such option, so `RateLimitedViber` below adds one), and Khma is configured with the
    same rates (TELEGRAM_RATE, VIBER_RATE, one message a second per chat, QUIET_HOURS=off).
    While the broadcast goes out, one Telegram and one Viber resident write to the bot
    every 2 seconds, and the time until the stand-in records the bot's reply is measured.

    The residents are seeded set-based (two INSERT … SELECT statements), and the broadcast
    is queued as in production: by the scheduler's round, one chunk of residents per
    transaction, while residents write and the dispatcher already sends; the queuing time
    and the longest reply wait of those who wrote meanwhile are printed first.

    At the end it prints messages expected and delivered (unique), duplicates, losses,
    elapsed time, achieved rate ÷ allowed rate per platform and overall, 429s received,
    the most messages in any sliding one-second window per platform (never above the
    allowed rate), the longest and median live-reply delay and peak memory, next to the
    targets of the issue: at least 0.95 of the allowed rate, no duplicates, no losses,
    replies within 1 s.

Why it is not a test
    It runs for minutes, its figures depend on the machine, and a figure short of its
    target is something to look into, not a failure: it prints and never asserts. The
    tests check what Khma does; this measures how much of it Khma can do.

Caveats
    Khma, both stand-ins and this script share one process and one event loop: the memory
    and CPU figures include the stand-ins, and a loop kept busy by one part slows the
    others (the event-loop lag line tells how busy it was). tracemalloc slows Python down
    by itself; `--no-tracemalloc` measures without it. `--seconds-limit` bounds the
    sending, not the set-up before it.

Run:  .venv/bin/python -m benchmarks.broadcast [--residents 10000] [--rate 30]
          [--viber-rate 30] [--database sqlite|postgresql] [--seconds-limit 900]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import random
import resource
import socket
import statistics
import subprocess
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import Integer, String, case, cast, func, insert, literal, select, text, true

from benchmarks.databases import PG_URL, fresh_database
from bot.app import Khma
from bot.config import LANGUAGES, Settings
from bot.outreach import broadcasts
from bot.outreach.audience import Audience
from bot.waiting import rest
from flows.content import load_content
from storage.db import Database
from storage.models import Identity, OutboxMessage, Resident, utcnow
from tests.fakes.telegram_api import TelegramStandIn
from tests.fakes.viber_api import ViberCall, ViberStandIn

TELEGRAM, VIBER = "telegram", "viber"
PLATFORMS = (TELEGRAM, VIBER)
TELEGRAM_TOKEN = "424242:BENCH-token-never-logged"
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
REPO = Path(__file__).resolve().parents[1]

# Every broadcast text carries MARK, so a live reply is told apart from the broadcast.
MARK = "#khma-bench"
BROADCAST_TEXTS = {
    "ka": f"ხმა: საჯარო შეხვედრა წყალზე ხვალ, 18:00-ზე. {MARK}",
    "az": f"Khma: sabah saat 18:00-da su barədə ictimai görüş. {MARK}",
    "hy": f"Khma: վաղը ժամը 18:00-ին հանրային հանդիպում ջրի մասին։ {MARK}",
    "ru": f"Khma: общественная встреча о воде завтра в 18:00. {MARK}",
}
GREETING = "Hello"

LIVE_EVERY = 2.0  # seconds between two rounds of live residents writing
REPLY_GRACE = 10.0  # how long replies may still come once the broadcast is out
RETRY_AFTER = 1  # seconds, in the stand-ins' 429 answers
CHAT_SPACING = 1.0  # seconds between two messages to one chat (per-chat 1/s)
TARGET_RATE = 0.95
TARGET_REPLY_SECONDS = 1.0


# --- options ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    residents: int
    rate: float
    viber_rate: float
    database: str
    seconds_limit: float
    pg_url: str
    tracemalloc: bool


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.broadcast",
        description="Send one broadcast to N residents through the stand-ins; print figures.",
    )
    parser.add_argument("--residents", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=30.0, help="Telegram's allowed rate, /s")
    parser.add_argument("--viber-rate", type=float, default=30.0, help="Viber's allowed rate, /s")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--seconds-limit", type=float, default=900.0, help="stop sending after")
    parser.add_argument("--pg-url", default=PG_URL, help="PostgreSQL to make a schema in")
    parser.add_argument("--no-tracemalloc", dest="tracemalloc", action="store_false")
    args = parser.parse_args(argv)
    if args.residents < 2 or args.rate <= 0 or args.viber_rate <= 0:
        parser.error("need at least 2 residents and positive rates")
    return Options(
        residents=args.residents,
        rate=args.rate,
        viber_rate=args.viber_rate,
        database=args.database,
        seconds_limit=args.seconds_limit,
        pg_url=args.pg_url,
        tracemalloc=args.tracemalloc,
    )


# --- staying on loopback ------------------------------------------------------------------------


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Refuse any connection beyond this machine, as the test suite does."""
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            raise ConnectionRefusedError(f"the benchmark stays on loopback, not {address[0]!r}")

    def connect(sock: socket.socket, address: Any) -> None:
        check(sock, address)
        return original_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        check(sock, address)
        return original_connect_ex(sock, address)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.socket.connect = original_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = original_connect_ex  # type: ignore[method-assign]


def free_port() -> int:
    """A free loopback port, so the Viber webhook URL given to Khma is the real one."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the audience -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One resident of the audience: how they are reached, and in which language."""

    channel: str
    address: str
    language: str
    municipality: str


def _municipalities() -> list[str]:
    return [m.code for m in load_content().municipalities]


def audience(count: int) -> list[Member]:
    """Every other resident on Telegram; languages and municipalities in turn.

    A pure function of the resident's number, so `seed` can write the same audience
    with two set-based statements and this list says who is who.
    """
    places = _municipalities()
    members = []
    for number in range(count):
        channel = TELEGRAM if number % 2 == 0 else VIBER
        address = str(700_000_000 + number) if channel == TELEGRAM else f"bench{number}=="
        language = LANGUAGES[number % len(LANGUAGES)]
        members.append(Member(channel, address, language, places[number % len(places)]))
    return members


def _in_turn(number: Any, values: Sequence[str]) -> Any:
    """SQL for `values[number % len(values)]`."""
    return case(
        *((number % len(values) == index, value) for index, value in enumerate(values)),
        else_=values[0],
    )


async def seed(db: Database, members: list[Member]) -> None:
    """Insert the residents and one identity each: two INSERT … SELECT statements, the
    numbers from a recursive CTE, so 100,000 residents take seconds, not minutes."""
    now = utcnow()
    moment = Resident.__table__.c.created_at.type
    count = len(members)
    seq = select(literal(0, Integer()).label("n")).cte("seq", recursive=True)
    seq = seq.union_all(select(seq.c.n + 1).where(seq.c.n < count - 1))
    residents = select(
        literal("B-", String()) + cast(seq.c.n, String()),
        _in_turn(seq.c.n, LANGUAGES),
        _in_turn(seq.c.n, _municipalities()),
        true(),
        literal(now, moment),
        literal("benchmark", String()),
        literal(now, moment),
        literal(now, moment),
    )
    number = cast(func.substr(Resident.pseudonym, 3), Integer())
    identities = select(
        Resident.id,
        case((number % 2 == 0, TELEGRAM), else_=VIBER),
        case(
            (number % 2 == 0, cast(number + 700_000_000, String())),
            else_=literal("bench", String()) + cast(number, String()) + literal("==", String()),
        ),
        literal("Bench", String()),
        Resident.language,
        literal(now - timedelta(hours=1), moment),
        literal({}, Identity.__table__.c.flow_data.type),
        literal(now, moment),
    ).where(Resident.source == "benchmark")
    async with db.transaction() as session:
        await session.execute(
            insert(Resident).from_select(
                [
                    "pseudonym",
                    "language",
                    "municipality",
                    "consent",
                    "consent_at",
                    "source",
                    "created_at",
                    "updated_at",
                ],
                residents,
            )
        )
        await session.execute(
            insert(Identity).from_select(
                [
                    "resident_id",
                    "channel",
                    "address",
                    "display_name",
                    "platform_language",
                    "last_inbound_at",
                    "flow_data",
                    "created_at",
                ],
                identities,
            )
        )
    # What a database that grew over months would have: statistics that know the tables.
    async with db.engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("ANALYZE"))


async def create_broadcast(db: Database) -> int:
    async with db.transaction() as session:
        broadcast = await broadcasts.create(
            session,
            texts=BROADCAST_TEXTS,
            audience=Audience(),
            now=utcnow(),
            created_by="benchmark",
        )
    return broadcast.id


async def count_queued(db: Database, broadcast_id: int) -> int:
    async with db.transaction() as session:
        queued = await session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.broadcast_id == broadcast_id)
        )
    return queued or 0


# --- the platforms ------------------------------------------------------------------------------


class TokenBucket:
    """Flood control as the Telegram stand-in does it: a burst of one second's worth, full."""

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self.capacity = max(1.0, per_second)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class RateLimitedViber(ViberStandIn):
    """The Viber stand-in plus the global rate limit it lacks.

    Beyond `per_second`, send_message answers HTTP 429 with Retry-After: the shape the
    stand-in's own `fail_next(n, 429)` answers and Khma's Viber channel turns into
    `RetryLater`. The fake itself is not changed.
    """

    def __init__(self, per_second: float, *, retry_after: int = RETRY_AFTER) -> None:
        super().__init__()
        self.bucket = TokenBucket(per_second)
        self.retry_after = retry_after
        self.too_many_requests = 0

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["method"] != "send_message" or self.bucket.take():
            return await super()._handle(request)
        self.too_many_requests += 1
        self.calls.append(ViberCall(path=request.path, body={}, http_status=429))
        return web.Response(
            status=429,
            text="<html><head><title>429 Too Many Requests</title></head></html>",
            content_type="text/html",
            headers={"Retry-After": str(self.retry_after)},
        )


def khma_settings(
    db: Database, telegram: TelegramStandIn, viber: ViberStandIn, port: int, options: Options
) -> Settings:
    env = {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": db.url,
        "DATABASE_SCHEMA": db.schema or "",
        "TELEGRAM_TOKEN": telegram.token,
        "TELEGRAM_API_URL": telegram.url,
        "VIBER_TOKEN": viber.token,
        "VIBER_API_URL": viber.api_url,
        "VIBER_WEBHOOK_URL": f"http://127.0.0.1:{port}/webhooks/viber",
        "TELEGRAM_RATE": str(options.rate),
        "TELEGRAM_CHAT_RATE": str(1 / CHAT_SPACING),
        "VIBER_RATE": str(options.viber_rate),
        "VIBER_CHAT_RATE": str(1 / CHAT_SPACING),
        "QUIET_HOURS": "off",
        "LOG_LEVEL": "WARNING",
    }
    return Settings.from_env(env)


# --- watching what the stand-ins received -------------------------------------------------------


@dataclass
class LiveWrite:
    """A resident writing to the bot mid-broadcast, and how long their reply took."""

    channel: str
    address: str
    written_at: float
    before_broadcast: bool  # their broadcast message had not reached them yet
    delay: float | None = None
    met_429: bool = False  # their platform answered a 429 (to anyone) while they waited
    # How long the per-chat interval alone held the reply: the bot had sent to that chat
    # less than CHAT_SPACING before the reply could go out.
    chat_interval: float = 0.0


@dataclass
class Tally:
    """What one platform accepted since sending began."""

    allowed: float
    copies: Counter[str] = field(default_factory=Counter)  # broadcast messages per chat
    accepted_at: list[float] = field(default_factory=list)  # every message, broadcast or not
    last_broadcast_at: float = 0.0
    last_to: dict[str, float] = field(default_factory=dict)
    before_last_to: dict[str, float] = field(default_factory=dict)
    # An answer may follow the broadcast to the same chat at once (Khma spaces answers
    # among themselves and bulk from everything), so at most a pair falls within
    # CHAT_SPACING: a third message inside it is a flood.
    too_close: int = 0  # three messages to one chat within CHAT_SPACING
    closest: float = math.inf  # the shortest gap between two messages to one chat

    @property
    def unique(self) -> int:
        return len(self.copies)

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.copies.values())


class Watch:
    """Reads what the stand-ins recorded (only the new entries each time) and tallies it."""

    def __init__(self, telegram: TelegramStandIn, viber: RateLimitedViber, options: Options):
        self.telegram = telegram
        self.viber = viber
        self.tallies = {TELEGRAM: Tally(options.rate), VIBER: Tally(options.viber_rate)}
        self.writes: list[LiveWrite] = []
        self._waiting: dict[tuple[str, str], LiveWrite] = {}
        self._read = {TELEGRAM: len(telegram.sent), VIBER: len(viber.sent)}

    def scan(self) -> None:
        start, self._read[TELEGRAM] = self._read[TELEGRAM], len(self.telegram.sent)
        for message in self.telegram.sent[start:]:
            text = message.text or message.caption or ""
            self._record(TELEGRAM, str(message.chat_id), text, message.at)
        start, self._read[VIBER] = self._read[VIBER], len(self.viber.sent)
        for sent in self.viber.sent[start:]:
            self._record(VIBER, sent.receiver, sent.text or "", sent.at)

    def _record(self, channel: str, address: str, text: str, at: float) -> None:
        tally = self.tallies[channel]
        tally.accepted_at.append(at)
        previous = tally.last_to.get(address)
        if previous is not None:
            tally.closest = min(tally.closest, at - previous)
            before = tally.before_last_to.get(address)
            tally.too_close += before is not None and at - before < CHAT_SPACING
            tally.before_last_to[address] = previous
        tally.last_to[address] = at
        if MARK in text:
            tally.copies[address] += 1
            tally.last_broadcast_at = max(tally.last_broadcast_at, at)
            return
        write = self._waiting.pop((channel, address), None)
        if write is not None:
            write.delay = at - write.written_at
            if previous is not None:
                write.chat_interval = max(0.0, previous + CHAT_SPACING - write.written_at)

    def wrote(self, member: Member) -> None:
        """Note that `member` just wrote: their next message that is not the broadcast is
        the reply."""
        self.scan()
        write = LiveWrite(
            member.channel,
            member.address,
            time.monotonic(),
            before_broadcast=self.tallies[member.channel].copies[member.address] == 0,
        )
        self.writes.append(write)
        self._waiting[(member.channel, member.address)] = write

    def note_429s(self) -> None:
        """Mark the writes during whose wait their platform answered a 429 (a 429 may pause
        or reschedule more than the message it refused)."""
        refused = {
            TELEGRAM: [call.at for call in self.telegram.calls if call.status == 429],
            VIBER: [call.at for call in self.viber.calls if call.http_status == 429],
        }
        for write in self.writes:
            until = write.written_at + (write.delay if write.delay is not None else math.inf)
            write.met_429 = any(write.written_at <= at <= until for at in refused[write.channel])

    @property
    def unanswered(self) -> int:
        return len(self._waiting)

    @property
    def unique(self) -> int:
        return sum(tally.unique for tally in self.tallies.values())


# --- while the broadcast goes out ---------------------------------------------------------------


async def write_live(
    members: list[Member],
    watch: Watch,
    webhook: str,
    stop: asyncio.Event,
    refused: Counter[str],
) -> None:
    """Every LIVE_EVERY seconds, one Telegram and one Viber resident (never twice) write."""
    rng = random.Random(2)
    pools = {channel: [m for m in members if m.channel == channel] for channel in PLATFORMS}
    posts: list[asyncio.Task[None]] = []
    while not stop.is_set():
        for channel, pool in pools.items():
            if not pool:
                continue
            member = pool.pop(rng.randrange(len(pool)))
            watch.wrote(member)
            if channel == TELEGRAM:
                watch.telegram.text_update(
                    int(member.address), GREETING, first_name="Bench", language_code=member.language
                )
            else:
                posts.append(
                    asyncio.create_task(_viber_writes(watch.viber, webhook, member, refused))
                )
        await rest(stop, timeout=LIVE_EVERY)
    await asyncio.gather(*posts)


async def _viber_writes(
    viber: ViberStandIn, webhook: str, member: Member, refused: Counter[str]
) -> None:
    payload = viber.text(member.address, GREETING, name="Bench", language=member.language)
    status, _answer = await viber.post_callback(webhook, payload)
    if status != 200:
        refused[f"viber webhook answered {status}"] += 1


async def measure_loop_lag(stop: asyncio.Event, lags: list[float]) -> None:
    """How late a 100 ms sleep wakes up: the event loop's own busyness."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        await asyncio.sleep(0.1)
        lags.append(loop.time() - started - 0.1)


async def wait_for_broadcast(
    db: Database, broadcast_id: int, expected: int, watch: Watch, deadline: float
) -> bool:
    """Until every resident got it, or nothing is left queued for it, or the deadline."""
    next_look = 0.0
    while (now := time.monotonic()) < deadline:
        watch.scan()
        if watch.unique >= expected:
            return True
        if now >= next_look:
            next_look = now + 1.0
            async with db.transaction() as session:
                progress = await broadcasts.progress(session, broadcast_id)
            if progress.queued == 0:
                watch.scan()
                return True
        await asyncio.sleep(0.05)
    return False


async def wait_for_replies(watch: Watch, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while watch.unanswered and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        watch.scan()


# --- figures ------------------------------------------------------------------------------------


@dataclass
class Sending:
    """What the sending phase measured."""

    queue_seconds: float  # the broadcast queued, in chunks, by the scheduler
    queued_at: float  # time.monotonic() when the last chunk was queued
    expected: int
    started_at: float  # time.monotonic(), the clock the stand-ins stamp messages with
    finished: bool
    elapsed: float
    cpu_seconds: float
    outbox: broadcasts.Progress
    loop_lags: list[float]
    refused: Counter[str]
    traced_peak: int | None


@dataclass
class Figures:
    options: Options
    split: Counter[str]
    seed_seconds: float
    sending: Sending
    tallies: dict[str, Tally]
    too_many_requests: dict[str, int]
    writes: list[LiveWrite]
    max_rss_kib: int


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def achieved_rate(tally: Tally, started_at: float) -> float:
    """Messages accepted (broadcast and replies) per second, up to the last broadcast one."""
    if tally.last_broadcast_at <= started_at:
        return 0.0
    accepted = sum(1 for at in tally.accepted_at if at <= tally.last_broadcast_at)
    return accepted / (tally.last_broadcast_at - started_at)


def overall_rate(tallies: dict[str, Tally], started_at: float) -> float:
    end = max(tally.last_broadcast_at for tally in tallies.values())
    if end <= started_at:
        return 0.0
    accepted = sum(1 for tally in tallies.values() for at in tally.accepted_at if at <= end)
    return accepted / (end - started_at)


def shortest_possible(figures: Figures) -> float:
    """Seconds the slower platform needs at its allowed rate (its first second is a burst)."""
    return max(
        max(0.0, figures.split[name] - max(1.0, tally.allowed)) / tally.allowed
        for name, tally in figures.tallies.items()
    )


Row = tuple[str, str, str, str]  # label, achieved, target, verdict


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def _delays(writes: list[LiveWrite]) -> list[float]:
    return [write.delay for write in writes if write.delay is not None]


def _spread(writes: list[LiveWrite]) -> str:
    delays = _delays(writes)
    longest = max(delays) if delays else None
    median = statistics.median(delays) if delays else None
    return f"n={len(writes)}, longest {_seconds(longest)}, median {_seconds(median)}"


def _verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


def delivery_rows(figures: Figures) -> list[Row]:
    unique = sum(tally.unique for tally in figures.tallies.values())
    duplicates = sum(tally.duplicates for tally in figures.tallies.values())
    losses = figures.sending.expected - unique
    elapsed = f"{figures.sending.elapsed:.1f} s"
    if not figures.sending.finished:
        elapsed += " (time limit hit)"
    return [
        ("residents", str(figures.options.residents), "", ""),
        ("messages expected (outbox rows)", str(figures.sending.expected), "", ""),
        ("delivered (unique)", str(unique), str(figures.sending.expected), _verdict(losses == 0)),
        ("duplicates", str(duplicates), "0", _verdict(duplicates == 0)),
        ("losses", str(losses), "0", _verdict(losses == 0)),
        ("elapsed", elapsed, f"≥ {shortest_possible(figures):.1f} s at the allowed rates", ""),
    ]


def rate_rows(figures: Figures) -> list[Row]:
    started_at = figures.sending.started_at
    rows = []
    for name, tally in figures.tallies.items():
        rate = achieved_rate(tally, started_at)
        rows.append(
            (
                f"{name}: achieved ÷ allowed rate",
                f"{rate / tally.allowed:.3f} ({rate:.1f} of {tally.allowed:g}/s)",
                f"≥ {TARGET_RATE}",
                _verdict(rate / tally.allowed >= TARGET_RATE),
            )
        )
    allowed = sum(tally.allowed for tally in figures.tallies.values())
    rate = overall_rate(figures.tallies, started_at)
    rows.append(
        (
            "overall: achieved ÷ allowed rate",
            f"{rate / allowed:.3f} ({rate:.1f} of {allowed:g}/s)",
            f"≥ {TARGET_RATE}",
            _verdict(rate / allowed >= TARGET_RATE),
        )
    )
    for name, count in figures.too_many_requests.items():
        rows.append((f"{name}: 429s received", str(count), "", ""))
    return rows


def reply_rows(writes: list[LiveWrite]) -> list[Row]:
    delays = _delays(writes)
    longest = max(delays) if delays else None
    median = statistics.median(delays) if delays else None
    missing = len(writes) - len(delays)
    late = [w for w in writes if w.delay is not None and w.delay > TARGET_REPLY_SECONDS]
    target = f"≤ {TARGET_REPLY_SECONDS:g} s"
    return [
        (
            f"live replies ({len(writes)} written): longest",
            _seconds(longest),
            target,
            _verdict(longest is not None and longest <= TARGET_REPLY_SECONDS),
        ),
        ("live replies: median", _seconds(median), target, ""),
        (
            f"live replies: later than {TARGET_REPLY_SECONDS:g} s",
            f"{len(late)} ({sum(w.chat_interval > 0 for w in late)} of them held by the "
            f"per-chat interval)",
            "0",
            "",
        ),
        (
            f"live replies: none within {REPLY_GRACE:g} s of the end",
            str(missing),
            "0",
            _verdict(missing == 0),
        ),
        (
            "  writers still waiting for the broadcast",
            _spread([w for w in writes if w.before_broadcast]),
            "",
            "",
        ),
        (
            "  writers who had it already",
            _spread([w for w in writes if not w.before_broadcast]),
            "",
            "",
        ),
        (
            "  writers who had it already, no 429 while they waited",
            _spread([w for w in writes if not w.before_broadcast and not w.met_429]),
            "",
            "",
        ),
        (
            "  writers who waited while their platform answered a 429",
            _spread([w for w in writes if w.met_429]),
            "",
            "",
        ),
        *(
            (f"  {name} writers", _spread([w for w in writes if w.channel == name]), "", "")
            for name in PLATFORMS
        ),
    ]


def queuing_rows(figures: Figures) -> list[Row]:
    """The queuing must not hold residents up: the replies to those who wrote while it ran."""
    sending = figures.sending
    during = [w for w in figures.writes if w.written_at <= sending.queued_at]
    delays = _delays(during)
    longest = max(delays) if delays else None
    return [
        ("broadcast queued (chunks, by the scheduler)", f"{sending.queue_seconds:.1f} s", "", ""),
        (
            f"replies to writers while it was queued ({len(during)}): longest",
            _seconds(longest),
            f"≤ {TARGET_REPLY_SECONDS:g} s",
            _verdict(
                longest is not None
                and longest <= TARGET_REPLY_SECONDS
                and len(delays) == len(during)
            ),
        ),
    ]


def busiest_second(moments: list[float]) -> int:
    """The most messages in any window (t - 1 s, t], counted at every message."""
    ordered = sorted(moments)
    start = most = 0
    for end, moment in enumerate(ordered):
        while ordered[start] + 1.0 <= moment:
            start += 1
        most = max(most, end - start + 1)
    return most


def window_rows(figures: Figures) -> list[Row]:
    rows = []
    for name, tally in figures.tallies.items():
        most = busiest_second(tally.accepted_at)
        rows.append(
            (
                f"{name}: most messages in any sliding 1 s window",
                str(most),
                f"≤ {tally.allowed:g}",
                _verdict(most <= tally.allowed),
            )
        )
    return rows


def chat_rows(figures: Figures) -> list[Row]:
    return [
        (
            f"{name}: 3 messages to one chat within {CHAT_SPACING:g} s",
            f"{tally.too_close} (closest pair {tally.closest:.3f} s)",
            "0",
            _verdict(tally.too_close == 0),
        )
        for name, tally in figures.tallies.items()
    ]


def resource_rows(figures: Figures) -> list[Row]:
    sending = figures.sending
    outbox = sending.outbox
    traced = (
        "tracemalloc off"
        if sending.traced_peak is None
        else f"tracemalloc {sending.traced_peak / 2**20:.1f} MiB"
    )
    lags = sorted(sending.loop_lags) or [0.0]
    p99 = lags[int(0.99 * (len(lags) - 1))]
    return [
        (
            "outbox rows at the end",
            f"sent {outbox.sent}, failed {outbox.failed}, unreachable {outbox.unreachable}, "
            f"queued {outbox.queued}",
            "",
            "",
        ),
        ("peak memory", f"{traced}, ru_maxrss {figures.max_rss_kib / 1024:.1f} MiB", "", ""),
        (
            "event loop lag",
            f"median {statistics.median(lags) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
            f"max {lags[-1] * 1000:.0f} ms",
            "",
            "",
        ),
        ("CPU while sending", f"{sending.cpu_seconds / sending.elapsed:.0%} of one core", "", ""),
    ]


def code_state() -> str:
    """Which code was measured: others change the dispatcher while this runs."""
    try:
        head = _git("rev-parse", "--short", "HEAD").strip()
        changed = _git("status", "--porcelain", "--", "bot", "storage", "flows").splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    paths = [line[3:] for line in changed if line.strip()]
    return f"HEAD {head}" + (f", uncommitted: {', '.join(paths)}" if paths else ", clean")


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
    ).stdout


def print_report(figures: Figures, code: str) -> None:
    options, sending = figures.options, figures.sending
    print()
    print(
        f"Khma broadcast benchmark: {options.database}, {options.residents} residents "
        f"({figures.split[TELEGRAM]} Telegram, {figures.split[VIBER]} Viber); allowed "
        f"{options.rate:g}/s on Telegram and {options.viber_rate:g}/s on Viber, 1/s per chat"
    )
    print(f"code: {code}")
    print(
        f"set-up: residents inserted (set-based) in {figures.seed_seconds:.1f} s; the "
        f"broadcast queued by the scheduler, in chunks, in {sending.queue_seconds:.1f} s"
    )
    for problem, count in sending.refused.items():
        print(f"note: {problem}: {count} times")
    print()
    print(f"  {'':<58}{'achieved':<44}target")
    rows = [
        *queuing_rows(figures),
        *delivery_rows(figures),
        *rate_rows(figures),
        *window_rows(figures),
        *reply_rows(figures.writes),
        *chat_rows(figures),
        *resource_rows(figures),
    ]
    for label, achieved, target, verdict in rows:
        print(f"  {label:<58}{achieved:<44}{target:<32}{verdict}".rstrip())
    print()
    print(
        "  Rates count every message a platform accepted (broadcast and live replies) from\n"
        "  the start of sending to that platform's last broadcast message; the stand-ins'\n"
        "  buckets start full, so a short run can exceed 1.0. Memory is the whole process\n"
        "  (Khma, both stand-ins, this script): tracemalloc's peak since Khma started,\n"
        "  ru_maxrss since the process started."
    )
    if sending.traced_peak is not None:
        print(
            "  tracemalloc was on: it makes every allocation slower, and so every engine turn\n"
            "  and send; the latency and CPU figures are pessimistic (--no-tracemalloc)."
        )


# --- the run ------------------------------------------------------------------------------------


async def send_broadcast(
    khma: Khma, watch: Watch, members: list[Member], options: Options
) -> Sending:
    """Queue the broadcast as the scheduler does (in chunks) and let the dispatcher send it
    while residents write; measure both."""
    broadcast_id = await create_broadcast(khma.db)
    cpu_before = cpu_seconds()
    started_at = time.monotonic()
    stop = asyncio.Event()
    lags: list[float] = []
    refused: Counter[str] = Counter()
    webhook = f"http://127.0.0.1:{khma.port}/webhooks/viber"
    helpers = [
        asyncio.create_task(write_live(members, watch, webhook, stop, refused)),
        asyncio.create_task(measure_loop_lag(stop, lags)),
    ]
    # The scheduler's own round: start_due, then one chunk per transaction, sending
    # already under way (the dispatcher is woken after every chunk).
    await khma.scheduler.run_due()
    queued_at = time.monotonic()
    expected = await count_queued(khma.db, broadcast_id)
    deadline = started_at + options.seconds_limit
    finished = await wait_for_broadcast(khma.db, broadcast_id, expected, watch, deadline)
    last = max(tally.last_broadcast_at for tally in watch.tallies.values())
    elapsed = (last if finished and last else time.monotonic()) - started_at
    cpu = cpu_seconds() - cpu_before
    stop.set()
    await asyncio.gather(*helpers)
    await wait_for_replies(watch, REPLY_GRACE)
    watch.note_429s()
    async with khma.db.transaction() as session:
        outbox = await broadcasts.progress(session, broadcast_id)
    return Sending(
        queue_seconds=queued_at - started_at,
        queued_at=queued_at,
        expected=expected,
        started_at=started_at,
        finished=finished,
        elapsed=elapsed,
        cpu_seconds=cpu,
        outbox=outbox,
        loop_lags=lags,
        refused=refused,
        traced_peak=tracemalloc.get_traced_memory()[1] if options.tracemalloc else None,
    )


async def run(options: Options) -> Figures:
    members = audience(options.residents)
    async with fresh_database(options.database, options.pg_url) as db:
        began = time.monotonic()
        await seed(db, members)
        seed_seconds = time.monotonic() - began
        if options.tracemalloc:
            tracemalloc.reset_peak()
        async with (
            TelegramStandIn(token=TELEGRAM_TOKEN) as telegram,
            RateLimitedViber(options.viber_rate) as viber,
        ):
            telegram.rate_limit(options.rate, retry_after=RETRY_AFTER)
            khma = Khma(khma_settings(db, telegram, viber, free_port(), options), db=db)
            await khma.start()
            try:
                watch = Watch(telegram, viber, options)
                sending = await send_broadcast(khma, watch, members, options)
            finally:
                await khma.stop()
    return Figures(
        options=options,
        split=Counter(member.channel for member in members),
        seed_seconds=seed_seconds,
        sending=sending,
        tallies=watch.tallies,
        too_many_requests={TELEGRAM: telegram.too_many_requests, VIBER: viber.too_many_requests},
        writes=watch.writes,
        max_rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    )


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_options(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    code = code_state()
    if options.tracemalloc:
        tracemalloc.start()
    with loopback_only():
        figures = asyncio.run(run(options))
    print_report(figures, code)


if __name__ == "__main__":
    main()
