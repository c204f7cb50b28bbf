"""The sharing probes as pure functions: what each takes from peers and hands the learner."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from helpers import events as E

from mrl_actors.events import (
    Completion,
    RewardSummary,
    RolloutGroupCompleted,
    SuccessVerified,
    pack_i32,
)
from mrl_actors.grpo.advantages import group_advantages
from mrl_actors.probes import ProbeContext, ProbesConfig, PromptInputs, Seen, build_batch
from mrl_actors.probes.common import Transferred
from mrl_actors.probes.config import PRPConfig, SGTConfig, XGRPOConfig


def _completion(reward: float, n: int = 3, base: int = 10) -> Completion:
    return E.completion(reward, range(base, base + n), logprob=-1.0)


def _group(
    policy: str, rewards: Sequence[float], version: int = 0, prompt: str = "p0"
) -> RolloutGroupCompleted:
    done = [_completion(r, base=10 + i) for i, r in enumerate(rewards)]
    return E.group(
        policy, version, prompt, done, prompt_text="1+1=", prompt_token_ids=pack_i32([1, 2, 3])
    )


def _summary(policy: str, rewards: Sequence[float], version: int = 0) -> RewardSummary:
    return E.reward_summary(policy, version, "p0", rewards)


def _success(policy: str, version: int = 0, index: int = 0) -> SuccessVerified:
    done = _completion(1.0, n=4, base=100 + index)
    return E.success(policy, version, "p0", done, index=index, prompt_text="1+1=")


def _identity_transfer(reject: bool = False):  # type: ignore[no-untyped-def]
    """A THL stand-in that keeps ids and log-probs (the identity pair) or rejects everything."""

    def transfer(policy: str, c: Completion) -> Transferred:
        ids = c.token_ids_array()
        return Transferred(
            ids=ids.copy(),
            logprobs=c.logprobs_array().astype(np.float64),
            loss_mask=np.ones(ids.size, dtype=bool),
            exact=True,
            rejected=reject,
            reason="over budget" if reject else "",
            one_to_one_share=0.75,
            nm_byte_share=0.5,
        )

    return transfer


def _ctx(
    version: int = 0, scale: str = "group", reject: bool = False, staleness: int = 1
) -> ProbeContext:
    return ProbeContext(
        version=version,
        scale_rewards=scale,  # type: ignore[arg-type]
        max_staleness=staleness,
        transfer=_identity_transfer(reject),
    )


CFG = ProbesConfig()


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_independent_matches_trl_group_advantages(scale: str) -> None:
    rewards = [[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]]
    prompts = [
        PromptInputs(own=Seen(i + 1, _group("a", r, prompt=f"p{i}"))) for i, r in enumerate(rewards)
    ]
    batch = build_batch("independent", CFG, prompts, _ctx(scale=scale))
    ours = np.array([s.advantage for s in batch.on_policy])
    flat = torch.tensor([r for group in rewards for r in group], dtype=torch.float64)
    ref = group_advantages(flat, 4, scale).numpy()
    # ours is float64 end to end; the learner collates advantages to float32 anyway
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)
    assert batch.off_policy == [] and batch.off_policy_loss is None


def test_xgrpo_without_peers_is_plain_grpo_and_peers_move_the_baseline() -> None:
    own = Seen(1, _group("a", [1.0, 1.0, 1.0, 1.0]))
    alone = build_batch("xgrpo", CFG, [PromptInputs(own=own)], _ctx())
    assert [s.advantage for s in alone.on_policy] == [0.0] * 4  # a solved group teaches nothing

    peers = [Seen(2, _summary("b", [0.0, 0.0, 0.0, 0.0]))]
    shared = build_batch("xgrpo", CFG, [PromptInputs(own=own, peer_rewards=peers)], _ctx())
    adv = [s.advantage for s in shared.on_policy]
    assert all(a > 0.9 for a in adv)  # the peer's failures make the receiver's successes count
    assert shared.off_policy == []  # gradients stay on the receiver's own samples
    assert shared.metrics.peer_events_used == 1


def test_xgrpo_success_rate_weighting_discounts_a_weaker_peer() -> None:
    own = Seen(1, _group("a", [1.0, 0.0, 1.0, 0.0]))
    peers = [Seen(2, _summary("b", [0.0, 0.0, 0.0, 0.0]))]
    inputs = [PromptInputs(own=own, peer_rewards=peers)]
    uniform = build_batch("xgrpo", CFG, inputs, _ctx())
    weighted_cfg = ProbesConfig(xgrpo=XGRPOConfig(weighting="success_rate"))
    weighted = build_batch("xgrpo", weighted_cfg, inputs, _ctx())
    # a weak peer weighs less, so the baseline stays closer to the receiver's own mean (0.5)
    assert weighted.on_policy[0].advantage < uniform.on_policy[0].advantage


def test_stale_peer_events_are_dropped_and_counted() -> None:
    own = Seen(1, _group("a", [0.0, 1.0], version=5))
    peers = [
        Seen(2, _summary("b", [0.0, 0.0], version=1)),
        Seen(3, _summary("c", [1.0, 1.0], version=4)),
    ]
    batch = build_batch("xgrpo", CFG, [PromptInputs(own=own, peer_rewards=peers)], _ctx(version=5))
    assert batch.metrics.dropped_stale == 1 and batch.metrics.peer_events_used == 1
    assert batch.metrics.peer_events_offered == 2


def test_prp_pools_peer_rollouts_with_a_sequence_level_truncated_weight() -> None:
    own = Seen(1, _group("a", [0.0, 0.0, 0.0, 0.0]))
    peer = Seen(2, _group("b", [1.0, 0.0, 1.0, 0.0]))
    batch = build_batch("prp", CFG, [PromptInputs(own=own, peer_rollouts=[peer])], _ctx())
    assert len(batch.on_policy) == 4 and len(batch.off_policy) == 4
    assert batch.off_policy_loss is not None
    assert (
        batch.off_policy_loss.kind == "truncated_is" and batch.off_policy_loss.level == "sequence"
    )
    assert batch.off_policy_loss.cap == CFG.prp.cap
    pooled = np.array([0, 0, 0, 0, 1, 0, 1, 0], dtype=np.float64)
    expected = (pooled - pooled.mean()) / (pooled.std(ddof=1) + 1e-4)
    got = [s.advantage for s in batch.on_policy + batch.off_policy]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert batch.metrics.thl_transfers == 4 and batch.metrics.thl_exact == 4
    assert batch.metrics.as_dict()["thl_one_to_one_share"] == 0.75
    assert batch.metrics.as_dict()["thl_nm_byte_share"] == 0.5


def test_prp_carried_advantages_and_shaped_weighting() -> None:
    cfg = ProbesConfig(prp=PRPConfig(advantage="carried", weighting="shaped", max_per_prompt=2))
    own = Seen(1, _group("a", [0.0, 0.0]))
    peer = Seen(2, _group("b", [1.0, 0.0, 1.0, 0.0]))
    batch = build_batch("prp", cfg, [PromptInputs(own=own, peer_rollouts=[peer])], _ctx())
    assert len(batch.off_policy) == 2  # max_per_prompt
    assert batch.off_policy_loss is not None and batch.off_policy_loss.kind == "luffy"
    peer_r = np.array([1.0, 0.0, 1.0, 0.0])
    carried = (peer_r - peer_r.mean()) / (peer_r.std(ddof=1) + 1e-4)
    np.testing.assert_allclose([s.advantage for s in batch.off_policy], carried[:2], rtol=1e-12)


def test_prp_transfers_over_the_thl_budget_are_dropped() -> None:
    own = Seen(1, _group("a", [0.0, 1.0]))
    peer = Seen(2, _group("b", [1.0, 1.0]))
    batch = build_batch(
        "prp", CFG, [PromptInputs(own=own, peer_rollouts=[peer])], _ctx(reject=True)
    )
    assert batch.off_policy == [] and batch.off_policy_loss is None
    assert batch.metrics.dropped_budget == 2 and batch.metrics.peer_events_used == 0


def test_sgt_luffy_pooled_rescues_only_failed_prompts_with_at_most_k() -> None:
    cfg = ProbesConfig(sgt=SGTConfig(k=2, coef=0.5, loss="luffy", advantage="pooled"))
    failed = Seen(1, _group("a", [0.0, 0.0, 0.0, 0.0], prompt="p0"))
    solved = Seen(2, _group("a", [1.0, 0.0, 0.0, 0.0], prompt="p1"))
    successes = [Seen(10 + i, _success("b", index=i)) for i in range(3)]
    batch = build_batch(
        "sgt",
        cfg,
        [
            PromptInputs(own=failed, peer_successes=successes),
            PromptInputs(own=solved, peer_successes=successes),
        ],
        _ctx(),
    )
    assert len(batch.off_policy) == 2  # k per prompt, and only for the failed one
    assert batch.metrics.prompts_rescued == 1
    assert batch.metrics.as_dict()["prompts_rescued_share"] == 0.5
    loss = batch.off_policy_loss
    assert loss is not None and loss.kind == "luffy" and loss.coef == 0.5
    assert all(s.advantage > 0 for s in batch.off_policy)
    assert all(s.advantage < 0 for s in batch.on_policy[:4])  # mixed group pushes failures down
    np.testing.assert_array_equal(batch.off_policy[0].completion_ids, np.arange(100, 104))


def test_sgt_unit_advantage_leaves_the_own_group_alone() -> None:
    cfg = ProbesConfig(sgt=SGTConfig(loss="luffy", advantage="unit", k=1))
    failed = Seen(1, _group("a", [0.0, 0.0]))
    batch = build_batch(
        "sgt", cfg, [PromptInputs(own=failed, peer_successes=[Seen(5, _success("b"))])], _ctx()
    )
    assert [s.advantage for s in batch.on_policy] == [0.0, 0.0]
    assert [s.advantage for s in batch.off_policy] == [1.0]


def test_sgt_gates_on_constructed_groups() -> None:
    from mrl_actors.probes.sgt import passes_gate

    all_failed, any_failed = SGTConfig(), SGTConfig(gate="any_failed")
    rate = SGTConfig(gate="rate_below", max_success_rate=0.5)
    cases = {  # own successes -> (all_failed, any_failed, rate_below 0.5)
        (False, False, False, False): (True, True, True),
        (True, False, False, False): (False, True, True),
        (True, True, False, False): (False, True, False),
        (True, True, True, True): (False, False, False),
        (): (False, False, False),
    }
    for successes, expected in cases.items():
        got = tuple(passes_gate(list(successes), c) for c in (all_failed, any_failed, rate))
        assert got == expected, successes


def _failed_and_solved(solved: Sequence[float]) -> list[PromptInputs]:
    """Two prompts offered the same three peer successes: p0 whose own group all failed, and
    p1 whose own group has the rewards `solved`."""
    successes = [Seen(10 + i, _success("b", index=i)) for i in range(3)]
    return [
        PromptInputs(own=Seen(1, _group("a", [0.0] * 4, prompt="p0")), peer_successes=successes),
        PromptInputs(own=Seen(2, _group("a", solved, prompt="p1")), peer_successes=successes),
    ]


def test_sgt_default_is_a_fixed_weight_nll_on_failed_prompts_only() -> None:
    """GRAFT's SGT: rescue only where the whole group failed; own groups keep plain GRPO."""
    prompts = _failed_and_solved([1.0, 0.0, 0.0, 0.0])
    batch = build_batch("sgt", CFG, prompts, _ctx())
    loss = batch.off_policy_loss
    assert loss is not None and loss.kind == "nll" and loss.coef == CFG.sgt.coef
    assert len(batch.off_policy) == CFG.sgt.k and batch.metrics.prompts_rescued == 1
    plain = build_batch("independent", CFG, prompts, _ctx())
    assert [s.advantage for s in batch.on_policy] == [s.advantage for s in plain.on_policy]
    # the any_failed gate also rescues the partly solved prompt
    cfg = ProbesConfig(sgt=SGTConfig(gate="any_failed"))
    assert build_batch("sgt", cfg, prompts, _ctx()).metrics.prompts_rescued == 2


