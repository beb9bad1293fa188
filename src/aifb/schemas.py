"""JSON Schema loading and validation with errors that name the field and the problem.

Schemas live in workflow/schemas/ (YAML, draft 2020-12) and are shared with Snakemake's
`validate()`. Messages read `load.concurrency: -1 is less than the minimum of 1`.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import jsonschema

from aifb.kinds import fill_enums
from aifb.paths import schema_dir
from aifb.yamlio import schema_document


@functools.cache
def load_schema(name: str) -> dict:
    # A copy: the parse is shared with aifb.kinds; the service.kind enums come from there.
    return fill_enums(copy.deepcopy(schema_document(name)))


@functools.cache
def _registry():
    """Every schema under workflow/schemas/ by its $id, so that one can $ref another (the LLM
    kinds share workloads/llm.schema.yaml, minio refers to s3)."""
    from referencing import Registry, Resource

    root = schema_dir()
    resources = []
    for path in sorted(root.rglob("*.schema.yaml")):
        schema = load_schema(str(path.relative_to(root)))
        if isinstance(schema, dict) and "$id" in schema:
            resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


def _path_text(path) -> str:
    parts = []
    for p in path:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts) or "(top level)"


def _leaf_errors(error: jsonschema.ValidationError):
    """For oneOf/anyOf/if-then failures, descend to the errors that say what is wrong."""
    if error.context and all(e.validator in ("required", "not") for e in error.context):
        yield error  # "one of these fields" choices read better as the choice itself
        return
    if error.context:
        # Prefer the branch that got furthest (deepest path), as jsonschema's best_match does.
        # A branch that failed on the value (minimum, pattern) says more than one of another type.
        relevant = [e for e in error.context if e.validator != "type"] or error.context
        best = jsonschema.exceptions.best_match(relevant)
        if best is not None and best is not error:
            yield from _leaf_errors(best)
            return
    yield error


def _message(error: jsonschema.ValidationError) -> str:
    where = _path_text(error.absolute_path)
    msg = error.message
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        # unevaluatedProperties: a schema that extends another through $ref (workloads/chroma)
        msg = msg.replace("Additional properties are not allowed", "unknown field(s)")
        msg = msg.replace("Unevaluated properties are not allowed", "unknown field(s)")
    elif error.validator == "pattern":
        msg = f"{error.instance!r} is not in the expected format"
        desc = error.schema.get("description")
        if desc:
            msg += f" ({desc})"
    elif error.validator == "enum":
        msg = f"{error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
    elif error.validator == "oneOf" and error.context:
        names = sorted({n for e in error.context if e.validator == "required" for n in e.validator_value})
        if names:
            msg = "give exactly one of " + " or ".join(f"`{n}`" for n in names)
    return f"{where}: {msg}"


def validation_errors(instance, schema_name: str, prefix: str = "") -> list[str]:
    """All problems found, one message each, sorted by field path; empty when valid.
    `prefix` names where `instance` sits in a larger document (e.g. "workload")."""
    schema = load_schema(schema_name)
    validator = jsonschema.Draft202012Validator(schema, registry=_registry())
    messages = []
    for err in validator.iter_errors(instance):
        for leaf in _leaf_errors(err):
            msg = _message(leaf)
            if prefix:
                msg = prefix + ("" if msg.startswith("(top level)") or msg.startswith("[") else ".") + msg
                msg = msg.replace(".(top level)", "").replace("(top level)", "")
            messages.append(msg)
    return sorted(set(messages))


def schema_path(name: str) -> Path:
    return schema_dir() / name
