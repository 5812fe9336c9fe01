"""The SQL backend: a checked protocol becomes one query over its table layout
(`crit.sources.tables`) that gives, per patient, every criterion's outcome, the decision and
the missing facts, as the Python evaluator does.

    emit_sql(protocol, dialect) -> str
        The SQL file: a header comment (source, sha256) and the query, written by sqlglot in
        `dialect` (duckdb is the reference; spark, postgres, bigquery and trino are transpiled
        from the same expressions). Raises CritError (codes S2xx) for a construct this backend
        cannot translate.

The query's columns: `patient_id`, `decision` ('eligible', 'ineligible', 'needs review'), one
column per criterion named by its id ('met', 'not met', 'unknown', 'not applicable'), and
`missing` and `pending_judgments` (the paths, sorted, joined by ', '; '' when none).

Encoding. A condition is a nullable BOOLEAN (NULL is unknown) built with SQL's own AND, OR and
NOT, which are Kleene's; tests on it are written `CASE WHEN c THEN … WHEN NOT c THEN … ELSE …`,
never `IS TRUE` (which sqlglot rewrites to a bare predicate for some dialects). A criterion is a
small integer that is never NULL: 0 not met, 1 met, 2 not applicable, 3 unknown, 4 unknown and
perhaps not applicable (the runtime's Unsure). Why a value is unknown follows the runtime: the
missing paths of an unknown node are those of its unknown parts, down to the atoms, so for each
path crit computes a flag "this path makes the patient's decision unknown"; paths inside lists
(`treatments[0].end`) come from a per-quantifier table of the unknown items' paths.

Every value is computed once: compound nodes become columns of a chain of common table
expressions (`_l1`, `_l2`, …, each adding columns to the one before), quantifiers aggregate
their items in tables of their own (`_q1_items`, `_q1_agg`, `_q1_paths`). Generated names start
with `_`, which no crit name does, so they cannot meet a field's column.
"""

from __future__ import annotations

import datetime
import gc
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from fractions import Fraction
from math import gcd
from typing import Never, assert_never

from sqlglot import exp

from crit import ir
from crit import runtime as rt
from crit.ast import Span
from crit.diagnostics import CritError, Diagnostic
from crit.sources import tables
from crit.sources.tables import PATIENT_ID, PATIENTS, FieldLayout, Layout

DIALECTS = ("duckdb", "spark", "postgres", "bigquery", "trino")

# criterion codes: the set of outcomes its completions can still give, one bit each (as the
# interpreter's `Fact.possible`): 1 met, 2 not met, 4 not applicable; 3 is unknown (met or not),
# 5 met or not applicable, 6 not met or not applicable, 7 any of the three
MET, NOT_MET, NA = 1, 2, 4
UNKNOWN = MET | NOT_MET
CODES = range(1, 8)
SINGLE = (MET, NOT_MET, NA)


def with_bit(bit: int) -> list[int]:
    """The codes whose set holds outcome `bit` (one of the outcomes `bit` when it has several)."""
    return [code for code in CODES if code & bit]



Src = tuple[str, str]  # ("f", patient field) | ("i", item field) | ("q", quantifier number)


@dataclass(frozen=True)
class Sql:
    """An expression and the level of the chain it needs (0: the tables themselves)."""

    e: exp.Expr
    level: int = 0


@dataclass(frozen=True)
class Cond:
    """A condition (nullable BOOLEAN) or a criterion code, with for each path that may make it
    unknown the flag that it does (which implies the node is unknown)."""

    value: Sql
    contrib: Mapping[Src, Sql] = field(default_factory=dict)


@dataclass(frozen=True)
class Val:
    """A value compared by an atom: the expression, whether it is missing, whether recorded as
    none, its path, and for quantities the factor from the canonical unit to the stored one."""

    e: Sql
    missing: Sql | None = None
    none: Sql | None = None
    src: Src | None = None
    uln: Sql | None = None
    to_storage: Fraction | None = None
    placed: FieldLayout | None = None
    flags: tuple[tuple[Src, Sql], ...] | None = None  # when set: the paths that make it missing, each's flag
    alias: str = "p"


def flags_of(v: Val) -> list[tuple[Src, Sql]]:
    """The paths that make `v` missing, with their flags (a dated value: its own or its anchor's)."""
    if v.flags is not None:
        return list(v.flags)
    if v.src is not None and v.missing is not None:
        return [(v.src, v.missing)]
    return []


# the constructs this backend does not translate yet: each is its compile error S201, with its place
UNTRANSLATED: tuple[type, ...] = ()


@dataclass(frozen=True)
class _Size:
    """What a number computed in SQL may need, as a compiler bounds a value's range: its largest
    magnitude and its decimal places (whole digits + places must fit DECIMAL's 38), and the
    fields it is computed from, with their plausible ranges (named when it does not fit)."""

    bound: Fraction
    places: int
    fields: tuple[tuple[str, str | None], ...] = ()  # (field name, its range as written, or None)

    @property
    def digits(self) -> int:
        return tables.whole_digits(self.bound) + self.places

    def times(self, other: _Size) -> _Size:
        return _Size(self.bound * other.bound, self.places + other.places, _fields(self, other))

    def plus(self, other: _Size) -> _Size:
        return _Size(self.bound + other.bound, max(self.places, other.places), _fields(self, other))


def _fields(a: _Size, b: _Size) -> tuple[tuple[str, str | None], ...]:
    return tuple(dict.fromkeys(a.fields + b.fields))


_Term = tuple[exp.Expr, _Size] | None  # a product of columns and what it may need; None: 1


@dataclass(frozen=True)
class _Rational:
    """k × n / d: k exact, folded at compile time; n and d products of columns (None: 1), d > 0."""

    k: Fraction
    n: _Term
    d: _Term


@dataclass(frozen=True)
class _Alt:
    """One value a derived value may take: possible (`act`), recorded as none, or unknown (all
    non-NULL BOOLEANs); else `number`."""

    act: exp.Expr
    number: _Rational
    none: exp.Expr
    unk: exp.Expr


@dataclass(frozen=True)
class _Derived:
    alts: list[_Alt]
    paths: dict[Src, exp.Expr]  # the interpreter's Derived.missing: each path with its flag
    level: int


def _merge(a: Mapping[Src, exp.Expr], b: Mapping[Src, exp.Expr]) -> dict[Src, exp.Expr]:
    out = dict(a)
    for src, flag in b.items():
        out[src] = or_(paren(out[src]), paren(flag)) if src in out else flag
    return out


def _error(code: str, span: Span, message: str, hint: str) -> CritError:
    return CritError([Diagnostic(code=code, severity="error", span=span, message=message, hint=hint)])


def untranslatable(node: Never) -> CritError:
    """The `assert_never` of this backend: mypy requires every IR kind to be handled before it
    (a kind added to the IR is a type error here until translated); at run time, a kind merged
    without a translation is this backend's compile error, with its place, never dropped."""
    span: Span = getattr(node, "span")  # noqa: B009 (the node's type is Never to mypy)
    kind = type(node).__name__
    return _error("S201", span, f"the SQL backend cannot translate {kind} yet",
                  "evaluate this protocol with the Python evaluator (`crit eval`, `crit screen --engine python`)")


# ---- small builders -----------------------------------------------------------------------------


def _alias(expression: exp.Expr, alias: str, table: bool = False, quoted: bool | None = None) -> exp.Expr:
    """`expression AS alias`, without copying the expression (sqlglot's builders copy by default,
    which on a protocol's worth of nested expressions costs seconds)."""
    return exp.alias_(expression, alias, table=table, quoted=quoted, copy=False)


def ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def column(name: str, table: str) -> exp.Column:
    return exp.Column(this=ident(name), table=exp.to_identifier(table))


def lit(value: str) -> exp.Literal:
    return exp.Literal.string(value)


def num(value: int) -> exp.Expr:
    return exp.Literal.number(value)


def true() -> exp.Boolean:
    return exp.Boolean(this=True)


def false() -> exp.Boolean:
    return exp.Boolean(this=False)


def lv(*parts: Sql | None) -> int:
    return max((p.level for p in parts if p is not None), default=0)


def case(whens: Iterable[tuple[exp.Expr, exp.Expr]], default: exp.Expr | None = None) -> exp.Case:
    ifs = [exp.If(this=c, true=v) for c, v in whens]
    return exp.Case(ifs=ifs, default=default)


def and_(*parts: exp.Expr) -> exp.Expr:
    return exp.and_(*parts, copy=False) if len(parts) > 1 else parts[0]


def or_(*parts: exp.Expr) -> exp.Expr:
    return exp.or_(*parts, copy=False) if len(parts) > 1 else parts[0]


def not_(e: exp.Expr) -> exp.Expr:
    return exp.not_(exp.Paren(this=e) if isinstance(e, exp.Connector | exp.Binary) else e, copy=False)


