"""The dataset index (aifb.workflow.index): a generated twin of the seed document, from files on disk."""

import datetime as dt
import json
import time
from pathlib import Path


from aifb.workflow.index import write_index

NOW = dt.datetime(2026, 1, 9, 12, 0, tzinfo=dt.timezone.utc)
DAY = "20260109"

# The seed's headings (outside code blocks), in order, and its table headers.
SEED_HEADINGS = [
    "# AI Factory Benchmarking Dataset Index",
    "## Dataset Structure",
    "## Benchmark Categories",
    "### Category 1: Inference (LLM)",
    "### Category 2: Storage (Database/Object Store)",
    "### Category 3: Retrieval (Vector DB)",
    "### Category 4: Pipelines (multi-service, e.g. RAG)",  # issue 17, after the seed's three
    "## Concurrency Sweeps",
    "### Inference Sweep",
    "### Storage Sweep",
    "### Retrieval Sweep",
    "### Pipeline Sweep",
    "## Reproducibility Guide",
    "### Re-running a Benchmark",
    "### Verifying Reproducibility Bundle",
    "## Notes",
]
SEED_RUN_HEADER = [
    "| Benchmark ID | Recipe | Date | Purpose | Status | Concurrency | Notes |",
    "|--------------|--------|------|---------|--------|-------------|-------|",
]
SEED_STRUCTURE = """Each benchmark produces:
- `results/<id>/run.json` - Full recipe, parameters, job IDs, git commit
- `results/<id>/requests.jsonl` - Per-request timing data
- `results/<id>/summary.json` - Aggregated metrics
- `reports/<id>/report.md` - Human-readable analysis
- `reports/<id>/report.json` - Machine-readable analysis
- `reports/<id>/plots/*.png` - Visualization artifacts
"""
# The seed's nine run rows: (number, kind, clients, purpose, rps, latency, slo) -> the row.
SEED_ROWS = [
    ("001", "redis", 1, "Sweep baseline", 3.37, 0.35, None,
     "| BM-20260109-001 | recipe_redis_1client.yaml | 2026-01-09 | Sweep baseline | ✅ Complete | clients 1, concurrency 1 | 3.37 req/s, P95=350 ms |"),
    ("002", "redis", 2, "Sweep 2x", 6.51, 0.37, None,
     "| BM-20260109-002 | recipe_redis_2client.yaml | 2026-01-09 | Sweep 2x | ✅ Complete | clients 2, concurrency 1 | 6.51 req/s, P95=370 ms |"),
    ("003", "redis", 4, "Sweep 4x", 12.80, 0.37, None,
     "| BM-20260109-003 | recipe_redis_4client.yaml | 2026-01-09 | Sweep 4x | ✅ Complete | clients 4, concurrency 1 | 12.8 req/s, P95=370 ms |"),
    ("004", "ollama", 1, "Sweep baseline", 1.11, 0.98, ["p99 < 1.0s"],
     "| BM-20260109-004 | recipe_ollama_1client.yaml | 2026-01-09 | Sweep baseline | ✅ Complete | clients 1, concurrency 1 | 1.11 req/s, P99=980 ms |"),
    ("006", "ollama", 2, "Sweep 2x", 1.90, 0.75, ["p99 < 1.0s"],
     "| BM-20260109-006 | recipe_ollama_2client.yaml | 2026-01-09 | Sweep 2x | ✅ Complete | clients 2, concurrency 1 | 1.9 req/s, P99=750 ms |"),
    ("008", "ollama", 4, "Sweep 4x", 2.29, 1.13, ["p99 < 1.0s"],
     "| BM-20260109-008 | recipe_ollama_4client.yaml | 2026-01-09 | Sweep 4x | ✅ Complete | clients 4, concurrency 1 | 2.29 req/s, P99=1.13 s |"),
    ("005", "chroma", 1, "Sweep baseline", 6.52, 0.26, None,
     "| BM-20260109-005 | recipe_chroma_1client.yaml | 2026-01-09 | Sweep baseline | ✅ Complete | clients 1, concurrency 1 | 6.52 req/s, P95=260 ms |"),
    ("007", "chroma", 2, "Sweep 2x", 9.09, 0.43, None,
     "| BM-20260109-007 | recipe_chroma_2client.yaml | 2026-01-09 | Sweep 2x | ✅ Complete | clients 2, concurrency 1 | 9.09 req/s, P95=430 ms |"),
    ("009", "chroma", 8, "Sweep 8x", 6.97, 1.62, None,
     "| BM-20260109-009 | recipe_chroma_8client.yaml | 2026-01-09 | Sweep 8x | ✅ Complete | clients 8, concurrency 1 | 6.97 req/s, P95=1.62 s |"),
]
CATEGORY = {"redis": "storage", "ollama": "inference", "chroma": "retrieval", "vllm": "inference",
            "qdrant": "retrieval", "postgres": "storage"}
