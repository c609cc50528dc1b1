"""Graceful behaviour under overload (issue 18.5): a 10x burst the embed side cannot keep up with.

The real pipeline on this machine, on a broker of its own (``--broker-port``, default 29411, data
in a temporary folder; ``--bootstrap`` uses a running one instead): one stream worker
(``interest-stream stream``) and one embed worker (``interest-stream embed``, embedded Qdrant in
a temporary folder) as separate processes, exactly as deployed. The bench publishes:

1. ``steady``: ``--rate`` events/s (default 100) for ``--steady`` s;
2. ``burst``: ten times that (``--burst-factor``) for ``--burst`` s, plus, at its start, a block
   of ``--hot-events`` events of one user sent back to back (a client replaying its history):
   the only load that makes one user's pending events pass ``pending_cap`` between two flushes;
3. ``recover``: ``--rate`` again until both groups' lag is back to the steady level, then
   ``--tail`` s more (at most ``--max-recover`` s).

On this 2-core machine the embed worker folds ~500 events/s (``bench/results/
freshness_bench_quick.json``), so a 1,000 events/s burst leaves it behind: its backlog on
``interest.updates`` grows for the whole burst and is worked off afterwards.

Every second the bench samples: the RSS of each worker (``/proc/PID/status``), both workers'
``/metrics`` (what Prometheus would scrape, the consumer lag each worker exports included) and
consumer lag of both groups read by :class:`streams.lag.LagCollector` itself (the code behind
``interest-stream lag``; 1 s apart, finer than the workers' own 5 s refresh). It reports:

- stream worker RSS: steady median vs peak during the burst and the recovery, and how much it
  grew in the burst's second half (a bounded worker is flat while the embed backlog grows); the
  limits that bound it (``StreamSettings``: pending cap and bytes, folding, dedupe ring, batch
  size, RocksDB cache and memtables) and the stream counters (``interest_stream_folded_total``);
- lag on ``interest.updates`` (the embed group) and on the events topic (the stream group): peak
  records and seconds, and the time to drain after the burst;
- ``--write-promtool-test [PATH]``: a promtool unit test (default
  ``deploy/prometheus/alerts_overload_test.yml``) whose input series are the workers' scraped
  series of this run, with what the alert rules must say about them (see :func:`promtool_test`);
  ``--from-series FILE`` writes it from a saved run without running the bench again.

Prints a table, writes ``bench/results/overload[_quick].json`` (summary and the 1 s samples of
RSS and lag) and ``bench/results/overload_series[_quick].json`` (the scraped series).

    python -m bench.overload --quick                       # ~4 min: 20 s steady, 30 s burst
    python -m bench.overload --write-promtool-test         # ~6 min: 60 s steady, 60 s burst
    python -m bench.overload --from-series bench/results/overload_series.json --write-promtool-test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/overload.py` without an installed package
    sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaProducer  # noqa: E402

from bench.freshness import prometheus_samples, user_for  # noqa: E402
from bench.freshness_bench import free_port  # noqa: E402
from bench.machine import cpu_share, cpu_ticks  # noqa: E402
from bench.stream_bench import event, machine_info  # noqa: E402
from streams.lag import LagCollector  # noqa: E402
from streams.settings import KafkaSettings, TopicSettings  # noqa: E402
from streams.stream.settings import StreamSettings  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402

PROMTOOL_TEST = ROOT / "deploy" / "prometheus" / "alerts_overload_test.yml"
#: What the generated promtool test calls the groups and targets (deploy/prometheus's defaults).
DEPLOYED = {
    "stream": {"job": "interest-stream", "instance": "127.0.0.1:8766", "worker": "stream"},
    "embed": {"job": "interest-embed", "instance": "127.0.0.1:8765", "worker": "embed"},
}
#: Room above the steady RSS for what a burst holds besides the memtables: batches of
#: ``batch_max`` records, the consumer's fetch buffers, the producer's queue.
BATCH_SLACK_MB = 64
DEPLOYED_GROUPS = {"stream": "interest-stream-worker", "embed": "interest-embed"}
#: Scraped families kept for the promtool test: those deploy/prometheus/alerts.yml reads.
ALERT_SERIES = (
    "interest_consumer_group_lag_sum",
    "interest_consumer_group_lag_seconds_max",
    "interest_consumer_group_status",
    "interest_consumer_lag_read_ok",
    "interest_update_freshness_seconds_bucket",
    "interest_worker_consuming",
    "interest_stream_records_total",
    "interest_stream_dlq_total",
    "interest_embed_invalid_jobs_total",
    "interest_qdrant_errors_total",
    "interest_stream_consumer_repairs_total",
)
#: Counters also kept for the report.
REPORT_SERIES = (
    "interest_stream_events_total",
    "interest_stream_folded_total",
    "interest_stream_jobs_total",
    "interest_stream_job_events_total",
    "interest_embed_jobs_total",
    "interest_embed_events_applied_total",
    "interest_consumer_group_lag_max",
)


# -- the workers ------------------------------------------------------------------------------


class Worker:
    """One ``interest-stream stream|embed`` process with its HTTP port (``/metrics``,
    ``/healthz``); the console script's module is run so the bench needs no installed script."""

    def __init__(self, kind: str, env: Mapping[str, str], port: int, work: Path) -> None:
        self.kind, self.port = kind, port
        self.log_path = work / f"{kind}.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", kind],
            env=dict(env),
            cwd=ROOT,
            stdout=self.log,
            stderr=self.log,
        )

    def get(self, path: str, timeout: float = 5.0) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
            body: bytes = r.read()
            return body

    def wait_ready(self, timeout_s: float) -> float:
        """Seconds until ``/healthz`` says consuming."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            self.check_alive()
            try:
                if json.loads(self.get("/healthz")).get("consuming"):
                    return time.monotonic() - t0
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        raise SystemExit(f"the {self.kind} worker did not come up in {timeout_s:.0f} s")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise SystemExit(f"the {self.kind} worker exited ({self.proc.returncode}):\n{tail}")

    def scrape(self) -> dict[str, float] | None:
        """The kept samples of ``/metrics``, or None when the scrape fails (``up`` = 0)."""
        try:
            text = self.get("/metrics", timeout=5.0).decode()
        except OSError:
            return None
        keep = ALERT_SERIES + REPORT_SERIES
        return {k: v for k, v in prometheus_samples(text).items() if k.split("{")[0] in keep}

    def memory_mb(self) -> tuple[float, float]:
        """(RSS, peak RSS) in MiB from ``/proc/PID/status``; NaN once the process is gone."""
        try:
            lines = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        except OSError:
            return math.nan, math.nan
        kb = {ln.split(":")[0]: int(ln.split()[1]) for ln in lines if ln.startswith("Vm")}
        return kb.get("VmRSS", 0) / 1024, kb.get("VmHWM", 0) / 1024

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def child_env(kafka: KafkaSettings, topics: TopicSettings, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        "INTEREST_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "INTEREST_TOPICS_EVENTS": topics.events,
        "INTEREST_TOPICS_DLQ": topics.dlq,
        "INTEREST_TOPICS_UPDATES": topics.updates,
        "INTEREST_TOPICS_POPULARITY": topics.popularity,
        "INTEREST_TOPICS_PARTITIONS": str(topics.partitions),
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "TRANSFORMERS_OFFLINE": os.environ.get("TRANSFORMERS_OFFLINE", "1"),
        **extra,
    }
    env.pop("INTEREST_QDRANT_URL", None)  # the default deployment: the embedded store
    return env


# -- sampling ---------------------------------------------------------------------------------


def lag_of(collector: LagCollector) -> dict[str, dict[str, Any]]:
    """Per group: lag sum/max, oldest record's age, members and status from the last read."""
    out: dict[str, dict[str, Any]] = {}
    names = {
        "interest_consumer_group_lag_sum": "lag_sum",
        "interest_consumer_group_lag_max": "lag_max",
        "interest_consumer_group_lag_seconds_max": "seconds_max",
        "interest_consumer_group_members": "members",
    }
    for family in collector.collect():
        for s in family.samples:
            if s.name in names:
                out.setdefault(s.labels["group"], {})[names[s.name]] = s.value
    for group, verdict in collector.verdicts.items():
        out.setdefault(group, {})["status"] = str(verdict.status)
    return out


