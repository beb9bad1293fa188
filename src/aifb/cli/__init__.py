"""The `aifb` command line: validate recipes, run benchmarks through Snakemake, rebuild
summaries and reports from files, show and clean up.

Every command and option, each with a one-line example, is in EXAMPLES below (what `aifb
--help` and `aifb COMMAND --help` print).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from aifb import __version__

from aifb.workflow import registry, trust
from aifb.errors import AifbError
from aifb.jsonio import read_json
from aifb.paths import code_root, work_root
from aifb.workflow.recipe import load_recipe


def _err(msg: str) -> None:
    print(f"aifb: {msg}", file=sys.stderr)


def cmd_validate(args) -> int:
    from aifb.services import available_kinds

    bad = 0
    for path in args.recipes:
        try:
            recipe = load_recipe(path, args.set)
        except AifbError as exc:
            _err(str(exc))
            bad += 1
            continue
        kind = recipe["service"]["kind"]
        note = "" if kind in available_kinds() else f" (service kind {kind!r} is not implemented yet)"
        print(f"{path}: valid{note}")
    return 1 if bad else 0


def snakemake_argv(targets: list[str], profile: str, extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(code_root() / "Snakefile"),
            "--directory", str(work_root()), "--profile", str(code_root() / "profiles" / profile),
            *targets, *(extra or [])]


def run_snakemake(targets: list[str], profile: str, extra: list[str] | None = None,
                  dry_run: bool = False) -> int:
    argv = snakemake_argv(targets, profile, [*(extra or []), *(["--dry-run"] if dry_run else [])])
    print("aifb: " + shlex.join(argv[2:]), file=sys.stderr)
    env = dict(os.environ, AIFB_INVOCATION=shlex.join(sys.argv))
    proc = subprocess.Popen(argv, cwd=work_root(), env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # The terminal sent SIGINT to Snakemake too; let it stop its jobs (and their services).
        try:
            return proc.wait(timeout=60)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            proc.send_signal(signal.SIGTERM)
            return proc.wait()


def _finish(benchmark_ids: list[str]) -> int:
    worst = 0
    for bid in benchmark_ids:
        run_path = work_root() / "results" / bid / "run.json"
        if not run_path.is_file():
            _err(f"{bid}: no run.json was written (see the Snakemake output above)")
            worst = 1
            continue
        run = read_json(run_path)
        report = work_root() / "reports" / bid / "report.md"
        status = run.get("status")
        line = f"{bid}: {status}"
        if run.get("reason"):
            line += f" - {run['reason']}"
        print(line)
        if report.is_file():
            print(f"report: {report}")
        if status != "completed":
            worst = 1
    return worst


def cmd_run(args) -> int:
    from aifb.services import get_service

    if args.rerun:
        from aifb.workflow.rerun import prepare_rerun
        if args.set or args.recipe:
            _err("run --rerun: runs the recorded recipe unchanged (what makes it comparable with "
                 "the original), so it takes no --set and no RECIPE; to vary the recipe, run it "
                 "as a recipe file: aifb run RECIPE --set PATH=VALUE")
            return 2
        bid, _ = prepare_rerun(args.rerun, strict=args.strict, root=work_root(), log=_err,
                               dry_run=args.dry_run, trust_recipe=args.trust_recipe)
        if args.dry_run:
            print(f"dry run: would register {bid} as a rerun of {args.rerun}")
            return 0
    else:
        if not args.recipe:
            _err("run: give a RECIPE file, or --rerun ID")
            return 2
        recipe = load_recipe(args.recipe, args.set)
        if not trust.is_project_recipe(args.recipe):
            trust.check(recipe, origin=args.recipe, trusted=args.trust_recipe, log=_err)
        get_service(recipe["service"]["kind"])  # not implemented -> clear error, nothing started
        _check_target(recipe, args.profile)
        if args.dry_run:
            nxt = registry.predict_next(1, work_root())[0]
            print(f"dry run: would register {nxt} for {args.recipe}")
            return 0
        path = Path(args.recipe).resolve()
        rel = str(path.relative_to(work_root())) if path.is_relative_to(work_root()) else str(path)
        bid = registry.allocate(registry.make_entry(recipe, recipe_path=rel, overrides=args.set),
                                work_root())
    print(f"benchmark id: {bid}", flush=True)
    rc = run_snakemake([f"reports/{bid}/report.md"], args.profile, args.snakemake_args)
    result = _finish([bid])
    comparison = work_root() / "reports" / bid / "comparison.json"
    if args.rerun and comparison.is_file():
        print(read_json(comparison)["line"])
    return rc or result


def _check_target(recipe: dict, profile: str) -> None:
    """An unknown target is an error before anything is registered; a Slurm target without a
    Slurm client here is one too."""
    from aifb.slurm.commands import slurm_available
    from aifb.slurm.targets import get_target

    target = get_target(recipe.get("target", "local"), work_root())
    if target["executor"] == "slurm" and not recipe["service"].get("endpoint") and not slurm_available():
        raise AifbError(f"target {target['name']!r} runs services as Slurm jobs, but sbatch/squeue/"
                        "scancel are not on PATH here")
    if profile == "slurm" and not slurm_available():
        raise AifbError("--profile slurm needs a Slurm client (sbatch, squeue) on PATH")


def cmd_cleanup(args) -> int:
    from aifb.slurm.cleanup import cleanup

    n = cleanup(root=work_root(), dry_run=args.dry_run, everything=args.all,
                snakemake_root=work_root() if args.snakemake else None, named=args.jobs)
    if n and args.dry_run:
        print(f"{n} job(s) would be cancelled (run without --dry-run to cancel them)")
    return 0


def cmd_rerun(args) -> int:
    args.rerun, args.recipe, args.set, args.dry_run = args.benchmark_id, None, [], False
    return cmd_run(args)


def _capacity_specs(names: list[str]) -> dict:
    import yaml

    config = yaml.safe_load((work_root() / "config" / "config.yaml").read_text(encoding="utf-8"))
    sweeps = config.get("sweeps") or {}
    unknown = [n for n in names if n not in sweeps]
    if unknown:
        raise AifbError(f"sweep: no sweep named {', '.join(unknown)} in config/config.yaml")
    return {n: s for n, s in sweeps.items()
            if s.get("mode") == "capacity" and (not names or n in names)}


def cmd_sweep(args) -> int:
    capacity = _capacity_specs(args.names)
    grid_names = [n for n in args.names if n not in capacity]
    rc = 0
    if grid_names or not args.names:
        rc = _grid_sweeps(args, grid_names)
    if args.dry_run:
        for name, spec in capacity.items():
            print(f"{name}: capacity search of {spec['param']} from {spec['start']} to "
                  f"{spec['max']} (steps are chosen as it runs; nothing to show in advance)")
        return rc
    from aifb.workflow.capacity import run_capacity

    for name, spec in capacity.items():
        res = run_capacity(name, spec, root=work_root(), profile=args.profile, log=_err,
                           remeasure=args.remeasure)
        print(f"{name}: {res['headline']}")
        print(f"  capacity report: {work_root() / res['report_dir'] / 'report.md'}")
        for st in res["steps"]:
            print(f"  step {st['step']}: {st['level']} -> {st['benchmark_id']} {st['verdict']}")
    if capacity:
        rc = run_snakemake(["index"], args.profile, ["--forcerun", "index"]) or rc
    return rc


def _grid_sweeps(args, names: list[str]) -> int:
    args = argparse.Namespace(**{**vars(args), "names": names})
    extra = list(args.snakemake_args or [])
    config = []  # one --config flag: a second one would replace the first
    if args.names:
        config.append(f"only={args.names[0]}" if len(args.names) == 1 else
                      "only=[" + ",".join(args.names) + "]")
    if args.remeasure:
        config.append("remeasure=true")
    if config:
        extra += ["--config", *config]
    rc = run_snakemake(["sweep_all"], args.profile, extra, dry_run=args.dry_run)
    if args.dry_run:
        return rc
    rc = run_snakemake(["index"], args.profile, ["--forcerun", "index"]) or rc
    _print_sweep_outcomes(args.names)
    return rc


def _print_sweep_outcomes(names: list[str]) -> None:
    import yaml

    from aifb.workflow.sweep import resolve_all

    config = yaml.safe_load((work_root() / "config" / "config.yaml").read_text(encoding="utf-8"))
    for sw in resolve_all(config, root=work_root(), allocate=False, only=names or None):
        if not sw.runnable:
            print(f"{sw.name}: not built ({sw.skip_reason})")
            continue
        report = work_root() / sw.report_dir / "report.json"
        if not report.is_file():
            print(f"{sw.name}: no sweep report (see the Snakemake output above)")
            continue
        print(f"{sw.name}: {read_json(report).get('headline', '')}")
        print(f"  sweep report: {report.with_name('report.md')}")
        for bid in sw.ids:
            print(f"  {bid}: {work_root() / 'reports' / bid / 'report.md'}")
    index = work_root() / "reports" / "dataset_index.md"
    if index.is_file():
        print(f"dataset index: {index}")


def cmd_index(args) -> int:
    return run_snakemake(["index"], args.profile, ["--forcerun", "index", *(args.snakemake_args or [])])


def cmd_summarize(args) -> int:
    from aifb.analysis.summary import write_summary
    run_dir = Path(args.run_dir)
    out = Path(args.output) if args.output else run_dir / "summary.json"
    write_summary(run_dir, out)
    print(out)
    return 0


def cmd_report(args) -> int:
    from aifb.reporting.report import build_report
    build_report(Path(args.run_dir), Path(args.report_dir))
    print(Path(args.report_dir) / "report.md")
    return 0


def cmd_show(args) -> int:
    entry = registry.get(args.benchmark_id, work_root())
    run_path = work_root() / "results" / args.benchmark_id / "run.json"
    print(f"{args.benchmark_id}: {entry['recipe'].get('name')} ({entry.get('recipe_path')})")
    if run_path.is_file():
        run = read_json(run_path)
        if not isinstance(run, dict):
            raise AifbError(f"{run_path}: not a run record (a JSON object); corrupt?")
        print(f"status: {run.get('status')}" + (f" - {run['reason']}" if run.get("reason") else ""))
    else:
        print("status: registered, not run")
    return 0


def cmd_repair(args) -> int:
    print(registry.repair(args.benchmark_id, work_root()))
    return 0


# One line per option (and per command): `aifb --help` shows each command's first line, `aifb
# COMMAND --help` all of its own. tests/test_cli_help.py checks every option has one here and
# that the README's command table lists the same options.
EXAMPLES = {
    "validate": [
        ("aifb validate recipes/*.yaml", "check every recipe"),
        ("aifb validate recipes/recipe_redis_1client.yaml --set load.concurrency=32",
         "check a recipe with an override"),
    ],
    "run": [
        ("aifb run recipes/recipe_redis_1client.yaml", "run a recipe, locally, to its report"),
        ("aifb run recipes/recipe_redis_1client.yaml --set load.concurrency=32 --set load.duration=5s",
         "override fields by their dotted path"),
        ("aifb run recipes/recipe_redis_1client.yaml --set load.duration=null --set load.requests=10000",
         "remove a field (=null): requests instead of a duration"),
        ("aifb run recipes/recipe_redis_1client.yaml --dry-run", "validate and show the ID, run nothing"),
        ("aifb run recipes/recipe_redis_1client.yaml --profile slurm --set target=meluxina",
         "run on a Slurm cluster"),
        ("aifb run --rerun BM-20260109-001 --strict", "re-run; a recipe or commit mismatch is an error"),
        ("aifb run ~/their_recipe.yaml --trust-recipe",
         "run a recipe from outside recipes/ that starts programs or reads secrets"),
        ("aifb run recipes/recipe_redis_1client.yaml --snakemake-args --quiet",
         "pass the rest of the line to Snakemake"),
    ],
    "rerun": [
        ("aifb rerun BM-20260109-001", "re-run a benchmark under a new ID and compare"),
        ("aifb rerun BM-20260109-001 --strict", "a recipe hash or git commit mismatch stops it"),
        ("aifb rerun BM-20260109-001 --profile slurm", "re-run it through profiles/slurm"),
        ("aifb rerun BM-20260109-001 --trust-recipe", "re-run a bundle someone else made"),
        ("aifb rerun BM-20260109-001 --snakemake-args --quiet", "pass the rest to Snakemake"),
    ],
    "sweep": [
        ("aifb sweep redis_sweep", "build one sweep of config/config.yaml, then the index"),
        ("aifb sweep", "build every implemented sweep"),
        ("aifb sweep redis_sweep --remeasure", "measure every point again under new IDs"),
        ("aifb sweep --dry-run", "show the DAG, change nothing"),
        ("aifb sweep redis_sweep --profile slurm", "run the sweep's jobs on Slurm"),
        ("aifb sweep redis_sweep --snakemake-args --quiet", "pass the rest to Snakemake"),
    ],
    "index": [
        ("aifb index", "rebuild reports/dataset_index.md and reports/index.json"),
        ("aifb index --profile slurm", "through profiles/slurm"),
        ("aifb index --snakemake-args --quiet", "pass the rest to Snakemake"),
    ],
    "summarize": [
        ("aifb summarize results/BM-20260109-001", "rewrite results/<id>/summary.json"),
        ("aifb summarize results/BM-20260109-001 --output /tmp/summary.json", "write it elsewhere"),
    ],
    "report": [
        ("aifb report results/BM-20260109-001 /tmp/report", "build report.md, report.json, plots/"),
    ],
    "cleanup": [
        ("aifb cleanup --dry-run", "say which Slurm jobs would be cancelled"),
        ("aifb cleanup", "cancel service/client jobs of finished or dead benchmarks"),
        ("aifb cleanup --all", "also those of benchmarks still in progress"),
        ("aifb cleanup --snakemake", "also Snakemake's own jobs here (when no Snakemake runs)"),
        ("aifb cleanup 12345 BM-20260109-001", "cancel exactly these jobs, even if their owner lives"),
    ],
    "show": [
        ("aifb show BM-20260109-001", "what an ID is and where it stands"),
    ],
    "repair": [
        ("aifb repair BM-20260109-001", "rebuild a corrupt registry entry from run.json, or retire it"),
    ],
}


def _examples(lines: list[tuple[str, str]]) -> str:
    width = max(len(cmd) for cmd, _ in lines)
    if width > 60:  # long commands: the explanation on the line below
        return "examples:\n" + "\n".join(f"  {cmd}\n      {what}" for cmd, what in lines)
    return "examples:\n" + "\n".join(f"  {cmd:<{width}}  # {what}" for cmd, what in lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aifb", description=__doc__.split("\n\n")[0],
        epilog=_examples([EXAMPLES[c][0] for c in EXAMPLES]) + "\n\n`aifb COMMAND --help`: "
        "every option of a command, each with an example.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"aifb {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, epilog=_examples(EXAMPLES[name]),
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    set_help = ("override a recipe field by its dotted path (repeatable); PATH=null removes "
                "the field")
    v = command("validate", "check recipes against the recipe schema")
    v.add_argument("recipes", nargs="+", metavar="RECIPE")
    v.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help=set_help)
    v.set_defaults(func=cmd_validate)

    def add_run_opts(sp, strict: bool = False, trust_opt: bool = False):
        sp.add_argument("--profile", default="local", choices=["local", "slurm"],
                        help="Snakemake profile under profiles/ (default: local)")
        if strict:
            sp.add_argument("--strict", action="store_true",
                            help="rerun: a recipe hash or git commit mismatch is an error, "
                                 "not a warning")
        if trust_opt:
            sp.add_argument("--trust-recipe", action="store_true",
                            help="run a recipe from outside recipes/ (or a bundle's) even though "
                                 "it starts programs, reads secrets or reaches other machines (it "
                                 "lists what, and refuses without this flag)")
        sp.add_argument("--snakemake-args", nargs=argparse.REMAINDER, default=[],
                        help="everything after this is passed to Snakemake")

    r = command("run", "register a benchmark ID for a recipe and run it to its report")
    r.add_argument("recipe", nargs="?", metavar="RECIPE")
    r.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help=set_help)
    r.add_argument("--rerun", metavar="ID", help="re-run a benchmark from its results/<id>/run.json")
    r.add_argument("-n", "--dry-run", action="store_true", help="validate and show, change nothing")
    add_run_opts(r, strict=True, trust_opt=True)
    r.set_defaults(func=cmd_run)

    rr = command("rerun", "re-run a benchmark from its run.json and compare")
    rr.add_argument("benchmark_id", metavar="ID")
    add_run_opts(rr, strict=True, trust_opt=True)
    rr.set_defaults(func=cmd_rerun)

    s = command("sweep", "build sweeps declared in config/config.yaml (default: all), then the index")
    s.add_argument("names", nargs="*", metavar="NAME")
    s.add_argument("--remeasure", action="store_true",
                   help="allocate new IDs and measure every point again")
    s.add_argument("-n", "--dry-run", action="store_true", help="show the DAG, change nothing")
    add_run_opts(s)
    s.set_defaults(func=cmd_sweep)

    i = command("index", "rebuild the dataset index from the files on disk")
    add_run_opts(i)
    i.set_defaults(func=cmd_index)

    sm = command("summarize", "(re)compute summary.json from a run directory")
    sm.add_argument("run_dir", metavar="RUN_DIR")
    sm.add_argument("-o", "--output", metavar="FILE", help="where to write (default: RUN_DIR/summary.json)")
    sm.set_defaults(func=cmd_summarize)

    rp = command("report", "(re)build a report from a run directory")
    rp.add_argument("run_dir", metavar="RUN_DIR")
    rp.add_argument("report_dir", metavar="REPORT_DIR")
    rp.set_defaults(func=cmd_report)

    c = command("cleanup", "cancel Slurm jobs this work root's benchmarks left behind "
                           "(comment aifb:<id> owner=... root=<work root>)")
    c.add_argument("jobs", nargs="*", metavar="JOBID|ID",
                   help="cancel exactly these jobs of ours (Slurm job IDs, or benchmark IDs), "
                        "even when their owner is alive")
    c.add_argument("-n", "--dry-run", action="store_true", help="say what would be cancelled")
    c.add_argument("--all", action="store_true",
                   help="also cancel jobs whose owner cannot be checked from here (a process "
                        "on another host); a job whose owner is alive is cancelled only by name")
    c.add_argument("--snakemake", action="store_true",
                   help="also cancel Snakemake's own jobs for this work root (only when no "
                        "Snakemake runs here)")
    c.set_defaults(func=cmd_cleanup)

    sh = command("show", "what a benchmark ID is and where it stands")
    sh.add_argument("benchmark_id", metavar="ID")
    sh.set_defaults(func=cmd_show)

    rep = command("repair", "repair a corrupt registry entry: "
                  + registry.REPAIR_TEXT.replace("<id>", "ID"))
    rep.add_argument("benchmark_id", metavar="ID")
    rep.set_defaults(func=cmd_repair)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AifbError as exc:
        _err(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
