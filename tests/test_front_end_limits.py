"""The front end's limits, each chosen so that what it accepts every later stage can handle:
imports confined to the project and bounded in size, nesting every backend can evaluate,
units with powers, names that mean the same thing on every Python."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from conftest import compile_text, import_module
from crit import cli
from crit.ast import Span
from crit.backends.python import PYTHON_RESERVED, emit_python, py_name
from crit.check.names import RESERVED_WORDS, did_you_mean, lookalike
from crit.check.units import factor, parse_unit
from crit.diagnostics import CritError, Diagnostic
from crit.driver import MAX_SOURCE_BYTES, Loaded, load, project_root
from crit.syntax import keywords
from crit.syntax.parse import MAX_NESTING

HEADER = 'protocol D "Deep"\n\nrecord T "Item"\n  v: bool\n\npatient\n  a: bool\n  b: bool\n  t: list of T\n\n'


def _diagnostics(path: Path) -> list[str]:
    loaded = Loaded()
    with pytest.raises(CritError) as info:
        load(path, loaded)
    return [f"{d.code} {d.message}" for d in info.value.diagnostics]


def _project(tmp_path: Path, schema: bytes | None = None) -> Path:
    """tmp/project/pyproject.toml, tmp/project/protocols/p.crit importing schemas/s.crit."""
    project = tmp_path / "project"
    (project / "protocols" / "schemas").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n", encoding="utf-8")
    if schema is not None:
        (project / "protocols" / "schemas" / "s.crit").write_bytes(schema)
    return project


def _protocol(project: Path, target: str) -> Path:
    path = project / "protocols" / "p.crit"
    path.write_text(f'protocol P "p"\n\nimport "{target}"\n\ninclusion\n  I1 "a"\n    a\n',
                    encoding="utf-8")
    return path


# ---- imports -------------------------------------------------------------------------------------


def test_project_root_is_the_nearest_directory_with_pyproject(tmp_path: Path) -> None:
    project = _project(tmp_path)
    assert project_root(project / "protocols" / "p.crit") == project.resolve()
    lone = tmp_path / "lone"
    lone.mkdir()
    if not any((d / "pyproject.toml").is_file() for d in lone.resolve().parents):
        assert project_root(lone / "p.crit") == lone.resolve()


def test_an_import_may_go_up_inside_the_project(tmp_path: Path) -> None:
    project = _project(tmp_path)
    (project / "shared.crit").write_text('patient\n  a: bool "A"\n', encoding="utf-8")
    protocol = load(_protocol(project, "../shared.crit"))
    assert [f.name for f in protocol.fields] == ["a"]


def test_an_import_outside_the_project_is_refused_unread(tmp_path: Path) -> None:
    project = _project(tmp_path)
    secret = tmp_path / "secret.crit"
    secret.write_text("patient\n  SECRET_CONTENT: bool\n", encoding="utf-8")
    path = _protocol(project, "../../secret.crit")
    loaded = Loaded()
    with pytest.raises(CritError) as info:
        load(path, loaded)
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.code == "E101" and "outside the project" in diagnostic.message
    assert diagnostic.span.file.endswith("p.crit") and diagnostic.span.line == 3
    assert all("SECRET" not in text for text in loaded.sources.values())


def test_a_symlink_out_of_the_project_is_refused(tmp_path: Path) -> None:
    project = _project(tmp_path)
    (project / "protocols" / "schemas" / "zero.crit").symlink_to("/dev/zero")
    path = _protocol(project, "schemas/zero.crit")
    started = time.perf_counter()
    (message,) = _diagnostics(path)
    assert time.perf_counter() - started < 2
    assert message.startswith("E101") and "outside the project" in message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_a_pipe_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    project = _project(tmp_path)
    os.mkfifo(project / "protocols" / "schemas" / "pipe.crit")
    started = time.perf_counter()
    (message,) = _diagnostics(_protocol(project, "schemas/pipe.crit"))
    assert time.perf_counter() - started < 2
    assert message == "E101 cannot read protocols/schemas/pipe.crit: it is not a regular file" or (
        message.startswith("E101") and message.endswith("it is not a regular file"))


def test_an_oversized_import_is_refused(tmp_path: Path) -> None:
    schema = b'patient\n  a: bool "A"\n' + b"# padding\n" * (MAX_SOURCE_BYTES // 10 + 1)
    project = _project(tmp_path, schema)
    (message,) = _diagnostics(_protocol(project, "schemas/s.crit"))
    assert message.startswith("E101") and message.endswith("past 256 KiB")


def test_a_protocol_and_schema_just_under_the_limit_are_read(tmp_path: Path) -> None:
    project = _project(tmp_path)
    protocol = _protocol(project, "schemas/s.crit")
    head = b'patient\n  a: bool "A"\n'
    room = MAX_SOURCE_BYTES - protocol.stat().st_size
    schema = project / "protocols" / "schemas" / "s.crit"
    schema.write_bytes(head + b"#" * (room - len(head) - 1) + b"\n")
    assert load(protocol).fields[0].name == "a"
    schema.write_bytes(head + b"#" * (room - len(head)) + b"\n")
    (message,) = _diagnostics(protocol)
    assert message.startswith("E101") and message.endswith("past 256 KiB")


def test_cli_refuses_a_device_and_an_oversized_protocol(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.perf_counter()
    assert cli.main(["check", "/dev/zero"]) == cli.EXIT_ERRORS
    assert time.perf_counter() - started < 2
    err = capsys.readouterr().err
    assert "error[E101]: cannot read /dev/zero: it is not a regular file" in err
    big = tmp_path / "big.crit"
    big.write_bytes(b"#" * (MAX_SOURCE_BYTES + 1))
    assert cli.main(["check", str(big)]) == cli.EXIT_ERRORS
    err = capsys.readouterr().err
    assert "is larger than 256 KiB" in err and "Traceback" not in err


# ---- nesting -------------------------------------------------------------------------------------


def _alternating(levels: int) -> str:
    """`levels` nested and/or nodes around a leaf: levels + 1 levels in all."""
    expr = "a"
    for i in range(levels):
        expr = f"(b {'and' if i % 2 else 'or'} {expr})"
    return expr


def _quantified(levels: int) -> str:
    inner = "v"
    for _ in range(levels - 2):
        inner = f"(v and {inner})"
    return f"any(t where {inner})"


DEEPEST = {
    "and-or": _alternating(MAX_NESTING - 1),
    "not": "not " * (MAX_NESTING - 1) + "a",
    "quantifier": _quantified(MAX_NESTING),
    "when": "".join(f"{'  ' * (d + 2)}when a:\n" for d in range(MAX_NESTING - 1))[4:]
            + "  " * (MAX_NESTING + 1) + "b",
}


@pytest.mark.parametrize("shape", sorted(DEEPEST))
def test_the_deepest_allowed_expression_compiles_and_imports(shape: str, tmp_path: Path) -> None:
    source = HEADER + f'inclusion\n  I1 "deep"\n    {DEEPEST[shape]}\n'
    protocol = compile_text(source)
    path = tmp_path / f"deep_{shape.replace('-', '_')}.py"
    path.write_text(emit_python(protocol, source), encoding="utf-8")
    module = import_module(path)
    result = module.evaluate({"a": True, "b": True, "t": [{"v": True}]})
    assert str(result.decision) in ("eligible", "ineligible", "needs review")


@pytest.mark.parametrize("shape", ["and-or", "not", "quantifier", "when"])
def test_one_level_deeper_is_a_diagnostic(shape: str) -> None:
    deeper = {
        "and-or": _alternating(MAX_NESTING),
        "not": "not " * MAX_NESTING + "a",
        "quantifier": _quantified(MAX_NESTING + 1),
        "when": "when a:\n      " + DEEPEST["when"].replace("\n  ", "\n    "),
    }[shape]
    source = HEADER + f'inclusion\n  I1 "deep"\n    {deeper}\n'
    with pytest.raises(CritError) as info:
        compile_text(source)
    assert [d.code for d in info.value.diagnostics] == ["E008"]


def test_sub_criteria_nest_at_most_the_limit() -> None:
    def criteria(depth: int) -> str:
        return "".join(f"{'  ' * (d + 1)}I1{'.1' * d} \"x\"\n" for d in range(depth)) + "  " * (depth + 1) + "a\n"

    compile_text(HEADER + "inclusion\n" + criteria(MAX_NESTING))
    with pytest.raises(CritError) as info:
        compile_text(HEADER + "inclusion\n" + criteria(MAX_NESTING + 1))
    assert [d.code for d in info.value.diagnostics] == ["E008"]


def test_very_deep_input_is_refused_quickly_without_recursion() -> None:
    for body in ("not " * 50_000 + "a", _alternating(5_000), "(" * 50_000 + "a" + ")" * 50_000):
        started = time.process_time()  # CPU time: other work on the machine stretches the wall clock
        try:
            compile_text(HEADER + f'inclusion\n  I1 "deep"\n    {body}\n')
        except CritError as err:
            assert {d.code for d in err.diagnostics} <= {"E008"}
        assert time.process_time() - started < 10  # linear in the input; no recursion


# ---- numbers and units ---------------------------------------------------------------------------


@pytest.mark.parametrize("literal", ["1" * 4301, "1." + "0" * 5000, "1:" + "8" * 5000])
def test_an_overlong_number_is_a_positioned_diagnostic(literal: str) -> None:
    kind = "titer" if ":" in literal else "decimal"
    source = (f'protocol N "n"\n\npatient\n  level: {kind} "Level"\n\n'
              f'inclusion\n  I1 "a"\n    level >= {literal}\n')
    with pytest.raises(CritError) as info:
        compile_text(source)
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.code == "E009" and (diagnostic.span.line, diagnostic.span.column) == (8, 14)


@pytest.mark.parametrize("unit", ["10^99999999/L", "10^31/L", "m^10", "m^0",
                                  "g*g*g*g*g*g*g*g*g", "1" + "0" * 40 + "/L"])
def test_unit_arithmetic_is_bounded(unit: str) -> None:
    source = (f'protocol U "u"\n\npatient\n  level: quantity {unit} "Level"\n\n'
              f'inclusion\n  I1 "a"\n    level >= 1 {unit}\n')
    started = time.process_time()  # CPU time: other work on the machine stretches the wall clock
    with pytest.raises(CritError) as info:
        compile_text(source)
    assert time.process_time() - started < 2
    assert {d.code for d in info.value.diagnostics} == {"E104"}


def test_powers_of_units_are_exact() -> None:
    caret, superscript, digit = parse_unit("kg/m^2"), parse_unit("kg/m²"), parse_unit("kg/m2")
    assert caret.dimension == superscript.dimension == digit.dimension == "mass/length^2"
    assert factor(caret, superscript) == factor(superscript, digit) == 1
    assert str(factor(parse_unit("g/cm^2"), caret)) == "10"  # 1 g/cm² is 10 kg/m²
    assert str(factor(parse_unit("m³"), parse_unit("L"))) == "1000"
    assert parse_unit("10^9/L").scale == 10**9


@pytest.mark.parametrize("unit", ["kg/m^2", "kg/m²"])
def test_body_mass_index_in_a_quantity_field(unit: str, tmp_path: Path) -> None:
    source = (f'protocol B "BMI"\n\npatient\n  bmi: quantity {unit} "Body-mass index"\n\n'
              'inclusion\n  I1 "BMI 18.5 to 30"\n    bmi between 18.5 kg/m^2 and 30 kg/m²\n')
    protocol = compile_text(source)
    path = tmp_path / f"bmi_{len(unit)}.py"
    path.write_text(emit_python(protocol, source), encoding="utf-8")
    module = import_module(path)
    assert str(module.evaluate({"bmi": 25}).decision) == "eligible"
    assert str(module.evaluate({"bmi": {"value": 31, "unit": unit}}).decision) == "ineligible"
    assert str(module.evaluate({"bmi": {"value": 18, "unit": unit}}).decision) == "ineligible"


# ---- names ---------------------------------------------------------------------------------------


def test_keywords_come_from_the_grammar() -> None:
    assert {"when", "and", "not", "count", "ULN", "requires", "within"} <= keywords()
    assert "age" not in keywords() and keywords() >= RESERVED_WORDS


def _uses(word: str) -> list[str]:
    return [word, f"a and {word}", f"{word} or a", f"not {word}", f"when {word}: a", f"({word})",
            f"any of ({word}, a)", f"at least 1 of ({word}, a)", f"d is {word} or a"]


@pytest.mark.parametrize("word", sorted(keywords()))
def test_a_name_is_refused_exactly_when_a_criterion_could_not_use_it(word: str) -> None:
    def source(use: str) -> str:
        return (f'protocol X "t"\n\nenum D\n  b\n  {word}\n\npatient\n  a: bool\n  d: D\n'
                f'  {word}: bool "x"\n\ninclusion\n  I1 "a"\n    {use}\n')

    if word in RESERVED_WORDS:
        with pytest.raises(CritError) as info:
            compile_text(source("a"))
        assert {d.code for d in info.value.diagnostics} == {"E105"}
    else:
        for use in _uses(word):
            if word in ("note", "when") and use.startswith(word):
                continue  # at the start of a line these begin a note or a `when`
            compile_text(source(use))


def test_py_name_is_a_fixed_injective_mapping() -> None:
    assert py_name("age") == "age"
    assert py_name("class") == "class_" and py_name("class_") == "class__"
    assert py_name("type") == "type_" and py_name("match") == "match_" and py_name("case") == "case_"
    assert py_name("True") == "True_" and py_name("print") == "print"
    names = ["class", "class_", "class__", "type", "type_", "x", "x_", "None", "None_", "def_"]
    assert len({py_name(n) for n in names}) == len(names)
    import keyword

    # Every keyword of the running Python is covered; the list does not depend on it.
    assert set(keyword.kwlist) | set(keyword.softkwlist) <= PYTHON_RESERVED
    with pytest.raises(ValueError):
        py_name("not a name")


def test_fields_named_like_python_keywords_compile(tmp_path: Path) -> None:
    names = ["class", "class_", "type", "match", "case", "None_", "print", "list_", "await"]
    fields = "".join(f'  {n}: integer "{n}"\n' for n in names)
    lines = "".join(f"    {n} >= 1\n" for n in names)
    source = f'protocol K "k"\n\npatient\n{fields}\ninclusion\n  I1 "all"\n{lines}'
    code = emit_python(compile_text(source), source)
    path = tmp_path / "keywords.py"
    path.write_text(code, encoding="utf-8")
    module = import_module(path)
    record = dict.fromkeys(names, 1)
    assert str(module.evaluate(record).decision) == "eligible"
    assert str(module.evaluate({**record, "type": 0}).decision) == "ineligible"
    for name in names:  # the generated attribute is the one fixed spelling, on every Python
        assert f"    {py_name(name)}: " in code


def test_lookalikes_are_named_by_code_point() -> None:
    assert lookalike("а") == "a" and lookalike("Ｉ") == "I" and lookalike("a") is None
    hint = did_you_mean("aIb", ["alb", "crp"])
    assert hint is not None and "U+0049 LATIN CAPITAL LETTER I" in hint and "'alb'" in hint
    assert did_you_mean("agee", ["age"]) == "did you mean 'age'?"


def test_error_counts_agree_with_their_noun() -> None:
    one = Diagnostic(code="E100", severity="error", span=Span("t.crit", 1, 1, 1, 2), message="m")
    assert str(CritError([])) == "0 errors"
    assert str(CritError([one])) == "1 error"
    assert str(CritError([one, one])) == "2 errors"


def test_requires_at_least_counts_one_part_in_the_singular() -> None:
    source = ('protocol P "p"\n\npatient\n  a: bool "A"\n\ninclusion\n'
              '  I1 "x" requires at least 2\n    a\n')
    with pytest.raises(CritError) as info:
        compile_text(source)
    assert info.value.diagnostics[0].message == "criterion I1 requires at least 2 of 1 part"



