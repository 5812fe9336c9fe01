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
from crit.process import Failure
from crit.screening import screen
from crit.screening.screen import screen_command

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
               {k: v for k, v in BASE.items() if k != "alt"}, {**BASE, "id": "d", "diagnosis": "other"}]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert run(JY231, source, "-o", out, "-q")[0] == 0
    found = rows(out)
    assert found[0]["decided_by"] == ["I5", "I5.1"]
    assert found[1]["decided_by"] == ["I1", "I4"]
    assert found[2]["decided_by"] == ["I5", "I5.4"] and found[2]["missing"] == ["alt"]
    assert found[3]["decided_by"] == ["I2"]  # `requires any`: every disease failed, none is named


def test_decided_by_names_a_partly_known_criterion_only_if_it_may_refuse(tmp_path: Path) -> None:
    """c missing: E1 (`when c`) is "met or not applicable" when x is true (it may exclude: named),
    "not met or not applicable" when x is false (it cannot: the patient is eligible)."""
    protocol = tmp_path / "gated.crit"
    protocol.write_text('protocol G "gated"\n\npatient\n  c: bool\n  x: bool\n\ninclusion\n'
                        '  I1 "always"\n    true\n\nexclusion\n  E1 "gated" when c\n    x\n', encoding="utf-8")
    source = tmp_path / "in.jsonl"
    source.write_text('{"x": true}\n{"x": false}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert run(protocol, source, "-o", out, "-q")[0] == 0
    found = rows(out)
    assert (found[0]["decision"], found[0]["decided_by"], found[0]["missing"]) == ("needs review", ["E1"], ["c"])
    assert (found[1]["decision"], found[1]["decided_by"], found[1]["missing"]) == ("eligible", [], [])


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
    assert found[3]["error"].startswith("line 6: ") and "1e999 is beyond any measurement" in found[3]["error"]
    assert found[4]["error"] == "line 7: not valid UTF-8 (byte 0xff)"
    assert found[5]["error"] == "line 8: record: nested more than 64 levels deep"  # read by crit.sources.records
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
              "systemic_infection", "other_study"]
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


