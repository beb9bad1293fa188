"""Recipes: load YAML, apply `--set` overrides, validate against recipe.schema.yaml, hash.

A recipe is plain data (a dict). `load_recipe` returns it validated, with schema defaults
filled in for the fields the engine needs; the canonical form (sorted keys, compact JSON) is
what `recipe_hash` covers, so a rerun can check it ran the same recipe.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from aifb import endpoints
from aifb.pipeline_stages import stage_problems, stage_workload
from aifb.clients.llm.trace import arrival_offsets_ns, offered_rate, read_trace
from aifb.errors import ConfigError, RecipeError, ServiceError
from aifb.load.settings import (DEFAULT_ARRIVAL, DEFAULT_CONCURRENCY, DEFAULT_PROCESSES,
                                DEFAULT_TIMEOUT_S)
from aifb.paths import schema_dir
from aifb.schemas import validation_errors
from aifb.units import parse_duration, parse_size

SCHEMA = "recipe.schema.yaml"
PIPELINE_SCHEMA = "pipeline.schema.yaml"


# Bounds on what a recipe file may be: recipes are a few hundred bytes; these stop a hostile or
# broken file (a YAML alias bomb: 698 bytes expanding to gigabytes) before it costs memory.
MAX_RECIPE_BYTES = 1024 * 1024
MAX_EXPANDED_NODES = 100_000  # scalars + collections after aliases are expanded
# The longest a load phase or request timeout may be: a week. A longer one is a typo (or
# 99999999999999999999999999999h, which would otherwise run until killed).
MAX_DURATION_S = 7 * 86400.0


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (YAML says keys are unique; PyYAML keeps
    the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key, line = self.construct_object(key_node), key_node.start_mark.line + 1
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first at line {seen[key]})",
                        key_node.start_mark)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node, path: Path) -> int:
    """How many nodes `node` stands for once every alias is expanded (aliases share one node in
    the composed graph, so this costs one visit per distinct node)."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(n) -> int:
        if id(n) in sizes:
            return sizes[id(n)]
        if id(n) in in_progress:
            raise RecipeError(f"{path}: a YAML alias refers to the node that contains it "
                              f"(line {n.start_mark.line + 1}); recipes cannot be recursive")
        in_progress.add(id(n))
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(c) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in n.value)
        if total > MAX_EXPANDED_NODES:
            raise RecipeError(f"{path}: expands to more than {MAX_EXPANDED_NODES} YAML nodes "
                              f"(near line {n.start_mark.line + 1}: aliases repeated inside "
                              "aliases?); a recipe is a small document")
        in_progress.discard(id(n))
        sizes[id(n)] = total
        return total

    return size(node)


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if path.is_dir():
        raise RecipeError(f"{path}: is a directory; give a recipe file (e.g. {path}/<name>.yaml)")
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_RECIPE_BYTES + 1)
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read it: {exc.strerror}") from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeError(f"{path}: larger than {MAX_RECIPE_BYTES // 1024} KiB; a recipe is a small "
                          "YAML document")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise RecipeError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line}, "
                          f"offset {exc.start}); save the recipe as UTF-8") from None
    loader = None
    try:
        loader = _RecipeLoader(text)  # the reader refuses control characters here
        node = loader.get_single_node()
        if node is not None:
            _expanded_size(node, path)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{path}: malformed YAML{where}: {problem}") from None
    except RecursionError:
        raise RecipeError(f"{path}: nested too deeply to be a recipe") from None
    finally:
        if loader is not None:
            loader.dispose()
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
    pipeline = recipe.get("category") == "pipeline"
    if "service" in recipe and pipeline or "services" in recipe and not pipeline:
        raise RecipeError(f"{source}: invalid recipe:\n  " + (
            "service: a pipeline recipe (category: pipeline) names its services under `services:`"
            if pipeline else "services: only a pipeline recipe (category: pipeline) has "
            "`services:`; a single-service recipe has `service:`"))
    errors = validation_errors(recipe, SCHEMA)
    slo = recipe.get("slo")   # not a list: the schema's error above says so
    stage_rules = [r for r in slo if isinstance(r, str) and r.strip().startswith("stage.")
                   ] if isinstance(slo, list) else []
    if pipeline:
        if not errors:
            errors += pipeline_errors(recipe)
    else:
        # Each service kind brings its own workload schema, which also says what the kind is
        # (aifb.kinds: the service.kind enum checked above is filled from those), so a new
        # kind touches no shared file.
        errors += _kind_workload_errors((recipe.get("service") or {}).get("kind")
                                        if isinstance(recipe.get("service"), dict) else None,
                                        recipe.get("workload", {}), "workload")
        errors += [f"slo: {r!r}: stage rules are for pipeline recipes" for r in stage_rules]
    if errors:
        raise RecipeError(f"{source}: invalid recipe:\n  " + "\n  ".join(errors))
    if pipeline:
        errors = [f"slo: {r!r}: {why}" for r in stage_rules
                  if (why := stage_rule_problem(r, recipe["workload"]["stages"]))]
        if errors:
            raise RecipeError(f"{source}: invalid recipe:\n  " + "\n  ".join(errors))
    # Semantic checks the schema cannot express.
    problems = []
    wl = recipe.get("workload") or {}
    ops = wl.get("ops")
    if isinstance(ops, dict) and ops and sum(ops.values()) <= 0:
        problems.append("workload.ops: the weights sum to zero; give at least one positive weight")
    for name, svc in service_specs(recipe).items():
        where = f"services.{name}" if "services" in recipe else name
        if "endpoint" in svc:
            try:
                endpoints.split(svc["kind"], svc["endpoint"])
            except ServiceError as exc:
                problems.append(f"{where}.endpoint: {exc}")
    problems += [f"{where}: {value!r} is not a finite number" for where, value in _non_finite(recipe)]
    for key in ("duration", "warmup", "cooldown", "timeout"):
        if key in recipe["load"]:
            problems += _duration_problems(f"load.{key}", recipe["load"][key],
                                           positive=key in ("duration", "timeout"))
    try:
        if "value_size" in wl:
            parse_size(wl["value_size"])
        tele = recipe.get("telemetry")
        if isinstance(tele, dict) and "interval" in tele and parse_duration(tele["interval"]) < 0.1:
            problems.append(f"telemetry.interval: {tele['interval']!r} is below the minimum of "
                            "100ms (the sampler's scrapes need that long)")
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        raise RecipeError(f"{source}: invalid recipe:\n  " + "\n  ".join(problems))
    return recipe


