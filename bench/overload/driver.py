"""``python -m bench.overload``: the arguments, the run from start to end, the table, the JSON."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import bench.overload
from bench.machine import cpu_share, cpu_ticks
from bench.overload.analysis import summarise, verdicts
from bench.overload.pipeline import Pipeline
from bench.overload.procs import start_broker
from bench.overload.promtool import PROMTOOL_TEST, write_promtool_test
from bench.overload.series import columnar
from bench.processes import ROOT
from bench.stream_bench import machine_info
from streams.settings import KafkaSettings


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; ``--quick`` shortens the phases (20 s steady, 30 s burst)."""
    p = argparse.ArgumentParser(description=(bench.overload.__doc__ or "").split("\n\n")[0])
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


def report(r: Mapping[str, Any]) -> None:
    """Print the tables: phases, memory, lag, RSS by phase, counters, limits, verdicts."""
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
    """One whole run: broker, pipeline, load, stop; returns the results (``_series``: the
    scraped series, saved beside them). The work folder is removed unless the run failed or
    ``--keep`` is given."""
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
    """Run the bench (or only write the promtool test with ``--from-series``); writes the
    results and series JSON, prints the table; 1 when a verdict fails or promtool does."""
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
    series_path = out.with_name(f"{out.stem}_series{out.suffix}")
    if "overload" in out.name:  # overload_quick.json -> overload_series_quick.json
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
