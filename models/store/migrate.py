"""Copy an earlier version's store (qdrant-client local mode) into the embedded engine.

Versions before the embedded engine kept the store in qdrant-client's pure-Python local mode:
``meta.json`` and one SQLite file per collection under ``<path>/collection/``. The engine cannot
read those files, so :class:`~models.store.edge.EdgeBackend` refuses such a folder with
:class:`~models.store.base.LegacyStoreError`, naming ``interest-stream store migrate``, which
runs :func:`migrate_local_folder`:

- the old folder is never modified: it is copied (under its lock, so an old process still running
  is caught) to a scratch folder and qdrant-client reads the copy — opening a folder in local mode
  writes to it (it prunes stale rows and may create files);
- the ``users`` and ``items`` collections (names from ``QdrantSettings``) are created in the new
  store with the configured layouts (:meth:`InterestStore.layouts`), the dimension and the users'
  vector names taken from the old collections; any other collection is reported and skipped;
- every point (id, all its named vectors, payload) is copied in batches and read back from the new
  store to be compared, and the counts are compared at the end;
- by default the migration is in place: the new store is built next to the old folder, then the
  old folder becomes ``<path>.local-mode-backup`` and the new store takes its name, so no setting
  changes. With ``to`` the new store is written to that folder instead and the old one stays.

A failure leaves the old folder where it was and removes whatever the migration created.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from qdrant_client.http import models as qm

from models.settings import QdrantSettings
from models.store.base import (
    ITEM_VECTOR,
    CollectionLayout,
    StoreError,
    StoreLockedError,
    StoreSchemaError,
)
from models.store.client import ClientBackend
from models.store.edge import EdgeBackend, is_legacy_folder
from models.store.interest_store import InterestStore

BACKUP_SUFFIX: Final = ".local-mode-backup"
"""The old folder's new name after an in-place migration: ``<path>.local-mode-backup``."""
WORK_SUFFIX: Final = ".migrating"
"""Where an in-place migration builds the new store before it takes the old folder's name."""
BATCH_SIZE: Final = 256
_TOLERANCE: Final = 1e-5


class MigrationError(StoreError):
    """The migration cannot start, or its copy does not match the old store."""


@dataclass(frozen=True, slots=True)
class CopiedCollection:
    """One collection as migrated: points copied (all verified) and its vectors."""

    name: str
    points: int
    dimension: int
    vectors: tuple[str, ...]


@dataclass(slots=True)
class MigrationReport:
    """What :func:`migrate_local_folder` did."""

    source: str
    target: str
    backup: str | None = None
    collections: list[CopiedCollection] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def points(self) -> int:
        return sum(c.points for c in self.collections)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["points"] = self.points
        return data

    def summary(self) -> str:
        lines = [f"migrated {self.source} (qdrant-client local mode) into {self.target}"]
        for c in self.collections:
            lines.append(
                f"  {c.name}: {c.points} points copied and verified "
                f"({len(c.vectors)} vector(s) of {c.dimension} dims: {', '.join(c.vectors)})"
            )
        if self.skipped:
            lines.append(f"  skipped (not the store's collections): {', '.join(self.skipped)}")
        if self.backup is not None:
            lines.append(f"the old files are kept in {self.backup}; delete it when satisfied")
        else:
            lines.append(f"to use it: INTEREST_QDRANT_PATH={self.target}")
        return "\n".join(lines)


def migrate_local_folder(
    source: Path,
    settings: QdrantSettings,
    *,
    to: Path | None = None,
    batch_size: int = BATCH_SIZE,
) -> MigrationReport:
    """Copy the local-mode store in ``source`` into an embedded store (see the module doc).

    In place when ``to`` is None (``source`` then holds the new store and the old files move to
    ``<source>.local-mode-backup``); else into ``to``, which must hold none of the store's
    collections with points. Collection names and layouts come from ``settings``.
    """
    source = Path(source).expanduser().absolute()
    backup = source.with_name(source.name + BACKUP_SUFFIX)
    if not is_legacy_folder(source):
        done = f" (already migrated: the old files are in {backup})" if backup.exists() else ""
        raise MigrationError(
            f"{source} holds no qdrant-client local-mode store: nothing to migrate{done}"
        )
    if to is None:
        work = source.with_name(source.name + WORK_SUFFIX)
        for blocker in (backup, work):
            if blocker.exists():
                raise MigrationError(
                    f"{blocker} already exists (an earlier migration?); move it away and run again"
                )
    else:
        work = Path(to).expanduser().absolute()
        if work == source or is_legacy_folder(work):
            raise MigrationError(f"{work} holds a local-mode store; migrate into another folder")
    created = not work.exists() or not any(work.iterdir())
    report = MigrationReport(str(source), str(source if to is None else work))
    with _locked_copy(source) as old:
        try:
            new = _open_target(work, settings)
            try:
                report.collections, report.skipped = copy_store(old, new, batch_size=batch_size)
            finally:
                new.close()
        except BaseException:
            if created:
                shutil.rmtree(work, ignore_errors=True)
            raise
        if to is None:  # swap while the old folder is still locked against an old process
            _swap(source, work, backup)
            report.backup = str(backup)
    return report


