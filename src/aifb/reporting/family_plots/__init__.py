"""The metric families' plots and sweep sections, one module per family of aifb.analysis.metrics
with the same name (llm, vector, storage, server); the figures they draw are computed there.

A module may define:

    plots(records_path, run, summary, plots_dir) -> list[{"path", "title", "caption"}]
    sweep_section(points, param, out_dir) -> {"lines", "plots", "rows"}

Found by name at run time, like the families themselves (aifb.analysis.metrics.extensions), so
importing this package loads no plotting library: only a report that draws does.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from aifb.analysis.metrics import extensions


def plotters(run: dict) -> list[ModuleType]:
    """The plot modules of the metric families that apply to `run`, in the families' order."""
    mods = []
    for family in extensions(run):
        name = f"{__name__}.{family.__name__.rsplit('.', 1)[-1]}"
        if importlib.util.find_spec(name) is not None:
            mods.append(importlib.import_module(name))
    return mods
