"""The table layout of a protocol's patient records, for SQL engines: one source of layout facts
for the `CREATE TABLE` statements, the JSON Schema of the record format, and the loader that
turns validated records into rows.

    layout(protocol) -> Layout
        The tables and their columns, derived from the checked IR. Raises CritError (codes S1xx)
        when a protocol cannot be laid out exactly (two fields whose columns would share a name;
        a quantity with no unit that writes every accepted unit as an exact decimal).
    create_statements(protocol, dialect) -> list[str]
        `CREATE TABLE` for each table, built as sqlglot expressions and written in `dialect`.
    json_schema(protocol) -> dict
        The JSON Schema (draft 2020-12) of crit's record format for the protocol.
    rows(layout, patient_id, record) -> dict[str, list[tuple]]
        One record that the generated module's `validate()` accepts (no problems), as rows per
        table name, in each table's column order. Raises TableError when a value cannot be held
        exactly by its column (more decimal places than the column's scale): never rounded.

The layout (one row per patient, table `patients`, key `patient_id`):

    field type            columns (on the patients table, or the list's item table)
    bool, judgment        F BOOLEAN
    integer, titer        F BIGINT (a titer 1:160 as its dilution, 160)
    decimal               F DECIMAL(p, s), sized as below
    quantity              F DECIMAL(p, s): the value in the field's storage unit (its canonical
                          unit, unless some accepted unit is no exact decimal of it: then the first
                          accepted unit in which every accepted unit is exact, e.g. kg for lb/kg)
    lab                   F and F__uln DECIMAL(p, s): the value and its laboratory's upper limit
    text, enum            F VARCHAR (an enum as its member's name)
    date                  F DATE
    set of E              F__M BOOLEAN for each member M of E (NULL when the set is missing)
    list of R             F__items BIGINT, the number of items (NULL when the list is missing);
                          the items in table patients__F (patient_id, ordinal_1, R's columns);
                          a list in R's items in patients__F__G (patient_id, ordinal_1, ordinal_2, …)
    interval              F__start, F__end DATE and F__ongoing BOOLEAN (NULL when missing); an
                          end not recorded is F__end NULL with F__ongoing false
    measured … (dated)    also F__measured DATE: the day the result was measured
    optional (`?`)        also F__none BOOLEAN NOT NULL: true when recorded as none (JSON null)

A value column is NULL when the fact is missing (or recorded as none). Ordinals count from 0,
as crit's paths do (`treatments[0].end`). Exact numbers are DECIMAL, never floating point, sized
so that arithmetic on them stays within the 38 digits every engine's DECIMAL has:

    whole digits   those of the plausible range's wider bound in the stored unit (`from 20 to
                   400 kg`: 3); with no range, the runtime's 15 plus those an accepted unit's
                   factor adds (a ULN has no range)
    places         PLACES (10) as a record writes the value, plus those the exact factor from
                   an accepted unit adds (lb stored in kg: 0.45359237, 8 more)

An integer column is BIGINT whatever its range; its whole digits size the arithmetic on it.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal, assert_never

from sqlglot import exp

from crit import ir
from crit import runtime as rt
from crit.ast import Span
from crit.diagnostics import CritError, Diagnostic

PATIENTS = "patients"
PATIENT_ID = "patient_id"
SEPARATOR = "__"
MAX_DIGITS = 38  # the widest DECIMAL every engine has
MAX_INTEGER_DIGITS = 15  # records' numbers lie strictly within ±10^15 (the runtime's limit)
PLACES = 10  # decimal places a record's number keeps as written: ample for a measurement, and two
# such numbers with their whole digits multiply within MAX_DIGITS

ColumnKind = Literal["key", "ordinal", "bool", "integer", "decimal", "text", "date"]
Role = Literal["key", "ordinal", "value", "uln", "none", "member", "items", "start", "end", "ongoing", "measured"]


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its SQL name, the crit field path it holds (`ast`, `ast.uln`, `anca` for a
    member column, `treatments` for the item count), its kind, and whether it may be NULL."""

    name: str
    path: str
    kind: ColumnKind
    role: Role
    nullable: bool
    scale: int = 0  # decimal: digits after the point
    member: str | None = None  # role "member": the enum member
    whole: int = 0  # integer, decimal: digits before the point a value may have (DECIMAL(whole + scale, scale))
    bound: Fraction | None = None  # integer, decimal: the largest magnitude a value may have, when a range gives it

    @property
    def precision(self) -> int:
        return max(self.whole + self.scale, 1)


