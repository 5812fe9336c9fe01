"""The VS Code extension's TextMate grammar (editors/vscode/syntaxes/crit.tmLanguage.json),
run by the library VS Code itself uses (vscode-textmate with Oniguruma, from
editors/vscode/node_modules: `npm ci --prefix editors/vscode`, which .ci/run does).

Every character of JY231 and its schema that is not a space must get a scope of its own (not
just the file's `source.crit`), and none may be marked invalid. Missing node or the npm packages
is a failure, never a skip: the test would otherwise pass where nothing was checked."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTENSION = ROOT / "editors" / "vscode"
FILES = [ROOT / "protocols" / "jy231.crit", ROOT / "protocols" / "schemas" / "autoimmune.crit"]

Token = tuple[str, list[str]]


def tokenize(*paths: Path) -> dict[str, list[tuple[str, list[Token]]]]:
    node = shutil.which("node")
    assert node is not None, "node (20 or later) is needed to test the TextMate grammar"
    assert (EXTENSION / "node_modules" / "vscode-textmate").is_dir(), (
        "the grammar's test tools are not installed: run `npm ci --prefix editors/vscode`")
    result = subprocess.run([node, str(EXTENSION / "test" / "tokenize.mjs"), *map(str, paths)],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    raw = json.loads(result.stdout)
    return {Path(name).name: [(line, [(text, scopes) for text, scopes in tokens]) for line, tokens in lines]
            for name, lines in raw.items()}


@pytest.fixture(scope="module")
def tokens() -> dict[str, list[tuple[str, list[Token]]]]:
    return tokenize(*FILES)


def unscoped(lines: list[tuple[str, list[Token]]]) -> list[str]:
    """Lines with text that only the root scope covers, or that the grammar calls invalid."""
    return [f"{number}: {line!r} {text!r} {scopes}" for number, (line, tokens) in enumerate(lines, 1)
            for text, scopes in tokens
            if text.strip() and (len(scopes) < 2 or any(s.startswith("invalid") for s in scopes))]


def test_no_line_of_jy231_is_left_unscoped(tokens: dict[str, list[tuple[str, list[Token]]]]) -> None:
    for name in ("jy231.crit", "autoimmune.crit"):
        assert len(tokens[name]) > 100
        assert unscoped(tokens[name]) == []


def scope_of(tokens: dict[str, list[tuple[str, list[Token]]]], name: str, line_with: str, text: str) -> str:
    """The innermost scope of `text` on the line that is `line_with` (else the first holding it)."""
    lines = tokens[name]
    line = (next((t for line, t in lines if line == line_with), None)
            or next(t for line, t in lines if line_with in line))
    return next(scopes[-1] for token, scopes in line if token == text)


@pytest.mark.parametrize(("name", "line_with", "text", "scope"), [
    ("jy231.crit", "protocol JY231", "protocol", "keyword.other.protocol.crit"),
    ("jy231.crit", "# ---- Inclusion", "# ---- Inclusion " + "-" * 67, "comment.line.number-sign.crit"),
    ("jy231.crit", '  I1 "Age', "I1", "entity.name.section.criterion.crit"),
    ("jy231.crit", "    I2.1 ", "I2.1", "entity.name.section.criterion.crit"),
    ("jy231.crit", '  I1 "Age', "Age 18–75 years, male or female, signed informed consent",
     "string.quoted.double.crit"),
    ("jy231.crit", "hemoglobin >= 60 g/L", "g/L", "constant.other.unit.crit"),
    ("jy231.crit", "hemoglobin >= 60 g/L", "60", "constant.numeric.crit"),
    ("jy231.crit", "hemoglobin >= 60 g/L", ">=", "keyword.operator.comparison.crit"),
    ("jy231.crit", "hemoglobin >= 60 g/L", "hemoglobin", "variable.other.crit"),
    ("jy231.crit", "define ana_above_1_80", "1:80", "constant.numeric.titer.crit"),
    ("jy231.crit", "ck >= 1.3 x ULN", "ULN", "support.constant.uln.crit"),
    ("jy231.crit", "age between 18 and 75", "between", "keyword.operator.word.crit"),
    ("jy231.crit", "age between 18 and 75", "and", "keyword.operator.logical.crit"),
    ("jy231.crit", "define refractory", "refractory", "entity.name.function.crit"),
    ("jy231.crit", "count(different agent in treatments where", "where", "keyword.control.crit"),
    ("jy231.crit", "inclusion", "inclusion", "keyword.other.crit"),
    ("autoimmune.crit", "enum Disease", "Disease", "entity.name.type.crit"),
    ("autoimmune.crit", "  hemoglobin:", "g/L", "constant.other.unit.crit"),
    ("autoimmune.crit", "  hemoglobin:", "g/dL", "constant.other.unit.crit"),
    ("autoimmune.crit", "  egfr:", "mL/min/1.73m2", "constant.other.unit.crit"),
    ("autoimmune.crit", "  hemoglobin:", "hemoglobin", "variable.other.member.crit"),
])
def test_scopes(tokens: dict[str, list[tuple[str, list[Token]]]], name: str, line_with: str, text: str,
                scope: str) -> None:
    assert scope_of(tokens, name, line_with, text) == scope


def test_the_check_can_fail(tmp_path: Path) -> None:
    """A character crit does not read is marked invalid, so `unscoped` finds it."""
    path = tmp_path / "odd.crit"
    path.write_text('inclusion\n  I1 "x"\n    age >= 18 @ 3\n', encoding="utf-8")
    lines = tokenize(path)["odd.crit"]
    assert unscoped(lines) == ["3: '    age >= 18 @ 3' '@' ['source.crit', 'invalid.illegal.crit']"]


def test_the_extension_registers_the_grammar_and_starts_crit_lsp() -> None:
    manifest = json.loads((EXTENSION / "package.json").read_text(encoding="utf-8"))
    (language,) = manifest["contributes"]["languages"]
    (grammar,) = manifest["contributes"]["grammars"]
    assert language["id"] == grammar["language"] == "crit" and language["extensions"] == [".crit"]
    scope = json.loads((EXTENSION / grammar["path"]).read_text(encoding="utf-8"))["scopeName"]
    assert grammar["scopeName"] == scope == "source.crit"
    assert manifest["contributes"]["configuration"]["properties"]["crit.command"]["default"] == ["crit", "lsp"]
    assert "vscode-languageclient" in manifest["dependencies"]
    main = EXTENSION / manifest["main"]
    node = shutil.which("node")
    assert node is not None
    checked = subprocess.run([node, "--check", str(main)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    assert "vscode-languageclient/node" in main.read_text(encoding="utf-8")


# Lines in the forms the language is growing (plausible ranges, analytes, derived values, counts
# per volume, distinct counts): highlighted already, so that a protocol using them stays scoped.
GROWING = """\
  hemoglobin: quantity g/L also g/dL from 20 to 250 g/L "Hemoglobin"
  glucose: quantity mmol/L also mg/dL as glucose molar mass 180.156 g/mol
define bmi "BMI" in kg/m^2 = weight / (height × height)
    (140 - age) × (weight in kg) / (72 × (creatinine in mg/dL)) × 0.85 if sex is female,
    count(different agent in treatments where immunosuppressive) >= 2
    neutrophils >= 1500 /mm3
"""


def test_growing_forms_are_scoped(tmp_path: Path) -> None:
    path = tmp_path / "growing.crit"
    path.write_text(GROWING, encoding="utf-8")
    lines = tokenize(path)["growing.crit"]
    assert unscoped(lines) == []
    units = [text for _, tokens in lines for text, scopes in tokens if scopes[-1] == "constant.other.unit.crit"]
    assert units == ["g/L", "g/dL", "g/L", "mmol/L", "mg/dL", "g/mol", "kg/m^2", "kg", "mg/dL", "/mm3"]
    names = [text for _, tokens in lines[4:5] for text, scopes in tokens if scopes[-1] == "variable.other.crit"]
    assert names == ["agent", "treatments", "immunosuppressive"]  # `in` before a list is not a unit
