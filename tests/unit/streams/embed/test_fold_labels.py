"""Issue 19, points 4 and 5: readable interest labels and visible skipped events.

A user whose events carry only item ids sees the catalog items' tags as interest labels (not
"interest 3"); an untagged search is labelled with the query's salient words (not "interest 1");
an event for an item not in the catalog shows in ``profile`` with its reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models.catalog import CatalogItem, load_items
from models.encoder import Encoder
from models.profile import InterestSpec
from models.settings import QdrantSettings
from models.store import InterestStore
from models.user_view import describe_user, format_user
from streams.contracts.jobs import JobEvent, UpdateJob
from streams.embed.fold import JobFolder

pytestmark = pytest.mark.slow

T0 = 1_750_000_000_000
CATALOG = [
    CatalogItem("fb-1", "Late winner in the cup final", {"tags": ["football"]}),
    CatalogItem("fb-2", "Striker signs for a record transfer fee", {"tags": ["football"]}),
    CatalogItem("sky-1", "A new exoplanet found in the habitable zone", {"tags": ["astronomy"]}),
]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(device="cpu", batch_size=8, cache_size=100).load()


@pytest.fixture
def store(tmp_path: Path, encoder: Encoder) -> Iterator[InterestStore]:
    with InterestStore.from_settings(QdrantSettings(path=tmp_path / "q"), encoder.dimension) as s:
        s.ensure_collections(encoder.dimension, InterestSpec().vector_names())
        load_items(CATALOG, encoder, s)
        yield s


def ev(n: int, item: str | None = None, text: str | None = None, type_: str = "click") -> JobEvent:
    return JobEvent(n, f"e{n}", type_, 1.0, T0 + n * 1000, item, text)


def fold(store: InterestStore, encoder: Encoder, user: str, *events: JobEvent) -> dict[str, Any]:
    JobFolder(store, encoder, InterestSpec()).apply([UpdateJob(user, events, T0, T0)])
    return describe_user(user, store.get_users([user]).get(user))


def test_item_only_events_are_labelled_with_the_catalog_tags(
    store: InterestStore, encoder: Encoder
) -> None:
    view = fold(store, encoder, "fan", ev(1, "fb-1"), ev(2, "fb-2"), ev(3, "sky-1"))
    # The two football items may form one interest or two ("football", "football (2)").
    assert {label.split(" (")[0] for label in view["profile"]} == {"football", "astronomy"}
    assert "astronomy" in view["profile"] and "football" in view["profile"]
    assert "interest " not in format_user(view)


def test_an_untagged_search_is_labelled_with_its_salient_words(
    store: InterestStore, encoder: Encoder
) -> None:
    view = fold(
        store, encoder, "seeker", ev(1, text="How do GANs generate images?", type_="search")
    )
    assert list(view["profile"]) == ["gans generate images"]


def test_an_event_for_an_item_not_in_the_catalog_shows_in_the_profile_with_its_reason(
    store: InterestStore, encoder: Encoder
) -> None:
    view = fold(store, encoder, "u", ev(1, "fb-1"), ev(2, "ghost-7"), ev(3, "ghost-7"))
    assert view["events_folded"] == 1 and view["seq"] == 3
    assert view["skipped"] == {"item_not_in_catalog": 2}
    assert view["skipped_items"] == ["ghost-7"]
    text = format_user(view)
    assert "skipped for vectors: 2 events (2 item not in the catalog)" in text
    assert "items not in the catalog: ghost-7" in text
    # A later batch adds to the counts; a replay of the same events does not.
    view = fold(store, encoder, "u", ev(2, "ghost-7"), ev(3, "ghost-7"), ev(4, "ghost-8"))
    assert view["skipped"] == {"item_not_in_catalog": 3}
    assert view["skipped_items"] == ["ghost-7", "ghost-8"]


def test_a_user_who_never_skipped_anything_has_no_skipped_line(
    store: InterestStore, encoder: Encoder
) -> None:
    view = fold(store, encoder, "clean", ev(1, "fb-1"))
    assert view["skipped"] == {} and "skipped" not in format_user(view)


def test_texts_mostly_outside_the_model_languages_are_counted(
    store: InterestStore, encoder: Encoder
) -> None:
    """Issue 19, point 11: the bundled model serves English only; a Chinese search is still
    folded, but the batch report counts it (the worker exports and warns about it)."""
    folder = JobFolder(store, encoder, InterestSpec())
    events = (
        ev(1, text="深度学习的最新进展", type_="search"),
        ev(2, text="GAN 的用途 use cases for image generation", type_="search"),
        ev(3, text="Black holes and galaxies", type_="search"),
    )
    report = folder.apply([UpdateJob("zh", events, T0, T0)])
    assert report.events_applied == 3
    assert report.texts_outside_languages == 1
    assert report.outside_example == "深度学习的最新进展"
