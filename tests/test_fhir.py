"""FHIR input (`crit.sources.fhir`, `--from fhir`): grouping a Bundle, a directory of bundles and a
bulk export by patient; every mapping key as the JY231 mapping uses it, on hand-written resources
(tests/fhir); problems by field and resource; the command line's rows, record and sources."""

from __future__ import annotations

import copy
import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from conftest import ROOT
from crit import cli
from crit.pipeline import compile_or_fail
from crit.process import Failure
from crit.sources import fhir, fhir_mapping

JY231 = ROOT / "protocols" / "jy231.crit"
MAPPING = ROOT / "protocols" / "schemas" / "autoimmune.fhir.toml"
DATA = ROOT / "tests" / "fhir"
BUNDLE = DATA / "sle-bundle.json"
EXPORT = DATA / "export"
L, S, SITE = "http://loinc.org", "http://snomed.info/sct", "urn:crit:jy231:screening"
PROTOCOL, _ = compile_or_fail(JY231)


def base() -> list[dict[str, Any]]:
    """P-001's resources, from the committed bundle (urn:uuid references and all)."""
    bundle = json.loads(BUNDLE.read_text(encoding="utf-8"))
    return [entry["resource"] for entry in bundle["entry"]]


def find(resources: list[dict[str, Any]], ident: str) -> dict[str, Any]:
    return next(r for r in resources if r.get("id") == ident)


def bundle(path: Path, resources: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection",
                                "entry": [{"resource": r} for r in resources]}), encoding="utf-8")
    return path


def built(tmp_path: Path, resources: list[dict[str, Any]], mapping: Path = MAPPING) -> fhir.FhirPatient:
    """The one patient the resources make (references rewritten to Patient/P-001)."""
    for resource in resources:
        for key in ("subject", "patient"):
            if key in resource:
                resource[key] = {"reference": "Patient/P-001"}
    builder = fhir.Builder(fhir_mapping.load(mapping), PROTOCOL)
    found = list(fhir.patients(bundle(tmp_path / "in.json", resources), builder))
    assert len(found) == 1 and isinstance(found[0], fhir.FhirPatient)
    return found[0]


def observation(ident: str, system: str, code: str, when: str, **value: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": ident, "status": "final", "code": {"coding": [
        {"system": system, "code": code}]}, "subject": {"reference": "Patient/P-001"}, "effectiveDateTime": when,
        **value}


def quantity(value: Any, unit: str) -> dict[str, Any]:
    return {"value": value, "system": "http://unitsofmeasure.org", "code": unit}


