"""The SQL backend and the table layout: golden SQL for a small protocol, every dialect parses
back, the JSON Schema accepts the records crit accepts (JY231's samples and vignettes) and refuses
what it refuses, hostile text cannot inject SQL, each SQL-backend diagnostic, and the CLI
(`crit build --sql`, `crit schema`). The differential tests are in test_sql_differential.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import duckdb
import jsonschema
import pytest
import sqlglot
from click.testing import CliRunner
from sqlglot import exp

from conftest import ROOT, compile_text
from crit import cli
from crit.ast import Span
from crit.backends.sql import DIALECTS, emit_sql
from crit.diagnostics import CritError
from crit.driver import load
from crit.interpret import Interpreter
from crit.sources import tables
from crit.sources.records import loads
from test_build import HOSTILE
from test_sql_differential import run_sql

SMALL = '''protocol S "A small protocol"

enum Kind
  x "X"
  y "Y"

record Dose
  drug: text
  day: date

patient
  screening: date
  age: integer
  weight: quantity kg also lb
  alt: lab U/L
  kind: Kind
  tags: set of Kind
  last_vaccine: date?
  doses: list of Dose
  consent: judgment

define adult: age >= 18

inclusion
  I1 "Adult, consented"
    adult
    consent
  I2 "Liver" when kind is x
    alt <= 3.0 x ULN
    weight between 40 kg and 200 lb

exclusion
  E1 "Recent vaccine or dosing" requires any
    last_vaccine within 4 weeks before screening
    any(doses where day within 1 months before screening)
    tags has all of (x, y)
'''


_EMITTED: dict[tuple[str, str], str] = {}


def emitted(protocol: Any, dialect: str) -> str:
    """emit_sql, once per protocol and dialect in this module (JY231 takes a second)."""
    key = (protocol.source + protocol.title, dialect)
    if key not in _EMITTED:
        _EMITTED[key] = emit_sql(protocol, dialect)
    return _EMITTED[key]


@pytest.fixture(scope="module")
def small() -> Any:
    return compile_text(SMALL, "small.crit")


@pytest.fixture(scope="module")
def jy231() -> Any:
    return load(ROOT / "protocols" / "jy231.crit")


def test_golden_sql_for_a_small_protocol(small: Any, golden: Callable[[str, str], None]) -> None:
    golden("small.duckdb.sql", emitted(small, "duckdb"))
    golden("small.spark.sql", emitted(small, "spark"))


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_dialect_parses_back(jy231: Any, small: Any, dialect: str) -> None:
    """The small protocol in every dialect; JY231 (a second to write and to parse) in the
    dialects `crit screen` runs, DuckDB and Spark."""
    for protocol in (jy231, small) if dialect in ("duckdb", "spark") else (small,):
        parsed = sqlglot.parse(emitted(protocol, dialect), read=dialect)
        assert len([p for p in parsed if p is not None]) == 1
        for statement in tables.create_statements(protocol, dialect):
            assert isinstance(sqlglot.parse_one(statement, read=dialect), exp.Create)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_new_constructs_in_every_dialect(dialect: str) -> None:
    """Time constructs and derived values (tests/test_sql_differential.py's grids) parse back in
    every dialect, spelt with CASE and exact decimals only."""
    from test_sql_differential import DERIVED, TIME

    for source in (TIME, DERIVED):
        text = emitted(compile_text(source), dialect)
        assert len([p for p in sqlglot.parse(text, read=dialect) if p is not None]) == 1
        upper = text.upper()
        assert "IS TRUE" not in upper and not any(w in upper for w in ("DOUBLE", "FLOAT", "REAL"))


def test_a_table_is_stored_only_when_more_than_one_reader_reads_it(jy231: Any) -> None:
    """On DuckDB (and PostgreSQL) a common table expression read by several readers is
    MATERIALIZED, and one read once is NOT MATERIALIZED: a pipeline, not a copy of every level."""
    for dialect in ("duckdb", "postgres"):
        query = sqlglot.parse_one(emitted(jy231, dialect), read=dialect)
        ctes = query.args["with_"].expressions
        readers = {cte.alias: 0 for cte in ctes}
        for table in query.find_all(exp.Table):
            if table.name in readers:
                readers[table.name] += 1
        stored = {cte.alias: cte.args.get("materialized") for cte in ctes}
        assert stored == {name: count > 1 for name, count in readers.items()}, dialect
        assert stored["_l1"] is False and stored["_q1_items"] is True
    spark = sqlglot.parse_one(emitted(jy231, "spark"), read="spark")
    assert all(cte.args.get("materialized") is None for cte in spark.args["with_"].expressions)


def test_items_are_joined_to_their_patients_only_when_a_condition_reads_a_patient_field(
        jy231: Any, small: Any) -> None:
    """JY231's treatments condition reads only item fields: no join. The small protocol's dose
    condition reads the patient's screening date: its items are joined to their patients."""
    def joins(protocol: Any) -> int:
        query = sqlglot.parse_one(emitted(protocol, "duckdb"), read="duckdb")
        items = next(cte for cte in query.args["with_"].expressions if cte.alias == "_q1_items")
        return len(items.this.args.get("joins") or [])

    assert joins(jy231) == 0
    assert joins(small) == 1


def test_outcomes_are_an_enum_on_duckdb_and_strings_elsewhere(small: Any) -> None:
    """The decision and outcome columns hold the same strings in every dialect; DuckDB types them
    as an ENUM of those strings (a small integer a row), which no other dialect has."""
    duck = emitted(small, "duckdb")
    assert "ENUM('eligible', 'ineligible', 'needs review')" in duck
    assert "ENUM('met', 'not met', 'not applicable', 'met or not applicable'" in duck
    for dialect in DIALECTS[1:]:
        assert "ENUM" not in emitted(small, dialect).upper()
    connection = duckdb.connect()
    row = connection.execute("SELECT CAST('met' AS ENUM('met', 'not met')) = 'met', "
                             "typeof(CAST('met' AS ENUM('met', 'not met')))").fetchone()
    assert row is not None and row[0] is True and row[1].startswith("ENUM")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_no_is_true_and_no_floats(small: Any, dialect: str) -> None:
    """Kleene logic is spelt with CASE, never `IS TRUE`; exact numbers are never floating point."""
    text = emitted(small, dialect).upper()
    assert "IS TRUE" not in text and "IS NOT TRUE" not in text
    for word in ("DOUBLE", "FLOAT", "REAL"):
        assert word not in text
    schema = "\n".join(tables.create_statements(small, dialect)).upper()
    assert "DECIMAL" in schema or "NUMERIC" in schema
    assert "DOUBLE" not in schema and "FLOAT" not in schema


def test_the_header_names_the_source_and_its_hash(jy231: Any) -> None:
    lines = emitted(jy231, "duckdb").split("\n")
    assert lines[0].startswith("-- @generated by crit from protocols/jy231.crit")
    assert lines[1] == f"-- source sha256: {jy231.source_hash}"
    assert (ROOT / "generated" / "jy231.sql").read_text(encoding="utf-8") == emitted(jy231, "duckdb")


# ---- the layout and the JSON Schema ---------------------------------------------------------


def test_the_layout_of_jy231(jy231: Any) -> None:
    layout = tables.layout(jy231)
    assert [t.name for t in layout.tables] == ["patients", "patients__treatments", "patients__malignancies"]
    patients = {c.name: c for c in layout.table("patients").columns}
    assert patients["patient_id"].kind == "key" and not patients["patient_id"].nullable
    assert patients["ast"].kind == patients["ast__uln"].kind == "decimal"
    assert patients["last_live_vaccine"].kind == "date" and not patients["last_live_vaccine__none"].nullable
    assert patients["anca__PR3"].kind == "bool" and patients["treatments__items"].kind == "integer"
    assert layout.of("patients", "hemoglobin").storage == "g/L"
    assert layout.table("patients__treatments").key == ("patient_id", "ordinal_1")


def test_columns_are_sized_from_plausible_ranges_and_unit_factors(jy231: Any) -> None:
    """Whole digits from the range in the stored unit (a ULN has none: 15), places: 10 as written
    plus those an accepted unit's exact factor adds (mm stored in cm: 1)."""
    patients = {c.name: c for c in tables.layout(jy231).table("patients").columns}
    assert tables.sql_type(patients["rash_vas"], "duckdb").sql("duckdb") == "DECIMAL(13, 11)"  # 0 to 10 cm
    assert tables.sql_type(patients["ck"], "duckdb").sql("duckdb") == "DECIMAL(16, 10)"  # 0 to 500000 U/L
    assert tables.sql_type(patients["ck__uln"], "duckdb").sql("duckdb") == "DECIMAL(25, 10)"  # no range
    assert tables.sql_type(patients["haq_di"], "duckdb").sql("duckdb") == "DECIMAL(11, 10)"  # 0 to 3
    assert patients["age"].kind == "integer" and patients["age"].whole == 3  # BIGINT, 3 digits for arithmetic
    weight = tables.layout(compile_text(_DERIVED_HEAD + "w > 1 kg\n")).of("patients", "w").columns[0]
    assert (weight.whole, weight.scale) == (15, 18)  # lb stored in kg: 0.45359237 adds 8 places


def test_a_quantity_no_decimal_converts_is_stored_in_a_unit_that_does(small: Any) -> None:
    placed = tables.layout(small).of("patients", "weight")
    assert placed.storage == "lb" or placed.storage == "kg"
    rows = tables.rows(tables.layout(small), "p", {"weight": {"value": 1, "unit": "lb"}})
    column = [c.name for c in tables.layout(small).table("patients").columns].index("weight")
    value = rows["patients"][0][column]
    assert value in (1, tables.Decimal("0.45359237"))


def test_rows_refuse_a_value_the_column_cannot_hold_exactly(small: Any) -> None:
    with pytest.raises(tables.TableError, match=r"age|weight"):
        tables.rows(tables.layout(small), "p", {"weight": tables.Decimal("1." + "1" * 30)})


def _jy231_records() -> list[dict[str, Any]]:
    from test_jy231 import VIGNETTES

    out = [record for _, record, _, _ in VIGNETTES]
    out.append(loads((ROOT / "examples" / "patient-sle.json").read_text(encoding="utf-8")))
    for line in (ROOT / "examples" / "cohort" / "patients.jsonl").read_text(encoding="utf-8").splitlines():
        out.append(loads(line))
    return out


def test_the_json_schema_accepts_every_record_crit_accepts(jy231: Any) -> None:
    schema = tables.json_schema(jy231)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    interpreter = Interpreter(jy231)
    accepted = 0
    for record in _jy231_records():
        if not interpreter.validate(record):
            errors = [e.message for e in validator.iter_errors(json.loads(json.dumps(record, default=float)))]
            assert errors == [], record.get("id")
            accepted += 1
    assert accepted >= 60


@pytest.mark.parametrize("change", [
    {"age": "forty"}, {"hemoglobin": {"value": 100, "unit": "mg/L"}}, {"screening": "2025/01/01"},
    {"agee": 40}, {"ast": {"value": 10}}, {"anca": ["PR3", "nope"]}, {"ana": "1:0"},
    {"treatments": [{"agent": "x", "dose": 1}]},
])
def test_the_json_schema_refuses_what_crit_refuses(jy231: Any, change: dict[str, Any]) -> None:
    record = {**_jy231_records()[0], **change}
    assert Interpreter(jy231).validate(record)
    assert list(jsonschema.Draft202012Validator(tables.json_schema(jy231)).iter_errors(record))


# ---- hostile text -----------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [*HOSTILE, "x'; DROP TABLE patients; --", "*/ DROP TABLE patients; /*",
                                 "\"; DROP TABLE patients; --", "$$; DROP TABLE patients; $$", "`) --"])
