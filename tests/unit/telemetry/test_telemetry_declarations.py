"""What each kind declares for server telemetry (its service class's `telemetry_sources`) and
what aifb.telemetry.server derives from those declarations alone: the requests the server
counted, the LLM figures, the panel's queue series. No server: telemetry.jsonl is written here."""

from __future__ import annotations

import json

import pytest

from aifb.services import available_kinds, get_service
from aifb.telemetry import window as tw
from aifb.telemetry.launch import plan, public
from aifb.telemetry.server import declared, server_block

EP = "http://127.0.0.1:1234"


def sources(kind: str, secrets: dict | None = None, extra: dict | None = None) -> list[dict]:
    return get_service(kind).telemetry_sources(EP, secrets or {}, extra or {})


def write(tmp_path, rows) -> tw.Telemetry:
    """rows: (t, source, name, labels, value, kind); each source gets an `up` per distinct t."""
    path = tmp_path / "telemetry.jsonl"
    ups = sorted({(t, src) for t, src, *_ in rows})
    with open(path, "w") as fh:
        for t, src, name, labels, value, kind in rows:
            fh.write(json.dumps({"t": t, "source": src, "name": name, "labels": labels,
                                 "value": value, "kind": kind}) + "\n")
        for t, src in ups:
            fh.write(json.dumps({"t": t, "source": src, "name": "up", "labels": {}, "value": 1,
                                 "kind": "gauge"}) + "\n")
    return tw.load(path)


def counter(src, name, per_s, labels=None, ts=range(0, 11)):
    return [(float(t), src, name, labels or {}, float(per_s * t), "counter") for t in ts]


def test_every_kind_declares_its_sources_and_plan_adds_the_local_ones():
    expected = {"redis": ["redis"], "postgres": ["postgres"], "llamacpp": ["llamacpp", "llamacpp_slots"],
                "vllm": ["vllm"], "ollama": ["ollama"], "qdrant": ["qdrant", "qdrant_telemetry"],
                "chroma": [], "s3": [], "minio": ["minio"]}
    assert set(expected) == set(available_kinds())
    for kind, names in expected.items():
        assert [s["name"] for s in sources(kind)] == names, kind
    local = plan(sources("redis"), pid=42, local=True)
    assert [s["name"] for s in local][:3] == ["node", "process", *(["rapl"] if local[2]["name"] == "rapl" else ["gpu"])]
    assert [s["name"] for s in plan(sources("redis"), pid=42, local=False)] == ["redis"]
    # SeaweedFS' metrics port is known only once weed mini runs here
    (sw,) = sources("s3", extra={"ports": {"metrics": 9999}})
    assert sw["url"] == "http://127.0.0.1:9999/metrics"


def test_secrets_reach_the_sources_but_not_run_json():
    red = sources("redis", {"password": "pw", "api_key": "k"})[0]
    assert red["secrets"] == {"password": "pw"}
    assert sources("vllm", {"api_key": "k"})[0]["headers"] == {"Authorization": "Bearer k"}
    assert sources("qdrant", {"password": "q"})[0]["headers"] == {"api-key": "q"}
    text = json.dumps(public(sources("redis", {"password": "pw"}) + sources("vllm", {"api_key": "k"})))
    assert "pw" not in text and "Bearer" not in text and "figures" in text


def test_redis_ratio_leaves_out_the_samplers_own_commands(tmp_path):
    tel = write(tmp_path, counter("redis", "commands_total", 100, {"cmd": "get"})
                + counter("redis", "commands_total", 50, {"cmd": "info"}))
    blk = server_block(tel, 2.0, 8.0, 1.0, {"requests": 600}, {"sources": sources("redis")})
    r = blk["requests_ratio"]
    assert r["server"] == pytest.approx(600) and r["value"] == pytest.approx(1.0)
    assert r["tolerance"] == pytest.approx(0.05 + 1 / 6) and "INFO" in r["basis"]


def test_postgres_ratio_subtracts_one_transaction_per_sample_and_widens_by_the_lag(tmp_path):
    tel = write(tmp_path, counter("postgres", "database_xact_commit", 101, {"datname": "aifb"})
                + counter("postgres", "database_xact_rollback", 0, {"datname": "aifb"}))
    blk = server_block(tel, 2.0, 8.0, 1.0, {"requests": 600}, {"sources": sources("postgres")})
    r = blk["requests_ratio"]
    assert r["server"] == pytest.approx(606 - 7)   # samples at t = 2..8 inside the window
    assert r["tolerance"] == pytest.approx(0.05 + 1 / 6 + 1 / 6)


