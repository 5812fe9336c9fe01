"""The second example protocol (examples/t2d, SURPASS-2) stays clean: it checks strictly, it is
laid out as `crit fmt` lays it out, and its vignettes pass `crit test`."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from crit.cli import cli

ROOT = Path(__file__).resolve().parent.parent
T2D = ROOT / "examples" / "t2d"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_t2d_checks_strictly() -> None:
    code, output = run("check", "--strict", str(T2D / "t2d.crit"))
    assert code == 0, output
    assert "SURPASS2" in output


def test_t2d_is_formatted() -> None:
    code, output = run("fmt", "--check", str(T2D / "t2d.crit"))
    assert code == 0, output


def test_t2d_rendering_and_evaluator_are_current() -> None:
    code, output = run("build", str(T2D / "t2d.crit"), "-o", str(T2D), "--sql", "duckdb", "--check")
    assert code == 0, output


def test_t2d_vignettes_pass() -> None:
    code, output = run("test", str(T2D / "t2d.tests.json"))
    assert code == 0, output
    assert "46 passed, 0 failed" in output


def test_t2d_vignettes_cover_every_criterion() -> None:
    protocol = (T2D / "t2d.crit").read_text(encoding="utf-8")
    ids = set(re.findall(r"^  +([IE]\d+(?:\.\d+)*) \"", protocol, re.MULTILINE))
    tests = json.loads((T2D / "t2d.tests.json").read_text(encoding="utf-8"))["tests"]
    seen = {ident: {outcome for test in tests for name, outcome in test.get("outcomes", {}).items()
                    if name == ident} for ident in ids}
    assert len(ids) == 15
    assert [ident for ident, outcomes in seen.items() if not {"met", "not met"} <= outcomes] == []


def test_t2d_listing_names_its_registry_entry() -> None:
    listing = (T2D / "listing.txt").read_text(encoding="utf-8")
    assert "NCT03987919" in listing
    assert "transcription" in listing
