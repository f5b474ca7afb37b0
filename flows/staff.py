"""Staff commands in the chat: answer, change a status, see figures, export, campaigns.

They are conversations like the residents' ones, in the staff member's own
language; what they do is asked of the engine as `StaffAction` effects, which
check the role again before anything happens. The two long guided ones have
modules of their own, built from the pieces here (a skippable text per
language, a time typed in Tbilisi time): flows/staff_broadcast.py and
flows/staff_events.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from bot.vocabulary.i18n import Msg, _, ngettext
from bot.vocabulary.languages import LANGUAGES
from flows.core import (
    TOO_LONG,
    Ask,
    Choice,
    Choose,
    Context,
    Do,
    Flow,
    Outcome,
    StaffAction,
    parse_id,
    say,
)
from flows.mine import STATUS
from flows.onboarding import ENDONYMS
from flows.report import CATEGORY_LABELS

CANCEL = _("✖ Cancel")
BAD_TIME = _("I could not read that time. Type it like 2026-12-01 10:00, in the future.")
WHICH_REPORT = _("Type the reference number, like KV-2026-000123.")
NEW_STATUS = _("Report {reference}: choose its new status. The resident will be told.")
STATUS_SET = _("{reference} is now “{status}”.")
NOT_FOUND = _("I found nothing with the reference {reference}.")
WRITE_ANSWER = _(
    "Question {reference}:\n\n“{question}”\n\n"
    "Write the answer; the resident will get it in this chat."
)
ANSWER_SENT = _("The answer to {reference} was sent. Add this question and answer to the FAQ?")
ADD_TO_FAQ = _("➕ Add to the FAQ")
NO_THANKS = _("No")
PROMOTED = _("Added to the FAQ.")
STATS = _("Reports this week: {total}")
NOTHING_THIS_WEEK = _("No reports this week yet.")
EXPORT_READY = _("Your export ({count} rows) is attached.")
EXPORT_TOO_LARGE = _(
    "The export ({count} rows) is larger than the 50 MB a chat can carry. Ask the operator to "
    "run `python -m bot export` on the server."
)
CAMPAIGN_LINE = _("{code}: {title} · followers: {followers}")
NO_CAMPAIGNS = _("No campaigns yet. Create one with `python -m bot campaign create`.")
UPDATE_WHICH = _("To post an update, type the campaign code; or /menu.")
UPDATE_TEXT = _(
    "Write the update for “{code}”; followers get it in their language when one is given."
)
UPDATE_SENT = ngettext("Update sent to {n} follower.", "Update sent to {n} followers.")
UPDATE_STARTED = _(
    "The update for “{code}” is on its way to its followers; I will tell you how many it reached."
)
EXPORT_STARTED = _("Export started: I will send the file here when it is ready.")
JOB_FAILED = _("Sorry, the work you started could not be finished. Please try again later.")
NOT_ALLOWED = _("Your role does not allow this.")
NO_LONGER = _("That can no longer be done: it changed in the meantime.")
UNKNOWN_VALUE = _("I do not know “{value}”. Please check it and start again.")
NOT_ACCEPTED = _("That cannot be used. Please check it and start again.")
NOT_AN_ADDRESS = _(
    "That is not a web address. Send one that starts with {scheme} and has no spaces, or tap "
    "“Skip”."
)


def _argument(ctx: Context, key: str) -> None:
    """A command's argument (`/status KV-…`) arrives in this turn's facts; keep it."""
    if ctx.facts.get("argument"):
        ctx.data[key] = ctx.facts["argument"].strip()


# --- refusals, as the operations give them (bot/outreach/operations/errors.py) --------


def refusal_text(ctx: Context, refused: dict[str, Any]) -> str:
    """One refusal in the staff member's language: who may not, what is not there, which
    input cannot be used and why, or what changed in the meantime."""
    error, reason = refused.get("error"), refused.get("reason")
    if error == "not_allowed":
        return ctx.t(NOT_ALLOWED)
    if error == "not_found":
        return ctx.t(NOT_FOUND, reference=refused.get("key", ""))
    if error == "wrong_state":
        return ctx.t(NO_LONGER)
    if reason == "too_long":
        return ctx.t(TOO_LONG, length=refused.get("value"), limit=refused.get("limit"))
    if reason in ("time", "past"):
        return ctx.t(BAD_TIME)
    if reason == "address":
        return ctx.t(NOT_AN_ADDRESS, scheme="https://")
    if reason == "unknown" and refused.get("value"):
        return ctx.t(UNKNOWN_VALUE, value=refused["value"])
    return ctx.t(NOT_ACCEPTED)


def refused(ctx: Context) -> Outcome | None:
    """The operation's refusal said, and back to the menu; None when it went through."""
    found = ctx.facts.get("refused")
    if found is None:
        return None
    return Outcome(say=[say(refusal_text(ctx, found))], goto="menu.main")


