"""Khma's conversations, and the commands that reach them from any step."""

from __future__ import annotations

from dataclasses import dataclass

from flows.core import Flow, Step
from flows.dcfta import dcfta
from flows.menu import menu
from flows.mine import mine
from flows.onboarding import onboarding
from flows.privacy import privacy
from flows.report import report
from flows.settings import settings

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


@dataclass(frozen=True)
class Registry:
    flows: dict[str, Flow]

    def step(self, step_id: str) -> Step:
        flow, _, name = step_id.partition(".")
        return self.flows[flow].steps[name]


REGISTRY = Registry({f.name: f for f in (onboarding, menu, report, dcfta, mine, settings, privacy)})
