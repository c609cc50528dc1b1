"""The chaos run itself: publish while faults happen, then wait for the pipeline to drain.

Faults, at moments drawn from the seed inside the publishing window: ``kills`` kill -9 of the
stream worker and as many of the embed worker (each restarted at once), one broker restart
(stop + start on the same data; the publisher waits for it, the workers do not), and one store
outage of ``outage_s`` (the fault file of :mod:`models.store.faults` exists meanwhile). A worker
that exits without being killed is started again too, and counted: it should never happen.
Drained means every user's stored ``seq`` has reached its number of distinct valid events, read
through the embed worker's Qdrant-compatible REST API while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from bench.chaos.procs import Broker, RunPaths, Worker
from bench.chaos.workload import Workload


@dataclass
class Plan:
    """What happens when, in seconds after publishing starts."""

    actions: list[tuple[float, str]]

    @classmethod
    def draw(cls, publish_s: float, kills: int, outage_s: float, seed: int) -> Plan:
        rng = random.Random(seed + 1)
        actions: list[tuple[float, str]] = []
        gap = min(30.0, 0.8 * publish_s / max(1, kills))
        for kind in ("stream", "embed"):
            times: list[float] = []
            while len(times) < kills:
                t = rng.uniform(0.05 * publish_s, 0.95 * publish_s)
                if all(abs(t - o) >= gap for o in times) or len(times) * gap > publish_s:
                    times.append(t)
            actions += [(t, f"kill {kind}") for t in times]
        down = rng.uniform(0.15 * publish_s, 0.3 * publish_s)
        actions += [(down, "store down"), (down + outage_s, "store up")]
        actions.append((max(rng.uniform(0.45, 0.6) * publish_s, down + outage_s + 1), "broker"))
        return cls(sorted(actions))


@dataclass
class Timeline:
    """What happened, for the report."""

    t0: float = field(default_factory=time.monotonic)
    faults: list[dict[str, Any]] = field(default_factory=list)
    unexpected_exits: list[dict[str, Any]] = field(default_factory=list)
    last_fault_s: float = 0.0
    publish_s: float = 0.0
    publish_retries: int = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, what: str, **extra: Any) -> None:
        self.last_fault_s = self.now()
        self.faults.append({"t_s": round(self.last_fault_s, 1), "fault": what, **extra})
        print(f"  [{self.last_fault_s:6.1f} s] {what} {extra or ''}", flush=True)


class Publisher:
    """Sends the workload's records at a steady rate; pauses while the broker restarts."""

    def __init__(self, bootstrap: str, topic: str, workload: Workload, seconds: float) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.records = workload.records
        self.rate = len(self.records) / seconds
        self.open = asyncio.Event()
        self.open.set()
        self.idle = asyncio.Lock()
        self.sent = 0

    async def run(self, timeline: Timeline) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )
        await producer.start()
        try:
            active, last = 0.0, time.monotonic()
            while self.sent < len(self.records):
                await self.open.wait()
                now = time.monotonic()
                active += min(now - last, 0.5)  # time paused does not count
                last = now
                due = min(len(self.records), int(active * self.rate) + 1)
                async with self.idle:
                    await self._send(producer, self.sent, due, timeline)
                self.sent = max(self.sent, due)
                await asyncio.sleep(0.1)
            timeline.publish_s = timeline.now()
        finally:
            await producer.stop()

    async def _send(self, producer: AIOKafkaProducer, a: int, b: int, timeline: Timeline) -> None:
        """Records ``a:b``, all acknowledged; on a failure the whole slice again (the stream
        workers drop the copies of those that did arrive)."""
        while True:
            try:
                futures = [
                    await producer.send(self.topic, r.value, key=r.user_id.encode())
                    for r in self.records[a:b]
                ]
                await asyncio.gather(*futures)
                return
            except KafkaError as exc:
                timeline.publish_retries += 1
                print(f"  publish retry ({type(exc).__name__}: {exc})", flush=True)
                await asyncio.sleep(1.0)


async def run_faults(
    plan: Plan, timeline: Timeline, workers: Mapping[str, Worker], broker: Broker,
    paths: RunPaths, publisher: Publisher,
) -> None:  # fmt: skip
    """Carry out the plan in order (one late action fires at once)."""
    for at, action in plan.actions:
        await asyncio.sleep(max(0.0, at - timeline.now()))
        if action.startswith("kill "):
            kind = action.split()[1]
            workers[kind].kill9(timeline.now())
            timeline.mark(f"kill -9 {kind}", restarted=True)
        elif action == "store down":
            paths.fault_file.touch()
            timeline.mark("store unavailable")
        elif action == "store up":
            paths.fault_file.unlink(missing_ok=True)
            timeline.mark("store available")
        elif action == "broker":
            publisher.open.clear()
            async with publisher.idle:
                started = timeline.now()
                await asyncio.to_thread(broker.restart, started)
            publisher.open.set()
            timeline.mark("broker restarted", **broker.restarts[-1])


async def watch(workers: Mapping[str, Worker], timeline: Timeline, stop: asyncio.Event) -> None:
    """Start again a worker that exited on its own (and count it: none should)."""
    while not stop.is_set():
        for w in workers.values():
            if not w.alive():
                code = w.proc.returncode if w.proc is not None else None
                exit_ = {"t_s": round(timeline.now(), 1), "worker": w.kind, "rc": code}
                timeline.unexpected_exits.append({**exit_, "log": f"{w.kind}-{w.starts}.log"})
                print(f"  {w.kind} worker exited by itself (rc {code}); restarting", flush=True)
                w.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def stored_seqs(api_port: int, collection: str = "users") -> dict[str, int]:
    """Every user's ``seq``, scrolled through the embed worker's read-only Qdrant REST API."""
    seqs: dict[str, int] = {}
    offset: Any = None
    while True:
        body = {"limit": 2000, "with_payload": ["user_id", "seq"], "with_vector": False}
        if offset is not None:
            body["offset"] = offset
        request = urllib.request.Request(
            f"http://127.0.0.1:{api_port}/collections/{collection}/points/scroll",
            data=json.dumps(body).encode(), headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:
            result = json.load(response)["result"]
        for point in result["points"]:
            payload = point.get("payload") or {}
            seqs[str(payload.get("user_id"))] = int(payload.get("seq", 0))
        offset = result.get("next_page_offset")
        if offset is None:
            return seqs


async def wait_drained(
    expected: Mapping[str, int], api_port: int, timeline: Timeline, timeout_s: float
) -> tuple[float | None, int]:
    """Seconds after the run's start when every user reached its expected ``seq`` (None on
    timeout), and how many users had not at the end."""
    deadline = time.monotonic() + timeout_s
    behind = len(expected)
    while time.monotonic() < deadline:
        try:
            seqs = await asyncio.to_thread(stored_seqs, api_port)
        except (OSError, urllib.error.URLError, ValueError, KeyError):
            await asyncio.sleep(2.0)  # the API is restarting or the store warming up
            continue
        behind = sum(1 for u, n in expected.items() if seqs.get(u, 0) < n)
        if behind == 0:
            return timeline.now(), 0
        await asyncio.sleep(2.0)
    return None, behind