def test_hostile_text_cannot_inject_sql(raw: str) -> None:
    text = raw.replace("\\", "\\\\").replace('"', '\\"')
    source = (
        f'protocol P "{text}"\n  version "{text}"\n\n'
        f'enum E "{text}"\n  a "{text}"\n\n'
        f'patient\n  select: bool "{text}"\n  from: E "{text}"\n  name: text "{text}"\n  order: integer\n\n'
        f'define d "{text}": select\n\n'
        f'inclusion\n  I1 "{text}"\n    d\n    from is a\n    name = "{text}"\n    note "{text}"\n'
    )
    protocol = compile_text(source)
    con = duckdb.connect()
    record = {"select": True, "from": "a", "name": protocol.inclusion[0].items[2].expr.right.value, "order": 1}
    got = run_sql(con, protocol, [("p1", record), ("p2", {**record, "name": "other"})])
    assert got["p1"]["decision"] == "eligible" and got["p2"]["decision"] == "ineligible"
    assert {row[0] for row in con.execute("SHOW TABLES").fetchall()} == {"patients"}
    for dialect in DIALECTS:
        sql = emit_sql(protocol, dialect)
        header = [line for line in sql.split("\n") if line.startswith("--")]
        assert len(header) == 6  # the title stays on its comment line
        (statement,) = sqlglot.parse(sql, read=dialect)
        assert statement is not None
        literals = {lit.this for lit in statement.find_all(exp.Literal) if lit.is_string}
        assert protocol.inclusion[0].items[2].expr.right.value in literals


