"""Plain clinical English for the checked IR.

The Markdown rendering and the evaluator's reasons both word conditions through this module,
so a criterion reads the same wherever a clinician meets it. Everything here is a pure function
of the IR: no Markdown, no escaping (the backends escape for their own formats).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import assert_never

from crit import ir

_SYMBOLS: dict[ir.CompareOp, str] = {">=": "≥", "<=": "≤", ">": ">", "<": "<", "=": "=", "!=": "≠"}
_OPPOSITE: dict[ir.CompareOp, ir.CompareOp] = {">=": "<", "<=": ">", ">": "<=", "<": ">=", "=": "!=", "!=": "="}

# Member kind: (wording, negated wording, conjunction for the last member).
_MEMBER: dict[ir.MemberKind, tuple[str, str, str]] = {
    "is": ("is", "is not", "or"),
    "is_not": ("is not", "is", "or"),
    "is_any": ("is one of", "is none of", "or"),
    "has": ("includes", "does not include", "or"),
    "has_any": ("includes any of", "includes none of", "or"),
    "has_all": ("includes all of", "does not include all of", "and"),
}
_WINDOW: dict[ir.WindowKind, str] = {"within": "within", "at_least": "at least", "less_than": "less than",
                                     "more_than": "more than"}
_LASTED: dict[ir.LastedKind, str] = {"at_least": "at least", "more_than": "more than", "less_than": "less than",
                                     "at_most": "at most"}
_QUANTIFIER: dict[ir.QuantifiedKind, tuple[str, str]] = {"any": ("any", "no"), "all": ("every", "not every")}

_BASE_TYPES: dict[ir.BaseKind, str] = {
    "bool": "yes or no",
    "integer": "whole number",
    "decimal": "number",
    "text": "text",
    "date": "date",
    "titer": "titer (1:N)",
    "judgment": "judgment (recorded by the investigator)",
    "interval": "interval (start, and end or ongoing)",
}

# A quantity whose unit starts with a number (`20 10^9/L`) needs its multiplication sign back.
_SCALED_QUANTITY = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?) (?:[x×] )?(?P<unit>[0-9].*)")


def operator_symbol(op: ir.CompareOp) -> str:
    """The sign a clinician reads for an IR operator: `>=` is `≥`."""
    return _SYMBOLS[op]


def field_label(field: ir.Field) -> str:
    """A field as shown to people: its label when it has one, else its name."""
    return field.label or field.name


def describe_value(value: ir.Value) -> str:
    """A field by its label, a literal as its author wrote it (`60 g/L`, `1:80`)."""
    if isinstance(value, ir.FieldRef):
        return field_label(value.field)
    match = _SCALED_QUANTITY.fullmatch(value.display) if value.kind == "number" else None
    if match is not None:
        per = _PER.fullmatch(match["unit"])  # `1500 x 1/mm3` is 1500 per mm³
        if per is not None:
            return f"{match['number']} /{unit_text(per[1])}"
        return f"{match['number']} × {unit_text(match['unit'])}"
    quantity = _QUANTITY.fullmatch(value.display) if value.kind == "number" else None
    if quantity is not None:
        return f"{quantity['number']} {unit_text(quantity['unit'])}"
    return value.display


_PER = re.compile(r"1/(.+)")
_QUANTITY = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?) (?P<unit>[^0-9 ].*)")
_POWER = re.compile(r"(?<=[A-Za-z])(?:\^([23])|(?<=m)([23]))(?![0-9])")


def unit_text(unit: str) -> str:
    """A unit as a clinician reads it: powers as superscripts (`/mm³`, `kg/m²`, `1.73m²`)."""
    return _POWER.sub(lambda m: "²" if (m[1] or m[2]) == "2" else "³", unit)


def describe(expr: ir.Expr) -> str:
    """An expression in plain clinical English: `Hemoglobin ≥ 60 g/L`."""
    return _render(expr, negated=False)


def count_heading(expr: ir.AtLeast) -> str:
    """How many parts must hold, as the author put it: `at least 3 of`, `any of`, `all of`."""
    return {"any": "any of", "all": "all of"}.get(expr.kind, f"at least {expr.count} of")


_PLURALS = {"criterion": "criteria"}


def counted(count: int, noun: str) -> str:
    """`1 criterion`, `2 criteria`, `0 fields`: a count with its noun in the right number."""
    return f"{count:,} {noun if count == 1 else _PLURALS.get(noun, noun + 's')}"


def describe_type(t: ir.Type) -> str:
    """A field's type for the glossary: `quantity in g/L (also g/dL)`."""
    match t:
        case ir.Measure():
            also = f" (also {', '.join(unit.text for unit, _ in t.also)})" if t.also else ""
            if t.analyte is not None:
                via = f"converted with the molar mass of {t.analyte.name}, {t.analyte.text}"
                also = f"{also[:-1]}; {via})" if also else f" ({via})"
            if t.kind == "lab":
                return f"lab value in {t.unit.text}{also} with its own ULN"
            return f"quantity in {t.unit.text}{also}"
        case ir.EnumOf():
            return f"one of {t.enum.name}"
        case ir.SetOf():
            return f"set of {t.enum.name}"
        case ir.ListOf():
            return f"list of {t.record}"
        case ir.Scalar():
            return _BASE_TYPES[t.kind]
        case _:
            assert_never(t)


