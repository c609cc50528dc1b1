"""Stream-state benchmark: start, restart and hand-over of a stream worker holding N users' state,
the memory table store next to the RocksDB one in the same run (issue 20, part 3).

On the broker at ``INTEREST_KAFKA_BOOTSTRAP``, for one fresh app (its own topics and group):

0. Empty: each store starts once on the empty topics (this creates them the way the worker does,
   the changelog with the configs of ``streams.stream.faust_tables.state_table``): seconds to
   ``/healthz`` 200 and the RSS of a worker with no users, the baseline of the per-user memory.
1. Fill: users ``su-0 .. su-<N-1>`` go straight into the changelog
   ``<app_id>-user-state-changelog``, one record each (key = user id, partition =
   ``partition_for(key, partitions)``), a real ``UserState.to_bytes()`` built with
   ``UserState.apply`` and ``mark_flushed``: 1-5 events (3 on average), a dedupe ring, activity
   counts, nothing pending. The states' source offsets are reset to -1 (their events are not in
   this app's fresh events topic, so a new event is not taken for a replay). The sizes grow in
   the same app: 100k adds 90k users to the 10k already there.
2. Per store and N (fresh data dir each): seconds from process start to ``/healthz`` 200
   (``consuming``: recovery done, processing resumed) -- first start; SIGTERM, start again on the
   same data dir -- restart; RSS after the restart; ``du`` of the data dir. One event for an
   existing user must then come out as a job numbered that user's ``last_n + 1``. Hand-over: a
   second worker (own data dir and port) joins -- seconds until both are 200 with the partitions
   split; SIGTERM the second -- seconds until the first is 200 again owning every partition.
   The changelog records each recovery had to read are taken from faust's own recovery log
   ("Highwater" / "Reading Starts At" tables; the workers run at log level info).
3. Throughput: ``--tp-users`` x 3 events (``stream_bench.produce_bulk``) through one worker per
   store (``WorkerRun.throughput``, popularity on as deployed), ``--tp-repeats`` alternating
   rounds; the ratio rocksdb / memory.

The recovery parts run with ``INTEREST_STREAM_POPULARITY_ENABLED=false``: only the user table.

    python -m bench.state_bench --quick     # 10k and 100k users -> results/state_bench_quick.json
    python -m bench.state_bench             # 10k, 100k, 1M users -> results/state_bench.json
    python -m bench.state_bench --report bench/results/state_bench.json   # print it again
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/state_bench.py` without an installed package
    sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from bench.machine import cpu_share, cpu_ticks  # noqa: E402
from bench.processes import free_port  # noqa: E402
from bench.stream_bench import (  # noqa: E402
    WorkerRun,
    fresh_topics,
    machine_info,
    produce_bulk,
    rss_mb,
)
from streams.contracts.events import Event  # noqa: E402
from streams.contracts.jobs import UpdateJob  # noqa: E402
from streams.settings import KafkaSettings, TopicSettings  # noqa: E402
from streams.stream.types import partition_for  # noqa: E402
from streams.stream.userstate import SOURCES, StateLimits, UserState  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402

STORES = ("memory", "rocksdb")
TYPES = ("view", "click", "like", "read")
TABLE = "user-state"
#: What faust's log tables print instead of a topic name repeated from the row above.
DITTO = "\u3003"
#: Environment of every worker of the recovery parts (on top of WorkerRun's).
RECOVERY_ENV = {"INTEREST_STREAM_POPULARITY_ENABLED": "false", "INTEREST_STREAM_LOGLEVEL": "info"}


# -- the users' states (pure) ----------------------------------------------------------------


def user_id(i: int) -> str:
    return f"su-{i}"


def events_for(i: int, mean: int = 3) -> int:
    """How many events user ``i`` has had: 1 .. 2*mean-1, ``mean`` on average over a cycle."""
    return 1 + i % (2 * mean - 1)


def user_state(i: int, now_ms: int, limits: StateLimits, mean: int = 3) -> UserState:
    """User ``i``'s state as the worker stores it after flushing its events: numbered,
    deduplicated, counted in the activity windows, nothing pending. Events are 7 minutes apart
    (so they fall into different activity buckets); source offsets are reset to -1 (see the
    module docstring)."""
    uid = user_id(i)
    s = UserState()
    for j in range(events_for(i, mean)):
        e = Event(
            f"{uid}-e{j}",
            uid,
            TYPES[(i + j) % len(TYPES)],
            now_ms - (j + 1) * 420_000,
            1.0,
            item_id=f"item-{(i * 7 + j) % 5000}",
            text="deep learning for image generation",
        )
        s.apply(e, seen_ms=now_ms, source=0, offset=j, limits=limits)
    s.mark_flushed(s.last_n, now_ms=now_ms)
    s.offsets = [-1] * SOURCES
    return s


def changelog_record(
    i: int, partitions: int, now_ms: int, limits: StateLimits
) -> tuple[bytes, bytes, int]:
    """(key, value, partition) of user ``i``'s changelog record."""
    key = user_id(i).encode()
    return key, user_state(i, now_ms, limits).to_bytes(), partition_for(key, partitions)


