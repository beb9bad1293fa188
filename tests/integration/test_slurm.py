"""The Slurm path end to end, against a real Slurm (scripts/slurm/start.sh: slurmctld + slurmd +
munge on this machine) through profiles/slurm: the service as its own Slurm job, the benchmark
job as client job 0, extra client jobs on one time base, sweeps, faults, and `aifb cleanup`.

Skipped with the reason when no Slurm answers here; under CI=true a missing Slurm fails.
Every Snakemake/aifb subprocess runs under `timeout -k` (SIGTERM alone makes Snakemake wait)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import jsonschema
import pytest
import yaml

from support import require
from support import REPO, VENV_BIN, benchmark_id_from, make_workspace, pid_alive, read_json

pytestmark = [pytest.mark.workflow, pytest.mark.redis, pytest.mark.slow]

SHORT = ["--set", "load.duration=3s", "--set", "load.warmup=0.5s", "--set", "target=slurm-local"]
ACTIVE = "PENDING,RUNNING,CONFIGURING,COMPLETING,SUSPENDED"


def slurm_up() -> str | None:
    """None when a Slurm controller answers and a node is usable, else why not."""
    for cmd in ("sinfo", "sbatch", "squeue", "scancel"):
        if shutil.which(cmd) is None:
            return f"{cmd} not on PATH (start a test Slurm with scripts/slurm/start.sh)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s (is slurmctld running? scripts/slurm/start.sh)"
    if out.returncode != 0:
        return f"sinfo failed: {out.stderr.strip()} (scripts/slurm/start.sh starts one)"
    if not {"idle", "mix", "alloc"} & set(out.stdout.split()):
        return f"no Slurm node is up (sinfo: {out.stdout.split()}); scripts/slurm/start.sh"
    if shutil.which("redis-server") is None:
        return "redis-server not installed (apt-get install redis-server)"
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm():
    why = slurm_up()
    if why:
        require(f"no Slurm: {why}")


def run(ws: Path, argv: list[str], timeout: int = 240, **env) -> subprocess.CompletedProcess:
    """A command under `timeout -k` with AIFB_ROOT=ws."""
    e = dict(os.environ, AIFB_ROOT=str(ws), **env)
    return subprocess.run(["timeout", "-k", "15", str(timeout), *argv], cwd=ws, env=e,
                          capture_output=True, text=True, timeout=timeout + 60)


def aifb(ws: Path, *args: str, timeout: int = 240, **env) -> subprocess.CompletedProcess:
    return run(ws, [str(VENV_BIN / "aifb"), *args], timeout, **env)


def snakemake_slurm(ws: Path, *args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    return run(ws, [str(VENV_BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"),
                    "--directory", str(ws), "--profile", str(REPO / "profiles" / "slurm"), *args],
               timeout)


def queue_of(ws: Path) -> list[str]:
    """Jobs still pending/running whose working directory is in the workspace."""
    out = subprocess.run(["squeue", "-h", "-t", ACTIVE, "-o", "%i|%j|%T|%Z|%k"],
                         capture_output=True, text=True, timeout=30)
    return [line for line in out.stdout.splitlines() if str(ws) in line]


def assert_queue_empty(ws: Path) -> None:
    deadline = time.time() + 20  # COMPLETING clears within a few seconds
    while queue_of(ws) and time.time() < deadline:
        time.sleep(0.5)
    assert queue_of(ws) == [], queue_of(ws)


def schema(name):
    return yaml.safe_load((REPO / "workflow" / "schemas" / name).read_text())


def job_state(job_id: str) -> str | None:
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip() or None


# --------------------------------------------------------------------------- one benchmark

@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("slurm"))
    t0 = time.monotonic()
    proc = aifb(ws, "run", "recipes/recipe_redis_1client.yaml", "--profile", "slurm", *SHORT)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-5000:]
    return ws, benchmark_id_from(proc.stdout), proc, time.monotonic() - t0


def test_slurm_run_completes_with_all_artefacts(slurm_run):
    ws, bid, proc, _ = slurm_run
    assert f"{bid}: completed" in proc.stdout
    run_json = read_json(ws / "results" / bid / "run.json")
    jsonschema.validate(run_json, schema("run.schema.yaml"))
    assert run_json["status"] == "completed" and run_json["target"] == "slurm-local"
    assert run_json["target_config"]["executor"] == "slurm"
    records = (ws / "results" / bid / "requests.jsonl").read_text().splitlines()
    assert len(records) > 1000 and json.loads(records[-1])["phase"]
    summary = read_json(ws / "results" / bid / "summary.json")
    jsonschema.validate(summary, schema("summary.schema.yaml"))
    assert summary["requests"]["ok"] > 1000
    for f in ("report.md", "report.json", "plots/latency_cdf.png"):
        assert (ws / "reports" / bid / f).is_file(), f


def test_service_and_client_are_distinct_slurm_jobs(slurm_run):
    ws, bid, _, _ = slurm_run
    run_json = read_json(ws / "results" / bid / "run.json")
    svc, clients = run_json["service"], run_json["clients"]
    assert svc["job_id"] and svc["node"] == socket.gethostname().split(".")[0]
    assert clients["job_ids"] and clients["job_ids"][0] != svc["job_id"]
    assert clients["nodes"] and clients["hosts"]
    assert run_json["environment"]["slurm_job_id"] == clients["job_ids"][0]
    sbatch = svc["extra"]["sbatch"]
    assert f"--job-name=aifb-svc-{bid}" in sbatch and "--partition=cpu" in sbatch
    assert any(o.startswith("--time=") for o in sbatch)
    assert any(o.startswith(f"--comment=aifb:{bid} owner=job:{clients['job_ids'][0]}") for o in sbatch)
    assert svc["extra"]["job_state"] == "CANCELLED" and svc["extra"]["cancelled_by_teardown"]
    assert svc["version"] and svc["port"] and svc["ready_at"] and svc["stopped_at"]
    done = read_json(ws / "results" / bid / "service.json")
    assert done["status"] == "stopped" and done["job_id"] == svc["job_id"]
    assert (ws / "results" / bid / "logs" / f"service-job-{svc['job_id']}.out").is_file()


def test_telemetry_sampler_runs_in_the_service_job_on_the_runs_time_base(slurm_run):
    """The sampler runs inside the Slurm service job, beside the service on its node (its
    process tree is sampled), its file lands in results/<id>/, and its clock offset to the
    run's time base is measured before and after the load as for client jobs."""
    ws, bid, _, _ = slurm_run
    run_dir = ws / "results" / bid
    run_json = read_json(run_dir / "run.json")
    tele, svc = run_json["telemetry"], run_json["service"]
    assert tele["exit_code"] == 0 and tele["sampler_cpu_s"] > 0 and not pid_alive(tele["pid"])
    assert tele["placement"].startswith(f"in the Slurm service job {svc['job_id']}, on ")
    (proc,) = [s for s in tele["sources"] if s["type"] == "process"]
    assert proc["pid"] == svc["pid"]   # the service's own process tree, on its node
    clk = tele["clock"]
    assert clk["same_host"]            # one node: one CLOCK_MONOTONIC, the offset must be ~0
    for when in ("start", "end"):
        assert 0 < clk[when]["uncertainty_s"] < 0.01
        assert abs(clk[when]["offset_ns"]) <= clk[when]["uncertainty_ns"] + 1000, clk
    recs = [json.loads(line) for line in (run_dir / "telemetry.jsonl").open()]
    ls = run_json["load_stats"]
    ts = [r["t"] for r in recs if r["source"] == "process"]
    assert min(ts) < ls["warmup_end"] and max(ts) > ls["measure_end"]
    srv = read_json(run_dir / "summary.json")["server"]
    assert srv["requests_ratio"]["within_tolerance"], srv["requests_ratio"]
    assert srv["sources"]["process"]["gaps"] == 0 and srv["efficiency"]["service_cpu_s"] > 0
    assert not (run_dir / "service-telemetry-token").exists()


