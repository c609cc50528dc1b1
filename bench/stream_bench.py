"""Stream-worker benchmark: one worker vs a bare aiokafka consumer, latency, state, memory.

What it measures (issue 3, "Measure"), on the broker at ``INTEREST_KAFKA_BOOTSTRAP``:

1. Throughput. ``--users`` x ``--per-user`` events are produced to a fresh events topic first.
   A bare ``AIOKafkaConsumer`` reads them all (first record to last); then one stream worker
   (``python -m streams.stream.app``, the same code as ``interest-stream stream``) processes the
   same topic from the start. The worker's rate is taken from its jobs: events carried by the jobs
   emitted between the 5 % and the 95 % marks, over that span (so neither the worker's start nor
   the final age-flush tail counts). The headline is worker / bare consumer.
2. State and memory at ``--users`` users: the worker's resident memory (VmRSS) once it has
   caught up; bytes per user of the stored state (the latest changelog value of every user, at
   rest after the flush) and the mean over every state write (with pending events).
3. Latency. With the worker caught up (and still holding every user's state), events are
   produced at ``--rate`` events/s for ``--seconds`` s: most to ``--lat-users`` users, a tenth to
   5 heavy users. Latency of an event = wall time its job was read back from interest.updates -
   the event's ``ts`` (the producer's wall clock at send). p50/p99 overall and heavy users alone.

Prints a table and writes JSON (with machine info and the command) to ``bench/results/``.

    python -m bench.stream_bench --quick     # 10k users, about 1 min on 2 CPU cores
    python -m bench.stream_bench             # 100k users, a few minutes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/stream_bench.py` without an installed package
    sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402

from streams.contracts.jobs import UpdateJob  # noqa: E402
from streams.settings import KafkaSettings, TopicSettings  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402

TEXTS = [
    "deep learning for image generation",
    "GAN use cases in design",
    "hiking boots for wet weather",
    "espresso grinder burr size",
    "transformer attention explained",
    "budget travel in Portugal",
]


def event(eid: str, user: str, ts: int, i: int) -> bytes:
    return json.dumps(
        {
            "event_id": eid,
            "user_id": user,
            "type": ("view", "click", "like", "read")[i % 4],
            "ts": ts,
            "item_id": f"item-{i % 5000}",
            "text": TEXTS[i % len(TEXTS)],
            "tags": ["ml"] if i % 3 == 0 else [],
        },
        separators=(",", ":"),
    ).encode()


async def produce_bulk(
    kafka: KafkaSettings, topic: str, users: int, per_user: int, *, bursts: bool = False
) -> float:
    """users x per_user events: round-robin over users (every event alone in its job: the worst
    case), or ``bursts`` -- each user's events back to back. Returns events/s of producing."""
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap, linger_ms=20, max_batch_size=256 * 1024
    )
    await producer.start()
    t0 = time.perf_counter()
    now = int(time.time() * 1000)
    try:
        futures = []
        for i in range(users * per_user):
            user = f"user-{i // per_user}" if bursts else f"user-{i % users}"
            fut = await producer.send(topic, event(f"b{i}", user, now, i), key=user.encode())
            futures.append(fut)
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return users * per_user / (time.perf_counter() - t0)


async def bare_consumer(kafka: KafkaSettings, topic: str, expect: int) -> dict[str, float]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        group_id=f"bench-bare-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    n = 0
    first = last = 0.0
    try:
        while n < expect:
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                if not n:
                    first = time.perf_counter()
                n += len(records)
                last = time.perf_counter()
    finally:
        await consumer.stop()
    return {"events": n, "seconds": last - first, "events_per_s": n / max(last - first, 1e-9)}


async def caught_up(kafka: KafkaSettings, group: str, topic: str) -> tuple[int, int]:
    """(committed, end) offsets of ``group`` on ``topic``, summed over partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        end = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group)
        done = sum(committed[tp].offset for tp in tps if tp in committed)
        return done, sum(end.values())
    finally:
        await consumer.stop()
        await admin.close()


async def read_all(
    kafka: KafkaSettings, topic: str, *, idle_s: float = 3.0
) -> list[tuple[float, bytes | None, bytes | None]]:
    """Everything on ``topic`` until nothing new arrives for ``idle_s``: (read time, key, value)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        group_id=f"bench-read-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[tuple[float, bytes | None, bytes | None]] = []
    quiet_since = time.monotonic()
    try:
        while time.monotonic() - quiet_since < idle_s:
            got = await consumer.getmany(timeout_ms=300, max_records=10_000)
            now = time.time()
            for records in got.values():
                out.extend((now, r.key, r.value) for r in records)
            if got:
                quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return out


