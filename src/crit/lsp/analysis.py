"""What the language server knows about one open `.crit` document: its diagnostics, exactly as
`crit check` gives them (lint warnings included), and an index of what is declared where in it
and in the schemas it imports, for hover, go to definition, completion and the outline.

Everything here takes text and returns data, in crit's own coordinates (1-based lines and
columns counted in characters, as `ast.Span`); `crit.lsp.server` converts them to the protocol's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from crit import ast, ir
from crit.backends.markdown import code_span, inline
from crit.check.units import UnitError, factor, parse_unit
from crit.diagnostics import CritError, Diagnostic
from crit.driver import Loaded, display_path, load
from crit.english import count_heading, describe, describe_type
from crit.syntax import parse
from crit.text import split_lines
from crit.tools.lint import as_errors, lint

Span = ast.Span

# ---- compiling a buffer ---------------------------------------------------------------------


@dataclass
class Compiled:
    """One compilation of a document's text: what `crit check` would print for it."""

    shown: str  # the document as diagnostics name it (relative to the server's directory)
    diagnostics: list[Diagnostic]
    sources: dict[str, str]  # every file read, by shown name: the buffer and its imports
    module: ast.Module | None  # the buffer's syntax tree, if it parses
    protocol: ir.Protocol | None  # the checked protocol, if it checks


def compile_text(path: Path, text: str, strict: bool = False) -> Compiled:
    """Compile the editor's `text` for the file at `path` (its imports read from disk), then
    lint it if it checks, its warnings made errors if `strict` (as `crit check --strict`). A
    schema file (no protocol header, no criteria) is only parsed: it is checked as part of the
    protocols that import it."""
    shown = display_path(path)
    loaded = Loaded()
    text = text.removeprefix("\ufeff")
    try:
        module = parse(text, shown)
    except CritError as err:
        recovered = _recover(text, shown)
        if recovered is None:
            return Compiled(shown, err.diagnostics, {shown: text}, None, None)
        with contextlib.suppress(CritError):  # for the names the imports declare, not diagnostics
            load(path, loaded, text=recovered[1])
        return Compiled(shown, err.diagnostics, {**loaded.sources, shown: text}, recovered[0], None)
    if module.header is None and not module.inclusion and not module.exclusion:
        return Compiled(shown, [], {shown: text, **_imported_sources(path, module)}, module, None)
    try:
        protocol = load(path, loaded, text=text)
    except CritError as err:
        return Compiled(shown, err.diagnostics, loaded.sources, module, None)
    warnings = lint(protocol)
    return Compiled(shown, as_errors(warnings) if strict else warnings, loaded.sources, module, protocol)


_RECOVERY_ATTEMPTS = 8


def _recover(text: str, shown: str) -> tuple[ast.Module, str] | None:
    """The syntax tree of `text` without the lines that do not parse (a line being typed), if
    blanking a few of them is enough: so that completion and hover still know the names."""
    lines = split_lines(text)
    blanked: set[int] = set()
    for _ in range(_RECOVERY_ATTEMPTS):
        attempt = "\n".join("" if i in blanked else line for i, line in enumerate(lines))
        try:
            return parse(attempt, shown), attempt
        except CritError as err:
            line = err.diagnostics[0].span.line - 1
            if line in blanked or not 0 <= line < len(lines):
                return None
            blanked.add(line)
    return None


def _imported_sources(path: Path, module: ast.Module) -> dict[str, str]:
    """The text of a schema's own imports, as far as they can be read (for navigation only)."""
    out: dict[str, str] = {}
    for imp in module.imports:
        target = path.parent / imp.path
        try:
            out[display_path(target)] = target.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
    return out


# ---- what is declared, and where ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Declaration:
    """A declared name: `kind` is field, item field, record, enum, member, definition or criterion."""

    kind: str
    name: str
    span: Span  # the name itself, where it is declared
    owner: str | None  # the record of an item field, the enum of a member
    label: str | None
    node: object