BUNDLE = {"recipe_hash": "sha256:" + "0" * 64, "git_commit": "0123456789ab", "git_dirty": False,
          "target": "local", "service": {"kind": "redis", "name": "redis", "managed": True},
          "clients": {"count": 1, "concurrency": 1, "command": ["aifb"]},
          "environment": {"framework": "aifb", "framework_version": "0.1", "python": "3.11",
                          "os": "Linux"}}


def add_run(root: Path, n: str, kind: str, clients: int, purpose: str, *, rps=None, p95=None,
            p99=None, slo=None, status="completed", reason=None, run=True, summary=True,
            rerun_of=None, created="2026-01-09T10:00:00+00:00", drop=(), day=DAY, lat_n=1000,
            concurrency=None):
    bid = f"BM-{day}-{n}"
    recipe = {"name": f"{kind}_{clients}client", "category": CATEGORY[kind], "purpose": purpose,
              "target": "local", "service": {"kind": kind}, "load": {"clients": clients, **({"concurrency": concurrency} if concurrency else {})},
              "slo": slo or []}
    path = f"recipes/recipe_{kind}_{clients}client.yaml"
    reg = root / "results" / "registry"
    reg.mkdir(parents=True, exist_ok=True)
    (reg / f"{bid}.json").write_text(json.dumps({
        "benchmark_id": bid, "registered_at": "2026-01-09T09:00:00+00:00", "recipe": recipe,
        "recipe_hash": BUNDLE["recipe_hash"], "recipe_path": path, "overrides": [],
        "sweep": None, "rerun_of": rerun_of}))
    if not run:
        return bid
    d = root / "results" / bid
    d.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark_id": bid, "created_at": created, "finished_at": created, "status": status,
           "reason": reason, "recipe": recipe, "recipe_path": path, "sweep": None,
           "rerun_of": rerun_of, **BUNDLE, "service": {**BUNDLE["service"], "kind": kind}}
    for field in drop:
        doc.pop(field)
    (d / "run.json").write_text(json.dumps(doc))
    if summary:
        (d / "summary.json").write_text(json.dumps({
            "benchmark_id": bid, "status": status, "window_s": 10.0,
            "requests": {"total": 100, "ok": 100, "errors": 0, "errors_by_type": {}},
            "throughput": {"rps": rps}, "latency_s": {"n": lat_n, "p50": 0.001, "p95": p95,
                                                      "p99": p99, "p999": None}}))
    return bid


def seed_sweep(name, service, kind, ids, levels, slo, purpose, report_dir=True, skip=None):
    return {"name": name, "param": "load.clients", "levels": levels, "repeats": 1, "version": 1,
            "slo": slo, "service": service, "purpose": purpose, "mode": "grid",
            "points": [{"level": lv, "repeat": 0,
                        "benchmark_id": f"BM-{DAY}-{i}" if i else None,
                        "recipe_path": f"recipes/recipe_{kind}_{lv}client.yaml"}
                       for lv, i in zip(levels, ids)],
            "report_dir": f"reports/sweep_BM-{DAY}-{ids[0]}_BM-{DAY}-{ids[-1]}" if report_dir else None,
            "skip_reason": skip}