# ---- diagnostics of the SQL backend ------------------------------------------------------------


def _error(source: str) -> CritError:
    with pytest.raises(CritError) as info:
        emit_sql(compile_text(source), "duckdb")
    return info.value


def test_s101_two_fields_sharing_a_column() -> None:
    err = _error('protocol P "p"\n\npatient\n  a: lab U/L\n  a__uln: integer\n\ninclusion\n  I1 "x"\n    a__uln > 1\n')
    assert err.diagnostics[0].code == "S101" and "a__uln" in err.diagnostics[0].message


def test_s101_a_field_named_like_the_key() -> None:
    err = _error('protocol P "p"\n\npatient\n  patient_id: integer\n\ninclusion\n  I1 "x"\n    patient_id > 1\n')
    assert err.diagnostics[0].code == "S101"


def test_s102_a_quantity_with_no_exact_storage_unit(small: Any) -> None:
    """Units a third and a seventh of the canonical one: in none of the three are the others
    exact decimals. (Today's unit table has no such units; the layout checks all the same.)"""
    weight = next(f for f in small.fields if f.name == "weight")
    assert weight.type.unit is not None
    third = replace(weight.type.unit, text="third")
    seventh = replace(weight.type.unit, text="seventh")
    odd = replace(weight, type=replace(weight.type, also=((third, Fraction(1, 3)), (seventh, Fraction(1, 7)))))
    protocol = replace(small, fields=tuple(odd if f is weight else f for f in small.fields))
    with pytest.raises(CritError) as info:
        tables.layout(protocol)
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.code == "S102" and diagnostic.span == weight.span


