"""The evaluators' runtime: three-valued logic, outcomes, dates, reasons, reading records.

Standard library only. Every generated evaluator embeds the block between the markers
verbatim (generated code never imports crit); a test checks the embedded copies match.
The generated code decides with the one three-valued logic below, and `explain` gives the
reasons with the same functions. The reference interpreter (crit.interpret) shares only the
readers, types, `shift` and `show`: it decides with its own code, as an oracle must.
"""

from __future__ import annotations

# --- begin runtime ---
import calendar
import datetime
import difflib
import enum
import math
import operator
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
    # unknown, but only between these two: enough to decide an inclusion that is met or not
    # applicable, or an exclusion that is not met or not applicable
    MET_OR_NOT_APPLICABLE = "met or not applicable"
    NOT_MET_OR_NOT_APPLICABLE = "not met or not applicable"


class Decision(enum.StrEnum):
    ELIGIBLE = "eligible"
    INELIGIBLE = "ineligible"
    NEEDS_REVIEW = "needs review"


class Lab(NamedTuple):
    """A laboratory value with the upper limit of normal of the lab that measured it."""

    value: Exact
    uln: Exact


class Period(NamedTuple):
    """An interval: a start, and an end (a date), or `ongoing`; `end` None and not `ongoing`
    is an end not recorded (unknown: it may have ended on any day from the start, or not yet)."""

    start: datetime.date
    end: datetime.date | None
    ongoing: bool


class Dated(NamedTuple):
    """A result with the date it was measured: usable only when measured in its field's window."""

    value: Any
    measured: datetime.date


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



# ---- numbers, dates and wording ------------------------------------------------------

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
    if isinstance(value, Period):
        if value.ongoing or value.end is None:
            return f"{value.start.isoformat()}, {'ongoing' if value.ongoing else 'end not recorded'}"
        return f"{value.start.isoformat()} to {value.end.isoformat()}"
    if isinstance(value, Dated):
        return f"{show(value.value, unit)} (measured {value.measured.isoformat()})"
    if isinstance(value, list):
        return f"{len(value)} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, frozenset):
        return "{" + ", ".join(sorted(value)) + "}" if value else "none"
    return f"{value} {unit}" if unit and isinstance(value, int) else str(value)



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
        if kind == "within":
            return edge <= value <= anchor
        if kind == "less_than":
            return edge < value <= anchor
        return value <= edge if kind == "at_least" else value < edge
    if kind == "within":
        return anchor <= value <= edge
    if kind == "less_than":
        return anchor <= value < edge
    return value >= edge if kind == "at_least" else value > edge



# ---- three-valued logic -----------------------------------------------------------------
#
# The one logic every evaluator decides with. A condition's value is True, False, or, when
# unknown, the tuple of the paths whose absence leaves it unknown (sorted, without repeats).
# A criterion or a `when` line may also be NA (not applicable); an unknown one says, by its
# type, which outcomes its completions can still give:
#
#   tuple        met or not met           MetOrNA      met or not applicable
#   Unsure       met, not met or n/a      NotMetOrNA   not met or not applicable
#
# Each combination works out the outcomes its parts can give together, taking the parts as
# independent: exact when they are (no missing fact behind two of them), and otherwise an
# over-estimate, never missing an outcome some completion gives. So an exclusion that can
# only be not met or not applicable decides as surely as one that is not met.


class NotApplicable(enum.Enum):
    NA = "not applicable"


NA = NotApplicable.NA


class Unsure(tuple[str, ...]):
    """Unknown (its missing paths): met, not met, or not applicable: a `when` whose condition
    is unknown, over a body that is itself unknown."""

    __slots__ = ()


class MetOrNA(tuple[str, ...]):
    """Unknown (its missing paths), but never not met: met, or not applicable."""

    __slots__ = ()


class NotMetOrNA(tuple[str, ...]):
    """Unknown (its missing paths), but never met: not met, or not applicable."""

    __slots__ = ()


Tri = bool | tuple[str, ...]
TriNA = bool | tuple[str, ...] | NotApplicable


class Unset(enum.Enum):
    """A definition not worked out yet for this patient."""

    UNSET = "unset"


UNSET = Unset.UNSET


def union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    """The paths missing from two unknowns, sorted, without repeats."""
    if a == b or not b:
        return a
    if not a:
        return b
    return tuple(sorted({*a, *b}))


def _possible(met: bool, not_met: bool, na: bool, unknown: tuple[str, ...]) -> TriNA:
    """The value whose completions can give the outcomes flagged (at least one)."""
    if met:
        if not_met:
            return Unsure(unknown) if na else tuple(unknown)
        return MetOrNA(unknown) if na else True
    if not_met:
        return NotMetOrNA(unknown) if na else False
    return NA


def all3(values: Iterable[TriNA]) -> TriNA:
    """Kleene `and` over the parts that apply; NA when none applies. Met is possible when some
    part can be met (no part is surely not met), not met when some part can be, and not
    applicable when every part can be."""
    met = not_met = False
    na = True
    unknown: tuple[str, ...] | None = None
    for value in values:
        if value is False:
            return False
        if value is True:
            met = True
            na = False
        elif value is not NA:
            kind = type(value)
            if kind is tuple:
                met = not_met = True
                na = False
            elif kind is Unsure:
                met = not_met = True
            elif kind is MetOrNA:
                met = True
            else:
                not_met = True
            unknown = value if unknown is None else union(unknown, value)
    if unknown is None:
        return True if met else NA
    return _possible(met, not_met, na, unknown)


def any3(values: Iterable[TriNA]) -> TriNA:
    """Kleene `or` over the parts that apply; NA when none applies (the dual of `all3`)."""
    met = not_met = False
    na = True
    unknown: tuple[str, ...] | None = None
    for value in values:
        if value is True:
            return True
        if value is False:
            not_met = True
            na = False
        elif value is not NA:
            kind = type(value)
            if kind is tuple:
                met = not_met = True
                na = False
            elif kind is Unsure:
                met = not_met = True
            elif kind is MetOrNA:
                met = True
            else:
                not_met = True
            unknown = value if unknown is None else union(unknown, value)
    if unknown is None:
        return False if not_met else NA
    return _possible(met, not_met, na, unknown)


