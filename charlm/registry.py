"""Registry: named entries that a package's own modules add as they are imported.

The package is listed (pkgutil) and each module imported on the first lookup, so a new entry is
one new module and no list of names is kept anywhere. Lookups import lazily, which leaves the
modules free to import the package that holds the registry.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, package: str, what: str, error: type[Exception] = KeyError):
        self.package, self.what, self.error = package, what, error
        self._entries: dict[str, T] = {}
        self._discovered = False

    def add(self, name: str, entry: T) -> T:
        """Register `entry` as `name` (called by the entry's own module)."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def all(self) -> dict[str, T]:
        """Every registered entry, by name."""
        if not self._discovered:
            self._discovered = True
            for module in pkgutil.iter_modules(sys.modules[self.package].__path__):
                importlib.import_module(f"{self.package}.{module.name}")
        return dict(self._entries)

    def get(self, name: str) -> T:
        entries = self.all()
        if name not in entries:
            raise self.error(f"no {self.what} named {name!r}; registered: {', '.join(sorted(entries))}")
        return entries[name]
