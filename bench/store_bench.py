"""Store benchmark: the embedded engine (qdrant-edge) at 10k-1M users and 100k-1M items, next to
qdrant-client's local mode (the previous store) where that finishes.

What it measures (issue 13, item 7), each size in a fresh process so memory is its own:

1. Loading. Items (384-d vectors with cluster structure; payload ``item_id``, ``title``, ``tags``,
   ``popularity``) in batches of 1,024 through ``InterestStore.upsert_items``; users (all 8 named
   384-d vectors: ``short_term``, ``long_term``, ``search``, ``negative``, ``interest_0..3``, and a
   payload made by folding synthetic events with :mod:`models.profile`, ``recent_items`` included)
   in batches of 256 through ``upsert_users``: user upserts/s counts only the upsert calls.
2. Index build. The embedded engine builds nothing while it loads (no background optimizer):
   ``optimize()`` per collection is timed separately, and recommend is timed before it too.
3. Reads, after the build: retrieve-by-id (one user; 64 users) and
   ``Recommender(store).recommend(user)`` with the default plan (one user read + one Query API
   call), p50/p99 over ``--queries`` random users. Recall: for ``--recall-queries`` users the same
   plan with ``exact=True`` on every search (prefetches included) against the HNSW answer: the
   share of queries whose top-10 is the same set (and the same order), and mean recall@10.
4. Memory and disk at each users size: VmRSS / VmHWM of the process (and its baseline before the
   store opened), bytes allocated under the store folder.
5. Embed worker, warm text cache, on each backend: ``streams.embed.fold.JobFolder.apply`` (the
   worker's whole per-batch step) on stored synthetic users, 80 % of events naming catalog items
   (Zipf), 20 % text-only from a pool already in the encoder's cache; steps alternate between the
   backends so noise hits both. (The cold-cache ratio against the encoder alone is
   ``bench/embed_bench.py``'s.)

Users grow within one store (10k, then 100k ...), so a users size is measured on the store that
reached it; each items size is its own store. Local mode runs at ``--compare-users`` x
``--compare-items`` only, under ``--local-cap-s`` (its rates are then from what it finished), and
the embedded engine runs the same size in the same invocation for the ratios.

Prints a table and writes JSON (machine info and the exact command) to ``bench/results/``.

    python -m bench.store_bench --quick     # ~1.5 min on 2 CPU cores
    python -m bench.store_bench             # 10k + 100k users x 100k items, local at 20k users:
                                            # ~10 min on 2 cores
    python -m bench.store_bench --parts sizes --items 1M --users 10k   # 1M int8 items: ~12 min
    python -m bench.store_bench --full      # adds 1M users and 1M items (int8): an hour or more

``--parts`` picks compare (local vs edge), sizes and fold; ``--recall-ef N`` also checks the plan
with ``hnsw_ef=N`` on every prefetch.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import multiprocessing
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/store_bench.py` without an installed package
    sys.path.insert(0, str(ROOT))

from qdrant_client.http import models as qm  # noqa: E402

from bench.machine import cpu_share, cpu_ticks  # noqa: E402
from models.interests import Observation  # noqa: E402
from models.profile import InterestSpec, UserInterests  # noqa: E402
from models.settings import QdrantSettings  # noqa: E402
from models.store import InterestStore  # noqa: E402
from streams.contracts.events import DEFAULT_TYPE_WEIGHTS as TYPE_WEIGHTS  # noqa: E402

DIM = 384
ITEM_BATCH = 1024
USER_BATCH = 256
T0_MS = 1_750_000_000_000
DAY_MS = 86_400_000
EVENT_TYPES = ("view", "click", "read", "like", "search", "share", "purchase", "dislike", "skip")
EVENT_SHARES = (0.40, 0.20, 0.10, 0.08, 0.10, 0.03, 0.02, 0.04, 0.03)
_VOCABULARY = (
    "deep learning neural network transformer attention training model dataset embedding "
    "chocolate cake sourdough bread recipe pasta sauce garlic oven baking curry vegan salad "
    "paris tokyo beach hiking trail hotel flight budget museum island train mountain weekend "
    "jazz guitar piano album concert vinyl playlist festival football match league goal coach "
    "marathon tennis stock market rates inflation dividend savings mortgage smartphone camera "
    "battery review laptop keyboard monitor headphones chip privacy app guide best new how why"
)
WORDS = tuple(_VOCABULARY.split())
NAMES = InterestSpec().vector_names()


# -- synthetic data -----------------------------------------------------------------------------


def unit_rows(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


class ItemSpace:
    """Items around ``clusters`` centres that share a common direction (as sentence embeddings
    do: unrelated texts still score ~0.2), so HNSW sees realistic structure, not uniform noise.

    Item ``i`` is a pure function of (seed, i): batches can be made in any order, in any process.
    """

    def __init__(self, seed: int, n_items: int, *, spread: float = 0.9) -> None:
        self.seed, self.n_items, self.spread = seed, n_items, spread
        self.clusters = int(np.clip(n_items // 100, 16, 4096))
        rng = np.random.default_rng([seed, 0])
        common = unit_rows(rng.standard_normal((1, DIM)))
        own = unit_rows(rng.standard_normal((self.clusters, DIM)))
        self.centers = unit_rows(0.45 * common + 0.9 * own).astype(np.float32)
        self.cluster_of = rng.integers(self.clusters, size=n_items)

    def near(self, rng: np.random.Generator, cluster: np.ndarray, spread: float) -> np.ndarray:
        """Unit vectors around the given clusters' centres, ``spread`` = noise norm / centre."""
        noise = rng.standard_normal((len(cluster), DIM)) * (spread / np.sqrt(DIM))
        return unit_rows(self.centers[cluster] + noise).astype(np.float32)

    def items(self, start: int, n: int) -> list[tuple[str, np.ndarray, dict[str, Any]]]:
        """Items ``start .. start+n-1`` as ``(item_id, vector, payload)`` for ``upsert_items``."""
        rng = np.random.default_rng([self.seed, 1, start])
        cluster = self.cluster_of[start : start + n]
        vectors = self.near(rng, cluster, self.spread)
        words = rng.integers(len(WORDS), size=(n, 8))
        popularity = rng.lognormal(1.0, 1.5, size=n)
        out = []
        for j in range(n):
            c = int(cluster[j])
            payload = {
                "title": " ".join(WORDS[w] for w in words[j]),
                "tags": [WORDS[c % len(WORDS)], WORDS[(7 * c + 3) % len(WORDS)]],
                "popularity": round(float(popularity[j]), 3),
            }
            out.append((f"item-{start + j}", vectors[j], payload))
        return out


