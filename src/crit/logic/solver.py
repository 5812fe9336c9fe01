"""The z3 encoding of checked conditions, and the questions lint and diff ask of it.

A complete patient record becomes a z3 model (a field whose facts are all known; an optional
field may be *none*, which makes every condition on it false):

- integers, titers, texts and dates are integers (a text is the number of the literal it
  equals; a date is its proleptic Gregorian ordinal), decimals and quantities exact rationals
  (in the unit of the field's first declaration), a lab value and its own ULN (> 0) two
  rationals, enums a member's index, a set one truth value per member, bools and judgments
  truth values;
- a date window compares ordinals with the window's edge: days and weeks exactly; a month or
  year edge is first only bounded (a month is 28 to 31 days), then pinned to the calendar's
  (the day clamped to the month's end) for every date a model tries (`_solve`), so the
  answer is exact;
- a list is described by "types" of item: for the k conditions the protocols put on its
  items, one symbolic item for each of the 2^k combinations of their truth, with how many
  such items the list holds. Every list has such a description, so this is exact; past
  `MAX_ITEM_CONDITIONS` conditions the list's quantifiers are left opaque.

One z3 solver answers every question: each condition is asserted once behind a literal that
switches it on, and a question is a check under the literals of its conditions.

What the encoding cannot express (a field whose type differs between two versions, a
quantifier inside a list item's condition, more item conditions than the limit) is an opaque
truth value. Opaque parts only ever allow more records than exist, so "no record meets these"
stays a proof, and "some record meets these" is then no witness: asked for a witness, the
solver answers None, as it does when z3 gives up or runs out of time. None is never a finding.
"""

from __future__ import annotations

import datetime
import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any, assert_never

import z3

from crit import ir
from crit.check.units import UnitError, factor
from crit.ir import Unit
from crit.logic.formula import expand, key, neg

DEFAULT_TIMEOUT_MS = 2000
"""Each question's budget; past it the answer is None ("could not decide")."""

MAX_ITEM_CONDITIONS = 4
"""Conditions on one list's items, past which its quantifiers are opaque (2^k symbolic items)."""

_FIRST_DAY = datetime.date.min.toordinal()
_LAST_DAY = datetime.date.max.toordinal()
_SHORT_MONTHS = (4, 6, 9, 11)

_REFINEMENTS = 12  # models tried before a "sat" with calendar months counts as unconfirmed

Term = Any  # a z3 expression (z3 ships no type information)


@dataclass
class _Var:
    """A field as every version of the protocol declares it: one variable for all of them."""

    kind: str
    optional: bool
    members: list[str] = field(default_factory=list)  # enum and set: every member any version has
    unit: Unit | None = None  # the unit of the first declaration, in which the variable is held
    scales: dict[str, Fraction] = field(default_factory=dict)  # another version's unit → factor


@dataclass(frozen=True, slots=True)
class _Item:
    """A symbolic list item: the list's name and the prefix of its variables."""

    list_name: str
    prefix: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """z3's answer to one question: sat (True), unsat (False) or unknown (None), and whether an
    opaque part took part (then sat is no witness)."""

    sat: bool | None
    opaque: bool


