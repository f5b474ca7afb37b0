"""Settings read from the environment (and `.env`) once, at start, by pydantic-settings.

Everything secret (tokens, the webhook secret, the password inside DATABASE_URL) comes
from the environment only, so nothing sensitive is ever committed or passed on a command
line, and it is masked in every repr, str and error message: settings end up in
tracebacks and logs. A value that cannot be used stops the start with a `ConfigError`
that names the variable and says what is wrong with the value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bot.vocabulary.languages import LANGUAGES

__all__ = ["LANGUAGES", "ConfigError", "Settings"]

DEFAULT_TELEGRAM_API_URL = "https://api.telegram.org"
DEFAULT_VIBER_API_URL = "https://chatapi.viber.com/pa"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///data/khma.db"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Fields whose values are never shown: in reprs, in strs, in configuration errors.
SECRETS = frozenset({"telegram_token", "telegram_webhook_secret", "viber_token"})
HIDDEN = "***"


class ConfigError(ValueError):
    """A setting is present but unusable; raised at start, never mid-conversation."""


def _env(name: str) -> Any:
    """The environment variable a field is read from (`Settings(field=…)` works as well)."""
    return Field(None, validation_alias=name)


def hide_password(url: str) -> str:
    """A database URL fit to print: its password, if any, replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return HIDDEN if "@" in url else url


