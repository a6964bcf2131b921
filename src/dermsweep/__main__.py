"""`python -m dermsweep ...`: the same as the `dermsweep` command."""

import sys

from .cli import main

sys.exit(main())