class Solver:
    """Decides whether conditions on the patients of some protocols can hold together.

    Given several versions of a protocol (for `crit diff`), a field is the same variable in
    all of them when its name and kind agree: literals are converted to the unit of its first
    declaration, and an enum ranges over every member any version declares.
    """

    def __init__(self, protocols: Sequence[ir.Protocol], *, timeout_ms: int = DEFAULT_TIMEOUT_MS,
                 rlimit: int = 0) -> None:
        self.timeout_ms = timeout_ms
        self.rlimit = rlimit  # z3's deterministic work limit (0: none); tests use it to force a give-up
        self.vars: dict[str, _Var] = {}
        self.texts: dict[str, int] = {}
        self.opaque: dict[object, int] = {}
        self.cache: dict[object, Outcome] = {}
        self.facts: dict[str, list[Term]] = {}  # a variable's name → what every record has of it
        self.shifts: dict[str, tuple[Term, Term, int, str]] = {}  # an edge's name → (date, edge, amount, unit)
        self.terms: dict[tuple[int, str], tuple[ir.Expr, Term, frozenset[str], bool]] = {}
        self.asserted: set[str] = set()  # the variables whose facts z3 holds
        self.indicators: dict[object, tuple[Term, frozenset[str], bool]] = {}  # a condition's switch
        self.item_conditions: dict[str, dict[object, ir.Expr]] = {}
        self.distinct: dict[str, set[object]] = {}  # a list → the (key, condition) of its distinct counts
        self.different: dict[object, int] = {}  # a distinct count's signature → its variable's number
        self.lists: dict[str, _ListDescription | None] = {}
        self.z3 = z3.Solver()  # one for every question: each condition is switched on by a literal
        if rlimit:
            self.z3.set("rlimit", rlimit)
        for protocol in protocols:
            records = {r.name: r for r in protocol.records}
            for f in protocol.fields:
                self._declare(f.name, f)
                record = records.get(f.type.record) if isinstance(f.type, ir.ListOf) else None
                for item_field in record.fields if record is not None else ():
                    self._declare(_item_path(f.name, item_field.name), item_field)
        for protocol in protocols:
            definitions = {d.name: d for d in protocol.definitions}
            for c in protocol.criteria():
                for expr in _criterion_exprs(c):
                    self._collect(expand(expr, definitions))

    def _collect(self, condition: ir.Expr) -> bool:
        """Note the conditions on list items; True if one is new (a list description to redo)."""
        new = False
        for node in _quantifiers(condition):
            if isinstance(node, ir.DistinctCount) and node.items.scope == "patient":
                self.distinct.setdefault(node.items.field.name, set()).add(
                    (node.key.name, None if node.condition is None else key(node.condition)))
            if node.items.scope == "patient" and node.condition is not None:
                known = self.item_conditions.setdefault(node.items.field.name, {})
                new = new or key(node.condition) not in known
                known.setdefault(key(node.condition), node.condition)
        return new

    def _declare(self, path: str, f: ir.Field) -> None:
        t = f.type
        members = list(t.enum.member_names()) if isinstance(t, (ir.EnumOf, ir.SetOf)) else []
        unit = t.unit if isinstance(t, ir.Measure) else None
        var = self.vars.get(path)
        if var is None:
            self.vars[path] = _Var(t.kind, f.optional, members, unit)
            return
        var.optional = var.optional or f.optional
        var.members += [m for m in members if m not in var.members]
        if var.kind != t.kind:
            var.kind = "mixed"  # the versions disagree on the type: its conditions stay opaque
        elif var.unit is not None and unit is not None and var.unit.text != unit.text:
            try:
                var.scales[unit.text] = factor(unit, var.unit)
            except UnitError:
                var.kind = "mixed"

    # ---- questions ----
    def check(self, *conditions: ir.Expr, witness: bool = False) -> Outcome:
        """z3's answer on whether some complete record meets every condition (already `expand`ed);
        with `witness`, a "sat" is worked on until its model keeps the calendar."""
        keys = [key(c) for c in conditions]
        signature = (witness, *keys)
        found = self.cache.get(signature)
        if found is None:
            if any(self._collect(c) for c in conditions):  # descriptions of lists start afresh
                self.lists.clear()
                self.terms.clear()
                self.indicators.clear()
            switches = [self._switch(k, c) for k, c in zip(keys, conditions, strict=True)]
            names = sorted(set().union(*(names for _, names, _ in switches)))
            fresh = [n for n in names if n not in self.asserted]
            self.asserted.update(fresh)
            self.z3.add(*(f for n in fresh for f in self.facts.get(n, ())))
            shifts = [self.shifts[n] for n in names if n in self.shifts]
            sat, confirmed = _solve(self.z3, [s for s, _, _ in switches], shifts, self.timeout_ms, refine=witness)
            found = self.cache[signature] = Outcome(sat, any(o for _, _, o in switches) or not confirmed)
        return found

    def _switch(self, signature: object, condition: ir.Expr) -> tuple[Term, frozenset[str], bool]:
        """The literal that switches the condition on, the variables it uses, and whether it is opaque."""
        found = self.indicators.get(signature)
        if found is None:
            encoder = _Encoder(self)
            term = encoder.expr(condition, None)
            switch = z3.Bool(f"condition#{len(self.cache)}#{len(self.indicators)}")
            self.z3.add(z3.Implies(switch, term))
            found = self.indicators[signature] = (switch, frozenset(encoder.names), encoder.opaque)
        return found

    def satisfiable(self, *conditions: ir.Expr, witness: bool = False) -> bool | None:
        """Whether some complete record meets every condition: False is a proof that none does;
        True, with `witness`, means z3 built one (without, only that none was ruled out);
        None, that crit could not decide."""
        found = self.check(*conditions, witness=witness)
        if found.sat and witness and found.opaque:
            return None
        return found.sat

    def implies(self, a: ir.Expr, b: ir.Expr) -> bool | None:
        """Whether every complete record meeting `a` meets `b`: False only with a record that
        meets `a` and not `b`; None when crit could not decide."""
        found = self.satisfiable(a, neg(b), witness=True)
        return None if found is None else not found


