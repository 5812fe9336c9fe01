"""Load the grammar and build the LALR parser once per process."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from lark import Lark, Token
from lark.lark import PostLex

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


@functools.cache
def parser(strict: bool = False) -> Lark:
    """The LALR parser; `strict=True` makes any conflict or terminal collision fail loudly."""
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="contextual",
        postlex=Indenter(),
        propagate_positions=True,
        maybe_placeholders=True,
        strict=strict,
    )


@functools.cache
def keywords() -> frozenset[str]:
    """The words of the language (`when`, `and`, `ULN` …): a name spelt like one is refused."""
    from lark.lexer import PatternStr

    return frozenset(
        t.pattern.value for t in parser().terminals
        if isinstance(t.pattern, PatternStr) and t.pattern.value[:1].isalpha()
    )
