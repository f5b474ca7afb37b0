"""More of what residents do on Telegram: deep links, DCFTA questions, /mydata,
typing instead of tapping, settings, and a Bot API that pushes back."""

from __future__ import annotations

import re

import aiohttp
from sqlalchemy import select

from bot.outreach.export import ExportFilter, export_rows
from bot.vocabulary.i18n import Translator
from bot.vocabulary.messages import Kind
from flows.content import load_content
from flows.core import CANNOT_USE, MEDIA_NAMES
from flows.dcfta import ASK, ASK_OWN, ASKED, TOPICS
from flows.menu import DCFTA, HELP_TEXT, MINE, REPORT, SETTINGS, WHAT_NEXT
from flows.mine import QUESTION
from flows.onboarding import (
    AGREE,
    ENDONYMS,
    GENDER,
    LANGUAGE_SAVED,
    MUNICIPALITY,
    MUNICIPALITY_FROM_LINK,
    MUNICIPALITY_SAVED,
    PRIVACY,
    SKIP,
)
from flows.privacy import HEADER, REPORTS_HEADER
from flows.report import ANONYMOUS, CATEGORY_LABELS, DESCRIBE_HOW, SUBMIT, WHICH_CATEGORY
from flows.settings import MUNICIPALITY as CHANGE_MUNICIPALITY
from storage.models import OutboxMessage, Resident
from tests.fakes.telegram_api import TelegramStandIn
from tests.harness import TOKEN, quiet, running_khma
from tests.harness import Resident as Phone

CONTENT = load_content()


async def onboard(phone: Phone, lang: str, place: str) -> Translator:
    t = Translator(lang)
    await phone.says("/start")
    await phone.taps(ENDONYMS[lang])
    await phone.taps(CONTENT.municipality(place).names[lang])
    await phone.taps(t(AGREE))
    await phone.taps(t(SKIP))
    await phone.taps(t(SKIP))
    return t


async def test_a_posters_deep_link_sets_the_municipality(db) -> None:
    t = Translator("hy")
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        phone = Phone(api, db, chat_id=601, language_code="hy")
        await phone.says("/start ninotsminda")
        [from_link, privacy] = await phone.taps(ENDONYMS["hy"])
        name = CONTENT.municipality("ninotsminda").names["hy"]
        assert from_link.text == t(MUNICIPALITY_FROM_LINK, municipality=name)
        assert privacy.text == t(PRIVACY)
        [gender] = await phone.taps(t(AGREE))
        assert gender.text == t(GENDER)
    async with db.transaction() as session:
        [resident] = (await session.execute(select(Resident))).scalars()
        assert (resident.municipality, resident.source) == ("ninotsminda", "ninotsminda")


async def test_resident_asks_their_own_dcfta_question(db) -> None:
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        phone = Phone(api, db, chat_id=602, language_code="az", first_name="Rauf")
        t = await onboard(phone, "az", "bolnisi")
        [topics] = await phone.taps(t(DCFTA))
        assert topics.text == t(TOPICS)
        assert topics.button_texts[0] == CONTENT.topics[0].title["az"]
        [ask] = await phone.taps(t(ASK_OWN))
        assert ask.text == t(ASK)
        [asked, _menu] = await phone.says("Fındığı Almaniyaya necə ixrac edə bilərəm?")
        reference = re.search(r"DQ-\d{4}-\d{6}", asked.text).group()
        assert asked.text == t(ASKED, reference=reference)
        [mine, _menu] = await phone.taps(t(MINE))
        assert reference in mine.text and t(QUESTION) in mine.text
    rows = [row async for row in export_rows(db, ExportFilter(kind="dcfta"), CONTENT)]
    assert [(r["reference"], r["kind"], r["language"]) for r in rows] == [
        (reference, "dcfta", "az")
    ]
    assert rows[0]["text"] == "Fındığı Almaniyaya necə ixrac edə bilərəm?"


