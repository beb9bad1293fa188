"""Ollama: `ollama serve` with OLLAMA_HOST=127.0.0.1:PORT.

Locally the `ollama` binary (service.binary, else on PATH); on a cluster the same, or the
image in service.image (ollama/ollama) through Apptainer/Singularity. Ollama cannot be had on
these machines; its clients are tested against tests/fakes/fake_ollama.py, which also answers
`ollama serve` / `ollama --version` command lines.

Service fields (model is required):

    model: llama2            # pulled (POST /api/pull) and loaded (an empty generate with
                             #  keep_alive) before the load starts: never in the window
    num_parallel: 4          # OLLAMA_NUM_PARALLEL
    max_loaded_models: 1     # OLLAMA_MAX_LOADED_MODELS
    keep_alive: 30m          # OLLAMA_KEEP_ALIVE, and the warm-up request's keep_alive
    context_length: 4096     # OLLAMA_CONTEXT_LENGTH
    flash_attention: true    # OLLAMA_FLASH_ATTENTION
    max_queue: 512           # OLLAMA_MAX_QUEUE
    models_dir: /scratch/ollama   # OLLAMA_MODELS (where pulled models are kept)
    env: {OLLAMA_DEBUG: "1"} # anything else
    pull: true               # false: the model must already be present
    pull_timeout: 30m

Every OLLAMA_* variable the server gets is recorded in run.json (service.extra.env), with the
server's /api/version, the pull and load times, and the model's digest from /api/tags.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp

from aifb.errors import ServiceError
from aifb.units import parse_duration
from aifb.clients.llm.http import error_text, get_json, make_session, match_model
from aifb.clients.llm.ollama import (OllamaNativeClient, missing_model_message, ollama_load,
                                    ollama_models)
from aifb.services import register
from aifb.services.base import run_version
from aifb.services.vllm import HttpServerService

ENV_FIELDS = {"num_parallel": "OLLAMA_NUM_PARALLEL", "max_loaded_models": "OLLAMA_MAX_LOADED_MODELS",
              "keep_alive": "OLLAMA_KEEP_ALIVE", "context_length": "OLLAMA_CONTEXT_LENGTH",
              "flash_attention": "OLLAMA_FLASH_ATTENTION", "max_queue": "OLLAMA_MAX_QUEUE",
              "models_dir": "OLLAMA_MODELS"}
DEFAULT_KEEP_ALIVE = "30m"


@register("ollama")
class OllamaService(HttpServerService):
    binary_name = "ollama"
    label = "Ollama"
    default_ready_timeout = "60s"
    install_hint = ("install Ollama (https://ollama.com/download; `curl -fsSL "
                    "https://ollama.com/install.sh | sh`), or give service.image (ollama/ollama) "
                    "on a cluster with Apptainer.")

    @classmethod
    def telemetry_sources(cls, endpoint: str, secrets: dict, extra: dict) -> list[dict]:
        """/api/ps: the models loaded, their size and VRAM share (no request counter)."""
        return [{"type": "ollama", "name": "ollama", "endpoint": endpoint}]

    def child_env(self, host: str, port: int) -> dict:
        env = {"OLLAMA_HOST": f"{host}:{port}"}
        for field, var in ENV_FIELDS.items():
            value = self.spec.get(field)
            if value is None:
                continue
            if isinstance(value, bool):
                value = "1" if value else "0"
            if field == "models_dir":
                value = str(Path(str(value)).expanduser())
            env[var] = str(value)
        env.setdefault("OLLAMA_KEEP_ALIVE", DEFAULT_KEEP_ALIVE)
        env.update(super().child_env(host, port))
        return env

    def argv(self, binary: str, host: str, port: int, workdir: Path) -> list[str]:
        if not self.spec.get("model"):
            raise ServiceError("service.model: ollama needs the model to pull and serve (e.g. llama2)")
        prefix = self.container_prefix() + ["ollama"] if self.container else [binary]
        self.info.extra["model"] = self.spec["model"]
        return [*prefix, "serve", *[str(a) for a in self.spec.get("args", [])]]

    def version(self, binary: str) -> str | None:
        argv = self.container_prefix() + ["ollama", "--version"] if self.container else [binary, "--version"]
        return run_version(argv, r"version is (\S+)")

    async def probe(self, endpoint: str, timeout_s: float) -> None:
        await OllamaNativeClient.probe(endpoint, timeout_s)

    async def after_ready(self) -> None:
        """Pull the model (unless pull: false), then load it with keep_alive: before the load."""
        base = self.info.endpoint
        model = self.spec["model"]
        keep_alive = str(self.spec.get("keep_alive", DEFAULT_KEEP_ALIVE))
        async with make_session(1) as session:
            status, body = await get_json(session, base + "/api/version", label=self.label, base=base)
            if isinstance(body, dict):
                self.info.extra["server_version"] = body.get("version")
            present = await ollama_models(session, base)
            if match_model(model, present) is None:
                if self.spec.get("pull", True) is False:
                    raise ServiceError(missing_model_message(model, present, base) + " (service.pull is false)")
                self.info.extra["pull_s"] = await self._pull(session, base, model)
            present = await ollama_models(session, base)
            name = match_model(model, present)
            if name is None:
                raise ServiceError(missing_model_message(model, present, base))
            self.info.extra["served_model_name"] = name
            status, tags = await get_json(session, base + "/api/tags", label=self.label, base=base)
            for m in (tags or {}).get("models", []) if isinstance(tags, dict) else []:
                if isinstance(m, dict) and (m.get("name") or m.get("model")) == name:
                    self.info.extra["model_digest"] = m.get("digest")
                    self.info.extra["model_size"] = m.get("size")
                    self.info.extra["model_details"] = m.get("details")
            self.info.extra["load_s"] = round(await ollama_load(session, base, name, keep_alive), 6)
            self.info.extra["keep_alive"] = keep_alive

    async def _pull(self, session: aiohttp.ClientSession, base: str, model: str) -> float:
        timeout = parse_duration(self.spec.get("pull_timeout", "30m"))
        t0 = time.monotonic()
        last = None
        try:
            async with session.post(base + "/api/pull", data=json.dumps({"model": model, "stream": True}),
                                    timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                if resp.status != 200:
                    raise ServiceError(f"Ollama at {base} could not pull {model!r}: HTTP "
                                       f"{resp.status}: {error_text(await resp.read())}")
                async for line in resp.content:
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        continue
                    if obj.get("error"):
                        raise ServiceError(f"Ollama at {base} could not pull {model!r}: {obj['error']}")
                    last = obj.get("status")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ServiceError(f"Ollama at {base}: pulling {model!r} failed: "
                               f"{str(exc) or type(exc).__name__}") from None
        if last != "success":
            raise ServiceError(f"Ollama at {base}: pulling {model!r} ended with {last!r}, not success")
        return round(time.monotonic() - t0, 6)
