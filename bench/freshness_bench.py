"""Whole-path freshness: event published -> its user's vector readable in the store (issue 14.4).

The real pipeline on this machine, on fresh topics of the broker at ``INTEREST_KAFKA_BOOTSTRAP``:
one stream worker (``python -m streams.stream.app``, started as ``bench.stream_bench`` starts it),
one embed worker (:class:`streams.embed.worker.EmbedWorker` with the settings ``interest-stream
embed`` uses, in its own process, with its HTTP API) and the default store: embedded Qdrant
(qdrant-edge) in a temporary folder, owned by the embed worker.

What is measured, per event. The bench publishes events at a steady ``--rate`` for ``--seconds``
(the user mix of ``bench.stream_bench``'s latency phase: one event in ten to five heavy users,
the rest over ``--users`` users). Each event's ``ts`` is the producer's wall clock when it hands
the event to Kafka. The embed worker runs with one observer added (:class:`ObservedEmbedWorker`;
its code path is otherwise untouched): for each batch it notes the wall clock when the poll
returned the batch and when ``JobFolder.apply`` -- retrieve, embed, interest math and the users
upsert -- returned on the store thread, and writes one line per event of the batch's jobs:
``ts``, the job's ``first_seen_ms`` and ``emitted_ms``, poll time, upsert-returned time. Right
after that stamp it reads one user of the batch back through the store and checks that its
stored ``seq`` covers the batch (counted as ``readback``): the embedded engine's upsert is
synchronous, so "upsert returned" is "readable by the API". Latency = upsert returned - ``ts``
(same machine, same clock); an event counts once, at its first write. The split: stream side =
``emitted_ms - ts`` (Kafka hop, the worker's batching and its age flush, ~1 s by design);
embed side = upsert returned - ``emitted_ms`` (the job's Kafka hop and wait for the embed loop:
``queue``; then the fold: ``fold``).

A warm-up (``--warmup`` events to other users) goes through first, so the model, the faust
group and the store's collections are up before the clock runs. After the last send the bench
waits until every event is seen (or nothing new arrives for ``--drain-idle`` s): a pipeline that
falls behind shows as a backlog in the tail, never as missing numbers. The embed worker's own
``interest_update_freshness_seconds`` histogram (per job, from ``first_seen_ms`` to the upsert)
is scraped before and after the run and reported next to it as a cross-check.

Prints a table and writes ``bench/results/freshness_bench[_quick].json``: the histogram (bucket
upper edges in ms and counts), p50/p90/p99/max, events sent and seen, the achieved rate, the
stage split, latency per 5 s of sending, CPU used by each process and machine info.

    python -m bench.freshness_bench --quick   # 20 s at 2,000 events/s, 1-2 min in all
    python -m bench.freshness_bench           # 60 s at 2,000 events/s
    python -m bench.freshness_bench --rate 1000 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/freshness_bench.py` without an installed package
    sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition  # noqa: E402

from bench.freshness import (  # noqa: E402
    EventTiming,
    achieved_rate,
    first_by_id,
    histogram,
    histogram_percentile,
    over_time,
    parse_lines,
    prometheus_histogram,
    prometheus_samples,
    stage_split,
    steady_rate,
    summarize,
    user_for,
)
from bench.machine import cpu_share, cpu_ticks  # noqa: E402
from bench.processes import HttpProcess, free_port, worker_env  # noqa: E402
from bench.stream_bench import WorkerRun, event, fresh_topics, machine_info  # noqa: E402
from models.config import CoreSettings  # noqa: E402
from models.settings import ModelSettings, QdrantSettings  # noqa: E402
from models.store import InterestStore  # noqa: E402
from streams.broker import LocalBroker  # noqa: E402
from streams.contracts.jobs import UpdateJob  # noqa: E402
from streams.embed.fold import FoldReport  # noqa: E402
from streams.embed.worker import EmbedWorker  # noqa: E402
from streams.settings import (  # noqa: E402
    ApiSettings,
    BrokerSettings,
    EmbedSettings,
    KafkaSettings,
    TopicSettings,
)
from streams.topics import ensure_topics  # noqa: E402

TARGET_P99_MS = 1500.0
TARGET_RATE = 2000.0
FRESHNESS_METRIC = "interest_update_freshness_seconds"


# -- the embed worker, observed (runs in its own process) ------------------------------------


class ObservedEmbedWorker(EmbedWorker):
    """The embed worker, writing one :class:`EventTiming` line per event it folds."""

    def __init__(self, *args: Any, observations: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.observations = observations
        self._out = observations.open("a", buffering=1 << 16)
        self._polled_ms = 0.0
        self.readback = {"ok": 0, "stale": 0}

    async def process(self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        self._polled_ms = time.time() * 1000
        await super().process(batch)

    async def _apply_with_retry(
        self, jobs: list[UpdateJob], forget: list[str]
    ) -> FoldReport | None:
        folder, store = self._folder, self._store
        assert folder is not None and store is not None
        done = [0.0]

        def apply() -> FoldReport:
            report = folder.apply(jobs, forget=forget)
            done[0] = time.time() * 1000  # the upsert returned: the vectors are readable
            if jobs:  # a batch of delete jobs only has nothing to read back
                self._read_back(store, jobs[-1])
            return report

        report = await self._retry(apply, f"{len(jobs)} jobs")
        if report is not None:
            self._write(jobs, done[0])
        return report

    def _read_back(self, store: InterestStore, job: UpdateJob) -> None:
        """On the store thread: does a read see the write that just returned?"""
        point = store.get_users([job.user_id]).get(job.user_id)
        seq = int(point.payload.get("seq", 0)) if point is not None else 0
        self.readback["ok" if seq >= job.seq else "stale"] += 1

    def _write(self, jobs: Sequence[UpdateJob], done_ms: float) -> None:
        for job in jobs:
            for e in job.events:
                self._out.write(
                    EventTiming(
                        e.event_id, e.ts_ms, job.first_seen_ms, job.emitted_ms,
                        self._polled_ms, done_ms, len(jobs),
                    ).to_line()
                )  # fmt: skip
        self._out.flush()

    async def shutdown(self) -> None:
        await super().shutdown()
        self._out.close()
        self.observations.with_suffix(".readback.json").write_text(json.dumps(self.readback))


def embed_child(observations: Path) -> int:
    """``--embed-child``: the embed worker as ``interest-stream embed`` builds it, observed."""
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ObservedEmbedWorker(
        KafkaSettings(), TopicSettings(), EmbedSettings(), ModelSettings(), QdrantSettings(),
        api=ApiSettings(), observations=observations,
    ).run()  # fmt: skip
    return 0


# -- the parent's view of it ------------------------------------------------------------------


class EmbedRun(HttpProcess):
    """The observed embed worker on the bench's topics: own group, store folder and API port."""

    def __init__(self, kafka: KafkaSettings, topics: TopicSettings, work: Path) -> None:
        self.observations = work / "observations.tsv"
        self._offset = 0
        port = free_port()
        env = worker_env(
            kafka,
            topics,
            INTEREST_EMBED_GROUP_ID=f"{topics.events.split('.')[0]}-embed",
            INTEREST_QDRANT_PATH=str(work / "qdrant"),
            INTEREST_API_PORT=str(port),
        )
        command = [sys.executable, "-m", "bench.freshness_bench", "--embed-child"]
        super().__init__("embed", [*command, str(self.observations)], env, port, work)

    def metrics(self) -> dict[str, float]:
        return prometheus_samples(self.get("/metrics", timeout=10).decode())

    def poll(self) -> list[EventTiming]:
        """The timings written since the last call."""
        new, self._offset = read_new(self.observations, self._offset)
        return new

    def stop(self) -> dict[str, Any]:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=120)
        readback_path = self.observations.with_suffix(".readback.json")
        readback = json.loads(readback_path.read_text()) if readback_path.exists() else None
        return {"rc": rc, "seconds": time.monotonic() - t0, "readback": readback}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def read_new(path: Path, offset: int) -> tuple[list[EventTiming], int]:
    """The timings in the complete lines of ``path`` from byte ``offset`` on, and the offset to
    read from next time (a line still being written is left for then)."""
    if not path.exists():
        return [], offset
    with path.open("rb") as fh:
        fh.seek(offset)
        chunk = fh.read()
    complete = chunk[: chunk.rfind(b"\n") + 1]
    return parse_lines(complete.decode()), offset + len(complete)