def at_least3(count: int, values: Iterable[TriNA]) -> TriNA:
    """True once `count` parts are true; not met once too few can still be, and only if some
    part can apply with too few met; not applicable only if every part can be."""
    true = maybe = 0
    can_fail = False  # some part can be not met
    na = True
    unknown: tuple[str, ...] | None = None
    for value in values:
        if value is NA:
            continue
        if value is True:
            true += 1
            na = False
        elif value is False:
            can_fail = True
            na = False
        else:
            kind = type(value)
            if kind is tuple:
                maybe += 1
                can_fail = True
                na = False
            elif kind is Unsure:
                maybe += 1
                can_fail = True
            elif kind is MetOrNA:
                maybe += 1
            else:
                can_fail = True
            unknown = value if unknown is None else union(unknown, value)
    if true >= count:
        return True
    met = true + maybe >= count
    # too few met, with some part applying: a part not met, or one met (of too few to count)
    not_met = can_fail or true > 0 or (maybe > 0 and count > 1)
    if unknown is None:
        return False if not_met else NA
    return _possible(met, not_met, na, unknown)


def count3(count: int, values: Iterable[Tri]) -> Tri:
    """`at least N of (…)` on conditions, which always apply."""
    result = at_least3(count, values)
    assert result is not NA
    return result


def and3(values: Iterable[Tri]) -> Tri:
    """Kleene `and` of conditions, which always apply: `all3` without NA or Unsure."""
    unknown: tuple[str, ...] | None = None
    for value in values:
        if value is False:
            return False
        if value is not True:
            unknown = value if unknown is None else union(unknown, value)
    return True if unknown is None else unknown


def both(gate: Tri, condition: Tri) -> Tri:
    """A sub-criterion's gate: its parent's gate and its own `when` condition (`and3` of two)."""
    if gate is False or condition is False:
        return False
    if gate is True:
        return condition
    if condition is True:
        return gate
    return union(gate, condition)


def or3(values: Iterable[Tri]) -> Tri:
    """Kleene `or` of conditions, which always apply: `any3` without NA or Unsure."""
    unknown: tuple[str, ...] | None = None
    for value in values:
        if value is True:
            return True
        if value is not False:
            unknown = value if unknown is None else union(unknown, value)
    return False if unknown is None else unknown


def not3(value: Tri) -> Tri:
    """Kleene `not`: unknown stays unknown."""
    if value is True:
        return False
    if value is False:
        return True
    return value


def when3(condition: TriNA, body: TriNA) -> TriNA:
    """`when C: X`: NA if C is false; X if C is true; else unknown between X's outcomes and
    not applicable. X met with C unknown is still unknown: "met or not applicable" decides an
    inclusion, but an exclusion that is met excludes and one not applicable does not."""
    if condition is False:
        return NA
    if condition is True or body is NA:
        return body
    missing = () if condition is NA else condition
    if body is True:
        return MetOrNA(missing)
    if body is False:
        return NotMetOrNA(missing)
    kind = type(body)
    both_missing = union(missing, body)
    if kind is MetOrNA:
        return MetOrNA(both_missing)
    if kind is NotMetOrNA:
        return NotMetOrNA(both_missing)
    return Unsure(both_missing)


# ---- atoms: a condition on the patient's values -----------------------------------------
#
# A field's value is None when missing (unknown) and NONE when recorded as none; a condition
# on a value recorded as none is false (`is not` and `has` read it as no value, the empty set).

_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "=": operator.eq,
    "!=": operator.ne,
}


def _missing(*pairs: tuple[Any, str]) -> tuple[str, ...]:
    return tuple(sorted({path for value, path in pairs if value is None and path}))


def truth(value: bool | Absent | None, path: str) -> Tri:
    """A bool field or a recorded judgment used as a condition."""
    if value is None:
        return (path,)
    return value is True


def compare(left: Any, op: str, right: Any, path: str, right_path: str = "") -> Tri:
    """`left op right` for numbers, quantities, laboratory values, titers, dates, text and
    truth values; `right` is a literal unless `right_path` names its field."""
    if left is None or right is None:
        return _missing((left, path), (right, right_path))
    if left is NONE or right is NONE:
        return False
    if type(left) is Lab:
        left = left.value
    if type(right) is Lab:
        right = right.value
    return _OPERATORS[op](left, right)


def compare_uln(lab: Lab | Absent | None, op: str, multiple: Exact, path: str) -> Tri:
    """`lab op k × ULN`, against the patient's own laboratory's upper limit of normal."""
    if lab is None:
        return (path,)
    if lab is NONE:
        return False
    return _OPERATORS[op](lab.value, scale(lab.uln, multiple))


def between(value: Any, low: Any, high: Any, path: str, low_path: str = "", high_path: str = "") -> Tri:
    """Inclusive at both ends, and exactly `low ≤ value and value ≤ high` in Kleene logic:
    a value above a known upper bound is out of range even when the lower bound is missing."""
    if type(value) is Lab:
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


def member(value: str | Absent | None, kind: str, members: frozenset[str], path: str) -> Tri:
    """Enum tests: `is`, `is any of` (kind "is", "is_any") and `is not` ("is_not")."""
    if value is None:
        return (path,)
    if value is NONE:
        return kind == "is_not"
    return value not in members if kind == "is_not" else value in members


def has(value: frozenset[str] | Absent | None, kind: str, members: frozenset[str], path: str) -> Tri:
    """Set tests: `has`, `has any of` (kind "has", "has_any") and `has all of` ("has_all")."""
    if value is None:
        return (path,)
    if value is NONE:
        value = frozenset()
    if kind == "has_all":
        return members <= value
    return not members.isdisjoint(value)


def window(value: datetime.date | Absent | None, kind: str, amount: int, unit: str, direction: str,
           anchor: datetime.date | Absent | None, path: str, anchor_path: str = "") -> Tri:
    """`value within / at least N unit before / after anchor`: inclusive, from the anchor."""
    if value is None or anchor is None:
        return _missing((value, path), (anchor, anchor_path))
    if value is NONE or anchor is NONE:
        return False
    assert isinstance(value, datetime.date) and isinstance(anchor, datetime.date)
    return window_holds(value, kind, amount, unit, direction, anchor)


def none_recorded(value: Any, path: str) -> Tri:
    """`no X recorded`: true when the record says none, false when it holds a value."""
    if value is None:
        return (path,)
    return value is NONE


def fresh(value: Any, amount: int, unit: str, direction: str, anchor: datetime.date | Absent | None) -> Any:
    """A dated result's value if it was measured in its window (inclusive) from `anchor`; None
    (unknown, so the field counts as missing) if it was not, or if the anchor is not known."""
    if type(value) is not Dated:
        return value  # missing, or recorded as none
    if type(anchor) is not datetime.date or not window_holds(value.measured, "within", amount, unit, direction,
                                                             anchor):
        return None
    return value.value


def fresh_path(value: Any, anchor: Any, path: str, anchor_path: str) -> str:
    """The fact to collect when a dated result is unknown: its anchor date when that is missing,
    else the result itself (missing, or measured outside its window: a current one is needed)."""
    return anchor_path if type(value) is Dated and anchor is None else path


