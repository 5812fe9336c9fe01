"""Hypothesis strategies: random well-typed protocols (as .crit text) and records for them.

A protocol draws a random schema over every field type, then criteria built from every
operator (comparisons with literals and with other fields, ranges (reversed too), membership,
windows anchored on fields and on date literals, × ULN, titers, quantities in other units,
including conversions that no decimal writes (lb ↔ kg, in ↔ cm), quantifiers nested in
quantifiers, counts, `at least`, `when`-gated parts under `requires any` and
`requires at least N`, judgments), nested and combined. Records draw boundary values, missing
and null fields, empty, missing and recorded-none lists, other units.

`completions` enumerates the ways to fill in what a record leaves missing, for the soundness
property: a decision reached with facts missing must hold for every one of them.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

KINDS = ("bool", "integer", "decimal", "quantity", "weight", "length", "lab", "titer", "date", "enum", "set",
         "list", "judgment", "ranged", "cells", "glucose", "interval", "dated")
OPTIONAL = ("bool", "date", "integer", "list", "weight", "interval")  # kinds drawn with `?` half the time
MEMBERS = ("a", "b", "c")
ANCHOR = datetime.date(2025, 3, 31)
TYPES = {"bool": "bool", "integer": "integer", "decimal": "decimal", "quantity": "quantity g/L also g/dL",
         "weight": "quantity lb also kg", "length": "quantity in also cm", "lab": "lab U/L",
         "titer": "titer", "date": "date", "enum": "Color", "set": "set of Color", "list": "list of Item",
         "judgment": "judgment", "ranged": "integer from 1 to 6",
         # counts per volume as clinicians write them, with a range written in another unit
         "cells": "quantity 10^9/L also /mm3, cells/µL, 10^3/µL from 0 to 5000 /mm3",
         # mass and molar concentrations of one analyte, converted by its molar mass (no decimal writes it)
         "glucose": "quantity mmol/L also mg/dL as glucose molar mass 180.156 g/mol",
         "interval": "interval",
         "dated": "quantity g/L also g/dL measured within 14 days before screening"}
# Plausible ranges, written after an optional field's `?`. Real protocols range their weights and
# lengths (and every value drawn below lies inside), so the SQL backend can size their products.
RANGES = {"weight": " from 0 to 1000 lb", "length": " from 0 to 100 in"}
ITEM_FIELDS = ("ok", "n", "day")


@dataclass
class Schema:
    fields: dict[str, tuple[str, bool]] = field(default_factory=dict)  # name -> (kind, optional)

    def of(self, *kinds: str) -> list[str]:
        return [name for name, (kind, _) in self.fields.items() if kind in kinds]

    def key(self) -> tuple[tuple[str, tuple[str, bool]], ...]:
        return tuple(self.fields.items())


def _cached(build: Any) -> Any:
    """Strategies built once per schema: Hypothesis validates every new strategy object, which
    costs more than drawing from it."""
    cache: dict[tuple[Any, ...], Any] = {}

    def get(schema: Schema, *args: Any) -> Any:
        key = (schema.key(), *args)
        if key not in cache:
            cache[key] = build(schema, *args)
        return cache[key]

    return get


@st.composite
def schemas(draw: st.DrawFn) -> Schema:
    schema = Schema()
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=2, max_size=10))
    for index, kind in enumerate(kinds):
        optional = kind in OPTIONAL and draw(st.booleans())
        schema.fields[f"f{index}"] = (kind, optional)
    return schema


OPS = (">=", "<=", ">", "<", "=", "!=")


@_cached
@st.composite
def item_atoms(draw: st.DrawFn, schema: Schema, depth: int) -> str:
    """A condition on a list item: its own fields, the patient's, or a quantifier nested in it."""
    forms = ["ok", "not ok", "n >= 2", "n between 1 and 3", "n between 3 and 1",
             "day less than 2 weeks before screening", "day more than 1 months before 2025-03-31",
             "day within 2 weeks before screening", "day within 1 months before 2025-03-31", "ok and n < 3",
             "n × 2 - 1 >= 3", "n - 1 > (1 if ok, otherwise 2)"]
    integers, dates, lists = schema.of("integer"), schema.of("date"), schema.of("list")
    if integers:
        forms.append(f"n <= {draw(st.sampled_from(integers))}")
    if dates:
        forms.append(f"day at least 1 weeks before {draw(st.sampled_from(dates))}")
    if lists and depth < 2 and draw(st.booleans()):  # a quantifier nested in this one
        inner = draw(st.sampled_from(lists))
        cond = draw(item_atoms(schema, depth + 1))
        return draw(st.sampled_from([f"ok and any({inner} where {cond})", f"all({inner} where {cond})",
                                     f"count(different n in {inner} where {cond}) >= 2",
                                     f"n < 3 or any({inner} where {cond})", f"count({inner} where {cond}) >= 1",
                                     f"not ok and count({inner} where {cond}) >= 2"]))
    return draw(st.sampled_from(forms))


