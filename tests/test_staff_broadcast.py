"""The staff broadcast in the chat beyond its texts: a picture or a link, an audience by
gender or age group, and stopping a broadcast from `/broadcast_status` or
`/broadcast_cancel`. The steps alone first (no database), then transcripts over the
stand-ins, in each language where the wording matters and in one where it does not."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.channels.viber import ViberChannel
from bot.engine.conversation import Conversation, State
from bot.outreach.due import DueWork
from bot.outreach.staff import add as add_staff
from bot.vocabulary.i18n import Translator
from bot.vocabulary.messages import Inbound, Kind, Reply
from flows import REGISTRY
from flows.content import load_content
from flows.core import BACK, SKIP, Context, Effect, Profile, StaffAction
from flows.menu import WHAT_NEXT
from flows.onboarding import AGREE, ENDONYMS, FEMALE, MALE
from flows.staff import CANCEL
from flows.staff_broadcast import (
    ATTACH,
    BY_AGE_GROUP,
    BY_GENDER,
    CANCEL_BROADCAST,
    CANCELLED_SCHEDULED,
    CANCELLED_SENDING,
    CONFIRM_SCHEDULED,
    CONFIRM_SENDING,
    DROPPED,
    EVERYONE,
    EXAMPLE_ADDRESS,
    LATER,
    LINK,
    NOT_AN_ADDRESS,
    NOT_CANCELLABLE,
    PICTURE,
    PICTURE_BY_ADDRESS,
    PICTURE_ENDINGS,
    PREVIEW,
    PROGRESS,
    QUEUED,
    SCHEDULED,
    SEND_NOW,
    STATES,
    WHEN,
    WHICH_AGE_GROUP,
    WHICH_GENDER,
    WHO,
    WRITE_TEXT,
    is_picture,
    web_address,
)
from flows.staff_events import YES_CANCEL
from tests.fakes.telegram_api import TelegramStandIn
from tests.fakes.viber_api import ViberStandIn
from tests.harness import TOKEN, ViberUser, onboard, quiet, running_khma, settings_for
from tests.harness import Resident as Phone
from tests.test_outreach_transcripts import HOME, LANGS, TITLES

PICTURE_URL = "https://cso.example.org/posters/water-meeting.JPG"
LINK_URL = "https://cso.example.org/news?id=17#water"
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def attach_prompt(t: Translator) -> str:
    return t(ATTACH, example=EXAMPLE_ADDRESS, formats=", ".join(PICTURE_ENDINGS))


# --- the steps alone ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "address", "picture"),
    [
        ("https://cso.example.org/a.jpg", "https://cso.example.org/a.jpg", True),
        ("http://cso.example.org/a/b.PNG?size=2", "http://cso.example.org/a/b.PNG?size=2", True),
        ("https://cso.example.org/a.webp", "https://cso.example.org/a.webp", True),
        ("https://cso.example.org/a.jpg.html", "https://cso.example.org/a.jpg.html", False),
        ("https://cso.example.org/?file=a.jpg", "https://cso.example.org/?file=a.jpg", False),
        ("HTTPS://cso.example.org", "HTTPS://cso.example.org", False),
        ("cso.example.org/a.jpg", None, None),
        ("ftp://cso.example.org/a.jpg", None, None),
        ("https://", None, None),
        ("https://cso.example.org/a poster.jpg", None, None),
        ("http://[::1", None, None),
    ],
)
def test_an_address_is_a_picture_a_link_or_neither(
    typed: str, address: str | None, picture: bool | None
) -> None:
    assert web_address(typed) == address
    if address is not None:
        assert is_picture(address) is picture


def test_viber_shows_a_jpeg_and_gets_a_webp_as_its_address() -> None:
    """Viber's picture messages show JPEG, PNG and GIF: a WebP (Telegram shows it) would
    arrive as a broken picture, so Viber residents get its address under the text."""
    channel = ViberChannel(settings_for(None, VIBER_TOKEN="not-sent-anywhere"), inbox=None)
    [jpeg] = channel._messages(Reply("Собрание", photo_id=PICTURE_URL))
    assert (jpeg["type"], jpeg["media"], jpeg["text"]) == ("picture", PICTURE_URL, "Собрание")
    assert "thumbnail" not in jpeg, "no thumbnail is no field, not null"
    webp = "https://cso.example.org/posters/water.webp"
    [text] = channel._messages(Reply("Собрание", photo_id=webp))
    assert (text["type"], text["text"]) == ("text", f"Собрание\n\n{webp}")


class Staff:
    """A staff member's turns through the conversation alone, the engine played by hand:
    each `StaffAction` is recorded and answered from `answers`."""

    def __init__(self, lang: str = "ru", **answers: Any) -> None:
        self.t = Translator(lang)
        self.state = State()
        self.answers = answers
        self.actions: list[StaffAction] = []
        self.ctx = Context(
            t=self.t,
            profile=Profile(channel="telegram", language=lang, consent=True, staff_role="staff"),
            now=NOW,
            content=load_content(),
        )

    async def _apply(self, effect: Effect, ctx: Context) -> None:
        assert isinstance(effect, StaffAction), effect
        self.actions.append(effect)
        ctx.facts["staff"] = self.answers[effect.name.replace(".", "_")]

    async def send(self, kind: Kind = Kind.TEXT, **fields: Any) -> list[Reply]:
        inbound = Inbound(channel="telegram", address="1", external_id="x", kind=kind, **fields)
        replies, state = await Conversation(REGISTRY, self._apply).turn(
            self.state, inbound, self.ctx
        )
        self.state = State.from_json(state.step, state.to_json())
        return [r for r in replies if not r.edit_message_id]

    async def says(self, text: str) -> list[Reply]:
        return await self.send(text=text)

    async def taps(self, choice: str) -> list[Reply]:
        return await self.send(Kind.BUTTON, payload=choice)


def preview(total: int) -> dict[str, Any]:
    """A `broadcast.preview` result as the chat's front end hands it to the flow."""
    return {
        "total": total,
        "per_channel": {"telegram": total},
        "fallback": {},
        "viber_outside_window": 0,
        "viber_price": 0.0,
        "quiet_hours": None,
    }


