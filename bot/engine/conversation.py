"""One turn of a conversation: from a resident's input to our replies and the next step.

This is where commands, typed button labels and flows meet. It holds no state of
its own: the state comes in and goes out as a `State`, stored by the engine
between turns, so a turn reads the same after a restart as before it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from bot.vocabulary.messages import Inbound, Kind, Reply
from bot.vocabulary.roles import can
from flows import (
    BEFORE_LANGUAGE,
    CAMPAIGN_LINK,
    COMMANDS,
    GLOBAL_BUTTONS,
    STAFF_COMMANDS,
    Registry,
)
from flows.core import IDLE, Ask, Context, Effect, Outcome, parse_id
from flows.menu import UNKNOWN_COMMAND

log = logging.getLogger(__name__)

MAX_HOPS = 12
PAGE = "page:"
# No keyboard has more pages than this; a larger number is the last page anyway.
MAX_PAGE = 1000
Apply = Callable[[Effect, Context], Awaitable[None]]


@dataclass
class State:
    step: str = IDLE
    data: dict[str, Any] = field(default_factory=dict)
    offered: list[list[str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"data": self.data, "offered": self.offered}

    @classmethod
    def from_json(cls, step: str | None, stored: dict[str, Any] | None) -> State:
        stored = stored or {}
        return cls(step or IDLE, dict(stored.get("data", {})), list(stored.get("offered", [])))


@dataclass(frozen=True)
class Command:
    name: str
    argument: str


def parse_command(inbound: Inbound) -> Command | None:
    if inbound.kind is Kind.START:  # a platform's "conversation opened", with its deep link
        return Command("start", inbound.payload or "")
    if inbound.kind is not Kind.TEXT or not inbound.text or not inbound.text.startswith("/"):
        return None
    head, _, rest = inbound.text[1:].strip().partition(" ")
    return Command(head.split("@", 1)[0].lower(), rest.strip())


def interpret(state: State, inbound: Inbound, free_input: bool = False) -> Inbound:
    """A typed button label, or the button's number, counts as a tap on it.

    Where the step asks for free input, a typed number is the answer (forty places,
    house 3), not the third button; only a typed label still counts as a tap.
    """
    if inbound.kind is not Kind.TEXT or not inbound.text or not state.offered:
        return inbound
    typed = inbound.text.strip().casefold()
    for index, (choice_id, label) in enumerate(state.offered, start=1):
        if typed == label.casefold() or (not free_input and typed == str(index)):
            return replace(inbound, kind=Kind.BUTTON, payload=choice_id)
    return inbound


class Conversation:
    def __init__(self, registry: Registry, apply: Apply) -> None:
        self.registry = registry
        self.apply = apply

    def _asks_free_input(self, step_id: str | None) -> bool:
        if not step_id or not self.registry.has(step_id):
            return False
        return isinstance(self.registry.step(step_id), Ask)

    def _tap_receipt(self, state: State, inbound: Inbound) -> list[Reply]:
        """Take the buttons off a tapped message, so an old keyboard is not tapped again."""
        if inbound.kind is not Kind.BUTTON or not inbound.origin_message_id:
            return []
        label = dict((i, label) for i, label in state.offered).get(inbound.payload or "")
        text = inbound.origin_text or ""
        if label:
            text = f"{text}\n\n✅ {label}"
        return [Reply(text=text or "✅", edit_message_id=inbound.origin_message_id)]

    def _begin(self, state: State, inbound: Inbound, ctx: Context) -> Outcome:
        command = parse_command(inbound)
        if ctx.profile.language is None and (
            command is None or command.name not in BEFORE_LANGUAGE
        ):
            if inbound.kind is Kind.BUTTON and state.step == "onboarding.language":
                return self.registry.step(state.step).handle(ctx, inbound)
            return self._restart(ctx, inbound, command.argument if command else "")
        if command is not None:
            if command.name == "start":
                return self._restart(ctx, inbound, command.argument)
            if command.name in STAFF_COMMANDS:
                operation, target = STAFF_COMMANDS[command.name]
                ctx.data.clear()
                if not can(ctx.profile.staff_role, operation):
                    return Outcome(goto="menu.main")
                ctx.facts["argument"] = command.argument
                return Outcome(goto=target)
            target = COMMANDS.get(command.name)
            if target is None:
                say = Reply(ctx.t(UNKNOWN_COMMAND, command="/" + command.name))
                return Outcome(say=[say], goto="menu.main")
            ctx.data.clear()
            return Outcome(goto=target)
        handler = self._global_button(inbound)
        if handler is not None:
            return handler(ctx)
        if state.step and not self.registry.has(state.step):
            # A step an older version stored, since renamed or moved (the staff broadcast
            # left the "staff" flow): the conversation starts again at the menu.
            return Outcome(goto="menu.main")
        if state.step and inbound.kind is Kind.BUTTON and (inbound.payload or "").startswith(PAGE):
            return self._page(state, inbound, ctx)
        if state.step:
            return self.registry.step(state.step).handle(ctx, inbound)
        return Outcome(goto="menu.main")

    def _global_button(self, inbound: Inbound) -> Callable[[Context], Outcome] | None:
        """Buttons under notices (a follow-up, a reminder) work from any step."""
        if inbound.kind is not Kind.BUTTON or not inbound.payload:
            return None
        for prefix, handle in GLOBAL_BUTTONS.items():
            if inbound.payload.startswith(prefix + ":"):
                argument = inbound.payload[len(prefix) + 1 :]
                return lambda ctx: handle(ctx, argument)
        return None

    def _page(self, state: State, inbound: Inbound, ctx: Context) -> Outcome:
        """Another page of a long keyboard (Viber): the same question, other buttons."""
        page = (inbound.payload or "")[len(PAGE) :]
        outcome = self.registry.step(state.step).enter(ctx)
        number = parse_id(page, MAX_PAGE) or 0
        outcome.say = [replace(r, page=number) if r.buttons else r for r in outcome.say]
        return outcome

    def _restart(self, ctx: Context, inbound: Inbound, payload: str) -> Outcome:
        """`/start` (also from a poster's deep link): new residents pick a language."""
        ctx.data.clear()
        if inbound.platform_language:
            ctx.data["language_hint"] = inbound.platform_language
        if payload:
            ctx.data["source"] = payload[:64]
            if ctx.content.municipality(payload):
                ctx.data["municipality"] = payload
        if ctx.profile.language is None or ctx.profile.consent is None:
            return Outcome(goto="onboarding.language")
        if payload.startswith(CAMPAIGN_LINK) and ctx.profile.consent:
            ctx.facts["follow"] = payload[len(CAMPAIGN_LINK) :]
            return Outcome(goto="campaigns.from_link")
        return Outcome(goto="menu.welcome_back")

    async def turn(self, state: State, inbound: Inbound, ctx: Context) -> tuple[list[Reply], State]:
        ctx.data = state.data
        inbound = interpret(state, inbound, free_input=self._asks_free_input(state.step))
        replies = self._tap_receipt(state, inbound)
        outcome = self._begin(state, inbound, ctx)
        step = state.step
        for _hop in range(MAX_HOPS):
            replies.extend(outcome.say)
            for effect in outcome.effects:
                await self.apply(effect, ctx)
            if outcome.goto is None:
                break
            if outcome.goto.partition(".")[0] != step.partition(".")[0]:
                keep = {
                    k: ctx.data[k]
                    for k in ("language_hint", "source", "municipality")
                    if k in ctx.data and outcome.goto.startswith("onboarding.")
                }
                ctx.data.clear()
                ctx.data.update(keep)
            step = outcome.goto
            if step == IDLE:
                break
            outcome = self.registry.step(step).enter(ctx)
        else:
            log.error("conversation hopped %d times without waiting; resting at %s", MAX_HOPS, step)
        offered = [[b.id, b.label] for row in replies[-1].buttons for b in row] if replies else []
        if not step:
            offered = []
        return replies, State(step, ctx.data if step else {}, offered)