@_cached
@st.composite
def atoms(draw: st.DrawFn, schema: Schema) -> str:
    """One condition on one field, or comparing two fields of one kind."""
    choices = schema.of(*KINDS)
    name = draw(st.sampled_from(choices)) if choices else None
    if name is None:
        return draw(st.sampled_from(["true", "false"]))
    kind = schema.fields[name][0]
    op = draw(st.sampled_from(OPS))
    number = draw(st.integers(min_value=0, max_value=5))
    peers = [other for other in schema.of(kind) if other != name]
    if peers and kind in ("integer", "decimal", "quantity", "weight", "length", "date", "titer", "ranged", "cells",
                          "glucose") \
            and draw(st.integers(0, 3)) == 0:
        return f"{name} {op} {draw(st.sampled_from(peers))}"
    if schema.fields[name][1] and draw(st.integers(0, 4)) == 0:
        return f"no {name} recorded"
    if kind in ("bool", "judgment"):
        return draw(st.sampled_from([name, f"not {name}", f"{name} = true"]))
    if kind == "glucose":
        return draw(st.sampled_from([f"{name} {op} {number} mmol/L", f"{name} {op} {number * 18} mg/dL",
                                     f"{name} between {number} mmol/L and {number * 18 + 36} mg/dL"]))
    if kind == "cells":
        return draw(st.sampled_from([f"{name} {op} {number} x 10^9/L", f"{name} {op} {number * 1000} /mm3",
                                     f"{name} {op} {number * 500} cells/µL", f"{name} {op} {number} x 10^3/µL"]))
    if kind in ("integer", "decimal", "quantity", "weight", "length", "lab") and draw(st.integers(0, 2)) == 0:
        return draw(derived(schema, name, kind, op, number))
    if kind == "interval":
        unit = draw(st.sampled_from(["days", "weeks", "months"]))
        anchor = draw(st.sampled_from(["screening", "2025-03-31", *schema.of("date")]))
        lasting = draw(st.sampled_from(["at least", "more than", "less than", "at most"]))
        direction = draw(st.sampled_from(["before", "after"]))
        return draw(st.sampled_from([f"{name} overlaps {number + 1} {unit} {direction} {anchor}",
                                     f"{name} ongoing at {anchor}",
                                     f"{name} lasted {lasting} {number + 1} {unit} by {anchor}"]))
    if kind == "dated":
        return draw(st.sampled_from([f"{name} {op} {number * 10} g/L", f"{name} between {number} g/dL and 40 g/L"]))
    if kind in ("integer", "ranged"):
        return draw(st.sampled_from([f"{name} {op} {number}", f"{name} between {number} and {number + 2}",
                                     f"{name} between {number + 2} and {number}"]))
    if kind == "decimal":
        return f"{name} {op} {number}.5"
    if kind == "quantity":
        return draw(st.sampled_from([f"{name} {op} {number * 10} g/L", f"{name} {op} {number}.5 g/dL",
                                     f"{name} between {number} g/dL and {number * 10 + 20} g/L"]))
    if kind == "weight":  # lb, also kg: 1 kg is 10^8/45359237 lb, which no decimal writes
        return draw(st.sampled_from([f"{name} {op} {number * 10} kg", f"{name} {op} {number * 20} lb",
                                     f"{name} between {number} kg and {number * 3} lb"]))
    if kind == "length":  # in, also cm: 1 cm is 50/127 in
        return draw(st.sampled_from([f"{name} {op} {number * 10} cm", f"{name} {op} {number} in"]))
    if kind == "lab":
        return draw(st.sampled_from([f"{name} {op} {number}.0 x ULN", f"{name} {op} {number * 10} U/L"]))
    if kind == "titer":
        return f"{name} {op} 1:{draw(st.sampled_from([40, 80, 160]))}"
    if kind == "date":
        unit = draw(st.sampled_from(["days", "weeks", "months", "years"]))
        direction = draw(st.sampled_from(["before", "after"]))
        form = draw(st.sampled_from(["within", "at least", "less than", "more than"]))
        anchor = draw(st.sampled_from(["screening", "2025-03-31", "2024-02-29", *peers]))
        return draw(st.sampled_from([f"{name} {form} {number + 1} {unit} {direction} {anchor}",
                                     f"{name} {op} 2025-03-{17 + number}"]))
    if kind == "enum":
        doses = schema.of("integer", "decimal", "quantity")
        if doses and draw(st.integers(0, 2)) == 0:  # a dose converted by the equivalence table
            dose = draw(st.sampled_from(doses))
            limit = f"{number * 10} g/L" if schema.fields[dose][0] == "quantity" else f"{number}.5"
            return f"eq0({dose}, {name}) {op} {limit}"
        return draw(st.sampled_from([f"{name} is a", f"{name} is not b", f"{name} is any of (a, c)"]))
    if kind == "set":
        return draw(st.sampled_from([f"{name} has a", f"{name} has any of (b, c)", f"{name} has all of (a, b)"]))
    assert kind == "list"
    cond = draw(item_atoms(schema, 0))
    return draw(st.sampled_from([f"any({name} where {cond})", f"all({name} where {cond})",
                                 f"count({name} where {cond}) >= {number % 3}", f"count({name}) < 2",
                                 f"count(different n in {name} where {cond}) >= {number % 3}",
                                 f"count(different n in {name}) < 2"]))


