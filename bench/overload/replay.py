"""A run's scraped series replayed as Prometheus would hold them, and the alert rules of
deploy/prometheus/alerts.yml that need no PromQL engine, decided in Python.

The promtool test (:mod:`bench.overload.promtool`) asserts exactly the alerts this replay says
fire, so the rules and this reading of them must agree on the real overload's series.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from bench.overload.series import (
    ALERT_SERIES,
    DEPLOYED,
    DEPLOYED_GROUPS,
    parse_key,
    series_name,
)


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
        """InterestConsumerLagGrowing for ``group`` at ``i``: lag over 1,000 records and
        above its value 10 minutes earlier, for 15 minutes."""

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
        """At sample j: is series ``name`` with ``labels`` above ``limit`` (absent: 0)?"""
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
        """The per-target alerts at ``i``: worker down, not consuming, consumption
        absent, lag read failing."""
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
