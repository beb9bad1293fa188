"""Redis as a local process: redis-server on 127.0.0.1, a free port, persistence off."""

from __future__ import annotations

from pathlib import Path

from . import register
from .base import LocalProcessService, run_version


@register("redis")
class RedisService(LocalProcessService):
    binary_name = "redis-server"
    install_hint = ("install it with `apt-get install redis-server` (Debian/Ubuntu, as root) or "
                    "`conda install -c conda-forge redis`.")

    def argv(self, binary: str, host: str, port: int, workdir: Path) -> list[str]:
        return [binary, "--port", str(port), "--bind", host, "--save", "", "--appendonly", "no",
                "--protected-mode", "yes", "--dir", str(workdir), "--daemonize", "no",
                *self.spec.get("args", [])]

    def version(self, binary: str) -> str | None:
        return run_version([binary, "--version"], r"v=(\S+)")

    def endpoint_for(self, host: str, port: int) -> str:
        return f"redis://{host}:{port}"
