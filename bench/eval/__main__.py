"""``python -m bench.eval``: MovieLens-100k offline evaluation (see bench/eval/__init__.py).

python -m bench.eval                        # fast mode, all 943 users, test split
python -m bench.eval --users 40 --pipeline  # the same through Kafka and the workers
python -m bench.eval --tune                 # choose parameters on the validation split
python -m bench.eval --validation           # score the validation split instead of test

Every run scores the anchors (item-kNN, EASE with λ chosen on the validation split) next to the
recommend variants, then (fast mode) the cold-item split; the targets' verdicts come with paired
bootstrap intervals over users, in the table's output and the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import socket
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import movielens as ml
from bench.eval.baselines import choose_ease_lambda
from bench.eval.cold import COLD_SHARE, chance, cold_items, score_cold, without_items
from bench.eval.config import CHOSEN, LIBRARY, MEAN_HALF_LIFE_S, EvalParams
from bench.eval.engine import agreement
from bench.eval.fast import fast_world, open_world
from bench.eval.methods import (
    Method,
    World,
    all_methods,
    baseline_methods,
    popularity_method,
    random_method,
    recommend_method,
    recommend_variants,
    score_methods,
)
from bench.eval.metrics import MethodScore, format_table, ratio_ci
from bench.eval.world import item_tags_in_text_default, item_vectors

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
#: label: (method, baseline, required ratio of the means, metric). The test part's numbers;
#: nothing is chosen on them.
TARGETS: dict[str, tuple[str, str, float, str]] = {
    "default recommend vs popularity": ("default recommend", "popularity", 1.20, "recall@50"),
    "fusion, no prior vs mean vector": (
        "fusion, no prior",
        "mean vector (365d, all positives)",
        1.15,
        "recall@50",
    ),
    "default recommend vs EASE, Recall@50": ("default recommend", "EASE", 1.0, "recall@50"),
    "default recommend vs EASE, NDCG@10": ("default recommend", "EASE", 1.0, "ndcg@10"),
}
COLD_TARGET = ("default recommend", "random", 3.0, "recall@50")
COLD_METHODS = ("default without collab", "collab alone", "default recommend")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.eval", description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=None, help="only the N lowest user ids")
    p.add_argument("--pipeline", action="store_true", help="go through Kafka and the workers")
    p.add_argument("--validation", action="store_true", help="score the validation split")
    p.add_argument("--params", choices=["chosen", "library"], default="chosen")
    p.add_argument("--item-tags-in-text", action=argparse.BooleanOptionalAction, default=None,
                   help="embed each movie as 'title (year). Genre, Genre' (ModelSettings."
                   "item_tags_in_text); default: the library's default")  # fmt: skip
    p.add_argument("--tune", action="store_true", help="tune on the validation split")
    p.add_argument("--rounds", type=int, default=2, help="coordinate-descent rounds (--tune)")
    p.add_argument("--fields", default=None, help="comma-separated parameters to tune "
                   "(--tune; default: all of bench.eval.tune.GRID)")  # fmt: skip
    p.add_argument("--check", type=int, default=5, help="users replayed through the real "
                   "Recommender to check the fast scorer (0: skip)")  # fmt: skip
    p.add_argument("--rankings", action="store_true", help="write every user's top lists")
    p.add_argument("--seed", type=int, default=0, help="seed of the random baseline")
    p.add_argument("--ease-lambda", type=float, default=None, help="EASE's λ (default: "
                   "chosen on the validation split)")  # fmt: skip
    p.add_argument("--no-cold", action="store_true", help="skip the cold-item split "
                   "(fast mode only)")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="JSON output path")
    p.add_argument("--quiet", action="store_true", help="print only the table")
    return p.parse_args(argv)


def default_out(args: argparse.Namespace) -> Path:
    name = "eval_tuning" if args.tune else "eval"
    if args.pipeline:
        name += "_pipeline"
    if args.validation:
        name += "_validation"
    if args.params == "library" and not args.tune:
        name += "_library"
    if args.users is not None:
        name += f"_users{args.users}"
    return RESULTS / f"{name}.json"


def machine() -> dict[str, Any]:
    versions = {}
    for pkg in ("qdrant-client", "torch", "sentence-transformers", "numpy", "faust-streaming"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": versions,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    echo = (lambda _: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    started = time.monotonic()
    data = ml.load()
    users = ml.first_users(data, args.users)
    tags_in_text = (
        item_tags_in_text_default() if args.item_tags_in_text is None else args.item_tags_in_text
    )
    vectors = item_vectors(data, tags_in_text=tags_in_text)
    seconds = {"data_and_vectors": time.monotonic() - started}
    command = shlex.join(["python", "-m", "bench.eval", *(sys.argv[1:] if argv is None else argv)])
    out = args.out or default_out(args)

    if args.tune:
        from bench.eval.tune import tune

        splits = ml.split_all(data, validation=True, users=users)
        from bench.eval.tune import GRID

        names = tuple(GRID) if args.fields is None else tuple(args.fields.split(","))
        unknown = [n for n in names if n not in GRID]
        if unknown:
            raise SystemExit(f"error: --fields: unknown {unknown}; choose from {', '.join(GRID)}")
        result = tune(data, splits, vectors, rounds=args.rounds, fields=names, echo=echo)
        body = {"command": command, **result.to_dict(), "item_tags_in_text": tags_in_text,
                "machine": machine()}  # fmt: skip
        best = result.best.params
        changed = LIBRARY.differences(best).items()
        body["changed_from_library"] = {k: {"library": a, "chosen": b} for k, (a, b) in changed}
        write(out, body)
        print(json.dumps(body["changed_from_library"], indent=2))
        return 0

    params = CHOSEN if args.params == "chosen" else LIBRARY
    splits = ml.split_all(data, validation=args.validation, users=users)
    if args.ease_lambda is None:
        lam, tried = choose_ease_lambda(data, users, echo=echo)
    else:
        lam, tried = args.ease_lambda, {}
    body = describe(args, command, data, splits, params, tags_in_text)
    body["ease"] = {"lambda": lam, "chosen_on": "validation" if tried else "--ease-lambda",
                    "validation_recall@50": {f"{k:g}": v for k, v in tried.items()}}  # fmt: skip
    seconds["ease_lambda"] = time.monotonic() - started - seconds["data_and_vectors"]
    with tempfile.TemporaryDirectory(prefix="ml-eval-") as tmp:
        rows = run_main(args, data, splits, vectors, params, lam, Path(tmp), body, seconds, echo)
        cold_rows: list[tuple[str, dict[str, float]]] = []
        if not args.pipeline and not args.no_cold:
            t0 = time.monotonic()
            cold_rows = run_cold(data, splits, vectors, params, lam, Path(tmp) / "cold",
                                 body, args.seed)  # fmt: skip
            seconds["cold"] = time.monotonic() - t0
    seconds["total"] = time.monotonic() - started
    body["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    body["machine"] = machine()
    report(body, rows, cold_rows)
    write(out, body)
    echo(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


def describe(
    args: argparse.Namespace,
    command: str,
    data: ml.MovieLens,
    splits: list[ml.UserSplit],
    params: EvalParams,
    tags_in_text: bool,
) -> dict[str, Any]:
    """The JSON's head: what was run, on what, with which parameters."""
    return {
        "command": command,
        "mode": "pipeline" if args.pipeline else "fast",
        "split": "validation" if args.validation else "test",
        "dataset": {
            "source": f"PyPI recbole=={ml.RECBOLE_VERSION} wheel, {ml.INTER_PATH}, {ml.ITEM_PATH}",
            **ml.summary(data, splits),
        },
        "params": {
            "used": args.params,
            "values": params.to_dict(),
            "library": LIBRARY.to_dict(),
            "changed_from_library": {
                k: {"library": a, "used": b} for k, (a, b) in LIBRARY.differences(params).items()
            },
            "mean_vector_half_life_s": MEAN_HALF_LIFE_S,
            "item_tags_in_text": tags_in_text,
            "item_tags_in_text_library": item_tags_in_text_default(),
            "environment": {
                **params.env(),
                "INTEREST_MODEL_ITEM_TAGS_IN_TEXT": str(tags_in_text).lower(),
            },
        },
    }


