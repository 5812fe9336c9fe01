"""The Python backend: a checked protocol becomes a standard-library-only evaluator module.

Every value taken from the author (titles, labels, notes, names, literals) enters the module
through `repr()` or as a validated identifier, never as raw text; comments quote the `.crit`
source with non-printable characters escaped, so no input can inject code.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import assert_never

from crit import ir, templating
from crit.reasons import (
    is_literal,
    is_titer,
    lasted_text,
    members_text,
    num_text,
    overlaps_text,
    range_text,
    text_of,
    unit_of,
    window_text,
)
from crit.text import decimal_text, split_lines

_RUNTIME = Path(__file__).resolve().parents[1] / "runtime.py"
_WIDTH = 100


# ---- names in generated Python -----------------------------------------------------------------

# Python's keywords and soft keywords on every supported version (3.11 to 3.13), written out:
# `keyword.issoftkeyword` differs between versions, and generated code must not.
PYTHON_RESERVED = frozenset({
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class",
    "continue", "def", "del", "elif", "else", "except", "finally", "for", "from", "global",
    "if", "import", "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return",
    "try", "while", "with", "yield",
    "case", "match", "type", "_",
})


def py_name(name: str) -> str:
    """A crit name as a Python identifier, the same on every Python version, one to one.

    A name that is a Python keyword or soft keyword, possibly followed by underscores, gets
    one more underscore: `class` → `class_`, `class_` → `class__`, `type` → `type_`; every other
    name is itself. No two crit names give the same identifier (a name that ends in `_` and
    is mangled keeps its underscores, so it cannot meet the mangled keyword)."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        raise ValueError(f"not a crit name: {name!r}")
    return name + "_" if name.rstrip("_") in PYTHON_RESERVED else name


def runtime_block() -> str:
    """The runtime's source between its markers: what every evaluator embeds verbatim."""
    text = _RUNTIME.read_text(encoding="utf-8")
    start = text.index("# --- begin runtime ---")
    end = text.index("# --- end runtime ---") + len("# --- end runtime ---")
    return text[start:end]