def test_queue_is_empty_afterwards(slurm_run):
    ws, _, _, took = slurm_run
    assert_queue_empty(ws)
    print(f"aifb run --profile slurm took {took:.1f} s")


# --------------------------------------------------------------------------- sweep

def test_two_level_sweep_through_the_slurm_profile(tmp_path):
    sweeps = {"redis_slurm": {
        "service": "Redis", "purpose": "two levels on Slurm", "param": "load.clients",
        "recipe": "recipes/recipe_redis_1client.yaml", "levels": [1, 2],
        "set": ["load.duration=2s", "load.warmup=0.3s", "target=slurm-local"],
        "slo": ["p99 < 100ms"]}}
    ws = make_workspace(tmp_path, sweeps)
    proc = snakemake_slurm(ws, "sweep_all")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    runs = sorted((ws / "results").glob("BM-*/run.json"))
    assert len(runs) == 2
    svc_jobs, client_jobs = set(), set()
    for path, clients in zip(runs, (1, 2)):
        r = read_json(path)
        assert r["status"] == "completed", r["reason"]
        assert r["recipe"]["load"]["clients"] == clients and r["sweep"]["name"] == "redis_slurm"
        svc_jobs.add(r["service"]["job_id"])
        client_jobs.add(r["clients"]["job_ids"][0])
    assert len(svc_jobs) == 2 and len(client_jobs) == 2 and not svc_jobs & client_jobs
    sweep_dirs = list((ws / "reports").glob("sweep_BM-*_BM-*"))
    assert len(sweep_dirs) == 1 and (sweep_dirs[0] / "report.md").is_file()
    assert [lv["level"] for lv in read_json(sweep_dirs[0] / "report.json")["levels"]] == [1, 2]
    assert_queue_empty(ws)


