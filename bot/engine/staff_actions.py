"""The chat's front end to staff operations (bot/outreach/operations).

A staff flow asks for an operation by its name in the permission table with plain
arguments (`StaffAction("event.move", {"id": 12, "starts_at": "…"})`). Here each name
maps to the one domain function that does it; the function checks the role, validates,
locks and changes. The result goes back into the turn's facts as plain JSON (flows keep
parts of it in the conversation state), and a refusal as `facts["refused"]`, a dict the
flows render in the staff member's language.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from bot.outreach.audience import Audience
from bot.outreach.operations import broadcasts, campaigns, events, exports, reports
from bot.outreach.operations.errors import OperationError
from bot.outreach.operations.request import Request

Args = Mapping[str, Any]
Operation = Callable[[Request, Args], Awaitable[Any]]


def _draft(args: Args) -> broadcasts.Draft:
    return broadcasts.Draft(
        texts=dict(args["texts"]),
        audience=Audience.from_json(dict(args.get("audience") or {})),
        photo=args.get("photo"),
        link=args.get("link"),
        send_at=args.get("send_at"),
    )


OPERATIONS: dict[str, Operation] = {
    "broadcast.preview": lambda r, a: broadcasts.preview(r, _draft(a)),
    "broadcast.create": lambda r, a: broadcasts.create(r, _draft(a)),
    "broadcast.progress": lambda r, a: broadcasts.progress(r, a["id"]),
    "broadcast.cancel": lambda r, a: broadcasts.cancel(r, a["id"]),
    "report.status": lambda r, a: reports.set_status(
        r, reports.StatusChange(a["reference"], a["status"])
    ),
    "question.load": lambda r, a: reports.load_question(r, a["reference"]),
    "question.answer": lambda r, a: reports.answer(r, reports.Answer(a["reference"], a["answer"])),
    "question.promote": lambda r, a: reports.promote(r, a["reference"]),
    "stats": lambda r, a: reports.stats(r),
    "event.list": lambda r, a: events.listing(r),
    "event.load": lambda r, a: events.load(r, a["id"]),
    "event.create": lambda r, a: events.create(
        r,
        events.NewEvent(
            titles=dict(a["titles"]),
            descriptions=dict(a.get("descriptions") or {}),
            starts_at=a["starts_at"],
            place=a["place"],
            municipality=a.get("municipality"),
            capacity=a.get("capacity"),
        ),
    ),
    "event.move": lambda r, a: events.move(r, events.Move(a["id"], starts_at=a["starts_at"])),
    "event.cancel": lambda r, a: events.cancel(r, a["id"]),
    "campaign.list": lambda r, a: campaigns.listing(r),
    "campaign.update": lambda r, a: campaigns.update(
        r, campaigns.Update(a["code"], dict(a["texts"]))
    ),
    "export": lambda r, a: exports.start(r, exports.ExportRequest()),
}


def plain(value: Any) -> Any:
    """A result as JSON: dataclasses as dicts, times as ISO strings, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


async def run(request: Request, name: str, args: Args, facts: dict[str, Any]) -> None:
    """Run the named operation; its result in `facts["staff"]`, a refusal in
    `facts["refused"]` (and `facts["staff"]` None)."""
    facts.pop("refused", None)
    try:
        facts["staff"] = plain(await OPERATIONS[name](request, args))
    except OperationError as error:
        facts["staff"] = None
        facts["refused"] = error.to_json()
