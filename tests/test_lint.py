"""Lint: one test per warning with its exact rendering, the solver it rests on, and its
soundness checked against the reference interpreter on random protocols and records."""

from __future__ import annotations

import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, compile_text
from crit import cli, ir
from crit.diagnostics import render
from crit.driver import Loaded, load
from crit.interpret import Interpreter
from crit.logic import NOWHERE, Solver, conj, criterion_parts, eligible, expand, neg
from crit.tools.lint import as_errors, lint
from test_fmt import _EXAMPLES, _SCHEMA, well_typed_protocols

HEAD = '''protocol L "Lint"

enum Dx "Diagnosis"
  SLE
  SSc
  DM

patient
  screening: date "Screening"
  age: integer "Age"
  dx: Dx "Diagnosis"
  score: decimal "Score"
  vaccine: date? "Live vaccine"
  unsuitable: judgment "Unsuitable"
'''
USES = '''
  I9 "Uses every field"
    age > 0 or dx is SLE or score > 0 or vaccine within 1 day before screening or unsuitable
'''


def warnings(source: str) -> str:
    return "\n\n".join(render(d, {"test.crit": source}) for d in lint(compile_text(source)))


def test_w001_a_criterion_no_patient_can_meet() -> None:
    source = HEAD + '\ninclusion\n  I1 "Age 80 to 75"\n    age >= 80 and age <= 75\n' + USES
    assert warnings(source) == '''\
test.crit:17:3: warning[W001]: criterion I1 can never be met
   |
17 |   I1 "Age 80 to 75"
   |   ^^
   = hint: no patient has both Age ≥ 80 and Age ≤ 75; so no patient can be eligible'''


def test_w001_across_lines_and_with_calendar_windows() -> None:
    source = HEAD + '''
inclusion''' + USES + '''
  I2 "Window"
    vaccine within 4 weeks before screening
    not (vaccine within 1 month before screening)
'''
    assert warnings(source) == '''\
test.crit:20:3: warning[W001]: criterion I2 can never be met
   |
20 |   I2 "Window"
   |   ^^
   = hint: no patient has both Live vaccine within 4 weeks before Screening and Live vaccine not within 1 month \
before Screening; so no patient can be eligible'''


def test_w002_a_criterion_every_patient_meets() -> None:
    source = HEAD + '\ninclusion\n  I1 "Any diagnosis"\n    dx is any of (SLE, SSc, DM)\n' + USES
    assert warnings(source) == '''\
test.crit:17:3: warning[W002]: criterion I1 is met by every patient it applies to
   |
17 |   I1 "Any diagnosis"
   |   ^^
   = hint: it screens no patient out; check its conditions'''


def test_w002_an_exclusion_that_excludes_everyone() -> None:
    source = HEAD + "\ninclusion" + USES + '\nexclusion\n  E1 "Score"\n    score > 1 or score <= 1\n'
    assert warnings(source) == '''\
test.crit:21:3: warning[W002]: criterion E1 is met by every patient it applies to
   |
21 |   E1 "Score"
   |   ^^
   = hint: it excludes every patient, so no patient can be eligible'''


def test_w003_an_inclusion_that_an_exclusion_always_undoes() -> None:
    source = HEAD + '\ninclusion\n  I1 "Age 18 to 75"\n    age between 18 and 75\n' + USES + \
        '\nexclusion\n  E1 "Under 80"\n    age < 80\n'
    assert warnings(source) == '''\
test.crit:24:3: warning[W003]: every patient who meets inclusion I1 also meets exclusion E1
   |
24 |   E1 "Under 80"
   |   ^^
   = hint: so no patient who meets I1 can be eligible: Age between 18 and 75 (inclusive) implies Age < 80'''


def test_w004_when_conditions_that_can_never_apply() -> None:
    source = HEAD + '''
inclusion
  I1 "SLE" when dx is SLE
    I1.1 "SSc" when dx is SSc
      score > 1
    when dx is DM: score > 2
''' + USES
    assert warnings(source) == '''\
test.crit:18:21: warning[W004]: criterion I1.1 can never apply
   |
18 |     I1.1 "SSc" when dx is SSc
   |                     ^^^^^^^^^
   = hint: no patient has both Diagnosis is SLE and Diagnosis is SSc

test.crit:20:10: warning[W004]: this 'when' in I1 can never apply
   |
20 |     when dx is DM: score > 2
   |          ^^^^^^^^
   = hint: no patient has both Diagnosis is SLE and Diagnosis is DM'''


