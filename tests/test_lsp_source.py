"""The driver's hook for the language server: `load(path, text=…)` compiles the editor's text
instead of the file on disk, its imports still read from disk relative to `path`, held to the
same size bound as a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from crit.diagnostics import CritError
from crit.driver import MAX_SOURCE_BYTES, Loaded, display_path, load

SCHEMA = 'patient\n  age: integer "Age"\n'
PROTOCOL = 'protocol T "T"\n\nimport "schema.crit"\n\ninclusion\n  I1 "Adult"\n    age >= 18\n'


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "schema.crit").write_text(SCHEMA, encoding="utf-8")
    (tmp_path / "p.crit").write_text(PROTOCOL.replace("age >= 18", "agee >= 18"), encoding="utf-8")
    return tmp_path


def test_the_given_text_is_compiled_not_the_file(project: Path) -> None:
    with pytest.raises(CritError):  # the file on disk has a typo
        load(project / "p.crit")
    loaded = Loaded()
    protocol = load(project / "p.crit", loaded, text="\ufeff" + PROTOCOL)  # the editor's buffer does not
    assert protocol.id == "T" and [f.name for f in protocol.fields] == ["age"]
    shown = display_path(project / "p.crit")
    assert loaded.sources[shown] == PROTOCOL  # quoted in diagnostics, without the byte-order mark
    assert loaded.sources[display_path(project / "schema.crit")] == SCHEMA  # the import, from disk


def test_a_file_that_does_not_exist_yet_can_be_compiled_from_its_text(project: Path) -> None:
    protocol = load(project / "new.crit", text=PROTOCOL)
    assert protocol.source == display_path(project / "new.crit")


def test_the_text_is_bounded_like_a_file(project: Path) -> None:
    big = PROTOCOL + "#" * MAX_SOURCE_BYTES + "\n"
    with pytest.raises(CritError) as caught:
        load(project / "p.crit", text=big)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "E101"
    assert diagnostic.message == f"{display_path(project / 'p.crit')} is larger than 256 KiB"
    assert diagnostic.hint == "a protocol and its schemas are far smaller; check that this is the right file"
