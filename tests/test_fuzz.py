"""Hostile sources: mutated JY231, random bytes, deep nesting, long lines, bad indentation,
non-UTF-8. The compiler must answer with crit diagnostics that point into the file, quickly
(within SECONDS of CPU time), and never with another exception."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crit.check.names import _LOOKALIKES
from crit.diagnostics import CritError, render_all
from crit.driver import Loaded, load
from crit.text import split_lines

ROOT = Path(__file__).resolve().parents[1]
JY231 = (ROOT / "protocols" / "jy231.crit").read_text(encoding="utf-8")
TOKENS = re.findall(r"\s+|\w+|[^\w\s]", JY231)
SECONDS = 2.0


SECRET = "NEVER-QUOTE-THIS"


def compile_bytes(tmp: Path, data: bytes) -> list[str]:
    """Compile `data` as tmp/project/x.crit beside the real schema; only CritError may escape,
    within SECONDS, and every diagnostic points at a line and column of a file crit read.
    A file outside the project holds SECRET, which no diagnostic may ever quote."""
    project = tmp / "project"
    (project / "schemas").mkdir(parents=True, exist_ok=True)
    (tmp / "secret.crit").write_text(f'patient\n  {SECRET}: bool "{SECRET}"\n', encoding="utf-8")
    path = project / "x.crit"
    schema = ROOT / "protocols" / "schemas" / "autoimmune.crit"
    (project / "schemas" / "autoimmune.crit").write_bytes(schema.read_bytes())
    path.write_bytes(data)
    loaded = Loaded()
    started = time.process_time()  # CPU time: other work on the machine stretches the wall clock
    codes: list[str] = []
    try:
        load(path, loaded)
    except CritError as err:
        assert err.diagnostics
        for diagnostic in err.diagnostics:
            codes.append(diagnostic.code)
            source = loaded.sources.get(diagnostic.span.file)
            lines = split_lines(source) if source is not None else [""]
            assert 1 <= diagnostic.span.line <= len(lines), diagnostic
            assert 1 <= diagnostic.span.column <= len(lines[diagnostic.span.line - 1]) + 1, diagnostic
            assert diagnostic.message
        assert SECRET not in render_all(err.diagnostics, loaded.sources)
    assert time.process_time() - started < SECONDS
    return codes


FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["delete", "swap", "duplicate"]),
                          st.integers(0, len(TOKENS) - 1), st.integers(0, len(TOKENS) - 1)),
                min_size=1, max_size=4))
def test_mutated_jy231(tmp_path: Path, edits: list[tuple[str, int, int]]) -> None:
    tokens = list(TOKENS)
    for kind, i, j in edits:
        i, j = i % len(tokens), j % len(tokens)
        if kind == "delete":
            del tokens[i]
        elif kind == "swap":
            tokens[i], tokens[j] = tokens[j], tokens[i]
        else:
            tokens.insert(i, tokens[j])
    compile_bytes(tmp_path, "".join(tokens).encode("utf-8"))


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(tmp_path: Path, data: bytes) -> None:
    compile_bytes(tmp_path, data)


@FUZZ
@given(st.lists(st.sampled_from([*' \t\n"():#.,<>=?x1aIE', "protocol", "inclusion", "patient", "  ",
                                  "when", "and", "\u2028", "I1", "between", "1:80", "g/L"]), max_size=120))
def test_random_near_crit_text(tmp_path: Path, pieces: list[str]) -> None:
    compile_bytes(tmp_path, "".join(pieces).encode("utf-8"))


HEADER = 'protocol D "Deep"\n\npatient\n  a: bool\n  n: integer\n\ninclusion\n'


@pytest.mark.parametrize(
    "body",
    [
        "  I1 \"deep\"\n    " + "(" * 300 + "a" + ")" * 300 + "\n",
        "  I1 \"deep\"\n    " + "not " * 300 + "a\n",
        "  I1 \"long\"\n    " + " and ".join(["n >= 1"] * 3000) + "\n",
        "".join(f"{'  ' * (d + 1)}I1{'.1' * d} \"x\"\n" for d in range(60)) + "  " * 61 + "a\n",
        "  I1 \"title\" " + "x" * 100_000 + "\n    a\n",
        "  I1 \"x\"\n      a\n    a\n",
        "  I1 \"x\"\n\ta\n",
    ],
    ids=["parentheses", "nots", "long-line", "deep-criteria", "huge-token", "bad-dedent", "tab"],
)
def test_extreme_shapes(tmp_path: Path, body: str) -> None:
    compile_bytes(tmp_path, (HEADER + body).encode("utf-8"))


@pytest.mark.parametrize("data", [b"\xff\xfe\x00p", HEADER.encode() + b"  I1 \"\xe9\"\n    a\n", b"\x00" * 50])
def test_non_utf8_and_nul(tmp_path: Path, data: bytes) -> None:
    compile_bytes(tmp_path, data)


# ---- hostile inputs found under attack (issue 8): each class stays fixed -----------------------

# Characters Python's str.splitlines breaks at and the lexer does not.
SEPARATORS = ["\u0085", "\u000c", "\u001c", "\u001d", "\u001e", "\u2028", "\u2029", "\u000b"]
PATIENT = 'protocol S "Separators"\n\npatient\n  age: integer "Age{sep}at screening"\n  ok: bool\n\n'


@pytest.mark.parametrize("sep", SEPARATORS, ids=[f"U+{ord(c):04X}" for c in SEPARATORS])
def test_label_with_a_line_separator_keeps_later_lines_in_place(tmp_path: Path, sep: str) -> None:
    source = PATIENT.format(sep=sep) + 'inclusion\n  I1 "Adults"\n    agee >= 18\n'
    loaded = Loaded()
    path = tmp_path / "s.crit"
    path.write_text(source, encoding="utf-8", newline="")
    with pytest.raises(CritError) as info:
        load(path, loaded)
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.span.line == 9
    assert "    agee >= 18" in render_all([diagnostic], loaded.sources).split("\n")[2]


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(JY231) - 1), st.sampled_from(sorted(_LOOKALIKES))),
                min_size=1, max_size=3))
def test_homoglyphs_in_jy231(tmp_path: Path, swaps: list[tuple[int, str]]) -> None:
    text = list(JY231)
    for at, char in swaps:
        text[at] = char
    compile_bytes(tmp_path, "".join(text).encode("utf-8"))


@FUZZ
@given(st.sampled_from([*SEPARATORS, "\r", "\r\n", "\t", "\x00", "\u200b", "\ufeff"]),
       st.integers(0, len(JY231) - 1))
def test_separators_anywhere_in_jy231(tmp_path: Path, sep: str, at: int) -> None:
    compile_bytes(tmp_path, (JY231[:at] + sep + JY231[at:]).encode("utf-8"))


NUMBERS = 'protocol N "Numbers"\n\npatient\n  age: integer "Age"\n  ana: titer\n  plt: quantity 10^9/L\n\n'


@pytest.mark.parametrize("line", [
    "age >= " + "9" * 5000,
    "age >= 1." + "0" * 5000,
    "ana >= 1:" + "8" * 5000,
    "plt >= " + "1" * 5000 + " x 10^9/L",
    "plt >= 100 x 10^99999999/L",
    "plt >= 100 x 10^9999/L",
    "plt >= 100 x " + "*".join(["10^30"] * 50) + "/L",
    "plt >= 100 x 10^9/L^99999999",
    "count(x where a) >= " + "7" * 5000,
    "age within " + "4" * 5000 + " weeks before 2025-01-01",
], ids=["integer", "decimal", "titer", "quantity", "unit-power", "unit-power-4", "unit-product",
        "name-power", "count", "window"])
def test_long_literals_and_huge_exponents(tmp_path: Path, line: str) -> None:
    codes = compile_bytes(tmp_path, (NUMBERS + f'inclusion\n  I1 "n"\n    {line}\n').encode())
    assert codes, "refused with a diagnostic"


@pytest.mark.parametrize("depth", [33, 100, 1000, 5_000])
@pytest.mark.parametrize("shape", ["and-or", "not", "when", "quantifier", "criteria"])
def test_deep_nesting(tmp_path: Path, shape: str, depth: int) -> None:
    if shape == "and-or":
        expr = "a"
        for i in range(depth):
            expr = f"(n >= 1 {'and' if i % 2 else 'or'} {expr})"
        body = f'  I1 "deep"\n    {expr}\n'
    elif shape == "not":
        body = '  I1 "deep"\n    ' + "not " * depth + "a\n"
    elif shape == "when":
        depth = min(depth, 400)  # indentation grows with depth; 400 levels are 160 kB
        body = '  I1 "deep"\n' + "".join(f"{'  ' * (d + 2)}when a:\n" for d in range(depth))
        body += "  " * (depth + 2) + "a\n"
    elif shape == "quantifier":
        body = '  I1 "deep"\n    ' + "any(t where " * depth + "v" + ")" * depth + "\n"
    else:
        depth = min(depth, 400)
        body = "".join(f"{'  ' * (d + 1)}I1{'.1' * d} \"x\"\n" for d in range(depth))
        body += "  " * (depth + 1) + "a\n"
    header = 'protocol D "Deep"\n\nrecord T\n  v: bool\n  t: bool\n\npatient\n  a: bool\n  n: integer\n'
    header += "  t: list of T\n\ninclusion\n"
    codes = compile_bytes(tmp_path, (header + body).encode("utf-8"))
    assert "E008" in codes or codes, codes


@pytest.mark.parametrize("target", [
    "../secret.crit", "../../../../../../../../../../etc/passwd", "/etc/passwd", "/dev/zero",
    "/dev/stdin", "schemas/../../secret.crit", "schemas", "x.crit", "schemas/autoimmune.crit\\0",
    "schemas/link.crit", "schemas/zero.crit", "~/.ssh/id_rsa", "",
])
def test_path_traversal_imports(tmp_path: Path, target: str) -> None:
    project = tmp_path / "project" / "schemas"
    project.mkdir(parents=True)
    (project / "link.crit").symlink_to(tmp_path / "secret.crit")
    (project / "zero.crit").symlink_to("/dev/zero")
    source = f'protocol P "p"\n\nimport "{target}"\n\ninclusion\n  I1 "a"\n    a\n'
    codes = compile_bytes(tmp_path, source.encode("utf-8"))
    assert codes and codes[0] in ("E101", "E002"), codes
