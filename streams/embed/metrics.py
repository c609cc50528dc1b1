"""Prometheus metrics of the workers. Names follow Prometheus conventions and the design page.

Each worker builds its own :class:`CollectorRegistry` (several workers can live in one test
process) and serves it at ``/metrics``. Consumer lag (``interest_consumer_lag*``) is collected by
:mod:`streams.lag` at scrape time; everything here is counted as work happens.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Event -> vector latency spans milliseconds (hot path) to minutes (backlog after an outage).
FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class EmbedMetrics:
    """What an embed worker counts."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Register every metric on ``registry`` (default: a new one for this worker): the work
        counters first, then the timings and gauges, so ``/metrics`` keeps its order."""
        self.registry = registry or CollectorRegistry()
        self._add_work_counters(self.registry)
        self._add_timings_and_gauges(self.registry)

    def _add_work_counters(self, r: CollectorRegistry) -> None:
        """What flows through the worker: jobs read, events folded or skipped, vectors sourced."""
        self.jobs = Counter("interest_embed_jobs", "Update jobs read by embed workers", registry=r)
        self.invalid_jobs = Counter(
            "interest_embed_invalid_jobs", "Unreadable update jobs sent to the DLQ", registry=r
        )
        self.events_applied = Counter(
            "interest_embed_events_applied", "Events folded into interest vectors", registry=r
        )
        self.events_replayed = Counter(
            "interest_embed_events_replayed",
            "Events skipped because they were already folded in (n <= stored seq)",
            registry=r,
        )
        self.events_skipped = Counter(
            "interest_embed_events_skipped",
            "Events that got no vector, by reason",
            ["reason"],
            registry=r,
        )
        self.texts_embedded = Counter(
            "interest_embed_texts_embedded", "Texts run through the model", registry=r
        )
        self.cache_hits = Counter(
            "interest_embed_cache_hits", "Texts served from the embedding cache", registry=r
        )
        self.texts_outside_languages = Counter(
            "interest_embed_texts_outside_model_languages",
            "Texts embedded that are mostly outside the languages the model serves (e.g. mostly "
            "non-Latin script for an English-only model): their vectors are unreliable",
            registry=r,
        )
        self.item_vectors = Counter(
            "interest_embed_item_vectors_reused",
            "Event vectors taken from Qdrant items",
            registry=r,
        )
        self.user_deletes = Counter(
            "interest_embed_user_deletes",
            "User points deleted on request (delete jobs; a replayed delete counts again)",
            registry=r,
        )

    def _add_timings_and_gauges(self, r: CollectorRegistry) -> None:
        """How batches go: their size and duration, upsert latency and failures, freshness, and
        whether the worker is consuming."""
        self.batch_size = Histogram(
            "interest_embed_batch_size", "Jobs per embed batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "interest_embed_batch_seconds",
            "Time to fold one batch (retrieve, embed, math, upsert)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upsert_seconds = Histogram(
            "interest_qdrant_upsert_seconds",
            "Latency of Qdrant user upserts",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.store_errors = Counter(
            "interest_qdrant_errors", "Failed store steps (each is retried)", registry=r
        )
        self.freshness = Histogram(
            "interest_update_freshness_seconds",
            "Time from an event reaching a stream worker to its vector being upserted",
            buckets=FRESHNESS_BUCKETS,
            registry=r,
        )
        self.consuming = Gauge(
            "interest_worker_consuming", "1 while the worker is consuming", registry=r
        )
        self.last_batch = Gauge(
            "interest_embed_last_batch_timestamp_seconds",
            "Wall time of the last completed batch",
            registry=r,
        )
        self.collab_rebuilds = Counter(
            "interest_embed_collab_rebuilds",
            "Rebuilds of the items' collaborative vectors from the users' engagement lists",
            registry=r,
        )
        self.collab_rebuild_seconds = Gauge(
            "interest_embed_collab_rebuild_seconds", "Duration of the last rebuild", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
