"""Bad input and damaged files (issue 14, items 9-19): each gets a named error, never a
traceback, a hang or a silently wrong plan; a refused command registers no ID.

Real redis-server and Snakemake where a command runs something; hostile YAML runs in a child
process under a memory and time limit, so a regression fails the test instead of the machine."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aifb.workflow import registry
from aifb.errors import AifbError, RecipeError, RegistryError
from aifb.workflow.recipe import MAX_RECIPE_BYTES, load_recipe, read_yaml, recipe_hash, validate
from aifb.workflow.sweep import resolve_all
from support import REPO, VENV_BIN, aifb, make_workspace, read_json, snakemake

BASE_PATH = REPO / "recipes" / "recipe_redis_1client.yaml"
BASE = yaml.safe_load(BASE_PATH.read_text())
SHORT = ["--set", "load.duration=1s", "--set", "load.warmup=0s"]


def registered(ws: Path) -> list[str]:
    return sorted(p.stem for p in (ws / "results" / "registry").glob("BM-*.json"))


def assert_named_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    for w in words:
        assert w in out, (w, out)


def bundle(ws: Path, recipe: dict | None = None) -> str:
    """A registered run with a run.json (the fields a rerun reads), as a finished run leaves."""
    recipe = validate(json.loads(json.dumps(recipe or BASE)))
    bid = registry.allocate(registry.make_entry(recipe, recipe_path=str(BASE_PATH)), ws)
    run = {"benchmark_id": bid, "status": "completed", "recipe": recipe,
           "recipe_hash": recipe_hash(recipe), "recipe_path": "recipes/recipe_redis_1client.yaml",
           "overrides": [], "sweep": None, "rerun_of": None}
    (ws / "results" / bid).mkdir(parents=True)
    (ws / "results" / bid / "run.json").write_text(json.dumps(run, indent=2))
    (ws / "results" / bid / "requests.jsonl").write_text("")
    return bid


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


SWEEP = {"redis_sweep": {"service": "Redis", "param": "load.clients", "slo": ["p99 < 100ms"],
                         "recipe": "recipes/recipe_redis_1client.yaml", "levels": [1, 2],
                         "set": ["load.duration=1s", "load.warmup=0s"]}}


# ------------------------------------------------------------ 9: a corrupt registry entry
def test_corrupt_registry_entry_stops_a_sweep_plan_naming_the_file_and_the_repair(tmp_path):
    ws = make_workspace(tmp_path, SWEEP)
    config = yaml.safe_load((ws / "config" / "config.yaml").read_text())
    first = resolve_all(config, root=ws, allocate=True)[0].ids
    entry = ws / "results" / "registry" / f"{first[0]}.json"
    truncate(entry)
    proc = aifb(ws, "sweep", "redis_sweep", "-n", timeout=120)
    assert_named_error(proc, str(entry), f"aifb repair {first[0]}")
    assert registered(ws) == sorted(first)  # nothing planned or registered in its place
    with pytest.raises(RegistryError, match="aifb repair"):
        registry.allocate(registry.make_entry(validate(BASE)), ws)


def test_repair_rebuilds_from_run_json_or_retires_the_id(tmp_path):
    ws = make_workspace(tmp_path)
    kept = bundle(ws)
    lost = registry.allocate(registry.make_entry(validate(BASE)), ws)
    for bid in (kept, lost):
        truncate(ws / "results" / "registry" / f"{bid}.json")
    out = aifb(ws, "repair", kept, check=True).stdout
    assert "rebuilt from" in out
    assert registry.get(kept, ws)["recipe_hash"] == recipe_hash(validate(BASE))
    out = aifb(ws, "repair", lost, check=True).stdout
    assert "retired" in out and (ws / "results" / "registry" / f"{lost}.json.corrupt").is_file()
    new = registry.allocate(registry.make_entry(validate(BASE)), ws)
    assert new > lost  # a retired number is never handed out again
    assert "nothing to repair" in aifb(ws, "repair", kept, check=True).stdout


# ------------------------------------------------------------ 10: --rerun with --dry-run/--set
def test_rerun_dry_run_changes_nothing_and_set_is_refused(tmp_path):
    ws = make_workspace(tmp_path)
    orig = bundle(ws)
    before = registered(ws)
    dry = aifb(ws, "run", "--rerun", orig, "--dry-run", timeout=120)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"as a rerun of {orig}" in dry.stdout
    assert registered(ws) == before
    with_set = aifb(ws, "run", "--rerun", orig, "--dry-run", "--set", "load.concurrency=7",
                    timeout=120)
    assert_named_error(with_set, "takes no --set", "aifb run RECIPE --set")
    assert registered(ws) == before and not (ws / "reports").exists()


# ------------------------------------------------------------ 12: only the targets allocate
def test_only_the_invocations_targets_allocate_ids(tmp_path):
    sweeps = {**SWEEP, "other_sweep": {**SWEEP["redis_sweep"], "levels": [3, 4]}}
    sweeps["redis_sweep"] = {**SWEEP["redis_sweep"], "levels": [1]}
    ws = make_workspace(tmp_path, sweeps)
    proc = aifb(ws, "index", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert registered(ws) == []  # the index registers nothing
    proc = aifb(ws, "sweep", "redis_sweep", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = registered(ws)
    assert len(ids) == 1, ids  # redis_sweep's one point; other_sweep got none
    assert read_json(ws / "results" / ids[0] / "run.json")["status"] == "completed"
    index = (ws / "reports" / "dataset_index.md").read_text()
    assert "registered, not run yet" not in index
    assert "other_sweep" in index and "Not run" in index


# ------------------------------------------------------------ 13: not UTF-8
def test_non_utf8_recipe_is_a_named_error(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes(BASE_PATH.read_bytes().replace(b"name: redis_1client", b"name: caf\xe9"))
    with pytest.raises(RecipeError, match=r"not UTF-8 text \(byte 0xe9 at line"):
        load_recipe(p)
    assert_named_error(aifb(tmp_path, "validate", str(p)), str(p), "not UTF-8")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_any_bytes_are_refused_cleanly_or_accepted(tmp_path, data):
    p = tmp_path / "r.yaml"
    p.write_bytes(data)
    try:
        load_recipe(p)
    except RecipeError as exc:
        assert str(exc).startswith(str(p))


# ------------------------------------------------------------ 14: alias bombs, size
BOMB = "".join(f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9 if i else
                                                          ['"lol"'] * 9) + "]\n" for i in range(9))


def _limited(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """A command under 1 GiB of address space and 60 s: a bomb that gets through fails the test
    (MemoryError traceback or timeout) instead of exhausting the machine."""
    return subprocess.run(["timeout", "-k", "5", "60", "bash", "-c", 'ulimit -v 1048576; exec "$@"',
                           "--", *argv], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, AIFB_ROOT=str(cwd)))


@pytest.mark.parametrize("where", ["top", "service.extra"])
def test_yaml_alias_bomb_is_refused_quickly(tmp_path, where):
    if where == "top":
        text = BOMB
    else:  # valid everywhere else, the bomb hidden where the schema allows anything
        text = BASE_PATH.read_text().replace("service:\n", "service:\n  extra:\n" + "".join(
            "    " + line + "\n" for line in BOMB.splitlines()), 1)
    p = tmp_path / "bomb.yaml"
    p.write_text(text)
    assert len(text) < 2000
    proc = _limited(str(VENV_BIN / "aifb"), "validate", str(p), cwd=tmp_path)
    assert_named_error(proc, str(p), "expands to more than")


def test_recursive_alias_and_oversized_recipes_are_refused(tmp_path):
    p = tmp_path / "rec.yaml"
    p.write_text("name: &n [*n]\n")
    with pytest.raises(RecipeError, match="recursive"):
        read_yaml(p)
    big = tmp_path / "big.yaml"
    big.write_text(BASE_PATH.read_text() + "#" * MAX_RECIPE_BYTES + "\n")
    with pytest.raises(RecipeError, match="larger than"):
        read_yaml(big)


# ------------------------------------------------------------ 15: numbers and durations
@pytest.mark.parametrize("override, words", [
    ("load.duration=.nan", "load.duration: nan is not a finite number"),
    ("load.duration=.inf", "load.duration: inf is not a finite number"),
    ("load.duration=99999999999999999999999999999h", "longer than the maximum of 7 days"),
    ("load.duration=0s", "load.duration: '0s' is zero"),
    ("load.timeout=0ms", "load.timeout: '0ms' is zero"),
    ("load.rate=.nan", "load.rate: nan is not a finite number"),
    ("load.cooldown=.inf", "load.cooldown: inf is not a finite number"),
])
def test_non_finite_huge_and_zero_durations_are_refused(override, words):
    with pytest.raises(RecipeError) as exc:
        load_recipe(BASE_PATH, [override])
    assert words in str(exc.value)


NUMERIC = ["load.duration", "load.rate", "load.warmup", "load.cooldown", "load.timeout",
           "workload.ops.get", "service.extra.x", "seed"]


@settings(max_examples=100, deadline=None)
@given(path=st.sampled_from(NUMERIC), value=st.sampled_from([float("nan"), float("inf"), -float("inf")]))
def test_a_non_finite_number_anywhere_is_refused(path, value):
    with pytest.raises(RecipeError):
        load_recipe(BASE_PATH, [f"{path}={json.dumps(value).replace('NaN', '.nan').replace('Infinity', '.inf')}"])


def test_nan_duration_registers_no_id(tmp_path):
    ws = make_workspace(tmp_path)
    proc = aifb(ws, "run", "recipes/recipe_redis_1client.yaml", "--set", "load.duration=.nan",
                timeout=120)
    assert_named_error(proc, "not a finite number")
    assert registered(ws) == []


# ------------------------------------------------------------ 16: truncated entry / run.json
def test_truncated_registry_entry_and_run_json_give_named_errors(tmp_path):
    ws = make_workspace(tmp_path)
    bid = bundle(ws)
    run_json = ws / "results" / bid / "run.json"
    truncate(run_json)
    before = registered(ws)
    assert_named_error(aifb(ws, "show", bid), str(run_json), "not valid JSON")
    assert_named_error(aifb(ws, "summarize", str(run_json.parent)), str(run_json), "not valid JSON")
    assert_named_error(aifb(ws, "report", str(run_json.parent), str(ws / "reports" / bid)),
                       str(run_json), "not valid JSON")
    assert_named_error(aifb(ws, "rerun", bid), str(run_json), "not valid JSON")
    assert registered(ws) == before  # a refused rerun registers nothing
    other = bundle(ws)
    entry = ws / "results" / "registry" / f"{bid}.json"
    truncate(entry)
    assert_named_error(aifb(ws, "show", bid), str(entry), f"aifb repair {bid}")
    assert_named_error(aifb(ws, "rerun", other), str(entry), f"aifb repair {bid}")
    assert registered(ws) == sorted([*before, other])


def test_a_deeply_nested_run_json_is_a_named_error(tmp_path):
    ws = make_workspace(tmp_path)
    bid = bundle(ws)
    run_json = ws / "results" / bid / "run.json"
    run_json.write_text("[" * 100_000 + "]" * 100_000)
    assert_named_error(aifb(ws, "rerun", bid), str(run_json), "nested too deeply")
    assert registered(ws) == [bid]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_registry_entry_cut_anywhere_is_refused_by_name(tmp_path, data):
    ws = Path(tempfile.mkdtemp(dir=tmp_path))
    bid = registry.allocate(registry.make_entry(validate(BASE)), ws)
    entry = registry.entry_path(bid, ws)
    raw = entry.read_bytes()
    entry.write_bytes(raw[:data.draw(st.integers(0, len(raw) - 2))])  # the closing } is lost
    with pytest.raises(RegistryError) as exc:
        registry.get(bid, ws)
    assert str(entry) in str(exc.value) and "aifb repair" in str(exc.value)


# ------------------------------------------------------------ 17: IDs are checked first
@pytest.mark.parametrize("argv", [["rerun", "../../evil"], ["run", "--rerun", "../../evil"],
                                  ["show", "../../evil"], ["repair", "../evil"]])
def test_an_id_that_is_a_path_is_refused_before_any_file_is_read(tmp_path, argv):
    ws = make_workspace(tmp_path)
    evil = (ws / "results" / "../../evil").resolve()  # what the path would reach
    evil.mkdir(parents=True)
    recipe = validate(json.loads(json.dumps(BASE)))
    (evil / "run.json").write_text(json.dumps({"recipe": recipe, "recipe_hash": recipe_hash(recipe)}))
    assert_named_error(aifb(ws, *argv, timeout=120), "is not a benchmark ID")
    assert registered(ws) == []


# ------------------------------------------------------------ 18: a failing step's log
def test_a_failing_workflow_step_logs_its_traceback_and_says_why(tmp_path):
    ws = make_workspace(tmp_path)
    bid = bundle(ws)
    (ws / "results" / bid / "run.json").write_text('{"benchmark_id": "')
    proc = snakemake(ws, f"results/{bid}/summary.json", "--allowed-rules", "summarize")
    assert proc.returncode != 0
    log = (ws / "results" / bid / "logs" / "summarize.log").read_text()
    assert "Traceback" in log and "CorruptFileError" in log, log
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("aifb: summarize")]
    assert len(lines) == 1 and "run.json: not valid JSON" in lines[0], proc.stderr
    assert str(ws / "results" / bid / "logs" / "summarize.log") in lines[0] or \
        f"results/{bid}/logs/summarize.log" in lines[0]


# ------------------------------------------------------------ 19: directories, duplicate keys
def test_a_directory_is_named_as_one(tmp_path):
    assert_named_error(aifb(tmp_path, "run", str(tmp_path)), "is a directory")
    with pytest.raises(RecipeError, match="is a directory"):
        load_recipe(tmp_path)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_duplicate_key_is_refused_naming_key_and_line(tmp_path, data):
    lines = BASE_PATH.read_text().splitlines()
    tops = [i for i, ln in enumerate(lines) if ln and ln[0].isalpha()]
    src = data.draw(st.sampled_from(tops))
    key = lines[src].split(":")[0]
    at = data.draw(st.sampled_from([i for i in tops if i > src] + [len(lines)]))
    lines.insert(at, f"{key}: duplicate")
    p = tmp_path / "dup.yaml"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecipeError) as exc:
        read_yaml(p)
    assert f"duplicate key {key!r} (first at line {src + 1})" in str(exc.value)
    assert f"line {at + 1}," in str(exc.value)


def test_merge_keys_are_not_duplicates(tmp_path):
    p = tmp_path / "merge.yaml"
    p.write_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n")
    assert read_yaml(p)["other"] == {"x": 3, "y": 2}