def inert(text: str) -> str:
    """Text safe inside a `#` comment: one line, every non-printable character escaped."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


# ---- a tiny code layout: calls that break one argument per line when too long ----------


@dataclass(frozen=True)
class Call:
    """`func(args)`, or the tuple `(args)` when `func` is empty; each argument may carry
    comment lines, shown when the call is broken one argument per line."""

    func: str
    args: tuple[Code, ...]
    comments: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Kw:
    """A keyword argument `name=value`."""

    name: str
    value: Code


Code = str | Call | Kw


def call(func: str, *args: Code, **keywords: Code) -> Call:
    """A runtime call: its first argument positional, the rest by keyword when it has more
    than two, so that a reader sees what each literal means."""
    named = tuple(Kw(k, v) for k, v in keywords.items())
    if len(args) + len(named) > 2:
        return Call(func, (args[0], *(Kw(n, a) for n, a in zip(_POSITIONS[func][1:], args[1:], strict=False)),
                           *named))
    return Call(func, (*args, *named))


_POSITIONS = {
    "compare": ("left", "op", "right", "path", "right_path"),
    "compare_uln": ("lab", "op", "multiple", "path"),
    "between": ("value", "low", "high", "path", "low_path", "high_path"),
    "member": ("value", "kind", "members", "path"),
    "has": ("value", "kind", "members", "path"),
    "window": ("value", "kind", "amount", "unit", "direction", "anchor", "path", "anchor_path"),
    "any_item": ("items", "path", "test", "p", "m"),
    "all_item": ("items", "path", "test", "p", "m"),
    "count_items": ("items", "op", "number", "path", "test", "p", "m"),
    "overlaps": ("period", "amount", "unit", "direction", "anchor", "path", "anchor_path"),
    "ongoing_at": ("period", "anchor", "path", "anchor_path"),
    "lasted": ("period", "kind", "amount", "unit", "anchor", "path", "anchor_path"),
    "count_different": ("items", "op", "number", "path", "key", "members", "test", "p", "m"),
    "fresh": ("value", "amount", "unit", "direction", "anchor"),
}


def flat(code: Code) -> str:
    if isinstance(code, str):
        return code
    if isinstance(code, Kw):
        return f"{code.name}={flat(code.value)}"
    args = [flat(a) for a in code.args]
    return f"{code.func}({', '.join(args)}{',' if len(args) == 1 and not code.func else ''})"


def layout(code: Code, indent: int, used: int = 0) -> str:
    """Source for `code` in a statement indented by `indent`, whose first line already has
    `used` characters before it. Too-long calls put one argument per line, black-style."""
    one = flat(code)
    commented = isinstance(code, Call) and any(code.comments)
    if max(indent, used) + len(one) <= _WIDTH and not commented:
        return one
    if isinstance(code, str):
        return code
    if isinstance(code, Kw):
        return f"{code.name}=" + layout(code.value, indent, max(indent, used) + len(code.name) + 1)
    if code.func and len(code.args) == 1 and isinstance(code.args[0], Call) and not code.args[0].func:
        return f"{code.func}({layout(code.args[0], indent, max(indent, used) + len(code.func) + 1)})"  # `f((…))`
    last = code.args[-1] if code.args else None
    simple = all(isinstance(a, str) and not a.startswith("(") for a in code.args[:-1])
    if len(code.args) > 1 and isinstance(last, Call) and not any(code.comments) and simple:
        head = f"{code.func}(" + ", ".join(flat(a) for a in code.args[:-1]) + ", "
        if max(indent, used) + len(head) <= _WIDTH - 4:  # `f(a, b, (…))`: the last argument broken
            return head + layout(last, indent, max(indent, used) + len(head)) + ")"
    pad = " " * (indent + 4)
    lines = []
    comments = code.comments or ((),) * len(code.args)
    for arg, comment in zip(code.args, comments, strict=True):
        lines += [f"{pad}# {line}" for line in comment]
        lines.append(f"{pad}{layout(arg, indent + 4, indent + 4)},")
    return f"{code.func}(\n" + "\n".join(lines) + "\n" + " " * indent + ")"


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


def _members(key: ir.Field) -> int:
    """How many values an enum key can take (0: no bound), for `count(different …)`."""
    return len(key.type.enum.members) if isinstance(key.type, ir.EnumOf) else 0


def crit_func(criterion_id: str) -> str:
    return "criterion_" + criterion_id.replace(".", "_")


# ---- the module's parts -------------------------------------------------------------------


class _Writer:
    """Writes one protocol's functions and its description for the explainer. Every
    condition becomes one runtime call on the patient's values, whose value is the one
    three-valued logic's (see the runtime); the description says the same thing as data."""

    def __init__(self, protocol: ir.Protocol, lines: tuple[str, ...]) -> None:
        self.protocol = protocol
        self.lines = lines
        self.constants: dict[str, str] = {}  # code -> module-level name
        self.wheres: dict[ir.Expr, str] = {}  # quantifier condition -> its function's name
        self.functions: list[str] = []
        self.index = {c.id: i for i, c in enumerate(_in_info_order(protocol))}

    # ---- quoting the source ----
    def quote(self, span_line: int, end_line: int | None = None) -> tuple[str, ...]:
        """The `.crit` lines from `span_line` to `end_line`, each as `line N: text`."""
        out = []
        for number in range(span_line, max(span_line, end_line or span_line) + 1):
            if 1 <= number <= len(self.lines):
                text = self.lines[number - 1].strip()
                if text:
                    out.append(f"line {number}: {inert(text)}")
            else:
                out.append(f"line {number}")
        return tuple(out)

    def quote_span(self, node: ir.Line | ir.When | ir.Expr | ir.Note | ir.ValueDefinition) -> tuple[str, ...]:
        """All the lines of a node's span (one ending at the start of a line stops before it)."""
        return self.quote(node.span.line, self.last_line(node))

    def last_line(self, node: ir.Line | ir.When | ir.Expr | ir.Note | ir.ValueDefinition) -> int:
        """The last line of a node's span: a span that ends in the next line's indentation
        (a statement takes its newline) stops before that line."""
        span = node.span
        end = span.end_line
        if end > span.line and (end > len(self.lines) or not self.lines[end - 1][: span.end_column - 1].strip()):
            end -= 1
        return end

    # ---- values ----
    def constant(self, code: str) -> str:
        name = self.constants.get(code)
        if name is None:
            name = self.constants[code] = f"_K{len(self.constants) + 1}"
        return name

    def literal(self, c: ir.Const) -> str:
        code = _const(c)
        return self.constant(code) if code.startswith(("Decimal(", "Fraction(", "datetime.")) else code

    def value(self, v: ir.Value) -> tuple[str, str]:
        """(code for the value, code for its path — '' for a literal)."""
        if isinstance(v, ir.Const):
            return self.literal(v), "''"
        attr = py_name(v.field.name)
        if v.scope == "item":
            return f"it.{attr}", f"at + {'.' + v.field.name!r}"
        m = v.field.measured
        if m is not None:  # a dated result: its value only if measured in its window
            anchor = f"p.{py_name(m.anchor)}"
            return (flat(call("fresh", f"p.{attr}", repr(m.amount), repr(m.unit), repr(m.direction), anchor)),
                    flat(Call("fresh_path", (f"p.{attr}", anchor, repr(v.field.name), repr(m.anchor)))))
        return f"p.{attr}", repr(v.field.name)

    def ref(self, v: ir.Value) -> str:
        """The value in the description: ("p"|"it", attr, name), ("pd", attr, name, amount, unit,
        direction, anchor attr) for a dated result, or ("k", literal)."""
        if isinstance(v, ir.Const):
            return f"('k', {self.literal(v)})"
        m = v.field.measured
        if m is not None and v.scope == "patient":
            return (f"('pd', {py_name(v.field.name)!r}, {v.field.name!r}, {m.amount!r}, {m.unit!r}, "
                    f"{m.direction!r}, {py_name(m.anchor)!r}, {m.anchor!r})")
        return f"({'it' if v.scope == 'item' else 'p'!r}, {py_name(v.field.name)!r}, {v.field.name!r})"

    def members(self, e: ir.Member) -> str:
        return self.constant("frozenset({" + ", ".join(repr(m) for m in sorted(set(e.members))) + "})")

    # ---- conditions: code for a Tri, and the same as data ----
    def condition(self, e: ir.Expr) -> Code:
        if isinstance(e, ir.Compare):
            left, path = self.value(e.left)
            right, right_path = self.value(e.right)
            extra = {"right_path": right_path} if right_path != "''" else {}
            return call("compare", left, repr(e.op), right, path, **extra)
        if isinstance(e, ir.UlnCompare):
            lab, path = self.value(e.lab)
            return call("compare_uln", lab, repr(e.op), self.constant(_decimal(e.multiple)), path)
        if isinstance(e, ir.Between):
            value, path = self.value(e.value)
            low, low_path = self.value(e.low)
            high, high_path = self.value(e.high)
            extra = {k: v for k, v in (("low_path", low_path), ("high_path", high_path)) if v != "''"}
            return call("between", value, low, high, path, **extra)
        if isinstance(e, ir.Member):
            value, path = self.value(e.value)
            func = "member" if e.kind.startswith("is") else "has"
            return call(func, value, repr(e.kind), self.members(e), path)
        if isinstance(e, ir.Window):
            value, path = self.value(e.value)
            anchor, anchor_path = self.value(e.anchor)
            extra = {"anchor_path": anchor_path} if anchor_path != "''" else {}
            return call("window", value, repr(e.kind), repr(e.amount), repr(e.unit), repr(e.direction), anchor,
                        path, **extra)
        if isinstance(e, ir.NoneRecorded):
            return call("none_recorded", *self.value(e.value))
        if isinstance(e, ir.Overlaps | ir.OngoingAt | ir.Lasted):
            period, path = self.value(e.value)
            anchor, anchor_path = self.value(e.anchor)
            extra = {"anchor_path": anchor_path} if anchor_path != "''" else {}
            if isinstance(e, ir.Overlaps):
                return call("overlaps", period, repr(e.amount), repr(e.unit), repr(e.direction), anchor, path,
                            **extra)
            if isinstance(e, ir.OngoingAt):
                return call("ongoing_at", period, anchor, path, **extra)
            return call("lasted", period, repr(e.kind), repr(e.amount), repr(e.unit), anchor, path, **extra)
        if isinstance(e, ir.DistinctCount):
            items, path = self.value(e.items)
            test = {} if e.condition is None else {"test": self.where(e), "p": "p", "m": "m"}
            return call("count_different", items, repr(e.op), repr(e.number), path, repr(py_name(e.key.name)),
                        repr(_members(e.key)), **test)
        if isinstance(e, ir.Truth):
            return repr(e.value)
        if isinstance(e, ir.DefinitionRef):
            return f"define_{py_name(e.name)}(p, m)"
        if isinstance(e, ir.FieldRef):
            value, path = self.value(e)
            return Call("truth", (value, path))
        if isinstance(e, ir.Not):
            return Call("not3", (self.condition(e.operand),))
        if isinstance(e, ir.And | ir.Or):
            parts = tuple(self.condition(x) for x in e.operands)
            return Call("and3" if isinstance(e, ir.And) else "or3", (Call("", parts),))
        if isinstance(e, ir.AtLeast):
            return Call("count3", (repr(e.count), Call("", tuple(self.condition(x) for x in e.operands))))
        if isinstance(e, ir.Quantified | ir.CountCompare):
            items, path = self.value(e.items)
            test = {} if e.condition is None else {"test": self.where(e), "p": "p", "m": "m"}
            if isinstance(e, ir.CountCompare):
                return call("count_items", items, repr(e.op), repr(e.number), path, **test)
            return call(f"{e.kind}_item", items, path, **test)
        if isinstance(e, ir.NumCompare):
            return Call("compare_num", (self.num(e.left), repr(e.op), self.num(e.right)))
        assert_never(e)

    # ---- derived values: code for a value, and the same as data ----
    def num(self, v: ir.Num) -> Code:
        if isinstance(v, ir.Const):
            return self.literal(v)
        if isinstance(v, ir.FieldRef):
            value, path = self.value(v)
            return Call("num", (value, path))
        if isinstance(v, ir.Arith):
            return Call("arith", (repr(v.op), self.num(v.left), self.num(v.right)))
        if isinstance(v, ir.Convert):
            return Call("convert", (self.num(v.value), self.constant(_decimal(v.factor))))
        if isinstance(v, ir.UlnOf):
            lab, path = self.value(v.lab)
            return Call("uln_of", (lab, self.constant(_decimal(v.multiple)), path))
        if isinstance(v, ir.ValueRef):
            return f"value_{py_name(v.name)}(p, m)"
        if isinstance(v, ir.Choice):
            branches = tuple(Call("", (self.condition(c), self.num(x))) for c, x in v.branches)
            return Call("choose", (Call("", branches), self.num(v.otherwise)))
        if isinstance(v, ir.Equivalent):
            agent, path = self.value(v.agent)
            return Call("equivalent", (self.num(v.dose), agent, self.factors(v.table), path))
        assert_never(v)

    def factors(self, table: ir.EquivalenceTable) -> str:
        """An equivalence table's factors, one module constant per table."""
        return self.constant("{" + ", ".join(f"{m!r}: {_decimal(f)}" for m, f in table.factors) + "}")

    def describe_num(self, v: ir.Num) -> Code:
        if isinstance(v, ir.Const | ir.FieldRef):
            return self.ref(v)
        if isinstance(v, ir.Arith):
            return Call("", ("'arith'", repr(v.op), self.describe_num(v.left), self.describe_num(v.right)))
        if isinstance(v, ir.Convert):
            return Call("", ("'convert'", self.describe_num(v.value), self.constant(_decimal(v.factor))))
        if isinstance(v, ir.UlnOf):
            return Call("", ("'uln_of'", self.ref(v.lab), self.constant(_decimal(v.multiple))))
        if isinstance(v, ir.ValueRef):
            return Call("", ("'value'", repr(v.name), self.describe_num(v.value)))
        if isinstance(v, ir.Choice):
            branches = tuple(Call("", (self.describe(c), self.describe_num(x))) for c, x in v.branches)
            return Call("", ("'choose'", Call("", branches), self.describe_num(v.otherwise)))
        if isinstance(v, ir.Equivalent):
            return Call("", ("'equivalent'", self.describe_num(v.dose), self.ref(v.agent), self.factors(v.table)))
        assert_never(v)

    def value_function(self, d: ir.ValueDefinition) -> None:
        """A named derived value becomes a function of the patient."""
        name = py_name(d.name)
        self.functions.append("\n".join([
            f"def value_{name}(p: Patient, m: _Memo) -> Num:",
            *(f"    # {line}" for line in self.quote(d.span.line, self.last_line(d))),
            f"    return {layout(self.num(d.value), 4, 11)}",
        ]))

    def describe(self, e: ir.Expr) -> Code:
        if isinstance(e, ir.Compare):
            return Call("", ("'compare'", self.ref(e.left), repr(e.op), self.ref(e.right), repr(unit_of(e.left)),
                             repr(text_of(e.right)), repr(is_titer(e.left))))
        if isinstance(e, ir.UlnCompare):
            return Call("", ("'uln'", self.ref(e.lab), repr(e.op), self.constant(_decimal(e.multiple)),
                             repr(unit_of(e.lab)), repr(str(e.multiple))))
        if isinstance(e, ir.Between):
            return Call("", ("'between'", self.ref(e.value), self.ref(e.low), self.ref(e.high),
                             repr(unit_of(e.value)), repr(range_text(e)), repr(is_titer(e.value))))
        if isinstance(e, ir.Member):
            tag = "'member'" if e.kind.startswith("is") else "'has'"
            return Call("", (tag, self.ref(e.value), repr(e.kind), self.members(e),
                             repr(members_text(e.kind, e.members))))
        if isinstance(e, ir.Window):
            return Call("", ("'window'", self.ref(e.value), repr(e.kind), repr(e.amount), repr(e.unit),
                             repr(e.direction), self.ref(e.anchor), repr(window_text(e))))
        if isinstance(e, ir.NoneRecorded):
            return Call("", ("'none'", self.ref(e.value)))
        if isinstance(e, ir.Overlaps):
            return Call("", ("'overlaps'", self.ref(e.value), repr(e.amount), repr(e.unit), repr(e.direction),
                             self.ref(e.anchor), repr(overlaps_text(e))))
        if isinstance(e, ir.OngoingAt):
            return Call("", ("'ongoing'", self.ref(e.value), self.ref(e.anchor)))
        if isinstance(e, ir.Lasted):
            return Call("", ("'lasted'", self.ref(e.value), repr(e.kind), repr(e.amount), repr(e.unit),
                             self.ref(e.anchor), repr(lasted_text(e))))
        if isinstance(e, ir.DistinctCount):
            test = "None" if e.condition is None else self.describe(e.condition)
            return Call("", ("'different'", self.ref(e.items), repr(e.op), repr(e.number),
                             repr(py_name(e.key.name)), repr(_members(e.key)), repr(e.key.name), test))
        if isinstance(e, ir.Truth):
            return f"('const', {e.value!r})"
        if isinstance(e, ir.DefinitionRef):
            return f"('define', {py_name(e.name)!r})"
        if isinstance(e, ir.FieldRef):
            return f"('truth', {self.ref(e)}, {e.field.type.kind == 'judgment'!r})"
        if isinstance(e, ir.Not):
            return Call("", ("'not'", self.describe(e.operand)))
        if isinstance(e, ir.And | ir.Or):
            tag = "'and'" if isinstance(e, ir.And) else "'or'"
            return Call("", (tag, Call("", tuple(self.describe(x) for x in e.operands))))
        if isinstance(e, ir.AtLeast):
            return Call("", ("'at_least'", repr(e.count), Call("", tuple(self.describe(x) for x in e.operands))))
        if isinstance(e, ir.Quantified | ir.CountCompare):
            test = "None" if e.condition is None else self.describe(e.condition)
            if isinstance(e, ir.CountCompare):
                return Call("", ("'count'", self.ref(e.items), repr(e.op), repr(e.number), test))
            return Call("", (repr(e.kind), self.ref(e.items), test))
        if isinstance(e, ir.NumCompare):
            return Call("", ("'num'", self.describe_num(e.left), repr(e.op), self.describe_num(e.right),
                             repr(e.unit), repr(num_text(e.left)), repr(num_text(e.right)),
                             repr(is_literal(e.right))))
        assert_never(e)

    def where(self, e: ir.Quantified | ir.CountCompare | ir.DistinctCount) -> str:
        """A quantifier's condition on one list item becomes a function of its own."""
        assert e.condition is not None
        if e in self.wheres:
            return self.wheres[e]
        # The name is taken before the condition is written: a quantifier nested in it gets its own.
        name = self.wheres[e] = f"where_{len(self.wheres) + 1}"
        body = layout(self.condition(e.condition), 4, 11)
        item = f"{_record_class(e.record.name)}"
        self.functions.append("\n".join([
            f"def {name}(it: {item}, at: str, p: Patient, m: _Memo) -> Tri:",
            *(f"    # {line}" for line in self.quote_span(e)),
            f"    return {body}",
        ]))
        return name

    # ---- lines, definitions and criteria ----
    def line(self, item: ir.Line | ir.When) -> Code:
        if isinstance(item, ir.Line):
            return self.condition(item.expr)
        body = tuple(self.line(b) for b in item.body)
        return Call("when3", (self.condition(item.condition),
                              body[0] if len(body) == 1 else Call("all3", (Call("", body),))))

    def describe_line(self, item: ir.Line | ir.When) -> Code:
        if isinstance(item, ir.Line):
            return self.describe(item.expr)
        return Call("", ("'when'", self.describe(item.condition),
                         Call("", tuple(self.describe_line(b) for b in item.body))))

    def definition(self, d: ir.Definition) -> tuple[str, Code]:
        name = py_name(d.name)
        lines = d.lines()
        code: Code = self.condition(lines[0].expr)
        if len(lines) > 1:
            parts = tuple(self.condition(x.expr) for x in lines)
            code = Call("and3", (Call("", parts, tuple(self.quote_span(x) for x in lines)),))
        header_end = self.last_line(lines[0]) if len(lines) == 1 else None  # the condition may follow on
        notes = [f"    # {line}" for item in d.body if isinstance(item, ir.Note) for line in self.quote_span(item)]
        self.functions.append("\n".join([
            f"def define_{name}(p: Patient, m: _Memo) -> Tri:",
            *(f"    # {line}" for line in self.quote(d.span.line, header_end)),
            *notes,
            f"    v = m.{name}",
            "    if v is UNSET:",
            f"        v = m.{name} = {layout(code, 8, 19 + len(name))}",
            "    return v",
        ]))
        described = Call("", tuple(self.describe(x.expr) for x in lines))
        return name, Call("", (repr(name), described))

    def criterion(self, c: ir.Criterion, gated: bool) -> Code:
        """The criterion's function (and its sub-criteria's); returns its description.
        `gated`: some criterion above it has a `when` (its gate `g` may not be true)."""
        func = crit_func(c.id)
        slot = len(self.functions)  # the criterion before its sub-criteria, as in the protocol
        self.functions.append("")
        out = [f"def {func}(p: Patient, m: _Memo, o: list[TriNA], g: Tri = True) -> TriNA:",
               *(f"    # {line}" for line in self.quote(c.span.line))]
        out += [f"    # {line}" for item in c.items if isinstance(item, ir.Note) for line in self.quote_span(item)]
        if c.applies is not None and gated:  # its own gate `c`, and every gate above it `g`
            out += [f"    c = {layout(self.condition(c.applies), 4, 8)}", "    if c is False:", "        return NA",
                    "    g = both(g, c)"]
        elif c.applies is not None:
            out += [f"    g = {layout(self.condition(c.applies), 4, 8)}", "    if g is False:", "        return NA"]
        parts: list[Code] = []
        comments: list[tuple[str, ...]] = []
        described: list[Code] = []
        for item in c.items:
            if isinstance(item, ir.Note):
                continue
            if isinstance(item, ir.Criterion):
                parts.append(f"{crit_func(item.id)}(p, m, o, g)")
                comments.append((f"{item.id} {inert(item.title)}",))
                described.append(self.criterion(item, gated or c.applies is not None))
            else:
                parts.append(self.line(item))
                comments.append(self.quote_span(item))
                described.append(self.describe_line(item))
        combined: Code
        if len(parts) == 1 and c.combine != "at_least":
            out += [f"    # {line}" for line in comments[0]]
            combined = parts[0]
        else:
            listed = Call("", tuple(parts), tuple(comments))
            if c.combine == "at_least":
                combined = Call("at_least3", (repr(c.at_least), listed))
            else:
                combined = Call("any3" if c.combine == "any" else "all3", (listed,))
        out.append(f"    v: TriNA = {layout(combined, 4, 15)}")
        slot_index = self.index[c.id]
        if gated:  # its outcome is under every gate; its parent sees it under its own only
            out += [f"    o[{slot_index}] = when3(g, v)",
                    "    return v" if c.applies is None else "    return when3(c, v)"]
        else:
            if c.applies is not None:
                out.append("    v = when3(g, v)")
            out += [f"    o[{slot_index}] = v", "    return v"]
        self.functions[slot] = "\n".join(out)
        applies = "None" if c.applies is None else self.describe(c.applies)
        return Call("", ("'criterion'", repr(c.id), repr(self.index[c.id]), applies, repr(c.combine),
                         repr(c.at_least), Call("", tuple(described))))


