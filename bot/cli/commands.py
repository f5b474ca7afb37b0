"""`python -m bot …`: run, chat, migrate, export."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from datetime import date
from pathlib import Path

from bot.cli import inbox
from bot.cli.outreach import add_parsers
from bot.cli.outreach import run as run_outreach
from bot.config import ConfigError, Settings

OUTREACH = ("staff", "broadcast", "event", "campaign", "report", "question")

QUIET_LOGGERS = ("httpx", "httpcore", "telegram", "apscheduler", "aiohttp.access", "alembic")


def configure_logging(level: str) -> None:
    """httpx logs request URLs at INFO, and a Bot API URL holds the token: keep it quiet."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))


async def _run(settings: Settings) -> None:
    from bot.app import Khma

    khma = Khma(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, khma.stop_event.set)
    await khma.serve_forever()


class Refusal(Exception):
    """A command cannot run; its text is the one line that says what to do."""


def _database(settings: Settings):
    from storage.db import Database

    return Database(
        settings.database_url, schema=settings.database_schema, timeout=settings.database_timeout
    )


async def _migrate(settings: Settings) -> None:
    db = _database(settings)
    try:
        await db.migrate()
    finally:
        await db.close()


async def _check_schema(settings: Settings) -> None:
    """Refuse, in one line, to work on a database that is not at this code's schema."""
    db = _database(settings)
    try:
        problem = (await db.schema_state()).problem()
    finally:
        await db.close()
    if problem is not None:
        raise Refusal(problem)


def _unreachable(settings: Settings, error: BaseException) -> str:
    from storage.db import printable_url

    cause = error
    while cause.__cause__ is not None:
        cause = cause.__cause__
    return (
        f"cannot reach the database {printable_url(settings.database_url)} "
        f"({type(cause).__name__}): check DATABASE_URL and that the database server is running"
    )


async def _export(settings: Settings, args: argparse.Namespace) -> None:
    from bot.outreach.export import ExportFilter, write_export
    from flows.content import load_content

    await _check_schema(settings)
    db = _database(settings)
    try:
        flt = ExportFilter(
            since=args.since, until=args.until, municipality=args.municipality, kind=args.kind
        )
        count = await write_export(
            db, flt, load_content(), args.format, Path(args.out), tz_name=settings.tz_name
        )
    finally:
        await db.close()
    print(f"{count} rows written to {args.out}")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="serve every platform whose token is set")
    sub.add_parser("start", help="`run` when a platform token is set, otherwise `chat`")
    chat = sub.add_parser("chat", help="talk to the bot in this terminal")
    chat.add_argument("--language", help="a platform language hint such as ka, az, hy or ru")
    chat.add_argument("--as", dest="address", default="local", help="which resident you are")
    chat.add_argument("--name", default="Newcomer", help="the name your 'app' would show")
    sub.add_parser("migrate", help="bring the database schema up to date")
    export = sub.add_parser("export", help="write reports and questions for coordinators")
    export.add_argument("--format", choices=("csv", "xlsx", "jsonl"), required=True)
    export.add_argument("--out", required=True)
    export.add_argument("--since", type=date.fromisoformat, help="YYYY-MM-DD, Tbilisi time")
    export.add_argument("--until", type=date.fromisoformat, help="YYYY-MM-DD, inclusive")
    export.add_argument("--municipality", help="a municipality code such as marneuli")
    export.add_argument("--kind", choices=("need", "dcfta"))
    add_parsers(sub)
    inbox.add_parser(sub)
    return top


def main(argv: list[str] | None = None) -> None:
    """Run one command; what stops it (a setting, the database) is one line, no traceback."""
    from storage.db import is_outage

    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        sys.exit(f"configuration: {error}")
    configure_logging(settings.log_level)
    if args.command not in ("run", "start"):
        # A one-off command says what stopped it in its own line: no outage warning too.
        logging.getLogger("storage.db").setLevel(logging.ERROR)
    try:
        _dispatch(args, settings)
    except Refusal as refusal:
        sys.exit(str(refusal))
    except Exception as error:
        if is_outage(error):
            sys.exit(_unreachable(settings, error))
        raise


def _dispatch(args: argparse.Namespace, settings: Settings) -> None:
    command = args.command
    if command == "start":
        command = "run" if settings.telegram_token or settings.viber_token else "chat"
    if command == "run":
        asyncio.run(_run(settings))
    elif command == "chat":
        from bot.cli.chat import chat

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                chat(
                    settings,
                    address=getattr(args, "address", "local"),
                    name=getattr(args, "name", "Newcomer"),
                    language=getattr(args, "language", None),
                )
            )
    elif command == "migrate":
        asyncio.run(_migrate(settings))
    elif command == "export":
        asyncio.run(_export(settings, args))
    elif command == "inbox":
        asyncio.run(inbox.run(args, settings))
    elif command in OUTREACH:
        asyncio.run(_check_schema(settings))
        asyncio.run(run_outreach(command, args, settings))
