"""What the scheduler runs: everything due now becomes outbox rows, once."""

from __future__ import annotations

from datetime import datetime

from bot.config import Settings
from bot.outreach import broadcasts, events, loop
from storage.db import Database


class DueWork:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    async def run(self, now: datetime) -> int:
        s = self.settings
        async with self.db.transaction() as session:
            queued = await broadcasts.start_due(session, now, s.language_fallback, s.tz_name)
            queued += await events.remind_due(
                session, now, s.reminder_offsets, s.language_fallback, s.tz_name
            )
            queued += await loop.followups_due(session, now, s.followup_after, s.tz_name)
            await broadcasts.finish_sent(session)
        return queued

    async def upcoming(self, now: datetime) -> list[datetime]:
        s = self.settings
        async with self.db.transaction() as session:
            moments = await broadcasts.upcoming(session, now)
            moments += await events.upcoming(session, now, s.reminder_offsets)
            moments += await loop.upcoming(session, now, s.followup_after)
        return sorted(set(moments))