def remapped(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the JY231 mapping with one text replaced (the schema beside it, as it names it)."""
    text = MAPPING.read_text(encoding="utf-8")
    assert old in text
    shutil.copy(MAPPING.with_name("autoimmune.crit"), tmp_path / "autoimmune.crit")
    path = tmp_path / "autoimmune.fhir.toml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


# ---- reading and grouping ----------------------------------------------------------------------


def test_a_bundle_with_uuid_references_is_one_patient_with_every_fhir_field(tmp_path: Path) -> None:
    builder = fhir.Builder(fhir_mapping.load(MAPPING), PROTOCOL)
    [patient] = list(fhir.patients(BUNDLE, builder))
    assert isinstance(patient, fhir.FhirPatient) and patient.problems == []
    record = patient.record
    assert (record["id"], record["screening"], record["age"], record["sex"]) == ("P-001", "2025-07-01", 34, "female")
    assert record["hemoglobin"] == {"value": fhir.Decimal("10.8"), "unit": "g/dL"}  # exact, never a float
    assert patient.sources["hemoglobin"] == ["Observation/P-001-hb"]
    assert list(record)[:4] == ["id", "screening", "age", "sex"]  # in schema order
    assert "consent_signed" not in record  # manual, and no manual file given


def test_an_export_is_grouped_by_patient_in_the_order_of_patient_ndjson() -> None:
    """Every file of tests/fhir/export interleaves P-002 before P-001; Patient.ndjson lists P-001 first."""
    assert json.loads((EXPORT / "Observation.ndjson").read_text().splitlines()[0])["id"].startswith("P-002")
    builder = fhir.Builder(fhir_mapping.load(MAPPING), PROTOCOL)
    found = list(fhir.patients(EXPORT, builder))
    assert [p.id for p in found if isinstance(p, fhir.FhirPatient)] == ["P-001", "P-002"]
    first, second = found
    assert isinstance(first, fhir.FhirPatient) and isinstance(second, fhir.FhirPatient)
    assert (first.record["age"], second.record["age"]) == (34, 80)
    assert all(s.startswith("Observation/P-002") for s in second.sources["hemoglobin"])


def test_a_directory_of_bundles_is_read_in_file_name_order(tmp_path: Path) -> None:
    second = [copy.deepcopy(r) for r in base()]
    for resource in second:
        if resource["resourceType"] == "Patient":
            resource["id"] = "A-first"
    shutil.copy(BUNDLE, tmp_path / "b.json")  # its urn:uuid references resolve through its fullUrls
    text = json.dumps({"resourceType": "Bundle", "entry": [{"resource": r} for r in second]})
    (tmp_path / "a.json").write_text(text.replace("urn:uuid:patient-P-001", "Patient/A-first"), encoding="utf-8")
    groups = list(fhir.read(tmp_path))
    assert [g.id for g in groups if isinstance(g, fhir.Group)] == ["A-first", "P-001"]
    assert all(len(g.resources) == len(base()) - 1 for g in groups if isinstance(g, fhir.Group))  # no Practitioner


def test_input_that_belongs_to_no_patient_is_named_by_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "Patient.ndjson").write_text('{"resourceType":"Patient","id":"p1"}\n', encoding="utf-8")
    (tmp_path / "Observation.ndjson").write_text(
        '{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/p1"}}\n'
        "not json\n"
        '{"id":"x","subject":{"reference":"Patient/p1"}}\n'
        '{"resourceType":"Observation","id":"o2","subject":{"reference":"Patient/ghost"}}\n'
        '{"resourceType":"Observation","id":"o3"}\n'
        '{"resourceType":"Observation","id":"o4","subject":{"reference":"Patient/ghost"}}\n', encoding="utf-8")
    found = list(fhir.read(tmp_path))
    groups = [g for g in found if isinstance(g, fhir.Group)]
    unread = [(u.where, u.problem) for u in found if isinstance(u, fhir.Unread)]
    assert [g.id for g in groups] == ["p1", "ghost"]
    assert [r["id"] for r in groups[0].resources] == ["o1", "p1"]  # files are read in name order
    assert groups[1].patient is None
    assert groups[1].problems == ["Patient/ghost: the input has no Patient resource with this id, but 2 resources "
                                  "name it (Observation/o2, Observation/o4)"]
    where = str(tmp_path / "Observation.ndjson")
    assert unread == [(f"{where}:2", "column 1: not valid JSON: Expecting value"),
                      (f"{where}:3", "a resource without resourceType"),
                      (f"{where}:5", "Observation/o3 names no patient (subject or patient: Patient/ID)")]


def test_a_patient_given_twice_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "Patient.ndjson").write_text('{"resourceType":"Patient","id":"p1"}\n{"resourceType":"Patient",'
                                             '"id":"p2"}\n{"resourceType":"Patient","id":"p1"}\n', encoding="utf-8")
    groups = [g for g in fhir.read(tmp_path) if isinstance(g, fhir.Group)]
    assert [g.id for g in groups] == ["p1", "p2"]
    assert groups[0].problems[0].startswith("Patient/p1: given 2 times (")


def test_an_unreadable_input_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(fhir.InputError, match="no such file"):
        list(fhir.read(tmp_path / "nope"))
    with pytest.raises(fhir.InputError, match="holds no FHIR files"):
        list(fhir.read(tmp_path))


def test_references_name_patients_in_every_form() -> None:
    assert fhir.patient_of({"resourceType": "Observation", "subject": {"reference": "Patient/a"}}) == "a"
    assert fhir.patient_of({"resourceType": "Immunization", "patient": {
        "reference": "https://ehr.example/fhir/Patient/b/_history/3"}}) == "b"
    assert fhir.patient_of({"resourceType": "ResearchSubject", "individual": {"reference": "Patient/c"}}) == "c"
    assert fhir.patient_of({"resourceType": "Observation", "subject": {"reference": "urn:uuid:u1"}},
                           {"urn:uuid:u1": "d"}) == "d"
    assert fhir.patient_of({"resourceType": "Observation", "subject": {"reference": "Group/g"}}) is None


# ---- the mapping, key by key -------------------------------------------------------------------


def test_latest_takes_the_newest_and_skips_entered_in_error_and_preliminary(tmp_path: Path) -> None:
    resources = base()
    resources.append(observation("hb-prelim", L, "718-7", "2025-06-30", status="preliminary",
                                 valueQuantity=quantity(3, "g/dL")))
    patient = built(tmp_path, resources)
    # P-001-hb-error (2025-06-30, entered in error) and hb-prelim are later, but do not count
    assert patient.record["hemoglobin"] == {"value": fhir.Decimal("10.8"), "unit": "g/dL"}
    assert patient.sources["hemoglobin"] == ["Observation/P-001-hb"]


def test_latest_of_the_same_date_with_different_values_is_a_problem(tmp_path: Path) -> None:
    resources = base()
    resources.append(observation("hb-same-day", L, "718-7", "2025-06-28", valueQuantity=quantity(95, "g/L")))
    patient = built(tmp_path, resources)
    assert "hemoglobin" not in patient.record
    assert patient.problems == ["hemoglobin: the latest resources, of the same date, disagree: Observation/P-001-hb "
                                'gives {"value": 10.8, "unit": "g/dL"}; Observation/hb-same-day gives {"value": 95, '
                                '"unit": "g/L"}']


def test_earliest_and_one_over_several_conditions(tmp_path: Path) -> None:
    resources = base()
    later = copy.deepcopy(find(resources, "P-001-sle"))
    later.update(id="sle-again", onsetDateTime="2021-01-01")
    patient = built(tmp_path, [*resources, later])
    assert patient.record["diagnosis_date"] == "2019-03-12"  # earliest
    assert patient.record["diagnosis"] == "SLE" and patient.sources["diagnosis"] == [
        "Condition/P-001-sle", "Condition/sle-again"]  # one: both agree
    ss = copy.deepcopy(later)
    ss.update(id="ss", code={"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "M35.00"}]})
    patient = built(tmp_path, [*base(), ss])
    assert "diagnosis" not in patient.record
    assert patient.problems[0].startswith("diagnosis: the resources disagree, and the mapping asks for one value: "
                                          'Condition/P-001-sle gives "SLE"; Condition/ss gives "SS"')


def test_a_condition_counts_only_when_confirmed_and_active(tmp_path: Path) -> None:
    ild = {"resourceType": "Condition", "id": "ild", "subject": {"reference": "Patient/P-001"},
           "clinicalStatus": {"coding": [{"code": "active"}]},
           "verificationStatus": {"coding": [{"code": "confirmed"}]},
           "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "J84.1"}]}}
    assert built(tmp_path, base()).record["ild"] is False
    assert built(tmp_path, [*base(), copy.deepcopy(ild)]).record["ild"] is True  # any; J84* is a prefix
    for change in ({"verificationStatus": {"coding": [{"code": "entered-in-error"}]}},
                   {"verificationStatus": {"coding": [{"code": "provisional"}]}},
                   {"clinicalStatus": {"coding": [{"code": "resolved"}]}}):
        patient = built(tmp_path, [*base(), {**copy.deepcopy(ild), **change}])
        assert patient.record["ild"] is False, change
        assert patient.sources["ild"] == ['no matching Condition: taken as no (absent = "no")']


def test_with_select_any_no_resource_is_missing_unless_the_mapping_says_otherwise(tmp_path: Path) -> None:
    """Missing data never decides a fact by default: "no ILD listed" is "no" only where the mapping
    says so (JY231's does, absent = "no"); without that line the field is missing."""
    mapping = remapped(tmp_path, 'select = "any"\nabsent = "no"                         # the problem list',
                       'select = "any"\n# the problem list')
    patient = built(tmp_path, base(), mapping)
    assert "ild" not in patient.record and patient.problems == []
    assert patient.sources["ild"] == ["no matching Condition: missing"]


def test_count_and_where(tmp_path: Path) -> None:
    """count (an integer: how many match) and where (a FHIRPath filter), on a remapped sledai."""
    mapping = remapped(tmp_path, 'code = ["site|sledai"]\nvalue = "value.as(integer) | value.as(Quantity).value"\n'
                                 'within = { days = 30, before = "screening" }\nselect = "latest"',
                       'code = ["site|sledai"]\nselect = "count"')
    assert built(tmp_path, base(), mapping).record["sledai"] == 2
    mapping = remapped(tmp_path, 'code = ["site|sledai"]\n', 'code = ["site|sledai"]\nwhere = "value > 5"\n')
    resources = [r for r in base() if r["id"] != "P-001-sledai"]  # only the old one, 4 points, is left
    patient = built(tmp_path, resources, mapping)
    assert "sledai" not in patient.record and patient.problems == []


def test_a_window_counts_back_from_its_date_field(tmp_path: Path) -> None:
    resources = [r for r in base() if r["id"] != "P-001-sledai"]  # 2025-04-01 is more than 30 days before
    patient = built(tmp_path, resources)
    assert "sledai" not in patient.record and patient.problems == []
    resources = [r for r in base() if r["id"] != "P-001-screening"]  # no screening date: nothing to count from
    patient = built(tmp_path, resources)
    assert "sledai" not in patient.record and "age" not in patient.record
    assert patient.sources["sledai"] == ["not read: it is counted from screening, which is missing"]


def test_all_makes_a_list_with_items_and_a_set_of_positive_tests(tmp_path: Path) -> None:
    resources = base()
    find(resources, "P-001-tac").update(status="active", effectivePeriod={"start": "2023-02-01"})
    resources += [observation("jo1", SITE, "anti-jo-1", "2025-06-20", valueCodeableConcept={"coding": [
                      {"system": S, "code": "10828004"}]}),
                  observation("mda5", SITE, "anti-mda-5", "2025-06-20", valueCodeableConcept={"coding": [
                      {"system": S, "code": "260385009"}]})]
    patient = built(tmp_path, resources)
    assert patient.record["treatments"] == [
        {"agent": "mycophenolate mofetil", "immunosuppressive": True, "start": "2022-01-10", "end": "2022-12-20"},
        {"agent": "tacrolimus", "immunosuppressive": True, "start": "2023-02-01", "end": "2025-07-01"}]  # ongoing
    assert patient.sources["treatments[1]"] == ["MedicationStatement/P-001-tac"]
    assert patient.record["myositis_antibodies"] == ["Jo1"]  # MDA-5 was tested, negative
    assert patient.sources["myositis_antibodies"] == ["Observation/jo1", "Observation/mda5"]
    assert "anca" not in patient.record  # never tested: missing, not "none found"


def test_absence_as_the_mapping_states_it(tmp_path: Path) -> None:
    resources = [r for r in base() if r["resourceType"] not in ("MedicationStatement", "Immunization")]
    patient = built(tmp_path, resources)
    assert patient.record["treatments"] == []  # absent = "empty"
    assert patient.record["last_live_vaccine"] is None  # absent = "none"
    assert patient.record["systemic_infection"] is None
    assert "hbv_dna" not in patient.record  # absent = "missing", the default


def test_an_interval_from_a_period_ongoing_or_ended(tmp_path: Path) -> None:
    course = {"resourceType": "MedicationStatement", "id": "abx", "status": "active",
              "subject": {"reference": "Patient/P-001"},
              "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc", "code": "J01CA04"}]},
              "effectivePeriod": {"start": "2025-06-20"}}
    assert built(tmp_path, [*base(), copy.deepcopy(course)]).record["systemic_infection"] == {
        "start": "2025-06-20", "ongoing": True}
    ended = {**copy.deepcopy(course), "status": "completed", "effectivePeriod": {"start": "2025-06-20",
                                                                                   "end": "2025-06-27"}}
    assert built(tmp_path, [*base(), ended]).record["systemic_infection"] == {"start": "2025-06-20",
                                                                                "end": "2025-06-27"}


