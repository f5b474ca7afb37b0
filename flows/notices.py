"""What residents read when staff act: status changes, answers, reminders, updates.

These are not answers to something the resident just said, so each names what
it is about (a reference number, an event, a campaign) and stands on its own.
"""

from __future__ import annotations

from datetime import datetime

from bot.vocabulary.i18n import Translator, _
from bot.vocabulary.messages import Button, Reply
from flows.mine import STATUS

STATUS_CHANGED = _("News about your report {reference}: its status is now “{status}”.")
ANSWERED = _("An answer to your question {reference}:\n\n{answer}")
REMINDER = _("Reminder: “{title}” starts {when} at {place}.")
EVENT_MOVED = _("Changed: “{title}” now starts {when} at {place}.")
EVENT_CANCELLED = _("Cancelled: “{title}”, planned for {when}, will not take place.")
CAMPAIGN_UPDATE = _("📣 {campaign}:\n\n{text}")
FOLLOWUP = _(
    "Your report {reference} was marked as resolved a few weeks ago. Was the problem really fixed?"
)
YES = _("✅ Yes")
NO = _("❌ No")
PARTLY = _("➖ Partly")
CANCEL_RSVP = _("Cancel my place")

FOLLOWUP_PREFIX = "fu"


def pick(texts: dict[str, str], lang: str, fallback: tuple[str, ...]) -> str | None:
    """The text in the resident's language, else the first in the configured fallback order."""
    for code in (lang, *fallback):
        if texts.get(code):
            return texts[code]
    return None


def status_changed(t: Translator, reference: str, status: str) -> Reply:
    return Reply(t(STATUS_CHANGED, reference=reference, status=t(STATUS[status])))


def answered(t: Translator, reference: str, answer: str) -> Reply:
    return Reply(t(ANSWERED, reference=reference, answer=answer))


def reminder(t: Translator, title: str, starts_at: datetime, place: str, event_id: int) -> Reply:
    text = t(REMINDER, title=title, when=t.datetime(starts_at), place=place)
    return Reply(text, ((Button(f"ev:leave:{event_id}", t(CANCEL_RSVP)),),))


def event_moved(t: Translator, title: str, starts_at: datetime, place: str) -> Reply:
    return Reply(t(EVENT_MOVED, title=title, when=t.datetime(starts_at), place=place))


def event_cancelled(t: Translator, title: str, starts_at: datetime) -> Reply:
    return Reply(t(EVENT_CANCELLED, title=title, when=t.datetime(starts_at)))


def campaign_update(t: Translator, campaign: str, text: str) -> Reply:
    return Reply(t(CAMPAIGN_UPDATE, campaign=campaign, text=text))


def followup(t: Translator, reference: str, report_id: int) -> Reply:
    buttons = tuple(
        Button(f"{FOLLOWUP_PREFIX}:{answer}:{report_id}", t(label))
        for answer, label in (("yes", YES), ("no", NO), ("partly", PARTLY))
    )
    return Reply(t(FOLLOWUP, reference=reference), (buttons,))
