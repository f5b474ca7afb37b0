"""A coordinator's /export on Viber and Telegram, through the real server and stand-ins.

Viber sends files only by URL, so the export comes as a `file` message whose link
points back at Khma's `/exports/<name>`; these transcripts fetch that link over
loopback HTTP, and check that nothing but a fresh export is ever served.
"""

from __future__ import annotations

import csv
import io
import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from yarl import URL

from bot.channels.viber import public_base
from bot.config import ConfigError, Settings
from bot.outreach.staff import add as add_staff
from bot.vocabulary.i18n import Translator
from bot.web.export_links import ExportLinks
from flows.content import load_content
from flows.menu import REPORT, WHAT_NEXT
from flows.report import ANONYMOUS, CATEGORY_LABELS, SUBMIT
from flows.staff import EXPORT_READY, EXPORT_STARTED
from tests.fakes.telegram_api import TelegramStandIn
from tests.fakes.viber_api import ViberStandIn
from tests.harness import TOKEN, Resident, ViberUser, eventually, onboard, running_khma

HOME = load_content().municipality("marneuli")
REFERENCE = re.compile(r"KV-\d{4}-\d{6}")
PUBLIC = "https://khma.example.org/exports/"
SHOWN_NAME = re.compile(r"khma-\d{8}-\d{4}\.csv")


async def files_a_report(user: ViberUser, t: Translator) -> str:
    await user.taps(t(REPORT))
    await user.taps(t(CATEGORY_LABELS["water"]))
    await user.says("წყალი სამი დღეა არ მოდის / No water for three days")
    await user.says("Sadakhlo")
    await user.taps(t(ANONYMOUS))
    [thanks, _menu] = await user.taps(t(SUBMIT))
    return REFERENCE.search(thanks.text).group()