@_cached
def choice_condition(schema: Schema) -> st.SearchStrategy[str]:
    """A condition that picks a value, often unknown (a field the record may lack)."""
    flags = schema.of("bool", "judgment")
    return st.sampled_from([*flags, "screening within 1 weeks before 2025-03-31", *(f"not {f}" for f in flags)])


@_cached
@st.composite
def derived(draw: st.DrawFn, schema: Schema, name: str, kind: str, op: str, number: int) -> str:
    """A comparison of a derived value: arithmetic on fields and numbers (division by a field
    that may be 0 among it), the named values `v0`/`v1`, `(x in unit)`, values chosen by
    condition (× ULN among them), units brought together exactly (lb, in, kg/m^2)."""
    c1, c2 = draw(choice_condition(schema)), draw(choice_condition(schema))
    forms: list[str]
    if kind == "integer":
        peers = [f for f in schema.of("integer") if f != name]
        forms = [f"{name} + 1 {op} {number}", f"{name} × 2 - 1 {op} {number}", f"({name} - 2) ÷ 2 {op} 1",
                 f"12 ÷ {name} {op} {number + 1}", f"{name} {op} (2 if {c1}, otherwise 4)",
                 f"{name} * 3 {op} (6 if {c1}, {number} if {c2}, otherwise 9)", f"v0 {op} {number * 2}"]
        forms += [f"{name} - {peer} {op} 1" for peer in peers[:1]]
    elif kind == "decimal":
        forms = [f"{name} * 2 {op} {number}.5", f"{name} / 4 {op} 1", f"{name} + 0.5 {op} (3 if {c1}, otherwise 1.5)"]
    elif kind == "quantity":
        forms = [f"{name} × 2 {op} {number * 10} g/L", f"{name} - 5 g/L {op} 1 g/dL",
                 f"{name} {op} ({number} g/dL if {c1}, otherwise {number * 10 + 5} g/L)"]
    elif kind == "weight":
        forms = [f"{name} ÷ 2 {op} {number * 10} kg", f"({name} in kg) {op} {number * 10}", f"v1 {op} {number * 20} kg"]
        forms += [f"{name} / ({h} × {h}) {op} {number} kg/m^2" for h in schema.of("length")[:1]]
    elif kind == "length":
        forms = [f"({name} in cm) {op} {number * 10}", f"{name} × {name} {op} {number * 100} cm²"]
    else:
        assert kind == "lab"
        forms = [f"{name} {op} ({number}.0 x ULN if {c1}, otherwise {number + 1} × ULN)",
                 f"{name} {op} (1 x ULN if {c1}, 2 x ULN if {c2}, otherwise 3 x ULN)",
                 f"{name} - 10 U/L {op} 2 × ULN"]
    return draw(st.sampled_from(forms))


