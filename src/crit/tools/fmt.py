"""`crit fmt`: one canonical layout for `.crit` files, changing whitespace only.

The parser drops comments (they ride inside the newline token), so the formatter does not
print the syntax tree back. It re-lays the author's own tokens line by line: indentation
becomes two spaces per block level, spacing around operators, commas and parentheses is
normalised, blank lines are tidied, and every comment is kept where it was. Nothing but
whitespace changes, and every result is parsed again and must give the parser the very same
tokens (indentation included) as the original, so formatting cannot change a protocol's meaning.

Line breaks the author put inside parentheses are kept (continuation lines are re-indented),
and long lines are not wrapped: those are choices of wording, not of layout.
"""

from __future__ import annotations

import difflib
import functools
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import click
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput

from crit.diagnostics import CritError, render_all
from crit.driver import Loaded, display_path, read_source
from crit.syntax import parse
from crit.syntax.grammar import IndentationError_, Indenter, grammar_text

_INDENT = "  "
_TAB = 8  # as the parser's Indenter counts a tab
_LAYOUT = frozenset(("_NL", "_INDENT", "_DEDENT"))
_NO_SPACE_BEFORE = frozenset(("RPAR", "COMMA", "COLON", "OPTIONAL"))
_CALLS = frozenset(("count", "any", "all"))  # `any(list where …)` hugs its parenthesis
# Top-level statements that may stand in a group without blank lines between them.
_GROUPED = frozenset(("import", "define"))


class FormatError(Exception):
    """Formatting would change the protocol's syntax tree: a bug in crit, never written out."""


@functools.cache
def _parser() -> Lark:
    """The crit grammar, keeping every token (keywords and punctuation too) with its place."""
    return Lark(
        grammar_text(), parser="lalr", lexer="contextual", postlex=Indenter(),
        propagate_positions=True, keep_all_tokens=True, maybe_placeholders=False,
    )


@dataclass(frozen=True, slots=True)
class _Row:
    """One physical line of a statement: its tokens (with their unit group) and a trailing comment."""

    tokens: tuple[tuple[Token, int], ...]  # (token, unit group or -1)
    comment: str


@dataclass(frozen=True, slots=True)
class _Code:
    """A statement: one physical line, or several while parentheses are open."""

    width: int  # the author's indentation, as the parser measures it
    rows: tuple[_Row, ...]


@dataclass(frozen=True, slots=True)
class _Comment:
    width: int
    text: str


@dataclass(frozen=True, slots=True)
class _Blank:
    pass


_Item = _Code | _Comment | _Blank


@dataclass(frozen=True, slots=True)
class _Out:
    """A line of output at block depth `level`: a statement's first line ("start") or one of
    its continuation lines ("more"), or a comment; `keyword` is the statement's first word."""

    level: int
    text: str
    kind: str
    keyword: str


_BLANK = _Out(0, "", "blank", "")


def format_source(text: str, file: str) -> str:
    """`text` in the canonical layout. Raises `CritError` (with the parser's diagnostics) if it
    does not parse, and `FormatError` if the result would not parse to the same syntax tree."""
    source = text.removeprefix("\ufeff").replace("\r\n", "\n")
    if not source.endswith("\n"):
        source += "\n"
    try:
        tree = _parser().parse(source)
    except (UnexpectedInput, IndentationError_):
        parse(source, file)  # raises CritError, positioned and worded for authors
        raise
    formatted = _render(_items(source, tree))
    try:
        again = _parser().parse(formatted)
    except (UnexpectedInput, IndentationError_) as err:
        raise FormatError(f"the formatted {file} does not parse: {err}") from None
    if _signature(again) != _signature(tree):
        raise FormatError(f"formatting {file} would change its meaning")
    return formatted


def _signature(tree: Tree[Token]) -> list[tuple[str, str]]:
    """The token stream the parser saw, layout tokens by kind only. Two texts with the same
    stream parse to the same tree, so to the same protocol (a leading newline aside)."""
    tokens = [(t.type, "" if t.type in _LAYOUT else str(t))
              for t in tree.scan_values(lambda v: isinstance(v, Token))]
    return tokens[1:] if tokens[:1] == [("_NL", "")] else tokens


# ---- reading: physical lines into statements, comments and blank lines ------------------