def describe_field_type(field: ir.Field) -> str:
    """A field's type for the glossary, with a dated result's window:
    `quantity in g/L, measured within 14 days before screening`."""
    text = describe_type(field.type)
    m = field.measured
    if m is None:
        return text
    return f"{text}, measured within {_duration(m.amount, m.unit)} {m.direction} {m.anchor}"


def _render(expr: ir.Expr, negated: bool) -> str:
    """`expr`, or its negation; atoms are negated in words, compound forms as `not (…)`."""
    match expr:
        case ir.Compare(op="=" | "!=" as op, left=ir.FieldRef() as flag,
                        right=ir.Const(kind="bool", value=value)):
            # `consent_signed = true` reads as the flag itself, `= false` as its negation.
            holds = value == (op == "=")
            return _render(flag, negated=negated == holds)
        case ir.Compare(op=op, left=left, right=right):
            op = _OPPOSITE[op] if negated else op
            return f"{describe_value(left)} {_SYMBOLS[op]} {describe_value(right)}"
        case ir.UlnCompare(op=op, lab=lab, multiple=multiple):
            op = _OPPOSITE[op] if negated else op
            return f"{describe_value(lab)} {_SYMBOLS[op]} {format(multiple, 'f')} × ULN"
        case ir.Between(value=value, low=low, high=high):
            word = "not between" if negated else "between"
            bounds = f"{describe_value(low)} and {describe_value(high)}"
            return f"{describe_value(value)} {word} {bounds} (inclusive)"
        case ir.Member(kind=kind, value=value, members=members):
            wording, negation, conjunction = _MEMBER[kind]
            match value.field.type:
                case ir.EnumOf(enum=enum) | ir.SetOf(enum=enum):
                    labels = [enum.label_of(m) for m in members]
                case _:
                    labels = list(members)
            listed = _join(labels, conjunction)
            return f"{describe_value(value)} {negation if negated else wording} {listed}"
        case ir.Window(kind=kind, value=value, amount=amount, unit=unit, direction=direction, anchor=anchor):
            word = ("not " if negated else "") + _WINDOW[kind]
            span = f"{_duration(amount, unit)} {direction}"
            return f"{describe_value(value)} {word} {span} {describe_value(anchor)}"
        case ir.NoneRecorded(value=value):
            return f"{describe_value(value)} recorded" if negated else f"no {describe_value(value)} recorded"
        case ir.Overlaps(value=value, amount=amount, unit=unit, direction=direction, anchor=anchor):
            word = "does not overlap" if negated else "overlaps"
            return f"{describe_value(value)} {word} the {_duration(amount, unit)} {direction} {describe_value(anchor)}"
        case ir.OngoingAt(value=value, anchor=anchor):
            return f"{describe_value(value)} {'not ' if negated else ''}ongoing at {describe_value(anchor)}"
        case ir.Lasted(value=value, kind=kind, amount=amount, unit=unit, anchor=anchor):
            word = "did not last" if negated else "lasted"
            return (f"{describe_value(value)} {word} {_LASTED[kind]} {_duration(amount, unit)} "
                    f"by {describe_value(anchor)}")
        case ir.DistinctCount(op=op, items=items, record=record, key=key, condition=condition, number=number):
            op = _OPPOSITE[op] if negated else op
            counted = (f"different {field_label(key)} among {record.name} entries in {describe_value(items)}"
                       f"{_where(condition, True, False)}")
            return f"the number of {counted} is {_SYMBOLS[op]} {number}"
        case ir.Truth(value=value):
            return "always" if value != negated else "never"
        case ir.DefinitionRef(name=name, label=label):
            return _answered(label or name, negated)
        case ir.FieldRef(field=field):
            text = field_label(field)
            if field.type.kind == "judgment":
                text = f"investigator's judgment: {text}"
            return _answered(text, negated)
        case ir.Not(operand=operand):
            return _render(operand, not negated)
        case ir.And(operands=operands):
            return _negate(" and ".join(_part(o) for o in operands), negated)
        case ir.Or(operands=operands):
            return _negate(" or ".join(_part(o) for o in operands), negated)
        case ir.AtLeast(operands=operands):
            return _negate(f"{count_heading(expr)}: " + "; ".join(_part(o) for o in operands), negated)
        case ir.Quantified(kind="all", items=items, record=record, condition=condition) if condition is not None:
            # A statement about every entry, not a filter: `every course of treatment in … has C`.
            word = "not every" if negated else "every"
            return f"{word} {record_noun(record)} in {describe_value(items)} has {_part(condition)}"
        case ir.Quantified(kind=kind, items=items, record=record, condition=condition):
            word = _QUANTIFIER[kind][1 if negated else 0]
            # The condition ends the sentence (which is itself bracketed wherever it is embedded).
            noun = record_noun(record)
            return f"{word} {noun} in {describe_value(items)}{_where(condition, kind == 'any', True)}"
        case ir.CountCompare(op=op, items=items, record=record, condition=condition, number=number):
            op = _OPPOSITE[op] if negated else op
            counted = f"entries in {describe_value(items)}{_where(condition, True, False)}"
            return f"the number of {counted} is {_SYMBOLS[op]} {number}"
        case ir.NumCompare(op=op, left=left, right=right):
            op = _OPPOSITE[op] if negated else op
            return f"{describe_num(left)} {_SYMBOLS[op]} {describe_num(right)}"
        case _:
            assert_never(expr)