@_cached
def conditions(schema: Schema) -> st.SearchStrategy[str]:
    """Conditions nested with and/or/not/at least, parenthesised."""
    return st.recursive(
        atoms(schema),
        lambda inner: st.one_of(
            st.tuples(inner, inner).map(lambda p: f"({p[0]} and {p[1]})"),
            st.tuples(inner, inner).map(lambda p: f"({p[0]} or {p[1]})"),
            inner.map(lambda p: f"not ({p})"),
            st.lists(inner, min_size=2, max_size=4).flatmap(
                lambda parts: st.integers(min_value=1, max_value=len(parts)).map(
                    lambda n: f"at least {n} of ({', '.join(parts)})")),
        ),
        max_leaves=5,
    )


@_cached
def criterion_lines(schema: Schema) -> st.SearchStrategy[list[str]]:
    """The lines of one criterion: conditions, some gated by `when`."""
    return st.lists(st.one_of(
        conditions(schema),
        st.tuples(atoms(schema), conditions(schema)).map(lambda p: f"when {p[0]}: {p[1]}"),
        st.tuples(atoms(schema), atoms(schema)).map(lambda p: f"when {p[0]}: {p[1]}"),
    ), min_size=1, max_size=3)


@st.composite
def criteria(draw: st.DrawFn, schema: Schema, prefix: str, depth: int, indent: int) -> list[str]:
    """A criterion whose parts are lines, `when`-gated lines and sub-criteria (which may carry
    their own `when`), combined by all, any or at least N of them."""
    pad = " " * indent
    lines: list[str] = []
    applies = f" when {draw(atoms(schema))}" if draw(st.integers(0, 3)) == 0 else ""
    body = draw(criterion_lines(schema))
    children = draw(st.integers(min_value=0, max_value=2 if depth < 2 else 0))
    parts = len(body) + children
    combine = draw(st.sampled_from(["", "", " requires any", "at least"]))
    if combine == "at least":
        combine = f" requires at least {draw(st.integers(1, parts))}" if parts > 1 else ""
    lines.append(f'{pad}{prefix} "Criterion {prefix}"{combine}{applies}')
    lines += [f"{pad}  {b}" for b in body]
    for child in range(children):
        lines += draw(criteria(schema, f"{prefix}.{child + 1}", depth + 1, indent + 2))
    if draw(st.booleans()):
        lines.append(f'{pad}  note "A note for {prefix}."')
    return lines


@st.composite
def protocols(draw: st.DrawFn) -> tuple[str, Schema]:
    schema = draw(schemas())
    out = ['protocol R "A random protocol"', "", "enum Color", "  a", "  b", "  c", "",
           'equivalence eq0 "An equivalence table" of Color', "  a 1", "  b 1.25", "  c 6.67", "",
           "record Item", "  ok: bool", "  n: integer", "  day: date", "", "patient",
           "  screening: date"]
    for name, (kind, optional) in schema.fields.items():
        out.append(f"  {name}: {TYPES[kind]}{'?' if optional else ''}{RANGES.get(kind, '')}")
    out += ["", f"define d0: {draw(conditions(schema))}"]
    integers, weights = schema.of("integer"), schema.of("weight")
    if integers:  # the named values `derived` may compare
        out.append(f'define v0 "A derived value" = ({integers[0]} + 1) × 2')
    if weights:
        out.append(f'define v1 "Twice a weight" in kg = {weights[0]} × 2')
    out += ["", "inclusion"]
    for index in range(draw(st.integers(min_value=1, max_value=3))):
        out += draw(criteria(schema, f"I{index + 1}", 0, 2))
    if draw(st.booleans()):
        out += ["  I9 \"Uses the definition\"", "    d0"]
    out += ["", "exclusion"]
    for index in range(draw(st.integers(min_value=1, max_value=2))):
        out += draw(criteria(schema, f"E{index + 1}", 0, 2))
    return "\n".join(out) + "\n", schema