def run_main(
    args: argparse.Namespace,
    data: ml.MovieLens,
    splits: list[ml.UserSplit],
    vectors: Any,
    params: EvalParams,
    lam: float,
    tmp: Path,
    body: dict[str, Any],
    seconds: dict[str, float],
    echo: Any,
) -> list[tuple[str, dict[str, float]]]:
    """The main table: every method on the split (fast mode or through the pipeline)."""
    t0 = time.monotonic()
    dim = int(vectors.shape[1])
    if args.pipeline:
        from bench.eval.pipeline import Pipeline
        from streams.settings import KafkaSettings

        kafka = ensure_broker(KafkaSettings(), echo)
        result = Pipeline(tmp, kafka, params, echo=echo).run(data, splits, vectors)
        body["pipeline"] = result.to_dict()
        seconds["pipeline"] = time.monotonic() - t0
        ctx = open_world(tmp / "qdrant", data, splits, dim, settings=params.recommend_settings())
    else:
        ctx = fast_world(
            data, splits, params.spec(), vectors, tmp / "qdrant",
            settings=params.recommend_settings(), collab=params.collab_spec(),
        )  # fmt: skip
    with ctx as world:
        seconds["build"] = time.monotonic() - t0
        rows = evaluate(world, params, args, body, echo, lam)
    seconds["score"] = time.monotonic() - t0 - seconds["build"]
    if not args.pipeline and params != LIBRARY:
        t1 = time.monotonic()
        lib_world = fast_world(
            data, splits, LIBRARY.spec(), vectors, tmp / "library",
            settings=LIBRARY.recommend_settings(), collab=LIBRARY.collab_spec(),
        )  # fmt: skip
        with lib_world as w:
            lib = library_row(w)
        body["methods"]["default recommend (library defaults)"] = lib
        rows.append(("default recommend (library defaults)", lib))
        seconds["library_row"] = time.monotonic() - t1
    return rows


