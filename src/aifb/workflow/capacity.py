"""SLO capacity search: the highest level of one load parameter at which a service meets its SLO.

A sweep in config/config.yaml with `mode: capacity`:

    redis_capacity:
      mode: capacity
      recipe: recipes/recipe_redis_1client.yaml
      param: load.clients          # or load.concurrency, load.rate, load.speedup (a trace's)
      start: 1                     # first level measured (> 0)
      max: 256                     # never measured above this
      resolution: 1                # stop when the last pass and the first fail are this close
                                   #   (a number in the param's unit, or "10%" of the passing level)
      slo: ["p99 < 10ms"]          # default: the recipe's
      set: ["load.duration=5s"]    # overrides for every step (optional)
      version: 1

The search doubles the level from `start` until the SLO fails (or `max` passes), then bisects
between the highest passing and the lowest failing level until they are within `resolution`.
It assumes the SLO verdict is monotone in the level (more load never helps); each level is
measured once. Every step is a benchmark with its own ID (registry.allocate_sweep_point with
the level in the key: re-asking for the same search reuses the IDs and, when a step's report is
on disk, does not measure it again), run through Snakemake like `aifb run` does, and judged
from its results/<id>/summary.json by the sweep report's rule (sweep_verdict.judge_rule): a
step passes when its run completed, every rule holds (latency rules on all requests, failed
ones at their elapsed time) and its error rate is within the error budget (`error_budget:`,
default 1 %). `confidence:` is refused: a bound needs repeats, and each level is measured
once. The answer is the last passing level; the first failing level above it bounds the
uncertainty ("capacity in [pass, fail)").

The report goes to reports/sweep_<first>_<last>/ (first and last step IDs in search order):
sweep_report.build_sweep_report's tables and plots over the measured levels, preceded by the
answer and followed by the search path (step, level, verdict, why the next level).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from aifb import yamlio
from aifb.analysis.sweep_verdict import judge_rule, judged_rules, level_str, read_point
from aifb.errors import ConfigError, RecipeError
from aifb.jsonio import read_json
from aifb.reporting.sweep_report import build_sweep_report, md_cell
from aifb.units import format_number, format_seconds
from aifb.workflow import registry
from aifb.workflow.recipe import apply_overrides, read_yaml, validate
from aifb.workflow.console import Console
from aifb.workflow.snakemake import run_snakemake
from aifb.workflow.sweep import latest_point

PARAMS = ("load.clients", "load.concurrency", "load.rate", "load.speedup")
INTEGER_PARAMS = ("load.clients", "load.concurrency")
MODE = "capacity"


# ----------------------------------------------------------------------------- the search

def parse_resolution(value, integer: bool) -> tuple[float, bool]:
    """(amount, relative). `1` -> (1, False); `"10%"` -> (0.10, True)."""
    if value is None:
        return (1.0, False) if integer else (0.05, True)
    if isinstance(value, str) and value.strip().endswith("%"):
        pct = float(value.strip()[:-1]) / 100
        if not 0 < pct < 1:
            raise ConfigError(f"capacity resolution {value!r}: a percentage between 0 and 100")
        return pct, True
    try:
        amount = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"capacity resolution {value!r}: a number or a percentage") from None
    if amount <= 0:
        raise ConfigError(f"capacity resolution {value!r} must be > 0")
    return amount, False


class CapacitySearch:
    """Double-then-bisect over one numeric level; pure logic (no I/O), driven by
    `next_level()` -> level (None when done) and `record(level, passed)`."""

    def __init__(self, start, maximum, resolution=None, integer: bool = True):
        if integer:
            if int(start) != start or int(maximum) != maximum:
                raise ConfigError("capacity start and max must be whole numbers for this param")
            start, maximum = int(start), int(maximum)
        if not start > 0:
            raise ConfigError(f"capacity start must be > 0, got {start}")
        if maximum < start:
            raise ConfigError(f"capacity max ({maximum}) is below start ({start})")
        self.start, self.max, self.integer = start, maximum, integer
        self.res, self.relative = parse_resolution(resolution, integer)
        if integer and not self.relative:
            self.res = max(1.0, self.res)
        self.lo = None          # highest level that passed
        self.hi = None          # lowest level that failed
        self.phase = "double"
        self.done_reason: str | None = None
        self._next = start
        self.history: list[tuple] = []   # (level, passed, why the next level)

    # -- the next level --------------------------------------------------------------
    def _close_enough(self) -> bool:
        gap = self.hi - self.lo
        if self.integer and gap <= 1:
            return True
        limit = self.res * self.lo if self.relative else self.res
        return gap <= limit + 1e-12

    def _mid(self):
        mid = (self.lo + self.hi) / 2
        if self.integer:
            mid = int(mid)
        else:
            mid = float(f"{mid:.6g}")
        return mid if self.lo < mid < self.hi else None

    def next_level(self):
        return None if self.done_reason else self._next

    def record(self, level, passed: bool) -> str:
        """Note the verdict at `level` (the level next_level() returned); returns why the next
        level is what it is (or why the search stops)."""
        if self.done_reason:
            raise RuntimeError("the search is over")
        if level != self._next:
            raise ValueError(f"expected a verdict for level {self._next}, got {level}")
        if passed:
            self.lo = level if self.lo is None else max(self.lo, level)
        else:
            self.hi = level if self.hi is None else min(self.hi, level)
        why = self._advance(level, passed)
        self.history.append((level, passed, why))
        return why

    def _advance(self, level, passed: bool) -> str:
        fmt = _fmt_level
        if self.phase == "double":
            if passed:
                if level >= self.max:
                    self.done_reason = "max"
                    return f"passed at max = {fmt(self.max)}: the capacity is at least that; stop"
                nxt = min(level * 2, self.max)
                self._next = int(nxt) if self.integer else float(f"{nxt:.6g}")
                return (f"passed: double to {fmt(self._next)}" if self._next == level * 2 else
                        f"passed: double, capped at max = {fmt(self._next)}")
            if self.lo is None:
                self.done_reason = "none"
                return f"failed at the start level {fmt(level)}: no level passes; stop"
            self.phase = "bisect"
        # bisect between lo (pass) and hi (fail)
        if self._close_enough():
            self.done_reason = "resolution"
            return (f"{'passed' if passed else 'failed'}: last pass {fmt(self.lo)} and first "
                    f"fail {fmt(self.hi)} are within the resolution; stop")
        mid = self._mid()
        if mid is None:
            self.done_reason = "resolution"
            return (f"{'passed' if passed else 'failed'}: no level between {fmt(self.lo)} and "
                    f"{fmt(self.hi)}; stop")
        self._next = mid
        return (f"{'passed' if passed else 'failed'}: bisect [{fmt(self.lo)}, {fmt(self.hi)}) "
                f"-> {fmt(mid)}")

    # -- the answer --------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.done_reason is not None

    def answer(self) -> dict:
        return {"capacity": self.lo, "first_fail": self.hi, "reason": self.done_reason,
                "bracket": [self.lo, self.hi],
                "max_reached": self.done_reason == "max",
                "none_passed": self.lo is None and self.done}


def _fmt_level(v) -> str:
    return "n/a" if v is None else level_str(v)


# ----------------------------------------------------------------------------- steps

@dataclass
class Step:
    index: int
    level: object
    benchmark_id: str
    passed: bool = False
    reused: bool = False
    status: str | None = None
    summary: dict | None = None
    why: str = ""            # why this verdict
    next_why: str = ""       # why the next level
    saturated: bool | None = None
    slo: list = field(default_factory=list)

    def as_dict(self) -> dict:
        s = self.summary or {}
        lat = s.get("latency_s") or {}
        return {"step": self.index, "level": self.level, "benchmark_id": self.benchmark_id,
                "verdict": "pass" if self.passed else "fail", "why": self.why,
                "next": self.next_why, "status": self.status, "reused": self.reused,
                "rps": (s.get("throughput") or {}).get("rps"), "p50": lat.get("p50"),
                "p99": lat.get("p99"), "error_rate": (s.get("requests") or {}).get("error_rate"),
                "client_saturated": self.saturated, "slo": self.slo}


def judge(run_dir: Path, rules) -> tuple[bool, str, str | None, dict | None, list, bool | None]:
    """(passed, why, run status, summary, rule verdicts, client_saturated) of one step.

    The step is judged by the sweep report's own rule (sweep_verdict.judge_rule on the run's
    value, the error budget being one of `rules`), so a level passes the search exactly when it
    would pass as a one-repeat sweep level."""
    run_path, sum_path = run_dir / "run.json", run_dir / "summary.json"
    run = read_json(run_path) if run_path.is_file() else None
    summary = read_json(sum_path) if sum_path.is_file() else None
    status = (run or {}).get("status") or (summary or {}).get("status")
    if summary is None:
        reason = (run or {}).get("reason") or "no run.json either"
        return False, f"no summary.json ({status or 'not run'}: {reason})", status, None, [], None
    point = read_point({"benchmark_id": run_dir.name}, run_dir, rules)
    verdict = [judge_rule(rule, [point["rule_values"][i]]) for i, rule in enumerate(rules)]
    sat = (summary.get("validity") or {}).get("client_saturated")
    if status != "completed":
        reason = (run or {}).get("reason") or summary.get("reason") or "no reason recorded"
        return False, f"run {status}: {reason}", status, summary, verdict, sat
    broken = [f"{r['rule']}: {r['measured']}" + (f" ({r['note']})" if r.get("note") else "")
              for r in verdict if not r["passed"]]
    held = [f"{r['metric']} = {r['measured']}" for r in verdict if r["passed"]]
    if broken:
        return False, "missed " + "; ".join(broken), status, summary, verdict, sat
    return True, "met: " + ", ".join(held) if held else "met (no rules)", status, summary, \
        verdict, sat


def snakemake_step(root: Path, profile: str, name: str | None = None,
                   console: Console | None = None) -> Callable[[str], int]:
    """Measure one step as `aifb run` does: Snakemake builds reports/<id>/report.md. When the
    search is a sweep of root/config/config.yaml, `--config only=NAME` keeps that invocation
    from registering the points of every other sweep (which any real run otherwise does)."""
    extra: list[str] = []
    try:
        cfg = yamlio.load((root / "config" / "config.yaml").read_text(encoding="utf-8")) or {}
        if name is not None and name in (cfg.get("sweeps") or {}):
            extra = ["--config", f"only={name}"]
    except (OSError, yaml.YAMLError):
        pass

    def run(benchmark_id: str) -> int:
        return run_snakemake([f"reports/{benchmark_id}/report.md"], profile, extra, root=root,
                             console=console)
    return run


def _step_id(name: str, spec: dict, level, recipe: dict, overrides: list[str], root: Path,
             remeasure: bool) -> str:
    key = {"name": name, "version": spec.get("version", 1), "mode": MODE, "level": level,
           "repeat": 0}
    latest, epoch = latest_point(key, registry.all_entries(root))
    if latest and not remeasure:
        return latest
    entry = registry.make_entry(recipe, recipe_path=spec["recipe"], overrides=overrides)
    return registry.allocate_sweep_point({**key, "epoch": epoch + 1}, entry, root)


def _level_value(level, integer: bool):
    return int(level) if integer else float(level)


def run_capacity(name: str, spec: dict, *, root, profile: str = "local", log=print,
                 remeasure: bool = False, run_step: Callable[[str], int] | None = None,
                 console: Console | None = None) -> dict:
    """Run the capacity search `name` (a `mode: capacity` sweep of config/config.yaml) under
    `root`, measuring each step through Snakemake with `profile`; write its report; return
    {"name", "capacity", "first_fail", "reason", "steps": [...], "report_dir", ...}.

    `run_step(benchmark_id) -> exit code` replaces the Snakemake call (tests). `remeasure`
    allocates new IDs for every level instead of reusing the registered ones. `console`
    (aifb.workflow.console): each step's benchmark line instead of Snakemake's output.
    """
    root = Path(root)
    param = spec.get("param")
    if param not in PARAMS:
        raise ConfigError(f"sweep {name}: a capacity search varies one of {', '.join(PARAMS)}, "
                          f"not {param!r}")
    for k in ("recipe", "start", "max"):
        if k not in spec:
            raise ConfigError(f"sweep {name}: a capacity search needs `{k}:`")
    integer = param in INTEGER_PARAMS
    base = read_yaml(root / spec["recipe"])
    slo_texts = spec.get("slo") or base.get("slo") or []
    if not slo_texts:
        raise ConfigError(f"sweep {name}: a capacity search needs an SLO (the sweep's `slo:` or "
                          "the recipe's)")
    if spec.get("confidence") is not None:
        raise ConfigError(f"sweep {name}: `confidence:` needs repeats of a level, and a capacity "
                          "search measures each level once; drop it or use a grid sweep with "
                          "`repeats:`")
    try:
        rules, _ = judged_rules({"slo": slo_texts, "error_budget": spec.get("error_budget")})
    except ValueError as exc:
        raise ConfigError(f"sweep {name}: {exc}") from None
    search = CapacitySearch(spec["start"], spec["max"], spec.get("resolution"), integer)
    common = list(spec.get("set", []))
    run_step = run_step or snakemake_step(root, profile, name, console)
    steps: list[Step] = []
    log(f"capacity search {name}: {param} from {_fmt_level(search.start)} up to "
        f"{_fmt_level(search.max)}, SLO {' and '.join(r.text for r in rules)}")
    while (level := search.next_level()) is not None:
        level = _level_value(level, integer)
        overrides = [*common, f"{param}={level}"]
        try:
            recipe = validate(apply_overrides(base, overrides),
                              source=f"sweep {name}: {spec['recipe']} at {param}={level}")
        except RecipeError as exc:
            raise ConfigError(str(exc)) from None
        bid = _step_id(name, spec, level, recipe, overrides, root, remeasure)
        run_dir = root / "results" / bid
        done_before = ((run_dir / "summary.json").is_file()
                       and (root / "reports" / bid / "report.md").is_file())
        step = Step(index=len(steps) + 1, level=level, benchmark_id=bid, reused=done_before)
        if done_before:
            log(f"step {step.index}: {param} = {_fmt_level(level)} -> {bid} (measured before; "
                "reusing it)")
        else:
            log(f"step {step.index}: {param} = {_fmt_level(level)} -> {bid}: measuring")
            rc = run_step(bid)
            if rc:
                log(f"step {step.index}: Snakemake exited with {rc}")
        (step.passed, step.why, step.status, step.summary, step.slo,
         step.saturated) = judge(run_dir, rules)
        step.next_why = search.record(level, step.passed)
        log(f"step {step.index}: {'PASS' if step.passed else 'FAIL'} ({step.why}); "
            f"{step.next_why}")
        steps.append(step)
    result = {"name": name, "param": param, "slo": [r.text for r in rules[:-1]],
              "error_budget": rules[-1].threshold,
              **search.answer(), "start": search.start, "max": search.max,
              "resolution": spec.get("resolution", 1 if integer else "5%"),
              "steps": [s.as_dict() for s in steps]}
    out_dir = root / "reports" / f"sweep_{steps[0].benchmark_id}_{steps[-1].benchmark_id}"
    result["report_dir"] = str(out_dir.relative_to(root))
    result["headline"] = capacity_headline(result)
    write_capacity_report(name, spec, result, steps, root, out_dir)
    log(result["headline"])
    log(f"capacity report: {out_dir / 'report.md'}")
    return result


# ----------------------------------------------------------------------------- report

def capacity_headline(res: dict) -> str:
    p, slo = res["param"], " and ".join(res["slo"])
    lo, hi = res["capacity"], res["first_fail"]
    if res.get("none_passed"):
        return (f"**No {p} meets {slo}**: the start level {_fmt_level(res['start'])} already "
                "fails (capacity below it).")
    if res.get("max_reached"):
        return (f"**Capacity {p} ≥ {_fmt_level(lo)}** (meets {slo}); the search stopped at its "
                f"max, so the true capacity may be higher.")
    return (f"**Capacity: {p} = {_fmt_level(lo)}** meets {slo}; {_fmt_level(hi)} does not "
            f"(the capacity is in [{_fmt_level(lo)}, {_fmt_level(hi)}), an uncertainty of "
            f"{_fmt_level(hi - lo)}).")


def write_capacity_report(name: str, spec: dict, res: dict, steps: list[Step], root: Path,
                          out_dir: Path) -> dict:
    by_level = sorted(steps, key=lambda s: s.level)
    sweep = {"name": name, "param": res["param"], "mode": MODE,
             "levels": [s.level for s in by_level], "repeats": 1,
             "version": spec.get("version", 1), "slo": res["slo"],
             "error_budget": res["error_budget"],
             "service": spec.get("service"), "purpose": spec.get("purpose"),
             "points": [{"level": s.level, "repeat": 0, "benchmark_id": s.benchmark_id,
                         "recipe_path": spec["recipe"]} for s in by_level]}
    head = [res["headline"], "",
            f"Search: `{res['param']}` doubled from {_fmt_level(res['start'])} until the SLO "
            f"failed (or max {_fmt_level(res['max'])}), then bisected to a resolution of "
            f"{res['resolution']}; {len(steps)} steps, each one benchmark with its own ID. The "
            "answer assumes the verdict is monotone in the level (more load never helps) and "
            "rests on one measurement per level; see the search path below.", ""]
    sat = sorted((s for s in steps if s.saturated), key=lambda s: s.level)
    if sat:
        head += [f"⚠️ The load generator was saturated at {', '.join(_fmt_level(s.level) for s in sat)}: "
                 "latencies there include client-side delay, so the capacity may be "
                 "underestimated (add client processes).", ""]
    path = ["## Search path", "",
            "| Step | Level | Benchmark ID | Verdict | Throughput (req/s) | p99 | Why | Next |",
            "|---:|---:|---|---|---:|---:|---|---|"]
    for s in steps:
        d = s.as_dict()
        path.append("| " + " | ".join(md_cell(c) for c in (
            s.index, _fmt_level(s.level), s.benchmark_id + (" (reused)" if s.reused else ""),
            "✅ pass" if s.passed else "❌ fail",
            format_number(d["rps"]), format_seconds(d["p99"]), s.why,
            s.next_why)) + " |")
    path.append("")
    # The sweep report's judgement of every level, presented as the search's answer: the
    # highest passing level is marked (the sweep's "optimal" is the best throughput among
    # passing levels) and the search path goes before the plots.
    view = {"title": f"# Capacity search: {name}", "intro": head, "headline": res["headline"],
            "star": res["capacity"], "levels_heading": "## Levels measured",
            "optimum_sentence": ("In a capacity search the answer is the highest passing level "
                                 "(★), found by the search path below."),
            "before_plots": path,
            "extra": {"capacity": {k: v for k, v in res.items() if k != "report_dir"}}}
    return build_sweep_report(sweep, [root / "results" / s.benchmark_id for s in by_level],
                              out_dir, view=view)