# --- pieces of the guided staff conversations ---------------------------------------


def text_step(
    lang: str,
    prompt: Msg,
    prefix: str = "text",
    on: Callable[[Context], Outcome | str] | None = None,
) -> Ask:
    """One language's text, skippable: a broadcast's texts, an event's titles and
    descriptions. `prompt` names the language as {language}."""
    return Ask(
        f"{prefix}_{lang}",
        lambda ctx, lang=lang: ctx.t(prompt, language=ENDONYMS[lang]),
        save=f"{prefix}_{lang}",
        skip=True,
        on=on,
    )


def texts(ctx: Context, prefix: str = "text") -> dict[str, str]:
    return {
        lang: ctx.data[f"{prefix}_{lang}"]["text"]
        for lang in LANGUAGES
        if ctx.data.get(f"{prefix}_{lang}", {}).get("text")
    }


def typed_number(text: str) -> int | None:
    """A broadcast's or an event's number as staff type it: "12" or "#12" (short enough
    for the database's integers), or None."""
    return parse_id(text.strip().removeprefix("#").strip())


def parse_moment(ctx: Context, typed: str) -> datetime | None:
    """A typed "2026-12-01 10:00" in Tbilisi time, or None unless it reads and lies ahead:
    staff plan broadcasts and events in local time, and the past is always a typo."""
    try:
        moment = datetime.fromisoformat(typed.strip()).replace(tzinfo=ctx.t.tz)
    except ValueError:
        return None
    return moment if moment > ctx.now else None


# --- /status and /answer ---------------------------------------------------------------


def status_start(ctx: Context) -> Outcome:
    _argument(ctx, "reference")
    return Outcome(goto="staff.status_choose" if ctx.data.get("reference") else "staff.status_ref")


def status_ref_typed(ctx: Context) -> str:
    ctx.data["reference"] = ctx.data["typed"]["text"].strip().upper()
    return "staff.status_choose"


def status_chosen(ctx: Context, status: str) -> Outcome:
    args = {"reference": ctx.data["reference"], "status": status}
    return Outcome(effects=[StaffAction("report.status", args)], goto="staff.status_done")


def status_done(ctx: Context) -> Outcome:
    if (refusal := refused(ctx)) is not None:
        return refusal
    status = ctx.t(STATUS[ctx.facts["staff"]["status"]])
    reference = ctx.facts["staff"]["reference"]
    return Outcome(
        say=[say(ctx.t(STATUS_SET, reference=reference, status=status))], goto="menu.main"
    )


def answer_start(ctx: Context) -> Outcome:
    _argument(ctx, "reference")
    if not ctx.data.get("reference"):
        return Outcome(goto="staff.answer_ref")
    return Outcome(
        effects=[StaffAction("question.load", {"reference": ctx.data["reference"]})],
        goto="staff.answer_loaded",
    )


def answer_ref_typed(ctx: Context) -> Outcome:
    ctx.data["reference"] = ctx.data["typed"]["text"].strip().upper()
    return Outcome(
        effects=[StaffAction("question.load", {"reference": ctx.data["reference"]})],
        goto="staff.answer_loaded",
    )


def answer_loaded(ctx: Context) -> Outcome:
    if (refusal := refused(ctx)) is not None:
        return refusal
    ctx.data["question"] = ctx.facts["staff"]["question"]
    return Outcome(goto="staff.answer_text")


def answer_written(ctx: Context) -> Outcome:
    args = {"reference": ctx.data["reference"], "answer": ctx.data["answer"]["text"]}
    return Outcome(effects=[StaffAction("question.answer", args)], goto="staff.answer_done")


def answer_done(ctx: Context) -> Outcome:
    return refused(ctx) or Outcome(goto="staff.answer_sent")


def faq_chosen(ctx: Context, choice: str) -> Outcome:
    if choice == "no":
        return Outcome(goto="menu.main")
    args = {"reference": ctx.data["reference"]}
    return Outcome(effects=[StaffAction("question.promote", args)], goto="staff.promoted")


def promoted(ctx: Context) -> Outcome:
    return refused(ctx) or Outcome(say=[say(ctx.t(PROMOTED))], goto="menu.main")