_FAR_END = datetime.date.max  # an ongoing interval's end: it has not ended


def _ends(period: Period) -> tuple[datetime.date, datetime.date]:
    """The earliest and latest the interval's end can be: an end not recorded lies anywhere
    from its start on (or it is ongoing)."""
    if period.ongoing:
        return _FAR_END, _FAR_END
    if period.end is None:
        return period.start, _FAR_END
    return period.end, period.end


def _on_period(period: Any, anchor: Any, path: str, anchor_path: str,
               held: Callable[[Period, datetime.date, datetime.date], bool]) -> Tri:
    """An interval test `held(period, end, anchor)`, which only ever grows or only shrinks as
    the end moves later: decided when the earliest and the latest possible end agree."""
    if period is None or anchor is None:
        return _missing((period, path), (anchor, anchor_path))
    if period is NONE or anchor is NONE:
        return False
    early, late = _ends(period)
    first = held(period, early, anchor)
    if first is held(period, late, anchor):
        return first
    return (f"{path}.end",)


def overlaps(period: Period | Absent | None, amount: int, unit: str, direction: str,
             anchor: datetime.date | Absent | None, path: str, anchor_path: str = "") -> Tri:
    """`interval overlaps N unit before/after anchor`: shares a day with the window (inclusive)."""
    edge = -amount if direction == "before" else amount

    def held(p: Period, end: datetime.date, day: datetime.date) -> bool:
        other = _safe_shift(day, edge, unit)
        low, high = (other, day) if edge < 0 else (day, other)
        return p.start <= high and end >= low

    return _on_period(period, anchor, path, anchor_path, held)


def ongoing_at(period: Period | Absent | None, anchor: datetime.date | Absent | None, path: str,
               anchor_path: str = "") -> Tri:
    """`interval ongoing at anchor`: begun on or before the date, and not ended before it."""
    return _on_period(period, anchor, path, anchor_path, lambda p, end, day: p.start <= day <= end)


def lasted(period: Period | Absent | None, kind: str, amount: int, unit: str,
           anchor: datetime.date | Absent | None, path: str, anchor_path: str = "") -> Tri:
    """`interval lasted at least/more than/less than/at most N unit by anchor`: its length from
    its start to its end, or to the anchor when that comes first (so an ongoing one, to the anchor)."""

    def held(p: Period, end: datetime.date, day: datetime.date) -> bool:
        last = min(end, day)
        edge = _safe_shift(p.start, amount, unit)
        if kind == "at_least":
            return edge <= last
        if kind == "more_than":
            return edge < last
        return last < edge if kind == "less_than" else last <= edge

    return _on_period(period, anchor, path, anchor_path, held)


ItemTest = Callable[[Any, str, Any, Any], Tri]  # (item, its path, patient, definitions) -> value


def any_item(items: Sequence[Any] | Absent | None, path: str, test: ItemTest | None = None,
             p: Any = None, m: Any = None) -> Tri:
    """`any(list where c)`: whether some item satisfies c (`test`); an empty list has none."""
    if items is None:
        return (path,)
    if items is NONE:
        return False
    assert not isinstance(items, Absent)
    if test is None:
        return len(items) > 0
    unknown: tuple[str, ...] | None = None
    for index, item in enumerate(items):
        value = test(item, f"{path}[{index}]", p, m)
        if value is True:
            return True
        if value is not False:
            unknown = value if unknown is None else union(unknown, value)
    return False if unknown is None else unknown


def all_item(items: Sequence[Any] | Absent | None, path: str, test: ItemTest | None = None,
             p: Any = None, m: Any = None) -> Tri:
    """`all(list where c)`: whether every item satisfies c; true of an empty list."""
    if items is None:
        return (path,)
    if items is NONE or test is None:
        return True
    assert not isinstance(items, Absent)
    unknown: tuple[str, ...] | None = None
    for index, item in enumerate(items):
        value = test(item, f"{path}[{index}]", p, m)
        if value is False:
            return False
        if value is not True:
            unknown = value if unknown is None else union(unknown, value)
    return True if unknown is None else unknown


def count_items(items: Sequence[Any] | Absent | None, op: str, number: int, path: str,
                test: ItemTest | None = None, p: Any = None, m: Any = None) -> Tri:
    """`count(list where c) op n`: with unknown items the count is a range, compared soundly."""
    if items is None:
        return (path,)
    seq: Sequence[Any] = () if items is NONE else items
    if test is None:
        return _OPERATORS[op](len(seq), number)
    low = high = 0
    unknown: tuple[str, ...] | None = None
    for index, item in enumerate(seq):
        value = test(item, f"{path}[{index}]", p, m)
        if value is True:
            low += 1
        elif value is not False:
            high += 1
            unknown = value if unknown is None else union(unknown, value)
    verdict = count_verdict(op, number, low, low + high)
    if verdict is None:
        assert unknown is not None
        return unknown
    return verdict


def count_different(items: Sequence[Any] | Absent | None, op: str, number: int, path: str, key: str,
                    members: int = 0, test: ItemTest | None = None, p: Any = None, m: Any = None) -> Tri:
    """`count(different key in list where c) op n`: how many different values of the item field
    `key` the items meeting c hold. An unknown item may or may not count, and an unknown key may
    repeat one already counted or be new (for an enum, at most `members` values in all): the
    count is a range, compared soundly."""
    if items is None:
        return (path,)
    seq: Sequence[Any] = () if items is NONE else items
    sure: set[Any] = set()
    maybe: set[Any] = set()
    sure_blank = blanks = 0  # items that count (surely, or perhaps) whose key is not known
    unknown: tuple[str, ...] | None = None
    for index, item in enumerate(seq):
        at = f"{path}[{index}]"
        found = getattr(item, key)
        if found is NONE:
            continue  # recorded as none: no value to count
        value = True if test is None else test(item, at, p, m)
        if value is False:
            continue
        if value is not True:
            unknown = value if unknown is None else union(unknown, value)
        if found is None:
            blanks += 1
            sure_blank += value is True
            unknown = union(unknown or (), (f"{at}.{key}",))
        elif value is True:
            sure.add(found)
        else:
            maybe.add(found)
    low = len(sure) or min(sure_blank, 1)
    high = len(sure | maybe) + blanks
    if members:
        high = min(high, members)
    verdict = count_verdict(op, number, low, high)
    if verdict is None:
        assert unknown is not None
        return unknown
    return verdict


