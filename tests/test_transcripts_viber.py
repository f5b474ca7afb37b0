"""The same journey on Viber, in each of the four languages, through the real aiohttp
server and a loopback Viber REST API stand-in: nothing written a second time."""

from __future__ import annotations

import re

import pytest

from bot.outreach.export import ExportFilter, export_rows
from bot.vocabulary.i18n import Translator
from flows.content import load_content
from flows.menu import MINE, REPORT, WHAT_NEXT
from flows.mine import STATUS
from flows.onboarding import AGREE, ALL_SET, ENDONYMS, FEMALE, MUNICIPALITY, PRIVACY, WELCOME
from flows.report import ANONYMOUS, CATEGORY_LABELS, NAMED, SUBMIT, THANKS, WHERE
from tests.fakes.viber_api import ViberStandIn
from tests.harness import ViberUser, running_khma
from tests.test_transcripts_telegram import HOME, LANGS, NEED, VILLAGE

REFERENCE = re.compile(r"KV-\d{4}-\d{6}")


@pytest.mark.parametrize("lang", LANGS)
async def test_viber_resident_reports_two_needs_and_finds_them(db, lang: str) -> None:
    t = Translator(lang)
    content = load_content()
    home = content.municipality(HOME[lang])
    async with ViberStandIn() as api, running_khma(db, viber=api) as khma:
        assert api.webhook is not None and api.webhook["url"].endswith("/webhooks/viber")
        user = ViberUser(api, db, khma, user_id=f"{lang}-01234567890A=", language=lang)

        welcome = await user.opens_chat()
        for other in LANGS:
            assert Translator(other)(WELCOME) in welcome["text"]
        buttons = welcome["keyboard"]["Buttons"]
        assert buttons[0]["Text"] == ENDONYMS[lang], "Viber's language first"
        assert all(b["ActionBody"].isascii() and b["Silent"] for b in buttons)

        [question] = await user.taps(ENDONYMS[lang])
        assert question.text == t(MUNICIPALITY)
        assert home.names[lang] in question.button_texts
        [privacy] = await user.taps(home.names[lang])
        assert privacy.text == t(PRIVACY)
        await user.taps(t(AGREE))
        await user.taps(t(FEMALE))
        [done, menu] = await user.taps("30–44")
        assert (done.text, menu.text) == (t(ALL_SET), t(WHAT_NEXT))

        await user.taps(t(REPORT))
        await user.taps(t(CATEGORY_LABELS["water"]))
        [where] = await user.says(NEED[lang])
        assert where.text == t(WHERE)
        await user.says(VILLAGE[lang])
        await user.taps(t(ANONYMOUS))
        [thanks, _menu] = await user.taps(t(SUBMIT))
        first = REFERENCE.search(thanks.text).group()
        assert thanks.text == t(THANKS, reference=first)

        await user.taps(t(REPORT))
        await user.taps(t(CATEGORY_LABELS["roads"]))
        await user.sends_picture("https://dl-media.viber.com/1/share/2/long/road.jpg")
        await user.sends_location(home.latitude, home.longitude)
        await user.taps(t(NAMED))
        [thanks, _menu] = await user.taps(t(SUBMIT))
        second = REFERENCE.search(thanks.text).group()

        [mine, _menu] = await user.taps(t(MINE))
        assert first in mine.text and second in mine.text
        assert t(STATUS["received"]) in mine.text
        assert set(user.answers) == {200}

    rows = {r["reference"]: r async for r in export_rows(db, ExportFilter(), content)}
    assert set(rows) == {first, second}
    for row in rows.values():
        assert (row["channel"], row["language"]) == ("viber", lang)
        assert row["municipality"] == home.names["en"]
    assert rows[second]["media_ids"] == "https://dl-media.viber.com/1/share/2/long/road.jpg"
    assert rows[second]["name"] == "Nino"
