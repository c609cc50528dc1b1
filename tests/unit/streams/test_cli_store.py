"""``interest-stream store ...`` and an earlier version's store met by any command (no Kafka)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from legacy_store import USER_VECTORS, folder_digest, write_legacy_store

from streams.cli import main

CLI = str(Path(sys.executable).parent / "interest-stream")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Settings pointing at ``tmp_path`` only: no config file, no server, no broker needed."""
    values = {
        "INTEREST_DATA_DIR": str(tmp_path / "data"),
        "INTEREST_QDRANT_PATH": str(tmp_path / "qdrant"),
        "INTEREST_API_PORT": "1",  # nothing listens: a command must not need the service
    }
    for name in ("INTEREST_QDRANT_URL", "INTEREST_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return {**os.environ, **values}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_legacy_folder_one_line_error_then_the_named_command_migrates_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "qdrant"
    write_legacy_store(path)

    refused = run(env, "profile", "u0")
    assert refused.returncode == 1, refused.stderr
    assert refused.stdout == ""
    assert len(refused.stderr.splitlines()) == 1 and refused.stderr.startswith("error: ")
    named = re.search(r"`(interest-stream store migrate [^`]*)`", refused.stderr)
    assert named is not None, refused.stderr

    argv = shlex.split(named.group(1))
    migrated = run(env, *argv[1:])  # exactly the command the error names
    assert migrated.returncode == 0, migrated.stderr
    assert "users: 40 points copied and verified" in migrated.stdout
    assert "skipped (not the store's collections): scratch" in migrated.stdout
    assert f"{path}.local-mode-backup" in migrated.stdout

    shown = run(env, "profile", "u0", "--json")
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert view["found"] and view["seq"] == 1
    assert view["profile"] == {"deep learning": 0.7, "GANs": 0.25}
    assert view["dimensions"]["short_term"]["has_vector"]


def test_store_info_describes_each_collection(env: dict[str, str], tmp_path: Path) -> None:
    write_legacy_store(tmp_path / "qdrant", users=9, items=4, extra_collection=None)
    runner = CliRunner()
    legacy = runner.invoke(main, ["store", "info"])
    assert legacy.exit_code == 1 and "store migrate --from" in legacy.stderr

    assert runner.invoke(main, ["store", "migrate", "--json"]).exit_code == 0
    result = runner.invoke(main, ["store", "info", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["backend"] == "embedded" and data["location"] == str(tmp_path / "qdrant")
    users, items = data["collections"]["users"], data["collections"]["items"]
    assert users["points"] == 9 and sorted(users["vectors"]) == sorted(USER_VECTORS)
    assert users["estimate_bytes"]["vectors_disk"] == 9 * len(USER_VECTORS) * 8 * 4
    assert items["points"] == 4 and set(items["payload_indexes"]) == {"popularity", "item_id"}

    text = runner.invoke(main, ["store", "info"])
    assert text.exit_code == 0
    assert "users: 9 points, 6 vector(s) of 8 dims on disk" in text.stdout


def test_store_info_on_a_fresh_store(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["store", "info"])
    assert result.exit_code == 0, result.output
    assert "users: not created yet" in result.stdout


def test_migrate_to_another_folder_and_refusals(env: dict[str, str], tmp_path: Path) -> None:
    path, target = tmp_path / "qdrant", tmp_path / "new"
    write_legacy_store(path, users=3, items=2, extra_collection=None)
    before = folder_digest(path)
    runner = CliRunner()

    done = runner.invoke(main, ["store", "migrate", "--to", str(target), "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["points"] == 5 and report["backup"] is None
    assert folder_digest(path) == before

    again = runner.invoke(main, ["store", "migrate", "--to", str(target)])
    assert again.exit_code == 1
    assert again.stderr == (
        "error: the target already has 3 points in 'users'; refusing to mix two stores "
        "(migrate into an empty folder)\n"
    )
    nothing = runner.invoke(main, ["store", "migrate", "--from", str(target)])
    assert nothing.exit_code == 1 and "nothing to migrate" in nothing.stderr
