"""Units of measure: parsed, checked for dimension and converted exactly, at compile time.

pint supplies the dimensions and the conversion factors (as Fractions, never binary floats);
the clinical notation it does not read (`10^9/L`, `mL/min/1.73m2`, `%`) is handled here.
Generated evaluators never import this module: they receive the factors as exact decimals.

Building pint's registry costs more than compiling a protocol, so the common clinical units are
also in `crit.check.unit_table`, made from pint by `python -m crit.check.units` and checked against it by
tests/test_startup.py: a unit made only of those names is read without pint, and pint is
imported for any other, with the same answers and the same errors either way.
"""

from __future__ import annotations

import functools
import re
from decimal import Decimal
from fractions import Fraction
from typing import Any

from crit.check.unit_table import KNOWN
from crit.ir import Unit
from crit.runtime import terminating
from crit.text import decimal_text


class UnitError(Exception):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint




_FACTOR = re.compile(
    r"^(?P<number>[0-9]+(?:\.[0-9]+)?)?(?:\^(?P<power>[0-9]+))?"
    r"(?P<name>[A-Za-zµμ%][A-Za-z0-9µμ]*)?(?:\^(?P<name_power>[0-9]+)|(?P<superscript>[²³]))?$"
)
_SUPERSCRIPTS = {"²": 2, "³": 3}

# Bounds that keep every unit's arithmetic small: `10^99999999/L` is refused, not computed.
MAX_NUMBER_DIGITS = 30  # in a number written inside a unit, such as 1.73 in mL/min/1.73m2
MAX_SCALE_EXPONENT = 30  # 10^30 in 10^N/L
MAX_UNIT_POWER = 9  # m^3, s^2
MAX_UNIT_PARTS = 8  # g, mL, min … joined by / or *
MAX_SCALE = 10 ** 60  # numerator and denominator of the whole unit's scale

# Spellings common in clinical reports that pint does not know, and the units it lacks.
_ALIASES = {"%": "percent", "µL": "uL", "μL": "uL", "mcL": "uL", "mcg": "ug", "µg": "ug",
            "μg": "ug", "µmol": "umol", "μmol": "umol", "µm": "um", "μm": "um",
            "µkat": "ukat", "μkat": "ukat", "µIU": "uIU", "μIU": "uIU",
            # A count of cells is a pure number: 1500 cells/µL is 1500/µL, exactly 1.5 × 10^9/L.
            "cells": "count", "cell": "count"}
_EXTRA_DEFINITIONS = (
    "international_unit = [international_unit] = IU",
    "copies = [copies]",
)


# What each expression made only of `crit.check.unit_table` names means: dimension, size in root units.
_KNOWN_EXPRESSIONS: dict[str, tuple[str, Fraction]] = {}
# What each unit parsed so far is a ratio of: the dimensions its parts name, even those that
# cancel (`mmol/mol` is a ratio of amounts of substance; `%` and `ppm` name none).
_RATIO_OF: dict[str, frozenset[str]] = {}
# Each parsed unit's dimensions with their powers: `mg/dL` is {[mass]: 1, [length]: -3}.
_DIMENSIONALITY: dict[str, dict[str, int]] = {}
_MOLAR_MASS = {"[mass]": 1, "[substance]": -1}


@functools.cache
def _registry() -> Any:
    import pint  # deferred: only protocols with units pay for it

    registry: Any = pint.UnitRegistry(non_int_type=Fraction)
    for definition in _EXTRA_DEFINITIONS:
        registry.define(definition)
    return registry


