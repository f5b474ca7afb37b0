"""Settings: language, municipality, and erasing one's data."""

from __future__ import annotations

from bot.i18n import _
from flows.core import BACK, Choice, Choose, Flow
from flows.menu import LANGUAGE

SETTINGS = _("Settings: what would you like to change?")

MUNICIPALITY = _("🏘 Municipality")
DELETE = _("🗑 Delete my data")

ROUTES = {
    "language": "onboarding.language",
    "municipality": "onboarding.municipality",
    "delete": "privacy.confirm_delete",
    "back": "menu.main",
}

settings = Flow(
    "settings",
    Choose(
        "main",
        SETTINGS,
        [
            Choice("language", LANGUAGE),
            Choice("municipality", MUNICIPALITY),
            Choice("delete", DELETE),
            Choice("back", BACK),
        ],
        on=lambda ctx, choice: ROUTES[choice],
    ),
)
