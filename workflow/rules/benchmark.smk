# Deploy the service, drive the load, record every request, tear the service down.


rule run_benchmark:
    input:
        registered_entry,
    output:
        run="results/{id}/run.json",
        records="results/{id}/requests.jsonl",
    log:
        "results/{id}/logs/benchmark.log",
    # At least two threads: the load generator and (locally) the service share them; on a 2-core
    # machine this also keeps other jobs from running beside a measurement. With
    # load.processes = P the client uses P cores (+ an idle coordinator): P + 1.
    threads: benchmark_threads
    resources:
        runtime=benchmark_runtime_min,
        mem_mb=2048,
    conda:
        "../../environment.yml"
    shell:
        step_command("run_benchmark")