async def test_the_picture_step_says_what_it_needs_and_asks_again() -> None:
    staff = Staff("ru", broadcast_preview=preview(3), broadcast_create={"id": 5})
    [first] = await staff.says("/broadcast")
    assert first.text == staff.t(WRITE_TEXT, language=ENDONYMS["ka"])
    await staff.taps("skip")
    await staff.taps("skip")
    await staff.taps("skip")
    [ask] = await staff.says("Собрание в четверг.")
    assert ask.text == attach_prompt(staff.t)
    assert [b.label for row in ask.buttons for b in row] == [staff.t(SKIP)]
    [hint, again] = await staff.says("www.example.org/poster.jpg")
    assert hint.text == staff.t(NOT_AN_ADDRESS, scheme="https://")
    assert again == ask
    [hint, again] = await staff.send(Kind.PHOTO, media_id="AgAC-photo")
    assert hint.text == staff.t(PICTURE_BY_ADDRESS)
    assert again == ask
    [who] = await staff.says(PICTURE_URL)
    assert who.text == staff.t(WHO)
    [shown] = await staff.taps("everyone")
    assert staff.t(PICTURE, url=PICTURE_URL) in shown.text
    await staff.taps("now")
    created = staff.actions[-1]
    assert created.name == "broadcast.create"
    assert (created.args["photo"], created.args["link"]) == (PICTURE_URL, None)


async def test_gender_and_age_group_use_the_onboarding_answers() -> None:
    staff = Staff("ka", broadcast_preview=preview(0))
    await staff.says("/broadcast")
    await staff.says("ხვალ შეხვედრაა.")
    for _ in range(3):
        await staff.taps("skip")
    await staff.taps("skip")  # no picture or link
    [which] = await staff.taps("gender")
    assert which.text == staff.t(WHICH_GENDER)
    assert [b.label for row in which.buttons for b in row] == [staff.t(FEMALE), staff.t(MALE)]
    await staff.taps("female")
    assert staff.actions[-1].args["audience"] == {"genders": ["female"]}
    [dropped, _menu] = await staff.taps("cancel")
    assert dropped.text == staff.t(DROPPED)

    await staff.says("/broadcast")
    await staff.says("ხვალ შეხვედრაა.")
    for _ in range(4):
        await staff.taps("skip")
    [which] = await staff.taps("age_group")
    assert which.text == staff.t(WHICH_AGE_GROUP)
    assert [b.label for row in which.buttons for b in row] == [
        "<18",
        "18–29",
        "30–44",
        "45–59",
        "60+",
    ]
    await staff.taps("30_44")
    assert staff.actions[-1].args["audience"] == {"age_groups": ["30_44"]}


