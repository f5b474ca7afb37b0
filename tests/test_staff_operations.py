"""One set of rules for everything staff do, whichever front end asks.

Every staff operation runs through the chat's front end (the `StaffAction` effect a staff
flow produces, as the engine applies it) and through the CLI's (`python -m bot …` parsed
and executed in-process), for a resident, a coordinator, a staff member and an admin, and
must give the same outcome and the same refusal on both. Then the state rules: an event
cancelled twice, or moved after it was cancelled, tells nobody anything a second time;
and the heavy work those operations queue runs as jobs, outside the turn, once.
"""

from __future__ import annotations

import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cli.commands import parser
from bot.cli.outreach import execute
from bot.engine.effects import Effects, profile_of
from bot.outreach import campaigns, events
from bot.outreach.jobs import MOST_ATTEMPTS, JobWorker
from bot.outreach.operations.errors import (
    Invalid,
    NotAllowed,
    NotFound,
    OperationError,
    WrongState,
)
from bot.vocabulary.i18n import Translator
from bot.vocabulary.messages import Inbound, Kind
from bot.vocabulary.roles import PERMISSIONS, can
from flows.content import load_content
from flows.core import Context, Profile, StaffAction
from flows.notices import EVENT_CANCELLED
from flows.staff import JOB_FAILED, refusal_text
from flows.staff_events import CANCELLED
from storage import queries
from storage.db import Database
from storage.models import (
    Broadcast,
    Identity,
    Job,
    OutboxMessage,
    Report,
    Resident,
    Rsvp,
    StaffMember,
)
from tests.harness import settings_for

TBILISI = Translator("en").tz
# Who acts, by role: "resident" has no staff role at all.
ACTORS = {"resident": "100", "coordinator": "101", "staff": "102", "admin": "103"}
ROLES = tuple(ACTORS)


def typed(moment: datetime) -> str:
    """A time as staff type it: Tbilisi wall-clock time."""
    return f"{moment.astimezone(TBILISI):%Y-%m-%d %H:%M}"


@dataclass
class World:
    """What the operations act on, committed once per database."""

    now: datetime
    event_id: int
    broadcast_id: int
    campaign: str
    report: str
    question: str
    answered: str


async def seed(db: Database) -> World:
    now = datetime.now(UTC)
    async with db.transaction() as session:
        for role, address in ACTORS.items():
            resident = Resident(language="ru", municipality="marneuli", consent=True)
            session.add(
                Identity(
                    channel="telegram",
                    address=address,
                    resident=resident,
                    display_name=role,
                    last_inbound_at=now,
                )
            )
            if role != "resident":
                session.add(StaffMember(channel="telegram", address=address, name=role, role=role))
        await session.flush()
        going = await session.scalar(
            select(Identity.resident_id).where(Identity.address == ACTORS["resident"])
        )
        event = await events.create(
            session,
            titles={"ru": "Встреча о воде"},
            starts_at=now + timedelta(days=3),
            place="Библиотека",
            now=now,
        )
        session.add(Rsvp(event_id=event.id, resident_id=going, status="going"))
        broadcast = Broadcast(
            texts={"ru": "Завтра собрание"},
            audience={},
            status="scheduled",
            send_at=now + timedelta(days=1),
            created_at=now,
        )
        session.add(broadcast)
        campaign = await campaigns.create(
            session, code="clean-water", titles={"ru": "Чистая вода"}, now=now
        )
        await campaigns.follow(session, campaign.id, going, True)
        references = []
        for number, (kind, answer) in enumerate(
            [("need", None), ("dcfta", None), ("dcfta", "Да, можно.")], start=1
        ):
            reference = f"{'KV' if kind == 'need' else 'DQ'}-2026-{number:06d}"
            session.add(
                Report(
                    reference=reference,
                    kind=kind,
                    resident_id=going,
                    channel="telegram",
                    language="ru",
                    municipality="marneuli",
                    category="water",
                    text="Нет воды три дня",
                    answer=answer,
                    created_at=now,
                    updated_at=now,
                )
            )
            references.append(reference)
        await session.flush()
        return World(now, event.id, broadcast.id, campaign.code, *references)


