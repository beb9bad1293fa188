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
arrive together share a time. Lines are split by hand from `iter_any()` reads: no line-length
or read-buffer limit applies to long streams or large non-streamed bodies.

Connections: a pool of exactly `connections` (= load.concurrency) sockets per client. llama-server
closes the socket after each streamed response although it advertises keep-alive (NOTES.md), so
its client opens a fresh connection per request (force_close; ~0.1 ms on loopback).

Per-request timeouts are the engine's (load.timeout): a request past it is recorded as a
`Timeout` error and its connection dropped. Bad input is found before measuring: an unreachable
endpoint, a rejected API key or a model the server does not serve raise ServiceError naming
the endpoint, the model and the models served.

API keys come from `secrets` ({"api_key": ...}, or {"password": ...} as the runner passes
service.password_env/password_file today) and go only into the Authorization header.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from aifb import endpoints
from aifb.clock import now_ns
from aifb.errors import ServiceError
from aifb.jsonio import iter_jsonl
from aifb.clients import register
from aifb.clients.base import CoroutineClient, RequestError, error_result
from aifb.clients.llm.embeddings import EMBED_APIS, embed_body, embed_exchange
from aifb.clients.llm.embeddings import PATHS as EMBED_PATHS
from aifb.clients.llm.shapes import (Conversation, Lengths, SharedPrefix, chat_messages, completion_text,
                         parse_cache, parse_think_time, parse_turns)

CONNECT_TIMEOUT_S = 10.0
CONTROL_TIMEOUT_S = 30.0          # /v1/models, /tokenize, the prepare() request
ERROR_BODY_MAX = 4096             # bytes of an error body kept for the message
DEFAULT_MAX_TOKENS = 256
CHARS_PER_TOKEN = 4.0             # estimate of a ShareGPT reply's tokens without a tokenizer
CALIBRATION_WORDS = 400
OPENAI_APIS = ("openai-chat", "openai-completions", "openai-embeddings")
OLLAMA_APIS = ("ollama-generate", "ollama-chat", "ollama-embed")

# Common English words; with a leading space almost every one is a single token in the usual
# BPE/SentencePiece vocabularies. Synthetic prompts are seeded draws from this list.
VOCAB = tuple(dict.fromkeys("""
the of and to in is was for that on with as by at from his it an were are which this be
has had not but have one their its first new after who they been two her more all time
when other there into she year over can most only also some would than three him about
up may these made out under then state many city world known such during later where
through school both between while four well used life part before people same being
five each since group work large long back name until early area old several family
second because three late high number last north south east west found began very
called team season film under home set game will series based including year great
west part took small good against local like house what around main power place end
work public family place war light water land still river way government near order
line just both main often form music book party children major now team left second
sound play short field head king own among much best common late point right open
road days body story member side even every near age few human hand young white black
red green blue color city village town country island lake sea hill forest garden
street road bridge tower wall door window table chair paper letter word page book
""".split()))


# ----------------------------------------------------------------------------- workload

def _resolve_path(path: str) -> Path:
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    from aifb.paths import work_root
    for base in (work_root(), Path.cwd()):
        if (base / p).is_file():
            return base / p
    return work_root() / p


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Prompt:
    text: str
    max_tokens: int
    prefix: str | None = None                         # a shared system prompt (shared_prefix)
    history: list = field(default_factory=list)        # earlier turns, as sent and answered


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


