"""The bench's load: steady, a 10x burst with one user's block first, then recover until drained.

The publisher sends on a fixed schedule per phase and notes how far behind it fell, so a
publisher that could not keep the burst's rate is visible in the report.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.freshness import user_for
from bench.overload.sampler import Sampler
from bench.stream_bench import event
from streams.settings import KafkaSettings


class Publisher:
    """Sends the bench's events on a fixed schedule per phase, noting how far behind it fell."""

    def __init__(self, kafka: KafkaSettings, topic: str, users: int) -> None:
        self.kafka, self.topic, self.users = kafka, topic, users
        self.i = 0
        self.phases: list[dict[str, Any]] = []
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Open the producer (``linger_ms=5``: the burst's rate needs batching)."""
        self.producer = AIOKafkaProducer(bootstrap_servers=self.kafka.bootstrap, linger_ms=5)
        await self.producer.start()

    async def stop(self) -> None:
        """Flush what is queued and close the producer."""
        if self.producer is not None:
            await self.producer.flush()
            await self.producer.stop()

    async def send(self, user: str, eid: str) -> None:
        """One event of ``user`` with id ``eid``, keyed by the user as the clients send them."""
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
    """One line on the latest sample: phase, lag of both groups, stream worker RSS."""
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
