"""Heavy staff work, run outside residents' turns: exports, telling everyone registered
that an event moved or was cancelled, campaign updates.

A staff operation queues a `Job` row in its own transaction and returns at once, so the
staff member hears "started" and no resident waits behind the work. The `JobWorker`
(started in bot/app.py, one per process) claims due jobs (`FOR UPDATE SKIP LOCKED` on
PostgreSQL, so two processes never take the same one), runs them, and tells the staff
member who asked the result as an outbox notice in their language. A claim is a lease:
a job whose process died is taken again once the lease has run out, so a restart re-runs
unfinished work. What a job queues for residents carries a dedupe key and is committed
together with the job's "done", so a rerun tells nobody twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from bot.delivery.dispatch import NOTICE_PRIORITY
from bot.outreach import campaigns, events
from bot.outreach.export import ExportFilter, write_export
from bot.vocabulary.i18n import Translator
from bot.vocabulary.messages import FILE_LIMIT, Reply
from bot.waiting import rest
from bot.web.export_links import ExportLinks
from flows.content import Content
from flows.staff import EXPORT_READY, EXPORT_TOO_LARGE, JOB_FAILED, UPDATE_SENT
from flows.staff_events import CANCELLED, MOVED
from storage import queries
from storage.db import Database, is_outage
from storage.models import Event, Job, OutboxMessage, utcnow

if TYPE_CHECKING:
    from bot.outreach.operations.request import Actor

log = logging.getLogger(__name__)

# How long a claimed job is reserved; one that runs longer may be taken again.
LEASE = timedelta(minutes=10)
MOST_ATTEMPTS = 5
POLL_SECONDS = 5.0


async def queue(
    session: AsyncSession, kind: str, args: dict[str, Any], actor: Actor, now: datetime
) -> Job:
    """Queue a job in the caller's transaction: it exists only if the change it follows
    is committed. The actor's app and language are kept to tell them the result."""
    job = Job(
        kind=kind,
        args=args,
        status="pending",
        attempts=0,
        run_after=now,
        notify_channel=actor.channel,
        notify_address=actor.address,
        language=actor.language,
        created_by=actor.name[:128],
        created_at=now,
    )
    session.add(job)
    await session.flush()
    return job


@dataclass(frozen=True)
class Done:
    """What a job achieved, stored on the row, and what the staff member is told."""

    result: dict[str, Any]
    notice: Callable[[Translator], Reply] | None


@dataclass(frozen=True)
class _Claim:
    """A claimed job's fields, read before its transaction closed."""

    id: int
    kind: str
    args: dict[str, Any]
    attempts: int