@asynccontextmanager
async def rolled_back(db: Database) -> AsyncIterator[AsyncSession]:
    """Every case starts from the same world: its transaction is never committed."""
    async with db.sessions() as session:
        await session.begin()
        try:
            yield session
        finally:
            await session.rollback()


async def via_chat(session: AsyncSession, role: str, name: str, args: dict[str, Any]) -> str:
    """The chat's front end: the effect a staff flow asks for, applied as the engine does."""
    identity = await queries.identity_for(session, "telegram", ACTORS[role])
    staff_role = None if role == "resident" else role
    inbound = Inbound(channel="telegram", address=ACTORS[role], external_id="1", kind=Kind.TEXT)
    settings = settings_for(None)
    effects = Effects(session, identity, inbound, None, settings, load_content(), staff_role)
    ctx = Context(
        t=Translator("ru"),
        profile=profile_of(identity.resident, identity, staff_role),
        now=datetime.now(UTC),
        content=load_content(),
    )
    await effects.apply(StaffAction(name, args), ctx)
    return ctx.facts["refused"]["error"] if ctx.facts.get("refused") else "ok"


async def via_cli(session: AsyncSession, role: str, argv: str) -> str:
    """The CLI's front end: `python -m bot … --as telegram:ID`, in-process."""
    args = parser().parse_args([*shlex.split(argv), "--as", f"telegram:{ACTORS[role]}"])
    try:
        await execute(session, args.command, args, settings_for(None))
    except OperationError as error:
        return error.code
    return "ok"


def operations(w: World) -> dict[str, tuple[dict[str, Any] | None, str | None]]:
    """Each operation: its chat arguments and its CLI command (None where a front end
    does not offer it: the chat manages no staff accounts, the CLI writes its own export)."""
    later = w.now + timedelta(days=5)
    return {
        "stats": ({}, None),
        "export": ({}, None),
        "event.list": ({}, "event list"),
        "event.load": ({"id": w.event_id}, None),
        "event.create": (
            {
                "titles": {"ru": "Тренинг"},
                "starts_at": later.isoformat(),
                "place": "Клуб",
                "municipality": "marneuli",
                "capacity": 30,
            },
            f"event create --title ru=Тренинг --starts '{typed(later)}' --place Клуб "
            "--municipality marneuli --capacity 30",
        ),
        "event.move": (
            {"id": w.event_id, "starts_at": later.isoformat()},
            f"event move {w.event_id} --starts '{typed(later)}'",
        ),
        "event.cancel": ({"id": w.event_id}, f"event cancel {w.event_id}"),
        "broadcast.preview": (
            {"texts": {"ru": "Собрание"}, "audience": {"municipalities": ["marneuli"]}},
            "broadcast create --text ru=Собрание --municipality marneuli",
        ),
        "broadcast.create": (
            {
                "texts": {"ru": "Собрание"},
                "audience": {"genders": ["female"]},
                "photo": "https://cso.example.org/poster.jpg",
            },
            "broadcast create --text ru=Собрание --gender female "
            "--photo https://cso.example.org/poster.jpg --yes",
        ),
        "broadcast.progress": ({"id": w.broadcast_id}, f"broadcast status {w.broadcast_id}"),
        "broadcast.cancel": ({"id": w.broadcast_id}, f"broadcast cancel {w.broadcast_id}"),
        "broadcast.list": (None, "broadcast list"),
        "campaign.list": ({}, "campaign list"),
        "campaign.create": (None, "campaign create schools --title ru=Школы"),
        "campaign.update": (
            {"code": w.campaign, "texts": {"ru": "Новости"}},
            f"campaign update {w.campaign} --text ru=Новости",
        ),
        "report.status": (
            {"reference": w.report, "status": "in_review"},
            f"report status {w.report} in_review",
        ),
        "question.load": ({"reference": w.question}, None),
        "question.answer": (
            {"reference": w.question, "answer": "Да."},
            f"question answer {w.question} Да.",
        ),
        "question.promote": ({"reference": w.answered}, None),
        "staff.list": (None, "staff list"),
        "staff.add": (None, "staff add --telegram-id 555 --name Nana --role staff"),
        "staff.remove": (None, f"staff remove --telegram-id {ACTORS['coordinator']}"),
    }


