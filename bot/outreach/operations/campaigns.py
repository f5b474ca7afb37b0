"""Campaign operations: list with followers, create, post an update.

An update reaches every follower through a job (bot/outreach/jobs.py), not inside the
turn that posts it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import func, select

from bot.outreach import campaigns, jobs
from bot.outreach.operations import checks
from bot.outreach.operations.errors import Invalid, NotFound, WrongState
from bot.outreach.operations.request import Request
from flows.notices import pick
from storage.models import Campaign, CampaignFollower

# The `campaigns.code` column's size; the code is part of a deep link, so ASCII only.
CODE = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclass(frozen=True)
class NewCampaign:
    code: str
    titles: Mapping[str, str]
    descriptions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Update:
    code: str
    texts: Mapping[str, str]


@dataclass(frozen=True)
class Line:
    code: str
    title: str
    followers: int


@dataclass(frozen=True)
class Created:
    code: str


@dataclass(frozen=True)
class UpdateQueued:
    code: str
    followers: int
    job_id: int


async def active_campaign(req: Request, code: str, field: str = "code") -> Campaign:
    found = await campaigns.by_code(req.session, code)
    if found is None or found.status != "active":
        raise Invalid(field, "unknown", value=code)
    return found


async def _followers(req: Request, campaign_id: int) -> int:
    return (
        await req.session.scalar(
            select(func.count()).where(CampaignFollower.campaign_id == campaign_id)
        )
        or 0
    )


async def listing(req: Request) -> list[Line]:
    req.permit("campaign.list")
    counted = await req.session.execute(
        select(Campaign, func.count(CampaignFollower.id))
        .outerjoin(CampaignFollower, CampaignFollower.campaign_id == Campaign.id)
        .where(Campaign.status == "active")
        .group_by(Campaign.id)
        .order_by(Campaign.id)
    )
    fallback = req.settings.language_fallback
    return [
        Line(c.code, pick(c.titles, req.actor.language, fallback) or c.code, n)
        for c, n in counted.all()
    ]


async def create(req: Request, new: NewCampaign) -> Created:
    req.permit("campaign.create")
    if not CODE.fullmatch(new.code or ""):
        raise Invalid("code", "format", value=new.code)
    titles = checks.texts("titles", new.titles, checks.TITLE_LIMIT)
    descriptions = checks.texts(
        "descriptions", new.descriptions, req.settings.max_text_length, required=False
    )
    if await campaigns.by_code(req.session, new.code) is not None:
        raise WrongState("campaign", new.code, "taken")
    created = await campaigns.create(
        req.session, code=new.code, titles=titles, descriptions=descriptions, now=req.now
    )
    return Created(created.code)


async def update(req: Request, posted: Update) -> UpdateQueued:
    """Queue an update for every follower, in their language or the fallback order."""
    req.permit("campaign.update")
    texts = checks.texts("texts", posted.texts, req.settings.max_text_length)
    found = await campaigns.by_code(req.session, (posted.code or "").strip())
    if found is None:
        raise NotFound("campaign", posted.code)
    found = await req.locked(Campaign, found.id, "campaign")
    if found.status != "active":
        raise WrongState("campaign", found.code, found.status)
    job = await jobs.queue(
        req.session,
        "campaign_update",
        {"code": found.code, "texts": texts, "update_id": secrets.token_hex(6)},
        actor=req.actor,
        now=req.now,
    )
    req.schedule_changed = True
    return UpdateQueued(found.code, await _followers(req, found.id), job.id)
