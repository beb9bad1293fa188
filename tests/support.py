"""Helpers shared by the tests: a scratch workspace, process checks, and how a test whose server is
missing skips (`require`) and how the skips are summed up at the end (conftest.py's last line)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


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


class TimedReplies:
    """A mixin for asyncio.Protocol fakes (self.transport set in connection_made): send a reply
    exactly at a time.perf_counter() instant or just after (loop timers alone may fire up to
    1 ms early, so the last 1.5 ms are spun on call_soon)."""

    def _send_at(self, when, reply):
        left = when - time.perf_counter()
        loop = asyncio.get_running_loop()
        if left <= 0:
            self._send(reply)
        elif left > 0.002:
            loop.call_later(left - 0.0015, self._send_at, when, reply)
        else:
            loop.call_soon(self._send_at, when, reply)

    def _send(self, reply):
        if not self.transport.is_closing():
            self.transport.write(reply)


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
