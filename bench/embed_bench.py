"""Embed-step benchmark: encoder alone vs the whole embed step, and embeds per event under Zipf.

What it measures (issue 4, "Measure"):

1. Throughput. The same unique texts, cold cache each time, in the same steps of ``--step-texts``
   texts and the same model batch size, through (a) ``Encoder.encode`` alone and (b)
   ``JobFolder.apply`` — the embed worker's whole per-batch step (users retrieve, model call,
   interest math, upsert) on the store ``--qdrant`` names: by default embedded Qdrant (the
   engine in this process, in a temp folder). Rounds alternate (a) and (b) so drift on a noisy
   machine hits both; the headline is the median of the per-round ratios (b)/(a). Where the fold's
   time goes is split into model / Qdrant retrieve / Qdrant upsert / the rest (interest math,
   payload building). Optionally (c) the real ``EmbedWorker`` end to end through Kafka, if a broker
   answers at ``--kafka-bootstrap`` (default ``INTEREST_KAFKA_BOOTSTRAP`` or 127.0.0.1:29092).
2. Embeds per event on a catalog workload: items picked by Zipf(s), a share of events carrying
   only text (also Zipf over a text pool), with and without the catalog loaded into ``items``;
   ``Encoder.embedded_total`` deltas per step, first 10 % of events vs the last half (warm).

Prints tables and writes JSON (with machine info and the exact command) to ``bench/results/``.

    python -m bench.embed_bench --quick                # < 2 min on 2 CPU cores
    python -m bench.embed_bench                        # a few minutes
    python -m bench.embed_bench --device cuda --precision fp16 --batch-size 256
    python -m bench.embed_bench --qdrant local-mode    # the previous store, for comparison
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/embed_bench.py` without an installed package
    sys.path.insert(0, str(ROOT))

from qdrant_client import QdrantClient  # noqa: E402

from bench.machine import cpu_share, cpu_ticks  # noqa: E402
from models.catalog import CatalogItem, load_items  # noqa: E402
from models.encoder import Encoder, ModelLoadError  # noqa: E402
from models.profile import InterestSpec  # noqa: E402
from models.settings import ModelSettings  # noqa: E402
from models.store import InterestStore  # noqa: E402
from models.store.client import ClientBackend  # noqa: E402
from models.store.edge import EdgeBackend  # noqa: E402
from streams.contracts.events import DEFAULT_TYPE_WEIGHTS  # noqa: E402
from streams.contracts.jobs import JobEvent, UpdateJob  # noqa: E402
from streams.embed.fold import JobFolder  # noqa: E402

TOPICS = {
    "ml": "deep learning neural network transformer attention gradient training model dataset "
    "embedding GAN diffusion inference GPU benchmark",
    "food": "chocolate cake sourdough bread recipe pasta sauce garlic oven baking spicy curry "
    "vegan salad dessert breakfast",
    "travel": "Paris Tokyo beach hiking trail hotel flight budget itinerary museum island train "
    "mountain weekend guide",
    "music": "jazz guitar piano album concert vinyl playlist drummer festival symphony remix "
    "acoustic lyrics tour",
    "sports": "football match highlights transfer league goal coach marathon tennis final "
    "injury season playoff stadium",
    "finance": "stock market interest rates inflation ETF dividend crypto savings mortgage budget "
    "earnings bond portfolio",
    "tech": "smartphone camera battery review laptop keyboard monitor headphones chip release "
    "update privacy app",
}
FILLER = "the a of for and with in on how best new why top guide review vs"
TYPES = ["view", "click", "read", "like", "search", "share", "purchase", "dislike", "skip"]
T0_MS = 1_750_000_000_000


# -- synthetic data -----------------------------------------------------------------------------


def make_texts(
    rng: np.random.Generator, n: int, words: tuple[int, int], seen: set[str]
) -> list[tuple[str, str]]:
    """``n`` new unique ``(text, topic)`` pairs of ``words`` (min, max) words; updates ``seen``."""
    names = list(TOPICS)
    vocab = {t: TOPICS[t].split() for t in names}
    filler = FILLER.split()
    out: list[tuple[str, str]] = []
    while len(out) < n:
        topic = names[int(rng.integers(len(names)))]
        k = int(rng.integers(words[0], words[1] + 1))
        picks = [
            vocab[topic][int(rng.integers(len(vocab[topic])))]
            if rng.random() < 0.75
            else filler[int(rng.integers(len(filler)))]
            for _ in range(k)
        ]
        text = " ".join(picks)
        if text not in seen:
            seen.add(text)
            out.append((text, topic))
    return out


def zipf_sampler(rng: np.random.Generator, n: int, s: float) -> Callable[[int], np.ndarray]:
    """Draws indices in [0, n) with P(rank k) ∝ k^-s; ranks shuffled so popularity ≠ index."""
    p = np.arange(1, n + 1, dtype=np.float64) ** -s
    p /= p.sum()
    perm = rng.permutation(n)
    return lambda size: perm[rng.choice(n, size=size, p=p)]


class JobMaker:
    """Cuts an event stream into one UpdateJob per user per step, numbering ``n`` per user."""

    def __init__(self) -> None:
        self.n: Counter[str] = Counter()
        self.clock = T0_MS

    def jobs(self, rows: Sequence[tuple[str, str, str | None, str | None, str]]) -> list[UpdateJob]:
        """rows = (user, type, item_id, text, tag) in arrival order → jobs (one per user)."""
        now = int(time.time() * 1000)
        by_user: dict[str, list[JobEvent]] = defaultdict(list)
        for user, etype, item_id, text, tag in rows:
            self.n[user] += 1
            self.clock += 1_000
            n = self.n[user]
            by_user[user].append(
                JobEvent(n, f"{user}-e{n}", etype, DEFAULT_TYPE_WEIGHTS[etype], self.clock,
                         item_id, text, (tag,))
            )  # fmt: skip
        return [UpdateJob(u, tuple(evs), now, now) for u, evs in by_user.items()]


def text_rows(texts: Sequence[tuple[str, str]], users: int) -> list[tuple[Any, ...]]:
    """Text-only events spread round-robin over ``users`` users (so a step touches all of them)."""
    return [
        (f"user-{i % users}", TYPES[i % len(TYPES)], None, text, tag)
        for i, (text, tag) in enumerate(texts)
    ]


# -- timing helpers -----------------------------------------------------------------------------


class Timers:
    """Wraps methods of one object instance to add up the seconds spent in them, by label."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self._wrapped: list[tuple[object, str]] = []

    def wrap(self, obj: object, method: str, label: str) -> None:
        inner = getattr(obj, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start

        setattr(obj, method, timed)
        self._wrapped.append((obj, method))

    def unwrap(self) -> None:
        """Remove the instance attributes again (the class's methods show through)."""
        for obj, method in self._wrapped:
            delattr(obj, method)
        self._wrapped.clear()


EMBEDDED: Final = "embedded"
#: qdrant-client's pure-Python local mode, the store before the embedded engine: a reference to
#: compare with, never the runtime (see models/store/client.py).
LOCAL_MODE: Final = "local-mode"
LOCAL_MODE_MEMORY: Final = "local-mode-memory"
QDRANT_CHOICES: Final = (EMBEDDED, LOCAL_MODE, LOCAL_MODE_MEMORY)


def qdrant_choice(value: str) -> str:
    """``--qdrant``: one of :data:`QDRANT_CHOICES` or a Qdrant server's URL."""
    if value in QDRANT_CHOICES or value.startswith(("http://", "https://")):
        return value
    renamed = {"disk": LOCAL_MODE, "memory": LOCAL_MODE_MEMORY}  # before the embedded engine
    hint = f" ('{value}' was local mode, now '{renamed[value]}')" if value in renamed else ""
    raise argparse.ArgumentTypeError(
        f"expected {', '.join(QDRANT_CHOICES)} or an http(s):// URL, got {value!r}{hint}"
    )


def is_url(qdrant: str) -> bool:
    return qdrant not in QDRANT_CHOICES


def open_store(qdrant: str, path: Path, encoder: Encoder, spec: InterestSpec) -> InterestStore:
    """``embedded``: Qdrant's engine in this process, in the folder ``path`` (the default
    deployment); ``local-mode`` / ``local-mode-memory``: qdrant-client's local mode in ``path``
    / in memory (the previous store, for comparison); a URL: a Qdrant server, in fresh
    collections that :func:`close_store` drops."""
    dim = encoder.dimension
    if qdrant == EMBEDDED:
        store = InterestStore(EdgeBackend(path), dimension=dim)
    elif qdrant == LOCAL_MODE:
        path.mkdir(parents=True, exist_ok=True)
        store = InterestStore(ClientBackend.local(str(path)), dimension=dim)
    elif qdrant == LOCAL_MODE_MEMORY:
        store = InterestStore(ClientBackend.local(":memory:"), dimension=dim)
    else:
        tag = uuid.uuid4().hex[:8]
        store = InterestStore(
            ClientBackend.connect(qdrant, None, 30),
            dimension=dim,
            users_collection=f"bench_users_{tag}",
            items_collection=f"bench_items_{tag}",
        )
    store.ensure_collections(dim, spec.vector_names())
    return store


def close_store(qdrant: str, store: InterestStore) -> None:
    if is_url(qdrant) and isinstance(store.backend, ClientBackend):
        store.backend.client.delete_collection(store.users_collection)
        store.backend.client.delete_collection(store.items_collection)
    store.close()


# -- 1. throughput ------------------------------------------------------------------------------


def fold_timers(store: InterestStore, encoder: Encoder) -> Timers:
    """Time the fold's I/O and model calls; whatever is left of a step is the interest math."""
    timers = Timers()
    timers.wrap(store, "get_users", "qdrant users retrieve")
    timers.wrap(store, "get_item_vectors", "qdrant items retrieve")
    timers.wrap(store, "upsert_users", "qdrant users upsert")
    timers.wrap(encoder, "encode", "model (Encoder.encode)")
    return timers


def shares(timers: Timers, total_s: float) -> dict[str, float]:
    out = {k: v / total_s for k, v in timers.seconds.most_common()}
    out["interest math + payload (rest)"] = 1 - sum(out.values())
    return out


def bench_throughput(encoder: Encoder, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Per step: encode the chunk alone, then fold it as jobs (cold cache both times, order
    alternating), so a noisy neighbour slows both halves of a pair alike."""
    rng = np.random.default_rng(args.seed)
    seen: set[str] = set()
    step = args.step_texts
    warm = make_texts(rng, step, (6, 16), seen)
    texts = make_texts(rng, step * args.steps, (6, 16), seen)
    chunks = [texts[i : i + step] for i in range(0, len(texts), step)]
    users = max(1, step // args.events_per_job)
    spec = InterestSpec()
    store = open_store(args.qdrant, work / "throughput", encoder, spec)
    folder = JobFolder(store, encoder, spec)
    encode = encoder.encode  # the unwrapped method: encoder-alone time stays out of the timers
    timers = fold_timers(store, encoder)
    maker = JobMaker()

    def timed(which: str, chunk: list[tuple[str, str]]) -> float:
        encoder.clear_cache()
        before = encoder.embedded_total
        start = time.perf_counter()
        if which == "encoder":
            encode([t for t, _ in chunk])
        else:
            folder.apply(maker.jobs(text_rows(chunk, users)))
        elapsed = time.perf_counter() - start
        assert encoder.embedded_total - before == len(chunk), f"{which} cached some texts"
        return elapsed

    # Warm-up (not timed): torch kernels, Qdrant collections, and the users (later steps read
    # and continue real stored state, as the worker does).
    encode([t for t, _ in warm])
    folder.apply(maker.jobs(text_rows(warm, users)))
    timers.seconds.clear()
    enc: list[list[float]] = [[] for _ in chunks]
    fold: list[list[float]] = [[] for _ in chunks]
    for r in range(args.repeats):
        for i, chunk in enumerate(chunks):
            for which in ("encoder", "fold") if (r + i) % 2 == 0 else ("fold", "encoder"):
                (enc if which == "encoder" else fold)[i].append(timed(which, chunk))
        enc_r, fold_r = sum(e[r] for e in enc), sum(f[r] for f in fold)
        print(
            f"  repeat {r + 1}/{args.repeats}: encoder {len(texts) / enc_r:7.1f} texts/s,"
            f" fold {len(texts) / fold_r:7.1f} texts/s",
            flush=True,
        )
    timers.unwrap()
    close_store(args.qdrant, store)
    # Best of the repeats per step estimates the undisturbed cost on a shared machine (as timeit
    # does); the mean over everything is reported too.
    best_enc, best_fold = sum(map(min, enc)), sum(map(min, fold))
    all_enc, all_fold = sum(map(sum, enc)), sum(map(sum, fold))
    pair_ratios = [
        e / f for es, fs in zip(enc, fold, strict=True) for e, f in zip(es, fs, strict=True)
    ]
    return {
        "texts": len(texts),
        "step_texts": step,
        "users_per_step": users,
        "events_per_job": args.events_per_job,
        "repeats": args.repeats,
        "encoder_s": enc,
        "fold_s": fold,
        "encoder_texts_per_s": len(texts) / best_enc,
        "fold_texts_per_s": len(texts) / best_fold,
        "ratio": best_enc / best_fold,
        "ratio_mean_based": all_enc / all_fold,
        "pair_ratio_min_median_max": [
            min(pair_ratios),
            float(np.median(pair_ratios)),
            max(pair_ratios),
        ],
        "fold_ms_per_step": 1000 * best_fold / len(chunks),
        "fold_breakdown_share": shares(timers, all_fold),
        # Within the fold itself: model time / step time. Robust to noise that hits whole steps,
        # and equal to the ratio above when the model runs as fast in the fold as alone.
        "model_share_of_fold": timers.seconds["model (Encoder.encode)"] / all_fold,
    }


# -- 1c. the real embed worker through Kafka ----------------------------------------------------


def port_open(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host or "127.0.0.1", int(port))) == 0


async def bench_kafka(encoder: Encoder, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The real EmbedWorker (its own model and embedded Qdrant) on jobs published to a fresh topic,
    timed from the first publish to the last job folded; the encoder alone is timed on the same
    texts just before and after, and the ratio is taken against their mean."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    from models.settings import QdrantSettings
    from streams.embed.worker import EmbedWorker
    from streams.settings import EmbedSettings, KafkaSettings, TopicSettings
    from streams.topics import ensure_topics

    kafka = KafkaSettings(bootstrap=args.kafka_bootstrap)
    # The worker opens its own store from settings: the embedded engine in a folder (whatever
    # --qdrant names for the other parts, local mode included) unless a server URL is given.
    url = args.qdrant if is_url(args.qdrant) else None
    tag = uuid.uuid4().hex[:8]
    qdrant = QdrantSettings(
        path=work / "kafka-qdrant",
        url=url,
        users_collection=f"bench_users_{tag}",
        items_collection=f"bench_items_{tag}",
    )
    topics = TopicSettings(updates=f"bench.updates.{tag}", dlq=f"bench.dlq.{tag}")
    rng = np.random.default_rng(args.seed + 1)
    seen: set[str] = set()
    step, users = args.step_texts, max(1, args.step_texts // args.events_per_job)
    maker = JobMaker()
    warm_jobs = maker.jobs(text_rows(make_texts(rng, step, (6, 16), seen), users))
    texts = make_texts(rng, step * args.steps, (6, 16), seen)
    jobs = [
        j
        for i in range(0, len(texts), step)
        for j in maker.jobs(text_rows(texts[i : i + step], users))
    ]
    worker = EmbedWorker(
        kafka,
        topics,
        EmbedSettings(group_id=f"bench-{tag}", max_batch_jobs=len(warm_jobs)),
        ModelSettings(
            name=args.model,
            device=args.device,
            precision=args.precision,
            batch_size=args.batch_size,
        ),
        qdrant,
    )
    await ensure_topics(kafka, topics, (topics.updates, topics.dlq))
    producer = AIOKafkaProducer(**kafka.client_kwargs(), acks="all", linger_ms=5)
    await producer.start()

    async def publish(batch: list[UpdateJob]) -> None:
        for job in batch:
            await producer.send(topics.updates, job.to_json(), key=job.user_id.encode())
        await producer.flush()

    async def wait_jobs(n: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while worker.stats.jobs < n:
            if task.done():
                task.result()
            if time.monotonic() > deadline:
                raise TimeoutError(f"embed worker did {worker.stats.jobs}/{n} jobs")
            await asyncio.sleep(0.01)

    def encoder_alone() -> float:
        encoder.clear_cache()
        start = time.perf_counter()
        for i in range(0, len(texts), step):
            encoder.encode([t for t, _ in texts[i : i + step]])
        return time.perf_counter() - start

    enc_before = encoder_alone()
    task = asyncio.create_task(worker.serve())
    try:
        await publish(warm_jobs)  # model load + group join + warm-up, not timed
        await wait_jobs(len(warm_jobs), 180)
        start, batches = time.perf_counter(), worker.stats.batches
        await publish(jobs)
        await wait_jobs(len(warm_jobs) + len(jobs), 600)
        elapsed = time.perf_counter() - start
    finally:
        worker.should_exit = True
        await asyncio.wait_for(task, 60)
        await producer.stop()
        admin = AIOKafkaAdminClient(**kafka.client_kwargs())
        await admin.start()
        try:
            await admin.delete_topics([topics.updates, topics.dlq])
        finally:
            await admin.close()
        if url:
            client = QdrantClient(url=url)
            client.delete_collection(qdrant.users_collection)
            client.delete_collection(qdrant.items_collection)
            client.close()
    enc_s = (enc_before + encoder_alone()) / 2
    rate = len(texts) / elapsed
    return {
        "bootstrap": args.kafka_bootstrap,
        "qdrant": url or EMBEDDED,
        "partitions": topics.partitions,
        "jobs": len(jobs),
        "texts": len(texts),
        "batches": worker.stats.batches - batches,
        "seconds": elapsed,
        "worker_texts_per_s": rate,
        "encoder_texts_per_s": len(texts) / enc_s,
        "ratio_vs_encoder": enc_s / elapsed,
    }


# -- 2. embeds per event on a Zipf catalog workload ---------------------------------------------


def bench_zipf(
    encoder: Encoder, args: argparse.Namespace, work: Path, items_loaded: bool
) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed + 2)  # the same workload for both scenarios
    seen: set[str] = set()
    catalog = make_texts(rng, args.catalog, (6, 14), seen)
    pool = make_texts(rng, args.text_pool, (2, 6), seen)
    pick_item = zipf_sampler(rng, len(catalog), args.zipf_s)
    pick_text = zipf_sampler(rng, len(pool), args.zipf_s)
    n = args.events
    text_only = rng.random(n) < args.text_only
    item_idx, text_idx = pick_item(n), pick_text(n)
    user_idx = rng.integers(args.users, size=n)
    rows: list[tuple[Any, ...]] = []
    for i in range(n):
        user = f"user-{user_idx[i]}"
        if text_only[i]:
            text, tag = pool[text_idx[i]]
            rows.append((user, "search", None, text, tag))
        else:
            text, tag = catalog[item_idx[i]]
            rows.append((user, TYPES[i % 4], f"item-{item_idx[i]}", text, tag))

    spec = InterestSpec()
    name = "items_loaded" if items_loaded else "no_items"
    store = open_store(args.qdrant, work / name, encoder, spec)
    load_s = None
    if items_loaded:
        start = time.perf_counter()
        load_items(
            [CatalogItem(f"item-{i}", t, {"tags": [g]}) for i, (t, g) in enumerate(catalog)],
            encoder,
            store,
            batch_size=max(256, args.batch_size),
        )
        load_s = time.perf_counter() - start
    encoder.clear_cache()  # events start cold whatever loading the catalog embedded
    folder = JobFolder(store, encoder, spec)
    timers = fold_timers(store, encoder)
    maker = JobMaker()
    steps = []
    start = time.perf_counter()
    for i in range(0, n, args.step_events):
        chunk = rows[i : i + args.step_events]
        before = encoder.embedded_total
        report = folder.apply(maker.jobs(chunk))
        steps.append(
            (len(chunk), encoder.embedded_total - before, report.skipped["no_vector"], report.jobs)
        )  # fmt: skip
    elapsed = time.perf_counter() - start
    timers.unwrap()
    close_store(args.qdrant, store)

    events = np.array([s[0] for s in steps])
    embeds = np.array([s[1] for s in steps])
    done = np.cumsum(events)

    def rate(lo: float, hi: float) -> float:
        sel = (done > lo * n) & (done - events < hi * n)
        return float(embeds[sel].sum() / max(1, events[sel].sum()))

    return {
        "scenario": name,
        "events": n,
        "events_per_s": n / elapsed,
        "ms_per_step": 1000 * elapsed / len(steps),
        "jobs_per_step": sum(s[3] for s in steps) / len(steps),
        "catalog_load_items_per_s": args.catalog / load_s if load_s else None,
        "embeds": int(embeds.sum()),
        "no_vector": int(sum(s[2] for s in steps)),
        "first_10pct": rate(0.0, 0.1),
        "warm_last_50pct": rate(0.5, 1.0),
        "overall": float(embeds.sum() / n),
        "by_decile": [round(rate(d / 10, (d + 1) / 10), 4) for d in range(10)],
        "fold_breakdown_share": shares(timers, elapsed),
    }


# -- main ---------------------------------------------------------------------------------------


def machine_info(encoder: Encoder) -> dict[str, Any]:
    import torch

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip
    except OSError:
        commit = ""
    return {
        "command": shlex.join([sys.executable, "-m", "bench.embed_bench", *sys.argv[1:]]),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sentence_transformers": version("sentence-transformers"),
        "qdrant_client": version("qdrant-client"),
        "qdrant_edge": version("qdrant-edge-py"),
        "device": encoder.device,
        "gpu": torch.cuda.get_device_name(0) if encoder.device.startswith("cuda") else None,
        "precision": encoder.precision,
        "model": encoder.model_name,
        "model_batch_size": encoder.batch_size,
        "git_commit": commit,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes: < 2 min on 2 CPU cores")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--batch-size", type=int, default=64, help="texts per model forward pass")
    p.add_argument(
        "--model",
        help="model name or local directory (default: INTEREST_MODEL_NAME, else the bundled one)",
    )
    p.add_argument("--step-texts", type=int, help="texts per fold step / encode call")
    p.add_argument("--steps", type=int, help="fold steps per repeat (texts = step-texts x steps)")
    p.add_argument("--repeats", type=int, help="times each step is timed (encoder, fold alternate)")
    p.add_argument("--events-per-job", type=int, default=4)
    p.add_argument("--catalog", type=int, default=2000, help="items in the Zipf catalog")
    p.add_argument("--text-pool", type=int, default=1000, help="distinct text-only event texts")
    p.add_argument("--events", type=int, help="events in the Zipf workload")
    p.add_argument("--step-events", type=int, default=256, help="events per fold step (Zipf)")
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--zipf-s", type=float, default=1.1)
    p.add_argument("--text-only", type=float, default=0.2, help="share of text-only events")
    p.add_argument("--kafka", choices=["auto", "on", "off"], default="auto")
    p.add_argument(
        "--kafka-bootstrap",
        default=os.environ.get("INTEREST_KAFKA_BOOTSTRAP", "127.0.0.1:29092"),
    )
    p.add_argument(
        "--qdrant",
        type=qdrant_choice,
        default=EMBEDDED,
        help="embedded (Qdrant's engine in-process in a temp folder: the default deployment), "
        "local-mode / local-mode-memory (qdrant-client's local mode in a folder / in memory: the "
        "previous store, for comparison) or a Qdrant server's URL (throw-away collections)",
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, help="JSON path (default bench/results/embed_bench*.json)")
    args = p.parse_args(argv)
    sizes = {"step_texts": (256, 512), "steps": (2, 4), "repeats": (3, 3), "events": (4000, 16000)}
    for key, (quick, full) in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ticks = cpu_ticks()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.model = args.model or ModelSettings().name
        encoder = Encoder(
            args.model, device=args.device, precision=args.precision, batch_size=args.batch_size
        ).load()
    except ModelLoadError as exc:
        raise SystemExit(f"embed_bench: {exc}") from None
    info = machine_info(encoder)
    print(
        f"embed bench on {info['device']} ({info['precision']}, batch {args.batch_size}), "
        f"{info['cpu_affinity']} CPUs, torch {info['torch']}, load {info['loadavg_start']}"
    )
    results: dict[str, Any] = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="embed-bench-") as tmp:
        work = Path(tmp)
        print(
            f"1. throughput: encoder alone vs JobFolder.apply (Qdrant: {args.qdrant})", flush=True
        )
        results["throughput"] = bench_throughput(encoder, args, work)
        if args.kafka != "off" and port_open(args.kafka_bootstrap):
            print(f"1c. EmbedWorker end to end via Kafka at {args.kafka_bootstrap}", flush=True)
            # A fresh topic and group log transient leader/coordinator errors while they settle.
            logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
            results["kafka"] = asyncio.run(bench_kafka(encoder, args, work))
        elif args.kafka == "on":
            raise SystemExit(f"no Kafka broker at {args.kafka_bootstrap}")
        else:
            why = "--kafka off" if args.kafka == "off" else f"no broker at {args.kafka_bootstrap}"
            results["kafka"] = {"skipped": why}
        print("2. embeds per event, Zipf catalog workload", flush=True)
        results["zipf"] = [bench_zipf(encoder, args, work, loaded) for loaded in (True, False)]
    results["machine"]["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    results["machine"]["cpu_share_during_run"] = cpu_share(ticks, cpu_ticks())
    report(results)
    suffix = ("_quick" if args.quick else "") + ("" if info["device"] == "cpu" else "_gpu")
    out = args.out or ROOT / "bench" / "results" / f"embed_bench{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


def report(results: dict[str, Any]) -> None:
    tp, kafka, zipf = results["throughput"], results["kafka"], results["zipf"]
    lo, med, hi = tp["pair_ratio_min_median_max"]
    cpu = results["machine"]["cpu_share_during_run"]
    if cpu:
        print(
            f"\nCPU during the run (all cores, all processes): busy {100 * cpu['busy']:.0f} %,"
            f" idle {100 * cpu['idle']:.0f} %, stolen by the hypervisor {100 * cpu['steal']:.0f} %"
        )
    print(
        f"\n== texts/s, unique texts, cold cache, {tp['step_texts']} texts/step "
        f"({tp['users_per_step']} users x {tp['events_per_job']} events) =="
    )
    print(f"{'path':<36}{'texts/s':>9}{'encoder':>9}{'ratio':>8}  note")
    print(
        f"{'embed step (JobFolder.apply)':<36}{tp['fold_texts_per_s']:>9.1f}"
        f"{tp['encoder_texts_per_s']:>9.1f}{tp['ratio']:>8.3f}"
        f"  best of {tp['repeats']}/step; mean-based {tp['ratio_mean_based']:.3f},"
        f" pairs min/med/max {lo:.2f}/{med:.2f}/{hi:.2f}"
    )
    print(
        f"{'  model share of the fold step':<36}{'':>18}{tp['model_share_of_fold']:>8.3f}"
        "  model time / fold time, inside the same steps"
    )
    if "worker_texts_per_s" in kafka:
        print(
            f"{'embed worker via Kafka (EmbedWorker)':<36}{kafka['worker_texts_per_s']:>9.1f}"
            f"{kafka['encoder_texts_per_s']:>9.1f}{kafka['ratio_vs_encoder']:>8.3f}"
            f"  {kafka['texts']} texts, {kafka['batches']} batches, {kafka['partitions']} partns"
        )
    else:
        print(f"{'embed worker via Kafka (EmbedWorker)':<36}{'skipped':>9}  {kafka['skipped']}")

    print("\n== embeds per event, Zipf catalog workload (target < 0.1 once warm) ==")
    print(
        f"{'scenario':<14}{'events':>7}{'first10%':>9}{'warm50%':>8}{'overall':>8}{'no_vec':>7}"
        f"{'ev/s':>6}{'jobs/step':>10}  by decile"
    )
    for z in zipf:
        deciles = " ".join(f"{d:.3f}" for d in z["by_decile"])
        print(
            f"{z['scenario']:<14}{z['events']:>7}{z['first_10pct']:>9.3f}"
            f"{z['warm_last_50pct']:>8.3f}{z['overall']:>8.3f}{z['no_vector']:>7}"
            f"{z['events_per_s']:>6.0f}{z['jobs_per_step']:>10.0f}  {deciles}"
        )

    columns = [("throughput", tp), *((z["scenario"], z) for z in zipf)]
    print("\n== where a fold step's time goes (share of JobFolder.apply) ==")
    print(f"{'':<32}" + "".join(f"{name:>14}" for name, _ in columns))
    ms = [tp["fold_ms_per_step"], *(z["ms_per_step"] for z in zipf)]
    print(f"{'ms per step':<32}" + "".join(f"{m:>14.0f}" for m in ms))
    parts = dict.fromkeys(k for _, c in columns for k in c["fold_breakdown_share"])
    for part in parts:
        cells = [100 * c["fold_breakdown_share"].get(part, 0.0) for _, c in columns]
        print(f"{part:<32}" + "".join(f"{v:>13.1f}%" for v in cells))


if __name__ == "__main__":
    raise SystemExit(main())
