"""Slots, the spec's `[placement]`, epoch fencing of assignments, and a policy's device/dtype."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mrl_actors import events as ev
from mrl_actors.actors.runtime import native_cpu_bf16, torch_dtype, warn_slow_dtype
from mrl_actors.errors import ConfigError
from mrl_actors.run.placement import (
    DeviceSlot,
    Hosted,
    NodeAssignment,
    apply,
    ignored,
    initial_assignment,
    parse_slots,
)
from mrl_actors.spec import parse_spec


def spec_text(
    placement: str = "", dtype: str = "", model: str = "gpt2", mode: str = "lockstep"
) -> str:
    """Two policies; lockstep unless asked (its placements need no rollout slots)."""
    policies = ""
    for name in ("a", "b"):
        policies += f"""
[[policies]]
name = "{name}"
model = "{model}"
{dtype}
"""
    return f'[run]\nname = "r1"\nmode = "{mode}"\n{placement}\n{policies}'


PLACED = """
[[placement.slots]]
node = "n1"
slot = "cpu:0"
policy = "a"
[[placement.slots]]
node = "n2"
slot = "cuda:1"
policy = "b"
role = "learner"
[[placement.slots]]
node = "n2"
slot = "cuda:0"
policy = "a"
role = "rollout"
"""


def test_slots_parse_gpus_cpu_counts_and_refuse_the_rest() -> None:
    assert parse_slots("cuda:0,cuda:1") == [DeviceSlot("cuda", 0), DeviceSlot("cuda", 1)]
    assert [s.device for s in parse_slots("cuda:3")] == ["cuda:3"]
    assert parse_slots("cpu:2") == [DeviceSlot("cpu", 0), DeviceSlot("cpu", 1)]
    assert [s.device for s in parse_slots("cpu:2")] == ["cpu", "cpu"]
    expected = parse_slots("") or []
    assert expected and all(s.kind in ("cpu", "cuda") for s in expected)
    if not torch.cuda.is_available():
        assert expected == [DeviceSlot("cpu", 0)]
    for bad in ("gpu:0", "cpu:0", "cuda:0,cpu:1", "cuda:0,cuda:0", "cuda:x", "cpu:2,cpu:3"):
        with pytest.raises(ConfigError, match="--slots"):
            parse_slots(bad)


def test_placement_becomes_epoch_one_with_slot_numbers() -> None:
    spec = parse_spec(spec_text(PLACED))
    first = initial_assignment(spec)
    assert first is not None and first.epoch == 1 and first.source == "placement"
    got = {(a.node, a.slot, a.policy, a.role) for a in first.assignments}
    assert got == {("n1", 0, "a", "learner"), ("n2", 1, "b", "learner"), ("n2", 0, "a", "rollout")}
    assert initial_assignment(parse_spec(spec_text())) is None  # no placement: nothing written


@pytest.mark.parametrize(
    ("placement", "field"),
    [
        (PLACED.replace('policy = "b"', 'policy = "zz"'), "placement.slots[1].policy"),
        (PLACED.replace('slot = "cuda:1"', 'slot = "cuda:0"'), "placement.slots[2].slot"),
        (PLACED.replace('slot = "cpu:0"', 'slot = "tpu:0"'), "slot"),
        (PLACED.replace('role = "learner"', 'role = "rollout"'), "1 learner slot"),
    ],
)
def test_a_bad_placement_is_refused_with_the_field_named(placement: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_spec(spec_text(placement))


def test_an_async_placement_gives_each_policy_one_rollout_slot_per_replica() -> None:
    """Each rollout slot is one replica: one too few leaves prompt batches unsampled."""
    rollout_b = '[[placement.slots]]\nnode = "n1"\nslot = "cpu:1"\npolicy = "b"\nrole = "rollout"\n'
    for replicas, extra, refused in ((1, "", "'b'"), (1, rollout_b, ""), (2, rollout_b, "'a'")):
        text = spec_text(PLACED + extra, mode="async").replace(
            'mode = "async"', f'mode = "async"\nrollout_replicas = {replicas}'
        )
        if not refused:
            assert parse_spec(text).run.mode == "async"
            continue
        with pytest.raises(
            ConfigError,
            match=f"placement.slots: must be {replicas} rollout slots for policy {refused}",
        ):
            parse_spec(text)
    assert parse_spec(spec_text(PLACED)).run.mode == "lockstep"  # lockstep: no such rule


def _assigned(epoch: int, *rows: tuple[str, int, str, str]) -> ev.SlotsAssigned:
    return ev.SlotsAssigned(
        run="r1",
        source="mwra",
        event_id=ev.event_id("slots", "r1", "mwra", epoch),
        epoch=epoch,
        assignments=[
            ev.SlotAssignment(node=n, slot=s, policy=p, role=r)  # type: ignore[arg-type]
            for n, s, p, r in rows
        ],
    )


def test_a_newer_epoch_moves_slots_and_an_older_one_is_fenced_off() -> None:
    slots = [DeviceSlot("cuda", 0), DeviceSlot("cuda", 1)]
    names = ["a", "b"]
    state = NodeAssignment(node="n2")
    one = _assigned(1, ("n2", 0, "a", "rollout"), ("n2", 1, "b", "learner"), ("n1", 0, "a", "x"))
    state = apply(state, one, slots, names)
    assert state.epoch == 1
    assert state.hosted == {Hosted(0, "a", "rollout"), Hosted(1, "b", "learner")}
    two = _assigned(2, ("n2", 0, "b", "rollout"), ("n2", 1, "b", "learner"), ("n2", 7, "a", "x"))
    state = apply(state, two, slots, names)
    assert state.epoch == 2
    assert state.hosted == {Hosted(0, "b", "rollout"), Hosted(1, "b", "learner")}
    assert ignored(two, "n2", slots, names) == ["slot 7 (a x): not offered by this node"]
    late = _assigned(1, ("n2", 0, "a", "rollout"))  # a late or replayed older assignment
    assert apply(state, late, slots, names) is state
    same = _assigned(2, ("n2", 0, "a", "rollout"))  # an equal epoch is no newer
    assert apply(state, same, slots, names) is state
    unknown = _assigned(3, ("n2", 0, "zz", "rollout"))
    assert apply(state, unknown, slots, names).hosted == frozenset()
    assert ignored(unknown, "n2", slots, names) == ["slot 0: unknown policy 'zz'"]


def test_dtype_is_float32_on_cpu_and_bfloat16_on_gpu_unless_the_spec_says() -> None:
    auto = parse_spec(spec_text()).policies[0]
    assert torch_dtype(auto, "cpu") == torch.float32
    assert torch_dtype(auto, "cuda:1") == torch.bfloat16
    fp16 = parse_spec(spec_text(dtype='dtype = "float16"')).policies[0]
    assert torch_dtype(fp16, "cpu") == torch.float16
    with pytest.raises(ConfigError, match="dtype"):
        parse_spec(spec_text(dtype='dtype = "int8"'))


def test_bfloat16_on_a_cpu_without_its_instructions_is_warned_of_by_policy_and_field() -> None:
    bf16 = parse_spec(spec_text(dtype='dtype = "bfloat16"')).policies[0]
    slow = warn_slow_dtype(bf16, "cpu", torch.bfloat16, native=False)
    assert slow is not None and slow.startswith(f"policies.{bf16.name}.dtype: bfloat16")
    assert warn_slow_dtype(bf16, "cpu", torch.bfloat16, native=True) is None
    assert warn_slow_dtype(bf16, "cuda:0", torch.bfloat16, native=False) is None
    assert warn_slow_dtype(bf16, "cpu", torch.float32, native=False) is None
    assert isinstance(native_cpu_bf16(), bool)  # this machine's answer, whichever it is


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_device_and_dtype_reach_model_optimizer_engine_and_checkpoint(
    dtype: str, models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a CPU slot: the weights, AdamW's state, the HF engine's model and the saved
    checkpoint are all in the policy's dtype on its device, and the checkpoint loads back
    bitwise in that dtype."""
    from safetensors import safe_open

    from mrl_actors.actors.runtime import prepare_runtime

    monkeypatch.setenv("MRL_CACHE_DIR", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    tiny = "tiny = { hidden_size = 16, layers = 1, heads = 2, warm_start_steps = 0 }"
    text = spec_text(dtype=f'dtype = "{dtype}"\n{tiny}', model=str(models_dir / "gpt2"))
    spec = parse_spec(text)
    want = getattr(torch, dtype)
    rt = prepare_runtime(spec, spec.policies[0], tmp_path / "run", "cpu")
    assert {(p.device.type, p.dtype) for p in rt.model.parameters()} == {("cpu", want)}

    ids = torch.tensor([[1, 2, 3, 4]])
    rt.model(input_ids=ids).logits.float().mean().backward()
    rt.learner.optimizer.step()
    states = [s for s in rt.learner.optimizer.state.values() if s]
    assert states and all(
        s["exp_avg"].dtype == want and s["exp_avg"].device.type == "cpu" for s in states
    )

    assert next(rt.engine.model.parameters()).dtype == want
    gens = rt.engine.generate([rt.render(rt.task.items(0)[0])], n=2, seed=0)
    assert len(gens[0]) == 2 and all(g.logprobs.dtype.name == "float32" for g in gens[0])

    saved = rt.learner.save_checkpoint(tmp_path / "ckpt", rt.tokenizer)
    with safe_open(str(saved / "model.safetensors"), framework="pt") as f:
        names = f.keys()  # safe_open is not iterable
        stored = {f.get_slice(k).get_dtype() for k in names}
    assert stored == {"BF16" if dtype == "bfloat16" else "F32"}
    again = prepare_runtime(spec, spec.policies[0], tmp_path / "run", "cpu")  # from step-0
    assert {p.dtype for p in again.model.parameters()} == {want}
    step0 = tmp_path / "run" / "checkpoints" / "a" / "step-0"
    from mrl_actors.actors.runtime import build_runtime

    back = build_runtime(spec, spec.policies[0], rt.task, weights_dir=saved, device="cpu")
    assert back.learner.state_dict_sha256() == rt.learner.state_dict_sha256()
    assert step0.exists()
