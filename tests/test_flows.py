"""Flows and the conversation turn without any database or network: pure steps."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.conversation import Conversation, State
from bot.i18n import Translator, pick_language
from bot.messages import Button, Inbound, Kind, Reply
from flows import REGISTRY
from flows.content import load_content
from flows.core import PICK_A_BUTTON, Context, Effect, Profile, SubmitReport, UpdateProfile
from flows.onboarding import MUNICIPALITY
from flows.report import CATEGORY_LABELS, DESCRIBE

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def context(lang: str = "ru", **profile: object) -> Context:
    base = {"channel": "telegram", "language": lang, "consent": True, "municipality": "marneuli"}
    return Context(
        t=Translator(lang),
        profile=Profile(**{**base, **profile}),
        now=NOW,
        content=load_content(),
    )


def said(kind: Kind, **fields: object) -> Inbound:
    return Inbound(channel="telegram", address="1", external_id="x", kind=kind, **fields)


async def turn(state: State, inbound: Inbound, ctx: Context) -> tuple[list[Reply], State, list]:
    effects: list[Effect] = []

    async def apply(effect: Effect, _ctx: Context) -> None:
        effects.append(effect)
        if isinstance(effect, SubmitReport):
            _ctx.facts["reference"] = "KV-2026-000042"

    replies, state = await Conversation(REGISTRY, apply).turn(state, inbound, ctx)
    # What a restart would see: the state only ever lives in its stored form.
    return replies, State.from_json(state.step, state.to_json()), effects


async def test_a_tap_on_an_old_keyboard_is_answered_with_the_current_question() -> None:
    ctx = context()
    replies, state, _ = await turn(State(), said(Kind.TEXT, text="/menu"), ctx)
    replies, state, _ = await turn(state, said(Kind.BUTTON, payload="report"), ctx)
    assert state.step == "report.category"
    replies, state, _ = await turn(state, said(Kind.BUTTON, payload="mine"), ctx)
    assert state.step == "report.category"
    assert replies[-1].text == ctx.t(PICK_A_BUTTON)
    assert replies[-1].buttons[0][0] == Button("roads", ctx.t(CATEGORY_LABELS["roads"]))


async def test_a_report_turns_into_one_submit_effect() -> None:
    ctx = context()
    state = State("report.category")
    _, state, _ = await turn(state, said(Kind.BUTTON, payload="water"), ctx)
    assert state.step == "report.description"
    _, state, _ = await turn(state, said(Kind.VOICE, media_id="AwAC-voice"), ctx)
    _, state, _ = await turn(state, said(Kind.LOCATION, latitude=41.40, longitude=43.49), ctx)
    _, state, _ = await turn(state, said(Kind.BUTTON, payload="anonymous"), ctx)
    replies, state, effects = await turn(state, said(Kind.BUTTON, payload="submit"), ctx)
    [submit] = effects
    assert submit == SubmitReport(
        kind="need",
        category="water",
        text=None,
        media=({"type": "voice", "file_id": "AwAC-voice"},),
        latitude=41.40,
        longitude=43.49,
        location_municipality="akhalkalaki",
        anonymous=True,
    )
    assert "KV-2026-000042" in replies[0].text
    assert state.step == "menu.main"


async def test_choosing_a_language_is_a_profile_change_and_speaks_it_at_once() -> None:
    ctx = context(lang="ru", consent=None, municipality=None)
    ctx.profile = Profile(channel="telegram")
    replies, state, _ = await turn(State(), said(Kind.TEXT, text="/start"), ctx)
    assert state.step == "onboarding.language"
    replies, state, effects = await turn(state, said(Kind.BUTTON, payload="hy"), ctx)
    assert effects == [UpdateProfile({"language": "hy"})]
    assert replies[-1].text == Translator("hy")(MUNICIPALITY)


async def test_typing_a_buttons_number_picks_it() -> None:
    ctx = context(lang="ka")
    _, state, _ = await turn(State(), said(Kind.TEXT, text="/menu"), ctx)
    _, state, _ = await turn(state, said(Kind.TEXT, text="1"), ctx)
    assert state.step == "report.category"
    replies, state, _ = await turn(state, said(Kind.TEXT, text="2"), ctx)
    assert replies[-1].text == ctx.t(DESCRIBE)
    assert state.step == "report.description"


@pytest.mark.parametrize(
    ("tag", "language"),
    [
        ("ru-RU", "ru"),
        ("ka", "ka"),
        ("hy-AM", "hy"),
        ("az-Cyrl-AZ", "az"),
        ("en", None),
        (None, None),
        ("zz-invalid!", None),
    ],
)
def test_platform_language_hints(tag: str | None, language: str | None) -> None:
    assert pick_language(tag) == language


def test_locations_map_to_the_nearest_municipality_within_the_regions() -> None:
    content = load_content()
    assert content.nearest(41.2647, 43.5917).code == "ninotsminda"
    assert content.nearest(41.48, 44.80).code == "marneuli"
    assert content.nearest(41.6168, 41.6367) is None, "Batumi is outside both regions"


def test_stored_shapes_round_trip() -> None:
    reply = Reply("ტექსტი", ((Button("a", "ა"), Button("b", "ბ")),), photo_id="p")
    assert Reply.from_json(reply.to_json()) == reply
    inbound = said(Kind.LOCATION, latitude=41.0, longitude=44.0, display_name="Nino")
    assert Inbound.from_json(inbound.to_json()) == inbound
