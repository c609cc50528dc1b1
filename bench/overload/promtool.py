"""The promtool unit test written from a run's scraped series (``--write-promtool-test``).

See :func:`promtool_test` for how the run's seconds become the test's minutes; the test is
written to ``deploy/prometheus/alerts_overload_test.yml`` by default and checked with promtool
when one is installed.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.overload.replay import Replay, go_value
from bench.overload.series import DEPLOYED_GROUPS, expand, series_name
from bench.processes import ROOT

PROMTOOL_TEST = ROOT / "deploy" / "prometheus" / "alerts_overload_test.yml"


def alerts_query(exclude: Sequence[str] = ()) -> str:
    """The firing ``ALERTS`` series, less the alert names in ``exclude``."""
    extra = f',alertname!~"{"|".join(exclude)}"' if exclude else ""
    return f'ALERTS{{alertstate="firing"{extra}}}'


def expect_set(replay: Replay, i: int, exclude: Sequence[str]) -> dict[str, Any]:
    """A promql_expr_test: exactly the alerts :meth:`Replay.firing` decides fire at ``i``."""
    samples = [
        {"labels": series_name("ALERTS", {**a, "alertstate": "firing"}), "value": 1}
        for a in replay.firing(i)
    ]
    return {"expr": alerts_query(exclude), "eval_time": f"{i}m", "exp_samples": samples}


COUNTER_ALERTS = (
    "InterestDlqRateHigh",
    "InterestInvalidUpdateJobs",
    "InterestQdrantErrors",
    "InterestStreamPartitionStallRepaired",
)
FRESHNESS = "InterestFreshnessP99High"


def promtool_test(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The test (as a dict) and the lines of its header comment, from a saved run.

    Time is stretched 60x: sample k (1 s apart in the run) is minute k of the test, so the
    rules' ``for:`` of 2 to 15 minutes span 2 to 15 s of the real overload. Values are kept as
    scraped: record counts, statuses and the freshness histogram are the run's, and lag seconds
    are real seconds (not stretched, so ``> 300 s`` thresholds compare against what a 10x burst
    of this length really causes). Counters' rates come out 60x lower; the rules that read
    rates compare ratios (DLQ share, freshness quantile) or fire on any increase.
    """
    replay = Replay(data)
    phase = replay.phase
    idx = {p: [i for i, x in enumerate(phase) if x == p] for p in ("steady", "burst", "recover")}
    t_base, t_end = idx["steady"][-1], replay.n - 1
    embed = DEPLOYED_GROUPS["embed"]
    fire = [i for i in idx["burst"] + idx["recover"] if replay.lag_growing(embed, i)]
    if not fire:
        raise SystemExit("InterestConsumerLagGrowing never held 15 samples: use a longer --burst")
    lag = "interest_consumer_group_lag_sum"
    t_peak = max(fire, key=lambda i: replay.at(lag, i, group=embed) or 0.0)
    p99 = [replay.freshness_p99(i) for i in range(replay.n)]
    fresh = [i for i in range(10, replay.n) if all(p99[j] >= 36 for j in range(i - 10, i + 1))]
    checks = expr_checks(replay, (t_base, t_peak, t_end), fresh)
    rules, t_resolved = rule_checks(replay, fire, t_peak, t_end)
    test = {
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": k, "values": expand(v)} for k, v in sorted(replay.input.items())
                ],
                "alert_rule_test": rules,
                "promql_expr_test": checks,
            }
        ],
    }
    header = header_lines(data, replay, (t_base, t_peak, t_resolved, t_end), fire, fresh, p99)
    return test, header


