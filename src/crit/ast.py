"""The syntax tree as written by the author: frozen dataclasses, each with a `Span`.

Nothing here is resolved or type-checked; `check.py` turns this into the checked IR.
"""

from __future__ import annotations

from decimal import Decimal

from crit.frozen import frozen


@frozen
class Span:
    """Where a node stands in its source: 1-based line and column, end exclusive."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int


# ---- expressions -----------------------------------------------------------------


@frozen
class Ref:
    name: str
    span: Span


@frozen
class Number:
    text: str
    value: Decimal
    span: Span


@frozen
class Unit:
    """A unit as written (`g/L`, `10^9/L`); `units.py` gives it meaning."""

    text: str
    span: Span


@frozen
class QuantityLit:
    number: Number
    unit: Unit
    span: Span


@frozen
class UlnLit:
    """`3.0 x ULN`: a multiple of a lab value's own upper limit of normal."""

    number: Number
    span: Span


@frozen
class TiterLit:
    dilution: int
    text: str
    span: Span


@frozen
class DateLit:
    text: str
    span: Span


@frozen
class TextLit:
    value: str
    span: Span


@frozen
class BoolLit:
    value: bool
    span: Span


@frozen
class Quantifier:
    """`count(list where cond)`, `any(...)`, `all(...)`."""

    kind: str  # "count" | "any" | "all"
    list_name: Ref
    condition: Expr | None
    span: Span
    key: Ref | None = None  # `count(different agent in treatments …)`: the field whose values are counted


@frozen
class Compare:
    op: str  # one of >= <= > < = !=
    left: Expr
    right: Expr
    span: Span


@frozen
class Between:
    value: Expr
    low: Expr
    high: Expr
    span: Span


@frozen
class Membership:
    """`x is A`, `x is not A`, `x is any of (A, B)`, `s has A`, `s has any/all of (...)`."""

    kind: str  # "is" | "is_not" | "is_any" | "has" | "has_any" | "has_all"
    value: Expr
    members: tuple[Ref, ...]
    span: Span


@frozen
class Duration:
    amount: int
    unit: str  # "days" | "weeks" | "months" | "years"
    span: Span


@frozen
class Window:
    """`d within 4 weeks before a`, `d at least 1 year after a`, `d less than 4 weeks before a`,
    `d more than 2 weeks before a`."""

    kind: str  # "within" | "at_least" | "less_than" | "more_than"
    value: Expr
    duration: Duration
    direction: str  # "before" | "after"
    anchor: Expr
    span: Span


@frozen
class NoneRecorded:
    """`no last_dose recorded`: the record says there is none (an optional field's null)."""

    field: Ref
    span: Span


@frozen
class Overlaps:
    """`infection overlaps 1 week before screening`: an interval meets the window."""

    value: Expr
    duration: Duration
    direction: str  # "before" | "after"
    anchor: Expr
    span: Span


@frozen
class OngoingAt:
    """`infection ongoing at screening`: the interval has begun and not ended by that date."""

    value: Expr
    anchor: Expr
    span: Span


@frozen
class Lasted:
    """`course lasted at least 6 months by screening`: the interval's length up to a date."""

    value: Expr
    kind: str  # "at_least" | "more_than" | "less_than" | "at_most"
    duration: Duration
    anchor: Expr
    span: Span


@frozen
class Not:
    operand: Expr
    span: Span


@frozen
class And:
    operands: tuple[Expr, ...]
    span: Span


@frozen
class Or:
    operands: tuple[Expr, ...]
    span: Span


@frozen
class AtLeast:
    """`at least N of (...)`; `any of` and `all of` are written with it too."""

    count: int
    operands: tuple[Expr, ...]
    kind: str  # "at_least" | "any" | "all"
    span: Span


@frozen
class Arith:
    """`a + b`, `a - b`, `a × b`, `a ÷ b` (also written `*` and `/`): a derived value."""

    op: str  # "+" | "-" | "×" | "÷"
    left: Expr
    right: Expr
    span: Span


@frozen
class NumberIn:
    """`(weight in kg)`: the number a measurement has in a unit, for a formula in plain numbers."""

    value: Expr
    unit: Unit
    span: Span


