"""One benchmark through aifb.workflow.runner: bad input becomes a recorded failure with a clear reason,
before the measure phase, and no server is left behind."""

from __future__ import annotations

import socket

import pytest

from aifb.workflow import registry
from aifb.workflow.recipe import validate
from aifb.endpoints import redact
from aifb.workflow.runner import run_benchmark
from support import pid_alive, read_json, redis_servers_under

pytestmark = pytest.mark.redis


def recipe(**service):
    return validate({
        "name": "fault", "category": "storage", "service": {"kind": "redis", **service},
        "workload": {"ops": {"get": 1}, "keyspace": 100},
        "load": {"clients": 1, "duration": "1s", "warmup": "0s"},
    })


def run(tmp_path, **service):
    bid = registry.allocate(registry.make_entry(recipe(**service)), tmp_path)
    out = run_benchmark(bid, root=tmp_path, log=lambda m: None)
    assert read_json(tmp_path / "results" / bid / "run.json") == out
    return bid, out


def test_completed_run_records_service_and_stops_it(tmp_path):
    bid, out = run(tmp_path)
    assert out["status"] == "completed", out["reason"]
    assert out["load_stats"]["stopped_by"] == "duration"
    assert not pid_alive(out["service"]["pid"])
    assert redis_servers_under(tmp_path) == []


def test_binary_not_installed(tmp_path):
    _, out = run(tmp_path, binary="/nonexistent/redis-server")
    assert out["status"] == "failed"
    assert "/nonexistent/redis-server not found" in out["reason"]
    assert "apt-get install redis-server" in out["reason"]


def test_endpoint_unreachable(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bid, out = run(tmp_path, endpoint=f"redis://127.0.0.1:{port}")
    assert out["status"] == "failed"
    assert f"127.0.0.1:{port}" in out["reason"] and "refused" in out["reason"]
    assert not out["service"]["managed"]
    assert (tmp_path / "results" / bid / "requests.jsonl").read_text() == ""


def test_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        _, out = run(tmp_path, port=port)
    assert out["status"] == "failed"
    assert f"port {port} on 127.0.0.1 is in use" in out["reason"]
    assert redis_servers_under(tmp_path) == []


def test_external_endpoint_is_not_deployed_or_torn_down(tmp_path, redis_server):
    _, out = run(tmp_path, endpoint=redis_server)
    assert out["status"] == "completed", out["reason"]
    assert out["service"]["managed"] is False and out["service"].get("pid") is None


def test_password_never_reaches_run_json(tmp_path):
    assert redact("redis://:hunter2@10.0.0.5:6379/0") == "redis://:***@10.0.0.5:6379/0"
    assert redact("redis://10.0.0.5:6379") == "redis://10.0.0.5:6379"
