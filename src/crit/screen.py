"""`crit screen`: screen a cohort file with a protocol, one result row per input record.

The input is streamed: JSON Lines (one patient object per line) or CSV (one patient per row;
see `Columns` for how columns map to fields, including nested ones). Each record gives exactly
one output row, in input order, even when it cannot be read (a row with decision "error" and
the reason), so the output has as many rows as the input has records. `--jobs N` screens
batches in N processes, at most a few batches in flight, and writes them back in order, so
memory stays constant however large the file. `--report` writes the attrition report.
"""

from __future__ import annotations

import collections
import csv
import importlib.util
import io
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any

import click

from crit import report

if TYPE_CHECKING:  # the worker processes never import the compiler
    from crit import ir

BATCH = 500  # records per unit of work
FORMATS = ("jsonl", "csv")
COLUMNS = ("record", "id", "decision", "decided_by", "missing", "pending_judgments", "error")

# One input record as the reader finds it: its number (1-based), the line where it starts,
# its text (a JSON line) or cells (a CSV row), and why it cannot be read, if already known.
Item = tuple[int, int, bytes | list[str] | None, str | None]


class RowError(ValueError):
    """A record that cannot be turned into a patient object; the message says why."""


# ---- CSV columns ------------------------------------------------------------------------------

_COLUMN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z_][A-Za-z0-9_]*|\[[0-9]+\])*)")
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[([0-9]+)\]")
_TRUE = frozenset(("true", "yes", "y", "1"))
_FALSE = frozenset(("false", "no", "n", "0"))
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")


@dataclass(frozen=True)
class Column:
    """Where a CSV column goes in the patient object, and how its cells are read."""

    name: str
    path: tuple[str | int, ...]
    kind: str  # "number", "bool", "set", "json" or "text"


class Columns:
    """How a CSV header maps to patient fields.

    - A column named like a field holds its value: `age`, `diagnosis`, `screening`.
    - Nested values take a dotted or indexed name: `hemoglobin.value` and `hemoglobin.unit`,
      `ast.value` and `ast.uln`, `treatments[0].start`. Items of a list are numbered from 0;
      an item whose cells are all empty is left out.
    - An empty cell leaves the field out (missing); `null` records none (for optional
      fields: `last_live_vaccine` = `null` means never).
    - Numbers are read as numbers, `true`/`false` (also `yes`/`no`, `y`/`n`, `1`/`0`) as
      true and false; a set of members is written `a;b` (`[]` for none); a cell that holds a
      JSON array or object (`[{"agent": …}]`) is read as JSON. A cell that cannot be read as
      its field's type is passed on as text, and the evaluator reports it with its path.
    - `id` is the record's id. Unknown columns are passed on, and reported as unknown fields.
    """

    def __init__(self, header: Sequence[str], kinds: dict[str, Any]) -> None:
        self.columns: list[Column] = []
        seen: set[str] = set()
        for raw in header:
            name = raw.strip()
            if name in seen:
                raise click.UsageError(f"the CSV header names the column {name!r} twice")
            seen.add(name)
            self.columns.append(Column(name, _path(name), _kind(_path(name), kinds)))
        self.id_index = next((i for i, c in enumerate(self.columns) if c.name == "id"), None)

    def id_of(self, cells: Sequence[str]) -> str | None:
        """The row's id, even when the rest of the row cannot be read."""
        if self.id_index is None or self.id_index >= len(cells):
            return None
        return cells[self.id_index].strip() or None

    def record(self, cells: Sequence[str]) -> dict[str, Any]:
        record: dict[Any, Any] = {}
        for column, raw in zip(self.columns, cells, strict=True):
            cell = raw.strip()
            if not cell:
                continue
            _put(record, column, _cell(cell, column.kind))
        built: dict[str, Any] = _lists(record)
        return built


def schema_kinds(protocol: ir.Protocol) -> dict[str, Any]:
    """For each field, how its CSV cells are read (a dict for records and measured values)."""
    records = {r.name: r for r in protocol.records}

    def kind(t: ir.Type) -> Any:
        if t.kind in ("bool", "judgment"):
            return "bool"
        if t.kind in ("integer", "decimal"):
            return "number"
        if t.kind == "quantity":
            return {"": "number", "value": "number", "unit": "text"}
        if t.kind == "lab":
            return {"": "json", "value": "number", "uln": "number", "unit": "text"}
        if t.kind == "set":
            return "set"
        if t.kind == "list":
            assert t.record is not None
            return {"": "json", "[]": {f.name: kind(f.type) for f in records[t.record].fields}}
        return "text"

    return {f.name: kind(f.type) for f in protocol.fields}


