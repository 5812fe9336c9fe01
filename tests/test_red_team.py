"""Regression tests for the wrong decisions the red team found (issue 8, items 1-5), each run
through the generated module (evaluate, assess and decide) and the reference interpreter.

The classes they belong to are now produced by the random-protocol generator
(tests/strategies.py) and checked by the differential and soundness tests; these pin the
original findings.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest

from conftest import compile_text
from crit.interpret import Interpreter
from crit.sources.records import RecordSyntaxError, loads

Build = Callable[[str], ModuleType]


def both(evaluator: Build, source: str) -> list[Any]:
    return [evaluator(source), Interpreter(compile_text(source))]


def decisions(evaluators: list[Any], record: dict[str, Any]) -> set[str]:
    out = {e.evaluate(record).decision.value for e in evaluators}
    module = evaluators[0]
    out |= {module.decide(record).value, module.assess(record).decision.value}
    return out


# ---- 1. `requires at least N` over `when`-gated parts -------------------------------------

GATED = '''protocol G "gated parts"

patient
  c: bool
  d: bool
  x: bool
  y: bool
  z: bool

inclusion
  I1 "always"
    true

exclusion
  E1 "an exclusion"
    E1.1 "two gated parts" requires at least 2
      when c: x
      when d: y
    z
'''


def test_a_part_unknown_only_through_its_gate_may_vanish(evaluator: Build) -> None:
    """d is false, so `when d: y` does not apply; c is missing. E1.1 is then not met if c is
    true (x is false) and not applicable if c is false, which makes E1 met and excludes: the
    patient needs review, never eligible."""
    record = {"d": False, "x": False, "y": False, "z": True}
    evaluators = both(evaluator, GATED)
    assert decisions(evaluators, record) == {"needs review"}
    for e in evaluators:
        result = e.evaluate(record)
        assert result.outcome("E1.1").value == "not met or not applicable"
        assert result.outcome("E1").value == "unknown"
        assert result.missing == ("c",)
    for c, expected in ((True, "eligible"), (False, "ineligible")):
        assert decisions(evaluators, record | {"c": c}) == {expected}


def test_a_gated_part_that_surely_applies_still_counts(evaluator: Build) -> None:
    evaluators = both(evaluator, GATED)
    record = {"c": True, "d": False, "x": False, "z": True}
    assert decisions(evaluators, record) == {"eligible"}  # E1.1 not met: one part, false


# ---- 2. quantifiers nested in quantifiers ---------------------------------------------------

NESTED = '''protocol N "nested quantifiers"

record Visit
  flagged: bool
  m: integer

record Item
  ok: bool
  n: integer

patient
  visits: list of Visit
  items: list of Item

inclusion
  I1 "a flagged visit while some item is ok"
    any(visits where flagged and any(items where ok))

exclusion
  E1 "a late visit with a large item"
    any(visits where m > 3 and count(items where n > 1) >= 1)
'''


@pytest.mark.parametrize(("record", "expected"), [
    ({"visits": [{"flagged": True, "m": 5}], "items": [{"ok": False, "n": 1}, {"ok": True, "n": 2}]}, "ineligible"),
    ({"visits": [{"flagged": True, "m": 2}], "items": [{"ok": True, "n": 5}]}, "eligible"),
    ({"visits": [{"flagged": False, "m": 9}], "items": [{"ok": True, "n": 0}]}, "ineligible"),
    ({"visits": [{"flagged": True, "m": 4}], "items": [{"ok": True, "n": 0}, {"ok": False, "n": 7}]}, "ineligible"),
])
def test_nested_quantifiers_are_separate_loops(evaluator: Build, record: dict[str, Any], expected: str) -> None:
    """The fast path once named both loops alike: the outer called itself (RecursionError, or
    an eligible patient with an exclusion met)."""
    assert decisions(both(evaluator, NESTED), record) == {expected}


# ---- 3. unit factors that no decimal writes ---------------------------------------------------

UNITS = '''protocol U "units"

patient
  weight: quantity lb also kg
  height: quantity in also cm
  alt: lab U/L

inclusion
  I1 "weight"
    weight >= 60 kg
  I2 "height"
    height <= 30 cm
  I3 "alt"
    alt <= 2.5 x ULN
'''


@pytest.mark.parametrize(("kg", "met"), [(60, True), (59, False), (Decimal("59.999999999999999999"), False),
                                        (Decimal("60.000000000000000000001"), True), (61, True)])
def test_exact_boundaries_through_conversions_that_do_not_terminate(evaluator: Build, kg: Any, met: bool) -> None:
    """60 kg is 132.277357… lb; rounded factors compared about half of exact boundaries wrongly."""
    for e in both(evaluator, UNITS):
        outcome = e.evaluate({"weight": {"value": kg, "unit": "kg"}}).outcome("I1").value
        assert outcome == ("met" if met else "not met"), kg


@pytest.mark.parametrize("cm", [30, Decimal("29.999999999999999999999999999"), Decimal("30.0000000000000000000000001")])
def test_the_reverse_conversion_is_exact_too(evaluator: Build, cm: Any) -> None:
    for e in both(evaluator, UNITS):
        outcome = e.evaluate({"height": {"value": cm, "unit": "cm"}}).outcome("I2").value
        assert outcome == ("met" if cm <= 30 else "not met"), cm


def test_many_digits_are_not_rounded_to_the_decimal_context(evaluator: Build) -> None:
    """28 significant digits was Decimal's default: 100.0…01 × 1 must stay above 2.5 × 40."""
    value = Decimal("100.0000000000000000000000000000000001")
    for e in both(evaluator, UNITS):
        assert e.evaluate({"alt": {"value": value, "uln": 40}}).outcome("I3").value == "not met"
        assert e.evaluate({"alt": {"value": 100, "uln": 40}}).outcome("I3").value == "met"


