"""Staff manage events in the chat, in each language: a staff member creates an event, a
resident of its municipality registers from the menu, staff move it and then cancel it,
and the resident is told each time in their own language. A coordinator only reads."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.outreach import events
from bot.outreach.staff import add as add_staff
from bot.vocabulary.i18n import Translator
from bot.vocabulary.roles import can
from flows import notices
from flows.core import BACK, SKIP
from flows.events import COME, NONE_UPCOMING, RESULTS
from flows.menu import EVENTS, WHAT_NEXT
from flows.onboarding import ENDONYMS
from flows.staff import BAD_TIME
from flows.staff_events import (
    CANCEL_EVENT,
    CANCELLED,
    CANCELLING,
    CHANGE_TIME,
    CHECK,
    CONFIRM_CANCEL,
    CREATE,
    CREATED,
    EVENT_LINE,
    GOING,
    MOVED,
    MOVING,
    NEW_EVENT,
    NEW_TIME,
    NO_EVENTS,
    NO_TITLE_IN,
    NOT_OPEN,
    PICK_EVENT,
    PLACES,
    STARTS,
    WRITE_DESCRIPTION,
    WRITE_TITLE,
    YES_CANCEL,
)
from storage.models import Identity
from tests.fakes.telegram_api import TelegramStandIn
from tests.fakes.viber_api import ViberStandIn
from tests.harness import TOKEN, ViberUser, eventually, onboard, quiet, running_khma
from tests.harness import Resident as Phone
from tests.test_outreach_transcripts import HOME, LANGS, TITLES

ABOUT = {
    "ka": "მერიის წარმომადგენლები უპასუხებენ კითხვებს.",
    "az": "Bələdiyyə nümayəndələri sualları cavablandıracaq.",
    "hy": "Քաղաքապետարանի ներկայացուցիչները կպատասխանեն հարցերին։",
    "ru": "Представители мэрии ответят на вопросы.",
}
PLACE = "Marneuli library"
TBILISI = Translator("en").tz


def at(days: int, hour: int, minute: int = 0) -> datetime:
    """A Tbilisi hour some days from today. The bot runs on the real clock here, because
    the scheduler plans reminders on it, and we check that it learns of each change."""
    day = datetime.now(TBILISI) + timedelta(days=days)
    return day.replace(hour=hour, minute=minute, second=0, microsecond=0)


def typed(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M}"


def news_for(phone: Phone) -> list[str]:
    """What reached the resident on its own (not as an answer) since we last looked."""
    new = phone.api.sent_to(phone.chat_id)[phone.seen :]
    phone.seen += len(new)
    return [m.text or "" for m in new]


@pytest.mark.parametrize("lang", LANGS)
async def test_staff_create_move_and_cancel_an_event_in_the_chat(db, lang: str) -> None:
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api) as khma:
        async with db.transaction() as session:
            await add_staff(session, "telegram", "991", "Lali", "staff")
        resident = Phone(api, db, chat_id=901, language_code=lang)
        t = await onboard(resident, lang)
        lali = Phone(api, db, chat_id=991, language_code=lang, first_name="Lali")
        await onboard(lali, lang)

        # Staff create the event: a title in their language only, others fall back.
        [empty] = await lali.says("/events")
        assert empty.text == t(NO_EVENTS)
        assert empty.button_texts == [t(NEW_EVENT), t(BACK)]
        [ask] = await lali.taps(t(NEW_EVENT))
        assert ask.text == t(WRITE_TITLE, language=ENDONYMS["ka"])
        for code in LANGS:
            answer = await (lali.says(TITLES[lang]) if code == lang else lali.taps(t(SKIP)))
        [describe] = answer
        assert describe.text == t(WRITE_DESCRIPTION, language=ENDONYMS[lang]), "titled only"
        [when] = await lali.says(ABOUT[lang])
        assert when.text == t(STARTS)
        [bad, again] = await lali.says("2020-11-01 18:00")
        assert (bad.text, again.text) == (t(BAD_TIME), t(STARTS)), "the past is refused"
        starts = at(days=8, hour=18)
        await lali.says(typed(starts))
        await lali.says(PLACE)
        await lali.taps(HOME.names[lang])
        [summary] = await lali.says("1")  # one place, not the first button (Skip)
        assert summary.text.startswith(t(CHECK))
        assert f"{ENDONYMS[lang]}: {TITLES[lang]}" in summary.text
        assert t.datetime(starts) in summary.text and HOME.names[lang] in summary.text
        assert t(PLACES, n=1) in summary.text
        others = ", ".join(ENDONYMS[c] for c in LANGS if c != lang)
        assert t(NO_TITLE_IN, languages=others, fallback=ENDONYMS[lang]) in summary.text
        [created, _menu] = await lali.taps(t(CREATE))
        event_id = int(re.search(r"\d+", created.text).group())
        assert created.text == t(CREATED, id=event_id, events=t(EVENTS))
        reminders = [starts - timedelta(hours=24), starts - timedelta(hours=2)]
        await eventually(lambda: khma.scheduler.scheduled() == reminders)

        # A resident of that municipality finds it in the menu and registers.
        [listing] = await resident.taps(t(EVENTS))
        [detail] = await resident.taps(listing.button_texts[0])
        assert TITLES[lang] in detail.text and ABOUT[lang] in detail.text
        assert t.datetime(starts) in detail.text and PLACE in detail.text
        [registered, _menu] = await resident.taps(t(COME))
        assert registered.text == t(RESULTS["going"])

        # Staff move it (typing its number): the resident is told the new time.
        [listed] = await lali.says("/events")
        line = t(EVENT_LINE, id=event_id, title=TITLES[lang], when=t.datetime(starts), going=1)
        assert listed.text == f"{line}\n\n{t(PICK_EVENT)}"
        assert listed.button_texts == [f"#{event_id} {TITLES[lang]}", t(NEW_EVENT), t(BACK)]
        [card] = await lali.says(f"#{event_id}")
        assert TITLES[lang] in card.text and t(GOING, n=1) in card.text
        assert card.button_texts == [t(CHANGE_TIME), t(CANCEL_EVENT), t(BACK)]
        [ask_time] = await lali.taps(t(CHANGE_TIME))
        assert ask_time.text == t(NEW_TIME)
        moved = at(days=9, hour=19, minute=30)
        [done, _menu, result] = await lali.says(typed(moved))
        assert done.text == t(MOVING, id=event_id, when=t.datetime(moved))
        assert result.text == t(MOVED, id=event_id, when=t.datetime(moved), n=1), "when told"
        await quiet(db, api)
        told = t(notices.EVENT_MOVED, title=TITLES[lang], when=t.datetime(moved), place=PLACE)
        assert news_for(resident) == [told]
        assert typed(moved)[:10] not in told, "the date is written the way the language writes it"
        reminders = [moved - timedelta(hours=24), moved - timedelta(hours=2)]
        await eventually(lambda: khma.scheduler.scheduled() == reminders)

        # Staff cancel it (tapping it), after a confirmation: the resident is told.
        await lali.says("/events")
        await lali.taps(f"#{event_id} {TITLES[lang]}")
        [confirm] = await lali.taps(t(CANCEL_EVENT))
        assert confirm.text == t(CONFIRM_CANCEL, title=TITLES[lang], when=t.datetime(moved), n=1)
        [done, _menu, result] = await lali.taps(t(YES_CANCEL))
        assert done.text == t(CANCELLING, id=event_id)
        assert result.text == t(CANCELLED, id=event_id, n=1)
        await quiet(db, api)
        assert news_for(resident) == [
            t(notices.EVENT_CANCELLED, title=TITLES[lang], when=t.datetime(moved))
        ]
        await eventually(lambda: khma.scheduler.scheduled() == [])
        [gone, _menu] = await lali.says(f"/events {event_id}")
        assert gone.text == t(NOT_OPEN, id=event_id), "a cancelled event stays cancelled"
        [nothing, _menu] = await resident.taps(t(EVENTS))
        assert nothing.text == t(NONE_UPCOMING)


async def test_a_coordinator_on_viber_sees_events_but_cannot_manage_them(db) -> None:
    t = Translator("ru")
    async with ViberStandIn() as api, running_khma(db, viber=api) as khma:
        async with db.transaction() as session:
            await add_staff(session, "viber", "coordinator-01234567A=", "Tamar", "coordinator")
            event = await events.create(
                session,
                titles={"ru": "Встреча о воде"},
                starts_at=datetime.now(UTC) + timedelta(days=3),
                place=PLACE,
                municipality="marneuli",
                now=datetime.now(UTC),
            )
        tamar = ViberUser(api, db, khma, user_id="coordinator-01234567A=", language="ru")
        await onboard(tamar, "ru")

        [listed, menu] = await tamar.says("/events")
        line = t(
            EVENT_LINE,
            id=event.id,
            title="Встреча о воде",
            when=t.datetime(event.starts_at),
            going=0,
        )
        assert listed.text == line and menu.text == t(WHAT_NEXT), "a list, and no buttons"
        assert t(NEW_EVENT) not in menu.button_texts
        [again, _menu] = await tamar.says(f"/events {event.id}")
        assert again.text == line, "a number does not open the event either"
        async with db.transaction() as session:
            step = await session.scalar(
                select(Identity.flow_step).where(Identity.address == "coordinator-01234567A=")
            )
        assert step == "menu.main"
    for operation in ("event.create", "event.move", "event.cancel", "event.load"):
        assert not can("coordinator", operation), "the operation refuses it too"
        assert can("staff", operation)
