"""Laws of the semantics, checked with the reference interpreter on random protocols.

Soundness: a decision reached while facts are missing holds for every completion of them, so a
patient with a missing fact is eligible only when that fact cannot matter.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import compile_text
from crit.interpret import Interpreter
from strategies import Schema, completions, protocols, records

_SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(protocols(), st.data())
def test_decisions_with_missing_facts_hold_for_every_completion(case: tuple[str, Schema],
                                                                 data: st.DataObject) -> None:
    """Enumerates the completions of every record's missing facts (`strategies.completions`)."""
    source, schema = case
    interpreter = Interpreter(compile_text(source))
    for _ in range(8):
        record = data.draw(records(schema))
        if interpreter.validate(record):
            continue  # an implausible value: no decision (test_differential compares the problems)
        result = interpreter.evaluate(record)
        if result.decision.value == "needs review":
            assert result.missing or result.pending_judgments
            continue
        for full in completions(schema, record, limit=128):
            assert interpreter.evaluate(full).decision == result.decision, (record, full)


@_SETTINGS
@given(protocols(), st.data())
def test_missing_facts_are_exactly_the_absent_ones(case: tuple[str, Schema], data: st.DataObject) -> None:
    """Every fact a needs-review decision asks for is absent from the record."""
    source, schema = case
    interpreter = Interpreter(compile_text(source))
    record = data.draw(records(schema))
    if interpreter.validate(record):
        return  # an implausible value: no decision to ask facts for
    result = interpreter.evaluate(record)
    for path in result.missing + result.pending_judgments:
        top = path.split("[")[0].split(".")[0]
        if "[" in path:
            index = int(path.split("[")[1].split("]")[0])
            assert path.rsplit(".", 1)[1] not in record[top][index]
        elif "." in path:  # an interval's end, not recorded
            assert path == f"{top}.end" and not {"end", "ongoing"} & set(record[top])
        elif schema.fields.get(top, ("", False))[0] == "dated" and top in record:
            # a dated result measured outside its window is unknown: a current one is asked for
            assert record.get("screening") is not None
        else:
            assert top not in record or record[top] is None


BETWEEN = '''protocol B "between"

patient
  n: integer
  lo: integer
  hi: integer

inclusion
  I1 "between"
    n between lo and hi
  I2 "two comparisons"
    n >= lo and n <= hi
'''


@given(st.one_of(st.none(), st.integers(-3, 3)), st.one_of(st.none(), st.integers(-3, 3)),
       st.one_of(st.none(), st.integers(-3, 3)))
def test_between_equals_its_two_comparisons(n: int | None, lo: int | None, hi: int | None) -> None:
    interpreter = _between()
    record = {k: v for k, v in (("n", n), ("lo", lo), ("hi", hi)) if v is not None}
    result = interpreter.evaluate(record)
    assert result.outcome("I1") == result.outcome("I2")


_INTERPRETERS: dict[str, Interpreter] = {}


def _between() -> Interpreter:
    if "between" not in _INTERPRETERS:
        _INTERPRETERS["between"] = Interpreter(compile_text(BETWEEN))
    return _INTERPRETERS["between"]
