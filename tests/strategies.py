"""Hypothesis strategies: random well-typed protocols (as .crit text) and records for them.

A protocol draws a random schema over every field type, then criteria built from every
operator (comparisons, ranges, membership, windows, × ULN, titers, quantities in other
units, quantifiers and counts, `at least`, `when`, judgments), nested and combined.
Records draw boundary values, missing and null fields, empty and missing lists, other units.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

KINDS = ("bool", "integer", "decimal", "quantity", "lab", "titer", "date", "enum", "set", "list", "judgment")
MEMBERS = ("a", "b", "c")
ANCHOR = datetime.date(2025, 3, 31)


@dataclass
class Schema:
    fields: dict[str, tuple[str, bool]] = field(default_factory=dict)  # name -> (kind, optional)

    def of(self, *kinds: str) -> list[str]:
        return [name for name, (kind, _) in self.fields.items() if kind in kinds]


@st.composite
def schemas(draw: st.DrawFn) -> Schema:
    schema = Schema()
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=2, max_size=9))
    for index, kind in enumerate(kinds):
        optional = kind in ("bool", "date", "integer") and draw(st.booleans())
        schema.fields[f"f{index}"] = (kind, optional)
    return schema


OPS = (">=", "<=", ">", "<", "=", "!=")


@st.composite
def atoms(draw: st.DrawFn, schema: Schema, item: bool = False) -> str:
    """One condition on one field (or, in a list item, on the item's fields)."""
    if item:
        return draw(st.sampled_from(["ok", "not ok", "n >= 2", "n between 1 and 3",
                                     "day within 2 weeks before screening", "ok and n < 3"]))
    choices = schema.of(*KINDS)
    name = draw(st.sampled_from(choices)) if choices else None
    if name is None:
        return draw(st.sampled_from(["true", "false"]))
    kind = schema.fields[name][0]
    op = draw(st.sampled_from(OPS))
    number = draw(st.integers(min_value=0, max_value=5))
    if kind in ("bool", "judgment"):
        return draw(st.sampled_from([name, f"not {name}", f"{name} = true"]))
    if kind == "integer":
        return draw(st.sampled_from([f"{name} {op} {number}", f"{name} between {number} and {number + 2}"]))
    if kind == "decimal":
        return f"{name} {op} {number}.5"
    if kind == "quantity":
        return draw(st.sampled_from([f"{name} {op} {number * 10} g/L", f"{name} {op} {number}.5 g/dL",
                                     f"{name} between {number} g/dL and {number * 10 + 20} g/L"]))
    if kind == "lab":
        return draw(st.sampled_from([f"{name} {op} {number}.0 x ULN", f"{name} {op} {number * 10} U/L"]))
    if kind == "titer":
        return f"{name} {op} 1:{draw(st.sampled_from([40, 80, 160]))}"
    if kind == "date":
        unit = draw(st.sampled_from(["days", "weeks", "months", "years"]))
        direction = draw(st.sampled_from(["before", "after"]))
        form = draw(st.sampled_from(["within", "at least"]))
        return f"{name} {form} {number + 1} {unit} {direction} screening"
    if kind == "enum":
        return draw(st.sampled_from([f"{name} is a", f"{name} is not b", f"{name} is any of (a, c)"]))
    if kind == "set":
        return draw(st.sampled_from([f"{name} has a", f"{name} has any of (b, c)", f"{name} has all of (a, b)"]))
    assert kind == "list"
    cond = draw(atoms(schema, item=True))
    return draw(st.sampled_from([f"any({name} where {cond})", f"all({name} where {cond})",
                                 f"count({name} where {cond}) >= {number % 3}", f"count({name}) < 2"]))


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


@st.composite
def criteria(draw: st.DrawFn, schema: Schema, prefix: str, depth: int, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    combine = draw(st.sampled_from(["", "", " requires any", " requires at least 2"]))
    applies = f" when {draw(atoms(schema))}" if draw(st.integers(0, 4)) == 0 else ""
    lines.append(f'{pad}{prefix} "Criterion {prefix}"{combine}{applies}')
    body = draw(st.lists(st.one_of(
        conditions(schema),
        st.tuples(atoms(schema), conditions(schema)).map(lambda p: f"when {p[0]}: {p[1]}"),
    ), min_size=1, max_size=3))
    children = draw(st.integers(min_value=0, max_value=2 if depth < 2 else 0))
    if combine.endswith("2") and len(body) + children < 2:
        body.append("true")
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
           "record Item", "  ok: bool", "  n: integer", "  day: date", "", "patient",
           "  screening: date"]
    types = {"bool": "bool", "integer": "integer", "decimal": "decimal", "quantity": "quantity g/L also g/dL",
             "lab": "lab U/L", "titer": "titer", "date": "date", "enum": "Color", "set": "set of Color",
             "list": "list of Item", "judgment": "judgment"}
    for name, (kind, optional) in schema.fields.items():
        out.append(f"  {name}: {types[kind]}{'?' if optional else ''}")
    out += ["", f"define d0: {draw(conditions(schema))}", "", "inclusion"]
    for index in range(draw(st.integers(min_value=1, max_value=3))):
        out += draw(criteria(schema, f"I{index + 1}", 0, 2))
    if draw(st.booleans()):
        out += ["  I9 \"Uses the definition\"", "    d0"]
    out += ["", "exclusion"]
    for index in range(draw(st.integers(min_value=1, max_value=2))):
        out += draw(criteria(schema, f"E{index + 1}", 0, 2))
    return "\n".join(out) + "\n", schema


def _date(draw: st.DrawFn) -> str:
    offset = draw(st.sampled_from([0, 1, 6, 7, 13, 14, 15, 27, 28, 29, 30, 31, 59, 365, 366, 730, 731, 1460]))
    sign = draw(st.sampled_from([-1, 1]))
    return (ANCHOR + datetime.timedelta(days=sign * offset)).isoformat()


@st.composite
def values(draw: st.DrawFn, kind: str) -> Any:
    n = draw(st.integers(min_value=0, max_value=7))
    if kind in ("bool", "judgment"):
        return draw(st.booleans())
    if kind == "integer":
        return n
    if kind == "decimal":
        return draw(st.sampled_from([n, n + 0.5, n + 0.25]))
    if kind == "quantity":
        return draw(st.sampled_from([n * 10, n * 10 + 5, {"value": n + 0.5, "unit": "g/dL"},
                                     {"value": n * 10, "unit": "g/L"}, {"value": n, "unit": "g/dL"}]))
    if kind == "lab":
        uln = draw(st.sampled_from([10, 20, 40]))
        return {"value": draw(st.sampled_from([n * 10, uln * n, uln * n + 1])), "uln": uln}
    if kind == "titer":
        return f"1:{draw(st.sampled_from([20, 40, 80, 160, 320]))}"
    if kind == "date":
        return _date(draw)
    if kind == "enum":
        return draw(st.sampled_from(MEMBERS))
    if kind == "set":
        return draw(st.lists(st.sampled_from(MEMBERS), max_size=3))
    assert kind == "list"
    item = st.fixed_dictionaries({}, optional={
        "ok": st.booleans(), "n": st.integers(0, 4), "day": st.builds(lambda: None).flatmap(
            lambda _: st.sampled_from([(ANCHOR - datetime.timedelta(days=d)).isoformat()
                                       for d in (0, 13, 14, 15, 30)]))})
    return draw(st.lists(item, max_size=4))


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
