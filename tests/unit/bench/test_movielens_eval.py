"""MovieLens parsing, splits and the metrics, on tiny hand-made atomic files (no download)."""

from __future__ import annotations

import math

import pytest

from bench import movielens as ml
from bench.eval.config import CHOSEN, LIBRARY, EvalParams
from bench.eval.metrics import ndcg_at, recall_at, user_metrics
from bench.eval.world import item_tags_in_text_default, item_texts, user_job
from models.profile import InterestSpec
from models.settings import ModelSettings

ITEM = (
    b"item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    b"1\tToy Story\t1995\tAnimation Children's Comedy\n"
    b"2\tGoldenEye\t1995\tAction Adventure Thriller\n"
    b"3\tNo Year\t\tDrama\n"
    b"4\tUsual Suspects, The\t1995\tCrime Thriller\n"
)
# user 7: 5 ratings, two at the same second (kept in file order); user 8: 2 ratings. Times in
# 1997, as MovieLens-100k's (the stream refuses events before 1990 as past_timestamp).
T = 874_965_000_000  # ms
INTER = (
    b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    b"7\t2\t5\t874965100\n"
    b"8\t1\t2\t874965050\n"
    b"7\t1\t3\t874965100\n"
    b"7\t3\t1\t874965090\n"
    b"7\t4\t4\t874965300\n"
    b"8\t4\t4\t874965060\n"
    b"7\t99\t4\t874965400\n"  # an item the catalogue lacks: dropped
    b"7\t2\t4\t874965200\n"  # rated again later (MovieLens never does; splits must still cope)
)


@pytest.fixture
def data() -> ml.MovieLens:
    return ml.parse(INTER, ITEM)


def test_items_are_title_year_with_genre_tags(data: ml.MovieLens) -> None:
    assert data.movies["1"].text == "Toy Story (1995)"
    assert data.movies["1"].tags == ("Animation", "Children's", "Comedy")
    assert data.movies["3"].text == "No Year"
    assert data.movies["4"].text == "Usual Suspects, The (1995)"


def test_item_texts_embed_genres_like_items_load(
    data: ml.MovieLens, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert item_texts(data, True)[:3] == [
        "Toy Story (1995). Animation, Children's, Comedy",
        "GoldenEye (1995). Action, Adventure, Thriller",
        "No Year. Drama",
    ]
    assert item_texts(data, False)[:3] == ["Toy Story (1995)", "GoldenEye (1995)", "No Year"]
    monkeypatch.setenv("INTEREST_MODEL_ITEM_TAGS_IN_TEXT", "false")  # the harness ignores it
    assert item_tags_in_text_default() is ModelSettings.model_fields["item_tags_in_text"].default


def test_ratings_in_time_order_ties_in_file_order(data: ml.MovieLens) -> None:
    seq = [(r.user_id, r.item_id, r.ts_ms) for r in data.ratings]
    assert seq == [
        ("8", "1", T + 50_000), ("8", "4", T + 60_000), ("7", "3", T + 90_000),
        ("7", "2", T + 100_000), ("7", "1", T + 100_000), ("7", "2", T + 200_000),
        ("7", "4", T + 300_000),
    ]  # fmt: skip
    assert [r.order for r in data.ratings] == list(range(7))


@pytest.mark.parametrize(("rating", "kind"), [(5, "like"), (4, "like"), (3, "view"), (2, "dislike"),
                                              (1, "dislike")])  # fmt: skip
def test_event_types(rating: float, kind: str) -> None:
    assert ml.event_type(rating) == kind


def test_event_objects_validate_and_keep_tags(data: ml.MovieLens) -> None:
    by_user = data.by_user()
    split = ml.split_user(by_user["7"])
    job = user_job(data, split)
    assert [e.n for e in job.events] == list(range(1, len(split.profile) + 1))
    first = job.events[0]
    assert (first.type, first.weight, first.item_id, first.text) == ("dislike", -1.0, "3",
                                                                     "No Year")  # fmt: skip
    assert first.tags == ("drama",)  # normalised as the stream worker does


def test_time_split_and_validation_split(data: ml.MovieLens) -> None:
    ratings = data.by_user()["7"]  # 5 events
    test = ml.split_user(ratings)
    assert len(test.profile) == 4 and len(test.holdout) == 1
    assert test.targets == frozenset({"4"})
    val = ml.split_user(ratings, validation=True)  # inside the first 4: 3 + 1
    assert [r.item_id for r in val.profile] == ["3", "2", "1"]
    assert [r.item_id for r in val.holdout] == ["2"]
    assert val.targets == frozenset()  # item 2 is already in the profile: never a target
    assert not set(r.item_id for r in val.holdout + val.profile) & {"4"}  # test stays unseen


def test_popularity_counts_profile_parts_only(data: ml.MovieLens) -> None:
    splits = ml.split_all(data)
    assert [s.user_id for s in splits] == ["7", "8"]
    counts = ml.popularity(splits)
    assert counts["4"] == 0 + 0  # user 7's "4" is held out, user 8's "4" too (1 of 2 events)
    assert counts["1"] == 2 and counts["2"] == 2 and counts["3"] == 1


def test_profile_events_in_global_time_order(data: ml.MovieLens) -> None:
    events = ml.profile_events(data, ml.split_all(data))
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert [(e["user_id"], e["item_id"]) for e in events][:3] == [("8", "1"), ("7", "3"),
                                                                  ("7", "2")]  # fmt: skip


def test_first_users_is_a_numeric_slice(data: ml.MovieLens) -> None:
    assert ml.first_users(data, 1) == ["7"]
    assert ml.first_users(data, None) == ["7", "8"]


def test_metrics() -> None:
    targets = frozenset({"a", "b"})
    assert recall_at(["x", "a", "y"], targets, 10) == 0.5
    assert ndcg_at(["a", "b"], targets, 10) == pytest.approx(1.0)
    assert ndcg_at(["x", "a"], targets, 10) == pytest.approx(
        (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    )
    m = user_metrics(["x"] * 10, ["x"] * 10 + ["a"], targets)
    assert m["recall@10"] == 0 and m["recall@50"] == 0.5
    with pytest.raises(ValueError):
        recall_at(["a"], frozenset(), 10)


def test_params_round_trip_and_spec() -> None:
    assert EvalParams.from_dict(CHOSEN.to_dict()) == CHOSEN
    spec = LIBRARY.spec()
    default = InterestSpec()
    assert [(d.name, d.half_life_s, d.event_types) for d in spec.dimensions] == [
        (d.name, d.half_life_s, d.event_types) for d in default.dimensions
    ]
    assert spec.clusters == default.clusters
