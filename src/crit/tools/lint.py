"""Lint: warnings (W…) about protocols that check but cannot mean what their author meant.

    W001  a criterion no patient can meet          W005  a patient field no criterion uses
    W002  a criterion every patient meets          W006  a judgment no criterion uses
    W003  an inclusion an exclusion always undoes  W007  a definition no criterion uses
    W004  a `when` that can never apply            W008  a criterion written twice

Lint reads only the checked `ir.Protocol`, and its findings are `Diagnostic`s with severity
"warning" (`as_errors` turns them into errors for `crit check --strict`).

The reasoning is z3's, through `crit.logic`: criteria become conditions on a complete record
(an optional field may be none, which makes every condition on it false), and lint warns only
where z3 proves that something cannot happen. What the encoding leaves opaque only allows more
records, and a question z3 gives up on (or runs out of time for) is no proof: lint stays
silent then, so it has no false alarms. Reasoning about complete records is enough: a
criterion no complete record meets is met by no record with missing facts either, since the
runtime decides nothing that some completion of the record could overturn.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from crit import ir
from crit.ast import Span
from crit.diagnostics import Diagnostic
from crit.english import describe
from crit.logic import NOWHERE, Solver, conj, criterion_parts, disj, expand, key, line_parts, neg
from crit.logic import structure as structure  # tests/test_fmt.py reads it here

# ---- the warnings ---------------------------------------------------------------------------


def lint(protocol: ir.Protocol) -> list[Diagnostic]:
    """Every warning for a checked protocol, in source order."""
    return sorted(_Linter(protocol).run(), key=Diagnostic.sort_key)


def as_errors(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """The warnings as errors, for `crit check --strict`."""
    return [dataclasses.replace(d, severity="error") for d in diagnostics]


def id_span(criterion: ir.Criterion) -> Span:
    """Where a criterion's id is written (a criterion's span starts at its id)."""
    return _first(criterion.span, len(criterion.id))


def _first(span: Span, width: int) -> Span:
    """The first `width` characters of a span: a declaration's name rather than all of it."""
    return Span(span.file, span.line, span.column, span.line, span.column + width)


@dataclass(frozen=True, slots=True)
class _Visit:
    """A criterion with what must hold for it to be evaluated at all: its ancestors' `when`s."""

    criterion: ir.Criterion
    context: tuple[ir.Expr, ...]
    ancestors: tuple[str, ...]


