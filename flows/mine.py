"""“My reports”: what the resident sent and where each item stands."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.vocabulary.i18n import _, ngettext
from flows.core import Context, Do, Flow, LoadReports, Outcome, say
from flows.report import CATEGORY_LABELS

NONE_YET = _("You have not sent any reports or questions yet.")
COUNT = ngettext("You have sent {n} report or question:", "You have sent {n} reports or questions:")
STATUS = {
    "received": _("received"),
    "in_review": _("in review"),
    "forwarded": _("forwarded to the municipality"),
    "resolved": _("resolved"),
    "closed": _("closed"),
}
QUESTION = _("Question about the DCFTA")
LINE = _("{reference} · {what}\n{date} · status: {status}")


@dataclass(frozen=True)
class ReportView:
    reference: str
    kind: str
    category: str | None
    status: str
    created_at: datetime


def describe(ctx: Context, item: ReportView) -> str:
    if item.kind == "dcfta":
        what = ctx.t(QUESTION)
    else:
        label = CATEGORY_LABELS.get(item.category or "other", CATEGORY_LABELS["other"])
        what = ctx.label(label)
    status = ctx.t(STATUS.get(item.status, STATUS["received"]))
    return ctx.t(
        LINE,
        reference=item.reference,
        what=what,
        date=ctx.t.datetime(item.created_at),
        status=status,
    )


def show(ctx: Context) -> Outcome:
    items: list[ReportView] = ctx.facts["reports"]
    if not items:
        return Outcome(say=[say(ctx.t(NONE_YET))], goto="menu.main")
    lines = [ctx.t(COUNT, n=len(items)), *(describe(ctx, item) for item in items)]
    return Outcome(say=[say("\n\n".join(lines))], goto="menu.main")


mine = Flow(
    "mine",
    Do("load", lambda ctx: Outcome(effects=[LoadReports()])),
    Do("show", show),
)
