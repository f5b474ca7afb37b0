"""Assembles Khma: database, content, engine, channels, dispatcher, web server."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from datetime import datetime

from aiohttp import web

from bot.channels.base import Channel, WebhookChannel
from bot.channels.telegram import TelegramChannel
from bot.channels.viber import ViberChannel
from bot.config import Settings
from bot.delivery.dispatch import Dispatcher, DispatchPolicy
from bot.engine.engine import Engine
from bot.outreach.due import DueWork
from bot.outreach.jobs import JobWorker
from bot.schedule.leader import Leadership, lock_key_for
from bot.schedule.scheduler import Scheduler
from bot.waiting import rest
from bot.web.export_links import ExportLinks
from bot.web.server import Readiness, build_web_app
from flows.content import load_content
from storage.db import Database
from storage.models import utcnow

log = logging.getLogger(__name__)
GRACE_SECONDS = 10.0
# How often expired chat exports are looked for (at most; sooner when links are shorter).
EXPORT_SWEEP_SECONDS = 600.0
# A platform unreachable at start is tried again after 1 s, then 2, 4, … up to 5 minutes.
PLATFORM_FIRST_RETRY = 1.0
PLATFORM_LAST_RETRY = 300.0


class Khma:
    def __init__(
        self,
        settings: Settings,
        *,
        db: Database | None = None,
        clock: Callable[[], datetime] = utcnow,
        policy: DispatchPolicy | None = None,
    ) -> None:
        self.settings = settings
        self._owns_db = db is None
        self.db = db or Database(
            settings.database_url,
            schema=settings.database_schema,
            timeout=settings.database_timeout,
        )
        self.content = load_content(settings.active_municipalities)
        self.engine = Engine(self.db, settings, self.content, clock=clock)
        self.telegram = (
            TelegramChannel(settings, self.engine.accept, self.engine.accept_many)
            if settings.telegram_token
            else None
        )
        self.viber = ViberChannel(settings, self.engine) if settings.viber_token else None
        channels: dict[str, Channel] = {}
        self.webhooks: list[WebhookChannel] = []
        if self.telegram:
            channels[self.telegram.name] = self.telegram
            if settings.telegram_webhook_url:
                self.webhooks.append(self.telegram)
        if self.viber:
            channels[self.viber.name] = self.viber
            self.webhooks.append(self.viber)
        leadership = Leadership(self.db, key=lock_key_for(self.db.schema))
        policy = policy or DispatchPolicy.from_settings(settings)
        self.dispatcher = Dispatcher(
            self.db, channels, policy=policy, clock=clock, sends_bulk=lambda: leadership.is_leader
        )
        self.engine.notify = functools.partial(self.dispatcher.wake, bulk=False)  # replies only
        self.due = DueWork(self.db, settings, notify=self.dispatcher.wake)
        # Heavy staff work (exports, event notices, campaign updates) outside any turn.
        self.jobs = JobWorker(
            self.db, settings, self.content, clock=clock, on_done=self.dispatcher.wake
        )
        self.scheduler = Scheduler(
            work=self._scheduled_work,
            upcoming=self.due.upcoming,
            clock=clock,
            tz_name=settings.tz_name,
            leadership=leadership,
        )
        self.readiness = Readiness()
        self.stop_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._platform_failures: dict[str, str] = {}

    @property
    def port(self) -> int:
        """The port actually bound (PORT=0 picks a free one, as tests do)."""
        assert self._runner is not None
        for site in self._runner.sites:
            server = site._server
            if server is not None and server.sockets:
                return server.sockets[0].getsockname()[1]
        return self.settings.port

    async def start(self) -> None:
        """Migrate, serve, and bring every part up; `/healthz` says 200 only after this.

        The schema is brought to head first (under an advisory lock on PostgreSQL, so
        processes starting together migrate once), or every message would fail on a
        table that is not there. A platform whose API cannot be reached now is retried
        in the background while everything else serves.
        """
        await self.ensure_schema()
        # Only Viber needs exports by URL; without it, no export is reachable over HTTP.
        exports = ExportLinks.from_settings(self.settings) if self.viber else None
        self._runner = web.AppRunner(
            build_web_app(self.readiness, self.webhooks, exports, db=self.db)
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, self.settings.host, self.settings.port).start()
        self._spawn(self.engine.run(self.stop_event), "engine")
        self._spawn(self.dispatcher.run(self.stop_event), "dispatcher")
        self._spawn(self.scheduler.run(self.stop_event), "scheduler")
        self._spawn(self.jobs.run(self.stop_event), "jobs")
        self._spawn(self._follow_schedule_changes(), "schedule changes")
        self._spawn(self._sweep_exports(), "export sweep")
        # One attempt at each platform now (a slow one holds up no other part: sends to
        # it wait, stored events are processed); one that fails is retried in the background.
        platforms = [channel for channel in (self.telegram, self.viber) if channel is not None]
        connected = await asyncio.gather(*(self._connect(channel) for channel in platforms))
        for channel, ok in zip(platforms, connected, strict=True):
            if ok:
                self._platform_ready(channel)
            else:
                self._spawn(self._keep_connecting(channel), f"{channel.name} start")
        self.readiness.ready = True
        log.info("Khma is serving on %s:%s", self.settings.host, self.port)

    async def ensure_schema(self) -> None:
        """Migrate unless the schema is already at head (the common case: one query)."""
        if not (await self.db.schema_state()).at_head:
            log.info("bringing the database schema up to date")
            await self.db.migrate()

    async def _connect(self, channel: TelegramChannel | ViberChannel) -> bool:
        """One attempt at the platform's API; False (logged without secrets) if it failed."""
        try:
            await channel.start()
        except Exception as error:
            # Only the class: a Bot API error's text or URL may hold the token.
            self._platform_failures[channel.name] = type(error).__name__
            return False
        return True

    async def _keep_connecting(self, channel: TelegramChannel | ViberChannel) -> None:
        """Retry a platform's start with backoff; one WARNING now, one INFO when it works."""
        delay = PLATFORM_FIRST_RETRY
        log.warning(
            "the %s API cannot be reached (%s); retrying in the background, the rest serves",
            channel.name,
            self._platform_failures.get(channel.name),
        )
        while not self.stop_event.is_set():
            await rest(self.stop_event, timeout=delay)
            if self.stop_event.is_set():
                return
            if await self._connect(channel):
                log.info("the %s API answered: %s is connected", channel.name, channel.name)
                self._platform_ready(channel)
                return
            delay = min(delay * 2, PLATFORM_LAST_RETRY)

    def _platform_ready(self, channel: TelegramChannel | ViberChannel) -> None:
        if channel is self.telegram and not self.settings.telegram_webhook_url:
            self._spawn(self.telegram.poll(self.stop_event), "telegram polling")
        self.dispatcher.wake()

    async def _scheduled_work(self, now: datetime) -> int:
        queued = await self.due.run(now)
        if queued:
            self.dispatcher.wake()
        return queued

    async def _sweep_exports(self) -> None:
        """Chat exports hold residents' data: each is deleted once its link has expired,
        whether or not anyone exports again (a sweep at start, then every few minutes)."""
        links = ExportLinks.from_settings(self.settings)
        every = min(EXPORT_SWEEP_SECONDS, self.settings.export_link_ttl.total_seconds())
        while not self.stop_event.is_set():
            try:
                await asyncio.to_thread(links.sweep)
            except OSError as error:
                log.warning("sweeping expired exports failed (%s)", type(error).__name__)
            await rest(self.stop_event, timeout=every)

    async def _follow_schedule_changes(self) -> None:
        """A staff member scheduled something in the chat or queued a job: start what is due
        now (a broadcast sent now) and plan the rest, outside the turn that asked."""
        while not self.stop_event.is_set():
            await rest(self.stop_event, self.engine.schedule_changed, timeout=60)
            if self.engine.schedule_changed.is_set():
                self.engine.schedule_changed.clear()
                self.jobs.wake()
                if await self.scheduler.run_due():
                    self.dispatcher.wake()
                await self.scheduler.resync()

    def _spawn(self, work, name: str) -> None:
        self._tasks.append(asyncio.create_task(work, name=name))

    async def stop(self) -> None:
        self.readiness.ready = False
        self.stop_event.set()
        # Let each loop finish the transaction it is in: cancelling one half-way would
        # leave a database connection that the interpreter then waits for at exit.
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=GRACE_SECONDS)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.telegram:
            await self.telegram.stop()
        if self.viber:
            await self.viber.stop()
        if self._runner:
            await self._runner.cleanup()
        if self._owns_db:
            await self.db.close()

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await self.stop_event.wait()
        finally:
            await self.stop()
