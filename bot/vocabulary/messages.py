"""The two shapes every channel speaks: what a resident sent, what we answer.

Adapters turn platform events into `Inbound` and render `Reply`; the engine and
the flows see nothing else, which is what keeps them channel-free. Both shapes
round-trip through JSON because both are stored (inbox and outbox) before use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    TEXT = "text"
    BUTTON = "button"
    PHOTO = "photo"
    VOICE = "voice"
    VIDEO = "video"
    DOCUMENT = "document"
    STICKER = "sticker"
    LOCATION = "location"
    CONTACT = "contact"
    START = "start"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"
    OTHER = "other"


MEDIA_KINDS = frozenset({Kind.PHOTO, Kind.VOICE, Kind.VIDEO, Kind.DOCUMENT})
# Platform news about a resident rather than something they said.
SYSTEM_KINDS = frozenset({Kind.SUBSCRIBED, Kind.UNSUBSCRIBED})
# Telegram and Viber both refuse files a bot sends above 50 MB.
FILE_LIMIT = 50 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """The longest each `Inbound` field may be, in characters: what storage holds on both
    databases (storage/models.py sizes its columns to at least these; a test checks). The
    adapters cut names, language hints and texts to them and refuse longer ids."""

    address: int = 64
    external_id: int = 64
    # Telegram's first and last names (64 characters each) cut by one: the staff name on a
    # broadcast and a report's shared name hold 128 as well.
    display_name: int = 128
    platform_language: int = 16
    # Telegram texts are at most 4096 characters, Viber's about 7000.
    text: int = 8192
    payload: int = 256
    media_id: int = 2048


LIMITS = Limits()


@dataclass(frozen=True)
class Inbound:
    """One thing a resident did, whichever app they did it in."""

    channel: str
    address: str
    external_id: str
    kind: Kind
    text: str | None = None
    payload: str | None = None
    media_id: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    display_name: str | None = None
    platform_language: str | None = None
    origin_message_id: str | None = None
    origin_text: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Inbound:
        return cls(**{**data, "kind": Kind(data["kind"])})


@dataclass(frozen=True)
class Button:
    """A choice's stable ASCII id (what comes back) and its translated label (what shows)."""

    id: str
    label: str


@dataclass(frozen=True)
class Reply:
    text: str
    buttons: tuple[tuple[Button, ...], ...] = field(default_factory=tuple)
    photo_id: str | None = None
    edit_message_id: str | None = None
    page: int = 0
    document: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"text": self.text}
        if self.buttons:
            data["buttons"] = [[[b.id, b.label] for b in row] for row in self.buttons]
        if self.photo_id:
            data["photo_id"] = self.photo_id
        if self.edit_message_id:
            data["edit_message_id"] = self.edit_message_id
        if self.page:
            data["page"] = self.page
        if self.document:
            data["document"] = self.document
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reply:
        rows = tuple(tuple(Button(i, label) for i, label in row) for row in data.get("buttons", []))
        return cls(
            text=data["text"],
            buttons=rows,
            photo_id=data.get("photo_id"),
            edit_message_id=data.get("edit_message_id"),
            page=data.get("page", 0),
            document=data.get("document"),
        )


def split_text(text: str, limit: int) -> list[str]:
    """Split at paragraph or line breaks where possible, so no piece exceeds the limit."""
    pieces: list[str] = []
    while len(text) > limit:
        cut = limit
        for separator in ("\n\n", "\n", " "):
            found = text.rfind(separator, 0, limit)
            if found > limit // 2:
                cut = found
                break
        pieces.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    pieces.append(text)
    return pieces
