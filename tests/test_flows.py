"""Flows and the conversation turn without any database or network: pure steps."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.engine.conversation import Conversation, State
from bot.vocabulary.i18n import Translator, pick_language
from bot.vocabulary.messages import Button, Inbound, Kind, Reply
from flows import REGISTRY
from flows.content import load_content
from flows.core import (
    PICK_A_BUTTON,
    Context,
    Effect,
    LoadFaq,
    Profile,
    SubmitReport,
    UpdateProfile,
)
from flows.dcfta import FROM_RESIDENTS, QUESTIONS, FaqView
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


# --- DCFTA answers that residents' questions added ----------------------------------------

PROMOTED = [
    FaqView(
        12,
        "export_eu",
        "Можно ли продавать мёд с моей пасеки в Марнеули в Польшу, если у меня нет своей компании?",
        "Да, но сначала пасеку нужно зарегистрировать в Национальном агентстве продовольствия.",
    ),
    FaqView(9, None, "Кто выдаёт сертификат EUR.1?", "Налоговая служба, по заявлению."),
    FaqView(5, "retired_topic", "Что изменилось для фундука?", "Ничего нового."),
]


async def browse(
    state: State, inbound: Inbound, ctx: Context, promoted: list[FaqView]
) -> tuple[list[Reply], State, list[Effect]]:
    """One turn where the engine finds `promoted` in the FAQ, stored as a restart sees it."""
    effects: list[Effect] = []

    async def apply(effect: Effect, _ctx: Context) -> None:
        effects.append(effect)
        if isinstance(effect, LoadFaq):
            _ctx.facts["faq"] = promoted
        if isinstance(effect, SubmitReport):
            _ctx.facts["reference"] = "DQ-2026-000043"

    replies, state = await Conversation(REGISTRY, apply).turn(state, inbound, ctx)
    return replies, State.from_json(state.step, state.to_json()), effects


def ids(reply: Reply) -> list[str]:
    return [button.id for row in reply.buttons for button in row]


async def test_promoted_questions_follow_the_static_ones_and_the_rest_have_a_topic() -> None:
    ctx = context("ru")
    static = [topic.id for topic in ctx.content.topics]
    _, state, _ = await browse(State(), said(Kind.TEXT, text="/menu"), ctx, PROMOTED)
    [topics], state, effects = await browse(
        state, said(Kind.BUTTON, payload="dcfta"), ctx, PROMOTED
    )
    assert effects == [LoadFaq()]
    assert ids(topics) == [*static, "residents", "ask", "back"]
    assert topics.buttons[len(static)][0].label == ctx.t(FROM_RESIDENTS)

    [listing], state, _ = await browse(state, said(Kind.BUTTON, payload="export_eu"), ctx, PROMOTED)
    assert ids(listing) == ["what_is_dcfta", "check_first", "faq-12", "back"]
    label = listing.buttons[2][0].label
    assert len(label) <= 60 and label.endswith("…")
    assert PROMOTED[0].question.startswith(label[:-1])
    [answer, again], state, effects = await browse(
        state, said(Kind.BUTTON, payload="faq-12"), ctx, PROMOTED
    )
    assert answer.text == f"{PROMOTED[0].question}\n\n{PROMOTED[0].answer}"
    assert again.text == listing.text and effects == []

    [topics], state, _ = await browse(state, said(Kind.BUTTON, payload="back"), ctx, PROMOTED)
    assert "residents" in ids(topics), "the list is kept while browsing"
    [theirs], state, _ = await browse(state, said(Kind.BUTTON, payload="residents"), ctx, PROMOTED)
    assert theirs.text == ctx.t(QUESTIONS, topic=ctx.t(FROM_RESIDENTS))
    assert ids(theirs) == ["faq-9", "faq-5", "back"], "an unknown topic joins the residents'"
    assert theirs.buttons[0][0].label == "Кто выдаёт сертификат EUR.1?"

    _, state, _ = await browse(state, said(Kind.BUTTON, payload="back"), ctx, PROMOTED)
    _, state, _ = await browse(state, said(Kind.BUTTON, payload="ask"), ctx, PROMOTED)
    _, state, effects = await browse(state, said(Kind.TEXT, text="А для мёда?"), ctx, PROMOTED)
    assert effects == [SubmitReport(kind="dcfta", category=None, text="А для мёда?")]


async def test_without_promoted_questions_the_topics_are_the_static_ones() -> None:
    ctx = context("az")
    _, state, _ = await browse(State(), said(Kind.TEXT, text="/menu"), ctx, [])
    [topics], state, _ = await browse(state, said(Kind.BUTTON, payload="dcfta"), ctx, [])
    assert ids(topics) == [*(topic.id for topic in ctx.content.topics), "ask", "back"]
    [listing], _, _ = await browse(state, said(Kind.BUTTON, payload="origin"), ctx, [])
    assert ids(listing) == ["eur1_certificate", "origin_declaration", "back"]


def test_a_typed_number_is_a_button_where_buttons_are_asked_for_and_an_answer_elsewhere() -> None:
    from bot.engine.conversation import interpret

    offered = [("skip", "Skip"), ("back", "Back")]
    at_a_choice = State(step="menu.main", offered=offered)
    at_a_question = State(step="staff_events.capacity", offered=offered)
    typed_one = said(Kind.TEXT, text="1")

    assert interpret(at_a_choice, typed_one).payload == "skip"
    assert interpret(at_a_question, typed_one, free_input=True) == typed_one
    assert interpret(at_a_question, said(Kind.TEXT, text="skip"), free_input=True).payload == "skip"
