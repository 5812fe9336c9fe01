"""The Language Server Protocol side of `crit lsp` (pygls over stdio): documents in, diagnostics,
hovers, locations, completions, the outline, formatting and quick fixes out.

Positions: crit counts columns in characters; the protocol counts them in the units the client
and server agreed on (UTF-16 code units unless the client offers another), so every position
crossing the boundary goes through the workspace's position codec.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from crit import __version__
from crit.config import ConfigError, load_config
from crit.diagnostics import CritError, Diagnostic
from crit.driver import display_path
from crit.lsp import analysis
from crit.syntax import parse
from crit.text import split_lines
from crit.tools.fmt import FormatError, format_source

# Compiling and linting JY231 takes about a quarter of a second: a pause in typing this long
# starts it, so that each keystroke does not.
_SETTLE_SECONDS = 0.2

_COMPLETION_KINDS = {
    "field": lsp.CompletionItemKind.Field,
    "item field": lsp.CompletionItemKind.Property,
    "member": lsp.CompletionItemKind.EnumMember,
    "unit": lsp.CompletionItemKind.Unit,
    "definition": lsp.CompletionItemKind.Function,
}
_SYMBOL_KINDS = {
    "section": lsp.SymbolKind.Namespace,
    "criterion": lsp.SymbolKind.Object,
    "definition": lsp.SymbolKind.Function,
    "patient": lsp.SymbolKind.Struct,
    "record": lsp.SymbolKind.Struct,
    "field": lsp.SymbolKind.Field,
    "enum": lsp.SymbolKind.Enum,
}


class CritServer(LanguageServer):
    """The server, with what it knows of each open document."""

    def __init__(self) -> None:
        super().__init__("crit", __version__)
        self.indexes: dict[str, analysis.Index] = {}
        self.published: dict[str, set[str]] = {}  # document → the files it published diagnostics for
        self.pending: dict[str, asyncio.Task[None]] = {}
        self.config_errors: set[str] = set()  # shown once each

    # ---- positions ----
    def client_column(self, text: str | None, line: int, column: int) -> int:
        """The protocol's `character` for crit's 1-based character `column` on a 1-based line."""
        lines = split_lines(text or "")
        prefix = lines[line - 1][: column - 1] if 1 <= line <= len(lines) else ""
        return int(self.workspace.position_codec.client_num_units(prefix)) + max(column - 1 - len(prefix), 0)

    def range_of(self, span: analysis.Span, text: str | None) -> lsp.Range:
        start = lsp.Position(max(span.line - 1, 0), self.client_column(text, span.line, span.column))
        end = lsp.Position(max(span.end_line - 1, 0), self.client_column(text, span.end_line, span.end_column))
        return lsp.Range(start, end)

    def position_in(self, uri: str, position: lsp.Position) -> tuple[int, int]:
        """crit's 1-based line and character column for a position in an open document."""
        document = self.workspace.get_text_document(uri)
        server = document.position_codec.position_from_client_units(document.lines, position)
        return server.line + 1, server.character + 1

    def location(self, index: analysis.Index, span: analysis.Span) -> lsp.Location:
        path = Path(span.file)
        uri = from_fs_path(str(path if path.is_absolute() else Path.cwd() / path)) or ""
        return lsp.Location(uri, self.range_of(span, index.sources.get(span.file)))

    # ---- diagnostics ----
    def validate(self, uri: str) -> None:
        document = self.workspace.get_text_document(uri)
        path = Path(to_fs_path(uri) or document.path)
        compiled = analysis.compile_text(path, document.source, self.strict(path))
        index = analysis.build_index(compiled, self.indexes.get(uri))
        if index is not None:
            self.indexes[uri] = index
        by_file: dict[str, list[lsp.Diagnostic]] = {}
        for diagnostic in compiled.diagnostics:
            text = compiled.sources.get(diagnostic.span.file)
            by_file.setdefault(diagnostic.span.file, []).append(self.diagnostic(diagnostic, text))
        files = {compiled.shown, *by_file}
        for stale in self.published.get(uri, set()) - files:
            self.publish(self.file_uri(stale), [])
        self.published[uri] = files
        for shown in sorted(files):
            target = uri if shown == compiled.shown else self.file_uri(shown)
            self.publish(target, by_file.get(shown, []))

    def strict(self, path: Path) -> bool:
        """`strict` from the document's project's [tool.crit], as `crit check` reads it there; a
        table crit cannot use is shown to the user once, and the defaults used meanwhile."""
        try:
            return load_config(path.parent).strict
        except ConfigError as err:
            if str(err) not in self.config_errors:
                self.config_errors.add(str(err))
                self.window_show_message(lsp.ShowMessageParams(type=lsp.MessageType.Warning, message=f"crit: {err}"))
            return False

    def file_uri(self, shown: str) -> str:
        path = Path(shown)
        return from_fs_path(str(path if path.is_absolute() else Path.cwd() / path)) or shown

    def publish(self, uri: str, diagnostics: list[lsp.Diagnostic]) -> None:
        self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=uri, diagnostics=diagnostics))

    def diagnostic(self, diagnostic: Diagnostic, text: str | None) -> lsp.Diagnostic:
        severity = lsp.DiagnosticSeverity.Error if diagnostic.severity == "error" else lsp.DiagnosticSeverity.Warning
        message = diagnostic.message + (f"\nhint: {diagnostic.hint}" if diagnostic.hint else "")
        return lsp.Diagnostic(range=self.range_of(diagnostic.span, text), message=message, severity=severity,
                              code=diagnostic.code, source="crit",
                              data={"hint": diagnostic.hint, "message": diagnostic.message})

    async def validate_soon(self, uri: str) -> None:
        await asyncio.sleep(_SETTLE_SECONDS)
        self.validate(uri)