def is_null(e: exp.Expr) -> exp.Expr:
    return exp.Is(this=exp.Paren(this=e) if not isinstance(e, exp.Column) else e, expression=exp.Null())


def is_in(e: exp.Expr, values: list[int]) -> exp.Expr:
    return exp.In(this=e, expressions=[num(v) for v in values])


def open_code(e: exp.Expr) -> exp.Expr:
    """A criterion code of more than one outcome: its missing facts count."""
    return is_in(e, [c for c in CODES if c not in SINGLE])


def paren(e: exp.Expr) -> exp.Expr:
    return e if isinstance(e, exp.Column | exp.Literal | exp.Paren | exp.Boolean | exp.Case) else exp.Paren(this=e)


_COMPARE: dict[str, type[exp.Binary]] = {">=": exp.GTE, "<=": exp.LTE, ">": exp.GT, "<": exp.LT, "=": exp.EQ,
                                         "!=": exp.NEQ}


def compare(op: ir.CompareOp, left: exp.Expr, right: exp.Expr) -> exp.Expr:
    return _COMPARE[op](this=paren(left), expression=paren(right))


def decimal_type(digits: int, places: int, dialect: str) -> exp.DataType:
    kind = "BIGDECIMAL" if dialect == "bigquery" else "DECIMAL"
    return exp.DataType.build(f"{kind}({max(digits, places + 1, 1)}, {places})")


def decimal_literal(value: Decimal, dialect: str) -> exp.Expr:
    """An exact decimal: CAST('1.3' AS DECIMAL(2, 1)) (BigQuery reads 1.3 as a float)."""
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    places = max(0, -exponent)
    text = format(value, "f")
    return exp.Cast(this=lit(text), to=decimal_type(len(digits) + max(0, exponent), places, dialect))


# ---- the compiler -------------------------------------------------------------------------------


@dataclass
class _Quantifier:
    number: int
    items_table: str
    list_field: str
    patient_level: int  # the level of the chain its items join
    flags: list[tuple[Src, str]]  # per-item flag columns: (source, column name)
    agg_level: int  # the level at which its counts join the chain
    distinct: bool = False  # a count of different keys: each flag column is its path's whole test


