"""The one Jinja environment crit renders its templates with (`src/crit/templates/`).

Every template is layout only: the strings it receives arrive worded and escaped by the module
that renders it. The settings are the same for all of them — no autoescape (the outputs are
Python, Markdown and HTML, each escaped by `crit.text` for its own rules), undefined names are
errors, blocks do not leave blank lines. An HTML page renders through an overlay of the same
environment whose `finalize` escapes every value (`html()`), so no template can forget it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from crit import text

if TYPE_CHECKING:
    import jinja2


@functools.cache
def environment() -> jinja2.Environment:
    """Built once per process; jinja2 is imported here, so screening workers that never render
    a page never load it."""
    import jinja2

    env = jinja2.Environment(
        bytecode_cache=_bytecode_cache(),
        loader=jinja2.PackageLoader("crit", "templates"),
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["md"] = text.markdown
    env.filters["code"] = text.markdown_code
    env.filters["n"] = lambda n: f"{n:,}"
    return env


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """Compiling the templates is a tenth of a cold `crit build`; Jinja's own cache keeps the
    compiled code in a private directory of the temporary folder (created 0700 and checked to be
    the user's), keyed by a checksum of each template's source, so a changed template is never
    served stale. Where that folder cannot be used, templates are compiled on every run."""
    import jinja2

    try:
        return jinja2.FileSystemBytecodeCache()
    except (OSError, RuntimeError):
        return None


@functools.cache
def html() -> jinja2.Environment:
    """The same environment, with every value HTML-escaped as it is written into the page."""
    return environment().overlay(finalize=text.html)
