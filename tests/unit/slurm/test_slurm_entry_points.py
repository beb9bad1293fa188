"""The Slurm layer's shape: it imports nothing of the layers above it (workflow, cli), not even
inside a function, and its two job entry points are real modules with a usage line."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import aifb.slurm

SLURM_DIR = Path(aifb.slurm.__file__).parent


def _aifb_imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("aifb")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aifb"):
            out.append((node.lineno, node.module))
    return out


@pytest.mark.parametrize("path", sorted(SLURM_DIR.glob("*.py")), ids=lambda p: p.name)
def test_slurm_modules_import_nothing_above_them(path):
    above = [(line, mod) for line, mod in _aifb_imports(path)
             if mod == "aifb.cli" or mod.startswith(("aifb.workflow", "aifb.cli."))]
    assert above == []


@pytest.mark.parametrize("module, usage", [
    ("aifb.slurm.client", "usage: python -m aifb.slurm.client RUN_DIR K"),
    ("aifb.slurm.service_job", "usage: python -m aifb.slurm.service_job RUN_DIR"),
])
def test_job_entry_points_are_modules(module, usage):
    out = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert usage in out.stderr
