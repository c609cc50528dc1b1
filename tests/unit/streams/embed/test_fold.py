"""JobFolder against embedded Qdrant and the bundled model: events without a vector."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from models.catalog import CatalogItem, load_items
from models.collab import CollabSpec
from models.encoder import Encoder
from models.profile import InterestSpec
from models.recommend import Recommender
from models.settings import QdrantSettings
from models.store import InterestStore
from streams.contracts.jobs import JobEvent, UpdateJob
from streams.embed.fold import JobFolder

pytestmark = pytest.mark.slow

T0 = 1_750_000_000_000


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(device="cpu", batch_size=8, cache_size=100).load()


@pytest.fixture
def store(tmp_path: Path, encoder: Encoder) -> Iterator[InterestStore]:
    with InterestStore.from_settings(QdrantSettings(path=tmp_path / "q"), encoder.dimension) as s:
        s.ensure_collections(encoder.dimension, InterestSpec().vector_names())
        load_items([CatalogItem("known", "deep learning with neural networks")], encoder, s)
        yield s


@pytest.fixture
def folder(store: InterestStore, encoder: Encoder) -> JobFolder:
    return JobFolder(store, encoder, InterestSpec())


def ev(n: int, item: str | None = None, text: str | None = None, type_: str = "click") -> JobEvent:
    return JobEvent(n, f"e{n}", type_, 1.0, T0 + n * 1000, item, text)


def job(user: str, *events: JobEvent) -> UpdateJob:
    return UpdateJob(user, events, first_seen_ms=T0, emitted_ms=T0)


def test_a_user_without_any_vector_does_not_block_the_batch_and_is_counted(
    folder: JobFolder, store: InterestStore
) -> None:
    # "ghost" only touches an item that is not loaded, without text: nothing to embed.
    ghost = job("ghost", ev(1, "unloaded"), ev(2, "unloaded", type_="view"), ev(3, "other"))
    normal = job("normal", ev(1, "known"), ev(2, text="gardening tips"), ev(3, "unloaded"))

    report = folder.apply([ghost, normal])

    assert report.skipped["no_vector"] == 4  # 3 of ghost's, 1 of normal's
    assert report.events_applied == 2
    assert report.users == 2 and report.users_without_vectors == 1
    stored = store.get_users(["ghost", "normal"])
    assert set(stored["normal"].vectors) >= {"short_term"}
    assert stored["normal"].payload["seq"] == 3
    assert stored["normal"].payload["events_folded"] == 2
    # The ghost's progress is recorded, without vectors.
    assert stored["ghost"].vectors == {}
    assert stored["ghost"].payload["seq"] == 3
    assert stored["ghost"].payload["events_folded"] == 0
    assert stored["ghost"].payload["recent_items"] == ["unloaded", "other"]
    assert stored["ghost"].payload["profile"] == []
    # Recommenders treat it like a user with nothing folded yet: the popularity fallback.
    assert Recommender(store).recommend("ghost").strategy.startswith("fallback")

    # A replay (uncommitted batch, re-cut jobs) is a no-op and counts nothing twice.
    again = folder.apply([ghost, normal, job("ghost", ev(2, "unloaded"), ev(3, "other"))])
    assert again.events_replayed == 8 and not again.skipped and again.users == 0
    replayed = store.get_users(["ghost", "normal"])
    for user, point in stored.items():
        assert replayed[user].payload == point.payload
        assert set(replayed[user].vectors) == set(point.vectors)
        for name, vector in point.vectors.items():
            np.testing.assert_array_equal(replayed[user].vectors[name], vector)


def test_a_user_recorded_without_vectors_gets_them_from_its_next_embeddable_event(
    folder: JobFolder, store: InterestStore, encoder: Encoder
) -> None:
    folder.apply([job("ghost", ev(1, "unloaded"), ev(2, "unloaded"))])
    # Loading the item afterwards does not re-open events already handled (seq 2) ...
    load_items([CatalogItem("unloaded", "sourdough bread baking")], encoder, store)
    report = folder.apply([job("ghost", ev(1, "unloaded"), ev(2, "unloaded"), ev(3, "known"))])
    assert report.events_replayed == 2 and report.events_applied == 1 and not report.skipped
    [user] = store.get_users(["ghost"]).values()
    assert user.payload["seq"] == 3 and user.payload["events_folded"] == 1
    # ... so the vector is exactly the one event that had a vector: the known item's.
    known = store.get_item_vectors(["known"])["known"]
    np.testing.assert_allclose(user.vectors["short_term"], known, atol=1e-6)


def test_a_user_with_vectors_keeps_them_when_a_batch_has_none(
    folder: JobFolder, store: InterestStore
) -> None:
    folder.apply([job("u", ev(1, "known"))])
    before = store.get_users(["u"])["u"]
    report = folder.apply([job("u", ev(2, "unloaded"), ev(3, "unloaded"))])
    assert report.skipped["no_vector"] == 2 and report.users_without_vectors == 0
    after = store.get_users(["u"])["u"]
    assert after.payload["seq"] == 3 and after.payload["events_folded"] == 1
    assert set(after.vectors) == set(before.vectors)
    for name, vector in before.vectors.items():
        np.testing.assert_array_equal(after.vectors[name], vector)


def test_the_engagement_list_is_kept_per_user_and_replays_leave_it_alone(
    store: InterestStore, encoder: Encoder
) -> None:
    """With the collaborative dimension on, the fold keeps each user's engaged items (what the
    items' collaborative vectors are rebuilt from), bounded, and a replay changes nothing."""
    folder = JobFolder(store, encoder, InterestSpec(), collab=CollabSpec(user_items=3))
    dislike = JobEvent(3, "e3", "dislike", -1.0, T0 + 3000, "a")
    first = job("u", ev(1, "a"), ev(2, "b"), dislike)
    folder.apply([first])
    assert "collab" in store.item_vector_names()  # the items collection got the vector
    engaged = store.get_users(["u"])["u"].payload["engaged"]
    assert [e[0] for e in engaged] == ["b", "a"] and engaged[1][2] < 0  # latest opinion wins
    folder.apply([job("u", ev(4, "c"), ev(5, "d", type_="like"))])
    stored = store.get_users(["u"])["u"].payload["engaged"]
    assert [e[0] for e in stored] == ["a", "c", "d"]  # the 3 newest items
    folder.apply([first, job("u", ev(4, "c"), ev(5, "d", type_="like"))])  # a replay
    assert store.get_users(["u"])["u"].payload["engaged"] == stored


