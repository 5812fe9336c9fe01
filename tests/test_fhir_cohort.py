"""The FHIR path against the JSON path, record by record: `benchmarks/fhir_cohort.py` writes the
patients of the synthetic JSON cohort as a FHIR bulk export (with the manual-entry file), and
`crit screen --from fhir` must decide each exactly as `crit screen` decides the JSON record:
the same decision, deciding criteria, missing facts and pending judgments. The generated
resources and the committed examples (`examples/fhir/`) are valid FHIR R4B (fhir.resources),
and the examples are what the generator writes."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import fhirpathpy
import pytest
from click.testing import CliRunner
from fhir.resources.R4B import get_fhir_model_class
from fhirpathpy.models import models

from conftest import ROOT
from crit.process import Failure
from crit.screening.screen import screen_command

BENCHMARKS = ROOT / "benchmarks"
JY231 = ROOT / "protocols" / "jy231.crit"
EXAMPLES = ROOT / "examples" / "fhir"
# The examples: an eligible patient, one needing review (a missing LVEF, a pending judgment), one
# ineligible (hemoglobin), one needing review for a course without an end date, and one whose AST
# comes in a unit the mapping does not accept (a problem row). examples/fhir/README.md says so.
EXAMPLE_RECORDS = (3, 7, 10, 12, 1110)
SIZE = 100  # patients compared: every decision and every kind of field, in a few seconds
COMPARED = ("decision", "decided_by", "missing", "pending_judgments")


def _generator() -> tuple[ModuleType, ModuleType]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import cohort
        import fhir_cohort
    finally:
        sys.path.remove(str(BENCHMARKS))
    return cohort, fhir_cohort


cohort, fhir_cohort = _generator()


def screen(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(screen_command, ["-q", *(str(a) for a in args)])
    if isinstance(result.exception, Failure):
        return result.exception.code, result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def translator() -> Any:
    return fhir_cohort.translator()


@pytest.fixture(scope="module")
def patients(translator: Any) -> list[Any]:
    return list(fhir_cohort.fhir_cohort(SIZE, invalid=0, translate=translator))


@pytest.fixture(scope="module")
def screened(tmp_path_factory: pytest.TempPathFactory, patients: list[Any]) -> tuple[list[Any], list[Any]]:
    """The JSON cohort and its FHIR export, each screened: (JSON rows, FHIR rows)."""
    work = tmp_path_factory.mktemp("fhir-cohort")
    cohort.write(work / "cohort.jsonl", SIZE, invalid=0)
    fhir_cohort.write(iter(patients), work / "export", "ndjson", work / "manual.jsonl", window=40)
    code, output = screen(JY231, work / "cohort.jsonl", "-o", work / "json.jsonl")
    assert code == 0, output
    code, output = screen("--from", "fhir", JY231, work / "export", "--manual", work / "manual.jsonl",
                          "-o", work / "fhir.jsonl")
    assert code in (0, 3), output
    return rows(work / "json.jsonl"), rows(work / "fhir.jsonl")


def by_hand(patient: Any, translator: Any) -> bool:
    """Whether the patient's manual entry gives a field the mapping reads from FHIR (a member of
    it FHIR cannot tell apart: diagnosis "other")."""
    return any(translator.mapping.field(name).manual is None for name in patient.manual if name != "id")


def test_the_fhir_export_holds_the_json_cohorts_patients(patients: list[Any]) -> None:
    records = list(cohort.cohort(SIZE, invalid=0))
    assert [p.record for p in patients] == records
    assert [p.resources[0]["id"] for p in patients] == [r["id"] for r in records]
    assert all(p.resources[0]["resourceType"] == "Patient" for p in patients)
    kinds = Counter(r["resourceType"] for p in patients for r in p.resources)
    assert set(kinds) >= {"Patient", "Encounter", "Observation", "Condition", "MedicationStatement", "Immunization",
                          "ResearchSubject"}


def test_fhir_and_json_give_the_same_result_rows(patients: list[Any], screened: tuple[list[Any], list[Any]],
                                                translator: Any) -> None:
    """Every patient: the same decision, deciding criteria, missing facts and pending judgments."""
    json_rows, fhir_rows = screened
    assert len(fhir_rows) == len(json_rows) == len(patients) == SIZE
    differences = []
    compared: Counter[str] = Counter()
    for patient, mine, theirs in zip(patients, json_rows, fhir_rows, strict=True):
        assert theirs["id"] == mine["id"] == patient.id
        assert patient.left_out is None and patient.expect_error is None  # no record broken on purpose here
        wrong = {key: (mine[key], theirs[key]) for key in COMPARED if mine[key] != theirs[key]}
        if wrong:
            differences.append(f"{patient.id} (JSON, FHIR): {wrong} {theirs['error'] or ''}")
        compared[mine["decision"]] += 1
        compared["by hand"] += by_hand(patient, translator)
    assert not differences, f"{len(differences)} of {SIZE} patients differ:\n" + "\n".join(differences)
    # every kind of row, and a diagnosis FHIR cannot tell apart, given by hand
    assert {"eligible", "ineligible", "needs review"} <= set(compared) and compared["by hand"], compared


def _broken_unit(record: dict[str, Any]) -> dict[str, Any]:
    return dict(record, ast={"value": 30, "uln": 40, "unit": "IU/mL"})


def _broken_date(record: dict[str, Any]) -> dict[str, Any]:
    return dict(record, screening="2025-02-30")


@pytest.mark.parametrize("broken", [
    pytest.param(_broken_unit, id="unit"),
    pytest.param(_broken_date, id="impossible-date"),
])
def test_a_record_broken_on_purpose_is_an_error_row_both_ways(tmp_path: Path, translator: Any, broken: Any) -> None:
    """The JSON cohort's unreadable records that FHIR can say (a unit the mapping does not take,
    an impossible date) are error rows from FHIR too, naming the field."""
    record = broken(next(cohort.cohort(1)))
    patient = translator.patient(1, record, 231)
    assert patient.expect_error is not None and patient.left_out is None
    (tmp_path / "json.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    fhir_cohort.write(iter([patient]), tmp_path / "fhir", "bundles", tmp_path / "manual.jsonl")
    assert screen(JY231, tmp_path / "json.jsonl", "-o", tmp_path / "a.jsonl")[0] == 3
    assert screen("--from", "fhir", JY231, tmp_path / "fhir", "--manual", tmp_path / "manual.jsonl",
                  "-o", tmp_path / "b.jsonl")[0] == 3
    (mine,), (theirs,) = rows(tmp_path / "a.jsonl"), rows(tmp_path / "b.jsonl")
    assert mine["decision"] == theirs["decision"] == "error"
    field = patient.expect_error.split(":")[0]
    assert mine["error"].startswith(field) and theirs["error"].startswith(field), (mine["error"], theirs["error"])


def test_records_fhir_cannot_say_are_left_out_with_a_reason(translator: Any) -> None:
    """Every kind of unreadable JSON record is either an expected FHIR problem or left out, by
    name, never silently compared as something else."""
    record = next(cohort.cohort(1))
    cases = {
        "hemoglobn": (dict(record, hemoglobn=1), "left_out", "hemoglobn: not a field of the schema"),
        "age": (dict(record, age="forty"), "left_out", "age: 'forty' is not an age"),
        "diagnosis": (dict(record, diagnosis="Lupus"), "left_out", "diagnosis: 'Lupus' is not one of"),
        "screening": (dict(record, screening="2025-02-30"), "expect_error", "screening: '2025-02-30' is not a date"),
        "unit": (dict(record, ast={"value": 30, "uln": 40, "unit": "IU/mL"}), "expect_error",
                 "ast: unit 'IU/mL' is not one the mapping accepts"),
    }
    for name, (broken, kind, reason) in cases.items():
        patient = translator.patient(1, broken, 231)
        assert str(getattr(patient, kind)).startswith(reason), (name, patient.left_out, patient.expect_error)
    clean = translator.patient(1, record, 231)
    assert clean.left_out is None and clean.expect_error is None


def test_every_value_path_of_the_mapping_reads_back_what_the_generator_writes(translator: Any) -> None:
    """The generator writes each value where the mapping's FHIRPath reads it (fhirpathpy, R4)."""
    paths = {(f.resource, p) for f in translator.mapping.fields for p in (f.value, f.uln, f.start, f.end) if p} | {
        (f.resource, i.value) for f in translator.mapping.fields for i in f.items if i.value}
    assert len(paths) >= 8
    for kind, path in sorted(paths):
        for alternative in fhir_cohort.alternatives(path):
            resource: dict[str, Any] = {"resourceType": kind}
            written = {"value": 7, "unit": "g/L"} if "Quantity" in alternative and not alternative.endswith(".value") \
                else "2024-05-06"
            fhir_cohort.put(resource, fhir_cohort.choice(alternative, "string"), written)
            assert fhirpathpy.evaluate(resource, path, {}, models["r4"]) == [written], (path, alternative, resource)


