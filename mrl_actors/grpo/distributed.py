"""A GRPO learner as N ranks of torch.distributed: FSDP2 shards, micro-batches split between ranks.

`learner_slots = N` makes a policy's learner N processes (NCCL on CUDA, gloo on CPU). Each holds
1/N of the parameters, gradients and AdamW state (`fully_shard` on every decoder layer, then on a
root that computes the completion log-probs), so a policy N times larger than one device trains.
The step's micro-batches (`grpo.grad_accum`) are dealt round-robin between the ranks; gradients
are summed across ranks (divide factor 1), so N ranks take the step one rank takes on the same
micro-batches, up to the order of the float additions. A rank short of a micro-batch runs one
with loss factor 0: FSDP's collectives need every rank to run the same passes. The off-policy
term (one batch) runs on every rank and counts on rank 0 only.

Rank 0 also keeps an unsharded copy of the model (`model`): the rollout engine, the weights the
learner publishes and the checkpoints read it, so weights versions and checkpoints are full-state
safetensors with the sha256 of the full state, whatever N is; a checkpoint's optimizer state is
the full state indexed as a one-rank AdamW's, so any N restores from it. After every step the
shards are gathered into the copy; a copy changed from outside (a restored checkpoint) is
scattered back into the shards before the next step (`push_if_changed`).

Every method that communicates must run on all ranks in the same order: rank 0 announces each
one to the others on the op channel (`Ops`) first; `mrl_actors.actors.ranks` drives it.

On CPU the same N gives bitwise the same weights (gloo sums two ranks in a fixed order). The NCCL
path is the same code on `cuda:N` devices; it has not been run on GPUs here.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from datetime import timedelta
from enum import IntEnum
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mrl_actors.errors import ConfigError
from mrl_actors.grpo.batch import Batch
from mrl_actors.grpo.config import GRPOConfig
from mrl_actors.grpo.learner import GRPOLearner, T
from mrl_actors.grpo.logprobs import completion_logps

GROUP_TIMEOUT_S = 600.0  # a rank that does not join or answer within this fails the learner


def backend_for(device: str) -> str:
    return "nccl" if device.startswith("cuda") else "gloo"


def _tcp_store(host: str, port: int, world: int, *, master: bool, **kw: Any) -> Any:
    return dist.TCPStore(
        host,
        port,
        world_size=world,
        is_master=master,
        timeout=timedelta(seconds=GROUP_TIMEOUT_S),
        **kw,
    )


def listen_store(world: int, *, host: str = "127.0.0.1") -> Any:
    """Rank 0's rendezvous store, listening on a port the OS picks (its `.port`): started before
    the other ranks, who join it by that port, so no other process can take the port between
    choosing it and binding it."""
    return _tcp_store(host, 0, world, master=True, wait_for_workers=False)


def init_group(
    rank: int,
    world: int,
    port: int,
    device: str,
    *,
    host: str = "127.0.0.1",
    store: Any = None,
) -> Any:
    """Join the learner's process group through rank 0's store: `store` where this process
    already holds it (`listen_store`), else the one at `host:port` (rank 0 starts it there);
    returns the gloo group the op channel runs on."""
    if dist.is_initialized():
        raise ConfigError(
            "this process already holds a torch.distributed group: one process hosts at most "
            "one multi-rank learner (host each policy in its own process)"
        )
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    if store is None:
        store = _tcp_store(host, port, world, master=rank == 0)
    dist.init_process_group(
        backend_for(device),
        store=store,
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=GROUP_TIMEOUT_S),
    )
    return dist.new_group(backend="gloo") if backend_for(device) != "gloo" else dist.group.WORLD


def close_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------ op channel


class Op(IntEnum):
    """What rank 0 asks the other ranks to do next (every one is a collective)."""

    STOP = 0
    STEP = 1  # payload: the step's inputs (`actors.ranks.StepOrder`)
    PUSH = 2  # rank 0's full copy -> every rank's shards
    OPTIM_GATHER = 3  # the full optimizer state -> rank 0
    OPTIM_LOAD = 4  # rank 0's full optimizer state -> every rank's shards


class Ops:
    """Rank 0 -> the other ranks: an op code and a payload of bytes, broadcast over gloo."""

    def __init__(self, group: Any) -> None:
        self.group = group

    def send(self, op: Op, payload: bytes = b"") -> None:
        head = torch.tensor([int(op), len(payload)], dtype=torch.int64)
        dist.broadcast(head, 0, group=self.group)
        if payload:
            body = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
            dist.broadcast(body, 0, group=self.group)

    def recv(self) -> tuple[Op, bytes]:
        head = torch.zeros(2, dtype=torch.int64)
        dist.broadcast(head, 0, group=self.group)
        op, size = Op(int(head[0])), int(head[1])
        if not size:
            return op, b""
        body = torch.empty(size, dtype=torch.uint8)
        dist.broadcast(body, 0, group=self.group)
        return op, body.numpy().tobytes()


# ------------------------------------------------------------------ sharding


class LogpsRoot(nn.Module):
    """The FSDP root: its forward is the completion log-probs, so the parameters outside the
    decoder layers (embeddings, final norm, a possibly tied LM head) are gathered around it."""

    def __init__(self, model: Any, temperature: float) -> None:
        super().__init__()
        self.inner = model
        self.temperature = temperature

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, P + T]
        attention_mask: torch.Tensor,  # [B, P + T]
        n_completion: int,  # T
        with_entropy: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logps, entropy = completion_logps(
            self.inner,
            input_ids,
            attention_mask,
            n_completion,
            self.temperature,
            with_entropy=with_entropy,
        )
        return logps.clone(), entropy  # not a view: FSDP hooks the output for the backward


def decoder_layers(model: Any) -> nn.ModuleList:
    """The model's stack of decoder layers (each becomes one FSDP unit)."""
    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    for m in model.modules():
        if isinstance(m, nn.ModuleList) and len(m) == n:
            return m
    raise ConfigError(f"{type(model).__name__}: no list of {n} decoder layers to shard")


