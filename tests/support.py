"""Helpers shared by the tests: a scratch workspace, process checks, and how a test whose server is
missing skips (`require`) and how the skips are summed up at the end (conftest.py's last line)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from aifb.analysis.summary import write_summary
from aifb.records import read_records
from aifb.schemas import validation_errors
from aifb.workflow.runner import run_benchmark

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def synthetic_run():
    """tests/data/synthetic_run.py as a module (tests/data is no package: it is also a script)."""
    import importlib.util
    if "synthetic_run" not in sys.modules:
        spec = importlib.util.spec_from_file_location("synthetic_run",
                                                      REPO / "tests" / "data" / "synthetic_run.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["synthetic_run"] = module
        spec.loader.exec_module(module)
    return sys.modules["synthetic_run"]


def site_dataset(root: Path) -> list[dict]:
    """A small dataset for the site's tests, built with the real report code: a two-level sweep
    (load.clients 1 and 2; the second run twice as slow) of synthetic runs, their summaries and
    reports, and the sweep report. Returns the sweeps as aifb.workflow.index.write_index takes them."""
    from aifb.analysis.summary import write_summary
    from aifb.reporting.report import build_report
    from aifb.reporting.sweep_report import build_sweep_report

    ids = ["BM-20260109-001", "BM-20260109-002"]
    dirs = []
    for level, bid in enumerate(ids, start=1):
        run_dir = root / "results" / bid
        synthetic_run().write_run(run_dir, clients=level, latency_scale=float(level),
                                  slo=("p99 < 5ms",))
        run = json.loads((run_dir / "run.json").read_text())
        run["sweep"] = {"name": "redis_sweep", "level": level, "version": 1}
        (run_dir / "run.json").write_text(json.dumps(run))
        write_summary(run_dir, run_dir / "summary.json")
        build_report(run_dir, root / "reports" / bid)
        dirs.append(run_dir)
    sweep = {"name": "redis_sweep", "service": "Redis", "purpose": "Find the optimal clients",
             "param": "load.clients", "levels": [1, 2], "slo": ["p99 < 5ms"], "repeats": 1,
             "points": [{"benchmark_id": b, "level": i} for i, b in enumerate(ids, start=1)]}
    report_dir = f"reports/sweep_{ids[0]}_{ids[-1]}"
    build_sweep_report(sweep, dirs, root / report_dir)
    return [sweep | {"report_dir": report_dir, "skip_reason": None}]


def make_workspace(tmp_path: Path, sweeps: dict | None = None) -> Path:
    """A directory with config/ and recipes/ like the repository's, for AIFB_ROOT."""
    ws = tmp_path / "ws"
    (ws / "config").mkdir(parents=True)
    shutil.copytree(REPO / "recipes", ws / "recipes")
    shutil.copy(REPO / "config" / "targets.yaml", ws / "config" / "targets.yaml")
    cfg = {"index": {"markdown": "reports/dataset_index.md", "json": "reports/index.json"},
           "sweeps": sweeps or {}}
    (ws / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    return ws


def aifb(ws: Path, *args: str, timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, AIFB_ROOT=str(ws))
    proc = subprocess.run([str(VENV_BIN / "aifb"), *args], cwd=ws, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"aifb {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def snakemake(ws: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, AIFB_ROOT=str(ws))
    return subprocess.run([str(VENV_BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"),
                           "--directory", str(ws), "--profile", str(REPO / "profiles" / "local"),
                           *args], cwd=ws, env=env, capture_output=True, text=True, timeout=timeout)


def benchmark_id_from(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("benchmark id: "):
            return line.split(": ", 1)[1].strip()
    raise AssertionError(f"no benchmark id in output:\n{output}")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def processes_under(path: Path, comm: str, *, by: str = "cwd") -> list[int]:
    """PIDs of processes whose name contains `comm` and whose working directory (by="cwd") or
    command line (by="cmdline") names a path inside `path`."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if comm not in (p / "comm").read_text():
                continue
            where = (os.readlink(p / "cwd") if by == "cwd" else
                     (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            if str(path) in where:
                pids.append(int(p.name))
        except OSError:
            continue
    return pids


def run_async(coro):
    """Run a coroutine on a fresh uvloop event loop (what the engine runs on)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        return r.run(coro)


def redis_servers_under(path: Path) -> list[int]:
    return processes_under(path, "redis-server")


def llama_servers_under(path: Path) -> list[int]:
    return processes_under(path, "llama-server")


def tree(path: Path) -> dict[str, float]:
    """Every file under path (except Snakemake's own metadata) with its mtime."""
    return {str(p.relative_to(path)): p.stat().st_mtime for p in path.rglob("*")
            if p.is_file() and ".snakemake" not in p.parts}


def write_step_result(ws: Path, bid: str, rps: float, p99: float) -> int:
    """What a completed capacity-search step leaves (run.json, summary.json, its report dir),
    for stand-in step runners; returns 0 like a successful step."""
    import json

    d = ws / "results" / bid
    d.mkdir(parents=True, exist_ok=True)
    (d / "run.json").write_text(json.dumps({"status": "completed", "benchmark_id": bid}))
    (d / "summary.json").write_text(json.dumps({
        "status": "completed", "benchmark_id": bid, "requests": {"total": 100, "errors": 0},
        "throughput": {"rps": rps}, "latency_s": {"n": 100, "p50": p99 / 2, "p95": p99, "p99": p99}}))
    (ws / "reports" / bid).mkdir(parents=True, exist_ok=True)
    return 0


# -- skips: a missing server skips outside CI and fails in CI; the summary line of the skips --
def require(reason: str) -> None:
    """Skip a test whose server is missing on a developer's machine; in CI (CI=true), where
    .ci/run installs every server, a missing one is a failure, never a silent skip."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (free now; the caller binds it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def redis_process(*args: str, port: int | None = None, workdir: Path | None = None):
    """(port, Popen) of a fresh redis-server on 127.0.0.1 without persistence, `args` added to
    its command line; ready when it answers PING; killed on exit. The one way the tests start a
    redis-server of their own (the `redis_server` fixture, a server a test kills or restarts)."""
    binary = shutil.which("redis-server")
    if binary is None:
        require("redis-server not installed (apt-get install redis-server)")
    port = port or free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    if workdir is not None:
        argv += ["--dir", str(workdir)]
    proc = subprocess.Popen([*argv, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):   # -NOAUTH: --requirepass
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.02)
        yield port, proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def skip_groups(reports) -> dict[str, tuple[int, str]]:
    """{test file: (skipped tests, the first reason)} from pytest's skipped reports."""
    groups: dict[str, tuple[int, str]] = {}
    for rep in reports:
        path = (rep.nodeid or rep.location[0]).split("::")[0]
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        n, first = groups.get(os.path.basename(path), (0, reason.removeprefix("Skipped: ")))
        groups[os.path.basename(path)] = (n + 1, first)
    return groups


def skip_line(groups: dict[str, tuple[int, str]], root: bool) -> str:
    if not root:
        command = "sudo make test"  # installs every server, starts and stops the test Slurm
    elif any("Slurm" in reason for _, reason in groups.values()):
        command = "scripts/slurm/start.sh && make test"
    else:
        command = "make test"
    total = sum(n for n, _ in groups.values())
    parts = "; ".join(f"{name} ({n}: {reason})" for name, (n, reason) in sorted(groups.items()))
    return f"NOT RUN: {total} skipped test(s) - {parts}. Run them with: {command}"


# -- load engine runs: the load settings, the workloads and the records checks of the engine tests
GET_ONLY = {"ops": {"get": 1}, "keyspace": 1000, "value_size": 64}
MIXED = {"ops": {"get": 0.8, "set": 0.2}, "keyspace": 1000, "value_size": 64}
PHASE_ORDER = {"warmup": 0, "measure": 1, "cooldown": 2}
TIME_TEXT = re.compile(r'"t_(start|end)":\d+\.\d{9}[,}]')


def engine_load(**kw):
    """The `load` argument of run_load: one client, one worker, no phases, 2 s timeout, and **kw."""
    base = {"clients": 1, "concurrency": 1, "rate": None, "arrival": "poisson", "duration_s": None,
            "requests": None, "warmup_s": 0.0, "cooldown_s": 0.0, "timeout_s": 2.0}
    base.update(kw)
    return base


def quiet(_msg):
    """A run_load log that prints nothing."""
    pass


def check_records(path: Path, stats: dict) -> list[dict]:
    """The records file of a load run: complete, valid, exact times, in completion order."""
    recs = read_records(path)
    assert recs.dropped_lines == 0
    assert len(recs) == stats["records_written"]
    for r in recs[:100] + recs[-100:]:
        assert validation_errors(r, "request.schema.yaml") == []
    text = path.read_text()
    assert len(TIME_TEXT.findall(text)) == 2 * len(recs)
    prev_phase, prev_end = 0, 0.0
    for r in recs:
        assert r["t_start"] <= r["t_end"]
        assert PHASE_ORDER[r["phase"]] >= prev_phase   # written in completion order
        assert r["t_end"] >= prev_end
        prev_phase, prev_end = PHASE_ORDER[r["phase"]], r["t_end"]
        assert r["ok"] == (r["error"] is None)
    return recs


def in_process_step(ws):
    """A capacity step measured with the real runner and summary in this process (what the
    Snakemake rules call), without Snakemake's start-up per step."""
    def step(bid: str) -> int:
        out = run_benchmark(bid, root=ws, log=lambda m: None)
        write_summary(ws / "results" / bid, ws / "results" / bid / "summary.json")
        return 0 if out["status"] == "completed" else 1
    return step
