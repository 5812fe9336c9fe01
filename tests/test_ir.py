"""The IR's closed kinds and its one generic walk: `narrow` refuses what no kind allows, and
`walk` reaches every node a reflective walk over the dataclasses reaches."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import get_args

import pytest

from conftest import ROOT, compile_text
from crit import ir
from crit.check.units import parse_unit
from crit.driver import Loaded, load
from crit.english import describe_type


def _values(alias: object) -> set[str]:
    """The strings a (union of) Literal alias admits."""
    out: set[str] = set()
    for arg in get_args(alias):
        out |= _values(arg) if not isinstance(arg, str) else {arg}
    return out


@pytest.mark.parametrize(("alias", "values"), [
    (ir.BaseKind, ir.BASE_TYPES), (ir.TypeKind, ir.TYPE_KINDS), (ir.CompareOp, ir.COMPARE_OPS),
    (ir.MemberKind, ir.MEMBER_KINDS), (ir.WindowKind, ir.WINDOW_KINDS), (ir.WindowUnit, ir.WINDOW_UNITS),
    (ir.Direction, ir.DIRECTIONS), (ir.AtLeastKind, ir.AT_LEAST_KINDS),
    (ir.QuantifiedKind, ir.QUANTIFIED_KINDS), (ir.Combine, ir.COMBINES),
])
def test_each_run_time_tuple_is_its_literal(alias: object, values: tuple[str, ...]) -> None:
    assert set(values) == _values(alias) and len(values) == len(set(values))


def test_narrow_keeps_a_kind_and_refuses_anything_else() -> None:
    op: ir.CompareOp = ir.narrow(">=", ir.COMPARE_OPS)
    assert op == ">="
    with pytest.raises(ValueError, match="'=>' is not one of"):
        ir.narrow("=>", ir.COMPARE_OPS)
    with pytest.raises(ValueError):
        ir.narrow("fortnights", ir.WINDOW_UNITS)


def _reflective(node: object) -> Iterator[object]:
    """Every IR node under `node` found by reading the dataclasses' fields (what lint used to
    do by hand): the oracle `ir.walk` is checked against."""
    yield node
    for f in dataclasses.fields(node):  # type: ignore[arg-type]
        value = getattr(node, f.name)
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, ir.Node):
                yield from _reflective(item)


def test_walk_reaches_every_node_of_jy231() -> None:
    protocol = load(ROOT / "protocols/jy231.crit", Loaded())
    roots = [e for c in protocol.criteria() for e in c.conditions()]
    roots += [line.expr for d in protocol.definitions for line in d.lines()]
    kinds: set[type] = set()
    for root in roots:
        walked = list(ir.walk(root))
        assert [id(n) for n in walked] == [id(n) for n in _reflective(root)]
        kinds |= {type(n) for n in walked}
    # JY231 exercises nearly every kind of node, so the comparison above means something.
    assert {ir.Compare, ir.Const, ir.FieldRef, ir.Member, ir.Window, ir.DistinctCount, ir.Overlaps, ir.And, ir.Or,
            ir.Not, ir.DefinitionRef, ir.UlnCompare} <= kinds


def test_walk_goes_into_a_list_items_condition_and_both_sides_of_a_comparison() -> None:
    protocol = compile_text('''protocol W "Walk"

record Drug
  strong: bool "Strong"
  start: date "Start"

patient
  screening: date "Screening"
  onset: date "Onset"
  drugs: list of Drug "Drugs"

inclusion
  I1 "Uses"
    onset between 2000-01-01 and screening or count(drugs where strong and start within 4 weeks before screening) >= 1
''')
    (expr,) = protocol.inclusion[0].conditions()
    refs = [(n.scope, n.field.name) for n in ir.walk(expr) if isinstance(n, ir.FieldRef)]
    assert refs == [("patient", "onset"), ("patient", "screening"), ("patient", "drugs"),
                    ("item", "strong"), ("item", "start"), ("patient", "screening")]
    assert [n.display for n in ir.walk(expr) if isinstance(n, ir.Const)] == ["2000-01-01"]


def test_conditions_are_applies_lines_and_when_conditions_but_not_sub_criteria() -> None:
    protocol = compile_text('''protocol C "Conditions"

patient
  age: integer "Age"
  pregnant: bool "Pregnant"
  female: bool "Female"
  adult: bool "Adult"

inclusion
  I1 "Parts" when adult
    age >= 18
    when female: not pregnant
    I1.1 "Nested"
      age <= 75
''')
    shown = [type(e).__name__ for e in protocol.inclusion[0].conditions()]
    assert shown == ["FieldRef", "Compare", "FieldRef", "Not"]
    assert [type(e).__name__ for e in protocol.inclusion[0].children()[0].conditions()] == ["Compare"]


def test_every_type_kind_has_english() -> None:
    enum = ir.EnumType("Dx", None, (("SLE", None),))
    types: list[ir.Type] = [*(ir.Scalar(kind) for kind in ir.BASE_TYPES), ir.Measure("quantity", parse_unit("g/L")),
                            ir.Measure("lab", parse_unit("g/L")), ir.EnumOf(enum), ir.SetOf(enum), ir.ListOf("Drug")]
    shown = {t.kind: describe_type(t) for t in types}
    assert tuple(shown) == ir.TYPE_KINDS
    assert shown == {
        "bool": "yes or no", "integer": "whole number", "decimal": "number", "text": "text", "date": "date",
        "titer": "titer (1:N)", "judgment": "judgment (recorded by the investigator)",
        "interval": "interval (start, and end or ongoing)",
        "quantity": "quantity in g/L", "lab": "lab value in g/L with its own ULN",
        "enum": "one of Dx", "set": "set of Dx", "list": "list of Drug",
    }
