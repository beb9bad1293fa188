"""Redis as a local process: redis-server on 127.0.0.1, a free port, persistence off.

A password (service.password_env / password_file, or the random one aifb.credentials gives a
run that names none) becomes `requirepass`, written to the server's stdin as its configuration
(`redis-server -`), so it is in no command line, file or log. Without one, anyone who reaches
the port may use the server (CONFIG SET dir + SAVE writes files as the server's user).
"""

from __future__ import annotations

from pathlib import Path

from aifb.credentials import load_secrets
from aifb.clients.redis import RedisClient
from aifb.services import register
from aifb.services.base import LocalProcessService, run_version, telemetry_credentials

# what the sampler's Redis source (aifb.telemetry.sources.RedisSource) sends itself: left out
# of the server's count of the client's requests
SAMPLER_COMMANDS = ["info", "auth", "hello"]


def config_string(value: str) -> str:
    """`value` as a double-quoted redis.conf argument (\\xHH for anything but plain ASCII)."""
    out = []
    for ch in value:
        if ch.isascii() and ch.isprintable() and ch not in '"\\':
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return '"' + "".join(out) + '"'


@register("redis")
class RedisService(LocalProcessService):
    binary_name = "redis-server"
    install_hint = ("install it with `apt-get install redis-server` (Debian/Ubuntu, as root) or "
                    "`conda install -c conda-forge redis`.")
    needs_password = True  # aifb.credentials.with_run_password
    auth_hint = "service.password_env or password_file: requirepass"

    @classmethod
    def telemetry_sources(cls, endpoint: str, secrets: dict, extra: dict) -> list[dict]:
        """INFO (stats, commandstats, clients, memory, cpu, latencystats); commandstats' calls
        are the server's count of requests."""
        return [{"type": "redis", "name": "redis", "endpoint": endpoint,
                 "secrets": telemetry_credentials(secrets),
                 "figures": {"requests": {
                     "metrics": ["commands_total"], "exclude": {"cmd": SAMPLER_COMMANDS},
                     "client": "requests",
                     "basis": "Redis commandstats calls (all commands but the sampler's INFO/AUTH) "
                              "vs client requests"},
                     "queue": ["connected_clients"]}}]

    def before_deploy(self) -> None:
        self._password = load_secrets(self.spec).get("password") or None

    def auth(self) -> str | None:
        return "password (requirepass, given on stdin)" if self._password else None

    def spawn_stdin(self) -> bytes | None:
        return f"requirepass {config_string(self._password)}\n".encode() if self._password else None

    def argv(self, binary: str, host: str, port: int, workdir: Path) -> list[str]:
        return [binary, *(["-"] if self._password else []), "--port", str(port), "--bind", host,
                "--save", "", "--appendonly", "no", "--protected-mode", "yes", "--dir",
                str(workdir), "--daemonize", "no", *self.spec.get("args", [])]

    async def probe(self, endpoint: str, timeout_s: float) -> None:
        await RedisClient.probe(endpoint, timeout_s,
                                {"password": self._password} if self._password else None)

    def fatal_probe_error(self, exc) -> bool:
        return "rejected the credentials" in str(exc)

    def version(self, binary: str) -> str | None:
        return run_version([binary, "--version"], r"v=(\S+)")

    def endpoint_for(self, host: str, port: int) -> str:
        return f"redis://{host}:{port}"