def test_a_delete_job_removes_the_point_and_what_follows_it_is_a_new_profile(
    folder: JobFolder, store: InterestStore
) -> None:
    from streams.contracts.jobs import DeleteUserJob
    from streams.embed.fold import after_deletes

    folder.apply([job("gone", ev(1, text="gardening tips"), ev(2, "known")), job("kept", ev(1))])
    assert store.get_users(["gone"])["gone"].payload["seq"] == 2
    # One batch: an old job, the delete, the user's first event after it (numbered 1 again).
    batch = [
        job("gone", ev(3, text="sailing boats")),
        DeleteUserJob("gone", T0, T0),
        job("gone", ev(1, text="baking bread")),
    ]
    forget, jobs = after_deletes(batch)
    report = folder.apply(jobs, forget=forget)
    assert report.users_deleted == 1
    fresh = store.get_users(["gone", "kept"])
    assert fresh["gone"].payload["seq"] == 1 and fresh["gone"].payload["events_folded"] == 1
    expected = folder.encoder.encode(["baking bread"])[0]
    assert np.allclose(fresh["gone"].vectors["short_term"], expected, atol=1e-5)
    assert fresh["kept"].payload["seq"] == 1  # others are untouched
    # The same batch again (a replay before the commit) ends the same.
    folder.apply(jobs, forget=forget)
    again = store.get_users(["gone"])["gone"]
    assert {k: v for k, v in again.payload.items() if k != "updated_at"} == {
        k: v for k, v in fresh["gone"].payload.items() if k != "updated_at"
    }
    assert np.allclose(again.vectors["short_term"], expected, atol=1e-5)
    # A delete with nothing after it leaves no point at all.
    folder.apply([], forget=["gone"])
    assert "gone" not in store.get_users(["gone"])
