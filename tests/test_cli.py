"""Every failure path of every subcommand: its message and its exit code, never a traceback."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run
from crit import cli

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "patient-sle.json"




def test_check_ok(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, out, _ = run(capsys, "check", "protocols/jy231.crit")
    assert code == 0
    assert out.startswith("protocols/jy231.crit: ok (JY231, ")


def test_check_missing_file(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, _, err = run(capsys, "check", "nope.crit")
    assert code == cli.EXIT_ERRORS
    assert "nope.crit:1:1: error[E101]: cannot read nope.crit" in err


def test_check_reports_a_typo_with_a_hint(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    path = project / "protocols" / "jy231.crit"
    path.write_text(path.read_text(encoding="utf-8").replace("hemoglobin >= 60", "hemoglobn >= 60"),
                    encoding="utf-8")
    code, _, err = run(capsys, "check", "protocols/jy231.crit")
    assert code == cli.EXIT_ERRORS
    assert "error[E201]: unknown field 'hemoglobn'" in err
    assert "= hint: did you mean 'hemoglobin'?" in err
    assert err.rstrip().endswith("1 error in protocols/jy231.crit")


def test_build_then_check_is_clean_then_stale(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, out, _ = run(capsys, "build")
    assert code == 0 and "wrote generated/jy231.py" in out and "wrote generated/jy231.md" in out
    code, out, _ = run(capsys, "build", "--check")
    assert code == 0 and "up to date" in out
    (project / "generated" / "jy231.md").write_text("edited by hand\n", encoding="utf-8")
    code, _, err = run(capsys, "build", "--check")
    assert code == cli.EXIT_ERRORS
    assert "stale: generated/jy231.md" in err and "run `crit build`" in err
    (project / "generated" / "jy231.py").unlink()
    code, _, err = run(capsys, "build", "--check")
    assert "stale: generated/jy231.py" in err


def test_build_one_file_to_a_directory(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, _, _ = run(capsys, "build", "protocols/jy231.crit", "-o", "out")
    assert code == 0
    assert sorted(p.name for p in (project / "out").iterdir()) == ["jy231.md", "jy231.py"]


def test_build_writes_sql_when_asked(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    """SQL is asked for by --sql, or by `sql` in [tool.crit] (as this repository does); the
    option wins over the table."""
    code, _, _ = run(capsys, "build", "protocols/jy231.crit", "-o", "out", "--sql", "spark")
    assert code == 0
    assert sorted(p.name for p in (project / "out").iterdir()) == ["jy231.md", "jy231.py", "jy231.spark.sql"]
    (project / "pyproject.toml").write_text('[tool.crit]\nsql = "duckdb"\n', encoding="utf-8")
    code, _, _ = run(capsys, "build", "protocols/jy231.crit", "-o", "table")
    assert code == 0
    assert sorted(p.name for p in (project / "table").iterdir()) == ["jy231.md", "jy231.py", "jy231.sql"]
    (project / "pyproject.toml").write_text('[tool.crit]\nsql = "oracle"\n', encoding="utf-8")
    code, _, err = run(capsys, "build", "protocols/jy231.crit", "-o", "bad")
    assert code == cli.EXIT_USAGE and "[tool.crit] sql must be one of duckdb, spark" in err


def test_build_with_nothing_to_build(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "build")
    assert code == cli.EXIT_USAGE
    assert "crit: no .crit files in protocols/" in err


def test_build_with_errors_writes_nothing(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    (project / "protocols" / "broken.crit").write_text('protocol B "b"\n\npatient\n  a: bol\n', encoding="utf-8")
    code, _, err = run(capsys, "build")
    assert code == cli.EXIT_ERRORS
    assert "unknown type 'bol'" in err
    assert not (project / "generated" / "broken.py").exists()


def test_eval_table_and_json(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, out, _ = run(capsys, "eval", "protocols/jy231.crit", str(SAMPLE))
    assert code == 0
    assert out.startswith("record P-001: ELIGIBLE\n")
    assert "  I5.1" in out and "hemoglobin 108 g/L ≥ 60 g/L" in out
    code, out, _ = run(capsys, "eval", "--json", "protocols/jy231.crit", str(SAMPLE))
    generated = json.loads(out)
    code, out, _ = run(capsys, "eval", "--json", "--interpret", "protocols/jy231.crit", str(SAMPLE))
    assert json.loads(out) == generated and generated["decision"] == "eligible"


def test_eval_a_record_with_a_missing_value(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    record = json.loads(SAMPLE.read_text(encoding="utf-8"))
    del record["alt"]
    (project / "r.json").write_text(json.dumps(record), encoding="utf-8")
    code, out, _ = run(capsys, "eval", "protocols/jy231.crit", "r.json")
    assert code == 0
    assert "record P-001: NEEDS REVIEW\n  missing: alt\n" in out


@pytest.mark.parametrize("engine", [[], ["--interpret"]])
def test_eval_does_not_send_to_review_what_no_value_can_change(capsys: pytest.CaptureFixture[str], project: Path,
                                                               engine: list[str]) -> None:
    """Issue 10, defect 6: sex unknown, not pregnant, not breastfeeding, no pregnancy planned.
    E6 (`when sex is female: pregnant or breastfeeding`, or pregnancy planned) cannot be met
    whatever the sex, so the patient is eligible, not sent to review for it."""
    record = json.loads(SAMPLE.read_text(encoding="utf-8"))
    del record["sex"]
    record |= {"pregnant": False, "breastfeeding": False, "pregnancy_planned": False}
    (project / "r.json").write_text(json.dumps(record), encoding="utf-8")
    code, out, _ = run(capsys, "eval", *engine, "protocols/jy231.crit", "r.json")
    assert code == 0
    assert out.startswith("record P-001: ELIGIBLE\n")
    assert "  E6            not met         missing: sex; pregnant: no;" in out
    code, out, _ = run(capsys, "eval", "--json", *engine, "protocols/jy231.crit", "r.json")
    assert json.loads(out)["missing"] == []
    # pregnant: now the sex decides (female is excluded), and it is the one fact to collect
    (project / "r.json").write_text(json.dumps(record | {"pregnant": True}), encoding="utf-8")
    code, out, _ = run(capsys, "eval", *engine, "protocols/jy231.crit", "r.json")
    assert out.startswith("record P-001: NEEDS REVIEW\n  missing: sex\n")
    assert "  E6            unknown         missing: sex; pregnant: yes" in out


def test_eval_invalid_json(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    (project / "r.json").write_text('{"age": 40,\n  "sex": }', encoding="utf-8")
    code, _, err = run(capsys, "eval", "protocols/jy231.crit", "r.json")
    assert code == cli.EXIT_RECORD
    assert "crit: r.json:2:10: not valid JSON: Expecting value" in err


def test_eval_missing_record_file(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, _, err = run(capsys, "eval", "protocols/jy231.crit", "absent.json")
    assert code == cli.EXIT_RECORD
    assert "crit: cannot read absent.json" in err


def test_eval_bad_record_names_each_field(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    (project / "r.json").write_text(json.dumps([{"id": "A", "age": "forty", "hemogobin": 1}, {"id": "B"}]),
                                    encoding="utf-8")
    code, out, _ = run(capsys, "eval", "protocols/jy231.crit", "r.json")
    assert code == cli.EXIT_RECORD
    assert ("record A: cannot be read\n  hemogobin: unknown field; did you mean 'hemoglobin'?\n"
            "  age: expected a whole number, got text\n") in out
    assert "record B: NEEDS REVIEW" in out


def test_eval_of_a_broken_protocol(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, _, err = run(capsys, "eval", "missing.crit", str(SAMPLE))
    assert code == cli.EXIT_ERRORS and "error[E101]" in err


@pytest.mark.parametrize("args", [["frobnicate"], ["check"], ["build", "--nope"], ["eval", "only-one"]])
def test_usage_errors(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    code, _, err = run(capsys, *args)
    assert code == cli.EXIT_USAGE
    assert err.startswith(("Error:", "Usage:"))


def test_internal_error_is_one_line_with_a_hint(capsys: pytest.CaptureFixture[str], project: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("something broke")

    monkeypatch.setattr("crit.pipeline.load", boom)
    code, _, err = run(capsys, "check", "protocols/jy231.crit")
    assert code == cli.EXIT_INTERNAL
    assert err == ("crit: internal error: RuntimeError: something broke\n"
                   "hint: rerun with --debug for the traceback, and report it\n")
    code = cli.main(["--debug", "check", "protocols/jy231.crit"])
    assert "Traceback" in capsys.readouterr().err


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--help")[0] == 0
    code, out, _ = run(capsys, "--version")
    assert code == 0 and "crit, version" in out


# ---- build writes only its own files, atomically, never through a link (issue 8, items 7, 15, 18)


def test_build_never_overwrites_a_hand_written_file(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    (project / "out").mkdir()
    notes = project / "out" / "jy231.md"
    notes.write_text("# My own notes on JY231\n", encoding="utf-8")
    code, out, err = run(capsys, "build", "protocols/jy231.crit", "-o", "out")
    assert code == cli.EXIT_USAGE
    assert err == ("crit: out/jy231.md exists and was not generated by crit (it has no `@generated by crit` line); "
                   "crit will not overwrite it: move it away, or build elsewhere with -o\n")
    assert notes.read_text(encoding="utf-8") == "# My own notes on JY231\n"
    assert not (project / "out" / "jy231.py").exists()  # nothing of that protocol is written
    assert out == ""


def test_build_never_writes_through_a_symbolic_link(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    (project / "out").mkdir()
    victim = project / "victim.md"
    victim.write_text("<!-- @generated by crit from elsewhere -->\nnot to be touched\n", encoding="utf-8")
    (project / "out" / "jy231.md").symlink_to(victim)
    code, _, err = run(capsys, "build", "protocols/jy231.crit", "-o", "out")
    assert code == cli.EXIT_USAGE
    assert err.startswith("crit: out/jy231.md is a symbolic link; crit does not write through links\n")
    assert victim.read_text(encoding="utf-8") == "<!-- @generated by crit from elsewhere -->\nnot to be touched\n"
    assert (project / "out" / "jy231.md").is_symlink()


def test_build_replaces_its_own_files_whole(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    """A reader that opened a generated file before a rebuild reads the old file in full: the
    new one is renamed into place, never written over the old one."""
    assert run(capsys, "build", "protocols/jy231.crit", "-o", "out")[0] == 0
    target = project / "out" / "jy231.md"
    old = target.read_text(encoding="utf-8") + "\nedited since\n"
    target.write_text(old, encoding="utf-8")
    with target.open(encoding="utf-8") as reader:
        code, out, _ = run(capsys, "build", "protocols/jy231.crit", "-o", "out")
        assert code == 0 and out == "wrote out/jy231.md\n"
        assert reader.read() == old
    assert target.read_text(encoding="utf-8") == old.removesuffix("\nedited since\n")
    assert [p.name for p in (project / "out").iterdir() if p.name.endswith(".part")] == []


def test_build_recognises_renderings_from_before_the_mark(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    assert run(capsys, "build", "protocols/jy231.crit", "-o", "out")[0] == 0
    target = project / "out" / "jy231.md"
    target.write_text(target.read_text(encoding="utf-8").partition("\n")[2], encoding="utf-8")  # no comment
    code, out, _ = run(capsys, "build", "protocols/jy231.crit", "-o", "out")
    assert code == 0 and out == "wrote out/jy231.md\n"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_built_files_honour_the_umask(capsys: pytest.CaptureFixture[str], project: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        assert run(capsys, "build", "protocols/jy231.crit", "-o", "out")[0] == 0
    finally:
        os.umask(previous)
    for path in (project / "out").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_build_creates_a_missing_output_directory(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, out, _ = run(capsys, "build", "protocols/jy231.crit", "-o", "new/nested/dir")
    assert code == 0 and "wrote new/nested/dir/jy231.py" in out
    written = sorted(p.name for p in (project / "new" / "nested" / "dir").iterdir())
    assert written == ["jy231.md", "jy231.py"]


@pytest.mark.parametrize("output", ["a-file", "a-file/below"])
def test_build_into_a_file_is_one_line(capsys: pytest.CaptureFixture[str], project: Path, output: str) -> None:
    (project / "a-file").write_text("data\n", encoding="utf-8")
    code, out, err = run(capsys, "build", "protocols/jy231.crit", "-o", output)
    assert code == cli.EXIT_USAGE
    assert err == "crit: cannot write into a-file: it is a file, not a directory\n"
    assert out == "" and (project / "a-file").read_text(encoding="utf-8") == "data\n"


def test_build_check_reads_any_bytes_as_stale(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    assert run(capsys, "build")[0] == 0
    (project / "generated" / "jy231.md").write_bytes(b"\xff\xfe not UTF-8")
    code, _, err = run(capsys, "build", "--check")
    assert code == cli.EXIT_ERRORS and "stale: generated/jy231.md" in err


# ---- eval reads records exactly and prints them safely (issue 8, items 5, 10, 14, 15) -----------


def sample() -> dict[str, object]:
    record: dict[str, object] = json.loads(SAMPLE.read_text(encoding="utf-8"))
    return record


def test_eval_shows_control_characters_escaped(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    """An id or a field name holding a line break or a terminal escape cannot print as a second
    record, or recolour the terminal: the table shows it escaped, as Python's repr() would."""
    records = [{**sample(), "id": "A\nrecord B: ELIGIBLE"},
               {**sample(), "id": "C", "x\n\x1b[31mrecord D: ELIGIBLE": 1},
               {**sample(), "id": "E\u2028\u202e"}]
    (project / "r.json").write_text(json.dumps(records), encoding="utf-8")
    code, out, _ = run(capsys, "eval", "protocols/jy231.crit", "r.json")
    assert code == cli.EXIT_RECORD
    assert [line for line in out.splitlines() if line.startswith("record")] == [
        "record 'A\\nrecord B: ELIGIBLE': ELIGIBLE", "record C: cannot be read", "record 'E\\u2028\\u202e': ELIGIBLE"]
    assert "  x\\n\\x1b[31mrecord D: ELIGIBLE: unknown field" in out
    assert not any(not c.isprintable() for c in out.replace("\n", ""))
    code, out, _ = run(capsys, "eval", "--json", "protocols/jy231.crit", "r.json")
    assert [r["id"] for r in json.loads(out)] == ["A\nrecord B: ELIGIBLE", "C", "E\u2028\u202e"]


