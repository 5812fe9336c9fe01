"""A FHIR mapping file: where each patient field of a schema comes from in FHIR R4.

The mapping (`<schema stem>.fhir.toml`, beside the schema) is data for the FHIR reader
(`crit.sources.fhir`); the language and the generated evaluators never see FHIR. This module
reads the file (`load`) and checks it against the schema's checked IR (`check`), reporting every
problem as a positioned diagnostic in the TOML file, as `crit check` does for `.crit` files.

API, for the reader and the synthetic generator (also in the README, "FHIR input"):

- `load(path) -> Mapping` reads and shapes the file, or raises `CritError` with positioned F1xx
  diagnostics when the TOML does not parse or a key or value is not of the mapping's shape
  (quote their lines with `{display_path(path): read_text(path)}`). `check(mapping, fields,
  records) -> list[Diagnostic]` finds what does not fit the schema (an unmapped field, a unit
  that does not convert, a member without codes …); `fhirpath_problem(expression)` says why a
  FHIRPath would not run.
- `Mapping`: `schema` (path as written, relative to the mapping), `schema_path()`, `fhir`
  ("R4"), `codesystems` (alias → absolute URI), `fields` (`FieldMap`, file order), `field(name)`.
- `FieldMap`: `name`; `manual` (the reason, when the field is entered by hand: then nothing else
  is set); `resource` (a `ResourceType`); `code` (`Code`s the resource's code element must
  match; `resource_codes()` adds the members' codes when `members_by_resource_code()`); `status`
  (`statuses()` gives the resource type's default when unset); `verification` (Condition
  only); `where` (FHIRPath boolean); `select` ("latest", "earliest", "one", "any", "count",
  "all"); `value`, `uln`, `measured`, `start`, `end`, `ongoing`, `age_at` (FHIRPath, except
  `age_at`: a patient date field); `units` (UCUM codes as written); `members` (`MemberMap`s);
  `positive` (`Code`s of a set member's result that make it present); `within` (`Window`);
  `absent` ("missing", "none", "empty", "no", "zero"); `items` (`ItemMap`s, for a list of records).
- `Code(system, code, prefix, text)`: `system` is the absolute URI (an alias resolved) or None
  for a bare code (a FHIR `code` value such as Patient.gender); `prefix` for a trailing `*`;
  `matches(system, code)`.
- `MemberMap(name, codes, manual)`: `manual` when FHIR cannot tell the member apart (then no
  codes). A bool field may map `true` and `false` as members.
- `ItemMap(name, value, code_in, members, ongoing, otherwise, manual)`: one sub-field of a list
  item, from the same resource; `kind` says which of value / code_in / members / manual.
- `Window(days, before)`: inclusive look-back of `days` days before the date field `before`.
- `crit_unit(ucum)`: a UCUM unit in crit's spelling (`10*3/uL` → `10^3/uL`, `{1.73_m2}` →
  `1.73m2`, `[IU]` → `IU`): the one place that translates, for the reader and the checker.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, assert_never, get_args

from antlr4 import CommonTokenStream, InputStream, Token  # type: ignore[import-untyped]
from antlr4.error.ErrorListener import ErrorListener  # type: ignore[import-untyped]
from fhirpathpy.engine.invocations import invocation_registry as fhirpath_functions
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from crit import ir
from crit.ast import Span
from crit.check.names import did_you_mean
from crit.check.units import UnitError, factor, parse_unit
from crit.diagnostics import CritError, Diagnostic
from crit.text import split_lines

# ---- the closed sets ------------------------------------------------------------------------

ResourceType = Literal["Patient", "Observation", "Condition", "MedicationStatement",
                       "MedicationRequest", "MedicationAdministration", "Immunization",
                       "Procedure", "Encounter", "ResearchSubject"]
Select = Literal["latest", "earliest", "one", "any", "count", "all"]
# what no matching resource means: unknown (the default), or, stated by the mapping's author, a
# recorded none (optional fields), an empty list or set, "no" (select = "any"), 0 (select = "count")
Absent = Literal["missing", "none", "empty", "no", "zero"]
ItemKind = Literal["value", "code_in", "members", "manual"]

RESOURCE_TYPES: tuple[ResourceType, ...] = get_args(ResourceType)
SELECTS: tuple[Select, ...] = get_args(Select)
ABSENTS: tuple[Absent, ...] = get_args(Absent)
FHIR_VERSIONS = ("R4",)

# The statuses a resource counts with unless the mapping says otherwise (`status`); for
# Condition, the clinical status, with the verification status in DEFAULT_VERIFICATION. A
# resource entered in error never counts, whatever the mapping says.
DEFAULT_STATUS: dict[ResourceType, tuple[str, ...]] = {
    "Patient": (),
    "Observation": ("final", "amended", "corrected"),
    "Condition": ("active", "recurrence", "relapse"),
    "MedicationStatement": ("active", "completed", "stopped"),
    "MedicationRequest": ("active", "completed", "stopped"),
    "MedicationAdministration": ("completed", "in-progress"),
    "Immunization": ("completed",),
    "Procedure": ("completed",),
    "Encounter": ("finished", "in-progress", "arrived"),
    "ResearchSubject": ("on-study", "on-study-intervention", "on-study-observation", "follow-up",
                        "off-study"),
}
DEFAULT_VERIFICATION = ("confirmed",)
# Each resource type's status codes in FHIR R4 (Condition: its clinical status), so that a
# misspelt status, which would match nothing, is caught when the mapping is read.
STATUS_CODES: dict[ResourceType, tuple[str, ...]] = {
    "Patient": (),
    "Observation": ("registered", "preliminary", "final", "amended", "corrected", "cancelled", "unknown"),
    "Condition": ("active", "recurrence", "relapse", "inactive", "remission", "resolved"),
    "MedicationStatement": ("active", "completed", "intended", "stopped", "on-hold", "unknown", "not-taken"),
    "MedicationRequest": ("active", "on-hold", "cancelled", "completed", "stopped", "draft", "unknown"),
    "MedicationAdministration": ("in-progress", "not-done", "on-hold", "completed", "stopped", "unknown"),
    "Immunization": ("completed", "not-done"),
    "Procedure": ("preparation", "in-progress", "not-done", "on-hold", "stopped", "completed", "unknown"),
    "Encounter": ("planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled", "unknown"),
    "ResearchSubject": ("candidate", "eligible", "follow-up", "ineligible", "not-registered", "off-study",
                        "on-study", "on-study-intervention", "on-study-observation", "pending-on-study",
                        "potential-candidate", "screening", "withdrawn"),
}
VERIFICATION_CODES = ("unconfirmed", "provisional", "differential", "confirmed", "refuted")
ENTERED_IN_ERROR = "entered-in-error"

# The keys of each table, in the order the README documents them.
TOP_KEYS = ("schema", "fhir", "codesystems", "fields")
FIELD_KEYS = ("manual", "resource", "code", "status", "verification", "where", "select", "value",
              "uln", "measured", "start", "end", "ongoing", "age_at", "units", "members",
              "positive", "within", "absent", "items")
ITEM_KEYS = ("value", "code_in", "members", "ongoing", "otherwise", "manual")
WINDOW_KEYS = ("days", "before")
FHIRPATH_KEYS = ("where", "value", "uln", "measured", "start", "end", "ongoing")
MAX_MAPPING_BYTES = 1 << 20  # a mapping is a few KiB; nothing larger is read

# ---- the model ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Code:
    """A code a resource may carry: `system|code`, or a bare code (no system) for an element
    of FHIR type `code`; a trailing `*` in the file makes it a prefix."""

    system: str | None
    code: str
    prefix: bool
    text: str  # as written in the mapping

    def matches(self, system: str | None, code: str) -> bool:
        if system != self.system:
            return False
        return code.startswith(self.code) if self.prefix else code == self.code


@dataclass(frozen=True, slots=True)
class MemberMap:
    """The codes that say an enum or set member (or `true`/`false` of a bool); `manual` when
    FHIR cannot tell the member apart and it is stated as such."""

    name: str
    codes: tuple[Code, ...]
    manual: bool


@dataclass(frozen=True, slots=True)
class Window:
    """Only resources dated within `days` days before the date field `before` count (inclusive)."""

    days: int
    before: str


@dataclass(frozen=True, slots=True)
class ItemMap:
    """One sub-field of a list item, taken from the same resource as the item: a FHIRPath
    `value` (with `otherwise`, a date field used when the value is empty and `ongoing` holds),
    `code_in` (true when the resource's code is one of these), `members` (an enum sub-field
    by the resource's code), or `manual` (not in FHIR: the item lacks it)."""

    name: str
    value: str | None = None
    code_in: tuple[Code, ...] = ()
    members: tuple[MemberMap, ...] = ()
    ongoing: str | None = None
    otherwise: str | None = None
    manual: str | None = None

    @property
    def kind(self) -> ItemKind:
        if self.manual is not None:
            return "manual"
        if self.code_in:
            return "code_in"
        if self.members:
            return "members"
        return "value"


@dataclass(frozen=True, slots=True)
class FieldMap:
    """Where one patient field comes from, or `manual` with the reason it is entered by hand."""

    name: str
    manual: str | None = None
    resource: ResourceType | None = None
    code: tuple[Code, ...] = ()
    status: tuple[str, ...] | None = None
    verification: tuple[str, ...] | None = None
    where: str | None = None
    select: Select = "latest"
    value: str | None = None
    uln: str | None = None
    measured: str | None = None
    start: str | None = None
    end: str | None = None
    ongoing: str | None = None
    age_at: str | None = None
    units: tuple[str, ...] = ()
    members: tuple[MemberMap, ...] = ()
    positive: tuple[Code, ...] = ()
    within: Window | None = None
    absent: Absent = "missing"
    items: tuple[ItemMap, ...] = ()

    def statuses(self) -> tuple[str, ...]:
        """The statuses that count: the mapping's, else the resource type's default."""
        if self.status is not None:
            return self.status
        return DEFAULT_STATUS[self.resource] if self.resource is not None else ()

    def verifications(self) -> tuple[str, ...]:
        """A Condition's verification statuses that count."""
        return self.verification if self.verification is not None else DEFAULT_VERIFICATION

    def members_by_resource_code(self) -> bool:
        """Whether members are told apart by the resource's own code (a diagnosis, a set's
        tests), rather than by the codes of its `value` (a coded result)."""
        return self.resource != "Patient" and (self.value is None or bool(self.positive))

    def resource_codes(self) -> tuple[Code, ...]:
        """The codes a candidate resource's own code must match (empty: any code): `code`, else,
        when members are told apart by the resource's code, the members' codes."""
        if self.code or not self.members_by_resource_code():
            return self.code
        return tuple(c for m in self.members for c in m.codes)

    def member_of(self, system: str | None, code: str) -> str | None:
        """The member a code says, or None when no member's codes match it."""
        for member in self.members:
            if any(c.matches(system, code) for c in member.codes):
                return member.name
        return None


@dataclass(frozen=True, slots=True)
class Mapping:
    path: Path
    file: str  # as diagnostics show it
    source: str  # the file's text, for quoting and locating
    schema: str
    fhir: str
    codesystems: tuple[tuple[str, str], ...]
    fields: tuple[FieldMap, ...]

    def schema_path(self) -> Path:
        return self.path.parent / self.schema

    def field(self, name: str) -> FieldMap | None:
        return next((f for f in self.fields if f.name == name), None)


# ---- UCUM in crit's spelling ----------------------------------------------------------------

_UCUM_SPECIAL = {"[IU]": "IU", "[iU]": "IU", "[in_i]": "in", "[lb_av]": "lb", "[oz_av]": "oz",
                 "mm[Hg]": "mmHg", "cm[H2O]": "cmH2O"}
# The UCUM annotations crit reads as part of a unit; any other annotation means 1, as in UCUM.
_UCUM_ANNOTATIONS = {"1.73_m2": "1.73m2", "cells": "cells", "copies": "copies"}
_UCUM_POWER_OF_TEN = re.compile(r"(?<![0-9.])10\*(?=[0-9])")
_UCUM_ANNOTATION = re.compile(r"\{([^{}]*)\}")


def crit_unit(ucum: str) -> str:
    """A UCUM unit code as crit writes the unit: `10*3/uL` → `10^3/uL`; the annotations crit
    reads lose their braces (`mL/min/{1.73_m2}` → `mL/min/1.73m2`, `{cells}/uL` → `cells/uL`)
    and any other is dropped, since UCUM reads it as 1 (`{score}` → ``); bracketed units take
    their everyday names (`[IU]/mL` → `IU/mL`, `mm[Hg]` → `mmHg`). Anything else is kept, and
    crit's unit parser says whether it knows it."""
    text = ucum.strip()
    for special, plain in _UCUM_SPECIAL.items():
        text = text.replace(special, plain)
    text = _UCUM_POWER_OF_TEN.sub("10^", text)
    return _UCUM_ANNOTATION.sub(lambda m: _UCUM_ANNOTATIONS.get(m.group(1), ""), text)


# ---- where a key stands in the file ---------------------------------------------------------

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_SPACE = re.compile(r"[ \t]*")


def _key_parts(line: str, start: int) -> tuple[list[tuple[str, int]], int] | None:
    """The dotted key at `line[start:]` as (part, column of the part), and where it ends; None
    when the text there is not a key."""
    parts: list[tuple[str, int]] = []
    i = start
    while True:
        i = _SPACE.match(line, i).end()  # type: ignore[union-attr]
        if i < len(line) and line[i] in "\"'":
            quote = line[i]
            j = i + 1
            chars: list[str] = []
            while j < len(line) and line[j] != quote:
                if quote == '"' and line[j] == "\\" and j + 1 < len(line):
                    chars.append(line[j + 1])
                    j += 2
                    continue
                chars.append(line[j])
                j += 1
            if j >= len(line):
                return None
            parts.append(("".join(chars), i))
            i = j + 1
        else:
            bare = _BARE.match(line, i)
            if bare is None:
                return None
            parts.append((bare.group(), i))
            i = bare.end()
        i = _SPACE.match(line, i).end()  # type: ignore[union-attr]
        if i < len(line) and line[i] == ".":
            i += 1
            continue
        return parts, i


@dataclass(frozen=True, slots=True)
class _Entry:
    path: tuple[str, ...]
    line: int  # 1-based
    column: int  # 1-based, of the last part of the key
    width: int  # of the last part as written
    value_column: int  # 1-based, where the value starts (0 for a table header)


def _entries(text: str) -> list[_Entry]:
    """Every table header and every `key = value` line of a TOML text, with its full dotted
    path. Lines inside a multi-line string or array are skipped: a key stands at the start of a
    line, outside any bracket or string still open."""
    out: list[_Entry] = []
    table: tuple[str, ...] = ()
    open_brackets = 0
    in_string: str | None = None
    for number, line in enumerate(split_lines(text), start=1):
        if in_string is None and open_brackets == 0:
            stripped = line.lstrip()
            offset = len(line) - len(stripped)
            header = re.match(r"\[\[?", stripped)
            if header:
                parsed = _key_parts(line, offset + header.end())
                if parsed is not None:
                    parts, _ = parsed
                    table = tuple(p for p, _ in parts)
                    column = parts[-1][1]
                    out.append(_Entry(table, number, column + 1, _written_width(line, column), 0))
                continue
            parsed = _key_parts(line, offset) if stripped and stripped[0] not in "#" else None
            if parsed is not None:
                parts, end = parsed
                if end < len(line) and line[end] == "=":
                    column = parts[-1][1]
                    value_at = _SPACE.match(line, end + 1).end()  # type: ignore[union-attr]
                    out.append(_Entry(table + tuple(p for p, _ in parts), number, column + 1,
                                      _written_width(line, column), value_at + 1))
                    open_brackets, in_string = _scan(line, value_at, 0, None)
                    continue
        open_brackets, in_string = _scan(line, 0, open_brackets, in_string)
    return out


def _written_width(line: str, column: int) -> int:
    """How many characters the key part at `column` takes, quotes included."""
    if line[column] in "\"'":
        end = line.find(line[column], column + 1)
        return (end if end > column else len(line) - 1) - column + 1
    bare = _BARE.match(line, column)
    return len(bare.group()) if bare else 1


def _scan(line: str, start: int, depth: int, in_string: str | None) -> tuple[int, str | None]:
    """Bracket depth and open multi-line string after reading `line[start:]`."""
    i = start
    while i < len(line):
        if in_string is not None:
            if line.startswith(in_string, i):
                i += len(in_string)
                in_string = None
                continue
            if in_string[0] == '"' and line[i] == "\\":
                i += 2
                continue
            i += 1
            continue
        ch = line[i]
        if ch == "#":
            break
        if line.startswith('"""', i) or line.startswith("'''", i):
            in_string = line[i:i + 3]
            i += 3
            continue
        if ch in "\"'":
            end = i + 1
            while end < len(line) and line[end] != ch:
                end += 2 if ch == '"' and line[end] == "\\" else 1
            i = end + 1
            continue
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth = max(depth - 1, 0)
        i += 1
    return depth, in_string


class Locator:
    """Finds where a key, or a value inside it, stands in a mapping's text: tomllib gives no
    positions, so the lines are scanned once for table headers and `key = value` lines."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.lines = split_lines(text)
        self.entries = _entries(text)

    def key(self, path: tuple[str, ...]) -> Span:
        """The span of the key at `path`: its own line, or the line of the nearest enclosing key
        or table written in the file (an inline table's keys are searched within its line)."""
        for size in range(len(path), 0, -1):
            entry = self._find(path[:size])
            if entry is None:
                continue
            if size == len(path):
                return self._span(entry.line, entry.column, entry.width)
            inner = self._inline(entry, path[size:])
            if inner is not None:
                return inner
            return self._span(entry.line, entry.column, entry.width)
        return self._span(1, 1, 1)

    def value(self, path: tuple[str, ...], text: str | None = None) -> Span:
        """The span of the value of the key at `path`; with `text`, of that string inside the
        value (an element of an array, which may continue on later lines)."""
        entry = self._find(path)
        if entry is None:  # a key of an inline table: the value is searched for after it
            span = self.key(path)
            line = self.lines[span.line - 1] if span.line <= len(self.lines) else ""
            for quoted in (f'"{text}"', f"'{text}'") if text is not None else ():
                at = line.find(quoted, span.column - 1)
                if at >= 0:
                    return self._span(span.line, at + 1, len(quoted))
            return span
        if text is not None:
            for number in range(entry.line, len(self.lines) + 1):
                line = self.lines[number - 1]
                start = entry.value_column - 1 if number == entry.line else 0
                for quoted in (f'"{text}"', f"'{text}'"):
                    at = line.find(quoted, start)
                    if at >= 0:
                        return self._span(number, at + 1, len(quoted))
                later = self._next_entry_line(entry)
                if later is not None and number + 1 >= later:
                    break
            return self._span(entry.line, entry.column, entry.width)
        if entry.value_column == 0:
            return self._span(entry.line, entry.column, entry.width)
        line = self.lines[entry.line - 1]
        width = len(line.split(" #")[0].rstrip()) - (entry.value_column - 1)
        return self._span(entry.line, entry.value_column, max(width, 1))

    def _next_entry_line(self, entry: _Entry) -> int | None:
        return next((e.line for e in self.entries if e.line > entry.line), None)

    def _find(self, path: tuple[str, ...]) -> _Entry | None:
        return next((e for e in self.entries if e.path == path), None)

    def _inline(self, entry: _Entry, rest: tuple[str, ...]) -> Span | None:
        """A key inside the inline table written on the entry's line (`{ days = 90, … }`)."""
        line = self.lines[entry.line - 1]
        at = entry.value_column - 1
        for part in rest:
            found = re.compile(r"(?<![A-Za-z0-9_-])(" + re.escape(part) + r"|\"" + re.escape(part)
                               + r"\")\s*=").search(line, max(at, 0))
            if found is None:
                return None
            at = found.start(1)
        return self._span(entry.line, at + 1, len(rest[-1]))

    def _span(self, line: int, column: int, width: int) -> Span:
        return Span(self.file, line, column, line, column + max(width, 1))


# ---- reading --------------------------------------------------------------------------------


class _Problems:
    """Diagnostics of one mapping file, placed by the locator."""

    def __init__(self, locator: Locator) -> None:
        self.locator = locator
        self.items: list[Diagnostic] = []

    def at_key(self, code: str, path: tuple[str, ...], message: str, hint: str | None) -> None:
        self._add(code, self.locator.key(path), message, hint)

    def at_value(self, code: str, path: tuple[str, ...], message: str, hint: str | None,
                 text: str | None = None) -> None:
        self._add(code, self.locator.value(path, text), message, hint)

    def _add(self, code: str, span: Span, message: str, hint: str | None) -> None:
        self.items.append(Diagnostic(code=code, severity="error", span=span, message=message, hint=hint))


def display_path(path: Path) -> str:
    """The path as diagnostics show it: relative to the working directory when under it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def read_text(path: Path) -> str:
    """The mapping's text; unreadable, too large or not UTF-8 is a diagnostic."""
    shown = display_path(path)

    def fail(message: str, hint: str) -> CritError:
        return CritError([Diagnostic(code="F100", severity="error", span=Span(shown, 1, 1, 1, 2),
                                     message=message, hint=hint)])
    try:
        if not path.is_file():
            raise fail(f"cannot read {shown}: it is not a file",
                       "name the mapping file, e.g. protocols/schemas/autoimmune.fhir.toml")
        with path.open("rb") as handle:
            data = handle.read(MAX_MAPPING_BYTES + 1)
    except OSError as err:
        raise fail(f"cannot read {shown}: {err.strerror or err}", "check the path") from None
    if len(data) > MAX_MAPPING_BYTES:
        raise fail(f"{shown} is larger than {MAX_MAPPING_BYTES >> 10} KiB",
                   "a mapping file is a few KiB; check that this is the right file")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        lines = split_lines(data[: err.start].decode("utf-8", "replace"))
        line, column = len(lines), len(lines[-1]) + 1
        raise CritError([Diagnostic(code="F100", severity="error",
                                    span=Span(shown, line, column, line, column + 1),
                                    message=f"{shown} is not valid UTF-8", hint="save the file as UTF-8")]) from None


def load(path: Path) -> Mapping:
    """The mapping at `path`, shaped; `CritError` with every positioned problem if the TOML
    does not parse or a key or value is not of the mapping's shape."""
    text = read_text(path)
    return loads(text, path)


def loads(text: str, path: Path) -> Mapping:
    """A mapping from its text, as `load` reads it (`path` places the schema and names the file)."""
    shown = display_path(path)
    locator = Locator(shown, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise CritError([_syntax_error(str(err), locator)]) from None
    problems = _Problems(locator)
    mapping = _Shaper(problems).mapping(data, path, shown, text)
    if problems.items:
        raise CritError(problems.items)
    assert mapping is not None
    return mapping


_TOML_PLACE = re.compile(r"^(?P<message>.*?) \(at (?:line (?P<line>\d+), column (?P<column>\d+)|end of document)\)$")


def _syntax_error(message: str, locator: Locator) -> Diagnostic:
    """tomllib's error, placed where it says (a repeated key: at its second writing)."""
    found = _TOML_PLACE.match(message)
    what = found.group("message") if found else message
    if found and found.group("line"):
        line, column = int(found.group("line")), int(found.group("column"))
    else:
        line, column = len(locator.lines), 1
    hint = "the mapping is TOML: `key = value`, strings in double quotes, tables as [fields.NAME]"
    if what.startswith("Illegal character '\\n'") or what.startswith("Unterminated string"):
        what = "the line ends inside a string"
        hint = 'close the string with " on the same line'
    if what.startswith("Cannot overwrite a value") or what.startswith("Cannot declare"):
        what = "a key or table is written twice"
        seen: set[tuple[str, ...]] = set()
        for entry in locator.entries:
            if entry.path in seen:
                line, column = entry.line, entry.column
                break
            seen.add(entry.path)
        hint = "each key is written once; merge the two, or remove one"
    text = locator.lines[line - 1] if 0 < line <= len(locator.lines) else ""
    column = max(1, min(column, len(text) + 1))
    return Diagnostic(code="F100", severity="error", span=Span(locator.file, line, column, line, column + 1),
                      message=f"not valid TOML: {what[:1].lower()}{what[1:]}", hint=hint)


class _Shaper:
    """Turns the parsed TOML into the model, reporting each key or value not of its shape:
    unknown keys (F101), values of the wrong type (F102), values outside a closed set (F103),
    malformed codes (F104) and missing required top-level keys (F105)."""

    def __init__(self, problems: _Problems) -> None:
        self.problems = problems
        self.aliases: dict[str, str] = {}

    def mapping(self, data: dict[str, Any], path: Path, shown: str, text: str) -> Mapping | None:
        self.unknown_keys(data, (), TOP_KEYS, "the mapping file")
        schema = self.string(data, ("schema",))
        if "schema" not in data:
            self.problems.at_key("F105", ("schema",), "the mapping does not name its schema",
                                 'start the file with schema = "NAME.crit", the schema file it maps')
        fhir = self.string(data, ("fhir",)) or "R4"
        if fhir not in FHIR_VERSIONS:
            self.problems.at_value("F103", ("fhir",), f"FHIR version {fhir!r} is not one crit reads",
                                   'crit reads FHIR R4: write fhir = "R4"')
        systems = self.table(data, ("codesystems",))
        for alias, uri in systems.items():
            if not isinstance(uri, str):
                self.wrong_type(("codesystems", alias), "a code system's URI in quotes")
            elif not _absolute_uri(uri):
                self.problems.at_value("F104", ("codesystems", alias),
                                       f"code system {alias!r} is not an absolute URI: {uri!r}",
                                       'write the system\'s URI, e.g. loinc = "http://loinc.org"')
            else:
                self.aliases[alias] = uri
        fields = self.table(data, ("fields",))
        maps = [self.field(name, body) for name, body in fields.items()]
        return Mapping(path=path, file=shown, source=text, schema=schema or "", fhir=fhir,
                       codesystems=tuple(self.aliases.items()),
                       fields=tuple(f for f in maps if f is not None))

    # ---- one field ----

    def field(self, name: str, body: Any) -> FieldMap | None:
        where = ("fields", name)
        if not isinstance(body, dict):
            self.wrong_type(where, f"a table: [fields.{name}] with the field's keys")
            return None
        self.unknown_keys(body, where, FIELD_KEYS, f"field {name}")
        manual = self.string(body, (*where, "manual"))
        resource = self.string(body, (*where, "resource"))
        if resource is not None and resource not in RESOURCE_TYPES:
            self.problems.at_value("F103", (*where, "resource"), f"{resource!r} is not a resource type crit reads",
                                   did_you_mean(resource, RESOURCE_TYPES)
                                   or "one of " + ", ".join(RESOURCE_TYPES))
            resource = None
        select = self.choice(body, (*where, "select"), SELECTS, "latest")
        absent = self.choice(body, (*where, "absent"), ABSENTS, "missing")
        within = self.window(body, (*where, "within"))
        strings = {key: self.string(body, (*where, key)) for key in (*FHIRPATH_KEYS, "age_at")}
        typed = _resource(resource)
        status = self.strings(body, (*where, "status"))
        verification = self.strings(body, (*where, "verification"))
        if typed is not None and typed != "Patient":
            self.statuses(status, (*where, "status"), STATUS_CODES[typed], f"{typed} status")
        if typed == "Condition":
            self.statuses(verification, (*where, "verification"), VERIFICATION_CODES, "Condition verification status")
        return FieldMap(
            name=name, manual=manual,
            resource=typed,
            code=self.codes(body, (*where, "code")),
            status=status,
            verification=verification,
            where=strings["where"], select=select, value=strings["value"], uln=strings["uln"],
            measured=strings["measured"], start=strings["start"], end=strings["end"],
            ongoing=strings["ongoing"], age_at=strings["age_at"],
            units=self.strings(body, (*where, "units")) or (),
            members=self.members(body, (*where, "members")),
            positive=self.codes(body, (*where, "positive")),
            within=within, absent=absent,
            items=self.items(body, (*where, "items")),
        )

    def statuses(self, written: tuple[str, ...] | None, where: tuple[str, ...], codes: tuple[str, ...],
                 what: str) -> None:
        """Each status one the resource type has (entered in error never counts)."""
        for status in written or ():
            if status == ENTERED_IN_ERROR:
                self.problems.at_value("F103", where, "a resource entered in error never counts",
                                       f"remove {status!r}", status)
            elif status not in codes:
                self.problems.at_value("F103", where, f"{status!r} is not a FHIR R4 {what}",
                                       did_you_mean(status, codes) or "one of " + ", ".join(codes), status)

    def items(self, body: dict[str, Any], where: tuple[str, ...]) -> tuple[ItemMap, ...]:
        table = self.table(body, where)
        out = []
        for name, item in table.items():
            at = (*where, name)
            if not isinstance(item, dict):
                self.wrong_type(at, '{ value = "FHIRPath" }, { code_in = [...] }, { members = ... } '
                                'or { manual = "reason" }')
                continue
            self.unknown_keys(item, at, ITEM_KEYS, f"sub-field {name}")
            out.append(ItemMap(
                name=name, value=self.string(item, (*at, "value")),
                code_in=self.codes(item, (*at, "code_in")),
                members=self.members(item, (*at, "members")),
                ongoing=self.string(item, (*at, "ongoing")),
                otherwise=self.string(item, (*at, "otherwise")),
                manual=self.string(item, (*at, "manual")),
            ))
        return tuple(out)

    def members(self, body: dict[str, Any], where: tuple[str, ...]) -> tuple[MemberMap, ...]:
        table = self.table(body, where)
        out = []
        for name, codes in table.items():
            if codes == "manual":
                out.append(MemberMap(name, (), True))
            elif isinstance(codes, list):
                out.append(MemberMap(name, self.code_list(codes, (*where, name)), False))
            else:
                self.wrong_type((*where, name), 'a list of codes, e.g. ["snomed|10828004"], or "manual"')
        return tuple(out)

    def window(self, body: dict[str, Any], where: tuple[str, ...]) -> Window | None:
        if where[-1] not in body:
            return None
        table = body[where[-1]]
        if not isinstance(table, dict):
            self.wrong_type(where, '{ days = 90, before = "screening" }')
            return None
        self.unknown_keys(table, where, WINDOW_KEYS, "within")
        days = table.get("days")
        before = table.get("before")
        ok = True
        if not isinstance(days, int) or isinstance(days, bool) or days < 0:
            if "days" in table:
                self.wrong_type((*where, "days"), "a whole number of days, 0 or more")
            else:
                self.problems.at_key("F105", where, "the window does not say how many days it spans",
                                     'write within = { days = 90, before = "screening" }')
            ok = False
        if not isinstance(before, str):
            if "before" in table:
                self.wrong_type((*where, "before"), "a patient date field's name, in quotes")
            else:
                self.problems.at_key("F105", where, "the window does not say which date it ends on",
                                     'write within = { days = 90, before = "screening" }')
            ok = False
        if not ok:
            return None
        assert isinstance(days, int) and isinstance(before, str)
        return Window(days, before)

    # ---- values ----

    def unknown_keys(self, table: dict[str, Any], where: tuple[str, ...], known: tuple[str, ...],
                     what: str) -> None:
        for key in table:
            if key not in known:
                self.problems.at_key("F101", (*where, key), f"{what} has no key {key!r}",
                                     did_you_mean(key, known) or "the keys are " + ", ".join(known))

    def table(self, body: dict[str, Any], where: tuple[str, ...]) -> dict[str, Any]:
        value = body.get(where[-1], {})
        if not isinstance(value, dict):
            self.wrong_type(where, "a table")
            return {}
        return value

    def string(self, body: dict[str, Any], where: tuple[str, ...]) -> str | None:
        value = body.get(where[-1])
        if value is None:
            return None
        if not isinstance(value, str):
            self.wrong_type(where, "a string in double quotes")
            return None
        return value

    def strings(self, body: dict[str, Any], where: tuple[str, ...]) -> tuple[str, ...] | None:
        value = body.get(where[-1])
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.wrong_type(where, 'a list of strings, e.g. ["final", "amended"]')
            return None
        return tuple(value)

    def choice(self, body: dict[str, Any], where: tuple[str, ...], choices: tuple[Any, ...],
               default: Any) -> Any:
        value = self.string(body, where)
        if value is None:
            return default
        if value not in choices:
            self.problems.at_value("F103", where, f"{where[-1]} {value!r} is not one of {', '.join(choices)}",
                                   did_you_mean(value, choices) or "write one of " + ", ".join(choices))
            return default
        return value

    def codes(self, body: dict[str, Any], where: tuple[str, ...]) -> tuple[Code, ...]:
        value = body.get(where[-1])
        if value is None:
            return ()
        if not isinstance(value, list):
            self.wrong_type(where, 'a list of codes, e.g. ["loinc|718-7"]')
            return ()
        return self.code_list(value, where)

    def code_list(self, values: list[Any], where: tuple[str, ...]) -> tuple[Code, ...]:
        out = []
        for value in values:
            if not isinstance(value, str):
                self.wrong_type(where, 'a list of codes in quotes, e.g. ["loinc|718-7"]')
                continue
            code = self.code(value, where)
            if code is not None:
                out.append(code)
        return tuple(out)

    def code(self, text: str, where: tuple[str, ...]) -> Code | None:
        """`alias|code`, `http://system|code` or a bare `code`; a trailing `*` for a prefix."""
        system_text, bar, code = text.rpartition("|")
        if not bar:
            system_text, code = "", text
        problem = None
        if bar and not system_text:
            problem = ("the code names no system before '|'", "write alias|code, e.g. loinc|718-7")
        elif not code or code == "*":
            problem = ("the code is empty", "write the code after '|', e.g. loinc|718-7")
        elif "*" in code[:-1]:
            problem = ("'*' may only end a code, as a prefix", "write the code's start then *, e.g. icd10|M32*")
        elif any(ch.isspace() for ch in code):
            problem = ("a code has no spaces", "write the code as the code system spells it")
        if problem is not None:
            self.problems.at_value("F104", where, f"{text!r}: {problem[0]}", problem[1], text)
            return None
        system: str | None = None
        if system_text:
            if _absolute_uri(system_text):
                system = system_text
            elif system_text in self.aliases:
                system = self.aliases[system_text]
            else:
                hint = did_you_mean(system_text, self.aliases)
                self.problems.at_value(
                    "F104", where, f"{text!r}: code system {system_text!r} is not declared in [codesystems]",
                    hint or f'declare it under [codesystems], e.g. {system_text} = "http://…", '
                            "or write the system's URI", text)
                return None
        prefix = code.endswith("*")
        return Code(system, code[:-1] if prefix else code, prefix, text)

    def wrong_type(self, where: tuple[str, ...], expected: str) -> None:
        self.problems.at_value("F102", where, f"{where[-1]} is not {_a_or_the(expected)}", f"write {expected}")


def _a_or_the(expected: str) -> str:
    return expected.split(":")[0].split(",")[0].split(" e.g.")[0]


def _absolute_uri(text: str) -> bool:
    return re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s|]+", text) is not None


def _resource(text: str | None) -> ResourceType | None:
    for option in RESOURCE_TYPES:
        if text == option:
            return option
    return None


# ---- checking against the schema ------------------------------------------------------------

_FHIRPATH_HINT = "write FHIRPath as the FHIR specification does, e.g. value.as(Quantity), " \
                 "onset.as(dateTime) | recordedDate, status = 'active'"
# What each kind of field takes from its resource, besides the keys every mapped field has.
_KIND_KEYS: dict[ir.TypeKind, tuple[str, ...]] = {
    "bool": ("value", "members"), "integer": ("value", "age_at"), "decimal": ("value",),
    "text": ("value",), "date": ("value",), "titer": ("value",), "judgment": (),
    "interval": ("start", "end", "ongoing"), "quantity": ("value", "units"),
    "lab": ("value", "uln", "units"), "enum": ("value", "members"),
    "set": ("value", "members", "positive"), "list": ("items",),
}
_COMMON_KEYS = ("resource", "code", "status", "verification", "where", "select", "within", "absent",
                "measured")
_SELECTS_OF: dict[Select, tuple[ir.TypeKind, ...]] = {
    "any": ("bool",), "count": ("integer",), "all": ("list", "set"),
}
_PATIENT_LACKS = {"code": "code to match", "status": "status to filter by", "within": "date to window",
                  "measured": "result date"}
_KEY_PURPOSE = {
    "value": "a value", "members": "members", "age_at": "an age from a date", "start": "an interval's start",
    "end": "an interval's end", "ongoing": "an ongoing interval", "units": "units", "uln": "an upper limit",
    "positive": "positive results", "items": "list items",
}


def check(mapping: Mapping, fields: Sequence[ir.Field], records: Sequence[ir.Record]) -> list[Diagnostic]:
    """What in `mapping` does not fit the schema whose checked patient `fields` and `records`
    are given: each problem a positioned diagnostic in the mapping file, in line order."""
    checker = _Checker(mapping, fields, records)
    checker.run()
    return sorted(checker.problems.items, key=Diagnostic.sort_key)


class _Checker:
    def __init__(self, mapping: Mapping, fields: Sequence[ir.Field], records: Sequence[ir.Record]) -> None:
        self.mapping = mapping
        self.fields = {f.name: f for f in fields}
        self.records = {r.name: r for r in records}
        self.problems = _Problems(Locator(mapping.file, mapping.source))

    def run(self) -> None:
        mapped = {f.name for f in self.mapping.fields}
        for name, unmapped in self.fields.items():
            if name not in mapped:
                self.problems.at_key(
                    "F106", ("schema",), f"field {name} ({_field_words(unmapped)}) is not mapped",
                    f"add [fields.{name}] saying where FHIR holds it, or "
                    f'manual = "why it is entered by hand"')
        for field_map in self.mapping.fields:
            declared = self.fields.get(field_map.name)
            if declared is None:
                self.problems.at_key("F107", ("fields", field_map.name),
                                     f"the schema has no field {field_map.name}",
                                     did_you_mean(field_map.name, self.fields)
                                     or f"the schema is {self.mapping.schema}; remove this table or "
                                        "declare the field there")
                continue
            self.field(field_map, declared)

    # ---- one field ----

    def field(self, m: FieldMap, declared: ir.Field) -> None:
        at = ("fields", m.name)
        kind = declared.type.kind
        if m.manual is not None:
            self.manual(m, at)
            return
        if kind == "judgment":
            self.problems.at_key("F117", at, f"{m.name} is an investigator's judgment, and FHIR cannot hold one",
                                 f'write manual = "…" for {m.name}: a judgment is entered by hand')
            return
        if m.resource is None:
            if "resource" not in self._written(at):
                self.problems.at_key("F105", at, f"{m.name} names no resource type",
                                     'write resource = "Observation" (or the resource that holds it), '
                                     'or manual = "why it is entered by hand"')
            return
        allowed = (*_COMMON_KEYS, *_KIND_KEYS[kind])
        for key in self._written(at):
            if key in FIELD_KEYS and key not in allowed and key != "manual":
                self.problems.at_key("F108", (*at, key),
                                     f"{key} does not fit {m.name}, {_field_words(declared)}",
                                     _misfit_hint(key, declared))
        if m.resource == "Patient":
            for key in ("code", "status", "within", "measured"):
                if key in self._written(at):
                    self.problems.at_key("F108", (*at, key), f"a Patient resource has no {_PATIENT_LACKS[key]}",
                                         f"remove {key}: each patient has one Patient resource")
        if m.verification is not None and m.resource != "Condition":
            self.problems.at_key("F108", (*at, "verification"),
                                 f"verification is a Condition's, and {m.name} comes from {m.resource}",
                                 "remove verification, or use status for this resource's status")
        if m.measured is not None and declared.measured is None:
            self.problems.at_key("F108", (*at, "measured"),
                                 f"{m.name} is not a dated result in the schema",
                                 "remove measured, or declare the field `measured within …` in the schema")
        if self.select(m, declared, at):
            self.absent(m, declared, at)
            self.required(m, declared, at)
        if m.within is not None:
            self.date_field(m.within.before, (*at, "within", "before"), "a window ends on")
        if m.age_at is not None and "age_at" in allowed:
            self.date_field(m.age_at, (*at, "age_at"), "an age is counted to")
        if "units" in allowed:
            self.units(m, declared, at)
        if "members" in allowed and m.members:
            self.members(m.members, declared.type, at, by_value=not m.members_by_resource_code())
        for key in FHIRPATH_KEYS:
            expression = getattr(m, key)
            if expression is not None:
                self.fhirpath(expression, (*at, key))
        self.systems(m.code, (*at, "code"))
        if isinstance(declared.type, ir.ListOf):
            self.items(m, self.records.get(declared.type.record), at)

    def manual(self, m: FieldMap, at: tuple[str, ...]) -> None:
        if not m.manual or not m.manual.strip():
            self.problems.at_value("F108", (*at, "manual"), f"{m.name} is manual without a reason",
                                   'say why it is entered by hand, e.g. manual = "the investigator\'s assessment"')
        for key in self._written(at):
            if key != "manual" and key in FIELD_KEYS:
                self.problems.at_key("F108", (*at, key),
                                     f"{m.name} is entered by hand (manual), so {key} is never used",
                                     "remove manual to read the field from FHIR, or remove this key")

    def select(self, m: FieldMap, declared: ir.Field, at: tuple[str, ...]) -> bool:
        """Whether `select` fits the field's kind (if not, what else is missing is not said)."""
        kind = declared.type.kind
        fits = _SELECTS_OF.get(m.select)
        if fits is not None and kind not in fits:
            what = {"any": "a yes/no field (whether any resource is found)",
                    "count": "an integer field (how many resources are found)",
                    "all": "a list or a set (every resource found)"}[m.select]
            self.problems.at_value("F109", (*at, "select"), f'select = "{m.select}" is for {what}, and '
                                   f"{m.name} is {_field_words(declared)}", _select_hint(kind))
            return False
        if fits is None and kind in ("list", "set"):
            self.problems.at_value("F109", (*at, "select"), f"{m.name} is {_field_words(declared)}, "
                                   f'which takes every matching resource, not the {m.select} one',
                                   'write select = "all"')
            return False
        return True

    def absent(self, m: FieldMap, declared: ir.Field, at: tuple[str, ...]) -> None:
        kind = declared.type.kind
        if m.absent == "none" and not declared.optional:
            self.problems.at_value("F110", (*at, "absent"),
                                   f'absent = "none" records "none" for {m.name}, which is not optional',
                                   f"only an optional field (declared {declared.type.describe()}?) may be "
                                   'recorded as none; remove absent to leave it missing')
        elif m.absent == "empty" and kind not in ("list", "set"):
            self.problems.at_value("F110", (*at, "absent"),
                                   f'absent = "empty" is for lists and sets, and {m.name} is {_field_words(declared)}',
                                   "remove absent to leave the field missing when FHIR holds nothing")
        elif m.absent == "no" and m.select != "any":
            self.problems.at_value("F110", (*at, "absent"),
                                   f'absent = "no" is for select = "any", and {m.name} selects "{m.select}"',
                                   'write select = "any" for a yes/no that is "yes" when a resource exists')
        elif m.absent == "zero" and m.select != "count":
            self.problems.at_value("F110", (*at, "absent"),
                                   f'absent = "zero" is for select = "count", and {m.name} selects "{m.select}"',
                                   'write select = "count" for a number of matching resources')
        elif m.absent in ("none", "empty") and m.select in ("any", "count"):
            self.problems.at_value("F110", (*at, "absent"),
                                   f'with select = "{m.select}", absent may be "missing" (the default) or '
                                   + ('"no"' if m.select == "any" else '"zero"'),
                                   "say what no matching resource means for this field, or remove absent "
                                   "to leave it missing")

    def required(self, m: FieldMap, declared: ir.Field, at: tuple[str, ...]) -> None:
        """The keys without which the field's kind cannot be read."""
        kind = declared.type.kind
        needs: list[tuple[str, str]] = []
        if kind in ("integer", "decimal", "text", "date", "titer", "quantity", "lab") and m.select != "count":
            needs.append(("value", 'value = "FHIRPath to the value", e.g. value = "value.as(Quantity)"'))
        if kind == "bool" and m.select != "any" and m.value is None and not m.members:
            needs.append(("value", 'select = "any" (true when a resource is found), value = "FHIRPath '
                                   'to a boolean", or members = { true = [...], false = [...] }'))
        if kind in ("quantity", "lab"):
            needs.append(("units", 'units = ["UCUM codes accepted"], e.g. units = ["g/L", "g/dL"]'))
        if kind == "lab":
            needs.append(("uln", 'uln = "referenceRange.high"'))
        if kind == "interval":
            needs.append(("start", 'start = "FHIRPath to the start", e.g. start = "effective.as(Period).start"'))
        if kind in ("enum", "set"):
            needs.append(("members", "members.NAME = [codes] for each member, or \"manual\""))
        if kind == "list":
            needs.append(("items", f"[fields.{m.name}.items] with a source for each sub-field"))
        for key, how in needs:
            if getattr(m, key) in (None, ()) and key not in self._written(at):
                self.problems.at_key("F105", at, f"{m.name} ({_field_words(declared)}) needs {key}", f"write {how}")
        if kind == "set" and m.value is not None and not m.positive:
            self.problems.at_key("F105", (*at, "value"), f"{m.name} reads each test's result, and no result "
                                 "is said to be positive", 'write positive = ["snomed|10828004"] (the codes '
                                 "that make a member present), or remove value to count each test found")
        if m.positive and m.value is None:
            self.problems.at_key("F105", (*at, "positive"),
                                 "positive results need the value they are read from",
                                 'write value = "value.as(CodeableConcept)"')

    def units(self, m: FieldMap, declared: ir.Field, at: tuple[str, ...]) -> None:
        t = declared.type
        if not isinstance(t, ir.Measure):
            return
        unit = t.unit
        accepted = {unit.text, *t.record_units()}
        for ucum in m.units:
            problem = _unit_problem(ucum, unit, accepted)
            if problem is not None:
                self.problems.at_value("F114", (*at, "units"), f"{m.name}: {problem[0]}", problem[1], ucum)

    def members(self, members: tuple[MemberMap, ...], t: ir.Type, at: tuple[str, ...], by_value: bool) -> None:
        if isinstance(t, ir.EnumOf | ir.SetOf):
            names: tuple[str, ...] = t.enum.member_names()
            what = f"{t.enum.name} has " + ", ".join(names)
        else:
            names = ("true", "false")
            what = "a yes/no field's members are true and false"
        written = {m.name for m in members}
        for member in members:
            if member.name not in names:
                self.problems.at_key("F113", (*at, "members", member.name),
                                     f"{member.name} is not a member of {_type_name(t)}",
                                     did_you_mean(member.name, names) or what)
            if not by_value:
                self.systems(member.codes, (*at, "members", member.name))
        for name in names:
            if name not in written:
                self.problems.at_key("F112", (*at, "members"),
                                     f"member {name} of {_type_name(t)} is not mapped",
                                     f'add {name} = [its codes], or {name} = "manual" if FHIR cannot tell it apart')

    def items(self, m: FieldMap, record: ir.Record | None, at: tuple[str, ...]) -> None:
        if record is None:
            return
        subfields = {f.name: f for f in record.fields}
        where = (*at, "items")
        given = {item.name for item in m.items}
        for name in subfields:
            if name not in given and m.items:
                self.problems.at_key("F116", where, f"sub-field {name} of {record.name} has no source",
                                     f'add {name} = {{ value = "FHIRPath" }}, or {name} = {{ manual = "why" }}')
        for item in m.items:
            sub_field = subfields.get(item.name)
            place = (*where, item.name)
            if sub_field is None:
                self.problems.at_key("F116", place, f"{record.name} has no sub-field {item.name}",
                                     did_you_mean(item.name, subfields) or "its sub-fields are "
                                     + ", ".join(subfields))
                continue
            self.item(item, sub_field, place)

    def item(self, item: ItemMap, sub: ir.Field, at: tuple[str, ...]) -> None:
        sources = [key for key in ("value", "code_in", "members", "manual") if key in self._written(at)]
        if not sources:
            self.problems.at_key("F105", at, f"sub-field {item.name} says nothing about where it comes from",
                                 '{ value = "FHIRPath" }, { code_in = [codes] } for a yes/no, '
                                 '{ members = {...} } for a choice, or { manual = "why" }')
            return
        if len(sources) > 1:
            self.problems.at_key("F108", (*at, sources[1]),
                                 f"sub-field {item.name} has both {sources[0]} and {sources[1]}",
                                 "keep the one source the sub-field comes from")
            return
        kind = sub.type.kind
        if item.code_in and kind != "bool":
            self.problems.at_key("F108", (*at, "code_in"),
                                 f"code_in makes a yes/no, and {item.name} is {_field_words(sub)}",
                                 'write value = "FHIRPath to the value"')
        if item.members and kind not in ("enum",):
            self.problems.at_key("F108", (*at, "members"),
                                 f"members are for a choice, and {item.name} is {_field_words(sub)}",
                                 'write value = "FHIRPath to the value"')
        elif item.members:
            self.members(item.members, sub.type, at, by_value=False)
        if item.otherwise is not None:
            if kind != "date":
                self.problems.at_key("F108", (*at, "otherwise"),
                                     f"otherwise gives a date, and {item.name} is {_field_words(sub)}",
                                     "remove otherwise")
            self.date_field(item.otherwise, (*at, "otherwise"), "an ongoing item's date is")
        if item.ongoing is not None and item.otherwise is None:
            self.problems.at_key("F108", (*at, "ongoing"),
                                 "ongoing says when to use otherwise, and there is no otherwise",
                                 'add otherwise = "screening" (a patient date field), or remove ongoing')
        for key in ("value", "ongoing"):
            expression = getattr(item, key)
            if expression is not None:
                self.fhirpath(expression, (*at, key))
        self.systems(item.code_in, (*at, "code_in"))

    # ---- pieces ----

    def date_field(self, name: str, at: tuple[str, ...], what: str) -> None:
        found = self.fields.get(name)
        dates = [f.name for f in self.fields.values() if f.type.kind == "date"]
        if found is None:
            self.problems.at_value("F111", at, f"the schema has no field {name}",
                                   did_you_mean(name, dates) or f"{what} a patient date field: " + ", ".join(dates))
        elif found.type.kind != "date":
            self.problems.at_value("F111", at, f"{name} is {_field_words(found)}, and {what} a date",
                                   f"name a patient date field: {', '.join(dates)}")

    def systems(self, codes: tuple[Code, ...], at: tuple[str, ...]) -> None:
        """Codes matched against a resource's code element carry a code system."""
        for code in codes:
            if code.system is None:
                self.problems.at_value("F118", at, f"{code.text!r} names no code system",
                                       f"a resource's code is a coding: write alias|{code.code} with an "
                                       "alias from [codesystems], or the system's URI", code.text)

    def fhirpath(self, expression: str, at: tuple[str, ...]) -> None:
        problem = fhirpath_problem(expression)
        if problem is not None:
            self.problems.at_value("F115", at, f"{at[-1]}: {problem}", _FHIRPATH_HINT)

    def _written(self, at: tuple[str, ...]) -> tuple[str, ...]:
        """The keys written in the table at `at`, from the parsed TOML (so a key with a value of
        the wrong shape still counts as written)."""
        data: Any = self._data
        for part in at:
            data = data.get(part, {}) if isinstance(data, dict) else {}
        return tuple(data) if isinstance(data, dict) else ()

    @functools.cached_property
    def _data(self) -> dict[str, Any]:
        return tomllib.loads(self.mapping.source)


@functools.lru_cache(maxsize=512)
def fhirpath_problem(expression: str) -> str | None:
    """Why a FHIRPath expression would not run, in words, or None. It must parse to its end with
    fhirpathpy's grammar (`fhirpathpy.compile` stops silently at the first token it cannot
    use, and would read `value value` as `value`) and call only functions fhirpathpy implements.
    Mappings repeat their expressions, and parsing is slow in Python, so answers are kept."""
    if not expression.strip():
        return "the expression is empty"
    errors: list[tuple[int, str]] = []

    class Listener(ErrorListener):  # type: ignore[misc]
        def syntaxError(self, recognizer: Any, symbol: Any, line: int, column: int, msg: str,
                        e: Any) -> None:
            errors.append((column, msg))

    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(Listener())
    stream = CommonTokenStream(lexer)
    parser = FHIRPathParser(stream)
    parser.removeErrorListeners()
    parser.addErrorListener(Listener())
    tree = parser.expression()
    if errors:
        column, message = errors[0]
        if "<EOF>" in message:
            return f"{expression!r} ends before the expression does"
        if message.startswith("token recognition error"):
            return f"{expression!r} has a character FHIRPath does not read at character {column + 1}"
        token = re.search(r"input ('[^']*'|\S+)", message)
        return f"{expression!r} does not read at character {column + 1}" + (
            f": {token.group(1)} is unexpected there" if token else "")
    if stream.LA(1) != Token.EOF:
        return f"{expression!r} goes on after a whole expression, at character {stream.LT(1).column + 1}"
    unknown = sorted(_functions(tree) - set(fhirpath_functions))
    if unknown:
        return f"{expression!r} calls {unknown[0]}(), which FHIRPath does not have"
    return None


def _functions(tree: Any) -> set[str]:
    """The names of the functions a parsed FHIRPath expression calls."""
    out: set[str] = set()
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, FHIRPathParser.FunctnContext):
            out.add(str(node.identifier().getText()).strip("`"))  # type: ignore[no-untyped-call]
        todo.extend(getattr(node, "children", None) or ())
    return out


def _unit_problem(ucum: str, unit: ir.Unit, accepted: set[str]) -> tuple[str, str] | None:
    """Why a UCUM unit cannot fill a field in `unit`, or None when its crit spelling is one of
    the units the schema accepts in a record."""
    spelled = crit_unit(ucum)
    if spelled in accepted:
        return None
    listed = ", ".join(sorted(accepted))
    try:
        parsed = parse_unit(spelled)
    except UnitError as err:
        return (f"{ucum!r} is not a unit crit reads ({err.message})",
                f"write the UCUM code the laboratory sends, for a unit the field accepts: {listed}")
    try:
        factor(parsed, unit)
    except UnitError as err:
        return (f"{ucum!r} cannot fill the field: {err.message}", f"the field accepts {listed}")
    return (f"{ucum!r} converts to {unit.text}, but the schema does not accept {spelled} for this field",
            f"add `also {spelled}` to the field in the schema, or leave {ucum!r} out here")


def _field_words(f: ir.Field) -> str:
    """What a field holds, with its article: `a lab value in U/L`, `an optional date`."""
    t = f.type
    match t:
        case ir.Measure():
            words = f"{'lab value' if t.kind == 'lab' else 'quantity'} in {t.unit.text}"
        case ir.EnumOf():
            words = f"choice of {t.enum.name}"
        case ir.SetOf():
            words = f"set of {t.enum.name}"
        case ir.ListOf():
            words = f"list of {t.record}"
        case ir.Scalar():
            words = {"bool": "yes/no field", "integer": "whole number", "decimal": "number", "text": "text",
                     "date": "date", "titer": "titer", "judgment": "judgment", "interval": "interval"}[t.kind]
        case _:
            assert_never(t)
    if f.optional:
        return f"an optional {words}"
    return ("an " if words[0] in "aeiou" else "a ") + words


def _type_name(t: ir.Type) -> str:
    return t.enum.name if isinstance(t, ir.EnumOf | ir.SetOf) else "a yes/no field"


def _select_hint(kind: ir.TypeKind) -> str:
    if kind in ("list", "set"):
        return 'write select = "all"'
    if kind == "bool":
        return 'write select = "any" (true when a resource is found), or "latest" with value or members'
    if kind == "integer":
        return 'write select = "count" (how many resources), or "latest" with value'
    return 'write select = "latest" (by date), "earliest", or "one" (every resource must agree)'


def _misfit_hint(key: str, declared: ir.Field) -> str:
    purpose = _KEY_PURPOSE.get(key, key)
    kinds = [k for k, keys in _KIND_KEYS.items() if key in keys]
    return f"{key} gives {purpose}, for a field of type {' or '.join(kinds)}; remove it for {declared.name}"