class _Compiler:
    def __init__(self, protocol: ir.Protocol, layout: Layout, dialect: str) -> None:
        self.protocol = protocol
        self.layout = layout
        self.dialect = dialect
        self.levels: dict[int, list[tuple[str, exp.Expr]]] = {}
        self.joins: dict[int, list[_Quantifier]] = {}
        self.ctes: dict[int, list[tuple[str, exp.Expr]]] = {}  # item CTEs, by the level they join
        self.counter = 0
        self.quantifiers: list[_Quantifier] = []
        self.definitions: dict[str, Cond] = {}
        self.item: tuple[str, ir.Record] | None = None  # in an item condition: its table and record
        self.codes: dict[str, Sql] = {}  # criterion id -> its code column
        self.tops: list[tuple[ir.Criterion, Cond]] = []
        self.judgments = {f.name for f in protocol.fields if f.type.kind == "judgment"}

    # ---- the chain of columns ----
    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"_{prefix}{self.counter}"

    def keep(self, value: Sql, prefix: str = "n") -> Sql:
        """`value` as a column of the chain (inside an item condition: the expression itself)."""
        if self.item is not None or isinstance(value.e, exp.Column | exp.Boolean):
            return value
        level = value.level + 1
        name = self.name(prefix)
        self.levels.setdefault(level, []).append((name, value.e))
        return Sql(column(name, "p"), level)

    # ---- values ----
    def value(self, v: ir.Value) -> Val:
        match v:
            case ir.Const():
                return Val(Sql(self.const(v.value)))
            case ir.FieldRef():
                return self.field(v)
            case _:
                assert_never(v)

    def const(self, value: Decimal | Fraction | int | datetime.date | str | bool,
              to_storage: Fraction | None = None, c: ir.Const | None = None, unit: str | None = None) -> exp.Expr:
        if isinstance(value, bool):
            return true() if value else false()
        if isinstance(value, Decimal | Fraction) or (isinstance(value, int) and to_storage is not None):
            exact = Fraction(value) * (to_storage or 1)
            if not tables.terminating(exact):
                assert c is not None  # only a converted limit can fail to terminate
                raise _error("S202", c.span, f"{c.display} is no exact decimal in {unit}, the unit the SQL "
                             "layout stores the field in",
                             f"write the limit in {unit} or in a unit that is a decimal multiple of it")
            decimal = rt.terminating(exact)
            assert isinstance(decimal, Decimal)
            return decimal_literal(decimal, self.dialect)
        if isinstance(value, int):
            return num(value)
        if isinstance(value, datetime.date):
            return exp.Cast(this=lit(value.isoformat()), to=exp.DataType.build("DATE"))
        return lit(value)

    def field(self, ref: ir.FieldRef) -> Val:
        if ref.scope == "item":
            if self.item is None or ref.field not in self.item[1].fields:
                raise self.untranslated(ref.span, "a field of an enclosing list's item inside a nested quantifier")
            table, alias, src = self.item[0], "it", ("i", ref.field.name)
        else:
            table, alias, src = PATIENTS, "p", ("f", ref.field.name)
        placed = self.layout.of(table, ref.field.name)
        t = ref.field.type
        none = Sql(column(placed.column("none").name, alias)) if ref.field.optional else None
        uln = Sql(column(placed.column("uln").name, alias)) if t.kind == "lab" else None
        match t:
            case ir.SetOf():  # its first member column: null when the set is missing
                value = Sql(column(placed.columns[0].name, alias))
                missing = Sql(is_null(value.e))
            case ir.ListOf():
                value = Sql(column(placed.column("items").name, alias))
                missing = Sql(is_null(value.e))
            case ir.Scalar() | ir.Measure() | ir.EnumOf():
                value = Sql(column(placed.column("start" if t.kind == "interval" else "value").name, alias))
                missing = Sql(is_null(value.e))
                if none is not None:
                    missing = Sql(and_(missing.e, not_(none.e)))
            case _:
                assert_never(t)
        val = Val(value, missing, none, src, uln, placed.to_storage if isinstance(t, ir.Measure) else None,
                  placed, alias=alias)
        if ref.field.measured is not None:
            return self.dated(val, ref)
        return val

    def dated(self, val: Val, ref: ir.FieldRef) -> Val:
        """A dated result: its value when measured in its window from the anchor date, else
        missing (the anchor's path when the anchor is what is missing, as the interpreter says)."""
        m = ref.field.measured
        assert m is not None and val.placed is not None and val.missing is not None
        if ref.field.type.kind in ("set", "list", "interval"):
            raise self.untranslated(ref.span, f"a dated {ref.field.type.kind}")
        anchor_field = next(f for f in self.protocol.fields if f.name == m.anchor)
        anchor = column(self.layout.of(PATIENTS, anchor_field.name).column("value").name, "p")
        day = column(val.placed.column("measured").name, val.alias)
        edge = self.shifted(anchor, None, -m.amount if m.direction == "before" else m.amount, m.unit)
        fresh = self.in_window("within", day, anchor, edge, m.direction)
        present = not_(is_null(val.e.e))
        value = Sql(case([(fresh, val.e.e)]))
        uln = None if val.uln is None else Sql(case([(fresh, val.uln.e)]))
        stale = and_(present, not_(is_null(anchor)), not_(paren(fresh)))
        waiting = and_(present, is_null(anchor))
        missing = Sql(or_(paren(val.missing.e), paren(stale), paren(waiting)))
        assert val.src is not None
        flags = ((val.src, Sql(or_(paren(val.missing.e), paren(stale)))), (("f", m.anchor), Sql(waiting)))
        return replace(val, e=value, uln=uln, missing=missing, flags=flags)

    def shifted(self, anchor: exp.Expr, const: datetime.date | None, amount: int, unit: str) -> exp.Expr:
        """The day `amount` units from the anchor (a literal's computed here, as the runtime does)."""
        if const is not None:
            try:
                day = rt.shift(const, amount, unit)
            except (OverflowError, ValueError):
                day = datetime.date.max if amount > 0 else datetime.date.min
            return self.const(day)
        count, sql_unit = amount, "DAY"
        if unit == "weeks":
            count = amount * 7
        elif unit in ("months", "years"):
            count, sql_unit = amount * (12 if unit == "years" else 1), "MONTH"
        return exp.Cast(this=exp.DateAdd(this=anchor, expression=num(count), unit=exp.Var(this=sql_unit)),
                        to=exp.DataType.build("DATE"))

    @staticmethod
    def in_window(kind: str, v: exp.Expr, a: exp.Expr, edge: exp.Expr, direction: str) -> exp.Expr:
        """The runtime's windows: `within` and `at least` inclusive, `less than`, `more than` strict."""
        if direction == "before":
            tests = {"within": and_(compare("<=", edge, v), compare("<=", v, a)),
                     "less_than": and_(compare("<", edge, v), compare("<=", v, a)),
                     "at_least": compare("<=", v, edge), "more_than": compare("<", v, edge)}
        else:
            tests = {"within": and_(compare("<=", a, v), compare("<=", v, edge)),
                     "less_than": and_(compare("<=", a, v), compare("<", v, edge)),
                     "at_least": compare(">=", v, edge), "more_than": compare(">", v, edge)}
        return tests[kind]

    def untranslated(self, span: Span, what: str) -> CritError:
        return _error("S201", span, f"the SQL backend cannot translate {what}",
                      "evaluate this protocol with the Python evaluator (`crit eval`, `crit screen --engine python`)")

    # ---- conditions ----
    def cond(self, e: ir.Expr) -> Cond:
        match e:
            case ir.Compare():
                return self.compare(e)
            case ir.UlnCompare():
                lab = self.field(e.lab)
                assert lab.uln is not None
                limit = exp.Mul(this=paren(lab.uln.e), expression=decimal_literal(e.multiple, self.dialect))
                return self.atom([lab], compare(e.op, lab.e.e, limit))
            case ir.Between():
                return self.between(e)
            case ir.Member():
                return self.member(e)
            case ir.Window():
                return self.window(e)
            case ir.Truth():
                return Cond(Sql(true() if e.value else false()))
            case ir.DefinitionRef():
                return self.definitions[e.name]
            case ir.FieldRef():
                v = self.field(e)
                return self.atom([v], v.e.e)
            case ir.Not():
                inner = self.cond(e.operand)
                return Cond(Sql(not_(inner.value.e), inner.value.level), inner.contrib)
            case ir.And() | ir.Or():
                parts = [self.cond(x) for x in e.operands]
                joined = (and_ if isinstance(e, ir.And) else or_)(*(paren(p.value.e) for p in parts))
                return self.node(Sql(joined, lv(*(p.value for p in parts))), parts)
            case ir.AtLeast():
                parts = [self.cond(x) for x in e.operands]
                kept = [self.keep(p.value) if len(parts) > 1 else p.value for p in parts]
                trues = self._sum([case([(k.e, num(1))], num(0)) for k in kept])
                unknowns = self._sum([case([(is_null(k.e), num(1))], num(0)) for k in kept])
                value = case([(exp.GTE(this=paren(trues), expression=num(e.count)), true()),
                              (exp.LT(this=exp.Paren(this=exp.Add(this=paren(trues), expression=paren(unknowns))),
                                      expression=num(e.count)), false())])
                return self.node(Sql(value, lv(*kept)), parts)
            case ir.Quantified() | ir.CountCompare():
                return self.quantifier(e)
            case ir.NoneRecorded():
                return self.none_recorded(e)
            case ir.Overlaps() | ir.OngoingAt() | ir.Lasted():
                return self.interval(e)
            case ir.DistinctCount():
                return self.quantifier(e)
            case ir.NumCompare():
                return self.num_compare(e)
            case _:
                raise untranslatable(e)

    @staticmethod
    def _sum(terms: list[exp.Expr]) -> exp.Expr:
        total = terms[0]
        for term in terms[1:]:
            total = exp.Add(this=total, expression=term)
        return total

    def node(self, value: Sql, parts: Iterable[Cond], coded: bool = False) -> Cond:
        """A compound node: kept as a column; a path makes it unknown when it is unknown (a
        criterion code of 3 or 4 when `coded`) and the path makes some part unknown."""
        kept = self.keep(value)
        guard = open_code(kept.e) if coded else is_null(kept.e)
        sources: dict[Src, list[Sql]] = {}
        for part in parts:
            for src, flag in part.contrib.items():
                sources.setdefault(src, []).append(flag)
        contrib = {src: Sql(and_(guard, paren(or_(*(paren(f.e) for f in flags)))), max(kept.level, lv(*flags)))
                   for src, flags in sources.items()}
        return Cond(kept, contrib)

    def atom(self, values: list[Val], test: exp.Expr) -> Cond:
        """An atom on `values`: unknown when one is missing, false when one is recorded as none,
        else `test`. Without a value that may be recorded as none, `test` alone is NULL exactly
        when a value is missing (a missing value's columns are NULL); the paths that make it
        unknown are then all its missing values', as the runtime's `_missing` lists them."""
        missing = [v.missing.e for v in values if v.missing is not None]
        nones = [v.none.e for v in values if v.none is not None]
        level = lv(*(v.e for v in values))
        if nones:
            test = case([(or_(*missing), exp.Null()), (or_(*nones), false())], test)
        contrib: dict[Src, Sql] = {}
        for v in values:
            for src, found in flags_of(v):
                flag = found.e
                contrib[src] = Sql(or_(contrib[src].e, flag) if src in contrib else flag, level)
        return Cond(Sql(test, level), contrib)

    def atom_contrib(self, value: Sql, values: list[Val]) -> Cond:
        contrib: dict[Src, Sql] = {}
        for v in values:
            for src, found in flags_of(v):
                flag = and_(is_null(value.e), paren(found.e))
                contrib[src] = Sql(or_(contrib[src].e, flag) if src in contrib else flag, value.level)
        return Cond(value, contrib)

    def storage(self, values: list[ir.Value], span: Span) -> tuple[Fraction, str] | None:
        """The factor from the canonical unit to the stored one, and that unit, shared by the
        fields compared."""
        fields = [self.field(v) for v in values if isinstance(v, ir.FieldRef)]
        units = {(v.to_storage, v.placed.storage) for v in fields
                 if v.to_storage is not None and v.placed is not None and v.placed.storage is not None}
        if len(units) > 1:
            raise self.untranslated(span, "a comparison between quantities stored in different units")
        return units.pop() if units else None

    def operand(self, v: ir.Value, storage: tuple[Fraction, str] | None) -> Val:
        if isinstance(v, ir.Const):
            factor, unit = storage if storage is not None else (None, None)
            return Val(Sql(self.const(v.value, factor, v, unit)))
        return self.field(v)

    def compare(self, e: ir.Compare) -> Cond:
        factor = self.storage([e.left, e.right], e.span)
        left, right = self.operand(e.left, factor), self.operand(e.right, factor)
        return self.atom([left, right], compare(e.op, left.e.e, right.e.e))

    def between(self, e: ir.Between) -> Cond:
        factor = self.storage([e.value, e.low, e.high], e.span)
        value, low, high = (self.operand(x, factor) for x in (e.value, e.low, e.high))
        whens: list[tuple[exp.Expr, exp.Expr]] = []
        if value.missing is not None:
            whens.append((value.missing.e, exp.Null()))
        nones = [x.none.e for x in (value, low, high) if x.none is not None]
        if nones:
            whens.append((or_(*nones), false()))
        below_low = compare(">", low.e.e, value.e.e)
        above_high = compare(">", value.e.e, high.e.e)
        if low.missing is not None:
            below_low = and_(not_(low.missing.e), below_low)
        if high.missing is not None:
            above_high = and_(not_(high.missing.e), above_high)
        whens.append((or_(paren(below_low), paren(above_high)), false()))
        bounds = [x.missing.e for x in (low, high) if x.missing is not None]
        if bounds:
            whens.append((or_(*bounds), exp.Null()))
        result = Sql(case(whens, true()), lv(value.e, low.e, high.e))
        return self.atom_contrib(result, [value, low, high])

    def member(self, e: ir.Member) -> Cond:
        v = self.field(e.value)
        if e.kind in ("is", "is_not", "is_any"):
            test: exp.Expr = exp.In(this=v.e.e, expressions=[lit(m) for m in e.members])
            if e.kind == "is_not":
                test = not_(test)
            if v.none is None:
                return self.atom([v], test)
            assert v.missing is not None  # recorded none: `is not` holds, `is` does not
            value = case([(v.missing.e, exp.Null()), (v.none.e, true() if e.kind == "is_not" else false())], test)
            return self.atom([replace(v, none=None)], value)
        assert v.placed is not None
        members = [column(v.placed.column("member", m).name, "p" if e.value.scope == "patient" else "it")
                   for m in e.members]  # a set recorded as none has every member column false
        return self.atom([replace(v, none=None)], paren(and_(*members) if e.kind == "has_all" else or_(*members)))

    def window(self, e: ir.Window) -> Cond:
        value, anchor = self.value(e.value), self.value(e.anchor)
        amount = -e.amount if e.direction == "before" else e.amount
        const = e.anchor.value if isinstance(e.anchor, ir.Const) else None
        assert const is None or isinstance(const, datetime.date)
        edge = self.shifted(anchor.e.e, const, amount, e.unit)
        return self.atom([value, anchor], self.in_window(e.kind, value.e.e, anchor.e.e, edge, e.direction))

    def none_recorded(self, e: ir.NoneRecorded) -> Cond:
        v = self.field(e.value)
        assert v.missing is not None
        whens = [(v.none.e, true())] if v.none is not None else []
        test = case([*whens, (v.missing.e, exp.Null())], false())
        return self.atom([replace(v, none=None)], test)

    def interval(self, e: ir.Overlaps | ir.OngoingAt | ir.Lasted) -> Cond:
        """An interval test: unknown when the interval or the anchor is missing, false when either is
        recorded as none, else the test, itself unknown only when it turns on an end not recorded."""
        period, anchor = self.field(e.value), self.value(e.anchor)
        assert period.placed is not None and period.src is not None
        start = column(period.placed.column("start").name, period.alias)
        end = column(period.placed.column("end").name, period.alias)
        ongoing = column(period.placed.column("ongoing").name, period.alias)
        a = anchor.e.e
        const = e.anchor.value if isinstance(e.anchor, ir.Const) else None
        assert const is None or isinstance(const, datetime.date)
        test: exp.Expr
        if isinstance(e, ir.Overlaps):
            edge = self.shifted(a, const, -e.amount if e.direction == "before" else e.amount, e.unit)
            first, last = (edge, a) if e.direction == "before" else (a, edge)
            test = case([(compare(">", start, last), false()),
                         (or_(ongoing, compare(">=", start, first)), true()),
                         (is_null(end), exp.Null())], compare(">=", end, first))
        elif isinstance(e, ir.OngoingAt):
            test = case([(compare(">", start, a), false()),
                         (or_(ongoing, compare("=", start, a)), true()),
                         (is_null(end), exp.Null())], compare(">=", end, a))
        else:
            edge = self.shifted(start, None, e.amount, e.unit)
            upto = exp.Least(this=end, expressions=[a])
            longest = case([(or_(ongoing, is_null(end)), a)], upto)
            shortest = case([(ongoing, a), (is_null(end), exp.Least(this=start, expressions=[a]))], upto)

            def enough(last: exp.Expr) -> exp.Expr:
                return {"at_least": compare("<=", edge, last), "more_than": compare("<", edge, last),
                        "less_than": compare("<", last, edge), "at_most": compare("<=", last, edge)}[e.kind]

            test = case([(exp.EQ(this=paren(enough(longest)), expression=paren(enough(shortest))), enough(longest))])
        missing = [v.missing.e for v in (period, anchor) if v.missing is not None]
        nones = [v.none.e for v in (period, anchor) if v.none is not None]
        whens: list[tuple[exp.Expr, exp.Expr]] = [(or_(*missing), exp.Null())]
        if nones:
            whens.append((or_(*nones), false()))
        value = Sql(case(whens, test), lv(period.e, anchor.e))
        cond = self.atom_contrib(value, [period, anchor])
        kind, name = period.src
        contrib = dict(cond.contrib)
        contrib[(kind, f"{name}.end")] = Sql(and_(is_null(value.e), not_(paren(or_(*missing)))), value.level)
        return Cond(value, contrib)

    # ---- derived values ----
    # A derived value is a few alternatives (a value chosen by a condition not yet known may be one
    # of several), each a number k × n / d (k an exact rational folded at compile time; n and d
    # products of columns, d > 0), recorded as none, or unknown (a fact missing, a division by
    # zero), with whether it is among the possible values (`act`); and the paths whose absence
    # leaves it open, each with its flag: the interpreter's `Derived`.
    def sized(self, span: Span, size: _Size) -> _Size:
        """`size`, or S201 at `span` when it needs more digits than DECIMAL holds, with a hint
        naming the fields whose ranges would bring it within them."""
        if size.digits <= tables.MAX_DIGITS:
            return size
        unranged = [name for name, text in size.fields if text is None]
        ranged = [f"'{name}' ({text})" for name, text in size.fields if text is not None]
        if unranged:
            names = ", ".join(f"'{name}'" for name in unranged)
            one = len(unranged) == 1
            advice = (f"{names} {'has' if one else 'have'} no plausible range, so "
                      f"{'its column holds' if one else 'their columns hold'} any number up to "
                      f"10^{tables.MAX_INTEGER_DIGITS}: give {'it' if one else 'each'} one (`from LOW to HIGH` "
                      "after the type)")
        elif ranged:
            advice = f"narrow the plausible range of {', '.join(ranged)}"
        else:
            advice = "write the numbers with fewer digits"
        raise _error("S201", span, f"the SQL backend cannot translate this arithmetic exactly: it may need "
                     f"{size.digits} digits, more than the {tables.MAX_DIGITS} digits SQL's DECIMAL holds",
                     f"{advice}; or screen with the Python evaluator (`crit screen --engine python`)")

    def product(self, x: _Term, y: _Term, span: Span) -> _Term:
        if x is None:
            return y
        if y is None:
            return x
        return exp.Mul(this=paren(x[0]), expression=paren(y[0])), self.sized(span, x[1].times(y[1]))

    def scaled(self, factor: int, term: _Term, span: Span) -> tuple[exp.Expr, _Size]:
        """`factor × term` (term None: 1), an integer literal times a product of columns."""
        literal: _Term = None if factor == 1 else (decimal_literal(Decimal(factor), self.dialect),
                                                   _Size(Fraction(abs(factor)), 0))
        out = self.product(literal, term, span)
        return out if out is not None else (num(1), _Size(Fraction(1), 0))

    def derived(self, v: ir.Num) -> _Derived:
        match v:
            case ir.Const():
                assert isinstance(v.value, Decimal | Fraction | int) and not isinstance(v.value, bool)
                return _Derived([_Alt(true(), _Rational(Fraction(v.value), None, None), false(), false())], {}, 0)
            case ir.FieldRef():
                return self.derived_field(v, None)
            case ir.UlnOf():
                return self.derived_field(v.lab, v.multiple)
            case ir.Arith():
                return self.arith(v.op, self.derived(v.left), self.derived(v.right), v.span)
            case ir.Convert():
                return self.arith("×", self.derived(v.value), self.derived(ir.Const("number", v.factor, "", v.span)),
                                  v.span)
            case ir.ValueRef():
                return self.derived(v.value)
            case ir.Choice():
                return self.choice(v)
            case ir.Equivalent():
                return self.equivalent(v)
            case _:
                assert_never(v)

    def derived_field(self, ref: ir.FieldRef, multiple: Decimal | None) -> _Derived:
        v = self.field(ref)
        kind = ref.field.type.kind
        if kind not in ("integer", "decimal", "quantity", "lab") or v.placed is None or v.missing is None:
            raise self.untranslated(ref.span, f"arithmetic on a {kind} field")
        stored = v.placed.column("uln" if multiple is not None and v.uln is not None else "value")
        bound = stored.bound if stored.bound is not None else \
            Fraction(10 ** stored.whole) - Fraction(1, 10 ** stored.scale)  # the largest the column holds
        plausible = ref.field.plausible
        size = _Size(bound, stored.scale, ((ref.field.name, None if stored.bound is None or plausible is None
                                            else plausible.text),))
        column_e = v.e.e if multiple is None else (v.uln.e if v.uln is not None else v.e.e)
        if kind == "integer":  # BIGINT: as a DECIMAL of its own size, so products are DECIMALs, never BIGINT
            column_e = exp.Cast(this=column_e, to=decimal_type(stored.whole, 0, self.dialect))
        to_storage = v.to_storage if kind in ("quantity", "lab") and v.to_storage is not None else Fraction(1)
        # the stored number is the canonical one × to_storage
        k = (Fraction(multiple) if multiple is not None else Fraction(1)) / to_storage
        none = v.none.e if v.none is not None else false()
        alt = _Alt(true(), _Rational(k, (column_e, size), None), none, v.missing.e)
        return _Derived([alt], {src: flag.e for src, flag in flags_of(v)}, v.e.level)

    def arith(self, op: ir.ArithOp, left: _Derived, right: _Derived, span: Span) -> _Derived:
        alts: list[_Alt] = []
        for a in left.alts:
            for b in right.alts:
                act = and_(paren(a.act), paren(b.act))
                none = or_(paren(a.none), paren(b.none))
                unknown = or_(paren(a.unk), paren(b.unk))
                x, y = a.number, b.number
                if op in ("+", "-"):  # (kx·nx·dy ± ky·ny·dx) / (dx·dy), the k's over a common denominator
                    common = x.k.denominator * y.k.denominator // gcd(x.k.denominator, y.k.denominator)
                    kx, ky = int(x.k * common), int(y.k * common)
                    if op == "-":
                        ky = -ky
                    first = self.scaled(kx, self.product(x.n, y.d, span), span)
                    second = self.scaled(ky, self.product(y.n, x.d, span), span)
                    total = exp.Add(this=paren(first[0]), expression=paren(second[0]))
                    size = self.sized(span, first[1].plus(second[1]))
                    number = _Rational(Fraction(1, common), (total, size), self.product(x.d, y.d, span))
                elif op == "×":
                    number = _Rational(x.k * y.k, self.product(x.n, y.n, span), self.product(x.d, y.d, span))
                elif y.k == 0:  # a division by the number 0
                    number = _Rational(Fraction(0), None, None)
                    unknown = or_(paren(unknown), not_(paren(none)))
                else:  # x / y = (kx / ky) · (nx·dy) / (dx·ny), the sign of ny moved up
                    n = self.product(x.n, y.d, span)
                    d = x.d
                    if y.n is not None:
                        negative = compare("<", y.n[0], num(0))
                        top = n[0] if n is not None else num(1)
                        n = (case([(negative, exp.Neg(this=paren(top)))], top),
                             n[1] if n is not None else _Size(Fraction(1), 0))
                        d = self.product(x.d, (exp.Abs(this=y.n[0]), y.n[1]), span)
                        zero = and_(not_(paren(none)), paren(case([(compare("=", y.n[0], num(0)), true())], false())))
                        unknown = or_(paren(unknown), paren(zero))
                    number = _Rational(x.k / y.k, n, d)
                alts.append(_Alt(act, number, none, unknown))
        return _Derived(alts, _merge(left.paths, right.paths), max(left.level, right.level))

    def choice(self, v: ir.Choice) -> _Derived:
        """As the interpreter: a branch is possible while no earlier condition surely holds and
        its own may; the otherwise value while none surely holds."""
        alts: list[_Alt] = []
        paths: dict[Src, exp.Expr] = {}
        level = 0
        reach: list[exp.Expr] = []  # each earlier condition is not surely true
        for condition, value in v.branches:
            c = self.cond(condition)
            level = max(level, c.value.level)
            so_far = and_(*reach) if reach else true()
            may = case([(not_(c.value.e), false())], true())
            gate = and_(paren(so_far), paren(may))
            branch = self.derived(value)
            level = max(level, branch.level)
            alts += [replace(alt, act=and_(paren(gate), paren(alt.act))) for alt in branch.alts]
            paths = _merge(paths, {src: and_(paren(gate), paren(flag)) for src, flag in branch.paths.items()})
            paths = _merge(paths, {src: and_(paren(so_far), paren(flag.e)) for src, flag in c.contrib.items()})
            reach.append(case([(c.value.e, false())], true()))
        last = and_(*reach)
        otherwise = self.derived(v.otherwise)
        alts += [replace(alt, act=and_(paren(last), paren(alt.act))) for alt in otherwise.alts]
        paths = _merge(paths, {src: and_(paren(last), paren(flag)) for src, flag in otherwise.paths.items()})
        return _Derived(alts, paths, max(level, otherwise.level))

    def equivalent(self, v: ir.Equivalent) -> _Derived:
        dose = self.derived(v.dose)
        agent = self.field(v.agent)
        assert agent.missing is not None
        sizes: list[_Size] = []
        whens: list[tuple[exp.Expr, exp.Expr]] = []
        for member, factor in v.table.factors:
            exponent = factor.as_tuple().exponent
            assert isinstance(exponent, int)
            sizes.append(_Size(abs(Fraction(factor)), max(0, -exponent)))
            whens.append((exp.EQ(this=agent.e.e, expression=lit(member)), decimal_literal(factor, self.dialect)))
        factor_term: _Term = (case(whens), _Size(max(s.bound for s in sizes), max(s.places for s in sizes)))
        agent_none = agent.none.e if agent.none is not None else false()
        alts = []
        for alt in dose.alts:
            number = _Rational(alt.number.k, self.product(alt.number.n, factor_term, v.span), alt.number.d)
            alts.append(_Alt(alt.act, number, or_(paren(alt.none), paren(agent_none)),
                             or_(paren(alt.unk), paren(agent.missing.e))))
        paths = _merge(dose.paths, {src: flag.e for src, flag in flags_of(agent)})
        return _Derived(alts, paths, max(dose.level, agent.e.level))

    def common(self, first: tuple[exp.Expr, _Size], second: tuple[exp.Expr, _Size],
               span: Span) -> tuple[exp.Expr, exp.Expr]:
        """Both sides of a comparison cast to one DECIMAL that holds either exactly, so that no
        engine widens them to a type of more than 38 digits (which Spark would round)."""
        whole = max(tables.whole_digits(size.bound) for _, size in (first, second))
        places = max(size.places for _, size in (first, second))
        size = self.sized(span, _Size(Fraction(10 ** whole) - 1, places, _fields(first[1], second[1])))
        to = decimal_type(tables.whole_digits(size.bound) + places, places, self.dialect)
        return exp.Cast(this=first[0], to=to), exp.Cast(this=second[0], to=to)

    def num_compare(self, e: ir.NumCompare) -> Cond:
        """Decided when every pair of values the sides may take agrees; unknown when a side is.
        kx·nx/dx op ky·ny/dy is compared as (kx·L)·nx·dy op (ky·L)·ny·dx, with d > 0 and L > 0."""
        left, right = self.derived(e.left), self.derived(e.right)
        unknown = or_(*(paren(and_(paren(a.act), paren(a.unk))) for a in left.alts + right.alts))
        holds: list[exp.Expr] = []
        fails: list[exp.Expr] = []
        for a in left.alts:
            for b in right.alts:
                x, y = a.number, b.number
                common = x.k.denominator * y.k.denominator // gcd(x.k.denominator, y.k.denominator)
                first = self.scaled(int(x.k * common), self.product(x.n, y.d, e.span), e.span)
                second = self.scaled(int(y.k * common), self.product(y.n, x.d, e.span), e.span)
                answer = case([(or_(paren(a.none), paren(b.none)), false())],
                              compare(e.op, *self.common(first, second, e.span)))
                idle = not_(paren(and_(paren(a.act), paren(b.act))))
                holds.append(or_(idle, paren(answer)))
                fails.append(or_(idle, not_(paren(answer))))
        value = case([(unknown, exp.Null()), (and_(*(paren(h) for h in holds)), true()),
                      (and_(*(paren(f) for f in fails)), false())])
        level = max(left.level, right.level)
        kept = self.keep(Sql(value, level))
        contrib = {src: Sql(and_(is_null(kept.e), paren(flag)), kept.level)
                   for src, flag in _merge(left.paths, right.paths).items()}
        return Cond(kept, contrib)

    # ---- quantifiers ----
    def quantifier(self, e: ir.Quantified | ir.CountCompare | ir.DistinctCount) -> Cond:
        """A quantifier over a patient's list is a patient-level value, even inside another
        list's item condition (it does not depend on that item)."""
        if e.items.scope == "item":
            raise self.untranslated(e.span, "a quantifier over a list inside a list's items")
        outer, self.item = self.item, None
        try:
            return self._quantifier(e)
        finally:
            self.item = outer

    def _quantifier(self, e: ir.Quantified | ir.CountCompare | ir.DistinctCount) -> Cond:
        lst = replace(self.field(e.items), none=None)  # a list recorded as none is empty: 0 items
        assert lst.placed is not None and lst.placed.items is not None and lst.missing is not None
        items = lst.e.e  # the number of items; NULL when the list is missing (none: 0)
        if e.condition is None and not isinstance(e, ir.DistinctCount):
            if isinstance(e, ir.CountCompare):
                test: exp.Expr = compare(e.op, items, num(e.number))
            else:
                test = exp.GT(this=items, expression=num(0)) if e.kind == "any" else true()
            return self.atom([lst], test)
        self.item = (lst.placed.items, e.record)
        try:
            condition = Cond(Sql(true())) if e.condition is None else self.cond(e.condition)
            key = None
            if isinstance(e, ir.DistinctCount):
                if e.key.type.kind in ("lab", "set", "list", "interval") or e.key.measured is not None:
                    raise self.untranslated(e.span, f"different values of a {e.key.type.kind} field")
                key = self.field(ir.FieldRef(e.key, "item", e.span))
        finally:
            self.item = None
        q = _Quantifier(len(self.quantifiers) + 1, lst.placed.items, e.items.field.name, condition.value.level,
                        [], 0, key is not None)
        self.quantifiers.append(q)
        prefix = f"_q{q.number}"
        selected: list[exp.Expr] = [
            _alias(column(PATIENT_ID, "it"), PATIENT_ID, quoted=True),
            _alias(column("ordinal_1", "it"), "ordinal_1", quoted=True),
            _alias(condition.value.e, "_v", quoted=True),
        ]
        flag_items = sorted(condition.contrib.items())
        if key is not None:  # an item counts toward the range while it may match and its key is not none
            assert key.missing is not None and key.src is not None
            keyed = not_(key.none.e) if key.none is not None else true()
            maybe = and_(keyed, paren(or_(is_null(condition.value.e), condition.value.e)))
            flag_items = [(src, Sql(and_(keyed, paren(flag.e)))) for src, flag in flag_items]
            flag_items.append((key.src, Sql(and_(paren(maybe), key.missing.e))))
            sure = and_(keyed, paren(case([(condition.value.e, true())], false())))
            selected += [_alias(key.e.e, "_k", quoted=True), _alias(key.missing.e, "_km", quoted=True),
                         _alias(sure, "_sure", quoted=True),
                         _alias(case([(maybe, true())], false()), "_maybe", quoted=True)]
        for index, (src, flag) in enumerate(flag_items):
            name = f"_c{index}"
            q.flags.append((src, name))
            selected.append(_alias(flag.e, name, quoted=True))
        items_query = (exp.select(*selected, copy=False)
                       .from_(_alias(exp.Table(this=ident(q.items_table)), "it", table=True)))
        if _p_columns(items_query):  # an item condition reads the patient's own fields
            source = self.level_table(q.patient_level)
            items_query = items_query.join(
                _alias(exp.Table(this=ident(source)), "p", table=True),
                on=exp.EQ(this=column(PATIENT_ID, "it"), expression=column(PATIENT_ID, "p")), copy=False)
        counts = self.counts(e, prefix)
        self.ctes.setdefault(q.patient_level, []).extend(
            [(f"{prefix}_items", items_query), (f"{prefix}_agg", counts)])
        q.agg_level = q.patient_level + 1
        self.joins.setdefault(q.agg_level, []).append(q)
        paths = self.paths_query(q)
        if paths is not None:
            self.ctes[q.patient_level].append((f"{prefix}_paths", paths))
        level = q.agg_level

        def count(suffix: str) -> exp.Expr:
            return exp.Coalesce(this=column(f"{prefix}_{suffix}", "p"), expressions=[num(0)])

        t, u, f = count("t"), count("u"), count("f")
        whens: list[tuple[exp.Expr, exp.Expr]] = [(lst.missing.e, exp.Null())]
        if isinstance(e, ir.CountCompare | ir.DistinctCount):
            high = exp.Paren(this=exp.Add(this=t, expression=u))
            n = num(e.number)
            yes, no = {
                ">=": (exp.GTE(this=t, expression=n), exp.LT(this=high, expression=n)),
                ">": (exp.GT(this=t, expression=n), exp.LTE(this=high, expression=n)),
                "<=": (exp.LTE(this=high, expression=n), exp.GT(this=t, expression=n)),
                "<": (exp.LT(this=high, expression=n), exp.GTE(this=t, expression=n)),
                "=": (and_(exp.EQ(this=t, expression=n), exp.EQ(this=high, expression=n)),
                      or_(exp.LT(this=high, expression=n), exp.GT(this=t, expression=n))),
                "!=": (or_(exp.LT(this=high, expression=n), exp.GT(this=t, expression=n)),
                       and_(exp.EQ(this=t, expression=n), exp.EQ(this=high, expression=n))),
            }[e.op]
            whens += [(yes, true()), (no, false())]
        elif e.kind == "any":
            whens += [(exp.GT(this=t, expression=num(0)), true()), (exp.EQ(this=u, expression=num(0)), false())]
        else:
            whens += [(exp.GT(this=f, expression=num(0)), false()), (exp.EQ(this=u, expression=num(0)), true())]
        value = self.keep(Sql(case(whens), level))
        contrib: dict[Src, Sql] = {("f", e.items.field.name): Sql(and_(is_null(value.e), lst.missing.e), value.level)}
        if paths is not None:
            contrib[("q", str(q.number))] = Sql(and_(is_null(value.e), not_(lst.missing.e)), value.level)
        return Cond(value, contrib)

    def counts(self, e: ir.Quantified | ir.CountCompare | ir.DistinctCount, prefix: str) -> exp.Select:
        """Per patient, from the quantifier's items: `t` the items (or different keys) that surely
        match, `u` how many more may, `f` the items that surely do not. Items of a patient the
        patients table lacks give rows no patient joins (`crit screen` reports such items)."""
        items = _alias(exp.Table(this=ident(f"{prefix}_items")), "i", table=True)

        def total(condition: exp.Expr) -> exp.Expr:
            return exp.Sum(this=case([(condition, num(1))], num(0)))

        if not isinstance(e, ir.DistinctCount):
            v = column("_v", "i")
            return (exp.select(
                _alias(column(PATIENT_ID, "i"), PATIENT_ID, quoted=True),
                _alias(total(v.copy()), f"{prefix}_t", quoted=True),
                _alias(total(is_null(v.copy())), f"{prefix}_u", quoted=True),
                _alias(total(not_(v.copy())), f"{prefix}_f", quoted=True), copy=False)
                .from_(items, copy=False).group_by(column(PATIENT_ID, "i"), copy=False))
        # Different keys, in two groupings (one hash table each, where COUNT(DISTINCT …) twice
        # costs two more and a join): per patient and key, whether some item with that key
        # surely (`s`) or perhaps (`m`) matches, and the items whose key is missing that surely
        # (`su`) or perhaps (`mu`) match, each of which may be one more key; then per patient.
        def i(name: str) -> exp.Column:
            return column(name, "i")

        def keyed(flag: str) -> exp.Expr:
            return exp.Max(this=case([(and_(i(flag), not_(i("_km")), exp.Not(this=is_null(i("_k")))), num(1))],
                                     num(0)))

        per_key = (exp.select(
            _alias(i(PATIENT_ID), PATIENT_ID, quoted=True),
            _alias(keyed("_sure"), "s", quoted=True),
            _alias(keyed("_maybe"), "m", quoted=True),
            _alias(total(and_(i("_sure"), i("_km"))), "su", quoted=True),
            _alias(total(and_(i("_maybe"), i("_km"))), "mu", quoted=True),
            _alias(total(not_(i("_v"))), "f", quoted=True), copy=False)
            .from_(items, copy=False).group_by(i(PATIENT_ID), i("_k"), copy=False))

        def summed(name: str) -> exp.Expr:
            return exp.Sum(this=column(name, "g"))

        known, unkeyed = summed("s"), summed("su")
        low = case([(exp.GT(this=known, expression=num(0)), known.copy()),
                    (exp.GT(this=unkeyed, expression=num(0)), num(1))], num(0))
        high: exp.Expr = exp.Add(this=summed("m"), expression=summed("mu"))
        if isinstance(e.key.type, ir.EnumOf):
            high = exp.Least(this=high, expressions=[num(len(e.key.type.enum.members))])
        return (exp.select(
            _alias(column(PATIENT_ID, "g"), PATIENT_ID, quoted=True),
            _alias(low, f"{prefix}_t", quoted=True),
            _alias(exp.Sub(this=paren(high), expression=paren(low.copy())), f"{prefix}_u", quoted=True),
            _alias(summed("f"), f"{prefix}_f", quoted=True), copy=False)
            .from_(_alias(exp.Subquery(this=per_key), "g", table=True), copy=False)
            .group_by(column(PATIENT_ID, "g"), copy=False))

    def paths_query(self, q: _Quantifier) -> exp.Expr | None:
        """The paths that make the quantifier's unknown items unknown, one row each."""
        selects: list[exp.Select] = []
        table = _alias(exp.Table(this=ident(f"_q{q.number}_items")), "i", table=True)
        for src, flag in q.flags:
            kind, name = src
            where = column(flag, "i") if q.distinct else and_(is_null(column("_v", "i")), column(flag, "i"))
            if kind == "q":
                other = _alias(exp.Table(this=ident(f"_q{name}_paths")), "o", table=True)
                selects.append(exp.select(_alias(column(PATIENT_ID, "i"), PATIENT_ID, quoted=True),
                                          _alias(column("path", "o"), "path", quoted=True))
                               .from_(table).join(other, on=exp.EQ(this=column(PATIENT_ID, "i"),
                                                                   expression=column(PATIENT_ID, "o")))
                               .where(where, copy=False))
                continue
            if kind == "i":
                path: exp.Expr = exp.Concat(expressions=[
                    lit(f"{q.list_field}["), exp.Cast(this=column("ordinal_1", "i"), to=exp.DataType.build("VARCHAR")),
                    lit(f"].{name}")])
            else:
                path = lit(name)
            selects.append(exp.select(_alias(column(PATIENT_ID, "i"), PATIENT_ID, quoted=True),
                                      _alias(path, "path", quoted=True)).from_(table).where(where, copy=False))
        if not selects:
            return None
        query: exp.Expr = selects[0]
        for select in selects[1:]:
            query = exp.union(query, select, distinct=False, copy=False)
        return query

    def level_table(self, level: int) -> str:
        return PATIENTS if level == 0 else f"_l{level}"

    # ---- criteria ----
    def code(self, c: Cond) -> Cond:
        """A condition as a criterion code: met, not met, or either (unknown)."""
        v = c.value
        value = Sql(case([(v.e, num(MET)), (not_(v.e), num(NOT_MET))], num(UNKNOWN)), v.level)
        return Cond(value, c.contrib)

    def combine(self, kind: str, count: int, parts: list[Cond]) -> Cond:
        """The outcomes `all`, `any` or `at least count` of the parts can give, each part taking
        any outcome in its set independently (the interpreter's fold over sets)."""
        codes = [self.keep(p.value) if len(parts) > 1 else p.value for p in parts]
        cs = [c.e for c in codes]

        def each(allowed: list[int], op: str) -> exp.Expr:
            tests = [is_in(c, allowed) for c in cs]
            return and_(*(paren(t) for t in tests)) if op == "all" else or_(*(paren(t) for t in tests))

        def bit(test: exp.Expr, value: int) -> exp.Expr:
            return case([(test, num(value))], num(0))

        na = each(with_bit(NA), "all")
        if kind == "all":
            met = and_(paren(each(with_bit(MET | NA), "all")), paren(each(with_bit(MET), "any")))
            not_met = each(with_bit(NOT_MET), "any")
        elif kind == "any":
            met = each(with_bit(MET), "any")
            not_met = and_(paren(each(with_bit(NOT_MET | NA), "all")), paren(each(with_bit(NOT_MET), "any")))
        else:
            may_meet = self._sum([bit(is_in(c, with_bit(MET)), 1) for c in cs])
            sure = exp.Paren(this=self._sum([bit(exp.EQ(this=c, expression=num(MET)), 1) for c in cs]))
            any_not_met, any_met = each(with_bit(NOT_MET), "any"), each(with_bit(MET), "any")
            if count >= 1:
                met = exp.GTE(this=exp.Paren(this=may_meet), expression=num(count))
            else:
                met = each([c for c in CODES if c != NA], "any")
            # some part applies with fewer than `count` met: a part not met, the rest as few as can be;
            # with no part that can be not met, at least one met part makes it apply
            not_met = or_(paren(and_(paren(any_not_met), exp.LT(this=sure, expression=num(count)))),
                          paren(and_(not_(paren(any_not_met)), paren(any_met),
                                     exp.LT(this=sure, expression=num(count)),
                                     exp.LT(this=num(1), expression=num(count)))))
        value = exp.Add(this=exp.Add(this=bit(met, MET), expression=bit(not_met, NOT_MET)), expression=bit(na, NA))
        return self.node(Sql(value, lv(*codes)), parts, coded=True)

    def when(self, gate: Cond, body: Cond) -> Cond:
        """`when`: not applicable if the gate is false, the body if it is true, else the body's
        outcomes or not applicable."""
        g, b = gate.value.e, body.value.e
        value = case([(not_(g), num(NA)), (g, b), (is_in(b, with_bit(NA)), b)], exp.Add(this=b, expression=num(NA)))
        return self.node(Sql(value, lv(gate.value, body.value)), [gate, body], coded=True)

    def line(self, item: ir.Line | ir.When) -> Cond:
        if isinstance(item, ir.Line):
            return self.code(self.cond(item.expr))
        body = [self.line(b) for b in item.body]
        inner = body[0] if len(body) == 1 else self.combine("all", 0, body)
        return self.when(self.cond(item.condition), inner)

    def criterion(self, c: ir.Criterion, gate: Cond | None) -> Cond:
        """As the interpreter: the criterion's outcome (kept in `codes`) is its body under every
        gate above it; its parent combines the body under its own `when` only."""
        own = None
        if c.applies is not None:
            own = self.cond(c.applies)
            if gate is not None:
                both = Sql(and_(paren(gate.value.e), paren(own.value.e)), lv(gate.value, own.value))
                gate = self.node(both, [gate, own])
            else:
                gate = own
        parts: list[Cond] = []
        for item in c.items:
            if isinstance(item, ir.Note):
                continue
            if isinstance(item, ir.Criterion):
                parts.append(self.criterion(item, gate))
            else:
                parts.append(self.line(item))
        body = parts[0] if len(parts) == 1 and c.combine != "at_least" else \
            self.combine(c.combine, c.at_least, parts)
        outcome = body if gate is None else self.when(gate, body)
        kept = self.keep(outcome.value, "c")
        self.codes[c.id] = kept
        if own is None:
            return body
        if gate is own:
            return Cond(kept, outcome.contrib)
        return self.when(own, body)

    def definition(self, d: ir.Definition) -> None:
        lines = d.lines()
        parts = [self.cond(x.expr) for x in lines]
        if len(parts) == 1:
            value = parts[0]
        else:
            value = self.node(Sql(and_(*(paren(p.value.e) for p in parts)), lv(*(p.value for p in parts))), parts)
        kept = self.keep(value.value, "d")
        contrib = {src: self.keep(flag, "m") for src, flag in value.contrib.items()}
        self.definitions[d.name] = Cond(kept, contrib)

    # ---- the query ----
    def compile(self) -> exp.Expr:
        for d in self.protocol.definitions:
            self.definition(d)
        for top in self.protocol.inclusion + self.protocol.exclusion:
            self.tops.append((top, self.criterion(top, None)))

        def refusal(c: ir.Criterion) -> int:
            return NOT_MET if c.section == "inclusion" else MET

        # refused: some top criterion surely refuses; blocking: one may refuse and may not
        refused = or_(*(exp.EQ(this=self.codes[c.id].e, expression=num(refusal(c))) for c, _ in self.tops))
        blocking = {c.id: self.keep(Sql(and_(is_in(self.codes[c.id].e, with_bit(refusal(c))),
                                             exp.NEQ(this=self.codes[c.id].e, expression=num(refusal(c)))),
                                        self.codes[c.id].level), "b") for c, _ in self.tops}
        refused_col = self.keep(Sql(refused, lv(*self.codes.values())), "r")
        unknown_col = self.keep(Sql(or_(*(b.e for b in blocking.values())), lv(*blocking.values())), "u")
        sources: dict[Src, list[Sql]] = {}
        for top, top_value in self.tops:
            for src, flag in top_value.contrib.items():
                block = blocking[top.id]
                sources.setdefault(src, []).append(Sql(and_(block.e, paren(flag.e)), lv(block, flag)))
        flags: list[tuple[Src, Sql]] = []
        for src, found in sorted(sources.items()):
            flag = Sql(and_(not_(refused_col.e), paren(or_(*(paren(f.e) for f in found)))),
                       max(refused_col.level, lv(*found)))
            flags.append((src, self.keep(flag, "m")))
        last = max(self.levels) if self.levels else 0
        for level in self.joins:
            last = max(last, level)
        outcome = {MET: "met", NOT_MET: "not met", NA: "not applicable", MET | NA: "met or not applicable",
                   NOT_MET | NA: "not met or not applicable"}
        decision = self.labels(("eligible", "ineligible", "needs review"))
        label = self.labels((*outcome.values(), "unknown"))
        final: list[exp.Expr] = [_alias(column(PATIENT_ID, "p"), PATIENT_ID, quoted=True)]
        final.append(_alias(case([(refused_col.e, decision("ineligible")), (unknown_col.e, decision("needs review"))],
                                 decision("eligible")), "decision", quoted=True))
        for criterion in self.protocol.criteria():
            code = self.codes[criterion.id].e
            final.append(_alias(case([(exp.EQ(this=code, expression=num(k)), label(v)) for k, v in outcome.items()],
                                     label("unknown")), criterion.id, quoted=True))
        ctes: list[tuple[str, exp.Expr]] = []  # after the chain's levels (assembled below)
        source = _alias(exp.Table(this=ident(f"_l{last}")), "p", table=True)
        query = exp.select(*final, copy=False).from_(source, copy=False)
        # The missing paths, sorted. A patient's own paths are known here: each is its flag's
        # literal, in order, joined by CONCAT_WS (which skips NULLs). Only the paths that
        # quantifiers give (a list item's, or a patient field an item condition reads, which may
        # also be given here: those go with them, so each is listed once) are rows, sorted and
        # joined per patient in `_paths`, one string for each place ("bucket") among the literals
        # where their paths fall in sorted order.
        from_items = {src[1] for q in self.quantifiers for src, _ in q.flags if src[0] == "f"}
        prefixes = {f"{q.list_field}[" for q in self.quantifiers}
        literals = {name: flag for (kind, name), flag in flags if kind == "f"}
        judged = sorted(name for name in literals if name in self.judgments)
        own = sorted(name for name in literals if name not in self.judgments and name not in from_items)
        rows: list[exp.Select] = []
        for (kind, name), flag in flags:
            if kind == "q":
                other = _alias(exp.Table(this=ident(f"_q{name}_paths")), "o", table=True)
                rows.append(exp.select(_alias(column(PATIENT_ID, "p"), PATIENT_ID, quoted=True),
                                       _alias(column("path", "o"), "path", quoted=True))
                            .from_(source).join(other, on=exp.EQ(this=column(PATIENT_ID, "p"),
                                                                 expression=column(PATIENT_ID, "o")))
                            .where(flag.e, copy=False))
            elif name not in self.judgments and name in from_items:
                rows.append(exp.select(_alias(column(PATIENT_ID, "p"), PATIENT_ID, quoted=True),
                                       _alias(lit(name), "path", quoted=True)).from_(source).where(flag.e, copy=False))

        def bucket(path: str) -> int:  # how many of the patient's own literal paths sort before `path`
            return sum(1 for name in own if name < path)

        buckets = sorted({bucket(x) for x in from_items | prefixes}) if rows else []
        needed: set[str] = set()
        if rows:
            union: exp.Expr = rows[0]
            for r in rows[1:]:
                union = exp.union(union, r, distinct=False, copy=False)
            needed = _p_columns(union)
            path = column("path", "m")
            place = case([(exp.LT(this=path, expression=lit(name)), num(index)) for index, name in enumerate(own)],
                         num(len(own))) if own else num(0)
            ctes.append(("_missing", exp.select(column(PATIENT_ID, "m"), path.copy(),
                                                _alias(place, "_b", quoted=True))
                         .distinct().from_(_alias(exp.Subquery(this=union), "m", table=True))))

            def joined(index: int) -> exp.Expr:
                picked = case([(exp.EQ(this=column("_b", "m"), expression=num(index)), path.copy())])
                text: exp.Expr
                if self.dialect == "spark":  # Spark before 4 has no LISTAGG: sort the collected paths
                    text = exp.ArrayToString(this=exp.ArraySort(this=exp.ArrayAgg(this=picked)), expression=lit(", "))
                else:
                    text = exp.GroupConcat(this=exp.Order(this=picked, expressions=[
                        exp.Ordered(this=path.copy(), nulls_first=False)]), separator=lit(", "))
                return exp.Nullif(this=text, expression=lit(""))

            ctes.append(("_paths", exp.select(
                _alias(column(PATIENT_ID, "m"), PATIENT_ID, quoted=True),
                *(_alias(joined(b), f"_p{b}", quoted=True) for b in buckets))
                .from_(_alias(exp.Table(this=ident("_missing")), "m", table=True))
                .group_by(column(PATIENT_ID, "m"))))
            query = query.join(_alias(exp.Table(this=ident("_paths")), "x", table=True),
                               on=exp.EQ(this=column(PATIENT_ID, "p"), expression=column(PATIENT_ID, "x")),
                               join_type="left")
        parts: list[exp.Expr] = []
        for index in range(len(own) + 1):
            if index in buckets:
                parts.append(column(f"_p{index}", "x"))
            if index < len(own):
                parts.append(case([(literals[own[index]].e, lit(own[index]))]))
        pending: list[exp.Expr] = [case([(literals[name].e, lit(name))]) for name in judged]

        def listed(items: list[exp.Expr]) -> exp.Expr:
            """The non-NULL items joined by ', ' (CONCAT_WS's own meaning, which `coalesce` asks
            sqlglot to keep; BigQuery has no CONCAT_WS, and ARRAY_TO_STRING skips NULLs too)."""
            if not items:
                return lit("")
            if self.dialect == "bigquery":
                return exp.ArrayToString(this=exp.Array(expressions=items), expression=lit(", "))
            return exp.ConcatWs(expressions=[lit(", "), *items], coalesce=True)

        query = query.select(_alias(listed(parts), "missing", quoted=True),
                             _alias(listed(pending), "pending_judgments", quoted=True), copy=False)
        chain = self.chain(last, needed | _p_columns(query))
        tables = chain + ctes
        readers = {name: 0 for name, _ in tables}
        for e in [query, *(cte for _, cte in tables)]:
            for table in e.find_all(exp.Table):
                if table.name in readers:
                    readers[table.name] += 1
        for name, cte in tables:
            query = query.with_(ident(name), as_=cte, materialized=self.materialized(readers[name]), copy=False)
        return query

    def materialized(self, readers: int) -> bool | None:
        """Whether a common table expression is computed once and stored. A table read more
        than once is (else each reader inlines its expressions, and a chain of them multiplies
        the query); a table read once is not, where the engine allows saying so: it is then a
        projection in a pipeline, and a level's carried columns cost nothing (JY231 on DuckDB:
        8.5 s instead of 16 s for 10^6 patients)."""
        if self.dialect not in ("duckdb", "postgres"):
            return None
        return readers > 1

    def labels(self, values: tuple[str, ...]) -> Callable[[str], exp.Expr]:
        """The literal of one of a column's few values. On DuckDB it is of an ENUM of them: the
        engine then handles a small integer per row, not a string (writing JY231's outcomes for
        10^6 patients to Parquet: 1.2 s instead of 5.5 s); a reader sees the same strings."""
        if self.dialect != "duckdb":
            return lit
        kind = exp.DataType(this=exp.DataType.Type.ENUM, expressions=[lit(v) for v in values])
        return lambda value: exp.Cast(this=lit(value), to=kind.copy())

    def chain(self, last: int, needed_last: set[str]) -> list[tuple[str, exp.Expr]]:
        """The levels `_l1` … `_l{last}` and the quantifiers' tables between them. Each level
        carries forward only the columns some later reader uses (found from the top down), so a
        materialized level holds what is needed, not every column of the patients table."""
        needs: dict[int, set[str]] = {level: set() for level in range(last + 1)}
        needs[last] |= needed_last
        for level, items in self.ctes.items():
            for _, query in items:
                needs[level] |= _p_columns(query)
        queries: dict[int, exp.Select] = {}
        for level in range(last, 0, -1):
            want = needs[level] | {PATIENT_ID}
            own = [(n, e) for n, e in self.levels.get(level, []) if n in want]
            aggregates = [(q, f"_q{q.number}_{suffix}") for q in self.joins.get(level, []) for suffix in "tuf"]
            defined = {n for n, _ in own} | {n for _, n in aggregates}
            carried = sorted(want - defined)
            select = exp.select(*(_alias(column(n, "p"), n, quoted=True) for n in carried), copy=False)
            for q, name in aggregates:
                if name in want:
                    select = select.select(_alias(column(name, f"a{q.number}"), name, quoted=True), copy=False)
            for name, e in own:
                select = select.select(_alias(e, name, quoted=True), copy=False)
                needs[level - 1] |= _p_columns(e)
            needs[level - 1] |= set(carried)
            select = select.from_(_alias(exp.Table(this=ident(self.level_table(level - 1))), "p", table=True),
                                  copy=False)
            for q in self.joins.get(level, []):
                alias = f"a{q.number}"
                select = select.join(_alias(exp.Table(this=ident(f"_q{q.number}_agg")), alias, table=True),
                                     on=exp.EQ(this=column(PATIENT_ID, "p"), expression=column(PATIENT_ID, alias)),
                                     join_type="left", copy=False)
            queries[level] = select
        out: list[tuple[str, exp.Expr]] = list(self.ctes.get(0, []))
        for level in range(1, last + 1):
            out.append((f"_l{level}", queries[level]))
            out.extend(self.ctes.get(level, []))
        return out