@dataclass(frozen=True, slots=True)
class FieldLayout:
    """Where one field lives: its table and columns, and for quantities and labs the unit the
    columns hold (`storage`, with `to_storage`: the exact factor from the canonical unit)."""

    field: ir.Field
    table: str
    columns: tuple[Column, ...]
    storage: str | None = None
    to_storage: Fraction = Fraction(1)
    items: str | None = None  # list fields: the items' table

    def column(self, role: Role, member: str | None = None) -> Column:
        for column in self.columns:
            if column.role == role and column.member == member:
                return column
        raise KeyError(f"{self.field.name} has no {role} column")


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    record: str | None  # None for `patients`; else the list items' record
    depth: int  # 0 for patients; 1 for a patient list's items; 2 for a list in those items …
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    fields: tuple[FieldLayout, ...]  # the record's fields, in order, with their columns


@dataclass(frozen=True, slots=True)
class Layout:
    tables: tuple[Table, ...]
    fields: Mapping[tuple[str, str], FieldLayout]  # (table, field name) -> its layout

    def table(self, name: str) -> Table:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(name)

    def of(self, table: str, field: str) -> FieldLayout:
        return self.fields[(table, field)]


class TableError(ValueError):
    """A validated record whose value no column holds exactly; `problem` says where."""

    def __init__(self, problem: rt.Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


# ---- the layout -----------------------------------------------------------------------------


def terminating(value: Fraction) -> bool:
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    return denominator == 1


def _digits(value: Fraction) -> int:
    """Integer digits beyond MAX_INTEGER_DIGITS that a factor `value` may add."""
    extra = 0
    while value > 1:
        value /= 10
        extra += 1
    return extra


def whole_digits(bound: Fraction) -> int:
    """The digits before the point of a number of magnitude at most `bound` (0 below 1)."""
    return len(str(int(bound))) if bound >= 1 else 0


def places(value: Fraction) -> int:
    """The decimal places of a terminating fraction (0.45359237: 8)."""
    denominator, count = value.denominator, 0
    while 10 ** count % denominator:
        count += 1
    return count


def storage_unit(t: ir.Measure) -> tuple[str, Fraction] | None:
    """The unit a quantity's or lab's columns hold, and the exact factor from the canonical unit
    to it: the canonical unit when every accepted unit is an exact decimal of it, else the first
    accepted unit that is; None when there is none."""
    factors = [(t.unit.text, Fraction(1))] + [(u.text, Fraction(f)) for u, f in t.also]
    for name, factor in factors:  # a value v in unit u is v × f_u canonical, v × f_u / f_s stored
        if all(terminating(f / factor) for _, f in factors):
            return name, 1 / factor
    return None


def _numeric(field: ir.Field, name: str, path: str, kind: ColumnKind, role: Role, to_storage: Fraction,
             ranged: bool) -> Column:
    """A number column sized as the module docstring says: whole digits from the plausible range
    (when `ranged`: a ULN has none), places from PLACES and the accepted units' exact factors."""
    t = field.type
    factors = [Fraction(1)] + ([Fraction(f) for _, f in t.also] if isinstance(t, ir.Measure) else [])
    stored = [f * to_storage for f in factors]  # a number written in each unit, times this, is stored
    scale = 0 if kind == "integer" else PLACES + max(places(f) for f in stored)
    bound = None
    if ranged and field.plausible is not None:
        bound = max(abs(Fraction(field.plausible.low)), abs(Fraction(field.plausible.high))) * to_storage
        whole = whole_digits(bound)
    else:
        whole = MAX_INTEGER_DIGITS + max(_digits(f) for f in stored)
    if whole + scale > MAX_DIGITS:
        raise _error("S103", field.span, f"'{field.name}' may need {whole} whole digits and {scale} places, more "
                     f"than the {MAX_DIGITS} digits SQL's DECIMAL holds",
                     "give the field a plausible range (`from LOW to HIGH`), or accept units closer in size")
    return Column(name, path, kind, role, True, scale, whole=whole, bound=bound)


def _error(code: str, span: Span, message: str, hint: str) -> CritError:
    return CritError([Diagnostic(code=code, severity="error", span=span, message=message, hint=hint)])


def layout(protocol: ir.Protocol) -> Layout:
    records = {r.name: r for r in protocol.records}
    tables: list[Table] = []
    fields: dict[tuple[str, str], FieldLayout] = {}

    def lay(name: str, record: str | None, depth: int, members: tuple[ir.Field, ...]) -> None:
        key = [Column(PATIENT_ID, "", "key", "key", False)]
        key += [Column(f"ordinal_{n}", "", "ordinal", "ordinal", False) for n in range(1, depth + 1)]
        columns = list(key)
        placed_fields = []
        for field in members:
            placed = _place(field, name, records)
            fields[(name, field.name)] = placed
            placed_fields.append(placed)
            columns.extend(placed.columns)
        seen: dict[str, Column] = {}
        for column in columns:
            if column.name in seen:
                other = seen[column.name]
                span = next((f.span for f in members if f.name in (column.path.split(".")[0],)), protocol_span)
                raise _error("S101", span,
                             f"the SQL column '{column.name}' would hold both {other.path or 'a key'} and "
                             f"{column.path or 'a key'}",
                             f"rename the field: SQL column names join a field and its part with '{SEPARATOR}'")
            seen[column.name] = column
        tables.append(Table(name, record, depth, tuple(columns), tuple(c.name for c in key), tuple(placed_fields)))
        for field in members:
            if isinstance(field.type, ir.ListOf):
                child = records[field.type.record]
                lay(f"{name}{SEPARATOR}{field.name}", child.name, depth + 1, child.fields)

    protocol_span = protocol.fields[0].span if protocol.fields else Span(protocol.source, 1, 1, 1, 1)
    lay(PATIENTS, None, 0, protocol.fields)
    names = [t.name for t in tables]
    for table in tables:
        if names.count(table.name) > 1:
            raise _error("S101", protocol_span, f"two lists would share the SQL table '{table.name}'",
                         f"rename a list field: table names join a list and its parent with '{SEPARATOR}'")
    return Layout(tuple(tables), fields)


def _place(field: ir.Field, table: str, records: Mapping[str, ir.Record]) -> FieldLayout:
    placed = _place_value(field, table, records)
    if field.measured is None:
        return placed
    measured = Column(f"{field.name}{SEPARATOR}measured", f"{field.name}.measured", "date", "measured", True)
    columns = [c for c in placed.columns if c.role != "none"] + [measured]
    columns += [c for c in placed.columns if c.role == "none"]
    return FieldLayout(placed.field, placed.table, tuple(columns), placed.storage, placed.to_storage, placed.items)


def _place_value(field: ir.Field, table: str, records: Mapping[str, ir.Record]) -> FieldLayout:
    t = field.type
    name = field.name
    none = (Column(f"{name}{SEPARATOR}none", name, "bool", "none", False),) if field.optional else ()
    match t:
        case ir.Scalar():
            return FieldLayout(field, table, (*_scalar_columns(field, t.kind), *none))
        case ir.EnumOf():
            return FieldLayout(field, table, (Column(name, name, "text", "value", True), *none))
        case ir.Measure():
            found = storage_unit(t)
            if found is None:
                raise _error("S102", field.span,
                             f"no unit writes every accepted unit of '{name}' ({t.unit.text}) as an exact decimal",
                             "SQL columns hold exact decimals: accept units that are decimal multiples of one another")
            unit, to_storage = found
            columns = [_numeric(field, name, name, "decimal", "value", to_storage, True)]
            if t.kind == "lab":  # the range is the value's; the ULN has none
                columns.append(_numeric(field, f"{name}{SEPARATOR}uln", f"{name}.uln", "decimal", "uln", to_storage,
                                        False))
            return FieldLayout(field, table, (*columns, *none), unit, to_storage)
        case ir.SetOf():
            members = tuple(Column(f"{name}{SEPARATOR}{m}", name, "bool", "member", True, member=m)
                            for m in t.enum.member_names())
            return FieldLayout(field, table, (*members, *none))
        case ir.ListOf():
            assert t.record in records
            count = Column(f"{name}{SEPARATOR}items", name, "integer", "items", True)
            return FieldLayout(field, table, (count, *none), items=f"{table}{SEPARATOR}{name}")
        case _ as unreachable:
            assert_never(unreachable)


def _scalar_columns(field: ir.Field, kind: ir.BaseKind) -> tuple[Column, ...]:
    name = field.name
    match kind:
        case "bool" | "judgment":
            return (Column(name, name, "bool", "value", True),)
        case "integer":
            return (_numeric(field, name, name, "integer", "value", Fraction(1), True),)
        case "titer":
            return (Column(name, name, "integer", "value", True),)
        case "decimal":
            return (_numeric(field, name, name, "decimal", "value", Fraction(1), True),)
        case "text":
            return (Column(name, name, "text", "value", True),)
        case "date":
            return (Column(name, name, "date", "value", True),)
        case "interval":
            return (Column(f"{name}{SEPARATOR}start", f"{name}.start", "date", "start", True),
                    Column(f"{name}{SEPARATOR}end", f"{name}.end", "date", "end", True),
                    Column(f"{name}{SEPARATOR}ongoing", f"{name}.ongoing", "bool", "ongoing", True))
        case _ as unreachable:
            assert_never(unreachable)


# ---- CREATE TABLE ---------------------------------------------------------------------------


def sql_type(column: Column, dialect: str) -> exp.DataType:
    match column.kind:
        case "key" | "text":
            return exp.DataType.build("VARCHAR")
        case "ordinal" | "integer":
            return exp.DataType.build("BIGINT")
        case "bool":
            return exp.DataType.build("BOOLEAN")
        case "date":
            return exp.DataType.build("DATE")
        case "decimal":
            if dialect == "bigquery":  # NUMERIC keeps 9 places at most; BIGNUMERIC 38
                return exp.DataType.build(f"BIGDECIMAL({column.precision}, {column.scale})")
            return exp.DataType.build(f"DECIMAL({column.precision}, {column.scale})")
        case _ as unreachable:
            assert_never(unreachable)


def create_table(table: Table, dialect: str) -> exp.Create:
    defs: list[exp.Expr] = []
    for column in table.columns:
        constraints = [] if column.nullable else [exp.ColumnConstraint(kind=exp.NotNullColumnConstraint())]
        defs.append(exp.ColumnDef(this=exp.to_identifier(column.name, quoted=True),
                                  kind=sql_type(column, dialect), constraints=constraints))
    if dialect in ("duckdb", "postgres"):
        defs.append(exp.PrimaryKey(expressions=[exp.to_identifier(k, quoted=True) for k in table.key]))
    schema = exp.Schema(this=exp.to_table(table.name, quoted=True), expressions=defs)
    # to_table parses its argument: quote the name as one identifier instead
    schema.set("this", exp.Table(this=exp.to_identifier(table.name, quoted=True)))
    return exp.Create(this=schema, kind="TABLE")


def create_statements(protocol: ir.Protocol, dialect: str) -> list[str]:
    return [create_table(t, dialect).sql(dialect=dialect, pretty=True) for t in layout(protocol).tables]


# ---- the JSON Schema ------------------------------------------------------------------------

_NUMBER = {"type": "number", "exclusiveMinimum": -10 ** 15, "exclusiveMaximum": 10 ** 15}


def _value_schema(field: ir.Field) -> dict[str, Any]:
    t = field.type
    match t:
        case ir.Scalar():
            schema = _scalar_schema(t.kind)
        case ir.EnumOf():
            schema = {"type": "string", "enum": list(t.enum.member_names())}
        case ir.SetOf():
            schema = {"type": "array", "items": {"type": "string", "enum": list(t.enum.member_names())}}
        case ir.Measure():
            units = [t.unit.text, *t.record_units()]
            keys = ("value", "uln") if t.kind == "lab" else ("value",)
            properties: dict[str, Any] = {k: dict(_NUMBER) for k in keys}
            if t.kind == "lab":
                properties["uln"] = {**_NUMBER, "exclusiveMinimum": 0}
            properties["unit"] = {"type": "string", "enum": units}
            measured = {"type": "object", "properties": properties, "required": list(keys),
                        "additionalProperties": False}
            schema = measured if t.kind == "lab" else {"anyOf": [dict(_NUMBER), measured]}
        case ir.ListOf():
            schema = {"type": "array", "items": {"$ref": f"#/$defs/{t.record}"}}
        case _ as unreachable:
            assert_never(unreachable)
    if field.measured is not None:
        day = {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "format": "date"}
        if isinstance(t, ir.Measure):  # the date beside the value and unit
            whole = schema if t.kind == "lab" else schema["anyOf"][1]
            whole = {**whole, "properties": {**whole["properties"], "measured": day},
                     "required": [*whole["required"], "measured"]}
            schema = whole
        else:
            schema = {"type": "object", "properties": {"value": schema, "measured": day},
                      "required": ["value", "measured"], "additionalProperties": False}
    if field.label:
        schema["description"] = field.label
    return schema


def _scalar_schema(kind: ir.BaseKind) -> dict[str, Any]:
    match kind:
        case "bool" | "judgment":
            return {"type": "boolean"}
        case "integer":
            return {**_NUMBER, "type": "integer"}
        case "decimal":
            return dict(_NUMBER)
        case "text":
            return {"type": "string"}
        case "date":
            return {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "format": "date"}
        case "titer":
            return {"type": "string", "pattern": "^1:[1-9][0-9]{0,8}$"}
        case "interval":
            day = {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "format": "date"}
            return {"type": "object", "properties": {"start": day, "end": {"anyOf": [day, {"type": "null"}]},
                                                     "ongoing": {"anyOf": [{"type": "boolean"}, {"type": "null"}]}},
                    "required": ["start"], "additionalProperties": False}
        case _ as unreachable:
            assert_never(unreachable)


def _object_schema(fields: tuple[ir.Field, ...], allow_id: bool) -> dict[str, Any]:
    # null is "none recorded" in an optional field and missing in any other: both readable
    properties: dict[str, Any] = {f.name: {"anyOf": [_value_schema(f), {"type": "null"}]} for f in fields}
    if allow_id:
        properties = {"id": {"description": "the record's id"}, **properties}
    return {"type": "object", "properties": properties, "additionalProperties": False}


def json_schema(protocol: ir.Protocol) -> dict[str, Any]:
    layout(protocol)  # the same facts: a protocol SQL cannot lay out has no schema here either
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{protocol.id} patient record",
        "description": f"A patient record for {protocol.title}; every field may be absent (missing).",
        **_object_schema(protocol.fields, True),
    }
    if protocol.records:
        schema["$defs"] = {r.name: _object_schema(r.fields, False) for r in protocol.records}
    return schema


