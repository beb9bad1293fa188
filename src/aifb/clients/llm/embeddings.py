"""Embedding requests for the LLM kinds: `workload.api: openai-embeddings` (POST /v1/embeddings:
vLLM with an embedding model, llama-server started with --embedding, Ollama's /v1) and
`ollama-embed` (Ollama's native POST /api/embed). Each request embeds `workload.batch_size`
inputs whose lengths follow prompts.input_tokens (or the data set).

Per request the record carries inputs (the batch size), prompt_tokens (usage.prompt_tokens, or
Ollama's prompt_eval_count) and dimensions (the length of the first vector); t_first is null
(nothing streams) and the latency is t_end - t_start. aifb.analysis.metrics.llm_workload turns them into
inputs/s, tokens/s and latency percentiles.
"""

from __future__ import annotations

import json

import aiohttp

from aifb.clock import now_ns
from aifb.clients.base import RequestError

EMBED_APIS = ("openai-embeddings", "ollama-embed")
PATHS = {"openai-embeddings": "/v1/embeddings", "ollama-embed": "/api/embed"}


def embed_body(api: str, model: str | None, texts: list[str], extra: dict) -> bytes:
    body: dict = {"model": model, "input": texts}
    if api == "openai-embeddings":
        body["encoding_format"] = "float"
    body.update(extra)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def parse_reply(api: str, obj) -> tuple[list | None, int | None, str | None]:
    """(vectors, prompt tokens, error) of an embeddings reply."""
    if not isinstance(obj, dict):
        return None, None, "the response body is not a JSON object"
    if api == "ollama-embed":
        vecs = obj.get("embeddings")
        tokens = obj.get("prompt_eval_count")
    else:
        data = obj.get("data")
        vecs = ([d.get("embedding") for d in data if isinstance(d, dict)]
                if isinstance(data, list) else None)
        tokens = (obj.get("usage") or {}).get("prompt_tokens") if isinstance(obj.get("usage"), dict) else None
    if not isinstance(vecs, list) or not all(isinstance(v, list) for v in vecs):
        return None, None, "the response carries no list of embeddings"
    return vecs, tokens if isinstance(tokens, int) else None, None


async def embed_exchange(*args) -> tuple:
    """One embeddings request: the finished result tuple (see aifb.clients.base)."""
    return (await embed_vectors(*args))[0]


async def embed_vectors(session: aiohttp.ClientSession, url: str, body: bytes, headers,
                        api: str, n_inputs: int, label: str, base: str, error_text,
                        http_error_type, connection_error_message) -> tuple[tuple, list]:
    """One embeddings request: (the result tuple, the vectors; [] on failure)."""
    op = "embed"
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            raw = await resp.read()
            t_end = now_ns()
            status = resp.status
    except (aiohttp.ClientError, OSError) as exc:
        raise RequestError("ConnectionError", connection_error_message(label, base, exc)) from None
    if status != 200:
        return (op, False, http_error_type(status), f"HTTP {status}: {error_text(raw)}",
                len(body), len(raw), None, t_end), []
    try:
        obj = json.loads(raw)
    except ValueError:
        obj = None
    vecs, tokens, err = parse_reply(api, obj)
    if err is None and len(vecs) != n_inputs:
        err = f"{len(vecs)} embeddings for {n_inputs} inputs"
    extra = {"inputs": n_inputs, "prompt_tokens": tokens,
             "dimensions": len(vecs[0]) if vecs else None}
    if err:
        return (op, False, "ProtocolError", err, len(body), len(raw), None, t_end, extra), []
    return (op, True, None, None, len(body), len(raw), None, t_end, extra), vecs