def _path(name: str) -> tuple[str | int, ...]:
    match = _COLUMN.fullmatch(name)
    if match is None:
        return (name,)
    steps: list[str | int] = [match.group(1)]
    for key, index in _STEP.findall(match.group(2)):
        steps.append(int(index) if index else key)
    return tuple(steps)


def _kind(path: tuple[str | int, ...], kinds: dict[str, Any]) -> str:
    found: Any = kinds.get(str(path[0]), "text") if path[0] != "id" else "text"
    for step in path[1:]:
        if not isinstance(found, dict):
            return "text"
        found = found.get("[]" if isinstance(step, int) else step, "text")
    if isinstance(found, dict):
        return str(found.get("", "text"))
    return str(found)


def _cell(cell: str, kind: str) -> Any:
    if cell == "null":
        return None
    if kind == "text":
        return cell
    if cell[0] in "[{":
        try:
            return json.loads(cell)
        except ValueError:
            return cell
    if kind == "number" and _NUMBER.fullmatch(cell):
        return json.loads(cell)
    if kind == "bool":
        lowered = cell.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    if kind == "set":
        return [member.strip() for member in cell.split(";") if member.strip()]
    return cell


def _put(record: dict[Any, Any], column: Column, value: Any) -> None:
    target: dict[Any, Any] = record
    path = column.path
    for step in path[:-1]:
        inner = target.setdefault(step, {})
        if not isinstance(inner, dict) or inner.get(_WHOLE):
            raise RowError(f"{path[0]} is given both in one cell and in columns such as {column.name}")
        target = inner
    if path[-1] in target:
        raise RowError(f"{path[0]} is given both in one cell and in columns such as {column.name}")
    target[path[-1]] = value
    if isinstance(value, dict):
        value[_WHOLE] = True


_WHOLE = object()  # marks a value given whole in one cell


def _lists(value: Any) -> Any:
    """Dicts built from indexed columns become lists, in index order."""
    if not isinstance(value, dict):
        return value
    if value.pop(_WHOLE, None):
        return value
    keys = list(value)
    if keys and all(isinstance(k, int) for k in keys):
        return [_lists(value[k]) for k in sorted(keys)]
    if any(isinstance(k, int) for k in keys):
        raise RowError("a field is given both as a list and as an object")
    return {k: _lists(v) for k, v in value.items()}


# ---- reading the input -----------------------------------------------------------------------


class _Meter:
    """Bytes read so far, for the progress bar."""

    def __init__(self) -> None:
        self.done = 0


def _lines(stream: IO[bytes], meter: _Meter) -> Iterator[bytes]:
    first = True
    for raw in stream:
        meter.done += len(raw)
        if first:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
            first = False
        yield raw


def jsonl_items(stream: IO[bytes], meter: _Meter) -> Iterator[Item]:
    number = 0
    for line, raw in enumerate(_lines(stream, meter), 1):
        if not raw or raw.isspace():
            continue  # blank lines are not records
        number += 1
        yield number, line, raw, None


_SURROGATE = re.compile("[\udc80-\udcff]")


def csv_items(stream: IO[bytes], meter: _Meter) -> tuple[list[str], Iterator[Item]]:
    """The header, and the rows as items. Bytes that are not UTF-8 make an error row."""
    text = (raw.decode("utf-8", "surrogateescape") for raw in _lines(stream, meter))
    reader = csv.reader(text)
    try:
        header = next(reader, [])
    except csv.Error as err:
        raise click.UsageError(f"cannot read the CSV header: {err}") from None
    if _SURROGATE.search(",".join(header)):
        raise click.UsageError("the CSV header is not valid UTF-8")

    def rows() -> Iterator[Item]:
        number, line = 0, reader.line_num + 1
        while True:
            try:
                cells = next(reader)
                problem = None
            except StopIteration:
                return
            except csv.Error as err:
                cells, problem = [], f"line {line}: not valid CSV: {err}"
            start, line = line, reader.line_num + 1
            if not cells and problem is None:
                continue  # a blank line
            number += 1
            if problem is None and _SURROGATE.search("".join(cells)):
                problem = f"line {start}: not valid UTF-8"
            if problem is None and len(cells) != len(header):
                problem = f"line {start}: {len(cells)} cells, but the header has {len(header)} columns"
            yield number, start, cells, problem

    return header, rows()


