"""Name → object registries that reject duplicates and explain unknown names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of scorers, patterns or formats.

    ``register`` refuses a name twice; ``get`` on an unknown name raises a ``ValueError`` that lists
    every valid name, so a typo tells the user what they could have written. ``version`` counts the
    changes (a cache of lookups is stale once it moves).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self.version = 0

    def register(self, name: str, item: T) -> T:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} name must be a non-empty str, got {name!r}")
        if name in self._items:
            raise ValueError(
                f"{self.kind} {name!r} is already registered; pick another name "
                f"(registered: {', '.join(self.names())})"
            )
        self._items[name] = item
        self.version += 1
        return item

    def unregister(self, name: str) -> None:
        self.get(name)
        del self._items[name]
        self.version += 1

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise ValueError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s are: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def decorator(self, name: str) -> Callable[[T], T]:
        def wrap(item: T) -> T:
            return self.register(name, item)

        return wrap