class _Linter:
    """One protocol's warnings: criteria first (what can never apply, then what is never or
    always met, then contradictions and repeats), then what is declared and never used."""

    def __init__(self, protocol: ir.Protocol) -> None:
        self.protocol = protocol
        self.definitions = {d.name: d for d in protocol.definitions}
        self.solver = Solver([protocol])
        self.out: list[Diagnostic] = []

    def warn(self, code: str, span: Span, message: str, hint: str) -> None:
        self.out.append(Diagnostic(code=code, severity="warning", span=span, message=message, hint=hint))

    def sat(self, *conditions: ir.Expr) -> bool | None:
        return self.solver.satisfiable(*(expand(c, self.definitions) for c in conditions))

    def run(self) -> list[Diagnostic]:
        visits = list(self.visits())
        dead = self.never_applies(visits)
        live = [v for v in visits if not dead & {v.criterion.id, *v.ancestors}]
        never, always = self.never_or_always(live)
        self.contradictions(live, never, always)
        self.duplicates(visits)
        self.unused()
        self.data_conventions()
        return self.out

    def data_conventions(self) -> None:
        """Labels are read in the criteria's sentences: one that explains how a value is recorded
        (`Latest insulin dose (null: never)`) makes them read like a data dictionary."""
        records = [field for record in self.protocol.records for field in record.fields]
        for f in (*self.protocol.fields, *records):
            if f.label is None or _DATA_CONVENTION.search(f.label) is None:
                continue
            self.warn("W020", _first(f.span, len(f.name)),
                      f"the label of '{f.name}' says how the data is recorded: \"{f.label}\"",
                      "labels are read in the criteria's sentences; say what the field means (\"Latest "
                      "insulin dose\"): for an optional field, null already means none recorded, and "
                      "the Markdown glossary says so")

    def visits(self) -> Iterator[_Visit]:
        def walk(c: ir.Criterion, context: tuple[ir.Expr, ...], ancestors: tuple[str, ...]) -> Iterator[_Visit]:
            yield _Visit(c, context, ancestors)
            inner = (*context, c.applies) if c.applies is not None else context
            for child in c.children():
                yield from walk(child, inner, (*ancestors, c.id))

        for top in self.protocol.inclusion + self.protocol.exclusion:
            yield from walk(top, (), ())

    # ---- W004: a `when` that can never apply ----
    def never_applies(self, visits: list[_Visit]) -> set[str]:
        """W004 for every `when` (on a criterion or a line) that no patient can satisfy where it
        stands; returns the criteria that therefore never apply."""
        dead: set[str] = set()
        for visit in visits:
            c = visit.criterion
            if dead & set(visit.ancestors):
                continue
            if c.applies is not None and self.sat(*visit.context, c.applies) is False:
                dead.add(c.id)
                self.warn("W004", c.applies.span, f"criterion {c.id} can never apply",
                          self.never_hint(c.applies, visit.context))
                continue
            gates = (*visit.context, *([c.applies] if c.applies is not None else []))
            self.when_lines([i for i in c.items if isinstance(i, ir.When)], gates, c.id)
        return dead

    def when_lines(self, whens: Sequence[ir.When], gates: tuple[ir.Expr, ...], owner: str) -> None:
        for when in whens:
            if self.sat(*gates, when.condition) is False:
                self.warn("W004", when.condition.span, f"this 'when' in {owner} can never apply",
                          self.never_hint(when.condition, gates))
                continue
            inner = [b for b in when.body if isinstance(b, ir.When)]
            self.when_lines(inner, (*gates, when.condition), owner)

    def never_hint(self, condition: ir.Expr, context: Sequence[ir.Expr]) -> str:
        core = self.core([(c, describe(c)) for c in context], [(condition, describe(condition))])
        if core is None or len(core) <= 1:
            return f"no patient has {describe(condition)}"
        return f"no patient has {_both(core)}"

    def core(self, given: Sequence[tuple[ir.Expr, str]], wanted: Sequence[tuple[ir.Expr, str]],
             fixed: Sequence[ir.Expr] = ()) -> list[str] | None:
        """The texts of a set of conditions that cannot hold together (with `fixed`), made
        small by deleting what is not needed, `given` first; None if they can hold together."""
        parts = [p for g in given for p in _conjuncts(g)]
        keep = [p for w in wanted for p in _conjuncts(w)]
        if self.sat(*fixed, *(e for e, _ in parts + keep)) is not False:
            return None
        for part in list(parts):
            rest = [p for p in parts if p is not part]
            if self.sat(*fixed, *(e for e, _ in rest + keep)) is False:
                parts = rest
        for part in list(keep):
            rest = [p for p in keep if p is not part]
            if rest and self.sat(*fixed, *(e for e, _ in parts + rest)) is False:
                keep = rest
        return [text for _, text in parts + keep]

    # ---- W001, W002: never met, always met ----
    def never_or_always(self, visits: list[_Visit]) -> tuple[set[str], set[str]]:
        never: dict[str, _Visit] = {}
        always: dict[str, _Visit] = {}
        for visit in visits:
            c = visit.criterion
            parts = criterion_parts(c)
            if self.sat(*visit.context, parts.applies) is not True:
                continue
            if self.sat(*visit.context, parts.applies, parts.met) is False:
                never[c.id] = visit
            elif self.sat(*visit.context, parts.applies, neg(parts.met)) is False:
                always[c.id] = visit
        for found, code in ((never, "W001"), (always, "W002")):
            for ident, visit in found.items():
                if any(ident in other.ancestors for other in found.values()):
                    continue  # the sub-criterion that causes it carries the warning
                c = visit.criterion
                if code == "W001":
                    self.warn(code, id_span(c), f"criterion {ident} can never be met", self.never_met_hint(visit))
                else:
                    self.warn(code, id_span(c), f"criterion {ident} is met by every patient it applies to",
                              _always_hint(c, visit))
        return set(never), set(always)

    def never_met_hint(self, visit: _Visit) -> str:
        c = visit.criterion
        if c.combine != "all":
            return "none of its parts can be met"
        given = [(x, describe(x)) for x in visit.context]
        wanted: list[tuple[ir.Expr, str]] = []
        if c.applies is not None:
            wanted.append((c.applies, describe(c.applies)))
        for item in c.items:
            if isinstance(item, ir.Line):
                wanted.append((item.expr, describe(item.expr)))
            elif isinstance(item, ir.When):
                parts = line_parts(item)
                wanted.append((disj(neg(parts.applies), parts.met), _when_text(item)))
            elif isinstance(item, ir.Criterion):
                parts = criterion_parts(item)
                wanted.append((disj(neg(parts.applies), parts.met), f"{item.id} is met"))
        core = self.core(given + wanted, [])
        consequence = ""
        if c.section == "inclusion" and not visit.ancestors and c.applies is None:
            consequence = "; so no patient can be eligible"
        if core is None:
            return "its parts cannot all be met where it applies" + consequence
        if len(core) == 1:
            return f"no patient has {core[0]}{consequence}"
        return f"no patient has {_both(core)}{consequence}"

    # ---- W003: an inclusion whose patients an exclusion always removes ----
    def contradictions(self, visits: list[_Visit], never: set[str], always: set[str]) -> None:
        live = {v.criterion.id for v in visits}
        exclusions = [c for c in self.protocol.exclusion if c.id in live and c.id not in always]
        inclusions: list[tuple[_Visit, ir.Expr]] = []
        for visit in visits:
            if visit.criterion.section != "inclusion" or visit.criterion.id in never:
                continue
            parts = criterion_parts(visit.criterion)
            met = conj(*visit.context, parts.applies, parts.met)
            if self.sat(met):
                inclusions.append((visit, met))
        found: dict[tuple[str, str], tuple[_Visit, ir.Expr]] = {}
        passing: dict[str, ir.Expr] = {}  # each exclusion's "not excluded"
        for exclusion in exclusions:
            parts = criterion_parts(exclusion)
            passing[exclusion.id] = neg(conj(parts.applies, parts.met))
        for visit, met in inclusions:
            if self.sat(met, *passing.values()):
                continue  # some patient meets it and passes every exclusion: no pair to look at
            for ident, passed in passing.items():
                if self.sat(met, passed) is False:
                    found[(visit.criterion.id, ident)] = (visit, passed)
        by_id = {c.id: c for c in self.protocol.exclusion}
        for (ident, exclusion_id), (visit, not_excluded) in found.items():
            if any((other, exclusion_id) in found for other in _descendants(visit.criterion)):
                continue  # a sub-criterion carries it
            hint = f"so no patient who meets {ident} can be eligible"
            exclusion = by_id[exclusion_id]
            lines = [x for x in exclusion.items if not isinstance(x, ir.Note)]
            wanted = [(x.expr, describe(x.expr)) for x in visit.criterion.items if isinstance(x, ir.Line)]
            if len(lines) == 1 and isinstance(lines[0], ir.Line) and exclusion.applies is None:
                core = self.core([], wanted, [*visit.context, not_excluded])
                if core:
                    hint += f": {' and '.join(core)} implies {describe(lines[0].expr)}"
            self.warn("W003", id_span(exclusion),
                      f"every patient who meets inclusion {ident} also meets exclusion {exclusion_id}", hint)

    # ---- W008: the same criterion twice ----
    def duplicates(self, visits: list[_Visit]) -> None:
        seen: dict[object, str] = {}
        for visit in visits:
            c = visit.criterion
            signature = (c.section, _signature(c))
            first = seen.setdefault(signature, c.id)
            if first != c.id:
                self.warn("W008", id_span(c), f"criterion {c.id} has the same conditions as {first}",
                          "they decide the same patients; keep one, or tell them apart")

    # ---- W005, W006, W007: declared but unused ----
    def unused(self) -> None:
        fields: set[str] = set()
        definitions: set[str] = set()
        pending: list[ir.Expr] = []
        for c in self.protocol.criteria():
            pending += c.conditions()
        while pending:
            expr = pending.pop()
            for kind, used in _uses(expr):
                if kind == "field":
                    fields.add(used)
                elif used not in definitions:
                    definitions.add(used)
                    pending += [line.expr for line in self.definitions[used].lines()]
        source = self.protocol.source
        for f in self.protocol.fields:
            if f.name in fields:
                continue
            name = _first(f.span, len(f.name))
            shared = "" if f.span.file == source else f" (declared in {f.span.file}, which other protocols may share)"
            if f.type.kind == "judgment":
                self.warn("W006", name, f"judgment '{f.name}' is not used by any criterion",
                          f"investigators would record a judgment that decides nothing{shared}; "
                          "use it in a criterion or remove it")
            else:
                self.warn("W005", name, f"field '{f.name}' is not used by any criterion",
                          f"use it in a criterion or remove the declaration{shared}")
        for d in self.protocol.definitions:
            if d.name not in definitions:
                self.warn("W007", _first(d.span, len(f"define {d.name}")),
                          f"definition '{d.name}' is not used by any criterion",
                          "refer to it from a criterion, or remove it")