def shard(model: Any, temperature: float, device: str) -> LogpsRoot:
    """`model` sharded in place across the group's ranks, under a `LogpsRoot`."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    mesh = init_device_mesh(
        "cuda" if device.startswith("cuda") else "cpu", (dist.get_world_size(),)
    )
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    root = LogpsRoot(model, temperature)
    fully_shard(root, mesh=mesh)
    for m in root.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)  # a sum over ranks, as one rank's accumulation
            m.set_force_sum_reduction_for_comms(True)  # gloo has no pre-multiplied sum
    return root


def _param_fqns(model: Any) -> list[str]:
    """Parameter names in `model.parameters()` order (a tied parameter once, as AdamW sees it)."""
    seen: set[int] = set()
    out = []
    for name, p in model.named_parameters():
        if id(p) not in seen and p.requires_grad:
            seen.add(id(p))
            out.append(name)
    return out


class _FullOptimizer:
    """Rank 0's view of the sharded AdamW as one unsharded optimizer (for checkpoints)."""

    def __init__(self, learner: ShardedGRPOLearner) -> None:
        self.learner = learner

    def state_dict(self) -> dict[str, Any]:
        self.learner.ops.send(Op.OPTIM_GATHER)
        out = self.learner.gather_optimizer()
        assert out is not None
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.ops.send(Op.OPTIM_LOAD)
        self.learner.load_optimizer(state)


