"""Settings of the stream workers (``interest-stream stream``): env ``INTEREST_STREAM_*``.

Also read from the ``[stream]`` section of the config file (see :mod:`models.config`)::

    [stream]
    flush_count = 64
    max_delay_s = 1.0
    activity_windows_s = [60, 3600, 86400]

Topic names, partitions and the Kafka address are :mod:`streams.settings`' (TopicSettings,
KafkaSettings); the intake rules are IntakeSettings'. The repartition topic is named here because
only stream workers use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from models.config import CoreSettings
from models.generation import Generational, folder_path, group_name, topic_name
from streams.stream.popularity import EmitPolicy
from streams.stream.triggers import TriggerPolicy
from streams.stream.userstate import ActivityWindow, StateLimits


class StreamSettings(Generational):
    """Per-user windows, dedupe, triggers and the faust app of the stream workers."""

    config_section = "stream"
    model_config = SettingsConfigDict(
        env_prefix="INTEREST_STREAM_", extra="ignore", env_file=".env"
    )

    app_id: str = Field(
        default="interest-stream-worker",
        description="faust app id: the consumer group and the prefix of the changelog topic",
    )
    # Triggers (see streams.stream.triggers).
    flush_count: int = Field(
        default=64, ge=1, description="flush a user with this many pending events"
    )
    max_delay_s: float = Field(default=1.0, gt=0, description="event -> job latency bound")
    min_interval_s: float = Field(
        default=0.25, ge=0, description="least time between two count/window flushes of one user"
    )
    flush_on_window_close: bool = Field(
        default=True, description="flush when the first activity window of pending events closes"
    )
    # State bounds (see streams.stream.userstate).
    pending_cap: int = Field(
        default=512, ge=1, description="pending events per user before folding"
    )
    pending_max_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        le=768 * 1024,
        description="pending bytes per user before folding",
    )
    dedupe_window: int = Field(default=128, ge=0, description="recent event ids kept per user")
    activity_windows_s: list[int] = Field(
        default_factory=lambda: [60, 3600, 86400],
        description="event-time activity window sizes (seconds), smallest first",
    )
    activity_hops: int = Field(
        default=1, ge=1, description="hops per activity window: 1 = tumbling, >1 = hopping"
    )
    # Batching and timers.
    batch_max: int = Field(default=1000, ge=1, description="records per processing batch")
    batch_within_s: float = Field(default=0.05, gt=0, description="longest wait to fill a batch")
    timer_interval_s: float = Field(default=0.05, gt=0, description="tick of the age-flush timer")
    producer_linger_s: float = Field(
        default=0.005, ge=0, description="producer linger: batches state writes and jobs"
    )
    persist_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="longest delay of a state write after a flush (a lost one only re-emits)",
    )
    commit_interval_s: float = Field(default=1.0, gt=0, description="source offset commit interval")
    session_timeout_s: float = Field(
        default=30.0,
        ge=6,
        description="consumer group session timeout: how soon a dead worker's partitions move",
    )
    # State topics (partition count and replication follow TopicSettings / the events topic).
    standby_replicas: int = Field(default=0, ge=0, description="faust standby table replicas")
    repartition_topic: str = Field(
        default="interest.events.repartition",
        description="where records not partitioned by user_id are re-keyed to",
    )
    data_dir: Path | None = Field(
        default=None, description="faust data dir; default <data_dir>/stream"
    )
    stats_interval_s: float = Field(default=60.0, gt=0, description="log the counters this often")
    state_idle_after_s: float = Field(
        default=86_400.0,
        gt=0,
        description="a user flushed this long ago keeps only its numbering and offsets (the "
        "dedupe ring and activity go): also how long duplicates are recognised; at least the "
        "largest activity window",
    )
    state_sweep_interval_s: float = Field(
        default=60.0, gt=0, description="how often the idle-user sweep takes its next chunk"
    )
    state_sweep_chunk: int = Field(
        default=10_000, ge=1, description="stored states the idle-user sweep reads per step"
    )
    # Where the state tables live on this worker (streams.stream.faust_tables).
    table_store: Literal["rocksdb", "memory"] = Field(
        default="rocksdb",
        description="rocksdb: on disk under the data dir, a restart reads only the changelog's "
        "tail; memory: re-read from the whole changelog at every start and hand-over",
    )
    rocksdb_block_cache_mb: int = Field(
        default=32, ge=8, description="RocksDB read cache per table partition"
    )
    rocksdb_write_buffer_mb: int = Field(
        default=16, ge=1, description="RocksDB memtable size per table partition (two kept)"
    )
    # Live item popularity (streams.stream.popularity).
    popularity_enabled: bool = Field(
        default=True, description="keep decayed interaction counts per item and emit them"
    )
    popularity_half_life_s: float = Field(
        default=7 * 86400.0, gt=0, description="half-life of an interaction's weight"
    )
    popularity_interval_s: float = Field(
        default=10.0, gt=0, description="how often changed item popularity is emitted"
    )
    popularity_tolerance: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="emit an item again when its popularity moved by this fraction",
    )
    popularity_floor: float = Field(
        default=0.01, gt=0, description="below this an item is emitted as 0 and forgotten"
    )
    item_repartition_topic: str | None = Field(
        default=None,
        description="where per-batch item counts go; default <app_id>-item-repartition",
    )
    # Prometheus /metrics and /healthz (streams.stream.metrics).
    metrics_enabled: bool = Field(default=True, description="serve /metrics and /healthz")
    metrics_host: str = Field(default="127.0.0.1", description="metrics server address")
    metrics_port: int = Field(
        default=8766, ge=0, le=65535, description="metrics server port; 0 picks a free one"
    )
    loglevel: str = Field(
        default="warn", description="faust worker log level: crit|error|warn|info|debug"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.flush_count > self.pending_cap:
            raise ValueError(f"flush_count {self.flush_count} > pending_cap {self.pending_cap}")
        if self.slack_s > self.max_delay_s:
            raise ValueError(
                f"max_delay_s {self.max_delay_s} must exceed batch_within_s + timer_interval_s"
                f" = {self.slack_s}"
            )
        if not self.activity_windows_s or any(w <= 0 for w in self.activity_windows_s):
            raise ValueError("activity_windows_s must be positive sizes in seconds")
        for w in self.activity_windows_s:
            if (w * 1000) % self.activity_hops:
                raise ValueError(f"activity window {w}s is not divisible into {self.activity_hops}")
        if self.state_idle_after_s < max(self.activity_windows_s):
            raise ValueError(
                f"state_idle_after_s {self.state_idle_after_s} must be at least the largest "
                f"activity window ({max(self.activity_windows_s)} s)"
            )
        return self

    def apply_generation(self, generation: int) -> None:
        """Generation N's faust app: group, changelogs, internal topics and state folder."""
        self.app_id = group_name(self.app_id, generation)
        self.repartition_topic = topic_name(self.repartition_topic, generation)
        if self.item_repartition_topic is not None:
            self.item_repartition_topic = topic_name(self.item_repartition_topic, generation)
        self.data_dir = folder_path(self.faust_data_dir(), generation)

    @property
    def slack_s(self) -> float:
        """The latency budget spent outside the trigger: batch wait plus timer tick."""
        return self.batch_within_s + self.timer_interval_s

    def trigger_policy(self) -> TriggerPolicy:
        return TriggerPolicy(
            flush_count=self.flush_count,
            max_delay_ms=round(self.max_delay_s * 1000),
            min_interval_ms=round(self.min_interval_s * 1000),
            window_ms=min(self.activity_windows_s) * 1000 if self.flush_on_window_close else None,
            slack_ms=round(self.slack_s * 1000),
        )

    def state_limits(self) -> StateLimits:
        windows = tuple(
            ActivityWindow(w * 1000, w * 1000 // self.activity_hops)
            for w in sorted(set(self.activity_windows_s))
        )
        return StateLimits(
            pending_cap=self.pending_cap,
            pending_max_bytes=self.pending_max_bytes,
            dedupe_window=self.dedupe_window,
            windows=windows,
        )

    def item_topic(self) -> str:
        """The item repartition topic (internal to this app, like its changelogs)."""
        return self.item_repartition_topic or f"{self.app_id}-item-repartition"

    def popularity_policy(self) -> EmitPolicy:
        return EmitPolicy(
            half_life_s=self.popularity_half_life_s,
            tolerance=self.popularity_tolerance,
            floor=self.popularity_floor,
        )

    def table_store_url(self) -> str:
        return f"{self.table_store}://"

    def rocksdb_options(self) -> dict[str, int]:
        """faust's RocksDB options: its defaults (2 GiB of block cache and 3 x 64 MiB memtables
        per partition database) are sized for a machine of its own."""
        mib = 2**20
        return {
            "block_cache_size": self.rocksdb_block_cache_mb * mib,
            "block_cache_compressed_size": 0,
            "write_buffer_size": self.rocksdb_write_buffer_mb * mib,
            "max_write_buffer_number": 2,
        }

    def faust_data_dir(self) -> Path:
        return self.data_dir if self.data_dir is not None else CoreSettings().path("stream")
