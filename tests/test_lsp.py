"""`crit lsp` end to end: a real client (pytest-lsp) starts `python -m crit lsp` and speaks the
Language Server Protocol to it over stdio, as an editor does. Nothing here calls a handler.

One server serves the whole module (starting it costs about half a second); each test opens
documents of its own, so no test depends on another's edits.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_lsp
from click.testing import CliRunner
from lsprotocol import types as lsp
from pygls.uris import from_fs_path
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from crit.cli import cli
from crit.tools.fmt import format_source

pytestmark = pytest.mark.asyncio(loop_scope="module")

SCHEMA = """\
# A small schema for the language server's tests.

enum Disease "Disease"
  SLE "Systemic lupus erythematosus"
  SSc "Systemic sclerosis"

record Treatment "Treatment"
  agent: text "Agent"
  immunosuppressive: bool "Immunosuppressive"
  start: date "Start"

patient
  age: integer "Age (years)"
  diagnosis: Disease "Diagnosis"
  hemoglobin: quantity g/L also g/dL "Hemoglobin"
  ast: lab U/L "AST"
  treatments: list of Treatment "Treatments"
  screening: date "Screening visit"
"""

PROTOCOL = """\
protocol T1 "A test protocol"

import "schemas/s.crit"

define anaemic "Anaemic": hemoglobin < 100 g/L

inclusion
  I1 "Adult"
    age >= 18
  I2 "Lupus, treated"
    diagnosis is SLE
    count(treatments where immunosuppressive) >= 1
    ast <= 3 x ULN

exclusion
  E1 "Anaemia"
    anaemic
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lsp")
    (root / "schemas").mkdir()
    (root / "schemas" / "s.crit").write_text(SCHEMA, encoding="utf-8")
    return root


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=[sys.executable, "-m", "crit", "lsp"]))
async def client(lsp_client: LanguageClient, project: Path) -> AsyncIterator[None]:
    params = lsp.InitializeParams(capabilities=client_capabilities("visual-studio-code"),
                                  root_uri=from_fs_path(str(project)))
    result = await lsp_client.initialize_session(params)
    assert result.capabilities.position_encoding in (None, lsp.PositionEncodingKind.Utf16)
    yield
    await lsp_client.shutdown_session()


def uri_of(path: Path) -> str:
    uri = from_fs_path(str(path))
    assert uri is not None
    return uri


async def published(client: LanguageClient, uri: str) -> list[lsp.Diagnostic]:
    """The next diagnostics the server publishes for `uri`."""
    client.diagnostics.pop(uri, None)
    async with asyncio.timeout(10):
        while uri not in client.diagnostics:
            await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    return list(client.diagnostics[uri])


async def open_document(client: LanguageClient, path: Path, text: str, on_disk: str | None = None
                        ) -> list[lsp.Diagnostic]:
    """Write `on_disk` (default: `text`) to `path`, open it with `text` in the editor, and return
    the diagnostics published for it."""
    path.write_text(text if on_disk is None else on_disk, encoding="utf-8")
    uri = uri_of(path)
    client.diagnostics.pop(uri, None)
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        lsp.TextDocumentItem(uri=uri, language_id="crit", version=1, text=text)))
    return await published(client, uri)


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def position(text: str, needle: str, line_with: str | None = None, offset: int = 0) -> lsp.Position:
    """The protocol position (UTF-16) of `needle` on the first line holding `line_with`."""
    lines = text.split("\n")
    number = next(i for i, line in enumerate(lines) if (line_with or needle) in line)
    column = lines[number].index(needle, lines[number].index(line_with) if line_with else 0) + offset
    return lsp.Position(number, utf16(lines[number][:column]))


_CHECK_LINE = re.compile(
    r"^(?P<file>.+?):(?P<line>\d+):(?P<column>\d+): (?:error|warning)\[(?P<code>\w+)\]: (?P<message>.*)$")


def crit_check(path: Path) -> set[tuple[str, int, int, str, str]]:
    """What `crit check` prints for `path`: file, line, column, code and message + hint."""
    result = CliRunner().invoke(cli, ["check", str(path)])
    found: set[tuple[str, int, int, str, str]] = set()
    current: dict[str, str] | None = None
    for line in [*result.output.splitlines(), ""]:
        match = _CHECK_LINE.match(line)
        hint = re.match(r"^\s*= hint: (.*)$", line)
        if match or not line:
            if current is not None:
                found.add((current["file"], int(current["line"]), int(current["column"]), current["code"],
                           current["message"]))
            current = match.groupdict() if match else None
        elif hint and current is not None:
            current["message"] += f"\nhint: {hint.group(1)}"
    return found