# ---- 4. JSON numbers are read from their text ------------------------------------------------

def test_json_numbers_never_pass_through_binary_floats(evaluator: Build) -> None:
    record = loads('{"alt": {"value": 100.00000000000000001, "uln": 40}, "weight": 132.27735731092653}')
    assert record["alt"]["value"] == Decimal("100.00000000000000001")
    for e in both(evaluator, UNITS):
        result = e.evaluate(record)
        assert result.outcome("I3").value == "not met"  # a float would have read 100.0
        assert result.outcome("I1").value == "not met"  # 132.27735731092653 lb < 60 kg


def test_integers_written_with_a_point_are_whole_numbers(evaluator: Build) -> None:
    module = evaluator('protocol A "a"\n\npatient\n  age: integer\n\ninclusion\n  I1 "adult"\n    age >= 18\n')
    assert module.evaluate(loads('{"age": 18.0}')).outcome("I1").value == "met"
    assert [str(p) for p in module.validate(loads('{"age": 18.5}'))] == ["age: expected a whole number, got a number"]


@pytest.mark.parametrize("text", ['{"alt": NaN}', '{"alt": Infinity}', '{"alt": -Infinity}'])
def test_non_finite_numbers_are_not_json(text: str) -> None:
    with pytest.raises(RecordSyntaxError):
        loads(text)


# ---- 5. duplicate keys ----------------------------------------------------------------------

@pytest.mark.parametrize(("text", "problem"), [
    ('{"age": 10, "age": 30}', "age: given more than once"),
    ('{"alt": {"value": 1, "uln": 2, "value": 3}}', "alt.value: given more than once"),
    ('[{"id": "a"}, {"t": [{"x": 1, "x": 1}]}]', "[1].t[0].x: given more than once"),
])
def test_a_key_given_twice_is_a_problem_by_path(text: str, problem: str) -> None:
    with pytest.raises(RecordSyntaxError) as caught:
        loads(text)
    assert [str(p) for p in caught.value.problems] == [problem]


def test_records_too_deep_or_too_long_are_problems_not_crashes() -> None:
    with pytest.raises(RecordSyntaxError, match="nested more than 64 levels"):
        loads("[" * 3000 + "]" * 3000)
    with pytest.raises(RecordSyntaxError, match="longer than any measurement"):
        loads('{"age": ' + "9" * 5000 + "}")
    assert loads("\ufeff{}") == {}


# ---- found by the long differential run: decide()'s early exit under an unknown gate ----------

GATED_EXIT = '''protocol D "an early exit under an unknown gate"

patient
  g: bool
  c: bool
  d: bool
  x: bool
  y: bool

inclusion
  I1 "two parts" requires at least 2
    I1.1 "gated" when g
      when c: not x
    when d: y
'''


def test_decide_exits_early_only_as_when_would(evaluator: Build) -> None:
    """I1.1 settles (not met) if g holds and does not apply if g is false; with g missing it
    may vanish, and with it every part of I1: decide() once called I1 not met (ineligible)."""
    evaluators = both(evaluator, GATED_EXIT)
    record = {"c": True, "x": True, "d": False, "y": True}
    assert decisions(evaluators, record) == {"needs review"}
    assert decisions(evaluators, record | {"g": False}) == {"eligible"}
    assert decisions(evaluators, record | {"g": True}) == {"ineligible"}


# ---- found by the second red team: exponents no measurement needs -------------------------

@pytest.mark.parametrize("text", ['{"alt": {"value": 1e999999999, "uln": 40}}', '{"weight": -1E+999999999}',
                                  '{"weight": {"value": 1e-999999999, "unit": "kg"}}'])
def test_extreme_exponents_are_refused_when_read(text: str) -> None:
    """1e999999999 overflowed (exit 4, the cohort lost) and 1e-999999999 g/dL made the
    conversion to g/L run forever."""
    with pytest.raises(RecordSyntaxError, match="beyond any measurement"):
        loads(text)


@pytest.mark.parametrize("value", [Decimal("1e999999999"), Decimal("-1e999999999"), Decimal("1e-999999999"),
                                   Decimal("1e-41"), 1e-171])
def test_extreme_numbers_from_python_are_problems_not_crashes(evaluator: Build, value: Any) -> None:
    for e in both(evaluator, UNITS):
        for record in ({"weight": value}, {"weight": {"value": value, "unit": "kg"}},
                       {"alt": {"value": value, "uln": 40}}):
            problems = [str(p) for p in e.validate(record)]
            assert len(problems) == 1 and "out of range" in problems[0], (record, problems)
