"""The engine: store what arrives, then run the conversation in one transaction.

`accept` makes an inbound event durable (and drops duplicates) before any
platform is told it arrived. `process_pending` then takes stored events in
order and, per event, commits the new conversation state, whatever records the
step produced and every reply (as outbox rows) together: a crash at any point
leaves either all of it or none of it, and the event is still in the inbox.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import LANGUAGES, Settings
from bot.delivery.dispatch import REPLY_PRIORITY
from bot.engine.conversation import Conversation, State
from bot.engine.effects import Effects, profile_of
from bot.outreach import staff
from bot.vocabulary.i18n import Translator, _
from bot.vocabulary.messages import SYSTEM_KINDS, Inbound, Kind, Reply
from bot.waiting import rest
from flows import REGISTRY
from flows.content import Content
from flows.core import Context
from storage import queries
from storage.db import Database, is_outage
from storage.failures import describe, is_transient, trace
from storage.models import Identity, InboxEvent, OutboxMessage, Resident, utcnow

log = logging.getLogger(__name__)

WELCOME_WAIT = 5.0
TRANSIENT_TRIES = 8
SOMETHING_WENT_WRONG = _(
    "Sorry, something went wrong on our side. Your message is saved and our team will look "
    "at it. Please try again, or send /menu."
)


class Engine:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        content: Content,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.settings = settings
        self.content = content
        self.clock = clock
        self.wakeup = asyncio.Event()
        self.processed = asyncio.Event()
        self.notify: Callable[[], None] = lambda: None
        # Set when a turn scheduled something for later, so the scheduler looks again.
        self.schedule_changed = asyncio.Event()
        # One event at a time per process: SQLite has no SKIP LOCKED, and a webhook answer
        # (Viber's welcome) may process events alongside the engine's own loop.
        self._one_at_a_time = asyncio.Lock()
        # Transient failures per pending event, for the backoff (see `_retry_later`).
        self._transient: dict[int, int] = {}

    # --- receiving -------------------------------------------------------------

    async def accept(self, inbound: Inbound) -> bool:
        """Store an inbound event durably; False if this event was stored before."""
        try:
            async with self.db.transaction() as session:
                session.add(
                    InboxEvent(
                        channel=inbound.channel,
                        external_id=inbound.external_id,
                        address=inbound.address,
                        payload=inbound.to_json(),
                        received_at=self.clock(),
                    )
                )
        except IntegrityError:
            # Only the same channel and external id again is a duplicate; any other
            # constraint failing is an error the platform must hear about (it retries).
            async with self.db.transaction() as session:
                seen = await queries.inbox_status(session, inbound.channel, inbound.external_id)
            if seen is None:
                raise
            log.debug("duplicate %s event %s ignored", inbound.channel, inbound.external_id)
            return False
        self.wakeup.set()
        return True

    async def welcome(self, inbound: Inbound) -> list[Reply]:
        """The replies to a conversation opening, for the platform to carry in its answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WELCOME_WAIT
        while True:
            await self.process_pending()
            async with self.db.transaction() as session:
                status = await queries.inbox_status(session, inbound.channel, inbound.external_id)
                if status not in (None, "pending"):
                    payloads = await queries.take_welcome(
                        session, inbound.channel, inbound.address, self.clock()
                    )
                    return [Reply.from_json(p) for p in payloads]
            if loop.time() > deadline:
                return []
            await asyncio.sleep(0.02)

    async def delivery_report(self, channel: str, message_id: str, status: str) -> None:
        async with self.db.transaction() as session:
            await queries.record_delivery(session, channel, message_id, status)

    # --- processing --------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Process events as they arrive; a periodic look also catches other processes' events."""
        while not stop.is_set():
            try:
                await self.process_pending()
            except Exception as error:
                if not is_outage(error):  # an outage is logged once, by the database
                    log.exception("processing inbound events failed; retrying shortly")
            self.wakeup.clear()
            await rest(stop, self.wakeup, timeout=1.0)

    async def process_pending(self) -> int:
        count = 0
        async with self._one_at_a_time:
            while await self.process_next():
                count += 1
        if count:
            self.processed.set()
            self.notify()
        return count

    async def process_next(self) -> bool:
        failed: tuple[int, str] | None = None
        event_id: int | None = None
        planned = False
        try:
            async with self.db.transaction() as session:
                event = await queries.next_inbox_event(session)
                if event is None:
                    return False
                event_id = event.id
                planned = await self._process(session, event)
        except Exception as error:
            if event_id is None or is_outage(error):
                raise  # the event stays pending and is processed once the database is back
            if await self._retry_later(event_id, error):
                return True
            failed = (event_id, describe(error))
        else:
            self._transient.pop(event_id, None)
            # The scheduler reads its plan from the database: wake it only after the commit,
            # or it may look before the new event or broadcast is there and miss it.
            if planned:
                self.schedule_changed.set()
        if failed:
            await self._record_failure(*failed)
        return True

    async def _process(self, session: AsyncSession, event: InboxEvent) -> bool:
        """Handle one stored event; True if the turn planned something for later."""
        inbound = Inbound.from_json(event.payload)
        now = self.clock()
        identity = await queries.identity_for(session, inbound.channel, inbound.address)
        planned = False
        if inbound.kind in SYSTEM_KINDS:
            await self._platform_news(session, inbound, identity, now)
        else:
            planned = await self._converse(session, inbound, identity, now)
        event.status = "done"
        event.processed_at = now
        event.payload = {"kind": inbound.kind.value}
        return planned

    async def _platform_news(
        self, session: AsyncSession, inbound: Inbound, identity: Identity | None, now: datetime
    ) -> None:
        """Subscribed or unsubscribed: who can be reached, not a conversation turn."""
        if identity is None:
            return
        if inbound.kind is Kind.UNSUBSCRIBED:
            identity.unreachable_at = now
            await queries.stop_sending(session, inbound.channel, inbound.address, "unsubscribed")
        else:
            identity.unreachable_at = None
            await queries.release_held(session, inbound.channel, inbound.address)

    async def _converse(
        self, session: AsyncSession, inbound: Inbound, identity: Identity | None, now: datetime
    ) -> bool:
        """One conversation turn; True if it planned something for the scheduler."""
        if identity is None:
            identity = Identity(
                channel=inbound.channel,
                address=inbound.address,
                resident=Resident(created_at=now),
                created_at=now,
            )
            session.add(identity)
            await session.flush()
        resident = identity.resident
        identity.last_inbound_at = now
        identity.unreachable_at = None
        identity.platform_language = inbound.platform_language or identity.platform_language
        if resident.consent and inbound.display_name:
            identity.display_name = inbound.display_name
        await queries.release_held(session, inbound.channel, inbound.address)
        staff_role = await staff.role_of(session, inbound.channel, inbound.address)
        ctx = Context(
            t=Translator(resident.language or "en", self.settings.tz_name),
            profile=profile_of(resident, identity, staff_role),
            now=now,
            content=self.content,
            max_text_length=self.settings.max_text_length,
        )
        effects = Effects(
            session, identity, inbound, self.db, self.settings, self.content, staff_role
        )
        state = State.from_json(identity.flow_step, identity.flow_data)
        replies, state = await Conversation(REGISTRY, effects.apply).turn(state, inbound, ctx)
        if not effects.erased:
            identity.flow_step = state.step or None
            identity.flow_data = state.to_json()
        # Viber allows one message before a resident subscribes: the answer to the opening.
        status = "welcome" if inbound.kind is Kind.START else "pending"
        for reply in replies:
            session.add(
                OutboxMessage(
                    channel=inbound.channel,
                    address=inbound.address,
                    identity_id=None if effects.erased else identity.id,
                    kind="reply",
                    priority=REPLY_PRIORITY,
                    payload=reply.to_json(),
                    status=status,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
        return effects.schedule_changed

    async def _retry_later(self, event_id: int, error: Exception) -> bool:
        """True if the event stays pending for another try after a pause: the error was
        transient (connection lost, serialization failure, deadlock, timeout) and the event
        has not met one too often. Otherwise it is logged as failed, and False returned.

        The pause holds this worker only, briefly (backoff from 50 ms, at most 2 s); the
        count lives in memory, as a restart is itself a fresh start for such errors. Logs
        carry the error's class and where it was raised, never its text (which can quote
        the resident or, for a database error, the statement's parameters).
        """
        tries = self._transient.get(event_id, 0) + 1
        if is_transient(error) and tries <= TRANSIENT_TRIES:
            self._transient[event_id] = tries
            log.warning(
                "inbound event %s: %s; trying again (%d of %d)",
                event_id,
                describe(error),
                tries,
                TRANSIENT_TRIES,
            )
            await asyncio.sleep(min(0.05 * 2 ** (tries - 1), 2.0))
            return True
        self._transient.pop(event_id, None)
        log.error(
            "inbound event %s failed and is kept for staff (python -m bot inbox retry %s):\n%s",
            event_id,
            event_id,
            trace(error),
        )
        log.debug("inbound event %s failed", event_id, exc_info=error)
        return False

    async def _record_failure(self, event_id: int, error: str) -> None:
        """Keep the event (marked failed, for staff to see) and tell the resident."""
        async with self.db.transaction() as session:
            event = await session.get(InboxEvent, event_id)
            if event is None:
                return
            event.status = "failed"
            event.attempts += 1
            event.error = error[:2000]
            identity = await queries.identity_for(session, event.channel, event.address)
            language = identity.resident.language if identity else None
            languages = [language] if language else list(LANGUAGES)
            text = "\n\n".join(
                Translator(lang, self.settings.tz_name)(SOMETHING_WENT_WRONG) for lang in languages
            )
            session.add(
                OutboxMessage(
                    channel=event.channel,
                    address=event.address,
                    identity_id=identity.id if identity else None,
                    payload=Reply(text).to_json(),
                    next_attempt_at=self.clock(),
                    created_at=self.clock(),
                )
            )
