"""The benchmarks are not run by the suite (speed is measured, not asserted), but they must keep
working as the code they measure moves: every script imports, and each command-line entry
point answers `--help`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py"))


def test_there_are_benchmarks() -> None:
    assert {p.name for p in SCRIPTS} >= {"run.py", "build_time.py"}


@pytest.mark.parametrize("script", [p for p in SCRIPTS if "__main__" in p.read_text(encoding="utf-8")],
                         ids=lambda p: p.name)
def test_each_benchmark_starts(script: Path) -> None:
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120,
                          cwd=BENCHMARKS.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout.lower()
