"""The AST builder against the grammar: one method per rule, each taking that rule's children.

Everything here is derived from the parser Lark builds from grammar/crit.lark (its rules, their
expansions, which children it filters out and where `[...]` leaves a None), not from a list
written by hand, so a grammar change that the builder does not follow fails here by name.
"""

from __future__ import annotations

import inspect
import sys
from collections import defaultdict
from typing import Any

import pytest
from lark import Lark, Token, Tree
from lark.grammar import NonTerminal, Rule, Symbol
from lark.visitors import v_args

from crit.diagnostics import Collector
from crit.syntax.grammar import CHECKER, build, grammar_text, parser

# crit.syntax re-exports the function `parse`, which hides the module of that name.
builder = sys.modules["crit.syntax.parse"]

CAP = 8  # child counts are followed up to here; CAP stands for "CAP or more"


def _rules_by_origin(lark: Lark) -> dict[str, list[Rule]]:
    by_origin: dict[str, list[Rule]] = defaultdict(list)
    for rule in lark.rules:
        by_origin[rule.origin.name].append(rule)
    return by_origin


def _inlined(symbol: Symbol) -> bool:
    """`_rule` and Lark's helpers for `x*`, `x+` (`__rule_star_0`): spliced into their parent."""
    return symbol.name.startswith("_")


def _makes_tree(rule: Rule, counts: set[int]) -> set[int]:
    """The child counts for which this expansion builds a tree of its own (a `?rule` with one
    child is replaced by that child, unless an alias names it)."""
    if _inlined(rule.origin) and not rule.alias:
        return set()
    if rule.options.expand1 and not rule.alias:
        return counts - {1}
    return counts


def shapes(lark: Lark) -> dict[str, set[int]]:
    """For each tree the parser builds (by rule or alias name), how many children it can have."""
    by_origin = _rules_by_origin(lark)
    spliced: dict[str, set[int]] = {name: set() for name in by_origin if name.startswith("_")}

    def count(symbol: Symbol) -> set[int]:
        if symbol.is_term:
            return {0} if symbol.filter_out or _inlined(symbol) else {1}  # type: ignore[attr-defined]
        return spliced[symbol.name] if _inlined(symbol) else {1}

    def counts(rule: Rule) -> set[int]:
        totals = {sum(rule.options.empty_indices)}  # a None for each `[...]` not written
        for symbol in rule.expansion:
            totals = {min(a + b, CAP) for a in totals for b in count(symbol)}
        return totals

    changed = True
    while changed:  # the spliced helpers are recursive: grow their counts to a fixed point
        changed = False
        for name in spliced:
            grown = set().union(*(counts(rule) for rule in by_origin[name]))
            if grown != spliced[name]:
                spliced[name], changed = grown, True
    trees: dict[str, set[int]] = defaultdict(set)
    for rule in lark.rules:
        made = _makes_tree(rule, counts(rule))
        if made:
            trees[rule.alias or rule.origin.name] |= made
    return dict(trees)


def parents(lark: Lark) -> dict[str, set[str]]:
    """For each tree, the trees it can stand in as a child."""
    by_origin = _rules_by_origin(lark)

    def trees_of(symbol: str, seen: frozenset[str] = frozenset()) -> set[str]:
        """The trees a symbol stands for where it is written: its own, or a passed-up child's."""
        if symbol in seen:
            return set()
        found: set[str] = set()
        for rule in by_origin[symbol]:
            if _inlined(rule.origin) or (rule.options.expand1 and not rule.alias and _single(rule)):
                for inner in rule.expansion:
                    if isinstance(inner, NonTerminal):
                        found |= trees_of(inner.name, seen | {symbol})
            else:
                found.add(rule.alias or rule.origin.name)
        return found

    result: dict[str, set[str]] = defaultdict(set)
    for rule in lark.rules:
        if _inlined(rule.origin) or (rule.options.expand1 and not rule.alias and _single(rule)):
            continue
        for symbol in rule.expansion:
            if isinstance(symbol, NonTerminal):
                for child in trees_of(symbol.name):
                    result[child].add(rule.alias or rule.origin.name)
    return dict(result)


def _single(rule: Rule) -> bool:
    kept = [s for s in rule.expansion if not (s.is_term and (s.filter_out or _inlined(s)))]  # type: ignore[attr-defined]
    return len(kept) == 1 and not _inlined(kept[0])


