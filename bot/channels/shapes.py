"""What a platform may send us, checked where it enters: one limit per field.

Both adapters read request bodies through these helpers, so every string that
reaches the engine is bounded to what storage holds on SQLite and PostgreSQL
alike (PostgreSQL enforces VARCHAR lengths and refuses NUL characters, SQLite
does neither), and every number is finite and in range. What is not the
platform's shape raises `Malformed`, which a webhook answers with 400 before
anything is stored.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from bot.vocabulary.messages import LIMITS

# Deeper than either platform nests an event (a Telegram callback's message with a
# reply's quoted message is about 8 levels): refused before json parses it.
MAX_DEPTH = 24
ASCII_DIGITS = re.compile(r"[0-9]{1,20}")
# An IETF language tag's letters as platforms send them ("ru", "pt-br", "en_US").
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8})*")
UINT64 = 2**64
MALFORMED_TYPES = (ValueError, TypeError, KeyError, AttributeError, RecursionError)


class Malformed(ValueError):
    """A body that is not the platform's shape; the text names the field, never its value."""


def _depth_ok(body: bytes, limit: int) -> bool:
    """Brackets nest no deeper than `limit`, counted outside JSON strings."""
    depth = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return False
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return True


def load_object(body: bytes, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """A JSON object from a request body, or `Malformed` (bad JSON, too deep, not an object).

    NaN and ±Infinity are not JSON, though Python's parser reads them: refused here.
    """
    if body.count(b"[") + body.count(b"{") > max_depth and not _depth_ok(body, max_depth):
        raise Malformed("nested deeper than the platform sends")
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError, UnicodeDecodeError) as error:
        raise Malformed(f"not JSON: {type(error).__name__}") from None
    if not isinstance(data, dict):
        raise Malformed("not a JSON object")
    return data


def header_bytes(value: str) -> bytes:
    """A header as bytes for a constant-time compare: `hmac.compare_digest` refuses str
    with non-ASCII characters (a TypeError, so a 500), bytes never."""
    return value.encode("utf-8", "surrogatepass")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def text(value: object, limit: int, field: str) -> str | None:
    """An optional string, NUL characters removed (PostgreSQL refuses them), cut to `limit`."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Malformed(f"{field} is not a string")
    return value.replace("\x00", "")[:limit]


def required_text(value: object, limit: int, field: str) -> str:
    found = text(value, limit, field)
    if not found:
        raise Malformed(f"{field} is missing")
    return found


def address(value: object, field: str) -> str:
    """A Viber user id as we store it: never cut (we answer to it), so an id longer than
    any the platform hands out, or not a string at all, is not the platform's."""
    if not isinstance(value, str) or not value or not value.isprintable():
        raise Malformed(f"{field} is not an id")
    if len(value) > LIMITS.address:
        raise Malformed(f"{field} is too long")
    return value


def chat_id(value: object, field: str) -> str:
    """A Telegram chat id: a signed 64-bit integer (private chats are positive)."""
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
        raise Malformed(f"{field} is not an id")
    return str(value)


def unsigned_id(value: object, field: str) -> str:
    """A 64-bit unsigned id (Telegram's update_id, Viber's message_token) as ASCII digits."""
    if isinstance(value, bool):
        raise Malformed(f"{field} is not an integer")
    if isinstance(value, int):
        if not 0 <= value < UINT64:
            raise Malformed(f"{field} is out of range")
        return str(value)
    if isinstance(value, str) and ASCII_DIGITS.fullmatch(value) and int(value) < UINT64:
        return str(int(value))
    raise Malformed(f"{field} is not an integer")


def language(value: object) -> str | None:
    """A platform's language hint, if it reads as a tag; only a hint, so junk is dropped."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not LANGUAGE_TAG.fullmatch(value):
        return None
    return value[: LIMITS.platform_language]


def name(*parts: object) -> str | None:
    """A display name from its parts (first and last name), cut to what storage holds."""
    words = [p.replace("\x00", "").strip() for p in parts if isinstance(p, str)]
    joined = " ".join(w for w in words if w)
    return joined[: LIMITS.display_name] or None


def coordinates(latitude: object, longitude: object) -> tuple[float, float] | None:
    """A point on Earth, or None: NaN, ±inf and out-of-range values are not a location."""
    try:
        lat, lon = float(latitude), float(longitude)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    if isinstance(latitude, bool) or isinstance(longitude, bool):
        return None
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None
    return lat, lon


def mapping(value: object, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise Malformed(f"{field} is not an object")
    return value


def optional_mapping(value: object, field: str) -> Mapping[str, Any] | None:
    return None if value is None else mapping(value, field)
