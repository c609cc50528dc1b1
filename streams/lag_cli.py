"""``interest-stream lag``: consumer lag of the service's groups, as Kafka's own tool prints it.

Columns GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG are those of
``kafka-consumer-groups.sh --describe`` (same rows, same numbers, ``-`` where the group has no
committed offset), plus LAG-SECONDS (age of the oldest unconsumed record) and a status line per
group. One difference by design: a committed offset beyond the log end prints a negative LAG in
Kafka's tool and 0 here. The status rules are in :mod:`streams.lag_rules`; ``--watch`` keeps a
window of samples so that stalled and lagging can be told from a backlog being worked off.

Only the topics a user works with are listed: the rows of the stream workers' internal topics
(faust's changelogs and leader topic, the repartition topics: partitions assigned to a member
that never commit, printed ``-``) are left out, with a count, unless ``--all``; the status and
totals still judge every partition (``--json`` counts the rows left out in
``hidden_partitions``). Under ``--watch`` a terminal's table is redrawn in place (as
``watch`` does); into a pipe or file each sample is appended after a ``---`` time line.

Registered on the main command by ``streams.cli``; also runs alone: ``python -m streams.lag_cli``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

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


def internal_topic_rule() -> Callable[[str], bool]:
    """Whether a topic is internal to the stream workers (faust's changelogs and leader topic,
    the repartition topics) or to Kafka (``__consumer_offsets``)."""
    names: set[str] = set()
    try:
        from streams.stream.settings import StreamSettings
    except ImportError:
        pass
    else:
        stream = StreamSettings()
        names = {stream.repartition_topic, stream.item_topic()}

    def internal(topic: str) -> bool:
        return (
            topic in names
            or topic.endswith(("-changelog", "-repartition"))
            or "__assignor-__leader" in topic
            or topic.startswith("__")
        )

    return internal


def visible(sample: GroupSample, internal: Callable[[str], bool] | None) -> GroupSample:
    """``sample`` without the rows of internal topics (all of them without a rule)."""
    if internal is None:
        return sample
    kept = tuple(p for p in sample.partitions if not internal(p.topic))
    return dataclasses.replace(sample, partitions=kept)


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
    show_all: bool = False,
) -> None:
    """Read and print samples: one without ``interval_s``, else ``count`` (or forever)."""
    history = SampleWindow(window)
    printer = SamplePrinter(
        as_json=as_json,
        watching=interval_s is not None,
        internal=None if show_all else internal_topic_rule(),
        redraw=interval_s is not None and not as_json and sys.stdout.isatty(),
    )
    taken = 0
    async with LagReader(kafka) as reader:
        while True:
            samples = await reader.read(groups)
            verdicts = [history.add(s) for s in samples]
            taken += 1
            printer.print(samples, verdicts)
            if interval_s is None or (count is not None and taken >= count):
                return
            await asyncio.sleep(interval_s)


#: Terminal control: clear the screen, cursor home, clear to the end of the line / the screen.
CLEAR, HOME, CLEAR_LINE, CLEAR_BELOW = "\x1b[2J", "\x1b[H", "\x1b[K", "\x1b[J"


@dataclasses.dataclass
class SamplePrinter:
    """Prints samples as text or JSON; redraws in place on a terminal under ``--watch``."""

    as_json: bool
    watching: bool
    internal: Callable[[str], bool] | None
    redraw: bool = False
    drawn: int = 0

    def print(self, samples: list[GroupSample], verdicts: list[Verdict]) -> None:
        if self.as_json:
            self._json(samples, verdicts)
            return
        when = dt.datetime.fromtimestamp(samples[0].taken_at if samples else 0)
        body = "\n\n".join(self._group(s, v) for s, v in zip(samples, verdicts, strict=True))
        if self.redraw:
            head = f"{when.isoformat(' ', 'seconds')}  (redrawn every sample; Ctrl-C stops)"
            lines = [head, "", *body.splitlines()]
            screen = (CLEAR if not self.drawn else "") + HOME
            click.echo(screen + "".join(f"{line}{CLEAR_LINE}\n" for line in lines) + CLEAR_BELOW)
        elif self.watching:
            click.echo(f"--- {when.isoformat('T', 'seconds')}\n{body}\n")
        else:
            click.echo(body)
        self.drawn += 1

    def _group(self, sample: GroupSample, verdict: Verdict) -> str:
        shown = visible(sample, self.internal)
        text = format_group(shown, verdict)
        hidden = len(sample.partitions) - len(shown.partitions)
        if hidden:
            text += f"\n({hidden} rows of internal topics not shown; --all shows them)"
        return text

    def _json(self, samples: list[GroupSample], verdicts: list[Verdict]) -> None:
        groups = []
        for sample, verdict in zip(samples, verdicts, strict=True):
            doc: dict[str, Any] = sample_to_dict(sample, verdict)
            shown = visible(sample, self.internal)
            kept = {(p.topic, p.partition) for p in shown.partitions}
            doc["partitions"] = [
                p for p in doc["partitions"] if (p["topic"], p["partition"]) in kept
            ]
            doc["hidden_partitions"] = len(sample.partitions) - len(kept)
            groups.append(doc)
        # One document per sample; under --watch one compact line each (JSON lines).
        doc_all = {"groups": groups}
        text = (
            json.dumps(doc_all, sort_keys=True) if self.watching else json.dumps(doc_all, indent=2)
        )
        click.echo(text)


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
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Also list the internal topics (faust's changelogs and leader topic, repartition).",
)
def lag(
    groups: tuple[str, ...],
    as_json: bool,
    watch: float | None,
    window: int,
    count: int | None,
    show_all: bool,
) -> None:
    """Consumer lag per partition, as Kafka's consumer-groups tool shows it, plus status.

    LAG = log-end offset - committed offset (at least 0); "-" where the group has committed no
    offset. LAG-SECONDS = age of the oldest unconsumed record. Status per group: OK, lagging,
    stalled, stopped or unknown. One sample can say OK (caught up), stopped (a backlog and no
    members) or lagging (a backlog with members); whether the backlog shrinks or the consumers are
    stuck (stalled) takes --watch, sampled wider apart than the group's commit interval.
    Internal topics are judged but not listed unless --all; in a terminal --watch redraws the
    table in place.
    """
    if logging.getLogger().level > logging.INFO:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # retry chatter; errors say it
    wanted = list(dict.fromkeys(groups)) or default_groups()
    try:
        asyncio.run(
            watch_lag(
                KafkaSettings(), wanted, interval_s=watch, window=window, count=count,
                as_json=as_json, show_all=show_all,
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
