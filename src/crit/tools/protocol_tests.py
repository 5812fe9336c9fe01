"""`crit test`: a protocol's own tests, written as patients with the decision they must get.

A test file is JSON, so authors can read and write it without Python; it is read as records are
(`crit.sources.records.loads`: numbers exact, a key given twice is a mistake named by its path):

    {
      "protocol": "../jy231.crit",
      "base": "../../examples/patient-sle.json",
      "profiles": {"SSc": {"set": {"diagnosis": "SSc", "mrss": 20}, "drop": ["sledai"]}},
      "tests": [
        {"name": "SSc with mRSS 36", "with": ["SSc"], "set": {"mrss": 36},
         "expect": "ineligible", "outcomes": {"I3.3": "not met"}}
      ]
    }

Each test's patient is the base record (or its own "record"), changed by the profiles it names
("with"), then by its own "set" (values as written; null records none) and "drop" (fields
removed, so missing). It may also expect the missing facts, the pending judgments, a
criterion's exact reason, or (instead of a decision) the problems `validate` reports.

Tests run against the evaluator crit generates, the artefact a trial actually uses. A failure
names the criterion and shows its reason; `--coverage` shows, by criterion, which outcomes the
tests have seen and which they never have.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import click

from crit import ir
from crit.check.names import did_you_mean
from crit.driver import display_path
from crit.english import counted
from crit.pipeline import compile_or_fail, evaluator
from crit.sources.records import RecordSyntaxError, loads

DECISIONS = ("eligible", "ineligible", "needs review")
OUTCOMES = ("met", "not met", "unknown", "not applicable", "met or not applicable", "not met or not applicable")
COVERED = {"met or not applicable": "unknown", "not met or not applicable": "unknown"}  # counted as unknown
_FILE_KEYS = ("protocol", "about", "base", "profiles", "tests")
_CHANGE_KEYS = ("set", "drop")
_TEST_KEYS = ("name", "about", "record", "with", *_CHANGE_KEYS, "expect", "outcomes", "missing",
              "pending_judgments", "reasons", "problems")


# ---- shared by the commands that compile protocols ------------------------------------------


# ---- the test file -------------------------------------------------------------------------


class TestFileError(Exception):
    """A test file that cannot be used, with where in it the problem is."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.message = message


@dataclass(frozen=True)
class Case:
    """One test: the patient record it builds, and what the evaluator must say about it."""

    index: int
    name: str
    record: Any
    expect: str | None
    outcomes: Mapping[str, str] = field(default_factory=dict)
    missing: tuple[str, ...] | None = None
    pending_judgments: tuple[str, ...] | None = None
    reasons: Mapping[str, str] = field(default_factory=dict)
    problems: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TestFile:
    __test__ = False
    path: Path
    protocol: Path
    cases: tuple[Case, ...]


