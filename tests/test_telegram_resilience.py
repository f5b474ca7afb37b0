"""What must never go wrong on Telegram: restarts, duplicates, bad input, refused consent,
erasure, webhook secrets, and logs that keep tokens and residents' words out."""

from __future__ import annotations

import csv
import logging

import aiohttp
from sqlalchemy import func, select

from bot.outreach.export import ExportFilter, write_export
from bot.vocabulary.i18n import Translator
from flows.content import load_content
from flows.core import SKIP, STICKER_HINT, TOO_LONG
from flows.menu import DCFTA, JOIN, REPORT, UNKNOWN_COMMAND, WHAT_NEXT
from flows.onboarding import AGREE, DECLINE, DECLINED, ENDONYMS, FEMALE
from flows.privacy import CONFIRM_DELETE, ERASED, YES_DELETE
from flows.report import CATEGORY_LABELS, DESCRIBE, NAMED, SUBMIT, WHERE
from storage.models import Identity, InboxEvent, OutboxMessage, Report, Resident
from tests.fakes.telegram_api import TelegramStandIn
from tests.harness import TOKEN, quiet, running_khma
from tests.harness import Resident as Phone


async def onboard(phone: Phone, t: Translator, lang: str = "ka") -> None:
    await phone.says("/start")
    await phone.taps(ENDONYMS[lang])
    await phone.taps(load_content().municipality("marneuli").names[lang])
    await phone.taps(t(AGREE))
    await phone.taps(t(FEMALE))
    await phone.taps("45–59")


async def test_a_restart_mid_report_resumes_where_the_resident_left(db) -> None:
    t = Translator("ka")
    async with TelegramStandIn(token=TOKEN) as api:
        phone = Phone(api, db, chat_id=501)
        async with running_khma(db, api):
            await onboard(phone, t)
            await phone.taps(t(REPORT))
            [describe] = await phone.taps(t(CATEGORY_LABELS["energy"]))
            assert describe.text == t(DESCRIBE)
        async with running_khma(db, api):
            [where] = await phone.says("გაზი სამი დღეა არ გვაქვს.")
            assert where.text == t(WHERE)


async def test_the_same_update_twice_is_handled_once(db) -> None:
    webhook = "https://khma.example.org/webhooks/telegram"
    async with (
        TelegramStandIn(token=TOKEN) as api,
        running_khma(db, api, TELEGRAM_WEBHOOK_URL=webhook) as khma,
    ):
        update = api.text_update(502, "/start", queue=False)
        url = f"http://127.0.0.1:{khma.port}/webhooks/telegram"
        assert api.webhook is not None, "the webhook is registered, with a generated secret"
        secret = {"X-Telegram-Bot-Api-Secret-Token": api.webhook.secret_token}
        async with aiohttp.ClientSession() as http:
            for _ in range(2):
                async with http.post(url, json=update, headers=secret) as response:
                    assert response.status == 200
        await quiet(db, api)
        assert len(api.sent_to(502)) == 1
        async with db.transaction() as session:
            assert await session.scalar(select(func.count()).select_from(InboxEvent)) == 1


async def test_declining_consent_stores_nothing_but_the_language(db) -> None:
    t = Translator("ru")
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        phone = Phone(api, db, chat_id=503, language_code="ru", first_name="Армен")
        await phone.says("/start")
        await phone.taps(ENDONYMS["ru"])
        await phone.taps(load_content().municipality("ninotsminda").names["ru"])
        [declined, menu] = await phone.taps(t(DECLINE))
        assert declined.text == t(DECLINED)
        assert menu.button_texts[:2] == [t(DCFTA), t(JOIN)]
        # What remains possible: reading the DCFTA answers.
        await phone.taps(t(DCFTA))
        topic = load_content().topics[0]
        await phone.taps(topic.title["ru"])
        [answer, _again] = await phone.taps(topic.questions[0].question["ru"])
        assert topic.questions[0].answer["ru"] in answer.text
    async with db.transaction() as session:
        [resident] = (await session.execute(select(Resident))).scalars()
        assert resident.language == "ru" and resident.consent is False
        assert (resident.municipality, resident.gender, resident.age_group) == (None, None, None)
        [identity] = (await session.execute(select(Identity))).scalars()
        assert identity.display_name is None
        assert await session.scalar(select(func.count()).select_from(Report)) == 0
        for event in (await session.execute(select(InboxEvent))).scalars():
            assert set(event.payload) == {"kind"}, "processed events keep no content"


