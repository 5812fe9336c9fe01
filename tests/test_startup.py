"""What `crit build` spends before compiling anything: the parser comes from the saved tables and
the units from `crit.check.unit_table`, never from building the grammar or pint's registry, and both
give exactly what they would give built afresh (issue 9 item 7)."""

from __future__ import annotations

import itertools
import json
import pickle
import subprocess
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from lark import Lark
from lark.exceptions import UnexpectedInput

import crit.check.units as units
from crit.check.unit_table import KNOWN
from crit.syntax import grammar

ROOT = Path(__file__).resolve().parents[1]
JY231 = ROOT / "protocols" / "jy231.crit"
CRIT_FILES = sorted(p for folder in ("protocols", "tests", "examples") if (ROOT / folder).is_dir()
                    for p in (ROOT / folder).rglob("*.crit") if p.is_file())


@pytest.fixture
def fresh_grammar() -> Iterator[None]:
    """The grammar module's caches emptied before and after, so a test sees its own setup."""
    caches = (grammar.parser, grammar.formatter_parser, grammar.keywords, grammar._saved_tables)
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


# ---- the saved parser tables ------------------------------------------------------------------


@pytest.mark.parametrize("options", [grammar.CHECKER, grammar.FORMATTER], ids=["checker", "formatter"])
def test_saved_tables_were_made_from_this_grammar(options: dict[str, bool], fresh_grammar: None) -> None:
    key = grammar.table_key(grammar.grammar_text(), options)
    assert key in grammar._saved_tables(), (
        "src/crit/syntax/parsers.pickle was not made from grammar/crit.lark with this Lark: "
        "run `python -m crit.syntax` and commit the file")