@dataclass
class LLMWorkload:
    """The recipe's `workload:` for the LLM kinds (one shape for vllm, ollama, llamacpp; see
    workflow/schemas/workloads/vllm.schema.yaml)."""

    api: str = "openai-chat"
    model: str | None = None
    stream: bool = True
    source: str = "synthetic"
    input_tokens: Lengths | None = None
    output_tokens: Lengths | None = None
    max_tokens: int | None = None
    ignore_eos: bool = False
    temperature: float = 0.0
    path: str | None = None
    sha256: str | None = None
    limit: int | None = None
    shuffle: bool = True
    extra_body: dict = field(default_factory=dict)
    keep_alive: str | None = None
    goodput: dict | None = None
    request_id_header: str | None = "X-Request-Id"
    shared_prefix: SharedPrefix | None = None
    cache: str = "cold"
    turns: tuple[int, int] = (1, 1)
    think_time_s: float = 0.0
    batch_size: int = 1

    @classmethod
    def parse(cls, workload: dict | None, kind: str, apis: tuple[str, ...]) -> "LLMWorkload":
        wl = dict(workload or {})
        api = wl.get("api", "openai-chat")
        if api not in apis:
            raise ServiceError(f"workload.api {api!r} is not available for service kind {kind!r} "
                               f"(available: {', '.join(apis)})")
        prompts = dict(wl.get("prompts") or {})
        source = prompts.get("source", "synthetic")
        if source not in ("synthetic", "sharegpt", "jsonl", "trace"):
            raise ServiceError(f"workload.prompts.source {source!r}: use synthetic, sharegpt, "
                               "jsonl or trace")
        input_tokens = Lengths.parse(prompts.get("input_tokens", 128 if source == "synthetic"
                                                 else None), "prompts.input_tokens")
        output_tokens = Lengths.parse(prompts.get("output_tokens"), "prompts.output_tokens")
        if source != "synthetic" and not prompts.get("path"):
            raise ServiceError(f"workload.prompts.path: a {source} data set needs a file path")
        max_tokens = wl.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise ServiceError(f"workload.max_tokens: expected a positive integer, got {max_tokens!r}")
        extra = wl.get("extra_body") or {}
        if not isinstance(extra, dict):
            raise ServiceError("workload.extra_body: expected a mapping of request fields")
        rid_header = wl.get("request_id_header", True)
        if rid_header is True:
            rid_header = "X-Request-Id"
        elif rid_header is False or rid_header is None:
            rid_header = None
        elif not isinstance(rid_header, str) or not rid_header.strip() or any(
                c in rid_header for c in ": \t\r\n"):
            raise ServiceError(f"workload.request_id_header: expected an HTTP header name, true "
                               f"or false, got {rid_header!r}")
        return cls(api=api, model=wl.get("model"), stream=bool(wl.get("stream", True)),
                   source=source, input_tokens=input_tokens if source == "synthetic" else None,
                   output_tokens=output_tokens, max_tokens=max_tokens,
                   ignore_eos=bool(wl.get("ignore_eos", False)),
                   temperature=float(wl.get("temperature", 0.0)), path=prompts.get("path"),
                   sha256=prompts.get("sha256"), limit=prompts.get("limit"),
                   shuffle=bool(prompts.get("shuffle", True)), extra_body=dict(extra),
                   keep_alive=wl.get("keep_alive"), goodput=wl.get("goodput"),
                   request_id_header=rid_header,
                   shared_prefix=SharedPrefix.parse(wl.get("shared_prefix")),
                   cache=parse_cache(wl.get("cache")), turns=parse_turns(wl.get("turns")),
                   think_time_s=parse_think_time(wl.get("think_time")),
                   batch_size=_positive_int(wl.get("batch_size", 1), "batch_size"))

    @property
    def chat(self) -> bool:
        return self.api.endswith("chat")

    @property
    def embeddings(self) -> bool:
        return self.api in EMBED_APIS


