"""A message that cannot be handled is never lost, never leaks, and heals.

A lost connection, a deadlock or a locked database is tried again until it
passes; the resident just gets their answer. A message that fails for good is
kept for staff with the class of its error (never the resident's words, which a
database error quotes among its parameters), listed by `python -m bot inbox
failed` and processed again by `python -m bot inbox retry`. `/delete` takes the
errors and the queued messages with everything else.
"""

from __future__ import annotations

import logging
import sqlite3

import asyncpg
import pytest
from sqlalchemy import exc, select

from bot.engine.engine import SOMETHING_WENT_WRONG, Engine
from bot.vocabulary.i18n import Translator
from bot.vocabulary.messages import Reply
from flows.onboarding import ENDONYMS
from flows.privacy import CONFIRM_DELETE, ERASED, YES_DELETE
from storage import queries
from storage.db import Database
from storage.failures import describe, is_transient
from storage.models import Identity, InboxEvent, OutboxMessage, Resident
from tests.fakes.telegram_api import TelegramStandIn
from tests.harness import TOKEN, eventually, onboard, quiet, running_khma
from tests.harness import Resident as Phone
from tests.test_cli import python_m_bot

NAME = "Nino Beridze"
WORDS = "The school roof in Kachagani leaks onto the desks"


def transient_error(db: Database) -> exc.DBAPIError:
    """What each database's driver raises when two turns collide, as SQLAlchemy wraps it
    (with the statement's parameters, which name the resident)."""
    params = {"display_name": NAME}
    if db.is_sqlite:
        locked = sqlite3.OperationalError("database is locked")
        return exc.OperationalError("UPDATE identities SET display_name=?", params, locked)
    collided = asyncpg.exceptions.SerializationError("could not serialize access")
    return exc.DBAPIError("UPDATE identities SET display_name=$1", params, collided)


def permanent_error(db: Database) -> exc.IntegrityError:
    """A constraint the code did not expect to meet: no retry will pass it."""
    params = {"text": WORDS, "shared_name": NAME}
    if db.is_sqlite:
        orig: Exception = sqlite3.IntegrityError(f"UNIQUE constraint failed: {WORDS}")
    else:
        orig = asyncpg.exceptions.UniqueViolationError(f"duplicate key: {WORDS}")
    return exc.IntegrityError("INSERT INTO reports (text, shared_name)", params, orig)


def failing(times: int, error: Exception):
    """Engine._process that raises `error` (inside the turn's transaction) `times` times."""
    original = Engine._process
    left = {"n": times}

    async def _process(self, session, *event):
        if left["n"] > 0:
            left["n"] -= 1
            await session.execute(select(1))
            raise error
        return await original(self, session, *event)

    return _process


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (exc.OperationalError("s", {}, sqlite3.OperationalError("database is locked")), True),
        (exc.DBAPIError("s", {}, asyncpg.exceptions.DeadlockDetectedError("d")), True),
        (exc.DBAPIError("s", {}, asyncpg.exceptions.SerializationError("s")), True),
        (exc.DBAPIError("s", {}, asyncpg.exceptions.QueryCanceledError("timeout")), True),
        (exc.DBAPIError("s", {}, asyncpg.exceptions.ConnectionDoesNotExistError("c")), True),
        (exc.DBAPIError("s", {}, ConnectionResetError(), connection_invalidated=True), True),
        (exc.TimeoutError("QueuePool limit reached"), True),
        (TimeoutError(), True),
        (ConnectionRefusedError(), True),
        (exc.IntegrityError("s", {}, asyncpg.exceptions.UniqueViolationError("u")), False),
        (exc.IntegrityError("s", {}, sqlite3.IntegrityError("NOT NULL")), False),
        (exc.DBAPIError("s", {}, asyncpg.exceptions.CharacterNotInRepertoireError("\\0")), False),
        (ValueError("bad"), False),
        (KeyError("step"), False),
    ],
)
def test_transient_errors_are_told_from_permanent_ones_by_type(error, transient) -> None:
    assert is_transient(error) is transient


def test_an_error_is_described_by_its_classes_never_its_text() -> None:
    error = exc.IntegrityError(
        "INSERT", {"text": WORDS}, asyncpg.exceptions.UniqueViolationError(WORDS)
    )
    assert describe(error) == "IntegrityError [23505] UniqueViolationError"
    assert describe(ValueError(WORDS)) == "ValueError"


