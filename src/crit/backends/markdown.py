"""The Markdown backend: the protocol as clinicians review it, and as `git diff` compares it.

Every string is prepared (worded by `crit.english`, then escaped) here; the template only lays
blocks out. Output depends on the IR alone, so rendering the same protocol twice gives the same
bytes, and an amendment changes only the blocks it touches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from crit import ir, templating
from crit.english import count_heading, describe, describe_field_type, describe_num

_READING_GUIDE = (
    "A patient is eligible when every inclusion criterion that applies is met and no exclusion "
    "criterion that applies is met. Within a criterion, every line and sub-criterion must hold "
    "unless the criterion says otherwise."
)
_FIELD_COLUMNS = ("Field", "Label", "Type", "Optional")
_MEMBER_COLUMNS = ("Member", "Label")

# Everything that ends a line somewhere: Markdown renderers, editors or `str.splitlines`.
_LINE_BREAKS = re.compile(r"[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")
# Characters that start inline markup, tables, headings or HTML wherever they stand.
_SPECIAL = re.compile(
    r"[\\`*\[\]#|~]|<(?=[A-Za-z/!?])|&(?=#?[A-Za-z0-9]+;)"
    r"|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])"  # `_` inside a word never starts emphasis
)
# Text that would open a block (list, quote, setext underline, ordered list) at a line start.
_BLOCK_START = re.compile(r"^(?:[-+=>]|[0-9]{1,9}(?=[.)](?:\s|$)))")


@dataclass(frozen=True, slots=True)
class _Bullet:
    depth: int
    text: str


@dataclass(frozen=True, slots=True)
class _Block:
    """A criterion or a definition: one heading, then its conditions and notes."""

    heading: str
    applies: str | None
    rule: str | None
    bullets: tuple[_Bullet, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Section:
    heading: str
    blocks: tuple[_Block, ...]


@dataclass(frozen=True, slots=True)
class _Table:
    heading: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def emit_markdown(protocol: ir.Protocol) -> str:
    """The protocol's Markdown rendering: criteria, definitions and the field glossary."""
    template = templating.environment().get_template("protocol.md.j2")
    return template.render(
        generated=comment_text(protocol.source),
        title=f"# {inline(protocol.id)} — {inline(protocol.title)}",
        version=inline(protocol.version) if protocol.version is not None else None,
        notes=[inline(note) for note in protocol.notes],
        source=code_span(protocol.source),
        source_hash=code_span(protocol.source_hash),
        guide=_READING_GUIDE,
        sections=[
            _Section("Inclusion criteria", _criteria_blocks(protocol.inclusion)),
            _Section("Exclusion criteria", _criteria_blocks(protocol.exclusion)),
            _Section("Definitions", tuple(_definition_block(d) for d in protocol.definitions)),
            *([_Section("Derived values", tuple(_value_block(v) for v in protocol.values))]
              if protocol.values else []),
        ],
        tables=_glossary(protocol),
    )


def inline(value: str) -> str:
    """User text (a title, note or label) on one line, unable to open a block or markup."""
    value = _LINE_BREAKS.sub(" ", value).strip()
    value = _SPECIAL.sub(lambda m: "&amp;" if m[0] == "&" else "\\" + m[0], value)
    return _BLOCK_START.sub(lambda m: "\\" + m[0] if not m[0].isdigit() else m[0] + "\\", value)


def comment_text(value: str) -> str:
    """Text that stays inside an HTML comment on one line: `&`, `<` and `>` as entities, every
    `--` broken by `&#45;` (so nothing can close or nest the comment), and characters that are not
    printable (line breaks among them) as numeric references. `html.unescape` gives `value` back."""
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    value = "".join(c if c.isprintable() else f"&#x{ord(c):x};" for c in value)
    return value.replace("--", "-&#45;")