def count_verdict(op: str, number: int, low: int, high: int) -> bool | None:
    """`count op number` for a count known to lie in [low, high]: None unless every count in
    the range gives the same answer."""
    holds = _OPERATORS[op]
    outcomes = {holds(n, number) for n in range(low, high + 1)}
    return outcomes.pop() if len(outcomes) == 1 else None


# ---- derived values: arithmetic and values chosen by condition -----------------------------
#
# A derived value is a number (exact: Decimal, Fraction or int), NONE (an operand recorded as
# none), unknown (the tuple of the paths whose absence leaves it unknown; the empty tuple when
# it divides by zero), or `Choices`: the numbers a value chosen by conditions not all known may
# take. A comparison is decided when every number it may take gives the same answer.


class Choices(NamedTuple):
    """The values a derived value may take (NONE among them, perhaps), and the paths missing
    from the conditions that left more than one branch open."""

    values: tuple[Any, ...]
    missing: tuple[str, ...]


Num = Any  # Exact | int | Absent | tuple[str, ...] | Choices


def num(value: Any, path: str) -> Num:
    """A field's value as an operand: unknown (its path) when missing, a lab's value."""
    if value is None:
        return (path,)
    return value.value if type(value) is Lab else value


def uln_of(lab: Lab | Absent | None, multiple: Exact, path: str) -> Num:
    """`k × ULN` as a value: k times the patient's own laboratory's upper limit of normal."""
    if lab is None:
        return (path,)
    if lab is NONE:
        return NONE
    return scale(lab.uln, multiple)


def _options(value: Num) -> tuple[tuple[Any, ...], tuple[str, ...]]:
    if type(value) is Choices:
        return value.values, value.missing
    return (value,), ()


def _exact(op: str, a: Any, b: Any) -> Any:
    """One operation on two numbers, exactly; None for a division by zero."""
    if a is NONE or b is NONE:
        return NONE
    x, y = Fraction(a), Fraction(b)
    if op == "+":
        return terminating(x + y)
    if op == "-":
        return terminating(x - y)
    if op == "×":
        return terminating(x * y)
    if y == 0:
        return None
    return terminating(x / y)


def arith(op: str, left: Num, right: Num) -> Num:
    """`left op right` (+, -, ×, ÷), exactly. Unknown if either side is, and (the empty tuple
    when nothing is missing) if it divides by zero; Choices if either side is."""
    if type(left) is tuple or type(right) is tuple:
        a = left if type(left) is tuple else _options(left)[1]
        b = right if type(right) is tuple else _options(right)[1]
        return union(a, b)
    lefts, missing_left = _options(left)
    rights, missing_right = _options(right)
    results: dict[Any, None] = {}
    for a in lefts:
        for b in rights:
            results[_exact(op, a, b)] = None
    missing = union(missing_left, missing_right)
    if None in results:
        return missing
    if type(left) is not Choices and type(right) is not Choices:
        return next(iter(results))
    return Choices(tuple(results), missing)


def convert(value: Num, factor: Exact) -> Num:
    """A value brought to another unit: times an exact factor."""
    return arith("×", value, factor)


def equivalent(dose: Num, agent: str | Absent | None, factors: Mapping[str, Exact], path: str) -> Num:
    """A dose converted by an equivalence table, by the agent it is of: unknown while the
    agent is, none if no agent is recorded."""
    if agent is None:
        return union(dose if type(dose) is tuple else _options(dose)[1], (path,))
    if agent is NONE:
        return dose if type(dose) is tuple else NONE
    return arith("×", dose, factors[agent])


def choose(branches: Sequence[tuple[Tri, Num]], otherwise: Num) -> Num:
    """The value of the first branch whose condition holds, else `otherwise`. While conditions
    are unknown, the values of every branch that may still apply (Choices)."""
    possible: list[Num] = []
    missing: tuple[str, ...] = ()
    for condition, value in branches:
        if condition is False:
            continue
        possible.append(value)
        if condition is True:
            break
        missing = union(missing, condition)
    else:
        possible.append(otherwise)
    if len(possible) == 1 and not missing:
        return possible[0]
    values: dict[Any, None] = {}
    unknown: tuple[str, ...] | None = None
    for value in possible:
        if type(value) is tuple:
            unknown = value if unknown is None else union(unknown, value)
            continue
        options, more = _options(value)
        missing = union(missing, more)
        values.update(dict.fromkeys(options))
    if unknown is not None:
        return union(missing, unknown)
    return Choices(tuple(values), missing)


def compare_num(left: Num, op: str, right: Num) -> Tri:
    """`left op right` on derived values: false when either is none; decided when every value
    the two may take gives the same answer, else unknown for want of what left them open."""
    if type(left) is tuple or type(right) is tuple:
        a = left if type(left) is tuple else _options(left)[1]
        b = right if type(right) is tuple else _options(right)[1]
        return union(a, b)
    lefts, missing_left = _options(left)
    rights, missing_right = _options(right)
    holds = _OPERATORS[op]
    outcomes = {False if a is NONE or b is NONE else bool(holds(a, b)) for a in lefts for b in rights}
    if len(outcomes) == 1:
        return outcomes.pop()
    return union(missing_left, missing_right)


# ---- the decision -----------------------------------------------------------------------

Criterion = Callable[[Any, Any, list[TriNA]], TriNA]  # (patient, definitions, values) -> value


def outcome_of(value: TriNA) -> Outcome:
    if value is True:
        return Outcome.MET
    if value is False:
        return Outcome.NOT_MET
    if value is NA:
        return Outcome.NOT_APPLICABLE
    kind = type(value)
    if kind is MetOrNA:
        return Outcome.MET_OR_NOT_APPLICABLE
    if kind is NotMetOrNA:
        return Outcome.NOT_MET_OR_NOT_APPLICABLE
    return Outcome.UNKNOWN


def refusable(value: TriNA, refuses: bool) -> bool:
    """Whether some completion of an unknown top-level value refuses the patient: every unknown
    does, but one that can only be not met or not applicable (for an exclusion, refused by
    True) or met or not applicable (for an inclusion)."""
    return type(value) is not (NotMetOrNA if refuses else MetOrNA)


def verdict(top: Sequence[tuple[Criterion, bool]], p: Any, m: Any, values: list[TriNA],
            stop: bool) -> tuple[bool, tuple[str, ...] | None]:
    """The top-level criteria in order, each with the value that refuses the patient (False
    for an inclusion, True for an exclusion): whether one refuses, and the paths missing from
    those unknown that might still refuse. With `stop`, returns at the first that refuses. `values` gets every
    criterion's value, nested ones included, by its index in CRITERIA."""
    refused = False
    unknown: tuple[str, ...] | None = None
    for criterion, refuses in top:
        value = criterion(p, m, values)
        if value is refuses:
            if stop:
                return True, None
            refused = True
        elif value is not NA and type(value) is not bool and refusable(value, refuses):
            unknown = value if unknown is None else union(unknown, value)
    return refused, unknown


