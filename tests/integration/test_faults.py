"""Faults and bad input: nothing lost, nothing orphaned, no secret leaked.

Real redis-server processes throughout; the faults are injected by killing processes, filling
a small tmpfs, and generating malformed recipes with hypothesis."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aifb.errors import RecipeError
from aifb.workflow.recipe import load_recipe, validate
from support import (VENV_BIN, aifb, benchmark_id_from, make_workspace, pid_alive, read_json,
                     redis_servers_under)

BASE = yaml.safe_load((Path(__file__).parents[2] / "recipes" / "recipe_redis_1client.yaml").read_text())

# ---------------------------------------------------------------- malformed recipes (hypothesis)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)
PATHS = ["name", "category", "service", "service.kind", "service.port", "service.endpoint",
         "service.args", "workload", "workload.ops", "workload.ops.get", "workload.value_size",
         "workload.keyspace", "load", "load.clients", "load.concurrency", "load.duration",
         "load.requests", "load.warmup", "load.rate", "slo", "seed", "bogus"]


def _mutate(recipe: dict, path: str, value, delete: bool) -> dict:
    out = json.loads(json.dumps(recipe))
    node = out
    parts = path.split(".")
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    if delete:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=st.lists(st.tuples(st.sampled_from(PATHS), values, st.booleans()),
                          min_size=1, max_size=4))
def test_malformed_recipes_always_get_a_named_field_error(mutations):
    recipe = BASE
    for path, value, delete in mutations:
        recipe = _mutate(recipe, path, value, delete)
    try:
        validate(recipe)
    except RecipeError as exc:
        lines = str(exc).splitlines()[1:]
        assert lines, str(exc)
        for line in lines:  # every problem names where it is: "field.path: what is wrong"
            assert ": " in line and line.strip().split(":")[0], line


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200))
def test_any_yaml_text_is_refused_cleanly_or_accepted(tmp_path_factory, text):
    p = tmp_path_factory.mktemp("y") / "r.yaml"
    p.write_text(text)
    try:
        load_recipe(p)
    except RecipeError as exc:
        assert str(exc).startswith(str(p))


# ---------------------------------------------------------------- concurrent invocations
def test_four_runs_at_once_get_unique_ids_and_an_intact_registry(tmp_path):
    ws = make_workspace(tmp_path)
    args = ["run", "recipes/recipe_redis_1client.yaml", "--set", "load.duration=1s",
            "--set", "load.warmup=0s"]
    with ThreadPoolExecutor(4) as pool:
        procs = list(pool.map(lambda _: aifb(ws, *args, timeout=600), range(4)))
    ids = [benchmark_id_from(p.stdout) for p in procs]
    assert len(set(ids)) == 4, ids
    for p, bid in zip(procs, ids):
        assert p.returncode == 0, p.stdout + p.stderr
        assert read_json(ws / "results" / bid / "run.json")["status"] == "completed"
    entries = sorted((ws / "results" / "registry").glob("BM-*.json"))
    assert [e.stem for e in entries] == sorted(ids)
    for e in entries:
        json.loads(e.read_text())  # none half-written
    proc = aifb(ws, "index")
    assert proc.returncode == 0, proc.stderr
    index = read_json(ws / "reports" / "index.json")
    assert sorted(r["benchmark_id"] for r in index["runs"]) == sorted(ids)


# ---------------------------------------------------------------- the service dies mid-run
def test_service_dying_mid_run_gives_a_partial_run_with_records(tmp_path):
    ws = make_workspace(tmp_path)
    env = dict(os.environ, AIFB_ROOT=str(ws))
    proc = subprocess.Popen([str(VENV_BIN / "aifb"), "run", "recipes/recipe_redis_1client.yaml",
                             "--set", "load.duration=8s", "--set", "load.warmup=0s"],
                            cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid, deadline = None, time.time() + 60
    while time.time() < deadline and pid is None:
        for rj in (ws / "results").glob("BM-*/run.json"):
            run = json.loads(rj.read_text())
            recs = rj.parent / "requests.jsonl"
            if run["service"].get("pid") and recs.exists() and recs.stat().st_size > 20000:
                pid = run["service"]["pid"]
        time.sleep(0.1)
    assert pid, "the benchmark never got going"
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    bid = benchmark_id_from(out)
    run = read_json(ws / "results" / bid / "run.json")
    assert run["status"] == "partial", run["reason"]
    assert "died" in run["reason"] or "unreachable" in run["reason"]
    lines = (ws / "results" / bid / "requests.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert sum(r["ok"] for r in records) > 1000 and any(not r["ok"] for r in records)
    md = (ws / "reports" / bid / "report.md").read_text()
    assert "partial" in md.lower() and run["reason"][:40] in md
    assert redis_servers_under(ws) == []


# ---------------------------------------------------------------- secrets
@pytest.mark.parametrize("how", ["password_env", "password_file"])
def test_a_password_reaches_no_artefact(tmp_path, how):
    """A Redis that requires a password; the recipe names where the password is, the run
    uses it, and then every file the run wrote (and its output) is scanned for it."""
    secret = "s3cr3t-Hunter2-" + os.urandom(4).hex()
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--requirepass", secret,
                               "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ws = make_workspace(tmp_path)
        pwfile = tmp_path / "pw"
        pwfile.write_text(secret + "\n")
        where = ("service.password_env=AIFB_TEST_REDIS_PW" if how == "password_env"
                 else f"service.password_file={pwfile}")
        time.sleep(0.3)
        env = dict(os.environ, AIFB_ROOT=str(ws), AIFB_TEST_REDIS_PW=secret,
                   AIFB_SECRET_FILES=str(pwfile))  # the user allows that file
        proc = subprocess.run(
            [str(VENV_BIN / "aifb"), "run", "recipes/recipe_redis_1client.yaml",
             "--set", "load.duration=1s", "--set", "load.warmup=0s",
             "--set", f"service.endpoint=redis://127.0.0.1:{port}", "--set", where],
            cwd=ws, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        bid = benchmark_id_from(proc.stdout)
        assert read_json(ws / "results" / bid / "run.json")["status"] == "completed"
        files = [p for p in ws.rglob("*") if p.is_file()]
        assert len(files) > 10
        leaked = [str(p) for p in files if secret.encode() in p.read_bytes()]
        assert leaked == []
        assert secret not in proc.stdout + proc.stderr
        # and without it the run fails clearly, before measuring
        env.pop("AIFB_TEST_REDIS_PW")
        proc = subprocess.run(
            [str(VENV_BIN / "aifb"), "run", "recipes/recipe_redis_1client.yaml",
             "--set", f"service.endpoint=redis://127.0.0.1:{port}"],
            cwd=ws, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1
        run = read_json(ws / "results" / benchmark_id_from(proc.stdout) / "run.json")
        assert run["status"] == "failed"
        assert "credentials" in run["reason"] or "NOAUTH" in run["reason"], run["reason"]
    finally:
        server.kill()
        server.wait()


# ---------------------------------------------------------------- disk full
def test_disk_full_while_writing_records_keeps_a_valid_prefix(tmp_path):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a small tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount tmpfs here")
    try:
        from aifb.records import RecordWriter, read_records

        path = mnt / "requests.jsonl"
        w = RecordWriter(path, t0_ns=0)
        row = (0, 0, 0, None, 1_000, ("get", True, None, None, 10, 128, None, 2_000))
        with pytest.raises(OSError) as exc:
            for i in range(200_000):
                w.write_rows([row] * 100, ["measure"] * 100)
        assert "No space left" in str(exc.value)
        records = read_records(path)
        assert len(records) > 1000
        assert all(r["phase"] == "measure" for r in records)
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


# ---------------------------------------------------------------- the client is SIGKILLed
def _benchmark_process(ws: Path) -> int | None:
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                # the Python of the step (python -m aifb.workflow.steps run_benchmark ...), not
                # the shell around it, whose one -c argument names them too
                argv = (p / "cmdline").read_bytes().split(b"\0")
                if (b"aifb.workflow.steps" in argv and b"run_benchmark" in argv
                        and str(ws).encode() in os.readlink(p / "cwd").encode()):
                    return int(p.name)
            except OSError:
                continue
    return None


def test_sigkilled_client_leaves_a_valid_prefix_and_a_partial_attempt(tmp_path):
    from support import snakemake

    ws = make_workspace(tmp_path)
    env = dict(os.environ, AIFB_ROOT=str(ws))
    proc = subprocess.Popen([str(VENV_BIN / "aifb"), "run", "recipes/recipe_redis_1client.yaml",
                             "--set", "load.duration=4s", "--set", "load.warmup=0s"],
                            cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, victim = time.time() + 60, None
    while time.time() < deadline and victim is None:
        recs = list((ws / "results").glob("BM-*/requests.jsonl"))
        if recs and recs[0].stat().st_size > 20000:
            victim = _benchmark_process(ws)
        time.sleep(0.05)
    assert victim, "the benchmark never got going"
    run_dir = recs[0].parent
    service_pid = read_json(run_dir / "run.json")["service"]["pid"]
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    time.sleep(0.5)
    assert not pid_alive(service_pid) and redis_servers_under(ws) == []  # PR_SET_PDEATHSIG
    # Snakemake removed the failed job's outputs; the in-flight links kept them.
    kept = (run_dir / ".requests.jsonl.inflight").read_text().splitlines()
    assert len(kept) > 100 and all(json.loads(line) for line in kept[:-1])
    # The next build of the same ID keeps that attempt, marked partial, and measures again.
    again = snakemake(ws, f"reports/{run_dir.name}/report.md")
    assert again.returncode == 0, again.stderr[-2000:]
    old = read_json(run_dir / "attempts" / "1" / "run.json")
    assert old["status"] == "partial" and "killed" in old["reason"]
    old_lines = (run_dir / "attempts" / "1" / "requests.jsonl").read_text().splitlines()
    assert len(old_lines) >= len(kept) - 1
    assert read_json(run_dir / "run.json")["status"] == "completed"


# ---------------------------------------------------------------- Snakemake gets SIGTERM
def test_sigterm_stops_the_service_and_a_later_run_picks_up(tmp_path):
    """SIGTERM to the whole invocation (what a batch system or `timeout` sends): the service is
    stopped, the attempt is kept as partial, and building the same ID again completes."""
    from support import snakemake

    ws = make_workspace(tmp_path)
    env = dict(os.environ, AIFB_ROOT=str(ws))
    proc = subprocess.Popen([str(VENV_BIN / "aifb"), "run", "recipes/recipe_redis_1client.yaml",
                             "--set", "load.duration=3s", "--set", "load.warmup=0s"],
                            cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline, recs = time.time() + 60, []
    while time.time() < deadline:
        recs = [p for p in (ws / "results").glob("BM-*/requests.jsonl") if p.stat().st_size > 20000]
        if recs:
            break
        time.sleep(0.05)
    assert recs, "the benchmark never got going"
    run_dir = recs[0].parent
    service_pid = read_json(run_dir / "run.json")["service"]["pid"]
    os.killpg(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert not pid_alive(service_pid) and redis_servers_under(ws) == []
    kept = sorted(run_dir.glob("attempts/*/run.json"))
    assert kept and read_json(kept[-1])["status"] == "partial"
    assert "SIGTERM" in read_json(kept[-1])["reason"]
    again = snakemake(ws, f"reports/{run_dir.name}/report.md")
    assert again.returncode == 0, again.stderr[-2000:]
    assert read_json(run_dir / "run.json")["status"] == "completed"
    assert redis_servers_under(ws) == []