def _p_columns(e: exp.Expr) -> set[str]:
    """The columns `e` reads from the table it calls `p`."""
    return {c.name for c in e.find_all(exp.Column) if c.table == "p" and not isinstance(c.this, exp.Star)}


def comment_safe(text: str) -> str:
    """Text safe in a `--` comment: one line, non-printable characters escaped."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector held off while the query's expressions are built and
    written: tens of thousands of sqlglot nodes (each pointing to its parent) would otherwise set
    off collections that walk them all, again and again (JY231: a third of the emission time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def emit_sql(protocol: ir.Protocol, dialect: str = "duckdb") -> str:
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}; use one of {', '.join(DIALECTS)}")
    layout = tables.layout(protocol)
    with _collector_paused():
        query = _Compiler(protocol, layout, dialect).compile()
        text = query.sql(dialect=dialect, pretty=True, copy=False)
    header = [
        f"-- @generated by crit from {comment_safe(protocol.source)} — do not edit; run `crit build` to regenerate.",
        f"-- source sha256: {protocol.source_hash}",
        f"-- Protocol {comment_safe(protocol.id)}: {comment_safe(protocol.title)}",
        f"-- SQL dialect: {dialect}. Tables: `crit schema {comment_safe(protocol.source)} --sql {dialect}`.",
        "-- One row per patient: decision, each criterion's outcome (a column named by its id),",
        "-- the missing facts and pending judgments (paths joined by ', ').",
    ]
    return "\n".join(header) + "\n" + text + ";\n"