class Sampler(threading.Thread):
    """Every ``interval`` s: RSS of both workers, both ``/metrics``, lag of both groups."""

    def __init__(
        self, kafka: KafkaSettings, groups: Mapping[str, str], workers: Mapping[str, Worker]
    ) -> None:
        super().__init__(daemon=True)
        self.kafka, self.groups, self.workers = kafka, dict(groups), dict(workers)
        self.interval = 1.0
        self.phase = "warmup"
        self.samples: list[dict[str, Any]] = []
        self.series: list[dict[str, dict[str, float] | None]] = []
        self.done = threading.Event()
        self.failed: BaseException | None = None
        #: Per group: lag (records) at or below which it counts as drained (set after steady).
        self.thresholds: dict[str, float] = {}
        self.drained_at: float | None = None
        self.pool = ThreadPoolExecutor(max_workers=len(self.workers))

    def run(self) -> None:
        loop = asyncio.new_event_loop()
        collector = LagCollector(
            self.kafka, list(self.groups.values()), min_interval_s=0.0, timeout_s=3.0
        )
        try:
            t_next = time.monotonic()
            while not self.done.is_set():
                self._take(loop, collector)
                t_next = max(t_next + self.interval, time.monotonic())
                self.done.wait(t_next - time.monotonic())
        except BaseException as exc:  # surfaced by the main thread
            self.failed = exc
        finally:
            loop.run_until_complete(collector.close())
            loop.close()

    def _take(self, loop: asyncio.AbstractEventLoop, collector: LagCollector) -> None:
        """One sample; the scrapes run beside the lag read so a sample takes ~1 s at most."""
        t = time.time()
        memory = {k: w.memory_mb() for k, w in self.workers.items()}
        futures = {k: self.pool.submit(w.scrape) for k, w in self.workers.items()}
        loop.run_until_complete(collector.refresh())
        by_group = lag_of(collector)
        scraped = {k: f.result() for k, f in futures.items()}
        self.series.append(scraped)
        self.samples.append(
            {
                "t": round(t, 3),
                "phase": self.phase,
                "rss_mb": {k: round(m[0], 1) for k, m in memory.items()},
                "hwm_mb": {k: round(m[1], 1) for k, m in memory.items()},
                "lag": {k: by_group.get(g, {}) for k, g in self.groups.items()},
                "up": {k: scraped[k] is not None for k in scraped},
            }
        )
        self._note_drain(t)

    def _note_drain(self, t: float) -> None:
        """Set the thresholds when the steady phase is over; note when, after the burst, every
        group's lag is back at its threshold."""
        if self.phase in ("warmup", "steady"):
            return
        if not self.thresholds:
            steady = in_phase(self.samples, "steady")
            for kind in self.groups:
                lags = sorted(lag_values(steady, kind)) or [0.0]
                self.thresholds[kind] = max(50.0, 3 * lags[int(0.9 * (len(lags) - 1))])
        if self.phase == "recover" and self.drained_at is None:
            last = self.samples[-1]["lag"]
            if all(
                last.get(k, {}).get("lag_sum", math.inf) <= thr
                for k, thr in self.thresholds.items()
            ):
                self.drained_at = t

    def lag(self, kind: str, since: float = 0.0) -> list[float]:
        """The lag sums of group ``kind`` sampled after ``since`` (wall time)."""
        return [
            s["lag"][kind].get("lag_sum", math.nan)
            for s in self.samples[:]
            if s["t"] >= since and "lag_sum" in s["lag"].get(kind, {})
        ]


# -- publishing -------------------------------------------------------------------------------


class Publisher:
    """Sends the bench's events on a fixed schedule per phase, noting how far behind it fell."""

    def __init__(self, kafka: KafkaSettings, topic: str, users: int) -> None:
        self.kafka, self.topic, self.users = kafka, topic, users
        self.i = 0
        self.phases: list[dict[str, Any]] = []
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.kafka.bootstrap, linger_ms=5)
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.flush()
            await self.producer.stop()

    async def send(self, user: str, eid: str) -> None:
        assert self.producer is not None
        ts = int(time.time() * 1000)
        await self.producer.send(self.topic, event(eid, user, ts, self.i), key=user.encode())
        self.i += 1

    async def paced(self, name: str, rate: float, seconds: float) -> dict[str, Any]:
        """``rate`` events/s for ``seconds`` (behind schedule, sends catch up)."""
        t0, n, behind = time.monotonic(), 0, 0.0
        start = time.time()
        while (elapsed := time.monotonic() - t0) < seconds:
            await self.send(user_for(self.i, self.users), f"e{self.i}")
            n += 1
            ahead = n / rate - elapsed
            if ahead > 0:
                await asyncio.sleep(ahead)
            else:
                behind = max(behind, -ahead)
        phase = {"phase": name, "start": start, "end": time.time(), "events": n, "rate": rate}
        phase["behind_s"] = round(behind, 3)
        return phase

    async def hot_block(self, n: int) -> dict[str, Any]:
        """``n`` events of one user, back to back (no pacing)."""
        start = time.time()
        for k in range(n):
            await self.send("hot-0", f"h{k}")
        assert self.producer is not None
        await self.producer.flush()
        return {"phase": "hot_block", "start": start, "end": time.time(), "events": n}


