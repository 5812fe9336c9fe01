"""`crit diff OLD NEW`: what an amendment changes, criterion by criterion, for reviewers.

Criteria are matched by their stable ids, so a renumbered line or a moved block is not a
change. For every changed condition the report says whether it tightens or loosens
eligibility: the old and new conditions are compared by z3 (`crit.logic.Solver`: is one
contained in the other?), and the direction is turned around where the condition counts
against the patient (in an exclusion, under a `not`, as a `when` that brings in a requirement).
A change that counts both ways, or is no simple widening or narrowing, is "unclear"; where z3
gives up, runs out of time, or the encoding cannot tell, the report says "crit could not
decide". A direction is only ever reported from a proof (no patient changes the other way)
and a witness (a patient who does change).

With `--records`, both versions are compiled and run on the records, and the patients whose
decision changes are listed with the criteria that changed for them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import click

from crit import ir, templating
from crit.backends.markdown import code_span, comment_text, inline
from crit.driver import Loaded, display_path
from crit.english import describe, describe_type
from crit.files import GENERATED_MARK, UnsafeWrite, is_generated, same_file, write_atomic
from crit.logic import TRUE, Solver, eligible, expand, key, neg
from crit.logic.formula import choice_conditions
from crit.pipeline import compile_or_fail, evaluator, read_records
from crit.process import EXIT_USAGE

TIGHTENED, LOOSENED, SAME, UNCLEAR = "tightened", "loosened", "no effect", "unclear"
UNDECIDED = "crit could not decide"


@dataclass(frozen=True, slots=True)
class Change:
    """One difference, worded for a reviewer; `effect` is on eligibility, or "" for wording."""

    what: str
    old: str
    new: str
    effect: str = ""


@dataclass(frozen=True, slots=True)
class CriterionChange:
    id: str
    title: str
    section: str
    status: str  # "added" | "removed" | "changed"
    conditions: tuple[str, ...] = ()  # for added and removed criteria
    changes: tuple[Change, ...] = ()


@dataclass(frozen=True, slots=True)
class DecisionChange:
    record: str
    old: str
    new: str
    criteria: tuple[str, ...]


@dataclass
class Report:
    """Everything `crit diff` found, before it is laid out as Markdown."""

    old: ir.Protocol
    new: ir.Protocol
    header: list[Change] = field(default_factory=list)
    criteria: list[CriterionChange] = field(default_factory=list)
    definitions: list[CriterionChange] = field(default_factory=list)
    schema: list[Change] = field(default_factory=list)
    overall: str = ""
    records: int | None = None
    decisions: list[DecisionChange] = field(default_factory=list)
    unreadable: list[Change] = field(default_factory=list)

    def effects(self) -> Counter[str]:
        changes = [c for group in (self.criteria, self.definitions) for item in group for c in item.changes]
        return Counter(c.effect for c in changes if c.effect)


# ---- comparing -------------------------------------------------------------------------------


def compare(old: ir.Protocol, new: ir.Protocol, solver: Solver | None = None) -> Report:
    """The semantic differences between two versions of a protocol (`solver`: one set up on
    both, e.g. with a tighter budget)."""
    return _Comparer(old, new, solver).run()


class _Comparer:
    def __init__(self, old: ir.Protocol, new: ir.Protocol, solver: Solver | None = None) -> None:
        self.old, self.new = old, new
        self.solver = solver if solver is not None else Solver([old, new])
        self.old_defs = {d.name: d for d in old.definitions}
        self.new_defs = {d.name: d for d in new.definitions}
        self.old_signs = _signs(old)
        self.new_signs = _signs(new)

    def run(self) -> Report:
        report = Report(self.old, self.new)
        report.header = self.header()
        report.criteria = self.criteria()
        report.definitions = self.definitions()
        report.schema = self.schema()
        report.overall = self.overall()
        return report

    # ---- header ----
    def header(self) -> list[Change]:
        old, new = self.old, self.new
        out = [Change(what, a or "—", b or "—") for what, a, b in (
            ("protocol id", old.id, new.id), ("title", old.title, new.title),
            ("version", old.version, new.version)) if a != b]
        out += _notes(old.notes, new.notes)
        return out

    # ---- criteria ----
    def criteria(self) -> list[CriterionChange]:
        old = {c.id: c for c in self.old.criteria()}
        new = {c.id: c for c in self.new.criteria()}
        moved = _moved(self.old, self.new)
        out: list[CriterionChange] = []
        for c in self.new.criteria():
            if c.id not in old:
                out.append(CriterionChange(c.id, c.title, c.section, "added", _conditions(c),
                                           (Change("criterion added", "", "", self.whole(c, added=True)),)))
                continue
            changes = self.criterion(old[c.id], c)
            if c.id in moved:
                changes.insert(0, Change("moved", moved[c.id][0], moved[c.id][1]))
            if changes:
                out.append(CriterionChange(c.id, c.title, c.section, "changed", (), tuple(changes)))
        for c in self.old.criteria():
            if c.id not in new:
                out.append(CriterionChange(c.id, c.title, c.section, "removed", _conditions(c),
                                           (Change("criterion removed", "", "", self.whole(c, added=False)),)))
        return out

    def whole(self, c: ir.Criterion, added: bool) -> str:
        """A criterion added or removed: eligibility with and without it, compared. (A criterion
        that repeats another has no effect; one more part of a parent that needs any of its
        parts is one more way in.)"""
        if added:
            return self.counterfactual(_drop(self.new, c.id), self.new, self.new_defs)
        return self.counterfactual(self.old, _drop(self.old, c.id), self.old_defs)

    def counterfactual(self, before: ir.Protocol, after: ir.Protocol, definitions: Mapping[str, ir.Definition]) -> str:
        """How eligibility changes from `before` to `after`, two versions of one protocol that
        differ in a single place; this is exact where the "not applicable" rules make the sign
        of a change depend on the rest of the criterion."""
        a = expand(eligible(before), definitions)
        b = expand(eligible(after), definitions)
        return {"same": SAME, "narrower": TIGHTENED, "wider": LOOSENED, UNDECIDED: UNDECIDED}.get(
            _order(self.solver.implies(b, a), self.solver.implies(a, b)), UNCLEAR)

    def criterion(self, old: ir.Criterion, new: ir.Criterion) -> list[Change]:
        out: list[Change] = []
        if old.title != new.title:
            out.append(Change("retitled", old.title, new.title))
        if (old.combine, old.at_least) != (new.combine, new.at_least):
            out.append(self.combination(old, new))
        if key(old.applies) != key(new.applies):
            out.append(self.applies(old, new))
        out += self.lines(old, new)
        out += _notes(old.notes(), new.notes())
        return out

    def combination(self, old: ir.Criterion, new: ir.Criterion) -> Change:
        """`requires any` / `at least N` / all: how many parts must hold (in the old criterion)."""
        hybrid = _edit(self.old, old.id, lambda c: replace(c, combine=new.combine, at_least=new.at_least))
        effect = self.counterfactual(self.old, hybrid, self.old_defs)
        return Change("parts required", _combine_text(old), _combine_text(new), effect)

    def applies(self, old: ir.Criterion, new: ir.Criterion) -> Change:
        before = old.applies if old.applies is not None else TRUE
        after = new.applies if new.applies is not None else TRUE
        signs = self.new_signs.get(id(after)) if new.applies is not None else self.old_signs.get(id(before))
        effect = _effect(self.direction(before, after), signs or set())
        return Change("applies when", _applies_text(old.applies), _applies_text(new.applies), effect)

    def lines(self, old: ir.Criterion, new: ir.Criterion) -> list[Change]:
        """Changes between a criterion's lines: identical lines first, then lines about the same
        thing (a field, a list, a definition) paired as changed, the rest added or removed (each
        weighed by eligibility with and without it)."""
        pairs, removed, added = _align(_lines(old), _lines(new), _line_subject)
        out: list[Change] = []
        for a, b in pairs:
            out += self.line(a, b)
        for line in removed:
            without = _edit(self.old, old.id, _dropping(line))
            out.append(Change("condition removed", _line_text(line), "—",
                              self.counterfactual(self.old, without, self.old_defs)))
        for line in added:
            without = _edit(self.new, new.id, _dropping(line))
            out.append(Change("condition added", "—", _line_text(line),
                              self.counterfactual(without, self.new, self.new_defs)))
        return out

    def line(self, old: ir.Line | ir.When, new: ir.Line | ir.When) -> list[Change]:
        if isinstance(old, ir.Line) and isinstance(new, ir.Line):
            return self.expr(old.expr, new.expr)
        if isinstance(old, ir.When) and isinstance(new, ir.When):
            out: list[Change] = []
            if key(old.condition) != key(new.condition):
                signs = self.old_signs.get(id(old.condition), set())
                effect = _effect(self.direction(old.condition, new.condition), signs)
                out.append(Change("when", describe(old.condition), describe(new.condition), effect))
            return out + self.when_body(old, new)
        return [Change("condition", _line_text(old), _line_text(new), UNCLEAR)]

    def when_body(self, old: ir.When, new: ir.When) -> list[Change]:
        out: list[Change] = []
        pairs, removed, added = _align(old.body, new.body, _line_subject)
        for a, b in pairs:
            out += self.line(a, b)
        out += [Change("condition removed", _line_text(x), "—", UNCLEAR) for x in removed]
        out += [Change("condition added", "—", _line_text(x), UNCLEAR) for x in added]
        return out

    def expr(self, old: ir.Expr, new: ir.Expr) -> list[Change]:
        """Changes between two conditions written alike: the parts that differ, each with its effect."""
        if key(old) == key(new):
            return []
        if type(old) is type(new) and isinstance(old, ir.And | ir.Or | ir.AtLeast) and \
                isinstance(new, ir.And | ir.Or | ir.AtLeast) and len(old.operands) == len(new.operands) \
                and (not isinstance(old, ir.AtLeast) or old.count == getattr(new, "count", None)):
            pairs, removed, added = _align(old.operands, new.operands, _subject)
            if not removed and not added:
                return [c for a, b in pairs for c in self.expr(a, b)]
        if isinstance(old, ir.Not) and isinstance(new, ir.Not):
            return self.expr(old.operand, new.operand)
        what = _kind_of_change(old, new)
        effect = _effect(self.direction(old, new), self.old_signs.get(id(old), set()))
        return [Change(what, describe(old), describe(new), effect)]

    def direction(self, old: ir.Expr, new: ir.Expr) -> str:
        """"narrower", "wider" or "same" when the solver can tell which patients each admits."""
        a = expand(old, self.old_defs)
        b = expand(new, self.new_defs)
        return _order(self.solver.implies(b, a), self.solver.implies(a, b))

    # ---- definitions ----
    def definitions(self) -> list[CriterionChange]:
        out: list[CriterionChange] = []
        for d in self.new.definitions:
            before = self.old_defs.get(d.name)
            if before is None:
                out.append(CriterionChange(d.name, d.label or "", "definition", "added",
                                           tuple(describe(x.expr) for x in d.lines())))
                continue
            changes: list[Change] = []
            if before.label != d.label:
                changes.append(Change("relabelled", before.label or "—", d.label or "—"))
            pairs, removed, added = _align(before.lines(), d.lines(), _line_subject)
            for a, b in pairs:
                changes += self.line(a, b)
            sign = self.old_signs.get(("define", d.name), set())
            changes += [Change("condition removed", _line_text(x), "—", _effect("wider", sign)) for x in removed]
            changes += [Change("condition added", "—", _line_text(x), _effect("narrower", sign)) for x in added]
            changes += _notes(before.notes(), d.notes())
            if changes:
                out.append(CriterionChange(d.name, d.label or "", "definition", "changed", (), tuple(changes)))
        for d in self.old.definitions:
            if d.name not in self.new_defs:
                out.append(CriterionChange(d.name, d.label or "", "definition", "removed",
                                           tuple(describe(x.expr) for x in d.lines())))
        return out

    # ---- schema ----
    def schema(self) -> list[Change]:
        out = _fields("patient field", self.old.fields, self.new.fields)
        old_records = {r.name: r for r in self.old.records}
        new_records = {r.name: r for r in self.new.records}
        for name in _union(old_records, new_records):
            a, b = old_records.get(name), new_records.get(name)
            if a is None or b is None:
                out.append(Change("record added" if a is None else "record removed", "—" if a is None else name,
                                  name if a is None else "—"))
                continue
            if a.label != b.label:
                out.append(Change(f"record {name}: label", a.label or "—", b.label or "—"))
            out += _fields(f"{name} field", a.fields, b.fields)
        old_enums = {e.name: e for e in self.old.enums}
        new_enums = {e.name: e for e in self.new.enums}
        for name in _union(old_enums, new_enums):
            x, y = old_enums.get(name), new_enums.get(name)
            if x is None or y is None:
                present = x or y
                assert present is not None
                shown = f"{name}: " + ", ".join(present.member_names())
                out.append(Change("enum added", "—", shown) if x is None else Change("enum removed", shown, "—"))
                continue
            if x.label != y.label:
                out.append(Change(f"enum {name}: label", x.label or "—", y.label or "—"))
            for member in _union(dict(x.members), dict(y.members)):
                before, after = dict(x.members), dict(y.members)
                if member not in before:
                    out.append(Change(f"enum {name}: member added", "—", _member(member, after[member])))
                elif member not in after:
                    out.append(Change(f"enum {name}: member removed", _member(member, before[member]), "—"))
                elif before[member] != after[member]:
                    out.append(Change(f"enum {name}: member {member} relabelled", before[member] or "—",
                                      after[member] or "—"))
        return out

    # ---- overall ----
    def overall(self) -> str:
        """Whether any complete record changes its decision, in either direction."""
        before = expand(eligible(self.old), self.old_defs)
        after = expand(eligible(self.new), self.new_defs)
        gains = self.solver.satisfiable(after, neg(before), witness=True)
        losses = self.solver.satisfiable(before, neg(after), witness=True)
        if gains is False and losses is False:
            return "unchanged: every patient whose facts are all known gets the same decision"
        if gains is False and losses:
            return "tightened: no patient becomes eligible who was not before"
        if losses is False and gains:
            return "loosened: no patient who was eligible becomes ineligible"
        if gains and losses:
            return "changed both ways: some patients become eligible, others ineligible"
        if gains is False:
            return "crit could not decide whether any patient becomes ineligible; none becomes eligible"
        if losses is False:
            return "crit could not decide whether any patient becomes eligible; none becomes ineligible"
        return "crit could not decide whether any patient's decision changes"


def _signs(protocol: ir.Protocol) -> dict[object, set[int]]:
    """For every condition node (by identity) and definition (by ("define", name)), the signs
    with which it counts towards eligibility: +1 where holding more often admits more patients,
    -1 where it admits fewer. A node with both signs counts both ways."""
    out: dict[object, set[int]] = {}

    def walk(e: ir.Expr, sign: int) -> None:
        out.setdefault(id(e), set()).add(sign)
        match e:
            case ir.Not(operand=operand):
                walk(operand, -sign)
            case ir.And(operands=operands) | ir.Or(operands=operands) | ir.AtLeast(operands=operands):
                for operand in operands:
                    walk(operand, sign)
            case ir.Quantified(condition=condition) if condition is not None:
                walk(condition, sign)
            case ir.CountCompare(op=op, condition=condition) | ir.DistinctCount(op=op, condition=condition) \
                    if condition is not None:
                for s in {">=": (sign,), ">": (sign,), "<=": (-sign,), "<": (-sign,)}.get(op, (sign, -sign)):
                    walk(condition, s)
            case ir.DefinitionRef(name=name):
                out.setdefault(("define", name), set()).add(sign)
            case ir.NumCompare(left=left, right=right):  # a choice's condition moves a threshold either way
                for condition in choice_conditions(left) + choice_conditions(right):
                    walk(condition, sign)
                    walk(condition, -sign)
            case _:
                pass

    walk(eligible(protocol), 1)
    for definition in reversed(protocol.definitions):  # users before the definitions they use
        for sign in sorted(out.get(("define", definition.name), set())):
            for line in definition.lines():
                walk(line.expr, sign)
    return out


def _order(smaller: bool | None, larger: bool | None) -> str:
    """"same", "narrower", "wider" or "unclear" from whether the new condition implies the old
    (`smaller`) and the old the new (`larger`); any question z3 left open leaves it undecided."""
    if smaller is None or larger is None:
        return UNDECIDED
    if smaller and larger:
        return "same"
    if smaller:
        return "narrower"
    return "wider" if larger else UNCLEAR


def _effect(direction: str, signs: set[int]) -> str:
    """A change's effect on eligibility, from its direction and where it counts."""
    if direction in (SAME, "same"):
        return SAME
    if direction == UNDECIDED:
        return UNDECIDED
    if direction not in ("narrower", "wider") or len(signs) != 1:
        return UNCLEAR
    (sign,) = signs
    return LOOSENED if (direction == "wider") == (sign > 0) else TIGHTENED


