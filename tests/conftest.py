"""Shared pytest fixtures."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from aifb.kinds import all_kinds


def require(reason: str) -> None:
    """Skip a test whose server is missing on a developer's machine; in CI (CI=true), where
    .ci/run installs every server, a missing one is a failure, never a silent skip."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI: {reason}")
    pytest.skip(reason)


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
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_server(tmp_path_factory):
    """The endpoint ("redis://127.0.0.1:PORT") of a fresh redis-server (no persistence)."""
    binary = shutil.which("redis-server")
    if binary is None:
        require("redis-server not installed (apt-get install redis-server)")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=10)


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
def skip_groups(reports) -> dict[str, tuple[int, str]]:
    """{test file: (skipped tests, the first reason)} from pytest's skipped reports."""
    groups: dict[str, tuple[int, str]] = {}
    for rep in reports:
        path = (rep.nodeid or rep.location[0]).split("::")[0]
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        n, first = groups.get(os.path.basename(path), (0, reason.removeprefix("Skipped: ")))
        groups[os.path.basename(path)] = (n + 1, first)
    return groups


def skip_line(groups: dict[str, tuple[int, str]], root: bool) -> str:
    if not root:
        command = "sudo make test"  # installs every server, starts and stops the test Slurm
    elif any("Slurm" in reason for _, reason in groups.values()):
        command = "scripts/slurm/start.sh && make test"
    else:
        command = "make test"
    total = sum(n for n, _ in groups.values())
    parts = "; ".join(f"{name} ({n}: {reason})" for name, (n, reason) in sorted(groups.items()))
    return f"NOT RUN: {total} skipped test(s) - {parts}. Run them with: {command}"


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
