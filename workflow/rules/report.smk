# summary.json + requests.jsonl -> reports/<id>/report.{md,json} and plots.


rule report:
    input:
        run="results/{id}/run.json",
        records="results/{id}/requests.jsonl",
        summary="results/{id}/summary.json",
        original=rerun_original_summary,
    output:
        md="reports/{id}/report.md",
        json="reports/{id}/report.json",
        cdf=report(
            "reports/{id}/plots/latency_cdf.png",
            caption="../report/latency_cdf.rst",
            category="Runs",
            subcategory="{id}",
        ),
        lat=report(
            "reports/{id}/plots/latency_over_time.png",
            caption="../report/latency_over_time.rst",
            category="Runs",
            subcategory="{id}",
        ),
        thr=report(
            "reports/{id}/plots/throughput_over_time.png",
            caption="../report/throughput_over_time.rst",
            category="Runs",
            subcategory="{id}",
        ),
    log:
        "results/{id}/logs/report.log",
    resources:
        mem_mb=2048,
    conda:
        "../../environment.yml"
    shell:
        step_command("report", "{input.run:q}", "{output.md:q}")
