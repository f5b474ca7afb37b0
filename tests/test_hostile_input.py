"""What residents' phones (and people pretending to be them) can send, at the platforms'
documented maxima and beyond: every case is answered, stored once, and nothing fails on
either database. PostgreSQL enforces column lengths and refuses NUL characters and
NaN in JSON, which SQLite lets through, so each test runs on both."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from bot.engine.effects import LINK_ATTEMPTS
from bot.outreach import loop
from bot.vocabulary.messages import LIMITS, Inbound, Kind
from flows.core import CANNOT_USE, MEDIA_NAMES, SKIP
from flows.menu import MINE, REPORT, SETTINGS, WHAT_NEXT
from flows.privacy import ERASED, FIELD_ACCOUNT, YES_DELETE
from flows.report import ANONYMOUS, CATEGORY_LABELS, SUBMIT
from flows.settings import ENTER_CODE, LINK, NOT_LINKED, SHOW_CODE, TOO_MANY_CODES
from storage import models
from storage.models import Identity, InboxEvent, OutboxMessage, Report
from tests.fakes.telegram_api import TelegramStandIn
from tests.harness import TOKEN, Resident, onboard, quiet, running_khma

LONG_FIRST = "Ә" * 64
LONG_LAST = "Ж" * 64


@pytest.fixture
def last_names(monkeypatch: pytest.MonkeyPatch) -> dict[int, str]:
    """Telegram users with a last name too (the stand-in's users have only a first name)."""
    names: dict[int, str] = {}
    original = TelegramStandIn._user

    def with_last_name(chat_id: int, first_name: str, language_code: str) -> dict:
        user = original(chat_id, first_name, language_code)
        if chat_id in names:
            user["last_name"] = names[chat_id]
        return user

    monkeypatch.setattr(TelegramStandIn, "_user", staticmethod(with_last_name))
    return names


async def failed_events(db) -> int:
    async with db.transaction() as session:
        return await session.scalar(
            select(func.count()).select_from(InboxEvent).where(InboxEvent.status != "done")
        )


async def forged_tap(phone: Resident, data: str) -> list:
    """A callback with any data under the bot's latest message, as a modified client sends."""
    phone.api.callback_update(phone.chat_id, data, **phone._who())
    return await phone._answer()


async def submit_report(phone: Resident, t, text: str) -> str:
    await phone.taps(t(REPORT))
    await phone.taps(t(CATEGORY_LABELS["roads"]))
    await phone.says(text)
    await phone.taps(t(SKIP))
    await phone.taps(t(ANONYMOUS))
    [thanks, _menu] = await phone.taps(t(SUBMIT))
    return re.search(r"KV-\d{4}-\d{6}", thanks.text).group()


async def test_names_of_64_and_64_characters_consent_and_keep_every_command(db, last_names) -> None:
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        longest = Resident(api, db, chat_id=701, language_code="az", first_name=LONG_FIRST)
        last_names[701] = LONG_LAST
        t = await onboard(longest, "az")
        [mydata] = (await longest.says("/mydata"))[:1]
        name = f"{LONG_FIRST} {LONG_LAST}"[: LIMITS.display_name]
        assert t(FIELD_ACCOUNT, channel="Telegram", name=name) in mydata.text

        growing = Resident(api, db, chat_id=702, language_code="ru", first_name="Ира")
        ru = await onboard(growing, "ru")
        growing.first_name, last_names[702] = LONG_FIRST, LONG_LAST
        [menu] = await growing.says("/menu")
        assert menu.text == ru(WHAT_NEXT)
        assert (await growing.says("/mydata"))[0].text.count(LONG_FIRST) == 1
        await growing.says("/delete")
        [erased, *_] = await growing.taps(ru(YES_DELETE))
        assert erased.text == ru(ERASED)
        assert await failed_events(db) == 0


async def test_a_long_language_code_nul_characters_and_an_infinite_location(db) -> None:
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        phone = Resident(api, db, chat_id=703, language_code="x" * 40)
        t = await onboard(phone, "ka")
        reference = await submit_report(phone, t, "გზა\x00 დაზიანებულია\x00")
        async with db.transaction() as session:
            report = await session.scalar(select(Report).where(Report.reference == reference))
            identity = await session.scalar(select(Identity))
        assert report.text == "გზა დაზიანებულია"
        assert identity.platform_language is None, "40 letters are no language tag"

        await phone.taps(t(REPORT))
        await phone.taps(t(CATEGORY_LABELS["roads"]))
        await phone.says("ორმოები")
        update = api.location_update(703, 41.4, 44.8, first_name="Nino", queue=False)
        update["message"]["location"]["latitude"] = float("inf")
        api.push_update(update)
        [hint] = await phone._answer()
        assert hint.text.startswith(t(CANNOT_USE, what=t(MEDIA_NAMES[Kind.OTHER])))
        assert await failed_events(db) == 0


@pytest.mark.parametrize(
    "data",
    [
        "page:²",
        "page:99999999999999999999999",
        "fu:no:²",
        "fu:no:" + "9" * 30,
        "ev:leave:²",
        "ev:leave:18446744073709551616",
        "ev:leave:٣",
    ],
)
async def test_forged_numbers_in_buttons_are_refused_not_raised(db, data: str) -> None:
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        phone = Resident(api, db, chat_id=704, language_code="hy")
        t = await onboard(phone, "hy")
        answer = await forged_tap(phone, data)
        assert answer, "the resident is answered"
        assert answer[-1].text == t(WHAT_NEXT) or answer[-1].buttons
        assert await failed_events(db) == 0


async def test_a_forged_follow_up_answer_reopens_nothing(db) -> None:
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api) as khma:
        phone = Resident(api, db, chat_id=705, language_code="az")
        t = await onboard(phone, "az")
        reference = await submit_report(phone, t, "Yol xarabdır")

        async def status_now(status: str | None = None) -> Report:
            async with db.transaction() as session:
                if status:
                    await loop.set_status(
                        session, reference, status, now=khma.engine.clock(), tz_name="Asia/Tbilisi"
                    )
                return await session.scalar(select(Report).where(Report.reference == reference))

        report = await status_now("closed")
        await forged_tap(phone, f"fu:no:{report.id}")
        assert (await status_now()).status == "closed", "closed by staff, never asked"
        await status_now("resolved")
        await forged_tap(phone, f"fu:no:{report.id}")
        assert (await status_now()).status == "resolved", "resolved, but not asked yet"
        assert (await status_now()).followup_answer is None