# ---- the encoding -----------------------------------------------------------------------------


class _Encoder:
    """Encodes conditions for the solver, noting the variables each term uses (their facts go
    to z3 with the first question that needs them) and whether an opaque part took part."""

    def __init__(self, solver: Solver) -> None:
        self.solver = solver
        self.names: set[str] = set()
        self.opaque = False

    # ---- conditions ----
    def expr(self, e: ir.Expr, item: _Item | None) -> Term:
        """The condition's z3 term, kept by the solver for its next questions."""
        slot = (id(e), item.prefix if item is not None else "")
        kept = self.solver.terms.get(slot)
        if kept is not None and kept[0] is e:
            self.names |= kept[2]
            self.opaque = self.opaque or kept[3]
            return kept[1]
        outer = self.names, self.opaque
        self.names, self.opaque = set(), False
        term = self.encode(e, item)
        self.solver.terms[slot] = (e, term, frozenset(self.names), self.opaque)
        self.names, self.opaque = outer[0] | self.names, outer[1] or self.opaque
        return term

    def encode(self, e: ir.Expr, item: _Item | None) -> Term:
        match e:
            case ir.Truth(value=value):
                return z3.BoolVal(value)
            case ir.Not(operand=operand):
                return z3.Not(self.expr(operand, item))
            case ir.And(operands=operands):
                return z3.And(*(self.expr(o, item) for o in operands))
            case ir.Or(operands=operands):
                return z3.Or(*(self.expr(o, item) for o in operands))
            case ir.AtLeast(count=count, operands=operands):
                return z3.Sum(*(z3.If(self.expr(o, item), 1, 0) for o in operands)) >= count \
                    if operands else z3.BoolVal(count <= 0)
            case ir.FieldRef():
                var, name = self.field(e, item)
                if var is None or var.kind not in ("bool", "judgment"):
                    return self.unknown(e, item)
                return z3.And(self.present(var, name), z3.Bool(name))
            case ir.Compare(op=op, left=left, right=right):
                return self.compare(e, op, left, right, item)
            case ir.Between(value=value, low=low, high=high):
                return z3.And(self.compare(e, ">=", value, low, item), self.compare(e, "<=", value, high, item))
            case ir.UlnCompare(op=op, lab=lab, multiple=multiple):
                var, name = self.field(lab, item)
                if var is None or var.kind != "lab":
                    return self.unknown(e, item)
                limit = _rational(Fraction(multiple)) * z3.Real(name + "#uln")
                return z3.And(self.present(var, name), _holds(z3.Real(name), op, limit))
            case ir.Member():
                return self.member(e, item)
            case ir.Window():
                return self.window(e, item)
            case ir.NoneRecorded():
                return self.none_recorded(e, item)
            case ir.Overlaps() | ir.OngoingAt() | ir.Lasted():
                return self.interval(e, item)
            case ir.Quantified() | ir.CountCompare():
                return self.quantifier(e, item)
            case ir.NumCompare():
                return self.num_compare(e, item)
            case ir.DistinctCount():
                return self.distinct_count(e, item)
            case _:  # a definition not written out
                return self.unknown(e, item)

    def unknown(self, e: ir.Expr, item: _Item | None) -> Term:
        """A truth value the encoding does not explain: any record may have it either way."""
        self.opaque = True
        number = self.solver.opaque.setdefault(key(e), len(self.solver.opaque))
        return z3.Bool(f"opaque#{number}" + (f"@{item.prefix}" if item is not None else ""))

    # ---- fields ----
    def field(self, ref: ir.FieldRef, item: _Item | None) -> tuple[_Var | None, str]:
        """The field's variable information and the name of its variable in this question;
        None when the encoding cannot reason about it."""
        if ref.scope == "item":
            if item is None:
                return None, ""
            path, name = _item_path(item.list_name, ref.field.name), f"{item.prefix}.{ref.field.name}"
        else:
            path = name = ref.field.name
        var = self.solver.vars.get(path)
        if var is None or var.kind == "mixed":
            return None, ""
        if name not in self.solver.facts:
            self.solver.facts[name] = _ranges(var, name)
        self.names.add(name)
        return var, name

    def present(self, var: _Var, name: str) -> Term:
        """The field is not none (an optional field's "none recorded" makes conditions on it false)."""
        return z3.Not(z3.Bool(name + "#none")) if var.optional else z3.BoolVal(True)

    def term(self, value: ir.Value, item: _Item | None, compared: ir.FieldRef) -> tuple[Term, Term] | None:
        """A value as a z3 term (in its variable's unit) and the condition that it is there; a
        literal is in the unit of the field it is compared with, as this version declares it."""
        if isinstance(value, ir.FieldRef):
            var, name = self.field(value, item)
            if var is None:
                return None
            return _variable(var, name), self.present(var, name)
        constant = value.value
        if isinstance(constant, bool):
            return z3.BoolVal(constant), z3.BoolVal(True)
        if isinstance(constant, datetime.date):
            return z3.IntVal(constant.toordinal()), z3.BoolVal(True)
        if isinstance(constant, str):
            return z3.IntVal(self.solver.texts.setdefault(constant, len(self.solver.texts))), z3.BoolVal(True)
        number = Fraction(constant)
        path = compared.field.name if compared.scope == "patient" or item is None \
            else _item_path(item.list_name, compared.field.name)
        var = self.solver.vars.get(path)
        t = compared.field.type
        if var is not None and isinstance(t, ir.Measure):
            number *= var.scales.get(t.unit.text, Fraction(1))
        return _rational(number), z3.BoolVal(True)

    def compare(self, e: ir.Expr, op: str, left: ir.Value, right: ir.Value, item: _Item | None) -> Term:
        compared = left if isinstance(left, ir.FieldRef) else right
        assert isinstance(compared, ir.FieldRef)
        a, b = self.term(left, item, compared), self.term(right, item, compared)
        if a is None or b is None:
            return self.unknown(e, item)
        return z3.And(a[1], b[1], _holds(a[0], op, b[0]))

    # ---- derived values: arithmetic over rationals ----
    def num_compare(self, e: ir.NumCompare, item: _Item | None) -> Term:
        """Both sides as rational terms: false when an operand is none; a division by zero
        leaves the comparison unknown, which any record may have either way (opaque)."""
        left, right = self.num(e.left, item), self.num(e.right, item)
        if left is None or right is None:
            return self.unknown(e, item)
        none = z3.Or(left[1], right[1])
        held = z3.And(z3.Not(none), _holds(left[0], e.op, right[0]))
        zero = z3.simplify(z3.Or(left[2], right[2]))
        if z3.is_false(zero) or not self.possible(zero):
            return held
        return z3.If(zero, self.unknown(e, item), held)

    def possible(self, condition: Term) -> bool:
        """Whether some record can meet `condition`, as far as what every record has of the
        fields used so far tells (a division by zero that no record can reach is no unknown)."""
        probe = z3.Solver()
        probe.set("timeout", self.solver.timeout_ms)
        for name in self.names:
            probe.add(*self.solver.facts.get(name, []))
        probe.add(condition)
        return bool(probe.check() != z3.unsat)

    def num(self, v: ir.Num, item: _Item | None) -> tuple[Term, Term, Term] | None:
        """A derived value as (its value, whether an operand is none, whether it divides by
        zero); None when the encoding cannot reason about an operand."""
        match v:
            case ir.Const(value=constant):
                assert isinstance(constant, int | Decimal | Fraction) and not isinstance(constant, bool)
                return _real(Fraction(constant)), z3.BoolVal(False), z3.BoolVal(False)
            case ir.FieldRef():
                return self.num_field(v, item, None)
            case ir.UlnOf(lab=lab, multiple=multiple):
                return self.num_field(lab, item, Fraction(multiple))
            case ir.Arith(op=op, left=left, right=right):
                a, b = self.num(left, item), self.num(right, item)
                if a is None or b is None:
                    return None
                none, zero = z3.Or(a[1], b[1]), z3.Or(a[2], b[2])
                if op == "+":
                    return a[0] + b[0], none, zero
                if op == "-":
                    return a[0] - b[0], none, zero
                if op == "×":
                    return a[0] * b[0], none, zero
                return a[0] / b[0], none, z3.Or(zero, b[0] == 0)
            case ir.Convert(value=inner, factor=factor_):
                found = self.num(inner, item)
                if found is None:
                    return None
                return found[0] * _real(Fraction(factor_)), found[1], found[2]
            case ir.ValueRef(value=inner):
                return self.num(inner, item)
            case ir.Choice(branches=branches, otherwise=otherwise):
                chosen = self.num(otherwise, item)
                for condition, value in reversed(branches):
                    branch = self.num(value, item)
                    if chosen is None or branch is None:
                        return None
                    test = self.expr(condition, item)
                    chosen = (z3.If(test, branch[0], chosen[0]), z3.If(test, branch[1], chosen[1]),
                              z3.If(test, branch[2], chosen[2]))
                return chosen
            case ir.Equivalent(table=table, dose=dose, agent=agent):
                found = self.num(dose, item)
                var, name = self.field(agent, item)
                if found is None or var is None or var.kind != "enum":
                    return None
                factor = _real(Fraction(0))  # no member is left out: the checker insists on every one
                index = z3.Int(name)
                for member, rate in table.factors:
                    factor = z3.If(index == var.members.index(member), _real(Fraction(rate)), factor)
                return found[0] * factor, z3.Or(found[1], z3.Not(self.present(var, name))), found[2]
            case _:
                assert_never(v)

    def num_field(self, ref: ir.FieldRef, item: _Item | None, uln: Fraction | None) -> tuple[Term, Term, Term] | None:
        """A numeric field (or `uln` × its ULN) in this version's unit of the field."""
        var, name = self.field(ref, item)
        if var is None or var.kind not in ("integer", "decimal", "quantity", "lab"):
            return None
        t = ref.field.type
        scale = var.scales.get(t.unit.text, Fraction(1)) if isinstance(t, ir.Measure) else Fraction(1)
        value = z3.Real(name + "#uln") * _real(uln) if uln is not None else _variable(var, name)
        if z3.is_int(value):
            value = z3.ToReal(value)
        if scale != 1:
            value = value / _real(scale)
        return value, z3.Not(self.present(var, name)), z3.BoolVal(False)

    def member(self, e: ir.Member, item: _Item | None) -> Term:
        var, name = self.field(e.value, item)
        if var is None or var.kind != ("enum" if e.kind.startswith("is") else "set"):
            return self.unknown(e, item)
        if var.kind == "set":
            has = [z3.Bool(f"{name}#has#{m}") for m in e.members]
            held = z3.And(*has) if e.kind == "has_all" else z3.Or(*has)
        else:
            value = z3.Int(name)
            held = z3.Or(*(value == var.members.index(m) for m in e.members))
            if e.kind == "is_not":
                held = z3.Not(held)
        return z3.And(self.present(var, name), held)

    # ---- dates ----
    def window(self, e: ir.Window, item: _Item | None) -> Term:
        reference = e.value if isinstance(e.value, ir.FieldRef) else e.anchor
        if not isinstance(reference, ir.FieldRef):  # two literal dates: decided by the calendar
            return z3.BoolVal(_window_holds(e))
        value, anchor = self.term(e.value, item, reference), self.term(e.anchor, item, reference)
        if value is None or anchor is None:
            return self.unknown(e, item)
        amount = -e.amount if e.direction == "before" else e.amount
        edge = self.shifted(e.anchor, anchor[0], amount, e.unit, item)
        return z3.And(value[1], anchor[1], _inside(e.kind, value[0], anchor[0], edge, amount < 0))

    def none_recorded(self, e: ir.NoneRecorded, item: _Item | None) -> Term:
        var, name = self.field(e.value, item)
        if var is None:
            return self.unknown(e, item)
        return z3.Bool(name + "#none") if var.optional else z3.BoolVal(False)

    def interval(self, e: ir.Overlaps | ir.OngoingAt | ir.Lasted, item: _Item | None) -> Term:
        """An interval is two dates, its start and its end (the calendar's last day: ongoing)."""
        var, name = self.field(e.value, item)
        anchor = self.term(e.anchor, item, e.value) if isinstance(e.anchor, ir.Const) else None
        if isinstance(e.anchor, ir.FieldRef):
            anchor_var, anchor_name = self.field(e.anchor, item)
            anchor = None if anchor_var is None else (_variable(anchor_var, anchor_name),
                                                      self.present(anchor_var, anchor_name))
        if var is None or var.kind != "interval" or anchor is None:
            return self.unknown(e, item)
        start, end, day = z3.Int(name + "#start"), z3.Int(name + "#end"), anchor[0]
        if isinstance(e, ir.OngoingAt):
            held = z3.And(start <= day, day <= end)
        elif isinstance(e, ir.Overlaps):
            amount = -e.amount if e.direction == "before" else e.amount
            edge = self.shifted(e.anchor, day, amount, e.unit, item)
            first, last = (edge, day) if amount < 0 else (day, edge)
            held = z3.And(start <= last, end >= first)
        else:
            edge = self.shifted(e.value, start, e.amount, e.unit, item)
            last = z3.If(end < day, end, day)
            held = {"at_least": edge <= last, "more_than": edge < last, "less_than": last < edge,
                    "at_most": last <= edge}[e.kind]
        return z3.And(self.present(var, name), anchor[1], held)

    def shifted(self, anchor: ir.Value, day: Term, amount: int, unit: str, item: _Item | None) -> Term:
        """The anchor moved by `amount` units, clamped to the calendar as the runtime does."""
        if isinstance(anchor, ir.Const):
            assert isinstance(anchor.value, datetime.date)
            return z3.IntVal(_shift(anchor.value, amount, unit).toordinal())
        if unit in ("days", "weeks"):
            moved = day + amount * (7 if unit == "weeks" else 1)
            return z3.If(moved > _LAST_DAY, _LAST_DAY, z3.If(moved < _FIRST_DAY, _FIRST_DAY, moved))
        name = f"{day}#{amount}{unit}"
        edge = z3.Int(name)
        if name not in self.solver.facts:  # bounds the calendar keeps; `_solve` pins the rest
            low, high = (amount * 365, amount * 366) if unit == "years" else (amount * 28, amount * 31)
            low, high = min(low, high), max(low, high)
            near_end = day + high > _LAST_DAY if amount > 0 else day + low < _FIRST_DAY
            overflow = z3.And(near_end, edge == (_LAST_DAY if amount > 0 else _FIRST_DAY))
            self.solver.facts[name] = [z3.Or(z3.And(day + low <= edge, edge <= day + high), overflow)]
            self.solver.shifts[name] = (day, edge, amount, unit)
        self.names.add(name)
        return edge

    # ---- lists ----
    def quantifier(self, e: ir.Quantified | ir.CountCompare, item: _Item | None) -> Term:
        if e.items.scope != "patient" or item is not None:
            return self.unknown(e, item)  # a list inside a list item
        description = self.description(e.items)
        if description is None:
            return self.unknown(e, item)
        if isinstance(e, ir.CountCompare):
            return _holds(description.count(e.condition), e.op, z3.IntVal(e.number))
        if e.kind == "any":
            return description.count(e.condition) >= 1
        if e.condition is None:
            return z3.BoolVal(True)
        return description.count(e.condition, holding=False) == 0

    def distinct_count(self, e: ir.DistinctCount, item: _Item | None) -> Term:
        """How many different keys the items meeting the condition hold: any number from 1 (0 with
        no such item) to how many there are, at most an enum's members. Exact when nothing else
        asked of the list's items mentions the key and the list has this one distinct count (the
        keys are then free to repeat or differ); otherwise only the bounds are known, which keeps
        "no patient" a proof but makes "some patient" no witness (opaque)."""
        if e.items.scope != "patient" or item is not None:
            return self.unknown(e, item)
        description = self.description(e.items)
        if description is None:
            return self.unknown(e, item)
        name = e.items.field.name
        mentioned = any(isinstance(n, ir.FieldRef) and n.scope == "item" and n.field.name == e.key.name
                        for c in self.solver.item_conditions.get(name, {}).values() for n in ir.walk(c))
        if mentioned or len(self.solver.distinct.get(name, ())) > 1:
            self.opaque = True
        matching = description.count(e.condition)
        signature = (description.name, e.key.name, None if e.condition is None else key(e.condition))
        found = self.solver.different.setdefault(signature, len(self.solver.different))
        different = z3.Int(f"{description.name}#different#{e.key.name}#{found}")
        bounds = [different <= matching, z3.Implies(matching >= 1, different >= 1),
                  z3.Implies(matching == 0, different == 0)]
        if isinstance(e.key.type, ir.EnumOf):
            bounds.append(different <= len(e.key.type.enum.members))
        return z3.And(*bounds, _holds(different, e.op, z3.IntVal(e.number)))

    def description(self, items: ir.FieldRef) -> _ListDescription | None:
        name = items.field.name
        lists = self.solver.lists
        if name not in lists:
            var = self.solver.vars.get(name)
            conditions = list(self.solver.item_conditions.get(name, {}).values())
            if var is None or var.kind != "list" or len(conditions) > MAX_ITEM_CONDITIONS:
                lists[name] = None
            else:
                lists[name] = _ListDescription(self, name, conditions)
        found = lists[name]
        if found is not None:
            self.names.add(found.name)
        return found