async def test_delete_erases_the_resident_and_the_export_shows_reports_anonymised(
    db, tmp_path
) -> None:
    t = Translator("az")
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        phone = Phone(api, db, chat_id=504, language_code="az", first_name="Leyla")
        await onboard(phone, t, "az")
        await phone.taps(t(REPORT))
        await phone.taps(t(CATEGORY_LABELS["education"]))
        await phone.says("Məktəbdə Azərbaycan dilində dərslik çatışmır.")
        await phone.taps(t(SKIP))
        await phone.taps(t(NAMED))
        await phone.taps(t(SUBMIT))
        [confirm] = await phone.says("/delete")
        assert confirm.text == t(CONFIRM_DELETE)
        [erased] = await phone.taps(t(YES_DELETE))
        assert erased.text == t(ERASED)
        [welcome] = await phone.says("Salam")
        assert welcome.button_texts[0] == ENDONYMS["az"], "a new start, not a remembered one"
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Resident)) == 1
        [report] = (await session.execute(select(Report))).scalars()
        assert report.resident_id is None and report.shared_name is None and report.anonymous
    out = tmp_path / "after-delete.csv"
    await write_export(db, ExportFilter(), load_content(), "csv", out)
    with out.open(encoding="utf-8-sig", newline="") as fh:
        [row] = list(csv.DictReader(fh))
    assert row["resident"] == "" and row["name"] == "" and row["gender"] == ""
    assert row["shared_by_name"] == "no"
    assert "Məktəbdə" in row["text"], "the report itself stays"


async def test_oversized_text_and_a_sticker_get_hints_in_the_residents_language(db) -> None:
    t = Translator("hy")
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        phone = Phone(api, db, chat_id=505, language_code="hy", first_name="Անի")
        await onboard(phone, t, "hy")
        await phone.taps(t(REPORT))
        await phone.taps(t(CATEGORY_LABELS["roads"]))
        [too_long] = await phone.says("Ճ" * 5000)
        assert too_long.text == t(TOO_LONG, length=5000, limit=2000)
        [sticker] = await phone.sends_sticker()
        assert sticker.text == t(STICKER_HINT)
        [still_there] = await phone.says("Ճանապարհը քանդված է։")
        assert still_there.text == t(WHERE)


async def test_unknown_commands_and_free_text_lead_to_the_menu(db) -> None:
    t = Translator("ka")
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        phone = Phone(api, db, chat_id=506)
        await onboard(phone, t)
        [hint, menu] = await phone.says("/weather")
        assert hint.text == t(UNKNOWN_COMMAND, command="/weather")
        assert menu.text == t(WHAT_NEXT)
        await phone.says("/cancel")
        [menu_again] = await phone.says("2")
        assert menu_again.text != t(WHAT_NEXT), "typing a button's number taps it"


async def test_webhook_mode_sets_the_secret_and_refuses_a_wrong_one(db) -> None:
    async with (
        TelegramStandIn(token=TOKEN) as api,
        running_khma(
            db,
            api,
            TELEGRAM_WEBHOOK_URL="https://khma.example.org/webhooks/telegram",
            TELEGRAM_WEBHOOK_SECRET="webhook-secret_42",
        ) as khma,
    ):
        assert api.webhook is not None and api.webhook.secret_token == "webhook-secret_42"
        url = f"http://127.0.0.1:{khma.port}/webhooks/telegram"
        update = api.text_update(507, "/start", queue=False)
        async with aiohttp.ClientSession() as http:
            bad = {"X-Telegram-Bot-Api-Secret-Token": "guessed"}
            async with http.post(url, json=update, headers=bad) as response:
                assert response.status == 403
            async with db.transaction() as session:
                assert await session.scalar(select(func.count()).select_from(InboxEvent)) == 0
            good = {"X-Telegram-Bot-Api-Secret-Token": "webhook-secret_42"}
            async with http.post(url, json=update, headers=good) as response:
                assert response.status == 200
        await quiet(db, api)
        assert len(api.sent_to(507)) == 1


async def test_blocked_resident_is_marked_unreachable_and_nothing_is_retried(db) -> None:
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        api.block(508)
        api.text_update(508, "/start")
        await quiet(db, api)
        async with db.transaction() as session:
            [identity] = (await session.execute(select(Identity))).scalars()
            assert identity.unreachable_at is not None
            [row] = (await session.execute(select(OutboxMessage))).scalars()
            assert row.status == "unreachable"


async def test_logs_hold_neither_the_token_nor_what_residents_wrote(db, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    from bot.cli.commands import configure_logging

    configure_logging("DEBUG")
    secret_words = "ჩვენს ქუჩაზე ნაგავს არავინ იღებს"
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        phone = Phone(api, db, chat_id=509)
        await onboard(phone, Translator("ka"))
        await phone.says(secret_words)
    for record in caplog.records:
        message = record.getMessage()
        assert TOKEN not in message, f"token logged by {record.name}"
        if record.levelno >= logging.INFO:
            assert secret_words not in message, f"resident's words logged by {record.name}"