def _in_info_order(protocol: ir.Protocol) -> list[ir.Criterion]:
    """Criteria in the order of the module's CRITERIA: each followed by its sub-criteria."""
    out: list[ir.Criterion] = []
    for top in protocol.inclusion + protocol.exclusion:
        out.extend(top.walk())
    return out


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


_ANNOTATIONS = {
    "bool": "bool", "judgment": "bool", "integer": "int", "decimal": "Decimal",
    "quantity": "Exact", "text": "str", "date": "datetime.date", "titer": "int",
    "lab": "Lab", "enum": "str", "set": "frozenset[str]", "interval": "Period",
}


def _record_class(name: str) -> str:
    return f"{name}Record"


def _field_view(field: ir.Field, in_record: bool, units: dict[str, str],
                constant: Callable[[str], str] | None = None) -> _FieldView:
    """How `_read` gets a field: the common valid case inline, anything else through the
    runtime's reader for its type, which reports the problem (`get` semantics: absent is
    missing, null is none recorded in an optional field, missing otherwise)."""
    t = field.type
    path = f"at + {'.' + field.name!r}" if in_record else repr(field.name)
    match t:
        case ir.ListOf():
            annotation = f"list[{_record_class(t.record)}]"
            value = f"read_list(v, {path}, pr, _read_{t.record})"
        case ir.Measure():
            annotation = _ANNOTATIONS[t.kind]
            factors = "{" + ", ".join(f"{u!r}: {_decimal(f)}" for u, f in t.record_units().items()) + "}"
            name = units.setdefault(factors, f"_UNITS_{len(units) + 1}")
            value = f"read_{t.kind}_fast(v, {path}, pr, {t.unit.text!r}, {name})"
        case ir.EnumOf():
            annotation = _ANNOTATIONS[t.kind]
            members = f"_MEMBERS_{t.enum.name}"
            value = f"v if type(v) is str and v in {members} else read_enum(v, {path}, pr, _ENUM_{t.enum.name})"
        case ir.SetOf():
            annotation = _ANNOTATIONS[t.kind]
            value = f"read_set_fast(v, {path}, pr, _ENUM_{t.enum.name}, _MEMBERS_{t.enum.name})"
        case ir.Scalar():
            annotation = _ANNOTATIONS[t.kind]
            value = _FAST_READ[t.kind].format(path=path)
        case _:
            assert_never(t)
    if field.measured is not None:  # a dated result: `{"value": …, "measured": date}`
        annotation = "Dated"
        value = f"read_dated(v, {path}, pr, {_inner_reader(t, units)}, {isinstance(t, ir.Measure)!r})"
    if field.plausible is not None and constant is not None:
        unit = t.unit.text if isinstance(t, ir.Measure) else ""
        low, high = constant(_decimal(field.plausible.low)), constant(_decimal(field.plausible.high))
        value = f"plausible({value}, {low}, {high}, {field.plausible.text!r}, {unit!r}, {path}, pr)"
    absent = f"(NONE if {field.name!r} in raw else None)" if field.optional else "None"
    read = f"{absent} if (v := raw.get({field.name!r})) is None else {value}"
    return _FieldView(py_name(field.name), field.name, f"{annotation} | Absent | None", read)


