"""Several bot processes on one PostgreSQL, and a kill -9 in the middle of a broadcast.

Real `python -m bot run` processes serve the loopback Telegram stand-in (webhook
mode, so they do not compete for `getUpdates`); residents and the broadcast are
put in place with the CLI, as an operator would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from bot.outreach import events
from storage.db import Database
from storage.models import Identity, Resident, Rsvp
from tests.fakes.telegram_api import TelegramStandIn
from tests.harness import TOKEN

ROOT = Path(__file__).resolve().parent.parent
RECIPIENTS = 2000
LOG = Path(os.environ.get("KHMA_MULTI_LOG", os.devnull))


def environment(db: Database, api: TelegramStandIn) -> dict[str, str]:
    env = {
        **os.environ,
        "TELEGRAM_TOKEN": api.token,
        "TELEGRAM_API_URL": api.url,
        "TELEGRAM_WEBHOOK_URL": "https://khma.example.org/webhooks/telegram",
        "DATABASE_URL": db.url,
        "HOST": "127.0.0.1",
        "PORT": "0",
        "LOG_LEVEL": os.environ.get("KHMA_MULTI_LOG_LEVEL", "WARNING"),
        "DISPATCH_LEASE_SECONDS": "3",
        "TELEGRAM_RATE": "500",
        "TELEGRAM_CHAT_RATE": "50",
        "QUIET_HOURS": "off",
    }
    if db.schema:
        env["DATABASE_SCHEMA"] = db.schema
    return env


async def bot(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=LOG.open("ab"),
    )


async def cli(env: dict[str, str], *args: str) -> None:
    process = await bot(env, *args)
    assert await process.wait() == 0, args


async def residents(db: Database, count: int, first_chat: int) -> list[int]:
    """Consenting Telegram residents, inserted in bulk as a long-running bot would have them."""
    async with db.transaction() as session:
        ids = (
            (
                await session.execute(
                    insert(Resident).returning(Resident.id),
                    [
                        {
                            "pseudonym": f"R-{first_chat + i:010x}",
                            "language": "ru",
                            "consent": True,
                            "municipality": "marneuli",
                            "created_at": datetime.now(UTC),
                            "updated_at": datetime.now(UTC),
                        }
                        for i in range(count)
                    ],
                )
            )
            .scalars()
            .all()
        )
        await session.execute(
            insert(Identity),
            [
                {
                    "resident_id": rid,
                    "channel": "telegram",
                    "address": str(first_chat + i),
                    "flow_data": {},
                    "created_at": datetime.now(UTC),
                    "last_inbound_at": datetime.now(UTC),
                }
                for i, rid in enumerate(ids)
            ],
        )
    return list(ids)


async def until(condition, timeout: float = 90.0, what=lambda: None) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out ({what()})"
        await asyncio.sleep(0.05)


async def stop(processes: list[asyncio.subprocess.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            process.terminate()
    for process in processes:
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()


async def test_two_processes_deliver_a_broadcast_and_reminders_exactly_once(db) -> None:
    if db.is_sqlite:
        pytest.skip("several processes share PostgreSQL; SQLite is the single-process store")
    async with TelegramStandIn(token=TOKEN) as api:
        env = environment(db, api)
        ids = await residents(db, RECIPIENTS, first_chat=50_000)
        async with db.transaction() as session:
            event = await events.create(
                session,
                titles={"ru": "Встреча"},
                place="Библиотека",
                now=datetime.now(UTC),
                starts_at=datetime.now(UTC) + timedelta(hours=24, seconds=6),
            )
            session.add_all(Rsvp(event_id=event.id, resident_id=rid) for rid in ids[:300])
        processes = [await bot(env, "run"), await bot(env, "run")]
        try:
            await cli(env, "broadcast", "create", "--text", "ru=Завтра встреча", "--yes")
            await until(lambda: len(api.sent) >= RECIPIENTS + 300, what=lambda: len(api.sent))
            await asyncio.sleep(2)  # anything sent twice would arrive by now
        finally:
            await stop(processes)
    texts = Counter((m.chat_id, m.text.split(":")[0]) for m in api.sent)
    broadcast = [chat for (chat, text), n in texts.items() if text == "Завтра встреча"]
    assert len(broadcast) == RECIPIENTS
    assert max(texts.values()) == 1, "nobody got anything twice"
    reminders = [key for key in texts if key[1] != "Завтра встреча"]
    assert len(reminders) == 300


async def test_kill_9_in_the_middle_of_a_broadcast(db) -> None:
    async with TelegramStandIn(token=TOKEN) as api:
        env = environment(db, api)
        env["TELEGRAM_RATE"] = "200"
        await residents(db, RECIPIENTS, first_chat=70_000)
        process = await bot(env, "run")
        try:
            await cli(env, "broadcast", "create", "--text", "ru=Новости кампании", "--yes")
            await until(lambda: len(api.sent) >= RECIPIENTS // 4)
            process.send_signal(signal.SIGKILL)
            await process.wait()
            at_kill = len(api.sent)
            process = await bot(env, "run")
            await until(lambda: len({m.chat_id for m in api.sent}) >= RECIPIENTS)
            await asyncio.sleep(1)
        finally:
            await stop([process])
    per_chat = Counter(m.chat_id for m in api.sent)
    duplicates = sum(n - 1 for n in per_chat.values())
    print(f"\nkill -9 after {at_kill} of {RECIPIENTS}: 0 lost, {duplicates} sent twice")
    assert len(per_chat) == RECIPIENTS, "every recipient received it"
    assert duplicates <= 50, "at most the messages in flight at the kill"
