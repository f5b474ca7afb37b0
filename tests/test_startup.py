"""Start-up that cannot lie: settings, migration before serving, an honest /healthz,
either form of TELEGRAM_API_URL, platforms retried in the background, a generated
webhook secret, and CLI commands that say in one line what to do."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from datetime import time, timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from bot.channels.telegram import TelegramChannel
from bot.config import ConfigError, Settings
from storage import models
from storage.db import Database, head_revision
from tests.conftest import empty_database
from tests.fakes.tcp_proxy import TcpProxy
from tests.fakes.telegram_api import TelegramStandIn
from tests.fakes.viber_api import ViberStandIn
from tests.harness import TOKEN, Resident, ViberUser, eventually, running_khma

ROOT = Path(__file__).resolve().parent.parent
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


@pytest.fixture(params=["sqlite", "postgresql"])
async def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A database nobody has migrated: what `python -m bot run` meets on a first deploy."""
    async with empty_database(request.param, tmp_path) as database:
        yield database


async def get(port: int, path: str) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.json()


# --- settings ------------------------------------------------------------------------------


def test_settings_are_typed_with_their_documented_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite+aiosqlite:///data/khma.db"
    assert settings.telegram_token is None and settings.port == 8080
    assert settings.quiet_hours == (time(22, 0), time(9, 0))
    assert settings.reminder_offsets == (timedelta(hours=24), timedelta(hours=2))
    assert settings.language_fallback == ("ka", "ru", "az", "hy")
    assert settings.exports_dir == Path("data/exports")
    assert settings.export_link_ttl == timedelta(hours=24)
    assert settings.followup_after == timedelta(days=28)
    assert settings.database_timeout == 5.0
    custom = Settings.from_env(
        {"PORT": " 9000 ", "QUIET_HOURS": "off", "REMINDER_HOURS": "48,1.5", "LOG_LEVEL": "debug"}
    )
    assert custom.port == 9000 and custom.quiet_hours is None and custom.log_level == "DEBUG"
    assert custom.reminder_offsets == (timedelta(hours=48), timedelta(hours=1.5))


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("PORT", "eighty", "integer"),
        ("PORT", "70000", "65535"),
        ("TELEGRAM_RATE", "0", "greater than 0"),
        ("TELEGRAM_RATE", "inf", "finite"),
        ("VIBER_KEYBOARD_ROWS", "100", "24"),
        ("QUIET_HOURS", "late", "22:00-09:00"),
        ("LANGUAGE_FALLBACK", "ka,fr", "unknown languages"),
        ("REMINDER_HOURS", "24,-2", "above 0"),
        ("TZ_NAME", "Mars/Olympus", "time zone"),
        ("LOG_LEVEL", "loud", "DEBUG"),
        ("TELEGRAM_API_URL", "api.telegram.org", "http"),
        ("DATABASE_URL", "khma.db", "database URL"),
        ("DATABASE_TIMEOUT", "0", "greater than 0"),
    ],
)
def test_an_unusable_value_is_named_with_its_problem(variable: str, value: str, problem) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({variable: value})
    message = str(raised.value)
    assert message.startswith(f"{variable} ({value.strip()!r})"), message
    assert problem in message


def test_secrets_never_show_in_a_repr_a_str_or_an_error() -> None:
    secrets = {
        "TELEGRAM_TOKEN": "123456:AAH-secret-token",
        "VIBER_TOKEN": "4f8a-viber-secret",
        "TELEGRAM_WEBHOOK_SECRET": "hook_secret-1",
        "DATABASE_URL": "postgresql://khma:pa55-word@db.internal:5432/khma",
    }
    settings = Settings.from_env(secrets)
    assert settings.telegram_token == "123456:AAH-secret-token", "the value itself is a str"
    for shown in (repr(settings), str(settings), f"{settings}"):
        for secret in ("AAH-secret-token", "4f8a-viber-secret", "hook_secret-1", "pa55-word"):
            assert secret not in shown
        assert "postgresql://khma:***@db.internal:5432/khma" in shown
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"TELEGRAM_WEBHOOK_SECRET": "not allowed: pa55"})
    assert "TELEGRAM_WEBHOOK_SECRET" in str(raised.value) and "pa55" not in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"DATABASE_URL": "postgresql://khma:pa55@", "PORT": "x"})
    assert "pa55" not in str(raised.value)