def test_units_are_normalised_and_an_unknown_unit_is_a_problem(tmp_path: Path) -> None:
    resources = base()
    patient = built(tmp_path, resources)
    assert patient.record["platelets"] == {"value": 145, "unit": "10^9/L"}  # UCUM 10*9/L
    assert patient.record["egfr"] == {"value": 88, "unit": "mL/min/1.73m2"}  # UCUM mL/min/{1.73_m2}
    find(resources, "P-001-hb")["valueQuantity"] = quantity(6.7, "mmol/L")
    patient = built(tmp_path, resources)
    assert "hemoglobin" not in patient.record
    assert patient.problems == ["hemoglobin: unit 'mmol/L' of Observation/P-001-hb is not one the mapping accepts "
                                "(g/L, g/dL)"]


def test_a_bound_is_not_a_value(tmp_path: Path) -> None:
    resources = base()
    resources.append(observation("hbv", SITE, "hbv-dna", "2025-06-20", valueQuantity={
        **quantity(20, "[IU]/mL"), "comparator": "<"}, referenceRange=[{"high": quantity(20, "[IU]/mL")}]))
    assert built(tmp_path, resources).problems == ["hbv_dna: Observation/hbv gives a bound (< 20), not a value"]


def test_the_uln_comes_from_the_reference_range(tmp_path: Path) -> None:
    resources = base()
    resources.append(observation("hbv", SITE, "hbv-dna", "2025-06-20", valueQuantity=quantity(12, "[IU]/mL"),
                                 referenceRange=[{"high": quantity(20, "[IU]/mL")}]))
    patient = built(tmp_path, resources)
    assert patient.record["ast"] == {"value": 32, "uln": 40, "unit": "U/L"}
    assert patient.record["hbv_dna"] == {"value": 12, "uln": 20, "unit": "IU/mL"}  # UCUM [IU]/mL
    find(resources, "P-001-ast")["referenceRange"] = [{"high": quantity(0.67, "ukat/L")}]
    assert built(tmp_path, resources).problems == [
        "ast: unit 'ukat/L' of Observation/P-001-ast is not one the mapping accepts (U/L)"]