@dataclass(frozen=True, slots=True)
class Occurrence:
    """A name or unit written in the document. `role` is name, list, member, type, unit or
    criterion; `context` is the list a `where` ranges over (for a name), the field a member or a
    unit is compared with."""

    span: Span
    role: str
    name: str
    context: str | None = None


@dataclass
class Index:
    """The declarations of a document and its imports, and the occurrences in the document."""

    shown: str
    sources: dict[str, str]
    protocol: ir.Protocol | None
    fields: dict[str, Declaration] = field(default_factory=dict)
    item_fields: dict[str, dict[str, Declaration]] = field(default_factory=dict)  # by record
    records: dict[str, Declaration] = field(default_factory=dict)
    enums: dict[str, Declaration] = field(default_factory=dict)
    members: dict[str, dict[str, Declaration]] = field(default_factory=dict)  # by enum
    definitions: dict[str, Declaration] = field(default_factory=dict)
    criteria: dict[str, Declaration] = field(default_factory=dict)
    occurrences: list[Occurrence] = field(default_factory=list)
    units: list[str] = field(default_factory=list)  # every unit a field declares, in order

    def declarations(self) -> Iterator[Declaration]:
        yield from self.criteria.values()
        yield from self.definitions.values()
        yield from self.fields.values()
        for inner in self.item_fields.values():
            yield from inner.values()
        yield from self.records.values()
        yield from self.enums.values()
        for members in self.members.values():
            yield from members.values()


def build_index(compiled: Compiled, previous: Index | None = None) -> Index | None:
    """The index of a compiled document, or (if its text does not parse now) the previous one,
    with the newest checked protocol either way."""
    if compiled.module is None:
        return previous
    index = Index(compiled.shown, dict(compiled.sources),
                  compiled.protocol or (previous.protocol if previous else None))
    modules: list[ast.Module] = []
    for shown, text in compiled.sources.items():
        if shown == compiled.shown:
            continue
        try:
            modules.append(parse(text, shown))
        except CritError:
            continue
    modules.append(compiled.module)
    for module in modules:
        _declare(index, module)
    index.occurrences = sorted(_occurrences(compiled.module, index), key=lambda o: (o.span.line, o.span.column))
    return index


def _name_span(sources: dict[str, str], span: Span, name: str) -> Span:
    """Where `name` is written on the first line of `span` (a declaration's span starts with
    its keyword, or with the name itself)."""
    lines = split_lines(sources.get(span.file, ""))
    if 1 <= span.line <= len(lines):
        match = re.compile(rf"(?<![A-Za-z0-9_.]){re.escape(name)}(?![A-Za-z0-9_])").search(
            lines[span.line - 1], max(span.column - 1, 0))
        if match is not None:
            return Span(span.file, span.line, match.start() + 1, span.line, match.end() + 1)
    return Span(span.file, span.line, span.column, span.line, span.column + len(name))


def _declare(index: Index, module: ast.Module) -> None:
    def declare(kind: str, name: str, span: Span, owner: str | None, label: str | None, node: object) -> Declaration:
        return Declaration(kind, name, _name_span(index.sources, span, name), owner, label, node)

    for enum in module.enums:
        index.enums.setdefault(enum.name, declare("enum", enum.name, enum.span, None, enum.label, enum))
        members = index.members.setdefault(enum.name, {})
        for member in enum.members:
            members.setdefault(member.name, declare("member", member.name, member.span, enum.name,
                                                    member.label, member))
    for record in module.records:
        index.records.setdefault(record.name, declare("record", record.name, record.span, None, record.label, record))
        inner = index.item_fields.setdefault(record.name, {})
        for decl in record.fields:
            inner.setdefault(decl.name, declare("item field", decl.name, decl.span, record.name, decl.label, decl))
            _declared_units(index, decl)
    for patient in module.patients:
        for decl in patient.fields:
            index.fields.setdefault(decl.name, declare("field", decl.name, decl.span, None, decl.label, decl))
            _declared_units(index, decl)
    for define in module.defines:
        index.definitions.setdefault(define.name, declare("definition", define.name, define.span, None,
                                                          define.label, define))
    for criterion in _criteria(module):
        index.criteria.setdefault(criterion.id, Declaration("criterion", criterion.id, criterion.id_span, None,
                                                            criterion.title, criterion))


