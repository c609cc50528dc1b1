"""``--tune``: pick the parameters on the validation split only (never the test part).

Validation split: per user, the first 80 % of the *training* events build the profile and the
positives among the last 20 % of the training events are the targets; popularity is counted on
the validation profiles only. The test part is not loaded at all.

Objective: the mean of the two target ratios on validation Recall@50 —
``default recommend / popularity`` and ``fusion without prior / single mean vector`` — since one
set of weights serves both. Search: coordinate descent over :data:`GRID`, starting from the
library defaults; a value replaces the current one only if it raises the objective by more than
:data:`MIN_GAIN` (smaller moves are within noise for ~900 users and would only fit the split).
Spec parameters (half-lives, K, threshold) refold every user through ``JobFolder``; recommend
parameters re-score the same folded users.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from bench.eval.config import LIBRARY, EvalParams
from bench.eval.engine import recommend_ids
from bench.eval.fast import fast_world
from bench.eval.methods import World, mean_vector_method, popularity_method, score_methods
from bench.eval.metrics import recall_at
from bench.movielens import MovieLens, UserSplit
from models.interests import DAY_S, HOUR_S

MIN_GAIN: Final = 0.005

GRID: Final[dict[str, tuple[float | int, ...]]] = {
    # Recommend weights first (cheap: the same folded users), then the interest math (a refold).
    "centering": (0.0, 0.5, 0.75, 1.0, 1.25),
    "popularity_weight": (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0),
    "negative_weight": (0.0, 0.1, 0.25, 0.5, 1.0),
    "w_short_term": (0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
    "w_long_term": (0.0, 0.2, 0.6, 1.0),
    "w_interests": (0.0, 0.25, 0.5, 1.0, 2.0),
    "short_half_life_s": (300.0, 900.0, HOUR_S, 6 * HOUR_S, DAY_S),
    "long_half_life_s": (DAY_S, 7 * DAY_S, 30 * DAY_S, 365 * DAY_S),
    "negative_half_life_s": (HOUR_S, DAY_S, 7 * DAY_S, 30 * DAY_S),
    "cluster_half_life_s": (HOUR_S, DAY_S, 7 * DAY_S, 30 * DAY_S),
    "cluster_k": (2, 4, 8, 16),  # 16 at most: recommend runs one prefetch per slot
    "cluster_threshold": (0.35, 0.45, 0.55),
}
SPEC_FIELDS: Final = (
    "short_half_life_s",
    "long_half_life_s",
    "negative_half_life_s",
    "cluster_half_life_s",
    "cluster_k",
    "cluster_threshold",
)


@dataclass
class Trial:
    params: EvalParams
    default_r50: float
    noprior_r50: float
    objective: float


@dataclass
class TuneResult:
    best: Trial
    baselines: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": "mean of default/popularity and no-prior/mean-vector Recall@50 ratios",
            "min_gain": MIN_GAIN,
            "grid": {k: list(v) for k, v in GRID.items()},
            "baselines_recall@50": self.baselines,
            "best": {
                "params": self.best.params.to_dict(),
                "default_recall@50": self.best.default_r50,
                "noprior_recall@50": self.best.noprior_r50,
                "objective": self.best.objective,
            },
            "history": self.history,
            "seconds": round(self.seconds, 1),
        }


def _recall50(world: World, options: dict[str, Any]) -> float:
    """Mean validation Recall@50 of one recommend variant (limit-50 calls only)."""
    values = []
    for split in world.splits:
        targets = split.targets
        if targets:
            ids, _ = recommend_ids(
                world.engine, world.recommender, split.user_id, world.users.get(split.user_id),
                limit=50, exclude_items=sorted(split.seen), **options,
            )  # fmt: skip
            values.append(recall_at(ids, targets, 50))
    return float(np.mean(values))


def _trial(world: World, params: EvalParams, baselines: dict[str, float]) -> Trial:
    scored = world.with_settings(params.recommend_settings())
    default = _recall50(scored, {})
    noprior = _recall50(scored, {"popularity_weight": 0.0})
    objective = 0.5 * (default / baselines["popularity"] + noprior / baselines["mean_vector"])
    return Trial(params, default, noprior, objective)


def tune(
    data: MovieLens,
    splits: Sequence[UserSplit],
    vectors: npt.NDArray[np.float32],
    *,
    start: EvalParams = LIBRARY,
    rounds: int = 2,
    fields: Sequence[str] = tuple(GRID),
    echo: Callable[[str], None] = print,
) -> TuneResult:
    """Coordinate descent on the validation ``splits`` (see the module doc)."""
    began = time.monotonic()
    with fast_world(data, splits, start.spec(), vectors, memo=True) as world:
        base_scores, _ = score_methods(
            world,
            {"popularity": popularity_method,
             "mean_vector": mean_vector_method()},
            splits,
        )  # fmt: skip
        baselines = {k: v.means()["recall@50"] for k, v in base_scores.items()}
        best = _trial(world, start, baselines)
    history: list[dict[str, Any]] = []

    def log(trial: Trial, note: str) -> None:
        history.append({
            "note": note, "params": trial.params.differences(LIBRARY),
            "default_recall@50": round(trial.default_r50, 5),
            "noprior_recall@50": round(trial.noprior_r50, 5),
            "objective": round(trial.objective, 5),
        })  # fmt: skip
        echo(
            f"[tune {time.monotonic() - began:6.0f}s] {note:<34} default R@50 "
            f"{trial.default_r50:.4f}  no-prior R@50 {trial.noprior_r50:.4f}  "
            f"objective {trial.objective:.4f}"
        )

    log(best, "start")
    for round_no in range(1, rounds + 1):
        changed = False
        for name in fields:
            candidates = [v for v in GRID[name] if v != getattr(best.params, name)]
            trials = _try_values(data, splits, vectors, best.params, name, candidates, baselines)
            for trial in trials:
                log(trial, f"r{round_no} {name}={getattr(trial.params, name):g}")
            top = max(trials, key=lambda t: t.objective, default=None)
            if top is not None and top.objective > best.objective + MIN_GAIN:
                best, changed = top, True
                log(best, f"r{round_no} keep {name}={getattr(best.params, name):g}")
        if not changed:
            break
    return TuneResult(best, baselines, history, time.monotonic() - began)


def _try_values(
    data: MovieLens,
    splits: Sequence[UserSplit],
    vectors: npt.NDArray[np.float32],
    current: EvalParams,
    name: str,
    values: Sequence[float | int],
    baselines: dict[str, float],
) -> list[Trial]:
    """Trials of ``current`` with ``name`` set to each of ``values``."""
    trials = []
    if name in SPEC_FIELDS:
        for value in values:
            params = replace(current, **{name: value})
            with fast_world(data, splits, params.spec(), vectors, memo=True) as world:
                trials.append(_trial(world, params, baselines))
        return trials
    with fast_world(data, splits, current.spec(), vectors, memo=True) as world:
        for value in values:
            trials.append(_trial(world, replace(current, **{name: value}), baselines))
    return trials
