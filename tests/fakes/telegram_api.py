"""A loopback stand-in for the Telegram Bot API, started by the tests themselves.

Why it exists: Khma's tests should drive the *real* python-telegram-bot ``Application``/``Bot``
over real HTTP, so that request encoding, response parsing, error mapping (``RetryAfter``,
``Forbidden``, ``BadRequest``...) and long polling are exercised exactly as in production.  Only
the far end is replaced: an aiohttp server bound to 127.0.0.1 that answers in the shapes and with
the error descriptions of ``https://api.telegram.org`` and records everything the bot sent.

Usage::

    async with TelegramStandIn(token="123:ABC") as api:
        bot = telegram.Bot("123:ABC", base_url=api.base_url, base_file_url=api.base_file_url)
        api.command_update(42, "/start")            # queued for getUpdates
        ...
        [reply] = await api.wait_for_messages(42, 1)

Everything lives on the instance (no module state), so tests can run several stand-ins at once.

Deliberate limits: only the methods in ``TelegramStandIn.METHODS`` exist (any other answers 404
"method not found", like an unknown method on the real server); HTML ``parse_mode`` is checked
for well-formed, supported tags but MarkdownV2 is not validated; webhooks are recorded, never
called (tests POST updates to the bot themselves, see ``post_webhook_update``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import html
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

JSONDict = dict[str, Any]

# --- how Telegram reads parameters -------------------------------------------------------------
# python-telegram-bot sends every parameter as a form field (urlencoded, or multipart when a file
# is uploaded) whose value is a string: plain strings as-is, everything else JSON-encoded
# ("123", "true", '{"inline_keyboard": ...}').  The real server types them by parameter name, and
# so does the stand-in, so the recorded params hold Python ints/bools/dicts, not JSON strings.

_JSON_FIELDS = frozenset(
    {
        "allowed_updates",
        "caption_entities",
        "commands",
        "entities",
        "explanation_entities",
        "input_message_content",
        "link_preview_options",
        "media",
        "menu_button",
        "message_ids",
        "options",
        "reaction",
        "reply_markup",
        "reply_parameters",
        "results",
        "rights",
        "scope",
    }
)
_INT_FIELDS = frozenset(
    {
        "cache_time",
        "chat_id",
        "duration",
        "from_chat_id",
        "height",
        "limit",
        "max_connections",
        "message_id",
        "message_thread_id",
        "offset",
        "reply_to_message_id",
        "timeout",
        "user_id",
        "width",
    }
)
_FLOAT_FIELDS = frozenset({"latitude", "longitude", "horizontal_accuracy"})
_BOOL_FIELDS = frozenset(
    {
        "allow_paid_broadcast",
        "allow_sending_without_reply",
        "disable_content_type_detection",
        "disable_notification",
        "disable_web_page_preview",
        "drop_pending_updates",
        "has_spoiler",
        "protect_content",
        "show_alert",
        "show_caption_above_media",
        "supports_streaming",
    }
)

# Tags Telegram accepts with parse_mode=HTML (https://core.telegram.org/bots/api#html-style).
_HTML_TAGS = frozenset(
    {
        "a",
        "b",
        "blockquote",
        "code",
        "del",
        "em",
        "i",
        "ins",
        "pre",
        "s",
        "span",
        "strike",
        "strong",
        "tg-emoji",
        "tg-spoiler",
        "u",
    }
)
_HTML_TAG_RE = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)([^<>]*)>")
_CHAT_ACTIONS = frozenset(
    {
        "choose_sticker",
        "find_location",
        "record_video",
        "record_video_note",
        "record_voice",
        "typing",
        "upload_document",
        "upload_photo",
        "upload_video",
        "upload_video_note",
        "upload_voice",
    }
)
# Update types Telegram withholds unless they are asked for explicitly in allowed_updates.
_OPT_IN_UPDATE_TYPES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
_WEBHOOK_PORTS = frozenset({80, 88, 443, 8443})
_SECRET_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
_COMMAND_RE = re.compile(r"[a-z0-9_]{1,32}")
_MESSAGE_TEXT_LIMIT = 4096
_CAPTION_LIMIT = 1024
_CALLBACK_DATA_LIMIT = 64
# Author of user messages in group chats (a private chat's id *is* the user's id).
_GROUP_MEMBER_ID = 5_000_001

_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)


# --- records ------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class UploadedFile:
    """A file the bot uploaded in a multipart request (kept so tests can inspect the bytes)."""

    field_name: str
    filename: str | None
    content_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(kw_only=True)
class ApiCall:
    """One HTTP call to the Bot API, successful or not, in arrival order.

    ``status`` is the HTTP status answered, or ``None`` while the call is in flight (or if the
    client went away before an answer, e.g. a cancelled long poll).
    """

    method: str
    params: JSONDict
    at: float = field(default_factory=time.monotonic)
    status: int | None = None
    description: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == HTTPStatus.OK


@dataclass(kw_only=True)
class SentMessage:
    """A message the bot successfully sent (sendMessage, sendPhoto, ...).

    ``text``/``caption`` are exactly what the bot sent (markup included when parse_mode is set).
    ``photo``/``voice``/``document`` hold the file_id string the bot sent, or for an upload the
    file_id the stand-in assigned (the bytes are in ``files``).  ``reply_markup`` is the decoded
    markup of any kind (inline keyboard, reply keyboard, remove, force reply).  ``result`` is the
    Message object returned to the bot.
    """

    method: str
    chat_id: int
    message_id: int
    text: str | None = None
    caption: str | None = None
    photo: str | None = None
    voice: str | None = None
    document: str | None = None
    reply_markup: JSONDict | None = None
    params: JSONDict = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)
    result: JSONDict = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)

    @property
    def buttons(self) -> list[JSONDict]:
        """All keyboard buttons, row by row, flattened (plain-string buttons become {"text"})."""
        markup = self.reply_markup or {}
        rows = markup.get("inline_keyboard") or markup.get("keyboard") or []
        return [
            button if isinstance(button, dict) else {"text": str(button)}
            for row in rows
            for button in row
        ]

    @property
    def button_texts(self) -> list[str]:
        return [str(button.get("text", "")) for button in self.buttons]

    @property
    def callback_data(self) -> list[str]:
        return [str(b["callback_data"]) for b in self.buttons if "callback_data" in b]


@dataclass(kw_only=True)
class EditedMessage:
    """A successful editMessageText / editMessageCaption / editMessageReplyMarkup."""

    method: str
    chat_id: int | None
    message_id: int | None
    inline_message_id: str | None = None
    text: str | None = None
    caption: str | None = None
    reply_markup: JSONDict | None = None
    params: JSONDict = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)


@dataclass(kw_only=True)
class CallbackAnswer:
    """A successful answerCallbackQuery."""

    callback_query_id: str
    text: str | None = None
    show_alert: bool = False
    url: str | None = None
    cache_time: int | None = None
    params: JSONDict = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)


@dataclass(kw_only=True)
class WebhookConfig:
    """The webhook as last set with setWebhook (compared field-wise for "already set")."""

    url: str
    secret_token: str | None = None
    allowed_updates: list[str] | None = None
    max_connections: int = 40
    ip_address: str | None = None
    drop_pending_updates: bool = field(default=False, compare=False)
    params: JSONDict = field(default_factory=dict, compare=False)


# --- internals ----------------------------------------------------------------------------------


class _ApiError(Exception):
    """An error answer, raised anywhere in a handler and turned into Telegram's error JSON."""

    def __init__(self, status: int, description: str, parameters: JSONDict | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def response(self) -> web.Response:
        body: JSONDict = {"ok": False, "error_code": self.status, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return web.json_response(body, status=self.status)


@dataclass
class _Described:
    """A successful result that Telegram accompanies with a description (webhook methods)."""

    result: Any
    description: str


@dataclass
class _StoredMessage:
    """A message known to exist in a chat, so edits/callbacks behave like on the real server."""

    message: JSONDict
    from_bot: bool


@dataclass
class _StoredFile:
    file_path: str
    content: bytes


class _Pulse:
    """A broadcast wake-up: ``fire()`` is synchronous (usable from ``push_update``) and wakes
    every coroutine currently in ``wait()``; waiters re-check their condition afterwards.
    """

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


def _utf16_len(text: str) -> int:
    """Telegram measures text lengths and entity offsets in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _visible_text(text: str, parse_mode: str | None) -> str:
    """The text a user sees (what Telegram returns in Message.text): HTML markup stripped."""
    if (parse_mode or "").upper() == "HTML":
        return html.unescape(re.sub(r"<[^<>]*>", "", text))
    return text


def _check_html(text: str) -> None:
    """Reject HTML Telegram would reject: unsupported or unbalanced tags and stray ``<``.

    This is what catches user input interpolated into an HTML message without escaping.
    """
    stack: list[str] = []
    position = 0
    while (start := text.find("<", position)) != -1:
        offset = len(text[:start].encode())
        match = _HTML_TAG_RE.match(text, start)
        if match is None:
            raise _ApiError(
                400,
                f'Bad Request: can\'t parse entities: Unsupported start tag "" at byte offset '
                f"{offset}",
            )
        closing, name = match.group(1) == "/", match.group(2).lower()
        if closing:
            if not stack:
                raise _ApiError(
                    400,
                    f"Bad Request: can't parse entities: Unexpected end tag at byte offset "
                    f"{offset}",
                )
            if stack[-1] != name:
                raise _ApiError(
                    400,
                    f"Bad Request: can't parse entities: Unmatched end tag at byte offset "
                    f'{offset}, expected "</{stack[-1]}>", found "</{name}>"',
                )
            stack.pop()
        else:
            if name not in _HTML_TAGS:
                raise _ApiError(
                    400,
                    f'Bad Request: can\'t parse entities: Unsupported start tag "{name}" at byte '
                    f"offset {offset}",
                )
            stack.append(name)
        position = match.end()
    if stack:
        raise _ApiError(
            400,
            "Bad Request: can't parse entities: Can't find end tag corresponding to start tag "
            f'"{stack[-1]}"',
        )


def _decode_param(name: str, value: Any) -> Any:
    """Type one parameter the way the Bot API does (see the field sets above)."""
    if not isinstance(value, str):
        return value
    if name in _JSON_FIELDS:
        try:
            return json.loads(value)
        except ValueError:
            what = "reply keyboard markup" if name == "reply_markup" else name
            raise _ApiError(400, f"Bad Request: can't parse {what} JSON object") from None
    if name in _INT_FIELDS:
        with contextlib.suppress(ValueError):
            return int(value)
    elif name in _FLOAT_FIELDS:
        with contextlib.suppress(ValueError):
            return float(value)
    elif name in _BOOL_FIELDS:
        lowered = value.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0", ""):
            return False
    return value


async def _read_params(request: web.Request) -> JSONDict:
    """Parameters from the query string plus a JSON, urlencoded or multipart body."""
    raw: JSONDict = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise _ApiError(400, "Bad Request: can't parse JSON encoded request")
            raw.update(body)
        else:
            form = await request.post()
            for name, value in form.items():
                if isinstance(value, web.FileField):
                    raw[name] = UploadedFile(
                        field_name=name,
                        filename=value.filename,
                        content_type=value.content_type,
                        data=value.file.read(),
                    )
                else:
                    raw[name] = value
    return {name: _decode_param(name, value) for name, value in raw.items()}


def _int(params: JSONDict, name: str, default: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _ApiError(400, f"Bad Request: wrong parameter {name} in request")
    return int(value)


def _optional_str(params: JSONDict, name: str) -> str | None:
    value = params.get(name)
    return None if value is None else str(value)


def _unique_id(file_id: str) -> str:
    """A stable, short file_unique_id derived from the file_id (as Telegram's look)."""
    return "AQAD" + hashlib.sha1(file_id.encode()).hexdigest()[:12]


def _update_type(update: JSONDict) -> str:
    return next((key for key in update if key != "update_id"), "")


def _creates_message(method: str) -> bool:
    """Methods that put a new message into a chat: the ones block() and fail_next() affect."""
    if method == "sendChatAction":
        return False
    return method.startswith(("send", "copyMessage", "forwardMessage"))


# --- the stand-in -------------------------------------------------------------------------------

_Handler = Callable[[JSONDict], Awaitable[Any]]


class TelegramStandIn:
    """An in-process Telegram Bot API server on 127.0.0.1; see the module docstring.

    ``strict`` (default True) makes the stand-in refuse what the real API refuses about things it
    has never seen: editing/deleting a message it doesn't know, answering an unknown or already
    answered callback query, getFile for an unknown file_id.  Messages and callback queries the
    update builders create are known, so normal tests need no setup.
    """

    METHODS: tuple[str, ...] = (
        "getMe",
        "getUpdates",
        "sendMessage",
        "sendPhoto",
        "sendVoice",
        "sendDocument",
        "sendChatAction",
        "answerCallbackQuery",
        "editMessageText",
        "editMessageCaption",
        "editMessageReplyMarkup",
        "deleteMessage",
        "getFile",
        "setWebhook",
        "deleteWebhook",
        "getWebhookInfo",
        "setMyCommands",
        "deleteMyCommands",
        "getMyCommands",
    )

    def __init__(
        self,
        token: str = "123:ABC",
        *,
        bot_first_name: str = "Khma",
        bot_username: str = "khma_test_bot",
        strict: bool = True,
    ) -> None:
        prefix = token.split(":", 1)[0]
        if not prefix.isdigit():
            raise ValueError(f"a bot token starts with the bot's numeric id, got {token!r}")
        self.token = token
        self.strict = strict
        self.bot_user: JSONDict = {
            "id": int(prefix),
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

        # Recordings (reset by clear()).
        self.sent: list[SentMessage] = []
        self.calls: list[ApiCall] = []
        self.edits: list[EditedMessage] = []
        self.callback_answers: list[CallbackAnswer] = []
        self.too_many_requests = 0

        # Server-side state.
        self.webhook: WebhookConfig | None = None
        self.my_commands: dict[tuple[str, str], list[JSONDict]] = {}
        self._queue: list[JSONDict] = []
        # When each update was queued (time.monotonic), for latency measurements.
        self.queued_at: dict[int, float] = {}
        self._next_update_id = 1
        self._confirmed_offset = 0
        self._allowed_updates: list[str] = []
        self._poll_generation = 0
        self._poll_terminated_by = "other getUpdates request"
        self._messages: dict[tuple[int, int], _StoredMessage] = {}
        self._last_message_id: dict[int, int] = {}
        self._chat_names: dict[int, str] = {}
        self._open_callback_queries: set[str] = set()
        self._callback_counter = 0
        self._files: dict[str, _StoredFile] = {}
        self._file_counter = 0

        # Failure injection.
        self._blocked: set[int] = set()
        self._fail_next: list[int] = []
        self._rate: float | None = None
        self._retry_after = 1
        self._tokens = 0.0
        self._tokens_at = 0.0
        self._stall: asyncio.Event | None = None
        self.stalled = 0  # message-creating calls that met a stall

        self._handlers: dict[str, _Handler] = {
            "getMe": self._get_me,
            "getUpdates": self._get_updates,
            "sendMessage": self._send_message,
            "sendPhoto": self._send_photo,
            "sendVoice": self._send_voice,
            "sendDocument": self._send_document,
            "sendChatAction": self._send_chat_action,
            "answerCallbackQuery": self._answer_callback_query,
            "editMessageText": self._edit_message_text,
            "editMessageCaption": self._edit_message_caption,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "getFile": self._get_file,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "setMyCommands": self._set_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "getMyCommands": self._get_my_commands,
        }
        self._by_lower = {name.lower(): name for name in self._handlers}

        self._updates_pulse = _Pulse()
        self._activity_pulse = _Pulse()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._closing = False

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind 127.0.0.1 on a free port (chosen by the OS, so parallel tests never collide)."""
        if self._runner is not None:
            raise RuntimeError("TelegramStandIn is already started")
        app = web.Application(client_max_size=50 * 1024 * 1024)  # Telegram's upload limit
        for http_method in ("GET", "POST"):
            app.router.add_route(http_method, "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{file_path:.+}", self._handle_file)
        # handler_cancellation: a long poll whose client went away must not linger until timeout.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        self._runner = runner
        self._closing = False
        self._url = f"http://{host}:{port}"

    async def stop(self) -> None:
        """Release pending long polls (they answer an empty list) and close the server."""
        if self._runner is None:
            return
        self._closing = True
        self._updates_pulse.fire()
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
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` once started."""
        if self._url is None:
            raise RuntimeError("TelegramStandIn.start() has not been awaited")
        return self._url

    @property
    def base_url(self) -> str:
        """The value for PTB's ``base_url`` (PTB appends the token)."""
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        """The value for PTB's ``base_file_url`` (PTB appends the token)."""
        return f"{self.url}/file/bot"

    # --- inspection -----------------------------------------------------------------------------

    def sent_to(self, chat_id: int) -> list[SentMessage]:
        """Messages successfully sent to one chat, in order."""
        return [message for message in self.sent if message.chat_id == chat_id]

    def calls_of(self, method: str) -> list[ApiCall]:
        """Every call of one method (name matched case-insensitively), failed ones included."""
        wanted = method.lower()
        return [call for call in self.calls if call.method.lower() == wanted]

    @property
    def confirmed_offset(self) -> int:
        """The highest getUpdates offset seen: updates below it are gone for good."""
        return self._confirmed_offset

    @property
    def pending_updates(self) -> list[JSONDict]:
        """Queued updates not yet confirmed (returned again by the next getUpdates)."""
        return list(self._queue)

    @property
    def blocked_chats(self) -> frozenset[int]:
        return frozenset(self._blocked)

    def commands_for(
        self, scope: JSONDict | None = None, language_code: str = ""
    ) -> list[JSONDict]:
        """The command list set with setMyCommands for a scope and language ("" = default)."""
        return list(self.my_commands.get(self._commands_key(scope, language_code), []))

    def clear(self) -> None:
        """Forget the recordings (sent, calls, edits, callback_answers, too_many_requests).

        Server state (queued updates, known messages, webhook, commands, injected failures)
        is kept, as it would be on the real server between two test steps.
        """
        self.sent.clear()
        self.calls.clear()
        self.edits.clear()
        self.callback_answers.clear()
        self.too_many_requests = 0

    async def wait_for_messages(
        self,
        chat_id: int,
        count: int,
        timeout: float = 5.0,
    ) -> list[SentMessage]:
        """Wait until at least ``count`` messages to ``chat_id`` are recorded; return them all.

        The bot answers from its own tasks, so tests must wait rather than assert immediately.
        On timeout, raises AssertionError listing what the chat did receive and which calls to
        it failed, which is usually the whole diagnosis.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            messages = self.sent_to(chat_id)
            if len(messages) >= count:
                return messages
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                received = [m.text if m.text is not None else f"<{m.method}>" for m in messages]
                failed = [
                    f"{call.method} -> {call.status} {call.description}"
                    for call in self.calls
                    if call.params.get("chat_id") == chat_id and call.status not in (None, 200)
                ]
                raise AssertionError(
                    f"expected at least {count} message(s) to chat {chat_id} within {timeout}s, "
                    f"got {len(messages)}: {received!r}; failed calls to that chat: {failed!r}"
                )
            await self._activity_pulse.wait(remaining)

    async def wait_for_calls(
        self,
        method: str,
        count: int = 1,
        timeout: float = 5.0,
    ) -> list[ApiCall]:
        """Wait until at least ``count`` answered calls of ``method`` exist; return them all."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            calls = [call for call in self.calls_of(method) if call.status is not None]
            if len(calls) >= count:
                return calls
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                seen = sorted({call.method for call in self.calls})
                raise AssertionError(
                    f"expected at least {count} answered {method} call(s) within {timeout}s, "
                    f"got {len(calls)}; methods called: {seen!r}"
                )
            await self._activity_pulse.wait(remaining)

    # --- failure injection ----------------------------------------------------------------------

    def block(self, chat_id: int) -> None:
        """The user blocked the bot: sends to the chat answer 403 like Telegram."""
        self._blocked.add(chat_id)

    def unblock(self, chat_id: int) -> None:
        self._blocked.discard(chat_id)

    def rate_limit(self, per_second: float | None, *, retry_after: int = 1) -> None:
        """Allow at most ``per_second`` sends/edits overall; beyond it answer 429.

        A token bucket (burst = max(1, per_second)) starting full; ``None`` lifts the limit.
        """
        if per_second is not None and per_second <= 0:
            raise ValueError("per_second must be positive (or None to lift the limit)")
        self._rate = per_second
        self._retry_after = retry_after
        self._tokens = max(1.0, per_second or 0.0)
        self._tokens_at = time.monotonic()

    def stall(self) -> None:
        """Hold every message-creating call unanswered (a platform stuck behind its proxy)
        until `unstall`, which answers the held calls 502 and serves later ones again."""
        if self._stall is None:
            self._stall = asyncio.Event()

    def unstall(self) -> None:
        if self._stall is not None:
            self._stall.set()
            self._stall = None

    def fail_next(self, n: int = 1, status: int = 502) -> None:
        """Make the next ``n`` message-sending calls answer a server error (5xx)."""
        if not 500 <= status <= 599:
            raise ValueError("fail_next injects server errors: status must be 5xx")
        self._fail_next.extend([status] * n)

    # --- feeding updates ------------------------------------------------------------------------

    def push_update(self, update: JSONDict) -> int:
        """Queue an update for getUpdates and return its update_id.

        An update without ``update_id`` gets the next one (the dict is updated in place); one
        with an id keeps it, so tests can push duplicates.  Note that, as on the real server, an
        update whose id is below the confirmed offset is dropped by the next getUpdates.
        """
        if "update_id" not in update:
            update["update_id"] = self._take_update_id(None)
        else:
            self._take_update_id(int(update["update_id"]))
        self._observe(update)
        self.queued_at.setdefault(int(update["update_id"]), time.monotonic())
        self._queue.append(update)
        self._queue.sort(key=lambda queued: int(queued["update_id"]))  # stable for duplicates
        self._updates_pulse.fire()
        return int(update["update_id"])

    def queue_burst(self, updates: list[JSONDict]) -> None:
        """Queue many updates (built with ``queue=False``) at one instant, as a burst arrives."""
        now = time.monotonic()
        for update in updates:
            self.queued_at.setdefault(int(update["update_id"]), now)
        self._queue.extend(updates)
        self._queue.sort(key=lambda queued: int(queued["update_id"]))
        self._updates_pulse.fire()

    async def stream(self, updates: list[JSONDict], per_second: float) -> None:
        """Queue updates one by one at a steady rate (on an absolute schedule, so it does not
        drift when the event loop is busy)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index, update in enumerate(updates):
            delay = start + index / per_second - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.push_update(update)

    async def post_updates(
        self,
        urls: list[str],
        updates: list[JSONDict],
        *,
        secret_token: str | None = None,
        concurrency: int = 40,
        per_second: float | None = None,
    ) -> None:
        """Deliver updates to webhooks as Telegram does (up to ``concurrency`` connections,
        retrying an update until it is answered 200), spreading them round-robin over ``urls``
        like a load balancer in front of several processes. ``per_second`` streams them;
        without it they are all queued at once."""
        for url in urls:
            host = urlsplit(url).hostname
            if host not in ("127.0.0.1", "localhost", "::1"):
                raise ValueError(f"the stand-in only talks to loopback, not {host!r}")
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret_token} if secret_token else {}
        loop = asyncio.get_running_loop()
        start = loop.time()
        for update in updates:
            self._observe(update)
            if per_second is None:
                self.queued_at.setdefault(int(update["update_id"]), time.monotonic())
        gate = asyncio.Semaphore(concurrency)

        async def deliver(index: int, update: JSONDict) -> None:
            if per_second is not None:
                await asyncio.sleep(max(0.0, start + index / per_second - loop.time()))
                self.queued_at.setdefault(int(update["update_id"]), time.monotonic())
            url = urls[index % len(urls)]
            async with gate:
                for attempt in range(50):
                    try:
                        async with session.post(url, json=update, headers=headers) as response:
                            await response.read()
                            if response.status == HTTPStatus.OK:
                                return
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
                raise RuntimeError(f"webhook never accepted update {update['update_id']}")

        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(deliver(i, u) for i, u in enumerate(updates)))

    def text_update(
        self,
        chat_id: int,
        text: str,
        *,
        first_name: str = "Nino",
        language_code: str = "ka",
        update_id: int | None = None,
        queue: bool = True,
    ) -> JSONDict:
        """A user's text message."""
        message = self._user_message(chat_id, {"text": text}, first_name, language_code)
        return self._update("message", message, update_id, queue)

    def command_update(
        self,
        chat_id: int,
        command: str,
        payload: str | None = None,
        *,
        first_name: str = "Nino",
        language_code: str = "ka",
        update_id: int | None = None,
        queue: bool = True,
    ) -> JSONDict:
        """A command such as ``/start`` (optionally ``/start payload``, as from a deep link)."""
        command = command if command.startswith("/") else f"/{command}"
        text = command if payload is None else f"{command} {payload}"
        entity = {"offset": 0, "length": _utf16_len(command), "type": "bot_command"}
        content = {"text": text, "entities": [entity]}
        message = self._user_message(chat_id, content, first_name, language_code)
        return self._update("message", message, update_id, queue)

    def callback_update(
        self,
        chat_id: int,
        data: str,
        message_id: int | None = None,
        message_text: str | None = None,
        *,
        first_name: str = "Nino",
        language_code: str = "ka",
        update_id: int | None = None,
        queue: bool = True,
    ) -> JSONDict:
        """The user pressed an inline button with ``data`` under one of the bot's messages.

        ``message_id`` defaults to the bot's latest message in the chat.  A message the stand-in
        doesn't know yet is registered as the bot's (text ``message_text``) so it can be edited.
        """
        if message_id is None:
            mine = [key[1] for key, s in self._messages.items() if key[0] == chat_id and s.from_bot]
            if not mine:
                raise ValueError(f"the bot has sent no message to chat {chat_id} to press under")
            message_id = max(mine)
        stored = self._messages.get((chat_id, message_id))
        if stored is None:
            message: JSONDict = {
                "message_id": message_id,
                "from": dict(self.bot_user),
                "chat": self._chat(chat_id),
                "date": int(time.time()),
                "text": message_text if message_text is not None else "…",
            }
            self._remember(message, from_bot=True)
        else:
            message = copy.deepcopy(stored.message)
            if message_text is not None:
                message["text"] = message_text
        self._callback_counter += 1
        query: JSONDict = {
            "id": str(4_382_000_000_000_000 + self._callback_counter),
            "from": self._user(chat_id, first_name, language_code),
            "message": message,
            "chat_instance": str(-4_000_000_000_000_000_000 - abs(chat_id)),
            "data": data,
        }
        return self._update("callback_query", query, update_id, queue)

    def photo_update(
        self,
        chat_id: int,
        file_id: str | None = None,
        caption: str | None = None,
        *,
        content: bytes | None = None,
        first_name: str = "Nino",
        language_code: str = "ka",
        update_id: int | None = None,
        queue: bool = True,
    ) -> JSONDict:
        """A photo: three PhotoSize, largest last carrying ``file_id`` (``content`` = its bytes,
        served by getFile and the file download URL).
        """
        file_id = file_id or self._new_file_id("photo")
        sizes: JSONDict = {"photo": self._photo_sizes(file_id, content)}
        if caption is not None:
            sizes["caption"] = caption
        message = self._user_message(chat_id, sizes, first_name, language_code)
        return self._update("message", message, update_id, queue)

    def voice_update(
        self,
        chat_id: int,
        file_id: str | None = None,
        duration: int = 3,
        *,
        content: bytes | None = None,
        first_name: str = "Nino",
        language_code: str = "ka",
        update_id: int | None = None,
        queue: bool = True,
    ) -> JSONDict:
        """A voice note (OGG/Opus, as Telegram clients record them)."""
        file_id = file_id or self._new_file_id("voice")
        stored = self._ensure_file(file_id, content, "voice", "oga")
        voice = {
            "duration": duration,
            "mime_type": "audio/ogg",
            "file_id": file_id,
            "file_unique_id": _unique_id(file_id),
            "file_size": len(stored.content),
        }
        message = self._user_message(chat_id, {"voice": voice}, first_name, language_code)
        return self._update("message", message, update_id, queue)

    def sticker_update(
        self,
        chat_id: int,
        *,
        emoji: str = "👍",
        set_name: str = "KhmaTestStickers",
        file_id: str | None = None,
        first_name: str = "Nino",
        language_code: str = "ka",
        update_id: int | None = None,
        queue: bool = True,
    ) -> JSONDict:
        """A regular (static) sticker from a set."""
        file_id = file_id or self._new_file_id("sticker")
        stored = self._ensure_file(file_id, None, "stickers", "webp")
        thumb_id = f"{file_id}-thumb"
        thumb = self._ensure_file(thumb_id, None, "thumbnails", "jpg")
        sticker = {
            "width": 512,
            "height": 512,
            "emoji": emoji,
            "set_name": set_name,
            "is_animated": False,
            "is_video": False,
            "type": "regular",
            "thumbnail": {
                "file_id": thumb_id,
                "file_unique_id": _unique_id(thumb_id),
                "file_size": len(thumb.content),
                "width": 128,
                "height": 128,
            },
            "file_id": file_id,
            "file_unique_id": _unique_id(file_id),
            "file_size": len(stored.content),
        }
        message = self._user_message(chat_id, {"sticker": sticker}, first_name, language_code)
        return self._update("message", message, update_id, queue)

    def document_update(
        self,
        chat_id: int,
        file_id: str | None = None,
        file_name: str = "report.pdf",
        mime_type: str = "application/pdf",
        *,
        caption: str | None = None,
        content: bytes | None = None,
        first_name: str = "Nino",
        language_code: str = "ka",
        update_id: int | None = None,
        queue: bool = True,
    ) -> JSONDict:
        """A file sent as a document."""
        file_id = file_id or self._new_file_id("document")
        stored = self._ensure_file(file_id, content, "documents", file_name.rsplit(".", 1)[-1])
        fields: JSONDict = {
            "document": {
                "file_name": file_name,
                "mime_type": mime_type,
                "file_id": file_id,
                "file_unique_id": _unique_id(file_id),
                "file_size": len(stored.content),
            }
        }
        if caption is not None:
            fields["caption"] = caption
        message = self._user_message(chat_id, fields, first_name, language_code)
        return self._update("message", message, update_id, queue)

    def location_update(
        self,
        chat_id: int,
        latitude: float,
        longitude: float,
        *,
        first_name: str = "Nino",
        language_code: str = "ka",
        update_id: int | None = None,
        queue: bool = True,
    ) -> JSONDict:
        """A shared (static) location."""
        location = {"latitude": latitude, "longitude": longitude}
        message = self._user_message(chat_id, {"location": location}, first_name, language_code)
        return self._update("message", message, update_id, queue)

    def add_file(self, file_id: str, content: bytes, *, file_path: str | None = None) -> None:
        """Make ``file_id`` downloadable (getFile + the file URL) with the given bytes."""
        self._file_counter += 1
        path = file_path or f"documents/file_{self._file_counter}"
        self._files[file_id] = _StoredFile(file_path=path, content=content)

    async def post_webhook_update(
        self, url: str, update: JSONDict, *, secret_token: str | None = None
    ) -> int:
        """POST an update to the bot's webhook the way Telegram does; return the HTTP status.

        ``secret_token`` defaults to the one set with setWebhook; pass ``""`` to omit the
        X-Telegram-Bot-Api-Secret-Token header.  Only loopback URLs are allowed.
        """
        host = urlsplit(url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the stand-in only talks to loopback, not {host!r}")
        if secret_token is None and self.webhook is not None:
            secret_token = self.webhook.secret_token
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret_token} if secret_token else {}
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json=update, headers=headers) as response,
        ):
            await response.read()
            return response.status

    # --- HTTP -----------------------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.Response:
        requested = request.match_info["method"]
        method = self._by_lower.get(requested.lower())
        call = ApiCall(method=method or requested, params={})
        self.calls.append(call)
        try:
            call.params = await _read_params(request)
            if request.match_info["token"] != self.token:
                raise _ApiError(401, "Unauthorized")
            if method is None:
                raise _ApiError(404, "Not Found: method not found")
            self._inject_failures(method, call.params)
            if self._stall is not None and _creates_message(method):
                stall = self._stall
                self.stalled += 1
                self._activity_pulse.fire()
                await stall.wait()
                raise _ApiError(502, "Bad Gateway")
            outcome = await self._handlers[method](call.params)
        except _ApiError as error:
            call.status, call.description = error.status, error.description
            self._activity_pulse.fire()
            return error.response()
        body: JSONDict = {"ok": True}
        if isinstance(outcome, _Described):
            body["result"], body["description"] = outcome.result, outcome.description
            call.description = outcome.description
        else:
            body["result"] = outcome
        call.status = HTTPStatus.OK
        self._activity_pulse.fire()
        return web.json_response(body)

    async def _handle_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _ApiError(401, "Unauthorized").response()
        wanted = request.match_info["file_path"]
        for stored in self._files.values():
            if stored.file_path == wanted:
                return web.Response(body=stored.content, content_type="application/octet-stream")
        return _ApiError(404, "Not Found").response()

    def _inject_failures(self, method: str, params: JSONDict) -> None:
        """Server error, then flood control, then blocked user: the order a request meets them."""
        creates = _creates_message(method)
        if creates and self._fail_next:
            status = self._fail_next.pop(0)
            raise _ApiError(status, HTTPStatus(status).phrase)
        if (creates or method.startswith("edit")) and not self._take_rate_token():
            self.too_many_requests += 1
            raise _ApiError(
                429,
                f"Too Many Requests: retry after {self._retry_after}",
                {"retry_after": self._retry_after},
            )
        if (creates or method == "sendChatAction") and params.get("chat_id") in self._blocked:
            raise _ApiError(403, "Forbidden: bot was blocked by the user")

    def _take_rate_token(self) -> bool:
        if self._rate is None:
            return True
        now = time.monotonic()
        capacity = max(1.0, self._rate)
        self._tokens = min(capacity, self._tokens + (now - self._tokens_at) * self._rate)
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    # --- methods: bot & updates -----------------------------------------------------------------

    async def _get_me(self, params: JSONDict) -> JSONDict:
        return dict(self.bot_user)

    async def _get_updates(self, params: JSONDict) -> list[JSONDict]:
        """Long polling with Telegram's confirmation rule (offset > update_id confirms)."""
        if self.webhook is not None:
            raise _ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use "
                "deleteWebhook to delete the webhook first",
            )
        offset = _int(params, "offset", 0)
        limit = min(max(_int(params, "limit", 100), 1), 100)
        timeout = max(_int(params, "timeout", 0), 0)
        if isinstance(params.get("allowed_updates"), list):
            self._allowed_updates = [str(kind) for kind in params["allowed_updates"]]
        self._confirm(offset)

        # A newer getUpdates terminates an older one still waiting, as on the real server.
        self._poll_generation += 1
        self._poll_terminated_by = "other getUpdates request"
        generation = self._poll_generation
        self._updates_pulse.fire()

        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if generation != self._poll_generation:
                raise _ApiError(
                    409,
                    f"Conflict: terminated by {self._poll_terminated_by}; make sure that only "
                    "one bot instance is running",
                )
            batch = [update for update in self._queue if self._is_allowed(update)][:limit]
            remaining = deadline - asyncio.get_running_loop().time()
            if batch or self._closing or remaining <= 0:
                return copy.deepcopy(batch)
            await self._updates_pulse.wait(remaining)

    def _confirm(self, offset: int) -> None:
        if offset > 0:
            self._queue = [update for update in self._queue if update["update_id"] >= offset]
            self._confirmed_offset = max(self._confirmed_offset, offset)
        elif offset < 0:
            # "retrieve updates starting from -offset update from the end of the updates
            # queue. All previous updates will be forgotten."
            self._queue = self._queue[offset:]
            if self._queue:
                first = int(self._queue[0]["update_id"])
                self._confirmed_offset = max(self._confirmed_offset, first)

    def _is_allowed(self, update: JSONDict) -> bool:
        kind = _update_type(update)
        if self._allowed_updates:
            return kind in self._allowed_updates
        return kind not in _OPT_IN_UPDATE_TYPES

    # --- methods: sending -----------------------------------------------------------------------

    async def _send_message(self, params: JSONDict) -> JSONDict:
        chat_id = self._chat_id(params)
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _ApiError(400, "Bad Request: message text is empty")
        visible = self._checked_text(text, params.get("parse_mode"), _MESSAGE_TEXT_LIMIT)
        self._check_reply_markup(params.get("reply_markup"))
        return self._deliver("sendMessage", chat_id, params, {"text": visible}, text=text)

    async def _send_photo(self, params: JSONDict) -> JSONDict:
        chat_id = self._chat_id(params)
        file_id, upload = self._media(params, "photo", "photos", "jpg")
        content: JSONDict = {"photo": self._photo_sizes(file_id, None)}
        return self._deliver_media("sendPhoto", chat_id, params, content, upload, photo=file_id)

    async def _send_voice(self, params: JSONDict) -> JSONDict:
        chat_id = self._chat_id(params)
        file_id, upload = self._media(params, "voice", "voice", "oga")
        voice = {
            "duration": _int(params, "duration", 1),
            "mime_type": "audio/ogg",
            "file_id": file_id,
            "file_unique_id": _unique_id(file_id),
            "file_size": len(self._files[file_id].content),
        }
        return self._deliver_media(
            "sendVoice", chat_id, params, {"voice": voice}, upload, voice=file_id
        )

    async def _send_document(self, params: JSONDict) -> JSONDict:
        chat_id = self._chat_id(params)
        file_id, upload = self._media(params, "document", "documents", "bin")
        document: JSONDict = {
            "file_name": (upload.filename if upload else None) or "document",
            "mime_type": upload.content_type if upload else "application/octet-stream",
            "file_id": file_id,
            "file_unique_id": _unique_id(file_id),
            "file_size": len(self._files[file_id].content),
        }
        return self._deliver_media(
            "sendDocument", chat_id, params, {"document": document}, upload, document=file_id
        )

    async def _send_chat_action(self, params: JSONDict) -> bool:
        self._chat_id(params)
        if params.get("action") not in _CHAT_ACTIONS:
            raise _ApiError(400, "Bad Request: wrong parameter action in request")
        return True

    def _deliver_media(
        self,
        method: str,
        chat_id: int,
        params: JSONDict,
        content: JSONDict,
        upload: UploadedFile | None,
        **record: str | None,
    ) -> JSONDict:
        caption = params.get("caption")
        if caption is not None:
            caption = str(caption)
            content["caption"] = self._checked_text(
                caption, params.get("parse_mode"), _CAPTION_LIMIT, caption=True
            )
        self._check_reply_markup(params.get("reply_markup"))
        files = {upload.field_name: upload} if upload else {}
        return self._deliver(
            method, chat_id, params, content, caption=caption, files=files, **record
        )

    def _deliver(
        self,
        method: str,
        chat_id: int,
        params: JSONDict,
        content: JSONDict,
        *,
        files: dict[str, UploadedFile] | None = None,
        **record: Any,
    ) -> JSONDict:
        """Create the bot's message in the chat, remember it, record it, return the Message."""
        message_id = self._next_message_id(chat_id)
        message: JSONDict = {
            "message_id": message_id,
            "from": dict(self.bot_user),
            "chat": self._chat(chat_id),
            "date": int(time.time()),
            **content,
        }
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            message["reply_markup"] = markup  # Message.reply_markup only carries inline keyboards
        self._remember(message, from_bot=True)
        self.sent.append(
            SentMessage(
                method=method,
                chat_id=chat_id,
                message_id=message_id,
                reply_markup=markup if isinstance(markup, dict) else None,
                params=params,
                files=files or {},
                result=copy.deepcopy(message),
                **record,
            )
        )
        return message

    # --- methods: callbacks & edits -------------------------------------------------------------

    async def _answer_callback_query(self, params: JSONDict) -> bool:
        query_id = _optional_str(params, "callback_query_id")
        if not query_id:
            raise _ApiError(400, "Bad Request: query_id is empty")
        if self.strict and query_id not in self._open_callback_queries:
            raise _ApiError(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        self._open_callback_queries.discard(query_id)
        cache_time = params.get("cache_time")
        self.callback_answers.append(
            CallbackAnswer(
                callback_query_id=query_id,
                text=_optional_str(params, "text"),
                show_alert=bool(params.get("show_alert", False)),
                url=_optional_str(params, "url"),
                cache_time=cache_time if isinstance(cache_time, int) else None,
                params=params,
            )
        )
        return True

    async def _edit_message_text(self, params: JSONDict) -> JSONDict | bool:
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _ApiError(400, "Bad Request: message text is empty")
        visible = self._checked_text(text, params.get("parse_mode"), _MESSAGE_TEXT_LIMIT)
        return self._edit("editMessageText", params, "text", visible, text)

    async def _edit_message_caption(self, params: JSONDict) -> JSONDict | bool:
        caption = str(params.get("caption") or "")
        visible = self._checked_text(caption, params.get("parse_mode"), _CAPTION_LIMIT, True)
        return self._edit("editMessageCaption", params, "caption", visible, caption)

    async def _edit_message_reply_markup(self, params: JSONDict) -> JSONDict | bool:
        return self._edit("editMessageReplyMarkup", params, None, None, None)

    def _edit(
        self,
        method: str,
        params: JSONDict,
        key: str | None,
        visible: str | None,
        raw: str | None,
    ) -> JSONDict | bool:
        """Shared edit logic: find the message, refuse no-op edits, update, record."""
        markup = params.get("reply_markup")
        self._check_reply_markup(markup)
        if markup is not None and not (isinstance(markup, dict) and "inline_keyboard" in markup):
            raise _ApiError(400, "Bad Request: inline keyboard expected")
        text = raw if key == "text" else None
        caption = raw if key == "caption" else None
        recorded_markup = markup if isinstance(markup, dict) else None
        inline_id = _optional_str(params, "inline_message_id")
        if inline_id:
            self.edits.append(
                EditedMessage(
                    method=method,
                    chat_id=None,
                    message_id=None,
                    inline_message_id=inline_id,
                    text=text,
                    caption=caption,
                    reply_markup=recorded_markup,
                    params=params,
                )
            )
            return True
        chat_id = self._chat_id(params)
        message_id = params.get("message_id")
        if not isinstance(message_id, int):
            raise _ApiError(400, "Bad Request: message identifier is not specified")
        stored = self._messages.get((chat_id, message_id))
        if stored is None:
            if self.strict:
                raise _ApiError(400, "Bad Request: message to edit not found")
            stored = self._remember(
                {
                    "message_id": message_id,
                    "from": dict(self.bot_user),
                    "chat": self._chat(chat_id),
                    "date": int(time.time()),
                    "text": "",
                },
                from_bot=True,
            )
        if not stored.from_bot:
            raise _ApiError(400, "Bad Request: message can't be edited")
        message = stored.message
        if key == "text" and "text" not in message:
            raise _ApiError(400, "Bad Request: there is no text in the message to edit")
        if key == "caption" and "text" in message:
            raise _ApiError(400, "Bad Request: there is no caption in the message to edit")
        same_content = key is None or message.get(key, "") == visible
        if same_content and message.get("reply_markup") == markup:
            raise _ApiError(400, _NOT_MODIFIED)
        if key is not None:
            message[key] = visible
        if markup is None:
            message.pop("reply_markup", None)
        else:
            message["reply_markup"] = markup
        message["edit_date"] = int(time.time())
        self.edits.append(
            EditedMessage(
                method=method,
                chat_id=chat_id,
                message_id=message_id,
                text=text,
                caption=caption,
                reply_markup=recorded_markup,
                params=params,
            )
        )
        return copy.deepcopy(message)

    async def _delete_message(self, params: JSONDict) -> bool:
        chat_id = self._chat_id(params)
        message_id = params.get("message_id")
        if not isinstance(message_id, int):
            raise _ApiError(400, "Bad Request: message identifier is not specified")
        if self._messages.pop((chat_id, message_id), None) is None and self.strict:
            raise _ApiError(400, "Bad Request: message to delete not found")
        return True

    async def _get_file(self, params: JSONDict) -> JSONDict:
        file_id = _optional_str(params, "file_id")
        if not file_id:
            raise _ApiError(400, "Bad Request: file_id is empty")
        stored = self._files.get(file_id)
        if stored is None:
            if self.strict:
                raise _ApiError(400, "Bad Request: invalid file_id")
            stored = self._ensure_file(file_id, None, "documents", "bin")
        return {
            "file_id": file_id,
            "file_unique_id": _unique_id(file_id),
            "file_size": len(stored.content),
            "file_path": stored.file_path,
        }

    # --- methods: webhook & commands ------------------------------------------------------------

    async def _set_webhook(self, params: JSONDict) -> _Described:
        url = str(params.get("url") or "")
        if not url:
            return await self._delete_webhook(params)
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise _ApiError(
                400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
            )
        try:
            port = parts.port
        except ValueError:
            port = -1
        if port is not None and port not in _WEBHOOK_PORTS:
            raise _ApiError(
                400,
                "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443",
            )
        secret = _optional_str(params, "secret_token")
        if secret is not None and not _SECRET_TOKEN_RE.fullmatch(secret):
            raise _ApiError(400, "Bad Request: secret token contains unallowed characters")
        max_connections = _int(params, "max_connections", 40)
        if not 1 <= max_connections <= 100:
            raise _ApiError(400, "Bad Request: invalid max_connections specified")
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = [str(kind) for kind in allowed]
        config = WebhookConfig(
            url=url,
            secret_token=secret,
            allowed_updates=list(self._allowed_updates) or None,
            max_connections=max_connections,
            ip_address=_optional_str(params, "ip_address"),
            drop_pending_updates=bool(params.get("drop_pending_updates", False)),
            params=params,
        )
        already = config == self.webhook
        if config.drop_pending_updates:
            self._queue.clear()
        self.webhook = config
        self._poll_generation += 1  # a waiting long poll is cut off, as on the real server
        self._poll_terminated_by = "setWebhook request"
        self._updates_pulse.fire()
        return _Described(True, "Webhook is already set" if already else "Webhook was set")

    async def _delete_webhook(self, params: JSONDict) -> _Described:
        if params.get("drop_pending_updates"):
            self._queue.clear()
        had_webhook, self.webhook = self.webhook is not None, None
        return _Described(
            True, "Webhook was deleted" if had_webhook else "Webhook is already deleted"
        )

    async def _get_webhook_info(self, params: JSONDict) -> JSONDict:
        info: JSONDict = {
            "url": self.webhook.url if self.webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._queue),
        }
        if self.webhook is not None:
            info["max_connections"] = self.webhook.max_connections
            if self.webhook.ip_address:
                info["ip_address"] = self.webhook.ip_address
            if self.webhook.allowed_updates:
                info["allowed_updates"] = list(self.webhook.allowed_updates)
        return info

    async def _set_my_commands(self, params: JSONDict) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise _ApiError(400, "Bad Request: can't parse commands JSON object")
        for command in commands:
            if not isinstance(command, dict) or not _COMMAND_RE.fullmatch(
                str(command.get("command", ""))
            ):
                raise _ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not str(command.get("description", "")).strip():
                raise _ApiError(400, "Bad Request: command description is empty")
        key = self._commands_key(params.get("scope"), params.get("language_code"))
        self.my_commands[key] = [dict(command) for command in commands]
        return True

    async def _delete_my_commands(self, params: JSONDict) -> bool:
        self.my_commands.pop(
            self._commands_key(params.get("scope"), params.get("language_code")), None
        )
        return True

    async def _get_my_commands(self, params: JSONDict) -> list[JSONDict]:
        return self.commands_for(params.get("scope"), str(params.get("language_code") or ""))

    @staticmethod
    def _commands_key(scope: Any, language_code: Any) -> tuple[str, str]:
        if scope is None:
            scope = {"type": "default"}
        if not isinstance(scope, dict):
            raise _ApiError(400, "Bad Request: can't parse scope JSON object")
        return json.dumps(scope, sort_keys=True), str(language_code or "")

    # --- helpers --------------------------------------------------------------------------------

    def _chat_id(self, params: JSONDict) -> int:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise _ApiError(400, "Bad Request: chat_id is empty")
        if isinstance(chat_id, bool) or not isinstance(chat_id, int):
            raise _ApiError(400, "Bad Request: chat not found")
        return chat_id

    @staticmethod
    def _checked_text(text: str, parse_mode: Any, limit: int, caption: bool = False) -> str:
        """Validate markup and length the way Telegram does; return the visible text."""
        mode = str(parse_mode) if parse_mode else None
        if mode and mode.upper() == "HTML":
            _check_html(text)
        visible = _visible_text(text, mode)
        if _utf16_len(visible) > limit:
            what = "message caption" if caption else "message"
            raise _ApiError(400, f"Bad Request: {what} is too long")
        return visible

    @staticmethod
    def _check_reply_markup(markup: Any) -> None:
        if markup is None:
            return
        if not isinstance(markup, dict):
            raise _ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
        rows = markup.get("inline_keyboard")
        if rows is None:
            return
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise _ApiError(400, "Bad Request: can't parse inline keyboard markup JSON object")
        for button in (button for row in rows for button in row):
            if not isinstance(button, dict) or not button.get("text"):
                raise _ApiError(
                    400, "Bad Request: can't parse inline keyboard button: Text is empty"
                )
            if len(button) == 1:
                raise _ApiError(
                    400,
                    "Bad Request: can't parse inline keyboard button: Text buttons are "
                    "unallowed in the inline keyboard",
                )
            if "callback_data" in button:
                size = len(str(button["callback_data"]).encode())
                if not 1 <= size <= _CALLBACK_DATA_LIMIT:
                    raise _ApiError(400, "Bad Request: BUTTON_DATA_INVALID")

    def _media(
        self, params: JSONDict, name: str, folder: str, extension: str
    ) -> tuple[str, UploadedFile | None]:
        """Resolve a media parameter: upload (multipart/attach://), file_id or HTTP URL."""
        value = params.get(name)
        if isinstance(value, str) and value.startswith("attach://"):
            value = params.get(value.removeprefix("attach://"))
        if isinstance(value, UploadedFile):
            file_id = self._new_file_id(name)
            self._ensure_file(file_id, value.data, folder, extension)
            return file_id, value
        if isinstance(value, str) and value.strip():
            if value.startswith(("http://", "https://")):
                file_id = self._new_file_id(name)
            else:
                file_id = value
            self._ensure_file(file_id, None, folder, extension)
            return file_id, None
        raise _ApiError(400, f"Bad Request: there is no {name} in the request")

    def _photo_sizes(self, file_id: str, content: bytes | None) -> list[JSONDict]:
        sizes = []
        for suffix, width, height in (("-s", 90, 67), ("-m", 320, 240), ("", 1280, 960)):
            size_id = f"{file_id}{suffix}"
            stored = self._ensure_file(size_id, content if not suffix else None, "photos", "jpg")
            sizes.append(
                {
                    "file_id": size_id,
                    "file_unique_id": _unique_id(size_id),
                    "file_size": len(stored.content),
                    "width": width,
                    "height": height,
                }
            )
        return sizes

    def _new_file_id(self, kind: str) -> str:
        self._file_counter += 1
        return f"stand-in-{kind}-{self._file_counter}"

    def _ensure_file(
        self, file_id: str, content: bytes | None, folder: str, extension: str
    ) -> _StoredFile:
        """Register a file (placeholder bytes unless given) so getFile/download work for it."""
        stored = self._files.get(file_id)
        if stored is None or content is not None:
            self._file_counter += 1
            data = content if content is not None else f"stand-in bytes of {file_id}\n".encode()
            path = f"{folder}/file_{self._file_counter}.{extension}"
            stored = _StoredFile(file_path=path, content=data)
            self._files[file_id] = stored
        return stored

    def _take_update_id(self, update_id: int | None) -> int:
        if update_id is None:
            update_id = self._next_update_id
        self._next_update_id = max(self._next_update_id, update_id + 1)
        return update_id

    def _update(self, kind: str, payload: JSONDict, update_id: int | None, queue: bool) -> JSONDict:
        update: JSONDict = {"update_id": self._take_update_id(update_id), kind: payload}
        self._observe(update)
        if queue:
            self.push_update(update)
        return update

    def _observe(self, update: JSONDict) -> None:
        """Learn from an update what the real server would know: open callback queries and the
        messages they refer to (so answering and editing them behaves realistically).
        """
        query = update.get("callback_query")
        if isinstance(query, dict):
            if "id" in query:
                self._open_callback_queries.add(str(query["id"]))
            message = query.get("message")
            if isinstance(message, dict) and "message_id" in message and "chat" in message:
                key = (int(message["chat"]["id"]), int(message["message_id"]))
                if key not in self._messages:
                    self._remember(copy.deepcopy(message), from_bot=True)
        message = update.get("message")
        if isinstance(message, dict) and "message_id" in message and "chat" in message:
            key = (int(message["chat"]["id"]), int(message["message_id"]))
            if key not in self._messages:
                self._remember(message, from_bot=False)

    def _remember(self, message: JSONDict, *, from_bot: bool) -> _StoredMessage:
        chat_id, message_id = int(message["chat"]["id"]), int(message["message_id"])
        stored = _StoredMessage(message=message, from_bot=from_bot)
        self._messages[(chat_id, message_id)] = stored
        self._last_message_id[chat_id] = max(self._last_message_id.get(chat_id, 0), message_id)
        return stored

    def _next_message_id(self, chat_id: int) -> int:
        """Message ids increase per chat; in a private chat both sides share the sequence."""
        return self._last_message_id.get(chat_id, 0) + 1

    def _chat(self, chat_id: int) -> JSONDict:
        if chat_id > 0:
            name = self._chat_names.get(chat_id, "Nino")
            return {"id": chat_id, "first_name": name, "type": "private"}
        if chat_id <= -1_000_000_000_000:
            return {"id": chat_id, "title": "Khma test supergroup", "type": "supergroup"}
        return {"id": chat_id, "title": "Khma test group", "type": "group"}

    @staticmethod
    def _user(chat_id: int, first_name: str, language_code: str) -> JSONDict:
        return {
            "id": chat_id if chat_id > 0 else _GROUP_MEMBER_ID,
            "is_bot": False,
            "first_name": first_name,
            "language_code": language_code,
        }

    def _user_message(
        self, chat_id: int, content: JSONDict, first_name: str, language_code: str
    ) -> JSONDict:
        if chat_id > 0:
            self._chat_names[chat_id] = first_name
        message: JSONDict = {
            "message_id": self._next_message_id(chat_id),
            "from": self._user(chat_id, first_name, language_code),
            "chat": self._chat(chat_id),
            "date": int(time.time()),
            **content,
        }
        self._remember(message, from_bot=False)
        return message
