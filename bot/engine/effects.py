"""Carrying out what a flow step asked for, inside the turn's transaction.

Steps stay pure by returning effects; this is the one place that turns them
into rows, and puts what the next prompt needs (a reference number, a link
code, the resident's reports) into the turn's `facts`.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import UTC, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from bot.engine import staff_actions
from bot.outreach import campaigns, events, faq, loop
from bot.outreach.operations.request import Actor, Request
from bot.vocabulary.i18n import Translator
from bot.vocabulary.messages import Inbound
from flows.campaigns import CampaignView
from flows.content import Content
from flows.core import (
    AnswerFollowup,
    Attend,
    Context,
    CreateLinkCode,
    Effect,
    ErasePersonalData,
    Follow,
    LinkAccounts,
    LoadCampaigns,
    LoadEvents,
    LoadFaq,
    LoadPersonalData,
    LoadReports,
    Profile,
    StaffAction,
    SubmitReport,
    UpdateProfile,
)
from flows.dcfta import FaqView
from flows.events import EventView
from flows.mine import ReportView
from flows.notices import pick
from flows.privacy import PersonalData, StoredReport
from storage import queries
from storage.db import Database
from storage.models import Identity, LinkAttempt, LinkCode, Report, Resident, Rsvp

REFERENCE_PREFIX = {"need": "KV", "dcfta": "DQ"}
LINK_CODE_LIFETIME = timedelta(minutes=10)
# Codes an identity may type per window: a person mistypes once or twice; someone
# guessing at a million codes gets nowhere.
LINK_ATTEMPTS = 5
LINK_ATTEMPT_WINDOW = timedelta(hours=1)


def profile_of(resident: Resident, identity: Identity, staff_role: str | None = None) -> Profile:
    return Profile(
        staff_role=staff_role,
        channel=identity.channel,
        language=resident.language,
        municipality=resident.municipality,
        consent=resident.consent,
        gender=resident.gender,
        age_group=resident.age_group,
        display_name=identity.display_name,
    )


def _view(report: Report) -> ReportView:
    return ReportView(
        report.reference, report.kind, report.category, report.status, report.created_at
    )


@dataclass
class Effects:
    """The effects of one turn: one session, one identity, one inbound event."""

    session: AsyncSession
    identity: Identity
    inbound: Inbound
    db: Database
    settings: Settings
    content: Content
    staff_role: str | None = None
    erased: bool = False
    schedule_changed: bool = False

    @property
    def tz_name(self) -> str:
        return self.settings.tz_name

    async def apply(self, effect: Effect, ctx: Context) -> None:
        session, identity = self.session, self.identity
        resident = identity.resident
        match effect:
            case UpdateProfile(changes=changes):
                for name, value in changes.items():
                    setattr(resident, name, value)
                if changes.get("consent"):
                    resident.consent_at = ctx.now
                    identity.display_name = self.inbound.display_name or identity.display_name
                self._refresh(ctx)
            case SubmitReport():
                ctx.facts["reference"] = await self._submit(effect, ctx)
            case LoadReports():
                found = await queries.reports_of(session, resident.id)
                ctx.facts["reports"] = [_view(r) for r in found]
            case LoadPersonalData():
                found = await queries.reports_of(session, resident.id, limit=1000)
                identities = await resident.awaitable_attrs.identities
                ctx.facts["personal_data"] = PersonalData(
                    language=resident.language,
                    municipality=resident.municipality,
                    gender=resident.gender,
                    age_group=resident.age_group,
                    consent_at=resident.consent_at,
                    accounts=tuple((i.channel, i.display_name) for i in identities),
                    reports=tuple(StoredReport(_view(r), r.text) for r in found),
                )
            case ErasePersonalData():
                await queries.anonymise_reports(session, resident.id)
                await queries.forget_messages(session, resident)
                await session.delete(resident)
                await session.flush()
                self.erased = True
            case CreateLinkCode():
                ctx.facts["link_code"] = await self._link_code(ctx)
            case LinkAccounts(code=code):
                ctx.facts["linked"] = await self._link(code.strip(), ctx)
            case LoadEvents():
                ctx.facts["events"] = await self._events(ctx)
            case LoadFaq():
                found = await faq.promoted(session, ctx.t.lang)
                ctx.facts["faq"] = [FaqView(e.id, e.topic, e.question, e.answer) for e in found]
            case Attend(event_id=event_id, attend=attend):
                ctx.facts["rsvp"] = await events.rsvp(session, event_id, resident.id, attend)
            case LoadCampaigns():
                ctx.facts["campaigns"] = await self._campaigns(ctx)
            case Follow(code=code, on=on):
                found = await campaigns.by_code(session, code)
                ctx.facts["campaign"] = None
                if found is not None and found.status == "active":
                    await campaigns.follow(session, found.id, resident.id, on)
                    fallback = self.settings.language_fallback
                    ctx.facts["campaign"] = pick(found.titles, ctx.t.lang, fallback) or code
                    ctx.facts["following"] = on
            case AnswerFollowup(report_id=report_id, answer=answer):
                ctx.facts["followup"] = await loop.record_followup(
                    session, report_id, resident.id, answer, ctx.now
                )
            case StaffAction(name=name, args=args):
                request = Request(
                    session,
                    self.settings,
                    self.content,
                    Actor(
                        role=self.staff_role,
                        name=self.identity.display_name or self.identity.address,
                        channel=self.identity.channel,
                        address=self.identity.address,
                        language=ctx.t.lang,
                    ),
                    ctx.now,
                )
                await staff_actions.run(request, name, args, ctx.facts)
                self.schedule_changed = self.schedule_changed or request.schedule_changed

    async def _events(self, ctx: Context) -> list[EventView]:
        resident = self.identity.resident
        found = await events.upcoming_for(self.session, resident.municipality, ctx.now)
        mine = {
            r.event_id
            for r in (
                await self.session.execute(
                    select(Rsvp).where(Rsvp.resident_id == resident.id, Rsvp.status == "going")
                )
            ).scalars()
        }
        fallback = self.settings.language_fallback
        return [
            EventView(
                e.id,
                events.title_in(e, ctx.t.lang, fallback),
                e.starts_at,
                e.place,
                e.id in mine,
                events.description_in(e, ctx.t.lang, fallback),
            )
            for e in found
        ]

    async def _campaigns(self, ctx: Context) -> list[CampaignView]:
        following = await campaigns.followed_by(self.session, self.identity.resident_id)
        fallback = self.settings.language_fallback
        return [
            CampaignView(
                c.code,
                pick(c.titles, ctx.t.lang, fallback) or c.code,
                pick(c.descriptions, ctx.t.lang, fallback) or "",
                c.id in following,
            )
            for c in await campaigns.active(self.session)
        ]

    def _refresh(self, ctx: Context) -> None:
        resident = self.identity.resident
        ctx.profile = profile_of(resident, self.identity, self.staff_role)
        if resident.language and resident.language != ctx.t.lang:
            ctx.t = Translator(resident.language, self.tz_name)

    async def _submit(self, effect: SubmitReport, ctx: Context) -> str:
        resident = self.identity.resident
        report = Report(
            reference=f"tmp-{secrets.token_hex(8)}",
            kind=effect.kind,
            resident_id=resident.id,
            channel=self.identity.channel,
            language=ctx.t.lang,
            municipality=resident.municipality,
            category=effect.category,
            text=effect.text,
            media=[dict(m) for m in effect.media],
            latitude=effect.latitude,
            longitude=effect.longitude,
            location_municipality=effect.location_municipality,
            anonymous=effect.anonymous,
            shared_name=None if effect.anonymous else self.identity.display_name,
            gender=resident.gender,
            age_group=resident.age_group,
            created_at=ctx.now,
            updated_at=ctx.now,
        )
        self.session.add(report)
        await self.session.flush()
        year = ctx.now.astimezone(ctx.t.tz).year
        report.reference = f"{REFERENCE_PREFIX[effect.kind]}-{year}-{report.id:06d}"
        return report.reference

    async def _link_code(self, ctx: Context) -> str:
        """Six digits are easy to type on any phone; a code in use is never handed out twice."""
        while True:
            code = f"{secrets.randbelow(1_000_000):06d}"
            taken = await self.session.scalar(
                select(LinkCode.id).where(
                    LinkCode.code == code, LinkCode.used_at.is_(None), LinkCode.expires_at > ctx.now
                )
            )
            if taken is None:
                break
        self.session.add(
            LinkCode(
                code=code,
                resident_id=self.identity.resident_id,
                channel=self.identity.channel,
                created_at=ctx.now,
                expires_at=ctx.now + LINK_CODE_LIFETIME,
            )
        )
        return code

    async def _link_wait(self, ctx: Context) -> int:
        """Minutes until this identity may type another code; 0 when it may now."""
        since = ctx.now - LINK_ATTEMPT_WINDOW
        tries, oldest = (
            await self.session.execute(
                select(func.count(), func.min(LinkAttempt.attempted_at)).where(
                    LinkAttempt.identity_id == self.identity.id,
                    LinkAttempt.attempted_at > since,
                )
            )
        ).one()
        if tries < LINK_ATTEMPTS or oldest is None:
            return 0
        if oldest.tzinfo is None:  # SQLite hands back naive UTC from an aggregate
            oldest = oldest.replace(tzinfo=UTC)
        seconds = (oldest + LINK_ATTEMPT_WINDOW - ctx.now).total_seconds()
        return max(1, math.ceil(seconds / 60))

    async def _link(self, code: str, ctx: Context) -> bool:
        """This app joins the resident who showed the code in another app; their profile wins.

        A few attempts per identity an hour; past them `facts["link_wait"]` holds the
        minutes until the next try, and no code is looked at.
        """
        wait = await self._link_wait(ctx)
        if wait:
            ctx.facts["link_wait"] = wait
            return False
        await self.session.execute(
            delete(LinkAttempt).where(
                LinkAttempt.identity_id == self.identity.id,
                LinkAttempt.attempted_at <= ctx.now - LINK_ATTEMPT_WINDOW,
            )
        )
        self.session.add(LinkAttempt(identity_id=self.identity.id, attempted_at=ctx.now))
        found = await self.session.scalar(
            select(LinkCode)
            .where(
                LinkCode.code == code,
                LinkCode.used_at.is_(None),
                LinkCode.expires_at > ctx.now,
                or_(LinkCode.channel.is_(None), LinkCode.channel != self.identity.channel),
            )
            .with_for_update()
        )
        if found is None or found.resident_id == self.identity.resident_id:
            return False
        found.used_at = ctx.now
        owner = await self.session.get(Resident, found.resident_id)
        if owner is None:
            return False
        joining = self.identity.resident
        await owner.awaitable_attrs.identities
        for identity in list(await joining.awaitable_attrs.identities):
            identity.resident = owner
        await self.session.execute(
            update(Report).where(Report.resident_id == joining.id).values(resident_id=owner.id)
        )
        await self.session.flush()
        await self.session.delete(joining)
        await self.session.flush()
        self._refresh(ctx)
        return True
