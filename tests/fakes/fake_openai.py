"""FAKE OpenAI-compatible LLM server (vLLM-flavoured) with exactly known timings. Not a model.

For what a real server cannot show: exact time to first token and inter-token gaps (to check
the harness's TTFT/TPOT/ITL to the millisecond), injected faults, API keys, and vLLM itself
(whose wheel is CUDA-only, so no real vLLM runs on these machines). It follows the documented
OpenAI API as vLLM serves it:

    GET  /health                 200 (vLLM)
    GET  /version                {"version": "0.0.0-fake"}
    GET  /v1/models              {"object": "list", "data": [{"id": ..., "object": "model"}]}
    POST /v1/chat/completions    chat; stream=true: SSE `data: {...}` chunks, `data: [DONE]`
    POST /v1/completions         completions; same
    POST /tokenize               vLLM's: {"count", "tokens", "max_model_len"} (1 token per word)
    POST /v1/embeddings          8-dimensional vectors, after the TTFT; usage.prompt_tokens

Streams as vLLM does: the first chunk (role "assistant", content "") and the first token's
chunk together at TTFT, one chunk per token, finish_reason on the last token's chunk, then -
when stream_options.include_usage - a chunk with `choices: []` and `usage`, then [DONE].
Unknown models get vLLM's 404 NotFoundError; with an API key (--api-key or VLLM_API_KEY) a
request without the right `Authorization: Bearer` gets 401 {"error": "Unauthorized"}.

Timing: the request's arrival is t0; token i (0-based) is written at t0 + ttft + i * itl,
scheduled on absolute times (no drift). Output length = max_tokens (as with ignore_eos).

Faults and variants, per request through extra body fields (workload.extra_body):
    fake_error_after: k      after k tokens, an error event (vLLM's mid-stream error) and end
    fake_drop_after: k       after k tokens, drop the connection mid-response
    fake_no_usage: true      no usage (neither in the stream nor in a non-streamed body)
    fake_tokens_per_chunk: m m tokens per chunk (usage counts tokens, so chunks != tokens)
    fake_ttft_ms, fake_itl_ms override the server's timings for this request

Request ids and a request log: a request's X-Request-Id header is echoed in the response
headers, and GET /fake/log returns what the fake saw of every generation request, in order:
{"request_id", "messages" (chat) or "prompt" (completions), "max_tokens", "ignore_eos",
"cache_hit"} (the last 10,000).

A simulated prefix cache (--cache-ttft-ms C; off by default): a request's cacheable prefix is
everything before its last user message (chat) or before the last blank line of its prompt
(completions). When that prefix, or the whole prompt, was seen before, the first token comes
after C ms instead of the configured TTFT and usage.prompt_tokens_details.cached_tokens is
the prefix's word count. Every request's prefix and whole prompt are then remembered.

Its own lateness (for benchmarks/llm_client_scale.py, to tell the fake's delays from the
client's): with --timing-log PATH every streamed generation appends one JSON line
{"request_id", "arrival_ns", "first_ns", "last_ns", "tokens"} (time.perf_counter_ns(), the
clock aifb.clock.now_ns reads: comparable across processes of one machine; first/last: when
the first and the last token's chunk were handed to the transport). --reuse-port lets several
fake processes share one port (SO_REUSEPORT), so the fake can use more than one core.

Command line (also accepts vLLM's: `fake_openai.py serve MODEL --host H --port P
[--served-model-name N] [--api-key K]`):

    python tests/fakes/fake_openai.py serve fake-model --port 8000 --ttft-ms 50 --itl-ms 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from aiohttp import web

VERSION = "0.0.0-fake"


class Config:
    def __init__(self, models=("fake-model",), ttft_ms=20.0, itl_ms=5.0, api_key=None,
                 usage=True, owned_by="vllm", cache_ttft_ms=None, timing_log=None):
        self.timing_log = timing_log   # an open text file (line-buffered) or None
        self.cache_ttft_ms = None if cache_ttft_ms is None else float(cache_ttft_ms)
        self.models = list(models)
        self.ttft_ms = float(ttft_ms)
        self.itl_ms = float(itl_ms)
        self.api_key = api_key
        self.usage = usage
        self.owned_by = owned_by


def count_words(text: str) -> int:
    return len(text.split())


def prompt_of(body: dict) -> str:
    if "messages" in body:
        return " ".join(str(m.get("content") or "") for m in body["messages"] if isinstance(m, dict))
    p = body.get("prompt", "")
    return p if isinstance(p, str) else " ".join(map(str, p))


def cache_key(body: dict) -> tuple[str, str]:
    """(cacheable prefix, whole prompt) of a request, for the simulated prefix cache."""
    if isinstance(body.get("messages"), list):
        msgs = [m for m in body["messages"] if isinstance(m, dict)]
        last_user = max((i for i, m in enumerate(msgs) if m.get("role") == "user"), default=0)
        dump = [json.dumps(m, sort_keys=True) for m in msgs]
        return "\n".join(dump[:last_user]), "\n".join(dump)
    p = prompt_of(body)
    return (p.rsplit("\n\n", 1)[0] if "\n\n" in p else ""), p


class RequestLog:
    """What the fake saw (GET /fake/log) and its simulated prefix cache."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.seen: set[str] = set()
        self.entries: list[tuple] = []   # (request id, body, cache hit)

    def note(self, request, body: dict) -> tuple[float | None, int]:
        """Log a generation request; returns (TTFT override in s or None, cached words).
        Cheap when the cache is off (the timing tests run 64 streams through this)."""
        hit, cached = False, 0
        if self.cfg.cache_ttft_ms is not None:
            prefix, whole = cache_key(body)
            hit = whole in self.seen or bool(prefix and prefix in self.seen)
            cached = count_words(whole if whole in self.seen else prefix) if hit else 0
            self.seen.update(x for x in (prefix, whole) if x)
        self.entries.append((request.headers.get("X-Request-Id"), body, hit))
        if len(self.entries) > 20000:
            del self.entries[:10000]
        return (self.cfg.cache_ttft_ms / 1e3 if hit else None), cached

    async def handler(self, request):
        out = []
        for rid, body, hit in self.entries[-10000:]:
            e = {"request_id": rid, "max_tokens": body.get("max_tokens")
                 or (body.get("options") or {}).get("num_predict"),
                 "ignore_eos": body.get("ignore_eos"), "cache_hit": hit}
            if "messages" in body:
                e["messages"] = body["messages"]
            else:
                e["prompt"] = body.get("prompt")
            out.append(e)
        return web.json_response(out)