def faust_floor(bootstrap: str, topic: str, expect: int) -> None:
    """Child process: the least a faust agent costs -- consume ``expect`` events the way the
    stream worker does (noack stream, feeder task, queue, ack after the batch), do nothing else.
    Prints one JSON line."""
    import faust

    app = faust.App(
        f"bench-floor-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        datadir=tempfile.mkdtemp(prefix="bench-floor-"),
        key_serializer="raw",
        value_serializer="raw",
    )
    counts = {"n": 0}
    first: list[float] = []

    @app.agent(app.topic(topic, key_type=bytes, value_type=bytes))
    async def floor(stream: Any) -> None:
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=2000)
        manual = stream.noack()

        async def feed() -> None:
            async for e in manual.events():
                await queue.put(e)

        feeder = asyncio.ensure_future(feed())
        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < 1000:
                batch.append(queue.get_nowait())
            if not first:
                first.append(time.perf_counter())
            for e in batch:
                await manual.ack(e)
            counts["n"] += len(batch)
            if counts["n"] >= expect:
                seconds = time.perf_counter() - first[0]
                line = {"events": counts["n"], "events_per_s": counts["n"] / seconds}
                os.write(1, (json.dumps(line) + "\n").encode())
                feeder.cancel()
                os._exit(0)

    class Quiet(faust.Worker):
        def on_setup_root_logger(self, logger: Any, level: int) -> None:
            self.spinner = None
            super().on_setup_root_logger(logger, level)

    Quiet(app, loglevel="error", quiet=True, redirect_stdouts=False).execute_from_commandline()


