"""The direction of imports between crit's modules: the command line on top, commands below it,
the compiler's stages below them, the runtime at the bottom; and no cycle anywhere.

Read statically from the source (every `import` and `from … import` of a crit module, at any
depth in a file), so an import hidden in a function counts like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """For each crit module, the crit modules it imports (`from crit import x` names crit.x if
    that is a module)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    out: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("crit")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("crit"):
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules}
        out[name] = {m for m in found if m in modules and m != name and m != "crit"}
    return out


IMPORTS = _imports()


def test_the_runtime_imports_nothing_from_crit() -> None:
    """Generated evaluators embed it verbatim: it must stand alone."""
    assert IMPORTS["crit.runtime"] == set()


def test_nothing_imports_the_command_line() -> None:
    assert {m for m, deps in IMPORTS.items() if "crit.cli" in deps} <= {"crit.__main__"}


@pytest.mark.parametrize("module", ["crit.process", "crit.cohort", "crit.text", "crit.files", "crit.records"])
def test_what_screening_workers_import_needs_no_compiler(module: str) -> None:
    compiler = {"crit.check", "crit.driver", "crit.syntax", "crit.emit.python", "crit.emit.markdown", "crit.lint",
                "crit.logic", "crit.pipeline"}
    assert not (_closure(module) & compiler)


def _closure(module: str) -> set[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        for dep in IMPORTS.get(todo.pop(), set()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_no_import_cycle() -> None:
    cycles = [m for m in IMPORTS if m in _closure(m)]
    assert cycles == []


def test_backends_read_the_checked_protocol_not_the_front_end() -> None:
    for backend in ("crit.emit.python", "crit.emit.markdown"):
        assert not (IMPORTS[backend] & {"crit.syntax", "crit.syntax.parse", "crit.check", "crit.driver"}), backend
