# The dataset index: a generated twin of the seed document, from the files on disk.


rule index:
    input:
        existing_run_files,
    output:
        md=config["index"]["markdown"],
        json=config["index"]["json"],
    params:
        sweeps=index_sweeps,
    log:
        "reports/logs/index.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/index.py"
