"""The kinds table (aifb.kinds) agrees with what is registered and with the schemas: every service
kind registered in aifb.services has a client and a workload schema that says what it is, and
nothing else is a kind; the service.kind enums aifb validates recipes and targets with are those
kinds; the index and the metrics families follow the table."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from aifb import clients, kinds, services
from aifb.analysis.metrics import extensions, run_family
from aifb.paths import schema_dir
from aifb.schemas import load_schema, validation_errors
from aifb.reporting import index_page
from aifb.workflow import index

# The order validation messages listed the kinds in before the enums were generated; a change
# here is a change of messages (the enums list kinds by family, then rank).
ENUM_ORDER = ["redis", "postgres", "minio", "s3", "chroma", "qdrant", "vllm", "ollama", "llamacpp"]


def table() -> set[str]:
    return {k.kind for k in kinds.all_kinds()}


def test_every_registered_service_kind_describes_itself_and_nothing_else_is_a_kind():
    registered = set(services.available_kinds())
    assert registered - table() == set(), "registered without an x-aifb-kind schema block"
    assert table() - registered == set(), "an x-aifb-kind schema block without a service"


def test_every_kind_has_a_client():
    assert table() - set(clients.available_kinds()) == set()


def recipe_kind_enum() -> list:
    return load_schema("recipe.schema.yaml")["$defs"]["service"]["properties"]["kind"]["enum"]


def targets_kind_enum() -> list:
    svc = load_schema("targets.schema.yaml")["$defs"]["target"]["properties"]["services"]
    return svc["propertyNames"]["enum"]


def test_schema_enums_are_the_registered_kinds_in_the_historical_order():
    assert recipe_kind_enum() == kinds.enum_order() == ENUM_ORDER
    assert set(recipe_kind_enum()) == set(services.available_kinds())
    assert targets_kind_enum() == ["default", *ENUM_ORDER]


def test_no_schema_file_lists_kinds_by_hand():
    """The shared schemas hold a placeholder, not a list that a new kind would have to edit."""
    for name in ("recipe.schema.yaml", "targets.schema.yaml", "config.schema.yaml"):
        lines = (schema_dir() / name).read_text(encoding="utf-8").splitlines()
        for line in lines:
            if line.lstrip().startswith("enum:"):
                values = yaml.safe_load(line.split("enum:", 1)[1])
                assert not set(values) & table(), (name, line)
        if name != "config.schema.yaml":
            assert any(kinds.ENUM_KEY in line for line in lines), name


def test_an_unknown_kind_is_refused_and_every_kind_accepted():
    base = {"name": "x", "category": "storage", "service": {"kind": "mysql"},
            "load": {"clients": 1, "duration": "1s"}}
    errors = validation_errors(base, "recipe.schema.yaml")
    assert errors == [f"service.kind: 'mysql' is not one of {', '.join(ENUM_ORDER)}"]
    for k in kinds.all_kinds():
        r = copy.deepcopy(base)
        r["service"]["kind"] = k.kind
        assert validation_errors(r, "recipe.schema.yaml") == []


def test_metadata_values_are_ones_the_index_and_metrics_know():
    categories = {c for c, *_ in index_page.CATEGORIES}
    assert categories == set(load_schema("recipe.schema.yaml")["properties"]["category"]["enum"])
    for k in kinds.all_kinds():
        assert k.category in categories, k
        assert k.family in kinds.FAMILIES, k
        assert k.display_name
    ranks = [k.rank for k in kinds.all_kinds()]
    assert len(set(ranks)) == len(ranks), "two kinds share a rank"


@pytest.mark.parametrize("kind,family,modules", [
    ("vllm", "llm", ["llm", "llm_workload"]), ("llamacpp", "llm", ["llm", "llm_workload"]),
    ("chroma", "vector", ["vector"]), ("qdrant", "vector", ["vector"]),
    ("s3", "object", ["storage"]), ("minio", "object", ["storage"]),
    ("redis", "kv", []), ("postgres", "sql", []), ("nosuch", None, []), (None, None, []),
])
def test_metrics_family_follows_the_table(kind, family, modules):
    for run in ({"service": {"kind": kind}}, {"recipe": {"service": {"kind": kind}}}):
        assert run_family(run) == family
        assert [m.__name__.rsplit(".", 1)[1] for m in extensions(run)] == modules


def test_index_names_and_categories_follow_the_table(tmp_path):
    """Run rows from files (as the index reads them): each kind's category, its display name,
    listed in rank order in its category; an unknown kind without a category is in none."""
    order = ["redis", "s3", "postgres", "minio", "qdrant", "chroma", "zzz", "llamacpp", "vllm",
             "ollama"]
    for i, kind in enumerate(order, 1):
        bid = f"BM-20260101-{i:03d}"
        run = {"benchmark_id": bid, "status": "completed", "created_at": "2026-01-01T00:00:00Z",
               "service": {"kind": kind}, "recipe": {"name": kind, "service": {"kind": kind},
                                                    **({"category": "storage"} if kind == "zzz" else {})}}
        (tmp_path / "results" / bid).mkdir(parents=True)
        (tmp_path / "results" / bid / "run.json").write_text(json.dumps(run))
    runs = index.collect_runs(tmp_path)
    assert {r["service_kind"]: r["category"] for r in runs} == {
        **{k.kind: k.category for k in kinds.all_kinds()}, "zzz": "storage"}
    md = index_page.render_markdown(runs, [], [], "2026-01-01")
    assert "Services: vLLM, Ollama, llama.cpp\n" in md
    assert "Services: PostgreSQL, MinIO, S3, Redis, zzz\n" in md
    assert "Services: ChromaDB, Qdrant\n" in md


def test_a_schema_without_the_block_is_a_shared_fragment_not_a_kind():
    assert {"llm", "vector"} & table() == set()
    for name in ("llm", "vector"):
        assert (schema_dir() / "workloads" / f"{name}.schema.yaml").is_file()
