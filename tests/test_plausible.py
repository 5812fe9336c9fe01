"""Plausible ranges on numeric fields (issue 10, defect 5): `validate()` refuses a value outside
them, in the generated module and the interpreter alike; Markdown shows them; fmt keeps them."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from types import ModuleType

import pytest

from conftest import compile_text
from crit.backends.markdown import emit_markdown
from crit.interpret import Interpreter
from crit.tools.fmt import format_source

SOURCE = '''protocol T "t"
record Dose "A dose"
  amount: quantity mg from 0 to 5 g "Amount"
patient
  age: integer from 0 to 120 "Age"
  hemoglobin: quantity g/L also g/dL from 2 to 25 g/dL "Hemoglobin"
  weight: quantity lb also kg from 1 to 300 kg "Weight"
  ast: lab U/L from 0 to 50000 "AST"
  haq: decimal? from 0 to 3 "HAQ-DI"
  doses: list of Dose
inclusion
  I1 "Adult with hemoglobin of 90 g/L or more"
    age >= 18
    hemoglobin >= 90 g/L
'''


def test_the_range_is_converted_exactly_to_the_canonical_unit() -> None:
    fields = {f.name: f for f in compile_text(SOURCE).fields}
    hemoglobin, weight = fields["hemoglobin"].plausible, fields["weight"].plausible
    assert hemoglobin is not None and (hemoglobin.low, hemoglobin.high) == (20, 250)
    assert weight is not None and weight.low == Fraction(100000000, 45359237)  # 1 kg in lb, exactly
    assert hemoglobin.text == "2 to 25 g/dL"


@pytest.mark.parametrize(("record", "problems"), [
    ({"age": 18, "hemoglobin": 20, "ast": {"value": 0, "uln": 40}, "haq": 3}, []),
    ({"hemoglobin": 10.8}, ["hemoglobin: 10.8 g/L is outside the plausible range 2 to 25 g/dL; "
                            "check the value and its unit"]),
    ({"hemoglobin": {"value": 10.8, "unit": "g/dL"}}, []),
    ({"age": 121, "haq": None}, ["age: 121 is outside the plausible range 0 to 120; check the value and its unit"]),
    ({"weight": {"value": Decimal("0.999999999999"), "unit": "kg"}}, ["weight"]),
    ({"weight": {"value": 1, "unit": "kg"}}, []),
    ({"ast": {"value": 50001, "uln": 40}}, ["ast.value"]),
    ({"doses": [{"amount": 5000}, {"amount": {"value": 5001, "unit": "mg"}}]}, ["doses[1].amount"]),
])
def test_module_and_interpreter_refuse_the_same_values(
        evaluator: Callable[[str], ModuleType], record: dict[str, object], problems: list[str]) -> None:
    module, interpreter = evaluator(SOURCE), Interpreter(compile_text(SOURCE))
    found = [str(p) for p in module.validate(record)]
    assert found == [str(p) for p in interpreter.validate(record)]
    shown = found if all(": " in p for p in problems) else [p.split(":")[0] for p in found]
    assert shown == problems


def test_markdown_shows_the_range_as_written() -> None:
    text = emit_markdown(compile_text(SOURCE))
    assert "| `hemoglobin` | Hemoglobin | quantity in g/L (also g/dL), plausible from 2 to 25 g/dL | required |" in text
    assert "| `age` | Age | whole number, plausible from 0 to 120 | required |" in text


def test_fmt_keeps_the_range() -> None:
    messy = SOURCE.replace("from 0 to 120", "from   0  to 120").replace("from 2 to 25 g/dL", "from 2 to 25  g/dL")
    assert format_source(messy, "t.crit").replace("\n\n", "\n") == SOURCE.replace("\n\n", "\n")
