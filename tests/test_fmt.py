"""`crit fmt`: the canonical layout, comments kept, and never a change of meaning.

The properties run on random protocols (tests/strategies.py) and on JY231, with their
whitespace perturbed, comments and blank lines inserted and parenthesised lists broken over
lines: the checked protocol must be the same before and after, and formatting twice must
change nothing more.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, compile_text
from crit.tools import fmt as fmt_module
from crit.tools.fmt import FormatError, fmt_command, format_source
from crit.tools.lint import structure
from strategies import protocols

JY231 = (ROOT / "protocols" / "jy231.crit").read_text(encoding="utf-8")
SCHEMA = (ROOT / "protocols" / "schemas" / "autoimmune.crit").read_text(encoding="utf-8")

MESSY = '''\
# leading comment


protocol   T "Messy"   # on the header
     version "1"
enum Dx   "Diagnosis"
    a  "A"
       # deep inside the enum
    b
# leads into the record
record Item
 ok : bool
 n:integer?  "N"
patient
   age:integer
   hb: quantity   g / L also g/dL , mg/dL
   plt: quantity 10 ^ 9/L
   items: list of Item
define d0 "x" : age>=18
define d1
      any of ( age > 1 ,age<3 )
inclusion

   I1 "t"   requires at least 1   when age>=1
         age between 18 and 75   # range
         hb >= 6 g/dL
         plt >= 20 x 10^9 / L
         any( items where ok and n>=2)
         at least 2 of (d0,
   d1,   # d1 note
               # own line in the list

       age < 3
           )
         when age>3 : d0
         when age > 5:
              d1
         note "n"
   # end of I1
exclusion
   E1 "e"
     not ( age >= 5 )
# final comment
'''

TIDY = '''\
# leading comment

protocol T "Messy"  # on the header
  version "1"

enum Dx "Diagnosis"
  a "A"
  # deep inside the enum
  b

# leads into the record
record Item
  ok: bool
  n: integer? "N"

patient
  age: integer
  hb: quantity g/L also g/dL, mg/dL
  plt: quantity 10^9/L
  items: list of Item

define d0 "x": age >= 18
define d1
  any of (age > 1, age < 3)

inclusion
  I1 "t" requires at least 1 when age >= 1
    age between 18 and 75  # range
    hb >= 6 g/dL
    plt >= 20 x 10^9/L
    any(items where ok and n >= 2)
    at least 2 of (d0,
        d1,  # d1 note
        # own line in the list
        age < 3
    )
    when age > 3: d0
    when age > 5:
      d1
    note "n"
  # end of I1

exclusion
  E1 "e"
    not (age >= 5)
# final comment
'''


def meaning(source: str, schema: str | None = None) -> object:
    """The checked protocol, positions aside."""
    return structure(compile_text(source, schema=schema))


def test_the_canonical_layout() -> None:
    assert format_source(MESSY, "messy.crit") == TIDY


def test_formatting_is_idempotent_and_keeps_the_meaning() -> None:
    assert format_source(TIDY, "messy.crit") == TIDY
    assert meaning(TIDY) == meaning(MESSY)


def test_every_comment_is_kept() -> None:
    comments = [line.split("#", 1)[1] for line in MESSY.splitlines() if "#" in line]
    assert [line.split("#", 1)[1] for line in TIDY.splitlines() if "#" in line] == comments


def test_jy231_and_its_schema_are_already_formatted() -> None:
    assert format_source(JY231, "jy231.crit") == JY231
    assert format_source(SCHEMA, "autoimmune.crit") == SCHEMA


def test_windows_line_endings_and_a_missing_final_newline() -> None:
    assert format_source(TIDY.replace("\n", "\r\n").rstrip("\r\n"), "t.crit") == TIDY


def test_top_level_blocks_are_separated_but_groups_of_imports_and_definitions_are_kept() -> None:
    source = 'protocol P "t"\nimport "a.crit"\nimport "b.crit"\ndefine x: true\ndefine y: true\n' \
             'patient\n  n: integer\ninclusion\n  I1 "i"\n    x\n'
    assert format_source(source, "p.crit") == (
        'protocol P "t"\n\nimport "a.crit"\nimport "b.crit"\n\ndefine x: true\ndefine y: true\n\n'
        'patient\n  n: integer\n\ninclusion\n  I1 "i"\n    x\n')


def test_a_file_that_does_not_parse_is_reported_not_formatted(tmp_path: Path) -> None:
    bad = tmp_path / "bad.crit"
    bad.write_text('protocol P "t"\ninclusion\n  I1 "i"\n    age >= \n', encoding="utf-8")
    result = CliRunner().invoke(fmt_command, [str(bad)])
    assert result.exit_code == 1
    assert "error[E003]: unexpected end of line" in result.stderr
    assert bad.read_text(encoding="utf-8").endswith(">= \n")


def test_the_safety_net_refuses_a_change_of_meaning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fmt_module, "_render", lambda items: TIDY.replace(">= 18", ">= 19"))
    with pytest.raises(FormatError, match="would change its meaning"):
        format_source(MESSY, "messy.crit")


# ---- the command ----------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "sub").mkdir()
    (tmp_path / "messy.crit").write_text(MESSY, encoding="utf-8")
    (tmp_path / "sub" / "tidy.crit").write_text(TIDY, encoding="utf-8")
    return tmp_path


def test_check_names_the_files_that_would_change_and_writes_nothing(files: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(files)
    result = CliRunner().invoke(fmt_command, ["--check", "."])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == "would reformat messy.crit\n1 file would be reformatted, 1 file already formatted\n"
    assert (files / "messy.crit").read_text(encoding="utf-8") == MESSY


def test_diff_prints_a_unified_diff_and_writes_nothing(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(files)
    result = CliRunner().invoke(fmt_command, ["--diff", "messy.crit"])
    assert result.exit_code == 0
    assert result.stdout.startswith("--- messy.crit (before)\n+++ messy.crit (formatted)\n@@ ")
    assert "-protocol   T \"Messy\"   # on the header\n" in result.stdout
    assert "+protocol T \"Messy\"  # on the header\n" in result.stdout
    assert result.stderr == "1 file would be reformatted, 0 files already formatted\n"
    assert (files / "messy.crit").read_text(encoding="utf-8") == MESSY


def test_fmt_rewrites_files_in_place(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(files)
    result = CliRunner().invoke(fmt_command, ["messy.crit", "sub"])
    assert result.exit_code == 0
    assert result.stderr == "reformatted messy.crit\n1 file reformatted, 1 file already formatted\n"
    assert (files / "messy.crit").read_text(encoding="utf-8") == TIDY
    again = CliRunner().invoke(fmt_command, ["--check", "."])
    assert again.exit_code == 0
    assert again.stderr == "2 files already formatted\n"


def test_fmt_formats_standard_input_to_standard_output() -> None:
    result = CliRunner().invoke(fmt_command, ["-"], input=MESSY)
    assert result.exit_code == 0
    assert result.stdout == TIDY


def test_the_protocols_directory_is_formatted() -> None:
    result = CliRunner().invoke(fmt_command, ["--check", str(ROOT / "protocols")])
    assert result.exit_code == 0, result.stderr


# ---- properties ------------------------------------------------------------------------------
#
# CRIT_FMT_EXAMPLES sets the number of random protocols (default 20, so the file runs in
# seconds; the figures in the README's "Tools" section come from a run with 2000).

_EXAMPLES = int(os.environ.get("CRIT_FMT_EXAMPLES", "20"))
_SETTINGS = settings(max_examples=_EXAMPLES, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_SCHEMA = """\
enum Color "Colour"
  a "A"
  b
  c "C"