def _swap(source: Path, work: Path, backup: Path) -> None:
    """``source`` → ``backup``, then ``work`` → ``source`` (both renames in one folder)."""
    os.rename(source, backup)
    try:
        os.rename(work, source)
    except BaseException:
        os.rename(backup, source)
        raise


def _open_target(folder: Path, settings: QdrantSettings) -> InterestStore:
    return InterestStore(
        EdgeBackend(folder),
        users_collection=settings.users_collection,
        items_collection=settings.items_collection,
        settings=settings,
    )


@contextlib.contextmanager
def _locked_copy(source: Path) -> Iterator[ClientBackend]:
    """qdrant-client local mode on a scratch copy of ``source``, taken under its lock.

    The lock is the one qdrant-client takes (``flock`` on ``<source>/.lock``), held until the
    block ends, so an earlier version still running on the folder is refused, not copied mid-write.
    """
    lock_path = source / ".lock"
    fd = os.open(lock_path, os.O_RDONLY) if lock_path.exists() else None
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreLockedError(
                    f"{source} is in use by another process (an earlier interest-stream still "
                    "running?); stop it and run the migration again"
                ) from None
        with tempfile.TemporaryDirectory(prefix=f".{source.name}-copy-", dir=source.parent) as tmp:
            copy = Path(tmp) / "store"
            shutil.copytree(source, copy, ignore=shutil.ignore_patterns(".lock"))
            with warnings.catch_warnings():  # local mode's "not recommended for large data"
                warnings.simplefilter("ignore")
                backend = ClientBackend.local(str(copy))
            try:
                yield backend
            finally:
                backend.close()
    finally:
        if fd is not None:
            os.close(fd)  # releases the flock


def copy_store(
    old: ClientBackend, new: InterestStore, *, batch_size: int = BATCH_SIZE
) -> tuple[list[CopiedCollection], list[str]]:
    """Copy the store's collections from ``old`` into ``new`` and verify them.

    Returns the copied collections and the names of the other collections ``old`` holds
    (skipped). Refuses (``MigrationError``) when ``new`` already has points in one of them.
    """
    present = [c.name for c in old.client.get_collections().collections]
    wanted = (new.users_collection, new.items_collection)
    skipped = sorted(name for name in present if name not in wanted)
    layouts = plan_layouts(old, new, [name for name in wanted if name in present])
    for name, layout in layouts.items():  # every check before anything is created
        _check_target(new, name, layout)
    for name, layout in layouts.items():
        if not new.backend.collection_exists(name):
            new.backend.create_collection(name, layout)
    copied = []
    for name, layout in layouts.items():
        count = _copy_collection(old, new, name, batch_size)
        copied.append(CopiedCollection(name, count, layout.dimension, layout.vector_names))
    optimize = getattr(new.backend, "optimize", None)
    if callable(optimize):  # build the item index now rather than on the first writes
        optimize()
    new.flush()
    return copied, skipped


def plan_layouts(
    old: ClientBackend, new: InterestStore, names: Sequence[str]
) -> dict[str, CollectionLayout]:
    """The new layouts of the old collections ``names``: the configured sizing, the old vectors.

    The old collections must be cosine, of one dimension, and ``items`` must have exactly the
    ``content`` vector — as every earlier version created them.
    """
    params = {name: old.vector_params(name) for name in names}
    problems = [
        f"{name!r} vector {vector!r} is {dist}, not Cosine"
        for name, vectors in params.items()
        for vector, (_, dist) in vectors.items()
        if dist != "Cosine"
    ]
    items = params.get(new.items_collection)
    if items is not None and set(items) != {ITEM_VECTOR}:
        problems.append(
            f"{new.items_collection!r} has vectors {sorted(items)}, not [{ITEM_VECTOR!r}]"
        )
    if any(not vectors for vectors in params.values()):
        problems.append("a collection has no named vectors")
    sizes = {size for vectors in params.values() for size, _ in vectors.values()}
    if len(sizes) > 1:
        problems.append(f"vectors of several dimensions {sorted(sizes)}")
    if problems:
        raise StoreSchemaError(
            f"the old store is not one this project wrote: {'; '.join(problems)}"
        )
    if not sizes:
        return {}
    dimension = sizes.pop()
    # Without an old users collection its layout is not used: any vector name will do.
    user_vectors = list(params.get(new.users_collection, {})) or [ITEM_VECTOR]
    layouts = new.layouts(dimension, user_vectors)
    return {name: layouts[name] for name in names}


