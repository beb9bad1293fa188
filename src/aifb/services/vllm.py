"""vLLM's OpenAI-compatible server, and the shared base of the LLM server kinds.

Locally: the `vllm` binary if it is on PATH (or service.binary) runs `vllm serve MODEL --host
127.0.0.1 --port P ...`. On a cluster: the same command, or inside the image given in
service.image (e.g. vllm/vllm-openai:v0.9.2) through Apptainer/Singularity:
`apptainer exec --nv docker://IMAGE vllm serve MODEL ...`. vLLM is not installable on these
CPU-only machines (the PyPI wheel is CUDA-only): here the kind says so clearly, and its client
is tested against tests/fakes/fake_openai.py, which also answers `vllm serve` command lines.

Service fields (recipe `service:`, all optional except model):

    model: meta-llama/Llama-3.1-8B-Instruct     # what `vllm serve` loads
    served_model_name: llama3                   # --served-model-name (default: model)
    engine_args: {max-num-seqs: 256, gpu-memory-utilization: 0.9, tensor-parallel-size: 1}
    args: ["--enable-prefix-caching"]           # appended as is
    api_key_env: VLLM_KEY | api_key_file: ~/.vllm_key   # passed as VLLM_API_KEY, never in argv
    env: {VLLM_LOGGING_LEVEL: INFO}             # extra environment, recorded
    ready_timeout: 20m                          # loading weights takes minutes

Ready when GET /health answers 200 and GET /v1/models lists the served model. The model, the
engine arguments and the environment are recorded in run.json (service.extra).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from aifb.credentials import load_secrets
from aifb.errors import ServiceError
from aifb.clients.llm.http import get_json, make_session
from aifb.clients.llm.openai import OpenAIClient
from aifb.services import register
from aifb.services.base import LocalProcessService, bearer_headers, find_executable, run_version

CONTAINER_RUNTIMES = ("apptainer", "singularity")


def flag_args(options: dict | None) -> list[str]:
    """{max-num-seqs: 8, enforce-eager: true, x_y: 1} -> ['--max-num-seqs', '8', '--enforce-eager', '--x-y', '1']."""
    out: list[str] = []
    for key, value in (options or {}).items():
        flag = "--" + str(key).lstrip("-").replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, (list, tuple)):
            out += [flag, *[str(v) for v in value]]
        else:
            out += [flag, str(value)]
    return out


class HttpServerService(LocalProcessService):
    """A local HTTP inference server: LocalProcessService plus a child environment (recorded,
    secrets left out), an HTTP readiness probe, and `after_ready()` for work that must happen
    before the load (pulling or loading a model)."""

    label = "server"
    default_ready_timeout = "60s"
    probe_timeout_s = 2.0
    probe_every_s = 0.1
    api_key_env_var: str | None = None     # how the server takes its API key

    def __init__(self, spec: dict, workdir: Path, log_path: Path):
        super().__init__(spec, workdir, log_path)
        self.api_key = None
        self.container: str | None = None

    # -- to implement -----------------------------------------------------------------
    def child_env(self, host: str, port: int) -> dict:
        """Variables for the server (recorded in run.json), besides the inherited environment."""
        return {str(k): str(v) for k, v in (self.spec.get("env") or {}).items()}

    async def after_ready(self) -> None:
        return None

    def endpoint_for(self, host: str, port: int) -> str:
        return f"http://{host}:{port}"

    # -- binary or container ------------------------------------------------------------
    def resolve_binary(self) -> str:
        wanted = self.spec.get("binary") or self.binary_name
        found = find_executable(wanted)
        if found:
            return found
        image = self.spec.get("image")
        runtime = next((shutil.which(r) for r in CONTAINER_RUNTIMES if shutil.which(r)), None)
        if image and runtime and not self.spec.get("binary"):
            self.container = runtime
            return runtime
        hint = (f" service.image {image} needs Apptainer/Singularity, which is not installed "
                "here either." if image else "")
        raise ServiceError(f"{wanted} not found on PATH: {self.install_hint}{hint} Or set "
                           f"service.binary to its path, or point service.endpoint at a running "
                           f"{self.label}.")

    def container_prefix(self) -> list[str]:
        image = self.spec["image"]
        ref = image if "://" in image else f"docker://{image}"
        gpus = ((self.spec.get("resources") or {}).get("gpus") or 0) > 0
        # no --cleanenv: the server's settings (OLLAMA_HOST, VLLM_API_KEY, ...) travel in the
        # environment, which Apptainer passes into the container by default
        return [self.container, "exec", *(["--nv"] if gpus or self.kind == "vllm" else []), ref]

    # -- lifecycle ------------------------------------------------------------------
    def before_deploy(self) -> None:
        self.api_key = load_secrets(self.spec).get("api_key")

    @property
    def auth_hint(self) -> str:
        return ("service.api_key_env or api_key_file" if self.api_key_env_var else
                "this kind has no authentication aifb can configure")

    def auth(self) -> str | None:
        return (f"API key ({self.api_key_env_var})" if self.api_key and self.api_key_env_var
                else None)

    def spawn_env(self, host: str, port: int) -> dict:
        recorded = self.child_env(host, port)
        env = dict(recorded)
        if self.api_key and self.api_key_env_var:
            env[self.api_key_env_var] = self.api_key
        self.info.extra["env"] = recorded
        if self.container:
            self.info.image = self.spec.get("image")
            self.info.extra["container_runtime"] = self.container
        if self.api_key:
            self.info.extra["api_key"] = f"from {self._key_source()} (passed as {self.api_key_env_var})"
        return env

    async def deploy(self) -> str:
        endpoint = await super().deploy()
        t1 = time.monotonic()
        await self.after_ready()
        self.info.extra["after_ready_s"] = round(time.monotonic() - t1, 6)
        return endpoint

    def _key_source(self) -> str:
        if self.spec.get("api_key_env"):
            return f"${self.spec['api_key_env']}"
        return str(self.spec.get("api_key_file"))

    def _headers(self) -> dict | None:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None

    async def probe(self, endpoint: str, timeout_s: float) -> None:
        """Ready when GET /health answers 200 and /v1/models lists a model."""
        async with make_session(1) as session:
            status, _ = await get_json(session, endpoint + "/health", label=self.label,
                                       base=endpoint, timeout_s=max(0.05, timeout_s))
            if status != 200:
                raise ServiceError(f"{self.label} at {endpoint}: /health answered HTTP {status} "
                                   "(still loading)")
            status, body = await get_json(session, endpoint + "/v1/models", label=self.label,
                                          base=endpoint, headers=self._headers(),
                                          timeout_s=max(0.05, timeout_s))
        models = OpenAIClient.models_from(status, body, endpoint, self.label, bool(self.api_key))
        if not models:
            raise ServiceError(f"{self.label} at {endpoint} lists no model yet")
        self.info.extra["models_served"] = models

    def fatal_probe_error(self, exc: ServiceError) -> bool:
        return "rejected the request" in str(exc)   # a wrong API key: waiting will not help


@register("vllm")
class VLLMService(HttpServerService):
    binary_name = "vllm"
    label = "vLLM"
    default_ready_timeout = "20m"
    api_key_env_var = "VLLM_API_KEY"
    install_hint = ("vLLM needs a CUDA (or ROCm) machine: `pip install vllm` there, or give "
                    "service.image (vllm/vllm-openai) on a cluster with Apptainer.")

    @classmethod
    def telemetry_sources(cls, endpoint: str, secrets: dict, extra: dict) -> list[dict]:
        """/metrics: running/waiting requests, KV-cache usage, prefix-cache queries/hits,
        preemptions, its own TTFT histogram; successful requests are its count of requests."""
        waiting, running = "vllm:num_requests_waiting", "vllm:num_requests_running"
        return [{"type": "prometheus", "name": "vllm", "endpoint": endpoint,
                 "headers": bearer_headers(secrets),
                 "figures": {
                     "requests": {"metrics": ["vllm:request_success_total"], "client": "ok",
                                  "basis": "vLLM vllm:request_success_total vs client ok requests"},
                     "llm": {"kv_cache_usage": ["vllm:kv_cache_usage_perc",   # vLLM >= 0.10
                                                "vllm:gpu_cache_usage_perc"],
                             "waiting": [waiting], "running": [running],
                             "prefix_cache": {"sum": "vllm:prefix_cache_hits_total",
                                              "count": "vllm:prefix_cache_queries_total"},
                             "preemptions": "vllm:num_preemptions_total",
                             "ttft": {"sum": "vllm:time_to_first_token_seconds_sum",
                                      "count": "vllm:time_to_first_token_seconds_count"}},
                     "queue": [waiting, running]}}]

    def served_model_name(self) -> str:
        return self.spec.get("served_model_name") or self.spec["model"]

    def argv(self, binary: str, host: str, port: int, workdir: Path) -> list[str]:
        model = self.spec.get("model")
        if not model:
            raise ServiceError("service.model: vllm needs the model to serve (a Hugging Face "
                               "name or a local directory)")
        prefix = self.container_prefix() + ["vllm"] if self.container else [binary]
        argv = [*prefix, "serve", model, "--host", host, "--port", str(port)]
        if self.spec.get("served_model_name"):
            argv += ["--served-model-name", self.spec["served_model_name"]]
        argv += flag_args(self.spec.get("engine_args"))
        argv += [str(a) for a in self.spec.get("args", [])]
        self.info.extra.update({"model": model, "served_model_name": self.served_model_name(),
                                "engine_args": self.spec.get("engine_args") or {}})
        return argv

    def version(self, binary: str) -> str | None:
        if self.container:
            return run_version(self.container_prefix() + ["vllm", "--version"], r"(\d+\.\d+\S*)")
        return run_version([binary, "--version"], r"(\d+\.\d+\S*)")

    async def probe(self, endpoint: str, timeout_s: float) -> None:
        await super().probe(endpoint, timeout_s)
        want = self.served_model_name()
        if want not in self.info.extra.get("models_served", []):
            raise ServiceError(f"vLLM at {endpoint} does not list {want!r} yet "
                               f"(lists: {', '.join(self.info.extra.get('models_served', []))})")
