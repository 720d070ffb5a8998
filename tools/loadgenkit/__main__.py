"""`python -m loadgenkit` (with tools/ on the path): the same as tools/loadgen."""

import sys

from loadgenkit.cli import main

sys.exit(main())
