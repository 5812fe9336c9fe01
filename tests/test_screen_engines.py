"""`crit screen --engine duckdb|spark`: the same result rows and report as the Python engine, bad
records included (each an error row with the Python engine's message), from JSON Lines, JSON, CSV
and a Parquet cohort in the layout of `crit schema --sql`."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlglot
from click.testing import CliRunner, Result

from conftest import ROOT
from crit.backends.sql import emit_sql
from crit.pipeline import compile_or_fail, evaluator
from crit.process import Failure
from crit.screening import sql_engine
from crit.screening.screen import screen_command
from crit.sources import records as json_records
from crit.sources import tables

JY231 = ROOT / "protocols" / "jy231.crit"
COHORT = ROOT / "examples" / "cohort"
LINES = (COHORT / "patients.jsonl").read_text(encoding="utf-8").splitlines()
FIRST: dict[str, Any] = json.loads(LINES[0])

# Bad records mixed into the cohort: each is an error row naming the patient and the field.
BAD = [
    {**FIRST, "id": "WRONG-TYPE", "sledai": "high"},  # a value of the wrong type
    {**FIRST, "id": "UNIT", "hemoglobin": {"value": 12, "unit": "g/furlong"}},  # an unknown unit string
    {**FIRST, "id": "DATE", "screening": "2025-02-30"},  # an impossible date
    FIRST,  # a duplicated patient id: record 1's
    {**FIRST, "id": 7},  # a whole-number id, and a hostile one (formula, quote, line break)
    {**FIRST, "id": "=HYPERLINK(\"x\")\n'; DROP TABLE patients; --", "age": 17},
    {k: v for k, v in FIRST.items() if k != "id"},  # no id at all: never a duplicate
]


def run(*args: object) -> tuple[int, Result]:
    result = CliRunner().invoke(screen_command, [str(a) for a in args])
    if isinstance(result.exception, Failure):
        return result.exception.code, result
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example cohort (two unreadable records) with the bad records above inserted."""
    lines = list(LINES)
    for index, record in enumerate(BAD):
        lines.insert(3 + 5 * index, json.dumps(record))
    path = tmp_path_factory.mktemp("cohort") / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def screen_both(tmp_path: Path, source: Path, suffix: str, *extra: object) -> tuple[bytes, bytes, str, str]:
    outputs = []
    for engine in ("python", "duckdb"):
        out, page = tmp_path / f"{engine}{suffix}", tmp_path / f"{engine}.md"
        code, result = run(JY231, source, "-o", out, "--report", page, "--engine", engine, "-q", *extra)
        assert code == 3, result.output  # the bad records: everything is written, exit 3
        outputs.append((out.read_bytes(), page.read_text(encoding="utf-8")))
    (python_rows, python_report), (duck_rows, duck_report) = outputs
    return python_rows, duck_rows, python_report, duck_report


def test_duckdb_writes_the_python_engines_rows_and_report(tmp_path: Path, cohort: Path) -> None:
    python_rows, duck_rows, python_report, duck_report = screen_both(tmp_path, cohort, ".jsonl")
    assert duck_rows == python_rows
    assert duck_report == python_report
    rows = [json.loads(line) for line in python_rows.decode().splitlines()]
    assert len(rows) == len(LINES) + len(BAD)
    errors = {r["id"]: r["error"] for r in rows if r["decision"] == "error"}
    assert errors["WRONG-TYPE"] == "sledai: expected a whole number, got text"
    assert errors["UNIT"].startswith("hemoglobin.unit: ")
    assert errors["DATE"] == "screening: '2025-02-30' is not a real date"
    duplicate = next(r for r in rows if r["id"] == FIRST["id"] and r["record"] != 1)
    assert duplicate["error"] == f'id: "{FIRST["id"]}" is already the id of record 1'
    assert rows[0]["decision"] != "error"  # the first record with the id is screened
    assert sum(1 for r in rows if r["id"] is None and r["decision"] != "error") == 1


def test_the_python_engine_finds_repeated_ids_across_its_workers(tmp_path: Path, cohort: Path) -> None:
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    run(JY231, cohort, "-o", one, "--engine", "python", "-q")
    run(JY231, cohort, "-o", two, "--engine", "python", "-q", "--jobs", "2")
    assert two.read_bytes() == one.read_bytes()
    assert one.read_bytes().count(b"is already the id of record") == 1


