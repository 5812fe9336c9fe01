"""`python -m crit.syntax`: rebuild the saved parser tables after editing grammar/crit.lark."""

import sys

from crit.syntax.grammar import save_tables

print(f"wrote {save_tables()}", file=sys.stderr)
