"""Pipeline recipes (category: pipeline): the shipped RAG recipes validate; bad references are
named by stage (an unknown service or stage, an input from a later stage, an op the service's
kind cannot do, a stage workload its kind's schema refuses); stage SLO rules are checked against
the stages; and a stage's record times are written on the request's clock."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from aifb.errors import RecipeError
from aifb.records import encode_row
from aifb.workflow.recipe import load_recipe, service_specs, validate

REPO = Path(__file__).resolve().parents[3]
RAG = yaml.safe_load((REPO / "recipes" / "recipe_rag_1client.yaml").read_text())


def error_of(change) -> str:
    recipe = copy.deepcopy(RAG)
    change(recipe)
    with pytest.raises(RecipeError) as info:
        validate(recipe)
    return str(info.value)


@pytest.mark.parametrize("clients", [1, 2, 4])
def test_the_shipped_rag_recipes_validate(clients):
    recipe = load_recipe(REPO / "recipes" / f"recipe_rag_{clients}client.yaml")
    assert recipe["load"]["clients"] == clients
    assert [s["op"] for s in recipe["workload"]["stages"]] == ["query", "mget", "chat"]
    assert {n: s["kind"] for n, s in service_specs(recipe).items()} == {
        "vectors": "chroma", "cache": "redis", "llm": "llamacpp"}


def test_an_unknown_service_is_named_with_its_stage():
    msg = error_of(lambda r: r["workload"]["stages"][1].update(service="db"))
    assert "workload.stages[1] (fetch): service 'db' is not under services: (cache, llm, vectors)" in msg


def test_an_input_from_a_later_stage_or_an_unknown_one_is_refused():
    msg = error_of(lambda r: r["workload"]["stages"][1].update(input="generate"))
    assert "(fetch): input 'generate' is this stage or a later one" in msg
    msg = error_of(lambda r: r["workload"]["stages"][2].update(input="nowhere"))
    assert "(generate): input 'nowhere' is not a stage of this pipeline" in msg


def test_an_op_the_kind_cannot_do_and_a_wrong_input_are_refused():
    msg = error_of(lambda r: r["workload"]["stages"][0].update(service="cache"))
    assert "(retrieve): op query needs a service of kind chroma; 'cache' is redis" in msg
    msg = error_of(lambda r: r["workload"]["stages"][2].update(input="retrieve"))
    assert "(generate): op chat takes a mget stage or no input, not the query stage 'retrieve'" in msg


def test_a_stage_workload_is_validated_against_its_kinds_schema():
    msg = error_of(lambda r: r["workload"]["stages"][2]["workload"].update(temprature=0.1))
    assert "workload.stages[2].workload" in msg and "temprature" in msg


def test_service_and_services_do_not_mix():
    assert "names its services under `services:`" in error_of(
        lambda r: r.update(service={"kind": "redis"}))
    redis = yaml.safe_load((REPO / "recipes" / "recipe_redis_1client.yaml").read_text())
    redis["services"] = {"a": {"kind": "redis"}}
    with pytest.raises(RecipeError, match="only a pipeline recipe"):
        validate(redis)


def test_stage_slo_rules_name_a_stage_that_measures_them():
    msg = error_of(lambda r: r.update(slo=["stage.rerank.p99 < 1s"]))
    assert "no stage 'rerank' (stages: retrieve, fetch, generate)" in msg
    msg = error_of(lambda r: r.update(slo=["stage.retrieve.ttft_p99 < 1s"]))
    assert "ttft is measured on a chat stage; 'retrieve' is a query" in msg


def test_stage_times_are_written_on_the_request_clock():
    t0 = 1_000_000_000
    stages = {"retrieve": {"t_start": t0 + 1_000, "t_end": t0 + 2_000_500, "ok": True,
                           "error": None, "hits": 4},
              "generate": {"t_start": t0 + 3_000_000, "t_first": None, "t_end": t0 + 4_000_000,
                           "ok": False, "error": {"type": "Timeout", "message": "x"}}}
    res = ("pipeline", False, "Timeout", "stage generate: x", 10, 20, None, t0 + 4_000_000,
           {"stages": stages, "failed_stage": "generate"})
    rec = json.loads(encode_row((0, 0, 1, None, t0, res), "measure", t0))
    assert rec["stages"]["retrieve"] == {"t_start": 1e-6, "t_end": 0.0020005, "ok": True,
                                         "error": None, "hits": 4}
    assert rec["stages"]["generate"]["t_first"] is None
    assert rec["stages"]["generate"]["t_end"] == rec["t_end"] == 0.004
    assert rec["failed_stage"] == "generate" and rec["error"]["message"].startswith("stage generate")
