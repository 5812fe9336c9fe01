"""The checked protocol: every name resolved, every type and unit known, every literal
converted to its field's canonical unit. Backends (Python, Markdown, the interpreter)
read only this.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Literal, TypeAlias, TypeVar, assert_never, get_args

from crit.ast import Span
from crit.frozen import frozen

# ---- the closed sets of kinds ----------------------------------------------------------
# Each kind is a `Literal`, so mypy knows every value a backend must handle; the tuples
# beside them are the same sets at run time, for `narrow`.

BaseKind = Literal["bool", "integer", "decimal", "text", "date", "titer", "judgment", "interval"]
TypeKind = BaseKind | Literal["quantity", "lab", "enum", "set", "list"]
Scope = Literal["patient", "item"]
ConstKind = Literal["number", "titer", "date", "text", "bool"]
CompareOp = Literal[">=", "<=", ">", "<", "=", "!="]
MemberKind = Literal["is", "is_not", "is_any", "has", "has_any", "has_all"]
WindowKind = Literal["within", "at_least", "less_than", "more_than"]
LastedKind = Literal["at_least", "more_than", "less_than", "at_most"]
WindowUnit = Literal["days", "weeks", "months", "years"]
Direction = Literal["before", "after"]
AtLeastKind = Literal["at_least", "any", "all"]
QuantifiedKind = Literal["any", "all"]
Section = Literal["inclusion", "exclusion"]
Combine = Literal["all", "any", "at_least"]
ArithOp = Literal["+", "-", "×", "÷"]

BASE_TYPES: tuple[BaseKind, ...] = get_args(BaseKind)
TYPE_KINDS: tuple[TypeKind, ...] = (*BASE_TYPES, "quantity", "lab", "enum", "set", "list")
COMPARE_OPS: tuple[CompareOp, ...] = get_args(CompareOp)
MEMBER_KINDS: tuple[MemberKind, ...] = get_args(MemberKind)
WINDOW_KINDS: tuple[WindowKind, ...] = get_args(WindowKind)
LASTED_KINDS: tuple[LastedKind, ...] = get_args(LastedKind)
WINDOW_UNITS: tuple[WindowUnit, ...] = get_args(WindowUnit)
DIRECTIONS: tuple[Direction, ...] = get_args(Direction)
AT_LEAST_KINDS: tuple[AtLeastKind, ...] = get_args(AtLeastKind)
QUANTIFIED_KINDS: tuple[QuantifiedKind, ...] = get_args(QuantifiedKind)
COMBINES: tuple[Combine, ...] = get_args(Combine)
ARITH_OPS: tuple[ArithOp, ...] = get_args(ArithOp)

_K = TypeVar("_K", bound=str)


def narrow(value: str, allowed: tuple[_K, ...]) -> _K:
    """`value` as one of `allowed`: where a string from the parser becomes a kind.
    The grammar admits only these values, so anything else is a bug in crit, not in the protocol."""
    for option in allowed:
        if value == option:
            return option
    raise ValueError(f"internal error: {value!r} is not one of {', '.join(allowed)}")


# ---- types --------------------------------------------------------------------------


@frozen
class Unit:
    """A unit as the protocol writes it, with its meaning: `scale` × pint `expression`."""

    text: str
    scale: Fraction
    expression: str
    dimension: str


@frozen
class Analyte:
    """What converts a field's mass and molar concentrations: the analyte's molar mass, exact,
    in g/mol; `text` as the author wrote it (`180.156 g/mol`)."""

    name: str
    molar_mass: Fraction
    text: str


@frozen
class EnumType:
    name: str
    label: str | None
    members: tuple[tuple[str, str | None], ...]  # (name, label)

    def member_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.members)

    def label_of(self, member: str) -> str:
        return dict(self.members).get(member) or member


@frozen
class Scalar:
    """A type that is its kind alone: yes/no, a number, text, a date, a titer, a judgment,
    an interval."""

    kind: BaseKind

    def describe(self) -> str:
        return self.kind


@frozen
class Measure:
    """A quantity or a lab value: a number in `unit`, the canonical unit, that a record may
    also give in other units. A lab value carries its own upper limit of normal."""

    kind: Literal["quantity", "lab"]
    unit: Unit
    also: tuple[tuple[Unit, Decimal | Fraction], ...] = ()  # other units, exact factor to canonical
    # other spellings of the canonical and `also` units a record may use (`kg/m²` for
    # `kg/m^2`, `µL` for `uL`), with their exact factors to canonical
    spellings: tuple[tuple[str, Decimal | Fraction], ...] = ()
    analyte: Analyte | None = None  # converts mass and molar concentrations

    def record_units(self) -> dict[str, Decimal | Fraction]:
        """Every unit text a record may give besides the canonical one, with its exact factor."""
        out = {unit.text: factor for unit, factor in self.also}
        for text, factor in self.spellings:
            out.setdefault(text, factor)
        out.pop(self.unit.text, None)
        return out

    def describe(self) -> str:
        return f"{self.kind} {self.unit.text}"


@frozen
class EnumOf:
    """One member of `enum`."""

    enum: EnumType

    @property
    def kind(self) -> Literal["enum"]:
        return "enum"

    def describe(self) -> str:
        return self.enum.name


@frozen
class SetOf:
    """Any number of `enum`'s members, none included."""

    enum: EnumType

    @property
    def kind(self) -> Literal["set"]:
        return "set"

    def describe(self) -> str:
        return f"set of {self.enum.name}"


