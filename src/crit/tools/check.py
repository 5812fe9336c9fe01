"""`crit check`: parse, type-check and lint protocols, and print every diagnostic.

A command of its own module because lint loads z3, which no other everyday command needs.

`--format` chooses who reads the diagnostics: `text` a person (the default: the source line, a
caret and the hint), `json` a program (one JSON object per line), `sarif` code scanning (one
SARIF 2.1.0 log), `github` a GitHub Actions log (workflow commands that annotate the lines of a
pull request). Whatever the format, the exit code is the same: 1 if any protocol has errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from crit import __version__, ir
from crit.config import ConfigError, load_config
from crit.diagnostics import CritError, Diagnostic, render_all
from crit.driver import Loaded, load
from crit.english import counted
from crit.pipeline import compile_or_fail
from crit.process import EXIT_ERRORS, EXIT_USAGE, Failure
from crit.tools.lint import as_errors, lint

FORMATS = ("text", "json", "sarif", "github")


@click.command("check")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--all", "every", is_flag=True,
              help="Check every protocol in the protocol directories of [tool.crit] (else protocols/), "
                   "and so every schema they import.")
@click.option("--strict/--no-strict", default=None,
              help="Treat lint warnings (W…) as errors (default: `strict` in [tool.crit], else no).")
@click.option("--format", "output_format", type=click.Choice(FORMATS), default="text", show_default=True,
              help="text for people; json (one object per line), sarif (SARIF 2.1.0) or github "
                   "(workflow annotations) for tools.")
def check_command(files: Sequence[Path], every: bool, strict: bool | None, output_format: str) -> None:
    """Parse, type-check and lint protocol FILES (or, with --all, every protocol of the project);
    print every error and warning with its place and a hint."""
    if not files and not every:
        raise click.UsageError("name the protocol FILES to check, or give --all")
    try:
        config = load_config()
    except ConfigError as err:
        click.echo(f"crit: {err}", err=True)
        raise Failure(EXIT_USAGE) from None
    strict = config.strict if strict is None else strict
    if every:
        files = [*files, *(p for d in config.protocols for p in sorted(d.glob("*.crit")) if p.is_file())]
        if not files:
            shown = ", ".join(f"{d.as_posix()}/" for d in config.protocols)
            click.echo(f"crit: no .crit files in {shown}", err=True)
            raise Failure(EXIT_USAGE)
    if output_format == "text":
        _check_text(files, strict)
        return
    results = [diagnose(path, strict) for path in files]
    failed = any(result.failed for result in results)
    if output_format == "json":
        for result in results:
            for diagnostic in result.diagnostics:
                click.echo(json_line(diagnostic))
    elif output_format == "sarif":
        click.echo(json.dumps(sarif(results), ensure_ascii=False, indent=2))
    else:
        for result in results:
            for diagnostic in result.diagnostics:
                click.echo(github_annotation(diagnostic))
    if failed:
        raise Failure(EXIT_ERRORS)


class Result:
    """One protocol's check: its diagnostics (errors, or lint warnings, or warnings as errors
    under --strict), the files read, and the checked protocol if it checked."""

    def __init__(self, path: Path, diagnostics: list[Diagnostic], loaded: Loaded,
                 protocol: ir.Protocol | None) -> None:
        self.path = path
        self.diagnostics = diagnostics
        self.loaded = loaded
        self.protocol = protocol

    @property
    def failed(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)


def diagnose(path: Path, strict: bool) -> Result:
    """What `crit check` finds in one protocol."""
    loaded = Loaded()
    try:
        protocol = load(path, loaded)
    except CritError as err:
        return Result(path, err.diagnostics, loaded, None)
    warnings = lint(protocol)
    return Result(path, as_errors(warnings) if strict else warnings, loaded, protocol)


def _check_text(files: Sequence[Path], strict: bool) -> None:
    """Diagnostics for people: each with its source line, a caret and the hint, on stderr; a
    line per protocol that checks, on stdout."""
    failed = False
    for path in files:
        try:
            protocol, loaded = compile_or_fail(path)  # prints the errors as every command does
        except Failure:
            failed = True
            continue
        warnings = lint(protocol)
        if strict and warnings:
            errors = as_errors(warnings)
            click.echo(render_all(errors, loaded.sources), err=True)
            click.echo(f"\n{counted(len(errors), 'error')} in {path}", err=True)
            failed = True
            continue
        if warnings:
            click.echo(render_all(warnings, loaded.sources) + "\n", err=True)
        noted = f", {counted(len(warnings), 'warning')}" if warnings else ""
        click.echo(f"{path}: ok ({protocol.id}, {counted(len(protocol.criteria()), 'criterion')}, "
                   f"{counted(len(protocol.fields), 'field')}{noted})")
    if failed:
        raise Failure(EXIT_ERRORS)


# ---- JSON lines -----------------------------------------------------------------------------


def json_line(diagnostic: Diagnostic) -> str:
    """One diagnostic as one line of JSON; `line` and `column` are 1-based and count characters
    (Unicode code points), `end_column` is exclusive."""
    span = diagnostic.span
    return json.dumps({
        "file": span.file, "line": span.line, "column": span.column,
        "end_line": span.end_line, "end_column": span.end_column,
        "severity": diagnostic.severity, "code": diagnostic.code,
        "message": diagnostic.message, "hint": diagnostic.hint,
    }, ensure_ascii=False)


# ---- SARIF 2.1.0 ----------------------------------------------------------------------------

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_SARIF_LEVELS = {"error": "error", "warning": "warning"}


def sarif(results: Iterable[Result]) -> dict[str, Any]:
    """One SARIF 2.1.0 log with one run of crit: a result per diagnostic, a rule per code.
    Columns are code points (`columnKind`), as crit counts them; file names are URIs relative
    to the working directory (`%SRCROOT%`), as code scanning expects of a checkout."""
    diagnostics = [d for result in results for d in result.diagnostics]
    codes = sorted({d.code for d in diagnostics})
    rules = [{"id": code, "name": code, "shortDescription": {"text": _rule_text(code)}} for code in codes]
    index = {code: i for i, code in enumerate(codes)}
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "crit", "version": __version__, "rules": rules}},
            "columnKind": "unicodeCodePoints",
            "originalUriBaseIds": {"%SRCROOT%": {"uri": Path.cwd().resolve().as_uri() + "/"}},
            "results": [_sarif_result(d, index[d.code]) for d in diagnostics],
        }],
    }


def _rule_text(code: str) -> str:
    kinds = {"E0": "syntax error", "E1": "schema error", "E2": "expression or type error",
             "E3": "criterion or definition error", "W0": "lint warning"}
    return f"crit {kinds.get(code[:2], 'diagnostic')} {code}"


def _sarif_result(diagnostic: Diagnostic, rule_index: int) -> dict[str, Any]:
    span = diagnostic.span
    text = diagnostic.message + (f"\nhint: {diagnostic.hint}" if diagnostic.hint else "")
    region = {"startLine": span.line, "startColumn": span.column}
    if (span.end_line, span.end_column) > (span.line, span.column):
        region |= {"endLine": span.end_line, "endColumn": span.end_column}
    return {
        "ruleId": diagnostic.code,
        "ruleIndex": rule_index,
        "level": _SARIF_LEVELS[diagnostic.severity],
        "message": {"text": text},
        "locations": [{"physicalLocation": {
            "artifactLocation": _artifact(span.file),
            "region": region,
        }}],
    }


def _artifact(file: str) -> dict[str, str]:
    """A file as a SARIF artifact location: a percent-encoded URI relative to `%SRCROOT%` (the
    working directory) when the file is under it, else an absolute `file:` URI."""
    path = Path(file)
    if path.is_absolute():
        return {"uri": path.as_uri()}
    return {"uri": quote(path.as_posix(), safe="/"), "uriBaseId": "%SRCROOT%"}


# ---- GitHub workflow commands ---------------------------------------------------------------


def github_annotation(diagnostic: Diagnostic) -> str:
    """`::error file=…,line=…,col=…,endLine=…,endColumn=…,title=…::message`: a workflow command
    that shows the diagnostic on its line in a pull request. Values are escaped as the Actions
    runner reads them back (`%`, CR and LF everywhere; `:` and `,` too in properties), so a
    message cannot end the command early or start another one."""
    span = diagnostic.span
    properties = {"file": span.file, "line": str(span.line), "col": str(span.column)}
    if span.end_line == span.line and span.end_column > span.column:
        properties |= {"endLine": str(span.end_line), "endColumn": str(span.end_column)}
    properties["title"] = f"crit {diagnostic.code}"
    listed = ",".join(f"{key}={escape_property(value)}" for key, value in properties.items())
    text = diagnostic.message + (f"\nhint: {diagnostic.hint}" if diagnostic.hint else "")
    return f"::{diagnostic.severity} {listed}::{escape_data(text)}"


def escape_data(text: str) -> str:
    """A workflow command's message, as @actions/core escapes it (`escapeData`)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value, as @actions/core escapes it (`escapeProperty`)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")