def test_w005_declared_fields_no_criterion_uses() -> None:
    source = HEAD + '\ninclusion\n  I1 "Age"\n    age >= 18 or dx is SLE or score > 0 or unsuitable\n'
    assert warnings(source) == '''\
test.crit:9:3: warning[W005]: field 'screening' is not used by any criterion
  |
9 |   screening: date "Screening"
  |   ^^^^^^^^^
  = hint: use it in a criterion or remove the declaration

test.crit:13:3: warning[W005]: field 'vaccine' is not used by any criterion
   |
13 |   vaccine: date? "Live vaccine"
   |   ^^^^^^^
   = hint: use it in a criterion or remove the declaration'''


def test_w005_names_the_shared_schema_a_field_comes_from() -> None:
    schema = 'patient\n  age: integer\n  height: integer\n'
    protocol = compile_text('protocol S "s"\n\ninclusion\n  I1 "Adult"\n    age >= 18\n', schema=schema)
    (warning,) = lint(protocol)
    assert warning.span.file == "schema.crit"
    assert warning.hint == ("use it in a criterion or remove the declaration "
                            "(declared in schema.crit, which other protocols may share)")


def test_w006_a_judgment_no_criterion_uses() -> None:
    source = HEAD + '\ninclusion\n  I1 "Age"\n    age >= 18 or dx is SLE or score > 0 or vaccine within 1 day ' \
        'before screening\n'
    assert warnings(source) == '''\
test.crit:14:3: warning[W006]: judgment 'unsuitable' is not used by any criterion
   |
14 |   unsuitable: judgment "Unsuitable"
   |   ^^^^^^^^^^
   = hint: investigators would record a judgment that decides nothing; use it in a criterion or remove it'''


def test_w007_a_definition_no_criterion_uses() -> None:
    source = HEAD + '\ndefine adult "Adult": age >= 18\n\ninclusion' + USES
    assert warnings(source) == '''\
test.crit:16:1: warning[W007]: definition 'adult' is not used by any criterion
   |
16 | define adult "Adult": age >= 18
   | ^^^^^^^^^^^^
   = hint: refer to it from a criterion, or remove it'''


def test_w008_a_criterion_written_twice() -> None:
    source = HEAD + "\ninclusion" + USES + '''
exclusion
  E1 "Vaccine"
    vaccine within 4 weeks before screening
  E2 "Recent vaccine"
    vaccine within 4 weeks before screening
'''
    assert warnings(source) == '''\
test.crit:23:3: warning[W008]: criterion E2 has the same conditions as E1
   |
23 |   E2 "Recent vaccine"
   |   ^^
   = hint: they decide the same patients; keep one, or tell them apart'''


def test_the_cause_carries_the_warning_not_its_parents() -> None:
    source = HEAD + '''
inclusion
  I1 "Parent"
    I1.1 "Child"
      score > 2 and score < 1
''' + USES
    assert [(d.code, d.message) for d in lint(compile_text(source))] == [
        ("W001", "criterion I1.1 can never be met")]


def test_jy231_and_the_example_amendment_have_no_warnings() -> None:
    for path in ("protocols/jy231.crit", "protocols/amendments/jy231-amendment-example.crit"):
        assert lint(load(ROOT / path, Loaded())) == []


def test_strict_turns_warnings_into_errors() -> None:
    source = HEAD + '\ndefine adult "Adult": age >= 18\n\ninclusion' + USES
    (error,) = as_errors(lint(compile_text(source)))
    assert render(error, {"test.crit": source}).startswith(
        "test.crit:16:1: error[W007]: definition 'adult' is not used by any criterion")


# ---- the solver ------------------------------------------------------------------------------

SOLVER_SCHEMA = '''protocol S "Solver"

enum Dx
  a
  b

patient
  n: integer
  y: decimal
  d: date?
  s: date
  t: text
  dx: Dx
  b: bool?
  hb: quantity g/L also g/dL

inclusion
  I1 "Condition"
    {condition}
'''


def satisfiable(condition: str) -> bool | None:
    protocol = compile_text(SOLVER_SCHEMA.format(condition=condition))
    (criterion,) = protocol.inclusion
    return Solver([protocol]).satisfiable(expand(criterion_parts(criterion).met, {}))


