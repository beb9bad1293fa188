"""Protocol clients the load engine drives, one module per protocol, registered by `kind`.

A new kind is one module here whose class is decorated with `@register("kind")` and follows
`aifb.clients.base.Client`; modules are discovered, nothing else to edit.
"""

from __future__ import annotations

from aifb import kind_registry
from aifb.clients.base import Client, CoroutineClient, RequestError, Result

_REGISTRY: dict[str, type] = {}
register = kind_registry.registrar(_REGISTRY)


def get_client(kind: str) -> type[Client]:
    _load_builtin()
    return kind_registry.lookup(_REGISTRY, kind, "clients exist for")


def available_kinds() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def _load_builtin() -> None:
    """Import every module of this package once; each registers its kind."""
    kind_registry.import_modules(__name__, __path__)


__all__ = ["Client", "CoroutineClient", "RequestError", "Result", "register", "get_client",
           "available_kinds"]
