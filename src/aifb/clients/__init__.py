"""Protocol clients the load engine drives, one module per protocol, registered by `kind`.

A new kind is one module here whose class is decorated with `@register("kind")` and follows
`aifb.clients.base.Client`; modules are discovered, nothing else to edit.
"""

from __future__ import annotations

from aifb.errors import NotImplementedKind
from aifb.clients.base import Client, CoroutineClient, RequestError, Result

_REGISTRY: dict[str, type] = {}


def register(kind: str):
    def deco(cls):
        _REGISTRY[kind] = cls
        cls.kind = kind
        return cls
    return deco


def get_client(kind: str) -> type[Client]:
    _load_builtin()
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise NotImplementedKind(
            f"service kind {kind!r} is not implemented yet (clients exist for: "
            f"{', '.join(sorted(_REGISTRY))})") from None


def available_kinds() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def _load_builtin() -> None:
    """Import every module of this package once; each registers its kind."""
    import importlib
    import pkgutil

    for mod in pkgutil.walk_packages(__path__, prefix=f"{__name__}."):
        if not mod.name.endswith(".base"):
            importlib.import_module(mod.name)


__all__ = ["Client", "CoroutineClient", "RequestError", "Result", "register", "get_client",
           "available_kinds"]