def test_data_absent_is_missing_and_the_sources_say_why(tmp_path: Path) -> None:
    patient = built(tmp_path, base())
    assert "anti_ssa" not in patient.record and patient.problems == []
    assert patient.sources["anti_ssa"] == ["Observation/P-001-ssa: data absent (not-performed)"]


def test_a_code_the_mapping_maps_to_no_member_is_a_problem(tmp_path: Path) -> None:
    resources = base()
    find(resources, "P-001-hbsag")["valueCodeableConcept"] = {"coding": [{"system": S, "code": "419984006"}]}
    patient = built(tmp_path, resources)
    assert "hbsag" not in patient.record
    assert patient.problems == ["hbsag: Observation/P-001-hbsag has http://snomed.info/sct|419984006, which the "
                                "mapping maps to no member"]
    find(resources, "P-001")["gender"] = "unknown"
    assert "sex: Patient/P-001 has unknown, which the mapping maps to no member" in built(tmp_path, resources).problems


def test_age_at_counts_whole_years_and_a_partial_birth_date_is_a_problem(tmp_path: Path) -> None:
    resources = base()
    find(resources, "P-001")["birthDate"] = "1991-07-02"  # a day after the screening date
    assert built(tmp_path, resources).record["age"] == 33
    find(resources, "P-001")["birthDate"] = "1991"
    assert built(tmp_path, resources).problems == ['age: Patient/P-001 gives the birth date "1991", not a full date']
    del find(resources, "P-001")["birthDate"]
    assert built(tmp_path, resources).problems == ["age: Patient/P-001 has no birth date"]


