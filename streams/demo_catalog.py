"""The demo's built-in catalog and scripted users. Pure data, written for this project.

Eight clearly different topics, each with subjects × formats, give a few hundred items whose
texts the model separates well. Items carry ``tags`` (the topic and a subtopic, which label the
interest clusters), ``category`` (for ``--filter category=...``) and a synthetic ``popularity``
(for the popularity prior and the cold-start fallback) that differs by topic as well as by item
(:data:`TOPIC_POPULARITY`: football items are read ~50× as often as baking ones), so a prior
that is too strong shows at once: popular off-topic items in someone's top 5.

The scripted users: the shown :data:`PERSONAS`, each with a shift of interest, and a
:data:`CROWD` of football and Japan-travel readers around them (not shown), who make those topics
popular and give the collaborative dimension co-engagement to learn from.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TOPICS: dict[str, list[str]] = {
    "deep learning": [
        "convolutional neural networks", "transformer attention layers",
        "generative adversarial networks", "backpropagation and gradient descent",
        "reinforcement learning agents", "diffusion models for images",
        "fine-tuning large language models", "graph neural networks",
    ],
    "baking": [
        "sourdough bread", "chocolate layer cake", "flaky butter croissants",
        "lemon meringue pie", "cinnamon rolls", "gluten-free brownies",
        "french macarons", "rye and spelt loaves",
    ],
    "football": [
        "Champions League tactics", "pressing and counter-pressing", "goalkeeper training drills",
        "the offside rule", "set-piece routines", "youth football academies",
        "World Cup history", "transfer market economics",
    ],
    "astronomy": [
        "black holes and event horizons", "exoplanet detection", "the James Webb telescope",
        "neutron stars and pulsars", "the Andromeda galaxy", "dark matter evidence",
        "backyard telescope observing", "solar eclipses",
    ],
    "gardening": [
        "growing tomatoes", "composting kitchen scraps", "pruning fruit trees",
        "organic pest control", "raised vegetable beds", "perennial flower borders",
        "seed starting indoors", "drought-tolerant plants",
    ],
    "jazz": [
        "bebop improvisation", "Miles Davis albums", "jazz piano voicings",
        "the history of swing bands", "walking bass lines", "modal jazz",
        "saxophone solos", "Latin jazz rhythms",
    ],
    "travel in japan": [
        "Kyoto temples", "the Tokyo subway", "onsen hot springs etiquette",
        "cherry blossom season", "ramen shops in Osaka", "hiking Mount Fuji",
        "Japan Rail Pass tips", "ryokan stays",
    ],
    "personal finance": [
        "index fund investing", "budgeting with envelopes", "paying off credit card debt",
        "retirement savings accounts", "emergency funds", "mortgage refinancing",
        "tax-efficient investing", "saving for college",
    ],
}  # fmt: skip

#: Relative readership of each topic (multiplies every item's synthetic popularity).
TOPIC_POPULARITY: dict[str, int] = {
    "football": 50, "travel in japan": 20, "deep learning": 10, "personal finance": 5,
    "astronomy": 3, "jazz": 2, "gardening": 1, "baking": 1,
}  # fmt: skip

FORMATS = [
    "A beginner's guide to {s}",
    "Advanced techniques in {s}",
    "Ten common mistakes with {s}",
    "The science behind {s}",
    "A short history of {s}",
]


@dataclass(frozen=True, slots=True)
class DemoItem:
    item_id: str
    text: str
    topic: str
    subject: str
    popularity: int

    def catalog_line(self) -> dict[str, object]:
        return {
            "id": self.item_id,
            "text": self.text,
            "payload": {
                "tags": [self.topic, self.subject],
                "category": self.topic.replace(" ", "-"),
                "popularity": self.popularity,
            },
        }


def build_catalog(formats: int = len(FORMATS), seed: int = 7) -> list[DemoItem]:
    """``8 topics × 8 subjects × formats`` items (320 with every format), deterministic."""
    rng = random.Random(seed)
    items = []
    for topic, subjects in TOPICS.items():
        for s, subject in enumerate(subjects):
            for f, template in enumerate(FORMATS[:formats]):
                items.append(
                    DemoItem(
                        item_id=f"{topic.replace(' ', '-')}-{s}-{f}",
                        text=template.format(s=subject),
                        topic=topic,
                        subject=subject,
                        popularity=TOPIC_POPULARITY[topic]
                        * (int(1000 * rng.paretovariate(1.5)) // 10),
                    )
                )
    return items


POSITIVE_KINDS = ("view", "click", "read", "like", "click", "purchase")


@dataclass(frozen=True, slots=True)
class Persona:
    """A scripted user: what they like before and after the shift, and what they dislike."""

    user_id: str
    before: tuple[str, ...]
    after: tuple[str, ...]
    dislikes: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()


PERSONAS = (
    Persona("alice", before=("deep learning",), after=("baking",), dislikes=("football",),
            searches=("how do diffusion models generate images",)),
    Persona("bob", before=("football", "travel in japan"), after=("astronomy",),
            dislikes=("personal finance",), searches=("best telescope for beginners",)),
    Persona("carol", before=("jazz",), after=("gardening", "jazz"), dislikes=("deep learning",)),
    Persona("dora", before=("baking",), after=("baking", "gardening")),
    Persona("erin", before=("personal finance",), after=("jazz",)),
)  # fmt: skip

#: Readers around the personas (not shown): football and Japan travel, the popular topics.
CROWD = tuple(
    Persona(f"fan-{k}", before=("football", "travel in japan"), after=("football",))
    for k in range(1, 13)
)


def scripted_events(
    catalog: list[DemoItem],
    phase: str,
    now_ms: int,
    per_topic: int = 8,
    seed: int = 11,
    personas: tuple[Persona, ...] = PERSONAS + CROWD,
) -> list[dict[str, object]]:
    """One phase ("before" or "after") of every persona's events (the crowd's too), in time
    order.

    "before" events happen three to two hours ago, "after" events in the last half hour, so the
    short-term dimension (1 h half-life) follows the shift while long-term keeps older taste.
    """
    rng = random.Random(f"{seed}-{phase}")
    by_topic: dict[str, list[DemoItem]] = {}
    for item in catalog:
        by_topic.setdefault(item.topic, []).append(item)
    start, span = (now_ms - 3 * 3_600_000, 3_600_000) if phase == "before" else (
        now_ms - 1_800_000, 1_700_000)  # fmt: skip
    events: list[dict[str, object]] = []
    for persona in personas:
        topics = persona.before if phase == "before" else persona.after
        plan: list[tuple[str, DemoItem | str]] = []
        for topic in topics:
            for item in rng.sample(by_topic[topic], min(per_topic, len(by_topic[topic]))):
                plan.append(
                    (rng.choice(["view", "click", "read", "like", "click", "purchase"]), item)
                )
        for topic in persona.dislikes if phase == "before" else ():
            for item in rng.sample(by_topic[topic], 2):
                plan.append(("dislike", item))
        for query in persona.searches if phase == "after" else ():
            plan.append(("search", query))
        rng.shuffle(plan)
        for i, (kind, target) in enumerate(plan):
            event: dict[str, object] = {
                "event_id": f"{persona.user_id}-{phase}-{i}",
                "user_id": persona.user_id,
                "type": kind,
                "ts": start + span * i // max(1, len(plan)),
            }
            if isinstance(target, DemoItem):
                event["item_id"] = target.item_id
                event["tags"] = [target.topic, target.subject]
            else:
                event["text"] = target
            events.append(event)
    events.sort(key=lambda e: int(str(e["ts"])))
    return events
