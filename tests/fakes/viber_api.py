"""A loopback stand-in for the Viber REST Bot API, started by the tests themselves.

Why it exists: Khma's Viber channel talks to ``https://chatapi.viber.com/pa`` with aiohttp and
receives signed callbacks on its webhook.  Tests should exercise exactly that HTTP traffic (request
encoding, auth header, status codes inside HTTP 200 answers, message tokens that only fit in 64
bits, callback signatures) without leaving the machine.  So only the far end is replaced: an
aiohttp server on 127.0.0.1 that answers like Viber's REST API (same JSON shapes, same ``status``
codes and names, the same message and keyboard rules), records everything the bot sent, and plays
the Viber servers' side of callbacks by building documented callback bodies and POSTing them,
signed, to the bot's webhook.

Usage::

    async with ViberStandIn(token=TOKEN) as api:
        settings = Settings(viber_token=TOKEN, viber_api_url=api.api_url, ...)
        ...
        status, welcome = await api.post_callback(webhook, api.conversation_started(USER))
        await api.post_callback(webhook, api.text(USER, "გამარჯობა"))
        [reply] = await api.wait_for_messages(USER, 1)

Everything lives on the instance (no module state), so tests can run several stand-ins at once.

Things the stand-in does on its own, because the real service does them:

* a ``message`` callback built or posted for a user counts as the user's reply: it subscribes the
  user and resets the "100 messages in an hour without a reply" counter (status 12);
* an ``unsubscribed`` callback unsubscribes the user (later sends answer status 6), a
  ``subscribed`` one subscribes them;
* the bot's HTTP answer to a ``conversation_started`` callback is Viber's one allowed welcome
  message: when it is valid it is recorded in ``sent`` (``method == "welcome"``), when it breaks
  the rules it is recorded in ``calls`` (path ``"welcome"``) with the badData reason.

Deliberate limits: every user is registered and subscribed unless a test says otherwise (the
real service would first need a ``subscribed`` event); set_webhook accepts plain ``http`` URLs
(Viber demands https) and does not call the webhook back (post ``webhook_event()`` yourself);
the keyboard layout is a close approximation of Viber's grid (buttons fill a 6-column grid left to
right, a two-row button reserves the cell below it); rich media gets only a shape check;
get_online, post and the chat-extension calls are not there (they answer 404).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import hmac
import json
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from http import HTTPStatus
from types import EllipsisType, TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

JSONDict = dict[str, Any]

DEFAULT_TOKEN = "4453b6ac12345678-e02c5f12174805f9-daec9cbb5448c51f"
AUTH_HEADER = "X-Viber-Auth-Token"
SIGNATURE_HEADER = "X-Viber-Content-Signature"
CHAT_HOSTNAME = "SN-CHAT-01_"
# The api_version Viber clients report in callbacks; a higher min_api_version answers status 13.
API_VERSION = 10


class ViberStatus(IntEnum):
    """The ``status`` codes of Viber's REST API that the stand-in answers (names as Viber's)."""

    OK = 0
    INVALID_URL = 1
    INVALID_AUTH_TOKEN = 2
    BAD_DATA = 3
    RECEIVER_NOT_REGISTERED = 5
    RECEIVER_NOT_SUBSCRIBED = 6
    WEBHOOK_NOT_SET = 10
    TOO_MANY_REQUESTS = 12
    API_VERSION_NOT_SUPPORTED = 13


STATUS_MESSAGES: dict[int, str] = {
    ViberStatus.OK: "ok",
    ViberStatus.INVALID_URL: "invalidUrl",
    ViberStatus.INVALID_AUTH_TOKEN: "invalidAuthToken",
    ViberStatus.BAD_DATA: "badData",
    ViberStatus.RECEIVER_NOT_REGISTERED: "receiverNotRegistered",
    ViberStatus.RECEIVER_NOT_SUBSCRIBED: "receiverNotSubscribed",
    ViberStatus.WEBHOOK_NOT_SET: "webhookNotSet",
    ViberStatus.TOO_MANY_REQUESTS: "tooManyRequests",
    ViberStatus.API_VERSION_NOT_SUPPORTED: "apiVersionNotSupported",
}

# --- Viber's rules (https://developers.viber.com/docs/api/rest-bot-api/) ------------------------

BODY_LIMIT = 30 * 1024  # bytes of the whole request
SENDER_NAME_LIMIT = 28
TEXT_LIMIT = 7000
PICTURE_TEXT_LIMIT = 768
TRACKING_DATA_LIMIT = 4000
URL_LIMIT = 2000
KEYBOARD_BUTTON_LIMIT = 48
KEYBOARD_ROW_LIMIT = 24
KEYBOARD_COLUMNS = 6
BUTTON_ROWS_LIMIT = 2
BUTTON_ACTION_BODY_LIMIT = 250
BUTTON_TEXT_LIMIT = 250
BROADCAST_LIMIT = 300
REPLYLESS_LIMIT = 100  # messages to one user ...
REPLYLESS_WINDOW = 3600.0  # ... within this many seconds without a reply answer status 12

MESSAGE_TYPES = frozenset(
    {"text", "picture", "video", "file", "location", "contact", "sticker", "url", "rich_media"}
)
ACTION_TYPES = frozenset({"reply", "open-url", "location-picker", "share-phone", "none"})
INPUT_FIELD_STATES = frozenset({"regular", "minimized", "hidden"})
# Optional callback events a webhook may ask for (message is always sent).
WEBHOOK_EVENT_TYPES = (
    "delivered",
    "seen",
    "failed",
    "subscribed",
    "unsubscribed",
    "conversation_started",
)
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
# Real message tokens look like 4912661846655238145: beyond 2**53, so a float loses them.
_FIRST_TOKEN = 4_912_661_846_655_238_145
_TAG_RE = re.compile(r"<[^<>]*>")


# --- records ------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class ViberCall:
    """One HTTP call to the API (or one welcome answer, path ``"welcome"``), in arrival order.

    ``body`` is the parsed JSON object ({} when the body was not one; ``raw`` has the bytes).
    ``answer`` is the JSON answered, or None when the stand-in answered an HTTP error instead
    (``http_status`` then says which).
    """

    path: str
    body: JSONDict
    answer: JSONDict | None = None
    http_status: int = HTTPStatus.OK
    raw: bytes = b""
    at: float = field(default_factory=time.monotonic)

    @property
    def method(self) -> str:
        """The API method, e.g. ``send_message``."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def status(self) -> int | None:
        """Viber's ``status`` code, or None for an HTTP-level failure."""
        return None if self.answer is None else self.answer.get("status")

    @property
    def status_message(self) -> str | None:
        return None if self.answer is None else self.answer.get("status_message")

    @property
    def ok(self) -> bool:
        return self.http_status == HTTPStatus.OK and self.status == ViberStatus.OK

    def concerns(self, user_id: str) -> bool:
        """Whether this call addressed ``user_id`` (receiver, broadcast list or welcome)."""
        broadcast = self.body.get("broadcast_list")
        return self.body.get("receiver") == user_id or (
            isinstance(broadcast, list) and user_id in broadcast
        )


