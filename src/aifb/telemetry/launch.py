"""Start and stop the telemetry sampler for a run (what runner.py calls).

`plan(...)` adds the sources every kind gets to the kind's own (declared by its service class,
aifb.services.<kind> `telemetry_sources`); `Sampler.start` spawns
`python -m aifb.telemetry.sampler` with its configuration on stdin; `Sampler.stop` sends
SIGTERM, reaps it with wait4 (the kernel's count of its CPU time: the sampler's own cost) and
returns what run.json keeps under `telemetry` (no secret: the configuration is recorded with
secrets and headers left out).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aifb.telemetry import DEFAULT_INTERVAL_S, MIN_INTERVAL_S, TELEMETRY_FILE
from aifb.telemetry.sources import rapl_zones
from aifb.units import parse_duration

STOP_GRACE_S = 8.0   # a source's scrape is bounded by 5 s; then it is killed


def settings(recipe: dict) -> dict | None:
    """recipe `telemetry:` -> {"interval_s"}; None when it is off (`telemetry: false`)."""
    cfg = recipe.get("telemetry", True)
    if cfg is False or (isinstance(cfg, dict) and cfg.get("enabled") is False):
        return None
    interval = cfg.get("interval", DEFAULT_INTERVAL_S) if isinstance(cfg, dict) else DEFAULT_INTERVAL_S
    return {"interval_s": max(MIN_INTERVAL_S, parse_duration(interval))}


def plan(kind_sources: list[dict], *, pid: int | None, local: bool) -> list[dict]:
    """The sources for one run: the kind's own (its service class's `telemetry_sources`: the
    service's interfaces, read over the network from wherever the sampler runs) after the ones
    every kind gets when `local`, i.e. when the sampler runs on the service's node (process
    tree, node, RAPL and NVML make sense only there)."""
    out: list[dict] = []
    if local:
        out.append({"type": "node", "name": "node"})
        if pid:
            out.append({"type": "process", "name": "process", "pid": pid})
        if rapl_zones():
            out.append({"type": "rapl", "name": "rapl", "optional": True})
        out.append({"type": "nvml", "name": "gpu", "optional": True})
    return out + list(kind_sources)


def public(sources: list[dict]) -> list[dict]:
    """The sources as run.json records them: no secrets, no headers."""
    return [{k: v for k, v in s.items() if k not in ("secrets", "headers")} for s in sources]


class Sampler:
    def __init__(self, proc: subprocess.Popen, out: Path, interval_s: float, sources: list[dict]):
        self.proc, self.out, self.interval_s, self.sources = proc, out, interval_s, sources
        self.started = time.monotonic()

    @classmethod
    def start(cls, run_dir: Path, t0_ns: int, interval_s: float, sources: list[dict],
              log_path: Path | None = None, duration_s: float | None = None) -> "Sampler":
        out = Path(run_dir) / TELEMETRY_FILE
        cfg = {"out": str(out), "t0_ns": t0_ns, "interval_s": interval_s,
               "parent_pid": os.getpid(), "duration_s": duration_s, "sources": sources}
        src = str(Path(__file__).resolve().parents[2])   # the sampler imports aifb from here
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [src, *filter(None, [os.environ.get("PYTHONPATH")])]))
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            proc = subprocess.Popen([sys.executable, "-m", "aifb.telemetry.sampler"],
                                    stdin=subprocess.PIPE, stdout=log, stderr=log, env=env,
                                    start_new_session=True)   # a Ctrl-C reaches the runner only
        finally:
            if log_path:
                log.close()
        proc.stdin.write(json.dumps(cfg).encode())
        proc.stdin.close()
        return cls(proc, out, interval_s, sources)

    def stop(self) -> dict:
        """Stop, reap, and return run.json's `telemetry` record with the sampler's CPU time."""
        wall = time.monotonic() - self.started
        ru = None
        # os.kill and wait4, not Popen.send_signal/poll: those would reap the process and lose
        # its rusage (the sampler's CPU time)
        try:
            os.kill(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + STOP_GRACE_S
        while True:
            try:
                pid, status, ru_ = os.wait4(self.proc.pid, os.WNOHANG)
            except ChildProcessError:   # reaped elsewhere: no rusage
                break
            if pid:
                ru = ru_
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                os.kill(self.proc.pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.02)
        cpu = (ru.ru_utime + ru.ru_stime) if ru is not None else None
        return {"file": TELEMETRY_FILE, "interval_s": self.interval_s,
                "sources": public(self.sources), "pid": self.proc.pid,
                "exit_code": self.proc.returncode,
                "sampler_cpu_s": round(cpu, 6) if cpu is not None else None,
                "sampler_wall_s": round(wall, 6),
                "sampler_cpu_util": round(cpu / wall, 6) if cpu is not None and wall > 0 else None,
                "cpu_measured_by": "wait4 rusage (user + system) of the sampler process",
                "placement": "a separate process beside the runner, on the service's node"}
