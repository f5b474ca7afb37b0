"""Trade with the EU: browse the DCFTA answers by topic, or ask one's own question
(stored for staff to answer, with a reference number)."""

from __future__ import annotations

from bot.i18n import _
from flows.core import (
    BACK,
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


def topics(ctx: Context) -> list[Choice]:
    found = [Choice(t.id, t.title) for t in ctx.content.topics]
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
    topic = ctx.content.topic(ctx.data.get("topic"))
    found = [Choice(q.id, q.question) for q in topic.questions] if topic else []
    return [*found, Choice("back", BACK)]


def questions_prompt(ctx: Context) -> str:
    topic = ctx.content.topic(ctx.data.get("topic"))
    return ctx.t(QUESTIONS, topic=ctx.label(topic.title) if topic else "")


def question_chosen(ctx: Context, choice: str) -> Outcome | str:
    found = ctx.content.question(choice)
    if choice == "back" or found is None:
        return "dcfta.topics"
    _topic, question = found
    text = f"{ctx.label(question.question)}\n\n{ctx.label(question.answer)}"
    return Outcome(say=[say(text)], goto="dcfta.questions")


def asked(ctx: Context) -> Outcome:
    question = ctx.data["question"]
    submit = SubmitReport(kind="dcfta", category=ctx.data.get("topic"), text=question["text"])
    return Outcome(goto="dcfta.thanks", effects=[submit])


def thanks(ctx: Context) -> Outcome:
    return Outcome(say=[say(ctx.t(ASKED, reference=ctx.facts["reference"]))], goto="menu.main")


dcfta = Flow(
    "dcfta",
    Choose("topics", TOPICS, topics, on=topic_chosen),
    Choose("questions", questions_prompt, questions, on=question_chosen),
    Ask("ask", ASK, save="question", wanted=ASK_HOW, on=asked),
    Do("thanks", thanks),
)