def wait_seen(
    embed: EmbedRun, wanted: Sequence[str], idle_s: float, cap_s: float, alive: Callable[[], None]
) -> dict[str, EventTiming]:
    """Poll the observations until every ``wanted`` event is seen, nothing new came for
    ``idle_s``, or ``cap_s`` passed; return the first sighting of each seen event."""
    t0 = last_progress = time.monotonic()
    keep = frozenset(wanted)
    seen: dict[str, EventTiming] = {}
    while True:
        embed.check_alive()
        alive()
        count = len(seen)
        for eid, t in first_by_id(embed.poll(), keep).items():
            if eid not in seen or t.done < seen[eid].done:
                seen[eid] = t
        now = time.monotonic()
        if len(seen) > count:
            last_progress = now
        if len(seen) >= len(keep) or now - last_progress > idle_s or now - t0 > cap_s:
            return seen
        time.sleep(0.5)


# -- publishing -------------------------------------------------------------------------------


async def publish_paced(
    kafka: KafkaSettings, topic: str, plan: Sequence[tuple[str, str]], rate: float
) -> tuple[list[float], float]:
    """Send ``plan`` ((event id, user) pairs) at ``rate`` events/s on a fixed schedule (behind it,
    sends catch up); each event's ``ts`` is the wall clock at its send. Returns the send times (ms)
    and how far behind the schedule the sender fell at worst (ms)."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=1)
    await producer.start()
    sent: list[float] = []
    behind = 0.0
    t0 = time.monotonic()
    try:
        for i, (eid, user) in enumerate(plan):
            ts = int(time.time() * 1000)
            await producer.send(topic, event(eid, user, ts, i), key=user.encode())
            sent.append(ts)
            ahead = t0 + (i + 1) / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            else:
                behind = max(behind, -ahead * 1000)
        await producer.flush()
    finally:
        await producer.stop()
    return sent, behind


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of ``pid`` (this process when None); NaN once it is gone."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_pid(kafka: KafkaSettings) -> int | None:
    """The local broker's pid when ``interest-stream broker`` (same settings) runs the one the
    bench talks to; its CPU is part of the whole path's cost on this machine."""
    broker = LocalBroker(BrokerSettings(), CoreSettings())
    status = broker.status()
    return status.pid if status.running and status.bootstrap == kafka.bootstrap else None


