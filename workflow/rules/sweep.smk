# One report per sweep: throughput and latency against the swept level, the SLO verdict of
# each level, and the best level that meets it.


rule sweep_report:
    input:
        summaries=sweep_summaries,
        reports=sweep_point_reports,
    output:
        md="reports/sweep_{first}_{last}/report.md",
        json="reports/sweep_{first}_{last}/report.json",
        thr=report(
            "reports/sweep_{first}_{last}/plots/throughput_vs_level.png",
            caption="../report/sweep_throughput.rst",
            category="Sweeps",
        ),
        lat=report(
            "reports/sweep_{first}_{last}/plots/latency_vs_level.png",
            caption="../report/sweep_latency.rst",
            category="Sweeps",
        ),
        err=report(
            "reports/sweep_{first}_{last}/plots/error_rate_vs_level.png",
            caption="../report/sweep_errors.rst",
            category="Sweeps",
        ),
    params:
        sweep=lambda wildcards: sweep_of(wildcards).describe(),
    log:
        "reports/logs/sweep_{first}_{last}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/sweep_report.py"
