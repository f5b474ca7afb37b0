"""`python -m bot inbox failed | retry ID… | retry --all`: inbound events that failed for good.

An event whose processing failed for a reason a retry would not cure (a bug, data
the code did not expect) is kept in the inbox as `failed`, with the class of the
error, and the resident was told their message is saved. Once the cause is fixed,
staff queue it again here; the running bot processes it in order, as if it had
just arrived. Transient failures (a lost connection, a deadlock) never get here:
the engine retries them itself.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from storage.db import Database
from storage.models import Identity, InboxEvent, Resident

__all__ = ["FailedEvent", "add_parser", "failed_events", "requeue", "run"]


@dataclass(frozen=True)
class FailedEvent:
    """One failed event as staff see it: no message content, no platform id."""

    id: int
    channel: str
    resident: str | None  # pseudonym, when the resident is known
    received_at: datetime
    attempts: int
    error: str | None


def add_parser(sub: argparse._SubParsersAction) -> None:
    inbox = sub.add_parser("inbox", help="inbound events that failed").add_subparsers(
        dest="action", required=True
    )
    inbox.add_parser("failed", help="list failed events with their error class")
    retry = inbox.add_parser("retry", help="queue failed events for processing again")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", type=int, default=[], metavar="ID")
    which.add_argument("--all", action="store_true", help="every failed event")


async def failed_events(session: AsyncSession) -> list[FailedEvent]:
    rows = await session.execute(
        select(InboxEvent, Resident.pseudonym)
        .outerjoin(
            Identity,
            (Identity.channel == InboxEvent.channel) & (Identity.address == InboxEvent.address),
        )
        .outerjoin(Resident, Resident.id == Identity.resident_id)
        .where(InboxEvent.status == "failed")
        .order_by(InboxEvent.id)
    )
    return [
        FailedEvent(e.id, e.channel, pseudonym, e.received_at, e.attempts, e.error)
        for e, pseudonym in rows
    ]


async def requeue(session: AsyncSession, ids: list[int] | None) -> list[int]:
    """Make failed events (these `ids`, or all when None) pending again; the ids requeued."""
    query = update(InboxEvent).where(InboxEvent.status == "failed")
    if ids is not None:
        query = query.where(InboxEvent.id.in_(ids))
    result = await session.execute(
        query.values(status="pending", error=None).returning(InboxEvent.id)
    )
    return sorted(result.scalars())


async def run(args: argparse.Namespace, settings: Settings) -> None:
    db = Database(settings.database_url, schema=settings.database_schema)
    try:
        async with db.transaction() as session:
            if args.action == "failed":
                print(_table(await failed_events(session)))
                return
            ids = None if args.all else list(args.ids)
            done = await requeue(session, ids)
    finally:
        await db.close()
    missing = sorted(set(ids or []) - set(done))
    print(f"{len(done)} event(s) queued again; the running bot processes them in order")
    if missing:
        raise SystemExit(f"not failed (or not found): {', '.join(map(str, missing))}")


def _table(events: list[FailedEvent]) -> str:
    if not events:
        return "no failed events"
    lines = [f"{'id':>8}  {'channel':<8}  {'resident':<12}  {'received (UTC)':<16}  tries  error"]
    for e in events:
        lines.append(
            f"{e.id:>8}  {e.channel:<8}  {e.resident or '-':<12}  "
            f"{e.received_at:%Y-%m-%d %H:%M}  {e.attempts:>5}  {e.error or '-'}"
        )
    return "\n".join(lines)
