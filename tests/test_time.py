"""Issue 10, time: strict windows, recorded none, intervals, dated results and distinct counts.

Each construct is run on the generated module and on the reference interpreter, which must
agree on every outcome and reason; the expected outcomes are worked out by hand from the
README's semantics, boundaries on both sides.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from conftest import compile_text, import_module
from crit.backends.python import emit_python
from crit.english import describe, describe_field_type
from crit.interpret import Interpreter
from crit.logic.formula import conj
from crit.logic.solver import Solver

SOURCE = '''protocol T "Time"

enum Agent
  mtx "Methotrexate"
  mmf "Mycophenolate"

record Course "A course"
  agent: Agent "Agent"
  drug: text? "Drug"
  immunosuppressive: bool "Immunosuppressant"

patient
  screening: date "Screening"
  last_dose: date? "Latest dose"
  infection: interval? "Systemic infection therapy"
  stable: interval "Stable disease"
  courses: list of Course "Courses"
  hemoglobin: quantity g/L also g/dL measured within 14 days before screening "Hemoglobin"
  test: Result measured within 3 days before screening "Pregnancy test"

enum Result
  negative
  positive

inclusion
  I1 "Less than"
    last_dose less than 4 weeks before screening
  I2 "More than"
    last_dose more than 4 weeks before screening
  I3 "If there was one"
    no last_dose recorded or last_dose at least 30 days before screening
  I4 "Overlaps"
    infection overlaps 1 week before screening
  I5 "Ongoing"
    infection ongoing at screening
  I6 "Stable for more than 2 weeks"
    stable lasted more than 2 weeks by screening
  I7 "Two agents"
    count(different agent in courses where immunosuppressive) >= 2
  I8 "Two drugs"
    count(different drug in courses) >= 2
  I9 "Hemoglobin"
    hemoglobin >= 100 g/L
  I10 "Test"
    test is negative
'''

Outcomes = Callable[[dict[str, Any]], dict[str, str]]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Outcomes:
    protocol = compile_text(SOURCE)
    path = tmp_path_factory.mktemp("time") / "time_protocol.py"
    path.write_text(emit_python(protocol, SOURCE), encoding="utf-8")
    module: ModuleType = import_module(path)
    interpreter = Interpreter(protocol)

    def run(record: dict[str, Any]) -> dict[str, str]:
        record = {"screening": "2025-07-01", **record}
        mine = module.evaluate(record)
        oracle = interpreter.evaluate(record)
        assert [(c.id, c.outcome, c.reason, c.missing) for c in mine.criteria] == \
            [(c.id, c.outcome, c.reason, c.missing) for c in oracle.criteria]
        return {c.id: c.outcome.value for c in oracle.criteria}

    return run


@pytest.mark.parametrize(("day", "less", "more", "since"), [
    ("2025-07-01", "met", "not met", "not met"),      # the anchor: in the window, not before its edge
    ("2025-06-04", "met", "not met", "not met"),      # 27 days before
    ("2025-06-03", "not met", "not met", "not met"),  # exactly 4 weeks: neither less nor more
    ("2025-06-02", "not met", "met", "not met"),      # 29 days: more than 4 weeks, not yet 30 days
    ("2025-06-01", "not met", "met", "met"),          # 30 days
    ("2025-07-02", "not met", "not met", "not met"),  # after the anchor
])
def test_strict_windows(outcomes: Outcomes, day: str, less: str, more: str, since: str) -> None:
    found = outcomes({"last_dose": day})
    assert (found["I1"], found["I2"], found["I3"]) == (less, more, since)


def test_a_recorded_none_passes_if_there_was_one_and_a_missing_fact_is_unknown(outcomes: Outcomes) -> None:
    assert outcomes({"last_dose": None})["I3"] == "met"
    assert outcomes({"last_dose": None})["I1"] == "not met"
    assert outcomes({})["I3"] == "unknown"
    assert outcomes({"last_dose": "2025-05-01"})["I3"] == "met"


@pytest.mark.parametrize(("infection", "overlaps", "ongoing"), [
    ({"start": "2025-06-21", "ongoing": True}, "met", "met"),        # began 10 days before, still treated
    ({"start": "2025-06-21", "end": "2025-06-23"}, "not met", "not met"),  # ended 8 days before
    ({"start": "2025-06-21", "end": "2025-06-24"}, "met", "not met"),      # ended on the window's first day
    ({"start": "2025-07-01", "end": "2025-07-05"}, "met", "met"),    # began at screening
    ({"start": "2025-07-02", "ongoing": True}, "not met", "not met"),  # began after it
    ({"start": "2025-06-26"}, "met", "unknown"),                      # began in the window, end not recorded
    ({"start": "2025-06-01"}, "unknown", "unknown"),                  # began before, end not recorded
    ({"start": "2025-07-01"}, "met", "met"),                          # began at screening: on it, whatever its end
    (None, "not met", "not met"),                                     # recorded as none
])
def test_intervals(outcomes: Outcomes, infection: Any, overlaps: str, ongoing: str) -> None:
    found = outcomes({"infection": infection})
    assert (found["I4"], found["I5"]) == (overlaps, ongoing)


def test_a_missing_end_is_the_missing_fact() -> None:
    protocol = compile_text(SOURCE)
    result = Interpreter(protocol).evaluate({"screening": "2025-07-01", "infection": {"start": "2025-06-01"}})
    assert result.outcome("I4").value == "unknown"
    assert "infection.end" in result.missing


def test_a_fact_missing_twice_in_one_criterion_is_named_once(tmp_path: Any) -> None:
    """Two conditions on one interval's unrecorded end gave `missing: infection.end; missing:
    infection.end` in the criterion's reason."""
    protocol = compile_text(
        'protocol DUP "Twice"\n\npatient\n  screening: date\n  infection: interval? "Infection"\n\n'
        'inclusion\n  I1 "Infected for a while"\n'
        '    infection ongoing at screening or infection lasted at least 3 days by screening\n')
    path = tmp_path / "twice.py"
    path.write_text(emit_python(protocol, ""), encoding="utf-8")
    module = import_module(path)
    result = module.evaluate({"screening": "2025-01-10", "infection": {"start": "2025-01-01"}})
    [reason] = [c.reason for c in result.criteria if c.id == "I1"]
    assert reason == "missing: infection.end"


@pytest.mark.parametrize(("stable", "outcome"), [
    ({"start": "2025-06-17", "ongoing": True}, "not met"),     # 14 days to screening: not more than 2 weeks
    ({"start": "2025-06-16", "ongoing": True}, "met"),
    ({"start": "2025-06-17", "end": "2025-07-01"}, "not met"),
    ({"start": "2025-06-01", "end": "2025-06-15"}, "not met"),  # 14 days, ended before screening
    ({"start": "2025-06-01", "end": "2025-06-16"}, "met"),
    ({"start": "2025-06-01", "end": "2025-08-01"}, "met"),      # measured to screening
    ({"start": "2025-06-25"}, "not met"),                       # too short even if still going
    ({"start": "2025-06-01"}, "unknown"),                       # may have ended at once, or not
])
def test_lasted(outcomes: Outcomes, stable: Any, outcome: str) -> None:
    assert outcomes({"stable": stable})["I6"] == outcome


@pytest.mark.parametrize(("courses", "outcome"), [
    ([{"agent": "mtx", "immunosuppressive": True}, {"agent": "mtx", "immunosuppressive": True}], "not met"),
    ([{"agent": "mtx", "immunosuppressive": True}, {"agent": "mmf", "immunosuppressive": True}], "met"),
    ([{"agent": "mtx", "immunosuppressive": True}, {"agent": "mmf", "immunosuppressive": False}], "not met"),
    ([{"agent": "mtx", "immunosuppressive": True}, {"agent": "mmf"}], "unknown"),
    ([{"agent": "mtx", "immunosuppressive": True}, {"agent": "mtx"}], "not met"),  # a repeat either way
    ([{"agent": "mtx", "immunosuppressive": True}, {"immunosuppressive": True}], "unknown"),  # agent unknown
    ([{"agent": "mtx", "immunosuppressive": False}, {"immunosuppressive": False}], "not met"),
])
def test_distinct_counts(outcomes: Outcomes, courses: list[dict[str, Any]], outcome: str) -> None:
    assert outcomes({"courses": courses})["I7"] == outcome


def test_distinct_counts_skip_a_key_recorded_as_none_and_bound_an_enum(outcomes: Outcomes) -> None:
    assert outcomes({"courses": [{"drug": "a"}, {"drug": None}, {"drug": None}]})["I8"] == "not met"
    assert outcomes({"courses": [{"drug": "a"}, {}]})["I8"] == "unknown"
    assert outcomes({"courses": [{"drug": "a"}, {"drug": "b"}]})["I8"] == "met"
    # three courses of unknown agent among two agents: at most 2 different, at least 1
    three = [{"immunosuppressive": True}] * 3
    assert outcomes({"courses": three})["I7"] == "unknown"


@pytest.mark.parametrize(("measured", "outcome"), [
    ("2025-06-17", "met"), ("2025-07-01", "met"), ("2025-06-16", "unknown"), ("2025-07-02", "unknown"),
])
def test_a_stale_result_is_unknown(outcomes: Outcomes, measured: str, outcome: str) -> None:
    found = outcomes({"hemoglobin": {"value": 10.8, "unit": "g/dL", "measured": measured},
                      "test": {"value": "negative", "measured": measured}})
    assert found["I9"] == outcome
    assert found["I10"] == ("met" if "2025-06-28" <= measured <= "2025-07-01" else "unknown")


def test_dated_results_are_validated() -> None:
    interpreter = Interpreter(compile_text(SOURCE))
    problems = [str(p) for p in interpreter.validate({"hemoglobin": 100, "test": {"value": "negative"},
                                                      "stable": {"end": "2025-01-01"},
                                                      "infection": {"start": "2025-02-01", "end": "2025-01-01"}})]
    assert sorted(problems) == [
        "hemoglobin: expected {\"value\": …, \"measured\": \"YYYY-MM-DD\"}, got a number",
        "infection.end: ends (2025-01-01) before it starts (2025-02-01)",
        "stable.start: missing: an interval needs its start",
        "test.measured: missing: the date the result was measured",
    ]


def test_english() -> None:
    protocol = compile_text(SOURCE)
    lines = {c.id: describe(c.conditions()[0]) for c in protocol.criteria()}
    assert lines["I1"] == "Latest dose less than 4 weeks before Screening"
    assert lines["I3"] == "no Latest dose recorded or Latest dose at least 30 days before Screening"
    assert lines["I4"] == "Systemic infection therapy overlaps the 1 week before Screening"
    assert lines["I5"] == "Systemic infection therapy ongoing at Screening"
    assert lines["I6"] == "Stable disease lasted more than 2 weeks by Screening"
    assert lines["I7"] == ("the number of different Agent among Course entries in Courses with "
                           "Immunosuppressant is ≥ 2")
    hemoglobin = next(f for f in protocol.fields if f.name == "hemoglobin")
    assert describe_field_type(hemoglobin) == "quantity in g/L (also g/dL), measured within 14 days before screening"


def test_the_solver_decides_strict_windows_intervals_and_none() -> None:
    protocol = compile_text(SOURCE)
    solver = Solver([protocol])
    by_id = {c.id: c.conditions()[0] for c in protocol.criteria()}
    # less than and more than 4 weeks before cannot both hold; more than 4 weeks is not 30 days
    assert solver.satisfiable(conj(by_id["I1"], by_id["I2"])) is False
    assert solver.implies(by_id["I2"], by_id["I3"]) is False
    assert solver.satisfiable(conj(by_id["I1"], by_id["I3"])) is False
    # ongoing at screening implies overlapping the week before it
    assert solver.implies(by_id["I5"], by_id["I4"]) is True
    assert solver.implies(by_id["I4"], by_id["I5"]) is False


def test_a_dated_result_waiting_for_its_anchor_asks_for_the_anchor(outcomes: Outcomes) -> None:
    interpreter = Interpreter(compile_text(SOURCE))
    result = interpreter.evaluate({"hemoglobin": {"value": 120, "measured": "2025-06-30"}})
    assert result.outcome("I9").value == "unknown"
    assert "screening" in result.missing and "hemoglobin" not in result.missing
    stale = interpreter.evaluate({"screening": "2025-07-01", "hemoglobin": {"value": 120, "measured": "2025-05-30"}})
    assert "hemoglobin" in stale.missing
    assert outcomes({"hemoglobin": {"value": 120, "measured": "2025-06-30"}})["I9"] == "met"
