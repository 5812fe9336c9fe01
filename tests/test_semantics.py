"""Truth tables for every operator, including unknown and not applicable, run through a
generated module; and the laws of Kleene logic as properties of the runtime."""

from __future__ import annotations

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
    from crit.backends.python import emit_python

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
     (F, U, "not applicable"), (U, T, "met or not applicable"), (U, F, "not met or not applicable"),
     (U, U, "unknown")],
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
#
# The one three-valued logic the generated modules and their explainer decide with: True,
# False, or the tuple of missing paths for unknown; NA for a part that does not apply.

conditions = st.sampled_from([True, False, ("x",)])
Tri = Any


def known(value: Tri) -> bool | None:
    return value if isinstance(value, bool) else None


@given(conditions, conditions)
def test_commutativity(a: Tri, b: Tri) -> None:
    assert known(rt.all3((a, b))) == known(rt.all3((b, a))) == known(rt.and3((a, b)))
    assert known(rt.any3((a, b))) == known(rt.any3((b, a))) == known(rt.or3((a, b)))


@given(conditions, conditions, conditions)
def test_associativity_and_distribution(a: Tri, b: Tri, c: Tri) -> None:
    assert known(rt.and3((rt.and3((a, b)), c))) == known(rt.and3((a, rt.and3((b, c)))))
    assert known(rt.or3((rt.or3((a, b)), c))) == known(rt.or3((a, rt.or3((b, c)))))
    assert known(rt.and3((a, rt.or3((b, c))))) == known(rt.or3((rt.and3((a, b)), rt.and3((a, c)))))


@given(conditions, conditions)
def test_de_morgan_and_absorption(a: Tri, b: Tri) -> None:
    assert known(rt.not3(rt.and3((a, b)))) == known(rt.or3((rt.not3(a), rt.not3(b))))
    assert known(rt.not3(rt.or3((a, b)))) == known(rt.and3((rt.not3(a), rt.not3(b))))
    assert known(rt.and3((a, rt.or3((a, b))))) == known(a)
    assert known(rt.or3((a, rt.and3((a, b))))) == known(a)
    assert known(rt.and3((a, True))) == known(a)
    assert rt.both(a, b) == rt.and3((a, b))


@given(st.lists(conditions, min_size=1, max_size=6), st.integers(min_value=1, max_value=6))
def test_at_least_agrees_with_its_definition(parts: list[Tri], n: int) -> None:
    true = sum(1 for p in parts if p is True)
    unknown = sum(1 for p in parts if not isinstance(p, bool))
    expected = True if true >= n else (False if true + unknown < n else None)
    assert known(rt.count3(n, parts)) == expected
    if n == 1:
        assert rt.count3(1, parts) == rt.or3(parts)
    if n == len(parts):
        assert rt.count3(n, parts) == rt.and3(parts)


@given(conditions, conditions)
def test_unknown_results_name_what_is_missing(a: Tri, b: Tri) -> None:
    for result in (rt.and3((a, b)), rt.or3((a, b)), rt.all3((a, b)), rt.any3((a, b))):
        assert isinstance(result, bool) or result == ("x",)


@given(st.lists(st.one_of(conditions, st.just(rt.NA)), max_size=5))
def test_parts_that_do_not_apply_are_left_out(parts: list[Any]) -> None:
    applying = [p for p in parts if p is not rt.NA]
    for combine, plain in ((rt.all3, rt.and3), (rt.any3, rt.or3)):
        if applying:
            assert combine(parts) == plain(applying)
        else:
            assert combine(parts) is rt.NA


@pytest.mark.parametrize(("condition", "body", "expected", "kind"), [
    (True, ("x",), ("x",), tuple), (False, True, rt.NA, rt.NotApplicable), (("c",), rt.NA, rt.NA, rt.NotApplicable),
    (("c",), True, ("c",), rt.MetOrNA), (("c",), False, ("c",), rt.NotMetOrNA),
    (("c",), ("x",), ("c", "x"), rt.Unsure),
])
def test_when_keeps_what_its_body_can_be_while_its_condition_is_unknown(
        condition: Any, body: Any, expected: Any, kind: type) -> None:
    value = rt.when3(condition, body)
    assert value == expected
    assert type(value) is kind
    # unknown through its gate: it may vanish, so `requires at least` cannot count it as applying
    if isinstance(value, tuple):
        assert isinstance(rt.at_least3(1, (value, rt.NA)), tuple)


# Every value a part can have, by the outcomes its completions can give.
SETS: dict[frozenset[str], Any] = {
    frozenset({"met"}): True, frozenset({"not met"}): False, frozenset({"na"}): rt.NA,
    frozenset({"met", "not met"}): ("x",), frozenset({"met", "not met", "na"}): rt.Unsure(("x",)),
    frozenset({"met", "na"}): rt.MetOrNA(("x",)), frozenset({"not met", "na"}): rt.NotMetOrNA(("x",)),
}


def _concrete(combine: str, n: int, outcomes: tuple[str, ...]) -> str:
    applying = [o for o in outcomes if o != "na"]
    if not applying:
        return "na"
    if combine == "all":
        return "not met" if "not met" in applying else "met"
    if combine == "any":
        return "met" if "met" in applying else "not met"
    return "met" if applying.count("met") >= n else "not met"


def _set_of(value: Any) -> frozenset[str]:
    return next(s for s, v in SETS.items() if type(v) is type(value) and (v is value or isinstance(v, tuple)))


@given(st.lists(st.sampled_from(sorted(SETS, key=sorted)), min_size=1, max_size=4), st.integers(1, 4))
def test_combinations_give_exactly_the_outcomes_their_parts_can(parts: list[frozenset[str]], n: int) -> None:
    """all3, any3 and at_least3 on parts that can each give a set of outcomes give exactly the
    outcomes some choice of the parts' outcomes gives (the parts being independent)."""
    import itertools

    values = [SETS[s] for s in parts]
    for combine, function in (("all", rt.all3), ("any", rt.any3), ("at_least", None)):
        expected = frozenset(_concrete(combine, n, choice) for choice in itertools.product(*map(sorted, parts)))
        got = rt.at_least3(n, values) if function is None else function(values)
        assert _set_of(got) == expected, (combine, n, parts, got)