@functools.cache
def parse_unit(text: str) -> Unit:
    """Read `g/L`, `10^9/L`, `mL/min/1.73m2`, `kg/m^2`, `kg/m²`, `%` … Raises `UnitError` for
    anything else, and for numbers and powers too large for any clinical unit."""
    parts = re.split(r"([/*·])", text)
    if len(parts) > 1 and parts[0] == "" and parts[1] == "/":
        parts[0] = "1"  # `/mm3`, a count per cubic millimetre, is `1/mm3`
    if len(parts) > 2 * MAX_UNIT_PARTS - 1:
        raise UnitError(f"the unit '{text}' has more than {MAX_UNIT_PARTS} parts", _UNIT_HINT)
    scale = Fraction(1)
    pieces: list[str] = []
    terms: list[tuple[str, int]] = []  # each pint name and its power, negative when divided
    op = "*"
    for index, part in enumerate(parts):
        if index % 2 == 1:
            op = "/" if part == "/" else "*"
            continue
        match = _FACTOR.match(part)
        if not part or match is None:
            raise UnitError(f"cannot read the unit '{text}'", _UNIT_HINT)
        number, power, name = match.group("number"), match.group("power"), match.group("name")
        name_power = match.group("name_power") or match.group("superscript")
        factor = Fraction(1)
        if number is not None:
            if len(number.replace(".", "").lstrip("0")) > MAX_NUMBER_DIGITS:
                raise UnitError(f"the number {number} in the unit '{text}' is too long",
                                f"a number in a unit has at most {MAX_NUMBER_DIGITS} digits")
            if power is not None and (len(power) > 3 or int(power) > MAX_SCALE_EXPONENT):
                raise UnitError(f"the power ^{power} in the unit '{text}' is too large",
                                f"a unit's power of ten is at most {MAX_SCALE_EXPONENT}, "
                                "e.g. 10^9/L or 10^12/L")
            factor = Fraction(number) ** int(power) if power else Fraction(number)
        elif power:
            raise UnitError(f"cannot read the unit '{text}'", _UNIT_HINT)
        scale = scale * factor if op == "*" else scale / factor
        if name:
            exponent = 1
            if name_power is not None:
                exponent = _SUPERSCRIPTS.get(name_power) or int(name_power[:3])
                if len(name_power) > 3 or not 1 <= exponent <= MAX_UNIT_POWER:
                    raise UnitError(f"the power {name_power} of {name} in the unit '{text}' is "
                                    "not one crit reads",
                                    f"write a power from 1 to {MAX_UNIT_POWER}, e.g. kg/m^2 or kg/m²")
            pint_name = _pint_name(name)
            base, _, inner = pint_name.partition("**")
            terms.append((base, exponent * int(inner or 1) * (-1 if op == "/" else 1)))
            if exponent != 1:
                pint_name = f"({pint_name})**{exponent}"
            pieces.append(op + "(" + pint_name + ")")
        elif name_power is not None:
            raise UnitError(f"cannot read the unit '{text}'", _UNIT_HINT)
    if scale == 0:
        raise UnitError(f"the unit '{text}' is scaled by 0", _UNIT_HINT)
    if max(scale.numerator, scale.denominator) > MAX_SCALE:
        raise UnitError(f"the unit '{text}' is scaled by more than 10^60", _UNIT_HINT)
    expression = "".join(pieces).lstrip("*") or "dimensionless"
    if expression.startswith("/"):
        expression = "1" + expression
    known = _from_table(terms)
    if known is not None:
        _KNOWN_EXPRESSIONS[expression] = known
        _RATIO_OF[text] = frozenset(d for name, _ in terms for d, _ in KNOWN[name][0])
        dimensionality: dict[str, int] = {}
        for name, power in terms:
            for dimension, times in KNOWN[name][0]:
                dimensionality[dimension] = dimensionality.get(dimension, 0) + times * power
        _DIMENSIONALITY[text] = {k: v for k, v in dimensionality.items() if v != 0}
        return Unit(text, scale, expression, known[0])
    registry = _registry()
    try:
        quantity = registry.Quantity(Fraction(1), expression)
    except Exception as err:  # pint raises several kinds; all mean "not a unit"
        raise UnitError(f"unknown unit '{text}'", _UNIT_HINT) from err
    if not quantity._is_multiplicative:
        raise UnitError(f"'{text}' is measured from an offset zero, which crit cannot convert exactly",
                        "use a unit with an absolute zero, e.g. K, or compare in the field's own unit")
    _RATIO_OF[text] = frozenset(
        d for name, _ in terms for d in registry.Quantity(Fraction(1), f"({name})").dimensionality
    )
    _DIMENSIONALITY[text] = {k: int(v) for k, v in dict(quantity.dimensionality).items()}
    return Unit(text, scale, expression, _dimension(quantity))


