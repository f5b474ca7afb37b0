"""Connecting to SQLite (the embedded default) or PostgreSQL, migrating either, and
noticing when the database is gone.

Every connection attempt and every statement is bounded (`timeout`), so with the
database unreachable or partitioned a caller learns it within seconds instead of
hanging; a dead connection is discarded (SQLAlchemy invalidates the pool on a
disconnect) and the next transaction opens a fresh one, so no ping precedes each
checkout. Errors never carry bound parameters (`hide_parameters`): those are residents'
names and words. An outage is logged once when it starts and once when it ends, by the
`Availability` every user of the engine shares, not by each request or loop round.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import BigInteger, bindparam, event, text
from sqlalchemy.engine import Connection, ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from storage.failures import chain

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
DEFAULT_TIMEOUT = 5.0
log = logging.getLogger(__name__)

_MIGRATION_LOCK = text("SELECT pg_advisory_xact_lock(:key)").bindparams(
    bindparam("key", type_=BigInteger)
)
_REVISION = text("SELECT version_num FROM alembic_version")


def async_url(url: str) -> str:
    """Accept the plain URLs people paste (postgres://, sqlite:///) and pick async drivers."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    parsed = make_url(url)
    driver = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}.get(
        parsed.drivername, parsed.drivername
    )
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def printable_url(url: str) -> str:
    """The URL fit for a log line or an error message: no password."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_pragmas(busy_ms: int):
    def apply(dbapi_connection: Any, _record: Any) -> None:
        """WAL and a bounded busy timeout let the web server, dispatcher and CLI share a file."""
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.close()

    return apply


def is_unavailable(error: BaseException | None) -> bool:
    """Whether `error` means the database could not be reached or did not answer in time
    (as opposed to a statement it refused): callers answer 503 or wait, and stay quiet,
    since `Availability` has already said so once."""
    return any(_unreachable(current) for current in chain(error))


def _unreachable(error: BaseException) -> bool:
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, OSError | TimeoutError | ConnectionError):
        return True
    return type(error).__module__.startswith("asyncpg") and type(error).__name__ in (
        "ConnectionDoesNotExistError",
        "InterfaceError",
        "CannotConnectNowError",
        "ConnectionFailureError",
        "TooManyConnectionsError",
    )


def is_outage(error: BaseException | None) -> bool:
    """Whether `error` (or one it came from) was a database outage, already logged once by
    the `Database` that saw it: web handlers answer 503 and loops wait, without a word."""
    return any(getattr(current, "database_outage", False) for current in chain(error))


def _no_answer(error: BaseException | None) -> bool:
    """A new connection refused or timed out, or a statement with no answer in time: the
    database is out of reach now. (A pooled connection found closed is not: it may have
    died in an outage that is over, and the next attempt opens a fresh one.)"""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, OSError | TimeoutError):
            return True
        if type(error).__name__ in ("CannotConnectNowError", "TooManyConnectionsError"):
            return True
        error = error.__cause__
        seen += 1
    return False


class Availability:
    """Whether the database answered last time; one log line when that changes.

    Shared by the web handlers, the engine, the dispatcher and the scheduler through
    their one `Database`, so an outage is one WARNING however many of them notice it.
    """

    def __init__(self, url: str) -> None:
        self.url = printable_url(url)
        self.down_since: float | None = None

    @property
    def up(self) -> bool:
        return self.down_since is None

    def failed(self, error: BaseException) -> None:
        if self.down_since is not None:
            return
        self.down_since = time.monotonic()
        log.warning(
            "database %s unavailable (%s): webhooks answer 503 and work waits until it is back",
            self.url,
            type(error).__name__,
        )

    def answered(self) -> None:
        if self.down_since is None:
            return
        lasted = time.monotonic() - self.down_since
        self.down_since = None
        log.warning("database %s reachable again after %.1f s", self.url, lasted)


@dataclass(frozen=True)
class SchemaState:
    """Where the database's schema stands against this code's migrations."""

    revision: str | None
    head: str

    @property
    def at_head(self) -> bool:
        return self.revision == self.head

    def problem(self) -> str | None:
        """None when at head, else what is wrong and what to do, in one line."""
        if self.at_head:
            return None
        if self.revision is None:
            return "the database is not migrated: run `python -m bot migrate`"
        if _is_ancestor(self.revision, self.head):
            return (
                f"the database schema is behind ({self.revision}, expected {self.head}): "
                "run `python -m bot migrate`"
            )
        return (
            f"the database schema ({self.revision}) is newer than this code ({self.head}): "
            "deploy the matching version"
        )


def _is_ancestor(revision: str, head: str) -> bool:
    script = ScriptDirectory.from_config(alembic_config())
    return any(r.revision == revision for r in script.iterate_revisions(head, "base"))


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def migration_lock_key(schema: str | None) -> int:
    """The advisory lock two starting processes take to migrate one after the other;
    per schema, as advisory locks span the whole database."""
    digest = hashlib.sha256(f"khma migrate:{schema or ''}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class Database:
    """The engine and session factory; one per process, passed to whoever needs it."""

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        schema: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.url = async_url(url)
        self.schema = schema
        self.timeout = timeout
        parsed = make_url(self.url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite and parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.availability = Availability(self.url)
        self.engine: AsyncEngine = create_async_engine(
            self.url, **self._options(echo, statement_timeout=timeout)
        )
        self._watch(self.engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    def _options(self, echo: bool, *, statement_timeout: float | None) -> dict[str, Any]:
        # Bound parameters are residents' names and words: never in an error's text.
        options: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        if self.is_sqlite:
            options["connect_args"] = {"timeout": self.timeout}
            return options
        connect_args: dict[str, Any] = {"timeout": self.timeout}
        if statement_timeout is not None:
            connect_args["command_timeout"] = statement_timeout
        if self.schema:
            # Tests give each run its own schema on the shared `test` database.
            connect_args["server_settings"] = {"search_path": self.schema}
        options["connect_args"] = connect_args
        if statement_timeout is not None:
            options.update(pool_size=10, max_overflow=10, pool_timeout=self.timeout)
        else:
            options["poolclass"] = NullPool
        return options

    def _watch(self, engine: AsyncEngine) -> None:
        sync = engine.sync_engine
        if self.is_sqlite:
            event.listen(sync, "connect", _sqlite_pragmas(int(self.timeout * 1000)))
        event.listen(sync, "handle_error", self._on_error)
        event.listen(sync, "after_cursor_execute", self._on_answer)

    def _on_error(self, context: ExceptionContext) -> None:
        """A timeout or a broken socket: discard the connection (the caller notes it)."""
        error = context.original_exception
        if not context.is_disconnect and is_unavailable(error) and not self.is_sqlite:
            # asyncpg's command_timeout and socket errors leave the connection unusable;
            # marking them a disconnect makes SQLAlchemy drop it rather than pool it.
            context.is_disconnect = True

    def _on_answer(self, *_args: Any) -> None:
        if self.availability.down_since is not None:
            self.availability.answered()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: committed if the block finishes, rolled back if it raises."""
        try:
            async with self.sessions() as session, session.begin():
                yield session
        except Exception as error:
            self.noticed(error)
            raise

    def noticed(self, error: BaseException) -> bool:
        """Whether `error` means the database is unavailable; if so the outage is noted
        (and logged, once). Loops and handlers that get True stay quiet about it."""
        if is_unavailable(error):
            if _no_answer(error):
                self.availability.failed(error)
            with contextlib.suppress(AttributeError, TypeError):
                error.database_outage = True  # type: ignore[union-attr]
            return True
        return False

    # --- the schema -------------------------------------------------------------------

    async def schema_state(self) -> SchemaState:
        """The schema's Alembic revision against this code's head (raises if unreachable)."""
        try:
            async with self.engine.connect() as connection:
                try:
                    revision = (await connection.execute(_REVISION)).scalar()
                except (OperationalError, ProgrammingError) as error:
                    if is_unavailable(error):
                        raise
                    revision = None  # no alembic_version table: never migrated
        except Exception as error:
            self.noticed(error)
            raise
        return SchemaState(revision, head_revision())

    async def migrate(self) -> None:
        """Bring the schema to head. On PostgreSQL under an advisory lock, so processes
        starting together migrate one after the other (the second finds nothing to do);
        on its own unpooled connection without a statement timeout, since a migration
        may take longer than any request should."""
        engine = create_async_engine(self.url, **self._options(False, statement_timeout=None))
        self._watch(engine)
        try:
            async with engine.begin() as connection:
                if not self.is_sqlite:
                    await connection.execute(
                        _MIGRATION_LOCK, {"key": migration_lock_key(self.schema)}
                    )
                await connection.run_sync(_upgrade)
        except Exception as error:
            self.noticed(error)
            raise
        finally:
            await engine.dispose()

    async def close(self) -> None:
        await self.engine.dispose()

    async def answers_within(self, seconds: float) -> SchemaState:
        """The schema state, or TimeoutError when the database takes over `seconds`."""
        return await asyncio.wait_for(self.schema_state(), timeout=seconds)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