# --------------------------------------------------------------------------- faults

def _start_long_slurm_run(ws: Path) -> subprocess.Popen:
    return subprocess.Popen(
        ["timeout", "-k", "15", "400", str(VENV_BIN / "aifb"), "run", "recipes/recipe_redis_1client.yaml",
         "--profile", "slurm", "--set", "load.duration=240s", "--set", "load.warmup=0s",
         "--set", "target=slurm-local"],
        cwd=ws, env=dict(os.environ, AIFB_ROOT=str(ws)), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def _running_run_json(ws: Path, proc: subprocess.Popen) -> dict:
    """run.json of the benchmark once its service is ready and records are flowing."""
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        recs = list((ws / "results").glob("BM-*/requests.jsonl"))
        docs = list((ws / "results").glob("BM-*/service.json"))
        if recs and docs and recs[0].stat().st_size > 20000 and \
                read_json(docs[0]).get("status") == "ready":
            doc = read_json(recs[0].parent / "run.json")
            if doc["service"].get("job_id") and doc["clients"].get("job_ids"):
                return doc
        time.sleep(0.3)
    raise AssertionError("the benchmark never got going")


def _shorten_time_limit(job_id: str) -> None:
    """Make a running job hit its time limit now-ish: Slurm limits are whole minutes, so the
    limit becomes 1 minute and slurmctld ends the job within its ~30 s check interval after."""
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "TimeLimit=1"], check=True,
                   timeout=30, capture_output=True)


def _assert_benchmark_job_stopped_cleanly(ws: Path, proc, out: str, svc_job: str) -> dict:
    """The benchmark job was stopped by SIGTERM: it cancelled its service job itself and kept
    its records as a partial attempt; nothing is left in the queue."""
    assert proc.returncode != 0
    bid = benchmark_id_from(out)
    assert_queue_empty(ws)
    assert job_state(svc_job) in ("CANCELLED", None)
    kept = sorted((ws / "results" / bid).glob("attempts/*/run.json"))
    assert kept, list((ws / "results" / bid).rglob("*"))
    attempt = read_json(kept[-1])
    assert attempt["status"] == "partial" and "SIGTERM" in attempt["reason"], attempt["reason"]
    assert attempt["service"]["extra"]["cancelled_by_teardown"]
    lines = (kept[-1].parent / "requests.jsonl").read_text().splitlines()
    assert len(lines) > 1000 and all(json.loads(line) for line in lines)
    return attempt


