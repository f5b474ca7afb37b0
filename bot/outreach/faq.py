"""The part of the DCFTA answers residents wrote themselves: questions staff answered and
chose to share (`loop.promote`), read back for residents browsing the answers.

An entry is a resident's own words and a staff member's reply, stored once, in the
language it was asked in. Nobody translates it, so it is shown only to residents who
read that language: a Georgian question would be of no use to a resident who chose
Armenian, and a machine translation of a legal answer could mislead. The static
answers in content/dcfta.json remain what every resident sees in their own language.

The entry outlives the question it came from on purpose: promoting is a deliberate
staff act, and when the asker erases their data (/delete) the report is anonymised
(and `report_id` is set to NULL if the report row ever goes), but the shared question
and answer stay for everyone else.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import FaqEntry

# Enough to browse on a phone: more buttons than this under one topic stop being read.
SHOWN = 20


async def promoted(session: AsyncSession, language: str, limit: int = SHOWN) -> list[FaqEntry]:
    """The newest `limit` entries in `language`, newest first.

    Staff may answer a question again and promote it a second time; only the newest
    entry for a report is kept, so the resident sees the corrected answer once.
    """
    query = (
        select(FaqEntry)
        .where(FaqEntry.language == language)
        .order_by(FaqEntry.created_at.desc(), FaqEntry.id.desc())
        .limit(limit)
    )
    seen: set[int] = set()
    found: list[FaqEntry] = []
    for entry in (await session.execute(query)).scalars():
        if entry.report_id is not None:
            if entry.report_id in seen:
                continue
            seen.add(entry.report_id)
        found.append(entry)
    return found
