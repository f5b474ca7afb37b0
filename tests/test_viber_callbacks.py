"""Viber callbacks, table-style: one real-shaped request per row, through the real
aiohttp server, with what it answers, what it stores and what the bot sends."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from bot.vocabulary.i18n import Translator
from flows.content import load_content
from flows.onboarding import ENDONYMS, MUNICIPALITY_FROM_LINK
from storage.models import Identity, InboxEvent, OutboxMessage
from tests.fakes.viber_api import ViberStandIn
from tests.harness import ViberUser, quiet, running_khma

USER = "01234567890A="
# Nested deeper than any callback Viber sends, and deeper than Python's parser recurses.
DEEP = b'{"event":"message","message_token":1,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
IMAGE = "https://dl-media.viber.com/1/share/2/long/bots/generic-message/media.jpg"


@dataclass(frozen=True)
class Row:
    case: str
    payload: Callable[[ViberStandIn], Any]
    status: int
    stored: int
    sent: int
    signature: object = ...


def message(**fields: Any) -> dict[str, Any]:
    """A text message callback with some fields replaced (what a forger could sign)."""
    base = {
        "event": "message",
        "timestamp": 1767225600000,
        "message_token": 5491234567890123456,
        "sender": {"id": USER, "name": "Nino", "language": "ka", "api_version": 10},
        "message": {"type": "text", "text": "Salam"},
    }
    return {**base, **fields}


def overflowing(payload: dict[str, Any]) -> bytes:
    """Valid JSON whose latitude no float holds: Python reads 1e999 as infinity."""
    return json.dumps(payload).replace('"lat": 7.0', '"lat": 1e999').encode()


ROWS = [
    Row("webhook check", lambda v: v.webhook_event(), 200, 0, 0),
    Row(
        "conversation started",
        lambda v: v.conversation_started(USER, context="marneuli"),
        200,
        1,
        1,
    ),
    Row("subscribed", lambda v: v.subscribed(USER), 200, 1, 0),
    Row("unsubscribed", lambda v: v.unsubscribed(USER), 200, 1, 0),
    Row("text", lambda v: v.text(USER, "Salam"), 200, 1, 1),
    Row("button tap", lambda v: v.text(USER, "btn:az"), 200, 1, 1),
    Row("picture", lambda v: v.picture(USER, IMAGE, caption="Yol"), 200, 1, 1),
    Row("video", lambda v: v.video(USER, IMAGE.replace("jpg", "mp4")), 200, 1, 1),
    Row("file", lambda v: v.file(USER, IMAGE.replace("jpg", "pdf"), "a.pdf", 20480), 200, 1, 1),
    Row("location", lambda v: v.location(USER, 41.4759, 44.8089), 200, 1, 1),
    Row("contact", lambda v: v.contact(USER, "Gulnar", "+995555000000"), 200, 1, 1),
    Row("sticker", lambda v: v.sticker(USER), 200, 1, 1),
    Row("url", lambda v: v.url_message(USER, "https://example.org/road"), 200, 1, 1),
    Row("delivered", lambda v: v.delivered(5491234567890123456, USER), 200, 0, 0),
    Row("seen", lambda v: v.seen(5491234567890123456, USER), 200, 0, 0),
    Row("failed", lambda v: v.failed(5491234567890123456, USER), 200, 0, 0),
    Row("bad signature", lambda v: v.text(USER, "Salam"), 403, 0, 0, signature="0" * 64),
    Row("missing signature", lambda v: v.text(USER, "Salam"), 403, 0, 0, signature=None),
    Row("malformed json", lambda v: b'{"event": "message", ', 400, 0, 0),
    Row(
        "missing fields",
        lambda v: {"event": "message", "timestamp": 1, "message_token": 7},
        400,
        0,
        0,
    ),
    Row("non-ASCII signature", lambda v: v.text(USER, "Salam"), 403, 0, 0, signature="é" * 64),
    Row("sender not an object", lambda v: message(sender="not-a-dict"), 400, 0, 0),
    Row("sender missing", lambda v: {**message(), "sender": None}, 400, 0, 0),
    Row("sender id not a string", lambda v: message(sender={"id": 7}), 400, 0, 0),
    Row("sender id of 200 characters", lambda v: message(sender={"id": "A" * 200}), 400, 0, 0),
    Row("message token of 71 digits", lambda v: message(message_token=10**70), 400, 0, 0),
    Row("message token beyond 64 bits", lambda v: message(message_token=2**64), 400, 0, 0),
    Row("message token negative", lambda v: message(message_token=-1), 400, 0, 0),
    Row("message token a float", lambda v: message(message_token=1.5), 400, 0, 0),
    Row("text not a string", lambda v: message(message={"type": "text", "text": 5}), 400, 0, 0),
    Row("message not an object", lambda v: message(message="hi"), 400, 0, 0),
    Row("user_id not a string", lambda v: {**v.unsubscribed(USER), "user_id": [1]}, 400, 0, 0),
    Row("nested deeper than Viber sends", lambda v: DEEP, 400, 0, 0),
    Row("NaN is not JSON", lambda v: b'{"event": "message", "x": NaN}', 400, 0, 0),
    # What a resident sends that cannot be used is stored and answered, never dropped.
    Row("NUL characters in a text", lambda v: v.text(USER, "Sa\x00lam\x00"), 200, 1, 1),
    Row("name of 300 characters", lambda v: v.text(USER, "Salam", name="N" * 300), 200, 1, 1),
    Row("language of 40 characters", lambda v: v.text(USER, "Salam", language="a" * 40), 200, 1, 1),
    Row("infinite location", lambda v: overflowing(v.location(USER, 7.0, 44.8)), 200, 1, 1),
    Row("location beyond the poles", lambda v: v.location(USER, 91.0, 44.8), 200, 1, 1),
    Row(
        "unknown event",
        lambda v: {"event": "client_status", "timestamp": 1, "message_token": 8},
        400,
        0,
        0,
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.case for r in ROWS])
async def test_callback(db, row: Row) -> None:
    async with ViberStandIn() as viber, running_khma(db, viber=viber) as khma:
        url = f"http://127.0.0.1:{khma.port}/webhooks/viber"
        payload = row.payload(viber)
        if isinstance(payload, bytes):  # sent as it is, signed as Viber would sign it
            status, body = await post_raw(url, payload, viber.signature(payload))
        else:
            status, body = await viber.post_callback(url, payload, signature=row.signature)
        assert status == row.status
        await quiet(db, None)
        async with db.transaction() as session:
            stored = await session.scalar(select(func.count()).select_from(InboxEvent))
        assert stored == row.stored
        assert len(viber.sent_to(USER)) == row.sent
        if row.case == "conversation started":
            assert body["type"] == "text" and body["keyboard"]["Type"] == "keyboard"
            assert body["sender"]["name"] == "Khma"


async def post_raw(url: str, body: bytes, signature: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers={"X-Viber-Content-Signature": signature}) as answer,
    ):
        return answer.status, await answer.text()


async def test_a_forged_signature_costs_one_log_line_and_no_traceback(db, caplog) -> None:
    async with ViberStandIn() as viber, running_khma(db, viber=viber) as khma:
        url = f"http://127.0.0.1:{khma.port}/webhooks/viber"
        caplog.clear()
        for signature in ("é" * 64, "ü", "\u0434" * 64):
            status, _ = await viber.post_callback(url, viber.text(USER, "x"), signature=signature)
            assert status == 403
        refused = [r for r in caplog.records if r.name.startswith(("bot", "aiohttp"))]
        assert len(refused) == 3 and not any(r.exc_info for r in refused)


async def test_a_callback_seen_twice_is_processed_once(db) -> None:
    async with ViberStandIn() as viber, running_khma(db, viber=viber) as khma:
        url = f"http://127.0.0.1:{khma.port}/webhooks/viber"
        payload = viber.text(USER, "Salam")
        assert payload["message_token"] > 2**53
        for _ in range(2):
            status, _ = await viber.post_callback(url, payload)
            assert status == 200
        await quiet(db, None)
        assert len(viber.sent_to(USER)) == 1
        async with db.transaction() as session:
            [token] = (await session.execute(select(InboxEvent.external_id))).scalars()
        assert token == str(payload["message_token"]), "64-bit token kept exactly"


async def test_delivery_reports_update_the_outbox(db) -> None:
    async with ViberStandIn() as viber, running_khma(db, viber=viber) as khma:
        url = f"http://127.0.0.1:{khma.port}/webhooks/viber"
        await viber.post_callback(url, viber.text(USER, "Salam"))
        await quiet(db, None)
        [sent] = viber.sent_to(USER)
        for event in (viber.delivered, viber.seen):
            status, _ = await viber.post_callback(url, event(sent.message_token, USER))
            assert status == 200
            async with db.transaction() as session:
                row = await session.scalar(
                    select(OutboxMessage).where(
                        OutboxMessage.platform_message_id == str(sent.message_token)
                    )
                )
            assert row.delivery_status == event.__name__


async def test_welcome_answer_is_a_valid_send_message_without_receiver(db) -> None:
    async with ViberStandIn() as viber, running_khma(db, viber=viber) as khma:
        url = f"http://127.0.0.1:{khma.port}/webhooks/viber"
        _, body = await viber.post_callback(url, viber.conversation_started(USER))
        assert "receiver" not in body
        assert len(json.dumps(body, ensure_ascii=False).encode()) < 30_000
        [welcome] = viber.sent_to(USER)
        assert welcome.method == "welcome"


async def test_a_deep_link_context_works_like_telegrams_start_payload(db) -> None:
    async with ViberStandIn() as viber, running_khma(db, viber=viber) as khma:
        user = ViberUser(viber, db, khma, USER, language="az")
        await user.opens_chat(context="marneuli")
        [from_link, _privacy] = await user.taps(ENDONYMS["az"])
        name = load_content().municipality("marneuli").names["az"]
        assert from_link.text == Translator("az")(MUNICIPALITY_FROM_LINK, municipality=name)


async def test_unsubscribing_marks_the_resident_unreachable_until_they_return(db) -> None:
    async with ViberStandIn() as viber, running_khma(db, viber=viber) as khma:
        url = f"http://127.0.0.1:{khma.port}/webhooks/viber"
        await viber.post_callback(url, viber.text(USER, "Salam"))
        await viber.post_callback(url, viber.unsubscribed(USER))
        await quiet(db, None)
        async with db.transaction() as session:
            identity = await session.scalar(select(Identity))
            assert identity.unreachable_at is not None
        await viber.post_callback(url, viber.subscribed(USER))
        await quiet(db, None)
        async with db.transaction() as session:
            identity = await session.scalar(select(Identity))
            assert identity.unreachable_at is None
