"""One generation request on the wire and what its response said, for every LLM protocol:
`LineSplitter` cuts raw reads into lines, `ChunkAccumulator` parses OpenAI server-sent events
and Ollama NDJSON (or one non-streamed JSON object) with each chunk's arrival time and turns
them into the record's fields, and `exchange` POSTs a body and feeds the response to it.

This is the client's hot path: at 256 streams it takes in ~13,000 token events a second. The
events are decoded with orjson (json.loads took 1.13 of 2.43 profiled CPU-seconds there;
orjson decodes the same event ~3x faster and raises a ValueError on bad input as json does),
blank SSE separator lines never reach the parser, and a token event is taken in by one pass
over its object: splitting and parsing cost 2.6 instead of 5.8 CPU-µs per event
(benchmarks/README.md, "LLM client at scale", has the measurements and the commands).
"""

from __future__ import annotations

import json

import aiohttp
import orjson

from aifb.clock import now_ns
from aifb.clients.base import RequestError
from aifb.clients.llm.http import connection_error_message, error_text, http_error_type, short


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

    def _event(self, payload: bytes, what: str) -> dict | None:
        """One streamed JSON object (counted in chunks_seen); None for other JSON, and for a
        payload that is not JSON (then a ProtocolError in self.error)."""
        try:
            obj = orjson.loads(payload)
        except ValueError:   # orjson.JSONDecodeError is one
            self.error = ("ProtocolError", f"a stream {what} is not JSON: "
                                           f"{short(payload.strip().decode('utf-8', 'replace'), 80)}")
            return None
        if not isinstance(obj, dict):
            return None
        self.chunks_seen += 1
        return obj

    # -- OpenAI server-sent events ------------------------------------------------------
    def feed_sse_line(self, line: bytes, t: int) -> None:
        if not line.startswith(b"data:"):
            line = line.strip()    # an indented or CR-ended line
            if not line.startswith(b"data:"):
                return  # blank separators, ": comments", event:/id:/retry: fields
        payload = line[5:]     # JSON may have whitespace around it; [DONE] is compared bare
        if len(payload) < 16 and payload.strip() == b"[DONE]":
            self.done = True
            return
        obj = self._event(payload, "event")
        if obj is None:
            return
        err = obj.get("error")
        if err and not obj.get("choices"):
            msg = err.get("message") if isinstance(err, dict) else err
            self.error = ("ServerError", short(msg or json.dumps(err)))
            return
        self.feed_openai_obj(obj, t, streamed=True)

    def feed_openai_obj(self, obj: dict, t: int, streamed: bool) -> None:
        # Once per token event: one pass, the rare keys tested with `in`.
        choices = obj.get("choices")
        if choices:
            c0 = choices[0]
            if not isinstance(c0, dict):
                c0 = {}
            if self.chat:
                part = c0.get("delta" if streamed else "message")
                text = ((part.get("content") or part.get("reasoning_content") or None)
                        if isinstance(part, dict) else None)
            else:
                text = c0.get("text")
            if streamed:
                self.add_chunk(t, text)
            elif text:
                self.parts.append(text)
            finish = c0.get("finish_reason")
            if finish:
                self.finish_reason = finish
        if "usage" in obj:
            usage = obj["usage"]
            if isinstance(usage, dict) and usage:
                self.usage = usage
        if "timings" in obj and isinstance(obj["timings"], dict):
            self.timings = obj["timings"]

    # -- Ollama NDJSON --------------------------------------------------------------------
    def feed_ollama_line(self, line: bytes, t: int) -> None:
        line = line.strip()
        if not line:
            return
        obj = self._event(line, "line")
        if obj is not None:
            self.feed_ollama_obj(obj, t, streamed=True)

    def feed_ollama_obj(self, obj: dict, t: int, streamed: bool) -> None:
        if obj.get("error"):
            self.error = ("ServerError", short(obj["error"] if isinstance(obj["error"], str)
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
                readany = resp.content.readany   # all that is buffered; b"" at the end
                while data := await readany():
                    t = now_ns()
                    nbytes += len(data)
                    for line in split.feed(data):
                        if line:                 # not the blank line that ends an SSE event
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
                    obj = orjson.loads(raw)
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
                               f"{short(str(exc), 120) or type(exc).__name__}",
                               len(body), nbytes, t_end), nbytes, t_end)
    except (aiohttp.ClientError, OSError) as exc:
        raise RequestError("ConnectionError", connection_error_message(label, base, exc)) from None
    return None, nbytes, t_end
