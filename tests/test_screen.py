"""`crit screen`: one row per input record, in order, from JSON Lines or CSV, in one process or
several; unreadable records get error rows; CSV columns map to nested fields."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner, Result

from conftest import ROOT
from crit import screen
from crit.cli import Failure
from crit.screen import screen_command

JY231 = ROOT / "protocols" / "jy231.crit"
COHORT = ROOT / "examples" / "cohort"
BASE: dict[str, Any] = json.loads((ROOT / "examples" / "patient-sle.json").read_text(encoding="utf-8"))


def run(*args: object, stdin: bytes | None = None) -> tuple[int, Result]:
    """Invoke the command; a Failure (crit's way to exit with a code) gives its code."""
    result = CliRunner().invoke(screen_command, [str(a) for a in args], input=stdin)
    if isinstance(result.exception, Failure):
        return result.exception.code, result
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_record_gets_one_row_in_order(tmp_path: Path, jy231: ModuleType) -> None:
    out = tmp_path / "results.jsonl"
    code, result = run(JY231, COHORT / "patients.jsonl", "-o", out)
    assert code == 3  # two records cannot be read; everything is still written
    records = [json.loads(line) for line in (COHORT / "patients.jsonl").read_text(encoding="utf-8").splitlines()]
    found = rows(out)
    assert len(found) == len(records) == 40
    assert [r["record"] for r in found] == list(range(1, 41))
    for record, row in zip(records, found, strict=True):
        assert row["id"] == record["id"]
        if jy231.validate(record):
            assert row["decision"] == "error" and row["error"]
            continue
        assessed = jy231.assess(record)
        assert row["decision"] == assessed.decision.value
        assert row["missing"] == list(assessed.missing)
        assert row["pending_judgments"] == list(assessed.pending_judgments)
        assert row["error"] is None
        assert (row["decided_by"] == []) == (row["decision"] == "eligible")
    assert found[12]["error"] == "age: expected a whole number, got text"
    assert found[27]["error"] == "hemoglobn: unknown field; did you mean 'hemoglobin'?"
    assert "screened 40 records" in result.stderr and "error                   2" in result.stderr
    assert "\r" not in result.stderr and "━" not in result.stderr  # no progress bar: CliRunner is no terminal
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl"]  # no partial file left behind


def test_decided_by_names_the_criteria_and_the_sub_criteria_under_them(tmp_path: Path) -> None:
    records = [{**BASE, "id": "a", "hemoglobin": 50}, {**BASE, "id": "b", "age": 80, "ecog": 3},
               {k: v for k, v in BASE.items() if k != "alt"}, {**BASE, "diagnosis": "other"}]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert run(JY231, source, "-o", out, "-q")[0] == 0
    found = rows(out)
    assert found[0]["decided_by"] == ["I5", "I5.1"]
    assert found[1]["decided_by"] == ["I1", "I4"]
    assert found[2]["decided_by"] == ["I5", "I5.4"] and found[2]["missing"] == ["alt"]
    assert found[3]["decided_by"] == ["I2"]  # `requires any`: every disease failed, none is named


def test_csv_in_gives_the_same_results_as_json_lines(tmp_path: Path) -> None:
    from_json, from_csv = tmp_path / "a.csv", tmp_path / "b.csv"
    run(JY231, COHORT / "patients.jsonl", "-o", from_json, "-q")
    run(JY231, COHORT / "patients.csv", "-o", from_csv, "-q")
    assert from_json.read_text(encoding="utf-8") == from_csv.read_text(encoding="utf-8")
    table = list(csv.DictReader(io.StringIO(from_csv.read_text(encoding="utf-8"))))
    assert list(table[0]) == list(screen.COLUMNS) and len(table) == 40


def test_several_processes_write_the_same_rows_in_the_same_order(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(screen, "BATCH", 7)  # several batches in flight, out of order
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    md_one, md_two = tmp_path / "one.md", tmp_path / "two.md"
    run(JY231, COHORT / "patients.jsonl", "-o", one, "-q", "--report", md_one)
    code, result = run(JY231, COHORT / "patients.jsonl", "-o", two, "--jobs", "2", "--report", md_two)
    assert code == 3 and "2 processes" in result.stderr
    assert one.read_bytes() == two.read_bytes()
    assert md_one.read_text(encoding="utf-8") == md_two.read_text(encoding="utf-8")


def test_lines_that_cannot_be_read_get_error_rows(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    lines = [json.dumps(BASE).encode(), b"", b"{not json", b"   ", b'"a string"', b'{"age": 1e999}',
             b'{"id": "x", "age": "\xff"}', b"[" * 2000 + b"]" * 2000, json.dumps({**BASE, "id": 7}).encode()]
    source.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.jsonl"
    code, _ = run(JY231, source, "-o", out, "-q")
    found = rows(out)
    assert code == 3
    assert [r["record"] for r in found] == [1, 2, 3, 4, 5, 6, 7]  # the two blank lines are not records
    assert [r["decision"] for r in found] == ["eligible", "error", "error", "error", "error", "error", "eligible"]
    assert found[1]["error"].startswith("line 3, column 2: not valid JSON")
    assert found[2]["error"] == "record: expected an object, got text"
    assert found[3]["error"] == "age: expected a finite number" or "whole number" in found[3]["error"]
    assert found[4]["error"] == "line 7: not valid UTF-8 (byte 0xff)"
    assert found[5]["error"] == "line 8: record: nested more than 64 levels deep"  # read by crit.records
    assert found[6]["id"] == 7


def test_standard_input_and_output(tmp_path: Path) -> None:
    data = (json.dumps(BASE) + "\n").encode()
    code, result = run(JY231, "-", "-o", "-", "-q", stdin=data)
    assert code == 0
    assert json.loads(result.stdout)["decision"] == "eligible"
    assert result.stderr == ""


# ---- CSV columns ------------------------------------------------------------------------------


def csv_rows(tmp_path: Path, header: list[str], *lines: list[str], bom: bool = False) -> list[dict[str, Any]]:
    source = tmp_path / "in.csv"
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(lines)
    source.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode())
    out = tmp_path / "out.jsonl"
    run(JY231, source, "-o", out, "-q")
    return rows(out)


PLAIN = {k: v for k, v in BASE.items() if not isinstance(v, (dict, list)) and v is not None}


def test_csv_columns_map_to_nested_fields(tmp_path: Path) -> None:
    header = [*PLAIN, "hemoglobin.value", "hemoglobin.unit", "ast.value", "ast.uln", "alt",
              "bilirubin.value", "bilirubin.uln", "treatments[0].agent", "treatments[0].immunosuppressive",
              "treatments[0].start", "treatments[0].end", "treatments[1].agent", "treatments[1].immunosuppressive",
              "treatments[1].start", "treatments[1].end", "severe_disorders", "malignancies", "last_live_vaccine",
              "last_systemic_infection", "last_other_study"]
    values = [("true" if v is True else "no" if v is False else str(v)) for v in PLAIN.values()]
    row = [*values, "10.8", "g/dL", "32", "40", '{"value": 41, "uln": 40}', "12", "21",
           "mmf", "yes", "2022-01-10", "2022-12-20", "tacrolimus", "Y", "2023-02-01", "2025-06-15", "[]", "[]",
           "null", "null", "null"]
    found = csv_rows(tmp_path, header, row, bom=True)
    assert found[0]["decision"] == "eligible", found[0]
    # an empty cell is a missing fact; a set is written a;b
    missing_end = list(row)
    missing_end[header.index("treatments[0].end")] = ""
    missing_end[header.index("severe_disorders")] = "cardiac;hepatic"
    found = csv_rows(tmp_path, header, missing_end)
    assert found[0]["decision"] == "needs review"
    assert found[0]["missing"] == ["treatments[0].end"] and found[0]["pending_judgments"] == ["disorder_outweighs"]


def test_csv_problems_become_error_rows_with_the_reason(tmp_path: Path) -> None:
    found = csv_rows(tmp_path, ["id", "age", "hemoglobin", "hemoglobin.value", "ecog", "sex"],
                     ["1", "forty", "", "", "", ""], ["2", "40", "100", "10", "", ""], ["3", "40"],
                     ["4", "40", "", "", "x", "female", "extra"], ["5", "40", "", "", "yes", "female"])
    assert [r["decision"] for r in found] == ["error"] * 5
    assert found[0]["error"] == "age: expected a whole number, got text"
    assert found[1]["error"] == "line 3: hemoglobin is given both in one cell and in columns such as hemoglobin.value"
    assert found[2]["error"] == "line 4: 2 cells, but the header has 6 columns"
    assert found[3]["error"] == "line 5: 7 cells, but the header has 6 columns"
    assert found[4]["error"] == "ecog: expected a whole number, got text"
    assert [r["id"] for r in found] == ["1", "2", "3", "4", "5"]  # a CSV id is text, kept on error rows


def test_a_duplicate_csv_column_is_a_usage_error(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id,age,age\n1,2,3\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    code, result = run(JY231, source, "-o", out)
    assert code == 2 and "'age' twice" in result.stderr and not out.exists()


# ---- the command's edges ---------------------------------------------------------------------


def test_a_protocol_with_errors_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.crit"
    bad.write_text('protocol P "p"\n\npatient\n  x: bool\n\ninclusion\n  I1 "a"\n    y\n', encoding="utf-8")
    code, result = run(bad, COHORT / "patients.jsonl", "-o", tmp_path / "out.jsonl")
    assert code == 1 and "unknown field 'y'" in result.stderr


def test_an_unreadable_input_exits_3(tmp_path: Path) -> None:
    code, result = run(JY231, tmp_path / "nowhere.jsonl", "-o", tmp_path / "out.jsonl")
    assert code == 3 and "cannot read" in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["-o", "out.txt"], "cannot tell the output format"),
    (["-o", "out.jsonl", "--report", "report.pdf"], "give a .md or .html file"),
])
def test_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    code, result = run(JY231, COHORT / "patients.jsonl", *[str(tmp_path / a) if "." in a else a for a in args])
    assert code == 2 and message in result.stderr


def test_quiet_prints_nothing(tmp_path: Path) -> None:
    code, result = run(JY231, COHORT / "patients.jsonl", "-o", tmp_path / "out.jsonl", "-q")
    assert code == 3 and result.stderr == ""