async def run_load(
    pub: Publisher, sampler: Sampler, args: argparse.Namespace, check: Callable[[], None]
) -> list[dict[str, Any]]:
    """steady, burst (with the hot block first), then recover until ``drained`` + tail."""
    await pub.start()
    try:
        sampler.phase = "steady"
        phases = [await pub.paced("steady", args.rate, args.steady)]
        progress(sampler)
        sampler.phase = "burst"
        burst_rate = args.rate * args.burst_factor
        if args.hot_events:
            phases.append(await pub.hot_block(args.hot_events))
        left = args.burst - (time.time() - phases[-1]["start"]) if args.hot_events else args.burst
        phases.append(await pub.paced("burst", burst_rate, max(left, 1.0)))
        progress(sampler)
        sampler.phase = "recover"
        t0 = time.time()
        while time.time() - t0 < args.max_recover:
            phases.append(await pub.paced("recover", args.rate, 1.0))
            check()
            if len(phases) % 10 == 0:
                progress(sampler)
            drained_at = sampler.drained_at
            if drained_at is not None and time.time() - drained_at >= args.tail:
                break
        return merge_recover(phases)
    finally:
        await pub.stop()


def progress(sampler: Sampler) -> None:
    s = sampler.samples[-1] if sampler.samples else None
    if s is not None:
        lags = {k: s["lag"][k].get("lag_sum") for k in s["lag"]}
        print(f"  {s['phase']:<8} lag {lags}  stream RSS {s['rss_mb']['stream']} MiB", flush=True)