async def fetch(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """GET the path exactly as written: the client must not tidy `..` away before the server."""
    url = URL(f"http://127.0.0.1:{port}{path}", encoded=True)
    async with aiohttp.ClientSession() as http, http.get(url) as got:
        return got.status, dict(got.headers), await got.read()


async def test_viber_coordinator_gets_the_export_as_a_short_lived_link(db, tmp_path) -> None:
    folder = tmp_path / "exports"
    async with (
        ViberStandIn() as api,
        running_khma(db, viber=api, EXPORTS_DIR=str(folder)) as khma,
    ):
        async with db.transaction() as session:
            await add_staff(session, "viber", "coordinator-01234567A=", "Tamar", "coordinator")
        resident = ViberUser(api, db, khma, user_id="resident-0123456789A=", language="az")
        reference = await files_a_report(resident, await onboard(resident, "az"))
        tamar = ViberUser(api, db, khma, user_id="coordinator-01234567A=", language="ka")
        ka = await onboard(tamar, "ka")

        [started, menu, ready, document] = await tamar.says("/export")
        assert started.text == ka(EXPORT_STARTED), "at once: the export is written outside"
        assert menu.text == ka(WHAT_NEXT) and menu.buttons, "the menu stays under the field"
        assert ready.type == "text" and ready.text == ka(EXPORT_READY, count=1)
        assert document.type == "file" and document.media.startswith(PUBLIC)
        assert SHOWN_NAME.fullmatch(document.body["file_name"]), "no secret in the shown name"

        link = urlsplit(document.media).path
        status, headers, body = await fetch(khma.port, link)
        assert status == 200 and len(body) == document.body["size"]
        assert headers["Cache-Control"] == "no-store"
        assert headers["Content-Disposition"].startswith("attachment")
        assert headers["Content-Type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
        assert [row["reference"] for row in rows] == [reference]

        [written] = folder.iterdir()
        assert len(written.name) > 40, "the file name carries an unguessable token"
        (folder / "notes.csv").write_text("not an export")
        guessed = re.sub(r"-[A-Za-z0-9_-]{32}\.csv$", "-" + "A" * 32 + ".csv", link)
        for wrong in (
            guessed,
            "/exports/notes.csv",
            "/exports/..%2Fkhma.db",
            "/exports/%2E%2E%2Fkhma.db",
            "/exports/" + "%2E%2E%2F" * 3 + "etc%2Fpasswd",
        ):
            status, headers, _body = await fetch(khma.port, wrong)
            assert status == 404, wrong

        hours_ago = time.time() - 25 * 3600
        os.utime(written, (hours_ago, hours_ago))
        status, _headers, _body = await fetch(khma.port, link)
        assert status == 404, "a day-old link no longer works"

        [_started, _menu, _ready, again] = await tamar.says("/export")
        assert again.media != document.media
        assert not written.exists(), "the expired export was deleted"
        assert (folder / "notes.csv").exists(), "only exports are ever deleted"
        assert set(tamar.answers) == {200}


async def test_export_links_follow_the_configured_hours(db, tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    async with (
        ViberStandIn() as api,
        running_khma(db, viber=api, EXPORTS_DIR=str(folder), EXPORT_LINK_HOURS="0.5") as khma,
    ):
        async with db.transaction() as session:
            await add_staff(session, "viber", "coordinator-01234567A=", "Tamar", "coordinator")
        tamar = ViberUser(api, db, khma, user_id="coordinator-01234567A=", language="ru")
        ru = await onboard(tamar, "ru")
        [_started, _menu, ready, document] = await tamar.says("/export")
        assert ready.text == ru(EXPORT_READY, count=0)
        link = urlsplit(document.media).path
        [written] = folder.iterdir()

        forty_minutes_ago = time.time() - 40 * 60
        os.utime(written, (forty_minutes_ago, forty_minutes_ago))
        status, _headers, _body = await fetch(khma.port, link)
        assert status == 404


async def test_telegram_coordinator_gets_the_file_and_no_link_is_served(db, tmp_path) -> None:
    folder = tmp_path / "exports"
    async with (
        TelegramStandIn(token=TOKEN) as api,
        running_khma(db, api, EXPORTS_DIR=str(folder)) as khma,
    ):
        async with db.transaction() as session:
            await add_staff(session, "telegram", "990", "Nana", "coordinator")
        nana = Resident(api, db, chat_id=990, language_code="hy", first_name="Nana")
        hy = await onboard(nana, "hy")

        [started, _menu, document] = await nana.says("/export")
        assert started.text == hy(EXPORT_STARTED)
        assert document.method == "sendDocument"
        assert document.caption == hy(EXPORT_READY, count=0)
        [upload] = document.files.values()
        assert upload.data.decode("utf-8-sig").startswith("reference,")
        await eventually(lambda: not list(folder.iterdir()))  # Telegram has it: no copy kept

        status, _headers, _body = await fetch(khma.port, f"/exports/{upload.filename}")
        assert status == 404, "without Viber no export is reachable over HTTP"


async def test_expired_exports_are_swept_without_anyone_exporting_again(db, tmp_path) -> None:
    folder = tmp_path / "exports"
    links = ExportLinks(folder, timedelta(hours=1))
    old, fresh = (links.new_path(datetime(2026, 11, 23, 8, 0, tzinfo=UTC)) for _ in range(2))
    for path in (old, fresh):
        path.write_text("reference\n")
    two_hours_ago = time.time() - 2 * 3600
    os.utime(old, (two_hours_ago, two_hours_ago))
    async with running_khma(db, EXPORTS_DIR=str(folder), EXPORT_LINK_HOURS="1"):
        await eventually(lambda: not old.exists())
        assert fresh.exists(), "a link still valid keeps its file"


@pytest.mark.parametrize("hours", ["0", "-1", "soon", "nan", "inf"])
def test_export_link_hours_must_be_a_positive_number(hours: str) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({"EXPORT_LINK_HOURS": hours})


def test_only_fresh_exports_by_their_exact_name_are_found(tmp_path: Path) -> None:
    links = ExportLinks(tmp_path / "exports", timedelta(hours=24))
    export = links.new_path(datetime(2026, 11, 23, 8, 0, tzinfo=UTC))
    export.write_text("reference\n")
    (tmp_path / "khma.db").write_text("the database")
    symlink = "khma-20261123-0800-" + "B" * 32 + ".csv"
    (links.folder / symlink).symlink_to(tmp_path / "khma.db")
    assert links.find(export.name) == export
    for name in (
        "../khma.db",
        symlink,
        export.name.upper(),
        export.name + "/",
        export.name.replace(".csv", ".CSV"),
        "",
    ):
        assert links.find(name) is None, name
    day_old = time.time() - 24 * 3600 - 1
    os.utime(export, (day_old, day_old))
    assert links.find(export.name) is None
    assert links.sweep() == 1 and not export.exists()


@pytest.mark.parametrize(
    ("webhook", "base"),
    [
        ("https://khma.example.org/webhooks/viber", "https://khma.example.org"),
        ("https://khma.example.org:8443/webhooks/viber/", "https://khma.example.org:8443"),
        ("https://cso.example.ge/khma/webhooks/viber", "https://cso.example.ge/khma"),
        ("https://cso.example.ge/hook?x=1", "https://cso.example.ge"),
    ],
)
def test_export_links_use_the_webhooks_public_address(webhook: str, base: str) -> None:
    assert public_base(webhook) == base
