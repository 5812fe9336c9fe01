"""Hostile records: whatever JSON arrives, `validate` names a path and a problem, `evaluate`
raises only InvalidRecord, and a record that could not be read is never found eligible."""

from __future__ import annotations

import copy
import json
from types import ModuleType
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT

BASE: dict[str, Any] = json.loads((ROOT / "examples" / "patient-sle.json").read_text(encoding="utf-8"))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
    | st.sampled_from(["1:80", "2025-02-30", "9999-99-99", "SLE", "positive", "", "NaN"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    | st.fixed_dictionaries({"value": inner, "unit": st.sampled_from(["g/dL", "mg/dL", "", "U/L"])}),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from([*sorted(BASE), "extra", "__class__"]), json_values, max_size=4))
def test_hostile_values_are_rejected_or_read(jy231: ModuleType, changes: dict[str, Any]) -> None:
    record = copy.deepcopy(BASE)
    record.update(changes)
    problems = jy231.validate(record)
    try:
        result = jy231.evaluate(record)
    except jy231.InvalidRecord as err:
        assert problems and list(err.problems) == problems
        for problem in problems:
            assert problem.path and problem.message
        return
    assert not problems
    assert result.decision.value in ("eligible", "ineligible", "needs review")


@settings(max_examples=100, deadline=None, derandomize=True)
@given(json_values)
def test_any_json_document_as_a_record(jy231: ModuleType, document: Any) -> None:
    problems = jy231.validate(document)
    if not isinstance(document, dict):
        assert [p.path for p in problems] == ["record"]
    try:
        result = jy231.evaluate(document)
    except jy231.InvalidRecord:
        assert problems
    else:
        assert not problems and result.decision.value != "eligible"


def test_infinities_and_absurd_magnitudes(jy231: ModuleType) -> None:
    for value, message in ((float("inf"), "expected a finite number"), (1e300, "1e+300 is out of range"),
                           (10**30, f"{10**30} is out of range")):
        problems = jy231.validate({**BASE, "egfr": value})
        assert [(p.path, p.message) for p in problems] == [("egfr", message)]


def test_deeply_nested_garbage_is_one_problem(jy231: ModuleType) -> None:
    garbage: Any = []
    for _ in range(200):
        garbage = [garbage, {"x": garbage}] if len(str(garbage)) < 1000 else [garbage]
    problems = jy231.validate({**BASE, "age": garbage})
    assert [(p.path, p.message) for p in problems] == [("age", "expected a whole number, got a list")]
