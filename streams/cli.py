"""``interest-stream``: the one command-line entry point.

Every subcommand exits 0 on success and 1 with a one-line ``error: ...`` on failure; commands that
print data take ``--json``. Settings come from ``INTEREST_*`` variables and the optional config
file named by ``INTEREST_CONFIG_FILE`` (see README).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from pydantic import ValidationError

from models.config import ConfigFileError, CoreSettings
from streams.broker import BrokerError, LocalBroker
from streams.settings import BrokerSettings, IntakeSettings, KafkaSettings, TopicSettings
from streams.topics import KafkaUnavailable

if TYPE_CHECKING:
    from streams.embed.store_access import StoreAccess

# Errors a user can fix; anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    BrokerError,
    KafkaUnavailable,
    ConfigFileError,
    FileNotFoundError,
    PermissionError,
)
# Raised by heavier modules, checked only once they are imported (keeps `--help` fast).
LAZY_USER_ERRORS = (
    ("models.store", "StoreError"),
    ("models.encoder", "ModelLoadError"),
    ("models.catalog", "InvalidItem"),
    ("streams.contracts.events", "InvalidEvent"),
    ("streams.embed.api", "ApiUnavailable"),
    ("streams.topics", "PartitionMismatch"),
    ("streams.service", "RunRefused"),
)


def is_user_error(exc: BaseException) -> bool:
    if isinstance(exc, USER_ERRORS):
        return True
    for module_name, class_name in LAZY_USER_ERRORS:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(exc, getattr(module, class_name)):
            return True
    return False


def fail(message: str) -> NoReturn:
    first, _, rest = message.partition("\n")
    click.echo(f"error: {first}", err=True)
    if rest:
        click.echo(rest, err=True)
    sys.exit(1)


def emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else text)


class CliGroup(click.Group):
    """Turns user-fixable errors into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ValidationError as exc:
            errs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            fail(f"invalid setting: {errs}")
        except Exception as exc:
            if is_user_error(exc):
                fail(str(exc))
            raise


@click.group(cls=CliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="interest-stream")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
    envvar="INTEREST_LOG_LEVEL",
    help="Log verbosity (workers log to stderr).",
)
@click.option(
    "--no-env-check",
    is_flag=True,
    hidden=True,
    help="Skip the check for unknown INTEREST_* variables (run's workers: run checked them).",
)
def main(log_level: str, no_env_check: bool) -> None:
    """Real-time, multi-dimensional user-interest vectors from Kafka events into Qdrant."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not no_env_check:
        warn_unknown_variables()
    from streams.generation import resolve_generation  # the serving generation (rebuild)

    resolve_generation(os.environ, click.get_current_context().invoked_subcommand)


def warn_unknown_variables() -> None:
    """A misspelt INTEREST_* variable is a warning on stderr, not silence (streams.env_check)."""
    from streams.env_check import warnings_for

    for line in warnings_for(os.environ):
        click.echo(line, err=True)


def quiet_client_logs() -> None:
    """Short-lived commands report failures in one line; the client's retry chatter is noise."""
    if logging.getLogger().level > logging.INFO:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


# -- broker ----------------------------------------------------------------------------------


@main.group(cls=CliGroup)
def broker() -> None:
    """The local single-node Apache Kafka broker (KRaft, from Maven Central jars)."""


def _local_broker() -> LocalBroker:
    return LocalBroker(BrokerSettings(), CoreSettings())


@broker.command("start")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def broker_start(as_json: bool) -> None:
    """Start the broker (idempotent); returns once it answers metadata requests."""
    status = _local_broker().start()
    data = {"running": status.running, "bootstrap": status.bootstrap, "pid": status.pid}
    emit(data, as_json, f"broker {status.describe()}")
    clients = KafkaSettings().bootstrap
    if status.bootstrap not in clients.split(","):
        click.echo(
            f"note: INTEREST_KAFKA_BOOTSTRAP={clients} points the clients at another cluster, not "
            "this broker (unset it to use this one)",
            err=True,
        )


@broker.command("stop")
def broker_stop() -> None:
    """Stop the broker; leaves no java process behind."""
    was_running = _local_broker().stop()
    click.echo("broker stopped" if was_running else "broker was not running")


@broker.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def broker_status(as_json: bool) -> None:
    """Say whether the broker runs and where; exit 3 when it does not."""
    status = _local_broker().status()
    data = {
        "running": status.running,
        "bootstrap": status.bootstrap,
        "pid": status.pid,
        "directory": str(status.directory),
    }
    emit(data, as_json, f"broker {status.describe()}")
    if not status.running:
        sys.exit(3)


# -- publish ---------------------------------------------------------------------------------


