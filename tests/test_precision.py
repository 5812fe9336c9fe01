"""No needless review from applicability: a record with facts missing goes to review only when
the criteria's structure (`when` lines, criteria's `when`, `requires any / at least N`, nested
sub-criteria) lets some values of its conditions change the decision.

Two measures, on random protocols (tests/strategies.py) and on JY231's vignettes with facts
removed:

- **structure oracle** (asserted): every condition a line, a `when` or a criterion's `when`
  holds is taken at its three-valued value, and each unknown one, occurrence by occurrence,
  is tried true and false; the criteria are then worked out concretely (brute force, no
  runtime code). Whenever the module or the interpreter says "needs review", some of these
  tries must give different decisions: no review is caused by applicability. And a decision
  they reach must be the decision of every try.
- **needless reviews** (measured, printed with -s): a "needs review" although every
  completion of the missing facts (enumerated exhaustively) gives the same decision. What is
  left comes from Kleene logic inside conditions (`x or not x`, `f between 5 and 3`, a field in
  two conditions, a member test that every value passes) and from one missing fact behind
  several conditions (correlated unknowns), which the logic takes as independent.

    CRIT_PRECISION_EXAMPLES=200 python -m pytest tests/test_precision.py -q -s
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from conftest import ROOT, compile_text, import_module
from crit import ir
from crit.backends.python import emit_python
from crit.interpret import Interpreter, _Env, all_of
from strategies import Schema, _choices, completions, holes, protocols, records

EXAMPLES = int(os.environ.get("CRIT_PRECISION_EXAMPLES", "12"))
RECORDS_PER_PROTOCOL = int(os.environ.get("CRIT_PRECISION_RECORDS", "12"))
LIMIT = 512  # completions enumerated exhaustively up to this many; records with more are not counted
LEAVES = 14  # unknown conditions tried exhaustively up to this many
COUNTS: dict[str, dict[str, int]] = {
    source: {"records with facts missing": 0, "needs review": 0, "enumerated": 0, "needless": 0,
             "structure tried": 0}
    for source in ("random", "jy231")}

NEEDLESS: dict[str, list[tuple[str, ...]]] = {"random": [], "jy231": []}  # the first few: what was missing

# ---- the structure oracle ------------------------------------------------------------------

Leaf = Callable[[ir.Expr], bool]


def _definitions(interpreter: Interpreter, values: dict[str, Any]) -> dict[str, Any]:
    definitions: dict[str, Any] = {}
    for definition in interpreter.protocol.definitions:
        facts = [interpreter.line(line, _Env(values, definitions)) for line in definition.lines()]
        definitions[definition.name] = facts[0] if len(facts) == 1 else all_of(*facts)
    return definitions


def _combine(combine: str, at_least: int, parts: list[str]) -> str:
    applying = [p for p in parts if p != "na"]
    if not applying:
        return "na"
    if combine == "any":
        return "met" if "met" in applying else "not met"
    if combine == "at_least":
        return "met" if applying.count("met") >= at_least else "not met"
    return "not met" if "not met" in applying else "met"


def _line(item: ir.Line | ir.When, leaf: Leaf) -> str:
    if isinstance(item, ir.Line):
        return "met" if leaf(item.expr) else "not met"
    if not leaf(item.condition):
        return "na"
    return _combine("all", 0, [_line(b, leaf) for b in item.body])


def _criterion(c: ir.Criterion, leaf: Leaf) -> str:
    if c.applies is not None and not leaf(c.applies):
        return "na"
    parts = [_criterion(i, leaf) if isinstance(i, ir.Criterion) else _line(i, leaf)
             for i in c.items if not isinstance(i, ir.Note)]
    return _combine(c.combine, c.at_least, parts)


def structure_decisions(interpreter: Interpreter, record: dict[str, Any]) -> set[str] | None:
    """The decisions reached when each unknown condition that is reached (each occurrence on
    its own; not those under a `when` that is false) is tried true and false; None if a
    criterion takes more than 2^LEAVES tries. Top-level criteria share no occurrence, so each
    is tried on its own: ineligible is reached if one can refuse, eligible if none must."""
    values = interpreter.read(record, [])
    env = _Env(values, _definitions(interpreter, values))
    known: dict[int, bool | None] = {}
    out: set[str] = set()
    refusals = [(c, "not met") for c in interpreter.protocol.inclusion]
    refusals += [(c, "met") for c in interpreter.protocol.exclusion]
    must_refuse = False
    for criterion, refusal in refusals:
        outcomes = _tried(criterion, interpreter, env, known)
        if outcomes is None:
            return None
        if refusal in outcomes:
            out.add("ineligible")
        must_refuse = must_refuse or outcomes == {refusal}
    if not must_refuse:
        out.add("eligible")
    return out


class _Guesses:
    """The conditions' values on one try: the known ones, and guesses for the unknown ones in
    the order they are reached (`short` once one is reached past the guesses)."""

    def __init__(self, interpreter: Interpreter, env: _Env, known: dict[int, bool | None],
                 guesses: list[bool]) -> None:
        self.interpreter, self.env, self.known, self.guesses = interpreter, env, known, guesses
        self.used = 0
        self.short = False

    def __call__(self, expr: ir.Expr) -> bool:
        if id(expr) not in self.known:
            self.known[id(expr)] = self.interpreter.expr(expr, self.env).value
        value = self.known[id(expr)]
        if value is not None:
            return value
        if self.used < len(self.guesses):
            self.used += 1
            return self.guesses[self.used - 1]
        self.short = True
        return True


def _tried(criterion: ir.Criterion, interpreter: Interpreter, env: _Env,
           known: dict[int, bool | None]) -> set[str] | None:
    """The criterion's outcomes over every way its unknown conditions can come out."""
    out: set[str] = set()
    pending: list[list[bool]] = [[]]
    tries = 0
    while pending:
        guesses = pending.pop()
        tries += 1
        if tries > 2 ** LEAVES:
            return None
        leaf = _Guesses(interpreter, env, known, guesses)
        outcome = _criterion(criterion, leaf)
        if leaf.short:
            pending += [[*guesses, True], [*guesses, False]]
        else:
            out.add(outcome)
    return out