def embed_inputs(body: dict) -> list[str]:
    inp = body.get("input")
    return [inp] if isinstance(inp, str) else [str(x) for x in (inp or [])]


def fake_vector(text: str) -> list[float]:
    return [round((hash(text) >> (4 * k) & 15) / 15, 3) for k in range(8)]


def echo_id(request) -> dict:
    rid = request.headers.get("X-Request-Id")
    return {"X-Request-Id": rid} if rid else {}


def error_json(message: str, type_: str, code: int) -> dict:
    return {"object": "error", "message": message, "type": type_, "param": None, "code": code}


def authorized(request: web.Request, cfg: Config) -> bool:
    if not cfg.api_key:
        return True
    return request.headers.get("Authorization", "") == f"Bearer {cfg.api_key}"


async def sleep_until(loop, t: float) -> None:
    delay = t - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def write_tokens(request, resp, n_tokens: int, ttft_s: float, itl_s: float, t0: float,
                       make_chunks, per_chunk: int = 1, stop_after: int | None = None) -> int:
    """Write n_tokens at t0 + ttft + i * itl (absolute), grouping per_chunk tokens per chunk;
    `make_chunks(i, k, last)` returns the bytes for tokens i..i+k-1. Returns tokens written."""
    loop = asyncio.get_running_loop()
    i = 0
    while i < n_tokens:
        if stop_after is not None and i >= stop_after:
            break
        k = min(per_chunk, n_tokens - i)
        await sleep_until(loop, t0 + ttft_s + (i + k - 1) * itl_s)
        if i == 0:
            request["fake_first_write_ns"] = time.perf_counter_ns()
        if i + k >= n_tokens:
            request["fake_last_write_ns"] = time.perf_counter_ns()
        await resp.write(make_chunks(i, k, i + k >= n_tokens))
        i += k
    return i


