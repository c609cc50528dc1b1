"""``interest-stream rebuild``: fill a new generation by replaying the events, then switch to it.

Blue/green by replay. A new model or new profile settings (``INTEREST_MODEL_NAME``,
``INTEREST_PROFILE_CLUSTER_K``, ...) cannot be applied to the serving collections (their vectors
have the old model's meaning and size), so ``rebuild start N`` builds generation N beside them
(:mod:`models.generation` names everything it uses) while the current generation keeps serving:

1. its topics are created and its items collection is filled by re-embedding the catalog with
   the new model: the serving generation's items (their payload keeps each item's text and
   tags), or ``--catalog FILE``;
2. a stream worker and an embed worker of generation N run as child processes (the
   supervisor of ``run``). Their consumer groups are new, so they start at the log start of
   the events topic (:mod:`streams.stream.group_offsets`) and go through the very code the live
   path runs: the rebuilt vectors are what the live path produces for the same events;
3. a progress line (consumer lag of generation N's groups, ETA) is shown until both groups have
   caught up with the live end and no update job is in flight, then the workers stop gracefully
   and the generation's manifest records it (:class:`streams.generation.Manifest`).

Its committed offsets let ``INTEREST_GENERATION=N interest-stream run`` continue exactly where
the rebuild stopped. ``rebuild switch N`` then points readers at it: the embedded store's pointer
file, a server's aliases (:mod:`streams.generation`, :mod:`models.store.aliases`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from models.catalog import CatalogItem, read_items
from models.generation import GENERATION_ENV
from models.settings import CollabSettings, ModelSettings, ProfileSettings, QdrantSettings
from models.store.base import POPULARITY_FIELD, StoreBackend
from streams.settings import ApiSettings, EmbedSettings, KafkaSettings, TopicSettings
from streams.stream.settings import StreamSettings
from streams.supervisor import Supervisor, worker_command
from streams.topics import admin_client, ensure_popularity_topic, ensure_topics

#: Seconds between two reads of the lag while the workers replay.
READ_EVERY_S = 1.0
#: Without a terminal, one progress line this often.
PLAIN_EVERY_S = 5.0


class RebuildRefused(RuntimeError):
    """A rebuild or switch that cannot be done as asked; the message is one line."""


@dataclass(frozen=True)
class Target:
    """Every setting of generation ``generation``, read from the environment as it is now."""

    generation: int
    kafka: KafkaSettings
    topics: TopicSettings
    stream: StreamSettings
    embed: EmbedSettings
    qdrant: QdrantSettings
    model: ModelSettings
    profile: ProfileSettings

    @classmethod
    def of(cls, generation: int) -> Target:
        return cls(
            generation, KafkaSettings(), TopicSettings(generation=generation),
            StreamSettings(generation=generation), EmbedSettings(generation=generation),
            QdrantSettings(generation=generation), ModelSettings(), ProfileSettings(),
        )  # fmt: skip

    def stream_topics(self) -> list[str]:
        """What the stream group consumes: the events and its own internal topics."""
        names = [self.topics.events, self.stream.repartition_topic]
        if self.stream.popularity_enabled:
            names.append(self.stream.item_topic())
        return names

    def embed_topics(self) -> list[str]:
        names = [self.topics.updates]
        if self.embed.apply_popularity:
            names.append(self.topics.popularity)
        return names

    def child_environment(self) -> dict[str, str]:
        """The workers' environment on top of this one: this generation, and no API or metrics
        server (their ports belong to the serving generation's ``run``)."""
        return {
            GENERATION_ENV: str(self.generation),
            "INTEREST_API_ENABLED": "false",
            "INTEREST_STREAM_METRICS_ENABLED": "false",
        }


# -- progress ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """Where generation N's groups are, in records (one read of the brokers)."""

    events_total: int  # events from the log start to the log end now
    events_done: int  # of those, consumed and committed by the stream group
    stream_lag: int  # the stream group's lag on the events and its internal topics
    embed_lag: int  # the embed group's lag on the updates (and popularity) topics
    updates_end: int  # the updates topic's log-end offsets, summed (moves while jobs flow)
    complete: bool  # every topic of both groups exists

    @property
    def caught_up(self) -> bool:
        return self.complete and self.stream_lag == 0 and self.embed_lag == 0


class ProgressReader:
    """Reads :class:`Progress` from the brokers: committed offsets of both groups (as ``lag``
    reads them), log start and end of every partition they consume."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> ProgressReader:
        self._admin = AIOKafkaAdminClient(**self.target.kafka.client_kwargs())
        await self._admin.start()
        self._consumer = AIOKafkaConsumer(**self.target.kafka.client_kwargs())
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()

    async def _partitions(self, topics: Iterable[str]) -> tuple[list[TopicPartition], bool]:
        """The partitions of ``topics`` that exist, and whether all of them do (all topics are
        described: naming one could make a broker create it)."""
        assert self._admin is not None
        described = {
            t["topic"]: sorted(p["partition"] for p in t["partitions"])
            for t in await self._admin.describe_topics()
            if not t["error_code"]
        }
        found, complete = [], True
        for topic in topics:
            parts = described.get(topic)
            complete = complete and bool(parts)
            found += [TopicPartition(topic, p) for p in parts or ()]
        return found, complete

    async def _lag(self, group: str, topics: list[str]) -> tuple[dict[str, int], bool]:
        """Per topic: the group's lag, and (for the events) how much it consumed."""
        assert self._admin is not None and self._consumer is not None
        tps, complete = await self._partitions(topics)
        if not tps:
            return {}, False
        offsets = await self._admin.list_consumer_group_offsets(group, partitions=tps)
        starts = await self._consumer.beginning_offsets(tps)
        ends = await self._consumer.end_offsets(tps)
        sums: dict[str, int] = {}
        for tp in tps:
            meta = offsets.get(tp)
            at = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
            at = max(at, starts[tp])
            lag, done, total = max(0, ends[tp] - at), at - starts[tp], ends[tp] - starts[tp]
            sums[f"{tp.topic}:lag"] = sums.get(f"{tp.topic}:lag", 0) + lag
            sums[f"{tp.topic}:done"] = sums.get(f"{tp.topic}:done", 0) + done
            sums[f"{tp.topic}:total"] = sums.get(f"{tp.topic}:total", 0) + total
            sums[f"{tp.topic}:end"] = sums.get(f"{tp.topic}:end", 0) + ends[tp]
        return sums, complete

    async def read(self) -> Progress:
        t = self.target
        stream, stream_ok = await self._lag(t.stream.app_id, t.stream_topics())
        embed, embed_ok = await self._lag(t.embed.group_id, t.embed_topics())
        events = t.topics.events
        return Progress(
            events_total=stream.get(f"{events}:total", 0),
            events_done=stream.get(f"{events}:done", 0),
            stream_lag=sum(v for k, v in stream.items() if k.endswith(":lag")),
            embed_lag=sum(v for k, v in embed.items() if k.endswith(":lag")),
            updates_end=embed.get(f"{t.topics.updates}:end", 0),
            complete=stream_ok and embed_ok,
        )


def read_progress(target: Target) -> Progress:
    """One :class:`Progress` of ``target`` (for ``status`` and ``switch``)."""

    async def once() -> Progress:
        async with ProgressReader(target) as reader:
            return await reader.read()

    return asyncio.run(once())


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_line(generation: int, p: Progress, elapsed_s: float, width: int = 24) -> str:
    """``generation 2 [#####-----]  45%  4,512/10,000 events  jobs behind 12  ETA 0:00:42``."""
    share = p.events_done / p.events_total if p.events_total else 1.0
    filled = round(share * width)
    rate = p.events_done / elapsed_s if elapsed_s > 0 else 0.0
    left = p.events_total - p.events_done
    eta = format_duration(left / rate) if rate > 0 else "--:--:--"
    if p.caught_up:
        eta = "settling"
    return (
        f"generation {generation} [{'#' * filled}{'-' * (width - filled)}] {share:4.0%}  "
        f"{p.events_done:,}/{p.events_total:,} events  jobs behind {p.embed_lag:,}  ETA {eta}"
    )


class ProgressDisplay:
    """One line rewritten in place on a terminal; a line every few seconds otherwise."""

    def __init__(self, write: Callable[[str], None], tty: bool) -> None:
        self.write = write
        self.tty = tty
        self._last_plain = 0.0
        self._shown = False

    def show(self, line: str, *, force: bool = False) -> None:
        if self.tty:
            self.write(f"\r\x1b[2K{line}")
            self._shown = True
        elif force or time.monotonic() - self._last_plain >= PLAIN_EVERY_S:
            self.write(line + "\n")
            self._last_plain = time.monotonic()

    def end(self) -> None:
        if self._shown:
            self.write("\n")
            self._shown = False


# -- the replay ----------------------------------------------------------------------------


class ReplaySupervisor(Supervisor):
    """``run``'s supervisor that stops its workers itself once generation N has caught up."""

    def __init__(
        self, target: Target, display: ProgressDisplay, say: Callable[[str], None]
    ) -> None:
        commands = {"stream": worker_command("stream"), "embed": worker_command("embed")}
        super().__init__(commands, tick=self._tick, say=self._say)
        self.target = target
        self.display = display
        self.outer_say = say
        self.settle_s = max(3.0, 2 * target.stream.max_delay_s + 1.0)
        self.caught_up = False
        self.last: Progress | None = None
        self._loop = asyncio.new_event_loop()
        self._reader = ProgressReader(target)
        self._next_read = 0.0
        self._quiet_since: float | None = None
        self._quiet_end = -1

    def _say(self, line: str) -> None:
        self.display.end()
        if self.caught_up and line.startswith("SIGTERM: stopping"):
            line = "caught up: stopping the workers (each commits and leaves its group)"
        self.outer_say(line)

    def _tick(self, elapsed_s: float) -> None:
        if self.caught_up or time.monotonic() < self._next_read:
            return
        self._next_read = time.monotonic() + READ_EVERY_S
        try:
            p = self._loop.run_until_complete(self._reader.read())
        except Exception as exc:  # the brokers away for a moment: say so, read again
            self.display.show(f"generation {self.target.generation}: lag unreadable ({exc})")
            return
        self.last = p
        self.display.show(progress_line(self.target.generation, p, elapsed_s))
        self._settle(p)

    def _settle(self, p: Progress) -> None:
        """Caught up: no lag in either group and no new update job for ``settle_s`` (a user's
        pending events are flushed within ``max_delay_s`` of being read)."""
        now = time.monotonic()
        if not p.caught_up:
            self._quiet_since = None
            return
        if self._quiet_since is None or p.updates_end != self._quiet_end:
            self._quiet_since, self._quiet_end = now, p.updates_end
            return
        if now - self._quiet_since >= self.settle_s:
            self.caught_up = True
            self.stop_signal = signal.SIGTERM
            self._send_all(signal.SIGTERM)

    def replay(self) -> int:
        self._loop.run_until_complete(self._reader.__aenter__())
        try:
            return self.run()
        finally:
            self.display.end()
            self._loop.run_until_complete(self._reader.__aexit__())
            self._loop.close()


# -- items ---------------------------------------------------------------------------------


def catalog_from_payloads(payloads: Iterable[dict[str, object]]) -> Iterator[CatalogItem]:
    """Catalog items back from the items' payloads (``items load`` stores the item's id and
    text in it; the live ``popularity`` is left out: the replay rebuilds it)."""
    for payload in payloads:
        item_id, text = payload.get("item_id"), payload.get("text")
        if not isinstance(item_id, str) or not isinstance(text, str) or not text.strip():
            continue
        rest = {k: v for k, v in payload.items() if k not in ("item_id", "text", POPULARITY_FIELD)}
        yield CatalogItem(item_id, text, rest)


def serving_catalog(source: QdrantSettings, api: ApiSettings) -> list[CatalogItem]:
    """The serving generation's items: from the store, or through the running service's
    Qdrant read endpoints when it holds the embedded folder."""
    from models.store import InterestStore, StoreLockedError

    try:
        store = InterestStore.from_settings(source)
    except StoreLockedError:
        try:
            return list(catalog_from_payloads(_payloads_through_api(source, api)))
        except Exception as exc:  # the service's API away or refusing: say so, offer --catalog
            raise RebuildRefused(
                f"the serving store {source.path} is held by a running service and its API at "
                f"{api.url} did not give its items ({first_line(exc)}); pass --catalog FILE"
            ) from exc
    with store:
        pages = store.scroll_all(source.items_collection, with_payload=True)
        return list(catalog_from_payloads(r.payload or {} for page in pages for r in page))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _payloads_through_api(source: QdrantSettings, api: ApiSettings) -> Iterator[dict[str, object]]:
    from qdrant_client import QdrantClient

    token = api.bearer_token()
    client = QdrantClient(
        url=api.url, timeout=int(api.timeout_s), check_compatibility=False,
        auth_token_provider=(lambda: token) if token else None,
    )  # fmt: skip
    offset = None
    try:
        while True:
            records, offset = client.scroll(
                source.items_collection, limit=512, offset=offset, with_payload=True
            )
            yield from (dict(r.payload or {}) for r in records)
            if offset is None:
                return
    finally:
        client.close()


def catalog_from_file(path: Path) -> list[CatalogItem]:
    if not path.exists():
        raise RebuildRefused(f"{path}: no such file")
    with path.open("rb") as lines:
        return list(read_items(lines, str(path)))


def build_items(target: Target, catalog: list[CatalogItem], progress: Callable[[int], None]) -> int:
    """Generation N's collections, and its items embedded with its model; the count."""
    from models.catalog import load_items
    from models.encoder import Encoder
    from models.store import InterestStore

    if not catalog:
        raise RebuildRefused("no items to embed: the serving items collection is empty")
    encoder = Encoder.from_settings(target.model)
    encoder.load()
    with InterestStore.from_settings(target.qdrant, encoder.dimension) as store:
        store.ensure_collections(
            encoder.dimension, target.profile.spec().vector_names(),
            CollabSettings().item_vectors(),
        )  # fmt: skip
        return load_items(
            catalog, encoder, store, progress=progress,
            tags_in_text=target.model.item_tags_in_text,
        )  # fmt: skip


async def create_topics(target: Target) -> None:
    """Generation N's topics (the workers would make them too; this fails early and clearly)."""
    async with admin_client(target.kafka) as admin:
        existing = set(await admin.list_topics())
    if target.topics.events not in existing:
        raise RebuildRefused(f"topic {target.topics.events} does not exist: nothing to replay")
    await ensure_topics(target.kafka, target.topics)
    await ensure_popularity_topic(target.kafka, target.topics)


def apply_child_environment(target: Target) -> None:
    """Export the workers' environment (they inherit this process's)."""
    os.environ.update(target.child_environment())


def is_tty() -> bool:
    return sys.stdout.isatty()


# -- switch and status ---------------------------------------------------------------------


def generation_exists(target: Target) -> bool:
    """Whether the store holds generation N's users and items (real collections, not aliases)."""
    q = target.qdrant
    if q.url:
        from models.store.aliases import collection_names
        from models.store.interest_store import open_backend

        backend = open_backend(q)
        try:
            names = set(collection_names(backend))
        finally:
            backend.close()
        return {q.users_collection, q.items_collection} <= names
    from models.store.edge import LAYOUT_FILE

    folder = Path(q.path).expanduser()
    return all(
        (folder / name / LAYOUT_FILE).exists() for name in (q.users_collection, q.items_collection)
    )


def check_switch(generation: int, serving: int, max_lag: int) -> Target:
    """Refuse a switch to a generation that does not exist or has not caught up."""
    from streams.generation import Manifest

    target = Target.of(generation)
    if generation:
        manifest = Manifest.load(generation)
        if manifest is None:
            raise RebuildRefused(
                f"generation {generation} does not exist: build it with "
                f"`interest-stream rebuild start {generation}`"
            )
        if manifest.caught_up_at is None:
            raise RebuildRefused(
                f"generation {generation} has not caught up yet: run "
                f"`interest-stream rebuild start {generation}` until it says so"
            )
    if not generation_exists(target):
        gone = " (a server's generation 0 is deleted by the first switch)" if not generation else ""
        raise RebuildRefused(f"generation {generation}'s collections are not in the store{gone}")
    p = read_progress(target)
    behind = p.stream_lag + p.embed_lag
    if not p.complete or behind > max_lag:
        raise RebuildRefused(
            f"generation {generation} is {behind:,} records behind the live end (more than "
            f"--max-lag {max_lag:,}): catch it up first (`interest-stream rebuild start "
            f"{generation}`, or `INTEREST_GENERATION={generation} interest-stream run`)"
        )
    return target


def switch_server(target: Target, base: QdrantSettings, drop_generation_0: bool) -> None:
    """Move the server's ``users``/``items`` aliases to generation N in one request."""
    from models.store.aliases import collection_names, switch_aliases
    from models.store.interest_store import open_backend

    backend = open_backend(base)
    try:
        legacy = [
            n
            for n in (base.users_collection, base.items_collection)
            if n in collection_names(backend)
        ]
        if legacy and not drop_generation_0:
            raise RebuildRefused(
                f"generation 0's collections {' and '.join(legacy)} carry the alias names: the "
                "first switch deletes them (no way back to generation 0); pass "
                "--drop-generation-0 to do it"
            )
        switch_aliases(
            backend,
            {
                base.users_collection: target.qdrant.users_collection,
                base.items_collection: target.qdrant.items_collection,
            },
            drop_collections=legacy,
        )
    finally:
        backend.close()


def describe_store(target: Target) -> dict[str, object]:
    """Points, vector size and interest slots of generation N's collections (as far as the
    store can be opened here: an embedded folder a running service holds is not)."""
    from models.store import InterestStore, StoreError

    q = target.qdrant
    try:
        store = InterestStore.from_settings(q)
    except StoreError as exc:
        return {"store": f"not readable here ({str(exc).splitlines()[0]})"}
    with store:
        out: dict[str, object] = {}
        for role, name in (("users", q.users_collection), ("items", q.items_collection)):
            if not is_own_collection(store.backend, name, target.generation):
                out[role] = None
                continue
            out[role] = store.backend.count(name)
            if role == "users":
                vectors = store.backend.vector_params(name)
                out["dimension"] = next(iter(vectors.values()))[0] if vectors else None
                out["cluster_k"] = sum(1 for v in vectors if v.startswith("interest_"))
        return out


def is_own_collection(backend: StoreBackend, name: str, generation: int) -> bool:
    """Whether ``name`` is generation N's own collection. On a server, after the first switch
    generation 0's names are aliases of the serving generation: its collections are gone, and
    counting through the alias would show another generation's points as generation 0's."""
    if not backend.collection_exists(name):
        return False
    if generation or backend.kind == "embedded":  # no aliases in the embedded engine
        return True
    from models.store.aliases import collection_names

    return name in collection_names(backend)
