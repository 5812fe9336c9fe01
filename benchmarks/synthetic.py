"""Synthetic protocols of any size, to show how compile time grows with the number of criteria.

Each has the same schema (every field type crit knows, a record list, a judgment, definitions)
and N criteria built from the same mix of lines as JY231: comparisons with units and ULN
multiples, ranges, enum and set tests, date windows, list quantifiers and counts, `when`
lines, sub-criteria with conditions, `requires any`. Criteria count sub-criteria.
"""

from __future__ import annotations

SCHEMA = '''enum Kind "Kind"
  a "A"
  b "B"
  c "C"

record Course "A course"
  drug: text
  immune: bool
  start: date
  end: date

patient
  screening: date
  age: integer
  score: integer
  index: decimal
  hb: quantity g/L also g/dL
  alt: lab U/L
  ana: titer
  kind: Kind
  tags: set of Kind
  flag: bool
  other: bool
  event: date?
  courses: list of Course
  fit: judgment

define adult "Adult": age >= 18
define active "Active"
  score >= 5 or index > 1.5
  adult
'''

LINES = (
    "age between {a} and {b}",
    "hb >= {c} g/L",
    "alt <= {k}.5 x ULN",
    "ana > 1:{t}",
    "kind is any of (a, b)",
    "tags has any of (b, c)",
    "event within {w} weeks before screening",
    "count(courses where immune and end at least {m} months after start) >= 2",
    "any(courses where drug = \"x{a}\")",
    "when flag: score >= {a}",
    "not other or active",
    "at least 2 of (flag, other, adult, active)",
)


def _line(n: int, k: int) -> str:
    template = LINES[(n + k) % len(LINES)]
    return template.format(a=n % 40 + 1, b=n % 40 + 30, c=50 + n % 30, k=1 + n % 3, t=40 * 2 ** (n % 3),
                           w=1 + n % 8, m=1 + n % 11)


def protocol(criteria: int) -> str:
    """A protocol with `criteria` criteria (top level and nested), half inclusion, half exclusion."""
    out = [f'protocol SYN{criteria} "A synthetic protocol of {criteria} criteria"', '  version "1"', "", SCHEMA]
    sections: dict[str, list[str]] = {"inclusion": [], "exclusion": []}
    made = top = 0
    while made < criteria:
        top += 1
        section = "inclusion" if top % 2 else "exclusion"
        prefix = "I" if section == "inclusion" else "E"
        ident = f"{prefix}{(top + 1) // 2}"
        body = sections[section]
        if top % 5 == 0 and criteria - made >= 3:
            body.append(f'  {ident} "Criterion {ident}" requires any')
            for sub in (1, 2):
                body.append(f'    {ident}.{sub} "Sub-criterion {ident}.{sub}"' + (" when fit" if sub == 2 else ""))
                body += [f"      {_line(top, sub)}", f"      {_line(top, sub + 3)}"]
            made += 3
        else:
            body.append(f'  {ident} "Criterion {ident}"' + (" when kind is c" if top % 7 == 0 else ""))
            body += [f"    {_line(top, 0)}", f"    {_line(top, 1)}"]
            made += 1
    for section, body in sections.items():
        if body:
            out += [section, *body, ""]
    return "\n".join(out)