@dataclass(kw_only=True)
class ViberSent:
    """A message Viber accepted (status 0): what the user would see, plus the raw request body.

    ``method`` is ``send_message``, ``broadcast_message`` (one record per receiver, all with the
    broadcast's token) or ``welcome`` (the answer to ``conversation_started``).
    """

    receiver: str
    type: str
    text: str | None
    media: str | None
    keyboard: JSONDict | None
    tracking_data: str | None
    sender: JSONDict
    min_api_version: int | None
    message_token: int
    body: JSONDict
    method: str = "send_message"
    at: float = field(default_factory=time.monotonic)

    @property
    def buttons(self) -> list[JSONDict]:
        """The keyboard's buttons in order ([] without a keyboard)."""
        if not self.keyboard:
            return []
        return [b for b in self.keyboard.get("Buttons", []) if isinstance(b, dict)]

    @property
    def button_texts(self) -> list[str]:
        """Each button's ``Text`` as sent (markup included; "" when a button has none)."""
        return [str(button.get("Text", "")) for button in self.buttons]

    @property
    def action_bodies(self) -> list[str]:
        """Each button's ``ActionBody``: what a ``reply`` button sends back as the user's text."""
        return [str(button.get("ActionBody", "")) for button in self.buttons]


# --- internals ----------------------------------------------------------------------------------


class _Refusal(Exception):
    """A non-zero Viber status, raised anywhere in a handler and answered as HTTP 200 JSON."""

    def __init__(self, status: int, status_message: str | None = None) -> None:
        message = status_message if status_message is not None else STATUS_MESSAGES[status]
        super().__init__(message)
        self.status = int(status)
        self.status_message = message

    def answer(self) -> JSONDict:
        return {"status": self.status, "status_message": self.status_message}


def _bad(reason: str) -> _Refusal:
    """badData with a reason, the way Viber explains a rejected message."""
    return _Refusal(ViberStatus.BAD_DATA, reason)


class _Pulse:
    """A broadcast wake-up: ``fire()`` wakes every coroutine in ``wait()``, which re-checks."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, at_most: float) -> None:
        event = self._event  # taken before suspending: a fire() after the caller's check counts
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(at_most, 0.0)):
                await event.wait()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float)


def _compact_json(payload: Any) -> bytes:
    """The body Viber sends: compact JSON, UTF-8, non-ASCII unescaped."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _parse_object(raw: bytes) -> tuple[JSONDict, str | None]:
    """The request's JSON object (an empty body counts as {}), or {} and why it isn't one."""
    if not raw.strip():
        return {}, None
    try:
        body = json.loads(raw)
    except ValueError:
        return {}, "request body is not valid JSON"
    if not isinstance(body, dict):
        return {}, "request body must be a JSON object"
    return body, None


