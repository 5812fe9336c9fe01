"""`crit screen`: screen a cohort file with a protocol, one result row per input record.

The input is streamed: JSON Lines (one patient object per line), a JSON document (one patient
object, or a list of them) or CSV (one patient per line; see `Columns` for how columns map to
fields, including nested ones). Each record gives exactly one output row, in input order, even
when it cannot be read (a row with decision "error" and the reason), so the output has as many
rows as the input has records. A record is bounded: a line (or an item of a JSON list) longer
than `LINE_LIMIT` is one error row, read past in pieces, and reading goes on with the next; in
CSV a record is one line, so an unclosed quote spoils only its own line. `--jobs N` screens
batches in N processes, at most a few batches in flight, and writes them back in order, so
memory stays constant however large the file. `--report` writes the attrition report.

Outputs are written under temporary names and renamed into place when complete: an
interrupted screen (Ctrl-C, SIGTERM) removes them and leaves any earlier output untouched.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import importlib.util
import io
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import FrameType, ModuleType
from typing import IO, TYPE_CHECKING, Any, NoReturn

import click

from crit import records as json_records
from crit import report, text

if TYPE_CHECKING:  # the worker processes never import the compiler
    from crit import ir

BATCH = 500  # records per unit of work
LINE_LIMIT = 1 << 20  # bytes in one record: a line of JSON Lines or CSV, or an item of a JSON list
FORMATS = ("jsonl", "json", "csv")
COLUMNS = ("record", "id", "decision", "decided_by", "missing", "pending_judgments", "error")
MAX_LIST_INDEX = 999  # the highest list item a CSV column may name (`treatments[999].start`)
_BOM = b"\xef\xbb\xbf"

# One input record as the reader finds it: its number (1-based), the line where it starts,
# its text (JSON) or cells (a CSV row), and why it cannot be read, if already known.
Item = tuple[int, int, bytes | list[str] | None, str | None]


class RowError(ValueError):
    """A record that cannot be turned into a patient object; the message says why."""


class HeaderError(ValueError):
    """A CSV header that cannot be used; the message says why, in one line."""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that a terminated screen unwinds (removing its
    temporary files, stopping its workers) as an interrupted one does."""


