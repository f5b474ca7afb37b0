"""How many residents' messages Khma answers, against a bare python-telegram-bot echo bot.

What it measures
    The Telegram stand-in (tests/fakes/telegram_api.py) runs in this process; each bot runs
    in a child process of its own, so its CPU time is its own:

    * the baseline: a bare python-telegram-bot `Application` polling the stand-in and
      echoing every text (PTB's defaults: one update at a time);
    * Khma polling the stand-in, on SQLite, then on PostgreSQL (a fresh schema);
    * Khma on PostgreSQL in webhook mode, one process and then two processes, the stand-in
      posting updates round-robin to them as a load balancer in front of one address would.

    Each is driven with the same burst (N residents, M messages queued at once) and the
    same steady stream (R messages a second). The residents are onboarded before (rows
    written as onboarding leaves them), so every turn is a real menu/flow turn: they cycle
    through "/menu", "1" (report a need: the categories), "/menu", "2" (the DCFTA topics),
    each answered with exactly one message. Khma's pacing is set far above the platform's
    (as in the conversation tests): the echo bot has none, and the engine is what is
    measured here, not Telegram's 30 messages a second.

    It prints, per bot and run: messages/s (burst), p50/p95/p99 latency (update queued at
    the stand-in → the reply recorded by the stand-in), CPU ms per message of the bot's
    process (the database server's CPU is not counted), and for Khma the SQL statements and
    commits per turn, counted with SQLAlchemy's `before_cursor_execute` and `commit` events
    and split by who ran them (accept = storing updates, process = the engine's turns,
    dispatch = the outbox); then Khma ÷ echo and 2 processes ÷ 1 process.

Why it is not a test
    Its figures depend on the machine and on what else runs on it; it prints and never
    asserts. tests/test_turn_budget.py holds the statement and commit counts as a test.

Run:  .venv/bin/python -m benchmarks.inbound [--residents 50] [--messages 2000]
          [--rate 50] [--steady-seconds 20] [--only echo,sqlite,postgresql,webhook]
"""

from __future__ import annotations

import argparse
import asyncio
import builtins
import functools
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event

from benchmarks.databases import PG_URL, run_on_postgres
from storage.db import Database
from storage.models import Identity, Resident
from tests.fakes.telegram_api import JSONDict, TelegramStandIn

TOKEN = "123456:BENCH-token-never-logged"
WEBHOOK_SECRET = "bench-webhook-secret"
# Each text is one real turn answered with one message: the menu, the categories of a
# report (choice 1), the menu again, the DCFTA topics (choice 2).
CYCLE = ("/menu", "1", "/menu", "2")
FIRST_CHAT = 700_000
TARGET_RATIO = 0.5
TARGET_P95_MS = 100.0
TARGET_STATEMENTS = 6.0
TARGET_COMMITS = 2.0
TARGET_SCALING = 1.5


@dataclass(frozen=True)
class Options:
    residents: int
    messages: int
    rate: float
    steady_seconds: float
    only: frozenset[str]
    pg_url: str
    timeout: float


@dataclass
class Run:
    """One load against one bot: what the stand-in saw and what the bot's process counted."""

    name: str
    messages: int
    seconds: float
    latencies: list[float]
    cpu_seconds: float
    statements: Counter[str] = field(default_factory=Counter)
    commits: Counter[str] = field(default_factory=Counter)

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def percentile(self, q: int) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] * 1000 if self.latencies else float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1] * 1000

    @property
    def cpu_ms(self) -> float:
        return self.cpu_seconds * 1000 / self.messages

    def per_turn(self, counts: Counter[str]) -> float:
        return sum(counts.values()) / self.messages


# --- the child processes ------------------------------------------------------------------------


def _phase() -> str:
    """Who runs the statement: the coroutine at the bottom of the current asyncio task."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return "other"
    if task is None:
        return "other"
    name = getattr(task.get_coro(), "__qualname__", "")
    if name.startswith("Dispatcher."):
        return "dispatch"
    if name.startswith("Engine."):
        return "process"
    if name.startswith(("TelegramChannel.", "RequestHandler.")):
        return "accept"
    return "other"


class Counters:
    def __init__(self) -> None:
        self.statements: Counter[str] = Counter()
        self.commits: Counter[str] = Counter()

    def attach(self, sync_engine: Any) -> None:
        event.listen(sync_engine, "before_cursor_execute", self._statement)
        event.listen(sync_engine, "commit", self._commit)

    def _statement(self, *_args: Any) -> None:
        self.statements[_phase()] += 1

    def _commit(self, *_args: Any) -> None:
        self.commits[_phase()] += 1


async def _serve(kind: str) -> None:
    """The child: start one bot, then answer `stats` lines on stdin until stdin closes."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    counters = Counters()
    if kind == "echo":
        stop_bot = await _start_echo()
        port = 0
    else:
        from bot.app import Khma
        from bot.config import Settings

        khma = Khma(Settings.from_env(dict(os.environ)))
        counters.attach(khma.db.engine.sync_engine)
        await khma.start()
        stop_bot = khma.stop
        port = khma.port
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ready": True, "port": port}), flush=True)
    try:
        while line := await reader.readline():
            if line.strip() == b"stats":
                stats = {
                    "cpu": time.process_time(),
                    "statements": counters.statements,
                    "commits": counters.commits,
                }
                print(json.dumps(stats), flush=True)
    finally:
        await stop_bot()


