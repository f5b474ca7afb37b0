"""Chat exports as files behind unguessable, short-lived links.

Telegram takes an uploaded file, but Viber's REST API sends a file only by URL,
which Viber's servers then fetch. So an export written in the chat gets a name
holding 24 random bytes (the name is the only credential, like a shared link),
and `/exports/<name>` serves it only while it is younger than EXPORT_LINK_HOURS.
Exports hold residents' personal data: anything older is refused and deleted
when the next export is written, so links cannot leak the data for long.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from aiohttp import web

from bot.config import Settings

log = logging.getLogger(__name__)

ROUTE = "/exports/{name}"
# khma-<YYYYmmdd>-<HHMM>-<32 characters of token_urlsafe(24)>.csv: nothing else is served,
# so no `..`, no slash, no other file of the folder can ever be named in a request.
NAME = re.compile(r"khma-(\d{8}-\d{4})-[A-Za-z0-9_-]{32}\.csv")
NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class ExportLinks:
    """Where chat exports live and how long a link to one works."""

    folder: Path
    ttl: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> ExportLinks:
        return cls(settings.exports_dir, settings.export_link_ttl)

    def new_path(self, now: datetime) -> Path:
        """A fresh file name for an export; clears out expired ones first."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sweep()
        return self.folder / f"khma-{now:%Y%m%d-%H%M}-{secrets.token_urlsafe(24)}.csv"

    def _expired(self, path: Path) -> bool:
        # File times, not the app's clock: the file's age is what a leaked link exposes.
        return time.time() - path.stat().st_mtime > self.ttl.total_seconds()

    def find(self, name: str) -> Path | None:
        """The export a link names, or None when the name is not ours or the link expired."""
        if not NAME.fullmatch(name):
            return None
        path = self.folder / name
        try:
            if path.is_file() and not path.is_symlink() and not self._expired(path):
                return path
        except OSError:
            return None
        return None

    def sweep(self) -> int:
        """Delete expired exports; returns how many went."""
        removed = 0
        for path in self.folder.glob("khma-*.csv"):
            try:
                if NAME.fullmatch(path.name) and self._expired(path):
                    path.unlink()
                    removed += 1
            except OSError:
                continue  # another process swept it first
        if removed:
            log.info("deleted %d expired export file(s)", removed)
        return removed

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(ROUTE, self._serve)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        path = self.find(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound(headers=NO_STORE)
        return web.FileResponse(
            path,
            headers={
                **NO_STORE,
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": f'attachment; filename="{display_name(path)}"',
                "X-Content-Type-Options": "nosniff",
            },
        )


def display_name(path: Path) -> str:
    """What the coordinator sees: the date and time, without the secret part of the name."""
    found = NAME.fullmatch(path.name)
    return f"khma-{found.group(1)}.csv" if found else path.name


def link(public_base: str, path: Path) -> str:
    """The export's URL under the app's public address (e.g. from VIBER_WEBHOOK_URL)."""
    return public_base.rstrip("/") + ROUTE.format(name=path.name)
