"""`crit.frozen` makes the AST's and IR's classes as `@dataclass(frozen=True, slots=True)` would:
the same constructor, equality, hash, repr and immutability, and still a dataclass to
`dataclasses.fields`, `replace` and pattern matching."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from decimal import Decimal

import pytest

from crit import ast, ir
from crit.frozen import frozen


@frozen
class Made:
    """A node with a default, as the AST's nodes have."""

    name: str
    value: Decimal
    parts: tuple[int, ...] = ()
    note: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Standard:
    """The same node made by the standard decorator."""

    name: str
    value: Decimal
    parts: tuple[int, ...] = ()
    note: str | None = None


@frozen
class One:
    only: str


@dataclasses.dataclass(frozen=True, slots=True)
class StandardOne:
    only: str


@frozen
class Twin:
    """Same fields as `One`, another class."""

    only: str


CASES = [("a", Decimal("1.0")), ("a", Decimal("1.00"), (1, 2)), ("b", Decimal(2), (), "x"), ("", Decimal(0), (3,))]


@pytest.mark.parametrize("args", CASES)
def test_behaves_as_the_standard_frozen_slotted_dataclass(args: tuple[object, ...]) -> None:
    made, standard = Made(*args), Standard(*args)  # type: ignore[arg-type]
    assert repr(made) == repr(standard).replace("Standard(", "Made(", 1)
    assert hash(made) == hash(standard)
    assert made == Made(*args)  # type: ignore[arg-type]
    assert not made != Made(*args)  # type: ignore[arg-type]  # noqa: SIM202 - __ne__ as well
    assert made == Made(**{f.name: getattr(made, f.name) for f in dataclasses.fields(made)})
    assert made != standard  # another class is never equal, even with equal fields
    for other in CASES:
        assert (made == Made(*other)) == (standard == Standard(*other))  # type: ignore[arg-type]


def test_same_constructor_fields_and_match_args() -> None:
    assert inspect.signature(Made) == inspect.signature(Standard)
    assert [(f.name, f.type, f.default) for f in dataclasses.fields(Made)] == \
        [(f.name, f.type, f.default) for f in dataclasses.fields(Standard)]
    assert Made.__match_args__ == Standard.__match_args__
    assert Made.__slots__ == Standard.__slots__
    assert dataclasses.is_dataclass(Made)
    with pytest.raises(TypeError):
        Made("a")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Made("a", Decimal(1), (), None, "one too many")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Made("a", Decimal(1), name="twice")  # type: ignore[misc]


def test_one_field_hashes_and_compares_as_the_standard_does() -> None:
    assert hash(One("x")) == hash(StandardOne("x"))
    assert repr(One("x")) == "One(only='x')"
    assert One("x") == One("x") and One("x") != One("y")
    assert One("x") != Twin("x") and One("x") != ("x",)
    assert len({One("x"), One("x"), Twin("x")}) == 2


def test_never_changed_after_it_is_made() -> None:
    made = Made("a", Decimal(1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.name = "b"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del made.name  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.extra = 1  # type: ignore[attr-defined]
    assert not hasattr(made, "__dict__")
    assert made.name == "a"


def test_replace_pattern_matching_and_pickle() -> None:
    made = Made("a", Decimal(1), (1,))
    changed = dataclasses.replace(made, note="n")
    assert changed == Made("a", Decimal(1), (1,), "n") and made.note is None
    match changed:
        case Made(name, value, parts, note):
            assert (name, value, parts, note) == ("a", Decimal(1), (1,), "n")
        case _:
            pytest.fail("a frozen class matches by position")
    assert pickle.loads(pickle.dumps(changed)) == changed
    assert copy.deepcopy(changed) == changed and copy.copy(changed) == changed


def test_refuses_what_it_would_get_wrong() -> None:
    with pytest.raises(TypeError, match="plain defaults"):
        @frozen
        class Factory:
            items: list[int] = dataclasses.field(default_factory=list)
    with pytest.raises(TypeError, match="defines __eq__"):
        @frozen
        class OwnEquality:
            x: int

            def __eq__(self, other: object) -> bool:
                return True
    with pytest.raises(TypeError, match="do not inherit"):
        @frozen
        class Child(Standard):
            extra: int = 0


@pytest.mark.parametrize("module", [ast, ir], ids=["ast", "ir"])
def test_every_node_class_is_a_frozen_slotted_dataclass(module: object) -> None:
    classes = [c for c in vars(module).values()
               if isinstance(c, type) and c.__module__ == module.__name__  # type: ignore[attr-defined]
               and dataclasses.is_dataclass(c)]
    assert len(classes) > 40
    for cls in classes:
        assert cls.__setattr__ is Made.__setattr__, cls  # type: ignore[comparison-overlap]
        assert cls.__slots__ == tuple(f.name for f in dataclasses.fields(cls)), cls
