"""The chaos run from start to end: arguments, processes, faults, drain, verification, report.

``python -m bench.chaos`` (``make chaos``: 100k events, 10k users, 5 kills of each worker kind,
one broker restart, a 30 s store outage) or smaller, e.g. the test suite's
``--events 3000 --users 300 --kills 1 --outage-s 5 --publish-s 45``. Exit status 0 only when
nothing was lost, nothing applied twice and every vector matches the recompute.

The run uses only its own things: a broker on ``--broker-port`` (controller on the next port)
with its data under ``--dir`` (default a fresh ``/tmp/chaos-*``), topics and groups named after
the run, an embedded store in that folder, the embed worker's API on ``--api-port``. ``INTEREST_*``
variables of the calling shell are ignored (workers and verification use the defaults), so a
run is comparable with another. The folder is removed after a passing run unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.chaos import verify
from bench.chaos.procs import Broker, RunPaths, Worker, run_env
from bench.chaos.run import Plan, Publisher, Timeline, run_faults, wait_drained, watch
from bench.chaos.workload import Workload, build
from bench.machine import cpu_share, cpu_ticks

ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=100_000, help="distinct valid events")
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--dup-rate", type=float, default=0.05, help="share of events re-sent")
    p.add_argument("--invalid-rate", type=float, default=0.01, help="invalid records (DLQ)")
    p.add_argument("--texts", type=int, default=400, help="vocabulary size")
    p.add_argument("--kills", type=int, default=5, help="kill -9 of each worker kind")
    p.add_argument("--outage-s", type=float, default=30.0, help="store unavailable this long")
    p.add_argument("--publish-s", type=float, default=420.0, help="publishing takes this long")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--broker-port", type=int, default=29401)
    p.add_argument("--api-port", type=int, default=29403)
    p.add_argument("--drain-timeout-s", type=float, default=900.0)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", type=Path, default=None, help="run folder (default /tmp/chaos-*)")
    p.add_argument("--keep", action="store_true", help="keep the run folder")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "chaos.json")
    return p.parse_args(argv)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def healthy(api_port: int) -> bool:
    """Whether the embed worker's /healthz answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


async def wait_healthy(api_port: int, timeout_s: float = 240) -> float:
    """Seconds until the embed worker's /healthz answers 200."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if await asyncio.to_thread(healthy, api_port):
            return time.monotonic() - t0
        await asyncio.sleep(1.0)
    raise RuntimeError(f"the embed worker did not answer /healthz in {timeout_s:.0f} s")


async def chaos(args: argparse.Namespace, paths: RunPaths, workload: Workload) -> dict[str, Any]:
    """Everything up to the workers' stop: start, publish under faults, drain, read the log."""
    from streams.settings import KafkaSettings, TopicSettings
    from streams.topics import ensure_topics

    run_id = uuid.uuid4().hex[:8]
    prefix = f"chaos-{run_id}"
    topics = TopicSettings(
        events=f"{prefix}.events", dlq=f"{prefix}.events.dlq", updates=f"{prefix}.updates",
        popularity=f"{prefix}.items.popularity", partitions=args.partitions,
    )  # fmt: skip
    env = run_env(paths, args.broker_port, args.api_port, topics, run_id)
    kafka = KafkaSettings(bootstrap=f"127.0.0.1:{args.broker_port}")
    broker = Broker(env)
    workers = {k: Worker(k, env, paths.logs) for k in ("stream", "embed")}
    out: dict[str, Any] = {"run_id": run_id}
    try:
        await asyncio.to_thread(broker.start)
        await ensure_topics(kafka, topics)
        for w in workers.values():
            w.start()
        out["embed_ready_s"] = round(await wait_healthy(args.api_port), 1)
        out.update(await _publish_under_faults(args, paths, workload, workers, broker))
        for kind in ("stream", "embed"):
            out[f"{kind}_stop_rc"] = workers[kind].stop()
        out["events_log"] = await verify.read_all(kafka, topics.events, topics.partitions)
        out["dlq_log"] = await verify.read_all(kafka, topics.dlq, topics.partitions)
    finally:
        for w in workers.values():
            if w.alive():
                w.stop(timeout_s=30)
        await asyncio.to_thread(_stop_quietly, broker)
    return out


def _stop_quietly(broker: Broker) -> None:
    try:
        broker.stop()
    except Exception as exc:  # the run's result matters more than a failed stop
        print(f"stopping the broker failed: {exc}", file=sys.stderr)


