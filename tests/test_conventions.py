"""The conventions a project of protocols relies on: `python -m crit`, defaults from
`[tool.crit]` in pyproject.toml, and the pre-commit hooks in .pre-commit-hooks.yaml (validated
by pre-commit's own manifest schema, and each hook's entry run as pre-commit would run it)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pre_commit.clientlib import load_manifest

from crit import __version__
from crit.cli import main
from crit.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]

WARNED = """\
protocol T2 "Warned"

patient
  age: integer "Age"
  unused: bool "Never used"

inclusion
  I1 "Adult"
    age >= 18
"""

SCHEMA = 'patient\n  age: integer "Age"\n'
USES_SCHEMA = 'protocol T3 "Uses a schema"\n\nimport "schemas/s.crit"\n\ninclusion\n  I1 "Adult"\n    age >= 18\n'


def test_python_dash_m_crit() -> None:
    result = subprocess.run([sys.executable, "-m", "crit", "--version"], capture_output=True, text=True,
                            check=False, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == f"crit, version {__version__}"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "trials").mkdir()
    (tmp_path / "trials" / "t2.crit").write_text(WARNED, encoding="utf-8")
    return tmp_path


def configure(project: Path, table: str) -> None:
    (project / "pyproject.toml").write_text(f'[project]\nname = "trials"\n\n[tool.crit]\n{table}', encoding="utf-8")


def test_defaults_without_a_table(project: Path) -> None:
    assert load_config() == Config()
    (project / "pyproject.toml").write_text('[project]\nname = "trials"\n', encoding="utf-8")
    assert load_config() == Config(source=(project / "pyproject.toml").resolve())


def test_tool_crit_sets_build_and_check_defaults(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configure(project, 'protocols = ["trials"]\noutput = "out"\nstrict = true\n')
    (project / "sub").mkdir()
    config = load_config(project / "sub")  # found from below, paths relative to pyproject.toml
    assert (config.protocols, config.output, config.strict) == ((Path("trials"),), Path("out"), True)

    assert main(["build"]) == 0
    assert {"t2.md", "t2.py"} <= {p.name for p in (project / "out").iterdir()}
    assert main(["build", "--check"]) == 0
    assert main(["check", "trials/t2.crit"]) == 1  # strict: the W005 warning is an error
    assert "error[W005]" in capsys.readouterr().err
    assert main(["check", "--no-strict", "trials/t2.crit"]) == 0
    assert main(["check", "--all", "--no-strict"]) == 0
    assert "trials/t2.crit: ok" in capsys.readouterr().out

    configure(project, 'protocols = "trials"\nstrict = false\n')
    assert main(["check", "trials/t2.crit"]) == 0
    assert main(["build", "-o", "elsewhere"]) == 0  # the command line wins
    assert (project / "elsewhere" / "t2.py").is_file()


@pytest.mark.parametrize(("table", "message"), [
    ("protocol = ['trials']\n",
     "[tool.crit] has no setting 'protocol' (the settings are output, protocols, sql, strict)"),
    ("strict = 'yes'\n", "[tool.crit] strict must be true or false"),
    ("protocols = [1]\n", "[tool.crit] protocols must be a directory name or a list of them"),
    ("output = ''\n", "[tool.crit] output must be a directory name"),
    ("strict = \n", "not valid TOML"),
])
def test_a_bad_table_is_one_line_and_exit_2(project: Path, capsys: pytest.CaptureFixture[str], table: str,
                                           message: str) -> None:
    configure(project, table)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config()
    assert main(["build"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crit: pyproject.toml: ") and message in err and err.count("\n") == 1
    assert main(["check", "trials/t2.crit"]) == 2


# ---- pre-commit hooks -----------------------------------------------------------------------


def test_pre_commit_manifest_is_valid() -> None:
    hooks = load_manifest(str(ROOT / ".pre-commit-hooks.yaml"))
    assert [h["id"] for h in hooks] == ["crit-fmt", "crit-check", "crit-build-check"]
    assert all(h["language"] == "python" and h["entry"].startswith("crit ") for h in hooks)


def run_hook(hook: dict[str, Any], files: list[str]) -> int:
    """A hook's entry, run as pre-commit runs it: its words, its args, then the matching
    staged files (when it takes file names); `crit` is the installed command, run in-process."""
    words = shlex.split(str(hook["entry"]))
    assert words[0] == "crit"
    matching = [f for f in files if re.search(str(hook["files"]), f)]
    args = [*words[1:], *(str(a) for a in hook.get("args") or [])]
    return main([*args, *(matching if hook["pass_filenames"] else [])])


def test_pre_commit_hooks_run(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hooks = {h["id"]: h for h in load_manifest(str(ROOT / ".pre-commit-hooks.yaml"))}
    configure(project, 'protocols = ["trials"]\noutput = "out"\n')
    (project / "trials" / "schemas").mkdir()
    (project / "trials" / "schemas" / "s.crit").write_text(SCHEMA, encoding="utf-8")
    (project / "trials" / "t3.crit").write_text(USES_SCHEMA, encoding="utf-8")
    staged = ["trials/t3.crit", "trials/schemas/s.crit", "trials/t2.crit", "README.md"]
    assert main(["build"]) == 0
    assert [run_hook(hooks[name], staged) for name in hooks] == [0, 0, 0]

    messy = project / "trials" / "t2.crit"
    messy.write_text(WARNED.replace("age >= 18", "age>=18"), encoding="utf-8")
    assert run_hook(hooks["crit-fmt"], staged) == 0  # reformatted: pre-commit sees the change
    assert messy.read_text(encoding="utf-8") == WARNED
    assert run_hook(hooks["crit-fmt"], staged) == 0

    messy.write_text(WARNED.replace("age >= 18", "agee >= 18"), encoding="utf-8")
    assert run_hook(hooks["crit-check"], staged) == 1
    assert "error[E201]" in capsys.readouterr().err
    messy.write_text(WARNED.replace("age >= 18", "age >= 21"), encoding="utf-8")
    assert run_hook(hooks["crit-check"], staged) == 0
    schema = project / "trials" / "schemas" / "s.crit"
    schema.write_text(SCHEMA.replace("integer", "integr"), encoding="utf-8")
    assert run_hook(hooks["crit-check"], ["trials/schemas/s.crit"]) == 1  # through t3, which imports it
    assert "error[E10" in capsys.readouterr().err
    schema.write_text(SCHEMA, encoding="utf-8")
    assert run_hook(hooks["crit-build-check"], staged) == 1  # t2 changed, out/ did not
    assert "stale: out/t2.py" in capsys.readouterr().err


def test_the_configured_sql_dialects_are_the_backends() -> None:
    """`crit.config` names the dialects without importing the SQL backend (sqlglot is not loaded
    to read a setting); the two lists must stay one."""
    from crit.backends.sql import DIALECTS
    from crit.config import SQL_DIALECTS

    assert SQL_DIALECTS == DIALECTS
