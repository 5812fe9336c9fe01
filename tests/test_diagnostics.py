"""Every diagnostic as a protocol author sees it.

`tests/errors/NAME.crit` is a small protocol with one kind of mistake; `NAME.expected` is the
exact output `crit check` must print for it (location, message, quoted line, caret, hint).
Names start with the error code, so every code in `src/crit` must have a case here.

Cases in KNOWN_BUGS hold the output the compiler *should* print and fail today; fix the
compiler, then remove the case from KNOWN_BUGS (if the fix words it differently, review
its output and rewrite that `.expected` by hand). Rewrite the other `.expected` files after
reviewing a change with `pytest tests/test_diagnostics.py --update-golden`.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from crit import cli, ir
from crit.ast import Span
from crit.check.checker import check
from crit.diagnostics import CritError, Diagnostic, render, render_all
from crit.driver import Loaded, load
from crit.syntax import parse
from crit.text import split_lines

ROOT = Path(__file__).resolve().parents[1]
ERRORS = ROOT / "tests" / "errors"
CASES = sorted(path.stem for path in ERRORS.glob("*.crit"))

_CASCADE = (
    "a field whose declared type is rejected is dropped, so every use of it is also reported "
    "as an unknown field whose hint says to declare it (check.py: declare_fields/lookup)"
)

KNOWN_BUGS: dict[str, str] = {
    "E001-bad-dedent": (
        "the hint never offers the column of the block just left, and 'or deeper' is what the "
        "author did (syntax/grammar.py: Indenter.process)"
    ),
    "E003-criterion-without-body": (
        "an end of block in the middle of the file is placed on the file's last line "
        "(syntax/parse.py: _syntax_diagnostic uses _end_position for every _DEDENT)"
    ),
    "E003-criterion-without-body-before-sibling": (
        "the hint lists the lexer's terminals ('the end of the line'), not what the parser "
        "accepts: an indented block (syntax/parse.py: _syntax_diagnostic uses err.expected)"
    ),
    "E201-record-field-outside-quantifier": (
        "the hint says to declare a field that is declared, in a record (check.py: lookup)"
    ),
    "E202-invalid-date": "the hint says to write YYYY-MM-DD, which the author did (check.py: literal)",
}
# Cases where the compiler raises a Python exception instead of reporting a diagnostic.
CRASHES: set[str] = set()


def _cases(known: set[str] | dict[str, str]) -> list[object]:
    params: list[object] = []
    for name in CASES:
        marks = []
        if name in known:
            reason = KNOWN_BUGS.get(name, "the compiler crashes on this case")
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
        params.append(pytest.param(name, id=name, marks=marks))
    return params


@pytest.fixture
def at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the repository root, so diagnostics show `tests/errors/NAME.crit`."""
    monkeypatch.chdir(ROOT)


def compile_case(name: str) -> tuple[list[Diagnostic], Loaded]:
    loaded = Loaded()
    with pytest.raises(CritError) as info:
        load(Path("tests", "errors", f"{name}.crit"), loaded)
    return info.value.diagnostics, loaded


def rendered(name: str) -> str:
    diagnostics, loaded = compile_case(name)
    return render_all(diagnostics, loaded.sources) + "\n"


# ---- the cases -----------------------------------------------------------------------------


@pytest.mark.usefixtures("at_root")
@pytest.mark.parametrize("name", _cases(KNOWN_BUGS))
def test_diagnostic_output(name: str, request: pytest.FixtureRequest) -> None:
    text = rendered(name)
    expected = ERRORS / f"{name}.expected"
    if request.config.getoption("--update-golden") and name not in KNOWN_BUGS:
        expected.write_text(text, encoding="utf-8", newline="\n")
    assert text == expected.read_bytes().decode("utf-8"), f"{name}: the output differs from {expected.name}"


def test_cases_are_paired_and_named_by_code() -> None:
    assert len(CASES) >= 40
    expected = sorted(path.stem for path in ERRORS.glob("*.expected"))
    assert expected == CASES, "every NAME.crit needs a NAME.expected and vice versa"
    for name in CASES:
        assert re.fullmatch(r"E\d{3}(-[a-z0-9]+)+", name), f"{name}: name it CODE-situation"
        text = (ERRORS / f"{name}.expected").read_text(encoding="utf-8")
        assert f"error[{name[:4]}]" in text, f"{name}: its output has no {name[:4]} error"
        assert text.endswith("\n") and not text.endswith("\n\n")


