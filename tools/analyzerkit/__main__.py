"""`python -m analyzerkit` (with tools/ on the path): the same as tools/analyzer."""

import sys

from analyzerkit.cli import main

sys.exit(main())
