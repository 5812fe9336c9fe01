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
from crit.backends.sql import UNTRANSLATED, emit_sql
from crit.diagnostics import CritError
from crit.driver import load
from crit.interpret import Interpreter
from crit.sources import tables
from crit.sources.records import loads
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


def untranslated(protocol: ir.Protocol) -> list[str]:
    """The constructs of `protocol` the SQL backend does not translate (README: known limits)."""
    exprs: list[ir.Node] = [e for c in protocol.criteria() for e in c.conditions()]
    exprs += [line.expr for d in protocol.definitions for line in d.lines()]
    return sorted({type(n).__name__ for e in exprs for n in ir.walk(e) if isinstance(n, UNTRANSLATED)})


@pytest.fixture(scope="module", autouse=True)
def report_skipped(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and SKIPPED["run"] + SKIPPED["skipped"]:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nSQL differential: {SKIPPED['run']} random protocols compared, "
                                f"{SKIPPED['skipped']} skipped for a derived value, which the SQL backend "
                                "refuses (S201)")


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(protocols(), st.data())
def test_random_protocols_agree_with_the_interpreter(connection: duckdb.DuckDBPyConnection,
                                                     case: tuple[str, Schema], data: st.DataObject) -> None:
    source, schema = case
    protocol = compile_text(source)
    if untranslated(protocol):  # the backend must refuse it with S201, never drop it
        with pytest.raises(CritError) as refused:
            emit_sql(protocol, "duckdb")
        assert {d.code for d in refused.value.diagnostics} == {"S201"}
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