def test_service_job_cancelled_mid_run_is_a_partial_run(tmp_path):
    ws = make_workspace(tmp_path)
    proc = _start_long_slurm_run(ws)
    try:
        svc_job = _running_run_json(ws, proc)["service"]["job_id"]
        subprocess.run(["scancel", svc_job], check=True, timeout=30)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    bid = benchmark_id_from(out)
    run_json = read_json(ws / "results" / bid / "run.json")
    assert run_json["status"] == "partial", run_json["reason"]
    assert f"service job {svc_job} ended during the run" in run_json["reason"]
    assert "CANCELLED" in run_json["reason"]
    assert run_json["load_stats"]["stopped_by"] == "service_unreachable"
    lines = (ws / "results" / bid / "requests.jsonl").read_text().splitlines()
    assert len(lines) > 1000 and all(json.loads(line) for line in lines[-100:])
    assert (ws / "reports" / bid / "report.md").is_file()  # a partial run is still reported
    assert f"{bid}: partial" in out
    assert_queue_empty(ws)


def test_cancelled_benchmark_job_cancels_its_service_and_keeps_records(tmp_path):
    """What Snakemake does on Ctrl-C (and what a user's scancel does): the benchmark job gets
    SIGTERM; the runner cancels the service job; the records survive the outputs' removal."""
    ws = make_workspace(tmp_path)
    proc = _start_long_slurm_run(ws)
    try:
        run_json = _running_run_json(ws, proc)
        client_job, svc_job = run_json["clients"]["job_ids"][0], run_json["service"]["job_id"]
        subprocess.run(["scancel", client_job], check=True, timeout=30)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    _assert_benchmark_job_stopped_cleanly(ws, proc, out, svc_job)


def test_service_job_time_limit_mid_run_is_a_partial_run(tmp_path):
    """The service job runs out of its --time: Slurm ends it (TIMEOUT); the run is partial with
    that reason, the records so far are kept and reported, nothing stays in the queue."""
    ws = make_workspace(tmp_path)
    proc = _start_long_slurm_run(ws)
    try:
        doc = _running_run_json(ws, proc)
        svc_job = doc["service"]["job_id"]
        _shorten_time_limit(svc_job)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    bid = benchmark_id_from(out)
    run_json = read_json(ws / "results" / bid / "run.json")
    assert run_json["status"] == "partial", run_json["reason"]
    assert f"service job {svc_job} ended during the run" in run_json["reason"]
    assert "TIMEOUT" in run_json["reason"] and "time limit" in run_json["reason"]
    lines = (ws / "results" / bid / "requests.jsonl").read_text().splitlines()
    assert len(lines) > 1000 and all(json.loads(line) for line in lines)
    assert "TIMEOUT" in (ws / "reports" / bid / "report.md").read_text()
    assert_queue_empty(ws)


def test_benchmark_job_time_limit_cancels_its_service_and_keeps_records(tmp_path):
    """The benchmark (client) job runs out of its --time: Slurm sends it SIGTERM; it cancels its
    service job and keeps its records as a partial attempt, as on scancel."""
    ws = make_workspace(tmp_path)
    proc = _start_long_slurm_run(ws)
    try:
        doc = _running_run_json(ws, proc)
        client_job, svc_job = doc["clients"]["job_ids"][0], doc["service"]["job_id"]
        _shorten_time_limit(client_job)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert job_state(client_job) in ("TIMEOUT", None)
    _assert_benchmark_job_stopped_cleanly(ws, proc, out, svc_job)


def test_service_that_cannot_start_fails_with_its_own_words(tmp_path):
    """Local profile, Slurm target: the service job reports the failure through service.json."""
    ws = make_workspace(tmp_path)
    proc = aifb(ws, "run", "recipes/recipe_redis_1client.yaml", *SHORT,
                "--set", "service.args=[--no-such-option, x1]")
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    bid = benchmark_id_from(proc.stdout)
    run_json = read_json(ws / "results" / bid / "run.json")
    assert run_json["status"] == "failed"
    assert f"service job {run_json['service']['job_id']}" in run_json["reason"]
    assert "exited with code" in run_json["reason"]
    assert "no-such-option" in run_json["service"]["log_tail"]
    assert_queue_empty(ws)


def test_impossible_gpu_request_is_refused_at_submission(tmp_path):
    ws = make_workspace(tmp_path)
    proc = aifb(ws, "run", "recipes/recipe_redis_1client.yaml", *SHORT,
                "--set", "service.resources.gpus=1")
    assert proc.returncode == 1
    run_json = read_json(ws / "results" / benchmark_id_from(proc.stdout) / "run.json")
    assert run_json["status"] == "failed" and "sbatch refused the job" in run_json["reason"]
    assert "--partition=gpu" in run_json["reason"]
    assert_queue_empty(ws)


