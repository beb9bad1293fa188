"""The local profile end to end, through `aifb run` and plain Snakemake, against a real Redis.

Every artefact the seed names is checked against its contract (the JSON Schemas in
workflow/schemas/ and DESIGN.md)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time

import jsonschema
import pytest
import yaml

from support import (REPO, VENV_BIN, aifb, benchmark_id_from, make_workspace, pid_alive, read_json,
                     redis_servers_under, snakemake, tree)

pytestmark = [pytest.mark.workflow, pytest.mark.redis]
SHORT = ["--set", "load.duration=2s", "--set", "load.warmup=0.5s"]


def schema(name):
    return yaml.safe_load((REPO / "workflow" / "schemas" / name).read_text())


@pytest.fixture(scope="module")
def completed_run(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("e2e"))
    proc = aifb(ws, "run", "recipes/recipe_redis_2client.yaml", *SHORT, "--set", "load.concurrency=2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return ws, benchmark_id_from(proc.stdout), proc


def test_run_prints_id_status_and_report(completed_run):
    ws, bid, proc = completed_run
    assert f"{bid}: completed" in proc.stdout
    assert f"report: reports/{bid}/report.md" in proc.stdout   # relative to the folder it ran in


def test_run_json_is_a_complete_bundle(completed_run):
    ws, bid, _ = completed_run
    run = read_json(ws / "results" / bid / "run.json")
    jsonschema.validate(run, schema("run.schema.yaml"))
    for field in ("benchmark_id", "created_at", "git_commit", "recipe_hash", "recipe", "target",
                  "service", "clients", "environment"):
        assert run.get(field) is not None, field
    assert run["status"] == "completed" and run["reason"] is None
    assert run["benchmark_id"] == bid and run["target"] == "local"
    assert run["recipe"]["load"]["duration"] == "2s"  # overrides embedded
    assert run["overrides"] == ["load.duration=2s", "load.warmup=0.5s", "load.concurrency=2"]
    svc = run["service"]
    assert svc["managed"] and svc["kind"] == "redis" and svc["host"] == "127.0.0.1"
    assert svc["pid"] and svc["port"] and svc["version"] and svc["binary"].endswith("redis-server")
    assert svc["ready_at"] and svc["stopped_at"]
    assert not pid_alive(svc["pid"])
    assert run["clients"]["count"] == 2 and run["clients"]["concurrency"] == 2
    assert run["environment"]["python"] and run["environment"]["packages"]["snakemake"] == "9.27.1"


def test_requests_follow_the_record_contract(completed_run):
    ws, bid, _ = completed_run
    lines = (ws / "results" / bid / "requests.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) > 100
    rs = schema("request.schema.yaml")
    for r in itertools.islice(records, 0, None, max(1, len(records) // 200)):
        jsonschema.validate(r, rs)
    assert {r["phase"] for r in records} >= {"warmup", "measure"}
    assert {r["client"] for r in records} == {0, 1}
    assert all(r["t_start"] <= r["t_end"] for r in records)
    assert {r["op"] for r in records} == {"get", "set"}


def test_summary_and_report(completed_run):
    ws, bid, _ = completed_run
    summary = read_json(ws / "results" / bid / "summary.json")
    jsonschema.validate(summary, schema("summary.schema.yaml"))
    records = [json.loads(line) for line in (ws / "results" / bid / "requests.jsonl").open()]
    measured_ok = [r for r in records if r["phase"] == "measure" and r["ok"]]
    # latencies: the ok requests that started in the window; throughput: those completed in it
    ls = read_json(ws / "results" / bid / "run.json")["load_stats"]
    sample = [r for r in records if r["ok"] and ls["warmup_end"] <= r["t_start"] < ls["measure_end"]]
    assert summary["latency_s"]["n"] == len(sample)
    assert summary["requests"]["total"] == sum(r["phase"] == "measure" for r in records)
    assert summary["throughput"]["rps"] == pytest.approx(len(measured_ok) / summary["window_s"], rel=1e-6)
    assert summary["slo"]["rules"] and summary["slo"]["passed"] in (True, False)
    rep = ws / "reports" / bid
    md = (rep / "report.md").read_text()
    assert bid in md and "Metric definitions" in md and "p99 < 100ms" in md
    report_json = read_json(rep / "report.json")
    assert report_json["benchmark_id"] == bid
    for png in ("latency_cdf", "latency_over_time", "throughput_over_time"):
        data = (rep / "plots" / f"{png}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_plain_snakemake_dry_run_changes_nothing(completed_run):
    ws, bid, _ = completed_run
    before = tree(ws)
    proc = snakemake(ws, "-n", f"reports/{bid}/report.md")
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to be done" in proc.stdout + proc.stderr
    # a forced dry run shows the whole DAG for the ID and still writes nothing
    proc = snakemake(ws, "-n", "--forceall", f"reports/{bid}/report.md")
    assert proc.returncode == 0 and "run_benchmark" in proc.stdout + proc.stderr
    assert tree(ws) == before


def test_unregistered_id_is_a_clear_error(completed_run):
    ws, _, _ = completed_run
    proc = snakemake(ws, "-n", "reports/BM-20000101-001/report.md")
    assert proc.returncode != 0
    assert "BM-20000101-001 is not registered" in proc.stdout + proc.stderr


def test_lint_is_clean():
    proc = subprocess.run([str(VENV_BIN / "snakemake"), "--lint"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "Congratulations" in proc.stdout + proc.stderr, proc.stdout


def test_unknown_kind_stops_before_anything(tmp_path):
    ws = make_workspace(tmp_path)
    proc = aifb(ws, "run", "recipes/recipe_redis_1client.yaml", "--set", "service.kind=mysql")
    assert proc.returncode == 2 and "service.kind: 'mysql' is not one of" in proc.stderr
    assert not (ws / "results" / "registry").exists()


def test_invalid_recipe_is_refused_without_traceback(tmp_path):
    ws = make_workspace(tmp_path)
    proc = aifb(ws, "run", "recipes/recipe_redis_1client.yaml", "--set", "load.concurrency=-1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "load.concurrency: -1 is less than the minimum of 1" in proc.stderr
    proc = aifb(ws, "validate", "recipes/recipe_redis_1client.yaml", "--set", "load.clients=0")
    assert proc.returncode == 1 and "load.clients: 0 is less than the minimum of 1" in proc.stderr


def test_failed_service_is_a_recorded_failure_and_leaves_nothing(tmp_path):
    ws = make_workspace(tmp_path)
    proc = aifb(ws, "run", "recipes/recipe_redis_1client.yaml", *SHORT,
                "--set", "service.args=[--no-such-option, x1]")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    bid = benchmark_id_from(proc.stdout)
    run = read_json(ws / "results" / bid / "run.json")
    assert run["status"] == "failed" and "exited with code" in run["reason"]
    assert "no-such-option" in run["service"]["log_tail"]  # the server's own words
    assert (ws / "reports" / bid / "report.md").is_file()  # the failure is reported too
    assert "failed" in (ws / "reports" / bid / "report.md").read_text().lower()
    assert redis_servers_under(ws) == []


def test_ctrl_c_stops_the_service_and_keeps_the_records(tmp_path):
    ws = make_workspace(tmp_path)
    env = dict(os.environ, AIFB_ROOT=str(ws))
    proc = subprocess.Popen([str(VENV_BIN / "aifb"), "run", "recipes/recipe_redis_1client.yaml",
                             "--set", "load.duration=60s", "--set", "load.warmup=0s"],
                            cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.time() + 60
    records = None
    while time.time() < deadline:
        found = list((ws / "results").glob("BM-*/requests.jsonl"))
        if found and found[0].stat().st_size > 10000:
            records = found[0]
            break
        time.sleep(0.2)
    assert records, "the benchmark never started recording"
    run_dir = records.parent
    pid = read_json(run_dir / "run.json")["service"]["pid"]
    assert pid_alive(pid)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert not pid_alive(pid) and redis_servers_under(ws) == []
    kept = sorted(run_dir.glob("attempts/*/run.json"))
    assert kept, list(run_dir.rglob("*"))
    run = read_json(kept[-1])
    assert run["status"] == "partial" and "SIGINT" in run["reason"]
    lines = (kept[-1].parent / "requests.jsonl").read_text().splitlines()
    assert len(lines) > 100 and all(json.loads(line) for line in lines)


def test_set_null_removes_a_field_and_the_run_records_it(tmp_path):
    """`--set load.duration=null --set load.requests=N` runs N requests from a duration recipe;
    run.json keeps the removal among its overrides and in its recipe."""
    ws = make_workspace(tmp_path)
    over = ["load.duration=null", "load.requests=400", "load.warmup=0s"]
    proc = aifb(ws, "run", "recipes/recipe_redis_1client.yaml",
                *itertools.chain.from_iterable(("--set", o) for o in over))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = read_json(ws / "results" / benchmark_id_from(proc.stdout) / "run.json")
    assert run["overrides"] == over
    assert "duration" not in run["recipe"]["load"] and run["recipe"]["load"]["requests"] == 400
    summary = read_json(ws / "results" / run["benchmark_id"] / "summary.json")
    assert summary["requests"]["total"] >= 400
    bad = aifb(ws, "run", "recipes/recipe_redis_1client.yaml", "--set", "load.duration=null")
    assert bad.returncode == 2 and "give exactly one of `duration` or `requests`" in bad.stderr
    assert "Traceback" not in bad.stderr