def decision(refused: bool, unknown: tuple[str, ...] | None) -> Decision:
    if refused:
        return Decision.INELIGIBLE
    return Decision.ELIGIBLE if unknown is None else Decision.NEEDS_REVIEW


class Assessment(NamedTuple):
    """What evaluate() finds, without the reasons: the decision, every criterion's outcome
    (in the order of CRITERIA), and the missing facts and pending judgments."""

    decision: Decision
    outcomes: tuple[Outcome, ...]
    missing: tuple[str, ...]
    pending_judgments: tuple[str, ...]


def assessment(values: Iterable[TriNA], refused: bool, unknown: tuple[str, ...] | None,
               judgments: frozenset[str]) -> Assessment:
    """The decision from the top-level values (see `verdict`), with every outcome: ineligible
    if one refuses; else needs review if one is unknown, for want of `unknown`; else eligible."""
    outcomes = tuple(map(outcome_of, values))
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





# ---- reasons on demand ------------------------------------------------------------------
#
# Each generated module describes its criteria as data, and `explain` walks the description
# with a patient's values: it works out every node's value with the functions above, as the
# module's own code does, and writes why. The description's nodes are tuples, tag first:
#
#   values       ("p", attr, name) a patient field, ("it", attr, name) a field of the list
#                item being visited, ("k", value) a literal
#   conditions   ("truth", value, judgment)  ("const", bool)  ("define", attr)
#                ("compare", left, op, right, unit, right_text, titer)
#                ("uln", lab, op, multiple, unit, multiple_text)
#                ("between", value, low, high, unit, range_text, titer)
#                ("member" | "has", value, kind, members, members_text)
#                ("window", value, kind, amount, unit, direction, anchor, text)
#                ("none", value)  ("ongoing", value, anchor)
#                ("overlaps", value, amount, unit, direction, anchor, text)
#                ("lasted", value, kind, amount, unit, anchor, text)
#                ("different", items, op, n, key attr, members, key name, c or None)
#                ("pd", attr, name, amount, unit, direction, anchor attr, anchor name) a dated result
#                ("not", c)  ("and" | "or", (c, …))  ("at_least", n, (c, …))
#                ("any" | "all", items, c or None)  ("count", items, op, n, c or None)
#                ("num", left, op, right, unit, left_text, right_text, right is a literal), the
#                sides derived values (see `_derived`)
#   lines        a condition, or ("when", c, (line, …))
#   criteria     ("criterion", id, index in CRITERIA, gate c or None, combine, n, (line or criterion, …))
#   definitions  (attr, (condition, …)), in dependency order

Reasoned = tuple[TriNA, str]  # a value and why

_NEGATED = {">=": "<", "<=": ">", ">": "≤", "<": "≥", "=": "≠", "!=": "="}
_SHOWN = {">=": "≥", "<=": "≤", ">": ">", "<": "<", "=": "=", "!=": "≠"}


def _join(parts: Iterable[Reasoned]) -> str:
    """The parts' reasons in order, each once: two conditions on one missing fact (an interval's
    end tested twice) give one `missing: infection.end`, not two."""
    return "; ".join(dict.fromkeys(reason for _, reason in parts if reason))


def _unknown(paths: tuple[str, ...], judgment: bool = False) -> str:
    return "; ".join(f"pending judgment: {p}" if judgment else f"missing: {p}" for p in paths)


def _is_unknown(value: TriNA) -> bool:
    return value is not NA and type(value) is not bool


def _all(parts: Sequence[Reasoned]) -> Reasoned:
    value = all3(v for v, _ in parts)
    if value is NA:
        return NA, _join(parts)
    if value is False:
        return value, _join(f for f in parts if f[0] is False)
    if value is True:
        return value, _join(f for f in parts if f[0] is not NA)
    return value, _join(f for f in parts if _is_unknown(f[0]))


def _any(parts: Sequence[Reasoned]) -> Reasoned:
    value = any3(v for v, _ in parts)
    if value is NA:
        return NA, _join(parts)
    if value is True:
        return value, _join(f for f in parts if f[0] is True)
    if value is False:
        return value, _join(f for f in parts if f[0] is not NA)
    return value, _join(f for f in parts if _is_unknown(f[0]))


def _at_least(count: int, parts: Sequence[Reasoned]) -> Reasoned:
    value = at_least3(count, (v for v, _ in parts))
    if value is NA:
        return NA, _join(parts)
    true = [f for f in parts if f[0] is True]
    unknown = [f for f in parts if _is_unknown(f[0])]
    summary = f"{len(true)} of {sum(1 for f in parts if f[0] is not NA)} met, needs {count}"
    if value is True:
        return value, f"{summary}: {_join(true)}"
    if value is False:
        return value, summary
    return value, f"{summary}, {len(unknown)} unknown: {_join(unknown)}"


def _alike(value: Tri, parts: Sequence[Reasoned]) -> list[Reasoned]:
    """The conditions that gave an `and` or `or` its value: those of that value, or the unknown."""
    if type(value) is bool:
        return [f for f in parts if f[0] is value]
    return [f for f in parts if _is_unknown(f[0])]


def _when(condition: Reasoned, body: Reasoned) -> Reasoned:
    value = when3(condition[0], body[0])
    if condition[0] is False:
        return value, f"not applicable: {condition[1]}"
    if condition[0] is True or body[0] is NA:
        return value, body[1]
    return value, _join((condition, body))


class _Scope(NamedTuple):
    """What a condition can see: the patient, the definitions, the list item being visited."""

    p: Any
    definitions: dict[str, Reasoned]
    it: Any = None
    at: str = ""


def _value(ref: tuple[Any, ...], scope: _Scope) -> tuple[Any, str]:
    """A value and its path ('' for a literal)."""
    if ref[0] == "k":
        return ref[1], ""
    if ref[0] == "p":
        return getattr(scope.p, ref[1]), ref[2]
    if ref[0] == "pd":  # a dated result: its value if measured in its window
        _, attr, name, amount, unit, direction, anchor, anchor_name = ref
        value, day = getattr(scope.p, attr), getattr(scope.p, anchor)
        return fresh(value, amount, unit, direction, day), fresh_path(value, day, name, anchor_name)
    return getattr(scope.it, ref[1]), f"{scope.at}.{ref[2]}"


def _display(value: Any, unit: str, titer: bool) -> str:
    return f"1:{value}" if titer and value is not NONE else show(value, unit)