def _limit_text() -> str:
    return f"{LINE_LIMIT // (1 << 20)} MiB" if LINE_LIMIT >= 1 << 20 else f"{LINE_LIMIT:,} bytes"


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
      `ast.value` and `ast.uln`, `treatments[0].start`. Items of a list are numbered from 0 and
      keep their number: trailing items whose cells are all empty are left out (the unused
      columns of a wide export), but an empty item before a filled one is kept, every fact of
      it missing, so that `treatments[7]` is item 7 and nothing is silently dropped.
    - An empty cell leaves the field out (missing); `null` records none (for optional
      fields: `last_live_vaccine` = `null` means never).
    - Numbers are read as exact decimals, `true`/`false` (also `yes`/`no`, `y`/`n`, `1`/`0`) as
      true and false; a set of members is written `a;b` (`[]` for none); a cell that holds a
      JSON array or object (`[{"agent": …}]`) is read as JSON, by `crit.records.loads` (a
      number too long, nesting too deep or a key given twice makes an error row). A cell that
      cannot be read as its field's type is passed on as text, and the evaluator reports it
      with its path.
    - `id` is the record's id. Unknown columns are passed on, and reported as unknown fields.
    """

    def __init__(self, header: Sequence[str], kinds: dict[str, Any]) -> None:
        self.columns: list[Column] = []
        seen: set[str] = set()
        for raw in header:
            name = raw.strip()
            if name in seen:
                raise HeaderError(f"the CSV header names the column {name!r} twice")
            seen.add(name)
            path = _path(name)
            if any(isinstance(step, int) and step > MAX_LIST_INDEX for step in path):
                raise HeaderError(f"the CSV column {name!r} names a list item after the "
                                  f"{MAX_LIST_INDEX + 1:,}th; number items from 0")
            self.columns.append(Column(name, path, _kind(path, kinds)))
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
            _put(record, column, _cell(cell, column))
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


def _cell(cell: str, column: Column) -> Any:
    kind = column.kind
    if cell == "null":
        return None
    if kind == "text":
        return cell
    if cell[0] in "[{" or (kind == "number" and _NUMBER.fullmatch(cell)):
        try:
            return json_records.loads(cell, where=column.name)
        except json_records.RecordSyntaxError as err:
            raise RowError(_syntax_message(err, None, "cell")) from None
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
    """Dicts built from indexed columns become lists in which every item keeps its column's
    number: an item with no filled cell before the last filled one is an empty object."""
    if not isinstance(value, dict):
        return value
    if value.pop(_WHOLE, None):
        return value
    keys = list(value)
    if keys and all(isinstance(k, int) for k in keys):
        return [_lists(value.get(k, {})) for k in range(max(keys) + 1)]
    if any(isinstance(k, int) for k in keys):
        raise RowError("a field is given both as a list and as an object")
    return {k: _lists(v) for k, v in value.items()}


# ---- reading the input -----------------------------------------------------------------------


class _Meter:
    """Bytes read so far, for the progress bar."""

    def __init__(self) -> None:
        self.done = 0


def _lines(stream: IO[bytes], meter: _Meter) -> Iterator[tuple[int, bytes | None]]:
    """Each line with its number, or None for a line longer than LINE_LIMIT: that one is read
    past in pieces, so no line, however long, is ever held whole. A BOM at the start is dropped."""
    number = 0
    while True:
        raw = stream.readline(LINE_LIMIT + 1)
        if not raw:
            return
        meter.done += len(raw)
        number += 1
        if number == 1:
            raw = raw.removeprefix(_BOM)
        if len(raw) > LINE_LIMIT and not raw.endswith(b"\n"):
            while True:
                rest = stream.readline(LINE_LIMIT)
                meter.done += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            yield number, None
            continue
        yield number, raw


def _too_long(line: int) -> str:
    return f"line {line}: longer than {_limit_text()}, more than any patient record; not read"


def jsonl_items(stream: IO[bytes], meter: _Meter) -> Iterator[Item]:
    number = 0
    for line, raw in _lines(stream, meter):
        if raw is not None and (not raw or raw.isspace()):
            continue  # blank lines are not records
        number += 1
        yield number, line, raw, None if raw is not None else _too_long(line)


_SURROGATE = re.compile("[\udc80-\udcff]")


def _csv_line(raw: bytes) -> list[str]:
    """The cells of one CSV line; a quoted cell must close on its line."""
    return next(csv.reader([raw.decode("utf-8", "surrogateescape")], strict=True), [])


def _csv_problem(err: csv.Error) -> str:
    if "unexpected end of data" in str(err):
        return "a quoted cell is not closed on this line (a record is one line; a cell cannot span lines)"
    return f"not valid CSV: {err}"


def csv_items(stream: IO[bytes], meter: _Meter) -> tuple[list[str], Iterator[Item]]:
    """The header, and the rows as items. Each line is one record, read on its own: a line
    that is not valid CSV (an unclosed quote, say), not UTF-8, too long, or with the wrong
    number of cells is one error row, and reading goes on with the next line."""
    lines = _lines(stream, meter)
    header: list[str] = []
    for line, raw in lines:
        if raw is None:
            raise HeaderError(f"the CSV header (line {line}) is longer than {_limit_text()}")
        if not raw.strip(b"\r\n"):
            continue
        try:
            header = _csv_line(raw)
        except csv.Error as err:
            raise HeaderError(f"cannot read the CSV header: {_csv_problem(err)}") from None
        break
    if _SURROGATE.search(",".join(header)):
        raise HeaderError("the CSV header is not valid UTF-8")

    def rows() -> Iterator[Item]:
        number = 0
        for line, raw in lines:
            if raw is not None and not raw.strip(b"\r\n"):
                continue  # a blank line
            number += 1
            if raw is None:
                yield number, line, None, _too_long(line)
                continue
            try:
                cells = _csv_line(raw)
            except csv.Error as err:
                yield number, line, [], f"line {line}: {_csv_problem(err)}"
                continue
            problem = None
            if _SURROGATE.search("".join(cells)):
                problem = f"line {line}: not valid UTF-8"
            elif len(cells) != len(header):
                problem = f"line {line}: {len(cells)} cells, but the header has {len(header)} columns"
            yield number, line, cells, problem

    return header, rows()


_OUTSIDE = re.compile(rb'[][{}",]')
_INSIDE = re.compile(rb'["\\]')
_SPACE = b" \t\r\n"


class _JsonList:
    """Splits a JSON document that is a list into its items' text, one item at a time, in
    constant memory: it follows strings and nesting, not values, so each item is parsed (and
    any problem found) on its own. An item longer than LINE_LIMIT is skipped, not held."""

    def __init__(self, meter: _Meter) -> None:
        self.meter = meter
        self.items: list[Item] = []
        self.number = 0
        self.line = 1  # line of the current chunk's start
        self.depth = 0
        self.in_string = False
        self.escape = False
        self.buffer = bytearray()
        self.skipped = False  # the current item outgrew LINE_LIMIT
        self.start = 1  # line where the current item's text starts
        self.commas = 0
        self.closed = False
        self.rest = b""

    def _take(self, data: bytes) -> None:
        if self.skipped:
            return
        if len(self.buffer) + len(data) > LINE_LIMIT:
            self.skipped = True
            self.buffer.clear()
            return
        self.buffer += data

    def _finish(self, at_line: int, last: bool) -> None:
        """The current item ends (at a comma, or at the list's closing bracket when `last`)."""
        text = bytes(self.buffer)
        stripped = text.lstrip(_SPACE)
        line = self.start + text[:len(text) - len(stripped)].count(b"\n")
        if self.skipped:
            self.number += 1
            self.items.append((self.number, line, None,
                               f"line {line}: an item longer than {_limit_text()}, more than any patient record; "
                               "not read"))
        elif stripped.strip(_SPACE):
            self.number += 1
            self.items.append((self.number, line, stripped, None))
        elif not last or self.commas:
            self.number += 1
            self.items.append((self.number, at_line, None,
                               f"line {at_line}: an empty item (two commas in a row, or a comma before the end)"))
        self.buffer.clear()
        self.skipped = False
        self.start = at_line

    def feed(self, chunk: bytes) -> None:
        at = 0
        size = len(chunk)
        while at < size and not self.closed:
            if self.escape:
                self._take(chunk[at:at + 1])
                at += 1
                self.escape = False
                continue
            if self.in_string:
                found = _INSIDE.search(chunk, at)
                if found is None:
                    self._take(chunk[at:])
                    break
                end = found.end()
                self._take(chunk[at:end])
                at = end
                if found.group() == b"\\":
                    self.escape = True
                else:
                    self.in_string = False
                continue
            found = _OUTSIDE.search(chunk, at)
            if found is None:
                self._take(chunk[at:])
                break
            char = found.group()
            here = self.line + chunk.count(b"\n", 0, found.start())
            if char == b'"':
                self.in_string = True
            elif char in b"[{":
                self.depth += 1
            elif self.depth == 0 and char == b",":
                self._take(chunk[at:found.start()])
                self.commas += 1
                self._finish(here, last=False)
                at = found.end()
                continue
            elif self.depth == 0 and char == b"]":
                self._take(chunk[at:found.start()])
                self._finish(here, last=True)
                self.closed = True
                self.rest = chunk[found.end():]
                self.line = here
                return
            elif char in b"]}":
                self.depth = max(self.depth - 1, 0)
            self._take(chunk[at:found.end()])
            at = found.end()
        self.line += chunk.count(b"\n")

    def end(self) -> None:
        """The document ended before its list closed: a truncated file, most likely."""
        if self.closed:
            return
        if self.buffer.strip(_SPACE) or self.skipped:
            self._finish(self.line, last=True)
        self.number += 1
        self.items.append((self.number, self.line, None,
                           f"line {self.line}: the document ends before its list is closed; the file may be "
                           "cut short"))


def json_items(stream: IO[bytes], meter: _Meter) -> Iterator[Item]:
    """The records of a JSON document: the patient it holds, or each item of the list it holds."""
    head = stream.read(64 * 1024)
    meter.done += len(head)
    head = head.removeprefix(_BOM)
    body = head.lstrip(_SPACE)
    line = 1 + head[:len(head) - len(body)].count(b"\n")
    while not body:  # a document that starts with a long run of whitespace
        more = stream.read(64 * 1024)
        if not more:
            return  # an empty document holds no records
        meter.done += len(more)
        body = more.lstrip(_SPACE)
        line += more[:len(more) - len(body)].count(b"\n")
    if not body.startswith(b"["):
        whole = body + stream.read(LINE_LIMIT + 1 - len(body))
        meter.done += len(whole) - len(body)
        if len(whole) > LINE_LIMIT:
            yield 1, line, None, (f"line {line}: a document longer than {_limit_text()} that is not a list; "
                                  "give a list of patients, or JSON Lines")
            return
        yield 1, line, whole, None
        return
    splitter = _JsonList(meter)
    splitter.line = line
    splitter.start = line
    chunk = body[1:]
    while True:
        splitter.feed(chunk)
        yield from splitter.items
        splitter.items.clear()
        if splitter.closed:
            break
        chunk = stream.read(64 * 1024)
        meter.done += len(chunk)
        if not chunk:
            splitter.end()
            yield from splitter.items
            return
    rest = splitter.rest
    while not rest.strip(_SPACE):
        rest = stream.read(64 * 1024)
        meter.done += len(rest)
        if not rest:
            return
    yield splitter.number + 1, splitter.line, None, f"line {splitter.line}: text after the end of the list"


_JSON_AT = re.compile(r"not valid JSON at line (\d+), column (\d+): (.*)", re.S)


def _syntax_message(err: json_records.RecordSyntaxError, line: int | None, source: str) -> str:
    """A reading problem located in the input: for a line of JSON Lines (`source` "jsonl"),
    the line and column; for an item of a JSON document ("json"), the line; for a CSV cell
    ("cell"), the character in the cell."""
    parts = []
    for problem in err.problems:
        found = _JSON_AT.fullmatch(problem.message)
        if found is None:
            parts.append(str(problem))
            continue
        at_line, column, message = int(found.group(1)), found.group(2), found.group(3)
        if source == "cell":
            parts.append(f"{problem.path}: not valid JSON at character {column} of the cell: {message}")
        elif source == "jsonl":
            return f"line {line}, column {column}: not valid JSON: {message}"
        else:
            assert line is not None
            return f"line {line + at_line - 1}: not valid JSON: {message}"
    joined = "; ".join(parts)
    return joined if line is None else f"line {line}: {joined}"


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


def result_id(value: Any) -> str | int | None:
    """The id written to the results: text and whole numbers as they are; any other value
    (a decimal, true, a list) as its JSON text, so the output is always strict JSON."""
    if value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, Decimal):
        return str(value)
    try:
        return text.json_text(value)
    except (TypeError, ValueError):
        return repr(value)


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
        record_id: Any = self.columns.id_of(payload) if self.columns is not None and isinstance(payload, list) else None
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
        shown = result_id(record_id)
        if problem is not None:
            decisions[report.ERROR] += 1
            if tally is not None:
                tally.add_error(number, "" if shown is None else str(shown), problem)
            return number, shown, report.ERROR, (), (), (), problem
        decision = assessed.decision.value
        decisions[decision] += 1
        if tally is not None:
            tally.add(decision, "|".join(assessed.outcomes), assessed.missing + assessed.pending_judgments,
                      f"record {number}" if shown is None or shown == "" else str(shown))
        return (number, shown, decision, self.decided_by(assessed), assessed.missing,
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
            decoded = payload.decode("utf-8")
        except UnicodeDecodeError as err:
            at = line + payload.count(b"\n", 0, err.start)
            raise RowError(f"line {at}: not valid UTF-8 (byte {payload[err.start]:#04x})") from None
        try:
            return json_records.loads(decoded)
        except json_records.RecordSyntaxError as err:
            raise RowError(_syntax_message(err, line, self.job.input_format)) from None

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
        """The rows as CSV (every cell neutralised against formulas) or as strict JSON, one
        object per line."""
        if self.job.output_format == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            cell = text.csv_cell
            for number, record_id, decision, decided, missing, pending, error in rows:
                writer.writerow((number, cell(record_id), cell(decision), cell(";".join(decided)),
                                 cell(";".join(missing)), cell(";".join(pending)), cell(error)))
            return buffer.getvalue()
        return "".join(
            text.json_text(dict(zip(COLUMNS, (n, i, d, list(by), list(m), list(p), e), strict=True))) + "\n"
            for n, i, d, by, m, p, e in rows)


_WORKER: Screener | None = None


def _start_worker(job: Job) -> None:
    """A worker leaves Ctrl-C to the main process, which stops it: no worker traceback."""
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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
                   ) -> Generator[tuple[str, collections.Counter[str], report.Tally | None], None, None]:
    """The screened batches, in input order. With several jobs, a few batches per process are
    in flight at a time: the input is read only as fast as results are written. Close the
    iterator (or exhaust it) to stop the workers."""
    if jobs <= 1:
        screener = Screener(job)
        for batch in batches:
            yield screener.run(batch)
        return
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no inherited threads or open files
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the workers start with Ctrl-C ignored
    try:
        pool = context.Pool(jobs, initializer=_start_worker, initargs=(job,))
    finally:
        signal.signal(signal.SIGINT, ignored)
    with pool:  # leaving it, however, terminates and joins every worker
        pending: collections.deque[Any] = collections.deque()
        for batch in batches:
            pending.append(pool.apply_async(_work, (batch,)))
            if len(pending) >= 3 * jobs:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
    pool.join()


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
    from crit.cli import EXIT_USAGE, Failure  # here: crit.cli imports this module

    click.echo(f"crit: {message}", err=True)
    raise Failure(EXIT_USAGE)


