"""A naive tree-walker: the checked protocol (crit.ir) evaluated directly on each record.

The simplest evaluator one would write instead of a compiler: read the record with the
runtime's generic readers, then walk the IR recursively with an `isinstance` chain, on plain
three-valued values (None unknown, NA not applicable), with no reasons. It exists to measure
what compiling to specialised Python buys. `evaluate(record)` returns the decision and every
criterion's outcome, like the hand-written baseline.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from crit import ir
from crit import runtime as rt

NA: Any = rt.NA
_OPS: dict[str, Callable[[Any, Any], bool]] = {">=": operator.ge, "<=": operator.le, ">": operator.gt,
                                               "<": operator.lt, "=": operator.eq, "!=": operator.ne}


# A criterion unknown only between some outcomes is the frozenset of the outcomes it can give
# (of "met", "not met", "na"); None is a condition unknown between met and not met.
_OUTCOMES = {True: frozenset({"met"}), False: frozenset({"not met"}), None: frozenset({"met", "not met"})}
_WORDS = {frozenset({"met", "na"}): "met or not applicable", frozenset({"not met", "na"}): "not met or not applicable"}


def _can(value: Any) -> frozenset[str]:
    return frozenset({"na"}) if value is NA else value if isinstance(value, frozenset) else _OUTCOMES[value]


def _value(can: frozenset[str]) -> Any:
    if can == {"na"}:
        return NA
    if "na" not in can:
        return None if len(can) > 1 else "met" in can
    return can


def _kleene_all(values: list[Any]) -> Any:
    values = [v for v in values if v is not NA]
    if not values:
        return NA
    if any(v is False for v in values):
        return False
    if not any(isinstance(v, frozenset) for v in values):
        return None if any(v is None for v in values) else True
    can = [_can(v) for v in values]
    return _value(frozenset({"met"} if any("met" in c for c in can) else set())
                  | ({"not met"} if any("not met" in c for c in can) else set())
                  | ({"na"} if all("na" in c for c in can) else set()))


def _kleene_any(values: list[Any]) -> Any:
    values = [v for v in values if v is not NA]
    if not values:
        return NA
    if any(v is True for v in values):
        return True
    if not any(isinstance(v, frozenset) for v in values):
        return None if any(v is None for v in values) else False
    can = [_can(v) for v in values]
    return _value(frozenset({"met"} if any("met" in c for c in can) else set())
                  | ({"not met"} if any("not met" in c for c in can) else set())
                  | ({"na"} if all("na" in c for c in can) else set()))


def _at_least(count: int, values: list[Any]) -> Any:
    values = [v for v in values if v is not NA]
    if not values:
        return NA
    true = sum(v is True for v in values)
    if true >= count:
        return True
    return False if true + sum(v is None for v in values) < count else None


class NaiveWalker:
    def __init__(self, protocol: ir.Protocol) -> None:
        self.protocol = protocol
        self.records = {r.name: r for r in protocol.records}

    # ---- reading, with the runtime's readers ----
    def _reader(self, t: ir.Type) -> Callable[[object, str, list[rt.Problem]], Any]:
        simple: dict[str, Any] = {"bool": rt.read_bool, "judgment": rt.read_bool, "integer": rt.read_integer,
                                  "decimal": rt.read_decimal, "text": rt.read_text, "date": rt.read_date,
                                  "titer": rt.read_titer, "interval": rt.read_interval}
        if t.kind in simple:
            return simple[t.kind]  # type: ignore[no-any-return]
        if t.kind in ("quantity", "lab"):
            assert t.unit is not None
            unit, factors = t.unit.text, {u.text: f for u, f in t.also}
            measured = rt.read_quantity if t.kind == "quantity" else rt.read_lab
            return lambda raw, at, pr: measured(raw, at, pr, unit, factors)
        if t.kind in ("enum", "set"):
            assert t.enum is not None
            members = t.enum.member_names()
            member = rt.read_enum if t.kind == "enum" else rt.read_set
            return lambda raw, at, pr: member(raw, at, pr, members)
        assert t.record is not None
        record = self.records[t.record]

        def item(raw: object, at: str, pr: list[rt.Problem]) -> dict[str, Any] | None:
            if not rt.check_keys(raw, at, [f.name for f in record.fields], pr):
                return None
            assert isinstance(raw, dict)
            return self._fields(raw, record.fields, at, pr)

        return lambda raw, at, pr: rt.read_list(raw, at, pr, item)

    def _fields(self, raw: dict[str, Any], fields: tuple[ir.Field, ...], at: str,
                pr: list[rt.Problem]) -> dict[str, Any]:
        return {f.name: rt.get(raw, f.name, f"{at}.{f.name}" if at else f.name, pr, self._field_reader(f), f.optional)
                for f in fields}

    def _field_reader(self, f: ir.Field) -> Callable[[object, str, list[rt.Problem]], Any]:
        read = self._reader(f.type)
        if f.measured is None:
            return read
        whole = f.type.kind in ("quantity", "lab")
        return lambda raw, at, pr: rt.read_dated(raw, at, pr, read, whole)

    # ---- walking ----
    def evaluate(self, record: object) -> tuple[str, dict[str, str]]:
        problems: list[rt.Problem] = []
        raw = record if rt.check_keys(record, "", [f.name for f in self.protocol.fields], problems) else {}
        assert isinstance(raw, dict)
        values = self._fields(raw, self.protocol.fields, "", problems)
        if problems:
            raise rt.InvalidRecord(problems)
        definitions: dict[str, Any] = {}
        for d in self.protocol.definitions:
            definitions[d.name] = _kleene_all([self.expr(line.expr, values, definitions, None)
                                               for line in d.lines()])
        out: dict[str, Any] = {}
        for c in self.protocol.inclusion + self.protocol.exclusion:
            self.criterion(c, True, values, definitions, out)
        refused = unknown = False
        for c in self.protocol.inclusion + self.protocol.exclusion:
            value = out[c.id]
            refusal = c.section != "inclusion"
            refused = refused or value is refusal
            unknown = unknown or (value is not NA and value is not (not refusal)
                                  and ("met" if refusal else "not met") in _can(value))
        decision = "ineligible" if refused else "needs review" if unknown else "eligible"
        words = {True: "met", False: "not met", None: "unknown"}

        def word(v: Any) -> str:
            return "not applicable" if v is NA else _WORDS.get(v, "unknown") if isinstance(v, frozenset) else words[v]

        return decision, {key: word(v) for key, v in out.items()}

    def criterion(self, c: ir.Criterion, gate: Any, values: Mapping[str, Any], definitions: Mapping[str, Any],
                  out: dict[str, Any]) -> Any:
        own = None
        if c.applies is not None:
            own = self.expr(c.applies, values, definitions, None)
            gate = _kleene_all([gate, own])
        parts = []
        for item in c.items:
            if isinstance(item, ir.Criterion):
                parts.append(self.criterion(item, gate, values, definitions, out))
            elif not isinstance(item, ir.Note):
                parts.append(self.line(item, values, definitions))
        if c.combine == "any":
            body = _kleene_any(parts)
        elif c.combine == "at_least":
            body = _at_least(c.at_least, parts)
        else:
            body = _kleene_all(parts)
        out[c.id] = self.when(gate, body)  # its outcome under every gate; its parent combines it under its own
        return body if own is None else self.when(own, body)

    def when(self, condition: Any, body: Any) -> Any:
        if condition is False:
            return NA
        if condition is True or body is NA:
            return body
        return _value(_can(body) | {"na"})

    def line(self, item: ir.Line | ir.When, values: Mapping[str, Any], definitions: Mapping[str, Any]) -> Any:
        if isinstance(item, ir.Line):
            return self.expr(item.expr, values, definitions, None)
        return self.when(self.expr(item.condition, values, definitions, None),
                         _kleene_all([self.line(b, values, definitions) for b in item.body]))

    def value(self, v: ir.Value, values: Mapping[str, Any], it: Mapping[str, Any] | None) -> Any:
        if isinstance(v, ir.Const):
            return v.value
        source = it if v.scope == "item" and it is not None else values
        found = source[v.field.name]
        m = v.field.measured
        if m is not None and v.scope == "patient":
            found = rt.fresh(found, m.amount, m.unit, m.direction, values[m.anchor])
        return found.value if isinstance(found, rt.Lab) else found

    def expr(self, e: ir.Expr, values: Mapping[str, Any], definitions: Mapping[str, Any],
             it: Mapping[str, Any] | None) -> Any:
        if isinstance(e, ir.Between):  # `low <= value and value <= high`, in Kleene logic
            value, low, high = (self.value(v, values, it) for v in (e.value, e.low, e.high))
            if value is None:
                return None
            if rt.NONE in (value, low, high):
                return False
            above = None if low is None else low <= value
            below = None if high is None else value <= high
            return False if False in (above, below) else None if None in (above, below) else True
        if isinstance(e, ir.Compare | ir.Window):
            operands = [e.left, e.right] if isinstance(e, ir.Compare) else [e.value, e.anchor]
            found = [self.value(v, values, it) for v in operands]
            if any(f is None for f in found):
                return None
            if any(f is rt.NONE for f in found):
                return False
            if isinstance(e, ir.Compare):
                return _OPS[e.op](found[0], found[1])
            return rt.window_holds(found[0], e.kind, e.amount, e.unit, e.direction, found[1])
        if isinstance(e, ir.NoneRecorded):
            found = self.value(e.value, values, it)
            return None if found is None else found is rt.NONE
        if isinstance(e, ir.Overlaps | ir.OngoingAt | ir.Lasted):
            period, anchor = self.value(e.value, values, it), self.value(e.anchor, values, it)
            if isinstance(e, ir.Overlaps):
                held = rt.overlaps(period, e.amount, e.unit, e.direction, anchor, "")
            elif isinstance(e, ir.OngoingAt):
                held = rt.ongoing_at(period, anchor, "")
            else:
                held = rt.lasted(period, e.kind, e.amount, e.unit, anchor, "")
            return held if type(held) is bool else None
        if isinstance(e, ir.UlnCompare):
            source = it if e.lab.scope == "item" and it is not None else values
            lab = source[e.lab.field.name]
            if lab is None:
                return None
            return lab is not rt.NONE and _OPS[e.op](lab.value, e.multiple * lab.uln)
        if isinstance(e, ir.Member):
            found = self.value(e.value, values, it)
            if found is None:
                return None
            if e.kind.startswith("is"):
                if found is rt.NONE:
                    return e.kind == "is_not"
                return (found not in e.members) if e.kind == "is_not" else found in e.members
            found = frozenset() if found is rt.NONE else found
            members = frozenset(e.members)
            return members <= found if e.kind == "has_all" else bool(found & members)
        if isinstance(e, ir.Truth):
            return e.value
        if isinstance(e, ir.DefinitionRef):
            return definitions[e.name]
        if isinstance(e, ir.FieldRef):
            found = self.value(e, values, it)
            return None if found is None else found is True
        if isinstance(e, ir.Not):
            inner = self.expr(e.operand, values, definitions, it)
            return inner if inner is None else not inner
        if isinstance(e, ir.And):
            return _kleene_all([self.expr(x, values, definitions, it) for x in e.operands])
        if isinstance(e, ir.Or):
            return _kleene_any([self.expr(x, values, definitions, it) for x in e.operands])
        if isinstance(e, ir.AtLeast):
            return _at_least(e.count, [self.expr(x, values, definitions, it) for x in e.operands])
        items = values[e.items.field.name]
        if items is None:
            return None
        results = [True if e.condition is None else self.expr(e.condition, values, definitions, item)
                   for item in ([] if items is rt.NONE else items)]
        if isinstance(e, ir.Quantified):
            if e.kind == "any":
                return True if True in results else None if None in results else False
            return False if False in results else None if None in results else True
        if isinstance(e, ir.DistinctCount):  # different keys: an unknown key may repeat one or be new
            pairs = [(r, item[e.key.name]) for r, item in zip(results, [] if items is rt.NONE else items, strict=True)
                     if r is not False and item[e.key.name] is not rt.NONE]
            sure = {k for r, k in pairs if r is True and k is not None}
            low = len(sure) or int(any(r is True and k is None for r, k in pairs))
            high = len({k for _, k in pairs if k is not None}) + sum(1 for _, k in pairs if k is None)
            if isinstance(e.key.type, ir.EnumOf):
                high = min(high, len(e.key.type.enum.members))
            return rt.count_verdict(e.op, e.number, low, high)
        low, high = results.count(True), results.count(True) + results.count(None)
        return rt.count_verdict(e.op, e.number, low, high)
