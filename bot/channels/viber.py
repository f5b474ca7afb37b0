"""Viber: signed callbacks in, REST calls out, with viberbot's models and aiohttp.

viberbot parses callbacks and builds message dictionaries without any I/O; its
own `Api` sends with blocking `requests`, so sending goes through aiohttp here.
A callback is answered 200 only after its event is stored (Viber retries
otherwise), and `conversation_started` is answered with the one welcome message
Viber allows before a resident subscribes. Viber takes files only by URL, so a
reply's document (a staff export) goes out as a short-lived link to this very
server, whose public address is that of VIBER_WEBHOOK_URL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from viberbot.api.messages import FileMessage, PictureMessage, TextMessage
from viberbot.api.viber_requests import (
    ViberDeliveredRequest,
    ViberFailedRequest,
    ViberSeenRequest,
    create_request,
)

from bot.channels import shapes
from bot.channels.base import (
    Held,
    Inbox,
    PartSent,
    Rejected,
    RetryLater,
    Transient,
    Unreachable,
    WebhookAnswer,
    send_parts,
)
from bot.config import Settings
from bot.vocabulary.messages import (
    FILE_LIMIT,
    LIMITS,
    Button,
    Inbound,
    Kind,
    Reply,
    split_text,
)
from bot.web.export_links import display_name, link
from storage.db import is_outage

log = logging.getLogger(__name__)

NAME = "viber"
SIGNATURE_HEADER = "X-Viber-Content-Signature"
AUTH_HEADER = "X-Viber-Auth-Token"
BUTTON_PREFIX = "btn:"
TEXT_LIMIT = 6500
CAPTION_LIMIT = 768
FILE_NAME_LIMIT = 256
WEBHOOK_PATH = "/webhooks/viber"
SENDER_NAME_LIMIT = 28
# Rows of buttons on one keyboard page by default; a row holds up to 6 columns.
PAGE_ROWS = 10
# A label longer than this gets a row of its own: Georgian and Armenian words are long.
SHARED_ROW_LABEL = 14
# Viber's picture messages show JPEG, PNG and GIF; a picture in another format (WebP,
# which Telegram shows) goes as its address, which Viber opens in the browser.
UNSHOWN_PICTURES = (".webp",)
EVENTS = (
    "webhook",
    "conversation_started",
    "subscribed",
    "unsubscribed",
    "message",
    "delivered",
    "seen",
    "failed",
)
# Events that carry something a resident did; the others are delivery reports.
RESIDENT_EVENTS = ("conversation_started", "subscribed", "unsubscribed", "message")
MESSAGE_KINDS = {
    "picture": Kind.PHOTO,
    "video": Kind.VIDEO,
    "file": Kind.DOCUMENT,
    "location": Kind.LOCATION,
    "contact": Kind.CONTACT,
    "sticker": Kind.STICKER,
}
JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}
UNREACHABLE_STATUSES = {5, 6, 7}
HELD_STATUSES = {12}
RETRY_STATUSES = {1, 2, 10, 11, 23, 24}
# Until the Viber API has answered get_account_info, sends wait this long rather than fail.
NOT_CONNECTED_WAIT = 5.0


def signature(token: str, body: bytes) -> str:
    return hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


def public_base(webhook_url: str) -> str:
    """This server as Viber reaches it: the webhook URL without `/webhooks/viber`.

    A path before it is kept, so a reverse proxy serving Khma under a prefix still works;
    any other webhook path leaves just scheme://host[:port].
    """
    parts = urlsplit(webhook_url)
    path = parts.path.rstrip("/")
    prefix = path.removesuffix(WEBHOOK_PATH) if path.endswith(WEBHOOK_PATH) else ""
    return urlunsplit((parts.scheme, parts.netloc, prefix, "", ""))


def _rows(buttons: tuple[tuple[Button, ...], ...]) -> list[tuple[Button, ...]]:
    """Keep a flow's rows, but give long labels a row of their own so they stay readable."""
    rows: list[tuple[Button, ...]] = []
    for row in buttons:
        if len(row) > 1 and any(len(b.label) > SHARED_ROW_LABEL for b in row):
            rows.extend((b,) for b in row)
        else:
            rows.append(row[:6])
    return rows


