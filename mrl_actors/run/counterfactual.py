"""Counterfactual replay: a run's logged experience fed through another probe's update rule.

What would this run's learners have done under probe X? Each policy starts twice from its
`step-0` checkpoint. One copy replays the log exactly (`replay.replay`, every step's weights
sha256 checked), which recomputes the logged run's weights at each step; the other takes, at each
step, the same own rollout groups and builds its batch with probe X instead. Per step we record
the counterfactual learner's loss and gradient norm next to the logged ones, and the L2 distance
between the two weight vectors; at the end both are evaluated on the task's held-out test items.

What "the same experience" means, exactly:

- own rollouts: the groups the logged step consumed, sampled by the *logged* policy (so the
  counterfactual learner sees them slightly off-policy; GRPO's truncated importance ratio
  `grpo.is_cap` corrects for it as it does for any lag);
- peer events: whatever the log holds of the kind probe X reads (rollouts, rewards or successes),
  from the run's other policies, for the step's prompts at the same policy version. Every policy
  logs all three kinds whatever the run's probe, so a run under `independent` still holds the
  peers' successes an SGT counterfactual would have rescued with. (The live actor may also take
  events a version or two apart, within `max_staleness`; the counterfactual does not.)
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from mrl_actors.actors.replay import replay
from mrl_actors.actors.runtime import PolicyRuntime, build_runtime, checkpoint_dir
from mrl_actors.actors.state import PeerEvent, assemble
from mrl_actors.events import (
    LearnerStepCompleted,
    RewardSummary,
    RolloutGroupCompleted,
    SuccessVerified,
)
from mrl_actors.probes import PEER_KIND, PromptInputs, Seen
from mrl_actors.probes.config import ProbeName
from mrl_actors.see.port import LogPort
from mrl_actors.spec import PolicySpec, RunSpec
from mrl_actors.tasks import make_task

# (prompt id, policy version) -> peer events in sequence order
PeerIndex = dict[tuple[str, int], list[Seen[PeerEvent]]]


async def peer_index(log: LogPort, kind: str) -> PeerIndex:
    """Every policy's events of `kind` by (prompt, version); forged ones (policy != source) out."""
    out: PeerIndex = defaultdict(list)
    async for rec in log.read(start_seq=1, kinds=[kind]):
        ev = rec.event
        if (
            isinstance(ev, RolloutGroupCompleted | RewardSummary | SuccessVerified)
            and ev.policy == ev.source
        ):
            out[ev.prompt_id, ev.policy_version].append(Seen(rec.seq, ev))
    return out


def counterfactual_inputs(
    policy: str, logged: Sequence[PromptInputs], index: PeerIndex, version: int
) -> list[PromptInputs]:
    """The logged step's own groups with the peers' events for its prompts at `version`."""
    own = [p.own for p in logged]
    prompts = dict.fromkeys(g.event.prompt_id for g in own)
    peers = [
        s for pid in prompts for s in index.get((pid, version), []) if s.event.policy != policy
    ]
    return assemble(own, sorted(peers, key=lambda s: s.seq))


def weight_distance(a: Any, b: Any) -> float:
    """L2 norm of the difference of two models' parameters (same architecture)."""
    import torch

    total = 0.0
    with torch.no_grad():
        for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
            if na != nb:
                raise ValueError(f"parameter order differs: {na} vs {nb}")
            total += float(((pa.double() - pb.double()) ** 2).sum())
    return math.sqrt(total)


def start_runtime(spec: RunSpec, p: PolicySpec, run_dir: Path) -> PolicyRuntime:
    """The policy as the run started it: its `step-0` checkpoint (blocking: run in a thread)."""
    return build_runtime(
        spec, p, make_task(spec.task), weights_dir=checkpoint_dir(run_dir, p.name, 0)
    )


async def counterfactual(
    log: LogPort, spec: RunSpec, run_dir: Path, policy: PolicySpec, probe: ProbeName
) -> dict[str, Any]:
    """One policy's logged run beside its counterfactual under `probe` (see the module doc)."""
    logged = await anyio.to_thread.run_sync(start_runtime, spec, policy, run_dir)
    cf = await anyio.to_thread.run_sync(start_runtime, spec, policy, run_dir)
    kind = PEER_KIND[probe]
    index = await peer_index(log, kind) if kind is not None else {}
    rows: list[dict[str, float]] = []
    logged_probe = ""

    async def step(
        ev: LearnerStepCompleted, inputs: list[PromptInputs], m: dict[str, float]
    ) -> None:
        nonlocal logged_probe
        logged_probe = ev.probe
        version = ev.step - 1
        batch_in = counterfactual_inputs(policy.name, inputs, index, version)
        _, cm = await anyio.to_thread.run_sync(cf.learn, probe, batch_in, version)
        rows.append(
            {
                "step": float(ev.step),
                "loss": cm["loss"],
                "grad_norm": cm["grad_norm"],
                "logged_loss": m["loss"],
                "logged_grad_norm": m["grad_norm"],
                "distance": weight_distance(cf.model, logged.model),
                "off_policy_samples": cm.get("off_policy_samples", 0.0),
                "prompts_rescued_share": cm.get("prompts_rescued_share", 0.0),
            }
        )

    steps = await replay(log, logged, verify=True, on_step=step)
    items = logged.task.test_items()[: spec.run.eval_size]
    final_logged = await anyio.to_thread.run_sync(logged.evaluate, items)
    final_cf = await anyio.to_thread.run_sync(cf.evaluate, items)
    return {
        "policy": policy.name,
        "logged_probe": logged_probe or spec.run.probe,
        "probe": probe,
        "steps_replayed": steps,
        "test_items": len(items),
        "steps": rows,
        "final": {"logged": final_logged, "counterfactual": final_cf},
    }
