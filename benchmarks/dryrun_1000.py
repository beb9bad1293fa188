#!/usr/bin/env python3
"""How long does Snakemake take to plan the workflow with 1,000 registered benchmarks?

Builds a scratch workspace like tests/support.make_workspace (config/ with no sweeps, recipes/),
registers --ids benchmark IDs with aifb.workflow.registry.allocate (the redis recipe, one override each so
the entries differ), then times, --repeat times each and interleaved:

    snakemake -n all                                   (every registered run's report: 3 jobs/ID)
    snakemake -n reports/<id>/report.md x N            (the same targets named on the command line)

and, to find the cost, a cProfile of one `snakemake -n all` (aifb functions called by
common.smk at parse time and by the input functions: the registry reads).

    .venv/bin/python benchmarks/dryrun_1000.py [--ids 1000] [--repeat 2] [--check] [--keep]
    .venv/bin/python benchmarks/dryrun_1000.py --compare /work/main [--repeat 4]

--check exits 1 when the slowest dry run takes more than --max-seconds (10).

--compare OTHER (another checkout with its own .venv, e.g. main's): on the same workspace, first
checks that both plan the same DAG (the `snakemake -n all` job list, each job's rule, input,
output, log, wildcards, threads and resources, and `snakemake -n all --summary`), then times
`snakemake -n all` from each, interleaved A-B-B-A, and prints wall and CPU seconds (the child's
user + system time: on a shared machine the figure that load disturbs least) and the ratio of
this checkout to OTHER. Exits 1 when the DAGs differ.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
VENV_BIN = Path(sys.executable).parent


def make_workspace(base: Path) -> Path:
    ws = base / "ws"
    (ws / "config").mkdir(parents=True)
    shutil.copytree(ROOT / "recipes", ws / "recipes")
    shutil.copy(ROOT / "config" / "targets.yaml", ws / "config" / "targets.yaml")
    cfg = {"index": {"markdown": "reports/dataset_index.md", "json": "reports/index.json"},
           "sweeps": {}}
    (ws / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    return ws


def register(ws: Path, n: int) -> list[str]:
    from aifb.workflow import registry
    from aifb.workflow.recipe import load_recipe

    ids = []
    for i in range(n):
        over = [f"load.duration={1 + i % 50}s"]
        recipe = load_recipe(ws / "recipes" / "recipe_redis_1client.yaml", over)
        entry = registry.make_entry(recipe, recipe_path="recipes/recipe_redis_1client.yaml",
                                    overrides=over)
        ids.append(registry.allocate(entry, ws))
    return ids


def snakemake(ws: Path, *args: str, checkout: Path = ROOT) -> tuple[float, subprocess.CompletedProcess]:
    wall, _, proc = snakemake_timed(ws, *args, checkout=checkout)
    return wall, proc


def snakemake_timed(ws: Path, *args: str, checkout: Path = ROOT):
    """(wall seconds, CPU seconds of the child, the finished process) of one snakemake call with
    `checkout`'s Snakefile, profile and virtual environment (so its own aifb)."""
    exe = VENV_BIN / "snakemake" if checkout == ROOT else checkout / ".venv" / "bin" / "snakemake"
    env = dict(os.environ, AIFB_ROOT=str(ws))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run([str(exe), "--snakefile", str(checkout / "Snakefile"),
                           "--directory", str(ws), "--profile", str(checkout / "profiles" / "local"),
                           *args], cwd=ws, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc


def jobs_line(out: str) -> str:
    for line in out.splitlines():
        if line.strip().startswith("total"):
            return line.strip()
    return "?"


def slurm_probe_cost() -> None:
    """The Slurm executor plugin runs `scontrol show config` whenever Snakemake loads its plugins
    (any profile). With Slurm's client tools installed and a controller configured but not
    answering, scontrol retries for MessageTimeout (~10 s), which then dominates every figure
    below; scripts/slurm/stop.sh leaves a config with which it fails at once. Print what the
    probe costs here, and warn when it is slow, rather than mislead."""
    if not shutil.which("scontrol"):
        return
    t = time.perf_counter()
    try:
        subprocess.run(["scontrol", "show", "config"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pass
    dt = time.perf_counter() - t
    print(f"# scontrol show config (the Slurm plugin's probe in every snakemake call): {dt:.2f} s",
          flush=True)
    if dt > 1:
        print("# WARNING: every snakemake call below pays that probe. Start the controller "
              "(scripts/slurm/start.sh), or stop it with scripts/slurm/stop.sh, for a "
              "meaningful figure.", flush=True)


JOB_START = re.compile(r"^(local)?rule \w+:$")


def dag_jobs(out: str) -> list[str]:
    """The jobs a dry run lists, each as its text without the jobid (a numbering) and with the
    files of its `reason:` sorted (Snakemake prints a set), sorted: equal lists are the same
    DAG (each job's rule, input, output, log, wildcards, threads, resources)."""
    jobs, cur = [], None
    for line in out.splitlines():
        if JOB_START.match(line):
            cur = [line]
            jobs.append(cur)
        elif cur is not None and line.startswith("    "):
            key, _, value = line.strip().partition(": ")
            if key == "jobid":
                continue
            if key == "reason":  # "Label: file, file; Label: file"
                value = "; ".join(sorted(label + ": " + ", ".join(sorted(files.split(", ")))
                                         for label, _, files in (part.partition(": ")
                                                                 for part in value.split("; "))))
            cur.append(f"{key}: {value}")
        else:
            cur = None
    return sorted("\n".join(j) for j in jobs)


def summary_lines(out: str) -> list[str]:
    """`snakemake --summary` rows (output file, date, rule, log, status, plan), sorted."""
    return sorted(ln for ln in out.splitlines() if "\t" in ln)


def same_dag(ws: Path, other: Path) -> bool:
    """Do this checkout and `other` plan the same DAG on `ws`? Prints the evidence."""
    same = True
    for argv, parse, what in ((["-n", "all"], dag_jobs, "jobs of `snakemake -n all`"),
                              (["-n", "all", "--summary"], summary_lines,
                               "rows of `snakemake -n all --summary`")):
        lists = []
        for checkout in (other, ROOT):
            _, _, proc = snakemake_timed(ws, *argv, checkout=checkout)
            if proc.returncode != 0:
                print(proc.stdout[-3000:], proc.stderr[-3000:])
                raise SystemExit(f"snakemake {' '.join(argv)} failed from {checkout}")
            lists.append(parse(proc.stdout + proc.stderr))
        equal = lists[0] == lists[1] and bool(lists[0])
        same &= equal
        print(f"# DAG: {len(lists[1])} {what} here, {len(lists[0])} from {other}: "
              f"{'identical' if equal else 'DIFFERENT'}", flush=True)
        if not equal:
            diff = sorted(set(lists[0]) ^ set(lists[1]))[:3]
            print("#   first differences:\n" + "\n".join(diff))
    return same


def compare(ws: Path, other: Path, repeat: int) -> bool:
    """Interleaved A-B-B-A timings of `snakemake -n all` from `other` and from this checkout."""
    if not (other / ".venv" / "bin" / "snakemake").is_file():
        raise SystemExit(f"--compare {other}: no {other}/.venv/bin/snakemake (each checkout "
                         "runs its own aifb)")
    same = same_dag(ws, other)
    figures: dict[str, list[tuple[float, float]]] = {"other": [], "this": []}
    for r in range(repeat):
        order = (("other", other), ("this", ROOT)) if r % 2 == 0 else (("this", ROOT), ("other", other))
        for name, checkout in order:
            wall, cpu, proc = snakemake_timed(ws, "-n", "all", checkout=checkout)
            if proc.returncode != 0:
                raise SystemExit(f"snakemake -n all failed from {checkout}")
            figures[name].append((wall, cpu))
            print(f"run {r + 1}: {checkout}: snakemake -n all: {wall:.2f} s wall, {cpu:.2f} s CPU "
                  f"(load average {os.getloadavg()[0]:.2f})", flush=True)
    # The least-disturbed run (min) and the median: on a loaded machine the spread is wide.
    stat = {k: {"min": (min(w for w, _ in v), min(c for _, c in v)),
                "median": (sorted(w for w, _ in v)[len(v) // 2], sorted(c for _, c in v)[len(v) // 2])}
            for k, v in figures.items()}
    for k, label in (("other", str(other)), ("this", str(ROOT))):
        print(f"{label}: min {stat[k]['min'][0]:.2f} s wall, {stat[k]['min'][1]:.2f} s CPU; median "
              f"{stat[k]['median'][0]:.2f} s wall, {stat[k]['median'][1]:.2f} s CPU ({repeat} runs)")
    for how in ("min", "median"):
        wall, cpu = (stat["this"][how][i] / stat["other"][how][i] for i in (0, 1))
        print(f"this / other ({how}): wall {wall:.2f}, CPU {cpu:.2f} ({100 * (1 - cpu):.0f} % less CPU)")
    return same


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ids", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=10.0)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--no-profile", action="store_true", help="skip the --profile-parse run")
    ap.add_argument("--compare", type=Path, metavar="OTHER",
                    help="another checkout (with .venv): same DAG? then both timed, interleaved")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="aifb-dry-"))
    try:
        ws = make_workspace(base)
        t = time.perf_counter()
        ids = register(ws, args.ids)
        print(f"# registered {len(ids)} IDs ({ids[0]} .. {ids[-1]}) in "
              f"{time.perf_counter() - t:.1f} s; workspace {ws}")
        print(f"# load average {os.getloadavg()[0]:.2f} at start", flush=True)
        slurm_probe_cost()
        if args.compare:
            same = compare(ws, args.compare.resolve(), args.repeat)
            print(f"load average now {os.getloadavg()[0]:.2f}")
            return 0 if same else 1
        targets = [f"reports/{i}/report.md" for i in ids]
        results: dict[str, list[float]] = {"all": [], "targets": []}
        for r in range(args.repeat):
            for name, argv in (("all", ["-n", "all"]), ("targets", ["-n", *targets])):
                dt, proc = snakemake(ws, *argv)
                if proc.returncode != 0:
                    print(proc.stdout[-3000:], proc.stderr[-3000:])
                    raise SystemExit(f"snakemake {name} failed ({proc.returncode})")
                results[name].append(dt)
                print(f"run {r + 1}: snakemake -n {name if name == 'all' else f'<{len(ids)} report targets>'}: "
                      f"{dt:.2f} s ({jobs_line(proc.stdout + proc.stderr)})", flush=True)
        if not args.no_profile:
            profile_parse(ws)
        worst = max(max(v) for v in results.values())
        print(f"worst: {worst:.2f} s (limit {args.max_seconds:g}); load average now "
              f"{os.getloadavg()[0]:.2f}")
        failed = worst > args.max_seconds
        print("LIMIT MISSED" if failed else "limit met")
        return 1 if (failed and args.check) else 0
    finally:
        if args.keep:
            print(f"# kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def profile_parse(ws: Path) -> None:
    """Where the planning time goes: cProfile of `snakemake -n all` in a child process, with
    the job listing a user gets (about a third of the time: each job's resources and command)."""
    code = (
        "import cProfile, pstats, sys, io\n"
        "from snakemake.cli import main\n"
        "pr = cProfile.Profile(); pr.enable()\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    pass\n"
        "pr.disable()\n"
        "s = io.StringIO(); st = pstats.Stats(pr, stream=s)\n"
        "st.sort_stats('cumulative').print_stats(r'aifb|common.smk', 8)\n"
        "st.sort_stats('tottime').print_stats(10)\n"
        "print(s.getvalue(), file=sys.stderr)\n")
    env = dict(os.environ, AIFB_ROOT=str(ws))
    proc = subprocess.run([sys.executable, "-c", code, "--snakefile", str(ROOT / "Snakefile"),
                           "--directory", str(ws), "--profile", str(ROOT / "profiles" / "local"),
                           "-n", "all"], cwd=ws, env=env, capture_output=True,
                          text=True, timeout=900)
    err = proc.stderr
    k = err.find("function calls")
    text = err[err.rfind("\n", 0, k) + 1:] if k >= 0 else err[-4000:]
    print("# cProfile of `snakemake -n all` in one process (under the profiler: slower than above):")
    print("#   first the aifb / common.smk functions by cumulative time, then the top 10 by own time")
    for ln in text.splitlines():
        if ln.strip() and not ln.startswith("   Ordered by") and "List reduced" not in ln:
            print("#   " + ln.strip()[:160])


if __name__ == "__main__":
    sys.exit(main())
