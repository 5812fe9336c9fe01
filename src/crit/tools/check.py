"""`crit check`: parse, type-check and lint protocols, and print every diagnostic.

A command of its own module because lint loads z3, which no other everyday command needs.

A FHIR mapping (`NAME.fhir.toml`) is checked against the schema its `schema` key names, and a
protocol's check also checks the mapping beside each schema it imports (`<schema stem>.fhir.toml`),
so a schema and its mapping cannot drift apart unnoticed.

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
from crit.ast import Span
from crit.config import ConfigError, load_config
from crit.diagnostics import CritError, Diagnostic, render_all
from crit.driver import Loaded, display_path, load
from crit.english import counted
from crit.pipeline import compile_or_fail
from crit.process import EXIT_ERRORS, EXIT_USAGE, Failure
from crit.sources import fhir_mapping
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
    print every error and warning with its place and a hint. A FILE ending in .toml is a FHIR
    mapping, checked against the schema it names; a protocol's check includes the FHIR mapping
    beside each schema it imports."""
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
    results: list[Result] = []
    seen: set[Path] = set()
    for path in files:
        if is_mapping(path):
            if path.resolve() not in seen:
                results.append(diagnose_mapping(path, seen))
            continue
        results.append(diagnose(path, strict))
        if results[-1].protocol is not None:
            results.extend(diagnose_mapping(found, seen) for found in mappings_beside(results[-1].loaded, path)
                           if found.resolve() not in seen)
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
                 protocol: ir.Protocol | None, mapping: fhir_mapping.Mapping | None = None) -> None:
        self.path = path
        self.diagnostics = diagnostics
        self.loaded = loaded
        self.protocol = protocol
        self.mapping = mapping

    @property
    def failed(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)


def is_mapping(path: Path) -> bool:
    """A FHIR mapping file, not a protocol: `crit check` checks it against its schema."""
    return path.suffix == ".toml"


def mappings_beside(loaded: Loaded, protocol: Path) -> list[Path]:
    """The FHIR mapping beside each schema a protocol imports (`<schema stem>.fhir.toml`)."""
    own = display_path(protocol)
    out = []
    for shown in loaded.sources:
        candidate = Path(shown).with_suffix(".fhir.toml")
        if shown != own and candidate.is_file():
            out.append(candidate)
    return out


class MappingCheck:
    """One mapping's check: its diagnostics, the texts they quote, and the mapping if it loaded."""

    def __init__(self, diagnostics: list[Diagnostic], sources: dict[str, str],
                 mapping: fhir_mapping.Mapping | None) -> None:
        self.diagnostics = diagnostics
        self.sources = sources
        self.mapping = mapping


# The protocol a mapping's schema is checked through: a schema alone has no header or criteria.
_SCHEMA_PROTOCOL = 'protocol SCHEMA "The schema a FHIR mapping maps"\n\nimport "{schema}"\n\n' \
                   'inclusion\n  I1 "Nothing: only the schema is checked"\n    true\n'


def check_mapping(path: Path) -> MappingCheck:
    """A FHIR mapping checked against the schema its `schema` key names: the schema's own
    errors, then the mapping's, each placed in its file."""
    shown = display_path(path)
    try:
        mapping = fhir_mapping.load(path)
    except CritError as err:
        try:
            text = fhir_mapping.read_text(path)
        except CritError:
            text = ""
        return MappingCheck(err.diagnostics, {shown: text}, None)
    sources = {mapping.file: mapping.source}
    schema = mapping.schema_path()
    locator = fhir_mapping.Locator(mapping.file, mapping.source)
    if not schema.name.endswith(".crit") or not schema.is_file():
        where = locator.value(("schema",))
        return MappingCheck([Diagnostic(
            code="F119", severity="error", span=where,
            message=f"the schema {mapping.schema} cannot be read: "
                    + ("it is not a .crit file" if not schema.name.endswith(".crit") else "there is no such file"),
            hint="name the schema file this mapping maps, relative to the mapping, e.g. schema = \"autoimmune.crit\"",
        )], sources, mapping)
    loaded = Loaded()
    wrapper = schema.parent / f"{path.name}.crit"
    try:
        protocol = load(wrapper, loaded, text=_SCHEMA_PROTOCOL.format(schema=schema.name.replace('"', "")))
    except CritError as err:
        sources |= loaded.sources
        own = display_path(wrapper)
        return MappingCheck([_at_schema_key(d, locator) if d.span.file == own else d for d in err.diagnostics],
                            sources, mapping)
    diagnostics = fhir_mapping.check(mapping, *schema_of(protocol, protocol.source))
    return MappingCheck(diagnostics, sources, mapping)


