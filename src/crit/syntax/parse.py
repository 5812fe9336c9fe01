"""Parse `.crit` source into `crit.ast.Module`; turn Lark's errors into diagnostics."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from decimal import Decimal

from lark import Token, Tree
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
)

from crit import ast
from crit.check.names import lookalike
from crit.diagnostics import Collector, CritError, Diagnostic
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


def parse(source: str, file: str) -> ast.Module:
    """Parse one file. Raises `CritError` with positioned diagnostics on any syntax error."""
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
    module = _Builder(file, text, diagnostics).module(tree)
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


def _unquote(token: object) -> str:
    assert isinstance(token, Token)
    body = str(token)[1:-1]
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


class _TooDeep(Exception):
    """Raised from the node past MAX_NESTING up to the line it is in, which reports it once."""

    def __init__(self, span: ast.Span) -> None:
        super().__init__("too deep")
        self.span = span


class _Builder:
    """Turns Lark's tree into `crit.ast` nodes; the only code that knows the tree's shape."""

    def __init__(self, file: str, text: str, diagnostics: Collector) -> None:
        self.file = file
        self.text = text
        self.diagnostics = diagnostics
        self.depth = 0  # levels of expression and `when` around the node being built
        self.criterion_depth = 0

    # ---- positions ----
    def span(self, node: Tree[Token] | Token) -> ast.Span:
        if isinstance(node, Token):
            line = node.line or 1
            column = node.column or 1
            return ast.Span(
                self.file, line, column, node.end_line or line, node.end_column or column + 1
            )
        meta = node.meta
        if getattr(meta, "empty", True):
            return ast.Span(self.file, 1, 1, 1, 2)
        return ast.Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    def source_of(self, node: Tree[Token]) -> str:
        return self.text[node.meta.start_pos : node.meta.end_pos]

    # ---- module ----
    def module(self, tree: Tree[Token]) -> ast.Module:
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
        for child in tree.children:
            if not isinstance(child, Tree):
                continue
            kind = child.data
            if kind == "header":
                header = self.header(child)
            elif kind == "import_stmt":
                imports.append(ast.Import(_unquote(child.children[0]), self.span(child)))
            elif kind == "enum_decl":
                enums.append(self.enum(child))
            elif kind == "record_decl":
                name, label, *fields = child.children
                records.append(
                    ast.RecordDecl(
                        str(name), self.opt_text(label), self.fields(fields), self.span(child)
                    )
                )
            elif kind == "patient_decl":
                patients.append(ast.PatientDecl(self.fields(child.children), self.span(child)))
            elif kind in ("define", "define_block"):
                defines.append(self.define(child))
            elif kind == "define_value":
                values.append(self.define_value(child))
            elif kind == "equivalence_decl":
                equivalences.append(self.equivalence(child))
            elif kind in ("inclusion", "exclusion"):
                crits = [self.criterion(c) for c in child.children if isinstance(c, Tree)]
                (inclusion if kind == "inclusion" else exclusion).extend(crits)
        return ast.Module(
            self.file, header, tuple(imports), tuple(enums), tuple(records), tuple(patients),
            tuple(defines), tuple(inclusion), tuple(exclusion), tuple(values), tuple(equivalences),
        )

    def opt_text(self, token: object) -> str | None:
        return _unquote(token) if isinstance(token, Token) else None

    def header(self, tree: Tree[Token]) -> ast.Header:
        name, title, *items = tree.children
        version = None
        notes = []
        for item in items:
            if isinstance(item, Tree):
                text = _unquote(item.children[0])
                if item.data == "version":
                    version = text
                else:
                    notes.append(text)
        return ast.Header(str(name), _unquote(title), version, tuple(notes), self.span(tree))

    def enum(self, tree: Tree[Token]) -> ast.EnumDecl:
        name, label, *members = tree.children
        built = []
        for member in members:
            assert isinstance(member, Tree)
            mname, mlabel = member.children
            built.append(ast.EnumMember(str(mname), self.opt_text(mlabel), self.span(member)))
        return ast.EnumDecl(str(name), self.opt_text(label), tuple(built), self.span(tree))

    def fields(self, nodes: Sequence[object]) -> tuple[ast.FieldDecl, ...]:
        out = []
        for node in nodes:
            if not isinstance(node, Tree):
                continue
            name, type_tree, optional, plausible, measured, label = node.children
            assert isinstance(type_tree, Tree)
            out.append(
                ast.FieldDecl(
                    str(name), self.type_expr(type_tree), optional is not None,
                    self.opt_text(label), self.span(node),
                    self.plausible(plausible) if isinstance(plausible, Tree) else None,
                    self.measured(measured) if isinstance(measured, Tree) else None,
                )
            )
        return tuple(out)

    def analyte(self, tree: Tree[Token]) -> ast.Analyte:
        name, mass, unit = tree.children
        assert isinstance(unit, Tree)
        return ast.Analyte(str(name), self.number(mass), self.unit(unit), self.span(tree))

    def plausible(self, tree: Tree[Token]) -> ast.Plausible:
        low, high, unit = tree.children
        return ast.Plausible(self.number(low), self.number(high),
                             self.unit(unit) if isinstance(unit, Tree) else None, self.span(tree))


    def measured(self, tree: Tree[Token]) -> ast.Measured:
        duration, direction, anchor = tree.children
        assert isinstance(duration, Tree) and isinstance(direction, Tree) and isinstance(anchor, Token)
        return ast.Measured(self.duration(duration), direction.data, ast.Ref(str(anchor), self.span(anchor)),
                            self.span(tree))

    def type_expr(self, tree: Tree[Token]) -> ast.TypeExpr:
        span = self.span(tree)
        kind = tree.data
        if kind in ("quantity_type", "lab_type"):
            unit_tree, also, analyte = tree.children
            assert isinstance(unit_tree, Tree)
            units: tuple[ast.Unit, ...] = ()
            if isinstance(also, Tree):
                units = tuple(self.unit(u) for u in also.children if isinstance(u, Tree))
            return ast.TypeExpr(kind.removesuffix("_type"), None, self.unit(unit_tree), units, span,
                                self.analyte(analyte) if isinstance(analyte, Tree) else None)
        (name,) = tree.children
        if kind == "named_type":
            return ast.TypeExpr(str(name), None, None, (), span)
        return ast.TypeExpr(kind.removesuffix("_type"), str(name), None, (), span)

    def unit(self, tree: Tree[Token]) -> ast.Unit:
        text = "".join(self.source_of(tree).split())
        return ast.Unit(text, self.span(tree))

    # ---- definitions and criteria ----
    def define(self, tree: Tree[Token]) -> ast.Define:
        name, label, *rest = tree.children
        if tree.data == "define":
            expr_tree = rest[0]
            expr = self.expr(expr_tree)
            body: tuple[ast.Line | ast.When | ast.Note, ...] = (ast.Line(expr, expr.span),)
        else:
            body = tuple(self.body_line(b) for b in rest if isinstance(b, Tree))
        return ast.Define(str(name), self.opt_text(label), body, self.span(tree))

    def define_value(self, tree: Tree[Token]) -> ast.DefineValue:
        name, label, unit_tree, sign, value = tree.children
        unit = self.unit(unit_tree) if isinstance(unit_tree, Tree) else None
        if str(sign) != "=":
            self.diagnostics.error("E003", self.span(sign), f"unexpected '{sign}'",
                                   "a derived value is defined with '=': define bmi \"Body-mass index\" = …")
        return ast.DefineValue(str(name), self.opt_text(label), unit, self.expr(value), self.span(tree))

    def equivalence(self, tree: Tree[Token]) -> ast.EquivalenceDecl:
        name, label, enum, *rows = tree.children
        assert isinstance(enum, Token)
        built = []
        for row in rows:
            assert isinstance(row, Tree)
            member, factor = row.children
            assert isinstance(member, Token)
            built.append((ast.Ref(str(member), self.span(member)), self.number(factor)))
        return ast.EquivalenceDecl(str(name), self.opt_text(label), ast.Ref(str(enum), self.span(enum)),
                                   tuple(built), self.span(tree))

    def criterion(self, tree: Tree[Token]) -> ast.Criterion:
        ident, title, combine, applies, *items = tree.children
        assert isinstance(ident, Token)
        if self.criterion_depth >= MAX_NESTING:
            self.diagnostics.error(
                "E008", self.span(ident), f"sub-criteria nest more than {MAX_NESTING} levels deep",
                "no protocol needs this; move the innermost criteria up a level",
            )
            placeholder = ast.BoolLit(False, self.span(ident))
            return ast.Criterion(str(ident), _unquote(title), "all", 0, None,
                                 (ast.Line(placeholder, placeholder.span),), self.span(tree),
                                 self.span(ident))
        self.criterion_depth += 1
        try:
            return self._criterion(tree, ident, title, combine, applies, items)
        finally:
            self.criterion_depth -= 1

    def _criterion(self, tree: Tree[Token], ident: Token, title: object, combine: object,
                   applies: object, items: Sequence[object]) -> ast.Criterion:
        mode, count = "all", 0
        if isinstance(combine, Tree):
            if combine.data == "combine_any":
                mode = "any"
            elif combine.data == "combine_at_least":
                mode = "at_least"
                count = self.whole(combine.children[0])
        built: list[ast.Line | ast.When | ast.Note | ast.Criterion] = []
        for item in items:
            if not isinstance(item, Tree):
                continue
            if item.data == "criterion":
                built.append(self.criterion(item))
            else:
                built.append(self.body_line(item))
        condition = self.expr(applies.children[0]) if isinstance(applies, Tree) else None
        return ast.Criterion(
            str(ident), _unquote(title), mode, count, condition, tuple(built), self.span(tree),
            self.span(ident),
        )

    def body_line(self, tree: Tree[Token]) -> ast.Line | ast.When | ast.Note:
        span = self.span(tree)
        if tree.data == "note":
            return ast.Note(_unquote(tree.children[0]), span)
        if tree.data == "line":
            expr = self.expr(tree.children[0])
            return ast.Line(expr, expr.span)
        outermost = self.depth == 0
        self.depth += 1  # a `when` wraps its condition and its body in one more level
        try:
            return self._when(tree, span)
        except _TooDeep as deep:
            if not outermost:
                raise
            self._report_too_deep(deep.span)
            placeholder = ast.BoolLit(False, span)
            return ast.When(placeholder, (ast.Line(placeholder, span),), span)
        finally:
            self.depth -= 1

    def _when(self, tree: Tree[Token], span: ast.Span) -> ast.When:
        condition = self.expr(tree.children[0])
        if tree.data == "when_line":
            body_expr = self.expr(tree.children[1])
            return ast.When(condition, (ast.Line(body_expr, body_expr.span),), span)
        body: list[ast.Line | ast.When] = []
        for child in tree.children[1:]:
            if not isinstance(child, Tree):
                continue
            line = self.body_line(child)
            if isinstance(line, ast.Note):
                self.diagnostics.error(
                    "E004", line.span, "a note cannot stand inside a 'when' block",
                    "move the note to the criterion, above or below the 'when' block",
                )
                continue
            body.append(line)
        return ast.When(condition, tuple(body), span)

    def whole(self, token: object) -> int:
        assert isinstance(token, Token)
        text = str(token)
        if len(text) > MAX_DIGITS:
            self._too_long(token)
            return 1
        if not text.isdigit():
            self.diagnostics.error(
                "E005", self.span(token), f"expected a whole number, found {text}",
                f"write {text.split('.')[0]} or another whole number",
            )
            return 0
        return int(text)

    # ---- expressions ----
    def expr(self, node: object) -> ast.Expr:
        """One expression node; past MAX_NESTING levels the whole line is one diagnostic."""
        assert isinstance(node, Tree), node
        if self.depth >= MAX_NESTING:
            raise _TooDeep(self.span(node))
        outermost = self.depth == 0
        self.depth += 1
        try:
            return self._expr(node)
        except _TooDeep as deep:
            if not outermost:
                raise
            self._report_too_deep(deep.span)
            return ast.BoolLit(False, self.span(node))
        finally:
            self.depth -= 1

    def _report_too_deep(self, span: ast.Span) -> None:
        self.diagnostics.error(
            "E008", span, f"this line nests more than {MAX_NESTING} levels deep",
            "no backend evaluates deeper nesting; give an inner part a name with 'define' "
            "and use the name here",
        )

    def _expr(self, node: Tree[Token]) -> ast.Expr:
        span = self.span(node)
        kind = node.data
        c = node.children
        if kind == "or_expr":
            return ast.Or(tuple(self.expr(x) for x in c), span)
        if kind == "and_expr":
            return ast.And(tuple(self.expr(x) for x in c), span)
        if kind == "not_":
            return ast.Not(self.expr(c[0]), span)
        if kind == "compare":
            op = _OPS[str(c[1])]
            return ast.Compare(op, self.expr(c[0]), self.expr(c[2]), span)
        if kind == "between":
            return ast.Between(self.expr(c[0]), self.expr(c[1]), self.expr(c[2]), span)
        if kind in _MEMBERSHIP:
            value = self.expr(c[0])
            rest = c[1]
            if isinstance(rest, Tree):
                members = tuple(ast.Ref(str(t), self.span(t)) for t in rest.children if isinstance(t, Token))
            else:
                assert isinstance(rest, Token)
                members = (ast.Ref(str(rest), self.span(rest)),)
            return ast.Membership(_MEMBERSHIP[kind], value, members, span)
        if kind in _WINDOWS:
            subject, dur, direction, anchor = c
            assert isinstance(dur, Tree) and isinstance(direction, Tree)
            return ast.Window(
                _WINDOWS[kind],
                self.expr(subject),
                self.duration(dur),
                direction.data,
                self.expr(anchor),
                span,
            )
        if kind == "none_recorded":
            assert isinstance(c[0], Token)
            return ast.NoneRecorded(ast.Ref(str(c[0]), self.span(c[0])), span)
        if kind == "overlaps":
            subject, dur, direction, anchor = c
            assert isinstance(dur, Tree) and isinstance(direction, Tree)
            return ast.Overlaps(self.expr(subject), self.duration(dur), direction.data, self.expr(anchor), span)
        if kind == "ongoing_at":
            return ast.OngoingAt(self.expr(c[0]), self.expr(c[1]), span)
        if kind == "lasted":
            subject, lasting, dur, anchor = c
            assert isinstance(lasting, Tree) and isinstance(dur, Tree)
            return ast.Lasted(self.expr(subject), lasting.data.removeprefix("lasting_"), self.duration(dur),
                              self.expr(anchor), span)
        if kind == "count_different":
            key, name, condition = c
            assert isinstance(key, Token) and isinstance(name, Token)
            cond = self.expr(condition) if isinstance(condition, Tree) else None
            return ast.Quantifier("count", ast.Ref(str(name), self.span(name)), cond, span,
                                  ast.Ref(str(key), self.span(key)))
        if kind == "at_least_of":
            count = self.whole(c[0])
            operands = self.expr_list(c[1])
            return ast.AtLeast(count, operands, "at_least", span)
        if kind in ("any_of", "all_of"):
            operands = self.expr_list(c[0])
            count = 1 if kind == "any_of" else len(operands)
            return ast.AtLeast(count, operands, kind.removesuffix("_of"), span)
        if kind == "ref":
            return ast.Ref(str(c[0]), span)
        if kind == "number":
            return self.number(c[0])
        if kind in _ARITH:
            left, _, right = c
            return ast.Arith(_ARITH[kind].get(str(c[1]), str(c[1])), self.term(left), self.term(right), span)
        if kind == "number_in":
            unit_tree = c[1]
            assert isinstance(unit_tree, Tree)
            return ast.NumberIn(self.expr(c[0]), self.unit(unit_tree), span)
        if kind == "equivalent":
            table, dose, agent = c
            assert isinstance(table, Token) and isinstance(agent, Token)
            return ast.Equivalent(ast.Ref(str(table), self.span(table)), self.term(dose),
                                  ast.Ref(str(agent), self.span(agent)), span)
        if kind == "choice":
            *pairs, last = c
            branches = tuple((self.expr(pairs[i]), self.expr(pairs[i + 1])) for i in range(0, len(pairs), 2))
            return ast.Choice(branches, self.expr(last), span)
        if kind == "quantity":
            unit_tree = c[-1]
            assert isinstance(unit_tree, Tree)
            return ast.QuantityLit(self.number(c[0]), self.unit(unit_tree), span)
        if kind == "uln":
            return ast.UlnLit(self.number(c[0]), span)
        if kind == "titer":
            text = str(c[0])
            first, dilution = text.split(":")
            if len(text) > MAX_DIGITS:
                self._too_long(c[0])
                return ast.TiterLit(1, "1:1", span)
            if first != "1" or int(dilution) == 0:
                self.diagnostics.error(
                    "E006", span, f"a titer is written 1:N, found {text}",
                    "write the dilution as 1:80, 1:160, …",
                )
            return ast.TiterLit(int(dilution), text, span)
        if kind == "date":
            return ast.DateLit(str(c[0]), span)
        if kind == "text":
            return ast.TextLit(_unquote(c[0]), span)
        if kind in ("true", "false"):
            return ast.BoolLit(kind == "true", span)
        if kind in ("count", "exists", "every"):
            name, condition = c
            assert isinstance(name, Token)
            cond = self.expr(condition) if isinstance(condition, Tree) else None
            return ast.Quantifier(
                {"count": "count", "exists": "any", "every": "all"}[kind],
                ast.Ref(str(name), self.span(name)), cond, span,
            )
        raise AssertionError(f"unknown expression node {kind}")

    def term(self, node: object) -> ast.Expr:
        """An operand of arithmetic: a bare number is a token here, anything else a tree."""
        if isinstance(node, Token):
            return self.number(node)
        return self.expr(node)

    def expr_list(self, tree: object) -> tuple[ast.Expr, ...]:
        assert isinstance(tree, Tree)
        return tuple(self.expr(x) for x in tree.children if isinstance(x, Tree))

    def number(self, token: object) -> ast.Number:
        assert isinstance(token, Token)
        if len(str(token)) > MAX_DIGITS:
            self._too_long(token)
            return ast.Number("0", Decimal(0), self.span(token))
        return ast.Number(str(token), Decimal(str(token)), self.span(token))

    def _too_long(self, token: object) -> None:
        assert isinstance(token, Token)
        self.diagnostics.error(
            "E009", self.span(token), f"this number has {len(str(token))} characters, too long for any criterion",
            f"numbers in a protocol have at most {MAX_DIGITS} digits; check for a paste error",
        )

    def duration(self, tree: Tree[Token]) -> ast.Duration:
        amount_token, unit_token = tree.children
        assert isinstance(amount_token, Token) and isinstance(unit_token, Token)
        unit = _TIME_UNITS.get(str(unit_token))
        if unit is None:
            self.diagnostics.error(
                "E007", self.span(unit_token), f"unknown time unit '{unit_token}'",
                "windows are counted in days, weeks, months or years",
            )
            unit = "days"
        return ast.Duration(self.whole(amount_token), unit, self.span(tree))


_WINDOWS = {"within": "within", "at_least_from": "at_least", "less_than_from": "less_than",
            "more_than_from": "more_than"}

_OPS = {">=": ">=", "≥": ">=", "<=": "<=", "≤": "<=", ">": ">", "<": "<", "=": "=",
        "!=": "!=", "≠": "!="}

# The arithmetic rules, with each operator's spellings and the one the AST keeps.
_ARITH: dict[str, dict[str, str]] = {
    "add": {"+": "+"}, "subtract": {"-": "-"},
    "multiply": {"×": "×", "*": "×"}, "divide": {"÷": "÷", "/": "÷"},
}

_MEMBERSHIP = {
    "is_member": "is", "is_not_member": "is_not", "is_any_of": "is_any",
    "has_member": "has", "has_any_of": "has_any", "has_all_of": "has_all",
}