server = CritServer()


@server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: CritServer, params: lsp.DidOpenTextDocumentParams) -> None:
    ls.validate(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: CritServer, params: lsp.DidSaveTextDocumentParams) -> None:
    ls.validate(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: CritServer, params: lsp.DidChangeTextDocumentParams) -> None:
    uri = params.text_document.uri
    waiting = ls.pending.pop(uri, None)
    if waiting is not None:
        waiting.cancel()
    ls.pending[uri] = asyncio.ensure_future(ls.validate_soon(uri))


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: CritServer, params: lsp.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    waiting = ls.pending.pop(uri, None)
    if waiting is not None:
        waiting.cancel()
    for shown in ls.published.pop(uri, set()):
        ls.publish(ls.file_uri(shown), [])
    ls.publish(uri, [])
    ls.indexes.pop(uri, None)


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
def hover(ls: CritServer, params: lsp.HoverParams) -> lsp.Hover | None:
    index = ls.indexes.get(params.text_document.uri)
    if index is None:
        return None
    line, column = ls.position_in(params.text_document.uri, params.position)
    text = analysis.hover(index, line, column)
    if text is None:
        return None
    return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=text))


@server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
def definition(ls: CritServer, params: lsp.DefinitionParams) -> lsp.Location | None:
    index = ls.indexes.get(params.text_document.uri)
    if index is None:
        return None
    line, column = ls.position_in(params.text_document.uri, params.position)
    declared = analysis.definition(index, analysis.at(index, line, column))
    return ls.location(index, declared.span) if declared is not None else None


@server.feature(lsp.TEXT_DOCUMENT_COMPLETION,
                lsp.CompletionOptions(trigger_characters=[" ", "(", ","]))
def completion(ls: CritServer, params: lsp.CompletionParams) -> lsp.CompletionList | None:
    uri = params.text_document.uri
    index = ls.indexes.get(uri)
    if index is None:
        return None
    line, column = ls.position_in(uri, params.position)
    text = ls.workspace.get_text_document(uri).source
    items = [lsp.CompletionItem(label=c.label, kind=_COMPLETION_KINDS[c.kind], detail=c.detail)
             for c in analysis.completions(index, text, line, column)]
    return lsp.CompletionList(is_incomplete=False, items=items)


@server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
def document_symbols(ls: CritServer, params: lsp.DocumentSymbolParams) -> list[lsp.DocumentSymbol]:
    uri = params.text_document.uri
    text = ls.workspace.get_text_document(uri).source
    try:
        text = text.removeprefix("\ufeff")
        module = parse(text, display_path(Path(to_fs_path(uri) or "")))
    except CritError:  # mid-edit: the outline of the last text that parsed
        index = ls.indexes.get(uri)
        if index is None:
            return []
        text = index.sources[index.shown]
        module = parse(text, index.shown)
    return [symbol(ls, s, text) for s in analysis.outline(module, {module.file: text})]


def symbol(ls: CritServer, s: analysis.Symbol, text: str) -> lsp.DocumentSymbol:
    return lsp.DocumentSymbol(name=s.name, detail=s.detail, kind=_SYMBOL_KINDS[s.kind],
                              range=ls.range_of(s.span, text), selection_range=ls.range_of(s.selection, text),
                              children=[symbol(ls, c, text) for c in s.children])


@server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
def formatting(ls: CritServer, params: lsp.DocumentFormattingParams) -> list[lsp.TextEdit] | None:
    """The whole document laid out as `crit fmt` lays it out; nothing if it does not parse."""
    document = ls.workspace.get_text_document(params.text_document.uri)
    try:
        formatted = format_source(document.source, display_path(Path(document.path)))
    except (CritError, FormatError):
        return None
    if formatted == document.source:
        return []
    lines = document.lines
    end = lsp.Position(len(lines), 0)
    return [lsp.TextEdit(range=lsp.Range(lsp.Position(0, 0), end), new_text=formatted)]


@server.feature(lsp.TEXT_DOCUMENT_CODE_ACTION,
                lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix]))
def code_actions(ls: CritServer, params: lsp.CodeActionParams) -> list[lsp.CodeAction]:
    """A quick fix for each "did you mean" diagnostic: the suggested name in place of the one
    written."""
    uri = params.text_document.uri
    document = ls.workspace.get_text_document(uri)
    actions: list[lsp.CodeAction] = []
    for diagnostic in params.context.diagnostics:
        data = diagnostic.data if isinstance(diagnostic.data, dict) else {}
        hint, message = data.get("hint"), data.get("message", diagnostic.message)
        if diagnostic.source != "crit" or not isinstance(hint, str) or not isinstance(message, str):
            continue
        written = document.text_in_client_range(diagnostic.range)
        found = analysis.suggestion(hint, message, written)
        if found is None:
            continue
        wrong, right, offset = found
        codec = document.position_codec
        start = codec.position_from_client_units(document.lines, diagnostic.range.start)
        begin = codec.position_to_client_units(document.lines, lsp.Position(start.line, start.character + offset))
        stop = lsp.Position(begin.line, begin.character + codec.client_num_units(wrong))
        edit = lsp.TextEdit(range=lsp.Range(begin, stop), new_text=right)
        actions.append(lsp.CodeAction(
            title=f"Change '{wrong}' to '{right}'", kind=lsp.CodeActionKind.QuickFix, diagnostics=[diagnostic],
            is_preferred=True, edit=lsp.WorkspaceEdit(changes={uri: [edit]})))
    return actions


@click.command("lsp")
def lsp_command() -> None:
    """Run the crit language server on stdin and stdout, for an editor to start."""
    server.start_io()
