"""`crit screen`: screen a cohort file with a protocol, one result row per input record.

The input is streamed, one bounded record at a time (`crit.sources.cohort` reads JSON Lines, JSON
documents and CSV). Each record gives exactly one output row, in input order, even when it
cannot be read (a row with decision "error" and the reason), so the output has as many rows
as the input has records. `--jobs N` screens batches in N processes, at most a few batches in
flight, and writes them back in order, so memory stays constant however large the file.
`--report` writes the attrition report.

Outputs are written under temporary names and renamed into place when complete: an
interrupted screen (Ctrl-C, SIGTERM) removes them and leaves any earlier output untouched.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import os
import signal
import sys
import tempfile
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn

import click

from crit import ir, text
from crit.backends.markdown import comment_text
from crit.backends.python import emit_python
from crit.diagnostics import CritError, render_all
from crit.english import counted
from crit.files import GENERATED_MARK, AtomicFile, UnsafeWrite, is_generated, same_file
from crit.pipeline import compile_or_fail
from crit.process import EXIT_ERRORS, EXIT_RECORD, EXIT_USAGE, Failure
from crit.screening import report, sql_engine
from crit.screening.python_engine import COLUMNS, Job, Screened, Screener, batches, screen_batches
from crit.sources import fhir, fhir_mapping
from crit.sources import records as json_records
from crit.sources.cohort import (
    Columns,
    HeaderError,
    Item,
    Meter,
    csv_items,
    json_items,
    jsonl_items,
    schema_kinds,
)

BATCH = 500  # records per unit of work
SOURCES = ("records", "fhir")
FORMATS = ("jsonl", "json", "csv")
INPUT_FORMATS = (*FORMATS, "parquet")
ENGINES = ("auto", "python", "duckdb", "spark")
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM, as shells report them


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that a terminated screen unwinds (removing its
    temporary files, stopping its workers) as an interrupted one does."""


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


def _refuse(message: str) -> NoReturn:
    """A usage error in one line (exit 2), before anything is read or written."""

    click.echo(f"crit: {message}", err=True)
    raise Failure(EXIT_USAGE)


def _format(path: Path, given: str | None, what: str) -> str:
    if given is not None:
        return given
    suffix = path.suffix.lower()
    if what == "input" and (suffix == ".parquet" or (str(path) != "-" and path.is_dir())):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    if suffix == ".json":
        return "json"
    if suffix in (".jsonl", ".ndjson") or str(path) == "-":
        return "jsonl"
    kinds = "jsonl, json, csv or parquet" if what == "input" else "jsonl, json or csv"
    _refuse(f"cannot tell the {what} format of {path} from its name; give --{what}-format {kinds}")


def choose_engine(given: str, in_format: str) -> str:
    """`--engine auto`: DuckDB for a Parquet cohort (columnar data is where SQL wins), the
    Python engine for JSON Lines, JSON and CSV. Those are checked record by record in Python
    whichever engine screens them, and that check costs about as much as the Python engine's
    whole screening (README, "Screening at scale"): DuckDB never wins there, at any size."""
    if given == "auto":
        return "duckdb" if in_format == "parquet" else "python"
    if given == "python" and in_format == "parquet":
        _refuse("--engine python reads JSON Lines, JSON and CSV; screen a Parquet cohort with --engine duckdb "
                "or spark")
    if given == "spark" and in_format != "parquet":
        _refuse("--engine spark reads a Parquet cohort (a directory with a file per table: crit schema "
                "PROTOCOL --sql spark); screen JSON Lines, JSON and CSV with --engine python or duckdb")
    return given


