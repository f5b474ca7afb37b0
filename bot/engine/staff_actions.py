"""What staff commands in the chat do, once the engine has checked the role."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from bot.outreach import broadcasts, campaigns, events, loop
from bot.outreach.audience import Audience, summarise
from bot.outreach.export import ExportFilter, write_export
from bot.web.export_links import ExportLinks
from flows.content import Content
from flows.notices import pick
from flows.staff_broadcast import Preview
from storage.db import Database
from storage.models import Campaign, CampaignFollower, Event, Report

PERMISSION = {
    "preview_broadcast": "broadcast",
    "create_broadcast": "broadcast",
    "broadcast_progress": "broadcast",
    "cancel_broadcast": "broadcast",
    "set_status": "answer",
    "load_question": "answer",
    "answer_question": "answer",
    "promote": "answer",
    "stats": "read",
    # Coordinators may see the events; only staff and admins change them.
    "list_events": "read",
    "load_event": "events",
    "create_event": "events",
    "move_event": "events",
    "cancel_event": "events",
    "list_campaigns": "campaigns",
    "post_update": "campaigns",
    "export": "export",
}


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
            photo_id=args.get("photo"),
            link=args.get("link"),
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
            "send_at": found.send_at.isoformat() if found.send_at else None,
            "queued": counts.queued,
            "sent": counts.sent,
            "delivered": counts.delivered,
            "failed": counts.failed,
            "unreachable": counts.unreachable,
            "cancelled": counts.cancelled,
        }

    async def cancel_broadcast(self, args: Mapping[str, Any]) -> dict[str, Any] | None:
        """Stop a scheduled or sending broadcast; None when it has finished or was cancelled
        meanwhile (by another staff member, or from the CLI).

        What was waiting is never sent; what is already on its way to the platform stays.
        """
        was = await broadcasts.cancel(self.session, args["id"], self.now)
        if was is None:
            return None
        # A scheduled broadcast's moment is no longer planned: the scheduler looks again.
        self.schedule_changed = True
        counts = await broadcasts.progress(self.session, args["id"])
        return {"id": args["id"], "was": was, "not_sent": counts.cancelled}

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

    async def load_event(self, args: Mapping[str, Any]) -> dict[str, Any] | None:
        """One event as staff manage it, in their language; None when there is none."""
        found = await self.session.get(Event, args["id"])
        if found is None:
            return None
        return {
            "id": found.id,
            "title": events.title_in(found, self.lang, self.settings.language_fallback),
            "starts_at": found.starts_at.isoformat(),
            "place": found.place,
            "capacity": found.capacity,
            "status": found.status,
            "going": await events.going(self.session, found.id),
        }

    async def create_event(self, args: Mapping[str, Any]) -> dict[str, int]:
        created = await events.create(
            self.session,
            titles=dict(args["titles"]),
            descriptions=dict(args.get("descriptions") or {}),
            starts_at=datetime.fromisoformat(args["starts_at"]),
            place=args["place"],
            municipality=args.get("municipality"),
            capacity=args.get("capacity"),
            now=self.now,
        )
        # Its reminders are new moments: the scheduler must look again, as after the CLI.
        self.schedule_changed = True
        return {"id": created.id}

    async def move_event(self, args: Mapping[str, Any]) -> dict[str, Any] | None:
        return await self._change_event(
            args["id"], starts_at=datetime.fromisoformat(args["starts_at"])
        )

    async def cancel_event(self, args: Mapping[str, Any]) -> dict[str, Any] | None:
        return await self._change_event(args["id"], cancel=True)

    async def _change_event(
        self, event_id: int, *, starts_at: datetime | None = None, cancel: bool = False
    ) -> dict[str, Any] | None:
        """Move or cancel an upcoming event; `events.change` tells everyone registered.

        None when it is over or was cancelled meanwhile (by another staff member, say):
        nobody should hear of a new time for an event that will not happen.
        """
        found = await self.session.get(Event, event_id, with_for_update=True)
        if found is None or found.status != "scheduled" or found.starts_at <= self.now:
            return None
        told = await events.change(
            self.session,
            event_id,
            now=self.now,
            fallback=self.settings.language_fallback,
            tz_name=self.settings.tz_name,
            starts_at=starts_at,
            cancel=cancel,
        )
        self.schedule_changed = True
        return {"id": event_id, "told": told, "starts_at": found.starts_at.isoformat()}

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
        """Write the CSV under an unguessable name: on Viber the name is served as a link."""
        path = ExportLinks.from_settings(self.settings).new_path(self.now)
        count = await write_export(
            self.db, ExportFilter(), self.content, "csv", path, tz_name=self.settings.tz_name
        )
        return {"count": count, "document": str(path), "size": path.stat().st_size}