def _condition(node: tuple[Any, ...], scope: _Scope) -> Reasoned:
    tag = node[0]
    if tag == "truth":
        value, path = _value(node[1], scope)
        result = truth(value, path)
        if type(result) is tuple:
            return result, _unknown(result, node[2])
        return result, f"{path}: none recorded" if value is NONE else f"{path}: {'yes' if value else 'no'}"
    if tag == "const":
        return node[1], "always" if node[1] else "never"
    if tag == "define":
        return scope.definitions[node[1]]
    if tag == "compare":
        _, left_ref, op, right_ref, unit, right_text, titer = node
        left, path = _value(left_ref, scope)
        right, right_path = _value(right_ref, scope)
        result = compare(left, op, right, path, right_path)
        if type(result) is tuple:
            return result, _unknown(result)
        left = left.value if type(left) is Lab else left
        right = right.value if type(right) is Lab else right
        shown = _display(left, unit, titer)
        if left is NONE or right is NONE:
            return result, f"{path} {shown}"
        other = f"{right_path} {_display(right, unit, titer)}" if right_path else right_text
        return result, f"{path} {shown} {_SHOWN[op] if result else _NEGATED[op]} {other}"
    if tag == "uln":
        _, lab_ref, op, multiple, unit, multiple_text = node
        lab, path = _value(lab_ref, scope)
        result = compare_uln(lab, op, multiple, path)
        if type(result) is tuple:
            return result, _unknown(result)
        if lab is NONE:
            return result, f"{path}: none recorded"
        return result, (f"{path} {show(lab.value, unit)} {_SHOWN[op] if result else _NEGATED[op]} "
                        f"{multiple_text} × ULN ({show(scale(lab.uln, multiple), unit)})")
    if tag == "between":
        _, value_ref, low_ref, high_ref, unit, range_text, titer = node
        value, path = _value(value_ref, scope)
        low, low_path = _value(low_ref, scope)
        high, high_path = _value(high_ref, scope)
        result = between(value, low, high, path, low_path, high_path)
        if type(result) is tuple:
            return result, _unknown(result)
        value = value.value if type(value) is Lab else value
        shown = _display(value, unit, titer)
        if value is NONE or low is NONE or high is NONE:
            return result, f"{path} {shown}"
        return result, f"{path} {shown} is {'within' if result else 'outside'} {range_text}"
    if tag == "member":
        _, value_ref, kind, members, members_text = node
        value, path = _value(value_ref, scope)
        result = member(value, kind, members, path)
        if type(result) is tuple:
            return result, _unknown(result)
        if value is NONE:
            return result, f"{path}: none recorded"
        if value in members:
            return result, f"{path} is {value}"
        return result, f"{path} is {value}, not {members_text}"
    if tag == "has":
        _, value_ref, kind, members, members_text = node
        value, path = _value(value_ref, scope)
        result = has(value, kind, members, path)
        if type(result) is tuple:
            return result, _unknown(result)
        found = members & (frozenset() if value is NONE else value)
        if result:
            return result, f"{path} include {', '.join(sorted(found))}"
        if kind == "has_all":
            return result, f"{path} lack {', '.join(sorted(members - found))}"
        return result, f"{path} include none of {members_text}"
    if tag == "window":
        _, value_ref, kind, amount, unit, direction, anchor_ref, text = node
        value, path = _value(value_ref, scope)
        anchor, anchor_path = _value(anchor_ref, scope)
        result = window(value, kind, amount, unit, direction, anchor, path, anchor_path)
        if type(result) is tuple:
            return result, _unknown(result)
        if value is NONE or anchor is NONE:
            return result, f"{path if value is NONE else anchor_path}: none recorded"
        return result, (f"{path} {value.isoformat()} is {'' if result else 'not '}{text} "
                        f"{anchor_path or 'the date'} {anchor.isoformat()}")
    if tag == "none":
        value, path = _value(node[1], scope)
        result = none_recorded(value, path)
        if type(result) is tuple:
            return result, _unknown(result)
        return result, f"{path}: none recorded" if result else f"{path} recorded: {show(value)}"
    if tag in ("overlaps", "ongoing", "lasted"):
        return _interval(node, scope)
    if tag == "not":
        inner = _condition(node[1], scope)
        return not3(inner[0]), inner[1]  # type: ignore[arg-type]
    if tag == "and":
        parts = [_condition(c, scope) for c in node[1]]
        both = and3(v for v, _ in parts)  # type: ignore[misc]
        return both, _join(_alike(both, parts))
    if tag == "or":
        parts = [_condition(c, scope) for c in node[1]]
        either = or3(v for v, _ in parts)  # type: ignore[misc]
        return either, _join(_alike(either, parts))
    if tag == "at_least":
        return _at_least(node[1], [_condition(c, scope) for c in node[2]])
    if tag in ("any", "all", "count", "different"):
        return _quantified(node, scope)
    if tag == "num":
        return _numeric(node, scope)
    raise AssertionError(f"no condition {tag!r}")


def _derived(node: tuple[Any, ...], scope: _Scope) -> Num:
    """A derived value from its description: ("p"|"it"|"k", …) a field or literal,
    ("arith", op, a, b), ("convert", a, factor), ("uln_of", lab, multiple),
    ("value", name, a) a named value, ("choose", ((condition, a), …), otherwise),
    ("equivalent", a, agent, factors) a dose converted by an equivalence table."""
    tag = node[0]
    if tag in ("p", "it", "k"):
        value, path = _value(node, scope)
        return num(value, path)
    if tag == "arith":
        return arith(node[1], _derived(node[2], scope), _derived(node[3], scope))
    if tag == "convert":
        return convert(_derived(node[1], scope), node[2])
    if tag == "uln_of":
        lab, path = _value(node[1], scope)
        return uln_of(lab, node[2], path)
    if tag == "value":
        return _derived(node[2], scope)
    if tag == "equivalent":
        agent, path = _value(node[2], scope)
        return equivalent(_derived(node[1], scope), agent, node[3], path)
    if tag == "choose":
        branches = [(_condition(c, scope)[0], _derived(v, scope)) for c, v in node[1]]
        return choose(branches, _derived(node[2], scope))  # type: ignore[arg-type]
    raise AssertionError(f"no value {tag!r}")


def show_num(value: Num, unit: str) -> str:
    """A derived value as shown in a reason: `31.2 kg/m^2`, `100 or 200 U/L`."""
    if type(value) is not Choices:
        return show(value, unit)
    numbers = sorted(v for v in value.values if v is not NONE)
    shown = [show(v) for v in numbers] + (["none recorded"] if NONE in value.values else [])
    text = " or ".join(shown)
    return f"{text} {unit}" if unit and numbers else text


