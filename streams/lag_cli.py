"""``interest-stream lag``: consumer lag of the service's groups, as Kafka's own tool prints it.

Columns GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG are those of
``kafka-consumer-groups.sh --describe`` (same rows, same numbers, ``-`` where the group has no
committed offset), plus LAG-SECONDS (age of the oldest unconsumed record) and a status line per
group. One difference by design: a committed offset beyond the log end prints a negative LAG in
Kafka's tool and 0 here. The status rules are in :mod:`streams.lag_rules`; ``--watch`` keeps a
window of samples so that stalled and lagging can be told from a backlog being worked off.

Registered on the main command by ``streams.cli``; also runs alone: ``python -m streams.lag_cli``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import sys

import click

from streams.lag import LagReader
from streams.lag_rules import DEFAULT_WINDOW, GroupSample, SampleWindow, Verdict, sample_to_dict
from streams.settings import EmbedSettings, KafkaSettings
from streams.topics import KafkaUnavailable

COLUMNS = ("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "LAG-SECONDS")
#: The stream worker's group when its settings module is absent (faust's app id).
FALLBACK_STREAM_GROUP = "interest-stream"


def default_groups() -> list[str]:
    """The service's groups: the embed workers' and the stream workers' (faust app id)."""
    groups = [EmbedSettings().group_id]
    try:
        from streams.stream.settings import StreamSettings
    except ImportError:
        groups.append(FALLBACK_STREAM_GROUP)
    else:
        groups.append(StreamSettings().app_id)
    return list(dict.fromkeys(groups))


def format_group(sample: GroupSample, verdict: Verdict) -> str:
    """A status line, then Kafka's table for the group (no table when it has no rows)."""
    members = f"{sample.members} member" + ("" if sample.members == 1 else "s")
    lines = [f"{sample.group}: {verdict.status} ({sample.state}, {members}) - {verdict.reason}"]
    if not sample.partitions:
        return lines[0]
    rows = [COLUMNS] + [
        (
            sample.group,
            p.topic,
            str(p.partition),
            _dash(p.committed),
            _dash(p.log_end),
            _dash(p.lag),
            "-" if p.lag_seconds is None else f"{p.lag_seconds:.1f}",
        )
        for p in sample.partitions
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines.append("")
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def _dash(value: int | None) -> str:
    return "-" if value is None else str(value)


async def watch_lag(
    kafka: KafkaSettings,
    groups: list[str],
    *,
    interval_s: float | None,
    window: int,
    count: int | None,
    as_json: bool = False,
) -> None:
    """Read and print samples: one without ``interval_s``, else ``count`` (or forever)."""
    history = SampleWindow(window)
    taken = 0
    async with LagReader(kafka) as reader:
        while True:
            samples = await reader.read(groups)
            verdicts = [history.add(s) for s in samples]
            taken += 1
            _print(samples, verdicts, as_json=as_json, watching=interval_s is not None)
            if interval_s is None or (count is not None and taken >= count):
                return
            await asyncio.sleep(interval_s)


def _print(
    samples: list[GroupSample], verdicts: list[Verdict], *, as_json: bool, watching: bool
) -> None:
    groups = [sample_to_dict(s, v) for s, v in zip(samples, verdicts, strict=True)]
    if as_json:
        # One document per sample; under --watch one compact line each (JSON lines).
        doc = {"groups": groups}
        click.echo(json.dumps(doc, sort_keys=True) if watching else json.dumps(doc, indent=2))
        return
    if watching:
        when = dt.datetime.fromtimestamp(samples[0].taken_at if samples else 0).isoformat(
            "T", "seconds"
        )
        click.echo(f"--- {when}")
    click.echo("\n\n".join(format_group(s, v) for s, v in zip(samples, verdicts, strict=True)))
    if watching:
        click.echo("")


@click.command("lag")
@click.option(
    "--group",
    "-g",
    "groups",
    multiple=True,
    metavar="GROUP",
    help="Consumer group to show (repeatable); default: the embed and stream workers' groups.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (one line per sample with --watch)."
)
@click.option(
    "--watch",
    type=click.FloatRange(min=0.1),
    is_flag=False,
    flag_value=5.0,
    default=None,
    metavar="[SECONDS]",
    help="Sample every SECONDS (default 5) until Ctrl-C; judges status over a window of samples.",
)
@click.option(
    "--window",
    type=click.IntRange(min=1),
    default=DEFAULT_WINDOW,
    show_default=True,
    help="Samples per group the status is judged over (with --watch).",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many samples (with --watch).",
)
def lag(
    groups: tuple[str, ...], as_json: bool, watch: float | None, window: int, count: int | None
) -> None:
    """Consumer lag per partition, as Kafka's consumer-groups tool shows it, plus status.

    LAG = log-end offset - committed offset (at least 0); "-" where the group has committed no
    offset. LAG-SECONDS = age of the oldest unconsumed record. Status per group: OK, lagging,
    stalled, stopped or unknown. One sample can say OK (caught up), stopped (a backlog and no
    members) or lagging (a backlog with members); whether the backlog shrinks or the consumers are
    stuck (stalled) takes --watch, sampled wider apart than the group's commit interval.
    """
    if logging.getLogger().level > logging.INFO:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # retry chatter; errors say it
    wanted = list(dict.fromkeys(groups)) or default_groups()
    try:
        asyncio.run(
            watch_lag(
                KafkaSettings(), wanted, interval_s=watch, window=window, count=count,
                as_json=as_json,
            )
        )  # fmt: skip
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    try:
        lag()
    except KafkaUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