def _inner_reader(t: ir.Type, units: dict[str, str]) -> str:
    """The reader of a dated result's value, as a function of (raw, path, problems)."""
    match t:
        case ir.Measure():
            factors = "{" + ", ".join(f"{u.text!r}: {_decimal(f)}" for u, f in t.also) + "}"
            name = units.setdefault(factors, f"_UNITS_{len(units) + 1}")
            return f"lambda r, a, q: read_{t.kind}_fast(r, a, q, {t.unit.text!r}, {name})"
        case ir.EnumOf():
            return f"lambda r, a, q: read_enum(r, a, q, _ENUM_{t.enum.name})"
        case ir.SetOf():
            return f"lambda r, a, q: read_set_fast(r, a, q, _ENUM_{t.enum.name}, _MEMBERS_{t.enum.name})"
        case ir.Scalar(kind="bool" | "integer" | "decimal" | "text" | "titer"):
            return f"read_{t.kind}"
        case ir.Scalar() | ir.ListOf():  # the checker dates none of these (error E130)
            raise AssertionError(f"internal error: a dated {t.describe()}")
        case _:
            assert_never(t)


_FAST_READ = {
    "bool": "v if v is True or v is False else read_bool(v, {path}, pr)",
    "judgment": "v if v is True or v is False else read_bool(v, {path}, pr)",
    "integer": "v if type(v) is int and -_BIG < v < _BIG else read_integer(v, {path}, pr)",
    "decimal": "read_decimal_fast(v, {path}, pr)",
    "text": "v if type(v) is str else read_text(v, {path}, pr)",
    "date": "read_date_fast(v, {path}, pr)",
    "titer": "read_titer_fast(v, {path}, pr)",
    "interval": "read_interval(v, {path}, pr)",
}


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


