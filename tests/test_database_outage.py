"""A database outage, through a TCP proxy between Khma and PostgreSQL: refused
connections, then a partition where packets vanish. Webhooks and /healthz answer 503
within seconds, the log says so once and once more on recovery, and nothing is lost:
what Viber sends again after the outage is stored, processed and answered."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from storage.db import Database
from tests.conftest import _drop_schema, _postgres_schema
from tests.fakes.tcp_proxy import TcpProxy
from tests.fakes.viber_api import ViberStandIn
from tests.harness import ViberUser, eventually, running_khma

TIMEOUT = 2.0  # DATABASE_TIMEOUT for this test: 503 within TIMEOUT plus a close's 2 s
PROMPT = 3 * TIMEOUT + 1


@pytest.fixture
async def proxied() -> AsyncIterator[tuple[Database, TcpProxy]]:
    """A migrated PostgreSQL schema, reached only through a proxy the test can cut."""
    schema = await _postgres_schema()
    if schema is None:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{proxy.port}/test"
    db = Database(url, schema=schema, timeout=TIMEOUT)
    await db.migrate()
    try:
        yield db, proxy
    finally:
        await db.close()
        await proxy.close()
        await _drop_schema(schema)


async def timed_post(viber: ViberStandIn, url: str, payload) -> tuple[int, float]:
    started = time.monotonic()
    status, _ = await viber.post_callback(url, payload)
    return status, time.monotonic() - started


async def healthz(port: int) -> tuple[int, dict, float]:
    started = time.monotonic()
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        return response.status, await response.json(), time.monotonic() - started


def loud(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("cut", ["refused", "partition"])
async def test_an_outage_answers_503_logs_once_and_loses_nothing(proxied, caplog, cut) -> None:
    db, proxy = proxied
    caplog.set_level(logging.INFO)
    async with ViberStandIn() as viber, running_khma(db, viber=viber) as khma:
        user = ViberUser(viber, db, khma, "outage-user-01=")
        await user.starts()
        assert await user.says("hello"), "answered before the outage"
        assert (await healthz(khma.port))[0] == 200
        caplog.clear()

        await (proxy.refuse() if cut == "refused" else proxy.partition())
        during = [viber.text(user.user_id, f"message {n} during the outage") for n in range(3)]
        answers = await asyncio.gather(
            *(timed_post(viber, user.webhook, p) for p in during),
            timed_post(viber, user.webhook, viber.text("outage-user-02=", "first words")),
        )
        for status, took in answers:
            assert status == 503, "Viber is told to send it again"
            assert took < PROMPT, f"answered in {took:.1f} s"
        status, body, took = await healthz(khma.port)
        assert status == 503 and body["status"] == "database unreachable"
        assert took < 2.0, f"/healthz took {took:.1f} s"
        # Engine, dispatcher, scheduler and the webhooks keep trying for a while...
        for _ in range(3):
            await viber.post_callback(user.webhook, during[0])
            await asyncio.sleep(1.0)
        # ...and the log has said it once.
        assert [line for line in loud(caplog) if "unavailable" in line] == [
            line for line in loud(caplog)
        ], loud(caplog)
        assert len(loud(caplog)) == 1, loud(caplog)

        await proxy.restore()
        await eventually(lambda: db.availability.up, timeout=15)
        await eventually(lambda: len(loud(caplog)) == 2, timeout=5)
        assert "reachable again" in loud(caplog)[1]
        assert (await healthz(khma.port))[0] == 200

        # Viber sends again what was answered 503: all of it is stored and answered.
        seen = len(viber.sent_to(user.user_id))
        for payload in during:
            status, _ = await viber.post_callback(user.webhook, payload)
            assert status == 200
        await eventually(lambda: len(viber.sent_to(user.user_id)) >= seen + 3, timeout=15)
        assert len(loud(caplog)) == 2, loud(caplog)
