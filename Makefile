# The two commands of the README. Both set up everything first (scripts/install.sh).
.PHONY: install demo test lint

install:
	@scripts/install.sh

# The main job: a local Redis concurrency sweep (1, 2, 4 clients) under its SLO, with
# per-run reports, the sweep report and the dataset index.
demo: install
	.venv/bin/aifb sweep redis_sweep

test: install
	.venv/bin/python -m pytest -q

lint: install
	.venv/bin/snakemake --lint
