"""The checker: names, types and units of the parsed protocol, turned into the checked IR."""

from crit.check.checker import check

__all__ = ["check"]
