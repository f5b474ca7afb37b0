"""Residents own their data: /mydata shows all of it, /delete erases it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.vocabulary.i18n import _
from flows.core import (
    IDLE,
    Choice,
    Choose,
    Context,
    Do,
    ErasePersonalData,
    Flow,
    LoadPersonalData,
    Outcome,
    say,
)
from flows.mine import ReportView, describe
from flows.onboarding import AGE_GROUPS, ENDONYMS, municipality_name

NOTHING_STORED = _("We store nothing about you except the language you chose.")
HEADER = _("Everything Khma stores about you:")
FIELD_LANGUAGE = _("Language: {value}")
FIELD_MUNICIPALITY = _("Municipality: {value}")
FIELD_GENDER = _("Gender: {value}")
FIELD_AGE = _("Age group: {value}")
FIELD_CONSENT = _("Agreed to the privacy notice: {date}")
FIELD_ACCOUNT = _("Account: {channel}, name “{name}”")
FIELD_ACCOUNT_NO_NAME = _("Account: {channel}")
NOT_GIVEN = _("not given")
REPORTS_HEADER = _("Your reports and questions, with what you wrote:")
AGE_LABELS = {c.id: c.label for c in AGE_GROUPS if c.id != "skip"}
GENDER_WORDS = {"female": _("woman"), "male": _("man")}
CONFIRM_DELETE = _(
    "This erases your language, municipality, gender, age group, name and this chat's "
    "history from Khma. Your reports stay, but anonymous: nobody can link them to you any more. "
    "Erase your data?"
)
YES_DELETE = _("🗑 Yes, erase")
NO_KEEP = _("No, keep it")
KEPT = _("Nothing was erased.")
ERASED = _(
    "Your personal data has been erased. Your reports stay, anonymised. "
    "If you want to come back, send /start."
)


@dataclass(frozen=True)
class StoredReport:
    view: ReportView
    text: str | None


@dataclass(frozen=True)
class PersonalData:
    language: str | None
    municipality: str | None
    gender: str | None
    age_group: str | None
    consent_at: datetime | None
    accounts: tuple[tuple[str, str | None], ...]
    reports: tuple[StoredReport, ...]


def _value(ctx: Context, text: str | None) -> str:
    return text if text else ctx.t(NOT_GIVEN)


def show_data(ctx: Context) -> Outcome:
    data: PersonalData = ctx.facts["personal_data"]
    if data.consent_at is None:
        return Outcome(say=[say(ctx.t(NOTHING_STORED))], goto="menu.main")
    gender = GENDER_WORDS.get(data.gender or "")
    age = data.age_group in AGE_LABELS
    lines = [
        ctx.t(HEADER),
        ctx.t(FIELD_LANGUAGE, value=_value(ctx, ENDONYMS.get(data.language or ""))),
        ctx.t(FIELD_MUNICIPALITY, value=municipality_name(ctx, data.municipality)),
        ctx.t(FIELD_GENDER, value=ctx.t(gender) if gender else ctx.t(NOT_GIVEN)),
        ctx.t(FIELD_AGE, value=ctx.label(AGE_LABELS[data.age_group]) if age else ctx.t(NOT_GIVEN)),
        ctx.t(FIELD_CONSENT, date=ctx.t.datetime(data.consent_at)),
    ]
    for channel, name in data.accounts:
        shown = channel.capitalize()
        lines.append(
            ctx.t(FIELD_ACCOUNT, channel=shown, name=name)
            if name
            else ctx.t(FIELD_ACCOUNT_NO_NAME, channel=shown)
        )
    replies = [say("\n".join(lines))]
    if data.reports:
        parts = [ctx.t(REPORTS_HEADER)]
        for item in data.reports:
            parts.append(describe(ctx, item.view) + (f"\n“{item.text}”" if item.text else ""))
        replies.append(say("\n\n".join(parts)))
    return Outcome(say=replies, goto="menu.main")


def delete_answered(ctx: Context, answer: str) -> Outcome:
    if answer == "no":
        return Outcome(say=[say(ctx.t(KEPT))], goto="menu.main")
    return Outcome(say=[say(ctx.t(ERASED))], goto=IDLE, effects=[ErasePersonalData()])


privacy = Flow(
    "privacy",
    Do("mydata", lambda ctx: Outcome(effects=[LoadPersonalData()])),
    Do("show", show_data),
    Choose(
        "confirm_delete",
        CONFIRM_DELETE,
        [Choice("yes", YES_DELETE), Choice("no", NO_KEEP)],
        on=delete_answered,
        columns=2,
    ),
)