def _format(path: Path, given: str | None, what: str) -> str:
    if given is not None:
        return given
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".json":
        return "json"
    if suffix in (".jsonl", ".ndjson") or str(path) == "-":
        return "jsonl"
    _refuse(f"cannot tell the {what} format of {path} from its name; give --{what}-format jsonl, json or csv")


def _refuse_overwrites(protocol_file: Path, records: Path, output: Path, reports: Sequence[Path]) -> None:
    """No output may be the protocol, the input or another output: that would overwrite it."""
    from crit.files import same_file

    read = [("the protocol", protocol_file)] + ([("the input", records)] if str(records) != "-" else [])
    written = ([("-o", output)] if str(output) != "-" else []) + [("--report", path) for path in reports]
    for index, (flag, path) in enumerate(written):
        for what, source in read:
            if same_file(path, source):
                _refuse(f"{flag} {path} names {what}; crit will not overwrite it")
        for earlier_flag, earlier in written[:index]:
            if same_file(path, earlier):
                _refuse(f"{flag} {path} names the same file as {earlier_flag} {earlier}; give each its own file")


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
@click.argument("records", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
              help="Where to write one result row per record (.jsonl, .json or .csv; - for stdout).")
@click.option("--input-format", type=click.Choice(FORMATS),
              help="jsonl, json (one document) or csv (default: from the file name).")