def _tokens(tree: Tree[Token]) -> list[tuple[Token, int]]:
    """Every significant token in order, with the number of the unit it belongs to (or -1):
    a unit's parts are written without spaces (`10^9/L`), everything else is spaced."""
    groups: dict[int, int] = {}
    for number, unit in enumerate(tree.find_data("unit")):
        for token in unit.scan_values(lambda v: isinstance(v, Token)):
            groups[id(token)] = number
    tokens = tree.scan_values(lambda v: isinstance(v, Token) and v.type not in _LAYOUT)
    return [(token, groups.get(id(token), -1)) for token in tokens]


def _width(line: str) -> int:
    indent = line[: len(line) - len(line.lstrip(" \t"))]
    return indent.count(" ") + indent.count("\t") * _TAB


def _items(source: str, tree: Tree[Token]) -> list[_Item]:
    lines = source.split("\n")[:-1]
    by_line: dict[int, list[tuple[Token, int]]] = {}
    for token, group in _tokens(tree):
        assert token.line is not None
        by_line.setdefault(token.line, []).append((token, group))
    items: list[_Item] = []
    rows: list[_Row] = []
    width = 0
    depth = 0
    for number, line in enumerate(lines, start=1):
        tokens = by_line.get(number, [])
        if tokens:
            last = tokens[-1][0]
            assert last.end_column is not None
            comment = line[last.end_column - 1 :].strip()
            if not rows:
                width = _width(line) if items or number > 1 else 0
            rows.append(_Row(tuple(tokens), comment))
            for token, _ in tokens:
                depth += {"LPAR": 1, "RPAR": -1}.get(token.type, 0)
            if depth <= 0:
                items.append(_Code(width, tuple(rows)))
                rows, depth = [], 0
            continue
        text = line.strip()
        if rows:  # inside parentheses: keep comments, drop blank lines
            if text:
                rows.append(_Row((), text))
        elif text:
            items.append(_Comment(_width(line), text))
        else:
            items.append(_Blank())
    assert not rows, "the parser accepted unbalanced parentheses"
    return items


# ---- writing -----------------------------------------------------------------------------


def _render(items: list[_Item]) -> str:
    out = _tidy_blank_lines(_lay_out(items))
    return "".join(f"{_INDENT * line.level}{line.text}\n" if line.text else "\n" for line in out)


def _lay_out(items: list[_Item]) -> list[_Out | None]:
    """Each item at its block level (None stands for a blank line). A comment line takes the
    level whose indentation is nearest below its own, among the blocks open around it."""
    stack = [0]
    out: list[_Out | None] = []
    for index, item in enumerate(items):
        if isinstance(item, _Blank):
            out.append(None)
        elif isinstance(item, _Comment):
            following = next((i.width for i in items[index + 1 :] if isinstance(i, _Code)), 0)
            widths = [*stack, following] if following > stack[-1] else stack
            level = max(n for n, w in enumerate(widths) if w <= item.width)
            out.append(_Out(level, item.text, "comment", ""))
        else:
            if item.width > stack[-1]:
                stack.append(item.width)
            while item.width < stack[-1]:
                stack.pop()
            level = len(stack) - 1
            keyword = str(item.rows[0].tokens[0][0])
            for offset, text in enumerate(_statement(item)):
                out.append(_Out(level, text, "more" if offset else "start", keyword))
    return out


def _statement(code: _Code) -> Iterator[str]:
    """The statement's lines; continuation lines are indented by their parenthesis depth
    (two spaces per open parenthesis, plus two), a line that closes them all by none."""
    depth = 0
    for number, row in enumerate(code.rows):
        text = _spaced(row.tokens)
        if row.comment:
            text = f"{text}  {row.comment}" if text else row.comment
        if number == 0:
            yield text
        else:
            leading = depth
            for token, _ in row.tokens:
                if token.type != "RPAR":
                    break
                leading -= 1
            pad = "" if leading <= 0 and row.tokens else " " * (2 + 2 * max(leading, 0))
            yield pad + text
        for token, _ in row.tokens:
            depth += {"LPAR": 1, "RPAR": -1}.get(token.type, 0)


def _spaced(tokens: Sequence[tuple[Token, int]]) -> str:
    parts: list[str] = []
    for index, (token, group) in enumerate(tokens):
        if index:
            before, before_group = tokens[index - 1]
            if not _hugs(before, before_group, token, group):
                parts.append(" ")
        parts.append(str(token))
    return "".join(parts)


