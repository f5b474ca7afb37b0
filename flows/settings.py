"""Settings: language, municipality, linking Telegram and Viber, erasing one's data."""

from __future__ import annotations

from bot.vocabulary.i18n import _, ngettext
from flows.core import (
    BACK,
    Ask,
    Choice,
    Choose,
    Context,
    CreateLinkCode,
    Do,
    Flow,
    LinkAccounts,
    Outcome,
    say,
)
from flows.menu import LANGUAGE

SETTINGS = _("Settings: what would you like to change?")
MUNICIPALITY = _("🏘 Municipality")
LINK = _("🔗 Link Telegram and Viber")
DELETE = _("🗑 Delete my data")
LINK_MENU = _(
    "If you use both Telegram and Viber, link them: your language, municipality and reports "
    "will be the same in both. Get a code here and type it in the other app, or type a code "
    "you got there."
)
SHOW_CODE = _("Get a code")
ENTER_CODE = _("I have a code")
CODE_SHOWN = _(
    "Your code: {code}\n\n"
    "In your other app open ⚙️ Settings → 🔗 Link Telegram and Viber → “I have a code” and type "
    "it within 10 minutes. The code works once."
)
TYPE_CODE = _("Type the 6-digit code from your other app.")
CODE_HOW = _("Please type the code in digits.")
LINKED = _("Done: your two apps are linked. “My reports” now shows your reports from both.")
NOT_LINKED = _(
    "This code does not work: it may be mistyped, already used, or older than 10 minutes. "
    "Get a new code in your other app and try again."
)
TOO_MANY_CODES = ngettext(
    "You have typed too many codes. To keep your data safe, please wait {n} minute before "
    "you try again.",
    "You have typed too many codes. To keep your data safe, please wait {n} minutes before "
    "you try again.",
)

ROUTES = {
    "language": "onboarding.language",
    "municipality": "onboarding.municipality",
    "link": "settings.link",
    "delete": "privacy.confirm_delete",
    "back": "menu.main",
}
LINK_ROUTES = {"show": "settings.show_code", "enter": "settings.enter_code", "back": "menu.main"}


def code_shown(ctx: Context) -> Outcome:
    return Outcome(say=[say(ctx.t(CODE_SHOWN, code=ctx.facts["link_code"]))], goto="menu.main")


def code_typed(ctx: Context) -> Outcome:
    code = "".join(ctx.data["code"].get("text", "").split())
    return Outcome(effects=[LinkAccounts(code)], goto="settings.linked")


def linked(ctx: Context) -> Outcome:
    wait = ctx.facts.get("link_wait")
    if wait:
        return Outcome(say=[say(ctx.t(TOO_MANY_CODES, n=wait))], goto="menu.main")
    message = LINKED if ctx.facts.get("linked") else NOT_LINKED
    return Outcome(say=[say(ctx.t(message))], goto="menu.main")


settings = Flow(
    "settings",
    Choose(
        "main",
        SETTINGS,
        [
            Choice("language", LANGUAGE),
            Choice("municipality", MUNICIPALITY),
            Choice("link", LINK),
            Choice("delete", DELETE),
            Choice("back", BACK),
        ],
        on=lambda ctx, choice: ROUTES[choice],
    ),
    Choose(
        "link",
        LINK_MENU,
        [Choice("show", SHOW_CODE), Choice("enter", ENTER_CODE), Choice("back", BACK)],
        on=lambda ctx, choice: LINK_ROUTES[choice],
    ),
    Do("show_code", lambda ctx: Outcome(effects=[CreateLinkCode()])),
    Do("code_shown", code_shown),
    Ask("enter_code", TYPE_CODE, save="code", wanted=CODE_HOW, on=code_typed),
    Do("linked", linked),
)
