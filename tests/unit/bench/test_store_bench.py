"""The store benchmark's pieces on tiny sizes: synthetic users are valid stored users, and one
case on each backend reports every field (no timing assertions: the machine is shared)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import store_bench as sb
from models.profile import InterestSpec, UserInterests
from models.recommend import Recommender


def tiny_case(tmp_path: Path, backend: str, **over: Any) -> dict[str, Any]:
    case = {"seed": 1, "work": str(tmp_path), "users_storage": "disk", "items_storage": "ram",
            "queries": 4, "recall_queries": 3, "recall_ef": 64, "backend": backend, "items": 300,
            "users": [40, 80], "label": f"t-{backend}", "role": "size", "cap_s": None}  # fmt: skip
    case.update(over)
    return case


def test_synthetic_users_fold_back_and_plan() -> None:
    space = sb.ItemSpace(1, 500)
    templates = sb.make_templates(space, 10, 1)
    assert any(t.names == sb.NAMES for t in templates), "some users carry all 8 vectors"
    for user_id, vectors, payload in sb.make_users(space, templates, 0, 20, 1):
        assert payload["user_id"] == user_id
        assert all(v.shape == (sb.DIM,) for v in vectors.values())
        assert np.allclose([np.linalg.norm(v) for v in vectors.values()], 1.0, atol=1e-5)
        user = UserInterests.from_stored(vectors, payload, InterestSpec())  # no StateError
        assert set(user.vectors()) == set(vectors)


def test_exact_marks_every_search(tmp_path: Path) -> None:
    space = sb.ItemSpace(1, 500)
    templates = sb.make_templates(space, 5, 1)
    _, vectors, payload = sb.make_users(space, templates, 0, 1, 1)[0]
    store = sb.open_store("edge", tmp_path / "s", tiny_case(tmp_path, "edge"))
    try:
        rec = Recommender(store)
        request = rec.plan({k: v.astype(np.float64) for k, v in vectors.items()}, payload).request
    finally:
        store.close()
    assert request is not None

    def searches(p: Any) -> list[Any]:
        nested = p.prefetch if isinstance(p.prefetch, list) else [p.prefetch] if p.prefetch else []
        return [p, *(x for n in nested for x in searches(n))]

    marked = searches(sb.exact(request))
    assert len(marked) > 2
    assert all(p.params is not None and p.params.exact for p in marked)
    assert all(p.params is None for p in searches(request))  # the original is untouched


@pytest.mark.parametrize("backend", ["edge", "local"])
def test_run_case_reports_every_field(tmp_path: Path, backend: str) -> None:
    result = sb.run_case(tiny_case(tmp_path, backend))
    assert result["items"]["loaded"] == 300
    assert [s["users"] for s in result["sizes"]] == [40, 80]
    for step in result["sizes"]:
        assert step["upsert"]["upserts_per_s"] > 0
        assert step["upsert"]["payload_json_bytes"] > 100
        for key in ("get_1_ms", "get_64_ms", "recommend_ms"):
            assert step[key]["n"] == 4 and step[key]["p99"] >= step[key]["p50"]
        assert step["strategies"] == {"personal": 4}
        assert step["memory"]["VmRSS"] > 0 and step["disk_bytes"] > 0
        if backend == "edge":
            assert set(step["optimize_s"]) == {"items", "users"}
            assert 0 <= step["recall"]["top10_same_set"] <= 1
            assert 0 <= step["recall"]["prefetch_ef"]["top10_same_set"] <= 1
            assert {"items/segments", "users/wal"} <= set(step["disk_parts"])
    assert ("recommend_unindexed_ms" in result["sizes"][0]) == (backend == "edge")
    assert not (tmp_path / f"t-{backend}").exists()


def test_targets_and_report_from_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        sb.run_case(tiny_case(tmp_path, "edge", role="compare", users=[60], label="c-edge")),
        sb.run_case(tiny_case(tmp_path, "local", role="compare", users=[60], label="c-local")),
        sb.run_case(tiny_case(tmp_path, "edge")),
    ]
    fold = {"backends": {"edge": {"events_per_s": 50.0}, "local": {"events_per_s": 10.0}}}
    results: dict[str, Any] = {"machine": {"cpu_share_during_run": None}, "cases": cases}
    results["fold"] = fold
    verdicts = results["targets"] = sb.targets(results)
    assert verdicts["user_upserts_vs_local"]["ratio"] > 0
    assert verdicts["recommend_p99_ms"]["at_1M_items"] is False
    assert verdicts["embed_warm_vs_local"] == {"ratio": 5.0, "target": 5, "met": True}
    assert verdicts["rss_1M_users_1M_items"]["measured"] is False
    assert "rss_gib_at_1M_users" in verdicts["rss_1M_users_1M_items"]
    results["fold"] = None
    sb.report(results)
    out = capsys.readouterr().out
    assert "c-local" in out and "targets" in out


def test_size_arguments() -> None:
    assert sb.ints("10k,1M,2500") == [10_000, 1_000_000, 2_500]
    quick = sb.parse_args(["--quick"])
    assert quick.users == [1_000, 3_000] and quick.fold_users <= 300
    full = sb.parse_args(["--full"])
    assert 1_000_000 in full.items and sb.storage_for(full, 1_000_000) == "int8"
    assert sb.storage_for(full, 100_000) == "ram"
