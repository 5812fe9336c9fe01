"""Names: suggestions for misspelt ones, letters that imitate others, names a protocol cannot
use, and the one spelling of a crit name in generated Python."""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable

# Letters from other scripts that a reader cannot tell from an ASCII letter. NFKC handles the
# rest (fullwidth and mathematical letters); these are the ones it leaves alone.
_LOOKALIKES = {
    # Cyrillic
    "а": "a", "в": "B", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i",
    "ј": "j", "ѕ": "s", "һ": "h", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "к": "k", "м": "M",
    "н": "H", "т": "T",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C",
    "Т": "T", "Х": "X", "У": "Y", "І": "I", "Ј": "J", "Ѕ": "S", "Ԛ": "Q", "Ԝ": "W",
    # Greek
    "α": "a", "ο": "o", "ν": "v", "ρ": "p", "ι": "i", "κ": "k", "υ": "u", "χ": "x", "ϲ": "c",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Latin letters without a dot or with a look of another
    "ı": "i", "ȷ": "j", "ɑ": "a", "ɡ": "g", "ℓ": "l",
}
# ASCII characters that many fonts draw alike.
_ASCII_ALIKE = {"l": "1", "I": "1", "1": "1", "O": "0", "0": "0"}


def lookalike(char: str) -> str | None:
    """The ASCII letter or digit `char` imitates, or None (also for ASCII itself)."""
    if char.isascii():
        return None
    if char in _LOOKALIKES:
        return _LOOKALIKES[char]
    folded = unicodedata.normalize("NFKC", char)
    if len(folded) == 1 and folded.isascii() and folded.isalnum():
        return folded
    return None


def _skeleton(name: str) -> str:
    plain = "".join(lookalike(c) or c for c in name)
    return "".join(_ASCII_ALIKE.get(c, c) for c in plain)


def _code_point(char: str) -> str:
    return f"U+{ord(char):04X} {unicodedata.name(char, 'UNNAMED CHARACTER')}"


def _difference(name: str, candidate: str) -> str:
    """How two names that look alike differ, character by character."""
    parts = []
    for mine, theirs in zip(name, candidate, strict=True):
        if mine != theirs:
            parts.append(f"'{mine}' ({_code_point(mine)}) where '{candidate}' has "
                         f"'{theirs}' ({_code_point(theirs)})")
    return f"'{name}' has " + "; ".join(parts)


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidate, or None when nothing is close. When the two look
    alike (a capital I for an l, a zero for an O), the hint names the characters that differ."""
    pool = sorted(set(candidates))
    alike = [c for c in pool if c != name and len(c) == len(name) and _skeleton(c) == _skeleton(name)]
    if alike:
        return f"did you mean '{alike[0]}'? {_difference(name, alike[0])}"
    matches = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    if not matches:
        lowered = {c.lower(): c for c in pool}
        if name.lower() in lowered:
            return f"did you mean '{lowered[name.lower()]}'?"
        return None
    return f"did you mean '{matches[0]}'?"


# ---- names a protocol cannot declare ----------------------------------------------------------

CRITERION_ID = re.compile(r"[IE][0-9]+")

# The words of the language that begin a value or a condition: a name spelt like one is always
# read as the word, never as the name. The other words (`and`, `x`, `list` …) are read as names
# where a name is expected, so they stay usable; `note` and `when` too, except as the first word
# of a line. tests/test_front_end_limits.py checks each word of the grammar against this.
RESERVED_WORDS = frozenset({"all", "any", "at", "count", "false", "no", "not", "true"})


def reserved_reason(name: str) -> str | None:
    """Why a declared name could never be used in an expression, or None if it can be."""
    if name in RESERVED_WORDS:
        return f"'{name}' is a word of the crit language"
    if CRITERION_ID.fullmatch(name):
        return f"'{name}' is written like a criterion id"
    return None