@frozen
class ListOf:
    """Items of the record named `record`."""

    record: str

    @property
    def kind(self) -> Literal["list"]:
        return "list"

    def describe(self) -> str:
        return f"list of {self.record}"


# A field's type: one class per family, so that only a quantity has a unit and only a list a
# record. Match on the class; `kind` (every variant has it) is the name as the language spells it.
Type: TypeAlias = Scalar | Measure | EnumOf | SetOf | ListOf


@frozen
class Plausible:
    """The values a record may hold for a numeric field, inclusive, in its canonical unit;
    `text` as the author wrote the range (`20 to 250 g/L`)."""

    low: Decimal | Fraction
    high: Decimal | Fraction
    text: str


@frozen
class Freshness:
    """A dated value's window: its result counts only if measured `amount` `unit` `direction`
    the patient's date field `anchor` (inclusive); a result taken outside it is unknown."""

    amount: int
    unit: WindowUnit
    direction: Direction
    anchor: str  # a patient date field


@frozen
class Field:
    name: str
    type: Type
    optional: bool
    label: str | None
    span: Span
    plausible: Plausible | None = None
    measured: Freshness | None = None


@frozen
class Record:
    name: str
    label: str | None
    fields: tuple[Field, ...]
    span: Span


# ---- values and predicates -----------------------------------------------------------


@frozen
class FieldRef:
    """A patient field, or (scope "item") a field of the list item a quantifier is visiting."""

    field: Field
    scope: Scope
    span: Span


@frozen
class Const:
    """A literal, already in the unit of what it is compared with."""

    kind: ConstKind
    value: Decimal | Fraction | int | datetime.date | str | bool  # Fraction: no decimal writes it
    display: str  # as the author meant it: "60 g/L", "1:80", "2025-06-26"
    span: Span


Value = FieldRef | Const


@frozen
class Compare:
    op: CompareOp
    left: Value
    right: Value
    span: Span


@frozen
class UlnCompare:
    """`lab op k × ULN`: compares the lab value with k times its own upper limit."""

    op: CompareOp
    lab: FieldRef
    multiple: Decimal
    span: Span


@frozen
class Between:
    value: Value
    low: Value
    high: Value
    span: Span


@frozen
class Member:
    """`is`, `is not`, `is any of` (enums); `has`, `has any of`, `has all of` (sets)."""

    kind: MemberKind
    value: FieldRef
    members: tuple[str, ...]
    span: Span


@frozen
class Window:
    """`value within N unit before/after anchor`, `value at least N unit before/after anchor`."""

    kind: WindowKind
    value: Value
    amount: int
    unit: WindowUnit
    direction: Direction
    anchor: Value
    span: Span


@frozen
class NoneRecorded:
    """`no X recorded`: true when the record says none (null in an optional field), false when it
    holds a value, unknown when the field is missing."""

    value: FieldRef
    span: Span


@frozen
class Overlaps:
    """`interval overlaps N unit before/after anchor`: the interval (start to end, or ongoing)
    shares at least a day with the window, inclusive at both ends."""

    value: FieldRef
    amount: int
    unit: WindowUnit
    direction: Direction
    anchor: Value
    span: Span


@frozen
class OngoingAt:
    """`interval ongoing at anchor`: begun on or before the date and not ended before it."""

    value: FieldRef
    anchor: Value
    span: Span


