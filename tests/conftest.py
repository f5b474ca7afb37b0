"""Shared test setup: no connection leaves 127.0.0.1, and storage runs on both databases."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from storage.db import Database

PG_URL = os.environ.get("KHMA_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True, scope="session")
def _loopback_only() -> Iterator[None]:
    """Fail any test that tries to reach beyond this machine's loopback."""
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def check(sock: socket.socket, address: object) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0] if isinstance(address, tuple) else address
            if host not in LOOPBACK:
                raise AssertionError(f"test tried to connect to {host!r}: tests stay on loopback")

    def guarded_connect(sock: socket.socket, address: object) -> None:
        check(sock, address)
        return original_connect(sock, address)

    def guarded_connect_ex(sock: socket.socket, address: object) -> int:
        check(sock, address)
        return original_connect_ex(sock, address)

    socket.socket.connect = guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = guarded_connect_ex  # type: ignore[method-assign]
    yield
    socket.socket.connect = original_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = original_connect_ex  # type: ignore[method-assign]


async def _postgres_schema() -> str | None:
    """A fresh schema on the local PostgreSQL, or None when there is none to use."""
    import asyncpg

    schema = "t_" + uuid.uuid4().hex[:12]
    try:
        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test", timeout=5)
    except (OSError, asyncpg.PostgresError) as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI but unavailable: {error}")
        return None
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    return schema


async def _drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test", timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated, empty database: every storage test runs once per backend."""
    async with empty_database(request.param, tmp_path) as database:
        await database.migrate()
        yield database


@asynccontextmanager
async def empty_database(kind: str, tmp_path: Path) -> AsyncIterator[Database]:
    """A database nobody has migrated yet: a SQLite file or a fresh PostgreSQL schema."""
    if kind == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'khma.db'}")
        try:
            yield database
        finally:
            await database.close()
        return
    schema = await _postgres_schema()
    if schema is None:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    database = Database(PG_URL, schema=schema)
    try:
        yield database
    finally:
        await database.close()
        await _drop_schema(schema)
