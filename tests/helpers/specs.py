"""Spec text for tests: the `[[policies]]` tables of tiny real-family policies, built once.

A test writes its own `[run]` (and other) tables, where what it checks lives, and appends the
policies from here, so each test's spec says only how its policies differ (size, warm start,
completion length, learning rate).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomli_w

# (policy name, folder under the real tokenizers): two families whose tokenizers differ. The
# SentencePiece side is Mistral-7B's tokenizer (Llama-2-style, bundled in tests/data/models with
# its Apache-2.0 licence), so that a bare clone runs every pair test; the policy keeps the name.
PAIR: tuple[tuple[str, str], ...] = (("gpt2", "gpt2"), ("llama", "mistral-7b"))
# The built-in pair (tokenizers the project trains itself): `policies_toml("", pair=BUILTIN)`.
BUILTIN: tuple[tuple[str, str], ...] = (("gpt2", "builtin:gpt2-bpe"), ("llama", "builtin:llama-sp"))


def policies_toml(
    models_dir: Path | str,
    *,
    tiny: dict[str, Any],
    max_new_tokens: int,
    grpo: dict[str, Any] | None = None,
    pair: Sequence[tuple[str, str]] = PAIR,
    **fields: Any,
) -> str:
    """`[[policies]]` for each (name, model folder) of `pair`: a tiny random-weight policy of
    that family (`tiny`), sampling `max_new_tokens`, with `grpo` options (the defaults without)."""
    policies = [
        {
            "name": name,
            "model": str(Path(models_dir) / model),
            **fields,
            "tiny": tiny,
            "engine": {"sampling": {"max_new_tokens": max_new_tokens}},
            **({"grpo": grpo} if grpo is not None else {}),
        }
        for name, model in pair
    ]
    return "\n" + tomli_w.dumps({"policies": policies})


STEPS = 3  # learner steps of `pair_spec`


def pair_spec(
    models_dir: Path | str, name: str, probe: str, steps: int = STEPS, seed: int = 0
) -> str:
    """The pair of `test_mrl_run`: gpt2 and llama, tiny, warm-started, under `probe`, in
    lockstep mode (its tests compare runs, resumes and replays bitwise)."""
    policies = policies_toml(
        Path(models_dir),
        tiny={"hidden_size": 64, "layers": 2, "heads": 4, "warm_start_steps": 150},
        max_new_tokens=5,
        grpo={"lr": 1e-3},
    )
    return f"""
[run]
name = "{name}"
seed = {seed}
probe = "{probe}"
mode = "lockstep"
steps = {steps}
prompts_per_step = 4
group_size = 4
eval_every = {steps}
eval_size = 16
checkpoint_every = 2

[probes.sharing]
wait_for_peers_s = 20.0
{policies}"""


# tiny policies of the integration tests, by size: (hidden, layers, heads, warm start steps)
TINY16 = {"hidden_size": 16, "layers": 1, "heads": 2, "warm_start_steps": 5}
TINY32 = {"hidden_size": 32, "layers": 1, "heads": 2, "warm_start_steps": 20}
TINY64 = {"hidden_size": 64, "layers": 2, "heads": 4, "warm_start_steps": 150}


def slots(*placed: tuple[str, str, str, str]) -> dict[str, Any]:
    """`[placement]` with one `[[placement.slots]]` per (node, slot, policy, role)."""
    keys = ("node", "slot", "policy", "role")
    return {"slots": [dict(zip(keys, p, strict=True)) for p in placed]}


def spec_toml(
    models_dir: Path | str,
    *,
    run: dict[str, Any],
    tiny: dict[str, Any],
    max_new_tokens: int = 4,
    grpo: dict[str, Any] | None = None,
    pair: Sequence[tuple[str, str]] = PAIR,
    learner_slots: int | None = None,
    **tables: Any,
) -> str:
    """A whole spec: `[run]` (these defaults, then `run`), the other `tables` (`probes`,
    `server`, `placement`, `mwra`, `task`, ...), then the policies (`policies_toml`).

    The mode is lockstep unless `run` says `"mode": "async"`: the tests built on it check
    bitwise replays and exact counts that the lockstep schedule makes reproducible (a spec
    that leaves `mode` out runs async, `mrl_actors.spec.RunSection`)."""
    steps = run.get("steps", 20)
    head = {
        "run": {
            "mode": "lockstep",
            "seed": 0,
            "prompts_per_step": 2,
            "group_size": 2,
            "eval_every": steps,
            "eval_size": 4,
            "checkpoint_every": 2,
            **run,
        },
        **tables,
    }
    slots = {} if learner_slots is None else {"learner_slots": learner_slots}
    policies = policies_toml(
        models_dir, tiny=tiny, max_new_tokens=max_new_tokens, grpo=grpo, pair=pair, **slots
    )
    return tomli_w.dumps(head) + policies
