"""The chaos run's input: events from many users over a small vocabulary, with re-sent
duplicates, out-of-order timestamps and a few invalid records, in one fixed publish order.

Deterministic from the seed. Texts come from a modest vocabulary (``texts`` phrases) so the
embed worker's encoder cache, not the model, carries the run on a CPU. Each user's events get
ids in publish order (``<user>-e<k>``) but timestamps drawn at random over the last hours, so
event time runs backwards about half the time. A duplicate is the same bytes sent again a little
later (as a producer retrying after a lost ack would); an invalid record names an unknown event
type, which the stream worker dead-letters.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

TOPICS = (
    "deep learning", "sourdough baking", "trail running", "jazz piano", "urban gardening",
    "medieval history", "street photography", "chess openings", "home espresso", "rock climbing",
    "watercolor painting", "quantum computing", "vegan cooking", "marathon training",
    "film noir", "astronomy", "woodworking", "mountain biking", "bird watching", "poetry",
    "sailing", "cryptography", "board games", "opera", "beekeeping", "surfing", "ceramics",
    "ancient rome", "electric cars", "knitting", "stand-up comedy", "rust programming",
    "fly fishing", "origami", "volcanoes", "wine tasting", "calligraphy", "robotics",
    "yoga", "typography",
)  # fmt: skip
ASPECTS = (
    "a beginner's guide to", "advanced techniques in", "the history of", "common mistakes in",
    "the best books on", "a weekend of", "the science behind", "tools for",
    "a documentary about", "news about", "a podcast on", "ten tips for",
)  # fmt: skip
TYPES = ("view", "click", "read", "search", "like", "share", "purchase", "dislike", "skip")
TYPE_ODDS = (30, 25, 10, 10, 8, 4, 3, 5, 5)
BOGUS_TYPE = "chaos-bogus"
HOUR_MS = 3_600_000


def vocabulary(size: int) -> list[str]:
    """``size`` distinct phrases ("the history of jazz piano" ...), the same for a given size."""
    phrases = [f"{a} {t}" for t in TOPICS for a in ASPECTS]
    if size > len(phrases):
        raise ValueError(f"at most {len(phrases)} texts, got {size}")
    return random.Random(7).sample(phrases, size)


@dataclass(frozen=True, slots=True)
class Sent:
    """One record as published: its key, its bytes, and what it is."""

    user_id: str
    value: bytes
    kind: str  # "event", "duplicate" or "invalid"
    event_id: str


@dataclass
class Workload:
    """The records in publish order and, per user, its distinct valid event ids in that order."""

    records: list[Sent]
    expected: dict[str, list[str]] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        kinds: dict[str, int] = defaultdict(int)
        for r in self.records:
            kinds[r.kind] += 1
        return {"records": len(self.records), "users": len(self.expected), **kinds}


def _event(rng: random.Random, user: str, k: int, now_ms: int, texts: list[str]) -> dict[str, Any]:
    """One valid event body: random type, a text of the vocabulary (Zipf-like), maybe tags."""
    type_ = rng.choices(TYPES, TYPE_ODDS)[0]
    text = texts[min(int(rng.paretovariate(1.1)) - 1, len(texts) - 1) if rng.random() < 0.5
                 else rng.randrange(len(texts))]  # fmt: skip
    body: dict[str, Any] = {
        "event_id": f"{user}-e{k}",
        "user_id": user,
        "type": type_,
        "ts": now_ms - rng.randrange(6 * HOUR_MS),  # out of order within each user
        "text": text,
    }
    if rng.random() < 0.3:
        body["tags"] = [text.split()[-1]]
    if rng.random() < 0.1:
        body["weight"] = round(rng.uniform(0.1, 3.0), 3)
    return body


def build(
    events: int, users: int, *, dup_rate: float, invalid_rate: float, texts: int, seed: int,
    now_ms: int,
) -> Workload:  # fmt: skip
    """``events`` distinct valid events of ``users`` users (each at least one), plus
    ``dup_rate·events`` re-sent copies and ``invalid_rate·events`` invalid records."""
    if events < users:
        raise ValueError("need at least one event per user")
    rng = random.Random(seed)
    vocab = vocabulary(texts)
    owners = [*range(users), *(rng.randrange(users) for _ in range(events - users))]
    rng.shuffle(owners)
    seen: dict[int, int] = defaultdict(int)
    records: list[Sent] = []
    expected: dict[str, list[str]] = defaultdict(list)
    for u in owners:
        user = f"chaos-u{u:05d}"
        seen[u] += 1
        body = _event(rng, user, seen[u], now_ms, vocab)
        records.append(Sent(user, json.dumps(body).encode(), "event", body["event_id"]))
        expected[user].append(body["event_id"])
    for _ in range(round(dup_rate * events)):
        i = rng.randrange(len(records))
        original = records[i]
        at = min(len(records), i + 1 + rng.randrange(2000))  # re-sent a little later
        records.insert(at, Sent(original.user_id, original.value, "duplicate", original.event_id))
    for j in range(round(invalid_rate * events)):
        user = f"chaos-u{rng.randrange(users):05d}"
        body = {"event_id": f"{user}-bad{j}", "user_id": user, "type": BOGUS_TYPE,
                "ts": now_ms, "text": rng.choice(vocab)}  # fmt: skip
        bad = Sent(user, json.dumps(body).encode(), "invalid", body["event_id"])
        records.insert(rng.randrange(len(records) + 1), bad)
    return Workload(records, dict(expected), vocab)
