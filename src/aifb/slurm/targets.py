"""Slurm targets: config/targets.yaml (validated against workflow/schemas/targets.schema.yaml),
how each service kind runs on a target, and a benchmark's Slurm time limits.

A target names an executor (`local` or `slurm`) and, for Slurm, the site's partitions, account,
modules, bind address, shared and scratch directories and per-kind service settings. Without a
targets file only the built-in `local` exists.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import yaml

from aifb import yamlio
from aifb.errors import ConfigError, ServiceError
from aifb.paths import work_root
from aifb.schemas import validation_errors
from aifb.units import parse_duration

SCHEMA = "targets.schema.yaml"
BUILTIN_LOCAL = {"description": "this machine; services as local processes", "executor": "local"}
DEFAULT_MARGIN_S = 600.0
DEFAULT_QUEUE_TIMEOUT_S = 1800.0


def targets_file(root: Path | None = None) -> Path:
    """config/targets.yaml, or the file config/config.yaml names in `targets:`."""
    root = Path(root or work_root())
    cfg = root / "config" / "config.yaml"
    rel = "config/targets.yaml"
    if cfg.is_file():
        try:
            rel = (yamlio.load(cfg.read_text(encoding="utf-8")) or {}).get("targets") or rel
        except yaml.YAMLError:
            pass
    return root / rel


def validate_targets(data, source: str = "config/targets.yaml") -> dict:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a mapping of target names to definitions is expected")
    errors = validation_errors(data, SCHEMA)
    if errors:
        raise ConfigError(f"{source}: invalid targets:\n  " + "\n  ".join(errors))
    return data


def load_targets(root: Path | None = None) -> dict:
    """Every target, validated. Without a targets file only the built-in `local` exists."""
    return load_targets_file(targets_file(root))


def load_targets_file(path: Path) -> dict:
    """The targets of one file, validated (the built-in `local` alone when there is none)."""
    if not path.is_file():
        return {"local": dict(BUILTIN_LOCAL)}
    try:
        data = yamlio.load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}") from None
    return validate_targets(data, str(path))


def get_target(name: str, root: Path | None = None) -> dict:
    targets = load_targets(root)
    if name not in targets:
        raise ConfigError(f"target {name!r} is not defined in {targets_file(root)} "
                          f"(defined: {', '.join(sorted(targets))})")
    return dict(targets[name], name=name)


def service_how(target: dict, kind: str) -> dict:
    """How `kind` runs on `target`: its entry under services:, else `default`, else {}."""
    services = target.get("services") or {}
    return dict(services.get(kind) or services.get("default") or {})


def runtime_minutes(recipe: dict) -> int:
    """A Slurm time limit for one benchmark: warmup + duration + cooldown, plus 10 minutes for
    deployment and preload (a request-count run gets an hour)."""
    load = recipe["load"]
    if "duration" not in load:
        return 60
    total = sum(parse_duration(load.get(k, 0)) for k in ("warmup", "duration", "cooldown"))
    return int(math.ceil(total / 60.0)) + 10


def service_runtime_minutes(recipe: dict, target: dict) -> int:
    """The service job's time limit: the benchmark's own limit plus the target's margin."""
    margin = parse_duration(target.get("service_margin", DEFAULT_MARGIN_S))
    return runtime_minutes(recipe) + int(math.ceil(margin / 60.0))


def check_shared(target: dict, run_dir: Path) -> None:
    """A ServiceError unless run_dir is under the target's shared_dir (when it names one): jobs
    on other nodes read and write the run directory."""
    shared = target.get("shared_dir")
    if shared and not Path(run_dir).resolve().is_relative_to(Path(os.path.expandvars(shared)).resolve()):
        raise ServiceError(
            f"results go to {run_dir}, which is not under target {target['name']!r}'s shared_dir "
            f"{shared}: Slurm jobs on other nodes could not see them (set AIFB_ROOT to a "
            "directory on the shared filesystem)")
