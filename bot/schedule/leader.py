"""Which process runs the scheduler: the one holding a PostgreSQL advisory lock.

Several Khma processes may serve one PostgreSQL database (DESIGN.md, invariants), but
scheduled work must be decided by exactly one of them, or every broadcast would be
started as many times as there are processes. The lock is *session-level* and taken on a
connection dedicated to it, so a process that dies (or whose connection is cut) loses
the lock together with its connection, and a follower takes over on its next attempt.

SQLite is the single-process store: a process using it is always the leader.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import BigInteger, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.waiting import rest
from storage.db import Database, is_unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# sha256(b"khma scheduler")[:8] as a big-endian integer, shifted right by one bit so it
# fits PostgreSQL's signed bigint. Fixed, so every Khma process contends for the same
# lock. Advisory locks are per *database*, not per schema: two deployments sharing one
# database through different schemas need different keys (`lock_key_for`).
SCHEDULER_LOCK_KEY = 852138733466792613


def lock_key_for(schema: str | None) -> int:
    """The scheduler lock key for a deployment that lives in `schema` of a shared database.

    Advisory locks span the whole database, so deployments (or concurrent test runs) kept
    apart by schema would otherwise elect one scheduler among them all.
    """
    if not schema:
        return SCHEDULER_LOCK_KEY
    digest = hashlib.sha256(f"khma scheduler:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


_TRY_LOCK = text("SELECT pg_try_advisory_lock(:key)").bindparams(bindparam("key", type_=BigInteger))
_UNLOCK = text("SELECT pg_advisory_unlock(:key)").bindparams(bindparam("key", type_=BigInteger))
_PING = text("SELECT 1")

Callback = Callable[[], Awaitable[None]]


class Leadership:
    """Contends for the scheduler lock until stopped, and says who holds it.

    `on_gain` runs after the lock is taken and before `became_leader` is set, so waiting
    on the event means "the leader's work has started". `on_loss` runs before the lock is
    released, so a successor never overlaps with a predecessor that steps down in order.
    (A predecessor whose connection was cut may overlap for up to `retry` seconds before
    it notices; the scheduled work is idempotent for that reason.)
    """

    def __init__(self, db: Database, key: int = SCHEDULER_LOCK_KEY, retry: float = 5.0) -> None:
        if not 0 <= key < 2**63:
            raise ValueError("the advisory lock key must fit a signed 64-bit integer")
        if retry <= 0:
            raise ValueError("retry must be positive")
        self.db = db
        self.key = key
        self.retry = retry
        # A statement on the lock connection that takes this long means the database is
        # unreachable: better to step down than to believe we lead while we cannot know.
        self.timeout = max(retry, 5.0)
        self.is_leader = False
        self.became_leader = asyncio.Event()
        self.on_gain: Callback | None = None
        self.on_loss: Callback | None = None
        self._conn: AsyncConnection | None = None
        self._holding = False  # the PostgreSQL lock is held on self._conn
        self._complained = False
        self._connection_lost = False

    async def run(self, stop: asyncio.Event) -> None:
        """Try for the lock every `retry` seconds; while holding it, check it every `retry`.

        Returns once `stop` is set, having stepped down and released the lock.
        """
        try:
            while not stop.is_set():
                if self.is_leader:
                    if not await self._still_held():
                        # A connection lost in an outage is said once, by the database.
                        level = logging.INFO if self._connection_lost else logging.WARNING
                        log.log(level, "lost the scheduler lock: stepping down")
                        await self._step_down()
                        await self._release()
                elif await self._acquire():
                    await self._gain()
                await rest(stop, timeout=self.retry)
        finally:
            await self._step_down()
            await self._release()

    async def _gain(self) -> None:
        """Become leader; if the leader's work cannot start, give the lock to someone else."""
        self.is_leader = True
        try:
            if self.on_gain is not None:
                await self.on_gain()
        except Exception:
            log.exception("could not start as scheduler leader; releasing the lock")
            await self._step_down()
            await self._release()
            return
        self.became_leader.set()
        log.info("this process now runs the scheduler")

    async def _step_down(self) -> None:
        """Stop the leader's work (the lock, if any, is still held while `on_loss` runs)."""
        if not self.is_leader:
            return
        self.is_leader = False
        self.became_leader.clear()
        try:
            if self.on_loss is not None:
                await self.on_loss()
        except Exception:
            log.exception("stopping the scheduler after losing leadership failed")

    async def _acquire(self) -> bool:
        """One attempt at the lock; False (and a fresh connection next time) on any error."""
        if self.db.is_sqlite:
            return True
        try:
            if self._conn is None:
                conn = await self._bounded(self.db.engine.connect())
                self._conn = conn
                # Autocommit: the connection must not sit "idle in transaction" for the
                # leader's lifetime. The session-level lock does not need a transaction.
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            got = bool(await self._scalar(_TRY_LOCK, key=self.key))
        except Exception as error:
            if not self.db.noticed(error):
                self._complain("cannot reach PostgreSQL for the scheduler lock: %r", error)
            await self._release()
            return False
        self._complained = False
        self._holding = got
        return got

    async def _still_held(self) -> bool:
        """A session-level lock lives as long as its connection: check the connection."""
        if self.db.is_sqlite:
            return True
        try:
            await self._scalar(_PING)
        except Exception as error:
            # A lock connection that died in an outage may be found dead only after it:
            # that says nothing of the database now, so it is not reported as an outage.
            self._connection_lost = is_unavailable(error)
            if not self._connection_lost:
                log.warning("the scheduler lock connection failed: %r", error)
            return False
        return True

    async def _release(self) -> None:
        """Unlock, then discard the connection rather than return it to the pool.

        Discarding is what guarantees the lock is gone: a session lock on a pooled
        connection would outlive this object and block every other process.
        """
        conn, self._conn = self._conn, None
        holding, self._holding = self._holding, False
        if conn is None:
            return
        if holding:
            try:
                await self._bounded(conn.execute(_UNLOCK, {"key": self.key}))
            except Exception as error:
                log.debug("unlock failed (the connection is discarded anyway): %r", error)
        try:
            await conn.invalidate()
        except Exception as error:
            log.debug("discarding the lock connection failed: %r", error)
        try:
            await conn.close()
        except Exception as error:
            log.debug("closing the lock connection failed: %r", error)

    async def _scalar(self, statement: Any, **params: Any) -> Any:
        assert self._conn is not None
        result = await self._bounded(self._conn.execute(statement, params))
        return result.scalar()

    async def _bounded(self, work: Awaitable[T]) -> T:
        return await asyncio.wait_for(work, timeout=self.timeout)

    def _complain(self, message: str, *args: object) -> None:
        """Warn once per outage; the retries every few seconds would flood the log."""
        log.log(logging.DEBUG if self._complained else logging.WARNING, message, *args)
        self._complained = True