def expr_checks(
    replay: Replay, times: tuple[int, int, int], fresh: Sequence[int]
) -> list[dict[str, Any]]:
    """The ``promql_expr_test`` list: the exact set of firing alerts at the end of steady, at the
    embed lag's peak and at the end (nothing at all at the first and last), and the freshness
    alert in the middle of the span where the p99 estimate stayed high (``fresh``), if any."""
    t_base, t_peak, t_end = times
    flat = replay.counters_flat()
    exclude = [FRESHNESS, *([] if flat else COUNTER_ALERTS)]
    checks = [expect_set(replay, t, exclude) for t in sorted({t_base, t_peak, t_end})]
    checks[0]["expr"] = checks[-1]["expr"] = alerts_query()  # nothing at all before and after
    if fresh:
        t_fresh = fresh[len(fresh) // 2]
        checks.append(
            {
                "expr": f'ALERTS{{alertname="{FRESHNESS}",alertstate="firing"}}',
                "eval_time": f"{t_fresh}m",
                "exp_samples": [
                    {
                        "labels": series_name(
                            "ALERTS",
                            {"alertname": FRESHNESS, "alertstate": "firing", "severity": "warning"},
                        ),
                        "value": 1,
                    }
                ],
            }
        )
    return checks


def rule_checks(
    replay: Replay, fire: Sequence[int], t_peak: int, t_end: int
) -> tuple[list[dict[str, Any]], int]:
    """The ``alert_rule_test`` list (LagGrowing fires at the peak with its annotations, has
    resolved once the backlog shrinks, and no outage alert fires at the peak) and the minute it
    checks the resolution at."""
    embed = DEPLOYED_GROUPS["embed"]
    value = go_value(replay.at("interest_consumer_group_lag_sum", t_peak, group=embed) or 0.0)
    growing = {
        "eval_time": f"{t_peak}m",
        "alertname": "InterestConsumerLagGrowing",
        "exp_alerts": [
            {
                "exp_labels": {"severity": "warning", "group": embed},
                "exp_annotations": {
                    "summary": f"Consumer group {embed} lag keeps growing",
                    "description": f"Lag {value} records and rising for 15 minutes: consumers "
                    "do not keep up.",
                },
            }
        ],
    }
    # The first minute after the peak where it no longer fires: the backlog shrinks.
    t_resolved = next((i for i in range(t_peak, replay.n) if i not in set(fire)), t_end)
    resolved = {"eval_time": f"{t_resolved}m", "alertname": growing["alertname"], "exp_alerts": []}
    quiet: list[dict[str, Any]] = [
        {"eval_time": f"{t_peak}m", "alertname": name, "exp_alerts": []}
        for name in ("InterestConsumerGroupStalled", "InterestConsumerGroupStopped",
                     "InterestWorkerDown", "InterestEmbedConsumptionAbsent")
    ]  # fmt: skip
    return [growing, resolved, *quiet], t_resolved


def header_lines(
    data: Mapping[str, Any],
    replay: Replay,
    times: tuple[int, int, int, int],
    fire: Sequence[int],
    fresh: Sequence[int],
    p99: Sequence[float],
) -> list[str]:
    """The generated file's header comment: where the series come from, how time is
    stretched, and what is asserted at which minute."""
    t_base, t_peak, t_resolved, t_end = times
    phase = replay.phase
    spans = []
    for p in ("steady", "burst", "recover"):
        idx = [i for i, x in enumerate(phase) if x == p]
        if idx:
            spans.append(f"{p} {idx[0]}m-{idx[-1]}m")
    finite = [v for v in p99 if not math.isnan(v)]
    lag, embed = "interest_consumer_group_lag_sum", DEPLOYED_GROUPS["embed"]
    peak, left = replay.at(lag, t_peak, group=embed), replay.at(lag, t_resolved, group=embed)
    seconds = max((v or 0) for k, vs in replay.input.items() if "seconds_max" in k for v in vs)
    fired = [a["alertname"] for i in range(replay.n) for a in replay.firing(i)]
    return [
        "Alert rules against a real overload: promtool test rules alerts_overload_test.yml",
        "",
        "GENERATED by bench.overload --write-promtool-test from the run recorded in",
        f"bench/results/{data['source']} ({data['when']}; {data['command']}).",
        "Do not edit by hand: rerun the bench (or --from-series on its saved series).",
        "",
        "Input series: every second of the run the bench scraped both workers' /metrics, as",
        "Prometheus would (job/instance/worker labels as deploy/prometheus/prometheus.yml adds",
        "them, the bench's group names renamed to the default ones), plus `up` (1 when the",
        "scrape answered). Only the families alerts.yml reads are kept; `_` = not scraped.",
        "",
        "Time is stretched 60x: second k of the run is minute k here (each second takes the",
        "last scrape at or before it; scrapes were ~1 s apart), so a rule's",
        "`for:` of 2-15 minutes spans 2-15 s of the real overload and the 10-minute delta and",
        "5-minute rate windows span 10 and 5 s. Values are as scraped: lag in records, status,",
        "the freshness histogram and lag SECONDS are real (not stretched: the 300 s threshold is",
        "compared with what this burst really caused). Counter rates come out 60x lower; the",
        "rules reading rates compare ratios (DLQ share, freshness quantile) or any increase.",
        "",
        f"Phases: {', '.join(spans)}. Peak embed lag {peak:.0f} records at {t_peak}m;"
        f" largest lag seconds {seconds:.1f} s;"
        f" freshness p99 (5-sample estimate) up to {max(finite, default=0):.1f} s.",
        f"Asserted: nothing fires at {t_base}m (end of steady) nor at {t_end}m (after the drain);",
        f"at {t_peak}m exactly the lag alerts computed from the series fire (InterestConsumer-",
        f"LagGrowing fires {fire[0]}m-{fire[-1]}m), and no stalled/stopped/down/absent alert:",
        "a consumer that is behind but working is not an outage. LagGrowing has resolved at",
        f"{t_resolved}m with {left or 0:.0f} records still to go: the backlog shrinks."
        + (f" Freshness p99 > 30 s held around {fresh[len(fresh) // 2]}m." if fresh else ""),
        "Of the alerts decided from the series without PromQL (all but the freshness and",
        f"counter-rate ones), these fire at some minute: {sorted(set(fired))}.",
    ]


def write_promtool_test(data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Write the test, run promtool on it when there is one; returns what happened."""
    import yaml

    test, header = promtool_test(data)
    body = yaml.safe_dump(test, sort_keys=False, width=10**9, allow_unicode=True)
    path.write_text("".join(f"# {h}".rstrip() + "\n" for h in header) + "\n" + body)
    print(f"wrote {path}")
    tool = find_promtool()
    if tool is None:
        return {"path": str(path), "promtool": "not found (scripts/install_deploy_tools.sh)"}
    proc = subprocess.run(
        [tool, "test", "rules", path.name], cwd=path.parent, capture_output=True, text=True
    )
    print(proc.stdout + proc.stderr)
    return {"path": str(path), "promtool_rc": proc.returncode}


def find_promtool() -> str | None:
    """The promtool binary: on PATH, beside the Python, or in the tools folder."""
    tools = Path(
        os.environ.get("INTEREST_TOOLS_DIR") or Path.home() / ".cache/interest-stream/tools"
    )
    for c in (shutil.which("promtool"), Path(sys.executable).parent / "promtool",
              tools / "bin" / "promtool"):  # fmt: skip
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return str(c)
    return None
