"""Hypothesis profiles for the property tests (tests/unit/**/test_*_props.py).

"ci" (the default) is derandomized and keeps no example database: every run tries the same
inputs, so a red build fails again on the next run and on a laptop, and no .hypothesis/
directory appears in the checkout. It cannot find anything new, though; that is what
"explore" is for: `pytest --hypothesis-profile=explore tests/unit -k props` draws new inputs
each run, ten times as many, and remembers failures in .hypothesis/. A failure found that
way becomes an ordinary test with the minimal example written out.
"""

from __future__ import annotations

from hypothesis import settings

# deadline=None: the machine is shared, and a slow example under load is not a bug.
settings.register_profile("ci", derandomize=True, database=None, deadline=None,
                          print_blob=True)
settings.register_profile("explore", max_examples=1000, deadline=None, print_blob=True)
settings.load_profile("ci")