class ShardedGRPOLearner(GRPOLearner):
    """One rank of an N-rank GRPO learner (see the module docstring).

    `model` is this rank's copy of the policy at its start: sharded in place on ranks > 0; on
    rank 0 a copy is sharded and `self.model` stays `model`, unsharded, kept in step with the
    shards, and `self.optimizer` a view
    of the sharded AdamW as a full one: everything outside the step (weights events,
    checkpoints, restore) reads them as it reads a one-rank learner's.
    """

    def __init__(
        self,
        model: Any,
        cfg: GRPOConfig,
        ops: Ops,
        *,
        device: str = "cpu",
        ref_model: Any | None = None,
        seed: int = 0,
        pad_id: int = 0,
    ) -> None:
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.ops = ops
        # rank 0 keeps `model` itself whole (the engine shares it) and shards a copy
        full = model if self.rank == 0 else None
        self.fqns = _param_fqns(model)
        root = shard(copy.deepcopy(model) if self.rank == 0 else model, cfg.temperature, device)
        super().__init__(root, cfg, ref_model=ref_model, seed=seed, pad_id=pad_id)
        self.root, self.sharded_optimizer = root, self.optimizer
        self.model = full  # rank 0: the full state; other ranks hold none
        self.optimizer = _FullOptimizer(self)  # type: ignore[assignment]
        self._copy_versions = self._versions()

    # ------------------------------------------------------------------ the step's hooks

    def share(self, batches: list[T]) -> list[tuple[T, float]]:
        mine = batches[self.rank :: self.world]
        passes = -(-len(batches) // self.world)  # every rank runs as many passes
        out = [(b, 1.0) for b in mine]
        out += [(batches[0], 0.0)] * (passes - len(mine))
        return out

    def reduce_sums(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, group=self.ops.group)
        return [float(v) for v in t]

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach().to("cpu", torch.float32)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor([t.numel()]), group=self.ops.group)
        most = int(max(int(s) for s in sizes))
        padded = torch.zeros(most, dtype=torch.float32)
        padded[: t.numel()] = t
        parts = [torch.zeros(most, dtype=torch.float32) for _ in range(self.world)]
        dist.all_gather(parts, padded, group=self.ops.group)
        return torch.cat([p[: int(s)] for p, s in zip(parts, sizes, strict=True)])

    @property
    def off_policy_factor(self) -> float:  # type: ignore[override]
        return 1.0 if self.rank == 0 else 0.0

    def _logps(
        self, model: Any, b: Batch, *, with_entropy: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The policy's log-probs through the sharded root; the reference model's as one rank."""
        if self.ref_model is not None and model is self.ref_model:  # (rank > 0: no full model)
            return super()._logps(model, b, with_entropy=with_entropy)
        dev = self.params[0].device
        out: tuple[torch.Tensor, torch.Tensor | None] = self.root(
            b.input_ids.to(dev), b.attention_mask.to(dev), b.completion_ids.size(1), with_entropy
        )
        return out

    def step(
        self, on_policy: Sequence[Any], off_policy: Sequence[Any] = (), off_policy_loss: Any = None
    ) -> dict[str, float]:
        t0 = time.perf_counter()
        m = self.accumulate_gradients(on_policy, off_policy, off_policy_loss)
        t1 = time.perf_counter()
        m.update(self.apply_gradients())
        t2 = time.perf_counter()
        self.pull()
        t3 = time.perf_counter()
        # the step's phases, this rank's: forward and backward, optimizer, gathering the state
        m.update(forward_backward_s=t1 - t0, optimizer_s=t2 - t1, gather_s=t3 - t2)
        m["step_time_s"] = t3 - t0
        return m

    def apply_gradients(self) -> dict[str, float]:
        cfg = self.cfg
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        full_tensor = getattr(norm, "full_tensor", None)
        grad_norm = float(full_tensor() if full_tensor is not None else norm)
        self.sharded_optimizer.step()
        self.sharded_optimizer.zero_grad(set_to_none=True)
        self.version += 1
        return {"grad_norm": grad_norm, "version": float(self.version)}

    # ------------------------------------------------------------------ full state

    def _versions(self) -> list[int]:
        """In-place write counters of the copy's tensors: any load into it changes them."""
        if self.model is None:
            return []
        return [t._version for t in self.model.state_dict().values()]

    def pull(self) -> None:
        """Collective: every rank's shards -> rank 0's unsharded copy."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(self.root, options=opts)
        if self.model is None:
            return
        prefix = "inner."
        tensors = {k.removeprefix(prefix): v for k, v in state.items()}
        missing, unexpected = self.model.load_state_dict(tensors, strict=False)
        tied = set(getattr(self.model, "_tied_weights_keys", None) or [])
        if unexpected or any(k not in tied and not self._is_tied(k) for k in missing):
            raise ConfigError(
                f"gathered state does not fit the model: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}"
            )
        self._copy_versions = self._versions()

    def _is_tied(self, key: str) -> bool:
        """`key` is a parameter that shares its storage with another one (a tied LM head)."""
        assert self.model is not None
        sd = self.model.state_dict(keep_vars=True)
        ptr = sd[key].data_ptr()
        return any(k != key and v.data_ptr() == ptr for k, v in sd.items())

    def push_if_changed(self) -> None:
        """Rank 0: if the copy was written from outside, scatter it into the shards."""
        if self.model is not None and self._versions() != self._copy_versions:
            self.ops.send(Op.PUSH)
            self.push()

    def push(self) -> None:
        """Collective: rank 0's unsharded copy -> every rank's shards."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        state: dict[str, Any] = {}
        if self.model is not None:
            own = {f"inner.{k}": v for k, v in self.model.state_dict().items()}
            names = {n for n, _ in self.root.named_parameters()} | {
                n for n, _ in self.root.named_buffers()
            }
            state = {k: v for k, v in own.items() if k in names}
        set_model_state_dict(self.root, state, options=opts)
        self._copy_versions = self._versions()

    def gather_optimizer(self) -> dict[str, Any] | None:
        """Collective: the full AdamW state, on rank 0 indexed as a one-rank optimizer's."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full: Any = get_optimizer_state_dict(self.root, self.sharded_optimizer, options=opts)
        if self.rank != 0:
            return None
        index = {name: i for i, name in enumerate(self.fqns)}
        state = {index[k.removeprefix("inner.")]: v for k, v in full["state"].items()}
        groups = [
            {**g, "params": [index[k.removeprefix("inner.")] for k in g["params"]]}
            for g in full["param_groups"]
        ]
        return {"state": state, "param_groups": groups}

    def load_optimizer(self, state: dict[str, Any] | None) -> None:
        """Collective: rank 0's full AdamW state (one-rank indexing) -> every rank's shards."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        full: dict[str, Any] = {}
        if state is not None and self.rank == 0:
            names = [f"inner.{n}" for n in self.fqns]
            full = {
                "state": {names[int(i)]: v for i, v in state["state"].items()},
                "param_groups": [
                    {**g, "params": [names[int(i)] for i in g["params"]]}
                    for g in state["param_groups"]
                ],
            }
        opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        set_optimizer_state_dict(self.root, self.sharded_optimizer, full, options=opts)