class JobWorker:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        content: Content,
        clock: Callable[[], datetime] = utcnow,
        on_done: Callable[[], None] = lambda: None,
    ) -> None:
        self.db, self.settings, self.content, self.clock = db, settings, content, clock
        self.on_done = on_done  # wake the dispatcher: a notice is waiting
        self.wakeup = asyncio.Event()
        self._handlers: dict[str, Callable[[_Claim, datetime], Awaitable[Done]]] = {
            "export": self._export,
            "event_notice": self._event_notice,
            "campaign_update": self._campaign_update,
        }

    def wake(self) -> None:
        self.wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                while not stop.is_set() and await self.run_one():
                    pass
            except Exception as error:
                if not (is_outage(error) or self.db.noticed(error)):  # logged once, by the db
                    log.exception("the job worker failed; retrying shortly")
            self.wakeup.clear()
            await rest(stop, self.wakeup, timeout=POLL_SECONDS)

    async def run_one(self) -> bool:
        """Claim one due job and run it; False when none is due."""
        now = self.clock()
        async with self.db.transaction() as session:
            job = await session.scalar(
                select(Job)
                .where(Job.status.in_(("pending", "running")), Job.run_after <= now)
                .order_by(Job.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if job is None:
                return False
            job.status = "running"
            job.attempts += 1
            job.run_after = now + LEASE
            claimed = (job.id, job.attempts)
            detached = _Claim(job.id, job.kind, dict(job.args), job.attempts)
        try:
            handler = self._handlers[detached.kind]
            await handler(detached, now)
        except Exception as error:
            log.exception("job %s (%s) failed", detached.id, detached.kind)
            await self._failed(claimed, type(error).__name__)
        self.on_done()
        return True

    # --- finishing -----------------------------------------------------------------

    async def _finish(self, session: AsyncSession, job_id: int, attempt: int, done: Done) -> bool:
        """Mark the job done and queue the staff member's notice, in the caller's
        transaction; False if the claim was lost (the lease ran out and another took it)."""
        job = await session.get(Job, job_id, with_for_update=True, populate_existing=True)
        if job is None or job.status != "running" or job.attempts != attempt:
            return False
        job.status = "done"
        job.result = done.result
        job.finished_at = self.clock()
        if done.notice is not None:
            await self._tell(session, job, done.notice)
        return True

    async def _failed(self, claimed: tuple[int, int], error: str) -> None:
        job_id, attempt = claimed
        async with self.db.transaction() as session:
            job = await session.get(Job, job_id, with_for_update=True, populate_existing=True)
            if job is None or job.status != "running" or job.attempts != attempt:
                return
            job.error = error[:128]
            if job.attempts >= MOST_ATTEMPTS:
                job.status = "failed"
                job.finished_at = self.clock()
                await self._tell(session, job, lambda t: Reply(t(JOB_FAILED)))
            else:
                job.status = "pending"
                job.run_after = self.clock() + timedelta(seconds=2**job.attempts)

    async def _tell(
        self, session: AsyncSession, job: Job, render: Callable[[Translator], Reply]
    ) -> None:
        if not job.notify_channel or not job.notify_address:
            return
        identity = await queries.identity_for(session, job.notify_channel, job.notify_address)
        now = self.clock()
        reply = render(Translator(job.language or "en", self.settings.tz_name))
        session.add(
            OutboxMessage(
                channel=job.notify_channel,
                address=job.notify_address,
                identity_id=identity.id if identity else None,
                kind="notice",
                priority=NOTICE_PRIORITY,
                payload=reply.to_json(),
                next_attempt_at=now,
                created_at=now,
                dedupe_key=f"job:{job.id}:{job.status}",
            )
        )

    # --- the kinds of work -------------------------------------------------------------

    async def _export(self, job: _Claim, now: datetime) -> Done:
        """Write the CSV under an unguessable name: Telegram uploads it, Viber sends a
        short-lived link to it (bot/web/export_links.py)."""
        path = ExportLinks.from_settings(self.settings).new_path(now)
        count = await write_export(
            self.db, ExportFilter(), self.content, "csv", path, tz_name=self.settings.tz_name
        )
        size = path.stat().st_size
        if size > FILE_LIMIT:
            path.unlink(missing_ok=True)
            done = Done(
                {"count": count, "size": size},
                lambda t: Reply(t(EXPORT_TOO_LARGE, count=count)),
            )
        else:
            done = Done(
                {"count": count, "size": size, "document": str(path)},
                lambda t: Reply(t(EXPORT_READY, count=count), document=str(path)),
            )
        async with self.db.transaction() as session:
            if not await self._finish(session, job.id, job.attempts, done):
                path.unlink(missing_ok=True)
        return done

    async def _event_notice(self, job: _Claim, now: datetime) -> Done:
        args = job.args
        s = self.settings
        async with self.db.transaction() as session:
            event = await session.get(Event, args["event_id"], with_for_update=True)
            if event is None or event.version != args["version"]:
                # Changed again since: that change's own job tells everyone going.
                done = Done({"told": 0, "superseded": True}, None)
            else:
                told = await events.announce_change(
                    session,
                    event,
                    cancelled=args["cancelled"],
                    old_start=datetime.fromisoformat(args["old_start"]),
                    now=now,
                    fallback=s.language_fallback,
                    tz_name=s.tz_name,
                )
                if args["cancelled"]:
                    notice = lambda t, n=told, i=event.id: Reply(t(CANCELLED, id=i, n=n))  # noqa: E731
                else:
                    when, event_id = event.starts_at, event.id
                    notice = lambda t, n=told: Reply(  # noqa: E731
                        t(MOVED, id=event_id, when=t.datetime(when), n=n)
                    )
                done = Done({"told": told}, notice)
            await self._finish(session, job.id, job.attempts, done)
        return done

    async def _campaign_update(self, job: _Claim, now: datetime) -> Done:
        args = job.args
        s = self.settings
        async with self.db.transaction() as session:
            queued = await campaigns.post_update(
                session,
                args["code"],
                dict(args["texts"]),
                now=now,
                fallback=s.language_fallback,
                tz_name=s.tz_name,
                update_id=args["update_id"],
            )
            done = Done({"queued": queued}, lambda t: Reply(t(UPDATE_SENT, n=queued)))
            await self._finish(session, job.id, job.attempts, done)
        return done
