"""FHIR mapping files: reading them, placing their problems, checking them against a schema.

`tests/fhir-errors/NAME.fhir.toml` is a mapping of `tests/fhir-errors/schema.crit` with one kind
of mistake; `NAME.expected` is the exact output `crit check` prints for it (place, message,
quoted line, caret, hint), as tests/errors does for `.crit` files. Names start with the error
code, and every F code in `src/crit` has a case. Rewrite the `.expected` files after reviewing a
change with `pytest tests/test_fhir_mapping.py --update-golden`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import run
from crit import ir
from crit.diagnostics import CritError, render_all
from crit.driver import load as load_protocol
from crit.sources import fhir_mapping
from crit.sources.fhir_mapping import Code, Locator, crit_unit, fhirpath_problem, loads
from crit.tools.check import check_mapping, schema_of

ROOT = Path(__file__).resolve().parents[1]
CASES_DIR = ROOT / "tests" / "fhir-errors"
CASES = sorted(path.name.removesuffix(".fhir.toml") for path in CASES_DIR.glob("*.fhir.toml"))
JY231_MAPPING = ROOT / "protocols" / "schemas" / "autoimmune.fhir.toml"


@pytest.fixture
def at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the repository root, so diagnostics show `tests/fhir-errors/NAME.fhir.toml`."""
    monkeypatch.chdir(ROOT)


# ---- the cases -----------------------------------------------------------------------------


@pytest.mark.usefixtures("at_root")
@pytest.mark.parametrize("name", CASES)
def test_diagnostic_output(name: str, request: pytest.FixtureRequest) -> None:
    checked = check_mapping(Path("tests", "fhir-errors", f"{name}.fhir.toml"))
    text = render_all(checked.diagnostics, checked.sources) + "\n"
    expected = CASES_DIR / f"{name}.expected"
    if request.config.getoption("--update-golden"):
        expected.write_text(text, encoding="utf-8", newline="\n")
    assert text == expected.read_bytes().decode("utf-8"), f"{name}: the output differs from {expected.name}"


def test_cases_are_paired_and_named_by_code() -> None:
    assert len(CASES) >= 20
    expected = sorted(path.stem for path in CASES_DIR.glob("*.expected"))
    assert expected == CASES, "every NAME.fhir.toml needs a NAME.expected and vice versa"
    for name in CASES:
        assert re.fullmatch(r"F\d{3}(-[a-z0-9]+)+", name), f"{name}: name it CODE-situation"
        text = (CASES_DIR / f"{name}.expected").read_text(encoding="utf-8")
        assert f"error[{name[:4]}]" in text, f"{name}: its output has no {name[:4]} error"


def test_every_fhir_mapping_code_in_the_source_has_a_case() -> None:
    codes: set[str] = set()
    for path in (ROOT / "src" / "crit").rglob("*.py"):
        codes.update(re.findall(r"[\"'](F\d{3})[\"']", path.read_text(encoding="utf-8")))
    assert {"F100", "F106", "F114", "F119"} <= codes  # the scan itself works
    missing = sorted(codes - {name[:4] for name in CASES})
    assert not missing, f"add tests/fhir-errors/CODE-situation.fhir.toml and .expected for: {missing}"


def test_the_cases_share_one_mapping_that_checks() -> None:
    """Each case is one mistake away from a mapping without any, so its output is that mistake's:
    taking the case's diagnostics' lines out of the picture, the base mapping is clean."""
    protocol = load_protocol(CASES_DIR / "wrapper.crit", text=(
        'protocol SCHEMA "x"\n\nimport "schema.crit"\n\ninclusion\n  I1 "x"\n    true\n'))
    base = (CASES_DIR / "F101-unknown-key.fhir.toml").read_text(encoding="utf-8").replace("unit = [", "units = [")
    mapping = loads(base, CASES_DIR / "base.fhir.toml")
    assert fhir_mapping.check(mapping, *schema_of(protocol, protocol.source)) == []


# ---- the JY231 mapping ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def jy231() -> tuple[fhir_mapping.Mapping, ir.Protocol]:
    return fhir_mapping.load(JY231_MAPPING), load_protocol(ROOT / "protocols" / "jy231.crit")