def _none_only(value: Num) -> bool:
    return all(v is NONE for v in _options(value)[0])


def _numeric(node: tuple[Any, ...], scope: _Scope) -> Reasoned:
    _, left_node, op, right_node, unit, left_text, right_text, literal = node
    left = _derived(left_node, scope)
    right = _derived(right_node, scope)
    result = compare_num(left, op, right)
    if type(result) is tuple:
        return result, _unknown(result) if result else f"{left_text}: cannot be computed (division by zero)"
    if _none_only(left) or _none_only(right):
        return result, f"{left_text if _none_only(left) else right_text}: none recorded"
    sign = _SHOWN[op] if result else _NEGATED[op]
    other = right_text if literal else f"{right_text} ({show_num(right, unit)})"
    return result, f"{left_text} {show_num(left, unit)} {sign} {other}"


def _interval(node: tuple[Any, ...], scope: _Scope) -> Reasoned:
    """("overlaps", value, amount, unit, direction, anchor, text), ("ongoing", value, anchor),
    ("lasted", value, kind, amount, unit, anchor, text)."""
    tag = node[0]
    value, path = _value(node[1], scope)
    anchor, anchor_path = _value(node[5] if tag != "ongoing" else node[2], scope)
    if tag == "overlaps":
        result = overlaps(value, node[2], node[3], node[4], anchor, path, anchor_path)
        words = ("overlaps" if result else "does not overlap") + f" {node[6]}"
    elif tag == "ongoing":
        result = ongoing_at(value, anchor, path, anchor_path)
        words = ("is" if result else "is not") + " ongoing at"
    else:
        result = lasted(value, node[2], node[3], node[4], anchor, path, anchor_path)
        words = ("lasted" if result else "did not last") + f" {node[6]} by"
    if type(result) is tuple:
        return result, _unknown(result)
    if value is NONE or anchor is NONE:
        return result, f"{path if value is NONE else anchor_path}: none recorded"
    return result, f"{path} ({show(value)}) {words} {anchor_path or 'the date'} {anchor.isoformat()}"


def _quantified(node: tuple[Any, ...], scope: _Scope) -> Reasoned:
    tag = node[0]
    items, path = _value(node[1], scope)
    test = node[-1]
    if items is None:
        return (path,), _unknown((path,))
    seq = () if items is NONE else items
    facts: dict[str, Reasoned] = {}
    for index, item in enumerate(seq):
        at = f"{path}[{index}]"
        facts[at] = (True, "") if test is None else _condition(test, _Scope(scope.p, scope.definitions, item, at))

    def known(item: Any, at: str, p: Any, m: Any) -> Tri:
        value = facts[at][0]
        assert value is not NA
        return value

    parts = list(facts.values())
    if tag == "different":
        _, _, op, number, key, members, key_name, _ = node
        result = count_different(items, op, number, path, key, members, known)
        return result, _different(seq, key, key_name, facts, op, number, path, result)
    if tag == "count":
        _, _, op, number, _ = node
        result = count_items(items, op, number, path, known)
        low = sum(1 for v, _ in parts if v is True)
        unknown = [f for f in parts if _is_unknown(f[0])]
        counted = f"{low}" if not unknown else f"{low} to {low + len(unknown)}"
        reason = f"{counted} of {len(parts)} {path} match, needs {_SHOWN[op]} {number}"
        return result, reason if type(result) is bool else f"{reason}: {_join(unknown)}"
    if tag == "any":
        result = any_item(items, path, known)
        if result is False:
            return result, f"no item of {path} matches ({len(parts)} recorded)"
        if result is True:
            return result, next(r for v, r in parts if v is True)
        return result, _join(f for f in parts if _is_unknown(f[0]))
    result = all_item(items, path, known)
    if result is True:
        return result, f"every item of {path} matches ({len(parts)} recorded)"
    if result is False:
        return result, _join(f for f in parts if f[0] is False)
    return result, _join(f for f in parts if _is_unknown(f[0]))


def _different(seq: Sequence[Any], key: str, key_name: str, facts: dict[str, Reasoned], op: str, number: int,
               path: str, result: Tri) -> str:
    """`agent: 2 different (cyclophosphamide, rituximab) among 3 of 4 treatments that match, needs ≥ 2`."""
    counted = sorted({show(getattr(item, key)) for (v, _), item in zip(facts.values(), seq, strict=True)
                      if v is True and getattr(item, key) is not None and getattr(item, key) is not NONE})
    matching = sum(1 for v, _ in facts.values() if v is True)
    reason = (f"{key_name}: {len(counted)} different ({', '.join(counted) or 'none'}) among {matching} of "
              f"{len(facts)} {path} that match, needs {_SHOWN[op]} {number}")
    if type(result) is bool:
        return reason
    assert isinstance(result, tuple)
    return f"{reason}: {_unknown(result)}"


def _line(node: tuple[Any, ...], scope: _Scope) -> Reasoned:
    if node[0] == "when":
        return _when(_condition(node[1], scope), _all([_line(line, scope) for line in node[2]]))
    return _condition(node, scope)


def _criterion(node: tuple[Any, ...], gate: Reasoned, scope: _Scope, out: list[Reasoned]) -> Reasoned:
    """The criterion's value as its parent combines it (under its own `when` only: were the
    parent's gate false, the parent would not apply whatever this gives); its own outcome,
    stored in `out`, is under every gate above it too."""
    _, _, index, applies, combine, count, parts = node
    own = None
    if applies is not None:
        own = _condition(applies, scope)
        gate = _all([gate, own])
    facts: list[Reasoned] = []
    for part in parts:
        if part[0] == "criterion":
            value = _criterion(part, gate, scope, out)[0]
            facts.append((value, f"{part[1]} {outcome_of(value).value}"))
        else:
            facts.append(_line(part, scope))
    if combine == "any":
        body = _any(facts)
    elif combine == "at_least":
        body = _at_least(count, facts)
    else:
        body = _all(facts)
    out[index] = _when(gate, body)
    return body if own is None else _when(own, body)


