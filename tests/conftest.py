"""Shared fixtures: compiling protocols from text, and golden files with --update-golden."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from crit import ir
from crit.check import check
from crit.syntax import parse

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite golden files")


def compile_text(source: str, file: str = "test.crit", schema: str | None = None) -> ir.Protocol:
    """Parse and check a protocol given as text (and an optional imported schema text)."""
    imported = [parse(schema, "schema.crit")] if schema is not None else []
    return check(parse(source, file), imported, "0" * 64)


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """Compare text with tests/golden/NAME byte for byte; --update-golden rewrites it."""

    def compare(name: str, text: str) -> None:
        path = GOLDEN / name
        if request.config.getoption("--update-golden") or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="\n")
            if not request.config.getoption("--update-golden"):
                pytest.fail(f"golden file {name} was missing and has been written; review it")
        assert text == path.read_text(encoding="utf-8"), (
            f"{name} differs from its golden file; review the change, then rerun with --update-golden"
        )

    return compare
