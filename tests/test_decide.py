"""The one path per criterion agrees with its explanation: decide() and assess(), which run the
generated criterion functions, give the decision, outcomes and missing facts that the runtime's
explainer works out from the criteria's description (`evaluate(record).explain()`), on JY231
records with facts missing and on a protocol that uses every construct; the module has one
function per criterion and no second copy; the specialised record reader accepts, converts and
rejects exactly as the runtime's readers do."""

from __future__ import annotations

import copy
import json
import pickle
import re
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, compile_text, import_module
from crit import ir
from crit.backends.python import emit_python

BASE: dict[str, Any] = json.loads((ROOT / "examples" / "patient-sle.json").read_text(encoding="utf-8"))
JY231_TEXT = (ROOT / "protocols" / "jy231.crit").read_text(encoding="utf-8")
SCHEMA_TEXT = (ROOT / "protocols" / "schemas" / "autoimmune.crit").read_text(encoding="utf-8")

SINK = '''protocol SINK "Every construct the fast path compiles"
  version "1"

enum Kind
  a
  b
  c

record Item
  ok: bool
  size: decimal
  day: date
  note: text
  kind: Kind
  extra: bool?

patient
  p: bool
  q: bool
  r: bool?
  n: integer
  lo: integer
  hi: integer
  x: decimal
  hb: quantity g/L also g/dL
  enzyme: lab U/L
  titer: titer
  other_titer: titer
  kind: Kind
  maybe_kind: Kind?
  tags: set of Kind
  name: text
  period: interval?
  fresh_hb: quantity g/L measured within 14 days before anchor
  day: date
  anchor: date
  event: date?
  items: list of Item
  more: list of Item?
  j: judgment

define big "n is big": n >= 5
define both "Both"
  big
  p or q
define nested "Nested definition": both and not r

inclusion
  I1 "Comparisons"
    n >= 1
    x < 2.5
    hb >= 6 g/dL
    name = "x" or name != "y"
    titer > 1:80
    day > 2025-01-01
    n != lo
  I2 "Ranges" requires any
    n between lo and hi
    n between 1 and 3
    titer between 1:40 and other_titer
    enzyme <= 2 x ULN
  I3 "Sets and enums" requires at least 2
    kind is a
    kind is not b
    kind is any of (a, c)
    maybe_kind is not a
    tags has a
    tags has any of (a, b)
    tags has all of (a, b)
  I4 "Windows"
    day within 2 weeks before anchor
    event within 1 month after anchor or event at least 3 days before anchor
    anchor at least 1 year after day
  I5 "Logic and counting"
    at least 2 of (p, q, r, j, big)
    any of (p, not q)
    all of (q, nested)
    not (p and q)
  I6 "Lists"
    any(items where ok and size >= 2)
    all(items where kind is any of (a, b) or extra)
    count(items where day within 1 week before anchor) >= 2
    count(more) < 3
    any(more where not ok)
    count(items where ok) = 1
    count(items where note = "z") != 0
    any(items)
  I7 "Gated" when p
    I7.1 "Deeper" when q
      n >= 2
      I7.1.1 "Deepest" when r
        x >= 1
    I7.2 "Plain"
      when kind is a: n >= 3
      when kind is b:
        x >= 1
        when p: q
  I8 "Any of children" requires any
    I8.1 "One" when j
      p
    I8.2 "Two"
      q
  I9 "At least children" requires at least 1
    I9.1 "One"
      when p: q
    I9.2 "Two" when q
      r
  I10 "Wide: more operands than are written as nested conditionals" requires any
    any of (p, q, r, j, big, both, nested, n >= 3, x >= 1)
    all of (p, q, r, j, big, both, nested, n >= 3, x >= 1)
    p and q and r and j and big and both and nested and n >= 3 and x >= 1
  I11 "Wide criterion"
    p
    q
    not r
    j
    big
    both
    nested
    n >= 3
    x >= 1

exclusion
  E1 "Judgment"
    j
  E2 "Nested"
    E2.1 "Sub"
      nested
    E2.2 "Sub when" when big
      p
  E3 "Constant"
    when n >= 100: r
  E4 "Time" requires any
    event less than 2 weeks before anchor
    event more than 1 months before anchor
    no event recorded or event at least 30 days before anchor
    period overlaps 1 week before anchor
    period ongoing at anchor
    period lasted more than 2 weeks by anchor
    count(different kind in items where ok) >= 2
    fresh_hb >= 60 g/L
'''


