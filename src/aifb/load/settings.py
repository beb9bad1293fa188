"""What one load run is given: the recipe's `load` settings (LoadSettings, every default defined
here once) and the whole call of a run (LoadRun: target, workload, settings, seed, output,
callbacks, engine tuning), built once by run_load and handed as one object to the engine, the
worker processes and the process coordinator.

`load` dicts come from aifb.workflow.recipe.load_settings (units resolved to numbers), from a
Slurm client job's plan, or from tests and scripts that give only some keys: LoadSettings.of
fills in the rest with the defaults below.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from aifb.clock import RunClock

DEFAULT_CONCURRENCY = 1           # connections (workers) per logical client
DEFAULT_PROCESSES = 1             # worker processes of one client host
DEFAULT_ARRIVAL = "poisson"       # open loop: seeded Poisson arrivals
DEFAULT_TIMEOUT_S = 30.0          # load.timeout: a request past it is recorded as "Timeout"

# Engine tuning (not recipe settings): when every completion has failed this long the run
# stops as service_unreachable; how often rows are written (at most 0.5 s is ever unwritten);
# how often a progress line is logged.
UNREACHABLE_AFTER_S = 5.0
FLUSH_INTERVAL_S = 0.25
PROGRESS_INTERVAL_S = 5.0


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class LoadSettings:
    """A recipe's `load` block as the engine consumes it. Exactly one of duration_s and
    requests is set (checked by the engine when it is built, as before the load starts)."""

    clients: int
    concurrency: int = DEFAULT_CONCURRENCY
    processes: int = DEFAULT_PROCESSES
    rate: float | None = None         # open loop when set (over all clients)
    arrival: str = DEFAULT_ARRIVAL    # poisson | constant | trace
    trace_ns: tuple = ()              # arrival: trace: the arrival offsets (ns)
    duration_s: float | None = None
    requests: int | None = None
    warmup_s: float = 0.0
    cooldown_s: float = 0.0
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def of(cls, load: "dict | LoadSettings") -> "LoadSettings":
        """The settings of a `load` dict; missing or null keys take the defaults."""
        if isinstance(load, cls):
            return load
        return cls(
            clients=int(load["clients"]),
            concurrency=int(load.get("concurrency", DEFAULT_CONCURRENCY)),
            processes=int(load.get("processes") or DEFAULT_PROCESSES),
            rate=load.get("rate"),
            arrival=load.get("arrival") or DEFAULT_ARRIVAL,
            trace_ns=tuple(load.get("trace_ns") or ()),
            duration_s=load.get("duration_s"),
            requests=load.get("requests"),
            warmup_s=float(load.get("warmup_s") or 0.0),
            cooldown_s=float(load.get("cooldown_s") or 0.0),
            timeout_s=float(load.get("timeout_s") or DEFAULT_TIMEOUT_S),
        )

    @property
    def open_loop(self) -> bool:
        return self.rate is not None


@dataclass
class LoadRun:
    """One run_load call: everything the engine, the process coordinator and each worker need.
    `load` may be given as a dict; it is turned into LoadSettings here, once."""

    kind: str
    endpoint: str
    workload: dict
    load: LoadSettings
    seed: int
    records_path: Path
    clock: RunClock
    secrets: dict | None = None
    log: object = stderr_log
    on_ready: object = None           # on_ready(info), sync or async, just before the load
    stats_out: dict | None = None     # filled with load_stats also on cancellation
    unreachable_after_s: float = UNREACHABLE_AFTER_S
    flush_interval_s: float = FLUSH_INTERVAL_S
    progress_interval_s: float = PROGRESS_INTERVAL_S
    share: object = None              # RequestShare: a member of a shared `requests: N`
    identity: dict | None = None      # see aifb.load.startup.run_identity
    live: object = None               # aifb.load.live.LiveLoad: the progress file's figures

    def __post_init__(self):
        self.load = LoadSettings.of(self.load)

    def replace(self, **changes) -> "LoadRun":
        return dataclasses.replace(self, **changes)
