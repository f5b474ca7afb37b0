"""The dispatcher: sends outbox rows, replies first, and records what happened.

Rows are claimed (status `sending` with a lease) before they are sent, so a
second process skips them and a crashed process's rows come back when the lease
ends: a crash loses nothing and repeats at most the messages in flight. One
resident's messages go out in order: a row waits while an older row to the same
address is still unsent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm import aliased

from bot.channels.base import Channel, Held, Rejected, RetryLater, Unreachable
from bot.messages import Reply
from bot.waiting import rest
from storage import queries
from storage.db import Database
from storage.models import OutboxMessage, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DispatchPolicy:
    batch: int = 50
    concurrency: int = 16
    lease: timedelta = timedelta(seconds=60)
    max_attempts: int = 8
    first_backoff: float = 1.0
    max_backoff: float = 300.0
    idle_wait: float = 1.0


@dataclass(frozen=True)
class Claimed:
    id: int
    channel: str
    address: str
    payload: dict
    attempts: int


class Dispatcher:
    def __init__(
        self,
        db: Database,
        channels: Mapping[str, Channel],
        *,
        policy: DispatchPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.channels = channels
        self.policy = policy or DispatchPolicy()
        self.clock = clock
        self.ready = asyncio.Event()

    def wake(self) -> None:
        self.ready.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                sent = await self.dispatch_once()
            except Exception:
                log.exception("dispatching failed; retrying shortly")
                sent = 0
            if sent:
                continue
            self.ready.clear()
            await rest(stop, self.ready, timeout=self.policy.idle_wait)

    async def dispatch_once(self) -> int:
        claimed = await self._claim()
        if not claimed:
            return 0
        limit = asyncio.Semaphore(self.policy.concurrency)

        async def deliver(row: Claimed) -> None:
            async with limit:
                await self._deliver(row)

        await asyncio.gather(*(deliver(row) for row in claimed))
        return len(claimed)

    async def _claim(self) -> list[Claimed]:
        now = self.clock()
        earlier = aliased(OutboxMessage)
        waiting_behind = exists().where(
            earlier.channel == OutboxMessage.channel,
            earlier.address == OutboxMessage.address,
            earlier.status.in_(("pending", "sending")),
            earlier.id < OutboxMessage.id,
        )
        due = or_(
            (OutboxMessage.status == "pending") & (OutboxMessage.next_attempt_at <= now),
            (OutboxMessage.status == "sending") & (OutboxMessage.claimed_until < now),
        )
        query = (
            select(OutboxMessage)
            .where(due, OutboxMessage.channel.in_(list(self.channels)), ~waiting_behind)
            .order_by(OutboxMessage.priority, OutboxMessage.id)
            .limit(self.policy.batch)
            .with_for_update(skip_locked=True)
        )
        async with self.db.transaction() as session:
            rows = list((await session.execute(query)).scalars())
            for row in rows:
                row.status = "sending"
                row.claimed_until = now + self.policy.lease
                row.attempts += 1
            return [Claimed(r.id, r.channel, r.address, r.payload, r.attempts) for r in rows]

    async def _deliver(self, row: Claimed) -> None:
        channel = self.channels[row.channel]
        try:
            message_id = await channel.send(row.address, Reply.from_json(row.payload))
        except RetryLater as error:
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
                await self._finish(row, status="failed", error=repr(error))
            else:
                backoff = min(
                    self.policy.first_backoff * 2 ** (row.attempts - 1), self.policy.max_backoff
                )
                await self._reschedule(row, backoff, repr(error), count_attempt=True)
        else:
            await self._finish(row, status="sent", message_id=message_id)

    async def _finish(
        self, row: Claimed, *, status: str, message_id: str | None = None, error: str | None = None
    ) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == row.id)
                .values(
                    status=status,
                    claimed_until=None,
                    sent_at=self.clock() if status == "sent" else None,
                    platform_message_id=message_id,
                    last_error=error,
                )
            )
        if status == "sent":
            self.ready.set()

    async def _reschedule(
        self, row: Claimed, after: float, error: str, count_attempt: bool
    ) -> None:
        attempts = row.attempts if count_attempt else row.attempts - 1
        async with self.db.transaction() as session:
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == row.id)
                .values(
                    status="pending",
                    claimed_until=None,
                    attempts=attempts,
                    next_attempt_at=self.clock() + timedelta(seconds=after),
                    last_error=error[:2000],
                )
            )

    async def _unreachable(self, row: Claimed, error: str) -> None:
        """Mark the resident unreachable and stop everything still queued for them."""
        now = self.clock()
        async with self.db.transaction() as session:
            await queries.mark_unreachable(session, row.channel, row.address, now)
            await session.execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.channel == row.channel,
                    OutboxMessage.address == row.address,
                    or_(OutboxMessage.id == row.id, OutboxMessage.status == "pending"),
                )
                .values(status="unreachable", claimed_until=None, last_error=error[:2000])
            )