def _pint_name(name: str) -> str:
    name = _ALIASES.get(name, name)
    match = re.match(r"^([A-Za-z]+)([0-9])$", name)
    if match and match.group(1) not in ("IU",):  # m2 is m**2
        return f"{match.group(1)}**{match.group(2)}"
    return name


def _from_table(terms: list[tuple[str, int]]) -> tuple[str, Fraction] | None:
    """The dimension and size in root units of a product of table units, or None if any is not
    in the table (pint then decides)."""
    dimensionality: dict[str, int] = {}
    size = Fraction(1)
    for name, power in terms:
        entry = KNOWN.get(name)
        if entry is None:
            return None
        dimensions, root = entry
        for dimension, times in dimensions:
            dimensionality[dimension] = dimensionality.get(dimension, 0) + times * power
        size *= Fraction(root) ** power
    return _dimension_name({k: v for k, v in dimensionality.items() if v != 0}), size


def _dimension(quantity: Any) -> str:
    """A stable, readable name for a dimension: `mass/length^3`."""
    return _dimension_name(dict(quantity.dimensionality))


def _dimension_name(dimensionality: dict[str, Any]) -> str:
    if not dimensionality:
        return "dimensionless"

    def term(name: str, power: Any) -> str:
        bare = name.strip("[]").replace("_", " ")
        return bare if power == 1 else f"{bare}^{power}"

    up = [term(k, v) for k, v in sorted(dimensionality.items()) if v > 0]
    down = [term(k, -v) for k, v in sorted(dimensionality.items()) if v < 0]
    text = "·".join(up) or "1"
    if down:
        text += "/" + "/".join(down)
    return text


_UNIT_HINT = "write units as in the protocol, e.g. g/L, g/dL, 10^9/L, U/L, mL/min/1.73m2, %, cm"


# Dimensions as a clinician names them; any other is shown as pint's dimension (`mass/time`).
_DIMENSION_WORDS = {
    "mass/length^3": "a mass concentration (mass per volume)",
    "substance/length^3": "a molar concentration (amount of substance per volume)",
    "1/length^3": "a count per volume",
    "copies/length^3": "a count of copies per volume",
    "international unit/length^3": "a concentration in international units per volume",
    "substance/length^3/time": "an enzyme activity per volume",
    "substance/time": "an enzyme activity",
    "international unit": "an amount in international units",
    "mass/length^2": "a mass per area (as body-mass index)",
    "length/time": "a flow per body-surface area (as eGFR)",
    "length^3/time": "a flow (volume per time)",
    "mass/substance": "a molar mass (mass per amount of substance)",
    "mass/length/time^2": "a pressure",
    "length^2·mass/time^2": "an energy",
    "1/time": "a rate (per unit of time)",
    "dimensionless": "a number without a unit (a ratio or a count)",
    "copies": "a number of copies",
    "length^3": "a volume",
    "mass": "a mass",
    "length": "a length",
    "time": "a time",
    "substance": "an amount of substance",
    "temperature": "a temperature",
}


def dimension_words(dimension: str) -> str:
    """What a dimension measures, in words, with its article: `a mass concentration (mass per
    volume)` for `mass/length^3`."""
    return _DIMENSION_WORDS.get(dimension, f"a quantity of {dimension}")


def factor(source: Unit, target: Unit) -> Fraction:
    """The exact number to multiply a value in `source` by to express it in `target`."""
    if source.dimension != target.dimension:
        raise UnitError(
            f"'{source.text}' measures {dimension_words(source.dimension)}, "
            f"not {dimension_words(target.dimension)} like '{target.text}'",
            f"use a unit of {dimension_words(target.dimension).split(' ', 1)[1]}, such as '{target.text}'",
        )
    if source.dimension == "dimensionless":
        _same_kind_of_ratio(source, target)
    known_source = _KNOWN_EXPRESSIONS.get(source.expression)
    known_target = _KNOWN_EXPRESSIONS.get(target.expression)
    if known_source is not None and known_target is not None:
        magnitude: Any = known_source[1] / known_target[1]
    else:
        registry = _registry()
        magnitude = registry.Quantity(Fraction(1), source.expression).to(target.expression).magnitude
    return Fraction(magnitude) * source.scale / target.scale


