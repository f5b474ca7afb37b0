"""Closing the loop on reports and questions: status, answers, the FAQ, the week's figures."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from bot.outreach import loop
from bot.outreach.operations import checks
from bot.outreach.operations.errors import NotFound, WrongState
from bot.outreach.operations.request import Request
from storage.models import Report


@dataclass(frozen=True)
class StatusChange:
    reference: str
    status: str


@dataclass(frozen=True)
class Answer:
    reference: str
    text: str


@dataclass(frozen=True)
class StatusSet:
    reference: str
    status: str
    told: bool


@dataclass(frozen=True)
class Question:
    reference: str
    question: str


@dataclass(frozen=True)
class Answered:
    reference: str
    told: bool


@dataclass(frozen=True)
class Promoted:
    reference: str
    faq_id: int


@dataclass(frozen=True)
class Stats:
    total: int
    by_municipality: list[tuple[str | None, int]]
    by_category: list[tuple[str | None, int]]


def _reference(typed: str) -> str:
    return (typed or "").strip().upper()


async def _locked(req: Request, reference: str, kind: str | None = None) -> Report:
    query = select(Report).where(Report.reference == _reference(reference))
    if kind is not None:
        query = query.where(Report.kind == kind)
    found = await req.session.scalar(query.with_for_update())
    if found is None:
        raise NotFound("question" if kind == "dcfta" else "report", _reference(reference))
    return found


async def set_status(req: Request, change: StatusChange) -> StatusSet:
    """Change a report's status and tell its author in their language."""
    req.permit("report.status")
    checks.among("status", [change.status], loop.STATUSES)
    found = await _locked(req, change.reference)
    told = await loop.set_status(
        req.session, found.reference, change.status, now=req.now, tz_name=req.settings.tz_name
    )
    # "resolved" plans the follow-up question weeks from now.
    req.schedule_changed = change.status == "resolved"
    return StatusSet(found.reference, change.status, told)


async def load_question(req: Request, reference: str) -> Question:
    req.permit("question.load")
    found = await _locked(req, reference, "dcfta")
    return Question(found.reference, found.text or "")


async def answer(req: Request, given: Answer) -> Answered:
    req.permit("question.answer")
    text = checks.text("text", given.text, req.settings.max_text_length)
    found = await _locked(req, given.reference, "dcfta")
    told = await loop.answer(
        req.session, found.reference, text, now=req.now, tz_name=req.settings.tz_name
    )
    return Answered(found.reference, told)


async def promote(req: Request, reference: str) -> Promoted:
    """An answered question joins the FAQ in the language it was asked in."""
    req.permit("question.promote")
    found = await _locked(req, reference, "dcfta")
    if not found.answer or not found.text:
        raise WrongState("question", found.reference, "unanswered")
    entry = await loop.promote(req.session, found.reference, req.now)
    return Promoted(found.reference, entry.id)


async def stats(req: Request) -> Stats:
    """This week, Monday to now in Tbilisi time, by municipality and by category."""
    req.permit("stats")
    local = req.now.astimezone(ZoneInfo(req.settings.tz_name))
    monday = (local - timedelta(days=local.weekday())).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    week = (Report.created_at >= monday, Report.kind == "need")
    by_place = await req.session.execute(
        select(Report.municipality, func.count()).where(*week).group_by(Report.municipality)
    )
    by_topic = await req.session.execute(
        select(Report.category, func.count()).where(*week).group_by(Report.category)
    )
    places = sorted(((code, n) for code, n in by_place.all()), key=lambda row: -row[1])
    topics = sorted(((code, n) for code, n in by_topic.all()), key=lambda row: -row[1])
    return Stats(sum(n for _code, n in places), places, topics)