DATE_OFFSETS = (0, 1, 6, 7, 13, 14, 15, 27, 28, 29, 30, 31, 59, 365, 366, 730, 731, 1460)


def _date(draw: st.DrawFn) -> str:
    offset = draw(st.sampled_from(DATE_OFFSETS))
    sign = draw(st.sampled_from([-1, 1]))
    return (ANCHOR + datetime.timedelta(days=sign * offset)).isoformat()


def item_values() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={
        "ok": st.booleans(), "n": st.integers(0, 4),
        "day": st.sampled_from([(ANCHOR - datetime.timedelta(days=d)).isoformat() for d in (0, 7, 13, 14, 15, 30)])})


@functools.cache
def values(kind: str) -> st.SearchStrategy[Any]:
    return _values(kind)


@st.composite
def _values(draw: st.DrawFn, kind: str) -> Any:
    n = draw(st.integers(min_value=0, max_value=7))
    if kind in ("bool", "judgment"):
        return draw(st.booleans())
    if kind in ("integer", "ranged"):  # ranged: 1 to 6, so 0 and 7 are refused as implausible
        return n
    if kind == "glucose":  # boundaries in mg/dL and in mmol/L
        return draw(st.sampled_from([n, {"value": n * 18, "unit": "mg/dL"}, {"value": n, "unit": "mmol/L"},
                                     {"value": n * 18.0156, "unit": "mg/dL"}, n + 0.5]))
    if kind == "cells":  # 0 to 5 × 10^9/L: 6 and 7 are refused; other units and spellings
        return draw(st.sampled_from([n, {"value": n * 1000, "unit": "/mm3"}, {"value": n * 500, "unit": "cells/uL"},
                                     {"value": n, "unit": "10^3/µL"}, {"value": n * 1000, "unit": "/mm³"}]))
    if kind == "decimal":
        return draw(st.sampled_from([n, n + 0.5, n + 0.25]))
    if kind == "quantity":
        return draw(st.sampled_from([n * 10, n * 10 + 5, {"value": n + 0.5, "unit": "g/dL"},
                                     {"value": n * 10, "unit": "g/L"}, {"value": n, "unit": "g/dL"}]))
    if kind == "weight":  # boundaries in kg and in lb, as the literals above are written
        return draw(st.sampled_from([{"value": n * 10, "unit": "kg"}, n * 20, n * 3,
                                     {"value": n, "unit": "kg"}, {"value": n * 10, "unit": "lb"}]))
    if kind == "length":
        return draw(st.sampled_from([{"value": n * 10, "unit": "cm"}, n, {"value": n * 2.54, "unit": "cm"}]))
    if kind == "lab":
        uln = draw(st.sampled_from([10, 20, 40]))
        return {"value": draw(st.sampled_from([n * 10, uln * n, uln * n + 1])), "uln": uln}
    if kind == "titer":
        return f"1:{draw(st.sampled_from([20, 40, 80, 160, 320]))}"
    if kind == "date":
        return _date(draw)
    if kind == "interval":
        start = _date(draw)
        ending = draw(st.sampled_from(["end", "end", "ongoing", "not recorded"]))
        if ending == "ongoing":
            return {"start": start, "ongoing": True}
        if ending == "not recorded":
            return {"start": start}
        later = (datetime.date.fromisoformat(start) + datetime.timedelta(days=draw(st.sampled_from(DATE_OFFSETS))))
        return {"start": start, "end": later.isoformat()}
    if kind == "dated":
        measured = (ANCHOR - datetime.timedelta(days=draw(st.sampled_from([0, 7, 14, 15, 30, -1])))).isoformat()
        return {"value": n * 10, "measured": measured}
    if kind == "enum":
        return draw(st.sampled_from(MEMBERS))
    if kind == "set":
        return draw(st.lists(st.sampled_from(MEMBERS), max_size=3))
    assert kind == "list"
    return draw(st.lists(item_values(), max_size=4))