def check(source: str, module: Any, interpreter: Interpreter, record: dict[str, Any],
          fills: Iterator[dict[str, Any]] | None) -> None:
    """The structure oracle's assertion on one record, and the needless-review count."""
    counts = COUNTS[source]
    if module.validate(record):
        return
    decision = module.decide(record).value
    assert interpreter.evaluate(record).decision.value == decision
    assert module.evaluate(record).decision.value == decision
    if fills is None:
        return
    counts["records with facts missing"] += 1
    tried = structure_decisions(interpreter, record)
    if tried is not None:
        counts["structure tried"] += 1
        if decision == "needs review":
            assert len(tried) > 1, ("needless review from applicability", record)
        else:
            assert tried == {decision}, ("the structure contradicts the decision", record)
    if decision != "needs review":
        return
    counts["needs review"] += 1
    decided = {module.decide(full).value for full in fills}  # the module agrees with the interpreter
    if not decided or "needs review" in decided:  # too many completions, or other facts missing
        return
    counts["enumerated"] += 1
    counts["needless"] += len(decided) == 1
    if len(decided) == 1 and len(NEEDLESS[source]) < 5:
        NEEDLESS[source].append(module.evaluate(record).missing)


# ---- random protocols --------------------------------------------------------------------


def _every_completion(schema: Schema, record: dict[str, Any]) -> Iterator[dict[str, Any]] | None:
    gaps = holes(schema, record)
    if not gaps:
        return None
    total = 1
    for _, kind in gaps:
        total *= len(_choices(kind))
    return completions(schema, record, limit=LIMIT) if total <= LIMIT else iter(())


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
@given(protocols(), st.data())
def test_random_protocols_review_only_when_the_structure_can_change_the_decision(
        tmp_path_factory: Any, case: tuple[str, Schema], data: st.DataObject) -> None:
    source, schema = case
    protocol = compile_text(source)
    path: Path = tmp_path_factory.mktemp("precision") / "random_protocol.py"
    path.write_text(emit_python(protocol, source), encoding="utf-8")
    module = import_module(path)
    interpreter = Interpreter(protocol)
    for _ in range(RECORDS_PER_PROTOCOL):
        record = data.draw(records(schema))
        check("random", module, interpreter, record, _every_completion(schema, record))


# ---- JY231: the vignettes with facts removed -------------------------------------------------


