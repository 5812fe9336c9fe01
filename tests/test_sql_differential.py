"""The SQL backend on DuckDB against the reference interpreter: random protocols and records
(tests/strategies.py), loaded through `crit.sources.tables.rows` and decided by the emitted
DuckDB query, must give every criterion outcome, the decision, the missing facts and the
pending judgments that `crit.interpret` gives. And the JY231 vignettes.

A longer run: CRIT_SQL_EXAMPLES=200 CRIT_SQL_RECORDS=40 python -m pytest tests/test_sql_differential.py
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from conftest import ROOT, compile_text
from crit import ir
from crit.backends.sql import emit_sql
from crit.diagnostics import CritError
from crit.driver import load
from crit.interpret import Interpreter
from crit.sources import tables
from crit.sources.records import loads
from crit.tools.protocol_tests import read_tests
from strategies import Schema, protocols, records

EXAMPLES = int(os.environ.get("CRIT_SQL_EXAMPLES", "6"))
RECORDS_PER_PROTOCOL = int(os.environ.get("CRIT_SQL_RECORDS", "20"))


@pytest.fixture(scope="module")
def connection() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    yield con
    con.close()


def run_sql(con: duckdb.DuckDBPyConnection, protocol: ir.Protocol,
            patients: list[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The emitted DuckDB query's rows for `patients` (id, validated record), by patient id."""
    layout = tables.layout(protocol)
    for table in reversed(layout.tables):
        con.execute(f'DROP TABLE IF EXISTS "{table.name}"')
    for statement in tables.create_statements(protocol, "duckdb"):
        con.execute(statement)
    batches: dict[str, list[tuple[object, ...]]] = {t.name: [] for t in layout.tables}
    for patient_id, record in patients:
        for name, rows in tables.rows(layout, patient_id, record).items():
            batches[name].extend(rows)
    for table in layout.tables:
        rows = batches[table.name]
        if rows:
            marks = ", ".join("?" * len(table.columns))
            con.executemany(f'INSERT INTO "{table.name}" VALUES ({marks})', rows)
    cursor = con.execute(emit_sql(protocol, "duckdb"))
    names = [d[0] for d in cursor.description]
    return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}


def expected_row(interpreter: Interpreter, record: dict[str, Any]) -> dict[str, Any]:
    screening = interpreter.evaluate(record)
    row: dict[str, Any] = {"decision": screening.decision.value, "missing": ", ".join(screening.missing),
                           "pending_judgments": ", ".join(screening.pending_judgments)}
    row.update({c.id: c.outcome.value for c in screening.criteria})
    return row


