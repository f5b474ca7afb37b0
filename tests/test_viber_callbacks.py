"""Viber callbacks, table-style: one real-shaped request per row, through the real
aiohttp server, with what it answers, what it stores and what the bot sends."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.vocabulary.i18n import Translator
from flows.content import load_content
from flows.onboarding import ENDONYMS, MUNICIPALITY_FROM_LINK
from storage.models import Identity, InboxEvent, OutboxMessage
from tests.fakes.viber_api import ViberStandIn
from tests.harness import ViberUser, quiet, running_khma

USER = "01234567890A="
IMAGE = "https://dl-media.viber.com/1/share/2/long/bots/generic-message/media.jpg"


@dataclass(frozen=True)
class Row:
    case: str
    payload: Callable[[ViberStandIn], Any]
    status: int
    stored: int
    sent: int
    signature: object = ...


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
        status, body = await viber.post_callback(url, row.payload(viber), signature=row.signature)
        assert status == row.status
        await quiet(db, None)
        async with db.transaction() as session:
            stored = await session.scalar(select(func.count()).select_from(InboxEvent))
        assert stored == row.stored
        assert len(viber.sent_to(USER)) == row.sent
        if row.case == "conversation started":
            assert body["type"] == "text" and body["keyboard"]["Type"] == "keyboard"
            assert body["sender"]["name"] == "Khma"


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
