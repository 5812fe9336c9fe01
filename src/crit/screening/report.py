"""The screening report: what a cohort's screening found, criterion by criterion.

`Tally` counts, in memory that does not grow with the cohort, what the report needs: every
criterion's outcomes, the CONSORT-style attrition in protocol order, the patients who fail
only one criterion, the facts most often missing among the patients who need review, and the
records that could not be read; each of these names its first `NAMED` patients (in input
order), so that a coordinator can act on it. Tallies from several processes merge, in input
order. `markdown()` and `html()` render it; the HTML page is one self-contained file (inline
CSS and SVG, no scripts, no external assets). Every value that is not fixed text of the
report passes through `crit.text` (Markdown or HTML escaping), so that no file name, id or
message can inject into it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from crit import templating

ELIGIBLE, INELIGIBLE, NEEDS_REVIEW, ERROR = "eligible", "ineligible", "needs review", "error"
_PENDING_LIMIT = 20_000  # distinct outcome vectors kept before folding them into the counts
NAMED = 10  # patients named per row of the report; the result rows name them all
_LONE_CACHE = 4_096  # outcome vectors remembered with the one criterion that refuses them
OUTCOMES = ("met", "not met", "unknown", "not applicable")
# Unknown, but only between these: counted as unknown; undecided only where they may refuse.
PARTLY = {"met or not applicable": "met", "not met or not applicable": "not met"}  # -> what it may be
_INDEX = re.compile(r"\[[0-9]+\]")


@dataclass(frozen=True)
class Criterion:
    """What the report shows of a criterion (the evaluator's CRITERIA, plus its depth)."""

    id: str
    title: str
    section: str
    parent: str | None


@dataclass
class Tally:
    """Counts for the report. `add` one screened record at a time (or `add_error`), `merge`
    tallies from other processes, and `flush` before reading the counts."""

    criteria: tuple[Criterion, ...]
    errors: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    outcomes: list[list[int]] = field(default_factory=list)  # per criterion, counts in OUTCOMES order
    steps: Counter[tuple[int, int]] = field(default_factory=Counter)  # (first refusing, first unknown)
    only: Counter[tuple[int, bool]] = field(default_factory=Counter)  # (the one refusing, others unknown)
    facts: Counter[str] = field(default_factory=Counter)  # missing facts among patients needing review
    alone: Counter[str] = field(default_factory=Counter)  # ... for whom it is the only one
    near: dict[int, list[str]] = field(default_factory=dict)  # the first patients each top criterion alone refuses
    collect: dict[str, list[str]] = field(default_factory=dict)  # the first patients missing each fact
    unreadable: list[tuple[int, str, str]] = field(default_factory=list)  # the first (record, id, reason)
    _pending: Counter[tuple[str, str]] = field(default_factory=Counter)
    _lone: dict[str, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.outcomes:
            self.outcomes = [[0, 0, 0, 0] for _ in self.criteria]
        self.tops = tuple(i for i, c in enumerate(self.criteria) if c.parent is None)
        self._refusals = tuple((i, self._refusal(i)) for i in self.tops)

    @property
    def screened(self) -> int:
        return sum(self.decisions.values())

    def add(self, decision: str, outcomes: str, facts: Sequence[str] = (), patient: str | None = None) -> None:
        """One screened record: its decision, its outcomes joined by "|" in the order of the
        criteria, (if it needs review) the missing facts and pending judgments, and how the
        report names the patient (the id, or the record's number)."""
        self._pending[(outcomes, decision)] += 1
        if len(self._pending) > _PENDING_LIMIT:
            self.flush()
        if facts:
            shown = sorted({_INDEX.sub("[]", f) for f in facts})
            self.facts.update(shown)
            if len(shown) == 1:
                self.alone.update(shown)
            if patient is not None:
                for fact in shown:
                    named = self.collect.setdefault(fact, [])
                    if len(named) < NAMED:
                        named.append(patient)
        if patient is not None and decision == INELIGIBLE:
            lone = self._lone_refusal(outcomes)
            if lone is not None:
                named = self.near.setdefault(lone, [])
                if len(named) < NAMED:
                    named.append(patient)

    def _lone_refusal(self, outcomes: str) -> int | None:
        """The position (among the top-level criteria) of the one criterion that refuses
        this outcome vector, if exactly one does."""
        if outcomes in self._lone:
            return self._lone[outcomes]
        values = outcomes.split("|")
        refusing = [k for k, (i, refusal) in enumerate(self._refusals) if values[i] == refusal]
        lone = refusing[0] if len(refusing) == 1 else None
        if len(self._lone) >= _LONE_CACHE:
            self._lone.clear()
        self._lone[outcomes] = lone
        return lone

    def add_error(self, record: int = 0, patient: str = "", reason: str = "") -> None:
        """One record that could not be read: its number, its id (if it could be found) and why."""
        self.errors += 1
        if len(self.unreadable) < NAMED:
            self.unreadable.append((record, patient, reason))

    def flush(self) -> None:
        """Fold the records added since the last flush into the counts: per distinct outcome
        vector, so the work is per kind of patient rather than per patient."""
        tops = self.tops
        index = {value: k for k, value in enumerate(OUTCOMES)}
        index.update({value: index["unknown"] for value in PARTLY})
        for (joined, decision), n in self._pending.items():
            self.decisions[decision] += n
            values = joined.split("|")
            for counts, value in zip(self.outcomes, values, strict=True):
                counts[index[value]] += n
            refusing = [k for k, i in enumerate(tops) if values[i] == self._refusal(i)]
            unknown = [k for k, i in enumerate(tops)
                       if values[i] == "unknown" or PARTLY.get(values[i]) == self._refusal(i)]
            first_refusing = refusing[0] if refusing else len(tops)
            first_unknown = unknown[0] if unknown else len(tops)
            self.steps[(first_refusing, first_unknown)] += n
            if len(refusing) == 1:
                self.only[(refusing[0], bool(unknown))] += n
        self._pending.clear()

    def _refusal(self, index: int) -> str:
        return "not met" if self.criteria[index].section == "inclusion" else "met"

    def merge(self, other: Tally) -> None:
        """Add another tally's counts (from another process, say) to these."""
        self._pending.update(other._pending)
        if len(self._pending) > _PENDING_LIMIT:
            self.flush()
        self.errors += other.errors
        self.decisions.update(other.decisions)
        for mine, theirs in zip(self.outcomes, other.outcomes, strict=True):
            for k in range(4):
                mine[k] += theirs[k]
        self.steps.update(other.steps)
        self.only.update(other.only)
        self.facts.update(other.facts)
        self.alone.update(other.alone)
        for lone, named in other.near.items():
            mine_named = self.near.setdefault(lone, [])
            mine_named.extend(named[:NAMED - len(mine_named)])
        for fact, named in other.collect.items():
            mine_named = self.collect.setdefault(fact, [])
            mine_named.extend(named[:NAMED - len(mine_named)])
        self.unreadable.extend(other.unreadable[:NAMED - len(self.unreadable)])

    # ---- what the report shows ----
    def attrition(self) -> list[dict[str, Any]]:
        """CONSORT-style steps in protocol order: at each top-level criterion, the patients it
        excludes that no earlier criterion excluded, those remaining, and how many of those
        are undecided so far (an earlier or this criterion unknown)."""
        self.flush()
        rows = []
        remaining = self.screened
        for k, index in enumerate(self.tops):
            criterion = self.criteria[index]
            excluded = sum(n for (r, _), n in self.steps.items() if r == k)
            remaining -= excluded
            undecided = sum(n for (r, u), n in self.steps.items() if r > k and u <= k)
            rows.append({"step": k + 1, "criterion": criterion, "excluded": excluded, "remaining": remaining,
                         "undecided": undecided,
                         "excludes_when": "not met" if criterion.section == "inclusion" else "met"})
        return rows

    def near_misses(self) -> list[dict[str, Any]]:
        """For each top-level criterion, the patients it alone makes ineligible (the first of
        them by name, in `ids`; how many others, in `more`)."""
        self.flush()
        out = []
        for k, index in enumerate(self.tops):
            otherwise_eligible = self.only.get((k, False), 0)
            otherwise_review = self.only.get((k, True), 0)
            only = otherwise_eligible + otherwise_review
            ids = self.near.get(k, [])
            out.append({"criterion": self.criteria[index], "only": only, "eligible": otherwise_eligible,
                        "review": otherwise_review, "ids": ids, "more": only - len(ids)})
        return out

    def to_collect(self, judgments: Iterable[str] = (), limit: int = 20) -> list[dict[str, Any]]:
        """The facts most often missing among the patients who need review."""
        judged = frozenset(judgments)
        rows = []
        for fact, n in sorted(self.facts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]:
            ids = self.collect.get(fact, [])
            rows.append({"fact": fact, "judgment": re.split(r"[.\[]", fact, maxsplit=1)[0] in judged,
                         "patients": n, "alone": self.alone.get(fact, 0), "ids": ids, "more": n - len(ids)})
        return rows

    def could_not_read(self) -> dict[str, Any]:
        """The first records that could not be read, each with its number, id and reason."""
        rows = [{"record": n, "id": patient, "reason": reason} for n, patient, reason in self.unreadable]
        return {"rows": rows, "more": self.errors - len(rows)}


# ---- rendering -------------------------------------------------------------------------------


@dataclass(frozen=True)
class About:
    """What the report says it is about."""

    protocol_id: str
    title: str
    version: str | None
    source: str
    sha256: str
    records: str  # the input, as the user named it
    judgments: tuple[str, ...] = ()


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def _context(tally: Tally, about: About) -> dict[str, Any]:
    tally.flush()
    screened = tally.screened
    total = screened + tally.errors
    depth: dict[str, int] = {}
    for c in tally.criteria:
        depth[c.id] = 0 if c.parent is None else depth[c.parent] + 1
    summary = [
        ("records read", total, ""),
        ("could not be read", tally.errors, _percent(tally.errors, total)),
        ("screened", screened, _percent(screened, total)),
        (ELIGIBLE, tally.decisions[ELIGIBLE], _percent(tally.decisions[ELIGIBLE], screened)),
        (INELIGIBLE, tally.decisions[INELIGIBLE], _percent(tally.decisions[INELIGIBLE], screened)),
        (NEEDS_REVIEW, tally.decisions[NEEDS_REVIEW], _percent(tally.decisions[NEEDS_REVIEW], screened)),
    ]
    criteria = [{"criterion": c, "depth": depth[c.id], "counts": counts}
                for c, counts in zip(tally.criteria, tally.outcomes, strict=True)]
    return {
        "about": about, "total": total, "screened": screened, "errors": tally.errors,
        "eligible": tally.decisions[ELIGIBLE], "review": tally.decisions[NEEDS_REVIEW],
        "summary": summary, "attrition": tally.attrition(), "criteria": criteria,
        "near_misses": tally.near_misses(), "collect": tally.to_collect(about.judgments),
        "unreadable": tally.could_not_read(), "named": NAMED, "percent": _percent,
    }


def markdown(tally: Tally, about: About) -> str:
    return str(templating.environment().get_template("report.md.j2").render(**_context(tally, about)))


def html(tally: Tally, about: About) -> str:
    context = _context(tally, about)
    context["chart"] = _chart(context["attrition"], context["screened"], context["total"], tally.errors)
    return str(templating.html().get_template("report.html.j2").render(**context))


def _chart(steps: list[dict[str, Any]], screened: int, total: int, errors: int) -> dict[str, Any]:
    """The attrition as horizontal bars (SVG coordinates): for each step, the patients still
    in (of whom those undecided) and those it excludes."""
    width, label, row = 760, 250, 26
    scale = (width - label - 70) / total if total else 0.0
    bars: list[tuple[str, int, int, int]] = [("Records read", total, 0, 0), ("Could be read", screened, 0, errors)]
    for step in steps:
        c = step["criterion"]
        bars.append((f"{c.id} {c.title}", step["remaining"], step["undecided"], step["excluded"]))
    out = []
    for index, (name, remaining, undecided, excluded) in enumerate(bars):
        y = 10 + index * row
        decided = remaining - undecided
        out.append({
            "y": y, "text_y": y + 14, "label": name if len(name) <= 38 else name[:37] + "…", "title": name,
            "x": label, "decided_w": round(decided * scale, 2),
            "undecided_x": round(label + decided * scale, 2), "undecided_w": round(undecided * scale, 2),
            "excluded_x": round(label + remaining * scale, 2), "excluded_w": round(excluded * scale, 2),
            "count_x": round(label + (remaining + excluded) * scale + 6, 2),
            "remaining": remaining, "excluded": excluded, "undecided": undecided,
        })
    return {"width": width, "height": 20 + len(bars) * row + 24, "bars": out, "legend_y": 16 + len(bars) * row}
