"""Text that crit did not write (file names, ids, error messages, author titles) made inert for
the formats it lands in: Markdown, HTML, CSV and JSON.

Every value that enters a report or a result file passes through one of these functions, so
that no input can open a link, a script, a table cell or a spreadsheet formula. Control
characters (newlines included) are shown escaped (`\\n`, `\\x1b`, `\\u2028`), never acted on.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

# C0 and C1 controls, DEL, and the other characters that break a line: NEL, LS, PS (and the
# bidirectional overrides, which can make text read other than it is).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def visible(text: object) -> str:
    """`text` on one line, its control characters shown as escapes rather than acted on."""
    return _CONTROL.sub(_escape_control, str(text))


def terminal(text: str) -> str:
    """Text from a record, safe on a terminal line: every character that does not print (line
    breaks, escapes, bidirectional controls) is written as its Python escape, `\\n`, `\\x1b`."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _escape_control(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# Every ASCII character that Markdown (CommonMark and GitHub's tables, strikethrough, math and
# autolinks) gives a meaning to, anywhere in a line; backslash-escaping them is always allowed.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~&$:=^])")
_MD_LINE_START = re.compile(r"^(-|[0-9]+(?=\.))")  # a list item or a rule, at the start of a line


def markdown(text: object) -> str:
    """`text` as inert Markdown inside a line or a table cell: no emphasis, link, image, HTML,
    code span, heading, list or cell border can come of it."""
    escaped = _MD_SPECIAL.sub(r"\\\1", visible(text))
    return _MD_LINE_START.sub(lambda m: "\\-" if m.group() == "-" else m.group() + "\\", escaped)


def markdown_code(text: object) -> str:
    """`text` as a Markdown code span that neither a backtick nor a `|` can close or split."""
    body = visible(text).replace("|", "\\|")
    runs = [len(run) for run in re.findall("`+", body)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{fence}{pad}{body}{pad}{fence}"


_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}
_HTML_SPECIAL = re.compile("[&<>\"']")


def html(text: object) -> str:
    """`text` as inert HTML, in an element or an attribute value."""
    return _HTML_SPECIAL.sub(lambda m: _HTML[m.group()], visible(text))


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """A CSV cell a spreadsheet will not run: text starting with `=`, `+`, `-`, `@`, a tab or
    a carriage return gets a leading single quote (OWASP's rule for CSV injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _plain(value: Any) -> Any:
    """JSON's own value for a Decimal: an exact string, so no float ever rounds it and no
    `NaN` or `Infinity` (not JSON) is written."""
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def json_text(value: Any) -> str:
    """Strict JSON on one line: Decimals as exact strings, a non-finite float is an error."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, default=_plain)


def json_source(value: Any) -> str:
    """The JSON text of a value as read (`crit.sources.records.loads`): finite Decimals as the numbers
    they were written as (`1.0` stays `1.0`), anything not JSON (a NaN) as a string."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json_text(str(k))}: {json_source(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(json_source(v) for v in value) + "]"
    if isinstance(value, Decimal) and value.is_finite():
        return str(value)
    try:
        return json_text(value)
    except (TypeError, ValueError):
        return json_text(repr(value))


def decimal_text(value: Decimal) -> str:
    """Plain notation, never scientific: `60`, `0.25`, `20000`."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def split_lines(text: str) -> list[str]:
    """The source's lines as the lexer counts them: broken only at \\n, \\r\\n and \\r.

    `str.splitlines` also breaks at U+2028, U+0085, form feed…, which may sit inside a quoted
    label; quoting by it would show a later diagnostic against the wrong line."""
    return _LINE_BREAK.split(text)
