"""Property: whatever the platforms may send, Khma answers and stores it, or refuses it.

Hypothesis generates Telegram updates and Viber callbacks from the platforms' documented
schemas, up to their maxima (names of 64 + 64 characters, texts of 4096, captions of
1024, callback data of 64 bytes, Viber message tokens above 2^53, locations, stickers,
photos, contacts, blocks and unblocks), with the odd hostile value among them (NUL
characters, 40-character language codes, NaN and infinite coordinates, ids beyond 64
bits). Each runs through the adapter's webhook handler and the engine, on SQLite and on
PostgreSQL: no exception escapes, no event fails to store or to process, and every
resident who wrote still answers /menu afterwards.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from itertools import count
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from bot.channels.telegram import SECRET_HEADER, TelegramChannel
from bot.channels.viber import SIGNATURE_HEADER, ViberChannel, signature
from bot.config import Settings
from bot.engine.engine import Engine
from flows.content import load_content
from storage.models import InboxEvent, OutboxMessage

SECRET = "property-secret"
VIBER_TOKEN = "445da6az1s345z78-dazcczb2542zv51a-e0vc5fva17480im9"
BOT = {"id": 123456, "is_bot": True, "first_name": "Khma", "username": "khma_test_bot"}
UINT64 = 2**64
# The /menu checks' own message tokens, which no generated callback repeats (a repeat is
# a real duplicate, rightly ignored).
MENU_TOKENS = 2**60
# What residents type and tap most: commands, numbers for buttons, and button ids,
# mixed into arbitrary text so the conversations get somewhere.
TYPED = ["/start", "/menu", "/mydata", "/delete", "/help", "/language", "/cancel", "1", "2", "3"]
TAPPED = [
    "ka",
    "az",
    "hy",
    "ru",
    "agree",
    "skip",
    "back",
    "yes",
    "no",
    "marneuli",
    "page:1",
    "page:²",
    "fu:no:1",
    "fu:yes:²",
    "ev:leave:1",
    "ev:leave:99999999999999999999",
]
LANGUAGE_CODES = ["ka", "az", "hy", "ru", "en", "ru-RU", "pt-br", "zh-hans"]

texts = st.text(max_size=4096) | st.sampled_from(TYPED)
short_texts = st.text(max_size=1024)
languages = st.none() | st.sampled_from(LANGUAGE_CODES) | st.text(max_size=40)
coordinates = st.tuples(st.floats(-90, 90), st.floats(-180, 180)) | st.tuples(
    st.floats(), st.floats()
)


def _callback_data(text: str) -> bool:
    return 1 <= len(text.encode()) <= 64


callback_data = st.sampled_from(TAPPED) | st.text(min_size=1, max_size=64).filter(_callback_data)


@dataclass(frozen=True)
class Call:
    """One webhook call: which platform, its body, and whether the platform could send it."""

    channel: str
    address: str
    body: bytes
    documented: bool


@st.composite
def telegram_updates(draw: st.DrawFn, update_ids: count) -> Call:
    chat_id = draw(st.sampled_from([10_001, 10_002]) | st.integers(1, 2**52))
    user: dict[str, Any] = {
        "id": chat_id,
        "is_bot": False,
        "first_name": draw(st.text(min_size=1, max_size=64)),
    }
    if (last := draw(st.none() | st.text(max_size=64))) is not None:
        user["last_name"] = last
    if (code := draw(languages)) is not None:
        user["language_code"] = code
    chat = {"id": chat_id, "type": "private", "first_name": user["first_name"]}
    message: dict[str, Any] = {
        "message_id": draw(st.integers(1, 2**31)),
        "date": 1767225600,
        "chat": chat,
        "from": user,
    }
    file = {"file_id": draw(st.text(min_size=1, max_size=200)), "file_unique_id": "u"}
    kind = draw(
        st.sampled_from(
            [
                "text",
                "photo",
                "voice",
                "sticker",
                "location",
                "contact",
                "document",
                "video",
                "callback",
                "blocked",
                "unblocked",
                "dice",
            ]
        )
    )
    documented = True
    if kind == "text":
        message["text"] = draw(texts)
    elif kind == "photo":
        sizes = [file | {"width": w, "height": w} for w in (90, 320, 1280)]
        message["photo"] = sizes
        message["caption"] = draw(short_texts)
    elif kind == "voice":
        message["voice"] = file | {"duration": draw(st.integers(0, 2**31))}
    elif kind == "video":
        message["video"] = file | {"width": 1, "height": 1, "duration": 1}
        message["caption"] = draw(short_texts)
    elif kind == "sticker":
        message["sticker"] = file | {
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
        }
    elif kind == "location":
        latitude, longitude = draw(coordinates)
        message["location"] = {"latitude": latitude, "longitude": longitude}
        documented = abs(latitude) <= 90 and abs(longitude) <= 180  # NaN is not JSON
    elif kind == "contact":
        message["contact"] = {
            "phone_number": draw(st.text(min_size=1, max_size=32)),
            "first_name": draw(st.text(min_size=1, max_size=64)),
        }
    elif kind == "document":
        message["document"] = file | {"file_name": draw(st.text(max_size=255))}
        message["caption"] = draw(short_texts)
    elif kind == "dice":
        message["dice"] = {"emoji": "🎲", "value": 3}
    update: dict[str, Any] = {"update_id": next(update_ids)}
    if kind == "callback":
        shown = {
            "message_id": message["message_id"],
            "date": 1767225600,
            "chat": chat,
            "from": BOT,
            "text": draw(st.text(max_size=4096)),
        }
        update["callback_query"] = {
            "id": str(next(update_ids)),
            "from": user,
            "chat_instance": "-1",
            "data": draw(callback_data),
            "message": shown,
        }
    elif kind in ("blocked", "unblocked"):
        status = "kicked" if kind == "blocked" else "member"
        member = {"user": BOT, "status": status} | ({"until_date": 0} if kind == "blocked" else {})
        update["my_chat_member"] = {
            "chat": chat,
            "from": user,
            "date": 1767225600,
            "old_chat_member": {"user": BOT, "status": "member"},
            "new_chat_member": member,
        }
    else:
        update["message"] = message
    body = json.dumps(update, ensure_ascii=False).encode()
    return Call("telegram", str(chat_id), body, documented)


viber_ids = st.sampled_from(["01234567890A=", "pttm25kSGUo1919sBORWyA=="]) | st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=",
    min_size=1,
    max_size=24,
)


@st.composite
def viber_callbacks(draw: st.DrawFn) -> Call:
    user_id = draw(viber_ids)
    user = {
        "id": user_id,
        "name": draw(st.text(max_size=200)),
        "avatar": "https://a.example/x",
        "country": "GE",
        "api_version": 10,
    }
    if (language := draw(languages)) is not None:
        user["language"] = language
    token = draw(
        (st.integers(0, UINT64 - 1) | st.integers(2**53, UINT64 - 1)).filter(
            lambda t: not MENU_TOKENS <= t < MENU_TOKENS + 2**32
        )
    )
    event = draw(
        st.sampled_from(
            [
                "conversation_started",
                "subscribed",
                "unsubscribed",
                "message",
                "message",
                "message",
                "delivered",
                "seen",
                "failed",
            ]
        )
    )
    callback: dict[str, Any] = {"event": event, "timestamp": 1767225600000, "message_token": token}
    documented = True
    if event == "conversation_started":
        callback |= {"user": user, "type": "open", "subscribed": draw(st.booleans())}
        if (context := draw(st.none() | st.text(max_size=64))) is not None:
            callback["context"] = context
    elif event == "subscribed":
        callback["user"] = user
    elif event in ("unsubscribed", "delivered", "seen", "failed"):
        callback["user_id"] = user_id
        if event == "failed":
            callback["desc"] = draw(st.text(max_size=200))
    else:
        kind = draw(
            st.sampled_from(
                ["text", "picture", "video", "file", "location", "contact", "sticker", "url"]
            )
        )
        message: dict[str, Any] = {"type": kind}
        media = "https://dl-media.viber.com/" + draw(st.text(max_size=200))
        if kind == "text":
            message["text"] = draw(texts | st.sampled_from(TAPPED).map(lambda t: "btn:" + t))
        elif kind in ("picture", "video", "file"):
            message |= {"media": media, "size": draw(st.integers(0, 2**31))}
            if kind == "file":
                message["file_name"] = draw(st.text(min_size=1, max_size=255))
            else:
                message["text"] = draw(st.text(max_size=768))
        elif kind == "location":
            lat, lon = draw(coordinates)
            message["location"] = {"lat": lat, "lon": lon}
            documented = abs(lat) <= 90 and abs(lon) <= 180
        elif kind == "contact":
            message["contact"] = {
                "name": draw(st.text(max_size=64)),
                "phone_number": draw(st.text(max_size=32)),
            }
        elif kind == "sticker":
            message["sticker_id"] = draw(st.integers(0, 2**31))
        else:
            message["media"] = media
        callback |= {"sender": user, "message": message}
    body = json.dumps(callback, ensure_ascii=False).encode()
    return Call("viber", user_id, body, documented)


@dataclass
class Parts:
    engine: Engine
    telegram: TelegramChannel
    viber: ViberChannel
    db: Any


@pytest.fixture
async def parts(db) -> AsyncIterator[Parts]:
    config = Settings.from_env(
        {
            "TELEGRAM_TOKEN": "1:property",
            "TELEGRAM_API_URL": "http://127.0.0.1:9",
            "TELEGRAM_WEBHOOK_SECRET": SECRET,
            "VIBER_TOKEN": VIBER_TOKEN,
            "VIBER_API_URL": "http://127.0.0.1:9",
            "QUIET_HOURS": "off",
        }
    )
    engine = Engine(db, config, load_content())
    yield Parts(engine, TelegramChannel(config, engine.accept), ViberChannel(config, engine), db)


async def post(parts: Parts, call: Call) -> int:
    if call.channel == "telegram":
        headers = {SECRET_HEADER: SECRET}
        return (await parts.telegram.receive_webhook(headers, call.body)).status
    headers = {SIGNATURE_HEADER: signature(VIBER_TOKEN, call.body)}
    return (await parts.viber.receive_webhook(headers, call.body)).status


async def replies_to(db, channel: str, address: str) -> int:
    async with db.transaction() as session:
        return await session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.channel == channel, OutboxMessage.address == address)
        )


UPDATE_IDS = count(1)
calls = st.lists(telegram_updates(UPDATE_IDS) | viber_callbacks(), min_size=1, max_size=6)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
    database=None,
)
@given(calls=calls)
async def test_any_update_is_answered_stored_or_refused_never_lost(parts: Parts, calls) -> None:
    for call in calls:
        status = await post(parts, call)
        assert status in (200, 400), f"{call.channel} answered {status}"
        if call.documented:
            assert status == 200, f"a {call.channel} event in the platform's shape refused"
    await parts.engine.process_pending()
    async with parts.db.transaction() as session:
        stuck = await session.scalar(
            select(func.count()).select_from(InboxEvent).where(InboxEvent.status != "done")
        )
    assert stuck == 0, "every stored event is processed"

    for channel, address in {(c.channel, c.address) for c in calls if c.documented}:
        before = await replies_to(parts.db, channel, address)
        menu = Call(channel, address, b"", True)
        if channel == "telegram":
            chat = {"id": int(address), "type": "private"}
            update = {
                "update_id": next(UPDATE_IDS),
                "message": {
                    "message_id": 1,
                    "date": 1767225600,
                    "chat": chat,
                    "from": {"id": int(address), "is_bot": False, "first_name": "N"},
                    "text": "/menu",
                },
            }
            menu = Call(channel, address, json.dumps(update).encode(), True)
        else:
            callback = {
                "event": "message",
                "timestamp": 1,
                "message_token": MENU_TOKENS + next(UPDATE_IDS),
                "sender": {"id": address, "name": "N"},
                "message": {"type": "text", "text": "/menu"},
            }
            menu = Call(channel, address, json.dumps(callback).encode(), True)
        assert await post(parts, menu) == 200
        await parts.engine.process_pending()
        assert await replies_to(parts.db, channel, address) > before, f"{channel} /menu unanswered"