# ---- rows -----------------------------------------------------------------------------------

Row = tuple[object, ...]


def _exact(value: rt.Exact, to_storage: Fraction, scale: int, path: str) -> Decimal:
    stored = Fraction(value) * to_storage
    shifted = stored * 10 ** scale
    if shifted.denominator != 1:
        raise TableError(rt.Problem(path, f"{rt.show(value)} has more than {scale} decimal places in "
                                          "the SQL layout"))
    return Decimal(shifted.numerator).scaleb(-scale)


def _values(layout_: Layout, placed: FieldLayout, raw: object, present: bool, path: str,
            children: dict[str, list[Row]], key: Row) -> list[object]:
    """The columns of one field, in the layout's order; fills the list's item table."""
    field = placed.field
    t = field.type
    problems: list[rt.Problem] = []
    none = present and raw is None and field.optional
    missing = not present or raw is None
    out: list[object]
    measured: datetime.date | None = None
    if field.measured is not None and not missing:  # the value beside its date, read as validate() does
        whole = isinstance(t, ir.Measure)
        if not isinstance(raw, Mapping) or "measured" not in raw:
            raise TableError(rt.Problem(path, "expected a value with the date it was measured"))
        measured = rt.read_date(raw["measured"], f"{path}.measured", problems)
        rest = {k: v for k, v in raw.items() if k != "measured"}
        raw = rest if whole else rest.get("value")
        path = path if whole else f"{path}.value"
    match t.kind:
        case "bool" | "judgment":
            out = [None if missing else rt.read_bool(raw, path, problems)]
        case "integer":
            out = [None if missing else rt.read_integer(raw, path, problems)]
        case "titer":
            out = [None if missing else rt.read_titer(raw, path, problems)]
        case "decimal":
            value = None if missing else rt.read_decimal(raw, path, problems)
            out = [None if value is None else _exact(value, Fraction(1), placed.columns[0].scale, path)]
        case "text":
            out = [None if missing else rt.read_text(raw, path, problems)]
        case "enum":
            out = [None if missing else rt.read_enum(raw, path, problems, t.enum.member_names())]
        case "date":
            out = [None if missing else rt.read_date(raw, path, problems)]
        case "quantity" | "lab":
            factors = t.record_units()
            scale = placed.columns[0].scale
            if t.kind == "quantity":
                number = None if missing else rt.read_quantity(raw, path, problems, t.unit.text, factors)
                out = [None if number is None else _exact(number, placed.to_storage, scale, path)]
            else:
                lab = None if missing else rt.read_lab(raw, path, problems, t.unit.text, factors)
                out = [None, None] if lab is None else [_exact(lab.value, placed.to_storage, scale, f"{path}.value"),
                                                        _exact(lab.uln, placed.to_storage, scale, f"{path}.uln")]
        case "set":
            names = t.enum.member_names()
            chosen = None if missing else rt.read_set(raw, path, problems, names)
            if none:
                chosen = frozenset()
            out = [None if chosen is None else m in chosen for m in names]
        case "list":
            assert placed.items is not None
            if missing:
                out = [0 if none else None]
            elif not isinstance(raw, list):
                raise TableError(rt.Problem(path, "expected a list"))
            else:
                out = [len(raw)]
                for index, item in enumerate(raw):
                    _record_rows(layout_, layout_.table(placed.items), (*key, index), item, f"{path}[{index}]",
                                 children)
        case "interval":
            period = None if missing else rt.read_interval(raw, path, problems)
            out = [None, None, None] if period is None else [period.start, period.end, period.ongoing]
        case _ as unreachable:
            assert_never(unreachable)
    if field.plausible is not None and not problems:  # as validate(): a value outside the range is refused
        stored = out[0]
        low = Fraction(field.plausible.low) * placed.to_storage
        high = Fraction(field.plausible.high) * placed.to_storage
        if stored is not None and not low <= Fraction(str(stored)) <= high:
            raise TableError(rt.Problem(f"{path}.value" if isinstance(raw, Mapping) else path,
                                        f"outside the plausible range {field.plausible.text}; check the value "
                                        "and its unit"))
    if problems:
        raise TableError(problems[0])
    if field.measured is not None:
        out.append(None if out[0] is None else measured)
    if field.optional:
        out.append(none)
    return out


def _record_rows(layout_: Layout, table: Table, key: Row, record: object, path: str,
                 out: dict[str, list[Row]]) -> None:
    if not isinstance(record, Mapping):
        raise TableError(rt.Problem(path or "record", "expected an object"))
    row: list[object] = list(key)
    for placed in table.fields:
        name = placed.field.name
        where = f"{path}.{name}" if path else name
        row.extend(_values(layout_, placed, record.get(name), name in record, where, out, key))
    out[table.name].append(tuple(row))


def rows(layout_: Layout, patient_id: str, record: Mapping[str, object]) -> dict[str, list[Row]]:
    """The rows of one validated record, by table (every table present, maybe with no rows)."""
    out: dict[str, list[Row]] = {t.name: [] for t in layout_.tables}
    _record_rows(layout_, layout_.table(PATIENTS), (patient_id,), record, "", out)
    return out
