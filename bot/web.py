"""The aiohttp server: health check and the platforms' webhooks."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from bot.channels.telegram import TelegramChannel


@dataclass
class Readiness:
    """`/healthz` says 200 only once every part has started."""

    ready: bool = False
    parts: dict[str, bool] = field(default_factory=dict)


def build_web_app(readiness: Readiness, telegram: TelegramChannel | None) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)

    async def healthz(_request: web.Request) -> web.Response:
        if not readiness.ready:
            return web.json_response({"status": "starting"}, status=503)
        return web.json_response({"status": "ok"})

    app.router.add_get("/healthz", healthz)

    if telegram is not None:

        async def telegram_webhook(request: web.Request) -> web.Response:
            answer = await telegram.receive_webhook(request.headers, await request.read())
            return web.Response(status=answer.status, text=answer.body)

        app.router.add_post("/webhooks/telegram", telegram_webhook)
    return app
