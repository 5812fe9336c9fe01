"""The screening report: counts per criterion, CONSORT attrition, near misses and the facts to
collect, rendered as Markdown and as one self-contained HTML page."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

from click.testing import CliRunner

from conftest import ROOT
from crit import files
from crit.screening import report
from crit.screening.report import Criterion, Tally

CRITERIA = (
    Criterion("I1", "Adult", "inclusion", None),
    Criterion("I2", "Diagnosis | with <b>a pipe</b>", "inclusion", None),
    Criterion("I2.1", "Lupus", "inclusion", "I2"),
    Criterion("E1", "Vaccine", "exclusion", None),
)
MET, NOT, UNK, NA = "met", "not met", "unknown", "not applicable"


def vector(*outcomes: str) -> str:
    return "|".join(outcomes)


def sample() -> Tally:
    tally = Tally(CRITERIA)
    tally.add("eligible", vector(MET, MET, MET, NOT))
    tally.add("eligible", vector(MET, MET, MET, NA))
    tally.add("ineligible", vector(NOT, MET, MET, NOT))  # fails only I1
    tally.add("ineligible", vector(NOT, NOT, NOT, MET))  # fails I1, I2 and E1
    tally.add("ineligible", vector(MET, UNK, UNK, MET), ("diagnosis",))  # fails only E1; I2 unknown
    tally.add("needs review", vector(MET, UNK, UNK, NOT), ("treatments[0].end", "treatments[1].end"))
    tally.add("needs review", vector(UNK, MET, MET, UNK), ("age", "vaccine"))
    tally.add("needs review", vector(MET, MET, MET, UNK), ("vaccine",))
    tally.add_error()
    return tally


def test_outcomes_per_criterion() -> None:
    tally = sample()
    tally.flush()
    assert tally.screened == 8 and tally.errors == 1
    assert tally.outcomes[0] == [5, 2, 1, 0]  # I1: met, not met, unknown, not applicable
    assert tally.outcomes[3] == [2, 3, 2, 1]  # E1
    assert tally.decisions == {"eligible": 2, "ineligible": 3, "needs review": 3}


def test_attrition_in_protocol_order() -> None:
    steps = sample().attrition()
    assert [s["criterion"].id for s in steps] == ["I1", "I2", "E1"]
    assert [s["excluded"] for s in steps] == [2, 0, 1]
    assert [s["remaining"] for s in steps] == [6, 6, 5]
    # undecided among those remaining: after I1, the patient with I1 unknown; after I2, also the two
    # with I2 unknown (one of whom E1 then excludes)
    assert [s["undecided"] for s in steps] == [1, 3, 3]
    assert steps[-1]["remaining"] == 2 + 3  # eligible and needs review


def test_partial_outcomes_count_as_unknown_and_are_undecided_only_where_they_may_refuse() -> None:
    """An exclusion that is "not met or not applicable" leaves the patient decided (eligible);
    one that is "met or not applicable" leaves the patient undecided from that step on."""
    tally = Tally(CRITERIA)
    tally.add("eligible", vector(MET, "met or not applicable", MET, "not met or not applicable"))
    tally.add("needs review", vector(MET, MET, MET, "met or not applicable"), ("sex",))
    tally.flush()
    assert tally.outcomes[1] == [1, 0, 1, 0] and tally.outcomes[3] == [0, 0, 2, 0]  # I2, E1
    assert [s["undecided"] for s in tally.attrition()] == [0, 0, 1]


def test_near_misses_count_patients_failing_one_criterion_alone() -> None:
    misses = {m["criterion"].id: m for m in sample().near_misses()}
    assert (misses["I1"]["only"], misses["I1"]["eligible"], misses["I1"]["review"]) == (1, 1, 0)
    assert (misses["E1"]["only"], misses["E1"]["eligible"], misses["E1"]["review"]) == (1, 0, 1)
    assert misses["I2"]["only"] == 0


def test_what_to_collect_counts_list_items_together() -> None:
    rows = {r["fact"]: r for r in sample().to_collect(judgments=("vaccine",))}
    assert rows["vaccine"]["patients"] == 2 and rows["vaccine"]["alone"] == 1 and rows["vaccine"]["judgment"]
    assert rows["treatments[].end"]["patients"] == 1 and rows["treatments[].end"]["alone"] == 1
    assert rows["age"]["alone"] == 0 and not rows["age"]["judgment"]
    assert next(iter(rows)) == "vaccine"  # most often missing first


def test_tallies_from_several_processes_merge() -> None:
    whole = sample()
    first, second = Tally(CRITERIA), Tally(CRITERIA)
    first.add("eligible", vector(MET, MET, MET, NOT))
    first.add("eligible", vector(MET, MET, MET, NA))
    first.add("ineligible", vector(NOT, MET, MET, NOT))
    first.add("ineligible", vector(NOT, NOT, NOT, MET))
    second.add("ineligible", vector(MET, UNK, UNK, MET), ("diagnosis",))
    second.add("needs review", vector(MET, UNK, UNK, NOT), ("treatments[0].end", "treatments[1].end"))
    second.add("needs review", vector(UNK, MET, MET, UNK), ("age", "vaccine"))
    second.add("needs review", vector(MET, MET, MET, UNK), ("vaccine",))
    second.add_error()
    merged = Tally(CRITERIA)
    merged.merge(first)
    merged.merge(second)
    about = report.About("P", "T", "1", "p.crit", "0" * 64, "in.jsonl")
    assert report.markdown(merged, about) == report.markdown(whole, about)


ABOUT = report.About("P1", "A <script>alert(1)</script> protocol", "2", "p.crit", "ab" * 32, "cohort.jsonl",
                     ("vaccine",))


def test_markdown_report() -> None:
    text = report.markdown(sample(), ABOUT)
    for heading in ("# Screening report: P1", "## Attrition", "## Criteria", "## Near misses", "## What to collect"):
        assert heading in text
    assert "| 1 | `I1` Adult (not met) | 2 | 6 | 1 |" in text
    assert "Diagnosis \\| with \\<b\\>a pipe\\</b\\>" in text  # author text cannot break the table
    assert "| `vaccine` | investigator judgment | 2 | 1 |" in text
    assert "| could not be read | 1 | 11.1% |" in text


def test_html_report_is_one_self_contained_page() -> None:
    page = report.html(sample(), ABOUT)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<svg" in page and "<style>" in page
    assert not re.search(r"<script|<link|<img|<iframe|\bsrc=|\bhref=|url\(|@import|https?:", page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;a pipe&lt;/b&gt;" in page
    assert page.count("<rect class=\"decided\"") == 2 + 3 + 1  # read, could be read, one per step; legend


def test_the_report_of_a_screened_cohort_adds_up(tmp_path: Path) -> None:
    from crit.screening.screen import screen_command

    md, page = tmp_path / "report.md", tmp_path / "report.html"
    result = CliRunner().invoke(screen_command, [str(ROOT / "protocols" / "jy231.crit"),
                                                 str(ROOT / "examples" / "cohort" / "patients.jsonl"),
                                                 "-o", str(tmp_path / "out.jsonl"), "-q", "--report", str(md),
                                                 "--report", str(page)])
    assert result.exit_code == 3  # two unreadable records
    text = md.read_text(encoding="utf-8")
    assert "| records read | 40 |  |" in text and "| could not be read | 2 | 5.0% |" in text
    excluded = sum(int(m) for m in re.findall(r"^\| \d+ \| `[IE]\d+` .*? \| (\d+) \|", text, re.M))
    eligible = int(re.search(r"\*\*eligible\*\* \| \| \*\*(\d+)\*\*", text).group(1))  # type: ignore[union-attr]
    review = int(re.search(r"\*\*needs review\*\* \| \| \*\*(\d+)\*\*", text).group(1))  # type: ignore[union-attr]
    assert excluded + eligible + review == 38
    assert "<svg" in page.read_text(encoding="utf-8")


# ---- issue 8: reports name patients (item 19) ---------------------------------------------------


def test_near_misses_and_facts_name_their_first_patients_in_input_order() -> None:
    tally = Tally(CRITERIA)
    for n in range(1, 14):  # 13 patients failing only I1
        tally.add("ineligible", vector(NOT, MET, MET, NOT), (), f"P{n}")
    tally.add("ineligible", vector(NOT, NOT, NOT, MET), (), "several")  # fails three: no near miss
    tally.add("needs review", vector(MET, MET, MET, UNK), ("vaccine",), "R1")
    tally.add("needs review", vector(UNK, MET, MET, UNK), ("age", "vaccine"), "R2")
    tally.add_error(17, "E1", "age: expected a whole number, got text")
    misses = {m["criterion"].id: m for m in tally.near_misses()}
    assert misses["I1"]["ids"] == [f"P{n}" for n in range(1, report.NAMED + 1)] and misses["I1"]["more"] == 3
    assert misses["E1"]["ids"] == [] and misses["E1"]["more"] == 0
    facts = {r["fact"]: r for r in tally.to_collect()}
    assert facts["vaccine"]["ids"] == ["R1", "R2"] and facts["age"]["ids"] == ["R2"]
    assert tally.could_not_read() == {"rows": [{"record": 17, "id": "E1",
                                                "reason": "age: expected a whole number, got text"}], "more": 0}
    text = report.markdown(tally, ABOUT)
    assert "| `I1` Adult | 13 | 13 | 0 | P1, P2, P3, P4, P5, P6, P7, P8, P9, P10 and 3 more |" in text
    assert "| `vaccine` | investigator judgment | 2 | 1 | R1, R2 |" in text
    assert "| 17 | E1 | age\\: expected a whole number, got text |" in text
    page = report.html(tally, ABOUT)
    assert "<td>P1, P2, P3, P4, P5, P6, P7, P8, P9, P10 and 3 more</td>" in page
    assert "<td>age: expected a whole number, got text</td>" in page


def test_merged_tallies_name_the_first_patients_of_the_whole_input() -> None:
    first, second, whole = Tally(CRITERIA), Tally(CRITERIA), Tally(CRITERIA)
    for n in range(1, 25):
        (first if n <= 6 else second).add("ineligible", vector(NOT, MET, MET, NOT), (), f"P{n}")
        whole.add("ineligible", vector(NOT, MET, MET, NOT), (), f"P{n}")
        (first if n <= 6 else second).add_error(n, f"X{n}", "bad")
        whole.add_error(n, f"X{n}", "bad")
    merged = Tally(CRITERIA)
    merged.merge(first)
    merged.merge(second)
    assert merged.near_misses() == whole.near_misses()
    assert merged.could_not_read() == whole.could_not_read()
    assert merged.could_not_read()["more"] == 24 - report.NAMED


def test_the_chart_legend_says_what_each_colour_counts() -> None:
    page = report.html(sample(), ABOUT)
    assert '<text x="17" y="11">remaining</text>' not in page  # the blue bar alone did not count the undecided
    assert "still in, no criterion unknown so far" in page and "still in, undecided" in page
    assert "The number\nafter each bar counts every patient still in at that step" in page


def test_the_report_of_the_sample_cohort_names_its_unreadable_records(tmp_path: Path) -> None:
    from crit.screening.screen import screen_command

    md = tmp_path / "report.md"
    CliRunner().invoke(screen_command, [str(ROOT / "protocols" / "jy231.crit"),
                                        str(ROOT / "examples" / "cohort" / "patients.jsonl"),
                                        "-o", str(tmp_path / "out.jsonl"), "-q", "--report", str(md)])
    text = md.read_text(encoding="utf-8")
    assert "| 13 | P0000013 | age\\: expected a whole number, got text |" in text
    assert "| 28 | P0000028 | hemoglobn\\: unknown field; did you mean 'hemoglobin'? |" in text
    near = text[text.index("## Near misses"):text.index("## What to collect")]
    assert re.search(r"\| P\d{7}(, P\d{7})*( and \d+ more)? \|$", near, re.M)  # the near misses are named
    collect = text[text.index("## What to collect"):text.index("## Records that could not")]
    assert re.search(r"\| P\d{7}(, P\d{7})*( and \d+ more)? \|$", collect, re.M)


# ---- issue 8: nothing injects into a report (item 12) ----------------------------------------

HOSTILE = ["<script>alert(1)</script>", "a|b|c", "`tick`", "[x](javascript:alert(1))", "line\nbreak",
           "<img src=x onerror=alert(1)>", "![i](http://evil/x.png)", "&lt;b&gt;", "# heading", "\u2028sep"]


def test_hostile_file_names_ids_and_messages_stay_text_in_both_reports(tmp_path: Path) -> None:
    import html.parser
    import json

    from crit.screening.screen import screen_command

    base = json.loads((ROOT / "examples" / "patient-sle.json").read_text(encoding="utf-8"))
    records = []
    for hostile in HOSTILE:
        records.append({**base, "id": hostile, "ecog": 3})  # fails only I4: a near miss, named
        records.append({**{k: v for k, v in base.items() if k != "alt"}, "id": hostile})  # needs review
        records.append({**base, "id": hostile, hostile: 1})  # cannot be read: an unknown field named so
    folder = tmp_path / "in<script>x|`](javascript:y)\nz"
    folder.mkdir()
    source = folder / "cohort<b>|`a`](javascript:alert(1))\n#.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    md, page = tmp_path / "r.md", tmp_path / "r.html"
    result = CliRunner().invoke(screen_command, [str(ROOT / "protocols" / "jy231.crit"), str(source),
                                                 "-o", str(tmp_path / "out.jsonl"), "-q", "--report", str(md),
                                                 "--report", str(page)])
    assert result.exception is not None and getattr(result.exception, "code", None) == 3
    mark, text = md.read_text(encoding="utf-8").split("\n", 1)  # line 1: crit's @generated mark
    assert files.is_generated(md) and mark.count("-->") == 1 and "<script" not in mark and "\n" not in mark
    bare = re.sub(r"\\.", "", text)  # what is left once every backslash-escaped character is taken out
    for bad in ("<", "](", "![", "\u2028", "&lt;"):
        assert bad not in bare, bad
    assert re.findall(r"`[^`]*`", bare) == re.findall(r"`[A-Za-z0-9_.\[\]]+`", bare)  # crit's own code spans only
    width = 0
    for line in text.splitlines():  # a table row has as many cells as its table's header: no | got through
        assert not line.startswith("#") or line.startswith(("# Screening report", "## ")), line
        if line.startswith("|"):
            cells = len(re.split(r"(?<!\\)\|", line))
            width = width or cells
            assert cells == width, line
        else:
            width = 0
    assert r"in\<script\>x\|\`\]\(javascript\:y\)\\nz" in text  # shown, escaped, on one line
    assert r"\<img src\=x onerror\=alert\(1\)\>" in text and r"a\|b\|c" in text

    class Tags(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: set[str] = set()
            self.attributes: set[str] = set()

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags.add(tag)
            self.attributes.update(name for name, _ in attrs)

    parsed = Tags()
    parsed.feed(page.read_text(encoding="utf-8"))
    assert parsed.tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "code", "em", "table",
                           "tr", "th", "td", "svg", "g", "text", "rect"}, parsed.tags
    assert parsed.attributes <= {"lang", "charset", "name", "content", "class", "role", "width", "height", "viewbox",
                                 "aria-label", "x", "y", "transform"}, parsed.attributes
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.read_text(encoding="utf-8")


def test_the_one_escaper_per_format() -> None:
    from crit import text

    assert text.markdown("1. a|b [x](javascript:y) <i> `c` # d\ne") == (
        r"1\. a\|b \[x\]\(javascript\:y\) \<i\> \`c\` \# d\\ne")
    assert text.markdown("- item") == r"\- item"
    assert text.markdown_code("a`b|c") == "``a`b\\|c``"
    assert text.html("<a href='x'>&\u2028</a>") == "&lt;a href=&#39;x&#39;&gt;&amp;\\u2028&lt;/a&gt;"
    assert [text.csv_cell(v) for v in ("=1", "+1", "-1", "@1", "\t1", "\r1", "1", None)] == [
        "'=1", "'+1", "'-1", "'@1", "'\t1", "'\r1", "1", ""]
    assert text.json_source({"a": Decimal("1.0"), "b": [Decimal("NaN")]}) == '{"a": 1.0, "b": ["NaN"]}'
