"""`make test` (scripts/test.sh) and the test Slurm's life cycle, as a new user meets them.

- A run outside CI that skips tests says so in its last line: which groups, and the one
  command that runs them.
- scripts/test.sh starts the test Slurm when none answers and it can (root, no slurmctld), and
  stops it at the end; a Slurm that already answers (CI's .ci/run starts one) is left running.
- After scripts/slurm/stop.sh, Slurm's clients fail at once: the Slurm executor plugin runs
  `scontrol show config` whenever Snakemake loads its plugins, which waited 9-10 s for a stopped
  controller on every local snakemake call.

The life-cycle test runs a private Slurm in its own mount, PID and network namespaces
(`unshare`; the address is in 198.18.0.0/24), so the machine's own Slurm and its jobs are
neither seen nor touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from support import require, skip_groups, skip_line
from support import REPO, VENV_BIN


class _Report:
    def __init__(self, nodeid: str, reason: str):
        self.nodeid, self.location = nodeid, (nodeid.split("::")[0], 0, "")
        self.longrepr = (nodeid, 1, f"Skipped: {reason}")


def test_the_skip_line_names_each_group_and_the_command_that_runs_it():
    groups = skip_groups([_Report("tests/integration/test_slurm.py::test_a", "no Slurm: sinfo not on PATH"),
                          _Report("tests/integration/test_slurm.py::test_b", "no Slurm: sinfo not on PATH"),
                          _Report("tests/integration/test_postgres.py", "PostgreSQL server not installed")])
    assert groups == {"test_slurm.py": (2, "no Slurm: sinfo not on PATH"),
                      "test_postgres.py": (1, "PostgreSQL server not installed")}
    line = skip_line(groups, root=False)
    assert line == ("NOT RUN: 3 skipped test(s) - test_postgres.py (1: PostgreSQL server not "
                    "installed); test_slurm.py (2: no Slurm: sinfo not on PATH). "
                    "Run them with: sudo make test")
    assert skip_line(groups, root=True).endswith("Run them with: scripts/slurm/start.sh && make test")
    assert skip_line({"test_faults.py": (1, "cannot mount tmpfs here")}, root=True).endswith(
        "Run them with: make test")


def test_a_run_with_skips_ends_with_that_line():
    """The Slurm tests without sinfo on PATH (and not in CI): pytest's own summary, then ours."""
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"PATH": "/nonexistent"}
    out = subprocess.run([str(VENV_BIN / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/integration/test_slurm.py"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("NOT RUN: ") and "skipped test(s) - test_slurm.py (" in last, last
    assert "no Slurm: sinfo not on PATH" in last and "Run them with: " in last


# A private Slurm: tmpfs over Slurm's and munge's state, a network namespace with loopback
# and a 198.18.0.1 address (Slurm resolves with AI_ADDRCONFIG, which needs a non-loopback
# address). Prints key=value lines for the test to check.
NAMESPACE_SCRIPT = r"""
set -euo pipefail
ip link set lo up
ip addr add 198.18.0.1/32 dev lo
for d in /etc/slurm /run/slurm /run/munge /var/lib/slurm /var/log/slurm /var/lib/munge /var/log/munge; do
  mkdir -p "$d"; mount -t tmpfs tmpfs "$d"
done
[[ -z "$(ls -A /etc/slurm)" ]] || { echo "error=/etc/slurm is not private"; exit 1; }
secs() { local t0=$(date +%s%N); "$@" >/dev/null 2>&1 || true; echo $(( ($(date +%s%N) - t0) / 1000000 ))ms; }
ctld() { pgrep -o -x slurmctld || echo none; }
cd "$REPO"
echo "before=$(ctld)"
scripts/test.sh -q -p no:cacheprovider "$PROBE" >"$OUT/started.log" 2>&1 && echo started_rc=0 || echo started_rc=$?
echo "after=$(ctld)"
grep -q '^MessageTimeout=1$' /etc/slurm/slurm.conf && echo marked=yes || echo marked=no
echo "scontrol=$(secs scontrol show config)"
echo "plugin_import=$(secs "$PY" -c 'import snakemake_executor_plugin_slurm')"
scripts/slurm/start.sh >"$OUT/start.log" 2>&1
grep -q '^MessageTimeout' /etc/slurm/slurm.conf && echo restored=no || echo restored=yes
echo "running=$(ctld)"
scripts/test.sh -q -p no:cacheprovider "$PROBE" >"$OUT/existing.log" 2>&1 && echo existing_rc=0 || echo existing_rc=$?
echo "still=$(ctld)"
scripts/slurm/stop.sh --quiet
"""

PROBE = """
import subprocess


def test_a_slurm_answers():
    out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    assert "idle" in out.stdout.split(), out
"""


@pytest.mark.slow
@pytest.mark.slurm
def test_make_test_starts_and_stops_the_test_slurm_and_stop_leaves_clients_fast(tmp_path):
    if os.geteuid() != 0:
        require("needs root (namespaces, a private Slurm)")
    for tool in ("unshare", "ip", "pgrep", "slurmctld", "slurmd", "munged", "scontrol"):
        if shutil.which(tool) is None:
            require(f"{tool} not installed (scripts/slurm/start.sh installs Slurm)")
    if subprocess.run(["unshare", "--mount", "--pid", "--net", "--fork", "true"],
                      capture_output=True, timeout=30).returncode != 0:
        require("cannot create mount/PID/network namespaces here (unshare)")
    probe = tmp_path / "test_probe.py"
    probe.write_text(textwrap.dedent(PROBE))
    env = dict(os.environ, REPO=str(REPO), PROBE=str(probe), OUT=str(tmp_path),
               PY=str(VENV_BIN / "python"))
    env.pop("CI", None)
    out = subprocess.run(["unshare", "--mount", "--pid", "--net", "--fork", "--mount-proc",
                          "bash", "-c", NAMESPACE_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600)
    facts = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(tmp_path.glob("*.log")))
    why = f"{out.stdout}\n{out.stderr[-3000:]}\n{logs}"
    assert out.returncode == 0 and "error" not in facts, why
    # no Slurm -> make test started one, the probe saw it, and it was stopped at the end
    assert facts["before"] == "none" and facts["started_rc"] == "0", why
    assert facts["after"] == "none" and facts["marked"] == "yes", why
    # ... leaving clients that fail at once (a stopped controller used to cost 9-10 s each)
    assert int(facts["scontrol"].removesuffix("ms")) < 2000, why
    assert int(facts["plugin_import"].removesuffix("ms")) < 6000, why
    # start.sh restores the usual configuration; a Slurm already up is used and left running
    assert facts["restored"] == "yes" and facts["running"] != "none", why
    assert facts["existing_rc"] == "0" and facts["still"] == facts["running"], why
