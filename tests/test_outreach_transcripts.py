"""Outreach as residents and staff live it, in each language: RSVP and reminders,
campaign follow and updates, a status change and its follow-up, a staff /broadcast."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from bot.outreach import campaigns, events
from bot.outreach.due import DueWork
from bot.outreach.export import ExportFilter, export_rows
from bot.outreach.staff import add as add_staff
from flows import notices
from flows.campaigns import FOLLOWED, UNFOLLOW, UNFOLLOWED
from flows.content import load_content
from flows.core import SKIP
from flows.events import CHOOSE as EVENT_CHOICE
from flows.events import COME, RESULTS
from flows.followup import REOPENED, THANKS
from flows.menu import CAMPAIGNS, EVENTS, REPORT, WHAT_NEXT
from flows.mine import STATUS
from flows.report import ANONYMOUS, CATEGORY_LABELS, SUBMIT
from flows.staff import NEW_STATUS, STATUS_SET
from flows.staff_broadcast import EVERYONE, PREVIEW, QUEUED, SEND_NOW, WHO
from storage.models import Report
from tests.fakes.telegram_api import TelegramStandIn
from tests.harness import TOKEN, onboard, quiet, running_khma
from tests.harness import Resident as Phone

LANGS = ("ka", "az", "hy", "ru")
HOME = load_content().municipality("marneuli")
TITLES = {
    "ka": "საჯარო შეხვედრა წყალზე",
    "az": "Su barədə ictimai görüş",
    "hy": "Հանրային հանդիպում ջրի մասին",
    "ru": "Общественная встреча о воде",
}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def due(khma, api, clock: Clock) -> None:
    """What the scheduler does at this moment: due work becomes messages, then sent."""
    await DueWork(khma.db, khma.settings).run(clock())
    khma.dispatcher.wake()
    await quiet(khma.db, api)


@pytest.mark.parametrize("lang", LANGS)
async def test_rsvp_reminders_and_a_moved_event(db, lang: str) -> None:
    clock = Clock()
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api, clock=clock) as khma:
        starts = clock.now + timedelta(hours=30)
        async with db.transaction() as session:
            event = await events.create(
                session,
                titles=TITLES,
                starts_at=starts,
                place="Marneuli library",
                municipality="marneuli",
                now=clock.now,
            )
        phone = Phone(api, db, chat_id=901, language_code=lang)
        t = await onboard(phone, lang)
        [listing] = await phone.taps(t(EVENTS))
        assert listing.text == t(EVENT_CHOICE)
        [detail] = await phone.taps(listing.button_texts[0])
        assert TITLES[lang] in detail.text and t.datetime(starts) in detail.text
        [registered, _menu] = await phone.taps(t(COME))
        assert registered.text == t(RESULTS["going"])

        clock.now = starts - timedelta(hours=23, minutes=59)
        await due(khma, api, clock)
        [reminder] = api.sent_to(901)[phone.seen :]
        phone.seen += 1
        assert reminder.text == t(
            notices.REMINDER, title=TITLES[lang], when=t.datetime(starts), place="Marneuli library"
        )
        await due(khma, api, clock)
        assert len(api.sent_to(901)) == phone.seen, "each reminder fires once"

        moved = starts + timedelta(days=1)
        async with db.transaction() as session:
            await events.change(
                session,
                event.id,
                now=clock.now,
                fallback=("ka",),
                tz_name="Asia/Tbilisi",
                starts_at=moved,
            )
        khma.dispatcher.wake()
        await quiet(db, api)
        [change] = api.sent_to(901)[phone.seen :]
        phone.seen += 1
        assert change.text == t(
            notices.EVENT_MOVED,
            title=TITLES[lang],
            when=t.datetime(moved),
            place="Marneuli library",
        )

        [cancelled, _menu] = await phone.taps(t(notices.CANCEL_RSVP))
        assert cancelled.text == t(RESULTS["cancelled"])
        clock.now = moved - timedelta(hours=1)
        await due(khma, api, clock)
        assert len(api.sent_to(901)) == phone.seen, "no reminder after cancelling"


@pytest.mark.parametrize("lang", LANGS)
async def test_following_a_campaign_from_a_poster_and_getting_updates(db, lang: str) -> None:
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api) as khma:
        async with db.transaction() as session:
            await campaigns.create(
                session, code="clean-water", titles=TITLES, now=datetime.now(UTC)
            )
        phone = Phone(api, db, chat_id=902, language_code=lang)
        t = await onboard(phone, lang)
        [followed, _menu] = await phone.says("/start campaign-clean-water")
        assert followed.text == t(FOLLOWED, title=TITLES[lang])

        news = {"ka": "მერიამ ახალი მილები დაამტკიცა.", "ru": "Мэрия утвердила новые трубы."}
        async with db.transaction() as session:
            queued = await campaigns.post_update(
                session,
                "clean-water",
                news,
                now=datetime.now(UTC),
                fallback=("ka", "ru"),
                tz_name="Asia/Tbilisi",
                update_id="u1",
            )
        assert queued == 1
        khma.dispatcher.wake()
        await quiet(db, api)
        [update] = api.sent_to(902)[phone.seen :]
        phone.seen += 1
        expected = news.get(lang) or news["ka"]
        assert update.text == t(notices.CAMPAIGN_UPDATE, campaign=TITLES[lang], text=expected)

        [listing] = await phone.taps(t(CAMPAIGNS))
        await phone.taps(listing.button_texts[0])
        [unfollowed, _menu] = await phone.taps(t(UNFOLLOW))
        assert unfollowed.text == t(UNFOLLOWED, title=TITLES[lang])


@pytest.mark.parametrize("lang", LANGS)
async def test_a_status_change_is_told_and_a_fix_is_checked_weeks_later(db, lang: str) -> None:
    clock = Clock()
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api, clock=clock) as khma:
        async with db.transaction() as session:
            await add_staff(session, "telegram", "990", "Nana", "staff")
        resident = Phone(api, db, chat_id=903, language_code=lang)
        t = await onboard(resident, lang)
        await resident.taps(t(REPORT))
        await resident.taps(t(CATEGORY_LABELS["roads"]))
        await resident.says("Road to the school is broken / ყველაფერი დაზიანებულია")
        await resident.taps(t(SKIP))
        await resident.taps(t(ANONYMOUS))
        [thanks, _menu] = await resident.taps(t(SUBMIT))
        reference = re.search(r"KV-\d{4}-\d{6}", thanks.text).group()

        nana = Phone(api, db, chat_id=990, language_code="ka", first_name="Nana")
        ka = await onboard(nana, "ka")
        [choose] = await nana.says(f"/status {reference}")
        assert choose.text == ka(NEW_STATUS, reference=reference)
        [done, _menu] = await nana.taps(ka(STATUS["resolved"]))
        assert done.text == ka(STATUS_SET, reference=reference, status=ka(STATUS["resolved"]))
        await quiet(db, api)
        [told] = api.sent_to(903)[resident.seen :]
        resident.seen += 1
        assert told.text == t(
            notices.STATUS_CHANGED, reference=reference, status=t(STATUS["resolved"])
        )

        clock.now += timedelta(weeks=4, minutes=1)
        await due(khma, api, clock)
        [question] = api.sent_to(903)[resident.seen :]
        resident.seen += 1
        assert question.text == t(notices.FOLLOWUP, reference=reference)
        [reopened, _menu] = await resident.taps(t(notices.NO))
        assert reopened.text == t(THANKS, reference=reference) + " " + t(REOPENED)
        await due(khma, api, clock)
        assert len(api.sent_to(903)) == resident.seen, "the question is asked once"

    rows = [row async for row in export_rows(db, ExportFilter(), load_content())]
    assert [(r["reference"], r["status"], r["followup"]) for r in rows] == [
        (reference, "in_review", "no")
    ]


@pytest.mark.parametrize("lang", LANGS)
async def test_staff_broadcast_in_the_chat(db, lang: str) -> None:
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        async with db.transaction() as session:
            await add_staff(session, "telegram", "991", "Lali", "staff")
        readers = {
            code: Phone(api, db, chat_id=910 + i, language_code=code)
            for i, code in enumerate(LANGS)
        }
        for code, phone in readers.items():
            await onboard(phone, code)
        lali = Phone(api, db, chat_id=991, language_code=lang, first_name="Lali")
        t = await onboard(lali, lang)
        await lali.says("/broadcast")
        await lali.says("ხვალ 10:00-ზე საჯარო შეხვედრაა.")
        await lali.taps(t(SKIP))
        await lali.taps(t(SKIP))
        await lali.says("Завтра в 10:00 общественная встреча.")
        [who] = await lali.taps(t(SKIP))
        assert who.text == t(WHO)
        [preview] = await lali.taps(t(EVERYONE))
        assert preview.text.startswith(t(PREVIEW, n=5, channels="Telegram 5"))
        answers = await lali.taps(t(SEND_NOW))
        queued = {
            a.text
            for a in answers
            for number in re.findall(r"\d+", a.text or "")
            if a.text == t(QUEUED, id=number)
        }
        assert len(queued) == 1, [a.text for a in answers]
        await quiet(db, api)
        assert readers["ka"].api.sent_to(910)[-1].text == "ხვალ 10:00-ზე საჯარო შეხვედრაა."
        assert api.sent_to(913)[-1].text == "Завтра в 10:00 общественная встреча."
        assert api.sent_to(911)[-1].text == "ხვალ 10:00-ზე საჯარო შეხვედრაა.", "az falls back"

        nobody = Phone(api, db, chat_id=920, language_code=lang)
        await onboard(nobody, lang)
        [menu] = await nobody.says("/broadcast")
        assert menu.text == t(WHAT_NEXT), "residents just get the menu"
    async with db.transaction() as session:
        from sqlalchemy import func, select

        assert await session.scalar(select(func.count()).select_from(Report)) == 0
