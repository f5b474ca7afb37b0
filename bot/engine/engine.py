"""The engine: store what arrives, then run the conversation in one transaction.

`accept` makes an inbound event durable (and drops duplicates) before any
platform is told it arrived; `accept_many` stores a whole `getUpdates` answer in
one transaction. The processing loop then takes stored events in order and, per
event, commits the new conversation state, whatever records the step produced
and every reply (as outbox rows) together: a crash at any point leaves either
all of it or none of it, and the event is still in the inbox.

A round reads the oldest pending event of up to `HEADS` conversations (never two
of one resident, so each resident's events stay in order) and runs their turns:
side by side on PostgreSQL, one by one on SQLite. A turn is four statements and
one commit: mark the event done (skipping it if another process has it), load
identity, resident, staff role and held messages, write the identity, insert
the replies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import LANGUAGES, Settings
from bot.delivery.dispatch import REPLY_PRIORITY
from bot.engine.conversation import Conversation, State
from bot.engine.effects import Effects, profile_of
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
from storage.queries import Conversation as Caller

log = logging.getLogger(__name__)

WELCOME_WAIT = 5.0
TRANSIENT_TRIES = 8
# Pending events read at a time, at most one per conversation.
HEADS = 50
# Replies go in with one Core statement (the ORM's bulk path costs more than the insert).
OUTBOX_INSERT = insert(OutboxMessage.__table__)
# Turns of different residents run side by side on PostgreSQL (row locks keep them apart);
# SQLite has one writer, so there they run one at a time.
CONCURRENT_TURNS = 8
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
        # Reads that need no transaction (the pending heads): no BEGIN and no COMMIT.
        self._reads = db.engine.execution_options(isolation_level="AUTOCOMMIT")

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

    async def accept_many(self, inbounds: list[Inbound]) -> None:
        """Store a batch of events (a `getUpdates` answer) in one transaction; duplicates are
        skipped. If the batch cannot be stored as a whole, each event is stored on its own,
        so one bad event never holds back the others' answer to the platform."""
        if not inbounds:
            return
        now = self.clock()
        rows = [
            {
                "channel": inbound.channel,
                "external_id": inbound.external_id,
                "address": inbound.address,
                "payload": inbound.to_json(),
                "received_at": now,
                "status": "pending",
                "attempts": 0,
            }
            for inbound in inbounds
        ]
        dialect_insert = sqlite_insert if self.db.is_sqlite else postgresql_insert
        statement = dialect_insert(InboxEvent).on_conflict_do_nothing(
            index_elements=["channel", "external_id"]
        )
        try:
            async with self.db.transaction() as session:
                await session.execute(statement, rows)
        except Exception as error:
            log.warning("storing %d events at once failed (%s)", len(rows), type(error).__name__)
            for inbound in inbounds:
                await self.accept(inbound)
            return
        self.wakeup.set()

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
        """Process events as they arrive; a periodic look also catches other processes' events.

        After a round it looks again at once only if the round was full or an event arrived
        meanwhile (`accept` sets `wakeup`): no empty look after every event.
        """
        while not stop.is_set():
            self.wakeup.clear()
            full = False
            try:
                async with self._one_at_a_time:
                    taken, full = await self._round()
                if taken:
                    self._processed()
            except Exception as error:
                # An outage is logged once, by the database (the pending read is outside
                # any transaction, so it is noted here).
                if not (is_outage(error) or self.db.noticed(error)):
                    log.exception("processing inbound events failed; retrying shortly")
            if full or self.wakeup.is_set():
                continue
            await rest(stop, self.wakeup, timeout=1.0)

    async def process_pending(self) -> int:
        """Process until nothing is pending (the terminal chat and Viber's welcome use it)."""
        count = 0
        async with self._one_at_a_time:
            while True:
                taken, _full = await self._round()
                if not taken:
                    break
                count += taken
        if count:
            self._processed()
        return count

    async def process_next(self) -> bool:
        """Process the oldest event that may go now; False if there is none."""
        async with self._one_at_a_time:
            taken, _full = await self._round(limit=1)
        if taken:
            self._processed()
        return bool(taken)

    def _processed(self) -> None:
        self.processed.set()
        self.notify()

    async def _round(self, limit: int = HEADS) -> tuple[int, bool]:
        """One read of pending heads (one per conversation), then their turns: side by side on
        PostgreSQL, one by one on SQLite. Returns (events looked at, whether the read was full).

        The read runs outside any transaction (nothing to commit); each turn is its own."""
        async with self._reads.connect() as connection:
            heads = (await connection.execute(queries.PENDING_HEADS, {"limit": limit})).all()
        if not heads:
            return 0, False
        if self.db.is_sqlite:
            for event_id, payload in heads:
                await self._take(event_id, payload)
        else:
            gate = asyncio.Semaphore(CONCURRENT_TURNS)

            async def take(event_id: int, payload: dict) -> None:
                async with gate:
                    await self._take(event_id, payload)

            await asyncio.gather(*(take(event_id, payload) for event_id, payload in heads))
        return len(heads), len(heads) == limit

    async def _take(self, event_id: int, payload: dict) -> None:
        """One event's turn in one transaction; a failure is retried or recorded, and raised only
        in a database outage (the event stays pending for when the database is back)."""
        failed: str | None = None
        planned = False
        try:
            async with self.db.transaction() as session:
                planned = await self._process(session, event_id, Inbound.from_json(payload))
        except Exception as error:
            if is_outage(error):
                raise  # the event stays pending and is processed once the database is back
            if await self._retry_later(event_id, error):
                return
            failed = describe(error)
        else:
            self._transient.pop(event_id, None)
            # The scheduler reads its plan from the database: wake it only after the commit,
            # or it may look before the new event or broadcast is there and miss it.
            if planned:
                self.schedule_changed.set()
        if failed:
            await self._record_failure(event_id, failed)

    async def _process(self, session: AsyncSession, event_id: int, inbound: Inbound) -> bool:
        """Handle one stored event; True if the turn planned something for later.

        The first statement marks the event done (committed with the turn, or not at all);
        if it changes no row, another process has the event and this one leaves it."""
        now = self.clock()
        taken = await session.execute(
            queries.TAKE_EVENT, {"event_id": event_id, "now": now, "kept": {"kind": inbound.kind}}
        )
        if taken.rowcount != 1:
            return False
        caller = await queries.conversation_for(session, inbound.channel, inbound.address)
        if inbound.kind in SYSTEM_KINDS:
            await self._platform_news(session, inbound, caller.identity, now)
            return False
        return await self._converse(session, inbound, caller, now)

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
        self, session: AsyncSession, inbound: Inbound, caller: Caller, now: datetime
    ) -> bool:
        """One conversation turn; True if it planned something for the scheduler."""
        identity = caller.identity
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
        if caller.has_held:
            await queries.release_held(session, inbound.channel, inbound.address)
        staff_role = caller.staff_role
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
        if replies:
            # One Core statement for every reply (the identity's changes flush before it).
            await session.execute(
                OUTBOX_INSERT,
                [
                    {
                        "channel": inbound.channel,
                        "address": inbound.address,
                        "identity_id": None if effects.erased else identity.id,
                        "kind": "reply",
                        "priority": REPLY_PRIORITY,
                        "payload": reply.to_json(),
                        "status": status,
                        "attempts": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                    }
                    for reply in replies
                ],
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
