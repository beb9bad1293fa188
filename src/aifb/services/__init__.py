"""Service kinds: how to deploy, probe and stop each one, registered by `kind`.

A new kind is one module here that decorates its class with `@register("kind")`, plus its
client in aifb.clients (registered under the same name), its workload schema
workflow/schemas/workloads/<kind>.schema.yaml whose `x-aifb-kind` block says what it is (family,
index category, display name: aifb.kinds, from which the index, the metrics family and the
schemas' kind enums derive), recipes, tests and its row in README's table. No shared file names
a kind; tests/unit/test_kinds.py fails when a registered kind and the schemas disagree.
"""

from __future__ import annotations

from aifb.errors import NotImplementedKind
from aifb.services.base import Service, ServiceInfo

_REGISTRY: dict[str, type] = {}


def register(kind: str):
    def deco(cls):
        _REGISTRY[kind] = cls
        cls.kind = kind
        return cls
    return deco


def get_service(kind: str) -> type:
    _load_builtin()
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise NotImplementedKind(
            f"service kind {kind!r} is not implemented yet (implemented: "
            f"{', '.join(sorted(_REGISTRY))})") from None


def available_kinds() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def _load_builtin() -> None:
    """Import every module of this package once; each registers its kind (a new kind is a new
    module, nothing else to edit)."""
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "base":
            importlib.import_module(f"{__name__}.{mod.name}")


__all__ = ["Service", "ServiceInfo", "register", "get_service", "available_kinds"]
