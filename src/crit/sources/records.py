"""Reading patient records from JSON text, exactly and defensively.

Numbers are read as decimals from their text (`59.99999999999999999` stays itself; no binary
float ever rounds it to 60); a key given twice in one object is a problem by path, not a
silent "last one wins"; nesting deeper than any record needs, and numbers longer than any
measurement, are problems rather than crashes. `crit eval`, `crit screen` and `crit test` all
read records through `loads`.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from crit.runtime import Problem

MAX_DEPTH = 64  # objects and lists nested deeper than this are refused
MAX_NUMBER_DIGITS = 40  # longer numbers are refused before Python parses them


class RecordSyntaxError(ValueError):
    """The text is not a readable JSON document; `problems` say where and why, and `syntax`
    (when the text stops being JSON) gives the line, column and message of that place."""

    def __init__(self, problems: list[Problem], syntax: json.JSONDecodeError | None = None) -> None:
        self.problems = problems
        self.syntax = syntax
        super().__init__("; ".join(str(p) for p in problems))


class _Duplicates(dict[str, Any]):
    """An object in which some key was given more than once (which ones, in `repeated`)."""

    repeated: tuple[str, ...] = ()


def _number(text: str) -> int | Decimal:
    if len(text) > MAX_NUMBER_DIGITS:
        raise _TooLong(text)
    if "." in text or "e" in text or "E" in text:
        value = Decimal(text)
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and not -MAX_NUMBER_DIGITS <= exponent <= MAX_NUMBER_DIGITS:
            raise _TooLong(text, exponent)
        return value
    return int(text)


class _TooLong(ValueError):
    """A number longer than any measurement, or written with an exponent no measurement needs."""

    def __init__(self, text: str, exponent: int | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.exponent = exponent


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    repeated: list[str] = []
    for key, value in pairs:
        if key in out and key not in repeated:
            repeated.append(key)
        out[key] = value
    if not repeated:
        return out
    marked = _Duplicates(out)
    marked.repeated = tuple(repeated)
    return marked


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number in JSON")


def _structure_problems(value: Any, path: str, depth: int, out: list[Problem]) -> None:
    """Duplicate keys (by path) and excessive depth, in one walk; runs only when needed."""
    if depth > MAX_DEPTH:
        out.append(Problem(path or "record", f"nested more than {MAX_DEPTH} levels deep"))
        return
    if isinstance(value, dict):
        if isinstance(value, _Duplicates):
            for key in value.repeated:
                out.append(Problem(f"{path}.{key}" if path else key, "given more than once"))
        for key, item in value.items():
            _structure_problems(item, f"{path}.{key}" if path else key, depth + 1, out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _structure_problems(item, f"{path}[{index}]", depth + 1, out)


def _deep(text: str) -> bool:
    """A cheap over-estimate: could the document nest deeper than MAX_DEPTH?"""
    return text.count("[") + text.count("{") > MAX_DEPTH


def loads(text: str, where: str = "") -> Any:
    """The JSON document in `text` with numbers as `int` or `Decimal`. Raises
    `RecordSyntaxError` for text that is not JSON, for a key given twice, for nesting deeper
    than `MAX_DEPTH` and for numbers longer than `MAX_NUMBER_DIGITS` characters; the problems'
    paths are relative to `where` (a record's path in a list of records, say)."""
    text = text.removeprefix("\ufeff")
    flagged: list[bool] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result = _pairs(items)
        if isinstance(result, _Duplicates):
            flagged.append(True)
        return result

    try:
        value = json.loads(text, parse_float=_number, parse_int=_number, parse_constant=_constant,
                           object_pairs_hook=pairs)
    except _TooLong as err:
        if err.exponent is not None:
            message = (f"the number {err.text} is beyond any measurement (an exponent from "
                       f"-{MAX_NUMBER_DIGITS} to {MAX_NUMBER_DIGITS} at most)")
        else:
            message = (f"a number of {len(err.text)} characters is longer than any measurement "
                       f"({MAX_NUMBER_DIGITS} at most)")
        raise RecordSyntaxError([Problem(where or "record", message)]) from None
    except RecursionError:
        raise RecordSyntaxError([Problem(where or "record", f"nested more than {MAX_DEPTH} levels deep")]) from None
    except json.JSONDecodeError as err:
        where_text = f"line {err.lineno}, column {err.colno}"
        raise RecordSyntaxError([Problem(where or "record", f"not valid JSON at {where_text}: {err.msg}")],
                                err) from None
    except ValueError as err:
        raise RecordSyntaxError([Problem(where or "record", f"not valid JSON: {err}")]) from None
    if flagged or _deep(text):
        problems: list[Problem] = []
        _structure_problems(value, where, 0, problems)
        if problems:
            raise RecordSyntaxError(problems)
    return value