# -- faust's recovery log (pure) -------------------------------------------------------------


def _rows(lines: Iterator[str]) -> Iterator[tuple[str, int, int]]:
    """(topic, partition, value) rows of one faust log table, until the table ends."""
    topic = ""
    for line in lines:
        if not line.startswith(("|", "+")):
            return
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 3 or not cells[1].isdigit():
            continue  # a border or the header
        topic = topic if cells[0] in ("", DITTO) else cells[0]
        yield topic, int(cells[1]), int(cells[2])


def recoveries(log: str, table: str = TABLE) -> list[dict[str, int]]:
    """Each active recovery in a worker's log, in order: the changelog partitions of ``table``
    it recovered, and how many records it had to read (highwater - start offset, as faust
    counts them; start -1 = the whole partition)."""
    out: list[dict[str, int]] = []
    highwater: dict[int, int] = {}
    lines = iter(log.splitlines())
    suffix = f"-{table}-changelog"
    for line in lines:
        if "+Highwater - Active" in line:
            highwater = {p: v for t, p, v in _rows(lines) if t.endswith(suffix)}
        elif "+Reading Starts At - Active" in line:
            start = {p: v for t, p, v in _rows(lines) if t.endswith(suffix)}
            records = sum(max(0, highwater.get(p, -1) - s) for p, s in start.items())
            total = sum(highwater.get(p, -1) + 1 for p in start)
            out.append({"partitions": len(start), "to_read": records, "log_records": total})
    return out


# -- arithmetic of the report (pure) ---------------------------------------------------------


def per_user(total: float, baseline: float, users: int) -> float:
    """(total - baseline) / users: what one user adds (nan without users)."""
    return (total - baseline) / users if users else float("nan")


def healthy(body: Mapping[str, Any] | None, partitions: int | None = None) -> bool:
    """A ``/healthz`` body says consuming (with ``partitions`` partitions, when given)."""
    if not body or body.get("status") != "ok":
        return False
    return partitions is None or len(body.get("assigned", ())) == partitions


def targets(results: Mapping[str, Any]) -> dict[str, Any]:
    """The issue's targets, from the largest size measured: restart <= 30 s and RSS (the larger
    of after the first start and after the restart) <= 1 GB on RocksDB, events/s on RocksDB >=
    0.9 x memory (best of the rounds). ``met`` is None where not measured."""
    sizes = results.get("sizes", {})
    big = max((int(n) for n in sizes), default=0)
    rocks = sizes.get(str(big), {}).get("rocksdb", {})
    ratio = results.get("throughput", {}).get("ratio_best")
    restart = rocks.get("restart_s")
    rss_both = [v for v in (rocks.get("rss_mb_first"), rocks.get("rss_mb_restart")) if v]
    rss = max(rss_both) if rss_both else None
    return {
        "users": big,
        "restart_s": {"value": restart, "target": 30, "met": _le(restart, 30)},
        "rss_mb": {"value": rss, "target": 1024, "met": _le(rss, 1024)},
        "throughput_ratio": {"value": ratio, "target": 0.9, "met": _le(0.9, ratio)},
        "at_1m": big >= 1_000_000,
    }


