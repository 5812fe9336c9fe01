"""The checker: resolve every name, check every type and unit, produce `ir.Protocol`.

Errors are collected rather than raised one at a time, so an author sees them all at once.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import assert_never

from crit import ast, ir
from crit.check.derived import Derived, is_derived
from crit.check.names import did_you_mean, reserved_reason
from crit.check.units import UnitError, exact_decimal, factor, molar_factor, molar_mass, parse_unit, spellings
from crit.diagnostics import Collector
from crit.english import counted
from crit.ir import Unit
from crit.text import decimal_text

_FLIP: dict[ir.CompareOp, ir.CompareOp] = {">=": "<=", "<=": ">=", ">": "<", "<": ">", "=": "=", "!=": "!="}
_NUMERIC: tuple[ir.TypeKind, ...] = ("integer", "decimal", "quantity", "lab")
_UNDATED: tuple[ir.TypeKind, ...] = ("list", "judgment", "date", "interval")  # cannot be `measured within` a window
_KEYS: tuple[ir.TypeKind, ...] = ("text", "enum", "integer", "date")  # what `count(different KEY in …)` tells apart


@dataclass(frozen=True)
class _Scope:
    """What a name can mean where it is written: patient fields, definitions, list items."""

    fields: dict[str, ir.Field]
    definitions: dict[str, ast.Define]
    item: ir.Record | None = None

    def names(self) -> list[str]:
        names = list(self.fields) + list(self.definitions)
        if self.item is not None:
            names += [f.name for f in self.item.fields]
        return names


def check(module: ast.Module, imported: Sequence[ast.Module], source_hash: str) -> ir.Protocol:
    """Check a protocol module and the schema modules it imports (already parsed)."""
    return _Checker(source_hash).run(module, imported)


class _Checker:
    def __init__(self, source_hash: str) -> None:
        self.diagnostics = Collector()
        self.source_hash = source_hash
        self.enums: dict[str, ir.EnumType] = {}
        self.enum_spans: dict[str, ast.Span] = {}
        self.records: dict[str, ir.Record] = {}
        self.fields: dict[str, ir.Field] = {}
        self.definitions: dict[str, ast.Define] = {}
        self.def_deps: dict[str, list[str]] = {}
        self.checked_defs: dict[str, ir.Definition] = {}
        self.current_def: str | None = None
        self.criterion_ids: dict[str, ast.Span] = {}
        self.rejected: set[str] = set()  # declared but in error: uses are not reported again
        self.derived = Derived(self)

    def error(self, code: str, span: ast.Span, message: str, hint: str | None = None) -> None:
        self.diagnostics.error(code, span, message, hint)

    # ---- whole protocol ----
    def run(self, module: ast.Module, imported: Sequence[ast.Module]) -> ir.Protocol:
        modules = [*imported, module]
        if module.header is None:
            span = ast.Span(module.file, 1, 1, 1, 2)
            self.error("E305", span, "this file has no protocol header",
                       'start it with: protocol ID "Title"; a schema file is imported by a protocol')
        for m in modules:
            for enum in m.enums:
                self.declare_enum(enum)
        record_decls = [r for m in modules for r in m.records]
        for record in record_decls:
            if not self.usable_name(record.name, record.span, "a record", "record"):
                continue
            if record.name in self.records or record.name in self.enums:
                self.error("E102", record.span, f"'{record.name}' is declared twice",
                           "rename one of the two declarations")
                self.rejected.add(record.name)
                continue
            self.records[record.name] = ir.Record(
                record.name, record.label, self.declare_fields(record.fields, in_record=True),
                record.span,
            )
        patient_fields: list[ast.FieldDecl] = [f for m in modules for p in m.patients for f in p.fields]
        if not patient_fields:
            span = ast.Span(module.file, 1, 1, 1, 2)
            self.error("E305", span, "no patient fields are declared",
                       "declare them in a 'patient' block, or import a schema file that has one")
        for field in self.declare_fields(tuple(patient_fields), in_record=False):
            self.fields[field.name] = field
        self.check_anchors(patient_fields)
        for m in modules:
            for define in m.defines:
                if not self.usable_name(define.name, define.span, "a definition", "define"):
                    continue
                if define.name in self.definitions or define.name in self.fields:
                    self.error("E102", define.span, f"'{define.name}' is declared twice",
                               "a definition needs a name no field or other definition has")
                    continue
                self.definitions[define.name] = define
            for value in m.values:
                if not self.usable_name(value.name, value.span, "a derived value", "define"):
                    continue
                if value.name in self.definitions or value.name in self.fields:
                    self.error("E102", value.span, f"'{value.name}' is declared twice",
                               "a derived value needs a name no field or other definition has")
                    continue
                self.derived.declare(value)
        for m in modules:
            for table in m.equivalences:
                if self.usable_name(table.name, table.span, "an equivalence table", "equivalence"):
                    self.derived.declare_table(table, self.enums)
        scope = _Scope(self.fields, self.definitions)
        self.derived.check_all(scope)
        for define in self.definitions.values():
            self.check_definition(define, scope)
        order = self.definition_order()
        inclusion = tuple(self.criterion(c, "inclusion", None, scope) for c in module.inclusion)
        exclusion = tuple(self.criterion(c, "exclusion", None, scope) for c in module.exclusion)
        if not inclusion and not exclusion and module.header is not None:
            self.error("E305", module.header.span, "the protocol has no criteria",
                       "add an 'inclusion' or 'exclusion' section")
        self.diagnostics.raise_if_errors()
        header = module.header
        assert header is not None
        return ir.Protocol(
            id=header.id,
            title=header.title,
            version=header.version,
            notes=header.notes,
            source=module.file,
            source_hash=self.source_hash,
            enums=tuple(self.enums.values()),
            records=tuple(self.records.values()),
            fields=tuple(self.fields.values()),
            definitions=tuple(self.checked_defs[name] for name in order),
            inclusion=inclusion,
            exclusion=exclusion,
            values=self.derived.definitions(),
            equivalences=tuple(self.derived.tables.values()),
        )

    # ---- schema ----
    def usable_name(self, name: str, span: ast.Span, what: str, keyword: str = "") -> bool:
        """False (with an error) for a name that could be declared but never used.
        `keyword` is the word the declaration starts with (`enum`, `record`, `define`)."""
        reason = reserved_reason(name)
        if reason is None:
            return True
        width = len(keyword) + 1 + len(name) if keyword else len(name)
        self.error("E105", ast.Span(span.file, span.line, span.column, span.line, span.column + width),
                   f"{reason}, so it cannot name {what}",
                   f"a criterion could not refer to it; rename it, e.g. '{name.lower()}_'")
        self.rejected.add(name)
        return False

    def declare_enum(self, enum: ast.EnumDecl) -> None:
        if not self.usable_name(enum.name, enum.span, "an enum", "enum"):
            return
        if enum.name in self.enums:
            self.error("E102", enum.span, f"enum '{enum.name}' is declared twice",
                       "rename one of them, or import the schema only once")
            return
        seen: set[str] = set()
        members = []
        for member in enum.members:
            if not self.usable_name(member.name, member.span, "enum member"):
                continue
            if member.name in seen:
                self.error("E102", member.span, f"'{member.name}' appears twice in enum '{enum.name}'",
                           "remove the repeated member")
                continue
            seen.add(member.name)
            members.append((member.name, member.label))
        self.enums[enum.name] = ir.EnumType(enum.name, enum.label, tuple(members))
        self.enum_spans[enum.name] = enum.span

    def declare_fields(self, decls: tuple[ast.FieldDecl, ...], in_record: bool) -> tuple[ir.Field, ...]:
        out: dict[str, ir.Field] = {}
        for decl in decls:
            if not self.usable_name(decl.name, decl.span, "a field"):
                continue
            if decl.name in out:
                self.error("E102", decl.span, f"field '{decl.name}' is declared twice",
                           "each field has one declaration; rename or remove the other")
                continue
            type_ = self.resolve_type(decl.type, in_record)
            if type_ is None:
                self.rejected.add(decl.name)
                continue
            if type_.kind == "judgment" and decl.optional:
                self.error("E103", decl.type.span, "a judgment cannot be optional",
                           "a judgment not yet recorded is already pending; remove the '?'")
            plausible = self.plausible(decl, type_) if decl.plausible is not None else None
            measured = self.freshness(decl, type_, in_record) if decl.measured is not None else None
            out[decl.name] = ir.Field(decl.name, type_, decl.optional, decl.label, decl.span, plausible, measured)
        return tuple(out.values())

    def plausible(self, decl: ast.FieldDecl, t: ir.Type) -> ir.Plausible | None:
        """A field's plausible range, converted exactly to its canonical unit; None (with an
        error) when it does not fit the field."""
        given = decl.plausible
        assert given is not None
        match t:
            case ir.Measure():
                measure: ir.Measure | None = t
            case ir.Scalar() if t.kind in _NUMERIC:
                measure = None
            case ir.Scalar() | ir.EnumOf() | ir.SetOf() | ir.ListOf():
                self.error("E110", given.span,
                           f"{decl.name} is {_a(t.describe())}; only a number has a plausible range",
                           "give ranges to integer, decimal, quantity and lab fields, e.g. age: integer from 0 to 130")
                return None
            case _:
                assert_never(t)
        ratio: Fraction = Fraction(1)
        unit_text = measure.unit.text if measure is not None else ""
        if given.unit is not None:
            if measure is None:
                self.error("E110", given.unit.span, f"{decl.name} is {_a(t.kind)} and has no unit",
                           f"write the range alone: from {given.low.text} to {given.high.text}")
                return None
            unit = self.unit(given.unit)
            if unit is None:
                return None
            try:
                ratio = self.convert(unit, measure)
            except UnitError as err:
                self.error("E110", given.unit.span,
                           f"{decl.name} is measured in {measure.unit.text}, but {err.message}", err.hint)
                return None
            unit_text = given.unit.text
        if given.low.value > given.high.value:
            self.error("E110", given.span,
                       f"this range runs down, from {given.low.text} to {given.high.text}",
                       f"write the lower bound first: from {given.high.text} to {given.low.text}")
            return None
        low = exact_decimal(Fraction(given.low.value) * ratio)
        high = exact_decimal(Fraction(given.high.value) * ratio)
        text = f"{given.low.text} to {given.high.text}" + (f" {unit_text}" if unit_text else "")
        return ir.Plausible(low, high, text)

    def freshness(self, decl: ast.FieldDecl, t: ir.Type, in_record: bool) -> ir.Freshness | None:
        """`measured within N unit before ANCHOR` on a field: checked here but for its anchor,
        a patient date field, which `check_anchors` resolves once every patient field is known."""
        m = decl.measured
        assert m is not None
        if in_record:
            self.error("E130", m.span, "only a patient field can be dated",
                       "declare the result as a patient field, or drop 'measured within …'")
            return None
        if t.kind in _UNDATED:
            self.error("E130", m.span, f"{_a(t.describe())} cannot be dated with 'measured within'",
                       "date a result that is measured: a lab value, a quantity, a score or a test result")
            return None
        if m.duration.amount == 0:
            self.error("E205", m.duration.span, "a window of 0 has no length",
                       "give the window a length, e.g. measured within 14 days before screening")
            return None
        return ir.Freshness(m.duration.amount, ir.narrow(m.duration.unit, ir.WINDOW_UNITS),
                            ir.narrow(m.direction, ir.DIRECTIONS), m.anchor.name)

    def check_anchors(self, decls: Sequence[ast.FieldDecl]) -> None:
        """Each dated field's anchor is a patient date field that is not itself dated."""
        for decl in decls:
            field = self.fields.get(decl.name)
            if decl.measured is None or field is None or field.measured is None:
                continue
            anchor = decl.measured.anchor
            found = self.fields.get(anchor.name)
            if found is None:
                dates = [f.name for f in self.fields.values() if f.type.kind == "date"]
                self.error("E130", anchor.span, f"unknown field '{anchor.name}'",
                           did_you_mean(anchor.name, dates) or "name a patient date field, e.g. screening")
            elif found.type.kind != "date" or found.measured is not None:
                self.error("E130", anchor.span,
                           f"a result is dated from a date, and {anchor.name} is {_a(found.type.describe())}",
                           "name a patient date field, e.g. measured within 14 days before screening")

    def resolve_type(self, t: ast.TypeExpr, in_record: bool) -> ir.Type | None:
        if t.kind in ("quantity", "lab"):
            assert t.unit is not None
            unit = self.unit(t.unit)
            if unit is None:
                return None
            analyte = self.analyte(t.analyte) if t.analyte is not None else None
            also: list[tuple[Unit, Decimal | Fraction]] = []
            used = False
            for other in t.also:
                other_unit = self.unit(other)
                if other_unit is None:
                    continue
                via = molar_factor(other_unit, unit, analyte.molar_mass) if analyte is not None else None
                if via is not None:
                    also.append((other_unit, exact_decimal(via)))
                    used = True
                    continue
                try:
                    also.append((other_unit, exact_decimal(factor(other_unit, unit))))
                except UnitError as err:
                    advice = err.hint
                    related = molar_factor(other_unit, unit, Fraction(1)) is not None
                    if related and t.analyte is not None:
                        continue  # the analyte's molar mass is in error, and reported
                    if related:
                        advice = ("a mass and a molar concentration of one analyte convert by its molar mass; "
                                f"declare it, e.g. also {other.text} as glucose molar mass 180.156 g/mol")
                    self.error("E104", other.span, err.message, advice)
            if analyte is not None and t.analyte is not None and not used:
                self.error("E111", t.analyte.span,
                           f"no unit of this field needs the molar mass of {analyte.name}",
                           f"a molar mass converts a mass concentration (mg/dL) into a molar one "
                           f"(mmol/L); list such a unit after 'also', or remove 'as {analyte.name} …'")
            spelled: list[tuple[str, Decimal | Fraction]] = [(text, Decimal(1)) for text in spellings(unit.text)]
            spelled += [(text, ratio) for other_unit, ratio in also for text in spellings(other_unit.text)]
            return ir.Measure(ir.narrow(t.kind, ("quantity", "lab")), unit, also=tuple(also),
                              spellings=tuple(spelled), analyte=analyte)
        if t.kind == "set":
            assert t.name is not None
            enum = self.enums.get(t.name)
            if enum is None:
                self.error("E103", t.span, f"unknown enum '{t.name}'",
                           did_you_mean(t.name, self.enums) or "declare it with 'enum'")
                return None
            return ir.SetOf(enum)
        if t.kind == "list":
            assert t.name is not None
            if in_record:
                self.error("E103", t.span, "a record cannot hold a list",
                           "declare the list as a patient field")
                return None
            if t.name in self.rejected and t.name not in self.records:
                return None
            if t.name not in self.records:
                self.error("E103", t.span, f"unknown record '{t.name}'",
                           did_you_mean(t.name, self.records) or "declare it with 'record'")
                return None
            return ir.ListOf(t.name)
        if t.kind in ir.BASE_TYPES:
            return ir.Scalar(ir.narrow(t.kind, ir.BASE_TYPES))
        if t.kind in self.enums:
            return ir.EnumOf(self.enums[t.kind])
        hint = did_you_mean(t.kind, [*ir.BASE_TYPES, *self.enums, "quantity", "lab"])
        if t.kind in self.records:
            hint = f"a record is used through a list: 'list of {t.kind}'"
        self.error("E103", t.span, f"unknown type '{t.kind}'",
                   hint or "types are bool, integer, decimal, text, date, interval, titer, judgment, "
                   "quantity UNIT, lab UNIT, an enum, set of ENUM, list of RECORD")
        return None

    def analyte(self, analyte: ast.Analyte) -> ir.Analyte | None:
        unit = self.unit(analyte.unit)
        if unit is None:
            return None
        try:
            grams = molar_mass(Fraction(analyte.molar_mass.value), unit)
        except UnitError as err:
            self.error("E111", analyte.span, err.message, err.hint)
            return None
        return ir.Analyte(analyte.name, grams, f"{analyte.molar_mass.text} {analyte.unit.text}")

    def convert(self, unit: Unit, t: ir.Measure) -> Fraction:
        """The exact factor from `unit` to the field's canonical unit: of the same dimension, or
        a mass and a molar concentration of the field's analyte. Raises `UnitError`."""
        if t.analyte is not None:
            via = molar_factor(unit, t.unit, t.analyte.molar_mass)
            if via is not None:
                return via
        return factor(unit, t.unit)

    def unit(self, unit: ast.Unit) -> Unit | None:
        try:
            return parse_unit(unit.text)
        except UnitError as err:
            self.error("E104", unit.span, err.message, err.hint)
            return None

    # ---- definitions ----
    def check_definition(self, define: ast.Define, scope: _Scope) -> None:
        self.current_def = define.name
        self.def_deps[define.name] = []
        body: list[ir.Line | ir.Note] = []
        for item in define.body:
            if isinstance(item, ast.Note):
                body.append(ir.Note(item.text, item.span))
            elif isinstance(item, ast.When):
                self.error("E304", item.span, "a definition cannot use 'when'",
                           "definitions are facts that always apply; put 'when' in the criterion")
            else:
                body.append(ir.Line(self.condition(item.expr, scope), item.span))
        self.current_def = None
        if not any(isinstance(b, (ast.Line, ast.When)) for b in define.body):
            self.error("E208", define.span, f"definition '{define.name}' has no condition",
                       "give it at least one line that is true or false")
        self.checked_defs[define.name] = ir.Definition(define.name, define.label, tuple(body), define.span)

    def definition_order(self) -> list[str]:
        """Dependency order (each after what it uses); a cycle is an error."""
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                cycle = [*path[path.index(name):], name]
                define = self.definitions[name]
                self.error("E303", define.span,
                           "definitions refer to each other in a cycle: " + " → ".join(cycle),
                           "a definition cannot depend on itself; break the cycle")
                return
            state[name] = 1
            for dep in self.def_deps.get(name, []):
                visit(dep, [*path, name])
            state[name] = 2
            order.append(name)

        for name in self.definitions:
            visit(name, [])
        return [name for name in order if name in self.checked_defs]

    # ---- criteria ----
    def criterion(self, c: ast.Criterion, section: ir.Section, parent: ast.Criterion | None,
                  scope: _Scope) -> ir.Criterion:
        prefix = "I" if section == "inclusion" else "E"
        if c.id in self.criterion_ids:
            first = self.criterion_ids[c.id]
            self.error("E301", c.id_span, f"criterion id {c.id} is used twice",
                       f"it was first used on line {first.line}; ids must be unique")
        else:
            self.criterion_ids[c.id] = c.id_span
        if not c.id.startswith(prefix):
            self.error("E302", c.id_span, f"{section} criterion ids start with {prefix}, not {c.id[0]}",
                       f"write {prefix}{c.id[1:]}")
        elif parent is not None and not c.id.startswith(parent.id + "."):
            self.error("E302", c.id_span, f"criterion {c.id} is nested under {parent.id}",
                       f"number it {parent.id}.N, or move it out of {parent.id}")
        elif parent is None and "." in c.id:
            self.error("E302", c.id_span, f"criterion {c.id} is numbered as a sub-criterion",
                       f"nest it under {c.id.rsplit('.', 1)[0]}, or number it without a dot")
        applies = self.condition(c.applies, scope) if c.applies is not None else None
        items: list[ir.Line | ir.When | ir.Note | ir.Criterion] = []
        for item in c.items:
            if isinstance(item, ast.Criterion):
                items.append(self.criterion(item, section, c, scope))
            elif isinstance(item, ast.Note):
                items.append(ir.Note(item.text, item.span))
            else:
                items.append(self.body_line(item, scope))
        parts = [i for i in items if not isinstance(i, ir.Note)]
        if not parts:
            self.error("E208", c.id_span, f"criterion {c.id} has no condition",
                       "give it a line that is true or false, or sub-criteria")
        if c.combine == "at_least" and not 1 <= c.at_least <= max(len(parts), 1):
            self.error("E209", c.id_span,
                       f"criterion {c.id} requires at least {c.at_least} of {counted(len(parts), 'part')}",
                       f"use a number from 1 to {len(parts)}")
        return ir.Criterion(c.id, c.title, section, ir.narrow(c.combine, ir.COMBINES), c.at_least, applies,
                            tuple(items), c.span)

    def body_line(self, item: ast.Line | ast.When, scope: _Scope) -> ir.Line | ir.When:
        if isinstance(item, ast.Line):
            return ir.Line(self.condition(item.expr, scope), item.span)
        condition = self.condition(item.condition, scope)
        return ir.When(condition, tuple(self.body_line(b, scope) for b in item.body), item.span)

    # ---- expressions ----
    def condition(self, e: ast.Expr, scope: _Scope) -> ir.Expr:
        """An expression that must be true or false."""
        match e:
            case ast.Not():
                return ir.Not(self.condition(e.operand, scope), e.span)
            case ast.And():
                return ir.And(tuple(self.condition(x, scope) for x in e.operands), e.span)
            case ast.Or():
                return ir.Or(tuple(self.condition(x, scope) for x in e.operands), e.span)
            case ast.AtLeast():
                operands = tuple(self.condition(x, scope) for x in e.operands)
                if not 1 <= e.count <= len(operands):
                    self.error("E209", e.span, f"at least {e.count} of {len(operands)} can never be "
                               + ("met" if e.count > len(operands) else "anything but met"),
                               f"use a number from 1 to {len(operands)}")
                return ir.AtLeast(e.count, operands, ir.narrow(e.kind, ir.AT_LEAST_KINDS), e.span)
            case ast.BoolLit():
                return ir.Truth(e.value, e.span)
            case ast.Ref() if is_derived(e, self.derived.declared, scope):
                self.error("E212", e.span, f"'{e.name}' is a derived value, a number, not a condition",
                           f"compare it: {e.name} >= …")
                return ir.Truth(False, e.span)
            case ast.Ref():
                return self.ref_condition(e, scope)
            case ast.Compare() if is_derived(e.left, self.derived.declared, scope) \
                    or is_derived(e.right, self.derived.declared, scope):
                return self.derived.compare(e, scope)
            case ast.Compare():
                return self.compare(e, scope)
            case ast.Between() if any(is_derived(x, self.derived.declared, scope) for x in (e.value, e.low, e.high)):
                return self.derived.between(e, scope)
            case ast.Between():
                return self.between(e, scope)
            case ast.Arith() | ast.NumberIn() | ast.Choice() | ast.Equivalent():
                self.error("E212", e.span, "a calculation is a number, not a condition",
                           "compare it with a value, e.g. weight / (height × height) < 30 kg/m^2")
                return ir.Truth(False, e.span)
            case ast.Membership():
                return self.membership(e, scope)
            case ast.Window():
                return self.window(e, scope)
            case ast.Quantifier():
                return self.quantified(e, scope)
            case ast.NoneRecorded():
                return self.none_recorded(e, scope)
            case ast.Overlaps() | ast.OngoingAt() | ast.Lasted():
                return self.interval_test(e, scope)
            case ast.Number() | ast.QuantityLit() | ast.UlnLit() | ast.TiterLit() | ast.DateLit() | ast.TextLit():
                self.error("E208", e.span, f"a {_literal_kind(e)} is not a condition",
                           "a line must be true or false, e.g. a comparison: hemoglobin >= 60 g/L")
                return ir.Truth(False, e.span)
            case _:
                assert_never(e)

    def quantified(self, e: ast.Quantifier, scope: _Scope) -> ir.Expr:
        """`any(list where c)` or `all(list where c)` as a condition; `count(...)` is a number."""
        if e.kind == "count":
            self.error("E208", e.span, "count(...) is a number, not a condition",
                       "compare it, e.g. count(treatments where immunosuppressive) >= 2")
            return ir.Truth(False, e.span)
        items, record = self.list_ref(e.list_name, scope)
        if items is None or record is None:
            return ir.Truth(False, e.span)
        if e.condition is None and e.kind == "all":
            self.error("E207", e.span, f"all({e.list_name.name}) needs a condition",
                       f"say what every item must satisfy: all({e.list_name.name} where …)")
            return ir.Truth(False, e.span)
        cond = self.condition(e.condition, self.item_scope(scope, record)) if e.condition else None
        return ir.Quantified(ir.narrow(e.kind, ir.QUANTIFIED_KINDS), items, record, cond, e.span)

    def item_scope(self, scope: _Scope, record: ir.Record) -> _Scope:
        return _Scope(scope.fields, scope.definitions, record)

    def patient_scope(self) -> _Scope:
        return _Scope(self.fields, self.definitions)

    def lookup_quiet(self, ref: ast.Ref, scope: _Scope) -> ir.FieldRef | ast.Define | None:
        """What a name means, or None, reporting nothing."""
        if scope.item is not None:
            for field in scope.item.fields:
                if field.name == ref.name:
                    return ir.FieldRef(field, "item", ref.span)
        if ref.name in scope.fields:
            return ir.FieldRef(scope.fields[ref.name], "patient", ref.span)
        return scope.definitions.get(ref.name)

    def lookup(self, ref: ast.Ref, scope: _Scope) -> ir.FieldRef | ast.Define | None:
        if scope.item is not None:
            for field in scope.item.fields:
                if field.name == ref.name:
                    return ir.FieldRef(field, "item", ref.span)
        if ref.name in scope.fields:
            return ir.FieldRef(scope.fields[ref.name], "patient", ref.span)
        if ref.name in scope.definitions:
            return scope.definitions[ref.name]
        if ref.name in self.rejected:
            return None  # its declaration was already reported
        if ref.name in self.derived.declared:
            self.error("E212", ref.span, f"'{ref.name}' is a derived value, a number, and only comparisons use it",
                       f"compare it: {ref.name} >= …")
            return None
        hint = did_you_mean(ref.name, [*scope.names(), *self.derived.declared])
        if hint is None:
            hint = "declare it as a patient field, or define it with 'define'"
        self.error("E201", ref.span, f"unknown field '{ref.name}'", hint)
        return None

    def ref_condition(self, ref: ast.Ref, scope: _Scope) -> ir.Expr:
        found = self.lookup(ref, scope)
        if found is None:
            return ir.Truth(False, ref.span)
        if isinstance(found, ast.Define):
            if self.current_def is not None:
                self.def_deps[self.current_def].append(found.name)
            return ir.DefinitionRef(found.name, found.label, ref.span)
        match found.field.type:
            case ir.Scalar(kind="bool" | "judgment"):
                return found
        self.error("E208", ref.span, f"'{ref.name}' is {_a(found.field.type.describe())}, not a condition",
                   _condition_hint(ref.name, found.field.type))
        return ir.Truth(False, ref.span)

    def list_ref(self, ref: ast.Ref, scope: _Scope) -> tuple[ir.FieldRef | None, ir.Record | None]:
        found = self.lookup(ref, scope)
        if found is None:
            return None, None
        if isinstance(found, ast.Define) or not isinstance(found.field.type, ir.ListOf):
            self.error("E207", ref.span, f"'{ref.name}' is not a list",
                       "count(...), any(...) and all(...) go over a 'list of RECORD' field")
            return None, None
        return found, self.records[found.field.type.record]

    def value(self, e: ast.Expr, scope: _Scope) -> ir.FieldRef | None:
        """A field used as a value; None (with an error) for anything else."""
        if isinstance(e, ast.Ref):
            found = self.lookup(e, scope)
            if found is None:
                return None
            if isinstance(found, ast.Define):
                self.error("E202", e.span, f"'{e.name}' is a definition, a condition with no value",
                           "use it on its own as a condition")
                return None
            return found
        return None

    def operand(self, e: ast.Expr, against: ir.Type, scope: _Scope, field_name: str) -> ir.Value | None:
        """The other side of a comparison with a field of type `against`."""
        if isinstance(e, ast.Ref):
            other = self.value(e, scope)
            if other is None:
                return None
            if not _same_type(other.field.type, against):
                self.error("E202", e.span,
                           f"cannot compare {field_name} ({against.describe()}) with "
                           f"{e.name} ({other.field.type.describe()})",
                           "compare fields of the same type and unit")
                return None
            return other
        return self.literal(e, against, field_name)

    def literal(self, e: ast.Expr, t: ir.Type, field_name: str) -> ir.Const | None:
        match t:
            case ir.Measure():
                return self.measure_literal(e, t, field_name)
            case ir.Scalar():
                return self.scalar_literal(e, t, field_name)
            case ir.EnumOf() | ir.SetOf() | ir.ListOf():
                self.mismatch(e, t, field_name)
                return None
            case _:
                assert_never(t)

    def mismatch(self, e: ast.Expr, t: ir.Type, field_name: str) -> None:
        """The error for a literal `e` that a field of type `t` cannot be compared with."""
        if isinstance(e, ast.UlnLit):
            self.error("E206", e.span, f"× ULN needs a lab value, and {field_name} is {_a(t.describe())}",
                       "declare the field as 'lab UNIT' so it carries its upper limit of normal")
        else:
            self.error("E202", e.span, f"cannot compare {field_name} ({t.describe()}) with {_a(_literal_kind(e))}",
                       _compare_hint(t, field_name))

    def measure_literal(self, e: ast.Expr, t: ir.Measure, field_name: str) -> ir.Const | None:
        if isinstance(e, ast.QuantityLit):
            unit = self.unit(e.unit)
            if unit is None:
                return None
            try:
                ratio = self.convert(unit, t)
            except UnitError as err:
                self.error("E204", e.unit.span,
                           f"{field_name} is measured in {t.unit.text}, but {err.message}", err.hint)
                return None
            converted = exact_decimal(Fraction(e.number.value) * ratio)
            times = "× " if e.unit.text[:1].isdigit() else ""  # 20 × 10^9/L
            return ir.Const("number", converted, f"{e.number.text} {times}{e.unit.text}", e.span)
        if isinstance(e, ast.Number):
            self.error("E204", e.span, f"{field_name} is a quantity in {t.unit.text}; this number has no unit",
                       f"write {e.text} {t.unit.text}")
            return None
        if isinstance(e, ast.UlnLit):
            self.error("E206", e.span, f"{field_name} is a quantity with no upper limit of normal",
                       f"declare it as 'lab {t.unit.text}' to compare with × ULN")
            return None
        self.mismatch(e, t, field_name)
        return None

    def scalar_literal(self, e: ast.Expr, t: ir.Scalar, field_name: str) -> ir.Const | None:
        kind = t.kind
        match kind:
            case "integer" | "decimal":
                if isinstance(e, ast.Number):
                    whole = kind == "integer" and e.value == e.value.to_integral_value()
                    value: Decimal | int = int(e.value) if whole else e.value
                    return ir.Const("number", value, e.text, e.span)
                if isinstance(e, ast.QuantityLit):
                    self.error("E204", e.unit.span, f"{field_name} is {_a(kind)} and has no unit",
                               f"write the number alone: {e.number.text}")
                    return None
            case "titer":
                if isinstance(e, ast.TiterLit):
                    return ir.Const("titer", e.dilution, e.text, e.span)
                self.error("E202", e.span, f"{field_name} is a titer; compare it with a titer",
                           "write a titer such as 1:80")
                return None
            case "date":
                if isinstance(e, ast.DateLit):
                    try:
                        day = datetime.date.fromisoformat(e.text)
                    except ValueError:
                        self.error("E202", e.span, f"{e.text} is not a date", "write dates as YYYY-MM-DD")
                        return None
                    return ir.Const("date", day, e.text, e.span)
                self.error("E202", e.span, f"{field_name} is a date; compare it with a date",
                           "write a date as YYYY-MM-DD, or use a window: within 4 weeks before screening")
                return None
            case "text":
                if isinstance(e, ast.TextLit):
                    return ir.Const("text", e.value, '"' + e.value + '"', e.span)
            case "bool" | "judgment":
                if isinstance(e, ast.BoolLit):
                    return ir.Const("bool", e.value, "true" if e.value else "false", e.span)
            case "interval":
                pass
            case _:
                assert_never(kind)
        self.mismatch(e, t, field_name)
        return None

    def compare(self, e: ast.Compare, scope: _Scope) -> ir.Expr:
        left, right, op = e.left, e.right, ir.narrow(e.op, ir.COMPARE_OPS)
        if not isinstance(left, (ast.Ref, ast.Quantifier)) and isinstance(right, (ast.Ref, ast.Quantifier)):
            left, right, op = right, left, _FLIP[op]
        if isinstance(left, ast.Quantifier) and left.kind == "count":
            return self.count_compare(e, left, right, op, scope)
        field = self.value(left, scope)
        if field is None:
            if not isinstance(left, ast.Ref):
                self.error("E202", e.span, "this comparison has no field on either side",
                           "compare a field with a value: age >= 18")
            return ir.Truth(False, e.span)
        t = field.field.type
        name = field.field.name
        if not _applies(op, t):
            self.error("E202", e.span, f"'{op}' does not apply to {name} ({t.describe()})", _compare_hint(t, name))
            return ir.Truth(False, e.span)
        if t.kind == "lab" and isinstance(right, ast.UlnLit):
            return ir.UlnCompare(op, field, right.number.value, e.span)
        other = self.operand(right, t, scope, name)
        if other is None:
            return ir.Truth(False, e.span)
        return ir.Compare(op, field, other, e.span)

    def count_compare(self, e: ast.Compare, q: ast.Quantifier, right: ast.Expr, op: ir.CompareOp,
                      scope: _Scope) -> ir.Expr:
        items, record = self.list_ref(q.list_name, scope)
        if not isinstance(right, ast.Number) or "." in right.text:
            self.error("E202", right.span, "a count is compared with a whole number",
                       "write e.g. count(treatments where immunosuppressive) >= 2")
            return ir.Truth(False, e.span)
        if items is None or record is None:
            return ir.Truth(False, e.span)
        cond = self.condition(q.condition, self.item_scope(scope, record)) if q.condition else None
        if q.key is not None:
            key = next((f for f in record.fields if f.name == q.key.name), None)
            if key is None:
                names = [f.name for f in record.fields]
                self.error("E232", q.key.span, f"{record.name} has no field '{q.key.name}'",
                           did_you_mean(q.key.name, names)
                           or f"count different values of one of its fields: {', '.join(names)}")
                return ir.Truth(False, e.span)
            if key.type.kind not in _KEYS:
                self.error("E232", q.key.span, f"'different' compares text, enum, whole-number or date values, "
                           f"and {q.key.name} is {_a(key.type.describe())}",
                           "count different values of a field that names what is counted, e.g. an agent")
                return ir.Truth(False, e.span)
            return ir.DistinctCount(op, items, record, key, cond, int(right.value), e.span)
        return ir.CountCompare(op, items, record, cond, int(right.value), e.span)

    def between(self, e: ast.Between, scope: _Scope) -> ir.Expr:
        field = self.value(e.value, scope)
        if field is None:
            if not isinstance(e.value, ast.Ref):
                self.error("E202", e.value.span, "'between' needs a field on its left",
                           "write e.g. age between 18 and 75")
            return ir.Truth(False, e.span)
        t = field.field.type
        if t.kind not in (*_NUMERIC, "titer", "date"):
            self.error("E202", e.span, f"'between' does not apply to {field.field.name} ({t.describe()})",
                       _compare_hint(t, field.field.name))
            return ir.Truth(False, e.span)
        low = self.operand(e.low, t, scope, field.field.name)
        high = self.operand(e.high, t, scope, field.field.name)
        if low is None or high is None:
            return ir.Truth(False, e.span)
        return ir.Between(field, low, high, e.span)

    def membership(self, e: ast.Membership, scope: _Scope) -> ir.Expr:
        field = self.value(e.value, scope)
        if field is None:
            if not isinstance(e.value, ast.Ref):
                self.error("E202", e.value.span, f"'{e.kind.split('_')[0]}' needs a field on its left",
                           "write e.g. diagnosis is SLE")
            return ir.Truth(False, e.span)
        t = field.field.type
        one = e.kind.startswith("is")
        match t:
            case ir.EnumOf() if one:
                enum = t.enum
            case ir.SetOf() if not one:
                enum = t.enum
            case _:
                if isinstance(t, ir.SetOf):
                    hint = f"{field.field.name} is a set: write '{field.field.name} has …'"
                elif isinstance(t, ir.EnumOf):
                    hint = f"{field.field.name} holds one value: write '{field.field.name} is …'"
                else:
                    hint = _compare_hint(t, field.field.name)
                word = "is" if one else "has"
                self.error("E202", e.span, f"'{word}' does not apply to {field.field.name} ({t.describe()})", hint)
                return ir.Truth(False, e.span)
        members = enum.member_names()
        for member in e.members:
            if member.name not in members:
                self.error("E203", member.span,
                           f"'{member.name}' is not a member of {enum.name}",
                           did_you_mean(member.name, members) or f"{enum.name} has: " + ", ".join(members))
        return ir.Member(ir.narrow(e.kind, ir.MEMBER_KINDS), field, tuple(m.name for m in e.members), e.span)

    def window(self, e: ast.Window, scope: _Scope) -> ir.Expr:
        value = self.date_value(e.value, scope)
        anchor = self.date_value(e.anchor, scope)
        if e.duration.amount == 0:
            self.error("E205", e.duration.span, "a window of 0 has no length",
                       "give the window a length, e.g. within 4 weeks before screening")
        if value is None or anchor is None:
            return ir.Truth(False, e.span)
        return ir.Window(ir.narrow(e.kind, ir.WINDOW_KINDS), value, e.duration.amount,
                         ir.narrow(e.duration.unit, ir.WINDOW_UNITS), ir.narrow(e.direction, ir.DIRECTIONS),
                         anchor, e.span)

    def none_recorded(self, e: ast.NoneRecorded, scope: _Scope) -> ir.Expr:
        field = self.value(e.field, scope)
        if field is None:
            return ir.Truth(False, e.span)
        if not field.field.optional:
            self.error("E230", e.field.span, f"{e.field.name} cannot be recorded as none: it is not optional",
                       f"declare it with '?' ({e.field.name}: {field.field.type.describe()}?) so that a "
                       "record can say there is none")
            return ir.Truth(False, e.span)
        return ir.NoneRecorded(field, e.span)

    def interval_test(self, e: ast.Overlaps | ast.OngoingAt | ast.Lasted, scope: _Scope) -> ir.Expr:
        word = {ast.Overlaps: "overlaps", ast.OngoingAt: "ongoing at", ast.Lasted: "lasted"}[type(e)]
        field = self.value(e.value, scope)
        if field is None:
            if not isinstance(e.value, ast.Ref):
                example = {"overlaps": "overlaps 1 week before screening", "ongoing at": "ongoing at screening",
                           "lasted": "lasted at least 8 weeks by screening"}[word]
                self.error("E231", e.value.span, f"'{word}' needs an interval field on its left",
                           f"write e.g. infection {example}")
            return ir.Truth(False, e.span)
        if field.field.type.kind != "interval":
            hint = (f"for one date, use a window: {field.field.name} within 1 week before screening"
                    if field.field.type.kind == "date" else
                    "declare the field as 'interval' (a start and an end, or ongoing)")
            self.error("E231", e.value.span, f"'{word}' needs an interval (a start and an end), and "
                       f"{field.field.name} is {_a(field.field.type.describe())}", hint)
            return ir.Truth(False, e.span)
        anchor = self.date_value(e.anchor, scope)
        if not isinstance(e, ast.OngoingAt) and e.duration.amount == 0:
            self.error("E205", e.duration.span, "a window of 0 has no length",
                       "give it a length, e.g. overlaps 1 week before screening")
        if anchor is None:
            return ir.Truth(False, e.span)
        if isinstance(e, ast.OngoingAt):
            return ir.OngoingAt(field, anchor, e.span)
        unit = ir.narrow(e.duration.unit, ir.WINDOW_UNITS)
        if isinstance(e, ast.Overlaps):
            return ir.Overlaps(field, e.duration.amount, unit, ir.narrow(e.direction, ir.DIRECTIONS), anchor, e.span)
        return ir.Lasted(field, ir.narrow(e.kind, ir.LASTED_KINDS), e.duration.amount, unit, anchor, e.span)

    def date_value(self, e: ast.Expr, scope: _Scope) -> ir.Value | None:
        if isinstance(e, ast.DateLit):
            return self.literal(e, ir.Scalar("date"), "the window")
        field = self.value(e, scope)
        if field is None:
            if not isinstance(e, ast.Ref):
                self.error("E205", e.span, "a window is measured between dates",
                           "use a date field or a date such as 2025-06-26")
            return None
        if field.field.type.kind != "date":
            hint = (f"for an interval, say {field.field.name} overlaps … or {field.field.name} ongoing at …"
                    if field.field.type.kind == "interval" else "use a date field, e.g. screening")
            self.error("E205", e.span, f"a window needs dates, and {field.field.name} is "
                       f"{_a(field.field.type.describe())}", hint)
            return None
        return field


