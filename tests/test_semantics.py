"""Truth tables for every operator, including unknown and not applicable, run through a
generated module; and the laws of Kleene logic as properties of the runtime."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crit import runtime as rt

PROTOCOL = '''protocol T "Truth tables"

enum Kind
  a
  b
  c

record Item
  ok: bool

patient
  p: bool
  q: bool
  n: integer
  kind: Kind
  tags: set of Kind
  day: date
  anchor: date
  items: list of Item
  j: judgment

inclusion
  I1 "and"
    p and q
  I2 "or"
    p or q
  I3 "not"
    not p
  I4 "at least 2 of 3"
    at least 2 of (p, q, n >= 1)
  I5 "when"
    when p: q
  I6 "between"
    n between 1 and 3
  I7 "is any of"
    kind is any of (a, b)
  I8 "has all of"
    tags has all of (a, b)
  I9 "window"
    day within 1 month before anchor
  I10 "any item"
    any(items where ok)
  I11 "all items"
    all(items where ok)
  I12 "count"
    count(items where ok) >= 2
  I13 "judgment"
    j
'''

T, F, U = True, False, None


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    from conftest import compile_text, import_module
    from crit.emit.python import emit_python

    path = tmp_path_factory.mktemp("semantics") / "truth.py"
    path.write_text(emit_python(compile_text(PROTOCOL), PROTOCOL), encoding="utf-8")
    return import_module(path)


def outcome(module: ModuleType, criterion: str, record: dict[str, Any]) -> str:
    return str(module.evaluate(record).outcome(criterion).value)


def bools(p: bool | None, q: bool | None) -> dict[str, Any]:
    return {k: v for k, v in (("p", p), ("q", q)) if v is not None}


KLEENE = [(T, T), (T, F), (T, U), (F, T), (F, F), (F, U), (U, T), (U, F), (U, U)]
WORD = {T: "met", F: "not met", U: "unknown"}


@pytest.mark.parametrize(("p", "q"), KLEENE)
def test_and_or_not(module: ModuleType, p: bool | None, q: bool | None) -> None:
    record = bools(p, q)
    expected_and = F if F in (p, q) else (U if U in (p, q) else T)
    expected_or = T if T in (p, q) else (U if U in (p, q) else F)
    assert outcome(module, "I1", record) == WORD[expected_and]
    assert outcome(module, "I2", record) == WORD[expected_or]
    assert outcome(module, "I3", record) == WORD[None if p is None else not p]


@pytest.mark.parametrize(
    ("p", "q", "n", "expected"),
    [(T, T, None, "met"), (T, F, 0, "not met"), (T, F, None, "unknown"), (U, U, 1, "unknown"),
     (F, F, None, "not met"), (T, U, 5, "met"), (F, U, 0, "not met")],
)
def test_at_least(module: ModuleType, p: bool | None, q: bool | None, n: int | None, expected: str) -> None:
    record = bools(p, q) | ({"n": n} if n is not None else {})
    assert outcome(module, "I4", record) == expected


@pytest.mark.parametrize(
    ("p", "q", "expected"),
    [(T, T, "met"), (T, F, "not met"), (T, U, "unknown"), (F, T, "not applicable"),
     (F, U, "not applicable"), (U, T, "unknown"), (U, F, "unknown"), (U, U, "unknown")],
)
def test_when(module: ModuleType, p: bool | None, q: bool | None, expected: str) -> None:
    assert outcome(module, "I5", bools(p, q)) == expected


@pytest.mark.parametrize(("n", "expected"), [(0, "not met"), (1, "met"), (3, "met"), (4, "not met"),
                                             (None, "unknown")])
def test_between_is_inclusive(module: ModuleType, n: int | None, expected: str) -> None:
    assert outcome(module, "I6", {} if n is None else {"n": n}) == expected


@pytest.mark.parametrize(("kind", "expected"), [("a", "met"), ("c", "not met"), (None, "unknown")])
def test_enum_membership(module: ModuleType, kind: str | None, expected: str) -> None:
    assert outcome(module, "I7", {} if kind is None else {"kind": kind}) == expected


@pytest.mark.parametrize(("tags", "expected"), [(["a", "b", "c"], "met"), (["a"], "not met"), ([], "not met"),
                                                (None, "unknown")])
def test_set_has_all(module: ModuleType, tags: list[str] | None, expected: str) -> None:
    assert outcome(module, "I8", {} if tags is None else {"tags": tags}) == expected


@pytest.mark.parametrize(
    ("day", "anchor", "expected"),
    [("2025-03-31", "2025-03-31", "met"), ("2025-02-28", "2025-03-31", "met"),
     ("2025-02-27", "2025-03-31", "not met"), ("2025-04-01", "2025-03-31", "not met"),
     ("2024-02-29", "2024-03-29", "met"), (None, "2025-03-31", "unknown")],
)
def test_calendar_month_window(module: ModuleType, day: str | None, anchor: str, expected: str) -> None:
    record = {"anchor": anchor} | ({"day": day} if day else {})
    assert outcome(module, "I9", record) == expected


ITEMS: list[tuple[list[Any] | None, str, str, str]] = [
    (None, "unknown", "unknown", "unknown"),
    ([], "not met", "met", "not met"),
    ([{"ok": True}], "met", "met", "not met"),
    ([{"ok": True}, {"ok": False}], "met", "not met", "not met"),
    ([{"ok": False}, {}], "unknown", "not met", "not met"),
    ([{"ok": True}, {}], "met", "unknown", "unknown"),
    ([{"ok": True}, {"ok": True}, {}], "met", "unknown", "met"),
]


@pytest.mark.parametrize(("items", "any_", "all_", "count"), ITEMS)
def test_quantifiers_over_lists(module: ModuleType, items: list[Any] | None, any_: str, all_: str,
                                count: str) -> None:
    record = {} if items is None else {"items": items}
    assert outcome(module, "I10", record) == any_
    assert outcome(module, "I11", record) == all_
    assert outcome(module, "I12", record) == count


def test_missing_item_fields_are_named_by_path(module: ModuleType) -> None:
    result = module.evaluate({"items": [{"ok": True}, {}]})
    row = next(c for c in result.criteria if c.id == "I12")
    assert row.missing == ("items[1].ok",)


@pytest.mark.parametrize(("j", "expected"), [(True, "met"), (False, "not met"), (None, "unknown")])
def test_judgment(module: ModuleType, j: bool | None, expected: str) -> None:
    assert outcome(module, "I13", {} if j is None else {"j": j}) == expected


# ---- laws of the runtime's logic ------------------------------------------------------------

facts = st.sampled_from([True, False, None]).map(lambda v: rt.Fact(v, "", ("x",) if v is None else ()))
values: Callable[[rt.Fact], bool | None] = lambda f: f.value  # noqa: E731


@given(facts, facts)
def test_commutativity(a: rt.Fact, b: rt.Fact) -> None:
    assert values(rt.all_of(a, b)) == values(rt.all_of(b, a))
    assert values(rt.any_of(a, b)) == values(rt.any_of(b, a))


@given(facts, facts, facts)
def test_associativity_and_distribution(a: rt.Fact, b: rt.Fact, c: rt.Fact) -> None:
    assert values(rt.all_of(rt.all_of(a, b), c)) == values(rt.all_of(a, rt.all_of(b, c)))
    assert values(rt.any_of(rt.any_of(a, b), c)) == values(rt.any_of(a, rt.any_of(b, c)))
    assert values(rt.all_of(a, rt.any_of(b, c))) == values(rt.any_of(rt.all_of(a, b), rt.all_of(a, c)))


@given(facts, facts)
def test_de_morgan_and_absorption(a: rt.Fact, b: rt.Fact) -> None:
    assert values(rt.negate(rt.all_of(a, b))) == values(rt.any_of(rt.negate(a), rt.negate(b)))
    assert values(rt.negate(rt.any_of(a, b))) == values(rt.all_of(rt.negate(a), rt.negate(b)))
    assert values(rt.all_of(a, rt.any_of(a, b))) == values(a)
    assert values(rt.any_of(a, rt.all_of(a, b))) == values(a)
    assert values(rt.all_of(a, rt.ALWAYS)) == values(a)


@given(st.lists(facts, min_size=1, max_size=6), st.integers(min_value=1, max_value=6))
def test_at_least_agrees_with_its_definition(parts: list[rt.Fact], n: int) -> None:
    true = sum(1 for p in parts if p.value is True)
    unknown = sum(1 for p in parts if p.value is None)
    expected = True if true >= n else (False if true + unknown < n else None)
    assert values(rt.at_least(n, *parts)) == expected
    if n == 1:
        assert values(rt.at_least(1, *parts)) == values(rt.any_of(*parts))
    if n == len(parts):
        assert values(rt.at_least(n, *parts)) == values(rt.all_of(*parts))


@given(facts, facts)
def test_unknown_results_name_what_is_missing(a: rt.Fact, b: rt.Fact) -> None:
    for result in (rt.all_of(a, b), rt.any_of(a, b)):
        assert (result.value is None) == bool(result.missing)
