"""The question weeks after a fix — was it really fixed? — answered by a button."""

from __future__ import annotations

from bot.vocabulary.i18n import _
from flows.core import AnswerFollowup, Context, Do, Flow, Outcome, parse_id, say

THANKS = _("Thank you for telling us about {reference}.")
REOPENED = _("We have reopened it, and our team will look at it again.")


def answered(ctx: Context, argument: str) -> Outcome:
    """`fu:<answer>:<report id>` from the follow-up question's buttons."""
    answer, _sep, typed = argument.partition(":")
    report_id = parse_id(typed)
    if report_id is None:
        return Outcome(goto="menu.main")
    ctx.facts["followup_answer"] = answer
    return Outcome(effects=[AnswerFollowup(report_id, answer)], goto="followup.thanks")


def thanks(ctx: Context) -> Outcome:
    reference = ctx.facts.get("followup")
    if reference is None:
        return Outcome(goto="menu.main")
    lines = [ctx.t(THANKS, reference=reference)]
    if ctx.facts.get("followup_answer") == "no":
        lines.append(ctx.t(REOPENED))
    return Outcome(say=[say(" ".join(lines))], goto="menu.main")


followup = Flow("followup", Do("thanks", thanks))