def _le(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a <= b


# -- the worker ------------------------------------------------------------------------------


@contextlib.contextmanager
def environ(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set (WorkerRun copies it when it starts the worker)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Worker:
    """A stream worker (``WorkerRun``) on a store, a data dir and its own metrics port."""

    def __init__(self, ctx: Context, store: str, work: Path) -> None:
        self.port = free_port()
        env = {
            **RECOVERY_ENV,
            "INTEREST_STREAM_TABLE_STORE": store,
            "INTEREST_STREAM_METRICS_PORT": str(self.port),
        }
        self.work = work
        self.signalled = False
        work.mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic()
        with environ(env):
            self.run = WorkerRun(ctx.kafka, ctx.topics, ctx.app_id, work)

    @property
    def data_dir(self) -> Path:
        return self.work / self.run.app_id

    def health(self) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                body: dict[str, Any] = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        except (OSError, ValueError):
            return None
        return body

    def wait(self, ok: Callable[[dict[str, Any] | None], bool], timeout: float = 1800) -> float:
        """Poll /healthz every 0.1 s until ``ok``; seconds since this worker started."""
        deadline = time.monotonic() + timeout
        while not ok(self.health()):
            if self.run.proc.poll() is not None:
                raise SystemExit(f"worker exited ({self.run.proc.returncode}): {self.run.log_path}")
            if time.monotonic() > deadline:
                raise SystemExit(f"worker not healthy after {timeout} s: {self.run.log_path}")
            time.sleep(0.1)
        return time.monotonic() - self.t0

    def recovered(self) -> list[dict[str, int]]:
        return recoveries(self.run.log_path.read_text(errors="replace"))

    def terminate(self) -> None:
        """SIGTERM once (a second one makes the worker exit at once, like a crash)."""
        if not self.signalled and self.run.proc.poll() is None:
            self.run.proc.send_signal(signal.SIGTERM)
        self.signalled = True

    def stop(self, name: str) -> float:
        """SIGTERM, wait, keep the log as ``<name>.log``; seconds to stop (from here)."""
        t0 = time.monotonic()
        try:
            self.terminate()
            self.run.proc.wait(timeout=120)
        finally:
            self.run.close()
        stopped = time.monotonic() - t0
        self.run.log_path.rename(self.work / f"{name}.log")
        return stopped


def du_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=False)
    return int(out.stdout.split()[0]) / 1024 if out.returncode == 0 else float("nan")


class Context:
    """One app for the whole run: its topics, id and scratch dir."""

    def __init__(self, kafka: KafkaSettings, topics: TopicSettings, work: Path) -> None:
        self.kafka, self.topics, self.work = kafka, topics, work
        self.app_id = f"{topics.events.split('.')[0]}-stream"
        self.changelog = f"{self.app_id}-{TABLE}-changelog"


# -- the phases ------------------------------------------------------------------------------


def empty_start(ctx: Context, store: str) -> dict[str, float]:
    """A worker on the empty app (creates the topics): seconds to 200 and its RSS."""
    w = Worker(ctx, store, ctx.work / f"empty-{store}")
    try:
        start_s = w.wait(healthy)
        rss = rss_mb(w.run.proc.pid)
    finally:
        w.stop("start")
    shutil.rmtree(w.data_dir, ignore_errors=True)
    return {"start_s": start_s, "rss_mb": rss}


async def fill(ctx: Context, start: int, stop: int) -> dict[str, float]:
    """Users ``start .. stop-1`` straight into the changelog; users/s (states built + sent) and
    the seconds spent building the states."""
    producer = AIOKafkaProducer(
        bootstrap_servers=ctx.kafka.bootstrap, linger_ms=50, max_batch_size=512 * 1024
    )
    await producer.start()
    limits, now_ms, parts = StateLimits(), int(time.time() * 1000), ctx.topics.partitions
    t0, build_s, size = time.perf_counter(), 0.0, 0
    try:
        futures = []
        for i in range(start, stop):
            tb = time.perf_counter()
            key, value, partition = changelog_record(i, parts, now_ms, limits)
            build_s += time.perf_counter() - tb
            size += len(value)
            futures.append(await producer.send(ctx.changelog, value, key=key, partition=partition))
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    seconds = time.perf_counter() - t0
    n = max(stop - start, 1)
    return {"users": stop - start, "seconds": seconds, "users_per_s": n / seconds,
            "build_s": build_s, "value_bytes_mean": size / n}  # fmt: skip


async def wait_job(kafka: KafkaSettings, topic: str, user: str, within_s: float = 60) -> UpdateJob:
    """The first job for ``user`` on ``topic`` (read from the start)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        group_id=f"bench-check-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    deadline = time.monotonic() + within_s
    try:
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for r in records:
                    job = UpdateJob.from_json(r.value)
                    if job.user_id == user:
                        return job
    finally:
        await consumer.stop()
    raise SystemExit(f"no job for {user} on {topic} within {within_s} s")


async def check_numbering(ctx: Context, i: int) -> dict[str, Any]:
    """One event for user ``i`` (who had ``events_for(i)`` events): its job must number it
    ``last_n + 1`` -- the restarted worker holds the user's state."""
    uid, expect = user_id(i), events_for(i) + 1
    producer = AIOKafkaProducer(bootstrap_servers=ctx.kafka.bootstrap)
    await producer.start()
    try:
        body = {"event_id": f"check-{uuid.uuid4().hex[:8]}", "user_id": uid, "type": "click",
                "ts": int(time.time() * 1000), "item_id": "item-1"}  # fmt: skip
        await producer.send_and_wait(ctx.topics.events, json.dumps(body).encode(), key=uid.encode())
    finally:
        await producer.stop()
    t0 = time.monotonic()
    job = await wait_job(ctx.kafka, ctx.topics.updates, uid)
    got = [e.n for e in job.events]
    return {"user": uid, "expect_n": expect, "got_n": got, "ok": got == [expect],
            "job_s": time.monotonic() - t0}  # fmt: skip


def restart(ctx: Context, store: str, users: int, work: Path) -> tuple[Worker, dict[str, Any]]:
    """First start on a fresh data dir, SIGTERM, restart on it: seconds, RSS, disk, reads."""
    out: dict[str, Any] = {}
    w = Worker(ctx, store, work)
    try:
        out["first_start_s"] = w.wait(healthy)
        out["first_read"] = (w.recovered() or [{}])[-1]
        out["rss_mb_first"] = rss_mb(w.run.proc.pid)
        out["stop_s"] = w.stop("first")
        w = Worker(ctx, store, work)
        out["restart_s"] = w.wait(healthy)
        out["restart_read"] = (w.recovered() or [{}])[-1]
        out["rss_mb_restart"] = rss_mb(w.run.proc.pid)
        out["disk_mb"] = du_mb(w.data_dir)
    except BaseException:
        w.run.close()  # kills a worker still running
        raise
    return w, out


def hand_over(ctx: Context, store: str, w1: Worker) -> dict[str, Any]:
    """A second worker joins (partitions split), then leaves: seconds to both 200, seconds from
    its SIGTERM until the first is 200 again with every partition, and what each read."""
    parts = ctx.topics.partitions
    before = len(w1.recovered())
    w2 = Worker(ctx, store, ctx.work / f"{w1.work.name}-w2")
    try:
        join_s = w2.wait(healthy)
        w1.wait(lambda b: healthy(b) and 0 < len(b.get("assigned", ())) < parts if b else False)
        split_s = time.monotonic() - w2.t0
        joined_read = (w2.recovered() or [{}])[-1]
        t0 = time.monotonic()
        w2.terminate()
        w1.wait(lambda b: healthy(b, parts))
        back_s = time.monotonic() - t0
    finally:
        w2.stop("w2")
    reads = w1.recovered()[before:]
    shutil.rmtree(w2.data_dir, ignore_errors=True)
    return {"join_s": join_s, "split_s": split_s, "joined_read": joined_read,
            "handback_s": back_s, "handback_read": reads[-1] if reads else {},
            "w1_recoveries": reads}  # fmt: skip


def measure_store(ctx: Context, store: str, users: int, check_user: int) -> dict[str, Any]:
    work = ctx.work / f"{store}-{users}"
    w, out = restart(ctx, store, users, work)
    try:
        out["check"] = asyncio.run(check_numbering(ctx, check_user))
        out["handover"] = hand_over(ctx, store, w)
    finally:
        if w.run.proc.poll() is None:
            w.stop("last")
    shutil.rmtree(w.data_dir, ignore_errors=True)
    return out


def throughput_run(ctx: Context, store: str, users: int, label: str) -> dict[str, float]:
    """``users`` x 3 events on fresh topics through one worker on ``store`` (popularity on, as
    deployed): stream_bench's events/s from the jobs, and the RSS once caught up."""
    topics = fresh_topics(argparse.Namespace(partitions=ctx.topics.partitions), f"tp{store[:4]}")
    asyncio.run(ensure_topics(ctx.kafka, topics))
    asyncio.run(produce_bulk(ctx.kafka, topics.events, users, 3))
    env = {"INTEREST_STREAM_TABLE_STORE": store, "INTEREST_STREAM_METRICS_PORT": str(free_port())}
    (ctx.work / label).mkdir(parents=True, exist_ok=True)
    with environ(env):
        run = WorkerRun(
            ctx.kafka, topics, f"{topics.events.split('.')[0]}-stream", ctx.work / label
        )
    try:
        caught_up_s = run.wait_caught_up(users * 3)
        rss = rss_mb(run.proc.pid)
        out = {**run.throughput(), "caught_up_s": caught_up_s, "rss_mb": rss}
        run.stop()
    finally:
        run.close()
    shutil.rmtree(ctx.work / label / run.app_id, ignore_errors=True)
    return out


def throughput(ctx: Context, users: int, repeats: int) -> dict[str, Any]:
    """Alternating rounds (memory, rocksdb, then rocksdb, memory, ...): the machine is shared."""
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in STORES}
    for rep in range(repeats):
        for store in STORES if rep % 2 == 0 else STORES[::-1]:
            print(f"  throughput round {rep + 1}: {store} ...", flush=True)
            runs[store].append(throughput_run(ctx, store, users, f"tp-{store}-{rep}"))
    rates = {s: [r["events_per_s"] for r in runs[s]] for s in STORES}
    return {
        "users": users,
        "events": users * 3,
        "runs": runs,
        "events_per_s_best": {s: max(v) for s, v in rates.items()},
        "events_per_s_mean": {s: sum(v) / len(v) for s, v in rates.items()},
        "ratio_best": max(rates["rocksdb"]) / max(rates["memory"]),
        "ratio_mean": sum(rates["rocksdb"]) / sum(rates["memory"]),
        "ratio_per_round": [r / m for r, m in zip(rates["rocksdb"], rates["memory"], strict=True)],
    }


