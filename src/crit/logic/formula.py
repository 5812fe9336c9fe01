"""Criteria as conditions on a complete record, with "not applicable" spelled out.

The runtime leaves out the parts of a criterion that do not apply; here that rule is written
as plain `and`/`or`/`not` over the checked IR, so that a solver can ask what a protocol admits.
`structure` and `key` say when two nodes mean the same, whatever their place in the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from crit import ir
from crit.ast import Span

# ---- structure: what a node means, without where it was written -------------------------


def structure(node: object) -> object:
    """A hashable, position-free rendering of an AST or IR node: two nodes have equal structure
    exactly when they are written alike, whatever their layout or place in the file."""
    if isinstance(node, Span):
        return None
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        values = (getattr(node, f.name) for f in dataclasses.fields(node) if f.name != "span")
        return (type(node).__name__, *(structure(v) for v in values))
    if isinstance(node, (tuple, list)):
        return tuple(structure(item) for item in node)
    if isinstance(node, dict):
        return tuple(sorted((structure(k), structure(v)) for k, v in node.items()))
    return node


def key(node: object) -> object:
    """Like `structure`, but a field is known by its name (and scope) alone, and a record by
    its name, so a condition keeps its key when a label or an enum elsewhere changes."""
    if isinstance(node, ir.FieldRef):
        return ("ref", node.field.name, node.scope)
    if isinstance(node, ir.Field):
        return ("field", node.name)
    if isinstance(node, ir.Record):
        return ("record", node.name)
    if isinstance(node, ir.DefinitionRef):
        return ("define", node.name)
    if isinstance(node, ir.Const):
        return ("const", node.kind, node.value)
    if isinstance(node, Span):
        return None
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        values = (getattr(node, f.name) for f in dataclasses.fields(node) if f.name != "span")
        return (type(node).__name__, *(key(v) for v in values))
    if isinstance(node, (tuple, list)):
        return tuple(key(item) for item in node)
    return node


# ---- building conditions ---------------------------------------------------------------------

NOWHERE = Span("<crit>", 0, 0, 0, 0)
TRUE = ir.Truth(True, NOWHERE)
FALSE = ir.Truth(False, NOWHERE)


def conj(*parts: ir.Expr) -> ir.Expr:
    """`and`, without the constants: true parts are dropped, a false one decides."""
    kept = [p for p in parts if p != TRUE]
    if any(p == FALSE for p in kept):
        return FALSE
    if not kept:
        return TRUE
    return kept[0] if len(kept) == 1 else ir.And(tuple(kept), NOWHERE)


def disj(*parts: ir.Expr) -> ir.Expr:
    """`or`, without the constants."""
    kept = [p for p in parts if p != FALSE]
    if any(p == TRUE for p in kept):
        return TRUE
    if not kept:
        return FALSE
    return kept[0] if len(kept) == 1 else ir.Or(tuple(kept), NOWHERE)


def neg(part: ir.Expr) -> ir.Expr:
    if part == TRUE:
        return FALSE
    if part == FALSE:
        return TRUE
    if isinstance(part, ir.Not):
        return part.operand
    return ir.Not(part, NOWHERE)


# ---- criteria as conditions ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Parts:
    """A criterion (or line) on a complete record: whether it applies, and if so whether it is met."""

    applies: ir.Expr
    met: ir.Expr


def line_parts(item: ir.Line | ir.When) -> Parts:
    if isinstance(item, ir.Line):
        return Parts(TRUE, item.expr)
    body = combine("all", 0, [line_parts(b) for b in item.body])
    return Parts(conj(item.condition, body.applies), body.met)


def combine(mode: str, count: int, parts: Sequence[Parts]) -> Parts:
    """How the runtime combines parts: the ones that do not apply are left out, and a
    combination of parts none of which applies does not apply either."""
    applies = disj(*(p.applies for p in parts))
    if mode == "all":
        return Parts(applies, conj(*(disj(neg(p.applies), p.met) for p in parts)))
    counted = tuple(conj(p.applies, p.met) for p in parts)
    if mode == "any":
        return Parts(applies, disj(*counted))
    return Parts(applies, ir.AtLeast(count, counted, "at_least", NOWHERE))


def criterion_parts(criterion: ir.Criterion) -> Parts:
    """The criterion inside its parent (whose own `when` is already known to hold)."""
    parts = [criterion_parts(i) if isinstance(i, ir.Criterion) else line_parts(i)
             for i in criterion.items if not isinstance(i, ir.Note)]
    body = combine(criterion.combine, criterion.at_least, parts)
    gate = criterion.applies if criterion.applies is not None else TRUE
    return Parts(conj(gate, body.applies), body.met)


def passes(criterion: ir.Criterion) -> ir.Expr:
    """A top-level criterion lets the patient through: an inclusion met or not applicable,
    an exclusion not met or not applicable."""
    parts = criterion_parts(criterion)
    met = parts.met if criterion.section == "inclusion" else neg(parts.met)
    return disj(neg(parts.applies), met)


def eligible(protocol: ir.Protocol) -> ir.Expr:
    """Eligibility on a complete record, as one condition."""
    return conj(*(passes(c) for c in protocol.inclusion + protocol.exclusion))


def expand(expr: ir.Expr, definitions: Mapping[str, ir.Definition]) -> ir.Expr:
    """The condition with its definitions written out (a definition holds when all its lines do),
    which is all the solver needs: it reads every other construct as written."""
    match expr:
        case ir.DefinitionRef(name=name):
            return conj(*(expand(line.expr, definitions) for line in definitions[name].lines()))
        case ir.Not(operand=operand):
            return neg(expand(operand, definitions))
        case ir.And(operands=operands):
            return conj(*(expand(o, definitions) for o in operands))
        case ir.Or(operands=operands):
            return disj(*(expand(o, definitions) for o in operands))
        case ir.AtLeast(count=count, operands=operands, kind=kind):
            return ir.AtLeast(count, tuple(expand(o, definitions) for o in operands), kind, NOWHERE)
        case ir.Quantified(condition=condition) if condition is not None:
            return dataclasses.replace(expr, condition=expand(condition, definitions))
        case ir.CountCompare(condition=condition) | ir.DistinctCount(condition=condition) if condition is not None:
            return dataclasses.replace(expr, condition=expand(condition, definitions))
        case ir.NumCompare(left=left, right=right):
            return dataclasses.replace(expr, left=_expand_num(left, definitions),
                                       right=_expand_num(right, definitions))
        case _:
            return expr


def _expand_num(value: ir.Num, definitions: Mapping[str, ir.Definition]) -> ir.Num:
    """A derived value with the definitions in its choices' conditions written out."""
    match value:
        case ir.Arith(left=left, right=right):
            return dataclasses.replace(value, left=_expand_num(left, definitions),
                                       right=_expand_num(right, definitions))
        case ir.Convert(value=inner) | ir.ValueRef(value=inner):
            return dataclasses.replace(value, value=_expand_num(inner, definitions))
        case ir.Choice(branches=branches, otherwise=otherwise):
            return ir.Choice(tuple((expand(c, definitions), _expand_num(v, definitions)) for c, v in branches),
                             _expand_num(otherwise, definitions), value.span)
        case ir.Equivalent(dose=dose):
            return dataclasses.replace(value, dose=_expand_num(dose, definitions))
        case _:
            return value


def choice_conditions(value: ir.Num) -> list[ir.Expr]:
    """The conditions of every choice in a derived value."""
    match value:
        case ir.Arith(left=left, right=right):
            return choice_conditions(left) + choice_conditions(right)
        case ir.Convert(value=inner) | ir.ValueRef(value=inner):
            return choice_conditions(inner)
        case ir.Choice(branches=branches, otherwise=otherwise):
            out = [c for c, _ in branches]
            for _, v in branches:
                out += choice_conditions(v)
            return out + choice_conditions(otherwise)
        case ir.Equivalent(dose=dose):
            return choice_conditions(dose)
        case _:
            return []


__all__ = [
    "FALSE", "NOWHERE", "TRUE", "Parts", "choice_conditions", "combine", "conj", "criterion_parts", "disj",
    "eligible", "expand", "key", "line_parts", "neg", "passes", "structure",
]