def test_a_coded_yes_or_no_and_a_titer(tmp_path: Path) -> None:
    patient = built(tmp_path, base())
    assert patient.record["pregnant"] is False and patient.record["ecg_normal"] is True
    assert patient.record["ana"] == "1:320"  # from a Ratio


# ---- manual entries ----------------------------------------------------------------------------


def test_manual_entries_are_merged_and_may_give_only_manual_fields(tmp_path: Path) -> None:
    manual = tmp_path / "manual.jsonl"
    manual.write_text('{"id": "P-001", "consent_signed": true, "hemoglobin": 100, "colour": "red"}\n'
                      '{"id": "P-404", "unsuitable": false}\n', encoding="utf-8")
    builder = fhir.Builder(fhir_mapping.load(MAPPING), PROTOCOL)
    patient, extra = list(fhir.patients(BUNDLE, builder, fhir.Manual(manual)))
    assert isinstance(patient, fhir.FhirPatient) and isinstance(extra, fhir.Unread)
    assert patient.record["consent_signed"] is True
    assert patient.sources["consent_signed"] == [f"manual entry ({manual}:1)"]
    assert patient.problems == [
        f"hemoglobin: the mapping takes this field from Observation resources, so the manual-entry file may not "
        f"give it ({manual}:1)", f"colour: not a field of the schema ({manual}:1)"]
    assert (extra.where, extra.problem) == (f"{manual}:2", "the manual entry for 'P-404' names no patient in the input")


