"""The Telegram adapter, table-style: real update bodies in, one `Inbound` (or an answer) out.

Verification and parsing take a plain request (headers, raw body), so these
rows need neither a server nor a database.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.channels.telegram import SECRET_HEADER, TelegramChannel
from bot.config import Settings
from bot.vocabulary.messages import Inbound, Kind, split_text

USER = {
    "id": 4242,
    "is_bot": False,
    "first_name": "Gulnar",
    "last_name": "Aliyeva",
    "language_code": "az",
}
CHAT = {"id": 4242, "type": "private", "first_name": "Gulnar"}
BOT = {"id": 123456, "is_bot": True, "first_name": "Khma", "username": "khma_test_bot"}


def message(**content: Any) -> dict[str, Any]:
    return {
        "update_id": 900001,
        "message": {"message_id": 11, "date": 1767225600, "chat": CHAT, "from": USER, **content},
    }


PHOTO = [
    {
        "file_id": f"AgAC-{w}",
        "file_unique_id": f"u{w}",
        "width": w,
        "height": w,
        "file_size": w * 10,
    }
    for w in (90, 320, 1280)
]
ROWS: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = [
    ("text", message(text="Salam"), {"kind": Kind.TEXT, "text": "Salam"}),
    (
        "command with deep link",
        message(
            text="/start marneuli", entities=[{"offset": 0, "length": 6, "type": "bot_command"}]
        ),
        {"kind": Kind.TEXT, "text": "/start marneuli"},
    ),
    (
        "photo picks the largest size",
        message(photo=PHOTO, caption="Yol"),
        {"kind": Kind.PHOTO, "media_id": "AgAC-1280", "text": "Yol"},
    ),
    (
        "voice",
        message(
            voice={
                "file_id": "AwAC-v",
                "file_unique_id": "v",
                "duration": 4,
                "mime_type": "audio/ogg",
            }
        ),
        {"kind": Kind.VOICE, "media_id": "AwAC-v"},
    ),
    (
        "sticker",
        message(
            sticker={
                "file_id": "CAAC",
                "file_unique_id": "s",
                "type": "regular",
                "width": 512,
                "height": 512,
                "is_animated": False,
                "is_video": False,
                "emoji": "👍",
            }
        ),
        {"kind": Kind.STICKER},
    ),
    (
        "location",
        message(location={"latitude": 41.4759, "longitude": 44.8089}),
        {"kind": Kind.LOCATION, "latitude": 41.4759, "longitude": 44.8089},
    ),
    (
        "document",
        message(
            document={
                "file_id": "BQAC-d",
                "file_unique_id": "d",
                "file_name": "a.pdf",
                "mime_type": "application/pdf",
            }
        ),
        {"kind": Kind.DOCUMENT, "media_id": "BQAC-d"},
    ),
    (
        "contact",
        message(contact={"phone_number": "+995555000000", "first_name": "G"}),
        {"kind": Kind.CONTACT},
    ),
    ("poll is something else", message(dice={"emoji": "🎲", "value": 3}), {"kind": Kind.OTHER}),
    (
        "button tap",
        {
            "update_id": 900002,
            "callback_query": {
                "id": "77",
                "from": USER,
                "chat_instance": "-1",
                "data": "water",
                "message": {
                    "message_id": 10,
                    "date": 1767225600,
                    "chat": CHAT,
                    "from": BOT,
                    "text": "What is the need about?",
                },
            },
        },
        {
            "kind": Kind.BUTTON,
            "payload": "water",
            "origin_message_id": "10",
            "origin_text": "What is the need about?",
        },
    ),
    (
        "group message is not a resident's",
        {
            "update_id": 900003,
            "message": {
                "message_id": 1,
                "date": 1767225600,
                "from": USER,
                "chat": {"id": -100, "type": "group", "title": "x"},
                "text": "hi",
            },
        },
        None,
    ),
    (
        "edited message is not new input",
        {
            "update_id": 900004,
            "edited_message": {
                "message_id": 11,
                "date": 1767225600,
                "edit_date": 1767225700,
                "chat": CHAT,
                "from": USER,
                "text": "Salam!",
            },
        },
        None,
    ),
]


class Recorder:
    def __init__(self) -> None:
        self.stored: list[Inbound] = []
        self.fail = False

    async def __call__(self, inbound: Inbound) -> bool:
        if self.fail:
            raise OSError("database is down")
        self.stored.append(inbound)
        return True


def channel(secret: str | None = "s3cret-token") -> tuple[TelegramChannel, Recorder]:
    env = {"TELEGRAM_TOKEN": "1:x", "TELEGRAM_API_URL": "http://127.0.0.1:9"}
    if secret:
        env["TELEGRAM_WEBHOOK_SECRET"] = secret
    recorder = Recorder()
    return TelegramChannel(Settings.from_env(env), recorder), recorder


@pytest.mark.parametrize(("case", "update", "expected"), ROWS, ids=[r[0] for r in ROWS])
async def test_update_becomes_one_inbound(case: str, update: dict, expected: dict | None) -> None:
    tg, recorder = channel()
    answer = await tg.receive_webhook({SECRET_HEADER: "s3cret-token"}, json.dumps(update).encode())
    assert answer.status == 200
    if expected is None:
        assert recorder.stored == []
        return
    [inbound] = recorder.stored
    assert inbound.channel == "telegram"
    assert inbound.address == "4242"
    assert inbound.external_id == str(update["update_id"])
    assert inbound.display_name == "Gulnar Aliyeva"
    assert inbound.platform_language == "az"
    for field, value in expected.items():
        assert getattr(inbound, field) == value, field


WEBHOOK_ROWS = [
    ("right secret", {SECRET_HEADER: "s3cret-token"}, b'{"update_id": 1}', 200, False),
    ("wrong secret", {SECRET_HEADER: "guess"}, json.dumps(message(text="x")).encode(), 403, False),
    ("missing secret", {}, json.dumps(message(text="x")).encode(), 403, False),
    ("malformed json", {SECRET_HEADER: "s3cret-token"}, b"{not json", 400, False),
    ("not an update", {SECRET_HEADER: "s3cret-token"}, b"[1, 2]", 400, False),
    (
        "storage down",
        {SECRET_HEADER: "s3cret-token"},
        json.dumps(message(text="x")).encode(),
        503,
        True,
    ),
]


@pytest.mark.parametrize(
    ("case", "headers", "body", "status", "db_down"), WEBHOOK_ROWS, ids=[r[0] for r in WEBHOOK_ROWS]
)
async def test_webhook_answers(
    case: str, headers: dict, body: bytes, status: int, db_down: bool
) -> None:
    tg, recorder = channel()
    recorder.fail = db_down
    answer = await tg.receive_webhook(headers, body)
    assert answer.status == status
    if status != 200:
        assert recorder.stored == []


def test_long_text_is_split_at_line_breaks_within_the_limit() -> None:
    text = "\n\n".join(f"{i}: " + "ა" * 1500 for i in range(5))
    pieces = split_text(text, 4096)
    assert all(len(p) <= 4096 for p in pieces)
    assert "".join("".join(pieces).split()) == "".join(text.split())
    assert pieces[0].endswith("ა") and pieces[1].startswith("2:"), "cut at a paragraph break"
    assert split_text("short", 4096) == ["short"]


def named(first: str, last: str | None = None, language: str | None = "az") -> dict[str, Any]:
    user = {"id": 4242, "is_bot": False, "first_name": first}
    if last is not None:
        user["last_name"] = last
    if language is not None:
        user["language_code"] = language
    return message(text="Salam") | {"message": message(text="Salam")["message"] | {"from": user}}


def membership(status: str, chat: dict[str, Any] = CHAT) -> dict[str, Any]:
    """Telegram's my_chat_member update: the bot's status in a chat changed."""
    member = {"user": BOT, "status": status}
    if status == "kicked":
        member["until_date"] = 0
    return {
        "update_id": 900010,
        "my_chat_member": {
            "chat": chat,
            "from": USER,
            "date": 1767225600,
            "old_chat_member": {"user": BOT, "status": "member"},
            "new_chat_member": member,
        },
    }


def raw(update: dict[str, Any], old: str, new: str) -> bytes:
    """An update's JSON with one piece of text replaced, for what json.dumps cannot write."""
    body = json.dumps(update)
    assert old in body
    return body.replace(old, new).encode()


