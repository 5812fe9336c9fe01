"""`crit test`: protocol test files, their failure reports, coverage, and their own mistakes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from crit.tools import protocol_tests

PROTOCOL = '''protocol P "Small"

enum Dx "Diagnosis"
  SLE "Lupus"
  SSc "Sclerosis"

patient
  age: integer "Age"
  dx: Dx "Diagnosis"
  sledai: integer "SLEDAI"
  vaccine: date? "Live vaccine"
  screening: date "Screening"
  unsuitable: judgment "Unsuitable"

inclusion
  I1 "Adults"
    age >= 18
  I2 "Active SLE" when dx is SLE
    sledai >= 8

exclusion
  E1 "Recent live vaccine"
    vaccine within 4 weeks before screening
  E2 "Unsuitable"
    unsuitable
'''

BASE = {"age": 40, "dx": "SLE", "sledai": 10, "vaccine": None, "screening": "2025-06-01", "unsuitable": False}


def run(tmp_path: Path, tests: list[dict[str, Any]], *options: str, **extra: Any) -> Result:
    (tmp_path / "p.crit").write_text(PROTOCOL, encoding="utf-8")
    document = {"protocol": "p.crit", "base": BASE, "profiles": {"SSc": {"set": {"dx": "SSc"}, "drop": ["sledai"]}},
                "tests": tests, **extra}
    (tmp_path / "p.tests.json").write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return CliRunner().invoke(protocol_tests.test_command, [*options, "p.tests.json"])


@pytest.fixture(autouse=True)
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_passing_tests(tmp_path: Path) -> None:
    result = run(tmp_path, [
        {"name": "eligible", "expect": "eligible", "outcomes": {"I2": "met", "E1": "not met"}},
        {"name": "SSc", "with": ["SSc"], "expect": "eligible", "outcomes": {"I2": "not applicable"}},
        {"name": "vaccine", "set": {"vaccine": "2025-05-20"}, "expect": "ineligible",
         "reasons": {"E1": "vaccine 2025-05-20 is within 4 weeks before screening 2025-06-01"}},
        {"name": "pending", "drop": ["unsuitable"], "expect": "needs review", "missing": [],
         "pending_judgments": ["unsuitable"]},
        {"name": "typo", "set": {"agee": 3}, "problems": ["agee: unknown field; did you mean 'age'?"]},
    ], "-v")
    assert result.exit_code == 0, result.output
    assert result.stdout == '''\
p.tests.json: P (p.crit), 5 tests
ok    tests[0] eligible
ok    tests[1] SSc
ok    tests[2] vaccine
ok    tests[3] pending
ok    tests[4] typo
5 passed, 0 failed
'''


def test_a_failure_names_the_criterion_and_shows_its_reason(tmp_path: Path) -> None:
    result = run(tmp_path, [
        {"name": "SLEDAI 7", "set": {"sledai": 7}, "expect": "eligible", "outcomes": {"I2": "met"}},
        {"name": "too young", "set": {"age": 16}, "expect": "ineligible", "outcomes": {"I1": "not met"}},
        {"name": "missing age", "drop": ["age"], "expect": "eligible", "missing": ["sledai"]},
        {"name": "bad reason", "expect": "eligible", "reasons": {"I1": "age 40"}},
        {"name": "bad record", "set": {"age": "forty"}, "expect": "eligible"},
        {"name": "wrong problems", "set": {"age": "x"}, "problems": ["age: nonsense"]},
    ])
    assert result.exit_code == 1
    assert result.stdout == '''\
p.tests.json: P (p.crit), 6 tests
FAIL  tests[0] SLEDAI 7
      decision: expected eligible, got ineligible
        because I2 is not met: sledai 7 < 8
      I2 "Active SLE": expected met, got not met
        reason: sledai 7 < 8
FAIL  tests[2] missing age
      decision: expected eligible, got needs review
        because I1 is unknown: missing: age
        missing: age
      missing: expected (sledai), got (age)
FAIL  tests[3] bad reason
      I1 reason: expected 'age 40'
        got 'age 40 ≥ 18'
FAIL  tests[4] bad record
      the record cannot be read:
        age: expected a whole number, got text
FAIL  tests[5] wrong problems
      problems: expected (age: nonsense)
                got (age: expected a whole number, got text)
1 passed, 5 failed
'''


def test_coverage_by_criterion(tmp_path: Path) -> None:
    result = run(tmp_path, [
        {"name": "eligible", "expect": "eligible"},
        {"name": "SSc", "with": ["SSc"], "expect": "eligible"},
        {"name": "young", "set": {"age": 16}, "expect": "ineligible"},
        {"name": "no age", "drop": ["age"], "expect": "needs review"},
    ], "--coverage")
    assert result.exit_code == 0, result.output
    assert result.stdout == '''\
p.tests.json: P (p.crit), 4 tests
4 passed, 0 failed

coverage of P by 4 tests

criterion  met  not met  unknown  n/a  never seen
I1           2        1        1    0  —
I2           3        0        0    1  not met, unknown
E1           0        4        0    0  met, unknown
E2           0        4        0    0  met, unknown

1 of 4 criteria seen met, not met and unknown
never met: E1, E2
never not met: I2
never unknown: I2, E1, E2
'''


@pytest.mark.parametrize(("change", "message"), [
    ({"tests": []}, "tests: expected a list of tests"),
    ({"test": 1}, "test: unknown key; did you mean 'tests'?"),
    ({"sources": 1}, "sources: unknown key; use protocol, about, base, profiles, tests"),
    ({"tests": [{"name": "x", "expect": "elligible"}]},
     "tests[0].expect: expected one of eligible, ineligible, needs review"),
    ({"tests": [{"name": "x", "expect": "eligible", "outcomes": {"I22": "met"}}]},
     "tests[0].outcomes.I22: P has no criterion I22; did you mean 'I2'?"),
    ({"tests": [{"name": "x", "expect": "eligible", "outcomes": {"I1": "passed"}}]},
     "tests[0].outcomes.I1: expected one of met, not met, unknown, not applicable, met or not applicable, "
     "not met or not applicable"),
    ({"tests": [{"name": "x", "with": ["Ssc"], "expect": "eligible"}]},
     "tests[0].with: no profile 'Ssc'; did you mean 'SSc'?"),
    ({"tests": [{"name": "x", "expect": "eligible", "sett": {}}]},
     "tests[0].sett: unknown key; did you mean 'set'?"),
    ({"tests": [{"expect": "eligible"}]}, "tests[0].name: every test needs a name"),
    ({"tests": [{"name": "x", "expect": "eligible", "problems": []}]},
     "tests[0].expect: a record with problems gets no decision; remove 'expect'"),
])
def test_mistakes_in_a_test_file_are_named_by_where_they_are(tmp_path: Path, change: dict[str, Any],
                                                             message: str) -> None:
    tests = change.pop("tests", [{"name": "x", "expect": "eligible"}])
    result = run(tmp_path, tests, **change)
    assert result.exit_code == 3
    assert result.stderr == f"crit: p.tests.json: {message}\n"


def test_unreadable_test_files(tmp_path: Path) -> None:
    (tmp_path / "bad.tests.json").write_text('{"tests": [', encoding="utf-8")
    result = CliRunner().invoke(protocol_tests.test_command, ["bad.tests.json"])
    assert result.exit_code == 3
    assert result.stderr == "crit: bad.tests.json: line 1, column 12: not valid JSON: Expecting value\n"
    result = CliRunner().invoke(protocol_tests.test_command, ["."])
    assert result.exit_code == 3  # a directory runs its *.tests.json
    result = CliRunner().invoke(protocol_tests.test_command, [])
    assert result.exit_code == 2
    assert result.stderr == "crit: no test files (*.tests.json) found\n"


def test_a_protocol_with_errors(tmp_path: Path) -> None:
    run(tmp_path, [{"name": "x", "expect": "eligible"}])
    (tmp_path / "p.crit").write_text(PROTOCOL.replace("age >= 18", "agee >= 18"), encoding="utf-8")
    result = CliRunner().invoke(protocol_tests.test_command, ["p.tests.json"])
    assert result.exit_code == 1
    assert "p.crit:17:5: error[E201]: unknown field 'agee'" in result.stderr


def test_the_base_record_may_be_a_file_and_tests_default_to_protocols_tests(tmp_path: Path) -> None:
    (tmp_path / "protocols" / "tests").mkdir(parents=True)
    (tmp_path / "protocols" / "p.crit").write_text(PROTOCOL, encoding="utf-8")
    (tmp_path / "base.json").write_text(json.dumps(BASE), encoding="utf-8")
    (tmp_path / "protocols" / "tests" / "p.tests.json").write_text(json.dumps({
        "protocol": "../p.crit", "base": "../../base.json",
        "tests": [{"name": "eligible", "expect": "eligible"}]}), encoding="utf-8")
    result = CliRunner().invoke(protocol_tests.test_command, [])
    assert result.exit_code == 0, result.output
    assert result.stdout == "protocols/tests/p.tests.json: P (protocols/p.crit), 1 test\n1 passed, 0 failed\n"


def test_coverage_of_one_criterion_says_criterion(tmp_path: Path) -> None:
    (tmp_path / "one.crit").write_text('protocol ONE "One"\n\npatient\n  a: bool\n\ninclusion\n  I1 "A"\n    a\n',
                                       encoding="utf-8")
    (tmp_path / "one.tests.json").write_text(json.dumps({
        "protocol": "one.crit", "tests": [{"name": "yes", "record": {"a": True}, "expect": "eligible"}]}),
        encoding="utf-8")
    result = CliRunner().invoke(protocol_tests.test_command, ["--coverage", "one.tests.json"])
    assert result.exit_code == 0, result.output
    assert "one.tests.json: ONE (one.crit), 1 test\n" in result.stdout
    assert "\n0 of 1 criterion seen met, not met and unknown\n" in result.stdout


def write_raw(tmp_path: Path, text: str, name: str = "p.tests.json") -> Result:
    (tmp_path / "p.crit").write_text(PROTOCOL, encoding="utf-8")
    (tmp_path / name).write_text(text, encoding="utf-8")
    return CliRunner().invoke(protocol_tests.test_command, [name])


def test_a_key_given_twice_is_a_mistake_not_the_last_one_winning(tmp_path: Path) -> None:
    base = json.dumps(BASE)
    text = ('{"protocol": "p.crit", "base": ' + base + ', "tests": '
            '[{"name": "x", "set": {"age": 10, "age": 30}, "expect": "eligible"}]}')
    result = write_raw(tmp_path, text)
    assert result.exit_code == 3
    assert result.stderr == "crit: p.tests.json: tests[0].set.age: given more than once\n"
    (tmp_path / "base.json").write_text('{"age": 40, "age": 41}', encoding="utf-8")
    result = write_raw(tmp_path, '{"protocol": "p.crit", "base": "base.json", '
                                 '"tests": [{"name": "x", "expect": "eligible"}]}')
    assert result.exit_code == 3
    assert result.stderr == "crit: p.tests.json: base: cannot read the record base.json: age: given more than once\n"


def test_test_files_are_read_as_records_are(tmp_path: Path) -> None:
    document = {"protocol": "p.crit", "base": BASE, "tests": [{"name": "x", "expect": "eligible"}]}
    result = write_raw(tmp_path, "\ufeff" + json.dumps(document))  # a BOM, as Windows editors save
    assert result.exit_code == 0, result.output
    result = write_raw(tmp_path, json.dumps(document).replace('"age": 40', '"age": ' + "4" * 5000))
    assert result.exit_code == 3
    assert result.stderr == ("crit: p.tests.json: a number of 5000 characters is longer than any measurement "
                             "(40 at most)\n")
    exact = {**document, "tests": [{"name": "17.99999999999999999 is not 18", "set": {"age": "AGE"},
                                    "problems": ["age: expected a whole number, got a number"]}]}
    result = write_raw(tmp_path, json.dumps(exact).replace('"AGE"', "17.99999999999999999"))
    assert result.exit_code == 0, result.output
