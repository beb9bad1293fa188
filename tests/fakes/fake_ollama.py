"""FAKE Ollama server with exactly known timings. Not a model; Ollama cannot be installed here.

Follows Ollama's documented REST API (docs/api.md) closely enough for the harness:

    GET  /                    "Ollama is running"
    GET  /api/version         {"version": "0.0.0-fake"}
    GET  /api/tags            models present: {"models": [{"name", "model", "digest", "size", "details"}]}
    GET  /api/ps              models loaded
    POST /api/pull            NDJSON progress ... {"status": "success"}; the model is then present
    POST /api/generate        NDJSON lines {"response": "...", "done": false} ..., then a done line
    POST /api/chat            NDJSON lines {"message": {"role", "content"}, "done": false} ..., done line
    POST /api/embed           {"embeddings": [[8 floats], ...], "prompt_eval_count"} after the TTFT
    /v1/models, /v1/chat/completions, /v1/completions   Ollama's OpenAI-compatible API

The done line carries Ollama's counters: eval_count (= tokens written), prompt_eval_count (words
of the prompt), eval_duration (ns spent generating the eval_count tokens, so that
eval_duration / eval_count is the time per token, as Ollama documents: first-to-last token as
measured by this server plus one gap), prompt_eval_duration (arrival to the first token minus
one gap), load_duration, total_duration.
An empty prompt loads the model (done_reason "load"). An unknown model gets 404
{"error": "model 'x' not found"}. options.num_predict sets the output length (default 128).

Timing: token i is written at arrival + ttft + i * itl (absolute schedule). Configured by
environment, since `ollama serve` takes no flags: FAKE_OLLAMA_TTFT_MS (20), FAKE_OLLAMA_ITL_MS
(5), FAKE_OLLAMA_MODELS (present at start, comma-separated; default none),
FAKE_OLLAMA_PULLABLE (models /api/pull can fetch; default any), FAKE_OLLAMA_LOAD_MS (50: the
first use of a model pays it once, as a real load would), FAKE_OLLAMA_CACHE_TTFT_MS (the
simulated prefix cache of fake_openai.py, off by default). GET /fake/log and the X-Request-Id
echo are fake_openai.py's too. Binds OLLAMA_HOST (127.0.0.1:11434).

    OLLAMA_HOST=127.0.0.1:11500 python tests/fakes/fake_ollama.py serve
    python tests/fakes/fake_ollama.py --version      # "ollama version is 0.0.0-fake"
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fake_openai  # noqa: E402  (the OpenAI-compatible half is the same fake)

VERSION = "0.0.0-fake"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _canon(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


class FakeOllama:
    def __init__(self, ttft_ms=20.0, itl_ms=5.0, present=(), pullable=None, load_ms=50.0,
                 cache_ttft_ms=None):
        self.ttft_ms, self.itl_ms, self.load_ms = float(ttft_ms), float(itl_ms), float(load_ms)
        self.present: list[str] = [_canon(m) for m in present]
        self.pullable = None if pullable is None else {_canon(m) for m in pullable}
        self.loaded: set[str] = set()
        self.cfg = fake_openai.Config(models=self.present, ttft_ms=ttft_ms, itl_ms=itl_ms,
                                      owned_by="library", cache_ttft_ms=cache_ttft_ms)
        self.openai = fake_openai.FakeOpenAI(self.cfg)
        self.openai.served = lambda model: self.find(model) is not None

    def find(self, model) -> str | None:
        if not isinstance(model, str):
            return None
        name = _canon(model)
        return name if name in self.present else None

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.root)
        app.router.add_get("/api/version", self.version)
        app.router.add_get("/api/tags", self.tags)
        app.router.add_get("/api/ps", self.ps)
        app.router.add_post("/api/pull", self.pull)
        app.router.add_post("/api/generate", self.generate)
        app.router.add_post("/api/chat", self.chat)
        app.router.add_get("/v1/models", self.v1_models)
        app.router.add_post("/v1/chat/completions", self.openai.chat)
        app.router.add_post("/v1/completions", self.openai.completions)
        app.router.add_get("/fake/log", self.openai.log.handler)
        app.router.add_post("/v1/embeddings", self.openai.embeddings)
        app.router.add_post("/api/embed", self.embed)

    async def root(self, request):
        return web.Response(text="Ollama is running")

    async def version(self, request):
        return web.json_response({"version": VERSION})

    def _model_entry(self, name):
        digest = hashlib.sha256(name.encode()).hexdigest()
        return {"name": name, "model": name, "modified_at": _now(), "size": 3825819519,
                "digest": digest, "details": {"format": "gguf", "family": "fake",
                                              "parameter_size": "7B", "quantization_level": "Q4_0"}}

    async def tags(self, request):
        return web.json_response({"models": [self._model_entry(m) for m in self.present]})

    async def ps(self, request):
        return web.json_response({"models": [self._model_entry(m) for m in sorted(self.loaded)]})

    async def v1_models(self, request):
        self.cfg.models = list(self.present)
        return await self.openai.models(request)

    async def pull(self, request):
        body = await request.json()
        name = _canon(body.get("model") or body.get("name") or "")
        if self.pullable is not None and name not in self.pullable:
            return web.json_response({"error": "pull model manifest: file does not exist"}, status=500)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for status in ("pulling manifest", "verifying sha256 digest", "writing manifest", "success"):
            await resp.write(json.dumps({"status": status}).encode() + b"\n")
            await asyncio.sleep(0.01)
        if name not in self.present:
            self.present.append(name)
        await resp.write_eof()
        return resp

    async def embed(self, request):
        """/api/embed: {"embeddings": [[8 floats], ...], "prompt_eval_count"} after the TTFT."""
        t0 = asyncio.get_running_loop().time()
        body = await request.json()
        name = self.find(body.get("model"))
        if name is None:
            return web.json_response({"error": f"model '{body.get('model')}' not found"}, status=404)
        texts = fake_openai.embed_inputs(body)
        self.openai.log.note(request, {"prompt": texts, "max_tokens": None})
        await fake_openai.sleep_until(asyncio.get_running_loop(), t0 + self.ttft_ms / 1e3)
        return web.json_response({"model": name, "embeddings": [fake_openai.fake_vector(t) for t in texts],
                                  "prompt_eval_count": sum(len(t.split()) for t in texts)},
                                 headers=fake_openai.echo_id(request))

    async def generate(self, request):
        return await self._run(request, chat=False)

    async def chat(self, request):
        return await self._run(request, chat=True)

    async def _run(self, request: web.Request, chat: bool):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        t0_ns = time.perf_counter_ns()
        body = await request.json()
        model = body.get("model")
        name = self.find(model)
        if name is None:
            return web.json_response({"error": f"model '{model}' not found"}, status=404)
        load_ns = 0
        if name not in self.loaded:
            await asyncio.sleep(self.load_ms / 1e3)
            self.loaded.add(name)
            load_ns = int(self.load_ms * 1e6)
            t0 = loop.time()
        prompt = fake_openai.prompt_of(body) if chat else body.get("prompt", "")
        if not prompt and not chat:
            return web.json_response({"model": name, "created_at": _now(), "response": "",
                                      "done": True, "done_reason": "load"})
        options = body.get("options") or {}
        n = int(options.get("num_predict", 128))
        n = 128 if n < 0 else n
        ttft = float(body.get("fake_ttft_ms", self.ttft_ms)) / 1e3
        cached_ttft, _cached = self.openai.log.note(request, body)
        if cached_ttft is not None:
            ttft = cached_ttft
        itl = float(body.get("fake_itl_ms", self.itl_ms)) / 1e3
        stream = body.get("stream", True)
        prompt_n = len(prompt.split())
        itl_ns = int(itl * 1e9)   # Ollama: eval_duration covers all eval_count tokens
        times: list[int] = []

        def line(i, k, last):
            times.append(time.perf_counter_ns())
            text = "".join(fake_openai.token_text(j) for j in range(i, i + k))
            obj = {"model": name, "created_at": _now()}
            obj.update({"message": {"role": "assistant", "content": text}} if chat else {"response": text})
            obj["done"] = False
            return json.dumps(obj).encode() + b"\n"

        def done_line(k):
            first, last = (times[0], times[-1]) if times else (t0_ns, t0_ns)
            obj = {"model": name, "created_at": _now()}
            obj.update({"message": {"role": "assistant", "content": ""}} if chat else {"response": ""})
            obj.update({"done": True, "done_reason": "length",
                        "total_duration": time.perf_counter_ns() - t0_ns,
                        "load_duration": load_ns, "prompt_eval_count": prompt_n,
                        "prompt_eval_duration": max(0, first - t0_ns - load_ns - itl_ns),
                        "eval_count": k, "eval_duration": last - first + itl_ns})
            return obj

        if not stream:
            await fake_openai.sleep_until(loop, t0 + ttft)
            times.append(time.perf_counter_ns())
            await fake_openai.sleep_until(loop, t0 + ttft + (n - 1) * itl)
            times.append(time.perf_counter_ns())
            obj = done_line(n)
            text = "".join(fake_openai.token_text(j) for j in range(n))
            if chat:
                obj["message"]["content"] = text
            else:
                obj["response"] = text
            return web.json_response(obj, headers=fake_openai.echo_id(request))

        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                           **fake_openai.echo_id(request)})
        await resp.prepare(request)
        err_after = body.get("fake_error_after")
        written = await fake_openai.write_tokens(request, resp, n, ttft, itl, t0, line,
                                                 stop_after=err_after)
        if err_after is not None and written < n:
            await resp.write(json.dumps({"error": "fake: runner failed mid-stream"}).encode() + b"\n")
        else:
            await resp.write(json.dumps(done_line(written)).encode() + b"\n")
        await resp.write_eof()
        return resp


def make_app(fake: FakeOllama) -> web.Application:
    app = web.Application()
    fake.routes(app)
    return app


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--version" in argv or "-v" in argv:
        print(f"ollama version is {VERSION}")
        return 0
    if not argv or argv[0] != "serve":
        print("usage: fake_ollama.py serve | --version", file=sys.stderr)
        return 2
    hostport = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434").removeprefix("http://")
    host, _, port = hostport.rpartition(":")
    env = os.environ.get
    present = [m for m in env("FAKE_OLLAMA_MODELS", "").split(",") if m]
    pullable = env("FAKE_OLLAMA_PULLABLE")
    fake = FakeOllama(ttft_ms=env("FAKE_OLLAMA_TTFT_MS", "20"), itl_ms=env("FAKE_OLLAMA_ITL_MS", "5"),
                      present=present, load_ms=env("FAKE_OLLAMA_LOAD_MS", "50"),
                      cache_ttft_ms=env("FAKE_OLLAMA_CACHE_TTFT_MS"),
                      pullable=None if pullable is None else [m for m in pullable.split(",") if m])
    try:
        import uvloop
        uvloop.install()
    except (ImportError, AttributeError):
        pass
    web.run_app(make_app(fake), host=host or "127.0.0.1", port=int(port), print=None,
                access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