def test_the_parser_is_loaded_not_built(fresh_grammar: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Lark:
        raise AssertionError("the parser was built from the grammar")

    monkeypatch.setattr(grammar, "build", refuse)
    assert grammar.parser().parse(JY231.read_text(encoding="utf-8")).data == "start"
    assert grammar.formatter_parser() is not None
    assert {"when", "and", "ULN"} <= grammar.keywords()


def test_an_edited_grammar_never_uses_the_saved_tables(fresh_grammar: None, monkeypatch: pytest.MonkeyPatch) -> None:
    edited = grammar.grammar_text() + "\n// an edit\n"
    monkeypatch.setattr(grammar, "grammar_text", lambda: edited)
    built: list[str] = []
    real_build = grammar.build

    def spy(text: str | None = None, /, **options: bool) -> Lark:
        built.append(text or "")
        return real_build(text, **options)

    monkeypatch.setattr(grammar, "build", spy)
    grammar.parser()
    assert built == [edited]


def test_unreadable_or_unsafe_tables_are_ignored(fresh_grammar: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> bytes:
        raise FileNotFoundError(grammar.SAVED_FILE)

    # A pickle that would call a function on load is refused, as are garbage and a missing file.
    unsafe, garbage, empty = pickle.dumps({"key": print}), b"not a pickle", b""
    for read in (lambda: unsafe, lambda: garbage, lambda: empty, missing):
        grammar._saved_tables.cache_clear()
        monkeypatch.setattr(grammar, "_saved_bytes", read)
        assert grammar._saved_tables() == {}
    assert grammar.parser().parse('protocol T "t"\n').data == "start"  # built from the grammar instead


def test_an_unreadable_or_unsafe_table_is_built_instead(fresh_grammar: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each table is pickled on its own inside the file: one that is garbage, or would call a
    # function on load, is refused when its parser is asked for, and that parser is built.
    key = grammar.table_key(grammar.grammar_text(), grammar.CHECKER)
    built: list[dict[str, bool]] = []
    real_build = grammar.build

    def spy(text: str | None = None, /, **options: bool) -> Lark:
        built.append(options)
        return real_build(text, **options)

    monkeypatch.setattr(grammar, "build", spy)
    for table in (pickle.dumps({"data": print}), b"not a pickle", pickle.dumps(["not", "a", "table"])):
        grammar._saved_tables.cache_clear()
        grammar.parser.cache_clear()
        monkeypatch.setattr(grammar, "_saved_bytes", lambda table=table: pickle.dumps({key: table}))
        assert grammar.parser().parse('protocol T "t"\n').data == "start"
    assert built == [grammar.CHECKER] * 3


def _outcome(parser: Lark, text: str) -> Any:
    """What a parser makes of a text: its tree, or where and what its error is."""
    try:
        return parser.parse(text)
    except UnexpectedInput as err:
        expected = sorted(getattr(err, "expected", None) or getattr(err, "allowed", None) or ())
        return (type(err).__name__, err.line, err.column, expected, str(getattr(err, "token", "")))
    except grammar.IndentationError_ as err:
        return ("indentation", err.line, err.column, err.message)


@pytest.mark.parametrize("options", [grammar.CHECKER, grammar.FORMATTER], ids=["checker", "formatter"])
def test_saved_parser_reads_every_protocol_as_the_built_one(options: dict[str, bool], fresh_grammar: None) -> None:
    saved, built = grammar.load(**options), grammar.build(**options)
    assert len(CRIT_FILES) > 50
    for path in CRIT_FILES:
        text = path.read_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
        text = text if text.endswith("\n") else text + "\n"
        assert _outcome(saved, text) == _outcome(built, text), path


# ---- the unit table ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_every_table_unit_is_what_pint_says(name: str) -> None:
    assert KNOWN[name] == units.pint_entry(name), \
        "run `python -m crit.check.units` and commit src/crit/check/unit_table.py"


def test_the_table_holds_the_names_it_was_made_from() -> None:
    assert sorted(KNOWN) == sorted(n for group in units.TABLE_NAMES for n in group.split())


UNIT_TEXTS = [
    "g/L", "g/dL", "mg/L", "mg/dL", "ng/mL", "pg/mL", "10^9/L", "10^12/L", "10^3/uL", "10^3/µL",
    "mL/min/1.73m2", "mL/min", "kg/m^2", "kg/m²", "kg/m2", "g/cm^2", "m³", "L", "dL", "fL", "%", "ppm",
    "IU/mL", "mIU/mL", "U/L", "kU/L", "umol/L", "µmol/L", "μmol/L", "mmol/L", "mmol", "mcg", "µg/kg",
    "mg/dL/s", "mg/kg/d", "lb", "kg", "in", "cm", "mm", "ft", "mmHg", "kPa", "cmH2O", "copies/mL", "g/g",
    "kcal/d", "h", "min", "year", "weeks", "K", "1.73m2", "1.73", "m*s", "g·m", "mL/kg/h", "ukat/L",
]


def _units_and_factors() -> tuple[dict[str, Any], dict[tuple[str, str], Any]]:
    units.parse_unit.cache_clear()
    units._KNOWN_EXPRESSIONS.clear()
    read = {text: units.parse_unit(text) for text in UNIT_TEXTS}
    factors: dict[tuple[str, str], Any] = {}
    for a, b in itertools.permutations(UNIT_TEXTS, 2):
        try:
            factors[a, b] = units.factor(read[a], read[b])
        except units.UnitError as err:
            factors[a, b] = (err.message, err.hint)
    return read, factors


def test_table_units_mean_exactly_what_pint_makes_of_them(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        from_table = _units_and_factors()
        assert set(units._KNOWN_EXPRESSIONS) >= {u.expression for u in from_table[0].values()}
        monkeypatch.setattr(units, "KNOWN", {})
        from_pint = _units_and_factors()
        assert set(units._KNOWN_EXPRESSIONS) == {"dimensionless"}  # '1.73': no name to look up
    finally:
        units.parse_unit.cache_clear()
        units._KNOWN_EXPRESSIONS.clear()
    assert from_table[0] == from_pint[0]
    assert from_table[1] == from_pint[1]
    assert all(isinstance(f, Fraction) for f in from_table[1].values() if not isinstance(f, tuple))
    assert from_table[1]["g/dL", "g/L"] == 10
    assert from_table[1]["lb", "kg"] == Fraction(45359237, 100000000)


@pytest.mark.parametrize("text", ["g/furlong", "degC", "kg/degF", "foo", "mEq/L", "10^9/cells"])
def test_units_outside_the_table_are_pint_s_answer(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def outcome() -> Any:
        units.parse_unit.cache_clear()
        try:
            return units.parse_unit(text)
        except units.UnitError as err:
            return (err.message, err.hint)

    try:
        with_table = outcome()
        monkeypatch.setattr(units, "KNOWN", {})
        assert with_table == outcome()
    finally:
        units.parse_unit.cache_clear()
        units._KNOWN_EXPRESSIONS.clear()


# ---- the whole process ------------------------------------------------------------------------

PROBE = """
import json, sys
from crit.syntax import grammar

def refuse(*args, **kwargs):
    raise AssertionError("the parser was built from the grammar")

grammar.build = refuse
from crit.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


@pytest.mark.parametrize("command", ["build", "check"])
def test_compiling_jy231_builds_neither_the_grammar_nor_pint(command: str, tmp_path: Path) -> None:
    args = ["build", str(JY231), "-o", str(tmp_path)] if command == "build" else ["check", str(JY231)]
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=ROOT,
                          check=False)
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["code"] == 0, done.stderr
    loaded = set(result["modules"])
    assert "pint" not in loaded
    assert "numpy" not in loaded
    if command == "build":
        assert (tmp_path / "jy231.py").is_file()
        # what only other commands run: the reference interpreter (`eval --interpret`), the
        # solver (`check`), the FHIR readers (`screen --from fhir`)
        assert not loaded & {"crit.interpret", "z3", "fhirpathpy", "antlr4"}
