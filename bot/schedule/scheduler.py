"""When scheduled work runs: APScheduler decides *when*, the database says *what*.

Broadcasts, event reminders and follow-ups live as rows. `work(now)` turns whatever is
due at `now` into outbox rows (idempotently), and `upcoming(now)` lists the moments when
something next becomes due. APScheduler holds nothing but one in-memory date job per such
moment plus a periodic resync, so a restart, a second process or the CLI can never leave
it with a stale or duplicated plan: every job is derived again from the database when
this process becomes leader and every `resync_every` seconds after.

Only the process holding the scheduler lock (`bot.leader.Leadership`) runs APScheduler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.schedule.leader import Leadership
from storage.db import is_outage

log = logging.getLogger(__name__)

# Jobs only trigger `work`, which looks at the database and catches up on anything
# overdue, so a late job is always worth running. APScheduler's default of one second
# would silently drop a job whenever the event loop was busy for a moment.
MISFIRE_GRACE_SECONDS = 3600
RESYNC_JOB_ID = "resync"
DUE_JOB_PREFIX = "due:"


def _utc(moment: datetime) -> datetime:
    """Storage keeps UTC; a naive moment is taken to be UTC, never local time."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class Scheduler:
    """Runs `work` at every upcoming moment while this process leads, and never twice at once.

    Every trigger (catch-up, date job, periodic resync) funnels into one runner task that
    calls `work(clock())` and then `resync()`. Triggers that arrive while a round is in
    progress are coalesced into one more round, so `work` never runs concurrently with
    itself in this process, and APScheduler's jobs return at once: shutting APScheduler
    down (which cancels the jobs it is running) can never cancel `work` half-way through a
    transaction. Stepping down waits for the round in progress instead.
    """

    def __init__(
        self,
        *,
        work: Callable[[datetime], Awaitable[int]],
        upcoming: Callable[[datetime], Awaitable[list[datetime]]],
        clock: Callable[[], datetime],
        tz_name: str = "Asia/Tbilisi",
        resync_every: float = 30.0,
        leadership: Leadership,
    ) -> None:
        if resync_every <= 0:
            raise ValueError("resync_every must be positive")
        if leadership.on_gain is not None or leadership.on_loss is not None:
            raise ValueError("this Leadership already reports to someone: one Scheduler each")
        self.work = work
        self.upcoming = upcoming
        self.clock = clock
        self.tz = ZoneInfo(tz_name)
        self.resync_every = resync_every
        self.leadership = leadership
        leadership.on_gain = self._start
        leadership.on_loss = self._stop
        self._aps: AsyncIOScheduler | None = None
        self._work_lock = asyncio.Lock()
        self._resync_lock = asyncio.Lock()
        self._runner: asyncio.Task[None] | None = None
        self._again = False

    @property
    def running(self) -> bool:
        """True while this process leads and APScheduler is running."""
        return self._aps is not None

    async def run(self, stop: asyncio.Event) -> None:
        """Contend for leadership until `stop`; schedule while leading. Spawn as a task."""
        try:
            await self.leadership.run(stop)
        finally:
            await self._stop()  # already done by the leadership unless it was cancelled

    async def run_due(self) -> int:
        """Run `work` now and return what it queued (0 if it failed: the error is logged).

        Safe in any process, leader or not, since `work` is idempotent: code that has just
        created something due now calls this instead of waiting for the next resync.
        """
        async with self._work_lock:
            now = self.clock()
            try:
                queued = await self.work(now)
            except Exception as error:
                if not is_outage(error):  # an outage is logged once, by the database
                    log.exception("scheduled work at %s failed; retried on the next round", now)
                return 0
        if queued:
            log.info("scheduled work at %s queued %d message(s)", now, queued)
        return queued

    async def resync(self) -> None:
        """Replace the date jobs with one per future moment the database lists now.

        Only the difference is applied, so a job about to fire is not removed and re-added
        (and possibly lost as no longer in the future). Does nothing unless leading; if
        `upcoming` fails the old plan stays and the error is logged.
        """
        async with self._resync_lock:
            if self._aps is None:
                return
            now = self.clock()
            try:
                moments = await self.upcoming(now)
            except Exception as error:
                if not is_outage(error):  # an outage is logged once, by the database
                    log.exception("listing upcoming work failed; keeping the current schedule")
                return
            aps = self._aps
            if aps is None:  # stepped down while `upcoming` ran
                return
            cutoff = _utc(now)
            wanted = {
                DUE_JOB_PREFIX + m.isoformat(): m
                for m in sorted({_utc(m) for m in moments})
                if m > cutoff
            }
            for job in aps.get_jobs():
                if job.id.startswith(DUE_JOB_PREFIX) and job.id not in wanted:
                    job.remove()
            present = {job.id for job in aps.get_jobs()}
            for job_id, moment in wanted.items():
                if job_id not in present:
                    aps.add_job(
                        self._fire,
                        DateTrigger(run_date=moment, timezone=self.tz),
                        id=job_id,
                        name=f"work due at {moment.isoformat()}",
                    )

    def scheduled(self) -> list[datetime]:
        """The moments that have a date job now, soonest first (for tests and health checks)."""
        if self._aps is None:
            return []
        return sorted(
            datetime.fromisoformat(job.id.removeprefix(DUE_JOB_PREFIX))
            for job in self._aps.get_jobs()
            if job.id.startswith(DUE_JOB_PREFIX)
        )

    async def _start(self) -> None:
        """On gaining leadership: start APScheduler, catch up on downtime, plan from the DB."""
        aps = AsyncIOScheduler(
            timezone=self.tz,
            job_defaults={
                "coalesce": True,
                "misfire_grace_time": MISFIRE_GRACE_SECONDS,
                "max_instances": 1,
            },
        )
        aps.start()
        self._aps = aps
        await self.run_due()
        await self.resync()
        aps.add_job(
            self._fire,
            IntervalTrigger(seconds=self.resync_every, timezone=self.tz),
            id=RESYNC_JOB_ID,
            name="work and resync from the database",
        )

    async def _stop(self) -> None:
        """On losing leadership: drop every job and let the round in progress finish."""
        aps, self._aps = self._aps, None
        if aps is not None:
            aps.remove_all_jobs()
            if aps.running:
                aps.shutdown(wait=False)
                # APScheduler defers its shutdown to the loop's next turn: let it happen
                # now, before anyone closes the loop.
                await asyncio.sleep(0)
        runner, self._runner = self._runner, None
        if runner is not None:
            try:
                await runner
            except Exception:
                log.exception("the scheduler's last round failed")

    async def _fire(self) -> None:
        """An APScheduler job: ask for a round and return at once (see the class docstring)."""
        if self._aps is None:
            return
        self._again = True
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._rounds(), name="scheduled work")

    async def _rounds(self) -> None:
        """Work then resync, repeated while triggers arrived during the previous round."""
        while self._again and self._aps is not None:
            self._again = False
            await self.run_due()
            await self.resync()