def test_generated_resources_are_valid_fhir_r4b(patients: list[Any]) -> None:
    """Every resource of the first patients validates against fhir.resources' R4B models."""
    checked = 0
    for patient in patients[:60]:
        for resource in patient.resources:
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            checked += 1
    assert checked > 1500
    bundle = fhir_cohort.bundle(patients[0])
    assert get_fhir_model_class("Bundle").model_validate(bundle).entry


def test_an_impossible_date_is_invalid_fhir(translator: Any) -> None:
    record = dict(next(cohort.cohort(1)), screening="2025-02-30")
    patient = translator.patient(1, record, 231)
    visits = [r for r in patient.resources if r["resourceType"] == "Encounter" and r["period"]["start"] == "2025-02-30"]
    assert len(visits) == 1
    with pytest.raises(ValueError):
        get_fhir_model_class("Encounter").model_validate(visits[0])


def test_the_same_seed_gives_the_same_export(tmp_path: Path, patients: list[Any]) -> None:
    again = list(fhir_cohort.fhir_cohort(20, invalid=0))
    assert [p.resources for p in again] == [p.resources for p in patients[:20]]
    other = next(fhir_cohort.fhir_cohort(1, seed=7))
    assert other.record == next(cohort.cohort(1, seed=7))


def test_the_examples_are_what_the_generator_writes(tmp_path: Path) -> None:
    command = [str(max(EXAMPLE_RECORDS)), "--only", ",".join(map(str, EXAMPLE_RECORDS)), "--layout", "bundles",
               "-o", str(tmp_path / "fhir"), "--manual", str(tmp_path / "fhir" / "manual.jsonl")]
    assert fhir_cohort.main(command) == 0
    written = sorted(p.name for p in (tmp_path / "fhir").iterdir())
    committed = sorted(p.name for p in EXAMPLES.iterdir() if p.name != "README.md")
    assert committed == written
    for name in written:
        fresh = (tmp_path / "fhir" / name).read_text(encoding="utf-8")
        assert (EXAMPLES / name).read_text(encoding="utf-8") == fresh, \
            f"examples/fhir/{name} is not what `python benchmarks/fhir_cohort.py {' '.join(command)}` writes"
    assert " ".join(command[:6]) in (EXAMPLES / "README.md").read_text(encoding="utf-8")