def _declared_units(index: Index, decl: ast.FieldDecl) -> None:
    for unit in (decl.type.unit, *decl.type.also):
        if unit is not None and unit.text not in index.units:
            index.units.append(unit.text)


def _type_name(t: ast.TypeExpr) -> str | None:
    """The enum or record a field's type names (`Disease`, `set of X`, `list of R`), if any."""
    return t.name if t.name is not None else (t.kind if t.kind not in ir.TYPE_KINDS else None)


def _criteria(module: ast.Module) -> Iterator[ast.Criterion]:
    def walk(criterion: ast.Criterion) -> Iterator[ast.Criterion]:
        yield criterion
        for item in criterion.items:
            if isinstance(item, ast.Criterion):
                yield from walk(item)

    for top in module.inclusion + module.exclusion:
        yield from walk(top)


def _occurrences(module: ast.Module, index: Index) -> Iterator[Occurrence]:
    for criterion in _criteria(module):
        yield Occurrence(criterion.id_span, "criterion", criterion.id)
        if criterion.applies is not None:
            yield from _expression(criterion.applies, None, None)
        for item in criterion.items:
            if not isinstance(item, ast.Criterion):
                yield from _expression(item, None, None)
    for define in module.defines:
        yield from _expression(define.body, None, None)
    decls = [f for r in module.records for f in r.fields] + [f for p in module.patients for f in p.fields]
    for decl in decls:
        named = _type_name(decl.type)
        if named is not None:
            yield Occurrence(_name_span(index.sources, decl.type.span, named), "type", named)
        for unit in (decl.type.unit, *decl.type.also):
            if unit is not None:
                yield Occurrence(unit.span, "unit", unit.text, decl.name)


def _expression(node: object, where: str | None, compared: str | None) -> Iterator[Occurrence]:
    """The names and units in an expression (or anything holding expressions), walked by its
    dataclass fields so that a new kind of node is walked too."""
    match node:
        case ast.Ref(name=name, span=span):
            yield Occurrence(span, "name", name, where)
        case ast.Unit(text=text, span=span):
            yield Occurrence(span, "unit", text, compared)
        case ast.Quantifier(list_name=list_name, condition=condition):
            yield Occurrence(list_name.span, "list", list_name.name)
            if condition is not None:
                yield from _expression(condition, list_name.name, None)
        case ast.Membership(value=value, members=members):
            yield from _expression(value, where, None)
            owner = value.name if isinstance(value, ast.Ref) else None
            for member in members:
                yield Occurrence(member.span, "member", member.name, owner)
        case tuple():
            for item in node:
                yield from _expression(item, where, compared)
        case _ if dataclasses.is_dataclass(node) and not isinstance(node, type | ast.Span):
            parts = [getattr(node, f.name) for f in dataclasses.fields(node)]
            refs = [p.name for p in parts if isinstance(p, ast.Ref)]
            inner = refs[0] if refs and isinstance(node, ast.Compare | ast.Between) else compared
            for part in parts:
                yield from _expression(part, where, inner)


# ---- questions asked at a position ----------------------------------------------------------


def _contains(span: Span, line: int, column: int) -> bool:
    return (span.line, span.column) <= (line, column) <= (span.end_line, span.end_column)


def at(index: Index, line: int, column: int) -> Occurrence | Declaration | None:
    """The occurrence or declaration of the document at a position (1-based, in characters)."""
    for occurrence in index.occurrences:
        if _contains(occurrence.span, line, column):
            return occurrence
    for decl in index.declarations():
        if decl.span.file == index.shown and _contains(decl.span, line, column):
            return decl
    return None


def _record_of(index: Index, list_field: str | None) -> str | None:
    decl = index.fields.get(list_field or "")
    node = decl.node if decl is not None else None
    return node.type.name if isinstance(node, ast.FieldDecl) and node.type.kind == "list" else None