def _applies(op: ir.CompareOp, t: ir.Type) -> bool:
    """Whether `op` compares values of type `t`: an enum, a set or a list is tested otherwise
    (is, has, any/all/count), and yes/no values and text are only equal or not."""
    match t:
        case ir.EnumOf() | ir.SetOf() | ir.ListOf():
            return False
        case ir.Scalar(kind="bool" | "judgment" | "text"):
            return op in ("=", "!=")
        case ir.Scalar() | ir.Measure():
            return True
        case _:
            assert_never(t)


def _same_type(a: ir.Type, b: ir.Type) -> bool:
    """Whether fields of types `a` and `b` can be compared: quantities and labs in one unit,
    whole and decimal numbers, or two of one kind (and one enum)."""
    match a, b:
        case ir.Measure(), ir.Measure():
            return a.unit.text == b.unit.text
        case ir.Scalar(kind="integer" | "decimal"), ir.Scalar(kind="integer" | "decimal"):
            return True
        case ir.EnumOf(), ir.EnumOf():
            return a.enum == b.enum
        case ir.SetOf(), ir.SetOf():
            return a.enum == b.enum
        case _:
            return a.kind == b.kind


def _literal_kind(e: ast.Expr) -> str:
    return {
        ast.Number: "number", ast.QuantityLit: "quantity", ast.UlnLit: "multiple of ULN",
        ast.TiterLit: "titer", ast.DateLit: "date", ast.TextLit: "text", ast.BoolLit: "truth value",
        ast.Quantifier: "count",
    }.get(type(e), "value")


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _condition_hint(name: str, t: ir.Type) -> str:
    match t:
        case ir.EnumOf():
            return f"test its value: {name} is {t.enum.member_names()[0]}"
        case ir.SetOf():
            return f"test its members: {name} has any of ({t.enum.member_names()[0]}, …)"
        case ir.ListOf():
            return f"quantify over it: any({name} where …) or count({name} where …) >= 1"
        case ir.Scalar(kind="date"):
            return f"use a window: {name} within 4 weeks before screening"
        case ir.Scalar(kind="interval"):
            return f"test it: {name} overlaps 1 week before screening, or {name} ongoing at screening"
        case _:
            return _compare_hint(t, name)


