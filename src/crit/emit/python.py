"""The Python backend: a checked protocol becomes a standard-library-only evaluator module.

Every value taken from the author (titles, labels, notes, names, literals) enters the module
through `repr()` or as a validated identifier, never as raw text; comments quote the `.crit`
source with non-printable characters escaped, so no input can inject code.
"""

from __future__ import annotations

import datetime
import keyword
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import assert_never

import jinja2

from crit import ir
from crit.reasons import is_titer, members_text, range_text, text_of, unit_of, window_text
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


def _decimal(value: Decimal | Fraction) -> str:
    if isinstance(value, Fraction):  # exact: no decimal writes it
        return f"Fraction({value.numerator}, {value.denominator})"
    return f"Decimal({decimal_text(value)!r})"


def _const(c: ir.Const) -> str:
    value = c.value
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, Decimal | Fraction):
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


def expr_code(e: ir.Expr, ctx: _Context) -> Code:
    """The Python call that evaluates `e` to a runtime `Fact`."""
    if isinstance(e, ir.Compare):
        left, left_path = _value(e.left)
        right, right_path = _value(e.right)
        args = [left, repr(e.op), right, left_path, right_path, repr(unit_of(e.left)),
                repr(text_of(e.right))]
        if is_titer(e.left):
            args.append("titer=True")
        return Call("compare", tuple(args))
    if isinstance(e, ir.UlnCompare):
        lab, path = _value(e.lab)
        multiple = str(e.multiple)
        return Call("compare_uln", (lab, repr(e.op), _decimal(e.multiple), path,
                                    repr(unit_of(e.lab)), repr(multiple)))
    if isinstance(e, ir.Between):
        value, path = _value(e.value)
        low, low_path = _value(e.low)
        high, high_path = _value(e.high)
        args = [value, low, high, path, low_path, high_path, repr(unit_of(e.value)),
                repr(range_text(e))]
        if is_titer(e.value):
            args.append("titer=True")
        return Call("between", tuple(args))
    if isinstance(e, ir.Member):
        value, path = _value(e.value)
        members = "frozenset({" + ", ".join(repr(m) for m in sorted(set(e.members))) + "})"
        func = "member" if e.kind.startswith("is") else "has"
        return Call(func, (value, repr(e.kind), members, path, repr(members_text(e.kind, e.members))))
    if isinstance(e, ir.Window):
        value, path = _value(e.value)
        anchor, anchor_path = _value(e.anchor)
        text = window_text(e)
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
    "quantity": "Exact", "text": "str", "date": "datetime.date", "titer": "int",
    "lab": "Lab", "enum": "str", "set": "frozenset[str]",
}


def _record_class(name: str) -> str:
    return f"{name}Record"


def _field_view(field: ir.Field, in_record: bool, units: dict[str, str]) -> _FieldView:
    """How `_read` gets a field: the common valid case inline, anything else through the
    runtime's reader for its type, which reports the problem (`get` semantics: absent is
    missing, null is none recorded in an optional field, missing otherwise)."""
    t = field.type
    path = f"at + {'.' + field.name!r}" if in_record else repr(field.name)
    if t.kind == "list":
        assert t.record is not None
        annotation = f"list[{_record_class(t.record)}]"
        value = f"read_list(v, {path}, pr, _read_{t.record})"
    elif t.kind in ("quantity", "lab"):
        assert t.unit is not None
        annotation = _ANNOTATIONS[t.kind]
        factors = "{" + ", ".join(f"{u.text!r}: {_decimal(f)}" for u, f in t.also) + "}"
        name = units.setdefault(factors, f"_UNITS_{len(units) + 1}")
        value = f"read_{t.kind}_fast(v, {path}, pr, {t.unit.text!r}, {name})"
    elif t.kind == "enum":
        assert t.enum is not None
        annotation = _ANNOTATIONS[t.kind]
        members = f"_MEMBERS_{t.enum.name}"
        value = f"v if type(v) is str and v in {members} else read_enum(v, {path}, pr, _ENUM_{t.enum.name})"
    elif t.kind == "set":
        assert t.enum is not None
        annotation = _ANNOTATIONS[t.kind]
        value = f"read_set_fast(v, {path}, pr, _ENUM_{t.enum.name}, _MEMBERS_{t.enum.name})"
    else:
        annotation = _ANNOTATIONS[t.kind]
        value = _FAST_READ[t.kind].format(path=path)
    absent = f"(NONE if {field.name!r} in raw else None)" if field.optional else "None"
    read = f"{absent} if (v := raw.get({field.name!r})) is None else {value}"
    return _FieldView(py_name(field.name), field.name, f"{annotation} | Absent | None", read)


