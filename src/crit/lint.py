"""Lint: warnings (W…) about protocols that check but cannot mean what their author meant.

    W001  a criterion no patient can meet          W005  a patient field no criterion uses
    W002  a criterion every patient meets          W006  a judgment no criterion uses
    W003  an inclusion an exclusion always undoes  W007  a definition no criterion uses
    W004  a `when` that can never apply            W008  a criterion written twice

Lint reads only the checked `ir.Protocol`, and its findings are `Diagnostic`s with severity
"warning" (`as_errors` turns them into errors for `crit check --strict`).

The reasoning is a small decision procedure over the checked conditions (`Solver`): each
field's values are constrained by the comparisons written on it (whole numbers for integers,
titers, dates and counts; exact rationals for decimals and quantities; finite enums), an
optional field may be none (which makes every condition on it false), a date window bounds
the days between its two dates (a month is 28 to 31 days), and anything it cannot reason
about (comparisons between two fields, conditions on list items) is an opaque fact that is
only known to contradict its own negation. A "cannot happen" answer is
therefore always right; lint warns only on those, so it has no false alarms. `crit diff`
uses the same procedure to tell tightened criteria from loosened ones.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import TypeAlias

from crit import ir
from crit.ast import Span
from crit.diagnostics import Diagnostic
from crit.english import describe

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


# ---- formulas: criteria as conditions, with "not applicable" spelled out ------------------

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


@dataclass(frozen=True, slots=True)
class Gap:
    """`value − anchor`, in days, compared (`>=` or `<=`) with a bound known to lie between
    `low` and `high` days: a date window's edge, exact for days and weeks, and for months and
    years as long as the calendar makes them (1 month is 28 to 31 days)."""

    value: ir.Value
    anchor: ir.Value
    op: str
    low: int
    high: int
    span: Span = NOWHERE


_DAYS = {"days": (1, 1), "weeks": (7, 7), "months": (28, 31), "years": (365, 366)}


def _window(w: ir.Window) -> ir.Expr:
    """A window as bounds on the days from its anchor to its date (inclusive at both ends)."""
    low, high = (w.amount * d for d in _DAYS[w.unit])
    edge = (-high, -low) if w.direction == "before" else (low, high)
    if w.kind == "at_least":
        return Gap(w.value, w.anchor, "<=" if w.direction == "before" else ">=", *edge)  # type: ignore[return-value]
    near = Gap(w.value, w.anchor, "<=" if w.direction == "before" else ">=", 0, 0)
    far = Gap(w.value, w.anchor, ">=" if w.direction == "before" else "<=", *edge)
    return ir.And((near, far), NOWHERE)  # type: ignore[arg-type]


def expand(expr: ir.Expr, definitions: Mapping[str, ir.Definition]) -> ir.Expr:
    """The condition in the solver's terms: definitions written out, `between` as two
    comparisons, `has any/all of` member by member, `any`/`all` over a list as counts, date
    windows as bounds on days."""
    match expr:
        case ir.DefinitionRef(name=name):
            return conj(*(expand(line.expr, definitions) for line in definitions[name].lines()))
        case ir.Not(operand=operand):
            return neg(expand(operand, definitions))
        case ir.And(operands=operands):
            return conj(*(expand(o, definitions) for o in operands))
        case ir.Or(operands=operands):
            return disj(*(expand(o, definitions) for o in operands))
        case ir.AtLeast(count=count, operands=operands):
            return ir.AtLeast(count, tuple(expand(o, definitions) for o in operands), "at_least", NOWHERE)
        case ir.Between(value=value, low=low, high=high) if isinstance(value, ir.FieldRef):
            return conj(ir.Compare(">=", value, low, NOWHERE), ir.Compare("<=", value, high, NOWHERE))
        case ir.Member(kind="has_any" | "has_all" as kind, value=value, members=members):
            parts = [ir.Member("has", value, (m,), NOWHERE) for m in members]
            return disj(*parts) if kind == "has_any" else conj(*parts)
        case ir.Window() if all(isinstance(v, ir.Const) or v.scope == "patient" for v in (expr.value, expr.anchor)):
            return _window(expr)
        case ir.Quantified(kind="any", items=items, record=record, condition=condition):
            return ir.CountCompare(">=", items, record, condition, 1, NOWHERE)
        case ir.Quantified(kind="all", items=items, record=record, condition=condition):
            other = neg(condition) if condition is not None else FALSE
            return ir.CountCompare("<=", items, record, other, 0, NOWHERE)
        case _:
            return expr


# ---- the solver ---------------------------------------------------------------------------

_NEGATE = {">=": "<", "<=": ">", ">": "<=", "<": ">=", "=": "!=", "!=": "="}
_WHOLE = ("integer", "titer", "date")
_LIMIT = 20000


class _GiveUp(Exception):
    """The search grew past its budget; the question stays open."""


@dataclass(frozen=True, slots=True)
class _Range:
    """The values a number may take: bounds (value, strict) and excluded points."""

    whole: bool
    low: tuple[Fraction, bool] | None = None
    high: tuple[Fraction, bool] | None = None
    excluded: frozenset[Fraction] = frozenset()

    def add(self, op: str, value: Fraction) -> _Range:
        if self.whole:
            if op == ">":
                op, value = ">=", Fraction(math.floor(value) + 1)
            elif op == "<":
                op, value = "<=", Fraction(math.ceil(value) - 1)
            elif op == ">=":
                value = Fraction(math.ceil(value))
            elif op == "<=":
                value = Fraction(math.floor(value))
            elif value.denominator != 1:
                return self if op == "!=" else dataclasses.replace(self, low=(Fraction(1), False),
                                                                   high=(Fraction(0), False))
        if op == "!=":
            return dataclasses.replace(self, excluded=self.excluded | {value})
        low, high = self.low, self.high
        if op in (">=", ">", "="):
            bound = (value, op == ">")
            if low is None or bound[0] > low[0] or (bound[0] == low[0] and bound[1]):
                low = bound
        if op in ("<=", "<", "="):
            bound = (value, op == "<")
            if high is None or bound[0] < high[0] or (bound[0] == high[0] and bound[1]):
                high = bound
        return dataclasses.replace(self, low=low, high=high)

    def empty(self) -> bool:
        low, high = self.low, self.high
        if low is None or high is None:
            return False
        if low[0] > high[0]:
            return True
        if self.whole:
            inside = {x for x in self.excluded if low[0] <= x <= high[0]}
            return high[0] - low[0] + 1 <= len(inside)
        if low[0] == high[0]:
            return low[1] or high[1] or low[0] in self.excluded
        return False


@dataclass(frozen=True, slots=True)
class _FieldState:
    """What the literals so far say about one field. `present`: some literal needs a value
    (a condition on a field recorded as none is false, so only negated ones allow none)."""

    present: bool = False
    numbers: Mapping[object, _Range] = field(default_factory=dict)
    members: frozenset[str] | None = None  # an enum's possible values
    texts: frozenset[str] = frozenset()  # text equal to each of these (two differ: impossible)
    not_texts: frozenset[str] = frozenset()
    flags: Mapping[object, bool] = field(default_factory=dict)
    clash: bool = False  # two literals want different truth values of one flag

    def consistent(self, optional: bool) -> bool:
        if optional and not self.present:
            return True
        if self.clash:
            return False
        if any(r.empty() for r in self.numbers.values()):
            return False
        if self.members is not None and not self.members:
            return False
        return len(self.texts) <= 1 and not self.texts & self.not_texts


_Store: TypeAlias = tuple[Mapping[str, _FieldState], Mapping[object, bool]]


@dataclass(frozen=True, slots=True)
class _Goal:
    """At least `count` of `parts` (each a condition and whether it must hold)."""

    count: int
    parts: tuple[tuple[ir.Expr, bool], ...]


_Todo: TypeAlias = "tuple[ir.Expr, bool] | _Goal"


@dataclass
class _FieldInfo:
    optional: bool
    kind: str
    members: frozenset[str] = frozenset()
    scale: Fraction = Fraction(1)


class Solver:
    """Decides whether conditions on the patients of some protocols can hold together.

    Given several versions of a protocol (for `crit diff`), a field is the same variable in
    all of them when its name and kind agree: literals are converted to the unit of its first
    declaration, and an enum ranges over every member any version declares.
    """

    def __init__(self, protocols: Sequence[ir.Protocol]) -> None:
        self.cache: dict[object, bool] = {}
        self.steps = 0
        self.fields: dict[str, _FieldInfo] = {}
        self.units: dict[str, ir.Type] = {}
        self.scales: dict[tuple[str, str], Fraction] = {}
        for protocol in protocols:
            for f in protocol.fields:
                self._declare(f)

    def _declare(self, f: ir.Field) -> None:
        kind = f.type.kind
        info = self.fields.get(f.name)
        members = frozenset(f.type.enum.member_names()) if f.type.enum is not None else frozenset()
        if info is None:
            self.fields[f.name] = _FieldInfo(f.optional, kind, members)
            if f.type.unit is not None:
                self.units[f.name] = f.type
            return
        info.optional = info.optional or f.optional
        info.members |= members
        first = self.units.get(f.name)
        if info.kind != kind:
            info.kind = "mixed"  # the versions disagree on the type: reason about nothing
        elif first is not None and f.type.unit is not None and first.unit != f.type.unit:
            from crit.units import UnitError, factor

            try:
                self.scales[(f.name, f.type.unit.text)] = factor(f.type.unit, first.unit) \
                    if first.unit is not None else Fraction(1)
            except UnitError:
                info.kind = "mixed"

    # ---- questions ----
    def satisfiable(self, *conditions: ir.Expr) -> bool | None:
        """Whether some complete record meets every condition; None when the search gives up.
        Conditions must already be `expand`ed."""
        return self._sat([x for c in conditions for x in _flatten(c, True)])

    def implies(self, a: ir.Expr, b: ir.Expr) -> bool | None:
        """Whether every record meeting `a` meets `b` (None: could not tell). Each part of `b`
        is tried on its own, and a part `a` states word for word needs no search."""
        premises = _flatten(a, True)
        stated = {(key(e), p) for e, p in premises}
        answer: bool | None = True
        for expr, positive in _flatten(b, True):
            if (key(expr), positive) in stated:
                continue
            found = self._sat([*premises, (expr, not positive)])
            if found:
                return False
            if found is None:
                answer = None
        return answer

    def _sat(self, parts: list[tuple[ir.Expr, bool]]) -> bool | None:
        """Conditions that share no field are independent: each group is searched on its own
        (and remembered), which keeps a protocol's unrelated criteria from multiplying."""
        answer: bool | None = True
        for group in self._groups(parts):
            signature = key(tuple(sorted(((key(e), p) for e, p in group), key=repr)))
            found = self.cache.get(signature)
            if found is None:
                self.steps = 0
                try:
                    found = self._search(list(group), ({}, {}))
                except _GiveUp:
                    answer = None
                    continue
                self.cache[signature] = found
            if not found:
                return False
        return answer

    def _groups(self, parts: list[tuple[ir.Expr, bool]]) -> list[list[tuple[ir.Expr, bool]]]:
        owner: dict[object, int] = {}
        groups: dict[int, list[tuple[ir.Expr, bool]]] = {}
        for index, part in enumerate(parts):
            names = {self._variable(x) for x in _atoms(part[0])}
            joined = {owner[n] for n in names if n in owner}
            members = [part]
            for other in sorted(joined):
                members += groups.pop(other)
            groups[index] = members
            for name, group in list(owner.items()):
                if group in joined:
                    owner[name] = index
            for name in names:
                owner[name] = index
        return list(groups.values())

    def _variable(self, atom: ir.Expr) -> object:
        fact = self._fact(atom)
        return fact[0] if fact is not None else ("opaque", key(atom))

    # ---- the search ----
    def _search(self, todo: list[_Todo], store: _Store) -> bool:
        """Literals first, then the constraints that propagation settles; branch only on the
        "at least k of" (an `or` is at least 1 of) with the fewest open parts."""
        self.steps += 1
        if self.steps > _LIMIT:
            raise _GiveUp
        todo = list(todo)
        goals: list[_Goal] = []
        while True:
            while todo:
                item = todo.pop()
                if isinstance(item, _Goal):
                    goals.append(item)
                    continue
                expr, positive = item
                if isinstance(expr, ir.Not):
                    todo.append((expr.operand, not positive))
                elif isinstance(expr, ir.And | ir.Or):
                    if isinstance(expr, ir.And) == positive:
                        todo.extend((o, positive) for o in expr.operands)
                    else:
                        goals.append(_Goal(1, tuple((o, positive) for o in expr.operands)))
                elif isinstance(expr, ir.AtLeast):
                    count = expr.count if positive else len(expr.operands) - expr.count + 1
                    goals.append(_Goal(count, tuple((o, positive) for o in expr.operands)))
                else:
                    added = self._literal(expr, positive, store)
                    if added is None:
                        return False
                    store = added
            open_goals: list[_Goal] = []
            for goal in goals:
                settled = self._propagate(goal, store)
                if settled is None:
                    return False
                if isinstance(settled, list):
                    todo += settled
                elif settled.count > 0:
                    open_goals.append(settled)
            goals = open_goals
            if todo:
                continue
            if not goals:
                return True
            goal = min(goals, key=lambda g: len(g.parts))
            rest = [g for g in goals if g is not goal]
            (first, positive), others = goal.parts[0], goal.parts[1:]
            return (self._search([*rest, _Goal(goal.count - 1, others), (first, positive)], store)
                    or self._search([*rest, _Goal(goal.count, others), (first, not positive)], store))

    def _propagate(self, goal: _Goal, store: _Store) -> _Goal | list[_Todo] | None:
        """The goal with its decided literals taken out; a list of parts that must all hold
        when no part can be spared; None when it can no longer be met."""
        count = goal.count
        parts: list[tuple[ir.Expr, bool]] = []
        for expr, positive in goal.parts:
            atom, sign = expr, positive
            while isinstance(atom, ir.Not):
                atom, sign = atom.operand, not sign
            if not isinstance(atom, ir.And | ir.Or | ir.AtLeast):
                if self._literal(atom, sign, store) is None:
                    continue  # cannot hold
                if self._literal(atom, not sign, store) is None:
                    count -= 1  # holds already
                    continue
            parts.append((atom, sign))
        if count <= 0:
            return _Goal(0, ())
        if count > len(parts):
            return None
        if count == len(parts):
            return list(parts)
        literal_first = sorted(parts, key=lambda p: isinstance(p[0], ir.And | ir.Or | ir.AtLeast))
        return _Goal(count, tuple(literal_first))

    def _literal(self, expr: ir.Expr, positive: bool, store: _Store) -> _Store | None:
        """The store with one more literal, or None when that contradicts it."""
        if isinstance(expr, ir.Truth):
            return store if expr.value == positive else None
        fact = self._fact(expr)
        if fact is None:  # opaque: contradicts only its own negation
            opaque = key(expr)
            known = store[1].get(opaque)
            if known is not None:
                return store if known == positive else None
            return store[0], {**store[1], opaque: positive}
        name, update = fact
        info = self.fields[name]
        state = store[0].get(name, _FieldState())
        state = update(state, positive)
        if positive:
            state = dataclasses.replace(state, present=True)
        if not state.consistent(info.optional):
            return None
        return {**store[0], name: state}, store[1]

    def _fact(self, expr: ir.Expr) -> tuple[str, _Update] | None:
        """The field a literal constrains and how, or None for a literal kept opaque."""
        if isinstance(expr, Gap):
            name = f"gap {key(expr.value)} {key(expr.anchor)}"
            if name not in self.fields:  # either date may be none, which makes every window false
                optional = any(isinstance(v, ir.FieldRef) and self.fields[v.field.name].optional
                               for v in (expr.value, expr.anchor) if isinstance(v, ir.FieldRef)
                               and v.field.name in self.fields)
                self.fields[name] = _FieldInfo(optional, "gap")
            return name, _gap(expr.op, expr.low, expr.high)
        match expr:
            case ir.FieldRef(scope="patient", field=f) if self._known(f.name):
                return f.name, _flag("value")
            case ir.Compare(op=op, left=ir.FieldRef(scope="patient", field=f), right=ir.Const() as c) \
                    if self._known(f.name):
                info = self.fields[f.name]
                if info.kind in ("bool", "judgment"):
                    assert isinstance(c.value, bool)
                    return f.name, _flag("value", c.value == (op == "="))
                if info.kind == "text":
                    assert isinstance(c.value, str)
                    return f.name, _text(op, c.value)
                return f.name, _number("value", op, self._value(f, c), info.kind in _WHOLE)
            case ir.UlnCompare(op=op, lab=ir.FieldRef(scope="patient", field=f), multiple=multiple) \
                    if self._known(f.name):
                return f.name, _number("uln", op, Fraction(multiple), False)
            case ir.Member(kind="is" | "is_not" | "is_any" as kind, value=ir.FieldRef(scope="patient", field=f),
                           members=members) if self._known(f.name):
                universe = self.fields[f.name].members
                chosen = universe - set(members) if kind == "is_not" else frozenset(members)
                return f.name, _choose(chosen, universe)
            case ir.Member(kind="has", value=ir.FieldRef(scope="patient", field=f), members=(member,)) \
                    if self._known(f.name):
                return f.name, _flag(("has", member))
            case ir.CountCompare(op=op, items=ir.FieldRef(scope="patient", field=f), condition=condition,
                                 number=number) if self._known(f.name):
                return f.name, _number(("count", key(condition)), op, Fraction(number), True, Fraction(0))
            case _:
                return None

    def _known(self, name: str) -> bool:
        info = self.fields.get(name)
        return info is not None and info.kind != "mixed"

    def _value(self, f: ir.Field, c: ir.Const) -> Fraction:
        value = c.value
        if isinstance(value, datetime.date):
            return Fraction(value.toordinal())
        assert isinstance(value, (int, Decimal)) and not isinstance(value, bool)
        scale = self.scales.get((f.name, f.type.unit.text), Fraction(1)) if f.type.unit else Fraction(1)
        return Fraction(value) * scale


