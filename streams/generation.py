"""Which generation serves, and where a generation's record is kept (see :mod:`models.generation`).

- **Embedded store**: a pointer file next to the store folder, ``<INTEREST_QDRANT_PATH>.serving``
  (``<data_dir>/qdrant.serving`` by default), holds ``{"generation": N}``; no file means 0. The
  CLI resolves it once at start (:func:`resolve_generation`) when ``INTEREST_GENERATION`` is not
  set, and exports the result into its environment, so ``run``'s workers inherit it.
- **Qdrant server**: the aliases ``users``/``items`` name the serving generation's collections
  (:mod:`models.store.aliases`); readers need no resolution (they name the aliases), the worker
  commands (``run``, ``stream``, ``embed``) ask the server which generation serves.

A rebuilt generation also has a manifest, ``<data_dir>/generations/g<N>.json``: the model and
profile settings it was built with and when it caught up with the events topic
(:class:`Manifest`), which ``rebuild status`` and ``rebuild switch`` read.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.config import CoreSettings
from models.generation import (
    GENERATION_ENV,
    Generational,
    GenerationError,
    generation_of_collection,
)
from models.settings import QdrantSettings

POINTER_SUFFIX = ".serving"
#: The commands that write a generation's state: on a server they follow the aliases.
WORKER_COMMANDS = frozenset({"run", "stream", "embed"})


def base_qdrant() -> QdrantSettings:
    """The store settings as configured, generation 0 (the base of every derived name)."""
    return QdrantSettings(generation=0)


def pointer_file(base: QdrantSettings) -> Path:
    """The embedded store's pointer: ``<path>.serving``, next to generation 0's folder."""
    path = Path(base.path).expanduser()
    return path.with_name(path.name + POINTER_SUFFIX)


def read_pointer(base: QdrantSettings) -> int:
    """The generation the pointer names (0 without a pointer); a broken pointer is an error."""
    path = pointer_file(base)
    try:
        data = json.loads(path.read_text())
        generation = data["generation"]
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GenerationError(f"{path}: not a serving-generation pointer ({exc})") from None
    if not isinstance(generation, int) or generation < 0:
        raise GenerationError(f"{path}: generation {generation!r} is not a whole number >= 0")
    return generation


def write_pointer(base: QdrantSettings, generation: int) -> Path:
    """Point readers of the embedded store at ``generation`` (atomic: a reader sees the old or
    the new pointer, never half of one)."""
    path = pointer_file(base)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"generation": generation, "switched_at": time.time()}) + "\n")
    os.replace(tmp, path)
    return path


def served_by_aliases(base: QdrantSettings) -> int:
    """The generation a server's ``users`` alias names (0: no alias, the real collection)."""
    from models.store.aliases import alias_targets
    from models.store.interest_store import open_backend

    try:
        backend = open_backend(base)
        try:
            target = alias_targets(backend).get(base.users_collection)
        finally:
            backend.close()
    except Exception as exc:  # unreachable, refused: whatever the client raises, one line
        raise GenerationError(
            f"cannot ask the Qdrant server at {base.url} which generation serves: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    if target is None:
        return 0
    generation = generation_of_collection(target, base.users_collection)
    if generation is None:
        raise GenerationError(
            f"alias {base.users_collection} names {target}, not a generation's collection"
        )
    return generation


def serving_generation(base: QdrantSettings | None = None) -> int:
    """The generation readers are served from (pointer or aliases)."""
    base = base or base_qdrant()
    return served_by_aliases(base) if base.url else read_pointer(base)


def generation_is_set() -> bool:
    """Whether ``INTEREST_GENERATION`` is configured (environment or ``.env``)."""
    return "generation" in Generational().model_fields_set


def resolve_generation(environ: MutableMapping[str, str], command: str | None) -> int | None:
    """At CLI start: with no ``INTEREST_GENERATION``, export the serving generation into
    ``environ`` (so every settings class and every child process uses it); return it, or None
    when nothing was resolved (set explicitly, or a server's reader: the aliases serve it)."""
    if generation_is_set():
        if command in WORKER_COMMANDS:
            check_worker_settings(Generational().generation)
        return None
    base = base_qdrant()
    if base.url and command not in WORKER_COMMANDS:
        return None
    generation = serving_generation(base)
    if generation:
        environ[GENERATION_ENV] = str(generation)
        if command in WORKER_COMMANDS:
            check_worker_settings(generation)
    return generation


def check_worker_settings(generation: int) -> None:
    """A rebuilt generation's workers must run with the model and K it was built with (another
    model's vectors in its collections would be meaningless): one line when they differ."""
    from models.settings import ModelSettings, ProfileSettings

    manifest = Manifest.load(generation) if generation else None
    if manifest is None:
        return
    model, k = ModelSettings().name, ProfileSettings().cluster_k
    if (manifest.model, manifest.cluster_k) != (model, k):
        raise GenerationError(
            f"generation {generation} was built with INTEREST_MODEL_NAME={manifest.model} and "
            f"INTEREST_PROFILE_CLUSTER_K={manifest.cluster_k}; this environment has {model} and "
            f"{k}: set them (or INTEREST_GENERATION to the generation these settings belong to)"
        )


@dataclass
class Manifest:
    """What a rebuilt generation was built with, and how far it got."""

    generation: int
    model: str
    dimension: int | None = None
    cluster_k: int | None = None
    item_tags_in_text: bool | None = None
    items: int = 0
    started_at: float = field(default_factory=time.time)
    caught_up_at: float | None = None
    events_replayed: int = 0

    @staticmethod
    def path(generation: int) -> Path:
        return CoreSettings().path("generations", f"g{generation}.json")

    @classmethod
    def load(cls, generation: int) -> Manifest | None:
        path = cls.path(generation)
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise GenerationError(f"{path}: unreadable generation manifest ({exc})") from None

    def save(self) -> None:
        path = self.path(self.generation)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)

    @staticmethod
    def known() -> list[int]:
        """Generations with a manifest, in order."""
        folder = CoreSettings().path("generations")
        found = []
        for path in folder.glob("g*.json"):
            digits = path.stem[1:]
            if digits.isdigit():
                found.append(int(digits))
        return sorted(found)