def sse(obj) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def token_text(i: int) -> str:
    return f" tok{i}"


class FakeVLLMMetrics:
    """vLLM's documented Prometheus metric names (docs.vllm.ai, "Production Metrics", V1
    engine), counted from what this fake really served, through prometheus_client: the
    telemetry sampler's requests ratio and LLM block are tested against it."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        reg = self.registry = CollectorRegistry()
        lab = ["model_name"]
        self.running = Gauge("vllm:num_requests_running", "running", lab, registry=reg)
        self.waiting = Gauge("vllm:num_requests_waiting", "waiting", lab, registry=reg)
        self.kv = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage (1 = 100 %)", lab, registry=reg)
        self.success = Counter("vllm:request_success", "finished requests",
                               lab + ["finished_reason"], registry=reg)
        self.prompt = Counter("vllm:prompt_tokens", "prefill tokens", lab, registry=reg)
        self.generation = Counter("vllm:generation_tokens", "generated tokens", lab, registry=reg)
        self.pc_queries = Counter("vllm:prefix_cache_queries", "prefix-cache queries (tokens)", lab, registry=reg)
        self.pc_hits = Counter("vllm:prefix_cache_hits", "prefix-cache hits (tokens)", lab, registry=reg)
        self.preempt = Counter("vllm:num_preemptions", "preemptions", lab, registry=reg)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "TTFT", lab, registry=reg)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "ITL", lab, registry=reg)

    def render(self) -> bytes:
        from prometheus_client import generate_latest
        return generate_latest(self.registry)


class FakeOpenAI:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.requests = 0
        self.metrics = FakeVLLMMetrics()
        self.in_flight = 0
        self.log = RequestLog(cfg)

    def routes(self, app: web.Application, prefix_models=True) -> None:
        app.router.add_get("/health", self.health)
        app.router.add_get("/version", self.version)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_get("/fake/log", self.log.handler)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/metrics", self.prometheus)

    async def prometheus(self, request):
        return web.Response(body=self.metrics.render(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    def _served(self, model: str, prompt_tokens: int, n: int, ttft: float, itl: float) -> None:
        """Count one finished request in the vLLM metrics (the fake's TTFT is the one it slept)."""
        m = self.metrics
        m.success.labels(model, "length").inc()
        m.prompt.labels(model).inc(prompt_tokens)
        m.generation.labels(model).inc(n)
        m.pc_queries.labels(model).inc(prompt_tokens)
        m.ttft.labels(model).observe(ttft)
        for _ in range(max(0, n - 1)):
            m.itl.labels(model).observe(itl)

    async def health(self, request):
        return web.Response(status=200)

    async def version(self, request):
        return web.json_response({"version": VERSION})

    async def models(self, request):
        if not authorized(request, self.cfg):
            return web.json_response({"error": "Unauthorized"}, status=401)
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": self.cfg.owned_by, "root": m}
            for m in self.cfg.models]})

    async def tokenize(self, request):
        if not authorized(request, self.cfg):
            return web.json_response({"error": "Unauthorized"}, status=401)
        body = await request.json()
        n = count_words(body.get("prompt") or prompt_of(body))
        return web.json_response({"count": n, "tokens": list(range(n)), "max_model_len": 4096})

    async def embeddings(self, request):
        """/v1/embeddings: 8-dimensional vectors after the configured TTFT (the fake's whole
        latency for an embedding request); usage.prompt_tokens = the inputs' words."""
        t0 = asyncio.get_running_loop().time()
        if not authorized(request, self.cfg):
            return web.json_response({"error": "Unauthorized"}, status=401)
        body = await request.json()
        if not self.served(body.get("model")):
            return web.json_response(error_json(f"The model `{body.get('model')}` does not exist.",
                                                "NotFoundError", 404), status=404)
        texts = embed_inputs(body)
        self.log.note(request, {"prompt": texts, "max_tokens": None})
        await sleep_until(asyncio.get_running_loop(), t0 + self.cfg.ttft_ms / 1e3)
        n = sum(count_words(t) for t in texts)
        return web.json_response({"object": "list", "model": body.get("model"), "data": [
            {"object": "embedding", "index": i, "embedding": fake_vector(t)}
            for i, t in enumerate(texts)], "usage": {"prompt_tokens": n, "total_tokens": n}},
            headers=echo_id(request))

    def served(self, model) -> bool:
        return model in self.cfg.models

    async def chat(self, request):
        return await self._generate(request, chat=True)

    async def completions(self, request):
        return await self._generate(request, chat=False)

    async def _generate(self, request: web.Request, chat: bool):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        arrival_ns = time.perf_counter_ns()
        self.requests += 1
        if not authorized(request, self.cfg):
            return web.json_response({"error": "Unauthorized"}, status=401)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response(error_json("invalid JSON body", "BadRequestError", 400), status=400)
        model = body.get("model")
        if not self.served(model):
            return web.json_response(error_json(f"The model `{model}` does not exist.",
                                                "NotFoundError", 404), status=404)
        if (chat and not body.get("messages")) or (not chat and "prompt" not in body):
            return web.json_response(error_json("messages or prompt missing", "BadRequestError", 400),
                                     status=400)
        stream = bool(body.get("stream", False))
        if body.get("stream_options") and not stream:
            return web.json_response(error_json("Stream options can only be defined when `stream=True`.",
                                                "BadRequestError", 400), status=400)
        n = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        ttft = float(body.get("fake_ttft_ms", self.cfg.ttft_ms)) / 1e3
        cached_ttft, cached = self.log.note(request, body)
        if cached_ttft is not None:
            ttft = cached_ttft
        itl = float(body.get("fake_itl_ms", self.cfg.itl_ms)) / 1e3
        usage_on = self.cfg.usage and not body.get("fake_no_usage")
        prompt_tokens = count_words(prompt_of(body))
        rid = f"{'chatcmpl' if chat else 'cmpl'}-fake{self.requests}"
        created = int(time.time())
        obj_name = "chat.completion.chunk" if chat else "text_completion"

        def usage(k):
            return {"prompt_tokens": prompt_tokens, "completion_tokens": k,
                    "total_tokens": prompt_tokens + k,
                    "prompt_tokens_details": {"cached_tokens": cached}}

        self.in_flight += 1
        self.metrics.running.labels(model).set(self.in_flight)
        self.metrics.kv.labels(model).set(min(1.0, self.in_flight / 256))
        try:
            return await self._respond(request, body, chat, model, n, ttft, itl, usage_on,
                                       prompt_tokens, rid, created, obj_name, usage, loop, t0,
                                       arrival_ns, stream)
        finally:
            self.in_flight -= 1
            self.metrics.running.labels(model).set(self.in_flight)
            self.metrics.kv.labels(model).set(min(1.0, self.in_flight / 256))

    async def _respond(self, request, body, chat, model, n, ttft, itl, usage_on, prompt_tokens,
                       rid, created, obj_name, usage, loop, t0, arrival_ns, stream):

        if not stream:
            await sleep_until(loop, t0 + ttft + (n - 1) * itl)
            text = "".join(token_text(i) for i in range(n))
            choice = ({"index": 0, "message": {"role": "assistant", "content": text},
                       "finish_reason": "length"} if chat else
                      {"index": 0, "text": text, "finish_reason": "length", "logprobs": None})
            out = {"id": rid, "object": "chat.completion" if chat else "text_completion",
                   "created": created, "model": model, "choices": [choice]}
            if usage_on:
                out["usage"] = usage(n)
            self._served(model, prompt_tokens, n, ttft, itl)
            return web.json_response(out, headers=echo_id(request))

        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache",
                                           "X-Fake-Arrival-Ns": str(arrival_ns),
                                           **echo_id(request)})
        await resp.prepare(request)
        include_usage = usage_on and bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta_or_text, finish=None):
            if chat:
                choice = {"index": 0, "delta": delta_or_text, "logprobs": None,
                          "finish_reason": finish}
            else:
                choice = {"index": 0, "text": delta_or_text, "logprobs": None,
                          "finish_reason": finish}
            return sse({"id": rid, "object": obj_name, "created": created, "model": model,
                        "choices": [choice]})

        def make_chunks(i, k, last):
            text = "".join(token_text(j) for j in range(i, i + k))
            out = b""
            if i == 0 and chat:
                out += chunk({"role": "assistant", "content": ""})
            out += chunk({"content": text} if chat else text, "length" if last else None)
            return out

        per_chunk = int(body.get("fake_tokens_per_chunk", 1))
        err_after = body.get("fake_error_after")
        drop_after = body.get("fake_drop_after")
        stop = err_after if err_after is not None else drop_after
        written = await write_tokens(request, resp, n, ttft, itl, t0, make_chunks, per_chunk,
                                     stop_after=stop)
        if drop_after is not None and written < n:
            request.transport.close()   # mid-response: no terminating chunk
            return resp
        if err_after is not None and written < n:
            await resp.write(sse({"error": error_json("fake: the engine failed mid-stream",
                                                      "InternalServerError", 500)}))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        self._served(model, prompt_tokens, written, ttft, itl)
        if self.cfg.timing_log is not None:
            self.cfg.timing_log.write(json.dumps({
                "request_id": request.headers.get("X-Request-Id"), "arrival_ns": arrival_ns,
                "first_ns": request.get("fake_first_write_ns"),
                "last_ns": request.get("fake_last_write_ns"), "tokens": written}) + "\n")
        if include_usage:
            await resp.write(sse({"id": rid, "object": obj_name, "created": created,
                                  "model": model, "choices": [], "usage": usage(written),
                                  "fake_timing": {"arrival_ns": arrival_ns,
                                                  "first_write_ns": request.get("fake_first_write_ns")}}))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def spawn(script: str, args: list[str], port: int, env: dict | None = None,
          health: str = "/health", timeout_s: float = 15.0):
    """Start a fake (this file or fake_ollama.py) as a subprocess and wait until `health`
    answers 200; returns the Popen (the caller kills it). For tests."""
    import subprocess
    import tempfile
    import urllib.request
    from pathlib import Path

    path = Path(__file__).resolve().parent / script
    errors = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, str(path), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=errors, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{health}", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            errors.seek(0)
            err = errors.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{script} did not start on port {port}: {err}")
        time.sleep(0.05)