async def _publish_under_faults(
    args: argparse.Namespace, paths: RunPaths, workload: Workload, workers: dict[str, Worker],
    broker: Broker,
) -> dict[str, Any]:  # fmt: skip
    plan = Plan.draw(args.publish_s, args.kills, args.outage_s, args.seed)
    timeline = Timeline()
    publisher = Publisher(
        f"127.0.0.1:{args.broker_port}", broker.env["INTEREST_TOPICS_EVENTS"], workload,
        args.publish_s,
    )  # fmt: skip
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(workers, timeline, stop))
    print(f"publishing {len(workload.records):,} records over ~{args.publish_s:.0f} s; faults:")
    try:
        await asyncio.gather(
            publisher.run(timeline),
            run_faults(plan, timeline, workers, broker, paths, publisher),
        )
        print(f"  [{timeline.now():6.1f} s] published and faults done; draining", flush=True)
        want = {u: len(ids) for u, ids in workload.expected.items()}
        drained_at, behind = await wait_drained(want, args.api_port, timeline, args.drain_timeout_s)
    finally:
        stop.set()
        await watcher
    return {
        "timeline": timeline.faults,
        "unexpected_exits": timeline.unexpected_exits,
        "publish_s": round(timeline.publish_s, 1),
        "publish_retries": timeline.publish_retries,
        "last_fault_s": round(timeline.last_fault_s, 1),
        "drained_at_s": None if drained_at is None else round(drained_at, 1),
        "users_behind_at_timeout": behind,
        "kills": {k: len(w.kills) for k, w in workers.items()},
        "broker_restarts": broker.restarts,
    }