def seed_dataset(root: Path) -> list[dict]:
    for n, kind, clients, purpose, rps, lat, slo, _ in SEED_ROWS:
        add_run(root, n, kind, clients, purpose, rps=rps, p95=lat, p99=lat, slo=slo)
    return [
        seed_sweep("ollama_sweep", "Ollama (llama2)", "ollama", ["004", "006", "008"], [1, 2, 4],
                   ["p99 < 1.0s"], "Find optimal concurrency for LLM inference under SLO"),
        seed_sweep("redis_sweep", "Redis", "redis", ["001", "002", "003"], [1, 2, 4],
                   ["p99 < 100ms"], "Find optimal concurrency for database operations under SLO"),
        seed_sweep("chroma_sweep", "ChromaDB", "chroma", ["005", "007", "009"], [1, 2, 8],
                   ["p99 < 500ms"], "Find optimal concurrency for vector search under SLO"),
    ]


def build(root: Path, sweeps: list[dict]) -> tuple[str, dict]:
    md, js = root / "reports" / "dataset_index.md", root / "reports" / "index.json"
    index = write_index(root, sweeps, md, js, now=NOW)
    assert json.loads(js.read_text()) == json.loads(json.dumps(index))
    return md.read_text(), index


def headings(md: str) -> list[str]:
    out, code = [], False
    for line in md.splitlines():
        if line.startswith("```"):
            code = not code
        elif not code and line.startswith("#"):
            out.append(line)
    return out


def section(md: str, start: str, end: str | None = None) -> str:
    tail = md.split(start, 1)[1]
    return tail.split(end, 1)[0] if end else tail


# ----------------------------------------------------------------------------- seed twin

def test_structure_matches_the_seed(tmp_path):
    md, _ = build(tmp_path, seed_dataset(tmp_path))
    assert headings(md) == SEED_HEADINGS
    lines = md.splitlines()
    assert lines[2] == ("This document tracks all benchmark runs with their artifacts for "
                        "reproducibility and analysis.")
    assert SEED_STRUCTURE in md
    for cat in SEED_HEADINGS[3:7]:
        block = section(md, cat + "\n", "###").splitlines()
        assert block[0].startswith("Services: ")
        assert block[2:4] == SEED_RUN_HEADER
    assert md.count("\n---\n") == 5  # as in the seed
    assert lines[-1] == "*Last updated: 2026-01-09*"


def test_run_rows_match_the_seed(tmp_path):
    md, index = build(tmp_path, seed_dataset(tmp_path))
    for *_, row in SEED_ROWS:
        assert row + "\n" in md
    assert ("| BM-20260109-001 | recipe_redis_1client.yaml | 2026-01-09 | Sweep baseline | "
            "✅ Complete | clients 1, concurrency 1 | 3.37 req/s, P95=350 ms |") in md
    # rows are in their category, sorted by ID
    storage = section(md, "### Category 2", "### Category 3")
    assert [l.split(" | ")[0] for l in storage.splitlines() if l.startswith("| BM-")] == \
        ["| BM-20260109-001", "| BM-20260109-002", "| BM-20260109-003"]
    assert "Services: Ollama\n" in md and "Services: Redis\n" in md and "Services: ChromaDB\n" in md
    assert [r["benchmark_id"] for r in index["runs"]] == sorted(r["benchmark_id"] for r in index["runs"])


