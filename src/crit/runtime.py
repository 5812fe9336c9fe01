"""The evaluators' runtime: Kleene logic, outcomes, dates, and reading records.

Standard library only. Every generated evaluator embeds the block between the markers
verbatim (generated code never imports crit), and the interpreter imports it, so both
share one definition of the semantics. A test checks the embedded copies match.
"""

from __future__ import annotations

# --- begin runtime ---
import calendar
import datetime
import difflib
import enum
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal, Inexact, InvalidOperation, Rounded
from fractions import Fraction
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")

Exact = Decimal | Fraction  # a measured value: a Fraction only where no decimal writes it exactly


class Absent(enum.Enum):
    """A value recorded as none (JSON null in an optional field): known, not missing."""

    NONE = "none"


NONE = Absent.NONE


class Outcome(enum.StrEnum):
    MET = "met"
    NOT_MET = "not met"
    UNKNOWN = "unknown"
    NOT_APPLICABLE = "not applicable"


class Decision(enum.StrEnum):
    ELIGIBLE = "eligible"
    INELIGIBLE = "ineligible"
    NEEDS_REVIEW = "needs review"


class Fact(NamedTuple):
    """A three-valued truth (None is unknown) with its reason and the facts it lacks.

    `applicable` is False for a part that does not apply, and None for an unknown part that
    may turn out not to apply (a `when` whose condition is unknown): such a part must not be
    counted as one that applies, or `requires at least` would decide on parts that may vanish."""

    value: bool | None
    reason: str
    missing: tuple[str, ...] = ()
    applicable: bool | None = True


ALWAYS = Fact(True, "")


class Lab(NamedTuple):
    """A laboratory value with the upper limit of normal of the lab that measured it."""

    value: Exact
    uln: Exact


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a record cannot be read, with the path of the offending field."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidRecord(ValueError):
    """The record cannot be evaluated; `problems` says where and why."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


@dataclass(frozen=True, slots=True)
class CriterionInfo:
    id: str
    title: str
    section: str  # "inclusion" | "exclusion"
    parent: str | None
    line: int


@dataclass(frozen=True, slots=True)
class CriterionResult:
    id: str
    title: str
    section: str
    outcome: Outcome
    reason: str
    missing: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Screening:
    """The decision for one patient, every criterion's outcome, and what would settle it."""

    decision: Decision
    criteria: tuple[CriterionResult, ...]
    missing: tuple[str, ...]
    pending_judgments: tuple[str, ...]

    def outcome(self, criterion_id: str) -> Outcome:
        for result in self.criteria:
            if result.id == criterion_id:
                return result.outcome
        raise KeyError(criterion_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision.value,
            "missing": list(self.missing),
            "pending_judgments": list(self.pending_judgments),
            "criteria": [
                {"id": r.id, "title": r.title, "section": r.section, "outcome": r.outcome.value,
                 "reason": r.reason, "missing": list(r.missing)}
                for r in self.criteria
            ],
        }


# ---- three-valued logic -----------------------------------------------------------


