"""Where a target puts the jobs of a multi-node run, and what run.json keeps of a client job's
clock offset when the client job is on another machine (no Slurm needed: what would be
submitted, and the record of a sync)."""

from __future__ import annotations

import socket

import pytest

from aifb.errors import ConfigError, ServiceError
from aifb.slurm.client_jobs import clock_record
from aifb.slurm.commands import site_options
from aifb.slurm.service_launcher import SlurmServiceLauncher
from aifb.slurm.targets import get_target, validate_targets
from support import REPO

RECIPE = {"load": {"clients": 4, "duration": "3s"}}


def launcher(tmp_path, target_name: str) -> SlurmServiceLauncher:
    target = get_target(target_name, REPO)
    return SlurmServiceLauncher({"kind": "redis"}, tmp_path / "BM-1", target,
                                benchmark_id="BM-1", recipe=RECIPE)


def test_a_kinds_own_partition_places_its_service_job(tmp_path):
    """slurm-multinode: redis on the `gpu` node, apart from the client jobs on `cpu`."""
    opts = launcher(tmp_path, "slurm-multinode").sbatch_options()
    assert "--partition=gpu" in opts and "--partition=cpu" not in opts
    # client jobs keep the target's cpu partition
    assert site_options(get_target("slurm-multinode", REPO)) == ["--partition=cpu"]
    # without a partition of its own a kind goes where its GPUs say
    assert "--partition=cpu" in launcher(tmp_path, "slurm-local").sbatch_options()


def test_a_recipes_partition_wins_over_the_kinds_default(tmp_path):
    """A pipeline's store `partition: cpu` on slurm-multinode, whose redis default is gpu: the
    recipe's explicit choice places it (it was silently sent to the gpu node)."""
    target = get_target("slurm-multinode", REPO)
    cache = SlurmServiceLauncher({"kind": "redis", "partition": "cpu"}, tmp_path / "BM-1", target,
                                 benchmark_id="BM-1", recipe=RECIPE)
    opts = cache.sbatch_options()
    assert "--partition=cpu" in opts and "--partition=gpu" not in opts


def test_a_gpu_request_without_any_gpu_partition_is_still_refused():
    target = {"name": "t", "partitions": {"cpu": "cpu"}}
    with pytest.raises(ServiceError, match="names no gpu partition"):
        site_options(target, gpus=1)
    assert site_options(target, gpus=1, partition="big")[0] == "--partition=big"


def test_a_services_partition_must_be_a_name():
    with pytest.raises(ConfigError, match="partition"):
        validate_targets({"t": {"executor": "slurm", "services": {"redis": {"partition": 3}}}})


def test_clock_record_keeps_the_offset_of_a_client_job_on_another_machine():
    """A client job whose clock is 37 s ahead on another host: offset_ns says so (it used to be
    recorded only when the host names matched, as a self-check)."""
    t0 = 5_000_000_000
    sync = {"base_ns": t0 + 37_000_000_000 + 1234, "uncertainty_ns": 80_000, "rtt_ns": 160_000,
            "at_ns": 1_000_000, "samples": 32, "host": "not-" + socket.gethostname()}
    rec = clock_record(sync, t0)
    assert rec["offset_ns"] == 37_000_001_234 and rec["same_host"] is False
    assert rec["uncertainty_s"] == 8e-05
    same = clock_record(dict(sync, host=socket.gethostname(), base_ns=t0 - 5), t0)
    assert same["offset_ns"] == -5 and same["same_host"] is True
