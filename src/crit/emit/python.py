"""The Python backend: a checked protocol becomes a standard-library-only evaluator module.

Every value taken from the author (titles, labels, notes, names, literals) enters the module
through `repr()` or as a validated identifier, never as raw text; comments quote the `.crit`
source with non-printable characters escaped, so no input can inject code.
"""

from __future__ import annotations

import datetime
import keyword
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import assert_never

import jinja2

from crit import ir
from crit.units import decimal_text

_RUNTIME = Path(__file__).resolve().parents[1] / "runtime.py"
_WIDTH = 100


def runtime_block() -> str:
    """The runtime's source between its markers: what every evaluator embeds verbatim."""
    text = _RUNTIME.read_text(encoding="utf-8")
    start = text.index("# --- begin runtime ---")
    end = text.index("# --- end runtime ---") + len("# --- end runtime ---")
    return text[start:end]


def inert(text: str) -> str:
    """Text safe inside a `#` comment: one line, every non-printable character escaped."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def py_name(name: str) -> str:
    """A .crit name as a Python attribute: keywords get a trailing underscore."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        raise ValueError(f"not a crit name: {name!r}")
    return name + "_" if keyword.iskeyword(name) or keyword.issoftkeyword(name) else name


# ---- a tiny code layout: calls that break one argument per line when too long ----------


@dataclass(frozen=True)
class Call:
    """`func(args)`; each argument may carry a comment, shown when the call is broken."""

    func: str
    args: tuple[Code, ...]
    comments: tuple[str, ...] = ()


@dataclass(frozen=True)
class Lambda:
    """The test a quantifier applies to each list item `it`, found at path `at`."""

    body: Code


Code = str | Call | Lambda


def flat(code: Code) -> str:
    if isinstance(code, str):
        return code
    if isinstance(code, Lambda):
        return f"lambda it, at: {flat(code.body)}"
    return f"{code.func}({', '.join(flat(a) for a in code.args)})"


def layout(code: Code, indent: int, used: int = 0) -> str:
    """Source for `code` in a statement indented by `indent`, whose first line already has
    `used` characters before it. Too-long calls put one argument per line, black-style."""
    one = flat(code)
    commented = isinstance(code, Call) and any(code.comments)
    if max(indent, used) + len(one) <= _WIDTH and not commented:
        return one
    if isinstance(code, str):
        return code
    if isinstance(code, Lambda):
        prefix = "lambda it, at: "
        return prefix + layout(code.body, indent, max(indent, used) + len(prefix))
    pad = " " * (indent + 4)
    lines = []
    comments = code.comments or ("",) * len(code.args)
    for arg, comment in zip(code.args, comments, strict=True):
        if comment:
            lines.append(f"{pad}# {comment}")
        lines.append(f"{pad}{layout(arg, indent + 4)},")
    return f"{code.func}(\n" + "\n".join(lines) + "\n" + " " * indent + ")"


# ---- expressions -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    """How generated code reaches fields and definitions where an expression stands."""

    definitions: str  # "d." in criteria, "def_" inside _derive
    source_lines: tuple[str, ...]


def _decimal(value: Decimal) -> str:
    return f"Decimal({decimal_text(value)!r})"


def _const(c: ir.Const) -> str:
    value = c.value
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, Decimal):
        return _decimal(value)
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, datetime.date):
        return f"datetime.date({value.year}, {value.month}, {value.day})"
    return repr(value)


def _value(v: ir.Value) -> tuple[str, str]:
    """(code for the value, code for its path — '""' for a literal)."""
    if isinstance(v, ir.Const):
        return _const(v), "''"
    attr = py_name(v.field.name)
    if v.scope == "item":
        return f"it.{attr}", f"at + {'.' + v.field.name!r}"
    return f"p.{attr}", repr(v.field.name)


def _unit_of(v: ir.Value) -> str:
    if isinstance(v, ir.FieldRef) and v.field.type.unit is not None:
        return v.field.type.unit.text
    return ""


def _is_titer(v: ir.Value) -> bool:
    return isinstance(v, ir.FieldRef) and v.field.type.kind == "titer"


def _text(v: ir.Value) -> str:
    return v.display if isinstance(v, ir.Const) else v.field.name


def _members_text(kind: str, members: tuple[str, ...]) -> str:
    if len(members) == 1:
        return members[0]
    if len(members) > 5:
        return f"any of the {len(members)} listed"
    return ("one of " if kind.startswith("is") else "") + ", ".join(members)


_WINDOW_TEXT = {"within": "within", "at_least": "at least"}


