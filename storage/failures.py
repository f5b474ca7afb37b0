"""What went wrong, said without personal data, and whether trying again can help.

A database error's message carries the statement's bound parameters (names,
report texts, platform ids), and an error raised while handling a message may
quote the message. What is logged at info level and above, and what is stored
for staff (`inbox.error`, `outbox.last_error`), is therefore built from exception
classes, SQLSTATE codes and code locations only, never from an error's text.

Transient errors are those a later try can get past without anyone changing
anything: a lost or refused connection, a serialization failure or deadlock, a
lock or statement timeout, SQLite's "database is locked". The classification
looks at the error and every error it wraps (SQLAlchemy's `orig`, `__cause__`,
`__context__`), by type and SQLSTATE, never by parsing messages (except SQLite,
whose driver says "locked" or "busy" only in the message).
"""

from __future__ import annotations

import sqlite3
import traceback
from collections.abc import Iterator

from sqlalchemy import exc

__all__ = ["chain", "describe", "is_transient", "trace"]

# Serialization failure, deadlock, lock not available, query cancelled (statement
# timeout), server shutting down / crashed / cannot connect now, too many connections.
_TRANSIENT_SQLSTATES = frozenset(
    {"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "53300", "53400"}
)
_CONNECTION_SQLSTATE_CLASS = "08"  # connection exceptions

try:  # PostgreSQL's driver: installed wherever PostgreSQL is used
    from asyncpg.exceptions import InterfaceError as _PgInterfaceError
    from asyncpg.exceptions import PostgresConnectionError as _PgConnectionError

    _DRIVER_TRANSIENT: tuple[type[BaseException], ...] = (_PgConnectionError, _PgInterfaceError)
except ImportError:  # pragma: no cover
    _DRIVER_TRANSIENT = ()


def chain(error: BaseException | None) -> Iterator[BaseException]:
    """The error and everything it wraps (SQLAlchemy's `orig`, `__cause__`, `__context__`),
    each once: every classification of an error looks through the same wrappers."""
    seen: set[int] = set()
    todo = [] if error is None else [error]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for inner in (getattr(current, "orig", None), current.__cause__, current.__context__):
            if isinstance(inner, BaseException):
                todo.append(inner)


def _sqlstate(error: BaseException) -> str | None:
    for current in chain(error):
        code = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(code, str) and code:
            return code
    return None


def is_transient(error: BaseException) -> bool:
    """Whether trying the same work again later may well succeed."""
    for current in chain(error):
        if isinstance(current, exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, exc.TimeoutError | exc.DisconnectionError):
            return True  # no connection from the pool in time; a connection went away
        if isinstance(current, (TimeoutError, ConnectionError, *_DRIVER_TRANSIENT)):
            return True
        if isinstance(current, sqlite3.OperationalError):
            text = str(current).lower()
            if "locked" in text or "busy" in text:
                return True
    code = _sqlstate(error)
    return code is not None and (
        code in _TRANSIENT_SQLSTATES or code.startswith(_CONNECTION_SQLSTATE_CLASS)
    )


def describe(error: BaseException) -> str:
    """The error's class, its SQLSTATE and the driver's error class: never its message.

    For example `IntegrityError [23505] UniqueViolationError`.
    """
    words = [type(error).__name__]
    code = _sqlstate(error)
    if code:
        words.append(f"[{code}]")
    innermost = error
    for _ in range(8):  # follow what it wraps to the driver's own error
        inner = getattr(innermost, "orig", None) or innermost.__cause__
        if not isinstance(inner, BaseException) or inner is innermost:
            break
        innermost = inner
    if innermost is not error and type(innermost).__name__ != words[0]:
        words.append(type(innermost).__name__)
    return " ".join(words)


def trace(error: BaseException) -> str:
    """Where the error was raised (files, lines, functions) and what it is, without its text:
    enough to find the bug, nothing of the resident's."""
    frames = traceback.format_list(traceback.extract_tb(error.__traceback__))
    return "".join(frames) + describe(error)
