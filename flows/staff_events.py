"""Staff manage events in the chat: `/events` lists them, then a new one, a new time or a
cancellation.

An event is a guided conversation of its own, so it lives apart from the other staff
commands in flows/staff.py, but it is built from the broadcast's pieces: a text step per
language with Skip, the Tbilisi-time parsing and the municipality choice. What it does
reaches the engine as `StaffAction`s, which check the role again; moving or cancelling an
event tells everyone registered, in their language (bot/outreach/events.py).

Coordinators may read the list (the "read" permission) but get no buttons: creating,
moving and cancelling need the "events" permission, here and again in the engine.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.vocabulary.i18n import _, ngettext
from bot.vocabulary.languages import LANGUAGES
from bot.vocabulary.messages import Inbound, Kind
from bot.vocabulary.roles import can
from flows.core import (
    BACK,
    TOO_LONG,
    Ask,
    Choice,
    Choose,
    Context,
    Do,
    Flow,
    Outcome,
    StaffAction,
    button_label,
    parse_id,
    say,
)
from flows.events import DETAILS
from flows.menu import EVENTS
from flows.onboarding import ENDONYMS, municipalities
from flows.staff import (
    BAD_TIME,
    CANCEL,
    parse_moment,
    refusal_text,
    refused,
    text_step,
    texts,
    typed_number,
)

EVENT_LINE = _("#{id} {title} · {when} · going: {going}")
NO_EVENTS = _("No upcoming events yet.")
PICK_EVENT = _(
    "Tap an event (or type its number, like #12) to change its time or cancel it, or add a new one."
)
NEW_EVENT = _("➕ New event")
WRITE_TITLE = _("New event. Write its title in {language}, or tap “Skip”.")
NO_TITLE = _("An event needs a title in at least one language. Start again with /events.")
WRITE_DESCRIPTION = _(
    "A few words about the event in {language}: what it is about and who it is for. Or tap “Skip”."
)
STARTS = _("When does it start? Type the date and time in Tbilisi time, like 2026-12-01 18:00.")
WHERE = _("Where will it take place? Write the address or the name of the building.")
FOR_WHOM = _("For which municipality? Residents there will find it in their menu.")
ALL_MUNICIPALITIES = _("🌍 All municipalities")
CAPACITY = _("How many places are there? Type a number, or tap “Skip” if there is no limit.")
BAD_CAPACITY = _("Please type the number of places in digits, like 40, or tap “Skip”.")
CHECK = _("Please check the new event:")
DESCRIBED = _("📝 Description in: {languages}")
WHEN_WHERE = _("🕒 {when}\n📍 {place} · {municipality}")
PLACES = ngettext("👥 Limited to {n} place.", "👥 Limited to {n} places.")
NO_LIMIT = _("👥 No limit on places.")
NO_TITLE_IN = _(
    "No title in {languages}: those residents will see it in another language ({fallback})."
)
CREATE = _("✅ Create the event")
NOT_CREATED = _("The event was not created.")
CREATED = _(
    "Event #{id} is created. Residents find it in the menu under “{events}” and can register."
)
GOING = ngettext("👥 {n} resident registered.", "👥 {n} residents registered.")
CHANGE_TIME = _("🕒 Change the time")
CANCEL_EVENT = _("✖ Cancel the event")
NEW_TIME = _(
    "Type the new date and time in Tbilisi time, like 2026-12-01 18:00. Everyone registered "
    "will be told."
)
MOVED = ngettext(
    "Event #{id} now starts {when}. {n} registered resident was told.",
    "Event #{id} now starts {when}. {n} registered residents were told.",
)
CONFIRM_CANCEL = ngettext(
    "Cancel “{title}” on {when}? {n} registered resident will be told.",
    "Cancel “{title}” on {when}? {n} registered residents will be told.",
)
YES_CANCEL = _("Yes, cancel it")
MOVING = _(
    "Event #{id} now starts {when}. Everyone registered is being told; I will let you know "
    "when they have been."
)
CANCELLING = _(
    "Event #{id} is cancelled. Everyone registered is being told; I will let you know when "
    "they have been."
)
CANCELLED = ngettext(
    "Event #{id} is cancelled. {n} registered resident was told.",
    "Event #{id} is cancelled. {n} registered residents were told.",
)
NOT_OPEN = _("There is no upcoming event #{id}: it may be over or cancelled.")

# The `events.place` column's size: a longer text would fail only when it is stored.
PLACE_LIMIT = 256
# More places than any hall in the region; the column is a 32-bit integer.
MOST_PLACES = 100_000
FIRST_TITLE = f"staff_events.title_{LANGUAGES[0]}"


def _manages(ctx: Context) -> bool:
    """Whether to offer managing at all; each operation checks the role again."""
    return can(ctx.profile.staff_role, "event.load")


def _when(moment: str) -> datetime:
    return datetime.fromisoformat(moment)


# --- the list -----------------------------------------------------------------------


def start(ctx: Context) -> Outcome:
    """`/events`, or `/events 12` straight to that event."""
    number = typed_number(ctx.facts.pop("argument", None) or "")
    if number is not None and _manages(ctx):
        ctx.data["event_id"] = number
        return Outcome(goto="staff_events.load")
    return Outcome(effects=[StaffAction("event.list")], goto="staff_events.listed")


def _lines(ctx: Context) -> list[str]:
    return [
        ctx.t(
            EVENT_LINE,
            id=e["id"],
            title=e["title"],
            when=ctx.t.datetime(_when(e["starts_at"])),
            going=e["going"],
        )
        for e in ctx.data.get("events", [])
    ]


def listed(ctx: Context) -> Outcome:
    if (refusal := refused(ctx)) is not None:
        return refusal
    ctx.data["events"] = list(ctx.facts["staff"])
    if _manages(ctx):
        return Outcome(goto="staff_events.show")
    return Outcome(say=[say("\n".join(_lines(ctx)) or ctx.t(NO_EVENTS))], goto="menu.main")


def list_prompt(ctx: Context) -> str:
    lines = _lines(ctx)
    if not lines:
        return ctx.t(NO_EVENTS)
    return "\n".join(lines) + "\n\n" + ctx.t(PICK_EVENT)


def list_choices(ctx: Context) -> list[Choice]:
    found = [
        Choice(str(e["id"]), {"en": f"#{e['id']} {button_label(e['title'], 40)}"})
        for e in ctx.data.get("events", [])
    ]
    return [*found, Choice("new", NEW_EVENT), Choice("back", BACK)]


def picked(ctx: Context, choice: str) -> str:
    if choice == "back":
        return "menu.main"
    if choice == "new":
        return FIRST_TITLE
    ctx.data["event_id"] = parse_id(choice)
    return "staff_events.load" if ctx.data["event_id"] else "menu.main"


class PickEvent(Choose):
    """The list's buttons, or a typed event number ("#12") as /broadcast asks for one.

    A bare number no larger than the count of buttons already means "that button"
    everywhere in Khma; "#12" or a larger number reaches any event, listed or not.
    """

    def handle(self, ctx: Context, inbound: Inbound) -> Outcome:
        number = typed_number(inbound.text or "") if inbound.kind is Kind.TEXT else None
        if number is not None:
            ctx.data["event_id"] = number
            return Outcome(goto="staff_events.load")
        return super().handle(ctx, inbound)


# --- a new event ------------------------------------------------------------------------


def after_titles(ctx: Context) -> Outcome:
    if not _manages(ctx):
        return Outcome(goto="menu.main")
    if not texts(ctx, "title"):
        return Outcome(say=[say(ctx.t(NO_TITLE))], goto="menu.main")
    return Outcome(goto=next_description(ctx, None))


def next_description(ctx: Context, after: str | None) -> str:
    """A description is asked only in the languages that have a title: a resident reads it
    under the title, so both must be in the same language."""
    titled = texts(ctx, "title")
    later = LANGUAGES[LANGUAGES.index(after) + 1 :] if after else LANGUAGES
    return next(
        (f"staff_events.description_{lang}" for lang in later if lang in titled),
        "staff_events.starts",
    )


def start_typed(ctx: Context) -> Outcome | str:
    moment = parse_moment(ctx, ctx.data["starts"]["text"])
    if moment is None:
        return Outcome(say=[say(ctx.t(BAD_TIME))], goto="staff_events.starts")
    ctx.data["starts_at"] = moment.isoformat()
    return "staff_events.place"


def place_typed(ctx: Context) -> Outcome | str:
    typed = ctx.data["place"]["text"]
    if len(typed) > PLACE_LIMIT:
        hint = say(ctx.t(TOO_LONG, length=len(typed), limit=PLACE_LIMIT))
        return Outcome(say=[hint], goto="staff_events.place")
    return "staff_events.municipality"


def event_places(ctx: Context) -> list[Choice]:
    """The municipalities residents choose from; "all" shows the event to everyone."""
    places = [c for c in municipalities(ctx) if c.id != "other"]
    return [*places, Choice("all", ALL_MUNICIPALITIES)]


def capacity_typed(ctx: Context) -> Outcome | str:
    typed = (ctx.data.get("capacity") or {}).get("text")
    if typed is not None and parse_id(typed, MOST_PLACES) is None:
        ctx.data.pop("capacity", None)
        return Outcome(say=[say(ctx.t(BAD_CAPACITY))], goto="staff_events.capacity")
    return "staff_events.summary"


def _new_event(ctx: Context) -> dict[str, Any]:
    titles = texts(ctx, "title")
    place = ctx.data.get("municipality")
    capacity = (ctx.data.get("capacity") or {}).get("text")
    return {
        "titles": titles,
        "descriptions": {
            lang: text for lang, text in texts(ctx, "description").items() if lang in titles
        },
        "starts_at": ctx.data["starts_at"],
        "place": ctx.data["place"]["text"],
        "municipality": None if place in (None, "all") else place,
        "capacity": parse_id(capacity, MOST_PLACES) if capacity else None,
    }


def _municipality_name(ctx: Context, code: str | None) -> str:
    found = ctx.content.municipality(code) if code else None
    return ctx.label(found.names) if found else ctx.t(ALL_MUNICIPALITIES)


def summary(ctx: Context) -> str:
    event = _new_event(ctx)
    lines = [ctx.t(CHECK)]
    lines += [f"• {ENDONYMS[lang]}: {title}" for lang, title in event["titles"].items()]
    if event["descriptions"]:
        described = ", ".join(ENDONYMS[lang] for lang in event["descriptions"])
        lines.append(ctx.t(DESCRIBED, languages=described))
    lines.append(
        ctx.t(
            WHEN_WHERE,
            when=ctx.t.datetime(_when(event["starts_at"])),
            place=event["place"],
            municipality=_municipality_name(ctx, event["municipality"]),
        )
    )
    capacity = event["capacity"]
    lines.append(ctx.t(PLACES, n=capacity) if capacity else ctx.t(NO_LIMIT))
    missing = [lang for lang in LANGUAGES if lang not in event["titles"]]
    if missing:
        lines.append(
            ctx.t(
                NO_TITLE_IN,
                languages=", ".join(ENDONYMS[lang] for lang in missing),
                fallback=", ".join(ENDONYMS[lang] for lang in event["titles"]),
            )
        )
    return "\n".join(lines)


def confirmed(ctx: Context, choice: str) -> Outcome:
    if choice != "create":
        return Outcome(say=[say(ctx.t(NOT_CREATED))], goto="menu.main")
    return Outcome(
        effects=[StaffAction("event.create", _new_event(ctx))], goto="staff_events.created"
    )


def created(ctx: Context) -> Outcome:
    if (refusal := refused(ctx)) is not None:
        return refusal
    text = ctx.t(CREATED, id=ctx.facts["staff"]["id"], events=ctx.t(EVENTS))
    return Outcome(say=[say(text)], goto="menu.main")


# --- one event: a new time, or cancelled ---------------------------------------------


def load(ctx: Context) -> Outcome:
    if not _manages(ctx):
        return Outcome(goto="menu.main")
    args = {"id": ctx.data["event_id"]}
    return Outcome(effects=[StaffAction("event.load", args)], goto="staff_events.loaded")


def _closed(ctx: Context) -> Outcome:
    """No event to manage: not there, over or cancelled (by someone else meanwhile, too)."""
    refusal = ctx.facts.get("refused")
    if refusal is not None and refusal["error"] not in ("not_found", "wrong_state"):
        return Outcome(say=[say(refusal_text(ctx, refusal))], goto="menu.main")
    return Outcome(say=[say(ctx.t(NOT_OPEN, id=ctx.data["event_id"]))], goto="menu.main")


def loaded(ctx: Context) -> Outcome:
    found = ctx.facts["staff"]
    if found is None or found["status"] != "scheduled" or _when(found["starts_at"]) <= ctx.now:
        return _closed(ctx)
    ctx.data["event"] = found
    return Outcome(goto="staff_events.manage")


def card(ctx: Context) -> str:
    event = ctx.data["event"]
    when = ctx.t.datetime(_when(event["starts_at"]))
    lines = [
        f"#{event['id']} " + ctx.t(DETAILS, title=event["title"], when=when, place=event["place"]),
        ctx.t(GOING, n=event["going"]),
    ]
    if event["capacity"]:
        lines.append(ctx.t(PLACES, n=event["capacity"]))
    return "\n".join(lines)


def managed(ctx: Context, choice: str) -> str:
    return {
        "move": "staff_events.new_time",
        "cancel": "staff_events.confirm_cancel",
    }.get(choice, "staff_events.list")


def new_time_typed(ctx: Context) -> Outcome:
    moment = parse_moment(ctx, ctx.data["new_time"]["text"])
    if moment is None:
        return Outcome(say=[say(ctx.t(BAD_TIME))], goto="staff_events.new_time")
    args = {"id": ctx.data["event_id"], "starts_at": moment.isoformat()}
    return Outcome(effects=[StaffAction("event.move", args)], goto="staff_events.moved")


def moved(ctx: Context) -> Outcome:
    """Moved; everyone registered is told by a job, and staff then hear how many were."""
    found = ctx.facts["staff"]
    if found is None:
        return _closed(ctx)
    when = ctx.t.datetime(_when(found["starts_at"]))
    return Outcome(say=[say(ctx.t(MOVING, id=found["id"], when=when))], goto="menu.main")


def cancel_prompt(ctx: Context) -> str:
    event = ctx.data["event"]
    when = ctx.t.datetime(_when(event["starts_at"]))
    return ctx.t(CONFIRM_CANCEL, title=event["title"], when=when, n=event["going"])


def cancel_confirmed(ctx: Context, choice: str) -> Outcome | str:
    if choice != "yes":
        return "staff_events.manage"
    args = {"id": ctx.data["event_id"]}
    return Outcome(effects=[StaffAction("event.cancel", args)], goto="staff_events.cancelled")


def cancelled(ctx: Context) -> Outcome:
    found = ctx.facts["staff"]
    if found is None:
        return _closed(ctx)
    return Outcome(say=[say(ctx.t(CANCELLING, id=found["id"]))], goto="menu.main")


staff_events = Flow(
    "staff_events",
    Do("list", start),
    Do("listed", listed),
    PickEvent("show", list_prompt, list_choices, on=picked),
    *[text_step(lang, WRITE_TITLE, "title") for lang in LANGUAGES],
    Do("titles_done", after_titles),
    *[
        text_step(
            lang,
            WRITE_DESCRIPTION,
            "description",
            on=lambda ctx, lang=lang: next_description(ctx, lang),
        )
        for lang in LANGUAGES
    ],
    Ask("starts", STARTS, save="starts", on=start_typed),
    Ask("place", WHERE, save="place", on=place_typed),
    Choose("municipality", FOR_WHOM, event_places, save="municipality", columns=2),
    Ask("capacity", CAPACITY, save="capacity", skip=True, on=capacity_typed),
    Choose(
        "summary",
        summary,
        [Choice("create", CREATE), Choice("cancel", CANCEL)],
        on=confirmed,
    ),
    Do("created", created),
    Do("load", load),
    Do("loaded", loaded),
    Choose(
        "manage",
        card,
        [Choice("move", CHANGE_TIME), Choice("cancel", CANCEL_EVENT), Choice("back", BACK)],
        on=managed,
    ),
    Ask("new_time", NEW_TIME, save="new_time", on=new_time_typed),
    Do("moved", moved),
    Choose(
        "confirm_cancel",
        cancel_prompt,
        [Choice("yes", YES_CANCEL), Choice("back", BACK)],
        on=cancel_confirmed,
        columns=2,
    ),
    Do("cancelled", cancelled),
)
