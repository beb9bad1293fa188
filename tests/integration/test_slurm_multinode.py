"""The multi-node Slurm path on a real three-node Slurm on this machine (scripts/slurm/start.sh
--nodes 3: slurmctld on a bridge, three slurmd each in its own network, hostname and time
namespace, CLOCK_MONOTONIC offsets +0 / +37 / -12 s), beside the single-node test Slurm, which
it must leave alone.

A 4-client redis recipe on target slurm-multinode through profiles/slurm: the service job on
node 1 (partition gpu) bound to its node's address, the benchmark job and one client job on
nodes 2 and 3, clocks 49 s apart. The merged timeline is checked against the truth the script
set, within the uncertainty the run recorded. The faults across nodes: a client node killed, a
client node's link down, the service's job cancelled. The RAG pipeline with llama-server on
the gpu node and its stores on a cpu node. Needs root (namespaces); under CI=true a missing
piece fails (support.require). The module's last test stops the cluster and checks that
nothing of it is left."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
import yaml

from aifb.schemas import validation_errors
from aifb.workflow.sweep import missing_locally
from support import REPO, VENV_BIN, benchmark_id_from, make_workspace, pid_alive, read_json, require

pytestmark = [pytest.mark.workflow, pytest.mark.redis, pytest.mark.slow, pytest.mark.slurm]

SCRIPTS = REPO / "scripts" / "slurm"
RUN_DIR = Path("/run/aifb-mn")
CONF = RUN_DIR / "slurm.conf"
NODES = {"aifb-n1": "198.18.0.11", "aifb-n2": "198.18.0.12", "aifb-n3": "198.18.0.13"}
# The truth: what multinode.sh set, each node's CLOCK_MONOTONIC minus the host's, in seconds.
OFFSET_S = {"aifb-n1": 0, "aifb-n2": 37, "aifb-n3": -12}
LINKS = ("aifb-mn0", "aifb-mnv1", "aifb-mnv2", "aifb-mnv3")
ACTIVE = "PENDING,RUNNING,CONFIGURING,COMPLETING,SUSPENDED"


def missing() -> str | None:
    if os.geteuid() != 0:
        return "the three-node Slurm needs root (network and time namespaces)"
    for cmd in ("slurmctld", "slurmd", "sbatch", "squeue", "ip", "nsenter", "unshare", "redis-server"):
        if shutil.which(cmd) is None:
            return f"{cmd} not on PATH (scripts/slurm/start.sh installs Slurm; apt-get install redis-server)"
    if "--monotonic" not in subprocess.run(["unshare", "--help"], capture_output=True, text=True).stdout:
        return "util-linux unshare without --monotonic (time namespaces need util-linux >= 2.36)"
    return None


def mn_env(**extra) -> dict:
    """The environment that selects the three-node cluster (never the single-node one's file)."""
    return dict(os.environ, SLURM_CONF=str(CONF), **extra)


def sh(*argv, timeout=120, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                          env=env)


def active_jobs() -> list[str]:
    return sh("squeue", "-h", "-t", ACTIVE, "-o", "%i|%j|%T|%N", env=mn_env()).stdout.split()


def file_hash(path: str) -> str | None:
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None


def netns_processes(inodes: set[int]) -> list[int]:
    """Processes still in one of these network namespaces."""
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.stat(proc / "ns" / "net").st_ino in inodes:
                    out.append(int(proc.name))
            except OSError:
                pass
    return out


@pytest.fixture(scope="module")
def cluster():
    why = missing()
    if why:
        require(why)
    single_node = {"conf": file_hash("/etc/slurm/slurm.conf"), "hosts": file_hash("/etc/hosts"),
                   "answers": sh("sinfo", "-h", "-o", "%t", env={k: v for k, v in os.environ.items()
                                                               if k != "SLURM_CONF"}).returncode == 0}
    t0 = time.monotonic()
    proc = sh(SCRIPTS / "start.sh", "--nodes", "3")
    assert proc.returncode == 0, proc.stderr
    seen = {"single_node": single_node, "start_s": time.monotonic() - t0,
            "netns": {os.stat(f"/run/netns/{n}").st_ino for n in NODES},
            "pids": [int((RUN_DIR / f).read_text()) for f in
                     ("slurmctld.pid", *(f"slurmd-{n}.pid" for n in NODES))]}
    try:
        yield seen
    finally:
        sh(SCRIPTS / "stop.sh", "--nodes", "3")   # idempotent; the last test checks what it left


@pytest.fixture(scope="module")
def mn_run(cluster, tmp_path_factory):
    """The 4-client redis recipe on slurm-multinode through profiles/slurm (up to the benchmark
    job: its summary and report are the single-node ones, tested in test_slurm.py)."""
    ws = make_workspace(tmp_path_factory.mktemp("multinode"))
    t0 = time.monotonic()
    proc = subprocess.run(
        ["timeout", "-k", "15", "300", str(VENV_BIN / "aifb"), "run", "recipes/recipe_redis_4client.yaml",
         "--profile", "slurm", "--set", "load.duration=3s", "--set", "load.warmup=0.5s",
         "--set", "target=slurm-multinode", "--snakemake-args", "--until", "run_benchmark"],
        cwd=ws, env=mn_env(AIFB_ROOT=str(ws)), capture_output=True, text=True, timeout=360)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-5000:]
    bid = benchmark_id_from(proc.stdout)
    run_dir = ws / "results" / bid
    cluster["run_pids"] = [read_json(run_dir / "run.json")["service"]["pid"]] + \
        [j["pid"] for j in read_json(run_dir / "run.json")["clients"]["jobs"][1:]]
    print(f"aifb run on slurm-multinode took {time.monotonic() - t0:.1f} s "
          f"(load average {os.getloadavg()[0]:.2f})")
    return run_dir, read_json(run_dir / "run.json")