def code_span(value: str) -> str:
    """A code span that holds `value` verbatim, whatever backticks it contains."""
    value = _LINE_BREAKS.sub(" ", value)
    fence = "`" * (max((len(run) for run in re.findall("`+", value)), default=0) + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def _criteria_blocks(criteria: tuple[ir.Criterion, ...]) -> tuple[_Block, ...]:
    return tuple(block for criterion in criteria for block in _criterion_blocks(criterion, 3))


def _criterion_blocks(criterion: ir.Criterion, level: int) -> list[_Block]:
    """The criterion's block, then its sub-criteria's, one heading level down (at most h6)."""
    heading = f"{'#' * min(level, 6)} {inline(criterion.id)} {inline(criterion.title)}"
    rule = {"any": "Any one of the following:",
            "at_least": f"At least {criterion.at_least} of the following:"}.get(criterion.combine)
    applies = inline(describe(criterion.applies)) if criterion.applies is not None else None
    lines = tuple(i for i in criterion.items if isinstance(i, ir.Line | ir.When))
    block = _Block(heading, applies, rule, _bullets(lines, 0), tuple(map(inline, criterion.notes())))
    return [block] + [b for child in criterion.children() for b in _criterion_blocks(child, level + 1)]


def _definition_block(definition: ir.Definition) -> _Block:
    name = code_span(definition.name)
    heading = f"### {inline(definition.label)} ({name})" if definition.label else f"### {name}"
    notes = tuple(map(inline, definition.notes()))
    return _Block(heading, None, None, _bullets(definition.lines(), 0), notes)


def _value_block(value: ir.ValueDefinition) -> _Block:
    """A named derived value: its formula (a value chosen by condition, one bullet a branch),
    and the unit it is given in."""
    name = code_span(value.name)
    heading = f"### {inline(value.label)} ({name})" if value.label else f"### {name}"
    unit = f" (in {value.unit})" if value.unit else ""
    formula = value.value
    if isinstance(formula, ir.Choice):
        bullets = [_Bullet(0, inline(f"When {describe(c)}: {describe_num(v)}")) for c, v in formula.branches]
        bullets.append(_Bullet(0, inline(f"Otherwise: {describe_num(formula.otherwise)}")))
        return _Block(heading, None, f"Computed{unit} as:", tuple(bullets), ())
    return _Block(heading, None, None, (_Bullet(0, inline(f"Computed{unit} as {describe_num(formula)}")),), ())


def _bullets(lines: tuple[ir.Line | ir.When, ...], depth: int) -> tuple[_Bullet, ...]:
    """Lines as bullets; a `when` around one line stays on its bullet, a longer one nests."""
    out: list[_Bullet] = []
    for line in lines:
        if isinstance(line, ir.Line):
            out += _expr_bullets(line.expr, depth, "")
        elif len(line.body) == 1 and isinstance(line.body[0], ir.Line):
            out += _expr_bullets(line.body[0].expr, depth, f"When {describe(line.condition)}: ")
        else:
            out.append(_Bullet(depth, inline(f"When {describe(line.condition)}:")))
            out += _bullets(line.body, depth + 1)
    return tuple(out)


def _expr_bullets(expr: ir.Expr, depth: int, lead: str) -> list[_Bullet]:
    """One bullet, except lists of alternatives (`at least N of`, three or more `or`s), whose
    parts read better one per sub-bullet."""
    if isinstance(expr, ir.AtLeast) or (isinstance(expr, ir.Or) and len(expr.operands) > 2):
        heading = count_heading(expr) if isinstance(expr, ir.AtLeast) else "any of"
        parts = [_Bullet(depth + 1, inline(describe(operand))) for operand in expr.operands]
        return [_Bullet(depth, inline(f"{lead}{heading}:")), *parts]
    return [_Bullet(depth, inline(lead + describe(expr)))]


def _glossary(protocol: ir.Protocol) -> list[_Table]:
    """Patient fields, then records, then enums, each in declaration order."""
    tables = [_Table("### Patient", _FIELD_COLUMNS, _field_rows(protocol.fields))]
    tables += [_Table(f"### Record {_titled(r.name, r.label)}", _FIELD_COLUMNS, _field_rows(r.fields))
               for r in protocol.records]
    tables += [_Table(f"### Enum {_titled(e.name, e.label)}", _MEMBER_COLUMNS,
                     tuple((code_span(name), _cell(label)) for name, label in e.members))
               for e in protocol.enums]
    tables += [_Table(f"### Equivalence table {_titled(t.name, t.label)}", _EQUIVALENCE_COLUMNS,
                      tuple((_cell(t.enum.label_of(member)), inline(_factor(factor))) for member, factor in t.factors))
               for t in protocol.equivalences]
    return tables


# A dose of the agent, times its factor, is the equivalent dose of the table's reference agent.
_EQUIVALENCE_COLUMNS = ("Agent", "Factor (1 of the agent is worth this much of the reference)")


def _factor(value: Decimal) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _field_rows(fields: tuple[ir.Field, ...]) -> tuple[tuple[str, ...], ...]:
    return tuple(
        (code_span(f.name), _cell(f.label), inline(_typed(f)),
         "optional (null means none)" if f.optional else "required")
        for f in fields
    )


def _typed(field: ir.Field) -> str:
    """A field's type, and the values a record may hold when the schema bounds them."""
    if field.plausible is None:
        return describe_field_type(field)
    return f"{describe_field_type(field)}, plausible from {field.plausible.text}"


def _titled(name: str, label: str | None) -> str:
    return f"{code_span(name)} — {inline(label)}" if label else code_span(name)


def _cell(value: str | None) -> str:
    return inline(value) if value else "—"
