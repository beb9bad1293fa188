"""Sweep expansion and the stable mapping of sweep points to benchmark IDs."""

from __future__ import annotations

import pytest

from aifb.workflow import registry
from aifb.errors import ConfigError
from aifb.workflow.sweep import expand, invocation_allocates, resolve_all
from support import make_workspace


def config(**sweep):
    base = {"param": "load.clients", "recipe": "recipes/recipe_redis_1client.yaml",
            "levels": [1, 2, 4], "slo": ["p99 < 100ms"]}
    return {"sweeps": {"s": {**base, **sweep}}}


def test_levels_from_a_base_recipe_and_from_point_files(tmp_path):
    ws = make_workspace(tmp_path)
    sw = expand("s", config(repeats=2, set=["load.duration=1s"])["sweeps"]["s"], ws)
    assert [(p.level, p.repeat) for p in sw.points] == [(1, 0), (1, 1), (2, 0), (2, 1), (4, 0), (4, 1)]
    assert all(p.recipe["load"]["duration"] == "1s" for p in sw.points)
    assert sw.points[-1].recipe["load"]["clients"] == 4
    files = {"param": "load.clients", "points": [f"recipes/recipe_redis_{n}client.yaml" for n in (1, 2, 4)]}
    assert expand("f", files, ws).levels == [1, 2, 4]


def test_bad_sweeps_are_config_errors(tmp_path):
    ws = make_workspace(tmp_path)
    with pytest.raises(ConfigError, match="invalid recipe"):
        expand("s", config(levels=[0])["sweeps"]["s"], ws)
    with pytest.raises(ConfigError, match="same load.clients"):
        expand("s", config(levels=[2, 2])["sweeps"]["s"], ws)
    with pytest.raises(ConfigError, match="no sweep named nope"):
        resolve_all(config(), root=ws, allocate=False, only="nope")
    # the verdict settings are checked when the config is read, not when the report is built
    with pytest.raises(ConfigError, match="sweep s: error_budget '150%' must be between"):
        expand("s", config(error_budget="150%")["sweeps"]["s"], ws)
    with pytest.raises(ConfigError, match="needs repeats: 2 or more"):
        expand("s", config(confidence=0.95)["sweeps"]["s"], ws)
    with pytest.raises(ConfigError, match="sweep s: 'p99 < fast' is not an SLO rule"):
        expand("s", config(slo=["p99 < fast"])["sweeps"]["s"], ws)
    assert expand("s", config(confidence=0.95, repeats=3, error_budget=0.02)["sweeps"]["s"], ws)


def test_dry_resolution_predicts_and_writes_nothing(tmp_path):
    ws = make_workspace(tmp_path)
    (sw,) = resolve_all(config(), root=ws, allocate=False)
    assert all(p.predicted for p in sw.points)
    assert sw.ids == registry.predict_next(3, ws)
    assert not (ws / "results" / "registry").exists()


def test_ids_are_stable_and_remeasuring_is_explicit(tmp_path):
    ws = make_workspace(tmp_path)
    (first,) = resolve_all(config(), root=ws, allocate=True)
    (again,) = resolve_all(config(), root=ws, allocate=True)
    assert again.ids == first.ids and not any(p.predicted for p in again.points)
    (dry_remeasure,) = resolve_all(config(), root=ws, allocate=False, remeasure=True)
    assert dry_remeasure.ids == first.ids  # only an allocating invocation re-measures
    (remeasured,) = resolve_all(config(), root=ws, allocate=True, remeasure=True)
    assert set(remeasured.ids).isdisjoint(first.ids)
    (latest,) = resolve_all(config(), root=ws, allocate=True)
    assert latest.ids == remeasured.ids  # the newest measurement is the sweep's
    (v2,) = resolve_all(config(version=2), root=ws, allocate=True)
    assert set(v2.ids).isdisjoint(first.ids + remeasured.ids)
    assert registry.get(v2.ids[0], ws)["sweep"]["version"] == 2


def test_unimplemented_kinds_are_skipped_with_the_reason(tmp_path, monkeypatch):
    import aifb.services
    monkeypatch.setattr(aifb.services, "available_kinds", lambda: ["redis"])
    ws = make_workspace(tmp_path)
    said = []
    (sw,) = resolve_all(config(recipe="recipes/recipe_ollama_1client.yaml"), root=ws,
                        allocate=True, log=said.append)
    assert not sw.runnable and sw.skip_reason == "service kind 'ollama' is not implemented yet"
    assert "sweep s will not be built: service kind 'ollama' is not implemented yet" in said[0]
    assert not (ws / "results" / "registry").exists()


@pytest.mark.parametrize("argv, allocates", [
    (["snakemake", "sweep_all"], True),
    (["snakemake", "-n", "sweep_all"], False),
    (["snakemake", "--dry-run"], False),
    (["snakemake", "-np"], False),
    (["snakemake", "--lint"], False),
    (["snakemake", "--report", "r.zip"], False),
    (["snakemake", "-c1", "sweep_all"], True),
    (["snakemake", "--cores", "2", "--forcerun", "index"], True),
])
def test_which_invocations_may_allocate(argv, allocates):
    assert invocation_allocates(argv) is allocates


def test_without_sweeps_nothing_is_read_or_imported_beyond_the_entries_given(tmp_path, monkeypatch):
    """Every Snakemake parse resolves the sweeps: with none configured it must not read the
    registry again (the workflow passes the entries it read once) nor import every service
    module (~0.4 s: aiohttp among them)."""
    from aifb.workflow import sweep

    def refuse(*args, **kwargs):
        raise AssertionError("not needed without sweeps")

    monkeypatch.setattr(sweep.services, "available_kinds", refuse)
    monkeypatch.setattr(sweep.registry, "all_entries", refuse)
    assert resolve_all({"sweeps": {}}, root=make_workspace(tmp_path), allocate=False,
                       entries=[]) == []