_Update: TypeAlias = "Callable[[_FieldState, bool], _FieldState]"


def _flag(name: object, wanted: bool = True) -> _Update:
    def update(state: _FieldState, positive: bool) -> _FieldState:
        value = wanted if positive else not wanted
        if state.flags.get(name, value) != value:
            return dataclasses.replace(state, clash=True)
        return dataclasses.replace(state, flags={**state.flags, name: value})

    return update


def _text(op: str, value: str) -> _Update:
    def update(state: _FieldState, positive: bool) -> _FieldState:
        equal = (op == "=") == positive
        if equal:
            return dataclasses.replace(state, texts=state.texts | {value})
        return dataclasses.replace(state, not_texts=state.not_texts | {value})

    return update


def _number(name: object, op: str, value: Fraction, whole: bool, floor: Fraction | None = None) -> _Update:
    def update(state: _FieldState, positive: bool) -> _FieldState:
        current = state.numbers.get(name)
        if current is None:
            current = _Range(whole)
            if floor is not None:
                current = current.add(">=", floor)
        return dataclasses.replace(
            state, numbers={**state.numbers, name: current.add(op if positive else _NEGATE[op], value)})

    return update


def _gap(op: str, low: int, high: int) -> _Update:
    """A bound that is somewhere in [low, high]: each literal keeps only what holds for every
    bound in it, so a contradiction found is one for every calendar."""
    def update(state: _FieldState, positive: bool) -> _FieldState:
        if positive:
            bound = (op, high if op == "<=" else low)
        else:
            bound = (_NEGATE[op], low if op == "<=" else high)
        return _number("days", bound[0], Fraction(bound[1]), True)(state, True)

    return update