# --- figures, lists, export ---------------------------------------------------------------


def stats(ctx: Context) -> Outcome:
    return Outcome(effects=[StaffAction("stats")], goto="staff.stats_show")


def stats_show(ctx: Context) -> Outcome:
    if (refusal := refused(ctx)) is not None:
        return refusal
    found = ctx.facts["staff"]
    if not found["total"]:
        return Outcome(say=[say(ctx.t(NOTHING_THIS_WEEK))], goto="menu.main")
    lines = [ctx.t(STATS, total=found["total"])]
    for code, count in found["by_municipality"]:
        place = ctx.content.municipality(code)
        lines.append(f"• {ctx.label(place.names) if place else code}: {count}")
    lines.append("")
    for code, count in found["by_category"]:
        label = CATEGORY_LABELS.get(code or "other", CATEGORY_LABELS["other"])
        lines.append(f"• {ctx.label(label)}: {count}")
    return Outcome(say=[say("\n".join(lines))], goto="menu.main")


def campaigns_list(ctx: Context) -> Outcome:
    return Outcome(effects=[StaffAction("campaign.list")], goto="staff.campaigns_show")


def campaigns_show(ctx: Context) -> Outcome:
    if (refusal := refused(ctx)) is not None:
        return refusal
    found = ctx.facts["staff"]
    if not found:
        return Outcome(say=[say(ctx.t(NO_CAMPAIGNS))], goto="menu.main")
    lines = [ctx.t(CAMPAIGN_LINE, **c) for c in found]
    return Outcome(say=[say("\n".join(lines))], goto="staff.update_code")


def update_code_typed(ctx: Context) -> str:
    ctx.data["code"] = ctx.data["typed"]["text"].strip()
    return "staff.update_text"


def update_written(ctx: Context) -> Outcome:
    args = {"code": ctx.data["code"], "texts": {ctx.t.lang: ctx.data["update"]["text"]}}
    return Outcome(effects=[StaffAction("campaign.update", args)], goto="staff.update_sent")


def update_sent(ctx: Context) -> Outcome:
    """The update is queued; the count it reached follows as a notice (bot/outreach/jobs.py)."""
    if (refusal := refused(ctx)) is not None:
        return refusal
    return Outcome(
        say=[say(ctx.t(UPDATE_STARTED, code=ctx.facts["staff"]["code"]))], goto="menu.main"
    )


def export(ctx: Context) -> Outcome:
    """The export is written outside the turn; the file (Telegram) or a short-lived link
    to it (Viber) follows as a notice when it is ready (bot/outreach/jobs.py)."""
    return Outcome(effects=[StaffAction("export")], goto="staff.export_done")


def export_done(ctx: Context) -> Outcome:
    return refused(ctx) or Outcome(say=[say(ctx.t(EXPORT_STARTED))], goto="menu.main")


staff = Flow(
    "staff",
    Do("status", status_start),
    Ask("status_ref", WHICH_REPORT, save="typed", on=status_ref_typed),
    Choose(
        "status_choose",
        lambda ctx: ctx.t(NEW_STATUS, reference=ctx.data["reference"]),
        [Choice(code, label) for code, label in STATUS.items()],
        on=status_chosen,
        columns=2,
    ),
    Do("status_done", status_done),
    Do("answer", answer_start),
    Ask("answer_ref", WHICH_REPORT, save="typed", on=answer_ref_typed),
    Do("answer_loaded", answer_loaded),
    Ask(
        "answer_text",
        lambda ctx: ctx.t(
            WRITE_ANSWER, reference=ctx.data["reference"], question=ctx.data["question"]
        ),
        save="answer",
        on=answer_written,
    ),
    Do("answer_done", answer_done),
    Choose(
        "answer_sent",
        lambda ctx: ctx.t(ANSWER_SENT, reference=ctx.data["reference"]),
        [Choice("faq", ADD_TO_FAQ), Choice("no", NO_THANKS)],
        on=faq_chosen,
        columns=2,
    ),
    Do("promoted", promoted),
    Do("stats", stats),
    Do("stats_show", stats_show),
    Do("campaigns", campaigns_list),
    Do("campaigns_show", campaigns_show),
    Ask("update_code", UPDATE_WHICH, save="typed", on=update_code_typed),
    Ask(
        "update_text",
        lambda ctx: ctx.t(UPDATE_TEXT, code=ctx.data["code"]),
        save="update",
        on=update_written,
    ),
    Do("update_sent", update_sent),
    Do("export", export),
    Do("export_done", export_done),
)
