"""JY231 patient vignettes from the listing, run through the committed evaluator.

The vignettes themselves are the protocol's own tests, `protocols/tests/jy231.tests.json`
(run them with `crit test`): each starts from an eligible SLE patient
(examples/patient-sle.json) and changes what the vignette is about; boundaries are taken on
both sides. Here they also run on the committed `generated/jy231.py`, next to the tests of
the evaluator's API (missing facts, reasons, record validation).
"""

from __future__ import annotations

import copy
import json
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import ROOT
from crit.tools import protocol_tests
from crit.tools.protocol_tests import Case, read_tests, run_case

BASE: dict[str, Any] = json.loads((ROOT / "examples" / "patient-sle.json").read_text(encoding="utf-8"))


def record(*changes: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    for change in changes:
        for key, value in change.items():
            if value is None and key not in ("last_live_vaccine", "systemic_infection", "other_study"):
                out.pop(key, None)
            else:
                out[key] = value
    for key in drop:
        out.pop(key, None)
    return out


TESTS = ROOT / "protocols" / "tests" / "jy231.tests.json"
CASES = read_tests(TESTS).cases
_PROFILES = json.loads(TESTS.read_text(encoding="utf-8"))["profiles"]

# The same vignettes in the shapes other tests use (tests/test_differential.py): profiles as
# changes for `record` (None drops a field), and (name, record, decision, outcomes).
SSC: dict[str, Any] = {**_PROFILES["SSc"]["set"], **dict.fromkeys(_PROFILES["SSc"]["drop"])}
DM: dict[str, Any] = {**_PROFILES["DM"]["set"], **dict.fromkeys(_PROFILES["DM"]["drop"])}
VIGNETTES: list[tuple[str, Any, str, dict[str, str]]] = [
    (case.name, case.record, case.expect or "", dict(case.outcomes)) for case in CASES]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_vignette(jy231: ModuleType, case: Case) -> None:
    """Each vignette of protocols/tests/jy231.tests.json, on the committed evaluator."""
    assert run_case(jy231, case).failures == []


def test_the_vignettes_pass_through_crit_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same file through `crit test`, on an evaluator compiled from protocols/jy231.crit."""
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(protocol_tests.test_command, ["protocols/tests/jy231.tests.json"])
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(f"{len(CASES)} passed, 0 failed\n")


def test_missing_lab_names_the_missing_fact(jy231: ModuleType) -> None:
    result = jy231.evaluate(record(drop=("alt",)))
    assert result.missing == ("alt",)
    assert result.pending_judgments == ()
    row = next(c for c in result.criteria if c.id == "I5.4")
    assert row.reason == "missing: alt"


def test_pending_judgment_is_listed_apart_from_missing_data(jy231: ModuleType) -> None:
    result = jy231.evaluate(record(drop=("unsuitable",)))
    assert result.missing == ()
    assert result.pending_judgments == ("unsuitable",)


def test_decided_patients_list_no_missing_facts(jy231: ModuleType) -> None:
    result = jy231.evaluate(record({"age": 80}, drop=("alt", "unsuitable")))
    assert result.decision.value == "ineligible"
    assert result.missing == () and result.pending_judgments == ()


def test_an_empty_record_needs_review_and_lists_what_to_collect(jy231: ModuleType) -> None:
    result = jy231.evaluate({})
    assert result.decision.value == "needs review"
    assert "age" in result.missing and "unsuitable" in result.pending_judgments


def test_reasons_read_like_the_protocol(jy231: ModuleType) -> None:
    result = jy231.evaluate(record({"hemoglobin": {"value": 5.9, "unit": "g/dL"}}))
    row = next(c for c in result.criteria if c.id == "I5.1")
    assert row.reason == "hemoglobin 59 g/L < 60 g/L"
    result = jy231.evaluate(record({"ast": {"value": 124, "uln": 40}}))
    row = next(c for c in result.criteria if c.id == "I5.4")
    assert row.reason == "ast 124 U/L > 3.0 × ULN (120 U/L)"


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"age": "forty"}, "age", "expected a whole number, got text"),
        ({"age": 40.5}, "age", "expected a whole number, got a number"),
        ({"screening": "2025-02-30"}, "screening", "'2025-02-30' is not a real date"),
        ({"screening": "01/07/2025"}, "screening", "'01/07/2025' is not a date; write YYYY-MM-DD"),
        ({"hemoglobin": {"value": 10, "unit": "mg/dL"}}, "hemoglobin.unit",
         "unknown unit 'mg/dL'; use g/L, g/dL"),
        ({"diagnosis": "Lupus"}, "diagnosis", "'Lupus' is not one of SLE, SS, SSc, DM, AAV, other"),
        ({"diagnosis": "SLe"}, "diagnosis",
         "'SLe' is not one of SLE, SS, SSc, DM, AAV, other; did you mean 'SLE'?"),
        ({"ana": "80"}, "ana", "expected a titer such as \"1:160\", got '80'"),
        ({"ast": 32}, "ast", "expected {\"value\": …, \"uln\": …}, got a number"),
        ({"hemoglobin": float("nan")}, "hemoglobin", "expected a finite number"),
        ({"hemogobin": 100}, "hemogobin", "unknown field; did you mean 'hemoglobin'?"),
        ({"treatments": [{"agent": "x", "immunosuppressive": "yes", "start": "2020-01-01",
                          "end": "2021-01-01"}]}, "treatments[0].immunosuppressive",
         "expected true or false, got text"),
    ],
)
def test_validate_names_the_field_and_problem(jy231: ModuleType, change: dict[str, Any], path: str,
                                              message: str) -> None:
    problems = jy231.validate(record(change))
    assert [(p.path, p.message) for p in problems] == [(path, message)]
    with pytest.raises(jy231.InvalidRecord):
        jy231.evaluate(record(change))


@pytest.mark.parametrize("bad", [None, [], "patient", 42, [{"age": 40}]])
def test_a_record_that_is_not_an_object_is_rejected(jy231: ModuleType, bad: object) -> None:
    problems = jy231.validate(bad)
    assert len(problems) == 1 and problems[0].path == "record"
    with pytest.raises(jy231.InvalidRecord):
        jy231.evaluate(bad)
