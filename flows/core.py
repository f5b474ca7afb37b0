"""The vocabulary flows are written in: steps, choices, outcomes, effects.

A flow is a list of named steps. Entering a step says its prompt; handling a
resident's input returns an `Outcome`: what to say, where to go, and what the
engine should do (effects). Running a step never touches the database, the
network or the wall clock, so a flow can be read, and tested, as the
conversation it describes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.vocabulary.i18n import Msg, Translator, _
from bot.vocabulary.messages import MEDIA_KINDS, Button, Inbound, Kind, Reply

Label = Msg | Mapping[str, str]

# Where a conversation rests when no step is waiting for an answer.
IDLE = ""

# Ids in the database are signed 64-bit integers.
LARGEST_ID = 2**63 - 1


def parse_id(text: str | None, largest: int = LARGEST_ID) -> int | None:
    """A positive number a person typed or a button carried, or None.

    Only ASCII digits: `str.isdigit` also takes "²" and "٣", which `int` then refuses
    or reads, and a number beyond the database's integers would fail there instead.
    """
    if not text or not text.isascii() or not text.isdigit() or len(text) > len(str(largest)):
        return None
    number = int(text)
    return number if 0 < number <= largest else None


@dataclass(frozen=True)
class Choice:
    """A button: `id` is short ASCII and comes back; `label` is translated and shows."""

    id: str
    label: Label


@dataclass(frozen=True)
class Profile:
    """What a step may know about the resident; changes go back as `UpdateProfile`."""

    channel: str
    language: str | None = None
    municipality: str | None = None
    consent: bool | None = None
    gender: str | None = None
    age_group: str | None = None
    display_name: str | None = None
    staff_role: str | None = None


@dataclass
class Context:
    t: Translator
    profile: Profile
    now: datetime
    content: Any
    max_text_length: int = 2000
    data: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def label(self, label: Label) -> str:
        if isinstance(label, Msg):
            return self.t(label)
        return label.get(self.t.lang) or label["en"]


# --- effects: what a step asks the engine to do ------------------------------


@dataclass(frozen=True)
class UpdateProfile:
    changes: Mapping[str, Any]


@dataclass(frozen=True)
class SubmitReport:
    """Store a need (kind "need") or a DCFTA question (kind "dcfta"); the reference
    number comes back in `facts["reference"]`."""

    kind: str
    category: str | None
    text: str | None
    media: tuple[Mapping[str, str], ...] = ()
    latitude: float | None = None
    longitude: float | None = None
    location_municipality: str | None = None
    anonymous: bool = True


@dataclass(frozen=True)
class LoadReports:
    """Put the resident's reports and questions into `facts["reports"]`."""


@dataclass(frozen=True)
class LoadPersonalData:
    """Put everything stored about the resident into `facts["personal_data"]`."""


@dataclass(frozen=True)
class ErasePersonalData:
    """Delete the resident's personal data; their reports stay, anonymised."""


@dataclass(frozen=True)
class CreateLinkCode:
    """Make a one-time code for joining another app; it comes back in `facts["link_code"]`."""


@dataclass(frozen=True)
class LinkAccounts:
    """Join this app to the resident who made `code`; `facts["linked"]` says if it worked."""

    code: str


@dataclass(frozen=True)
class LoadEvents:
    """Upcoming events for the resident's municipality into `facts["events"]`."""


@dataclass(frozen=True)
class Attend:
    """RSVP (or cancel); the result (`going`, `cancelled`, `full`, `gone`) in `facts["rsvp"]`."""

    event_id: int
    attend: bool


@dataclass(frozen=True)
class LoadFaq:
    """Answered questions staff added to the FAQ, in the resident's language, newest first,
    into `facts["faq"]`."""


@dataclass(frozen=True)
class LoadCampaigns:
    """Active campaigns, and which the resident follows, into `facts["campaigns"]`."""


@dataclass(frozen=True)
class Follow:
    """Follow or unfollow a campaign by code; its title (or None) in `facts["campaign"]`."""

    code: str
    on: bool = True


@dataclass(frozen=True)
class AnswerFollowup:
    """Was a resolved report really fixed? The reference comes back in `facts["followup"]`."""

    report_id: int
    answer: str