def as_check(path: Path, diagnostics: list[lsp.Diagnostic], text: str) -> set[tuple[str, int, int, str, str]]:
    """LSP diagnostics in `crit check`'s terms (ASCII lines: UTF-16 columns are characters)."""
    lines = text.split("\n")
    out = set()
    for d in diagnostics:
        line = lines[d.range.start.line]
        assert line.isascii()
        out.add((str(path), d.range.start.line + 1, d.range.start.character + 1, str(d.code), d.message))
    return out


async def test_diagnostics_are_crit_checks_own_with_lint_warnings(client: LanguageClient, project: Path) -> None:
    broken = project / "broken.crit"
    text = PROTOCOL.replace("hemoglobin < 100", "hemoglobn < 100").replace("age >= 18", "agee >= 18")
    diagnostics = await open_document(client, broken, text)
    assert {str(d.code) for d in diagnostics} == {"E201"}
    assert all(d.severity == lsp.DiagnosticSeverity.Error and d.source == "crit" for d in diagnostics)
    assert as_check(broken, diagnostics, text) == crit_check(broken)
    assert any("did you mean 'hemoglobin'?" in d.message for d in diagnostics)

    warned = project / "warned.crit"
    text = PROTOCOL.replace("    age >= 18\n", "    age >= 80\n    age <= 20\n")
    diagnostics = await open_document(client, warned, text)
    assert {str(d.code) for d in diagnostics} == {"W001"}
    assert all(d.severity == lsp.DiagnosticSeverity.Warning for d in diagnostics)
    schema = client.diagnostics[uri_of(project / "schemas" / "s.crit")]  # published with it
    assert {str(d.code) for d in schema} == {"W005"}  # `screening` is declared and never used
    expected = crit_check(warned)
    assert as_check(warned, diagnostics, text) == {e for e in expected if e[0] == str(warned)}


async def test_strict_in_tool_crit_makes_warnings_errors(client: LanguageClient, project: Path) -> None:
    """As `crit check` does in a project whose pyproject.toml says `strict = true`."""
    strict = project / "strict"
    (strict / "schemas").mkdir(parents=True)
    (strict / "schemas" / "s.crit").write_text(SCHEMA, encoding="utf-8")
    (strict / "pyproject.toml").write_text('[tool.crit]\nstrict = true\n', encoding="utf-8")
    text = PROTOCOL.replace("    age >= 18\n", "    age >= 80\n    age <= 20\n")
    diagnostics = await open_document(client, strict / "w.crit", text)
    assert [(d.code, d.severity) for d in diagnostics] == [("W001", lsp.DiagnosticSeverity.Error)]


async def test_the_editors_text_is_compiled_not_the_file(client: LanguageClient, project: Path) -> None:
    path = project / "unsaved.crit"
    clean = PROTOCOL.replace("anaemic\n", "anaemic\n    hemoglobin >= 50 g/L\n")
    diagnostics = await open_document(client, path, PROTOCOL.replace("age >= 18", "agee >= 18"), on_disk=clean)
    assert [str(d.code) for d in diagnostics] == ["E201"]  # the file on disk has no error
    uri = uri_of(path)
    client.diagnostics.pop(uri, None)
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        lsp.VersionedTextDocumentIdentifier(uri=uri, version=2),
        [lsp.TextDocumentContentChangeWholeDocument(text=PROTOCOL.replace("age >= 18", "age >= 1 8"))]))
    diagnostics = await published(client, uri)
    assert [(d.code, d.message) for d in diagnostics] == [
        ("E204", "age is an integer and has no unit\nhint: write the number alone: 1")]
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        lsp.VersionedTextDocumentIdentifier(uri=uri, version=3),
        [lsp.TextDocumentContentChangeWholeDocument(text=PROTOCOL)]))
    assert await published(client, uri) == []
    assert path.read_text(encoding="utf-8") == clean  # nothing was written


async def test_columns_are_utf16_code_units(client: LanguageClient, project: Path) -> None:
    """`≥` and `×` are one UTF-16 unit each, an emoji two: a diagnostic after them on the line
    sits where the editor counts, and a position sent by the editor lands on the right name."""
    path = project / "unicode.crit"
    header = '  I3 "≥ 1 × ULN 😀😀😀" when agee >= 18'
    text = PROTOCOL.replace("exclusion\n", f"{header}\n    diagnosis is SLE\n\nexclusion\n")
    diagnostics = await open_document(client, path, text)
    (diagnostic,) = diagnostics
    assert diagnostic.code == "E201"
    start = header.index("agee")
    assert diagnostic.range.start == lsp.Position(text.split("\n").index(header), utf16(header[:start]))
    assert diagnostic.range.start.character == start + 3  # three emoji, one extra unit each
    assert diagnostic.range.end.character - diagnostic.range.start.character == 4

    fixed = text.replace("agee", "age")
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        lsp.VersionedTextDocumentIdentifier(uri=uri_of(path), version=2),
        [lsp.TextDocumentContentChangeWholeDocument(text=fixed)]))
    assert await published(client, uri_of(path)) == []
    where = position(fixed, "age", line_with="😀", offset=2)  # on the last letter of `age`
    found = await client.text_document_definition_async(lsp.DefinitionParams(
        lsp.TextDocumentIdentifier(uri_of(path)), where))
    assert isinstance(found, lsp.Location)
    assert found.uri == uri_of(project / "schemas" / "s.crit")
    assert found.range.start.line == SCHEMA.split("\n").index('  age: integer "Age (years)"')


