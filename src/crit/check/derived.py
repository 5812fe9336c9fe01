"""Checking derived values: arithmetic, named values (`define bmi … = …`), `(weight in kg)`,
values chosen by condition, and comparisons of them.

Units are checked by dimension: a sum's parts measure the same thing, a product's dimension is
its factors' together, and a comparison's two sides measure the same thing. Every operand is
brought to a common unit by an exact factor (a `Convert` node), so the evaluators compare
plain numbers; comparisons happen in the unit the author wrote on the literal, if any.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any, Protocol, assert_never

from crit import ast, ir
from crit.check.dimensions import PLAIN_NUMBER, Measure, combine, describe, measure, product_text
from crit.check.names import did_you_mean
from crit.check.units import UnitError, exact_decimal, parse_unit
from crit.frozen import frozen

# The checker's scope (patient fields, definitions, a list item's record), as it passes it.
_Scope = Any


class _Checker(Protocol):
    """What this half of the checker asks of the other."""

    def error(self, code: str, span: ast.Span, message: str, hint: str | None = None) -> None: ...

    def lookup(self, ref: ast.Ref, scope: _Scope) -> ir.FieldRef | ast.Define | None: ...

    def lookup_quiet(self, ref: ast.Ref, scope: _Scope) -> ir.FieldRef | ast.Define | None: ...

    def condition(self, e: ast.Expr, scope: _Scope) -> ir.Expr: ...

    def patient_scope(self) -> _Scope: ...



@frozen
class Checked:
    num: ir.Num
    measure: Measure


def is_derived(e: ast.Expr, values: dict[str, ast.DefineValue], scope: _Scope) -> bool:
    """Whether a comparison's side needs the arithmetic checker: a calculation, a chosen value,
    `(x in unit)`, or the name of a derived value (not hidden by a list item's field)."""
    if isinstance(e, ast.Arith | ast.NumberIn | ast.Choice | ast.Equivalent):
        return True
    if isinstance(e, ast.Ref) and e.name in values:
        shadowed = scope.item is not None and any(f.name == e.name for f in scope.item.fields)
        return not shadowed and e.name not in scope.fields
    return False


class Derived:
    """The arithmetic half of the checker; reports through the checker's diagnostics."""

    def __init__(self, checker: _Checker) -> None:
        self.checker = checker
        self.declared: dict[str, ast.DefineValue] = {}
        self.checked: dict[str, Checked | None] = {}
        self.order: list[str] = []
        self.checking: list[str] = []
        self.tables: dict[str, ir.EquivalenceTable] = {}

    def error(self, code: str, span: ast.Span, message: str, hint: str) -> None:
        self.checker.error(code, span, message, hint)

    # ---- named values ----
    def declare(self, define: ast.DefineValue) -> bool:
        if define.name in self.declared:
            self.error("E102", define.span, f"'{define.name}' is declared twice",
                       "a derived value needs a name no field or definition has")
            return False
        self.declared[define.name] = define
        return True

    def declare_table(self, decl: ast.EquivalenceDecl, enums: Mapping[str, ir.EnumType]) -> None:
        """An equivalence table: a positive factor for every member of its enum, each once."""
        if decl.name in self.tables:
            self.error("E102", decl.span, f"equivalence table '{decl.name}' is declared twice",
                       "rename one of them, or import the schema only once")
            return
        enum = enums.get(decl.enum.name)
        if enum is None:
            self.error("E213", decl.enum.span, f"unknown enum '{decl.enum.name}'",
                       "an equivalence table lists the members of an enum: declare the agents with 'enum'")
            return
        members = enum.member_names()
        factors: dict[str, Decimal] = {}
        for member, number in decl.rows:
            if member.name not in members:
                self.error("E213", member.span, f"'{member.name}' is not a member of {enum.name}",
                           f"{enum.name} has: " + ", ".join(members))
            elif member.name in factors:
                self.error("E213", member.span, f"'{member.name}' has two factors in '{decl.name}'",
                           "give each agent one factor")
            elif number.value <= 0:
                self.error("E213", number.span, f"the factor of '{member.name}' is {number.text}",
                           "a factor says how much of the reference agent one unit of this agent is worth, "
                           "so it is greater than 0")
            else:
                factors[member.name] = number.value
        missing = [m for m in members if m not in factors and all(m != r.name for r, _ in decl.rows)]
        if missing:
            self.error("E213", decl.span, f"equivalence table '{decl.name}' has no factor for "
                       + ", ".join(missing),
                       f"add a row for each member of {enum.name}: '{missing[0]} FACTOR', its worth in the "
                       "reference agent")
        self.tables[decl.name] = ir.EquivalenceTable(
            decl.name, decl.label, enum, tuple((m, factors[m]) for m in members if m in factors), decl.span)

    def check_all(self, scope: _Scope) -> None:
        for name in self.declared:
            self.value(name, scope)

    def definitions(self) -> tuple[ir.ValueDefinition, ...]:
        out = []
        for name in self.order:
            found = self.checked.get(name)
            if found is not None:
                assert isinstance(found.num, ir.ValueRef)
                ref = found.num
                out.append(ir.ValueDefinition(ref.name, ref.label, ref.value, ref.unit,
                                              self.declared[name].span))
        return tuple(out)

    def value(self, name: str, scope: _Scope) -> Checked | None:
        """A named value, checked once (each after the values it uses); a cycle is E303."""
        if name in self.checked:
            return self.checked[name]
        define = self.declared[name]
        if name in self.checking:
            cycle = [*self.checking[self.checking.index(name):], name]
            self.error("E303", define.span, "derived values refer to each other in a cycle: " + " → ".join(cycle),
                       "a value cannot be computed from itself; break the cycle")
            return None
        self.checking.append(name)
        try:
            found = self.num(define.value, self.checker.patient_scope(), None)
        finally:
            self.checking.pop()
        result: Checked | None = None
        if found is not None:
            num: ir.Num | None = found.num
            unit_measure = found.measure
            if define.unit is not None:
                declared = self.unit(define.unit)
                num, unit_measure = (None, unit_measure) if declared is None else \
                    self.stated(define, found, declared)
            if num is not None:
                ref = ir.ValueRef(name, define.label, num, unit_measure.text, define.span)
                result = Checked(ref, unit_measure)
        self.checked[name] = result
        self.order.append(name)
        return result

    def stated(self, define: ast.DefineValue, found: Checked, declared: Measure) -> tuple[ir.Num | None, Measure]:
        """A value given `in UNIT`: converted to it, or, for a formula in plain numbers (each
        measurement taken as `(x in unit)`), read as a number of that unit."""
        assert define.unit is not None
        if found.measure.dims == declared.dims:
            return _convert(found.num, found.measure, declared, define.value.span), declared
        if found.measure.dims == ():
            return found.num, declared
        self.error("E211", define.unit.span,
                   f"'{define.name}' is given in {define.unit.text}, {describe(declared.dims)}, but its formula "
                   f"gives {describe(found.measure.dims)}",
                   f"write the formula so it gives {describe(declared.dims)}, or, for an empirical formula in "
                   "plain numbers, take each measurement in the unit the formula expects: (weight in kg)")
        return None, declared

    def unit(self, unit: ast.Unit) -> Measure | None:
        try:
            return measure(parse_unit(unit.text))
        except UnitError as err:
            self.error("E104", unit.span, err.message, err.hint)
            return None

    # ---- numbers ----
    def num(self, e: ast.Expr, scope: _Scope, lab: ir.FieldRef | None) -> Checked | None:
        """A numeric value and what it measures; None (with an error) for anything else.
        `lab` is the lab value a `k × ULN` in it refers to, if it is compared with one."""
        match e:
            case ast.Ref():
                return self.ref(e, scope)
            case ast.Number():
                whole = e.value == e.value.to_integral_value()
                return Checked(ir.Const("number", int(e.value) if whole and "." not in e.text else e.value,
                                        e.text, e.span), PLAIN_NUMBER)
            case ast.QuantityLit():
                unit_measure = self.unit(e.unit)
                if unit_measure is None:
                    return None
                times = "× " if e.unit.text[:1].isdigit() else ""
                return Checked(ir.Const("number", e.number.value, f"{e.number.text} {times}{e.unit.text}", e.span),
                               unit_measure)
            case ast.UlnLit():
                if lab is None:
                    self.error("E206", e.span, "× ULN is a multiple of a lab value's upper limit of normal, "
                               "and this comparison is not of exactly one lab value",
                               "compare a field declared 'lab UNIT' with it: alt <= (5 x ULN if liver_metastases, "
                               "otherwise 2.5 x ULN)")
                    return None
                assert isinstance(lab.field.type, ir.Measure)  # `labs_in` finds only lab fields
                return Checked(ir.UlnOf(lab, e.number.value, e.span), measure(lab.field.type.unit))
            case ast.Arith():
                return self.arith(e, scope, lab)
            case ast.NumberIn():
                return self.number_in(e, scope, lab)
            case ast.Choice():
                return self.choice(e, scope, lab)
            case ast.Equivalent():
                return self.equivalent(e, scope, lab)
            case _:
                self.error("E210", e.span, f"{_what(e)} is not a number, so it cannot be used in a calculation",
                           "calculations use numbers, quantities and numeric fields: weight / (height × height)")
                return None

    def ref(self, e: ast.Ref, scope: _Scope) -> Checked | None:
        if is_derived(e, self.declared, scope):
            return self.value(e.name, scope)
        found = self.checker.lookup(e, scope)
        if found is None:
            return None
        if isinstance(found, ast.Define):
            self.error("E210", e.span, f"'{e.name}' is a definition, true or false, not a number",
                       "calculations use numbers, quantities and numeric fields")
            return None
        match found.field.type:
            case ir.Measure() as t:
                return Checked(found, measure(t.unit))
            case ir.Scalar(kind="integer" | "decimal"):
                return Checked(found, PLAIN_NUMBER)
            case t:
                self.error("E210", e.span, f"'{e.name}' is {_kind_words(t)}, not a number, so it cannot be used "
                           "in a calculation", "calculations use numbers, quantities and numeric fields")
                return None

    def arith(self, e: ast.Arith, scope: _Scope, lab: ir.FieldRef | None) -> Checked | None:
        left = self.num(e.left, scope, lab)
        right = self.num(e.right, scope, lab)
        if left is None or right is None:
            return None
        op = ir.narrow(e.op, ir.ARITH_OPS)
        if op in ("+", "-"):
            if left.measure.dims != right.measure.dims:
                verb = "add" if op == "+" else "subtract"
                self.error("E211", e.span,
                           f"cannot {verb} {describe(right.measure.dims)} {'to' if op == '+' else 'from'} "
                           f"{describe(left.measure.dims)}",
                           "a sum or difference needs two values of the same kind, e.g. two masses")
                return None
            if self.unit_missing(left, e.right, right) or self.unit_missing(right, e.left, left):
                return None
            converted = _convert(right.num, right.measure, left.measure, e.right.span)
            return Checked(ir.Arith(op, left.num, converted, e.span), left.measure)
        sign = 1 if op == "×" else -1
        size = left.measure.size * right.measure.size if sign == 1 else left.measure.size / right.measure.size
        text = product_text(left.measure.text, op, right.measure.text)
        return Checked(ir.Arith(op, left.num, right.num, e.span),
                       Measure(combine(left.measure.dims, right.measure.dims, sign), size, text))

    def number_in(self, e: ast.NumberIn, scope: _Scope, lab: ir.FieldRef | None) -> Checked | None:
        inner = self.num(e.value, scope, lab)
        target = self.unit(e.unit)
        if inner is None or target is None:
            return None
        if inner.measure.dims != target.dims:
            self.error("E211", e.unit.span,
                       f"this value is {describe(inner.measure.dims)}, and {e.unit.text} measures "
                       f"{describe(target.dims)}", "take the value in a unit of the same kind, e.g. (weight in kg)")
            return None
        factor = exact_decimal(inner.measure.size / target.size)
        return Checked(ir.Convert(inner.num, factor, e.unit.text, True, e.span), PLAIN_NUMBER)

    def choice(self, e: ast.Choice, scope: _Scope, lab: ir.FieldRef | None) -> Checked | None:
        values = [self.num(v, scope, lab) for v, _ in e.branches] + [self.num(e.otherwise, scope, lab)]
        conditions = [self.checker.condition(c, scope) for _, c in e.branches]
        if any(v is None for v in values):
            return None
        first = values[0]
        assert first is not None
        written = [*(v for v, _ in e.branches), e.otherwise]
        for value_expr, other in zip(written[1:], values[1:], strict=True):
            assert other is not None
            if other.measure.dims != first.measure.dims:
                self.error("E211", value_expr.span,
                           f"this value is {describe(other.measure.dims)}, and the first is "
                           f"{describe(first.measure.dims)}",
                           "every value a choice can take must be of the same kind, e.g. all multiples of ULN")
                return None
        nums = [_convert(v.num, v.measure, first.measure, v.num.span) for v in values if v is not None]
        return Checked(ir.Choice(tuple(zip(conditions, nums[:-1], strict=True)), nums[-1], e.span), first.measure)

    def equivalent(self, e: ast.Equivalent, scope: _Scope, lab: ir.FieldRef | None) -> Checked | None:
        table = self.tables.get(e.table.name)
        dose = self.num(e.dose, scope, lab)
        if table is None:
            self.error("E213", e.table.span, f"unknown equivalence table '{e.table.name}'",
                       did_you_mean(e.table.name, list(self.tables))
                       or f"declare it with 'equivalence {e.table.name} \"…\" of ENUM'")
            return None
        found = self.checker.lookup(e.agent, scope)
        if found is None or dose is None:
            return None
        if isinstance(found, ast.Define) or found.field.type != ir.EnumOf(table.enum):
            self.error("E213", e.agent.span, f"'{e.agent.name}' does not name one of {table.enum.name}",
                       f"the table converts by agent: give the field that holds which {table.enum.name} it is")
            return None
        return Checked(ir.Equivalent(table, dose.num, found, e.span), dose.measure)

    # ---- comparisons ----
    def compare(self, e: ast.Compare, scope: _Scope) -> ir.Expr:
        op = ir.narrow(e.op, ir.COMPARE_OPS)
        return self.comparison(op, e.left, e.right, e.span, scope)

    def between(self, e: ast.Between, scope: _Scope) -> ir.Expr:
        low = self.comparison(">=", e.value, e.low, e.span, scope)
        high = self.comparison("<=", e.value, e.high, e.span, scope)
        return ir.And((low, high), e.span)

    def comparison(self, op: ir.CompareOp, left_e: ast.Expr, right_e: ast.Expr, span: ast.Span,
                   scope: _Scope) -> ir.Expr:
        labs = {ref.field.name: ref for ref in [*self.labs_in(left_e, scope), *self.labs_in(right_e, scope)]}
        lab = next(iter(labs.values())) if len(labs) == 1 else None
        left = self.num(left_e, scope, lab)
        right = self.num(right_e, scope, lab)
        if left is None or right is None:
            return ir.Truth(False, span)
        if left.measure.dims != right.measure.dims:
            self.error("E211", right_e.span,
                       f"cannot compare {describe(left.measure.dims)} with {describe(right.measure.dims)}",
                       _unit_hint(left.measure))
            return ir.Truth(False, span)
        if self.unit_missing(left, right_e, right) or self.unit_missing(right, left_e, left):
            return ir.Truth(False, span)
        target = _shown_side(left, left_e, right, right_e)
        unit = target.measure
        left_num = _convert(left.num, left.measure, unit, left_e.span)
        right_num = _convert(right.num, right.measure, unit, right_e.span)
        return ir.NumCompare(op, left_num, right_num, unit.text, span)

    def unit_missing(self, unit_side: Checked, plain_e: ast.Expr, plain: Checked) -> bool:
        """A plain number set against a value in a unit such as % (dimensionless, yet a unit):
        the number's unit is not implied, so it must be written."""
        if plain.measure.text or plain.measure.size != 1 or not unit_side.measure.text:
            return False
        if unit_side.measure.size == 1 and unit_side.measure.dims == ():
            return False
        if unit_side.measure.dims != ():
            return False  # a dimension mismatch, reported as such
        self.error("E204", plain_e.span,
                   f"this number has no unit, and the value it meets is in {unit_side.measure.text}",
                   f"write the unit: {_example(plain_e)} {unit_side.measure.text}")
        return True

    def labs_in(self, e: ast.Expr, scope: _Scope) -> list[ir.FieldRef]:
        """The lab values a side of a comparison computes with: a `k × ULN` on either side is a
        multiple of the upper limit of normal of the one lab value compared."""
        if isinstance(e, ast.Ref) and not is_derived(e, self.declared, scope):
            found = self.checker.lookup_quiet(e, scope)
            if isinstance(found, ir.FieldRef) and found.field.type.kind == "lab":
                return [found]
        if isinstance(e, ast.Arith):
            return self.labs_in(e.left, scope) + self.labs_in(e.right, scope)
        if isinstance(e, ast.NumberIn):
            return self.labs_in(e.value, scope)
        return []


def _shown_side(left: Checked, left_e: ast.Expr, right: Checked, right_e: ast.Expr) -> Checked:
    """The side whose unit a comparison is made and shown in: a literal as written, else a
    field, else a named value, else the left side."""
    ranked: list[tuple[int, Checked]] = []
    for side, expr in ((left, left_e), (right, right_e)):
        if isinstance(expr, ast.QuantityLit):
            ranked.append((0, side))
        elif isinstance(side.num, ir.FieldRef):
            ranked.append((1, side))
        elif isinstance(side.num, ir.ValueRef) and side.measure.text:
            ranked.append((2, side))
        else:
            ranked.append((3, side))
    return min(ranked, key=lambda pair: pair[0])[1]


def _convert(num: ir.Num, have: Measure, want: Measure, span: ast.Span) -> ir.Num:
    """`num` (measured in `have`) as a number in `want`: itself when the sizes agree."""
    ratio = have.size / want.size
    if ratio == 1:
        return num
    if isinstance(num, ir.Const) and isinstance(num.value, Decimal | int):
        value = exact_decimal(Fraction(num.value) * ratio)
        return ir.Const("number", value, num.display, num.span)
    return ir.Convert(num, exact_decimal(ratio), want.text, False, span)


def _example(e: ast.Expr) -> str:
    return e.text if isinstance(e, ast.Number) else "…"


def _unit_hint(m: Measure) -> str:
    if m.text and not any(mark in m.text for mark in "(·"):  # a unit as written, not one worked out
        return f"compare it with {describe(m.dims)}, e.g. in {m.text}"
    return f"compare it with {describe(m.dims)}"


def _kind_words(t: ir.Type) -> str:
    """A field's type in a sentence: `one of Sex`, `a date`, `a yes-or-no field`."""
    match t:
        case ir.EnumOf():
            return f"one of {t.enum.name}"
        case ir.SetOf():
            return f"a set of {t.enum.name}"
        case ir.ListOf():
            return f"a list of {t.record}"
        case ir.Measure():
            return f"a {t.kind}"
        case ir.Scalar():
            return {"bool": "a yes-or-no field", "judgment": "an investigator's judgment", "text": "a text",
                    "date": "a date", "titer": "a titer"}.get(t.kind, f"a {t.kind}")
        case _:
            assert_never(t)


_KINDS: dict[type, str] = {
    ast.TiterLit: "a titer", ast.DateLit: "a date", ast.TextLit: "a text", ast.BoolLit: "a truth value",
    ast.Quantifier: "a list test", ast.Compare: "a comparison", ast.Between: "a range test",
    ast.Membership: "a membership test", ast.Window: "a date window", ast.Not: "a condition",
    ast.And: "a condition", ast.Or: "a condition", ast.AtLeast: "a condition",
}


def _what(e: ast.Expr) -> str:
    return _KINDS.get(type(e), "this")