def test_sgt_own_k_adds_the_receivers_own_successes_to_the_imitation_term() -> None:
    """own_k: up to that many own successes of each prompt not rescued join the NLL term."""
    prompts = _failed_and_solved([1.0, 0.0, 1.0, 1.0])
    plain = build_batch("sgt", CFG, prompts, _ctx())
    cfg = ProbesConfig(sgt=SGTConfig(own_k=2))
    batch = build_batch("sgt", cfg, prompts, _ctx())
    wins = [c for c in prompts[1].own.event.completions if c.success][:2]
    extra = batch.off_policy[len(plain.off_policy) :]
    assert [s.completion_ids.tolist() for s in extra] == [
        c.token_ids_array().tolist() for c in wins
    ]
    assert all(s.advantage == 1.0 for s in extra)
    assert [s.completion_ids.tolist() for s in batch.off_policy[: len(plain.off_policy)]] == [
        s.completion_ids.tolist() for s in plain.off_policy
    ]  # the rescue samples as without own_k
    assert [s.advantage for s in batch.on_policy] == [s.advantage for s in plain.on_policy]
    assert batch.metrics.prompts_rescued == plain.metrics.prompts_rescued == 1
    # a rescued prompt has no own success to add
    alone = build_batch("sgt", cfg, prompts[:1], _ctx())
    assert len(alone.off_policy) == CFG.sgt.k