def test_a_duplicate_csv_column_makes_the_input_unreadable(tmp_path: Path) -> None:
    """Exit 3 as for any input that cannot be read (it was 2, a usage error), in one line."""
    source = tmp_path / "in.csv"
    source.write_text("id,age,age\n1,2,3\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    code, result = run(JY231, source, "-o", out)
    assert code == 3 and not out.exists()
    assert result.stderr == f"crit: {source}: the CSV header names the column 'age' twice; nothing screened\n"
    assert list(tmp_path.iterdir()) == [source]  # no temporary file left


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


# ---- issue 8: outputs never overwrite inputs (item 6) ---------------------------------------


def test_an_output_that_names_an_input_or_another_output_is_refused_before_anything_is_read(
        tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(BASE) + "\n", encoding="utf-8")
    odd = tmp_path / "cohort.md"  # an input whose name a report could take
    odd.write_text(json.dumps(BASE) + "\n", encoding="utf-8")
    for crit_file in [JY231, *JY231.parent.glob("schemas/*.crit")]:  # the protocol and the schemas it imports
        copy = tmp_path / crit_file.relative_to(JY231.parent)
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(crit_file.read_bytes())
    protocol = tmp_path / JY231.name
    (tmp_path / "sub").mkdir()
    out, md = tmp_path / "out.jsonl", tmp_path / "r.md"
    missing = tmp_path / "missing.crit"  # the refusal comes before anything is read: even the protocol
    cases = [
        ([missing, source, "-o", tmp_path / "sub" / ".." / "in.jsonl"], "-o", "names the input"),
        ([missing, odd, "--input-format", "jsonl", "-o", out, "--report", odd], "--report", "names the input"),
        ([missing, source, "-o", out, "--report", md, "--report", tmp_path / "sub" / ".." / "r.md"],
         "--report", "names the same file as --report"),
        ([protocol, source, "-o", protocol, "--output-format", "jsonl"], "-o", "names the protocol"),
    ]
    for args, flag, message in cases:
        code, result = run(*args)
        assert code == 2, (args, result.stderr)
        assert result.stderr.startswith(f"crit: {flag} ") and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
    assert source.read_text(encoding="utf-8") == odd.read_text(encoding="utf-8") == json.dumps(BASE) + "\n"
    assert protocol.read_bytes() == JY231.read_bytes()
    assert not out.exists() and not md.exists()
    assert run(protocol, source, "-o", out, "--report", md, "-q")[0] == 0 and out.exists() and md.exists()


# ---- issue 8: one bad record is one error row (item 8) ---------------------------------------


def test_an_unclosed_quote_in_a_csv_costs_only_the_lines_it_took(tmp_path: Path) -> None:
    """A quote left open takes the lines up to where CSV finds it invalid (here a quote closes
    and text follows it), as one error row; reading goes on after them, so the rest of the file
    is screened (it once swallowed every later row)."""
    source = tmp_path / "in.csv"
    source.write_text('id,age,sex\n1,40,female\n2,"40,female\n3,41,male\n4,42,"fe""male"\n5,43,male\n'
                      '6,44,"male\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code, _ = run(JY231, source, "-o", out, "-q")
    found = rows(out)
    assert code == 3
    assert [r["record"] for r in found] == [1, 2, 3, 4]
    assert [r["id"] for r in found] == ["1", None, "5", None]
    assert found[1]["error"] == "lines 3-5: not valid CSV: ',' expected after '\"'; these lines are not read"
    assert found[2]["error"] is None or "line 6" in found[2]["error"]
    assert found[3]["error"] == ("line 7: a quoted cell is not closed on this line")


def test_a_quoted_csv_cell_may_hold_line_breaks_and_never_makes_a_record(tmp_path: Path) -> None:
    """RFC 4180: a quoted cell may span lines (Excel and Python's csv write them so). The cell's
    second line once became a patient of its own ("P9 on file)"), eligible."""
    protocol = tmp_path / "p.crit"
    protocol.write_text('protocol P "p"\n\npatient\n  age: integer "Age"\n  hb: integer "Hb"\n  x: integer "X"\n\n'
                        'inclusion\n  I1 "Adults"\n    age >= 18\n', encoding="utf-8")
    source = tmp_path / "in.csv"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # as Excel writes it: CRLF, the break inside quotes too
    writer.writerows([["age", "hb", "x", "id"], ["10", "60", "1", "P1 (note: see\r\n30,60,1,P9 on file)"],
                      ["30\r\n", "60", "1", "P2"], ["40", "60", "1", "P3"]])
    source.write_bytes(buffer.getvalue().encode("utf-8"))
    out = tmp_path / "out.jsonl"
    code, _ = run(protocol, source, "-o", out, "-q")
    found = rows(out)
    assert code == 0, found
    assert [(r["record"], r["id"], r["decision"]) for r in found] == [
        (1, "P1 (note: see\r\n30,60,1,P9 on file)", "ineligible"), (2, "P2", "eligible"), (3, "P3", "eligible")]


def test_a_quote_left_open_takes_at_most_the_bounded_span(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crit.sources import cohort

    monkeypatch.setattr(cohort, "MAX_RECORD_LINES", 3)
    source = tmp_path / "in.csv"
    source.write_text('id,age,sex\n1,"40,female\n2,40,female\n3,40,female\n4,40,female\n5,40,female\n',
                      encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code, _ = run(JY231, source, "-o", out, "-q")
    found = rows(out)
    assert code == 3
    assert [r["id"] for r in found] == [None, "4", "5"]  # lines 2-4 are one record; reading resumes at line 5
    assert found[0]["error"] == ("lines 2-4: a quoted cell is still open after 3 lines (3 lines and 1 MiB at most); "
                                 "these lines are not read")
    assert found[1]["error"] is None or "line 5" in found[1]["error"]
    monkeypatch.setattr(cohort, "MAX_RECORD_LINES", 64)
    monkeypatch.setattr(cohort, "LINE_LIMIT", 30)  # the bound in bytes too: line 4 would take it to 37
    code, _ = run(JY231, source, "-o", out, "-q")
    assert [r["id"] for r in rows(out)] == [None, "3", "4", "5"]
    assert rows(out)[0]["error"] == ("lines 2-3: a quoted cell is still open after 2 lines (64 lines and 30 bytes "
                                     "at most); these lines are not read")


def test_an_oversized_cell_or_line_is_one_error_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crit.sources import cohort

    source = tmp_path / "in.csv"
    deep = "[" * 3000 + "]" * 3000
    lines = ["id,age,treatments", "a,40,", f"b,{'9' * 5000},", f'c,40,"{deep}"',
             'd,40,"[{""agent"": 1, ""agent"": 2}]"', f"e,40,{'x' * 20000}", "f,41,"]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr(cohort, "LINE_LIMIT", 16384)
    out = tmp_path / "out.jsonl"
    code, _ = run(JY231, source, "-o", out, "-q")
    found = rows(out)
    assert code == 3 and [r["record"] for r in found] == [1, 2, 3, 4, 5, 6]
    assert [r["id"] for r in found] == ["a", "b", "c", "d", None, "f"]
    assert found[1]["error"] == ("line 3: age: a number of 5000 characters is longer than any measurement "
                                 "(40 at most)")
    assert found[2]["error"] == "line 4: treatments: nested more than 64 levels deep"
    assert found[3]["error"] == "line 5: treatments[0].agent: given more than once"
    assert found[4]["error"] == "line 6: longer than 16,384 bytes, more than any patient record; not read"
    assert all(r["error"] is None or r["decision"] == "error" for r in found)
    assert found[0]["decision"] == found[5]["decision"] != "error"


def test_json_lines_are_read_exactly_and_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crit.sources import cohort

    monkeypatch.setattr(cohort, "LINE_LIMIT", 8192)
    good = json.dumps(BASE)
    lines = [good, '{"id": "dup", "age": 10, "age": 30}', '{"id": "big", "age": ' + "9" * 5000 + "}",
             '{"x": ' + "[" * 3000 + "]" * 3000 + "}", '{"id": "long", "note": "' + "x" * 20000 + '"}',
             json.dumps({**BASE, "id": "again"}),
             json.dumps({**BASE, "id": "exact", "hemoglobin": "HB"}).replace(
                 '"HB"', '{"value": 59.99999999999999999, "unit": "g/L"}')]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code, _ = run(JY231, source, "-o", out, "-q", "--jobs", "2")
    found = rows(out)
    assert code == 3 and [r["record"] for r in found] == list(range(1, 8))
    assert found[1]["error"] == "line 2: age: given more than once"
    assert found[2]["error"] == ("line 3: record: a number of 5000 characters is longer than any measurement "
                                 "(40 at most)")
    assert found[3]["error"] == "line 4: record: nested more than 64 levels deep"
    assert found[4]["error"] == "line 5: longer than 8,192 bytes, more than any patient record; not read"
    assert found[0]["decision"] == found[5]["decision"] == "eligible"
    assert (found[6]["decision"], found[6]["decided_by"]) == ("ineligible", ["I5", "I5.1"])  # exact: below 60


# ---- issue 8: interrupted screens (item 9) ---------------------------------------------------


@pytest.fixture(scope="module")
def big_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "cohort.jsonl"
    line = json.dumps(BASE) + "\n"
    path.write_text(line * 60_000, encoding="utf-8")
    return path


# Earlier outputs of crit screen (which it may replace): a results line and a marked report.
OLD_RESULTS = ('{"record": 1, "id": "old", "decision": "eligible", "decided_by": [], "missing": [], '
               '"pending_judgments": [], "error": null}\n')
OLD_REPORT = "<!-- @generated by crit from an earlier screen -->\nthe old report\n"


def _interrupt(big: Path, where: Path, sig: int, jobs: int, group: bool) -> tuple[int, str, list[int]]:
    """Start `crit screen` on a big cohort, send `sig` once it is writing, and return its exit
    code, its stderr and the pids of its worker processes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    command = [sys.executable, "-c", "import sys; from crit.cli import main; sys.exit(main())", "screen",
               str(JY231), str(big), "-o", str(where / "out.jsonl"), "--report", str(where / "report.md"),
               "--jobs", str(jobs)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while not list(where.glob(".out.jsonl.*.part")):
        assert process.poll() is None and time.monotonic() < deadline, "the screen never started writing"
        time.sleep(0.01)
    while jobs > 1 and len(_children(process.pid)) < jobs + 1:  # the workers and multiprocessing's tracker
        assert process.poll() is None and time.monotonic() < deadline, "the workers never started"
        time.sleep(0.01)
    time.sleep(0.3)  # well into the cohort
    workers = _children(process.pid)
    assert process.poll() is None, "the cohort was screened before the signal: make it bigger"
    if group:
        os.killpg(process.pid, sig)  # as a terminal's Ctrl-C does: every process in the group
    else:
        os.kill(process.pid, sig)
    _, stderr = process.communicate(timeout=60)
    del signal
    return process.returncode, stderr.decode(), workers


def _children(pid: int) -> list[int]:
    from pathlib import Path as P

    found = []
    for task in P(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    from pathlib import Path as P

    try:
        state = P(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize(("name", "jobs", "group"), [
    ("SIGINT", 1, True), ("SIGINT", 2, True), ("SIGTERM", 1, False), ("SIGTERM", 2, False), ("SIGTERM", 2, True),
])
def test_an_interrupted_screen_leaves_no_partial_file_and_the_old_output_untouched(
        tmp_path: Path, big_cohort: Path, name: str, jobs: int, group: bool) -> None:
    import signal
    import time

    (tmp_path / "out.jsonl").write_text(OLD_RESULTS, encoding="utf-8")
    (tmp_path / "report.md").write_text(OLD_REPORT, encoding="utf-8")
    code, stderr, workers = _interrupt(big_cohort, tmp_path, getattr(signal, name), jobs, group)
    assert code == (130 if name == "SIGINT" else 143)
    word = "interrupted" if name == "SIGINT" else "terminated"
    assert stderr == f"crit: {word}; no file written, earlier files left as they were\n"  # one line, no traceback
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "report.md"]  # no .part left
    assert (tmp_path / "out.jsonl").read_text(encoding="utf-8") == OLD_RESULTS
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == OLD_REPORT
    deadline = time.monotonic() + 10  # the workers are stopped, not left running
    while [pid for pid in workers if _alive(pid) and "resource_tracker" not in _cmdline(pid)]:
        assert time.monotonic() < deadline, [_cmdline(pid) for pid in workers if _alive(pid)]
        time.sleep(0.05)


def _cmdline(pid: int) -> str:
    from pathlib import Path as P

    try:
        return P(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def test_several_processes_leave_no_child_behind(tmp_path: Path) -> None:
    import multiprocessing
    import os

    code, _ = run(JY231, COHORT / "patients.jsonl", "-o", tmp_path / "out.jsonl", "-q", "--jobs", "2")
    assert code == 3
    assert multiprocessing.active_children() == []
    leftovers = [pid for pid in _children(os.getpid()) if "resource_tracker" not in _cmdline(pid)]
    assert leftovers == []  # neither a worker nor a defunct one


# ---- issue 8: JSON documents, byte-order marks, CSV list items, the README's cohort (item 10) --------


def test_a_json_file_is_one_document_a_patient_or_a_list_of_them(tmp_path: Path) -> None:
    one, many = tmp_path / "one.json", tmp_path / "many.json"
    one.write_bytes(b"\xef\xbb\xbf" + json.dumps(BASE, indent=2).encode())
    items = [json.dumps({**BASE, "id": "a"}, indent=2), '{"id": "b", "age": 1, "age": 2}',
             json.dumps({**BASE, "id": "c"}), '{"id": "d", "x": ' + "[" * 3000 + "]" * 3000 + "}",
             json.dumps({**BASE, "id": "e"})]
    many.write_text("[\n" + ",\n".join(items) + "\n]\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert run(JY231, one, "-o", out, "-q")[0] == 0
    assert [(r["record"], r["id"], r["decision"]) for r in rows(out)] == [(1, "P-001", "eligible")]
    assert run(JY231, many, "-o", out, "-q")[0] == 3
    found = rows(out)
    assert [(r["record"], r["decision"]) for r in found] == [
        (1, "eligible"), (2, "error"), (3, "eligible"), (4, "error"), (5, "eligible")]
    first_line_of_b = 2 + items[0].count("\n") + 1
    assert found[1]["error"] == f"line {first_line_of_b}: age: given more than once"
    assert found[3]["error"] == f"line {first_line_of_b + 2}: record: nested more than 64 levels deep"
    assert [r["id"] for r in found][::2] == ["a", "c", "e"]
    # a list cut short: what was read is screened, and the cut record is one error row saying so
    many.write_text("[\n" + ",\n".join(items[:3]) + ",\n" + items[4][:40], encoding="utf-8")
    assert run(JY231, many, "-o", out, "-q")[0] == 3
    found = rows(out)
    assert [r["decision"] for r in found] == ["eligible", "error", "eligible", "error"]
    cut_line = 2 + sum(item.count("\n") + 1 for item in items[:3])
    assert found[-1]["error"] == (f"line {cut_line}: the document ends before its list is closed; "
                                  "the file may be cut short")


@pytest.mark.parametrize(("text", "rows_expected"), [
    ('[{"id": "a"},\n{"id": "b", "age":', 2),  # cut inside the last record
    ('[{"id": "a"},\n{"id": "b"}', 2),  # cut after it, before the bracket
    ('[{"id": "a"},\n', 2),  # cut after a comma: the records after it are lost
    ('[\n', 1),
])
def test_a_cut_json_list_gives_one_error_row_for_the_cut(tmp_path: Path, text: str, rows_expected: int) -> None:
    """One cut record at the end of a .json list gave two error rows ("Expecting ',' delimiter"
    and "the document ends before its list is closed")."""
    source = tmp_path / "in.json"
    source.write_text(text, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert run(JY231, source, "-o", out, "-q")[0] == 3
    found = rows(out)
    assert len(found) == rows_expected
    assert found[-1]["error"] == ("line 2: the document ends before its list is closed; "
                                  "the file may be cut short")


def test_a_byte_order_mark_is_accepted_in_every_format(tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    inputs = {"in.jsonl": json.dumps(BASE).encode() + b"\n", "in.json": json.dumps([BASE]).encode(),
              "in.csv": b"id,age\nx,40\n"}
    for name, data in inputs.items():
        plain, marked = tmp_path / f"plain-{name}", tmp_path / f"bom-{name}"
        plain.write_bytes(data)
        marked.write_bytes(bom + data)
        out_plain, out_marked = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
        run(JY231, plain, "-o", out_plain, "-q")
        run(JY231, marked, "-o", out_marked, "-q")
        assert out_plain.read_bytes() == out_marked.read_bytes(), name
        read = [(r["id"], r["decision"]) for r in rows(out_marked)]
        assert read in ([("P-001", "eligible")], [("x", "needs review")]), name


def test_a_csv_list_item_keeps_its_column_number(tmp_path: Path) -> None:
    header = [*PLAIN, "hemoglobin", "ast", "alt", "bilirubin", "treatments[0].agent", "treatments[0].immunosuppressive",
              "treatments[0].start", "treatments[0].end", "treatments[7].agent", "treatments[7].immunosuppressive",
              "treatments[7].start", "treatments[7].end", "severe_disorders", "malignancies"]
    values = [("true" if v is True else "no" if v is False else str(v)) for v in PLAIN.values()]
    labs = [json.dumps(BASE[k]) for k in ("hemoglobin", "ast", "alt", "bilirubin")]
    row = [*values, *labs, "mmf", "yes", "2022-01-10", "2022-12-20", "tacrolimus", "yes", "", "2025-06-15", "[]", "[]"]
    found = csv_rows(tmp_path, header, row)
    assert found[0]["decision"] == "needs review"
    assert "treatments[7].start" in found[0]["missing"]
    assert "treatments[0].start" not in found[0]["missing"]
    # the items between, which no cell fills, are there with every fact missing: nothing is dropped
    assert "treatments[1].start" in found[0]["missing"]


def test_a_csv_column_naming_a_far_list_item_makes_the_input_unreadable(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id,treatments[100000000].agent\n1,x\n", encoding="utf-8")
    code, result = run(JY231, source, "-o", tmp_path / "out.jsonl")
    assert code == 3 and "treatments[100000000].agent" in result.stderr and result.stderr.count("\n") == 1


def test_the_readme_csv_cohort_command_works_and_screens_like_json_lines(tmp_path: Path) -> None:
    import subprocess
    import sys

    for name in ("cohort.csv", "cohort.jsonl"):
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cohort.py"), "400", "--invalid", "0.05",
                               "-o", str(tmp_path / name)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    from_csv, from_jsonl = tmp_path / "csv.jsonl", tmp_path / "jsonl.jsonl"
    assert run(JY231, tmp_path / "cohort.csv", "-o", from_csv, "-q")[0] == 3
    assert run(JY231, tmp_path / "cohort.jsonl", "-o", from_jsonl, "-q")[0] == 3
    by_csv, by_jsonl = rows(from_csv), rows(from_jsonl)
    assert len(by_csv) == len(by_jsonl) == 400
    assert sum(r["decision"] == "error" for r in by_csv) >= 5
    differ = [(a, b) for a, b in zip(by_csv, by_jsonl, strict=True) if a != b]
    assert not differ, differ[:3]


# ---- issue 8: CSV formula injection (item 11) and strict JSON (item 14) ---------------------


def test_csv_output_cells_cannot_start_a_formula(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    hostile = ["=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)", "\t=1", "\r=1", "ok"]
    lines = [json.dumps({**BASE, "id": i}) for i in hostile]
    lines.append(json.dumps({**BASE, "id": "x", "=cmd|' /C calc'!A0": 1}))  # an unknown field: the message starts so
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    run(JY231, source, "-o", out, "-q")
    table = list(csv.reader(io.StringIO(out.read_bytes().decode("utf-8"), newline="")))[1:]
    assert [r[1] for r in table] == ["'" + i for i in hostile[:-1]] + ["ok", "x"]
    assert table[-1][6].startswith("'=cmd|")
    for row in table:
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row), row


def test_json_output_is_strict_json_whatever_the_ids(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    ids = ['NaN', '"NaN"', 'Infinity', '-Infinity', '1e400', '1.50', 'true', '[1, 2]', '{"a": 1.0}', '12']
    source.write_text("".join('{"id": ' + i + ', "age": 40}\n' for i in ids), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    run(JY231, source, "-o", out, "-q")

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    found = [json.loads(line, parse_constant=refuse) for line in out.read_text(encoding="utf-8").splitlines()]
    # 1e400 is a number no measurement needs: a problem when read (crit.sources.records), so no id either
    assert [r["id"] for r in found] == [None, "NaN", None, None, None, "1.50", "true", "[1, 2]", '{"a": 1.0}', 12]
    assert found[0]["error"].startswith("line 1: record: not valid JSON")
    whole = tmp_path / "out.json"
    run(JY231, source, "-o", whole, "-q")
    assert [r["id"] for r in json.loads(whole.read_text(encoding="utf-8"), parse_constant=refuse)] == \
        [r["id"] for r in found]


# ---- issue 8: permissions (item 18) and the evaluator alone (item 9's hint) ------------------


def test_result_files_honour_the_umask(tmp_path: Path) -> None:
    import os
    import stat

    for mask, mode in ((0o022, 0o644), (0o027, 0o640)):
        previous = os.umask(mask)
        try:
            out, md = tmp_path / f"out-{mask:o}.csv", tmp_path / f"r-{mask:o}.md"
            run(JY231, COHORT / "patients.jsonl", "-o", out, "--report", md, "-q")
        finally:
            os.umask(previous)
        assert stat.S_IMODE(out.stat().st_mode) == mode
        assert stat.S_IMODE(md.stat().st_mode) == mode


def test_screen_renders_no_markdown_of_the_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crit.backends import markdown

    def refuse(*args: object, **kwargs: object) -> str:
        raise AssertionError("crit screen rendered the protocol's Markdown")

    monkeypatch.setattr(markdown, "emit_markdown", refuse)
    code, _ = run(JY231, COHORT / "patients.jsonl", "-o", tmp_path / "out.jsonl", "-q")
    assert code == 3


# ---- red-team review of issue 8: crit replaces an output only if crit wrote it --------------


def _copy_jy231(where: Path) -> Path:
    for crit_file in [JY231, *JY231.parent.glob("schemas/*.crit")]:
        copy = where / crit_file.relative_to(JY231.parent)
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(crit_file.read_bytes())
    return where / JY231.name


def test_an_output_naming_a_file_the_protocol_imports_is_refused(tmp_path: Path) -> None:
    """`-o s/schema.crit` overwrote the protocol's imported schema."""
    protocol = _copy_jy231(tmp_path)
    schema = next((tmp_path / "schemas").glob("*.crit"))
    kept = schema.read_bytes()
    (tmp_path / "again").mkdir()
    twin = tmp_path / "schema.md"  # a report reaching the schema under another name (a hard link)
    twin.hardlink_to(schema)
    for flag, target in (("-o", tmp_path / "again" / ".." / "schemas" / schema.name), ("--report", twin)):
        args = ["-o", target, "--output-format", "jsonl"] if flag == "-o" else \
            ["-o", tmp_path / "out.jsonl", "--report", target]
        code, result = run(protocol, COHORT / "patients.jsonl", *args, "-q")
        assert code == 2, result.stderr
        assert result.stderr.startswith(f"crit: {flag} {target} names ") and result.stderr.count("\n") == 1
        assert result.stderr.endswith(", which the protocol reads; crit will not overwrite it\n"), result.stderr
        assert schema.read_bytes() == kept
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(("flag", "name", "text"), [
    ("-o", "notes.jsonl", '{"my": "notes"}\n'),
    ("-o", "notes.csv", "name,phone\nDr X,555\n"),
    ("-o", "notes.json", '[{"record": 1}]\n'),
    ("--report", "README.md", "# My project\n\nHand-written.\n"),
    ("--report", "page.html", "<!DOCTYPE html>\n<!-- @generated by crit, said someone -->\n"),
])
def test_an_existing_file_crit_did_not_write_is_never_replaced(tmp_path: Path, flag: str, name: str,
                                                               text: str) -> None:
    target = tmp_path / name
    target.write_text(text, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ["-o", target] if flag == "-o" else ["-o", out, "--report", target]
    code, result = run(JY231, COHORT / "patients.jsonl", *args, "-q")
    assert code == 2
    assert result.stderr == (f"crit: {flag} {target} exists and crit did not write it; crit will not overwrite it: "
                             "delete it or choose another name\n")
    assert target.read_text(encoding="utf-8") == text
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_crit_replaces_its_own_results_and_reports(tmp_path: Path, suffix: str) -> None:
    """What crit wrote it recognises (results by their shape, reports by their first line),
    whatever the format the earlier run used, and replaces on a rerun."""
    out, md, page = tmp_path / f"out{suffix}", tmp_path / "r.md", tmp_path / "r.html"
    args = (JY231, COHORT / "patients.jsonl", "-o", out, "--report", md, "--report", page, "-q")
    assert run(*args)[0] == 3  # the sample has two bad rows on purpose
    first = out.read_bytes()
    for report_file in (md, page):
        assert report_file.read_text(encoding="utf-8").startswith("<!-- @generated by crit from ")
    assert run(*args)[0] == 3, "crit refused its own outputs"
    assert out.read_bytes() == first
    other = tmp_path / "other.jsonl"  # results of another format under this name: still crit's
    other.write_bytes(first)
    assert run(JY231, COHORT / "patients.jsonl", "-o", other, "--output-format", "jsonl", "-q")[0] == 3
    empty = tmp_path / "empty.jsonl"  # an empty file has nothing to lose
    empty.touch()
    assert run(JY231, COHORT / "patients.jsonl", "-o", empty, "-q")[0] == 3 and empty.stat().st_size


def test_the_report_mark_cannot_be_closed_by_a_file_name(tmp_path: Path) -> None:
    import html

    folder = tmp_path / "a -->\n<script>x"
    folder.mkdir()
    source = folder / "c.jsonl"
    source.write_text(json.dumps(BASE) + "\n", encoding="utf-8")
    md = tmp_path / "r.md"
    assert run(JY231, source, "-o", tmp_path / "out.jsonl", "--report", md, "-q")[0] == 0
    first, _ = md.read_text(encoding="utf-8").split("\n", 1)
    assert first.startswith("<!-- @generated by crit ") and first.endswith(" -->")
    assert first.count("-->") == 1 and "<script" not in first
    assert str(source) in html.unescape(first)


def test_rerunning_keeps_the_mode_of_an_existing_output(tmp_path: Path) -> None:
    """A results file made 0640 came back 0644 when the screen was rerun."""
    import stat

    out, md = tmp_path / "out.csv", tmp_path / "r.md"
    args = (JY231, COHORT / "patients.jsonl", "-o", out, "--report", md, "-q")
    run(*args)
    out.chmod(0o640)
    md.chmod(0o600)
    run(*args)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert stat.S_IMODE(md.stat().st_mode) == 0o600


def test_an_output_that_is_a_device_is_refused(tmp_path: Path) -> None:
    """Renaming a finished output over /dev/null (or a pipe) would replace the device itself."""
    import os

    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    # (a pipe, not /dev/null itself: should this regress, the test must not replace a system file)
    code, result = run(JY231, COHORT / "patients.jsonl", "-o", fifo, "-q")
    assert code == 2 and result.stderr.startswith(f"crit: -o {fifo} is not a regular file"), result.stderr
    assert fifo.exists() and not fifo.is_file()
