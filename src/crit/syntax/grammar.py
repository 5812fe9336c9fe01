"""Load the grammar and its LALR parser once per process.

Building the parser from the grammar (the LALR analysis and Lark's terminal-collision checks)
costs more than compiling a whole protocol, so the tables are built once, ahead of time, and
shipped as data in `parsers.pickle`, keyed by the grammar's text, Lark's version and the parser's
options. A table whose key does not match (the grammar was edited, Lark upgraded) is never used:
the parser is built from the grammar, as before. `python -m crit.syntax` writes the file;
tests/test_startup.py checks it is current.
"""

from __future__ import annotations

import functools
import hashlib
import io
import pickle
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import lark
from lark import Lark, Token
from lark.grammar import Rule
from lark.lark import PostLex
from lark.lexer import TerminalDef

_TAB = 8


class IndentationError_(Exception):
    """An indentation that matches no enclosing block, with the place it happened."""

    def __init__(self, line: int, column: int, message: str, hint: str) -> None:
        super().__init__(message)
        self.line = line
        self.column = column
        self.message = message
        self.hint = hint


class Indenter(PostLex):
    """Turns the newline token's trailing indentation into _INDENT/_DEDENT tokens.

    Lark's own Indenter raises errors without positions; authors need the line.
    """

    always_accept = ("_NL",)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        levels = [0]
        parens = 0
        last: Token | None = None
        for token in stream:
            last = token
            if token.type == "_NL":
                if parens > 0:
                    continue
                yield token
                indent_str = token.value.rsplit("\n", 1)[1]
                indent = indent_str.count(" ") + indent_str.count("\t") * _TAB
                line = (token.end_line or token.line or 1)
                column = len(indent_str) + 1
                if indent > levels[-1]:
                    levels.append(indent)
                    yield _at("_INDENT", indent_str, token, line, column)
                else:
                    while indent < levels[-1]:
                        levels.pop()
                        yield _at("_DEDENT", indent_str, token, line, column)
                    if indent != levels[-1]:
                        raise IndentationError_(
                            line,
                            column,
                            f"this line is indented to column {indent + 1}, "
                            f"which matches no enclosing block",
                            f"indent it to column {levels[-1] + 1} to continue the block "
                            "above, or deeper to start a new block",
                        )
                continue
            if token.type == "LPAR":
                parens += 1
            elif token.type == "RPAR":
                parens = max(parens - 1, 0)
            yield token
        while len(levels) > 1:
            levels.pop()
            if last is None:
                yield Token("_DEDENT", "")
            else:
                end_line = last.end_line or last.line or 1
                end_col = last.end_column or 1
                yield _at("_DEDENT", "", last, end_line, end_col)


def _at(kind: str, value: str, borrow: Token, line: int, column: int) -> Token:
    token = Token.new_borrow_pos(kind, value, borrow)
    token.line = line
    token.column = column
    token.end_line = line
    token.end_column = column
    return token


def grammar_text() -> str:
    """The grammar shipped in the package, or `grammar/crit.lark` in a source checkout."""
    packaged = resources.files("crit").joinpath("crit.lark")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parents[3] / "grammar" / "crit.lark"
    return checkout.read_text(encoding="utf-8")


# The options of each parser crit uses; the saved file holds one table for each.
CHECKER: dict[str, bool] = {"propagate_positions": True, "maybe_placeholders": True}
FORMATTER: dict[str, bool] = {"propagate_positions": True, "keep_all_tokens": True, "maybe_placeholders": False}
SAVED_FILE = "parsers.pickle"


@functools.cache
def parser(strict: bool = False) -> Lark:
    """The checker's LALR parser; `strict=True` builds it from the grammar, making any conflict or
    terminal collision fail loudly."""
    return build(**CHECKER, strict=True) if strict else load(**CHECKER)


@functools.cache
def formatter_parser() -> Lark:
    """The parser `crit fmt` uses: every token kept (keywords and punctuation too) with its place."""
    return load(**FORMATTER)


def load(**options: bool) -> Lark:
    """The parser for these options from the saved tables when they were made from this grammar
    by this Lark, else built from the grammar."""
    text = grammar_text()
    saved = _saved_table(_saved_tables().get(table_key(text, options)))
    if saved is None:
        return build(text, **options)
    return Lark.__new__(Lark)._load(saved, postlex=Indenter())


def build(text: str | None = None, /, **options: bool) -> Lark:
    """The parser built from the grammar: the slow way, and the source of the saved tables."""
    return Lark(text if text is not None else grammar_text(), parser="lalr", lexer="contextual",
                postlex=Indenter(), **options)


def table_key(text: str, options: dict[str, bool]) -> str:
    """What a saved table was made from: the grammar, Lark's version, the options."""
    made_from = repr((text, lark.__version__, sorted(options.items())))
    return hashlib.sha256(made_from.encode("utf-8")).hexdigest()


def table(parser: Lark) -> dict[str, Any]:
    """A parser's tables as plain data (dicts, lists, tuples, strings, numbers), as Lark saves them."""
    data, memo = parser.memo_serialize([TerminalDef, Rule])
    data["options"] = {k: v for k, v in data["options"].items() if k != "postlex"}  # given on load
    return {"data": data, "memo": memo}


class _DataOnly(pickle.Unpickler):
    """Reads plain data and nothing else: no class or function is ever looked up."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{SAVED_FILE} holds only plain data, not {module}.{name}")


@functools.cache
def _saved_tables() -> dict[str, bytes]:
    """Each saved table, still pickled, by its key: a command unpickles only the table of the
    parser it uses (half the file's time, for `crit build`, which never formats)."""
    try:
        tables = _DataOnly(io.BytesIO(_saved_bytes())).load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError):
        return {}  # missing or unreadable: every parser is built from the grammar
    if not isinstance(tables, dict):
        return {}
    return {key: table for key, table in tables.items() if isinstance(key, str) and isinstance(table, bytes)}


def _saved_table(pickled: bytes | None) -> dict[str, Any] | None:
    """One saved table as plain data, or None (and the parser built from the grammar) if it
    is missing or unreadable."""
    if pickled is None:
        return None
    try:
        table = _DataOnly(io.BytesIO(pickled)).load()
    except (pickle.UnpicklingError, EOFError, ValueError):
        return None
    return table if isinstance(table, dict) else None


def _saved_bytes() -> bytes:
    return resources.files("crit.syntax").joinpath(SAVED_FILE).read_bytes()


def save_tables(path: Path | None = None) -> Path:
    """Build each parser crit uses from the grammar and save its tables, keyed by what made them
    (each pickled on its own, so that loading one parser reads only its own)."""
    text = grammar_text()
    tables = {table_key(text, options): pickle.dumps(table(build(text, **options)), protocol=4)
              for options in (CHECKER, FORMATTER)}
    target = path or Path(__file__).with_name(SAVED_FILE)
    target.write_bytes(pickle.dumps(tables, protocol=4))
    _saved_tables.cache_clear()
    return target


@functools.cache
def keywords() -> frozenset[str]:
    """The words of the language (`when`, `and`, `ULN` …): a name spelt like one is refused."""
    from lark.lexer import PatternStr

    return frozenset(
        t.pattern.value for t in parser().terminals
        if isinstance(t.pattern, PatternStr) and t.pattern.value[:1].isalpha()
    )