def merge_recover(phases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The 1 s slices of the recover phase as one phase."""
    out = [p for p in phases if p["phase"] != "recover"]
    rec = [p for p in phases if p["phase"] == "recover"]
    if rec:
        out.append(
            {
                "phase": "recover",
                "start": rec[0]["start"],
                "end": rec[-1]["end"],
                "events": sum(p["events"] for p in rec),
                "rate": rec[0]["rate"],
                "behind_s": max(p["behind_s"] for p in rec),
            }
        )
    return out


# -- analysis ---------------------------------------------------------------------------------


def in_phase(samples: Sequence[Mapping[str, Any]], *names: str) -> list[Mapping[str, Any]]:
    return [s for s in samples if s["phase"] in names]


def med(values: Iterable[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return statistics.median(vals) if vals else math.nan


def memory_summary(samples: Sequence[Mapping[str, Any]], kind: str) -> dict[str, float]:
    """RSS of one worker: steady median (second half of the steady phase), peak during the burst
    and the recovery, growth over the burst's second half, and the end."""
    steady = in_phase(samples, "steady")
    steady = steady[len(steady) // 2 :]
    burst = in_phase(samples, "burst")
    recover = in_phase(samples, "recover")

    def rss(xs: Sequence[Mapping[str, Any]]) -> list[float]:
        return [s["rss_mb"][kind] for s in xs]

    base = med(rss(steady))
    peak_burst, peak_recover = max(rss(burst), default=math.nan), max(rss(recover), default=0.0)
    half = burst[len(burst) // 2 :]
    return {
        "steady_median_mb": round(base, 1),
        "burst_peak_mb": round(peak_burst, 1),
        "recover_peak_mb": round(peak_recover, 1),
        "peak_over_steady": round(max(peak_burst, peak_recover) / base, 3),
        "burst_second_half_growth_mb": round(rss(half)[-1] - rss(half)[0], 1) if half else 0.0,
        "end_median_mb": round(med(rss(recover[-10:])), 1),
        "hwm_mb_end": samples[-1]["hwm_mb"][kind] if samples else math.nan,
    }


def lag_summary(
    samples: Sequence[Mapping[str, Any]], kind: str, burst_end: float, threshold: float
) -> dict[str, Any]:
    """Peak lag (records, seconds) of one group and when it was back at ``threshold``."""
    rows = [(s["t"], s["lag"][kind]) for s in samples if "lag_sum" in s["lag"].get(kind, {})]
    peak_t, peak = max(((t, lag["lag_sum"]) for t, lag in rows), key=lambda x: x[1])
    secs = max((lag.get("seconds_max", 0.0) for _, lag in rows), default=0.0)
    drained = next(
        (t for t, lag in rows if t > max(burst_end, peak_t) and lag["lag_sum"] <= threshold), None
    )
    statuses = sorted({lag.get("status", "?") for _, lag in rows})
    return {
        "peak_lag_records": int(peak),
        "peak_at_s_after_burst_end": round(peak_t - burst_end, 1),
        "peak_lag_seconds": round(secs, 1),
        "drained_threshold_records": threshold,
        "drain_s_after_burst_end": None if drained is None else round(drained - burst_end, 1),
        "drain_s_after_peak": None if drained is None else round(drained - peak_t, 1),
        "statuses_seen": statuses,
    }


def rss_per_phase(
    samples: Sequence[Mapping[str, Any]], series: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, float]]:
    """Per phase: the stream worker's RSS change, the records it read, MiB per 1k records, and
    the embed backlog's change: memory that held the backlog would follow the last column."""
    out = {}
    for phase in ("steady", "burst", "recover"):
        idx = [i for i, s in enumerate(samples) if s["phase"] == phase and series[i].get("stream")]
        if len(idx) < 2:
            continue
        a, b = idx[0], idx[-1]
        records = series[b]["stream"].get("interest_stream_records_total", 0.0) - series[a][
            "stream"
        ].get("interest_stream_records_total", 0.0)
        rss = samples[b]["rss_mb"]["stream"] - samples[a]["rss_mb"]["stream"]
        lag = samples[b]["lag"]["embed"].get("lag_sum", 0.0) - samples[a]["lag"]["embed"].get(
            "lag_sum", 0.0
        )
        out[phase] = {
            "seconds": round(samples[b]["t"] - samples[a]["t"], 1),
            "rss_change_mb": round(rss, 1),
            "records_read": records,
            "mb_per_1k_records": round(1000 * rss / records, 3) if records else math.nan,
            "mb_per_s": round(rss / max(samples[b]["t"] - samples[a]["t"], 1e-9), 3),
            "embed_lag_change": lag,
        }
    return out


def counter_delta(series: Sequence[Mapping[str, Any]], kind: str, name: str) -> float:
    vals = [s[kind].get(name, math.nan) for s in series if s.get(kind)]
    vals = [v for v in vals if not math.isnan(v)]
    return vals[-1] - vals[0] if vals else math.nan


def limits_of(settings: StreamSettings) -> dict[str, Any]:
    """The limits that bound a stream worker's memory, whatever the embed side does."""
    limits = settings.state_limits()
    tables, partitions = 2, int(os.environ.get("INTEREST_TOPICS_PARTITIONS", "4"))
    per_db = settings.rocksdb_block_cache_mb + 2 * settings.rocksdb_write_buffer_mb
    return {
        "pending_cap_events": limits.pending_cap,
        "pending_max_bytes": limits.pending_max_bytes,
        "flush_count": settings.flush_count,
        "max_delay_s": settings.max_delay_s,
        "dedupe_window_ids": limits.dedupe_window,
        "batch_max_records": settings.batch_max,
        "table_store": settings.table_store,
        "rocksdb_mb_per_table_partition": per_db,
        "rocksdb_mb_bound": per_db * tables * partitions,
        "memtables_mb_bound": 2 * settings.rocksdb_write_buffer_mb * tables * partitions,
        "note": "pending beyond the cap or bytes is folded (counted, content dropped); jobs go "
        "to Kafka, so the embed side's backlog lives on the broker's disk, not in the worker",
    }


# -- the run ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="20 s steady, 30 s burst (~4 min)")
    p.add_argument("--rate", type=float, default=100.0, help="steady events/s")
    p.add_argument("--burst-factor", type=float, default=10.0)
    p.add_argument("--steady", type=float, default=60.0, help="seconds of steady load first")
    p.add_argument("--burst", type=float, default=60.0, help="seconds of burst")
    p.add_argument("--hot-events", type=int, default=3000, help="one user's block in the burst")
    p.add_argument("--tail", type=float, default=30.0, help="steady seconds after the drain")
    p.add_argument("--max-recover", type=float, default=420.0)
    p.add_argument("--users", type=int, default=2000, help="users besides 5 heavy ones")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--broker-port", type=int, default=29411, help="the bench's own broker")
    p.add_argument("--bootstrap", help="use this running broker instead of starting one")
    p.add_argument(
        "--rocksdb-write-buffer-mb",
        type=int,
        help="the stream worker's memtable size (default: StreamSettings'), to see the bound",
    )
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, store)")
    p.add_argument("--out", type=Path, help="JSON path (default bench/results/overload*.json)")
    p.add_argument(
        "--write-promtool-test", nargs="?", const=PROMTOOL_TEST, type=Path, metavar="PATH"
    )
    p.add_argument("--from-series", type=Path, help="only write the promtool test from FILE")
    args = p.parse_args(argv)
    if args.quick:
        args.steady, args.burst, args.tail, args.hot_events = 20.0, 30.0, 15.0, 2000
    return args


def start_broker(args: argparse.Namespace, work: Path) -> Callable[[], None]:
    """The bench's own broker (or none with ``--bootstrap``); returns how to stop it."""
    if args.bootstrap:
        os.environ["INTEREST_KAFKA_BOOTSTRAP"] = args.bootstrap
        return lambda: None
    from models.config import CoreSettings
    from streams.broker import LocalBroker
    from streams.settings import BrokerSettings

    os.environ["INTEREST_BROKER_PORT"] = str(args.broker_port)
    os.environ["INTEREST_DATA_DIR"] = str(work / "data")
    os.environ.pop("INTEREST_KAFKA_BOOTSTRAP", None)
    broker = LocalBroker(BrokerSettings(), CoreSettings())
    print(f"starting a broker on port {args.broker_port} ...", flush=True)
    broker.start()

    def stop() -> None:
        broker.stop()

    return stop


class Pipeline:
    """Fresh topics, both workers, the sampler, and what the bench does with them."""

    def __init__(self, kafka: KafkaSettings, args: argparse.Namespace, work: Path) -> None:
        self.kafka, self.args, self.work = kafka, args, work
        prefix = f"bench{uuid.uuid4().hex[:6]}-overload"
        self.topics = TopicSettings(
            events=f"{prefix}.events",
            dlq=f"{prefix}.events.dlq",
            updates=f"{prefix}.updates",
            popularity=f"{prefix}.items.popularity",
            partitions=args.partitions,
        )
        asyncio.run(ensure_topics(kafka, self.topics))
        self.groups = {"stream": f"{prefix}-stream", "embed": f"{prefix}-embed"}
        self.workers: dict[str, Worker] = {}
        self.sampler: Sampler | None = None

    def start(self) -> dict[str, float]:
        kafka, topics, work = self.kafka, self.topics, self.work
        port = free_port()
        env = child_env(
            kafka,
            topics,
            INTEREST_EMBED_GROUP_ID=self.groups["embed"],
            INTEREST_QDRANT_PATH=str(work / "qdrant"),
            INTEREST_API_PORT=str(port),
        )
        self.workers["embed"] = Worker("embed", env, port, work)
        print("embed worker: loading the model, opening the store ...", flush=True)
        ready = {"embed_ready_s": self.workers["embed"].wait_ready(300)}
        port = free_port()
        env = child_env(
            kafka,
            topics,
            INTEREST_STREAM_APP_ID=self.groups["stream"],
            INTEREST_STREAM_REPARTITION_TOPIC=f"{topics.events}.repartition",
            INTEREST_STREAM_DATA_DIR=str(work / "stream"),
            INTEREST_STREAM_METRICS_PORT=str(port),
        )
        if self.args.rocksdb_write_buffer_mb:
            env["INTEREST_STREAM_ROCKSDB_WRITE_BUFFER_MB"] = str(self.args.rocksdb_write_buffer_mb)
        self.workers["stream"] = Worker("stream", env, port, work)
        ready["stream_ready_s"] = self.workers["stream"].wait_ready(300)
        for kind, worker in self.workers.items():  # the group each worker says it is in
            self.groups[kind] = json.loads(worker.get("/healthz")).get("group", self.groups[kind])
        self.sampler = Sampler(kafka, self.groups, self.workers)
        self.sampler.start()
        print("both workers up; warm-up ...", flush=True)
        ready["warmup_s"] = self.warm_up()
        return ready

    def warm_up(self) -> float:
        """400 events to 50 users, then wait until both groups have no lag."""
        assert self.sampler is not None
        t0 = time.time()

        async def send() -> None:
            pub = Publisher(self.kafka, self.topics.events, 50)
            await pub.start()
            for k in range(400):
                await pub.send(f"warm-{k % 50}", f"w{k}")
            await pub.stop()

        asyncio.run(send())
        while time.time() - t0 < 300:
            time.sleep(1.0)
            self.check()
            last = self.sampler.samples[-1]["lag"] if self.sampler.samples else {}
            if all(last.get(k, {}).get("lag_sum", 1) == 0 for k in ("stream", "embed")):
                return time.time() - t0
        raise SystemExit("warm-up: the groups did not catch up in 300 s")

    def check(self) -> None:
        for w in self.workers.values():
            w.check_alive()
        if self.sampler is not None and self.sampler.failed is not None:
            raise self.sampler.failed

    def load(self) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """Runs the phases; returns them and the drained thresholds (records) used."""
        assert self.sampler is not None
        pub = Publisher(self.kafka, self.topics.events, self.args.users)
        print("steady, burst, recover ...", flush=True)
        phases = asyncio.run(run_load(pub, self.sampler, self.args, self.check))
        time.sleep(2.0)
        return phases, dict(self.sampler.thresholds)

    def stop(self) -> dict[str, int | None]:
        if self.sampler is not None:
            self.sampler.done.set()
            self.sampler.join(timeout=30)
            self.sampler.pool.shutdown(wait=False)
        return {k: self.workers[k].stop() for k in ("stream", "embed") if k in self.workers}


def lag_values(samples: Iterable[Mapping[str, Any]], kind: str) -> list[float]:
    return [s["lag"][kind]["lag_sum"] for s in samples if "lag_sum" in s["lag"].get(kind, {})]


def summarise(
    samples: list[dict[str, Any]],
    series: list[dict[str, Any]],
    phases: list[dict[str, Any]],
    thresholds: Mapping[str, float],
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    burst = [p for p in phases if p["phase"] in ("hot_block", "burst")]
    burst_end = burst[-1]["end"]
    t0 = samples[0]["t"]
    counters = {
        name: counter_delta(series, kind, name)
        for kind, names in (
            ("stream", ("interest_stream_events_total", "interest_stream_folded_total")),
            ("stream", ("interest_stream_jobs_total", "interest_stream_job_events_total")),
            ("embed", ("interest_embed_jobs_total", "interest_embed_events_applied_total")),
        )
        for name in names
    }
    return {
        "phases": [
            {**p, "start_s": round(p["start"] - t0, 1), "end_s": round(p["end"] - t0, 1)}
            for p in phases
        ],
        "memory": {k: memory_summary(samples, k) for k in ("stream", "embed")},
        "lag": {
            k: lag_summary(samples, k, burst_end, thresholds.get(k, 50.0))
            for k in ("embed", "stream")
        },
        "counters_during_run": counters,
        "limits": limits_of(StreamSettings(**overrides)),
        "stream_rss_per_phase": rss_per_phase(samples, series),
        "scrapes_failed": {
            k: sum(1 for s in samples if not s["up"].get(k, True)) for k in ("stream", "embed")
        },
    }


def verdicts(summary: Mapping[str, Any]) -> dict[str, bool]:
    """What the run must show. The stream worker's RSS rises with the records it writes (its
    RocksDB memtables fill up to ``rocksdb_write_buffer_mb`` per table partition before they are
    flushed: ``--rocksdb-write-buffer-mb 1`` makes that visible), not with the embed backlog."""
    mem, lag = summary["memory"]["stream"], summary["lag"]["embed"]
    limits, per_phase = summary["limits"], summary["stream_rss_per_phase"]
    # A worker that held jobs until the embed side took them would give memory back as the
    # backlog drains; one that only writes its state grows as at steady load.
    peak = max(mem["burst_peak_mb"], mem["recover_peak_mb"])
    bound = mem["steady_median_mb"] + limits["memtables_mb_bound"] + BATCH_SLACK_MB
    steady, recover = per_phase.get("steady", {}), per_phase.get("recover", {})
    return {
        f"stream_rss_bounded (peak <= steady + memtables bound + {BATCH_SLACK_MB} MiB)": (
            peak <= bound
        ),
        "stream_rss_not_holding_backlog (while the backlog drains, RSS rises no faster in MiB/s "
        "than at steady load and drops by less than 1 KiB per drained job)": (
            recover.get("mb_per_s", math.inf) <= steady.get("mb_per_s", 0.0)
            and recover.get("rss_change_mb", 0.0) > recover.get("embed_lag_change", 0.0) / 1024
        ),
        "embed_lag_grew (peak > 10 x drained threshold)": (
            lag["peak_lag_records"] > 10 * lag["drained_threshold_records"]
        ),
        "embed_lag_drained": lag["drain_s_after_burst_end"] is not None,
        "stream_lag_drained": summary["lag"]["stream"]["drain_s_after_burst_end"] is not None,
    }


# -- the scraped series, and the promtool test written from them ------------------------------


def columnar(series: Sequence[Mapping[str, Mapping[str, float] | None]]) -> dict[str, Any]:
    """Per worker: its sample keys and one column of values per key (None: not scraped)."""
    out: dict[str, Any] = {}
    for kind in ("stream", "embed"):
        keys = sorted({k for s in series if s.get(kind) for k in s[kind] or {}})
        rows = [s.get(kind) for s in series]
        out[kind] = {
            "up": [r is not None for r in rows],
            "series": {k: [None if r is None else r.get(k) for r in rows] for k in keys},
        }
    return out


def parse_key(key: str) -> tuple[str, dict[str, str]]:
    """``name{a="x",b="y"}`` -> (name, labels) (the form of ``prometheus_samples``)."""
    name, _, rest = key.partition("{")
    labels: dict[str, str] = {}
    for part in rest.rstrip("}").split('",'):
        if part:
            k, _, v = part.partition('="')
            labels[k] = v.rstrip('"')
    return name, labels


def series_name(name: str, labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def expand(values: Sequence[float | None]) -> str:
    """promtool's values notation: runs of one value as ``vxN`` (N+1 samples), ``_`` missing."""
    out: list[str] = []
    i = 0
    while i < len(values):
        v = values[i]
        j = i
        while j + 1 < len(values) and values[j + 1] == v and v is not None:
            j += 1
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append("_")
        else:
            text = str(int(v)) if float(v).is_integer() else format(v, ".6g")
            out.append(text if j == i else f"{text}x{j - i}")
        i = j + 1
    return " ".join(out)


class Replay:
    """The run's series as Prometheus would hold them (lookback of 5 samples) and the alert
    conditions of deploy/prometheus/alerts.yml that need no PromQL engine to decide."""

    LOOKBACK = 5

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        # Onto a 1 s grid: each grid second takes the last sample taken at or before it.
        ts = data.get("t") or list(range(len(data["phase"])))
        grid = [
            max(i for i, t in enumerate(ts) if t <= ts[0] + g)
            for g in range(int(ts[-1] - ts[0]) + 1)
        ]
        self.phase = [data["phase"][i] for i in grid]
        self.n = len(grid)
        self.groups = {v: DEPLOYED_GROUPS[k] for k, v in data["groups"].items()}
        self.input: dict[str, list[float | None]] = {}
        for kind in ("stream", "embed"):
            target = DEPLOYED[kind]
            cols = data["scrapes"][kind]
            up: list[float | None] = [1.0 if cols["up"][i] else 0.0 for i in grid]
            self.input[series_name("up", target)] = up
            for key, column in cols["series"].items():
                vals = [column[i] for i in grid]
                name, labels = parse_key(key)
                if name not in ALERT_SERIES:
                    continue
                if "group" in labels:
                    labels["group"] = self.groups.get(labels["group"], labels["group"])
                self.input[series_name(name, {**labels, **target})] = vals

    def at(self, name: str, i: int, **labels: str) -> float | None:
        """The value of the one series ``name`` with ``labels`` at sample ``i`` (lookback)."""
        want = series_name(name, labels)[len(name) + 1 : -1].split(",")
        for key, vals in self.input.items():
            if key.startswith(name + "{") and all(w in key for w in want):
                for j in range(i, max(i - self.LOOKBACK, -1), -1):
                    if vals[j] is not None:
                        return vals[j]
        return None

    def held(self, cond: Callable[[int], bool], i: int, minutes: int) -> bool:
        """``cond`` true at every evaluation from ``i - minutes`` to ``i`` (``for:``)."""
        return i >= minutes and all(cond(j) for j in range(i - minutes, i + 1))

    def lag_growing(self, group: str, i: int) -> bool:
        def cond(j: int) -> bool:
            now, then = self.at("interest_consumer_group_lag_sum", j, group=group), None
            if j >= 10:
                then = self.at("interest_consumer_group_lag_sum", j - 10, group=group)
            return now is not None and then is not None and now > 1000 and now > then

        return self.held(cond, i, 15)

    def equals(self, name: str, value: float | None, **labels: str) -> Callable[[int], bool]:
        """At sample j: does series ``name`` with ``labels`` have ``value`` (None: absent)?"""
        return lambda j: self.at(name, j, **labels) == value

    def above(self, name: str, limit: float, **labels: str) -> Callable[[int], bool]:
        return lambda j: (self.at(name, j, **labels) or 0.0) > limit

    def firing(self, i: int) -> list[dict[str, str]]:
        """The alerts this class decides that fire at sample ``i`` (label sets of ALERTS)."""
        out = []
        for group in DEPLOYED_GROUPS.values():
            status = "interest_consumer_group_status"
            seconds = self.above("interest_consumer_group_lag_seconds_max", 300, group=group)
            rules = {
                "InterestConsumerLagGrowing": ("warning", self.lag_growing(group, i)),
                "InterestConsumerLagSecondsHigh": ("warning", self.held(seconds, i, 5)),
            }
            for state, alert in (("stalled", "Stalled"), ("stopped", "Stopped")):
                cond = self.equals(status, 1.0, group=group, status=state)
                rules[f"InterestConsumerGroup{alert}"] = ("critical", self.held(cond, i, 5))
            for alert, (severity, fires) in rules.items():
                if fires:
                    out.append({"alertname": alert, "group": group, "severity": severity})
        for kind, target in DEPLOYED.items():
            out.extend(self._worker_alerts(kind, target, i))
        return sorted(out, key=lambda a: sorted(a.items()))

    def _worker_alerts(self, kind: str, target: Mapping[str, str], i: int) -> list[dict[str, str]]:
        job, inst = target["job"], target["instance"]
        consuming = self.equals("interest_worker_consuming", 1.0, **target)
        out = []
        if self.held(self.equals("up", 0.0, **target), i, 2):
            out.append({"alertname": "InterestWorkerDown", "severity": "critical", **target})
        if self.held(self.equals("interest_worker_consuming", 0.0, **target), i, 5):
            out.append(
                {"alertname": "InterestWorkerNotConsuming", "severity": "critical", **target}
            )
        if self.held(lambda j: not consuming(j), i, 5):
            name = f"Interest{kind.capitalize()}ConsumptionAbsent"
            out.append({"alertname": name, "severity": "critical", "job": job})
        if self.held(self.equals("interest_consumer_lag_read_ok", 0.0, **target), i, 10):
            out.append(
                {"alertname": "InterestLagReadFailing", "severity": "warning", "job": job,
                 "instance": inst}
            )  # fmt: skip
        return out

    def freshness_p99(self, i: int) -> float:
        """histogram_quantile(0.99) of the freshness buckets' increase over the last 5 samples
        (an estimate: Prometheus also extrapolates each bucket's rate to the window's edges)."""
        if i < 5:
            return math.nan
        rows = []
        for key, vals in self.input.items():
            if key.startswith("interest_update_freshness_seconds_bucket{"):
                bound = parse_key(key)[1]["le"]
                a, b = vals[i - 5], vals[i]
                if a is None or b is None:
                    return math.nan
                rows.append((math.inf if bound == "+Inf" else float(bound), b - a))
        rows.sort()
        if not rows or rows[-1][1] <= 0:
            return math.nan
        rank, prev_le, prev = 0.99 * rows[-1][1], 0.0, 0.0
        for le, cum in rows:
            if cum >= rank:
                if math.isinf(le):
                    return prev_le
                return prev_le + (le - prev_le) * (rank - prev) / max(cum - prev, 1e-12)
            prev_le, prev = le, cum
        return math.nan

    def counters_flat(self) -> bool:
        """No DLQ record, invalid job, Qdrant error or stall repair in the whole run."""
        names = (
            "interest_stream_dlq_total",
            "interest_embed_invalid_jobs_total",
            "interest_qdrant_errors_total",
            'interest_stream_consumer_repairs_total{kind="stall"',
        )
        for key, vals in self.input.items():
            if key.startswith(names):
                got = [v for v in vals if v is not None]
                if got and got[-1] != got[0]:
                    return False
        return True


def go_value(v: float) -> str:
    """``{{ $value }}`` as Prometheus' templates print a whole number below 1e6 (Go's %v)."""
    if not float(v).is_integer() or abs(v) >= 1e6:
        raise ValueError(f"no exact Go rendering here for {v}")
    return str(int(v))


def alerts_query(exclude: Sequence[str] = ()) -> str:
    extra = f',alertname!~"{"|".join(exclude)}"' if exclude else ""
    return f'ALERTS{{alertstate="firing"{extra}}}'


def expect_set(replay: Replay, i: int, exclude: Sequence[str]) -> dict[str, Any]:
    """A promql_expr_test: exactly the alerts :meth:`Replay.firing` decides fire at ``i``."""
    samples = [
        {"labels": series_name("ALERTS", {**a, "alertstate": "firing"}), "value": 1}
        for a in replay.firing(i)
    ]
    return {"expr": alerts_query(exclude), "eval_time": f"{i}m", "exp_samples": samples}


COUNTER_ALERTS = (
    "InterestDlqRateHigh",
    "InterestInvalidUpdateJobs",
    "InterestQdrantErrors",
    "InterestStreamPartitionStallRepaired",
)
FRESHNESS = "InterestFreshnessP99High"


def promtool_test(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The test (as a dict) and the lines of its header comment, from a saved run.

    Time is stretched 60x: sample k (1 s apart in the run) is minute k of the test, so the
    rules' ``for:`` of 2 to 15 minutes span 2 to 15 s of the real overload. Values are kept as
    scraped: record counts, statuses and the freshness histogram are the run's, and lag seconds
    are real seconds (not stretched, so ``> 300 s`` thresholds compare against what a 10x burst
    of this length really causes). Counters' rates come out 60x lower; the rules that read
    rates compare ratios (DLQ share, freshness quantile) or fire on any increase.
    """
    replay = Replay(data)
    phase = replay.phase
    idx = {p: [i for i, x in enumerate(phase) if x == p] for p in ("steady", "burst", "recover")}
    t_base, t_end = idx["steady"][-1], replay.n - 1
    embed = DEPLOYED_GROUPS["embed"]
    fire = [i for i in idx["burst"] + idx["recover"] if replay.lag_growing(embed, i)]
    if not fire:
        raise SystemExit("InterestConsumerLagGrowing never held 15 samples: use a longer --burst")
    lag = "interest_consumer_group_lag_sum"
    t_peak = max(fire, key=lambda i: replay.at(lag, i, group=embed) or 0.0)
    flat = replay.counters_flat()
    exclude = [FRESHNESS, *([] if flat else COUNTER_ALERTS)]
    checks = [expect_set(replay, t, exclude) for t in sorted({t_base, t_peak, t_end})]
    checks[0]["expr"] = checks[-1]["expr"] = alerts_query()  # nothing at all before and after
    p99 = [replay.freshness_p99(i) for i in range(replay.n)]
    fresh = [i for i in range(10, replay.n) if all(p99[j] >= 36 for j in range(i - 10, i + 1))]
    if fresh:
        t_fresh = fresh[len(fresh) // 2]
        checks.append(
            {
                "expr": f'ALERTS{{alertname="{FRESHNESS}",alertstate="firing"}}',
                "eval_time": f"{t_fresh}m",
                "exp_samples": [
                    {
                        "labels": series_name(
                            "ALERTS",
                            {"alertname": FRESHNESS, "alertstate": "firing", "severity": "warning"},
                        ),
                        "value": 1,
                    }
                ],
            }
        )
    value = go_value(replay.at(lag, t_peak, group=embed) or 0.0)
    growing = {
        "eval_time": f"{t_peak}m",
        "alertname": "InterestConsumerLagGrowing",
        "exp_alerts": [
            {
                "exp_labels": {"severity": "warning", "group": embed},
                "exp_annotations": {
                    "summary": f"Consumer group {embed} lag keeps growing",
                    "description": f"Lag {value} records and rising for 15 minutes: consumers "
                    "do not keep up.",
                },
            }
        ],
    }
    # The first minute after the peak where it no longer fires: the backlog shrinks.
    t_resolved = next((i for i in range(t_peak, replay.n) if i not in set(fire)), t_end)
    resolved = {"eval_time": f"{t_resolved}m", "alertname": growing["alertname"], "exp_alerts": []}
    quiet: list[dict[str, Any]] = [
        {"eval_time": f"{t_peak}m", "alertname": name, "exp_alerts": []}
        for name in ("InterestConsumerGroupStalled", "InterestConsumerGroupStopped",
                     "InterestWorkerDown", "InterestEmbedConsumptionAbsent")
    ]  # fmt: skip
    test = {
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": k, "values": expand(v)} for k, v in sorted(replay.input.items())
                ],
                "alert_rule_test": [growing, resolved, *quiet],
                "promql_expr_test": checks,
            }
        ],
    }
    header = header_lines(data, replay, (t_base, t_peak, t_resolved, t_end), fire, fresh, p99)
    return test, header


def header_lines(
    data: Mapping[str, Any],
    replay: Replay,
    times: tuple[int, int, int, int],
    fire: Sequence[int],
    fresh: Sequence[int],
    p99: Sequence[float],
) -> list[str]:
    t_base, t_peak, t_resolved, t_end = times
    phase = replay.phase
    spans = []
    for p in ("steady", "burst", "recover"):
        idx = [i for i, x in enumerate(phase) if x == p]
        if idx:
            spans.append(f"{p} {idx[0]}m-{idx[-1]}m")
    finite = [v for v in p99 if not math.isnan(v)]
    lag, embed = "interest_consumer_group_lag_sum", DEPLOYED_GROUPS["embed"]
    peak, left = replay.at(lag, t_peak, group=embed), replay.at(lag, t_resolved, group=embed)
    seconds = max((v or 0) for k, vs in replay.input.items() if "seconds_max" in k for v in vs)
    fired = [a["alertname"] for i in range(replay.n) for a in replay.firing(i)]
    return [
        "Alert rules against a real overload: promtool test rules alerts_overload_test.yml",
        "",
        "GENERATED by bench/overload.py --write-promtool-test from the run recorded in",
        f"bench/results/{data['source']} ({data['when']}; {data['command']}).",
        "Do not edit by hand: rerun the bench (or --from-series on its saved series).",
        "",
        "Input series: every second of the run the bench scraped both workers' /metrics, as",
        "Prometheus would (job/instance/worker labels as deploy/prometheus/prometheus.yml adds",
        "them, the bench's group names renamed to the default ones), plus `up` (1 when the",
        "scrape answered). Only the families alerts.yml reads are kept; `_` = not scraped.",
        "",
        "Time is stretched 60x: second k of the run is minute k here (each second takes the",
        "last scrape at or before it; scrapes were ~1 s apart), so a rule's",
        "`for:` of 2-15 minutes spans 2-15 s of the real overload and the 10-minute delta and",
        "5-minute rate windows span 10 and 5 s. Values are as scraped: lag in records, status,",
        "the freshness histogram and lag SECONDS are real (not stretched: the 300 s threshold is",
        "compared with what this burst really caused). Counter rates come out 60x lower; the",
        "rules reading rates compare ratios (DLQ share, freshness quantile) or any increase.",
        "",
        f"Phases: {', '.join(spans)}. Peak embed lag {peak:.0f} records at {t_peak}m;"
        f" largest lag seconds {seconds:.1f} s;"
        f" freshness p99 (5-sample estimate) up to {max(finite, default=0):.1f} s.",
        f"Asserted: nothing fires at {t_base}m (end of steady) nor at {t_end}m (after the drain);",
        f"at {t_peak}m exactly the lag alerts computed from the series fire (InterestConsumer-",
        f"LagGrowing fires {fire[0]}m-{fire[-1]}m), and no stalled/stopped/down/absent alert:",
        "a consumer that is behind but working is not an outage. LagGrowing has resolved at",
        f"{t_resolved}m with {left or 0:.0f} records still to go: the backlog shrinks."
        + (f" Freshness p99 > 30 s held around {fresh[len(fresh) // 2]}m." if fresh else ""),
        "Of the alerts decided from the series without PromQL (all but the freshness and",
        f"counter-rate ones), these fire at some minute: {sorted(set(fired))}.",
    ]


def write_promtool_test(data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Write the test, run promtool on it when there is one; returns what happened."""
    import yaml

    test, header = promtool_test(data)
    body = yaml.safe_dump(test, sort_keys=False, width=10**9, allow_unicode=True)
    path.write_text("".join(f"# {h}".rstrip() + "\n" for h in header) + "\n" + body)
    print(f"wrote {path}")
    tool = find_promtool()
    if tool is None:
        return {"path": str(path), "promtool": "not found (scripts/install_deploy_tools.sh)"}
    proc = subprocess.run(
        [tool, "test", "rules", path.name], cwd=path.parent, capture_output=True, text=True
    )
    print(proc.stdout + proc.stderr)
    return {"path": str(path), "promtool_rc": proc.returncode}


def find_promtool() -> str | None:
    tools = Path(
        os.environ.get("INTEREST_TOOLS_DIR") or Path.home() / ".cache/interest-stream/tools"
    )
    for c in (shutil.which("promtool"), Path(sys.executable).parent / "promtool",
              tools / "bin" / "promtool"):  # fmt: skip
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return str(c)
    return None


# -- report and main ---------------------------------------------------------------------------


def report(r: Mapping[str, Any]) -> None:
    s = r["summary"]
    print("\nphases")
    print(f"{'phase':<10} {'start s':>8} {'end s':>8} {'events':>8} {'rate/s':>8} {'behind s':>9}")
    for p in s["phases"]:
        print(f"{p['phase']:<10} {p['start_s']:>8} {p['end_s']:>8} {p['events']:>8,} "
              f"{p.get('rate', '-'):>8} {p.get('behind_s', '-'):>9}")  # fmt: skip
    print("\nmemory (RSS, MiB)")
    print(f"{'worker':<8} {'steady':>8} {'burst pk':>9} {'recov pk':>9} {'pk/steady':>10} "
          f"{'2nd-half +':>11} {'end':>7}")  # fmt: skip
    for k, m in s["memory"].items():
        print(f"{k:<8} {m['steady_median_mb']:>8} {m['burst_peak_mb']:>9} "
              f"{m['recover_peak_mb']:>9} {m['peak_over_steady']:>10} "
              f"{m['burst_second_half_growth_mb']:>11} {m['end_median_mb']:>7}")  # fmt: skip
    print("\nlag (group: topic)")
    print(f"{'group':<28} {'peak rec':>9} {'peak s':>7} {'pk@ s':>6} {'drain s':>8} statuses")
    names = {"embed": "embed: interest.updates", "stream": "stream: interest.events"}
    for k, g in s["lag"].items():
        print(f"{names[k]:<28} {g['peak_lag_records']:>9,} {g['peak_lag_seconds']:>7} "
              f"{g['peak_at_s_after_burst_end']:>6} {g['drain_s_after_burst_end']!s:>8} "
              f"{','.join(g['statuses_seen'])}")  # fmt: skip
    print("\nstream worker RSS by phase (MiB; embed backlog change in records)")
    for phase, x in s["stream_rss_per_phase"].items():
        print(f"  {phase:<8} {x['seconds']:>6} s  RSS {x['rss_change_mb']:+7.1f}  records "
              f"{x['records_read']:>8,.0f}  MiB/1k records {x['mb_per_1k_records']:>6}  "
              f"embed lag {x['embed_lag_change']:+,.0f}")  # fmt: skip
    print("\ncounters over the run:", json.dumps(s["counters_during_run"]))
    print("stream limits:", json.dumps(s["limits"]))
    print("\nverdicts:")
    for k, ok in r["verdicts"].items():
        print(f"  {'PASS' if ok else 'FAIL'}  {k}")


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="overload-"))
    stop_broker = start_broker(args, work)
    kafka = KafkaSettings()
    os.environ["INTEREST_TOPICS_PARTITIONS"] = str(args.partitions)
    info = {**machine_info(), "kafka": kafka.bootstrap, "store": "embedded (qdrant-edge)"}
    info["command"] = shlex.join([Path(sys.executable).name, "-m", "bench.overload",
                                  *sys.argv[1:]])  # fmt: skip
    info["loadavg_at_start"] = os.getloadavg()
    pipeline: Pipeline | None = None
    ok = False
    try:
        pipeline = Pipeline(kafka, args, work)
        startup = pipeline.start()
        ticks = cpu_ticks()
        phases, thresholds = pipeline.load()
        busy = cpu_share(ticks, cpu_ticks())
        rcs = pipeline.stop()
        ok = True
    finally:
        if pipeline is not None:
            pipeline.stop()
        stop_broker()
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work folder kept: {work}")
    assert pipeline.sampler is not None
    samples, series = pipeline.sampler.samples, pipeline.sampler.series
    overrides = {}
    if args.rocksdb_write_buffer_mb:
        overrides["rocksdb_write_buffer_mb"] = args.rocksdb_write_buffer_mb
    summary = summarise(samples, series, phases, thresholds, overrides)
    t0 = samples[0]["t"]
    return {
        "what": "a 10x burst the embed side cannot keep up with: stream worker memory, lag of "
        "both groups, time to drain (1 s samples)",
        "machine": {**info, "cpu_while_loaded": busy},
        "args": {k: str(v) for k, v in vars(args).items()},
        "startup": startup,
        "stop_rc": rcs,
        "groups": pipeline.groups,
        "summary": summary,
        "verdicts": verdicts(summary),
        "samples": [{**s, "t": round(s["t"] - t0, 2)} for s in samples],
        "_series": {
            "groups": pipeline.groups,
            "when": info["when"],
            "command": info["command"],
            "phase": [s["phase"] for s in samples],
            "t": [round(s["t"] - t0, 2) for s in samples],
            "scrapes": columnar(series),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_series:
        data = json.loads(args.from_series.read_text())
        data.setdefault("source", args.from_series.name)
        result = write_promtool_test(data, args.write_promtool_test or PROMTOOL_TEST)
        return 0 if result.get("promtool_rc", 0) == 0 else 1
    # A SIGTERM (what ``timeout`` sends) unwinds like an exception: workers and broker stop.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    results = run_bench(args)
    suffix = "_quick" if args.quick else ""
    out = args.out or ROOT / "bench" / "results" / f"overload{suffix}.json"
    series_path = out.with_name(out.name.replace("overload", "overload_series", 1))
    data = {**results.pop("_series"), "source": series_path.name}
    series_path.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    report(results)
    if args.write_promtool_test:
        results["promtool_test"] = write_promtool_test(data, args.write_promtool_test)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {out} and {series_path}")
    return 0 if all(results["verdicts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
