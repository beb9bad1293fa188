"""The shape of src/aifb, checked from its source text (docs/architecture.md describes it).

Every `import aifb...` and `from aifb... import` is read with the AST, including those inside
functions, so an import cycle cannot hide behind a function-level import. Checked:
  - no import cycle between aifb modules;
  - each import points to the importer's own layer or one it may use (LAYERS);
  - a function-level import of an aifb module only where FUNCTION_IMPORTS gives the reason;
  - no private name (`_x`) imported from, or read off, another aifb module;
  - no module over MAX_LINES lines.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

MAX_LINES = 800

# Which layers a layer may import (besides itself). A module's layer is its first package
# under aifb (aifb.load.engine -> "load"); a module directly under aifb is "base".
LAYERS: dict[str, set[str]] = {
    "base": set(),
    "clients": {"base"},
    "services": {"base", "clients"},
    "telemetry": {"base", "clients"},
    "load": {"base", "clients"},
    "slurm": {"base", "clients", "services", "telemetry", "load"},
    "analysis": {"base", "telemetry"},
    "reporting": {"base", "telemetry", "analysis"},
    "workflow": {"base", "clients", "services", "telemetry", "load", "slurm", "analysis",
                 "reporting"},
    "cli": {"base", "clients", "services", "telemetry", "load", "slurm", "analysis",
            "reporting", "workflow"},
}

# (importing module, imported module) -> why the import is inside a function.
_BARE_SAMPLER = ("the telemetry sampler imports only the standard library up front, so it runs "
                 "on a bare python3 beside a GPU service (scripts/gpu_telemetry_check.sh); a "
                 "source loads its protocol code when it is configured")
# Import costs measured with `/usr/bin/time python -c "import <module>"` on the 2-core machine:
# aifb.cli 0.50 s, aifb.workflow.recipe 0.36 s, aifb.analysis.summary (polars) 0.63 s,
# aifb.reporting.report / aifb.reporting.plots (altair, vl-convert) 1.25 s,
# aifb.clients.llm.prompts (aiohttp through the embeddings API list) 0.52 s.
FUNCTION_IMPORTS: dict[tuple[str, str], str] = {
    ("aifb.cli.compare", "aifb.workflow.compare"):
        "altair, vl-convert and polars for the plots: every other command would pay them",
    ("aifb.cli.report", "aifb.reporting.report"):
        "altair and vl-convert: every other command (and `aifb --help`) would pay ~0.8 s",
    ("aifb.cli.summarize", "aifb.analysis.summary"):
        "polars: every other command (and `aifb --help`) would pay it",
    ("aifb.reporting.sweep_plots", "aifb.reporting.plots"):
        "altair: the capacity search and the CLI import sweep_plots for its file names only",
    ("aifb.workflow.recipe", "aifb.clients.llm.prompts"):
        "aiohttp: every recipe check and every Snakemake parse would pay it for the one "
        "workload field (a trace file's path) that needs the LLM prompt code",
    # One command runs each per-benchmark workflow step; each step loads only its own layer.
    ("aifb.workflow.steps", "aifb.workflow.runner"):
        "the benchmark step: the summary and report steps would load the load engine and "
        "every service and client",
    ("aifb.workflow.steps", "aifb.analysis.summary"):
        "polars, for the summary step only",
    ("aifb.workflow.steps", "aifb.reporting.report"):
        "altair and vl-convert (~1.25 s), for the report step only: a benchmark job would "
        "load them before its measurement",
    ("aifb.workflow.steps", "aifb.workflow.rerun"):
        "a rerun's comparison (registry, recipe schemas: 0.19 s), for the report step only",
    ("aifb.telemetry.sources", "aifb.clients.redis"): _BARE_SAMPLER,
    ("aifb.telemetry.sources", "aifb.clients.postgres"): _BARE_SAMPLER,
}


@dataclass
class Module:
    name: str
    path: Path
    lines: int
    imports: list[tuple[str, int, bool]] = field(default_factory=list)  # (target, line, in_function)
    private: list[tuple[str, int]] = field(default_factory=list)         # ("aifb.x._y", line)


def _name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(known: set[str], base: str, names: list[str]) -> list[str]:
    """`from base import a, b`: each name that is a module is imported as itself, any other
    name comes from `base`."""
    out = []
    for n in names:
        out.append(f"{base}.{n}" if f"{base}.{n}" in known else base)
    return out


def _scan() -> dict[str, Module]:
    paths = sorted(SRC.rglob("*.py"))
    known = {_name(p) for p in paths}
    mods: dict[str, Module] = {}
    for p in paths:
        text = p.read_text()
        m = Module(_name(p), p, len(text.splitlines()))
        tree = ast.parse(text)
        aliases: dict[str, str] = {}   # local name -> aifb module it is bound to

        def visit(node, in_fn: bool):
            for ch in ast.iter_child_nodes(node):
                fn = in_fn or isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(ch, ast.Import):
                    for a in ch.names:
                        if a.name == "aifb" or a.name.startswith("aifb."):
                            m.imports.append((a.name, ch.lineno, in_fn))
                            aliases[a.asname or a.name] = a.name
                elif isinstance(ch, ast.ImportFrom) and ch.module and (
                        ch.module == "aifb" or ch.module.startswith("aifb.")):
                    assert ch.level == 0, f"{p}:{ch.lineno}: relative import"
                    names = [a.name for a in ch.names]
                    for t in _resolve(known, ch.module, names):
                        m.imports.append((t, ch.lineno, in_fn))
                    for a in ch.names:
                        full = f"{ch.module}.{a.name}"
                        if full in known:
                            aliases[a.asname or a.name] = full
                        elif a.name.startswith("_") and not a.name.startswith("__") \
                                and ch.module != m.name:
                            m.private.append((full, ch.lineno))
                elif (isinstance(ch, ast.Attribute) and isinstance(ch.value, ast.Name)
                      and ch.value.id in aliases and ch.attr.startswith("_")
                      and not ch.attr.startswith("__") and aliases[ch.value.id] != m.name):
                    m.private.append((f"{aliases[ch.value.id]}.{ch.attr}", ch.lineno))
                visit(ch, fn)

        visit(tree, False)
        m.imports = sorted(set(m.imports), key=lambda i: (i[1], i[0]))
        mods[m.name] = m
    return mods


MODULES = _scan()


def _layer(name: str) -> str:
    parts = name.split(".")
    if len(parts) < 2:
        return "base"
    return parts[1] if parts[1] in LAYERS else "base"


def _where(m: Module, line: int) -> str:
    return f"{m.path.relative_to(SRC.parent)}:{line}"


def test_the_scan_sees_the_package():
    # guards the other tests against passing on an empty or misread tree
    assert len(MODULES) > 50
    assert any(t.startswith("aifb.clients") for t, _, _ in MODULES["aifb.load.engine"].imports)


def test_no_import_cycles():
    graph = {n: sorted({t for t, _, _ in m.imports if t in MODULES and t != n})
             for n, m in MODULES.items()}
    # (a submodule that imports its own package, for a registry or constants, is an edge like
    # any other: a cycle only if the package's __init__ imports the submodule back)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strong(v):  # Tarjan, iterative enough for this graph's depth
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    assert not cycles, "import cycles (function-level imports count): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_imports_point_down_the_layers():
    bad = []
    for m in MODULES.values():
        src = _layer(m.name)
        for t, line, _ in m.imports:
            dst = _layer(t)
            if dst != src and dst not in LAYERS[src]:
                bad.append(f"{_where(m, line)}: {src} module {m.name} imports {dst} module {t}")
    assert not bad, "imports against the layering (docs/architecture.md):\n" + "\n".join(bad)


def test_function_level_imports_have_a_reason():
    bad = []
    seen = set()
    for m in MODULES.values():
        for t, line, in_fn in m.imports:
            if in_fn:
                seen.add((m.name, t))
                if (m.name, t) not in FUNCTION_IMPORTS:
                    bad.append(f"{_where(m, line)}: {m.name} imports {t} inside a function")
    stale = sorted(set(FUNCTION_IMPORTS) - seen)
    assert not bad, "function-level aifb imports without a reason in FUNCTION_IMPORTS:\n" + \
        "\n".join(bad)
    assert not stale, f"FUNCTION_IMPORTS entries no longer needed: {stale}"


def test_no_private_names_across_modules():
    bad = [f"{_where(m, line)}: {m.name} uses {full}"
           for m in MODULES.values() for full, line in m.private]
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_size(name):
    m = MODULES[name]
    assert m.lines <= MAX_LINES, f"{m.path.relative_to(SRC.parent)} has {m.lines} lines"