def test_service_job_stops_when_its_owner_is_gone(tmp_path):
    """The benchmark process is SIGKILLed (no teardown): its service job notices and stops."""
    ws = make_workspace(tmp_path)
    env = dict(os.environ, AIFB_ROOT=str(ws), AIFB_OWNER_CHECK_S="2")
    proc = subprocess.Popen(
        ["timeout", "-k", "15", "200", str(VENV_BIN / "aifb"), "run", "recipes/recipe_redis_1client.yaml",
         "--set", "load.duration=60s", "--set", "target=slurm-local"],
        cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        deadline = time.time() + 120
        doc = None
        while time.time() < deadline:
            docs = list((ws / "results").glob("BM-*/service.json"))
            if docs and read_json(docs[0]).get("status") == "ready":
                doc = read_json(docs[0])
                break
            time.sleep(0.3)
        assert doc, "the service never became ready"
        runner_pid = read_json(docs[0].parent / "run.json")["clients"]["pids"][0]
        os.kill(runner_pid, 9)
        deadline = time.time() + 60
        while job_state(doc["job_id"]) in ("RUNNING", "COMPLETING") and time.time() < deadline:
            time.sleep(0.5)
        assert read_json(docs[0])["status"] == "stopped"
        assert "owner" in read_json(docs[0])["reason"]
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)
    assert_queue_empty(ws)


# --------------------------------------------------------------------------- client jobs

def test_clients_over_several_jobs_on_one_time_base(tmp_path):
    """slurm-local drives at most 8 clients per job: 12 clients -> the benchmark job + 1."""
    ws = make_workspace(tmp_path)
    proc = aifb(ws, "run", "recipes/recipe_redis_4client.yaml", "--profile", "slurm", *SHORT,
                "--set", "load.clients=12")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-5000:]
    bid = benchmark_id_from(proc.stdout)
    run_json = read_json(ws / "results" / bid / "run.json")
    jsonschema.validate(run_json, schema("run.schema.yaml"))
    clients = run_json["clients"]
    assert run_json["status"] == "completed", run_json["reason"]
    assert len(clients["job_ids"]) == 2 and len(set(clients["job_ids"])) == 2
    assert run_json["service"]["job_id"] not in clients["job_ids"]
    assert [j["clients"] for j in clients["jobs"]] == [[0, 6], [6, 12]]
    sync = clients["clock_sync"]
    assert sync["within_bound"] and sync["max_uncertainty_s"] < sync["bound_s"]
    clk = clients["jobs"][1]["clock"]
    # one host, one CLOCK_MONOTONIC: the measured offset must be ~0, within its uncertainty
    for when in ("start", "end"):
        assert clk[when]["same_host"]
        assert abs(clk[when]["offset_ns"]) <= clk[when]["uncertainty_ns"] + 1000
    records = [json.loads(line) for line in (ws / "results" / bid / "requests.jsonl").open()]
    assert {r["client"] for r in records} == set(range(12))
    assert len(records) == run_json["load_stats"]["records_written"]
    starts = {}
    for r in records:
        starts[r["client"]] = min(starts.get(r["client"], 1e9), r["t_start"])
    assert max(starts.values()) - min(starts.values()) < 0.5  # one start instant for all jobs
    summary = read_json(ws / "results" / bid / "summary.json")
    assert summary["requests"]["total"] == sum(r["phase"] == "measure" for r in records)
    assert_queue_empty(ws)


