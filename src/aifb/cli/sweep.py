"""`aifb sweep`: build the grid sweeps of config/config.yaml through Snakemake and run its
capacity searches step by step, then rebuild the index and say where the reports are."""

from __future__ import annotations

import argparse

import yaml

from aifb.cli.common import err
from aifb.errors import AifbError
from aifb.jsonio import read_json
from aifb.paths import work_root
from aifb.workflow.capacity import run_capacity
from aifb.workflow.console import Console, shown_path
from aifb.workflow.snakemake import run_snakemake
from aifb.workflow.sweep import resolve_all


def _capacity_specs(names: list[str]) -> dict:
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
    console = Console(work_root(), verbose=args.verbose)
    rc = 0
    if grid_names or not args.names:
        rc = _grid_sweeps(args, grid_names, console)
    if args.dry_run:
        for name, spec in capacity.items():
            print(f"{name}: capacity search of {spec['param']} from {spec['start']} to "
                  f"{spec['max']} (steps are chosen as it runs; nothing to show in advance)")
        return rc
    for name, spec in capacity.items():
        res = run_capacity(name, spec, root=work_root(), profile=args.profile, log=err,
                           remeasure=args.remeasure, console=console)
        print(f"{name}: {res['headline']}")
        print(f"  capacity report: {work_root() / res['report_dir'] / 'report.md'}")
        for st in res["steps"]:
            print(f"  step {st['step']}: {st['level']} -> {st['benchmark_id']} {st['verdict']}")
    if capacity:
        rc = run_snakemake(["index"], args.profile, ["--forcerun", "index"], console=console) or rc
    return rc


def _grid_sweeps(args, names: list[str], console: Console) -> int:
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
    rc = run_snakemake(["sweep_all"], args.profile, extra, dry_run=args.dry_run, console=console)
    if args.dry_run:
        return rc
    rc = run_snakemake(["index"], args.profile, ["--forcerun", "index"], console=console) or rc
    _print_sweep_outcomes(args.names, console)
    return rc


def _print_sweep_outcomes(names: list[str], console: Console) -> None:
    config = yaml.safe_load((work_root() / "config" / "config.yaml").read_text(encoding="utf-8"))
    for sw in resolve_all(config, root=work_root(), allocate=False, only=names or None):
        if not sw.runnable:
            print(f"{sw.name}: not built ({sw.skip_reason})")
            continue
        report = work_root() / sw.report_dir / "report.json"
        for bid in sw.ids:   # those the progress display did not show (--verbose, built before)
            console.result(bid)
        if not report.is_file():
            print(f"{sw.name}: no sweep report (see the Snakemake log)")
            continue
        print(f"{sw.name}: {read_json(report).get('headline', '')}")
        print(f"  sweep report: {shown_path(report.with_name('report.md'))}")
    index = work_root() / "reports" / "dataset_index.md"
    if index.is_file():
        print(f"dataset index: {shown_path(index)}")