async def test_every_operation_for_every_role_on_both_front_ends(db) -> None:
    world = await seed(db)
    table = operations(world)
    assert set(table) == set(PERMISSIONS), "every operation in the permission table is tested"
    expected: dict[tuple[str, str, str], str] = {}
    found: dict[tuple[str, str, str], str] = {}
    for name, (chat_args, command) in table.items():
        for role in ROLES:
            outcome = "ok" if can(None if role == "resident" else role, name) else "not_allowed"
            if chat_args is not None:
                async with rolled_back(db) as session:
                    found[name, role, "chat"] = await via_chat(session, role, name, chat_args)
                expected[name, role, "chat"] = outcome
            if command is not None:
                async with rolled_back(db) as session:
                    found[name, role, "cli"] = await via_cli(session, role, command)
                expected[name, role, "cli"] = outcome
    wrong = {case: (found[case], want) for case, want in expected.items() if found[case] != want}
    assert not wrong, f"(operation, role, front end): (got, expected) {wrong}"


# What the CLI let through, or crashed on, where the chat refused: the same refusal now.
REFUSALS = [
    ("event.cancel", {"id": 987654}, "event cancel 987654", "not_found"),
    ("broadcast.cancel", {"id": 987654}, "broadcast cancel 987654", "not_found"),
    ("report.status", {"reference": "KV-2026-999999", "status": "closed"},
     "report status KV-2026-999999 closed", "not_found"),
    ("report.status", {"reference": "KV-2026-000001", "status": "done"},
     "report status KV-2026-000001 done", "invalid"),
    ("event.create",
     {"titles": {"ru": "Т"}, "starts_at": "2020-11-01T18:00:00+04:00", "place": "Клуб"},
     "event create --title ru=Т --starts '2020-11-01 18:00' --place Клуб", "invalid"),
    ("event.create",
     {"titles": {"ru": "Т"}, "starts_at": "2099-11-01T18:00:00+04:00", "place": "Клуб",
      "municipality": "atlantis"},
     "event create --title ru=Т --starts '2099-11-01 18:00' --place Клуб "
     "--municipality atlantis", "invalid"),
    ("event.create",
     {"titles": {"xx": "Т"}, "starts_at": "2099-11-01T18:00:00+04:00", "place": "Клуб"},
     "event create --title xx=Т --starts '2099-11-01 18:00' --place Клуб", "invalid"),
    ("broadcast.create", {"texts": {"ru": "С"}, "photo": "poster.jpg"},
     "broadcast create --text ru=С --photo poster.jpg --yes", "invalid"),
    ("broadcast.create", {"texts": {"ru": "С"}, "link": "javascript:alert(1)"},
     "broadcast create --text ru=С --link javascript:alert(1) --yes", "invalid"),
    ("broadcast.create", {"texts": {"ru": "С"}, "send_at": "2020-01-01T10:00:00+04:00"},
     "broadcast create --text ru=С --at '2020-01-01 10:00' --yes", "invalid"),
    ("broadcast.create", {"texts": {"ru": "С"}, "audience": {"genders": ["robot"]}},
     "broadcast create --text ru=С --gender robot --yes", "invalid"),
    ("broadcast.create", {"texts": {"ru": "С"}, "audience": {"municipalities": ["atlantis"]}},
     "broadcast create --text ru=С --municipality atlantis --yes", "invalid"),
    ("broadcast.create", {"texts": {"ru": "С"}, "audience": {"age_groups": ["100_plus"]}},
     "broadcast create --text ru=С --age-group 100_plus --yes", "invalid"),
    ("broadcast.create", {"texts": {"ru": "С"}, "audience": {"campaign": "nope"}},
     "broadcast create --text ru=С --campaign nope --yes", "invalid"),
    ("broadcast.create", {"texts": {"ru": "С"}, "audience": {"event_id": 987654}},
     "broadcast create --text ru=С --event 987654 --yes", "invalid"),
    ("broadcast.create", {"texts": {"ru": "С" * 2001}},
     f"broadcast create --text ru={'С' * 2001} --yes", "invalid"),
    ("campaign.update", {"code": "nope", "texts": {"ru": "Н"}},
     "campaign update nope --text ru=Н", "not_found"),
]  # fmt: skip


