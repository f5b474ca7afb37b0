"""Settings read from the environment once, at start.

Everything secret (tokens, webhook secrets) comes from the environment only, so
nothing sensitive is ever committed or passed on a command line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path

from bot.vocabulary.languages import LANGUAGES

DEFAULT_TELEGRAM_API_URL = "https://api.telegram.org"
DEFAULT_VIBER_API_URL = "https://chatapi.viber.com/pa"


class ConfigError(ValueError):
    """A setting is present but unusable; raised at start, never mid-conversation."""


def _load_dotenv(path: Path) -> dict[str, str]:
    """Read KEY=VALUE lines so newcomers can keep settings in `.env` (never committed)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def _quiet_hours(text: str) -> tuple[time, time] | None:
    """`22:00-09:00` (Tbilisi time) or `off`: when bulk messages wait for the morning."""
    if text.strip().lower() in ("off", "none", ""):
        return None
    try:
        start, end = (time.fromisoformat(part.strip()) for part in text.split("-"))
    except ValueError as error:
        raise ConfigError(f"QUIET_HOURS must look like 22:00-09:00 or off, got {text!r}") from error
    return start, end


def _languages(text: str) -> tuple[str, ...]:
    order = tuple(code.strip() for code in text.split(",") if code.strip())
    unknown = set(order) - set(LANGUAGES)
    if unknown:
        raise ConfigError(f"LANGUAGE_FALLBACK has unknown languages: {sorted(unknown)}")
    return order


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite+aiosqlite:///data/khma.db"
    database_schema: str | None = None
    telegram_token: str | None = None
    telegram_api_url: str = DEFAULT_TELEGRAM_API_URL
    telegram_webhook_url: str | None = None
    telegram_webhook_secret: str | None = None
    viber_token: str | None = None
    viber_api_url: str = DEFAULT_VIBER_API_URL
    viber_webhook_url: str | None = None
    viber_bot_name: str = "Khma"
    viber_avatar_url: str | None = None
    viber_min_api_version: int = 6
    viber_keyboard_rows: int = 10
    host: str = "127.0.0.1"
    port: int = 8080
    tz_name: str = "Asia/Tbilisi"
    active_municipalities: tuple[str, ...] = field(default_factory=tuple)
    max_text_length: int = 2000
    poll_timeout: int = 25
    telegram_rate: float = 30.0
    telegram_chat_rate: float = 1.0
    viber_rate: float = 30.0
    viber_chat_rate: float = 1.0
    viber_message_price: float = 0.0
    quiet_hours: tuple[time, time] | None = (time(22, 0), time(9, 0))
    language_fallback: tuple[str, ...] = ("ka", "ru", "az", "hy")
    reminder_offsets: tuple[timedelta, ...] = (timedelta(hours=24), timedelta(hours=2))
    followup_after: timedelta = timedelta(weeks=4)
    dispatch_lease: float = 60.0
    exports_dir: Path = Path("data") / "exports"
    export_link_ttl: timedelta = timedelta(hours=24)
    log_level: str = "INFO"

    @property
    def telegram_base_url(self) -> str:
        """python-telegram-bot wants the `/bot` prefix it appends the token to."""
        return self.telegram_api_url.rstrip("/") + "/bot"

    @property
    def telegram_base_file_url(self) -> str:
        return self.telegram_api_url.rstrip("/") + "/file/bot"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, dotenv: Path | None = None) -> Settings:
        merged: dict[str, str] = _load_dotenv(dotenv or Path(".env")) if env is None else {}
        merged.update(os.environ if env is None else env)

        def get(name: str) -> str | None:
            value = merged.get(name, "").strip()
            return value or None

        port_text = get("PORT") or "8080"
        if not port_text.isdigit():
            raise ConfigError(f"PORT must be a number, got {port_text!r}")
        secret = get("TELEGRAM_WEBHOOK_SECRET")
        if secret and not all(c.isalnum() or c in "_-" for c in secret):
            raise ConfigError("TELEGRAM_WEBHOOK_SECRET may hold only A-Z, a-z, 0-9, _ and -")
        active = tuple(
            code.strip() for code in (get("ACTIVE_MUNICIPALITIES") or "").split(",") if code.strip()
        )
        link_text = get("EXPORT_LINK_HOURS") or "24"
        try:
            link_hours = float(link_text)
        except ValueError:
            link_hours = 0.0
        if not 0 < link_hours < float("inf"):  # nan too: a link that never expires leaks
            raise ConfigError(f"EXPORT_LINK_HOURS must be a number above 0, got {link_text!r}")
        return cls(
            database_url=get("DATABASE_URL") or cls.database_url,
            database_schema=get("DATABASE_SCHEMA"),
            telegram_token=get("TELEGRAM_TOKEN"),
            telegram_api_url=get("TELEGRAM_API_URL") or DEFAULT_TELEGRAM_API_URL,
            telegram_webhook_url=get("TELEGRAM_WEBHOOK_URL"),
            telegram_webhook_secret=secret,
            viber_token=get("VIBER_TOKEN"),
            viber_api_url=get("VIBER_API_URL") or DEFAULT_VIBER_API_URL,
            viber_webhook_url=get("VIBER_WEBHOOK_URL"),
            viber_bot_name=get("VIBER_BOT_NAME") or "Khma",
            viber_avatar_url=get("VIBER_AVATAR_URL"),
            viber_min_api_version=int(get("VIBER_MIN_API_VERSION") or 6),
            viber_keyboard_rows=int(get("VIBER_KEYBOARD_ROWS") or 10),
            host=get("HOST") or "127.0.0.1",
            port=int(port_text),
            tz_name=get("TZ_NAME") or "Asia/Tbilisi",
            active_municipalities=active,
            max_text_length=int(get("MAX_TEXT_LENGTH") or 2000),
            poll_timeout=int(get("TELEGRAM_POLL_TIMEOUT") or 25),
            dispatch_lease=float(get("DISPATCH_LEASE_SECONDS") or 60),
            telegram_rate=float(get("TELEGRAM_RATE") or 30),
            telegram_chat_rate=float(get("TELEGRAM_CHAT_RATE") or 1),
            viber_rate=float(get("VIBER_RATE") or 30),
            viber_chat_rate=float(get("VIBER_CHAT_RATE") or 1),
            viber_message_price=float(get("VIBER_MESSAGE_PRICE") or 0),
            quiet_hours=_quiet_hours(get("QUIET_HOURS") or "22:00-09:00"),
            language_fallback=_languages(get("LANGUAGE_FALLBACK") or "ka,ru,az,hy"),
            reminder_offsets=tuple(
                timedelta(hours=float(h)) for h in (get("REMINDER_HOURS") or "24,2").split(",")
            ),
            followup_after=timedelta(days=float(get("FOLLOWUP_DAYS") or 28)),
            exports_dir=Path(get("EXPORTS_DIR") or cls.exports_dir),
            export_link_ttl=timedelta(hours=link_hours),
            log_level=(get("LOG_LEVEL") or "INFO").upper(),
        )

    def __repr__(self) -> str:
        """Never print tokens, even when settings end up in a traceback or a log."""
        hidden = {"telegram_token", "telegram_webhook_secret", "viber_token"}
        parts = []
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            parts.append(f"{name}={'***' if name in hidden and value else value!r}")
        return f"Settings({', '.join(parts)})"