def run_faust_floor(kafka: KafkaSettings, topic: str, expect: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.stream_bench", "--faust-floor", topic, str(expect)],
        env={**os.environ, "INTEREST_KAFKA_BOOTSTRAP": kafka.bootstrap},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            result: dict[str, float] = json.loads(line)
            return result
    raise SystemExit(f"faust floor failed: {out.stderr[-2000:]}")


def changelog_writes(kafka: KafkaSettings, app_id: str, table: str) -> int:
    """Records in a table's changelog topic (every write, before compaction)."""
    return len(asyncio.run(read_all(kafka, f"{app_id}-{table}-changelog")))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def latency_phase(
    kafka: KafkaSettings, topics: TopicSettings, args: argparse.Namespace
) -> dict[str, Any]:
    """Steady load; a reader in the same loop timestamps each job as it arrives."""
    jobs: list[tuple[float, UpdateJob]] = []
    stop = asyncio.Event()
    reader = AIOKafkaConsumer(
        topics.updates,
        bootstrap_servers=kafka.bootstrap,
        group_id=f"bench-lat-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="latest",
    )
    await reader.start()
    # Make sure the reader has its position before any latency event is sent.
    while not reader.assignment():
        await reader.getmany(timeout_ms=200)
    for tp in reader.assignment():
        await reader.position(tp)

    async def read() -> None:
        while not stop.is_set():
            got = await reader.getmany(timeout_ms=100)
            now = time.time()
            for records in got.values():
                jobs.extend((now, UpdateJob.from_json(r.value)) for r in records)

    reading = asyncio.ensure_future(read())
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=1)
    await producer.start()
    sent: dict[str, str] = {}
    heavy = [f"heavy-{i}" for i in range(5)]
    total = int(args.rate * args.seconds)
    t0 = time.monotonic()
    for i in range(total):
        user = heavy[(i // 10) % 5] if i % 10 == 0 else f"lat-{(i * 7919) % args.lat_users}"
        eid = f"l{i}"
        sent[eid] = user
        await producer.send(
            topics.events, event(eid, user, int(time.time() * 1000), i), key=user.encode()
        )
        ahead = t0 + (i + 1) / args.rate - time.monotonic()
        if ahead > 0:
            await asyncio.sleep(ahead)
    await producer.flush()
    await producer.stop()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if len({e.event_id for _, j in jobs for e in j.events if e.event_id in sent}) >= total:
            break
        await asyncio.sleep(0.2)
    stop.set()
    await reading
    await reader.stop()
    lat_all: list[float] = []
    lat_heavy: list[float] = []
    lat_worker: list[float] = []
    seen: set[str] = set()
    for read_at, job in jobs:
        for e in job.events:
            if e.event_id not in sent or e.event_id in seen:
                continue
            seen.add(e.event_id)
            ms = read_at * 1000 - e.ts_ms
            lat_all.append(ms)
            lat_worker.append(job.emitted_ms - e.ts_ms)
            if job.user_id.startswith("heavy-"):
                lat_heavy.append(ms)
    heavy_jobs = [j for _, j in jobs if j.user_id.startswith("heavy-")]
    return {
        "sent": total,
        "received": len(seen),
        "rate": args.rate,
        "seconds": args.seconds,
        "p50_ms": pct(lat_all, 50),
        "p99_ms": pct(lat_all, 99),
        "max_ms": max(lat_all, default=float("nan")),
        "worker_p50_ms": pct(lat_worker, 50),
        "worker_p99_ms": pct(lat_worker, 99),
        "heavy_p50_ms": pct(lat_heavy, 50),
        "heavy_p99_ms": pct(lat_heavy, 99),
        "heavy_events_per_s_per_user": args.rate / 10 / 5,
        "heavy_jobs_per_s_per_user": len(heavy_jobs) / 5 / args.seconds,
    }


def machine_info() -> dict[str, Any]:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "?"

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "faust-streaming": version("faust-streaming"),
        "aiokafka": version("aiokafka"),
        "command": shlex.join([sys.executable, "-m", "bench.stream_bench", *sys.argv[1:]]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="10k users, shorter latency run")
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--per-user", type=int, default=3)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--rate", type=float, default=1_000, help="latency phase events/s")
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--lat-users", type=int, default=10_000)
    p.add_argument("--skip-bursts", action="store_true", help="skip the per-user bursts run")
    p.add_argument("--out", type=Path, help="JSON path (default bench/results/stream_bench*.json)")
    p.add_argument("--faust-floor", nargs=2, metavar=("TOPIC", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.users, args.seconds, args.lat_users = 10_000, 8, 2_000
    return args


class WorkerRun:
    """One stream worker process on fresh topics (``python -m streams.stream.app``)."""

    def __init__(self, kafka: KafkaSettings, topics: TopicSettings, app_id: str, work: Path):
        self.kafka, self.topics, self.app_id = kafka, topics, app_id
        env = {
            **os.environ,
            "INTEREST_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "INTEREST_TOPICS_EVENTS": topics.events,
            "INTEREST_TOPICS_DLQ": topics.dlq,
            "INTEREST_TOPICS_UPDATES": topics.updates,
            "INTEREST_TOPICS_PARTITIONS": str(topics.partitions),
            "INTEREST_STREAM_APP_ID": app_id,
            "INTEREST_STREAM_REPARTITION_TOPIC": f"{topics.events}.repartition",
            "INTEREST_STREAM_DATA_DIR": str(work / app_id),
        }
        self.log_path = work / f"{app_id}.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.stream.app"], env=env, stdout=self.log, stderr=self.log
        )

    def wait_caught_up(self, n: int) -> float:
        """Seconds from start until the group committed every offset (polled each second)."""
        t0 = time.time()
        done, end = 0, n
        while done < end:
            time.sleep(1.0)
            if self.proc.poll() is not None:
                raise SystemExit(f"the worker exited ({self.proc.returncode}); see {self.log_path}")
            done, end = asyncio.run(caught_up(self.kafka, self.app_id, self.topics.events))
        time.sleep(2.0)  # the age flush of the last users
        return time.time() - t0

    def throughput(self) -> dict[str, float]:
        """events/s from the jobs: events emitted between the 5 % and 95 % marks / that span."""
        jobs = [
            UpdateJob.from_json(v)
            for _, _, v in asyncio.run(read_all(self.kafka, self.topics.updates))
            if v is not None
        ]
        emitted = sorted(t for j in jobs for t in [j.emitted_ms] * len(j.events))
        lo, hi = emitted[int(0.05 * len(emitted))], emitted[int(0.95 * len(emitted)) - 1]
        return {
            "events": len(emitted),
            "jobs": len(jobs),
            "events_per_job": len(emitted) / max(len(jobs), 1),
            "events_per_s": 0.9 * len(emitted) / max((hi - lo) / 1000, 1e-9),
        }

    def stop(self) -> dict[str, float]:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=120)
        return {"rc": rc, "seconds": time.monotonic() - t0}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.log.close()