def test_dotenv_is_read_by_the_library_and_the_environment_wins(tmp_path, monkeypatch) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text('# local settings\nPORT=9100\nVIBER_BOT_NAME="Khma Marneuli"\nHOST=0.0.0.0\n')
    monkeypatch.setenv("HOST", "127.0.0.2")
    monkeypatch.delenv("PORT", raising=False)
    monkeypatch.delenv("VIBER_BOT_NAME", raising=False)
    settings = Settings.from_env(dotenv=dotenv)
    assert (settings.port, settings.viber_bot_name, settings.host) == (
        9100,
        "Khma Marneuli",
        "127.0.0.2",
    )
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({}).port == 8080, "a mapping given is all there is: no .env"


@pytest.mark.parametrize("form", ["root", "root/", "ptb base_url", "ptb base_url/"])
def test_the_bot_api_url_may_be_the_root_or_ptbs_base_url(form: str) -> None:
    given = {
        "root": "http://127.0.0.1:8081",
        "root/": "http://127.0.0.1:8081/",
        "ptb base_url": "http://127.0.0.1:8081/bot",
        "ptb base_url/": "http://127.0.0.1:8081/bot/",
    }[form]
    settings = Settings.from_env({"TELEGRAM_API_URL": given})
    assert settings.telegram_base_url == "http://127.0.0.1:8081/bot"
    assert settings.telegram_base_file_url == "http://127.0.0.1:8081/file/bot"


async def test_khma_starts_with_ptbs_base_url_form(db) -> None:
    async with (
        TelegramStandIn(token=TOKEN) as api,
        running_khma(db, api, TELEGRAM_API_URL=api.base_url),
    ):
        phone = Resident(api, db, chat_id=701)
        assert await phone.says("/start"), "getMe went to /bot<token>, not /bot/bot<token>"


# --- migrating before serving, and /healthz --------------------------------------------------


async def test_run_on_a_new_database_migrates_before_it_serves(fresh_db: Database) -> None:
    assert (await fresh_db.schema_state()).revision is None
    async with TelegramStandIn(token=TOKEN) as api, running_khma(fresh_db, api) as khma:
        assert (await fresh_db.schema_state()).at_head
        assert await get(khma.port, "/healthz") == (200, {"status": "ok"})
        phone = Resident(api, fresh_db, chat_id=702)
        assert await phone.says("/start"), "answered, not `no such table`"


async def test_two_processes_starting_together_migrate_once(fresh_db: Database) -> None:
    if fresh_db.is_sqlite:
        pytest.skip("SQLite is the single-process store: one process migrates it")
    others = [Database(fresh_db.url, schema=fresh_db.schema) for _ in range(2)]
    try:
        await asyncio.gather(*(other.migrate() for other in others))
    finally:
        for other in others:
            await other.close()
    state = await fresh_db.schema_state()
    assert state.at_head and state.revision == head_revision()


async def test_healthz_says_503_with_the_reason_while_the_schema_is_behind(db) -> None:
    async with running_khma(db) as khma:
        assert await get(khma.port, "/healthz") == (200, {"status": "ok"})
        async with db.transaction() as session:
            await session.execute(text("UPDATE alembic_version SET version_num = '0001'"))
        status, body = await get(khma.port, "/healthz")
        assert status == 503 and body["status"] == "schema behind"
        assert "python -m bot migrate" in body["reason"]
        async with db.transaction() as session:
            await session.execute(text("DELETE FROM alembic_version"))
        status, body = await get(khma.port, "/healthz")
        assert status == 503 and "not migrated" in body["reason"]
        async with db.transaction() as session:
            await session.execute(
                text("INSERT INTO alembic_version VALUES (:head)"), {"head": head_revision()}
            )
        assert await get(khma.port, "/healthz") == (200, {"status": "ok"})


# --- platforms ---------------------------------------------------------------------------------


async def test_an_unreachable_platform_is_retried_while_the_other_serves(db, caplog) -> None:
    """Telegram's API is down at start: Viber residents are answered meanwhile, and once
    Telegram's API is back the bot connects and answers there too, without a restart."""
    async with TelegramStandIn(token=TOKEN) as api, ViberStandIn() as viber:
        gate = TcpProxy("127.0.0.1", int(api.url.rsplit(":", 1)[1]))
        await gate.start()
        await gate.refuse()
        try:
            async with running_khma(
                db, api, viber=viber, TELEGRAM_API_URL=f"http://127.0.0.1:{gate.port}"
            ) as khma:
                assert await get(khma.port, "/healthz") == (200, {"status": "ok"})
                assert "telegram API cannot be reached" in caplog.text
                user = ViberUser(viber, db, khma, "viber-user-703=")
                await user.starts()
                assert await user.says("hello"), "Viber serves while Telegram is away"
                await gate.restore()
                await eventually(lambda: khma.telegram.connected, timeout=15)
                phone = Resident(api, db, chat_id=703)
                assert await phone.says("/start"), "polling began once Telegram answered"
        finally:
            await gate.close()


