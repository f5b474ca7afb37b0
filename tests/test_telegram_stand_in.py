"""The Telegram Bot API stand-in answers the real python-telegram-bot like Telegram does."""

from __future__ import annotations

import asyncio
import datetime as dtm
from collections.abc import AsyncIterator

import aiohttp
import pytest
from telegram import Bot as PTBBot
from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import (
    BadRequest,
    Conflict,
    EndPointNotFound,
    Forbidden,
    NetworkError,
    RetryAfter,
)
from telegram.ext import Application, CommandHandler, ContextTypes

from tests.fakes.telegram_api import TelegramStandIn

TOKEN = "123:ABC"
CHAT = 42


@pytest.fixture
async def api() -> AsyncIterator[TelegramStandIn]:
    async with TelegramStandIn(token=TOKEN) as stand_in:
        yield stand_in


@pytest.fixture
async def bot(api: TelegramStandIn) -> AsyncIterator[PTBBot]:
    async with PTBBot(TOKEN, base_url=api.base_url, base_file_url=api.base_file_url) as ptb_bot:
        yield ptb_bot


def keyboard(text: str, data: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(text, callback_data=data)]])


async def test_get_me_describes_the_bot(bot: PTBBot) -> None:
    me = await bot.get_me()

    assert (me.id, me.is_bot, me.first_name, me.username) == (123, True, "Khma", "khma_test_bot")
    assert me.can_join_groups is True


async def test_send_message_returns_a_message_and_records_the_keyboard(
    bot: PTBBot, api: TelegramStandIn
) -> None:
    markup = keyboard("ქართული", "lang:ka")

    first = await bot.send_message(CHAT, "აირჩიეთ ენა", reply_markup=markup)
    second = await bot.send_message(CHAT, "მადლობა")
    elsewhere = await bot.send_message(7, "hi")

    assert (first.message_id, second.message_id, elsewhere.message_id) == (1, 2, 1)
    assert (first.chat.id, first.from_user.id, first.text) == (CHAT, 123, "აირჩიეთ ენა")
    assert first.reply_markup == markup
    recorded = api.sent_to(CHAT)[0]
    assert recorded.reply_markup == {
        "inline_keyboard": [[{"text": "ქართული", "callback_data": "lang:ka"}]]
    }
    assert (recorded.params["chat_id"], recorded.callback_data) == (CHAT, ["lang:ka"])


async def test_get_updates_repeats_updates_until_an_offset_confirms_them(
    bot: PTBBot, api: TelegramStandIn
) -> None:
    first = api.text_update(CHAT, "გამარჯობა")["update_id"]
    second = api.command_update(CHAT, "/start", payload="ngo-5")["update_id"]

    assert [u.update_id for u in await bot.get_updates()] == [first, second]
    assert [u.update_id for u in await bot.get_updates()] == [first, second]

    [update] = await bot.get_updates(offset=first + 1)
    assert (update.update_id, update.message.text) == (second, "/start ngo-5")
    assert api.confirmed_offset == first + 1
    assert await bot.get_updates(offset=second + 1) == ()
    assert api.pending_updates == []


async def test_get_updates_long_polls_until_an_update_arrives(
    bot: PTBBot, api: TelegramStandIn
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.2)
    assert not poll.done()

    api.text_update(CHAT, "hi")

    [update] = await poll
    assert update.message.text == "hi"
    assert loop.time() - started < 2