def expr_code(e: ir.Expr, ctx: _Context) -> Code:
    """The Python call that evaluates `e` to a runtime `Fact`."""
    if isinstance(e, ir.Compare):
        left, left_path = _value(e.left)
        right, right_path = _value(e.right)
        args = [left, repr(e.op), right, left_path, right_path, repr(_unit_of(e.left)),
                repr(_text(e.right))]
        if _is_titer(e.left):
            args.append("titer=True")
        return Call("compare", tuple(args))
    if isinstance(e, ir.UlnCompare):
        lab, path = _value(e.lab)
        multiple = str(e.multiple)
        return Call("compare_uln", (lab, repr(e.op), _decimal(e.multiple), path,
                                    repr(_unit_of(e.lab)), repr(multiple)))
    if isinstance(e, ir.Between):
        value, path = _value(e.value)
        low, low_path = _value(e.low)
        high, high_path = _value(e.high)
        args = [value, low, high, path, low_path, high_path, repr(_unit_of(e.value)),
                repr(f"{_text(e.low)}–{_text(e.high)}")]
        if _is_titer(e.value):
            args.append("titer=True")
        return Call("between", tuple(args))
    if isinstance(e, ir.Member):
        value, path = _value(e.value)
        members = "frozenset({" + ", ".join(repr(m) for m in sorted(set(e.members))) + "})"
        func = "member" if e.kind.startswith("is") else "has"
        return Call(func, (value, repr(e.kind), members, path, repr(_members_text(e.kind, e.members))))
    if isinstance(e, ir.Window):
        value, path = _value(e.value)
        anchor, anchor_path = _value(e.anchor)
        text = f"{_WINDOW_TEXT[e.kind]} {e.amount} {e.unit.rstrip('s') if e.amount == 1 else e.unit} {e.direction}"
        return Call("window", (value, repr(e.kind), repr(e.amount), repr(e.unit), repr(e.direction),
                               anchor, path, anchor_path, repr(text)))
    if isinstance(e, ir.Truth):
        return f"Fact({e.value!r}, {'always' if e.value else 'never'!r})"
    if isinstance(e, ir.DefinitionRef):
        return f"{ctx.definitions}{py_name(e.name)}"
    if isinstance(e, ir.FieldRef):
        value, path = _value(e)
        if e.field.type.kind == "judgment":
            return Call("truth", (value, path, "judgment=True"))
        return Call("truth", (value, path))
    if isinstance(e, ir.Not):
        return Call("negate", (expr_code(e.operand, ctx),))
    if isinstance(e, ir.And):
        return Call("all_of", tuple(expr_code(x, ctx) for x in e.operands))
    if isinstance(e, ir.Or):
        return Call("any_of", tuple(expr_code(x, ctx) for x in e.operands))
    if isinstance(e, ir.AtLeast):
        return Call("at_least", (repr(e.count), *(expr_code(x, ctx) for x in e.operands)))
    if isinstance(e, ir.Quantified):
        value, path = _value(e.items)
        return Call("quantify", (repr(e.kind), value, path, _test(e.condition, ctx)))
    if isinstance(e, ir.CountCompare):
        value, path = _value(e.items)
        return Call("count", (repr(e.op), repr(e.number), value, path, _test(e.condition, ctx)))
    assert_never(e)


def _test(condition: ir.Expr | None, ctx: _Context) -> Lambda:
    return Lambda(expr_code(condition, ctx) if condition is not None else "ALWAYS")


def _comment(span_line: int, ctx: _Context) -> str:
    if 1 <= span_line <= len(ctx.source_lines):
        return f"line {span_line}: {inert(ctx.source_lines[span_line - 1].strip())}"
    return f"line {span_line}"


def _lines(items: tuple[ir.Line | ir.When, ...], ctx: _Context) -> tuple[tuple[Code, ...], tuple[str, ...]]:
    return (tuple(_line_code(b, ctx) for b in items), tuple(_comment(b.span.line, ctx) for b in items))


def _line_code(item: ir.Line | ir.When, ctx: _Context) -> Code:
    if isinstance(item, ir.Line):
        return expr_code(item.expr, ctx)
    return Call("when", (expr_code(item.condition, ctx), Call("all_of", *_lines(item.body, ctx))))


def _combine(criterion: ir.Criterion, parts: tuple[Code, ...], comments: tuple[str, ...]) -> Code:
    if criterion.combine == "any":
        return Call("any_of", parts, comments)
    if criterion.combine == "at_least":
        return Call("at_least", (repr(criterion.at_least), *parts), ("", *comments))
    return Call("all_of", parts, comments)


def crit_func(criterion_id: str) -> str:
    return "_crit_" + criterion_id.replace(".", "_")


# ---- the module ------------------------------------------------------------------------


@dataclass(frozen=True)
class _FieldView:
    attr: str
    key: str
    annotation: str
    read: str  # the call that reads it from the record `raw`, at path `at` when in a record


@dataclass(frozen=True)
class _RecordView:
    name: str
    cls: str
    reader: str
    label: str
    fields: tuple[_FieldView, ...]


@dataclass(frozen=True)
class _CriterionView:
    id: str
    func: str
    comment: str
    gate: str | None
    body: str


_ANNOTATIONS = {
    "bool": "bool", "judgment": "bool", "integer": "int", "decimal": "Decimal",
    "quantity": "Decimal", "text": "str", "date": "datetime.date", "titer": "int",
    "lab": "Lab", "enum": "str", "set": "frozenset[str]",
}
_READERS = {
    "bool": "read_bool", "judgment": "read_bool", "integer": "read_integer",
    "decimal": "read_decimal", "text": "read_text", "date": "read_date", "titer": "read_titer",
}