@pytest.mark.parametrize(("text", "message"), [
    ("{]\n", ":1: column 2: not valid JSON"),
    ('{"consent_signed": true}\n', ":1: each line needs the patient's id"),
    ('{"id": "a"}\n{"id": "a"}\n', ":2: the id 'a' is given again (first on line 1)"),
])
def test_a_manual_file_that_cannot_be_read_is_an_input_error(tmp_path: Path, text: str, message: str) -> None:
    manual = tmp_path / "manual.jsonl"
    manual.write_text(text, encoding="utf-8")
    with pytest.raises(fhir.InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fhir.Manual(manual)


# ---- the command line --------------------------------------------------------------------------


def run(*args: object) -> tuple[int, Result]:
    result = CliRunner().invoke(cli.cli, [str(a) for a in args])
    if isinstance(result.exception, Failure):
        return result.exception.code, result
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result


def test_screen_from_fhir_gives_one_row_per_patient_in_order(tmp_path: Path) -> None:
    out, report = tmp_path / "out.csv", tmp_path / "report.md"
    code, result = run("screen", "--from", "fhir", JY231, EXPORT, "-o", out, "--report", report,
                       "--manual", DATA / "export-manual.jsonl")
    assert code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [(r["record"], r["id"], r["decision"], r["decided_by"]) for r in rows] == [
        ("1", "P-001", "eligible", ""), ("2", "P-002", "ineligible", "I1")]
    assert "| eligible | 1 | 50.0% |" in report.read_text(encoding="utf-8")


def test_screen_from_fhir_gives_error_rows_that_keep_the_patient(tmp_path: Path) -> None:
    export = tmp_path / "export"
    shutil.copytree(EXPORT, export)
    bad_line = len((export / "Observation.ndjson").read_text(encoding="utf-8").splitlines()) + 1
    with (export / "Observation.ndjson").open("a", encoding="utf-8") as handle:
        handle.write("{not json\n")
        handle.write(json.dumps(observation("hb-mmol", L, "718-7", "2025-06-30",
                                            valueQuantity=quantity(6.7, "mmol/L"))).replace("P-001", "P-002") + "\n")
    out = tmp_path / "out.jsonl"
    code, _ = run("screen", "--from", "fhir", JY231, export, "-o", out, "-q")
    assert code == 3
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["decision"]) for r in rows] == [("P-001", "needs review"), ("P-002", "error"), (None, "error")]
    assert rows[1]["error"] == ("hemoglobin: unit 'mmol/L' of Observation/hb-mmol is not one the mapping accepts "
                                "(g/L, g/dL)")
    assert rows[2]["error"] == (f"{export / 'Observation.ndjson'}:{bad_line}: column 2: not valid JSON: Expecting "
                                "property name enclosed in double quotes")


