"""Shared pytest fixtures."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from support import require, skip_groups, skip_line


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