def _refuse_overwrites(protocol_file: Path, records: Path, output: Path, reports: Sequence[Path],
                       also: Sequence[tuple[str, Path]] = ()) -> None:
    """No output may be the protocol, the input (`also`: the FHIR mapping and manual entries) or
    another output: that would overwrite it."""

    read = [("the protocol", protocol_file)] + ([("the input", records)] if str(records) != "-" else []) + list(also)
    written = ([("-o", output)] if str(output) != "-" else []) + [("--report", path) for path in reports]
    for index, (flag, path) in enumerate(written):
        for what, source in read:
            if same_file(path, source):
                _refuse(f"{flag} {path} names {what}; crit will not overwrite it")
        for earlier_flag, earlier in written[:index]:
            if same_file(path, earlier):
                _refuse(f"{flag} {path} names the same file as {earlier_flag} {earlier}; give each its own file")


# ---- FHIR input ----------------------------------------------------------------------------------


def _fhir_usage(records: Path, input_format: str | None, engine: str) -> str:
    """What --from fhir cannot be combined with, refused before anything is read."""
    if input_format is not None:
        _refuse("--input-format is for crit's records; --from fhir tells the FHIR layout from the input itself")
    if str(records) == "-":
        _refuse("--from fhir reads a Bundle file or a directory, not standard input")
    if engine not in ("auto", "python"):
        _refuse("--from fhir screens with the Python engine (--engine python or auto)")
    return "fhir"


def mapping_beside(protocol: ir.Protocol) -> Path | None:
    """The default mapping: `<schema stem>.fhir.toml` beside the file that declares the patient
    fields (the protocol itself, or the schema it imports)."""
    if not protocol.fields:
        return None
    schema = Path(protocol.fields[0].span.file)
    return schema.with_name(schema.stem + ".fhir.toml")


@dataclasses.dataclass(frozen=True)
class FhirReader:
    """A checked mapping made ready (`fhir.Builder`), and the manual entries, if any."""

    mapping: Path
    builder: fhir.Builder
    manual: fhir.Manual | None

    def patients(self, records: Path, meter: Meter | None = None,
                 unused: bool = True) -> Iterator[fhir.FhirPatient | fhir.Unread]:
        """The patients; `unused`: then the manual entries of ids the input does not have, which a
        screen reports and `crit eval` of one patient's bundle does not."""
        return fhir.patients(records, self.builder, self.manual, meter, unused)

    def items(self, records: Path, meter: Meter) -> Iterator[Item]:
        """The patients as screening items: each record as JSON text (exact numbers), and a
        patient with problems, input that cannot be read and manual entries for no patient as
        error rows that keep the patient's id."""
        for number, found in enumerate(self.patients(records, meter), start=1):
            if isinstance(found, fhir.Unread):
                yield number, 0, b"{}", f"{found.where}: {found.problem}"
                continue
            payload = text.json_source(found.record).encode("utf-8")
            yield number, 0, payload, "; ".join(found.problems) or None


def open_fhir(protocol: ir.Protocol, records: Path, mapping: Path | None, manual: Path | None) -> FhirReader:
    """The mapping (given, or beside the schema) loaded and checked against the protocol's
    fields, its diagnostics printed as `crit check` prints them (exit 1); the input and the
    manual entries opened, or one line and exit 3."""
    path = mapping if mapping is not None else mapping_beside(protocol)
    if path is None:
        _refuse(f"{protocol.source} declares no patient fields, so there is nothing to map")
    if mapping is None and not path.is_file():
        _refuse(f"no FHIR mapping for {protocol.fields[0].span.file}: expected {path}; give one with --mapping")
    try:
        loaded = fhir_mapping.load(path)
    except CritError as err:
        _diagnostics(err.diagnostics, path, None)
    found = fhir_mapping.check(loaded, protocol.fields, protocol.records)
    if any(d.severity == "error" for d in found):
        _diagnostics(found, path, loaded.source)
    try:
        fhir.input_files(records)
        entries = fhir.Manual(manual) if manual is not None else None
    except fhir.InputError as err:
        click.echo(f"crit: {err}", err=True)
        raise Failure(EXIT_RECORD) from None
    return FhirReader(path, fhir.Builder(loaded, protocol), entries)