class _ListDescription:
    """A list as how many items it holds of each type, a type being which of the question's
    item conditions an item meets; one symbolic item of each type stands for them all."""

    def __init__(self, encoder: _Encoder, name: str, conditions: list[ir.Expr]) -> None:
        self.keys = [key(c) for c in conditions]
        self.counts: dict[tuple[bool, ...], Term] = {}
        self.name = f"{name}#{len(encoder.solver.facts)}"  # a new description has new variables
        facts: list[Term] = []
        for truth in itertools.product((True, False), repeat=len(conditions)):
            label = self.name + "#" + "".join("1" if t else "0" for t in truth)
            count = z3.Int(f"{label}#count")
            item = _Item(name, label)
            meets = [encoder.expr(c, item) if t else z3.Not(encoder.expr(c, item))
                     for c, t in zip(conditions, truth, strict=True)]
            facts += [count >= 0, z3.Implies(count > 0, z3.And(*meets))]
            self.counts[truth] = count
        encoder.solver.facts[self.name] = facts

    def count(self, condition: ir.Expr | None, holding: bool = True) -> Term:
        """How many items meet (or, not `holding`, fail) the condition; all items without one."""
        if condition is None:
            chosen = list(self.counts.values())
        else:
            index = self.keys.index(key(condition))
            chosen = [n for truth, n in self.counts.items() if truth[index] == holding]
        return z3.Sum(*chosen) if chosen else z3.IntVal(0)


