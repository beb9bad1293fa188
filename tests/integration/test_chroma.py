"""ChromaDB: the vector workload (data, exact top-k, recall), the HTTP API v2 client and the
service, against a real `chroma run` (pip chromadb) on a free loopback port; the recall metrics
module; and `aifb run` of the seed's chroma recipe end to end."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from aifb.clients.vector.common import (BLOCK, RecallScorer, VectorWorkload,
                                        canonical_distances, data_rows, dataset_for, exact_topk, query_set)
from aifb.clock import RunClock
from aifb.load.engine import run_load_sync
from aifb.errors import RecipeError, ServiceError
from support import require

pytestmark = pytest.mark.chroma
SMALL = {"vectors": 1500, "dimension": 24, "k": 10, "queries": 120, "seed": 7}


def chroma_binary() -> str | None:
    found = shutil.which("chroma")
    beside = Path(sys.executable).parent / "chroma"
    return found or (str(beside) if beside.is_file() else None)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body=None):
    req = urllib.request.Request(url, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture(scope="module")
def chroma(tmp_path_factory):
    """The endpoint (http://127.0.0.1:PORT) of a real `chroma run`, killed at teardown."""
    binary = chroma_binary()
    if binary is None:
        require("chroma not installed (pip install chromadb)")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("chroma")
    log = open(workdir / "chroma.log", "wb")
    proc = subprocess.Popen([binary, "run", "--path", str(workdir / "data"), "--host",
                             "127.0.0.1", "--port", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if http("GET", f"{endpoint}/api/v2/heartbeat")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chroma did not start on port {port}: "
                                   f"{(workdir / 'chroma.log').read_text()[-2000:]}")
            time.sleep(0.05)
        yield endpoint
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()


def db(endpoint: str) -> str:
    return f"{endpoint}/api/v2/tenants/default_tenant/databases/default_database"


def load(endpoint, workload, tmp_path, clients=1, concurrency=1, duration=1.0, warmup=0.2,
         secrets=None, name="requests.jsonl"):
    path = tmp_path / name
    stats = run_load_sync(kind="chroma", endpoint=endpoint, workload=workload,
                          load={"clients": clients, "concurrency": concurrency,
                                "duration_s": duration, "warmup_s": warmup},
                          seed=42, records_path=path, clock=RunClock(), secrets=secrets,
                          log=lambda m: None)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return stats, records


def measured_queries(records):
    return [r for r in records if r["phase"] == "measure" and r["ok"] and r["op"] == "query"]


# ----------------------------------------------------------------------------- data set

def test_data_rows_are_the_same_whichever_range_asks():
    wl = VectorWorkload({**SMALL, "vectors": BLOCK + 700, "filter": {"values": 5}}, "chroma")
    full, cats = data_rows(wl, 0, wl.vectors)
    assert full.shape == (BLOCK + 700, 24) and full.dtype == np.float32
    part, pcats = data_rows(wl, BLOCK - 3, BLOCK + 4)   # across the block boundary
    assert np.array_equal(part, full[BLOCK - 3:BLOCK + 4])
    assert np.array_equal(pcats, cats[BLOCK - 3:BLOCK + 4])
    assert set(np.unique(cats)) == set(range(5))
    other = VectorWorkload({**SMALL, "seed": 8}, "chroma")
    assert not np.array_equal(data_rows(other, 0, 10)[0], data_rows(wl, 0, 10)[0])


@pytest.mark.parametrize("space", ["cosine", "l2", "ip"])
@pytest.mark.parametrize("values", [None, 3])
def test_exact_topk_is_the_brute_force_answer(space, values):
    """Block-wise top-k (argpartition merges) equals a plain full sort, per metric and filter."""
    wl = VectorWorkload({**SMALL, "vectors": BLOCK + 321, "queries": 40, "index": {"space": space},
                         "filter": {"values": values} if values else None}, "chroma")
    q, f = query_set(wl)
    truth = exact_topk(wl, q, f)
    x, cats = data_rows(wl, 0, wl.vectors)
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    for i in range(len(q)):
        if space == "l2":
            d = ((x64 - q64[i]) ** 2).sum(1)
        elif space == "cosine":
            d = 1 - (x64 @ q64[i]) / (np.linalg.norm(x64, axis=1) * np.linalg.norm(q64[i]))
        else:
            d = -(x64 @ q64[i])
        if values:
            d[cats != f[i]] = np.inf
        want = np.argsort(d, kind="stable")[:wl.k]
        assert list(truth.ids[i]) == list(want)
        assert truth.kth[i] == pytest.approx(d[want[-1]], rel=1e-9, abs=1e-9)
    assert (truth.n_valid == wl.k).all()


def test_filter_with_fewer_matches_than_k_shrinks_the_denominator():
    wl = VectorWorkload({**SMALL, "vectors": 30, "k": 10, "queries": 5,
                         "filter": {"values": 6}}, "chroma")
    ds = dataset_for(wl)
    x, cats = data_rows(wl, 0, 30)
    for i in range(5):
        matching = int((cats == ds.filters[i]).sum())
        assert ds.truth.n_valid[i] == min(10, matching)
        assert (ds.truth.ids[i][ds.truth.n_valid[i]:] == -1).all()


def test_recall_scorer():
    wl = VectorWorkload({**SMALL, "queries": 3}, "chroma")
    ds = dataset_for(wl)
    sc = RecallScorer(ds.truth, str)
    exact = [str(i) for i in ds.truth.ids[0]]
    assert sc.score(0, exact, None, lambda i: False) == (1.0, 0)
    assert sc.score(0, exact[:7] + ["999999", "999998", "999997"], None, lambda i: False)[0] == 0.7
    assert sc.score(0, [], None, lambda i: False)[0] == 0.0
    kth = float(ds.truth.kth[0])
    ins = lambda i: i.startswith("ins-")  # noqa: E731
    # an inserted vector nearer than the exact k-th counts (it is in the true top-k) ...
    r, n = sc.score(0, exact[:9] + ["ins-a"], [0.0] * 9 + [kth * 0.5], ins)
    assert (r, n) == (1.0, 1)
    # ... one beyond it does not
    r, n = sc.score(0, exact[:9] + ["ins-a"], [0.0] * 9 + [kth + 0.5], ins)
    assert (r, n) == (0.9, 1)


def test_recall_counts_a_tie_at_the_kth_distance():
    """Issue 12 item 10: a returned base vector that is not the id the exact search kept, but
    lies at the k-th distance, is as correct an answer: recall 1, not 0.9. Each id counts once."""
    wl = VectorWorkload({**SMALL, "queries": 3}, "chroma")
    ds = dataset_for(wl)
    sc = RecallScorer(ds.truth, str)
    exact = [str(i) for i in ds.truth.ids[0]]
    kth = float(ds.truth.kth[0])
    never = lambda i: False  # noqa: E731
    assert sc.score(0, exact[:9] + ["tied"], [0.0] * 9 + [kth], never) == (1.0, 0)
    assert sc.score(0, exact[:9] + ["far"], [0.0] * 9 + [kth * 1.01 + 1e-3], never) == (0.9, 0)
    # a server that returns one id twice does not score it twice
    assert sc.score(0, exact[:9] + [exact[0]], [0.0] * 10, never) == (0.9, 0)


def test_canonical_distances_match_chromas_conventions(chroma, tmp_path):
    """What the server reports (l2: squared, cosine: 1 - cos, ip: 1 - dot) is what the recall
    check compares against (after ip's shift)."""
    for space in ("l2", "cosine", "ip"):
        wl = {**SMALL, "vectors": 300, "queries": 5, "collection": f"aifb-dist-{space}",
              "index": {"space": space, "ef_search": 500}}
        load(chroma, wl, tmp_path, duration=0.2, warmup=0)
        st, coll = http("GET", f"{db(chroma)}/collections/{wl['collection']}")
        parsed = VectorWorkload(wl, "chroma")
        q, _ = query_set(parsed)
        st, res = http("POST", f"{db(chroma)}/collections/{coll['id']}/query",
                       {"query_embeddings": [q[0].tolist()], "n_results": 3,
                        "include": ["distances"]})
        x, _ = data_rows(parsed, 0, parsed.vectors)
        mine = canonical_distances(space, q[:1], x)[0]
        for i, d in zip(res["ids"][0], res["distances"][0]):
            server = d - 1.0 if space == "ip" else d
            assert server == pytest.approx(mine[int(i)], rel=1e-4, abs=1e-4), space


# ----------------------------------------------------------------------------- workload parsing

@pytest.mark.parametrize("workload, words", [
    ({"ops": {"query": 1, "delete": 1}}, "unsupported operation"),
    ({"ops": {"query": 0}}, "sum to zero"),
    ({"index": {"space": "hamming"}}, "index.space"),
    ({"index": {"ef": 3}}, "unknown field"),
    ({"filter": {"field": "category", "values": 1}}, "filter.values"),
    ({"dimension": 0}, "dimension"),
    ({"collection": "x"}, "not a valid name"),
    ({"colour": "red"}, "unknown field"),
])
def test_bad_workloads_are_named(workload, words):
    with pytest.raises(ServiceError, match=words):
        VectorWorkload(workload, "chroma")


def test_recipe_schema_rejects_a_bad_chroma_workload():
    from aifb.workflow.recipe import validate
    recipe = {"name": "x", "category": "retrieval", "service": {"kind": "chroma"},
              "workload": {"dimension": 0, "ops": {"search": 1}, "index": {"space": "manhattan"}},
              "load": {"clients": 1, "duration": "1s"}}
    with pytest.raises(RecipeError) as exc:
        validate(recipe)
    text = str(exc.value)
    assert "workload.dimension" in text and "workload.ops" in text and "workload.index.space" in text


# ----------------------------------------------------------------------------- against chroma

def test_probe_answers_with_a_real_heartbeat(chroma):
    from aifb.clients.vector.chroma import ChromaClient
    asyncio.run(ChromaClient.probe(chroma, 5))


def test_unreachable_endpoint_fails_before_any_record(tmp_path):
    port = _free_port()
    with pytest.raises(ServiceError, match=f"cannot reach chroma at 127.0.0.1:{port}"):
        load(f"http://127.0.0.1:{port}", SMALL, tmp_path)
    assert not (tmp_path / "requests.jsonl").exists()


def test_not_a_chroma_server_is_named():
    import http.server
    import threading

    from aifb.clients.vector.chroma import ChromaClient
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        with pytest.raises(ServiceError, match=f"127.0.0.1:{port} answered GET /api/v2/heartbeat "
                                               "with HTTP 404.*not a Chroma"):
            asyncio.run(ChromaClient.probe(f"http://127.0.0.1:{port}", 3))
    finally:
        server.shutdown()
        server.server_close()


def test_near_exact_search_has_recall_one_under_load(chroma, tmp_path):
    """ef_search >= the collection size makes HNSW search exhaustively: every query's recall,
    measured under load by the client, is 1.0 - the exact top-k and Chroma agree."""
    wl = {**SMALL, "collection": "aifb-exact", "index": {"space": "cosine", "ef_search": 2000}}
    stats, records = load(chroma, wl, tmp_path, clients=2, concurrency=2)
    q = measured_queries(records)
    assert len(q) > 50 and stats["measured"]["errors"] == 0
    assert all(r["recall"] == 1.0 for r in q)
    assert {r["client"] for r in q} == {0, 1}
    assert all(0 <= r["query_id"] < SMALL["queries"] for r in q)
    assert all(r["bytes_out"] > 0 and r["bytes_in"] > 0 for r in q)
    d = stats["client"]
    assert d["index_reported"]["ef_search"] == 2000 and d["index_reported"]["space"] == "cosine"
    assert d["vectors"] == 1500 and d["dimension_reported"] == 24
    st, count = http("GET", f"{db(chroma)}/collections/{d['collection_id']}/count")
    assert count == 1500


def test_recall_in_records_is_what_the_server_returned(chroma, tmp_path):
    """A small ef_search gives recall < 1; each record's recall is recomputed here, query by
    query, from a direct request and a plain numpy sort."""
    wl = {**SMALL, "vectors": 3000, "dimension": 48, "collection": "aifb-approx",
          "index": {"space": "l2", "ef_search": 1, "M": 4, "construction_ef": 8}}
    stats, records = load(chroma, wl, tmp_path)
    q = measured_queries(records)
    mean = sum(r["recall"] for r in q) / len(q)
    assert mean < 0.999
    parsed = VectorWorkload(wl, "chroma")
    qs, _ = query_set(parsed)
    x, _ = data_rows(parsed, 0, parsed.vectors)
    cid = stats["client"]["collection_id"]
    expected = {}
    for qi in sorted({r["query_id"] for r in q})[:25]:
        st, res = http("POST", f"{db(chroma)}/collections/{cid}/query",
                       {"query_embeddings": [qs[qi].tolist()], "n_results": 10})
        d = ((x.astype(np.float64) - qs[qi]) ** 2).sum(1)
        order = np.argsort(d)
        exact, kth = set(order[:10].tolist()), d[order[9]]
        # a returned id counts when exact, or tied with the k-th distance (float32 tolerance)
        got = {int(i) for i in res["ids"][0]}
        expected[qi] = len({i for i in got if i in exact
                            or d[i] <= kth + abs(kth) * 1e-6 + 1e-9}) / 10
    checked = [r for r in q if r["query_id"] in expected]
    assert checked
    for r in checked:
        assert r["recall"] == pytest.approx(expected[r["query_id"]])


def test_filter_and_inserts(chroma, tmp_path):
    wl = {**SMALL, "collection": "aifb-filter", "ops": {"query": 0.6, "insert": 0.4},
          "insert_batch": 2, "filter": {"field": "category", "values": 3},
          "index": {"space": "ip", "ef_search": 2000}}
    stats, records = load(chroma, wl, tmp_path, clients=2)
    m = [r for r in records if r["phase"] == "measure"]
    inserts = [r for r in m if r["op"] == "insert"]
    q = [r for r in m if r["op"] == "query"]
    assert inserts and q and all(r["ok"] for r in m)
    assert all("recall" not in r for r in inserts)
    # exact-enough search: inserted vectors that enter a top-k are counted as correct
    assert any(r.get("returned_inserted") for r in q)
    assert all(r["recall"] == 1.0 for r in q)
    inserted_total = 2 * sum(1 for r in records if r["op"] == "insert" and r["ok"])
    st, count = http("GET", f"{db(chroma)}/collections/{stats['client']['collection_id']}/count")
    assert count == 1500 + inserted_total
    st, got = http("POST", f"{db(chroma)}/collections/{stats['client']['collection_id']}/get",
                   {"ids": ["0", "1"], "include": ["metadatas"]})
    assert all(set(md) == {"category"} and md["category"] in (0, 1, 2) for md in got["metadatas"])


def test_create_false_uses_the_loaded_collection_and_checks_it(chroma, tmp_path):
    wl = {**SMALL, "collection": "aifb-reuse"}
    load(chroma, wl, tmp_path, duration=0.3, warmup=0, name="a.jsonl")
    stats, records = load(chroma, {**wl, "create": False}, tmp_path, duration=0.3, warmup=0,
                          name="b.jsonl")
    assert measured_queries(records)
    with pytest.raises(ServiceError, match="does not hold this workload's seeded data"):
        load(chroma, {**wl, "create": False, "seed": 8}, tmp_path, name="c.jsonl")
    with pytest.raises(ServiceError, match="holds 1500 vectors, the workload says vectors: 1400"):
        load(chroma, {**wl, "create": False, "vectors": 1400}, tmp_path, name="d.jsonl")
    with pytest.raises(ServiceError, match="uses space 'cosine'.*index.space 'l2'"):
        load(chroma, {**wl, "create": False, "index": {"space": "l2"}}, tmp_path, name="e.jsonl")


def test_create_false_without_the_collection_is_an_error(chroma, tmp_path):
    with pytest.raises(ServiceError, match="collection 'aifb-nowhere' does not exist.*create"):
        load(chroma, {**SMALL, "collection": "aifb-nowhere", "create": False}, tmp_path)
    assert not (tmp_path / "requests.jsonl").exists()


def test_dimension_mismatch_with_an_existing_collection(chroma, tmp_path):
    st, coll = http("POST", f"{db(chroma)}/collections", {"name": "aifb-dim16"})
    assert st == 200, coll
    rows = np.random.default_rng(0).standard_normal((4, 16)).tolist()
    st, _ = http("POST", f"{db(chroma)}/collections/{coll['id']}/add",
                 {"ids": ["0", "1", "2", "3"], "embeddings": rows})
    with pytest.raises(ServiceError, match="dimension mismatch.*16-dimensional.*dimension 24"):
        load(chroma, {**SMALL, "collection": "aifb-dim16", "create": False}, tmp_path)


def test_missing_database_is_named(chroma, tmp_path):
    with pytest.raises(ServiceError, match="database 'nodb' of tenant 'default_tenant' does not exist"):
        load(chroma, {**SMALL, "database": "nodb"}, tmp_path)


def test_token_never_appears(chroma, tmp_path):
    token = "tok-Very-Secret-123"
    stats, records = load(chroma, {**SMALL, "collection": "aifb-tok"}, tmp_path, duration=0.3,
                          warmup=0, secrets={"api_key": token})
    assert token not in json.dumps(stats, default=str)
    assert token not in (tmp_path / "requests.jsonl").read_text()


# ----------------------------------------------------------------------------- service

def test_service_deploys_binds_loopback_and_tears_down(tmp_path):
    from aifb.process import port_in_use
    from aifb.services import get_service
    if chroma_binary() is None:
        require("chroma not installed (pip install chromadb)")
    svc = get_service("chroma")({"kind": "chroma", "name": "t"}, tmp_path / "svc",
                                tmp_path / "service.log")
    telemetry_before = os.environ.get("ANONYMIZED_TELEMETRY")

    async def run():
        endpoint = await svc.deploy()
        try:
            assert svc.alive()
            from aifb.clients.vector.chroma import ChromaClient
            await ChromaClient.probe(endpoint, 5)
            return endpoint
        finally:
            await svc.teardown()

    endpoint = asyncio.run(run())
    info = svc.describe()
    assert endpoint == f"http://127.0.0.1:{info['port']}"
    assert info["command"][1:3] == ["run", "--path"] and "--host" in info["command"]
    assert info["command"][info["command"].index("--host") + 1] == "127.0.0.1"
    assert info["version"] and info["extra"]["cluster_image"].endswith("chromadb/chroma")
    assert info["extra"]["data_dir_removed"] and not (tmp_path / "svc" / "chroma-data").exists()
    assert not svc.alive() and info["stopped_at"]
    assert not port_in_use("127.0.0.1", info["port"])
    assert os.environ.get("ANONYMIZED_TELEMETRY") == telemetry_before  # set for the child only
    env = (tmp_path / "service.log").read_text()
    assert "Saving data to" in env


def test_service_missing_binary_is_a_clear_error(tmp_path):
    from aifb.services import get_service
    svc = get_service("chroma")({"kind": "chroma", "binary": "no-such-chroma"}, tmp_path, tmp_path / "l")
    with pytest.raises(ServiceError, match="no-such-chroma not found on PATH: install it with `pip install chromadb`"):
        asyncio.run(svc.deploy())


# ----------------------------------------------------------------------------- metrics module

def _write_records(path: Path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_vector_summary_counts_only_ok_measured_queries(tmp_path):
    from aifb.analysis.metrics import vector
    rows = []
    base = {"client": 0, "seq": 0, "t_start": 0.0, "t_end": 0.001, "error": None}
    for i, rec in enumerate([0.5, 0.7, 0.9, 1.0]):
        rows.append({**base, "op": "query", "ok": True, "phase": "measure", "recall": rec})
    rows.append({**base, "op": "query", "ok": True, "phase": "warmup", "recall": 0.0})
    rows.append({**base, "op": "query", "ok": False, "phase": "measure",
                 "error": {"type": "Timeout", "message": "x"}})
    rows.append({**base, "op": "insert", "ok": True, "phase": "measure"})
    rows.append({**base, "op": "query", "ok": True, "phase": "measure", "recall": 0.8,
                 "returned_inserted": 1})
    _write_records(tmp_path / "r.jsonl", rows)
    run = {"service": {"kind": "chroma"}, "recipe": {"workload": {"k": 10}}}
    out = vector.summarize(run, tmp_path / "r.jsonl", 2.0)["vector"]
    r = out["recall_at_k"]
    assert r["n"] == 5 and r["mean"] == pytest.approx(0.78) and r["min"] == 0.5
    assert r["p50"] == pytest.approx(0.8) and r["p5"] == pytest.approx(0.5 + 0.2 * 0.2)
    assert out["qps"] == 2.5 and out["insert_ps"] == 0.5 and out["k"] == 10
    assert out["queries_returning_inserted"] == 1
    assert vector.applies(run) and not vector.applies({"service": {"kind": "redis"}})
    md = "\n".join(vector.markdown({"vector": out}))
    assert "recall@10" in md and "0.7800" in md and "| queries | 2.5 queries/s |" in md


def test_vector_sweep_section_plots_qps_against_recall(tmp_path):
    from aifb.reporting.family_plots import vector
    points = [{"level": n, "benchmark_id": f"BM-20260101-00{n}",
               "summary": {"vector": {"k": 10, "qps": 100.0 * n,
                                      "recall_at_k": {"n": 50, "mean": 0.9 - 0.01 * n,
                                                      "p5": 0.7, "min": 0.5}},
                           "latency_s": {"p99": 0.01}}} for n in (1, 2, 8)]
    out = vector.sweep_section(points + [{"level": 9, "benchmark_id": "x", "summary": None}],
                               "load.clients", tmp_path)
    assert [r["level"] for r in out["rows"]] == [1, 2, 8]
    assert (tmp_path / "plots" / "vector_recall_vs_qps.png").stat().st_size > 1000
    assert any("| 8 | BM-20260101-008 | 800 |" in line for line in out["lines"])


# ----------------------------------------------------------------------------- end to end

@pytest.mark.workflow
def test_aifb_run_chroma_recipe_end_to_end(tmp_path):
    """The seed's chroma recipe (10,000 x 128, k=10) through `aifb run`: a real `chroma run`
    deployed and torn down, recall in every query record, the vector block in summary.json and
    the recall section and plot in the report."""
    import jsonschema
    import yaml

    from support import REPO, aifb, benchmark_id_from, make_workspace, pid_alive, read_json
    if chroma_binary() is None:
        require("chroma not installed (pip install chromadb)")
    ws = make_workspace(tmp_path)
    proc = aifb(ws, "run", "recipes/recipe_chroma_1client.yaml", "--set", "load.duration=2s",
                "--set", "load.warmup=0.5s", timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bid = benchmark_id_from(proc.stdout)
    assert f"{bid}: completed" in proc.stdout
    run = read_json(ws / "results" / bid / "run.json")
    jsonschema.validate(run, yaml.safe_load((REPO / "workflow/schemas/run.schema.yaml").read_text()))
    svc = run["service"]
    assert svc["kind"] == "chroma" and svc["host"] == "127.0.0.1" and svc["version"]
    assert svc["stopped_at"] and not pid_alive(svc["pid"])
    impl = run["clients"]["implementation"]
    assert impl["index_reported"]["space"] == "cosine" and impl["vectors"] == 10000
    records = [json.loads(line) for line in
               (ws / "results" / bid / "requests.jsonl").read_text().splitlines()]
    q = measured_queries(records)
    assert len(q) > 100 and all(0.0 <= r["recall"] <= 1.0 for r in q)
    summary = read_json(ws / "results" / bid / "summary.json")
    jsonschema.validate(summary, yaml.safe_load(
        (REPO / "workflow/schemas/summary.schema.yaml").read_text()))
    v = summary["vector"]
    assert v["k"] == 10 and v["recall_at_k"]["n"] == len(q)
    assert v["recall_at_k"]["mean"] == pytest.approx(sum(r["recall"] for r in q) / len(q))
    assert 0.3 < v["recall_at_k"]["mean"] <= 1.0
    assert v["qps"] == pytest.approx(summary["throughput"]["rps"])
    assert "vector.recall_at_k" in summary["metric_definitions"]
    report = (ws / "reports" / bid / "report.md").read_text()
    assert "## Vector search: recall@10 under load" in report
    assert "plots/vector_recall.png" in report
    assert (ws / "reports" / bid / "plots" / "vector_recall.png").stat().st_size > 1000


# ----------------------------------------------------------------------------- server telemetry

def test_telemetry_samples_the_chroma_process_tree(tmp_path):
    """Chroma has no metrics endpoint of its own: its server telemetry is the process tree of
    the `chroma run` aifb deploys (CPU user/system, RSS, threads), sampled beside a real run
    and summarised in the server block over the measurement window."""
    from aifb.analysis.summary import summarize
    from aifb.workflow import registry
    from aifb.workflow.recipe import validate
    from aifb.workflow.runner import run_benchmark
    from support import pid_alive
    if chroma_binary() is None:
        require("chroma not installed (pip install chromadb)")
    recipe = validate({"name": "chroma_tele", "category": "retrieval", "service": {"kind": "chroma"},
                       "workload": SMALL, "telemetry": {"interval": "250ms"},
                       "load": {"clients": 1, "concurrency": 2, "duration": "3s", "warmup": "1s"}})
    bid = registry.allocate(registry.make_entry(recipe), tmp_path)
    out = run_benchmark(bid, root=tmp_path, log=lambda m: None)
    assert out["status"] == "completed", out["reason"]
    tele = out["telemetry"]
    (proc_src,) = [s for s in tele["sources"] if s["type"] == "process"]
    assert proc_src["pid"] == out["service"]["pid"]   # the tree sampled is chroma's
    assert not pid_alive(tele["pid"]) and not pid_alive(out["service"]["pid"])
    srv = summarize(tmp_path / "results" / bid)["server"]
    cov = srv["sources"]["process"]
    assert cov["gaps"] == 0 and cov["coverage"] >= 0.9, cov
    m = srv["metrics"]["process"]
    assert m["cpu_seconds_total{mode=user}"]["delta"] > 0
    assert m["rss_bytes"]["max"] > 50 * 2**20      # a Python server with its index in memory
    assert m["threads"]["max"] >= 2 and m["processes"]["max"] >= 1
    eff = srv["efficiency"]
    assert eff["service_cpu_s"] > 0 and eff["cpu_s_per_1k_requests"] > 0
    assert eff["service_cpu_s"] == pytest.approx(
        m["cpu_seconds_total{mode=user}"]["delta"] + m["cpu_seconds_total{mode=system}"]["delta"])
    assert srv["requests_ratio"] is None   # chroma declares no request counter
