"""Units: ratios of different kinds never convert (issue 10, defect 1), counts per volume as
clinicians write them, other spellings of a unit in records, and the README's unit table."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from types import ModuleType

import pytest

from conftest import ROOT, compile_text
from crit.check.units import UnitError, factor, parse_unit, readme_table, spellings
from crit.diagnostics import CritError
from crit.interpret import Interpreter


def _codes(source: str) -> list[str]:
    with pytest.raises(CritError) as caught:
        compile_text(source)
    return [d.code for d in caught.value.diagnostics]


def test_hba1c_in_percent_also_mmol_per_mol_is_refused() -> None:
    # 64 mmol/mol is about 8.0 % on the NGSP scale, not 6.4 %: the relation is not a ratio.
    source = ('protocol T "t"\npatient\n  hba1c: quantity % also mmol/mol\n'
              'inclusion\n  I1 "x"\n    hba1c <= 8 %\n')
    assert _codes(source) == ["E104"]


def test_a_literal_in_a_ratio_of_another_kind_is_refused() -> None:
    source = 'protocol T "t"\npatient\n  hba1c: quantity %\ninclusion\n  I1 "x"\n    hba1c >= 53 mmol/mol\n'
    assert _codes(source) == ["E204"]


@pytest.mark.parametrize(("source", "target"), [
    ("%", "mmol/mol"), ("mmol/mol", "%"), ("mL/L", "%"), ("g/kg", "mmol/mol"), ("mg/kg", "ppm"),
])
def test_ratios_of_different_kinds_do_not_convert(source: str, target: str) -> None:
    with pytest.raises(UnitError, match="different kinds"):
        factor(parse_unit(source), parse_unit(target))


@pytest.mark.parametrize(("source", "target", "expected"), [
    ("ppm", "%", Fraction(1, 10000)), ("mg/g", "g/kg", Fraction(1)), ("mmol/mol", "umol/mol", Fraction(1000)),
    ("/mm3", "10^9/L", Fraction(1, 1000)), ("/mm³", "10^9/L", Fraction(1, 1000)),
    ("cells/µL", "10^9/L", Fraction(1, 1000)), ("/µL", "10^9/L", Fraction(1, 1000)),
    ("10^3/µL", "10^9/L", Fraction(1)), ("10^3/uL", "10^9/L", Fraction(1)), ("kg/m²", "kg/m^2", Fraction(1)),
])
def test_exact_conversions(source: str, target: str, expected: Fraction) -> None:
    assert factor(parse_unit(source), parse_unit(target)) == expected


def test_spellings_of_one_unit() -> None:
    assert set(spellings("kg/m^2")) == {"kg/m²", "kg/m2"}
    assert set(spellings("cells/µL")) == {"cells/uL", "cells/μL"}
    assert spellings("g/L") == ()
    for text in ("kg/m^2", "10^3/uL", "/mm3", "mL/min/1.73m2"):
        for other in spellings(text):
            assert factor(parse_unit(other), parse_unit(text)) == 1


_COUNTS = '''protocol T "t"
patient
  anc: quantity 10^9/L also /mm3, cells/µL "Absolute neutrophil count"
  bmi: quantity kg/m^2 "Body-mass index"
inclusion
  I1 "Neutrophils at least 1,500 per mm3"
    anc >= 1500 /mm3
  I2 "BMI below 30"
    bmi < 30 kg/m²
'''


@pytest.mark.parametrize(("record", "i1", "i2"), [
    ({"anc": {"value": 1500, "unit": "/mm3"}, "bmi": {"value": 29.9, "unit": "kg/m²"}}, "met", "met"),
    ({"anc": {"value": 1499, "unit": "cells/uL"}, "bmi": {"value": 30, "unit": "kg/m2"}}, "not met", "not met"),
    ({"anc": {"value": "1.5", "unit": "10^9/L"}, "bmi": 25}, None, "met"),
    ({"anc": {"value": 1.5}, "bmi": {"value": 25, "unit": "kg/m^2"}}, "met", "met"),
])
def test_records_use_any_spelling_of_an_accepted_unit(
        evaluator: Callable[[str], ModuleType], record: dict[str, object], i1: str | None, i2: str) -> None:
    module = evaluator(_COUNTS)
    interpreter = Interpreter(compile_text(_COUNTS))
    if i1 is None:
        assert [p.path for p in module.validate(record)] == ["anc.value"]
        assert [p.path for p in interpreter.validate(record)] == ["anc.value"]
        return
    for screening in (module.evaluate(record), interpreter.evaluate(record)):
        assert [str(screening.outcome(c)) for c in ("I1", "I2")] == [i1, i2]


def test_an_unknown_unit_in_a_record_names_the_accepted_ones(evaluator: Callable[[str], ModuleType]) -> None:
    module = evaluator(_COUNTS)
    (problem,) = module.validate({"anc": {"value": 1500, "unit": "mm3"}})
    assert problem.path == "anc.unit" and "/mm3" in problem.message and "cells/µL" in problem.message


def test_readme_lists_the_unit_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_table() in readme, "README's unit table is stale: paste crit.check.units.readme_table()"



_GLUCOSE = '''protocol T "t"
patient
  glucose: quantity mmol/L also mg/dL as glucose molar mass 180.156 g/mol "Fasting plasma glucose"
inclusion
  I1 "Fasting plasma glucose below 126 mg/dL"
    glucose < 126 mg/dL
'''


def test_an_analyte_converts_mass_and_molar_concentrations_exactly() -> None:
    (field,) = compile_text(_GLUCOSE).fields
    assert field.type.record_units() == {"mg/dL": Fraction(10, 180156) * 1000}  # 1 mg/dL = 10 mg/L
    line = compile_text(_GLUCOSE).inclusion[0].items[0]
    assert line.expr.right.value == Fraction(126 * 10 * 1000, 180156)  # type: ignore[union-attr]


@pytest.mark.parametrize(("glucose", "outcome"), [
    ({"value": 125, "unit": "mg/dL"}, "met"), ({"value": 126, "unit": "mg/dL"}, "not met"),
    # 126 mg/dL is 6.99393858…mmol/L, which no decimal writes: the boundary is exact either way
    ({"value": Decimal("6.9939385"), "unit": "mmol/L"}, "met"), (Decimal("6.9939386"), "not met"),
])
def test_an_analyte_in_either_unit(evaluator: Callable[[str], ModuleType], glucose: object, outcome: str) -> None:
    module, interpreter = evaluator(_GLUCOSE), Interpreter(compile_text(_GLUCOSE))
    for screening in (module.evaluate({"glucose": glucose}), interpreter.evaluate({"glucose": glucose})):
        assert str(screening.outcome("I1")) == outcome


def test_an_analyte_is_rendered_and_formatted() -> None:
    from crit.backends.markdown import emit_markdown
    from crit.tools.fmt import format_source

    text = emit_markdown(compile_text(_GLUCOSE))
    assert ("quantity in mmol/L (also mg/dL; converted with the molar mass of glucose, 180.156 g/mol)"
            in text)
    messy = _GLUCOSE.replace("as glucose molar mass", "as  glucose   molar mass")
    assert format_source(messy, "t.crit").replace("\n\n", "\n") == _GLUCOSE


@pytest.mark.parametrize(("line", "english"), [
    ("anc >= 1500 x 1/mm3", "Absolute neutrophil count ≥ 1500 /mm³"),
    ("anc >= 1500 /mm3", "Absolute neutrophil count ≥ 1500 /mm³"),
    ("anc >= 1.5 x 10^9/L", "Absolute neutrophil count ≥ 1.5 × 10^9/L"),
    ("bmi < 30 kg/m^2", "Body-mass index < 30 kg/m²"),
])
def test_counts_per_volume_read_naturally(line: str, english: str) -> None:
    from crit import ir
    from crit.english import describe

    source = _COUNTS.split("inclusion")[0] + f'inclusion\n  I1 "x"\n    {line}\n'
    item = compile_text(source).inclusion[0].items[0]
    assert isinstance(item, ir.Line) and describe(item.expr) == english