# ---- helpers -----------------------------------------------------------------------------------


def _solve(solver: Any, switches: Sequence[Term], shifts: Sequence[tuple[Term, Term, int, str]],
           timeout_ms: int, refine: bool) -> tuple[bool | None, bool]:
    """z3's answer, and whether a "sat" is confirmed by a model that keeps the calendar
    (unless asked to `refine`, a "sat" with calendar months stays unconfirmed).

    The edge of a month or year window is only bounded at first (28 to 31 days a month), so
    "unsat" is a proof. A model's edges are then checked against the calendar; where one is
    off, the edge is pinned to the calendar's for every day of that anchor's month (a linear
    fact) and z3 asked again, first with the model's dates held where they were (so that it
    need not wander to other months), until a model keeps the calendar (a witness) or the
    rounds run out (sat, unconfirmed). The question's time budget covers every round."""
    deadline = time.monotonic() + timeout_ms / 1000
    held: list[Term] = []
    for _ in range(_REFINEMENTS):
        left = int((deadline - time.monotonic()) * 1000)
        if left <= 0:
            return None, False
        solver.set("timeout", left)
        answer = solver.check(*switches, *held)
        if answer == z3.unsat and held:
            held = []
            continue
        if answer != z3.sat:
            return (False, True) if answer == z3.unsat else (None, False)
        if shifts and not refine:
            return True, False
        model = solver.model()
        pins = []
        for day, edge, amount, unit in shifts:
            ordinal = model.eval(day, model_completion=True).as_long()
            true = _shift(datetime.date.fromordinal(ordinal), amount, unit).toordinal()
            if model.eval(edge, model_completion=True).as_long() != true:
                pins.append(_month_pin(day, edge, ordinal, amount, unit))
        if not pins:
            return True, True
        solver.add(*pins)
        held = [day == model.eval(day, model_completion=True) for day in {str(d): d for d, _, _, _ in shifts}.values()]
    return True, False


