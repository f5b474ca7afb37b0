"""What the dispatcher needs from a platform, and how a platform says no.

A channel sends one `Reply` to one address and either returns the platform's
message id or raises one of the errors below; the dispatcher decides what each
means for the outbox row, so no adapter writes retry logic of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bot.vocabulary.messages import Inbound, Reply


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


class Held(DeliveryError):
    """The platform will take no more until the resident writes again (Viber status 12)."""


@dataclass(frozen=True)
class WebhookAnswer:
    """What a webhook handler answers the platform: a status, and a body Viber may read."""

    status: int
    text: str = ""
    json: Mapping[str, Any] | None = None


class Inbox(Protocol):
    """What an adapter hands received events to (the engine)."""

    async def accept(self, inbound: Inbound) -> bool: ...

    async def welcome(self, inbound: Inbound) -> list[Reply]: ...

    async def delivery_report(self, channel: str, message_id: str, status: str) -> None: ...


PartSent = Callable[[int], Awaitable[None]]
"""Told how many parts of a reply are out, after each part but the last; it may raise to
stop the rest (the dispatcher does when its claim on the message no longer holds)."""


class Channel(Protocol):
    name: str

    async def send(
        self, address: str, reply: Reply, *, first_part: int = 0, part_sent: PartSent | None = None
    ) -> str | None:
        """Send `reply` from its part `first_part` on (a long text goes as several parts)."""
        ...


async def send_parts(
    parts: Sequence[Callable[[], Awaitable[str | None]]],
    first_part: int,
    part_sent: PartSent | None,
) -> str | None:
    """Send the parts of one reply in order, skipping those already out, and report each one,
    so a failure of a later part never makes an earlier one go again. Returns the last id."""
    message_id = None
    for index in range(first_part, len(parts)):
        message_id = await parts[index]()
        if part_sent is not None and index < len(parts) - 1:
            await part_sent(index + 1)
    return message_id


class WebhookChannel(Channel, Protocol):
    """A channel whose platform calls us at `/webhooks/<name>`."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def receive_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookAnswer: ...