def _build(tmp_path_factory: pytest.TempPathFactory, protocol: ir.Protocol, text: str, name: str) -> ModuleType:
    path = tmp_path_factory.mktemp("fast") / f"{name}.py"
    path.write_text(emit_python(protocol, text), encoding="utf-8")
    return import_module(path)


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return _build(tmp_path_factory, compile_text(SINK), SINK, "sink")


@pytest.fixture(scope="module")
def jy231_ir() -> ir.Protocol:
    return compile_text(JY231_TEXT, "jy231.crit", SCHEMA_TEXT)


def agree(module: ModuleType, record: Any) -> None:
    """Every fast answer equals what the facts give."""
    problems = module.validate(record)
    if problems:
        for fast in (module.decide, module.assess, module.evaluate):
            with pytest.raises(module.InvalidRecord) as raised:
                fast(record)
            assert list(raised.value.problems) == problems
        return
    screening = module.evaluate(record)
    explained = screening.explain()  # the facts: every reason worked out
    assessed = module.assess(record)
    assert module.decide(record) is explained.decision
    assert assessed.decision is explained.decision is screening.decision
    assert assessed.outcomes == tuple(c.outcome for c in explained.criteria)
    assert assessed.missing == explained.missing == screening.missing
    assert assessed.pending_judgments == explained.pending_judgments == screening.pending_judgments
    for info, outcome in zip(module.CRITERIA, assessed.outcomes, strict=True):
        assert screening.outcome(info.id) is outcome


# ---- the kitchen sink --------------------------------------------------------------------

KINDS = st.sampled_from(["a", "b", "c"])
DAYS = st.sampled_from(["2024-12-31", "2025-01-01", "2025-01-20", "2025-02-01", "2025-02-02", "2025-02-15",
                        "2025-03-01", "2026-02-01"])
ITEM = st.fixed_dictionaries({}, optional={
    "ok": st.booleans(), "size": st.sampled_from([1, 2, 2.5]), "day": DAYS, "note": st.sampled_from(["z", "y"]),
    "kind": KINDS, "extra": st.one_of(st.none(), st.booleans()),
})
SINK_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "p": st.booleans(), "q": st.booleans(), "r": st.one_of(st.none(), st.booleans()),
    "n": st.integers(0, 6), "lo": st.integers(0, 3), "hi": st.integers(1, 4), "x": st.sampled_from([0.5, 1, 2.5, 3]),
    "hb": st.sampled_from([59, 60, {"value": 5.9, "unit": "g/dL"}, {"value": 6, "unit": "g/dL"}]),
    "enzyme": st.sampled_from([{"value": 80, "uln": 40}, {"value": 81, "uln": 40}]),
    "titer": st.sampled_from(["1:40", "1:80", "1:160"]), "other_titer": st.sampled_from(["1:40", "1:320"]),
    "kind": KINDS, "maybe_kind": st.one_of(st.none(), KINDS), "tags": st.lists(KINDS, max_size=3),
    "name": st.sampled_from(["x", "y", "z"]), "day": DAYS, "anchor": DAYS, "event": st.one_of(st.none(), DAYS),
    "items": st.lists(ITEM, max_size=3), "more": st.one_of(st.none(), st.lists(ITEM, max_size=4)),
    "j": st.booleans(),
    "period": st.one_of(st.none(), st.builds(lambda d: {"start": d}, DAYS),
                        st.builds(lambda d: {"start": d, "ongoing": True}, DAYS),
                        st.builds(lambda d: {"start": d, "end": "2026-02-01"}, DAYS)),
    "fresh_hb": st.builds(lambda v, d: {"value": v, "measured": d}, st.sampled_from([59, 60]), DAYS),
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional=SINK_FIELDS))
def test_every_construct_agrees_with_the_facts(sink: ModuleType, record: dict[str, Any]) -> None:
    agree(sink, record)


