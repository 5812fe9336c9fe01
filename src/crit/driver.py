"""Read a protocol and the schema files it imports, then parse and check them.

The stages themselves take text and return data; this is the one place that reads `.crit`
files, so that imports resolve relative to the file that names them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crit import ast, ir
from crit.check import check
from crit.diagnostics import CritError, Diagnostic
from crit.syntax import parse


@dataclass
class Loaded:
    """The files read for one protocol, kept so diagnostics can quote their lines."""

    sources: dict[str, str] = field(default_factory=dict)


def display_path(path: Path) -> str:
    """The path as shown in diagnostics and headers: relative to the working directory."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def read_source(path: Path, shown: str, loaded: Loaded, span: ast.Span | None = None) -> str:
    try:
        data = path.read_bytes()
    except OSError as err:
        where = span or ast.Span(shown, 1, 1, 1, 2)
        raise CritError([Diagnostic(
            code="E101", severity="error", span=where,
            message=f"cannot read {shown}: {err.strerror or err}",
            hint="check the path; imports are relative to the importing file",
        )]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        line = data[: err.start].count(b"\n") + 1
        column = len(data[line_start : err.start].decode("utf-8", "replace")) + 1
        loaded.sources[shown] = data.decode("utf-8", "replace")  # so the line can be quoted
        raise CritError([Diagnostic(
            code="E000", severity="error", span=ast.Span(shown, line, column, line, column + 1),
            message=f"{shown} is not valid UTF-8 (byte {err.object[err.start]:#04x})",
            hint="save the file as UTF-8",
        )]) from None
    text = text.removeprefix("\ufeff")
    loaded.sources[shown] = text
    return text


def load(path: Path, loaded: Loaded | None = None) -> ir.Protocol:
    """Parse and check the protocol at `path`. Raises `CritError` with every diagnostic."""
    loaded = loaded if loaded is not None else Loaded()
    shown = display_path(path)
    text = read_source(path, shown, loaded)
    module = parse(text, shown)
    imported: list[ast.Module] = []
    digest = hashlib.sha256()
    digest.update(text.encode("utf-8"))
    _imports(path, module, imported, loaded, digest, {path.resolve()})
    return check(module, imported, digest.hexdigest())


def _imports(path: Path, module: ast.Module, out: list[ast.Module], loaded: Loaded,
             digest: Any, seen: set[Path]) -> None:
    for imp in module.imports:
        target = (path.parent / imp.path)
        resolved = target.resolve()
        if resolved in seen:
            raise CritError([Diagnostic(
                code="E101", severity="error", span=imp.span,
                message=f"{imp.path} is imported more than once, or imports itself",
                hint="import each schema file once",
            )])
        seen.add(resolved)
        shown = display_path(target)
        text = read_source(target, shown, loaded, imp.span)
        child = parse(text, shown)
        if child.header is not None or child.inclusion or child.exclusion:
            raise CritError([Diagnostic(
                code="E101", severity="error", span=imp.span,
                message=f"{imp.path} is a protocol, not a schema",
                hint="import files that declare only enums, records, patient fields and definitions",
            )])
        digest.update(b"\0" + imp.path.encode("utf-8") + b"\0" + text.encode("utf-8"))
        _imports(target, child, out, loaded, digest, seen)
        out.append(child)
