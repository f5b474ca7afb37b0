"""Content kept as data, not code: municipalities and the DCFTA answers.

Editors change these JSON files without touching a flow; every text in them
carries all four residents' languages and English.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

CONTENT_DIR = Path(__file__).resolve().parent.parent / "content"

# Beyond this distance from every centre a location is not in the two regions.
NEAREST_LIMIT_KM = 60.0


@dataclass(frozen=True)
class Municipality:
    code: str
    region: str
    latitude: float
    longitude: float
    names: Mapping[str, str]


@dataclass(frozen=True)
class Question:
    id: str
    question: Mapping[str, str]
    answer: Mapping[str, str]


@dataclass(frozen=True)
class Topic:
    id: str
    title: Mapping[str, str]
    questions: tuple[Question, ...]


@dataclass(frozen=True)
class Content:
    regions: Mapping[str, Mapping[str, str]]
    municipalities: tuple[Municipality, ...]
    topics: tuple[Topic, ...]
    active: tuple[str, ...]

    def active_municipalities(self) -> tuple[Municipality, ...]:
        if not self.active:
            return self.municipalities
        return tuple(m for m in self.municipalities if m.code in self.active)

    def municipality(self, code: str | None) -> Municipality | None:
        return next((m for m in self.municipalities if m.code == code), None)

    def topic(self, topic_id: str | None) -> Topic | None:
        return next((t for t in self.topics if t.id == topic_id), None)

    def question(self, question_id: str | None) -> tuple[Topic, Question] | None:
        for topic in self.topics:
            for question in topic.questions:
                if question.id == question_id:
                    return topic, question
        return None

    def nearest(self, latitude: float, longitude: float) -> Municipality | None:
        """The municipality whose centre is closest, if any is within reach (none for a
        point that is not on Earth: NaN, ±inf or out of range)."""
        if not (abs(latitude) <= 90.0 and abs(longitude) <= 180.0):
            return None
        best = min(
            self.municipalities,
            key=lambda m: _km(latitude, longitude, m.latitude, m.longitude),
        )
        if _km(latitude, longitude, best.latitude, best.longitude) > NEAREST_LIMIT_KM:
            return None
        return best


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 6371.0 * 2 * math.asin(math.sqrt(a))


@cache
def _read(name: str) -> dict:
    return json.loads((CONTENT_DIR / name).read_text(encoding="utf-8"))


def load_content(active: Iterable[str] = ()) -> Content:
    places = _read("municipalities.json")
    faq = _read("dcfta.json")
    municipalities = tuple(
        Municipality(m["code"], m["region"], m["lat"], m["lon"], m["names"])
        for m in places["municipalities"]
    )
    active = tuple(active)
    unknown = set(active) - {m.code for m in municipalities}
    if unknown:
        raise ValueError(f"unknown municipality codes in ACTIVE_MUNICIPALITIES: {sorted(unknown)}")
    topics = tuple(
        Topic(
            t["id"],
            t["title"],
            tuple(Question(q["id"], q["question"], q["answer"]) for q in t["questions"]),
        )
        for t in faq["topics"]
    )
    return Content(
        regions={r["code"]: r["names"] for r in places["regions"]},
        municipalities=municipalities,
        topics=topics,
        active=active,
    )