def _edit(protocol: ir.Protocol, ident: str, change: Callable[[ir.Criterion], ir.Criterion]) -> ir.Protocol:
    """The protocol with criterion `ident` replaced by `change(criterion)`."""
    def visit(item: Any) -> Any:
        if not isinstance(item, ir.Criterion):
            return item
        item = replace(item, items=tuple(visit(i) for i in item.items))
        return change(item) if item.id == ident else item

    return replace(protocol, inclusion=tuple(visit(c) for c in protocol.inclusion),
                   exclusion=tuple(visit(c) for c in protocol.exclusion))


def _dropping(line: object) -> Callable[[ir.Criterion], ir.Criterion]:
    def drop(c: ir.Criterion) -> ir.Criterion:
        return replace(c, items=tuple(i for i in c.items if i is not line))

    return drop


def _drop(protocol: ir.Protocol, ident: str) -> ir.Protocol:
    """The protocol without criterion `ident` (and what is under it)."""
    def keep(items: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(_drop_in(i) for i in items if not (isinstance(i, ir.Criterion) and i.id == ident))

    def _drop_in(item: Any) -> Any:
        return replace(item, items=keep(item.items)) if isinstance(item, ir.Criterion) else item

    return replace(protocol, inclusion=keep(protocol.inclusion), exclusion=keep(protocol.exclusion))


def _lines(c: ir.Criterion) -> list[ir.Line | ir.When]:
    return [i for i in c.items if isinstance(i, ir.Line | ir.When)]


def _align(old: Sequence[Any], new: Sequence[Any], subject: Any) -> tuple[list[tuple[Any, Any]], list[Any], list[Any]]:
    """Pairs of (old, new) items that correspond, then the unmatched old and new items.
    Equal items pair first, then items with the same subject; a single leftover on each side
    pairs too (a condition rewritten in place)."""
    left = list(old)
    right = list(new)
    pairs: list[tuple[Any, Any]] = []
    for match in (key, subject):
        for a in list(left):
            for b in right:
                if match(a) == match(b) and match(a) is not None:
                    pairs.append((a, b))
                    left.remove(a)
                    right.remove(b)
                    break
    if len(left) == 1 and len(right) == 1:
        pairs.append((left.pop(), right.pop()))
    pairs = [(a, b) for a, b in pairs if key(a) != key(b)]
    return pairs, left, right


def _subject(e: ir.Expr) -> object:
    """What a condition is about: its field, list or definition (None when it is compound)."""
    match e:
        case ir.Compare(left=ir.FieldRef(field=f)) | ir.Between(value=ir.FieldRef(field=f)) | \
                ir.UlnCompare(lab=ir.FieldRef(field=f)) | ir.Window(value=ir.FieldRef(field=f)) | \
                ir.Overlaps(value=ir.FieldRef(field=f)) | ir.OngoingAt(value=ir.FieldRef(field=f)) | \
                ir.Lasted(value=ir.FieldRef(field=f)) | ir.NoneRecorded(value=ir.FieldRef(field=f)):
            return ("value", f.name)
        case ir.Member(value=ir.FieldRef(field=f)):
            return ("member", f.name)
        case ir.CountCompare(items=ir.FieldRef(field=f)) | ir.Quantified(items=ir.FieldRef(field=f)) | \
                ir.DistinctCount(items=ir.FieldRef(field=f)):
            return ("list", f.name)
        case ir.FieldRef(field=f):
            return ("flag", f.name)
        case ir.DefinitionRef(name=name):
            return ("define", name)
        case ir.Not(operand=operand):
            return _subject(operand)
        case ir.And(operands=operands) | ir.Or(operands=operands) | ir.AtLeast(operands=operands):
            return (type(e).__name__, frozenset(str(_subject(o)) for o in operands))
        case _:
            return None


def _line_subject(line: ir.Line | ir.When) -> object:
    if isinstance(line, ir.Line):
        return _subject(line.expr)
    return ("when", _subject(line.condition))


def _kind_of_change(old: ir.Expr, new: ir.Expr) -> str:
    if type(old) is not type(new):
        return "condition"
    if isinstance(old, ir.Compare | ir.UlnCompare) and isinstance(new, ir.Compare | ir.UlnCompare):
        return "threshold" if old.op == new.op else "comparison"
    return {ir.Between: "range", ir.Window: "window", ir.Member: "members", ir.Overlaps: "window",
            ir.Lasted: "duration", ir.CountCompare: "count", ir.DistinctCount: "count"}.get(type(old), "condition")


def _line_text(line: ir.Line | ir.When) -> str:
    if isinstance(line, ir.Line):
        return describe(line.expr)
    return f"when {describe(line.condition)}: " + "; ".join(_line_text(b) for b in line.body)


def _conditions(c: ir.Criterion) -> tuple[str, ...]:
    out = []
    if c.applies is not None:
        out.append(f"applies when {describe(c.applies)}")
    if c.combine != "all":
        out.append(f"requires {_combine_text(c)}")
    out += [_line_text(line) for line in _lines(c)]
    out += [f"sub-criterion {child.id}" for child in c.children()]
    return tuple(out)


def _combine_text(c: ir.Criterion) -> str:
    return {"all": "all parts", "any": "any one part"}.get(c.combine, f"at least {c.at_least} parts")


def _applies_text(e: ir.Expr | None) -> str:
    return describe(e) if e is not None else "always"


def _notes(old: Iterable[str], new: Iterable[str]) -> list[Change]:
    before, after = list(old), list(new)
    return ([Change("note removed", n, "—") for n in before if n not in after]
            + [Change("note added", "—", n) for n in after if n not in before])


def _moved(old: ir.Protocol, new: ir.Protocol) -> dict[str, tuple[str, str]]:
    """Criteria whose place among their siblings changed: (was after, now after)."""
    def siblings(p: ir.Protocol) -> Iterator[tuple[str, list[str]]]:
        yield "inclusion", [c.id for c in p.inclusion]
        yield "exclusion", [c.id for c in p.exclusion]
        for c in p.criteria():
            yield c.id, [x.id for x in c.children()]

    before = dict(siblings(old))
    out: dict[str, tuple[str, str]] = {}
    for parent, ids in siblings(new):
        old_ids = before.get(parent, [])
        common_new = [i for i in ids if i in old_ids]
        common_old = [i for i in old_ids if i in ids]
        stay = set(_lcs(common_old, common_new))
        for ident in common_new:
            if ident not in stay:
                out[ident] = (_place(common_old, ident), _place(common_new, ident))
    return out


def _place(ids: list[str], ident: str) -> str:
    index = ids.index(ident)
    return "first" if index == 0 else f"after {ids[index - 1]}"


def _lcs(a: list[str], b: list[str]) -> list[str]:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) - 1, -1, -1):
        for j in range(len(b) - 1, -1, -1):
            table[i][j] = table[i + 1][j + 1] + 1 if a[i] == b[j] else max(table[i + 1][j], table[i][j + 1])
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        if a[i] == b[j]:
            out.append(a[i])
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return out


