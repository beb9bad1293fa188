"""What each service kind is: its family, its index category and its display name.

A kind describes itself in its own workload schema, workflow/schemas/workloads/<kind>.schema.yaml,
under the vendor keyword `x-aifb-kind` (JSON Schema ignores unknown keywords):

    x-aifb-kind:
      display_name: Qdrant  # in the dataset index
      family: vector        # which metrics family applies (aifb.analysis.metrics), see FAMILIES
      category: retrieval   # the dataset index's section (recipe.schema.yaml's `category`)
      rank: 90              # its place among the kinds of its family and of its category

This module reads those blocks and is the one table everything else derives from: the index's
service names and categories (aifb.workflow.index), the metrics family of a run
(aifb.analysis.metrics), and the `service.kind` enums of recipe.schema.yaml and
targets.schema.yaml, which aifb.schemas fills in from here when it loads them (fill_enums), so a
new kind edits no shared file. A schema under workloads/ without the block (llm, vector) is a
shared fragment, not a kind.

Why the schema file and not the service module: analysis/ and the index read files only and sit
below services/ and clients/ in the layers; reading data keeps them from importing a kind's code
(and its dependencies) just to learn its family. The service module registers its class under
the same name (aifb.services.register); tests/unit/test_kinds.py checks that the two agree.
Base layer: imports nothing of aifb but paths and yamlio (the schema files, parsed once).

Snakemake's parse-time `validate()` checks config.schema.yaml only, which names no kind; recipes
and targets are validated through aifb.schemas, so the filled enums apply wherever they are used.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from aifb.paths import schema_dir
from aifb.yamlio import schema_document

KEY = "x-aifb-kind"
# Where a schema wants the kinds' names as an enum: `x-aifb-kind-enum: [values before them]`.
ENUM_KEY = "x-aifb-kind-enum"
# The metrics families, in the order schema enums list kinds (kinds of one family by rank):
# key-value, SQL database, object store, vector search, LLM serving.
FAMILIES = ("kv", "sql", "object", "vector", "llm")


@dataclass(frozen=True)
class Kind:
    kind: str          # the recipe's service.kind
    display_name: str
    family: str
    category: str
    rank: int


@functools.cache
def all_kinds() -> tuple[Kind, ...]:
    """Every kind, in rank order (ties by kind)."""
    found = []
    for path in sorted((schema_dir() / "workloads").glob("*.schema.yaml")):
        meta = (schema_document(f"workloads/{path.name}") or {}).get(KEY)
        if meta is None:
            continue
        try:
            entry = Kind(kind=path.name.removesuffix(".schema.yaml"),
                         display_name=str(meta["display_name"]), family=str(meta["family"]),
                         category=str(meta["category"]), rank=int(meta["rank"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise RuntimeError(f"{path}: {KEY} needs display_name, family, category and rank "
                               f"(an integer): {exc!r}") from None
        if entry.family not in FAMILIES:
            raise RuntimeError(f"{path}: {KEY}.family {entry.family!r} is not one of "
                               f"{', '.join(FAMILIES)}")
        found.append(entry)
    return tuple(sorted(found, key=lambda k: (k.rank, k.kind)))


def kind_info(kind) -> Kind | None:
    """The kind's entry, or None for an unknown kind (or None)."""
    return next((k for k in all_kinds() if k.kind == kind), None)


def enum_order() -> list[str]:
    """The kinds as schema enums list them (and so validation messages): by family, then rank."""
    return [k.kind for k in sorted(all_kinds(), key=lambda k: (FAMILIES.index(k.family), k.rank, k.kind))]


def fill_enums(node):
    """Replace every `x-aifb-kind-enum: [leading...]` in a loaded schema by
    `enum: [leading..., <kinds>]`; returns the node (changed in place)."""
    if isinstance(node, dict):
        if ENUM_KEY in node:
            node["enum"] = [*node.pop(ENUM_KEY), *enum_order()]
        for value in node.values():
            fill_enums(value)
    elif isinstance(node, list):
        for value in node:
            fill_enums(value)
    return node
