"""Shared base for every settings class: environment (prefix INTEREST_) plus an optional file.

Each external system gets one small settings class (Kafka, Qdrant, the model, ...). All of them
read, in order of precedence: constructor arguments, environment variables, a ``.env`` file, and
the section of the TOML file named by ``INTEREST_CONFIG_FILE`` that matches the class::

    # interest.toml
    data_dir = "/var/lib/interest-stream"
    [kafka]
    bootstrap = "kafka-1:9092,kafka-2:9092"

Lives in ``models`` (no I/O beyond reading that file) so both halves of the project can use it.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar

from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

CONFIG_FILE_ENV = "INTEREST_CONFIG_FILE"


class ConfigFileError(ValueError):
    """The config file named by INTEREST_CONFIG_FILE is missing or not valid TOML."""


def read_secret_file(
    path: Path, variable: str, error: type[ConfigFileError] = ConfigFileError
) -> str:
    """The first line of a file that holds a secret (a mounted Kubernetes Secret, a Docker
    secret): "" for an empty file. An unreadable file is ``error`` naming ``variable`` and the
    reason in one line -- never the content.

    >>> read_secret_file(Path("/nope"), "INTEREST_X_FILE")
    Traceback (most recent call last):
    ...
    models.config.ConfigFileError: INTEREST_X_FILE=/nope: cannot read it (No such file or directory)
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise error(
            f"{variable}={path}: cannot read it ({exc.strerror or type(exc).__name__})"
        ) from None
    return text.splitlines()[0] if text.strip() else ""


def _load_config_file() -> dict[str, Any]:
    # The one place that reads the environment outside pydantic-settings: it only locates the file.
    path = os.environ.get(CONFIG_FILE_ENV)
    if not path:
        return {}
    try:
        with Path(path).open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigFileError(f"{CONFIG_FILE_ENV}={path}: no such file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{CONFIG_FILE_ENV}={path}: invalid TOML: {exc}") from exc


class _TomlSectionSource(PydanticBaseSettingsSource):
    """Reads one section (or the top level) of the config file."""

    def __init__(self, settings_cls: type[BaseSettings], section: str | None) -> None:
        super().__init__(settings_cls)
        data = _load_config_file()
        if section is not None:
            value = data.get(section, {})
            data = value if isinstance(value, dict) else {}
        else:
            data = {k: v for k, v in data.items() if not isinstance(v, dict)}
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


class InterestSettings(BaseSettings):
    """Base class: subclasses set ``model_config`` (env prefix) and ``config_section``."""

    config_section: ClassVar[str | None] = None
    model_config = SettingsConfigDict(env_prefix="INTEREST_", extra="ignore", env_file=".env")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            _TomlSectionSource(settings_cls, cls.config_section),
        )


class CoreSettings(InterestSettings):
    """Where local state lives: broker data and logs, embedded Qdrant, caches."""

    data_dir: Path = Path.home() / ".local" / "share" / "interest-stream" / "data"

    def path(self, *parts: str) -> Path:
        """A path under the data dir (not created)."""
        return self.data_dir.joinpath(*parts)
