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
import secrets
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import LANGUAGES, Settings
from bot.conversation import Conversation, State
from bot.i18n import Translator, _
from bot.messages import Inbound, Reply
from bot.waiting import rest
from flows import REGISTRY
from flows.content import Content
from flows.core import (
    Context,
    Effect,
    ErasePersonalData,
    LoadPersonalData,
    LoadReports,
    Profile,
    SubmitReport,
    UpdateProfile,
)
from flows.mine import ReportView
from flows.privacy import PersonalData, StoredReport
from storage import queries
from storage.db import Database
from storage.models import Identity, InboxEvent, OutboxMessage, Report, Resident, utcnow

log = logging.getLogger(__name__)

REPLY_PRIORITY = 0
SOMETHING_WENT_WRONG = _(
    "Sorry, something went wrong on our side. Your message is saved and our team will look "
    "at it. Please try again, or send /menu."
)
REFERENCE_PREFIX = {"need": "KV", "dcfta": "DQ"}


def _view(report: Report) -> ReportView:
    return ReportView(
        report.reference, report.kind, report.category, report.status, report.created_at
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
            log.debug("duplicate %s event %s ignored", inbound.channel, inbound.external_id)
            return False
        self.wakeup.set()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Process events as they arrive; a periodic look also catches other processes' events."""
        while not stop.is_set():
            try:
                await self.process_pending()
            except Exception:
                log.exception("processing inbound events failed; retrying shortly")
            self.wakeup.clear()
            await rest(stop, self.wakeup, timeout=1.0)

    async def process_pending(self) -> int:
        count = 0
        while await self.process_next():
            count += 1
        if count:
            self.processed.set()
            self.notify()
        return count

    async def process_next(self) -> bool:
        failed: tuple[int, str] | None = None
        event_id: int | None = None
        try:
            async with self.db.transaction() as session:
                event = await queries.next_inbox_event(session)
                if event is None:
                    return False
                event_id = event.id
                await self._process(session, event)
        except Exception as error:
            if event_id is None:
                raise
            log.exception("inbound event %s could not be processed", event_id)
            failed = (event_id, f"{type(error).__name__}: {error}")
        if failed:
            await self._record_failure(*failed)
        return True

    # --- one event ---------------------------------------------------------------

    async def _process(self, session: AsyncSession, event: InboxEvent) -> None:
        inbound = Inbound.from_json(event.payload)
        now = self.clock()
        identity = await queries.identity_for(session, inbound.channel, inbound.address)
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
        ctx = Context(
            t=Translator(resident.language or "en", self.settings.tz_name),
            profile=self._profile(resident, identity),
            now=now,
            content=self.content,
            max_text_length=self.settings.max_text_length,
        )
        erased = False

        async def apply(effect: Effect, ctx: Context) -> None:
            nonlocal erased
            erased = await self._apply(session, effect, ctx, identity, inbound) or erased

        state = State.from_json(identity.flow_step, identity.flow_data)
        replies, state = await Conversation(REGISTRY, apply).turn(state, inbound, ctx)
        if not erased:
            identity.flow_step = state.step or None
            identity.flow_data = state.to_json()
        for reply in replies:
            session.add(
                OutboxMessage(
                    channel=inbound.channel,
                    address=inbound.address,
                    identity_id=None if erased else identity.id,
                    kind="reply",
                    priority=REPLY_PRIORITY,
                    payload=reply.to_json(),
                    next_attempt_at=now,
                    created_at=now,
                )
            )
        event.status = "done"
        event.processed_at = now
        event.payload = {"kind": inbound.kind.value}

    def _profile(self, resident: Resident, identity: Identity) -> Profile:
        return Profile(
            channel=identity.channel,
            language=resident.language,
            municipality=resident.municipality,
            consent=resident.consent,
            gender=resident.gender,
            age_group=resident.age_group,
            display_name=identity.display_name,
        )

    async def _apply(
        self,
        session: AsyncSession,
        effect: Effect,
        ctx: Context,
        identity: Identity,
        inbound: Inbound,
    ) -> bool:
        """Carry out what a step asked for; True when the resident was erased."""
        resident = identity.resident
        match effect:
            case UpdateProfile(changes=changes):
                for name, value in changes.items():
                    setattr(resident, name, value)
                if changes.get("consent"):
                    resident.consent_at = ctx.now
                    identity.display_name = inbound.display_name or identity.display_name
                if "language" in changes:
                    ctx.t = Translator(changes["language"], self.settings.tz_name)
                ctx.profile = self._profile(resident, identity)
            case SubmitReport():
                ctx.facts["reference"] = await self._submit(session, effect, ctx, identity)
            case LoadReports():
                found = await queries.reports_of(session, resident.id)
                ctx.facts["reports"] = [_view(r) for r in found]
            case LoadPersonalData():
                found = await queries.reports_of(session, resident.id, limit=1000)
                ctx.facts["personal_data"] = PersonalData(
                    language=resident.language,
                    municipality=resident.municipality,
                    gender=resident.gender,
                    age_group=resident.age_group,
                    consent_at=resident.consent_at,
                    accounts=tuple(
                        (i.channel, i.display_name)
                        for i in await resident.awaitable_attrs.identities
                    ),
                    reports=tuple(StoredReport(_view(r), r.text) for r in found),
                )
            case ErasePersonalData():
                await queries.anonymise_reports(session, resident.id)
                await queries.forget_messages(session, resident)
                await session.delete(resident)
                await session.flush()
                return True
        return False

    async def _submit(
        self, session: AsyncSession, effect: SubmitReport, ctx: Context, identity: Identity
    ) -> str:
        resident = identity.resident
        report = Report(
            reference=f"tmp-{secrets.token_hex(8)}",
            kind=effect.kind,
            resident_id=resident.id,
            channel=identity.channel,
            language=ctx.t.lang,
            municipality=resident.municipality,
            category=effect.category,
            text=effect.text,
            media=[dict(m) for m in effect.media],
            latitude=effect.latitude,
            longitude=effect.longitude,
            location_municipality=effect.location_municipality,
            anonymous=effect.anonymous,
            shared_name=None if effect.anonymous else identity.display_name,
            gender=resident.gender,
            age_group=resident.age_group,
            created_at=ctx.now,
            updated_at=ctx.now,
        )
        session.add(report)
        await session.flush()
        year = ctx.now.astimezone(ctx.t.tz).year
        report.reference = f"{REFERENCE_PREFIX[effect.kind]}-{year}-{report.id:06d}"
        return report.reference

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
