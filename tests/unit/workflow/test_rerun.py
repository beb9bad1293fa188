"""Reruns from a bundle: the recipe hash and git commit are checked, a new ID points back."""

from __future__ import annotations

import json

import pytest

from aifb import provenance

from aifb.workflow import registry
from aifb.errors import AifbError
from aifb.workflow.recipe import recipe_hash, validate
from aifb.workflow.rerun import prepare_rerun

RECIPE = validate({"name": "r", "category": "storage", "service": {"kind": "redis"},
                   "load": {"clients": 1, "duration": "1s"}})


def bundle(root, **over):
    bid = registry.allocate(registry.make_entry(RECIPE), root)
    run = {"benchmark_id": bid, "recipe": RECIPE, "recipe_hash": recipe_hash(RECIPE),
           "git_commit": provenance.git_state()["git_commit"], "git_dirty": False,
           "recipe_path": "recipes/x.yaml", **over}
    (root / "results" / bid).mkdir(parents=True)
    (root / "results" / bid / "run.json").write_text(json.dumps(run))
    return bid


def test_clean_bundle_reruns_without_warnings(tmp_path):
    orig = bundle(tmp_path)
    said = []
    new, entry = prepare_rerun(orig, strict=True, root=tmp_path, log=said.append)
    assert said == [] and new != orig
    assert registry.get(new, tmp_path)["rerun_of"] == orig
    assert entry["recipe_hash"] == recipe_hash(RECIPE)


def test_commit_mismatch_warns_or_refuses(tmp_path):
    orig = bundle(tmp_path, git_commit="0" * 40)
    said = []
    new, entry = prepare_rerun(orig, strict=False, root=tmp_path, log=said.append)
    assert any("ran at git commit 000000000000" in s for s in said)
    assert entry["rerun_warnings"]
    with pytest.raises(AifbError, match=r"refused \(--strict\).*git commit"):
        prepare_rerun(orig, strict=True, root=tmp_path, log=said.append)


def test_edited_bundle_is_detected(tmp_path):
    orig = bundle(tmp_path, recipe_hash="sha256:" + "1" * 64)
    with pytest.raises(AifbError, match="the bundle was edited"):
        prepare_rerun(orig, strict=True, root=tmp_path, log=lambda m: None)


def test_missing_bundle(tmp_path):
    with pytest.raises(AifbError, match="does not exist"):
        prepare_rerun("BM-20260109-001", strict=False, root=tmp_path, log=lambda m: None)
