"""Trade with the EU: browse the DCFTA answers by topic, or ask one's own question
(stored for staff to answer, with a reference number).

The answers are the static ones in content/dcfta.json, followed under each topic by
residents' questions that staff answered and added to the FAQ — only those asked in
the resident's own language, as nobody translates them (see bot/outreach/faq.py).
They are loaded once, when the topics open, and kept in the conversation's data, so
browsing back and forth reads the same list and a tap is checked against what was
shown (an entry is never looked up again by an id a resident could type).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.vocabulary.i18n import _
from flows.core import (
    BACK,
    Ask,
    Choice,
    Choose,
    Context,
    Do,
    Flow,
    LoadFaq,
    Outcome,
    SubmitReport,
    button_label,
    say,
)

TOPICS = _("Trade with the EU (DCFTA): choose a topic, or ask your own question.")
ASK_OWN = _("✍️ Ask my own question")
QUESTIONS = _("{topic}: choose a question.")
ASK = _("Write your question about trade with the EU. Our team will answer here in the chat.")
ASK_HOW = _("Please write your question in a text message.")
NEEDS_CONSENT = _(
    "To send us a question we need your agreement to store it. Choose “I want to take part” "
    "in the menu, and then ask again."
)
ASKED = _("Thank you! Your question has been received. Reference number: {reference}.")
FROM_RESIDENTS = _("💬 Answered questions from residents")

# The topic choice for promoted questions asked outside any topic (or under one that
# content/dcfta.json no longer has); never a topic id in content/dcfta.json.
RESIDENTS = "residents"
# Buttons for promoted questions: `faq-<entry id>`, short ASCII whatever the question says.
FAQ_PREFIX = "faq-"


@dataclass(frozen=True)
class FaqView:
    """A promoted question as the flow sees it; `topic` is None when asked outside a topic."""

    id: int
    topic: str | None
    question: str
    answer: str


def loaded(ctx: Context) -> Outcome:
    """Keep the promoted questions for the whole visit; unknown topics join the residents'."""
    ctx.data["faq"] = [
        [e.id, e.topic if ctx.content.topic(e.topic) else None, e.question, e.answer]
        for e in ctx.facts.get("faq", [])
    ]
    return Outcome(goto="dcfta.topics")


def _promoted(ctx: Context, topic: str | None) -> list[list]:
    wanted = None if topic == RESIDENTS else topic
    return [e for e in ctx.data.get("faq", []) if e[1] == wanted]


def topics(ctx: Context) -> list[Choice]:
    found = [Choice(t.id, t.title) for t in ctx.content.topics]
    if _promoted(ctx, RESIDENTS):
        found.append(Choice(RESIDENTS, FROM_RESIDENTS))
    return [*found, Choice("ask", ASK_OWN), Choice("back", BACK)]


def topic_chosen(ctx: Context, choice: str) -> Outcome | str:
    if choice == "back":
        return "menu.main"
    if choice == "ask":
        if not ctx.profile.consent:
            return Outcome(say=[say(ctx.t(NEEDS_CONSENT))], goto="menu.main")
        return "dcfta.ask"
    ctx.data["topic"] = choice
    return "dcfta.questions"


def questions(ctx: Context) -> list[Choice]:
    """The topic's static questions first, then residents' promoted ones, newest first."""
    topic = ctx.content.topic(ctx.data.get("topic"))
    found = [Choice(q.id, q.question) for q in topic.questions] if topic else []
    found += [
        Choice(f"{FAQ_PREFIX}{e[0]}", {"en": button_label(e[2])})
        for e in _promoted(ctx, ctx.data.get("topic"))
    ]
    return [*found, Choice("back", BACK)]


def questions_prompt(ctx: Context) -> str:
    if ctx.data.get("topic") == RESIDENTS:
        return ctx.t(QUESTIONS, topic=ctx.t(FROM_RESIDENTS))
    topic = ctx.content.topic(ctx.data.get("topic"))
    return ctx.t(QUESTIONS, topic=ctx.label(topic.title) if topic else "")


def question_chosen(ctx: Context, choice: str) -> Outcome | str:
    if choice.startswith(FAQ_PREFIX):
        entry = next((e for e in ctx.data.get("faq", []) if f"{FAQ_PREFIX}{e[0]}" == choice), None)
        if entry is None:
            return "dcfta.topics"
        return Outcome(say=[say(f"{entry[2]}\n\n{entry[3]}")], goto="dcfta.questions")
    found = ctx.content.question(choice)
    if choice == "back" or found is None:
        return "dcfta.topics"
    _topic, question = found
    text = f"{ctx.label(question.question)}\n\n{ctx.label(question.answer)}"
    return Outcome(say=[say(text)], goto="dcfta.questions")


def asked(ctx: Context) -> Outcome:
    question = ctx.data["question"]
    # The topic being browsed files the question; the residents' list is not a topic.
    topic = ctx.data.get("topic")
    category = topic if ctx.content.topic(topic) else None
    submit = SubmitReport(kind="dcfta", category=category, text=question["text"])
    return Outcome(goto="dcfta.thanks", effects=[submit])


def thanks(ctx: Context) -> Outcome:
    return Outcome(say=[say(ctx.t(ASKED, reference=ctx.facts["reference"]))], goto="menu.main")


dcfta = Flow(
    "dcfta",
    Do("load", lambda ctx: Outcome(effects=[LoadFaq()])),
    Do("loaded", loaded),
    Choose("topics", TOPICS, topics, on=topic_chosen),
    Choose("questions", questions_prompt, questions, on=question_chosen),
    Ask("ask", ASK, save="question", wanted=ASK_HOW, on=asked),
    Do("thanks", thanks),
)
