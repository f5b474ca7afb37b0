"""The main menu, help and cancel: where every conversation comes back to."""

from __future__ import annotations

from bot.vocabulary.i18n import _
from flows.core import Choice, Choose, Context, Do, Flow, Outcome, say

EVENTS = _("📅 Events")
CAMPAIGNS = _("📣 Campaigns")

WHAT_NEXT = _("What would you like to do?")
REPORT = _("📝 Report a need")
DCFTA = _("🇪🇺 Trade with the EU (DCFTA)")
MINE = _("📋 My reports")
SETTINGS = _("⚙️ Settings")
HELP = _("❓ Help")
JOIN = _("🙋 I want to take part")
LANGUAGE = _("🌐 Language")
HELP_TEXT = _(
    "Khma passes your community's needs to civil-society organisations, who raise them with "
    "local government.\n\n"
    "• Report a need — roads, water, gas, schools, health, jobs and more. You get a reference "
    "number and we tell you when something happens.\n"
    "• Trade with the EU — answers about the DCFTA for small businesses, or ask your own "
    "question.\n\n"
    "Commands you can send at any time:\n"
    "/menu — main menu\n"
    "/language — change language\n"
    "/cancel — stop what you are doing\n"
    "/mydata — see everything we store about you\n"
    "/delete — erase your personal data\n"
    "/help — this message"
)
CANCELLED = _("Cancelled. Nothing from the unfinished step was saved.")
UNKNOWN_COMMAND = _("I do not know the command {command}. Here is the menu:")
WELCOME_BACK = _("Welcome back!")


def menu_choices(ctx: Context) -> list[Choice]:
    if ctx.profile.consent:
        return [
            Choice("report", REPORT),
            Choice("dcfta", DCFTA),
            Choice("mine", MINE),
            Choice("events", EVENTS),
            Choice("campaigns", CAMPAIGNS),
            Choice("settings", SETTINGS),
            Choice("help", HELP),
        ]
    return [
        Choice("dcfta", DCFTA),
        Choice("join", JOIN),
        Choice("language", LANGUAGE),
        Choice("help", HELP),
    ]


ROUTES = {
    "report": "report.category",
    "dcfta": "dcfta.load",
    "mine": "mine.load",
    "events": "events.load",
    "campaigns": "campaigns.load",
    "settings": "settings.main",
    "help": "menu.help",
    "join": "onboarding.municipality",
    "language": "onboarding.language",
}


def route(ctx: Context, choice: str) -> str:
    return ROUTES[choice]


def show_help(ctx: Context) -> Outcome:
    return Outcome(say=[say(ctx.t(HELP_TEXT))], goto="menu.main")


def cancel(ctx: Context) -> Outcome:
    return Outcome(say=[say(ctx.t(CANCELLED))], goto="menu.main")


def welcome_back(ctx: Context) -> Outcome:
    return Outcome(say=[say(ctx.t(WELCOME_BACK))], goto="menu.main")


menu = Flow(
    "menu",
    Choose("main", WHAT_NEXT, menu_choices, on=route, columns=1),
    Do("help", show_help),
    Do("cancel", cancel),
    Do("welcome_back", welcome_back),
)