def _record_class(name: str) -> str:
    return f"{name}Record"


def _field_view(field: ir.Field, in_record: bool) -> _FieldView:
    t = field.type
    if t.kind == "list":
        assert t.record is not None
        annotation = f"list[{_record_class(t.record)}]"
        reader = f"lambda raw, at, pr: read_list(raw, at, pr, _read_{t.record})"
    elif t.kind in ("quantity", "lab"):
        assert t.unit is not None
        annotation = _ANNOTATIONS[t.kind]
        factors = "{" + ", ".join(f"{u.text!r}: {_decimal(f)}" for u, f in t.also) + "}"
        reader = f"lambda raw, at, pr: read_{t.kind}(raw, at, pr, {t.unit.text!r}, {factors})"
    elif t.kind in ("enum", "set"):
        assert t.enum is not None
        annotation = _ANNOTATIONS[t.kind]
        reader = f"lambda raw, at, pr: read_{t.kind}(raw, at, pr, _ENUM_{t.enum.name})"
    else:
        annotation = _ANNOTATIONS[t.kind]
        reader = _READERS[t.kind]
    attr = py_name(field.name)
    path = f"at + {'.' + field.name!r}" if in_record else repr(field.name)
    call = Call("get", ("raw", repr(field.name), path, "pr", reader, repr(field.optional)))
    return _FieldView(attr, field.name, f"{annotation} | Absent | None",
                      layout(call, 8, 9 + len(attr)))


def _criterion_views(protocol: ir.Protocol, lines: tuple[str, ...]) -> list[_CriterionView]:
    ctx = _Context("d.", lines)
    views = []
    for criterion in protocol.criteria():
        parts: list[Code] = []
        comments: list[str] = []
        for item in criterion.items:
            if isinstance(item, ir.Note):
                continue
            if isinstance(item, ir.Criterion):
                parts.append(Call("summary", (repr(item.id), f"{crit_func(item.id)}(p, d, gate, out)")))
                comments.append(f"{item.id} {inert(item.title)}")
            else:
                parts.append(_line_code(item, ctx))
                comments.append(_comment(item.span.line, ctx))
        body = _combine(criterion, tuple(parts), tuple(comments))
        gate = None
        if criterion.applies is not None:
            gate = layout(Call("all_of", ("gate", expr_code(criterion.applies, ctx))), 4, 11)
        views.append(_CriterionView(
            id=criterion.id,
            func=crit_func(criterion.id),
            comment=_comment(criterion.span.line, ctx),
            gate=gate,
            body=layout(Call("when", ("gate", body)), 4, 11),
        ))
    return views


def _criteria_info(protocol: ir.Protocol) -> list[str]:
    out = []

    def visit(criterion: ir.Criterion, parent: str | None) -> None:
        info = Call("CriterionInfo", (repr(criterion.id), repr(criterion.title), repr(criterion.section),
                                      repr(parent), repr(criterion.span.line)))
        out.append(layout(info, 4, 4))
        for child in criterion.children():
            visit(child, criterion.id)

    for top in protocol.inclusion + protocol.exclusion:
        visit(top, None)
    return out


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("crit", "templates"),
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def emit_python(protocol: ir.Protocol, source_text: str = "") -> str:
    """The evaluator module for `protocol`; `source_text` is quoted in comments when given."""
    lines = tuple(source_text.splitlines())
    def_ctx = _Context("def_", lines)
    definitions = []
    for definition in protocol.definitions:
        parts, comments = _lines(definition.lines(), def_ctx)
        code = Call("all_of", parts, comments) if len(parts) > 1 else parts[0]
        name = py_name(definition.name)
        definitions.append({
            "name": name,
            "comment": _comment(definition.span.line, def_ctx),
            "code": layout(code, 4, 4 + len(f"def_{name} = ")),
        })
    records = [
        _RecordView(r.name, _record_class(r.name), f"_read_{r.name}", inert(r.label or r.name),
                    tuple(_field_view(f, True) for f in r.fields))
        for r in protocol.records
    ]
    judgments = sorted(f.name for f in protocol.fields if f.type.kind == "judgment")
    metadata = {
        "id": protocol.id, "title": protocol.title, "version": protocol.version,
        "source": protocol.source, "sha256": protocol.source_hash,
    }
    template = _environment().get_template("evaluator.py.j2")
    return template.render(
        protocol=protocol,
        source=inert(protocol.source),
        runtime=runtime_block(),
        enums=[(e.name, tuple(e.member_names())) for e in protocol.enums],
        records=records,
        fields=[_field_view(f, False) for f in protocol.fields],
        definitions=definitions,
        criteria=_criterion_views(protocol, lines),
        top_level=[crit_func(c.id) for c in protocol.inclusion + protocol.exclusion],
        criteria_info=_criteria_info(protocol),
        judgments=judgments,
        metadata=metadata,
        repr=repr,
    )
