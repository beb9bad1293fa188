# The two commands of the README. Both set up everything first (scripts/install.sh).
.PHONY: install demo test lint

install:
	@scripts/install.sh

# The main job: a local Redis concurrency sweep (1, 2, 4 clients) under its SLO, with
# per-run reports, the sweep report and the dataset index.
demo: install
	.venv/bin/aifb sweep redis_sweep

# Installs every server the tests use (PostgreSQL, ChromaDB, SeaweedFS, llama.cpp: the first
# run builds llama.cpp, ~7 min), then runs the whole suite against real servers, with the test
# Slurm started for the run when none answers and we are root (scripts/test.sh).
test:
	@scripts/install.sh --all
	@scripts/test.sh -q

lint: install
	.venv/bin/snakemake --lint
