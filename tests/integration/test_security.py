"""Hardening for shared machines (issue 14, items 1-8): each test reproduces what an attacker
or a careless user did, against the real pieces (the aifb CLI, a real TCP coordinator, real
redis-server and PostgreSQL processes) where they exist here."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from aifb import endpoints

from aifb.workflow import trust
from aifb.credentials import load_secrets
from aifb.errors import AifbError, ConfigError, RecipeError, ServiceError
from aifb.workflow.recipe import load_recipe, validate
from support import require
from support import REPO, aifb, make_workspace, read_json, run_async

REDIS = {"name": "r", "category": "storage", "service": {"kind": "redis"},
         "load": {"clients": 1, "duration": "1s"}, "workload": {}}


def bundle(ws: Path, bid: str, recipe: dict) -> Path:
    """A run bundle as someone else would hand it over: results/<id>/run.json only."""
    recipe = validate(json.loads(json.dumps(recipe)))
    from aifb.workflow.recipe import recipe_hash
    d = ws / "results" / bid
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"benchmark_id": bid, "status": "completed",
                                            "recipe": recipe, "recipe_hash": recipe_hash(recipe),
                                            "recipe_path": "/home/someone/x.yaml"}))
    return d


# --------------------------------------------------------------------------- 1. foreign recipes

def test_rerun_of_a_foreign_bundle_runs_none_of_its_code(tmp_path):
    """A bundle whose recipe starts the author's script: the rerun lists it and refuses; the
    script never runs and no ID is registered."""
    ws = make_workspace(tmp_path)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.sh"
    evil.write_text(f"#!/bin/sh\ntouch {marker}\nexec redis-server \"$@\"\n")
    evil.chmod(0o755)
    recipe = dict(REDIS, service={"kind": "redis", "binary": str(evil),
                                  "password_file": "/etc/hostname"})
    bundle(ws, "BM-20250101-001", recipe)
    proc = aifb(ws, "rerun", "BM-20250101-001", timeout=120)
    assert proc.returncode != 0
    assert f"service.binary: starts the program {evil}" in proc.stderr
    assert "service.password_file: reads the secret file /etc/hostname" in proc.stderr
    assert "--trust-recipe" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()
    assert not list((ws / "results" / "registry").glob("*.json"))


def test_a_recipe_outside_recipes_is_shown_and_needs_the_flag(tmp_path):
    ws = make_workspace(tmp_path)
    path = tmp_path / "elsewhere.yaml"
    path.write_text(yaml.safe_dump(dict(REDIS, service={
        "kind": "redis", "args": ["--loadmodule", "/tmp/x.so"],
        "endpoint": "redis://10.1.2.3:6379"})))
    proc = aifb(ws, "run", str(path), "-n")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "service.args: passes these arguments to the server: --loadmodule /tmp/x.so" in proc.stderr
    assert "service.endpoint: sends the load (and any secret) to redis://10.1.2.3:6379" in proc.stderr
    proc = aifb(ws, "run", str(path), "-n", "--trust-recipe")
    assert proc.returncode == 0, proc.stderr
    assert "--loadmodule" in proc.stderr  # still shown
    # the same file under recipes/ is the user's own: no question asked
    shutil.copy(path, ws / "recipes" / "mine.yaml")
    assert aifb(ws, "run", "recipes/mine.yaml", "-n").returncode == 0


def test_a_plain_recipe_from_anywhere_needs_no_flag(tmp_path):
    ws = make_workspace(tmp_path)
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(REDIS))
    assert trust.exposure(load_recipe(path)) == []
    assert aifb(ws, "run", str(path), "-n").returncode == 0


def test_own_bundle_of_a_project_recipe_is_trusted(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path)
    monkeypatch.setenv("AIFB_ROOT", str(ws))
    rel = "recipes/recipe_redis_1client.yaml"
    sets = ["service.binary=redis-server"]
    recipe = load_recipe(ws / rel, sets)
    assert trust.same_as_project_recipe({"recipe_path": rel, "overrides": sets}, recipe)
    edited = dict(recipe, service=dict(recipe["service"], binary="/tmp/evil"))
    assert not trust.same_as_project_recipe({"recipe_path": rel, "overrides": sets}, edited)
    assert not trust.same_as_project_recipe({"recipe_path": "/etc/x.yaml"}, recipe)


def test_secret_files_only_from_paths_the_user_allowed(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path)
    monkeypatch.setenv("AIFB_ROOT", str(ws))
    monkeypatch.delenv("AIFB_SECRET_FILES", raising=False)
    pw = tmp_path / "pw"
    pw.write_text("hunter2\n")
    with pytest.raises(ServiceError, match="is not a secret file you allowed") as exc:
        load_secrets({"kind": "redis", "password_file": "/etc/hostname"})
    assert "AIFB_SECRET_FILES" in str(exc.value)
    with pytest.raises(ServiceError, match="not a secret file you allowed"):
        load_secrets({"kind": "redis", "password_file": str(pw)})
    monkeypatch.setenv("AIFB_SECRET_FILES", f"/nonexistent:{pw}")
    assert load_secrets({"kind": "redis", "password_file": str(pw)}) == {"password": "hunter2"}
    monkeypatch.delenv("AIFB_SECRET_FILES")
    cfg = ws / "config" / "config.yaml"
    cfg.write_text(yaml.safe_dump({**yaml.safe_load(cfg.read_text()), "secret_files": [str(pw)]}))
    assert load_secrets({"kind": "redis", "password_file": str(pw)}) == {"password": "hunter2"}
    # and S3 keys go the same way
    from aifb.clients.s3 import secrets_from_spec
    with pytest.raises(ServiceError, match="not a secret file you allowed"):
        secrets_from_spec({"access_key_file": "/etc/hostname", "secret_key_file": str(pw)})


# --------------------------------------------------------------------------- 4. endpoints

@pytest.mark.parametrize("endpoint", ["default:s3cretPW@127.0.0.1:16399",
                                      "redis://default:s3cretPW@127.0.0.1:16399",
                                      "redis://:s3cretPW@127.0.0.1:16399/0"])
def test_no_password_in_an_endpoint_gets_through(tmp_path, endpoint):
    with pytest.raises(RecipeError) as exc:
        validate(dict(REDIS, service={"kind": "redis", "endpoint": endpoint}))
    assert "s3cretPW" not in str(exc.value)
    assert "no scheme" in str(exc.value) or "holds a password" in str(exc.value)


@pytest.mark.parametrize("kind,good,bad", [
    ("redis", "redis://10.0.0.5:6379/2", "http://10.0.0.5:6379"),
    ("postgres", "postgresql://bench@db:5432/x", "redis://db:5432"),
    ("s3", "https://s3.example.org", "s3.example.org:9000"),
    ("qdrant", "http://127.0.0.1:6333", "grpc://127.0.0.1:6334"),
    ("vllm", "http://gpu01:8000", "gpu01:8000")])
def test_endpoints_are_parsed_per_kind_with_the_scheme_required(kind, good, bad):
    assert endpoints.split(kind, good).hostname
    with pytest.raises(ServiceError, match="scheme"):
        endpoints.split(kind, bad)


def test_redaction_is_one_function():
    assert endpoints.redact("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert endpoints.redact("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert endpoints.redact("postgresql://u@h/db") == "postgresql://u@h/db"
    assert endpoints.redact("default:pw@h:1") == "***@h:1"
    assert endpoints.redact(None) is None


def test_clients_refuse_a_password_in_the_endpoint_too():
    from aifb.clients.postgres import parse_endpoint as pg
    from aifb.clients.redis import parse_endpoint as rd
    for parse, url in ((rd, "redis://:pw@h:1"), (pg, "postgresql://u:pw@h/db")):
        with pytest.raises(ServiceError, match="holds a password") as exc:
            parse(url)
        assert "pw@" not in str(exc.value)


# --------------------------------------------------------------------------- 2. coordinator

class _Clock:
    def __init__(self):
        from aifb.clock import now_ns
        self.t0_ns, self.t0_unix_ns = now_ns(), time.time_ns()


def _coordinator(tmp_path, logs):
    from aifb.slurm.client_jobs import ClientJobs
    target = {"name": "t", "executor": "slurm", "clients": {"max_per_job": 1}}
    cj = ClientJobs(run={"benchmark_id": "BM-20250101-001"}, run_dir=tmp_path, target=target,
                    endpoint="redis://127.0.0.1:1", settings={"clients": 2, "duration_s": 1.0},
                    recipe={"service": {"kind": "redis"}}, clock=_Clock(), log=logs.append)
    cj.jobs[1]["job_id"] = "4242"  # what sbatch returned for client job 1
    return cj


def test_coordinator_refuses_forged_messages_and_flags_the_run(tmp_path):
    """The attack of the issue: read plan.json, connect, claim to be client job 1 from another
    job, post ready and done with fake results. Nothing of it may be used; the run is flagged."""
    logs: list[str] = []

    async def main():
        cj = _coordinator(tmp_path, logs)
        server = await asyncio.start_server(cj._handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        fake = {"measured": {"ok": 123693901, "errors": 0}, "records_written": 123693901}
        r, w = await asyncio.open_connection("127.0.0.1", port)
        for msg in ({"hello": 1, "job_id": "999999", "host": "attacker"},
                    {"ready": 1, "sync": {"uncertainty_ns": 1, "base_ns": 0, "at_ns": 0}},
                    {"done": 1, "stats": fake, "sync": {"uncertainty_ns": 1, "base_ns": 0,
                                                         "at_ns": 0}}):
            w.write((json.dumps(msg) + "\n").encode())
        await w.drain()
        await asyncio.wait_for(r.read(), 10)  # the coordinator hangs up
        w.close()
        server.close()
        return cj

    cj = run_async(main())
    assert cj.jobs[1]["job_id"] == "4242" and cj.jobs[1].get("host") != "attacker"
    assert "stats" not in cj.jobs[1] and "clock" not in cj.jobs[1]
    assert len(cj.bad_messages) == 1 and "authentication" in cj.bad_messages[0]["problem"]
    assert cj.problems and "not authentic" in cj.problems[0]
    assert cj.describe()["bad_messages"] == cj.bad_messages


def test_coordinator_accepts_only_the_submitted_job_with_the_token(tmp_path):
    from aifb.slurm.channel import Channel

    logs: list[str] = []

    async def talk(cj, port, msgs):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        nonce = json.loads(await r.readline())["nonce"]
        ch = Channel(cj.token, nonce, r, w, side="client")
        got = []
        for m in msgs:
            ch.send(m)
            await ch.drain()
            if "ping" in m:
                got.append(await ch.recv())
        return r, w, ch, got

    async def main():
        cj = _coordinator(tmp_path, logs)
        server = await asyncio.start_server(cj._handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        # a token holder naming a job this run did not submit: refused (no scancel of it)
        r, w, _, _ = await talk(cj, port, [{"hello": 1, "job_id": "1"}])
        await asyncio.wait_for(r.read(), 10)
        assert cj.jobs[1]["job_id"] == "4242" and len(cj.bad_messages) == 1
        # the real client job 1
        sync = {"uncertainty_ns": 10, "base_ns": cj.clock.t0_ns, "at_ns": 5, "host": "x"}
        r, w, ch, got = await talk(cj, port, [{"ping": 0}, {"hello": 1, "job_id": "4242",
                                                            "host": "node1"},
                                              {"ready": 1, "sync": sync}])
        assert got[0]["pong"] == 0
        await asyncio.wait_for(cj.ready[1].wait(), 10)
        ch.send({"done": 1, "stats": {"records_written": 3}, "sync": sync})
        await ch.drain()
        await asyncio.wait_for(cj.done[1].wait(), 10)
        w.close()
        server.close()
        return cj

    cj = run_async(main())
    assert cj.jobs[1]["host"] == "node1" and cj.jobs[1]["stats"] == {"records_written": 3}
    assert len(cj.bad_messages) == 1 and "submitted as job 4242" in cj.bad_messages[0]["problem"]


def test_the_token_file_is_private(tmp_path):
    from aifb.slurm.channel import read_token, write_token
    token = write_token(tmp_path / "token")
    assert stat.S_IMODE((tmp_path / "token").stat().st_mode) == 0o600
    assert read_token(tmp_path / "token") == token and len(token) == 32


# --------------------------------------------------------------------------- 5. batch script

BAD_KEY = "X=1; touch {marker}; Y"


def test_an_env_key_in_targets_yaml_cannot_inject_a_command(tmp_path):
    from aifb.slurm.commands import job_script
    from aifb.slurm.targets import load_targets_file

    marker = tmp_path / "somefile"
    targets = yaml.safe_load((REPO / "config" / "targets.yaml").read_text())
    targets["slurm-local"]["services"]["redis"]["env"] = {BAD_KEY.format(marker=marker): "v"}
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump(targets))
    with pytest.raises(ConfigError, match="env"):
        load_targets_file(path)
    # and the batch script refuses it even from an unvalidated definition; values and the
    # title are quoted (a value or a newline in the title runs nothing)
    how = {"env": {BAD_KEY.format(marker=marker): "v"}}
    with pytest.raises(ConfigError, match="not a variable name"):
        job_script({"name": "t"}, how, ["true"], title="t")
    script = job_script({"name": "t"}, {"env": {"OK": f"$(touch {marker})"}, "module": []},
                        ["true"], title=f"title\ntouch {marker}")
    subprocess.run(["bash", "-c", script], check=True, timeout=30)
    assert not marker.exists()


# --------------------------------------------------------------------------- 3, 7, 8: servers

def _redis_recipe(**service):
    return validate({"name": "sec", "category": "storage", "service": {"kind": "redis", **service},
                     "workload": {"ops": {"get": 1}, "keyspace": 100},
                     "load": {"clients": 1, "duration": "1s", "warmup": "0s"}})


def _bench(root: Path, recipe: dict) -> tuple[str, dict]:
    from aifb.workflow import registry
    from aifb.workflow.runner import run_benchmark
    bid = registry.allocate(registry.make_entry(recipe), root)
    return bid, run_benchmark(bid, root=root, log=lambda m: None)


def _no_file_holds(root: Path, secret: str) -> None:
    leaked = [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []


@pytest.mark.redis
def test_managed_redis_honours_password_env(tmp_path, monkeypatch):
    """A password-protected recipe failed with "AUTH called without any password configured":
    the server now gets requirepass (on stdin, never argv) and the run completes."""
    if shutil.which("redis-server") is None:
        require("redis-server not installed")
    secret = "pw with spaces \" and \\ " + os.urandom(4).hex()
    monkeypatch.setenv("AIFB_TEST_REDIS_PW", secret)
    bid, out = _bench(tmp_path, _redis_recipe(password_env="AIFB_TEST_REDIS_PW"))
    assert out["status"] == "completed", out["reason"]
    svc = out["service"]
    assert "requirepass" in svc["extra"]["exposure"] and "loopback only" in svc["extra"]["exposure"]
    assert secret not in " ".join(svc["command"])
    _no_file_holds(tmp_path, secret)
    from aifb.reporting.report import build_report
    build_report(tmp_path / "results" / bid, tmp_path / "reports" / bid)
    md = (tmp_path / "reports" / bid / "report.md").read_text()
    assert "| Exposure | loopback only" in md and "requirepass" in md


def test_a_server_gets_a_minimal_environment(tmp_path, monkeypatch):
    """A secret variable of the invoking user showed up in the server's /proc/<pid>/environ.
    (Chroma: a Python server, which leaves its environ block as it got it; redis-server and
    postgres overwrite theirs with their process titles.)"""
    from aifb.services.chroma import ChromaService
    monkeypatch.setenv("AIFB_TEST_SECRET_OF_THE_USER", "leak-me")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leak-me-too")
    svc = ChromaService({"kind": "chroma"}, tmp_path / "svc", tmp_path / "svc.log")
    try:
        svc.resolve_binary()
    except ServiceError as exc:
        require(f"chroma not installed: {exc}")

    async def main():
        await svc.deploy()
        try:
            raw = Path(f"/proc/{svc.proc.pid}/environ").read_bytes()
        finally:
            await svc.teardown()
        return dict(v.split(b"=", 1) for v in raw.split(b"\0") if b"=" in v)

    env = run_async(main())
    assert b"AIFB_TEST_SECRET_OF_THE_USER" not in env and b"AWS_SECRET_ACCESS_KEY" not in env
    assert env[b"PATH"] == os.environ["PATH"].encode()
    assert env[b"ANONYMIZED_TELEMETRY"] == b"False"  # what the kind adds


def test_local_postgres_never_runs_open(tmp_path, monkeypatch):
    """The cluster used trust authentication: any local user could connect and run
    COPY ... TO PROGRAM. Now a run without a password gets a random one (scram-sha-256),
    the clients get it through the environment, and no file holds it."""
    from aifb.clients.postgres import PostgresClient
    from aifb.credentials import RUN_PASSWORD_ENV, with_run_password
    from aifb.services.postgres import PostgresService
    root = Path(__import__("tempfile").mkdtemp(prefix="aifb-test-pgsec-"))
    os.chmod(root, 0o755)  # the postgres user (as root: run_as) must reach it
    try:
        spec = with_run_password({"kind": "postgres"}, PostgresService)
        assert spec["password_env"] == RUN_PASSWORD_ENV
        password = os.environ[RUN_PASSWORD_ENV]
        assert len(password) >= 24
        try:
            svc = PostgresService(spec, root / "svc", root / "svc.log")
            svc.resolve_binary()
        except ServiceError as exc:
            require(f"PostgreSQL not installed: {exc}")

        async def main():
            endpoint = await svc.deploy()
            try:
                with pytest.raises(ServiceError, match="asks for a password"):
                    await PostgresClient.probe(endpoint, 5)
                with pytest.raises(ServiceError, match="rejected the password"):
                    await PostgresClient.probe(endpoint, 5, {"password": "guess"})
                await PostgresClient.probe(endpoint, 5, {"password": password})
            finally:
                await svc.teardown()

        run_async(main())
        assert "random password generated for this run" in svc.info.extra["auth"]
        assert "-A scram-sha-256" in " ".join(svc.info.extra["initdb"])
        assert password not in json.dumps(svc.describe())
        _no_file_holds(root, password)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- 6. one bind rule

@pytest.mark.parametrize("kind,spec", [("chroma", {}), ("ollama", {"model": "m"}),
                                       ("redis", {}), ("qdrant", {}), ("llamacpp", {}),
                                       ("vllm", {"model": "m"})])
def test_no_kind_listens_off_loopback_without_authentication(tmp_path, kind, spec):
    from aifb.services import get_service
    svc = get_service(kind)(dict(spec, kind=kind, host="10.255.255.1"), tmp_path, tmp_path / "l")
    svc.before_deploy()
    with pytest.raises(ServiceError, match="not loopback.*allow_unauthenticated: true"):
        run_async(svc.deploy())
    assert svc.proc is None
    svc = get_service(kind)(dict(spec, kind=kind, host="10.255.255.1", allow_unauthenticated=True),
                            tmp_path, tmp_path / "l")
    svc.before_deploy()
    svc.check_bind("10.255.255.1")
    assert "WITHOUT authentication" in svc.info.extra["exposure"]


@pytest.mark.parametrize("kind,env", [("redis", "password_env"), ("qdrant", "api_key_env"),
                                      ("llamacpp", "api_key_env")])
def test_a_secret_makes_a_non_loopback_bind_authenticated(tmp_path, monkeypatch, kind, env):
    from aifb.services import get_service
    monkeypatch.setenv("AIFB_TEST_KEY", "k" * 16)
    svc = get_service(kind)({"kind": kind, "host": "10.255.255.1", env: "AIFB_TEST_KEY"},
                            tmp_path, tmp_path / "l")
    svc.before_deploy()
    svc.check_bind("10.255.255.1")
    assert "reachable from other machines; authentication: " in svc.info.extra["exposure"]
    assert "WITHOUT" not in svc.info.extra["exposure"]