def _union(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return list(a) + [name for name in b if name not in a]


def _member(name: str, label: str | None) -> str:
    return f"{name} ({label})" if label else name


def _fields(what: str, old: Sequence[ir.Field], new: Sequence[ir.Field]) -> list[Change]:
    before = {f.name: f for f in old}
    after = {f.name: f for f in new}
    out: list[Change] = []
    for name in _union(before, after):
        a, b = before.get(name), after.get(name)
        if a is None or b is None:
            present = a or b
            assert present is not None
            shown = f"{name}: {_field_type(present)}"
            out.append(Change(f"{what} added" if a is None else f"{what} removed",
                              "—" if a is None else shown, shown if a is None else "—"))
            continue
        if _field_type(a) != _field_type(b):
            out.append(Change(f"{what} {name}: type", _field_type(a), _field_type(b)))
        if a.label != b.label:
            out.append(Change(f"{what} {name}: label", a.label or "—", b.label or "—"))
        bounds = [(f.plausible.low, f.plausible.high) if f.plausible is not None else None for f in (a, b)]
        if bounds[0] != bounds[1]:  # the values a record may hold changed (not only how they are written)
            texts = [f.plausible.text if f.plausible is not None else "—" for f in (a, b)]
            out.append(Change(f"{what} {name}: plausible range", texts[0], texts[1]))
    return out


def _field_type(f: ir.Field) -> str:
    return describe_type(f.type) + (", optional" if f.optional else "")


# ---- patients whose decision changes -------------------------------------------------------------


def screen_records(report: Report, records: Sequence[Any], old: ModuleType, new: ModuleType) -> None:
    """Evaluate every record with both versions; keep the ones whose decision changes."""
    report.records = len(records)
    old_only = {f.name for f in report.old.fields} - {f.name for f in report.new.fields}
    new_only = {f.name for f in report.new.fields} - {f.name for f in report.old.fields}
    for index, record in enumerate(records):
        label = str(record.get("id", index + 1)) if isinstance(record, dict) else str(index + 1)
        # A field only one version declares is no typo for the other, which does not read it.
        versions = {"old": (old, _without(record, new_only)), "new": (new, _without(record, old_only))}
        problems = {name: [str(p) for p in module.validate(data)] for name, (module, data) in versions.items()}
        if problems["old"] or problems["new"]:
            report.unreadable.append(Change(label, "; ".join(problems["old"]) or "ok",
                                            "; ".join(problems["new"]) or "ok"))
            continue
        before, after = old.evaluate(versions["old"][1]), new.evaluate(versions["new"][1])
        if before.decision == after.decision:
            continue
        rows_before = {r.id: r for r in before.criteria}
        changed = []
        for row in after.criteria:
            was = rows_before.get(row.id)
            if was is None:
                if not _passes(row):  # a new criterion that lets the patient through is no news
                    changed.append(f"{row.id} (new): {row.outcome.value} — {row.reason}")
            elif was.outcome != row.outcome:
                changed.append(f"{row.id}: {was.outcome.value} → {row.outcome.value} — {row.reason}")
        after_ids = {r.id for r in after.criteria}
        changed += [f"{r.id} (removed): was {r.outcome.value} — {r.reason}" for r in before.criteria
                    if r.id not in after_ids and not _passes(r)]
        report.decisions.append(DecisionChange(label, before.decision.value, after.decision.value, tuple(changed)))


def _passes(row: Any) -> bool:
    """Whether a criterion lets the patient through (a sub-criterion speaks through its parent)."""
    if "." in row.id:
        return True
    return row.outcome.value in ("not applicable", "met" if row.section == "inclusion" else "not met")


def _without(record: Any, names: set[str]) -> Any:
    if not isinstance(record, dict):
        return record
    return {k: v for k, v in record.items() if k not in names}


# ---- Markdown ------------------------------------------------------------------------------------


def render(report: Report) -> str:
    """The report as Markdown: every string worded and escaped here, laid out by diff.md.j2."""
    env = templating.environment()
    old, new = report.old, report.new
    effects = report.effects()
    counts = Counter(c.status for c in report.criteria)
    summary = [
        f"Criteria: {counts['added']} added, {counts['removed']} removed, {counts['changed']} changed.",
        f"Changes that tighten eligibility: {effects[TIGHTENED]}; loosen it: {effects[LOOSENED]}; "
        f"no effect: {effects[SAME]}; unclear: {effects[UNCLEAR]}"
        + (f"; crit could not decide: {effects[UNDECIDED]}." if effects[UNDECIDED] else "."),
        f"Eligibility overall, for patients whose facts are all known: {report.overall}.",
    ]
    text = env.get_template("diff.md.j2").render(
        title=f"# {inline(new.id)}: what the amendment changes",
        old_file=code_span(old.source), new_file=code_span(new.source),
        old_version=inline(old.version or "no version"), new_version=inline(new.version or "no version"),
        summary=summary,
        header=[_row(c) for c in report.header],
        sections=[
            ("Criteria added", _blocks(c for c in report.criteria if c.status == "added")),
            ("Criteria removed", _blocks(c for c in report.criteria if c.status == "removed")),
            ("Criteria changed", _blocks(c for c in report.criteria if c.status == "changed")),
            ("Definitions", _blocks(report.definitions, definitions=True)),
        ],
        schema=[_row(c) for c in report.schema],
        records=report.records,
        decisions=[(f"{inline(d.record)}: {inline(d.old)} → {inline(d.new)}", [inline(c) for c in d.criteria])
                   for d in report.decisions],
        unreadable=[(inline(c.what), inline(c.old), inline(c.new)) for c in report.unreadable],
    )
    return text.rstrip("\n") + "\n"


@dataclass(frozen=True, slots=True)
class _Block:
    heading: str
    conditions: tuple[str, ...]
    rows: tuple[tuple[str, str, str, str], ...]


def _blocks(items: Iterable[CriterionChange], definitions: bool = False) -> list[_Block]:
    out = []
    for item in items:
        if definitions:
            name = code_span(item.id)
            titled = f"{inline(item.title)} ({name})" if item.title else name
            heading = f"### {titled}, {item.status}"
        else:
            heading = f"### {inline(item.id)} {inline(item.title)} ({item.section})"
        out.append(_Block(heading, tuple(inline(c) for c in item.conditions), tuple(_row(c) for c in item.changes)))
    return out


def _row(change: Change) -> tuple[str, str, str, str]:
    return (inline(change.what), _cell(change.old), _cell(change.new), change.effect or "—")


def _cell(text: str) -> str:
    return inline(text) if text else "—"


# ---- the command -------------------------------------------------------------------------------


@click.command("diff")
@click.argument("old_file", type=click.Path(path_type=Path))
@click.argument("new_file", type=click.Path(path_type=Path))
@click.option("--records", "records_file", type=click.Path(path_type=Path),
              help="Also screen these patient records (JSON object or list) with both versions.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the Markdown here instead of stdout.")
def diff_command(old_file: Path, new_file: Path, records_file: Path | None, output: Path | None) -> None:
    """Compare two versions of a protocol, criterion by criterion, as Markdown for reviewers."""
    old, old_loaded = compile_or_fail(old_file)
    new, new_loaded = compile_or_fail(new_file)
    if output is not None:
        _refuse_output(output, [*old_loaded.sources, *new_loaded.sources], records_file)
    report = compare(old, new)
    if records_file is not None:
        records = read_records(records_file)
        screen_records(report, records, _module(old, old_loaded), _module(new, new_loaded))
    text = _mark(old_file, new_file) + render(report)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        write_atomic(output, text)  # refuses a link that appeared since, and never follows one
    except UnsafeWrite as err:
        _usage(f"cannot write -o {output}: {err}")
    except OSError as err:
        _usage(f"cannot write -o {output}: {err.strerror or err}")
    click.echo(f"wrote {display_path(output)}", err=True)


def _mark(old_file: Path, new_file: Path) -> str:
    """The report's first line: crit's `@generated` mark (in an HTML comment, invisible when
    rendered), so that `-o` may replace an earlier diff and nothing else."""
    about = (f"from {display_path(old_file)} and {display_path(new_file)} — do not edit; "
             "rerun `crit diff` to regenerate.")
    return f"<!-- {GENERATED_MARK} {comment_text(about)} -->\n"


def _usage(message: str) -> NoReturn:
    click.echo(f"crit: {message}", err=True)
    raise click.exceptions.Exit(EXIT_USAGE)


def _refuse_output(output: Path, sources: Sequence[str], records_file: Path | None) -> None:
    """`-o` may not name a file crit read (either protocol, anything they import, the records),
    a symbolic link, a directory, or an existing file crit did not write: one line, exit 2,
    before the comparison runs."""
    read = [(f"{source}, which a protocol reads", Path(source)) for source in sources]
    if records_file is not None:
        read.append((f"the records {records_file}", records_file))
    for what, path in read:
        if same_file(output, path):
            _usage(f"-o {output} names {what}; crit will not overwrite it")
    if output.is_symlink():
        _usage(f"-o {output} is a symbolic link; crit does not write through links: give another name")
    if output.is_dir():
        _usage(f"-o {output} is a directory; give a file name")
    if output.exists() and not output.is_file():  # a device or a pipe: renaming over it would replace it
        _usage(f"-o {output} is not a regular file; crit will not replace it: choose another name")
    if not output.parent.is_dir():
        _usage(f"-o {output}: directory {output.parent} does not exist")
    if output.exists() and output.is_file() and output.stat().st_size and not is_generated(output):
        _usage(f"-o {output} exists and crit did not write it; crit will not overwrite it: "
               "delete it or choose another name")


def _module(protocol: ir.Protocol, loaded: Loaded) -> ModuleType:
    return evaluator(protocol, loaded)


__all__ = ["Change", "CriterionChange", "Report", "compare", "diff_command", "render", "screen_records"]
