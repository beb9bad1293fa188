"""Benchmark IDs: the format, never reused, unique under concurrent allocation, stable sweep points."""

import multiprocessing as mp
import re

import pytest

from aifb.workflow import registry
from aifb.errors import RegistryError
from aifb.paths import ID_PATTERN

ENTRY = registry.make_entry({"name": "x", "category": "storage", "service": {"kind": "redis"},
                             "load": {"clients": 1, "duration": "1s"}})


def test_format_and_sequence(tmp_path):
    a = registry.allocate(ENTRY, tmp_path, day="20260109")
    b = registry.allocate(ENTRY, tmp_path, day="20260109")
    assert (a, b) == ("BM-20260109-001", "BM-20260109-002")
    assert re.fullmatch(ID_PATTERN, a)
    assert registry.get(a, tmp_path)["recipe"]["name"] == "x"


def test_never_reused_even_when_registry_entry_is_gone(tmp_path):
    a = registry.allocate(ENTRY, tmp_path, day="20260109")
    (tmp_path / "results" / a).mkdir()
    registry.entry_path(a, tmp_path).unlink()  # results/<id>/ still holds it
    assert registry.allocate(ENTRY, tmp_path, day="20260109") == "BM-20260109-002"


def test_predict_writes_nothing(tmp_path):
    registry.allocate(ENTRY, tmp_path, day="20260109")
    before = sorted(p.name for p in registry.registry_dir(tmp_path).iterdir())
    assert registry.predict_next(2, tmp_path, day="20260109") == ["BM-20260109-002", "BM-20260109-003"]
    assert sorted(p.name for p in registry.registry_dir(tmp_path).iterdir()) == before


def _worker(args):
    root, n = args
    return [registry.allocate(ENTRY, root, day="20260109") for _ in range(n)]


def test_unique_under_parallel_processes(tmp_path):
    with mp.get_context("spawn").Pool(4) as pool:
        ids = [i for chunk in pool.map(_worker, [(tmp_path, 10)] * 4) for i in chunk]
    assert len(ids) == 40 and len(set(ids)) == 40
    assert sorted(ids) == [f"BM-20260109-{i:03d}" for i in range(1, 41)]
    assert len(registry.all_entries(tmp_path)) == 40


def _sweep_worker(root):
    key = registry.sweep_key("s", 1, 4, 0) | {"epoch": 0}
    return registry.allocate_sweep_point(key, ENTRY, root, day="20260109")


def test_sweep_point_is_stable_and_race_free(tmp_path):
    with mp.get_context("spawn").Pool(4) as pool:
        ids = pool.map(_sweep_worker, [tmp_path] * 8)
    assert len(set(ids)) == 1
    assert _sweep_worker(tmp_path) == ids[0]


def test_unknown_and_malformed_ids(tmp_path):
    with pytest.raises(RegistryError, match="not registered"):
        registry.get("BM-20260109-999", tmp_path)
    with pytest.raises(RegistryError, match="not a benchmark ID"):
        registry.get("../../etc/passwd", tmp_path)


def test_more_than_999_per_day(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "BM-20260109-999").mkdir()
    assert registry.allocate(ENTRY, tmp_path, day="20260109") == "BM-20260109-1000"


def test_unknown_service_kind_is_not_implemented():
    from aifb.errors import NotImplementedKind
    from aifb.services import get_service

    with pytest.raises(NotImplementedKind, match="service kind 'mysql' is not implemented yet"):
        get_service("mysql")
