"""PostgreSQL: the asyncpg client against a real server, the throwaway-cluster service, and a
recipe end to end through `aifb run`.

The `pg_cluster` fixture is a real PostgreSQL 15 cluster (initdb + postgres on a free loopback
port, scram-sha-256 with a random password, run as `postgres` when the tests run as root),
started here and stopped at the end of the module."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import pwd
import secrets as pysecrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from aifb.workflow import registry
from aifb.clock import RunClock
from aifb.load.engine import run_load_sync
from aifb.errors import ServiceError
from aifb.workflow.recipe import validate
from aifb.workflow.runner import run_benchmark
from support import (aifb, benchmark_id_from, make_workspace, pid_alive, processes_under, read_json,
                     run_async as run)

pytestmark = pytest.mark.postgres


def _pg_bin() -> Path | None:
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(os.path.join(d, "postgres"), os.X_OK):
            return Path(d)
    found = shutil.which("postgres")
    return Path(found).resolve().parent if found else None


PG_BIN = _pg_bin()
needs_pg = pytest.mark.skipif(PG_BIN is None, reason="PostgreSQL server not installed "
                              "(apt-get install postgresql-15)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres() -> list[str]:
    if os.geteuid() != 0:
        return []
    pw = pwd.getpwnam("postgres")
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--"]


def postgres_procs_under(path: Path) -> list[int]:
    """PIDs of postgres processes whose command line names a path inside `path`."""
    return processes_under(path, "postgres", by="cmdline")


@pytest.fixture(scope="module")
def pg_cluster():
    """(endpoint of database `postgres`, password) of a fresh password-protected cluster."""
    if PG_BIN is None:
        pytest.skip("PostgreSQL server not installed (apt-get install postgresql-15)")
    base = Path(tempfile.mkdtemp(prefix="aifb-test-pg-"))
    os.chmod(base, 0o755)
    data = base / "data"
    data.mkdir(mode=0o700)
    password = "pw-" + pysecrets.token_hex(8)
    pwfile = base / "pw"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for p in (data, pwfile):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    subprocess.run([*_as_postgres(), str(PG_BIN / "initdb"), "--no-sync", "-D", str(data),
                    "-U", "postgres", "-A", "scram-sha-256", f"--pwfile={pwfile}",
                    "--locale=C", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
    pwfile.unlink()
    port = _free_port()
    log = open(base / "postgres.log", "wb")
    proc = subprocess.Popen([*_as_postgres(), str(PG_BIN / "postgres"), "-D", str(data),
                             "-p", str(port), "-c", "listen_addresses=127.0.0.1",
                             "-c", "unix_socket_directories=", "-c", "fsync=off"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    endpoint = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        from aifb.clients.postgres import PostgresClient
        deadline = time.monotonic() + 30
        while True:
            try:
                run(PostgresClient.probe(endpoint, 1.0, {"password": password}))
                break
            except ServiceError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("postgres did not start:\n" +
                                       (base / "postgres.log").read_text())
                time.sleep(0.05)
        yield endpoint, password
    finally:
        proc.send_signal(2)  # fast shutdown
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def load(duration="1s", warmup="0.2s", clients=1, concurrency=2):
    from aifb.workflow.recipe import load_settings
    return load_settings({"load": {"clients": clients, "concurrency": concurrency,
                                   "duration": duration, "warmup": warmup, "timeout": "10s"}})


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def sql(endpoint: str, password: str, query: str, *args):
    from aifb.clients.postgres import connect, parse_endpoint
    conn = await connect(parse_endpoint(endpoint, {"password": password}))
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


# ------------------------------------------------------------------------------ unit

def test_endpoint_parsing_and_redaction():
    from aifb.clients.postgres import parse_endpoint
    ep = parse_endpoint("postgresql://bench@db.example:6543/tpc", {"password": "hunter2"})
    assert (ep.host, ep.port, ep.user, ep.database, ep.password) == (
        "db.example", 6543, "bench", "tpc", "hunter2")
    assert "hunter2" not in repr(ep) and repr(ep) == "postgresql://bench:***@db.example:6543/tpc"
    ep = parse_endpoint("postgres://10.0.0.5")
    assert (ep.port, ep.user, ep.database, ep.password) == (5432, "postgres", "postgres", None)
    with pytest.raises(ServiceError, match="scheme 'mysql' is not supported"):
        parse_endpoint("mysql://h:3306/x")
    with pytest.raises(ServiceError, match="query parameters are not supported"):
        parse_endpoint("postgresql://h/x?sslmode=require")


def test_workload_sizing_and_bad_input():
    from aifb.clients.postgres import PostgresClient, sizing
    assert sizing({}) == (1, 10, 100_000)
    assert sizing({"scale": 3}) == (3, 30, 300_000)
    assert sizing({"table_rows": 250_001}) == (3, 30, 250_001)
    with pytest.raises(ServiceError, match="either scale or table_rows"):
        sizing({"scale": 1, "table_rows": 10})
    ep = "postgresql://postgres@127.0.0.1:5432/x"
    with pytest.raises(ServiceError, match=r"unsupported operation\(s\) \['delete'\]"):
        PostgresClient(ep, {"ops": {"delete": 1}}, 1)
    with pytest.raises(ServiceError, match="sum to zero"):
        PostgresClient(ep, {"ops": {"select": 0}}, 1)
    with pytest.raises(ServiceError, match="table_prefix"):
        PostgresClient(ep, {"table_prefix": "x; DROP TABLE y"}, 1)


def test_recipe_schema_rejects_bad_workloads():
    from aifb.errors import RecipeError
    base = {"name": "x", "category": "storage", "service": {"kind": "postgres"},
            "load": {"clients": 1, "duration": "1s"}}
    with pytest.raises(RecipeError, match=r"workload.ops: unknown field\(s\) \('delete'"):
        validate({**base, "workload": {"ops": {"delete": 1}}})
    with pytest.raises(RecipeError, match="table_rows"):
        validate({**base, "workload": {"scale": 1, "table_rows": 5}})
    validate({**base, "workload": {"ops": {"tpcb": 1}, "scale": 2, "table_prefix": "pgbench_"}})


# ------------------------------------------------------------------------------ client, real server

@needs_pg
def test_probe_and_credential_errors(pg_cluster):
    from aifb.clients.postgres import PostgresClient
    endpoint, password = pg_cluster
    run(PostgresClient.probe(endpoint, 5, {"password": password}))
    with pytest.raises(ServiceError) as e:
        run(PostgresClient.probe(endpoint, 5, {"password": "not-the-password"}))
    assert "rejected the password for user 'postgres'" in str(e.value)
    assert "not-the-password" not in str(e.value) and password not in str(e.value)
    with pytest.raises(ServiceError, match="asks for a password .* none was given"):
        run(PostgresClient.probe(endpoint, 5))
    with pytest.raises(ServiceError, match="database 'nope' does not exist"):
        run(PostgresClient.probe(endpoint.rsplit("/", 1)[0] + "/nope", 5, {"password": password}))
    # scram does not tell an unknown role from a wrong password (by design)
    with pytest.raises(ServiceError, match="rejected the password for user 'ghost'"):
        run(PostgresClient.probe(endpoint.replace("postgres@", "ghost@"), 5, {"password": password}))


def test_unreachable_endpoint_fails_before_any_record(tmp_path):
    port = _free_port()
    path = tmp_path / "requests.jsonl"
    with pytest.raises(ServiceError, match=f"cannot reach postgres at 127.0.0.1:{port}: connection refused"):
        run_load_sync(kind="postgres", endpoint=f"postgresql://postgres@127.0.0.1:{port}/x",
                      workload={}, load=load(), seed=1, records_path=path, clock=RunClock(),
                      log=lambda m: None)
    assert not path.exists()


@needs_pg
def test_mixed_workload_really_runs_on_the_server(pg_cluster, tmp_path):
    """Every op reaches the server: history rows = ok inserts + ok tpcb transactions, and the
    tellers' and branches' balances moved by the same deltas (only tpcb touches them)."""
    endpoint, password = pg_cluster
    path = tmp_path / "requests.jsonl"
    wl = {"ops": {"select": 0.4, "update": 0.2, "insert": 0.2, "tpcb": 0.2}, "table_rows": 2000,
          "table_prefix": "mix_"}
    stats = run_load_sync(kind="postgres", endpoint=endpoint, workload=wl,
                          load=load(clients=2, concurrency=2), seed=7, records_path=path,
                          clock=RunClock(), secrets={"password": password}, log=lambda m: None)
    assert stats["stopped_by"] == "duration" and stats["measured"]["errors"] == 0
    recs = records(path)
    assert {r["op"] for r in recs} == {"select", "update", "insert", "tpcb"}
    assert all(r["ok"] for r in recs), [r for r in recs if not r["ok"]][:3]
    assert all(r["bytes_in"] is None and r["bytes_out"] is None for r in recs)
    assert {r["client"] for r in recs} == {0, 1}
    n_hist = sum(r["op"] in ("insert", "tpcb") for r in recs)
    assert run(sql(endpoint, password, "SELECT count(*) FROM mix_history")) == n_hist
    assert run(sql(endpoint, password, "SELECT count(*) FROM mix_accounts")) == 2000
    assert run(sql(endpoint, password, "SELECT count(*) FROM mix_tellers")) == 10
    t = run(sql(endpoint, password, "SELECT sum(tbalance) FROM mix_tellers"))
    b = run(sql(endpoint, password, "SELECT sum(bbalance) FROM mix_branches"))
    assert t == b and stats["client"]["statements"]["tpcb"][0] == "BEGIN"
    d = stats["client"]
    assert d["driver"].startswith("aifb.clients.pgwire") and d["rows"]["accounts"] == 2000
    assert d["server_settings"]["fsync"] == "off" and password not in json.dumps(d)


@needs_pg
def test_load_is_seeded_and_reproducible(pg_cluster, tmp_path):
    endpoint, password = pg_cluster
    wl = {"ops": {"select": 1}, "table_rows": 500, "table_prefix": "seed_"}

    def balances():
        return run(sql(endpoint, password,
                       "SELECT string_agg(abalance::text, ',' ORDER BY aid) FROM seed_accounts"))

    for i in range(2):
        run_load_sync(kind="postgres", endpoint=endpoint, workload=wl,
                      load=load(duration="0.2s", warmup="0s", concurrency=1), seed=11,
                      records_path=tmp_path / f"r{i}.jsonl", clock=RunClock(),
                      secrets={"password": password}, log=lambda m: None)
        if i == 0:
            first = balances()
    assert balances() == first and len(set(first.split(","))) > 100  # seeded, not constant


@needs_pg
def test_existing_tables_are_checked_not_loaded(pg_cluster, tmp_path):
    endpoint, password = pg_cluster
    path = tmp_path / "r.jsonl"
    kw = dict(endpoint=endpoint, load=load(), seed=1, records_path=path, clock=RunClock(),
              secrets={"password": password}, log=lambda m: None, kind="postgres")
    with pytest.raises(ServiceError, match="table 'ghost_accounts' does not exist .*prepare is false"):
        run_load_sync(workload={"table_prefix": "ghost_", "prepare": False}, **kw)
    run_load_sync(workload={"table_prefix": "small_", "table_rows": 100}, **{**kw, "load": load(
        duration="0.1s", warmup="0s")})
    with pytest.raises(ServiceError, match=r"'small_accounts' holds keys up to 100, but the workload "
                                           r"draws aid from 1..1000"):
        run_load_sync(workload={"table_prefix": "small_", "table_rows": 1000, "prepare": False}, **kw)
    path.unlink(missing_ok=True)
    stats = run_load_sync(workload={"table_prefix": "small_", "table_rows": 100, "prepare": False,
                                    "ops": {"select": 1, "update": 1}}, **kw)
    assert stats["measured"]["errors"] == 0 and stats["measured"]["ok"] > 10


@needs_pg
def test_a_failing_transaction_is_rolled_back_named_and_the_connection_goes_on(pg_cluster, tmp_path):
    """tpcb against a history table that refuses negative deltas (a CHECK constraint): about
    half the transactions fail at their INSERT, after three UPDATEs. Each is recorded under
    the server's error name, rolled back (the tellers' balances equal the sum of the deltas
    of the history rows: no failed transaction left an UPDATE behind), and its connection
    goes on with the next transaction."""
    endpoint, password = pg_cluster
    kw = dict(kind="postgres", endpoint=endpoint, seed=5, clock=RunClock(),
              secrets={"password": password}, log=lambda m: None)
    run_load_sync(workload={"table_prefix": "chk_", "table_rows": 1000, "ops": {"select": 1}},
                  load=load(duration="0.1s", warmup="0s"), records_path=tmp_path / "p.jsonl", **kw)
    run(sql(endpoint, password, "ALTER TABLE chk_history ADD CONSTRAINT positive CHECK (delta > 0)"))
    path = tmp_path / "r.jsonl"
    stats = run_load_sync(workload={"table_prefix": "chk_", "table_rows": 1000, "prepare": False,
                                    "ops": {"tpcb": 1}},
                          load=load(duration="1s", warmup="0s", concurrency=2),
                          records_path=path, **kw)
    recs = records(path)
    ok = [r for r in recs if r["ok"]]
    failed = [r for r in recs if not r["ok"]]
    assert len(ok) > 20 and len(failed) > 20, stats["measured"]
    assert {r["error"]["type"] for r in failed} == {"CheckViolationError"}
    assert "positive" in failed[0]["error"]["message"]
    for worker in (0, 1):  # the same connection went on after its failures
        mine = sorted((r for r in recs if r["worker"] == worker), key=lambda r: r["t_start"])
        first_error = next(i for i, r in enumerate(mine) if not r["ok"])
        assert any(r["ok"] for r in mine[first_error:])
    assert not any(r["op"] == "connect" for r in recs)  # rolled back, not reconnected
    n_hist = run(sql(endpoint, password, "SELECT count(*) FROM chk_history"))
    assert n_hist == len(ok)
    tellers = run(sql(endpoint, password, "SELECT sum(tbalance) FROM chk_tellers"))
    deltas = run(sql(endpoint, password, "SELECT sum(delta) FROM chk_history"))
    assert tellers == deltas


@needs_pg
def test_terminated_backends_are_recorded_and_reconnected(pg_cluster, tmp_path):
    """A backend killed mid-run (pg_terminate_backend) is an error record, then the engine
    reconnects and the load goes on."""
    endpoint, password = pg_cluster
    path = tmp_path / "requests.jsonl"

    async def main():
        from aifb.clients.postgres import connect, parse_endpoint
        from aifb.load.engine import run_load
        task = asyncio.create_task(run_load(
            kind="postgres", endpoint=endpoint, workload={"table_rows": 1000, "table_prefix": "kill_"},
            load=load(duration="1.5s", warmup="0s", concurrency=2), seed=3, records_path=path,
            clock=RunClock(), secrets={"password": password}, log=lambda m: None))
        await asyncio.sleep(0.8)
        admin = await connect(parse_endpoint(endpoint, {"password": password}))
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'aifb' AND pid <> pg_backend_pid()")
        await admin.close()
        return killed, await task

    killed, stats = run(main())
    assert killed == 2
    recs = records(path)
    errors = [r for r in recs if not r["ok"]]
    assert errors and all(r["error"]["type"] == "ConnectionError" for r in errors)
    last_error = max(r["t_end"] for r in errors)
    assert sum(r["ok"] and r["t_start"] > last_error for r in recs) > 50  # the load went on
    assert password not in path.read_text()


# ------------------------------------------------------------------------------ service

def bench(root: Path, service: dict | None = None, workload: dict | None = None, **load_kw):
    r = validate({"name": "pg", "category": "storage", "service": {"kind": "postgres", **(service or {})},
                  "workload": workload or {"ops": {"select": 0.7, "tpcb": 0.3}, "table_rows": 1000},
                  "load": {"clients": 1, "concurrency": 2, "duration": "1s", "warmup": "0.2s", **load_kw}})
    bid = registry.allocate(registry.make_entry(r), root)
    return bid, run_benchmark(bid, root=root, log=lambda m: None)


@pytest.fixture
def open_root():
    """A results root the `postgres` user can traverse (a 0755 directory under /tmp)."""
    d = Path(tempfile.mkdtemp(prefix="aifb-test-pgroot-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@needs_pg
def test_service_deploys_measures_and_stops(open_root, monkeypatch):
    password = "svc-" + pysecrets.token_hex(8)
    monkeypatch.setenv("AIFB_TEST_PG_PW", password)
    bid, out = bench(open_root, {"password_env": "AIFB_TEST_PG_PW", "database": "bench",
                                 "settings": {"synchronous_commit": False, "shared_buffers": "64MB"},
                                 "image": "postgres:15"})
    assert out["status"] == "completed", out["reason"]
    svc = out["service"]
    assert svc["managed"] and svc["host"] == "127.0.0.1" and svc["version"].startswith("15")
    assert svc["image"] == "postgres:15" and svc["endpoint"].endswith("/bench")
    assert not pid_alive(svc["pid"]) and svc["exit_code"] == 0
    assert postgres_procs_under(open_root) == []
    ex = svc["extra"]
    assert ex["auth"].startswith("scram-sha-256") and ex["database"] == "bench"
    assert ex["settings"]["synchronous_commit"] == "off" and ex["settings"]["fsync"] == "on"
    assert ex["server_settings"]["synchronous_commit"] == "off"
    assert ex["server_settings"]["shared_buffers"] == "64MB"
    assert "listen_addresses=127.0.0.1" in svc["command"]
    run_dir = open_root / "results" / bid
    data = Path(ex["data_dir"])
    assert data == run_dir / "service" / "data" and (data / "PG_VERSION").is_file()  # kept
    assert out["load_stats"]["measured"]["ok"] > 100 and out["load_stats"]["measured"]["errors"] == 0
    # the password is in no file of the run (the cluster keeps only a SCRAM verifier)
    for f in run_dir.rglob("*"):
        if f.is_file():
            assert password.encode() not in f.read_bytes(), f
    assert password not in json.dumps(out)


@needs_pg
def test_service_bad_inputs_are_clear_failures(open_root):
    _, out = bench(open_root, {"binary": "/nonexistent/postgres"})
    assert out["status"] == "failed"
    assert "/nonexistent/postgres not found" in out["reason"] and "postgresql-15" in out["reason"]

    _, out = bench(open_root, {"settings": {"shared_buffers": "lots"}})
    assert out["status"] == "failed" and "exited with code 1 before it was ready" in out["reason"]
    assert 'invalid value for parameter "shared_buffers"' in out["service"]["log_tail"]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        _, out = bench(open_root, {"port": port})
    assert out["status"] == "failed" and f"port {port} on 127.0.0.1 is in use" in out["reason"]

    _, out = bench(open_root, workload={"table_prefix": "none_", "prepare": False})
    assert out["status"] == "failed" and "table 'none_accounts' does not exist" in out["reason"]
    assert not pid_alive(out["service"]["pid"])

    _, out = bench(open_root, {"host": "10.255.255.1"})  # not an address of this machine
    assert out["status"] == "failed" and "cannot listen on 10.255.255.1" in out["reason"]
    assert out["service"].get("pid") is None

    _, out = bench(open_root, {"password_env": "AIFB_NO_SUCH_VARIABLE"})
    assert out["status"] == "failed" and "AIFB_NO_SUCH_VARIABLE, which is not set" in out["reason"]
    if os.geteuid() == 0:
        _, out = bench(open_root, {"run_as": "no-such-user-aifb"})
        assert out["status"] == "failed" and "'no-such-user-aifb' does not exist" in out["reason"]
    assert postgres_procs_under(open_root) == []


# ------------------------------------------------------------------------------ workflow

@needs_pg
@pytest.mark.workflow
def test_recipe_end_to_end_through_aifb_run(tmp_path):
    """recipe_postgres_2client through `aifb run`. The workspace is under pytest's private
    (0700) tmp dir, so when run as root the cluster lives in a scratch dir, removed after."""
    ws = make_workspace(tmp_path)
    proc = aifb(ws, "run", "recipes/recipe_postgres_2client.yaml", "--set", "load.duration=2s",
                "--set", "load.warmup=0.5s")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bid = benchmark_id_from(proc.stdout)
    assert f"{bid}: completed" in proc.stdout
    run_json = read_json(ws / "results" / bid / "run.json")
    svc = run_json["service"]
    assert svc["kind"] == "postgres" and not pid_alive(svc["pid"])
    assert postgres_procs_under(ws) == [] and postgres_procs_under(Path(tempfile.gettempdir()) /
                                                                   "aifb-postgres-") == []
    if "scratch_data_dir_removed" in svc["extra"]:
        assert not Path(svc["extra"]["scratch_data_dir_removed"]).exists()
    summary = read_json(ws / "results" / bid / "summary.json")
    assert set(summary["throughput"]["per_op"]) == {"select", "update", "insert", "tpcb"}
    assert summary["requests"]["errors"] == 0 and summary["throughput"]["rps"] > 50
    assert run_json["clients"]["implementation"]["driver"].startswith("aifb.clients.pgwire")
    md = (ws / "reports" / bid / "report.md").read_text()
    assert "postgres" in md and "tpcb" in md