def emit_python(protocol: ir.Protocol, source_text: str = "") -> str:
    """The evaluator module for `protocol`; `source_text` is quoted in comments when given."""
    lines = tuple(split_lines(source_text))
    writer = _Writer(protocol, lines)
    defined = [writer.definition(d) for d in protocol.definitions]
    for value in protocol.values:
        writer.value_function(value)
    tops = protocol.inclusion + protocol.exclusion
    described = [writer.criterion(c, False) for c in tops]
    units: dict[str, str] = {}
    records = [
        _RecordView(r.name, _record_class(r.name), f"_read_{r.name}", inert(r.label or r.name),
                    tuple(_field_view(f, True, units, writer.constant) for f in r.fields))
        for r in protocol.records
    ]
    fields = [_field_view(f, False, units, writer.constant) for f in protocol.fields]
    judgments = sorted(f.name for f in protocol.fields if f.type.kind == "judgment")
    metadata = {
        "id": protocol.id, "title": protocol.title, "version": protocol.version,
        "source": protocol.source, "sha256": protocol.source_hash,
    }
    slots = tuple(sorted(name for name, _ in defined))
    template = templating.environment().get_template("evaluator.py.j2")
    return template.render(
        protocol=protocol,
        source=inert(protocol.source),
        runtime=runtime_block(),
        enums=[(e.name, tuple(e.member_names())) for e in protocol.enums],
        records=records,
        fields=fields,
        units=[(name, factors) for factors, name in units.items()],
        constants=[(name, code) for code, name in writer.constants.items()],
        slots=slots,
        slots_text="(" + ", ".join(f'"{s}"' for s in slots) + ("," if len(slots) == 1 else "") + ")",
        functions=writer.functions,
        top=[(crit_func(c.id), c.section == "exclusion", c.section) for c in tops],
        described_criteria=[layout(d, 4, 4) for d in described],
        described_definitions=[layout(d, 4, 4) for _, d in defined],
        criteria_info=_criteria_info(protocol),
        judgments=judgments,
        metadata=metadata,
        repr=repr,
    )