async def test_mydata_shows_everything_stored(db) -> None:
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        phone = Phone(api, db, chat_id=603, language_code="ru", first_name="Ольга")
        t = await onboard(phone, "ru", "tsalka")
        await phone.taps(t(REPORT))
        await phone.taps(t(CATEGORY_LABELS["health"]))
        await phone.says("В амбулатории нет врача по пятницам.")
        await phone.taps(t(SKIP))
        await phone.taps(t(ANONYMOUS))
        await phone.taps(t(SUBMIT))
        [profile, reports, _menu] = await phone.says("/mydata")
        assert profile.text.startswith(t(HEADER))
        assert CONTENT.municipality("tsalka").names["ru"] in profile.text
        assert "Ольга" in profile.text
        assert reports.text.startswith(t(REPORTS_HEADER))
        assert "В амбулатории нет врача по пятницам." in reports.text


async def test_typing_a_label_or_number_counts_as_a_tap_and_language_can_change(db) -> None:
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        phone = Phone(api, db, chat_id=604, language_code="ka")
        await phone.says("/start")
        [question] = await phone.says("ქართული")
        ka = Translator("ka")
        assert question.text == ka(MUNICIPALITY)
        [privacy] = await phone.says("1")
        assert privacy.text == ka(PRIVACY)
        await phone.says(ka(AGREE))
        await phone.says(ka(SKIP))
        await phone.says(ka(SKIP))
        await phone.says("/language")
        [saved, menu] = await phone.taps(ENDONYMS["hy"])
        hy = Translator("hy")
        assert saved.text == hy(LANGUAGE_SAVED)
        assert menu.text == hy(WHAT_NEXT)
        [help_text, _menu] = await phone.says("/help")
        assert help_text.text == hy(HELP_TEXT)


async def test_settings_change_the_municipality(db) -> None:
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        phone = Phone(api, db, chat_id=605, language_code="ka")
        t = await onboard(phone, "ka", "gardabani")
        await phone.taps(t(SETTINGS))
        [question] = await phone.taps(t(CHANGE_MUNICIPALITY))
        assert question.text == t(MUNICIPALITY)
        new = CONTENT.municipality("dmanisi").names["ka"]
        [saved, menu] = await phone.taps(new)
        assert saved.text == t(MUNICIPALITY_SAVED, municipality=new)
        assert menu.text == t(WHAT_NEXT)
    async with db.transaction() as session:
        [resident] = (await session.execute(select(Resident))).scalars()
        assert resident.municipality == "dmanisi"


async def test_a_document_where_a_description_was_asked_gets_a_specific_hint(db) -> None:
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        phone = Phone(api, db, chat_id=606, language_code="ru")
        t = await onboard(phone, "ru", "rustavi")
        [categories] = await phone.taps(t(REPORT))
        assert categories.text == t(WHICH_CATEGORY)
        await phone.taps(t(CATEGORY_LABELS["services"]))
        [hint] = await phone.sends_document("BQACAgIAAxkBAAIC-scan")
        what = t(MEDIA_NAMES[Kind.DOCUMENT])
        assert hint.text == t(CANNOT_USE, what=what) + " " + t(DESCRIBE_HOW)


async def test_replies_survive_flood_limits_and_server_errors(db) -> None:
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        api.fail_next(2, status=502)
        phone = Phone(api, db, chat_id=607, language_code="ka")
        [welcome] = await phone.says("/start")
        assert welcome.button_texts[0] == ENDONYMS["ka"]
        api.rate_limit(0.5, retry_after=1)
        others = [Phone(api, db, chat_id=700 + i, language_code="ru") for i in range(4)]
        for other in others:
            api.command_update(other.chat_id, "/start")
        await quiet(db, api, timeout=30)
        assert api.too_many_requests > 0
        for other in others:
            assert len(api.sent_to(other.chat_id)) == 1
    async with db.transaction() as session:
        statuses = set((await session.execute(select(OutboxMessage.status))).scalars())
        assert statuses == {"sent"}


async def test_health_check_answers_once_ready(db) -> None:
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api) as khma:
        url = f"http://127.0.0.1:{khma.port}/healthz"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            assert response.status == 200
            assert (await response.json()) == {"status": "ok"}