async def hover_at(client: LanguageClient, uri: str, at: lsp.Position) -> str:
    result = await client.text_document_hover_async(lsp.HoverParams(lsp.TextDocumentIdentifier(uri), at))
    assert result is not None and isinstance(result.contents, lsp.MarkupContent)
    return result.contents.value


async def test_hover(client: LanguageClient, project: Path) -> None:
    path = project / "hover.crit"
    await open_document(client, path, PROTOCOL)
    uri = uri_of(path)
    field = await hover_at(client, uri, position(PROTOCOL, "hemoglobin", offset=3))
    assert "`hemoglobin`" in field and "Hemoglobin" in field
    assert "quantity in g/L (also g/dL)" in field
    assert "1 g/dL = 10 g/L" in field
    criterion = await hover_at(client, uri, position(PROTOCOL, "I2", offset=1))
    assert "Lupus, treated" in criterion and "(inclusion)" in criterion
    assert criterion.split("\n")[2:] == [
        "- Diagnosis is Systemic lupus erythematosus",
        "- the number of entries in Treatments with Immunosuppressive is ≥ 1",
        "- AST ≤ 3 × ULN",
    ]
    unit = await hover_at(client, uri, position(PROTOCOL, "g/L", line_with="define"))
    assert "unit `g/L`" in unit and "mass/length^3" in unit and "the unit of `hemoglobin`" in unit


async def definition_of(client: LanguageClient, uri: str, at: lsp.Position) -> lsp.Location:
    found = await client.text_document_definition_async(lsp.DefinitionParams(lsp.TextDocumentIdentifier(uri), at))
    assert isinstance(found, lsp.Location)
    return found


async def test_go_to_definition_across_imports(client: LanguageClient, project: Path) -> None:
    path = project / "define.crit"
    await open_document(client, path, PROTOCOL)
    uri, schema_uri = uri_of(path), uri_of(project / "schemas" / "s.crit")
    schema_lines = SCHEMA.split("\n")

    def line_of(text: str) -> int:
        return next(i for i, line in enumerate(schema_lines) if line.startswith(text))

    field = await definition_of(client, uri, position(PROTOCOL, "diagnosis"))
    assert (field.uri, field.range.start.line, field.range.start.character) == (schema_uri, line_of("  diagnosis"), 2)
    member = await definition_of(client, uri, position(PROTOCOL, "SLE", line_with="diagnosis is"))
    assert (member.uri, member.range.start.line) == (schema_uri, line_of("  SLE"))
    item = await definition_of(client, uri, position(PROTOCOL, "immunosuppressive"))
    assert (item.uri, item.range.start.line) == (schema_uri, line_of("  immunosuppressive"))
    definition = await definition_of(client, uri, position(PROTOCOL, "anaemic", line_with="    anaemic"))
    assert (definition.uri, definition.range.start.line) == (uri, 4)
    assert definition.range.start.character == PROTOCOL.split("\n")[4].index("anaemic")

    # From the schema itself: a field's type names an enum or a record.
    schema_path = project / "schemas" / "s.crit"
    await open_document(client, schema_path, SCHEMA)
    enum = await definition_of(client, schema_uri, position(SCHEMA, "Disease", line_with="diagnosis:"))
    assert (enum.uri, enum.range.start.line, enum.range.start.character) == (schema_uri, line_of("enum Disease"), 5)
    record = await definition_of(client, schema_uri, position(SCHEMA, "Treatment", line_with="list of"))
    assert (record.uri, record.range.start.line) == (schema_uri, line_of("record Treatment"))


async def labels_at(client: LanguageClient, uri: str, at: lsp.Position) -> list[str]:
    result = await client.text_document_completion_async(lsp.CompletionParams(lsp.TextDocumentIdentifier(uri), at))
    assert isinstance(result, lsp.CompletionList)
    return [item.label for item in result.items]


