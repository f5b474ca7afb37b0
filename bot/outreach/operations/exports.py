"""The chat's export: queued as a job, so no resident waits while it is written; the file
reaches the staff member who asked, in their app, when it is ready."""

from __future__ import annotations

from dataclasses import dataclass

from bot.outreach import jobs
from bot.outreach.operations.errors import Invalid
from bot.outreach.operations.request import Request

FORMATS = ("csv",)  # what /exports/… serves and a phone opens


@dataclass(frozen=True)
class ExportRequest:
    format: str = "csv"


@dataclass(frozen=True)
class Started:
    job_id: int


async def start(req: Request, asked: ExportRequest) -> Started:
    req.permit("export")
    if asked.format not in FORMATS:
        raise Invalid("format", "unknown", value=asked.format)
    if req.actor.channel is None:
        # The file goes to the app that asked; the CLI writes its own (`python -m bot export`).
        raise Invalid("to", "unknown")
    job = await jobs.queue(req.session, "export", {"format": asked.format}, req.actor, req.now)
    req.schedule_changed = True
    return Started(job.id)
