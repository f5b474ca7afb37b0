"""Closing the loop: residents hear when their report moves, get answers to questions,
and are asked weeks after a fix whether it really was fixed."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.delivery.dispatch import NOTICE_PRIORITY
from bot.outreach.notices import enqueue
from flows import notices
from storage.models import FaqEntry, OutboxMessage, Report, Resident

STATUSES = ("received", "in_review", "forwarded", "resolved", "closed")
FOLLOWUP_ANSWERS = ("yes", "no", "partly")


async def _report(session: AsyncSession, reference: str) -> Report:
    found = await session.scalar(
        select(Report).where(Report.reference == reference.strip().upper()).with_for_update()
    )
    if found is None:
        raise LookupError(f"no report {reference}")
    return found


async def set_status(
    session: AsyncSession, reference: str, status: str, *, now: datetime, tz_name: str
) -> bool:
    """Change a report's status and tell its author; True if they could be told."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    report = await _report(session, reference)
    report.status = status
    report.updated_at = now
    if status == "resolved":
        report.resolved_at = now
        report.followup_answer = None
    if report.resident_id is None:
        return False
    resident = await session.get(Resident, report.resident_id)
    return await enqueue(
        session,
        resident,
        lambda t: notices.status_changed(t, report.reference, status),
        now=now,
        kind="status",
        priority=NOTICE_PRIORITY,
        tz_name=tz_name,
    )


async def answer(
    session: AsyncSession, reference: str, text: str, *, now: datetime, tz_name: str
) -> bool:
    report = await _report(session, reference)
    if report.kind != "dcfta":
        raise ValueError(f"{reference} is not a question")
    report.answer = text
    report.status = "closed"
    report.updated_at = now
    if report.resident_id is None:
        return False
    resident = await session.get(Resident, report.resident_id)
    return await enqueue(
        session,
        resident,
        lambda t: notices.answered(t, report.reference, text),
        now=now,
        kind="answer",
        priority=NOTICE_PRIORITY,
        tz_name=tz_name,
    )


async def promote(session: AsyncSession, reference: str, now: datetime) -> FaqEntry:
    """An answered question joins the FAQ, in the language it was asked in."""
    report = await _report(session, reference)
    if report.kind != "dcfta" or not report.answer or not report.text:
        raise ValueError(f"{reference} is not an answered question")
    entry = FaqEntry(
        topic=report.category,
        language=report.language,
        question=report.text,
        answer=report.answer,
        report_id=report.id,
        created_at=now,
    )
    session.add(entry)
    await session.flush()
    return entry


async def followups_due(
    session: AsyncSession, now: datetime, after: timedelta, tz_name: str
) -> int:
    """Ask once, `after` a report was resolved, whether it really was fixed.

    Only reports not yet asked about since their latest resolution are read, and they
    are marked asked in the same transaction, so a round of the scheduler costs one
    query when nothing is due, however many reports wait for an answer.
    """
    not_asked = or_(
        Report.followup_asked_at.is_(None), Report.followup_asked_at < Report.resolved_at
    )
    due = (
        await session.execute(
            select(Report)
            .where(
                Report.status == "resolved",
                Report.resolved_at <= now - after,
                Report.followup_answer.is_(None),
                Report.resident_id.is_not(None),
                not_asked,
            )
            .with_for_update(skip_locked=True)
        )
    ).scalars()
    queued = 0
    for report in list(due):
        report.followup_asked_at = now
        resident = await session.get(Resident, report.resident_id)
        if resident is None:
            continue
        queued += await enqueue(
            session,
            resident,
            lambda t, r=report: notices.followup(t, r.reference, r.id),
            now=now,
            kind="followup",
            priority=NOTICE_PRIORITY,
            tz_name=tz_name,
            dedupe_key=f"fu:{report.id}:{report.resolved_at.isoformat()}",
        )
    return queued


async def record_followup(
    session: AsyncSession, report_id: int, resident_id: int, answer_: str, now: datetime
) -> str | None:
    """Store the answer; a "no" reopens the report for staff. Returns the reference.

    Only the resident's own report, resolved and asked about since (a follow-up
    question queued after it was resolved, its `dedupe_key` starting `fu:<id>:`), and
    only once: a typed or forged `fu:no:<id>` must not reopen what staff closed.
    """
    report = await session.get(Report, report_id, with_for_update=True)
    if report is None or report.resident_id != resident_id or answer_ not in FOLLOWUP_ANSWERS:
        return None
    if report.status != "resolved" or report.followup_answer is not None:
        return None
    asked = await session.scalar(
        select(OutboxMessage.id)
        .where(
            OutboxMessage.kind == "followup",
            OutboxMessage.dedupe_key.startswith(f"fu:{report.id}:", autoescape=True),
            OutboxMessage.created_at >= report.resolved_at,
        )
        .limit(1)
    )
    if asked is None:
        return None
    report.followup_answer = answer_
    report.updated_at = now
    if answer_ == "no":
        report.status = "in_review"
    return report.reference


async def upcoming(session: AsyncSession, now: datetime, after: timedelta) -> list[datetime]:
    found = (
        await session.execute(
            select(Report.resolved_at).where(
                Report.status == "resolved",
                Report.followup_answer.is_(None),
                or_(
                    Report.followup_asked_at.is_(None),
                    Report.followup_asked_at < Report.resolved_at,
                ),
            )
        )
    ).scalars()
    return [moment + after for moment in found if moment and moment + after > now]
