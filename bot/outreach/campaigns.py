"""Advocacy campaigns: residents follow and unfollow; updates reach every follower."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.delivery.dispatch import BULK_PRIORITY
from bot.outreach.notices import enqueue_many
from bot.vocabulary.i18n import Translator
from bot.vocabulary.messages import Reply
from flows import notices
from storage.models import Campaign, CampaignFollower, Resident


async def create(
    session: AsyncSession,
    *,
    code: str,
    titles: dict[str, str],
    now: datetime,
    descriptions: dict[str, str] | None = None,
) -> Campaign:
    if not code.replace("-", "").replace("_", "").isalnum() or not code.isascii():
        raise ValueError("a campaign code is short ASCII: letters, digits, - and _")
    campaign = Campaign(
        code=code,
        titles={k: v for k, v in titles.items() if v},
        descriptions={k: v for k, v in (descriptions or {}).items() if v},
        created_at=now,
    )
    session.add(campaign)
    await session.flush()
    return campaign


async def by_code(session: AsyncSession, code: str) -> Campaign | None:
    return await session.scalar(select(Campaign).where(Campaign.code == code))


async def active(session: AsyncSession) -> list[Campaign]:
    query = select(Campaign).where(Campaign.status == "active").order_by(Campaign.id)
    return list((await session.execute(query)).scalars())


async def followed_by(session: AsyncSession, resident_id: int) -> set[int]:
    query = select(CampaignFollower.campaign_id).where(CampaignFollower.resident_id == resident_id)
    return set((await session.execute(query)).scalars())


async def follow(session: AsyncSession, campaign_id: int, resident_id: int, on: bool) -> None:
    if not on:
        await session.execute(
            delete(CampaignFollower).where(
                CampaignFollower.campaign_id == campaign_id,
                CampaignFollower.resident_id == resident_id,
            )
        )
        return
    if campaign_id in await followed_by(session, resident_id):
        return
    try:
        async with session.begin_nested():
            session.add(CampaignFollower(campaign_id=campaign_id, resident_id=resident_id))
    except IntegrityError:
        pass  # followed from another app a moment ago


async def post_update(
    session: AsyncSession,
    code: str,
    texts: dict[str, str],
    *,
    now: datetime,
    fallback: tuple[str, ...],
    tz_name: str,
    update_id: str,
) -> int:
    """Queue an update for every follower, in their language (or the fallback order)."""
    campaign = await by_code(session, code)
    if campaign is None:
        raise LookupError(f"no campaign {code!r}")
    followers = (
        select(Resident)
        .join(CampaignFollower, CampaignFollower.resident_id == Resident.id)
        .where(CampaignFollower.campaign_id == campaign.id)
    )

    def render(t: Translator) -> Reply:
        title = notices.pick(campaign.titles, t.lang, fallback) or code
        return notices.campaign_update(t, title, notices.pick(texts, t.lang, fallback) or "")

    return await enqueue_many(
        session,
        followers,
        render,
        now=now,
        kind="campaign",
        priority=BULK_PRIORITY,
        tz_name=tz_name,
        dedupe_prefix=f"cu:{campaign.id}:{update_id}",
    )
