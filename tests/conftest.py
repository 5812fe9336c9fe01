"""Shared fixtures: compiling protocols from text, evaluating records once, and golden files with
--update-golden."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from crit import cli, ir
from crit import runtime as rt
from crit.backends.python import emit_python
from crit.check.checker import check
from crit.interpret import Interpreter
from crit.syntax import parse

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite golden files")


def compile_text(source: str, file: str = "test.crit", schema: str | None = None) -> ir.Protocol:
    """Parse and check a protocol given as text (and an optional imported schema text)."""
    imported = [parse(schema, "schema.crit")] if schema is not None else []
    return check(parse(source, file), imported, "0" * 64)


class Evaluations:
    """The interpreter's result for each record, computed once per record. The completions of
    different random records of one protocol often coincide (3,870 of the 9,352 the differential
    slice enumerates), and evaluating is deterministic: a repeat is looked up, and every caller
    still checks it against its own record."""

    def __init__(self, interpreter: Interpreter) -> None:
        self.interpreter = interpreter
        self._results: dict[str, rt.Screening] = {}

    def __call__(self, record: dict[str, object]) -> rt.Screening:
        key = json.dumps(record)  # exact: key order, 1 and 1.0, true and 1 stay apart
        if key not in self._results:
            self._results[key] = self.interpreter.evaluate(record)
        return self._results[key]


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


_counter = 0


def import_module(path: Path) -> ModuleType:
    """Import a generated evaluator from its file, as users do (never exec'd)."""
    global _counter
    _counter += 1
    name = f"_crit_test_{path.stem}_{_counter}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def evaluator(tmp_path: Path) -> Callable[[str], ModuleType]:
    """Compile protocol text to a module file under tmp_path and import it."""

    def build(source: str) -> ModuleType:
        protocol = compile_text(source)
        path = tmp_path / f"proto_{len(list(tmp_path.iterdir()))}.py"
        path.write_text(emit_python(protocol, source), encoding="utf-8")
        return import_module(path)

    return build


@pytest.fixture(scope="session")
def jy231() -> ModuleType:
    """The committed evaluator for JY231, imported from generated/."""
    return import_module(ROOT / "generated" / "jy231.py")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The command line in this process: its exit code, stdout and stderr (never a traceback)."""
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the protocols in a scratch directory, as the working directory."""
    shutil.copytree(ROOT / "protocols", tmp_path / "protocols", ignore=shutil.ignore_patterns("amendments", "tests"))
    monkeypatch.chdir(tmp_path)
    return tmp_path
