"""Ollama: its native API (`/api/generate`, `/api/chat`, NDJSON streaming) or its
OpenAI-compatible `/v1` API, chosen by `workload.api`:

    ollama-generate | ollama-chat        -> OllamaNativeClient (this module)
    openai-chat | openai-completions     -> OllamaOpenAIClient (aifb.clients.llm.openai's client)

`OllamaClient`, registered for the kind `ollama`, is only the dispatch: constructing it returns
an instance of one of the two, so the engine drives either through the same Client contract.

Native records carry the server's own counters beside the client's timings, as Ollama reports
them on the final (`done: true`) line: eval_count (output tokens), prompt_eval_count,
eval_duration, prompt_eval_duration, load_duration, total_duration (nanoseconds). output_tokens
= eval_count (token_source "server"), prompt_tokens = prompt_eval_count. t_first is the first
line with `done: false`; chunk_times are those lines (one token each in practice).

Before measuring: validate() checks the model is present (/api/tags; a model is never pulled on
an endpoint we did not deploy: the error says to `ollama pull` it), prepare() loads it into
memory with an empty generate request and keep_alive, so no model load falls into the
measurement window. A managed Ollama (aifb.services.ollama) pulls and loads it at deploy time.
"""

from __future__ import annotations

import json

import aiohttp

from aifb.clock import now_ns
from aifb.errors import ServiceError
from aifb.clients import register
from aifb.clients.llm.http import (CONTROL_TIMEOUT_S, choose_model, error_text, get_json,
                                   make_session, normalize_base, short)
from aifb.clients.llm.openai import OLLAMA_APIS, OPENAI_APIS, LLMHttpClient, OpenAIClient, Req
from aifb.clients.llm.prompts import Prompt, PromptSource, with_prompt_facts
from aifb.clients.llm.stream import ChunkAccumulator, exchange

LABEL = "Ollama"
DEFAULT_KEEP_ALIVE = "30m"
LOAD_TIMEOUT_S = 600.0   # loading a large model from disk


async def ollama_models(session: aiohttp.ClientSession, base: str, headers: dict | None = None,
                        timeout_s: float = CONTROL_TIMEOUT_S) -> list[str]:
    status, body = await get_json(session, base + "/api/tags", label=LABEL, base=base,
                                  headers=headers, timeout_s=timeout_s)
    if status in (401, 403):
        raise ServiceError(f"{LABEL} at {base} rejected the request with HTTP {status}: check "
                           "the API key (service.api_key_env / api_key_file)")
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("models"), list):
        text = body if isinstance(body, str) else json.dumps(body)
        raise ServiceError(f"{LABEL} at {base}: GET /api/tags answered HTTP {status} "
                           f"({short(text or '', 120)}); is it an Ollama server?")
    return [str(m.get("name") or m.get("model")) for m in body["models"]
            if isinstance(m, dict) and (m.get("name") or m.get("model"))]


async def ollama_load(session: aiohttp.ClientSession, base: str, model: str,
                      keep_alive: str | None, headers: dict | None = None,
                      timeout_s: float = LOAD_TIMEOUT_S) -> float:
    """Load `model` into memory (an empty generate request); returns the seconds it took."""
    t0 = now_ns()
    status, body = await get_json(session, base + "/api/generate", label=LABEL, base=base,
                                  headers=headers, timeout_s=timeout_s, method="POST",
                                  body={"model": model, "prompt": "", "stream": False,
                                        "keep_alive": keep_alive or DEFAULT_KEEP_ALIVE})
    if status != 200:
        text = body if isinstance(body, str) else json.dumps(body)
        raise ServiceError(f"{LABEL} at {base} could not load model {model!r} (HTTP {status}: "
                           f"{error_text(text.encode())})")
    return (now_ns() - t0) / 1e9


def missing_model_message(model: str, served: list[str], base: str) -> str:
    shown = ", ".join(served) if served else "none"
    return (f"model {model!r} is not present on {LABEL} at {base} (models present: {shown}); "
            f"pull it first (`ollama pull {model}`) or let aifb deploy Ollama (it pulls "
            "service.model before measuring)")


class OllamaOpenAIClient(OpenAIClient):
    """Ollama through its OpenAI-compatible /v1 API (no ignore_eos, no /tokenize)."""

    kind = "ollama"
    label = LABEL
    supports_ignore_eos = False
    tokenize_style = None

    async def validate(self) -> None:
        try:
            await super().validate()
        except ServiceError as exc:
            if self.wl.model and "is not served" in str(exc):
                raise ServiceError(missing_model_message(self.wl.model, self.served, self.base)) from None
            raise

    async def prepare(self) -> None:
        await ollama_load(self._session, self.base, self.model, self.wl.keep_alive)
        await super().prepare()


