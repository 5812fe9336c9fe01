"""Parse `.crit` source into `crit.ast.Module`; turn Lark's errors into diagnostics."""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Literal

from lark import Token, Tree
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
)
from lark.tree import Meta
from lark.visitors import Interpreter, v_args

from crit import ast
from crit.check.names import lookalike
from crit.diagnostics import Collector, CritError, Diagnostic
from crit.frozen import frozen
from crit.syntax.grammar import IndentationError_, parser
from crit.text import split_lines

# What each terminal is called when we tell an author what we expected.
_TOKEN_NAMES = {
    "_NL": "the end of the line",
    "_INDENT": "an indented block",
    "_DEDENT": "the end of the block",
    "$END": "the end of the file",
    "NAME": "a name",
    "STRING": 'a quoted "text"',
    "NUMBER": "a number",
    "CRIT_ID": "a criterion id such as I1 or E2.1",
    "COMP_OP": "a comparison (>=, <=, >, <, =, !=)",
    "TITER": "a titer such as 1:80",
    "DATE": "a date such as 2025-06-26",
    "COLON": "':'",
    "COMMA": "','",
    "LPAR": "'('",
    "RPAR": "')'",
    "OPTIONAL": "'?'",
    "UNIT_OP": "'/'",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "TIMES": "'×'",
    "DIVIDE": "'÷'",
    "PERCENT": "'%'",
    "CIRCUMFLEX": "'^'",
    "SUPERSCRIPT": "a power such as ² or ³",
}

# Every backend must be able to evaluate what the checker accepts: Python's parser stops at 200
# nested parentheses and the generated code opens about two per level, so one line's expression
# (with the `when` blocks around it) nests at most this deep, and so do sub-criteria.
MAX_NESTING = 32
# No criterion needs a longer number; Python refuses to print integers past 4,300 digits.
MAX_DIGITS = 30

_TIME_UNITS = {
    "day": "days", "days": "days", "week": "weeks", "weeks": "weeks",
    "month": "months", "months": "months", "year": "years", "years": "years",
}


def _describe(terminal: str) -> str:
    if terminal in _TOKEN_NAMES:
        return _TOKEN_NAMES[terminal]
    if terminal.startswith("__ANON") or not terminal.isupper():
        return terminal
    return f"'{terminal.lower()}'"


# Arithmetic may follow almost any value; named in a hint only when nothing else is expected.
_ARITHMETIC = frozenset(("PLUS", "MINUS", "TIMES", "DIVIDE"))


def _expected_hint(expected: set[str]) -> str | None:
    if expected - _ARITHMETIC:
        expected = expected - _ARITHMETIC
    names = sorted({_describe(t) for t in expected if not t.startswith("__")})
    if not names:
        return None
    if len(names) > 6:
        names = [*names[:6], "…"]
    return "expected " + (names[0] if len(names) == 1 else "one of: " + ", ".join(names))


def _token_text(token: Token) -> str:
    if token.type == "_NL":
        return "end of line"
    if token.type == "_INDENT":
        return "indented block"
    if token.type == "_DEDENT":
        return "end of block"
    if token.type == "$END":
        return "end of file"
    return repr(str(token.value))[1:-1].join("''")


@functools.lru_cache(maxsize=16)
def parse(source: str, file: str) -> ast.Module:
    """Parse one file. Raises `CritError` with positioned diagnostics on any syntax error.

    The tree is immutable, so a text is parsed once per process: `crit check` reads a schema
    for its protocol and again for the FHIR mapping beside it. (Errors are raised afresh.)"""
    diagnostics = Collector()
    # The lexer breaks lines at \n only; \r\n and a lone \r become \n, as `split_lines` counts.
    text = source.replace("\r\n", "\n").replace("\r", "\n")
    text = text if text.endswith("\n") else text + "\n"
    try:
        tree = parser().parse(text)
    except IndentationError_ as err:
        span = ast.Span(file, err.line, err.column, err.line, err.column + 1)
        diagnostics.error("E001", span, err.message, err.hint)
        raise CritError(diagnostics.items) from None
    except UnexpectedInput as err:
        diagnostics.items.append(_syntax_diagnostic(err, file, text))
        raise CritError(diagnostics.items) from None
    module = _Builder(file, text, diagnostics).visit(tree)
    assert isinstance(module, ast.Module)
    diagnostics.raise_if_errors()
    return module