def _month_pin(day: Term, edge: Term, ordinal: int, amount: int, unit: str) -> Term:
    """The calendar's edge for every date in the month of `ordinal`: the same day of the
    shifted month, clamped to its end."""
    date = datetime.date.fromordinal(ordinal)
    first = date.replace(day=1).toordinal()
    last = first + _days_in_month_of(date.year, date.month) - 1
    inside = z3.And(first <= day, day <= last)
    year = (date.year * 12 + date.month - 1 + amount * (12 if unit == "years" else 1)) // 12
    if not 1 <= year <= 9999:  # past the calendar's ends, as the runtime clamps it
        return z3.Implies(inside, edge == (_LAST_DAY if amount > 0 else _FIRST_DAY))
    shifted = _shift(date.replace(day=1), amount, unit)
    length = _days_in_month_of(shifted.year, shifted.month)
    offset = day - first  # the day of the month, from 0
    start = shifted.toordinal()
    return z3.Implies(inside, edge == z3.If(offset < length, start + offset, start + length - 1))


def _item_path(list_name: str, field_name: str) -> str:
    return f"{list_name}[].{field_name}"


def _criterion_exprs(c: ir.Criterion) -> Iterator[ir.Expr]:
    """The conditions written in a criterion (not in its sub-criteria)."""
    if c.applies is not None:
        yield c.applies
    pending: list[object] = list(c.items)
    while pending:
        item = pending.pop()
        if isinstance(item, ir.Line):
            yield item.expr
        elif isinstance(item, ir.When):
            yield item.condition
            pending += item.body


