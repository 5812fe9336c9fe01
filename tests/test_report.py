"""The screening report: counts per criterion, CONSORT attrition, near misses and the facts to
collect, rendered as Markdown and as one self-contained HTML page."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from conftest import ROOT
from crit import report
from crit.report import Criterion, Tally

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
    from crit.cli import Failure
    from crit.screen import screen_command

    md, page = tmp_path / "report.md", tmp_path / "report.html"
    result = CliRunner().invoke(screen_command, [str(ROOT / "protocols" / "jy231.crit"),
                                                 str(ROOT / "examples" / "cohort" / "patients.jsonl"),
                                                 "-o", str(tmp_path / "out.jsonl"), "-q", "--report", str(md),
                                                 "--report", str(page)])
    assert isinstance(result.exception, Failure) and result.exception.code == 3  # two unreadable records
    text = md.read_text(encoding="utf-8")
    assert "| records read | 40 |  |" in text and "| could not be read | 2 | 5.0% |" in text
    excluded = sum(int(m) for m in re.findall(r"^\| \d+ \| `[IE]\d+` .*? \| (\d+) \|", text, re.M))
    eligible = int(re.search(r"\*\*eligible\*\* \| \| \*\*(\d+)\*\*", text).group(1))  # type: ignore[union-attr]
    review = int(re.search(r"\*\*needs review\*\* \| \| \*\*(\d+)\*\*", text).group(1))  # type: ignore[union-attr]
    assert excluded + eligible + review == 38
    assert "<svg" in page.read_text(encoding="utf-8")