@frozen
class Choice:
    """`(5 x ULN if liver_metastases, otherwise 2.5 x ULN)`: a value chosen by condition; the
    first branch whose condition holds gives the value, else the last."""

    branches: tuple[tuple[Expr, Expr], ...]  # (value, condition)
    otherwise: Expr
    span: Span


@frozen
class Equivalent:
    """`prednisone_equivalent(steroid_dose, steroid)`: a dose converted by an equivalence table,
    by the agent it is of."""

    table: Ref
    dose: Expr
    agent: Ref
    span: Span


Expr = (
    Ref | Number | QuantityLit | UlnLit | TiterLit | DateLit | TextLit | BoolLit | Quantifier
    | Compare | Between | Membership | Window | Not | And | Or | AtLeast | Arith | NumberIn | Choice
    | Equivalent | NoneRecorded | Overlaps | OngoingAt | Lasted
)

# ---- criteria ----------------------------------------------------------------------


@frozen
class Line:
    expr: Expr
    span: Span


@frozen
class When:
    """`when C: X`: X applies only when C holds."""

    condition: Expr
    body: tuple[Line | When, ...]
    span: Span


@frozen
class Note:
    text: str
    span: Span


@frozen
class Criterion:
    id: str
    title: str
    combine: str  # "all" | "any" | "at_least"
    at_least: int
    applies: Expr | None  # `I3.1 "..." when diagnosis is SLE`
    items: tuple[Line | When | Note | Criterion, ...]
    span: Span
    id_span: Span


@frozen
class Define:
    name: str
    label: str | None
    body: tuple[Line | When | Note, ...]
    span: Span


@frozen
class DefineValue:
    """`define bmi "Body-mass index" = weight / (height × height)`: a named derived value;
    `in UNIT` states the unit it is given in."""

    name: str
    label: str | None
    unit: Unit | None
    value: Expr
    span: Span


# ---- schema ---------------------------------------------------------------------------


@frozen
class EnumMember:
    name: str
    label: str | None
    span: Span


@frozen
class EnumDecl:
    name: str
    label: str | None
    members: tuple[EnumMember, ...]
    span: Span


@frozen
class Analyte:
    """`as glucose molar mass 180.156 g/mol`: converts mass and molar concentrations of it."""

    name: str
    molar_mass: Number
    unit: Unit
    span: Span


@frozen
class EquivalenceDecl:
    """`equivalence NAME "label" of ENUM`, then one `MEMBER FACTOR` row per agent."""

    name: str
    label: str | None
    enum: Ref
    rows: tuple[tuple[Ref, Number], ...]
    span: Span


@frozen
class TypeExpr:
    """A field's declared type: `kind` is a base name, `quantity`, `lab`, `set` or `list`."""

    kind: str
    name: str | None  # enum or record name for named/set/list types
    unit: Unit | None
    also: tuple[Unit, ...]
    span: Span
    analyte: Analyte | None = None


@frozen
class Plausible:
    """`from 20 to 250 g/L`: the values a record may hold; the unit defaults to the field's."""

    low: Number
    high: Number
    unit: Unit | None
    span: Span


@frozen
class Measured:
    """`measured within 14 days before screening` after a field's type: a dated value."""

    duration: Duration
    direction: str  # "before" | "after"
    anchor: Ref
    span: Span


@frozen
class FieldDecl:
    name: str
    type: TypeExpr
    optional: bool
    label: str | None
    span: Span
    plausible: Plausible | None = None
    measured: Measured | None = None


@frozen
class RecordDecl:
    name: str
    label: str | None
    fields: tuple[FieldDecl, ...]
    span: Span


@frozen
class PatientDecl:
    fields: tuple[FieldDecl, ...]
    span: Span


@frozen
class Import:
    path: str
    span: Span


@frozen
class Header:
    id: str
    title: str
    version: str | None
    notes: tuple[str, ...]
    span: Span


@frozen
class Module:
    """One `.crit` file: a protocol (with a header) or a schema for protocols to import."""

    file: str
    header: Header | None
    imports: tuple[Import, ...]
    enums: tuple[EnumDecl, ...]
    records: tuple[RecordDecl, ...]
    patients: tuple[PatientDecl, ...]
    defines: tuple[Define, ...]
    inclusion: tuple[Criterion, ...]
    exclusion: tuple[Criterion, ...]
    values: tuple[DefineValue, ...] = ()
    equivalences: tuple[EquivalenceDecl, ...] = ()