def _positive_int(value, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ServiceError(f"workload.{name}: expected a positive integer, got {value!r}")
    return value


class PromptSource:
    """Seeded prompts with their requested output length.

    synthetic: words drawn from VOCAB; the word count per prompt is input_tokens / r, where r
    (tokens per word) is measured with the server's /tokenize where it has one, else taken as 1.
    sharegpt: the first human turn of each conversation is the prompt; the output length is
    prompts.output_tokens when given, else the first reply's length estimated as chars / 4.
    jsonl: one prompt per line, {"prompt": "...", "output_tokens": N} (or a bare JSON string).

    Each worker has its own generator (seeded by the client's seed and the worker), so a run
    repeats its prompts exactly; data-set prompts go round in a seeded order per client.
    """

    def __init__(self, wl: LLMWorkload, seed: int):
        self.wl = wl
        self.seed = seed
        self.tokens_per_word = 1.0
        self.calibration = "assumed 1 token per word (no tokenize endpoint)"
        self.items: list[Prompt] = []
        self.dataset: dict | None = None
        self._rngs: dict = {}
        self._next = 0
        self.trace: list[dict] | None = None
        self.client, self.clients = 0, 1
        self._blocks: dict[int, str] = {}

    # -- data sets ----------------------------------------------------------------------
    def load(self) -> None:
        wl = self.wl
        if wl.source == "synthetic":
            return
        path = _resolve_path(wl.path)
        if not path.is_file():
            raise ServiceError(f"workload.prompts.path: {wl.path} not found (looked in {path})")
        digest = sha256_file(path)
        if wl.sha256 and wl.sha256.lower().removeprefix("sha256:") != digest:
            raise ServiceError(f"workload.prompts.path: {path} has sha256 {digest}, but the "
                               f"recipe expects {wl.sha256}: the data set changed")
        if wl.source == "trace":
            from aifb.errors import ConfigError
            from aifb.clients.llm.trace import read_trace
            try:
                self.trace = read_trace(path)
            except ConfigError as exc:
                raise ServiceError(f"workload.prompts.path: {exc}") from None
            self.dataset = {"path": str(path), "format": "trace", "sha256": digest,
                            "bytes": path.stat().st_size, "prompts_in_file": len(self.trace),
                            "prompts_used": len(self.trace), "shuffled": False,
                            "output_length": "from the trace"}
            return
        try:
            items = (self._sharegpt(path) if wl.source == "sharegpt" else self._jsonl(path))
        except (ValueError, TypeError, KeyError) as exc:
            raise ServiceError(f"workload.prompts.path: {path} is not a {wl.source} file: "
                               f"{str(exc)[:200]}") from None
        total = len(items)
        if wl.shuffle:
            random.Random(f"aifb-llm-dataset:{self.seed}").shuffle(items)
        if wl.limit:
            items = items[:int(wl.limit)]
        if not items:
            raise ServiceError(f"workload.prompts.path: {path} holds no usable prompt")
        self.items = items
        self.dataset = {"path": str(path), "format": wl.source, "sha256": digest,
                        "bytes": path.stat().st_size, "prompts_in_file": total,
                        "prompts_used": len(items), "shuffled": wl.shuffle,
                        "output_length": ("workload.prompts.output_tokens" if wl.output_tokens
                                          else "from the data set")}

    def _out_len(self, rng: random.Random, own: int | None) -> int:
        wl = self.wl
        if wl.output_tokens:
            n = wl.output_tokens.draw(rng)
        elif own:
            n = own
        else:
            n = wl.max_tokens or DEFAULT_MAX_TOKENS
        if wl.max_tokens:
            n = min(n, wl.max_tokens)
        return max(1, n)

    def _sharegpt(self, path: Path) -> list[Prompt]:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ValueError("expected a JSON list of conversations")
        rng = random.Random(f"aifb-llm-sharegpt:{self.seed}")
        items = []
        for conv in data:
            turns = conv.get("conversations") if isinstance(conv, dict) else None
            if not turns or len(turns) < 2:
                continue
            first, reply = turns[0], turns[1]
            if first.get("from") not in ("human", "user") or not first.get("value"):
                continue
            own = max(1, math.ceil(len(reply.get("value") or "") / CHARS_PER_TOKEN))
            items.append(Prompt(first["value"], self._out_len(rng, own)))
        return items

    def _jsonl(self, path: Path) -> list[Prompt]:
        rng = random.Random(f"aifb-llm-jsonl:{self.seed}")
        items = []
        for n, obj in iter_jsonl(path):
            if isinstance(obj, str):
                text, own = obj, None
            elif isinstance(obj, dict) and isinstance(obj.get("prompt"), str):
                text = obj["prompt"]
                own = obj.get("output_tokens") or obj.get("max_tokens")
            else:
                raise ValueError(f"line {n}: expected {{\"prompt\": \"...\"}} or a string")
            if text:
                items.append(Prompt(text, self._out_len(rng, own)))
        return items

    # -- per request ------------------------------------------------------------------
    def next(self, worker: int) -> Prompt:
        rng = self._rngs.get(worker)
        if rng is None:
            rng = self._rngs[worker] = random.Random(f"aifb-llm:{self.seed}:{worker}")
        if self.trace is not None:
            return self._trace_prompt(rng)
        sp = self.wl.shared_prefix
        prefix = None
        if sp is not None:
            group = sp.pick(rng)
            if group is not None:
                prefix = sp.text(group, self.tokens_per_word, VOCAB)
        if self.items:
            item = self.items[self._next % len(self.items)]
            self._next += 1
            return item if prefix is None else Prompt(item.text, item.max_tokens, prefix)
        n_in = self.wl.input_tokens.draw(rng)
        # cache: cold puts the run's salt (one word) first: the prompt is one word shorter
        salt_words = 1 if self.wl.cache == "cold" and prefix is None else 0
        words = max(1, round(n_in / self.tokens_per_word) - salt_words)
        choice = rng.choice
        text = " ".join([choice(VOCAB) for _ in range(words)])
        return Prompt(text, self._out_len(rng, None), prefix)

    def _trace_prompt(self, rng: random.Random) -> Prompt:
        """This client's next trace request (requests client, client + clients, ...; round
        again after the end): input_length tokens - the seeded text of each of its hash_ids'
        blocks, so requests sharing hash ids share that prefix - and output_length."""
        from aifb.clients.llm.trace import BLOCK_TOKENS

        idx = (self.client + self._next * self.clients) % len(self.trace)
        self._next += 1
        r = self.trace[idx]
        words = max(1, round(r["input_length"] / self.tokens_per_word)
                    - (1 if self.wl.cache == "cold" else 0))
        parts: list[str] = []
        for h in r["hash_ids"]:
            block = self._blocks.get(h)
            if block is None:
                brng = random.Random(f"aifb-trace-block:{h}")
                n = max(1, round(BLOCK_TOKENS / self.tokens_per_word))
                block = self._blocks[h] = " ".join(brng.choice(VOCAB) for _ in range(n))
            parts.append(block)
        text = " ".join(parts).split(" ")[:words] if parts else []
        text += [rng.choice(VOCAB) for _ in range(words - len(text))]
        out = r["output_length"]
        if self.wl.max_tokens:
            out = min(out, self.wl.max_tokens)
        return Prompt(" ".join(text), out)

    def turns_rng(self, worker: int) -> random.Random:
        """The worker's draws of conversation lengths (apart from the prompts' draws)."""
        rng = self._rngs.get(("turns", worker))
        if rng is None:
            rng = self._rngs[("turns", worker)] = random.Random(f"aifb-llm-turns:{self.seed}:{worker}")
        return rng

    def prefixes(self) -> list[str]:
        """Every shared prefix's text (cache: warm sends each once before measuring)."""
        sp = self.wl.shared_prefix
        return [sp.text(g, self.tokens_per_word, VOCAB) for g in range(sp.groups)] if sp else []

    def calibration_text(self) -> str:
        rng = random.Random(f"aifb-llm-calibration:{self.seed}")
        return " ".join(rng.choice(VOCAB) for _ in range(CALIBRATION_WORDS))

    def describe(self) -> dict:
        wl = self.wl
        out = {"source": wl.source, "max_tokens_cap": wl.max_tokens,
               "output_tokens": wl.output_tokens.describe() if wl.output_tokens else None}
        if wl.source == "synthetic":
            out.update({"input_tokens": wl.input_tokens.describe(),
                        "generator": f"seeded words from a {len(VOCAB)}-word list",
                        "tokens_per_word": round(self.tokens_per_word, 4),
                        "calibration": self.calibration})
        else:
            out["dataset"] = self.dataset
        return out


# ----------------------------------------------------------------------------- HTTP helpers

def normalize_base(endpoint: str) -> str:
    """http://host:port[/v1] -> http://host:port (the scheme is required: aifb.endpoints)."""
    endpoints.split("LLM server", endpoint)
    text = endpoint.strip().rstrip("/")
    if text.endswith("/v1"):
        text = text[:-3]
    return text


def make_session(connections: int, force_close: bool = False,
                 headers: dict | None = None) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=max(1, connections), limit_per_host=max(1, connections),
                                     force_close=force_close, enable_cleanup_closed=False,
                                     ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers,
                                 read_bufsize=1 << 20)


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def error_text(raw: bytes) -> str:
    """The message of an error body: OpenAI {"error": {"message"}}, {"error": "..."},
    {"detail": ...} (FastAPI), {"message": ...}, or the text itself."""
    text = raw[:ERROR_BODY_MAX].decode("utf-8", "replace")
    try:
        obj = json.loads(text)
    except ValueError:
        return _short(text) or "(empty body)"
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            for k in ("message", "detail", "error"):
                if err.get(k):
                    return _short(err[k] if isinstance(err[k], str) else json.dumps(err[k]))
        elif isinstance(err, str):
            return _short(err)
        if obj.get("detail"):
            return _short(obj["detail"] if isinstance(obj["detail"], str) else json.dumps(obj["detail"]))
    return _short(text)