def _compare_hint(t: ir.Type, name: str = "X") -> str:
    return _compare_hint_for(t).replace("X", name)


def _compare_hint_for(t: ir.Type) -> str:
    match t:
        case ir.EnumOf():
            return f"test an enum with 'is': X is {t.enum.member_names()[0]}"
        case ir.SetOf():
            return f"test a set with 'has': X has any of ({', '.join(t.enum.member_names()[:2])})"
        case ir.ListOf():
            return "a list is tested with any(...), all(...) or count(...)"
        case ir.Measure(kind="quantity"):
            return f"compare it with a quantity: X >= 60 {t.unit.text}"
        case ir.Measure():
            return f"compare it with a quantity in {t.unit.text} or a multiple of ULN: X <= 3 x ULN"
        case ir.Scalar():
            return _SCALAR_HINTS[t.kind]
        case _:
            assert_never(t)


_SCALAR_HINTS: dict[ir.BaseKind, str] = {
    "bool": "use it on its own as a condition, or with 'not'",
    "judgment": "use it on its own as a condition, or with 'not'",
    "titer": "compare it with a titer: X > 1:80",
    "date": "compare it with a date (YYYY-MM-DD) or use a window",
    "interval": "an interval is tested with overlaps, ongoing at or lasted: X overlaps 1 week before screening",
    "text": 'compare text with = or !=: X = "yes"',
    "integer": "compare it with a number: X >= 18",
    "decimal": "compare it with a number: X >= 18",
}


__all__ = ["check", "decimal_text"]