@frozen
class Lasted:
    """`interval lasted at least/more than/less than/at most N unit by anchor`: from its start to
    its end, or to the anchor if that comes first (an ongoing interval is measured to the anchor)."""

    value: FieldRef
    kind: LastedKind
    amount: int
    unit: WindowUnit
    anchor: Value
    span: Span


@frozen
class Truth:
    value: bool
    span: Span


@frozen
class DefinitionRef:
    name: str
    label: str | None
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
    count: int
    operands: tuple[Expr, ...]
    kind: AtLeastKind  # how the author wrote it
    span: Span


@frozen
class Quantified:
    """`any(list where c)` or `all(list where c)`: whether some / every item satisfies c."""

    kind: QuantifiedKind
    items: FieldRef
    record: Record
    condition: Expr | None
    span: Span


@frozen
class CountCompare:
    """`count(list where c) op n`: with unknown items the count is a range, compared soundly."""

    op: CompareOp
    items: FieldRef
    record: Record
    condition: Expr | None
    number: int
    span: Span


# ---- derived values: arithmetic, values chosen by condition ---------------------------------
# A numeric value (`Num`) is a field, a literal, or built from them. The checker has worked out
# every unit: each `Num` is a number in one unit, and `Convert` nodes bring operands to a common
# one, with exact factors. Evaluated, a `Num` is a number, unknown (a fact missing, or a division
# by zero), or one of a few numbers (a `Choice` whose conditions are not all known).


@frozen
class Arith:
    """`left op right`, exactly (rational arithmetic); unknown if either side is."""

    op: ArithOp
    left: Num
    right: Num
    span: Span


@frozen
class Convert:
    """`value × factor`, read in `unit`: an operand brought to the unit of the other side, or
    (`explicit`) `(weight in kg)`, the number a measurement has in a unit."""

    value: Num
    factor: Decimal | Fraction
    unit: str
    explicit: bool
    span: Span


@frozen
class UlnOf:
    """`k × ULN` inside arithmetic or a choice: k times the compared lab value's own ULN."""

    lab: FieldRef
    multiple: Decimal
    span: Span


@frozen
class ValueRef:
    """A named derived value (`define bmi … = …`), with its checked formula."""

    name: str
    label: str | None
    value: Num
    unit: str
    span: Span


@frozen
class Choice:
    """The value of the first branch whose condition holds, else `otherwise`."""

    branches: tuple[tuple[Expr, Num], ...]  # (condition, value)
    otherwise: Num
    span: Span


@frozen
class EquivalenceTable:
    """Conversion factors between the members of an enum (agents): a dose of each is worth
    `factor` times as much of the reference agent."""

    name: str
    label: str | None
    enum: EnumType
    factors: tuple[tuple[str, Decimal], ...]  # (member, factor), one for every member
    span: Span


@frozen
class Equivalent:
    """`dose` converted by `table` by the agent it is of (`agent`, a field of the table's enum)."""

    table: EquivalenceTable
    dose: Num
    agent: FieldRef
    span: Span


Num = FieldRef | Const | Arith | Convert | UlnOf | ValueRef | Choice | Equivalent


@frozen
class NumCompare:
    """`left op right` where either side is derived: both are numbers in `unit` (shown in it)."""

    op: CompareOp
    left: Num
    right: Num
    unit: str
    span: Span


@frozen
class DistinctCount:
    """`count(different key in list where c) op n`: how many different values of the item field
    `key` the items satisfying c hold; with unknown items or keys the count is a range."""

    op: CompareOp
    items: FieldRef
    record: Record
    key: Field
    condition: Expr | None
    number: int
    span: Span


Expr = (
    Compare | UlnCompare | Between | Member | Window | Truth | DefinitionRef | FieldRef
    | Not | And | Or | AtLeast | Quantified | CountCompare | NumCompare
    | NoneRecorded | Overlaps | OngoingAt | Lasted | DistinctCount
)

Node = Expr | Const | Arith | Convert | UlnOf | ValueRef | Choice | Equivalent


