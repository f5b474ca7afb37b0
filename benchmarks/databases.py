"""A fresh, migrated database for one benchmark run: a temporary SQLite file or a new
PostgreSQL schema, dropped afterwards, so runs never see each other's rows."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.engine import make_url

from storage.db import Database

PG_URL = os.environ.get("KHMA_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


async def run_on_postgres(url: str, statement: str) -> None:
    """One statement on its own connection (creating or dropping a schema)."""
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(plain, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@asynccontextmanager
async def fresh_database(kind: str, pg_url: str = PG_URL) -> AsyncIterator[Database]:
    """A migrated, empty database of `kind` ("sqlite" or "postgresql")."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="khma-bench-") as folder:
            db = Database(f"sqlite+aiosqlite:///{folder}/khma.db")
            try:
                await db.migrate()
                yield db
            finally:
                await db.close()
        return
    schema = "bench_" + uuid.uuid4().hex[:12]
    await run_on_postgres(pg_url, f'CREATE SCHEMA "{schema}"')
    db = Database(pg_url, schema=schema)
    try:
        await db.migrate()
        yield db
    finally:
        await db.close()
        await run_on_postgres(pg_url, f'DROP SCHEMA "{schema}" CASCADE')
