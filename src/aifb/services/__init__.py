"""Service kinds: how to deploy, probe and stop each one, registered by `kind`.

A new kind is one module here that decorates its class with `@register("kind")`, plus its
client in aifb.clients (registered under the same name), its workload schema
workflow/schemas/workloads/<kind>.schema.yaml whose `x-aifb-kind` block says what it is (family,
index category, display name: aifb.kinds, from which the index, the metrics family and the
schemas' kind enums derive), recipes, tests and its row in README's table. No shared file names
a kind; tests/unit/test_kinds.py fails when a registered kind and the schemas disagree.
"""

from __future__ import annotations

from aifb.kind_registry import KindRegistry
from aifb.services.base import Service, ServiceInfo

REGISTRY = KindRegistry(__name__, __path__, "implemented")
register = REGISTRY.register
available_kinds = REGISTRY.available


def get_service(kind: str) -> type:
    return REGISTRY.get(kind)


__all__ = ["Service", "ServiceInfo", "register", "get_service", "available_kinds"]
