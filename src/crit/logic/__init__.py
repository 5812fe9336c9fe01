"""Formulas and the z3 encoding that lint and diff share: criteria written as conditions on a
complete record (`formula`), and a solver that decides whether such conditions can hold
together (`solver`)."""

from crit.logic.formula import (
    FALSE,
    NOWHERE,
    TRUE,
    Parts,
    combine,
    conj,
    criterion_parts,
    disj,
    eligible,
    expand,
    key,
    line_parts,
    neg,
    passes,
    structure,
)
from crit.logic.solver import DEFAULT_TIMEOUT_MS, Outcome, Solver

__all__ = [
    "DEFAULT_TIMEOUT_MS", "FALSE", "NOWHERE", "TRUE", "Outcome", "Parts", "Solver", "combine", "conj",
    "criterion_parts", "disj", "eligible", "expand", "key", "line_parts", "neg", "passes", "structure",
]