def make_app(cfg: Config) -> web.Application:
    app = web.Application()
    FakeOpenAI(cfg).routes(app)
    return app


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cmd", nargs="?", default="serve", help="serve (as `vllm serve`)")
    p.add_argument("model", nargs="?", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--models", default=None, help="comma-separated model names to serve")
    p.add_argument("--api-key", default=os.environ.get("VLLM_API_KEY"))
    p.add_argument("--ttft-ms", type=float, default=20.0)
    p.add_argument("--itl-ms", type=float, default=5.0)
    p.add_argument("--no-usage", action="store_true")
    p.add_argument("--cache-ttft-ms", type=float, default=None,
                   help="simulate a prefix cache: TTFT of a request whose prefix was seen")
    p.add_argument("--timing-log", default=None,
                   help="append one JSON line of this fake's own timing per streamed request")
    p.add_argument("--reuse-port", action="store_true",
                   help="SO_REUSEPORT: several fake processes may serve one port")
    p.add_argument("--version", action="store_true")
    args, _unknown = p.parse_known_args(argv)   # vLLM engine args are accepted and ignored
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.version or args.cmd == "--version":
        print(VERSION)
        return 0
    models = (args.models.split(",") if args.models else
              [args.served_model_name or args.model or "fake-model"])
    cfg = Config(models=models, ttft_ms=args.ttft_ms, itl_ms=args.itl_ms, api_key=args.api_key,
                 usage=not args.no_usage, cache_ttft_ms=args.cache_ttft_ms,
                 timing_log=open(args.timing_log, "a", buffering=1) if args.timing_log else None)
    try:
        import uvloop
        uvloop.install()
    except (ImportError, AttributeError):
        pass
    web.run_app(make_app(cfg), host=args.host, port=args.port, print=None, access_log=None,
                handle_signals=True, reuse_port=args.reuse_port or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