def _enum_of(index: Index, field_name: str | None, where: str | None = None) -> str | None:
    decl = resolve_name(index, field_name, where) if field_name else None
    node = decl.node if decl is not None else None
    named = _type_name(node.type) if isinstance(node, ast.FieldDecl) else None
    return named if named in index.enums else None


def resolve_name(index: Index, name: str | None, where: str | None) -> Declaration | None:
    """What a name in an expression means, as the checker reads it: inside `where`, a field of
    the list's items first; then a patient field, then a definition."""
    if name is None:
        return None
    record = _record_of(index, where)
    if record is not None and name in index.item_fields.get(record, {}):
        return index.item_fields[record][name]
    return index.fields.get(name) or index.definitions.get(name)


def definition(index: Index, target: Occurrence | Declaration | None) -> Declaration | None:
    """The declaration an occurrence refers to (a declaration is its own)."""
    match target:
        case None:
            return None
        case Declaration():
            return target
        case Occurrence(role="criterion", name=name):
            return index.criteria.get(name)
        case Occurrence(role="type", name=name):
            return index.enums.get(name) or index.records.get(name)
        case Occurrence(role="list", name=name):
            return index.fields.get(name)
        case Occurrence(role="member", name=name, context=context):
            enum = _enum_of(index, context)
            if enum is not None and name in index.members.get(enum, {}):
                return index.members[enum][name]
            return next((m[name] for m in index.members.values() if name in m), None)
        case Occurrence(role="name", name=name, context=context):
            return resolve_name(index, name, context)
        case _:
            return None


# ---- hover ----------------------------------------------------------------------------------


def hover(index: Index, line: int, column: int) -> str | None:
    """Markdown for what is at a position: a field's type, units and label; a criterion's
    English; a unit's dimension; a definition's, enum's or record's contents."""
    target = at(index, line, column)
    if isinstance(target, Occurrence) and target.role == "unit":
        return _unit_hover(index, target)
    decl = definition(index, target)
    if decl is None:
        return None
    match decl.kind:
        case "field" | "item field":
            return _field_hover(index, decl)
        case "criterion":
            return _criterion_hover(index, decl)
        case "definition":
            return _definition_hover(index, decl)
        case "enum":
            members = index.members.get(decl.name, {})
            rows = [f"- {code_span(m.name)}" + (f" — {inline(m.label)}" if m.label else "") for m in members.values()]
            return "\n".join([_title("enum", decl), "", *rows])
        case "record":
            inner = index.item_fields.get(decl.name, {})
            rows = [f"- {code_span(f.name)}: {_type_text(index, f)}" for f in inner.values()]
            return "\n".join([_title("record", decl), "", *rows])
        case "member":
            enum = index.enums.get(decl.owner or "")
            of = f"member of enum {code_span(decl.owner or '')}"
            of += f" ({inline(enum.label)})" if enum and enum.label else ""
            return f"{_title('', decl)}\n\n{of}"
    return None


def _title(kind: str, decl: Declaration) -> str:
    lead = f"{kind} " if kind else ""
    return f"**{lead}{code_span(decl.name)}**" + (f" — {inline(decl.label)}" if decl.label else "")


def _ir_field(index: Index, decl: Declaration) -> ir.Field | None:
    protocol = index.protocol
    if protocol is None:
        return None
    if decl.kind == "field":
        pool = protocol.fields
    else:
        pool = next((r.fields for r in protocol.records if r.name == decl.owner), ())
    return next((f for f in pool if f.name == decl.name), None)


def _type_text(index: Index, decl: Declaration) -> str:
    checked = _ir_field(index, decl)
    if checked is not None:
        return inline(describe_type(checked.type))
    node = decl.node
    if isinstance(node, ast.FieldDecl):
        return code_span(_slice(index.sources, node.type.span))
    return "?"


def _slice(sources: dict[str, str], span: Span) -> str:
    lines = split_lines(sources.get(span.file, ""))
    if span.line == span.end_line and 1 <= span.line <= len(lines):
        return lines[span.line - 1][span.column - 1: span.end_column - 1]
    return ""


