"""Khma's conversations, and the commands that reach them from any step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flows.campaigns import campaigns
from flows.core import Context, Flow, Outcome, Step
from flows.dcfta import dcfta
from flows.events import events, leave_from_reminder
from flows.followup import answered, followup
from flows.menu import menu
from flows.mine import mine
from flows.onboarding import onboarding
from flows.privacy import privacy
from flows.report import report
from flows.settings import settings
from flows.staff import staff
from flows.staff_broadcast import FIRST_TEXT, staff_broadcast
from flows.staff_events import staff_events

# Commands work at any step; each names the step it leads to.
COMMANDS = {
    "start": "onboarding.language",
    "menu": "menu.main",
    "help": "menu.help",
    "language": "onboarding.language",
    "cancel": "menu.cancel",
    "mydata": "privacy.mydata",
    "delete": "privacy.confirm_delete",
}
# What a resident who has not finished choosing a language may still do.
BEFORE_LANGUAGE = {"start", "language", "help"}
# Staff commands: the operation each leads to (its permission is in the one table,
# bot/vocabulary/roles.py) and the step it starts at. Anyone whose role may not run it
# simply gets the menu, so residents never see them.
STAFF_COMMANDS = {
    "broadcast": ("broadcast.create", FIRST_TEXT),
    "broadcast_status": ("broadcast.progress", "staff_broadcast.status"),
    "broadcast_cancel": ("broadcast.cancel", "staff_broadcast.cancel"),
    "status": ("report.status", "staff.status"),
    "answer": ("question.answer", "staff.answer"),
    "stats": ("stats", "staff.stats"),
    "export": ("export", "staff.export"),
    # Coordinators read the list; managing an event is asked of "event.load" and the rest.
    "events": ("event.list", "staff_events.list"),
    "campaigns": ("campaign.list", "staff.campaigns"),
}
# Buttons under notices work whatever the resident is doing: `prefix:argument`.
GLOBAL_BUTTONS: dict[str, Callable[[Context, str], Outcome]] = {
    "fu": answered,
    "ev:leave": leave_from_reminder,
}
CAMPAIGN_LINK = "campaign-"


@dataclass(frozen=True)
class Registry:
    flows: dict[str, Flow]

    def step(self, step_id: str) -> Step:
        flow, _, name = step_id.partition(".")
        return self.flows[flow].steps[name]

    def has(self, step_id: str) -> bool:
        """Whether this version knows the step: a stored one may predate a rename."""
        flow, _, name = step_id.partition(".")
        found = self.flows.get(flow)
        return found is not None and name in found.steps


ALL_FLOWS = (onboarding, menu, report, dcfta, mine, settings, privacy, events, campaigns, followup)
REGISTRY = Registry({f.name: f for f in (*ALL_FLOWS, staff, staff_broadcast, staff_events)})