@pytest.mark.parametrize("record", [
    {},
    {"p": True, "q": True, "n": 5, "r": None, "items": [], "more": None},
    {"p": False, "kind": "b", "tags": ["a", "b"], "items": [{"ok": True}, {"ok": False}]},
    {"j": True, "event": None, "maybe_kind": None, "items": [{"day": "2025-01-01"}], "anchor": "2025-01-05"},
])
def test_edge_records_agree(sink: ModuleType, record: dict[str, Any]) -> None:
    agree(sink, record)


# ---- JY231, with facts missing -------------------------------------------------------------

LABS = st.fixed_dictionaries({"value": st.sampled_from([10, 40, 52, 120, 124, 300]),
                              "uln": st.sampled_from([20, 40])})
TESTS = st.sampled_from(["negative", "positive"])
PERIODS = st.one_of(  # an interval: ended, ongoing, or its end not recorded
    st.builds(lambda d: {"start": d, "end": d}, st.sampled_from(["2024-06-30", "2025-06-03", "2025-06-24"])),
    st.builds(lambda d: {"start": d, "ongoing": True}, st.sampled_from(["2024-06-30", "2025-06-24"])),
    st.builds(lambda d: {"start": d}, st.sampled_from(["2024-06-30", "2025-06-24"])))
DATES = st.sampled_from(["2023-05-01", "2024-06-30", "2024-07-01", "2025-03-01", "2025-05-27", "2025-06-03",
                         "2025-06-10", "2025-06-26", "2025-07-01"])
TREATMENT = st.fixed_dictionaries({"agent": st.sampled_from(["x", "y"])}, optional={
    "immunosuppressive": st.booleans(), "start": DATES, "end": DATES})
MALIGNANCY = st.fixed_dictionaries({}, optional={
    "kind": st.sampled_from(["cervical_cis", "basal_cell_skin", "localized_prostate", "ductal_cis", "other"]),
    "adequately_treated": st.booleans(), "radical_surgery": st.one_of(st.none(), st.booleans())})
JY231_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "age": st.sampled_from([17, 18, 75, 76]), "sex": st.sampled_from(["female", "male"]),
    "diagnosis": st.sampled_from(["SLE", "SS", "SSc", "DM", "AAV", "other"]), "diagnosis_date": DATES,
    "classification_met": st.booleans(), "ana": st.sampled_from(["1:80", "1:160"]), "anti_dsdna": TESTS,
    "anti_ssa": TESTS, "anti_scl70": TESTS, "myositis_antibodies": st.lists(st.sampled_from(["MDA5", "SRP"])),
    "anca": st.lists(st.sampled_from(["MPO", "PR3"]), max_size=2), "treatments": st.lists(TREATMENT, max_size=3),
    "intolerant_to_standard_therapy": st.booleans(), "sledai": st.sampled_from([7, 8]),
    "essdai": st.sampled_from([13, 14]), "mrss": st.sampled_from([9, 10, 35, 36]), "ild": st.booleans(),
    "bvas": st.sampled_from([14, 15]), "rash_vas": st.sampled_from([2.9, 3, {"value": 30, "unit": "mm"}]),
    "active_muscle_inflammation": st.booleans(), "mmt8": st.sampled_from([124, 125]),
    "patient_global_vas": st.sampled_from([1.9, 2]), "physician_global_vas": st.sampled_from([1.9, 2]),
    "haq_di": st.sampled_from([0.2, 0.25]), "extramuscular_vas": st.sampled_from([0.9, 1]), "ck": LABS,
    "aldolase": LABS, "ldh": LABS, "ecog": st.sampled_from([1, 2]),
    "hemoglobin": st.sampled_from([59, 60, {"value": 5.9, "unit": "g/dL"}]), "platelets": st.sampled_from([19, 20]),
    "lvef": st.sampled_from([54, 55]), "ecg_normal": st.booleans(), "egfr": st.sampled_from([29, 30]),
    "ast": LABS, "alt": LABS, "bilirubin": LABS, "collection_contraindicated": st.booleans(),
    "childbearing_potential": st.booleans(), "reproductive_potential": st.booleans(), "urine_pregnancy_test": TESTS,
    "contraception_agreed": st.booleans(),
    "prior_car_t": st.booleans(), "severe_disorders": st.lists(st.sampled_from(["cardiac", "hepatic"]), max_size=1),
    "disorder_outweighs": st.booleans(), "systemic_infection": st.one_of(st.none(), PERIODS),
    "hbsag": TESTS, "hbcab": TESTS, "hbv_dna": LABS, "hcv_antibody": TESTS, "hcv_rna": LABS, "hiv_antibody": TESTS,
    "last_live_vaccine": st.one_of(st.none(), DATES), "pregnant": st.booleans(), "breastfeeding": st.booleans(),
    "malignancies": st.lists(MALIGNANCY, max_size=2), "other_study": st.one_of(st.none(), PERIODS),
    "unsuitable": st.booleans(),
}


