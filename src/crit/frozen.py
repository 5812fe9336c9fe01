"""Frozen, slotted dataclasses made at a fraction of `@dataclass(frozen=True, slots=True)`'s cost.

The AST and the IR are about a hundred such classes, and every crit command creates them all at
start-up. On Python 3.11 the standard decorator compiles six methods from source for each class
(`__init__`, `__repr__`, `__eq__`, `__hash__`, and for `frozen` `__setattr__` and `__delattr__`):
a sixth of `crit build`'s whole process. Here only `__init__` is compiled (a call with named,
positional and default arguments is fastest as real code); the other five are shared functions
over each class's fields, which behave as the generated ones do: equal when the class and every
field are equal, hashed as the tuple of fields, shown as `Name(field=value, ...)`, and never
assigned after `__init__` (`dataclasses.FrozenInstanceError`).

The class is still made a dataclass by `dataclasses.dataclass` (fields, `__match_args__`,
`__slots__`), asked to add no methods of its own, so `dataclasses.fields`, `replace` and
`is_dataclass` work on it unchanged. Its `__dataclass_params__` therefore read `eq=False,
frozen=False`, which nothing in crit consults.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform

_T = TypeVar("_T")


def _setattr(self: object, name: str, value: object) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _delattr(self: object, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _methods(names: tuple[str, ...]) -> dict[str, Any]:
    """`__eq__`, `__hash__`, `__repr__` and the pickle state over the fields `names`, in order."""
    values: Callable[[object], tuple[Any, ...]]
    if len(names) > 1:
        values = attrgetter(*names)
    else:  # attrgetter of one name gives the value itself, not a 1-tuple
        def values(self: object) -> tuple[Any, ...]:
            return tuple(getattr(self, name) for name in names)

    def __eq__(self: object, other: object) -> bool:
        if other.__class__ is self.__class__:
            return values(self) == values(other)
        return NotImplemented

    def __hash__(self: object) -> int:
        return hash(values(self))

    def __repr__(self: object) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{self.__class__.__qualname__}({shown})"

    # pickling and copying, which would otherwise restore the slots through `__setattr__`
    def __getstate__(self: object) -> list[Any]:
        return [getattr(self, name) for name in names]

    def __setstate__(self: object, state: list[Any]) -> None:
        for name, value in zip(names, state, strict=True):
            object.__setattr__(self, name, value)

    return {"__eq__": __eq__, "__hash__": __hash__, "__repr__": __repr__,
            "__getstate__": __getstate__, "__setstate__": __setstate__}


def _init(cls: type, annotations: dict[str, Any], defaults: tuple[object, ...]) -> Any:
    """`__init__(self, <fields>)`, storing each argument as dataclasses' frozen `__init__` does."""
    names = tuple(annotations)
    body = "".join(f"    __set(self, {name!r}, {name})\n" for name in names) or "    pass\n"
    source = f"def __init__(self, {', '.join(names)}):\n{body}"
    namespace: dict[str, Any] = {}
    # the source holds field names only, which are Python identifiers from crit's own classes
    exec(compile(source, f"<crit.frozen {cls.__qualname__}>", "exec"), {"__set": object.__setattr__}, namespace)
    init = namespace["__init__"]
    init.__defaults__ = defaults or None
    init.__annotations__ = {**annotations, "return": None}
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    return init


@dataclass_transform(frozen_default=True)
def frozen(cls: type[_T]) -> type[_T]:
    """`cls` as a frozen, slotted dataclass: each annotation a field, in order; a value given in
    the class body is that field's default (only plain values, no `dataclasses.field`)."""
    annotations = inspect.get_annotations(cls)
    names = tuple(annotations)
    defaults = []
    for name in names:
        if name in cls.__dict__:
            value = cls.__dict__[name]
            if isinstance(value, dataclasses.Field):
                raise TypeError(f"{cls.__qualname__}.{name}: frozen takes plain defaults only")
            defaults.append(value)
        elif defaults:
            raise TypeError(f"{cls.__qualname__}.{name}: a field without a default follows one with a default")
    if cls.__bases__ != (object,):
        raise TypeError(f"{cls.__qualname__}: frozen classes do not inherit")
    for name, method in (("__init__", _init(cls, annotations, tuple(defaults))), *_methods(names).items(),
                         ("__setattr__", _setattr), ("__delattr__", _delattr)):
        if name in cls.__dict__:
            raise TypeError(f"{cls.__qualname__} defines {name}, which frozen makes")
        setattr(cls, name, method)
    made = dataclasses.dataclass(init=False, repr=False, eq=False, slots=True)(cls)
    if tuple(made.__dataclass_fields__) != names:  # type: ignore[attr-defined]  # set just above
        raise TypeError(f"{cls.__qualname__}: its fields are not its annotations")
    return made