class OllamaNativeClient(LLMHttpClient):
    """Ollama's native /api/generate and /api/chat (NDJSON streaming)."""

    kind = "ollama"
    label = LABEL
    apis = OPENAI_APIS + OLLAMA_APIS
    paths = ("/api/chat", "/api/generate")
    ops = ("chat", "generate")
    supports_ignore_eos = False

    def __init__(self, endpoint: str, workload: dict, seed: int, secrets: dict | None = None):
        super().__init__(endpoint, workload, seed, secrets)
        self.load_s: float | None = None

    async def validate(self) -> None:
        self.served = await ollama_models(self._session, self.base)
        if self.wl.model:
            try:
                self.model = choose_model(self.wl.model, self.served, LABEL, self.base)
            except ServiceError:
                raise ServiceError(missing_model_message(self.wl.model, self.served, self.base)) from None
        else:
            self.model = await self._only_model()

    async def _only_model(self) -> str:
        """No workload.model: the one model present, else the one model loaded (/api/ps)."""
        if len(self.served) == 1:
            return self.served[0]
        status, body = await get_json(self._session, self.base + "/api/ps", label=LABEL,
                                      base=self.base)
        loaded = [m.get("name") or m.get("model") for m in (body or {}).get("models", [])
                  if isinstance(m, dict)] if status == 200 and isinstance(body, dict) else []
        if len(loaded) == 1:
            return loaded[0]
        return choose_model(None, self.served, LABEL, self.base)

    async def prepare(self) -> None:
        self.load_s = await ollama_load(self._session, self.base, self.model, self.wl.keep_alive)
        await self.warm_cache()

    @classmethod
    async def probe(cls, endpoint: str, timeout_s: float, secrets: dict | None = None) -> None:
        base = normalize_base(endpoint)
        async with make_session(1) as session:
            status, body = await get_json(session, base + "/api/version", label=LABEL, base=base,
                                          timeout_s=timeout_s)
        if status != 200 or not isinstance(body, dict) or "version" not in body:
            raise ServiceError(f"{LABEL} at {base}: GET /api/version answered HTTP {status}; "
                               "is it an Ollama server?")

    def describe(self) -> dict:
        out = {
            "kind": "ollama",
            "protocol": f"Ollama native API ({self._url.removeprefix(self.base)}, NDJSON)",
            "implementation": "aifb aiohttp client: NDJSON parsed from raw reads (no line-length cap)",
            "endpoint": self.base,
            "api": self.wl.api,
            "model": self.model,
            "models_present": self.served,
            "stream": self.wl.stream,
            "temperature": self.wl.temperature,
            "keep_alive": self.wl.keep_alive or DEFAULT_KEEP_ALIVE,
            "model_load_s": self.load_s,
            "extra_body": self.wl.extra_body,
            "prompts": self.prompts.describe(),
            "token_count": "eval_count from the server (the final NDJSON line)",
            "api_key": "sent (from secrets)" if self._api_key else "none",
        }
        return with_prompt_facts(out, self.prompts, self.wl, self._notes, self.cache_facts())

    def _body(self, prompt: Prompt) -> bytes:
        wl = self.wl
        body: dict = {"model": self.model}
        self._put_input(body, prompt)
        body["stream"] = wl.stream
        body["options"] = {"num_predict": prompt.max_tokens, "temperature": wl.temperature}
        body["keep_alive"] = wl.keep_alive or DEFAULT_KEEP_ALIVE
        for k, v in wl.extra_body.items():
            if k == "options" and isinstance(v, dict):
                body["options"].update(v)
            else:
                body[k] = v
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    async def generate(self, req: Req) -> tuple:
        prompt, body = req.prompt, req.body
        stream = self.wl.stream
        acc = ChunkAccumulator(chat=self.wl.chat)
        op = self._op
        failed, nbytes, t_end = await exchange(
            self._session, self._url, body, acc, stream=stream, feed_line=acc.feed_ollama_line,
            feed_obj=acc.feed_ollama_obj, op=op, max_tokens=prompt.max_tokens, label=LABEL,
            base=self.base, headers=req.headers)
        req.acc = acc
        if failed:
            return failed
        bad = None
        if acc.error is not None:
            bad = acc.error
        elif not acc.done:
            bad = ("IncompleteStream", f"the response ended after {len(acc.chunk_times)} "
                   "line(s) without a done line")
        elif stream and acc.t_first is None and not acc.server:
            bad = ("EmptyResponse", "the stream carried no token")
        tokens, source = acc.output_tokens()
        extra = acc.extra(prompt.max_tokens, stream, tokens, source)
        if bad:
            return (op, False, bad[0], bad[1], len(body), nbytes, acc.t_first, t_end, extra)
        return (op, True, None, None, len(body), nbytes, acc.t_first, t_end, extra)


@register("ollama")
class OllamaClient:
    """Dispatch for the kind `ollama`: OllamaNativeClient for workload.api ollama-*,
    OllamaOpenAIClient for openai-*."""

    kind = "ollama"
    label = LABEL

    def __new__(cls, endpoint: str, workload: dict, seed: int, secrets: dict | None = None):
        api = (workload or {}).get("api", "openai-chat")
        impl = OllamaNativeClient if api in OLLAMA_APIS else OllamaOpenAIClient
        return impl(endpoint, workload, seed, secrets)

    @classmethod
    async def probe(cls, endpoint: str, timeout_s: float, secrets: dict | None = None) -> None:
        await OllamaNativeClient.probe(endpoint, timeout_s, secrets)


__all__ = ["OllamaClient", "OllamaNativeClient", "OllamaOpenAIClient", "ollama_models",
           "ollama_load", "PromptSource"]
