"""The aiohttp server: health check, the platforms' webhooks and short-lived export links."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

from bot.channels.base import WebhookChannel
from bot.web.export_links import ExportLinks


@dataclass
class Readiness:
    """`/healthz` says 200 only once every part has started."""

    ready: bool = False


def _webhook(channel: WebhookChannel):
    async def handle(request: web.Request) -> web.Response:
        answer = await channel.receive_webhook(request.headers, await request.read())
        if answer.json is not None:
            return web.json_response(dict(answer.json), status=answer.status)
        return web.Response(status=answer.status, text=answer.text)

    return handle


def build_web_app(
    readiness: Readiness,
    channels: Iterable[WebhookChannel],
    exports: ExportLinks | None = None,
) -> web.Application:
    """`exports` is given only where a platform needs files by URL (Viber): no link otherwise."""
    app = web.Application(client_max_size=1024 * 1024)

    async def healthz(_request: web.Request) -> web.Response:
        if not readiness.ready:
            return web.json_response({"status": "starting"}, status=503)
        return web.json_response({"status": "ok"})

    app.router.add_get("/healthz", healthz)
    for channel in channels:
        app.router.add_post(f"/webhooks/{channel.name}", _webhook(channel))
    if exports is not None:
        exports.add_routes(app)
    return app
