"""A seeded synthetic FHIR R4 cohort for JY231: the patients of `benchmarks/cohort.py`, as FHIR.

Each JSON record of `cohort(size, seed)` is translated into the FHIR resources a site's EHR would
hold for that patient, driven by the mapping file (`protocols/schemas/autoimmune.fhir.toml`, read
by `crit.sources.fhir_mapping.load`): the codes, units, value paths, statuses and look-back windows
all come from it, so `crit screen --from fhir` reading the result must rebuild the same patients.
Fields the mapping leaves to manual entry (judgments, consent, assessments) go to a JSON Lines
file keyed by `id`, one line a patient.

It looks like an export rather than a unit test: units as laboratories report them (g/dL or g/L,
10*3/uL or 10*9/L, mm or cm), older results a later one supersedes, a result entered in error,
results reported as not performed (`dataAbsentReason`), stale results outside the look-back
window, a refuted differential diagnosis, a live vaccine not given, reference ranges giving the
ULN, several codings of one test, and resources no field reads (vital signs, hypertension,
paracetamol, an influenza shot, allergies).

Records the JSON cohort makes unreadable on purpose become FHIR problems where FHIR can say the
same thing (a unit the mapping does not accept, an impossible date); the others are marked
`left_out` with the reason (FHIR has no field names to misspell, and gives a birth date, not an
age), and a comparison leaves them out.

    python benchmarks/fhir_cohort.py 100000 -o /tmp/fhir --manual /tmp/manual.jsonl            # $export NDJSON
    python benchmarks/fhir_cohort.py 40 -o /tmp/b --layout bundles --manual /tmp/manual.jsonl  # a Bundle a patient
    python benchmarks/fhir_cohort.py 40 -o /tmp/all.json --layout bundle --manual /tmp/m.jsonl # one Bundle

The same seed always gives the same resources, and the same patients as `cohort.py` with that seed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import re
import sys
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import cohort  # noqa: E402

from crit import ir  # noqa: E402
from crit.driver import load as load_protocol  # noqa: E402
from crit.sources import fhir_mapping  # noqa: E402
from crit.sources.fhir_mapping import Code, FieldMap, ItemMap, Mapping  # noqa: E402

JY231 = ROOT / "protocols" / "jy231.crit"
MAPPING = ROOT / "protocols" / "schemas" / "autoimmune.fhir.toml"

Resource = dict[str, Any]
UCUM = "http://unitsofmeasure.org"
ABSENT_REASON = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
LOCAL_LAB = "urn:oid:2.16.840.1.113883.3.9999.lab"  # a laboratory's own test codes, beside LOINC
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ATC = "http://www.whocc.no/atc"
CVX = "http://hl7.org/fhir/sid/cvx"

# ---- what the mapping cannot say: real codes behind its prefixes, and how units are printed ----

# A prefix in the mapping (`icd10|M32*`) matches a family of codes; a real record carries one
# member of it. The first completion listed is the most common.
COMPLETIONS: dict[tuple[str, str], tuple[str, ...]] = {
    (ICD10, "M32"): ("M32.1", "M32.9", "M32.8"),
    (ICD10, "M35.0"): ("M35.0",),
    (ICD10, "M34"): ("M34.0", "M34.1", "M34.8"),
    (ICD10, "M33.0"): ("M33.0",),
    (ICD10, "M33.1"): ("M33.1",),
    (ICD10, "M31.3"): ("M31.3",),
    (ICD10, "M31.7"): ("M31.7",),
    (ICD10, "M30.1"): ("M30.1",),
    (ICD10, "J84"): ("J84.1", "J84.9"),
    (ATC, "J01"): ("J01CA04", "J01DD04", "J01FA10", "J01MA02"),  # amoxicillin, ceftriaxone, azithromycin, ciprofloxacin
    (ATC, "J02"): ("J02AC01",),  # fluconazole
    (ATC, "J04"): ("J04AB02",),  # rifampicin
    (ATC, "J05"): ("J05AB01", "J05AB11"),  # aciclovir, valaciclovir
    (ATC, "L01XL"): ("L01XL03", "L01XL04"),  # axicabtagene ciloleucel, tisagenlecleucel
    (ATC, "L04"): ("L04AA06",),
    (ATC, "H02AB"): ("H02AB06", "H02AB04"),  # prednisolone, methylprednisolone
}
# The ATC code of each agent the JSON cohort gives (benchmarks/cohort.py AGENTS).
AGENT_CODES = {
    "mycophenolate mofetil": "L04AA06",
    "tacrolimus": "L04AD02",
    "azathioprine": "L04AX01",
    "cyclophosphamide": "L01AA01",
    "methotrexate": "L01BA01",
    "rituximab": "L01FA01",
    "belimumab": "L04AA26",
}
# How laboratory systems print a UCUM unit in Quantity.unit (the code stays the UCUM code).
DISPLAYS: dict[str, tuple[str, ...]] = {
    "10*3/uL": ("10^3/uL", "x10E3/uL", "K/uL"),
    "10*9/L": ("10^9/L", "x10E9/L"),
    "umol/L": ("µmol/L", "umol/L"),
    "[IU]/mL": ("IU/mL",),
    "mL/min/{1.73_m2}": ("mL/min/1.73m2", "mL/min/1.73 m²"),
}
# Codes and names for a diagnosis the mapping leaves to manual entry ("another autoimmune disease").
OTHER_DIAGNOSES = ((ICD10, "M06.9", "Rheumatoid arthritis, unspecified"), (SNOMED, "24700007", "Multiple sclerosis"),
                   (ICD10, "M35.3", "Polymyalgia rheumatica"))
NEGATIVE = (SNOMED, "260385009", "Negative")  # a set member's test that found nothing
NOT_LIVE_VACCINES = (("141", "Influenza, seasonal, injectable"), ("208", "COVID-19, mRNA"),
                     ("08", "Hep B, adolescent or pediatric"))

# The crit spelling of a unit back to UCUM, for a unit the mapping does not list (the mapping's
# own units are matched through `fhir_mapping.crit_unit`).
_TO_UCUM = (("IU", "[IU]"), ("1.73m2", "{1.73_m2}"))


def ucum_of(unit: str, accepted: Iterable[str]) -> str:
    """The UCUM code for a unit as crit writes it: the mapping's own spelling when it lists the
    unit, else the usual UCUM form (`10^3/uL` → `10*3/uL`, `IU/mL` → `[IU]/mL`)."""
    for code in accepted:
        if fhir_mapping.crit_unit(code) == unit:
            return code
    text = re.sub(r"10\^(?=[0-9])", "10*", unit.replace("µ", "u").replace("μ", "u"))
    for plain, special in _TO_UCUM:
        text = text.replace(plain, special)
    return text


class LeftOut(Exception):
    """A record FHIR cannot say: the message says why, and a comparison leaves it out."""


class Unsaid(Exception):
    """A field FHIR cannot say for this patient (a diagnosis date when the diagnosis itself is
    entered by hand: every code that would date it would also name a diagnosis); the field is
    left out of the FHIR, and the message says why."""


@dataclass
class FhirPatient:
    """One patient of the cohort: the JSON record, its FHIR resources (the Patient first), the
    manual-entry line, and, for a record made unreadable on purpose, what FHIR makes of it:
    `expect_error` when the FHIR reader must report a problem, `left_out` when FHIR cannot say
    it at all."""

    number: int
    id: str
    record: dict[str, Any]
    resources: list[Resource]
    manual: dict[str, Any]
    expect_error: str | None = None
    left_out: str | None = None
    unsaid: list[str] = field(default_factory=list)


# ---- FHIRPath, inverted -----------------------------------------------------------------------

# FHIR elements that are lists (a path into one writes its first item).
_LISTS = frozenset(("referenceRange", "coding", "type", "category", "identifier", "note", "component"))
_STEP = re.compile(r"([A-Za-z][A-Za-z0-9]*)(?:\.(?:as|ofType)\(([A-Za-z]+)\))?")


def _keys(path: str) -> list[str]:
    """The JSON keys a simple FHIRPath (`effective.as(Period).start`, `referenceRange.high`)
    walks; `ValueError` for anything else (a function, a filter)."""
    keys: list[str] = []
    rest = path.strip()
    while rest:
        step = _STEP.match(rest)
        if step is None:
            raise ValueError(f"cannot write a value at FHIRPath {path!r}")
        name, kind = step.groups()
        keys.append(name + (kind[0].upper() + kind[1:] if kind else ""))
        rest = rest[step.end():]
        if rest and not rest.startswith("."):
            raise ValueError(f"cannot write a value at FHIRPath {path!r}")
        rest = rest[1:]
    return keys


def alternatives(path: str) -> list[str]:
    """The alternatives of a FHIRPath union (`a | b`): the reader takes the first non-empty."""
    return [part.strip() for part in path.split("|")]


def put(resource: Resource, path: str, value: Any) -> None:
    """Write `value` where the FHIRPath `path` (one alternative) reads it."""
    keys = _keys(path)
    node: Any = resource
    for key in keys[:-1]:
        if key in _LISTS:
            items = node.setdefault(key, [{}])
            node = items[0]
        else:
            node = node.setdefault(key, {})
    last = keys[-1]
    node[last] = [value] if last in _LISTS and not isinstance(value, list) else value


def clear(resource: Resource, path: str) -> None:
    """Remove what the FHIRPath `path` (one alternative) reads, so that a later alternative of a
    union is the one read."""
    keys = _keys(path)
    node: Any = resource
    for key in keys[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        node = node[0] if isinstance(node, list) and node else node
    if isinstance(node, dict):
        node.pop(keys[-1], None)


# FHIR R4 choice elements ([x]) of the resources a mapping reads.
_CHOICES = frozenset(("value", "effective", "onset", "abatement", "occurrence", "medication", "performed",
                      "deceased", "multipleBirth", "reported"))


def choice(path: str, kind: str) -> str:
    """A bare choice element (`value`) typed by the value written there (`valueRatio`)."""
    return f"{path}.as({kind})" if path in _CHOICES else path


_EQUALS = re.compile(r"^\s*([A-Za-z][A-Za-z0-9.]*)\s*=\s*'([^']*)'\s*$")
_EMPTY = re.compile(r"^\s*([A-Za-z][A-Za-z0-9.()]*)\.empty\(\)\s*$")


def set_ongoing(resource: Resource, expression: str, ongoing: bool, otherwise: str) -> None:
    """Make the FHIRPath boolean `expression` (`status = 'active'`, `period.end.empty()`) hold
    when `ongoing`, and not hold otherwise (then the element takes `otherwise`, or is left as
    the caller wrote it)."""
    equals = _EQUALS.match(expression)
    if equals is not None:
        put(resource, equals.group(1), equals.group(2) if ongoing else otherwise)
        return
    empty = _EMPTY.match(expression)
    if empty is not None:
        if ongoing:
            keys = _keys(empty.group(1))
            node: Any = resource
            for key in keys[:-1]:
                node = node.get(key, {})
                node = node[0] if isinstance(node, list) else node
            if isinstance(node, dict):
                node.pop(keys[-1], None)
        return
    raise ValueError(f"cannot make {expression!r} hold: write it as `path = 'value'` or `path.empty()`")


# ---- small FHIR values ------------------------------------------------------------------------


def number(value: Decimal | int | float) -> int | float:
    """A JSON number for an exact decimal (short decimals survive float's shortest repr)."""
    if isinstance(value, int | float):
        return value
    places = value.as_tuple().exponent
    return int(value) if isinstance(places, int) and places >= 0 else float(value)


def exact(value: Fraction) -> Decimal | None:
    """`value` as a Decimal, when a finite decimal writes it exactly."""
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator != 1:
        return None
    places = 0
    while (value * 10 ** places).denominator != 1:
        places += 1
    return Decimal(value.numerator * 10 ** places // value.denominator) / Decimal(10 ** places)


def coding(code: Code, rng: random.Random) -> dict[str, Any]:
    """A Coding that matches `code`: a prefix completed to a real code of its family."""
    value = code.code
    if code.prefix:
        options = COMPLETIONS.get((code.system or "", code.code), (code.code.rstrip("."),))
        value = rng.choice(options)
        assert code.matches(code.system, value), (code.text, value)
    out: dict[str, Any] = {"code": value}
    if code.system is not None:
        out = {"system": code.system, **out}
    return out


def concept(codes: Iterable[dict[str, Any]], text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": list(codes)}
    if text:
        out["text"] = text
    return out


def quantity(value: Decimal | int | float, ucum: str, rng: random.Random) -> dict[str, Any]:
    display = rng.choice(DISPLAYS.get(ucum, (ucum,)))
    return {"value": number(value), "unit": display, "system": UCUM, "code": ucum}


def moment(day: datetime.date, rng: random.Random, timed: bool) -> str:
    """A day as FHIR dateTime: a date, or (as laboratories report) a time with its offset."""
    if not timed:
        return day.isoformat()
    return f"{day.isoformat()}T{rng.randint(7, 17):02d}:{rng.choice((0, 15, 30, 45)):02d}:00+01:00"


def _parse(text: Any) -> datetime.date | None:
    try:
        return datetime.date.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


# ---- the translator -----------------------------------------------------------------------------


@dataclass
class _Patient:
    """One patient's resources as they are built."""

    id: str
    rng: random.Random
    anchor: datetime.date  # the screening date (or the nearest readable day, for an impossible one)
    resources: list[Resource] = field(default_factory=list)
    fields_of: dict[int, set[str]] = field(default_factory=dict)  # id(resource) → fields written there

    def new(self, kind: str, field_name: str | None = None, **body: Any) -> Resource:
        ident = self.id if kind == "Patient" else str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        resource: Resource = {"resourceType": kind, "id": ident}
        resource.update(body)
        key = {"Patient": None, "Immunization": "patient", "ResearchSubject": "individual",
               "AllergyIntolerance": "patient"}.get(kind, "subject")
        if key is not None:
            resource[key] = {"reference": f"Patient/{self.id}"}
        self.resources.append(resource)
        self.fields_of[id(resource)] = {field_name} if field_name else set()
        return resource


class Translator:
    """Turns JSON records into FHIR resources as the mapping reads them, with the schema's field
    types (`protocol`: a protocol importing the schema the mapping maps)."""

    def __init__(self, mapping: Mapping, protocol: ir.Protocol) -> None:
        self.mapping = mapping
        self.types = {f.name: f for f in protocol.fields}
        self.records = {r.name: r for r in protocol.records}
        unmapped = set(self.types) - {f.name for f in mapping.fields}
        if unmapped:
            raise ValueError(f"the mapping leaves out {', '.join(sorted(unmapped))}")
        # Fields whose member is told by the resource's own code go first, so that a field read
        # from the same resource (diagnosis_date from diagnosis's Condition) finds it.
        told = [f for f in mapping.fields if f.members and f.value is None and f.resource not in (None, "Patient")
                and f.select in ("one", "latest", "earliest")]
        self.order = told + [f for f in mapping.fields if f not in told]
        self.told_codes: dict[str, list[tuple[FieldMap, Code]]] = {}
        for f in told:
            for member in f.members:
                for code in member.codes:
                    self.told_codes.setdefault(f.resource or "", []).append((f, code))
        self.read_codes = [(f.resource, c) for f in mapping.fields for c in f.resource_codes()]
        self._shares: dict[str, bool] = {}
        self._free: dict[tuple[str, tuple[Code, ...]], list[Code]] = {}

    # -- one record --

    def patient(self, number: int, record: dict[str, Any], seed: int) -> FhirPatient:
        rng = random.Random(f"fhir:{seed}:{number}")
        ident = str(record.get("id"))
        screening = self.mapping.field("screening")
        anchor_text = record.get("screening")
        anchor = _parse(anchor_text) or _nearest_day(anchor_text) or cohort.FIRST_SCREENING
        p = _Patient(ident, rng, anchor)
        p.new("Patient", None, active=True)
        manual: dict[str, Any] = {"id": record.get("id")}
        result = FhirPatient(number, ident, record, p.resources, manual)
        for key in record:
            if key != "id" and key not in self.types:
                result.left_out = (f"{key}: not a field of the schema (a misspelt name); FHIR has codes, "
                                   "not field names, so it cannot carry the mistake")
        for fm in self.order:
            if fm.manual is not None:
                if fm.name in record:
                    manual[fm.name] = record[fm.name]
                continue
            try:
                problem = self.field(p, fm, record, manual)
            except LeftOut as why:
                result.left_out = result.left_out or f"{fm.name}: {why}"
                continue
            except Unsaid as why:
                result.unsaid.append(f"{fm.name}: {why}")
                continue
            if problem and result.expect_error is None:
                result.expect_error = f"{fm.name}: {problem}"
        if screening is not None and _parse(anchor_text) is None and result.expect_error is None:
            result.expect_error = f"screening: {anchor_text!r} is not a date"
        self.noise(p)
        rng.shuffle(p.resources)  # then in the order they were recorded, as a server stores them
        p.resources.sort(key=lambda r: (r["resourceType"] != "Patient", _when(r)))
        return result

    def field(self, p: _Patient, fm: FieldMap, record: dict[str, Any], manual: dict[str, Any]) -> str | None:
        """Write one field's resources; the problem the FHIR reader must report, if any."""
        typ = self.types[fm.name].type
        present = fm.name in record
        value = record.get(fm.name)
        if fm.resource == "Patient":
            return self.patient_field(p, fm, typ, value, present)
        if not present:
            self.absent(p, fm, typ)
            return None
        if value is None or (value == [] and fm.absent == "empty"):
            if value is None and fm.absent != "none":
                raise LeftOut("recorded none, which this field's mapping cannot say")
            self.none_noise(p, fm)
            return None
        if typ.kind == "list":
            return self.list_items(p, fm, value, record)
        if typ.kind == "set":
            return self.set_members(p, fm, value)
        if typ.kind == "interval":
            return self.interval(p, fm, value)
        if fm.select == "any":
            if value is True:
                self.resource_with_code(p, fm, fm.resource_codes(), self.date_of(p, fm))
            return None
        if fm.members and fm.value is None:
            member = self.member(fm, typ, value)
            if member.manual:
                manual[fm.name] = value
                self.unmapped_condition(p, fm, record)
                return None
            resource = self.resource_with_code(p, fm, member.codes, self.date_of(p, fm))
            if fm.resource == "Condition" and p.rng.random() < 0.3:
                self.second_coding(p, resource, member.codes)
            if p.rng.random() < 0.2 and self.may_repeat(fm):
                self.repeat(p, fm, member.codes, record)
            return None
        return self.valued(p, fm, typ, value)

    # -- the kinds of field --

    def patient_field(self, p: _Patient, fm: FieldMap, typ: ir.Type, value: Any, present: bool) -> str | None:
        patient = p.resources[0]
        if not present:
            return None
        if fm.age_at is not None:
            if not isinstance(value, int) or isinstance(value, bool):
                raise LeftOut(f"{value!r} is not an age; FHIR gives a birth date, from which crit works out the age")
            put(patient, fm.value or "birthDate", _birth_date(value, p.anchor, p.rng).isoformat())
            return None
        if fm.members:
            member = self.member(fm, typ, value)
            put(patient, fm.value or "gender", member.codes[0].code)
            return None
        put(patient, fm.value or "", value)
        return None

    def member(self, fm: FieldMap, typ: ir.Type, value: Any) -> fhir_mapping.MemberMap:
        name = ("true" if value else "false") if isinstance(value, bool) else value
        for member in fm.members:
            if member.name == name:
                return member
        raise LeftOut(f"{value!r} is not one of the field's values; FHIR would hold it as a code the mapping does "
                      "not know, or as text")

    def valued(self, p: _Patient, fm: FieldMap, typ: ir.Type, value: Any) -> str | None:
        """A value read by `fm.value` from one resource: a quantity, lab, score, enum, date, titer."""
        assert fm.value is not None, fm.name
        day = self.date_of(p, fm)
        resource = self.resource_with_code(p, fm, fm.resource_codes(), day)
        problem = self.write_value(p, fm, typ, value, resource)
        if fm.resource == "Observation" and fm.select == "latest":
            self.older_results(p, fm, typ, value, resource, day)
        elif typ.kind == "date" and fm.select == "latest" and (given := _parse(value)) and p.rng.random() < 0.3:
            older = self.resource_with_code(p, fm, fm.resource_codes(), day, reuse=False)
            earlier = given - datetime.timedelta(days=p.rng.randint(30, 2000))
            self.write_value(p, fm, typ, earlier.isoformat(), older)
        return problem

    def write_value(self, p: _Patient, fm: FieldMap, typ: ir.Type, value: Any, resource: Resource) -> str | None:
        """Write `value` at the field's value path (and its ULN); the problem the reader must find."""
        assert fm.value is not None
        rng = p.rng
        options = alternatives(fm.value)
        path = options[0] if typ.kind in ("quantity", "lab") or len(options) == 1 else rng.choice(options)
        for earlier in options[:options.index(path)]:
            clear(resource, choice(earlier, "Quantity"))
        problem = None
        if typ.kind in ("quantity", "lab"):
            amount, unit = (value.get("value"), value.get("unit")) if isinstance(value, dict) else (value, None)
            unit = unit or (typ.unit.text if typ.unit else "")
            amount, unit = self.vary_unit(typ, fm, amount, unit, rng)
            accepted = {fhir_mapping.crit_unit(u) for u in fm.units}
            if unit not in accepted:
                problem = f"unit {unit!r} is not one the mapping accepts"
            code = ucum_of(unit, fm.units)
            put(resource, choice(path, "Quantity"), quantity(amount, code, rng))
            if typ.kind == "lab" and fm.uln is not None and isinstance(value, dict):
                uln = value["uln"]
                put(resource, fm.uln, quantity(uln, code, rng))
                low = Decimal(str(uln)) / 8
                resource["referenceRange"][0] = {"low": quantity(low.quantize(Decimal(1)), code, rng),
                                                 **resource["referenceRange"][0]}
            return problem
        if typ.kind in ("enum", "bool") and fm.members:
            member = self.member(fm, typ, value)
            said = rng.choice(member.codes)
            written = coding(said, rng)
            if said.system is not None:
                written["display"] = _DISPLAY.get(said.code) or (
                    said.code.replace("-", " ").capitalize() if member.name in ("true", "false") else member.name)
                put(resource, choice(path, "CodeableConcept"), concept([written]))
            else:
                put(resource, path, written["code"])
            return None
        if typ.kind == "titer":
            numerator, denominator = (int(part) for part in str(value).split(":"))
            if rng.random() < 0.5:
                put(resource, choice(path, "Ratio"), {"numerator": {"value": numerator},
                                                      "denominator": {"value": denominator}})
            else:
                put(resource, choice(path, "string"), f"{numerator}:{denominator}")
            return None
        if typ.kind == "integer":
            if not isinstance(value, int) or isinstance(value, bool):
                raise LeftOut(f"{value!r} is not a whole number, and FHIR's integer cannot carry it")
            put(resource, choice(path, "integer"), value)
            return None
        if typ.kind == "decimal":
            put(resource, choice(path, "Quantity"), value)
            return None
        if typ.kind == "date":
            if _parse(value) is None:
                problem = f"{value!r} is not a date"
            put(resource, choice(path, "dateTime"), value)
            return problem
        if typ.kind == "bool":
            put(resource, choice(path, "boolean"), value)
            return None
        put(resource, choice(path, "string"), value)
        return None

    def vary_unit(self, typ: ir.Type, fm: FieldMap, amount: Any, unit: str, rng: random.Random) -> tuple[Any, str]:
        """Re-express a quantity in another unit the mapping accepts, as another laboratory would,
        when the conversion is exact (100 g/L is 10 g/dL; 63 mm is 6.3 cm)."""
        if typ.kind != "quantity" or typ.unit is None or rng.random() < 0.5 or isinstance(amount, bool):
            return amount, unit
        factors = {typ.unit.text: Fraction(1)} | {u.text: Fraction(f) for u, f in typ.also}
        if unit not in factors:
            return amount, unit
        accepted = [fhir_mapping.crit_unit(u) for u in fm.units]
        others = [u for u in accepted if u in factors and u != unit]
        if not others:
            return amount, unit
        target = rng.choice(others)
        converted = exact(Fraction(Decimal(str(amount))) * factors[unit] / factors[target])
        places = converted.as_tuple().exponent if converted is not None else None
        if not isinstance(places, int) or places < -2:
            return amount, unit
        return converted, target

    def interval(self, p: _Patient, fm: FieldMap, value: dict[str, Any]) -> str | None:
        start = _parse(value.get("start"))
        resource = self.resource_with_code(p, fm, fm.resource_codes(), start or p.anchor)
        if fm.start:
            put(resource, fm.start, value["start"])
        if "end" in value and fm.end:
            put(resource, fm.end, value["end"])
        if fm.ongoing:
            set_ongoing(resource, fm.ongoing, bool(value.get("ongoing")), _finished(resource["resourceType"]))
        if fm.select == "latest" and start is not None and p.rng.random() < 0.3:
            older = self.resource_with_code(p, fm, fm.resource_codes(), start, reuse=False)
            begun = start - datetime.timedelta(days=p.rng.randint(200, 900))
            if fm.start:
                put(older, fm.start, begun.isoformat())
            if fm.end:
                put(older, fm.end, (begun + datetime.timedelta(days=p.rng.randint(3, 14))).isoformat())
            if fm.ongoing:
                set_ongoing(older, fm.ongoing, False, _finished(older["resourceType"]))
        return None

    def set_members(self, p: _Patient, fm: FieldMap, value: list[str]) -> str | None:
        """A set: one resource per member present, its result one of `positive`; some members
        tested negative beside them."""
        day = self.date_of(p, fm)
        for name in value:
            member = next((m for m in fm.members if m.name == name), None)
            if member is None or member.manual:
                raise LeftOut(f"{name!r} is not a member FHIR can tell apart")
            resource = self.resource_with_code(p, fm, member.codes, day, reuse=False)
            if fm.value is not None and fm.positive:
                positive = p.rng.choice(fm.positive)
                put(resource, choice(alternatives(fm.value)[0], "CodeableConcept"),
                    concept([{**coding(positive, p.rng), "display": _DISPLAY.get(positive.code, "Positive")}]))
        if fm.value is not None and fm.positive:
            for member in p.rng.sample(fm.members, min(3, len(fm.members))):
                if member.name in value or member.manual:
                    continue
                resource = self.resource_with_code(p, fm, member.codes, day, reuse=False)
                system, code, display = NEGATIVE
                put(resource, choice(alternatives(fm.value)[0], "CodeableConcept"),
                    concept([{"system": system, "code": code, "display": display}]))
        return None

    def list_items(self, p: _Patient, fm: FieldMap, items: list[dict[str, Any]], record: dict[str, Any]) -> str | None:
        """A list of records: one resource per item, each sub-field where its item map reads it."""
        for item in items:
            codes = self.item_codes(fm, item)
            start = next((_parse(item.get(i.name)) for i in fm.items if i.name == "start"), None)
            resource = self.resource_with_code(p, fm, codes, start or p.anchor, reuse=False)
            for sub in fm.items:
                self.item(p, fm, sub, item, resource, record)
        return None

    def item_codes(self, fm: FieldMap, item: dict[str, Any]) -> tuple[Code, ...]:
        """The codes one item's resource may carry: its agent's own code when the domain table
        knows it, filtered by what `code_in` sub-fields require of it."""
        agent = item.get("agent")
        if isinstance(agent, str) and agent in AGENT_CODES:
            system = next((c.system for c in fm.resource_codes() if c.system), None)
            codes: tuple[Code, ...] = (Code(system, AGENT_CODES[agent], False, AGENT_CODES[agent]),)
        else:
            codes = fm.resource_codes()
        for sub in fm.items:
            if sub.kind != "code_in" or sub.name not in item:
                continue
            wanted = bool(item[sub.name])
            codes = tuple(c for c in codes if self.code_in(sub, c) == wanted) or tuple(
                c for c in fm.resource_codes() if self.code_in(sub, c) == wanted)
        if not codes or not any(f.matches(c.system, c.code) for c in codes for f in fm.resource_codes()):
            raise LeftOut(f"no code the mapping reads says this item ({item!r})")
        return codes

    @staticmethod
    def code_in(sub: ItemMap, code: Code) -> bool:
        return any(c.matches(code.system, code.code) for c in sub.code_in)

    def item(self, p: _Patient, fm: FieldMap, sub: ItemMap, item: dict[str, Any], resource: Resource,
             record: dict[str, Any]) -> None:
        if sub.kind == "code_in":
            return  # said by the resource's code
        if sub.kind == "manual":
            if sub.name in item:
                raise LeftOut(f"{sub.name} of an item is manual, and an item comes whole from one source")
            return
        if sub.kind == "members":
            raise LeftOut("an item's member from its code is not generated")
        assert sub.value is not None
        if sub.name == "agent" and isinstance(item.get("agent"), str):
            put(resource, sub.value, item["agent"])
            return
        given = item.get(sub.name)
        ongoing = False
        if sub.ongoing is not None and sub.otherwise is not None and given == record.get(sub.otherwise) \
                and p.rng.random() < 0.5:
            ongoing = True  # still taken at screening: the reader ends it there
        elif sub.name in item:
            put(resource, sub.value, given)
        if sub.ongoing is not None:
            finished = p.rng.choice(("completed", "completed", "stopped")) if resource["resourceType"].startswith(
                "Medication") else _finished(resource["resourceType"])
            set_ongoing(resource, sub.ongoing, ongoing, finished)

    def absent(self, p: _Patient, fm: FieldMap, typ: ir.Type) -> None:
        """A field the record lacks: no resource, or (as laboratories report) a result not
        performed, or one too old for the look-back window."""
        if fm.resource != "Observation" or fm.select != "latest" or fm.value is None:
            return
        roll = p.rng.random()
        if roll < 0.25:
            resource = self.resource_with_code(p, fm, fm.resource_codes(), self.date_of(p, fm))
            reason = p.rng.choice((("not-performed", "Not Performed"), ("error", "Error"), ("unknown", "Unknown")))
            resource["dataAbsentReason"] = concept([{"system": ABSENT_REASON, "code": reason[0], "display": reason[1]}])
        elif roll < 0.35 and fm.within is not None:
            stale = p.anchor - datetime.timedelta(days=fm.within.days + p.rng.randint(1, 300))
            resource = self.resource_with_code(p, fm, fm.resource_codes(), stale)
            self.write_value(p, fm, typ, self.plausible(typ, fm, p.rng), resource)

    def older_results(self, p: _Patient, fm: FieldMap, typ: ir.Type, value: Any, current: Resource,
                      day: datetime.date) -> None:
        """An earlier result the current one supersedes, and a later one entered in error."""
        rng = p.rng
        if rng.random() < 0.3:
            earlier = day - datetime.timedelta(days=rng.randint(1, 200))
            older = self.resource_with_code(p, fm, fm.resource_codes(), earlier, reuse=False)
            self.write_value(p, fm, typ, self.plausible(typ, fm, rng), older)
        if rng.random() < 0.04:
            wrong = self.resource_with_code(p, fm, fm.resource_codes(), day, reuse=False)
            self.write_value(p, fm, typ, self.plausible(typ, fm, rng), wrong)
            wrong["status"] = fhir_mapping.ENTERED_IN_ERROR

    def plausible(self, typ: ir.Type, fm: FieldMap, rng: random.Random) -> Any:
        """Another value of the field's type, for results that must not be the one read."""
        bounds = self.types[fm.name].plausible
        if typ.kind == "lab":
            return {"value": rng.randint(1, 400), "uln": 40 if typ.unit is None or typ.unit.text == "U/L" else 20}
        if typ.kind == "quantity":
            low, high = (1, 100) if bounds is None else (bounds.low, bounds.high)
            return rng.randint(int(low), int(high))
        if typ.kind in ("enum", "bool") and fm.members:
            return rng.choice([m.name for m in fm.members if not m.manual]) if typ.kind == "enum" \
                else rng.choice([True, False])
        if typ.kind == "titer":
            return rng.choice(("1:40", "1:80", "1:2560"))
        if typ.kind == "integer":
            low, high = (0, 20) if bounds is None else (bounds.low, bounds.high)
            return rng.randint(int(low), int(high))
        if typ.kind == "decimal":
            return rng.choice((0.125, 1.875, 2.5))
        return None

    # -- resources --

    def resource_with_code(self, p: _Patient, fm: FieldMap, codes: tuple[Code, ...], day: datetime.date,
                           reuse: bool = True) -> Resource:
        """A resource of the field's type with one of `codes` (or an earlier field's resource
        that already carries one and leaves this field's elements free), dated `day`."""
        kind = fm.resource or "Observation"
        if reuse and self.shares(fm):
            for resource in p.resources:
                if resource["resourceType"] == kind and fm.name not in p.fields_of[id(resource)] \
                        and p.fields_of[id(resource)] and self.carries(resource, codes):
                    p.fields_of[id(resource)].add(fm.name)
                    return resource
        free = self.free(fm, codes)
        if codes and not free:
            raise Unsaid("every code that would say it also says another field's value")
        resource = p.new(kind, fm.name, **self.skeleton(kind, fm, day, p.rng))
        if codes:
            chosen = p.rng.choice(free)
            codings = [coding(chosen, p.rng) | self.display(fm, chosen)]
            if kind == "Observation" and p.rng.random() < 0.3:  # the laboratory's own code first
                codings.insert(0, {"system": LOCAL_LAB, "code": fm.name.upper().replace("_", "")[:8]})
            self.set_code(resource, kind, codings)
        return resource

    def shares(self, fm: FieldMap) -> bool:
        """Whether another field reads resources of this type by an overlapping code (then one
        resource may carry both fields: diagnosis and its date)."""
        if fm.name not in self._shares:
            mine = fm.resource_codes()
            self._shares[fm.name] = any(
                other.name != fm.name and other.resource == fm.resource
                and any(_overlap(a, b) for a in mine for b in other.resource_codes())
                for other in self.mapping.fields)
        return self._shares[fm.name]

    def free(self, fm: FieldMap, codes: tuple[Code, ...]) -> list[Code]:
        """The codes that say nothing else: a code another field tells its member by would say
        that member."""
        key = (fm.name, codes)
        if key not in self._free:
            told = [c for f, c in self.told_codes.get(fm.resource or "", []) if f.name != fm.name]
            self._free[key] = [c for c in codes if not any(_overlap(c, t) for t in told)]
        return self._free[key]

    def may_repeat(self, fm: FieldMap) -> bool:
        """Whether a second resource saying the same member changes nothing the mapping reads:
        no other field takes a value from such resources by the latest one."""
        return fm.select in ("one", "any") and not any(
            other.resource == fm.resource and other.value is not None and other.select == "latest"
            and set(other.code) & {c for m in fm.members for c in m.codes} for other in self.mapping.fields)

    def repeat(self, p: _Patient, fm: FieldMap, codes: tuple[Code, ...], record: dict[str, Any]) -> None:
        """The same diagnosis recorded again (an encounter diagnosis beside the problem list),
        without an onset, recorded later."""
        first = min((d for d in (_parse(v) for v in record.values() if isinstance(v, str)) if d), default=p.anchor)
        day = p.anchor - datetime.timedelta(days=p.rng.randint(0, max(0, (p.anchor - first).days // 2)))
        again = p.new(fm.resource or "Condition", fm.name, **self.skeleton(fm.resource or "Condition", fm, day, p.rng))
        again.pop("onsetDateTime", None)
        again["recordedDate"] = day.isoformat()
        self.set_code(again, again["resourceType"], [coding(p.rng.choice(codes), p.rng)])

    def carries(self, resource: Resource, codes: tuple[Code, ...]) -> bool:
        return any(code.matches(c.get("system"), c.get("code", "")) for c in _codings(resource) for code in codes)

    def display(self, fm: FieldMap, code: Code) -> dict[str, str]:
        label = self.types[fm.name].label if fm.name in self.types else None
        return {"display": label} if label and fm.resource != "MedicationStatement" else {}

    @staticmethod
    def set_code(resource: Resource, kind: str, codings: list[dict[str, Any]]) -> None:
        text = codings[0].get("display")
        if kind == "Encounter":
            resource["type"] = [concept(codings, text)]
        elif kind.startswith("Medication"):
            resource["medicationCodeableConcept"] = concept(codings, text)
        elif kind == "Immunization":
            resource["vaccineCode"] = concept(codings, text)
        elif kind == "ResearchSubject":
            resource["study"]["identifier"] = {"system": codings[0].get("system"), "value": codings[0]["code"]}
        else:
            resource["code"] = concept(codings, text)

    def second_coding(self, p: _Patient, resource: Resource, codes: tuple[Code, ...]) -> None:
        """Another coding of the same concept (an ICD-10 code beside the SNOMED one)."""
        have = {(c.get("system"), c.get("code")) for c in _codings(resource)}
        others = [c for c in codes if c.system not in {s for s, _ in have}]
        if others:
            resource["code"]["coding"].append(coding(p.rng.choice(others), p.rng))

    def skeleton(self, kind: str, fm: FieldMap, day: datetime.date, rng: random.Random) -> dict[str, Any]:
        """The elements a resource of `kind` needs (status, dates), before the field's own."""
        if kind == "Observation":
            category = "laboratory" if fm.units or fm.uln or (fm.code and fm.code[0].system == LOINC) else "survey"
            status = rng.choice(("final",) * 8 + ("amended", "corrected"))
            return {"status": status,
                    "category": [concept([{"system": OBSERVATION_CATEGORY, "code": category}])],
                    "effectiveDateTime": moment(day, rng, category == "laboratory"),
                    "issued": f"{day.isoformat()}T18:00:00+01:00"}
        if kind == "Condition":
            return {"clinicalStatus": concept([{"system": CLINICAL, "code": "active"}]),
                    "verificationStatus": concept([{"system": VERIFICATION, "code": "confirmed"}]),
                    "onsetDateTime": day.isoformat()}
        if kind.startswith("Medication"):
            return {"status": "completed", "effectivePeriod": {"start": day.isoformat()}}
        if kind == "Immunization":
            return {"status": "completed", "occurrenceDateTime": day.isoformat()}
        if kind == "Encounter":
            return {"status": "finished", "class": {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"},
                    "period": {"start": day.isoformat()}}
        if kind == "ResearchSubject":
            return {"status": "off-study", "study": {"display": rng.choice(("an observational registry",
                                                                              "a phase 2 trial of another agent"))},
                    "period": {"start": day.isoformat()}}
        if kind == "Procedure":
            return {"status": "completed", "performedDateTime": day.isoformat()}
        return {}

    def date_of(self, p: _Patient, fm: FieldMap) -> datetime.date:
        """When a field's result is dated: inside its look-back window, else in the weeks before screening."""
        days = fm.within.days if fm.within is not None else 60
        if fm.name == "screening":
            return p.anchor
        return p.anchor - datetime.timedelta(days=p.rng.randint(0, min(days, 60)))

    def unmapped_condition(self, p: _Patient, fm: FieldMap, record: dict[str, Any]) -> None:
        """The Condition of a diagnosis the mapping leaves to manual entry: a code it does not read."""
        system, code, display = p.rng.choice(OTHER_DIAGNOSES)
        assert not any(kind == "Condition" and c.matches(system, code) for kind, c in self.read_codes)
        day = _parse(record.get("diagnosis_date")) or p.anchor
        resource = p.new("Condition", None, **self.skeleton("Condition", fm, day, p.rng))
        resource["code"] = concept([{"system": system, "code": code, "display": display}], display)

    def none_noise(self, p: _Patient, fm: FieldMap) -> None:
        """Beside a recorded none, a resource of the kind that does not count: a live vaccine
        not given."""
        if fm.resource == "Immunization" and p.rng.random() < 0.2:
            resource = self.resource_with_code(p, fm, fm.resource_codes(), self.date_of(p, fm), reuse=False)
            resource["status"] = "not-done"
            resource["statusReason"] = concept([{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                                 "code": "PATOBJ", "display": "patient objection"}])

    def noise(self, p: _Patient) -> None:
        """Resources no field reads: vital signs, another problem, a common medicine, a flu shot,
        an allergy, a follow-up visit."""
        rng = p.rng
        day = p.anchor - datetime.timedelta(days=rng.randint(0, 30))
        if rng.random() < 0.8:
            obs = p.new("Observation", None, status="final",
                        category=[concept([{"system": OBSERVATION_CATEGORY, "code": "vital-signs"}])],
                        code=concept([{"system": LOINC, "code": "29463-7", "display": "Body weight"}], "Body weight"),
                        effectiveDateTime=moment(day, rng, True))
            obs["valueQuantity"] = quantity(rng.randint(45, 110), "kg", rng)
        if rng.random() < 0.6:
            obs = p.new("Observation", None, status="final",
                        category=[concept([{"system": OBSERVATION_CATEGORY, "code": "vital-signs"}])],
                        code=concept([{"system": LOINC, "code": "8867-4", "display": "Heart rate"}], "Heart rate"),
                        effectiveDateTime=moment(day, rng, True))
            obs["valueQuantity"] = quantity(rng.randint(55, 100), "/min", rng)
        if rng.random() < 0.3:
            condition = p.new("Condition", None, clinicalStatus=concept([{"system": CLINICAL, "code": "active"}]),
                              verificationStatus=concept([{"system": VERIFICATION, "code": "confirmed"}]),
                              onsetDateTime=(day - datetime.timedelta(days=rng.randint(100, 3000))).isoformat())
            condition["code"] = concept([{"system": ICD10, "code": "I10", "display": "Essential hypertension"}])
        if rng.random() < 0.2:
            # a differential diagnosis ruled out: a code the diagnosis reads, refuted
            told = self.told_codes.get("Condition", [])
            if told:
                _, code = rng.choice(told)
                condition = p.new("Condition", None, clinicalStatus=concept([{"system": CLINICAL, "code": "resolved"}]),
                                  verificationStatus=concept([{"system": VERIFICATION, "code": "refuted"}]),
                                  onsetDateTime=(day - datetime.timedelta(days=rng.randint(30, 900))).isoformat())
                condition["code"] = concept([coding(code, rng)])
        if rng.random() < 0.4:
            begun = day - datetime.timedelta(days=rng.randint(10, 400))
            statement = p.new("MedicationStatement", None, status="active",
                              effectivePeriod={"start": begun.isoformat()})
            statement["medicationCodeableConcept"] = concept([{"system": ATC, "code": "N02BE01"}], "paracetamol")
        if rng.random() < 0.3:
            vaccine, display = rng.choice(NOT_LIVE_VACCINES)
            p.new("Immunization", None, status="completed",
                  vaccineCode=concept([{"system": CVX, "code": vaccine, "display": display}]),
                  occurrenceDateTime=(day - datetime.timedelta(days=rng.randint(0, 300))).isoformat())
        if rng.random() < 0.2:
            p.new("AllergyIntolerance", None,
                  code=concept([{"system": SNOMED, "code": "764146007", "display": "Penicillin"}], "penicillin"))
        if rng.random() < 0.3:
            visit = p.new("Encounter", None, status="finished",
                          **{"class": {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"}},
                          period={"start": (day - datetime.timedelta(days=rng.randint(30, 200))).isoformat()})
            visit["type"] = [concept([{"system": SNOMED, "code": "185389009", "display": "Follow-up visit"}])]
        for resource in p.resources:
            if not p.fields_of[id(resource)] and resource["resourceType"] != "Patient" and \
                    resource.get("verificationStatus", {}).get("coding", [{}])[0].get("code") != "refuted" and \
                    resource.get("status") not in (fhir_mapping.ENTERED_IN_ERROR, "not-done"):
                kind = resource["resourceType"]
                hit = [c.text for k, c in self.read_codes if k == kind and self.carries(resource, (c,))]
                assert not hit, f"an unrelated {kind} carries a code the mapping reads: {hit}"


_DISPLAY = {"10828004": "Positive", "260373001": "Detected", "260385009": "Negative", "260415000": "Not detected",
            "11214006": "Reactive", "131194007": "Non-Reactive", "77386006": "Pregnant", "60001007": "Not pregnant"}


def _codings(resource: Resource) -> list[dict[str, Any]]:
    kind = resource["resourceType"]
    if kind == "Encounter":
        return [c for t in resource.get("type", []) for c in t.get("coding", [])]
    if kind.startswith("Medication"):
        return list(resource.get("medicationCodeableConcept", {}).get("coding", []))
    if kind == "Immunization":
        return list(resource.get("vaccineCode", {}).get("coding", []))
    if kind == "ResearchSubject":
        ident = resource.get("study", {}).get("identifier")
        return [{"system": ident.get("system"), "code": ident.get("value")}] if ident else []
    return list(resource.get("code", {}).get("coding", []))


def _overlap(a: Code, b: Code) -> bool:
    """Whether some code matches both."""
    return a.matches(b.system, b.code) or b.matches(a.system, a.code)


def _finished(kind: str) -> str:
    return {"ResearchSubject": "off-study", "Encounter": "finished", "Immunization": "completed"}.get(kind, "completed")


def _nearest_day(text: Any) -> datetime.date | None:
    """The readable day nearest an impossible one (`2025-02-30` → 2025-02-28), to date the rest by."""
    found = re.fullmatch(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", text) if isinstance(text, str) else None
    if found is None:
        return None
    year, month, day = (int(g) for g in found.groups())
    for last in range(min(day, 31), 0, -1):
        try:
            return datetime.date(year, max(1, min(month, 12)), last)
        except ValueError:
            continue
    return None


def _birth_date(age: int, on: datetime.date, rng: random.Random) -> datetime.date:
    """A birth date that makes someone `age` whole years old on `on`."""
    for _ in range(20):
        back = rng.randint(0, 364)
        year = on.year - age - 1
        try:
            anniversary = on.replace(year=year + 1)
        except ValueError:  # 29 February
            anniversary = on.replace(year=year + 1, day=28)
        born = anniversary - datetime.timedelta(days=back)
        if on.year - born.year - ((on.month, on.day) < (born.month, born.day)) == age:
            return born
    raise AssertionError(f"no birth date gives age {age} on {on}")


# ---- the cohort -------------------------------------------------------------------------------


def translator(mapping: Path = MAPPING, protocol: Path = JY231) -> Translator:
    return Translator(fhir_mapping.load(mapping), load_protocol(protocol))


def fhir_cohort(size: int, seed: int = 231, invalid: float = 0.002, only: Iterable[int] | None = None,
                translate: Translator | None = None) -> Iterator[FhirPatient]:
    """The patients of `cohort.cohort(size, seed, invalid)` as FHIR, one at a time (`only`: just
    these record numbers, 1-based)."""
    translate = translate or translator()
    wanted = None if only is None else set(only)
    for number, record in enumerate(cohort.cohort(size, seed, invalid), start=1):
        if wanted is None or number in wanted:
            yield translate.patient(number, record, seed)


# The order a FHIR server writes elements in (the specification's), so that a resource reads
# top down: what it is, about whom, when, then the result.
_ORDER = {key: rank for rank, key in enumerate((
    "resourceType", "id", "active", "status", "statusReason", "clinicalStatus", "verificationStatus", "class",
    "category", "type", "code", "medicationCodeableConcept", "vaccineCode", "study", "subject", "patient",
    "individual", "gender", "birthDate", "effectiveDateTime", "effectivePeriod", "occurrenceDateTime",
    "onsetDateTime", "recordedDate", "period", "issued", "valueQuantity", "valueCodeableConcept",
    "valueInteger", "valueRatio", "valueString", "dataAbsentReason", "referenceRange"))}


def ordered(resource: Resource) -> Resource:
    return dict(sorted(resource.items(), key=lambda item: _ORDER.get(item[0], len(_ORDER))))


def _dump(resource: Resource) -> str:
    return json.dumps(ordered(resource), ensure_ascii=False, separators=(",", ":"))


def write_ndjson(patients: Iterable[FhirPatient], directory: Path, window: int = 100, seed: int = 231) -> int:
    """A bulk-data export: one NDJSON file per resource type, Patient.ndjson in cohort order,
    each other file's resources interleaved at random across `window` patients at a time, each
    patient's in the order they were recorded (an export lists resources as the server stores
    them, not patient by patient). Returns the resources written."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, IO[str]] = {}
    rng = random.Random(f"export:{seed}")
    pending: dict[str, list[tuple[int, str]]] = {}
    count = 0

    def flush() -> None:
        for kind, lines in pending.items():
            queues: dict[int, list[str]] = {}
            for owner, line in lines:
                queues.setdefault(owner, []).append(line)
            turns = [owner for owner, _ in lines]
            rng.shuffle(turns)  # a random interleaving that keeps each patient's order
            for queue in queues.values():
                queue.reverse()
            if kind not in files:
                files[kind] = (directory / f"{kind}.ndjson").open("w", encoding="utf-8")
            files[kind].write("".join(queues[owner].pop() for owner in turns))
        pending.clear()

    try:
        for index, patient in enumerate(patients, start=1):
            for resource in patient.resources:
                line = _dump(resource) + "\n"
                if resource["resourceType"] == "Patient":  # in cohort order: it numbers the patients
                    if "Patient" not in files:
                        files["Patient"] = (directory / "Patient.ndjson").open("w", encoding="utf-8")
                    files["Patient"].write(line)
                else:
                    pending.setdefault(resource["resourceType"], []).append((index, line))
                count += 1
            if index % max(1, window) == 0:
                flush()
        flush()
    finally:
        for stream in files.values():
            stream.close()
    return count


_TYPE_ORDER = ("Patient", "Encounter", "Condition", "Observation", "MedicationStatement", "Immunization",
               "ResearchSubject")


def _when(resource: Resource) -> str:
    """The date a resource is about (when it was recorded, near enough), as text; "" for none."""
    return next((str(v.get("start") if isinstance(v, dict) else v)[:10] for k, v in resource.items()
                 if k in ("effectiveDateTime", "effectivePeriod", "onsetDateTime", "recordedDate",
                          "occurrenceDateTime", "period")), "")


def _reading_order(resource: Resource) -> tuple[int, str, str]:
    """Type by type, as a server's Patient/$everything lists them, then by date."""
    kind = resource["resourceType"]
    rank = _TYPE_ORDER.index(kind) if kind in _TYPE_ORDER else len(_TYPE_ORDER)
    return rank, _when(resource), resource["id"]


def bundle(patient: FhirPatient) -> Resource:
    """One patient's resources as a collection Bundle, referring to the patient by `urn:uuid:`
    as transaction bundles from EHR exports do."""
    patient_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'Patient/' + patient.id)}"
    entries = []
    for resource in sorted(patient.resources, key=_reading_order):
        if resource["resourceType"] == "Patient":
            entries.append({"fullUrl": patient_url, "resource": ordered(resource)})
            continue
        body = json.loads(_dump(resource).replace(f'"Patient/{patient.id}"', json.dumps(patient_url)))
        entries.append({"fullUrl": f"urn:uuid:{resource['id']}", "resource": body})
    return {"resourceType": "Bundle", "id": f"{patient.id}-record", "type": "collection", "entry": entries}


def pretty(value: Any, indent: str = "") -> str:
    """JSON for people: an object or list that fits on a line of 110 characters stays on one,
    others open one member a line, indented by two spaces."""
    flat = json.dumps(value, ensure_ascii=False)
    if len(indent) + len(flat) <= 110 or not isinstance(value, dict | list) or not value:
        return flat
    inner = indent + "  "
    if isinstance(value, list):
        return "[\n" + ",\n".join(inner + pretty(v, inner) for v in value) + "\n" + indent + "]"
    return "{\n" + ",\n".join(f"{inner}{json.dumps(k)}: {pretty(v, inner)}" for k, v in value.items()) \
        + "\n" + indent + "}"


def write_bundles(patients: Iterable[FhirPatient], directory: Path) -> int:
    """A directory of Bundles, one a patient, named by id (so that name order is cohort order)."""
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for patient in patients:
        text = pretty(bundle(patient)) + "\n"
        (directory / f"{patient.id}.json").write_text(text, encoding="utf-8")
        count += len(patient.resources)
    return count


def write_bundle(patients: Iterable[FhirPatient], path: Path) -> int:
    """Every patient in one collection Bundle (written entry by entry, never held whole)."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        out.write('{"resourceType":"Bundle","type":"collection","entry":[\n')
        first = True
        for patient in patients:
            for entry in bundle(patient)["entry"]:
                out.write(("" if first else ",\n") + json.dumps(entry, ensure_ascii=False, separators=(",", ":")))
                first = False
                count += 1
        out.write("\n]}\n")
    return count


def write_manual(patients: Iterable[FhirPatient], path: Path) -> None:
    """The manual-entry file: JSON Lines, one line a patient, its `id` and the fields the
    mapping leaves to manual entry."""
    with path.open("w", encoding="utf-8") as out:
        for patient in patients:
            out.write(json.dumps(patient.manual, ensure_ascii=False) + "\n")


def write(patients: Iterable[FhirPatient], output: Path, layout: str, manual: Path | None,
          window: int = 100, seed: int = 231) -> int:
    """Write FHIR in `layout` (ndjson, bundles, bundle) and the manual file beside, in one pass."""
    if layout != "bundle":
        output.mkdir(parents=True, exist_ok=True)  # the manual file may go inside it
    stream = manual.open("w", encoding="utf-8") if manual is not None else None

    def tee() -> Iterator[FhirPatient]:
        for patient in patients:
            if stream is not None:
                stream.write(json.dumps(patient.manual, ensure_ascii=False) + "\n")
            yield patient

    try:
        if layout == "ndjson":
            return write_ndjson(tee(), output, window, seed)
        if layout == "bundles":
            return write_bundles(tee(), output)
        return write_bundle(tee(), output)
    finally:
        if stream is not None:
            stream.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("size", type=int, help="patients (the first SIZE of benchmarks/cohort.py's cohort)")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="a directory (ndjson, bundles) or a .json file (bundle)")
    parser.add_argument("--layout", choices=("ndjson", "bundles", "bundle"), default="ndjson",
                        help="ndjson: a bulk-data $export directory, one file per resource type (default); "
                             "bundles: a Bundle a patient; bundle: one Bundle")
    parser.add_argument("--manual", type=Path, help="where to write the manual-entry JSON Lines")
    parser.add_argument("--seed", type=int, default=231)
    parser.add_argument("--invalid", type=float, default=0.002,
                        help="the share of records made unreadable on purpose (default 0.002)")
    parser.add_argument("--only", type=lambda s: [int(n) for n in s.split(",")],
                        help="only these record numbers, e.g. 3,7,12")
    parser.add_argument("--window", type=int, default=100,
                        help="ndjson: patients whose resources are interleaved in each file (default 100)")
    parser.add_argument("--mapping", type=Path, default=MAPPING)
    parser.add_argument("--protocol", type=Path, default=JY231, help="a protocol using the mapping's schema")
    args = parser.parse_args(argv)
    patients = fhir_cohort(args.size, args.seed, args.invalid, args.only, translator(args.mapping, args.protocol))
    count = write(patients, args.output, args.layout, args.manual, args.window, args.seed)
    print(f"wrote {count} resources to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