def test_the_examples_are_valid_r4b_bundles() -> None:
    bundles = sorted(EXAMPLES.glob("*.json"))
    assert len(bundles) == len(EXAMPLE_RECORDS)
    for path in bundles:
        bundle = get_fhir_model_class("Bundle").model_validate_json(path.read_text(encoding="utf-8"))
        assert bundle.entry and bundle.entry[0].resource.get_resource_type() == "Patient"


def test_the_examples_screen_as_their_json_records(tmp_path: Path) -> None:
    code, output = screen("--from", "fhir", JY231, EXAMPLES, "--manual", EXAMPLES / "manual.jsonl",
                          "-o", tmp_path / "fhir.jsonl")
    assert code == 3, output  # the problem row
    fhir_rows = rows(tmp_path / "fhir.jsonl")
    records = [r for n, r in enumerate(cohort.cohort(max(EXAMPLE_RECORDS)), start=1) if n in EXAMPLE_RECORDS]
    (tmp_path / "json.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    code, output = screen(JY231, tmp_path / "json.jsonl", "-o", tmp_path / "json-rows.jsonl")
    json_rows = rows(tmp_path / "json-rows.jsonl")
    assert [r["decision"] for r in fhir_rows] == ["eligible", "needs review", "ineligible", "needs review", "error"]
    for mine, theirs in zip(json_rows, fhir_rows, strict=True):
        assert theirs["id"] == mine["id"]
        assert {k: theirs[k] for k in COMPARED} == {k: mine[k] for k in COMPARED}
    assert "ast: unit '[IU]/mL' of Observation/" in fhir_rows[-1]["error"]
