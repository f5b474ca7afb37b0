"""Input checks every staff operation shares, whichever front end the input came from.

Each raises `Invalid` naming the field and why, so the chat and the CLI refuse the
same input for the same reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from bot.outreach.operations.errors import Invalid
from bot.vocabulary.languages import LANGUAGES
from flows.content import Content
from flows.staff_broadcast import PICTURE_ENDINGS

__all__ = ["LANGUAGES"]

# The `broadcasts.photo_id` and `broadcasts.link` columns' size.
ADDRESS_LIMIT = 512
# A title is read on a button and in a list: longer is a paste gone wrong.
TITLE_LIMIT = 256
# The `events.place` column's size.
PLACE_LIMIT = 256
GENDERS = ("female", "male")
AGE_GROUPS = ("under_18", "18_29", "30_44", "45_59", "60_plus")


def texts(
    field: str, given: Mapping[str, str], limit: int, required: bool = True
) -> dict[str, str]:
    """A text per known language; blank ones dropped; at least one unless not `required`."""
    found: dict[str, str] = {}
    for lang, text in given.items():
        if lang not in LANGUAGES:
            raise Invalid(f"{field}.{lang}", "language", value=lang)
        text = (text or "").strip()
        if len(text) > limit:
            raise Invalid(f"{field}.{lang}", "too_long", value=str(len(text)), limit=limit)
        if text:
            found[lang] = text
    if required and not found:
        raise Invalid(field, "empty")
    return found


def text(field: str, given: str, limit: int) -> str:
    given = (given or "").strip()
    if not given:
        raise Invalid(field, "empty")
    if len(given) > limit:
        raise Invalid(field, "too_long", value=str(len(given)), limit=limit)
    return given


def web_address(field: str, given: str | None) -> str | None:
    """An http(s) address with a host and no spaces (Telegram and Viber fetch it as is)."""
    if given is None or given == "":
        return None
    if len(given) > ADDRESS_LIMIT:
        raise Invalid(field, "too_long", value=str(len(given)), limit=ADDRESS_LIMIT)
    try:
        parts = urlsplit(given)
        host = parts.hostname
    except ValueError:  # "http://[" does not even split
        host = None
        parts = None
    if (
        parts is None
        or any(ch.isspace() for ch in given)
        or parts.scheme.lower() not in ("http", "https")
        or not host
    ):
        raise Invalid(field, "address", value=given)
    return given


def is_picture(address: str) -> bool:
    """Telegram and Viber fetch a picture by its address; any other address is a page."""
    return urlsplit(address).path.lower().endswith(PICTURE_ENDINGS)


def moment(field: str, given: datetime | str, now: datetime, tz_name: str) -> datetime:
    """A time ahead of `now`; typed ones ("2026-12-01 10:00") are read in Tbilisi time."""
    if isinstance(given, str):
        try:
            given = datetime.fromisoformat(given.strip())
        except ValueError:
            raise Invalid(field, "time", value=given) from None
    if given.tzinfo is None:
        given = given.replace(tzinfo=ZoneInfo(tz_name))
    if given <= now:
        raise Invalid(field, "past", value=given.isoformat())
    return given


def among(field: str, given: Iterable[str], known: Iterable[str]) -> tuple[str, ...]:
    allowed = set(known)
    found = tuple(given)
    for value in found:
        if value not in allowed:
            raise Invalid(field, "unknown", value=value)
    return found


def municipalities(field: str, given: Iterable[str], content: Content) -> tuple[str, ...]:
    return among(field, given, (m.code for m in content.municipalities))


def whole(field: str, given: int | None, lowest: int, highest: int) -> int | None:
    if given is None:
        return None
    if not lowest <= given <= highest:
        raise Invalid(field, "range", value=str(given), limit=highest)
    return given
