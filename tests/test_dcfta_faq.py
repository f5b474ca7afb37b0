"""Residents' own DCFTA questions become answers for their neighbours, in each language:
a resident asks, staff answer and add the question to the FAQ, and the next resident
who reads that language finds it while browsing, even after the asker erased their
data; a resident of another language does not."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from bot.outreach.staff import add as add_staff
from flows import notices
from flows.content import load_content
from flows.core import BACK
from flows.dcfta import ASK_OWN, FROM_RESIDENTS, TOPICS
from flows.menu import DCFTA
from flows.privacy import ERASED, YES_DELETE
from flows.staff import ADD_TO_FAQ, ANSWER_SENT, PROMOTED, WRITE_ANSWER
from storage.models import FaqEntry, Report
from tests.fakes.telegram_api import TelegramStandIn
from tests.harness import TOKEN, onboard, running_khma
from tests.harness import Resident as Phone

LANGS = ("ka", "az", "hy", "ru")
CONTENT = load_content()
HOME = CONTENT.municipality("marneuli")
ORIGIN = CONTENT.topic("origin")
STATIC_TOPICS = [topic.title for topic in CONTENT.topics]

# Asked straight from the list of topics, so it belongs to no topic.
GENERAL = {
    "ka": "შემიძლია თხილი ევროკავშირში კომპანიის გარეშე გავყიდო?",
    "az": "Şirkətim olmadan fındığı Aİ-yə sata bilərəmmi?",
    "hy": "Կարո՞ղ եմ առանց ընկերության պնդուկ վաճառել ԵՄ-ում։",
    "ru": "Можно ли продавать фундук в ЕС без своей компании?",
}
GENERAL_ANSWER = {
    "ka": "დიახ, ინდივიდუალურ მეწარმედ რეგისტრაციაც საკმარისია.",
    "az": "Bəli, fərdi sahibkar kimi qeydiyyat kifayətdir.",
    "hy": "Այո, բավական է գրանցվել որպես անհատ ձեռնարկատեր։",
    "ru": "Да, достаточно зарегистрироваться индивидуальным предпринимателем.",
}
# Asked while reading "Certificates of origin", so it is filed there.
ON_ORIGIN = {
    "ka": "მარნეულში სად შემიძლია EUR.1 სერტიფიკატის აღება?",
    "az": "Marneulidə EUR.1 sertifikatını haradan ala bilərəm?",
    "hy": "Որտե՞ղ կարող եմ ստանալ EUR.1 սերտիֆիկատ Մառնեուլիում։",
    "ru": "Где в Марнеули получить сертификат EUR.1?",
}
ON_ORIGIN_ANSWER = {
    "ka": "შემოსავლების სამსახურის სერვისცენტრში, განცხადების საფუძველზე.",
    "az": "Gəlirlər Xidmətinin xidmət mərkəzində, ərizə əsasında.",
    "hy": "Եկամուտների ծառայության սպասարկման կենտրոնում՝ դիմումի հիման վրա։",
    "ru": "В сервисном центре Службы доходов, по заявлению.",
}


def reference_in(text: str | None) -> str:
    found = re.search(r"DQ-\d{4}-\d{6}", text or "")
    assert found, text
    return found.group()


@pytest.mark.parametrize("lang", LANGS)
async def test_an_answered_question_added_to_the_faq_helps_the_neighbours(db, lang: str) -> None:
    other = LANGS[(LANGS.index(lang) + 1) % len(LANGS)]
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        async with db.transaction() as session:
            await add_staff(session, "telegram", "990", "Nana", "staff")

        asker = Phone(api, db, chat_id=930, language_code=lang)
        t = await onboard(asker, lang)
        [topics] = await asker.taps(t(DCFTA))
        assert topics.text == t(TOPICS)
        assert t(FROM_RESIDENTS) not in topics.button_texts, "nothing is promoted yet"
        await asker.taps(t(ASK_OWN))
        [asked, _menu] = await asker.says(GENERAL[lang])
        general = reference_in(asked.text)
        await asker.taps(t(DCFTA))
        await asker.taps(ORIGIN.title[lang])
        await asker.taps(t(BACK))
        await asker.taps(t(ASK_OWN))
        [asked, _menu] = await asker.says(ON_ORIGIN[lang])
        on_origin = reference_in(asked.text)

        nana = Phone(api, db, chat_id=990, language_code="ka", first_name="Nana")
        ka = await onboard(nana, "ka")
        answered = (
            (general, GENERAL[lang], GENERAL_ANSWER[lang]),
            (on_origin, ON_ORIGIN[lang], ON_ORIGIN_ANSWER[lang]),
        )
        for reference, question, answer in answered:
            [write] = await nana.says(f"/answer {reference}")
            assert write.text == ka(WRITE_ANSWER, reference=reference, question=question)
            [sent] = await nana.says(answer)
            assert sent.text == ka(ANSWER_SENT, reference=reference)
            [promoted, _menu] = await nana.taps(ka(ADD_TO_FAQ))
            assert promoted.text == ka(PROMOTED)
        told = [m.text for m in api.sent_to(930)[asker.seen :]]
        assert told == [
            t(notices.ANSWERED, reference=general, answer=GENERAL_ANSWER[lang]),
            t(notices.ANSWERED, reference=on_origin, answer=ON_ORIGIN_ANSWER[lang]),
        ]
        # The asker's right to erasure covers their account and reports; the questions
        # staff chose to share stay shared.
        asker.seen = len(api.sent_to(930))
        await asker.says("/delete")
        [erased] = await asker.taps(t(YES_DELETE))
        assert erased.text == t(ERASED)

        neighbour = Phone(api, db, chat_id=931, language_code=lang, first_name="Lela")
        await onboard(neighbour, lang)
        [topics] = await neighbour.taps(t(DCFTA))
        assert topics.button_texts == [
            *(title[lang] for title in STATIC_TOPICS),
            t(FROM_RESIDENTS),
            t(ASK_OWN),
            t(BACK),
        ]
        [listing] = await neighbour.taps(ORIGIN.title[lang])
        assert listing.button_texts == [
            *(question.question[lang] for question in ORIGIN.questions),
            ON_ORIGIN[lang],
            t(BACK),
        ]
        [shown, again] = await neighbour.taps(ON_ORIGIN[lang])
        assert shown.text == f"{ON_ORIGIN[lang]}\n\n{ON_ORIGIN_ANSWER[lang]}"
        assert again.text == listing.text
        await neighbour.taps(t(BACK))
        [theirs] = await neighbour.taps(t(FROM_RESIDENTS))
        assert theirs.button_texts == [GENERAL[lang], t(BACK)]
        [shown, _again] = await neighbour.taps(GENERAL[lang])
        assert shown.text == f"{GENERAL[lang]}\n\n{GENERAL_ANSWER[lang]}"

        stranger = Phone(api, db, chat_id=932, language_code=other, first_name="Anna")
        o = await onboard(stranger, other)
        [topics] = await stranger.taps(o(DCFTA))
        assert topics.button_texts == [
            *(title[other] for title in STATIC_TOPICS),
            o(ASK_OWN),
            o(BACK),
        ], "questions asked in another language are not offered"
        [listing] = await stranger.taps(ORIGIN.title[other])
        assert listing.button_texts == [
            *(question.question[other] for question in ORIGIN.questions),
            o(BACK),
        ]
    async with db.transaction() as session:
        reports = (await session.execute(select(Report))).scalars().all()
        assert {r.resident_id for r in reports} == {None}, "the asker's reports are anonymised"
        entries = (await session.execute(select(FaqEntry))).scalars().all()
        assert {e.report_id for e in entries} == {r.id for r in reports}