def _field_hover(index: Index, decl: Declaration) -> str:
    kind = "patient field" if decl.kind == "field" else f"field of record {code_span(decl.owner or '')} items"
    out = [_title("", decl), "", f"{kind}: {_type_text(index, decl)}"]
    checked = _ir_field(index, decl)
    node = decl.node
    optional = checked.optional if checked is not None else isinstance(node, ast.FieldDecl) and node.optional
    out.append("optional: a record may give none" if optional else "required")
    if checked is not None and isinstance(checked.type, ir.Measure):
        measure = checked.type
        units = [f"unit: {code_span(measure.unit.text)} ({inline(measure.unit.dimension)})"]
        for unit, scale in measure.also:
            units.append(f"also accepted: {code_span(unit.text)}, 1 {inline(unit.text)} = "
                         f"{inline(str(scale))} {inline(measure.unit.text)}")
        out += units
    out.append(f"declared in {code_span(decl.span.file)} line {decl.span.line}")
    return "\n\n".join([out[0], "\n".join(f"- {line}" for line in out[2:])])


def _criterion_hover(index: Index, decl: Declaration) -> str:
    protocol = index.protocol
    checked = next((c for c in protocol.criteria() if c.id == decl.name), None) if protocol else None
    head = f"**{inline(decl.name)}** {inline(decl.label or '')}"
    if checked is None:
        return head + "\n\n(not checked yet: fix the errors to see it in English)"
    out = [f"{head} ({checked.section})", ""]
    if checked.applies is not None:
        out.append(f"Applies when {inline(describe(checked.applies))}.")
    rule = {"any": "Any one of the following:", "at_least": f"At least {checked.at_least} of the following:"}
    if checked.combine in rule:
        out.append(rule[checked.combine])
    out += _bullets(tuple(i for i in checked.items if isinstance(i, ir.Line | ir.When)), 0)
    out += [f"- {inline(child.id)} {inline(child.title)}" for child in checked.children()]
    out += [f"\n*Note:* {inline(note)}" for note in checked.notes()]
    return "\n".join(out)


def _definition_hover(index: Index, decl: Declaration) -> str:
    protocol = index.protocol
    checked = next((d for d in protocol.definitions if d.name == decl.name), None) if protocol else None
    out = [_title("definition", decl), ""]
    if checked is not None:
        out += _bullets(checked.lines(), 0)
        out += [f"\n*Note:* {inline(note)}" for note in checked.notes()]
    return "\n".join(out)


def _bullets(lines: tuple[ir.Line | ir.When, ...], depth: int) -> list[str]:
    pad = "  " * depth
    out: list[str] = []
    for line in lines:
        if isinstance(line, ir.Line):
            expr = line.expr
            if isinstance(expr, ir.AtLeast):
                out.append(f"{pad}- {inline(count_heading(expr))}:")
                out += [f"{pad}  - {inline(describe(part))}" for part in expr.operands]
            else:
                out.append(f"{pad}- {inline(describe(expr))}")
        else:
            out.append(f"{pad}- When {inline(describe(line.condition))}:")
            out += _bullets(line.body, depth + 1)
    return out


def _unit_hover(index: Index, occurrence: Occurrence) -> str:
    try:
        unit = parse_unit(occurrence.name)
    except UnitError as err:
        return f"unit {code_span(occurrence.name)}: {inline(str(err))}"
    out = [f"**unit {code_span(unit.text)}**", "", f"- dimension: {inline(unit.dimension)}"]
    decl = resolve_name(index, occurrence.context, None) if occurrence.context else None
    checked = _ir_field(index, decl) if decl is not None else None
    target = checked.type.unit if checked is not None and isinstance(checked.type, ir.Measure) else None
    if target is not None and decl is not None:
        try:
            ratio = factor(unit, target)
        except UnitError:
            ratio = None
        if ratio is not None and target.text != unit.text:
            out.append(f"- 1 {inline(unit.text)} = {inline(str(ratio))} {inline(target.text)} "
                       f"(the unit of {code_span(decl.name)})")
        elif ratio is not None:
            out.append(f"- the unit of {code_span(decl.name)}")
    return "\n".join(out)