def http_error_type(status: int) -> str:
    if status in (401, 403):
        return "AuthError"
    if status == 404:
        return "NotFound"
    if status == 429:
        return "RateLimited"
    return f"HTTP{status}"


def connection_error_message(label: str, base: str, exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_err = exc.os_error
        why = "connection refused" if isinstance(os_err, ConnectionRefusedError) else (
            getattr(os_err, "strerror", None) or str(os_err) or type(os_err).__name__)
        return f"cannot reach {label} at {base}: {why}"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"cannot reach {label} at {base}: no answer within the timeout"
    if isinstance(exc, aiohttp.InvalidURL):
        return f"{label} endpoint {base!r} is not a valid http(s) URL"
    return f"cannot reach {label} at {base}: {_short(str(exc)) or type(exc).__name__}"


async def get_json(session: aiohttp.ClientSession, url: str, *, label: str, base: str,
                   headers: dict | None = None, timeout_s: float = CONTROL_TIMEOUT_S,
                   method: str = "GET", body: dict | None = None) -> tuple[int, object]:
    """(status, parsed JSON or raw text) of a control request; ServiceError when unreachable."""
    try:
        async with asyncio.timeout(timeout_s):
            async with session.request(method, url, headers=headers,
                                       data=None if body is None else json.dumps(body),
                                       ) as resp:
                raw = await resp.read()
                try:
                    return resp.status, json.loads(raw) if raw else None
                except ValueError:
                    return resp.status, raw.decode("utf-8", "replace")
    except (aiohttp.ClientError, OSError, TimeoutError, asyncio.TimeoutError) as exc:
        raise ServiceError(connection_error_message(label, base, exc)) from None


def match_model(requested: str, served: list[str]) -> str | None:
    """The served name for `requested`: exact, or Ollama-style with an implicit ':latest'."""
    if requested in served:
        return requested
    for name in served:
        if name == f"{requested}:latest" or (requested.endswith(":latest") and
                                              name == requested[:-len(":latest")]):
            return name
    return None


def choose_model(requested: str | None, served: list[str], label: str, base: str) -> str:
    shown = ", ".join(served[:20]) + (" …" if len(served) > 20 else "") if served else "none"
    if requested:
        name = match_model(requested, served)
        if name is None:
            raise ServiceError(f"model {requested!r} is not served by {label} at {base} "
                               f"(models served: {shown}); set workload.model to one of them")
        return name
    if len(served) == 1:
        return served[0]
    if not served:
        raise ServiceError(f"{label} at {base} serves no model")
    raise ServiceError(f"{label} at {base} serves several models ({shown}): name one in "
                       "workload.model")


# ----------------------------------------------------------------------------- stream parsing

class LineSplitter:
    """Bytes in, complete lines out (without the line end); no limit on a line's length."""

    __slots__ = ("parts",)

    def __init__(self):
        self.parts: list[bytes] = []   # the unfinished line, in pieces (joined once: O(n))

    def feed(self, data: bytes) -> list[bytes]:
        if b"\n" not in data:
            self.parts.append(data)
            return []
        if self.parts:
            self.parts.append(data)
            data = b"".join(self.parts)
            self.parts = []
        lines = data.split(b"\n")
        last = lines.pop()
        if last:
            self.parts.append(last)
        return lines

    def rest(self) -> bytes:
        buf = b"".join(self.parts)
        self.parts = []
        return buf


class ChunkAccumulator:
    """What one response said, chunk by chunk, with arrival times; shared by the OpenAI SSE and
    Ollama NDJSON parsers, and turned into the record's fields by `extra()`."""

    __slots__ = ("chat", "t_first", "chunk_times", "content_chunks", "parts", "usage",
                 "finish_reason", "done", "error", "timings", "server", "chunks_seen")

    def __init__(self, chat: bool = True):
        self.chat = chat
        self.t_first: int | None = None
        self.chunk_times: list[int] = []
        self.content_chunks = 0
        self.parts: list[str] = []
        self.usage: dict | None = None
        self.finish_reason: str | None = None
        self.done = False
        self.error: tuple[str, str] | None = None
        self.timings: dict | None = None
        self.server: dict | None = None      # Ollama's eval_count & co.
        self.chunks_seen = 0

    def add_chunk(self, t: int, text: str | None) -> None:
        if self.t_first is None:
            self.t_first = t
        self.chunk_times.append(t)
        if text:
            self.content_chunks += 1
            self.parts.append(text)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    # -- OpenAI server-sent events ------------------------------------------------------
    def feed_sse_line(self, line: bytes, t: int) -> None:
        line = line.strip()
        if not line or not line.startswith(b"data:"):
            return  # blank separators, ": comments", event:/id:/retry: fields
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            obj = json.loads(payload)
        except ValueError:
            self.error = ("ProtocolError", f"a stream event is not JSON: {_short(payload.decode('utf-8', 'replace'), 80)}")
            return
        if not isinstance(obj, dict):
            return
        self.chunks_seen += 1
        err = obj.get("error")
        if err and not obj.get("choices"):
            msg = err.get("message") if isinstance(err, dict) else err
            self.error = ("ServerError", _short(msg or json.dumps(err)))
            return
        self.feed_openai_obj(obj, t, streamed=True)

    def feed_openai_obj(self, obj: dict, t: int, streamed: bool) -> None:
        choices = obj.get("choices")
        if choices:
            c0 = choices[0] if isinstance(choices[0], dict) else {}
            if self.chat:
                part = c0.get("delta") if streamed else c0.get("message")
                part = part if isinstance(part, dict) else {}
                text = part.get("content") or part.get("reasoning_content") or None
            else:
                text = c0.get("text")
            if streamed:
                self.add_chunk(t, text)
            elif text:
                self.parts.append(text)
            if c0.get("finish_reason"):
                self.finish_reason = c0["finish_reason"]
        usage = obj.get("usage")
        if isinstance(usage, dict) and usage:
            self.usage = usage
        timings = obj.get("timings")
        if isinstance(timings, dict):
            self.timings = timings

    # -- Ollama NDJSON --------------------------------------------------------------------
    def feed_ollama_line(self, line: bytes, t: int) -> None:
        line = line.strip()
        if not line:
            return
        try:
            obj = json.loads(line)
        except ValueError:
            self.error = ("ProtocolError", f"a stream line is not JSON: {_short(line.decode('utf-8', 'replace'), 80)}")
            return
        if not isinstance(obj, dict):
            return
        self.chunks_seen += 1
        self.feed_ollama_obj(obj, t, streamed=True)

    def feed_ollama_obj(self, obj: dict, t: int, streamed: bool) -> None:
        if obj.get("error"):
            self.error = ("ServerError", _short(obj["error"] if isinstance(obj["error"], str)
                                                else json.dumps(obj["error"])))
            return
        msg = obj.get("message")
        text = (msg.get("content") or msg.get("thinking")) if isinstance(msg, dict) else obj.get("response")
        if not obj.get("done"):
            if streamed:
                self.add_chunk(t, text)
            elif text:
                self.parts.append(text)
            return
        if text:  # a done line that still carries text (non-streamed responses)
            if streamed:
                self.add_chunk(t, text)
            else:
                self.parts.append(text)
        self.done = True
        self.finish_reason = obj.get("done_reason") or "stop"
        self.server = {k: obj[k] for k in ("eval_count", "prompt_eval_count", "eval_duration",
                                           "prompt_eval_duration", "load_duration", "total_duration")
                       if isinstance(obj.get(k), int)}

    # -- the record ---------------------------------------------------------------------
    def output_tokens(self) -> tuple[int | None, str | None]:
        """(tokens, source) known without another request: the server's count, else None."""
        u = self.usage
        if u and isinstance(u.get("completion_tokens"), int):
            return u["completion_tokens"], "server"
        s = self.server
        if s and isinstance(s.get("eval_count"), int):
            return s["eval_count"], "server"
        return None, None

    def extra(self, max_tokens: int | None, streamed: bool, tokens: int | None,
              source: str | None) -> dict:
        u = self.usage or {}
        prompt = u.get("prompt_tokens")
        if prompt is None and self.server:
            prompt = self.server.get("prompt_eval_count")
        if tokens is None:
            tokens, source = (self.content_chunks, "chunks") if streamed else (None, None)
        out: dict = {"prompt_tokens": prompt, "output_tokens": tokens, "token_source": source,
                     "max_tokens": max_tokens, "finish_reason": self.finish_reason}
        details = u.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        if cached is None and self.timings and isinstance(self.timings.get("cache_n"), int):
            cached = self.timings["cache_n"]
        if cached is not None:
            out["cached_tokens"] = cached
        if streamed:
            out["content_chunks"] = self.content_chunks
            out["tokens_mismatch"] = tokens is not None and tokens != self.content_chunks
            out["chunk_times"] = self.chunk_times
        if self.server:
            out.update(self.server)
        if self.timings:
            t = self.timings
            out["server_timings"] = {k: t[k] for k in ("prompt_n", "prompt_ms", "predicted_n",
                                                       "predicted_ms", "cache_n") if k in t}
        return out


# ----------------------------------------------------------------------------- the client

def auth_refused(label: str, base: str, status: int, key_given: bool, why: str) -> str:
    """The message for HTTP 401/403: a wrong key, or a key needed and none given."""
    return (f"{label} at {base} rejected the request with HTTP {status}: "
            + ("the API key is wrong" if key_given else "it needs an API key (set "
               "service.api_key_env or service.api_key_file)") + f" ({why})")


def with_prompt_facts(out: dict, prompts: "PromptSource", wl: LLMWorkload, notes: list,
                      cache: dict | None = None) -> dict:
    """describe() of an LLM client: add the data set's hash, the goodput SLOs and the notes."""
    out["request_id_header"] = wl.request_id_header
    out["cache"] = cache
    if wl.turns != (1, 1):
        out["conversations"] = {"turns": list(wl.turns), "think_time_s": wl.think_time_s,
                                "history": "each turn sends the whole conversation: earlier "
                                           "user messages and the assistant's actual replies"}
    if prompts.dataset:
        out["dataset_sha256"] = prompts.dataset["sha256"]
    if wl.goodput:
        out["goodput"] = wl.goodput
    if notes:
        out["notes"] = list(notes)
    return out


def partial_record(acc: ChunkAccumulator, max_tokens: int, op: str, etype: str, msg: str,
                   bytes_out: int, bytes_in: int, t_end: int) -> tuple:
    """A failed request's record that keeps what the stream carried before it failed."""
    extra = acc.extra(max_tokens, True, *acc.output_tokens())
    return (op, False, etype, msg, bytes_out, bytes_in, acc.t_first, t_end, extra)


async def exchange(session: aiohttp.ClientSession, url: str, body: bytes, acc: ChunkAccumulator,
                   *, stream: bool, feed_line, feed_obj, op: str, max_tokens: int, label: str,
                   base: str, reject_obj=None,
                   headers: dict | None = None) -> tuple[tuple | None, int, int]:
    """One generation request on the wire, for every LLM protocol: POST body, then feed each
    streamed line (SSE or NDJSON, with its arrival time) or the one JSON object of a
    non-streamed reply to acc. t_end is taken when the body has been read to its end.

    Returns (None, bytes received, t_end) when the response was read to its end - the caller
    judges what acc holds - or (a finished failure record, ...) for an HTTP error, a body that
    is not a JSON object (or that reject_obj(obj, raw) turns down with (etype, message)), or a
    response cut off mid-stream. Raises RequestError when no exchange happened at all."""
    nbytes = 0
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            if resp.status != 200:
                raw = await resp.read()
                t_end = now_ns()
                return ((op, False, http_error_type(resp.status),
                         f"HTTP {resp.status}: {error_text(raw)}", len(body), len(raw), None,
                         t_end), len(raw), t_end)
            if stream:
                split = LineSplitter()
                async for data in resp.content.iter_any():
                    t = now_ns()
                    nbytes += len(data)
                    for line in split.feed(data):
                        feed_line(line, t)
                t_end = now_ns()
                rest = split.rest()
                if rest:
                    feed_line(rest, t_end)
            else:
                raw = await resp.read()
                t_end = now_ns()
                nbytes = len(raw)
                try:
                    obj = json.loads(raw)
                except ValueError:
                    obj = None
                bad = (("ProtocolError", "the response body is not a JSON object")
                       if not isinstance(obj, dict) else reject_obj(obj, raw) if reject_obj else None)
                if bad:
                    return ((op, False, bad[0], bad[1], len(body), nbytes, None, t_end), nbytes, t_end)
                feed_obj(obj, t_end, streamed=False)
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
        t_end = now_ns()
        return (partial_record(acc, max_tokens, op, "ConnectionError",
                               f"the response was cut off after {len(acc.chunk_times)} chunk(s): "
                               f"{_short(str(exc), 120) or type(exc).__name__}",
                               len(body), nbytes, t_end), nbytes, t_end)
    except (aiohttp.ClientError, OSError) as exc:
        raise RequestError("ConnectionError", connection_error_message(label, base, exc)) from None
    return None, nbytes, t_end


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
            from aifb.load.startup import new_salt
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
        conv = self._convs.get(worker)
        if conv is None or conv.over:
            self._conv_seq += 1
            conv = self._convs[worker] = Conversation(
                f"{self._rid_prefix}-c{self._conv_seq}",
                self.prompts.turns_rng(worker).randint(*self.wl.turns), prompt.prefix)
        prompt = Prompt(prompt.text, prompt.max_tokens, conv.prefix, conv.history)
        user = chat_messages(conv.prefix, conv.history, prompt.text, self._salt_text())[-1]
        return Req(prompt, self._body(prompt), headers, rid, conv, user)

    def abort(self, worker: int) -> str | None:
        """An aborted turn (load.timeout) ends its conversation, at once: the engine builds
        the worker's next request before the cancelled one unwinds."""
        self._convs.pop(worker, None)
        return super().abort(worker)

    def embed_body(self, texts: list[str]) -> bytes:
        return embed_body(self.wl.api, self.model, texts, self.wl.extra_body)

    async def request(self, worker: int, req: Req) -> tuple:
        """generate(req), its record stamped with the request id (failures too). A turn adds
        itself and the actual reply to its conversation (a failed turn ends it), then waits
        workload.think_time before the worker's next turn (after t_end: never in a latency)."""
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
            if not conv.over and self.wl.think_time_s > 0:
                # from the reply's t_end (timers may fire early: sleep again until it is due)
                due = result[7] + round(self.wl.think_time_s * 1e9)
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
        return self._models_from(status, body, self.base, self.label, bool(self._api_key))

    @staticmethod
    def _models_from(status: int, body, base: str, label: str, key_given: bool) -> list[str]:
        if status in (401, 403):
            why = error_text(json.dumps(body).encode() if not isinstance(body, str) else body.encode())
            raise ServiceError(auth_refused(label, base, status, key_given, why))
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("data"), list):
            text = body if isinstance(body, str) else json.dumps(body)
            raise ServiceError(f"{label} at {base}: GET /v1/models answered HTTP {status} "
                               f"({_short(text or '', 120)}); is it an OpenAI-compatible server?")
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
            cls._models_from(status, body, base, cls.label, bool(key))

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