def _jy231_choices(interpreter: Interpreter, vignettes: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Values a removed JY231 field may take: both truth values, every member of an enum, the
    values the vignettes give it, and for a number, a titer or a laboratory value, each side of
    every threshold the protocol compares it with (so no completion that crosses one is left out)."""
    seen: dict[str, dict[str, Any]] = {}

    def add(name: str, value: Any) -> None:
        seen.setdefault(name, {})[json.dumps(value, sort_keys=True, default=str)] = value

    for vignette in vignettes:
        for key, value in vignette.items():
            add(key, value)
    protocol = interpreter.protocol
    expressions = [line.expr for d in protocol.definitions for line in d.lines()]
    for criterion in protocol.criteria():
        expressions += [e for e in (criterion.applies,) if e is not None]
        items: list[Any] = list(criterion.items)
        while items:
            item = items.pop()
            if isinstance(item, ir.Line):
                expressions.append(item.expr)
            elif isinstance(item, ir.When):
                expressions.append(item.condition)
                items += item.body
    for expression in expressions:
        for node in ir.walk(expression):
            for name, kind, limit in _thresholds(node):
                for step in (-1, 0, 1):
                    add(name, _near(kind, limit, step))
    out: dict[str, list[Any]] = {}
    for field in protocol.fields:
        kind = field.type.kind
        if kind in ("bool", "judgment"):
            out[field.name] = [True, False]
        elif kind == "enum":
            assert field.type.enum is not None
            out[field.name] = list(field.type.enum.member_names())
        else:
            out[field.name] = list(seen.get(field.name, {}).values())
    return out


def _thresholds(node: ir.Node) -> Iterator[tuple[str, str, Any]]:
    """(field, kind, literal) for each comparison of a patient field with a literal."""
    if isinstance(node, ir.Compare | ir.Between):
        value = node.left if isinstance(node, ir.Compare) else node.value
        limits = [node.right] if isinstance(node, ir.Compare) else [node.low, node.high]
        if isinstance(value, ir.FieldRef) and value.scope == "patient":
            for limit in limits:
                if isinstance(limit, ir.Const):
                    yield value.field.name, value.field.type.kind, limit.value
    if isinstance(node, ir.UlnCompare) and node.lab.scope == "patient":
        yield node.lab.field.name, "uln", node.multiple


def _near(kind: str, limit: Any, step: int) -> Any:
    """A value just below (-1), at (0) or just above (1) a threshold, as a record writes it."""
    if kind == "uln":  # a multiple of an upper limit of normal of 100
        return {"value": float(limit * 100 + step), "uln": 100}
    if kind == "titer":
        return f"1:{max(1, int(limit * 2 ** step))}"
    if kind == "integer":
        return int(limit) + step
    if kind == "date":
        return (limit + datetime.timedelta(days=step)).isoformat()
    if kind == "lab":
        return {"value": float(limit) + step / 10, "uln": float(limit)}
    return float(limit) + step / 10  # decimal and quantity, in the field's own unit


def test_jy231_vignettes_with_facts_removed(jy231: Any) -> None:
    from test_jy231 import VIGNETTES

    interpreter = Interpreter(load_jy231())
    vignettes = [record for _, record, _, _ in VIGNETTES if _valid(jy231, record)]  # not those testing refusals
    choices = _jy231_choices(interpreter, vignettes)
    rng = random.Random(231)
    for record in vignettes:
        present = sorted(k for k in record if len(choices.get(k, ())) > 1)  # one value: nothing to vary
        for _ in range(int(os.environ.get("CRIT_PRECISION_JY231", "2"))):
            removed = rng.sample(present, k=min(len(present), rng.randint(1, 3)))
            partial = {k: v for k, v in record.items() if k not in removed}
            fills = (full for pick in itertools.product(*(choices[k] for k in removed))
                     if _valid(jy231, full := partial | dict(zip(removed, pick, strict=True))))  # plausible only
            check("jy231", jy231, interpreter, partial, fills)


def _valid(module: Any, record: dict[str, Any]) -> bool:
    return not module.validate(record)


def load_jy231() -> ir.Protocol:
    from crit.driver import load

    return load(ROOT / "protocols" / "jy231.crit")


def test_the_structure_oracle_finds_the_e6_review_needless(jy231: Any) -> None:
    """The issue's case, and the oracle itself: sex unknown, not pregnant, not breastfeeding,
    no pregnancy planned. No value of sex makes E6 exclude, so the patient is eligible."""
    interpreter = Interpreter(load_jy231())
    base = json.loads((ROOT / "examples" / "patient-sle.json").read_text(encoding="utf-8"))
    record = {k: v for k, v in base.items() if k != "sex"} | {
        "pregnant": False, "breastfeeding": False, "pregnancy_planned": False}
    assert structure_decisions(interpreter, record) == {"eligible"}
    assert jy231.decide(record).value == "eligible"
    assert jy231.evaluate(record).outcome("E6").value == "not met"
    pregnant = record | {"pregnant": True}  # now sex decides: female is excluded
    assert structure_decisions(interpreter, pregnant) == {"eligible", "ineligible"}
    assert jy231.decide(pregnant).value == "needs review"


def test_the_structure_oracle_sees_through_nested_gates(evaluator: Any) -> None:
    """A sub-criterion under a gated exclusion: were the gate false, the exclusion would not
    apply whatever the sub-criterion gives, so its value under the gate is what counts."""
    source = '''protocol P "nested gates"

patient
  c: bool
  x: bool
  y: bool

inclusion
  I1 "always"
    true

exclusion
  E1 "gated" when c
    x
    E1.1 "inner"
      y
'''
    module = evaluator(source)
    interpreter = Interpreter(compile_text(source))
    record = {"x": True, "y": False}  # c missing: E1 is not met (c true) or not applicable
    for e in (module, interpreter):
        result = e.evaluate(record)
        assert result.decision.value == "eligible"
        assert result.outcome("E1").value == "not met or not applicable"
        assert result.outcome("E1.1").value == "not met or not applicable"
    assert structure_decisions(interpreter, record) == {"eligible"}
    assert module.decide(record | {"y": True}).value == "needs review"


def test_zz_report_needless_reviews() -> None:
    """Prints the needless-review rate (visible with -s; the README quotes it)."""
    for source, counts in COUNTS.items():
        enumerated = counts["enumerated"]
        rate = f"{100 * counts['needless'] / enumerated:.1f}%" if enumerated else "n/a"
        print(f"\nneedless reviews ({source}): {counts['needless']} of {enumerated} reviews whose completions"
              f" were all enumerated ({rate}); {counts}; the first missed: {NEEDLESS[source]}")
