"""Events: upcoming meetings and trainings in the resident's municipality, and RSVP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.vocabulary.i18n import _
from flows.core import (
    BACK,
    Attend,
    Choice,
    Choose,
    Context,
    Do,
    Flow,
    LoadEvents,
    Outcome,
    parse_id,
    say,
)

NONE_UPCOMING = _("There are no upcoming events in your municipality right now.")
CHOOSE = _("Upcoming events — choose one to see the details:")
DETAILS = _("{title}\n🕒 {when}\n📍 {place}")
YOU_GO = _("✅ You are registered")
COME = _("✅ I will come")
LEAVE = _("Cancel my place")
RESULTS = {
    "going": _("You are registered. We will remind you before it starts."),
    "cancelled": _("Your place is cancelled."),
    "full": _("Sorry, this event is full."),
    "gone": _("This event is no longer open for registration."),
}


@dataclass(frozen=True)
class EventView:
    id: int
    title: str
    starts_at: datetime
    place: str
    going: bool
    description: str = ""


def listed(ctx: Context) -> Outcome:
    found: list[EventView] = ctx.facts["events"]
    if not found:
        return Outcome(say=[say(ctx.t(NONE_UPCOMING))], goto="menu.main")
    ctx.data["events"] = [
        [e.id, e.title, e.starts_at.isoformat(), e.place, e.going, e.description] for e in found
    ]
    return Outcome(goto="events.choose")


def _event(ctx: Context, event_id: str | int | None) -> list | None:
    return next((e for e in ctx.data.get("events", []) if str(e[0]) == str(event_id)), None)


def event_choices(ctx: Context) -> list[Choice]:
    found = [
        Choice(str(e[0]), {"en": f"{e[1]} · {ctx.t.date(datetime.fromisoformat(e[2]))}"})
        for e in ctx.data.get("events", [])
    ]
    return [*found, Choice("back", BACK)]


def chosen(ctx: Context, choice: str) -> str:
    if choice == "back":
        return "menu.main"
    ctx.data["event"] = choice
    return "events.detail"


def detail_prompt(ctx: Context) -> str:
    event = _event(ctx, ctx.data.get("event"))
    text = ctx.t(
        DETAILS,
        title=event[1],
        when=ctx.t.datetime(datetime.fromisoformat(event[2])),
        place=event[3],
    )
    # Lists stored before descriptions were shown have five items.
    if len(event) > 5 and event[5]:
        text = f"{text}\n\n{event[5]}"
    return f"{text}\n\n{ctx.t(YOU_GO)}" if event[4] else text


def detail_choices(ctx: Context) -> list[Choice]:
    event = _event(ctx, ctx.data.get("event"))
    action = Choice("leave", LEAVE) if event and event[4] else Choice("come", COME)
    return [action, Choice("back", BACK)]


def decided(ctx: Context, choice: str) -> Outcome | str:
    if choice == "back":
        return "events.choose"
    event_id = parse_id(str(ctx.data.get("event")))
    if event_id is None:
        return "menu.main"
    return Outcome(effects=[Attend(event_id, choice == "come")], goto="events.result")


def result(ctx: Context) -> Outcome:
    return Outcome(say=[say(ctx.t(RESULTS[ctx.facts["rsvp"]]))], goto="menu.main")


def leave_from_reminder(ctx: Context, event_id: str) -> Outcome:
    """The "cancel my place" button under a reminder, tapped whenever the resident likes."""
    number = parse_id(event_id)
    if number is None:
        return Outcome(goto="menu.main")
    return Outcome(effects=[Attend(number, False)], goto="events.result")


events = Flow(
    "events",
    Do("load", lambda ctx: Outcome(effects=[LoadEvents()])),
    Do("list", listed),
    Choose("choose", CHOOSE, event_choices, on=chosen),
    Choose("detail", detail_prompt, detail_choices, on=decided, columns=2),
    Do("result", result),
)