def test_duckdb_csv_output_and_json_input(tmp_path: Path, cohort: Path) -> None:
    document = tmp_path / "mixed.json"
    document.write_text("[\n" + ",\n".join(cohort.read_text(encoding="utf-8").splitlines()) + "\n]\n",
                        encoding="utf-8")
    python_rows, duck_rows, python_report, duck_report = screen_both(tmp_path, document, ".csv")
    assert duck_rows == python_rows and duck_report == python_report
    assert b"'=HYPERLINK" in duck_rows  # the hostile id is neutralised, as the Python engine does


def test_duckdb_reads_csv_as_the_python_engine(tmp_path: Path) -> None:
    lines = (COHORT / "patients.csv").read_text(encoding="utf-8").splitlines()
    source = tmp_path / "mixed.csv"
    source.write_text("\n".join([*lines, lines[1], lines[4]]) + "\n", encoding="utf-8")  # two ids repeated
    python_rows, duck_rows, python_report, duck_report = screen_both(tmp_path, source, ".jsonl")
    assert duck_rows == python_rows and duck_report == python_report
    assert python_rows.count(b"is already the id of record") == 2


def test_an_unopenable_cohort_is_one_line_and_exit_3(tmp_path: Path) -> None:
    code, result = run(JY231, tmp_path / "absent.jsonl", "-o", tmp_path / "out.jsonl", "--engine", "duckdb")
    assert code == 3
    assert result.output == f"crit: cannot read {tmp_path / 'absent.jsonl'}: No such file or directory\n"


# ---- Parquet -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example cohort's readable records as a Parquet cohort in the layout."""
    protocol, loaded = compile_or_fail(JY231)
    module = evaluator(protocol, loaded)
    records = [json_records.loads(line) for line in LINES]
    readable = [(str(r["id"]), r) for r in records if not module.validate(r)]
    directory = tmp_path_factory.mktemp("parquet") / "cohort"
    with tempfile.TemporaryDirectory() as scratch:
        assert sql_engine.write_parquet(tables.layout(protocol), readable, directory, Path(scratch)) == 38
    return directory


