"""Dimensions for arithmetic: what a derived value measures, its size, and its name in words.

A unit's dimension is known at compile time (`crit.check.units`); arithmetic needs it as powers
of base dimensions (to multiply and divide) and the exact size of one unit in root units (to
bring operands to a common unit). A `Measure` is that pair, with the text the value is shown in.
"""

from __future__ import annotations

import re
from fractions import Fraction

from crit.check.units import _KNOWN_EXPRESSIONS, _registry
from crit.frozen import frozen
from crit.ir import Unit

Dims = tuple[tuple[str, int], ...]  # sorted (base dimension, power), no zero powers

PLAIN: Dims = ()


@frozen
class Measure:
    """What a number measures: its dimensions, the size of one of it in root units, and the
    unit text it is shown in ('' for a plain number)."""

    dims: Dims
    size: Fraction
    text: str


PLAIN_NUMBER = Measure(PLAIN, Fraction(1), "")


def dims_of(dimension: str) -> Dims:
    """Powers of base dimensions from a unit's dimension name (`mass/length^3`)."""
    if dimension == "dimensionless":
        return PLAIN
    powers: dict[str, int] = {}
    up, *down = dimension.split("/")
    for sign, group in ((1, [up]), (-1, down)):
        for part in group:
            for term in part.split("·"):
                if term in ("", "1"):
                    continue
                name, _, power = term.partition("^")
                powers[name] = powers.get(name, 0) + sign * int(power or 1)
    return tuple(sorted((k, v) for k, v in powers.items() if v != 0))


def measure(unit: Unit) -> Measure:
    """A unit as a measure: its dimensions and the exact size of one unit in root units."""
    known = _KNOWN_EXPRESSIONS.get(unit.expression)
    if known is not None:
        size = known[1]
    else:
        size = Fraction(_registry().Quantity(Fraction(1), unit.expression).to_root_units().magnitude)
    return Measure(dims_of(unit.dimension), size * unit.scale, unit.text)


def combine(a: Dims, b: Dims, sign: int) -> Dims:
    """The dimensions of a product (`sign` 1) or a quotient (`sign` -1)."""
    powers = dict(a)
    for name, power in b:
        powers[name] = powers.get(name, 0) + sign * power
    return tuple(sorted((k, v) for k, v in powers.items() if v != 0))


def product_text(a: str, op: str, b: str) -> str:
    """The unit text of a product or quotient of two shown units (`kg/cm·cm`)."""
    if not a and not b:
        return ""
    if op == "×":
        return a or b if not (a and b) else f"{a}·{b}"
    bottom = b if re.fullmatch(r"[^/·]+", b or "") else f"({b})"
    return f"{a or '1'}/{bottom}" if b else a


# ---- the name of a dimension, as a clinician says it -------------------------------------------

_NAMED: dict[Dims, str] = {
    PLAIN: "a plain number",
    (("mass", 1),): "a mass",
    (("length", 1),): "a length",
    (("length", 2),): "an area",
    (("length", 3),): "a volume",
    (("time", 1),): "a time",
    (("substance", 1),): "an amount of substance",
    (("length", -3), ("mass", 1)): "a concentration (mass per volume)",
    (("length", -3), ("substance", 1)): "a molar concentration (amount of substance per volume)",
    (("length", -3),): "a count per volume",
    (("length", -3), ("substance", 1), ("time", -1)): "an enzyme activity per volume",
    (("length", 3), ("time", -1)): "a flow (volume per time, such as a clearance)",
    (("length", 1), ("time", -1)): "a volume per time per body-surface area (such as an eGFR)",
    (("length", -2), ("mass", 1)): "a mass per area (such as a body-mass index)",
    (("mass", 1), ("time", -1)): "a mass per time (such as a daily dose)",
    (("time", -1),): "a rate per time (such as a dose per kilogram per day)",
}

_WORDS = {"mass": "mass", "time": "time", "substance": "amount of substance",
          "international unit": "international units", "current": "current",
          "temperature": "temperature", "luminosity": "luminosity"}
_LENGTH = {1: "length", 2: "area", 3: "volume"}


def describe(dims: Dims) -> str:
    """`a concentration (mass per volume)`, never `mass/length^3`."""
    named = _NAMED.get(dims)
    if named is not None:
        return named
    up = [_word(name, power) for name, power in dims if power > 0]
    down = [_word(name, -power) for name, power in dims if power < 0]
    text = " × ".join(up) or "1"
    if down:
        text += " per " + " per ".join(down)
    return f"a quantity of {text}"


def _word(name: str, power: int) -> str:
    if name == "length" and power in _LENGTH:
        return _LENGTH[power]
    word = _WORDS.get(name, name)
    return word if power == 1 else f"{word} to the power {power}"