@click.option("--output-format", type=click.Choice(FORMATS), help="jsonl, json or csv (default: from the file name).")
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
    """Screen every patient record in RECORDS (JSON Lines, a JSON document or CSV) against
    PROTOCOL_FILE.

    Writes one row per record to OUTPUT, in input order: its number, id, decision, the
    criteria that decided it and the missing facts; a record that cannot be read gets a row
    with decision "error" and the reason. Exits 3 if any record could not be read; an
    interrupted screen (130 for Ctrl-C, 143 for SIGTERM) leaves no output behind, and any
    earlier output as it was.
    """
    from crit.cli import EXIT_ERRORS, EXIT_RECORD, Failure  # here: crit.cli imports this module

    in_format = _format(records, input_format, "input")
    out_format = _format(output, output_format, "output")
    for path in reports:
        if path.suffix.lower() not in (".md", ".html", ".htm"):
            _refuse(f"--report {path}: give a .md or .html file")
    _refuse_overwrites(protocol_file, records, output, reports)
    jobs = jobs or os.cpu_count() or 1

    from crit.diagnostics import CritError, render_all
    from crit.driver import Loaded, load

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
    try:
        with _terminable(), stream:
            counts, seconds = _screen(protocol, loaded, stream, records, in_format, output, out_format, reports,
                                      jobs, not quiet and (progress if progress is not None else sys.stderr.isatty()))
    except Terminated:
        click.echo("crit: terminated", err=True)
        raise Failure(143) from None
    if not quiet:
        click.echo(_summary(counts, seconds, jobs), err=True)
        written = [str(output)] + [str(p) for p in reports] if str(output) != "-" else [str(p) for p in reports]
        if written:
            click.echo(f"wrote {', '.join(written)}", err=True)
    if counts.get(report.ERROR):
        raise Failure(EXIT_RECORD)