def _by_id(path: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def test_parquet_gives_the_python_engines_decisions(tmp_path: Path, parquet: Path) -> None:
    expected = tmp_path / "python.jsonl"
    run(JY231, COHORT / "patients.jsonl", "-o", expected, "--engine", "python", "-q")
    out = tmp_path / "parquet.jsonl"
    code, result = run(JY231, parquet, "-o", out, "-q")  # a directory: Parquet, and DuckDB by default
    assert code == 0, result.output
    python = {i: r for i, r in _by_id(expected).items() if r["decision"] != "error"}
    found = _by_id(out)
    assert len(found) == len(python) == 38
    for patient, row in found.items():
        assert {k: v for k, v in row.items() if k != "record"} == \
            {k: v for k, v in python[patient].items() if k != "record"}


def _rewrite(source: Path, target: Path, table: str, query: str) -> Path:
    """A copy of the Parquet cohort with `table` replaced by `query` over it (as `t`)."""
    target.mkdir()
    for file in source.iterdir():
        if file.name != f"{table}.parquet":
            (target / file.name).write_bytes(file.read_bytes())
    con = duckdb.connect()
    con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{source / (table + '.parquet')}')")
    con.execute(f"COPY ({query}) TO '{target / (table + '.parquet')}' (FORMAT parquet)")
    con.close()
    return target


def test_bad_parquet_values_are_error_rows(tmp_path: Path, parquet: Path) -> None:
    bad = _rewrite(parquet, tmp_path / "bad", "patients", """
        SELECT * REPLACE (
          CASE WHEN patient_id = 'P0000001' THEN 'fmale' ELSE sex END AS sex,
          CASE WHEN patient_id = 'P0000002' THEN 0 ELSE ast__uln END AS ast__uln,
          CASE WHEN patient_id = 'P0000003' THEN treatments__items + 1 ELSE treatments__items END
            AS treatments__items,
          CASE WHEN patient_id = 'P0000005' THEN 1000000000000000 ELSE age END AS age,
          CASE WHEN patient_id = 'P0000010' THEN 10.8 ELSE hemoglobin END AS hemoglobin,
          CASE patient_id WHEN 'P0000006' THEN DATE '2025-01-10' WHEN 'P0000007' THEN DATE '2025-01-01'
            WHEN 'P0000008' THEN DATE '2025-01-01' WHEN 'P0000009' THEN NULL WHEN 'P0000011' THEN 'infinity'::DATE
            WHEN 'P0000012' THEN DATE '2024-04-01' ELSE systemic_infection__start END AS systemic_infection__start,
          CASE patient_id WHEN 'P0000006' THEN DATE '2025-01-01' WHEN 'P0000007' THEN DATE '2025-01-10'
            WHEN 'P0000008' THEN NULL WHEN 'P0000009' THEN DATE '2025-01-10' WHEN 'P0000011' THEN NULL
            WHEN 'P0000012' THEN NULL ELSE systemic_infection__end END AS systemic_infection__end,
          CASE patient_id WHEN 'P0000006' THEN false WHEN 'P0000007' THEN true WHEN 'P0000008' THEN false
            WHEN 'P0000009' THEN false WHEN 'P0000011' THEN false WHEN 'P0000012' THEN NULL
            ELSE systemic_infection__ongoing END AS systemic_infection__ongoing,
          CASE WHEN patient_id IN ('P0000006', 'P0000007', 'P0000009', 'P0000011', 'P0000012') THEN false
            WHEN patient_id = 'P0000008' THEN true ELSE systemic_infection__none END AS systemic_infection__none)
        FROM t UNION ALL SELECT * FROM t WHERE patient_id = 'P0000004'""")
    out = tmp_path / "out.jsonl"
    code, _ = run(JY231, bad, "-o", out, "-q")
    assert code == 3
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 39 and [r["record"] for r in rows] == list(range(1, 40))
    errors = {r["record"]: r["error"] for r in rows if r["decision"] == "error"}
    assert errors[1] == "sex: 'fmale' is not one of female, male; did you mean 'female'?"
    assert errors[2] == "ast.uln: the upper limit of normal must be positive"
    assert errors[3].startswith("treatments: treatments__items is ")
    assert errors[4] == 'id: "P0000004" is also the id of 1 later record'
    assert errors[5] == "age: 1000000000000000 is out of range"
    assert errors[39] == 'id: "P0000004" is already the id of record 4'
    by_id = {r["id"]: r["error"] for r in rows if r["decision"] == "error"}
    assert by_id["P0000006"] == "systemic_infection.end: ends (2025-01-01) before it starts (2025-01-10)"
    assert by_id["P0000007"] == "systemic_infection.ongoing: an interval with an end is not ongoing"
    assert by_id["P0000008"] == "systemic_infection: recorded as none and with a value"
    assert by_id["P0000009"] == "systemic_infection.start: missing: an interval needs its start"
    assert by_id["P0000010"] == ("hemoglobin: 10.8 g/L is outside the plausible range 20 to 250 g/L; "
                                 "check the value and its unit")
    assert by_id["P0000011"] == "systemic_infection.start: 'infinity' is not a date; write YYYY-MM-DD"
    assert "P0000012" not in by_id  # an ongoing not recorded reads as false, as in a record:
    twelve = next(json.loads(line) for line in LINES if json.loads(line)["id"] == "P0000012")
    twelve["systemic_infection"] = {"start": "2024-04-01"}
    (tmp_path / "twelve.jsonl").write_text(json.dumps(twelve) + "\n", encoding="utf-8")
    run(JY231, tmp_path / "twelve.jsonl", "-o", tmp_path / "twelve.out.jsonl", "--engine", "python", "-q")
    expected = json.loads((tmp_path / "twelve.out.jsonl").read_text(encoding="utf-8"))
    found = next(r for r in rows if r["id"] == "P0000012")
    assert {k: v for k, v in found.items() if k != "record"} == {k: v for k, v in expected.items() if k != "record"}
    assert len(errors) == 12


def test_a_parquet_column_of_the_wrong_type_makes_the_cohort_unreadable(tmp_path: Path, parquet: Path) -> None:
    bad = _rewrite(parquet, tmp_path / "bad", "patients", "SELECT * REPLACE (CAST(age AS DOUBLE) AS age) FROM t")
    code, result = run(JY231, bad, "-o", tmp_path / "out.jsonl")
    assert code == 3
    assert result.output == (f"crit: {bad / 'patients.parquet'}: the column 'age' is DOUBLE; the layout has "
                             "BIGINT; nothing screened\n")
    assert not (tmp_path / "out.jsonl").exists()


def test_python_refuses_parquet_and_spark_refuses_json(tmp_path: Path, parquet: Path) -> None:
    code, result = run(JY231, parquet, "-o", tmp_path / "o.jsonl", "--engine", "python")
    assert code == 2 and "--engine duckdb" in result.output
    code, result = run(JY231, COHORT / "patients.jsonl", "-o", tmp_path / "o.jsonl", "--engine", "spark")
    assert code == 2 and "Parquet" in result.output


# ---- Spark: a small protocol (JY231's query takes Spark's planner minutes: README) -----------------

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

inclusion
  I1 "Adult, consented"
    age >= 18
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


def _small_records(count: int) -> list[dict[str, Any]]:
    """Records that take every path: facts missing, none recorded, lists empty and not."""
    import random

    rng = random.Random(11)
    out: list[dict[str, Any]] = []
    for n in range(count):
        record: dict[str, Any] = {"id": f"S{n:03d}", "screening": "2025-03-31", "age": rng.choice([15, 18, 40]),
                                  "weight": rng.choice([39, 41, {"value": 441, "unit": "lb"}, 90]),
                                  "alt": {"value": rng.choice([30, 119, 121]), "uln": 40},
                                  "kind": rng.choice(["x", "y"]), "tags": rng.choice([[], ["x"], ["x", "y"]]),
                                  "last_vaccine": rng.choice([None, "2025-03-10", "2024-01-01"]),
                                  "doses": [{"drug": "d", "day": rng.choice(["2025-02-28", "2025-03-01", "2024-05-01"])}
                                            for _ in range(rng.choice([0, 1, 2]))],
                                  "consent": rng.choice([True, False])}
        for key in rng.sample(sorted(record), rng.choice([0, 1, 2])):
            if key != "id":
                del record[key]
        out.append(record)
    return out


@pytest.mark.spark
def test_spark_gives_the_python_engines_rows(tmp_path: Path) -> None:
    import pyspark  # noqa: F401  (the spark extra; the slice fails, never skips, without it)
    protocol_file = tmp_path / "small.crit"
    protocol_file.write_text(SMALL, encoding="utf-8")
    records = _small_records(40)
    source = tmp_path / "small.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    protocol, _ = compile_or_fail(protocol_file)
    directory = tmp_path / "small"
    with tempfile.TemporaryDirectory() as scratch:
        sql_engine.write_parquet(tables.layout(protocol), [(r["id"], r) for r in records], directory, Path(scratch))
    expected, out = tmp_path / "python.csv", tmp_path / "spark.csv"
    assert run(protocol_file, source, "-o", expected, "--engine", "python", "-q")[0] == 0
    code, result = run(protocol_file, directory, "-o", out, "--engine", "spark", "--master", "local[1]", "-q")
    assert code == 0, result.output
    assert out.read_bytes() == expected.read_bytes()
    decisions = {row[2] for row in csv.reader(io.StringIO(out.read_text(encoding="utf-8")))}
    assert decisions == {"decision", "eligible", "ineligible", "needs review"}


def test_spark_plans_jy231_a_level_or_two_at_a_time() -> None:
    """The stages Spark runs JY231's query in: each reads only views still registered, no plan
    spans more than CHECKPOINT_EVERY levels since a checkpoint, and a checkpoint is released
    only when no later stage reads its rows."""
    protocol, _ = compile_or_fail(JY231)
    query = emit_sql(protocol, "spark").strip().removesuffix(";")
    stages = sql_engine.stages(sql_engine.RESULTS, query)
    assert stages[-1].name == sql_engine.RESULTS and not stages[-1].checkpoint
    assert all(s.name.startswith("_") for s in stages[:-1])
    views: set[str] = set()
    kept: set[str] = set()
    depth: dict[str, int] = {}
    needs: dict[str, set[str]] = {}
    for stage in stages:
        read = {t.name for t in sqlglot.parse_one(stage.query, read="spark").find_all(sqlglot.exp.Table)
                if t.name.startswith("_")}
        assert read <= views, stage.name
        depth[stage.name] = 0 if stage.checkpoint else 1 + max((depth[t] for t in read), default=0)
        assert depth[stage.name] < sql_engine.CHECKPOINT_EVERY or stage.name == sql_engine.RESULTS
        needs[stage.name] = {stage.name} if stage.checkpoint else set().union(*(needs[t] for t in read))
        views.add(stage.name)
        kept |= {stage.name} if stage.checkpoint else set()
        views -= set(stage.drop)
        assert set(stage.release) <= kept
        kept -= set(stage.release)
        for gone in stage.release:
            assert all(gone not in needs[v] for v in views), (stage.name, gone)
    assert {"_q1_items", "_l1", "_l10"} <= {s.name for s in stages if s.checkpoint}
    assert {"_l1", "_l3"} <= {t for s in stages for t in s.release}


@pytest.mark.spark
def test_spark_screens_jy231_as_duckdb_does(tmp_path: Path, parquet: Path) -> None:
    expected, out = tmp_path / "duckdb.jsonl", tmp_path / "spark.jsonl"
    assert run(JY231, parquet, "-o", expected, "--engine", "duckdb", "-q")[0] == 0
    code, result = run(JY231, parquet, "-o", out, "--engine", "spark", "--master", "local[2]", "-q")
    assert code == 0, result.output
    assert out.read_bytes() == expected.read_bytes()
    decisions = {json.loads(line)["decision"] for line in out.read_text(encoding="utf-8").splitlines()}
    assert decisions == {"eligible", "ineligible", "needs review"}


# ---- Parquet: dated results ------------------------------------------------------------------

DATED = '''protocol D "Dated results"

enum TestResult
  negative "Negative"
  positive "Positive"

patient
  screening: date
  hb: quantity g/L also g/dL from 20 to 250 g/L measured within 14 days before screening
  alt: lab U/L from 0 to 5000 measured within 14 days before screening
  pregnancy_test: TestResult measured within 3 days before screening

inclusion
  I1 "Blood"
    hb >= 60 g/L
    alt <= 3.0 x ULN
    pregnancy_test is negative
'''


def test_bad_dated_parquet_values_are_error_rows_worded_as_validate_words_them(tmp_path: Path) -> None:
    source = tmp_path / "dated.crit"
    source.write_text(DATED, encoding="utf-8")
    protocol, loaded = compile_or_fail(source)
    module = evaluator(protocol, loaded)
    day = "2025-06-20"

    def record(hb: object = 120, alt: object = 30, test: object = "negative") -> dict[str, Any]:
        return {"screening": "2025-06-25", "hb": {"value": hb, "unit": "g/dL" if hb == 12 else "g/L", "measured": day},
                "alt": {"value": alt, "uln": 40, "measured": day}, "pregnancy_test": {"value": test, "measured": day}}

    good = [(f"D{n}", record(hb=12 if n == 7 else 120)) for n in range(1, 8)]
    assert not any(module.validate(r) for _, r in good)
    directory = tmp_path / "cohort"
    sql_engine.write_parquet(tables.layout(protocol), good, directory, tmp_path)
    bad = _rewrite(directory, tmp_path / "bad", "patients", """
        SELECT * REPLACE (
          CASE WHEN patient_id = 'D1' THEN NULL ELSE hb__measured END AS hb__measured,
          CASE WHEN patient_id = 'D2' THEN NULL WHEN patient_id = 'D5' THEN 'maybe' ELSE pregnancy_test END
            AS pregnancy_test,
          CASE WHEN patient_id = 'D3' THEN 'infinity'::DATE ELSE pregnancy_test__measured END
            AS pregnancy_test__measured,
          CASE WHEN patient_id = 'D4' THEN 10.8 ELSE hb END AS hb,
          CASE WHEN patient_id = 'D6' THEN 6000 ELSE alt END AS alt) FROM t""")
    out = tmp_path / "out.jsonl"
    code, result = run(source, bad, "-o", out, "-q")
    assert code == 3, result.output
    errors = {r["id"]: r["error"] for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())
              if r["decision"] == "error"}
    assert errors.pop("D1") == "hb.measured: missing: the date the result was measured"
    assert errors.pop("D2") == "pregnancy_test.value: missing"
    assert errors.pop("D3") == "pregnancy_test.measured: 'infinity' is not a date; write YYYY-MM-DD"
    as_records = {"D4": record(hb=10.8), "D5": record(test="maybe"), "D6": record(alt=6000)}
    for patient, written in as_records.items():  # what validate() says of the same values in a record
        assert errors.pop(patient) == "; ".join(map(str, module.validate(written)))
    assert errors == {}  # D7, written in g/dL, is stored in g/L and within its range
