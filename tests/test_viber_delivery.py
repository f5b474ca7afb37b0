"""Sending to Viber: rich keyboards that stay readable, long texts, and Viber's answers."""

from __future__ import annotations

import logging
import re

from sqlalchemy import select

from bot.channels.viber import keyboard
from bot.vocabulary.i18n import Translator
from bot.vocabulary.messages import Button, Reply
from flows.content import load_content
from flows.onboarding import ENDONYMS, MUNICIPALITY
from storage.models import Identity, OutboxMessage
from tests.fakes.viber_api import ViberStandIn
from tests.harness import ViberUser, quiet, running_khma

USER = "pqR3stUvWxYz0123456789=="


def test_long_labels_get_a_row_of_their_own_and_short_ones_share() -> None:
    reply = Reply(
        "?",
        (
            (Button("a", "დიახ"), Button("b", "არა")),
            (Button("c", "სამოქალაქო საზოგადოება"), Button("d", "მოკლე")),
        ),
    )
    buttons = keyboard(reply)["Buttons"]
    assert [b["Columns"] for b in buttons] == [3, 3, 6, 6]
    assert [b["ActionBody"] for b in buttons] == ["btn:a", "btn:b", "btn:c", "btn:d"]
    assert all(b["Silent"] and b["ActionType"] == "reply" for b in buttons)


def test_long_lists_are_paged_with_next_and_back() -> None:
    many = tuple((Button(f"m{i}", f"მუნიციპალიტეტი {i}"),) for i in range(25))
    first = keyboard(Reply("?", many), rows=10)["Buttons"]
    assert len(first) == 10 + 1
    assert first[-1]["ActionBody"] == "btn:page:1" and first[-1]["Text"] == "▶"
    middle = keyboard(Reply("?", many, page=1), rows=10)["Buttons"]
    assert [b["ActionBody"] for b in middle[-2:]] == ["btn:page:0", "btn:page:2"]
    last = keyboard(Reply("?", many, page=2), rows=10)["Buttons"]
    assert last[0]["ActionBody"] == "btn:m20" and last[-1]["Text"] == "◀"


async def test_a_paged_keyboard_turns_its_pages_in_the_conversation(db) -> None:
    many = ",".join(m.code for m in load_content().municipalities)
    async with (
        ViberStandIn() as api,
        running_khma(db, viber=api, ACTIVE_MUNICIPALITIES=many, VIBER_KEYBOARD_ROWS="4") as khma,
    ):
        user = ViberUser(api, db, khma, USER, language="hy")
        await user.opens_chat()
        [question] = await user.taps(ENDONYMS["hy"])
        assert question.text == Translator("hy")(MUNICIPALITY)
        assert "▶" in question.button_texts
        [page_two] = await user.taps("▶")
        assert page_two.text == question.text
        assert set(page_two.button_texts) - set(question.button_texts)


async def test_a_long_georgian_text_fits_vibers_request_limit(db) -> None:
    async with ViberStandIn() as api, running_khma(db, viber=api) as khma:
        channel = khma.viber
        token = await channel.send(USER, Reply("ა" * 6000 + "\n\n" + "ბ" * 6000))
        assert token is not None
        texts = [m.text for m in api.sent_to(USER)]
        assert len(texts) == 2 and "".join(texts).replace("\n", "") == "ა" * 6000 + "ბ" * 6000


async def queue_notice(db, text: str) -> None:
    """A message the resident did not just ask for (as a later status update would be)."""
    async with db.transaction() as session:
        session.add(
            OutboxMessage(
                channel="viber",
                address=USER,
                kind="notice",
                priority=10,
                payload=Reply(text).to_json(),
            )
        )


async def test_unsubscribed_receiver_is_unreachable_and_not_retried(db) -> None:
    async with ViberStandIn() as api, running_khma(db, viber=api) as khma:
        user = ViberUser(api, db, khma, USER)
        await user.says("Salam")
        api.unsubscribe(USER)
        await queue_notice(db, "Yenilik")
        khma.dispatcher.wake()
        await quiet(db, None)
        async with db.transaction() as session:
            row = await session.scalar(select(OutboxMessage).where(OutboxMessage.kind == "notice"))
            [identity] = (await session.execute(select(Identity))).scalars()
        assert (row.status, row.attempts) == ("unreachable", 1)
        assert identity.unreachable_at is not None
        assert "Yenilik" not in [m.text for m in api.sent_to(USER)]


async def test_too_many_messages_are_held_until_the_resident_writes_again(db) -> None:
    async with ViberStandIn() as api, running_khma(db, viber=api) as khma:
        user = ViberUser(api, db, khma, USER)
        await user.says("Salam")
        api.limit_reached(USER)
        await queue_notice(db, "Yenilik")
        khma.dispatcher.wake()
        await quiet(db, None)
        async with db.transaction() as session:
            row = await session.scalar(select(OutboxMessage).where(OutboxMessage.kind == "notice"))
        assert row.status == "held"
        api.reset_limit(USER)
        answers = await user.says("Salam!")
        assert answers[0].text == "Yenilik", "what was held goes first, in order"
        async with db.transaction() as session:
            statuses = set((await session.execute(select(OutboxMessage.status))).scalars())
        assert statuses == {"sent"}


async def test_server_errors_are_retried_until_delivered(db) -> None:
    async with ViberStandIn() as api, running_khma(db, viber=api) as khma:
        user = ViberUser(api, db, khma, USER)
        api.fail_next(2, http_status=500)
        [reply] = await user.says("Salam")
        assert reply.keyboard is not None
        async with db.transaction() as session:
            [row] = (await session.execute(select(OutboxMessage))).scalars()
        assert (row.status, row.attempts) == ("sent", 3)


async def test_a_refused_webhook_is_logged_clearly(db, caplog) -> None:
    caplog.set_level(logging.INFO)
    async with ViberStandIn() as api:
        api.refuse_webhook(1, "invalidUrl")
        async with running_khma(db, viber=api):
            pass
    refused = [r for r in caplog.records if "Viber refused the webhook" in r.getMessage()]
    assert refused and refused[0].levelno == logging.ERROR
    assert re.search(r"status 1 \(invalidUrl\)", refused[0].getMessage())
    assert api.token not in caplog.text


async def test_a_long_text_held_half_way_resumes_where_it_stopped(db) -> None:
    """Viber stops a long notice after its first part (status 12: too many messages without
    a reply); when the resident writes again, the rest follows, and no part comes twice."""
    parts = ["ა" * 6500, "ბ" * 6500, "გ" * 6500]  # each at the channel's part size
    async with ViberStandIn() as api, running_khma(db, viber=api) as khma:
        user = ViberUser(api, db, khma, USER)
        await user.says("Salam")
        api.replyless_limit = len(api.sent_to(USER)) + 1  # one more message, then status 12
        await queue_notice(db, "".join(parts))
        khma.dispatcher.wake()
        await quiet(db, None)
        async with db.transaction() as session:
            row = await session.scalar(select(OutboxMessage).where(OutboxMessage.kind == "notice"))
        assert (row.status, row.parts_sent) == ("held", 1)
        api.replyless_limit = None
        await user.says("Salam!")
    notice = [m.text for m in api.sent_to(USER) if m.text in parts]
    assert notice == parts