def test_sweep_tables(tmp_path):
    sweeps = seed_dataset(tmp_path)
    rep = tmp_path / "reports" / f"sweep_BM-{DAY}-001_BM-{DAY}-003"
    rep.mkdir(parents=True)
    (rep / "report.json").write_text(json.dumps({"levels": [], "optimal": {"level": 4}}))
    rep = tmp_path / "reports" / f"sweep_BM-{DAY}-004_BM-{DAY}-008"
    rep.mkdir(parents=True)
    (rep / "report.json").write_text(json.dumps({"levels": [], "optimal": None}))
    md, index = build(tmp_path, sweeps)
    storage = section(md, "### Storage Sweep\n", "###")
    assert storage.splitlines()[:5] == [
        "**Purpose**: Find optimal concurrency for database operations under SLO",
        "**SLO**: P99 < 100ms",
        "",
        "| Sweep Name | Service | Concurrency Levels | Sweep Report | Status | Optimal |",
        "|------------|---------|-------------------|--------------|--------|---------|",
    ]
    assert ("| redis_sweep | Redis | 1, 2, 4 | `reports/sweep_BM-20260109-001_BM-20260109-003/` "
            "| ✅ Complete | 4 |") in storage
    inference = section(md, "### Inference Sweep\n", "###")
    assert "**SLO**: P99 < 1.0s" in inference
    assert ("| ollama_sweep | Ollama (llama2) | 1, 2, 4 | "
            "`reports/sweep_BM-20260109-004_BM-20260109-008/` | ✅ Complete | none met the SLO |") \
        in inference
    retrieval = section(md, "### Retrieval Sweep\n", "###")
    assert "| chroma_sweep | ChromaDB | 1, 2, 8 |" in retrieval and retrieval.rstrip().endswith("| — |")
    by = {s["name"]: s for s in index["sweeps"]}
    assert by["redis_sweep"]["optimal"] == 4 and by["redis_sweep"]["category"] == "storage"


def test_sweep_statuses(tmp_path):
    add_run(tmp_path, "001", "redis", 1, "a", rps=1.0, p95=0.1)
    add_run(tmp_path, "002", "redis", 2, "b", status="failed", reason="boom", summary=False)
    add_run(tmp_path, "003", "redis", 4, "c", run=False)
    add_run(tmp_path, "004", "redis", 1, "a", run=False)
    add_run(tmp_path, "005", "redis", 2, "a", run=False)
    sweeps = [
        seed_sweep("partial_sweep", "Redis", "redis", ["001", "002", "003"], [1, 2, 4], [], "p"),
        seed_sweep("fresh_sweep", "Redis", "redis", ["004", "005"], [1, 2], [], "p"),
        seed_sweep("qdrant_sweep", "Qdrant", "qdrant", [None, None], [1, 2], ["p99 < 50ms"], "q",
                   report_dir=False, skip="service kind 'qdrant' is not implemented yet"),
    ]
    md, index = build(tmp_path, sweeps)
    assert "| partial_sweep | Redis | 1, 2, 4 |" in md
    assert "⚠️ Partial (1/3 complete)" in md
    assert "| fresh_sweep | Redis | 1, 2 | `reports/sweep_BM-20260109-004_BM-20260109-005/` | ⏳ Not run | — |" in md
    retrieval = section(md, "### Retrieval Sweep\n", "###")
    assert "| qdrant_sweep | Qdrant | 1, 2 | — | ❌ Skipped: service kind 'qdrant' is not implemented yet | — |" \
        in retrieval
    assert "**SLO**: P99 < 50ms" in retrieval
    assert {s["name"]: s["status"] for s in index["sweeps"]} == {
        "partial_sweep": "partial", "fresh_sweep": "not run", "qdrant_sweep": "skipped"}


# ----------------------------------------------------------------------------- rows

