"""The embed worker: ``interest.updates`` → per-dimension interest vectors in Qdrant.

An aiokafka consumer group (scale out by adding workers; Kafka splits the partitions). Each loop:
poll up to ``max_batch_jobs`` jobs, fold them in one step (:class:`streams.embed.fold.JobFolder`,
in a thread so heartbeats continue), and commit the batch's offsets only after the upsert
succeeded. If Qdrant fails, the same batch is retried with exponential backoff and nothing is
committed, so no job is lost; replays are harmless because folding is idempotent by ``seq``.

Item popularity (:mod:`streams.stream.popularity`): the same consumer also reads the popularity
topic
(``interest.items.popularity``, written by the stream workers, which must not open the embedded
Qdrant this process owns). One consumer rather than a second one: one poll loop, one commit
after everything in the batch is applied, and the embed group's lag covers both topics. Per
batch the latest value per item is set with ``set_payload`` on items that exist in ``items``
(no point is created; a value for an unknown item is dropped and counted), on the store
thread, retried like the jobs. Setting a value is idempotent, so replays are harmless.

The collaborative dimension (:mod:`models.collab`): the fold keeps every user's engaged items in
the user point, and every ``INTEREST_COLLAB_REFRESH_INTERVAL_S`` (when something was folded since)
and once more when the worker stops, :class:`streams.embed.collab.CollabRefresher` rebuilds the
items' ``collab`` vectors from them, on the store thread between batches.

Lifecycle, like uvicorn's ``Server``: :meth:`EmbedWorker.startup` (topics, model, store, consumer),
:meth:`EmbedWorker.main_loop`, :meth:`EmbedWorker.shutdown` (commit, close). SIGTERM/SIGINT ask
for a graceful exit — the batch in hand is finished and committed; a second signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaConnectionError
from prometheus_client import Counter as PromCounter

from models.encoder import Encoder, ModelLoadError, model_languages
from models.profile import InterestSpec
from models.settings import CollabSettings, ModelSettings, ProfileSettings, QdrantSettings
from models.store import InterestStore, LegacyStoreError, StoreLockedError, StoreSchemaError
from streams.contracts.dlq import DeadLetter, kafka_source
from streams.contracts.jobs import DeleteUserJob, InvalidJob, UpdateJob, parse_job
from streams.contracts.popularity import InvalidRecord, PopularityUpdate
from streams.embed.api import ApiServer
from streams.embed.collab import CollabRefresher
from streams.embed.fold import FoldReport, JobFolder, after_deletes
from streams.embed.metrics import EmbedMetrics
from streams.lag import LagCollector
from streams.publish import EventPublisher
from streams.settings import (
    ApiSettings,
    EmbedSettings,
    IntakeSettings,
    KafkaSettings,
    TopicSettings,
)
from streams.topics import ensure_popularity_topic, ensure_topics, unreachable
from streams.user_delete import request_delete

log = logging.getLogger(__name__)
T = TypeVar("T")

# Failures no retry can fix: stop the worker with a clear message instead of spinning.
FATAL = (StoreSchemaError, StoreLockedError, LegacyStoreError, ModelLoadError)


@dataclass
class EmbedStats:
    """Running totals of one worker (exported as metrics)."""

    batches: int = 0
    jobs: int = 0
    invalid_jobs: int = 0
    events_applied: int = 0
    events_replayed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    store_retries: int = 0
    commits: int = 0
    last_batch_s: float = 0.0
    popularity_applied: int = 0
    popularity_unknown: int = 0
    invalid_popularity: int = 0

    def add(self, report: FoldReport, seconds: float) -> None:
        self.batches += 1
        self.jobs += report.jobs
        self.events_applied += report.events_applied
        self.events_replayed += report.events_replayed
        self.skipped.update(report.skipped)
        self.last_batch_s = seconds


class EmbedWorker:
    """One member of the embed-worker consumer group."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicSettings,
        settings: EmbedSettings,
        model: ModelSettings,
        qdrant: QdrantSettings,
        spec: InterestSpec | None = None,
        api: ApiSettings | None = None,
        collab: CollabSettings | None = None,
    ) -> None:
        self.kafka = kafka
        self.topics = topics
        self.settings = settings
        self.model_settings = model
        self.qdrant_settings = qdrant
        # The interest math: INTEREST_PROFILE_* / [profile] unless a spec is given.
        self.spec = spec if spec is not None else ProfileSettings().spec()
        # The collaborative dimension: INTEREST_COLLAB_* / [collab] unless given.
        self.collab = collab if collab is not None else CollabSettings()
        self._refresher: CollabRefresher | None = None
        self._collab_pending = False  # something folded since the last rebuild
        self._last_rebuild = time.monotonic()
        self.stats = EmbedStats()
        self.metrics = EmbedMetrics()
        self.api_settings = api
        self.api: ApiServer | None = None
        # The embedded Qdrant client is not thread-safe: every store call (the fold step and the
        # API's queries) runs on this one thread.
        self._store_executor = ThreadPoolExecutor(1, thread_name_prefix="store")
        self._last_batch_monotonic: float | None = None
        self._seen_embedded = 0
        self._seen_hits = 0
        self._warned_languages = False
        self.should_exit = False
        self.force_exit = False
        self.started = False
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        #: Writes the API's delete requests to the events topic (started on first use).
        self._publisher: EventPublisher | None = None
        self._store: InterestStore | None = None
        self._folder: JobFolder | None = None
        self.encoder: Encoder | None = None
        self.lag: LagCollector | None = None
        self.popularity_updates = PromCounter(
            "interest_embed_popularity_updates",
            "Item popularity values from the popularity topic: applied, or dropped for an item "
            "not in the items collection",
            ["result"],
            registry=self.metrics.registry,
        )

    # -- lifecycle --------------------------------------------------------------------------

    def run(self) -> None:
        """Block until a signal (or a fatal error) ends the worker."""
        asyncio.run(self.serve())

    async def serve(self) -> None:
        self.install_signal_handlers()
        try:
            await self.startup()
            await self.main_loop()
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        await ensure_topics(self.kafka, self.topics, (self.topics.updates, self.topics.dlq))
        subscribed = [self.topics.updates]
        if self.settings.apply_popularity:
            await ensure_popularity_topic(self.kafka, self.topics)
            subscribed.append(self.topics.popularity)
        loop = asyncio.get_running_loop()
        encoder = Encoder.from_settings(self.model_settings)
        await loop.run_in_executor(None, encoder.load)
        self.encoder = encoder
        store = InterestStore.from_settings(self.qdrant_settings, encoder.dimension)
        self._store = store
        collab_spec = self.collab.spec() if self.collab.enabled else None
        self._folder = JobFolder(store, encoder, self.spec, collab=collab_spec)
        if collab_spec is not None:
            self._refresher = CollabRefresher(store, collab_spec)
        # Lag of this worker's own group, read from the brokers when /metrics is scraped.
        self.lag = LagCollector(
            self.kafka, [self.settings.group_id], registry=self.metrics.registry
        )
        if self.api_settings is not None and self.api_settings.enabled:
            self.api = ApiServer(
                self.api_settings, store, encoder, self._store_executor,
                health=self.health, metrics=self.render_metrics,
                ensure_collections=self._folder.ensure_collections,
            )  # fmt: skip
            self.api.delete_user = self.request_user_delete
            await self.api.start()
        consumer = AIOKafkaConsumer(
            *subscribed,
            **self.kafka.client_kwargs(),
            group_id=self.settings.group_id,
            enable_auto_commit=False,  # offsets move only after the upsert succeeded
            auto_offset_reset="earliest",
            max_poll_records=self.settings.max_batch_jobs,
        )
        try:
            await consumer.start()
        except KafkaConnectionError as exc:
            await consumer.stop()
            raise unreachable(self.kafka, exc) from exc
        self._consumer = consumer
        self.started = True
        self.metrics.consuming.set(1)
        log.info(
            "embed worker up: group %s on %s, model %s on %s (%s), dim %d",
            self.settings.group_id, self.topics.updates, encoder.model_name, encoder.device,
            encoder.precision, encoder.dimension,
        )  # fmt: skip

    async def main_loop(self) -> None:
        assert self._consumer is not None
        last_optimize = time.monotonic()
        while not self.should_exit:
            batch = await self._consumer.getmany(
                timeout_ms=self.settings.poll_timeout_ms,
                max_records=self.settings.max_batch_jobs,
            )
            if batch:
                await self.process(batch)
            every = self.collab.refresh_interval_s
            if self._collab_pending and every and time.monotonic() - self._last_rebuild >= every:
                await self.rebuild_collab()
            interval = self.settings.optimize_interval_s
            if interval and time.monotonic() - last_optimize >= interval:
                await self.optimize_store()
                last_optimize = time.monotonic()

    async def optimize_store(self) -> None:
        """Index and compact the embedded store between batches (see ``optimize_interval_s``);
        a failure is logged and counted, never fatal: the store works unoptimized."""
        if self._store is None or self._store.remote:
            return
        store = self._store
        started = time.monotonic()
        try:
            done = await asyncio.get_running_loop().run_in_executor(
                self._store_executor, store.optimize
            )
        except Exception:
            log.exception("optimizing the store failed; it stays usable, the next try follows")
            self.metrics.store_errors.inc()
            return
        if done:
            log.info("store optimized in %.1f s", time.monotonic() - started)

    async def rebuild_collab(self) -> None:
        """Rebuild the items' collaborative vectors now, on the store thread; a failure is
        logged and counted, never fatal (the vectors stay as they were, the next try follows)."""
        if self._refresher is None or self._store is None:
            return
        refresher = self._refresher
        try:
            report = await asyncio.get_running_loop().run_in_executor(
                self._store_executor, refresher.refresh
            )
        except Exception:
            log.exception("rebuilding the collaborative vectors failed; the next try follows")
            self.metrics.store_errors.inc()
            return
        finally:
            self._last_rebuild = time.monotonic()
        self._collab_pending = False
        self.metrics.collab_rebuilds.inc()
        self.metrics.collab_rebuild_seconds.set(report.seconds)

    async def shutdown(self) -> None:
        self.metrics.consuming.set(0)
        if self._collab_pending and self.collab.refresh_on_stop and not self.force_exit:
            await self.rebuild_collab()  # what the store holds last reflects every fold
        if self.api is not None:
            await self.api.stop()
            self.api = None
        if self.lag is not None:
            await self.lag.close()
            self.lag = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._publisher is not None:
            await self._publisher.stop()
            self._publisher = None
        if self._store is not None:
            store = self._store
            await asyncio.get_running_loop().run_in_executor(self._store_executor, store.close)
            self._store = None
        self.started = False
        log.info("embed worker stopped: %s", self.stats)

    async def request_user_delete(self, user_id: str) -> dict[str, object]:
        """``DELETE /v1/users/{id}``: write the user's delete request to the events topic
        (:mod:`streams.user_delete`); this worker deletes the point when the delete job, from
        the stream worker, comes back in order with the user's update jobs."""
        if self._publisher is None:
            rules = IntakeSettings().rules()
            publisher = EventPublisher(self.kafka, self.topics, rules, create_topics=False)
            await publisher.start()
            self._publisher = publisher
        receipt = await request_delete(self._publisher, user_id, by="api")
        return receipt.to_dict()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.handle_exit, sig)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                return

    def handle_exit(self, sig: int) -> None:
        if self.should_exit:
            log.warning("second signal: exiting now without committing")
            self.force_exit = True
            os._exit(1)
        log.info("signal %s: finishing the current batch, then exiting", signal.Signals(sig).name)
        self.should_exit = True

    async def render_metrics(self) -> bytes:
        if self.lag is not None:
            await self.lag.refresh()
        return self.metrics.render()

    def health(self) -> dict[str, object]:
        """For ``/healthz``: consuming means started, assigned partitions, not shutting down."""
        assigned = sorted(
            f"{tp.topic}/{tp.partition}"
            for tp in (self._consumer.assignment() if self._consumer else ())
        )
        consuming = self.started and not self.should_exit and self._consumer is not None
        age = (
            None if self._last_batch_monotonic is None
            else round(time.monotonic() - self._last_batch_monotonic, 3)
        )  # fmt: skip
        return {
            "status": "ok" if consuming else "stopping" if self.should_exit else "starting",
            "consuming": consuming,
            "worker": "embed",
            "group": self.settings.group_id,
            "assigned": assigned,
            "last_batch_age_s": age,
            "jobs": self.stats.jobs,
        }

    def _warn_languages(self, report: FoldReport) -> None:
        """Once per worker: texts the model does not serve well arrived (counted in a metric)."""
        if self._warned_languages or self.encoder is None:
            return
        self._warned_languages = True
        name = self.encoder.model_name
        log.warning(
            "model %s serves %s, but events carry text mostly outside it (e.g. %r); such texts "
            "get unreliable vectors (counted in interest_embed_texts_outside_model_languages). "
            "Set INTEREST_MODEL_NAME to a multilingual sentence-transformers model in the local "
            "cache (e.g. paraphrase-multilingual-MiniLM-L12-v2) and reload the items",
            name, model_languages(name), (report.outside_example or "")[:60],
        )  # fmt: skip

    def _record(self, report: FoldReport, jobs: int, seconds: float) -> None:
        self.stats.add(report, seconds)
        m = self.metrics
        m.jobs.inc(jobs)
        m.batch_size.observe(jobs)
        m.batch_seconds.observe(seconds)
        m.events_applied.inc(report.events_applied)
        m.events_replayed.inc(report.events_replayed)
        for reason, count in report.skipped.items():
            m.events_skipped.labels(reason).inc(count)
        m.item_vectors.inc(report.item_vectors_used)
        if report.users_deleted:
            m.user_deletes.inc(report.users_deleted)
            log.info("deleted %d user(s) on request", report.users_deleted)
        if report.texts_outside_languages:
            m.texts_outside_languages.inc(report.texts_outside_languages)
            self._warn_languages(report)
        if report.users:
            m.upsert_seconds.observe(report.upsert_s)
        for value in report.freshness_s:
            m.freshness.observe(value)
        if self.encoder is not None:
            # Counters mirror the encoder's own totals (it also serves the API's item loads).
            m.texts_embedded.inc(self.encoder.embedded_total - self._seen_embedded)
            m.cache_hits.inc(self.encoder.cache_hits_total - self._seen_hits)
            self._seen_embedded = self.encoder.embedded_total
            self._seen_hits = self.encoder.cache_hits_total
        self._last_batch_monotonic = time.monotonic()
        m.last_batch.set_to_current_time()

    # -- one batch --------------------------------------------------------------------------

    async def process(self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        assert self._consumer is not None and self._folder is not None
        jobs_read: list[UpdateJob | DeleteUserJob] = []
        popularity: dict[str, float] = {}
        for tp, records in batch.items():
            if tp.topic == self.topics.popularity:
                for record in records:
                    try:
                        update = PopularityUpdate.from_json(record.value)
                    except InvalidRecord as exc:
                        self.stats.invalid_popularity += 1
                        await self._dead_letter(record, tp, str(exc), "invalid_popularity")
                        continue
                    popularity[update.item_id] = update.popularity  # a later record wins
                continue
            for record in records:
                try:
                    jobs_read.append(parse_job(record.value))
                except InvalidJob as exc:
                    await self._dead_letter(record, tp, str(exc))
        forget, jobs = after_deletes(jobs_read)
        started = time.monotonic()
        if jobs or forget:
            report = await self._apply_with_retry(jobs, forget)
            if report is None:
                return  # asked to exit while the store was failing: nothing committed
            self._record(report, len(jobs_read), time.monotonic() - started)
            self._collab_pending = self._collab_pending or report.users > 0
        if popularity:
            applied = await self._retry(
                lambda: self._set_popularity(popularity), f"{len(popularity)} popularity values"
            )
            if applied is None:
                return
            self.stats.popularity_applied += applied
            self.stats.popularity_unknown += len(popularity) - applied
            self.popularity_updates.labels("applied").inc(applied)
            self.popularity_updates.labels("unknown_item").inc(len(popularity) - applied)
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
        try:
            await self._consumer.commit(offsets)
            self.stats.commits += 1
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance took these partitions away: the new owner re-reads the jobs and the
            # seq check makes them no-ops where we already upserted.
            log.warning("commit after rebalance failed (%s); jobs will be replayed", exc)

    async def _apply_with_retry(
        self, jobs: list[UpdateJob], forget: list[str]
    ) -> FoldReport | None:
        folder = self._folder
        assert folder is not None
        return await self._retry(
            lambda: folder.apply(jobs, forget=forget), f"{len(jobs) + len(forget)} jobs"
        )

    async def _retry(self, call: Callable[[], T], what: str) -> T | None:
        """``call()`` on the store thread until it works; None if asked to exit meanwhile."""
        loop = asyncio.get_running_loop()
        delay = self.settings.retry_initial_s
        while True:
            try:
                return await loop.run_in_executor(self._store_executor, call)
            except FATAL:
                raise
            except Exception as exc:  # Qdrant down, timeouts, network: retry the same batch
                self.stats.store_retries += 1
                self.metrics.store_errors.inc()
                log.warning(
                    "applying %s failed (%s: %s); retrying in %.1f s without committing",
                    what, type(exc).__name__, exc, delay,
                )  # fmt: skip
                if self.should_exit:
                    return None
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_s)

    def _set_popularity(self, values: Mapping[str, float]) -> int:
        """On the store thread: set ``popularity`` on those items that exist; return how many."""
        assert self._store is not None and self._folder is not None
        self._folder.ensure_collections()
        return self._store.set_item_popularity(values)

    async def _dead_letter(
        self, record: ConsumerRecord, tp: TopicPartition, detail: str, reason: str = "invalid_job"
    ) -> None:
        if self._producer is None:
            self._producer = AIOKafkaProducer(**self.kafka.client_kwargs(), acks="all")
            await self._producer.start()
        value = record.value or b""
        key = record.key
        letter = DeadLetter(
            key, value, reason, detail, kafka_source(tp.topic, tp.partition, record.offset),
            "embed", int(time.time() * 1000),
        )  # fmt: skip
        await self._producer.send_and_wait(
            self.topics.dlq, value, key=key, headers=letter.headers()
        )
        what = "popularity record" if reason == "invalid_popularity" else "job"
        if reason == "invalid_job":
            self.stats.invalid_jobs += 1
            self.metrics.invalid_jobs.inc()
        log.error("dead-lettered an unreadable %s at %s: %s", what, letter.source, detail)
