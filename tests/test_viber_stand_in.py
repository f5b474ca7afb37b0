"""The Viber REST API stand-in answers and calls back like Viber's servers do."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from viberbot.api.api_request_sender import ApiRequestSender
from viberbot.api.bot_configuration import BotConfiguration
from viberbot.api.message_sender import MessageSender
from viberbot.api.messages import TextMessage
from viberbot.api.viber_requests import (
    ViberConversationStartedRequest,
    ViberDeliveredRequest,
    ViberFailedRequest,
    ViberMessageRequest,
    ViberRequest,
    ViberSeenRequest,
    ViberSubscribedRequest,
    ViberUnsubscribedRequest,
    create_request,
)

from tests.fakes.viber_api import ViberStandIn

TOKEN = "4453b6ac12345678-e02c5f12174805f9-daec9cbb5448c51f"
USER = "01234567890A="
SENDER = {"name": "Khma"}


@pytest.fixture
async def api() -> AsyncIterator[ViberStandIn]:
    async with ViberStandIn(TOKEN) as stand_in:
        yield stand_in


async def call(
    api: ViberStandIn, method: str, body: dict[str, Any], token: str = TOKEN
) -> dict[str, Any]:
    """One API call the way Khma makes it: JSON body, token in the auth header."""
    async with (
        aiohttp.ClientSession(headers={"X-Viber-Auth-Token": token}) as session,
        session.post(f"{api.api_url}/{method}", json=body) as response,
    ):
        assert response.status == 200
        return await response.json()


def text(receiver: str = USER, **extra: Any) -> dict[str, Any]:
    return {"receiver": receiver, "type": "text", "text": "გამარჯობა", "sender": SENDER, **extra}


def board(*buttons: dict[str, Any]) -> dict[str, Any]:
    return {"Type": "keyboard", "Buttons": list(buttons)}


def button(label: str, **extra: Any) -> dict[str, Any]:
    return {"ActionType": "reply", "ActionBody": f"btn:{label}", "Text": label, **extra}


async def test_send_message_answers_an_increasing_64_bit_token_and_records_it(
    api: ViberStandIn,
) -> None:
    keyboard = board(button("ქართული", Columns=3), button("Русский", Columns=3))

    first = await call(api, "send_message", text(keyboard=keyboard, tracking_data="lang"))
    second = await call(api, "send_message", text(min_api_version=6))

    assert first["status"] == 0 and first["status_message"] == "ok"
    assert first["chat_hostname"] == "SN-CHAT-01_"
    assert 2**53 < first["message_token"] < second["message_token"] < 2**63
    recorded = api.sent_to(USER)[0]
    assert (recorded.type, recorded.text, recorded.tracking_data) == ("text", "გამარჯობა", "lang")
    assert recorded.message_token == first["message_token"]
    assert recorded.sender == SENDER and recorded.keyboard == keyboard
    assert recorded.button_texts == ["ქართული", "Русский"]
    assert recorded.action_bodies == ["btn:ქართული", "btn:Русский"]
    assert api.sent[1].min_api_version == 6 and api.sent[1].buttons == []
    assert [c.method for c in api.calls] == ["send_message", "send_message"]


async def test_a_wrong_token_answers_status_2_and_viberbots_body_token_is_accepted(
    api: ViberStandIn,
) -> None:
    refused = await call(api, "send_message", text(), token="not-the-token")

    assert refused == {"status": 2, "status_message": "invalidAuthToken"}
    assert api.sent == [] and api.calls[0].status == 2

    # viberbot itself: blocking requests, no Content-Type, auth_token inside the body.
    config = BotConfiguration(auth_token=TOKEN, name="Khma", avatar=None)
    log = logging.getLogger("viber-stand-in-test")
    sender = MessageSender(log, ApiRequestSender(log, api.api_url, config, "ViberBot"), config)
    message = TextMessage(text="Салам", tracking_data="t")
    token = await asyncio.to_thread(sender.send_message, USER, "Khma", None, message)

    assert token == api.sent[0].message_token
    assert api.sent[0].text == "Салам" and api.sent[0].body["auth_token"] == TOKEN


@pytest.mark.parametrize(
    ("keyboard", "reason"),
    [
        ({"Type": "keys", "Buttons": [button("a")]}, "Type"),
        (board(), "Buttons"),
        (board(button("a", Columns=7)), "Columns"),
        (board(button("a", Rows=3)), "Rows"),
        (board(button("a", ActionType="callback")), "ActionType"),
        (board({"ActionType": "reply", "Text": "no body"}), "ActionBody"),
        (board(button("a", ActionBody="x" * 251)), "ActionBody"),
        (board(button("a", Text="a" * 251)), "Text"),
        (board(*[button(str(i), Columns=1) for i in range(49)]), "49 buttons"),
        (board(*[button(str(i)) for i in range(25)]), "25 rows"),
        (board(*[button(str(i), Rows=2) for i in range(13)]), "26 rows"),
    ],
)
async def test_a_keyboard_breaking_vibers_rules_is_bad_data(
    api: ViberStandIn, keyboard: dict[str, Any], reason: str
) -> None:
    answer = await call(api, "send_message", text(keyboard=keyboard))

    assert answer["status"] == 3 and reason in answer["status_message"]
    assert api.sent == [] and api.calls[0].body["keyboard"] == keyboard


async def test_the_largest_keyboards_viber_allows_are_accepted(api: ViberStandIn) -> None:
    tall = board(*[button(str(i), Rows=2) for i in range(12)])  # 24 rows
    wide = board(*[button(str(i), Columns=3, Rows=1) for i in range(48)])  # 48 buttons, 24 rows

    assert (await call(api, "send_message", text(keyboard=tall)))["status"] == 0
    assert (await call(api, "send_message", text(keyboard=wide)))["status"] == 0


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"receiver": None}, 3, "receiver"),
        ({"sender": {"name": "x" * 29}}, 3, "sender.name"),
        ({"sender": {}}, 3, "sender.name"),
        ({"type": "voice"}, 3, "type"),
        ({"text": ""}, 3, "text"),
        ({"text": "a" * 7001}, 3, "text"),
        # 7000 characters, but aiohttp's json= writes each as \\uXXXX: 42000 bytes on the wire
        ({"text": "ა" * 7000}, 3, "bytes"),
        ({"tracking_data": "x" * 4001}, 3, "tracking_data"),
        ({"min_api_version": "6"}, 3, "min_api_version"),
        ({"min_api_version": 11}, 13, "apiVersionNotSupported"),
        ({"type": "picture", "media": "photo-1"}, 3, "media"),
        ({"type": "picture", "media": "https://x.ge/a.jpg", "text": "x" * 769}, 3, "text"),
        ({"keyboard": board(button("a", Silent=True, BgColor="#" + "0" * 32000))}, 3, "bytes"),
    ],
)
async def test_messages_breaking_vibers_rules_are_refused(
    api: ViberStandIn, body: dict[str, Any], status: int, reason: str
) -> None:
    answer = await call(api, "send_message", {**text(), **body})

    assert answer["status"] == status and reason in answer["status_message"]
    assert api.sent == []


async def test_unsubscribed_and_unregistered_receivers(api: ViberStandIn) -> None:
    api.unsubscribe(USER)
    assert await call(api, "send_message", text()) == {
        "status": 6,
        "status_message": "receiverNotSubscribed",
    }
    api.subscribe(USER)
    assert (await call(api, "send_message", text()))["status"] == 0

    api.unsubscribed(USER)  # the callback means the same on the real service
    assert (await call(api, "send_message", text()))["status"] == 6
    api.text(USER, "hi")  # writing to the bot subscribes again
    assert (await call(api, "send_message", text()))["status"] == 0

    api.unregister("ghost")
    assert (await call(api, "send_message", text("ghost")))["status"] == 5


async def test_status_12_on_demand_and_after_too_many_messages_without_a_reply() -> None:
    async with ViberStandIn(TOKEN, replyless_limit=3) as api:
        api.limit_reached(USER)
        assert await call(api, "send_message", text()) == {
            "status": 12,
            "status_message": "tooManyRequests",
        }
        api.reset_limit(USER)

        answers = [(await call(api, "send_message", text()))["status"] for _ in range(4)]
        assert answers == [0, 0, 0, 12]
        assert (await call(api, "send_message", text("someone-else")))["status"] == 0

        api.text(USER, "მადლობა")  # a reply resets the counter
        assert (await call(api, "send_message", text()))["status"] == 0
        assert len(api.sent_to(USER)) == 4


async def test_fail_next_answers_http_errors_without_json(api: ViberStandIn) -> None:
    api.fail_next(2, http_status=503)

    async with aiohttp.ClientSession(headers={"X-Viber-Auth-Token": TOKEN}) as session:
        for _ in range(2):
            async with session.post(f"{api.api_url}/send_message", json=text()) as response:
                assert response.status == 503
                assert response.content_type == "text/html"
                with pytest.raises(aiohttp.ContentTypeError):
                    await response.json()
        async with session.post(f"{api.url}/pa/get_online", json={}) as response:
            assert response.status == 404
    assert (await call(api, "send_message", text()))["status"] == 0
    assert [c.http_status for c in api.calls] == [503, 503, 404, 200]


async def test_set_webhook_is_recorded_refused_and_removed(api: ViberStandIn) -> None:
    body = {"url": "https://khma.example/viber", "event_types": ["delivered", "seen"]}

    answer = await call(api, "set_webhook", body)

    assert answer == {"status": 0, "status_message": "ok", "event_types": ["delivered", "seen"]}
    assert api.webhook == body
    info = await call(api, "get_account_info", {})
    assert (info["webhook"], info["event_types"]) == (body["url"], ["delivered", "seen"])

    api.refuse_webhook()
    assert await call(api, "set_webhook", {"url": "https://other.example"}) == {
        "status": 1,
        "status_message": "invalidUrl",
    }
    assert api.webhook == body
    api.accept_webhook()
    assert (await call(api, "set_webhook", {"url": "not a url"}))["status"] == 1
    assert (await call(api, "set_webhook", {"url": ""}))["status"] == 0
    assert api.webhook is None


async def test_account_and_user_details_look_like_vibers(api: ViberStandIn) -> None:
    api.subscribed(USER, name="Aram", language="hy")

    info = await call(api, "get_account_info", {})
    user = (await call(api, "get_user_details", {"id": USER}))["user"]

    assert info["status"] == 0 and info["id"].startswith("pa:")
    assert (info["name"], info["uri"], info["members"]) == ("Khma", "khma", [])
    assert info["icon"].startswith("https://") and info["category"]
    assert info["subscribers_count"] == 1 and info["webhook"] == ""
    assert (user["id"], user["name"], user["language"], user["api_version"]) == (
        USER,
        "Aram",
        "hy",
        10,
    )
    assert {"country", "primary_device_os", "viber_version", "mcc", "mnc", "device_type"} <= set(
        user
    )


async def test_broadcast_reports_failed_receivers(api: ViberStandIn) -> None:
    api.unsubscribe("gone")
    body = {k: v for k, v in text().items() if k != "receiver"}

    answer = await call(api, "broadcast_message", {**body, "broadcast_list": [USER, "gone"]})

    assert answer["status"] == 0 and answer["message_token"] > 2**53
    assert answer["failed_list"] == [
        {"receiver": "gone", "status": 6, "status_message": "receiverNotSubscribed"}
    ]
    assert [(m.receiver, m.method) for m in api.sent] == [(USER, "broadcast_message")]


async def test_wait_for_messages_reports_what_arrived(api: ViberStandIn) -> None:
    api.unsubscribe("other")
    await call(api, "send_message", text())
    await call(api, "send_message", text("other"))

    assert len(await api.wait_for_messages(USER, 1)) == 1
    with pytest.raises(AssertionError, match=r"got 0.*receiverNotSubscribed"):
        await api.wait_for_messages("other", 1, timeout=0.05)


BUILDERS: list[tuple[Callable[[ViberStandIn], dict[str, Any]], type[ViberRequest]]] = [
    (lambda a: a.conversation_started(USER, context="ngo-5"), ViberConversationStartedRequest),
    (lambda a: a.subscribed(USER), ViberSubscribedRequest),
    (lambda a: a.unsubscribed(USER), ViberUnsubscribedRequest),
    (lambda a: a.delivered(5_000_000_000_000_000_001, USER), ViberDeliveredRequest),
    (lambda a: a.seen(5_000_000_000_000_000_001, USER), ViberSeenRequest),
    (lambda a: a.failed(5_000_000_000_000_000_001, USER), ViberFailedRequest),
    (lambda a: a.webhook_event(), ViberRequest),
    (lambda a: a.text(USER, "გამარჯობა", tracking_data="t"), ViberMessageRequest),
    (
        lambda a: a.picture(USER, "https://dl-media.viber.com/p.jpg", caption="ხიდი"),
        ViberMessageRequest,
    ),
    (lambda a: a.video(USER, "https://dl-media.viber.com/v.mp4"), ViberMessageRequest),
    (
        lambda a: a.file(USER, "https://dl-media.viber.com/f.pdf", "f.pdf", 1024),
        ViberMessageRequest,
    ),
    (lambda a: a.location(USER, 41.5489, 44.9936), ViberMessageRequest),
    (lambda a: a.contact(USER, "Nino", "+995555123456"), ViberMessageRequest),
    (lambda a: a.sticker(USER), ViberMessageRequest),
    (lambda a: a.url_message(USER, "https://khma.example"), ViberMessageRequest),
]


@pytest.mark.parametrize(("build", "kind"), BUILDERS)
def test_callback_builders_produce_bodies_viberbot_parses(
    build: Callable[[ViberStandIn], dict[str, Any]], kind: type[ViberRequest]
) -> None:
    payload = build(ViberStandIn(TOKEN))

    parsed = create_request(json.loads(json.dumps(payload)))

    assert type(parsed) is kind
    assert isinstance(payload["timestamp"], int) and payload["timestamp"] > 1_600_000_000_000
    assert isinstance(payload["message_token"], int) and payload["message_token"] > 2**53
    if isinstance(parsed, ViberMessageRequest):
        assert (parsed.sender.id, parsed.sender.name, parsed.sender.language) == (
            USER,
            "Nino",
            "ka",
        )
        assert (parsed.sender.country, parsed.sender.api_version) == ("GE", 10)
    if isinstance(parsed, ViberConversationStartedRequest):
        assert (parsed.type, parsed.context, parsed.subscribed) == ("open", "ngo-5", False)
        assert parsed.user.id == USER and payload["user"]["avatar"].startswith("https://")


def test_callback_builder_details() -> None:
    api = ViberStandIn(TOKEN)

    assert api.text(USER, "hi", message_token=2**60)["message_token"] == 2**60
    assert api.location(USER, 41.5, 44.9)["message"]["location"] == {"lat": 41.5, "lon": 44.9}
    assert api.picture(USER, "https://m/p.jpg", caption="c")["message"]["text"] == "c"
    assert api.failed(7, USER)["desc"] == "Failure description"
    assert api.webhook_event()["chat_hostname"] == "SN-CHAT-01_"
    assert "tracking_data" not in api.text(USER, "hi")["message"]
    tokens = [api.text(USER, "x")["message_token"] for _ in range(3)]
    assert tokens == sorted(set(tokens))


def test_signature_is_hex_hmac_sha256_of_the_raw_body_keyed_by_the_token() -> None:
    api = ViberStandIn(TOKEN)
    body = '{"event":"message","message":{"type":"text","text":"ხმა"}}'.encode()

    assert api.signature(body) == hmac.new(TOKEN.encode(), body, hashlib.sha256).hexdigest()
    assert len(api.signature(body)) == 64


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[str, list[tuple[bytes, str | None]]]]:
    """A tiny webhook that records what arrives and answers conversation_started with a welcome."""
    received: list[tuple[bytes, str | None]] = []

    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        received.append((raw, request.headers.get("X-Viber-Content-Signature")))
        if json.loads(raw).get("event") == "conversation_started":
            welcome = text(keyboard=board(button("ქართული")), tracking_data="lang")
            welcome.pop("receiver")
            return web.json_response(welcome)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/viber", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/viber", received
    await runner.cleanup()


async def test_post_callback_signs_the_body_and_records_the_welcome(
    api: ViberStandIn, webhook: tuple[str, list[tuple[bytes, str | None]]]
) -> None:
    url, received = webhook
    payload = api.conversation_started(USER, context="ngo-5")

    status, welcome = await api.post_callback(url, payload)

    assert status == 200 and welcome["text"] == "გამარჯობა"
    raw, signature = received[0]
    assert raw == json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    assert signature == api.signature(raw)
    [sent] = api.sent_to(USER)
    assert (sent.method, sent.tracking_data, sent.button_texts) == ("welcome", "lang", ["ქართული"])

    tap = api.press(USER, "ქართული")
    assert tap["message"] == {"type": "text", "text": "btn:ქართული", "tracking_data": "lang"}
    assert await api.post_callback(url, tap, signature="bad") == (200, "ok")
    assert await api.post_callback(url, b'{"event":"seen"}', signature=None) == (200, "ok")
    assert [s for _, s in received[1:]] == ["bad", None]
    assert api.url(USER, "https://khma.example")["message"] == {
        "type": "url",
        "media": "https://khma.example",
    }
    assert isinstance(api.url, str) and api.api_url == f"{api.url}/pa"
    with pytest.raises(ValueError, match="loopback"):
        await api.post_callback("https://example.com/viber", payload)
