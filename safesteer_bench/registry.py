"""A small decorator registry (in the spirit of inspect-ai's): name -> factory/object."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from safesteer_bench.errors import unknown_name

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
