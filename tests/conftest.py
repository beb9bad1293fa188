"""Shared pytest fixtures (a real redis-server, test-only kinds) and the skip hooks."""

from __future__ import annotations

import os

import pytest

from aifb import clients, services
from aifb.kinds import all_kinds
from fakes.memory_client import MemoryClient
from support import redis_process, skip_groups, skip_line


# -- a marker per service kind (`pytestmark = pytest.mark.qdrant`), from aifb.kinds, so that a new
# kind's tests need no line in pyproject.toml; the markers declared there (redis: needs a
# redis-server binary) keep their own description.
def pytest_configure(config):
    declared = {line.split(":")[0].strip() for line in config.getini("markers")}
    for k in all_kinds():
        if k.kind not in declared:
            config.addinivalue_line("markers", f"{k.kind}: tests of the {k.display_name} service "
                                    "kind (the test module says what they need)")


# -- redis_server: a real redis-server on a free loopback port, killed at teardown ----------
@pytest.fixture
def redis_server(tmp_path_factory):
    """The endpoint ("redis://127.0.0.1:PORT") of a fresh redis-server (no persistence)."""
    with redis_process(workdir=tmp_path_factory.mktemp("redis")) as (port, _):
        yield f"redis://127.0.0.1:{port}"


# -- test-only kinds: registered for one test, the registries restored afterwards -------------
@pytest.fixture
def register_kind(monkeypatch):
    """register_kind(kind, client=None, service=None) -> kind: adds a test-only kind to the
    client (and service) registry for this test only."""
    for registry in (clients, services):
        # the built-in kinds first: imported inside the test, they would register into the copy
        # only and be missing after the test (their modules are not imported twice)
        registry.available_kinds()
        # the one place a test touches the registries' storage: a copy that register() and the
        # lookups use during the test, put back by monkeypatch at teardown
        monkeypatch.setattr(registry.REGISTRY, "table", dict(registry.REGISTRY.table))

    def register(kind: str, client: type | None = None, service: type | None = None) -> str:
        if client is not None:
            clients.register(kind)(client)
        if service is not None:
            services.register(kind)(service)
        return kind

    return register


@pytest.fixture
def memory_kind(register_kind):
    """The kind of the in-memory client (tests/fakes/memory_client.py), registered for this test."""
    return register_kind("memory_test", client=MemoryClient)


# -- CI: a skip is a failure ------------------------------------------------------------------
# .ci/run installs and starts every server the suite uses, so in CI a test that skips because
# its server is missing would hide a broken install; it fails instead.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (os.environ.get("CI", "").lower() in ("1", "true", "yes") and report.skipped
            and not hasattr(report, "wasxfail")):
        report.outcome = "failed"
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"CI: skipped tests fail here (a server the test needs is missing): {reason}"


# -- the last line: which groups skipped, and the one command that runs them -----------------
# Outside CI a missing server skips its tests, so a green run is not CI's green run: say so
# where a reader looks last (after pytest's own summary line).
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    result = yield
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = [r for r in (reporter.stats.get("skipped", []) if reporter else [])
               if not hasattr(r, "wasxfail")]
    if skipped:
        reporter.write_line(skip_line(skip_groups(skipped), os.geteuid() == 0), yellow=True,
                            bold=True)
    return result