@pytest.mark.parametrize(("condition", "expected"), [
    ("n > 2 and n < 3", False),  # whole numbers
    ("y > 2 and y < 3", True),  # decimals
    ("n between 3 and 3 and n != 3", False),
    ("y >= 3 and y <= 3 and y != 3", False),
    ("not (d > 2025-01-01) and not (d <= 2025-01-01)", True),  # an optional date may be none
    ("not (s > 2025-01-01) and not (s <= 2025-01-01)", False),  # a required one may not
    ("d > 2025-01-01 and not (d > 2024-12-31)", False),
    ('t = "a" and t = "b"', False),
    ('t = "a" and t != "b"', True),
    ("dx is a and dx is not a", False),
    ("not (dx is any of (a, b))", False),
    ("b and not b", False),
    ("not b and not (b = false)", True),  # none
    ("hb >= 6 g/dL and hb < 60 g/L", False),  # units converted exactly
    ("d within 4 weeks before s and not (d within 1 month before s)", False),
    ("d within 1 month before s and not (d within 30 days before s)", True),  # February
    ("at least 2 of (n > 5, n < 3, y > 1)", True),
    ("at least 2 of (n > 5, n < 3, b and not b)", False),
])
def test_the_solver(condition: str, expected: bool) -> None:
    assert satisfiable(condition) is expected


# ---- soundness: what lint and the solver claim, the interpreter confirms ----------------------

ANCHOR = datetime.date(2025, 3, 31)
_DAYS = (0, 1, 13, 14, 15, 27, 28, 29, 30, 31, 364, 365, 366)


@st.composite
def complete_records(draw: st.DrawFn) -> dict[str, Any]:
    """Records for tests/test_fmt.py's schema with every fact known, values near the thresholds."""
    def day() -> str:
        return (ANCHOR + datetime.timedelta(days=draw(st.sampled_from(_DAYS)) * draw(st.sampled_from([-1, 1])))
                ).isoformat()

    item = st.fixed_dictionaries({"ok": st.booleans(), "n": st.integers(0, 4),
                                  "day": st.sampled_from([(ANCHOR - datetime.timedelta(days=d)).isoformat()
                                                          for d in (0, 13, 14, 15)])})
    return {
        "screening": ANCHOR.isoformat(),
        "age": draw(st.sampled_from([17, 18, 19, 74, 75, 76])),
        "score": draw(st.sampled_from([0.2, 0.25, 0.3, 2.5, 2.6])),
        "hb": draw(st.sampled_from([59, 60, 64, 65, 66])),
        "plt": draw(st.sampled_from([19, 20, 21])),
        "egfr": draw(st.sampled_from([29, 30, 31])),
        "ast": {"value": draw(st.sampled_from([30, 39, 40, 120, 121])), "uln": 40},
        "ana": f"1:{draw(st.sampled_from([40, 80, 160, 320]))}",
        "dx": draw(st.sampled_from(["a", "b", "c"])),
        "tags": draw(st.lists(st.sampled_from(["a", "b", "c"]), unique=True)),
        "seen": None if draw(st.booleans()) else day(),
        "flag": draw(st.booleans()),
        "fit": draw(st.booleans()),
        "items": draw(st.lists(item, max_size=3)),
        "code": draw(st.sampled_from(["x y", "a # not a comment", "z"])),
    }


def facts(protocol: ir.Protocol, record: dict[str, Any]) -> ir.Expr:
    """A record's values as conditions the solver understands (lists and none left out)."""
    parts: list[ir.Expr] = []
    for f in protocol.fields:
        value = record.get(f.name)
        ref = ir.FieldRef(f, "patient", NOWHERE)
        kind = f.type.kind
        if value is None or kind == "list":
            continue
        if kind in ("bool", "judgment"):
            parts.append(ref if value else neg(ref))
        elif kind == "enum":
            parts.append(ir.Member("is", ref, (value,), NOWHERE))
        elif kind == "set":
            assert f.type.enum is not None
            for member in f.type.enum.member_names():
                has = ir.Member("has", ref, (member,), NOWHERE)
                parts.append(has if member in value else neg(has))
        elif kind == "lab":
            parts.append(ir.UlnCompare("=", ref, Decimal(value["value"]) / Decimal(value["uln"]), NOWHERE))
            parts.append(ir.Compare("=", ref, ir.Const("number", Decimal(value["value"]), "", NOWHERE), NOWHERE))
        else:
            const = {"date": lambda v: ir.Const("date", datetime.date.fromisoformat(v), v, NOWHERE),
                     "titer": lambda v: ir.Const("titer", int(v.split(":")[1]), v, NOWHERE),
                     "text": lambda v: ir.Const("text", v, v, NOWHERE)}.get(
                         kind, lambda v: ir.Const("number", Decimal(str(v)), str(v), NOWHERE))(value)
            parts.append(ir.Compare("=", ref, const, NOWHERE))
    return conj(*parts)


