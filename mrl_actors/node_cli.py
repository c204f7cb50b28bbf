"""`mrl-node`: the daemon that hosts actors on one host (see mrl_actors/node.py)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    raise SystemExit("mrl-node: not built yet")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