# ---- completion -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Completion:
    label: str
    kind: str  # field, item field, member, unit, definition
    detail: str


_MEMBER_AFTER = re.compile(
    r"([A-Za-z]\w*)\s+(?:is\s+not\s+|is\s+|has\s+|(?:is|has)\s+(?:any|all)\s+of\s*\([^()]*?)\w*$")
_WHERE = re.compile(r"\b(?:count|any|all)\s*\(\s*([A-Za-z]\w*)\s+where\b")
_UNIT_AFTER = re.compile(r"(?<![\w.])[0-9]+(?:\.[0-9]+)?\s+(?:[x×]\s+)?[\w/^.²³%·*]*$")
_UNIT_IN_TYPE = re.compile(r"\b(?:quantity|lab|also)\s+(?:[^\s,]+\s*,\s*)*[\w/^.²³%·*]*$")
_WORD = re.compile(r"[A-Za-z]\w*")


def completions(index: Index, text: str, line: int, column: int) -> list[Completion]:
    """What may be written at a position of `text`: members after `is`/`has`, the items'
    fields inside `where`, units after a number, otherwise fields and definitions."""
    lines = split_lines(text)
    current = lines[line - 1][: column - 1] if 1 <= line <= len(lines) else ""
    before = "\n".join([*lines[: line - 1], current])
    where = _open_where(before)
    member = _MEMBER_AFTER.search(current)
    if member is not None:
        enum = _enum_of(index, member.group(1), where)
        if enum is not None:
            return [Completion(m.name, "member", m.label or enum) for m in index.members[enum].values()]
    if _UNIT_IN_TYPE.search(current):
        return [Completion(u, "unit", "unit") for u in index.units]
    if _UNIT_AFTER.search(current):
        unit_items = _unit_completions(index, current, where)
        if unit_items is not None:
            return unit_items
    out: list[Completion] = []
    record = _record_of(index, where)
    if record is not None:
        out += [Completion(f.name, "item field", f"{record} item: {_plain_type(index, f)}")
                for f in index.item_fields.get(record, {}).values()]
    out += [Completion(f.name, "field", _plain_type(index, f)) for f in index.fields.values()]
    out += [Completion(d.name, "definition", d.label or "definition") for d in index.definitions.values()]
    return out


def _open_where(before: str) -> str | None:
    """The list a `where` still open at the end of `before` ranges over."""
    for match in reversed(list(_WHERE.finditer(before))):
        rest = before[match.end():]
        if rest.count("(") >= rest.count(")"):
            return match.group(1)
    return None


def _unit_completions(index: Index, current: str, where: str | None) -> list[Completion] | None:
    """Units for the quantity being written: the compared field's own units (and `x ULN` for a
    lab value), or every declared unit when the field is not known; None if the field is not a
    quantity (the number is then something else, a count or an age)."""
    for name in reversed(_WORD.findall(current)):
        decl = resolve_name(index, name, where)
        node = decl.node if decl is not None else None
        if not isinstance(node, ast.FieldDecl):
            continue
        if node.type.kind not in ("quantity", "lab"):
            return None
        units = [u.text for u in (node.type.unit, *node.type.also) if u is not None]
        items = [Completion(u, "unit", f"unit of {name}") for u in units]
        if node.type.kind == "lab":
            items.append(Completion("x ULN", "unit", f"a multiple of {name}'s upper limit of normal"))
        return items
    return [Completion(u, "unit", "unit") for u in index.units]


def _plain_type(index: Index, decl: Declaration) -> str:
    node = decl.node
    label = f" — {decl.label}" if decl.label else ""
    if isinstance(node, ast.FieldDecl):
        return _slice(index.sources, node.type.span) + label
    return decl.kind


