"""The Markdown rendering and the English it is written in: golden files, stability, escaping."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import ROOT, compile_text
from crit import ir
from crit.driver import load
from crit.emit.markdown import emit_markdown
from crit.english import describe, describe_type

Golden = Callable[[str, str], None]

# Enum, quantity with `also`, lab × ULN, window, `when`, `requires any` with sub-criteria,
# `applies when`, a definition with a note, and list quantifiers.
SMALL = '''\
protocol T1 "Small trial"
  version "1"
  note "A protocol note."

enum Sex "Sex"
  female "Female"
  male "Male"

enum Disease "Disease"
  SLE "Systemic lupus erythematosus (SLE)"
  SSc "Systemic sclerosis (SSc)"
  DM "Dermatomyositis (DM)"

record Treatment "A course of treatment"
  immunosuppressive: bool "Immunosuppressant"
  start: date "First dose"
  end: date "Last dose"

patient
  screening: date "Screening visit date"
  age: integer "Age"
  sex: Sex "Sex"
  diagnosis: Disease "Primary autoimmune diagnosis"
  hemoglobin: quantity g/L also g/dL "Hemoglobin"
  ast: lab U/L "AST"
  last_live_vaccine: date? "Latest live vaccine"
  pregnant: bool "Pregnant"
  treatments: list of Treatment "Immunosuppressive treatment history"
  unsuitable: judgment "Unsuitable for the trial"

define long_courses "Two courses of at least 6 months"
  count(treatments where immunosuppressive and end at least 6 months after start) >= 2
  note "Courses, not agents."

inclusion
  I1 "Age and blood"
    age between 18 and 75
    hemoglobin >= 60 g/L
    ast <= 3.0 x ULN
  I2 "Diagnosis" requires any
    I2.1 "SLE"
      diagnosis is SLE
    I2.2 "SSc or DM"
      diagnosis is any of (SSc, DM)
  I3 "Treated" when diagnosis is SLE
    long_courses
    any(treatments where immunosuppressive)

exclusion
  E1 "Vaccine, pregnancy or unsuitability" requires any
    last_live_vaccine within 4 weeks before screening
    when sex is female: pregnant
    unsuitable
'''

# Sets, titers, `requires at least`, `not`, a `when` block, `at least N of`, unlabelled names.
COUNTS = '''\
protocol T2 "Sets and counts"

enum Antibody
  Jo1 "anti-Jo-1"
  PL7 "anti-PL-7"
  MDA5

record Course
  agent: text
  start: date
  end: date?

patient
  screening: date
  ana: titer "ANA"
  antibodies: set of Antibody "Antibodies found positive"
  platelets: quantity 10^9/L also 10^3/uL "Platelet count"
  courses: list of Course
  consented: bool
  ecog: integer

define both_antibodies
  antibodies has all of (Jo1, PL7)

inclusion
  I1 "Two of three" requires at least 2
    ana > 1:80
    platelets >= 20 x 10^9/L
    not both_antibodies
  I2 "Nested when"
    when consented:
      ecog <= 1
      all(courses where end within 1 year after start)
    at least 2 of (ana >= 1:160, antibodies has MDA5, not (ecog = 0 or ecog = 1))

exclusion
  E1 "No course at all"
    not any(courses)
    note "An empty history."
'''


@pytest.mark.parametrize(("name", "source"), [("small.md", SMALL), ("counts.md", COUNTS)])
def test_small_protocols_match_golden(golden: Golden, name: str, source: str) -> None:
    golden(name, emit_markdown(compile_text(source)))


def test_jy231_matches_golden(golden: Golden, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the header names the source relative to the working directory
    golden("jy231.md", emit_markdown(load(Path("protocols/jy231.crit"))))


def test_rendering_is_byte_stable() -> None:
    protocol = compile_text(SMALL)
    first = emit_markdown(protocol)
    assert first == emit_markdown(compile_text(SMALL)) == emit_markdown(protocol)
    assert first.endswith("\n") and not first.endswith("\n\n")
    assert "\n\n\n" not in first


# Escapes (`\\n`, `\\"`) are read by the .crit lexer; \u2028, \u2029 and \r go in raw.
HOSTILE = 'Evil\\n# Injected\\n| a | b |\\n\\"\\"\\"\u2028> quote\u2029- item\r<!-- x`y *z* #'


def test_hostile_text_cannot_break_structure() -> None:
    source = f'''\
protocol H1 "{HOSTILE}"
  version "{HOSTILE}"
  note "{HOSTILE}"

enum Kind "{HOSTILE}"
  a "{HOSTILE}"
  b "# {HOSTILE}"

patient
  kind: Kind "| {HOSTILE}"
  flag: bool "1. {HOSTILE}"

define odd "{HOSTILE}"
  flag
  note "{HOSTILE}"

inclusion
  I1 "{HOSTILE}"
    kind is a
    note "{HOSTILE}"
    note "- {HOSTILE}"

exclusion
  E1 "# {HOSTILE}" requires any
    flag
    odd
'''
    text = emit_markdown(compile_text(source))
    assert not any(c in text for c in "\r\v\f\x85\u2028\u2029")
    assert not re.search(r"(?<!\\)<[!/A-Za-z]", text), "raw HTML would reach the renderer"
    lines = text.split("\n")
    assert [line.split(" ")[:2] for line in lines if line.startswith("#")] == [
        ["#", "H1"], ["##", "Inclusion"], ["###", "I1"], ["##", "Exclusion"], ["###", "E1"],
        ["##", "Definitions"], ["###", "Evil"], ["##", "Glossary"], ["###", "Patient"], ["###", "Enum"],
    ]
    # Each line is one of the template's own: user text never starts a line.
    starts = ("#", "> Note: ", "- ", "| ", "Version ", "Generated by", "A patient is", "Any one of")
    assert all(line == "" or line.startswith(starts) for line in lines), text
    for line in lines:
        if line.startswith("|"):  # a table row has exactly its columns: no cell leaked a `|`
            assert len(re.findall(r"(?<!\\)\|", line)) in (3, 5), line
        else:
            assert not re.search(r"(?<!\\)[|#]", line.lstrip("#")), f"unescaped | or # in: {line}"


SCHEMA = '''\
enum Disease "Disease"
  SLE "Systemic lupus erythematosus (SLE)"
  SS "Sjögren's syndrome (SS)"
  DM "Dermatomyositis (DM)"

enum Antibody "Antibody"
  Jo1 "anti-Jo-1"
  PL7 "anti-PL-7"
  MDA5 "anti-MDA-5"

record Treatment
  immunosuppressive: bool "Immunosuppressant"
  start: date "First dose"
  end: date "Last dose"

patient
  screening: date "Screening visit date"
  diagnosis_date: date "Date of diagnosis"
  age: integer "Age"
  diagnosis: Disease "Primary autoimmune diagnosis"
  antibodies: set of Antibody "Myositis antibodies"
  hemoglobin: quantity g/L also g/dL "Hemoglobin"
  platelets: quantity 10^9/L "Platelet count"
  ast: lab U/L "AST"
  ana: titer "ANA"
  ecog: integer
  last_live_vaccine: date? "Latest live vaccine"
  pregnant: bool "Pregnant"
  consented: bool "Consent signed"
  unsuitable: judgment "Unsuitable"
  treatments: list of Treatment "Immunosuppressive treatment history"

define refractory "Refractory disease"
  consented
'''


@pytest.mark.parametrize(("line", "english"), [
    ("hemoglobin >= 60 g/L", "Hemoglobin ≥ 60 g/L"),
    ("hemoglobin >= 6 g/dL", "Hemoglobin ≥ 6 g/dL"),
    ("platelets >= 20 x 10^9/L", "Platelet count ≥ 20 × 10^9/L"),
    ("age between 18 and 75", "Age between 18 and 75 (inclusive)"),
    ("not age between 18 and 75", "Age not between 18 and 75 (inclusive)"),
    ("ast <= 3.0 x ULN", "AST ≤ 3.0 × ULN"),
    ("ana > 1:80", "ANA > 1:80"),
    ("ecog != 2", "ecog ≠ 2"),
    ("not ecog < 2", "ecog ≥ 2"),
    ("diagnosis is SLE", "Primary autoimmune diagnosis is Systemic lupus erythematosus (SLE)"),
    ("diagnosis is not DM", "Primary autoimmune diagnosis is not Dermatomyositis (DM)"),
    ("diagnosis is any of (SLE, SS, DM)", "Primary autoimmune diagnosis is one of "
     "Systemic lupus erythematosus (SLE), Sjögren's syndrome (SS) or Dermatomyositis (DM)"),
    ("not diagnosis is any of (SLE, SS)", "Primary autoimmune diagnosis is none of "
     "Systemic lupus erythematosus (SLE) or Sjögren's syndrome (SS)"),
    ("antibodies has Jo1", "Myositis antibodies includes anti-Jo-1"),
    ("antibodies has any of (Jo1, PL7)", "Myositis antibodies includes any of anti-Jo-1 or anti-PL-7"),
    ("antibodies has all of (Jo1, PL7, MDA5)",
     "Myositis antibodies includes all of anti-Jo-1, anti-PL-7 and anti-MDA-5"),
    ("last_live_vaccine within 4 weeks before screening",
     "Latest live vaccine within 4 weeks before Screening visit date"),
    ("screening at least 1 year after diagnosis_date",
     "Screening visit date at least 1 year after Date of diagnosis"),
    ("not last_live_vaccine within 1 day before screening",
     "Latest live vaccine not within 1 day before Screening visit date"),
    ("pregnant", "Pregnant"),
    ("not pregnant", "not (Pregnant)"),
    ("pregnant = false", "not (Pregnant)"),
    ("unsuitable", "investigator's judgment: Unsuitable"),
    ("refractory", "Refractory disease"),
    ("true", "always"),
    ("not true", "never"),
    ("pregnant and consented or unsuitable",
     "(Pregnant and Consent signed) or investigator's judgment: Unsuitable"),
    ("not (pregnant or consented)", "not (Pregnant or Consent signed)"),
    ("pregnant and diagnosis is any of (SLE, DM)", "Pregnant and (Primary autoimmune diagnosis is "
     "one of Systemic lupus erythematosus (SLE) or Dermatomyositis (DM))"),
    ("at least 2 of (pregnant, consented, age >= 18)", "at least 2 of: Pregnant; Consent signed; Age ≥ 18"),
    ("any of (pregnant, consented)", "any of: Pregnant; Consent signed"),
    ("all of (pregnant, consented)", "all of: Pregnant; Consent signed"),
    ("any(treatments where immunosuppressive)",
     "any Treatment in Immunosuppressive treatment history with Immunosuppressant"),
    ("not any(treatments where immunosuppressive)",
     "no Treatment in Immunosuppressive treatment history with Immunosuppressant"),
    ("any(treatments where not (immunosuppressive or end within 1 month after start))",
     "any Treatment in Immunosuppressive treatment history other than those with "
     "Immunosuppressant or Last dose within 1 month after First dose"),
    ("pregnant or any(treatments where immunosuppressive and start within 1 year before screening)",
     "Pregnant or (any Treatment in Immunosuppressive treatment history with Immunosuppressant and "
     "First dose within 1 year before Screening visit date)"),
    ("all(treatments where not immunosuppressive)",
     "every Treatment in Immunosuppressive treatment history with not (Immunosuppressant)"),
    ("all(treatments where end at least 6 months after start)", "every Treatment in Immunosuppressive "
     "treatment history with Last dose at least 6 months after First dose"),
    ("count(treatments where immunosuppressive and end at least 6 months after start) >= 2",
     "the number of Treatment entries in Immunosuppressive treatment history with (Immunosuppressant "
     "and Last dose at least 6 months after First dose) is ≥ 2"),
    ("not count(treatments) >= 2",
     "the number of Treatment entries in Immunosuppressive treatment history is < 2"),
    ("consented and count(treatments where immunosuppressive) >= 1", "Consent signed and (the number of "
     "Treatment entries in Immunosuppressive treatment history with Immunosuppressant is ≥ 1)"),
])
def test_describe(line: str, english: str) -> None:
    protocol = compile_text(f'protocol T "t"\n\ninclusion\n  I1 "x"\n    {line}\n', schema=SCHEMA)
    item = protocol.inclusion[0].items[0]
    assert isinstance(item, ir.Line)
    assert describe(item.expr) == english


@pytest.mark.parametrize(("field", "english"), [
    ("hemoglobin", "quantity in g/L (also g/dL)"),
    ("ast", "lab value in U/L with its own ULN"),
    ("diagnosis", "one of Disease"),
    ("antibodies", "set of Antibody"),
    ("treatments", "list of Treatment"),
    ("unsuitable", "judgment (recorded by the investigator)"),
    ("age", "whole number"),
    ("ana", "titer (1:N)"),
])
def test_describe_type(field: str, english: str) -> None:
    protocol = compile_text('protocol T "t"\n\ninclusion\n  I1 "x"\n    true\n', schema=SCHEMA)
    (found,) = [f for f in protocol.fields if f.name == field]
    assert describe_type(found.type) == english
