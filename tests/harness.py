"""Drives Khma like a resident would: over real HTTP, through the real Application.

`running_khma` starts the Telegram Bot API stand-in and the whole Khma app (web
server, engine, dispatcher, python-telegram-bot Application) on loopback.
`Resident` sends what a phone would send and returns what the bot answered,
once the bot has gone quiet, so tests read like transcripts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from bot.app import Khma
from bot.config import Settings
from bot.delivery.dispatch import DispatchPolicy
from bot.vocabulary.i18n import Msg, Translator
from flows.content import load_content
from flows.core import SKIP
from flows.onboarding import AGREE, ENDONYMS
from storage.db import Database
from storage.models import InboxEvent, Job, OutboxMessage, utcnow
from tests.fakes.telegram_api import SentMessage, TelegramStandIn
from tests.fakes.viber_api import ViberSent, ViberStandIn

TOKEN = "123456:TEST-token-never-logged"
# Conversation tests run faster than any platform allows; tests of pacing set their own
# rates, and quiet hours stay off so a test never depends on the hour in Tbilisi.
TEST_PACE = {
    "TELEGRAM_RATE": "1000",
    "TELEGRAM_CHAT_RATE": "1000",
    "VIBER_RATE": "1000",
    "VIBER_CHAT_RATE": "1000",
    "QUIET_HOURS": "off",
}


def settings_for(api: TelegramStandIn | None, **extra: str) -> Settings:
    env = {"HOST": "127.0.0.1", "PORT": "0", **TEST_PACE}
    if api is not None:
        env |= {
            "TELEGRAM_TOKEN": api.token,
            "TELEGRAM_API_URL": api.url,
            "TELEGRAM_POLL_TIMEOUT": "1",
        }
    return Settings.from_env(env | extra)


@asynccontextmanager
async def running_khma(
    db: Database,
    api: TelegramStandIn | None = None,
    *,
    viber: ViberStandIn | None = None,
    clock: Callable[[], datetime] = utcnow,
    **env: str,
) -> AsyncIterator[Khma]:
    """Khma with Telegram (polling `api`) and/or Viber (`viber`) configured."""
    if viber is not None:
        env = {
            "VIBER_TOKEN": viber.token,
            "VIBER_API_URL": viber.api_url,
            "VIBER_WEBHOOK_URL": "https://khma.example.org/webhooks/viber",
            **env,
        }
    settings = settings_for(api, **env)
    policy = DispatchPolicy.from_settings(settings, idle_wait=0.05, first_backoff=0.05)
    khma = Khma(settings, db=db, clock=clock, policy=policy)
    await khma.start()
    try:
        yield khma
    finally:
        await khma.stop()


async def quiet(db: Database, api: TelegramStandIn | None, timeout: float = 10.0) -> None:
    """Wait until every update is confirmed, processed, and every reply is sent."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        # Telegram's side first: an update is confirmed only after it is stored.
        unconfirmed = len(api.pending_updates) if api is not None else 0
        async with db.transaction() as session:
            inbox = await session.scalar(
                select(func.count()).select_from(InboxEvent).where(InboxEvent.status == "pending")
            )
            outbox = await session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.status.in_(("pending", "sending")))
            )
            # Staff work queued by a turn (an export, event notices) and its result notice.
            jobs = await session.scalar(
                select(func.count()).select_from(Job).where(Job.status.in_(("pending", "running")))
            )
        if unconfirmed == 0 and inbox == 0 and outbox == 0 and jobs == 0:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"bot did not go quiet: {unconfirmed} unconfirmed updates, "
                f"{inbox} unprocessed events, {outbox} unsent replies, {jobs} unfinished jobs"
            )
        await asyncio.sleep(0.02)