@dataclass(frozen=True)
class Template:
    """A real folded user: which named vectors it has and its payload fragment."""

    names: tuple[str, ...]
    fragment: dict[str, Any]
    seq: int
    recent: int  # how many recent item ids its payload carries


def make_templates(space: ItemSpace, count: int, seed: int) -> list[Template]:
    """Fold ``count`` synthetic event histories (12..192 events over 30 days, 3-6 interests, some
    searches and dislikes) with :class:`UserInterests`: the payloads are the real shape and size."""
    rng = np.random.default_rng([seed, 2])
    spec = InterestSpec()
    out = []
    for t in range(count):
        n = int((12, 24, 48, 96, 192)[t % 5])
        mine = rng.choice(space.clusters, size=int(rng.integers(3, 7)), replace=False)
        share = 1.0 / np.arange(1, len(mine) + 1)
        kinds = rng.choice(len(EVENT_TYPES), size=n, p=EVENT_SHARES)
        picks = mine[rng.choice(len(mine), size=n, p=share / share.sum())]
        negatives = rng.integers(space.clusters, size=n)
        is_negative = np.isin(kinds, (7, 8))
        vectors = space.near(rng, np.where(is_negative, negatives, picks), space.spread)
        ts = np.sort(rng.integers(T0_MS - 30 * DAY_MS, T0_MS, size=n))
        observations, recent = [], []
        for i in range(n):
            etype = EVENT_TYPES[int(kinds[i])]
            tag = WORDS[int(picks[i]) % len(WORDS)]
            observations.append(
                Observation(int(ts[i]), TYPE_WEIGHTS[etype], etype, vectors[i], (tag,))
            )
            if etype != "search":
                recent.append(int(rng.integers(space.n_items)))
        user = UserInterests(spec)
        user.update(observations)
        named, fragment = user.to_stored()
        distinct = len(dict.fromkeys(recent[-200:]))
        out.append(Template(tuple(n for n in NAMES if n in named), fragment, n, distinct))
    return out


def make_users(
    space: ItemSpace, templates: Sequence[Template], start: int, n: int, seed: int
) -> list[tuple[str, dict[str, np.ndarray], dict[str, Any]]]:
    """Users ``start .. start+n-1``: template ``i % len`` gives the payload and which vectors;
    the vectors are the user's own, near 4 of the catalog's clusters (a pure function of i)."""
    rng = np.random.default_rng([seed, 3, start])
    interest = rng.integers(space.clusters, size=(n, 4))
    vecs = {f"interest_{k}": space.near(rng, interest[:, k], 0.35) for k in range(4)}
    vecs["short_term"] = space.near(rng, interest[:, 0], 0.5)
    vecs["search"] = space.near(rng, interest[:, int(rng.integers(4))], 0.5)
    vecs["negative"] = space.near(rng, rng.integers(space.clusters, size=n), 0.5)
    mix = sum((w * vecs[f"interest_{k}"] for k, w in enumerate((0.4, 0.3, 0.2, 0.1))), np.zeros(1))
    vecs["long_term"] = unit_rows(mix).astype(np.float32)
    out = []
    for j in range(n):
        i = start + j
        t = templates[i % len(templates)]
        recent = rng.integers(space.n_items, size=t.recent)
        payload = {
            **t.fragment,
            "user_id": f"user-{i}",
            "seq": t.seq,
            "updated_at": T0_MS,
            "events_folded": t.seq,
            "recent_items": [f"item-{r}" for r in recent],
        }
        out.append((f"user-{i}", {name: vecs[name][j] for name in t.names}, payload))
    return out


