"""The reference interpreter: evaluates a checked protocol directly on a record.

It shares the standard-library runtime (three-valued logic, dates, record readers) and the
wording of reasons with the generated evaluators, and none of their code generation: it is
the oracle that the generated modules are tested against (`crit eval --interpret` uses it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, assert_never

from crit import ir
from crit import runtime as rt
from crit.reasons import is_titer, members_text, path_of, range_text, text_of, unit_of, window_text

Values = Mapping[str, Any]


@dataclass(frozen=True)
class _Env:
    """What an expression can see: the patient's values, the definitions, a list item."""

    patient: Values
    definitions: Mapping[str, rt.Fact]
    item: Values | None = None
    item_path: str = ""


class Interpreter:
    """Evaluate `protocol` on JSON-shaped records, with the generated module's public API."""

    def __init__(self, protocol: ir.Protocol) -> None:
        self.protocol = protocol
        self.records = {r.name: r for r in protocol.records}
        self.judgments = frozenset(f.name for f in protocol.fields if f.type.kind == "judgment")
        self.info = tuple(self._info())

    def _info(self) -> list[rt.CriterionInfo]:
        out: list[rt.CriterionInfo] = []

        def visit(criterion: ir.Criterion, parent: str | None) -> None:
            out.append(rt.CriterionInfo(criterion.id, criterion.title, criterion.section, parent,
                                        criterion.span.line))
            for child in criterion.children():
                visit(child, criterion.id)

        for top in self.protocol.inclusion + self.protocol.exclusion:
            visit(top, None)
        return out

    # ---- reading ----
    def read(self, record: object, problems: list[rt.Problem]) -> dict[str, Any]:
        keys = [f.name for f in self.protocol.fields]
        raw = record if rt.check_keys(record, "", keys, problems) else {}
        assert isinstance(raw, dict)
        return self._read_fields(raw, self.protocol.fields, "", problems)

    def _read_fields(self, raw: dict[str, Any], fields: tuple[ir.Field, ...], at: str,
                     problems: list[rt.Problem]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field in fields:
            path = f"{at}.{field.name}" if at else field.name
            values[field.name] = rt.get(raw, field.name, path, problems, self._reader(field.type),
                                        field.optional)
        return values

    def _reader(self, t: ir.Type) -> Any:
        kind = t.kind
        if kind in ("bool", "judgment"):
            return rt.read_bool
        simple = {"integer": rt.read_integer, "decimal": rt.read_decimal, "text": rt.read_text,
                  "date": rt.read_date, "titer": rt.read_titer}
        if kind in simple:
            return simple[kind]
        if kind in ("quantity", "lab"):
            assert t.unit is not None
            factors = {unit.text: factor for unit, factor in t.also}
            read = rt.read_quantity if kind == "quantity" else rt.read_lab
            unit = t.unit.text
            return lambda raw, at, pr: read(raw, at, pr, unit, factors)
        if kind in ("enum", "set"):
            assert t.enum is not None
            members = t.enum.member_names()
            read_member = rt.read_enum if kind == "enum" else rt.read_set
            return lambda raw, at, pr: read_member(raw, at, pr, members)
        if kind == "list":
            assert t.record is not None
            record = self.records[t.record]

            def read_item(raw: object, at: str, pr: list[rt.Problem]) -> dict[str, Any] | None:
                if not rt.check_keys(raw, at, [f.name for f in record.fields], pr):
                    return None
                assert isinstance(raw, dict)
                return self._read_fields(raw, record.fields, at, pr)

            return lambda raw, at, pr: rt.read_list(raw, at, pr, read_item)
        raise AssertionError(f"no reader for {kind}")

    def validate(self, record: object) -> list[rt.Problem]:
        problems: list[rt.Problem] = []
        self.read(record, problems)
        return problems

    # ---- evaluating ----
    def evaluate(self, record: object) -> rt.Screening:
        problems: list[rt.Problem] = []
        values = self.read(record, problems)
        if problems:
            raise rt.InvalidRecord(problems)
        definitions: dict[str, rt.Fact] = {}
        for definition in self.protocol.definitions:
            env = _Env(values, definitions)
            facts = [self.line(line, env) for line in definition.lines()]
            definitions[definition.name] = facts[0] if len(facts) == 1 else rt.all_of(*facts)
        env = _Env(values, definitions)
        out: dict[str, rt.Fact] = {}
        for criterion in self.protocol.inclusion + self.protocol.exclusion:
            self.criterion(criterion, env, rt.ALWAYS, out)
        return rt.screen(self.info, out, self.judgments)

    def criterion(self, c: ir.Criterion, env: _Env, gate: rt.Fact, out: dict[str, rt.Fact]) -> rt.Fact:
        if c.applies is not None:
            gate = rt.all_of(gate, self.expr(c.applies, env))
        parts: list[rt.Fact] = []
        for item in c.items:
            if isinstance(item, ir.Note):
                continue
            if isinstance(item, ir.Criterion):
                parts.append(rt.summary(item.id, self.criterion(item, env, gate, out)))
            else:
                parts.append(self.line(item, env))
        if c.combine == "any":
            body = rt.any_of(*parts)
        elif c.combine == "at_least":
            body = rt.at_least(c.at_least, *parts)
        else:
            body = rt.all_of(*parts)
        fact = rt.when(gate, body)
        out[c.id] = fact
        return fact

    def line(self, item: ir.Line | ir.When, env: _Env) -> rt.Fact:
        if isinstance(item, ir.Line):
            return self.expr(item.expr, env)
        return rt.when(self.expr(item.condition, env), rt.all_of(*(self.line(b, env) for b in item.body)))

    def value(self, v: ir.Value, env: _Env) -> tuple[Any, str]:
        """A value and its path ('' for a literal)."""
        if isinstance(v, ir.Const):
            return v.value, ""
        if v.scope == "item":
            assert env.item is not None
            return env.item[v.field.name], path_of(v, env.item_path)
        return env.patient[v.field.name], v.field.name

    def expr(self, e: ir.Expr, env: _Env) -> rt.Fact:
        if isinstance(e, ir.Compare):
            left, left_path = self.value(e.left, env)
            right, right_path = self.value(e.right, env)
            return rt.compare(left, e.op, right, left_path, right_path, unit_of(e.left), text_of(e.right),
                              titer=is_titer(e.left))
        if isinstance(e, ir.UlnCompare):
            lab, path = self.value(e.lab, env)
            return rt.compare_uln(lab, e.op, e.multiple, path, unit_of(e.lab), str(e.multiple))
        if isinstance(e, ir.Between):
            value, path = self.value(e.value, env)
            low, low_path = self.value(e.low, env)
            high, high_path = self.value(e.high, env)
            return rt.between(value, low, high, path, low_path, high_path, unit_of(e.value), range_text(e),
                              titer=is_titer(e.value))
        if isinstance(e, ir.Member):
            value, path = self.value(e.value, env)
            test = rt.member if e.kind.startswith("is") else rt.has
            return test(value, e.kind, frozenset(e.members), path, members_text(e.kind, e.members))
        if isinstance(e, ir.Window):
            value, path = self.value(e.value, env)
            anchor, anchor_path = self.value(e.anchor, env)
            return rt.window(value, e.kind, e.amount, e.unit, e.direction, anchor, path, anchor_path,
                             window_text(e))
        if isinstance(e, ir.Truth):
            return rt.Fact(e.value, "always" if e.value else "never")
        if isinstance(e, ir.DefinitionRef):
            return env.definitions[e.name]
        if isinstance(e, ir.FieldRef):
            value, path = self.value(e, env)
            return rt.truth(value, path, judgment=e.field.type.kind == "judgment")
        if isinstance(e, ir.Not):
            return rt.negate(self.expr(e.operand, env))
        if isinstance(e, ir.And):
            return rt.all_of(*(self.expr(x, env) for x in e.operands))
        if isinstance(e, ir.Or):
            return rt.any_of(*(self.expr(x, env) for x in e.operands))
        if isinstance(e, ir.AtLeast):
            return rt.at_least(e.count, *(self.expr(x, env) for x in e.operands))
        if isinstance(e, ir.Quantified):
            items, path = self.value(e.items, env)
            return rt.quantify(e.kind, items, path, self._test(e.condition, env))
        if isinstance(e, ir.CountCompare):
            items, path = self.value(e.items, env)
            return rt.count(e.op, e.number, items, path, self._test(e.condition, env))
        assert_never(e)

    def _test(self, condition: ir.Expr | None, env: _Env) -> Any:
        def test(item: Values, at: str) -> rt.Fact:
            if condition is None:
                return rt.ALWAYS
            return self.expr(condition, _Env(env.patient, env.definitions, item, at))

        return test


__all__ = ["Interpreter"]
