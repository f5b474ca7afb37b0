"""Onboarding: language, municipality, privacy notice and consent, then optional
gender and age group (coordinators disaggregate by them; anyone may skip)."""

from __future__ import annotations

from bot.vocabulary.i18n import Translator, _
from bot.vocabulary.languages import LANGUAGES
from flows.core import (
    Choice,
    Choose,
    Context,
    Effect,
    Flow,
    Follow,
    Outcome,
    UpdateProfile,
    say,
)

ENDONYMS = {"ka": "ქართული", "az": "Azərbaycan dili", "hy": "Հայերեն", "ru": "Русский"}

WELCOME = _("Hello! This is Khma — tell us what your community needs. Choose your language:")
LANGUAGE_SAVED = _("Done: from now on I will write to you in this language.")
MUNICIPALITY = _("Which municipality do you live in?")
OTHER_PLACE = _("Somewhere else")
MUNICIPALITY_SAVED = _("Saved: {municipality}.")
MUNICIPALITY_FROM_LINK = _("Municipality: {municipality}. You can change it later in Settings.")
PRIVACY = _(
    "Before we start: Khma is run by civil-society organisations. We store what you send us "
    "(your reports, questions, municipality, language) to pass your community's needs to "
    "local government. We never sell your data or show your name unless you choose to share "
    "it. You can see everything we keep with /mydata and erase it with /delete at any time.\n\n"
    "Do you agree?"
)
AGREE = _("✅ I agree")
DECLINE = _("No, thanks")
DECLINED = _(
    "Understood — I have stored nothing about you except your language. You can still read "
    "answers about trade with the EU (DCFTA). If you change your mind, choose "
    "“I want to take part” in the menu."
)
GENDER = _(
    "Two optional questions help us show whose voices are heard. What is your gender? You may skip."
)
FEMALE = _("Woman")
MALE = _("Man")
AGE = _("What is your age group? You may skip.")
SKIP = _("Skip")
ALL_SET = _("Thank you, all set!")

GENDERS = [Choice("female", FEMALE), Choice("male", MALE), Choice("skip", SKIP)]
AGE_GROUPS = [
    Choice("under_18", {"en": "<18"}),
    Choice("18_29", {"en": "18–29"}),
    Choice("30_44", {"en": "30–44"}),
    Choice("45_59", {"en": "45–59"}),
    Choice("60_plus", {"en": "60+"}),
    Choice("skip", SKIP),
]


def welcome(ctx: Context) -> str:
    """In all four languages: we do not know yet which one the resident reads."""
    return "\n\n".join(Translator(lang)(WELCOME) for lang in _language_order(ctx))


def _language_order(ctx: Context) -> list[str]:
    hint = ctx.data.get("language_hint") or ctx.profile.language
    return sorted(LANGUAGES, key=lambda lang: lang != hint)


def languages(ctx: Context) -> list[Choice]:
    return [Choice(lang, {"en": ENDONYMS[lang]}) for lang in _language_order(ctx)]


def language_chosen(ctx: Context, lang: str) -> Outcome:
    ctx.t = Translator(lang, ctx.t.tz.key)
    change = UpdateProfile({"language": lang})
    if ctx.profile.consent is None:
        return Outcome(goto="onboarding.municipality", effects=[change])
    return Outcome(say=[say(ctx.t(LANGUAGE_SAVED))], goto="menu.main", effects=[change])


def municipalities(ctx: Context) -> list[Choice]:
    places = [Choice(m.code, m.names) for m in ctx.content.active_municipalities()]
    return [*places, Choice("other", OTHER_PLACE)]


def municipality_name(ctx: Context, code: str | None) -> str:
    place = ctx.content.municipality(code)
    return ctx.label(place.names) if place else ctx.t(OTHER_PLACE)


def municipality_chosen(ctx: Context, code: str) -> Outcome:
    if ctx.profile.consent:
        saved = say(ctx.t(MUNICIPALITY_SAVED, municipality=municipality_name(ctx, code)))
        return Outcome(
            say=[saved], goto="menu.main", effects=[UpdateProfile({"municipality": code})]
        )
    return Outcome(goto="onboarding.privacy")


def privacy_answered(ctx: Context, answer: str) -> Outcome:
    if answer == "decline":
        return Outcome(
            say=[say(ctx.t(DECLINED))],
            goto="menu.main",
            effects=[UpdateProfile({"consent": False})],
        )
    changes = {"consent": True, "municipality": ctx.data.get("municipality")}
    effects: list[Effect] = [UpdateProfile(changes)]
    source = ctx.data.get("source") or ""
    if source:
        changes["source"] = source
    if source.startswith("campaign-"):
        effects.append(Follow(source.removeprefix("campaign-"), True))
    return Outcome(goto="onboarding.gender", effects=effects)


def gender_chosen(ctx: Context, gender: str) -> Outcome:
    value = None if gender == "skip" else gender
    return Outcome(goto="onboarding.age", effects=[UpdateProfile({"gender": value})])


def age_chosen(ctx: Context, age_group: str) -> Outcome:
    value = None if age_group == "skip" else age_group
    return Outcome(
        say=[say(ctx.t(ALL_SET))],
        goto="menu.main",
        effects=[UpdateProfile({"age_group": value})],
    )


class ChooseMunicipality(Choose):
    """A poster's deep link may already name the municipality: then we only confirm it."""

    def enter(self, ctx: Context) -> Outcome:
        preset = ctx.data.get("municipality")
        if ctx.profile.consent is None and ctx.content.municipality(preset):
            note = ctx.t(MUNICIPALITY_FROM_LINK, municipality=municipality_name(ctx, preset))
            return Outcome(say=[say(note)], goto="onboarding.privacy")
        return super().enter(ctx)


onboarding = Flow(
    "onboarding",
    Choose("language", welcome, languages, on=language_chosen, columns=2),
    ChooseMunicipality(
        "municipality",
        MUNICIPALITY,
        municipalities,
        save="municipality",
        on=municipality_chosen,
        columns=2,
    ),
    Choose(
        "privacy",
        PRIVACY,
        [Choice("agree", AGREE), Choice("decline", DECLINE)],
        on=privacy_answered,
    ),
    Choose("gender", GENDER, GENDERS, on=gender_chosen, columns=2),
    Choose("age", AGE, AGE_GROUPS, on=age_chosen, columns=3),
)