def _diagnostics(found: Sequence[Any], path: Path, source: str | None) -> NoReturn:
    """A bad mapping: its diagnostics, with the lines they point at, then exit 1."""
    if source is None:
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            source = ""
    shown = fhir_mapping.display_path(path)
    errors = [d for d in found if d.severity == "error"]
    click.echo(render_all(found, {shown: source}), err=True)
    click.echo(f"\n{counted(len(errors), 'error')} in {shown}", err=True)
    raise Failure(EXIT_ERRORS)


def _refuse_inside(records: Path, output: Path, reports: Sequence[Path]) -> None:
    """No output that crit reads as FHIR (.json, .ndjson) may be written into a FHIR input
    directory: the next screen would read the results as patients."""
    if not records.is_dir():
        return
    written = ([("-o", output)] if str(output) != "-" else []) + [("--report", path) for path in reports]
    for flag, path in written:
        if path.suffix.lower() in (".json", ".ndjson") and same_file(path.parent, records):
            _refuse(f"{flag} {path} is inside the FHIR input directory {records}, where the next screen would "
                    "read it as FHIR; write it elsewhere")


def _refuse_sources(sources: Sequence[str], output: Path, reports: Sequence[Path]) -> None:
    """No output may be a file the protocol read (an imported schema, say); `sources` are the
    paths of every .crit file read, as the loader shows them."""
    written = ([("-o", output)] if str(output) != "-" else []) + [("--report", path) for path in reports]
    for flag, path in written:
        for source in sources:
            if same_file(path, Path(source)):
                _refuse(f"{flag} {path} names {source}, which the protocol reads; crit will not overwrite it")


def _refuse_foreign(output: Path, reports: Sequence[Path]) -> None:
    """crit replaces an existing output only if crit wrote it: results recognised by their
    shape (`is_results`), reports by the `@generated by crit` mark on their first line. An
    empty file holds nothing to lose. Anything else (notes, a README) is refused."""
    written = ([("-o", output, is_results)] if str(output) != "-" else []) + [
        ("--report", path, is_generated) for path in reports]
    for flag, path, crits in written:
        if path.is_symlink() or not path.exists():
            continue  # nothing there (a link is refused when written)
        if not path.is_file():  # a device (/dev/null) or a pipe: renaming over it would replace it
            _refuse(f"{flag} {path} is not a regular file; crit will not replace it: choose another name "
                    "(or -o - for standard output)")
        try:
            empty = path.stat().st_size == 0
        except OSError:
            continue
        if not empty and not crits(path):
            _refuse(f"{flag} {path} exists and crit did not write it; crit will not overwrite it: "
                    "delete it or choose another name")


_RESULT_HEAD = 1 << 22  # bytes of a results file read to recognise it: its first row, however long


def is_results(path: Path) -> bool:
    """Whether `path` holds results crit screen wrote, in any of its formats: CSV whose first
    line is crit's header, JSON Lines whose first line is an object with exactly crit's result
    keys, or a JSON list whose first item is such an object (or that is empty)."""
    try:
        with path.open("rb") as handle:
            first = handle.readline(_RESULT_HEAD)
            second = handle.readline(_RESULT_HEAD) if first.strip() == b"[" else b""
    except OSError:
        return False
    if first.rstrip(b"\r\n") == ",".join(COLUMNS).encode():
        return True
    row = second.strip().removesuffix(b",") if first.strip() == b"[" else first.strip()
    if first.strip() == b"[" and row == b"]":
        return True
    try:
        value = json_records.loads(row.decode("utf-8"))
    except (UnicodeDecodeError, json_records.RecordSyntaxError):
        return False
    return isinstance(value, dict) and tuple(value) == COLUMNS


def report_mark(records: Path, source: str) -> str:
    """The first line of a report: crit's `@generated` mark, so that a rerun may replace the
    report and nothing else; the names in it cannot end the comment (`comment_text`)."""
    about = f"from {records} screened with {source} — do not edit; rerun `crit screen` to regenerate."
    return f"<!-- {GENERATED_MARK} {comment_text(about)} -->\n"


