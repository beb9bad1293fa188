"""The dataset index as people read it: reports/dataset_index.md, in the seed document's structure.

aifb.workflow.index gathers the rows from the files on disk (runs, sweeps, the bundle check);
this module only turns them into Markdown.
"""

from __future__ import annotations

from aifb.kinds import all_kinds, kind_info

TITLE = "# AI Factory Benchmarking Dataset Index"
INTRO = "This document tracks all benchmark runs with their artifacts for reproducibility and analysis."
STRUCTURE = [
    ("results/<id>/run.json", "Full recipe, parameters, job IDs, git commit"),
    ("results/<id>/requests.jsonl", "Per-request timing data"),
    ("results/<id>/summary.json", "Aggregated metrics"),
    ("reports/<id>/report.md", "Human-readable analysis"),
    ("reports/<id>/report.json", "Machine-readable analysis"),
    ("reports/<id>/plots/*.png", "Visualization artifacts"),
]
CATEGORIES = [
    ("inference", "### Category 1: Inference (LLM)", "### Inference Sweep",
     "Find optimal concurrency for LLM inference under SLO"),
    ("storage", "### Category 2: Storage (Database/Object Store)", "### Storage Sweep",
     "Find optimal concurrency for database operations under SLO"),
    ("retrieval", "### Category 3: Retrieval (Vector DB)", "### Retrieval Sweep",
     "Find optimal concurrency for vector search under SLO"),
    ("pipeline", "### Category 4: Pipelines (multi-service, e.g. RAG)", "### Pipeline Sweep",
     "Find the load at which the end-to-end SLO breaks, and the stage that breaks it"),
]
RUN_HEADER = "| Benchmark ID | Recipe | Date | Purpose | Status | Concurrency | Notes |"
RUN_RULE = "|--------------|--------|------|---------|--------|-------------|-------|"
SWEEP_HEADER = "| Sweep Name | Service | Concurrency Levels | Sweep Report | Status | Optimal |"
SWEEP_RULE = "|------------|---------|-------------------|--------------|--------|---------|"
STATUS = {"completed": "✅ Complete", "failed": "❌ Failed", "partial": "⚠️ Partial",
          "registered": "⏳ Registered", "running": "🏃 Running"}


def cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def concurrency_cell(row: dict) -> str:
    """The seed's "Concurrency" column names the client count; a recipe's load is clients x
    in-flight requests per client, so both are shown, labelled: 'clients 1, concurrency 32'."""
    if row["concurrency"] is None:
        return "—"
    return f"clients {row['concurrency']}, concurrency {row.get('concurrency_per_client') or 1}"


def slo_display(rules: list[str]) -> str:
    """'p99 < 1.0s' -> 'P99 < 1.0s' (the seed's spelling); other rules as written."""
    out = []
    for text in rules:
        head, _, rest = text.strip().partition(" ")
        if head.startswith("p") and head[1:2].isdigit():
            head = head.upper()
        out.append(f"{head} {rest}".strip())
    return ", ".join(out)


