"""`python -m crit`: the `crit` command, for when the script is not on PATH."""

import sys

from crit.cli import main

sys.exit(main())