def _split(value: Any) -> Any:
    """Comma-separated lists (`ka,ru`, `24,2`), as people write them in an environment."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _positive(value: Any) -> float:
    number = float(value)
    if not (number > 0 and math.isfinite(number)):  # nan too: a link that never expires leaks
        raise ValueError("must be a number above 0")
    return number


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// address")
    return value


class Settings(BaseSettings):
    """Every setting Khma reads; the README's configuration table lists the variables."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        case_sensitive=True,
        extra="ignore",
        frozen=True,
        str_strip_whitespace=True,
        validate_by_name=True,
        validate_by_alias=True,
        validate_default=False,
    )

    database_url: str = Field(DEFAULT_DATABASE_URL, validation_alias="DATABASE_URL")
    database_schema: str | None = _env("DATABASE_SCHEMA")
    # Seconds to connect and for any one statement (SQLite: to wait for a lock); past it
    # the database counts as unreachable and webhooks answer 503.
    database_timeout: float = Field(5.0, gt=0, le=300, validation_alias="DATABASE_TIMEOUT")
    telegram_token: str | None = _env("TELEGRAM_TOKEN")
    telegram_api_url: str = Field(DEFAULT_TELEGRAM_API_URL, validation_alias="TELEGRAM_API_URL")
    telegram_webhook_url: str | None = _env("TELEGRAM_WEBHOOK_URL")
    telegram_webhook_secret: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,256}$",
        validation_alias="TELEGRAM_WEBHOOK_SECRET",
    )
    viber_token: str | None = _env("VIBER_TOKEN")
    viber_api_url: str = Field(DEFAULT_VIBER_API_URL, validation_alias="VIBER_API_URL")
    viber_webhook_url: str | None = _env("VIBER_WEBHOOK_URL")
    viber_bot_name: str = Field(
        "Khma", min_length=1, max_length=28, validation_alias="VIBER_BOT_NAME"
    )
    viber_avatar_url: str | None = _env("VIBER_AVATAR_URL")
    viber_min_api_version: int = Field(6, ge=1, le=100, validation_alias="VIBER_MIN_API_VERSION")
    viber_keyboard_rows: int = Field(10, ge=1, le=24, validation_alias="VIBER_KEYBOARD_ROWS")
    host: str = Field("127.0.0.1", min_length=1, validation_alias="HOST")
    port: int = Field(8080, ge=0, le=65535, validation_alias="PORT")
    tz_name: str = Field("Asia/Tbilisi", validation_alias="TZ_NAME")
    active_municipalities: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias="ACTIVE_MUNICIPALITIES"
    )
    max_text_length: int = Field(2000, ge=1, le=100_000, validation_alias="MAX_TEXT_LENGTH")
    poll_timeout: int = Field(25, ge=0, le=600, validation_alias="TELEGRAM_POLL_TIMEOUT")
    telegram_rate: float = Field(30.0, gt=0, allow_inf_nan=False, validation_alias="TELEGRAM_RATE")
    telegram_chat_rate: float = Field(
        1.0, gt=0, allow_inf_nan=False, validation_alias="TELEGRAM_CHAT_RATE"
    )
    viber_rate: float = Field(30.0, gt=0, allow_inf_nan=False, validation_alias="VIBER_RATE")
    viber_chat_rate: float = Field(
        1.0, gt=0, allow_inf_nan=False, validation_alias="VIBER_CHAT_RATE"
    )
    viber_message_price: float = Field(
        0.0, ge=0, allow_inf_nan=False, validation_alias="VIBER_MESSAGE_PRICE"
    )
    quiet_hours: Annotated[tuple[time, time] | None, NoDecode] = Field(
        (time(22, 0), time(9, 0)), validation_alias="QUIET_HOURS"
    )
    language_fallback: Annotated[tuple[str, ...], NoDecode] = Field(
        ("ka", "ru", "az", "hy"), min_length=1, validation_alias="LANGUAGE_FALLBACK"
    )
    reminder_offsets: Annotated[tuple[timedelta, ...], NoDecode] = Field(
        (timedelta(hours=24), timedelta(hours=2)), validation_alias="REMINDER_HOURS"
    )
    followup_after: timedelta = Field(timedelta(weeks=4), validation_alias="FOLLOWUP_DAYS")
    dispatch_lease: float = Field(
        60.0, gt=0, allow_inf_nan=False, validation_alias="DISPATCH_LEASE_SECONDS"
    )
    exports_dir: Path = Field(Path("data") / "exports", validation_alias="EXPORTS_DIR")
    export_link_ttl: timedelta = Field(timedelta(hours=24), validation_alias="EXPORT_LINK_HOURS")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")

    # --- parsing the forms people write --------------------------------------------

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            make_url(value)
        except ArgumentError:
            raise ValueError(
                "is not a database URL (postgresql://user:password@host/name or sqlite:///path)"
            ) from None
        return value

    @field_validator("telegram_api_url")
    @classmethod
    def _bot_api_root(cls, value: str) -> str:
        """The server root; python-telegram-bot's `base_url` form (…/bot) means the same."""
        root = _http_url(value.rstrip("/")) or ""
        return root.removesuffix("/bot").rstrip("/")

    @field_validator("viber_api_url")
    @classmethod
    def _viber_api_root(cls, value: str) -> str:
        return (_http_url(value.rstrip("/")) or "").rstrip("/")

    @field_validator("telegram_webhook_url", "viber_webhook_url", "viber_avatar_url")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return _http_url(value)

    @field_validator("tz_name")
    @classmethod
    def _time_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("is not a time zone name such as Asia/Tbilisi") from None
        return value

    @field_validator("active_municipalities", mode="before")
    @classmethod
    def _codes(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("quiet_hours", mode="before")
    @classmethod
    def _quiet_hours(cls, value: Any) -> Any:
        """`22:00-09:00` (Tbilisi time) or `off`: when bulk messages wait for the morning."""
        if not isinstance(value, str):
            return value
        if value.strip().lower() in ("off", "none", ""):
            return None
        try:
            start, end = (time.fromisoformat(part.strip()) for part in value.split("-"))
        except ValueError:
            raise ValueError("must look like 22:00-09:00, or be off") from None
        return start, end

    @field_validator("language_fallback", mode="before")
    @classmethod
    def _language_order(cls, value: Any) -> Any:
        order = _split(value)
        unknown = sorted(set(order) - set(LANGUAGES))
        if unknown:
            raise ValueError(f"has unknown languages {unknown}; known are {sorted(LANGUAGES)}")
        return order

    @field_validator("reminder_offsets", mode="before")
    @classmethod
    def _reminder_hours(cls, value: Any) -> Any:
        hours = _split(value)
        if not isinstance(hours, tuple) or all(isinstance(h, timedelta) for h in hours):
            return hours
        try:
            return tuple(timedelta(hours=_positive(h)) for h in hours)
        except ValueError:
            raise ValueError("must be hours above 0 separated by commas, such as 24,2") from None

    @field_validator("followup_after", mode="before")
    @classmethod
    def _followup_days(cls, value: Any) -> Any:
        if isinstance(value, timedelta):
            return value
        try:
            return timedelta(days=_positive(value))
        except (ValueError, TypeError, OverflowError):
            raise ValueError("must be a number of days above 0") from None

    @field_validator("export_link_ttl", mode="before")
    @classmethod
    def _link_hours(cls, value: Any) -> Any:
        if isinstance(value, timedelta):
            return value
        try:
            return timedelta(hours=_positive(value))
        except (ValueError, TypeError, OverflowError):
            raise ValueError("must be a number of hours above 0") from None

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> Any:
        level = str(value).strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level

    # --- derived --------------------------------------------------------------------

    @property
    def telegram_base_url(self) -> str:
        """python-telegram-bot wants the `/bot` prefix it appends the token to."""
        return self.telegram_api_url + "/bot"

    @property
    def telegram_base_file_url(self) -> str:
        return self.telegram_api_url + "/file/bot"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, dotenv: Path | None = None) -> Settings:
        """Settings from `env` alone when given (tests), else the environment and `.env`.

        Raises `ConfigError` naming every variable that cannot be used.
        """
        try:
            if env is None:
                return cls(_env_file=dotenv or cls.model_config.get("env_file"))
            # Only the mapping, read exactly as the environment would be: not os.environ,
            # not .env (tests hand their whole configuration over this way).
            return cls(_build_sources=((_MappingSource(cls, env),), {}))
        except ValidationError as error:
            raise ConfigError(describe(error)) from None

    # --- never show a secret ---------------------------------------------------------

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name in SECRETS and value:
                yield name, HIDDEN
            elif name == "database_url":
                yield name, hide_password(value)
            else:
                yield name, value


class _MappingSource(EnvSettingsSource):
    """Environment variables from a given mapping instead of the process environment."""

    def __init__(self, settings_cls: type[BaseSettings], values: Mapping[str, str]) -> None:
        # Empty means unset, as `env_ignore_empty` has it for the real environment.
        self._values = {name: value for name, value in values.items() if value and value.strip()}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._values


def _variable(field: str) -> str:
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    return alias if isinstance(alias, str) else field.upper()


def describe(error: ValidationError) -> str:
    """One line per unusable variable: its name, the value (unless secret), the problem."""
    lines = []
    for problem in error.errors(include_url=False, include_input=True):
        location = problem.get("loc") or ("?",)
        given = str(location[0])
        field = next((f for f in Settings.model_fields if given in (f, _variable(f))), given)
        name = _variable(field) if field in Settings.model_fields else given
        message = str(problem.get("msg", "is not valid")).removeprefix("Value error, ")
        shown = problem.get("input")
        if field in SECRETS:
            value = ""
        elif field == "database_url" and isinstance(shown, str):
            value = f" ({hide_password(shown)!r})"
        else:
            value = f" ({shown!r})" if isinstance(shown, str | int | float) else ""
        lines.append(f"{name}{value}: {message}")
    return "; ".join(lines)