def render_markdown(runs: list[dict], sweeps: list[dict], bundle: list[dict],
                    updated: str) -> str:
    out = [TITLE, "", INTRO, "", "## Dataset Structure", "", "Each benchmark produces:"]
    out += [f"- `{path}` - {desc}" for path, desc in STRUCTURE]
    out += ["", "---", "", "## Benchmark Categories", ""]
    for cat, heading, _, _ in CATEGORIES:
        rows = [r for r in runs if r["category"] == cat]
        kinds = {r["service_kind"] for r in rows if r["service_kind"]}
        names = [k.display_name for k in all_kinds() if k.kind in kinds]
        names += sorted(k for k in kinds if kind_info(k) is None)
        out += [heading, f"Services: {', '.join(names) if names else 'none yet'}", "",
                RUN_HEADER, RUN_RULE]
        for r in rows:
            conc = concurrency_cell(r)
            out.append("| " + " | ".join(cell(c) for c in (
                r["benchmark_id"], r["recipe"], r["date"], r["purpose"], STATUS.get(r["status"], r["status"]),
                conc, r["notes"])) + " |")
        out.append("")
    out += ["---", "", "## Concurrency Sweeps", ""]
    for cat, _, heading, default_purpose in CATEGORIES:
        rows = [s for s in sweeps if s["category"] == cat]
        purposes = list(dict.fromkeys(s["purpose"] for s in rows if s["purpose"]))
        slos = list(dict.fromkeys(slo_display(s["slo"]) for s in rows if s["slo"]))
        if len(slos) > 1:
            slos = [f"{slo_display(s['slo'])} ({s['name']})" for s in rows if s["slo"]]
        out += [heading,
                f"**Purpose**: {'; '.join(purposes) if purposes else default_purpose}",
                f"**SLO**: {'; '.join(slos) if slos else 'none configured'}", "",
                SWEEP_HEADER, SWEEP_RULE]
        for s in rows:
            report = f"`{s['report_dir']}`" if s["report_dir"] else "—"
            out.append("| " + " | ".join(cell(c) for c in (
                s["name"], s["service"], ", ".join(str(l) for l in s["levels"]), report,
                s["status_text"], s["optimal_text"])) + " |")
        out.append("")
    out += ["---", "", "## Reproducibility Guide", "", "### Re-running a Benchmark", "",
            "Each benchmark can be reproduced from its `run.json`:", "",
            "```bash",
            "# Option 1: Use the rerun command (new ID, rerun_of set, comparison in reports/<new_id>/)",
            "aifb rerun <benchmark_id>          # the same as: aifb run --rerun <benchmark_id>",
            "",
            "# Option 2: Manual reproduction from run.json",
            "# 1. Extract recipe from run.json",
            "jq '.recipe' results/<id>/run.json > recipe.yaml",
            "",
            "# 2. Verify git commit matches",
            "git checkout $(jq -r '.git_commit' results/<id>/run.json)",
            "",
            "# 3. Run the recipe",
            "aifb run recipe.yaml",
            "```", "",
            "### Verifying Reproducibility Bundle", "",
            "Each `run.json` must contain:"]
    for b in bundle:
        line = f"- {'⚠️' if b['missing'] else '✅'} `{b['field']}` - {b['description']}"
        if b["missing"]:
            n = len(b["missing"])
            shown = ", ".join(b["missing"][:5]) + (", …" if n > 5 else "")
            line += f" ({n} run{'s' if n != 1 else ''} lack{'s' if n == 1 else ''} {b['field']}: {shown})"
        out.append(line)
    checked = bundle[0]["checked"] if bundle else 0
    out += ["", f"Checked in the {checked} run.json file{'s' if checked != 1 else ''} on disk "
            "(registered runs that have not started have none yet).", ""]
    counts = {}
    for r in runs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    order = ["completed", "failed", "partial", "running", "registered"]
    status_counts = ", ".join(f"{counts[s]} {STATUS[s].split(' ', 1)[1].lower()}" for s in order
                              if counts.get(s)) + "".join(
        f", {c} {s}" for s, c in counts.items() if s not in order)
    known = {c for c, *_ in CATEGORIES}
    other = [r for r in runs if r["category"] not in known]
    reruns = [r for r in runs if r["rerun_of"]]
    rep = sum(1 for r in reruns if r["reproduced"] is True)
    sweep_counts = {}
    for s in sweeps:
        sweep_counts[s["status"]] = sweep_counts.get(s["status"], 0) + 1
    out += ["---", "", "## Notes", "",
            "- All benchmarks use `BM-YYYYMMDD-NNN` format for IDs",
            "- Sweep reports are in `reports/sweep_<first>_<last>/`",
            f"- {len(runs)} benchmark{'s' if len(runs) != 1 else ''} indexed"
            + (f": {status_counts}" if runs else ""),
            f"- {len(sweeps)} sweep{'s' if len(sweeps) != 1 else ''} configured"
            + (": " + ", ".join(f"{c} {s}" for s, c in sweep_counts.items()) if sweeps else ""),
            f"- {len(reruns)} rerun{'s' if len(reruns) != 1 else ''}, {rep} reproduced its original"
            if reruns else "- No reruns yet",
            *([f"- {len(other)} run(s) of another category are in index.json only: "
               + ", ".join(r["benchmark_id"] for r in other[:5])] if other else []),
            *[f"- ⚠️ Rerun {r['benchmark_id']} of {r['rerun_of']}: {r['cache_states_note']}"
              for r in runs if r.get("cache_states_note")],
            *[f"- ⚠️ Sweep {s['name']}: {s['cache_states_note']}"
              for s in sweeps if s.get("cache_states_note")],
            "- Notes column: throughput in successful requests/s over the measurement window and "
            "the latency percentile of the recipe's first latency SLO rule (else P95)",
            "- Concurrency column: the recipe's `load.clients` (client connection sets) and "
            "`load.concurrency` (in-flight requests per client)",
            "- This file is generated from the files on disk by `aifb index` "
            "(`snakemake index`); edit the runs, not this file",
            "", "---", "", f"*Last updated: {updated}*", ""]
    return "\n".join(out)
