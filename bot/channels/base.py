"""What the dispatcher needs from a platform, and how a platform says no.

A channel sends one `Reply` to one address and either returns the platform's
message id or raises one of the errors below; the dispatcher decides what each
means for the outbox row, so no adapter writes retry logic of its own.
"""

from __future__ import annotations

from typing import Protocol

from bot.messages import Reply


class DeliveryError(Exception):
    """Base of every delivery failure; the text never holds the message itself."""


class RetryLater(DeliveryError):
    """The platform asked us to slow down (Telegram 429 with retry_after)."""

    def __init__(self, after: float) -> None:
        super().__init__(f"retry after {after} s")
        self.after = after


class Unreachable(DeliveryError):
    """The resident blocked the bot or left: stop sending to them."""


class Rejected(DeliveryError):
    """The platform refused this message for good; retrying would not help."""


class Transient(DeliveryError):
    """A timeout or a 5xx: back off and try again."""


class Channel(Protocol):
    name: str

    async def send(self, address: str, reply: Reply) -> str | None: ...
