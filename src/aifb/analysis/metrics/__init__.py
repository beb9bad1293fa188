"""Service-specific metrics beside the common ones: one module per family (llm, vector, ...).

A kind's family comes from its own schema (aifb.kinds: `x-aifb-kind.family`), so a new kind of
an existing family gets that family's metrics without an edit here; `run_family(run)` says which.

summary.py and report.py call every module here whose `applies(run)` is true; a module may
define any of:

    applies(run: dict) -> bool                      # e.g. run_family(run) == "llm"
    summarize(run, records_path, window_s) -> dict  # keys merged into summary.json (e.g. {"llm": {...}})
    definitions() -> dict                           # metric name -> sentence, for the reports
    markdown(summary) -> list[str]                  # lines of a report section

A family's plots and sweep section are drawn by the module of the same name in
aifb.reporting.family_plots. Like summary and report, these read files only; they never import
clients or the engine.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from aifb.kinds import kind_info


def run_kind(run: dict) -> str | None:
    """The service kind of a run: run.json's service.kind, else its recipe's."""
    return ((run.get("service") or {}).get("kind")
            or ((run.get("recipe") or {}).get("service") or {}).get("kind"))


def run_family(run: dict) -> str | None:
    """The metrics family of a run's kind (aifb.kinds), None for an unknown kind."""
    info = kind_info(run_kind(run))
    return info.family if info else None


def extensions(run: dict) -> list[ModuleType]:
    mods = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if getattr(mod, "applies", lambda run: False)(run):
            mods.append(mod)
    return mods