def fresh_topics(args: argparse.Namespace, name: str) -> TopicSettings:
    prefix = f"bench{uuid.uuid4().hex[:6]}-{name}"
    return TopicSettings(
        events=f"{prefix}.events",
        dlq=f"{prefix}.events.dlq",
        updates=f"{prefix}.updates",
        partitions=args.partitions,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    kafka = KafkaSettings()
    if args.faust_floor:
        faust_floor(kafka.bootstrap, args.faust_floor[0], int(args.faust_floor[1]))
        return 0
    results: dict[str, Any] = {
        "machine": {**machine_info(), "kafka": kafka.bootstrap},
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    n = args.users * args.per_user
    work = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    topics = fresh_topics(args, "rr")
    asyncio.run(ensure_topics(kafka, topics))
    print(f"producing {n} events for {args.users} users to {topics.events}", flush=True)
    results["produce_events_per_s"] = asyncio.run(
        produce_bulk(kafka, topics.events, args.users, args.per_user)
    )
    print("bare aiokafka consumer ...", flush=True)
    results["bare"] = asyncio.run(bare_consumer(kafka, topics.events, n))
    print("faust floor (an agent that only acks) ...", flush=True)
    floors = [run_faust_floor(kafka, topics.events, n)]

    print("stream worker, round-robin users (one event per job) ...", flush=True)
    app_id = f"{topics.events.split('.')[0]}-stream"
    worker = WorkerRun(kafka, topics, app_id, work)
    try:
        caught_up_s = worker.wait_caught_up(n)
        rss_caught_up = rss_mb(worker.proc.pid)
        results["worker"] = {**worker.throughput(), "wall_s_start_to_caught_up": caught_up_s}
        print("latency ...", flush=True)
        results["latency"] = asyncio.run(latency_phase(kafka, topics, args))
        rss_after = rss_mb(worker.proc.pid)
        results["stop"] = worker.stop()
    finally:
        worker.close()
    # The machine is shared: the floor is measured before and after the worker, and the
    # worker is compared with their mean (both kept in the JSON).
    print("faust floor again ...", flush=True)
    floors.append(run_faust_floor(kafka, topics.events, n))
    results["faust_floor_runs"] = floors
    results["faust_floor"] = {
        "events": n,
        "events_per_s": sum(f["events_per_s"] for f in floors) / len(floors),
    }
    bare = results["bare"]["events_per_s"]
    results["ratio_worker_vs_bare"] = results["worker"]["events_per_s"] / bare
    results["ratio_floor_vs_bare"] = results["faust_floor"]["events_per_s"] / bare
    results["ratio_worker_vs_floor"] = (
        results["worker"]["events_per_s"] / results["faust_floor"]["events_per_s"]
    )

    changelog = asyncio.run(read_all(kafka, f"{app_id}-user-state-changelog"))
    latest = {k: v for _, k, v in changelog if v is not None}
    bulk = [v for k, v in latest.items() if k and k.startswith(b"user-")]
    results["state"] = {
        "users": len(bulk),
        "bytes_per_user_at_rest": sum(map(len, bulk)) / max(len(bulk), 1),
        "bytes_per_write_mean": sum(len(v) for _, _, v in changelog if v) / max(len(changelog), 1),
        "changelog_writes": len(changelog),
        "writes_per_event": len(changelog) / max(n + results["latency"]["sent"], 1),
        "rss_mb_caught_up": rss_caught_up,
        "rss_mb_after_latency": rss_after,
        "users_total": len(latest),
        "item_changelog_writes_per_event": changelog_writes(kafka, app_id, "item-popularity")
        / max(n + results["latency"]["sent"], 1),
    }
    if not args.skip_bursts:
        print(f"stream worker, each user's {args.per_user} events back to back ...", flush=True)
        topics_b = fresh_topics(args, "burst")
        asyncio.run(ensure_topics(kafka, topics_b))
        asyncio.run(produce_bulk(kafka, topics_b.events, args.users, args.per_user, bursts=True))
        worker = WorkerRun(kafka, topics_b, f"{topics_b.events.split('.')[0]}-stream", work)
        try:
            caught_up_s = worker.wait_caught_up(n)
            results["worker_bursts"] = {
                **worker.throughput(),
                "wall_s_start_to_caught_up": caught_up_s,
            }
            worker.stop()
        finally:
            worker.close()
        app_b = f"{topics_b.events.split('.')[0]}-stream"
        results["worker_bursts"]["changelog_writes_per_event"] = (
            changelog_writes(kafka, app_b, "user-state") / n
        )
        results["ratio_bursts_vs_floor"] = (
            results["worker_bursts"]["events_per_s"] / results["faust_floor"]["events_per_s"]
        )
    report(results)
    suffix = "_quick" if args.quick else ""
    out = args.out or ROOT / "bench" / "results" / f"stream_bench{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


def report(r: dict[str, Any]) -> None:
    w, b, fl, lat, st = r["worker"], r["bare"], r["faust_floor"], r["latency"], r["state"]
    rows = [
        ("bare aiokafka consumer", f"{b['events_per_s']:,.0f} events/s"),
        (
            "faust floor (agent that only acks)",
            f"{fl['events_per_s']:,.0f} events/s (runs: "
            + ", ".join(f"{f['events_per_s']:,.0f}" for f in r.get("faust_floor_runs", [fl]))
            + ")",
        ),
        ("stream worker, 1 event per job", f"{w['events_per_s']:,.0f} events/s"),
    ]
    if "worker_bursts" in r:
        wb = r["worker_bursts"]
        rows.append(
            (
                "stream worker, per-user bursts",
                f"{wb['events_per_s']:,.0f} events/s ({wb['events_per_job']:.1f} events/job)",
            )
        )
        rows.append(("ratio bursts / faust floor", f"{r['ratio_bursts_vs_floor']:.2f}"))
        rows.append(("  changelog writes per event", f"{wb['changelog_writes_per_event']:.2f}"))
    rows += [
        (
            "ratio worker / bare (floor / bare)",
            (f"{r['ratio_worker_vs_bare']:.4f} ({r['ratio_floor_vs_bare']:.4f})"),
        ),
        ("ratio worker / faust floor", f"{r['ratio_worker_vs_floor']:.2f}"),
        ("event->job latency p50 / p99", f"{lat['p50_ms']:.0f} / {lat['p99_ms']:.0f} ms"),
        (
            "  in the worker p50 / p99",
            (f"{lat['worker_p50_ms']:.0f} / {lat['worker_p99_ms']:.0f} ms"),
        ),
        ("  heavy users p50 / p99", f"{lat['heavy_p50_ms']:.0f} / {lat['heavy_p99_ms']:.0f} ms"),
        (
            "  heavy user jobs/s at events/s",
            f"{lat['heavy_jobs_per_s_per_user']:.2f} at {lat['heavy_events_per_s_per_user']:.0f}",
        ),
        ("latency events received / sent", f"{lat['received']} / {lat['sent']}"),
        ("state bytes per user (at rest)", f"{st['bytes_per_user_at_rest']:.0f}"),
        ("state bytes per write (mean)", f"{st['bytes_per_write_mean']:.0f}"),
        ("changelog writes per event", f"{st['writes_per_event']:.2f}"),
        ("item changelog writes per event", f"{st['item_changelog_writes_per_event']:.2f}"),
        (f"worker RSS at {st['users_total']:,} users", f"{st['rss_mb_after_latency']:.0f} MB"),
        ("graceful stop (SIGTERM)", f"rc {r['stop']['rc']} in {r['stop']['seconds']:.1f} s"),
    ]
    print()
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    raise SystemExit(main())