def _quantifiers(expr: ir.Expr) -> Iterator[ir.Quantified | ir.CountCompare | ir.DistinctCount]:
    """The quantifiers over lists in a condition (not those inside a list item's condition)."""
    match expr:
        case ir.Quantified() | ir.CountCompare() | ir.DistinctCount():
            yield expr
        case ir.Not(operand=operand):
            yield from _quantifiers(operand)
        case ir.And(operands=operands) | ir.Or(operands=operands) | ir.AtLeast(operands=operands):
            for operand in operands:
                yield from _quantifiers(operand)
        case _:
            pass


def _variable(var: _Var, name: str) -> Term:
    if var.kind in ("bool", "judgment"):
        return z3.Bool(name)
    if var.kind in ("decimal", "quantity", "lab"):
        return z3.Real(name)
    return z3.Int(name)  # integer, titer, date, text, enum


def _ranges(var: _Var, name: str) -> list[Term]:
    """The values a record can hold (numbers are unbounded: records cap them far from any threshold)."""
    if var.kind == "date":
        day = z3.Int(name)
        return [day >= _FIRST_DAY, day <= _LAST_DAY]
    if var.kind == "interval":
        start, end = z3.Int(name + "#start"), z3.Int(name + "#end")
        return [start >= _FIRST_DAY, start <= end, end <= _LAST_DAY]
    if var.kind == "titer":
        return [z3.Int(name) >= 1]
    if var.kind == "enum":
        index = z3.Int(name)
        return [index >= 0, index < len(var.members)]
    if var.kind == "lab":
        return [z3.Real(name + "#uln") > 0]
    return []


