"""Write the small GSM8K-format train/test pair the repository ships (deterministic).

    python tools/gen_gsm8k.py runtime/data/gsm8k-synth

Same arguments, same bytes (`mrl_actors.tasks.gsm8k_synth`); a unit test checks the shipped files
against this generator. Prints the row counts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mrl_actors.tasks.gsm8k_synth import write_pair


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", default=Path("runtime/data/gsm8k-synth"))
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_pair(args.out, args.train, args.test, args.seed)
    print(f"{'file':<40} {'rows':>6}")
    for name in ("train.jsonl", "test.jsonl"):
        path = args.out / name
        print(f"{path!s:<40} {sum(1 for _ in path.open()):>6}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