def test_eval_from_fhir_prints_the_record_its_sources_and_the_reasons(tmp_path: Path) -> None:
    code, result = run("eval", "--from", "fhir", JY231, BUNDLE, "--manual", DATA / "sle-manual.jsonl")
    assert code == 0, result.output
    out = result.output
    assert "patient P-001: the record built from FHIR" in out
    assert '  hemoglobin                      {"value": 10.8, "unit": "g/dL"}  ← Observation/P-001-hb' in out
    assert "  anti_ssa                        missing  ← Observation/P-001-ssa: data absent (not-performed)" in out
    assert "record P-001: ELIGIBLE" in out
    assert "from hemoglobin: Observation/P-001-hb; platelets: Observation/P-001-plt" in out
    code, result = run("eval", "--json", "--from", "fhir", JY231, BUNDLE)
    assert code == 0
    [found] = json.loads(result.output)
    assert found["record"]["hemoglobin"] == {"value": 10.8, "unit": "g/dL"}
    assert found["sources"]["ast"] == ["Observation/P-001-ast"]
    assert found["decision"] == "needs review" and "consent_signed" in found["missing"]


def test_a_hostile_id_is_inert_in_every_output(tmp_path: Path) -> None:
    hostile = '=HYPERLINK("http://x")<script>|`'
    resources = base()
    find(resources, "P-001")["id"] = hostile
    path = bundle(tmp_path / "in.json", resources)
    path.write_text(path.read_text(encoding="utf-8").replace("urn:uuid:patient-P-001", "Patient/whoever"),
                    encoding="utf-8")  # its resources name another patient: an error row as well
    out, md, html = tmp_path / "out.csv", tmp_path / "r.md", tmp_path / "r.html"
    code, _ = run("screen", "--from", "fhir", JY231, path, "-o", out, "--report", md, "--report", html, "-q")
    assert code == 3
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert rows[1][1] == "'" + hostile  # a spreadsheet will not run it
    assert rows[2][1] == "whoever" and rows[2][2] == "error"
    assert "<script>" not in html.read_text(encoding="utf-8")
    assert "<script>" not in md.read_text(encoding="utf-8")


def test_a_bad_mapping_prints_its_diagnostics_and_exits_1(tmp_path: Path) -> None:
    mapping = remapped(tmp_path, 'select = "earliest"', 'select = "newest"')
    code, result = run("screen", "--from", "fhir", JY231, BUNDLE, "-o", tmp_path / "out.csv", "--mapping", mapping)
    assert code == 1
    assert "error[F103]: select 'newest' is not one of" in result.output
    assert "1 error in" in result.output
    assert not (tmp_path / "out.csv").exists()