def test_the_generated_secret_is_one_for_every_process_of_a_bot_and_unguessable() -> None:
    def secret(token: str) -> str:
        env = {"TELEGRAM_TOKEN": token, "TELEGRAM_WEBHOOK_URL": "https://khma.example.org/w"}
        return TelegramChannel(Settings.from_env(env), accept=None).webhook_secret

    assert secret(TOKEN) == secret(TOKEN), "two processes behind one address agree"
    assert secret(TOKEN) != secret("123456:another-token")
    assert re.fullmatch(r"[A-Za-z0-9_-]{32,256}", secret(TOKEN)), "Telegram's alphabet"


async def test_webhook_mode_without_a_secret_generates_one_and_refuses_forgeries(db) -> None:
    async with (
        TelegramStandIn(token=TOKEN) as api,
        running_khma(
            db, api, TELEGRAM_WEBHOOK_URL="https://khma.example.org/webhooks/telegram"
        ) as khma,
    ):
        assert api.webhook is not None
        secret = api.webhook.secret_token
        assert secret and len(secret) >= 32, "a secret is registered with setWebhook"
        assert TOKEN not in secret and TOKEN.split(":")[1] not in secret
        url = f"http://127.0.0.1:{khma.port}/webhooks/telegram"
        forged = api.text_update(704, "/broadcast", queue=False)
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {SECRET_HEADER: ""}, {SECRET_HEADER: "guess"}):
                async with http.post(url, json=forged, headers=headers) as response:
                    assert response.status in (401, 403)
            async with db.transaction() as session:
                stored = select(func.count()).select_from(models.InboxEvent)
                assert await session.scalar(stored) == 0
            async with http.post(url, json=forged, headers={SECRET_HEADER: secret}) as response:
                assert response.status == 200


# --- the CLI -----------------------------------------------------------------------------------


async def python_m_bot(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=ROOT,
        env={**os.environ, "LOG_LEVEL": "INFO", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def database_env(db: Database) -> dict[str, str]:
    return {"DATABASE_URL": db.url, "DATABASE_SCHEMA": db.schema or ""}


@pytest.mark.parametrize(
    "command",
    [("staff", "list"), ("broadcast", "list"), ("export", "--format", "csv", "--out", "x.csv")],
)
async def test_a_command_on_an_unmigrated_database_says_what_to_do(fresh_db, command) -> None:
    code, out, err = await python_m_bot(database_env(fresh_db), *command)
    assert code != 0 and out == ""
    assert err == "the database is not migrated: run `python -m bot migrate`\n"


@pytest.mark.parametrize("command", [("migrate",), ("staff", "list"), ("run",)])
async def test_a_command_on_an_unreachable_database_says_so_in_one_line(command) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    await proxy.refuse()  # a port where nothing listens
    url = f"postgresql://khma:pa55@127.0.0.1:{proxy.port}/khma"
    try:
        code, out, err = await python_m_bot({"DATABASE_URL": url}, *command)
    finally:
        await proxy.close()
    assert code != 0 and out == ""
    last = err.strip().splitlines()[-1]
    assert last.startswith("cannot reach the database postgresql://khma:***@127.0.0.1")
    assert "check DATABASE_URL" in last
    assert "Traceback" not in err and "pa55" not in err


async def test_a_bad_setting_stops_every_command_in_one_line() -> None:
    code, out, err = await python_m_bot({"PORT": "eighty"}, "migrate")
    assert code != 0 and out == ""
    assert err.startswith("configuration: PORT ('eighty'):") and err.count("\n") == 1


# --- personal data in database errors ------------------------------------------------------


async def test_a_database_error_carries_no_bound_parameters(db) -> None:
    """A failed write names the statement, never the values: they are residents' words."""
    words = "Ջուր չկա երեք օր, Նունե Հակոբյան"
    async with db.transaction() as session:
        session.add(models.Resident(pseudonym="R-dup", source="first"))
    with pytest.raises(IntegrityError) as raised:
        async with db.transaction() as session:
            session.add(models.Resident(pseudonym="R-dup", source=words[:64]))
    assert words[:20] not in str(raised.value)
    assert "parameters" in str(raised.value).lower(), "hidden, and says so"