@_cached
@st.composite
def records(draw: st.DrawFn, schema: Schema) -> dict[str, Any]:
    record: dict[str, Any] = {}
    if draw(st.integers(0, 9)) > 0:
        record["screening"] = ANCHOR.isoformat()
    for name, (kind, optional) in schema.fields.items():
        roll = draw(st.integers(0, 9))
        if roll == 0:
            continue  # missing
        if roll == 1 and optional:
            record[name] = None  # recorded as none
            continue
        record[name] = draw(values(kind))
    return record


# ---- completions: every way to fill in the missing facts ---------------------------------

def _choices(kind: str) -> list[Any]:
    """Values a missing fact may take: enough to cross every threshold the generator writes."""
    days = [(ANCHOR + datetime.timedelta(days=d)).isoformat() for d in (-1460, -366, -31, -14, -7, -1, 0, 1, 30)]
    return {
        "bool": [True, False], "judgment": [True, False], "integer": [0, 1, 2, 3, 5, 7],
        "ranged": [1, 2, 3, 5, 6], "glucose": [0, 3, {"value": 90, "unit": "mg/dL"}, 6],
        "cells": [0, {"value": 1500, "unit": "/mm3"}, 2, 5],
        "decimal": [0, 2.5, 5.5], "quantity": [0, 25, 60, {"value": 5.5, "unit": "g/dL"}],
        "weight": [0, 40, {"value": 20, "unit": "kg"}, {"value": 50, "unit": "kg"}],
        "length": [0, 3, {"value": 20, "unit": "cm"}], "lab": [{"value": 0, "uln": 10}, {"value": 90, "uln": 20}],
        "titer": ["1:20", "1:80", "1:320"], "date": days, "enum": list(MEMBERS),
        "set": [[], ["a"], ["b", "c"], ["a", "b", "c"]],
        "list": [[], [{"ok": True, "n": 3, "day": "2025-03-24"}], [{"ok": False, "n": 0, "day": "2025-01-01"}]],
        "screening": ["2025-03-31"], "ok": [True, False], "n": [0, 2, 4], "day": ["2025-03-31", "2025-03-16"],
        "interval": [{"start": day, "end": day} for day in days[:3]] + [{"start": days[4], "ongoing": True}],
        "end": [{"end": day} for day in days[3:]] + [{"ongoing": True}],
        "dated": [{"value": 0, "measured": "2025-03-31"}, {"value": 30, "measured": "2025-03-20"}],
    }[kind]


def holes(schema: Schema, record: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """The missing facts of a record: (path, kind) of each absent field and absent item field."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    if "screening" not in record:
        out.append((("screening",), "screening"))
    for name, (kind, _) in schema.fields.items():
        if name not in record:
            out.append(((name,), kind))
        elif kind == "interval" and isinstance(record[name], dict) and not {"end", "ongoing"} & set(record[name]):
            out.append(((name, "end"), "end"))  # an end not recorded: any day from the start on, or ongoing
        elif kind == "list" and isinstance(record[name], list):
            for index, item in enumerate(record[name]):
                out += [((name, index, key), key) for key in ITEM_FIELDS if key not in item]
    return out


def completions(schema: Schema, record: dict[str, Any], limit: int = 256,
                seed: int = 0) -> Iterator[dict[str, Any]]:
    """Every completion of the record's missing facts (all of them, or `limit` drawn evenly at
    random when there are more), each a new record with no fact missing."""
    gaps = holes(schema, record)
    options = [_choices(kind) for _, kind in gaps]
    total = 1
    for choice in options:
        total *= len(choice)
    if total <= limit:
        picks: Iterator[tuple[Any, ...]] = itertools.product(*options)
    else:
        rng = random.Random(seed)
        picks = (tuple(rng.choice(choice) for choice in options) for _ in range(limit))
    for pick in picks:
        full = {key: (list(map(dict, value)) if isinstance(value, list) and value and isinstance(value[0], dict)
                      else value) for key, value in record.items()}
        for (path, _), value in zip(gaps, pick, strict=True):
            if len(path) == 1:
                full[path[0]] = value
            elif path[1] == "end":  # an interval's end, after its start or ongoing
                start = full[str(path[0])]["start"]
                end = value if "ongoing" in value or value["end"] >= start else {"end": start}
                full[str(path[0])] = {**full[str(path[0])], **end}
            else:
                name, index, key = path
                full[name][index][key] = value  # type: ignore[index]
        yield full
