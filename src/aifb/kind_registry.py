"""Tables of classes by service kind, as aifb.clients and aifb.services keep them: the
`@register("kind")` decorator that fills a table, the import of every module of a package that
runs those decorators (a new kind is a new module, nothing else to edit), and the lookup with
its error naming the kinds there are. Base layer: imports nothing of aifb but errors.
"""

from __future__ import annotations

import importlib
import pkgutil

from aifb.errors import NotImplementedKind


class KindRegistry:
    """The kinds of one package: `table` (kind -> class), filled by `register` as the package's
    modules are imported (a test swaps in a copy of it: tests/conftest.py register_kind)."""

    def __init__(self, package: str, path, listing: str):
        self.package, self.path = package, path
        self.table: dict[str, type] = {}
        self.listing = listing   # the words before the kinds there are, in the lookup's error

    def register(self, kind: str):
        """Class decorator: file the class under `kind` and set its `kind`."""
        def deco(cls):
            self.table[kind] = cls
            cls.kind = kind
            return cls
        return deco

    def load(self) -> None:
        """Import every module of the package (subpackages too) once, except modules named
        `base` (shared code, no kind); each kind's module registers itself."""
        for mod in pkgutil.walk_packages(self.path, prefix=f"{self.package}."):
            if not mod.name.endswith(".base"):
                importlib.import_module(mod.name)

    def get(self, kind: str) -> type:
        """The class of `kind`; NotImplementedKind naming the kinds there are."""
        self.load()
        try:
            return self.table[kind]
        except KeyError:
            raise NotImplementedKind(
                f"service kind {kind!r} is not implemented yet ({self.listing}: "
                f"{', '.join(sorted(self.table))})") from None

    def available(self) -> list[str]:
        self.load()
        return sorted(self.table)