# -- measuring ----------------------------------------------------------------------------------


def proc_status() -> dict[str, int]:
    """VmRSS / VmHWM (peak) / RssAnon / RssFile (memory-mapped files: pages the kernel may
    reclaim) of this process in bytes (Linux); {} elsewhere."""
    out = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def disk_bytes(path: Path) -> int:
    """Bytes allocated under ``path`` (as ``du``: sparse memory-mapped files count what is used)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total


def disk_parts(path: Path) -> dict[str, int]:
    """``disk_bytes`` of each ``<collection>/<part>`` (``segments``, ``wal`` ...) under ``path``."""
    out = {}
    for collection in sorted(p for p in path.iterdir() if p.is_dir()):
        for part in sorted(p for p in collection.iterdir() if p.is_dir()):
            out[f"{collection.name}/{part.name}"] = disk_bytes(part)
    return out


def latencies(fn: Callable[[int], Any], n: int, deadline: float) -> list[float]:
    """Milliseconds of ``fn(i)`` for i < n, stopping early past ``deadline`` (monotonic)."""
    out = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        out.append(1000 * (time.perf_counter() - start))
        if time.monotonic() > deadline:
            break
    return out


def pct(ms: Sequence[float]) -> dict[str, float | int | None]:
    if not ms:
        return {"n": 0, "p50": None, "p99": None, "mean": None}
    a = np.asarray(ms)
    return {
        "n": len(ms),
        "p50": round(float(np.percentile(a, 50)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
        "mean": round(float(a.mean()), 3),
    }


def with_params(request: qm.QueryRequest, params: qm.SearchParams) -> qm.QueryRequest:
    """The same request with ``params`` on the outer query and every prefetch, nested ones
    included (a request's ``params`` reach only its own search, not its prefetches)."""

    def walk(p: qm.Prefetch) -> qm.Prefetch:
        nested = p.prefetch if isinstance(p.prefetch, list) else [p.prefetch] if p.prefetch else []
        return p.model_copy(update={"params": params, "prefetch": [walk(x) for x in nested]})

    prefetch = request.prefetch
    nested = prefetch if isinstance(prefetch, list) else [prefetch] if prefetch else []
    return request.model_copy(update={"params": params, "prefetch": [walk(p) for p in nested]})


def exact(request: qm.QueryRequest) -> qm.QueryRequest:
    """The same request searching exactly (no index) everywhere: the ground truth."""
    return with_params(request, qm.SearchParams(exact=True))


# -- one store, one process ---------------------------------------------------------------------


def open_store(backend: str, path: Path, case: dict[str, Any]) -> InterestStore:
    """``edge``: the embedded engine as the service opens it (``from_settings``); ``local``:
    qdrant-client's local mode on disk, the store before issue 13 (a reference only now)."""
    settings = QdrantSettings(
        path=path, users_storage=case["users_storage"], items_storage=case["items_storage"]
    )
    if backend == "edge":
        store = InterestStore.from_settings(settings, DIM)
    else:
        from models.store.client import ClientBackend

        store = InterestStore(ClientBackend.local(str(path)), dimension=DIM, settings=settings)
    store.ensure_collections(DIM, NAMES)
    return store


def load_items(store: InterestStore, space: ItemSpace, deadline: float) -> dict[str, Any]:
    """All of ``space``'s items in batches of ``ITEM_BATCH``; only the upsert calls are timed."""
    spent, loaded = 0.0, 0
    while loaded < space.n_items and time.monotonic() < deadline:
        batch = space.items(loaded, min(ITEM_BATCH, space.n_items - loaded))
        start = time.perf_counter()
        store.upsert_items(batch)
        spent += time.perf_counter() - start
        loaded += len(batch)
    return {
        "loaded": loaded,
        "seconds": round(spent, 3),
        "items_per_s": round(loaded / max(spent, 1e-9), 1),
        "capped": loaded < space.n_items,
    }


def load_users(
    store: InterestStore,
    space: ItemSpace,
    templates: Sequence[Template],
    span: tuple[int, int],
    deadline: float,
    seed: int,
) -> dict[str, Any]:
    """Users ``span[0] .. span[1]-1`` in batches of ``USER_BATCH``; user upserts/s counts only
    the ``upsert_users`` calls (making the synthetic points is not the store's time)."""
    per_batch: list[float] = []
    start_id, end_id = span
    loaded = start_id
    payload_bytes = 0
    while loaded < end_id and time.monotonic() < deadline:
        batch = make_users(space, templates, loaded, min(USER_BATCH, end_id - loaded), seed)
        if loaded == start_id:
            payload_bytes = sum(len(json.dumps(p)) for _, _, p in batch) // len(batch)
        start = time.perf_counter()
        store.upsert_users(batch)
        per_batch.append(time.perf_counter() - start)
        loaded += len(batch)
    spent = sum(per_batch)
    return {
        "loaded": loaded - start_id,
        "seconds": round(spent, 3),
        "upserts_per_s": round((loaded - start_id) / max(spent, 1e-9), 1),
        "batch_ms": pct([1000 * s for s in per_batch]),
        "payload_json_bytes": payload_bytes,
        "capped": loaded < end_id,
    }


def optimize(store: InterestStore) -> dict[str, float] | None:
    """Seconds of each collection's ``optimize()`` (index build, segment merge); ``None`` for a
    backend without one. Per collection through the embedded backend's shard (bench only)."""
    shard_of = getattr(store.backend, "_shard", None)
    if shard_of is None:
        return None
    out = {}
    for name in (store.items_collection, store.users_collection):
        start = time.perf_counter()
        shard_of(name).optimize()
        out[name] = round(time.perf_counter() - start, 3)
    return out


def recall(store: InterestStore, rec: Any, users: Sequence[str], ef: int) -> dict[str, Any]:
    """The default plan through the index vs the same plan with ``exact=True`` everywhere; with
    ``ef`` also the plan with ``hnsw_ef=ef`` on every prefetch (``search_hnsw_ef`` does not reach
    prefetches: :meth:`InterestStore.query_items` sets the outer request's params only)."""
    same = {"default": 0, "order": 0, "ef": 0}
    recalls, exact_ms, ef_ms = [], [], []
    for user_id in users:
        stored = store.get_users([user_id])[user_id]
        vectors = {n: v.astype(np.float64) for n, v in stored.vectors.items()}
        request = rec.plan(vectors, stored.payload).request
        approx = [str(p.id) for p in store.query_items(request)]
        start = time.perf_counter()
        truth = [str(p.id) for p in store.query_items(exact(request))]
        exact_ms.append(1000 * (time.perf_counter() - start))
        same["default"] += set(approx) == set(truth)
        same["order"] += approx == truth
        recalls.append(len(set(approx) & set(truth)) / max(1, len(truth)))
        if ef:
            start = time.perf_counter()
            tuned = store.query_items(with_params(request, qm.SearchParams(hnsw_ef=ef)))
            ef_ms.append(1000 * (time.perf_counter() - start))
            same["ef"] += {str(p.id) for p in tuned} == set(truth)
    n = max(1, len(users))
    out = {
        "queries": len(users),
        "top10_same_set": round(same["default"] / n, 4),
        "top10_same_order": round(same["order"] / n, 4),
        "mean_recall_at_10": round(float(np.mean(recalls)) if recalls else 0.0, 4),
        "exact_ms": pct(exact_ms),
    }
    if ef:
        out["prefetch_ef"] = {"ef": ef, "top10_same_set": round(same["ef"] / n, 4),
                              "query_ms": pct(ef_ms)}  # fmt: skip
    return out


def reads(
    store: InterestStore, loaded: int, case: dict[str, Any], deadline: float
) -> dict[str, Any]:
    """Retrieve-by-id (1 and 64 users), recommend (default plan) and, embedded, recall."""
    from models.recommend import Recommender

    rng = np.random.default_rng([case["seed"], 4, loaded])
    q = case["queries"]
    ids = [f"user-{i}" for i in rng.integers(loaded, size=q)]
    many = rng.integers(loaded, size=(q, 64))
    out: dict[str, Any] = {}
    out["get_1_ms"] = pct(latencies(lambda i: store.get_users([ids[i]]), q, deadline))
    out["get_64_ms"] = pct(
        latencies(lambda i: store.get_users([f"user-{u}" for u in many[i]]), q, deadline)
    )
    rec = Recommender(store)
    strategies: dict[str, int] = defaultdict(int)

    def recommend(i: int) -> None:
        strategies[rec.recommend(ids[i]).strategy] += 1

    for i in range(min(3, q)):  # warm-up: the catalog centroid (one scroll, then cached)
        recommend(i)
    strategies.clear()
    out["recommend_ms"] = pct(latencies(recommend, q, deadline))
    out["strategies"] = dict(strategies)
    if case["backend"] == "edge" and case["recall_queries"]:
        sample = [f"user-{i}" for i in rng.integers(loaded, size=case["recall_queries"])]
        out["recall"] = recall(store, rec, sample, case.get("recall_ef", 0))
    return out


def unindexed_recommend(store: InterestStore, loaded: int, n: int, seed: int) -> dict[str, Any]:
    """Recommend latency as loaded, before any ``optimize()`` (what a store gets without it)."""
    from models.recommend import Recommender

    rec = Recommender(store)
    ids = [f"user-{i}" for i in np.random.default_rng([seed, 5]).integers(loaded, size=n + 2)]
    rec.recommend(ids[0])
    rec.recommend(ids[1])
    return pct(latencies(lambda i: rec.recommend(ids[i + 2]), n, time.monotonic() + 120))


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """One store (one backend, one items size) grown through ``case["users"]``, in this process."""
    result: dict[str, Any] = {"case": case, "baseline": proc_status()}
    space = ItemSpace(case["seed"], case["items"])
    templates = make_templates(space, 64, case["seed"])
    path = Path(case["work"]) / case["label"]
    cap = case.get("cap_s")
    deadline = time.monotonic() + cap if cap else float("inf")
    store = open_store(case["backend"], path, case)
    try:
        result["items"] = load_items(store, space, deadline)
        result["sizes"] = []
        loaded = 0
        for k, target in enumerate(case["users"]):
            grow = load_users(store, space, templates, (loaded, target), deadline, case["seed"])
            loaded += grow["loaded"]
            step: dict[str, Any] = {"users": loaded, "target": target, "upsert": grow}
            if k == 0 and case["backend"] == "edge":
                step["recommend_unindexed_ms"] = unindexed_recommend(
                    store, loaded, min(30, case["queries"]), case["seed"]
                )
            step["optimize_s"] = optimize(store)
            step.update(reads(store, loaded, case, deadline))
            if case["backend"] == "edge":
                info = store.backend.info(store.items_collection)
                step["items_indexed"] = info.indexed_vectors_count
                step["items_segments"] = info.segments_count
            step["memory"] = proc_status()
            step["disk_bytes"] = disk_bytes(path)
            step["disk_parts"] = disk_parts(path)
            result["sizes"].append(step)
            print(f"    {case['label']}: {summary_line(step)}", flush=True)
            if grow["capped"]:
                break
    finally:
        store.close()
        shutil.rmtree(path, ignore_errors=True)
    result["capped"] = time.monotonic() > deadline
    return result


def summary_line(step: dict[str, Any]) -> str:
    rec = step["recommend_ms"]
    rss = step["memory"].get("VmRSS", 0) / 2**20
    return (
        f"{step['users']} users: {step['upsert']['upserts_per_s']:.0f} upserts/s, recommend "
        f"p50 {rec['p50']} p99 {rec['p99']} ms, RSS {rss:.0f} MB"
    )


# -- the embed worker's step, warm text cache, on each backend -----------------------------------


def fold_events(
    space: ItemSpace, templates: Sequence[Template], fold: dict[str, Any]
) -> tuple[list[str], list[list[Any]]]:
    """The text pool and the jobs of each step: ``events`` over ``users`` stored users, 80 %
    naming an item (Zipf 1.1 over the catalog), 20 % text-only searches (Zipf over the pool).
    Events are numbered after each user's stored ``seq``, so none is a replay."""
    from streams.contracts.jobs import JobEvent, UpdateJob

    rng = np.random.default_rng([fold["seed"], 6])
    pool = [
        " ".join(WORDS[w] for w in rng.integers(len(WORDS), size=int(rng.integers(3, 8)))) + f" {k}"
        for k in range(fold["text_pool"])
    ]

    def zipf(n: int, size: int) -> np.ndarray:
        p = np.arange(1, n + 1, dtype=np.float64) ** -1.1
        return rng.permutation(n)[rng.choice(n, size=size, p=p / p.sum())]

    n = fold["events"]
    users = rng.integers(fold["users"], size=n)
    items, texts = zipf(space.n_items, n), zipf(len(pool), n)
    text_only = rng.random(n) < 0.2
    kinds = rng.choice(len(EVENT_TYPES), size=n, p=EVENT_SHARES)
    seq = {u: templates[u % len(templates)].seq for u in range(fold["users"])}
    steps: list[list[Any]] = []
    clock = T0_MS
    for lo in range(0, n, fold["step_events"]):
        by_user: dict[int, list[JobEvent]] = defaultdict(list)
        for i in range(lo, min(n, lo + fold["step_events"])):
            u, clock = int(users[i]), clock + 1000
            seq[u] += 1
            etype = "search" if text_only[i] else EVENT_TYPES[int(kinds[i]) % 4]
            item = None if text_only[i] else f"item-{items[i]}"
            text = pool[texts[i]] if text_only[i] else None
            event = JobEvent(seq[u], f"f{i}", etype, TYPE_WEIGHTS[etype], clock, item, text, ("t",))
            by_user[u].append(event)
        steps.append([UpdateJob(f"user-{u}", tuple(e), T0_MS, T0_MS) for u, e in by_user.items()])
    return pool, steps


def run_fold(fold: dict[str, Any]) -> dict[str, Any]:
    """Fold the same jobs on each backend's store (each with the same users and items), steps
    alternating between backends; the texts are in the encoder's cache before the clock starts."""
    from models.encoder import Encoder
    from streams.embed.fold import JobFolder

    space = ItemSpace(fold["seed"], fold["items"])
    templates = make_templates(space, 64, fold["seed"])
    case = {"users_storage": fold["users_storage"], "items_storage": fold["items_storage"]}
    encoder = Encoder(device=fold["device"]).load()
    spec = InterestSpec()
    pool, steps = fold_events(space, templates, fold)
    encoder.encode(pool)  # warm cache
    folders, stores, out = {}, {}, {}
    for backend in fold["backends"]:
        store = open_store(backend, Path(fold["work"]) / f"fold-{backend}", case)
        load_items(store, space, float("inf"))
        load_users(store, space, templates, (0, fold["users"]), float("inf"), fold["seed"])
        stores[backend], folders[backend] = store, JobFolder(store, encoder, spec)
        out[backend] = {"seconds": 0.0, "events": 0, "upsert_s": 0.0, "state_resets": 0,
                        "no_vector": 0, "jobs": 0}  # fmt: skip
    embedded = encoder.embedded_total
    try:
        for s, jobs in enumerate(steps):
            order = fold["backends"] if s % 2 == 0 else fold["backends"][::-1]
            for backend in order:
                start = time.perf_counter()
                report = folders[backend].apply(jobs)
                elapsed = time.perf_counter() - start
                if s == 0:  # warm-up step, not counted
                    continue
                row = out[backend]
                row["seconds"] += elapsed
                row["events"] += sum(len(j.events) for j in jobs)
                row["jobs"] += len(jobs)
                row["upsert_s"] += report.upsert_s
                row["state_resets"] += report.state_resets
                row["no_vector"] += report.skipped["no_vector"]
    finally:
        for backend, store in stores.items():
            store.close()
            shutil.rmtree(Path(fold["work"]) / f"fold-{backend}", ignore_errors=True)
    for row in out.values():
        row["events_per_s"] = round(row["events"] / max(row["seconds"], 1e-9), 1)
        row["upsert_share"] = round(row["upsert_s"] / max(row["seconds"], 1e-9), 3)
        row["ms_per_step"] = round(1000 * row["seconds"] / max(1, len(steps) - 1), 1)
    return {
        "fold": fold,
        "model_calls_while_timed": encoder.embedded_total - embedded,
        "device": encoder.device,
        "backends": out,
    }


# -- the run ------------------------------------------------------------------------------------


def ints(text: str) -> list[int]:
    """``10000,100k,1M`` → [10000, 100000, 1000000]."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        scale = {"k": 1_000, "m": 1_000_000}.get(part[-1:], 1)
        out.append(int(float(part[:-1] if scale > 1 else part) * scale))
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: < 1 min on 2 CPU cores")
    p.add_argument("--full", action="store_true", help="add 1M users and 1M items (int8 items)")
    p.add_argument("--users", type=ints, help="users sizes, grown in one store (10k,100k)")
    p.add_argument("--items", type=ints, help="items sizes, one store each (100k)")
    p.add_argument("--users-storage", default="disk", choices=["ram", "disk", "int8"])
    p.add_argument(
        "--items-storage",
        default="auto",
        help="ram, disk, int8, or auto: ram below 1M items, int8 from 1M on",
    )
    p.add_argument("--compare-users", type=int, help="users in the local-mode comparison (20000)")
    p.add_argument("--compare-items", type=int, help="items in the local-mode comparison (10000)")
    p.add_argument("--local-cap-s", type=float, default=300, help="time cap of the local case")
    p.add_argument("--no-local", action="store_true", help="skip local mode (and its ratios)")
    p.add_argument(
        "--parts",
        default="compare,sizes,fold",
        help="which parts to run: compare (local vs edge), sizes, fold (comma-separated)",
    )
    p.add_argument("--queries", type=int, help="retrieve and recommend calls per size")
    p.add_argument("--recall-queries", type=int, help="recommend plans checked against exact")
    p.add_argument(
        "--recall-ef", type=int, default=256, help="also check hnsw_ef=N on prefetches (0: off)"
    )
    p.add_argument("--fold-events", type=int, help="events folded per backend (0: skip)")
    p.add_argument("--fold-users", type=int, default=2000)
    p.add_argument("--fold-items", type=int, default=10_000)
    p.add_argument("--device", default="cpu", help="the encoder's device for the fold part")
    p.add_argument("--work", type=Path, help="folder for the stores (default: system temp)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--out", type=Path, help="JSON path (default bench/results/store_bench*.json)")
    args = p.parse_args(argv)
    quick, default = args.quick, not (args.quick or args.full)
    sizes = {
        "users": ([1_000, 3_000], [10_000, 100_000], [10_000, 100_000, 1_000_000]),
        "items": ([5_000], [100_000], [100_000, 1_000_000]),
        "compare_users": (2_000, 20_000, 20_000),
        "compare_items": (2_000, 10_000, 10_000),
        "queries": (50, 300, 300),
        "recall_queries": (30, 200, 200),
        "fold_events": (1_024, 4_096, 4_096),
    }
    for key, (q, d, f) in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, q if quick else d if default else f)
    if quick:
        args.fold_users, args.fold_items = min(args.fold_users, 300), min(args.fold_items, 2_000)
    args.users = sorted(set(args.users))
    return args


def storage_for(args: argparse.Namespace, items: int) -> str:
    if args.items_storage != "auto":
        return str(args.items_storage)
    return "int8" if items >= 1_000_000 else "ram"


def plan_cases(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """The comparison pair first (same sizes, edge then local), then one store per items size."""
    common = {"seed": args.seed, "work": str(work), "users_storage": args.users_storage,
              "queries": args.queries, "recall_queries": args.recall_queries,
              "recall_ef": args.recall_ef}  # fmt: skip
    cases = []
    parts = args.parts.split(",")
    for backend in ("edge", "local")[: 1 if args.no_local else 2] if "compare" in parts else ():
        cases.append({
            **common, "backend": backend, "items": args.compare_items,
            "users": [args.compare_users], "items_storage": storage_for(args, args.compare_items),
            "label": f"compare-{backend}", "role": "compare",
            "cap_s": args.local_cap_s if backend == "local" else None,
            "queries": min(args.queries, 30) if backend == "local" else args.queries,
        })  # fmt: skip
    for items in args.items if "sizes" in parts else ():
        storage = storage_for(args, items)
        cases.append({
            **common, "backend": "edge", "items": items, "users": args.users,
            "items_storage": storage, "label": f"edge-{items}-{storage}", "role": "size",
            "cap_s": None,
        })  # fmt: skip
    return cases


def in_fresh_process(fn: Callable[[dict[str, Any]], dict[str, Any]], arg: dict[str, Any]) -> Any:
    """``fn(arg)`` in a new interpreter (spawn): its memory figures are its own."""
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, arg).result()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ticks = cpu_ticks()
    results: dict[str, Any] = {"machine": machine_info(), "args": vars_json(args), "cases": []}
    suffix = "_quick" if args.quick else ""
    out = args.out or ROOT / "bench" / "results" / f"store_bench{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="store-bench-", dir=args.work))
    print(f"store bench: {os.cpu_count()} CPUs, load {os.getloadavg()}, stores under {work}")
    try:
        for case in plan_cases(args, work):
            print(f"  {case['label']}: {case['items']} items, users {case['users']}", flush=True)
            results["cases"].append(in_fresh_process(run_case, case))
            write(out, results)  # a long run keeps what it measured so far
        if args.fold_events and "fold" in args.parts.split(","):
            fold = {"seed": args.seed, "work": str(work), "events": args.fold_events,
                    "users": args.fold_users, "items": args.fold_items, "step_events": 256,
                    "text_pool": 200, "device": args.device,
                    "users_storage": args.users_storage, "items_storage": "ram",
                    "backends": ["edge"] if args.no_local else ["edge", "local"]}  # fmt: skip
            print(f"  embed fold, warm cache: {args.fold_events} events", flush=True)
            results["fold"] = in_fresh_process(run_fold, fold)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["machine"]["cpu_share_during_run"] = cpu_share(ticks, cpu_ticks())
    results["targets"] = targets(results)
    report(results)
    write(out, results)
    print(f"\nwrote {out}")
    return 0


def write(path: Path, results: dict[str, Any]) -> None:
    path.write_text(json.dumps(results, indent=1) + "\n")


def vars_json(args: argparse.Namespace) -> dict[str, Any]:
    return {
        k: v if isinstance(v, int | float | list | bool) else str(v) for k, v in vars(args).items()
    }


def machine_info() -> dict[str, Any]:
    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return {
        "command": shlex.join([sys.executable, "-m", "bench.store_bench", *sys.argv[1:]]),
        "cpu_count": os.cpu_count(),
        "mem_total_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "loadavg_start": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "qdrant_edge_py": version("qdrant-edge-py"),
        "qdrant_client": version("qdrant-client"),
        "numpy": np.__version__,
        "git_commit": commit,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# -- verdicts and the table ---------------------------------------------------------------------


def steps_of(
    results: dict[str, Any], role: str, backend: str
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for case in results["cases"]:
        meta = case["case"]
        if meta["role"] == role and meta["backend"] == backend:
            for step in case["sizes"]:
                yield meta, step


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, each with the measured value and whether it was met (None: not
    measured in this run)."""
    out: dict[str, Any] = {}
    edge = next(steps_of(results, "compare", "edge"), None)
    local = next(steps_of(results, "compare", "local"), None)
    if edge and local:
        e, lo = edge[1], local[1]
        up = ratio(e["upsert"]["upserts_per_s"], lo["upsert"]["upserts_per_s"])
        out["user_upserts_vs_local"] = {
            "users": e["users"],
            "local_users": lo["users"],
            "ratio": up,
            "target": 20,
            "met": up is not None and up >= 20,
        }
        out["recommend_local_over_edge"] = {
            "p50": ratio(lo["recommend_ms"]["p50"], e["recommend_ms"]["p50"]),
            "p99": ratio(lo["recommend_ms"]["p99"], e["recommend_ms"]["p99"]),
            "items": edge[0]["items"],
        }
    sized = list(steps_of(results, "size", "edge"))
    if sized:
        meta, top = max(sized, key=lambda s: (s[0]["items"], s[1]["users"]))
        p99 = top["recommend_ms"]["p99"]
        out["recommend_p99_ms"] = {"items": meta["items"], "users": top["users"], "p99": p99,
                                   "target": 30, "at_1M_items": meta["items"] >= 1_000_000,
                                   "met": p99 is not None and p99 <= 30}  # fmt: skip
        rc = top.get("recall", {})
        share = rc.get("top10_same_set")
        out["top10_identical"] = {
            "items": meta["items"],
            "share": share,
            "target": 0.95,
            "met": share is not None and share >= 0.95,
            "with_prefetch_ef": rc.get("prefetch_ef"),
        }
        out["rss_1M_users_1M_items"] = rss_verdict(sized)
    fold = results.get("fold", {}).get("backends", {})
    if "edge" in fold and "local" in fold:
        r = ratio(fold["edge"]["events_per_s"], fold["local"]["events_per_s"])
        out["embed_warm_vs_local"] = {"ratio": r, "target": 5, "met": r is not None and r >= 5}
    out["embed_cold_vs_encoder"] = {"see": "bench/embed_bench.py (throughput ratio)"}
    return out


def rss_verdict(sized: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """Measured when a 1M x 1M step ran; else the largest items store's RSS at its largest users
    size plus the per-user slope between its users sizes × the users still missing."""
    gib = 2**30
    done = [s for m, s in sized if m["items"] >= 1_000_000 and s["users"] >= 1_000_000]
    if done:
        hwm = done[0]["memory"]["VmHWM"]
        return {"measured": True, "hwm_gib": round(hwm / gib, 2), "met": hwm <= 8 * gib}
    items = max(m["items"] for m, _ in sized)
    steps = [s for m, s in sized if m["items"] == items]
    if len(steps) < 2:
        return {"measured": False, "met": None}
    a, b = steps[0], steps[-1]
    est = {}
    for key in ("VmRSS", "RssAnon"):
        slope = (b["memory"][key] - a["memory"][key]) / max(1, b["users"] - a["users"])
        est[key] = (slope, b["memory"][key] + slope * (1_000_000 - b["users"]))
    return {
        "measured": False,
        "extrapolated_from": {"items": items, "users": [a["users"], b["users"]]},
        "rss_bytes_per_user": round(est["VmRSS"][0], 1),
        "rss_gib_at_1M_users": round(est["VmRSS"][1] / gib, 2),
        "anon_bytes_per_user": round(est["RssAnon"][0], 1),
        "anon_gib_at_1M_users": round(est["RssAnon"][1] / gib, 2),
        "note": "items part measured at this items size only",
        "met": None,
    }


def fmt(d: dict[str, Any] | None) -> str:
    if not d or d.get("p50") is None:
        return "-"
    return f"{d['p50']:.2f}/{d['p99']:.2f}"


def report(results: dict[str, Any]) -> None:
    cpu = results["machine"]["cpu_share_during_run"]
    if cpu:
        print(
            f"\nCPU during the run (all cores, all processes): busy {100 * cpu['busy']:.0f} %,"
            f" idle {100 * cpu['idle']:.0f} %, steal {100 * cpu['steal']:.0f} %"
        )
    print("\n== per size (edge = qdrant-edge embedded; local = qdrant-client local mode) ==")
    print("latencies in ms as p50/p99; rec = Recommender.recommend, default plan; build = "
          "optimize() items+users s; top10 = same set as exact search")  # fmt: skip
    head = (f"{'case':<22}{'users':>8}{'items':>8} {'up/s':>7}{'items/s':>8}{'build':>7}"
            f"{'get 1':>12}{'get 64':>13}{'rec':>15}{'rec noidx':>14}{'top10':>7}{'ef':>5}"
            f"{'RSS MB':>8}{'anon MB':>8}{'HWM MB':>8}{'disk MB':>8}")  # fmt: skip
    print(head)
    for case in results["cases"]:
        meta = case["case"]
        for step in case["sizes"]:
            build = sum((step["optimize_s"] or {}).values()) if step["optimize_s"] else None
            top10 = step.get("recall", {}).get("top10_same_set")
            tuned = step.get("recall", {}).get("prefetch_ef", {}).get("top10_same_set")
            mem = step["memory"]
            print(
                f"{meta['label']:<22}{step['users']:>8}{meta['items']:>8} "
                f"{step['upsert']['upserts_per_s']:>7.0f}{case['items']['items_per_s']:>8.0f}"
                f"{'-' if build is None else f'{build:.1f}':>7}"
                f"{fmt(step['get_1_ms']):>12}{fmt(step['get_64_ms']):>13}"
                f"{fmt(step['recommend_ms']):>15}{fmt(step.get('recommend_unindexed_ms')):>14}"
                f"{'-' if top10 is None else f'{100 * top10:.0f}%':>7}"
                f"{'-' if tuned is None else f'{100 * tuned:.0f}%':>5}"
                f"{mem.get('VmRSS', 0) / 2**20:>8.0f}{mem.get('RssAnon', 0) / 2**20:>8.0f}"
                f"{mem.get('VmHWM', 0) / 2**20:>8.0f}"
                f"{step['disk_bytes'] / 2**20:>8.0f}"
            )
    fold = results.get("fold")
    if fold:
        f = fold["fold"]
        print(
            f"\n== embed step (JobFolder.apply), warm text cache, {f['events']} events, "
            f"{f['users']} users, {f['items']} items =="
        )
        for backend, row in fold["backends"].items():
            print(
                f"{backend:<8}{row['events_per_s']:>8.0f} events/s  {row['ms_per_step']:>7.0f}"
                f" ms/step  upsert share {100 * row['upsert_share']:.0f} %  state resets "
                f"{row['state_resets']}  model calls while timed {fold['model_calls_while_timed']}"
            )
    print("\n== targets ==")
    for name, verdict in results["targets"].items():
        print(f"{name:<28} {json.dumps(verdict)}")


if __name__ == "__main__":
    raise SystemExit(main())