def test_statuses_and_notes(tmp_path):
    long = ("redis-server exited with code 1 before it was ready: Address already in use "
            "(port 6379)\nmore detail")
    add_run(tmp_path, "001", "redis", 1, "ok", rps=41234.1, p95=0.00015, p99=0.00021,
            slo=["p99 < 1ms", "error_rate < 1%"])
    add_run(tmp_path, "002", "redis", 2, "fails", status="failed", reason=long, summary=False)
    add_run(tmp_path, "003", "redis", 4, "partial", rps=10.0, p95=0.5, p99=0.9,
            status="partial", reason="interrupted by SIGINT")
    add_run(tmp_path, "004", "redis", 8, "waiting", run=False)
    add_run(tmp_path, "005", "redis", 8, "busy", status="running", summary=False)
    add_run(tmp_path, "006", "vllm", 2, "llm", rps=2.5, p95=0.8, p99=1.2,
            slo=["ttft_p99 < 500ms", "p95 < 2s"])
    md, index = build(tmp_path, [])
    rows = {l.split(" | ")[0][2:]: l for l in md.splitlines() if l.startswith("| BM-")}
    assert rows["BM-20260109-001"].endswith("| ✅ Complete | clients 1, concurrency 1 | 41,234 req/s, P99=210 µs |")
    failed = rows["BM-20260109-002"]
    assert "| ❌ Failed | clients 2, concurrency 1 | redis-server exited with code 1 before it was ready: Addres…" in failed
    assert "more detail" not in failed
    assert rows["BM-20260109-003"].endswith(
        "| ⚠️ Partial | clients 4, concurrency 1 | 10 req/s, P95=500 ms; interrupted by SIGINT |")
    assert "| ⏳ Registered | clients 8, concurrency 1 |" in rows["BM-20260109-004"]
    assert "| 2026-01-09 |" in rows["BM-20260109-004"]  # the registration date
    assert "| 🏃 Running | clients 8, concurrency 1 |" in rows["BM-20260109-005"]
    assert rows["BM-20260109-006"].endswith("| 2.5 req/s, P95=800 ms |")  # first percentile rule
    assert "Services: vLLM\n" in md
    by = {r["benchmark_id"]: r for r in index["runs"]}
    assert by["BM-20260109-002"]["reason"] == long
    assert by["BM-20260109-004"]["status"] == "registered"
    assert index["counts"] == {"completed": 2, "failed": 1, "partial": 1, "registered": 1,
                               "running": 1}
    assert "6 benchmarks indexed: 2 complete, 1 failed, 1 partial, 1 running, 1 registered" in md


def test_concurrency_column_shows_clients_and_concurrency_labelled(tmp_path):
    """The seed's "Concurrency" column held the client count; `clients: 1, concurrency: 32` is
    32 requests in flight, so the cell names both."""
    add_run(tmp_path, "001", "redis", 1, "x", rps=100.0, p95=0.01, concurrency=32)
    add_run(tmp_path, "002", "redis", 4, "x", rps=100.0, p95=0.01)
    md, index = build(tmp_path, [])
    assert "| ✅ Complete | clients 1, concurrency 32 | 100 req/s, P95=10 ms |" in md
    assert "| ✅ Complete | clients 4, concurrency 1 | 100 req/s, P95=10 ms |" in md
    assert "Concurrency column: the recipe's `load.clients`" in md
    by = {r["benchmark_id"]: r for r in index["runs"]}
    assert by["BM-20260109-001"]["concurrency"] == 1  # index.json keeps the seed's field
    assert by["BM-20260109-001"]["concurrency_per_client"] == 32


def test_p999_rule_falls_back_to_p99_below_ten_thousand_samples(tmp_path):
    add_run(tmp_path, "001", "redis", 1, "x", rps=100.0, p95=0.02, p99=0.03, slo=["p99.9 < 1s"])
    md, _ = build(tmp_path, [])
    assert "| 100 req/s, P99=30 ms |" in md


