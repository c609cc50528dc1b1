"""The scraped series: which families the bench keeps, how it stores them, how promtool reads them.

The workers' ``/metrics`` are scraped every second; only the families the alert rules read
(:data:`ALERT_SERIES`) and a few counters for the report (:data:`REPORT_SERIES`) are kept, and
saved one column per sample key (:func:`columnar`) so a run's series can be replayed later. The
promtool test renames the bench's groups and targets to the deployed ones (:data:`DEPLOYED`,
:data:`DEPLOYED_GROUPS`) and writes values in promtool's notation (:func:`expand`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: What the generated promtool test calls the groups and targets (deploy/prometheus's defaults).
DEPLOYED = {
    "stream": {"job": "interest-stream", "instance": "127.0.0.1:8766", "worker": "stream"},
    "embed": {"job": "interest-embed", "instance": "127.0.0.1:8765", "worker": "embed"},
}
#: The deployed consumer groups the bench's own groups are renamed to in the test.
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
    """``name{a="x",...}`` with the labels sorted, as promtool and ALERTS print them."""
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
