"""A seeded synthetic JY231 cohort, for benchmarks (not tests).

The mix is meant to look like a screening log rather than a unit test: about a quarter of the
patients are eligible, a third fail exactly one criterion (the near misses), some fail several,
about a fifth lack a fact or a pending investigator judgment, and units vary the way lab
exports do (hemoglobin in g/dL, platelets per µL, VAS in mm). A few records per thousand
cannot be read at all (a typo in a field name, an impossible date, an unknown unit), so that
`crit screen` has error rows to write.

    python benchmarks/cohort.py 100000 -o /tmp/cohort.jsonl            # JSON Lines
    python benchmarks/cohort.py 100000 -o /tmp/cohort.csv              # CSV (crit screen's mapping)

The same seed always gives the same cohort.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

Record = dict[str, Any]

DISEASES = (("SLE", 0.40), ("SS", 0.15), ("SSc", 0.15), ("DM", 0.15), ("AAV", 0.15))
MYOSITIS = ("Jo1", "Zo", "EJ", "PL7", "KS", "OJ", "PL12", "YRS", "NXP2", "TIF1g", "Mi2", "SAE", "MDA5",
            "SRP", "HMGCR")
ANCA = ("cANCA", "pANCA", "PR3", "MPO")
AGENTS = ("mycophenolate mofetil", "tacrolimus", "azathioprine", "cyclophosphamide", "methotrexate",
          "rituximab", "belimumab")
FIRST_SCREENING = datetime.date(2024, 1, 2)


def _day(start: datetime.date, days: int) -> str:
    return (start + datetime.timedelta(days=days)).isoformat()


def eligible(rng: random.Random, number: int) -> Record:
    """A patient who meets every criterion."""
    screening = FIRST_SCREENING + datetime.timedelta(days=rng.randrange(540))
    disease = rng.choices([d for d, _ in DISEASES], [w for _, w in DISEASES])[0]
    sex = "female" if rng.random() < (0.85 if disease in ("SLE", "SS") else 0.6) else "male"
    age = rng.randint(18, 75)
    childbearing = sex == "female" and age < 50
    r: Record = {
        "id": f"P{number:07d}",
        "screening": screening.isoformat(),
        "age": age,
        "sex": sex,
        "consent_signed": True,
        "diagnosis": disease,
        "diagnosis_date": _day(screening, -rng.randint(400, 6000)),
        "classification_met": True,
        "treatments": _treatments(rng, screening),
        "intolerant_to_standard_therapy": rng.random() < 0.1,
        "relative_contraindication": False,
        "ecog": rng.choice((0, 1, 1)),
        "platelets": rng.randint(60, 400),
        "lvef": rng.randint(55, 72),
        "ecg_normal": True,
        "egfr": rng.randint(35, 120),
        "ast": {"value": rng.randint(12, 90), "uln": 40},
        "alt": {"value": rng.randint(10, 90), "uln": 40, "unit": "U/L"},
        "bilirubin": {"value": round(rng.uniform(3, 30), 1), "uln": 21},
        "collection_feasible": True,
        "collection_contraindicated": False,
        "childbearing_potential": childbearing,
        "reproductive_potential": childbearing or sex == "male",
        "prior_car_t": False,
        "severe_disorders": [],
        "systemic_infection": None if rng.random() < 0.7 else _ended(rng, screening, 10, 900, 8),
        "hbsag": "negative",
        "hbcab": "negative" if rng.random() < 0.85 else "positive",
        "hcv_antibody": "negative",
        "hiv_antibody": "negative",
        "syphilis": "negative",
        "cmv_dna": "negative",
        "last_live_vaccine": None if rng.random() < 0.8 else _day(screening, -rng.randint(40, 3000)),
        "pregnant": False,
        "breastfeeding": False,
        "pregnancy_planned": False,
        "malignancies": [],
        "other_study": None if rng.random() < 0.85 else _ended(rng, screening, 100, 2000, 95),
        "unsuitable": False,
    }
    hemoglobin = round(rng.uniform(75, 150), 0)
    r["hemoglobin"] = {"value": hemoglobin / 10, "unit": "g/dL"} if rng.random() < 0.3 else hemoglobin
    if rng.random() < 0.2:
        r["platelets"] = {"value": r["platelets"], "unit": "10^3/uL"}
    if r["hbcab"] == "positive":
        r["hbv_dna"] = {"value": rng.randint(0, 15), "uln": 20}
    if childbearing:
        r["urine_pregnancy_test"] = "negative"
    if r["reproductive_potential"]:
        r["contraception_agreed"] = True
    if rng.random() < 0.05:
        r["malignancies"] = [{"kind": "basal_cell_skin", "adequately_treated": True, "radical_surgery": None}]
    _disease(rng, r, disease, screening)
    return r


def _ended(rng: random.Random, screening: datetime.date, low: int, high: int, clear: int) -> Record:
    """An interval that began `low` to `high` days before screening and ended at least `clear` days before it."""
    back = rng.randint(low, high)
    return {"start": _day(screening, -back), "end": _day(screening, -back + rng.randint(0, min(30, back - clear)))}


def _treatments(rng: random.Random, screening: datetime.date) -> list[Record]:
    out = []
    agents = rng.sample(AGENTS, len(AGENTS))  # a different agent for each course: two of one count once
    start = screening - datetime.timedelta(days=rng.randint(900, 3000))
    for _ in range(rng.choice((2, 2, 3))):
        days = rng.randint(200, 700)
        end = min(start + datetime.timedelta(days=days), screening)
        out.append({"agent": agents[len(out) % len(agents)], "immunosuppressive": True, "start": start.isoformat(),
                    "end": end.isoformat()})
        start = end + datetime.timedelta(days=rng.randint(0, 60))
        if start >= screening:
            break
    return out


def _vas(rng: random.Random, low: float, high: float) -> Any:
    value = round(rng.uniform(low, high), 1)
    return {"value": round(value * 10), "unit": "mm"} if rng.random() < 0.3 else value


def _disease(rng: random.Random, r: Record, disease: str, screening: datetime.date) -> None:
    if disease == "SLE":
        r["ana"] = rng.choice(("1:160", "1:320", "1:640", "1:1280"))
        r["anti_dsdna"] = rng.choice(("positive", "positive", "negative"))
        r["sledai"] = rng.randint(8, 24)
    elif disease == "SS":
        r["anti_ssa"] = "positive"
        r["essdai"] = rng.randint(14, 30)
    elif disease == "SSc":
        r["ana"] = rng.choice(("1:160", "1:320", "1:640"))
        r["anti_scl70"] = rng.choice(("positive", "negative"))
        r["mrss"] = rng.randint(10, 35)
        r["ild"] = True
    elif disease == "DM":
        r["diagnosis_date"] = _day(screening, -rng.randint(400, 3000))
        r["myositis_antibodies"] = rng.sample(MYOSITIS, rng.choice((1, 1, 2)))
        r["rash_vas"] = _vas(rng, 3, 9)
        r["active_muscle_inflammation"] = True
        r["mmt8"] = rng.randint(80, 124)
        r["patient_global_vas"] = _vas(rng, 2, 9)
        r["physician_global_vas"] = _vas(rng, 2, 9)
        r["haq_di"] = rng.choice((0.25, 0.5, 0.75, 1.0, 1.5))
        r["extramuscular_vas"] = _vas(rng, 1, 6)
        r["ck"] = {"value": rng.randint(300, 3000), "uln": 200}
        r["aldolase"] = {"value": round(rng.uniform(4, 20), 1), "uln": 7.6}
        r["ldh"] = {"value": rng.randint(200, 600), "uln": 250}
    else:
        r["anca"] = rng.sample(ANCA, rng.choice((1, 2)))
        r["bvas"] = rng.randint(15, 40)


# ---- ways to fail one criterion ---------------------------------------------------------


def _days_before(r: Record, low: int, high: int, rng: random.Random) -> str:
    return _day(datetime.date.fromisoformat(r["screening"]), -rng.randint(low, high))


FAILURES: dict[str, Callable[[Record, random.Random], None]] = {
    "I1 age": lambda r, g: r.update(age=g.choice((16, 17, 76, 79, 82))),
    "I1 consent": lambda r, g: r.update(consent_signed=False),
    "I2 classification": lambda r, g: r.update(classification_met=False),
    "I2 other disease": lambda r, g: r.update(diagnosis="other"),
    "I3 one course only": lambda r, g: r.update(treatments=r["treatments"][:1], intolerant_to_standard_therapy=False),
    "I3 activity": lambda r, g: _low_activity(r, g),
    "I4 ECOG": lambda r, g: r.update(ecog=g.choice((2, 2, 3))),
    "I5.1 hemoglobin": lambda r, g: r.update(hemoglobin={"value": round(g.uniform(4.5, 5.9), 1), "unit": "g/dL"}),
    "I5.1 platelets": lambda r, g: r.update(platelets=g.randint(5, 19)),
    "I5.2 LVEF": lambda r, g: r.update(lvef=g.randint(35, 54)),
    "I5.3 eGFR": lambda r, g: r.update(egfr=g.randint(10, 29)),
    "I5.4 AST": lambda r, g: r.update(ast={"value": g.randint(121, 400), "uln": 40}),
    "I5.4 bilirubin": lambda r, g: r.update(bilirubin={"value": g.randint(43, 90), "uln": 21}),
    "E1 CAR-T": lambda r, g: r.update(prior_car_t=True),
    "E2 severe disorder": lambda r, g: r.update(severe_disorders=["cardiac"], disorder_outweighs=True),
    "E3 infection": lambda r, g: r.update(systemic_infection={"start": _days_before(r, 0, 30, g), "ongoing": True}),
    "E4 HBV": lambda r, g: r.update(hbcab="positive", hbv_dna={"value": g.randint(100, 5000), "uln": 20}),
    "E4 syphilis": lambda r, g: r.update(syphilis="positive"),
    "E5 live vaccine": lambda r, g: r.update(last_live_vaccine=_days_before(r, 0, 28, g)),
    "E6 pregnancy planned": lambda r, g: r.update(pregnancy_planned=True),
    "E7 malignancy": lambda r, g: r.update(malignancies=[{"kind": "other", "adequately_treated": True}]),
    "E8 other study": lambda r, g: r.update(other_study={"start": _days_before(r, 100, 400, g),
                                                          "end": _days_before(r, 0, 80, g)}),
    "E9 unsuitable": lambda r, g: r.update(unsuitable=True),
}
_FAILURE_WEIGHTS = {"I1 age": 3, "I3 one course only": 4, "I3 activity": 6, "I4 ECOG": 3, "I5.1 hemoglobin": 2,
                    "I5.4 AST": 2, "I2 other disease": 3, "E7 malignancy": 2, "E9 unsuitable": 2}


def _low_activity(r: Record, rng: random.Random) -> None:
    disease = r["diagnosis"]
    if disease == "SLE":
        r["sledai"] = rng.randint(2, 7)
    elif disease == "SS":
        r["essdai"] = rng.randint(3, 13)
    elif disease == "SSc":
        r["mrss"] = rng.choice((5, 8, 38, 44))
    elif disease == "DM":
        r["mmt8"] = rng.randint(125, 150)
    else:
        r["bvas"] = rng.randint(3, 14)


# ---- missing facts and pending judgments ------------------------------------------------

MISSING = ("alt", "egfr", "ecg_normal", "lvef", "unsuitable", "unsuitable", "hbv_dna", "bilirubin",
           "hemoglobin", "sledai", "contraception_agreed", "cmv_dna", "classification_met")


def _drop(r: Record, rng: random.Random) -> None:
    for name in rng.sample(MISSING, rng.choice((1, 1, 1, 2, 3))):
        if name == "hbv_dna":
            r["hbcab"] = "positive"
        r.pop(name, None)
    if rng.random() < 0.15 and r["treatments"]:
        r["treatments"][-1].pop("end", None)


BROKEN: tuple[Callable[[Record, random.Random], None], ...] = (
    lambda r, g: r.update(hemoglobn=r.pop("hemoglobin", 100)),
    lambda r, g: r.update(screening="2025-02-30"),
    lambda r, g: r.update(ast={"value": 30, "uln": 40, "unit": "IU/mL"}),
    lambda r, g: r.update(age="forty"),
    lambda r, g: r.update(diagnosis="Lupus"),
)


def cohort(size: int, seed: int = 231, invalid: float = 0.002) -> Iterator[Record]:
    """`size` JY231 patient records, the same ones for the same seed, generated one at a time."""
    rng = random.Random(seed)
    names = list(FAILURES)
    weights = [_FAILURE_WEIGHTS.get(n, 1) for n in names]
    for number in range(1, size + 1):
        r = eligible(rng, number)
        roll = rng.random()
        if roll < 0.25:
            pass  # eligible
        elif roll < 0.60:
            FAILURES[rng.choices(names, weights)[0]](r, rng)
        elif roll < 0.75:
            for name in rng.sample(names, rng.choice((2, 2, 3))):
                FAILURES[name](r, rng)
        elif roll < 0.93:
            _drop(r, rng)
        else:
            FAILURES[rng.choices(names, weights)[0]](r, rng)
            _drop(r, rng)
        if rng.random() < invalid:
            rng.choice(BROKEN)(r, rng)
        yield r


# ---- files ---------------------------------------------------------------------------


def csv_row(r: Record) -> dict[str, str]:
    """A record as one CSV row in crit screen's column mapping: nested values as dotted and
    indexed columns (`ast.value`, `treatments[0].start`), sets as `a;b`, empty for absent,
    `null` for a recorded none."""
    row: dict[str, str] = {}

    def cell(value: Any) -> str:
        if value is None:
            return "null"
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    for key, value in r.items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                row[f"{key}.{sub}"] = cell(inner)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for index, item in enumerate(value):
                for sub, inner in item.items():
                    row[f"{key}[{index}].{sub}"] = cell(inner)
        elif isinstance(value, list):
            row[key] = ";".join(value) if value else "[]"
        else:
            row[key] = cell(value)
    return row


def csv_columns(size: int, seed: int = 231, invalid: float = 0.002) -> list[str]:
    """Every column the rows of this cohort use, in the order they first appear: the cohort
    is generated once to find them (it is seeded, so the second pass gives the same records),
    so that no record, however unusual (`ast.unit` from a broken one), has a column the header
    lacks."""
    columns: dict[str, None] = {}
    for r in cohort(size, seed, invalid):
        columns.update(dict.fromkeys(csv_row(r)))
    return list(columns)


def write(path: Path, size: int, seed: int = 231, invalid: float = 0.002) -> None:
    """Write the cohort to `path`: CSV if it ends in .csv, JSON Lines otherwise."""
    with path.open("w", encoding="utf-8", newline="") as out:
        if path.suffix == ".csv":
            writer = csv.DictWriter(out, csv_columns(size, seed, invalid), restval="")
            writer.writeheader()
            for r in cohort(size, seed, invalid):
                writer.writerow(csv_row(r))
        else:
            for r in cohort(size, seed, invalid):
                out.write(json.dumps(r, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("size", type=int)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=231)
    parser.add_argument("--invalid", type=float, default=0.002,
                        help="the share of records made unreadable on purpose (default 0.002)")
    args = parser.parse_args(argv)
    write(args.output, args.size, args.seed, args.invalid)
    print(f"wrote {args.size} records to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
