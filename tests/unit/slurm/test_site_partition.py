"""A service's `partition: cpu|gpu` picks the target's partition of that role (a pipeline's LLM
on the gpu partition without asking for GPUs, as on the test Slurm); default by GPUs asked."""

from __future__ import annotations

import pytest

from aifb.errors import ServiceError
from aifb.slurm.commands import site_options

TARGET = {"name": "t", "partitions": {"cpu": "batch", "gpu": "accel"}}


def test_the_partition_follows_the_gpus_unless_the_service_names_one():
    assert site_options(TARGET) == ["--partition=batch"]
    assert site_options(TARGET, gpus=1) == ["--partition=accel", "--gpus=1"]
    assert site_options(TARGET, role="gpu") == ["--partition=accel"]
    assert site_options(TARGET, gpus=1, role="cpu") == ["--partition=batch", "--gpus=1"]


def test_a_partition_the_target_does_not_name_is_a_clear_error():
    with pytest.raises(ServiceError, match="target 't' names no gpu partition"):
        site_options({"name": "t", "partitions": {"cpu": "batch"}}, role="gpu")
