"""Parsing: `.crit` text to the AST of `crit.ast`, or diagnostics with positions."""

from crit.syntax.grammar import keywords
from crit.syntax.parse import parse

__all__ = ["keywords", "parse"]
