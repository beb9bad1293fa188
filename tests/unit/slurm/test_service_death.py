"""What run.json says when a service job ends during the run: Slurm's final state, not the
COMPLETING it shows while a cancelled job's processes stop, and the service job's own account.
Slurm's answers are given (squeue's job_state); the real scancel is in
tests/integration/test_slurm_multinode.py::test_the_service_job_cancelled_mid_run_ends_the_run_partial_naming_it."""

from __future__ import annotations

from aifb.jsonio import write_json
from aifb.slurm import service_launcher
from aifb.slurm.service_launcher import SlurmServiceLauncher
from aifb.slurm.targets import get_target
from support import REPO


def state(name: str) -> dict:
    return {"state": name, "reason": "None", "nodes": "aifb-n1", "time_used": "0:09",
            "time_limit": "16:00"}


def test_a_cancelled_job_is_named_cancelled_once_past_completing(tmp_path, monkeypatch):
    launcher = SlurmServiceLauncher({"kind": "redis"}, tmp_path, get_target("slurm-multinode", REPO),
                                    benchmark_id="BM-1", recipe={"load": {"duration": "3s"}})
    launcher.job_id, launcher.ready = "14", True
    write_json(tmp_path / "service.json", {"job_id": "14", "status": "stopped",
                                           "reason": "stopped by SIGTERM"})
    answers = iter([state("COMPLETING"), state("COMPLETING"), state("CANCELLED")])
    monkeypatch.setattr(service_launcher, "job_state", lambda job_id: next(answers))
    monkeypatch.setattr(SlurmServiceLauncher, "COMPLETING_WAIT_S", 5.0)
    assert not launcher.alive()
    assert launcher.death_reason() == (
        "the redis service job 14 ended during the run (Slurm state CANCELLED: it was cancelled "
        "(scancel) by someone other than this benchmark; the service job: stopped by SIGTERM)")
