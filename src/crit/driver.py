"""Read a protocol and the schema files it imports, then parse and check them.

The stages themselves take text and return data; this is the one place that reads `.crit`
files, so that imports resolve relative to the file that names them.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crit import ast, ir
from crit.check.checker import check
from crit.diagnostics import CritError, Diagnostic
from crit.syntax import parse
from crit.text import split_lines


@dataclass
class Loaded:
    """The files read for one protocol, kept so diagnostics can quote their lines."""

    sources: dict[str, str] = field(default_factory=dict)
    bytes_read: int = 0  # by all files of this protocol together, bounded by MAX_SOURCE_BYTES


def display_path(path: Path) -> str:
    """The path as shown in diagnostics and headers: relative to the working directory."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


# A protocol and everything it imports, together: 256 KiB is 17 times JY231 and its schema,
# and the parser reads it in about 2 s at worst. An endless device is never read past it.
MAX_SOURCE_BYTES = 256 << 10


def project_root(protocol: Path) -> Path:
    """Where a protocol's imports may come from: the nearest directory above it that holds
    `pyproject.toml`, else the protocol's own directory. Nothing outside it is ever read."""
    start = protocol.resolve().parent
    for directory in (start, *start.parents):
        if (directory / "pyproject.toml").is_file():
            return directory
    return start


def _refuse(shown: str, span: ast.Span | None, message: str, hint: str) -> CritError:
    where = span or ast.Span(shown, 1, 1, 1, 2)
    return CritError([Diagnostic(code="E101", severity="error", span=where, message=message, hint=hint)])


def _read_bounded(path: Path, shown: str, span: ast.Span | None, limit: int) -> bytes:
    """At most `limit` bytes of a regular file: a device, a pipe or a directory is refused
    before anything is read from it, and a file too large is refused after limit+1 bytes."""
    hint = "check the path; imports are relative to the importing file"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as err:
        raise _refuse(shown, span, f"cannot read {shown}: {err.strerror or err}", hint) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _refuse(shown, span, f"cannot read {shown}: it is not a regular file",
                          "name a .crit file, not a directory, device or pipe")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise _refuse(shown, span, f"cannot read {shown}: {err.strerror or err}", hint) from None
    finally:
        os.close(fd)
    if size > limit:
        most = f"{MAX_SOURCE_BYTES >> 10} KiB"
        message = (f"{shown} is larger than {most}" if limit == MAX_SOURCE_BYTES else
                   f"{shown} takes the protocol and its imports past {most}")
        raise _refuse(shown, span, message,
                      "a protocol and its schemas are far smaller; check that this is the right file")
    return b"".join(chunks)


def read_source(path: Path, shown: str, loaded: Loaded, span: ast.Span | None = None) -> str:
    """The text of a `.crit` file, bounded in size; undecodable bytes are a diagnostic."""
    data = _read_bounded(path, shown, span, MAX_SOURCE_BYTES - loaded.bytes_read)
    loaded.bytes_read += len(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        lines = split_lines(data[: err.start].decode("utf-8", "replace"))  # as diagnostics count
        line, column = len(lines), len(lines[-1]) + 1
        loaded.sources[shown] = data.decode("utf-8", "replace")  # so the line can be quoted
        raise CritError([Diagnostic(
            code="E000", severity="error", span=ast.Span(shown, line, column, line, column + 1),
            message=f"{shown} is not valid UTF-8 (byte {err.object[err.start]:#04x})",
            hint="save the file as UTF-8",
        )]) from None
    text = text.removeprefix("\ufeff")
    loaded.sources[shown] = text
    return text


def given_source(text: str, shown: str, loaded: Loaded) -> str:
    """A protocol's text handed over rather than read (an editor's unsaved buffer), held to the
    same bound as a file and kept, like a file's text, so diagnostics can quote it."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SOURCE_BYTES - loaded.bytes_read:
        raise _refuse(shown, None, f"{shown} is larger than {MAX_SOURCE_BYTES >> 10} KiB",
                      "a protocol and its schemas are far smaller; check that this is the right file")
    loaded.bytes_read += size
    text = text.removeprefix("\ufeff")
    loaded.sources[shown] = text
    return text


def load(path: Path, loaded: Loaded | None = None, text: str | None = None) -> ir.Protocol:
    """Parse and check the protocol at `path`. Raises `CritError` with every diagnostic.

    `text`, when given, is the protocol's own text, used instead of the file at `path` (the
    language server passes the editor's buffer, saved or not); its imports are still read
    from disk, relative to `path`."""
    loaded = loaded if loaded is not None else Loaded()
    shown = display_path(path)
    text = read_source(path, shown, loaded) if text is None else given_source(text, shown, loaded)
    module = parse(text, shown)
    imported: list[ast.Module] = []
    digest = hashlib.sha256()
    digest.update(text.encode("utf-8"))
    root = project_root(path)
    _imports(path, module, imported, loaded, digest, {path.resolve()}, root)
    return check(module, imported, digest.hexdigest())


def _import_target(path: Path, imp: ast.Import, root: Path) -> Path:
    """The file an import names, if crit may read it: a `.crit` file inside the project root.
    Refusals never read the file, so they cannot quote a foreign file's content."""
    hint = ("imports stay inside the protocol's project: the nearest directory above it that "
            "holds pyproject.toml, or else the protocol's own directory")
    if "\0" in imp.path:
        raise _refuse(imp.path, imp.span, "an import names no file", hint)
    target = path.parent / imp.path
    resolved = target.resolve()
    if not resolved.is_relative_to(root):
        raise _refuse(imp.path, imp.span, f"cannot import {imp.path}: it is outside the project", hint)
    if resolved.suffix != ".crit":
        raise _refuse(imp.path, imp.span, f"cannot import {imp.path}: only .crit schema files can "
                      "be imported", "name a .crit file that declares the schema")
    return target


def _imports(path: Path, module: ast.Module, out: list[ast.Module], loaded: Loaded,
             digest: Any, seen: set[Path], root: Path) -> None:
    for imp in module.imports:
        target = _import_target(path, imp, root)
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
        _imports(target, child, out, loaded, digest, seen, root)
        out.append(child)
