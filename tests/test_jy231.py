"""JY231 patient vignettes from the listing, run through the committed evaluator.

Each starts from an eligible SLE patient (examples/patient-sle.json) and changes what the
vignette is about; boundaries are taken on both sides.
"""

from __future__ import annotations

import copy
import json
from types import ModuleType
from typing import Any

import pytest

from conftest import ROOT

BASE: dict[str, Any] = json.loads((ROOT / "examples" / "patient-sle.json").read_text(encoding="utf-8"))

SSC = {"diagnosis": "SSc", "anti_dsdna": "negative", "anti_scl70": "positive", "sledai": None,
       "mrss": 20, "ild": True}
DM = {
    "diagnosis": "DM", "diagnosis_date": "2023-05-01", "anti_dsdna": "negative", "sledai": None,
    "myositis_antibodies": ["MDA5"], "rash_vas": 4.5, "active_muscle_inflammation": True,
    "mmt8": 118, "patient_global_vas": {"value": 35, "unit": "mm"}, "physician_global_vas": 3.0,
    "haq_di": 0.5, "extramuscular_vas": 0.5, "ck": {"value": 900, "uln": 200},
    "aldolase": {"value": 5, "uln": 7.6}, "ldh": {"value": 200, "uln": 250},
}


def record(*changes: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    for change in changes:
        for key, value in change.items():
            if value is None and key not in ("last_live_vaccine", "last_systemic_infection",
                                             "last_other_study"):
                out.pop(key, None)
            else:
                out[key] = value
    for key in drop:
        out.pop(key, None)
    return out


VIGNETTES: list[tuple[str, dict[str, Any], str, dict[str, str]]] = [
    ("eligible SLE patient", record(), "eligible", {"I2.1": "met", "I3.2": "not applicable"}),
    ("age 18 is inside the range", record({"age": 18}), "eligible", {"I1": "met"}),
    ("age 75 is inside the range", record({"age": 75}), "eligible", {"I1": "met"}),
    ("age 76 is outside", record({"age": 76}), "ineligible", {"I1": "not met"}),
    ("age 17 is outside", record({"age": 17}), "ineligible", {"I1": "not met"}),
    ("SLEDAI 8 meets >= 8", record({"sledai": 8}), "eligible", {"I3.1": "met"}),
    ("SLEDAI 7 fails", record({"sledai": 7}), "ineligible", {"I3.1": "not met", "I3": "not met"}),
    ("ANA 1:80 is not above 1:80, dsDNA negative", record({"ana": "1:80", "anti_dsdna": "negative"}),
     "ineligible", {"I2.1": "not met", "I2": "not met"}),
    ("ANA 1:160 alone suffices", record({"ana": "1:160", "anti_dsdna": "negative"}), "eligible", {"I2.1": "met"}),
    ("SSc with mRSS 10", record(SSC, {"mrss": 10}), "eligible", {"I3.3": "met", "I3.1": "not applicable"}),
    ("SSc with mRSS 35", record(SSC, {"mrss": 35}), "eligible", {"I3.3": "met"}),
    ("SSc with mRSS 36", record(SSC, {"mrss": 36}), "ineligible", {"I3.3": "not met"}),
    ("SSc without ILD", record(SSC, {"ild": False}), "ineligible", {"I3.3": "not met"}),
    ("hemoglobin 60 g/L is on the threshold", record({"hemoglobin": 60}), "eligible", {"I5.1": "met"}),
    ("hemoglobin 6.0 g/dL converts to exactly 60 g/L", record({"hemoglobin": {"value": 6.0, "unit": "g/dL"}}),
     "eligible", {"I5.1": "met"}),
    ("hemoglobin 5.9 g/dL is 59 g/L", record({"hemoglobin": {"value": 5.9, "unit": "g/dL"}}),
     "ineligible", {"I5.1": "not met"}),
    ("platelets 20 x 10^3/uL equals 20 x 10^9/L", record({"platelets": {"value": 20, "unit": "10^3/uL"}}),
     "eligible", {"I5.1": "met"}),
    ("AST at 3.0 x ULN", record({"ast": {"value": 120, "uln": 40}}), "eligible", {"I5.4": "met"}),
    ("AST at 3.1 x ULN", record({"ast": {"value": 124, "uln": 40}}), "ineligible", {"I5.4": "not met"}),
    ("bilirubin at 2.0 x ULN", record({"bilirubin": {"value": 42, "uln": 21}}), "eligible", {"I5.4": "met"}),
    ("LVEF 54%", record({"lvef": 54}), "ineligible", {"I5.2": "not met"}),
    ("eGFR 30 on the threshold", record({"egfr": 30}), "eligible", {"I5.3": "met"}),
    ("ECOG 2", record({"ecog": 2}), "ineligible", {"I4": "not met"}),
    ("live vaccine 3 weeks before screening", record({"last_live_vaccine": "2025-06-10"}),
     "ineligible", {"E5": "met"}),
    ("live vaccine exactly 4 weeks before screening", record({"last_live_vaccine": "2025-06-03"}),
     "ineligible", {"E5": "met"}),
    ("live vaccine 5 weeks before screening", record({"last_live_vaccine": "2025-05-27"}),
     "eligible", {"E5": "not met"}),
    ("HBsAg positive, HBV DNA within the reference range",
     record({"hbsag": "positive", "hbv_dna": {"value": 10, "uln": 20}}), "eligible", {"E4": "not met"}),
    ("HBsAg positive, HBV DNA above the reference range",
     record({"hbsag": "positive", "hbv_dna": {"value": 500, "uln": 20}}), "ineligible", {"E4": "met"}),
    ("HBcAb positive, HBV DNA not measured",
     record({"hbcab": "positive"}), "needs review", {"E4": "unknown"}),
    ("HIV positive", record({"hiv_antibody": "positive"}), "ineligible", {"E4": "met"}),
    ("a missing lab value", record(drop=("alt",)), "needs review", {"I5.4": "unknown"}),
    ("a missing lab value with a failing age", record({"age": 80}, drop=("alt",)), "ineligible",
     {"I1": "not met", "I5.4": "unknown"}),
    ("a pending judgment", record(drop=("unsuitable",)), "needs review", {"E9": "unknown"}),
    ("a severe disorder, judgment pending", record({"severe_disorders": ["cardiac"]}),
     "needs review", {"E2": "unknown"}),
    ("a severe disorder judged not to outweigh the benefit",
     record({"severe_disorders": ["cardiac"], "disorder_outweighs": False}), "eligible", {"E2": "not met"}),
    ("a severe disorder judged to outweigh the benefit",
     record({"severe_disorders": ["hepatic"], "disorder_outweighs": True}), "ineligible", {"E2": "met"}),
    ("prior CAR-T", record({"prior_car_t": True}), "ineligible", {"E1": "met"}),
    ("infection 5 days before screening", record({"last_systemic_infection": "2025-06-26"}),
     "ineligible", {"E3": "met"}),
    ("another study 2 months before screening", record({"last_other_study": "2025-05-01"}),
     "ineligible", {"E8": "met"}),
    ("another study 4 months before screening", record({"last_other_study": "2025-03-01"}),
     "eligible", {"E8": "not met"}),
    ("pregnant", record({"pregnant": True}), "ineligible", {"E6": "met"}),
    ("male patient with no pregnancy data",
     record({"sex": "male", "childbearing_potential": False}, drop=("pregnant", "breastfeeding",
            "urine_pregnancy_test", "contraception_agreed")),
     "eligible", {"I5.6": "not applicable", "E6": "not met"}),
    ("adequately treated basal cell skin cancer is excepted",
     record({"malignancies": [{"kind": "basal_cell_skin", "adequately_treated": True,
                               "radical_surgery": None}]}), "eligible", {"E7": "not met"}),
    ("localized prostate cancer without radical surgery",
     record({"sex": "male", "childbearing_potential": False,
             "malignancies": [{"kind": "localized_prostate", "adequately_treated": True,
                               "radical_surgery": None}]}), "ineligible", {"E7": "met"}),
    ("breast cancer", record({"malignancies": [{"kind": "other", "adequately_treated": True}]}),
     "ineligible", {"E7": "met"}),
    ("only one immunosuppressive course of 6 months",
     record({"treatments": BASE["treatments"][:1]}), "ineligible", {"I3": "not met"}),
    ("one course but intolerant to standard therapy",
     record({"treatments": BASE["treatments"][:1], "intolerant_to_standard_therapy": True}),
     "eligible", {"I3": "met"}),
    ("a course of under 6 months does not count",
     record({"treatments": [BASE["treatments"][1],
                            {"agent": "azathioprine", "immunosuppressive": True,
                             "start": "2024-01-01", "end": "2024-06-30"}]}),
     "ineligible", {"I3": "not met"}),
    ("DM patient meeting ①–③", record(DM), "eligible", {"I3.4": "met", "I3.4.1": "met"}),
    ("DM diagnosed under a year ago", record(DM, {"diagnosis_date": "2024-08-01"}), "ineligible",
     {"I3.4": "not met"}),
    ("DM with MMT-8 of 125", record(DM, {"mmt8": 125}), "ineligible", {"I3.4.3": "not met"}),
    ("DM with only 2 CSM abnormalities",
     record(DM, {"physician_global_vas": 1.0, "haq_di": 0.2}), "ineligible", {"I3.4.1": "not met", "I3.4.3": "met"}),
    ("DM missing the rash VAS", record(DM, drop=("rash_vas",)), "needs review", {"I3.4.1": "unknown"}),
    ("a diagnosis outside the list", record({"diagnosis": "other"}), "ineligible", {"I2": "not met"}),
]


@pytest.mark.parametrize(("name", "patient", "decision", "outcomes"), VIGNETTES, ids=[v[0] for v in VIGNETTES])
def test_vignette(jy231: ModuleType, name: str, patient: dict[str, Any], decision: str,
                  outcomes: dict[str, str]) -> None:
    assert jy231.validate(patient) == []
    result = jy231.evaluate(patient)
    assert result.decision.value == decision, [(c.id, c.outcome.value, c.reason) for c in result.criteria]
    for criterion_id, outcome in outcomes.items():
        assert result.outcome(criterion_id).value == outcome, criterion_id


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