def _syntax_diagnostic(err: UnexpectedInput, file: str, text: str) -> Diagnostic:
    line = max(getattr(err, "line", 1) or 1, 1)
    column = max(getattr(err, "column", 1) or 1, 1)
    if isinstance(err, UnexpectedCharacters):
        pos = err.pos_in_stream or 0
        char = text[pos] if pos < len(text) else ""
        span = ast.Span(file, line, column, line, column + 1)
        if char == '"':
            special = _open_text(text, pos, file, line, column)
            if special is not None:
                return special
        if ord(char or "a") > 127 and char.isalnum():
            return _non_ascii_letter(text, pos, span)
        hint = _char_hint(char) or _expected_hint(set(err.allowed or ()))
        return Diagnostic(
            code="E002", severity="error", span=span,
            message=f"unexpected character {char!r}", hint=hint,
        )
    if isinstance(err, UnexpectedToken):
        dash = _range_with_dash(err, file, text)
        if dash is not None:
            return dash
        token = err.token
        if token.type in ("_DEDENT", "$END") or token.line is None:
            line, column = _end_position(text, err)
        else:
            line, column = token.line, token.column or 1
        width = len(str(token.value)) if token.type not in ("_NL", "_INDENT", "_DEDENT") else 1
        width = max(1, min(width, 80))
        if token.type == "_INDENT":
            message = "unexpected indentation"
            hint = "this line is indented deeper than the line above allows; " + (
                _expected_hint(set(err.expected)) or "remove the extra indentation"
            )
        else:
            message = f"unexpected {_token_text(token)}"
            hint = _expected_hint(set(err.expected))
        span = ast.Span(file, line, column, line, column + width)
        return Diagnostic(code="E003", severity="error", span=span, message=message, hint=hint)
    assert isinstance(err, UnexpectedEOF)
    line, column = _end_position(text, err)
    span = ast.Span(file, line, column, line, column + 1)
    return Diagnostic(
        code="E003", severity="error", span=span, message="unexpected end of file",
        hint=_expected_hint(set(err.expected)),
    )


def _range_with_dash(err: UnexpectedToken, file: str, text: str) -> Diagnostic | None:
    """`age between 18-75` reads as a subtraction that lacks its `and`: point at the dash."""
    if "AND" not in err.expected or err.token.line is None:
        return None
    line_number = err.token.line
    line = split_lines(text)[line_number - 1] if line_number <= len(split_lines(text)) else ""
    at = line.find("between")
    end = (err.token.column or len(line) + 1) - 1
    dash = line.find("-", at, end) if at >= 0 else -1
    if dash < 0:
        return None
    span = ast.Span(file, line_number, dash + 1, line_number, dash + 2)
    return Diagnostic(code="E002", severity="error", span=span, message="unexpected character '-'",
                      hint="ranges are written 'between 10 and 35'")


def _open_text(text: str, pos: int, file: str, line: int, column: int) -> Diagnostic | None:
    """A quote the lexer could not read: text left open (point at the line's end, where the
    closing quote is missing) or an unknown escape (point at it); None if neither."""
    i = pos + 1
    while i < len(text) and text[i] != "\n":
        ch = text[i]
        if ch == '"':
            return None
        if ch == "\\":
            escape = text[i + 1 : i + 2]
            if escape not in ('"', "\\", "n", "t"):
                at = column + (i - pos)
                shown = "\\" + escape if escape not in ("", "\n") else "\\"
                return Diagnostic(
                    code="E002", severity="error", span=ast.Span(file, line, at, line, at + len(shown)),
                    message=f"unknown escape '{shown}' in text",
                    hint='the escapes are \\" \\\\ \\n \\t; write \\\\ for a backslash',
                )
            i += 2
            continue
        i += 1
    end = column + (i - pos)
    return Diagnostic(
        code="E002", severity="error", span=ast.Span(file, line, end, line, end + 1),
        message="this text is not closed",
        hint=f'add the closing " at the end of the text that starts at column {column}',
    )


def _non_ascii_letter(text: str, pos: int, span: ast.Span) -> Diagnostic:
    """A letter outside ASCII in a name: name its code point, and the letter it imitates."""
    start = pos
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
        start -= 1
    end = pos
    while end < len(text) and (text[end].isalnum() or text[end] == "_"):
        end += 1
    word = text[start:end]
    char = text[pos]
    looks = lookalike(char)
    described = _code_point(char)
    if looks is not None:
        plain = "".join(lookalike(c) or c for c in word)
        message = f"'{word}' contains {described}, which looks like '{looks}'"
        hint = f"names are written in plain ASCII letters: retype it as '{plain}'"
    else:
        message = f"'{word}' contains {described}"
        hint = "names are written in ASCII letters, digits and _; put other text in quotes"
    return Diagnostic(code="E002", severity="error", span=span, message=message, hint=hint)


def _code_point(char: str) -> str:
    return f"U+{ord(char):04X} {unicodedata.name(char, 'UNNAMED CHARACTER')}"


