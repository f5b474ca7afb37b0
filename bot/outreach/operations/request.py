"""The caller's side of a staff operation: who asks, when, within which transaction.

A `Request` is what every front end builds before calling an operation: the chat
from the staff member's identity in the turn, the CLI from `--as` (or the
operator at the server's shell, who is an admin: they hold the database anyway),
the web console from its session.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from bot.outreach.operations.errors import NotAllowed, NotFound
from bot.vocabulary.roles import can
from flows.content import Content
from storage.models import Base

Row = TypeVar("Row", bound=Base)


@dataclass(frozen=True)
class Actor:
    """Who asks: their role (None for a resident), a name for the record, and where to
    tell them the result of work that finishes later (their app, in their language)."""

    role: str | None
    name: str
    channel: str | None = None
    address: str | None = None
    language: str = "en"


# Whoever runs `python -m bot …` on the server: they could change the database directly.
OPERATOR = Actor(role="admin", name="cli")


@dataclass
class Request:
    session: AsyncSession
    settings: Settings
    content: Content
    actor: Actor
    now: datetime
    # Set when the request planned something the scheduler or the job worker should see
    # after the commit (a broadcast due now, new reminders, a queued job).
    schedule_changed: bool = False

    def permit(self, operation: str) -> None:
        """Refuse unless the actor's role may run `operation` (the one table, roles.py)."""
        if not can(self.actor.role, operation):
            raise NotAllowed(operation, self.actor.role)

    async def find(self, model: type[Row], key: int, what: str) -> Row:
        """The row to read, unlocked, or NotFound."""
        found = await self.session.get(model, key)
        if found is None:
            raise NotFound(what, str(key))
        return found

    async def locked(self, model: type[Row], key: int, what: str) -> Row:
        """The row, locked until the commit (SELECT … FOR UPDATE on PostgreSQL; SQLite has
        one writer at a time anyway), or NotFound."""
        found = await self.session.get(model, key, with_for_update=True, populate_existing=True)
        if found is None:
            raise NotFound(what, str(key))
        return found