def test_the_jy231_mapping_checks(jy231: tuple[fhir_mapping.Mapping, ir.Protocol]) -> None:
    mapping, protocol = jy231
    assert fhir_mapping.check(mapping, *schema_of(protocol, protocol.source)) == []


def test_the_jy231_mapping_covers_every_field_and_leaves_judgments_to_people(
        jy231: tuple[fhir_mapping.Mapping, ir.Protocol]) -> None:
    mapping, protocol = jy231
    fields = {f.name: f for f in protocol.fields}
    assert [f.name for f in mapping.fields] == list(fields)
    for field_map in mapping.fields:
        if fields[field_map.name].type.kind == "judgment" or field_map.name == "consent_signed":
            assert field_map.manual, field_map.name
    from_fhir = [f for f in mapping.fields if f.manual is None]
    assert len(from_fhir) >= 45  # every field FHIR can carry: labs, tests, scores, history
    assert {f.resource for f in from_fhir} >= {"Patient", "Observation", "Condition", "MedicationStatement",
                                               "Immunization", "Encounter", "ResearchSubject"}


def test_the_jy231_mapping_uses_standard_codes_where_it_names_them(
        jy231: tuple[fhir_mapping.Mapping, ir.Protocol]) -> None:
    mapping, _ = jy231
    codes = {c.text: c for f in mapping.fields for c in (*f.code, *(c for m in f.members for c in m.codes))}
    assert codes["loinc|718-7"].system == "http://loinc.org"
    assert codes["icd10|M32*"] == Code("http://hl7.org/fhir/sid/icd-10", "M32", True, "icd10|M32*")
    sex = mapping.field("sex")
    assert sex is not None and sex.members[0].codes[0].system is None  # Patient.gender is a plain code
    # the site system is marked as an example in the file
    assert re.search(r'site = "urn:crit:jy231:screening" +# an example', mapping.source)


# ---- reading ----------------------------------------------------------------------------------


def _load(text: str) -> fhir_mapping.Mapping:
    return loads(text, Path("m.fhir.toml"))


def test_codes_resolve_aliases_prefixes_and_bare_codes() -> None:
    mapping = _load('schema = "s.crit"\n[codesystems]\nloinc = "http://loinc.org"\n'
                    '[fields.x]\ncode = ["loinc|718*", "http://snomed.info/sct|10828004", "female"]\n')
    prefix, uri, bare = mapping.fields[0].code
    assert prefix.matches("http://loinc.org", "718-7") and not prefix.matches("http://loinc.org", "7718")
    assert not prefix.matches("http://snomed.info/sct", "718-7")
    assert uri.matches("http://snomed.info/sct", "10828004") and not uri.matches("http://snomed.info/sct", "1082800")
    assert bare.matches(None, "female") and not bare.matches("http://loinc.org", "female")


def test_defaults_a_reader_relies_on() -> None:
    mapping = _load('schema = "s.crit"\n[codesystems]\ns = "urn:x"\n'
                    '[fields.d]\nresource = "Condition"\nmembers.A = ["s|a"]\nmembers.B = ["s|b"]\n'
                    '[fields.o]\nresource = "Observation"\nvalue = "value"\nstatus = ["final"]\n')
    d, o = mapping.fields
    assert (d.select, d.absent, d.statuses(), d.verifications()) == \
        ("latest", "missing", ("active", "recurrence", "relapse"), ("confirmed",))
    assert [c.code for c in d.resource_codes()] == ["a", "b"]  # members told apart by the code
    assert d.member_of("urn:x", "b") == "B" and d.member_of("urn:x", "c") is None
    assert o.statuses() == ("final",) and o.resource_codes() == ()


def test_a_sets_members_are_its_tests_even_when_their_results_are_read(
        jy231: tuple[fhir_mapping.Mapping, ir.Protocol]) -> None:
    mapping, protocol = jy231
    antibodies = mapping.field("myositis_antibodies")
    assert antibodies is not None and antibodies.value is not None and antibodies.positive
    assert antibodies.members_by_resource_code()
    assert [c.text for c in antibodies.resource_codes()][:2] == ["site|anti-jo-1", "site|anti-zo"]
    hbsag = mapping.field("hbsag")
    assert hbsag is not None and not hbsag.members_by_resource_code()  # a coded result
    assert [c.text for c in hbsag.resource_codes()] == ["loinc|5196-1", "loinc|5195-3"]
    # a set that reads results must say which are positive
    text = mapping.source.replace('positive = ["snomed|10828004", "snomed|260373001"]\nabsent = "missing"', "", 1)
    (problem,) = fhir_mapping.check(loads(text, JY231_MAPPING), *schema_of(protocol, protocol.source))
    lines = text.splitlines()
    table = next(i for i, line in enumerate(lines) if line.startswith("[fields.myositis_antibodies]"))
    assert (problem.code, problem.span.line) == ("F105", lines.index('value = "value.as(CodeableConcept)"', table) + 1)


