"""Diagnostics are data; rendering them for a person is a separate, tested step."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from crit.ast import Span
from crit.english import counted
from crit.text import split_lines


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnostic:
    code: str
    severity: str  # "error" | "warning"
    span: Span
    message: str
    hint: str | None = None

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.span.file, self.span.line, self.span.column, self.code, self.message)


class CritError(Exception):
    """Raised by a stage that cannot go on; carries every diagnostic collected so far."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics, key=Diagnostic.sort_key)
        super().__init__(counted(len(self.diagnostics), "error"))


@dataclass
class Collector:
    """Collects diagnostics so a stage can report every problem, not just the first."""

    items: list[Diagnostic] = field(default_factory=list)

    def error(self, code: str, span: Span, message: str, hint: str | None = None) -> None:
        self.items.append(
            Diagnostic(code=code, severity="error", span=span, message=message, hint=hint)
        )

    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.items)

    def raise_if_errors(self) -> None:
        if self.has_errors():
            raise CritError(self.items)




def render(diagnostic: Diagnostic, sources: Mapping[str, str]) -> str:
    """`file:line:col: error[CODE]: message`, the source line, a caret underline, a hint."""
    span = diagnostic.span
    head = f"{span.file}:{span.line}:{span.column}: {diagnostic.severity}[{diagnostic.code}]: "
    lines = [head + diagnostic.message]
    source = sources.get(span.file)
    source_lines = split_lines(source) if source is not None else []
    if 1 <= span.line <= len(source_lines):
        text = _printable(source_lines[span.line - 1])
        number = str(span.line)
        pad = " " * len(number)
        start = max(span.column - 1, 0)
        if span.end_line == span.line and span.end_column > span.column:
            width = span.end_column - span.column
        else:
            width = max(len(text.rstrip()) - start, 1)
        width = max(1, min(width, max(len(text) - start, 1)))
        lines.append(f"{pad} |")
        lines.append(f"{number} | {text}")
        lines.append(f"{pad} | {' ' * start}{'^' * width}")
        if diagnostic.hint:
            lines.append(f"{pad} = hint: {diagnostic.hint}")
    elif diagnostic.hint:
        lines.append(f"  = hint: {diagnostic.hint}")
    return "\n".join(lines)


def render_all(diagnostics: Iterable[Diagnostic], sources: Mapping[str, str]) -> str:
    return "\n\n".join(render(d, sources) for d in diagnostics)


def _printable(line: str) -> str:
    """Tabs and control characters would misplace the caret or the terminal: show them inert."""
    out = []
    for ch in line:
        if ch == "\t":
            out.append(" ")
        elif not ch.isprintable():
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)