_FAST_READ = {
    "bool": "v if v is True or v is False else read_bool(v, {path}, pr)",
    "judgment": "v if v is True or v is False else read_bool(v, {path}, pr)",
    "integer": "v if type(v) is int and -_BIG < v < _BIG else read_integer(v, {path}, pr)",
    "decimal": "read_decimal_fast(v, {path}, pr)",
    "text": "v if type(v) is str else read_text(v, {path}, pr)",
    "date": "read_date_fast(v, {path}, pr)",
    "titer": "read_titer_fast(v, {path}, pr)",
}


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
    units: dict[str, str] = {}
    records = [
        _RecordView(r.name, _record_class(r.name), f"_read_{r.name}", inert(r.label or r.name),
                    tuple(_field_view(f, True, units) for f in r.fields))
        for r in protocol.records
    ]
    fields = [_field_view(f, False, units) for f in protocol.fields]
    fast = _Fast(protocol, lines)
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
        fields=fields,
        units=[(name, factors) for factors, name in units.items()],
        definitions=definitions,
        criteria=_criterion_views(protocol, lines),
        top_level=[crit_func(c.id) for c in protocol.inclusion + protocol.exclusion],
        fast=fast.module(),
        criteria_info=_criteria_info(protocol),
        judgments=judgments,
        metadata=metadata,
        repr=repr,
    )


# ---- the fast path: decide() and assess() ------------------------------------------------
#
# The same outcomes as the facts above, computed on plain values (True, False, NA, or the
# tuple of missing paths of an unknown; see the runtime) with the atoms inline and no reasons.
# Conditions short-circuit; definitions are worked out once, when first needed (`_Memo`).
# `assess` works out every criterion, `decide` stops at the first criterion that settles the
# decision. Both are checked against the facts by tests/test_decide.py.


@dataclass(frozen=True)
class _If:
    """`(v1 if t1 else v2 if t2 else default)`: one branch per line when too long."""

    branches: tuple[tuple[FastCode, FastCode], ...]
    default: FastCode


@dataclass(frozen=True)
class _Bind:
    """`(name := value)` followed by `rest`, e.g. ` is None`."""

    name: str
    value: FastCode
    rest: str = ""


@dataclass(frozen=True)
class _Join:
    """Parts written one after the other: `a or b`."""

    parts: tuple[FastCode, ...]


@dataclass(frozen=True)
class _Apply:
    """`func(args)`, or the tuple `(args)` when `func` is empty: one argument per line when long."""

    func: str
    args: tuple[FastCode, ...]


FastCode = str | _Apply | _If | _Bind | _Join


def _flat(code: FastCode) -> str:
    if isinstance(code, str):
        return code
    if isinstance(code, _Apply):
        args = [_flat(a) for a in code.args]
        return f"{code.func}({', '.join(args)}{',' if len(args) == 1 and not code.func else ''})"
    if isinstance(code, _Bind):
        return f"({code.name} := {_flat(code.value)}){code.rest}"
    if isinstance(code, _Join):
        return "".join(_flat(p) for p in code.parts)
    branches = " else ".join(f"{_flat(v)} if {_flat(t)}" for v, t in code.branches)
    return f"({branches} else {_flat(code.default)})"