def test_requests_mode_is_one_n_over_client_jobs(tmp_path):
    """requests: N over the benchmark job and an extra client job is one count (issue 12 item
    1): both jobs keep loading until together they have completed N, and the window ends then
    for both, so every merged record's phase follows from the one measure_end. Against a FAKE
    Redis whose connections answer in 1 ms or 4 ms (tests/fakes/fake_redis.py), so the jobs
    differ in speed (with N split per job, the faster job's window ended early)."""
    from fakes.fake_redis import serve_in_thread

    ws = make_workspace(tmp_path)
    recipe = yaml.safe_load((REPO / "recipes" / "recipe_redis_4client.yaml").read_text())
    recipe["load"].pop("duration")
    recipe["load"].update(requests=3000, clients=12, warmup="0.5s")
    recipe["workload"] = {"ops": {"get": 1}, "keyspace": 100, "preload": False}
    (ws / "recipes" / "recipe_redis_requests.yaml").write_text(yaml.safe_dump(recipe))
    with serve_in_thread(delays=(0.001, 0.004, 0.004)) as endpoint:
        proc = aifb(ws, "run", "recipes/recipe_redis_requests.yaml", "--profile", "slurm",
                    "--set", "target=slurm-local", "--set", f"service.endpoint={endpoint}")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-5000:]
    bid = benchmark_id_from(proc.stdout)
    run_json = read_json(ws / "results" / bid / "run.json")
    assert run_json["status"] == "completed", run_json["reason"]
    ls = run_json["load_stats"]
    assert len(run_json["clients"]["job_ids"]) == 2
    assert ls["shared_requests"]["target"] == 3000 and ls["shared_requests"]["members"] == 2
    assert all(j["stats"]["stopped_by"] == "requests" for j in ls["client_jobs"])
    records = [json.loads(line) for line in (ws / "results" / bid / "requests.jsonl").open()]
    wu, me = ls["warmup_end"], ls["measure_end"]
    tol = run_json["clients"]["clock_sync"]["max_uncertainty_s"] + 1e-6
    for r in records:  # one end for both jobs (within the clock offset's uncertainty)
        te = r["t_end"]
        if r["phase"] == "measure":
            assert wu - tol <= te <= me + tol, (r, wu, me)
        elif r["phase"] == "cooldown":
            assert te > me - tol, (r, me)
    measured = sum(r["phase"] == "measure" for r in records)
    assert measured >= 3000 and measured == ls["measured"]["ok"] + ls["measured"]["errors"]
    assert_queue_empty(ws)


# --------------------------------------------------------------------------- cleanup

