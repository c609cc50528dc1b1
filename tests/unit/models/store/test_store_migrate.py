"""``store migrate``: an earlier version's local-mode folder copied into the embedded engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from legacy_store import DIM, USER_VECTORS, folder_digest, write_legacy_store
from qdrant_client import QdrantClient
from qdrant_client.http import models as qm

from models.settings import QdrantSettings
from models.store import (
    InterestStore,
    LegacyStoreError,
    StoreLockedError,
    StoreSchemaError,
    item_point_id,
)
from models.store.edge import EdgeBackend, is_legacy_folder
from models.store.migrate import BACKUP_SUFFIX, MigrationError, migrate_local_folder


@pytest.fixture
def legacy(tmp_path: Path) -> tuple[Path, dict[str, dict[str, qm.PointStruct]]]:
    path = tmp_path / "qdrant"
    return path, write_legacy_store(path)


def assert_same_store(folder: Path, written: dict[str, dict[str, qm.PointStruct]]) -> None:
    """Every written point is in the embedded store at ``folder``: id, vectors, payload."""
    backend = EdgeBackend(folder)
    try:
        for collection, points in written.items():
            assert backend.count(collection) == len(points)
            records = backend.retrieve(
                collection, list(points), with_payload=True, with_vectors=True
            )
            assert {str(r.id) for r in records} == set(points)
            for record in records:
                point = points[str(record.id)]
                assert record.payload == point.payload
                want = point.vector
                assert isinstance(want, dict) and isinstance(record.vector, dict)
                assert set(record.vector) == set(want)
                for name, values in want.items():
                    unit = np.asarray(values) / np.linalg.norm(values)
                    np.testing.assert_allclose(record.vector[name], unit, atol=1e-6)
    finally:
        backend.close()


def test_the_engine_refuses_a_legacy_folder_naming_the_command(legacy: tuple[Path, dict]) -> None:
    path, _ = legacy
    with pytest.raises(LegacyStoreError) as err:
        EdgeBackend(path)
    message = str(err.value)
    assert "\n" not in message
    assert f"`interest-stream store migrate --from {path}`" in message
    assert f"{path}{BACKUP_SUFFIX}" in message


def test_in_place_copies_every_point_and_keeps_the_old_files(legacy: tuple[Path, dict]) -> None:
    path, written = legacy
    before = folder_digest(path)

    report = migrate_local_folder(path, QdrantSettings(path=path), batch_size=7)

    backup = path.with_name(path.name + BACKUP_SUFFIX)
    assert report.backup == str(backup) and report.target == str(path)
    assert folder_digest(backup) == before  # the old files, byte for byte
    assert not is_legacy_folder(path) and is_legacy_folder(backup)
    assert {c.name: c.points for c in report.collections} == {"users": 40, "items": 30}
    users = next(c for c in report.collections if c.name == "users")
    assert users.vectors == tuple(USER_VECTORS) and users.dimension == DIM
    assert report.skipped == ["scratch"]
    assert_same_store(path, written)
    assert sorted(p.name for p in path.parent.iterdir()) == ["qdrant", "qdrant" + BACKUP_SUFFIX]


def test_the_migrated_store_serves_the_store_api(legacy: tuple[Path, dict]) -> None:
    path, written = legacy
    settings = QdrantSettings(path=path)
    migrate_local_folder(path, settings)
    with InterestStore.from_settings(settings, DIM) as store:
        store.ensure_collections(DIM, USER_VECTORS)  # the layouts the workers expect
        users = store.get_users(["u0", "u1", "u2"])
        assert set(users["u0"].vectors) == set(USER_VECTORS)
        assert set(users["u1"].vectors) == {"short_term", "interest_1"}
        assert users["u2"].vectors == {} and users["u2"].payload["seq"] == 3
        top = store.query_items(
            qm.QueryRequest(
                query=qm.OrderByQuery(
                    order_by=qm.OrderBy(key="popularity", direction=qm.Direction.DESC)
                ),
                limit=1,
                with_payload=True,
            )
        )
        assert top[0].payload is not None and top[0].payload["item_id"] == "i29"
        assert len(store.sample_item_vectors(100)) == len(written["items"])


def test_into_another_folder_leaves_the_source_as_it_was(
    legacy: tuple[Path, dict], tmp_path: Path
) -> None:
    path, written = legacy
    before = folder_digest(path)
    target = tmp_path / "new"

    report = migrate_local_folder(path, QdrantSettings(path=path), to=target)

    assert report.backup is None and report.target == str(target)
    assert f"INTEREST_QDRANT_PATH={target}" in report.summary()
    assert folder_digest(path) == before and is_legacy_folder(path)
    assert_same_store(target, written)
    with pytest.raises(MigrationError, match="already has 40 points in 'users'"):
        migrate_local_folder(path, QdrantSettings(path=path), to=target)
    assert_same_store(target, written)  # the refusal changed nothing


def test_a_second_in_place_migration_refuses(legacy: tuple[Path, dict]) -> None:
    path, written = legacy
    migrate_local_folder(path, QdrantSettings(path=path))
    with pytest.raises(MigrationError, match=r"nothing to migrate \(already migrated"):
        migrate_local_folder(path, QdrantSettings(path=path))
    assert_same_store(path, written)


def test_an_old_process_holding_the_folder_is_refused(legacy: tuple[Path, dict]) -> None:
    path, _ = legacy
    before = folder_digest(path)
    old = QdrantClient(path=str(path))  # an earlier version still running
    try:
        with pytest.raises(StoreLockedError, match="in use by another process"):
            migrate_local_folder(path, QdrantSettings(path=path))
    finally:
        old.close()
    assert folder_digest(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["qdrant"]


def test_a_store_this_project_did_not_write_is_refused_and_nothing_is_left(
    tmp_path: Path,
) -> None:
    path = tmp_path / "qdrant"
    client = QdrantClient(path=str(path))
    params = qm.VectorParams(size=4, distance=qm.Distance.DOT)
    client.create_collection("items", vectors_config={"content": params})
    client.close()
    with pytest.raises(StoreSchemaError, match="'items' vector 'content' is Dot, not Cosine"):
        migrate_local_folder(path, QdrantSettings(path=path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qdrant"]
    assert is_legacy_folder(path)


def test_collection_names_and_sizing_come_from_the_settings(tmp_path: Path) -> None:
    path = tmp_path / "qdrant"
    written = write_legacy_store(path, users=6, items=5, extra_collection=None)
    settings = QdrantSettings(
        path=path, users_collection="people", items_storage="int8", item_payload_indexes={}
    )
    report = migrate_local_folder(path, settings)
    assert [c.name for c in report.collections] == ["items"]
    assert report.skipped == ["users"]  # not the configured users collection
    backend = EdgeBackend(path)
    try:
        assert not backend.collection_exists("people")
        info = backend.info("items")
        assert info.points_count == len(written["items"])
        assert set(info.payload_schema) == {"popularity", "item_id"}
    finally:
        backend.close()


def test_a_folder_without_a_legacy_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="holds no qdrant-client local-mode store"):
        migrate_local_folder(tmp_path / "nothing", QdrantSettings(path=tmp_path / "nothing"))


def test_a_point_the_engine_cannot_hold_fails_the_migration_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "qdrant"
    write_legacy_store(path, users=5, items=5, extra_collection=None)
    client = QdrantClient(path=str(path))
    bad = item_point_id("broken")
    vector = {"content": [1.0] * DIM}
    client.upsert("items", [qm.PointStruct(id=bad, vector=vector, payload={"x": float("nan")})])
    client.close()
    before = folder_digest(path)
    with pytest.raises(MigrationError, match=f"'items' point {bad}: its payload is not JSON"):
        migrate_local_folder(path, QdrantSettings(path=path))
    assert folder_digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qdrant"]  # nothing half-made is left
