"""The catalog: what the model embeds for an item (text, optionally its tags) and the load."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from models.catalog import (
    CatalogItem,
    item_embedding_text,
    item_tags,
    load_items,
    parse_item,
)
from models.encoder import Encoder
from models.settings import ModelSettings, QdrantSettings
from models.store import InterestStore, item_point_id

TOY = CatalogItem("1", "Toy Story (1995)", {"tags": ["Animation", "Children's", "Comedy"]})
TOY_TEXT = "Toy Story (1995). Animation, Children's, Comedy"


# -- pure: the embedded string ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tags", "expected"),
    [
        ("Toy Story (1995)", ["Animation", "Children's", "Comedy"], TOY_TEXT),
        ("GAN use cases", [], "GAN use cases"),
        ("Why GANs?", ["ml"], "Why GANs? ml"),
        ("A  talk.", [" deep\tlearning ", ""], "A talk. deep learning"),
        (" spaced  text ", [], "spaced text"),
    ],
)
def test_item_embedding_text(text: str, tags: list[str], expected: str) -> None:
    assert item_embedding_text(text, tags) == expected


def test_tags_come_from_the_payload() -> None:
    assert TOY.tags == ("Animation", "Children's", "Comedy")
    assert CatalogItem("i", "t", {"tags": "ml"}).tags == ("ml",)
    assert CatalogItem("i", "t", {"tags": {"not": "a list"}}).tags == ()
    assert CatalogItem("i", "t").tags == ()
    assert item_tags(["a", 1, None, " a ", "b"]) == ("a", "b")


def test_embedding_text_follows_the_switch() -> None:
    assert TOY.embedding_text(True) == TOY_TEXT
    assert TOY.embedding_text(False) == "Toy Story (1995)"
    untagged = parse_item('{"id": "p", "text": "GAN use cases", "payload": {"kind": "post"}}')
    assert untagged.embedding_text(True) == untagged.embedding_text(False) == "GAN use cases"


def test_setting_defaults_on_and_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTEREST_MODEL_ITEM_TAGS_IN_TEXT", raising=False)
    assert ModelSettings().item_tags_in_text is True
    monkeypatch.setenv("INTEREST_MODEL_ITEM_TAGS_IN_TEXT", "false")
    assert ModelSettings().item_tags_in_text is False


# -- load_items with the real bundled model -----------------------------------------------------


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(device="cpu", batch_size=8, cache_size=100).load()


@pytest.fixture
def store(tmp_path: Path, encoder: Encoder) -> Iterator[InterestStore]:
    s = InterestStore.from_settings(QdrantSettings(path=tmp_path / "qdrant"), encoder.dimension)
    s.ensure_collections(encoder.dimension, ["short_term"])
    yield s
    s.close()


CATALOG = [
    TOY,
    CatalogItem("2", "GoldenEye (1995)", {"tags": ["Action", "Adventure", "Thriller"]}),
    CatalogItem("3", "Untagged talk", {"kind": "talk"}),
]


def _stored(store: InterestStore) -> dict[str, np.ndarray]:
    return store.get_item_vectors([i.item_id for i in CATALOG])


@pytest.mark.parametrize("tags_in_text", [True, False])
def test_load_embeds_the_composed_text(
    store: InterestStore, encoder: Encoder, tags_in_text: bool
) -> None:
    encoder.clear_cache()
    assert load_items(CATALOG, encoder, store, tags_in_text=tags_in_text) == 3
    got = _stored(store)
    embedded = encoder.embedded_total
    for item in CATALOG:
        want = encoder.encode_one(item.embedding_text(tags_in_text))
        np.testing.assert_allclose(got[item.item_id], want, atol=1e-6)
    assert encoder.embedded_total == embedded  # the composed string is the cache key: all hits
    [rec] = store.backend.retrieve(
        "items", [item_point_id("1")], with_payload=True, with_vectors=False
    )
    assert rec.payload is not None and rec.payload["text"] == "Toy Story (1995)"  # own text kept
    plain, tagged = encoder.encode(["Toy Story (1995)", TOY_TEXT])
    assert not np.allclose(plain, tagged, atol=1e-3)  # the switch matters for tagged items
    np.testing.assert_allclose(got["1"], tagged if tags_in_text else plain, atol=1e-6)
    np.testing.assert_allclose(got["3"], encoder.encode_one("Untagged talk"), atol=1e-6)


def test_tags_move_an_item_towards_its_genre(store: InterestStore, encoder: Encoder) -> None:
    query = encoder.encode_one("an animated comedy for children")
    load_items(CATALOG, encoder, store, tags_in_text=False)
    before = float(_stored(store)["1"] @ query)
    load_items(CATALOG, encoder, store, tags_in_text=True)
    after = float(_stored(store)["1"] @ query)
    assert after > before + 0.05


def test_load_reads_the_setting_when_not_told(
    store: InterestStore, encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTEREST_MODEL_ITEM_TAGS_IN_TEXT", "false")
    load_items(CATALOG, encoder, store)
    np.testing.assert_allclose(
        _stored(store)["1"], encoder.encode_one("Toy Story (1995)"), atol=1e-6
    )
    monkeypatch.setenv("INTEREST_MODEL_ITEM_TAGS_IN_TEXT", "true")
    load_items(CATALOG, encoder, store)
    np.testing.assert_allclose(_stored(store)["1"], encoder.encode_one(TOY_TEXT), atol=1e-6)
