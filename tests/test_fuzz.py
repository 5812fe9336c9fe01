"""Hostile sources: mutated JY231, random bytes, deep nesting, long lines, bad indentation,
non-UTF-8. The compiler must answer with crit diagnostics that point into the file, quickly,
and never with another exception."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crit.diagnostics import CritError
from crit.driver import Loaded, load

ROOT = Path(__file__).resolve().parents[1]
JY231 = (ROOT / "protocols" / "jy231.crit").read_text(encoding="utf-8")
TOKENS = re.findall(r"\s+|\w+|[^\w\s]", JY231)
SECONDS = 2.0


def compile_bytes(tmp: Path, data: bytes) -> None:
    """Compile `data` as protocols/…/x.crit beside the real schema; only CritError may escape."""
    path = tmp / "x.crit"
    (tmp / "schemas").mkdir(exist_ok=True)
    schema = ROOT / "protocols" / "schemas" / "autoimmune.crit"
    (tmp / "schemas" / "autoimmune.crit").write_bytes(schema.read_bytes())
    path.write_bytes(data)
    loaded = Loaded()
    started = time.perf_counter()
    try:
        load(path, loaded)
    except CritError as err:
        assert err.diagnostics
        for diagnostic in err.diagnostics:
            source = loaded.sources.get(diagnostic.span.file)
            lines = source.count("\n") + 2 if source is not None else 1
            assert 1 <= diagnostic.span.line <= lines, diagnostic
            assert diagnostic.span.column >= 1, diagnostic
            assert diagnostic.message
    assert time.perf_counter() - started < SECONDS


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