async def _start_echo():
    """The baseline: python-telegram-bot's own polling and handlers, echoing each text."""
    from telegram import Update
    from telegram.ext import ApplicationBuilder, ContextTypes, MessageHandler, filters

    async def echo(update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.message.reply_text(update.message.text)

    application = (
        ApplicationBuilder().token(TOKEN).base_url(os.environ["TELEGRAM_BASE_URL"]).build()
    )
    application.add_handler(MessageHandler(filters.TEXT, echo))
    await application.initialize()
    await application.updater.start_polling(poll_interval=0.0, timeout=10)
    await application.start()

    async def stop() -> None:
        await application.updater.stop()
        await application.stop()
        await application.shutdown()

    return stop


class Child:
    """A bot in its own process, asked for its counters over stdin/stdout."""

    def __init__(self, kind: str, env: dict[str, str]) -> None:
        self.kind = kind
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.port = 0

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.inbound",
            "--serve",
            self.kind,
            env={**os.environ, **self.env},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        ready = await self._line(timeout=60)
        self.port = int(ready["port"])

    async def _line(self, timeout: float = 10) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"the {self.kind} process exited")
        return json.loads(line)

    async def stats(self) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(b"stats\n")
        await self.process.stdin.drain()
        return await self._line()

    async def stop(self) -> None:
        if self.process is None:
            return
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


# --- the database -------------------------------------------------------------------------------


async def _onboarded(db: Database, options: Options) -> None:
    """Residents as onboarding leaves them: language, municipality, consent; no open step."""
    now = datetime.now(UTC)
    async with db.transaction() as session:
        for chat in _chats(options):
            resident = Resident(
                language="ka", municipality="marneuli", consent=True, consent_at=now
            )
            session.add(
                Identity(
                    channel="telegram",
                    address=str(chat),
                    resident=resident,
                    display_name="Nino",
                    platform_language="ka",
                    created_at=now,
                )
            )


class Store:
    """A migrated database with the residents in it: a SQLite file or a PostgreSQL schema."""

    def __init__(self, kind: str, options: Options) -> None:
        self.kind = kind
        self.options = options
        self.folder = tempfile.TemporaryDirectory(prefix="khma-inbound-")
        self.schema: str | None = None
        self.url = ""

    async def __aenter__(self) -> Store:
        if self.kind == "sqlite":
            self.url = f"sqlite+aiosqlite:///{self.folder.name}/khma.db"
            db = Database(self.url)
        else:
            self.schema = "bench_" + uuid.uuid4().hex[:12]
            await run_on_postgres(self.options.pg_url, f'CREATE SCHEMA "{self.schema}"')
            self.url = self.options.pg_url
            db = Database(self.url, schema=self.schema)
        try:
            await db.migrate()
            await _onboarded(db, self.options)
        finally:
            await db.close()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self.schema:
            await run_on_postgres(self.options.pg_url, f'DROP SCHEMA "{self.schema}" CASCADE')
        self.folder.cleanup()

    def env(self) -> dict[str, str]:
        return {"DATABASE_URL": self.url, "DATABASE_SCHEMA": self.schema or ""}


# --- the load -----------------------------------------------------------------------------------


def _chats(options: Options) -> list[int]:
    return [FIRST_CHAT + i for i in range(options.residents)]