# -- the run ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="20 s of sending, 2,000 users (~1 min)")
    p.add_argument("--rate", type=float, default=TARGET_RATE, help="events/s while measuring")
    p.add_argument("--seconds", type=float, default=60, help="how long to send at --rate")
    p.add_argument("--users", type=int, default=10_000, help="users besides the 5 heavy ones")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--warmup", type=int, default=400, help="events sent first, not measured")
    p.add_argument("--drain-idle", type=float, default=20, help="give up after s without news")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, store)")
    p.add_argument("--out", type=Path, help="JSON path (default bench/results/freshness_bench*)")
    p.add_argument("--embed-child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.users = 20, 2_000
    return args


class Pipeline:
    """Both workers on fresh topics, and what the bench does with them."""

    def __init__(self, kafka: KafkaSettings, args: argparse.Namespace, work: Path) -> None:
        self.kafka, self.args, self.work = kafka, args, work
        base = fresh_topics(args, "fresh")
        prefix = base.events.split(".")[0]
        self.topics = base.model_copy(update={"popularity": f"{prefix}.items.popularity"})
        asyncio.run(ensure_topics(kafka, self.topics))
        # WorkerRun passes this process's environment on: the stream worker's popularity topic
        # and a free metrics port (never the default one another worker may hold).
        os.environ["INTEREST_TOPICS_POPULARITY"] = self.topics.popularity
        os.environ["INTEREST_STREAM_METRICS_PORT"] = "0"
        self.embed: EmbedRun | None = None
        self.stream: WorkerRun | None = None
        self.app_id = f"{prefix}-stream"

    def start(self) -> dict[str, float]:
        self.embed = EmbedRun(self.kafka, self.topics, self.work)
        print("embed worker: loading the model, opening the store ...", flush=True)
        embed_ready = self.embed.wait_ready(300)
        self.stream = WorkerRun(self.kafka, self.topics, self.app_id, self.work)
        print(f"warm-up: {self.args.warmup} events through both workers ...", flush=True)
        t0 = time.monotonic()
        plan = [(f"w{i}", f"warm-{i % 50}") for i in range(self.args.warmup)]
        asyncio.run(publish_paced(self.kafka, self.topics.events, plan, 200))
        seen = self.wait([eid for eid, _ in plan], idle_s=240)
        if len(seen) < len(plan):
            raise SystemExit(f"warm-up: {len(seen)} of {len(plan)} events came through")
        return {"embed_ready_s": embed_ready, "warmup_s": time.monotonic() - t0}

    def wait(self, wanted: Sequence[str], idle_s: float) -> dict[str, EventTiming]:
        assert self.embed is not None
        cap_s = max(300, 3 * self.args.seconds)
        return wait_seen(self.embed, wanted, idle_s, cap_s, alive=self.check_stream)

    def check_stream(self) -> None:
        if self.stream is not None and self.stream.proc.poll() is not None:
            tail = self.stream.log_path.read_text(errors="replace")[-2000:]
            raise SystemExit(f"the stream worker exited ({self.stream.proc.returncode}):\n{tail}")

    def measure(self) -> dict[str, Any]:
        """The steady phase, then the drain; timings, send stats, CPU and embed metrics."""
        assert self.embed is not None and self.stream is not None
        args = self.args
        total = int(args.rate * args.seconds)
        plan = [(f"f{i}", user_for(i, args.users)) for i in range(total)]
        pids = {"stream_worker": self.stream.proc.pid, "embed_worker": self.embed.proc.pid}
        broker = broker_pid(self.kafka)
        if broker is not None:
            pids["broker"] = broker
        before, ticks, cpu0 = self.embed.metrics(), cpu_ticks(), self._cpu(pids)
        t0 = time.monotonic()
        print(
            f"sending {total:,} events at {args.rate:,.0f}/s for {args.seconds:.0f} s", flush=True
        )
        sent_ms, behind_ms = asyncio.run(
            publish_paced(self.kafka, self.topics.events, plan, args.rate)
        )
        send_s = time.monotonic() - t0
        cpu1, busy = self._cpu(pids), cpu_share(ticks, cpu_ticks())
        print("waiting for the last vectors ...", flush=True)
        seen = self.wait([eid for eid, _ in plan], idle_s=args.drain_idle)
        after, cpu2 = self.embed.metrics(), self._cpu(pids)
        return {
            "sent_ms": sent_ms,
            "seen": seen,
            "send_s": send_s,
            "behind_ms": behind_ms,
            "drain_s": time.monotonic() - t0 - send_s,
            "embed_metrics": (before, after),
            "cores_while_sending": {k: (cpu1[k] - cpu0[k]) / send_s for k in cpu0},
            "cpu_ms_per_event": {k: (cpu2[k] - cpu0[k]) * 1000 / max(len(seen), 1) for k in cpu0},
            "machine_cpu_while_sending": busy,
        }

    @staticmethod
    def _cpu(pids: Mapping[str, int]) -> dict[str, float]:
        return {"bench_producer": cpu_seconds(), **{k: cpu_seconds(p) for k, p in pids.items()}}

    def stop(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.stream is not None:
            out["stream_worker"] = self.stream.stop()
        if self.embed is not None:
            out["embed_worker"] = self.embed.stop()
        return out

    def close(self) -> None:
        for run in (self.stream, self.embed):
            if run is not None:
                run.close()


def embed_metrics(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, Any]:
    """The embed worker's own counters over the measured run (warm-up excluded)."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    fresh = prometheus_histogram(before, after, FRESHNESS_METRIC)
    batches = delta("interest_embed_batch_size_count")
    return {
        "freshness_per_job_s": fresh,
        "freshness_per_job_p50_le_s": histogram_percentile(fresh["le"], fresh["counts"], 50),
        "freshness_per_job_p99_le_s": histogram_percentile(fresh["le"], fresh["counts"], 99),
        "jobs": delta("interest_embed_jobs_total"),
        "events_per_job": delta("interest_embed_events_applied_total")
        / max(delta("interest_embed_jobs_total"), 1),
        "batches": batches,
        "jobs_per_batch": delta("interest_embed_batch_size_sum") / max(batches, 1),
        "batch_seconds_mean": delta("interest_embed_batch_seconds_sum") / max(batches, 1),
        "upsert_seconds_mean": delta("interest_qdrant_upsert_seconds_sum")
        / max(delta("interest_qdrant_upsert_seconds_count"), 1),
        "events_applied": delta("interest_embed_events_applied_total"),
        "texts_embedded": delta("interest_embed_texts_embedded_total"),
        "cache_hits": delta("interest_embed_cache_hits_total"),
    }


def summarise_run(m: Mapping[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The JSON's numbers from :meth:`Pipeline.measure`'s raw material."""
    seen: dict[str, EventTiming] = m["seen"]
    timings = list(seen.values())
    totals = [t.total for t in timings]
    sent_ms: list[float] = m["sent_ms"]
    latency = summarize(totals)
    rate = achieved_rate(sent_ms)
    delivered = steady_rate([t.done for t in timings])
    return {
        "events": {
            "sent": len(sent_ms),
            "seen": len(seen),
            "missing": len(sent_ms) - len(seen),
            "rate_requested": args.rate,
            "rate_achieved": rate,
            "send_seconds": m["send_s"],
            "producer_max_behind_schedule_ms": m["behind_ms"],
            "drain_seconds_after_last_send": m["drain_s"],
            "rate_delivered": delivered,
        },
        "latency_ms": latency,
        "histogram": histogram(totals),
        "stages_ms": stage_split(timings),
        "over_time": over_time(timings, min(sent_ms, default=0.0), 5.0),
        "embed_metrics": embed_metrics(*m["embed_metrics"]),
        "cpu": {
            "cores_while_sending": m["cores_while_sending"],
            # CPU time from the first send until the last vector, per event seen: what the path
            # costs however busy the machine was; x rate / 1000 = cores it needs at that rate.
            "cpu_ms_per_event": m["cpu_ms_per_event"],
            "cores_needed_at_rate": sum(m["cpu_ms_per_event"].values()) * args.rate / 1000,
            "machine_while_sending": m["machine_cpu_while_sending"],
        },
        "target": {
            "p99_ms": TARGET_P99_MS,
            "at_rate": TARGET_RATE,
            "p99_met": latency["p99"] <= TARGET_P99_MS,
            "rate_sent": rate >= 0.95 * TARGET_RATE,
            "kept_up": len(seen) == len(sent_ms) and delivered >= 0.9 * rate,
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.embed_child:
        return embed_child(args.embed_child)
    # A SIGTERM (what ``timeout`` sends) unwinds like an exception, so the workers this
    # process started are stopped in ``finally`` instead of running on as orphans.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    kafka = KafkaSettings()
    info = machine_info()
    info["command"] = shlex.join([sys.executable, "-m", "bench.freshness_bench", *sys.argv[1:]])
    results: dict[str, Any] = {
        "what": "event published (its ts, the producer's clock at send) -> the embed worker's "
        "users upsert of its job returned (vector readable); ms, one machine, one clock",
        "machine": {
            **info,
            "kafka": kafka.bootstrap,
            "store": "embedded (qdrant-edge)",
            "loadavg_at_start": os.getloadavg(),
        },
        "args": {k: str(v) for k, v in vars(args).items() if k != "embed_child"},
    }
    work = Path(tempfile.mkdtemp(prefix="freshness-bench-"))
    pipeline = Pipeline(kafka, args, work)
    ok = False
    try:
        results["startup"] = pipeline.start()
        raw = pipeline.measure()
        results["stop"] = pipeline.stop()
        ok = True
    finally:
        pipeline.close()
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work folder kept: {work}")
    results.update(summarise_run(raw, args))
    results["readback"] = results["stop"]["embed_worker"]["readback"]
    report(results)
    suffix = "_quick" if args.quick else ""
    out = args.out or ROOT / "bench" / "results" / f"freshness_bench{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


def _ms(s: Mapping[str, float]) -> str:
    return f"{s['p50']:,.0f} / {s['p90']:,.0f} / {s['p99']:,.0f} / {s['max']:,.0f} ms"


def report(r: Mapping[str, Any]) -> None:
    """The table: latency and its split first, then the load the run really put on."""
    ev, lat, st, em = r["events"], r["latency_ms"], r["stages_ms"], r["embed_metrics"]
    share, tail, tg = st["share_of_mean"], st["share_of_mean_slowest_1pct"], r["target"]
    cores, cpe = r["cpu"]["cores_while_sending"], r["cpu"]["cpu_ms_per_event"]
    busy = r["cpu"]["machine_while_sending"] or {"busy": float("nan"), "steal": float("nan")}
    rb = r["readback"] or {"ok": "?", "stale": "?"}
    rows = [
        ("events sent / seen", f"{ev['sent']:,} / {ev['seen']:,}"),
        ("rate requested / achieved (events/s)",
         f"{ev['rate_requested']:,.0f} / {ev['rate_achieved']:,.0f}"),
        ("published -> vector p50 / p90 / p99 / max", _ms(lat)),
        ("  stream side (-> job emitted)", _ms(st["stream"])),
        ("  embed side (job -> vector)", _ms(st["embed"])),
        ("    job waiting (Kafka, embed loop)", _ms(st["queue"])),
        ("    fold (retrieve, embed, upsert)", _ms(st["fold"])),
        ("share of the mean: stream / embed", f"{share['stream']:.0%} / {share['embed']:.0%}"),
        ("  among the slowest 1 %", f"{tail['stream']:.0%} / {tail['embed']:.0%}"),
        ("embed worker's metric, per job (s)",
         f"p50 <= {em['freshness_per_job_p50_le_s']}, p99 <= {em['freshness_per_job_p99_le_s']}"),
        ("delivered: vectors written per s (5-95 %)", f"{ev['rate_delivered']:,.0f}"),
        ("events per job / jobs per embed batch",
         f"{em['events_per_job']:.2f} / {em['jobs_per_batch']:.0f}"),
        ("embed batch / upsert mean (ms)",
         f"{em['batch_seconds_mean'] * 1000:.0f} / {em['upsert_seconds_mean'] * 1000:.0f}"),
        ("CPU ms per event: stream / embed / bench / broker",
         " / ".join(f"{cpe.get(k, math.nan):.2f}" for k in
                    ("stream_worker", "embed_worker", "bench_producer", "broker"))),
        (f"cores the path needs at {ev['rate_requested']:,.0f}/s (has)",
         f"{r['cpu']['cores_needed_at_rate']:.2f} ({r['machine']['cpus']})"),
        ("cores: stream / embed / producer / broker",
         " / ".join(f"{cores.get(k, math.nan):.2f}" for k in
                    ("stream_worker", "embed_worker", "bench_producer", "broker"))),
        ("machine busy / steal while sending (load at start)",
         f"{busy['busy']:.0%} / {busy['steal']:.0%} ({r['machine']['loadavg_at_start'][0]:.1f})"),
        ("read back after upsert: ok / stale", f"{rb['ok']} / {rb['stale']}"),
        (f"target p99 <= {tg['p99_ms']:,.0f} ms at {tg['at_rate']:,.0f}/s",
         f"p99 {'met' if tg['p99_met'] else 'NOT met'} at {ev['rate_achieved']:,.0f}/s sent"
         f"{'' if tg['rate_sent'] else ' (below the target rate)'}; "
         f"pipeline {'kept up' if tg['kept_up'] else 'fell behind'}"),
    ]  # fmt: skip
    print()
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print("\nlatency by 5 s of sending, p50 / p99 ms:")
    for w in r["over_time"]:
        print(f"  {w['from_s']:>4.0f} s  {w['events']:>6,}  {w['p50']:>7,.0f} / {w['p99']:>7,.0f}")


if __name__ == "__main__":
    raise SystemExit(main())