# ---- screening a batch (in this process or a worker) -------------------------------------------


@dataclass(frozen=True)
class Job:
    """What screening needs, in a form that can be sent to worker processes."""

    module_path: str
    module_name: str
    input_format: str
    output_format: str
    kinds: dict[str, Any]
    header: tuple[str, ...]
    combine: tuple[str, ...]  # per criterion, in CRITERIA order: all, any, at_least
    tally: bool


def import_module(path: str, name: str) -> ModuleType:
    """Import a generated evaluator from its file, as `crit.cli.import_evaluator` does."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Screener:
    """Screens batches of items into output text, decision counts and a report tally."""

    def __init__(self, job: Job) -> None:
        self.job = job
        module = import_module(job.module_path, job.module_name)
        self.assess: Callable[[object], Any] = module.assess
        self.invalid: type[Exception] = module.InvalidRecord
        info = module.CRITERIA
        self.criteria = tuple(report.Criterion(c.id, c.title, c.section, c.parent) for c in info)
        self.ids = tuple(c.id for c in info)
        position = {c.id: i for i, c in enumerate(info)}
        self.tops = tuple((i, c.section == "inclusion") for i, c in enumerate(info) if c.parent is None)
        self.children: dict[int, list[int]] = collections.defaultdict(list)
        for i, c in enumerate(info):
            if c.parent is not None:
                self.children[position[c.parent]].append(i)
        self.outcome = module.Outcome
        self.decision = module.Decision
        self.columns = Columns(job.header, job.kinds) if job.input_format == "csv" else None

    def run(self, batch: Sequence[Item]) -> tuple[str, collections.Counter[str], report.Tally | None]:
        tally = report.Tally(self.criteria) if self.job.tally else None
        decisions: collections.Counter[str] = collections.Counter()
        rows = [self.one(item, tally, decisions) for item in batch]
        return self.text(rows), decisions, tally  # unflushed: the outcome vectors are folded once, at the end

    def one(self, item: Item, tally: report.Tally | None, decisions: collections.Counter[str]) -> tuple[Any, ...]:
        number, line, payload, problem = item
        record_id = self.columns.id_of(payload) if self.columns is not None and isinstance(payload, list) else None
        if problem is None:
            try:
                record = self.parse(payload, line)
                if isinstance(record, dict):
                    record_id = record.get("id")
                assessed = self.assess(record)
            except RowError as err:
                problem = str(err)
            except self.invalid as err:
                problem = str(err)
        if problem is not None:
            decisions[report.ERROR] += 1
            if tally is not None:
                tally.add_error()
            return number, record_id, report.ERROR, (), (), (), problem
        decision = assessed.decision.value
        decisions[decision] += 1
        facts = assessed.missing + assessed.pending_judgments
        if tally is not None:
            tally.add(decision, "|".join(assessed.outcomes), facts)
        return (number, record_id, decision, self.decided_by(assessed), assessed.missing,
                assessed.pending_judgments, None)

    def parse(self, payload: bytes | list[str] | None, line: int) -> Any:
        if self.columns is not None:
            assert isinstance(payload, list)
            try:
                return self.columns.record(payload)
            except RowError as err:
                raise RowError(f"line {line}: {err}") from None
        assert isinstance(payload, bytes)
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as err:
            raise RowError(f"line {line}: not valid UTF-8 (byte {payload[err.start]:#04x})") from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise RowError(f"line {line}, column {err.colno}: not valid JSON: {err.msg}") from None
        except (ValueError, RecursionError) as err:
            raise RowError(f"line {line}: not valid JSON: {err}") from None

    def decided_by(self, assessed: Any) -> tuple[str, ...]:
        """The top-level criteria that decided an ineligible or needs-review patient, each
        followed by the sub-criteria (under an `all`) that made it so."""
        decision = assessed.decision
        if decision is self.decision.ELIGIBLE:
            return ()
        outcomes = assessed.outcomes
        refused = decision is self.decision.INELIGIBLE
        out: list[str] = []
        for index, inclusion in self.tops:
            value = outcomes[index]
            if refused:
                hit = value is (self.outcome.NOT_MET if inclusion else self.outcome.MET)
            else:
                hit = value is self.outcome.UNKNOWN
            if hit:
                self.drill(index, value, outcomes, out)
        return tuple(out)

    def drill(self, index: int, value: Any, outcomes: Sequence[Any], out: list[str]) -> None:
        out.append(self.ids[index])
        if self.job.combine[index] == "all" and value in (self.outcome.NOT_MET, self.outcome.UNKNOWN):
            for child in self.children.get(index, ()):
                if outcomes[child] is value:
                    self.drill(child, value, outcomes, out)

    def text(self, rows: list[tuple[Any, ...]]) -> str:
        if self.job.output_format == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            for number, record_id, decision, decided, missing, pending, error in rows:
                writer.writerow((number, "" if record_id is None else record_id, decision, ";".join(decided),
                                 ";".join(missing), ";".join(pending), error or ""))
            return buffer.getvalue()
        return "".join(
            json.dumps(dict(zip(COLUMNS, (n, i, d, list(by), list(m), list(p), e), strict=True)),
                       ensure_ascii=False) + "\n"
            for n, i, d, by, m, p, e in rows)


_WORKER: Screener | None = None


def _start_worker(job: Job) -> None:
    global _WORKER
    _WORKER = Screener(job)


def _work(batch: Sequence[Item]) -> tuple[str, collections.Counter[str], report.Tally | None]:
    assert _WORKER is not None
    return _WORKER.run(batch)


def _batches(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def screen_batches(job: Job, batches: Iterator[list[Item]], jobs: int
                   ) -> Iterator[tuple[str, collections.Counter[str], report.Tally | None]]:
    """The screened batches, in input order. With several jobs, a few batches per process are
    in flight at a time: the input is read only as fast as results are written."""
    if jobs <= 1:
        screener = Screener(job)
        for batch in batches:
            yield screener.run(batch)
        return
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no inherited threads or open files
    with context.Pool(jobs, initializer=_start_worker, initargs=(job,)) as pool:
        pending: collections.deque[Any] = collections.deque()
        for batch in batches:
            pending.append(pool.apply_async(_work, (batch,)))
            if len(pending) >= 3 * jobs:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# ---- progress and summary ----------------------------------------------------------------------


class _Progress:
    """A progress bar on stderr (rich), by bytes read when the input's size is known."""

    def __init__(self, enabled: bool, total: int | None, label: str) -> None:
        self.bar: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                            TextColumn("{task.fields[records]:,} records"), TimeElapsedColumn(), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=True)
        self.task = self.bar.add_task(label, total=total, records=0)
        self.bar.start()

    def update(self, done: int, records: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, records=records)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _summary(counts: collections.Counter[str], seconds: float, jobs: int) -> str:
    total = sum(counts.values())
    rate = f"{total / seconds:,.0f} records/s" if seconds > 0 else ""
    lines = [f"screened {total:,} record{'s' if total != 1 else ''} in {seconds:.1f} s ({rate}, "
             f"{jobs} process{'es' if jobs != 1 else ''})"]
    for decision in (report.ELIGIBLE, report.INELIGIBLE, report.NEEDS_REVIEW, report.ERROR):
        n = counts.get(decision, 0)
        share = f"{100 * n / total:5.1f}%" if total else ""
        lines.append(f"  {decision:<13}{n:>12,}  {share}")
    return "\n".join(lines)


