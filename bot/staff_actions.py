"""What staff commands in the chat do, once the engine has checked the role."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from bot.export import ExportFilter, write_export
from bot.outreach import broadcasts, campaigns, events, loop
from bot.outreach.audience import Audience, summarise
from flows.content import Content
from flows.notices import pick
from flows.staff import Preview
from storage.db import Database
from storage.models import Campaign, CampaignFollower, Report

PERMISSION = {
    "preview_broadcast": "broadcast",
    "create_broadcast": "broadcast",
    "broadcast_progress": "broadcast",
    "set_status": "answer",
    "load_question": "answer",
    "answer_question": "answer",
    "promote": "answer",
    "stats": "read",
    "list_events": "events",
    "list_campaigns": "campaigns",
    "post_update": "campaigns",
    "export": "export",
}
EXPORTS = Path("data") / "exports"


class StaffActions:
    """One staff member's actions within one turn's transaction."""

    def __init__(
        self,
        session: AsyncSession,
        db: Database,
        settings: Settings,
        content: Content,
        now: datetime,
        lang: str,
        who: str,
    ) -> None:
        self.session, self.db, self.settings, self.content = session, db, settings, content
        self.now, self.lang, self.who = now, lang, who
        self.schedule_changed = False

    async def run(self, name: str, args: Mapping[str, Any]) -> Any:
        action: Callable[[Mapping[str, Any]], Awaitable[Any]] = getattr(self, name)
        return await action(args)

    async def preview_broadcast(self, args: Mapping[str, Any]) -> Preview:
        audience = Audience.from_json(dict(args["audience"]))
        found = await summarise(self.session, audience, dict(args["texts"]), self.now)
        quiet = self.settings.quiet_hours
        return Preview(
            per_channel=dict(found.per_channel),
            fallback=dict(found.fallback),
            viber_outside_window=found.viber_outside_window,
            viber_price=self.settings.viber_message_price,
            quiet_hours=(quiet[0].strftime("%H:%M"), quiet[1].strftime("%H:%M")) if quiet else None,
        )

    async def create_broadcast(self, args: Mapping[str, Any]) -> dict[str, Any]:
        send_at = datetime.fromisoformat(args["send_at"]) if args.get("send_at") else None
        created = await broadcasts.create(
            self.session,
            texts=dict(args["texts"]),
            audience=Audience.from_json(dict(args["audience"])),
            now=self.now,
            send_at=send_at,
            created_by=self.who,
        )
        if send_at is None:
            s = self.settings
            await broadcasts.start_due(self.session, self.now, s.language_fallback, s.tz_name)
        else:
            self.schedule_changed = True
        return {"id": created.id, "send_at": args.get("send_at")}

    async def broadcast_progress(self, args: Mapping[str, Any]) -> dict[str, Any] | None:
        found = await self.session.get(broadcasts.Broadcast, args["id"])
        if found is None:
            return None
        counts = await broadcasts.progress(self.session, found.id)
        return {
            "id": found.id,
            "status": found.status,
            "queued": counts.queued,
            "sent": counts.sent,
            "delivered": counts.delivered,
            "failed": counts.failed,
            "unreachable": counts.unreachable,
        }

    async def set_status(self, args: Mapping[str, Any]) -> dict[str, str] | None:
        try:
            await loop.set_status(
                self.session,
                args["reference"],
                args["status"],
                now=self.now,
                tz_name=self.settings.tz_name,
            )
        except LookupError:
            return None
        self.schedule_changed = args["status"] == "resolved"
        return {"status": args["status"]}

    async def load_question(self, args: Mapping[str, Any]) -> dict[str, str] | None:
        found = await self.session.scalar(
            select(Report).where(Report.reference == args["reference"], Report.kind == "dcfta")
        )
        return {"question": found.text or ""} if found else None

    async def answer_question(self, args: Mapping[str, Any]) -> bool:
        return await loop.answer(
            self.session,
            args["reference"],
            args["answer"],
            now=self.now,
            tz_name=self.settings.tz_name,
        )

    async def promote(self, args: Mapping[str, Any]) -> bool:
        await loop.promote(self.session, args["reference"], self.now)
        return True

    async def stats(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """This week, Monday to now in Tbilisi time, by municipality and by category."""
        local = self.now.astimezone(ZoneInfo(self.settings.tz_name))
        monday = (local - timedelta(days=local.weekday())).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        week = (Report.created_at >= monday, Report.kind == "need")
        by_place = await self.session.execute(
            select(Report.municipality, func.count()).where(*week).group_by(Report.municipality)
        )
        by_topic = await self.session.execute(
            select(Report.category, func.count()).where(*week).group_by(Report.category)
        )
        places = sorted(by_place.all(), key=lambda row: -row[1])
        topics = sorted(by_topic.all(), key=lambda row: -row[1])
        return {
            "total": sum(count for _code, count in places),
            "by_municipality": places,
            "by_category": topics,
        }

    async def list_events(self, args: Mapping[str, Any]) -> list[dict[str, Any]]:
        found = await events.upcoming_for(self.session, None, self.now)
        fallback = self.settings.language_fallback
        return [
            {
                "id": e.id,
                "title": events.title_in(e, self.lang, fallback),
                "starts_at": e.starts_at.isoformat(),
                "going": await events.going(self.session, e.id),
            }
            for e in found
        ]

    async def list_campaigns(self, args: Mapping[str, Any]) -> list[dict[str, Any]]:
        counted = await self.session.execute(
            select(Campaign, func.count(CampaignFollower.id))
            .outerjoin(CampaignFollower, CampaignFollower.campaign_id == Campaign.id)
            .where(Campaign.status == "active")
            .group_by(Campaign.id)
            .order_by(Campaign.id)
        )
        fallback = self.settings.language_fallback
        return [
            {"code": c.code, "title": pick(c.titles, self.lang, fallback) or c.code, "followers": n}
            for c, n in counted.all()
        ]

    async def post_update(self, args: Mapping[str, Any]) -> dict[str, int] | None:
        try:
            queued = await campaigns.post_update(
                self.session,
                args["code"],
                dict(args["texts"]),
                now=self.now,
                fallback=self.settings.language_fallback,
                tz_name=self.settings.tz_name,
                update_id=f"chat-{secrets.token_hex(4)}",
            )
        except LookupError:
            return None
        return {"queued": queued}

    async def export(self, args: Mapping[str, Any]) -> dict[str, Any]:
        EXPORTS.mkdir(parents=True, exist_ok=True)
        path = EXPORTS / f"khma-{self.now:%Y%m%d-%H%M}-{secrets.token_hex(4)}.csv"
        count = await write_export(
            self.db, ExportFilter(), self.content, "csv", path, tz_name=self.settings.tz_name
        )
        return {"count": count, "document": str(path)}