def service_specs(recipe: dict) -> dict:
    """A recipe's services by name: a pipeline's `services:`, else {"service": its service}."""
    if recipe.get("category") == "pipeline":
        return dict(recipe["services"])
    return {"service": recipe["service"]}


def _kind_workload_errors(kind, workload, prefix: str) -> list[str]:
    """The errors of `workload` against its kind's schema (workloads/<kind>.schema.yaml)."""
    if not (isinstance(kind, str) and re.fullmatch(r"[a-z0-9_]+", kind)):
        return []
    kind_schema = f"workloads/{kind}.schema.yaml"
    if not (schema_dir() / kind_schema).is_file() or not isinstance(workload, dict):
        return []
    return validation_errors(workload or {}, kind_schema, prefix=prefix)


def pipeline_errors(recipe: dict) -> list[str]:
    """A pipeline recipe's workload: its schema (pipeline.schema.yaml), the stages' references
    (aifb.pipeline_stages.stage_problems: unknown service or stage, an input from a later
    stage, an op the service's kind cannot do), and each stage's workload against its kind's
    schema."""
    wl = recipe.get("workload")
    if not isinstance(wl, dict):
        return ["workload: a pipeline needs workload.stages (an ordered list of stages)"]
    errors = validation_errors(wl, PIPELINE_SCHEMA, prefix="workload")
    if errors:
        return errors
    errors = stage_problems(wl, recipe["services"])
    if errors:
        return errors
    for i, stage in enumerate(wl["stages"]):
        kind = recipe["services"][stage["service"]]["kind"]
        errors += _kind_workload_errors(kind, stage_workload(stage, wl),
                                        f"workload.stages[{i}].workload")
    return errors


