"""Service endpoints: one parser for every kind and one redaction for every artefact.

    split(kind, text)   the URL's parts; ServiceError when the scheme is missing or not the
                        kind's, the port is malformed, no host is named, or the URL holds a
                        password (recipes are embedded in run.json, the registry and reports)
    redact(text)        the text with any userinfo password replaced by *** (a text without a
                        scheme: the whole userinfo), for messages and artefacts
    scrub(text, *secrets)   an error text with each known secret (password, API key) replaced
                        by ***: what a server or driver says may quote them

The scheme is required: without it `user:password@host:port` reads as scheme `user` and
path `password@host:port`, so neither the password check nor the redaction would see it.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from aifb.errors import ServiceError

HTTP = ("http", "https")
SCHEMES = {
    "redis": ("redis",),                 # rediss:// (TLS) is not implemented
    "postgres": ("postgresql", "postgres"),
    "s3": HTTP, "minio": HTTP, "chroma": HTTP, "qdrant": HTTP,
    "vllm": HTTP, "ollama": HTTP, "llamacpp": HTTP,
}
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def is_loopback(host: str | None) -> bool:
    return bool(host) and (host in LOOPBACK_HOSTS or host.startswith("127."))


def example(kind: str) -> str:
    return f"{SCHEMES.get(kind, HTTP)[0]}://host:port"


def split(kind: str, text) -> SplitResult:
    """The parts of a `kind` endpoint, checked (see the module docstring)."""
    schemes = SCHEMES.get(kind, HTTP)
    if not isinstance(text, str) or "://" not in text:
        raise ServiceError(f"{kind} endpoint {redact(text)!r} has no scheme: write it as "
                           f"{example(kind)}")
    parts = urlsplit(text.strip())
    if parts.scheme.lower() not in schemes:
        raise ServiceError(f"{kind} endpoint scheme {parts.scheme!r} is not supported (use "
                           + " or ".join(f"{s}://host:port" for s in schemes) + ")")
    try:
        parts.port
    except ValueError:
        raise ServiceError(f"{kind} endpoint {redact(text)!r}: the port is not a number "
                           "from 1 to 65535") from None
    if parts.password is not None:
        raise ServiceError(f"{kind} endpoint {redact(text)!r} holds a password; recipes are "
                           "embedded in run.json, so give it through service.password_env "
                           "(or api_key_env) instead")
    if not parts.hostname:
        raise ServiceError(f"{kind} endpoint {redact(text)!r} names no host")
    return parts


def redact(text):
    """`text` with any password in its userinfo replaced by *** (non-strings as they are)."""
    if not isinstance(text, str) or "@" not in text:
        return text
    scheme, sep, rest = text.rpartition("://")
    creds, _, host = rest.rpartition("@")
    if not sep:  # no scheme: the whole userinfo may be a password
        return f"***@{host}"
    if ":" not in creds:
        return text  # a user name alone is no secret
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


def scrub(text, *secrets: str | None, one_line: bool = False, min_len: int = 1) -> str:
    """`text` (str() of any object: an exception, a reply) with every occurrence of each given
    secret replaced by ***. one_line: whitespace runs become one space first (driver messages
    span lines). Secrets shorter than min_len are left alone (S3 passes 4: an access key that
    short would also match ordinary words)."""
    text = " ".join(str(text).split()) if one_line else str(text)
    for secret in secrets:
        if secret and len(secret) >= min_len and secret in text:
            text = text.replace(secret, "***")
    return text