def test_every_error_code_in_the_source_has_a_case() -> None:
    codes: set[str] = set()
    for path in (ROOT / "src" / "crit").rglob("*.py"):
        codes.update(re.findall(r"[\"'](E\d{3})[\"']", path.read_text(encoding="utf-8")))
    assert {"E000", "E001", "E101", "E201", "E305"} <= codes  # the scan itself works
    covered = {name[:4] for name in CASES}
    missing = sorted(codes - covered)
    assert not missing, f"add tests/errors/CODE-situation.crit and .expected for: {missing}"


# ---- rendering -----------------------------------------------------------------------------


def _check_caret(diagnostic: Diagnostic, sources: dict[str, str]) -> None:
    span = diagnostic.span
    lines = render(diagnostic, sources).split("\n")
    assert lines[0].startswith(f"{span.file}:{span.line}:{span.column}: error[{diagnostic.code}]: ")
    source = sources.get(span.file)
    if source is None:  # nothing to quote (an unreadable file)
        assert all(" | " not in line for line in lines)
        return
    number = str(span.line)
    gutter = " " * len(number) + " |"
    source_line = split_lines(source)[span.line - 1]
    assert lines[1] == gutter
    assert lines[2].startswith(f"{number} | ")
    quoted = lines[2][len(number) + 3 :]
    assert len(quoted) == len(source_line), "the quoted line must keep one cell per character"
    assert lines[3].startswith(gutter + " ")
    marks = lines[3][len(gutter) + 1 :]
    carets = marks.lstrip(" ")
    assert carets and set(carets) == {"^"}, lines[3]
    assert len(marks) - len(carets) == span.column - 1, "the caret must start under the column"
    assert span.column - 1 <= len(source_line), "the column must be on the line (or just past it)"
    if span.end_line == span.line and span.end_column > span.column:
        underlined = source_line[span.column - 1 : span.end_column - 1]
        assert len(carets) == max(len(underlined), 1)
    if diagnostic.hint is not None:
        assert lines[4] == f"{' ' * len(number)} = hint: {diagnostic.hint}"


@pytest.mark.usefixtures("at_root")
@pytest.mark.parametrize("name", _cases(CRASHES))
def test_caret_is_under_the_reported_column(name: str) -> None:
    diagnostics, loaded = compile_case(name)
    assert diagnostics
    for diagnostic in diagnostics:
        _check_caret(diagnostic, loaded.sources)


@pytest.mark.usefixtures("at_root")
def test_caret_underlines_the_name_the_message_quotes() -> None:
    for name in ("E201-unknown-field", "E203-not-in-enum", "E207-count-not-a-list",
                 "E201-line-indented-with-tab", "E203-not-in-enum-no-suggestion"):
        diagnostics, loaded = compile_case(name)
        (diagnostic,) = diagnostics
        span = diagnostic.span
        line = split_lines(loaded.sources[span.file])[span.line - 1]
        quoted = re.search(r"'([^']+)'", diagnostic.message)
        assert quoted is not None
        assert line[span.column - 1 : span.end_column - 1] == quoted.group(1), name


def test_render_without_source_keeps_the_hint() -> None:
    diagnostic = Diagnostic(code="E999", severity="error", message="something is wrong",
                            span=Span("gone.crit", 3, 2, 3, 4), hint="fix it")
    assert render(diagnostic, {}) == "gone.crit:3:2: error[E999]: something is wrong\n  = hint: fix it"


# ---- several errors --------------------------------------------------------------------------


@pytest.mark.usefixtures("at_root")
def test_several_errors_are_all_reported_in_line_order() -> None:
    diagnostics, loaded = compile_case("E208-several-errors")
    assert [(d.span.line, d.code) for d in diagnostics] == [
        (15, "E204"), (16, "E203"), (19, "E208"), (20, "E301"), (21, "E204"),
    ]
    text = render_all(diagnostics, loaded.sources)
    assert text.count("error[") == 5
    assert len(text.split("\n\n")) == 5, "diagnostics are separated by one blank line"


def test_errors_are_sorted_by_line_not_by_discovery() -> None:
    # Definitions are checked before criteria, so the error in the last line is found first.
    source = (
        'protocol ONC1 "Oncology trial"\n'
        "\n"
        "patient\n"
        '  age: integer "Age at screening, in years"\n'
        '  ecog: integer "ECOG performance status"\n'
        "\n"
        "inclusion\n"
        '  I1 "Adults"\n'
        "    agee >= 18\n"
        '  I2 "ECOG 0 to 1"\n'
        "    fit\n"
        "\n"
        'define fit "Fit": ecog <= 1 points\n'
    )
    with pytest.raises(CritError) as info:
        check(parse(source, "onc1.crit"), [], "0" * 64)
    assert [(d.span.line, d.code) for d in info.value.diagnostics] == [(9, "E201"), (13, "E204")]


