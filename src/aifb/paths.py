"""Where things live.

code_root: the checkout holding the Snakefile, workflow/ (rules, scripts, schemas) and
profiles/; found from this file (the library is installed editable from it).
work_root: where config/, recipes/, results/ and reports/ are read and written; the code root
unless AIFB_ROOT names another directory (e.g. a shared project directory on a cluster, or a
test's temporary directory). Snakemake shims pass their working directory explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path

# A benchmark ID (aifb.workflow.registry allocates them): the name of results/<id>/. Here, below
# the registry, because aifb.slurm.cleanup knows our Slurm jobs by it too.
ID_PATTERN = r"BM-\d{8}-\d{3,}"


def code_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "Snakefile").is_file() and (parent / "workflow" / "schemas").is_dir():
            return parent
    raise RuntimeError(f"cannot find the aifb checkout (Snakefile, workflow/schemas) above {here}")


def work_root() -> Path:
    env = os.environ.get("AIFB_ROOT")
    return Path(env).resolve() if env else code_root()


def schema_dir() -> Path:
    return code_root() / "workflow" / "schemas"
