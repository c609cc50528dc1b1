"""``--tune``: pick the parameters on the validation split only (never the test part).

Validation split: per user, the first 80 % of the *training* events build the profile and the
positives among the last 20 % of the training events are the targets; popularity is counted on
the validation profiles only. The test part is not loaded at all.

Objective: the default recommend against the strongest anchor, EASE (λ chosen on the same
validation split) — the mean of the ratios ``default / EASE`` of Recall@50 and of NDCG@10.
Search: coordinate descent over :data:`GRID`, starting from the library defaults; a value
replaces the current one only if it raises the objective by more than :data:`MIN_GAIN` (smaller
moves are within noise for ~900 users and would only fit the split). Spec parameters
(half-lives, K, threshold, and the collaborative rebuild's rank, shrinkage and cold scale) refold
every user through ``JobFolder`` and rebuild the items' collaborative vectors; recommend
parameters re-score the same folded users. The cold scale is chosen apart (the smallest that
ranks held-out new items at ≥ 3× chance, :mod:`bench.eval.cold`), so it is not in the grid.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from bench.eval.baselines import choose_ease_lambda
from bench.eval.config import LIBRARY, EvalParams
from bench.eval.engine import recommend_ids
from bench.eval.fast import fast_world
from bench.eval.methods import World, baseline_methods, score_methods
from bench.eval.metrics import ndcg_at, recall_at
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
    "w_collab": (2.0, 4.0, 8.0, 16.0, 32.0),
    "collab_half_life_s": (300.0, 600.0, 900.0, 1800.0, HOUR_S, DAY_S),
    "collab_rank": (16, 32, 64),
    "collab_shrinkage": (250.0, 500.0, 1000.0, 3000.0),
}
SPEC_FIELDS: Final = (
    "short_half_life_s",
    "long_half_life_s",
    "negative_half_life_s",
    "cluster_half_life_s",
    "cluster_k",
    "cluster_threshold",
    "collab_rank",
    "collab_shrinkage",
    "collab_cold_scale",
)


@dataclass
class Trial:
    params: EvalParams
    default_r50: float
    default_n10: float
    objective: float


@dataclass
class TuneResult:
    best: Trial
    baselines: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": "mean of the default/EASE ratios of Recall@50 and NDCG@10",
            "min_gain": MIN_GAIN,
            "grid": {k: list(v) for k, v in GRID.items()},
            "ease_validation": self.baselines,
            "best": {
                "params": self.best.params.to_dict(),
                "default_recall@50": self.best.default_r50,
                "default_ndcg@10": self.best.default_n10,
                "objective": self.best.objective,
            },
            "history": self.history,
            "seconds": round(self.seconds, 1),
        }


def _scores(world: World, options: dict[str, Any]) -> tuple[float, float]:
    """Mean validation Recall@50 (limit-50 calls) and NDCG@10 (limit-10 calls) of one
    recommend variant."""
    recalls, ndcgs = [], []
    for split in world.splits:
        targets = split.targets
        if targets:
            for limit in (50, 10):
                ids, _ = recommend_ids(
                    world.engine, world.recommender, split.user_id,
                    world.users.get(split.user_id), limit=limit,
                    exclude_items=sorted(split.seen), **options,
                )  # fmt: skip
                if limit == 50:
                    recalls.append(recall_at(ids, targets, 50))
                else:
                    ndcgs.append(ndcg_at(ids, targets, 10))
    return float(np.mean(recalls)), float(np.mean(ndcgs))


def _trial(world: World, params: EvalParams, baselines: dict[str, float]) -> Trial:
    scored = world.with_settings(params.recommend_settings())
    r50, n10 = _scores(scored, {})
    objective = 0.5 * (r50 / baselines["recall@50"] + n10 / baselines["ndcg@10"])
    return Trial(params, r50, n10, objective)


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
    lam, _ = choose_ease_lambda(data, [s.user_id for s in splits])
    with fast_world(data, splits, start.spec(), vectors, memo=True,
                    collab=start.collab_spec()) as world:  # fmt: skip
        base_scores, _ = score_methods(world, baseline_methods(lam), splits)
        ease = base_scores["EASE"].means()
        baselines = {"recall@50": ease["recall@50"], "ndcg@10": ease["ndcg@10"], "lambda": lam}
        best = _trial(world, start, baselines)
    history: list[dict[str, Any]] = []

    def log(trial: Trial, note: str) -> None:
        history.append({
            "note": note, "params": trial.params.differences(LIBRARY),
            "default_recall@50": round(trial.default_r50, 5),
            "default_ndcg@10": round(trial.default_n10, 5),
            "objective": round(trial.objective, 5),
        })  # fmt: skip
        echo(
            f"[tune {time.monotonic() - began:6.0f}s] {note:<34} default R@50 "
            f"{trial.default_r50:.4f}  NDCG@10 {trial.default_n10:.4f}  "
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
            with fast_world(data, splits, params.spec(), vectors, memo=True,
                            collab=params.collab_spec()) as world:  # fmt: skip
                trials.append(_trial(world, params, baselines))
        return trials
    with fast_world(data, splits, current.spec(), vectors, memo=True,
                    collab=current.collab_spec()) as world:  # fmt: skip
        for value in values:
            trials.append(_trial(world, replace(current, **{name: value}), baselines))
    return trials