def _lay(code: FastCode, indent: int, used: int = 0) -> str:
    """`code` in a statement indented by `indent` with `used` characters before it: flat when it
    fits in the line, otherwise broken black-style, one branch or argument per line."""
    one = _flat(code)
    if max(indent, used) + len(one) <= _WIDTH or isinstance(code, str):
        return one
    inner = indent + 4
    pad = " " * inner
    if isinstance(code, _Apply):
        args = [f"{pad}{_lay(a, inner)}," for a in code.args]
        return f"{code.func}(\n" + "\n".join(args) + "\n" + " " * indent + ")"
    if isinstance(code, _Bind):
        head = f"({code.name} := "
        return head + _lay(code.value, indent, max(indent, used) + len(head)) + ")" + code.rest
    if isinstance(code, _Join):
        out, column = "", max(indent, used)
        for part in code.parts:
            text = _lay(part, indent, column)
            out += text
            column = len(text.rsplit("\n", 1)[-1]) if "\n" in text else column + len(text)
        return out
    lines = []
    for index, (value, test) in enumerate(code.branches):
        lead = pad + ("" if index == 0 else "else ")
        shown = _lay(value, inner, len(lead))
        lines.append(f"{lead}{shown} if {_lay(test, inner, len(lead) + len(shown) + 4)}")
    lines.append(f"{pad}else {_lay(code.default, inner, inner + 5)}")
    return "(\n" + "\n".join(lines) + "\n" + " " * indent + ")"


_PY_OPS = {">=": ">=", "<=": "<=", ">": ">", "<": "<", "=": "==", "!=": "!="}
_FOLD_LIMIT = 8  # operands of `and`/`or` written as nested conditionals
_RECORD = "_MET if v is True else _NOT_MET if v is False else _NOT_APPLICABLE if v is NA else _UNKNOWN"