async def test_a_collision_between_turns_is_tried_again_not_failed(db, monkeypatch, caplog) -> None:
    caplog.set_level(logging.INFO)
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        phone = Phone(api, db, chat_id=601, first_name=NAME)
        monkeypatch.setattr(Engine, "_process", failing(3, transient_error(db)))
        answers = await phone.says("/start")
    assert [a.button_texts[0] for a in answers] == [ENDONYMS["ka"]], "the answer, once"
    async with db.transaction() as session:
        [event] = (await session.execute(select(InboxEvent))).scalars()
    assert (event.status, event.error) == ("done", None)
    assert "trying again (3 of 8)" in caplog.text
    assert NAME not in caplog.text


async def test_a_failing_message_is_kept_without_its_words_and_retried_by_staff(
    db, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.INFO)
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        phone = Phone(api, db, chat_id=602, first_name=NAME, language_code="ru")
        t = await onboard(phone, "ru")
        monkeypatch.setattr(Engine, "_process", failing(1, permanent_error(db)))
        [sorry] = await phone.says(WORDS)
        assert sorry.text == t(SOMETHING_WENT_WRONG)
        async with db.transaction() as session:
            [failed] = (
                await session.execute(select(InboxEvent).where(InboxEvent.status == "failed"))
            ).scalars()
        assert failed.error in ("IntegrityError", "IntegrityError [23505] UniqueViolationError")
        assert WORDS not in caplog.text and NAME not in caplog.text

        listed = await python_m_bot(db, "inbox", "failed")
        assert str(failed.id) in listed and failed.error in listed
        assert WORDS not in listed and NAME not in listed and "602" not in listed

        print(await python_m_bot(db, "inbox", "retry", str(failed.id)))
        await eventually(lambda: len(api.sent_to(602)) > phone.seen, timeout=10)
        await quiet(db, api)
    async with db.transaction() as session:
        again = await session.get(InboxEvent, failed.id)
    assert (again.status, again.error) == ("done", None)
    assert await python_m_bot(db, "inbox", "failed") == "no failed events\n"


async def test_delete_takes_the_errors_and_the_queued_messages_too(db, monkeypatch) -> None:
    async with TelegramStandIn(token=TOKEN) as api, running_khma(db, api):
        phone = Phone(api, db, chat_id=603, first_name=NAME, language_code="hy")
        t = await onboard(phone, "hy")
        monkeypatch.setattr(Engine, "_process", failing(1, permanent_error(db)))
        await phone.says(WORDS)
        async with db.transaction() as session:  # a notice held back, one that failed
            for status in ("held", "failed"):
                session.add(
                    OutboxMessage(
                        channel="telegram",
                        address="603",
                        kind="notice",
                        priority=10,
                        payload=Reply(f"{NAME}: {WORDS}").to_json(),
                        status=status,
                        last_error=f"Bad Request: can't parse {NAME}",
                    )
                )
        await phone.says("/delete")
        [erased] = await phone.taps(t(YES_DELETE))
        assert erased.text == Translator("hy")(ERASED)
    async with db.transaction() as session:
        events = list((await session.execute(select(InboxEvent))).scalars())
        messages = list((await session.execute(select(OutboxMessage))).scalars())
    assert not [e for e in events if e.error or e.status == "failed"]
    assert all(set(e.payload) <= {"kind"} for e in events), "no content kept"
    notices = sorted((m for m in messages if m.kind == "notice"), key=lambda m: m.id)
    assert [(m.status, m.payload, m.last_error) for m in notices] == [
        ("sent", {}, None),  # released when the resident wrote /delete
        ("failed", {}, None),
    ]
    kept = {m.payload["text"] for m in messages if m.payload}
    # Only what the erasing turn itself says: the confirmation, and the question it closes.
    assert erased.text in kept and len(kept) == 2
    assert all(text.startswith(t(CONFIRM_DELETE)) for text in kept - {erased.text})


async def test_delete_stops_what_is_still_queued_for_the_resident(db) -> None:
    async with db.transaction() as session:
        identity = Identity(channel="viber", address="pqR3stUvWxYz0123456789==", flow_data={})
        identity.resident = Resident(language="az")
        session.add(identity)
        await session.flush()
        for status in ("pending", "sending", "held"):
            session.add(
                OutboxMessage(
                    channel="viber",
                    address=identity.address,
                    identity_id=identity.id,
                    kind="broadcast",
                    priority=20,
                    payload=Reply(f"{NAME}, {WORDS}").to_json(),
                    status=status,
                    claim_token="a1b2c3d4e5f60718" if status == "sending" else None,
                )
            )
        await session.flush()
        await queries.forget_messages(session, identity.resident)
    async with db.transaction() as session:
        rows = (await session.execute(select(OutboxMessage))).scalars()
        assert {(r.status, r.claim_token, str(r.payload)) for r in rows} == {
            ("cancelled", None, "{}")
        }
