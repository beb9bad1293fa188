# The dataset index: a generated twin of the seed document, and the offline HTML site
# (docs/site.md), from the files on disk.


rule index:
    input:
        existing_run_files,
    output:
        md=config["index"]["markdown"],
        json=config["index"]["json"],
        # the offline HTML site (aifb.reporting.site): its other pages are written beside it
        site=config["index"]["site"],
    params:
        sweeps=index_sweeps,
    log:
        "reports/logs/index.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/index.py"