async def test_link_codes_allow_a_few_tries_an_hour_and_only_from_the_other_app(db) -> None:
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        owner = Resident(api, db, chat_id=706, language_code="ka")
        t = await onboard(owner, "ka")
        await owner.taps(t(SETTINGS))
        await owner.taps(t(LINK))
        [shown, _menu] = await owner.taps(t(SHOW_CODE))
        code = re.search(r"\b\d{6}\b", shown.text).group()

        guesser = Resident(api, db, chat_id=707, language_code="ka")
        await onboard(guesser, "ka")

        async def types(typed: str) -> str:
            await guesser.taps(t(SETTINGS))
            await guesser.taps(t(LINK))
            await guesser.taps(t(ENTER_CODE))
            [answer, *_] = await guesser.says(typed)
            return answer.text

        assert await types(code) == t(NOT_LINKED), "a Telegram code works only in Viber"
        for guess in range(LINK_ATTEMPTS - 1):
            assert await types(f"{guess:06d}") == t(NOT_LINKED)
        assert await types(code) == t(TOO_MANY_CODES, n=60)
        async with db.transaction() as session:
            residents = {i.resident_id for i in (await session.scalars(select(Identity)))}
        assert len(residents) == 2, "nobody was joined"
        await guesser.taps(t(MINE))
        assert await failed_events(db) == 0


async def test_blocking_in_telegram_marks_the_resident_unreachable_at_once(db) -> None:
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        phone = Resident(api, db, chat_id=708, language_code="ru")
        await onboard(phone, "ru")

        def member(status: str) -> None:
            bot = {"id": 123456, "is_bot": True, "first_name": "Khma", "username": "khma_bot"}
            api.push_update(
                {
                    "my_chat_member": {
                        "chat": {"id": 708, "type": "private", "first_name": "Nino"},
                        "from": {"id": 708, "is_bot": False, "first_name": "Nino"},
                        "date": 1767225600,
                        "old_chat_member": {"user": bot, "status": "member"},
                        "new_chat_member": {"user": bot, "status": status, "until_date": 0}
                        if status == "kicked"
                        else {"user": bot, "status": status},
                    }
                }
            )

        async def unreachable() -> bool:
            await quiet(db, api)
            async with db.transaction() as session:
                identity = await session.scalar(select(Identity))
                return identity.unreachable_at is not None

        async with db.transaction() as session:
            later = OutboxMessage(
                channel="telegram",
                address="708",
                kind="broadcast",
                payload={"text": "Tomorrow"},
                next_attempt_at=datetime.now(UTC) + timedelta(hours=1),
            )
            session.add(later)
        member("kicked")
        assert await unreachable()
        async with db.transaction() as session:
            assert (await session.get(OutboxMessage, later.id)).status == "unreachable"
        member("member")
        assert not await unreachable()
        assert await failed_events(db) == 0


async def test_only_a_real_duplicate_counts_as_one(db) -> None:
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api) as khma:
        event = Inbound("telegram", "709", "5", Kind.TEXT, text="Salam")
        assert await khma.engine.accept(event) is True
        assert await khma.engine.accept(event) is False
        broken = Inbound("telegram", None, "6", Kind.TEXT, text="Salam")  # type: ignore[arg-type]
        with pytest.raises(IntegrityError):
            await khma.engine.accept(broken)


def test_storage_holds_every_field_as_long_as_the_adapters_let_it_be() -> None:
    columns = {
        "address": [models.Identity.address, models.InboxEvent.address, OutboxMessage.address],
        "external_id": [models.InboxEvent.external_id],
        "display_name": [models.Identity.display_name, Report.shared_name],
        "platform_language": [models.Identity.platform_language],
    }
    for field, found in columns.items():
        for column in found:
            assert column.type.length >= getattr(LIMITS, field), (field, column)
