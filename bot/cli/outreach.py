"""`python -m bot staff | broadcast | event | campaign | report | question …` for scripting.

The same operations staff have in the chat (bot/outreach/operations), for CSO operators
and cron jobs: this module only parses arguments, calls the operation and prints its
result, or its refusal as one line on stderr with an exit status per kind of refusal
(2 invalid input, 3 not allowed, 4 not found, 5 wrong state). Whoever runs it on the
server acts as an admin; `--as telegram:ID` (or `viber:ID`) acts as that staff member,
with their role. What operations queue is sent, and their jobs run, by the running bot.
"""

from __future__ import annotations

import argparse
import sys
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import LANGUAGES, Settings
from bot.outreach import staff as staff_accounts
from bot.outreach.audience import Audience
from bot.outreach.due import DueWork
from bot.outreach.operations import broadcasts, campaigns, events, reports, staff
from bot.outreach.operations.errors import Invalid, OperationError
from bot.outreach.operations.request import OPERATOR, Actor, Request
from bot.vocabulary.roles import ROLES
from flows.content import load_content
from storage.db import Database
from storage.models import utcnow


def _per_language(field: str, pairs: list[str] | None) -> dict[str, str]:
    """`--text ka="…" --text ru="…"` → {"ka": "…", "ru": "…"}; the operation checks them."""
    found: dict[str, str] = {}
    for pair in pairs or []:
        lang, sep, text = pair.partition("=")
        if not sep:
            raise Invalid(field, "format", value=pair)
        found[lang] = text
    return found


def _identity(args: argparse.Namespace) -> tuple[str, str]:
    if getattr(args, "telegram_id", None):
        return "telegram", str(args.telegram_id)
    return "viber", args.viber_id


