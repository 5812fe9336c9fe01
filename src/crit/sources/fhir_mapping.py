"""A FHIR mapping file: where each patient field of a schema comes from in FHIR R4.

The mapping (`<schema stem>.fhir.toml`, beside the schema) is data for the FHIR reader
(`crit.sources.fhir`); the language and the generated evaluators never see FHIR. This module
reads the file (`load`) and checks it against the schema's checked IR (`check`), reporting every
problem as a positioned diagnostic in the TOML file, as `crit check` does for `.crit` files.

API, for the reader and the synthetic generator (also in the README, "FHIR input"):

- `load(path) -> Mapping` reads and shapes the file; raises `CritError` (positioned F1xx
  diagnostics; `CritError.sources` is not set: quote lines with `{mapping.file: mapping.source}`,
  or with `read_text` of the file on failure) when the TOML does not parse or a key or value is
  not of the mapping's shape. `check(mapping, fields, records) -> list[Diagnostic]` finds what
  does not fit the schema (an unmapped field, a unit that does not convert …).
- `Mapping`: `schema` (path as written, relative to the mapping), `schema_path()`, `fhir`
  ("R4"), `codesystems` (alias → absolute URI), `fields` (`FieldMap`, file order), `field(name)`.
- `FieldMap`: `name`; `manual` (the reason, when the field is entered by hand: then nothing else
  is set); `resource` (a `ResourceType`); `code` (`Code`s the resource's code element must
  match; when empty and `members` match the resource's code, the members' codes); `status`
  (`statuses()` gives the resource type's default when unset); `verification` (Condition
  only); `where` (FHIRPath boolean); `select` ("latest", "earliest", "one", "any", "count",
  "all"); `value`, `uln`, `measured`, `start`, `end`, `ongoing`, `age_at` (FHIRPath, except
  `age_at`: a patient date field); `units` (UCUM codes as written); `members` (`MemberMap`s);
  `positive` (`Code`s of a set member's result that make it present); `within` (`Window`);
  `absent` ("missing", "none", "empty"); `items` (`ItemMap`s, for a list of records).
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

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from crit.ast import Span
from crit.check.names import did_you_mean
from crit.diagnostics import CritError, Diagnostic
from crit.text import split_lines

# ---- the closed sets ------------------------------------------------------------------------

ResourceType = Literal["Patient", "Observation", "Condition", "MedicationStatement",
                       "MedicationRequest", "MedicationAdministration", "Immunization",
                       "Procedure", "Encounter", "ResearchSubject"]
Select = Literal["latest", "earliest", "one", "any", "count", "all"]
Absent = Literal["missing", "none", "empty"]
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

    def resource_codes(self) -> tuple[Code, ...]:
        """The codes a candidate resource's own code must match (empty: any code): `code`, else,
        when members are told apart by the resource's code (no `value`), the members' codes."""
        if self.code or self.value is not None or self.resource == "Patient":
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
_UCUM_POWER_OF_TEN = re.compile(r"(?<![0-9.])10\*(?=[0-9])")
_UCUM_ANNOTATION = re.compile(r"\{([^{}]*)\}")


def crit_unit(ucum: str) -> str:
    """A UCUM unit code as crit writes the unit: `10*3/uL` → `10^3/uL`, an annotation loses its
    braces and underscores (`mL/min/{1.73_m2}` → `mL/min/1.73m2`, `{cells}/uL` → `cells/uL`),
    bracketed units take their everyday names (`[IU]/mL` → `IU/mL`, `mm[Hg]` → `mmHg`).
    Anything else is kept, and crit's unit parser says whether it knows it."""
    text = ucum.strip()
    for special, plain in _UCUM_SPECIAL.items():
        text = text.replace(special, plain)
    text = _UCUM_POWER_OF_TEN.sub("10^", text)
    return _UCUM_ANNOTATION.sub(lambda m: m.group(1).replace("_", ""), text)


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
        if entry is None:
            return self.key(path)
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
    if what.startswith("Cannot overwrite a value") or what.startswith("Cannot declare"):
        seen: set[tuple[str, ...]] = set()
        for entry in locator.entries:
            if entry.path in seen and entry.value_column:
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
        return FieldMap(
            name=name, manual=manual,
            resource=_resource(resource),
            code=self.codes(body, (*where, "code")),
            status=self.strings(body, (*where, "status")),
            verification=self.strings(body, (*where, "verification")),
            where=strings["where"], select=select, value=strings["value"], uln=strings["uln"],
            measured=strings["measured"], start=strings["start"], end=strings["end"],
            ongoing=strings["ongoing"], age_at=strings["age_at"],
            units=self.strings(body, (*where, "units")) or (),
            members=self.members(body, (*where, "members")),
            positive=self.codes(body, (*where, "positive")),
            within=within, absent=absent,
            items=self.items(body, (*where, "items")),
        )

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