def _union(facts: Iterable[Fact]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for fact in facts:
        for path in fact.missing:
            seen[path] = None
    return tuple(sorted(seen))


def _join(facts: Iterable[Fact]) -> str:
    return "; ".join(f.reason for f in facts if f.reason)


def _applies(parts: Sequence[Fact]) -> bool | None:
    """Whether a combination of applicable-or-maybe parts surely applies (None: maybe not)."""
    return True if any(f.applicable for f in parts) else None


def all_of(*facts: Fact) -> Fact:
    """Kleene `and` over the applicable parts; not applicable when none applies."""
    parts = [f for f in facts if f.applicable is not False]
    if not parts:
        return Fact(None, _join(facts), (), False)
    false = [f for f in parts if f.value is False]
    if false:
        return Fact(False, _join(false))
    unknown = [f for f in parts if f.value is None]
    if unknown:
        return Fact(None, _join(unknown), _union(unknown), _applies(parts))
    return Fact(True, _join(parts))


def any_of(*facts: Fact) -> Fact:
    """Kleene `or` over the applicable parts; not applicable when none applies."""
    parts = [f for f in facts if f.applicable is not False]
    if not parts:
        return Fact(None, _join(facts), (), False)
    true = [f for f in parts if f.value is True]
    if true:
        return Fact(True, _join(true))
    unknown = [f for f in parts if f.value is None]
    if unknown:
        return Fact(None, _join(unknown), _union(unknown), _applies(parts))
    return Fact(False, _join(parts))


def at_least(count: int, *facts: Fact) -> Fact:
    """True once `count` parts are true; false once too few can still become true, and only
    if some part surely applies (were every part to turn out not applicable, so would this)."""
    parts = [f for f in facts if f.applicable is not False]
    if not parts:
        return Fact(None, _join(facts), (), False)
    true = [f for f in parts if f.value is True]
    unknown = [f for f in parts if f.value is None]
    summary = f"{len(true)} of {len(parts)} met, needs {count}"
    if len(true) >= count:
        return Fact(True, f"{summary}: {_join(true)}")
    applies = _applies(parts)
    if len(true) + len(unknown) < count and applies:
        return Fact(False, summary)
    return Fact(None, f"{summary}, {len(unknown)} unknown: {_join(unknown)}", _union(unknown), applies)


def negate(fact: Fact) -> Fact:
    """Kleene `not`: the reason still describes the facts, so it is kept."""
    if fact.value is None:
        return fact
    return Fact(not fact.value, fact.reason, (), fact.applicable)


def when(condition: Fact, body: Fact) -> Fact:
    """`when C: X`: not applicable if C is false; X if C is true; else unknown (unless X is
    not applicable either way). X met with C unknown is still unknown: "met or not applicable"
    decides nothing, since an exclusion that is met excludes and one not applicable does not."""
    if condition.value is False:
        return Fact(None, f"not applicable: {condition.reason}", (), False)
    if condition.value is True or body.applicable is False:
        return body
    return Fact(None, _join((condition, body)), _union((condition, body)), None)


def outcome(fact: Fact) -> Outcome:
    if fact.applicable is False:
        return Outcome.NOT_APPLICABLE
    if fact.value is None:
        return Outcome.UNKNOWN
    return Outcome.MET if fact.value else Outcome.NOT_MET


def summary(criterion_id: str, fact: Fact) -> Fact:
    """A sub-criterion as its parent sees it: the outcome by id, the details on its own row."""
    return Fact(fact.value, f"{criterion_id} {outcome(fact).value}", fact.missing, fact.applicable)


# ---- atoms ------------------------------------------------------------------------------

_NEGATED = {">=": "<", "<=": ">", ">": "≤", "<": "≥", "=": "≠", "!=": "="}
_SHOWN = {">=": "≥", "<=": "≤", ">": ">", "<": "<", "=": "=", "!=": "≠"}


def _holds(left: Any, op: str, right: Any) -> bool:
    if op == ">=":
        return bool(left >= right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    if op == "<":
        return bool(left < right)
    if op == "=":
        return bool(left == right)
    return bool(left != right)


_EXACT = Context(prec=120, traps=[Inexact, Rounded, InvalidOperation])


def terminating(value: Fraction) -> Exact:
    """A Fraction as a Decimal when it terminates in decimal (its denominator has no prime
    factor but 2 and 5), exactly; otherwise the Fraction itself: 1 kg is 10^8/45359237 lb,
    which no decimal writes, and rounding it would flip comparisons at the boundary."""
    denominator = value.denominator
    twos = fives = 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    if denominator != 1:
        return value
    places = max(twos, fives)
    return Decimal(value.numerator * 10 ** places // value.denominator).scaleb(-places)


def scale(value: Exact, factor: Exact) -> Exact:
    """`value × factor`, exactly: never rounded to a context's precision."""
    if type(value) is Decimal and type(factor) is Decimal:
        try:
            return _EXACT.multiply(value, factor)
        except ArithmeticError:
            pass
    return terminating(Fraction(value) * Fraction(factor))


def show(value: Any, unit: str = "") -> str:
    """A value as a coordinator reads it: `59 g/L`, `1:160`, `2025-06-26`, `yes`."""
    if value is NONE:
        return "none recorded"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Fraction):  # a conversion no decimal writes: shown to 9 places
        near = Decimal(value.numerator) / Decimal(value.denominator)
        return "≈" + show(near.quantize(Decimal("1e-9")), unit)
    if isinstance(value, Decimal):
        text = format(value, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return f"{text} {unit}" if unit else text
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, Lab):
        return show(value.value, unit)
    if isinstance(value, frozenset):
        return "{" + ", ".join(sorted(value)) + "}" if value else "none"
    return f"{value} {unit}" if unit and isinstance(value, int) else str(value)


def _missing(*pairs: tuple[Any, str]) -> tuple[str, ...]:
    return tuple(sorted({path for value, path in pairs if value is None and path}))


def _unknown(paths: tuple[str, ...], judgments: frozenset[str] = frozenset()) -> Fact:
    words = [f"pending judgment: {p}" if p in judgments else f"missing: {p}" for p in paths]
    return Fact(None, "; ".join(words), paths)


def truth(value: bool | Absent | None, path: str, judgment: bool = False) -> Fact:
    """A bool field or a recorded judgment used as a condition."""
    if value is None:
        return _unknown((path,), frozenset((path,)) if judgment else frozenset())
    if value is NONE:
        return Fact(False, f"{path}: none recorded")
    return Fact(bool(value), f"{path}: {'yes' if value else 'no'}")


def compare(left: Any, op: str, right: Any, left_path: str, right_path: str,
            left_unit: str, right_text: str, titer: bool = False) -> Fact:
    """`left op right` for numbers, quantities, titers, dates, text and truth values."""
    missing = _missing((left, left_path), (right, right_path))
    if missing:
        return _unknown(missing)
    if isinstance(left, Lab):
        left = left.value
    if isinstance(right, Lab):
        right = right.value
    shown_left = f"1:{left}" if titer and left is not NONE else show(left, left_unit)
    if right_path:
        shown_right = f"{right_path} " + (f"1:{right}" if titer else show(right, left_unit))
    else:
        shown_right = right_text
    if left is NONE or right is NONE:
        return Fact(False, f"{left_path} {shown_left}")
    held = _holds(left, op, right)
    shown_op = _SHOWN[op] if held else _NEGATED[op]
    return Fact(held, f"{left_path} {shown_left} {shown_op} {shown_right}")


def compare_uln(lab: Lab | Absent | None, op: str, multiple: Decimal, path: str, unit: str,
                multiple_text: str) -> Fact:
    """`lab op k × ULN`, against the patient's own laboratory's upper limit of normal."""
    if lab is None:
        return _unknown((path,))
    if lab is NONE:
        return Fact(False, f"{path}: none recorded")
    limit = scale(lab.uln, multiple)
    held = _holds(lab.value, op, limit)
    shown_op = _SHOWN[op] if held else _NEGATED[op]
    return Fact(held, f"{path} {show(lab.value, unit)} {shown_op} {multiple_text} × ULN "
                      f"({show(limit, unit)})")


def between(value: Any, low: Any, high: Any, path: str, low_path: str, high_path: str,
            unit: str, range_text: str, titer: bool = False) -> Fact:
    """Inclusive at both ends, and exactly `low ≤ value and value ≤ high` in Kleene logic:
    a value above a known upper bound is out of range even when the lower bound is missing."""
    if isinstance(value, Lab):
        value = value.value
    if value is None:
        return _unknown(_missing((value, path), (low, low_path), (high, high_path)))
    shown = f"1:{value}" if titer and value is not NONE else show(value, unit)
    if value is NONE or low is NONE or high is NONE:
        return Fact(False, f"{path} {shown}")
    above = None if low is None else bool(low <= value)
    below = None if high is None else bool(value <= high)
    if above is False or below is False:
        return Fact(False, f"{path} {shown} is outside {range_text}")
    if above is None or below is None:
        return _unknown(_missing((low, low_path), (high, high_path)))
    return Fact(True, f"{path} {shown} is within {range_text}")


def member(value: str | Absent | None, kind: str, members: frozenset[str], path: str,
           members_text: str) -> Fact:
    """Enum tests: `is`, `is not`, `is any of`."""
    if value is None:
        return _unknown((path,))
    if value is NONE:
        return Fact(kind == "is_not", f"{path}: none recorded")
    inside = value in members
    held = not inside if kind == "is_not" else inside
    if inside:
        return Fact(held, f"{path} is {value}")
    return Fact(held, f"{path} is {value}, not {members_text}")


def has(value: frozenset[str] | Absent | None, kind: str, members: frozenset[str], path: str,
        members_text: str) -> Fact:
    """Set tests: `has`, `has any of`, `has all of`."""
    if value is None:
        return _unknown((path,))
    if value is NONE:
        value = frozenset()
    found = value & members
    held = found == members if kind == "has_all" else bool(found)
    if held:
        return Fact(True, f"{path} include {', '.join(sorted(found))}")
    if kind == "has_all":
        return Fact(False, f"{path} lack {', '.join(sorted(members - value))}")
    return Fact(False, f"{path} include none of {members_text}")


def shift(day: datetime.date, amount: int, unit: str) -> datetime.date:
    """Days and weeks exactly; months and years on the calendar, clamped to the month's end."""
    if unit == "days":
        return day + datetime.timedelta(days=amount)
    if unit == "weeks":
        return day + datetime.timedelta(weeks=amount)
    months = amount * (12 if unit == "years" else 1)
    year, month = divmod(day.year * 12 + (day.month - 1) + months, 12)
    if not 1 <= year <= 9999:
        raise OverflowError("date out of range")
    last = calendar.monthrange(year, month + 1)[1]
    return datetime.date(year, month + 1, min(day.day, last))


def _safe_shift(day: datetime.date, amount: int, unit: str) -> datetime.date:
    try:
        return shift(day, amount, unit)
    except OverflowError:
        return datetime.date.max if amount > 0 else datetime.date.min


_EDGES: dict[tuple[datetime.date, int, str], datetime.date] = {}


def window_holds(value: datetime.date, kind: str, amount: int, unit: str, direction: str,
                 anchor: datetime.date) -> bool:
    """Whether `value` lies in the window (`within` or `at_least`, inclusive) `amount` `unit`
    before or after `anchor`. The edges are remembered: cohorts share their anchor dates."""
    key = (anchor, -amount if direction == "before" else amount, unit)
    edge = _EDGES.get(key)
    if edge is None:
        edge = _safe_shift(anchor, key[1], unit)
        if len(_EDGES) < 65536:
            _EDGES[key] = edge
    if direction == "before":
        return edge <= value <= anchor if kind == "within" else value <= edge
    return anchor <= value <= edge if kind == "within" else value >= edge


def window(value: datetime.date | Absent | None, kind: str, amount: int, unit: str,
           direction: str, anchor: datetime.date | Absent | None, path: str, anchor_path: str,
           text: str) -> Fact:
    """Windows are inclusive at both ends and measured from the anchor date."""
    missing = _missing((value, path), (anchor, anchor_path))
    if missing:
        return _unknown(missing)
    if value is NONE or anchor is NONE:
        return Fact(False, f"{path if value is NONE else anchor_path}: none recorded")
    assert isinstance(value, datetime.date) and isinstance(anchor, datetime.date)
    held = window_holds(value, kind, amount, unit, direction, anchor)
    return Fact(held, f"{path} {value.isoformat()} is {'' if held else 'not '}{text} "
                      f"{anchor_path or 'the date'} {anchor.isoformat()}")


def quantify(kind: str, items: Sequence[T] | Absent | None, path: str,
             test: Callable[[T, str], Fact]) -> Fact:
    """`any(list where c)` and `all(list where c)`; an empty list has no item (any is false)."""
    if items is None:
        return _unknown((path,))
    if items is NONE:
        items = ()
    assert not isinstance(items, Absent)
    facts = [test(item, f"{path}[{index}]") for index, item in enumerate(items)]
    if kind == "any":
        result = any_of(*facts) if facts else Fact(False, "")
        if result.value is False:
            return Fact(False, f"no item of {path} matches ({len(facts)} recorded)")
        if result.value is True:
            first = next(f for f in facts if f.value is True)
            return Fact(True, first.reason)
        return Fact(None, result.reason, result.missing)
    result = all_of(*facts) if facts else Fact(True, "")
    if result.value is True:
        return Fact(True, f"every item of {path} matches ({len(facts)} recorded)")
    return Fact(result.value, result.reason, result.missing)


def count(op: str, number: int, items: Sequence[T] | Absent | None, path: str,
          test: Callable[[T, str], Fact]) -> Fact:
    """`count(list where c) op n`: unknown items make the count a range, compared soundly."""
    if items is None:
        return _unknown((path,))
    if items is NONE:
        items = ()
    assert not isinstance(items, Absent)
    facts = [test(item, f"{path}[{index}]") for index, item in enumerate(items)]
    low = sum(1 for f in facts if f.value is True)
    unknown = [f for f in facts if f.value is None]
    high = low + len(unknown)
    verdict = count_verdict(op, number, low, high)
    counted = f"{low}" if low == high else f"{low} to {high}"
    reason = f"{counted} of {len(facts)} {path} match, needs {_SHOWN[op]} {number}"
    if verdict is not None:
        return Fact(verdict, reason)
    return Fact(None, f"{reason}: {_join(unknown)}", _union(unknown))


def count_verdict(op: str, number: int, low: int, high: int) -> bool | None:
    """`count op number` for a count known to lie in [low, high]: None unless every count in
    the range gives the same answer."""
    outcomes = {_holds(n, op, number) for n in range(low, high + 1)}
    return outcomes.pop() if len(outcomes) == 1 else None


# ---- reading records -----------------------------------------------------------------

_TITER = re.compile(r"1:([1-9][0-9]{0,8})")
_LIMIT = Decimal(10) ** 15


def _kind(raw: object) -> str:
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "true/false"
    if isinstance(raw, (int, float, Decimal)):
        return "a number"
    if isinstance(raw, str):
        return "text"
    if isinstance(raw, list):
        return "a list"
    if isinstance(raw, dict):
        return "an object"
    return type(raw).__name__


def read_bool(raw: object, path: str, problems: list[Problem]) -> bool | None:
    if isinstance(raw, bool):
        return raw
    problems.append(Problem(path, f"expected true or false, got {_kind(raw)}"))
    return None


def read_decimal(raw: object, path: str, problems: list[Problem]) -> Decimal | None:
    """JSON numbers as exact decimals: 5.9 is 5.9, not its nearest binary float. Records read
    by crit hold Decimals parsed from the JSON text; a float from Python code is read from its
    shortest repr."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float, Decimal)):
        problems.append(Problem(path, f"expected a number, got {_kind(raw)}"))
        return None
    if not (raw.is_finite() if isinstance(raw, Decimal) else math.isfinite(raw)):
        problems.append(Problem(path, "expected a finite number"))
        return None
    try:
        value = Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw)
    except (InvalidOperation, ValueError):
        problems.append(Problem(path, "expected a number"))
        return None
    if abs(value) >= _LIMIT:
        problems.append(Problem(path, f"{raw!r} is out of range"))
        return None
    return value


def read_integer(raw: object, path: str, problems: list[Problem]) -> int | None:
    if isinstance(raw, float | Decimal) and _whole(raw):
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int):
        problems.append(Problem(path, f"expected a whole number, got {_kind(raw)}"))
        return None
    if abs(raw) >= _LIMIT:
        problems.append(Problem(path, f"{raw!r} is out of range"))
        return None
    return raw


def _whole(raw: float | Decimal) -> bool:
    if isinstance(raw, Decimal):
        return raw.is_finite() and abs(raw) < _LIMIT and raw == raw.to_integral_value()
    return math.isfinite(raw) and raw == int(raw)


def read_text(raw: object, path: str, problems: list[Problem]) -> str | None:
    if isinstance(raw, str):
        return raw
    problems.append(Problem(path, f"expected text, got {_kind(raw)}"))
    return None


def read_date(raw: object, path: str, problems: list[Problem]) -> datetime.date | None:
    if not isinstance(raw, str):
        problems.append(Problem(path, f"expected a date (YYYY-MM-DD), got {_kind(raw)}"))
        return None
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", raw):
        problems.append(Problem(path, f"{raw!r} is not a date; write YYYY-MM-DD"))
        return None
    try:
        return datetime.date.fromisoformat(raw)
    except ValueError:
        problems.append(Problem(path, f"{raw!r} is not a real date"))
        return None


def read_titer(raw: object, path: str, problems: list[Problem]) -> int | None:
    """`"1:160"` is read as its dilution, 160."""
    match = _TITER.fullmatch(raw) if isinstance(raw, str) else None
    if match is None:
        problems.append(Problem(path, f"expected a titer such as \"1:160\", got {_shown(raw)}"))
        return None
    return int(match.group(1))


def read_enum(raw: object, path: str, problems: list[Problem], members: Sequence[str]) -> str | None:
    if isinstance(raw, str) and raw in members:
        return raw
    problems.append(Problem(path, _not_member(raw, members)))
    return None


def read_set(raw: object, path: str, problems: list[Problem],
             members: Sequence[str]) -> frozenset[str] | None:
    if not isinstance(raw, list):
        problems.append(Problem(path, f"expected a list of {', '.join(members)}, got {_kind(raw)}"))
        return None
    out: set[str] = set()
    ok = True
    for index, item in enumerate(raw):
        value = read_enum(item, f"{path}[{index}]", problems, members)
        if value is None:
            ok = False
        else:
            out.add(value)
    return frozenset(out) if ok else None


def read_quantity(raw: object, path: str, problems: list[Problem], unit: str,
                  factors: Mapping[str, Exact]) -> Exact | None:
    """A number in `unit`, or `{"value": n, "unit": u}` in an accepted unit, converted exactly."""
    if isinstance(raw, dict):
        return _read_measured(raw, path, problems, unit, factors, ("value",))[0]
    return read_decimal(raw, path, problems)


def read_lab(raw: object, path: str, problems: list[Problem], unit: str,
             factors: Mapping[str, Exact]) -> Lab | None:
    """`{"value": n, "uln": n, "unit": u}`: the value and its laboratory's upper limit."""
    if not isinstance(raw, dict):
        problems.append(Problem(path, f"expected {{\"value\": …, \"uln\": …}}, got {_kind(raw)}"))
        return None
    value, uln = _read_measured(raw, path, problems, unit, factors, ("value", "uln"))
    if value is None or uln is None:
        return None
    if uln <= 0:
        problems.append(Problem(f"{path}.uln", "the upper limit of normal must be positive"))
        return None
    return Lab(value, uln)


def _read_measured(raw: dict[Any, Any], path: str, problems: list[Problem], unit: str,
                   factors: Mapping[str, Exact], keys: tuple[str, ...]
                   ) -> tuple[Exact | None, Exact | None]:
    before = len(problems)
    for key in sorted(set(raw) - {*keys, "unit"}, key=str):
        problems.append(Problem(f"{path}.{key}", "unknown key"))
    given = raw.get("unit", unit)
    factor: Exact = Decimal(1)
    if given != unit:
        if not isinstance(given, str) or given not in factors:
            accepted = ", ".join([unit, *factors])
            problems.append(Problem(f"{path}.unit", f"unknown unit {_shown(given)}; use {accepted}"))
        else:
            factor = factors[given]
    values: list[Exact | None] = []
    for key in keys:
        if key not in raw:
            problems.append(Problem(f"{path}.{key}", "missing"))
            values.append(None)
            continue
        number = read_decimal(raw[key], f"{path}.{key}", problems)
        values.append(None if number is None else scale(number, factor))
    if len(problems) > before:
        return None, None
    return values[0], (values[1] if len(values) > 1 else None)


def read_list(raw: object, path: str, problems: list[Problem],
              item: Callable[[object, str, list[Problem]], T | None]) -> list[T] | None:
    if not isinstance(raw, list):
        problems.append(Problem(path, f"expected a list, got {_kind(raw)}"))
        return None
    out: list[T] = []
    ok = True
    for index, entry in enumerate(raw):
        value = item(entry, f"{path}[{index}]", problems)
        if value is None:
            ok = False
        else:
            out.append(value)
    return out if ok else None


def get(record: Mapping[str, object], key: str, path: str, problems: list[Problem],
        read: Callable[[object, str, list[Problem]], T | None], optional: bool) -> T | Absent | None:
    """A field's value: None when absent (missing), NONE when an optional field is null."""
    if key not in record:
        return None
    raw = record[key]
    if raw is None:
        return NONE if optional else None
    return read(raw, path, problems)


def check_keys(record: object, path: str, known: Sequence[str], problems: list[Problem]) -> bool:
    """An object with no unknown keys; the key `id` is always allowed, for the record's id."""
    if not isinstance(record, dict):
        problems.append(Problem(path or "record", f"expected an object, got {_kind(record)}"))
        return False
    for key in sorted(record, key=str):
        if key == "id" and not path:
            continue
        if not isinstance(key, str) or key not in known:
            where = f"{path}.{key}" if path else str(key)
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(Problem(where, f"unknown field{hint}"))
    return True


# Fast readers: the common, valid case inline; anything else goes to the reader above, which
# reports the problem. Each returns exactly what the reader it falls back to would.

_BIG = 10 ** 15  # _LIMIT as an int
_BIG_FLOAT = 1e15
_MEMO_LIMIT = 65536
_DATE_MEMO: dict[str, datetime.date] = {}
_TITER_MEMO: dict[str, int] = {}


def read_decimal_fast(raw: object, path: str, problems: list[Problem]) -> Decimal | None:
    kind = type(raw)
    if kind is int:
        assert isinstance(raw, int)
        if -_BIG < raw < _BIG:
            return Decimal(raw)
    elif kind is Decimal:
        assert isinstance(raw, Decimal)
        if raw.is_finite() and -_LIMIT < raw < _LIMIT:
            return raw
    elif kind is float:
        assert isinstance(raw, float)
        if -_BIG_FLOAT < raw < _BIG_FLOAT:  # false for nan and infinities
            return Decimal(repr(raw))
    return read_decimal(raw, path, problems)


def read_quantity_fast(raw: object, path: str, problems: list[Problem], unit: str,
                       factors: Mapping[str, Exact]) -> Exact | None:
    if type(raw) is dict:
        value = _measured_fast(raw, unit, factors, False)
        if value is not None:
            return value[0]
        return read_quantity(raw, path, problems, unit, factors)
    return read_decimal_fast(raw, path, problems)


def read_lab_fast(raw: object, path: str, problems: list[Problem], unit: str,
                  factors: Mapping[str, Exact]) -> Lab | None:
    if type(raw) is dict:
        value = _measured_fast(raw, unit, factors, True)
        if value is not None and value[1] > 0:
            return Lab(value[0], value[1])
    return read_lab(raw, path, problems, unit, factors)


def _measured_fast(raw: dict[Any, Any], unit: str, factors: Mapping[str, Exact],
                   lab: bool) -> tuple[Exact, Exact] | None:
    """`{"value": n[, "uln": n][, "unit": u]}` with nothing amiss, converted; else None."""
    size = 2 if lab else 1
    given = raw.get("unit", unit)
    if "unit" in raw:
        size += 1
    if len(raw) != size:
        return None
    factor = None
    if given != unit:
        factor = factors.get(given) if type(given) is str else None
        if factor is None:
            return None
    value = _number_fast(raw.get("value"))
    if value is None:
        return None
    uln = value
    if lab:
        found = _number_fast(raw.get("uln"))
        if found is None:
            return None
        uln = found
    if factor is not None:
        return scale(value, factor), scale(uln, factor)
    return value, uln


def _number_fast(raw: object) -> Decimal | None:
    kind = type(raw)
    if kind is Decimal:
        assert isinstance(raw, Decimal)
        return raw if raw.is_finite() and -_LIMIT < raw < _LIMIT else None
    if kind is int:
        assert isinstance(raw, int)
        return Decimal(raw) if -_BIG < raw < _BIG else None
    if kind is float:
        assert isinstance(raw, float)
        return Decimal(repr(raw)) if -_BIG_FLOAT < raw < _BIG_FLOAT else None
    return None


def read_date_fast(raw: object, path: str, problems: list[Problem]) -> datetime.date | None:
    if type(raw) is str:
        assert isinstance(raw, str)
        day = _DATE_MEMO.get(raw)
        if day is None:
            day = read_date(raw, path, problems)
            if day is not None and len(_DATE_MEMO) < _MEMO_LIMIT:
                _DATE_MEMO[raw] = day
        return day
    return read_date(raw, path, problems)


def read_titer_fast(raw: object, path: str, problems: list[Problem]) -> int | None:
    if type(raw) is str:
        assert isinstance(raw, str)
        dilution = _TITER_MEMO.get(raw)
        if dilution is None:
            dilution = read_titer(raw, path, problems)
            if dilution is not None and len(_TITER_MEMO) < _MEMO_LIMIT:
                _TITER_MEMO[raw] = dilution
        return dilution
    return read_titer(raw, path, problems)


def read_set_fast(raw: object, path: str, problems: list[Problem], members: Sequence[str],
                  member_set: frozenset[str]) -> frozenset[str] | None:
    if type(raw) is list:
        assert isinstance(raw, list)
        for item in raw:
            if type(item) is not str or item not in member_set:
                break
        else:
            return frozenset(raw)
    return read_set(raw, path, problems, members)


def _shown(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


def _not_member(raw: object, members: Sequence[str]) -> str:
    if isinstance(raw, str):
        close = difflib.get_close_matches(raw, members, n=1)
        if close:
            return f"{_shown(raw)} is not one of {', '.join(members)}; did you mean '{close[0]}'?"
        return f"{_shown(raw)} is not one of {', '.join(members)}"
    return f"expected one of {', '.join(members)}, got {_kind(raw)}"


def screen(criteria: Sequence[CriterionInfo], facts: Mapping[str, Fact],
           judgments: frozenset[str]) -> Screening:
    """The decision: ineligible on any failed inclusion or met exclusion; eligible only when
    every inclusion is met (or not applicable) and every exclusion is not met (or not applicable)."""
    results: list[CriterionResult] = []
    blocking: list[Fact] = []
    decided_no = False
    for info in criteria:
        fact = facts[info.id]
        result = outcome(fact)
        results.append(CriterionResult(info.id, info.title, info.section, result, fact.reason,
                                       fact.missing if result is Outcome.UNKNOWN else ()))
        if info.parent is not None:
            continue
        if result is Outcome.UNKNOWN:
            blocking.append(fact)
        elif result is (Outcome.NOT_MET if info.section == "inclusion" else Outcome.MET):
            decided_no = True
    if decided_no:
        return Screening(Decision.INELIGIBLE, tuple(results), (), ())
    if blocking:
        paths = _union(blocking)
        missing = tuple(p for p in paths if _field_of(p) not in judgments)
        pending = tuple(p for p in paths if _field_of(p) in judgments)
        return Screening(Decision.NEEDS_REVIEW, tuple(results), missing, pending)
    return Screening(Decision.ELIGIBLE, tuple(results), (), ())


# ---- the fast path: outcomes without reasons ------------------------------------------
#
# decide() and assess() work out the same three-valued outcomes as the facts above, without
# writing reasons. A condition's value is True, False, or, when unknown, the tuple of the
# paths whose absence leaves it unknown: sorted, without repeats, the `missing` of the Fact
# the functions above would give. A criterion or `when` line may also be NA, not applicable.


class NotApplicable(enum.Enum):
    NA = "not applicable"


NA = NotApplicable.NA


class Unsure(tuple[str, ...]):
    """An unknown value (its missing paths) that may also turn out not applicable: a `when`
    whose condition is unknown. `requires at least` must not count it as a part that applies."""

    __slots__ = ()


def settle(unknown: tuple[str, ...], sure: bool) -> tuple[str, ...]:
    """An unknown combination: surely applicable if `sure`, else perhaps not (Unsure)."""
    if sure:
        return unknown if type(unknown) is tuple else tuple(unknown)
    return unknown if type(unknown) is Unsure else Unsure(unknown)


Tri = bool | tuple[str, ...]
TriNA = bool | tuple[str, ...] | NotApplicable


class Unset(enum.Enum):
    """A definition the fast path has not needed yet."""

    UNSET = "unset"


UNSET = Unset.UNSET


def union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    """The paths missing from two unknowns, as `_union` gives them."""
    if a == b or not b:
        return a
    if not a:
        return b
    return tuple(sorted({*a, *b}))


def all3(values: Iterable[TriNA]) -> TriNA:
    """`all_of` on values."""
    applicable = sure = False
    unknown: tuple[str, ...] | None = None
    for value in values:
        if value is False:
            return False
        if value is NA:
            continue
        applicable = True
        if value is True:
            sure = True
        else:
            sure = sure or type(value) is not Unsure
            unknown = value if unknown is None else union(unknown, value)
    if not applicable:
        return NA
    return True if unknown is None else settle(unknown, sure)


def any3(values: Iterable[TriNA]) -> TriNA:
    """`any_of` on values."""
    applicable = sure = False
    unknown: tuple[str, ...] | None = None
    for value in values:
        if value is True:
            return True
        if value is NA:
            continue
        applicable = True
        if value is False:
            sure = True
        else:
            sure = sure or type(value) is not Unsure
            unknown = value if unknown is None else union(unknown, value)
    if not applicable:
        return NA
    return False if unknown is None else settle(unknown, sure)


def at_least3(count: int, values: Iterable[TriNA]) -> TriNA:
    """`at_least` on values."""
    applicable = sure = False
    true = unknowns = 0
    unknown: tuple[str, ...] = ()
    for value in values:
        if value is NA:
            continue
        applicable = True
        if value is True:
            true += 1
            sure = True
        elif value is False:
            sure = True
        else:
            unknowns += 1
            sure = sure or type(value) is not Unsure
            unknown = union(unknown, value)
    if not applicable:
        return NA
    if true >= count:
        return True
    if true + unknowns < count and sure:
        return False
    return settle(unknown, sure)


def count3(count: int, values: Iterable[Tri]) -> Tri:
    """`at least N of (…)` on conditions, which always apply."""
    result = at_least3(count, values)
    assert result is not NA
    return result


def when3(condition: TriNA, body: TriNA) -> TriNA:
    """`when` on values."""
    if condition is False:
        return NA
    if condition is True or body is NA:
        return body
    missing = () if condition is NA else condition
    return Unsure(missing if body is True or body is False else union(missing, body))


def between3(value: Any, low: Any, high: Any, path: str, low_path: str, high_path: str) -> Tri:
    """`between` on values."""
    if isinstance(value, Lab):
        value = value.value
    if value is None:
        return _missing((value, path), (low, low_path), (high, high_path))
    if value is NONE or low is NONE or high is NONE:
        return False
    above = None if low is None else bool(low <= value)
    below = None if high is None else bool(value <= high)
    if above is False or below is False:
        return False
    if above is None or below is None:
        return _missing((low, low_path), (high, high_path))
    return True


def window3(value: datetime.date | Absent | None, kind: str, amount: int, unit: str,
            direction: str, anchor: datetime.date | Absent | None, path: str,
            anchor_path: str) -> Tri:
    """`window` on values."""
    if value is None or anchor is None:
        missing = _missing((value, path), (anchor, anchor_path))
        if missing:
            return missing
    if value is NONE or anchor is NONE:
        return False
    assert isinstance(value, datetime.date) and isinstance(anchor, datetime.date)
    return window_holds(value, kind, amount, unit, direction, anchor)


class Assessment(NamedTuple):
    """What evaluate() finds, without the reasons: the decision, every criterion's outcome
    (in the order of CRITERIA), and the missing facts and pending judgments."""

    decision: Decision
    outcomes: tuple[Outcome, ...]
    missing: tuple[str, ...]
    pending_judgments: tuple[str, ...]


def assessment(outcomes: tuple[Outcome, ...], refused: bool, unknown: tuple[str, ...] | None,
               judgments: frozenset[str]) -> Assessment:
    """The decision as `screen` makes it, from the top-level values: `refused` if an inclusion
    is not met or an exclusion is met; `unknown`, the missing paths, if any is unknown."""
    if refused:
        return Assessment(Decision.INELIGIBLE, outcomes, (), ())
    if unknown is not None:
        missing = tuple(p for p in unknown if _field_of(p) not in judgments)
        pending = tuple(p for p in unknown if _field_of(p) in judgments)
        return Assessment(Decision.NEEDS_REVIEW, outcomes, missing, pending)
    return Assessment(Decision.ELIGIBLE, outcomes, (), ())


class DeferredScreening(Screening):
    """A Screening whose per-criterion results (reasons and missing facts) are worked out when
    first read. The decision, outcomes, missing facts and pending judgments are known at once,
    so screening many patients does not pay for reasons nobody reads. It equals, pickles and
    prints as the Screening that `explain()` returns."""

    __slots__ = ("_assessment", "_explain", "_explained", "_ids")
    _assessment: Assessment
    _explain: Callable[[], Screening]
    _explained: Screening | None
    _ids: tuple[str, ...]

    def __init__(self, assessed: Assessment, ids: tuple[str, ...],
                 explain: Callable[[], Screening]) -> None:
        object.__setattr__(self, "decision", assessed.decision)
        object.__setattr__(self, "missing", assessed.missing)
        object.__setattr__(self, "pending_judgments", assessed.pending_judgments)
        object.__setattr__(self, "_assessment", assessed)
        object.__setattr__(self, "_ids", ids)
        object.__setattr__(self, "_explain", explain)
        object.__setattr__(self, "_explained", None)

    @property
    def criteria(self) -> tuple[CriterionResult, ...]:
        return self.explain().criteria

    @property
    def assessment(self) -> Assessment:
        return self._assessment

    def explain(self) -> Screening:
        explained = self._explained
        if explained is None:
            explained = self._explain()
            object.__setattr__(self, "_explained", explained)
        return explained

    def outcome(self, criterion_id: str) -> Outcome:
        try:
            return self._assessment.outcomes[self._ids.index(criterion_id)]
        except ValueError:
            raise KeyError(criterion_id) from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Screening):
            return NotImplemented
        return self.explain() == (other.explain() if isinstance(other, DeferredScreening) else other)

    def __hash__(self) -> int:
        return hash(self.explain())

    def __repr__(self) -> str:
        return repr(self.explain())

    def __reduce__(self) -> tuple[Any, ...]:
        return (_plain, (self.explain(),))


def _plain(screening: Screening) -> Screening:
    return screening


def _field_of(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]
# --- end runtime ---
