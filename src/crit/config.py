"""A project's defaults for crit, from the `[tool.crit]` table of its `pyproject.toml`:

    [tool.crit]
    protocols = ["protocols"]   # where `crit build` and `crit check` look when given no file
    output = "generated"        # where `crit build` writes
    strict = true               # `crit check` treats lint warnings as errors
    sql = "duckdb"              # `crit build` also writes each protocol's SQL query, in this dialect

Paths are relative to the directory holding `pyproject.toml`. Options on the command line win.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_PROTOCOLS = (Path("protocols"),)
DEFAULT_OUTPUT = Path("generated")
SQL_DIALECTS = ("duckdb", "spark", "postgres", "bigquery", "trino")  # crit.backends.sql.DIALECTS


class ConfigError(Exception):
    """`[tool.crit]` cannot be used as written; the message says where and why, in one line."""


@dataclass(frozen=True, slots=True)
class Config:
    protocols: tuple[Path, ...] = DEFAULT_PROTOCOLS
    output: Path = DEFAULT_OUTPUT
    strict: bool = False
    source: Path | None = None  # the pyproject.toml it was read from, if any
    sql: str | None = None  # the dialect `crit build` writes a SQL query in; None: no SQL


def find_pyproject(start: Path) -> Path | None:
    """The nearest `pyproject.toml` at or above `start`."""
    start = start.resolve()
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def load_config(start: Path | None = None) -> Config:
    """The defaults of the project around `start` (the working directory if not given); the
    built-in ones where there is no `pyproject.toml` or it has no `[tool.crit]`."""
    pyproject = find_pyproject(start if start is not None else Path.cwd())
    if pyproject is None:
        return Config()
    shown = _relative(pyproject)
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{shown}: cannot be read: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{shown}: not valid TOML: {err}") from None
    tool = data.get("tool", {})
    table = tool.get("crit") if isinstance(tool, dict) else None
    if table is None:
        return Config(source=pyproject)
    if not isinstance(table, dict):
        raise ConfigError(f"{shown}: [tool.crit] must be a table")
    return _parse(table, pyproject.parent, shown, pyproject)


_KEYS = {"protocols", "output", "strict", "sql"}


def _parse(table: dict[str, Any], root: Path, shown: str, pyproject: Path) -> Config:
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"{shown}: [tool.crit] has no setting {unknown[0]!r} "
                          f"(the settings are {', '.join(sorted(_KEYS))})")
    protocols = table.get("protocols", [p.as_posix() for p in DEFAULT_PROTOCOLS])
    if isinstance(protocols, str):
        protocols = [protocols]
    if not isinstance(protocols, list) or not protocols or not all(isinstance(p, str) and p for p in protocols):
        raise ConfigError(f"{shown}: [tool.crit] protocols must be a directory name or a list of them")
    output = table.get("output", DEFAULT_OUTPUT.as_posix())
    if not isinstance(output, str) or not output:
        raise ConfigError(f"{shown}: [tool.crit] output must be a directory name")
    strict = table.get("strict", False)
    if not isinstance(strict, bool):
        raise ConfigError(f"{shown}: [tool.crit] strict must be true or false")
    sql = table.get("sql")
    if sql is not None and sql not in SQL_DIALECTS:
        raise ConfigError(f"{shown}: [tool.crit] sql must be one of {', '.join(SQL_DIALECTS)}")
    return Config(tuple(_under(root, p) for p in protocols), _under(root, output), strict, pyproject, sql)


def _under(root: Path, name: str) -> Path:
    return _as_given(root / name)


def _as_given(path: Path) -> Path:
    """`path` relative to the working directory when it lies under it, as a user would type it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def _relative(path: Path) -> str:
    return _as_given(path).as_posix()
