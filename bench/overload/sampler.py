"""The bench's 1 s samples: RSS of both workers, both ``/metrics``, consumer lag of both groups.

The lag is read by :class:`streams.lag.LagCollector` itself (the code behind
``interest-stream lag``), 1 s apart, finer than the workers' own 5 s refresh. The sampler also
decides when, after the burst, both groups count as drained (see :meth:`Sampler._note_drain`).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.overload.procs import Worker
from streams.lag import LagCollector
from streams.settings import KafkaSettings


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
        """Sample until :attr:`done` is set; an exception is kept in :attr:`failed`."""
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


def in_phase(samples: Sequence[Mapping[str, Any]], *names: str) -> list[Mapping[str, Any]]:
    """The samples taken during one of the phases ``names``."""
    return [s for s in samples if s["phase"] in names]


def lag_values(samples: Iterable[Mapping[str, Any]], kind: str) -> list[float]:
    """The lag sums of group ``kind`` in ``samples`` (those with a lag read)."""
    return [s["lag"][kind]["lag_sum"] for s in samples if "lag_sum" in s["lag"].get(kind, {})]
