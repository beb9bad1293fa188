# The dataset index: a generated twin of the seed document, from the files on disk.


rule index:
    input:
        existing_run_files,
    output:
        md=config["index"]["markdown"],
        json=config["index"]["json"],
    params:
        sweeps=lambda wildcards: [s.describe() | {"report_dir": s.report_dir if s.runnable else None, "skip_reason": s.skip_reason} for s in SWEEPS],
    log:
        "reports/logs/index.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/index.py"