def test_usage_and_input_errors_are_one_line(tmp_path: Path) -> None:
    code, result = run("screen", "--from", "fhir", JY231, tmp_path / "nope", "-o", tmp_path / "o.csv")
    assert (code, result.output.strip()) == (3, f"crit: cannot read {tmp_path / 'nope'}: no such file or directory")
    code, result = run("eval", "--from", "fhir", JY231, tmp_path)
    assert (code, result.output.strip()) == (3, f"crit: {tmp_path} holds no FHIR files (a Bundle as .json, or a "
                                                "bulk export as .ndjson)")
    code, result = run("screen", JY231, BUNDLE, "-o", tmp_path / "o.csv", "--manual", DATA / "sle-manual.jsonl")
    assert (code, result.output.strip()) == (2, "crit: --manual is for --from fhir")
    manual = DATA / "sle-manual.jsonl"
    code, result = run("screen", "--from", "fhir", JY231, BUNDLE, "-o", manual, "--manual", manual)
    assert code == 2 and "names the manual entries; crit will not overwrite it" in result.output
    export = tmp_path / "export"
    shutil.copytree(EXPORT, export)
    code, result = run("screen", "--from", "fhir", JY231, export, "-o", export / "results.json")
    assert code == 2 and "is inside the FHIR input directory" in result.output
    code, result = run("screen", "--from", "fhir", "--engine", "duckdb", JY231, export, "-o", tmp_path / "o.csv")
    assert (code, result.output.strip()) == (2, "crit: --from fhir screens with the Python engine "
                                                "(--engine python or auto)")


def test_without_a_mapping_beside_the_schema_screen_says_where_it_looked(tmp_path: Path) -> None:
    protocol = tmp_path / "p.crit"
    protocol.write_text('protocol P "p"\n\npatient\n  x: bool\n\ninclusion\n  I1 "x"\n    x\n', encoding="utf-8")
    code, result = run("screen", "--from", "fhir", protocol, BUNDLE, "-o", tmp_path / "o.csv")
    assert code == 2
    assert result.output.strip() == (f"crit: no FHIR mapping for {protocol}: expected {tmp_path / 'p.fhir.toml'}; "
                                     "give one with --mapping")


def test_a_member_fhir_cannot_tell_apart_may_be_entered_by_hand(tmp_path: Path) -> None:
    """diagnosis maps `other = "manual"`: a manual entry fills it when FHIR has no diagnosis, and
    must agree with FHIR when FHIR has one."""
    resources = [r for r in base() if r["resourceType"] != "Condition"]
    for resource in resources:
        for key in ("subject", "patient"):
            if key in resource:
                resource[key] = {"reference": "Patient/P-001"}
    path = bundle(tmp_path / "in.json", resources)
    manual = tmp_path / "manual.jsonl"
    manual.write_text('{"id": "P-001", "diagnosis": "other"}\n', encoding="utf-8")
    builder = fhir.Builder(fhir_mapping.load(MAPPING), PROTOCOL)
    [patient] = list(fhir.patients(path, builder, fhir.Manual(manual)))
    assert isinstance(patient, fhir.FhirPatient) and patient.problems == []
    assert patient.record["diagnosis"] == "other"
    [patient] = list(fhir.patients(BUNDLE, builder, fhir.Manual(manual)))
    assert isinstance(patient, fhir.FhirPatient)
    assert patient.problems == [f'diagnosis: the manual entry gives "other" ({manual}:1), but Condition/P-001-sle '
                                'gave "SLE"']


def test_several_processes_give_the_same_rows(tmp_path: Path) -> None:
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    for out, jobs in ((one, "1"), (two, "2")):
        code, _ = run("screen", "--from", "fhir", JY231, EXPORT, "-o", out, "-q", "--jobs", jobs,
                      "--manual", DATA / "export-manual.jsonl")
        assert code == 0
    assert one.read_bytes() == two.read_bytes()


def test_eval_of_one_bundle_takes_its_patient_from_a_site_wide_manual_file() -> None:
    """export-manual.jsonl also holds P-002: a screen of the bundle would report that entry, eval does not."""
    code, result = run("eval", "--from", "fhir", JY231, BUNDLE, "--manual", DATA / "export-manual.jsonl")
    assert code == 0 and "record P-001: ELIGIBLE" in result.output and "P-002" not in result.output