def test_s201_a_comparison_of_quantities_stored_in_different_units() -> None:
    source = ('protocol P "p"\n\npatient\n  a: quantity lb also kg\n  b: quantity lb\n\n'
              'inclusion\n  I1 "x"\n    a > b\n')
    (diagnostic,) = _error(source).diagnostics
    assert diagnostic.code == "S201" and diagnostic.span.line == 9 and "different units" in diagnostic.message


def test_s201_an_ir_construct_the_backend_does_not_know(small: Any) -> None:
    """A kind merged into the IR without a translation here is a compile error at its place."""

    @dataclass(frozen=True)
    class Future:
        span: Span

    line = small.inclusion[0].items[0]
    future = replace(line, expr=Future(replace(line.span, line=99)))
    criterion = replace(small.inclusion[0], items=(future, *small.inclusion[0].items[1:]))
    protocol = replace(small, inclusion=(criterion, *small.inclusion[1:]))
    with pytest.raises(CritError) as info:
        emit_sql(protocol, "duckdb")
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.code == "S201" and diagnostic.span.line == 99 and "Future" in diagnostic.message


_DERIVED_HEAD = ('protocol P "p"\n\nenum Agent\n  a\n  b\n\nequivalence eq "Doses" of Agent\n  a 1\n  b 2.5\n\n'
                 'patient\n  n: integer\n  w: quantity lb also kg\n  alt: lab U/L\n  agent: Agent\n  flag: bool\n'
                 '  dose: integer\n  h: quantity in also cm\n\ndefine v "Twice n" = n × 2\n\ninclusion\n  I1 "x"\n    ')


def test_s201_arithmetic_beyond_38_digits_is_refused_at_its_place() -> None:
    """A product of two measurements with no plausible range (15 whole digits each) needs more
    digits than any engine's DECIMAL: refused at the arithmetic (README: SQL, known limits),
    never rounded, with a hint naming the field to give a range."""
    (diagnostic,) = _error(_DERIVED_HEAD + "h × h > 100 cm²\n").diagnostics
    assert diagnostic.code == "S201" and diagnostic.span.line == 24 and "38 digits" in diagnostic.message
    assert "'h' has no plausible range" in diagnostic.hint