def add_per_user(out: dict[str, Any], empty_rss: float, users: int) -> None:
    """Memory and disk per user: RSS over the empty worker's, after the first start (every
    user just read: RocksDB's memtables and cache warm) and after the restart (read nothing)."""
    mib = 2**20
    out["rss_bytes_per_user_first"] = per_user(out["rss_mb_first"] * mib, empty_rss * mib, users)
    out["rss_bytes_per_user"] = per_user(out["rss_mb_restart"] * mib, empty_rss * mib, users)
    out["disk_bytes_per_user"] = per_user(out["disk_mb"] * mib, 0.0, users)


def run_sizes(ctx: Context, args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Fill up to each size, then measure both stores on it (results written as they come)."""
    filled = 0
    for users in sorted(set(args.users)):
        print(f"fill: users {filled:,} .. {users:,} -> {ctx.changelog}", flush=True)
        results["fill"].append(asyncio.run(fill(ctx, filled, users)))
        filled = users
        size: dict[str, Any] = results["sizes"].setdefault(str(users), {})
        for k, store in enumerate(STORES):
            print(f"  {store} at {users:,} users ...", flush=True)
            out = measure_store(ctx, store, users, check_user=users // 2 + k)
            add_per_user(out, results["empty"][store]["rss_mb"], users)
            size[store] = out
            print(f"    {summary_line(out)}", flush=True)
        write(results, args)


def summary_line(o: Mapping[str, Any]) -> str:
    h = o["handover"]
    return (
        f"first {o['first_start_s']:.1f} s (read {o['first_read'].get('to_read')}), "
        f"restart {o['restart_s']:.1f} s (read {o['restart_read'].get('to_read')}), "
        f"join {h['join_s']:.1f} s, hand-back {h['handback_s']:.1f} s "
        f"(read {h['handback_read'].get('to_read')}), RSS {o['rss_mb_restart']:.0f} MB, "
        f"disk {o['disk_mb']:.1f} MB, check {'ok' if o['check']['ok'] else 'FAILED'}"
    )


def table_rows(results: Mapping[str, Any]) -> list[list[str]]:
    """The size x store table: one row per (users, store)."""
    head = ["users", "store", "first start s", "restart s", "read at restart", "join s",
            "hand-back s", "read at hand-back", "RSS MB first/restart", "RSS B/user", "disk MB",
            "disk B/user", "n = last_n+1"]  # fmt: skip
    rows = [head]
    for store, e in results["empty"].items():
        rows.append(["0", store, f"{e['start_s']:.1f}", "", "", "", "", "", f"{e['rss_mb']:.0f}",
                     "", "", "", ""])  # fmt: skip
    for users, by_store in sorted(results["sizes"].items(), key=lambda kv: int(kv[0])):
        for store, o in by_store.items():
            h = o["handover"]
            rows.append([
                f"{int(users):,}", store, f"{o['first_start_s']:.1f}", f"{o['restart_s']:.1f}",
                f"{o['restart_read'].get('to_read', '?'):,}", f"{h['join_s']:.1f}",
                f"{h['handback_s']:.1f}", f"{h['handback_read'].get('to_read', '?'):,}",
                f"{o['rss_mb_first']:.0f} / {o['rss_mb_restart']:.0f}",
                f"{o['rss_bytes_per_user_first']:.0f} / {o['rss_bytes_per_user']:.0f}",
                f"{o['disk_mb']:.1f}", f"{o['disk_bytes_per_user']:.0f}",
                "ok" if o["check"]["ok"] else f"FAILED {o['check']['got_n']}",
            ])  # fmt: skip
    return rows


def report(results: Mapping[str, Any]) -> None:
    rows = table_rows(results)
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    print()
    for r in rows:
        print("  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)))
    for f in results["fill"]:
        print(f"fill {f['users']:,} users: {f['users_per_s']:,.0f} users/s "
              f"({f['build_s']:.1f} s of {f['seconds']:.1f} s building states; "
              f"{f['value_bytes_mean']:.0f} B/state)")  # fmt: skip
    tp = results.get("throughput")
    if tp:
        best, mean = tp["events_per_s_best"], tp["events_per_s_mean"]
        print(f"throughput {tp['users']:,} users x 3 events, best (mean) events/s: "
              f"memory {best['memory']:,.0f} ({mean['memory']:,.0f}), rocksdb "
              f"{best['rocksdb']:,.0f} ({mean['rocksdb']:,.0f}); ratio rocksdb/memory "
              f"{tp['ratio_best']:.2f} best, {tp['ratio_mean']:.2f} mean, rounds "
              + ", ".join(f"{r:.2f}" for r in tp["ratio_per_round"]))  # fmt: skip
    t = results.get("targets", {})
    if t:
        verdict = {True: "met", False: "NOT met", None: "not measured"}
        print(f"targets at {t['users']:,} users (RocksDB): " + "; ".join(
            f"{k} {v['value'] if v['value'] is None else round(v['value'], 2)} "
            f"(target {v['target']}: {verdict[v['met']]})"
            for k, v in t.items() if isinstance(v, dict)))  # fmt: skip


def write(results: Mapping[str, Any], args: argparse.Namespace) -> Path:
    suffix = "_quick" if args.quick else ""
    out: Path = args.out or ROOT / "bench" / "results" / f"state_bench{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--users", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--quick", action="store_true", help="10k and 100k users")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--tp-users", type=int, default=10_000, help="throughput: users x 3 events")
    p.add_argument("--tp-repeats", type=int, default=2, help="throughput rounds per store")
    p.add_argument("--out", type=Path, help="JSON path (default bench/results/state_bench*.json)")
    p.add_argument("--keep", action="store_true", help="keep the scratch dir (worker logs)")
    p.add_argument("--report", type=Path, help="print a results JSON (derived fields redone)")
    args = p.parse_args(argv)
    if args.quick:
        args.users = [10_000, 100_000]
    return args


def reprint(path: Path) -> int:
    """Print a results file's table, with its derived fields (per user, targets) redone."""
    results = json.loads(path.read_text())
    for users, by_store in results["sizes"].items():
        for store, out in by_store.items():
            add_per_user(out, results["empty"][store]["rss_mb"], int(users))
    results["targets"] = targets(results)
    path.write_text(json.dumps(results, indent=2) + "\n")
    report(results)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        return reprint(args.report)
    kafka = KafkaSettings()
    work = Path(tempfile.mkdtemp(prefix="state-bench-"))
    topics = fresh_topics(args, "state")
    ctx = Context(kafka, topics, work)
    machine = machine_info()
    machine["command"] = " ".join([sys.executable, "-m", "bench.state_bench", *sys.argv[1:]])
    results: dict[str, Any] = {
        "machine": {**machine, "kafka": kafka.bootstrap, "app_id": ctx.app_id},
        "args": {k: str(v) for k, v in vars(args).items()},
        "empty": {},
        "fill": [],
        "sizes": {},
    }
    ticks, t0 = cpu_ticks(), time.monotonic()
    try:
        for store in STORES:
            print(f"empty app, {store} store (creates the topics) ...", flush=True)
            results["empty"][store] = empty_start(ctx, store)
        run_sizes(ctx, args, results)
        print(f"throughput, {args.tp_users:,} users x 3 events ...", flush=True)
        results["throughput"] = throughput(ctx, args.tp_users, args.tp_repeats)
    finally:
        results["wall_s"] = time.monotonic() - t0
        results["cpu"] = cpu_share(ticks, cpu_ticks())
        results["targets"] = targets(results)
        out = write(results, args)
    report(results)
    print(f"\nwrote {out} ({results['wall_s']:.0f} s; machine {results['cpu']})")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
