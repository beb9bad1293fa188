"""Service kinds: how to deploy, probe and stop each one, registered by `kind`.

A new kind is one module here that decorates its class with `@register("kind")`, plus its
client in aifb.clients, a schema fragment and recipes.
"""

from __future__ import annotations

from aifb.kind_registry import KindRegistry
from aifb.services.base import Service, ServiceInfo

_REGISTRY: dict[str, type] = {}
_KINDS = KindRegistry(__name__, __path__, _REGISTRY, "implemented")
register = _KINDS.register
available_kinds = _KINDS.available


def get_service(kind: str) -> type:
    return _KINDS.get(kind)


__all__ = ["Service", "ServiceInfo", "register", "get_service", "available_kinds"]