def test_reruns_show_the_comparison(tmp_path):
    add_run(tmp_path, "001", "redis", 1, "x", rps=100.0, p95=0.01)
    add_run(tmp_path, "002", "redis", 1, "x", rps=101.0, p95=0.01, rerun_of="BM-20260109-001")
    add_run(tmp_path, "003", "redis", 1, "x", rps=50.0, p95=0.01, rerun_of="BM-20260109-001")
    add_run(tmp_path, "004", "redis", 1, "x", rps=50.0, p95=0.01, rerun_of="BM-20260109-001")
    for bid, verdict in (("002", "reproduced"), ("003", "not reproduced")):
        d = tmp_path / "reports" / f"BM-{DAY}-{bid}"
        d.mkdir(parents=True)
        (d / "comparison.json").write_text(json.dumps({"verdict": verdict, "line": "…"}))
    md, index = build(tmp_path, [])
    assert "| 101 req/s, P95=10 ms; rerun of BM-20260109-001; reproduced ✓ |" in md
    assert "| 50 req/s, P95=10 ms; rerun of BM-20260109-001; reproduced ✗ |" in md
    assert md.count("| 50 req/s, P95=10 ms; rerun of BM-20260109-001 |") == 1  # no comparison yet
    by = {r["benchmark_id"]: r for r in index["runs"]}
    assert by["BM-20260109-002"]["reproduced"] is True
    assert by["BM-20260109-003"]["reproduced"] is False
    assert by["BM-20260109-004"]["reproduced"] is None
    assert "3 reruns, 1 reproduced its original" in md


def test_run_without_registry_entry_and_large_numbers_sort_numerically(tmp_path):
    add_run(tmp_path, "999", "redis", 1, "x", rps=1.0, p95=0.1)
    bid = add_run(tmp_path, "1000", "redis", 1, "x", rps=1.0, p95=0.1)
    (tmp_path / "results" / "registry" / f"{bid}.json").unlink()  # e.g. copied from elsewhere
    _, index = build(tmp_path, [])
    assert [r["benchmark_id"] for r in index["runs"]] == ["BM-20260109-999", "BM-20260109-1000"]


# ----------------------------------------------------------------------------- bundle / guide

def test_reproducibility_guide_and_bundle_check(tmp_path):
    add_run(tmp_path, "001", "redis", 1, "x", rps=1.0, p95=0.1)
    add_run(tmp_path, "002", "redis", 1, "x", rps=1.0, p95=0.1, drop=("git_commit",))
    add_run(tmp_path, "003", "redis", 1, "x", rps=1.0, p95=0.1, drop=("git_commit", "clients"))
    add_run(tmp_path, "004", "redis", 1, "x", run=False)  # no run.json: not checked
    md, index = build(tmp_path, [])
    guide = section(md, "## Reproducibility Guide", "## Notes")
    for cmd in ("aifb rerun <benchmark_id>", "aifb run --rerun <benchmark_id>",
                "jq '.recipe' results/<id>/run.json > recipe.yaml",
                "git checkout $(jq -r '.git_commit' results/<id>/run.json)",
                "aifb run recipe.yaml"):
        assert cmd in guide
    assert "- ✅ `benchmark_id` - Unique identifier" in guide
    assert "- ✅ `environment` - Framework version" in guide
    assert ("- ⚠️ `git_commit` - Code version (2 runs lack git_commit: BM-20260109-002, "
            "BM-20260109-003)") in guide
    assert "- ⚠️ `clients` - Client deployment details (job_id, command, etc.) (1 run lacks clients" \
        in guide
    fields = [l.split("`")[1] for l in guide.splitlines() if l.startswith("- ") and "`" in l]
    assert fields == ["benchmark_id", "created_at", "git_commit", "recipe_hash", "recipe",
                      "target", "service", "clients", "environment"]
    by = {b["field"]: b for b in index["bundle"]}
    assert by["git_commit"]["missing"] == ["BM-20260109-002", "BM-20260109-003"]
    assert by["git_commit"]["checked"] == 3
    notes = section(md, "## Notes")
    assert "`BM-YYYYMMDD-NNN`" in notes and "`reports/sweep_<first>_<last>/`" in notes


def test_empty_dataset(tmp_path):
    md, index = build(tmp_path, [])
    assert headings(md) == SEED_HEADINGS
    assert index["runs"] == [] and index["sweeps"] == []
    assert index["generated_at"].startswith("2026-01-09")
    assert "Services: none yet" in md


def test_pipes_in_text_do_not_break_tables(tmp_path):
    add_run(tmp_path, "001", "redis", 1, "a | b", status="failed", reason="x | y", summary=False)
    md, _ = build(tmp_path, [])
    row = next(l for l in md.splitlines() if l.startswith("| BM-"))
    assert "a \\| b" in row and "x \\| y" in row