def _hugs(before: Token, before_group: int, token: Token, group: int) -> bool:
    """Whether two neighbouring tokens are written without a space between them."""
    if group >= 0 and group == before_group:
        return True
    if token.type in _NO_SPACE_BEFORE or before.type == "LPAR":
        return True
    return token.type == "LPAR" and (str(before) in _CALLS or before.type == "NAME")  # NAME(: a table


def _tidy_blank_lines(lines: list[_Out | None]) -> list[_Out]:
    """At most one blank line in a row; none at the start or end of the file or of a block;
    one between top-level blocks (imports and definitions may stand in groups)."""
    kept: list[_Out | None] = []
    for index, line in enumerate(lines):
        if line is not None:
            kept.append(line)
            continue
        before = next((x for x in reversed(kept) if x is not None), None)
        after = next((x for x in lines[index + 1 :] if x is not None), None)
        if (kept and kept[-1] is None) or before is None or after is None:
            continue
        if before.kind != "comment" and after.level > before.level:
            continue  # a blank line cannot open a block
        kept.append(None)
    out: list[_Out] = []
    previous: _Out | None = None  # the last top-level statement
    last_code = -1  # where the last statement line stands in `out`
    for line in kept:
        if line is None:
            out.append(_BLANK)
            continue
        if line.kind == "start" and line.level == 0:
            grouped = previous is not None and line.keyword == previous.keyword and line.keyword in _GROUPED
            if previous is not None and not grouped and _BLANK not in out[last_code + 1 :]:
                _blank_before_comments(out)
            previous = line
        out.append(line)
        if line.kind != "comment":
            last_code = len(out) - 1
    return out


def _blank_before_comments(out: list[_Out]) -> None:
    """Open a blank line above the top-level comments that lead into the next block."""
    position = len(out)
    while position > 0 and out[position - 1].kind == "comment" and out[position - 1].level == 0:
        position -= 1
    out.insert(position, _BLANK)


# ---- the command -------------------------------------------------------------------------


def _crit_files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.crit") if p.is_file())
        else:
            files.append(path)
    return files


@click.command("fmt")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--check", "check_only", is_flag=True, help="Write nothing; exit 1 if any file would change.")
@click.option("--diff", "show_diff", is_flag=True, help="Write nothing; print the changes as a unified diff.")
def fmt_command(paths: Sequence[Path], check_only: bool, show_diff: bool) -> None:
    """Lay out .crit PATHS (files, or every .crit file under a directory; - for stdin) canonically."""
    if list(paths) == [Path("-")]:
        text = sys.stdin.read()
        try:
            parse(text, "<stdin>")
            click.echo(format_source(text, "<stdin>"), nl=False)
        except CritError as err:
            click.echo(render_all(err.diagnostics, {"<stdin>": text}), err=True)
            raise click.exceptions.Exit(1) from None
        return
    changed: list[Path] = []
    unchanged = 0
    failed = False
    for path in _crit_files(paths):
        loaded = Loaded()
        shown = display_path(path)
        try:
            text = read_source(path, shown, loaded)
            parse(text, shown)  # every syntax error is reported, as `crit check` would
            new = format_source(text, shown)
        except CritError as err:
            click.echo(render_all(err.diagnostics, loaded.sources), err=True)
            failed = True
            continue
        current = path.read_bytes().decode("utf-8")
        if new == current:
            unchanged += 1
            continue
        changed.append(path)
        if show_diff:
            click.echo("".join(difflib.unified_diff(
                current.splitlines(keepends=True), new.splitlines(keepends=True),
                fromfile=f"{shown} (before)", tofile=f"{shown} (formatted)")), nl=False)
        if check_only:
            click.echo(f"would reformat {shown}", err=True)
        elif not show_diff:
            path.write_text(new, encoding="utf-8", newline="\n")
            click.echo(f"reformatted {shown}", err=True)
    click.echo(_summary(len(changed), unchanged, failed, not (check_only or show_diff)), err=True)
    if failed or (check_only and changed):
        raise click.exceptions.Exit(1)


def _summary(changed: int, unchanged: int, failed: bool, wrote: bool) -> str:
    def files(n: int) -> str:
        return f"{n} file{'s' if n != 1 else ''}"

    verb = "reformatted" if wrote else "would be reformatted"
    parts = [f"{files(changed)} {verb}"] if changed else []
    parts.append(f"{files(unchanged)} already formatted")
    return ", ".join(parts) + ("; some files could not be parsed" if failed else "")


__all__ = ["FormatError", "fmt_command", "format_source"]
