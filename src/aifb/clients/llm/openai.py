"""OpenAI-compatible LLM inference: vLLM, llama.cpp's llama-server, Ollama's /v1, any server
that speaks the OpenAI HTTP API. Chat (`/v1/chat/completions`) and completions
(`/v1/completions`), streamed (server-sent events) or not.

Registered for the kinds `vllm` and `llamacpp` (subclasses that differ only in what the server
supports); `ollama` picks this client or its native one by `workload.api` (aifb.clients.llm.ollama).

Per request (see aifb.analysis.metrics.llm for the metrics built from these fields, which follow vLLM's
serving benchmark):

    t_first        arrival of the first streamed chunk whose `choices` is non-empty
    t_end          end of the response body (after the usage chunk and `data: [DONE]`)
    chunk_times    arrival of every chunk with non-empty `choices` (ITL = their gaps)
    output_tokens  `usage.completion_tokens` from the server (stream_options.include_usage);
                   without usage: the server's /tokenize applied to the generated text after
                   the request (token_source "tokenizer", vLLM and llama.cpp), else the number
                   of chunks that carried text (token_source "chunks")
    content_chunks chunks that carried text; `tokens_mismatch` is true when a streamed
                   response's token count differs from it (several tokens per chunk, or a
                   server that miscounts)
    prompt_tokens, cached_tokens (usage.prompt_tokens_details.cached_tokens or llama.cpp's
                   timings.cache_n), max_tokens (requested), finish_reason

A chunk's time is taken once per network read (`now_ns()` as the bytes arrive), so chunks that
arrive together share a time. Lines are split by hand from `readany()` reads: no line-length
or read-buffer limit applies to long streams or large non-streamed bodies.

Connections: a pool of exactly `connections` (= load.concurrency) sockets per client. llama-server
closes the socket after each streamed response although it advertises keep-alive (docs/
llm_workloads.md, "Connections", with the command that shows it), so its client opens a fresh
connection per request (force_close; ~0.1 ms on loopback).

Per-request timeouts are the engine's (load.timeout): a request past it is recorded as a
`Timeout` error and its connection dropped. Bad input is found before measuring: an unreachable
endpoint, a rejected API key or a model the server does not serve raise ServiceError naming
the endpoint, the model and the models served.

API keys come from `secrets` ({"api_key": ...}, or {"password": ...} as the runner passes
service.password_env/password_file today) and go only into the Authorization header.
"""


from __future__ import annotations

import asyncio
import json

import aiohttp

from aifb.clock import now_ns
from aifb.errors import ServiceError
from aifb.clients import register
from aifb.clients.base import CoroutineClient, RequestError, error_result, new_salt
from aifb.clients.llm.embeddings import PATHS as EMBED_PATHS
from aifb.clients.llm.embeddings import embed_body, embed_exchange, embed_vectors
from aifb.clients.llm.http import (CONTROL_TIMEOUT_S, auth_refused, choose_model,
                                   connection_error_message, error_text, get_json, http_error_type,
                                   make_session, normalize_base, short)
from aifb.clients.llm.prompts import (CALIBRATION_WORDS, LLMWorkload, Prompt, PromptSource,
                                      with_prompt_facts)
from aifb.clients.llm.shapes import Conversation, chat_messages, completion_text
from aifb.clients.llm.stream import ChunkAccumulator, exchange, partial_record

OPENAI_APIS = ("openai-chat", "openai-completions", "openai-embeddings")
OLLAMA_APIS = ("ollama-generate", "ollama-chat", "ollama-embed")


class Req:
    """One request as build() prepares it, before t_start: the prompt, the encoded body, the
    headers (the request id), and what the record carries about it."""

    __slots__ = ("prompt", "body", "headers", "request_id", "conv", "user", "acc")

    def __init__(self, prompt: Prompt, body: bytes, headers: dict | None, request_id: str | None,
                 conv: "Conversation | None" = None, user: dict | None = None):
        self.prompt = prompt
        self.body = body
        self.headers = headers
        self.request_id = request_id
        self.conv = conv          # multi-turn: the conversation this turn belongs to
        self.user = user          # the user message as sent (joins the history)
        self.acc = None           # the response's ChunkAccumulator (its text: the reply)