def check_agreement(con: duckdb.DuckDBPyConnection, protocol: ir.Protocol,
                    cases: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Runs the records the interpreter accepts through SQL (as r0, r1, … by their place in
    `cases`); returns the rows compared."""
    interpreter = Interpreter(protocol)
    patients = [(f"r{i}", record) for i, record in enumerate(cases) if not interpreter.validate(record)]
    got = run_sql(con, protocol, patients)
    assert sorted(got) == sorted(pid for pid, _ in patients)
    for patient_id, record in patients:
        row = got[patient_id]
        expected = expected_row(interpreter, record)
        assert {k: row[k] for k in expected} == expected, (patient_id, record)
    return got


SKIPPED: dict[str, int] = {"run": 0, "skipped": 0}


def refused(protocol: ir.Protocol) -> bool:
    """Whether the SQL backend refuses `protocol` for its one known limit (README: SQL, known
    limits): arithmetic whose exact result needs more than DECIMAL's 38 digits, always S201."""
    try:
        emit_sql(protocol, "duckdb")
    except CritError as err:
        assert all(d.code == "S201" and "38 digits" in d.message for d in err.diagnostics), err.diagnostics
        return True
    return False


@pytest.fixture(scope="module", autouse=True)
def report_skipped(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and SKIPPED["run"] + SKIPPED["skipped"]:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nSQL differential: {SKIPPED['run']} random protocols compared, "
                                f"{SKIPPED['skipped']} skipped for arithmetic beyond DECIMAL's 38 digits, "
                                "which the SQL backend refuses (S201)")


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(protocols(), st.data())
def test_random_protocols_agree_with_the_interpreter(connection: duckdb.DuckDBPyConnection,
                                                     case: tuple[str, Schema], data: st.DataObject) -> None:
    source, schema = case
    protocol = compile_text(source)
    if refused(protocol):
        SKIPPED["skipped"] += 1
        return
    SKIPPED["run"] += 1
    cases = [data.draw(records(schema)) for _ in range(RECORDS_PER_PROTOCOL)]
    # exactly as crit reads them: numbers as decimals from their JSON text
    cases = [loads(json.dumps(c)) for c in cases]
    check_agreement(connection, protocol, cases)


def test_jy231_vignettes_through_sql(connection: duckdb.DuckDBPyConnection) -> None:
    from test_jy231 import VIGNETTES

    protocol = load(ROOT / "protocols" / "jy231.crit")
    interpreter = Interpreter(protocol)
    valid = [v for v in VIGNETTES if not interpreter.validate(v[1])]
    assert len(valid) >= len(VIGNETTES) - 4  # a few vignettes show records refused for implausible values
    got = check_agreement(connection, protocol, [record for _, record, _, _ in valid])
    assert len(got) == len(valid)
    for i, (name, _, decision, outcomes) in enumerate(valid):
        assert got[f"r{i}"]["decision"] == decision, name
        assert {k: got[f"r{i}"][k] for k in outcomes} == outcomes, name


def test_t2d_vignettes_through_sql(connection: duckdb.DuckDBPyConnection) -> None:
    """The SURPASS-2 example's vignettes (BMI: a product of two ranged measurements) give in SQL
    what the interpreter and the vignettes say."""
    suite = read_tests(ROOT / "examples" / "t2d" / "t2d.tests.json")
    protocol = load(suite.protocol)
    cases = [case.record for case in suite.cases]  # read from their JSON text: exact decimals
    got = check_agreement(connection, protocol, cases)
    decided = [(i, case) for i, case in enumerate(suite.cases) if f"r{i}" in got and case.expect is not None]
    assert len(decided) >= 40
    for i, case in decided:
        assert got[f"r{i}"]["decision"] == case.expect, case.name


def test_rows_refuse_a_value_outside_its_plausible_range_as_validate_does() -> None:
    """The SQL loaders' rows (`crit screen --engine duckdb`, `write_parquet`) never hold a value
    validate() refuses for its plausible range: the JY231 vignettes refused for one."""
    from test_jy231 import VIGNETTES

    protocol = load(ROOT / "protocols" / "jy231.crit")
    interpreter = Interpreter(protocol)
    layout = tables.layout(protocol)
    refused = [(name, record) for name, record, _, _ in VIGNETTES
               if (problems := interpreter.validate(record))
               and all("plausible range" in p.message for p in problems)]
    assert refused
    for name, record in refused:
        with pytest.raises(tables.TableError, match="plausible range"):
            tables.rows(layout, name, record)


TIME = '''protocol T "Time constructs"

enum Color
  a
  b

record Item
  ok: bool
  n: integer?
  color: Color

patient
  screening: date?
  infection: interval?
  course: interval
  seen: date
  hb: quantity g/L also g/dL measured within 14 days before screening
  alt: lab U/L measured within 2 weeks before screening
  stage: Color measured within 1 months before screening
  items: list of Item?
  flag: bool?

inclusion
  I1 "Strict windows and no X recorded"
    seen less than 2 weeks before screening or seen more than 1 months after screening
    when no infection recorded: flag
  I2 "Intervals" requires any
    infection overlaps 1 weeks before screening
    course ongoing at screening
    course lasted at least 8 weeks by screening
    infection lasted less than 10 days by 2025-03-31
  I3 "Dated results" when flag
    hb >= 100 g/L
    alt < 3 × ULN
    stage is a
  I4 "Different values" requires any
    count(different n in items where ok) >= 2
    count(different color in items) < 2
  I5 "Gated, met either way" when flag
    seen <= 2025-12-31

exclusion
  E1 "Course too long"
    course lasted more than 1 years by screening
'''


def _time_records() -> list[dict[str, Any]]:
    days = ["2025-03-31", "2025-03-17", "2025-03-18", "2025-02-28", "2025-05-01", "2024-12-01"]
    periods: list[Any] = [{"start": "2025-03-20", "end": "2025-03-25"}, {"start": "2025-01-01", "ongoing": True},
                          {"start": "2025-03-24"}, {"start": "2024-01-01", "end": "2025-03-30"},
                          {"start": "2025-04-02"}, {"start": "2025-02-01"}]
    items: list[Any] = [[], [{"ok": True, "n": 1, "color": "a"}, {"ok": True, "n": 1, "color": "b"}],
                        [{"ok": True, "n": 1, "color": "a"}, {"ok": None, "n": 2, "color": "a"}],
                        [{"ok": True, "color": "a"}, {"ok": True, "n": None, "color": "a"}], None]
    out: list[dict[str, Any]] = []
    for i in range(72):
        record: dict[str, Any] = {
            "seen": days[i % 6], "course": periods[i % 6],
            "hb": {"value": 90 + 5 * (i % 4), "unit": "g/L", "measured": days[(i + 1) % 6]},
            "alt": {"value": 50 + 20 * (i % 3), "uln": 40, "unit": "U/L", "measured": days[(i + 2) % 6]},
            "stage": {"value": "ab"[i % 2], "measured": days[(i + 3) % 6]},
        }
        if i % 6 != 5:
            record["flag"] = i % 5 != 0
        if i % 7:
            record["screening"] = days[i % 4] if i % 11 else None
        if i % 3:
            record["infection"] = periods[(i + 1) % 6] if i % 4 else None
        if i % 9 != 4:
            record["items"] = items[i % 5]
        if i % 5 == 3:
            del record["hb"]
        out.append(record)
    return out


def test_the_time_constructs_agree_with_the_interpreter(connection: duckdb.DuckDBPyConnection) -> None:
    """Strict windows, no X recorded, intervals (ended, ongoing, end not recorded, none, missing),
    dated results (fresh, stale, the anchor missing) and distinct counts (keys unknown, none,
    repeated), on a grid of records: outcome sets, decisions and missing facts as the interpreter."""
    protocol = compile_text(TIME)
    got = check_agreement(connection, protocol, _time_records())
    decisions = {row["decision"] for row in got.values()}
    outcomes = {row[c] for row in got.values() for c in ("I1", "I2", "I3", "I4", "I5", "E1")}
    assert len(got) == 72 and decisions == {"eligible", "ineligible", "needs review"}
    assert {"met or not applicable", "unknown", "not applicable", "met", "not met"} <= outcomes
    missing = {path for row in got.values() for path in row["missing"].split(", ")}
    assert {"infection.end", "course.end", "screening", "hb", "stage"} <= missing


DERIVED = '''protocol D "Derived values"

enum Agent
  a
  b

equivalence eq "Doses" of Agent
  a 1
  b 2.5

patient
  n: integer?
  x: decimal
  q: quantity g/L also g/dL
  alt: lab U/L
  agent: Agent?
  flag: bool
  other: bool
  dose: integer

define v "Twice n" = (n + 1) × 2

inclusion
  I1 "Arithmetic" requires any
    12 ÷ n > 3
    (x - 2) ÷ 2 <= 1
    v >= 6
    q × 2 - 5 g/L > 1 g/dL
  I2 "Chosen values"
    n * 3 != (6 if flag, 9 if other, otherwise 3)
    alt < (1 x ULN if flag, otherwise 3 x ULN)
  I3 "Equivalent doses"
    eq(dose, agent) <= 5

exclusion
  E1 "ULN arithmetic"
    alt - 10 U/L > 2 × ULN
'''


def _derived_records() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(60):
        record: dict[str, Any] = {"x": [0, 2.5, 4, 6.25][i % 4], "q": {"value": [1, 0.3, 2][i % 3], "unit": "g/dL"},
                                  "alt": {"value": [30, 50, 90, 130][i % 4], "uln": 40, "unit": "U/L"},
                                  "dose": [1, 2, 5][i % 3]}
        if i % 5:
            record["n"] = [0, 1, 2, 3, None][i % 5 if i % 7 else 4]
        if i % 4 != 3:
            record["flag"] = i % 2 == 0
        if i % 6 != 1:
            record["other"] = i % 3 == 0
        if i % 8:
            record["agent"] = ["a", "b", None][i % 3]
        out.append(record)
    return out


def test_derived_values_agree_with_the_interpreter(connection: duckdb.DuckDBPyConnection) -> None:
    """Exact arithmetic (a division by zero unknown, with no missing fact), named values, units,
    × ULN, values chosen by conditions not yet known (decided when every possible branch agrees)
    and equivalence tables (agent missing or none), on a grid of records."""
    protocol = compile_text(DERIVED)
    got = check_agreement(connection, protocol, _derived_records())
    assert len(got) == 60 and {row["decision"] for row in got.values()} == {"eligible", "ineligible", "needs review"}
    missing = {path for row in got.values() for path in row["missing"].split(", ")}
    assert {"n", "other", "agent"} <= missing