async def test_broadcast_cancel_asks_first_and_says_what_was_not_sent() -> None:
    sending = {
        "id": 7,
        "status": "sending",
        "send_at": NOW.isoformat(),
        "queued": 40,
        "sent": 60,
        "delivered": 55,
        "failed": 0,
        "unreachable": 1,
        "cancelled": 0,
    }
    staff = Staff(
        "hy",
        broadcast_progress=sending,
        broadcast_cancel={"id": 7, "was": "sending", "not_sent": 40},
    )
    [confirm] = await staff.says("/broadcast_cancel #7")
    assert confirm.text == staff.t(CONFIRM_SENDING, id=7, n=40)
    assert [b.label for row in confirm.buttons for b in row] == [
        staff.t(YES_CANCEL),
        staff.t(BACK),
    ]
    [progress] = await staff.taps("back")
    assert progress.text.startswith(
        staff.t(PROGRESS, **{**sending, "status": staff.t(STATES["sending"])})
    )
    [confirm] = await staff.taps("cancel")
    [stopped, _menu] = await staff.taps("yes")
    assert stopped.text == staff.t(CANCELLED_SENDING, id=7, n=40)
    assert [a.name for a in staff.actions] == [
        "broadcast.progress",
        "broadcast.progress",
        "broadcast.cancel",
    ]
    assert staff.actions[-1].args == {"id": 7}


async def test_a_step_stored_before_the_broadcast_moved_leads_to_the_menu() -> None:
    staff = Staff("az")
    staff.state = State("staff.confirm", {"text_ka": {"kind": "text", "text": "…"}})
    replies = await staff.taps("now")
    assert replies[-1].text == staff.t(WHAT_NEXT)
    assert staff.state.step == "menu.main" and not staff.actions


# --- transcripts ---------------------------------------------------------------------------


async def write_texts(staff: Phone, t: Translator, lang: str) -> None:
    """A broadcast with a text in the staff member's language only, up to the picture step."""
    await staff.says("/broadcast")
    for code in LANGS:
        answer = await (staff.says(TITLES[lang]) if code == lang else staff.taps(t(SKIP)))
    [ask] = answer
    assert ask.text == attach_prompt(t)


def numbers(text: str | None, says: Callable[[int], str]) -> list[int]:
    """The broadcast number in a message, wherever the language puts it (№5, #5, 5-ը)."""
    found = {int(n) for n in re.findall(r"\d+", text or "")}
    return [n for n in found if says(n) == text]


async def send_now(staff: Phone, t: Translator) -> int:
    """Send, and the number staff are told; staff are residents too, so the broadcast
    itself may reach them in the same breath."""
    answers = await staff.taps(t(SEND_NOW))
    [number] = [n for a in answers for n in numbers(a.text, lambda n: t(QUEUED, id=n))]
    return number


@pytest.mark.parametrize("lang", LANGS)
async def test_a_broadcast_with_a_picture_and_one_with_a_link(db, lang: str) -> None:
    async with (
        TelegramStandIn(token=TOKEN) as api,
        ViberStandIn() as viber,
        running_khma(db, api, viber=viber) as khma,
    ):
        async with db.transaction() as session:
            await add_staff(session, "telegram", "991", "Lali", "staff")
        lali = Phone(api, db, chat_id=991, language_code=lang, first_name="Lali")
        t = await onboard(lali, lang)
        resident = Phone(api, db, chat_id=901, language_code=lang)
        await onboard(resident, lang)
        armen = ViberUser(
            api=viber, db=db, khma=khma, user_id="viber-resident-0001=", language=lang
        )
        await armen.opens_chat()
        for label in (ENDONYMS[lang], HOME.names[lang], t(AGREE), t(SKIP), t(SKIP)):
            await armen.taps(label)

        await write_texts(lali, t, lang)
        [hint, again] = await lali.says("poster.jpg")
        assert hint.text == t(NOT_AN_ADDRESS, scheme="https://")
        assert again.text == attach_prompt(t)
        [who] = await lali.says(PICTURE_URL)
        assert who.text == t(WHO)
        [shown] = await lali.taps(t(EVERYONE))
        assert shown.text.startswith(t(PREVIEW, n=3, channels="Telegram 2, Viber 1"))
        assert t(PICTURE, url=PICTURE_URL) in shown.text
        await send_now(lali, t)
        await quiet(db, api)
        photo = api.sent_to(901)[-1]
        assert (photo.method, photo.params["photo"]) == ("sendPhoto", PICTURE_URL)
        assert photo.caption == TITLES[lang]
        picture = viber.sent_to(armen.user_id)[-1]
        assert (picture.type, picture.media, picture.text) == ("picture", PICTURE_URL, TITLES[lang])

        await write_texts(lali, t, lang)
        await lali.says(LINK_URL)
        [shown] = await lali.taps(t(EVERYONE))
        assert t(LINK, url=LINK_URL) in shown.text and PICTURE_URL not in shown.text
        await send_now(lali, t)
        await quiet(db, api)
        linked = api.sent_to(901)[-1]
        assert (linked.method, linked.text) == ("sendMessage", f"{TITLES[lang]}\n\n{LINK_URL}")
        text = viber.sent_to(armen.user_id)[-1]
        assert (text.type, text.text) == ("text", f"{TITLES[lang]}\n\n{LINK_URL}")


