"""`aifb validate`: check recipes against the recipe schema."""

from __future__ import annotations

from aifb import services
from aifb.cli.common import err
from aifb.errors import AifbError
from aifb.workflow.recipe import load_recipe, service_specs


def cmd_validate(args) -> int:
    bad = 0
    for path in args.recipes:
        try:
            recipe = load_recipe(path, args.set)
        except AifbError as exc:
            err(str(exc))
            bad += 1
            continue
        missing = [s["kind"] for s in service_specs(recipe).values()
                   if s["kind"] not in services.available_kinds()]
        note = "".join(f" (service kind {kind!r} is not implemented yet)" for kind in missing)
        print(f"{path}: valid{note}")
    return 1 if bad else 0