@dataclass(frozen=True)
class StaffAction:
    """Something only staff may do; `name` says what, `args` how; the engine checks the role
    and puts the outcome (a summary to show) in `facts["staff"]`."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)


Effect = (
    UpdateProfile
    | LoadEvents
    | LoadFaq
    | Attend
    | LoadCampaigns
    | Follow
    | AnswerFollowup
    | StaffAction
    | SubmitReport
    | LoadReports
    | LoadPersonalData
    | ErasePersonalData
    | CreateLinkCode
    | LinkAccounts
)


@dataclass
class Outcome:
    say: list[Reply] = field(default_factory=list)
    goto: str | None = None
    effects: list[Effect] = field(default_factory=list)


def say(text: str, buttons: Sequence[Sequence[Button]] = ()) -> Reply:
    return Reply(text=text, buttons=tuple(tuple(row) for row in buttons))


# --- hints shared by every step -----------------------------------------------

PICK_A_BUTTON = _("Please choose one of the options below: tap a button or type its number.")
STICKER_HINT = _("Stickers are lovely, but I cannot read them. Please answer in words.")
TEXT_ONLY_HINT = _("Please answer with a text message.")
TOO_LONG = _(
    "Your message is too long ({length} characters). Please keep it under {limit} characters "
    "— you can send the most important part first."
)
SKIP = _("Skip")
BACK = _("⬅ Back")
MEDIA_NAMES: dict[Kind, Msg] = {
    Kind.PHOTO: _("a photo"),
    Kind.VOICE: _("a voice message"),
    Kind.VIDEO: _("a video"),
    Kind.DOCUMENT: _("a file"),
    Kind.LOCATION: _("a location"),
    Kind.CONTACT: _("a contact"),
    Kind.STICKER: _("a sticker"),
    Kind.OTHER: _("this kind of message"),
}
CANNOT_USE = _("I cannot use {what} here.")


def unsupported_hint(ctx: Context, inbound: Inbound, wanted: Msg) -> str:
    """Name what arrived and what would help, so nobody is left guessing."""
    if inbound.kind is Kind.STICKER:
        return ctx.t(STICKER_HINT)
    what = ctx.t(MEDIA_NAMES.get(inbound.kind, MEDIA_NAMES[Kind.OTHER]))
    return ctx.t(CANNOT_USE, what=what) + " " + ctx.t(wanted)


# --- steps --------------------------------------------------------------------


class Step:
    """A place in a conversation; `flow` and `next` are filled in by `Flow`."""

    name: str
    flow: str = ""
    next: str | None = None

    @property
    def id(self) -> str:
        return f"{self.flow}.{self.name}"

    def enter(self, ctx: Context) -> Outcome:
        raise NotImplementedError

    def handle(self, ctx: Context, inbound: Inbound) -> Outcome:
        raise NotImplementedError


Choices = Sequence[Choice] | Callable[[Context], Sequence[Choice]]
OnChoice = Callable[[Context, str], Outcome | str]
Prompt = Msg | Callable[[Context], str]


def _render(ctx: Context, prompt: Prompt) -> str:
    return ctx.t(prompt) if isinstance(prompt, Msg) else prompt(ctx)


class Choose(Step):
    """Ask a question with buttons. Saves the choice under `save`, then `on` or next."""

    def __init__(
        self,
        name: str,
        prompt: Prompt,
        choices: Choices,
        *,
        save: str | None = None,
        on: OnChoice | None = None,
        columns: int = 1,
        retry_hint: Msg = PICK_A_BUTTON,
    ) -> None:
        self.name, self.prompt, self.choices = name, prompt, choices
        self.save, self.on, self.columns, self.retry_hint = save, on, columns, retry_hint

    def options(self, ctx: Context) -> Sequence[Choice]:
        return self.choices(ctx) if callable(self.choices) else self.choices

    def buttons(self, ctx: Context) -> list[list[Button]]:
        flat = [Button(c.id, ctx.label(c.label)) for c in self.options(ctx)]
        return [flat[i : i + self.columns] for i in range(0, len(flat), self.columns)]

    def enter(self, ctx: Context) -> Outcome:
        return Outcome(say=[say(_render(ctx, self.prompt), self.buttons(ctx))])

    def handle(self, ctx: Context, inbound: Inbound) -> Outcome:
        ids = {c.id for c in self.options(ctx)}
        if inbound.kind is not Kind.BUTTON or inbound.payload not in ids:
            hint = (
                ctx.t(self.retry_hint)
                if inbound.kind in (Kind.TEXT, Kind.BUTTON)
                else unsupported_hint(ctx, inbound, self.retry_hint)
            )
            return Outcome(say=[say(hint, self.buttons(ctx))])
        choice = inbound.payload
        assert choice is not None
        if self.save:
            ctx.data[self.save] = choice
        if self.on is None:
            return Outcome(goto=self.next)
        result = self.on(ctx, choice)
        return Outcome(goto=result) if isinstance(result, str) else result


class Ask(Step):
    """Ask for free input: text, and where `accepts` allows, media or a location."""

    def __init__(
        self,
        name: str,
        prompt: Prompt,
        *,
        save: str,
        accepts: frozenset[Kind] = frozenset({Kind.TEXT}),
        wanted: Msg = TEXT_ONLY_HINT,
        skip: bool = False,
        on: Callable[[Context], Outcome | str] | None = None,
    ) -> None:
        self.name, self.prompt, self.save = name, prompt, save
        self.accepts, self.wanted, self.skip, self.on = accepts, wanted, skip, on

    def _buttons(self, ctx: Context) -> list[list[Button]]:
        return [[Button("skip", ctx.t(SKIP))]] if self.skip else []

    def enter(self, ctx: Context) -> Outcome:
        return Outcome(say=[say(_render(ctx, self.prompt), self._buttons(ctx))])

    def handle(self, ctx: Context, inbound: Inbound) -> Outcome:
        if self.skip and inbound.kind is Kind.BUTTON and inbound.payload == "skip":
            ctx.data.pop(self.save, None)
            return self._done(ctx)
        if inbound.kind not in self.accepts:
            hint = (
                ctx.t(self.wanted)
                if inbound.kind in (Kind.TEXT, Kind.BUTTON)
                else unsupported_hint(ctx, inbound, self.wanted)
            )
            return Outcome(say=[say(hint, self._buttons(ctx))])
        text = (inbound.text or "").strip()
        if len(text) > ctx.max_text_length:
            hint = ctx.t(TOO_LONG, length=len(text), limit=ctx.max_text_length)
            return Outcome(say=[say(hint, self._buttons(ctx))])
        if inbound.kind is Kind.TEXT and not text:
            return Outcome(say=[say(ctx.t(self.wanted), self._buttons(ctx))])
        answer: dict[str, Any] = {"kind": inbound.kind.value}
        if text:
            answer["text"] = text
        if inbound.kind in MEDIA_KINDS and inbound.media_id:
            answer["media_id"] = inbound.media_id
        if inbound.kind is Kind.LOCATION:
            answer["latitude"], answer["longitude"] = inbound.latitude, inbound.longitude
        ctx.data[self.save] = answer
        return self._done(ctx)

    def _done(self, ctx: Context) -> Outcome:
        if self.on is None:
            return Outcome(goto=self.next)
        result = self.on(ctx)
        return Outcome(goto=result) if isinstance(result, str) else result


class Do(Step):
    """A step the resident does not answer: it speaks or acts, then moves on."""

    def __init__(self, name: str, run: Callable[[Context], Outcome]) -> None:
        self.name, self.run = name, run

    def enter(self, ctx: Context) -> Outcome:
        outcome = self.run(ctx)
        if outcome.goto is None:
            outcome.goto = self.next or IDLE
        return outcome

    def handle(self, ctx: Context, inbound: Inbound) -> Outcome:
        return self.enter(ctx)


class Flow:
    """Named steps in conversational order; a step's default next is the one below it."""

    def __init__(self, name: str, *steps: Step) -> None:
        self.name = name
        self.steps: dict[str, Step] = {}
        for index, step in enumerate(steps):
            step.flow = name
            if step.next is None and index + 1 < len(steps):
                step.next = f"{name}.{steps[index + 1].name}"
            self.steps[step.name] = step

    @property
    def first(self) -> str:
        return f"{self.name}.{next(iter(self.steps))}"


# Text typed by people (a resident's question, an event's title) as a button's label:
# longer ones are cut, as phones cut them anyway.
LABEL_LIMIT = 60


def button_label(text: str, limit: int = LABEL_LIMIT) -> str:
    """One line, at most `limit` characters, cut at a word where one is near, with "…"."""
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-–—") + "…"
