"""The `aifb` command line: validate recipes, run benchmarks through Snakemake, rebuild
summaries and reports from files, show and clean up.

Every command and option, each with a one-line example, is in EXAMPLES below (what `aifb
--help` and `aifb COMMAND --help` print).
"""

from __future__ import annotations

import argparse
import sys

from aifb import __version__
from aifb.cli.cleanup import cmd_cleanup
from aifb.cli.compare import cmd_compare
from aifb.cli.common import err
from aifb.cli.index import cmd_index
from aifb.cli.repair import cmd_repair
from aifb.cli.report import cmd_report
from aifb.cli.rerun import cmd_rerun
from aifb.cli.run import cmd_run
from aifb.cli.show import cmd_show
from aifb.cli.summarize import cmd_summarize
from aifb.cli.sweep import cmd_sweep
from aifb.cli.validate import cmd_validate
from aifb.errors import AifbError
from aifb.workflow import registry


# One line per option (and per command): `aifb --help` shows each command's first line, `aifb
# COMMAND --help` all of its own. tests/unit/cli/test_cli_help.py checks every option has one
# here and that the README's command table lists the same options.
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
        ("aifb run recipes/recipe_redis_1client.yaml --verbose",
         "Snakemake's own output on the terminal, not in results/logs/snakemake-*.log"),
        ("aifb run recipes/recipe_redis_1client.yaml --snakemake-args --quiet",
         "pass the rest of the line to Snakemake"),
    ],
    "rerun": [
        ("aifb rerun BM-20260109-001", "re-run a benchmark under a new ID and compare"),
        ("aifb rerun BM-20260109-001 --strict", "a recipe hash or git commit mismatch stops it"),
        ("aifb rerun BM-20260109-001 --profile slurm", "re-run it through profiles/slurm"),
        ("aifb rerun BM-20260109-001 --trust-recipe", "re-run a bundle someone else made"),
        ("aifb rerun BM-20260109-001 --verbose", "show Snakemake's own output, not only the result"),
        ("aifb rerun BM-20260109-001 --snakemake-args --quiet", "pass the rest to Snakemake"),
    ],
    "sweep": [
        ("aifb sweep redis_sweep", "build one sweep of config/config.yaml, then the index"),
        ("aifb sweep", "build every implemented sweep"),
        ("aifb sweep redis_sweep --remeasure", "measure every point again under new IDs"),
        ("aifb sweep --dry-run", "show the DAG, change nothing"),
        ("aifb sweep redis_sweep --profile slurm", "run the sweep's jobs on Slurm"),
        ("aifb sweep redis_sweep --verbose", "Snakemake's own output here, not in its log file"),
        ("aifb sweep redis_sweep --snakemake-args --quiet", "pass the rest to Snakemake"),
    ],
    "index": [
        ("aifb index", "rebuild reports/dataset_index.md, reports/index.json and the site reports/site/"),
        ("aifb index --profile slurm", "through profiles/slurm"),
        ("aifb index --verbose", "show Snakemake's own output"),
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
    "compare": [
        ("aifb compare BM-20260109-001 BM-20260109-002", "two runs side by side, deltas vs the first"),
        ("aifb compare redis_sweep", "the levels of one sweep side by side"),
        ("aifb compare redis_sweep redis_sweep_v2", "two sweeps, level by level"),
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
        sp.add_argument("-v", "--verbose", action="store_true",
                        help="show Snakemake's own output on the terminal (by default it goes to "
                             "results/logs/snakemake-<time>-<pid>.log, whose path is printed, and "
                             "the terminal shows one line per benchmark)")
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

    cm = command("compare", "runs side by side: headline metrics, deltas, noise, recipe and "
                            "environment differences; writes reports/compare_*.md/.json + plots")
    cm.add_argument("names", nargs="+", metavar="ID|SWEEP")
    cm.set_defaults(func=cmd_compare)

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
        err(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
