"""`crit check --format text|json|sarif|github`: the same diagnostics for people, programs, code
scanning (SARIF 2.1.0, validated against the OASIS schema in tests/data) and GitHub Actions logs
(workflow commands, escaped so that no message can forge or end one). And NO_COLOR."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from crit.ast import Span
from crit.cli import cli
from crit.diagnostics import Diagnostic
from crit.tools.check import diagnose, github_annotation

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "tests" / "data" / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))

BROKEN = """\
protocol T1 "Hämoglobin ≥ 100 × 😀"

patient
  age: integer "Age"
  hemoglobin: quantity g/L "Hemoglobin"

inclusion
  I1 "Adult ≥ 18 😀" when agee >= 18
    hemoglobn >= 100 g/L
"""

WARNED = """\
protocol T2 "Warned"

patient
  age: integer "Age"
  unused: bool "Never used"

inclusion
  I1 "Adult"
    age >= 18
"""


@pytest.fixture
def protocols(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.chdir(tmp_path)  # no pyproject.toml above a temporary directory: built-in defaults
    (tmp_path / "broken.crit").write_text(BROKEN, encoding="utf-8")
    (tmp_path / "warned.crit").write_text(WARNED, encoding="utf-8")
    return Path("broken.crit"), Path("warned.crit")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["check", *args])
    return result.exit_code, result.stdout, result.stderr


def test_json_lines(protocols: tuple[Path, Path]) -> None:
    code, out, _ = run("--format", "json", *map(str, protocols))
    assert code == 1
    rows = [json.loads(line) for line in out.splitlines()]
    expected = diagnose(protocols[0], False).diagnostics + diagnose(protocols[1], False).diagnostics
    assert [(r["file"], r["line"], r["column"], r["end_column"], r["severity"], r["code"], r["message"], r["hint"])
            for r in rows] == [(d.span.file, d.span.line, d.span.column, d.span.end_column, d.severity, d.code,
                                d.message, d.hint) for d in expected]
    assert [r["code"] for r in rows] == ["E201", "E201", "W005"]
    assert rows[0]["column"] == BROKEN.split("\n")[7].index("agee") + 1  # characters, not bytes or UTF-16
    code, out, _ = run("--format", "json", str(protocols[1]))
    assert code == 0 and json.loads(out)["severity"] == "warning"
    code, out, _ = run("--format", "json", "--strict", str(protocols[1]))
    assert code == 1 and json.loads(out)["severity"] == "error"


@pytest.mark.parametrize("which", ["broken", "warned", "clean"])
def test_sarif_validates_against_the_sarif_2_1_0_schema(protocols: tuple[Path, Path], which: str) -> None:
    path = {"broken": protocols[0], "warned": protocols[1], "clean": ROOT / "protocols" / "jy231.crit"}[which]
    code, out, _ = run("--format", "sarif", str(path))
    log = json.loads(out)
    jsonschema.Draft4Validator(SCHEMA).validate(log)
    assert code == (1 if which == "broken" else 0)
    run_ = log["runs"][0]
    assert log["version"] == "2.1.0" and run_["tool"]["driver"]["name"] == "crit"
    assert run_["columnKind"] == "unicodeCodePoints"
    results = run_["results"]
    assert [r["ruleId"] for r in results] == {"broken": ["E201", "E201"], "warned": ["W005"], "clean": []}[which]
    for result in results:
        rule = run_["tool"]["driver"]["rules"][result["ruleIndex"]]
        assert rule["id"] == result["ruleId"]
    if which == "broken":
        first = results[0]
        assert first["level"] == "error"
        assert first["message"]["text"] == "unknown field 'agee'\nhint: did you mean 'age'?"
        location = first["locations"][0]["physicalLocation"]
        assert location["artifactLocation"] == {"uri": "broken.crit", "uriBaseId": "%SRCROOT%"}
        column = BROKEN.split("\n")[7].index("agee") + 1
        assert location["region"] == {"startLine": 8, "startColumn": column, "endLine": 8, "endColumn": column + 4}


def test_sarif_names_files_outside_the_working_directory_by_absolute_uri(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "here").mkdir()
    outside = tmp_path / "elsewhere" / "a b%.crit"
    outside.write_text(BROKEN, encoding="utf-8")
    monkeypatch.chdir(tmp_path / "here")
    _, out, _ = run("--format", "sarif", str(outside))
    log = json.loads(out)
    jsonschema.Draft4Validator(SCHEMA).validate(log)
    location = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert location == {"uri": outside.resolve().as_uri()}
    assert location["uri"].endswith("/elsewhere/a%20b%25.crit")


def test_sarif_schema_rejects_what_is_not_sarif() -> None:
    """The validation above can fail: a log without a version, or with a level SARIF does not
    know, is refused."""
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(SCHEMA).validate({"runs": []})
    bad = {"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "crit"}},
                                        "results": [{"message": {"text": "x"}, "level": "fatal"}]}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(SCHEMA).validate(bad)


# ---- GitHub workflow commands ---------------------------------------------------------------


def _unescape(value: str) -> str:
    """The Actions runner's reading of an escaped value (ActionCommand.UnescapeProperty/Data)."""
    for escaped, char in (("%0D", "\r"), ("%0A", "\n"), ("%3A", ":"), ("%2C", ","), ("%25", "%")):
        value = value.replace(escaped, char)
    return value


