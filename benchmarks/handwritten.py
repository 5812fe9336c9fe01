"""JY231 written by hand: the baselines the generated evaluator is measured against.

This is the Python a careful engineer would write for this one protocol without crit: it reads
and validates a record (the same checks: unknown fields, types, units, dates, titers, enums),
converts units exactly, and applies the criteria with three-valued logic (None is unknown, NA
is not applicable) and the same `when`, `at least`, count-range and date-window rules.

- `evaluate_by_hand(record)` works out every criterion and returns the decision and each
  criterion's outcome (no reasons, no missing facts: less than `evaluate()` gives);
- `decide_by_hand(record)` returns the decision, stopping at the first criterion that settles it.

Both raise `Invalid` for a record the generated module would reject. It imports nothing from
crit: it is the program crit replaces.
"""

from __future__ import annotations

import calendar
import datetime
import math
import re
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, NamedTuple


class Invalid(ValueError):
    pass


class _NA:
    def __repr__(self) -> str:
        return "NA"


NA: Any = _NA()  # not applicable


class _Partly:
    """Unknown, but only between some outcomes (None is unknown between met and not met)."""

    def __init__(self, word: str, can: tuple[bool, bool, bool]) -> None:
        self.word, self.can = word, can  # can be: (met, not met, not applicable)

    def __repr__(self) -> str:
        return self.word


MAYBE: Any = _Partly("unknown", (True, True, True))  # met, not met or not applicable
MET_OR_NA: Any = _Partly("met or not applicable", (True, False, True))
NOT_MET_OR_NA: Any = _Partly("not met or not applicable", (False, True, True))
_CAN = {True: (True, False, False), False: (False, True, False), None: (True, True, False),
        NA: (False, False, True), MAYBE: MAYBE.can, MET_OR_NA: MET_OR_NA.can, NOT_MET_OR_NA: NOT_MET_OR_NA.can}


def _partly(met: bool, not_met: bool, na: bool) -> Any:
    """The value whose outcomes can be those flagged."""
    if met and not_met:
        return MAYBE if na else None
    if met:
        return MET_OR_NA if na else True
    if not_met:
        return NOT_MET_OR_NA if na else False
    return NA
NONE: Any = "none recorded"  # an optional field recorded as null


class Lab(NamedTuple):
    value: Decimal
    uln: Decimal


# ---- reading ------------------------------------------------------------------------------

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TITER = re.compile(r"1:([1-9][0-9]{0,8})")
_BIG = Decimal(10) ** 15


def number(raw: Any) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise Invalid("expected a number")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise Invalid("expected a finite number")
    value = Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw)
    if abs(value) >= _BIG:
        raise Invalid("out of range")
    return value


def integer(raw: Any) -> int:
    if isinstance(raw, float) and math.isfinite(raw) and raw == int(raw):
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or abs(raw) >= 10**15:
        raise Invalid("expected a whole number")
    return raw


