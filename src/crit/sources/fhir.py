"""Reading FHIR R4 input and turning each patient's resources into a crit record.

Three layouts are read: a Bundle (or a single resource) in a JSON file, a directory of such
files, and a bulk-data `$export` directory of NDJSON files (one resource per line, one file per
resource type, in no particular patient order). Resources are grouped by the patient they name
(`subject`, `patient` or `individual`: `Patient/ID`, a server URL ending in it, or a bundle's
`urn:uuid:` fullUrl) in one streaming pass that spills each resource to a temporary SQLite table
keyed by patient; patients then come back one at a time, in the order of their Patient
resources, so memory holds one patient, never the export. Resources are read by
`crit.sources.records.loads` (numbers as exact decimals) and navigated with fhirpathpy: each
mapping expression is compiled once and reused.

Nothing is dropped without a word: a line that is not JSON, a resource without `resourceType`
and a resource of a mapped type that names no patient are `Unread` items (file and line); the
resources of a patient the input has no Patient resource for are that patient's error.
"""

from __future__ import annotations

import pickle
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fhirpathpy
from fhirpathpy.models import models

from crit import text
from crit.sources import records as json_records
from crit.sources.cohort import Meter, jsonl_items
from crit.sources.fhir_mapping import ENTERED_IN_ERROR, Code, FieldMap, Mapping, MemberMap, crit_unit

if TYPE_CHECKING:
    from crit import ir

# ---- reading and grouping ----------------------------------------------------------------------

# Where a patient-compartment resource names its patient (ResearchSubject says `individual`).
_PATIENT_KEYS = ("subject", "patient", "individual")
_PATIENT_REF = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]*)?$")
_UUID = "urn:uuid:"
_SHOWN = 5  # resources named in the error of a patient the input has no Patient resource for


class InputError(Exception):
    """The input cannot be read at all (no such file, no FHIR files in a directory): one line."""


@dataclass(frozen=True)
class Group:
    """One patient's resources, in input order, the Patient resource among them (`patient`),
    and what is wrong with the group as a whole (a patient given twice, or never given)."""

    id: str
    patient: dict[str, Any] | None
    resources: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Unread:
    """Input that belongs to no patient because it cannot be read: where, and why."""

    where: str
    problem: str


def input_files(path: Path) -> list[tuple[Path, bool]]:
    """The files to read, each with whether it is NDJSON; `InputError` when there are none."""
    if path.is_dir():
        try:
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in (".json", ".ndjson"))
        except OSError as err:
            raise InputError(f"cannot read {path}: {err.strerror or err}") from None
        if not found:
            raise InputError(f"{path} holds no FHIR files (a Bundle as .json, or a bulk export as .ndjson)")
        return [(p, p.suffix.lower() == ".ndjson") for p in found]
    if not path.exists():
        raise InputError(f"cannot read {path}: no such file or directory")
    return [(path, path.suffix.lower() == ".ndjson")]


def patient_of(resource: dict[str, Any], uuids: dict[str, str] | None = None) -> str | None:
    """The id of the patient a resource is about (a Patient resource is about itself), or
    None. `uuids` maps a bundle's `urn:uuid:` fullUrls to Patient ids."""
    if resource.get("resourceType") == "Patient":
        ident = resource.get("id")
        return ident if isinstance(ident, str) else None
    for key in _PATIENT_KEYS:
        ref = resource.get(key)
        if not isinstance(ref, dict):
            continue
        target = ref.get("reference")
        if not isinstance(target, str):
            continue
        if target.startswith(_UUID):
            return (uuids or {}).get(target, target[len(_UUID):])
        found = _PATIENT_REF.search(target)
        if found is not None:
            return found.group(1)
    return None


