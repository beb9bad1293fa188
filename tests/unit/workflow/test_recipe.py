"""Recipe loading, overrides and validation: every bad input names the field and the problem."""

from pathlib import Path

import pytest
import yaml

from aifb.errors import RecipeError
from aifb.workflow.recipe import (apply_overrides, load_recipe, load_settings, parse_override, recipe_hash,
                         validate)

ROOT = Path(__file__).resolve().parents[3]
SEED_RECIPES = sorted((ROOT / "recipes").glob("recipe_*.yaml"))

GOOD = {
    "name": "t", "category": "storage",
    "service": {"kind": "redis"},
    "workload": {"ops": {"get": 1.0}, "value_size": "1KiB", "keyspace": 100},
    "load": {"clients": 2, "concurrency": 4, "duration": "3s", "warmup": "500ms"},
    "slo": ["p99 < 100ms", "error_rate < 1%"],
}


def write(tmp_path, data, name="r.yaml"):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def test_the_nine_seed_recipes_exist_and_are_valid():
    names = {p.name for p in SEED_RECIPES}
    for kind, levels in (("redis", (1, 2, 4)), ("ollama", (1, 2, 4)), ("chroma", (1, 2, 8))):
        for n in levels:
            assert f"recipe_{kind}_{n}client.yaml" in names
    for p in SEED_RECIPES:
        r = load_recipe(p)
        n = int(p.stem.rsplit("_", 1)[1].removesuffix("client"))  # recipe_<name>_<n>client
        assert r["load"]["clients"] == n  # the seed's "Concurrency" column


def test_good_recipe_and_settings(tmp_path):
    r = load_recipe(write(tmp_path, GOOD))
    s = load_settings(r)
    assert s["clients"] == 2 and s["concurrency"] == 4
    assert s["duration_s"] == 3.0 and s["warmup_s"] == 0.5 and s["requests"] is None


@pytest.mark.parametrize("override, field, words", [
    ("load.concurrency=-1", "load.concurrency", "-1 is less than the minimum of 1"),
    ("load.clients=two", "load.clients", "'two' is not of type 'integer'"),
    ("service.kind=mysql", "service.kind", "'mysql' is not one of"),
    ("load.duration=soon", "load.duration", "not"),
    ("workload.value_size=-5", "workload.value_size", ""),
    ("slo=[p99 < 1 parsec]", "slo[0]", "not in the expected format"),
    ("load.bogus=1", "load", "unknown field"),
    ("category=compute", "category", "is not one of"),
])
def test_bad_values_name_the_field(tmp_path, override, field, words):
    with pytest.raises(RecipeError) as exc:
        load_recipe(write(tmp_path, GOOD), [override])
    msg = str(exc.value)
    assert f"{field}:" in msg and words in msg


def test_missing_fields(tmp_path):
    bad = {k: v for k, v in GOOD.items() if k != "service"}
    with pytest.raises(RecipeError, match=r"'service' is a required property"):
        load_recipe(write(tmp_path, bad))
    bad = dict(GOOD, load={"clients": 1})
    with pytest.raises(RecipeError, match=r"load: give exactly one of `duration` or `requests`"):
        load_recipe(write(tmp_path, bad))


def test_malformed_yaml_says_where(tmp_path):
    with pytest.raises(RecipeError, match=r"malformed YAML at line \d+, column \d+: expected"):
        load_recipe(write(tmp_path, "name: x\nservice: {kind: redis\n"))


def test_not_a_mapping_and_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="a recipe is a YAML mapping"):
        load_recipe(write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "nope.yaml")


def test_zero_weight_mix_is_rejected(tmp_path):
    with pytest.raises(RecipeError, match="workload.ops: the weights sum to zero"):
        load_recipe(write(tmp_path, GOOD), ["workload.ops={get: 0}"])


def test_overrides_parse_yaml_values_and_create_paths():
    assert parse_override("load.concurrency=32") == (["load", "concurrency"], 32)
    assert parse_override("load.duration=5s") == (["load", "duration"], "5s")
    r = apply_overrides(GOOD, ["service.endpoint=redis://127.0.0.1:1", "a.b.c=[1, 2]"])
    assert r["service"]["endpoint"] == "redis://127.0.0.1:1" and r["a"]["b"]["c"] == [1, 2]
    assert "endpoint" not in GOOD["service"]  # the input is not modified
    with pytest.raises(RecipeError, match="expected dotted.path=value"):
        parse_override("load.concurrency")
    with pytest.raises(RecipeError, match="is not a mapping"):
        apply_overrides(GOOD, ["name.x=1"])


def test_hash_is_canonical_and_covers_overrides():
    a = validate(dict(GOOD))
    b = validate(dict(reversed(list(GOOD.items()))))
    assert recipe_hash(a) == recipe_hash(b)
    assert recipe_hash(apply_overrides(a, ["load.concurrency=8"])) != recipe_hash(a)
    assert recipe_hash(a).startswith("sha256:") and len(recipe_hash(a)) == 7 + 64


def test_a_password_in_the_endpoint_is_refused(tmp_path):
    with pytest.raises(RecipeError, match="service.endpoint: .* holds a password") as exc:
        load_recipe(write(tmp_path, GOOD), ["service.endpoint=redis://:hunter2@10.0.0.5:6379"])
    assert "hunter2" not in str(exc.value)


def test_set_null_removes_a_field(tmp_path):
    """`--set PATH=null` removes a field: a recipe switches from a duration to a request count
    (or from table_rows to scale) without a copy of its file."""
    r = load_recipe(write(tmp_path, GOOD), ["load.duration=null", "load.requests=500"])
    assert "duration" not in r["load"] and r["load"]["requests"] == 500
    assert load_settings(r)["duration_s"] is None and load_settings(r)["requests"] == 500
    assert "duration" in GOOD["load"]  # the input is not modified
    assert "warmup" not in apply_overrides(GOOD, ["load.warmup=~"])["load"]  # any YAML null
    # the removal is part of the recipe, so of its hash
    assert recipe_hash(apply_overrides(GOOD, ["load.warmup=null"])) != recipe_hash(GOOD)


def test_removing_what_is_not_there_or_is_required_is_a_named_error(tmp_path):
    with pytest.raises(RecipeError, match=r"--set 'load.durration=null': the recipe has no "
                                          r"field load\.durration to remove"):
        apply_overrides(GOOD, ["load.durration=null"])
    with pytest.raises(RecipeError, match="no field load.clients.x to remove"):
        apply_overrides(GOOD, ["load.clients.x=null"])
    with pytest.raises(RecipeError, match=r"load"):  # neither duration nor requests is left
        load_recipe(write(tmp_path, GOOD), ["load.duration=null"])
