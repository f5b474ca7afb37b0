"""Who a broadcast reaches: residents who consented, filtered as staff chose.

The same query counts the audience before staff confirm (per platform, how many
get another language, how many Viber messages fall outside the free 24-hour
window) and then lists it when the broadcast goes out, so what staff were shown
is what happens.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, case, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.outreach.notices import reached
from storage.models import Campaign, CampaignFollower, Resident, Rsvp

VIBER_SESSION = timedelta(hours=24)


@dataclass(frozen=True)
class Audience:
    languages: tuple[str, ...] = ()
    municipalities: tuple[str, ...] = ()
    genders: tuple[str, ...] = ()
    age_groups: tuple[str, ...] = ()
    campaign: str | None = None
    event_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in self.__dict__.items()
            if value
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Audience:
        return cls(
            languages=tuple(data.get("languages", ())),
            municipalities=tuple(data.get("municipalities", ())),
            genders=tuple(data.get("genders", ())),
            age_groups=tuple(data.get("age_groups", ())),
            campaign=data.get("campaign"),
            event_id=data.get("event_id"),
        )


@dataclass
class AudienceSummary:
    per_channel: Counter[str] = field(default_factory=Counter)
    fallback: Counter[str] = field(default_factory=Counter)
    viber_outside_window: int = 0

    @property
    def total(self) -> int:
        return sum(self.per_channel.values())


def residents(audience: Audience) -> Select[tuple[Resident]]:
    query = select(Resident).where(Resident.consent.is_(True), Resident.language.is_not(None))
    if audience.languages:
        query = query.where(Resident.language.in_(audience.languages))
    if audience.municipalities:
        query = query.where(Resident.municipality.in_(audience.municipalities))
    if audience.genders:
        query = query.where(Resident.gender.in_(audience.genders))
    if audience.age_groups:
        query = query.where(Resident.age_group.in_(audience.age_groups))
    if audience.campaign:
        query = query.where(
            exists()
            .where(CampaignFollower.resident_id == Resident.id)
            .where(CampaignFollower.campaign_id == Campaign.id)
            .where(Campaign.code == audience.campaign)
        )
    if audience.event_id is not None:
        query = query.where(
            exists().where(
                Rsvp.resident_id == Resident.id,
                Rsvp.event_id == audience.event_id,
                Rsvp.status == "going",
            )
        )
    # Who can be reached, and on which app, is `notices.reached`'s to decide: it reads
    # only the identities of the residents in hand (an EXISTS here made PostgreSQL hash
    # every identity for each chunk of a broadcast).
    return query.order_by(Resident.id)


async def summarise(
    session: AsyncSession, audience: Audience, texts: dict[str, str], now: datetime
) -> AudienceSummary:
    """Counts staff see before confirming; a resident counts once, on the app used last.

    Counted by the database (`GROUP BY`): a handful of rows, whatever the audience's size.
    """
    found = reached(residents(audience)).order_by(None).subquery()
    outside = case(
        (
            and_(
                found.c.channel == "viber",
                or_(
                    found.c.last_inbound_at.is_(None),
                    found.c.last_inbound_at < now - VIBER_SESSION,
                ),
            ),
            1,
        ),
        else_=0,
    )
    summary = AudienceSummary()
    counted = await session.execute(
        select(found.c.channel, found.c.language, outside, func.count()).group_by(
            found.c.channel, found.c.language, outside
        )
    )
    for channel, language, outside_window, count in counted:
        summary.per_channel[channel] += count
        if not texts.get(language):
            summary.fallback[language] += count
        if outside_window:
            summary.viber_outside_window += count
    return summary