def parse_command(line: str) -> tuple[str, dict[str, str], str]:
    """A workflow command as the runner parses it: `::name key=value,…::message`."""
    assert line.startswith("::")
    end = line.index("::", 2)
    info, message = line[2:end], line[end + 2:]
    name, _, listed = info.partition(" ")
    properties = {}
    for pair in listed.split(","):
        key, _, value = pair.partition("=")
        properties[key] = _unescape(value)
    return name, properties, _unescape(message)


def test_github_annotations(protocols: tuple[Path, Path]) -> None:
    code, out, _ = run("--format", "github", *map(str, protocols))
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == (f"::error file=broken.crit,line=8,col={BROKEN.split(chr(10))[7].index('agee') + 1},"
                        f"endLine=8,endColumn={BROKEN.split(chr(10))[7].index('agee') + 5},title=crit E201"
                        "::unknown field 'agee'%0Ahint: did you mean 'age'?")
    assert [parse_command(line)[0] for line in lines] == ["error", "error", "warning"]


HOSTILE = [
    "line one\n::error file=evil.crit,line=1::forged",
    "carriage\rreturn and %0A already escaped and 100% sure",
    "a, b: c :: d",
    "\r\n::warning::x\n",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_github_annotations_cannot_be_forged(text: str) -> None:
    span = Span(f"dir,x:y/{text[:12]}.crit", 3, 4, 3, 9)
    diagnostic = Diagnostic(code="E201", severity="error", span=span, message=text, hint=text)
    line = github_annotation(diagnostic)
    assert "\n" not in line and "\r" not in line  # one command, on one line
    name, properties, message = parse_command(line)
    assert name == "error"
    assert properties == {"file": span.file, "line": "3", "col": "4", "endLine": "3", "endColumn": "9",
                          "title": "crit E201"}
    assert message == f"{text}\nhint: {text}"


def test_github_annotation_file_names_are_escaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    name = "a,b:c%0Ad.crit"
    (tmp_path / name).write_text(BROKEN, encoding="utf-8")
    _, out, _ = run("--format", "github", name)
    assert {parse_command(line)[1]["file"] for line in out.splitlines()} == {name}


def test_text_is_unchanged_and_the_default(protocols: tuple[Path, Path]) -> None:
    code, out, err = run(str(protocols[0]))
    assert code == 1 and out == ""
    assert err.startswith("broken.crit:8:")
    assert err.endswith("\n2 errors in broken.crit\n")
    code, out, err = run(str(protocols[1]))
    assert code == 0 and out == "warned.crit: ok (T2, 1 criterion, 2 fields, 1 warning)\n"
    assert "warning[W005]" in err


def test_no_color_is_honoured_by_the_progress_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    """crit colours one thing: `crit screen`'s progress bar, drawn by rich, which reads
    NO_COLOR. Everything else crit prints is plain text, coloured or not."""
    from crit.screening import screen

    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("FORCE_COLOR", "1")
    bar = screen._Progress(True, 10, "screening")
    try:
        assert bar.bar.console.no_color is True
        with bar.bar.console.capture() as captured:
            bar.bar.console.print("[bold red]x[/]")
        assert not re.search(r"\x1b\[[0-9;]*3[0-9]m", captured.get())  # no colour codes
    finally:
        bar.close()