class _Fast:
    def __init__(self, protocol: ir.Protocol, lines: tuple[str, ...]) -> None:
        self.protocol = protocol
        self.ctx = _Context("", lines)
        self.constants: dict[str, str] = {}  # code -> module-level name
        self.loops: dict[ir.Quantified | ir.CountCompare, tuple[str, str]] = {}  # -> (name, source)
        self.loop_count = 0
        self.temps = 0
        self.item_list: str | None = None  # the list whose item `it` is, inside a quantifier
        self.index = {c.id: i for i, c in enumerate(_in_info_order(protocol))}

    # ---- values ----
    def constant(self, code: str) -> str:
        name = self.constants.get(code)
        if name is None:
            name = self.constants[code] = f"_K{len(self.constants) + 1}"
        return name

    def temp(self) -> str:
        self.temps += 1
        return f"t{self.temps}"

    def literal(self, c: ir.Const) -> str:
        code = _const(c)
        return self.constant(code) if code.startswith(("Decimal(", "Fraction(", "datetime.")) else code

    def access(self, v: ir.FieldRef) -> str:
        return f"{'it' if v.scope == 'item' else 'p'}.{py_name(v.field.name)}"

    def path(self, v: ir.FieldRef) -> str:
        if v.scope == "item":
            assert self.item_list is not None
            return "f" + repr(f"{self.item_list}[{{i}}].{v.field.name}")
        return repr(v.field.name)

    def guarded(self, values: tuple[ir.Value, ...], body: Callable[[list[str]], FastCode],
                when_none: str = "False", unwrap: bool = True) -> FastCode:
        """`body` on the values once none is missing (unknown) or recorded as none."""
        codes: list[str] = []
        tests: list[FastCode] = []
        nones: list[str] = []
        fields: list[ir.FieldRef] = []
        for v in values:
            if isinstance(v, ir.Const):
                codes.append(self.literal(v))
                continue
            t = self.temp()
            tests += [" or ", _Bind(t, self.access(v), " is None")]
            nones.append(f"{t} is NONE")
            fields.append(v)
            codes.append(f"{t}.value" if unwrap and v.field.type.kind == "lab" else t)
        if not fields:
            return body(codes)
        unknown: FastCode
        if len(fields) == 1:
            unknown = f"({self.path(fields[0])},)"
        else:
            unknown = _Apply("_missing", tuple(f"({self.access(f)}, {self.path(f)})" for f in fields))
        return _If(((unknown, _Join(tuple(tests[1:]))), (when_none, " or ".join(nones))), body(codes))

    # ---- conditions: code for a Tri ----
    def expr(self, e: ir.Expr) -> FastCode:
        if isinstance(e, ir.Compare):
            op = _PY_OPS[e.op]
            if isinstance(e.right, ir.Const) and isinstance(e.right.value, bool) and op in ("==", "!="):
                op = "is" if op == "==" else "is not"
            return self.guarded((e.left, e.right), lambda c: f"{c[0]} {op} {c[1]}")
        if isinstance(e, ir.UlnCompare):
            multiple = self.constant(_decimal(e.multiple))
            return self.guarded((e.lab,), lambda c: f"{c[0]}.value {_PY_OPS[e.op]} scale({c[0]}.uln, {multiple})",
                                unwrap=False)
        if isinstance(e, ir.Between):
            if isinstance(e.low, ir.Const) and isinstance(e.high, ir.Const):
                low, high = self.literal(e.low), self.literal(e.high)
                return self.guarded((e.value,), lambda c: f"{low} <= {c[0]} <= {high}")
            values = [(self.access(v), self.path(v)) if isinstance(v, ir.FieldRef) else (self.literal(v), "''")
                      for v in (e.value, e.low, e.high)]
            return _Apply("between3", tuple(code for code, _ in values) + tuple(path for _, path in values))
        if isinstance(e, ir.Member):
            return self.member(e)
        if isinstance(e, ir.Window):
            args = (repr(e.kind), repr(e.amount), repr(e.unit), repr(e.direction))
            return self.guarded((e.value, e.anchor), lambda c: _Apply("window_holds", (c[0], *args, c[1])))
        if isinstance(e, ir.Truth):
            return repr(e.value)
        if isinstance(e, ir.DefinitionRef):
            return f"_fast_{py_name(e.name)}(p, m)"
        if isinstance(e, ir.FieldRef):
            t = self.temp()
            return _If(((f"({self.path(e)},)", _Bind(t, self.access(e), " is None")),), f"{t} is True")
        if isinstance(e, ir.Not):
            t = self.temp()
            return _If(((f"not {t}", _Bind(t, self.expr(e.operand), f" is True or {t} is False")),), t)
        if isinstance(e, ir.And):
            return self.fold("and", tuple(self.expr(x) for x in e.operands))
        if isinstance(e, ir.Or):
            return self.fold("or", tuple(self.expr(x) for x in e.operands))
        if isinstance(e, ir.AtLeast):
            if e.count == 1:
                return self.fold("or", tuple(self.expr(x) for x in e.operands))
            if e.count == len(e.operands):
                return self.fold("and", tuple(self.expr(x) for x in e.operands))
            return _Apply("count3", (str(e.count), _Apply("", tuple(self.expr(x) for x in e.operands))))
        if isinstance(e, ir.Quantified | ir.CountCompare):
            return f"{self.loop(e)}({self.access(e.items)}, p, m)"
        assert_never(e)

    def member(self, e: ir.Member) -> FastCode:
        members = sorted(set(e.members))
        none = repr(e.kind == "is_not")
        if e.kind.startswith("is"):
            if len(members) == 1:
                op = "!=" if e.kind == "is_not" else "=="
                return self.guarded((e.value,), lambda c: f"{c[0]} {op} {members[0]!r}", when_none=none)
            found = self.constant("frozenset({" + ", ".join(map(repr, members)) + "})")
            op = "not in" if e.kind == "is_not" else "in"
            return self.guarded((e.value,), lambda c: f"{c[0]} {op} {found}", when_none=none)
        if len(members) == 1:
            return self.guarded((e.value,), lambda c: f"{members[0]!r} in {c[0]}")
        found = self.constant("frozenset({" + ", ".join(map(repr, members)) + "})")
        if e.kind == "has_all":
            return self.guarded((e.value,), lambda c: f"{c[0]} >= {found}")
        return self.guarded((e.value,), lambda c: f"not {c[0]}.isdisjoint({found})")

    def fold(self, kind: str, operands: tuple[FastCode, ...]) -> FastCode:
        """Kleene `and`/`or` of conditions, short-circuiting, as a right fold of pairs:
        `a and b` is false if a is, else a if b is true, else b if b is false or a is true,
        else unknown for want of both. Past a few operands the nesting would get too deep for
        Python's parser: then `count3` (all true, or one true) does it without short-circuiting."""
        if len(operands) > _FOLD_LIMIT:
            return _Apply("count3", (str(len(operands) if kind == "and" else 1), _Apply("", operands)))
        code = operands[-1]
        settles, neutral = ("False", "True") if kind == "and" else ("True", "False")
        for first in reversed(operands[:-1]):
            a, b = self.temp(), self.temp()
            code = _If(((settles, _Bind(a, first, f" is {settles}")),
                        (a, _Bind(b, code, f" is {neutral}")),
                        (b, f"{b} is {settles} or {a} is {neutral}")),
                       f"union({a}, {b})")
        return code

    def loop(self, e: ir.Quantified | ir.CountCompare) -> str:
        """A quantifier over a list becomes a function whose loop visits the items."""
        if e in self.loops:
            return self.loops[e][0]
        # Reserve the name before generating the condition: a quantifier nested in it
        # generates its own loop first and must get a name of its own.
        self.loop_count += 1
        name = f"_loop_{self.loop_count}"
        saved = self.temps, self.item_list
        self.temps, self.item_list = 0, e.items.field.name
        try:
            condition = None if e.condition is None else _lay(self.expr(e.condition), 8, 17)
        finally:
            self.temps, self.item_list = saved
        items = f"list[{_record_class(e.record.name)}] | Absent | None"
        out = [f"def {name}(items: {items}, p: Patient, m: _Memo) -> Tri:",
               f"    # {_comment(e.span.line, self.ctx)}",
               "    if items is None:",
               f"        return ({e.items.field.name!r},)",
               "    seq = () if items is NONE else items"]
        if condition is None:
            if isinstance(e, ir.CountCompare):
                out.append(f"    return bool(count_verdict({e.op!r}, {e.number!r}, len(seq), len(seq)))")
            else:
                out.append("    return len(seq) > 0" if e.kind == "any" else "    return True")
        else:
            index = "i" if "{i}" in condition else "_"
            item = "it" if "it." in condition else "_it"
            out.append("    unknown: tuple[str, ...] | None = None")
            if isinstance(e, ir.CountCompare):
                out += ["    low = high = 0",
                        f"    for {index}, {item} in enumerate(seq):",
                        f"        v: Tri = {condition}",
                        "        if v is True:",
                        "            low += 1",
                        "        elif v is not False:",
                        "            high += 1",
                        "            unknown = v if unknown is None else union(unknown, v)",
                        f"    verdict = count_verdict({e.op!r}, {e.number!r}, low, low + high)",
                        "    if verdict is None:",
                        "        assert unknown is not None",
                        "        return unknown",
                        "    return verdict"]
            else:
                settles, other = ("True", "False") if e.kind == "any" else ("False", "True")
                out += [f"    for {index}, {item} in enumerate(seq):",
                        f"        v: Tri = {condition}",
                        f"        if v is {settles}:",
                        f"            return {settles}",
                        f"        if v is not {other}:",
                        "            unknown = v if unknown is None else union(unknown, v)",
                        f"    return {other} if unknown is None else unknown"]
        self.loops[e] = (name, "\n".join(out))
        return name

    # ---- definitions and criteria ----
    def definition(self, d: ir.Definition) -> str:
        self.temps = 0
        name = py_name(d.name)
        lines = d.lines()
        code = self.fold("and", tuple(self.expr(x.expr) for x in lines))
        return "\n".join([
            f"def _fast_{name}(p: Patient, m: _Memo) -> Tri:",
            f"    # {_comment(d.span.line, self.ctx)}",
            f"    v = m.{name}",
            "    if v is UNSET:",
            f"        v = m.{name} = {_lay(code, 8, 15 + len(name))}",
            "    return v",
        ])

    def line(self, item: ir.Line | ir.When) -> FastCode:
        if isinstance(item, ir.Line):
            return self.expr(item.expr)
        body = _Apply("", tuple(self.line(b) for b in item.body))
        return _Apply("when3", (self.expr(item.condition), _Apply("all3", (body,))))

    def criterion(self, c: ir.Criterion, mode: str, static_gate: bool) -> str:
        """`_assess_ID` or `_decide_ID`: the criterion's value, given its parent's gate `g`."""
        self.temps = 0
        static = static_gate and c.applies is None
        extra = ", o: list[Outcome]" if mode == "assess" else ""
        out = [f"def _{mode}_{c.id.replace('.', '_')}(p: Patient, m: _Memo, g: Tri{extra}) -> TriNA:",
               f"    # {_comment(c.span.line, self.ctx)}"]
        if c.applies is not None:
            condition = self.expr(c.applies)
            gate = condition if static_gate else self.fold("and", ("g", condition))
            out += [f"    g = {_lay(gate, 4, 8)}", "    if g is False:", "        return NA"]
        parts: list[tuple[FastCode, str, bool]] = []  # (code, comment, may be NA)
        for item in c.items:
            if isinstance(item, ir.Note):
                continue
            if isinstance(item, ir.Criterion):
                args = "p, m, g, o" if mode == "assess" else "p, m, g"
                parts.append((f"_{mode}_{item.id.replace('.', '_')}({args})", f"{item.id} {inert(item.title)}", True))
            else:
                parts.append((self.line(item), _comment(item.span.line, self.ctx), isinstance(item, ir.When)))
        if c.combine in ("all", "any") and mode == "decide" and any(na for _, _, na in parts):
            out += self.short_circuit(c, parts, static)
        else:
            out += self.combined(c, parts)
            if not static:
                out.append("    v = when3(g, v)")
        if mode == "assess":
            out.append(f"    o[{self.index[c.id]}] = {_RECORD}")
        out.append("    return v")
        return "\n".join(out)

    def combined(self, c: ir.Criterion, parts: list[tuple[FastCode, str, bool]]) -> list[str]:
        """`v = ` the criterion's parts combined."""
        comments = [f"    # {comment}" for _, comment, _ in parts]
        folds = len(parts) == 1 or (len(parts) <= _FOLD_LIMIT and not any(na for _, _, na in parts))
        if c.combine in ("all", "any") and folds:
            code = self.fold("and" if c.combine == "all" else "or", tuple(code for code, _, _ in parts))
            return [*comments, f"    v: TriNA = {_lay(code, 4, 15)}"]
        func = {"all": "all3", "any": "any3"}.get(c.combine, "at_least3")
        out = [f"    v: TriNA = {func}({f'{c.at_least}, ' if c.combine == 'at_least' else ''}("]
        for code, comment, _ in parts:
            out += [f"        # {comment}", f"        {_lay(code, 8)},"]
        out.append("    ))")
        return out

    def short_circuit(self, c: ir.Criterion, parts: list[tuple[FastCode, str, bool]], static: bool) -> list[str]:
        """`all`/`any` that returns as soon as one part settles it (decide only)."""
        settles, other = ("False", "True") if c.combine == "all" else ("True", "False")
        # when(g, settled): settled if the gate holds, else unknown for want of the gate, and
        # perhaps not applicable (Unsure), as when3 gives it
        exit_value = settles if static else f"{settles} if g is True else Unsure(g)"
        # whether it may turn out not applicable, or (sure) surely applies
        track = all(na for _, _, na in parts)
        out = ["    unknown: tuple[str, ...] | None = None"]
        if track:
            out.append("    applicable = sure = False")
        first = True
        for code, comment, na in parts:
            out += [f"    # {comment}", f"    v{': TriNA' if first else ''} = {_lay(code, 4, 15)}",
                    f"    if v is {settles}:", f"        return {exit_value}"]
            if track:
                out += ["    if v is not NA:", "        applicable = True",
                        f"        if v is not {other}:", "            unknown = v",
                        "            sure = sure or type(v) is not Unsure",
                        "        else:", "            sure = True"]
            else:  # mypy narrows `v` to what was assigned, except where it is declared
                out += [f"    if v is not {other}{' and v is not NA' if na or first else ''}:", "        unknown = v"]
            first = False
        if track:
            out.append(f"    v = NA if not applicable else {other} if unknown is None else settle(unknown, sure)")
        else:
            out.append(f"    v = {other} if unknown is None else settle(unknown, True)")
        if not static:
            out.append("    v = when3(g, v)")
        return out

    def top(self, mode: str) -> str:
        tops = self.protocol.inclusion + self.protocol.exclusion
        if mode == "decide":
            out = ["def _decide(p: Patient) -> Decision:", "    m = _Memo()", "    unknown = False"]
            for c in tops:
                refuses, other = ("False", "True") if c.section == "inclusion" else ("True", "False")
                out += [f"    v = _decide_{c.id.replace('.', '_')}(p, m, True)",
                        f"    if v is {refuses}:",
                        "        return Decision.INELIGIBLE",
                        f"    if v is not {other} and v is not NA:",
                        "        unknown = True"]
            out.append("    return Decision.NEEDS_REVIEW if unknown else Decision.ELIGIBLE")
            return "\n".join(out)
        out = ["def _assess(p: Patient) -> Assessment:",
               "    m = _Memo()",
               f"    o = [_NOT_APPLICABLE] * {len(self.index)}",
               "    refused = False",
               "    unknown: tuple[str, ...] | None = None"]
        for index, c in enumerate(tops):
            refuses, other = ("False", "True") if c.section == "inclusion" else ("True", "False")
            out += [f"    v{': TriNA' if index == 0 else ''} = _assess_{c.id.replace('.', '_')}(p, m, True, o)",
                    f"    if v is {refuses}:",
                    "        refused = True",
                    f"    elif v is not {other} and v is not NA:",
                    "        unknown = v if unknown is None else union(unknown, v)"]
        out.append("    return assessment(tuple(o), refused, unknown, JUDGMENTS)")
        return "\n".join(out)

    def module(self) -> dict[str, object]:
        """What the template needs: constants, the memo's slots, and every function."""
        functions = [self.definition(d) for d in self.protocol.definitions]
        for mode in ("assess", "decide"):
            def visit(c: ir.Criterion, static: bool, mode: str = mode) -> None:
                functions.append(self.criterion(c, mode, static))
                for child in c.children():
                    visit(child, static and c.applies is None)

            for top in self.protocol.inclusion + self.protocol.exclusion:
                visit(top, True)
            functions.append(self.top(mode))
        slots = tuple(sorted(py_name(d.name) for d in self.protocol.definitions))
        return {
            "constants": [(name, code) for code, name in self.constants.items()],
            "slots": slots,
            "slots_text": "(" + ", ".join(f'"{s}"' for s in slots) + ("," if len(slots) == 1 else "") + ")",
            "functions": [source for _, source in self.loops.values()] + functions,
        }


def _in_info_order(protocol: ir.Protocol) -> list[ir.Criterion]:
    """Criteria in the order of the module's CRITERIA: each followed by its sub-criteria."""
    out: list[ir.Criterion] = []
    for top in protocol.inclusion + protocol.exclusion:
        out.extend(top.walk())
    return out