async def test_a_broadcast_to_women_reaches_only_women(db) -> None:
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        async with db.transaction() as session:
            await add_staff(session, "telegram", "991", "Lali", "staff")
        lali = Phone(api, db, chat_id=991, language_code="az", first_name="Lali")
        t = await onboard(lali, "az")
        woman = Phone(api, db, chat_id=901, language_code="az", first_name="Aynur")
        await onboard(woman, "az", gender=FEMALE)
        man = Phone(api, db, chat_id=902, language_code="az", first_name="Elvin")
        await onboard(man, "az", gender=MALE)

        await write_texts(lali, t, "az")
        await lali.taps(t(SKIP))
        [which] = await lali.taps(t(BY_GENDER))
        assert which.text == t(WHICH_GENDER)
        [shown] = await lali.taps(t(FEMALE))
        assert shown.text.startswith(t(PREVIEW, n=1, channels="Telegram 1"))
        await send_now(lali, t)
        await quiet(db, api)
        assert api.sent_to(901)[-1].text == TITLES["az"]
        assert api.sent_to(902)[-1].text == t(WHAT_NEXT), "the man got nothing after his menu"

        await write_texts(lali, t, "az")
        await lali.taps(t(SKIP))
        await lali.taps(t(BY_AGE_GROUP))
        [shown] = await lali.taps("30–44")
        assert shown.text.startswith(t(PREVIEW, n=0, channels="—")), "nobody told their age"
        [dropped, _menu] = await lali.taps(t(CANCEL))
        assert dropped.text == t(DROPPED)


async def test_a_scheduled_broadcast_cancelled_in_the_chat_never_arrives(db) -> None:
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api) as khma:
        async with db.transaction() as session:
            await add_staff(session, "telegram", "991", "Lali", "staff")
        lali = Phone(api, db, chat_id=991, language_code="ru", first_name="Lali")
        t = await onboard(lali, "ru")
        resident = Phone(api, db, chat_id=901, language_code="ru")
        await onboard(resident, "ru")

        await write_texts(lali, t, "ru")
        await lali.taps(t(SKIP))
        await lali.taps(t(EVERYONE))
        [when] = await lali.taps(t(LATER))
        assert when.text == t(WHEN)
        moment = (datetime.now(t.tz) + timedelta(days=2)).replace(
            hour=10, minute=0, second=0, microsecond=0
        )
        [planned, _menu] = await lali.says(f"{moment:%Y-%m-%d %H:%M}")
        [number] = numbers(planned.text, lambda n: t(SCHEDULED, id=n, when=t.datetime(moment)))

        [status] = await lali.says(f"/broadcast_status {number}")
        assert t(STATES["scheduled"]) in status.text
        assert t(SCHEDULED, id=number, when=t.datetime(moment)) in status.text
        assert status.button_texts == [t(CANCEL_BROADCAST), t(BACK)]
        [confirm] = await lali.taps(t(CANCEL_BROADCAST))
        assert confirm.text == t(CONFIRM_SCHEDULED, id=number, when=t.datetime(moment))
        [cancelled, _menu] = await lali.taps(t(YES_CANCEL))
        assert cancelled.text == t(CANCELLED_SCHEDULED, id=number)

        seen = len(api.sent_to(901))
        assert await DueWork(khma.db, khma.settings).run(moment + timedelta(minutes=1)) == 0
        khma.dispatcher.wake()
        await quiet(db, api)
        assert len(api.sent_to(901)) == seen, "nothing reached the resident"

        nothing = dict.fromkeys(("queued", "sent", "delivered", "failed", "unreachable"), 0)
        figures = t(PROGRESS, id=number, status=t(STATES["cancelled"]), cancelled=0, **nothing)
        [status, _menu] = await lali.says(f"/broadcast_status {number}")
        assert status.text == figures and not status.button_texts
        [refused, _menu] = await lali.says(f"/broadcast_cancel {number}")
        assert refused.text == figures + "\n\n" + t(NOT_CANCELLABLE, id=number)
