"""crit: a compiler for clinical-trial eligibility criteria."""

__version__ = "0.1.0"