@contextlib.contextmanager
def _terminable() -> Iterator[None]:
    """SIGTERM raises `Terminated` in the main thread while the block runs, so that it unwinds
    like Ctrl-C; a second SIGTERM is ignored until the cleanup is done."""

    def terminate(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread (an embedding application): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command("screen")
@click.argument("protocol_file", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("records", type=click.Path(path_type=Path, allow_dash=True))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
              help="Where to write one result row per record (.jsonl, .json or .csv; - for stdout).")
@click.option("--input-format", type=click.Choice(INPUT_FORMATS),
              help="jsonl, json (one document), csv or parquet (a directory with a file per table; "
                   "default: from the file name).")
@click.option("--output-format", type=click.Choice(FORMATS), help="jsonl, json or csv (default: from the file name).")
@click.option("--report", "reports", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Also write the attrition report (.md or .html); may be given twice.")
@click.option("-j", "--jobs", type=click.IntRange(min=0), default=1, show_default=True,
              help="Processes to screen with (0: one per CPU).")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar (default: when stderr is a terminal).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
@click.option("--engine", type=click.Choice(ENGINES), default="auto", show_default=True,
              help="python (record by record), duckdb (the protocol's SQL, embedded) or spark (pyspark); "
                   "auto: duckdb for Parquet, python otherwise.")
@click.option("--master", metavar="URL",
              help="--engine spark: the Spark master (default local[N], N from --jobs; spark://host:7077 "
                   "or yarn for a cluster).")
@click.option("--from", "source", type=click.Choice(SOURCES), default="records", show_default=True,
              help="records: crit's patient records; fhir: FHIR R4 (a Bundle .json file, a directory of "
                   "them, or a bulk-data export directory of .ndjson files).")
@click.option("--mapping", type=click.Path(path_type=Path, dir_okay=False),
              help="--from fhir: the mapping file (default: SCHEMA.fhir.toml beside the protocol's schema).")
@click.option("--manual", type=click.Path(path_type=Path, dir_okay=False),
              help="--from fhir: the fields entered by hand, as JSON Lines (one object per patient, with its id).")
def screen_command(protocol_file: Path, records: Path, output: Path, input_format: str | None,
                   output_format: str | None, reports: tuple[Path, ...], jobs: int, progress: bool | None,
                   quiet: bool, engine: str, master: str | None, source: str, mapping: Path | None,
                   manual: Path | None) -> None:
    """Screen every patient record in RECORDS (JSON Lines, a JSON document or CSV; with
    --from fhir, FHIR R4 bundles or a bulk export) against PROTOCOL_FILE.

    Writes one row per record to OUTPUT, in input order: its number, id, decision, the
    criteria that decided it and the missing facts; a record that cannot be read gets a row
    with decision "error" and the reason. Exits 3 if any record could not be read; an
    interrupted screen (130 for Ctrl-C, 143 for SIGTERM) leaves no output behind, and any
    earlier output as it was.
    """

    from_fhir = source == "fhir"
    if from_fhir:
        in_format = _fhir_usage(records, input_format, engine)
    elif mapping is not None or manual is not None:
        _refuse(f"{'--mapping' if mapping is not None else '--manual'} is for --from fhir")
    else:
        in_format = _format(records, input_format, "input")
    out_format = _format(output, output_format, "output")
    engine = "python" if from_fhir else choose_engine(engine, in_format)
    if master is not None and engine != "spark":
        _refuse("--master is for --engine spark")
    if in_format not in ("parquet", "fhir") and records.is_dir():
        _refuse(f"{records} is a directory; a directory is read as a Parquet cohort (--input-format parquet)")
    for path in reports:
        if path.suffix.lower() not in (".md", ".html", ".htm"):
            _refuse(f"--report {path}: give a .md or .html file")
    given = [("the mapping", p) for p in (mapping,) if p is not None] + \
        [("the manual entries", p) for p in (manual,) if p is not None]
    _refuse_overwrites(protocol_file, records, output, reports, given)
    if from_fhir:
        _refuse_inside(records, output, reports)
    jobs = jobs or os.cpu_count() or 1

    # Here rather than at the top: the worker processes import this module and never the compiler.

    protocol, loaded = compile_or_fail(protocol_file)
    _refuse_sources(tuple(loaded.sources), output, reports)
    reader = open_fhir(protocol, records, mapping, manual) if from_fhir else None
    if reader is not None:
        _refuse_sources((str(reader.mapping),), output, reports)
    _refuse_foreign(output, reports)
    try:
        if in_format in ("parquet", "fhir"):
            if not records.exists():
                raise FileNotFoundError(2, "No such file or directory")
            stream: IO[bytes] = io.BytesIO()
        else:
            stream = sys.stdin.buffer if str(records) == "-" else records.open("rb")
    except OSError as err:
        click.echo(f"crit: cannot read {records}: {err.strerror or err}", err=True)
        raise Failure(EXIT_RECORD) from None
    try:
        with _terminable(), stream:
            counts, seconds = _screen(protocol, loaded, stream, records, in_format, output, out_format, reports,
                                      jobs, not quiet and (progress if progress is not None else sys.stderr.isatty()),
                                      engine, master, reader)
    except fhir.InputError as err:
        click.echo(f"crit: {err}; nothing written", err=True)
        raise Failure(EXIT_RECORD) from None
    except (KeyboardInterrupt, Terminated) as stop:
        left = ("no file written, earlier files left as they were" if str(output) != "-"
                else "the rows screened so far are on standard output; no report written")
        click.echo(f"crit: {'interrupted' if isinstance(stop, KeyboardInterrupt) else 'terminated'}; {left}", err=True)
        raise Failure(EXIT_INTERRUPTED if isinstance(stop, KeyboardInterrupt) else EXIT_TERMINATED) from None
    if not quiet:
        click.echo(_summary(counts, seconds, jobs), err=True)
        written = [str(output)] + [str(p) for p in reports] if str(output) != "-" else [str(p) for p in reports]
        if written:
            click.echo(f"wrote {', '.join(written)}", err=True)
    if counts.get(report.ERROR):
        raise Failure(EXIT_RECORD)


def _unique_ids(job: Job, items: Iterator[Any], jobs: int) -> Generator[Screened, None, None]:
    """The Python engine's batches, with a record whose id an earlier screened record gave made an
    error row: the workers report each batch's ids, and a batch with a repeated one is screened
    again here, told which records repeat which. Ids are kept as long as the screen runs (as
    JSON text: 7 and "7" differ), the one part of its memory that grows with the cohort."""
    kept: collections.deque[list[Any]] = collections.deque()
    seen: dict[str, int] = {}
    local: Screener | None = None

    def keep(source: Iterator[list[Any]]) -> Iterator[list[Any]]:
        for batch in source:
            kept.append(batch)
            yield batch

    with contextlib.closing(screen_batches(job, keep(batches(items, BATCH)), jobs)) as screened:
        for rows, decided, part, ids in screened:
            batch = kept.popleft()
            again = {}
            for number, key in ids:
                first = seen.setdefault(key, number)
                if first != number:
                    again[number] = first
            if again:
                local = local or Screener(job)
                rows, decided, part, _ = local.run(batch, again)
            yield rows, decided, part, ids


def _screen(protocol: ir.Protocol, loaded: Any, stream: IO[bytes], records: Path, in_format: str, output: Path,
            out_format: str, reports: Sequence[Path], jobs: int, show: bool, engine: str = "python",
            master: str | None = None, reader: FhirReader | None = None) -> tuple[collections.Counter[str], float]:
    """Screen the stream into the output and the reports; each is written under a temporary
    name and renamed into place only when everything is complete."""
    with contextlib.ExitStack() as stack:
        try:
            out: IO[str] = sys.stdout if str(output) == "-" else stack.enter_context(AtomicFile(output, newline=""))
            pages = [stack.enter_context(AtomicFile(path)) for path in reports]
        except UnsafeWrite as err:
            _refuse(f"cannot write there: {err}")
        except OSError as err:
            _refuse(f"cannot write there: {err.strerror or err}: {err.filename}")
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="crit-screen-"))
        stem = Path(protocol.source).stem
        module_path = Path(tmp) / f"{stem}.py"
        module_path.write_text(emit_python(protocol, loaded.sources.get(protocol.source, "")), encoding="utf-8")
        # A module is imported once per process and source: `import_evaluator` keeps it by name.
        meter = Meter()
        header: list[str] = []
        try:
            if in_format == "csv":
                header, items = csv_items(stream, meter)
            elif in_format == "parquet":
                items = iter(())
            elif in_format == "fhir":
                assert reader is not None
                items = reader.items(records, meter)
            else:
                items = (json_items if in_format == "json" else jsonl_items)(stream, meter)
            combine = tuple(c.combine for top in protocol.inclusion + protocol.exclusion for c in top.walk())
            name = f"_crit_screen_{stem}_{protocol.source_hash[:16]}"  # the same module for the same source
            job = Job(str(module_path), name, in_format, out_format, schema_kinds(protocol),
                      tuple(header), combine, bool(reports))
            Columns(job.header, job.kinds)  # a bad header is a usage error, before any output
        except HeaderError as err:  # the input cannot be read as a cohort: exit 3, as for an unreadable file
            click.echo(f"crit: {records}: {err}; nothing screened", err=True)
            raise Failure(EXIT_RECORD) from None
        size = records.stat().st_size if str(records) != "-" and records.is_file() and in_format != "parquet" else None
        size = fhir.input_size(records) if in_format == "fhir" else size
        bar = _Progress(show, size, f"screening {records.name}")
        counts: collections.Counter[str] = collections.Counter()
        tally = report.Tally(Screener(job).criteria) if reports else None
        started = time.perf_counter()
        try:
            if engine == "python":
                source = _unique_ids(job, items, jobs)
            else:
                try:
                    parquet = records if in_format == "parquet" else None
                    source = sql_engine.screen(engine, protocol, job, items, parquet, jobs, master, Path(tmp))
                except sql_engine.CohortError as err:
                    click.echo(f"crit: {err}; nothing screened", err=True)
                    raise Failure(EXIT_RECORD) from None
            with contextlib.closing(source) as screened:
                first = True
                if out_format == "csv":
                    out.write(",".join(COLUMNS) + "\n")
                elif out_format == "json":
                    out.write("[\n")
                for rows, decided, part, _ in screened:
                    if out_format == "json" and rows:
                        rows = ("" if first else ",\n") + rows.rstrip("\n").replace("\n", ",\n")
                        first = False
                    out.write(rows)
                    counts.update(decided)
                    if tally is not None and part is not None:
                        tally.merge(part)
                    bar.update(meter.done, sum(counts.values()))
                if out_format == "json":
                    out.write("\n]\n" if not first else "]\n")
        finally:
            bar.close()
        seconds = time.perf_counter() - started
        if tally is not None:
            judgments = tuple(sorted(f.name for f in protocol.fields if f.type.kind == "judgment"))
            about = report.About(protocol.id, protocol.title, protocol.version, protocol.source, protocol.source_hash,
                                 str(records), judgments)
            for path, page in zip(reports, pages, strict=True):
                html_page = path.suffix.lower() in (".html", ".htm")
                page.write(report_mark(records, protocol.source))
                page.write(report.html(tally, about) if html_page else report.markdown(tally, about))
        if out is sys.stdout:
            sys.stdout.flush()
    return counts, seconds
