"""The aiohttp server: health check, the platforms' webhooks and short-lived export links."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

from bot.channels.base import WebhookChannel
from bot.web.export_links import ExportLinks
from storage.db import Database

log = logging.getLogger(__name__)

# `/healthz` says 503 when the database takes longer than this to answer.
HEALTH_TIMEOUT = 1.0


@dataclass
class Readiness:
    """`/healthz` says 200 only once every part has started (and while the database serves)."""

    ready: bool = False


def _webhook(channel: WebhookChannel):
    async def handle(request: web.Request) -> web.Response:
        answer = await channel.receive_webhook(request.headers, await request.read())
        if answer.json is not None:
            return web.json_response(dict(answer.json), status=answer.status)
        return web.Response(status=answer.status, text=answer.text)

    return handle


async def health(readiness: Readiness, db: Database | None) -> tuple[int, dict[str, str]]:
    """200 only while started, the database answers within a second, the schema at head."""
    if not readiness.ready:
        return 503, {"status": "starting"}
    if db is None:
        return 200, {"status": "ok"}
    try:
        state = await db.answers_within(HEALTH_TIMEOUT)
    except TimeoutError:
        return 503, {"status": "database unreachable", "reason": "no answer within 1 s"}
    except Exception as error:
        if not db.noticed(error):
            log.warning("health check failed: %s", type(error).__name__)
        return 503, {"status": "database unreachable", "reason": type(error).__name__}
    problem = state.problem()
    if problem is not None:
        return 503, {"status": "schema behind", "reason": problem}
    return 200, {"status": "ok"}


def build_web_app(
    readiness: Readiness,
    channels: Iterable[WebhookChannel],
    exports: ExportLinks | None = None,
    db: Database | None = None,
) -> web.Application:
    """`exports` is given only where a platform needs files by URL (Viber): no link otherwise."""
    app = web.Application(client_max_size=1024 * 1024)

    async def healthz(_request: web.Request) -> web.Response:
        status, body = await health(readiness, db)
        return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})

    app.router.add_get("/healthz", healthz)
    for channel in channels:
        app.router.add_post(f"/webhooks/{channel.name}", _webhook(channel))
    if exports is not None:
        exports.add_routes(app)
    return app
