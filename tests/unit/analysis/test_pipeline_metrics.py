"""The pipeline metrics (aifb.analysis.metrics.pipeline) and stage SLO rules, from a written
requests.jsonl: stage percentiles and shares, the chat stage's TTFT/TPOT, recall, the e2e
breakdown, failures by stage, and a stage-time sum that exceeds its request's (a broken
record) is counted, never hidden."""

from __future__ import annotations

import json

import pytest

from aifb.analysis import slo
from aifb.analysis.summary import summarize
from aifb.jsonio import write_json

STAGES = [{"name": "retrieve", "service": "v", "op": "query", "k": 4},
          {"name": "fetch", "service": "c", "op": "mget", "input": "retrieve"},
          {"name": "generate", "service": "l", "op": "chat", "input": "fetch"}]


def record(seq: int, t: float, durations: tuple, ok: bool = True, failed: str | None = None,
           tokens: int = 9) -> dict:
    stages, at = {}, t
    for spec, d in zip(STAGES, durations):
        st = {"t_start": at + 0.0001, "t_end": at + 0.0001 + d, "ok": True, "error": None}
        if spec["op"] == "query":
            st.update(hits=4, recall=0.75)
        if spec["op"] == "chat":
            st.update(t_first=at + 0.0001 + d / 2, tokens=tokens)
        if failed == spec["name"]:
            st.update(ok=False, error={"type": "Timeout", "message": "x"})
        stages[spec["name"]] = st
        at = st["t_end"]
        if failed == spec["name"]:
            break
    rec = {"client": 0, "worker": 0, "seq": seq, "op": "pipeline", "t_sched": None,
           "t_start": t, "t_first": None, "t_end": at + 0.0001, "ok": ok,
           "error": None if ok else {"type": "Timeout", "message": f"stage {failed}: x"},
           "bytes_out": 1, "bytes_in": 1, "phase": "measure", "stages": stages}
    if failed:
        rec["failed_stage"] = failed
    return rec


@pytest.fixture
def run_dir(tmp_path):
    recs = [record(i, 1.0 + i, (0.002, 0.0005, 0.1 + 0.01 * i)) for i in range(20)]
    recs.append(record(20, 30.0, (0.002, 0.0005), ok=False, failed="fetch"))
    (tmp_path / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    write_json(tmp_path / "run.json", {
        "benchmark_id": "BM-x", "status": "completed", "service": {"kind": "pipeline"},
        "recipe": {"name": "rag", "category": "pipeline", "load": {"clients": 1},
                   "workload": {"stages": STAGES},
                   "slo": ["p99 < 1s", "stage.retrieve.p99 < 50ms",
                           "stage.generate.ttft_p99 < 10ms", "stage.generate.tpot_p50 < 1s"]},
        "load_stats": {"window_s": 40.0}})
    return tmp_path


def test_stage_statistics_shares_and_breakdown(run_dir):
    s = summarize(run_dir)
    st = s["stages"]
    assert list(st) == ["retrieve", "fetch", "generate"]
    assert st["retrieve"]["latency_s"]["n"] == 20
    assert st["retrieve"]["latency_s"]["p50"] == pytest.approx(0.002, abs=1e-9)
    assert st["generate"]["latency_s"]["max"] == pytest.approx(0.29, abs=1e-9)
    shares = [b["share_of_e2e"] for b in st.values()]
    e2e_mean = s["latency_s"]["mean"]
    assert st["generate"]["share_of_e2e"] == pytest.approx(0.195 / e2e_mean, rel=1e-6)
    # stages run in sequence inside the request: their shares add up to less than 1
    assert 0.99 < sum(shares) < 1.0
    assert s["pipeline"]["outside_stages_share"] == pytest.approx(1 - sum(shares))
    assert s["pipeline"]["stage_sum_exceeds_e2e"] == 0
    assert st["generate"]["ttft_s"]["p50"] == pytest.approx(0.195 / 2, abs=1e-6)
    assert st["generate"]["tpot_s"]["n"] == 20
    assert st["retrieve"]["recall"] == {"k": 4, "n": 20, "mean": 0.75, "min": 0.75}
    p99 = s["pipeline"]["breakdown"]["p99"]
    assert p99["stages_s"]["generate"] == pytest.approx(0.29, abs=1e-9)
    assert s["pipeline"]["failed_by_stage"] == {"fetch": 1}
    assert s["requests"]["errors"] == 1


def test_stage_slo_rules_read_the_stage_blocks(run_dir):
    verdicts = {r["rule"]: r for r in summarize(run_dir)["slo"]["rules"]}
    assert verdicts["stage.retrieve.p99 < 50ms"]["passed"] is True
    assert verdicts["stage.retrieve.p99 < 50ms"]["source"] == "stages.retrieve.latency_s"
    assert verdicts["stage.generate.ttft_p99 < 10ms"]["passed"] is False
    assert verdicts["stage.generate.tpot_p50 < 1s"]["source"] == "stages.generate.tpot_s"


def test_a_rule_on_a_stage_without_statistics_fails_with_a_note():
    [v] = slo.evaluate(slo.parse_rules(["stage.rerank.p99 < 1s"]), {"stages": {}})["rules"]
    assert v["passed"] is False and "no statistics of stage 'rerank'" in v["note"]


def test_stage_times_that_exceed_the_request_are_counted(tmp_path, run_dir):
    lines = (run_dir / "requests.jsonl").read_text().splitlines()
    bad = json.loads(lines[0])
    bad["t_end"] = bad["stages"]["generate"]["t_start"]   # a request shorter than its stages
    lines[0] = json.dumps(bad)
    (run_dir / "requests.jsonl").write_text("\n".join(lines) + "\n")
    assert summarize(run_dir)["pipeline"]["stage_sum_exceeds_e2e"] == 1


def test_the_report_draws_the_stage_breakdown_and_cdfs(run_dir, tmp_path):
    """(reporting, here for the records above) the report's pipeline section and both plots."""
    from aifb.analysis.summary import write_summary
    from aifb.reporting.report import build_report

    write_summary(run_dir, run_dir / "summary.json")
    out = tmp_path / "report"
    build_report(run_dir, out)
    md = (out / "report.md").read_text()
    assert "## Pipeline stages" in md and "| generate | chat |" in md
    assert "failed requests by stage: fetch 1" in md
    for name in ("pipeline_breakdown.png", "pipeline_stage_cdf.png"):
        assert (out / "plots" / name).stat().st_size > 5000
        assert f"plots/{name}" in md