async def test_completion(client: LanguageClient, project: Path) -> None:
    path = project / "complete.crit"
    uri = uri_of(path)
    lines = [
        "    diagnosis is ",
        "    hemoglobin >= 60 ",
        "    ast <= 3 ",
        "    ",
        "    count(treatments where ",  # left open: everything after it is inside `where`
    ]
    text = PROTOCOL + "\n".join(lines) + "\n"
    await open_document(client, path, text)
    end = text.split("\n")

    def at_end(line: str) -> lsp.Position:
        return lsp.Position(end.index(line), utf16(line))

    assert await labels_at(client, uri, at_end(lines[0])) == ["SLE", "SSc"]
    assert await labels_at(client, uri, at_end(lines[1])) == ["g/L", "g/dL"]
    assert await labels_at(client, uri, at_end(lines[2])) == ["U/L", "x ULN"]
    inside_where = await labels_at(client, uri, at_end(lines[4]))
    assert inside_where[:3] == ["agent", "immunosuppressive", "start"]
    anywhere = await labels_at(client, uri, at_end(lines[3]))
    assert {"age", "diagnosis", "hemoglobin", "anaemic"} <= set(anywhere)
    assert "agent" not in anywhere  # a record's field only inside `where`


async def test_outline(client: LanguageClient, project: Path) -> None:
    path = project / "outline.crit"
    text = PROTOCOL.replace('  I2 "Lupus, treated"\n', '  I2 "Lupus, treated"\n    I2.1 "Nested"\n      age >= 20\n')
    text = text.replace("inclusion\n", "inclusion\n  # adults with lupus\n\n")
    await open_document(client, path, text)
    symbols = await client.text_document_document_symbol_async(
        lsp.DocumentSymbolParams(lsp.TextDocumentIdentifier(uri_of(path))))
    assert symbols is not None
    tree = {s.name: [c.name for c in (s.children or [])] for s in symbols if isinstance(s, lsp.DocumentSymbol)}
    assert tree["inclusion"] == ["I1", "I2"] and tree["exclusion"] == ["E1"]
    assert "anaemic" in tree
    (inclusion,) = [s for s in symbols if isinstance(s, lsp.DocumentSymbol) and s.name == "inclusion"]
    i2 = (inclusion.children or [])[1]
    assert [c.name for c in (i2.children or [])] == ["I2.1"] and i2.detail == "Lupus, treated"
    assert i2.selection_range.start == position(text, "I2")
    assert inclusion.selection_range.start == lsp.Position(text.split("\n").index("inclusion"), 0)
    assert inclusion.range.start.line == inclusion.selection_range.start.line


async def test_formatting_is_crit_fmt(client: LanguageClient, project: Path) -> None:
    path = project / "format.crit"
    messy = PROTOCOL.replace("age >= 18", "age>=18").replace('define anaemic "Anaemic": hemoglobin < 100 g/L',
                                                             'define anaemic "Anaemic" :  hemoglobin<100 g/L')
    await open_document(client, path, messy)
    edits = await client.text_document_formatting_async(lsp.DocumentFormattingParams(
        lsp.TextDocumentIdentifier(uri_of(path)), lsp.FormattingOptions(tab_size=2, insert_spaces=True)))
    assert edits is not None and len(edits) == 1
    assert edits[0].new_text == format_source(messy, "format.crit") == PROTOCOL
    assert edits[0].range.start == lsp.Position(0, 0)


async def test_quick_fix_for_did_you_mean(client: LanguageClient, project: Path) -> None:
    path = project / "fix.crit"
    meant = PROTOCOL.replace('  I1 "Adult"', '  I1 "Adult ≥ 18 × 😀" when age >= 0')
    text = meant.replace("when age >= 0", "when agee >= 0").replace("diagnosis is SLE", "diagnosis is SLEE")
    diagnostics = await open_document(client, path, text)
    assert len(diagnostics) == 2
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        lsp.TextDocumentIdentifier(uri_of(path)), diagnostics[0].range, lsp.CodeActionContext(diagnostics)))
    assert actions is not None
    fixes = {a.title: a for a in actions if isinstance(a, lsp.CodeAction)}
    assert set(fixes) == {"Change 'agee' to 'age'", "Change 'SLEE' to 'SLE'"}
    lines = text.split("\n")
    for action in fixes.values():
        assert action.kind == lsp.CodeActionKind.QuickFix and action.edit and action.edit.changes
        (edit,) = action.edit.changes[uri_of(path)]
        line = lines[edit.range.start.line]
        start = len(line.encode("utf-16-le")[: edit.range.start.character * 2].decode("utf-16-le"))
        end = len(line.encode("utf-16-le")[: edit.range.end.character * 2].decode("utf-16-le"))
        lines[edit.range.start.line] = line[:start] + edit.new_text + line[end:]
    assert "\n".join(lines) == meant
