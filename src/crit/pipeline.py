"""Compile and load a protocol, as every command does: the one place that turns a `.crit` file
into its checked protocol, its artefacts and an imported evaluator, and the exit codes that
commands fail with.

Commands (build, eval, screen, test, diff) import this module; it imports no command and not the
CLI, so the command line sits on top and nothing imports it back. What a screening worker needs
without the compiler (exit codes, importing an evaluator) is in `crit.process`.
"""

from __future__ import annotations

import importlib
import itertools
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import click

from crit import ir
from crit.backends.markdown import emit_markdown
from crit.backends.python import emit_python
from crit.diagnostics import CritError, render_all
from crit.driver import Loaded, load
from crit.english import counted
from crit.process import EXIT_ERRORS, EXIT_RECORD, Failure, import_evaluator
from crit.sources.records import RecordSyntaxError, loads
from crit.text import terminal

# The SQL backend, by module name: it brings sqlglot (about a third of a second to import), which
# only a build that asks for SQL should pay for. tests/test_layering.py reads this name as an import.
SQL_BACKEND = "crit.backends.sql"


def compile_or_fail(path: Path) -> tuple[ir.Protocol, Loaded]:
    """The checked protocol, or its diagnostics printed as `crit check` prints them and
    `Failure(EXIT_ERRORS)`."""
    loaded = Loaded()
    try:
        return load(path, loaded), loaded
    except CritError as err:
        click.echo(render_all(err.diagnostics, loaded.sources), err=True)
        click.echo(f"\n{counted(len(err.diagnostics), 'error')} in {path}", err=True)
        raise Failure(EXIT_ERRORS) from None


def outputs(protocol: ir.Protocol, loaded: Loaded, sql: str | None = None) -> dict[str, str]:
    """The artefacts of one protocol, by file name: the evaluator, the rendering and, when a
    dialect is asked for, the SQL query (`NAME.sql` in DuckDB's dialect, `NAME.DIALECT.sql` in
    another). A construct the SQL backend cannot translate is a diagnostic, printed as `crit
    check` prints them, and `Failure(EXIT_ERRORS)`: never a file with the construct left out."""
    stem = Path(protocol.source).stem
    source_text = loaded.sources.get(protocol.source, "")
    out = {f"{stem}.py": emit_python(protocol, source_text), f"{stem}.md": emit_markdown(protocol)}
    if sql is None:
        return out
    try:
        query = importlib.import_module(SQL_BACKEND).emit_sql(protocol, sql)
    except CritError as err:
        click.echo(render_all(err.diagnostics, loaded.sources), err=True)
        click.echo(f"\n{counted(len(err.diagnostics), 'error')} in {protocol.source} (SQL backend)", err=True)
        raise Failure(EXIT_ERRORS) from None
    out[f"{stem}.sql" if sql == "duckdb" else f"{stem}.{sql}.sql"] = query
    return out


_modules = itertools.count(1)


def evaluator(protocol: ir.Protocol, loaded: Loaded) -> ModuleType:
    """The generated evaluator for `protocol`, written to a temporary file and imported from it."""
    stem = Path(protocol.source).stem
    with tempfile.TemporaryDirectory(prefix="crit-") as tmp:
        path = Path(tmp) / f"{stem}.py"
        path.write_text(emit_python(protocol, loaded.sources.get(protocol.source, "")), encoding="utf-8")
        return import_evaluator(path, f"_crit_evaluator_{next(_modules)}_{stem}")


def read_records(path: Path) -> list[Any]:
    """The records in a JSON file (an object, or a list of them), read exactly by
    `crit.sources.records.loads`; anything unreadable is one line per problem and exit 3."""
    try:
        text = path.read_text(encoding="utf-8") if str(path) != "-" else sys.stdin.read()
    except (OSError, UnicodeDecodeError) as err:
        click.echo(f"crit: cannot read {terminal(str(path))}: {terminal(str(err))}", err=True)
        raise Failure(EXIT_RECORD) from None
    try:
        data = loads(text)
    except RecordSyntaxError as err:
        syntax = err.syntax
        if syntax is not None:  # where the text stops being JSON, as file:line:column
            place = f"{terminal(str(path))}:{syntax.lineno}:{syntax.colno}"
            click.echo(f"crit: {place}: not valid JSON: {syntax.msg}", err=True)
        for problem in err.problems if syntax is None else ():
            where = "" if problem.path == "record" else f"{terminal(problem.path)}: "
            click.echo(f"crit: {terminal(str(path))}: {where}{terminal(problem.message)}", err=True)
        raise Failure(EXIT_RECORD) from None
    return data if isinstance(data, list) else [data]