def _choose(chosen: frozenset[str], universe: frozenset[str]) -> _Update:
    def update(state: _FieldState, positive: bool) -> _FieldState:
        allowed = state.members if state.members is not None else universe
        return dataclasses.replace(state, members=allowed & chosen if positive else allowed - chosen)

    return update


def _flatten(expr: ir.Expr, positive: bool) -> list[tuple[ir.Expr, bool]]:
    """The parts of a condition that must all hold, each with the truth it must have."""
    if isinstance(expr, ir.Not):
        return _flatten(expr.operand, not positive)
    if isinstance(expr, ir.And if positive else ir.Or):
        assert isinstance(expr, ir.And | ir.Or)
        return [x for o in expr.operands for x in _flatten(o, positive)]
    if isinstance(expr, ir.Truth):
        return [] if expr.value == positive else [(FALSE, True)]
    return [(expr, positive)]


def _atoms(expr: ir.Expr) -> Iterator[ir.Expr]:
    """The literals of a condition (what the solver reasons about one by one)."""
    if isinstance(expr, ir.Not):
        yield from _atoms(expr.operand)
    elif isinstance(expr, ir.And | ir.Or | ir.AtLeast):
        for operand in expr.operands:
            yield from _atoms(operand)
    elif not isinstance(expr, ir.Truth):
        yield expr


