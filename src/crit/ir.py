"""The checked protocol: every name resolved, every type and unit known, every literal
converted to its field's canonical unit. Backends (Python, Markdown, the interpreter)
read only this.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from crit.ast import Span
from crit.units import Unit

# ---- types --------------------------------------------------------------------------

BASE_TYPES = ("bool", "integer", "decimal", "text", "date", "titer", "judgment")


@dataclass(frozen=True, slots=True)
class EnumType:
    name: str
    label: str | None
    members: tuple[tuple[str, str | None], ...]  # (name, label)

    def member_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.members)

    def label_of(self, member: str) -> str:
        return dict(self.members).get(member) or member


@dataclass(frozen=True, slots=True)
class Type:
    """A field's type. `kind` is a base type or quantity, lab, enum, set, list."""

    kind: str
    unit: Unit | None = None  # quantity and lab: the canonical unit
    also: tuple[tuple[Unit, Decimal | Fraction], ...] = ()  # other units, exact factor to canonical
    enum: EnumType | None = None  # enum and set
    record: str | None = None  # list: the record's name

    def describe(self) -> str:
        if self.kind in ("quantity", "lab"):
            assert self.unit is not None
            return f"{self.kind} {self.unit.text}"
        if self.kind == "enum":
            assert self.enum is not None
            return self.enum.name
        if self.kind == "set":
            assert self.enum is not None
            return f"set of {self.enum.name}"
        if self.kind == "list":
            return f"list of {self.record}"
        return self.kind


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: Type
    optional: bool
    label: str | None
    span: Span


@dataclass(frozen=True, slots=True)
class Record:
    name: str
    label: str | None
    fields: tuple[Field, ...]
    span: Span


# ---- values and predicates -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A patient field, or (scope "item") a field of the list item a quantifier is visiting."""

    field: Field
    scope: str  # "patient" | "item"
    span: Span


@dataclass(frozen=True, slots=True)
class Const:
    """A literal, already in the unit of what it is compared with."""

    kind: str  # "number" | "titer" | "date" | "text" | "bool"
    value: Decimal | Fraction | int | datetime.date | str | bool  # Fraction: no decimal writes it
    display: str  # as the author meant it: "60 g/L", "1:80", "2025-06-26"
    span: Span


Value = FieldRef | Const


@dataclass(frozen=True, slots=True)
class Compare:
    op: str  # >= <= > < = !=
    left: Value
    right: Value
    span: Span


@dataclass(frozen=True, slots=True)
class UlnCompare:
    """`lab op k × ULN`: compares the lab value with k times its own upper limit."""

    op: str
    lab: FieldRef
    multiple: Decimal
    span: Span


@dataclass(frozen=True, slots=True)
class Between:
    value: Value
    low: Value
    high: Value
    span: Span


@dataclass(frozen=True, slots=True)
class Member:
    """`is`, `is not`, `is any of` (enums); `has`, `has any of`, `has all of` (sets)."""

    kind: str  # "is" | "is_not" | "is_any" | "has" | "has_any" | "has_all"
    value: FieldRef
    members: tuple[str, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Window:
    """`value within N unit before/after anchor`, `value at least N unit before/after anchor`."""

    kind: str  # "within" | "at_least"
    value: Value
    amount: int
    unit: str  # days | weeks | months | years
    direction: str  # before | after
    anchor: Value
    span: Span


@dataclass(frozen=True, slots=True)
class Truth:
    value: bool
    span: Span


@dataclass(frozen=True, slots=True)
class DefinitionRef:
    name: str
    label: str | None
    span: Span


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class AtLeast:
    count: int
    operands: tuple[Expr, ...]
    kind: str  # "at_least" | "any" | "all": how the author wrote it
    span: Span


@dataclass(frozen=True, slots=True)
class Quantified:
    """`any(list where c)` or `all(list where c)`: whether some / every item satisfies c."""

    kind: str  # "any" | "all"
    items: FieldRef
    record: Record
    condition: Expr | None
    span: Span


@dataclass(frozen=True, slots=True)
class CountCompare:
    """`count(list where c) op n`: with unknown items the count is a range, compared soundly."""

    op: str
    items: FieldRef
    record: Record
    condition: Expr | None
    number: int
    span: Span


Expr = (
    Compare | UlnCompare | Between | Member | Window | Truth | DefinitionRef | FieldRef
    | Not | And | Or | AtLeast | Quantified | CountCompare
)

# ---- criteria --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    expr: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class When:
    condition: Expr
    body: tuple[Line | When, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Note:
    text: str
    span: Span


@dataclass(frozen=True, slots=True)
class Criterion:
    id: str
    title: str
    section: str  # "inclusion" | "exclusion"
    combine: str  # "all" | "any" | "at_least"
    at_least: int
    applies: Expr | None
    items: tuple[Line | When | Note | Criterion, ...]
    span: Span

    def children(self) -> tuple[Criterion, ...]:
        return tuple(item for item in self.items if isinstance(item, Criterion))

    def notes(self) -> tuple[str, ...]:
        return tuple(item.text for item in self.items if isinstance(item, Note))

    def walk(self) -> tuple[Criterion, ...]:
        """This criterion and all below it, in protocol order."""
        out: list[Criterion] = [self]
        for child in self.children():
            out.extend(child.walk())
        return tuple(out)


@dataclass(frozen=True, slots=True)
class Definition:
    name: str
    label: str | None
    body: tuple[Line | Note, ...]
    span: Span

    def notes(self) -> tuple[str, ...]:
        return tuple(item.text for item in self.body if isinstance(item, Note))

    def lines(self) -> tuple[Line, ...]:
        return tuple(item for item in self.body if isinstance(item, Line))


@dataclass(frozen=True, slots=True)
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

    def criteria(self) -> tuple[Criterion, ...]:
        """Every criterion, top level and nested, in protocol order."""
        out: list[Criterion] = []
        for criterion in self.inclusion + self.exclusion:
            out.extend(criterion.walk())
        return tuple(out)