def test_a_counter_the_kind_declares_but_the_server_lacks_gives_no_ratio(tmp_path):
    tel = write(tmp_path, counter("postgres", "database_xact_commit", 100, {"datname": "aifb"}))
    assert server_block(tel, 2.0, 8.0, 1.0, {"requests": 600},
                        {"sources": sources("postgres")})["requests_ratio"] is None


def test_no_declaration_no_ratio(tmp_path):
    tel = write(tmp_path, counter("redis", "commands_total", 100, {"cmd": "get"}))
    undeclared = [{k: v for k, v in s.items() if k != "figures"} for s in sources("redis")]
    assert server_block(tel, 2.0, 8.0, 1.0, {"requests": 600},
                        {"sources": undeclared})["requests_ratio"] is None


def test_vllm_llm_figures_from_its_declaration(tmp_path):
    rows = (counter("vllm", "vllm:request_success_total", 10)
            + counter("vllm", "vllm:prefix_cache_queries_total", 100)
            + counter("vllm", "vllm:prefix_cache_hits_total", 25)
            + counter("vllm", "vllm:time_to_first_token_seconds_sum", 0.5)
            + counter("vllm", "vllm:time_to_first_token_seconds_count", 10)
            + [(float(t), "vllm", "vllm:kv_cache_usage_perc", {}, t / 10, "gauge") for t in range(11)]
            + [(float(t), "vllm", "vllm:num_requests_waiting", {}, float(t % 3), "gauge") for t in range(11)])
    tel = write(tmp_path, rows)
    blk = server_block(tel, 2.0, 8.0, 1.0, {"requests": 60, "ok": 60, "ttft_mean_s": 0.08},
                       {"sources": sources("vllm")})
    assert blk["requests_ratio"]["value"] == pytest.approx(1.0)
    llm = blk["llm"]
    assert llm["prefix_cache_hit_rate"] == pytest.approx(0.25)
    assert llm["server_ttft_mean_s"] == pytest.approx(0.05)
    assert llm["network_client_share_s"] == pytest.approx(0.03)
    assert llm["kv_cache_usage_max"] == pytest.approx(0.8) and llm["waiting_max"] == 2
    assert llm["running_mean"] is None   # declared, not sampled


def test_llamacpp_llm_block_has_only_what_it_declares(tmp_path):
    tel = write(tmp_path, counter("llamacpp", "llamacpp:tokens_predicted_total", 80)
                + [(float(t), "llamacpp", "llamacpp:requests_processing", {}, 2.0, "gauge") for t in range(11)])
    blk = server_block(tel, 2.0, 8.0, 1.0, {"requests": 60, "ok": 60, "output_tokens": 480},
                       {"sources": sources("llamacpp")})
    assert blk["requests_ratio"]["value"] == pytest.approx(1.0)
    assert blk["requests_ratio"]["client"] == 480   # tokens, not requests
    assert set(blk["llm"]) == {"kv_cache_usage_p95", "kv_cache_usage_max", "waiting_max", "running_mean"}
    assert blk["llm"]["running_mean"] == 2.0


def test_the_panel_queue_series_are_the_declared_ones():
    assert declared(sources("llamacpp"), "queue") == [
        ("llamacpp", ["llamacpp:requests_processing", "llamacpp:requests_deferred"]),
        ("llamacpp_slots", ["slots_processing"])]
    assert declared(sources("redis"), "queue") == [("redis", ["connected_clients"])]
    assert declared(sources("chroma"), "queue") == []


def test_minio_token_is_the_jwt_minio_checks():
    import base64
    import hashlib
    import hmac

    from aifb.services.minio import TOKEN_VALID_S, prometheus_token
    tok = prometheus_token("ak", "sk-secret", now=1000.0)
    header, claims, sig = tok.split(".")
    unb64 = lambda p: base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))   # noqa: E731
    assert json.loads(unb64(header)) == {"alg": "HS512", "typ": "JWT"}
    assert json.loads(unb64(claims)) == {"exp": 1000 + TOKEN_VALID_S, "sub": "ak", "iss": "prometheus"}
    assert unb64(sig) == hmac.new(b"sk-secret", f"{header}.{claims}".encode(), hashlib.sha512).digest()
    (src,) = sources("minio", {"access_key": "ak", "secret_key": "sk-secret"})
    assert src["url"] == EP + "/minio/v2/metrics/cluster"
    assert src["headers"]["Authorization"].startswith("Bearer ey")
