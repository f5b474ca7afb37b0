"""A broadcast against a Bot API that pushes back: flood limits and residents who left."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from sqlalchemy import select

from bot.outreach import broadcasts
from bot.outreach.audience import Audience, summarise
from storage.models import Identity
from tests.fakes.telegram_api import TelegramStandIn
from tests.harness import TOKEN, quiet, running_khma
from tests.test_multiprocess import residents

COUNT = 60
BLOCKED = {60_003, 60_017, 60_041}


async def test_flood_limits_and_blocked_residents_lose_nothing(db) -> None:
    async with (
        TelegramStandIn(token=TOKEN) as api,
        running_khma(
            db, api, TELEGRAM_RATE="200", TELEGRAM_CHAT_RATE="50", QUIET_HOURS="off"
        ) as khma,
    ):
        await residents(db, COUNT, first_chat=60_000)
        for chat in BLOCKED:
            api.block(chat)
        api.rate_limit(5, retry_after=1)
        now = datetime.now(UTC)
        async with db.transaction() as session:
            created = await broadcasts.create(
                session, texts={"ru": "Собрание в четверг"}, audience=Audience(), now=now
            )
            await broadcasts.start_due(session, now, ("ru",), "Asia/Tbilisi")
        khma.dispatcher.wake()
        await quiet(db, api, timeout=60)
        async with db.transaction() as session:
            figures = await broadcasts.progress(session, created.id)
            unreachable = {
                int(i.address)
                for i in (
                    await session.execute(
                        select(Identity).where(Identity.unreachable_at.is_not(None))
                    )
                ).scalars()
            }
            next_time = await summarise(session, Audience(), {"ru": "…"}, now)
    received = Counter(m.chat_id for m in api.sent)
    assert api.too_many_requests > 0, "the flood limit was hit"
    assert set(received) == {60_000 + i for i in range(COUNT)} - BLOCKED
    assert max(received.values()) == 1
    assert unreachable == BLOCKED
    assert (figures.sent, figures.unreachable, figures.queued) == (COUNT - 3, 3, 0)
    assert next_time.total == COUNT - 3, "the blocked are left out of later audiences"