def test_probes_are_deterministic_functions_of_their_inputs() -> None:
    own = Seen(1, _group("a", [0.0, 1.0, 0.0, 0.0]))
    inputs = [PromptInputs(own=own, peer_rollouts=[Seen(2, _group("b", [1.0, 0.0, 1.0, 1.0]))])]
    a = build_batch("prp", CFG, inputs, _ctx())
    b = build_batch("prp", CFG, inputs, _ctx())
    assert [s.advantage for s in a.on_policy + a.off_policy] == [
        s.advantage for s in b.on_policy + b.off_policy
    ]


def test_a_peer_success_the_receivers_verifier_rejects_is_not_learned_from() -> None:
    """Trust, but verify: two peer "successes" on one prompt, one whose text the receiver's own
    verifier (the real arithmetic task) rejects; only the true one is learned from, and the
    other is counted in `dropped_unverified`."""
    import msgspec

    from mrl_actors.actors.runtime import PolicyRuntime
    from mrl_actors.tasks import TaskConfig, make_task

    task = make_task(TaskConfig())
    item = task.train_items()[0]
    rt = PolicyRuntime(None, None, task, None, None, None, None, None, {})  # type: ignore[arg-type]
    own = Seen(1, msgspec.structs.replace(_group("a", [0.0] * 4), prompt_id=item.prompt_id))

    def success(index: int, text: str) -> Seen[SuccessVerified]:
        ev = _success("b", index=index)
        c = msgspec.structs.replace(ev.completion, text=text)
        return Seen(10 + index, msgspec.structs.replace(ev, prompt_id=item.prompt_id, completion=c))

    wrong = str(int(item.answer) + 1)
    peers = [success(0, f"the answer is {wrong}"), success(1, f"the answer is {item.answer}")]
    ctx = ProbeContext(
        version=0,
        scale_rewards="group",
        max_staleness=1,
        transfer=_identity_transfer(),
        verify=rt.verify_peer,
    )
    cfg = ProbesConfig(sgt=SGTConfig(k=2, loss="luffy", advantage="pooled"))
    batch = build_batch("sgt", cfg, [PromptInputs(own=own, peer_successes=peers)], ctx)
    assert len(batch.off_policy) == 1
    np.testing.assert_array_equal(batch.off_policy[0].completion_ids, np.arange(101, 105))
    assert batch.metrics.dropped_unverified == 1
    assert batch.metrics.as_dict()["dropped_unverified"] == 1.0
    # without the check (a receiver that trusts), both would have been learned from
    trusting = ProbeContext(
        version=0, scale_rewards="group", max_staleness=1, transfer=_identity_transfer()
    )
    assert (
        len(
            build_batch(
                "sgt", cfg, [PromptInputs(own=own, peer_successes=peers)], trusting
            ).off_policy
        )
        == 2
    )