def _screen(protocol: ir.Protocol, loaded: Any, stream: IO[bytes], records: Path, in_format: str, output: Path,
            out_format: str, reports: Sequence[Path], jobs: int, show: bool
            ) -> tuple[collections.Counter[str], float]:
    """Screen the stream into the output and the reports; each is written under a temporary
    name and renamed into place only when everything is complete."""
    from crit.emit.python import emit_python
    from crit.files import AtomicFile, UnsafeWrite

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
        # A module is imported once per process and source: `import_module` keeps it by name.
        meter = _Meter()
        header: list[str] = []
        try:
            if in_format == "csv":
                header, items = csv_items(stream, meter)
            else:
                items = (json_items if in_format == "json" else jsonl_items)(stream, meter)
            combine = tuple(c.combine for top in protocol.inclusion + protocol.exclusion for c in top.walk())
            name = f"_crit_screen_{stem}_{protocol.source_hash[:16]}"  # the same module for the same source
            job = Job(str(module_path), name, in_format, out_format, schema_kinds(protocol),
                      tuple(header), combine, bool(reports))
            Columns(job.header, job.kinds)  # a bad header is a usage error, before any output
        except HeaderError as err:
            _refuse(f"{records}: {err}")
        size = records.stat().st_size if str(records) != "-" and records.is_file() else None
        bar = _Progress(show, size, f"screening {records.name}")
        counts: collections.Counter[str] = collections.Counter()
        tally = report.Tally(Screener(job).criteria) if reports else None
        started = time.perf_counter()
        try:
            with contextlib.closing(screen_batches(job, _batches(items, BATCH), jobs)) as screened:
                first = True
                if out_format == "csv":
                    out.write(",".join(COLUMNS) + "\n")
                elif out_format == "json":
                    out.write("[\n")
                for rows, decided, part in screened:
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
                page.write(report.html(tally, about) if html_page else report.markdown(tally, about))
        if out is sys.stdout:
            sys.stdout.flush()
    return counts, seconds