@dataclass
class Resident:
    """A Telegram user in a private chat with the bot."""

    api: TelegramStandIn
    db: Database
    chat_id: int
    language_code: str = "ka"
    first_name: str = "Nino"
    seen: int = 0
    last_update: dict[str, Any] = field(default_factory=dict)

    def _who(self) -> dict[str, Any]:
        return {"first_name": self.first_name, "language_code": self.language_code}

    async def _answer(self) -> list[SentMessage]:
        await quiet(self.db, self.api)
        messages = self.api.sent_to(self.chat_id)
        new, self.seen = messages[self.seen :], len(messages)
        return new

    async def starts(self) -> None:
        await self.says("/start")

    async def says(self, text: str) -> list[SentMessage]:
        if text.startswith("/"):
            command, _, payload = text.partition(" ")
            self.last_update = self.api.command_update(
                self.chat_id, command, payload or None, **self._who()
            )
        else:
            self.last_update = self.api.text_update(self.chat_id, text, **self._who())
        return await self._answer()

    def last_keyboard(self) -> SentMessage:
        for message in reversed(self.api.sent_to(self.chat_id)):
            if message.callback_data:
                return message
        raise AssertionError("the bot has shown no buttons")

    async def taps(self, label: str) -> list[SentMessage]:
        """Tap the button with this label under the bot's latest keyboard."""
        message = self.last_keyboard()
        for button in message.buttons:
            if button.get("text") == label:
                self.last_update = self.api.callback_update(
                    self.chat_id, button["callback_data"], message.message_id, **self._who()
                )
                return await self._answer()
        raise AssertionError(f"no button {label!r}; buttons are {message.button_texts}")

    async def sends_photo(self, file_id: str, caption: str | None = None) -> list[SentMessage]:
        self.last_update = self.api.photo_update(self.chat_id, file_id, caption, **self._who())
        return await self._answer()

    async def sends_voice(self, file_id: str) -> list[SentMessage]:
        self.last_update = self.api.voice_update(self.chat_id, file_id, **self._who())
        return await self._answer()

    async def sends_sticker(self) -> list[SentMessage]:
        self.last_update = self.api.sticker_update(self.chat_id, **self._who())
        return await self._answer()

    async def sends_document(self, file_id: str) -> list[SentMessage]:
        self.last_update = self.api.document_update(self.chat_id, file_id, **self._who())
        return await self._answer()

    async def sends_location(self, latitude: float, longitude: float) -> list[SentMessage]:
        self.last_update = self.api.location_update(
            self.chat_id, latitude, longitude, **self._who()
        )
        return await self._answer()


def texts(messages: list[SentMessage]) -> list[str]:
    return [m.text if m.text is not None else (m.caption or "") for m in messages]


@dataclass
class ViberUser:
    """A Viber user writing to the bot's public account; callbacks are signed and POSTed."""

    api: ViberStandIn
    db: Database
    khma: Khma
    user_id: str
    language: str = "ka"
    name: str = "Nino"
    seen: int = 0
    answers: list[int] = field(default_factory=list)

    @property
    def webhook(self) -> str:
        return f"http://127.0.0.1:{self.khma.port}/webhooks/viber"

    async def _post(self, payload: dict[str, Any]) -> list[ViberSent]:
        status, _body = await self.api.post_callback(self.webhook, payload)
        self.answers.append(status)
        assert status == 200, f"webhook answered {status}"
        await quiet(self.db, None)
        messages = self.api.sent_to(self.user_id)
        new, self.seen = messages[self.seen :], len(messages)
        return new

    async def opens_chat(self, context: str | None = None) -> dict[str, Any]:
        """conversation_started: the welcome comes back in the HTTP answer itself."""
        payload = self.api.conversation_started(
            self.user_id, name=self.name, language=self.language, context=context
        )
        status, body = await self.api.post_callback(self.webhook, payload)
        assert status == 200
        self.seen = len(self.api.sent_to(self.user_id))
        return body

    async def starts(self) -> None:
        await self.opens_chat()

    async def says(self, text: str) -> list[ViberSent]:
        return await self._post(
            self.api.text(self.user_id, text, name=self.name, language=self.language)
        )

    async def taps(self, label: str) -> list[ViberSent]:
        return await self._post(self.api.press(self.user_id, label))

    async def sends_picture(self, url: str) -> list[ViberSent]:
        return await self._post(self.api.picture(self.user_id, url))

    async def sends_location(self, lat: float, lon: float) -> list[ViberSent]:
        return await self._post(self.api.location(self.user_id, lat, lon))


async def onboard(
    phone: Resident | ViberUser,
    lang: str,
    municipality: str = "marneuli",
    gender: Msg | None = None,
) -> Translator:
    """The shortest way in: language, municipality, consent, the gender when given (its
    onboarding label, such as `flows.onboarding.FEMALE`), and the rest skipped."""
    t = Translator(lang)
    await phone.starts()
    await phone.taps(ENDONYMS[lang])
    await phone.taps(load_content().municipality(municipality).names[lang])
    await phone.taps(t(AGREE))
    await phone.taps(t(gender or SKIP))
    await phone.taps(t(SKIP))
    return t


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `condition()` holds (work in another task shows it); fail after `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