def stage_rule_problem(rule: str, stages: list) -> str | None:
    """Why an SLO rule `stage.<name>.<metric> ...` cannot apply to these stages, or None."""
    name, _, metric = rule.strip()[len("stage."):].partition(".")
    ops = {s["name"]: s["op"] for s in stages}
    if name not in ops:
        return f"no stage {name!r} (stages: {', '.join(ops)})"
    if metric.startswith(("ttft_", "tpot_")) and ops[name] != "chat":
        return f"{metric.split('_')[0]} is measured on a chat stage; {name!r} is a {ops[name]}"
    if metric.startswith(("itl_", "e2el_")):
        return "stage rules take latency, ttft_ and tpot_ statistics"
    return None


def _non_finite(node, where: str = ""):
    """(field path, value) of every NaN or infinity in a recipe: they pass JSON Schema's number
    checks (every comparison with NaN is false) and then break scheduling and statistics."""
    if isinstance(node, float) and not math.isfinite(node):
        yield where or "(top level)", node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _non_finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _non_finite(v, f"{where}[{i}]")


def _duration_problems(where: str, value, *, positive: bool) -> list[str]:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        return [f"{where}: {exc}"]
    if not math.isfinite(seconds):
        return []  # reported by _non_finite
    if positive and seconds <= 0:
        return [f"{where}: {value!r} is zero; give a positive duration (e.g. 30s)"]
    if seconds > MAX_DURATION_S:
        return [f"{where}: {value!r} is longer than the maximum of {MAX_DURATION_S / 86400:g} days"]
    return []


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
    settings = {
        "clients": int(load["clients"]),
        "concurrency": int(load.get("concurrency", DEFAULT_CONCURRENCY)),
        "processes": int(load.get("processes", DEFAULT_PROCESSES)),
        "rate": float(load["rate"]) if load.get("rate") is not None else None,
        "arrival": load.get("arrival", DEFAULT_ARRIVAL),
        "duration_s": parse_duration(load["duration"]) if "duration" in load else None,
        "requests": int(load["requests"]) if "requests" in load else None,
        "warmup_s": parse_duration(load.get("warmup", 0)),
        "cooldown_s": parse_duration(load.get("cooldown", 0)),
        "timeout_s": parse_duration(load.get("timeout", DEFAULT_TIMEOUT_S)),
    }
    if settings["arrival"] == "trace":
        _trace_settings(recipe, settings)
    turns = (recipe.get("workload") or {}).get("turns") if isinstance(recipe.get("workload"), dict) else None
    if turns not in (None, 1, [1, 1]) and settings["arrival"] == "trace":
        # a trace gives every request's time: turns would add requests the trace does not have
        raise ConfigError("workload.turns > 1 with load.arrival: trace: a trace plans every "
                          "request itself; use load.rate (conversations arrive at the rate) "
                          "or a closed loop")
    return settings


def _trace_settings(recipe: dict, settings: dict) -> None:
    """load.arrival: trace: the arrival offsets of workload.prompts' trace (aifb.clients.llm.trace), sped
    up by load.speedup, and the rate they offer (for the open-loop statistics)."""
    load = recipe["load"]
    prompts = ((recipe.get("workload") or {}).get("prompts") or {})
    if prompts.get("source") != "trace" or not prompts.get("path"):
        raise ConfigError("load.arrival: trace replays workload.prompts.source: trace (with "
                          "workload.prompts.path): set both")
    if load.get("rate") is not None:
        raise ConfigError("load.arrival: trace takes its rate from the trace: remove load.rate "
                          "(use load.speedup to replay it faster)")
    from aifb.clients.llm.prompts import resolve_path

    trace = read_trace(resolve_path(prompts["path"]))
    speedup = float(load.get("speedup", 1.0))
    settings["speedup"] = speedup
    settings["trace_ns"] = arrival_offsets_ns(trace, speedup)
    settings["rate"] = offered_rate(trace, speedup)
