# AI Factory Bench: recipes -> deploy -> load -> summary -> report -> sweep reports -> index.
#
#   snakemake --profile profiles/local reports/<id>/report.md   one registered benchmark
#   snakemake --profile profiles/local sweep_all                 every sweep in config/config.yaml
#   snakemake --profile profiles/local index                     the dataset index
#
# Benchmark IDs are allocated by `aifb run` (or, for sweep points, when a sweep is built);
# see workflow/rules/common.smk.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/benchmark.smk"
include: "workflow/rules/summary.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/sweep.smk"
include: "workflow/rules/index.smk"


# Every registered run and every implemented sweep. The index reads what is on disk, so it is
# its own target, built after these (`aifb sweep` does both).
rule all:
    input:
        all_run_reports,
        all_sweep_reports,
    default_target: True


rule sweep_all:
    input:
        all_sweep_reports,
