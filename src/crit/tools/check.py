"""`crit check`: parse, type-check and lint protocols, and print every diagnostic.

A command of its own module because lint loads z3, which no other everyday command needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from crit.diagnostics import render_all
from crit.english import counted
from crit.pipeline import compile_or_fail
from crit.process import EXIT_ERRORS, Failure
from crit.tools.lint import as_errors, lint


@click.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--strict", is_flag=True, help="Treat lint warnings (W…) as errors.")
def check_command(files: Sequence[Path], strict: bool) -> None:
    """Parse, type-check and lint protocol FILES; print every error and warning with its place
    and a hint."""
    failed = False
    for path in files:
        try:
            protocol, loaded = compile_or_fail(path)
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