def _openai_error_obj(obj: dict, raw: bytes) -> tuple | None:
    """A non-streamed reply that is an error object, not a completion."""
    if obj.get("error") and not obj.get("choices"):
        return ("ServerError", error_text(raw))
    return None


class LLMHttpClient(CoroutineClient):
    """What every LLM client shares: the workload, prompts, API key, one keep-alive session
    sized to the concurrency, and the URL and op name of a generation request. Subclasses
    say which APIs their server has and where (`paths`, `ops`: chat first, then the other)."""

    kind = "openai"
    label = "OpenAI-compatible server"
    apis = OPENAI_APIS
    paths = ("/v1/chat/completions", "/v1/completions")
    ops = ("chat", "completion")
    force_close = False              # True where the server closes after each response
    supports_ignore_eos = True
    follow_up = None                 # open loop: the engine's hook for a conversation's next turn

    def __init__(self, endpoint: str, workload: dict, seed: int, secrets: dict | None = None):
        super().__init__(endpoint, workload, seed, secrets)
        self.base = normalize_base(endpoint)
        self.wl = LLMWorkload.parse(workload, self.kind, self.apis)
        secrets = secrets or {}
        self._api_key = secrets.get("api_key") or secrets.get("password") or None
        self.prompts = PromptSource(self.wl, seed)
        self.model: str | None = self.wl.model
        self.served: list[str] = []
        self._session: aiohttp.ClientSession | None = None
        which = 0 if self.wl.chat else 1
        self._url = self.base + (EMBED_PATHS[self.wl.api] if self.wl.embeddings
                                 else self.paths[which])
        self._op = "embed" if self.wl.embeddings else self.ops[which]
        self._notes: list[str] = []
        self._rid_prefix = "aifb-0"
        self._seq = 0
        self._convs: dict[int, Conversation] = {}
        self._conv_seq = 0
        self.salt: str | None = None
        self._warmed: dict | None = None
        if self.wl.ignore_eos and not self.supports_ignore_eos:
            self._notes.append(f"ignore_eos requested but {self.label} does not support it: not "
                               "sent (responses may end before max_tokens)")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base}>"

    def _headers(self) -> dict:
        h = {"Content-Type": "application/json"}
        if self._api_key:
            h["Authorization"] = f"Bearer {self._api_key}"
        return h

    async def startup(self, connections: int) -> None:
        self.prompts.load()
        if self.salt is None:   # not run by the engine (which gives the run's salt)
            self.salt = new_salt()
        self._session = make_session(connections, self.force_close, self._headers())

    def _input(self, prompt: Prompt) -> list | str:
        """A request's input: chat messages or one completions prompt, salted with the run's
        salt when workload.cache is cold (see aifb.clients.llm.shapes)."""
        salt = self._salt_text()
        if self.wl.chat:
            return chat_messages(prompt.prefix, prompt.history, prompt.text, salt)
        return completion_text(prompt.prefix, prompt.history, prompt.text, salt)

    def _salt_text(self) -> str:
        return f"{self.salt} " if self.wl.cache == "cold" and self.salt else ""

    def _put_input(self, body: dict, prompt: Prompt) -> None:
        body["messages" if self.wl.chat else "prompt"] = self._input(prompt)

    async def post_once(self, body: bytes) -> tuple[int, bytes]:
        """(status, body) of one generation request outside the measurement (prepare, warm)."""
        try:
            async with asyncio.timeout(max(CONTROL_TIMEOUT_S, 120.0)):
                async with self._session.post(self._url, data=body) as resp:
                    return resp.status, await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ServiceError(connection_error_message(self.label, self.base, exc)) from None

    async def warm_cache(self) -> None:
        """cache: warm: each shared prefix once (1 output token), before measuring, so the
        server's prefix cache holds them; recorded in describe()["cache"]."""
        if self.wl.cache != "warm":
            return
        t0 = now_ns()
        texts = self.prompts.prefixes()
        for text in texts:
            status, raw = await self.post_once(self._body(Prompt("Hello", 1, text)))
            if status != 200:
                raise ServiceError(f"{self.label} at {self.base}: warming the cache (workload."
                                   f"cache: warm) failed: HTTP {status}: {error_text(raw)}")
        self._warmed = {"prefixes_sent": len(texts), "seconds": round((now_ns() - t0) / 1e9, 6)}

    def cache_facts(self) -> dict:
        """The cache state as run.json and the report show it."""
        wl = self.wl
        out = {"state": wl.cache,
               "salt": self.salt if wl.cache == "cold" else None,
               "how": ("every prompt starts with the run's random salt: no earlier run's "
                       "prefix cache can serve it" if wl.cache == "cold" else
                       "prompts are not salted; each shared prefix was sent once before "
                       "measuring"),
               "shared_prefix": wl.shared_prefix.describe() if wl.shared_prefix else None}
        if wl.cache == "warm":
            out["warmed"] = self._warmed
        return out

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            try:
                await self._session.close()
            except Exception:
                pass

    def identify(self, benchmark_id: str, client: int, salt: str, clients: int = 1) -> None:
        """The run's identity (aifb.load.startup.run_identity), given before startup: request ids
        are `<benchmark id>-<client>-<seq>`, seq counting this client's requests from 1;
        a trace's requests are shared out by client index among `clients`."""
        self._rid_prefix = f"{benchmark_id}-{client}"
        self.salt = salt
        self.prompts.client, self.prompts.clients = client, max(1, clients)

    def build(self, worker: int) -> Req:
        """The prompt, the encoded body and the request id, before t_start (see
        CoroutineClient.build). Multi-turn (workload.turns): the worker's conversation's next
        turn, with the whole history; a new conversation when the last one is over."""
        prompt = self.prompts.next(worker)
        self._seq += 1
        rid = f"{self._rid_prefix}-{self._seq}"
        header = self.wl.request_id_header
        headers = {header: rid} if header else None
        if self.wl.embeddings:
            texts = [self._salt_text() + prompt.text] + [
                self._salt_text() + self.prompts.next(worker).text
                for _ in range(self.wl.batch_size - 1)]
            return Req(prompt, self.embed_body(texts), headers, rid, user={"texts": len(texts)})
        if self.wl.turns == (1, 1):
            return Req(prompt, self._body(prompt), headers, rid)
        # open loop (follow_up set): a conversation is a request's only if adopt() handed it
        # over for this worker; closed loop: the worker's own, until it is over
        conv = self._convs.pop(worker, None) if self.follow_up else self._convs.get(worker)
        if conv is None or conv.over:
            self._conv_seq += 1
            conv = self._convs[worker] = Conversation(
                f"{self._rid_prefix}-c{self._conv_seq}",
                self.prompts.turns_rng(worker).randint(*self.wl.turns), prompt.prefix)
            if self.follow_up:
                del self._convs[worker]
        prompt = Prompt(prompt.text, prompt.max_tokens, conv.prefix, conv.history)
        user = chat_messages(conv.prefix, conv.history, prompt.text, self._salt_text())[-1]
        return Req(prompt, self._body(prompt), headers, rid, conv, user)

    def build_text(self, text: str, max_tokens: int) -> Req:
        """A request for the given prompt text (a pipeline's generate stage, whose prompt holds
        the retrieved documents), built like build()'s, sent with request()."""
        self._seq += 1
        rid = f"{self._rid_prefix}-{self._seq}"
        header = self.wl.request_id_header
        return Req(Prompt(text, max_tokens), self._body(Prompt(text, max_tokens)),
                   {header: rid} if header else None, rid)

    def adopt(self, worker: int, token: Conversation) -> None:
        """Open loop: the worker's next request is the conversation's next turn."""
        self._convs[worker] = token

    def abort(self, worker: int) -> str | None:
        """An aborted turn (load.timeout) ends its conversation, at once: the engine builds
        the worker's next request before the cancelled one unwinds."""
        self._convs.pop(worker, None)
        return super().abort(worker)

    def embed_body(self, texts: list[str]) -> bytes:
        return embed_body(self.wl.api, self.model, texts, self.wl.extra_body)

    async def embed(self, texts: list[str]) -> tuple[tuple, list]:
        """The embeddings of `texts` (workload.api openai-embeddings or ollama-embed): (the
        result tuple, the vectors; [] on failure). A pipeline's embed stage, and its corpus."""
        try:
            return await embed_vectors(self._session, self._url, self.embed_body(texts), None,
                                       self.wl.api, len(texts), self.label, self.base, error_text,
                                       http_error_type, connection_error_message)
        except RequestError as exc:
            return error_result("embed", exc.type, exc.message), []

    async def request(self, worker: int, req: Req) -> tuple:
        """generate(req), its record stamped with the request id (failures too). A turn adds
        itself and the actual reply to its conversation (a failed turn ends it). The next turn
        is due workload.think_time after this one's t_end (never in a latency): closed loop
        waits for it here, holding the worker; open loop plans it with the engine's follow_up
        hook, so its t_sched is that instant and any lateness counts in its latency."""
        try:
            result = await (self.generate(req) if not self.wl.embeddings else embed_exchange(
                self._session, self._url, req.body, req.headers, self.wl.api,
                req.user["texts"], self.label, self.base, error_text, http_error_type,
                connection_error_message))
        except RequestError as exc:
            result = error_result(self._op, exc.type, exc.message)
        conv = req.conv
        if conv is None:
            return self._stamp(result, req)
        stamped = self._stamp(result, req)
        stamped[8]["conversation"] = conv.id
        stamped[8]["turn"] = conv.turn
        conv.turn += 1
        if not result[1] or req.acc is None:
            conv.turn = conv.turns + 1
        else:
            conv.history = conv.history + [req.user, {"role": "assistant",
                                                       "content": req.acc.text}]
            due = result[7] + round(self.wl.think_time_s * 1e9)
            if not conv.over and self.follow_up:
                self.follow_up(due, conv)
            elif not conv.over and self.wl.think_time_s > 0:
                # from the reply's t_end (timers may fire early: sleep again until it is due)
                while (left := due - now_ns()) > 0:
                    await asyncio.sleep(left / 1e9)
        return stamped

    async def generate(self, req: Req) -> tuple:  # pragma: no cover - abstract
        raise NotImplementedError

    def _stamp(self, result: tuple, req: Req) -> tuple:
        if len(result) > 8:
            result[8]["request_id"] = req.request_id
            return result
        return (*result, {"request_id": req.request_id})

    def _op_name(self, worker: int) -> str:
        return self._op


