"""`kill -9` at any moment loses no resident's message.

A real `python -m bot run` process polls the loopback Bot API stand-in; we kill
it without warning in the middle of a stream of updates, send more while it is
down, start it again, and check that every resident got their answer.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from sqlalchemy import func, select

from storage.db import Database
from storage.models import InboxEvent, OutboxMessage
from tests.fakes.telegram_api import TelegramStandIn
from tests.harness import TOKEN

ROOT = Path(__file__).resolve().parent.parent
BEFORE_KILL, WHILE_DOWN = 150, 30
LOG = Path(os.environ.get("KHMA_CRASH_LOG", os.devnull))


async def start_bot(db: Database, api: TelegramStandIn) -> asyncio.subprocess.Process:
    """`python -m bot run` with the default leases: a restart must not wait them out."""
    env = {
        **os.environ,
        "TELEGRAM_TOKEN": api.token,
        "TELEGRAM_API_URL": api.url,
        "TELEGRAM_POLL_TIMEOUT": "1",
        "DATABASE_URL": db.url,
        "HOST": "127.0.0.1",
        "PORT": "0",
        "LOG_LEVEL": "INFO",
        "TELEGRAM_RATE": "500",
        "TELEGRAM_CHAT_RATE": "50",
    }
    if db.schema:
        env["DATABASE_SCHEMA"] = db.schema
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=LOG.open("ab"),
    )


async def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_kill_9_mid_stream_loses_nothing(db) -> None:
    async with TelegramStandIn(token=TOKEN) as api:
        chats = list(range(10_000, 10_000 + BEFORE_KILL + WHILE_DOWN))
        for chat in chats[:BEFORE_KILL]:
            api.command_update(chat, "/start", language_code="ru")
        bot = await start_bot(db, api)
        try:
            await wait_until(lambda: len(api.sent) >= BEFORE_KILL // 3)
            bot.send_signal(signal.SIGKILL)
            await bot.wait()
        finally:
            if bot.returncode is None:
                bot.kill()
                await bot.wait()
        sent_at_kill = len(api.sent)
        for chat in chats[BEFORE_KILL:]:
            api.command_update(chat, "/start", language_code="ru")

        bot = await start_bot(db, api)
        try:
            await wait_until(lambda: {m.chat_id for m in api.sent} >= set(chats))
            await wait_until(lambda: not api.pending_updates)
        finally:
            bot.terminate()
            await bot.wait()

    welcomes = [m.chat_id for m in api.sent]
    duplicates = len(welcomes) - len(set(welcomes))
    print(
        f"\nkill -9 after {sent_at_kill} of {len(chats)} answers: 0 lost, {duplicates} sent twice"
    )
    assert set(welcomes) == set(chats), "every resident got an answer"
    assert duplicates <= 16, "at most the messages in flight at the kill are repeated"
    async with db.transaction() as session:
        pending = await session.scalar(
            select(func.count()).select_from(InboxEvent).where(InboxEvent.status != "done")
        )
        stored = await session.scalar(select(func.count()).select_from(InboxEvent))
    assert (stored, pending) == (len(chats), 0)


async def test_live_replies_resume_within_10_s_of_a_restart_after_kill_9(db) -> None:
    """Replies in flight at a `kill -9` hold nobody's conversation for long after a restart.

    The platform stalls, so the bot is mid-send for every chat when it is killed; those
    rows stay claimed (`sending`) in the database, and each chat's later replies wait
    behind them. The restarted bot must answer everyone within 10 s of starting.
    """
    chats = list(range(30_000, 30_010))
    async with TelegramStandIn(token=TOKEN) as api:
        for chat in chats:
            api.command_update(chat, "/start", language_code="ka")
        bot = await start_bot(db, api)
        try:
            await wait_until(lambda: {m.chat_id for m in api.sent} >= set(chats))
            api.stall()
            for chat in chats:
                api.command_update(chat, "/menu", language_code="ka")
            await wait_until(lambda: api.stalled >= len(chats) // 2)
            bot.send_signal(signal.SIGKILL)
            await bot.wait()
        finally:
            if bot.returncode is None:
                bot.kill()
                await bot.wait()
        api.unstall()
        answered_before = {chat: len(api.sent_to(chat)) for chat in chats}
        async with db.transaction() as session:
            in_flight = await session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.status == "sending")
            )
        assert in_flight, "the kill left replies claimed mid-send"

        loop = asyncio.get_running_loop()
        restarted = loop.time()
        bot = await start_bot(db, api)
        try:
            await wait_until(
                lambda: all(len(api.sent_to(c)) > answered_before[c] for c in chats), timeout=40
            )
            gap = loop.time() - restarted
        finally:
            bot.terminate()
            await bot.wait()
    print(f"\nlive replies resumed {gap:.1f} s after the restart")
    assert gap < 10, f"replies resumed only {gap:.1f} s after the restart"
