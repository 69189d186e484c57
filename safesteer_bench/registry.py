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


def _fits(group: str, obj: object) -> bool:
    """Whether an entry point's object can serve as an item of ``group`` (a method class or
    object with ``policy``, a judge factory, a benchmark spec); other groups are not checked."""
    if group.endswith(".methods"):
        return hasattr(obj, "policy")
    if group.endswith(".judges"):
        return callable(obj)
    if group.endswith(".benchmarks"):
        return hasattr(obj, "prompts") and hasattr(obj, "name")
    return True


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
        if not isinstance(obj, types.ModuleType):
            if ep.name in registry:
                if registry.get(ep.name) is obj:
                    continue
                raise UserError(f"plugin '{ep.name}' ({ep.value}, entry point group {group}) takes the name of "
                                f"an existing {registry.kind}", "rename the entry point, or uninstall the package")
            if not _fits(group, obj):
                raise UserError(f"plugin '{ep.name}' ({ep.value}, entry point group {group}) names a "
                                f"{type(obj).__name__}, not a {registry.kind}",
                                "point the entry point at a module or at the class (or spec) it registers")
            registry.add(ep.name, obj)
        log.debug("loaded plugin %s from %s", ep.name, ep.value)
