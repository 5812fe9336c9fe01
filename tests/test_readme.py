"""The README's code blocks run, so that what it tells a new user to type works.

How blocks are picked out of README.md (a fence may be indented, as inside a list item):

- ```` ```python ```` blocks run, in the order they appear, as one Python session: a later block
  may use what an earlier one defined (the evaluator-API blocks do). They run in a fresh
  `python` process whose working directory is a scratch copy of the repository.
- ```` ```sh ```` blocks (or `bash`, `shell`) run line by line in that same copy (after the Python blocks). A line
  ending in `\\` continues on the next; `#` starts a comment; `&&` separates commands, and each
  command is run on its own, in order. A command starting with `crit ` or `python ` runs with this
  environment's `crit` and `python`, and must exit 0 (or with the code `EXIT_CODES` gives it, and
  the reason) without a traceback. Every other command (`pip install`, `. .venv/bin/activate`),
  and the few that are too slow for the suite, must be listed in `SKIPPED`, with the reason:
  nothing is skipped silently, and a `SKIPPED` entry that is no longer in the README fails too.
- Blocks fenced with anything else (```` ```json ````, ```` ```text ````, or no language: sample
  output, `.crit` excerpts, diagnostics) are shown to the reader, not run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Commands the README shows but the suite does not run, each with why.
SKIPPED = {
    "python3 -m venv .venv": "creates a virtual environment: the suite already runs in one",
    ". .venv/bin/activate": "the suite's environment is already active",
    "pip install -e '.[dev]'": "installs the project: the suite runs on the installed project",
    "python -m pytest": "the test suite itself",
    "CRIT_DIFF_SEED=100 CRIT_DIFF_EXAMPLES=100 CRIT_DIFF_RECORDS=500 CRIT_DIFF_COMPLETIONS=2 python -m pytest "
    "tests/test_differential.py -q -s -k \"random_protocols or zz\"":
        "one chunk of the long differential run (10 minutes)",
    "CRIT_PRECISION_EXAMPLES=60 CRIT_PRECISION_RECORDS=20 CRIT_PRECISION_JY231=6 python -m pytest "
    "tests/test_precision.py -q -s": "the needless-review measurement at the size the README quotes (minutes)",
    "python benchmarks/run.py": "the full benchmark (about 12 minutes)",
    "python benchmarks/run.py --quick": "the quick benchmark (about 2 minutes)",
}

# Commands that exit with a code other than 0 on purpose, by the start of the command.
EXIT_CODES = {
    "crit screen protocols/jy231.crit examples/cohort/patients.jsonl":
        (3, "the sample cohort holds two unreadable records on purpose"),
    "crit screen --from fhir protocols/jy231.crit examples/fhir/":
        (3, "example P0001110 reports its AST in [IU]/mL, a unit the mapping does not accept, on purpose"),
}

# What the scratch copy leaves out: version control, environments, caches.
_NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".*_cache", ".hypothesis", "*.egg-info")
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")


@dataclass(frozen=True)
class Block:
    """A fenced code block of the README: its language, first line of code (1-based), and text."""

    language: str
    line: int
    code: str


def blocks(text: str) -> list[Block]:
    """Every fenced block, with the fence's indentation removed from its lines."""
    found: list[Block] = []
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = opening["info"].strip().split(" ")[0].lower()
        start, body = index, []
        while index < len(lines):
            closing = _FENCE.match(lines[index])
            index += 1
            if closing is not None and closing["fence"].startswith(fence) and not closing["info"].strip():
                break
            body.append(lines[index - 1].removeprefix(indent))
        found.append(Block(language, start + 1, "\n".join(body) + "\n"))
    return found


def commands(block: Block) -> list[tuple[int, str]]:
    """The commands of a sh block, with the README line each starts on: continuations joined,
    comments dropped, `&&` chains split."""
    out: list[tuple[int, str]] = []
    pending, first = "", 0
    for offset, raw in enumerate(block.code.split("\n")):
        line = raw.rstrip()
        if not pending:
            first = block.line + offset
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = re.sub(r"(^|\s)#.*$", "", pending + line).strip()
        pending = ""
        out += [(first, " ".join(part.split())) for part in line.split("&&") if part.strip()]
    return out


def readme_blocks() -> list[Block]:
    return blocks(README.read_text(encoding="utf-8"))


def sh_commands() -> list[tuple[int, str]]:
    return [command for block in readme_blocks() if block.language in ("sh", "bash", "shell")
            for command in commands(block)]


def runs(command: str) -> bool:
    return command not in SKIPPED and command.startswith(("crit ", "python "))


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch copy of the repository, so that the README's commands write nothing here."""
    target = tmp_path_factory.mktemp("readme") / "repo"
    shutil.copytree(ROOT, target, ignore=_NOT_COPIED, symlinks=True)
    return target


def environment() -> dict[str, str]:
    """This environment's `crit` and `python` first on PATH, as after `. .venv/bin/activate`."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


# ---- the rules themselves -----------------------------------------------------------------------


def test_the_extraction_rules() -> None:
    text = ("intro\n```python\nx = 1\n```\n- item\n  ```sh\n  crit check a.crit \\\n    --strict  # why\n"
            "  python3 -m venv v && crit build\n  ```\n```json\n{}\n```\n```\nplain\n```\n")
    found = blocks(text)
    assert [(b.language, b.line, b.code) for b in found] == [
        ("python", 3, "x = 1\n"),
        ("sh", 7, "crit check a.crit \\\n  --strict  # why\npython3 -m venv v && crit build\n"),
        ("json", 12, "{}\n"), ("", 15, "plain\n")]
    assert commands(found[1]) == [(7, "crit check a.crit --strict"), (9, "python3 -m venv v"), (9, "crit build")]


def test_every_command_either_runs_or_is_skipped_with_a_reason() -> None:
    shown = [command for _, command in sh_commands()]
    unknown = [c for c in shown if not runs(c) and c not in SKIPPED]
    assert unknown == [], "add these README commands to SKIPPED with a reason, or make them crit/python commands"
    assert [c for c in SKIPPED if c not in shown] == [], "SKIPPED names commands the README no longer shows"
    assert [c for c in EXIT_CODES if not any(s.startswith(c) for s in shown)] == []
    assert any(runs(c) for c in shown) and any(b.language == "python" for b in readme_blocks())


# ---- running them ---------------------------------------------------------------------------------

# Runs every Python block, in order, in one namespace; a failure's traceback names README.md and
# the line, because each block is compiled as if it stood at its own place in the file.
_SESSION = """
import json, sys
namespace = {"__name__": "__main__"}
for line, code in json.load(sys.stdin):
    exec(compile("\\n" * (line - 1) + code, "README.md", "exec"), namespace)
"""


def test_the_python_blocks_run(copy: Path) -> None:
    python = [(block.line, block.code) for block in readme_blocks() if block.language == "python"]
    result = subprocess.run([sys.executable, "-c", _SESSION], input=json.dumps(python), cwd=copy, env=environment(),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("line", "command"), [c for c in sh_commands() if runs(c[1])],
                         ids=[f"README.md:{line} {command}" for line, command in sh_commands() if runs(command)])
def test_the_shell_commands_run(copy: Path, line: int, command: str) -> None:
    expected, why = next((code for start, code in EXIT_CODES.items() if command.startswith(start)), (0, ""))
    result = subprocess.run(["bash", "-c", command], cwd=copy, env=environment(), capture_output=True, text=True,
                            timeout=300, check=False)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode == expected, f"README.md:{line}: `{command}` exited {result.returncode} ({why})\n" \
                                          f"{result.stderr}"
