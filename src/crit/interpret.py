"""The reference interpreter: evaluates a checked protocol directly on a record.

It is the oracle the generated modules are tested against (`crit eval --interpret` uses it),
so it decides outcomes with its own code: the reason-carrying `Fact` logic below, written
for clarity, not speed. From the runtime it shares only the record readers, the value and
result types, calendar arithmetic (`shift`) and the wording of values (`show`); the generated
modules decide with the runtime's three-valued functions instead, and the differential tests
compare the two on decisions, outcomes, missing facts and reasons.
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, NamedTuple, TypeVar, assert_never

from crit import ir
from crit import runtime as rt
from crit.reasons import (
    is_literal,
    is_titer,
    lasted_text,
    members_text,
    num_text,
    overlaps_text,
    path_of,
    range_text,
    text_of,
    unit_of,
    window_text,
)

# ---- the oracle's logic: Kleene logic with reasons ------------------------------------

T = TypeVar("T")


MET, NOT_MET, NA = rt.Outcome.MET, rt.Outcome.NOT_MET, rt.Outcome.NOT_APPLICABLE
Possible = frozenset[rt.Outcome]  # outcomes among MET, NOT_MET, NA


class Fact(NamedTuple):
    """What a condition, line or criterion comes to: the outcomes its completions can still
    give (one when it is known; a condition is never NA), its reason, and the facts it lacks."""

    possible: Possible
    reason: str
    missing: tuple[str, ...] = ()

    @property
    def value(self) -> bool | None:
        """True or False when surely met or surely not met; else None."""
        if self.possible == {MET}:
            return True
        if self.possible == {NOT_MET}:
            return False
        return None

    @property
    def applicable(self) -> bool | None:
        """False when surely not applicable, True when surely applicable, None when it may be."""
        if self.possible == {NA}:
            return False
        return None if NA in self.possible else True


def fact(value: bool | None, reason: str, missing: tuple[str, ...] = ()) -> Fact:
    """A condition's fact: known true or false, or unknown (either, never NA)."""
    if value is None:
        return Fact(frozenset((MET, NOT_MET)), reason, missing)
    return Fact(frozenset((MET if value else NOT_MET,)), reason)


ALWAYS = fact(True, "")

# ---- three-valued logic, as sets of outcomes ----------------------------------------------
#
# Each combination tries every outcome of each part against the outcomes of the parts before
# it (a fold over sets of concrete outcomes), so it finds exactly the outcomes the parts can
# give together when they are independent: Kleene logic for conditions, and for criteria the
# precise "met or not applicable" that decides an inclusion, "not met or not applicable" an
# exclusion.


