"""Service-specific metrics beside the common ones: one module per family (llm, vector, ...).

summary.py and report.py call every module here whose `applies(run)` is true; a module may
define any of:

    applies(run: dict) -> bool                      # e.g. the service kind is an LLM server
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


def extensions(run: dict) -> list[ModuleType]:
    mods = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if getattr(mod, "applies", lambda run: False)(run):
            mods.append(mod)
    return mods