def test_each_node_has_its_own_address_name_and_clock_and_jobs_inherit_them(cluster, tmp_path):
    """A batch job on each node: its hostname resolves to its node's address, and the job (and
    its parent, slurmstepd) live in the node's time namespace: time.monotonic() there minus the
    offset the script set falls between the host's readings before and after."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, os, socket, time\n"
        "def off(pid):\n"
        "    for line in open(f'/proc/{pid}/timens_offsets'):\n"
        "        k, s, ns = line.split()\n"
        "        if k == 'monotonic': return int(s) * 10**9 + int(ns)\n"
        "name = socket.gethostname()\n"
        "print(json.dumps({'host': name, 'addr': socket.gethostbyname(name), 'self': off(os.getpid()),\n"
        "    'parent': off(os.getppid()), 'parent_comm': open(f'/proc/{os.getppid()}/comm').read().strip(),\n"
        "    'mono_ns': time.monotonic_ns()}))\n")
    before = time.monotonic_ns()
    procs = {}
    for n in NODES:
        part = "gpu" if n == "aifb-n1" else "cpu"
        procs[n] = subprocess.Popen(
            ["sbatch", "--wait", "--quiet", f"--partition={part}", f"--nodelist={n}", "--time=2",
             f"--output={tmp_path / n}.out", f"--wrap=exec {sys.executable} {probe}"],
            env=mn_env(), cwd=tmp_path)
    for n, p in procs.items():
        assert p.wait(timeout=120) == 0, n
    after = time.monotonic_ns()
    for n, addr in NODES.items():
        got = json.loads((tmp_path / f"{n}.out").read_text())
        off = OFFSET_S[n] * 10**9
        assert (got["host"], got["addr"]) == (n, addr)
        assert got["self"] == got["parent"] == off and got["parent_comm"] == "slurmstepd"
        assert before <= got["mono_ns"] - off <= after, (n, got, before, after)
    print(f"three-node cluster up in {cluster['start_s']:.1f} s")


def test_service_on_node_1_at_its_address_clients_on_nodes_2_and_3(mn_run):
    run_dir, run = mn_run
    assert run["status"] == "completed", run.get("reason")
    jsonschema.validate(run, yaml.safe_load((REPO / "workflow" / "schemas" / "run.schema.yaml").read_text()))
    svc = run["service"]
    assert svc["node"] == "aifb-n1" and svc["host"] == NODES["aifb-n1"]
    assert svc["endpoint"].startswith(f"redis://{NODES['aifb-n1']}:")
    assert "--partition=gpu" in svc["extra"]["sbatch"]
    clients = run["clients"]
    assert sorted(clients["nodes"]) == ["aifb-n2", "aifb-n3"]
    assert [j["clients"] for j in clients["jobs"]] == [[0, 2], [2, 4]]
    assert svc["job_id"] not in clients["job_ids"] and len(set(clients["job_ids"])) == 2
    # requests reached the service from both other nodes, without errors
    stats = run["load_stats"]
    assert all(p["stats"]["records_written"] > 100 for p in stats["client_jobs"])
    assert [p["stats"]["errors_by_type"] for p in stats["client_jobs"]] == [{}, {}]


def test_measured_offsets_are_the_ones_set_within_their_uncertainty(mn_run):
    """Client job 1 against the benchmark job, and the service node's telemetry clock against
    the benchmark job: measured offset - truth within the recorded uncertainty."""
    _, run = mn_run
    jobs = run["clients"]["jobs"]
    bench = jobs[0]["node"]
    lines = []
    for when in ("start", "end"):
        clk = jobs[1]["clock"][when]
        truth = (OFFSET_S[jobs[1]["node"]] - OFFSET_S[bench]) * 10**9
        assert not clk["same_host"]
        assert abs(clk["offset_ns"] - truth) <= clk["uncertainty_ns"], (when, clk, truth)
        lines.append(f"client job 1 ({jobs[1]['node']}) - benchmark job ({bench}) {when}: set "
                     f"{truth / 1e9:+.0f} s, measured {clk['offset_ns'] / 1e9:+.9f} s "
                     f"+-{clk['uncertainty_ns'] / 1e3:.1f} us (error {(clk['offset_ns'] - truth) / 1e3:+.1f} us)")
        tel = run["telemetry"]["clock"][when]
        truth = (OFFSET_S[run["service"]["node"]] - OFFSET_S[bench]) * 10**9
        assert abs(tel["offset_ns"] - truth) <= tel["uncertainty_ns"], (when, tel, truth)
        lines.append(f"service node ({run['service']['node']}) - benchmark job {when}: set "
                     f"{truth / 1e9:+.0f} s, measured {tel['offset_ns'] / 1e9:+.9f} s "
                     f"+-{tel['uncertainty_ns'] / 1e3:.1f} us (error {(tel['offset_ns'] - truth) / 1e3:+.1f} us)")
    assert run["clients"]["clock_sync"]["within_bound"]
    print("\n".join(lines))


def test_every_merged_record_is_within_the_uncertainty_of_the_truth(mn_run):
    """Each record of client job 1, put on the benchmark's time base with the offset the script
    set instead of the measured one, against its merged time: within the recorded uncertainty.
    And one start instant for all jobs (a wrong offset would part them by tens of seconds)."""
    run_dir, run = mn_run
    job = run["clients"]["jobs"][1]
    lo, hi = job["clients"]
    clk = job["clock"]
    truth = (OFFSET_S[job["node"]] - OFFSET_S[run["clients"]["jobs"][0]["node"]]) * 10**9
    # the job wrote (its clock - base_ns) / 1e9, base_ns = the benchmark's t0 + measured offset
    shift_s = (clk["start"]["offset_ns"] - truth) / 1e9
    bound_s = max(clk["start"]["uncertainty_ns"], clk["end"]["uncertainty_ns"]) / 1e9 + 2e-9
    own = [json.loads(line) for line in (run_dir / "clients" / "1" / "requests.jsonl").open()]
    merged = [r for r in map(json.loads, (run_dir / "requests.jsonl").open()) if lo <= r["client"] < hi]
    assert len(merged) == len(own) > 100
    worst = 0.0
    for mine, m in zip(own, merged):
        assert m["client"] == mine["client"] + lo and m["seq"] == mine["seq"]
        for key in ("t_start", "t_end"):
            err = abs(m[key] - (mine[key] + shift_s))
            worst = max(worst, err)
            assert err <= bound_s, (key, mine, m, shift_s, bound_s)
    first = {}
    for r in map(json.loads, (run_dir / "requests.jsonl").open()):
        first[r["client"]] = min(first.get(r["client"], 1e18), r["t_start"])
    assert set(first) == {0, 1, 2, 3} and max(first.values()) - min(first.values()) < 0.5
    print(f"worst record error {worst * 1e6:.1f} us against a stated bound of {bound_s * 1e6:.1f} us; "
          f"first requests within {max(first.values()) - min(first.values()):.3f} s")


def test_requests_per_client_job_match_what_each_job_recorded(mn_run):
    run_dir, run = mn_run
    stats = run["load_stats"]
    records = [json.loads(line) for line in (run_dir / "requests.jsonl").open()]
    assert len(records) == stats["records_written"]
    for part, job in zip(stats["client_jobs"], run["clients"]["jobs"]):
        lo, hi = job["clients"]
        mine = sum(lo <= r["client"] < hi for r in records)
        assert mine == part["stats"]["records_written"] == part["stats"]["requests_issued"], job["k"]
        if job["k"]:
            lines = len((run_dir / "clients" / str(job["k"]) / "requests.jsonl").read_text().splitlines())
            assert mine == job["records"] == lines
    assert stats["merged_records"] == run["clients"]["jobs"][1]["records"]


def start_run(ws: Path, *sets: str) -> subprocess.Popen:
    """The 4-client recipe on slurm-multinode in the background (up to the benchmark job)."""
    argv = [str(VENV_BIN / "aifb"), "run", "recipes/recipe_redis_4client.yaml", "--profile", "slurm",
            "--set", "load.warmup=0.5s", "--set", "target=slurm-multinode"]
    for s in sets:
        argv += ["--set", s]
    return subprocess.Popen(["timeout", "-k", "15", "300", *argv, "--snakemake-args", "--until",
                             "run_benchmark"], cwd=ws, env=mn_env(AIFB_ROOT=str(ws)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def client_job_node(ws: Path, proc: subprocess.Popen) -> str:
    """The node of client job 1 once it has written records."""
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        for path in ws.glob("results/*/clients/1/requests.jsonl"):
            if path.stat().st_size > 10_000:
                jobs = sh("squeue", "-h", "-t", "RUNNING", "-o", "%j|%N", env=mn_env()).stdout.split()
                node = next((line.split("|")[1] for line in jobs
                             if line.split("|")[0].startswith("aifb-cli-")), None)
                if node:
                    return node
    raise AssertionError("client job 1 never ran: " + (proc.stderr.read() if proc.poll() is not None else ""))


def test_a_client_node_that_dies_mid_run_makes_a_partial_run_naming_its_client_job(cluster, tmp_path):
    """Node crash: once client job 1 has written records, everything in its node's network
    namespace (slurmd, slurmstepd, the client) is killed and the node marked down. The benchmark
    job loses the client job's connection at once: partial, the reason names client job 1, its
    records so far merged. The node is started again afterwards (multinode.sh start is
    idempotent and resumes a down node)."""
    ws = make_workspace(tmp_path)
    proc = start_run(ws, "load.duration=8s")
    try:
        victim = client_job_node(ws, proc)
        pids = sh("ip", "netns", "pids", victim).stdout.split()
        sh("kill", "-KILL", *pids)
        # what slurmctld does itself SlurmdTimeout (60 s) later: the node is down, its job NODE_FAIL
        sh("scontrol", "update", f"nodename={victim}", "state=down", "reason=killed by a test",
           env=mn_env())
        out, errout = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        restart = sh(SCRIPTS / "start.sh", "--nodes", "3")
    assert restart.returncode == 0, restart.stderr
    bid = benchmark_id_from(out)
    run = read_json(ws / "results" / bid / "run.json")
    assert run["status"] == "partial", (run["status"], run.get("reason"), errout[-3000:])
    job = run["clients"]["jobs"][1]
    assert job["node"] == victim
    assert (f"client job 1 (Slurm job {job['job_id']}) did not report its end (its connection "
            f"from {victim} closed)") in run["reason"]
    assert run["load_stats"]["lost_client_jobs"] == [{"client_job": 1, "job_id": job["job_id"]}]
    merged = [r for r in map(json.loads, (ws / "results" / bid / "requests.jsonl").open()) if r["client"] >= 2]
    assert len(merged) > 100 and len(merged) == job["records"] - (
        not (ws / "results" / bid / "clients" / "1" / "requests.jsonl").read_text().endswith("\n"))
    print(f"killed node {victim} mid-run: {run['status']} - {run['reason']}")


def test_a_client_nodes_link_down_for_3_s_counts_errors_and_reconnects(cluster, tmp_path):
    """The link of client job 1's node goes down for 3 s mid-run (its veth on the bridge), with a
    0.5 s request timeout: that job records Timeout errors and failed reconnects, then reconnects
    and its clients complete requests again; the benchmark job's node sees no error; every
    record of the job is merged, and its clock sync afterwards is still within the bound."""
    ws = make_workspace(tmp_path)
    proc = start_run(ws, "load.duration=10s", "load.timeout=0.5s")
    node = None
    try:
        node = client_job_node(ws, proc)
        link = f"aifb-mnv{node[-1]}"
        sh("ip", "link", "set", link, "down")
        time.sleep(3)
        sh("ip", "link", "set", link, "up")
        out, errout = proc.communicate(timeout=300)
    finally:
        if node:
            sh("ip", "link", "set", f"aifb-mnv{node[-1]}", "up")
        if proc.poll() is None:
            proc.kill()
    run_dir = ws / "results" / benchmark_id_from(out)
    run = read_json(run_dir / "run.json")
    assert run["status"] == "completed", (run.get("reason"), errout[-3000:])
    job0, job1 = run["load_stats"]["client_jobs"]
    assert job0["stats"]["errors_by_type"] == {}
    assert job1["stats"]["errors_by_type"].get("Timeout", 0) >= 2, job1["stats"]["errors_by_type"]
    own = [json.loads(line) for line in (run_dir / "clients" / "1" / "requests.jsonl").open()]
    failed = [r for r in own if not r["ok"]]
    last_failure = max(r["t_end"] or r["t_start"] for r in failed)
    after = {r["client"] for r in own if r["ok"] and r["t_start"] > last_failure}
    assert after == {0, 1}, "both clients of the job reconnected and completed requests"
    job = run["clients"]["jobs"][1]
    assert job["records"] == len(own) == sum(2 <= r["client"] < 4 for r in
                                             map(json.loads, (run_dir / "requests.jsonl").open()))
    assert run["clients"]["clock_sync"]["within_bound"]
    print(f"link of {node} down 3 s: client job 1 errors {job1['stats']['errors_by_type']}, "
          f"connect attempts {job1['stats']['connect_attempts']}, last failure at "
          f"t={last_failure:.3f} s, {len(own)} records")


def slurm_jobs(job_ids) -> dict:
    """What Slurm itself says of these jobs (finished ones stay in squeue for MinJobAge, 600 s;
    there is no slurmdbd for sacct): {job id: (partition, node list, state)}."""
    out = sh("squeue", "-h", "-t", "all", "-j", ",".join(map(str, job_ids)), "-o", "%i|%P|%N|%T",
             env=mn_env()).stdout.split()
    return {i: (p, n, t) for i, p, n, t in (line.split("|") for line in out)}


def wait_until_nothing_runs(cluster, timeout_s: float = 30) -> list:
    """No job active and no process in the nodes' namespaces but their slurmd: the ones left.
    (The slurmd of now: a test restarts a node it killed.)"""
    slurmd = {int((RUN_DIR / f"slurmd-{n}.pid").read_text()) for n in NODES}
    deadline = time.time() + timeout_s   # COMPLETING and slurmstepd clear within a few seconds
    while True:
        left = active_jobs() + [p for p in netns_processes(cluster["netns"]) if p not in slurmd]
        if not left or time.time() > deadline:
            return left
        time.sleep(0.5)


def rag_recipe() -> dict:
    """recipes/recipe_rag_1client.yaml, small, on slurm-multinode: the LLM on the gpu
    partition, the stores on the cpu partition; 4 requests (one RAG request takes about a second
    on the shared 2-core machine). llama-server and chroma would serve anyone on the bridge: the
    namespaces reach nothing else, so they run without a secret."""
    recipe = yaml.safe_load((REPO / "recipes" / "recipe_rag_1client.yaml").read_text())
    recipe.update(name="rag_multinode", target="slurm-multinode")
    recipe["workload"]["corpus"].update(documents=300, words=12, queries=50)
    recipe["load"] = {"clients": 1, "requests": 4, "warmup": "0s", "timeout": "60s"}
    for name, partition in (("llm", "gpu"), ("vectors", "cpu"), ("cache", "cpu")):
        recipe["services"][name]["partition"] = partition
    for name in ("llm", "vectors"):
        recipe["services"][name]["allow_unauthenticated"] = True
    return recipe


def test_rag_pipeline_llm_on_the_gpu_node_stores_on_a_cpu_node(cluster, tmp_path):
    """The RAG pipeline through profiles/slurm: the benchmark job and each service its own Slurm
    job; Slurm's own record puts llama-server on the gpu partition's node and chroma and redis
    on a cpu node; the pipeline reached each at its node's address; every request and stage
    ok; nothing left running. No `binary:` anywhere: the service jobs find chroma and
    llama-server installed with the Python that runs them, not on PATH."""
    recipe = rag_recipe()
    why = missing_locally(dict(recipe, target="local"))
    if why:
        require(f"the RAG recipe's servers: {why}")
    ws = make_workspace(tmp_path)
    (ws / "recipes" / "rag_multinode.yaml").write_text(yaml.safe_dump(recipe))
    path = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                           if not shutil.which("chroma", path=d))   # as a user's shell: no venv
    t0 = time.monotonic()
    proc = subprocess.run(
        ["timeout", "-k", "15", "300", str(VENV_BIN / "aifb"), "run", "recipes/rag_multinode.yaml",
         "--profile", "slurm", "--snakemake-args", "--until", "run_benchmark"],
        cwd=ws, env=mn_env(AIFB_ROOT=str(ws), PATH=path), capture_output=True, text=True, timeout=360)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = ws / "results" / benchmark_id_from(proc.stdout)
    run = read_json(run_dir / "run.json")
    assert run["status"] == "completed", run.get("reason")
    assert validation_errors(run, "run.schema.yaml") == []
    services = run["service"]["services"]
    bench_job = run["clients"]["job_ids"][0]
    jobs = slurm_jobs([bench_job, *(s["job_id"] for s in services.values())])
    assert len(jobs) == 4, jobs
    assert jobs[bench_job][:2] == ("cpu", run["clients"]["nodes"][0])
    where = {}
    for name, svc in services.items():
        partition, node, state = jobs[svc["job_id"]]
        want = "gpu" if name == "llm" else "cpu"
        assert partition == want and f"--partition={want}" in svc["extra"]["sbatch"], (name, jobs)
        assert svc["node"] == node and svc["host"] == NODES[node], (name, svc["node"], svc["host"])
        assert svc["endpoint"].split("//")[1].split(":")[0] == NODES[node]
        assert state == svc["extra"]["job_state"] == "CANCELLED" and svc["extra"]["cancelled_by_teardown"]
        if name != "cache":   # installed with aifb's Python (redis-server is the system's)
            assert Path(svc["binary"]).is_relative_to(Path(sys.executable).parent.parent), svc["binary"]
        where[name] = node
    assert where["llm"] == "aifb-n1" and {where["vectors"], where["cache"]} <= {"aifb-n2", "aifb-n3"}
    # what the pipeline's stage clients connected to: the nodes' addresses, never loopback
    stages = {st["service"]: st["client"]["endpoint"]
              for st in run["load_stats"]["client"]["stages"]}
    for name, endpoint in stages.items():
        assert f"{NODES[where[name]]}:{services[name]['port']}" in endpoint, (name, endpoint)
    records = [json.loads(line) for line in (run_dir / "requests.jsonl").open()]
    assert [e for r in records for e in validation_errors(r, "request.schema.yaml")] == []
    assert sum(r["phase"] == "measure" for r in records) == 4
    assert len(records) == run["load_stats"]["records_written"]
    for r in records:
        assert r["ok"] and r["error"] is None, r
        assert list(r["stages"]) == ["retrieve", "fetch", "generate"], r
        t = r["t_start"]
        for stage in r["stages"].values():   # each ok, in order, inside its request
            assert stage["ok"] and stage["error"] is None and t <= stage["t_start"] <= stage["t_end"], r
            t = stage["t_end"]
        assert t <= r["t_end"]
        assert r["stages"]["retrieve"]["hits"] == r["stages"]["fetch"]["keys"] == 4
        assert r["stages"]["generate"]["tokens"] == 16
    assert wait_until_nothing_runs(cluster) == []
    assert [n for n, s in services.items() if pid_alive(s["pid"])] == []
    print(f"RAG on three nodes: llm on {where['llm']}, vectors on {where['vectors']}, cache on "
          f"{where['cache']}, benchmark job on {run['clients']['nodes'][0]}; aifb run took "
          f"{time.monotonic() - t0:.1f} s (load average {os.getloadavg()[0]:.2f})")


def test_the_service_job_cancelled_mid_run_ends_the_run_partial_naming_it(cluster, tmp_path):
    """scancel of the service's Slurm job (on node 1) while the clients on nodes 2 and 3 load it:
    the run still ends when its duration is up (no hang), partial, its reason names the job and
    that Slurm cancelled it; the records are valid, ok ones before the cancel and failed ones
    after; nothing is left queued or running."""
    ws = make_workspace(tmp_path)
    proc = start_run(ws, "load.duration=6s", "load.timeout=1s")
    try:
        client_job_node(ws, proc)   # the load runs on both client nodes
        svc = [line.split("|") for line in sh("squeue", "-h", "-t", "RUNNING", "-o", "%i|%j|%N",
                                               env=mn_env()).stdout.split()
               if line.split("|")[1].startswith("aifb-svc-")]
        assert len(svc) == 1 and svc[0][2] == "aifb-n1", svc
        job_id = svc[0][0]
        assert sh("scancel", job_id, env=mn_env()).returncode == 0
        cancelled = time.monotonic()
        out, errout = proc.communicate(timeout=120)
        ended_s = time.monotonic() - cancelled
    finally:
        if proc.poll() is None:
            proc.kill()
    run_dir = ws / "results" / benchmark_id_from(out)
    run = read_json(run_dir / "run.json")
    assert run["status"] == "partial", (run["status"], run.get("reason"), errout[-3000:])
    assert validation_errors(run, "run.schema.yaml") == []
    assert run["service"]["job_id"] == job_id and run["service"]["node"] == "aifb-n1"
    assert (f"the redis service job {job_id} ended during the run (Slurm state CANCELLED: it was "
            "cancelled (scancel) by someone other than this benchmark; the service job: stopped "
            "by SIGTERM)") in run["reason"], run["reason"]
    assert run["service"]["extra"]["job_state"] == "CANCELLED"
    assert not run["service"]["extra"]["cancelled_by_teardown"]
    records = [json.loads(line) for line in (run_dir / "requests.jsonl").open()]
    assert [e for r in records for e in validation_errors(r, "request.schema.yaml")] == []
    assert len(records) == run["load_stats"]["records_written"]
    ok = [r for r in records if r["ok"]]
    failed = [r for r in records if not r["ok"]]
    assert ok and failed, "requests succeeded before the cancel and failed after it"
    assert max(r["t_end"] for r in ok) <= min(r["t_start"] for r in failed) + 1.0
    by_job = [p["stats"]["errors_by_type"] for p in run["load_stats"]["client_jobs"]]
    assert all(by_job), f"both client nodes saw the service go: {by_job}"
    assert wait_until_nothing_runs(cluster) == []
    print(f"service job {job_id} cancelled mid-run: the run ended {ended_s:.1f} s later, "
          f"{run['status']} - {run['reason']}; {len(ok)} ok, {len(failed)} failed records, "
          f"errors by client job {by_job}")


def test_stop_leaves_no_job_namespace_link_or_process(cluster, mn_run):
    """The last test of the module: nothing of the run is queued, and stop.sh --nodes 3 removes
    every namespace, link, file and process of the cluster and leaves the single-node one be."""
    deadline = time.time() + 30   # COMPLETING clears within a few seconds
    while active_jobs() and time.time() < deadline:
        time.sleep(0.5)
    assert active_jobs() == []
    proc = sh(SCRIPTS / "stop.sh", "--nodes", "3")
    assert proc.returncode == 0, proc.stderr
    assert [n for n in NODES if Path(f"/run/netns/{n}").exists()] == []
    links = sh("ip", "-o", "link", "show").stdout
    assert [name for name in LINKS if f" {name}:" in links or f" {name}@" in links] == []
    assert not RUN_DIR.exists()
    assert [p for p in cluster["pids"] + cluster.get("run_pids", []) if pid_alive(p)] == []
    assert netns_processes(cluster["netns"]) == []
    # the single-node cluster and the host's files are as they were
    single = cluster["single_node"]
    assert file_hash("/etc/slurm/slurm.conf") == single["conf"]
    assert file_hash("/etc/hosts") == single["hosts"]
    if single["answers"]:
        assert sh("sinfo", "-h", "-o", "%t", env={k: v for k, v in os.environ.items()
                                                  if k != "SLURM_CONF"}).returncode == 0
    again = sh(SCRIPTS / "stop.sh", "--nodes", "3")   # idempotent
    assert again.returncode == 0, again.stderr