def record_noun(record: ir.Record) -> str:
    """What one entry of a list is, from its record's label: `A course of treatment` gives
    `course of treatment`; a record without a label is named by its name."""
    if not record.label:
        return record.name
    words = record.label.split(" ", 1)
    noun = words[1] if len(words) == 2 and words[0] in ("A", "An", "a", "an") else record.label
    return noun[:1].lower() + noun[1:] if noun[1:2].islower() else noun


def _answered(text: str, negated: bool) -> str:
    """A yes-or-no fact, or its negation as the answer it records: `ECG abnormality: no`."""
    return f"{text}: no" if negated else text


# How tightly each operator binds, for parentheses: a product binds tighter than a sum.
_BINDS: dict[ir.ArithOp, int] = {"+": 1, "-": 1, "×": 2, "÷": 2}


def describe_num(value: ir.Num, by_name: bool = False) -> str:
    """A derived value in words and signs: `Body weight ÷ (Height × Height)`, `5 × ULN if Liver
    metastases, otherwise 2.5 × ULN`. Fields by their labels, or (`by_name`, in reasons, which
    show each field's value by its path) by their names."""
    match value:
        case ir.FieldRef(field=field):
            return field.name if by_name else field_label(field)
        case ir.Const():
            return describe_value(value)
        case ir.Arith(op=op, left=left, right=right):
            return f"{_operand(left, op, False, by_name)} {op} {_operand(right, op, True, by_name)}"
        case ir.Convert(value=inner, unit=unit, explicit=explicit):
            text = describe_num(inner, by_name)
            return f"({text} in {unit})" if explicit else text
        case ir.UlnOf(multiple=multiple):
            return f"{format(multiple, 'f')} × ULN"
        case ir.ValueRef(name=name, label=label):
            return name if by_name else label or name
        case ir.Choice(branches=branches, otherwise=otherwise):
            chosen = [f"{describe_num(v, by_name)} if {describe(c)}" for c, v in branches]
            return "(" + ", ".join([*chosen, f"otherwise {describe_num(otherwise, by_name)}"]) + ")"
        case ir.Equivalent(table=table, dose=dose, agent=agent):
            if by_name:
                return f"{table.name}({describe_num(dose, by_name)}, {agent.field.name})"
            return (f"the {table.label or table.name} of {describe_num(dose)} "
                    f"(agent: {field_label(agent.field)})")
        case _:
            assert_never(value)


def _operand(value: ir.Num, op: ir.ArithOp, right: bool, by_name: bool) -> str:
    """An operand of `op`, in parentheses where it would otherwise bind to its neighbour."""
    text = describe_num(value, by_name)
    inner = value.value if isinstance(value, ir.Convert) and not value.explicit else value
    if isinstance(inner, ir.Arith) and (
            _BINDS[inner.op] < _BINDS[op] or (right and _BINDS[inner.op] == _BINDS[op] and op in ("-", "÷"))):
        return f"({text})"
    return text


def _negate(text: str, negated: bool) -> str:
    return f"not ({text})" if negated else text


def _where(condition: ir.Expr | None, picks: bool, last: bool) -> str:
    """The filter on a list's items, bracketed unless nothing follows it. When items are picked
    out (some of them, or how many), `where not C` reads better as `other than those with C`;
    for `every` that would change the meaning."""
    if condition is None:
        return ""
    words = "with"
    if picks and isinstance(condition, ir.Not):
        words, condition = "other than those with", condition.operand
    return f" {words} {describe(condition) if last else _part(condition)}"


def _part(expr: ir.Expr) -> str:
    """An operand inside a longer sentence, in parentheses when its own words could run on."""
    text = describe(expr)
    return f"({text})" if _runs_on(expr, negated=False) else text


def _runs_on(expr: ir.Expr, negated: bool) -> bool:
    """Whether the rendering of `expr` contains a list or connective that would blur its end."""
    if isinstance(expr, ir.Not):
        return _runs_on(expr.operand, not negated)
    if isinstance(expr, (ir.And, ir.Or, ir.AtLeast)):
        return not negated  # negated, they are already wrapped in `not (…)`
    if isinstance(expr, (ir.Quantified, ir.CountCompare, ir.DistinctCount)):
        return expr.condition is not None
    if isinstance(expr, ir.Member):
        return len(expr.members) > 1
    return False


def _join(words: Sequence[str], conjunction: str) -> str:
    """`A`, `A or B`, `A, B or C`."""
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} {conjunction} {words[-1]}"


def _duration(amount: int, unit: str) -> str:
    return f"{amount} {unit.removesuffix('s') if amount == 1 else unit}"
