"""Protocol clients the load engine drives, one module per protocol, registered by `kind`.

A new kind is one module here whose class is decorated with `@register("kind")` and follows
`aifb.clients.base.Client`; modules are discovered, nothing else to edit.
"""

from __future__ import annotations

from aifb.kind_registry import KindRegistry
from aifb.clients.base import Client, CoroutineClient, RequestError, Result

REGISTRY = KindRegistry(__name__, __path__, "clients exist for")
register = REGISTRY.register
available_kinds = REGISTRY.available


def get_client(kind: str) -> type[Client]:
    return REGISTRY.get(kind)


__all__ = ["Client", "CoroutineClient", "RequestError", "Result", "register", "get_client",
           "available_kinds"]