def _union(facts: Iterable[Fact]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for f in facts:
        for path in f.missing:
            seen[path] = None
    return tuple(sorted(seen))


def _join(facts: Iterable[Fact]) -> str:
    """Each reason once, in order (one fact missing twice is named once)."""
    return "; ".join(dict.fromkeys(f.reason for f in facts if f.reason))


def _and(a: rt.Outcome, b: rt.Outcome) -> rt.Outcome:
    """Two known outcomes under `all`: a part that does not apply is left out."""
    if a is NA:
        return b
    if b is NA:
        return a
    return NOT_MET if NOT_MET in (a, b) else MET


def _or(a: rt.Outcome, b: rt.Outcome) -> rt.Outcome:
    if a is NA:
        return b
    if b is NA:
        return a
    return MET if MET in (a, b) else NOT_MET


def _fold(combine: Callable[[rt.Outcome, rt.Outcome], rt.Outcome], facts: Sequence[Fact]) -> Possible:
    reached: set[rt.Outcome] = {NA}  # nothing combined yet: not applicable
    for f in facts:
        reached = {combine(so_far, outcome) for so_far in reached for outcome in f.possible}
    return frozenset(reached)


def _counted(count: int, facts: Sequence[Fact]) -> Possible:
    """`at least count` of the parts that apply: the (met so far, any applies) states reached."""
    states = {(0, False)}
    for f in facts:
        states = {(min(met + (outcome is MET), count), applies or outcome is not NA)
                  for met, applies in states for outcome in f.possible}
    return frozenset(NA if not applies else (MET if met >= count else NOT_MET) for met, applies in states)


def _unknown_parts(facts: Sequence[Fact]) -> list[Fact]:
    return [f for f in facts if len(f.possible) > 1]


def all_of(*facts: Fact) -> Fact:
    """Kleene `and` over the applicable parts; not applicable when none applies."""
    possible = _fold(_and, facts)
    parts = [f for f in facts if f.applicable is not False]
    if possible == {NA}:
        return Fact(possible, _join(facts))
    if possible == {NOT_MET}:
        return Fact(possible, _join(f for f in parts if f.value is False))
    if possible == {MET}:
        return Fact(possible, _join(parts))
    unknown = _unknown_parts(parts)
    return Fact(possible, _join(unknown), _union(unknown))


def any_of(*facts: Fact) -> Fact:
    """Kleene `or` over the applicable parts; not applicable when none applies."""
    possible = _fold(_or, facts)
    parts = [f for f in facts if f.applicable is not False]
    if possible == {NA}:
        return Fact(possible, _join(facts))
    if possible == {MET}:
        return Fact(possible, _join(f for f in parts if f.value is True))
    if possible == {NOT_MET}:
        return Fact(possible, _join(parts))
    unknown = _unknown_parts(parts)
    return Fact(possible, _join(unknown), _union(unknown))


def at_least(count: int, *facts: Fact) -> Fact:
    """Met once `count` parts are met; not met once too few can still be, with some part
    applying; not applicable when none applies."""
    possible = _counted(count, facts)
    parts = [f for f in facts if f.applicable is not False]
    if possible == {NA}:
        return Fact(possible, _join(facts))
    true = [f for f in parts if f.value is True]
    unknown = _unknown_parts(parts)
    summary = f"{len(true)} of {len(parts)} met, needs {count}"
    if possible == {MET}:
        return Fact(possible, f"{summary}: {_join(true)}")
    if possible == {NOT_MET}:
        return Fact(possible, summary)
    return Fact(possible, f"{summary}, {len(unknown)} unknown: {_join(unknown)}", _union(unknown))


def negate(f: Fact) -> Fact:
    """Kleene `not`: the reason still describes the facts, so it is kept."""
    swap = {MET: NOT_MET, NOT_MET: MET, NA: NA}
    return Fact(frozenset(swap[o] for o in f.possible), f.reason, f.missing)


def when(condition: Fact, body: Fact) -> Fact:
    """`when C: X`: not applicable if C is false; X if C is true; else X's outcomes or not
    applicable. X met with C unknown is unknown: "met or not applicable" decides an inclusion,
    not an exclusion (one that is met excludes, one not applicable does not)."""
    possible = frozenset(o for c in condition.possible for o in ((NA,) if c is NOT_MET else body.possible))
    if condition.value is False:
        return Fact(possible, f"not applicable: {condition.reason}")
    if condition.value is True or body.applicable is False:
        return body
    return Fact(possible, _join((condition, body)), _union((condition, body)))


_PARTLY = {
    frozenset((MET, NA)): rt.Outcome.MET_OR_NOT_APPLICABLE,
    frozenset((NOT_MET, NA)): rt.Outcome.NOT_MET_OR_NOT_APPLICABLE,
}


def outcome(f: Fact) -> rt.Outcome:
    if len(f.possible) == 1:
        return next(iter(f.possible))
    return _PARTLY.get(f.possible, rt.Outcome.UNKNOWN)


def summary(criterion_id: str, f: Fact) -> Fact:
    """A sub-criterion as its parent sees it: the outcome by id, the details on its own row."""
    return Fact(f.possible, f"{criterion_id} {outcome(f).value}", f.missing)


# ---- atoms ------------------------------------------------------------------------------

_NEGATED = {">=": "<", "<=": ">", ">": "≤", "<": "≥", "=": "≠", "!=": "="}
_SHOWN = {">=": "≥", "<=": "≤", ">": ">", "<": "<", "=": "=", "!=": "≠"}


def _holds(left: Any, op: ir.CompareOp, right: Any) -> bool:
    match op:
        case ">=":
            return bool(left >= right)
        case "<=":
            return bool(left <= right)
        case ">":
            return bool(left > right)
        case "<":
            return bool(left < right)
        case "=":
            return bool(left == right)
        case "!=":
            return bool(left != right)
        case _:
            assert_never(op)


def _missing(*pairs: tuple[Any, str]) -> tuple[str, ...]:
    return tuple(sorted({path for value, path in pairs if value is None and path}))


def _unknown(paths: tuple[str, ...], judgments: frozenset[str] = frozenset()) -> Fact:
    words = [f"pending judgment: {p}" if p in judgments else f"missing: {p}" for p in paths]
    return fact(None, "; ".join(words), paths)


def truth(value: bool | rt.Absent | None, path: str, judgment: bool = False) -> Fact:
    """A bool field or a recorded judgment used as a condition."""
    if value is None:
        return _unknown((path,), frozenset((path,)) if judgment else frozenset())
    if value is rt.NONE:
        return fact(False, f"{path}: none recorded")
    return fact(bool(value), f"{path}: {'yes' if value else 'no'}")


def compare(left: Any, op: ir.CompareOp, right: Any, left_path: str, right_path: str,
            left_unit: str, right_text: str, titer: bool = False) -> Fact:
    """`left op right` for numbers, quantities, titers, dates, text and truth values."""
    missing = _missing((left, left_path), (right, right_path))
    if missing:
        return _unknown(missing)
    if isinstance(left, rt.Lab):
        left = left.value
    if isinstance(right, rt.Lab):
        right = right.value
    shown_left = f"1:{left}" if titer and left is not rt.NONE else rt.show(left, left_unit)
    if right_path:
        shown_right = f"{right_path} " + (f"1:{right}" if titer else rt.show(right, left_unit))
    else:
        shown_right = right_text
    if left is rt.NONE or right is rt.NONE:
        return fact(False, f"{left_path} {shown_left}")
    held = _holds(left, op, right)
    shown_op = _SHOWN[op] if held else _NEGATED[op]
    return fact(held, f"{left_path} {shown_left} {shown_op} {shown_right}")


def compare_uln(lab: rt.Lab | rt.Absent | None, op: ir.CompareOp, multiple: Decimal, path: str, unit: str,
                multiple_text: str) -> Fact:
    """`lab op k × ULN`, against the patient's own laboratory's upper limit of normal."""
    if lab is None:
        return _unknown((path,))
    if lab is rt.NONE:
        return fact(False, f"{path}: none recorded")
    exact = Fraction(lab.uln) * Fraction(multiple)
    held = _holds(Fraction(lab.value), op, exact)
    limit = rt.terminating(exact)
    shown_op = _SHOWN[op] if held else _NEGATED[op]
    return fact(held, f"{path} {rt.show(lab.value, unit)} {shown_op} {multiple_text} × ULN "
                      f"({rt.show(limit, unit)})")


def between(value: Any, low: Any, high: Any, path: str, low_path: str, high_path: str,
            unit: str, range_text: str, titer: bool = False) -> Fact:
    """Inclusive at both ends, and exactly `low ≤ value and value ≤ high` in Kleene logic:
    a value above a known upper bound is out of range even when the lower bound is missing."""
    if isinstance(value, rt.Lab):
        value = value.value
    if value is None:
        return _unknown(_missing((value, path), (low, low_path), (high, high_path)))
    shown = f"1:{value}" if titer and value is not rt.NONE else rt.show(value, unit)
    if value is rt.NONE or low is rt.NONE or high is rt.NONE:
        return fact(False, f"{path} {shown}")
    above = None if low is None else bool(low <= value)
    below = None if high is None else bool(value <= high)
    if above is False or below is False:
        return fact(False, f"{path} {shown} is outside {range_text}")
    if above is None or below is None:
        return _unknown(_missing((low, low_path), (high, high_path)))
    return fact(True, f"{path} {shown} is within {range_text}")


def member(value: str | rt.Absent | None, kind: str, members: frozenset[str], path: str,
           members_text: str) -> Fact:
    """Enum tests: `is`, `is not`, `is any of`."""
    if value is None:
        return _unknown((path,))
    if value is rt.NONE:
        return fact(kind == "is_not", f"{path}: none recorded")
    inside = value in members
    held = not inside if kind == "is_not" else inside
    if inside:
        return fact(held, f"{path} is {value}")
    return fact(held, f"{path} is {value}, not {members_text}")


def has(value: frozenset[str] | rt.Absent | None, kind: str, members: frozenset[str], path: str,
        members_text: str) -> Fact:
    """Set tests: `has`, `has any of`, `has all of`."""
    if value is None:
        return _unknown((path,))
    if value is rt.NONE:
        value = frozenset()
    found = value & members
    held = found == members if kind == "has_all" else bool(found)
    if held:
        return fact(True, f"{path} include {', '.join(sorted(found))}")
    if kind == "has_all":
        return fact(False, f"{path} lack {', '.join(sorted(members - value))}")
    return fact(False, f"{path} include none of {members_text}")


def window(value: datetime.date | rt.Absent | None, kind: str, amount: int, unit: str,
           direction: str, anchor: datetime.date | rt.Absent | None, path: str, anchor_path: str,
           text: str) -> Fact:
    """Windows are inclusive at both ends and measured from the anchor date."""
    missing = _missing((value, path), (anchor, anchor_path))
    if missing:
        return _unknown(missing)
    if value is rt.NONE or anchor is rt.NONE:
        return fact(False, f"{path if value is rt.NONE else anchor_path}: none recorded")
    assert isinstance(value, datetime.date) and isinstance(anchor, datetime.date)
    held = _in_window(value, kind, amount, unit, direction, anchor)
    return fact(held, f"{path} {value.isoformat()} is {'' if held else 'not '}{text} "
                      f"{anchor_path or 'the date'} {anchor.isoformat()}")


def quantify(kind: str, items: Sequence[T] | rt.Absent | None, path: str,
             test: Callable[[T, str], Fact]) -> Fact:
    """`any(list where c)` and `all(list where c)`; an empty list has no item (any is false)."""
    if items is None:
        return _unknown((path,))
    if items is rt.NONE:
        items = ()
    assert not isinstance(items, rt.Absent)
    facts = [test(item, f"{path}[{index}]") for index, item in enumerate(items)]
    if kind == "any":
        result = any_of(*facts) if facts else fact(False, "")
        if result.value is False:
            return fact(False, f"no item of {path} matches ({len(facts)} recorded)")
        if result.value is True:
            first = next(f for f in facts if f.value is True)
            return fact(True, first.reason)
        return fact(None, result.reason, result.missing)
    result = all_of(*facts) if facts else fact(True, "")
    if result.value is True:
        return fact(True, f"every item of {path} matches ({len(facts)} recorded)")
    return fact(result.value, result.reason, result.missing)


def count(op: ir.CompareOp, number: int, items: Sequence[T] | rt.Absent | None, path: str,
          test: Callable[[T, str], Fact]) -> Fact:
    """`count(list where c) op n`: unknown items make the count a range, compared soundly."""
    if items is None:
        return _unknown((path,))
    if items is rt.NONE:
        items = ()
    assert not isinstance(items, rt.Absent)
    facts = [test(item, f"{path}[{index}]") for index, item in enumerate(items)]
    low = sum(1 for f in facts if f.value is True)
    unknown = [f for f in facts if f.value is None]
    high = low + len(unknown)
    verdict = count_verdict(op, number, low, high)
    counted = f"{low}" if low == high else f"{low} to {high}"
    reason = f"{counted} of {len(facts)} {path} match, needs {_SHOWN[op]} {number}"
    if verdict is not None:
        return fact(verdict, reason)
    return fact(None, f"{reason}: {_join(unknown)}", _union(unknown))


def _moved(day: datetime.date, signed: int, unit: str) -> datetime.date:
    """The date moved on the calendar (rt.shift), or the calendar's end when it would leave it."""
    try:
        return rt.shift(day, signed, unit)
    except OverflowError:
        return datetime.date.min if signed < 0 else datetime.date.max


def _in_window(value: datetime.date, kind: str, amount: int, unit: str, direction: str,
               anchor: datetime.date) -> bool:
    """`within` and `at least` are inclusive at the edge, `less than` and `more than` strict;
    the window always includes its anchor."""
    edge = _moved(anchor, -amount if direction == "before" else amount, unit)
    near, far = (edge, anchor) if direction == "before" else (anchor, edge)
    inside = {"within": near <= value <= far,
              "less_than": (edge < value <= anchor) if direction == "before" else (anchor <= value < edge),
              "at_least": value <= edge if direction == "before" else value >= edge,
              "more_than": value < edge if direction == "before" else value > edge}
    return inside[kind]


# ---- intervals: a start, and an end, ongoing, or an end not recorded ------------------------


def none_recorded(value: Any, path: str) -> Fact:
    """`no X recorded`."""
    if value is None:
        return _unknown((path,))
    if value is rt.NONE:
        return fact(True, f"{path}: none recorded")
    return fact(False, f"{path} recorded: {rt.show(value)}")


def _interval_fact(period: Any, anchor: Any, path: str, anchor_path: str,
                   decide: Callable[[rt.Period, datetime.date], bool | None], words: Callable[[bool], str]) -> Fact:
    """`decide` gives the answer, or None when it turns on an end that is not recorded."""
    missing = _missing((period, path), (anchor, anchor_path))
    if missing:
        return _unknown(missing)
    if period is rt.NONE or anchor is rt.NONE:
        return fact(False, f"{path if period is rt.NONE else anchor_path}: none recorded")
    assert isinstance(period, rt.Period) and isinstance(anchor, datetime.date)
    held = decide(period, anchor)
    if held is None:
        return _unknown((f"{path}.end",))
    return fact(held, f"{path} ({rt.show(period)}) {words(held)} {anchor_path or 'the date'} {anchor.isoformat()}")


def overlaps(period: Any, e: ir.Overlaps, anchor: Any, path: str, anchor_path: str) -> Fact:
    """The interval meets the window: it starts by the window's last day and ends on or after its first."""
    def decide(p: rt.Period, day: datetime.date) -> bool | None:
        edge = _moved(day, -e.amount if e.direction == "before" else e.amount, e.unit)
        first, last = min(edge, day), max(edge, day)
        if p.start > last:
            return False
        if p.ongoing or p.start >= first:
            return True
        return None if p.end is None else p.end >= first

    text = overlaps_text(e)
    return _interval_fact(period, anchor, path, anchor_path, decide,
                          lambda held: f"{'overlaps' if held else 'does not overlap'} {text}")


def ongoing_at(period: Any, anchor: Any, path: str, anchor_path: str) -> Fact:
    """Begun on or before the date and not ended before it."""
    def decide(p: rt.Period, day: datetime.date) -> bool | None:
        if p.start > day:
            return False
        if p.ongoing or p.start == day:
            return True
        return None if p.end is None else p.end >= day

    return _interval_fact(period, anchor, path, anchor_path, decide,
                          lambda held: "is ongoing at" if held else "is not ongoing at")


def lasted(period: Any, e: ir.Lasted, anchor: Any, path: str, anchor_path: str) -> Fact:
    """Its length from the start to the end, or to the anchor when that is earlier."""
    def decide(p: rt.Period, day: datetime.date) -> bool | None:
        edge = _moved(p.start, e.amount, e.unit)
        if p.ongoing:
            shortest = longest = day
        elif p.end is None:  # it ended on some day from its start on, or goes on still
            shortest, longest = min(p.start, day), day
        else:
            shortest = longest = min(p.end, day)
        answers = {_long_enough(e.kind, last, edge) for last in (shortest, longest)}
        return answers.pop() if len(answers) == 1 else None

    text = lasted_text(e)
    return _interval_fact(period, anchor, path, anchor_path, decide,
                          lambda held: f"{'lasted' if held else 'did not last'} {text} by")


def _long_enough(kind: str, last: datetime.date, edge: datetime.date) -> bool:
    return {"at_least": edge <= last, "more_than": edge < last, "less_than": last < edge,
            "at_most": last <= edge}[kind]


def fresh(value: Any, m: ir.Freshness, anchor: Any) -> Any:
    """A dated result's value when measured in its window from the anchor, else unknown (None)."""
    if not isinstance(value, rt.Dated):
        return value
    if not isinstance(anchor, datetime.date):
        return None
    return value.value if _in_window(value.measured, "within", m.amount, m.unit, m.direction, anchor) else None


def different(e: ir.DistinctCount, items: Any, path: str, test: Callable[[Any, str], Fact]) -> Fact:
    """How many different values of the key the matching items hold: a range while items or
    keys are unknown (an unknown key may repeat a value or be new), compared soundly."""
    if items is None:
        return _unknown((path,))
    seq = () if items is rt.NONE else items
    name = e.key.name
    rows = [(f"{path}[{i}]", item[name], test(item, f"{path}[{i}]")) for i, item in enumerate(seq)]
    keyed = [(at, key, fact) for at, key, fact in rows if key is not rt.NONE]
    sure = [(at, key, fact) for at, key, fact in keyed if fact.value is True]
    maybe = [(at, key, fact) for at, key, fact in keyed if fact.value is not False]
    known = {key for _, key, _ in sure if key is not None}
    low = len(known) if known else int(any(key is None for _, key, _ in sure))
    high = len({key for _, key, _ in maybe if key is not None}) + sum(1 for _, key, _ in maybe if key is None)
    if isinstance(e.key.type, ir.EnumOf):
        high = min(high, len(e.key.type.enum.members))
    verdict = count_verdict(e.op, e.number, low, high)
    shown = sorted({rt.show(key) for _, key, _ in sure if key is not None})
    matching = sum(1 for _, _, fact in rows if fact.value is True)
    reason = (f"{name}: {len(shown)} different ({', '.join(shown) or 'none'}) among {matching} of "
              f"{len(rows)} {path} that match, needs {_SHOWN[e.op]} {e.number}")
    if verdict is not None:
        return fact(verdict, reason)
    missing = sorted({p for _, _, fact in maybe for p in fact.missing}
                     | {f"{at}.{name}" for at, key, _ in maybe if key is None})
    return fact(None, f"{reason}: " + "; ".join(f"missing: {p}" for p in missing), tuple(missing))


def count_verdict(op: ir.CompareOp, number: int, low: int, high: int) -> bool | None:
    """`count op number` for a count known to lie in [low, high]: None unless every count in
    the range gives the same answer."""
    outcomes = {_holds(n, op, number) for n in range(low, high + 1)}
    return outcomes.pop() if len(outcomes) == 1 else None


def screen(criteria: Sequence[rt.CriterionInfo], facts: Mapping[str, Fact],
           judgments: frozenset[str]) -> rt.Screening:
    """The decision: ineligible on any failed inclusion or met exclusion; eligible only when
    every inclusion is met (or not applicable) and every exclusion is not met (or not applicable)."""
    results: list[rt.CriterionResult] = []
    blocking: list[Fact] = []
    decided_no = False
    for info in criteria:
        found = facts[info.id]
        results.append(rt.CriterionResult(info.id, info.title, info.section, outcome(found), found.reason,
                                          found.missing if len(found.possible) > 1 else ()))
        if info.parent is not None:
            continue
        refusal = NOT_MET if info.section == "inclusion" else MET
        if found.possible == {refusal}:
            decided_no = True
        elif refusal in found.possible:  # some completion refuses, some does not
            blocking.append(found)
    if decided_no:
        return rt.Screening(rt.Decision.INELIGIBLE, tuple(results), (), ())
    if blocking:
        paths = _union(blocking)
        missing = tuple(p for p in paths if _field_of(p) not in judgments)
        pending = tuple(p for p in paths if _field_of(p) in judgments)
        return rt.Screening(rt.Decision.NEEDS_REVIEW, tuple(results), missing, pending)
    return rt.Screening(rt.Decision.ELIGIBLE, tuple(results), (), ())


def _field_of(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]


# ---- derived values -----------------------------------------------------------------------


class Derived(NamedTuple):
    """A derived value: the set of values it may take (None when unknown: an operand missing or
    a division by zero), and the facts whose absence leaves it open or unknown."""

    values: frozenset[Any] | None
    missing: tuple[str, ...] = ()


def _paths(*values: Derived, extra: Iterable[str] = ()) -> tuple[str, ...]:
    return tuple(sorted({*extra, *(p for v in values for p in v.missing)}))


def _operate(op: ir.ArithOp, a: Fraction, b: Fraction) -> Fraction | None:
    match op:
        case "+":
            return a + b
        case "-":
            return a - b
        case "×":
            return a * b
        case "÷":
            return None if b == 0 else a / b
        case _:
            assert_never(op)


def calculate(op: ir.ArithOp, left: Derived, right: Derived) -> Derived:
    """Every value `left op right` may take; unknown if either side is, or if any divides by zero."""
    missing = _paths(left, right)
    if left.values is None or right.values is None:
        return Derived(None, missing)
    out: set[Any] = set()
    for a in left.values:
        for b in right.values:
            if a is rt.NONE or b is rt.NONE:
                out.add(rt.NONE)
                continue
            result = _operate(op, a, b)
            if result is None:
                return Derived(None, missing)
            out.add(result)
    return Derived(frozenset(out), missing)


def _shown(value: Derived, unit: str) -> str:
    assert value.values is not None
    numbers = sorted(v for v in value.values if v is not rt.NONE)
    words = [rt.show(rt.terminating(v)) for v in numbers]
    if rt.NONE in value.values:
        words.append("none recorded")
    text = " or ".join(words)
    if len(words) == 1 and numbers:
        return rt.show(rt.terminating(numbers[0]), unit)
    return f"{text} {unit}" if unit and numbers else text


def compare_derived(left: Derived, op: ir.CompareOp, right: Derived, unit: str, left_text: str,
                    right_text: str, literal: bool) -> Fact:
    """`left op right`: decided when every pair of values the sides may take agrees."""
    missing = _paths(left, right)
    if left.values is None or right.values is None:
        if not missing:
            return fact(None, f"{left_text}: cannot be computed (division by zero)")
        return _unknown(missing)
    answers = {False if a is rt.NONE or b is rt.NONE else _holds(a, op, b)
               for a in left.values for b in right.values}
    if len(answers) > 1:
        if not missing:
            return fact(None, f"{left_text}: cannot be computed (division by zero)")
        return _unknown(missing)
    held = answers.pop()
    if left.values == {rt.NONE} or right.values == {rt.NONE}:
        return fact(held, f"{left_text if left.values == {rt.NONE} else right_text}: none recorded")
    other = right_text if literal else f"{right_text} ({_shown(right, unit)})"
    return fact(held, f"{left_text} {_shown(left, unit)} {_SHOWN[op] if held else _NEGATED[op]} {other}",
                missing)


# ---- evaluating the IR -------------------------------------------------------------------

Values = Mapping[str, Any]


@dataclass(frozen=True)
class _Env:
    """What an expression can see: the patient's values, the definitions, a list item."""

    patient: Values
    definitions: Mapping[str, Fact]
    item: Values | None = None
    item_path: str = ""


def _scalar_reader(kind: ir.BaseKind) -> Any:
    match kind:
        case "bool" | "judgment":
            return rt.read_bool
        case "integer":
            return rt.read_integer
        case "decimal":
            return rt.read_decimal
        case "text":
            return rt.read_text
        case "date":
            return rt.read_date
        case "titer":
            return rt.read_titer
        case "interval":
            return rt.read_interval
        case _:
            assert_never(kind)


class Interpreter:
    """Evaluate `protocol` on JSON-shaped records, with the generated module's public API."""

    def __init__(self, protocol: ir.Protocol) -> None:
        self.protocol = protocol
        self.records = {r.name: r for r in protocol.records}
        self.judgments = frozenset(f.name for f in protocol.fields if f.type.kind == "judgment")
        self.info = tuple(self._info())

    def _info(self) -> list[rt.CriterionInfo]:
        out: list[rt.CriterionInfo] = []

        def visit(criterion: ir.Criterion, parent: str | None) -> None:
            out.append(rt.CriterionInfo(criterion.id, criterion.title, criterion.section, parent,
                                        criterion.span.line))
            for child in criterion.children():
                visit(child, criterion.id)

        for top in self.protocol.inclusion + self.protocol.exclusion:
            visit(top, None)
        return out

    # ---- reading ----
    def read(self, record: object, problems: list[rt.Problem]) -> dict[str, Any]:
        keys = [f.name for f in self.protocol.fields]
        raw = record if rt.check_keys(record, "", keys, problems) else {}
        assert isinstance(raw, dict)
        return self._read_fields(raw, self.protocol.fields, "", problems)

    def _read_fields(self, raw: dict[str, Any], fields: tuple[ir.Field, ...], at: str,
                     problems: list[rt.Problem]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field in fields:
            path = f"{at}.{field.name}" if at else field.name
            read = self._reader(field.type)
            if field.measured is not None:
                whole = isinstance(field.type, ir.Measure)
                read = functools.partial(_read_dated, read=read, whole=whole)
            values[field.name] = rt.get(raw, field.name, path, problems, read, field.optional)
            if field.plausible is not None:
                unit = field.type.unit.text if isinstance(field.type, ir.Measure) else ""
                values[field.name] = rt.plausible(values[field.name], field.plausible.low, field.plausible.high,
                                                  field.plausible.text, unit, path, problems)
        return values

    def _reader(self, t: ir.Type) -> Any:
        match t:
            case ir.Scalar():
                return _scalar_reader(t.kind)
            case ir.Measure():
                factors = t.record_units()
                read = rt.read_quantity if t.kind == "quantity" else rt.read_lab
                unit = t.unit.text
                return lambda raw, at, pr: read(raw, at, pr, unit, factors)
            case ir.EnumOf() | ir.SetOf():
                members = t.enum.member_names()
                read_member = rt.read_enum if isinstance(t, ir.EnumOf) else rt.read_set
                return lambda raw, at, pr: read_member(raw, at, pr, members)
            case ir.ListOf():
                record = self.records[t.record]

                def read_item(raw: object, at: str, pr: list[rt.Problem]) -> dict[str, Any] | None:
                    if not rt.check_keys(raw, at, [f.name for f in record.fields], pr):
                        return None
                    assert isinstance(raw, dict)
                    return self._read_fields(raw, record.fields, at, pr)

                return lambda raw, at, pr: rt.read_list(raw, at, pr, read_item)
            case _:
                assert_never(t)

    def validate(self, record: object) -> list[rt.Problem]:
        problems: list[rt.Problem] = []
        self.read(record, problems)
        return problems

    # ---- evaluating ----
    def evaluate(self, record: object) -> rt.Screening:
        problems: list[rt.Problem] = []
        values = self.read(record, problems)
        if problems:
            raise rt.InvalidRecord(problems)
        definitions: dict[str, Fact] = {}
        for definition in self.protocol.definitions:
            env = _Env(values, definitions)
            facts = [self.line(line, env) for line in definition.lines()]
            definitions[definition.name] = facts[0] if len(facts) == 1 else all_of(*facts)
        env = _Env(values, definitions)
        out: dict[str, Fact] = {}
        for criterion in self.protocol.inclusion + self.protocol.exclusion:
            self.criterion(criterion, env, ALWAYS, out)
        return screen(self.info, out, self.judgments)

    def criterion(self, c: ir.Criterion, env: _Env, gate: Fact, out: dict[str, Fact]) -> Fact:
        """The criterion as its parent combines it: under its own `when`, not the gates above
        it (were one false, the parent would not apply whatever this gives). Its outcome, in
        `out`, is under every gate."""
        own = None
        if c.applies is not None:
            own = self.expr(c.applies, env)
            gate = all_of(gate, own)
        parts: list[Fact] = []
        for item in c.items:
            if isinstance(item, ir.Note):
                continue
            if isinstance(item, ir.Criterion):
                parts.append(summary(item.id, self.criterion(item, env, gate, out)))
            else:
                parts.append(self.line(item, env))
        if c.combine == "any":
            body = any_of(*parts)
        elif c.combine == "at_least":
            body = at_least(c.at_least, *parts)
        else:
            body = all_of(*parts)
        out[c.id] = when(gate, body)
        return body if own is None else when(own, body)

    def line(self, item: ir.Line | ir.When, env: _Env) -> Fact:
        if isinstance(item, ir.Line):
            return self.expr(item.expr, env)
        return when(self.expr(item.condition, env), all_of(*(self.line(b, env) for b in item.body)))

    def value(self, v: ir.Value, env: _Env) -> tuple[Any, str]:
        """A value and its path ('' for a literal)."""
        if isinstance(v, ir.Const):
            return v.value, ""
        if v.scope == "item":
            assert env.item is not None
            return env.item[v.field.name], path_of(v, env.item_path)
        if v.field.measured is not None:
            anchor = env.patient[v.field.measured.anchor]
            value = env.patient[v.field.name]
            waiting = isinstance(value, rt.Dated) and anchor is None  # the anchor date is what is missing
            return fresh(value, v.field.measured, anchor), v.field.measured.anchor if waiting else v.field.name
        return env.patient[v.field.name], v.field.name

    def expr(self, e: ir.Expr, env: _Env) -> Fact:
        if isinstance(e, ir.Compare):
            left, left_path = self.value(e.left, env)
            right, right_path = self.value(e.right, env)
            return compare(left, e.op, right, left_path, right_path, unit_of(e.left), text_of(e.right),
                              titer=is_titer(e.left))
        if isinstance(e, ir.UlnCompare):
            lab, path = self.value(e.lab, env)
            return compare_uln(lab, e.op, e.multiple, path, unit_of(e.lab), str(e.multiple))
        if isinstance(e, ir.Between):
            value, path = self.value(e.value, env)
            low, low_path = self.value(e.low, env)
            high, high_path = self.value(e.high, env)
            return between(value, low, high, path, low_path, high_path, unit_of(e.value), range_text(e),
                              titer=is_titer(e.value))
        if isinstance(e, ir.Member):
            value, path = self.value(e.value, env)
            test = member if e.kind.startswith("is") else has
            return test(value, e.kind, frozenset(e.members), path, members_text(e.kind, e.members))
        if isinstance(e, ir.Window):
            value, path = self.value(e.value, env)
            anchor, anchor_path = self.value(e.anchor, env)
            return window(value, e.kind, e.amount, e.unit, e.direction, anchor, path, anchor_path,
                             window_text(e))
        if isinstance(e, ir.NoneRecorded):
            return none_recorded(*self.value(e.value, env))
        if isinstance(e, ir.Overlaps | ir.OngoingAt | ir.Lasted):
            period, path = self.value(e.value, env)
            anchor, anchor_path = self.value(e.anchor, env)
            if isinstance(e, ir.Overlaps):
                return overlaps(period, e, anchor, path, anchor_path)
            if isinstance(e, ir.OngoingAt):
                return ongoing_at(period, anchor, path, anchor_path)
            return lasted(period, e, anchor, path, anchor_path)
        if isinstance(e, ir.DistinctCount):
            items, path = self.value(e.items, env)
            return different(e, items, path, self._test(e.condition, env))
        if isinstance(e, ir.Truth):
            return fact(e.value, "always" if e.value else "never")
        if isinstance(e, ir.DefinitionRef):
            return env.definitions[e.name]
        if isinstance(e, ir.FieldRef):
            value, path = self.value(e, env)
            return truth(value, path, judgment=e.field.type.kind == "judgment")
        if isinstance(e, ir.Not):
            return negate(self.expr(e.operand, env))
        if isinstance(e, ir.And):
            return all_of(*(self.expr(x, env) for x in e.operands))
        if isinstance(e, ir.Or):
            return any_of(*(self.expr(x, env) for x in e.operands))
        if isinstance(e, ir.AtLeast):
            return at_least(e.count, *(self.expr(x, env) for x in e.operands))
        if isinstance(e, ir.Quantified):
            items, path = self.value(e.items, env)
            return quantify(e.kind, items, path, self._test(e.condition, env))
        if isinstance(e, ir.CountCompare):
            items, path = self.value(e.items, env)
            return count(e.op, e.number, items, path, self._test(e.condition, env))
        if isinstance(e, ir.NumCompare):
            compared = compare_derived(self.derived(e.left, env), e.op, self.derived(e.right, env), e.unit,
                                       num_text(e.left), num_text(e.right), is_literal(e.right))
            return compared._replace(missing=()) if compared.value is not None else compared
        assert_never(e)

    def derived(self, v: ir.Num, env: _Env) -> Derived:
        """The values a derived value may take for this patient."""
        if isinstance(v, ir.Const):
            assert isinstance(v.value, Decimal | Fraction | int) and not isinstance(v.value, bool)
            return Derived(frozenset({Fraction(v.value)}))
        if isinstance(v, ir.FieldRef):
            value, path = self.value(v, env)
            if value is None:
                return Derived(None, (path,))
            if value is rt.NONE:
                return Derived(frozenset({rt.NONE}))
            return Derived(frozenset({Fraction(value.value if isinstance(value, rt.Lab) else value)}))
        if isinstance(v, ir.Arith):
            return calculate(v.op, self.derived(v.left, env), self.derived(v.right, env))
        if isinstance(v, ir.Convert):
            return calculate("×", self.derived(v.value, env), Derived(frozenset({Fraction(v.factor)})))
        if isinstance(v, ir.UlnOf):
            lab, path = self.value(v.lab, env)
            if lab is None:
                return Derived(None, (path,))
            if lab is rt.NONE:
                return Derived(frozenset({rt.NONE}))
            return Derived(frozenset({Fraction(lab.uln) * Fraction(v.multiple)}))
        if isinstance(v, ir.ValueRef):
            return self.derived(v.value, env)
        if isinstance(v, ir.Choice):
            possible: list[Derived] = []
            open_conditions: list[str] = []
            for condition, value in v.branches:
                holds = self.expr(condition, env)
                if holds.value is False:
                    continue
                possible.append(self.derived(value, env))
                if holds.value is True:
                    break
                open_conditions.extend(holds.missing)
            else:
                possible.append(self.derived(v.otherwise, env))
            missing = _paths(*possible, extra=open_conditions)
            if any(p.values is None for p in possible):
                return Derived(None, missing)
            return Derived(frozenset(x for p in possible for x in p.values or ()), missing)
        if isinstance(v, ir.Equivalent):
            dose = self.derived(v.dose, env)
            agent, path = self.value(v.agent, env)
            if agent is None:
                return Derived(None, _paths(dose, extra=(path,)))
            if agent is rt.NONE:
                return dose if dose.values is None else Derived(frozenset({rt.NONE}), dose.missing)
            factor = dict(v.table.factors)[agent]
            return calculate("×", dose, Derived(frozenset({Fraction(factor)})))
        assert_never(v)

    def _test(self, condition: ir.Expr | None, env: _Env) -> Any:
        def test(item: Values, at: str) -> Fact:
            if condition is None:
                return ALWAYS
            return self.expr(condition, _Env(env.patient, env.definitions, item, at))

        return test


def _read_dated(raw: object, at: str, problems: list[rt.Problem], read: Any, whole: bool) -> rt.Dated | None:
    return rt.read_dated(raw, at, problems, read, whole)


__all__ = ["Interpreter"]
