"""Service kinds: how to deploy, probe and stop each one, registered by `kind`.

A new kind is one module here that decorates its class with `@register("kind")`, plus its
client in aifb.clients, a schema fragment and recipes.
"""

from __future__ import annotations

from aifb import kind_registry
from aifb.services.base import Service, ServiceInfo

_REGISTRY: dict[str, type] = {}
register = kind_registry.registrar(_REGISTRY)


def get_service(kind: str) -> type:
    _load_builtin()
    return kind_registry.lookup(_REGISTRY, kind, "implemented")


def available_kinds() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def _load_builtin() -> None:
    """Import every module of this package once; each registers its kind."""
    kind_registry.import_modules(__name__, __path__)


__all__ = ["Service", "ServiceInfo", "register", "get_service", "available_kinds"]
