"""Generations: every name a rebuilt copy of the service uses, derived from the base settings.

A *generation* is one complete set of the service's derived state: the users and items
collections, the stream workers' faust app (its consumer group, changelogs and internal topics),
the update, popularity and dead-letter topics, the embed workers' consumer group and, for the
embedded store, its folder. ``interest-stream rebuild`` fills a new generation by replaying the
events topic (the one thing all generations share: their source) with new model or profile
settings while the current one keeps serving, then switches readers over (see
:mod:`streams.rebuild`).

Generation 0 is the names as configured (``users``, ``interest.updates``, ...), so a deployment
that never rebuilt is untouched. Generation N ≥ 1 derives each name from the configured one:

=====================  =====================  ==========================
what                   generation 0           generation N
=====================  =====================  ==========================
collections            ``users``              ``users_gN``
topics                 ``interest.updates``   ``interest.updates.gN``
consumer groups, app   ``interest-embed``     ``interest-embed-gN``
folders                ``…/qdrant``           ``…/qdrant-gN``
=====================  =====================  ==========================

The derivations are idempotent (a name that already carries the generation's suffix is kept), so
settings rebuilt from another's values never end up with ``users_g2_g2``.

:class:`Generational` is the base of every settings class that holds such a name: it reads
``INTEREST_GENERATION`` (the same variable for all of them) and applies the generation to its
names once validated. Pure: no I/O.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from models.config import ConfigFileError, InterestSettings

GENERATION_ENV = "INTEREST_GENERATION"


class GenerationError(ConfigFileError):
    """A generation number or name that cannot be used; the message is one line."""


def parse_generation(value: object, *, least: int = 1) -> int:
    """``value`` as a generation number ≥ ``least``, or :class:`GenerationError`.

    >>> parse_generation("2")
    2
    """
    text = str(value).strip()
    if not text.isdigit() or int(text) < least:
        raise GenerationError(f"generation must be a whole number >= {least}, got {value!r}")
    return int(text)


def _suffixed(name: str, suffix: str) -> str:
    return name if name.endswith(suffix) else f"{name}{suffix}"


def collection_name(base: str, generation: int) -> str:
    """``users`` → ``users_g2`` (generation 0: ``users``)."""
    return base if generation == 0 else _suffixed(base, f"_g{generation}")


def topic_name(base: str, generation: int) -> str:
    """``interest.updates`` → ``interest.updates.g2`` (generation 0: unchanged)."""
    return base if generation == 0 else _suffixed(base, f".g{generation}")


def group_name(base: str, generation: int) -> str:
    """A consumer group or faust app id: ``interest-embed`` → ``interest-embed-g2``."""
    return base if generation == 0 else _suffixed(base, f"-g{generation}")


def folder_path(base: Path, generation: int) -> Path:
    """A folder of one generation: ``/data/qdrant`` → ``/data/qdrant-g2``."""
    if generation == 0:
        return base
    return base.with_name(_suffixed(base.name, f"-g{generation}"))


def generation_of_collection(name: str, base: str) -> int | None:
    """The generation whose collection ``name`` is (from ``base``), or None if none is."""
    if name == base:
        return 0
    head, sep, tail = name.rpartition("_g")
    if sep and head == base and tail.isdigit() and int(tail) >= 1 and str(int(tail)) == tail:
        return int(tail)
    return None


class Generational(InterestSettings):
    """Base of the settings classes that name per-generation things.

    ``generation`` comes from ``INTEREST_GENERATION`` for every subclass alike (whatever its own
    prefix), or from the constructor (``QdrantSettings(generation=2)``); once the settings are
    validated, :meth:`apply_generation` rewrites the subclass's names for it.
    """

    model_config = SettingsConfigDict(populate_by_name=True)

    generation: int = Field(default=0, ge=0, validation_alias=GENERATION_ENV)

    @model_validator(mode="after")
    def _derive_generation_names(self) -> Self:
        if self.generation:
            self.apply_generation(self.generation)
        return self

    def apply_generation(self, generation: int) -> None:
        """Rewrite this class's names for ``generation`` ≥ 1 (subclasses override)."""