def read_tests(path: Path) -> TestFile:
    """Read and check a test file; raises `TestFileError` naming the offending entry."""
    try:
        data = _json(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise TestFileError("", f"cannot be read: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise TestFileError("", "is not UTF-8") from None
    _object(data, "", _FILE_KEYS)
    protocol = data.get("protocol")
    if not isinstance(protocol, str):
        raise TestFileError("protocol", "give the protocol's path, relative to this file")
    base = _base(data.get("base", {}), path)
    profiles = data.get("profiles", {})
    _object(profiles, "profiles", None)
    for name, profile in profiles.items():
        _changes(profile, f"profiles.{name}", _CHANGE_KEYS)
    tests = data.get("tests")
    if not isinstance(tests, list) or not tests:
        raise TestFileError("tests", "expected a list of tests")
    cases = tuple(_case(index, test, base, profiles) for index, test in enumerate(tests))
    return TestFile(path, (path.parent / protocol), cases)


def _json(text: str) -> Any:
    """A test file's JSON, read as records are (`crit.sources.records.loads`): numbers exact, a key given
    twice an error by its path, a BOM ignored."""
    try:
        return loads(text)
    except RecordSyntaxError as err:
        syntax = err.syntax
        if syntax is not None:
            where = f"line {syntax.lineno}, column {syntax.colno}"
            raise TestFileError(where, f"not valid JSON: {syntax.msg}") from None
        first = err.problems[0]
        raise TestFileError("" if first.path == "record" else first.path, first.message) from None


def _object(value: object, where: str, keys: Sequence[str] | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TestFileError(where, "expected an object")
    for name in value:
        if keys is not None and name not in keys:
            hint = did_you_mean(name, keys)
            raise TestFileError(f"{where}.{name}" if where else name,
                                "unknown key" + (f"; {hint}" if hint else f"; use {', '.join(keys)}"))
    return value


def _base(value: object, path: Path) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = loads((path.parent / value).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, RecordSyntaxError) as err:
            raise TestFileError("base", f"cannot read the record {value}: {err}") from None
    return _object(value, "base", None)


def _changes(value: object, where: str, keys: Sequence[str]) -> dict[str, Any]:
    changes = _object(value, where, keys)
    _object(changes.get("set", {}), f"{where}.set", None)
    drop = changes.get("drop", [])
    if not isinstance(drop, list) or not all(isinstance(x, str) for x in drop):
        raise TestFileError(f"{where}.drop", "expected a list of field names")
    return changes


def _apply(record: dict[str, Any], changes: Mapping[str, Any]) -> None:
    record.update(copy.deepcopy(changes.get("set", {})))
    for name in changes.get("drop", []):
        record.pop(name, None)


def _case(index: int, test: object, base: dict[str, Any], profiles: Mapping[str, Any]) -> Case:
    where = f"tests[{index}]"
    test = _changes(test, where, _TEST_KEYS)
    name = test.get("name")
    if not isinstance(name, str) or not name:
        raise TestFileError(f"{where}.name", "every test needs a name")
    record: Any = copy.deepcopy(test.get("record", base))
    if isinstance(record, dict):
        uses = test.get("with", [])
        if not isinstance(uses, list):
            raise TestFileError(f"{where}.with", "expected a list of profile names")
        for profile in uses:
            if profile not in profiles:
                hint = did_you_mean(str(profile), profiles)
                raise TestFileError(f"{where}.with", f"no profile {profile!r}" + (f"; {hint}" if hint else ""))
            _apply(record, profiles[profile])
        _apply(record, test)
    problems = _strings(test, "problems", where)
    expect = test.get("expect")
    if problems is None and expect not in DECISIONS:
        raise TestFileError(f"{where}.expect", "expected one of " + ", ".join(DECISIONS))
    if problems is not None and expect is not None:
        raise TestFileError(f"{where}.expect", "a record with problems gets no decision; remove 'expect'")
    outcomes = _object(test.get("outcomes", {}), f"{where}.outcomes", None)
    for ident, outcome in outcomes.items():
        if outcome not in OUTCOMES:
            raise TestFileError(f"{where}.outcomes.{ident}", "expected one of " + ", ".join(OUTCOMES))
    reasons = _object(test.get("reasons", {}), f"{where}.reasons", None)
    for ident, reason in reasons.items():
        if not isinstance(reason, str):
            raise TestFileError(f"{where}.reasons.{ident}", "expected the reason's exact text")
    return Case(index, name, record, expect, outcomes, _strings(test, "missing", where),
                _strings(test, "pending_judgments", where), reasons, problems)


def _strings(test: Mapping[str, Any], name: str, where: str) -> tuple[str, ...] | None:
    value = test.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise TestFileError(f"{where}.{name}", "expected a list of texts")
    return tuple(value)


def check_ids(tests: TestFile, protocol: ir.Protocol) -> None:
    """Every criterion a test names exists in the protocol."""
    known = [c.id for c in protocol.criteria()]
    for case in tests.cases:
        for kind in ("outcomes", "reasons"):
            for ident in getattr(case, kind):
                if ident not in known:
                    hint = did_you_mean(ident, known)
                    raise TestFileError(f"tests[{case.index}].{kind}.{ident}",
                                        f"{protocol.id} has no criterion {ident}" + (f"; {hint}" if hint else ""))


# ---- running -------------------------------------------------------------------------------


@dataclass
class CaseResult:
    """What one test found: its failures (empty when it passed), and every criterion's outcome."""

    case: Case
    failures: list[str]
    outcomes: dict[str, str]


def run_case(module: ModuleType, case: Case) -> CaseResult:
    """Run one test against an evaluator module (generated, or the committed one in pytest)."""
    problems = [str(p) for p in module.validate(case.record)]
    if case.problems is not None:
        wrong = problems != list(case.problems)
        shown = [f"problems: expected {_listed(case.problems)}", f"          got {_listed(problems)}"]
        return CaseResult(case, shown if wrong else [], {})
    if problems:
        return CaseResult(case, ["the record cannot be read:", *(f"  {p}" for p in problems)], {})
    result = module.evaluate(case.record)
    rows = {row.id: row for row in result.criteria}
    failures: list[str] = []
    if result.decision.value != case.expect:
        failures.append(f"decision: expected {case.expect}, got {result.decision.value}")
        failures += [f"  {line}" for line in _why(result, module)]
    for ident, expected in case.outcomes.items():
        row = rows[ident]
        if row.outcome.value != expected:
            failures.append(f"{ident} {_quoted(row.title)}: expected {expected}, got {row.outcome.value}")
            failures.append(f"  reason: {row.reason or '—'}")
    for ident, reason in case.reasons.items():
        if rows[ident].reason != reason:
            failures.append(f"{ident} reason: expected {reason!r}")
            failures.append(f"  got {rows[ident].reason!r}")
    for name, expected_paths in (("missing", case.missing), ("pending judgments", case.pending_judgments)):
        got = tuple(result.missing if name == "missing" else result.pending_judgments)
        if expected_paths is not None and got != expected_paths:
            failures.append(f"{name}: expected {_listed(expected_paths)}, got {_listed(got)}")
    return CaseResult(case, failures, {row.id: row.outcome.value for row in result.criteria})


def _why(result: Any, module: ModuleType) -> list[str]:
    """The top-level criteria behind a decision, with their reasons."""
    parents = {info.id: info.parent for info in module.CRITERIA}
    top = [row for row in result.criteria if parents.get(row.id) is None]
    decision = result.decision.value
    if decision == "eligible":
        return ["because every inclusion is met or does not apply, and no exclusion is met"]
    if decision == "ineligible":
        blocking = [r for r in top if r.outcome.value == ("not met" if r.section == "inclusion" else "met")]
    else:
        blocking = [r for r in top if r.outcome.value in (
            "unknown", "not met or not applicable" if r.section == "inclusion" else "met or not applicable")]
    lines = [f"because {r.id} is {r.outcome.value}: {r.reason}" for r in blocking]
    if decision == "needs review":
        if result.missing:
            lines.append("missing: " + ", ".join(result.missing))
        if result.pending_judgments:
            lines.append("pending judgments: " + ", ".join(result.pending_judgments))
    return lines


def _tests(count: int) -> str:
    return counted(count, "test")


def _listed(items: Sequence[str]) -> str:
    return "(" + ", ".join(items) + ")" if items else "none"


def _quoted(title: str) -> str:
    return f'"{title}"' if len(title) <= 60 else f'"{title[:57]}…"'


@dataclass
class Coverage:
    """How often the tests saw each criterion with each outcome."""

    ids: list[str]
    seen: dict[str, dict[str, int]]

    @classmethod
    def of(cls, protocol: ir.Protocol, results: Sequence[CaseResult]) -> Coverage:
        ids = [c.id for c in protocol.criteria()]
        seen = {ident: dict.fromkeys(OUTCOMES[:4], 0) for ident in ids}
        for result in results:
            for ident, outcome in result.outcomes.items():
                seen[ident][COVERED.get(outcome, outcome)] += 1
        return cls(ids, seen)

    def never(self, outcome: str) -> list[str]:
        return [ident for ident in self.ids if not self.seen[ident][outcome]]

    def render(self) -> str:
        header = ("criterion", "met", "not met", "unknown", "n/a", "never seen")
        rows: list[tuple[str, ...]] = [header]
        for ident in self.ids:
            counts = self.seen[ident]
            missing = [o for o in OUTCOMES[:3] if not counts[o]]
            rows.append((ident, *(str(counts[o]) for o in OUTCOMES[:4]), ", ".join(missing) or "—"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = []
        for row in rows:
            cells = [row[0].ljust(widths[0]), *(row[i].rjust(widths[i]) for i in range(1, 5)), row[5]]
            lines.append("  ".join(cells).rstrip())
        complete = [i for i in self.ids if all(self.seen[i][o] for o in OUTCOMES[:3])]
        lines.append("")
        lines.append(f"{len(complete)} of {counted(len(self.ids), 'criterion')} seen met, not met and unknown")
        for outcome in OUTCOMES[:3]:
            never = self.never(outcome)
            lines.append(f"never {outcome}: {', '.join(never) if never else 'none'}")
        return "\n".join(lines)


# ---- the command -------------------------------------------------------------------------------


def _test_files(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.glob("*.tests.json") if p.is_file())
        else:
            yield path


@click.command("test")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--coverage", is_flag=True, help="Show, by criterion, which outcomes the tests saw.")
@click.option("-v", "--verbose", is_flag=True, help="Name every test, not only the failing ones.")
def test_command(files: Sequence[Path], coverage: bool, verbose: bool) -> None:
    """Run protocol test FILES (JSON; a directory means its *.tests.json; default protocols/tests)."""
    default = sorted(Path("protocols/tests").glob("*.tests.json"))
    paths = list(_test_files(files)) if files else default
    if not paths:
        click.echo("crit: no test files (*.tests.json) found", err=True)
        raise click.exceptions.Exit(2)
    failed = False
    for path in paths:
        shown = display_path(path)
        try:
            tests = read_tests(path)
        except TestFileError as err:
            click.echo(f"crit: {shown}: {err}", err=True)
            raise click.exceptions.Exit(3) from None
        protocol, loaded = compile_or_fail(tests.protocol)
        try:
            check_ids(tests, protocol)
        except TestFileError as err:
            click.echo(f"crit: {shown}: {err}", err=True)
            raise click.exceptions.Exit(3) from None
        module = evaluator(protocol, loaded)
        results = [run_case(module, case) for case in tests.cases]
        click.echo(f"{shown}: {protocol.id} ({display_path(tests.protocol)}), {_tests(len(results))}")
        for result in results:
            if result.failures:
                click.echo(f"FAIL  tests[{result.case.index}] {result.case.name}")
                click.echo("\n".join(f"      {line}" for line in result.failures))
            elif verbose:
                click.echo(f"ok    tests[{result.case.index}] {result.case.name}")
        failures = sum(1 for r in results if r.failures)
        failed = failed or failures > 0
        click.echo(f"{len(results) - failures} passed, {failures} failed")
        if coverage:
            click.echo(f"\ncoverage of {protocol.id} by {_tests(len(results))}\n")
            click.echo(Coverage.of(protocol, results).render())
    if failed:
        raise click.exceptions.Exit(1)


__all__ = ["Case", "CaseResult", "Coverage", "TestFile", "TestFileError", "check_ids",
           "read_tests", "run_case", "test_command"]