# ---- the command -------------------------------------------------------------------------------


def _format(path: Path, given: str | None, what: str) -> str:
    if given is not None:
        return given
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json") or str(path) == "-":
        return "jsonl"
    raise click.UsageError(f"cannot tell the {what} format of {path} from its name; "
                           f"give --{what}-format jsonl or csv")


@click.command("screen")
@click.argument("protocol_file", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("records", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
              help="Where to write one result row per record (.jsonl or .csv; - for stdout).")
@click.option("--input-format", type=click.Choice(FORMATS), help="jsonl or csv (default: from the file name).")
@click.option("--output-format", type=click.Choice(FORMATS), help="jsonl or csv (default: from the file name).")
@click.option("--report", "reports", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Also write the attrition report (.md or .html); may be given twice.")
@click.option("-j", "--jobs", type=click.IntRange(min=0), default=1, show_default=True,
              help="Processes to screen with (0: one per CPU).")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar (default: when stderr is a terminal).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
def screen_command(protocol_file: Path, records: Path, output: Path, input_format: str | None,
                   output_format: str | None, reports: tuple[Path, ...], jobs: int, progress: bool | None,
                   quiet: bool) -> None:
    """Screen every patient record in RECORDS (JSON Lines or CSV) against PROTOCOL_FILE.

    Writes one row per record to OUTPUT, in input order: its number, id, decision, the
    criteria that decided it and the missing facts; a record that cannot be read gets a row
    with decision "error" and the reason. Exits 3 if any record could not be read.
    """
    from crit.cli import EXIT_ERRORS, EXIT_RECORD, Failure, outputs  # here: crit.cli imports this module
    from crit.diagnostics import CritError, render_all
    from crit.driver import Loaded, load

    in_format = _format(records, input_format, "input")
    out_format = _format(output, output_format, "output")
    for path in reports:
        if path.suffix.lower() not in (".md", ".html", ".htm"):
            raise click.UsageError(f"--report {path}: give a .md or .html file")
    jobs = jobs or os.cpu_count() or 1

    loaded = Loaded()
    try:
        protocol = load(protocol_file, loaded)
    except CritError as err:
        click.echo(render_all(err.diagnostics, loaded.sources), err=True)
        count = len(err.diagnostics)
        click.echo(f"\n{count} error{'s' if count != 1 else ''} in {protocol_file}", err=True)
        raise Failure(EXIT_ERRORS) from None
    try:
        stream: IO[bytes] = sys.stdin.buffer if str(records) == "-" else records.open("rb")
    except OSError as err:
        click.echo(f"crit: cannot read {records}: {err.strerror or err}", err=True)
        raise Failure(EXIT_RECORD) from None

    with stream, tempfile.TemporaryDirectory(prefix="crit-screen-") as tmp:
        stem = Path(protocol.source).stem
        module_path = Path(tmp) / f"{stem}.py"
        module_path.write_text(outputs(protocol, loaded)[f"{stem}.py"], encoding="utf-8")
        # A module is imported once per process and source: `import_module` keeps it by name.
        meter = _Meter()
        header: list[str] = []
        if in_format == "csv":
            header, items = csv_items(stream, meter)
        else:
            items = jsonl_items(stream, meter)
        combine = tuple(c.combine for top in protocol.inclusion + protocol.exclusion for c in top.walk())
        name = f"_crit_screen_{stem}_{protocol.source_hash[:16]}"  # the same module for the same source
        job = Job(str(module_path), name, in_format, out_format, schema_kinds(protocol),
                  tuple(header), combine, bool(reports))
        Columns(job.header, job.kinds)  # a bad header is a usage error, before any output
        size = records.stat().st_size if str(records) != "-" and records.is_file() else None
        show = not quiet and (progress if progress is not None else sys.stderr.isatty())
        bar = _Progress(show, size, f"screening {records.name}")
        counts: collections.Counter[str] = collections.Counter()
        tally = report.Tally(Screener(job).criteria) if reports else None
        started = time.perf_counter()
        try:
            with _Output(output) as out:
                if out_format == "csv":
                    out.write(",".join(COLUMNS) + "\n")
                for text, decided, part in screen_batches(job, _batches(items, BATCH), jobs):
                    out.write(text)
                    counts.update(decided)
                    if tally is not None and part is not None:
                        tally.merge(part)
                    bar.update(meter.done, sum(counts.values()))
        finally:
            bar.close()
        seconds = time.perf_counter() - started

    if tally is not None:
        about = report.About(protocol.id, protocol.title, protocol.version, protocol.source, protocol.source_hash,
                             str(records), tuple(sorted(f.name for f in protocol.fields if f.type.kind == "judgment")))
        for path in reports:
            html = path.suffix.lower() in (".html", ".htm")
            text = report.html(tally, about) if html else report.markdown(tally, about)
            path.write_text(text, encoding="utf-8", newline="\n")
    if not quiet:
        click.echo(_summary(counts, seconds, jobs), err=True)
        written = [str(output)] + [str(p) for p in reports] if str(output) != "-" else [str(p) for p in reports]
        if written:
            click.echo(f"wrote {', '.join(written)}", err=True)
    if counts.get(report.ERROR):
        raise Failure(EXIT_RECORD)


class _Output:
    """The output file, written under a temporary name and renamed when complete (or stdout)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.temp: Path | None = None
        self.file: IO[str] | None = None

    def __enter__(self) -> _Output:
        if str(self.path) == "-":
            return self
        directory = self.path.parent
        handle, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=directory)
        self.temp = Path(name)
        self.file = os.fdopen(handle, "w", encoding="utf-8", newline="")
        return self

    def write(self, text: str) -> None:
        if self.file is None:
            sys.stdout.write(text)
        else:
            self.file.write(text)

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        if self.file is None:
            sys.stdout.flush()
            return
        self.file.close()
        assert self.temp is not None
        if error is None:
            os.replace(self.temp, self.path)
        else:
            self.temp.unlink(missing_ok=True)