def _button(button: Button, columns: int) -> dict[str, Any]:
    return {
        "Columns": columns,
        "Rows": 1,
        "ActionType": "reply",
        "ActionBody": BUTTON_PREFIX + button.id,
        "Text": button.label,
        "TextSize": "regular",
        "TextVAlign": "middle",
        "TextHAlign": "center",
        "Silent": True,
        "BgColor": "#F2F2F7",
    }


def keyboard(reply: Reply, rows: int = PAGE_ROWS) -> dict[str, Any] | None:
    """A Viber rich keyboard; lists longer than `rows` rows are paged with ◀ and ▶."""
    laid_out = _rows(reply.buttons)
    if not laid_out:
        return None
    pages = [laid_out[i : i + rows] for i in range(0, len(laid_out), rows)]
    page = min(max(reply.page, 0), len(pages) - 1)
    buttons = [_button(b, 6 // len(row)) for row in pages[page] for b in row]
    if len(pages) > 1:
        navigation = []
        if page > 0:
            navigation.append(Button(f"page:{page - 1}", "◀"))
        if page < len(pages) - 1:
            navigation.append(Button(f"page:{page + 1}", "▶"))
        buttons += [_button(b, 6 // len(navigation)) for b in navigation]
    return {
        "Type": "keyboard",
        "DefaultHeight": False,
        "InputFieldState": "regular",
        "Buttons": buttons,
    }


def _user(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A user profile (`sender` or `user`) as the Inbound fields it gives."""
    user = shapes.mapping(data.get(key), key)
    return {
        "address": shapes.address(user.get("id"), f"{key}.id"),
        "display_name": shapes.name(shapes.text(user.get("name"), LIMITS.text, f"{key}.name")),
        "platform_language": shapes.language(user.get("language")),
    }


def parse_event(data: dict[str, Any]) -> Inbound | None:
    """One callback as an `Inbound`; None for events that carry no resident input.

    Every field is checked and bounded here (`shapes`): viberbot reads whatever it is
    given, so `"sender": "not-a-dict"` would otherwise become a resident without an
    address. Raises `shapes.Malformed` for what is not Viber's shape.
    """
    event = data.get("event")
    if event not in RESIDENT_EVENTS:
        return None
    token = shapes.unsigned_id(data.get("message_token"), "message_token")
    if event == "unsubscribed":
        address = shapes.address(data.get("user_id"), "user_id")
        return Inbound(NAME, address, token, Kind.UNSUBSCRIBED)
    if event == "conversation_started":
        context = shapes.text(data.get("context"), LIMITS.payload, "context")
        return Inbound(
            channel=NAME,
            external_id=token,
            kind=Kind.START,
            payload=context or None,
            **_user(data, "user"),
        )
    if event == "subscribed":
        return Inbound(channel=NAME, external_id=token, kind=Kind.SUBSCRIBED, **_user(data, "user"))
    common = {"channel": NAME, "external_id": token, **_user(data, "sender")}
    message = shapes.mapping(data.get("message"), "message")
    kind_name = message.get("type")
    if not isinstance(kind_name, str):
        raise shapes.Malformed("message.type is missing")
    text = shapes.text(message.get("text"), LIMITS.text, "message.text")
    media = shapes.text(message.get("media"), LIMITS.media_id, "message.media")
    if kind_name == "text":
        text = text or ""
        if text.startswith(BUTTON_PREFIX):
            payload = text[len(BUTTON_PREFIX) :][: LIMITS.payload]
            return Inbound(kind=Kind.BUTTON, payload=payload, **common)
        return Inbound(kind=Kind.TEXT, text=text, **common)
    if kind_name == "url":
        return Inbound(kind=Kind.TEXT, text=media or "", **common)
    kind = MESSAGE_KINDS.get(kind_name, Kind.OTHER)
    if kind is Kind.LOCATION:
        location = shapes.mapping(message.get("location"), "message.location")
        point = shapes.coordinates(location.get("lat"), location.get("lon"))
        if point is None:  # no place on Earth: the flow says it cannot use this
            return Inbound(kind=Kind.OTHER, **common)
        return Inbound(kind=kind, latitude=point[0], longitude=point[1], **common)
    return Inbound(kind=kind, media_id=media, text=text, **common)


DELIVERY_EVENTS = (ViberDeliveredRequest, ViberSeenRequest, ViberFailedRequest)


def shows_picture(address: str) -> bool:
    """Whether a picture message can show this picture (by its address's ending)."""
    try:
        path = urlsplit(address).path
    except ValueError:  # not an address at all: Viber will say so when it is sent
        return True
    return not path.lower().endswith(UNSHOWN_PICTURES)


class ViberChannel:
    name = NAME

    def __init__(self, settings: Settings, inbox: Inbox) -> None:
        if not settings.viber_token:
            raise ValueError("VIBER_TOKEN is not set")
        self.settings = settings
        self.token = settings.viber_token
        self.inbox = inbox
        self.api_url = settings.viber_api_url.rstrip("/")
        self.sender: dict[str, str] = {"name": settings.viber_bot_name[:SENDER_NAME_LIMIT]}
        if settings.viber_avatar_url:
            self.sender["avatar"] = settings.viber_avatar_url
        self._http: aiohttp.ClientSession | None = None
        self.connected = False

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Reach the Viber API (get_account_info, set_webhook); raises if it cannot.

        Safe to call again after a failure: Khma retries it in the background.
        """
        account = await self._call("get_account_info", {})
        if account.get("status") != 0:
            log.error("Viber refused the token: %s", account.get("status_message"))
        else:
            log.info("viber bot %r ready", account.get("name"))
        if self.settings.viber_webhook_url:
            answer = await self._call(
                "set_webhook",
                {
                    "url": self.settings.viber_webhook_url,
                    "event_types": [
                        "delivered",
                        "seen",
                        "failed",
                        "subscribed",
                        "unsubscribed",
                        "conversation_started",
                    ],
                    "send_name": True,
                    "send_photo": False,
                },
            )
            if answer.get("status") == 0:
                log.info("viber webhook set")
            else:
                log.error(
                    "Viber refused the webhook %s: status %s (%s)",
                    self.settings.viber_webhook_url,
                    answer.get("status"),
                    answer.get("status_message"),
                )
        self.connected = True

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                headers={AUTH_HEADER: self.token},
                timeout=aiohttp.ClientTimeout(total=15),
            )
        return self._http

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    # --- receiving ------------------------------------------------------------------

    async def receive_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookAnswer:
        given = shapes.header_bytes(headers.get(SIGNATURE_HEADER, "")).lower()
        expected = signature(self.token, body).encode()
        if not given or not hmac.compare_digest(given, expected):
            log.warning("viber callback with a missing or wrong signature refused")
            return WebhookAnswer(403, "bad signature")
        try:
            data = shapes.load_object(body)
        except shapes.Malformed:
            return WebhookAnswer(400, "malformed json")
        if data.get("event") not in EVENTS:
            return WebhookAnswer(400, "unknown event")
        if data["event"] == "webhook":
            return WebhookAnswer(200, "ok")
        try:
            # viberbot's parsing first: it knows Viber's message types and refuses others.
            request = create_request(data)
            if isinstance(request, DELIVERY_EVENTS):
                token = shapes.unsigned_id(data.get("message_token"), "message_token")
                inbound = None
            else:
                inbound = parse_event(data)
        except Exception as error:  # viberbot raises bare Exception and KeyError alike
            log.warning("malformed viber %s callback: %s", data.get("event"), type(error).__name__)
            return WebhookAnswer(400, "malformed event")
        try:
            if inbound is None:
                await self.inbox.delivery_report(NAME, token, data["event"])
                return WebhookAnswer(200, "ok")
            await self.inbox.accept(inbound)
            if inbound.kind is Kind.START:
                return WebhookAnswer(200, json=self._welcome(await self.inbox.welcome(inbound)))
        except Exception as error:
            if not is_outage(error):  # an outage is logged once, by the database
                log.exception("could not store a viber callback; viber will retry")
            return WebhookAnswer(503, "try again")
        return WebhookAnswer(200, "ok")

    def _welcome(self, replies: list[Reply]) -> dict[str, Any]:
        """The one message allowed before subscription: every reply's text, the last keyboard."""
        if not replies:
            return {}
        text = "\n\n".join(r.text for r in replies if r.text)
        merged = Reply(text=text[:TEXT_LIMIT], buttons=replies[-1].buttons)
        return {**self._messages(merged)[-1]}

    # --- sending ----------------------------------------------------------------------

    def _file(self, document: str) -> dict[str, Any]:
        """A `file` message for an export: Viber fetches it from our `/exports/` link."""
        if not self.settings.viber_webhook_url:
            raise Rejected("VIBER_WEBHOOK_URL is not set: no public address to serve a file from")
        path = Path(document)
        try:
            size = path.stat().st_size
        except OSError as error:
            raise Rejected(f"the file to send is gone: {type(error).__name__}") from error
        if size > FILE_LIMIT:
            raise Rejected(f"a {size}-byte file is above Viber's {FILE_LIMIT}-byte limit")
        media = link(public_base(self.settings.viber_webhook_url), path)
        name = display_name(path)[-FILE_NAME_LIMIT:]
        version = self.settings.viber_min_api_version
        return FileMessage(
            media=media, size=size, file_name=name, min_api_version=version
        ).to_dict()

    def _messages(self, reply: Reply) -> list[dict[str, Any]]:
        """viberbot builds each message dictionary; long texts become several messages.

        The keyboard goes on the last message, so it stays under the input field; a file
        comes after its text, as Viber's file messages carry no caption. A picture goes by
        its address, the text as its caption when that fits; one in a format Viber does
        not show (WebP) goes as that address under the text.
        """
        version = self.settings.viber_min_api_version
        messages: list[dict[str, Any]] = []
        text = reply.text
        if reply.photo_id and not shows_picture(reply.photo_id):
            text = f"{text}\n\n{reply.photo_id}" if text else reply.photo_id
        elif reply.photo_id:
            caption = text if len(text) <= CAPTION_LIMIT else ""
            picture = PictureMessage(media=reply.photo_id, text=caption, min_api_version=version)
            # viberbot writes `"thumbnail": null` when there is none; Viber wants a URL
            # there or no field at all, and a thumbnail is optional.
            messages.append({k: v for k, v in picture.to_dict().items() if v is not None})
            text = "" if caption else text
        if text:
            for piece in split_text(text, TEXT_LIMIT):
                messages.append(TextMessage(text=piece, min_api_version=version).to_dict())
        if reply.document:
            messages.append(self._file(reply.document))
        board = keyboard(reply, self.settings.viber_keyboard_rows)
        if board and messages:
            messages[-1]["keyboard"] = board
        for message in messages:
            message["sender"] = dict(self.sender)
            if not message.get("keyboard"):
                message.pop("keyboard", None)
        return messages

    async def send(
        self, address: str, reply: Reply, *, first_part: int = 0, part_sent: PartSent | None = None
    ) -> str | None:
        if reply.edit_message_id:
            return reply.edit_message_id  # Viber has no editing; a tap needs no receipt
        if not self.connected:
            raise RetryLater(NOT_CONNECTED_WAIT)
        parts = [partial(self._send_one, address, m) for m in self._messages(reply)]
        return await send_parts(parts, first_part, part_sent)

    async def _send_one(self, address: str, message: dict[str, Any]) -> str:
        answer = await self._call("send_message", {**message, "receiver": address})
        status = answer.get("status")
        if status == 0:
            return str(answer.get("message_token"))
        description = f"viber status {status}: {answer.get('status_message')}"
        if status in UNREACHABLE_STATUSES:
            raise Unreachable(description)
        if status in HELD_STATUSES:
            raise Held(description)
        if status in RETRY_STATUSES:
            raise Transient(description)
        raise Rejected(description)

    async def _call(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            # Unescaped UTF-8: a Georgian letter is 3 bytes, not a 6-byte \uXXXX escape,
            # which keeps long texts within Viber's 30 KB request limit.
            body = json.dumps(payload, ensure_ascii=False).encode()
            async with self._session().post(
                f"{self.api_url}/{method}", data=body, headers=JSON_HEADERS
            ) as response:
                if response.status == 429:
                    raise RetryLater(float(response.headers.get("Retry-After", "1")))
                if response.status >= 500:
                    raise Transient(f"viber answered HTTP {response.status}")
                if response.status >= 400:
                    raise Rejected(f"viber answered HTTP {response.status}")
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise Transient(f"viber {method}: {type(error).__name__}") from error