class _Spill:
    """A temporary SQLite database holding resources by patient, and the Patient resources'
    order. Rows are pickled dicts (exact decimals survive); the index is built once loading is
    done, which is faster than keeping it current row by row."""

    def __init__(self, directory: str) -> None:
        self.db = sqlite3.connect(Path(directory) / "fhir.sqlite", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("PRAGMA temp_store=FILE")
        self.db.execute("CREATE TABLE resource (patient TEXT NOT NULL, body BLOB NOT NULL)")
        self.db.execute("CREATE TABLE patient (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, where_ TEXT NOT NULL)")
        self.db.execute("BEGIN")
        self.pending = 0

    def add(self, patient: str, resource: dict[str, Any], where: str) -> None:
        if resource.get("resourceType") == "Patient":
            self.db.execute("INSERT INTO patient (id, where_) VALUES (?, ?)", (patient, where))
        self.db.execute("INSERT INTO resource VALUES (?, ?)", (patient, pickle.dumps(resource, protocol=5)))
        self.pending += 1
        if self.pending >= 10_000:
            self.db.execute("COMMIT")
            self.db.execute("BEGIN")
            self.pending = 0

    def groups(self) -> Iterator[Group]:
        """Each patient in the order of the first Patient resource with its id; then each id that
        resources name but no Patient resource gives, in the order first named."""
        self.db.execute("COMMIT")
        self.db.execute("CREATE INDEX resource_patient ON resource (patient)")
        self.db.execute("CREATE INDEX patient_id ON patient (id)")
        last = 0
        while True:
            rows = self.db.execute("SELECT seq, id FROM patient WHERE seq > ? ORDER BY seq LIMIT 500",
                                   (last,)).fetchall()
            if not rows:
                break
            for seq, ident in rows:
                last = seq
                places = [w for (w,) in self.db.execute("SELECT where_ FROM patient WHERE id = ? ORDER BY seq",
                                                        (ident,))]
                first = self.db.execute("SELECT min(seq) FROM patient WHERE id = ?", (ident,)).fetchone()[0]
                if first != seq:
                    continue  # the same id again: reported with its first
                resources = self._resources(ident)
                patient = next(r for r in resources if r.get("resourceType") == "Patient")
                problems = []
                if len(places) > 1:
                    problems.append(f"Patient/{ident}: given {len(places)} times ({', '.join(places)}); "
                                    "each patient must be given once")
                yield Group(ident, patient, resources, problems)
        orphans = self.db.execute(
            "SELECT patient, count(*) FROM resource WHERE patient NOT IN (SELECT id FROM patient) "
            "GROUP BY patient ORDER BY min(rowid)").fetchall()
        for ident, count in orphans:
            resources = self._resources(ident, _SHOWN)
            named = ", ".join(reference(r) for r in resources[:_SHOWN]) + (", …" if count > _SHOWN else "")
            yield Group(ident, None, [], [f"Patient/{ident}: the input has no Patient resource with this id, "
                                          f"but {count} resource{'s name' if count != 1 else ' names'} it ({named})"])

    def _resources(self, ident: str, limit: int = -1) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT body FROM resource WHERE patient = ? ORDER BY rowid LIMIT ?", (ident, limit))
        return [pickle.loads(body) for (body,) in rows]

    def close(self) -> None:
        self.db.close()


def reference(resource: dict[str, Any]) -> str:
    """`Type/id`, as reasons and problems name a resource."""
    return f"{resource.get('resourceType', '?')}/{resource.get('id', '?')}"


# A resource as read: itself, where it is, and its bundle's `urn:uuid:` fullUrls of Patients.
_Found = tuple[dict[str, Any], str, dict[str, str]]


def _resources_of_bundle(document: Any, where: str) -> Iterator[_Found | Unread]:
    """A bundle's resources (or the one resource a file holds), each with where it is and the
    bundle's `urn:uuid:` fullUrls of Patient resources; `Unread` for an entry without one."""
    if not isinstance(document, dict):
        yield Unread(where, "not a FHIR resource (a JSON object)")
        return
    if document.get("resourceType") != "Bundle":
        yield document, where, {}
        return
    entries = document.get("entry", [])
    if not isinstance(entries, list):
        yield Unread(where, "Bundle.entry is not a list")
        return
    uuids = {}
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
            resource = entry["resource"]
            url = entry.get("fullUrl")
            if isinstance(url, str) and url.startswith(_UUID) and resource.get("resourceType") == "Patient" \
                    and isinstance(resource.get("id"), str):
                uuids[url] = resource["id"]
    for index, entry in enumerate(entries):
        here = f"{where}: entry {index}"
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            yield Unread(here, "an entry without a resource")
            continue
        yield entry["resource"], here, uuids


def _read_json(path: Path) -> Iterator[_Found | Unread]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        yield Unread(str(path), "not valid UTF-8")
        return
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        document = json_records.loads(text)
    except json_records.RecordSyntaxError as err:
        syntax = err.syntax
        place = f"{path}:{syntax.lineno}:{syntax.colno}" if syntax is not None else str(path)
        message = f"not valid JSON: {syntax.msg}" if syntax is not None else "; ".join(str(p) for p in err.problems)
        yield Unread(place, message)
        return
    yield from _resources_of_bundle(document, str(path))


def _read_ndjson(path: Path, meter: Meter) -> Iterator[_Found | Unread]:
    try:
        stream = path.open("rb")
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from None
    with stream:
        for _, line, raw, problem in jsonl_items(stream, meter):
            where = f"{path}:{line}"
            if problem is not None or not isinstance(raw, bytes):
                yield Unread(where, (problem or "not read").removeprefix(f"line {line}: "))
                continue
            try:
                value = json_records.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield Unread(where, "not valid UTF-8")
                continue
            except json_records.RecordSyntaxError as err:
                syntax = err.syntax
                message = (f"column {syntax.colno}: not valid JSON: {syntax.msg}" if syntax is not None
                           else "; ".join(str(p) for p in err.problems))
                yield Unread(where, message)
                continue
            yield from _resources_of_bundle(value, where)


def read(path: Path, types: Iterable[str] | None = None, meter: Meter | None = None) -> Iterator[Group | Unread]:
    """Every patient in `path` (a Bundle file, a directory of them, or a bulk export), in the
    order of their Patient resources, then the patients only named; and, at the end, the input
    that could not be read. `types` limits what is kept to the resource types a mapping reads
    (and Patient); other resources that name no patient (Practitioner, Organization) are not
    patient data. `InputError` if nothing can be opened."""
    files = input_files(path)
    kept = None if types is None else frozenset(types) | {"Patient"}
    meter = meter or Meter()
    unread: list[Unread] = []
    with tempfile.TemporaryDirectory(prefix="crit-fhir-") as directory:
        spill = _Spill(directory)
        try:
            for file, ndjson in files:
                source = _read_ndjson(file, meter) if ndjson else _read_json(file)
                for found in source:
                    if isinstance(found, Unread):
                        _unread(unread, found)
                        continue
                    resource, where, uuids = found
                    kind = resource.get("resourceType")
                    if not isinstance(kind, str) or not kind:
                        _unread(unread, Unread(where, "a resource without resourceType"))
                        continue
                    if kept is not None and kind not in kept:
                        continue
                    if kind == "Patient" and not isinstance(resource.get("id"), str):
                        _unread(unread, Unread(where, "a Patient resource without an id"))
                        continue
                    patient = patient_of(resource, uuids)
                    if patient is None:
                        _unread(unread, Unread(where, f"{reference(resource)} names no patient "
                                                      "(subject or patient: Patient/ID)"))
                        continue
                    spill.add(patient, resource, where)
                if not ndjson:
                    meter.done += _size(file)
            yield from spill.groups()
        finally:
            spill.close()
    yield from unread


_UNREAD_LIMIT = 10_000  # unreadable places kept for the end; past this, one summary line


def _unread(unread: list[Unread], item: Unread) -> None:
    """Keep an unreadable place for the end, with a bound: a file that is not NDJSON at all
    gives one item per line, and memory must not grow with it."""
    if len(unread) < _UNREAD_LIMIT:
        unread.append(item)
    elif len(unread) == _UNREAD_LIMIT:
        unread.append(Unread(item.where, f"and more input that cannot be read; only the first "
                                         f"{_UNREAD_LIMIT:,} places are listed"))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def input_size(path: Path) -> int:
    """The bytes `read` goes through, for a progress bar."""
    try:
        return sum(_size(p) for p, _ in input_files(path))
    except InputError:
        return 0

# ---- applying a mapping ------------------------------------------------------------------------

_MODEL = models["r4"]

# The element a resource type's codes are matched against, and the date it is ordered by.
_CODE_OF = {
    "Observation": "code",
    "Condition": "code",
    "MedicationStatement": "medication.ofType(CodeableConcept)",
    "MedicationRequest": "medication.ofType(CodeableConcept)",
    "MedicationAdministration": "medication.ofType(CodeableConcept)",
    "Immunization": "vaccineCode",
    "Procedure": "code",
    "Encounter": "type",
    "ResearchSubject": "study.identifier",
}
# The date is the first of these elements that holds one: a dateTime or instant as it is, a
# Period by its start. (One plain element per FHIRPath call: a union of `ofType()` terms costs
# ten times as much, and every dated field asks for the date of every candidate.)
_DATE_OF = {
    "Observation": "effective",
    "Condition": "onset | recordedDate",
    "MedicationStatement": "effective | dateAsserted",
    "MedicationRequest": "authoredOn",
    "MedicationAdministration": "effective",
    "Immunization": "occurrence",
    "Procedure": "performed",
    "Encounter": "period",
    "ResearchSubject": "period",
}
_FULL_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


Expression = Callable[[dict[str, Any]], list[Any]]


def compiled(expression: str) -> Expression:
    """A FHIRPath expression compiled once (against the R4 model, so that `value` finds
    `valueQuantity` and `.ofType(Period)` works), as a function of a resource."""
    function = fhirpathpy.compile(expression, _MODEL)

    def evaluate(resource: dict[str, Any]) -> list[Any]:
        return list(function(resource, {}))

    return evaluate


@dataclass(frozen=True)
class FhirPatient:
    """A patient as crit reads them: the record (crit's JSON record format, numbers exact), the
    resources each field came from (`"hemoglobin": ["Observation/abc123"]`), and the problems
    that keep the record from being screened (`"hemoglobin: unit 'mmol/L' of Observation/abc123
    is not one the mapping accepts"`)."""

    id: str
    record: dict[str, Any]
    sources: dict[str, list[str]]
    problems: list[str]


def _codings(items: Iterable[Any]) -> list[tuple[Any, Any]]:
    """(system, code) pairs of FHIRPath results: CodeableConcepts, Codings, Identifiers (a
    ResearchSubject's study) or bare codes (Patient.gender)."""
    out: list[tuple[Any, Any]] = []
    for item in items:
        if isinstance(item, str):
            out.append((None, item))
        elif isinstance(item, dict) and isinstance(item.get("coding"), list):
            out += [(c.get("system"), c.get("code")) for c in item["coding"] if isinstance(c, dict)]
        elif isinstance(item, dict) and "code" in item:
            out.append((item.get("system"), item.get("code")))
        elif isinstance(item, dict) and isinstance(item.get("value"), str):
            out.append((item.get("system"), item.get("value")))
    return out


def _any_code(codes: Iterable[Code], codings: list[tuple[Any, Any]]) -> bool:
    return any(isinstance(value, str) and code.matches(system, value) for code in codes for system, value in codings)


def _shown_codes(codings: list[tuple[Any, Any]]) -> str:
    return ", ".join(f"{s}|{c}" if s else str(c) for s, c in codings) or "no code"


# The statuses a Condition is verified with never count when entered in error, nor anything else.
_CLINICAL = compiled("clinicalStatus.coding.code")
_VERIFIED = compiled("verificationStatus.coding.code")
_ABSENT = compiled("dataAbsentReason")
_VALUE = compiled("value")


def _iso_date(value: Any) -> str | None:
    """The calendar date of a FHIR date or dateTime, as written (`2025-06-01T23:30:00+02:00` is
    2025-06-01 where it was recorded); None for a partial date (`2025-06`) or anything else."""
    if isinstance(value, str) and _FULL_DATE.match(value):
        return value[:10]
    return None


def _calendar(day: str, what: str) -> date:
    """A date written in FHIR's form, or `_Unmapped` naming what gave it when no calendar has that
    day (`2025-02-30`): the patient's error row, never a traceback that stops the cohort."""
    try:
        return date.fromisoformat(day)
    except ValueError:
        raise _Unmapped(f"{what} gives {text.json_source(day)}, which is not a date in the calendar") from None


def _whole_years(born: str, on: str, source: str, anchor: str) -> int:
    b, o = _calendar(born, f"{source} (birth date)"), _calendar(on, anchor)
    return o.year - b.year - ((o.month, o.day) < (b.month, b.day))


class _Unmapped(ValueError):
    """A value the mapping cannot turn into the field's value: the message says why."""


def _first(items: list[Any]) -> Any:
    """The first of a FHIRPath result (`onset.as(dateTime) | recordedDate`: the first non-empty)."""
    return items[0] if items else None


def _number(item: Any) -> int | Decimal | None:
    """A number from a FHIR value: an integer or decimal, or a Quantity's value (a score)."""
    if isinstance(item, dict) and "value" in item:
        item = item["value"]
    if isinstance(item, bool) or not isinstance(item, int | Decimal):
        return None
    return item


def _text(item: Any) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        if isinstance(item.get("text"), str):
            return str(item["text"])
        for coding in item.get("coding", []) if isinstance(item.get("coding"), list) else []:
            if isinstance(coding, dict) and isinstance(coding.get("display"), str):
                return str(coding["display"])
    return None


def _titer(item: Any) -> str | None:
    """`1:160` from a string, or from a Ratio (numerator 1, denominator 160)."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and "numerator" in item and "denominator" in item:
        top, bottom = _number(item["numerator"]), _number(item["denominator"])
        if top is not None and bottom is not None:
            return f"{top}:{bottom}"
    return None


def _filter_codes(rule: FieldMap) -> tuple[Code, ...]:
    """The codes a candidate's own code must match: the mapping's `resource_codes()`, and for a
    set whose members are told apart by each test's code (`positive` judging its result), the
    members' codes."""
    if not rule.code and rule.positive:
        return tuple(c for m in rule.members for c in m.codes)
    return rule.resource_codes()


def _depends(rule: FieldMap) -> set[str]:
    """The patient date fields a field is counted from, which must be read first."""
    needs = {rule.within.before} if rule.within else set()
    needs |= {rule.age_at} if rule.age_at else set()
    return needs | {i.otherwise for i in rule.items if i.otherwise}


def _ordered(rules: list[FieldMap]) -> list[FieldMap]:
    """The rules in file order, except that each comes after the date fields it counts from."""
    names = {r.name for r in rules}
    done: set[str] = set()
    out: list[FieldMap] = []
    waiting = list(rules)
    while waiting:
        ready = [r for r in waiting if (_depends(r) & names) <= done] or waiting  # a cycle: check refuses it
        out += ready
        done |= {r.name for r in ready}
        waiting = [r for r in waiting if r.name not in done]
    return out


class Builder:
    """Applies a mapping to one patient's resources at a time: filters (codes, statuses, an
    extra `where`, a look-back window), selection (latest, earliest, one, any, count, all),
    then the value in crit's record format, with the resources it came from. Every FHIRPath
    expression of the mapping is compiled once, here."""

    def __init__(self, mapping: Mapping, protocol: ir.Protocol) -> None:
        self.mapping = mapping
        self.fields = {f.name: f for f in protocol.fields}
        self.records = {r.name: r for r in protocol.records}
        self.rules = _ordered([r for r in mapping.fields if r.name in self.fields])
        self.by_name = {r.name: r for r in self.rules}
        self.paths: dict[str, Expression] = {"birthDate": compiled("birthDate")}
        for rule in self.rules:
            for path in (rule.where, rule.value, rule.uln, rule.measured, rule.start, rule.end, rule.ongoing,
                         *(i.value for i in rule.items), *(i.ongoing for i in rule.items)):
                if path is not None and path not in self.paths:
                    self.paths[path] = compiled(path)
        self.code_of = {kind: compiled(path) for kind, path in _CODE_OF.items()}
        self.date_of = {kind: compiled(path) for kind, path in _DATE_OF.items()}
        self.types = frozenset(r.resource for r in self.rules if r.resource)
        self.order = {name: index for index, name in enumerate(("id", *self.fields))}
        self.memo: dict[tuple[str, Any], Any] = {}  # per patient: see _codes_of

    def _path(self, path: str | None, resource: dict[str, Any]) -> list[Any]:
        return self.paths[path](resource) if path is not None else []

    # What every field asks of a resource (its codes, its date, whether its data is absent) is
    # worked out once per resource and patient: FHIRPath costs tens of microseconds a call, and
    # forty Observation fields would otherwise each ask it of every Observation.

    def _codes_of(self, resource: dict[str, Any]) -> list[tuple[Any, Any]]:
        key = ("codes", id(resource))
        if key not in self.memo:
            found = self.code_of.get(str(resource.get("resourceType")))
            self.memo[key] = _codings(found(resource)) if found is not None else []
        codes: list[tuple[Any, Any]] = self.memo[key]
        return codes

    def _date(self, resource: dict[str, Any]) -> str | None:
        key = ("date", id(resource))
        if key not in self.memo:
            found = self.date_of.get(str(resource.get("resourceType")))
            dates = [item.get("start") if isinstance(item, dict) else item for item in found(resource)] if found else []
            self.memo[key] = next((_iso_date(d) for d in dates if _iso_date(d) is not None), None)
        when: str | None = self.memo[key]
        return when

    def _absent_reason(self, resource: dict[str, Any]) -> str | None:
        """Why the resource's data is absent (`dataAbsentReason`), or None when it is not."""
        key = ("absent", id(resource))
        if key not in self.memo:
            found = _ABSENT(resource)
            self.memo[key] = (", ".join(str(c) for _, c in _codings(found)) or "dataAbsentReason") if found else None
        reason: str | None = self.memo[key]
        return reason

    def _by_code(self, kind: str, resources: list[dict[str, Any]]) -> dict[tuple[Any, Any], list[int]]:
        """The patient's resources of one type by (system, code), as positions in input order."""
        key = ("index", kind)
        if key not in self.memo:
            index: dict[tuple[Any, Any], list[int]] = {}
            for position, resource in enumerate(resources):
                for coding in self._codes_of(resource):
                    index.setdefault(coding, []).append(position)
            self.memo[key] = index
        found: dict[tuple[Any, Any], list[int]] = self.memo[key]
        return found

    def _candidates(self, rule: FieldMap, by_type: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """The resources the field reads, in input order: exact codes are looked up in the
        patient's index, prefixes are matched resource by resource."""
        resources = by_type.get(str(rule.resource), [])
        codes = _filter_codes(rule)
        if codes and not any(c.prefix for c in codes):
            index = self._by_code(str(rule.resource), resources)
            positions = sorted({p for c in codes for p in index.get((c.system, c.code), ())})
            resources = [resources[p] for p in positions]
        elif codes:
            resources = [r for r in resources if _any_code(codes, self._codes_of(r))]
        return [r for r in resources if self._counts(rule, r)]

    # -- a patient

    def build(self, group: Group, manual: tuple[dict[str, Any], str] | None = None) -> FhirPatient:
        """The patient's record, its sources and its problems. `manual` is the patient's line of
        the manual-entry file, and where it is (`manual.jsonl:3`)."""
        record: dict[str, Any] = {"id": group.id}
        sources: dict[str, list[str]] = {}
        problems = list(group.problems)
        self.memo = {}
        if group.patient is not None:
            by_type: dict[str, list[dict[str, Any]]] = {}
            for resource in group.resources:
                by_type.setdefault(str(resource.get("resourceType")), []).append(resource)
            for rule in self.rules:
                if rule.resource is None:
                    continue
                try:
                    self._field(rule, group.patient, by_type, record, sources)
                except _Unmapped as err:
                    record.pop(rule.name, None)
                    problems.append(f"{rule.name}: {err}")
        if manual is not None:
            self._manual(manual[0], manual[1], record, sources, problems)
        record = dict(sorted(record.items(), key=lambda kv: self.order.get(kv[0], len(self.order))))
        return FhirPatient(group.id, record, sources, problems)

    def _manual(self, entry: dict[str, Any], where: str, record: dict[str, Any], sources: dict[str, list[str]],
                problems: list[str]) -> None:
        """Merge the patient's manual entries: fields the mapping leaves to manual entry, and fields
        with a member FHIR cannot tell apart (`members.other = "manual"`) when FHIR gave none."""
        for key, value in entry.items():
            if key == "id":
                continue
            rule = self.by_name.get(key)
            if key not in self.fields:
                problems.append(f"{key}: not a field of the schema ({where})")
            elif rule is not None and rule.resource is not None and not any(m.manual for m in rule.members):
                problems.append(f"{key}: the mapping takes this field from {rule.resource} resources, so the "
                                f"manual-entry file may not give it ({where})")
            elif key in record:  # a member FHIR cannot tell apart, given by hand: FHIR must agree
                if text.json_source(record[key]) != text.json_source(value):
                    problems.append(f"{key}: the manual entry gives {text.json_source(value)} ({where}), but "
                                    f"{', '.join(sources.get(key, []))} gave {text.json_source(record[key])}")
            else:
                record[key] = value
                sources[key] = [f"manual entry ({where})"]

    # -- a field

    def _counts(self, rule: FieldMap, resource: dict[str, Any]) -> bool:
        """Whether a resource of the rule's type and codes is one the field reads: its status and
        the rule's own `where`. Nothing entered in error ever counts."""
        kind = resource.get("resourceType")
        if resource.get("status") == ENTERED_IN_ERROR:
            return False
        if kind == "Condition":
            verified = _VERIFIED(resource)
            if ENTERED_IN_ERROR in verified or not set(verified) & set(rule.verifications()):
                return False
            if not set(_CLINICAL(resource)) & set(rule.statuses()):
                return False
        elif rule.statuses() and resource.get("status") not in rule.statuses():
            return False
        return rule.where is None or _first(self._path(rule.where, resource)) is True

    def _field(self, rule: FieldMap, patient: dict[str, Any], by_type: dict[str, list[dict[str, Any]]],
               record: dict[str, Any], sources: dict[str, list[str]]) -> None:
        name = rule.name
        for needed in sorted(_depends(rule) - {i.otherwise for i in rule.items if i.otherwise}):
            if not isinstance(record.get(needed), str):
                sources[name] = [f"not read: it is counted from {needed}, which is missing"]
                return
        if rule.resource == "Patient":
            candidates = [patient]
        else:
            candidates = self._candidates(rule, by_type)
        if rule.within is not None:
            candidates = self._window(rule, candidates, record[rule.within.before])
        notes = [f"{reference(r)}: data absent ({self._absent_reason(r)})" for r in candidates
                 if self._absent_reason(r)]
        present = [r for r in candidates if not self._absent_reason(r)]
        if rule.select in ("any", "count"):
            if not present and rule.absent == "missing":  # the EHR may simply not hold it
                sources[name] = notes or [f"no matching {rule.resource}: missing"]
                return
            record[name] = bool(present) if rule.select == "any" else len(present)
            taken = "no" if rule.select == "any" else "0"
            sources[name] = [reference(r) for r in present] + notes or [
                f'no matching {rule.resource}: taken as {taken} (absent = "{rule.absent}")']
            return
        if rule.select == "all":
            self._all(rule, present, record, sources, notes)
            return
        chosen = self._dated(rule, candidates) if rule.select in ("latest", "earliest") else candidates
        if not chosen:
            self._absent(rule, record, sources)
            return
        if all(self._absent_reason(r) for r in chosen):
            sources[name] = [f"{reference(r)}: data absent ({self._absent_reason(r)})" for r in chosen]
            return
        chosen = [r for r in chosen if not self._absent_reason(r)]
        values = [(r, self._value(rule, r, record)) for r in chosen]
        if len({text.json_source(v) for _, v in values}) > 1:
            given = "; ".join(f"{reference(r)} gives {text.json_source(v)}" for r, v in values[:_SHOWN])
            why = (f"the {rule.select} resources, of the same date, disagree" if rule.select != "one"
                   else "the resources disagree, and the mapping asks for one value")
            raise _Unmapped(f"{why}: {given}")
        record[name] = values[0][1]
        sources[name] = [reference(r) for r in chosen]

    def _window(self, rule: FieldMap, candidates: list[dict[str, Any]], anchor: str) -> list[dict[str, Any]]:
        """The candidates dated within the look-back window (inclusive at both ends)."""
        assert rule.within is not None
        last = _calendar(anchor, rule.within.before)
        first = last - timedelta(days=rule.within.days)
        kept = []
        for resource in candidates:
            when = self._date(resource)
            if when is None:
                raise _Unmapped(f"{reference(resource)} has no date, so whether it lies within "
                                f"{rule.within.days} days before {rule.within.before} cannot be told")
            if first <= _calendar(when, reference(resource)) <= last:
                kept.append(resource)
        return kept

    def _dated(self, rule: FieldMap, candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The latest (or earliest) resources: several when they share that date."""
        if rule.resource == "Patient" or len(candidates) <= 1:
            return candidates
        dated = [(self._date(r), r) for r in candidates]
        for when, resource in dated:
            if when is None:
                raise _Unmapped(f"{reference(resource)} has no date, so the {rule.select} of {len(candidates)} "
                                f"{rule.resource} resources cannot be told")
        pick = max if rule.select == "latest" else min
        top = pick(str(when) for when, _ in dated)
        return [r for when, r in dated if when == top]

    def _absent(self, rule: FieldMap, record: dict[str, Any], sources: dict[str, list[str]]) -> None:
        if rule.absent == "none":
            record[rule.name] = None
            sources[rule.name] = [f"no matching {rule.resource}: recorded none"]
        elif rule.absent == "empty":
            record[rule.name] = []
            sources[rule.name] = [f"no matching {rule.resource}: recorded empty"]

    def _all(self, rule: FieldMap, present: list[dict[str, Any]], record: dict[str, Any],
             sources: dict[str, list[str]], notes: list[str]) -> None:
        name = rule.name
        t = self.fields[name].type
        if not present:
            self._absent(rule, record, sources)
            if notes:
                sources[name] = sources.get(name, []) + notes
            return
        if t.kind == "list":
            items = []
            for index, resource in enumerate(present):
                items.append(self._item(rule, resource, record))
                sources[f"{name}[{index}]"] = [reference(resource)]
            record[name] = items
        else:
            found = {self._member(rule, resource) for resource in present}
            assert t.kind == "set"  # the mapping check allows `all` on a list or a set only
            record[name] = [m for m in t.enum.member_names() if m in found]
        sources[name] = [reference(r) for r in present] + notes

    def _member(self, rule: FieldMap, resource: dict[str, Any]) -> str | None:
        """A set's member from one resource: by its code, present when its result is positive."""
        member = self._one_member(rule, rule.members, self._codes_of(resource), resource)
        if rule.positive:
            result = self._path(rule.value, resource) if rule.value is not None else _VALUE(resource)
            if not _any_code(rule.positive, _codings(result)):
                return None
        return member

    def _one_member(self, rule: FieldMap, members: tuple[MemberMap, ...], codings: list[tuple[Any, Any]],
                    resource: dict[str, Any]) -> str:
        said = sorted({m.name for m in members if _any_code(m.codes, codings)})
        if not said:
            raise _Unmapped(f"{reference(resource)} has {_shown_codes(codings)}, which the mapping maps to no "
                            "member")
        if len(said) > 1:
            raise _Unmapped(f"{reference(resource)} has {_shown_codes(codings)}, which the mapping maps to "
                            f"several members ({', '.join(said)})")
        return said[0]

    def _item(self, rule: FieldMap, resource: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
        """One list item from one resource, each sub-field by its own map."""
        list_type = self.fields[rule.name].type
        assert list_type.kind == "list"  # the mapping check gives items to a list only
        types = {f.name: f.type for f in self.records[list_type.record].fields}
        item: dict[str, Any] = {}
        for sub in rule.items:
            if sub.manual is not None or sub.name not in types:
                continue
            if sub.code_in:
                item[sub.name] = _any_code(sub.code_in, self._codes_of(resource))
                continue
            if sub.members:
                member = self._one_member(rule, sub.members, self._codes_of(resource), resource)
                item[sub.name] = _bool_member(member) if types[sub.name].kind == "bool" else member
                continue
            found = self._path(sub.value, resource)
            if not found:
                ongoing = sub.ongoing is None or _first(self._path(sub.ongoing, resource)) is True
                if sub.otherwise is not None and ongoing and sub.otherwise in record:
                    item[sub.name] = record[sub.otherwise]
                continue
            item[sub.name] = self._scalar(types[sub.name], found, rule, resource)
        return item

    # -- a value

    def _value(self, rule: FieldMap, resource: dict[str, Any], record: dict[str, Any]) -> Any:
        """The field's value from the chosen resource, in crit's record format."""
        field = self.fields[rule.name]
        kind = field.type.kind
        if kind == "interval":
            value: Any = self._interval(rule, resource)
        elif rule.age_at is not None:
            born = _first(self._path(rule.value or "birthDate", resource))
            if born is None:
                raise _Unmapped(f"{reference(resource)} has no birth date")
            if _iso_date(born) is None:
                raise _Unmapped(f"{reference(resource)} gives the birth date {text.json_source(born)}, "
                                "not a full date")
            value = _whole_years(str(_iso_date(born)), record[rule.age_at], reference(resource), rule.age_at)
        elif rule.value is None and rule.members:
            member = self._one_member(rule, rule.members, self._codes_of(resource), resource)
            value = _bool_member(member) if kind in ("bool", "judgment") else member
        elif rule.value is None and kind == "bool":
            value = True  # a resource that matches says so
        else:
            found = self._path(rule.value, resource)
            if not found:
                raise _Unmapped(f"{reference(resource)} has no value at {rule.value}")
            value = self._scalar(field.type, found, rule, resource)
        if field.measured is not None:
            when = (_iso_date(_first(self._path(rule.measured, resource))) if rule.measured is not None
                    else self._date(resource))
            if when is None:
                raise _Unmapped(f"{reference(resource)} has no date, and {rule.name} is a dated result")
            _calendar(when, f"{reference(resource)} (measured)")
            value = {**value, "measured": when} if isinstance(value, dict) else {"value": value, "measured": when}
        return value

    def _interval(self, rule: FieldMap, resource: dict[str, Any]) -> dict[str, Any]:
        start = _first(self._path(rule.start, resource))
        if _iso_date(start) is None:
            raise _Unmapped(f"{reference(resource)} has no start date" if start is None else
                            f"{reference(resource)} gives the start {text.json_source(start)}, not a full date")
        out: dict[str, Any] = {"start": _iso_date(start)}
        _calendar(out["start"], f"{reference(resource)} (start)")
        if rule.ongoing is not None and _first(self._path(rule.ongoing, resource)) is True:
            out["ongoing"] = True
            return out
        end = _first(self._path(rule.end, resource))
        if end is not None:
            if _iso_date(end) is None:
                raise _Unmapped(f"{reference(resource)} gives the end {text.json_source(end)}, not a full date")
            out["end"] = _iso_date(end)
            _calendar(out["end"], f"{reference(resource)} (end)")
        return out

    def _scalar(self, t: ir.Type, found: list[Any], rule: FieldMap, resource: dict[str, Any]) -> Any:
        """One value of type `t` from a FHIRPath result; `_Unmapped` when it cannot be one."""
        item = _first(found)
        ref = reference(resource)
        kind = t.kind
        if rule.members and kind in ("enum", "bool", "judgment"):
            member = self._one_member(rule, rule.members, _codings(found), resource)
            return member if kind == "enum" else _bool_member(member)
        if kind in ("bool", "judgment"):
            if isinstance(item, bool):
                return item
            raise _Unmapped(f"{ref} gives {text.json_source(item)}, not true or false")
        if kind == "date":
            day = _iso_date(item)
            if day is None:
                raise _Unmapped(f"{ref} gives {text.json_source(item)}, not a full date")
            _calendar(day, ref)
            return day
        if kind in ("integer", "decimal"):
            number = _number(item)
            if number is None or (kind == "integer" and number != int(number)):
                wanted = "a whole number" if kind == "integer" else "a number"
                raise _Unmapped(f"{ref} gives {text.json_source(item)}, not {wanted}")
            return int(number) if kind == "integer" else number
        if kind in ("quantity", "lab"):
            return self._quantity(t, item, rule, resource)
        if kind == "titer":
            titer = _titer(item)
            if titer is None:
                raise _Unmapped(f"{ref} gives {text.json_source(item)}, not a titer (1:160)")
            return titer
        if kind == "text":
            written = _text(item)
            if written is None:
                raise _Unmapped(f"{ref} gives {text.json_source(item)}, not text")
            return written
        raise _Unmapped(f"{ref}: the mapping gives no members for the {kind} value {text.json_source(item)}")

    def _unit(self, quantity: dict[str, Any], rule: FieldMap, resource: dict[str, Any], what: str) -> str:
        code = quantity.get("code", quantity.get("unit"))
        if not isinstance(code, str):
            raise _Unmapped(f"{what} of {reference(resource)} has no unit")
        if rule.units and code not in rule.units:
            raise _Unmapped(f"unit {code!r} of {reference(resource)} is not one the mapping accepts "
                            f"({', '.join(rule.units)})")
        return crit_unit(code)

    def _quantity(self, t: ir.Type, item: Any, rule: FieldMap, resource: dict[str, Any]) -> dict[str, Any]:
        ref = reference(resource)
        if not isinstance(item, dict) or _number(item) is None:
            raise _Unmapped(f"{ref} gives {text.json_source(item)}, not a quantity with a unit")
        if "comparator" in item:
            raise _Unmapped(f"{ref} gives a bound ({item['comparator']} {item.get('value')}), not a value")
        out: dict[str, Any] = {"value": _number(item), "unit": self._unit(item, rule, resource, "the value")}
        if t.kind == "lab" and rule.uln is not None:
            high = _first(self._path(rule.uln, resource))
            if high is None:
                return out
            if not isinstance(high, dict) or _number(high) is None:
                raise _Unmapped(f"{ref} gives the upper limit {text.json_source(high)}, not a quantity")
            unit = self._unit(high, rule, resource, "the upper limit")
            if unit != out["unit"]:
                raise _Unmapped(f"{ref} gives the value in {out['unit']} and the upper limit in {unit}")
            out = {"value": out["value"], "uln": _number(high), "unit": unit}
        return out


def _bool_member(member: str) -> bool:
    """A bool field's members are `true` and `false`."""
    return member == "true"


# ---- manual entries and the whole input --------------------------------------------------------


class Manual:
    """The manual-entry file (`--manual`): JSON Lines, one object per patient with its `id` and
    the fields the mapping leaves to be entered by hand. Lines are kept as text by id (a few
    hundred bytes a patient) and read when their patient comes; a line that cannot be read, or
    an id given twice, is an `InputError` naming the file and line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[str, tuple[int, bytes]] = {}
        self.used: set[str] = set()
        try:
            stream = path.open("rb")
        except OSError as err:
            raise InputError(f"cannot read {path}: {err.strerror or err}") from None
        with stream:
            for _, line, raw, problem in jsonl_items(stream, Meter()):
                where = f"{path}:{line}"
                if problem is not None or not isinstance(raw, bytes):
                    raise InputError(f"{where}: {(problem or 'not read').removeprefix(f'line {line}: ')}")
                entry = self._read(raw, where)
                ident = entry.get("id")
                if not isinstance(ident, str) or not ident:
                    raise InputError(f"{where}: each line needs the patient's id, as text (\"id\": \"...\")")
                if ident in self.lines:
                    raise InputError(f"{where}: the id {ident!r} is given again (first on line {self.lines[ident][0]})")
                self.lines[ident] = (line, raw)

    def _read(self, raw: bytes, where: str) -> dict[str, Any]:
        try:
            entry = json_records.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise InputError(f"{where}: not valid UTF-8") from None
        except json_records.RecordSyntaxError as err:
            syntax = err.syntax
            message = (f"column {syntax.colno}: not valid JSON: {syntax.msg}" if syntax is not None
                       else "; ".join(str(p) for p in err.problems))
            raise InputError(f"{where}: {message}") from None
        if not isinstance(entry, dict):
            raise InputError(f"{where}: not a JSON object")
        return entry

    def take(self, ident: str) -> tuple[dict[str, Any], str] | None:
        """The patient's entry and where it is, or None."""
        found = self.lines.get(ident)
        if found is None:
            return None
        self.used.add(ident)
        where = f"{self.path}:{found[0]}"
        return self._read(found[1], where), where

    def unused(self) -> Iterator[Unread]:
        """The entries of ids no patient in the input has: never silently ignored."""
        for ident, (line, _) in self.lines.items():
            if ident not in self.used:
                yield Unread(f"{self.path}:{line}", f"the manual entry for {ident!r} names no patient in the input")


def patients(path: Path, builder: Builder, manual: Manual | None = None, meter: Meter | None = None,
             unused: bool = True) -> Iterator[FhirPatient | Unread]:
    """Every patient in the input as crit reads them, in input order; then what could not be
    read, and (`unused`) manual entries for patients the input does not have."""
    for group in read(path, builder.types, meter):
        if isinstance(group, Unread):
            yield group
            continue
        entry = manual.take(group.id) if manual is not None and group.patient is not None else None
        yield builder.build(group, entry)
    if manual is not None and unused:
        yield from manual.unused()
