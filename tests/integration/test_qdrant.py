"""Qdrant: the REST client, the service and a run end to end, against tests/fakes/fake_qdrant.py -
a FAKE server following Qdrant's published REST API (no Qdrant server can be installed on these
machines). The fake searches exactly, so recall must be 1.0; with `skip=m` it drops the m best
matches, so recall@k must be exactly (k - m) / k."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import threading
from pathlib import Path

import pytest

from aifb.clock import RunClock
from aifb.load.engine import run_load_sync
from aifb.errors import ServiceError
from fakes.fake_qdrant import FakeQdrant, start

pytestmark = pytest.mark.qdrant
SMALL = {"vectors": 1200, "dimension": 16, "k": 10, "queries": 100, "seed": 3}
KEY = "qdrant-Key-Not-For-Logs-42"
FAKE_SCRIPT = Path(__file__).resolve().parents[1] / "fakes" / "fake_qdrant.py"


class FakeInThread:
    """The fake on its own event loop in a thread (the engine runs in the test's thread)."""

    def __init__(self, **kw):
        self.fake = FakeQdrant(**kw)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main():
            asyncio.set_event_loop(self.loop)
            self.runner, self.endpoint = self.loop.run_until_complete(start(self.fake))
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def close(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def fake_qdrant():
    servers = []

    def make(**kw):
        s = FakeInThread(**kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def load(endpoint, workload, tmp_path, clients=1, concurrency=1, duration=0.6, warmup=0.1,
         secrets=None, name="requests.jsonl"):
    path = tmp_path / name
    stats = run_load_sync(kind="qdrant", endpoint=endpoint, workload=workload,
                          load={"clients": clients, "concurrency": concurrency,
                                "duration_s": duration, "warmup_s": warmup},
                          seed=42, records_path=path, clock=RunClock(), secrets=secrets,
                          log=lambda m: None)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return stats, records


def measured_queries(records):
    return [r for r in records if r["phase"] == "measure" and r["ok"] and r["op"] == "query"]


# ----------------------------------------------------------------------------- recall

@pytest.mark.parametrize("space", ["cosine", "l2", "ip"])
def test_exact_search_gives_recall_one(fake_qdrant, tmp_path, space):
    srv = fake_qdrant()
    stats, records = load(srv.endpoint, {**SMALL, "index": {"space": space}}, tmp_path,
                          clients=2, concurrency=2)
    q = measured_queries(records)
    assert len(q) > 30 and stats["measured"]["errors"] == 0
    assert all(r["recall"] == 1.0 for r in q)
    d = stats["client"]
    assert d["index_reported"]["space"] == {"cosine": "Cosine", "l2": "Euclid", "ip": "Dot"}[space]
    assert d["index_reported"]["points_count"] == 1200 and d["dimension_reported"] == 16
    assert ("POST", "/collections/aifb_bench/points/query") in srv.fake.requests


@pytest.mark.parametrize("skip", [1, 3])
def test_a_known_approximation_gives_the_expected_recall(fake_qdrant, tmp_path, skip):
    srv = fake_qdrant(skip=skip)
    _, records = load(srv.endpoint, SMALL, tmp_path)
    q = measured_queries(records)
    assert q and all(r["recall"] == pytest.approx((10 - skip) / 10) for r in q)


def test_filter_and_inserts_keep_recall_exact(fake_qdrant, tmp_path):
    srv = fake_qdrant()
    wl = {**SMALL, "ops": {"query": 0.5, "insert": 0.5}, "insert_batch": 3,
          "filter": {"field": "category", "values": 4}, "index": {"space": "l2"}}
    stats, records = load(srv.endpoint, wl, tmp_path, clients=2)
    m = [r for r in records if r["phase"] == "measure"]
    q = [r for r in m if r["op"] == "query"]
    assert q and any(r["op"] == "insert" for r in m) and all(r["ok"] for r in m)
    assert any(r.get("returned_inserted") for r in q)   # inserted vectors did enter top-k
    assert all(r["recall"] == 1.0 for r in q)
    coll = srv.fake.collections["aifb_bench"]
    n_ins = sum(1 for r in records if r["op"] == "insert" and r["ok"])
    assert len(coll.points) == 1200 + 3 * n_ins
    assert "category" in coll.payload_schema                # a payload index for the filter
    assert all(set(p[1]) == {"category"} for p in list(coll.points.values())[:50])


def test_legacy_search_api_on_old_servers(fake_qdrant, tmp_path):
    srv = fake_qdrant(version="1.9.2")
    stats, records = load(srv.endpoint, SMALL, tmp_path)
    assert all(r["recall"] == 1.0 for r in measured_queries(records))
    assert ("POST", "/collections/aifb_bench/points/search") in srv.fake.requests
    assert ("POST", "/collections/aifb_bench/points/query") not in srv.fake.requests
    assert stats["client"]["search_api"] == "POST /points/search"


def test_index_parameters_reach_the_server(fake_qdrant, tmp_path):
    srv = fake_qdrant()
    wl = {**SMALL, "index": {"space": "cosine", "M": 32, "construction_ef": 200, "ef_search": 77,
                             "indexing_threshold_kb": 1000}}
    stats, _ = load(srv.endpoint, wl, tmp_path, duration=0.2, warmup=0)
    idx = stats["client"]["index_reported"]
    assert (idx["M"], idx["construction_ef"], idx["indexing_threshold_kb"]) == (32, 200, 1000)
    assert idx["ef_search"] == 77


def test_waits_for_indexing_and_times_out_clearly(fake_qdrant, tmp_path):
    srv = fake_qdrant(indexing_polls=3)
    load(srv.endpoint, SMALL, tmp_path, duration=0.2, warmup=0)
    gets = [p for m, p in srv.fake.requests if m == "GET" and p == "/collections/aifb_bench"]
    assert len(gets) >= 4   # yellow, yellow, yellow, green
    slow = fake_qdrant(indexing_polls=10_000)
    with pytest.raises(ServiceError, match="still yellow.*after 0.5 s"):
        load(slow.endpoint, {**SMALL, "index_wait_s": 0.5}, tmp_path, name="b.jsonl")


# ----------------------------------------------------------------------------- API key

def test_api_key_is_sent_and_never_shown(fake_qdrant, tmp_path):
    srv = fake_qdrant(api_key=KEY)
    stats, records = load(srv.endpoint, SMALL, tmp_path, secrets={"api_key": KEY})
    assert measured_queries(records)
    assert KEY not in json.dumps(stats, default=str)
    assert KEY not in (tmp_path / "requests.jsonl").read_text()
    assert stats["client"]["auth"] == "api-key"


def test_missing_or_wrong_api_key_fails_before_measuring(fake_qdrant, tmp_path):
    srv = fake_qdrant(api_key=KEY)
    with pytest.raises(ServiceError, match="an API key is required: set service.api_key_env"):
        load(srv.endpoint, SMALL, tmp_path)
    with pytest.raises(ServiceError, match="the API key was rejected") as exc:
        load(srv.endpoint, SMALL, tmp_path, secrets={"api_key": "wrong-" + KEY})
    assert KEY not in str(exc.value)
    assert not (tmp_path / "requests.jsonl").exists()


# ----------------------------------------------------------------------------- bad input

def test_unreachable_endpoint(tmp_path):
    from aifb.process import free_port
    port = free_port()
    with pytest.raises(ServiceError, match=f"cannot reach qdrant at 127.0.0.1:{port}"):
        load(f"http://127.0.0.1:{port}", SMALL, tmp_path)


def test_create_false_checks_the_existing_collection(fake_qdrant, tmp_path):
    srv = fake_qdrant()
    with pytest.raises(ServiceError, match="collection 'aifb_bench' does not exist.*create: true"):
        load(srv.endpoint, {**SMALL, "create": False}, tmp_path)
    load(srv.endpoint, SMALL, tmp_path, duration=0.2, warmup=0, name="a.jsonl")
    _, records = load(srv.endpoint, {**SMALL, "create": False}, tmp_path, name="b.jsonl")
    assert all(r["recall"] == 1.0 for r in measured_queries(records))
    with pytest.raises(ServiceError, match="dimension mismatch.*16-dimensional.*dimension 32"):
        load(srv.endpoint, {**SMALL, "create": False, "dimension": 32}, tmp_path, name="c.jsonl")
    with pytest.raises(ServiceError, match="uses distance Cosine.*'l2'"):
        load(srv.endpoint, {**SMALL, "create": False, "index": {"space": "l2"}}, tmp_path,
             name="d.jsonl")
    with pytest.raises(ServiceError, match="does not hold this workload's seeded data"):
        load(srv.endpoint, {**SMALL, "create": False, "seed": 4}, tmp_path, name="e.jsonl")


def test_server_rejecting_the_dimension_is_named(fake_qdrant, tmp_path):
    """A server whose collection expects other vectors answers the upsert with 400 (injected:
    the fake creates every collection with 8 dimensions); the error names the mismatch."""
    srv = fake_qdrant(force_dimension=8)
    with pytest.raises(ServiceError, match="rejected the vectors: dimension mismatch \\(workload "
                                           "dimension 16\\).*expected dim: 8, got 16"):
        load(srv.endpoint, SMALL, tmp_path)
    assert not (tmp_path / "requests.jsonl").exists()


# ----------------------------------------------------------------------------- service

def fake_binary(tmp_path: Path) -> Path:
    """A `qdrant` stand-in that runs the FAKE server (named as such in its --version)."""
    path = tmp_path / "bin" / "qdrant"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_SCRIPT} \"$@\"\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_service_without_the_binary_says_what_to_do(tmp_path):
    from aifb.services import get_service
    svc = get_service("qdrant")({"kind": "qdrant", "binary": "qdrant-not-here"}, tmp_path,
                                tmp_path / "service.log")
    with pytest.raises(ServiceError, match="qdrant-not-here not found on PATH: Qdrant has no pip "
                                           "or Debian package.*qdrant/qdrant"):
        asyncio.run(svc.deploy())


def test_service_deploys_with_env_config_and_api_key(tmp_path, monkeypatch):
    from aifb.clients.vector.qdrant import QdrantClient
    from aifb.services import get_service
    monkeypatch.setenv("AIFB_TEST_QDRANT_KEY", KEY)
    binary = fake_binary(tmp_path)
    svc = get_service("qdrant")({"kind": "qdrant", "name": "t", "binary": str(binary),
                                 "api_key_env": "AIFB_TEST_QDRANT_KEY"},
                                tmp_path / "svc", tmp_path / "service.log")

    async def run():
        endpoint = await svc.deploy()
        try:
            assert svc.alive()
            await QdrantClient.probe(endpoint, 5)           # /readyz needs no key
            c = QdrantClient(endpoint, SMALL, 1, {"api_key": KEY})
            await c.startup(1)
            try:
                await c.validate()                          # GET /collections with the key
            finally:
                await c.shutdown()
            bad = QdrantClient(endpoint, SMALL, 1)
            await bad.startup(1)
            try:
                with pytest.raises(ServiceError, match="an API key is required"):
                    await bad.validate()
            finally:
                await bad.shutdown()
            return endpoint
        finally:
            await svc.teardown()

    endpoint = asyncio.run(run())
    info = svc.describe()
    assert endpoint == f"http://127.0.0.1:{info['port']}"
    assert info["version"] == "1.12.4-fake" and info["extra"]["cluster_image"].endswith("qdrant/qdrant")
    assert info["command"] == [str(binary), "--disable-telemetry"]
    assert KEY not in json.dumps(info) and info["extra"]["api_key"]
    assert (tmp_path / "svc" / "storage").exists() is False and info["extra"]["storage_removed"]
    assert "QDRANT__SERVICE__API_KEY" not in os.environ
    assert not svc.alive() and info["stopped_at"]
    log = (tmp_path / "service.log").read_text()
    assert "FAKE qdrant" in log and f"127.0.0.1:{info['port']}" in log and KEY not in log


def test_service_with_a_missing_key_variable(tmp_path):
    from aifb.services import get_service
    svc = get_service("qdrant")({"kind": "qdrant", "binary": str(fake_binary(tmp_path)),
                                 "api_key_env": "AIFB_NOT_SET_ANYWHERE"}, tmp_path, tmp_path / "l")
    with pytest.raises(ServiceError, match="service.api_key_env names AIFB_NOT_SET_ANYWHERE, which is not set"):
        asyncio.run(svc.deploy())


@pytest.mark.workflow
def test_aifb_run_qdrant_recipe_with_the_fake_binary(tmp_path, monkeypatch):
    """recipe_qdrant_1client through `aifb run`, the service deployed from the FAKE binary with
    an API key from the environment: the whole pipeline (deploy, load, teardown, summary,
    report) for kind qdrant, and the key in no artefact. (The key is named by
    service.password_env; aifb.credentials reads it for the server and the client alike, as
    it does api_key_env.)"""
    from support import aifb, benchmark_id_from, make_workspace, pid_alive, read_json
    monkeypatch.setenv("AIFB_TEST_QDRANT_KEY", KEY)
    ws = make_workspace(tmp_path)
    binary = fake_binary(tmp_path)
    proc = aifb(ws, "run", "recipes/recipe_qdrant_1client.yaml", "--set", f"service.binary={binary}",
                "--set", "service.password_env=AIFB_TEST_QDRANT_KEY",
                "--set", "load.duration=1s", "--set", "load.warmup=0.3s",
                "--set", "workload.vectors=2000", timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bid = benchmark_id_from(proc.stdout)
    assert f"{bid}: completed" in proc.stdout
    run = read_json(ws / "results" / bid / "run.json")
    assert run["service"]["version"] == "1.12.4-fake" and not pid_alive(run["service"]["pid"])
    assert run["clients"]["implementation"]["auth"] == "api-key"
    summary = read_json(ws / "results" / bid / "summary.json")
    assert summary["vector"]["recall_at_k"]["mean"] == 1.0 and summary["vector"]["k"] == 10
    assert summary["vector"]["index_reported"]["indexing_threshold_kb"] == 1000
    # server telemetry through the fake's /metrics (with the API key): it counted what we sent
    srv = summary["server"]
    assert srv["sources"]["qdrant"]["gaps"] == 0, srv["sources"]["qdrant"]
    assert srv["requests_ratio"]["within_tolerance"], srv["requests_ratio"]
    report = (ws / "reports" / bid / "report.md").read_text()
    assert "## Vector search: recall@10 under load" in report
    for f in list((ws / "results").rglob("*")) + list((ws / "reports").rglob("*")):
        if f.is_file() and f.suffix in (".json", ".jsonl", ".md", ".log", ""):
            assert KEY not in f.read_text(errors="replace"), f
    assert KEY not in proc.stdout + proc.stderr