def test_cleanup_cancels_leftovers_and_keeps_live_runs(tmp_path):
    """Ours = marked with this work root (aifb.slurm.commands.job_comment); a job named aifb-* without
    the marker, or a marked job of another work root, is never touched; a live owner's job only
    goes when named."""
    from aifb.slurm.commands import job_comment

    ws = make_workspace(tmp_path)
    other = make_workspace(tmp_path / "other")
    live_owner = f"pid:{socket.gethostname()}:{os.getpid()}"

    def submit(name, comment):
        out = subprocess.run(["sbatch", "--parsable", f"--job-name={name}", f"--comment={comment}",
                              f"--chdir={tmp_path}", "--time=5", "--output=/dev/null",
                              "--wrap", "sleep 300"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    orphan = submit("aifb-svc-BM-20000101-001",
                    f"aifb:BM-20000101-001 owner=job:999999 root={ws.resolve()}")
    live = submit("aifb-svc-BM-20000101-002", job_comment(ws / "results" / "BM-20000101-002"))
    assert f"owner={live_owner} root={ws.resolve()}" in job_comment(ws / "results" / "BM-20000101-002")
    unrelated = submit("aifb-my-unrelated-analysis", "")
    elsewhere = submit("aifb-svc-BM-20000101-003",
                       f"aifb:BM-20000101-003 owner={live_owner} root={other.resolve()}")
    jobs = [orphan, live, unrelated, elsewhere]
    try:
        dry = aifb(ws, "cleanup", "--dry-run", timeout=60)
        assert dry.returncode == 0, dry.stderr
        assert f"would cancel {orphan} aifb-svc-BM-20000101-001" in dry.stdout
        assert "owner job:999999 is gone" in dry.stdout
        assert f"kept {live} aifb-svc-BM-20000101-002" in dry.stdout
        assert f"kept {elsewhere}" in dry.stdout and "another work root" in dry.stdout
        assert unrelated not in dry.stdout
        assert job_state(orphan) in ("PENDING", "RUNNING")
        real = aifb(ws, "cleanup", "--all", timeout=60)
        assert f"cancelled {orphan}" in real.stdout and f"kept {live}" in real.stdout, real.stdout
        deadline = time.time() + 20
        while job_state(orphan) not in ("CANCELLED", None) and time.time() < deadline:
            time.sleep(0.3)
        assert job_state(orphan) in ("CANCELLED", None)
        for job in (live, unrelated, elsewhere):  # --all spares a live owner and foreign jobs
            assert job_state(job) in ("PENDING", "RUNNING"), job
        refused = aifb(ws, "cleanup", unrelated, timeout=60)
        assert f"refused {unrelated}" in refused.stdout
        assert job_state(unrelated) in ("PENDING", "RUNNING")
        named = aifb(ws, "cleanup", live, timeout=60)
        assert f"cancelled {live}" in named.stdout and "named" in named.stdout
    finally:
        subprocess.run(["scancel", *jobs], timeout=30)


# --------------------------------------------------------------------------- apptainer

FAKE_APPTAINER = """#!/bin/sh
# fake_apptainer: stands in for Apptainer, which this machine lacks. It logs its arguments,
# drops apptainer's options and the image, and runs the command (exec mode) on the host.
echo "$@" >> "$APPTAINER_FAKE_LOG"
shift
while [ $# -gt 0 ]; do
  case $1 in --bind|-B) shift 2 ;; --*) shift ;; *) break ;; esac
done
shift
exec "$@"
"""


def test_apptainer_target_runs_the_kind_inside_the_image_fake_apptainer(tmp_path):
    """The service job's command for an Apptainer target (exec mode), through a fake apptainer
    that runs the host's redis-server: argv, image, binds, readiness and teardown."""
    ws = make_workspace(tmp_path)
    shim = tmp_path / "bin" / "apptainer"
    shim.parent.mkdir()
    shim.write_text(FAKE_APPTAINER)
    shim.chmod(0o755)
    targets = yaml.safe_load((ws / "config" / "targets.yaml").read_text())
    t = dict(targets["slurm-local"], services={"redis": {
        "apptainer": {"image": "docker://redis:7.2", "args": ["--cleanenv"],
                      "binds": ["/tmp:/scratch"]}}})
    targets["slurm-apptainer"] = t
    (ws / "config" / "targets.yaml").write_text(yaml.safe_dump(targets))
    log = tmp_path / "apptainer.log"
    proc = aifb(ws, "run", "recipes/recipe_redis_1client.yaml", "--set", "load.duration=2s",
                "--set", "target=slurm-apptainer",
                PATH=f"{shim.parent}:{os.environ['PATH']}",
                APPTAINER_FAKE_LOG=str(log))  # APPTAINER*: a server's environment keeps it
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    run_json = read_json(ws / "results" / benchmark_id_from(proc.stdout) / "run.json")
    svc = run_json["service"]
    assert run_json["status"] == "completed" and svc["image"] == "docker://redis:7.2"
    cmd = svc["command"]
    image_at = cmd.index("docker://redis:7.2")
    assert cmd[:2] == ["apptainer", "exec"] and "--cleanenv" in cmd[:image_at]
    assert cmd[cmd.index("--bind") + 1] == svc["extra"]["workdir"] and "/tmp:/scratch" in cmd
    assert cmd[image_at + 1] == "redis-server" and "--bind" in cmd[image_at:]
    assert log.read_text().startswith("exec ")
    assert_queue_empty(ws)


# --------------------------------------------------------------------------- targets

def test_unknown_target_is_refused_before_registering(tmp_path):
    ws = make_workspace(tmp_path)
    proc = aifb(ws, "run", "recipes/recipe_redis_1client.yaml", "--set", "target=nowhere", timeout=60)
    assert proc.returncode == 2 and "target 'nowhere' is not defined" in proc.stderr
    assert not (ws / "results" / "registry").exists()


def test_invalid_targets_file_fails_at_parse_time(tmp_path):
    ws = make_workspace(tmp_path)
    targets = yaml.safe_load((ws / "config" / "targets.yaml").read_text())
    targets["meluxina"]["executor"] = "pbs"
    (ws / "config" / "targets.yaml").write_text(yaml.safe_dump(targets))
    proc = snakemake_slurm(ws, "-n", "sweep_all", timeout=120)
    assert proc.returncode != 0
    assert "meluxina.executor: 'pbs' is not one of local, slurm" in proc.stdout + proc.stderr