# Words about the record's format rather than the patient: null, true/false, leave blank, …
_DATA_CONVENTION = re.compile(
    r"\b(?:null|none recorded|true|false|leave (?:it )?(?:blank|empty)|if (?:missing|absent|blank))\b",
    re.IGNORECASE)


def _conjuncts(part: tuple[ir.Expr, str]) -> list[tuple[ir.Expr, str]]:
    expr = part[0]
    if isinstance(expr, ir.And) and expr.span != NOWHERE:
        return [p for o in expr.operands for p in _conjuncts((o, describe(o)))]
    return [part]


def _both(texts: Sequence[str]) -> str:
    if len(texts) == 2:
        return f"both {texts[0]} and {texts[1]}"
    return "all of: " + "; ".join(texts)


def _when_text(item: ir.When) -> str:
    return f"when {describe(item.condition)}: " + "; ".join(
        describe(b.expr) if isinstance(b, ir.Line) else _when_text(b) for b in item.body)


def _always_hint(c: ir.Criterion, visit: _Visit) -> str:
    if c.section == "exclusion":
        if not visit.ancestors and c.applies is None:
            return "it excludes every patient, so no patient can be eligible"
        return "every patient it applies to meets it"
    return "it screens no patient out; check its conditions"


def _descendants(c: ir.Criterion) -> list[str]:
    return [d.id for d in c.walk()[1:]]


def _signature(c: ir.Criterion) -> object:
    """A criterion's conditions without its id, title and notes (order of parts aside)."""
    parts: list[object] = []
    for item in c.items:
        if isinstance(item, ir.Criterion):
            parts.append(("criterion", _signature(item)))
        elif not isinstance(item, ir.Note):
            parts.append(key(item))
    return (c.combine, c.at_least, key(c.applies), tuple(sorted(parts, key=repr)))


def _uses(expr: ir.Expr) -> Iterator[tuple[str, str]]:
    """("define", name) for each definition the condition uses, ("field", name) for each
    patient field (a list's items are read through the list, which counts as its use)."""
    for node in ir.walk(expr):
        if isinstance(node, ir.DefinitionRef):
            yield "define", node.name
        elif isinstance(node, ir.FieldRef) and node.scope == "patient":
            yield "field", node.field.name


__all__ = ["as_errors", "id_span", "lint", "structure"]
