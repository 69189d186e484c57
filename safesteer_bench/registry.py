"""A small decorator registry (in the spirit of inspect-ai's): name -> factory/object.

Other packages extend a registry through entry points (docs/architecture.md §9): the groups
``safesteer_bench.methods``, ``safesteer_bench.benchmarks`` and ``safesteer_bench.judges``. An entry
point naming a module is imported (its decorators register what it defines); one naming an object
registers that object under the entry point's name.
"""

from __future__ import annotations

import logging
import types
from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, TypeVar

from safesteer_bench.errors import UserError, unknown_name

log = logging.getLogger(__name__)

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to registered objects; ``get`` raises a one-line UserError for unknown names."""

    def __init__(self, kind: str, command: str) -> None:
        self.kind = kind
        self.command = command
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._items[name] = obj
            return obj

        return decorate

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise unknown_name(self.kind, name, list(self._items), self.command)
        return self._items[name]

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[tuple[str, T]]:
        return iter(self._items.items())


_LOADED: set[str] = set()


def load_plugins(group: str, registry: Registry) -> None:
    """Import the entry points of ``group`` once per process and register what they name."""
    if group in _LOADED:
        return
    _LOADED.add(group)
    for ep in entry_points(group=group):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not take the built-ins down with it
            raise UserError(f"plugin '{ep.name}' ({ep.value}, entry point group {group}) failed to load: "
                            f"{type(exc).__name__}: {exc}", "fix or uninstall the package that provides it") from exc
        if not isinstance(obj, types.ModuleType) and ep.name not in registry:
            registry.add(ep.name, obj)
        log.debug("loaded plugin %s from %s", ep.name, ep.value)