def test_a_toml_syntax_error_is_one_positioned_diagnostic() -> None:
    with pytest.raises(CritError) as info:
        _load('schema = "s.crit"\n\n[fields.x]\nvalue = [1,\n  oops]\n')
    (diagnostic,) = info.value.diagnostics
    assert (diagnostic.code, diagnostic.span.line, diagnostic.span.column) == ("F100", 5, 3)


def test_a_table_written_twice_is_placed_at_its_second_header() -> None:
    with pytest.raises(CritError) as info:
        _load('schema = "s.crit"\n[fields.a]\nmanual = "x"\n\n[fields.a]\nmanual = "y"\n')
    (diagnostic,) = info.value.diagnostics
    assert (diagnostic.message, diagnostic.span.line, diagnostic.span.column) == \
        ("not valid TOML: a key or table is written twice", 5, 9)


def test_every_shape_problem_is_reported_not_just_the_first() -> None:
    with pytest.raises(CritError) as info:
        _load('schema = "s.crit"\nfhir = "R5"\n[fields.x]\nresorce = "Observation"\nselect = 3\n'
              'code = ["nope|1"]\n')
    assert [(d.code, d.span.line) for d in info.value.diagnostics] == \
        [("F103", 2), ("F101", 4), ("F102", 5), ("F104", 6)]


def test_a_mapping_that_is_not_utf8_or_too_large_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.fhir.toml"
    bad.write_bytes(b'schema = "s.crit"\n# caf\xe9\n')
    with pytest.raises(CritError) as info:
        fhir_mapping.load(bad)
    assert [(d.code, d.span.line, d.span.column) for d in info.value.diagnostics] == [("F100", 2, 6)]
    big = tmp_path / "big.fhir.toml"
    big.write_text("#" * (fhir_mapping.MAX_MAPPING_BYTES + 1))
    with pytest.raises(CritError, match="1 error"):
        fhir_mapping.load(big)


# ---- placing keys and values ----------------------------------------------------------------

LOCATED = """\
schema = "s.crit"   # the schema
[fields.a]
code = [
  "x|1",
  "x|2",
]
within = { days = 90, before = "screening" }
members.SLE = ["x|3"]
"quoted key" = 1
note = \"\"\"
fake = 1
\"\"\"
[fields.a.items]
end = { value = "p", otherwise = "screening" }
[fields.b]
fields.c.value = "v"
"""


@pytest.mark.parametrize(("path", "text", "expected"), [
    (("schema",), None, (1, 1, 7)),
    (("fields", "a"), None, (2, 9, 10)),
    (("fields", "a", "code"), None, (3, 1, 5)),
    (("fields", "a", "within", "before"), None, (7, 23, 29)),
    (("fields", "a", "within", "days"), None, (7, 12, 16)),
    (("fields", "a", "members", "SLE"), None, (8, 9, 12)),
    (("fields", "a", "quoted key"), None, (9, 1, 13)),
    (("fields", "a", "fake"), None, (2, 9, 10)),  # inside a multi-line string: no key; its table
    (("fields", "a", "items", "end", "otherwise"), None, (14, 22, 31)),
    (("fields", "b", "fields", "c", "value"), None, (16, 10, 15)),
    (("fields", "a", "code"), "x|2", (5, 3, 8)),
    (("schema",), ..., (1, 10, 18)),
    (("fields", "a", "items", "end", "otherwise"), "screening", (14, 34, 45)),
    (("fields", "a", "items", "end", "value"), "screening", (14, 34, 45)),  # the first after the key
])
def test_the_locator_places_keys_and_values(path: tuple[str, ...], text: object,
                                            expected: tuple[int, int, int]) -> None:
    locator = Locator("m.toml", LOCATED)
    span = locator.key(path) if text is None else locator.value(path, text if isinstance(text, str) else None)
    assert (span.line, span.column, span.end_column) == expected


