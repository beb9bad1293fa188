"""Tables of classes by service kind, as aifb.clients and aifb.services keep them: the
`@register("kind")` decorator that fills a table, the import of every module of a package that
runs those decorators (a new kind is a new module, nothing else to edit), and the lookup with
its error naming the kinds there are. Base layer: imports nothing of aifb but errors.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from aifb.errors import NotImplementedKind


def registrar(table: dict[str, type]) -> Callable[[str], Callable[[type], type]]:
    """The `register(kind)` class decorator of `table`: it files the class and sets its `kind`."""
    def register(kind: str):
        def deco(cls):
            table[kind] = cls
            cls.kind = kind
            return cls
        return deco
    return register


def import_modules(package: str, path) -> None:
    """Import every module of `package` (its `__path__`), subpackages too, except modules named
    `base` (they hold shared code, no kind); each kind's module registers itself."""
    for mod in pkgutil.walk_packages(path, prefix=f"{package}."):
        if not mod.name.endswith(".base"):
            importlib.import_module(mod.name)


def lookup(table: dict[str, type], kind: str, listing: str) -> type:
    """table[kind], or NotImplementedKind listing the kinds there are after `listing`."""
    try:
        return table[kind]
    except KeyError:
        raise NotImplementedKind(
            f"service kind {kind!r} is not implemented yet ({listing}: "
            f"{', '.join(sorted(table))})") from None