record Item "An item"
  ok: bool
  n: integer "N"
  day: date

patient
  screening: date "Screening"
  age: integer "Age"
  score: decimal
  hb: quantity g/L also g/dL "Hemoglobin"
  plt: quantity 10^9/L also 10^3/uL
  egfr: quantity mL/min/1.73m2
  ast: lab U/L
  ana: titer
  dx: Color
  tags: set of Color
  seen: date?
  flag: bool
  fit: judgment
  items: list of Item
  code: text
"""

# Well-typed conditions on the schema above, covering every form of the language.
_ATOMS = (
    "age >= 18", "age > 74", "age < 19", "age between 18 and 75", "score > 2.5", "score <= 0.25", "hb >= 60 g/L",
    "hb < 6.5 g/dL", "plt >= 20 x 10^9/L", "plt >= 20 × 10^3/uL", "egfr >= 30 mL/min/1.73m2",
    "ast <= 3.0 x ULN", "ast < 40 U/L", "ana > 1:80", "ana ≥ 1:160", "dx is a", "dx is not b",
    "dx is any of (a, c)", "tags has a", "tags has any of (a, b)", "tags has all of (b, c,)",
    "seen within 4 weeks before screening", "seen at least 1 year after screening",
    "screening > 2025-01-01", "flag", "not flag", "flag = true", "fit", 'code = "x y"',
    'code != "a # not a comment"', "any(items where ok)", "all(items where n >= 2)",
    "count(items where ok and n < 3) >= 2", "count(items) < 2",
    "any(items where day within 2 weeks before screening)", "d0", "d1",
)


@st.composite
def _condition(draw: st.DrawFn, depth: int = 0, pool: tuple[str, ...] = _ATOMS) -> str:
    form = draw(st.integers(0, 6)) if depth < 1 else 0
    if form <= 2:
        return draw(st.sampled_from(pool))
    parts = draw(st.lists(_condition(depth + 1, pool), min_size=2, max_size=3))
    if form == 3:
        return " and ".join(parts)
    if form == 4:
        return "(" + " or ".join(parts) + ")"
    if form == 5:
        return f"not ({parts[0]})"
    word = draw(st.sampled_from(["any of", "all of", f"at least {draw(st.integers(1, len(parts)))} of"]))
    return f"{word} ({', '.join(parts)})"


@st.composite
def _criterion(draw: st.DrawFn, ident: str, depth: int) -> list[str]:
    pad = "  " * (depth + 1)
    items: list[list[str]] = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 5))
        if kind == 4:
            items.append([f"when {draw(_condition(1))}: {draw(_condition(1))}"])
        elif kind == 5:
            body = draw(st.lists(_condition(1), min_size=1, max_size=2))
            items.append([f"when {draw(_condition(1))}:", *(f"  {line}" for line in body)])
        else:
            items.append([draw(_condition())])
    children = draw(st.integers(0, 1)) if depth < 2 else 0
    combine = draw(st.sampled_from(["", "", " requires any", " requires all",
                                    f" requires at least {draw(st.integers(1, len(items) + children))}"]))
    applies = f" when {draw(_condition(1))}" if draw(st.integers(0, 3)) == 0 else ""
    lines = [f'{pad}{ident} "Criterion {ident} (see #2)"{combine}{applies}']
    lines += [f"{pad}  {line}" for item in items for line in item]
    for number in range(1, children + 1):
        lines += draw(_criterion(f"{ident}.{number}", depth + 1))
    if draw(st.booleans()):
        lines.append(f'{pad}  note "A note for {ident}: \\"quoted\\"."')
    return lines


@st.composite
def well_typed_protocols(draw: st.DrawFn) -> str:
    """A protocol over a fixed schema, built from every statement and condition form."""
    header = ['protocol R "A random protocol"']
    if draw(st.booleans()):
        header += ['  version "1"', '  note "A header note."']
    definitions = [f'define d0 "Zero": {draw(_condition(1, _ATOMS[:-2]))}',
                   'define d1 "One"', *(f"  {c}" for c in draw(st.lists(_condition(1, _ATOMS[:-1]), min_size=1,
                                                                          max_size=2)))]
    blocks = [header, ['import "elsewhere.crit"'], _SCHEMA.strip().split("\n"), definitions]
    for section, prefix in (("inclusion", "I"), ("exclusion", "E")):
        lines = [section]
        for number in range(1, draw(st.integers(1, 2)) + 1):
            lines += draw(_criterion(f"{prefix}{number}", 0))
        blocks.append(lines)
    return "\n\n".join("\n".join(block) for block in blocks) + "\n"


def _outside_strings(line: str) -> list[tuple[bool, str]]:
    """The line cut into (is code, text) pieces, so text inside quotes is never touched."""
    pieces = re.split(r'("(?:[^"\\]|\\.)*")', line)
    return [(index % 2 == 0, piece) for index, piece in enumerate(pieces)]


def perturbed(source: str, rnd: random.Random, comments: bool = True) -> str:
    """The same protocol with other indentation widths and spacing, and (if `comments`)
    comments, blank lines, and parenthesised lists broken over lines."""
    widths = [0]
    for _ in range(8):
        widths.append(widths[-1] + rnd.randint(1, 4))
    out: list[str] = []
    for line in source.splitlines():
        if not line.strip():
            out.append(" " * rnd.randint(0, 3) if comments else "")
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        if line.lstrip().startswith("#"):  # its text stays; its indentation says which block it is in
            out.append(" " * (rnd.randint(0, 12) if comments else widths[depth]) + line.strip())
            continue
        pieces = []
        parens = 0
        for code, piece in _outside_strings(line.strip()):
            if code:
                chars = []
                for char in piece:
                    if char == " ":
                        char = " " * rnd.randint(1, 3)
                    elif char in "(,/^":
                        char += " " * rnd.randint(0, 2)
                    elif char == ")":
                        char = " " * rnd.randint(0, 2) + char
                    parens += {"(": 1, ")": -1}.get(char.strip(), 0)
                    chars.append(char)
                    if char.startswith(",") and parens > 0 and comments and rnd.randint(0, 3) == 0:
                        chars.append("  # a list item\n" + " " * rnd.randint(0, 12))
                piece = "".join(chars)
            pieces.append(piece)
        text = " " * widths[depth] + "".join(pieces)
        if comments and rnd.randint(0, 4) == 0:
            text += " " * rnd.randint(0, 3) + "# after a line"
        out.append(text)
        if comments and rnd.randint(0, 5) == 0:
            out.append(" " * rnd.randint(0, 10) + "# a line of its own")
        if comments and rnd.randint(0, 6) == 0:
            out.append("")
    return "\n".join(out) + "\n"


def _non_blank(text: str) -> str:
    return "".join(text.split())


@_SETTINGS
@given(well_typed_protocols(), st.randoms(use_true_random=False))
def test_random_protocols_keep_their_meaning_and_comments(source: str, rnd: random.Random) -> None:
    """Same meaning, idempotent, whitespace-only; and whitespace alone never changes the layout."""
    messy = perturbed(source, rnd)
    tidy = format_source(messy, "r.crit")
    assert meaning(tidy) == meaning(source)
    assert format_source(tidy, "r.crit") == tidy
    assert _non_blank(tidy) == _non_blank(messy)  # only whitespace changes; every comment stays
    assert format_source(perturbed(source, rnd, comments=False), "r.crit") == format_source(source, "r.crit")


@settings(max_examples=max(_EXAMPLES // 4, 3) if _EXAMPLES > 20 else 3, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(protocols(), st.randoms(use_true_random=False))
def test_the_semantics_generator_protocols_keep_their_meaning(case: tuple[str, object], rnd: random.Random) -> None:
    source, _ = case
    tidy = format_source(perturbed(source, rnd), "r.crit")
    assert meaning(tidy) == meaning(source)
    assert format_source(tidy, "r.crit") == tidy


_JY231_MEANING = meaning(JY231, SCHEMA)


@settings(max_examples=max(_EXAMPLES // 4, 4), deadline=None, derandomize=True)
@given(st.randoms(use_true_random=False))
def test_jy231_with_perturbed_whitespace(rnd: random.Random) -> None:
    assert format_source(perturbed(JY231, rnd, comments=False), "jy231.crit") == JY231
    tidy = format_source(perturbed(JY231, rnd), "jy231.crit")
    assert meaning(tidy, SCHEMA) == _JY231_MEANING
    assert format_source(tidy, "jy231.crit") == tidy
