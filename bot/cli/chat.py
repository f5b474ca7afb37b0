"""A terminal conversation with the real engine, for anyone without a Telegram token.

Newcomers walk every flow in every language here: the same engine, flows,
storage and outbox as on Telegram, with this terminal as the channel.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import TextIO

from bot.channels.base import PartSent
from bot.config import Settings
from bot.delivery.dispatch import Dispatcher
from bot.engine.engine import Engine
from bot.vocabulary.messages import Inbound, Kind, Reply
from flows.content import load_content
from storage.db import Database

NAME = "cli"
INTRO = """\
Khma terminal chat: you are a resident, Khma answers below.
Type a button's number (or its text) to tap it. To try what a phone can send:
  !photo  !voice  !video  !document  !sticker  !contact  !location 41.47 44.81
Commands such as /menu, /language, /mydata, /delete, /cancel work at any time.
Ctrl-D ends the chat; your conversation is kept for next time.
"""
FAKE_MEDIA = {
    "!photo": Kind.PHOTO,
    "!voice": Kind.VOICE,
    "!video": Kind.VIDEO,
    "!document": Kind.DOCUMENT,
    "!sticker": Kind.STICKER,
    "!contact": Kind.CONTACT,
}


class TerminalChannel:
    """Prints replies; buttons become a numbered list the resident answers by number."""

    name = NAME

    def __init__(self, out: TextIO) -> None:
        self.out = out

    async def send(
        self, address: str, reply: Reply, *, first_part: int = 0, part_sent: PartSent | None = None
    ) -> str | None:
        """One part: the whole text at once, however long."""
        if reply.edit_message_id:
            return reply.edit_message_id
        lines = ["", "Khma › " + reply.text.replace("\n", "\n       ")]
        if reply.document:  # the chat runs on the server itself: the path is the file
            lines.append(f"   📎 {reply.document}")
        number = 0
        for row in reply.buttons:
            for button in row:
                number += 1
                lines.append(f"   [{number}] {button.label}")
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        return None


def parse_line(line: str, address: str, name: str, language: str | None) -> Inbound:
    text = line.rstrip("\n")
    common = {
        "channel": NAME,
        "address": address,
        "external_id": uuid.uuid4().hex,
        "display_name": name,
        "platform_language": language,
    }
    word, _, rest = text.strip().partition(" ")
    if word == "!location":
        try:
            lat, lon = (float(part) for part in rest.split()[:2])
        except ValueError:
            lat, lon = 41.4759, 44.8089
        return Inbound(kind=Kind.LOCATION, latitude=lat, longitude=lon, **common)
    if word in FAKE_MEDIA:
        kind = FAKE_MEDIA[word]
        media_id = None if kind in (Kind.STICKER, Kind.CONTACT) else f"local-{uuid.uuid4().hex[:8]}"
        return Inbound(kind=kind, media_id=media_id, text=rest or None, **common)
    return Inbound(kind=Kind.TEXT, text=text, **common)


async def chat(
    settings: Settings,
    *,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
    address: str = "local",
    name: str = "Newcomer",
    language: str | None = None,
) -> None:
    db = Database(settings.database_url, schema=settings.database_schema)
    await db.migrate()
    engine = Engine(db, settings, load_content(settings.active_municipalities))
    dispatcher = Dispatcher(db, {NAME: TerminalChannel(stdout)})
    loop = asyncio.get_running_loop()

    async def say(text: str) -> None:
        await engine.accept(parse_line(text, address, name, language))
        await engine.process_pending()
        while await dispatcher.dispatch_once():
            pass

    stdout.write(INTRO)
    try:
        await say("/start")
        while True:
            stdout.write("\nyou › ")
            stdout.flush()
            line = await loop.run_in_executor(None, stdin.readline)
            if not line:
                break
            if line.strip():
                await say(line)
    finally:
        stdout.write("\n")
        await db.close()
