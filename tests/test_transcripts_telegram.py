"""A resident's whole journey on Telegram, in each of the four languages.

Real python-telegram-bot Application, real aiohttp server, real HTTP to a
loopback Bot API stand-in; the conversation state goes through the database
between every message.
"""

from __future__ import annotations

import csv
import re

import pytest

from bot.outreach.export import ExportFilter, write_export
from bot.vocabulary.i18n import Translator
from flows.content import load_content
from flows.menu import CAMPAIGNS, DCFTA, EVENTS, HELP, MINE, REPORT, SETTINGS, WHAT_NEXT
from flows.mine import STATUS
from flows.onboarding import (
    AGREE,
    ALL_SET,
    ENDONYMS,
    FEMALE,
    GENDER,
    MUNICIPALITY,
    PRIVACY,
    WELCOME,
)
from flows.report import (
    ANONYMOUS,
    CATEGORY_LABELS,
    DESCRIBE,
    NAMED,
    SHARING,
    SUBMIT,
    THANKS,
    WHERE,
    WHICH_CATEGORY,
)
from tests.fakes.telegram_api import TelegramStandIn
from tests.harness import TOKEN, Resident, running_khma, texts

LANGS = ("ka", "az", "hy", "ru")
HOME = {"ka": "tetritskaro", "az": "marneuli", "hy": "akhalkalaki", "ru": "tsalka"}
NEED = {
    "ka": "სოფელში წყალი კვირაში მხოლოდ ორჯერ მოდის.",
    "az": "Kəndə su həftədə cəmi iki dəfə gəlir.",
    "hy": "Գյուղում ջուրը շաբաթը միայն երկու անգամ է գալիս։",
    "ru": "В село вода приходит только два раза в неделю.",
}
VILLAGE = {
    "ka": "სოფელი ქოსალარი",
    "az": "Sadaxlı kəndi",
    "hy": "Փոկա գյուղ",
    "ru": "село Сабечисы",
}
ENGLISH = re.compile(r"\b(the|your|you|please|report|and|what|choose|thank)\b", re.IGNORECASE)
REFERENCE = re.compile(r"KV-\d{4}-\d{6}")


def no_english(messages: list) -> None:
    for text in texts(messages):
        assert not ENGLISH.search(text), f"English leaked into: {text!r}"


@pytest.mark.parametrize("lang", LANGS)
async def test_resident_reports_two_needs_and_finds_them(db, tmp_path, lang: str) -> None:
    t = Translator(lang)
    content = load_content()
    home = content.municipality(HOME[lang])
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        resident = Resident(api, db, chat_id=7001, language_code=lang)
        transcript = []

        [welcome] = await resident.says("/start")
        assert welcome.button_texts[0] == ENDONYMS[lang], "Telegram's language comes first"
        assert sorted(welcome.button_texts) == sorted(ENDONYMS.values())
        for other in LANGS:
            assert Translator(other)(WELCOME) in welcome.text

        [question] = await resident.taps(ENDONYMS[lang])
        assert question.text == t(MUNICIPALITY)
        assert home.names[lang] in question.button_texts
        [privacy] = await resident.taps(home.names[lang])
        assert privacy.text == t(PRIVACY)
        [gender] = await resident.taps(t(AGREE))
        assert gender.text == t(GENDER)
        [age] = await resident.taps(t(FEMALE))
        [done, menu] = await resident.taps("30–44")
        assert done.text == t(ALL_SET)
        assert menu.text == t(WHAT_NEXT)
        assert menu.button_texts == [
            t(REPORT),
            t(DCFTA),
            t(MINE),
            t(EVENTS),
            t(CAMPAIGNS),
            t(SETTINGS),
            t(HELP),
        ]
        transcript += [question, privacy, gender, age, done, menu]

        # A first report: water, described in words, a typed village, anonymous.
        [categories] = await resident.taps(t(REPORT))
        assert categories.text == t(WHICH_CATEGORY)
        [describe] = await resident.taps(t(CATEGORY_LABELS["water"]))
        assert describe.text == t(DESCRIBE)
        [where] = await resident.says(NEED[lang])
        assert where.text == t(WHERE)
        [sharing] = await resident.says(VILLAGE[lang])
        assert sharing.text == t(SHARING)
        [review] = await resident.taps(t(ANONYMOUS))
        assert NEED[lang] in review.text and VILLAGE[lang] in review.text
        assert home.names[lang] in review.text
        [thanks, _menu] = await resident.taps(t(SUBMIT))
        first = REFERENCE.search(thanks.text).group()
        assert thanks.text == t(THANKS, reference=first)
        transcript += [categories, describe, where, sharing, review, thanks]

        # A second report: a road, shown with a photo, a shared location, under her name.
        await resident.taps(t(REPORT))
        await resident.taps(t(CATEGORY_LABELS["roads"]))
        [where] = await resident.sends_photo("AgACAgIAAxkBAAIBroad-photo", caption=None)
        assert where.text == t(WHERE)
        [sharing] = await resident.sends_location(home.latitude + 0.01, home.longitude - 0.01)
        [review] = await resident.taps(t(NAMED))
        assert "Nino" in review.text
        [thanks, _menu] = await resident.taps(t(SUBMIT))
        second = REFERENCE.search(thanks.text).group()
        assert second != first
        transcript += [sharing, review, thanks]

        [mine, _menu] = await resident.taps(t(MINE))
        assert first in mine.text and second in mine.text
        assert t(STATUS["received"]) in mine.text
        transcript.append(mine)
        no_english(transcript)

        tapped = [edit for edit in api.edits if edit.chat_id == 7001]
        assert tapped and all(
            not (edit.reply_markup or {}).get("inline_keyboard") for edit in tapped
        )

    out = tmp_path / "export.csv"
    await write_export(db, ExportFilter(), content, "csv", out)
    with out.open(encoding="utf-8-sig", newline="") as fh:
        rows = {row["reference"]: row for row in csv.DictReader(fh)}
    assert set(rows) == {first, second}
    for row in rows.values():
        assert row["language"] == lang
        assert row["municipality"] == home.names["en"]
        assert row["channel"] == "telegram"
        assert row["kind"] == "need"
        assert row["gender"] == "female" and row["age_group"] == "30_44"
    assert rows[first]["category"] == "water" and NEED[lang] in rows[first]["text"]
    assert rows[first]["shared_by_name"] == "no" and rows[first]["name"] == ""
    assert rows[second]["category"] == "roads"
    assert rows[second]["media_ids"] == "AgACAgIAAxkBAAIBroad-photo"
    assert rows[second]["shared_by_name"] == "yes" and rows[second]["name"] == "Nino"
    assert home.names["en"] in rows[second]["location"]
    assert rows[first]["resident"] == rows[second]["resident"] != ""