def add_parsers(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--as",
        dest="actor",
        metavar="CHANNEL:ID",
        help="act as this staff member (telegram:123456789), with their role; "
        "default: the operator, an admin",
    )

    def leaf(parent: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
        return parent.add_parser(name, parents=[common])

    people = sub.add_parser("staff", help="staff identities and roles").add_subparsers(
        dest="action", required=True
    )
    for name in ("add", "remove"):
        one = leaf(people, name)
        who = one.add_mutually_exclusive_group(required=True)
        who.add_argument("--telegram-id", type=int)
        who.add_argument("--viber-id")
        if name == "add":
            one.add_argument("--name", required=True)
            one.add_argument("--role", choices=ROLES, required=True)
    leaf(people, "list")

    bc = sub.add_parser("broadcast", help="announcements").add_subparsers(
        dest="action", required=True
    )
    create = leaf(bc, "create")
    create.add_argument("--text", action="append", help='LANG=TEXT, e.g. ka="…"; repeat')
    create.add_argument("--language", action="append", choices=LANGUAGES)
    create.add_argument("--municipality", action="append")
    create.add_argument("--gender", action="append")
    create.add_argument("--age-group", action="append")
    create.add_argument("--campaign")
    create.add_argument("--event", type=int)
    create.add_argument("--photo", help="a picture's address (.jpg, .jpeg, .png, .webp)")
    create.add_argument("--link")
    create.add_argument("--at", help="YYYY-MM-DD HH:MM in Tbilisi time; default now")
    create.add_argument("--yes", action="store_true", help="confirm after the preview")
    leaf(bc, "list")
    for name in ("cancel", "status"):
        leaf(bc, name).add_argument("id", type=int)

    ev = sub.add_parser("event", help="events and reminders").add_subparsers(
        dest="action", required=True
    )
    make = leaf(ev, "create")
    make.add_argument("--title", action="append", required=True, help="LANG=TITLE; repeat")
    make.add_argument("--description", action="append")
    make.add_argument("--starts", required=True, help="YYYY-MM-DD HH:MM, Tbilisi time")
    make.add_argument("--place", required=True)
    make.add_argument("--municipality")
    make.add_argument("--capacity", type=int)
    move = leaf(ev, "move")
    move.add_argument("id", type=int)
    move.add_argument("--starts")
    move.add_argument("--place")
    leaf(ev, "cancel").add_argument("id", type=int)
    leaf(ev, "list")

    cp = sub.add_parser("campaign", help="advocacy campaigns").add_subparsers(
        dest="action", required=True
    )
    start = leaf(cp, "create")
    start.add_argument("code")
    start.add_argument("--title", action="append", required=True)
    start.add_argument("--description", action="append")
    post = leaf(cp, "update")
    post.add_argument("code")
    post.add_argument("--text", action="append", required=True)
    leaf(cp, "list")

    report = sub.add_parser("report", help="reports").add_subparsers(dest="action", required=True)
    status = leaf(report, "status")
    status.add_argument("reference")
    status.add_argument("status")

    question = sub.add_parser("question", help="DCFTA questions").add_subparsers(
        dest="action", required=True
    )
    answer = leaf(question, "answer")
    answer.add_argument("reference")
    answer.add_argument("text")
    answer.add_argument("--promote", action="store_true", help="also add it to the FAQ")


async def run(
    command: str, args: argparse.Namespace, settings: Settings, db: Database | None = None
) -> None:
    """Run one command in one transaction; a refusal rolls it back and exits non-zero."""
    owned = db is None
    db = db or Database(settings.database_url, schema=settings.database_schema)
    try:
        async with db.transaction() as session:
            req = await execute(session, command, args, settings)
        if command == "broadcast" and args.action == "create" and req.schedule_changed:
            # The scheduler runs in the bot's process; a broadcast due now starts here, after
            # the commit and outside any resident's turn, as the scheduler would start it.
            queued = await DueWork(db, settings).run(utcnow())
            print(f"{queued} messages queued")
    except OperationError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(error.exit_status) from None
    finally:
        if owned:
            await db.close()


async def execute(
    session: AsyncSession, command: str, args: argparse.Namespace, settings: Settings
) -> Request:
    """The command within the caller's transaction; refusals raise `OperationError`."""
    actor = await _actor(session, getattr(args, "actor", None))
    req = Request(session, settings, load_content(), actor, utcnow())
    await _run(req, command, args)
    return req


async def _actor(session: AsyncSession, given: str | None) -> Actor:
    if not given:
        return OPERATOR
    channel, sep, address = given.partition(":")
    if not sep or not address:
        raise Invalid("as", "format", value=given)
    role = await staff_accounts.role_of(session, channel, address)
    return Actor(role=role, name=f"{channel}:{address}", channel=channel, address=address)


async def _run(req: Request, command: str, args: argparse.Namespace) -> None:
    action = args.action
    tz = ZoneInfo(req.settings.tz_name)
    if command == "staff":
        if action == "add":
            channel, address = _identity(args)
            member = await staff.add(req, staff.NewMember(channel, address, args.name, args.role))
            print(f"{member.name} is now {member.role} ({member.channel} {member.address})")
        elif action == "remove":
            await staff.remove(req, staff.Account(*_identity(args)))
            print("removed")
        else:
            for m in await staff.listing(req):
                print(f"{m.role:12} {m.channel:9} {m.address:24} {m.name}")
    elif command == "broadcast":
        await _broadcast(req, action, args, tz)
    elif command == "event":
        await _event(req, action, args, tz)
    elif command == "campaign":
        if action == "create":
            made = await campaigns.create(
                req,
                campaigns.NewCampaign(
                    args.code,
                    _per_language("titles", args.title),
                    _per_language("descriptions", args.description),
                ),
            )
            print(f"campaign {made.code} created; deep link payload: campaign-{made.code}")
        elif action == "update":
            update = campaigns.Update(args.code, _per_language("texts", args.text))
            queued = await campaigns.update(req, update)
            print(
                f"update to {queued.followers} followers queued (job {queued.job_id}); "
                "the running bot sends it"
            )
        else:
            for c in await campaigns.listing(req):
                print(f"{c.code:20} followers {c.followers:5} {c.title}")
    elif command == "report":
        done = await reports.set_status(req, reports.StatusChange(args.reference, args.status))
        told = "told" if done.told else "not reachable"
        print(f"{done.reference} is {done.status}; resident {told}")
    elif command == "question":
        answered = await reports.answer(req, reports.Answer(args.reference, args.text))
        if args.promote:
            await reports.promote(req, args.reference)
        told = "told" if answered.told else "not reachable"
        print(f"{answered.reference} answered; resident {told}")


async def _broadcast(req: Request, action: str, args: argparse.Namespace, tz: ZoneInfo) -> None:
    if action == "create":
        draft = broadcasts.Draft(
            texts=_per_language("texts", args.text),
            audience=Audience(
                languages=tuple(args.language or ()),
                municipalities=tuple(args.municipality or ()),
                genders=tuple(args.gender or ()),
                age_groups=tuple(args.age_group or ()),
                campaign=args.campaign,
                event_id=args.event,
            ),
            photo=args.photo,
            link=args.link,
            send_at=args.at,
        )
        summary = await broadcasts.preview(req, draft)
        print(f"audience: {summary.total} ({summary.per_channel})")
        for lang, count in summary.fallback.items():
            print(f"  {count} reading {lang} get the fallback")
        cost = summary.viber_outside_window * summary.viber_price
        print(f"  viber outside the 24-hour window: {summary.viber_outside_window} (~{cost:.2f})")
        if not args.yes:
            print("not sent: add --yes to confirm")
            return
        created = await broadcasts.create(req, draft)
        if created.send_at is None:
            print(f"broadcast {created.id} is due now")
        else:
            print(f"broadcast {created.id} scheduled for {created.send_at.isoformat()}")
    elif action == "cancel":
        stopped = await broadcasts.cancel(req, args.id)
        print(f"broadcast {stopped.id} cancelled (was {stopped.was}); {stopped.not_sent} not sent")
    elif action == "status":
        p = await broadcasts.progress(req, args.id)
        print(
            f"{p.status}: waiting {p.queued}, sent {p.sent}, delivered {p.delivered}, "
            f"failed {p.failed}, unreachable {p.unreachable}, cancelled {p.cancelled}"
        )
    else:
        for b in await broadcasts.listing(req):
            when = f"{b.send_at.astimezone(tz):%Y-%m-%d %H:%M}" if b.send_at else "-"
            print(f"{b.id:5} {b.status:10} {when} {list(b.languages)}")


async def _event(req: Request, action: str, args: argparse.Namespace, tz: ZoneInfo) -> None:
    if action == "create":
        made = await events.create(
            req,
            events.NewEvent(
                titles=_per_language("titles", args.title),
                descriptions=_per_language("descriptions", args.description),
                starts_at=args.starts,
                place=args.place,
                municipality=args.municipality,
                capacity=args.capacity,
            ),
        )
        print(f"event {made.id} created")
    elif action in ("move", "cancel"):
        if action == "move":
            changed = await events.move(req, events.Move(args.id, args.starts, args.place))
        else:
            changed = await events.cancel(req, args.id)
        print(
            f"event {changed.id} {action}d; the running bot tells the {changed.going} "
            f"registered (job {changed.job_id})"
        )
    else:
        for e in await events.listing(req):
            when = e.starts_at.astimezone(tz)
            print(f"{e.id:5} {when:%Y-%m-%d %H:%M} going {e.going:4} {e.title}")
