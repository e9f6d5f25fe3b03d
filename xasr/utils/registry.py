"""Name -> class registries, so that configs pick components by name instead of if-chains.

    ENCODERS = Registry("encoder")

    @ENCODERS.register("conformer")
    class ConformerEncoder(nn.Module): ...

    ENCODERS.get("conformer")  # -> ConformerEncoder; an unknown name lists the known ones
"""
from __future__ import annotations

from typing import Callable, Dict, Generic, List, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj
        return deco

    def unregister(self, name: str) -> None:
        """Forget ``name`` (e.g. a method a test registered for its own run)."""
        if name not in self._items:
            raise KeyError(f"{self.kind} {name!r} is not registered")
        del self._items[name]

    def get(self, name: str) -> T:
        if name not in self._items:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items)) or 'none'}")
        return self._items[name]

    def names(self) -> List[str]:
        return sorted(self._items)