def walk(node: Node) -> Iterator[Node]:
    """Every node of a condition, depth first: its sub-conditions, the values compared in it,
    a quantifier's list and its item condition. Written once, for every tool that collects."""
    yield node
    match node:
        case Not(operand=operand):
            yield from walk(operand)
        case And(operands=operands) | Or(operands=operands) | AtLeast(operands=operands):
            for operand in operands:
                yield from walk(operand)
        case Compare(left=left, right=right):
            yield from walk(left)
            yield from walk(right)
        case UlnCompare(lab=lab):
            yield from walk(lab)
        case Between(value=value, low=low, high=high):
            yield from walk(value)
            yield from walk(low)
            yield from walk(high)
        case Member(value=value):
            yield from walk(value)
        case Window(value=value, anchor=anchor) | Overlaps(value=value, anchor=anchor) \
                | OngoingAt(value=value, anchor=anchor) | Lasted(value=value, anchor=anchor):
            yield from walk(value)
            yield from walk(anchor)
        case NoneRecorded(value=value):
            yield from walk(value)
        case Quantified(items=items, condition=condition) | CountCompare(items=items, condition=condition) \
                | DistinctCount(items=items, condition=condition):
            yield from walk(items)
            if condition is not None:
                yield from walk(condition)
        case NumCompare(left=left, right=right) | Arith(left=left, right=right):
            yield from walk(left)
            yield from walk(right)
        case Convert(value=value) | ValueRef(value=value):
            yield from walk(value)
        case UlnOf(lab=lab):
            yield from walk(lab)
        case Equivalent(dose=dose, agent=agent):
            yield from walk(dose)
            yield from walk(agent)
        case Choice(branches=branches, otherwise=otherwise):
            for condition, value in branches:
                yield from walk(condition)
                yield from walk(value)
            yield from walk(otherwise)
        case Truth() | DefinitionRef() | FieldRef() | Const():
            pass
        case _:
            assert_never(node)


# ---- criteria --------------------------------------------------------------------------


@frozen
class Line:
    expr: Expr
    span: Span


@frozen
class When:
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
    section: Section
    combine: Combine
    at_least: int
    applies: Expr | None
    items: tuple[Line | When | Note | Criterion, ...]
    span: Span

    def children(self) -> tuple[Criterion, ...]:
        return tuple(item for item in self.items if isinstance(item, Criterion))

    def notes(self) -> tuple[str, ...]:
        return tuple(item.text for item in self.items if isinstance(item, Note))

    def conditions(self) -> tuple[Expr, ...]:
        """The conditions written in this criterion (not in its sub-criteria), in order:
        `applies`, then each line and each `when` condition."""
        out: list[Expr] = [] if self.applies is None else [self.applies]

        def visit(items: tuple[Line | When | Note | Criterion, ...] | tuple[Line | When, ...]) -> None:
            for item in items:
                if isinstance(item, Line):
                    out.append(item.expr)
                elif isinstance(item, When):
                    out.append(item.condition)
                    visit(item.body)

        visit(self.items)
        return tuple(out)

    def walk(self) -> tuple[Criterion, ...]:
        """This criterion and all below it, in protocol order."""
        out: list[Criterion] = [self]
        for child in self.children():
            out.extend(child.walk())
        return tuple(out)


@frozen
class Definition:
    name: str
    label: str | None
    body: tuple[Line | Note, ...]
    span: Span

    def notes(self) -> tuple[str, ...]:
        return tuple(item.text for item in self.body if isinstance(item, Note))

    def lines(self) -> tuple[Line, ...]:
        return tuple(item for item in self.body if isinstance(item, Line))


@frozen
class ValueDefinition:
    """A named derived value, for the glossary: its formula and the unit it is given in."""

    name: str
    label: str | None
    value: Num
    unit: str
    span: Span


@frozen
class Protocol:
    id: str
    title: str
    version: str | None
    notes: tuple[str, ...]
    source: str  # the protocol file as named on the command line
    source_hash: str  # sha256 of the protocol and every file it imports
    enums: tuple[EnumType, ...]
    records: tuple[Record, ...]
    fields: tuple[Field, ...]
    definitions: tuple[Definition, ...]  # in dependency order
    inclusion: tuple[Criterion, ...]
    exclusion: tuple[Criterion, ...]
    values: tuple[ValueDefinition, ...] = ()  # named derived values, in dependency order
    equivalences: tuple[EquivalenceTable, ...] = ()

    def criteria(self) -> tuple[Criterion, ...]:
        """Every criterion, top level and nested, in protocol order."""
        out: list[Criterion] = []
        for criterion in self.inclusion + self.exclusion:
            out.extend(criterion.walk())
        return tuple(out)