@st.composite
def jy231_records(draw: st.DrawFn) -> dict[str, Any]:
    """The eligible sample patient, with some facts changed and some dropped (missing)."""
    record = copy.deepcopy(BASE)
    record.update(draw(st.fixed_dictionaries({}, optional=JY231_FIELDS)))
    for name in draw(st.lists(st.sampled_from(sorted(set(BASE) | set(JY231_FIELDS) - {"id"})), max_size=6)):
        record.pop(name, None)
    return record


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jy231_records())
def test_jy231_fast_path_agrees_with_the_facts(jy231: ModuleType, record: dict[str, Any]) -> None:
    agree(jy231, record)


def test_every_decision_is_reached(jy231: ModuleType) -> None:
    """The generated records above are not all of one kind: the agreement covers each decision."""
    seen = {jy231.decide(r).value for r in (BASE, {**BASE, "age": 80}, {k: v for k, v in BASE.items() if k != "alt"})}
    assert seen == {"eligible", "ineligible", "needs review"}


def test_decide_stops_at_the_first_settling_criterion(jy231: ModuleType) -> None:
    # I1 fails: nothing else is read, so facts that would be unknown or costly do not matter.
    assert jy231.decide({"age": 80, "consent_signed": True}).value == "ineligible"
    assert jy231.evaluate({"age": 80, "consent_signed": True}).decision.value == "ineligible"


def test_one_function_per_criterion_quoting_its_lines(jy231: ModuleType) -> None:
    source = (ROOT / "generated" / "jy231.py").read_text(encoding="utf-8")
    functions = re.findall(r"^def (\w+)\(", source, re.MULTILINE)
    criteria = [f for f in functions if f.startswith("criterion_")]
    assert sorted(criteria) == sorted("criterion_" + c.id.replace(".", "_") for c in jy231.CRITERIA)
    assert not [f for f in functions if f.startswith(("_assess_", "_decide_", "_crit_", "_fast_"))]
    # every line of a condition written over two lines is quoted, not just its first
    refractory = source[source.index("def define_refractory("):]
    assert "# line 11: define refractory" in refractory
    assert "# line 12: count(different agent in treatments where" in refractory


# ---- the record reader ------------------------------------------------------------------------

GARBAGE = st.one_of(
    st.none(), st.booleans(), st.integers(-10**16, 10**16), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "x", "1:80", "1:0", "2025-02-30", "2025-06-01", "20250601", "SLE", "positive", "g/dL",
                     "10^3/uL", "mm", "U/L"]),
    st.lists(st.sampled_from(["MDA5", "MPO", "cardiac", "x", 1]), max_size=3),
    st.fixed_dictionaries({}, optional={"value": st.sampled_from([1, 2.5, "1", None, float("inf"), 10**15]),
                                        "uln": st.sampled_from([0, -1, 40, 2.5, None]),
                                        "unit": st.sampled_from(["g/dL", "mm", "U/L", "10^3/uL", "x", None, 1]),
                                        "other": st.just(1)}),
    st.lists(st.dictionaries(st.sampled_from(["agent", "start", "end", "immunosuppressive", "kind", "ok", "zz"]),
                             st.sampled_from(["x", True, "2025-01-01", None, 1])), max_size=2),
)