def boolean(raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise Invalid("expected true or false")
    return raw


def text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise Invalid("expected text")
    return raw


def date(raw: Any) -> datetime.date:
    if not isinstance(raw, str) or not _DATE.fullmatch(raw):
        raise Invalid("expected a date")
    try:
        return datetime.date.fromisoformat(raw)
    except ValueError:
        raise Invalid("not a real date") from None


class Period(NamedTuple):
    start: datetime.date
    end: datetime.date | None  # None: ongoing if `ongoing`, else not recorded
    ongoing: bool


def interval(raw: Any) -> Period:
    if not isinstance(raw, dict) or raw.get("start") is None or set(raw) - {"start", "end", "ongoing"}:
        raise Invalid("expected an interval")
    start = date(raw["start"])
    end = None if raw.get("end") is None else date(raw["end"])
    ongoing = False if raw.get("ongoing") is None else boolean(raw["ongoing"])
    if (ongoing and end is not None) or (end is not None and end < start):
        raise Invalid("not an interval")
    return Period(start, end, ongoing)


def titer(raw: Any) -> int:
    match = _TITER.fullmatch(raw) if isinstance(raw, str) else None
    if match is None:
        raise Invalid("expected a titer")
    return int(match.group(1))


def one_of(*members: str) -> Callable[[Any], str]:
    def read(raw: Any) -> str:
        if not isinstance(raw, str) or raw not in members:
            raise Invalid("not a member")
        return raw
    return read


def set_of(*members: str) -> Callable[[Any], frozenset[str]]:
    def read(raw: Any) -> frozenset[str]:
        if not isinstance(raw, list) or not all(isinstance(m, str) and m in members for m in raw):
            raise Invalid("expected a list of members")
        return frozenset(raw)
    return read


def _measured(raw: Any, keys: tuple[str, ...], unit: str, factors: dict[str, Decimal]) -> list[Decimal]:
    if not isinstance(raw, dict) or not set(raw) <= {*keys, "unit"} or not all(k in raw for k in keys):
        raise Invalid("expected a measurement")
    given = raw.get("unit", unit)
    if given != unit and (not isinstance(given, str) or given not in factors):
        raise Invalid("unknown unit")
    factor = factors[given] if given != unit else Decimal(1)
    return [number(raw[k]) * factor for k in keys]


def quantity(unit: str, **factors: str) -> Callable[[Any], Decimal]:
    exact = {u.replace("_per_", "/").replace("_", "^"): Decimal(f) for u, f in factors.items()}

    def read(raw: Any) -> Decimal:
        if isinstance(raw, dict):
            return _measured(raw, ("value",), unit, exact)[0]
        return number(raw)
    return read


def lab(unit: str) -> Callable[[Any], Lab]:
    def read(raw: Any) -> Lab:
        value, uln = _measured(raw, ("value", "uln"), unit, {})
        if uln <= 0:
            raise Invalid("the upper limit of normal must be positive")
        return Lab(value, uln)
    return read


POSITIVE = one_of("negative", "positive")
TREATMENT: dict[str, Callable[[Any], Any]] = {"agent": text, "immunosuppressive": boolean, "start": date, "end": date}
MALIGNANCY: dict[str, Callable[[Any], Any]] = {
    "kind": one_of("cervical_cis", "basal_cell_skin", "squamous_cell_skin", "localized_prostate", "ductal_cis",
                   "other"),
    "adequately_treated": boolean,
    "radical_surgery": boolean,
}


def items(fields: dict[str, Callable[[Any], Any]], optional: frozenset[str]) -> Callable[[Any], list[dict[str, Any]]]:
    def read(raw: Any) -> list[dict[str, Any]]:
        if not isinstance(raw, list):
            raise Invalid("expected a list")
        return [fields_of(item, fields, optional) for item in raw]
    return read


FIELDS: dict[str, Callable[[Any], Any]] = {
    "screening": date, "age": integer, "sex": one_of("female", "male"), "consent_signed": boolean,
    "diagnosis": one_of("SLE", "SS", "SSc", "DM", "AAV", "other"), "diagnosis_date": date,
    "classification_met": boolean, "ana": titer, "anti_dsdna": POSITIVE, "anti_ssa": POSITIVE,
    "anti_scl70": POSITIVE, "myositis_antibodies": set_of(
        "Jo1", "Zo", "EJ", "PL7", "KS", "OJ", "PL12", "YRS", "NXP2", "TIF1g", "Mi2", "SAE", "MDA5", "SRP", "HMGCR"),
    "anca": set_of("cANCA", "pANCA", "PR3", "MPO"), "treatments": items(TREATMENT, frozenset()),
    "intolerant_to_standard_therapy": boolean, "relative_contraindication": boolean, "sledai": integer,
    "essdai": integer, "mrss": integer, "ild": boolean, "bvas": integer, "rash_vas": quantity("cm", mm="0.1"),
    "active_muscle_inflammation": boolean, "mmt8": integer, "patient_global_vas": quantity("cm", mm="0.1"),
    "physician_global_vas": quantity("cm", mm="0.1"), "haq_di": number,
    "extramuscular_vas": quantity("cm", mm="0.1"), "ck": lab("U/L"), "aldolase": lab("U/L"), "ldh": lab("U/L"),
    "ecog": integer, "hemoglobin": quantity("g/L", g_per_dL="10"),
    "platelets": quantity("10^9/L", **{"10_3_per_uL": "1"}), "lvef": quantity("%"), "ecg_normal": boolean,
    "egfr": quantity("mL/min/1.73m2"), "ast": lab("U/L"), "alt": lab("U/L"), "bilirubin": lab("umol/L"),
    "collection_feasible": boolean, "collection_contraindicated": boolean, "childbearing_potential": boolean,
    "reproductive_potential": boolean,
    "urine_pregnancy_test": POSITIVE, "contraception_agreed": boolean, "prior_car_t": boolean,
    "severe_disorders": set_of("cardiac", "hepatic", "pulmonary", "hematologic", "endocrine"),
    "disorder_outweighs": boolean, "systemic_infection": interval, "hbsag": POSITIVE, "hbcab": POSITIVE,
    "hbv_dna": lab("IU/mL"), "hcv_antibody": POSITIVE, "hcv_rna": lab("IU/mL"), "hiv_antibody": POSITIVE,
    "syphilis": POSITIVE, "cmv_dna": POSITIVE, "last_live_vaccine": date, "pregnant": boolean,
    "breastfeeding": boolean, "pregnancy_planned": boolean,
    "malignancies": items(MALIGNANCY, frozenset({"radical_surgery"})), "other_study": interval,
    "unsuitable": boolean,
}
OPTIONAL = frozenset({"systemic_infection", "last_live_vaccine", "other_study"})


def fields_of(raw: Any, fields: dict[str, Callable[[Any], Any]], optional: frozenset[str],
              top: bool = False) -> dict[str, Any]:
    """Every field: its value, None when absent (or null), NONE when an optional field is null."""
    if not isinstance(raw, dict):
        raise Invalid("expected an object")
    for key in raw:
        if key not in fields and not (top and key == "id"):
            raise Invalid(f"unknown field {key}")
    out = {}
    for name, read in fields.items():
        value = raw.get(name)
        if value is None:
            out[name] = NONE if name in optional and name in raw else None
        else:
            out[name] = read(value)
    return out


def read(record: Any) -> dict[str, Any]:
    return fields_of(record, FIELDS, OPTIONAL, top=True)


# ---- three-valued logic -----------------------------------------------------------------


def and3(*values: Any) -> Any:
    """`and` over the parts that apply; a part unknown but only between two outcomes (met or
    not applicable, say) is combined by what it can be."""
    values = tuple(v for v in values if v is not NA)
    if not values:
        return NA
    if False in values:
        return False
    if not any(type(v) is _Partly for v in values):
        return None if None in values else True
    can = [_CAN[v] for v in values]
    return _partly(any(c[0] for c in can), any(c[1] for c in can), all(c[2] for c in can))


def or3(*values: Any) -> Any:
    values = tuple(v for v in values if v is not NA)
    if not values:
        return NA
    if True in values:
        return True
    if not any(type(v) is _Partly for v in values):
        return None if None in values else False
    can = [_CAN[v] for v in values]
    return _partly(any(c[0] for c in can), any(c[1] for c in can), all(c[2] for c in can))


def at_least(count: int, *values: Any) -> Any:
    values = tuple(v for v in values if v is not NA)
    if not values:
        return NA
    true = sum(1 for v in values if v is True)
    unknown = sum(1 for v in values if v is None)
    if true >= count:
        return True
    return False if true + unknown < count else None


def not3(value: Any) -> Any:
    return value if value is None or value is NA else not value


def when(condition: Any, value: Any) -> Any:
    """Not applicable if the condition is false; the value if it is true; else what the value
    can be, or not applicable (met with the condition unknown is "met or not applicable")."""
    if condition is False:
        return NA
    if condition is True or value is NA:
        return value
    met, not_met, _ = _CAN[value]
    return _partly(met, not_met, True)


def truth(value: Any) -> Any:
    return None if value is None else value is True


def ge(value: Any, limit: Any) -> Any:
    return None if value is None else value is not NONE and value >= limit


def gt(value: Any, limit: Any) -> Any:
    return None if value is None else value is not NONE and value > limit


def lt(value: Any, limit: Any) -> Any:
    return None if value is None else value is not NONE and value < limit


def between(value: Any, low: int, high: int) -> Any:
    """`value between low and high` for literal bounds (the only kind JY231 has)."""
    return None if value is None else value is not NONE and low <= value <= high


def uln(value: Any, op: str, multiple: Decimal) -> Any:
    if value is None:
        return None
    limit = multiple * value.uln
    return value.value <= limit if op == "<=" else value.value >= limit if op == ">=" else value.value > limit


def is_(value: Any, *members: str) -> Any:
    return None if value is None else value is not NONE and value in members


def has_any(value: Any, members: frozenset[str]) -> Any:
    return None if value is None else value is not NONE and not value.isdisjoint(members)


def shift(day: datetime.date, amount: int, unit: str) -> datetime.date:
    if unit == "weeks":
        return day + datetime.timedelta(weeks=amount)
    months = amount * (12 if unit == "years" else 1)
    year, month = divmod(day.year * 12 + day.month - 1 + months, 12)
    if not 1 <= year <= 9999:
        return datetime.date.max if amount > 0 else datetime.date.min
    return datetime.date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def within_before(value: Any, amount: int, unit: str, anchor: Any) -> Any:
    """`value within amount unit before anchor`, inclusive."""
    if value is None or anchor is None:
        return None
    if value is NONE or anchor is NONE:
        return False
    return shift(anchor, -amount, unit) <= value <= anchor


def at_least_after(value: Any, amount: int, unit: str, anchor: Any) -> Any:
    """`value at least amount unit after anchor`."""
    if value is None or anchor is None:
        return None
    if value is NONE or anchor is NONE:
        return False
    return value >= shift(anchor, amount, unit)


def overlaps_before(value: Any, amount: int, unit: str, anchor: Any) -> Any:
    """`value overlaps amount unit before anchor`: the interval meets [anchor - amount, anchor]."""
    if value is None or anchor is None:
        return None
    if value is NONE or anchor is NONE:
        return False
    first = shift(anchor, -amount, unit)
    if value.start > anchor:
        return False
    if value.ongoing or value.start >= first:
        return True
    return None if value.end is None else value.end >= first


def count_different_at_least(agents: Iterable[tuple[Any, Any]], number: int) -> Any:
    """`count(different agent in … where …) >= number` over (condition, agent) pairs."""
    sure: set[Any] = set()
    maybe: set[Any] = set()
    blanks = sure_blank = 0
    for condition, agent in agents:
        if condition is False or agent is NONE:
            continue
        if agent is None:
            blanks += 1
            sure_blank += condition is True
        elif condition is True:
            sure.add(agent)
        else:
            maybe.add(agent)
    low = len(sure) or min(sure_blank, 1)
    high = len(sure | maybe) + blanks
    if low >= number:
        return True
    return False if high < number else None


def count_at_least(values: Iterable[Any], number: int) -> Any:
    """`count(…) >= number` over items some of which may be unknown."""
    low = high = 0
    for v in values:
        if v is True:
            low += 1
            high += 1
        elif v is None:
            high += 1
    if low >= number:
        return True
    return False if high < number else None


# ---- JY231 --------------------------------------------------------------------------------

MYOSITIS = frozenset(("Jo1", "Zo", "EJ", "PL7", "KS", "OJ", "PL12", "YRS", "NXP2", "TIF1g", "Mi2", "SAE", "MDA5",
                      "SRP", "HMGCR"))
ANCA = frozenset(("cANCA", "pANCA", "PR3", "MPO"))
ORGANS = frozenset(("cardiac", "hepatic", "pulmonary", "hematologic", "endocrine"))
D2, D1_3, D3, D0_25, D1 = Decimal(2), Decimal("1.3"), Decimal(3), Decimal("0.25"), Decimal(1)


class Definitions:
    """The protocol's derived facts, each worked out when first asked for."""

    def __init__(self, r: dict[str, Any]) -> None:
        self.r = r
        self._csm: tuple[Any, ...] | None = None

    def ana_above_1_80(self) -> Any:
        return gt(self.r["ana"], 80)

    def refractory(self) -> Any:
        r = self.r
        courses = r["treatments"]
        if courses is None:
            count = None
        else:
            count = count_different_at_least(
                ((and3(truth(t["immunosuppressive"]), at_least_after(t["end"], 6, "months", t["start"])), t["agent"])
                 for t in courses), 2)
        return or3(count, truth(r["intolerant_to_standard_therapy"]), truth(r["relative_contraindication"]))

    def csm(self) -> tuple[Any, ...]:
        if self._csm is None:
            r = self.r
            enzyme = or3(*(uln(r[n], ">=", D1_3) for n in ("ck", "aldolase", "ldh", "alt", "ast")))
            self._csm = (ge(r["patient_global_vas"], D2), ge(r["physician_global_vas"], D2),
                         ge(r["haq_di"], D0_25), enzyme, ge(r["extramuscular_vas"], D1))
        return self._csm

    def hepatitis_b(self) -> Any:
        r = self.r
        return and3(or3(is_(r["hbsag"], "positive"), is_(r["hbcab"], "positive")), uln(r["hbv_dna"], ">", D1))

    def hepatitis_c(self) -> Any:
        r = self.r
        return and3(is_(r["hcv_antibody"], "positive"), uln(r["hcv_rna"], ">", D1))


def i1(r: dict[str, Any], d: Definitions) -> Any:
    return and3(between(r["age"], 18, 75), truth(r["consent_signed"]))


def i2_parts(r: dict[str, Any], d: Definitions) -> tuple[Any, ...]:
    dx, met = r["diagnosis"], truth(r["classification_met"])
    ana = d.ana_above_1_80()
    return (and3(is_(dx, "SLE"), met, or3(ana, is_(r["anti_dsdna"], "positive"))),
            and3(is_(dx, "SS"), met, is_(r["anti_ssa"], "positive")),
            and3(is_(dx, "SSc"), met, or3(ana, is_(r["anti_scl70"], "positive"))),
            and3(is_(dx, "DM"), met, has_any(r["myositis_antibodies"], MYOSITIS)),
            and3(is_(dx, "AAV"), met, has_any(r["anca"], ANCA)))


def i3_parts(r: dict[str, Any], d: Definitions) -> tuple[Any, ...]:
    dx = r["diagnosis"]
    sle = when(is_(dx, "SLE"), ge(r["sledai"], 8))
    ss = when(is_(dx, "SS"), ge(r["essdai"], 14))
    ssc = when(is_(dx, "SSc"), and3(between(r["mrss"], 10, 35), truth(r["ild"])))
    dm = is_(dx, "DM")
    if dm is False:
        dm_parts: tuple[Any, ...] = (NA, NA, NA, NA)
    else:
        csm = d.csm()
        # ①–③ as I3.4 combines them (under its gate), and as their own outcomes (under it too)
        one = and3(ge(r["rash_vas"], D3), at_least(3, *csm))
        two = truth(r["active_muscle_inflammation"])
        three = and3(lt(r["mmt8"], 125), at_least(2, *csm))
        year = at_least_after(r["screening"], 1, "years", r["diagnosis_date"])
        dm_parts = (when(dm, and3(year, one, two, three)), when(dm, one), when(dm, two), when(dm, three))
    aav = when(is_(dx, "AAV"), and3(ge(r["bvas"], 15), has_any(r["anca"], ANCA)))
    return (sle, ss, ssc, *dm_parts, aav)


def i4(r: dict[str, Any], d: Definitions) -> Any:
    return between(r["ecog"], 0, 1)


def i5_parts(r: dict[str, Any], d: Definitions) -> tuple[Any, ...]:
    return (and3(ge(r["hemoglobin"], 60), ge(r["platelets"], 20)),
            and3(ge(r["lvef"], 55), truth(r["ecg_normal"])),
            ge(r["egfr"], 30),
            and3(uln(r["ast"], "<=", D3), uln(r["alt"], "<=", D3), uln(r["bilirubin"], "<=", D2)),
            and3(truth(r["collection_feasible"]), not3(truth(r["collection_contraindicated"]))),
            and3(when(truth(r["childbearing_potential"]), is_(r["urine_pregnancy_test"], "negative")),
                 when(truth(r["reproductive_potential"]), truth(r["contraception_agreed"]))),
            truth(r["consent_signed"]))


def e1(r: dict[str, Any], d: Definitions) -> Any:
    return truth(r["prior_car_t"])


def e2(r: dict[str, Any], d: Definitions) -> Any:
    return and3(has_any(r["severe_disorders"], ORGANS), truth(r["disorder_outweighs"]))


def e3(r: dict[str, Any], d: Definitions) -> Any:
    return overlaps_before(r["systemic_infection"], 1, "weeks", r["screening"])


def e4(r: dict[str, Any], d: Definitions) -> Any:
    return or3(d.hepatitis_b(), d.hepatitis_c(), is_(r["hiv_antibody"], "positive"), is_(r["syphilis"], "positive"),
               is_(r["cmv_dna"], "positive"))


def e5(r: dict[str, Any], d: Definitions) -> Any:
    return within_before(r["last_live_vaccine"], 4, "weeks", r["screening"])


def e6(r: dict[str, Any], d: Definitions) -> Any:
    return or3(when(is_(r["sex"], "female"), or3(truth(r["pregnant"]), truth(r["breastfeeding"]))),
               truth(r["pregnancy_planned"]))


_EXCEPTED_TREATED = ("cervical_cis", "basal_cell_skin", "squamous_cell_skin")
_EXCEPTED_SURGERY = ("localized_prostate", "ductal_cis")


def e7(r: dict[str, Any], d: Definitions) -> Any:
    found = r["malignancies"]
    if found is None:
        return None
    return or3(False, *(not3(or3(and3(is_(m["kind"], *_EXCEPTED_TREATED), truth(m["adequately_treated"])),
                                 and3(is_(m["kind"], *_EXCEPTED_SURGERY), truth(m["radical_surgery"]))))
                        for m in found))


def e8(r: dict[str, Any], d: Definitions) -> Any:
    return overlaps_before(r["other_study"], 3, "months", r["screening"])


def e9(r: dict[str, Any], d: Definitions) -> Any:
    return truth(r["unsuitable"])


OUTCOME = {True: "met", False: "not met", None: "unknown", NA: "not applicable", MAYBE: "unknown",
           MET_OR_NA: "met or not applicable", NOT_MET_OR_NA: "not met or not applicable"}
_BLOCKS_INCLUSION = (None, MAYBE, NOT_MET_OR_NA)  # unknown, and some completion is not met
_BLOCKS_EXCLUSION = (None, MAYBE, MET_OR_NA)


def _outcome(value: Any) -> str:
    return OUTCOME[value]


def evaluate_by_hand(record: Any) -> tuple[str, dict[str, str]]:
    """The decision and every criterion's outcome, by id."""
    r = read(record)
    d = Definitions(r)
    p2, p3, p5 = i2_parts(r, d), i3_parts(r, d), i5_parts(r, d)
    values = {
        "I1": i1(r, d), "I2": or3(*p2), **{f"I2.{n}": v for n, v in enumerate(p2, 1)},
        "I3": and3(d.refractory(), *p3[:4], p3[7]),
        "I3.1": p3[0], "I3.2": p3[1], "I3.3": p3[2], "I3.4": p3[3], "I3.4.1": p3[4], "I3.4.2": p3[5],
        "I3.4.3": p3[6], "I3.5": p3[7],
        "I4": i4(r, d), "I5": and3(*p5), **{f"I5.{n}": v for n, v in enumerate(p5, 1)},
        "E1": e1(r, d), "E2": e2(r, d), "E3": e3(r, d), "E4": e4(r, d), "E5": e5(r, d), "E6": e6(r, d),
        "E7": e7(r, d), "E8": e8(r, d), "E9": e9(r, d),
    }
    refused = any(values[i] is False for i in ("I1", "I2", "I3", "I4", "I5")) or any(
        values[f"E{n}"] is True for n in range(1, 10))
    if refused:
        decision = "ineligible"
    elif any(values[i] in _BLOCKS_INCLUSION for i in ("I1", "I2", "I3", "I4", "I5")) or any(
            values[f"E{n}"] in _BLOCKS_EXCLUSION for n in range(1, 10)):
        decision = "needs review"
    else:
        decision = "eligible"
    return decision, {key: _outcome(value) for key, value in values.items()}


def i2(r: dict[str, Any], d: Definitions) -> Any:
    return or3(*i2_parts(r, d))


def i3(r: dict[str, Any], d: Definitions) -> Any:
    refractory = d.refractory()
    if refractory is False:
        return False
    parts = i3_parts(r, d)
    return and3(refractory, *parts[:4], parts[7])


def i5(r: dict[str, Any], d: Definitions) -> Any:
    return and3(*i5_parts(r, d))


_INCLUSIONS = (i1, i2, i3, i4, i5)
_EXCLUSIONS = (e1, e2, e3, e4, e5, e6, e7, e8, e9)


def decide_by_hand(record: Any) -> str:
    """The decision alone: the first inclusion not met or exclusion met settles it."""
    r = read(record)
    d = Definitions(r)
    unknown = False
    for inclusion in _INCLUSIONS:
        value = inclusion(r, d)
        if value is False:
            return "ineligible"
        unknown = unknown or value in _BLOCKS_INCLUSION
    for exclusion in _EXCLUSIONS:
        value = exclusion(r, d)
        if value is True:
            return "ineligible"
        unknown = unknown or value in _BLOCKS_EXCLUSION
    return "needs review" if unknown else "eligible"