def test_a_product_of_ranged_measurements_is_translated() -> None:
    """With plausible ranges the same arithmetic fits: BMI from weight in lb or kg and height in
    in or cm (the SURPASS-2 example's), and h × h."""
    ranged = _DERIVED_HEAD.replace("w: quantity lb also kg", "w: quantity lb also kg from 40 to 900 lb") \
        .replace("h: quantity in also cm", "h: quantity in also cm from 20 to 100 in")
    for line in ("h × h > 100 cm²", "w / (h × h) >= 25 kg/m^2", "w / (h × h) × 2 > 30 kg/m^2"):
        emit_sql(compile_text(ranged + line + "\n"), "duckdb")
    emit_sql(load(ROOT / "examples" / "t2d" / "t2d.crit"), "duckdb")


def test_s201_names_the_range_to_narrow() -> None:
    """When every field has a range and the arithmetic still needs more than 38 digits, the
    hint names the ranges."""
    source = ('protocol P "p"\n\npatient\n  a: decimal from 0 to 1000000000\n  b: decimal from 0 to 1000000000\n'
              '  c: decimal from 0 to 1000\n\ninclusion\n  I1 "x"\n    a × b × c > 1\n')
    (diagnostic,) = _error(source).diagnostics
    assert diagnostic.code == "S201" and "narrow the plausible range of 'a' (0 to 1000000000)" in diagnostic.hint


def test_s103_a_column_beyond_38_digits() -> None:
    """A unit 10^15 times another, with no range, would need 30 whole digits."""
    source = 'protocol P "p"\n\npatient\n  q: quantity pg also kg\n\ninclusion\n  I1 "x"\n    q > 1 g\n'
    (diagnostic,) = _error(source).diagnostics
    assert diagnostic.code == "S103" and diagnostic.span.line == 4 and "plausible range" in diagnostic.hint


def test_s202_a_limit_no_decimal_writes_in_the_stored_unit() -> None:
    source = 'protocol P "p"\n\npatient\n  h: quantity in\n\ninclusion\n  I1 "x"\n    h > 10 cm\n'
    (diagnostic,) = _error(source).diagnostics
    assert diagnostic.code == "S202" and diagnostic.span.line == 8
    assert diagnostic.message.startswith("10 cm is no exact decimal in in")


# ---- the command line ---------------------------------------------------------------------------


def test_build_sql_writes_the_dialect(tmp_path: Path) -> None:
    source = tmp_path / "small.crit"
    source.write_text(SMALL, encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(cli.cli, ["build", str(source), "-o", str(tmp_path / "out"), "--sql", "spark"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["small.md", "small.py", "small.spark.sql"]
    text = (tmp_path / "out" / "small.spark.sql").read_text(encoding="utf-8")
    assert text.startswith("-- @generated by crit from ") and "`patients`" in text
    again = runner.invoke(cli.cli, ["build", str(source), "-o", str(tmp_path / "out"), "--sql", "spark", "--check"])
    assert again.exit_code == 0, again.output
    (tmp_path / "out" / "small.spark.sql").write_text("-- @generated by crit\nstale\n", encoding="utf-8")
    stale = runner.invoke(cli.cli, ["build", str(source), "-o", str(tmp_path / "out"), "--sql", "spark", "--check"])
    assert stale.exit_code == 1 and "small.spark.sql" in stale.output


def test_build_refuses_a_protocol_the_sql_backend_cannot_translate(tmp_path: Path) -> None:
    source = tmp_path / "p.crit"
    source.write_text('protocol P "p"\n\npatient\n  h: quantity in\n\ninclusion\n  I1 "x"\n    h > 10 cm\n',
                      encoding="utf-8")
    result = CliRunner().invoke(cli.cli, ["build", str(source), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and "error[S202]" in result.output and "h > 10 cm" in result.output
    assert not (tmp_path / "out").exists()


def test_schema_command(tmp_path: Path) -> None:
    runner = CliRunner()
    path = str(ROOT / "protocols" / "jy231.crit")
    sql = runner.invoke(cli.cli, ["schema", path, "--sql", "postgres"])
    assert sql.exit_code == 0 and sql.output.count("CREATE TABLE") == 3
    con = duckdb.connect()
    for statement in sql.output.split(";\n"):
        if statement.strip():
            con.execute(statement)
    schema = runner.invoke(cli.cli, ["schema", path, "--json-schema"])
    assert schema.exit_code == 0 and json.loads(schema.output)["title"] == "JY231 patient record"
    neither = runner.invoke(cli.cli, ["schema", path])
    assert neither.exit_code == 2 and "--sql DIALECT or --json-schema" in neither.output