# ---- units and FHIRPath ---------------------------------------------------------------------


@pytest.mark.parametrize(("ucum", "crit"), [
    ("g/dL", "g/dL"), ("10*9/L", "10^9/L"), ("10*3/uL", "10^3/uL"), ("mL/min/{1.73_m2}", "mL/min/1.73m2"),
    ("[IU]/mL", "IU/mL"), ("m[IU]/mL", "mIU/mL"), ("{cells}/uL", "cells/uL"), ("mm[Hg]", "mmHg"),
    ("{score}", ""), ("%", "%"), ("umol/L", "umol/L"),
])
def test_ucum_in_crits_spelling(ucum: str, crit: str) -> None:
    assert crit_unit(ucum) == crit


@pytest.mark.parametrize(("expression", "problem"), [
    ("onset.as(dateTime) | recordedDate", None),
    ("status = 'active'", None),
    ("referenceRange.high", None),
    ("value.as(Quantity", "ends before the expression does"),
    ("value value", "goes on after a whole expression, at character 7"),
    ("value..code", "does not read at character 7"),
    ("value.bogus()", "calls bogus(), which FHIRPath does not have"),
    ("", "empty"),
])
def test_fhirpath_is_checked_to_its_end(expression: str, problem: str | None) -> None:
    found = fhirpath_problem(expression)
    assert found is None if problem is None else (found is not None and problem in found)


# ---- crit check -----------------------------------------------------------------------------




OK_LINE = ("protocols/schemas/autoimmune.fhir.toml: ok (FHIR mapping of autoimmune.crit: "
           "50 fields from FHIR, 15 entered by hand)")


def test_crit_check_checks_a_mapping(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    assert run(capsys, "check", "protocols/schemas/autoimmune.fhir.toml") == (0, OK_LINE + "\n", "")


def test_crit_check_of_a_protocol_checks_the_mapping_beside_its_schema(
        capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, out, _ = run(capsys, "check", "protocols/jy231.crit")
    assert code == 0
    assert out.splitlines() == ["protocols/jy231.crit: ok (JY231, 34 criteria, 65 fields)", OK_LINE]


def test_a_bad_mapping_beside_a_schema_fails_the_protocols_check(
        capsys: pytest.CaptureFixture[str], project: Path) -> None:
    mapping = project / "protocols" / "schemas" / "autoimmune.fhir.toml"
    mapping.write_text(mapping.read_text(encoding="utf-8").replace('units = ["g/L", "g/dL"]', 'units = ["mmol/L"]'),
                       encoding="utf-8")
    code, out, err = run(capsys, "check", "protocols/jy231.crit")
    assert code == 1
    assert out == "protocols/jy231.crit: ok (JY231, 34 criteria, 65 fields)\n"
    assert "protocols/schemas/autoimmune.fhir.toml:" in err and "error[F114]" in err
    assert err.endswith("1 error in protocols/schemas/autoimmune.fhir.toml\n")
    code, out, _ = run(capsys, "check", "--format", "json", "protocols/jy231.crit")
    assert code == 1
    (line,) = [json.loads(row) for row in out.splitlines()]
    assert (line["code"], line["file"], line["column"]) == ("F114", "protocols/schemas/autoimmune.fhir.toml", 10)


def test_a_mapping_is_checked_once_however_often_it_is_reached(
        capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, out, _ = run(capsys, "check", "protocols/jy231.crit", "protocols/schemas/autoimmune.fhir.toml",
                       "protocols/jy231.crit")
    assert code == 0
    assert out.count(OK_LINE) == 1


def test_a_protocol_without_a_mapping_beside_its_schema_is_checked_as_before(
        capsys: pytest.CaptureFixture[str], project: Path) -> None:
    (project / "protocols" / "schemas" / "autoimmune.fhir.toml").unlink()
    assert run(capsys, "check", "protocols/jy231.crit") == (0, "protocols/jy231.crit: ok (JY231, 34 criteria, "
                                                             "65 fields)\n", "")