# ---- the warnings ---------------------------------------------------------------------------


def lint(protocol: ir.Protocol) -> list[Diagnostic]:
    """Every warning for a checked protocol, in source order."""
    return sorted(_Linter(protocol).run(), key=Diagnostic.sort_key)


def as_errors(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """The warnings as errors, for `crit check --strict`."""
    return [dataclasses.replace(d, severity="error") for d in diagnostics]


def id_span(criterion: ir.Criterion) -> Span:
    """Where a criterion's id is written (a criterion's span starts at its id)."""
    return _first(criterion.span, len(criterion.id))


def _first(span: Span, width: int) -> Span:
    """The first `width` characters of a span: a declaration's name rather than all of it."""
    return Span(span.file, span.line, span.column, span.line, span.column + width)


@dataclass(frozen=True, slots=True)
class _Visit:
    """A criterion with what must hold for it to be evaluated at all: its ancestors' `when`s."""

    criterion: ir.Criterion
    context: tuple[ir.Expr, ...]
    ancestors: tuple[str, ...]


class _Linter:
    """One protocol's warnings: criteria first (what can never apply, then what is never or
    always met, then contradictions and repeats), then what is declared and never used."""

    def __init__(self, protocol: ir.Protocol) -> None:
        self.protocol = protocol
        self.definitions = {d.name: d for d in protocol.definitions}
        self.solver = Solver([protocol])
        self.out: list[Diagnostic] = []

    def warn(self, code: str, span: Span, message: str, hint: str) -> None:
        self.out.append(Diagnostic(code=code, severity="warning", span=span, message=message, hint=hint))

    def sat(self, *conditions: ir.Expr) -> bool | None:
        return self.solver.satisfiable(*(expand(c, self.definitions) for c in conditions))

    def run(self) -> list[Diagnostic]:
        visits = list(self.visits())
        dead = self.never_applies(visits)
        live = [v for v in visits if not dead & {v.criterion.id, *v.ancestors}]
        never, always = self.never_or_always(live)
        self.contradictions(live, never, always)
        self.duplicates(visits)
        self.unused()
        return self.out

    def visits(self) -> Iterator[_Visit]:
        def walk(c: ir.Criterion, context: tuple[ir.Expr, ...], ancestors: tuple[str, ...]) -> Iterator[_Visit]:
            yield _Visit(c, context, ancestors)
            inner = (*context, c.applies) if c.applies is not None else context
            for child in c.children():
                yield from walk(child, inner, (*ancestors, c.id))

        for top in self.protocol.inclusion + self.protocol.exclusion:
            yield from walk(top, (), ())

    # ---- W004: a `when` that can never apply ----
    def never_applies(self, visits: list[_Visit]) -> set[str]:
        """W004 for every `when` (on a criterion or a line) that no patient can satisfy where it
        stands; returns the criteria that therefore never apply."""
        dead: set[str] = set()
        for visit in visits:
            c = visit.criterion
            if dead & set(visit.ancestors):
                continue
            if c.applies is not None and self.sat(*visit.context, c.applies) is False:
                dead.add(c.id)
                self.warn("W004", c.applies.span, f"criterion {c.id} can never apply",
                          self.never_hint(c.applies, visit.context))
                continue
            gates = (*visit.context, *([c.applies] if c.applies is not None else []))
            self.when_lines([i for i in c.items if isinstance(i, ir.When)], gates, c.id)
        return dead

    def when_lines(self, whens: Sequence[ir.When], gates: tuple[ir.Expr, ...], owner: str) -> None:
        for when in whens:
            if self.sat(*gates, when.condition) is False:
                self.warn("W004", when.condition.span, f"this 'when' in {owner} can never apply",
                          self.never_hint(when.condition, gates))
                continue
            inner = [b for b in when.body if isinstance(b, ir.When)]
            self.when_lines(inner, (*gates, when.condition), owner)

    def never_hint(self, condition: ir.Expr, context: Sequence[ir.Expr]) -> str:
        core = self.core([(c, describe(c)) for c in context], [(condition, describe(condition))])
        if core is None or len(core) <= 1:
            return f"no patient has {describe(condition)}"
        return f"no patient has {_both(core)}"

    def core(self, given: Sequence[tuple[ir.Expr, str]], wanted: Sequence[tuple[ir.Expr, str]],
             fixed: Sequence[ir.Expr] = ()) -> list[str] | None:
        """The texts of a set of conditions that cannot hold together (with `fixed`), made
        small by deleting what is not needed, `given` first; None if they can hold together."""
        parts = [p for g in given for p in _conjuncts(g)]
        keep = [p for w in wanted for p in _conjuncts(w)]
        if self.sat(*fixed, *(e for e, _ in parts + keep)) is not False:
            return None
        for part in list(parts):
            rest = [p for p in parts if p is not part]
            if self.sat(*fixed, *(e for e, _ in rest + keep)) is False:
                parts = rest
        for part in list(keep):
            rest = [p for p in keep if p is not part]
            if rest and self.sat(*fixed, *(e for e, _ in parts + rest)) is False:
                keep = rest
        return [text for _, text in parts + keep]

    # ---- W001, W002: never met, always met ----
    def never_or_always(self, visits: list[_Visit]) -> tuple[set[str], set[str]]:
        never: dict[str, _Visit] = {}
        always: dict[str, _Visit] = {}
        for visit in visits:
            c = visit.criterion
            parts = criterion_parts(c)
            if self.sat(*visit.context, parts.applies) is not True:
                continue
            if self.sat(*visit.context, parts.applies, parts.met) is False:
                never[c.id] = visit
            elif self.sat(*visit.context, parts.applies, neg(parts.met)) is False:
                always[c.id] = visit
        for found, code in ((never, "W001"), (always, "W002")):
            for ident, visit in found.items():
                if any(ident in other.ancestors for other in found.values()):
                    continue  # the sub-criterion that causes it carries the warning
                c = visit.criterion
                if code == "W001":
                    self.warn(code, id_span(c), f"criterion {ident} can never be met", self.never_met_hint(visit))
                else:
                    self.warn(code, id_span(c), f"criterion {ident} is met by every patient it applies to",
                              _always_hint(c, visit))
        return set(never), set(always)

    def never_met_hint(self, visit: _Visit) -> str:
        c = visit.criterion
        if c.combine != "all":
            return "none of its parts can be met"
        given = [(x, describe(x)) for x in visit.context]
        wanted: list[tuple[ir.Expr, str]] = []
        if c.applies is not None:
            wanted.append((c.applies, describe(c.applies)))
        for item in c.items:
            if isinstance(item, ir.Line):
                wanted.append((item.expr, describe(item.expr)))
            elif isinstance(item, ir.When):
                parts = line_parts(item)
                wanted.append((disj(neg(parts.applies), parts.met), _when_text(item)))
            elif isinstance(item, ir.Criterion):
                parts = criterion_parts(item)
                wanted.append((disj(neg(parts.applies), parts.met), f"{item.id} is met"))
        core = self.core(given + wanted, [])
        consequence = ""
        if c.section == "inclusion" and not visit.ancestors and c.applies is None:
            consequence = "; so no patient can be eligible"
        if core is None:
            return "its parts cannot all be met where it applies" + consequence
        if len(core) == 1:
            return f"no patient has {core[0]}{consequence}"
        return f"no patient has {_both(core)}{consequence}"

    # ---- W003: an inclusion whose patients an exclusion always removes ----
    def contradictions(self, visits: list[_Visit], never: set[str], always: set[str]) -> None:
        live = {v.criterion.id for v in visits}
        exclusions = [c for c in self.protocol.exclusion if c.id in live and c.id not in always]
        inclusions: list[tuple[_Visit, ir.Expr]] = []
        for visit in visits:
            if visit.criterion.section != "inclusion" or visit.criterion.id in never:
                continue
            parts = criterion_parts(visit.criterion)
            met = conj(*visit.context, parts.applies, parts.met)
            if self.sat(met):
                inclusions.append((visit, met))
        found: dict[tuple[str, str], tuple[_Visit, ir.Expr]] = {}
        for exclusion in exclusions:
            parts = criterion_parts(exclusion)
            not_excluded = neg(conj(parts.applies, parts.met))
            for visit, met in inclusions:
                if self.sat(met, not_excluded) is False:
                    found[(visit.criterion.id, exclusion.id)] = (visit, not_excluded)
        by_id = {c.id: c for c in self.protocol.exclusion}
        for (ident, exclusion_id), (visit, not_excluded) in found.items():
            if any((other, exclusion_id) in found for other in _descendants(visit.criterion)):
                continue  # a sub-criterion carries it
            hint = f"so no patient who meets {ident} can be eligible"
            exclusion = by_id[exclusion_id]
            lines = [x for x in exclusion.items if not isinstance(x, ir.Note)]
            wanted = [(x.expr, describe(x.expr)) for x in visit.criterion.items if isinstance(x, ir.Line)]
            if len(lines) == 1 and isinstance(lines[0], ir.Line) and exclusion.applies is None:
                core = self.core([], wanted, [*visit.context, not_excluded])
                if core:
                    hint += f": {' and '.join(core)} implies {describe(lines[0].expr)}"
            self.warn("W003", id_span(exclusion),
                      f"every patient who meets inclusion {ident} also meets exclusion {exclusion_id}", hint)

    # ---- W008: the same criterion twice ----
    def duplicates(self, visits: list[_Visit]) -> None:
        seen: dict[object, str] = {}
        for visit in visits:
            c = visit.criterion
            signature = (c.section, _signature(c))
            first = seen.setdefault(signature, c.id)
            if first != c.id:
                self.warn("W008", id_span(c), f"criterion {c.id} has the same conditions as {first}",
                          "they decide the same patients; keep one, or tell them apart")

    # ---- W005, W006, W007: declared but unused ----
    def unused(self) -> None:
        fields: set[str] = set()
        definitions: set[str] = set()
        pending: list[ir.Expr] = []
        for c in self.protocol.criteria():
            if c.applies is not None:
                pending.append(c.applies)
            pending += _item_exprs(c.items)
        while pending:
            expr = pending.pop()
            for kind, used in _uses(expr):
                if kind == "field":
                    fields.add(used)
                elif used not in definitions:
                    definitions.add(used)
                    pending += [line.expr for line in self.definitions[used].lines()]
        source = self.protocol.source
        for f in self.protocol.fields:
            if f.name in fields:
                continue
            name = _first(f.span, len(f.name))
            shared = "" if f.span.file == source else f" (declared in {f.span.file}, which other protocols may share)"
            if f.type.kind == "judgment":
                self.warn("W006", name, f"judgment '{f.name}' is not used by any criterion",
                          f"investigators would record a judgment that decides nothing{shared}; "
                          "use it in a criterion or remove it")
            else:
                self.warn("W005", name, f"field '{f.name}' is not used by any criterion",
                          f"use it in a criterion or remove the declaration{shared}")
        for d in self.protocol.definitions:
            if d.name not in definitions:
                self.warn("W007", _first(d.span, len(f"define {d.name}")),
                          f"definition '{d.name}' is not used by any criterion",
                          "refer to it from a criterion, or remove it")


def _conjuncts(part: tuple[ir.Expr, str]) -> list[tuple[ir.Expr, str]]:
    expr = part[0]
    if isinstance(expr, ir.And) and expr.span != NOWHERE:
        return [p for o in expr.operands for p in _conjuncts((o, describe(o)))]
    return [part]


def _both(texts: Sequence[str]) -> str:
    if len(texts) == 2:
        return f"both {texts[0]} and {texts[1]}"
    return "all of: " + "; ".join(texts)


def _when_text(item: ir.When) -> str:
    return f"when {describe(item.condition)}: " + "; ".join(
        describe(b.expr) if isinstance(b, ir.Line) else _when_text(b) for b in item.body)


def _always_hint(c: ir.Criterion, visit: _Visit) -> str:
    if c.section == "exclusion":
        if not visit.ancestors and c.applies is None:
            return "it excludes every patient, so no patient can be eligible"
        return "every patient it applies to meets it"
    return "it screens no patient out; check its conditions"


def _descendants(c: ir.Criterion) -> list[str]:
    return [d.id for d in c.walk()[1:]]


def _item_exprs(items: Iterable[ir.Line | ir.When | ir.Note | ir.Criterion]) -> list[ir.Expr]:
    out: list[ir.Expr] = []
    for item in items:
        if isinstance(item, ir.Line):
            out.append(item.expr)
        elif isinstance(item, ir.When):
            out.append(item.condition)
            out += _item_exprs(item.body)
    return out


def _signature(c: ir.Criterion) -> object:
    """A criterion's conditions without its id, title and notes (order of parts aside)."""
    parts: list[object] = []
    for item in c.items:
        if isinstance(item, ir.Criterion):
            parts.append(("criterion", _signature(item)))
        elif not isinstance(item, ir.Note):
            parts.append(key(item))
    return (c.combine, c.at_least, key(c.applies), tuple(sorted(parts, key=repr)))


def _uses(expr: ir.Expr) -> Iterator[tuple[str, str]]:
    """("define", name) for each definition the condition uses, ("field", name) for each
    patient field (a list's items are read through the list, which counts as its use)."""
    for node in _nodes(expr):
        if isinstance(node, ir.DefinitionRef):
            yield "define", node.name
        elif isinstance(node, ir.FieldRef) and node.scope == "patient":
            yield "field", node.field.name


def _nodes(expr: object) -> Iterator[object]:
    """Every IR node under `expr` (values included), depth first."""
    yield expr
    if dataclasses.is_dataclass(expr) and not isinstance(expr, type) and not isinstance(expr, ir.Field | ir.Record):
        for f in dataclasses.fields(expr):
            value = getattr(expr, f.name)
            for item in value if isinstance(value, tuple) else (value,):
                if dataclasses.is_dataclass(item):
                    yield from _nodes(item)


__all__ = [
    "FALSE", "TRUE", "Parts", "Solver", "as_errors", "combine", "conj", "criterion_parts", "disj",
    "eligible", "expand", "key", "lint", "neg", "passes", "structure",
]