def read_as_text(lark: Lark) -> set[str]:
    """Trees found only inside a `unit`, which the builder reads from the source text."""
    return {name for name, owners in parents(lark).items() if owners == {"unit"}}


def methods(walker: type) -> dict[str, Any]:
    """The builder's rule methods: those `v_args` wrapped, by name."""
    return dict(builder._rule_methods(walker))


def disagreements(walker: type, lark: Lark) -> list[str]:
    """Every rule without a method, every method that cannot take a number of children its rule
    can have (or, for a rule of fixed shapes, takes a number it never has), and every method for a
    rule the parser never builds."""
    found = []
    rules = shapes(lark)
    skipped = read_as_text(lark)
    wrapped = methods(walker)
    for name, counts in sorted(rules.items()):
        if name in skipped:
            continue
        if name not in wrapped:
            found.append(f"{name}: no method")
            continue
        signature = inspect.signature(wrapped[name].base_func)
        for n in range(CAP + 1):
            try:
                signature.bind(None, None, *[None] * n)  # self, meta, the children
                takes = True
            except TypeError:
                takes = False
            if n in counts and not takes:
                found.append(f"{name}: cannot take the {n} children the rule has")
            elif CAP not in counts and n not in counts and takes:  # a rule of fixed shapes
                found.append(f"{name}: takes {n} children, which the rule never has")
    found.extend(f"{name}: a method for no rule" for name in sorted(set(wrapped) - set(rules)))
    return found


def test_every_rule_the_parser_builds_has_a_method_that_takes_its_children() -> None:
    lark = parser()
    assert len(shapes(lark)) > 60  # the derivation found the grammar's rules
    assert disagreements(builder._Builder, lark) == []


def test_only_unit_factors_are_read_as_text() -> None:
    assert read_as_text(parser()) == {"unit_factor"}
    assert "unit_factor" not in methods(builder._Builder)


def test_the_derivation_knows_the_shapes_of_known_rules() -> None:
    rules = shapes(parser())
    assert rules["compare"] == {3}  # sum COMP_OP sum
    assert rules["field_decl"] == {6}  # NAME type_expr [OPTIONAL] [plausible] [measured] [STRING]
    assert rules["quantity"] == {2, 3}  # NUMBER unit, NUMBER TIMES unit
    assert rules["uln"] == {1, 2}
    assert rules["or_expr"] == set(range(2, CAP + 1))
    assert "expr" not in rules and "value" not in rules  # `?` rules pass their one child up


@v_args(inline=True, meta=True)
class _MissesAChild(builder._Builder):  # type: ignore[misc, name-defined]
    """`compare` written as if the rule had no operator child."""

    def compare(self, meta: Any, left: Tree[Token], right: Tree[Token]) -> Any:
        raise AssertionError("never called with the wrong number of children")


def test_a_method_that_disagrees_with_its_rule_is_caught() -> None:
    assert disagreements(_MissesAChild, parser()) == [
        "compare: takes 2 children, which the rule never has",
        "compare: cannot take the 3 children the rule has",
    ]
    text = 'protocol P "p"\ninclusion\n  I1 "x"\n    age >= 18\n'
    with pytest.raises(TypeError):
        _MissesAChild("p.crit", text, Collector()).visit(parser().parse(text))


@pytest.fixture(scope="module")
def grown_grammar() -> Lark:
    """The grammar with one more child in `between` (`age between 18 and 75 "years"`)."""
    text = grammar_text()
    rule = '| sum "between" sum "and" sum               -> between'
    assert rule in text
    return build(text.replace(rule, '| sum "between" sum "and" sum [STRING]      -> between'), **CHECKER)


def test_a_grammar_change_that_shifts_children_fails_loudly(grown_grammar: Lark) -> None:
    assert disagreements(builder._Builder, grown_grammar) == [
        "between: takes 3 children, which the rule never has",
        "between: cannot take the 4 children the rule has",
    ]
    text = 'protocol P "p"\ninclusion\n  I1 "x"\n    age between 18 and 75\n'
    with pytest.raises(TypeError):
        builder._Builder("p.crit", text, Collector()).visit(grown_grammar.parse(text))


def test_a_rule_without_a_method_fails_loudly() -> None:
    with pytest.raises(AssertionError, match="'verdict' has no method"):
        builder._Builder("p.crit", "", Collector()).visit(Tree("verdict", []))
