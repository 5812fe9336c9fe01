"""The build: strict grammar, golden evaluators, determinism, the embedded runtime, no injection."""

from __future__ import annotations

import ast as pyast
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from conftest import ROOT, compile_text, import_module
from crit.backends.python import emit_python, runtime_block
from crit.syntax.grammar import parser

SMALL = '''protocol DEMO "A small demonstration protocol"
  version "1"

enum Arm "Arm"
  a "Arm A"
  b "Arm B"

record Dose
  mg: decimal "Dose in mg"
  given: date

patient
  screening: date "Screening"
  age: integer "Age"
  arm: Arm
  hb: quantity g/L also g/dL "Hemoglobin"
  alt: lab U/L "ALT"
  ana: titer
  vaccine: date? "Last live vaccine"
  doses: list of Dose
  fit: judgment "Fit for the study"

define adult "An adult": age >= 18

inclusion
  I1 "Adult with hemoglobin of at least 60 g/L"
    adult
    hb >= 6 g/dL
    note "A note that renders but does not compute."
  I2 "Either arm, by rule" requires any
    I2.1 "Arm A with a raised titer" when arm is a
      ana >= 1:160
    I2.2 "Arm B"
      arm is b
  I3 "Doses"
    count(doses where mg >= 10 and given within 2 weeks before screening) >= 1
    alt <= 2.5 x ULN

exclusion
  E1 "Live vaccine within 4 weeks"
    vaccine within 4 weeks before screening
  E2 "Not fit"
    not fit
'''


def test_grammar_is_conflict_free_under_strict_lalr() -> None:
    parser.cache_clear()
    try:
        assert parser(strict=True) is not None
    finally:
        parser.cache_clear()


def test_small_protocol_golden(golden: Callable[[str, str], None]) -> None:
    # The embedded runtime is checked on its own below; the golden file holds the protocol part.
    code = emit_python(compile_text(SMALL, "demo.crit"), SMALL).replace(runtime_block(), "# <runtime>")
    golden("demo.py", code)


def test_generated_module_passes_its_own_tests(evaluator: Callable[[str], ModuleType]) -> None:
    module = evaluator(SMALL)
    patient = {"screening": "2025-01-31", "age": 40, "arm": "a", "hb": {"value": 6.0, "unit": "g/dL"},
               "alt": {"value": 50, "uln": 20}, "ana": "1:160", "vaccine": None,
               "doses": [{"mg": 10, "given": "2025-01-17"}], "fit": True}
    assert module.evaluate(patient).decision.value == "eligible"
    assert module.evaluate({**patient, "doses": []}).decision.value == "ineligible"
    assert module.evaluate({**patient, "vaccine": "2025-01-03"}).decision.value == "ineligible"
    assert module.evaluate({**patient, "vaccine": "2025-01-02"}).decision.value == "eligible"
    assert module.evaluate({**patient, "arm": "b", "ana": "1:40"}).outcome("I2.1").value == "not applicable"


def test_generated_files_are_current() -> None:
    """What CI's `crit build --check` checks, also run by the suite."""
    result = subprocess.run([sys.executable, "-m", "crit.cli", "build", "--check"], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_builds_are_byte_identical_under_different_hash_seeds(tmp_path: Path) -> None:
    outputs = []
    for seed in ("1", "4242"):
        out = tmp_path / seed
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-m", "crit.cli", "build", "protocols/jy231.crit", "-o", str(out)],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        outputs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert outputs[0] == outputs[1]
    assert set(outputs[0]) == {"jy231.py", "jy231.md", "jy231.sql"}


def test_every_evaluator_embeds_the_runtime_verbatim() -> None:
    text = (ROOT / "generated" / "jy231.py").read_text(encoding="utf-8")
    assert runtime_block() in text


def test_generated_evaluator_imports_only_the_standard_library() -> None:
    tree = pyast.parse((ROOT / "generated" / "jy231.py").read_text(encoding="utf-8"))
    imported = set()
    for node in pyast.walk(tree):
        if isinstance(node, pyast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, pyast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}
    assert "crit" not in imported


def test_runtime_imports_nothing_from_crit() -> None:
    text = (ROOT / "src" / "crit" / "runtime.py").read_text(encoding="utf-8")
    assert "import crit" not in text and "from crit" not in text


HOSTILE = [
    '"""; import os; os.system("echo pwned") #',
    "'''",
    "line one\\nline two",
    "back\\\\slash",
    "{x} {{y}} %s",
    "# not a comment",
    "\u2028 line separator \u2029",
    "__import__('os')",
    "class def return",
]


def test_hostile_text_lands_as_inert_data(tmp_path: Path) -> None:
    for index, raw in enumerate(HOSTILE):
        text = raw.replace('"', '\\"')  # a crit string escapes its quotes
        source = (
            f'protocol P{index} "{text}"\n  version "{text}"\n\n'
            f'enum E "{text}"\n  a "{text}"\n\n'
            f'patient\n  flag: bool "{text}"\n  kind: E "{text}"\n\n'
            f'define d "{text}": flag\n\n'
            f'inclusion\n  I1 "{text}"\n    d\n    kind is a\n    note "{text}"\n'
        )
        protocol = compile_text(source)
        code = emit_python(protocol, source)
        tree = pyast.parse(code)
        names = {n.id for n in pyast.walk(tree) if isinstance(n, pyast.Name)}
        assert "os" not in names and "__import__" not in names
        path = tmp_path / f"hostile_{index}.py"
        path.write_text(code, encoding="utf-8")
        module = import_module(path)
        assert module.PROTOCOL["title"] == protocol.title
        assert module.CRITERIA[0].title == protocol.inclusion[0].title
        assert module.evaluate({"flag": True, "kind": "a"}).decision.value == "eligible"


def test_keywords_as_field_names_are_safe(evaluator: Callable[[str], ModuleType]) -> None:
    module = evaluator(
        'protocol K "Keywords"\n\npatient\n  class: bool\n  match: integer\n  None: bool\n\n'
        'inclusion\n  I1 "k"\n    class\n    match >= 2\n    None\n'
    )
    assert module.evaluate({"class": True, "match": 2, "None": True}).decision.value == "eligible"


def test_every_artefact_carries_the_generated_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    """`crit build` overwrites only files with the mark, so each artefact it writes must carry it
    where `files.is_generated` looks (the first 512 bytes), or the next build would refuse it."""
    from crit.cli import outputs
    from crit.driver import Loaded, load
    from crit.files import GENERATED_MARK

    monkeypatch.chdir(ROOT)
    loaded = Loaded()
    artefacts = outputs(load(Path("protocols/jy231.crit"), loaded), loaded, "duckdb")
    assert set(artefacts) == {"jy231.py", "jy231.md", "jy231.sql"}
    for name, text in artefacts.items():
        assert GENERATED_MARK.encode() in text.encode("utf-8")[:512], name
    assert GENERATED_MARK in (ROOT / "generated" / "jy231.md").read_text(encoding="utf-8").split("\n")[0]