@pytest.mark.parametrize("name, chat_args, command, error", REFUSALS)
async def test_the_same_input_is_refused_the_same_way_on_both_front_ends(
    db, name: str, chat_args: dict[str, Any], command: str, error: str
) -> None:
    await seed(db)
    async with rolled_back(db) as session:
        chat = await via_chat(session, "staff", name, chat_args)
    async with rolled_back(db) as session:
        cli = await via_cli(session, "staff", command)
    assert (chat, cli) == (error, error)


async def notices(db: Database, kind: str) -> list[str]:
    async with db.transaction() as session:
        rows = await session.execute(
            select(OutboxMessage.payload)
            .where(OutboxMessage.kind == kind)
            .order_by(OutboxMessage.id)
        )
        return [payload["text"] for payload in rows.scalars()]


async def run_jobs(db: Database) -> int:
    worker = JobWorker(db, settings_for(None), load_content())
    ran = 0
    while await worker.run_one():
        ran += 1
    return ran


async def test_an_event_cancelled_twice_tells_residents_once(db) -> None:
    world = await seed(db)
    async with db.transaction() as session:
        assert await via_cli(session, "staff", f"event cancel {world.event_id}") == "ok"
    async with db.transaction() as session:
        assert await via_chat(session, "admin", "event.cancel", {"id": world.event_id}) == (
            "wrong_state"
        )
    async with db.transaction() as session:
        assert await via_cli(session, "staff", f"event cancel {world.event_id}") == ("wrong_state")
    assert await notices(db, "event") == [], "nobody is told inside the turn"
    assert await run_jobs(db) == 1
    [told] = await notices(db, "event")
    assert "Встреча о воде" in told
    assert await run_jobs(db) == 0 and len(await notices(db, "event")) == 1


async def test_a_cancelled_event_cannot_be_moved(db) -> None:
    world = await seed(db)
    later = world.now + timedelta(days=6)
    async with db.transaction() as session:
        assert await via_chat(session, "staff", "event.cancel", {"id": world.event_id}) == "ok"
    async with db.transaction() as session:
        args = {"id": world.event_id, "starts_at": later.isoformat()}
        assert await via_chat(session, "staff", "event.move", args) == "wrong_state"
    async with db.transaction() as session:
        command = f"event move {world.event_id} --starts '{typed(later)}'"
        assert await via_cli(session, "staff", command) == "wrong_state"
    await run_jobs(db)
    [told] = await notices(db, "event")
    assert told == Translator("ru")(
        EVENT_CANCELLED,
        title="Встреча о воде",
        when=Translator("ru").datetime(world.now + timedelta(days=3)),
    ), "cancelled, never moved"


async def test_a_job_left_running_by_a_dead_process_runs_again_and_tells_once(db) -> None:
    world = await seed(db)
    async with db.transaction() as session:
        assert await via_chat(session, "staff", "event.cancel", {"id": world.event_id}) == "ok"
    # A worker claimed it and died: its lease has run out.
    async with db.transaction() as session:
        await session.execute(
            update(Job).values(
                status="running", attempts=1, run_after=datetime.now(UTC) - timedelta(seconds=1)
            )
        )
    assert await run_jobs(db) == 1
    assert len(await notices(db, "event")) == 1
    [result] = await notices(db, "notice")
    assert result == Translator("ru")(CANCELLED, id=world.event_id, n=1), (
        "the staff member who cancelled hears how many were told, in their language"
    )
    async with db.transaction() as session:
        job = await session.scalar(select(Job))
        assert (job.status, job.result, job.attempts) == ("done", {"told": 1}, 2)
        address = await session.scalar(
            select(OutboxMessage.address).where(OutboxMessage.kind == "notice")
        )
        assert address == ACTORS["staff"]