def check(args: argparse.Namespace, paths: RunPaths, workload: Workload,
          run: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Compare the store with the recompute over the log's distinct valid events."""
    t0 = time.monotonic()
    expected = verify.expected_from_log(run.pop("events_log"))
    dlq = verify.dead_letters(run.pop("dlq_log"))
    in_log = {u: [e.event_id for e in events] for u, events in expected.events.items()}
    generated = sum(len(v) for v in workload.expected.values())
    missing_from_log = sum(
        len(set(ids) - set(in_log.get(u, ()))) for u, ids in workload.expected.items()
    )
    reordered = sum(1 for u, ids in workload.expected.items() if in_log.get(u) != ids)
    invalid_ids = {r.event_id for r in workload.records if r.kind == "invalid"}
    from models.settings import ProfileSettings

    want = verify.recompute(expected.events, ProfileSettings().spec(), verify.load_encoder())
    got = verify.read_users(paths.qdrant, sorted(expected.events))
    comparison = verify.compare(expected.events, want, got, args.atol)
    return {
        "log": {"records": expected.records, "invalid": expected.invalid,
                "duplicates": expected.duplicates,
                "distinct_valid": sum(len(v) for v in expected.events.values())},
        "generated_distinct_valid": generated,
        "publisher_lost": missing_from_log,
        "users_reordered_by_publisher": reordered,
        "dead_letters": {"records": dlq["records"], "by_stage_reason": dlq["by_stage_reason"],
                         "invalid_sent": len(invalid_ids),
                         "invalid_missing": len(invalid_ids - dlq["distinct_ids"])},
        "comparison": {**asdict(comparison), "ok": comparison.ok},
        "verify_s": round(time.monotonic() - t0, 1),
    }  # fmt: skip


def log_counts(paths: RunPaths) -> dict[str, Any]:
    """What the workers' logs say about the faults: store retries, and each traceback's
    exception line (a kill -9 leaves none; a broker restart may make a client log one)."""
    retries, tracebacks = 0, []
    for log in sorted(paths.logs.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        if log.name.startswith("embed"):
            retries += sum("retrying in" in line for line in lines)
        for i, line in enumerate(lines):
            if line.startswith("Traceback (most recent call last)"):
                ends = (x for x in lines[i + 1 :] if x and not x[0].isspace())
                tracebacks.append(f"{log.name}: {next(ends, '?')[:200]}")
    return {"embed_store_retries_logged": retries, "worker_tracebacks": tracebacks}


def machine_info(argv: list[str]) -> dict[str, Any]:
    return {
        "python": platform.python_version(), "platform": platform.platform(),
        "cpus": os.cpu_count(), "store": "embedded (qdrant-edge), fault file",
        "command": shlex.join([sys.executable, "-m", "bench.chaos", *argv]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }  # fmt: skip


def passed(r: dict[str, Any]) -> bool:
    v = r["verify"]
    return bool(
        v["comparison"]["ok"] and v["publisher_lost"] == 0 and r["run"]["drained_at_s"] is not None
        and v["dead_letters"]["invalid_missing"] == 0 and v["log"]["distinct_valid"]
        == v["generated_distinct_valid"]
    )  # fmt: skip


def summary(r: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers, flat (what a README quotes)."""
    run, c = r["run"], r["verify"]["comparison"]
    drained = run["drained_at_s"]
    return {
        "events": c["events_expected"], "users": c["users"],
        "kills_stream": run["kills"]["stream"], "kills_embed": run["kills"]["embed"],
        "broker_restarts": len(run["broker_restarts"]), "store_outage_s": r["args"]["outage_s"],
        "events_lost": c["events_lost"], "events_applied_twice": c["events_applied_twice"],
        "max_abs_diff": c["max_abs_diff"],
        "drain_after_last_fault_s": None if drained is None
        else round(drained - run["last_fault_s"], 1),
        "drain_after_publish_s": None if drained is None else round(drained - run["publish_s"], 1),
        "wall_s": r["wall_s"], "passed": r["passed"],
    }  # fmt: skip


def report(r: dict[str, Any]) -> None:
    """The table."""
    run, v, a = r["run"], r["verify"], r["args"]
    c, dlq = v["comparison"], v["dead_letters"]
    drain = run["drained_at_s"]
    after_fault = "timeout" if drain is None else f"{drain - run['last_fault_s']:.1f} s"
    after_publish = "timeout" if drain is None else f"{drain - run['publish_s']:.1f} s"
    rows = [
        ("events: distinct valid / users", f"{v['log']['distinct_valid']:,} / {c['users']:,}"),
        ("records published (dups, invalid)",
         f"{v['log']['records']:,} ({v['log']['duplicates']:,}, {v['log']['invalid']:,})"),
        ("kill -9 stream / embed", f"{run['kills']['stream']} / {run['kills']['embed']}"),
        ("broker restarts (down s)",
         ", ".join(str(b["down_s"]) for b in run["broker_restarts"]) or "0"),
        ("store outage (s) / retries logged",
         f"{a['outage_s']} / {r['logs']['embed_store_retries_logged']}"),
        ("workers exiting by themselves", str(len(run["unexpected_exits"]))),
        ("tracebacks in the workers' logs", str(len(r["logs"]["worker_tracebacks"]))),
        ("published in (s)", f"{run['publish_s']:.1f}"),
        ("drain after the last fault", after_fault),
        ("drain after publishing ended", after_publish),
        ("events lost", f"{c['events_lost']:,}"),
        ("events applied twice", f"{c['events_applied_twice']:,}"),
        ("users: missing / seq wrong / vectors off",
         f"{c['users_missing']} / {c['seq_mismatches']} / {c['vector_mismatches']}"),
        ("max |stored - recomputed|", f"{c['max_abs_diff']:.2e} (tolerance {a['atol']})"),
        ("dead letters (invalid sent / missing)",
         f"{dlq['records']:,} ({dlq['invalid_sent']:,} / {dlq['invalid_missing']})"),
        ("publisher: lost / retries", f"{v['publisher_lost']} / {run['publish_retries']}"),
        ("result", "PASS" if r["passed"] else "FAIL"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    print(f"\n{'measure':<{width}} | value\n{'-' * width}-|------")
    for k, val in rows:
        print(f"{k:<{width}} | {val}")
    for line in [*c["examples"], *r["logs"]["worker_tracebacks"][:10]]:
        print(f"  {line}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    for name in [k for k in os.environ if k.startswith("INTEREST_")]:
        del os.environ[name]  # workers and verification both use the defaults
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for port in (args.broker_port, args.broker_port + 1, args.api_port):
        if not port_free(port):
            print(f"port {port} is in use: choose --broker-port/--api-port", file=sys.stderr)
            return 2
    root = args.dir or Path(tempfile.mkdtemp(prefix="chaos-", dir="/tmp"))
    paths = RunPaths(root)
    paths.root.mkdir(parents=True, exist_ok=True)
    workload = build(
        args.events, args.users, dup_rate=args.dup_rate, invalid_rate=args.invalid_rate,
        texts=args.texts, seed=args.seed, now_ms=int(time.time() * 1000),
    )  # fmt: skip
    print(f"chaos run in {root}: {workload.counts()}", flush=True)
    ticks, started = cpu_ticks(), time.monotonic()
    results: dict[str, Any] = {"machine": machine_info(argv),
                               "args": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip
    results["args"]["atol"] = args.atol
    results["args"]["outage_s"] = args.outage_s
    results["workload"] = workload.counts()
    results["run"] = asyncio.run(chaos(args, paths, workload))
    results["verify"] = check(args, paths, workload, results["run"])
    results["logs"] = log_counts(paths)
    results["wall_s"] = round(time.monotonic() - started, 1)
    results["machine"]["cpu_share"] = cpu_share(ticks, cpu_ticks())
    results["passed"] = passed(results)
    results["summary"] = summary(results)
    report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")
    if results["passed"] and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"run folder kept: {root}")
    return 0 if results["passed"] else 1
