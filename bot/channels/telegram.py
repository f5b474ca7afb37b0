"""Telegram: python-telegram-bot's Application for the Bot API, our store for durability.

Updates are stored in the inbox before Telegram is told they arrived: in
polling mode the `getUpdates` offset moves past an update only after it is
stored, and in webhook mode we answer 200 only after storing (5xx otherwise,
so Telegram retries). python-telegram-bot's own Updater confirms an update as
soon as it is fetched and keeps it in memory, so we poll with its Bot instead.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from functools import partial
from pathlib import Path

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application, ApplicationBuilder

from bot.channels import shapes
from bot.channels.base import (
    PartSent,
    Rejected,
    RetryLater,
    Transient,
    Unreachable,
    WebhookAnswer,
    send_parts,
)
from bot.config import Settings
from bot.vocabulary.messages import LIMITS, Inbound, Kind, Reply, split_text
from bot.waiting import rest, unless_stopped
from storage.db import is_outage

log = logging.getLogger(__name__)

NAME = "telegram"
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
CALLBACK_DATA_BYTES = 64
ALLOWED_UPDATES = ["message", "callback_query", "my_chat_member"]
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# Until the Bot API has answered getMe, sends wait this long rather than fail.
NOT_CONNECTED_WAIT = 5.0

Accept = Callable[[Inbound], Awaitable[bool]]
AcceptMany = Callable[[list[Inbound]], Awaitable[None]]


def derived_secret(token: str) -> str:
    """The webhook secret when none is configured: unguessable without the bot token, and
    the same in every process behind one webhook address (each registering a random one
    of its own would make Telegram refuse the others' half of the updates)."""
    digest = hmac.new(token.encode(), b"khma telegram webhook secret", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _name(user: object) -> str | None:
    if user is None:
        return None
    return shapes.name(getattr(user, "first_name", None), getattr(user, "last_name", None))


def _language(user: object) -> str | None:
    return shapes.language(getattr(user, "language_code", None)) if user else None


def _private_chat(chat: object) -> str | None:
    """The chat's id as an address if it is a private chat with a resident, else None."""
    if getattr(chat, "type", None) != "private":
        return None
    return shapes.chat_id(getattr(chat, "id", None), "chat.id")


def _file_id(media: object) -> str:
    return shapes.required_text(getattr(media, "file_id", None), LIMITS.media_id, "file_id")


def parse_update(update: Update) -> Inbound | None:
    """One Telegram update as an `Inbound`, or None for what residents did not send.

    Every field is checked and bounded here (`shapes`): python-telegram-bot builds its
    objects without checking types, so a forged update could carry anything. Raises
    `shapes.Malformed` for what is not Telegram's shape.
    """
    try:
        return _parse_update(update)
    except shapes.Malformed:
        raise
    except shapes.MALFORMED_TYPES as error:
        raise shapes.Malformed(f"update: {type(error).__name__}") from None


def _parse_update(update: Update) -> Inbound | None:
    external_id = shapes.unsigned_id(update.update_id, "update_id")
    if update.my_chat_member is not None:
        return _membership(update, external_id)
    if update.callback_query is not None:
        query = update.callback_query
        message = query.message
        address = _private_chat(message.chat) if message is not None else None
        if message is None or address is None:
            return None
        origin = getattr(message, "text", None)
        return Inbound(
            channel=NAME,
            address=address,
            external_id=external_id,
            kind=Kind.BUTTON,
            payload=shapes.text(query.data, LIMITS.payload, "callback_query.data"),
            display_name=_name(query.from_user),
            platform_language=_language(query.from_user),
            origin_message_id=shapes.unsigned_id(message.message_id, "message_id"),
            origin_text=shapes.text(origin, LIMITS.text, "message.text"),
        )
    message = update.message
    if message is None:
        return None
    address = _private_chat(message.chat)
    if address is None:
        return None
    user = message.from_user
    common = {
        "channel": NAME,
        "address": address,
        "external_id": external_id,
        "display_name": _name(user),
        "platform_language": _language(user),
    }
    if message.text is not None:
        text = shapes.text(message.text, LIMITS.text, "text")
        return Inbound(kind=Kind.TEXT, text=text, **common)
    caption = shapes.text(message.caption, LIMITS.text, "caption")
    if message.photo:
        photo = _file_id(message.photo[-1])
        return Inbound(kind=Kind.PHOTO, media_id=photo, text=caption, **common)
    if message.voice or message.audio:
        media = message.voice or message.audio
        return Inbound(kind=Kind.VOICE, media_id=_file_id(media), text=caption, **common)
    if message.video or message.video_note:
        media = message.video or message.video_note
        return Inbound(kind=Kind.VIDEO, media_id=_file_id(media), text=caption, **common)
    if message.sticker:
        return Inbound(kind=Kind.STICKER, **common)
    if message.location:
        loc = message.location
        point = shapes.coordinates(loc.latitude, loc.longitude)
        if point is None:  # no place on Earth: the flow says it cannot use this
            return Inbound(kind=Kind.OTHER, **common)
        return Inbound(kind=Kind.LOCATION, latitude=point[0], longitude=point[1], **common)
    if message.contact:
        return Inbound(kind=Kind.CONTACT, **common)
    if message.document:
        return Inbound(
            kind=Kind.DOCUMENT, media_id=_file_id(message.document), text=caption, **common
        )
    return Inbound(kind=Kind.OTHER, **common)


async def _message_id(call: Callable[[], Awaitable[Message]]) -> str:
    return str((await call()).message_id)


# A private chat's member status for the bot: "kicked" when the resident blocked it.
MEMBERSHIP = {"kicked": Kind.UNSUBSCRIBED, "member": Kind.SUBSCRIBED}


def _membership(update: Update, external_id: str) -> Inbound | None:
    """Blocked or unblocked in a private chat: who can be reached, at once."""
    change = update.my_chat_member
    address = _private_chat(change.chat)
    kind = MEMBERSHIP.get(getattr(change.new_chat_member, "status", None))
    if address is None or kind is None:
        return None
    return Inbound(channel=NAME, address=address, external_id=external_id, kind=kind)


def _keyboard(reply: Reply) -> InlineKeyboardMarkup | None:
    if not reply.buttons:
        return None
    rows = []
    for row in reply.buttons:
        for button in row:
            if len(button.id.encode()) > CALLBACK_DATA_BYTES or not button.id.isascii():
                raise ValueError(f"button id {button.id!r} is not short ASCII")
        rows.append([InlineKeyboardButton(b.label, callback_data=b.id) for b in row])
    return InlineKeyboardMarkup(rows)


class TelegramChannel:
    """Sends through the Application's Bot; receives by polling or by webhook."""

    name = NAME

    def __init__(
        self, settings: Settings, accept: Accept, accept_many: AcceptMany | None = None
    ) -> None:
        if not settings.telegram_token:
            raise ValueError("TELEGRAM_TOKEN is not set")
        self.settings = settings
        self.accept = accept
        self.accept_many = accept_many
        self.application: Application = (
            ApplicationBuilder()
            .token(settings.telegram_token)
            .base_url(settings.telegram_base_url)
            .base_file_url(settings.telegram_base_file_url)
            .updater(None)
            .build()
        )
        self.offset: int | None = None
        self._background: set[asyncio.Task[None]] = set()
        # Webhook calls must carry this secret, registered with setWebhook: no one who
        # merely knows the URL can post updates.
        self.webhook_secret = settings.telegram_webhook_secret or derived_secret(
            settings.telegram_token
        )
        self.connected = False

    @property
    def bot(self):
        return self.application.bot

    async def start(self) -> None:
        """Reach the Bot API (getMe, then setWebhook or deleteWebhook); raises if it cannot.

        Safe to call again after a failure: Khma retries it in the background.
        """
        await self.application.initialize()
        if not self.application.running:
            await self.application.start()
        if self.settings.telegram_webhook_url:
            await self.bot.set_webhook(
                url=self.settings.telegram_webhook_url,
                secret_token=self.webhook_secret,
                allowed_updates=ALLOWED_UPDATES,
            )
            made_up = not self.settings.telegram_webhook_secret
            log.info("telegram webhook set%s", " with a derived secret" if made_up else "")
        else:
            await self.bot.delete_webhook()
        self.connected = True
        log.info("telegram bot @%s ready", self.bot.username)

    async def stop(self) -> None:
        if self.application.running:
            await self.application.stop()
        await self.application.shutdown()

    # --- receiving -----------------------------------------------------------------

    async def store(self, update: Update) -> None:
        """Store one update durably (raises if that failed) and acknowledge a tap.

        An update that is not Telegram's shape is skipped (logged without its content):
        polling must move past it, and a webhook answers 400 before it gets here.
        """
        try:
            inbound = parse_update(update)
        except shapes.Malformed as error:
            log.warning("telegram update %s skipped: %s", update.update_id, error)
            return
        await self._accept(update, inbound)

    async def _accept(self, update: Update, inbound: Inbound | None) -> None:
        if inbound is None:
            return
        await self.accept(inbound)
        self._acknowledge(update)

    async def store_batch(self, updates: Sequence[Update]) -> None:
        """Store a whole `getUpdates` answer in one transaction (raises if that failed)."""
        if self.accept_many is None:
            for update in updates:
                await self.store(update)
            return
        inbounds = [inbound for update in updates if (inbound := parse_update(update))]
        await self.accept_many(inbounds)
        for update in updates:
            self._acknowledge(update)

    def _acknowledge(self, update: Update) -> None:
        """Stop a tap's spinner, in the background, once the tap is stored."""
        if update.callback_query is not None:
            task = asyncio.create_task(self._answer_callback(update.callback_query.id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _answer_callback(self, query_id: str) -> None:
        """Stop the client's spinner; a failure here loses nothing."""
        try:
            await self.bot.answer_callback_query(query_id)
        except TelegramError as error:
            log.debug("answerCallbackQuery failed: %s", error)

    async def poll(self, stop: asyncio.Event) -> None:
        """Long polling where the offset moves past an update only once it is stored."""
        backoff = 1.0
        while not stop.is_set():
            try:
                fetched, updates = await unless_stopped(
                    stop,
                    self.bot.get_updates(
                        offset=self.offset,
                        timeout=self.settings.poll_timeout,
                        allowed_updates=ALLOWED_UPDATES,
                    ),
                )
                if not fetched:
                    return
                if updates:
                    await self.store_batch(updates)
                    self.offset = updates[-1].update_id + 1
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if not is_outage(error):  # an outage is logged once, by the database
                    log.warning(
                        "telegram polling: %s; retrying in %.0f s", type(error).__name__, backoff
                    )
                await rest(stop, timeout=backoff)
                backoff = min(backoff * 2, 30.0)

    async def receive_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookAnswer:
        """A webhook request: check the secret, store the update, then answer."""
        given = shapes.header_bytes(headers.get(SECRET_HEADER, ""))
        if not hmac.compare_digest(given, self.webhook_secret.encode()):
            log.warning("telegram webhook call with a missing or wrong secret token refused")
            return WebhookAnswer(403, "forbidden")
        try:
            data = shapes.load_object(body)
            update = Update.de_json(data, self.bot)
            if update is None:
                raise shapes.Malformed("no update")
            inbound = parse_update(update)
        except Exception as error:  # python-telegram-bot raises many kinds on bad shapes
            log.warning("malformed telegram webhook body: %s", type(error).__name__)
            return WebhookAnswer(400, "malformed update")
        try:
            await self._accept(update, inbound)
        except Exception as error:
            if not is_outage(error):  # an outage is logged once, by the database
                log.exception("could not store a telegram update; telegram will retry")
            return WebhookAnswer(503, "try again")
        return WebhookAnswer(200, "ok")

    # --- sending --------------------------------------------------------------------

    async def send(
        self, address: str, reply: Reply, *, first_part: int = 0, part_sent: PartSent | None = None
    ) -> str | None:
        if not self.connected:
            raise RetryLater(NOT_CONNECTED_WAIT)
        try:
            return await self._send(int(address), reply, first_part, part_sent)
        except RetryAfter as error:
            after = error.retry_after
            raise RetryLater(
                after.total_seconds() if isinstance(after, timedelta) else float(after)
            ) from error
        except Forbidden as error:
            raise Unreachable(str(error)) from error
        except BadRequest as error:
            text = str(error).lower()
            if "message is not modified" in text:
                return reply.edit_message_id
            if "chat not found" in text or "user is deactivated" in text:
                raise Unreachable(str(error)) from error
            raise Rejected(str(error)) from error
        except NetworkError as error:
            raise Transient(str(error)) from error

    def _forget_export(self, path: Path) -> None:
        """A chat export holds residents' data: once Telegram has it, the server keeps no
        copy. Only files in the exports folder are ever deleted."""
        if path.resolve().parent == self.settings.exports_dir.resolve():
            path.unlink(missing_ok=True)

    async def _send(
        self, chat_id: int, reply: Reply, first_part: int, part_sent: PartSent | None
    ) -> str | None:
        markup = _keyboard(reply)
        if reply.edit_message_id:
            result = await self.bot.edit_message_text(
                chat_id=chat_id,
                message_id=int(reply.edit_message_id),
                text=reply.text[:TEXT_LIMIT],
                reply_markup=markup,
            )
            return reply.edit_message_id if result is True else str(result.message_id)
        text = reply.text
        if reply.document:
            path = Path(reply.document)
            try:
                data = await asyncio.to_thread(path.read_bytes)
            except FileNotFoundError:
                # Sent once already (and deleted) or swept: never an empty file instead.
                raise Rejected("the export file is gone") from None
            sent = await self.bot.send_document(
                chat_id=chat_id,
                document=data,
                filename=path.name,
                caption=text[:CAPTION_LIMIT],
                reply_markup=markup,
            )
            self._forget_export(path)
            return str(sent.message_id)
        # The parts of the reply, in order: a picture whose caption cannot hold the text
        # goes first, then the text in pieces, the keyboard on the last.
        parts: list[Callable[[], Awaitable[str | None]]] = []
        if reply.photo_id:
            caption = text if len(text) <= CAPTION_LIMIT else None
            photo = partial(
                self.bot.send_photo,
                chat_id=chat_id,
                photo=reply.photo_id,
                caption=caption,
                reply_markup=markup if caption is not None else None,
            )
            parts.append(partial(_message_id, photo))
            if caption is not None:
                return await send_parts(parts, first_part, part_sent)
        pieces = split_text(text, TEXT_LIMIT)
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            message = partial(
                self.bot.send_message,
                chat_id=chat_id,
                text=piece,
                reply_markup=markup if last else None,
            )
            parts.append(partial(_message_id, message))
        return await send_parts(parts, first_part, part_sent)