def generic_read(module: ModuleType, protocol: ir.Protocol, record: object) -> tuple[list[Any], dict[str, Any]]:
    """The record read field by field with `get` and the runtime's reader for each type, as the
    evaluators did before they were specialised (and as the interpreter does)."""
    problems: list[Any] = []
    records = {r.name: r for r in protocol.records}

    def reader(t: ir.Type) -> Any:
        simple = {"bool": module.read_bool, "judgment": module.read_bool, "integer": module.read_integer,
                  "decimal": module.read_decimal, "text": module.read_text, "date": module.read_date,
                  "titer": module.read_titer, "interval": module.read_interval}
        if t.kind in simple:
            return simple[t.kind]
        if t.kind in ("quantity", "lab"):
            assert t.unit is not None
            read = module.read_quantity if t.kind == "quantity" else module.read_lab
            unit, factors = t.unit.text, t.record_units()
            return lambda raw, at, pr: read(raw, at, pr, unit, factors)
        if t.kind in ("enum", "set"):
            assert t.enum is not None
            read = module.read_enum if t.kind == "enum" else module.read_set
            members = t.enum.member_names()
            return lambda raw, at, pr: read(raw, at, pr, members)
        assert t.record is not None
        fields = records[t.record].fields

        def item(raw: object, at: str, pr: list[Any]) -> dict[str, Any] | None:
            if not module.check_keys(raw, at, [f.name for f in fields], pr):
                return None
            assert isinstance(raw, dict)
            return {f.name: field(raw, f, f"{at}.{f.name}", pr) for f in fields}

        return lambda raw, at, pr: module.read_list(raw, at, pr, item)

    def field(raw: dict[str, Any], f: ir.Field, path: str, pr: list[Any]) -> Any:
        value = module.get(raw, f.name, path, pr, reader(f.type), f.optional)
        if f.plausible is None:
            return value
        unit = f.type.unit.text if isinstance(f.type, ir.Measure) else ""
        return module.plausible(value, f.plausible.low, f.plausible.high, f.plausible.text, unit, path, pr)

    raw = record if module.check_keys(record, "", [f.name for f in protocol.fields], problems) else {}
    assert isinstance(raw, dict)
    values = {f.name: field(raw, f, f.name, problems) for f in protocol.fields}
    return problems, values


def _plain(value: Any) -> Any:
    """A read value with record items as dicts, to compare with the generic reading."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {name: _plain(getattr(value, name)) for name in value.__dataclass_fields__}
    return value


def reads_alike(module: ModuleType, protocol: ir.Protocol, record: object) -> None:
    problems, values = generic_read(module, protocol, record)
    found: list[Any] = []
    patient = module._read(record, found)
    assert found == problems
    for field in protocol.fields:
        mine, theirs = _plain(getattr(patient, field.name)), values[field.name]
        assert mine == theirs and type(mine) is type(theirs), field.name


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["age", "hemoglobin", "platelets", "ast", "haq_di", "rash_vas", "screening",
                                         "last_live_vaccine", "ana", "diagnosis", "anca", "treatments",
                                         "malignancies", "consent_signed", "agent", "id"]), GARBAGE, max_size=5))
def test_the_specialised_reader_reads_as_the_runtime_does(jy231: ModuleType, jy231_ir: ir.Protocol,
                                                         record: dict[str, Any]) -> None:
    reads_alike(jy231, jy231_ir, {**BASE, **record})


@pytest.mark.parametrize("record", [None, [], "patient", 42, {"hemoglobn": 1}, {1: 2}, {"age": True}])
def test_records_that_are_not_objects_or_have_unknown_keys_read_alike(jy231: ModuleType, jy231_ir: ir.Protocol,
                                                                      record: Any) -> None:
    reads_alike(jy231, jy231_ir, record)


# ---- the deferred screening ------------------------------------------------------------------


def test_evaluate_defers_the_reasons_but_behaves_as_a_screening(jy231: ModuleType) -> None:
    record = {**BASE, "age": 80}
    record.pop("alt")
    deferred = jy231.evaluate(record)
    explained = deferred.explain()
    assert type(explained) is jy231.Screening and isinstance(deferred, jy231.Screening)
    assert deferred == explained and explained == deferred and hash(deferred) == hash(explained)
    assert deferred.to_dict() == explained.to_dict()
    assert repr(deferred) == repr(explained)
    assert deferred.criteria is explained.criteria  # worked out once
    restored = pickle.loads(pickle.dumps(deferred))
    assert type(restored) is jy231.Screening and restored == explained
    assert deferred.outcome("I5.4") is jy231.Outcome.UNKNOWN
    with pytest.raises(KeyError):
        deferred.outcome("I99")