@settings(max_examples=_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(well_typed_protocols(), st.lists(complete_records(), min_size=4, max_size=4))
def test_what_the_solver_rules_out_never_happens(source: str, records: list[dict[str, Any]]) -> None:
    """Every criterion's outcome and every decision the interpreter reaches is one the solver,
    given the record's values, still allows; and lint's warnings hold on every record."""
    protocol = compile_text(source)
    interpreter = Interpreter(protocol)
    definitions = {d.name: d for d in protocol.definitions}
    solver = Solver([protocol])
    context = {c.id: c for c in protocol.criteria()}
    gates: dict[str, list[ir.Expr]] = {}
    for c in protocol.criteria():
        for child in c.children():
            gates[child.id] = gates.get(c.id, []) + ([c.applies] if c.applies is not None else [])
    found = lint(protocol)
    for record in records:
        result = interpreter.evaluate(record)
        known = facts(protocol, record)
        for row in result.criteria:
            parts = criterion_parts(context[row.id])
            applies = conj(*gates.get(row.id, []), parts.applies)
            claim = {"met": conj(applies, parts.met), "not met": conj(applies, neg(parts.met)),
                     "not applicable": neg(applies)}[row.outcome.value]
            assert solver.satisfiable(expand(claim, definitions), known) is not False, (row.id, row.outcome)
        decision = expand(eligible(protocol), definitions)
        verdict = decision if result.decision.value == "eligible" else neg(decision)
        assert solver.satisfiable(verdict, known) is not False, result.decision
        for warning in found:
            ident = warning.message.split()[1] if warning.code in ("W001", "W002") else None
            if warning.code == "W001":
                assert result.outcome(ident).value != "met", warning.message
            if warning.code == "W002":
                assert result.outcome(ident).value != "not met", warning.message
            if warning.code == "W003":
                words = warning.message.split()
                if result.outcome(words[5]).value == "met":
                    assert result.outcome(words[-1]).value == "met", warning.message


@settings(max_examples=5, deadline=None, derandomize=True)
@given(complete_records())
def test_the_soundness_records_fit_the_random_schema(record: dict[str, Any]) -> None:
    protocol = compile_text('protocol R "r"\n\n' + _SCHEMA + '\ninclusion\n  I1 "x"\n    flag\n')
    assert Interpreter(protocol).validate(record) == []


# ---- `crit check` (lint and --strict, in src/crit/tools/check.py) ----------------------------

def test_crit_check_prints_warnings_and_strict_makes_them_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    source = HEAD + '\ndefine adult "Adult": age >= 18\n\ninclusion' + USES
    (tmp_path / "test.crit").write_text(source, encoding="utf-8")
    warning = '''\
test.crit:16:1: {}[W007]: definition 'adult' is not used by any criterion
   |
16 | define adult "Adult": age >= 18
   | ^^^^^^^^^^^^
   = hint: refer to it from a criterion, or remove it'''
    assert cli.main(["check", "test.crit"]) == 0
    out, err = capsys.readouterr()
    assert err == warning.format("warning") + "\n\n"
    assert out == "test.crit: ok (L, 1 criterion, 6 fields, 1 warning)\n"
    assert cli.main(["check", "--strict", "test.crit"]) == 1
    out, err = capsys.readouterr()
    assert err == warning.format("error") + "\n\n1 error in test.crit\n"
    assert out == ""


def test_w020_a_label_that_explains_the_data_format() -> None:
    source = HEAD.replace('"Live vaccine"', '"Latest live vaccine (null: never)"') + (
        '\ninclusion\n  I1 "Adults"\n    age >= 18\n' + USES)
    assert warnings(source) == '''\
test.crit:13:3: warning[W020]: the label of 'vaccine' says how the data is recorded: "Latest live vaccine (null: never)"
   |
13 |   vaccine: date? "Latest live vaccine (null: never)"
   |   ^^^^^^^
   = hint: labels are read in the criteria's sentences; say what the field means ("Latest insulin dose"): \
for an optional field, null already means none recorded, and the Markdown glossary says so'''
    assert warnings(HEAD + '\ninclusion\n  I1 "Adults"\n    age >= 18\n' + USES) == ""
