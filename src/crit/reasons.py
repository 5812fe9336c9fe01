"""The wording parameters of runtime reasons, computed from the checked IR.

Both backends that evaluate (the generated module, via emit/python.py, and the interpreter)
pass these to the same runtime functions, so a criterion reads the same either way.
"""

from __future__ import annotations

from crit import ir
from crit.english import describe_num

_WINDOW_WORDS: dict[ir.WindowKind, str] = {"within": "within", "at_least": "at least", "less_than": "less than",
                                           "more_than": "more than"}
_LASTED_WORDS: dict[ir.LastedKind, str] = {"at_least": "at least", "more_than": "more than",
                                           "less_than": "less than", "at_most": "at most"}


def unit_of(value: ir.Value) -> str:
    """The canonical unit a field's values are shown in; empty for unitless values."""
    if isinstance(value, ir.FieldRef) and isinstance(value.field.type, ir.Measure):
        return value.field.type.unit.text
    return ""


def is_titer(value: ir.Value) -> bool:
    return isinstance(value, ir.FieldRef) and value.field.type.kind == "titer"


def text_of(value: ir.Value) -> str:
    """A literal as its author wrote it, or a field by its name."""
    return value.display if isinstance(value, ir.Const) else value.field.name


def range_text(between: ir.Between) -> str:
    return f"{text_of(between.low)}–{text_of(between.high)}"


def members_text(kind: ir.MemberKind, members: tuple[str, ...]) -> str:
    """`SLE`, `one of SLE, SS`, or for long lists `any of the 15 listed`."""
    if len(members) == 1:
        return members[0]
    if len(members) > 5:
        return f"any of the {len(members)} listed"
    return ("one of " if kind.startswith("is") else "") + ", ".join(members)


def window_text(window: ir.Window) -> str:
    """`within 4 weeks before`, `at least 1 year after`."""
    unit = window.unit.rstrip("s") if window.amount == 1 else window.unit
    return f"{_WINDOW_WORDS[window.kind]} {window.amount} {unit} {window.direction}"


def duration_text(amount: int, unit: str) -> str:
    """`1 week`, `6 months`."""
    return f"{amount} {unit.rstrip('s') if amount == 1 else unit}"


def overlaps_text(e: ir.Overlaps) -> str:
    """`1 week before`."""
    return f"{duration_text(e.amount, e.unit)} {e.direction}"


def lasted_text(e: ir.Lasted) -> str:
    """`at least 6 months`."""
    return f"{_LASTED_WORDS[e.kind]} {duration_text(e.amount, e.unit)}"


def path_of(ref: ir.FieldRef, item_path: str) -> str:
    """Where a field's value sits in the record: `age`, or `treatments[0].end` in a list item."""
    return f"{item_path}.{ref.field.name}" if ref.scope == "item" else ref.field.name


def num_text(value: ir.Num) -> str:
    """A derived value as a reason names it: fields by their paths' names, literals as written."""
    return describe_num(value, by_name=True)


def is_literal(value: ir.Num) -> bool:
    """Whether a comparison's right side is a literal, shown as written (no computed value)."""
    return isinstance(value, ir.Const)
