"""Staff broadcast in the chat: `/broadcast` guides an announcement, `/broadcast_status N`
follows one and `/broadcast_cancel N` stops one.

A broadcast is the longest staff conversation (a text per language, a picture or a link,
an audience with its filters, a preview, now or later), so it lives apart from the other
staff commands in flows/staff.py, like the events in flows/staff_events.py, and is built
from the same pieces: a skippable text step per language and the Tbilisi-time parsing.
What it does reaches the engine as `StaffAction`s naming the broadcast operations
(bot/outreach/operations/broadcasts.py), which check the role and the input again, as they
do for the CLI; who is reached is bot/outreach/audience.py's `Audience`, the same one the
CLI fills in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from bot.vocabulary.i18n import _, ngettext
from bot.vocabulary.languages import LANGUAGES
from bot.vocabulary.messages import Kind
from flows.core import (
    BACK,
    Ask,
    Choice,
    Choose,
    Context,
    Do,
    Flow,
    Outcome,
    StaffAction,
    say,
)
from flows.onboarding import AGE_GROUPS, ENDONYMS, GENDERS, municipalities
from flows.staff import (
    BAD_TIME,
    CANCEL,
    NOT_AN_ADDRESS,
    parse_moment,
    refusal_text,
    refused,
    text_step,
    texts,
    typed_number,
)
from flows.staff_events import YES_CANCEL

WRITE_TEXT = _("New broadcast. Write the text in {language}, or tap “Skip”.")
NO_TEXT = _("A broadcast needs a text in at least one language. Start again with /broadcast.")
ATTACH = _(
    "Add a picture or a link: send its address ({example}), or tap “Skip”. An address ending "
    "in {formats} goes out as the picture, any other as a link under the text."
)
PICTURE_BY_ADDRESS = _(
    "Viber takes pictures only by their web address, so a picture sent here cannot reach "
    "everyone. Put it on the web and send its address, or tap “Skip”."
)
ADDRESS_TOO_LONG = _(
    "That address is too long ({length} characters, at most {limit}). Send a shorter one, or "
    "tap “Skip”."
)
ADDRESS_ONLY = _("Please send a web address, or tap “Skip”.")
WHO = _("Who should receive it?")
EVERYONE = _("Everyone who agreed")
BY_MUNICIPALITY = _("One municipality")
BY_LANGUAGE = _("One language")
BY_GENDER = _("By gender")
BY_AGE_GROUP = _("By age group")
FOLLOWERS = _("Followers of a campaign")
GOING = _("People going to an event")
WHICH_MUNICIPALITY = _("Which municipality?")
WHICH_LANGUAGE = _("Which language?")
WHICH_GENDER = _("Residents of which gender? Only those who told us theirs are counted.")
WHICH_AGE_GROUP = _("Residents of which age group? Only those who told us theirs are counted.")
WHICH_CAMPAIGN = _("Type the campaign code.")
WHICH_EVENT = _("Type the event number.")
PREVIEW = ngettext(
    "This broadcast will reach {n} resident: {channels}.",
    "This broadcast will reach {n} residents: {channels}.",
)
PICTURE = _("🖼 With the picture {url}")
LINK = _("🔗 With the link {url} under the text")
FALLBACK = _("No text in {languages}: they will get it in {fallback}.")
VIBER_COST = _("{count} Viber messages fall outside the free 24-hour window (about {cost} billed).")
QUIET = _("Messages are not delivered between {start} and {end}; those wait for the morning.")
SEND_NOW = _("📤 Send now")
LATER = _("⏰ Later")
WHEN = _("When should it go out? Type the date and time in Tbilisi time, like 2026-12-01 10:00.")
QUEUED = _("Broadcast #{id} is on its way. See its progress with /broadcast_status {id}.")
SCHEDULED = _("Broadcast #{id} will go out at {when}.")
DROPPED = _("The broadcast was not sent.")
WHICH_BROADCAST = _("Type the broadcast number, like 12.")
NO_BROADCAST = _("There is no broadcast #{id}.")
PROGRESS = _(
    "Broadcast #{id}: {status}. Waiting {queued} · sent {sent} · delivered {delivered} · "
    "failed {failed} · unreachable {unreachable} · cancelled {cancelled}."
)
STATES = {
    "scheduled": _("scheduled"),
    "sending": _("sending"),
    "done": _("finished"),
    "cancelled": _("cancelled"),
}
CANCEL_BROADCAST = _("✖ Cancel this broadcast")
CONFIRM_SCHEDULED = _("Cancel broadcast #{id}, due at {when}? Nobody will receive it.")
CONFIRM_SENDING = ngettext(
    "Stop broadcast #{id}? {n} message still waiting will not be sent; those already sent stay.",
    "Stop broadcast #{id}? {n} messages still waiting will not be sent; those already sent stay.",
)
CANCELLED_SCHEDULED = _("Broadcast #{id} is cancelled: nobody will receive it.")
CANCELLED_SENDING = ngettext(
    "Broadcast #{id} is stopped: {n} waiting message will not be sent.",
    "Broadcast #{id} is stopped: {n} waiting messages will not be sent.",
)
NOT_CANCELLABLE = _("Broadcast #{id} can no longer be cancelled: it has finished or was cancelled.")

FIRST_TEXT = f"staff_broadcast.text_{LANGUAGES[0]}"
# Telegram's sendPhoto and Viber's picture message both fetch a picture by its address;
# any other address is a page, sent as a link under the text.
PICTURE_ENDINGS = (".jpg", ".jpeg", ".png", ".webp")
# The `broadcasts.photo_id` and `broadcasts.link` columns' size.
ADDRESS_LIMIT = 512
EXAMPLE_ADDRESS = "https://…"
# A broadcast may still be stopped while it waits for its time or is being sent.
CANCELLABLE = ("scheduled", "sending")


# --- the texts, then a picture or a link ------------------------------------------------


def after_texts(ctx: Context) -> Outcome:
    if not texts(ctx):
        return Outcome(say=[say(ctx.t(NO_TEXT))], goto="menu.main")
    return Outcome(goto="staff_broadcast.attachment")


def attach_prompt(ctx: Context) -> str:
    return ctx.t(ATTACH, example=EXAMPLE_ADDRESS, formats=", ".join(PICTURE_ENDINGS))


def web_address(typed: str) -> str | None:
    """An http(s) address as staff paste it, or None: it must name a host and hold no
    spaces, since Telegram and Viber fetch it as it is."""
    if not typed or any(ch.isspace() for ch in typed):
        return None
    try:
        parts = urlsplit(typed)
        host = parts.hostname
    except ValueError:  # an address such as "http://[" does not even split
        return None
    return typed if parts.scheme.lower() in ("http", "https") and host else None


def is_picture(address: str) -> bool:
    return urlsplit(address).path.lower().endswith(PICTURE_ENDINGS)


def attached(ctx: Context) -> Outcome | str:
    """A picture's or a page's address, or a hint and the question again.

    A photo sent into the chat cannot be used: a Telegram file is no address that Viber can
    fetch, and a broadcast must look the same to everyone.
    """
    ctx.data.pop("photo", None)
    ctx.data.pop("link", None)
    answer = ctx.data.pop("attachment", None)
    if answer is None:  # skipped
        return "staff_broadcast.audience"
    typed = answer.get("text", "")
    if answer.get("kind") != Kind.TEXT.value:
        hint = ctx.t(PICTURE_BY_ADDRESS)
    elif len(typed) > ADDRESS_LIMIT:
        hint = ctx.t(ADDRESS_TOO_LONG, length=len(typed), limit=ADDRESS_LIMIT)
    elif (address := web_address(typed)) is None:
        hint = ctx.t(NOT_AN_ADDRESS, scheme="https://")
    else:
        ctx.data["photo" if is_picture(address) else "link"] = address
        return "staff_broadcast.audience"
    return Outcome(say=[say(hint)], goto="staff_broadcast.attachment")


# --- who receives it ---------------------------------------------------------------------


AUDIENCES = [
    Choice("everyone", EVERYONE),
    Choice("municipality", BY_MUNICIPALITY),
    Choice("language", BY_LANGUAGE),
    Choice("gender", BY_GENDER),
    Choice("age_group", BY_AGE_GROUP),
    Choice("campaign", FOLLOWERS),
    Choice("event", GOING),
]
AUDIENCE_STEPS = {
    "everyone": "staff_broadcast.preview",
    "municipality": "staff_broadcast.municipality",
    "language": "staff_broadcast.language",
    "gender": "staff_broadcast.gender",
    "age_group": "staff_broadcast.age_group",
    "campaign": "staff_broadcast.campaign",
    "event": "staff_broadcast.event",
}
# The answers residents give in onboarding, less its "Skip": nobody is counted as "skip".
GENDER_CHOICES = [c for c in GENDERS if c.id != "skip"]
AGE_GROUP_CHOICES = [c for c in AGE_GROUPS if c.id != "skip"]


def audience(ctx: Context) -> dict[str, Any]:
    """The choices made so far, as `Audience.to_json` has them."""
    found: dict[str, Any] = {}
    if ctx.data.get("municipality"):
        found["municipalities"] = [ctx.data["municipality"]]
    if ctx.data.get("language"):
        found["languages"] = [ctx.data["language"]]
    if ctx.data.get("gender"):
        found["genders"] = [ctx.data["gender"]]
    if ctx.data.get("age_group"):
        found["age_groups"] = [ctx.data["age_group"]]
    if ctx.data.get("campaign"):
        found["campaign"] = ctx.data["campaign"]["text"].strip()
    event = typed_number((ctx.data.get("event") or {}).get("text", ""))
    if event is not None:
        found["event_id"] = event
    return found


def _broadcast(ctx: Context) -> dict[str, Any]:
    """What `create_broadcast` needs, as the preview showed it."""
    return {
        "texts": texts(ctx),
        "audience": audience(ctx),
        "photo": ctx.data.get("photo"),
        "link": ctx.data.get("link"),
    }


# --- preview and confirmation -------------------------------------------------------------


def preview(ctx: Context) -> Outcome:
    args = {"texts": texts(ctx), "audience": audience(ctx)}
    return Outcome(
        effects=[StaffAction("broadcast.preview", args)], goto="staff_broadcast.previewed"
    )


def previewed(ctx: Context) -> Outcome:
    """The counts are kept with the conversation: Viber's keyboard pages show the question
    (and so the preview) again in later turns."""
    if (refusal := refused(ctx)) is not None:
        return refusal
    ctx.data["preview"] = ctx.facts["staff"]
    return Outcome(goto="staff_broadcast.confirm")


def preview_text(ctx: Context) -> str:
    found = ctx.data["preview"]
    total = found["total"]
    channels = ", ".join(
        f"{name.capitalize()} {count}" for name, count in found["per_channel"].items()
    )
    lines = [ctx.t(PREVIEW, n=total, channels=channels or "—")]
    if ctx.data.get("photo"):
        lines.append(ctx.t(PICTURE, url=ctx.data["photo"]))
    if ctx.data.get("link"):
        lines.append(ctx.t(LINK, url=ctx.data["link"]))
    if found["fallback"]:
        missing = ", ".join(ENDONYMS.get(lang, lang) for lang in found["fallback"])
        lines.append(
            ctx.t(
                FALLBACK,
                languages=missing,
                fallback=", ".join(ENDONYMS[lang] for lang in texts(ctx)),
            )
        )
    outside = found["viber_outside_window"]
    if outside:
        cost = f"{outside * found['viber_price']:.2f}"
        lines.append(ctx.t(VIBER_COST, count=outside, cost=cost))
    if found["quiet_hours"]:
        start, end = found["quiet_hours"]
        lines.append(ctx.t(QUIET, start=start, end=end))
    return "\n".join(lines)


def confirmed(ctx: Context, choice: str) -> Outcome | str:
    if choice == "cancel":
        return Outcome(say=[say(ctx.t(DROPPED))], goto="menu.main")
    if choice == "later":
        return "staff_broadcast.when"
    return Outcome(
        effects=[StaffAction("broadcast.create", _broadcast(ctx))], goto="staff_broadcast.queued"
    )


def scheduled(ctx: Context) -> Outcome:
    moment = parse_moment(ctx, ctx.data["when"]["text"])
    if moment is None:
        return Outcome(say=[say(ctx.t(BAD_TIME))], goto="staff_broadcast.when")
    args = {**_broadcast(ctx), "send_at": moment.isoformat()}
    return Outcome(effects=[StaffAction("broadcast.create", args)], goto="staff_broadcast.queued")


def queued(ctx: Context) -> Outcome:
    if (refusal := refused(ctx)) is not None:
        return refusal
    created = ctx.facts["staff"]
    if created.get("send_at"):
        when = ctx.t.datetime(datetime.fromisoformat(created["send_at"]))
        return Outcome(say=[say(ctx.t(SCHEDULED, id=created["id"], when=when))], goto="menu.main")
    return Outcome(say=[say(ctx.t(QUEUED, id=created["id"]))], goto="menu.main")


# --- /broadcast_status N and /broadcast_cancel N ----------------------------------------


def _start(ctx: Context, then: str) -> Outcome:
    """Both commands take the number as their argument, or ask for it."""
    ctx.data["then"] = then
    number = typed_number(ctx.facts.pop("argument", None) or "")
    if number is None:
        return Outcome(goto="staff_broadcast.which")
    ctx.data["broadcast_id"] = number
    return Outcome(goto="staff_broadcast.load")


def status_start(ctx: Context) -> Outcome:
    return _start(ctx, "progress")


def cancel_start(ctx: Context) -> Outcome:
    return _start(ctx, "confirm_cancel")


def number_typed(ctx: Context) -> str:
    number = typed_number(ctx.data.pop("typed")["text"])
    if number is None:
        return "staff_broadcast.which"
    ctx.data["broadcast_id"] = number
    return "staff_broadcast.load"


def load(ctx: Context) -> Outcome:
    args = {"id": ctx.data["broadcast_id"]}
    return Outcome(effects=[StaffAction("broadcast.progress", args)], goto="staff_broadcast.loaded")


def loaded(ctx: Context) -> Outcome:
    found = ctx.facts["staff"]
    if found is None:
        refusal = ctx.facts["refused"]
        if refusal["error"] == "not_found":
            text = ctx.t(NO_BROADCAST, id=ctx.data["broadcast_id"])
        else:
            text = refusal_text(ctx, refusal)
        return Outcome(say=[say(text)], goto="menu.main")
    ctx.data["broadcast"] = found
    if found["status"] not in CANCELLABLE:
        lines = [progress_text(ctx)]
        if ctx.data.get("then") == "confirm_cancel":
            lines.append(ctx.t(NOT_CANCELLABLE, id=found["id"]))
        return Outcome(say=[say("\n\n".join(lines))], goto="menu.main")
    return Outcome(goto=f"staff_broadcast.{ctx.data['then']}")


def progress_text(ctx: Context) -> str:
    found = ctx.data["broadcast"]
    status = ctx.t(STATES[found["status"]]) if found["status"] in STATES else found["status"]
    text = ctx.t(PROGRESS, **{**found, "status": status})
    if found["status"] == "scheduled" and found.get("send_at"):
        when = ctx.t.datetime(datetime.fromisoformat(found["send_at"]))
        text += "\n" + ctx.t(SCHEDULED, id=found["id"], when=when)
    return text


def progress_chosen(ctx: Context, choice: str) -> str:
    return "staff_broadcast.confirm_cancel" if choice == "cancel" else "menu.main"


def confirm_prompt(ctx: Context) -> str:
    found = ctx.data["broadcast"]
    if found["status"] == "scheduled":
        when = ctx.t.datetime(datetime.fromisoformat(found["send_at"]))
        return ctx.t(CONFIRM_SCHEDULED, id=found["id"], when=when)
    return ctx.t(CONFIRM_SENDING, id=found["id"], n=found["queued"])


def cancel_confirmed(ctx: Context, choice: str) -> Outcome:
    if choice != "yes":
        ctx.data["then"] = "progress"
        return Outcome(goto="staff_broadcast.load")
    args = {"id": ctx.data["broadcast_id"]}
    return Outcome(
        effects=[StaffAction("broadcast.cancel", args)], goto="staff_broadcast.cancelled"
    )


def cancelled(ctx: Context) -> Outcome:
    """What stopping did; the broadcast may have finished, or been cancelled by another
    staff member, between the question and the answer."""
    found = ctx.facts["staff"]
    if found is None and ctx.facts["refused"]["error"] in ("wrong_state", "not_found"):
        text = ctx.t(NOT_CANCELLABLE, id=ctx.data["broadcast_id"])
    elif found is None:
        text = refusal_text(ctx, ctx.facts["refused"])
    elif found["was"] == "scheduled":
        text = ctx.t(CANCELLED_SCHEDULED, id=found["id"])
    else:
        text = ctx.t(CANCELLED_SENDING, id=found["id"], n=found["not_sent"])
    return Outcome(say=[say(text)], goto="menu.main")


staff_broadcast = Flow(
    "staff_broadcast",
    *[text_step(lang, WRITE_TEXT) for lang in LANGUAGES],
    Do("texts_done", after_texts),
    Ask(
        "attachment",
        attach_prompt,
        save="attachment",
        accepts=frozenset({Kind.TEXT, Kind.PHOTO}),
        wanted=ADDRESS_ONLY,
        skip=True,
        on=attached,
    ),
    Choose("audience", WHO, AUDIENCES, on=lambda ctx, c: AUDIENCE_STEPS[c]),
    Choose(
        "municipality",
        WHICH_MUNICIPALITY,
        municipalities,
        save="municipality",
        columns=2,
        on=lambda ctx, c: "staff_broadcast.preview",
    ),
    Choose(
        "language",
        WHICH_LANGUAGE,
        [Choice(code, {"en": name}) for code, name in ENDONYMS.items()],
        save="language",
        columns=2,
        on=lambda ctx, c: "staff_broadcast.preview",
    ),
    Choose(
        "gender",
        WHICH_GENDER,
        GENDER_CHOICES,
        save="gender",
        columns=2,
        on=lambda ctx, c: "staff_broadcast.preview",
    ),
    Choose(
        "age_group",
        WHICH_AGE_GROUP,
        AGE_GROUP_CHOICES,
        save="age_group",
        columns=3,
        on=lambda ctx, c: "staff_broadcast.preview",
    ),
    Ask("campaign", WHICH_CAMPAIGN, save="campaign", on=lambda ctx: "staff_broadcast.preview"),
    Ask("event", WHICH_EVENT, save="event", on=lambda ctx: "staff_broadcast.preview"),
    Do("preview", preview),
    Do("previewed", previewed),
    Choose(
        "confirm",
        preview_text,
        [Choice("now", SEND_NOW), Choice("later", LATER), Choice("cancel", CANCEL)],
        on=confirmed,
    ),
    Ask("when", WHEN, save="when", on=scheduled),
    Do("queued", queued),
    Do("status", status_start),
    Do("cancel", cancel_start),
    Ask("which", WHICH_BROADCAST, save="typed", on=number_typed),
    Do("load", load),
    Do("loaded", loaded),
    Choose(
        "progress",
        progress_text,
        [Choice("cancel", CANCEL_BROADCAST), Choice("back", BACK)],
        on=progress_chosen,
    ),
    Choose(
        "confirm_cancel",
        confirm_prompt,
        [Choice("yes", YES_CANCEL), Choice("back", BACK)],
        on=cancel_confirmed,
        columns=2,
    ),
    Do("cancelled", cancelled),
)
