"""Assembles Khma: database, content, engine, channels, dispatcher, web server."""

from __future__ import annotations

import asyncio
import contextlib
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
        self.db = db or Database(settings.database_url, schema=settings.database_schema)
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
        self.engine.notify = self.dispatcher.wake
        self.due = DueWork(self.db, settings)
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
        # Only Viber needs exports by URL; without it, no export is reachable over HTTP.
        exports = ExportLinks.from_settings(self.settings) if self.viber else None
        self._runner = web.AppRunner(build_web_app(self.readiness, self.webhooks, exports))
        await self._runner.setup()
        await web.TCPSite(self._runner, self.settings.host, self.settings.port).start()
        if self.telegram:
            await self.telegram.start()
            if not self.settings.telegram_webhook_url:
                self._spawn(self.telegram.poll(self.stop_event), "telegram polling")
        if self.viber:
            await self.viber.start()
        self._spawn(self.engine.run(self.stop_event), "engine")
        self._spawn(self.dispatcher.run(self.stop_event), "dispatcher")
        self._spawn(self.scheduler.run(self.stop_event), "scheduler")
        self._spawn(self._follow_schedule_changes(), "schedule changes")
        self.readiness.ready = True
        log.info("Khma is serving on %s:%s", self.settings.host, self.port)

    async def _scheduled_work(self, now: datetime) -> int:
        queued = await self.due.run(now)
        if queued:
            self.dispatcher.wake()
        return queued

    async def _follow_schedule_changes(self) -> None:
        """A staff member scheduled something in the chat: plan it now, not at the next resync."""
        while not self.stop_event.is_set():
            await rest(self.stop_event, self.engine.schedule_changed, timeout=60)
            if self.engine.schedule_changed.is_set():
                self.engine.schedule_changed.clear()
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
