"""Reading a cohort file, one bounded record at a time: JSON Lines (one patient object per
line), a JSON document (one patient object, or a list of them) or CSV (one patient per line;
`Columns` maps the header to fields, nested ones included).

Every record is bounded, so that one bad record costs one error row and never the cohort: a
line (or an item of a JSON list) longer than `LINE_LIMIT` is read past in pieces and becomes
an error item; in CSV a record is a line, or several when a quoted cell holds line breaks, and
a quote left open spoils at most `MAX_RECORD_LINES` lines (one error row), after which reading
goes on. JSON text, whole records or cells, is read by
`crit.sources.records.loads`: exact decimals, a key given twice, nesting too deep and numbers too long
are problems by path, never crashes. A UTF-8 byte-order mark at the start is ignored.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, assert_never

from crit.sources import records as json_records

if TYPE_CHECKING:  # the worker processes never import the compiler
    from crit import ir

LINE_LIMIT = 1 << 20  # bytes in one record: a line of JSON Lines or CSV, or an item of a JSON list
MAX_RECORD_LINES = 64  # lines one CSV record may span (a quoted cell holding line breaks)
MAX_LIST_INDEX = 999  # the highest list item a CSV column may name (`treatments[999].start`)
_BOM = b"\xef\xbb\xbf"

# One input record as the reader finds it: its number (1-based), the line where it starts,
# its text (JSON) or cells (a CSV row), and why it cannot be read, if already known.
Item = tuple[int, int, bytes | list[str] | None, str | None]


class RowError(ValueError):
    """A record that cannot be turned into a patient object; the message says why."""


class HeaderError(ValueError):
    """A CSV header that cannot be used; the message says why, in one line."""


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
      JSON array or object (`[{"agent": …}]`) is read as JSON, by `crit.sources.records.loads` (a
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
        match t.kind:
            case "bool" | "judgment":
                return "bool"
            case "integer" | "decimal":
                return "number"
            case "quantity":
                return {"": "number", "value": "number", "unit": "text"}
            case "lab":
                return {"": "json", "value": "number", "uln": "number", "unit": "text"}
            case "set":
                return "set"
            case "interval":
                return {"": "json", "start": "text", "end": "text", "ongoing": "bool"}
            case "list":
                return {"": "json", "[]": {f.name: kind(f.type) for f in records[t.record].fields}}
            case "text" | "date" | "titer" | "enum":
                return "text"
            case _:
                assert_never(t)

    def dated(field: ir.Field) -> Any:
        """A dated result: its value (or a quantity's own keys) and the date it was measured."""
        inner = kind(field.type)
        if field.measured is None:
            return inner
        if isinstance(inner, dict):
            return {**inner, "": "json", "measured": "text"}
        return {"": "json", "value": inner, "measured": "text"}

    return {f.name: dated(f) for f in protocol.fields}


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
            raise RowError(syntax_message(err, None, "cell")) from None
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


class Meter:
    """Bytes read so far, for the progress bar."""

    def __init__(self) -> None:
        self.done = 0


def _lines(stream: IO[bytes], meter: Meter) -> Iterator[tuple[int, bytes | None]]:
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


def jsonl_items(stream: IO[bytes], meter: Meter) -> Iterator[Item]:
    number = 0
    for line, raw in _lines(stream, meter):
        if raw is not None and (not raw or raw.isspace()):
            continue  # blank lines are not records
        number += 1
        yield number, line, raw, None if raw is not None else _too_long(line)


_SURROGATE = re.compile("[\udc80-\udcff]")


class _Unbounded(Exception):
    """A CSV record whose quoted cell runs past the bound (or into a line too long to read)."""


class _Lines:
    """Lines with one line of push-back: the line that would take a record past its bound is
    left for the next record."""

    def __init__(self, lines: Iterator[tuple[int, bytes | None]]) -> None:
        self.lines = lines
        self.back: list[tuple[int, bytes | None]] = []

    def __iter__(self) -> Iterator[tuple[int, bytes | None]]:
        return self

    def __next__(self) -> tuple[int, bytes | None]:
        return self.back.pop() if self.back else next(self.lines)


class _CsvRecord:
    """The lines of one CSV record, handed to `csv.reader` as it asks for them: it asks for the
    next line only while a quoted cell is open, so a record ends where CSV says it does. The
    record may span at most `MAX_RECORD_LINES` lines and `LINE_LIMIT` bytes; a line that would
    take it past either is left unread and `_Unbounded` stops the record. Every line it took
    belongs to this record, whatever happens."""

    def __init__(self, line: int, raw: bytes, lines: _Lines) -> None:
        self.first = line
        self.last = line
        self.raw = raw
        self.lines = lines
        self.size = len(raw)

    def texts(self) -> Iterator[str]:
        yield self.raw.decode("utf-8", "surrogateescape")
        for line, raw in self.lines:
            if raw is None or line - self.first + 1 > MAX_RECORD_LINES or self.size + len(raw) > LINE_LIMIT:
                self.lines.back.append((line, raw))  # not this record's: the next one starts there
                raise _Unbounded(f"a quoted cell is still open after {self.last - self.first + 1:,} "
                                 f"line{'s' if self.last > self.first else ''} "
                                 f"({MAX_RECORD_LINES} lines and {_limit_text()} at most)")
            self.last = line
            self.size += len(raw)
            yield raw.decode("utf-8", "surrogateescape")

    def where(self) -> str:
        return f"line {self.first}" if self.last == self.first else f"lines {self.first}-{self.last}"

    def cells(self) -> list[str]:
        """The record's cells; `csv.Error` or `_Unbounded` if it is not valid CSV."""
        return next(csv.reader(self.texts(), strict=True), [])


def _csv_line(raw: bytes) -> list[str]:
    """The cells of one CSV line (the header): a quoted cell must close on its line."""
    return next(csv.reader([raw.decode("utf-8", "surrogateescape")], strict=True), [])


def _csv_problem(err: csv.Error, spanned: bool = False) -> str:
    if "unexpected end of data" in str(err):
        if spanned:
            return "a quoted cell is not closed before the end of the file; these lines are not read"
        return "a quoted cell is not closed on this line"
    return f"not valid CSV: {err}" + ("; these lines are not read" if spanned else "")


def csv_items(stream: IO[bytes], meter: Meter) -> tuple[list[str], Iterator[Item]]:
    """The header, and the rows as items. A record is a line, or several when a quoted cell
    holds line breaks (as RFC 4180, Excel and Python's csv write them), so that no line of a
    cell is ever read as a record of its own. A record that is not valid CSV (a quote left
    open, say), not UTF-8, too long, or with the wrong number of cells is one error row, and
    reading goes on after the lines it took: a quote left open takes at most MAX_RECORD_LINES
    lines (or LINE_LIMIT bytes), never the rest of the file."""
    lines = _Lines(_lines(stream, meter))
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
            record = _CsvRecord(line, raw, lines)
            try:
                cells = record.cells()
            except csv.Error as err:
                yield number, line, [], f"{record.where()}: {_csv_problem(err, record.last != line)}"
                continue
            except _Unbounded as err:
                yield number, line, [], f"{record.where()}: {err}; these lines are not read"
                continue
            problem = None
            if _SURROGATE.search("".join(cells)):
                problem = f"{record.where()}: not valid UTF-8"
            elif len(cells) != len(header):
                problem = f"{record.where()}: {len(cells)} cells, but the header has {len(header)} columns"
            yield number, line, cells, problem

    return header, rows()


_OUTSIDE = re.compile(rb'[][{}",]')
_INSIDE = re.compile(rb'["\\]')
_SPACE = b" \t\r\n"


class _JsonList:
    """Splits a JSON document that is a list into its items' text, one item at a time, in
    constant memory: it follows strings and nesting, not values, so each item is parsed (and
    any problem found) on its own. An item longer than LINE_LIMIT is skipped, not held."""

    def __init__(self, meter: Meter) -> None:
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
        """The document ended before its list closed: a truncated file, most likely. The item
        it ends in (or after) is one error row, saying so, and not parsed: it may be cut short,
        and a parse error on top would make two rows of one record."""
        if self.closed:
            return
        text = bytes(self.buffer)
        stripped = text.lstrip(_SPACE)
        line = self.start + text[:len(text) - len(stripped)].count(b"\n") if stripped or self.skipped else self.line
        self.number += 1
        self.items.append((self.number, line, None,
                           f"line {line}: the document ends before its list is closed; the file may be cut short"))
        self.buffer.clear()


def json_items(stream: IO[bytes], meter: Meter) -> Iterator[Item]:
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


def syntax_message(err: json_records.RecordSyntaxError, line: int | None, source: str) -> str:
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
