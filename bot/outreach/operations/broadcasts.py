"""Broadcast operations: preview, create (now or at a time), progress, cancel, list.

"Send now" only records the broadcast as due now and tells the scheduler: turning it
into one outbox row per resident (`broadcasts.start_due`) happens outside any turn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from bot.outreach import broadcasts
from bot.outreach.audience import Audience, summarise
from bot.outreach.operations import checks
from bot.outreach.operations.campaigns import active_campaign
from bot.outreach.operations.errors import Invalid, WrongState
from bot.outreach.operations.events import open_event
from bot.outreach.operations.request import Request
from storage.models import Broadcast

# A broadcast may still be stopped while it waits for its time or is being sent.
CANCELLABLE = ("scheduled", "sending")


@dataclass(frozen=True)
class Draft:
    """What staff compose: a text per language, who gets it, a picture or a link."""

    texts: Mapping[str, str]
    audience: Audience = field(default_factory=Audience)
    photo: str | None = None
    link: str | None = None
    # None: now. A typed time is read in Tbilisi time; it must lie ahead.
    send_at: datetime | str | None = None


@dataclass(frozen=True)
class Preview:
    total: int
    per_channel: dict[str, int]
    fallback: dict[str, int]
    viber_outside_window: int
    viber_price: float
    quiet_hours: tuple[str, str] | None


@dataclass(frozen=True)
class Created:
    id: int
    send_at: datetime | None  # None: due now, on its way


@dataclass(frozen=True)
class Progress:
    id: int
    status: str
    send_at: datetime | None
    queued: int
    sent: int
    delivered: int
    failed: int
    unreachable: int
    cancelled: int


@dataclass(frozen=True)
class Cancelled:
    id: int
    was: str
    not_sent: int


@dataclass(frozen=True)
class Line:
    id: int
    status: str
    send_at: datetime | None
    languages: tuple[str, ...]


async def _checked_audience(req: Request, audience: Audience) -> Audience:
    checks.among("audience.languages", audience.languages, checks.LANGUAGES)
    places = [*(m.code for m in req.content.municipalities), "other"]
    checks.among("audience.municipalities", audience.municipalities, places)
    checks.among("audience.genders", audience.genders, checks.GENDERS)
    checks.among("audience.age_groups", audience.age_groups, checks.AGE_GROUPS)
    if audience.campaign is not None:
        await active_campaign(req, audience.campaign, field="audience.campaign")
    if audience.event_id is not None:
        await open_event(req, audience.event_id, field="audience.event")
    return audience


@dataclass(frozen=True)
class _Checked:
    texts: dict[str, str]
    audience: Audience
    photo: str | None
    link: str | None
    send_at: datetime | None


async def _checked(req: Request, draft: Draft) -> _Checked:
    """Everything a broadcast needs, checked once for the preview and again to send: what
    staff were shown as sendable is what can be sent."""
    texts = checks.texts("texts", draft.texts, req.settings.max_text_length)
    photo = checks.web_address("photo", draft.photo)
    if photo is not None and not checks.is_picture(photo):
        raise Invalid("photo", "format", value=photo)
    link = checks.web_address("link", draft.link)
    audience = await _checked_audience(req, draft.audience)
    send_at = None
    if draft.send_at is not None and draft.send_at != "":
        send_at = checks.moment("send_at", draft.send_at, req.now, req.settings.tz_name)
    return _Checked(texts, audience, photo, link, send_at)


async def preview(req: Request, draft: Draft) -> Preview:
    req.permit("broadcast.preview")
    checked = await _checked(req, draft)
    found = await summarise(req.session, checked.audience, checked.texts, req.now)
    quiet = req.settings.quiet_hours
    return Preview(
        total=found.total,
        per_channel=dict(found.per_channel),
        fallback=dict(found.fallback),
        viber_outside_window=found.viber_outside_window,
        viber_price=req.settings.viber_message_price,
        quiet_hours=(quiet[0].strftime("%H:%M"), quiet[1].strftime("%H:%M")) if quiet else None,
    )


async def create(req: Request, draft: Draft) -> Created:
    """A confirmed broadcast, due now or at `send_at`; the scheduler takes it from there."""
    req.permit("broadcast.create")
    checked = await _checked(req, draft)
    created = await broadcasts.create(
        req.session,
        texts=checked.texts,
        audience=checked.audience,
        now=req.now,
        send_at=checked.send_at,
        photo_id=checked.photo,
        link=checked.link,
        created_by=req.actor.name,
    )
    req.schedule_changed = True
    return Created(created.id, checked.send_at)


async def progress(req: Request, broadcast_id: int) -> Progress:
    req.permit("broadcast.progress")
    found = await req.find(Broadcast, broadcast_id, "broadcast")
    counts = await broadcasts.progress(req.session, found.id)
    return Progress(
        id=found.id,
        status=found.status,
        send_at=found.send_at,
        queued=counts.queued,
        sent=counts.sent,
        delivered=counts.delivered,
        failed=counts.failed,
        unreachable=counts.unreachable,
        cancelled=counts.cancelled,
    )


async def cancel(req: Request, broadcast_id: int) -> Cancelled:
    """Stop a scheduled or sending broadcast: nothing still waiting is sent; what is on its
    way to the platform stays. A finished or cancelled one is refused (WrongState)."""
    req.permit("broadcast.cancel")
    found = await req.locked(Broadcast, broadcast_id, "broadcast")
    if found.status not in CANCELLABLE:
        raise WrongState("broadcast", str(broadcast_id), found.status)
    was = await broadcasts.cancel(req.session, broadcast_id, req.now)
    if was is None:  # cannot happen under the lock; kept as the same refusal
        raise WrongState("broadcast", str(broadcast_id), found.status)
    req.schedule_changed = True
    counts = await broadcasts.progress(req.session, broadcast_id)
    return Cancelled(broadcast_id, was, counts.cancelled)


async def listing(req: Request) -> list[Line]:
    req.permit("broadcast.list")
    found = await req.session.execute(select(Broadcast).order_by(Broadcast.id))
    return [Line(b.id, b.status, b.send_at, tuple(sorted(b.texts))) for b in found.scalars()]