_RATIO_WORDS = {
    "[substance]": "amounts of substance (a mole ratio)",
    "[mass]": "masses (a mass fraction)",
    "[length]": "volumes or lengths",
    "[time]": "times",
    "[international_unit]": "international units",
    "[copies]": "copies",
}


def _ratio_words(unit: Unit) -> str:
    bases = sorted(_RATIO_OF.get(unit.text, frozenset()))
    if not bases:
        return f"'{unit.text}' is a plain fraction that does not say of what"
    kinds = " and ".join(_RATIO_WORDS.get(b, b.strip("[]").replace("_", " ")) for b in bases)
    return f"'{unit.text}' is a ratio of {kinds}"


def _same_kind_of_ratio(source: Unit, target: Unit) -> None:
    """Two dimensionless units convert only when they are ratios of the same kind of quantity:
    `mmol/mol` (a mole ratio) is not `%` (percent of what?), and `mL/L` is not `g/kg`. Units
    not parsed here (with nothing recorded) are taken as plain fractions."""
    if _RATIO_OF.get(source.text, frozenset()) == _RATIO_OF.get(target.text, frozenset()):
        return
    raise UnitError(
        f"'{source.text}' cannot be converted to '{target.text}': both are ratios without a unit, "
        f"but of different kinds: {_ratio_words(source)}, {_ratio_words(target)}",
        "percent of what? a mole ratio is not a mass fraction; keep one unit for the field, "
        "and if two scales are related by a formula (HbA1c in % and mmol/mol), record the one "
        "the protocol uses",
    )


_MICRO = re.compile(r"(?<![A-Za-z])[uµμ](?=(?:L|g|mol|m|kat|IU)(?![a-z]))")
# A power of a unit name, however written: `m^2`, `m²`, and after a metre, `m2`, `mm3`.
_POWER = re.compile(r"(?<=[A-Za-z])(?:\^([23])|([²³])|(?<=m)([23]))(?![0-9])")
_POWER_STYLES = ({"2": "^2", "3": "^3"}, {"2": "²", "3": "³"}, {"2": "2", "3": "3"})


def spellings(text: str) -> tuple[str, ...]:
    """Other ways a record may spell the unit `text`, all the same unit: `kg/m^2`, `kg/m²`
    and `kg/m2`; `uL`, `µL` (micro sign) and `μL` (Greek mu). `text` itself is not among them."""

    def styled(style: dict[str, str]) -> str:
        return _POWER.sub(lambda m: style[m[1] or m[3] or str(_SUPERSCRIPTS[m[2]])], text)

    powers = {styled(style) for style in _POWER_STYLES}
    out = {_MICRO.sub(micro, spelled) for spelled in powers for micro in ("u", "µ", "μ")}
    return tuple(sorted(out - {text}))


def _root_size(unit: Unit) -> Fraction:
    """How many of pint's root units one `unit` is, exactly."""
    known = _KNOWN_EXPRESSIONS.get(unit.expression)
    if known is not None:
        return known[1] * unit.scale
    root = _registry().Quantity(Fraction(1), unit.expression).to_root_units().magnitude
    return Fraction(root) * unit.scale


def molar_mass(amount: Fraction, unit: Unit) -> Fraction:
    """A molar mass written as `amount unit` (`180.156 g/mol`), exactly, in g/mol. Raises
    `UnitError` for a unit that is not a mass per amount of substance, or a mass of 0."""
    if _DIMENSIONALITY.get(unit.text) != _MOLAR_MASS:
        raise UnitError(f"'{unit.text}' measures {dimension_words(unit.dimension)}, not a molar mass",
                        "write the analyte's molar mass in g/mol, e.g. molar mass 180.156 g/mol for glucose")
    if amount <= 0:
        raise UnitError("a molar mass of 0 converts nothing",
                        "write the analyte's molar mass, e.g. 180.156 g/mol for glucose")
    return amount * _root_size(unit) / _root_size(parse_unit("g/mol"))


