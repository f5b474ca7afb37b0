"""What a staff operation refuses, typed so each front end can say it its own way.

No database and no gettext here: the chat renders these in the staff member's
language, the CLI as one line on stderr with an exit status per class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar


@dataclass(eq=False)
class OperationError(Exception):
    """Base of every refusal; `code` names the class for front ends that speak JSON."""

    code: ClassVar[str] = "error"
    exit_status: ClassVar[int] = 1

    def __post_init__(self) -> None:
        Exception.__init__(self, str(self))

    def to_json(self) -> dict[str, Any]:
        return {"error": self.code, **asdict(self)}


@dataclass(eq=False)
class NotAllowed(OperationError):
    """The actor's role does not permit the operation (a resident has no role)."""

    operation: str
    role: str | None

    code: ClassVar[str] = "not_allowed"
    exit_status: ClassVar[int] = 3

    def __str__(self) -> str:
        return f"a {self.role or 'resident'} may not run {self.operation}"


@dataclass(eq=False)
class NotFound(OperationError):
    """The broadcast, event, campaign, report or staff member does not exist."""

    what: str
    key: str

    code: ClassVar[str] = "not_found"
    exit_status: ClassVar[int] = 4

    def __str__(self) -> str:
        return f"no {self.what} {self.key}"


@dataclass(eq=False)
class Invalid(OperationError):
    """An input field cannot be used; `reason` is one of the REASONS below."""

    field: str
    reason: str
    value: str | None = None
    limit: int | None = None

    code: ClassVar[str] = "invalid"
    exit_status: ClassVar[int] = 2

    def __str__(self) -> str:
        detail = f" (at most {self.limit})" if self.limit is not None else ""
        shown = f" {self.value!r}" if self.value is not None else ""
        return f"{self.field}{shown}: {REASONS.get(self.reason, self.reason)}{detail}"


@dataclass(eq=False)
class WrongState(OperationError):
    """The thing exists but its state forbids the change (cancelled, over, finished)."""

    what: str
    key: str
    state: str

    code: ClassVar[str] = "wrong_state"
    exit_status: ClassVar[int] = 5

    def __str__(self) -> str:
        return f"{self.what} {self.key} is {self.state}"


REASONS = {
    "empty": "needs a value in at least one language",
    "language": "is not one of the languages ka, az, hy, ru, en",
    "too_long": "is too long",
    "address": "is not an http(s) web address",
    "time": "is not a date and time like 2026-12-01 10:00",
    "past": "lies in the past",
    "unknown": "is not known",
    "range": "is out of range",
    "format": "has the wrong form",
}
ERRORS: dict[str, type[OperationError]] = {
    cls.code: cls for cls in (NotAllowed, NotFound, Invalid, WrongState)
}