async def test_a_campaign_update_and_send_now_leave_the_turn_at_once(db) -> None:
    """Neither the update's followers nor a broadcast's audience are expanded in the turn:
    the update is a job, and "send now" records the broadcast as due for the scheduler."""
    world = await seed(db)
    async with db.transaction() as session:
        args = {"code": world.campaign, "texts": {"ru": "Новости кампании"}}
        assert await via_chat(session, "staff", "campaign.update", args) == "ok"
        args = {"texts": {"ru": "Собрание"}, "audience": {}}
        assert await via_chat(session, "staff", "broadcast.create", args) == "ok"
    async with db.transaction() as session:
        queued = await session.scalar(select(func.count()).select_from(OutboxMessage))
        assert queued == 0
        due = await session.scalar(
            select(Broadcast).where(Broadcast.status == "scheduled").order_by(Broadcast.id.desc())
        )
        assert due.send_at <= datetime.now(UTC)
    await run_jobs(db)
    assert len(await notices(db, "campaign")) == 1


async def test_two_workers_never_take_the_same_job(db) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite has one writer at a time; SKIP LOCKED is PostgreSQL's")
    world = await seed(db)
    async with db.transaction() as session:
        assert await via_chat(session, "staff", "event.cancel", {"id": world.event_id}) == "ok"
        args = {"code": world.campaign, "texts": {"ru": "Н"}}
        assert await via_chat(session, "staff", "campaign.update", args) == "ok"
    async with db.transaction() as session:
        first = await session.scalar(select(Job).order_by(Job.id).limit(1).with_for_update())
        # Another process holds the first job: this worker takes the second.
        worker = JobWorker(db, settings_for(None), load_content())
        assert await worker.run_one()
        statuses = dict((await session.execute(select(Job.id, Job.status))).all())
    assert statuses[first.id] == "pending"
    assert sorted(statuses.values()) == ["done", "pending"]


async def test_a_failing_job_is_retried_then_given_up_and_staff_are_told(db) -> None:
    world = await seed(db)
    async with db.transaction() as session:
        args = {"code": world.campaign, "texts": {"ru": "Новости"}}
        assert await via_chat(session, "staff", "campaign.update", args) == "ok"
    moments = iter(datetime.now(UTC) + timedelta(hours=hour) for hour in range(100))
    worker = JobWorker(db, settings_for(None), load_content(), clock=lambda: next(moments))

    async def broken(job: Any, now: datetime) -> Any:
        raise ConnectionError("the database went away")

    worker._handlers["campaign_update"] = broken
    for attempt in range(1, MOST_ATTEMPTS + 1):
        assert await worker.run_one(), f"attempt {attempt} is due again after its backoff"
    assert not await worker.run_one()
    async with db.transaction() as session:
        job = await session.scalar(select(Job))
        assert (job.status, job.attempts, job.error) == ("failed", MOST_ATTEMPTS, "ConnectionError")
    assert await notices(db, "campaign") == []
    assert await notices(db, "notice") == [Translator("ru")(JOB_FAILED)]


@pytest.mark.parametrize("lang", ["ka", "az", "hy", "ru"])
def test_the_chat_says_every_refusal_in_the_staff_members_language(lang: str) -> None:
    refusals = [
        NotAllowed("event.move", "coordinator"),
        NotFound("event", "12"),
        WrongState("event", "12", "cancelled"),
        Invalid("texts.ka", "too_long", value="2500", limit=2000),
        Invalid("starts_at", "past", value="2020-01-01T10:00:00+04:00"),
        Invalid("photo", "address", value="poster"),
        Invalid("audience.genders", "unknown", value="robot"),
        Invalid("titles", "empty"),
    ]
    english = Context(Translator("en"), Profile(channel="telegram"), datetime.now(UTC), None)
    ctx = Context(Translator(lang), Profile(channel="telegram"), datetime.now(UTC), None)
    said = [refusal_text(ctx, error.to_json()) for error in refusals]
    assert len(set(said)) == len(said), "each refusal says something of its own"
    for error, text in zip(refusals, said, strict=True):
        assert text != refusal_text(english, error.to_json()), f"{error} said in English"