async def test_rate_limit_answers_429_raised_as_retry_after(
    bot: PTBBot, api: TelegramStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")  # PTB's non-deprecated retry_after type
    api.rate_limit(1, retry_after=3)

    await bot.send_message(CHAT, "one")
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(CHAT, "two")

    assert caught.value.retry_after == dtm.timedelta(seconds=3)
    assert api.too_many_requests == 1
    assert [m.text for m in api.sent] == ["one"]
    assert [call.status for call in api.calls_of("sendMessage")] == [200, 429]


async def test_blocked_chat_answers_403_forbidden(bot: PTBBot, api: TelegramStandIn) -> None:
    api.block(CHAT)

    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(CHAT, "hello?")
    await bot.send_message(7, "still delivered")

    assert api.sent_to(CHAT) == []
    assert len(api.sent_to(7)) == 1
    with pytest.raises(AssertionError, match=r"got 0: \[\].*403 Forbidden"):
        await api.wait_for_messages(CHAT, 1, timeout=0.1)


async def test_fail_next_injects_server_errors(bot: PTBBot, api: TelegramStandIn) -> None:
    api.fail_next(1, status=502)

    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.send_message(CHAT, "lost")
    await bot.send_message(CHAT, "delivered")

    assert [m.text for m in api.sent] == ["delivered"]
    assert [call.status for call in api.calls] == [200, 502, 200]  # getMe first


async def test_callback_query_can_be_answered_once(bot: PTBBot, api: TelegramStandIn) -> None:
    sent = await bot.send_message(CHAT, "Do you agree?", reply_markup=keyboard("Yes", "ok:yes"))
    api.callback_update(CHAT, "ok:yes")

    [update] = await bot.get_updates()
    query = update.callback_query
    assert (query.data, query.message.message_id) == ("ok:yes", sent.message_id)
    assert query.message.text == "Do you agree?"

    assert await bot.answer_callback_query(query.id, text="Thanks", show_alert=True)
    [answer] = api.callback_answers
    assert (answer.callback_query_id, answer.text, answer.show_alert) == (query.id, "Thanks", True)
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await bot.answer_callback_query(query.id)


async def test_edit_message_text_updates_and_refuses_no_op_edits(
    bot: PTBBot, api: TelegramStandIn
) -> None:
    sent = await bot.send_message(CHAT, "Step 1", reply_markup=keyboard("Next", "step:2"))

    edited = await bot.edit_message_text("Step 2", chat_id=CHAT, message_id=sent.message_id)

    assert (edited.text, edited.reply_markup) == ("Step 2", None)
    assert edited.edit_date is not None
    [edit] = api.edits
    assert (edit.method, edit.chat_id, edit.message_id) == ("editMessageText", CHAT, 1)
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text("Step 2", chat_id=CHAT, message_id=sent.message_id)
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("?", chat_id=CHAT, message_id=999)


async def test_set_webhook_stores_it_and_blocks_polling_until_deleted(
    bot: PTBBot, api: TelegramStandIn
) -> None:
    url = "https://khma.example/telegram"

    assert await bot.set_webhook(url, secret_token="s3cret_T-1", allowed_updates=["message"])

    assert api.webhook is not None
    assert (api.webhook.url, api.webhook.secret_token) == (url, "s3cret_T-1")
    assert api.webhook.allowed_updates == ["message"]
    assert (await bot.get_webhook_info()).url == url
    with pytest.raises(Conflict, match=r"(?i)webhook is active"):
        await bot.get_updates()

    assert await bot.delete_webhook()
    assert api.webhook is None
    assert (await bot.get_webhook_info()).url == ""
    assert await bot.get_updates() == ()


async def test_send_photo_by_file_id_echoes_the_photo(bot: PTBBot, api: TelegramStandIn) -> None:
    received = api.photo_update(CHAT, "AgACAgIAAxkBAAIB", caption="pothole", queue=False)
    file_id = received["message"]["photo"][-1]["file_id"]

    sent = await bot.send_photo(CHAT, photo=file_id, caption="Sent to the NGO")

    assert (sent.photo[-1].file_id, sent.caption) == (file_id, "Sent to the NGO")
    [recorded] = api.sent
    assert (recorded.method, recorded.photo, recorded.text) == ("sendPhoto", file_id, None)
    assert recorded.caption == "Sent to the NGO"


async def test_uploaded_photo_arrives_as_multipart_and_can_be_downloaded(
    bot: PTBBot, api: TelegramStandIn
) -> None:
    sent = await bot.send_photo(
        CHAT, photo=b"\x89PNG-bytes", caption="<b>map</b>", parse_mode="HTML"
    )

    [recorded] = api.sent
    assert recorded.files["photo"].data == b"\x89PNG-bytes"
    assert (recorded.photo, sent.caption) == (sent.photo[-1].file_id, "map")
    photo_file = await bot.get_file(recorded.photo)
    assert await photo_file.download_as_bytearray() == bytearray(b"\x89PNG-bytes")


async def test_refuses_what_telegram_refuses(bot: PTBBot, api: TelegramStandIn) -> None:
    with pytest.raises(BadRequest, match=r"(?i)can.t parse entities"):
        await bot.send_message(CHAT, "Road <5km> broken", parse_mode="HTML")
    with pytest.raises(
        BadRequest, match=r"(?i)button_data_invalid"
    ):  # 22 Georgian letters = 66 bytes
        await bot.send_message(CHAT, "x", reply_markup=keyboard("ა", "ა" * 22))
    with pytest.raises(BadRequest, match=r"(?i)https url must be provided"):
        await bot.set_webhook("http://khma.example/telegram")
    with pytest.raises(BadRequest, match=r"(?i)secret token contains unallowed characters"):
        await bot.set_webhook("https://khma.example/telegram", secret_token=TOKEN)
    with pytest.raises(EndPointNotFound):
        await bot.do_api_request("sendTelepathy")
    assert api.sent == []


async def test_raw_http_token_check_case_insensitive_methods_and_json_bodies(
    api: TelegramStandIn,
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{api.url}/bot123:WRONG/getMe") as response:
            assert response.status == 401
            assert await response.json() == {
                "ok": False,
                "error_code": 401,
                "description": "Unauthorized",
            }
        body = {"chat_id": CHAT, "text": "hi", "reply_markup": '{"inline_keyboard": []}'}
        async with http.post(f"{api.url}/bot{TOKEN}/SENDMESSAGE", json=body) as response:
            assert (await response.json())["result"]["text"] == "hi"

    assert (api.sent[0].method, api.sent[0].reply_markup) == (
        "sendMessage",
        {"inline_keyboard": []},
    )


async def test_my_commands_round_trip_per_language(bot: PTBBot, api: TelegramStandIn) -> None:
    await bot.set_my_commands([BotCommand("start", "დაწყება")], language_code="ka")

    assert [c.command for c in await bot.get_my_commands(language_code="ka")] == ["start"]
    assert await bot.get_my_commands() == ()
    assert api.commands_for(language_code="ka") == [{"command": "start", "description": "დაწყება"}]
    await bot.delete_my_commands(language_code="ka")
    assert await bot.get_my_commands(language_code="ka") == ()


async def test_update_builders_produce_updates_ptb_understands(
    bot: PTBBot, api: TelegramStandIn
) -> None:
    updates = [
        api.text_update(CHAT, "hi", queue=False),
        api.command_update(CHAT, "/start", queue=False),
        api.photo_update(CHAT, "photo-1", caption="pothole", queue=False),
        api.voice_update(CHAT, "voice-1", queue=False),
        api.sticker_update(CHAT, queue=False),
        api.document_update(CHAT, "doc-1", "petition.pdf", "application/pdf", queue=False),
        api.location_update(CHAT, 41.55, 44.99, queue=False),
    ]

    text, command, photo, voice, sticker, document, location = (
        Update.de_json(update, bot).message for update in updates
    )
    assert (text.text, text.from_user.language_code, text.chat.type) == ("hi", "ka", "private")
    assert command.entities[0].type == "bot_command"
    assert (photo.photo[-1].file_id, photo.caption, len(photo.photo)) == ("photo-1", "pothole", 3)
    assert (voice.voice.file_id, voice.voice.mime_type) == ("voice-1", "audio/ogg")
    assert (sticker.sticker.type, sticker.sticker.is_animated) == ("regular", False)
    assert document.document.file_name == "petition.pdf"
    assert (location.location.latitude, location.location.longitude) == (41.55, 44.99)
    assert [u["update_id"] for u in updates] == list(range(1, 8))
    assert api.pending_updates == []


async def test_a_real_application_polls_replies_and_confirms(api: TelegramStandIn) -> None:
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.effective_message.reply_text(f"გამარჯობა, {update.effective_user.first_name}!")

    app = (
        Application.builder()
        .token(TOKEN)
        .base_url(api.base_url)
        .base_file_url(api.base_file_url)
        .build()
    )
    app.add_handler(CommandHandler("start", start))
    update_id = api.command_update(CHAT, "/start")["update_id"]

    async with app:
        await app.start()
        await app.updater.start_polling(poll_interval=0, timeout=1)
        [reply] = await api.wait_for_messages(CHAT, 1)
        await app.updater.stop()
        await app.stop()

    assert reply.text == "გამარჯობა, Nino!"
    assert api.confirmed_offset == update_id + 1
    assert api.pending_updates == []
