"""Advocacy campaigns: follow from the menu or a poster's link; unfollow at any time."""

from __future__ import annotations

from dataclasses import dataclass

from bot.vocabulary.i18n import _
from flows.core import (
    BACK,
    Choice,
    Choose,
    Context,
    Do,
    Flow,
    Follow,
    LoadCampaigns,
    Outcome,
    say,
)

NONE_ACTIVE = _("There are no active campaigns right now.")
CHOOSE = _("Campaigns you can follow — updates come straight to this chat:")
FOLLOWING = _("✔ {title}")
FOLLOW = _("🔔 Follow")
UNFOLLOW = _("🔕 Unfollow")
FOLLOWED = _("You now follow “{title}”. Updates will come to this chat; unfollow at any time.")
UNFOLLOWED = _("You no longer follow “{title}”.")
UNKNOWN = _("This campaign link does not work any more.")


@dataclass(frozen=True)
class CampaignView:
    code: str
    title: str
    description: str
    following: bool


def listed(ctx: Context) -> Outcome:
    found: list[CampaignView] = ctx.facts["campaigns"]
    if not found:
        return Outcome(say=[say(ctx.t(NONE_ACTIVE))], goto="menu.main")
    ctx.data["campaigns"] = [[c.code, c.title, c.description, c.following] for c in found]
    return Outcome(goto="campaigns.choose")


def _campaign(ctx: Context, code: str | None) -> list | None:
    return next((c for c in ctx.data.get("campaigns", []) if c[0] == code), None)


def campaign_choices(ctx: Context) -> list[Choice]:
    found = [
        Choice(c[0], {"en": ctx.t(FOLLOWING, title=c[1]) if c[3] else c[1]})
        for c in ctx.data.get("campaigns", [])
    ]
    return [*found, Choice("back", BACK)]


def chosen(ctx: Context, code: str) -> str:
    if code == "back":
        return "menu.main"
    ctx.data["campaign"] = code
    return "campaigns.detail"


def detail_prompt(ctx: Context) -> str:
    campaign = _campaign(ctx, ctx.data.get("campaign"))
    return f"{campaign[1]}\n\n{campaign[2]}".strip()


def detail_choices(ctx: Context) -> list[Choice]:
    campaign = _campaign(ctx, ctx.data.get("campaign"))
    toggle = Choice("unfollow", UNFOLLOW) if campaign and campaign[3] else Choice("follow", FOLLOW)
    return [toggle, Choice("back", BACK)]


def decided(ctx: Context, choice: str) -> Outcome | str:
    if choice == "back":
        return "campaigns.choose"
    code = ctx.data["campaign"]
    return Outcome(effects=[Follow(code, choice == "follow")], goto="campaigns.result")


def result(ctx: Context) -> Outcome:
    title = ctx.facts.get("campaign")
    if title is None:
        return Outcome(say=[say(ctx.t(UNKNOWN))], goto="menu.main")
    message = FOLLOWED if ctx.facts.get("following") else UNFOLLOWED
    return Outcome(say=[say(ctx.t(message, title=title))], goto="menu.main")


def from_link(ctx: Context) -> Outcome:
    """`/start campaign-CODE` or Viber's context: follow straight away."""
    return Outcome(effects=[Follow(ctx.facts.get("follow", ""), True)], goto="campaigns.result")


campaigns = Flow(
    "campaigns",
    Do("load", lambda ctx: Outcome(effects=[LoadCampaigns()])),
    Do("list", listed),
    Choose("choose", CHOOSE, campaign_choices, on=chosen),
    Choose("detail", detail_prompt, detail_choices, on=decided, columns=2),
    Do("result", result),
    Do("from_link", from_link),
)