def test_syntax_errors_in_the_builder_are_all_reported() -> None:
    source = (
        'protocol VAC1 "Vaccine trial"\n'
        "\n"
        "patient\n"
        '  screening: date "Screening visit date"\n'
        '  last_live_vaccine: date? "Latest live vaccine"\n'
        '  ana: titer "ANA titer"\n'
        "\n"
        "exclusion\n"
        '  E1 "Live vaccine"\n'
        "    last_live_vaccine within 4 fortnights before screening\n"
        '  E2 "ANA"\n'
        "    ana > 2:80\n"
    )
    with pytest.raises(CritError) as info:
        parse(source, "vac1.crit")
    assert [(d.span.line, d.code) for d in info.value.diagnostics] == [(10, "E007"), (12, "E006")]


# ---- known bugs without a wording of their own -------------------------------------------------


def test_no_hint_shows_a_placeholder() -> None:
    source = (
        'protocol ONC1 "Oncology trial"\n'
        "\n"
        "enum Result\n"
        "  negative\n"
        "  positive\n"
        "\n"
        "patient\n"
        '  ecog: integer "ECOG performance status"\n'
        '  haq_di: decimal "HAQ disability index"\n'
        '  site: text "Site"\n'
        '  anti_dsdna: Result "Anti-dsDNA"\n'
        "\n"
        "inclusion\n"
        '  I1 "Checks"\n'
        '    ecog <= "1"\n'
        "    haq_di = true\n"
        '    site >= "10"\n'
        "    anti_dsdna = positive\n"
    )
    with pytest.raises(CritError) as info:
        check(parse(source, "onc1.crit"), [], "0" * 64)
    hints = [d.hint or "" for d in info.value.diagnostics]
    assert len(hints) == 4
    assert not [h for h in hints if re.search(r"\bX\b", h)], hints


def test_offset_temperature_units_are_not_silently_scaled() -> None:
    source = (
        'protocol INF1 "Infection trial"\n'
        "\n"
        "patient\n"
        '  temperature: quantity degC "Body temperature"\n'
        "\n"
        "exclusion\n"
        '  E1 "Fever"\n'
        "    temperature >= 100 degF\n"
    )
    try:
        protocol = check(parse(source, "inf1.crit"), [], "0" * 64)
    except CritError:
        return  # rejecting offset units is an acceptable fix
    (line,) = protocol.exclusion[0].items
    assert isinstance(line, ir.Line) and isinstance(line.expr, ir.Compare)
    threshold = line.expr.right
    assert isinstance(threshold, ir.Const) and isinstance(threshold.value, Decimal)
    assert abs(threshold.value - Decimal("37.78")) < Decimal("0.01")


# ---- the command line ------------------------------------------------------------------------


@pytest.mark.usefixtures("at_root")
@pytest.mark.parametrize("name", [
    "E000-not-utf8", "E001-bad-dedent", "E002-single-quotes", "E003-unexpected-token",
    "E101-import-not-found", "E104-error-in-imported-schema", "E201-unknown-field",
    "E208-several-errors", "E305-no-header",
])
def test_cli_check_prints_the_diagnostics(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = f"tests/errors/{name}.crit"
    code = cli.main(["check", path])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_ERRORS
    assert out == ""
    assert "Traceback" not in err
    diagnostics, loaded = compile_case(name)
    count = len(diagnostics)
    summary = f"{count} error{'s' if count != 1 else ''} in {path}"
    assert err == render_all(diagnostics, loaded.sources) + f"\n\n{summary}\n"


@pytest.mark.usefixtures("at_root")
def test_cli_check_reports_every_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = tmp_path / "good.crit"
    good.write_text(
        'protocol ONC1 "Oncology trial"\n\npatient\n  age: integer "Age"\n\n'
        'inclusion\n  I1 "Adults"\n    age >= 18\n',
        encoding="utf-8",
    )
    bad = "tests/errors/E201-unknown-field.crit"
    code = cli.main(["check", bad, str(good), "tests/errors/E002-single-quotes.crit"])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_ERRORS
    assert out.startswith(f"{good}: ok (ONC1") and out.count("\n") == 1
    assert "error[E201]: unknown field 'haemoglobin'" in err
    assert "error[E002]: unexpected character" in err
    assert "Traceback" not in err and "internal error" not in err


@pytest.mark.usefixtures("at_root")
def test_cli_check_never_reports_an_internal_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["check", "tests/errors/E104-zero-unit-factor.crit"])
    err = capsys.readouterr().err
    assert "internal error" not in err
    assert code == cli.EXIT_ERRORS
    assert "error[E104]" in err