def _end_position(text: str, err: UnexpectedInput) -> tuple[int, int]:
    """Point at the last non-blank line: a missing block ends there, not past the end."""
    lines = split_lines(text)
    for number in range(len(lines), 0, -1):
        if lines[number - 1].strip():
            return number, len(lines[number - 1]) + 1
    return 1, 1


def _char_hint(char: str) -> str | None:
    if char == "'":
        return 'text is written in double quotes: "like this"'
    if char == "\t":
        return "use spaces for indentation"
    if char in "“”„‟«»":
        return 'text is written in straight double quotes: "like this"'
    if char in "≥≤":
        return None
    if char == "-":
        return "ranges are written 'between 10 and 35'"
    return None


def _unquote(token: Token) -> str:
    """The text a STRING token holds, its escapes read."""
    body = str(token)[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            out.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\"}[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _label(token: Token | None) -> str | None:
    """An optional `[STRING]`: Lark gives None where the author wrote none."""
    return _unquote(token) if token is not None else None


# ---- from Lark's tree to the AST ------------------------------------------------------------------


class _TooDeep(Exception):
    """Raised from the node past MAX_NESTING up to the line it is in, which reports it once."""

    def __init__(self, span: ast.Span) -> None:
        super().__init__("too deep")
        self.span = span


@frozen
class _Section:
    """An `inclusion` or `exclusion` block, until the module sorts it into place."""

    inclusion: bool
    criteria: tuple[ast.Criterion, ...]


@frozen
class _HeaderItem:
    kind: Literal["version", "note"]
    text: str


Node = Tree[Token]
_Item = ast.Line | ast.When | ast.Note


@functools.cache
def _rule_methods(walker: type) -> tuple[tuple[str, Any], ...]:
    """The methods of a walker that `v_args` wrapped (one per grammar rule it builds), by name."""
    return tuple((name, member) for klass in reversed(walker.__mro__) for name, member in vars(klass).items()
                 if hasattr(member, "visit_wrapper"))


@v_args(inline=True, meta=True)
class _Builder(Interpreter[Token, Any]):
    """Turns Lark's tree into `crit.ast` nodes; the only code that knows the tree's shape.

    Each method is named after the grammar rule it builds and takes that rule's children as
    parameters (`@v_args(inline=True, meta=True)`): a grammar change that adds, drops or moves a
    child fails with a TypeError, never by silently shifting meanings (tests/test_parse_transformer.py
    checks every method against the grammar). The walk is a Lark `Interpreter`, top-down, not a
    bottom-up `Transformer`, because how deep a node stands is part of its meaning: past MAX_NESTING
    levels of expression, `when` and sub-criterion it is a diagnostic, and a line nested deeper is
    never walked, so no input exhausts Python's stack. Each method visits only the children it
    reads (an expression through `_expr`, one level deeper; a unit's factors not at all), which
    keeps it as fast as the hand-written walk it replaced, where a Transformer was 10-30 % slower.
    """

    def __init__(self, file: str, text: str, diagnostics: Collector) -> None:
        self.file = file
        self.source = text
        self.diagnostics = diagnostics
        self.depth = 0  # levels of expression and `when` around the node being built
        self.criterion_depth = 0
        # Lark's `v_args` wrapper binds a rule's method anew at every lookup, that is at every node,
        # copying its name and docstring each time (functools.update_wrapper): bind each once per
        # file instead, to the same call with the same `visit_wrapper` that Lark then applies.
        for name, wrapped in _rule_methods(type(self)):
            bound = functools.partial(wrapped.base_func, self)
            bound.visit_wrapper = wrapped.visit_wrapper  # type: ignore[attr-defined]
            setattr(self, name, bound)

    def __default__(self, tree: Node) -> Any:
        raise AssertionError(f"the grammar rule {tree.data!r} has no method in {type(self).__name__}")

    # ---- positions and tokens ----
    def _span(self, meta: Meta) -> ast.Span:
        if meta.empty:
            return ast.Span(self.file, 1, 1, 1, 2)
        return ast.Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    def _token_span(self, token: Token) -> ast.Span:
        line = token.line or 1
        column = token.column or 1
        return ast.Span(self.file, line, column, token.end_line or line, token.end_column or column + 1)

    def _ref(self, name: Token) -> ast.Ref:
        return ast.Ref(str(name), self._token_span(name))

    def _number(self, token: Token) -> ast.Number:
        if len(str(token)) > MAX_DIGITS:
            self._too_long(token)
            return ast.Number("0", Decimal(0), self._token_span(token))
        return ast.Number(str(token), Decimal(str(token)), self._token_span(token))

    def _whole(self, token: Token) -> int:
        text = str(token)
        if len(text) > MAX_DIGITS:
            self._too_long(token)
            return 1
        if not text.isdigit():
            self.diagnostics.error(
                "E005", self._token_span(token), f"expected a whole number, found {text}",
                f"write {text.split('.')[0]} or another whole number",
            )
            return 0
        return int(text)

    def _too_long(self, token: Token) -> None:
        self.diagnostics.error(
            "E009", self._token_span(token),
            f"this number has {len(str(token))} characters, too long for any criterion",
            f"numbers in a protocol have at most {MAX_DIGITS} digits; check for a paste error",
        )

    # ---- module ----
    def start(self, meta: Meta, *statements: Node) -> ast.Module:
        header = None
        imports: list[ast.Import] = []
        enums: list[ast.EnumDecl] = []
        records: list[ast.RecordDecl] = []
        patients: list[ast.PatientDecl] = []
        defines: list[ast.Define] = []
        values: list[ast.DefineValue] = []
        equivalences: list[ast.EquivalenceDecl] = []
        inclusion: list[ast.Criterion] = []
        exclusion: list[ast.Criterion] = []
        for statement in statements:
            match self.visit(statement):
                case ast.Header() as built:
                    header = built
                case ast.Import() as built:
                    imports.append(built)
                case ast.EnumDecl() as built:
                    enums.append(built)
                case ast.RecordDecl() as built:
                    records.append(built)
                case ast.PatientDecl() as built:
                    patients.append(built)
                case ast.Define() as built:
                    defines.append(built)
                case ast.DefineValue() as built:
                    values.append(built)
                case ast.EquivalenceDecl() as built:
                    equivalences.append(built)
                case _Section(inclusion=True, criteria=criteria):
                    inclusion.extend(criteria)
                case _Section(inclusion=False, criteria=criteria):
                    exclusion.extend(criteria)
                case built:
                    raise AssertionError(f"a statement built {built!r}")
        return ast.Module(
            self.file, header, tuple(imports), tuple(enums), tuple(records), tuple(patients),
            tuple(defines), tuple(inclusion), tuple(exclusion), tuple(values), tuple(equivalences),
        )

    def header(self, meta: Meta, name: Token, title: Token, *items: Node) -> ast.Header:
        version = None
        notes = []
        for item in items:
            built: _HeaderItem = self.visit(item)
            if built.kind == "version":
                version = built.text
            else:
                notes.append(built.text)
        return ast.Header(str(name), _unquote(title), version, tuple(notes), self._span(meta))

    def version(self, meta: Meta, text: Token) -> _HeaderItem:
        return _HeaderItem("version", _unquote(text))

    def header_note(self, meta: Meta, text: Token) -> _HeaderItem:
        return _HeaderItem("note", _unquote(text))

    def import_stmt(self, meta: Meta, path: Token) -> ast.Import:
        return ast.Import(_unquote(path), self._span(meta))

    # ---- schema ----
    def enum_decl(self, meta: Meta, name: Token, label: Token | None, *members: Node) -> ast.EnumDecl:
        return ast.EnumDecl(str(name), _label(label), tuple(self.visit(m) for m in members), self._span(meta))

    def enum_member(self, meta: Meta, name: Token, label: Token | None) -> ast.EnumMember:
        return ast.EnumMember(str(name), _label(label), self._span(meta))

    def record_decl(self, meta: Meta, name: Token, label: Token | None, *fields: Node) -> ast.RecordDecl:
        return ast.RecordDecl(str(name), _label(label), tuple(self.visit(f) for f in fields), self._span(meta))

    def patient_decl(self, meta: Meta, *fields: Node) -> ast.PatientDecl:
        return ast.PatientDecl(tuple(self.visit(f) for f in fields), self._span(meta))

    def equivalence_decl(self, meta: Meta, name: Token, label: Token | None, enum: Token,
                         *rows: Node) -> ast.EquivalenceDecl:
        return ast.EquivalenceDecl(str(name), _label(label), self._ref(enum), tuple(self.visit(r) for r in rows),
                                   self._span(meta))

    def equivalence_row(self, meta: Meta, member: Token, factor: Token) -> tuple[ast.Ref, ast.Number]:
        return (self._ref(member), self._number(factor))

    def field_decl(self, meta: Meta, name: Token, type_: Node, optional: Token | None, plausible: Node | None,
                   measured: Node | None, label: Token | None) -> ast.FieldDecl:
        return ast.FieldDecl(
            str(name), self.visit(type_), optional is not None, _label(label), self._span(meta),
            self.visit(plausible) if plausible is not None else None,
            self.visit(measured) if measured is not None else None,
        )

    def measured(self, meta: Meta, duration: Node, direction: Node, anchor: Token) -> ast.Measured:
        return ast.Measured(self.visit(duration), self.visit(direction), self._ref(anchor), self._span(meta))

    def plausible(self, meta: Meta, low: Token, high: Token, unit: Node | None) -> ast.Plausible:
        return ast.Plausible(self._number(low), self._number(high), self._unit(unit), self._span(meta))

    def quantity_type(self, meta: Meta, unit: Node, also: Node | None, analyte: Node | None) -> ast.TypeExpr:
        return self._measurement_type("quantity", meta, unit, also, analyte)

    def lab_type(self, meta: Meta, unit: Node, also: Node | None, analyte: Node | None) -> ast.TypeExpr:
        return self._measurement_type("lab", meta, unit, also, analyte)

    def _measurement_type(self, kind: str, meta: Meta, unit: Node, also: Node | None,
                          analyte: Node | None) -> ast.TypeExpr:
        return ast.TypeExpr(kind, None, self.visit(unit), self.visit(also) if also is not None else (),
                            self._span(meta), self.visit(analyte) if analyte is not None else None)

    def set_type(self, meta: Meta, of: Token) -> ast.TypeExpr:
        return ast.TypeExpr("set", str(of), None, (), self._span(meta))

    def list_type(self, meta: Meta, of: Token) -> ast.TypeExpr:
        return ast.TypeExpr("list", str(of), None, (), self._span(meta))

    def named_type(self, meta: Meta, name: Token) -> ast.TypeExpr:
        return ast.TypeExpr(str(name), None, None, (), self._span(meta))

    def unit_list(self, meta: Meta, *units: Node) -> tuple[ast.Unit, ...]:
        return tuple(self.visit(u) for u in units)

    def analyte(self, meta: Meta, name: Token, molar_mass: Token, unit: Node) -> ast.Analyte:
        return ast.Analyte(str(name), self._number(molar_mass), self.visit(unit), self._span(meta))

    def unit(self, meta: Meta, *factors: Token | Node) -> ast.Unit:
        """A unit as written, spaces dropped (`units.py` reads it): its factors are not visited."""
        return ast.Unit("".join(self.source[meta.start_pos : meta.end_pos].split()), self._span(meta))

    def _unit(self, unit: Node | None) -> ast.Unit | None:
        return self.visit(unit) if unit is not None else None

    # ---- definitions ----
    def define(self, meta: Meta, name: Token, label: Token | None, body: Node) -> ast.Define:
        expr = self._expr(body)
        return ast.Define(str(name), _label(label), (ast.Line(expr, expr.span),), self._span(meta))

    def define_block(self, meta: Meta, name: Token, label: Token | None, *lines: Node) -> ast.Define:
        return ast.Define(str(name), _label(label), tuple(self._item(line) for line in lines), self._span(meta))

    def define_value(self, meta: Meta, name: Token, label: Token | None, unit: Node | None, sign: Token,
                     value: Node) -> ast.DefineValue:
        written_in = self._unit(unit)
        if str(sign) != "=":
            self.diagnostics.error("E003", self._token_span(sign), f"unexpected '{sign}'",
                                   "a derived value is defined with '=': define bmi \"Body-mass index\" = …")
        return ast.DefineValue(str(name), _label(label), written_in, self._expr(value), self._span(meta))

    # ---- criteria ----
    def inclusion(self, meta: Meta, *criteria: Node) -> _Section:
        return _Section(True, tuple(self.visit(c) for c in criteria))

    def exclusion(self, meta: Meta, *criteria: Node) -> _Section:
        return _Section(False, tuple(self.visit(c) for c in criteria))

    def criterion(self, meta: Meta, ident: Token, title: Token, combine: Node | None, applies: Node | None,
                  *items: Node) -> ast.Criterion:
        if self.criterion_depth >= MAX_NESTING:
            self.diagnostics.error(
                "E008", self._token_span(ident), f"sub-criteria nest more than {MAX_NESTING} levels deep",
                "no protocol needs this; move the innermost criteria up a level",
            )
            placeholder = ast.BoolLit(False, self._token_span(ident))
            return ast.Criterion(str(ident), _unquote(title), "all", 0, None,
                                 (ast.Line(placeholder, placeholder.span),), self._span(meta),
                                 self._token_span(ident))
        self.criterion_depth += 1
        try:
            mode, count = self.visit(combine) if combine is not None else ("all", 0)
            built = tuple(self.visit(item) for item in items)
            condition = self.visit(applies) if applies is not None else None
        finally:
            self.criterion_depth -= 1
        return ast.Criterion(str(ident), _unquote(title), mode, count, condition, built, self._span(meta),
                             self._token_span(ident))

    def combine_any(self, meta: Meta) -> tuple[str, int]:
        return ("any", 0)

    def combine_all(self, meta: Meta) -> tuple[str, int]:
        return ("all", 0)

    def combine_at_least(self, meta: Meta, count: Token) -> tuple[str, int]:
        return ("at_least", self._whole(count))

    def applies(self, meta: Meta, condition: Node) -> ast.Expr:
        return self._expr(condition)

    def line(self, meta: Meta, expr: Node) -> ast.Line:
        built = self._expr(expr)
        return ast.Line(built, built.span)

    def note(self, meta: Meta, text: Token) -> ast.Note:
        return ast.Note(_unquote(text), self._span(meta))

    def when_line(self, meta: Meta, condition: Node, body: Node) -> ast.When:
        def build() -> ast.When:
            test = self._expr(condition)
            value = self._expr(body)
            return ast.When(test, (ast.Line(value, value.span),), self._span(meta))

        return self._when(meta, build)

    def when_block(self, meta: Meta, condition: Node, *lines: Node) -> ast.When:
        def build() -> ast.When:
            test = self._expr(condition)
            body: list[ast.Line | ast.When] = []
            for line in lines:
                built = self._item(line)
                if isinstance(built, ast.Note):
                    self.diagnostics.error(
                        "E004", built.span, "a note cannot stand inside a 'when' block",
                        "move the note to the criterion, above or below the 'when' block",
                    )
                    continue
                body.append(built)
            return ast.When(test, tuple(body), self._span(meta))

        return self._when(meta, build)

    def _when(self, meta: Meta, build: Callable[[], ast.When]) -> ast.When:
        """A `when` wraps its condition and its body in one more level; past MAX_NESTING the
        outermost `when` is one diagnostic."""
        outermost = self.depth == 0
        self.depth += 1
        try:
            return build()
        except _TooDeep as deep:
            if not outermost:
                raise
            self._report_too_deep(deep.span)
            span = self._span(meta)
            placeholder = ast.BoolLit(False, span)
            return ast.When(placeholder, (ast.Line(placeholder, span),), span)
        finally:
            self.depth -= 1

    def _item(self, tree: Node) -> _Item:
        built = self.visit(tree)
        assert isinstance(built, _Item), built
        return built

    # ---- expressions ----
    def _expr(self, tree: Node) -> ast.Expr:
        """One expression node, one level deeper; past MAX_NESTING levels the whole line is one
        diagnostic."""
        if self.depth >= MAX_NESTING:
            raise _TooDeep(self._span(tree.meta))
        outermost = self.depth == 0
        self.depth += 1
        try:
            built: ast.Expr = self.visit(tree)
            return built
        except _TooDeep as deep:
            if not outermost:
                raise
            self._report_too_deep(deep.span)
            return ast.BoolLit(False, self._span(tree.meta))
        finally:
            self.depth -= 1

    def _report_too_deep(self, span: ast.Span) -> None:
        self.diagnostics.error(
            "E008", span, f"this line nests more than {MAX_NESTING} levels deep",
            "no backend evaluates deeper nesting; give an inner part a name with 'define' "
            "and use the name here",
        )

    def _exprs(self, operands: tuple[Node, ...]) -> tuple[ast.Expr, ...]:
        return tuple(self._expr(operand) for operand in operands)

    # logic
    def or_expr(self, meta: Meta, *operands: Node) -> ast.Or:
        return ast.Or(self._exprs(operands), self._span(meta))

    def and_expr(self, meta: Meta, *operands: Node) -> ast.And:
        return ast.And(self._exprs(operands), self._span(meta))

    def not_(self, meta: Meta, operand: Node) -> ast.Not:
        return ast.Not(self._expr(operand), self._span(meta))

    def at_least_of(self, meta: Meta, count: Token, operands: Node) -> ast.AtLeast:
        return ast.AtLeast(self._whole(count), self.visit(operands), "at_least", self._span(meta))

    def any_of(self, meta: Meta, operands: Node) -> ast.AtLeast:
        return ast.AtLeast(1, self.visit(operands), "any", self._span(meta))

    def all_of(self, meta: Meta, operands: Node) -> ast.AtLeast:
        built = self.visit(operands)
        return ast.AtLeast(len(built), built, "all", self._span(meta))

    def expr_list(self, meta: Meta, *operands: Node) -> tuple[ast.Expr, ...]:
        """`(a, b, c)` after `any of`, `all of`, `at least N of`: each at the level of the list's owner."""
        return self._exprs(operands)

    # comparisons and membership
    def compare(self, meta: Meta, left: Node, op: Token, right: Node) -> ast.Compare:
        return ast.Compare(_OPS[str(op)], self._expr(left), self._expr(right), self._span(meta))

    def between(self, meta: Meta, value: Node, low: Node, high: Node) -> ast.Between:
        return ast.Between(self._expr(value), self._expr(low), self._expr(high), self._span(meta))

    def is_member(self, meta: Meta, value: Node, member: Token) -> ast.Membership:
        return ast.Membership("is", self._expr(value), (self._ref(member),), self._span(meta))

    def is_not_member(self, meta: Meta, value: Node, member: Token) -> ast.Membership:
        return ast.Membership("is_not", self._expr(value), (self._ref(member),), self._span(meta))

    def is_any_of(self, meta: Meta, value: Node, members: Node) -> ast.Membership:
        return ast.Membership("is_any", self._expr(value), self.visit(members), self._span(meta))

    def has_member(self, meta: Meta, value: Node, member: Token) -> ast.Membership:
        return ast.Membership("has", self._expr(value), (self._ref(member),), self._span(meta))

    def has_any_of(self, meta: Meta, value: Node, members: Node) -> ast.Membership:
        return ast.Membership("has_any", self._expr(value), self.visit(members), self._span(meta))

    def has_all_of(self, meta: Meta, value: Node, members: Node) -> ast.Membership:
        return ast.Membership("has_all", self._expr(value), self.visit(members), self._span(meta))

    def name_list(self, meta: Meta, *names: Token) -> tuple[ast.Ref, ...]:
        return tuple(self._ref(name) for name in names)

    # dates and intervals
    def within(self, meta: Meta, value: Node, duration: Node, direction: Node, anchor: Node) -> ast.Window:
        return self._window("within", meta, value, duration, direction, anchor)

    def at_least_from(self, meta: Meta, value: Node, duration: Node, direction: Node, anchor: Node) -> ast.Window:
        return self._window("at_least", meta, value, duration, direction, anchor)

    def less_than_from(self, meta: Meta, value: Node, duration: Node, direction: Node, anchor: Node) -> ast.Window:
        return self._window("less_than", meta, value, duration, direction, anchor)

    def more_than_from(self, meta: Meta, value: Node, duration: Node, direction: Node, anchor: Node) -> ast.Window:
        return self._window("more_than", meta, value, duration, direction, anchor)

    def _window(self, kind: str, meta: Meta, value: Node, duration: Node, direction: Node,
                anchor: Node) -> ast.Window:
        return ast.Window(kind, self._expr(value), self.visit(duration), self.visit(direction), self._expr(anchor),
                          self._span(meta))

    def none_recorded(self, meta: Meta, field: Token) -> ast.NoneRecorded:
        return ast.NoneRecorded(self._ref(field), self._span(meta))

    def overlaps(self, meta: Meta, value: Node, duration: Node, direction: Node, anchor: Node) -> ast.Overlaps:
        return ast.Overlaps(self._expr(value), self.visit(duration), self.visit(direction), self._expr(anchor),
                            self._span(meta))

    def ongoing_at(self, meta: Meta, value: Node, anchor: Node) -> ast.OngoingAt:
        return ast.OngoingAt(self._expr(value), self._expr(anchor), self._span(meta))

    def lasted(self, meta: Meta, value: Node, lasting: Node, duration: Node, anchor: Node) -> ast.Lasted:
        return ast.Lasted(self._expr(value), self.visit(lasting), self.visit(duration), self._expr(anchor),
                          self._span(meta))

    def duration(self, meta: Meta, amount: Token, unit: Token) -> ast.Duration:
        name = _TIME_UNITS.get(str(unit))
        if name is None:
            self.diagnostics.error(
                "E007", self._token_span(unit), f"unknown time unit '{unit}'",
                "windows are counted in days, weeks, months or years",
            )
            name = "days"
        return ast.Duration(self._whole(amount), name, self._span(meta))

    def before(self, meta: Meta) -> str:
        return "before"

    def after(self, meta: Meta) -> str:
        return "after"

    def lasting_at_least(self, meta: Meta) -> str:
        return "at_least"

    def lasting_more_than(self, meta: Meta) -> str:
        return "more_than"

    def lasting_less_than(self, meta: Meta) -> str:
        return "less_than"

    def lasting_at_most(self, meta: Meta) -> str:
        return "at_most"

    # lists
    def count(self, meta: Meta, items: Token, condition: Node | None) -> ast.Quantifier:
        return ast.Quantifier("count", self._ref(items), self._condition(condition), self._span(meta))

    def count_different(self, meta: Meta, key: Token, items: Token, condition: Node | None) -> ast.Quantifier:
        return ast.Quantifier("count", self._ref(items), self._condition(condition), self._span(meta),
                              self._ref(key))

    def exists(self, meta: Meta, items: Token, condition: Node | None) -> ast.Quantifier:
        return ast.Quantifier("any", self._ref(items), self._condition(condition), self._span(meta))

    def every(self, meta: Meta, items: Token, condition: Node | None) -> ast.Quantifier:
        return ast.Quantifier("all", self._ref(items), self._condition(condition), self._span(meta))

    def _condition(self, condition: Node | None) -> ast.Expr | None:
        return self._expr(condition) if condition is not None else None

    # arithmetic: the operator's spelling (`×` or `*`, `÷` or `/`) does not change its meaning
    def add(self, meta: Meta, left: Node, plus: Token, right: Node) -> ast.Arith:
        return ast.Arith("+", self._expr(left), self._expr(right), self._span(meta))

    def subtract(self, meta: Meta, left: Node, minus: Token, right: Node) -> ast.Arith:
        return ast.Arith("-", self._expr(left), self._expr(right), self._span(meta))

    def multiply(self, meta: Meta, left: Node | Token, times: Token, right: Node) -> ast.Arith:
        return ast.Arith("×", self._term(left), self._expr(right), self._span(meta))

    def divide(self, meta: Meta, left: Node | Token, divide: Token, right: Node) -> ast.Arith:
        return ast.Arith("÷", self._term(left), self._expr(right), self._span(meta))

    def _term(self, operand: Node | Token) -> ast.Expr:
        """The left of `×` or `÷`: a bare NUMBER token (`2 × weight`) or an expression."""
        return self._number(operand) if isinstance(operand, Token) else self._expr(operand)

    def choice(self, meta: Meta, *values_and_conditions: Node) -> ast.Choice:
        """`(V1 if C1, V2 if C2, otherwise V)`: value, condition, …, and the last value."""
        *pairs, otherwise = values_and_conditions
        branches = tuple((self._expr(pairs[i]), self._expr(pairs[i + 1])) for i in range(0, len(pairs), 2))
        return ast.Choice(branches, self._expr(otherwise), self._span(meta))

    def number_in(self, meta: Meta, value: Node, unit: Node) -> ast.NumberIn:
        return ast.NumberIn(self._expr(value), self.visit(unit), self._span(meta))

    def equivalent(self, meta: Meta, table: Token, dose: Node, agent: Token) -> ast.Equivalent:
        return ast.Equivalent(self._ref(table), self._expr(dose), self._ref(agent), self._span(meta))

    # literals
    def ref(self, meta: Meta, name: Token) -> ast.Ref:
        return ast.Ref(str(name), self._span(meta))

    def number(self, meta: Meta, digits: Token) -> ast.Number:
        return self._number(digits)

    def quantity(self, meta: Meta, number: Token, times_or_unit: Token | Node, unit: Node | None = None,
                 ) -> ast.QuantityLit:
        """`60 g/L` and `2 x 10^9/L` (NUMBER unit), or `2 × 10^9/L` (NUMBER TIMES unit)."""
        match times_or_unit, unit:
            case Tree(data="unit") as written, None:
                pass
            case Token(type="TIMES"), Tree(data="unit") as written:
                pass
            case _:
                raise TypeError(f"quantity: no unit after the number in {times_or_unit!r}, {unit!r}")
        return ast.QuantityLit(self._number(number), self.visit(written), self._span(meta))

    def uln(self, meta: Meta, number: Token, times: Token | None = None) -> ast.UlnLit:
        """`3 x ULN`, and `3 × ULN`, which keeps its TIMES."""
        return ast.UlnLit(self._number(number), self._span(meta))

    def titer(self, meta: Meta, written: Token) -> ast.TiterLit:
        text = str(written)
        span = self._span(meta)
        first, dilution = text.split(":")
        if len(text) > MAX_DIGITS:
            self._too_long(written)
            return ast.TiterLit(1, "1:1", span)
        if first != "1" or int(dilution) == 0:
            self.diagnostics.error(
                "E006", span, f"a titer is written 1:N, found {text}",
                "write the dilution as 1:80, 1:160, …",
            )
        return ast.TiterLit(int(dilution), text, span)

    def date(self, meta: Meta, written: Token) -> ast.DateLit:
        return ast.DateLit(str(written), self._span(meta))

    def text(self, meta: Meta, written: Token) -> ast.TextLit:
        return ast.TextLit(_unquote(written), self._span(meta))

    def true(self, meta: Meta) -> ast.BoolLit:
        return ast.BoolLit(True, self._span(meta))

    def false(self, meta: Meta) -> ast.BoolLit:
        return ast.BoolLit(False, self._span(meta))


_OPS = {">=": ">=", "≥": ">=", "<=": "<=", "≤": "<=", ">": ">", "<": "<", "=": "=",
        "!=": "!=", "≠": "!="}
