"""`crit schema`: the table layout of a protocol's patient records, as `CREATE TABLE` statements
in a SQL dialect (`--sql DIALECT`) or as the JSON Schema of the record format (`--json-schema`).
Both come from one set of layout facts, `crit.sources.tables`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from crit.backends.sql import DIALECTS
from crit.diagnostics import CritError, render_all
from crit.english import counted
from crit.pipeline import compile_or_fail
from crit.process import EXIT_ERRORS, EXIT_USAGE, Failure
from crit.sources import tables


@click.command("schema")
@click.argument("protocol_file", type=click.Path(path_type=Path))
@click.option("--sql", "dialect", type=click.Choice(DIALECTS), default=None,
              help="Print the CREATE TABLE statements of the layout in this SQL dialect.")
@click.option("--json-schema", "as_json_schema", is_flag=True,
              help="Print the JSON Schema (draft 2020-12) of the protocol's patient records.")
def schema_command(protocol_file: Path, dialect: str | None, as_json_schema: bool) -> None:
    """Print the table layout of PROTOCOL_FILE's patient records: CREATE TABLE statements
    (--sql DIALECT) or the JSON Schema of the record format (--json-schema)."""
    if (dialect is None) == (not as_json_schema):
        click.echo("crit schema: give one of --sql DIALECT or --json-schema", err=True)
        raise Failure(EXIT_USAGE)
    protocol, loaded = compile_or_fail(protocol_file)
    try:
        if as_json_schema:
            click.echo(json.dumps(tables.json_schema(protocol), indent=2, ensure_ascii=False))
        else:
            assert dialect is not None
            click.echo(";\n\n".join(tables.create_statements(protocol, dialect)) + ";")
    except CritError as err:
        click.echo(render_all(err.diagnostics, loaded.sources), err=True)
        click.echo(f"\n{counted(len(err.diagnostics), 'error')} in {protocol_file} (table layout)", err=True)
        raise Failure(EXIT_ERRORS) from None
