"""Every string a resident can read exists, correctly, in all four languages."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract_from_dir
from babel.messages.plurals import get_plural
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parent.parent
LANGS = ("ka", "az", "hy", "ru")
SCRIPTS = {
    "ka": re.compile(r"[\u10a0-\u10ff]"),
    "hy": re.compile(r"[\u0530-\u058f]"),
    "ru": re.compile(r"[\u0400-\u04ff]"),
    "az": re.compile(r"[əğıöüşçƏĞİÖÜŞÇ]"),
}
CYRILLIC = re.compile(r"[\u0400-\u04ff]")
LATIN_WORD = re.compile(r"\b[A-Za-z]{4,}\b")
# Words that stay Latin in every language: names, acronyms, commands.
ALLOWED_LATIN = {
    "Khma",
    "DCFTA",
    "HACCP",
    "Telegram",
    "Viber",
    "mydata",
    "delete",
    "menu",
    "language",
    "cancel",
    "help",
    "start",
    "Location",
}


def code_messages() -> dict[str, tuple[str, str | None]]:
    """msgid -> (msgid, plural) for every string marked in bot/ and flows/."""
    found: dict[str, tuple[str, str | None]] = {}
    for folder in ("bot", "flows"):
        keywords = {"_": None, "ngettext": (1, 2)}
        for _file, _line, message, _comments, _context in extract_from_dir(
            ROOT / folder, keywords=keywords, comment_tags=()
        ):
            if isinstance(message, tuple):
                found[message[0]] = (message[0], message[1])
            else:
                found[message] = (message, None)
    return found


def catalog(lang: str) -> Catalog:
    with (ROOT / "locales" / lang / "LC_MESSAGES" / "messages.po").open("rb") as fh:
        return read_po(fh, locale=lang)


def fields(text: str) -> set[str]:
    return {name for _lit, name, _spec, _conv in string.Formatter().parse(text) if name}


def translations_of(message: Message) -> list[str]:
    return list(message.string) if isinstance(message.string, tuple) else [message.string]


def test_code_marks_strings_for_translation() -> None:
    assert len(code_messages()) > 100


@pytest.mark.parametrize("lang", LANGS)
def test_every_message_is_translated(lang: str) -> None:
    cat = catalog(lang)
    missing = []
    for msgid, (_single, plural) in code_messages().items():
        message = cat.get(msgid)
        if message is None or message.fuzzy or not all(translations_of(message)):
            missing.append(msgid)
        elif plural is not None and not isinstance(message.string, tuple):
            missing.append(f"{msgid} (needs plural forms)")
    assert not missing, f"{lang}: {len(missing)} untranslated: {missing[:5]}"


@pytest.mark.parametrize("lang", LANGS)
def test_placeholders_match_the_source(lang: str) -> None:
    wrong = []
    for message in catalog(lang):
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        expected = set().union(*(fields(i) for i in ids))
        for text in translations_of(message):
            got = fields(text)
            # A plural form may leave out {n} ("one report"), but never invent a name.
            if not got <= expected or not (expected - {"n"}) <= got:
                wrong.append((ids[0], sorted(got), sorted(expected)))
    assert not wrong, f"{lang}: placeholders differ: {wrong[:3]}"


@pytest.mark.parametrize("lang", LANGS)
def test_plural_forms_follow_the_language(lang: str) -> None:
    cat = catalog(lang)
    rule = get_plural(lang)
    assert cat.num_plurals == rule.num_plurals
    assert cat.plural_expr.replace(" ", "") == rule.plural_expr.replace(" ", "")
    for message in cat:
        if message.id and isinstance(message.id, tuple):
            assert len(message.string) == rule.num_plurals, message.id


@pytest.mark.parametrize("lang", LANGS)
def test_translations_are_in_the_right_script_with_no_english(lang: str) -> None:
    problems = []
    for message in catalog(lang):
        if not message.id:
            continue
        for text in translations_of(message):
            # Placeholders, commands and `shell commands` stay as they are in every language.
            letters = re.sub(r"\{[a-z_]+\}|/[a-z_]+|`[^`]*`", "", text)
            if not any(ch.isalpha() for ch in letters):
                continue
            if not SCRIPTS[lang].search(letters) and len(letters.strip()) > 3:
                problems.append(("script", text))
            if lang == "az" and CYRILLIC.search(text):
                problems.append(("cyrillic in az", text))
            english = set(LATIN_WORD.findall(letters)) - ALLOWED_LATIN
            if lang != "az" and english:
                problems.append(("english", text))
    assert not problems, f"{lang}: {problems[:5]}"


def _content_texts() -> list[tuple[str, dict[str, str]]]:
    texts: list[tuple[str, dict[str, str]]] = []
    places = json.loads((ROOT / "content" / "municipalities.json").read_text(encoding="utf-8"))
    texts += [(r["code"], r["names"]) for r in places["regions"]]
    texts += [(m["code"], m["names"]) for m in places["municipalities"]]
    faq = json.loads((ROOT / "content" / "dcfta.json").read_text(encoding="utf-8"))
    for topic in faq["topics"]:
        texts.append((topic["id"], topic["title"]))
        for q in topic["questions"]:
            texts += [(q["id"], q["question"]), (q["id"], q["answer"])]
    return texts


@pytest.mark.parametrize("lang", LANGS)
def test_content_data_speaks_every_language(lang: str) -> None:
    problems = []
    for key, names in _content_texts():
        text = names.get(lang, "")
        if not text.strip():
            problems.append((key, "missing"))
        elif lang != "az" and not SCRIPTS[lang].search(text):
            problems.append((key, "wrong script"))
        elif lang == "az" and CYRILLIC.search(text):
            problems.append((key, "cyrillic"))
    assert not problems, f"{lang}: {problems[:5]}"
