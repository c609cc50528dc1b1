"""Hostile input at scale on a real stream worker: 10k records, half of them bad
(tests/fuzz_messages.py: random bytes, invalid UTF-8, deep nesting, huge numbers, NaN/Infinity,
lone surrogates, ~1 MB strings, wrong types, disagreeing keys, duplicate JSON keys, control
characters), against a baseline of as many good events on the same worker settings in the same
run.

Per run: records/s from the first record sent to the last job or dead letter out, the worker's
RSS (start, peak, end), every bad record on the DLQ with a reason (counted by source), every good
event in a job once, and whether the worker process survived. The headline is the ratio of the
two runs' records/s. Prints a table and writes bench/results/fuzz_bench.json.

    INTEREST_BROKER_PORT=39200 INTEREST_DATA_DIR=/tmp/fuzz-data interest-stream broker start
    INTEREST_KAFKA_BOOTSTRAP=127.0.0.1:39200 python -m bench.fuzz_bench [--records 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests"):  # the generator and the worker process live with the tests
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from aiokafka import AIOKafkaConsumer  # noqa: E402
from fuzz_messages import Message, good_plain, mixed  # noqa: E402
from integration.test_fuzz import produce, rss_kib  # noqa: E402
from integration.test_stream_worker import worker_env  # noqa: E402
from kafka_testing import StreamWorkerProcess  # noqa: E402

from bench.machine import cpu_share, cpu_ticks  # noqa: E402
from bench.stream_bench import machine_info  # noqa: E402
from streams.contracts.dlq import DeadLetter  # noqa: E402
from streams.contracts.jobs import UpdateJob  # noqa: E402
from streams.settings import KafkaSettings, TopicSettings  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402


class Reader:
    """A topic's records, each with its arrival time, collected in a background thread."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.records: list[tuple[float, Any]] = []
        self._stop = threading.Event()

        async def collect() -> None:
            consumer = AIOKafkaConsumer(
                topic,
                bootstrap_servers=kafka.bootstrap,
                group_id=None,
                auto_offset_reset="earliest",
                fetch_max_bytes=64 * 2**20,
                max_partition_fetch_bytes=8 * 2**20,
            )
            await consumer.start()
            seen: set[tuple[int, int]] = set()
            try:
                while not self._stop.is_set():
                    for batch in (await consumer.getmany(timeout_ms=200)).values():
                        now = time.monotonic()
                        # A consumer that started with the topic (leaders not yet elected) can
                        # be reset and read a range twice: each record counts once, by offset.
                        fresh = [r for r in batch if (r.partition, r.offset) not in seen]
                        seen.update((r.partition, r.offset) for r in fresh)
                        self.records.extend((now, r) for r in fresh)
            finally:
                await consumer.stop()

        self._thread = threading.Thread(target=lambda: asyncio.run(collect()), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def run(kafka: KafkaSettings, msgs: list[Message], name: str, work: Path) -> dict[str, Any]:
    """One worker on fresh topics, ``msgs`` sent once it consumes; what came out."""
    prefix = f"fuzzbench-{name}-{int(time.time())}"
    topics = TopicSettings(
        events=f"{prefix}.events", dlq=f"{prefix}.events.dlq", updates=f"{prefix}.updates"
    )
    asyncio.run(ensure_topics(kafka, topics))
    jobs, dlq = Reader(kafka, topics.updates), Reader(kafka, topics.dlq)
    log = work / f"{name}.log"
    worker = StreamWorkerProcess(worker_env(kafka, topics, work / name), log)
    try:
        while "stream worker owns partitions" not in log.read_text(errors="replace"):
            assert worker.proc.poll() is None, f"the worker exited: see {log}"
            time.sleep(0.2)
        rss = [rss_kib(worker.proc.pid)]
        good = Counter(m.good for m in msgs if m.good is not None)
        n_good, n_bad = len(good), len(msgs) - len(good)
        t0 = time.monotonic()
        sources = asyncio.run(produce(kafka, topics.events, msgs))
        deadline = t0 + 300
        while time.monotonic() < deadline and worker.proc.poll() is None:
            rss.append(rss_kib(worker.proc.pid))
            events = sum(len(UpdateJob.from_json(r.value).events) for _, r in jobs.records)
            if events >= n_good and len(dlq.records) >= n_bad:
                break
            time.sleep(0.5)
        time.sleep(1)  # anything more (a duplicate) would show up now
        jobs.stop()
        dlq.stop()
        done = max(t for t, _ in [*jobs.records, *dlq.records])
        letters = [DeadLetter.from_record(r.key, r.value, r.headers) for _, r in dlq.records]
        job_events = Counter(
            (job.user_id, e.event_id)
            for job in (UpdateJob.from_json(r.value) for _, r in jobs.records)
            for e in job.events
        )
        bad_sources = [s for s, m in zip(sources, msgs, strict=True) if m.good is None]
        return {
            "records": len(msgs),
            "bad": n_bad,
            "megabytes": round(sum(len(m.value or b"") for m in msgs) / 1e6, 1),
            "seconds": round(done - t0, 2),
            "records_per_s": round(len(msgs) / (done - t0), 1),
            "survived": worker.proc.poll() is None,
            "bad_on_dlq_once": Counter(d.source for d in letters) == Counter(bad_sources),
            "reasons": dict(Counter(d.reason for d in letters)),
            "good_in_jobs_once": job_events == good,
            "rss_kib": {"start": rss[0], "peak": max(rss), "end": rss[-1]},
            "exit_code": worker.terminate() if worker.proc.poll() is None else worker.proc.poll(),
        }
    finally:
        jobs.stop()
        dlq.stop()
        worker.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--records", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=18)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fuzz_bench.json")
    args = p.parse_args(argv)
    kafka = KafkaSettings()
    work = Path(tempfile.mkdtemp(prefix="fuzz-bench-"))
    ticks = cpu_ticks()
    rng = random.Random(args.seed)
    baseline = [good_plain(rng, i) for i in range(args.records)]
    hostile = mixed(args.records, seed=args.seed)
    results: dict[str, Any] = {"machine": {**machine_info(), "kafka": kafka.bootstrap}}
    results["args"] = {k: str(v) for k, v in vars(args).items()}
    command = [sys.executable, "-m", "bench.fuzz_bench", *sys.argv[1:]]
    results["machine"]["command"] = " ".join(command)
    results["good_only"] = run(kafka, baseline, "good", work)
    results["hostile"] = run(kafka, hostile, "hostile", work)
    results["ratio_hostile_vs_good_records_per_s"] = round(
        results["hostile"]["records_per_s"] / results["good_only"]["records_per_s"], 3
    )
    results["machine"]["cpu_share"] = cpu_share(ticks, cpu_ticks())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'run':<10} {'records':>8} {'bad':>6} {'rec/s':>8} {'RSS start/peak/end MiB':>24} "
          f"{'DLQ ok':>7} {'jobs ok':>8} {'alive':>6}")  # fmt: skip
    for name in ("good_only", "hostile"):
        r = results[name]
        rss = "/".join(f"{r['rss_kib'][k] / 1024:.0f}" for k in ("start", "peak", "end"))
        flags = (r["bad_on_dlq_once"], r["good_in_jobs_once"], r["survived"])
        print(f"{name:<10} {r['records']:>8} {r['bad']:>6} {r['records_per_s']:>8} {rss:>24} "
              f"{flags[0]!s:>7} {flags[1]!s:>8} {flags[2]!s:>6}")  # fmt: skip
    mb = [results[n]["megabytes"] for n in ("good_only", "hostile")]
    print(f"hostile / good records/s: {results['ratio_hostile_vs_good_records_per_s']} "
          f"(carrying {mb[1]} MB vs {mb[0]} MB)")  # fmt: skip
    print(f"wrote {args.out}")
    ok = all(results[n][k] for n in ("good_only", "hostile")
             for k in ("survived", "bad_on_dlq_once", "good_in_jobs_once"))  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