def run_cold(
    data: ml.MovieLens,
    splits: list[ml.UserSplit],
    vectors: Any,
    params: EvalParams,
    lam: float,
    path: Path,
    body: dict[str, Any],
    seed: int,
) -> list[tuple[str, dict[str, float]]]:
    """The cold-item table (:mod:`bench.eval.cold`): the same users, a tenth of the items
    held out of training, Recall@50 on those items."""
    cold = cold_items(data)
    held_out = without_items(splits, cold)
    methods: dict[str, Method] = {
        "random": random_method(seed),
        "popularity": popularity_method,
        **baseline_methods(lam),
    }
    variants = recommend_variants(params)
    methods.update({n: recommend_method(variants[n], limits=(50,)) for n in COLD_METHODS})
    with fast_world(
        data, held_out, params.spec(), vectors, path,
        settings=params.recommend_settings(), collab=params.collab_spec(),
    ) as world:  # fmt: skip
        scores = score_cold(world, methods, cold)
        expected = chance(world, cold)
    label = "cold items, default recommend vs random, Recall@50"
    body["cold"] = {
        "items": len(cold),
        "share_of_catalog": COLD_SHARE,
        "users_with_cold_targets": scores["random"].users,
        "cold_targets": sum(len(s.targets & cold) for s in held_out),
        "chance_recall@50": expected,
        "methods": {n: {**s.means(), "users": s.users} for n, s in scores.items()},
    }
    body["targets"][label] = target(scores, *COLD_TARGET)
    default = scores[COLD_TARGET[0]].means()["recall@50"]
    body["targets"][label]["ratio_to_chance"] = default / expected if expected else None
    return [(name, s.means()) for name, s in scores.items()]


def target(
    scores: dict[str, MethodScore], method: str, baseline: str, need: float, metric: str
) -> dict[str, Any]:
    """One target's record: both means, their ratio with a paired bootstrap 95 % interval over
    the users, and whether the ratio reaches ``need``."""
    a = scores[method].means()[metric]
    b = scores[baseline].means()[metric]
    ratio = a / b if b else float("inf")
    low, high = ratio_ci(scores[method], scores[baseline], metric)
    return {"metric": metric, "method_name": method, "baseline_name": baseline, "method": a,
            "baseline": b, "ratio": ratio, "ratio_ci95": [low, high], "need": need,
            "met": ratio >= need}  # fmt: skip


