"""`python -m mrl_actors.cli` is `mrl` (used by tests that run it as a subprocess)."""

import sys

from mrl_actors.cli import main

sys.exit(main())
