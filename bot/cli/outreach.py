"""`python -m bot staff | broadcast | event | campaign | report | question …` for scripting.

The same operations staff have in the chat, for CSO operators and cron jobs.
What they queue for residents is sent by the running bot's dispatcher.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.config import LANGUAGES, Settings
from bot.outreach import broadcasts, campaigns, events, loop, staff
from bot.outreach.audience import Audience, summarise
from bot.vocabulary.roles import ROLES
from storage.db import Database
from storage.models import Broadcast, utcnow


def _per_language(pairs: list[str] | None) -> dict[str, str]:
    """`--text ka="…" --text ru="…"` → {"ka": "…", "ru": "…"}."""
    found: dict[str, str] = {}
    for pair in pairs or []:
        lang, sep, text = pair.partition("=")
        if not sep or lang not in LANGUAGES:
            raise SystemExit(
                f"expected LANG=TEXT with LANG one of {', '.join(LANGUAGES)}: {pair!r}"
            )
        found[lang] = text
    return found


def _moment(text: str | None, settings: Settings) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(settings.tz_name))


def _identity(args: argparse.Namespace) -> tuple[str, str]:
    if getattr(args, "telegram_id", None):
        return "telegram", str(args.telegram_id)
    if getattr(args, "viber_id", None):
        return "viber", args.viber_id
    raise SystemExit("give --telegram-id or --viber-id")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    people = sub.add_parser("staff", help="staff identities and roles").add_subparsers(
        dest="action", required=True
    )
    for name in ("add", "remove"):
        one = people.add_parser(name)
        who = one.add_mutually_exclusive_group(required=True)
        who.add_argument("--telegram-id", type=int)
        who.add_argument("--viber-id")
        if name == "add":
            one.add_argument("--name", required=True)
            one.add_argument("--role", choices=ROLES, required=True)
    people.add_parser("list")

    bc = sub.add_parser("broadcast", help="announcements").add_subparsers(
        dest="action", required=True
    )
    create = bc.add_parser("create")
    create.add_argument("--text", action="append", help='LANG=TEXT, e.g. ka="…"; repeat')
    create.add_argument("--language", action="append", choices=LANGUAGES)
    create.add_argument("--municipality", action="append")
    create.add_argument("--gender", action="append")
    create.add_argument("--age-group", action="append")
    create.add_argument("--campaign")
    create.add_argument("--event", type=int)
    create.add_argument("--photo")
    create.add_argument("--link")
    create.add_argument("--at", help="YYYY-MM-DD HH:MM in Tbilisi time; default now")
    create.add_argument("--yes", action="store_true", help="confirm after the preview")
    bc.add_parser("list")
    for name in ("cancel", "status"):
        bc.add_parser(name).add_argument("id", type=int)

    ev = sub.add_parser("event", help="events and reminders").add_subparsers(
        dest="action", required=True
    )
    make = ev.add_parser("create")
    make.add_argument("--title", action="append", required=True, help="LANG=TITLE; repeat")
    make.add_argument("--description", action="append")
    make.add_argument("--starts", required=True, help="YYYY-MM-DD HH:MM, Tbilisi time")
    make.add_argument("--place", required=True)
    make.add_argument("--municipality")
    make.add_argument("--capacity", type=int)
    move = ev.add_parser("move")
    move.add_argument("id", type=int)
    move.add_argument("--starts")
    move.add_argument("--place")
    ev.add_parser("cancel").add_argument("id", type=int)
    ev.add_parser("list")

    cp = sub.add_parser("campaign", help="advocacy campaigns").add_subparsers(
        dest="action", required=True
    )
    start = cp.add_parser("create")
    start.add_argument("code")
    start.add_argument("--title", action="append", required=True)
    start.add_argument("--description", action="append")
    post = cp.add_parser("update")
    post.add_argument("code")
    post.add_argument("--text", action="append", required=True)
    cp.add_parser("list")

    report = sub.add_parser("report", help="reports").add_subparsers(dest="action", required=True)
    status = report.add_parser("status")
    status.add_argument("reference")
    status.add_argument("status", choices=loop.STATUSES)

    question = sub.add_parser("question", help="DCFTA questions").add_subparsers(
        dest="action", required=True
    )
    answer = question.add_parser("answer")
    answer.add_argument("reference")
    answer.add_argument("text")
    answer.add_argument("--promote", action="store_true", help="also add it to the FAQ")


async def run(command: str, args: argparse.Namespace, settings: Settings) -> None:
    db = Database(settings.database_url, schema=settings.database_schema)
    try:
        async with db.transaction() as session:
            await _run(session, command, args, settings)
    finally:
        await db.close()


async def _run(session, command: str, args: argparse.Namespace, settings: Settings) -> None:
    now = utcnow()
    fallback, tz = settings.language_fallback, settings.tz_name
    action = args.action
    if command == "staff":
        if action == "add":
            channel, address = _identity(args)
            await staff.add(session, channel, address, args.name, args.role)
            print(f"{args.name} is now {args.role} ({channel} {address})")
        elif action == "remove":
            channel, address = _identity(args)
            print("removed" if await staff.remove(session, channel, address) else "not found")
        else:
            for member in await staff.listing(session):
                print(f"{member.role:12} {member.channel:9} {member.address:24} {member.name}")
    elif command == "broadcast":
        if action == "create":
            texts = _per_language(args.text)
            audience = Audience(
                languages=tuple(args.language or ()),
                municipalities=tuple(args.municipality or ()),
                genders=tuple(args.gender or ()),
                age_groups=tuple(args.age_group or ()),
                campaign=args.campaign,
                event_id=args.event,
            )
            summary = await summarise(session, audience, texts, now)
            print(f"audience: {summary.total} ({dict(summary.per_channel)})")
            for lang, count in summary.fallback.items():
                print(f"  {count} reading {lang} get the fallback ({', '.join(fallback)})")
            cost = summary.viber_outside_window * settings.viber_message_price
            print(
                f"  viber outside the 24-hour window: {summary.viber_outside_window} (~{cost:.2f})"
            )
            if not args.yes:
                print("not sent: add --yes to confirm")
                return
            send_at = _moment(args.at, settings)
            created = await broadcasts.create(
                session,
                texts=texts,
                audience=audience,
                now=now,
                send_at=send_at,
                photo_id=args.photo,
                link=args.link,
                created_by="cli",
            )
            if send_at is None or send_at <= now:
                queued = await broadcasts.start_due(session, now, fallback, tz)
                print(f"broadcast {created.id}: {queued} messages queued")
            else:
                print(f"broadcast {created.id} scheduled for {send_at.isoformat()}")
        elif action == "cancel":
            print("cancelled" if await broadcasts.cancel(session, args.id, now) else "not found")
        elif action == "status":
            found = await session.get(Broadcast, args.id)
            if found is None:
                raise SystemExit("no such broadcast")
            p = await broadcasts.progress(session, args.id)
            print(
                f"{found.status}: waiting {p.queued}, sent {p.sent}, delivered {p.delivered}, "
                f"failed {p.failed}, unreachable {p.unreachable}, cancelled {p.cancelled}"
            )
        else:
            from sqlalchemy import select

            for b in (await session.execute(select(Broadcast).order_by(Broadcast.id))).scalars():
                print(f"{b.id:5} {b.status:10} {b.send_at:%Y-%m-%d %H:%M} {sorted(b.texts)}")
    elif command == "event":
        if action == "create":
            event = await events.create(
                session,
                titles=_per_language(args.title),
                descriptions=_per_language(args.description),
                starts_at=_moment(args.starts, settings),
                place=args.place,
                municipality=args.municipality,
                capacity=args.capacity,
                now=now,
            )
            print(f"event {event.id} created")
        elif action in ("move", "cancel"):
            told = await events.change(
                session,
                args.id,
                now=now,
                fallback=fallback,
                tz_name=tz,
                starts_at=_moment(getattr(args, "starts", None), settings),
                place=getattr(args, "place", None),
                cancel=action == "cancel",
            )
            print(f"event {args.id} {action}d; {told} residents told")
        else:
            for e in await events.upcoming_for(session, None, now):
                going = await events.going(session, e.id)
                print(
                    f"{e.id:5} {e.starts_at.astimezone(ZoneInfo(tz)):%Y-%m-%d %H:%M} "
                    f"going {going:4} {events.title_in(e, 'en', fallback)}"
                )
    elif command == "campaign":
        if action == "create":
            campaign = await campaigns.create(
                session,
                code=args.code,
                titles=_per_language(args.title),
                descriptions=_per_language(args.description),
                now=now,
            )
            print(f"campaign {campaign.code} created; deep link payload: campaign-{campaign.code}")
        elif action == "update":
            queued = await campaigns.post_update(
                session,
                args.code,
                _per_language(args.text),
                now=now,
                fallback=fallback,
                tz_name=tz,
                update_id=f"cli-{now.timestamp()}",
            )
            print(f"update queued for {queued} followers")
        else:
            for c in await campaigns.active(session):
                print(f"{c.code:20} {next(iter(c.titles.values()), '')}")
    elif command == "report":
        told = await loop.set_status(session, args.reference, args.status, now=now, tz_name=tz)
        print(f"{args.reference} is {args.status}; resident {'told' if told else 'not reachable'}")
    elif command == "question":
        told = await loop.answer(session, args.reference, args.text, now=now, tz_name=tz)
        if args.promote:
            await loop.promote(session, args.reference, now)
        print(f"{args.reference} answered; resident {'told' if told else 'not reachable'}")
