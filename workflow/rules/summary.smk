# requests.jsonl -> summary.json (measure phase only, pooled percentiles, SLO verdict).


rule summarize:
    input:
        run="results/{id}/run.json",
        records="results/{id}/requests.jsonl",
    output:
        "results/{id}/summary.json",
    log:
        "results/{id}/logs/summarize.log",
    resources:
        mem_mb=2048,
    conda:
        "../../environment.yml"
    shell:
        step_command("summarize", "{input.run:q}", "{output:q}")