def explain(criteria: Sequence[tuple[Any, ...]], definitions: Sequence[tuple[str, tuple[Any, ...]]],
            p: Any, info: Sequence[CriterionInfo], judgments: frozenset[str]) -> Screening:
    """The screening with every criterion's reason, from the criteria's description."""
    scope = _Scope(p, {})
    for attr, lines in definitions:
        facts = [_condition(line, scope) for line in lines]
        scope.definitions[attr] = facts[0] if len(facts) == 1 else _all(facts)
    out: list[Reasoned] = [(NA, "")] * len(info)
    refused = False
    unknown: tuple[str, ...] | None = None
    for node in criteria:
        value = _criterion(node, (True, ""), scope, out)[0]
        refusing = info[node[2]].section != "inclusion"  # the value that refuses the patient
        if value is refusing:
            refused = True
        elif _is_unknown(value) and refusable(value, refusing):
            assert isinstance(value, tuple)
            unknown = value if unknown is None else union(unknown, value)
    assessed = assessment((v for v, _ in out), refused, unknown, judgments)
    results = tuple(
        CriterionResult(i.id, i.title, i.section, outcome, reason,
                        tuple(value) if _is_unknown(value) else ())  # type: ignore[arg-type]
        for i, outcome, (value, reason) in zip(info, assessed.outcomes, out, strict=True))
    return Screening(assessed.decision, results, assessed.missing, assessed.pending_judgments)


# ---- reading records -----------------------------------------------------------------

_TITER = re.compile(r"1:([1-9][0-9]{0,8})")
_LIMIT = Decimal(10) ** 15
_PLACES = 40  # decimal places a record's number may have


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
    if not _measurable(value):
        problems.append(Problem(path, f"{_number_text(raw)} is out of range"))
        return None
    return value


def _measurable(value: Decimal) -> bool:
    """Within ±10^15 and written with at most 40 decimal places: compared, never computed with,
    so that 1E+999999999 cannot overflow and 1E-999999999 cannot make a conversion run forever."""
    exponent = value.as_tuple().exponent
    return -_LIMIT < value < _LIMIT and isinstance(exponent, int) and exponent >= -_PLACES


def _number_text(value: Decimal | int | float) -> str:
    """A number as a person writes it, shortened if long: `1E+40`, `1e+300`, `12.5`."""
    text = repr(value) if isinstance(value, float) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_integer(raw: object, path: str, problems: list[Problem]) -> int | None:
    if isinstance(raw, float | Decimal) and _whole(raw):
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int):
        problems.append(Problem(path, f"expected a whole number, got {_kind(raw)}"))
        return None
    if not -_LIMIT < raw < _LIMIT:
        problems.append(Problem(path, f"{_number_text(raw)} is out of range"))
        return None
    return raw


def _whole(raw: float | Decimal) -> bool:
    if isinstance(raw, Decimal):
        return raw.is_finite() and _measurable(raw) and raw == raw.to_integral_value()
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


def read_interval(raw: object, path: str, problems: list[Problem]) -> Period | None:
    """`{"start": "2025-05-20", "end": "2025-06-10"}`, or `"ongoing": true` for no end yet; an
    interval with neither has an end not recorded (unknown)."""
    if not isinstance(raw, dict):
        problems.append(Problem(path, f"expected {{\"start\": …, \"end\": … or \"ongoing\": true}}, "
                                      f"got {_kind(raw)}"))
        return None
    before = len(problems)
    for key in sorted(set(raw) - {"start", "end", "ongoing"}, key=str):
        problems.append(Problem(f"{path}.{key}", "unknown key"))
    start = None
    if raw.get("start") is None:
        problems.append(Problem(f"{path}.start", "missing: an interval needs its start"))
    else:
        start = read_date(raw["start"], f"{path}.start", problems)
    end = None
    if raw.get("end") is not None:
        end = read_date(raw["end"], f"{path}.end", problems)
    ongoing = False
    if raw.get("ongoing") is not None:
        ongoing = bool(read_bool(raw["ongoing"], f"{path}.ongoing", problems))
    if len(problems) > before or start is None:
        return None
    if ongoing and end is not None:
        problems.append(Problem(f"{path}.ongoing", "an interval with an end is not ongoing"))
        return None
    if end is not None and end < start:
        problems.append(Problem(f"{path}.end", f"ends ({end.isoformat()}) before it starts ({start.isoformat()})"))
        return None
    return Period(start, end, ongoing)


def read_dated(raw: object, path: str, problems: list[Problem], read: Callable[[object, str, list[Problem]], Any],
               whole: bool) -> Dated | None:
    """A result with the date it was measured: `{"value": …, "measured": "YYYY-MM-DD"}` (a
    quantity's or lab value's object takes the key beside its own: `whole`)."""
    if not isinstance(raw, dict) or "measured" not in raw:
        problems.append(Problem(f"{path}.measured" if isinstance(raw, dict) else path,
                                "missing: the date the result was measured" if isinstance(raw, dict)
                                else f"expected {{\"value\": …, \"measured\": \"YYYY-MM-DD\"}}, got {_kind(raw)}"))
        return None
    before = len(problems)
    measured = read_date(raw["measured"], f"{path}.measured", problems)
    rest = {k: v for k, v in raw.items() if k != "measured"}
    if whole:
        value = read(rest, path, problems)
    else:
        for key in sorted(set(rest) - {"value"}, key=str):
            problems.append(Problem(f"{path}.{key}", "unknown key"))
        value = None
        if "value" in rest:
            value = read(rest["value"], f"{path}.value", problems)
        else:
            problems.append(Problem(f"{path}.value", "missing"))
    if len(problems) > before or measured is None or value is None:
        return None
    return Dated(value, measured)


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


def plausible(value: T | Absent | None, low: Exact, high: Exact, text: str, unit: str, path: str,
              problems: list[Problem]) -> T | Absent | None:
    """A value read for a field with a plausible range (inclusive, in the canonical unit), or
    None with a problem when it lies outside: hemoglobin 10.8 meant as g/dL is not 10.8 g/L."""
    inner = value.value if isinstance(value, Dated) else value  # a dated result: its value
    number = inner.value if isinstance(inner, Lab) else inner
    if value is None or value is NONE or low <= number <= high:  # type: ignore[operator]
        return value
    at = f"{path}.value" if isinstance(value, (Lab, Dated)) else path
    problems.append(Problem(at, f"{show(number, unit)} is outside the plausible range {text}; "
                                "check the value and its unit"))
    return None


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
        if raw.is_finite() and _measurable(raw):
            return raw
    elif kind is float:
        assert isinstance(raw, float)
        if -_BIG_FLOAT < raw < _BIG_FLOAT:  # false for nan and infinities
            value = Decimal(repr(raw))
            if _measurable(value):
                return value
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
        return raw if raw.is_finite() and _measurable(raw) else None
    if kind is int:
        assert isinstance(raw, int)
        return Decimal(raw) if -_BIG < raw < _BIG else None
    if kind is float:
        assert isinstance(raw, float)
        value = Decimal(repr(raw)) if -_BIG_FLOAT < raw < _BIG_FLOAT else None
        return value if value is not None and _measurable(value) else None
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


def _field_of(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]
# --- end runtime ---
