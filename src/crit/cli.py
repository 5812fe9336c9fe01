"""The `crit` command. Only this module reads and writes files for the user, and no Python
traceback reaches the user: errors are diagnostics, and anything unexpected is one line.

Exit codes: 0 success; 1 the protocol has errors, or `build --check` found generated files
stale; 2 bad usage; 3 a patient record could not be read; 4 an internal error.
"""

from __future__ import annotations

import gc
import importlib
import json
import re
import sys
import traceback
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from crit import __version__
from crit.config import SQL_DIALECTS, ConfigError, load_config
from crit.english import counted
from crit.files import UnsafeWrite, is_generated, refuse_symlink, write_atomic
from crit.pipeline import compile_or_fail, evaluator, outputs, read_records
from crit.process import EXIT_ERRORS, EXIT_INTERNAL, EXIT_OK, EXIT_RECORD, EXIT_USAGE, Failure
from crit.text import terminal as shown


def _protocol_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.crit") if p.is_file())


# The authoring, reviewing and screening tools live in modules of their own, imported when their
# command runs: `crit build` should not pay for z3 (check, diff) or the screening engines at start-up.
_COMMANDS = {
    "check": ("crit.tools.check", "check_command"),
    "fmt": ("crit.tools.fmt", "fmt_command"),
    "diff": ("crit.tools.diff", "diff_command"),
    "test": ("crit.tools.protocol_tests", "test_command"),
    "screen": ("crit.screening.screen", "screen_command"),
    "schema": ("crit.tools.schema", "schema_command"),
    "lsp": ("crit.lsp.server", "lsp_command"),
}


