"""What the Snakemake workflow orchestrates (layer `workflow`, docs/architecture.md): recipes and
their trust, benchmark IDs (registry), one run start to finish (runner), sweep planning, the SLO
capacity search, reruns, the dataset index's rows, and calling Snakemake (snakemake)."""
