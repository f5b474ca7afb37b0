"""One person, two apps: a code shown in Telegram, typed in Viber, joins them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from bot.vocabulary.i18n import Translator
from flows.content import load_content
from flows.core import SKIP
from flows.menu import MINE, REPORT, SETTINGS
from flows.onboarding import AGREE, ENDONYMS
from flows.report import ANONYMOUS, CATEGORY_LABELS, SUBMIT
from flows.settings import ENTER_CODE, LINK, LINKED, NOT_LINKED, SHOW_CODE, TYPE_CODE
from storage.models import Identity, Resident
from tests.fakes.telegram_api import TelegramStandIn
from tests.fakes.viber_api import ViberStandIn
from tests.harness import TOKEN, ViberUser, running_khma
from tests.harness import Resident as Phone

PLACE = load_content().municipality("bolnisi")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def onboard(person, lang: str) -> Translator:
    t = Translator(lang)
    await person.taps(ENDONYMS[lang])
    await person.taps(PLACE.names[lang])
    await person.taps(t(AGREE))
    await person.taps(t(SKIP))
    await person.taps(t(SKIP))
    return t


async def report(person, t: Translator, text: str) -> str:
    await person.taps(t(REPORT))
    await person.taps(t(CATEGORY_LABELS["jobs"]))
    await person.says(text)
    await person.taps(t(SKIP))
    await person.taps(t(ANONYMOUS))
    [thanks, _menu] = await person.taps(t(SUBMIT))
    return re.search(r"KV-\d{4}-\d{6}", thanks.text).group()


async def code_from(person, t: Translator) -> str:
    await person.taps(t(SETTINGS))
    await person.taps(t(LINK))
    [shown, _menu] = await person.taps(t(SHOW_CODE))
    return re.search(r"\b\d{6}\b", shown.text).group()


async def type_code(person, t: Translator, code: str) -> list:
    await person.taps(t(SETTINGS))
    await person.taps(t(LINK))
    [prompt] = await person.taps(t(ENTER_CODE))
    assert prompt.text == t(TYPE_CODE)
    return await person.says(code)


async def test_linking_telegram_and_viber_shows_both_reports_on_either(db) -> None:
    clock = Clock()
    async with (
        TelegramStandIn(token=TOKEN) as telegram,
        ViberStandIn() as viber,
        running_khma(db, telegram, viber=viber, clock=clock) as khma,
    ):
        nino = Phone(telegram, db, chat_id=801, language_code="ka")
        await nino.says("/start")
        ka = await onboard(nino, "ka")
        on_telegram = await report(nino, ka, "სამუშაო ადგილები არ არის.")

        same_nino = ViberUser(viber, db, khma, "nino-viber-id==", language="ru")
        await same_nino.opens_chat()
        ru = await onboard(same_nino, "ru")
        on_viber = await report(same_nino, ru, "Нет работы для молодёжи.")

        code = await code_from(nino, ka)
        clock.now += timedelta(minutes=9)
        [linked, _menu] = await type_code(same_nino, ru, code)
        assert linked.text == ka(LINKED), "the profile of the app that showed the code wins"

        for person in (same_nino, nino):
            [mine, _menu] = await person.taps(ka(MINE))
            assert on_telegram in mine.text and on_viber in mine.text

        stranger = ViberUser(viber, db, khma, "someone-else==", language="az")
        await stranger.opens_chat()
        az = await onboard(stranger, "az")
        [refused, _menu] = await type_code(stranger, az, code)
        assert refused.text == az(NOT_LINKED), "a code works once"

        late = await code_from(nino, ka)
        clock.now += timedelta(minutes=11)
        [refused, _menu] = await type_code(stranger, az, late)
        assert refused.text == az(NOT_LINKED), "a code expires after 10 minutes"

    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Resident)) == 2
        owners = {
            i.channel + ":" + i.address: i.resident_id
            for i in (await session.execute(select(Identity))).scalars()
        }
    assert owners["telegram:801"] == owners["viber:nino-viber-id=="]