DEEP = b'{"update_id": 1, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
LONG = "ж" * 64

# Fields bounded where they enter: one row per case; `expected` None means nothing stored.
BOUNDED_ROWS: list[tuple[str, dict[str, Any] | bytes, int, dict[str, Any] | None]] = [
    (
        "names of 64 and 64 characters fit the 128 stored",
        named(LONG, LONG),
        200,
        {"display_name": f"{LONG} {LONG}"[:128], "text": "Salam"},
    ),
    (
        "language code of 40 characters is no hint",
        named("G", language="a" * 40),
        200,
        {"platform_language": None},
    ),
    (
        "language code with a region is kept",
        named("G", language="pt-br"),
        200,
        {"platform_language": "pt-br"},
    ),
    ("NUL characters in a text are dropped", message(text="Yo\x00l\x00"), 200, {"text": "Yol"}),
    (
        "NUL characters in a caption are dropped",
        message(photo=PHOTO, caption="\x00Yol"),
        200,
        {"kind": Kind.PHOTO, "text": "Yol"},
    ),
    ("NUL characters in a name are dropped", named("Gul\x00nar"), 200, {"display_name": "Gulnar"}),
    (
        "an infinite latitude is no location",
        raw(message(location={"latitude": 7.5, "longitude": 44.8}), "7.5", "1e999"),
        200,
        {"kind": Kind.OTHER, "latitude": None},
    ),
    (
        "a latitude beyond the pole is no location",
        message(location={"latitude": 90.5, "longitude": 44.8}),
        200,
        {"kind": Kind.OTHER},
    ),
    ("blocked in a private chat", membership("kicked"), 200, {"kind": Kind.UNSUBSCRIBED}),
    ("unblocked in a private chat", membership("member"), 200, {"kind": Kind.SUBSCRIBED}),
    (
        "added to a group is nobody's news",
        membership("member", {"id": -100, "type": "group", "title": "x"}),
        200,
        None,
    ),
    (
        "NaN is not JSON",
        raw(message(location={"latitude": 7.5, "longitude": 1}), "7.5", "NaN"),
        400,
        None,
    ),
    ("update_id beyond 64 bits", message(text="x") | {"update_id": 2**64}, 400, None),
    ("update_id negative", message(text="x") | {"update_id": -5}, 400, None),
    ("text not a string", message(text=5), 400, None),
    ("chat id not a number", message(text="x", chat={"id": "4242", "type": "private"}), 400, None),
    ("chat id beyond 64 bits", message(text="x", chat={"id": 2**70, "type": "private"}), 400, None),
    ("nested deeper than Telegram sends", DEEP, 400, None),
    (
        "callback data with NUL characters",
        {
            "update_id": 900011,
            "callback_query": {
                "id": "78",
                "from": USER,
                "chat_instance": "-1",
                "data": "page:\x002",
                "message": {"message_id": 10, "date": 1767225600, "chat": CHAT, "from": BOT},
            },
        },
        200,
        {"kind": Kind.BUTTON, "payload": "page:2"},
    ),
]


@pytest.mark.parametrize(
    ("case", "update", "status", "expected"), BOUNDED_ROWS, ids=[r[0] for r in BOUNDED_ROWS]
)
async def test_fields_are_bounded_where_they_enter(
    case: str, update: dict | bytes, status: int, expected: dict | None
) -> None:
    tg, recorder = channel()
    body = update if isinstance(update, bytes) else json.dumps(update).encode()
    answer = await tg.receive_webhook({SECRET_HEADER: "s3cret-token"}, body)
    assert answer.status == status
    if expected is None:
        assert recorder.stored == []
        return
    [inbound] = recorder.stored
    assert inbound.address == "4242"
    for field, value in expected.items():
        assert getattr(inbound, field) == value, field


async def test_a_non_ascii_secret_is_refused_like_any_wrong_one() -> None:
    tg, recorder = channel()
    body = json.dumps(message(text="x")).encode()
    answer = await tg.receive_webhook({SECRET_HEADER: "sécret-tökén"}, body)
    assert answer.status == 403 and recorder.stored == []