def schema_of(protocol: ir.Protocol, own: str) -> tuple[list[ir.Field], list[ir.Record]]:
    """The patient fields and records a protocol's schemas declare, not the protocol file itself:
    what the mapping beside a schema maps."""
    return ([f for f in protocol.fields if f.span.file != own],
            [r for r in protocol.records if r.span.file != own])


def _at_schema_key(diagnostic: Diagnostic, locator: fhir_mapping.Locator) -> Diagnostic:
    """A problem with the schema file as a whole (not a schema, cannot be imported), placed at
    the mapping's `schema` key."""
    span: Span = locator.value(("schema",))
    return Diagnostic(code="F119", severity="error", span=span, message=diagnostic.message,
                      hint="name the schema file this mapping maps (a .crit file of enums, records and "
                           "patient fields), relative to the mapping")


def diagnose_mapping(path: Path, seen: set[Path]) -> Result:
    """What `crit check` finds in one FHIR mapping (each mapping once per run)."""
    seen.add(path.resolve())
    checked = check_mapping(path)
    loaded = Loaded(sources=checked.sources)
    return Result(path, checked.diagnostics, loaded, None, mapping=checked.mapping)


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
    line per protocol or mapping that checks, on stdout."""
    failed = False
    seen: set[Path] = set()
    for path in files:
        if is_mapping(path):
            if path.resolve() not in seen:
                failed = not _mapping_text(path, seen) or failed
            continue
        try:
            protocol, loaded = compile_or_fail(path)  # prints the errors as every command does
        except Failure:
            failed = True
            continue
        failed = not _protocol_text(path, protocol, loaded, strict) or failed
        for mapping in mappings_beside(loaded, path):
            if mapping.resolve() not in seen:
                failed = not _mapping_text(mapping, seen) or failed
    if failed:
        raise Failure(EXIT_ERRORS)


def _protocol_text(path: Path, protocol: ir.Protocol, loaded: Loaded, strict: bool) -> bool:
    """A checked protocol's lint warnings (errors under --strict) and its line; whether it passes."""
    warnings = lint(protocol)
    if strict and warnings:
        errors = as_errors(warnings)
        click.echo(render_all(errors, loaded.sources), err=True)
        click.echo(f"\n{counted(len(errors), 'error')} in {path}", err=True)
        return False
    if warnings:
        click.echo(render_all(warnings, loaded.sources) + "\n", err=True)
    noted = f", {counted(len(warnings), 'warning')}" if warnings else ""
    click.echo(f"{path}: ok ({protocol.id}, {counted(len(protocol.criteria()), 'criterion')}, "
               f"{counted(len(protocol.fields), 'field')}{noted})")
    return True


def _mapping_text(path: Path, seen: set[Path]) -> bool:
    """One mapping's check for people; whether it is free of errors."""
    seen.add(path.resolve())
    checked = check_mapping(path)
    if checked.diagnostics:
        click.echo(render_all(checked.diagnostics, checked.sources), err=True)
        click.echo(f"\n{counted(len(checked.diagnostics), 'error')} in {display_path(path)}", err=True)
        return False
    assert checked.mapping is not None
    manual = sum(1 for f in checked.mapping.fields if f.manual is not None)
    click.echo(f"{checked.mapping.file}: ok (FHIR mapping of {checked.mapping.schema}: "
               f"{counted(len(checked.mapping.fields) - manual, 'field')} from FHIR, {manual} entered by hand)")
    return True


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
             "E3": "criterion or definition error", "W0": "lint warning", "F1": "FHIR mapping error"}
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
