"""ChromaDB as a local process: `chroma run --path DIR --host 127.0.0.1 --port P` (pip chromadb).

The data directory is <workdir>/chroma-data (results/<id>/service/chroma-data) and is removed at
teardown unless service.keep_data is true (it is a copy of seeded data, not a result).
Telemetry is off (ANONYMIZED_TELEMETRY=False). Readiness is a real GET /api/v2/heartbeat.
On clusters the `chromadb/chroma` image runs the same server (recorded as cluster_image).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from aifb import process
from aifb.services import register
from aifb.services.base import LocalProcessService

CLUSTER_IMAGE = "docker.io/chromadb/chroma"


def package_version(binary: str, package: str) -> str | None:
    """The pip version of `package` in the environment whose interpreter runs `binary` (a
    console script), read from its shebang; None when that cannot be told."""
    try:
        with open(binary, "rb") as fh:
            first = fh.readline(512).decode("utf-8", "replace").strip()
    except OSError:
        return None
    if not first.startswith("#!") or "python" not in first:
        return None
    interp = first[2:].strip().split()[0]
    try:
        out = subprocess.run([interp, "-c", "import importlib.metadata as m, sys; "
                              f"print(m.version({package!r}))"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


@register("chroma")
class ChromaService(LocalProcessService):
    binary_name = "chroma"
    install_hint = ("install it with `pip install chromadb` (the `chroma` command comes with it; "
                    "on clusters use the chromadb/chroma image).")
    environment = {"ANONYMIZED_TELEMETRY": "False"}

    def argv(self, binary: str, host: str, port: int, workdir: Path) -> list[str]:
        self.data_dir = workdir / "chroma-data"
        return [binary, "run", "--path", str(self.data_dir), "--host", host, "--port", str(port),
                *self.spec.get("args", [])]

    def version(self, binary: str) -> str | None:
        pkg = package_version(binary, "chromadb")
        try:
            out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20,
                                 env=process.server_env(self.environment))
            m = re.search(r"(\d+\.\d+\.\d+\S*)", out.stdout)
            cli = m.group(1) if m else None
        except (OSError, subprocess.TimeoutExpired):
            cli = None
        self.info.extra.update({"package": "chromadb", "package_version": pkg,
                                "cli_version": cli, "cluster_image": self.cluster_image()})
        return pkg or cli

    def cluster_image(self) -> str:
        return self.spec.get("image") or (
            f"{CLUSTER_IMAGE}:{self.spec['version']}" if self.spec.get("version") else CLUSTER_IMAGE)

    def endpoint_for(self, host: str, port: int) -> str:
        return f"http://{host}:{port}"

    def spawn_env(self, host: str, port: int) -> dict:
        self.info.extra["data_dir"] = str(self.data_dir)
        self.info.extra["telemetry"] = "off (ANONYMIZED_TELEMETRY=False)"
        return dict(self.environment)

    async def teardown(self) -> None:
        await super().teardown()
        data = getattr(self, "data_dir", None)
        if data is not None and not self.spec.get("keep_data") and data.is_dir():
            shutil.rmtree(data, ignore_errors=True)
            self.info.extra["data_dir_removed"] = True