@main.command()
@click.argument("source", type=click.Path(allow_dash=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def publish(source: Path, as_json: bool) -> None:
    """Publish JSON-lines events from SOURCE (a file, or - for stdin).

    Valid events go to the events topic keyed by user_id; invalid lines go to the dead-letter
    topic with the reason, and each is listed on stderr as FILE:LINE: REASON: DETAIL (in the
    report's "rejected" with --json). Exits 1 if the brokers cannot be reached.
    """
    from streams.publish import publish_file

    quiet_client_logs()
    if str(source) == "-":
        lines: Any = sys.stdin.buffer
        name = "stdin"
    else:
        if not source.exists():
            fail(f"{source}: no such file")
        lines = source.open("rb")
        name = str(source)
    try:
        report = publish_file(
            lines, name, KafkaSettings(), TopicSettings(), IntakeSettings().rules()
        )
    finally:
        if lines is not sys.stdin.buffer:
            lines.close()
    if not as_json:
        for line in report.rejected_lines():
            click.echo(line, err=True)
    emit(report.to_dict(), as_json, report.summary())


# -- workers ---------------------------------------------------------------------------------


@main.command()
def run() -> None:
    """Run the whole pipeline: a stream worker and an embed worker, supervised.

    Prints where everything is, then "workers up" with the API address once both consume.
    Ctrl-C or SIGTERM stops both gracefully (each finishes its batch, commits and leaves its
    consumer group); a second Ctrl-C exits at once. A second `run` on the same embedded store,
    or with the API port taken, is refused before it starts anything.
    """
    from streams.service import Readiness, RunPlan, banner, preflight
    from streams.supervisor import supervise, worker_command

    plan = RunPlan.from_settings()
    lock, warnings = preflight(plan)
    try:
        for line in banner(plan):
            click.echo(line)
        for line in warnings:
            click.echo(line, err=True)
        commands = {"stream": worker_command("stream"), "embed": worker_command("embed")}
        code = supervise(commands, tick=Readiness(plan, click.echo), say=click.echo)
    finally:
        if lock is not None:
            lock.release()
    sys.exit(code)


@main.command()
def stream() -> None:
    """Run one stream worker (faust): validate, dedupe, window, emit update jobs."""
    from streams.stream.app import run_stream_worker

    sys.exit(run_stream_worker())


@main.command()
@click.option("--fast", is_flag=True, help="A smaller catalog and fewer events (for CI).")
@click.option(
    "--keep",
    is_flag=True,
    help="Keep the demo's topics and data, and the broker it started, for inspection.",
)
def demo(fast: bool, keep: bool) -> None:
    """Watch the whole pipeline work: broker, workers, catalog, two users' taste shifts."""
    from streams.demo import Demo, DemoFailed

    try:
        Demo(fast=fast, keep=keep, echo=click.echo).run()
    except DemoFailed as exc:
        fail(f"demo failed: {exc}")


@main.command()
def embed() -> None:
    """Run one embed worker: update jobs -> interest vectors in Qdrant."""
    from models.settings import ModelSettings, QdrantSettings
    from streams.embed.worker import EmbedWorker
    from streams.settings import ApiSettings, EmbedSettings

    worker = EmbedWorker(
        KafkaSettings(), TopicSettings(), EmbedSettings(), ModelSettings(), QdrantSettings(),
        api=ApiSettings(),
    )  # fmt: skip
    worker.run()


# -- items -----------------------------------------------------------------------------------


@main.group(cls=CliGroup)
def items() -> None:
    """The item catalog in Qdrant (`items` collection)."""


@items.command("load")
@click.argument("source", type=click.Path(allow_dash=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def items_load(source: Path, as_json: bool) -> None:
    """Embed and upsert a JSON-lines catalog: {"id": ..., "text": ..., "payload": {...}}.

    Goes through the running service when it holds the embedded store.
    """
    from tqdm import tqdm

    if str(source) == "-":
        body, name = sys.stdin.buffer.read(), "stdin"
    elif not source.exists():
        fail(f"{source}: no such file")
    else:
        body, name = source.read_bytes(), str(source)
    total = sum(1 for line in body.splitlines() if line.strip())
    with tqdm(total=total, unit="item", disable=as_json or None) as bar:
        count = _access().load_items(body, name, progress=bar.update)
    emit({"loaded": count}, as_json, f"loaded {count} items into Qdrant")


# -- users -----------------------------------------------------------------------------------


@main.group(cls=CliGroup)
def user() -> None:
    """A user's data: forget a user on request."""


@user.command("delete")
@click.argument("user_id")
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the workers to apply it (0: do not wait).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def user_delete(user_id: str, wait_s: float, as_json: bool) -> None:
    """Forget USER_ID: its profile point and its stream state.

    Writes a delete request to the events topic, in order with the user's events: what came
    before it is forgotten, events after it start a new profile, and no replay or restart
    brings the old one back. The raw events stay in the topic until its retention removes them.
    """
    from streams.settings import EmbedSettings
    from streams.stream.settings import StreamSettings
    from streams.user_delete import DeleteNotApplied, delete_user

    try:
        receipt, waited = delete_user(
            user_id,
            wait_s=wait_s or None,
            stream_group=StreamSettings().app_id,
            embed_group=EmbedSettings().group_id,
        )
    except DeleteNotApplied as exc:
        fail(
            f"delete of {user_id!r} requested, but not applied within {wait_s:g} s: {exc} "
            "(are the workers running? it applies when they do)"
        )
    where = f"{receipt.topic} partition {receipt.partition} offset {receipt.offset}"
    done = (
        f"deleted user {user_id!r} (profile point and stream state) in {waited:.1f} s"
        if waited is not None
        else f"delete of user {user_id!r} requested ({where}); the workers apply it in order"
    )
    emit({**receipt.to_dict(), "applied": waited is not None, "waited_s": waited}, as_json, done)


# -- queries ---------------------------------------------------------------------------------


def _access() -> StoreAccess:
    from models.settings import QdrantSettings
    from streams.embed.store_access import StoreAccess
    from streams.settings import ApiSettings

    return StoreAccess(QdrantSettings(), ApiSettings())


@main.command()
@click.argument("user_id")
@click.option("--vectors", is_flag=True, help="Include the raw named vectors.")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
def profile(user_id: str, vectors: bool, as_json: bool) -> None:
    """Show USER_ID's interest profile: labelled interests and each dimension's freshness."""
    from models.user_view import format_user

    view = _access().profile(user_id, with_vectors=vectors)
    if as_json:
        emit(view, True, "")
        return
    click.echo(format_user(view))
    if vectors and view.get("vectors"):
        for name, vector in view["vectors"].items():
            head = ", ".join(f"{x:+.4f}" for x in vector[:8])
            click.echo(f"{name}: [{head}, ...] ({len(vector)} dims)")


@main.command()
@click.argument("user_id")
@click.option(
    "--dimension",
    "dimensions",
    multiple=True,
    metavar="D",
    help="Use only these dimensions/clusters (short_term, long_term, search, "
    "interests, interest_<k>); repeatable. Default: all, fused.",
)
@click.option("--limit", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="KEY=VALUE",
    help="Item payload filter; KEY=a,b matches any; repeatable.",
)
@click.option(
    "--diversity",
    type=click.FloatRange(0, 1),
    default=None,
    help="MMR diversity in [0, 1] (0 = pure relevance).",
)
@click.option("--include-recent", is_flag=True, help="Do not exclude items the user just saw.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def recommend(
    user_id: str,
    dimensions: tuple[str, ...],
    limit: int,
    filters: tuple[str, ...],
    diversity: float | None,
    include_recent: bool,
    as_json: bool,
) -> None:
    """Recommend items for USER_ID from Qdrant by similarity to the user's interest vectors."""
    from models.query_plan import parse_filter_args
    from models.recommend import Recommender
    from streams.embed.api import check_dimensions

    try:
        parsed = parse_filter_args(filters)
        check_dimensions(dimensions)
    except ValueError as exc:
        fail(str(exc))
    options: dict[str, Any] = {"limit": limit, "exclude_recent": not include_recent}
    query: list[tuple[str, str]] = [("limit", str(limit))]
    if dimensions:
        options["dimensions"] = list(dimensions)
        query += [("dimension", d) for d in dimensions]
    if parsed:
        options["filters"] = parsed
        query += [("filter", f) for f in filters]
    if diversity is not None:
        options["diversity"] = diversity
        query.append(("diversity", str(diversity)))
    if include_recent:
        query.append(("include_recent", "1"))

    def direct(store: Any, uid: str, opts: dict[str, Any]) -> dict[str, Any]:
        try:
            return Recommender(store).recommend(uid, **opts).to_dict()
        except ValueError as exc:
            fail(str(exc))

    result = _access().recommend(user_id, options, query, direct)
    if as_json:
        emit(result, True, "")
        return
    click.echo(format_recommendation(result))


def format_recommendation(result: dict[str, Any]) -> str:
    strategy = result["strategy"]
    lines = [f"recommendations for {result['user_id']} ({strategy})"]
    note = result.get("explanation", {}).get("note")
    if note:
        lines.append(note)
    sources = result.get("explanation", {}).get("item_sources", {})
    for rank, item in enumerate(result["items"], start=1):
        text = str(item["payload"].get("text", ""))[:60]
        why = sources.get(item["item_id"], "")
        lines.append(f"{rank:>3}. {item['score']:+.3f}  {item['item_id']:<28} {text:<60} {why}")
    if not result["items"]:
        lines.append("  (nothing to recommend)")
    return "\n".join(lines)


# -- store -----------------------------------------------------------------------------------


@main.group(cls=CliGroup)
def store() -> None:
    """The Qdrant store: what it holds, and moving an earlier version's store into it."""


@store.command("migrate")
@click.option(
    "--from",
    "source",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of the earlier version's store.  [default: INTEREST_QDRANT_PATH]",
)
@click.option(
    "--to",
    "target",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the new store here and leave the old folder as it is "
    "(default: in place, the old files kept in <from>.local-mode-backup).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def store_migrate(source: Path | None, target: Path | None, as_json: bool) -> None:
    """Copy an earlier version's store (qdrant-client local mode) into the embedded engine.

    Every point (ids, named vectors, payload) is copied and read back to be compared; the old
    files are never modified. Collection names and sizing come from the current settings.
    """
    from models.settings import QdrantSettings
    from models.store.migrate import migrate_local_folder

    settings = QdrantSettings()
    report = migrate_local_folder(source or settings.path, settings, to=target)
    emit(report.to_dict(), as_json, report.summary())
    if settings.url:
        click.echo(
            f"note: INTEREST_QDRANT_URL is set, so the service uses {settings.url}, not this store",
            err=True,
        )


@store.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def store_info(as_json: bool) -> None:
    """Each collection: backend, points, vectors and an estimate of their memory and disk."""
    from models.settings import QdrantSettings
    from models.store import InterestStore

    settings = QdrantSettings()
    with InterestStore.from_settings(settings) as opened:
        where = settings.url or str(settings.path)
        names = (settings.users_collection, settings.items_collection)
        data: dict[str, Any] = {
            "backend": opened.backend.kind,
            "location": where,
            "collections": {name: describe_collection(opened, name) for name in names},
        }
    lines = [f"{data['backend']} store at {where}"]
    for name, info in data["collections"].items():
        lines.append(format_collection(name, info))
    emit(data, as_json, "\n".join(lines))


def describe_collection(opened: Any, name: str) -> dict[str, Any] | None:
    """Points, vectors and a size estimate of one collection; None when it does not exist."""
    from models.store import CollectionLayout, CollectionNotFound

    try:
        info = opened.backend.info(name)
    except CollectionNotFound:
        return None
    vectors = info.config.params.vectors if isinstance(info.config.params.vectors, dict) else {}
    points = int(info.points_count or 0)
    described: dict[str, Any] = {
        "points": points,
        "segments": info.segments_count,
        "indexed_vectors": info.indexed_vectors_count,
        "vectors": {
            v: {"size": p.size, "distance": p.distance.value, "on_disk": bool(p.on_disk)}
            for v, p in vectors.items()
        },
        "payload_indexes": {f: str(i.data_type.value) for f, i in info.payload_schema.items()},
        "payload_on_disk": bool(info.config.params.on_disk_payload),
    }
    if vectors:
        first = next(iter(vectors.values()))
        hnsw = first.hnsw_config.m if first.hnsw_config and first.hnsw_config.m is not None else 16
        layout = CollectionLayout(
            tuple(vectors),
            first.size,
            storage="int8" if first.quantization_config else "disk" if first.on_disk else "ram",
            searched=hnsw > 0,
            hnsw_m=hnsw or 16,
        )
        described["estimate_bytes"] = {k: v * points for k, v in layout.bytes_per_point().items()}
    return described


def _size(n: float) -> str:
    """Bytes for people: ``512 B``, ``1.5 KiB`` ... ``3.2 GiB``."""
    units = ("B", "KiB", "MiB", "GiB")
    step = 0
    while n >= 1024 and step < len(units) - 1:
        n, step = n / 1024, step + 1
    return f"{n:.0f} B" if step == 0 else f"{n:.1f} {units[step]}"


def format_collection(name: str, info: dict[str, Any] | None) -> str:
    if info is None:
        return f"  {name}: not created yet"
    sizes = {v["size"] for v in info["vectors"].values()}
    where = "on disk" if any(v["on_disk"] for v in info["vectors"].values()) else "in RAM"
    line = (
        f"  {name}: {info['points']} points, {len(info['vectors'])} vector(s) of "
        f"{'/'.join(map(str, sorted(sizes)))} dims {where}, {info['segments']} segment(s)"
    )
    estimate = info.get("estimate_bytes")
    if estimate:
        ram = estimate["vectors_ram"] + estimate["index_ram"]
        line += f"; about {_size(ram)} RAM, {_size(estimate['vectors_disk'])} of vectors on disk"
    if info["payload_indexes"]:
        line += f"; payload indexes: {', '.join(sorted(info['payload_indexes']))}"
    return line


def _register_commands() -> None:
    from streams.dlq_cli import dlq
    from streams.lag_cli import lag
    from streams.rebuild_cli import rebuild

    main.add_command(lag)
    main.add_command(rebuild)
    main.add_command(dlq)


_register_commands()

if __name__ == "__main__":
    main()