def report(
    body: dict[str, Any],
    rows: list[tuple[str, dict[str, float]]],
    cold_rows: list[tuple[str, dict[str, float]]],
) -> None:
    """The tables and the targets' verdicts on stdout."""
    title = (f"MovieLens-100k, {body['split']} split, {body['mode']} mode, "
             f"{body['dataset']['users_with_targets']} users with targets; "
             f"EASE λ={body['ease']['lambda']:g}")  # fmt: skip
    print(format_table(rows, title))
    if cold_rows:
        c = body["cold"]
        print()
        print(
            f"cold items: {c['items']} items ({c['share_of_catalog']:.0%} of the catalog) held "
            f"out of training; {c['users_with_cold_targets']} users with "
            f"{c['cold_targets']} cold targets; chance Recall@50 {c['chance_recall@50']:.4f}"
        )
        print(f"{'method':<34}{'recall@50 (cold targets)':>26}")
        for name, values in cold_rows:
            print(f"{name:<34}{values['recall@50']:>26.4f}")
    print()
    for name, t in body["targets"].items():
        verdict = "met" if t["met"] else "NOT met"
        low, high = t["ratio_ci95"]
        chance_ratio = t.get("ratio_to_chance")
        vs_chance = "" if chance_ratio is None else f"; {chance_ratio:.3f}x the chance level"
        print(
            f"target {name}: {t['method']:.4f} vs {t['baseline']:.4f} = {t['ratio']:.3f}x "
            f"(95% CI {low:.3f}-{high:.3f}, paired bootstrap over users{vs_chance}; need "
            f"{t['need']:.2f}x) — {verdict}"
        )


def evaluate(
    world: World,
    params: EvalParams,
    args: argparse.Namespace,
    body: dict[str, Any],
    echo: Any,
    ease_lambda: float = 500.0,
) -> list[tuple[str, dict[str, float]]]:
    """Score every method, fill ``body``; returns the table rows."""
    if args.check > 0:
        body["engine_check"] = engine_check(world, args.check)
        checks = body["engine_check"]
        echo(f"fast scorer vs Recommender.recommend: {checks['same_up_to_ties']}/"
             f"{checks['queries']} the same up to the order of exact ties "
             f"({checks['identical']} in the same order)")  # fmt: skip
    methods = all_methods(params, seed=args.seed, ease_lambda=ease_lambda)
    scores, rankings = score_methods(world, methods)
    body["methods"] = {
        name: {**s.means(), "users": s.users, "strategies": s.strategies}
        for name, s in scores.items()
    }
    body["targets"] = {label: target(scores, *spec) for label, spec in TARGETS.items()}
    if args.rankings:
        body["rankings"] = {
            name: {u: {"top10": t10, "top50": t50} for u, (t10, t50) in per_user.items()}
            for name, per_user in rankings.items()
        }
    return [(name, s.means()) for name, s in scores.items()]


def engine_check(world: World, users: int) -> dict[str, Any]:
    """The fast scorer against ``Recommender.recommend`` on the first ``users`` users."""
    sample = [s for s in world.splits if s.targets][:users]
    variants = recommend_variants().values()
    checks: dict[str, Any] = {
        "queries": 0, "identical": 0, "same_up_to_ties": 0, "max_abs_score_diff": 0.0,
    }  # fmt: skip
    for split in sample:
        calls = [
            {"limit": limit, "exclude_items": sorted(split.seen), **options}
            for options in variants
            for limit in (10, 50)
        ]
        got = agreement(world.engine, world.recommender,
                        {split.user_id: world.users.get(split.user_id)}, calls)  # fmt: skip
        for key in ("queries", "identical", "same_up_to_ties"):
            checks[key] += got[key]
        checks["max_abs_score_diff"] = max(checks["max_abs_score_diff"], got["max_abs_score_diff"])
    return {"users": len(sample), **checks}


def library_row(world: World) -> dict[str, Any]:
    """The default recommend with every library default (for comparison with the chosen)."""
    methods = {"d": all_methods(LIBRARY)["default recommend"]}  # world has LIBRARY's settings
    scores, _ = score_methods(world, methods)
    s = scores["d"]
    return {**s.means(), "users": s.users, "strategies": s.strategies}


def ensure_broker(kafka: Any, echo: Any) -> Any:
    """The configured broker, or the local one started (like ``interest-stream demo`` does)."""
    host, _, port = kafka.bootstrap.split(",")[0].rpartition(":")
    with socket.socket() as sock:
        sock.settimeout(1)
        if sock.connect_ex((host, int(port))) == 0:
            return kafka
    from models.config import CoreSettings
    from streams.broker import LocalBroker
    from streams.settings import BrokerSettings

    echo("starting the local Kafka broker")
    status = LocalBroker(BrokerSettings(), CoreSettings()).start()
    if status.bootstrap != kafka.bootstrap.split(",")[0]:
        raise SystemExit(
            f"error: the local broker listens on {status.bootstrap} but INTEREST_KAFKA_BOOTSTRAP "
            f"is {kafka.bootstrap}; make them agree"
        )
    return kafka


def write(path: Path, body: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=2, sort_keys=False) + "\n")


if __name__ == "__main__":
    sys.exit(main())
