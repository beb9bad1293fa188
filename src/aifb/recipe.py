"""Recipes: load YAML, apply `--set` overrides, validate against recipe.schema.yaml, hash.

A recipe is plain data (a dict). `load_recipe` returns it validated, with schema defaults
filled in for the fields the engine needs; the canonical form (sorted keys, compact JSON) is
what `recipe_hash` covers, so a rerun can check it ran the same recipe.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .errors import RecipeError
from .paths import schema_dir
from .schemas import validation_errors
from .units import parse_duration, parse_size

SCHEMA = "recipe.schema.yaml"


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{path}: malformed YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping (name:, service:, load:, ...), "
                          f"got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """`load.concurrency=32` -> (['load', 'concurrency'], 32); the value is parsed as YAML."""
    if "=" not in text:
        raise RecipeError(f"--set {text!r}: expected dotted.path=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise RecipeError(f"--set {text!r}: {key!r} is not a dotted path")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(recipe: dict, overrides: list[str] | None) -> dict:
    """Apply `dotted.path=value` overrides in order; `path=null` (or `~`) removes the field, so
    a recipe can switch e.g. from `load.duration` to `load.requests` without a copy of its file."""
    out = copy.deepcopy(recipe)
    for text in overrides or []:
        parts, value = parse_override(text)
        if value is None:
            _remove(out, parts, text)
            continue
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            elif not isinstance(nxt, dict):
                raise RecipeError(f"--set {text!r}: {'.'.join(parts[:-1])} is not a mapping")
            node = nxt
        node[parts[-1]] = value
    return out


def _remove(recipe: dict, parts: list[str], text: str) -> None:
    node = recipe
    for p in parts[:-1]:
        node = node.get(p) if isinstance(node, dict) else None
    if not isinstance(node, dict) or parts[-1] not in node:
        raise RecipeError(f"--set {text!r}: the recipe has no field {'.'.join(parts)} to remove")
    del node[parts[-1]]


def validate(recipe: Any, source: str = "recipe") -> dict:
    """Validate a recipe dict; raise RecipeError listing every problem by field."""
    if not isinstance(recipe, dict):
        raise RecipeError(f"{source}: a recipe is a mapping, got {type(recipe).__name__}")
    errors = validation_errors(recipe, SCHEMA)
    # Each service kind brings its own workload schema (a new kind touches no shared file).
    kind = (recipe.get("service") or {}).get("kind") if isinstance(recipe.get("service"), dict) else None
    if isinstance(kind, str) and re.fullmatch(r"[a-z0-9_]+", kind):
        kind_schema = f"workloads/{kind}.schema.yaml"
        if (schema_dir() / kind_schema).is_file() and isinstance(recipe.get("workload", {}), dict):
            errors += validation_errors(recipe.get("workload") or {}, kind_schema, prefix="workload")
    if errors:
        raise RecipeError(f"{source}: invalid recipe:\n  " + "\n  ".join(errors))
    # Semantic checks the schema cannot express.
    problems = []
    wl = recipe.get("workload") or {}
    ops = wl.get("ops")
    if isinstance(ops, dict) and ops and sum(ops.values()) <= 0:
        problems.append("workload.ops: the weights sum to zero; give at least one positive weight")
    endpoint = recipe["service"].get("endpoint")
    if isinstance(endpoint, str) and urlsplit(endpoint).password:
        problems.append("service.endpoint: holds a password; recipes are embedded in run.json, so "
                        "give it through service.password_env or service.password_file instead")
    try:
        for key in ("duration", "warmup", "cooldown", "timeout"):
            if key in recipe["load"]:
                parse_duration(recipe["load"][key])
        if "value_size" in wl:
            parse_size(wl["value_size"])
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        raise RecipeError(f"{source}: invalid recipe:\n  " + "\n  ".join(problems))
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> dict:
    recipe = apply_overrides(read_yaml(path), overrides)
    return validate(recipe, source=str(path))


def canonical(recipe: dict) -> str:
    return json.dumps(recipe, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def recipe_hash(recipe: dict) -> str:
    return "sha256:" + hashlib.sha256(canonical(recipe).encode()).hexdigest()


def load_settings(recipe: dict) -> dict:
    """The load block with units resolved to numbers, as the engine consumes it."""
    load = recipe["load"]
    return {
        "clients": int(load["clients"]),
        "concurrency": int(load.get("concurrency", 1)),
        "processes": int(load.get("processes", 1)),
        "rate": float(load["rate"]) if load.get("rate") is not None else None,
        "arrival": load.get("arrival", "poisson"),
        "duration_s": parse_duration(load["duration"]) if "duration" in load else None,
        "requests": int(load["requests"]) if "requests" in load else None,
        "warmup_s": parse_duration(load.get("warmup", 0)),
        "cooldown_s": parse_duration(load.get("cooldown", 0)),
        "timeout_s": parse_duration(load.get("timeout", "30s")),
    }
