"""Screening a cohort: results in input order (`screen`) and the attrition report (`report`)."""
