"""``interest-stream rebuild``: ``start``, ``switch`` and ``status`` of generations.

The work is :mod:`streams.rebuild`'s; the names :mod:`models.generation`'s; which generation
serves :mod:`streams.generation`'s. Every refusal is one line and exit status 1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from models.config import ConfigFileError
from models.generation import parse_generation

if TYPE_CHECKING:
    from streams.generation import Manifest
    from streams.rebuild import Target
    from streams.service import RunLock


def fail(message: str) -> NoReturn:
    """One line on stderr and exit status 1 (as every `interest-stream` command fails)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else text)


@click.group()
def rebuild() -> None:
    """Rebuild every profile into a new generation (new model or profile settings) from the
    events topic while the current one serves, then switch readers to it."""


@rebuild.command("start")
@click.argument("generation")
@click.option(
    "--catalog",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Items to embed (JSON lines, as `items load`).  [default: the serving generation's]",
)
def rebuild_start(generation: str, catalog: Path | None) -> None:
    """Build GENERATION (a number >= 1) with the model and profile settings of this environment.

    Re-embeds the items, replays the events topic from its earliest retained offset through a
    stream and an embed worker of that generation, shows progress and ETA, and stops them once
    the generation has caught up with the live end. Run it again to continue after a stop.
    """
    from streams.generation import Manifest, base_qdrant, serving_generation
    from streams.rebuild import RebuildRefused, Target

    try:
        n = parse_generation(generation)
        serving = serving_generation(base_qdrant())
        if n == serving:
            raise RebuildRefused(
                f"generation {n} serves the readers: rebuild into another one "
                f"(`interest-stream rebuild start {n + 1}`)"
            )
        target = Target.of(n)
        manifest = _manifest(target, Manifest.load(n))
        caught_up = _prepare_and_replay(target, serving, catalog, manifest)
    except (RebuildRefused, ConfigFileError) as exc:
        fail(str(exc))
    if not caught_up:
        fail(
            f"generation {n} stopped before it caught up; `interest-stream rebuild start {n}` "
            "continues where it stopped"
        )
    for line in _next_steps(target, manifest):
        click.echo(line)


def _manifest(target: Target, manifest: Manifest | None) -> Manifest:
    """The generation's manifest; a generation continues only with the settings it began with."""
    from streams.generation import Manifest
    from streams.rebuild import RebuildRefused

    k = target.profile.cluster_k
    if manifest is None:
        return Manifest(target.generation, target.model.name, cluster_k=k)
    if (manifest.model, manifest.cluster_k) != (target.model.name, k):
        raise RebuildRefused(
            f"generation {target.generation} was begun with model {manifest.model} and K = "
            f"{manifest.cluster_k}, this environment has {target.model.name} and K = {k}: use a "
            "new generation number"
        )
    return manifest


def _prepare_and_replay(
    target: Target, serving: int, catalog: Path | None, manifest: Manifest
) -> bool:
    from models.settings import QdrantSettings
    from streams.rebuild import (
        ProgressDisplay,
        ReplaySupervisor,
        apply_child_environment,
        build_items,
        catalog_from_file,
        create_topics,
        is_tty,
        serving_catalog,
    )
    from streams.settings import ApiSettings

    _warn_max_age()
    lock = _run_lock(target)
    try:
        asyncio.run(create_topics(target))
        if catalog is not None:
            items = catalog_from_file(catalog)
        else:
            items = serving_catalog(QdrantSettings(generation=serving), ApiSettings())
        click.echo(f"generation {target.generation}: embedding {len(items):,} items "
                   f"with {target.model.name}")  # fmt: skip
        with click.progressbar(length=len(items), label="items") as bar:
            manifest.items = build_items(target, items, bar.update)
        manifest.dimension = _users_dimension(target)
        manifest.item_tags_in_text = target.model.item_tags_in_text
        manifest.save()
        click.echo(f"generation {target.generation}: replaying {target.topics.events} "
                   f"from its earliest retained offset")  # fmt: skip
        apply_child_environment(target)
        display = ProgressDisplay(lambda s: click.echo(s, nl=False), is_tty())
        supervisor = ReplaySupervisor(target, display, click.echo)
        supervisor.replay()
    finally:
        if lock is not None:
            lock.release()
    if supervisor.caught_up:
        manifest.caught_up_at = time.time()
        manifest.events_replayed = supervisor.last.events_done if supervisor.last else 0
        manifest.save()
    return supervisor.caught_up


def _warn_max_age() -> None:
    """A replay reads old events: an intake age limit would dead-letter them."""
    from streams.settings import IntakeSettings

    max_age_s = IntakeSettings().max_age_s
    if max_age_s:
        click.echo(
            f"warning: INTEREST_INTAKE_MAX_AGE_S={max_age_s:g}: replayed events older than that "
            "are dead-lettered (past_timestamp), not folded; set it to 0 for a rebuild",
            err=True,
        )


def _run_lock(target: Target) -> RunLock | None:
    """The generation's embedded folder is this command's while it runs (a `run` of the same
    generation is refused, as a second `run` is)."""
    from pathlib import Path

    from streams.service import RunLock, RunPlan
    from streams.settings import ApiSettings

    if target.qdrant.url:
        return None
    folder = Path(target.qdrant.path).expanduser()
    plan = RunPlan(
        kafka=target.kafka, topics=target.topics, embed_group=target.embed.group_id,
        stream_group=target.stream.app_id, api=ApiSettings(enabled=False), stream_metrics=None,
        qdrant_url=None, qdrant_path=folder, model_name=target.model.name,
    )  # fmt: skip
    lock = RunLock(folder)
    lock.acquire(plan)
    return lock


def _users_dimension(target: Target) -> int | None:
    from streams.rebuild import describe_store

    dimension = describe_store(target).get("dimension")
    return dimension if isinstance(dimension, int) else None


def _next_steps(target: Target, manifest: Manifest) -> list[str]:
    n = target.generation
    where = target.qdrant.url or target.qdrant.path
    lines = [
        f"generation {n} caught up: {manifest.events_replayed:,} events replayed into "
        f"{target.qdrant.users_collection} ({where})",
        "next:",
    ]
    if target.qdrant.url:
        lines += [
            f"  1. start generation {n}'s workers with these settings and INTEREST_GENERATION={n}",
            "     (they continue from where this rebuild stopped)",
            f"  2. interest-stream rebuild switch {n}   (moves the users/items aliases)",
            "  3. stop the old generation's workers",
        ]
    else:
        lines += [
            f"  1. interest-stream rebuild switch {n}   (readers: recommend, profile)",
            "  2. restart `interest-stream run` with these model and profile settings: it follows",
            f"     the switch and continues generation {n} from where this rebuild stopped",
        ]
    return lines


@rebuild.command("switch")
@click.argument("generation")
@click.option(
    "--max-lag",
    type=click.IntRange(0),
    default=1000,
    show_default=True,
    help="Refuse if the generation is more records than this behind the live end.",
)
@click.option(
    "--drop-generation-0",
    is_flag=True,
    help="Qdrant server: delete generation 0's users/items collections (they carry the alias "
    "names; needed by the first switch).",
)
def rebuild_switch(generation: str, max_lag: int, drop_generation_0: bool) -> None:
    """Make readers serve GENERATION: the embedded store's pointer, or a server's aliases."""
    from streams.generation import base_qdrant, serving_generation, write_pointer
    from streams.rebuild import RebuildRefused, check_switch, switch_server

    try:
        n = parse_generation(generation, least=0)
        base = base_qdrant()
        serving = serving_generation(base)
        if n == serving:
            click.echo(f"generation {n} already serves")
            return
        target = check_switch(n, serving, max_lag)
        if base.url:
            switch_server(target, base, drop_generation_0)
        else:
            write_pointer(base, n)
    except (RebuildRefused, ConfigFileError) as exc:
        fail(str(exc))
    click.echo(
        f"generation {n} serves now (was {serving}): readers use "
        f"{target.qdrant.users_collection}/{target.qdrant.items_collection}; restart "
        "`interest-stream run` with its settings so the workers follow"
    )


@rebuild.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the generations as JSON.")
def rebuild_status(as_json: bool) -> None:
    """Each generation: model, K, points, when it caught up, how far behind, which serves."""
    from streams.generation import Manifest, base_qdrant, serving_generation

    if logging.getLogger().level > logging.INFO:  # a generation's lag unreadable: one cell
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    serving = serving_generation(base_qdrant())
    rows = [
        _status_row(g, serving, Manifest.load(g)) for g in sorted({0, serving, *Manifest.known()})
    ]
    lines = [
        "generation  serving  model                      K  dims   users   items  behind  caught up"
    ]
    lines += [_status_line(r) for r in rows]
    emit(rows, as_json, "\n".join(lines))


def _status_row(generation: int, serving: int, manifest: Manifest | None) -> dict[str, Any]:
    from streams.rebuild import Target, describe_store, read_progress

    target = Target.of(generation)
    row: dict[str, Any] = {
        "generation": generation,
        "serving": generation == serving,
        "model": manifest.model if manifest else None,
        "caught_up_at": manifest.caught_up_at if manifest else None,
        **describe_store(target),
    }
    try:
        p = read_progress(target)
        row["behind"] = p.stream_lag + p.embed_lag if p.complete else None
    except Exception as exc:  # a status line per generation, whatever one of them lacks
        row["behind"] = None
        row["lag_error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return row


def _status_line(row: dict[str, Any]) -> str:
    def show(value: Any) -> str:
        return "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)

    when = row.get("caught_up_at")
    caught = time.strftime("%Y-%m-%d %H:%M", time.localtime(when)) if when else "-"
    line = (
        f"{row['generation']:>10}  {'*' if row['serving'] else ' ':^7}  "
        f"{(row['model'] or '(as configured)')[:25]:<25} {show(row.get('cluster_k')):>2}  "
        f"{show(row.get('dimension')):>4}  {show(row.get('users')):>6}  "
        f"{show(row.get('items')):>6}  "
        f"{show(row.get('behind')):>6}  {caught}"
    )
    return line + (f"  ({row['store']})" if "store" in row else "")