class OpenAIClient(LLMHttpClient):
    """An OpenAI-compatible server; subclasses say what their server supports."""

    tokenize_style: str | None = None  # "vllm" | "llamacpp": the server's /tokenize endpoint

    def __init__(self, endpoint: str, workload: dict, seed: int, secrets: dict | None = None):
        super().__init__(endpoint, workload, seed, secrets)
        self._tokenize_ok = False

    async def served_models(self) -> list[str]:
        status, body = await get_json(self._session, self.base + "/v1/models", label=self.label,
                                      base=self.base)
        return self.models_from(status, body, self.base, self.label, bool(self._api_key))

    @staticmethod
    def models_from(status: int, body, base: str, label: str, key_given: bool) -> list[str]:
        if status in (401, 403):
            why = error_text(json.dumps(body).encode() if not isinstance(body, str) else body.encode())
            raise ServiceError(auth_refused(label, base, status, key_given, why))
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("data"), list):
            text = body if isinstance(body, str) else json.dumps(body)
            raise ServiceError(f"{label} at {base}: GET /v1/models answered HTTP {status} "
                               f"({short(text or '', 120)}); is it an OpenAI-compatible server?")
        return [str(m.get("id")) for m in body["data"] if isinstance(m, dict) and m.get("id")]

    async def validate(self) -> None:
        self.served = await self.served_models()
        self.model = choose_model(self.wl.model, self.served, self.label, self.base)
        await self._calibrate()

    async def tokenize(self, text: str) -> int | None:
        """Token count of `text` by the server's tokenizer (None where there is none)."""
        if self.tokenize_style == "vllm":
            body = {"model": self.model, "prompt": text, "add_special_tokens": False}
        elif self.tokenize_style == "llamacpp":
            body = {"content": text, "add_special": False}
        else:
            return None
        try:
            status, obj = await get_json(self._session, self.base + "/tokenize", label=self.label,
                                         base=self.base, method="POST", body=body)
        except ServiceError:
            return None
        if status != 200 or not isinstance(obj, dict):
            return None
        if isinstance(obj.get("count"), int):
            return obj["count"]
        if isinstance(obj.get("tokens"), list):
            return len(obj["tokens"])
        return None

    async def _calibrate(self) -> None:
        n = await self.tokenize(self.prompts.calibration_text()) if self.tokenize_style else None
        self._tokenize_ok = n is not None
        if n and self.wl.source == "synthetic":
            self.prompts.tokens_per_word = n / CALIBRATION_WORDS
            self.prompts.calibration = (f"measured with {self.base}/tokenize: {n} tokens for "
                                        f"{CALIBRATION_WORDS} words")

    async def prepare(self) -> None:
        """One real 1-token request, so that a model that cannot answer (no chat template, out
        of memory, ...) fails here, clearly, and not in the measurement window."""
        status, raw = await self.post_once(self.embed_body(["Hello"]) if self.wl.embeddings
                                           else self._body(Prompt("Hello", 1), stream=False))
        if status in (401, 403):
            raise ServiceError(auth_refused(self.label, self.base, status,
                                            bool(self._api_key), error_text(raw)))
        if status != 200:
            raise ServiceError(f"{self.label} at {self.base} could not answer a 1-token request "
                               f"for model {self.model!r} (HTTP {status}: {error_text(raw)})")
        await self.warm_cache()

    @classmethod
    async def probe(cls, endpoint: str, timeout_s: float, secrets: dict | None = None) -> None:
        base = normalize_base(endpoint)
        key = (secrets or {}).get("api_key") or (secrets or {}).get("password")
        headers = {"Authorization": f"Bearer {key}"} if key else None
        async with make_session(1) as session:
            status, body = await get_json(session, base + "/v1/models", label=cls.label,
                                          base=base, headers=headers, timeout_s=timeout_s)
            cls.models_from(status, body, base, cls.label, bool(key))

    def describe(self) -> dict:
        out = {
            "kind": self.kind,
            "protocol": f"OpenAI HTTP API ({self._url.removeprefix(self.base)})",
            "implementation": ("aifb aiohttp client: SSE parsed from raw reads (no line-length "
                               "cap); one connection per in-flight request"
                               + ("; a fresh connection per request (the server closes it)"
                                  if self.force_close else "; keep-alive pool")),
            "endpoint": self.base,
            "api": self.wl.api,
            "model": self.model,
            "models_served": self.served,
            "stream": self.wl.stream,
            "stream_options": {"include_usage": True} if self.wl.stream else None,
            "ignore_eos": self.wl.ignore_eos and self.supports_ignore_eos,
            "temperature": self.wl.temperature,
            "extra_body": self.wl.extra_body,
            "prompts": self.prompts.describe(),
            "token_count": ("usage.completion_tokens from the server; without usage: "
                            + ("the server's /tokenize on the output text"
                               if self._tokenize_ok else "the number of chunks that carried text")),
            "api_key": "sent (from secrets)" if self._api_key else "none",
        }
        return with_prompt_facts(out, self.prompts, self.wl, self._notes, self.cache_facts())

    # -- per request --------------------------------------------------------------------
    def _body(self, prompt: Prompt, stream: bool | None = None) -> bytes:
        wl = self.wl
        stream = wl.stream if stream is None else stream
        body: dict = {"model": self.model}
        self._put_input(body, prompt)
        body["max_tokens"] = prompt.max_tokens
        body["temperature"] = wl.temperature
        body["stream"] = stream
        if stream:
            body["stream_options"] = {"include_usage": True}
        if wl.ignore_eos and self.supports_ignore_eos:
            body["ignore_eos"] = True
        if wl.extra_body:
            body.update(wl.extra_body)
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    async def generate(self, req: Req) -> tuple:
        prompt, body = req.prompt, req.body
        stream = self.wl.stream
        acc = ChunkAccumulator(chat=self.wl.chat)
        failed, nbytes, t_end = await exchange(
            self._session, self._url, body, acc, stream=stream, feed_line=acc.feed_sse_line,
            feed_obj=acc.feed_openai_obj, reject_obj=_openai_error_obj, op=self._op,
            max_tokens=prompt.max_tokens, label=self.label, base=self.base, headers=req.headers)
        req.acc = acc
        if failed:
            return failed
        return await self.finish(acc, prompt, self._op, stream, len(body), nbytes, t_end)

    def _partial(self, acc, prompt, op, etype, msg, bytes_out, bytes_in, t_end) -> tuple:
        return partial_record(acc, prompt.max_tokens, op, etype, msg, bytes_out, bytes_in, t_end)

    async def finish(self, acc: ChunkAccumulator, prompt: Prompt, op: str, stream: bool,
                     bytes_out: int, bytes_in: int, t_end: int) -> tuple:
        if acc.error is not None:
            return self._partial(acc, prompt, op, acc.error[0], acc.error[1], bytes_out, bytes_in, t_end)
        if stream and acc.t_first is None:
            return self._partial(acc, prompt, op, "EmptyResponse",
                                 "the stream carried no chunk with choices", bytes_out, bytes_in,
                                 t_end)
        if stream and not acc.done and acc.finish_reason is None:
            return self._partial(acc, prompt, op, "IncompleteStream",
                                 f"the stream ended after {len(acc.chunk_times)} chunk(s) without "
                                 "a finish_reason or [DONE]", bytes_out, bytes_in, t_end)
        tokens, source = acc.output_tokens()
        if tokens is None and self._tokenize_ok:
            n = await self.tokenize(acc.text) if acc.text else 0
            if n is not None:
                tokens, source = n, "tokenizer"
        if tokens is None and not stream:
            return (op, False, "NoUsage", "a non-streamed response without usage; start the "
                    "server with usage reporting or use stream: true", bytes_out, bytes_in, None,
                    t_end)
        extra = acc.extra(prompt.max_tokens, stream, tokens, source)
        return (op, True, None, None, bytes_out, bytes_in, acc.t_first, t_end, extra)


@register("vllm")
class VLLMClient(OpenAIClient):
    """vLLM's OpenAI-compatible server (`vllm serve`): keep-alive, ignore_eos, /tokenize."""

    label = "vLLM"
    tokenize_style = "vllm"


@register("llamacpp")
class LlamaCppClient(OpenAIClient):
    """llama.cpp's llama-server: closes the socket after each streamed response (so a fresh
    connection per request), accepts ignore_eos, has /tokenize ({"content": ...})."""

    label = "llama-server"
    force_close = True
    tokenize_style = "llamacpp"