# ---- the outline ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Symbol:
    name: str
    detail: str
    kind: str  # section, criterion, definition, patient, field, record, enum
    span: Span
    selection: Span
    children: tuple[Symbol, ...] = ()


def outline(module: ast.Module, sources: dict[str, str]) -> list[Symbol]:
    """The document's outline: the criteria by section, nested as written, then the
    definitions and the schema it declares."""
    out: list[Symbol] = []

    def criterion(c: ast.Criterion) -> Symbol:
        children = tuple(criterion(i) for i in c.items if isinstance(i, ast.Criterion))
        return Symbol(c.id, c.title, "criterion", _enclose(c.span, c.id_span), c.id_span, children)

    for title, criteria in (("inclusion", module.inclusion), ("exclusion", module.exclusion)):
        if criteria:
            spans = [c.span for c in criteria]
            head = _section_head(sources, spans[0], title)
            whole = Span(spans[0].file, head.line, 1, spans[-1].end_line, spans[-1].end_column)
            out.append(Symbol(title, f"{len(criteria)} criteria", "section", _enclose(whole, head), head,
                              tuple(criterion(c) for c in criteria)))
    for define in module.defines:
        name = _name_span(sources, define.span, define.name)
        out.append(Symbol(define.name, define.label or "", "definition", _enclose(define.span, name), name))
    for patient in module.patients:
        fields = tuple(_field_symbol(f, sources) for f in patient.fields)
        head = Span(patient.span.file, patient.span.line, patient.span.column, patient.span.line,
                    patient.span.column + len("patient"))
        out.append(Symbol("patient", f"{len(fields)} fields", "patient", _enclose(patient.span, head), head, fields))
    for record in module.records:
        name = _name_span(sources, record.span, record.name)
        fields = tuple(_field_symbol(f, sources) for f in record.fields)
        out.append(Symbol(record.name, record.label or "", "record", _enclose(record.span, name), name, fields))
    for enum in module.enums:
        name = _name_span(sources, enum.span, enum.name)
        out.append(Symbol(enum.name, enum.label or "", "enum", _enclose(enum.span, name), name))
    return out


def _section_head(sources: dict[str, str], first: Span, word: str) -> Span:
    """Where `inclusion` or `exclusion` is written: the last line above its first criterion
    that starts with the word (comments and blank lines may stand between)."""
    lines = split_lines(sources.get(first.file, ""))
    for number in range(min(first.line - 1, len(lines)), 0, -1):
        if re.match(rf"{word}\b", lines[number - 1]):
            return Span(first.file, number, 1, number, 1 + len(word))
    return Span(first.file, first.line, first.column, first.line, first.column + len(word))


def _field_symbol(decl: ast.FieldDecl, sources: dict[str, str]) -> Symbol:
    name = _name_span(sources, decl.span, decl.name)
    return Symbol(decl.name, decl.label or "", "field", _enclose(decl.span, name), name)


def _enclose(span: Span, inner: Span) -> Span:
    """`span`, grown if need be to hold `inner` (the outline's range must hold its selection)."""
    start = min((span.line, span.column), (inner.line, inner.column))
    end = max((span.end_line, span.end_column), (inner.end_line, inner.end_column))
    return Span(span.file, start[0], start[1], end[0], end[1])


# ---- quick fixes ----------------------------------------------------------------------------

_DID_YOU_MEAN = re.compile(r"did you mean '([^']+)'\?")
_QUOTED = re.compile(r"'([^']+)'")


def suggestion(hint: str | None, message: str, written: str) -> tuple[str, str, int] | None:
    """For a "did you mean" diagnostic: the name written wrongly (quoted in the message and
    standing in the first line of `written`, the text its span covers), the suggested name, and
    where the wrong name starts in `written`; None when there is nothing to replace."""
    found = _DID_YOU_MEAN.search(hint or "")
    if found is None:
        return None
    replacement = found.group(1)
    first = split_lines(written)[0]
    for name in _QUOTED.findall(message):
        match = re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", first)
        if name != replacement and match is not None:
            return name, replacement, match.start()
    return None
