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
        if "import_module" in path.read_text(encoding="utf-8"):
            # a module loaded by name (the command line's `_COMMANDS`, the pipeline's
            # `SQL_BACKEND`) is imported all the same: its name, as a string, counts
            found |= {node.value for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                      if isinstance(node, ast.Constant) and isinstance(node.value, str)
                      and node.value.startswith("crit.")}
        out[name] = {m for m in found if m in modules and m != name and m != "crit"}
    return out


IMPORTS = _imports()

# The stages, bottom up. A module may import from its own layer or any layer below, never above.
LAYERS: list[tuple[str, set[str]]] = [
    ("runtime", {"crit.runtime"}),
    ("shared", {"crit", "crit.text", "crit.templating", "crit.files", "crit.process", "crit.frozen", "crit.ast",
                "crit.config"}),
    # Units and names read only the IR and the shared text helpers: the checker uses them, and so
    # does the FHIR mapping's check (sources), which proves a mapping's units and suggests names.
    ("ir", {"crit.ir", "crit.english", "crit.reasons", "crit.diagnostics",
            "crit.check.units", "crit.check.unit_table", "crit.check.names"}),
    ("sources", {"crit.sources", "crit.sources.records", "crit.sources.cohort", "crit.sources.tables",
                 "crit.sources.fhir_mapping", "crit.sources.fhir"}),
    ("screening engines", {"crit.screening", "crit.screening.report", "crit.screening.python_engine"}),
    ("front end", {"crit.syntax", "crit.syntax.grammar", "crit.syntax.parse", "crit.syntax.__main__",
                   "crit.check", "crit.check.checker", "crit.check.derived", "crit.check.dimensions",
                   "crit.driver"}),
    ("backends", {"crit.backends", "crit.backends.python", "crit.backends.markdown", "crit.backends.sql",
                  "crit.interpret",
                  "crit.logic", "crit.logic.formula", "crit.logic.solver"}),
    ("pipeline", {"crit.pipeline"}),
    ("commands", {"crit.tools", "crit.tools.fmt", "crit.tools.lint", "crit.tools.check", "crit.tools.diff",
                  "crit.tools.protocol_tests", "crit.tools.schema", "crit.screening.screen",
                  "crit.screening.sql_engine",
                  "crit.lsp", "crit.lsp.analysis", "crit.lsp.server"}),
    ("command line", {"crit.cli", "crit.__main__"}),
]


def _layer(module: str) -> int:
    for number, (_, members) in enumerate(LAYERS):
        if module in members:
            return number
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layering.py")


def test_every_module_has_a_layer() -> None:
    for module in IMPORTS:
        _layer(module)


@pytest.mark.parametrize("module", sorted(IMPORTS))
def test_imports_point_down(module: str) -> None:
    upward = sorted(dep for dep in IMPORTS[module] if _layer(dep) > _layer(module))
    assert upward == [], f"{module} ({LAYERS[_layer(module)][0]}) imports from above: {upward}"


def test_the_runtime_imports_nothing_from_crit() -> None:
    """Generated evaluators embed it verbatim: it must stand alone."""
    assert IMPORTS["crit.runtime"] == set()


def test_nothing_imports_the_command_line() -> None:
    assert {m for m, deps in IMPORTS.items() if "crit.cli" in deps} <= {"crit.__main__"}


def test_what_screening_workers_import_needs_no_compiler() -> None:
    """Workers are spawned: they import the engine's module, never the parser or checker."""
    compiler = {m for m in IMPORTS if LAYERS[_layer(m)][0] in ("front end", "backends", "pipeline")}
    assert not (_closure("crit.screening.python_engine") & compiler)


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


@pytest.mark.parametrize("backend", ["crit.backends.python", "crit.backends.markdown", "crit.interpret"])
def test_backends_read_only_the_checked_protocol_and_the_runtime(backend: str) -> None:
    allowed = LAYERS[0][1] | LAYERS[1][1] | LAYERS[2][1] | {"crit.backends"}
    assert _closure(backend) <= allowed, sorted(_closure(backend) - allowed)


def test_no_crit_import_is_hidden_in_a_function() -> None:
    """crit's own imports sit at the top of a module, where a reader (and this test) sees the
    layering. Heavy third-party libraries (pint, rich, jinja2) may be imported where first
    needed, for start-up time; the command line's table of lazily loaded commands (`_COMMANDS`,
    by module name) is how a command's own dependencies stay out of the others' start-up."""
    hidden = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if (isinstance(inner, ast.Import) and any(a.name.startswith("crit") for a in inner.names)) \
                            or (isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("crit")):
                        hidden.append(f"{path.relative_to(SRC)}:{inner.lineno}")
    assert hidden == []
