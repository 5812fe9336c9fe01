"""The generated module and the reference interpreter must agree, on random protocols with
random records and on JY231: every decision, criterion outcome, reason and missing fact.

CI runs a fixed-seed slice. A longer run (documented in the README):
    CRIT_DIFF_EXAMPLES=2000 python -m pytest tests/test_differential.py -p no:randomly -q
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, compile_text, import_module
from crit.driver import load
from crit.emit.python import emit_python
from crit.interpret import Interpreter
from strategies import Schema, protocols, records

EXAMPLES = int(os.environ.get("CRIT_DIFF_EXAMPLES", "40"))
RECORDS_PER_PROTOCOL = 25


def results(screening: Any) -> tuple[Any, ...]:
    return (
        screening.decision.value, screening.missing, screening.pending_judgments,
        tuple((c.id, c.outcome.value, c.reason, c.missing) for c in screening.criteria),
    )


def agree(module: Any, interpreter: Interpreter, record: dict[str, Any]) -> None:
    problems = [str(p) for p in module.validate(record)]
    assert problems == [str(p) for p in interpreter.validate(record)], record
    if problems:
        return
    assert results(module.evaluate(record)) == results(interpreter.evaluate(record)), record


@settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 40,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(protocols(), st.data())
def test_random_protocols_agree(tmp_path_factory: Any, case: tuple[str, Schema], data: st.DataObject) -> None:
    source, schema = case
    protocol = compile_text(source)
    path: Path = tmp_path_factory.mktemp("diff") / "random_protocol.py"
    path.write_text(emit_python(protocol, source), encoding="utf-8")
    module = import_module(path)
    interpreter = Interpreter(protocol)
    for _ in range(RECORDS_PER_PROTOCOL):
        agree(module, interpreter, data.draw(records(schema)))




@settings(max_examples=EXAMPLES * 5, deadline=None, derandomize=EXAMPLES <= 40)
@given(st.data())
def test_jy231_agrees_with_the_interpreter(jy231: Any, data: st.DataObject) -> None:
    from test_jy231 import BASE, DM, SSC

    record = dict(BASE)
    for change in data.draw(st.lists(st.sampled_from([SSC, DM]), max_size=1)):
        record.update({k: v for k, v in change.items() if v is not None})
    for key in data.draw(st.lists(st.sampled_from(sorted(record)), max_size=6)):
        record.pop(key, None)
    overrides = _jy231_overrides()
    for key in data.draw(st.lists(st.sampled_from(sorted(overrides)), max_size=4, unique=True)):
        record[key] = data.draw(st.sampled_from(overrides[key]))
    agree(jy231, _jy231_interpreter(), record)


_CACHE: dict[str, Any] = {}


def _jy231_interpreter() -> Interpreter:
    if "jy231" not in _CACHE:
        _CACHE["jy231"] = Interpreter(load(ROOT / "protocols" / "jy231.crit"))
    interpreter: Interpreter = _CACHE["jy231"]
    return interpreter


def _jy231_overrides() -> dict[str, list[Any]]:
    return {
        "age": [17, 18, 75, 76], "sledai": [7, 8], "mrss": [9, 10, 35, 36],
        "hemoglobin": [59, 60, {"value": 5.9, "unit": "g/dL"}, {"value": 6, "unit": "g/dL"}],
        "ast": [{"value": 120, "uln": 40}, {"value": 124, "uln": 40}],
        "last_live_vaccine": [None, "2025-06-03", "2025-06-02", "2025-06-10"],
        "hbsag": ["positive", "negative"], "hbv_dna": [{"value": 10, "uln": 20}, {"value": 30, "uln": 20}],
        "diagnosis": ["SLE", "SS", "SSc", "DM", "AAV", "other"], "unsuitable": [True, False],
        "treatments": [[], [{"agent": "x", "immunosuppressive": True, "start": "2024-01-01"}]],
        "malignancies": [[{"kind": "other", "adequately_treated": True}],
                         [{"kind": "ductal_cis", "adequately_treated": True, "radical_surgery": None}]],
    }


def test_interpreter_and_module_agree_on_every_vignette(jy231: Any) -> None:
    from test_jy231 import VIGNETTES

    interpreter = _jy231_interpreter()
    for _, record, decision, _outcomes in VIGNETTES:
        agree(jy231, interpreter, record)
        assert interpreter.evaluate(record).decision.value == decision


def test_interpreter_rejects_what_the_module_rejects(jy231: Any) -> None:
    interpreter = _jy231_interpreter()
    for bad in (None, [], {"age": "x"}, {"hemoglobin": {"value": 1, "unit": "mg/dL"}}, {"nope": 1}):
        agree(jy231, interpreter, bad)  # type: ignore[arg-type]


def test_the_generator_exercises_every_operator() -> None:
    """A differential test is only as good as its programs: together they use every construct."""
    from hypothesis import find

    texts: list[str] = []

    def collect(case: tuple[str, Schema]) -> bool:
        texts.append(case[0])
        return len(texts) >= 150

    find(protocols(), collect, settings=settings(max_examples=400, database=None, derandomize=True))
    corpus = "\n".join(texts)
    for construct in (" and ", " or ", "not ", "at least", "when ", "between", " is a", " is not ",
                      "is any of", "has all of", "has any of", " x ULN", "1:", " g/dL", " U/L", "within",
                      "at least 1", "any(", "all(", "count(", "requires any", "requires at least", "note ",
                      "define d0", ": judgment", "date?", "I1.1"):
        assert construct in corpus, construct
