"""Planted taste: on a small content catalog, every persona's top 5 stays on its own topics.

The demo's catalog (:mod:`streams.demo_catalog`: 320 items, 8 topics whose popularity differs
50×) with its scripted users: five personas, each shifting interest halfway, among a crowd of
football and Japan-travel readers. Events go through the embed worker's own fold
(:class:`~streams.embed.fold.JobFolder`, the bundled model, embedded Qdrant), the items'
collaborative vectors are rebuilt as the worker rebuilds them, and the default
``Recommender.recommend`` (library defaults) answers. Before the shift every persona's top 5 must
come from the topics it engaged with so far, and after it from the topics it engaged with: a
prior tuned on MovieLens or a collaborative signal learned from the crowd must not pull popular
off-topic items in. The same scenario with the prior unscaled (``ln(1 + popularity)``, as
MovieLens alone would set it) is checked to fail, so the test has teeth.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models.catalog import CatalogItem, load_items
from models.encoder import Encoder
from models.recommend import Recommender
from models.settings import CollabSettings, ProfileSettings, QdrantSettings, RecommendSettings
from models.store import InterestStore
from streams.contracts.events import validate_event
from streams.contracts.jobs import JobEvent, UpdateJob
from streams.demo_catalog import PERSONAS, DemoItem, build_catalog, scripted_events
from streams.embed.collab import CollabRefresher
from streams.embed.fold import JobFolder

pytestmark = pytest.mark.slow

NOW_MS = 1_700_000_000_000


def _defaults(cls: type[RecommendSettings] | type[CollabSettings]) -> dict[str, Any]:
    """A settings class's own defaults, whatever the environment says."""
    return {n: f.get_default(call_default_factory=True) for n, f in cls.model_fields.items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InterestStore, Encoder]]:
    encoder = Encoder(device="cpu", batch_size=64, cache_size=1000).load()
    path: Path = tmp_path_factory.mktemp("planted") / "qdrant"
    store = InterestStore.from_settings(QdrantSettings(path=path, url=None), encoder.dimension)
    yield store, encoder
    store.close()


def _jobs(events: list[dict[str, object]], seqs: Counter[str]) -> list[UpdateJob]:
    """One job per user, numbered on from the user's previous events as the stream worker does."""
    per_user: dict[str, list[JobEvent]] = {}
    for raw in events:
        e = validate_event(raw, now_ms=NOW_MS + 60_000)
        seqs[e.user_id] += 1
        per_user.setdefault(e.user_id, []).append(
            JobEvent(seqs[e.user_id], e.event_id, e.type, e.weight, e.ts_ms, e.item_id, e.text,
                     e.tags)
        )  # fmt: skip
    return [UpdateJob(u, tuple(evs), first_seen_ms=0, emitted_ms=0) for u, evs in per_user.items()]


def _payload(item: DemoItem) -> dict[str, Any]:
    payload = item.catalog_line()["payload"]
    assert isinstance(payload, dict)
    return payload


def _top5_topics(recommender: Recommender, user: str, items: dict[str, DemoItem]) -> list[str]:
    answer = recommender.recommend(user, limit=5)
    assert answer.strategy == "personal"
    return [items[i.item_id].topic for i in answer.items]


def test_every_persona_top5_stays_on_its_topics_before_and_after_a_shift(
    world: tuple[InterestStore, Encoder],
) -> None:
    store, encoder = world
    catalog = build_catalog()
    items = {i.item_id: i for i in catalog}
    lines = [CatalogItem(i.item_id, i.text, _payload(i)) for i in catalog]
    collab = CollabSettings(**_defaults(CollabSettings)).spec()
    folder = JobFolder(store, encoder, ProfileSettings().spec(), collab=collab)
    folder.ensure_collections()
    load_items(lines, encoder, store, tags_in_text=True)
    defaults = _defaults(RecommendSettings)
    seqs: Counter[str] = Counter()
    engaged: dict[str, set[str]] = {p.user_id: set() for p in PERSONAS}
    off_topic, off_topic_raw_prior = [], []
    for phase in ("before", "after"):
        folder.apply(_jobs(scripted_events(catalog, phase, NOW_MS), seqs), now_ms=NOW_MS)
        assert CollabRefresher(store, collab).refresh().items_learned > 0
        default = Recommender(store, settings=RecommendSettings(**defaults))
        raw_prior = RecommendSettings(**{**defaults, "popularity_relative": False})
        raw = Recommender(store, settings=raw_prior)
        for persona in PERSONAS:
            engaged[persona.user_id] |= set(persona.before if phase == "before" else persona.after)
            for recommender, failures in ((default, off_topic), (raw, off_topic_raw_prior)):
                topics = _top5_topics(recommender, persona.user_id, items)
                if any(t not in engaged[persona.user_id] for t in topics):
                    failures.append(f"{phase}: {persona.user_id} {topics}")
    assert off_topic == []
    # The same test with the prior as MovieLens alone would set it (ln(1 + popularity) with the
    # same weight, not scaled to the catalog): football, 50× as popular, floods the top 5s.
    assert len(off_topic_raw_prior) >= 3, off_topic_raw_prior