def strict_json(text: str) -> object:
    def refuse(name: str) -> object:
        raise AssertionError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_eval_json_is_strict_and_exact(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    """Numbers in the output (ids) are written with the digits they were read with, as JSON
    numbers: never NaN or Infinity, never rounded through a float. (1e400 is refused when read:
    no number in a record may have an exponent beyond ±40.)"""
    (project / "r.json").write_text('[{"id": 1e39}, {"id": 0.10000000000000000001}, {"id": 7}]', encoding="utf-8")
    code, out, _ = run(capsys, "eval", "--json", "protocols/jy231.crit", "r.json")
    assert code == 0
    assert [r["id"] for r in strict_json(out)] == [float("1e39"), 0.1, 7]  # type: ignore[union-attr]
    assert '"id": 1E+39,' in out and '"id": 0.10000000000000000001,' in out and '"id": 7,' in out
    code, out, _ = run(capsys, "eval", "protocols/jy231.crit", "r.json")
    assert "record 1E+39: NEEDS REVIEW" in out and "record 0.10000000000000000001: NEEDS REVIEW" in out


def test_eval_json_layout_is_unchanged(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, out, _ = run(capsys, "eval", "--json", "protocols/jy231.crit", str(SAMPLE))
    assert code == 0
    assert out == json.dumps(json.loads(out), indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize(("text", "message"), [
    ('{"id": NaN}', "crit: r.json: not valid JSON: NaN is not a number in JSON"),
    ('{"id": -Infinity}', "crit: r.json: not valid JSON: -Infinity is not a number in JSON"),
    ("[" * 5000 + "]" * 5000, "crit: r.json: nested more than 64 levels deep"),
    ('{"id": 1, "age": ' + "9" * 5000 + "}",
     "crit: r.json: a number of 5000 characters is longer than any measurement (40 at most)"),
    ('[{"id": "A"}, {"id": "B", "age": 10, "age": 30}]', "crit: r.json: [1].age: given more than once"),
])
def test_eval_unreadable_records_exit_3(capsys: pytest.CaptureFixture[str], project: Path, text: str,
                                        message: str) -> None:
    (project / "r.json").write_text(text, encoding="utf-8")
    code, out, err = run(capsys, "eval", "protocols/jy231.crit", "r.json")
    assert (code, out, err) == (cli.EXIT_RECORD, "", message + "\n")


def test_eval_accepts_a_byte_order_mark(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    (project / "r.json").write_bytes(b"\xef\xbb\xbf" + SAMPLE.read_bytes())
    code, out, _ = run(capsys, "eval", "protocols/jy231.crit", "r.json")
    assert code == 0 and out.startswith("record P-001: ELIGIBLE\n")


def test_eval_reads_numbers_exactly(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    """59.99999999999999999 g/L is below 60 g/L, whatever a binary float would make of it."""
    (project / "r.json").write_text(json.dumps(sample()).replace(
        '{"value": 10.8, "unit": "g/dL"}', '{"value": 59.99999999999999999, "unit": "g/L"}'), encoding="utf-8")
    code, out, _ = run(capsys, "eval", "protocols/jy231.crit", "r.json")
    assert code == 0 and out.startswith("record P-001: INELIGIBLE\n"), out


def test_counts_agree_with_their_nouns(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    (project / "one.crit").write_text('protocol ONE "One"\n\npatient\n  a: bool\n\ninclusion\n  I1 "A"\n    a\n',
                                      encoding="utf-8")
    code, out, _ = run(capsys, "check", "one.crit")
    assert (code, out) == (0, "one.crit: ok (ONE, 1 criterion, 1 field)\n")
    code, out, _ = run(capsys, "build", "one.crit", "-o", "out")
    code, out, _ = run(capsys, "build", "one.crit", "-o", "out", "--check")
    assert out == "generated files are up to date (1 protocol)\n"


def test_python_dash_m_crit_is_the_crit_command(project: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "crit", "check", "protocols/jy231.crit"], cwd=project,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("protocols/jy231.crit: ok (JY231, ")
    result = subprocess.run([sys.executable, "-m", "crit", "frobnicate"], cwd=project,
                            capture_output=True, text=True, check=False)
    assert result.returncode == cli.EXIT_USAGE and "Traceback" not in result.stderr
    assert "Usage: crit " in result.stderr


def test_eval_shows_any_id_on_one_line(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    records = [{**sample(), "id": {"site": "Lyon\n", "n": 1.50}}, {**sample(), "id": None}, {**sample(), "id": ""}]
    (project / "r.json").write_text(json.dumps(records).replace("1.5", "1.50"), encoding="utf-8")
    code, out, _ = run(capsys, "eval", "protocols/jy231.crit", "r.json")
    assert code == 0
    assert [line for line in out.splitlines() if line.startswith("record")] == [
        'record {"site": "Lyon\\n", "n": 1.50}: ELIGIBLE', "record null: ELIGIBLE", "record '': ELIGIBLE"]


def test_build_refuses_an_output_directory_that_is_a_symlink(capsys: pytest.CaptureFixture[str],
                                                              project: Path) -> None:
    """`build -o o5`, o5 a link to a directory, wrote through it; nothing reached through a link
    is written (crit.files.AtomicFile refuses a directory that is a link)."""
    (project / "real").mkdir()
    (project / "o5").symlink_to(project / "real")
    code, _, err = run(capsys, "build", "protocols/jy231.crit", "-o", "o5")
    assert code == 2
    assert err == "crit: o5 is a symbolic link to a directory; crit does not write through links: " \
                  "give the directory itself\n"
    assert list((project / "real").iterdir()) == []
    code, _, err = run(capsys, "build", "protocols/jy231.crit", "-o", "real")
    assert code == 0
    assert sorted(p.name for p in (project / "real").iterdir()) == ["jy231.md", "jy231.py"]


def test_build_keeps_a_hand_written_file_that_mentions_the_mark_below_its_first_line(
        capsys: pytest.CaptureFixture[str], project: Path) -> None:
    """crit's mark counts only on the first line: a README-like file quoting it on line 2 was
    overwritten by `crit build`."""
    (project / "out").mkdir()
    notes = project / "out" / "jy231.md"
    text = "# My notes\n<!-- @generated by crit from protocols/jy231.crit — quoted, not crit's -->\n"
    notes.write_text(text, encoding="utf-8")
    code, _, err = run(capsys, "build", "protocols/jy231.crit", "-o", "out")
    assert code == cli.EXIT_USAGE and "exists and was not generated by crit" in err and err.count("\n") == 1
    assert notes.read_text(encoding="utf-8") == text