def _require_text(value: Any, where: str, limit: int | None = None, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise _bad(f"{where} is required and must be a string, got {value!r}")
    if not empty and not value:
        raise _bad(f"{where} must not be empty")
    if limit is not None and len(value) > limit:
        raise _bad(f"{where} is {len(value)} characters long, at most {limit} allowed")
    return value


def _require_url(value: Any, where: str) -> str:
    url = _require_text(value, where, URL_LIMIT)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad(f"{where} must be an http(s) URL, got {url!r}")
    return url


def _check_size(raw: bytes) -> None:
    if len(raw) > BODY_LIMIT:
        raise _bad(f"request is {len(raw)} bytes, at most {BODY_LIMIT} allowed")


def _keyboard_rows(spans: list[tuple[int, int]]) -> int:
    """Rows a keyboard takes: buttons fill a 6-column grid in order, each at the first free
    place (reading order, from the previous button on) where its Columns x Rows block fits.
    """
    occupied: set[tuple[int, int]] = set()
    row = column = height = 0
    for columns, rows in spans:
        while True:
            if column + columns > KEYBOARD_COLUMNS:
                row, column = row + 1, 0
                continue
            cells = {(row + r, column + c) for r in range(rows) for c in range(columns)}
            if cells.isdisjoint(occupied):
                break
            column += 1
        occupied |= cells
        height = max(height, row + rows)
        column += columns
    return height


def _check_keyboard(keyboard: Any) -> None:
    """Viber's keyboard rules; the first violation is reported the way badData explains it."""
    if not isinstance(keyboard, dict):
        raise _bad(f"keyboard must be an object, got {keyboard!r}")
    if keyboard.get("Type") != "keyboard":
        raise _bad(f'keyboard.Type must be "keyboard", got {keyboard.get("Type")!r}')
    buttons = keyboard.get("Buttons")
    if not isinstance(buttons, list) or not buttons:
        raise _bad("keyboard.Buttons must be a non-empty list")
    if len(buttons) > KEYBOARD_BUTTON_LIMIT:
        raise _bad(f"keyboard has {len(buttons)} buttons, at most {KEYBOARD_BUTTON_LIMIT} allowed")
    state = keyboard.get("InputFieldState", "regular")
    if state not in INPUT_FIELD_STATES:
        raise _bad(f"keyboard.InputFieldState must be one of {sorted(INPUT_FIELD_STATES)}")
    spans: list[tuple[int, int]] = []
    for index, button in enumerate(buttons):
        where = f"keyboard.Buttons[{index}]"
        if not isinstance(button, dict):
            raise _bad(f"{where} must be an object")
        columns = button.get("Columns", KEYBOARD_COLUMNS)
        if not _is_int(columns) or not 1 <= columns <= KEYBOARD_COLUMNS:
            raise _bad(f"{where}.Columns must be an integer from 1 to 6, got {columns!r}")
        rows = button.get("Rows", 1)
        if not _is_int(rows) or not 1 <= rows <= BUTTON_ROWS_LIMIT:
            raise _bad(f"{where}.Rows must be an integer from 1 to 2, got {rows!r}")
        action = button.get("ActionType", "reply")
        if action not in ACTION_TYPES:
            raise _bad(f"{where}.ActionType must be one of {sorted(ACTION_TYPES)}, got {action!r}")
        _require_text(button.get("ActionBody"), f"{where}.ActionBody", BUTTON_ACTION_BODY_LIMIT)
        if "Text" in button:
            _require_text(button["Text"], f"{where}.Text", BUTTON_TEXT_LIMIT, empty=True)
        spans.append((columns, rows))
    height = _keyboard_rows(spans)
    if height > KEYBOARD_ROW_LIMIT:
        raise _bad(f"keyboard takes {height} rows, at most {KEYBOARD_ROW_LIMIT} allowed")


def _check_content(kind: str, body: JSONDict) -> None:
    """The fields each message type needs (send_message's "Message types" section)."""
    if kind == "text":
        _require_text(body.get("text"), "text", TEXT_LIMIT)
    elif kind == "picture":
        _require_url(body.get("media"), "media")
        if "text" in body:
            _require_text(body["text"], "text", PICTURE_TEXT_LIMIT, empty=True)
        if "thumbnail" in body:
            _require_url(body["thumbnail"], "thumbnail")
    elif kind in ("video", "file"):
        _require_url(body.get("media"), "media")
        if not _is_int(body.get("size")) or body["size"] < 0:
            raise _bad(f"size is required for {kind} messages (bytes, an integer)")
        if kind == "file":
            _require_text(body.get("file_name"), "file_name", 256)
        elif "duration" in body and (not _is_int(body["duration"]) or body["duration"] < 0):
            raise _bad("duration must be a non-negative integer (seconds)")
    elif kind == "location":
        location = body.get("location")
        if not isinstance(location, dict):
            raise _bad("location is required: an object with lat and lon")
        for key, bound in (("lat", 90.0), ("lon", 180.0)):
            value = location.get(key)
            with contextlib.suppress(TypeError, ValueError):
                if not isinstance(value, bool) and -bound <= float(value) <= bound:
                    continue
            raise _bad(f"location.{key} must be a number from {-bound} to {bound}")
    elif kind == "contact":
        contact = body.get("contact")
        if not isinstance(contact, dict):
            raise _bad("contact is required: an object with name and phone_number")
        _require_text(contact.get("name"), "contact.name", 28)
        _require_text(contact.get("phone_number"), "contact.phone_number", 18)
    elif kind == "sticker":
        if not _is_int(body.get("sticker_id")):
            raise _bad("sticker_id is required and must be an integer")
    elif kind == "url":
        _require_url(body.get("media"), "media")
    elif kind == "rich_media":
        rich = body.get("rich_media")
        if not isinstance(rich, dict) or not isinstance(rich.get("Buttons"), list):
            raise _bad("rich_media is required: an object with a Buttons list")
        if not rich["Buttons"]:
            raise _bad("rich_media.Buttons must not be empty")


def _check_message(body: JSONDict, *, needs_receiver: bool) -> None:
    """Everything Viber checks in a message before accepting it (status 3 or 13 otherwise)."""
    if needs_receiver:
        _require_text(body.get("receiver"), "receiver")
    sender = body.get("sender")
    if not isinstance(sender, dict):
        raise _bad("sender is required: an object with a name")
    name = _require_text(sender.get("name"), "sender.name", SENDER_NAME_LIMIT)
    if not name.strip():
        raise _bad("sender.name must not be blank")
    if sender.get("avatar") is not None:  # viberbot sends "avatar": null when there is none
        _require_url(sender["avatar"], "sender.avatar")
    kind = body.get("type")
    if kind not in MESSAGE_TYPES:
        raise _bad(f"type must be one of {sorted(MESSAGE_TYPES)}, got {kind!r}")
    _check_content(kind, body)
    if "tracking_data" in body:
        _require_text(body["tracking_data"], "tracking_data", TRACKING_DATA_LIMIT, empty=True)
    if "keyboard" in body:
        _check_keyboard(body["keyboard"])
    if "min_api_version" in body:
        version = body["min_api_version"]
        if not _is_int(version) or version < 1:
            raise _bad(f"min_api_version must be a positive integer, got {version!r}")
        if version > API_VERSION:
            raise _Refusal(ViberStatus.API_VERSION_NOT_SUPPORTED)


def _avatar(user_id: str) -> str:
    digest = hashlib.sha1(user_id.encode()).hexdigest()
    return f"https://media-direct.cdn.viber.com/download_photo?dlid={digest}&fltp=jpg&imsz=0000"


class _Url(str):
    """``api.url``: the base URL string ("http://127.0.0.1:PORT"), also callable as the ``url``
    callback builder, so that both the property and ``api.url(user_id, url)`` work (the brief
    names both ``url``); ``api.url_message`` is the same builder under a name of its own.
    """

    _build: Callable[..., JSONDict]

    def __new__(cls, value: str, build: Callable[..., JSONDict]) -> Self:
        instance = super().__new__(cls, value)
        instance._build = build
        return instance

    def __call__(self, user_id: str, url: str, **options: Any) -> JSONDict:
        return self._build(user_id, url, **options)


# --- the stand-in -------------------------------------------------------------------------------

_Handler = Callable[[JSONDict, bytes], JSONDict]


class ViberStandIn:
    """An in-process Viber REST Bot API on 127.0.0.1; see the module docstring.

    ``replyless_limit`` is how many messages one user may get within an hour without replying
    before send_message answers status 12 (None: no automatic limit; ``limit_reached`` still
    works).  ``require_webhook`` makes sends answer status 10 while no webhook is set, as the real
    service does; it is off by default so tests need not set one.
    """

    METHODS: tuple[str, ...] = (
        "send_message",
        "set_webhook",
        "get_account_info",
        "get_user_details",
        "broadcast_message",
    )

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        bot_name: str = "Khma",
        replyless_limit: int | None = REPLYLESS_LIMIT,
        require_webhook: bool = False,
    ) -> None:
        self.token = token
        self.bot_name = bot_name
        self.replyless_limit = replyless_limit
        self.require_webhook = require_webhook

        # Recordings (reset by clear()).
        self.sent: list[ViberSent] = []
        self.calls: list[ViberCall] = []

        # Server-side state.
        self.webhook: JSONDict | None = None
        self._profiles: dict[str, JSONDict] = {}
        self._last_token = _FIRST_TOKEN
        self._replyless: dict[str, deque[float]] = {}

        # Failure injection.
        self._unsubscribed: set[str] = set()
        self._unregistered: set[str] = set()
        self._limited: set[str] = set()
        self._fail_next: list[int] = []
        self._webhook_refusal: tuple[int, str] | None = None

        self._handlers: dict[str, _Handler] = {
            "send_message": self._send_message,
            "set_webhook": self._set_webhook,
            "get_account_info": self._get_account_info,
            "get_user_details": self._get_user_details,
            "broadcast_message": self._broadcast_message,
        }
        self._pulse = _Pulse()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind 127.0.0.1 on a free port (chosen by the OS, so parallel tests never collide)."""
        if self._runner is not None:
            raise RuntimeError("ViberStandIn is already started")
        app = web.Application()
        app.router.add_post("/pa/{method}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        self._runner = runner
        self._url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> _Url:
        """``http://127.0.0.1:PORT`` once started (a str; calling it builds a ``url`` message
        callback, see ``url_message``).
        """
        if self._url is None:
            raise RuntimeError("ViberStandIn.start() has not been awaited")
        return _Url(self._url, self.url_message)

    @property
    def api_url(self) -> str:
        """What the bot uses instead of ``https://chatapi.viber.com/pa``."""
        return f"{self.url}/pa"

    # --- inspection -----------------------------------------------------------------------------

    def sent_to(self, user_id: str) -> list[ViberSent]:
        """Messages Viber accepted for one user, in order (welcome and broadcasts included)."""
        return [message for message in self.sent if message.receiver == user_id]

    def calls_of(self, method: str) -> list[ViberCall]:
        """Every call of one API method, refused and failed ones included."""
        return [call for call in self.calls if call.method == method]

    def last_tracking_data(self, user_id: str) -> str | None:
        """The tracking_data of the last message to the user: Viber returns it with their reply."""
        messages = self.sent_to(user_id)
        return messages[-1].tracking_data if messages else None

    @property
    def subscribers(self) -> list[str]:
        """Users the stand-in has heard of (callbacks, sends) who have not unsubscribed."""
        known = set(self._profiles) | {message.receiver for message in self.sent}
        return sorted(known - self._unsubscribed - self._unregistered)

    def clear(self) -> None:
        """Forget the recordings (sent, calls).

        Server state (webhook, subscriptions, injected failures, reply counters) is kept, as it
        would be on the real service between two test steps.
        """
        self.sent.clear()
        self.calls.clear()

    async def wait_for_messages(
        self, user_id: str, count: int, timeout: float = 5.0
    ) -> list[ViberSent]:
        """Wait until at least ``count`` messages to ``user_id`` are recorded; return them all.

        The bot sends from its own tasks, so tests must wait rather than assert at once.  On
        timeout, raises AssertionError listing what the user did receive and which calls to them
        were refused, which is usually the whole diagnosis.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            messages = self.sent_to(user_id)
            if len(messages) >= count:
                return messages
            remaining = deadline - loop.time()
            if remaining <= 0:
                received = [m.text if m.text is not None else f"<{m.type}>" for m in messages]
                refused = [
                    f"{call.method} -> "
                    + (
                        f"HTTP {call.http_status}"
                        if call.answer is None
                        else f"status {call.status} {call.status_message}"
                    )
                    for call in self.calls
                    if call.concerns(user_id) and not call.ok
                ]
                raise AssertionError(
                    f"expected at least {count} message(s) to {user_id!r} within {timeout}s, "
                    f"got {len(messages)}: {received!r}; refused calls to them: {refused!r}"
                )
            await self._pulse.wait(remaining)

    # --- failure injection ----------------------------------------------------------------------

    def unsubscribe(self, user_id: str) -> None:
        """The user unsubscribed: sends to them answer status 6 receiverNotSubscribed."""
        self._unsubscribed.add(user_id)

    def subscribe(self, user_id: str) -> None:
        self._unsubscribed.discard(user_id)

    def unregister(self, user_id: str) -> None:
        """The id is no (longer a) Viber user: sends answer status 5 receiverNotRegistered."""
        self._unregistered.add(user_id)

    def register(self, user_id: str) -> None:
        self._unregistered.discard(user_id)

    def limit_reached(self, user_id: str) -> None:
        """Sends to the user answer status 12, as after 100 messages in an hour without reply.

        Stays until ``reset_limit``, whatever the user does (unlike the automatic counter).
        """
        self._limited.add(user_id)

    def reset_limit(self, user_id: str) -> None:
        """Lift ``limit_reached`` and restart the user's automatic counter."""
        self._limited.discard(user_id)
        self._replyless.pop(user_id, None)

    def fail_next(self, n: int = 1, http_status: int = 500) -> None:
        """The next ``n`` send_message calls answer ``http_status`` with a non-JSON (HTML) body,
        as Viber's front end does when the service behind it is down.
        """
        if not 400 <= http_status <= 599:
            raise ValueError("fail_next injects HTTP errors: http_status must be 4xx or 5xx")
        self._fail_next.extend([http_status] * n)

    def refuse_webhook(self, status: int = 1, message: str = "invalidUrl") -> None:
        """set_webhook answers ``status``/``message`` (until ``accept_webhook``)."""
        if status == ViberStatus.OK:
            raise ValueError("a refusal needs a non-zero status")
        self._webhook_refusal = (int(status), message)

    def accept_webhook(self) -> None:
        self._webhook_refusal = None

    # --- HTTP -----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body, problem = _parse_object(raw)
        call = ViberCall(path=request.path, body=body, raw=raw)
        self.calls.append(call)
        try:
            handler = self._handlers.get(request.match_info["method"])
            if handler is None:
                call.http_status = HTTPStatus.NOT_FOUND
                return web.Response(status=HTTPStatus.NOT_FOUND, text="404: Not Found")
            if request.match_info["method"] == "send_message" and self._fail_next:
                status = self._fail_next.pop(0)
                call.http_status = status
                phrase = f"{status} {HTTPStatus(status).phrase}"
                headers = {"Retry-After": "1"} if status == HTTPStatus.TOO_MANY_REQUESTS else {}
                return web.Response(
                    status=status,
                    text=f"<html><head><title>{phrase}</title></head>"
                    f"<body><h1>{phrase}</h1></body></html>",
                    content_type="text/html",
                    headers=headers,
                )
            try:
                self._check_auth(request, body)
                if problem is not None:
                    raise _bad(problem)
                call.answer = handler(body, raw)
            except _Refusal as refusal:
                call.answer = refusal.answer()
            return web.json_response(call.answer)
        finally:
            self._pulse.fire()

    def _check_auth(self, request: web.Request, body: JSONDict) -> None:
        """Viber reads the token from the header or (as viberbot sends it) from the body."""
        given = (request.headers.get(AUTH_HEADER), body.get("auth_token"))
        if not any(isinstance(t, str) and hmac.compare_digest(t, self.token) for t in given):
            raise _Refusal(ViberStatus.INVALID_AUTH_TOKEN)

    # --- methods --------------------------------------------------------------------------------

    def _send_message(self, body: JSONDict, raw: bytes) -> JSONDict:
        _check_size(raw)
        _check_message(body, needs_receiver=True)
        if self.require_webhook and self.webhook is None:
            raise _Refusal(ViberStatus.WEBHOOK_NOT_SET)
        receiver = body["receiver"]
        self._check_reachable(receiver)
        token = self._new_token()
        self._record(receiver, body, token, "send_message")
        return {
            "status": int(ViberStatus.OK),
            "status_message": "ok",
            "message_token": token,
            "chat_hostname": CHAT_HOSTNAME,
        }

    def _broadcast_message(self, body: JSONDict, raw: bytes) -> JSONDict:
        _check_size(raw)
        receivers = body.get("broadcast_list")
        if not isinstance(receivers, list) or not receivers:
            raise _bad("broadcast_list is required: a non-empty list of user ids")
        if len(receivers) > BROADCAST_LIMIT:
            raise _bad(f"broadcast_list has {len(receivers)} ids, at most {BROADCAST_LIMIT}")
        if not all(isinstance(r, str) and r for r in receivers):
            raise _bad("broadcast_list must hold user ids (non-empty strings)")
        _check_message(body, needs_receiver=False)
        token = self._new_token()
        failed: list[JSONDict] = []
        for receiver in receivers:
            try:
                self._check_reachable(receiver)
            except _Refusal as refusal:
                failed.append({"receiver": receiver, **refusal.answer()})
                continue
            self._record(receiver, body, token, "broadcast_message")
        return {
            "status": int(ViberStatus.OK),
            "status_message": "ok",
            "message_token": token,
            "failed_list": failed,
        }

    def _set_webhook(self, body: JSONDict, raw: bytes) -> JSONDict:
        if self._webhook_refusal is not None:
            raise _Refusal(*self._webhook_refusal)
        url = body.get("url")
        if not isinstance(url, str):
            raise _Refusal(ViberStatus.INVALID_URL)
        events = body.get("event_types", list(WEBHOOK_EVENT_TYPES))
        if not isinstance(events, list) or any(e not in WEBHOOK_EVENT_TYPES for e in events):
            raise _bad(f"event_types must be a list of {list(WEBHOOK_EVENT_TYPES)}")
        for flag in ("is_inline", "send_name", "send_photo"):
            if flag in body and not isinstance(body[flag], bool):
                raise _bad(f"{flag} must be a boolean")
        if url == "":  # Viber's way of removing the webhook
            self.webhook = None
        else:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise _Refusal(ViberStatus.INVALID_URL)
            self.webhook = copy.deepcopy(body)
        return {"status": int(ViberStatus.OK), "status_message": "ok", "event_types": events}

    def _get_account_info(self, body: JSONDict, raw: bytes) -> JSONDict:
        number = int(hashlib.sha256(self.token.encode()).hexdigest()[:15], 16)
        uri = re.sub(r"[^a-z0-9]", "", self.bot_name.lower()) or "bot"
        return {
            "status": int(ViberStatus.OK),
            "status_message": "ok",
            "id": f"pa:{number}",
            "chat_hostname": CHAT_HOSTNAME,
            "name": self.bot_name,
            "uri": uri,
            "icon": f"https://media-direct.cdn.viber.com/pg_download?pgtp=icons&dlid={uri}",
            "background": f"https://media-direct.cdn.viber.com/pg_download?pgtp=bg&dlid={uri}",
            "category": "Organizations",
            "subcategory": "Non-Profit Organization",
            "location": {"lon": 44.793, "lat": 41.7151},
            "country": "GE",
            "webhook": self.webhook["url"] if self.webhook else "",
            "event_types": (
                list(self.webhook.get("event_types", WEBHOOK_EVENT_TYPES)) if self.webhook else []
            ),
            "subscribers_count": len(self.subscribers),
            "members": [],
        }

    def _get_user_details(self, body: JSONDict, raw: bytes) -> JSONDict:
        user_id = _require_text(body.get("id"), "id")
        self._check_reachable(user_id, counted=False)
        profile = self._profile(user_id)
        return {
            "status": int(ViberStatus.OK),
            "status_message": "ok",
            "message_token": self._new_token(),
            "chat_hostname": CHAT_HOSTNAME,
            "user": {
                "id": user_id,
                "name": profile["name"],
                "avatar": profile["avatar"],
                "country": profile["country"],
                "language": profile["language"],
                "primary_device_os": "Android 14",
                "api_version": API_VERSION,
                "viber_version": "24.8.1.0",
                "mcc": 282,  # Georgia
                "mnc": 2,
                "device_type": "SM-A546E",
            },
        }

    # --- helpers --------------------------------------------------------------------------------

    def _check_reachable(self, user_id: str, *, counted: bool = True) -> None:
        """Status 5, 6 or 12 for a user who can't get a message now (in that order)."""
        if user_id in self._unregistered:
            raise _Refusal(ViberStatus.RECEIVER_NOT_REGISTERED)
        if user_id in self._unsubscribed:
            raise _Refusal(ViberStatus.RECEIVER_NOT_SUBSCRIBED)
        if not counted:
            return
        if user_id in self._limited:
            raise _Refusal(ViberStatus.TOO_MANY_REQUESTS)
        if self.replyless_limit is not None:
            recent = self._replyless.get(user_id)
            if recent is not None:
                cutoff = time.monotonic() - REPLYLESS_WINDOW
                while recent and recent[0] < cutoff:
                    recent.popleft()
                if len(recent) >= self.replyless_limit:
                    raise _Refusal(ViberStatus.TOO_MANY_REQUESTS)

    def _record(self, receiver: str, body: JSONDict, token: int, method: str) -> None:
        if method != "welcome":
            self._replyless.setdefault(receiver, deque()).append(time.monotonic())
        keyboard = body.get("keyboard")
        self.sent.append(
            ViberSent(
                receiver=receiver,
                type=str(body["type"]),
                text=body.get("text"),
                media=body.get("media"),
                keyboard=copy.deepcopy(keyboard) if isinstance(keyboard, dict) else None,
                tracking_data=body.get("tracking_data"),
                sender=copy.deepcopy(body["sender"]),
                min_api_version=body.get("min_api_version"),
                message_token=token,
                body=copy.deepcopy(body),
                method=method,
            )
        )

    def _new_token(self) -> int:
        """A fresh message token: increasing, 64-bit, above 2**53 (float storage loses it)."""
        self._last_token += 1
        return self._last_token

    def _profile(self, user_id: str) -> JSONDict:
        return self._profiles.get(user_id) or {
            "name": "Nino",
            "avatar": _avatar(user_id),
            "language": "ka",
            "country": "GE",
        }

    def _user(
        self, user_id: str, name: str | None, language: str | None, country: str | None
    ) -> JSONDict:
        """The user object of callbacks; remembers name/language for later callbacks and
        get_user_details, as the real service knows them.
        """
        profile = dict(self._profile(user_id))
        profile.update(
            {k: v for k, v in (("name", name), ("language", language), ("country", country)) if v}
        )
        self._profiles[user_id] = profile
        return {
            "id": user_id,
            "name": profile["name"],
            "avatar": profile["avatar"],
            "language": profile["language"],
            "country": profile["country"],
            "api_version": API_VERSION,
        }

    def _event(self, event: str, message_token: int | None, timestamp: int | None) -> JSONDict:
        return {
            "event": event,
            "timestamp": timestamp if timestamp is not None else int(time.time() * 1000),
            "message_token": message_token if message_token is not None else self._new_token(),
        }

    def _observe(self, payload: Any) -> None:
        """Learn from a callback what the real service would know (see the module docstring)."""
        if not isinstance(payload, dict):
            return
        event = payload.get("event")
        if event == "message" and isinstance(payload.get("sender"), dict):
            user_id = payload["sender"].get("id")
            if isinstance(user_id, str):
                self.subscribe(user_id)
                self._replyless.pop(user_id, None)
        elif event == "subscribed" and isinstance(payload.get("user"), dict):
            if isinstance(user_id := payload["user"].get("id"), str):
                self.subscribe(user_id)
        elif event == "conversation_started" and payload.get("subscribed") is True:
            if isinstance(user_id := (payload.get("user") or {}).get("id"), str):
                self.subscribe(user_id)
        elif event == "unsubscribed" and isinstance(payload.get("user_id"), str):
            self.unsubscribe(payload["user_id"])

    # --- callbacks: the Viber servers' side -----------------------------------------------------

    def conversation_started(
        self,
        user_id: str,
        *,
        name: str | None = None,
        language: str | None = None,
        country: str | None = None,
        context: str | None = None,
        subscribed: bool = False,
        message_token: int | None = None,
        timestamp: int | None = None,
    ) -> JSONDict:
        """The user opened the chat (``context`` from a ``viber://pa?...&context=`` deep link).

        ``name``/``language``/``country`` default to what the user last had ("Nino", "ka", "GE").
        """
        payload = self._event("conversation_started", message_token, timestamp)
        payload["type"] = "open"
        if context is not None:
            payload["context"] = context
        payload["user"] = self._user(user_id, name, language, country)
        payload["subscribed"] = subscribed
        self._observe(payload)
        return payload

    def subscribed(
        self,
        user_id: str,
        *,
        name: str | None = None,
        language: str | None = None,
        country: str | None = None,
        message_token: int | None = None,
        timestamp: int | None = None,
    ) -> JSONDict:
        """The user subscribed (also subscribes them here)."""
        payload = self._event("subscribed", message_token, timestamp)
        payload["user"] = self._user(user_id, name, language, country)
        self._observe(payload)
        return payload

    def unsubscribed(
        self, user_id: str, *, message_token: int | None = None, timestamp: int | None = None
    ) -> JSONDict:
        """The user unsubscribed (also makes later sends to them answer status 6)."""
        payload = self._event("unsubscribed", message_token, timestamp)
        payload["user_id"] = user_id
        self._observe(payload)
        return payload

    def delivered(
        self, message_token: int, user_id: str, *, timestamp: int | None = None
    ) -> JSONDict:
        """The bot's message ``message_token`` reached the user's device."""
        return {**self._event("delivered", message_token, timestamp), "user_id": user_id}

    def seen(self, message_token: int, user_id: str, *, timestamp: int | None = None) -> JSONDict:
        """The user saw the bot's message ``message_token``."""
        return {**self._event("seen", message_token, timestamp), "user_id": user_id}

    def failed(
        self,
        message_token: int,
        user_id: str,
        desc: str = "Failure description",
        *,
        timestamp: int | None = None,
    ) -> JSONDict:
        """The bot's message ``message_token`` could not be delivered."""
        payload = self._event("failed", message_token, timestamp)
        return {**payload, "user_id": user_id, "desc": desc}

    def webhook_event(
        self, *, message_token: int | None = None, timestamp: int | None = None
    ) -> JSONDict:
        """The check Viber POSTs when a webhook is set; the bot must answer 200."""
        event = self._event("webhook", message_token, timestamp)
        token = event.pop("message_token")
        return {**event, "chat_hostname": CHAT_HOSTNAME, "message_token": token}

    def _message(
        self,
        user_id: str,
        message: JSONDict,
        *,
        name: str | None,
        language: str | None,
        country: str | None,
        tracking_data: str | None,
        message_token: int | None,
        timestamp: int | None,
    ) -> JSONDict:
        if tracking_data is not None:
            message["tracking_data"] = tracking_data
        payload = self._event("message", message_token, timestamp)
        payload["sender"] = self._user(user_id, name, language, country)
        payload["message"] = message
        self._observe(payload)
        return payload

    def text(
        self,
        user_id: str,
        text: str,
        *,
        name: str | None = None,
        language: str | None = None,
        country: str | None = None,
        tracking_data: str | None = None,
        message_token: int | None = None,
        timestamp: int | None = None,
    ) -> JSONDict:
        """A text message from the user (also what a ``reply`` button sends: its ActionBody).

        ``tracking_data`` is omitted unless given; ``press`` echoes it as Viber does.
        """
        return self._message(
            user_id,
            {"type": "text", "text": text},
            name=name,
            language=language,
            country=country,
            tracking_data=tracking_data,
            message_token=message_token,
            timestamp=timestamp,
        )

    def press(
        self,
        user_id: str,
        label: str,
        *,
        message_token: int | None = None,
        timestamp: int | None = None,
    ) -> JSONDict:
        """The user tapped a ``reply`` button of the last keyboard they got (found by Text,
        Text without markup, or ActionBody): a text message carrying its ActionBody and the
        tracking_data of the bot's last message, exactly what Viber sends.
        """
        boards = [m for m in self.sent_to(user_id) if m.keyboard]
        if not boards:
            raise ValueError(f"no keyboard was sent to {user_id!r}")
        for button in boards[-1].buttons:
            text = str(button.get("Text", ""))
            if label in (text, _TAG_RE.sub("", text), button.get("ActionBody")):
                if button.get("ActionType", "reply") != "reply":
                    raise ValueError(f"button {label!r} is not a reply button: {button!r}")
                return self.text(
                    user_id,
                    str(button["ActionBody"]),
                    tracking_data=self.last_tracking_data(user_id),
                    message_token=message_token,
                    timestamp=timestamp,
                )
        raise ValueError(f"no button {label!r} in {boards[-1].button_texts!r}")

    def picture(
        self,
        user_id: str,
        media_url: str,
        *,
        caption: str | None = None,
        file_name: str = "photo.jpg",
        size: int = 184_320,
        name: str | None = None,
        language: str | None = None,
        country: str | None = None,
        tracking_data: str | None = None,
        message_token: int | None = None,
        timestamp: int | None = None,
    ) -> JSONDict:
        """A photo, optionally with a caption (``message.text``)."""
        message: JSONDict = {"type": "picture"}
        if caption is not None:
            message["text"] = caption
        message.update(
            {"media": media_url, "thumbnail": media_url, "file_name": file_name, "size": size}
        )
        return self._message(
            user_id,
            message,
            name=name,
            language=language,
            country=country,
            tracking_data=tracking_data,
            message_token=message_token,
            timestamp=timestamp,
        )

    def video(
        self,
        user_id: str,
        media_url: str,
        size: int = 2_097_152,
        duration: int = 12,
        *,
        name: str | None = None,
        language: str | None = None,
        country: str | None = None,
        tracking_data: str | None = None,
        message_token: int | None = None,
        timestamp: int | None = None,
    ) -> JSONDict:
        """A video (``size`` in bytes, ``duration`` in seconds)."""
        message = {
            "type": "video",
            "media": media_url,
            "thumbnail": media_url,
            "size": size,
            "duration": duration,
        }
        return self._message(
            user_id,
            message,
            name=name,
            language=language,
            country=country,
            tracking_data=tracking_data,
            message_token=message_token,
            timestamp=timestamp,
        )

    def file(
        self,
        user_id: str,
        media_url: str,
        file_name: str,
        size: int,
        *,
        name: str | None = None,
        language: str | None = None,
        country: str | None = None,
        tracking_data: str | None = None,
        message_token: int | None = None,
        timestamp: int | None = None,
    ) -> JSONDict:
        """A file (document)."""
        message = {"type": "file", "media": media_url, "size": size, "file_name": file_name}
        return self._message(
            user_id,
            message,
            name=name,
            language=language,
            country=country,
            tracking_data=tracking_data,
            message_token=message_token,
            timestamp=timestamp,
        )

    def location(
        self,
        user_id: str,
        lat: float,
        lon: float,
        *,
        name: str | None = None,
        language: str | None = None,
        country: str | None = None,
        tracking_data: str | None = None,
        message_token: int | None = None,
        timestamp: int | None = None,
    ) -> JSONDict:
        """A shared location."""
        message = {"type": "location", "location": {"lat": lat, "lon": lon}}
        return self._message(
            user_id,
            message,
            name=name,
            language=language,
            country=country,
            tracking_data=tracking_data,
            message_token=message_token,
            timestamp=timestamp,
        )

    def contact(
        self,
        user_id: str,
        name: str,
        phone_number: str,
        *,
        sender_name: str | None = None,
        language: str | None = None,
        country: str | None = None,
        tracking_data: str | None = None,
        message_token: int | None = None,
        timestamp: int | None = None,
    ) -> JSONDict:
        """A shared contact (``name`` is the contact's; ``sender_name`` the user's)."""
        message = {"type": "contact", "contact": {"name": name, "phone_number": phone_number}}
        return self._message(
            user_id,
            message,
            name=sender_name,
            language=language,
            country=country,
            tracking_data=tracking_data,
            message_token=message_token,
            timestamp=timestamp,
        )

    def sticker(
        self,
        user_id: str,
        sticker_id: int = 40133,
        *,
        name: str | None = None,
        language: str | None = None,
        country: str | None = None,
        tracking_data: str | None = None,
        message_token: int | None = None,
        timestamp: int | None = None,
    ) -> JSONDict:
        """A sticker."""
        return self._message(
            user_id,
            {"type": "sticker", "sticker_id": sticker_id},
            name=name,
            language=language,
            country=country,
            tracking_data=tracking_data,
            message_token=message_token,
            timestamp=timestamp,
        )

    def url_message(
        self,
        user_id: str,
        url: str,
        *,
        name: str | None = None,
        language: str | None = None,
        country: str | None = None,
        tracking_data: str | None = None,
        message_token: int | None = None,
        timestamp: int | None = None,
    ) -> JSONDict:
        """A link the user sent (``message.media``); also reachable as ``api.url(user_id, url)``
        once the stand-in is started.
        """
        return self._message(
            user_id,
            {"type": "url", "media": url},
            name=name,
            language=language,
            country=country,
            tracking_data=tracking_data,
            message_token=message_token,
            timestamp=timestamp,
        )

    # --- delivering callbacks -------------------------------------------------------------------

    def signature(self, body: bytes) -> str:
        """``X-Viber-Content-Signature``: hex HMAC-SHA256 of the raw body, keyed by the token."""
        return hmac.new(self.token.encode(), body, hashlib.sha256).hexdigest()

    async def post_callback(
        self,
        webhook_url: str,
        payload: JSONDict | bytes | str,
        *,
        signature: str | EllipsisType | None = ...,
    ) -> tuple[int, Any]:
        """POST a callback to the bot's webhook as Viber does; return (HTTP status, answer).

        A dict is sent as compact UTF-8 JSON; bytes/str are sent as they are (for malformed
        bodies).  ``signature``: by default the right one, a string to send that instead, None to
        send no signature header.  The answer is the parsed JSON body, else its text.  Only
        loopback URLs are allowed.  A valid welcome answer to conversation_started is recorded
        in ``sent``.
        """
        host = urlsplit(webhook_url).hostname
        if host not in _LOOPBACK:
            raise ValueError(f"the stand-in only posts to loopback, not {host!r}")
        if isinstance(payload, bytes):
            body = payload
        elif isinstance(payload, str):
            body = payload.encode()
        else:
            body = _compact_json(payload)
        parsed_payload, _ = _parse_object(body)
        self._observe(parsed_payload)
        headers = {"Content-Type": "application/json"}
        if signature is ...:
            headers[SIGNATURE_HEADER] = self.signature(body)
        elif signature is not None:
            headers[SIGNATURE_HEADER] = signature
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.post(webhook_url, data=body, headers=headers) as response,
        ):
            status = response.status
            text = await response.text()
        answer: Any = text
        if text.strip():
            with contextlib.suppress(ValueError):
                answer = json.loads(text)
        if (
            status == HTTPStatus.OK
            and parsed_payload.get("event") == "conversation_started"
            and isinstance(answer, dict)
            and answer
        ):
            self._welcome(parsed_payload, answer, text.encode())
        return status, answer

    def _welcome(self, payload: JSONDict, answer: JSONDict, raw: bytes) -> None:
        """Deliver (or refuse, like Viber: silently for the user) the welcome message."""
        user = payload.get("user")
        user_id = user.get("id") if isinstance(user, dict) else None
        if not isinstance(user_id, str):
            return
        call = ViberCall(path="welcome", body={**answer, "receiver": user_id}, raw=raw)
        self.calls.append(call)
        try:
            _check_size(raw)
            _check_message(answer, needs_receiver=False)
            if user_id in self._unregistered:  # subscription is not needed for the welcome
                raise _Refusal(ViberStatus.RECEIVER_NOT_REGISTERED)
            token = self._new_token()
            self._record(user_id, answer, token, "welcome")
            call.answer = {"status": 0, "status_message": "ok", "message_token": token}
        except _Refusal as refusal:
            call.answer = refusal.answer()
        self._pulse.fire()
