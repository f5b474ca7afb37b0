"""The commands coordinators and operators type: `python -m bot migrate` and `export`."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from openpyxl import load_workbook
from sqlalchemy import select

from storage.db import Database
from storage.models import Report, Resident

ROOT = Path(__file__).resolve().parent.parent


async def python_m_bot(db: Database, *args: str) -> str:
    """`python -m bot ARGS` that must succeed; its standard output."""
    code, out, err = await run_cli(db, *args)
    assert code == 0, err
    return out


async def test_migrate_is_idempotent_and_export_writes_xlsx(db, tmp_path) -> None:
    await python_m_bot(db, "migrate")
    async with db.transaction() as session:
        resident = Resident(language="hy", municipality="akhalkalaki", consent=True)
        session.add(resident)
        await session.flush()
        for number, (kind, when) in enumerate(
            [
                ("need", datetime(2026, 5, 1, 8, tzinfo=UTC)),
                ("dcfta", datetime(2026, 6, 1, 8, tzinfo=UTC)),
            ]
        ):
            session.add(
                Report(
                    reference=f"KV-2026-00000{number}",
                    kind=kind,
                    resident_id=resident.id,
                    channel="telegram",
                    language="hy",
                    municipality="akhalkalaki",
                    category="water",
                    text="=1+1 Ջուր չկա",
                    created_at=when,
                    updated_at=when,
                )
            )
    out = tmp_path / "needs.xlsx"
    printed = await python_m_bot(
        db,
        "export",
        "--format",
        "xlsx",
        "--out",
        str(out),
        "--kind",
        "need",
        "--since",
        "2026-04-01",
        "--municipality",
        "akhalkalaki",
    )
    assert "1 rows" in printed
    sheet = load_workbook(out, read_only=True).active
    header, row = list(sheet.iter_rows(values_only=True))
    record = dict(zip(header, row, strict=True))
    assert record["reference"] == "KV-2026-000000"
    assert record["municipality"] == "Akhalkalaki"
    assert record["text"] == "'=1+1 Ջուր չկա"


async def run_cli(db: Database, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "DATABASE_URL": db.url, "LOG_LEVEL": "WARNING"}
    if db.schema:
        env["DATABASE_SCHEMA"] = db.schema
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode, out.decode(), err.decode()


async def test_the_cli_refuses_in_one_line_what_the_chat_refuses(db) -> None:
    """Not found, not allowed, a past time, an unknown gender or municipality, a photo that
    is no address: one line on stderr and an exit status per kind, never a traceback."""
    cases = [
        (("event", "move", "424242", "--starts", "2099-12-01 18:00"), 4, "no event 424242"),
        (("event", "cancel", "424242"), 4, "no event 424242"),
        (("broadcast", "cancel", "424242"), 4, "no broadcast 424242"),
        (("report", "status", "KV-2026-424242", "closed"), 4, "no report KV-2026-424242"),
        (
            ("event", "create", "--title", "ka=შეხვედრა", "--starts", "2020-01-01 10:00",
             "--place", "Marneuli"),
            2,
            "starts_at",
        ),
        (("broadcast", "create", "--text", "ru=Т", "--gender", "robot", "--yes"), 2, "robot"),
        (
            ("broadcast", "create", "--text", "ru=Т", "--municipality", "atlantis", "--yes"),
            2,
            "atlantis",
        ),
        (("broadcast", "create", "--text", "ru=Т", "--photo", "poster", "--yes"), 2, "photo"),
        (("staff", "list", "--as", "telegram:1"), 3, "a resident may not run staff.list"),
    ]  # fmt: skip
    for args, status, says in cases:
        code, out, err = await run_cli(db, *args)
        assert (code, out) == (status, ""), (args, err)
        assert err.startswith("error: ") and says in err and err.count("\n") == 1, (args, err)


async def test_an_event_cancelled_twice_from_the_cli_tells_its_residents_once(db) -> None:
    from bot.outreach import events
    from bot.outreach.jobs import JobWorker
    from flows.content import load_content
    from storage.models import Identity, OutboxMessage, Rsvp
    from tests.harness import settings_for

    now = datetime.now(UTC)
    async with db.transaction() as session:
        resident = Resident(language="az", municipality="marneuli", consent=True)
        session.add(Identity(channel="telegram", address="77", resident=resident))
        event = await events.create(
            session, titles={"az": "Görüş"}, starts_at=now + timedelta(days=2), place="Kitabxana",
            now=now,
        )  # fmt: skip
        await session.flush()
        session.add(Rsvp(event_id=event.id, resident_id=resident.id, status="going"))
    assert (await run_cli(db, "event", "cancel", str(event.id)))[0] == 0
    code, _out, err = await run_cli(db, "event", "cancel", str(event.id))
    assert (code, err) == (5, f"error: event {event.id} is cancelled\n")
    code, _out, err = await run_cli(
        db, "event", "move", str(event.id), "--starts", "2099-01-01 10:00"
    )
    assert (code, err) == (5, f"error: event {event.id} is cancelled\n"), "no “moved” either"
    worker = JobWorker(db, settings_for(None), load_content())
    while await worker.run_one():
        pass
    async with db.transaction() as session:
        told = (await session.execute(select(OutboxMessage.kind))).scalars().all()
    assert told == ["event"], "one notice, of the cancellation"