class _Commands(click.Group):
    """A group that imports a tool's module only when its command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in _COMMANDS and name not in self.commands:
            module, attribute = _COMMANDS[name]
            self.add_command(getattr(importlib.import_module(module), attribute))
        return super().get_command(ctx, name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="crit")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for internal errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """crit: compile clinical-trial eligibility criteria into evaluators and readable text."""
    ctx.obj = {"debug": debug}


@cli.command()
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Directory for the generated files (default: `output` in [tool.crit], else generated).")
@click.option("--check", "check_only", is_flag=True,
              help="Write nothing; exit 1 if any generated file is missing or stale.")
@click.option("--protocols", "protocol_dir", type=click.Path(path_type=Path), default=None,
              help="Where to find protocols when no FILE is given (default: `protocols` in [tool.crit], "
                   "else protocols).")
@click.option("--sql", "sql", type=click.Choice([*SQL_DIALECTS, "none"]), default=None,
              help="Also write the SQL query in this dialect: NAME.sql for duckdb, NAME.DIALECT.sql for "
                   "another; none: no SQL (default: `sql` in [tool.crit], else none).")
def build(file: Path | None, out_dir: Path | None, check_only: bool, protocol_dir: Path | None,
          sql: str | None) -> None:
    """Compile FILE (or every protocols/*.crit) to OUTPUT/NAME.py and OUTPUT/NAME.md, and with
    --sql (or `sql` in [tool.crit]) OUTPUT/NAME.sql. A protocol the SQL backend cannot translate
    is an error when SQL is asked for, never a query with the construct left out."""
    try:
        config = load_config()
    except ConfigError as err:
        click.echo(f"crit: {err}", err=True)
        raise Failure(EXIT_USAGE) from None
    out_dir = config.output if out_dir is None else out_dir
    sql = config.sql if sql is None else None if sql == "none" else sql
    directories = config.protocols if protocol_dir is None else (protocol_dir,)
    sources = [file] if file is not None else [p for d in directories for p in _protocol_files(d)]
    if not sources:
        shown = ", ".join(f"{d}/" for d in directories)
        click.echo(f"crit: no .crit files in {shown}", err=True)
        raise Failure(EXIT_USAGE)
    stale: list[Path] = []
    failed = refused = False
    for path in sources:
        try:
            protocol, loaded = compile_or_fail(path)
            artefacts = outputs(protocol, loaded, sql)
        except Failure:
            failed = True
            continue
        changed = [(out_dir / name, text) for name, text in artefacts.items()
                   if _current(out_dir / name) != text.encode("utf-8")]
        if check_only:
            stale += [target for target, _ in changed]
            continue
        try:
            _write_generated(out_dir, changed)
        except UnsafeWrite as err:
            click.echo(f"crit: {err}", err=True)
            refused = True
    if failed:
        raise Failure(EXIT_ERRORS)
    if refused:
        raise Failure(EXIT_USAGE)
    if stale:
        for target in stale:
            click.echo(f"stale: {target}", err=True)
        click.echo("generated files are out of date; run `crit build`", err=True)
        raise Failure(EXIT_ERRORS)
    if check_only:
        click.echo(f"generated files are up to date ({counted(len(sources), 'protocol')})")


def _current(target: Path) -> bytes | None:
    """What `target` holds now (through a link, for comparing only), or None if it holds nothing
    readable as a file."""
    try:
        return target.read_bytes() if target.is_file() else None
    except OSError:
        return None


# The Markdown rendering's visible header from before it carried the @generated comment.
_OLD_MARKDOWN_HEADER = re.compile(r"^Generated by crit from `[^\n]*` \(sha256 `[0-9a-f]{64}`\)\. Do not edit\.$",
                                  re.MULTILINE)


def _crit_wrote(target: Path) -> bool:
    """Whether `target` is a file crit generated: it carries the `@generated` mark (or, for a
    Markdown rendering written before the mark existed, that rendering's own header line)."""
    if is_generated(target):
        return True
    try:
        with target.open("rb") as handle:
            head = handle.read(2048).decode("utf-8", "replace")
    except OSError:
        return False
    return target.suffix == ".md" and _OLD_MARKDOWN_HEADER.search(head) is not None


def _write_generated(out_dir: Path, changed: list[tuple[Path, str]]) -> None:
    """Write one protocol's changed artefacts, each atomically, or (if any of them cannot be
    written safely) none of them: raises `UnsafeWrite` with the reason, in one line."""
    if not changed:
        return
    for directory in (out_dir, *out_dir.parents):
        if directory.is_symlink() or directory.exists():
            if not directory.is_dir():
                raise UnsafeWrite(f"cannot write into {directory}: it is a file, not a directory")
            break
    for target, _ in changed:
        refuse_symlink(target)
        if (target.exists() or target.is_symlink()) and not _crit_wrote(target):
            raise UnsafeWrite(f"{target} exists and was not generated by crit (it has no `@generated by crit` "
                              "line); crit will not overwrite it: move it away, or build elsewhere with -o")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for target, text in changed:
            write_atomic(target, text)  # refuses a link that appeared since, and never follows it
            click.echo(f"wrote {target}")
    except OSError as err:
        raise UnsafeWrite(f"cannot write into {out_dir}: {err.strerror or err}") from None


@cli.command(name="eval")
@click.argument("protocol_file", type=click.Path(path_type=Path))
@click.argument("record_file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--interpret", is_flag=True,
              help="Evaluate with the reference interpreter instead of the generated module.")
@click.option("--from", "source", type=click.Choice(("records", "fhir")), default="records", show_default=True,
              help="records: crit's patient records; fhir: FHIR R4 (a Bundle .json file, a directory of them, "
                   "or a bulk-data export directory of .ndjson files).")
@click.option("--mapping", type=click.Path(path_type=Path, dir_okay=False),
              help="--from fhir: the mapping file (default: SCHEMA.fhir.toml beside the protocol's schema).")
@click.option("--manual", type=click.Path(path_type=Path, dir_okay=False),
              help="--from fhir: the fields entered by hand, as JSON Lines (one object per patient, with its id).")
def eval_(protocol_file: Path, record_file: Path, as_json: bool, interpret: bool, source: str,
          mapping: Path | None, manual: Path | None) -> None:
    """Screen the patient record(s) in RECORD_FILE (a JSON object or a list of them; - for stdin).
    With --from fhir, print the record crit built for each patient in the FHIR input, with the
    resources each field came from, then the criteria."""
    if source != "fhir" and (mapping is not None or manual is not None):
        click.echo(f"crit: {'--mapping' if mapping is not None else '--manual'} is for --from fhir", err=True)
        raise Failure(EXIT_USAGE)
    if source == "fhir" and str(record_file) == "-":
        click.echo("crit: --from fhir reads a Bundle file or a directory, not standard input", err=True)
        raise Failure(EXIT_USAGE)
    protocol, loaded = compile_or_fail(protocol_file)
    module: Any
    if interpret:
        # The reference interpreter, imported as the command table imports a tool: only when asked
        # (`eval --interpret`), so that `crit build` does not pay for it at start-up.
        module = importlib.import_module("crit.interpret").Interpreter(protocol)
    else:
        module = evaluator(protocol, loaded)
    if source == "fhir":
        _eval_fhir(protocol, module, record_file, mapping, manual, as_json)
        return
    records = read_records(record_file)
    results: list[dict[str, Any]] = []
    bad = False
    for index, record in enumerate(records):
        label = record.get("id", index + 1) if isinstance(record, dict) else index + 1
        problems = module.validate(record)
        if problems:
            bad = True
            results.append({"id": label, "error": [str(p) for p in problems]})
            continue
        screening = module.evaluate(record)
        results.append({"id": label, **screening.to_dict()})
    if as_json:
        payload: Any = results[0] if len(results) == 1 else results
        click.echo(json_text(payload))
    else:
        click.echo("\n\n".join(_table(r) for r in results))
    if bad:
        raise Failure(EXIT_RECORD)


def _eval_fhir(protocol: Any, module: Any, path: Path, mapping: Path | None, manual: Path | None,
               as_json: bool) -> None:
    """`crit eval --from fhir`: each patient's record as built, with its sources, then the
    decision; as it goes for text, as one JSON document with --json. Exit 3 if any patient
    could not be screened."""
    # The screening command's module, imported as the command table imports it: only when asked.
    screening = importlib.import_module("crit.screening.screen")
    reader = screening.open_fhir(protocol, path, mapping, manual)
    results: list[dict[str, Any]] = []
    bad = False
    try:
        for found in reader.patients(path, unused=False):  # a site's manual file holds other patients too
            if not hasattr(found, "record"):  # input that could not be read
                result: dict[str, Any] = {"id": None, "error": [f"{found.where}: {found.problem}"]}
            else:
                problems = found.problems or [str(p) for p in module.validate(found.record)]
                result = {"id": found.id, "record": found.record, "sources": found.sources}
                if problems:
                    result["error"] = problems
                else:
                    result.update(module.evaluate(found.record).to_dict())
            bad = bad or "error" in result
            if as_json:
                results.append(result)
            else:
                click.echo(_built(result, protocol) + "\n" + _table(result, result.get("sources")) + "\n")
    except screening.fhir.InputError as err:
        click.echo(f"crit: {err}", err=True)
        raise Failure(EXIT_RECORD) from None
    if as_json:
        click.echo(json_text(results))
    if bad:
        raise Failure(EXIT_RECORD)


def _built(result: dict[str, Any], protocol: Any) -> str:
    """The record crit built from FHIR, a line per schema field: its value (or missing) and
    where it came from."""
    if "record" not in result:
        return f"input that is not a patient: {shown(result['error'][0])}"
    record, sources = result["record"], result["sources"]
    lines = [f"patient {_label(result['id'])}: the record built from FHIR"]
    width = max((len(f.name) for f in protocol.fields), default=0)
    for field in protocol.fields:
        value = json_text(record[field.name], indent=None) if field.name in record else "missing"
        where = "; ".join(sources.get(field.name, []))
        lines.append(f"  {field.name:<{width}}  {shown(value)}" + (f"  ← {shown(where)}" if where else ""))
    return "\n".join(lines)


def json_text(value: Any, indent: str | None = "") -> str:
    """Strict JSON (RFC 8259), laid out as `json.dumps(value, indent=2, ensure_ascii=False)`
    lays it out (on one line when `indent` is None). A `Decimal` (a number in a record, read
    exactly) is written as a JSON number with its own digits, never rounded through a float;
    NaN and infinities are refused."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a JSON number")
        return str(value)
    inner = None if indent is None else indent + "  "
    start, gap, end = ("", ", ", "") if inner is None else ("\n" + inner, ",\n" + inner, "\n" + str(indent))
    if isinstance(value, dict) and value:
        items = (f"{json.dumps(str(key), ensure_ascii=False)}: {json_text(item, inner)}" for key, item in value.items())
        return "{" + start + gap.join(items) + end + "}"
    if isinstance(value, list | tuple) and value:
        return "[" + start + gap.join(json_text(item, inner) for item in value) + end + "]"
    return json.dumps(list(value) if isinstance(value, tuple) else value, ensure_ascii=False, allow_nan=False)


def _label(ident: object) -> str:
    """A record's id in the table: as written when it prints as itself, else repr()-quoted."""
    if isinstance(ident, str):
        return ident if ident and ident.isprintable() else repr(ident)
    if isinstance(ident, int | Decimal) and not isinstance(ident, bool):
        return str(ident)
    return shown(json_text(ident, indent=None))


def _table(result: dict[str, Any], sources: dict[str, list[str]] | None = None) -> str:
    """A result for a coordinator: the decision, then one row per criterion; with `sources`
    (a record built from FHIR), each row is followed by the resources of the facts its reason
    names."""
    if "error" in result:
        lines = [f"record {_label(result['id'])}: cannot be read"]
        lines += [f"  {shown(problem)}" for problem in result["error"]]
        return "\n".join(lines)
    decision = str(result["decision"]).upper()
    lines = [f"record {_label(result['id'])}: {decision}"]
    if result["missing"]:
        lines.append("  missing: " + shown(", ".join(result["missing"])))
    if result["pending_judgments"]:
        lines.append("  pending judgments: " + shown(", ".join(result["pending_judgments"])))
    width = max((len(c["id"]) for c in result["criteria"]), default=0)
    for c in result["criteria"]:
        depth = c["id"].count(".")
        ident = ("  " * depth + c["id"]).ljust(width + 2 * 3)
        lines.append(f"  {ident}  {c['outcome']:<14}  {shown(c['reason'])}")
        cited = _cited(c["reason"], sources) if sources else ""
        if cited:
            lines.append(f"  {' ' * len(ident)}  {'':<14}  from {shown(cited)}")
    return "\n".join(lines)


def _cited(reason: str, sources: dict[str, list[str]]) -> str:
    """The resources behind the facts a reason names (`hemoglobin 108 g/L ...` names hemoglobin),
    each once: `hemoglobin: Observation/h1; platelets: Observation/p1`."""
    named = []
    for name in sources:
        found = re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", reason) if "[" not in name else None
        if found is not None:
            named.append((found.start(), name))
    return "; ".join(f"{name}: {', '.join(sources[name])}" for _, name in sorted(named))




def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: runs the CLI and turns every failure into an exit code, never a traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        code = cli.main(args=args, prog_name="crit", standalone_mode=False)
    except Failure as failure:
        return failure.code
    except click.exceptions.Abort:
        click.echo("crit: interrupted", err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return EXIT_USAGE
    except KeyboardInterrupt:
        click.echo("crit: interrupted", err=True)
        return 130
    except Exception as err:  # the promise: no traceback for users, one line and a way on
        if debug:
            traceback.print_exc()
        click.echo(f"crit: internal error: {type(err).__name__}: {err}", err=True)
        click.echo("hint: rerun with --debug for the traceback, and report it", err=True)
        return EXIT_INTERNAL
    return code if isinstance(code, int) else EXIT_OK


# Everything made so far (the modules, their classes and functions, the commands) lives as long as
# the process. Frozen out of the garbage collector's sight, it is not walked again by every
# collection while a command runs: 3% of the instructions of `crit build` for JY231.
gc.freeze()

if __name__ == "__main__":
    sys.exit(main())
