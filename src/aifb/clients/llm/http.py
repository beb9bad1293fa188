"""HTTP helpers every LLM client shares (OpenAI-compatible and Ollama's native API): the base
URL, the aiohttp session sized to the concurrency, control requests (`get_json`), error
messages from a status, a body or a failed connection, and the choice of the served model.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp

from aifb import endpoints
from aifb.errors import ServiceError

CONNECT_TIMEOUT_S = 10.0
CONTROL_TIMEOUT_S = 30.0          # /v1/models, /tokenize, the prepare() request
ERROR_BODY_MAX = 4096             # bytes of an error body kept for the message


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


def short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def error_text(raw: bytes) -> str:
    """The message of an error body: OpenAI {"error": {"message"}}, {"error": "..."},
    {"detail": ...} (FastAPI), {"message": ...}, or the text itself."""
    text = raw[:ERROR_BODY_MAX].decode("utf-8", "replace")
    try:
        obj = json.loads(text)
    except ValueError:
        return short(text) or "(empty body)"
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            for k in ("message", "detail", "error"):
                if err.get(k):
                    return short(err[k] if isinstance(err[k], str) else json.dumps(err[k]))
        elif isinstance(err, str):
            return short(err)
        if obj.get("detail"):
            return short(obj["detail"] if isinstance(obj["detail"], str) else json.dumps(obj["detail"]))
    return short(text)


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
    return f"cannot reach {label} at {base}: {short(str(exc)) or type(exc).__name__}"


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



def auth_refused(label: str, base: str, status: int, key_given: bool, why: str) -> str:
    """The message for HTTP 401/403: a wrong key, or a key needed and none given."""
    return (f"{label} at {base} rejected the request with HTTP {status}: "
            + ("the API key is wrong" if key_given else "it needs an API key (set "
               "service.api_key_env or service.api_key_file)") + f" ({why})")