def _rational(value: Fraction) -> Term:
    if value.denominator == 1:
        return z3.IntVal(value.numerator)
    return z3.RealVal(f"{value.numerator}/{value.denominator}")


def _real(value: Fraction) -> Term:
    """A rational as a z3 real, so that `/` divides exactly (an integer term would truncate)."""
    return z3.RealVal(f"{value.numerator}/{value.denominator}")


def _holds(a: Term, op: str, b: Term) -> Term:
    match op:
        case ">=":
            return a >= b
        case "<=":
            return a <= b
        case ">":
            return a > b
        case "<":
            return a < b
        case "=":
            return a == b
        case _:
            return a != b


def _shift(day: datetime.date, amount: int, unit: str) -> datetime.date:
    """The runtime's calendar: days and weeks exactly, months and years clamped to the month's
    end, and out of range at the ends of the calendar."""
    try:
        if unit in ("days", "weeks"):
            return day + datetime.timedelta(days=amount * (7 if unit == "weeks" else 1))
        year, month = divmod(day.year * 12 + day.month - 1 + amount * (12 if unit == "years" else 1), 12)
        last = _days_in_month_of(year, month + 1)
        return datetime.date(year, month + 1, min(day.day, last))
    except (OverflowError, ValueError):
        return datetime.date.max if amount > 0 else datetime.date.min


def _days_in_month_of(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in _SHORT_MONTHS else 31


def _window_holds(e: ir.Window) -> bool:
    assert isinstance(e.value, ir.Const) and isinstance(e.anchor, ir.Const)
    day, anchor = e.value.value, e.anchor.value
    assert isinstance(day, datetime.date) and isinstance(anchor, datetime.date)
    amount = -e.amount if e.direction == "before" else e.amount
    edge = _shift(anchor, amount, e.unit)
    held: bool = _inside(e.kind, day, anchor, edge, amount < 0)
    return held


def _inside(kind: str, day: Any, anchor: Any, edge: Any, before: bool) -> Any:
    """A date in a window from its anchor to its edge (dates or z3 terms): `within` and `at
    least` inclusive at the edge, `less than` and `more than` strict; the anchor always in."""
    both = z3.And if not isinstance(day, datetime.date) else (lambda a, b: a and b)
    if before:
        return {"within": both(edge <= day, day <= anchor), "less_than": both(edge < day, day <= anchor),
                "at_least": day <= edge, "more_than": day < edge}[kind]
    return {"within": both(anchor <= day, day <= edge), "less_than": both(anchor <= day, day < edge),
            "at_least": day >= edge, "more_than": day > edge}[kind]


__all__ = ["DEFAULT_TIMEOUT_MS", "MAX_ITEM_CONDITIONS", "Outcome", "Solver"]
