"""`crit diff`: criterion-level changes, the direction of each, the shipped JY231 example, and
the patients whose decision changes; the overall verdict is checked against the interpreter."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, compile_text
from crit.driver import Loaded, load
from crit.interpret import Interpreter
from crit.logic import Solver
from crit.tools.diff import compare, diff_command, render
from test_fmt import _ATOMS, _EXAMPLES, well_typed_protocols
from test_lint import complete_records

Golden = Callable[[str, str], None]
AMENDMENTS = ROOT / "protocols" / "amendments"

OLD = '''protocol T "Trial"
  version "1"
  note "First."

enum Dx "Diagnosis"
  SLE "Lupus"
  SSc "Sclerosis"
  DM

record Course "A course"
  immunosuppressive: bool
  start: date

patient
  screening: date "Screening"
  age: integer "Age"
  dx: Dx "Diagnosis"
  sledai: integer "SLEDAI"
  hb: quantity g/L also g/dL "Hemoglobin"
  ast: lab U/L "AST"
  vaccine: date? "Live vaccine"
  courses: list of Course "Courses"
  pregnant: bool "Pregnant"
  consent: bool "Consent"
  weight: decimal "Weight"

define refractory "Refractory": count(courses where immunosuppressive) >= 2

inclusion
  I1 "Adults"
    age >= 18
    consent
  I2 "Active SLE" when dx is SLE
    sledai >= 8
  I3 "Blood"
    hb >= 60 g/L
    ast <= 3 x ULN
  I4 "Refractory"
    refractory
  I5 "Consent again"
    consent

exclusion
  E1 "Vaccine within 4 weeks"
    vaccine within 4 weeks before screening
  E2 "Pregnant"
    pregnant
  E3 "Heavy"
    not (weight <= 150)
'''

# Every kind of change: thresholds both ways and under `not`, a unit that only rewords, a
# window, a `when` added, criteria moved, retitled, added (also under `requires any`) and
# removed (one that repeats another), a definition, notes, fields, records and enum members.
NEW = '''protocol T "Trial"
  version "2"
  note "Second."

enum Dx "Diagnosis"
  SLE "Systemic lupus"
  SSc "Sclerosis"
  AAV "Vasculitis"

record Course "A course"
  immunosuppressive: bool
  start: date
  end: date

patient
  screening: date "Screening"
  age: integer "Age in years"
  dx: Dx "Diagnosis"
  sledai: integer "SLEDAI"
  hb: quantity g/dL also g/L "Hemoglobin"
  ast: lab U/L "AST"
  vaccine: date? "Live vaccine"
  courses: list of Course "Courses"
  pregnant: bool "Pregnant"
  consent: bool "Consent"
  weight: decimal "Weight"
  ecog: integer "ECOG"

define refractory "Refractory": count(courses where immunosuppressive) >= 3

inclusion
  I3 "Blood counts"
    hb >= 6 g/dL
    ast <= 2.5 x ULN
  I1 "Adults"
    age >= 18
    consent
    note "Adults only."
  I2 "Active SLE" when dx is SLE
    sledai >= 6
  I4 "Refractory"
    refractory
  I6 "Fit" requires any
    ecog <= 1
    I6.1 "Young"
      age < 30

exclusion
  E1 "Vaccine within 8 weeks"
    vaccine within 8 weeks before screening
  E2 "Pregnant" when dx is SLE
    pregnant
  E3 "Heavy"
    not (weight <= 120)
'''

PATIENT = {"screening": "2025-06-01", "age": 40, "dx": "SLE", "sledai": 10, "hb": 70,
           "ast": {"value": 30, "uln": 40}, "vaccine": None,
           "courses": [{"immunosuppressive": True, "start": "2020-01-01"}] * 3,
           "pregnant": False, "consent": True, "weight": 80, "ecog": 0}


def changes(old: str, new: str) -> dict[str, list[tuple[str, str, str, str]]]:
    report = compare(compile_text(old, "old.crit"), compile_text(new, "new.crit"))
    return {item.id: [(c.what, c.old, c.new, c.effect) for c in item.changes]
            for item in report.criteria + report.definitions}


@pytest.fixture
def pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "old.crit").write_text(OLD, encoding="utf-8")
    (tmp_path / "new.crit").write_text(NEW, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_lower_threshold_in_an_inclusion_loosens_eligibility() -> None:
    assert changes(OLD, NEW)["I2"] == [("threshold", "SLEDAI ≥ 8", "SLEDAI ≥ 6", "loosened")]


def test_directions_follow_the_section_the_negation_and_the_when() -> None:
    found = changes(OLD, NEW)
    assert found["I3"][2:] == [("threshold", "Hemoglobin ≥ 60 g/L", "Hemoglobin ≥ 6 g/dL", "no effect"),
                               ("threshold", "AST ≤ 3 × ULN", "AST ≤ 2.5 × ULN", "tightened")]
    assert found["E1"][1] == ("window", "Live vaccine within 4 weeks before Screening",
                              "Live vaccine within 8 weeks before Screening", "tightened")
    assert found["E2"] == [("applies when", "always", "Diagnosis is Systemic lupus", "loosened")]
    assert found["E3"] == [("threshold", "Weight ≤ 150", "Weight ≤ 120", "tightened")]
    assert found["refractory"] == [("count", "the number of entries in Courses with immunosuppressive is ≥ 2",
                                    "the number of entries in Courses with immunosuppressive is ≥ 3",
                                    "tightened")]


def test_added_and_removed_criteria_are_weighed_against_the_rest() -> None:
    found = changes(OLD, NEW)
    assert found["I6"] == [("criterion added", "", "", "tightened")]
    assert found["I6.1"] == [("criterion added", "", "", "loosened")]  # one more way to meet I6
    assert found["I5"] == [("criterion removed", "", "", "no effect")]  # I1 still requires consent
    assert changes(OLD, OLD.replace('  I5 "Consent again"\n    consent\n', ""))["I5"] == [
        ("criterion removed", "", "", "no effect")]
    # I5 repeats I1's consent, so dropping consent from I1 changes nothing, unless I5 goes too
    assert changes(OLD, OLD.replace("    age >= 18\n    consent\n", "    age >= 18\n"))["I1"] == [
        ("condition removed", "Consent", "—", "no effect")]
    alone = OLD.replace('  I5 "Consent again"\n    consent\n', "")
    assert changes(alone, alone.replace("    age >= 18\n    consent\n", "    age >= 18\n"))["I1"] == [
        ("condition removed", "Consent", "—", "loosened")]
    either = alone.replace('"Active SLE" when', '"Active SLE" requires any when')
    assert changes(alone, either.replace("    sledai >= 8\n", "    sledai >= 8\n    weight > 100\n"))["I2"] == [
        ("parts required", "all parts", "any one part", "no effect"),  # with its one old part
        ("condition added", "—", "Weight > 100", "loosened")]
    assert changes(alone, alone.replace('  I1 "Adults"', '  I1 "Adults" requires any'))["I1"] == [
        ("parts required", "all parts", "any one part", "loosened")]


def test_moves_titles_and_notes() -> None:
    found = changes(OLD, NEW)
    assert found["I3"][:2] == [("moved", "after I2", "first", ""), ("retitled", "Blood", "Blood counts", "")]
    assert found["I1"] == [("note added", "—", "Adults only.", "")]
    assert "I2" not in [c for c, rows in found.items() if any(r[0] == "moved" for r in rows)]


def test_the_rendered_diff(pair: Path, golden: Golden) -> None:
    result = CliRunner().invoke(diff_command, ["old.crit", "new.crit"])
    assert result.exit_code == 0, result.output
    golden("diff-small.md", result.stdout)


def test_records_whose_decision_changes(pair: Path) -> None:
    records = [
        {"id": "same", **PATIENT},
        {"id": "sledai-7", **PATIENT, "sledai": 7},
        {"id": "ecog-2", **PATIENT, "ecog": 2},
        {"id": "no-ecog", **{k: v for k, v in PATIENT.items() if k != "ecog"}},
        {"id": "typo", **PATIENT, "agee": 3},
    ]
    (pair / "records.json").write_text(json.dumps(records), encoding="utf-8")
    result = CliRunner().invoke(diff_command, ["old.crit", "new.crit", "--records", "records.json"])
    assert result.exit_code == 0, result.output
    section = result.stdout[result.stdout.index("## Patients whose decision changes"):]
    assert section == '''\
## Patients whose decision changes

3 of 5 records change decision.

### sledai-7: ineligible → eligible

- I2: not met → met — sledai 7 ≥ 6

### ecog-2: eligible → ineligible

- I6 (new): not met — ecog 2 > 1; I6.1 not met

### no-ecog: eligible → needs review

- I6 (new): unknown — missing: ecog

### Records that cannot be read

| Record | Old version | New version |
| --- | --- | --- |
| typo | agee: unknown field; did you mean 'age'? | agee: unknown field; did you mean 'age'? |
'''


def test_no_decision_changes(pair: Path) -> None:
    patient = {k: v for k, v in PATIENT.items() if k != "ecog"}
    (pair / "one.json").write_text(json.dumps(patient), encoding="utf-8")
    result = CliRunner().invoke(diff_command, ["old.crit", "old.crit", "--records", "one.json"])
    assert result.stdout.endswith("## Patients whose decision changes\n\nNone of the 1 records changes decision.\n")
    assert "- Criteria: 0 added, 0 removed, 0 changed.\n" in result.stdout
    assert "unchanged: every patient whose facts are all known gets the same decision" in result.stdout


def test_output_file_and_errors(pair: Path) -> None:
    result = CliRunner().invoke(diff_command, ["old.crit", "new.crit", "-o", "diff.md"])
    assert result.exit_code == 0 and result.stderr == "wrote diff.md\n"
    mark, body = (pair / "diff.md").read_text(encoding="utf-8").split("\n", 1)  # the first line: crit's mark
    assert mark.startswith("<!-- @generated by crit ") and body.startswith("# T: what the amendment changes\n")
    (pair / "bad.crit").write_text('protocol B "b"\n\npatient\n  age: integer\n\ninclusion\n  I1 "x"\n    agee > 1\n',
                                   encoding="utf-8")
    result = CliRunner().invoke(diff_command, ["old.crit", "bad.crit"])
    assert result.exit_code == 1
    assert "bad.crit:8:5: error[E201]: unknown field 'agee'" in result.stderr
    (pair / "bad.json").write_text("[{", encoding="utf-8")
    result = CliRunner().invoke(diff_command, ["old.crit", "new.crit", "--records", "bad.json"])
    assert result.exit_code == 3
    assert result.stderr.startswith("crit: bad.json:1:3: not valid JSON")


def _diff(*args: object) -> Any:
    return CliRunner().invoke(diff_command, [str(a) for a in args])


def test_diff_output_never_overwrites_what_it_read(pair: Path) -> None:
    """`-o new.crit` overwrote the amended protocol, `--records r.json -o r.json` the records,
    `-o` an imported schema: each is refused in one line, exit 2, and left as it was."""
    (pair / "s").mkdir()
    (pair / "s" / "more.crit").write_text("# a schema the new version imports\n", encoding="utf-8")
    assert NEW.count("\nenum Dx") == 1
    (pair / "new.crit").write_text(NEW.replace("\nenum Dx", '\nimport "s/more.crit"\n\nenum Dx'), encoding="utf-8")
    (pair / "recs.json").write_text(json.dumps([PATIENT]), encoding="utf-8")
    kept = {p: p.read_bytes() for p in pair.rglob("*") if p.is_file()}
    assert _diff("old.crit", "new.crit").exit_code == 0, "the import must compile"
    for args, named in [(["-o", "new.crit"], "new.crit, which a protocol reads"),
                        (["-o", "./old.crit"], "old.crit, which a protocol reads"),
                        (["-o", "s/../s/more.crit"], "s/more.crit, which a protocol reads"),
                        (["--records", "recs.json", "-o", "recs.json"], "the records recs.json")]:
        result = _diff("old.crit", "new.crit", *args)
        assert result.exit_code == 2, (args, result.output)
        out = Path(args[args.index("-o") + 1])
        assert result.stderr == f"crit: -o {out} names {named}; crit will not overwrite it\n"
    assert kept == {p: p.read_bytes() for p in pair.rglob("*") if p.is_file()}


def test_diff_output_is_refused_where_it_cannot_be_written_safely(pair: Path) -> None:
    """A link, a directory, a missing directory, a hand-written file: one line, exit 2 (was:
    written through the link, exit 4 or a traceback, or the file overwritten)."""
    (pair / "victim.md").write_text("mine\n", encoding="utf-8")
    (pair / "link.md").symlink_to("victim.md")
    (pair / "notes.md").write_text("# notes\n<!-- @generated by crit (quoted) -->\n", encoding="utf-8")
    import os

    os.mkfifo(pair / "pipe.md")
    for out, reason in [("link.md", "is a symbolic link"), (".", "is a directory"),
                        ("pipe.md", "is not a regular file"),
                        ("/nonexistent/d.md", "directory /nonexistent does not exist"),
                        ("notes.md", "exists and crit did not write it; crit will not overwrite it: delete it or "
                                     "choose another name")]:
        result = _diff("old.crit", "new.crit", "-o", out)
        assert result.exit_code == 2, (out, result.output, result.exception)
        assert result.stderr.startswith(f"crit: -o {out}") and reason in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
    assert (pair / "victim.md").read_text(encoding="utf-8") == "mine\n"
    assert (pair / "notes.md").read_text(encoding="utf-8").startswith("# notes\n")


def test_diff_replaces_its_own_report_atomically_keeping_its_mode(pair: Path) -> None:
    assert _diff("old.crit", "new.crit", "-o", "d.md").exit_code == 0
    (pair / "d.md").chmod(0o640)
    first = (pair / "d.md").read_text(encoding="utf-8")
    assert first.startswith("<!-- @generated by crit from old.crit and new.crit — do not edit; ")
    result = _diff("old.crit", "old.crit", "-o", "d.md")
    assert result.exit_code == 0, result.output
    assert (pair / "d.md").read_text(encoding="utf-8") != first
    assert (pair / "d.md").stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in pair.iterdir()) == ["d.md", "new.crit", "old.crit"]  # no temporary left
    (pair / "empty.md").touch()  # nothing to lose
    assert _diff("old.crit", "new.crit", "-o", "empty.md").exit_code == 0


def test_the_shipped_jy231_example(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """protocols/amendments/jy231-amendment-example.diff.md is what crit diff renders today."""
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(diff_command, [
        "protocols/jy231.crit", "protocols/amendments/jy231-amendment-example.crit",
        "--records", "protocols/amendments/jy231-amendment-example.records.json"])
    assert result.exit_code == 0, result.output
    shipped = AMENDMENTS / "jy231-amendment-example.diff.md"
    if request.config.getoption("--update-golden"):
        shipped.write_text(result.stdout, encoding="utf-8", newline="\n")
    assert result.stdout == shipped.read_text(encoding="utf-8"), "rerun with --update-golden, then review"
    assert "| threshold | SLEDAI score ≥ 8 | SLEDAI score ≥ 6 | loosened |" in result.stdout


# ---- directions from z3: a proof and a witness, or "crit could not decide" --------------------------

LOOSENED = "loosened: no patient who was eligible becomes ineligible"
TIGHTENED = "tightened: no patient becomes eligible who was not before"
BOTH = "changed both ways: some patients become eligible, others ineligible"


def jy231_amended(tmp_path: Path, *edits: tuple[str, str]) -> Any:
    """JY231 and a copy of it with `edits` (old text, new text), both checked."""
    text = (ROOT / "protocols" / "jy231.crit").read_text(encoding="utf-8")
    for before, after in edits:
        assert text.count(before) == 1, before
        text = text.replace(before, after)
    (tmp_path / "schemas").mkdir()
    for schema in (ROOT / "protocols" / "schemas").glob("*.crit"):
        (tmp_path / "schemas" / schema.name).write_text(schema.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "amended.crit").write_text(text, encoding="utf-8")
    return load(ROOT / "protocols" / "jy231.crit", Loaded()), load(tmp_path / "amended.crit", Loaded())


def test_lowering_sledai_from_8_to_6_in_jy231_is_a_loosening(tmp_path: Path) -> None:
    """The hand-written solver gave up on JY231 and called this pure loosening "both ways"."""
    report = compare(*jy231_amended(tmp_path, ("sledai >= 8", "sledai >= 6")))
    assert report.overall == LOOSENED
    assert [(i.id, c.what, c.effect) for i in report.criteria for c in i.changes] == [
        ("I3.1", "threshold", "loosened")]


def test_raising_sledai_in_jy231_is_a_tightening(tmp_path: Path) -> None:
    report = compare(*jy231_amended(tmp_path, ("sledai >= 8", "sledai >= 10")))
    assert report.overall == TIGHTENED
    assert [c.effect for i in report.criteria for c in i.changes] == ["tightened"]


def test_a_loosening_and_a_tightening_change_eligibility_both_ways(tmp_path: Path) -> None:
    report = compare(*jy231_amended(tmp_path, ("sledai >= 8", "sledai >= 6"),
                                    ("age between 18 and 75", "age between 18 and 70")))
    assert report.overall == BOTH
    assert compare(compile_text(OLD), compile_text(NEW)).overall == BOTH


def test_a_solver_that_gives_up_decides_nothing(tmp_path: Path) -> None:
    """z3 stopped by a tiny work limit: neither the change nor the whole is given a direction."""
    old, new = jy231_amended(tmp_path, ("sledai >= 8", "sledai >= 6"))
    report = compare(old, new, Solver([old, new], rlimit=1))
    assert report.overall == "crit could not decide whether any patient's decision changes"
    assert [c.effect for i in report.criteria for c in i.changes] == ["crit could not decide"]
    assert "; crit could not decide: 1." in render(report)


def test_a_condition_the_encoding_cannot_express_decides_nothing() -> None:
    """A field whose type changes between versions is opaque: z3 finds a "patient" who is no
    witness, so the lowered threshold is not called loosened (nor anything else)."""
    old = compile_text(OLD.replace("sledai: integer", "sledai: decimal"))
    report = compare(old, compile_text(NEW))
    found = {i.id: [c.effect for c in i.changes] for i in report.criteria}
    assert found["I2"] == ["crit could not decide"]
    assert report.overall.startswith("crit could not decide")


# ---- the overall verdict, against the interpreter ------------------------------------------------

_MUTABLE = [atom for atom in _ATOMS if atom not in ("d0", "d1")]


@st.composite
def amendments(draw: st.DrawFn) -> tuple[str, str]:
    """A random protocol and a version of it with some conditions replaced."""
    old = draw(well_typed_protocols())
    head, criteria = old.split("\ninclusion\n", 1)
    new = criteria
    for _ in range(draw(st.integers(1, 3))):
        whole = {atom: re.compile(r"(?<=[ (,:])" + re.escape(atom) + r"(?=$|[,)]| and | or )", re.M)
                 for atom in _MUTABLE}  # a condition on its own, not part of a longer one
        present = [atom for atom, pattern in whole.items() if pattern.search(new)]
        if present:
            replacement = draw(st.sampled_from(_MUTABLE))
            new = whole[draw(st.sampled_from(present))].sub(lambda _, r=replacement: r, new, count=1)
    return old, f"{head}\ninclusion\n{new}"


@settings(max_examples=_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(amendments(), st.lists(complete_records(), min_size=6, max_size=6))
def test_the_overall_verdict_holds_for_every_record(pair_: tuple[str, str], records: list[dict[str, Any]]) -> None:
    old, new = (compile_text(text) for text in pair_)
    verdict = compare(old, new).overall
    before, after = Interpreter(old), Interpreter(new)
    for record in records:
        was, now = before.evaluate(record).decision.value, after.evaluate(record).decision.value
        gained, lost = was != "eligible" and now == "eligible", was == "eligible" and now != "eligible"
        if verdict.startswith(("unchanged", "tightened")):
            assert not gained, (verdict, record)
        if verdict.startswith(("unchanged", "loosened")):
            assert not lost, (verdict, record)


def test_every_change_in_the_example_pair_is_ordered() -> None:
    effects = {row[3] for rows in changes(OLD, NEW).values() for row in rows}
    assert effects == {"", "tightened", "loosened", "no effect"}


def test_a_changed_plausible_range_is_a_schema_change() -> None:
    base = 'protocol T "t"\npatient\n  hb: quantity g/L also g/dL{}\ninclusion\n  I1 "x"\n    hb >= 90 g/L\n'
    schema = [(c.what, c.old, c.new) for c in compare(
        compile_text(base.format(" from 20 to 250 g/L"), "old.crit"),
        compile_text(base.format(" from 30 to 250"), "new.crit")).schema]
    assert schema == [("patient field hb: plausible range", "20 to 250 g/L", "30 to 250 g/L")]
    same = compare(compile_text(base.format(" from 2 to 25 g/dL"), "old.crit"),
                   compile_text(base.format(" from 20 to 250 g/L"), "new.crit"))
    assert same.schema == []  # the same values, written in another unit
    added = compare(compile_text(base.format(""), "old.crit"), compile_text(base.format(" from 20 to 250"), "new.crit"))
    assert [(c.old, c.new) for c in added.schema] == [("—", "20 to 250 g/L")]
