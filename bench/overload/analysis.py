"""What a run shows: stream worker memory, lag of both groups, the limits, and the verdicts.

Everything here reads the sampler's 1 s samples and scraped series after the run; nothing
touches a process, so a saved run could be analysed again.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bench.overload.sampler import in_phase
from streams.stream.settings import StreamSettings

#: Room above the steady RSS for what a burst holds besides the memtables: batches of
#: ``batch_max`` records, the consumer's fetch buffers, the producer's queue.
BATCH_SLACK_MB = 64


def med(values: Iterable[float]) -> float:
    """The median of the values that are not NaN (NaN when none are)."""
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
    """How much counter ``name`` of worker ``kind`` grew between its first and last scrape."""
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


def summarise(
    samples: list[dict[str, Any]],
    series: list[dict[str, Any]],
    phases: list[dict[str, Any]],
    thresholds: Mapping[str, float],
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    """The run's summary: phases (seconds from the first sample), memory and lag per
    worker, counters, the stream worker's limits and RSS per phase, failed scrapes."""
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