def _updates(api: TelegramStandIn, options: Options, count: int) -> list[JSONDict]:
    """`count` messages, round-robin over the residents, each cycling through CYCLE."""
    chats = _chats(options)
    updates = []
    for index in range(count):
        chat = chats[index % len(chats)]
        text = CYCLE[(index // len(chats)) % len(CYCLE)]
        if text.startswith("/"):
            update = api.command_update(chat, text, queue=False)
        else:
            update = api.text_update(chat, text, queue=False)
        updates.append(update)
    return updates


async def _replies(api: TelegramStandIn, before: int, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(api.sent) < before + count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(api.sent) - before} of {count} replies in {timeout} s")
        await asyncio.sleep(0.01)


def _latencies(api: TelegramStandIn, updates: list[JSONDict], before: int) -> list[float]:
    """The k-th update of a chat is answered by the k-th reply to it: one reply each."""
    queued: dict[int, list[float]] = {}
    for update in updates:
        chat = update["message"]["chat"]["id"]
        queued.setdefault(chat, []).append(api.queued_at[update["update_id"]])
    answered: dict[int, list[float]] = {}
    for message in api.sent[before:]:
        answered.setdefault(message.chat_id, []).append(message.at)
    return [
        reply - sent
        for chat, times in queued.items()
        for sent, reply in zip(times, answered.get(chat, []), strict=False)
    ]


async def _measure(
    name: str,
    api: TelegramStandIn,
    children: list[Child],
    updates: list[JSONDict],
    send: Any,
    timeout: float,
) -> Run:
    before = len(api.sent)
    stats_before = [await child.stats() for child in children]
    started = time.monotonic()
    await send(updates)
    await _replies(api, before, len(updates), timeout)
    stats_after = [await child.stats() for child in children]
    last = max(message.at for message in api.sent[before:])
    run = Run(
        name=name,
        messages=len(updates),
        seconds=last - started,
        latencies=_latencies(api, updates, before),
        cpu_seconds=sum(
            a["cpu"] - b["cpu"] for a, b in zip(stats_after, stats_before, strict=True)
        ),
    )
    for after, earlier in zip(stats_after, stats_before, strict=True):
        run.statements.update(Counter(after["statements"]) - Counter(earlier["statements"]))
        run.commits.update(Counter(after["commits"]) - Counter(earlier["commits"]))
    return run


async def drive(
    label: str, api: TelegramStandIn, children: list[Child], options: Options, webhook: bool
) -> list[Run]:
    """Warm up, then the burst, then the steady stream; one `Run` each."""
    urls = [f"http://127.0.0.1:{child.port}/webhooks/telegram" for child in children]

    async def burst(updates: list[JSONDict]) -> None:
        if webhook:
            await api.post_updates(urls, updates, secret_token=WEBHOOK_SECRET)
        else:
            api.queue_burst(updates)

    async def steady(updates: list[JSONDict]) -> None:
        if webhook:
            await api.post_updates(
                urls, updates, secret_token=WEBHOOK_SECRET, per_second=options.rate
            )
        else:
            await api.stream(updates, options.rate)

    warm = _updates(api, options, options.residents)
    await _measure("warm-up", api, children, warm, burst, options.timeout)
    runs = [
        await _measure(
            f"{label} burst",
            api,
            children,
            _updates(api, options, options.messages),
            burst,
            options.timeout,
        )
    ]
    if options.steady_seconds > 0:
        count = int(options.rate * options.steady_seconds)
        updates = _updates(api, options, count)
        runs.append(
            await _measure(
                f"{label} steady {options.rate:g}/s", api, children, updates, steady, 60 + count
            )
        )
    return runs


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _khma_env(api: TelegramStandIn, store: Store, port: int, webhook: bool) -> dict[str, str]:
    env = {
        **store.env(),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "TELEGRAM_TOKEN": TOKEN,
        "TELEGRAM_API_URL": api.url,
        "TELEGRAM_POLL_TIMEOUT": "10",
        "TELEGRAM_RATE": "100000",
        "TELEGRAM_CHAT_RATE": "100000",
        "QUIET_HOURS": "off",
        "LOG_LEVEL": "WARNING",
    }
    if webhook:
        env |= {
            # Registered at the stand-in (which wants https, as Telegram does) but never
            # called: the stand-in posts to each process's port itself, round-robin.
            "TELEGRAM_WEBHOOK_URL": "https://khma.example.org/webhooks/telegram",
            "TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET,
        }
    return env


async def bench_echo(options: Options) -> list[Run]:
    async with TelegramStandIn(TOKEN) as api:
        child = Child("echo", {"TELEGRAM_BASE_URL": api.base_url})
        await child.start()
        try:
            return await drive("echo", api, [child], options, webhook=False)
        finally:
            await child.stop()


async def bench_khma(options: Options, database: str, processes: int, webhook: bool) -> list[Run]:
    label = f"khma {database}" + (f" webhook ×{processes}" if webhook else "")
    async with Store(database, options) as store, TelegramStandIn(TOKEN) as api:
        children = [
            Child("khma", _khma_env(api, store, _free_port(), webhook)) for _ in range(processes)
        ]
        try:
            for child in children:
                await child.start()
            return await drive(label, api, children, options, webhook=webhook)
        finally:
            for child in children:
                await child.stop()


# --- the report ---------------------------------------------------------------------------------


def _split(counts: Counter[str], messages: int) -> str:
    parts = ", ".join(
        f"{phase} {counts[phase] / messages:.1f}"
        for phase in ("accept", "process", "dispatch", "other")
        if counts[phase]
    )
    return parts or "-"


def report(runs: list[Run], options: Options, file: Any = None) -> None:
    print = functools.partial(builtins.print, file=file or sys.stdout)
    print()
    print(
        f"{options.residents} residents; burst {options.messages} messages queued at once; "
        f"steady {options.rate:g} messages/s for {options.steady_seconds:g} s"
    )
    header = (
        f"{'run':34} {'msg/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
        f"{'CPU ms/msg':>10} {'stmts/turn':>10} {'commits/turn':>12}"
    )
    print(header)
    print("-" * len(header))
    for run in runs:
        khma = not run.name.startswith("echo")
        print(
            f"{run.name:34} {run.per_second:7.0f} {run.percentile(50):7.0f} "
            f"{run.percentile(95):7.0f} {run.percentile(99):7.0f} {run.cpu_ms:10.1f} "
            + (
                f"{run.per_turn(run.statements):10.1f} {run.per_turn(run.commits):12.1f}"
                if khma
                else f"{'-':>10} {'-':>12}"
            )
        )
    print()
    for run in runs:
        if not run.name.startswith("echo") and run.statements:
            print(
                f"{run.name}: statements per turn {_split(run.statements, run.messages)}; "
                f"commits {_split(run.commits, run.messages)}"
            )
    by_name = {run.name: run for run in runs}
    echo = by_name.get("echo burst")
    print()
    for run in runs:
        if run.name.endswith("burst") and echo and run is not echo:
            ratio = run.per_second / echo.per_second
            verdict = "meets" if ratio >= TARGET_RATIO else "misses"
            print(f"{run.name} ÷ echo burst: {ratio:.2f}× ({verdict} ≥ {TARGET_RATIO}×)")
    for run in runs:
        if "steady" in run.name and not run.name.startswith("echo"):
            p95 = run.percentile(95)
            verdict = "meets" if p95 <= TARGET_P95_MS else "misses"
            print(f"{run.name}: p95 {p95:.0f} ms ({verdict} ≤ {TARGET_P95_MS:.0f} ms)")
    one = by_name.get("khma postgresql webhook ×1 burst")
    two = by_name.get("khma postgresql webhook ×2 burst")
    if one and two:
        ratio = two.per_second / one.per_second
        verdict = "meets" if ratio >= TARGET_SCALING else "misses"
        print(f"2 processes ÷ 1 process (webhook burst): {ratio:.2f}× ({verdict} ≥ 1.5×)")


async def bench(options: Options) -> None:
    runs: list[Run] = []
    plan = [
        ("echo", bench_echo(options)),
        ("sqlite", bench_khma(options, "sqlite", 1, webhook=False)),
        ("postgresql", bench_khma(options, "postgresql", 1, webhook=False)),
        ("webhook", bench_khma(options, "postgresql", 1, webhook=True)),
        ("webhook", bench_khma(options, "postgresql", 2, webhook=True)),
    ]
    for key, work in plan:
        if key not in options.only:
            work.close()
            continue
        print(f"running {key} ...", file=sys.stderr, flush=True)
        try:
            runs.extend(await work)
        except Exception as error:  # report what was measured; say what was not
            print(f"{key} failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        report(runs, options, file=sys.stderr)
    report(runs, options)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--residents", type=int, default=50)
    parser.add_argument("--messages", type=int, default=2000, help="in the burst")
    parser.add_argument("--rate", type=float, default=50.0, help="steady messages a second")
    parser.add_argument("--steady-seconds", type=float, default=20.0)
    parser.add_argument("--only", default="echo,sqlite,postgresql,webhook")
    parser.add_argument("--pg-url", default=PG_URL, help="PostgreSQL to make a schema in")
    parser.add_argument("--timeout", type=float, default=600.0, help="per burst, seconds")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.serve))
        return
    options = Options(
        residents=args.residents,
        messages=args.messages,
        rate=args.rate,
        steady_seconds=args.steady_seconds,
        only=frozenset(args.only.split(",")),
        pg_url=args.pg_url,
        timeout=args.timeout,
    )
    asyncio.run(bench(options))


if __name__ == "__main__":
    main()