def _check_target(new: InterestStore, name: str, layout: CollectionLayout) -> None:
    """``name`` must be missing from the new store, or empty with the same vectors."""
    backend = new.backend
    if not backend.collection_exists(name):
        return
    points = backend.count(name)
    if points:
        raise MigrationError(
            f"the target already has {points} points in {name!r}; refusing to mix two stores "
            "(migrate into an empty folder)"
        )
    want = {v: (layout.dimension, "Cosine") for v in layout.vector_names}
    if backend.vector_params(name) != want:
        raise MigrationError(f"the target's empty {name!r} has other vectors; remove it first")


def _copy_collection(old: ClientBackend, new: InterestStore, name: str, batch_size: int) -> int:
    """Copy every point of ``name`` in batches, reading each batch back to compare; the count."""
    copied = 0
    offset: str | int | None = None
    while True:
        records, offset = old.scroll(
            name, limit=batch_size, offset=offset, with_payload=True, with_vectors=True
        )
        points = [_point(r, name) for r in records]
        _write(new, name, points)
        ids = [str(p.id) for p in points]  # the store's ids are all uuid5 strings
        back = new.backend.retrieve(name, ids, with_payload=True, with_vectors=True)
        _verify(name, points, back)
        copied += len(points)
        if offset is None:
            break
    old_count, new_count = old.count(name), new.backend.count(name)
    if not old_count == new_count == copied:
        raise MigrationError(
            f"{name!r}: the old store counts {old_count} points, {copied} were copied and the "
            f"new store counts {new_count}"
        )
    return copied


def _write(new: InterestStore, name: str, points: Sequence[qm.PointStruct]) -> None:
    """Upsert a batch; if the engine refuses it, find the point it refuses and name it."""
    try:
        new.backend.upsert(name, points)
    except Exception:  # the engine raises bare Exceptions with its reason
        for point in points:
            try:
                new.backend.upsert(name, [point])
            except Exception as exc:
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise MigrationError(
                    f"{name!r} point {point.id}: the new engine refuses it ({reason})"
                ) from exc
        raise


def _point(record: qm.Record, name: str) -> qm.PointStruct:
    """The old point to write: its id, named vectors, and payload as JSON has it.

    Local mode pickled payloads, so one may hold what JSON cannot (NaN, infinity), which the
    engine refuses: such a point is named here rather than by the engine's message.
    """
    try:
        payload = json.loads(json.dumps(record.payload or {}, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise MigrationError(
            f"{name!r} point {record.id}: its payload is not JSON ({exc}), the only payload "
            "the engine stores"
        ) from exc
    vectors: dict[str, Any] = _named(record.vector)
    return qm.PointStruct(id=record.id, vector=vectors, payload=payload)


def _named(raw: Any) -> dict[str, list[float]]:
    """A record's vectors as ``{name: list}``; the store only ever wrote named dense vectors."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise StoreSchemaError("the old store has a point with an unnamed vector")
    return {str(k): [float(x) for x in v] for k, v in raw.items()}


def _verify(name: str, written: Sequence[qm.PointStruct], back: Sequence[qm.Record]) -> None:
    """Every written point must read back with its payload and the direction of each vector."""
    found = {str(r.id): r for r in back}
    for point in written:
        record = found.get(str(point.id))
        problem = "missing" if record is None else _difference(point, record)
        if problem:
            raise MigrationError(f"{name!r} point {point.id}: {problem} after the copy")


def _difference(point: qm.PointStruct, record: qm.Record) -> str | None:
    if (record.payload or {}) != (point.payload or {}):
        return "payload differs"
    want, have = _named(point.vector), _named(record.vector)
    if set(want) != set(have):
        return f"vectors {sorted(have)} instead of {sorted(want)}"
    for vector, values in want.items():
        a = np.asarray(values, dtype=np.float64)
        norm = np.linalg.norm(a)
        expected = a / norm if norm else a  # cosine vectors are stored as unit vectors
        if not np.allclose(np.asarray(have[vector]), expected, atol=_TOLERANCE):
            return f"vector {vector!r} differs"
    return None
