"""What every crit process needs, without the compiler: the exit codes commands fail with, and
importing a generated evaluator from its file. Screening workers import this and not the
compiler; `crit.pipeline` builds on it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import click

EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_RECORD, EXIT_INTERNAL = 0, 1, 2, 3, 4


class Failure(click.exceptions.Exit):
    """A failure already explained to the user; carries the exit code. A click `Exit`, so that a
    command run on its own (click's standalone mode, a test's CliRunner) exits with that code too."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def import_evaluator(path: Path | str, name: str) -> ModuleType:
    """Import a generated module from its file (never exec'd into crit's namespace). It is
    registered in `sys.modules` before it runs, as its dataclasses need; a name already
    imported is returned as it is (worker processes import each evaluator once)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
