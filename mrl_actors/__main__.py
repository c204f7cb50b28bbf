"""`python -m mrl_actors` is `mrl`."""

import sys

from mrl_actors.cli import main

sys.exit(main())
