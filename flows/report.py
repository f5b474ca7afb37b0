"""Reporting a need: category, description (text, photo or voice), where,
under one's name or anonymously, a review of the summary, and a reference number."""

from __future__ import annotations

from bot.vocabulary.i18n import _
from bot.vocabulary.messages import Kind
from flows.core import (
    Ask,
    Choice,
    Choose,
    Context,
    Do,
    Flow,
    Outcome,
    SubmitReport,
    say,
)
from flows.onboarding import municipality_name

CATEGORIES = [
    Choice("roads", _("🛣 Roads & transport")),
    Choice("water", _("🚰 Water & sanitation")),
    Choice("energy", _("🔥 Gas & electricity")),
    Choice("education", _("🏫 Education & language")),
    Choice("health", _("🏥 Health & social care")),
    Choice("jobs", _("💼 Jobs & business")),
    Choice("services", _("🏛 Public services & documents")),
    Choice("gender", _("👩 Women & gender equality")),
    Choice("safety", _("🛡 Safety")),
    Choice("other", _("✳️ Other")),
]
CATEGORY_LABELS = {c.id: c.label for c in CATEGORIES}

WHICH_CATEGORY = _("What is the need about?")
DESCRIBE = _(
    "Describe the need in your own words: what is wrong, where, and since when. "
    "You can also send a photo or a voice message."
)
DESCRIBE_HOW = _("Please describe the need in a text message, or send a photo or a voice message.")
WHERE = _(
    "Where is it? Type the village or street, or share a location (📎 → Location). "
    "You can also skip this."
)
WHERE_HOW = _("Please type the place or share a location, or tap “Skip”.")
SHARING = _(
    "May we pass this on under your name, or should it stay anonymous? Anonymous reports are "
    "just as important."
)
NAMED = _("Under my name")
ANONYMOUS = _("Anonymously")
REVIEW = _("Please check your report:\n\n{summary}\n\nSend it?")
SUBMIT = _("✅ Send")
CANCEL = _("✖ Cancel")
CANCELLED = _("The report was not sent.")
THANKS = _(
    "Thank you! Your report has been received. Reference number: {reference}. "
    "We will let you know when something happens; see “My reports” at any time."
)
SUMMARY_CATEGORY = _("Topic: {category}")
SUMMARY_TEXT = _("Description: {text}")
SUMMARY_MEDIA = _("Attached: {what}")
SUMMARY_PLACE = _("Place: {place}")
SUMMARY_MUNICIPALITY = _("Municipality: {municipality}")
SUMMARY_NAMED = _("Shared under your name ({name})")
SUMMARY_NAMED_NO_NAME = _("Shared under your name")
SUMMARY_ANONYMOUS = _("Shared anonymously")
LOCATION_NEAR = _("shared location, near {municipality}")
LOCATION_FAR = _("shared location")
MEDIA_WORDS = {"photo": _("a photo"), "voice": _("a voice message")}


def _location(ctx: Context) -> tuple[float | None, float | None, str | None]:
    place = ctx.data.get("place") or {}
    if place.get("kind") != Kind.LOCATION.value:
        return None, None, None
    lat, lon = place["latitude"], place["longitude"]
    nearest = ctx.content.nearest(lat, lon)
    return lat, lon, nearest.code if nearest else None


def summary(ctx: Context) -> str:
    description = ctx.data["description"]
    lines = [ctx.t(SUMMARY_CATEGORY, category=ctx.label(CATEGORY_LABELS[ctx.data["category"]]))]
    if description.get("text"):
        lines.append(ctx.t(SUMMARY_TEXT, text=description["text"]))
    if description.get("media_id"):
        lines.append(ctx.t(SUMMARY_MEDIA, what=ctx.t(MEDIA_WORDS[description["kind"]])))
    place = ctx.data.get("place") or {}
    if place.get("kind") == Kind.LOCATION.value:
        near = _location(ctx)[2]
        where = (
            ctx.t(LOCATION_NEAR, municipality=municipality_name(ctx, near))
            if near
            else ctx.t(LOCATION_FAR)
        )
        lines.append(ctx.t(SUMMARY_PLACE, place=where))
    elif place.get("text"):
        lines.append(ctx.t(SUMMARY_PLACE, place=place["text"]))
    lines.append(
        ctx.t(SUMMARY_MUNICIPALITY, municipality=municipality_name(ctx, ctx.profile.municipality))
    )
    if ctx.data.get("sharing") == "named":
        name = ctx.profile.display_name
        lines.append(ctx.t(SUMMARY_NAMED, name=name) if name else ctx.t(SUMMARY_NAMED_NO_NAME))
    else:
        lines.append(ctx.t(SUMMARY_ANONYMOUS))
    return ctx.t(REVIEW, summary="\n".join(lines))


def reviewed(ctx: Context, answer: str) -> Outcome:
    if answer == "cancel":
        return Outcome(say=[say(ctx.t(CANCELLED))], goto="menu.main")
    description = ctx.data["description"]
    place = ctx.data.get("place") or {}
    lat, lon, near = _location(ctx)
    text_parts = [description.get("text"), place.get("text")]
    media = (
        ({"type": description["kind"], "file_id": description["media_id"]},)
        if description.get("media_id")
        else ()
    )
    report = SubmitReport(
        kind="need",
        category=ctx.data["category"],
        text="\n".join(p for p in text_parts if p) or None,
        media=media,
        latitude=lat,
        longitude=lon,
        location_municipality=near,
        anonymous=ctx.data.get("sharing") != "named",
    )
    return Outcome(goto="report.thanks", effects=[report])


def thanks(ctx: Context) -> Outcome:
    return Outcome(say=[say(ctx.t(THANKS, reference=ctx.facts["reference"]))], goto="menu.main")


report = Flow(
    "report",
    Choose("category", WHICH_CATEGORY, CATEGORIES, save="category", columns=2),
    Ask(
        "description",
        DESCRIBE,
        save="description",
        accepts=frozenset({Kind.TEXT, Kind.PHOTO, Kind.VOICE}),
        wanted=DESCRIBE_HOW,
    ),
    Ask(
        "place",
        WHERE,
        save="place",
        accepts=frozenset({Kind.TEXT, Kind.LOCATION}),
        wanted=WHERE_HOW,
        skip=True,
    ),
    Choose(
        "sharing",
        SHARING,
        [Choice("named", NAMED), Choice("anonymous", ANONYMOUS)],
        save="sharing",
    ),
    Choose(
        "review",
        summary,
        [Choice("submit", SUBMIT), Choice("cancel", CANCEL)],
        on=reviewed,
        columns=2,
    ),
    Do("thanks", thanks),
)