# ----------------------------------------------------------------------------- scale

def test_indexes_a_thousand_runs_quickly(tmp_path):
    kinds = ["redis", "vllm", "qdrant", "postgres"]
    for i in range(1, 1001):
        add_run(tmp_path, f"{i:03d}", kinds[i % 4], i % 8 + 1, "bulk", rps=100.0 + i,
                p95=0.002, p99=0.004, slo=["p99 < 10ms"],
                status="completed" if i % 10 else "failed", reason="boom")
    t0 = time.perf_counter()
    md, index = build(tmp_path, [])
    elapsed = time.perf_counter() - t0
    assert len(index["runs"]) == 1000
    assert md.count("\n| BM-") == 1000
    assert elapsed < 10, f"indexing 1,000 runs took {elapsed:.1f} s"


def set_cache(root: Path, bid: str, state: str, where: str = "summary") -> None:
    """Give a run the prefix-cache state an LLM run records (summary.json or run.json)."""
    f = root / "results" / bid / ("summary.json" if where == "summary" else "run.json")
    doc = json.loads(f.read_text())
    if where == "summary":
        doc["llm_workload"] = {"cache": {"state": state}}
    else:
        doc["clients"] = {"implementation": {"cache": {"state": state}}}
    f.write_text(json.dumps(doc))


def test_comparisons_across_cache_states_are_flagged(tmp_path):
    # a sweep whose points ran cold and warm, a rerun in another state, one in the same
    for n, state in (("001", "cold"), ("002", "warm"), ("003", "cold")):
        add_run(tmp_path, n, "vllm", 1, "x", rps=5.0, p95=0.1)
        set_cache(tmp_path, f"BM-{DAY}-{n}", state, "summary" if n != "003" else "run")
    add_run(tmp_path, "004", "vllm", 1, "x", rps=5.0, p95=0.1, rerun_of=f"BM-{DAY}-001")
    set_cache(tmp_path, f"BM-{DAY}-004", "warm")
    add_run(tmp_path, "005", "vllm", 1, "x", rps=5.0, p95=0.1, rerun_of=f"BM-{DAY}-001")
    set_cache(tmp_path, f"BM-{DAY}-005", "cold")
    mixed = seed_sweep("vllm_cache", "vLLM", "vllm", ["001", "002"], [1, 2], [], "x")
    same = seed_sweep("vllm_cold", "vLLM", "vllm", ["001", "003"], [1, 2], [], "x")
    md, index = build(tmp_path, [mixed, same])
    by = {r["benchmark_id"]: r for r in index["runs"]}
    assert by[f"BM-{DAY}-001"]["cache_state"] == "cold"
    assert by[f"BM-{DAY}-003"]["cache_state"] == "cold"          # from run.json
    assert "not comparable" in by[f"BM-{DAY}-004"]["cache_states_note"]
    assert by[f"BM-{DAY}-005"]["cache_states_note"] is None
    assert "; ⚠️ prefix cache warm, its original's cold: not comparable |" in md
    sweeps = {s["name"]: s for s in index["sweeps"]}
    assert "cold: BM-20260109-001; warm: BM-20260109-002" in sweeps["vllm_cache"]["cache_states_note"]
    assert sweeps["vllm_cold"]["cache_states_note"] is None
    assert "⚠️ mixed prefix-cache states" in md and md.count("mixed prefix-cache states") == 1
    assert f"- ⚠️ Rerun BM-{DAY}-004 of BM-{DAY}-001: runs with different prefix-cache" in md
    assert "- ⚠️ Sweep vllm_cache: runs with different prefix-cache states" in md
    # runs that are not LLM generation runs carry no state and no flag
    add_run(tmp_path, "006", "redis", 1, "x", rps=5.0, p95=0.1)
    _, index = build(tmp_path, [])
    assert {r["benchmark_id"]: r for r in index["runs"]}[f"BM-{DAY}-006"]["cache_state"] is None