def molar_factor(source: Unit, target: Unit, grams_per_mole: Fraction) -> Fraction | None:
    """The exact factor from `source` to `target` when one is a mass concentration and the other
    a molar concentration of one analyte (`mg/dL` and `mmol/L`) of this molar mass; None when
    they are not related that way."""
    have, want = _DIMENSIONALITY.get(source.text), _DIMENSIONALITY.get(target.text)
    if have is None or want is None:
        return None
    difference = {k: have.get(k, 0) - want.get(k, 0) for k in {*have, *want}}
    difference = {k: v for k, v in difference.items() if v != 0}
    mass = grams_per_mole * _root_size(parse_unit("g/mol"))  # in root units
    ratio = _root_size(source) / _root_size(target)
    if difference == _MOLAR_MASS:  # mass per volume to amount per volume: divide by the molar mass
        return ratio / mass
    if difference == {k: -v for k, v in _MOLAR_MASS.items()}:
        return ratio * mass
    return None


def exact_decimal(value: Fraction) -> Decimal | Fraction:
    """A literal or factor in canonical units: a Decimal when it terminates (written plainly),
    else the exact Fraction; the runtime's `terminating` makes the same choice for records."""
    exact = terminating(value)
    return Decimal(decimal_text(exact)) if isinstance(exact, Decimal) else exact


# The names `crit.check.unit_table` holds: the common units of clinical reports that pint reads exactly.
TABLE_NAMES = (
    "g kg mg ug ng pg lb oz",
    "L dL cL mL uL nL fL",
    "mol mmol umol nmol pmol",
    "m cm mm um nm km in ft",
    "s ms min h hr hour d day days week weeks month months year years yr",
    "percent ppm count IU mIU kIU U mU kU kat ukat copies",
    "K mmHg cmH2O Pa kPa kcal cal J kJ Hz",
)


def readme_table() -> str:
    """The README's table of the unit names crit reads without pint, grouped by what they
    measure (tests/test_units.py checks the README holds exactly this)."""
    groups: dict[str, list[str]] = {}
    for group in TABLE_NAMES:
        for name in group.split():
            dimensions, _ = KNOWN[name]
            dimension = _dimension_name(dict(dimensions))
            shown = {"percent": "%", "count": "cells, count"}.get(name, name)
            groups.setdefault(dimension, []).append(f"`{shown}`" if "," not in shown
                                                    else ", ".join(f"`{n}`" for n in shown.split(", ")))
    rows = ["| measures | unit names |", "| --- | --- |"]
    rows += [f"| {dimension_words(dimension)} | {', '.join(names)} |" for dimension, names in groups.items()]
    return "\n".join(rows) + "\n"


def pint_entry(name: str) -> tuple[tuple[tuple[str, int], ...], str]:
    """What pint says a unit name means, as `crit.check.unit_table` records it: its dimensions with
    their powers, and its size in pint's root units as an exact fraction."""
    quantity = _registry().Quantity(Fraction(1), f"({name})")
    if not quantity._is_multiplicative:
        raise UnitError(f"'{name}' is measured from an offset zero", "leave it out of the table")
    dimensions = []
    for dimension, power in sorted(dict(quantity.dimensionality).items()):
        if Fraction(power).denominator != 1:
            raise UnitError(f"'{name}' has a fractional dimension", "leave it out of the table")
        dimensions.append((dimension, int(power)))
    return tuple(dimensions), str(Fraction(quantity.to_root_units().magnitude))


def table_source() -> str:
    """The text of `crit.check.unit_table`, made from pint."""
    import pint

    lines = [f"    {name!r}: {pint_entry(name)!r}," for group in TABLE_NAMES for name in group.split()]
    return (
        '"""Units crit reads without importing pint: each name\'s dimensions (with powers) and its exact\n'
        "size in pint's root units.\n\n"
        f"Made from pint {pint.__version__} by `python -m crit.check.units`; do not edit by hand.\n"
        "tests/test_startup.py checks every entry against the installed pint.\n"
        '"""\n\n'
        "KNOWN: dict[str, tuple[tuple[tuple[str, int], ...], str]] = {\n" + "\n".join(lines) + "\n}\n"
    )


if __name__ == "__main__":
    from pathlib import Path

    target = Path(__file__).with_name("unit_table.py")
    target.write_text(table_source(), encoding="utf-8")
    print(f"wrote {target}")
