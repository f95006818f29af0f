"""Value classes without dataclasses: equality, hash, repr and immutability from __slots__.

A ``@dataclass`` writes its ``__init__``, ``__eq__``, ``__repr__`` (and, frozen, its
``__setattr__``, ``__hash__``) as source text and compiles it while its module is
imported: ~1 ms of CPU a class, paid by every command at start-up (an update pull
imported 19 of them, with dataclasses, inspect, ast and dis: a quarter of its
instructions). A class deriving from these bases writes its ``__init__`` by hand
(compiled into the module's bytecode once) and names its fields in ``__slots__``; the
rest is here, compiled once too. The fields are the class's own ``__slots__``, in
order: no field is inherited.
"""

from __future__ import annotations


class Value:
    """Mutable fields (``__slots__``): compared field by field, unhashable, as an
    ordinary ``@dataclass``."""

    __slots__: tuple[str, ...] = ()  # (defining __eq__ alone leaves __hash__ None)

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Value)
        return self._values() == other._values()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__qualname__}({fields})"


class Frozen(Value):
    """Fields set once by ``__init__`` (through ``object.__setattr__``), never again;
    hashable, as a ``@dataclass(frozen=True)``."""

    __slots__ = ()

    def __hash__(self) -> int:
        return hash(self._values())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__qualname__} is frozen: cannot assign {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__qualname__} is frozen: cannot delete {name!r}")

    def __setstate__(self, state: tuple[None, dict[str, object]]) -> None:
        """Unpickling, copy.copy and copy.deepcopy set the fields as ``__init__`` does:
        by default they set them with setattr, which is refused here (they failed)."""
        for name, value in state[1].items():
            object.__setattr__(self, name, value)
