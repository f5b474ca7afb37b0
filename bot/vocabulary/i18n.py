"""Gettext through Babel: lazy messages declared once, rendered per resident.

Flows declare their strings at import time, before anyone's language is known,
so `_` returns a `Msg` that remembers its msgid and is translated only when a
`Translator` for the resident's language renders it.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_time
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

from bot.vocabulary.languages import LANGUAGES

log = logging.getLogger(__name__)

LOCALES_DIR = Path(__file__).resolve().parents[2] / "locales"
DOMAIN = "messages"
SOURCE_LANGUAGE = "en"


@dataclass(frozen=True)
class Msg:
    """A message waiting for a language; `plural` set means it is chosen by a count."""

    msgid: str
    plural: str | None = None


def _(msgid: str) -> Msg:
    return Msg(msgid)


def ngettext(singular: str, plural: str) -> Msg:
    return Msg(singular, plural)


def pick_language(tag: str | None) -> str | None:
    """Map a platform's language hint (`ru-RU`, `hy`, `az-Cyrl-AZ`) to one we speak."""
    if not tag:
        return None
    try:
        locale = Locale.parse(tag.replace("_", "-"), sep="-")
    except (ValueError, UnknownLocaleError):
        return None
    return locale.language if locale.language in LANGUAGES else None


def _mo_bytes(po_path: Path) -> bytes:
    with po_path.open("rb") as fh:
        catalog = read_po(fh)
    out = io.BytesIO()
    write_mo(out, catalog)
    return out.getvalue()


@cache
def translations(lang: str) -> NullTranslations:
    """Load the compiled catalog, compiling the .po in memory when the .mo is stale.

    Compiled `.mo` files are build outputs (`make translations`); compiling here as
    well means a translator's fresh edit never shows an older text by surprise.
    """
    if lang == SOURCE_LANGUAGE:
        return NullTranslations()
    folder = LOCALES_DIR / lang / "LC_MESSAGES"
    po, mo = folder / f"{DOMAIN}.po", folder / f"{DOMAIN}.mo"
    if mo.is_file() and (not po.is_file() or mo.stat().st_mtime >= po.stat().st_mtime):
        with mo.open("rb") as fh:
            return Translations(fp=fh, domain=DOMAIN)
    if po.is_file():
        return Translations(fp=io.BytesIO(_mo_bytes(po)), domain=DOMAIN)
    log.warning("no catalog for %s; residents would read English", lang)
    return NullTranslations()


class Translator:
    """Everything a resident reads in their language: words, plurals, dates."""

    def __init__(self, lang: str, tz_name: str = "Asia/Tbilisi") -> None:
        self.lang = lang
        self.tz = ZoneInfo(tz_name)
        self._t = translations(lang)

    def __call__(self, msg: Msg, /, n: int | None = None, **params: object) -> str:
        if msg.plural is not None:
            if n is None:
                raise ValueError(f"plural message needs a count: {msg.msgid!r}")
            text = self._t.ngettext(msg.msgid, msg.plural, n)
            params.setdefault("n", n)
        else:
            text = self._t.gettext(msg.msgid)
        return text.format(**params) if params else text

    def datetime(self, moment: datetime) -> str:
        """Date and hours:minutes in Tbilisi time, each in the locale's own pattern."""
        local = moment.astimezone(self.tz)
        day = format_date(local, "medium", locale=self.lang)
        return f"{day}, {format_time(local, 'short', locale=self.lang)}"

    def date(self, moment: datetime) -> str:
        return format_date(moment.astimezone(self.tz), "medium", locale=self.lang)
