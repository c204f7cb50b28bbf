"""Experiment specs: a TOML file decoded into frozen Structs, every field documented.

A spec is the whole of what a run is made of, as data: the policies (model, family, engine,
sampling, GRPO options), the task, the probe and its options, the THL budget, the server and the
schedule. `mrl run` stores the spec's text in `RunStarted`, so a run's log says how it was made.

Imports without torch. Errors name the file and the field (`policies[1].grpo.lr`).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from mrl_actors.checks import MAX_STEPS, check_finite_tree, check_float, check_int, fail
from mrl_actors.errors import ConfigError
from mrl_actors.grpo.config import GRPOConfig
from mrl_actors.models.builtin import builtin_name, is_builtin
from mrl_actors.models.weights_config import WeightsConfig
from mrl_actors.mwra.config import MwraConfig
from mrl_actors.probes.config import ProbeName
from mrl_actors.probes.registry import ProbesConfig, check_probe
from mrl_actors.report.reporters import check_report_to
from mrl_actors.rollout.base import EngineConfig
from mrl_actors.rollout.heads import check_head_dim, model_head_dim
from mrl_actors.see.natsconf import check_duration
from mrl_actors.tasks import TaskConfig
from mrl_actors.thl.residual import ResidualBudget

# Sources of run-wide events (`mrl.<run>.<kind>.<source>`): no policy may be named so.
RESERVED_SOURCES = frozenset({"mrl", "mwra", "placement"})


def check_name(obj: RunSection | PolicySpec) -> None:
    """`obj.name` is one NATS subject token (and part of the stream name `MRL_<name>`)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,128}", obj.name):
        fail("name", "1 to 128 letters, digits, '_' or '-' (a NATS subject token)", obj.name)


class RunSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The schedule shared by every policy of the run."""

    name: str  # run id: the stream is `MRL_<name>`, subjects `mrl.<name>.<kind>.<source>`
    seed: int = 0  # derives prompt order, sampling seeds and model init
    probe: ProbeName = "independent"  # the sharing probe every policy uses (`--compare` runs all)
    steps: int = 20  # learner steps per policy
    prompts_per_step: int = 4  # prompts per step, the same prompt ids for every policy
    group_size: int = 8  # completions per prompt (GRPO's G)
    eval_every: int = 5  # evaluate held-out accuracy every this many steps (and at 0 and the end)
    eval_size: int = 64  # items in the evaluation set (greedy decoding)
    checkpoint_every: int = 10  # save a safetensors checkpoint every this many steps (and the end)
    # "async" (the default): per policy one learner and `rollout_replicas` rollout actors that
    # meet only in the log (weights events, groups stamped with their version); a run depends
    # on timing live and replays exactly from its log. "lockstep": one actor per policy
    # samples, waits for its peers and learns, in turn (the paper's schedule): runs with the
    # same spec and seed are bitwise equal on a CPU, so paper-faithful and bitwise comparisons
    # say `mode = "lockstep"`. Runs record the mode they used (`RunStarted.mode`).
    mode: Literal["lockstep", "async"] = "async"
    rollout_replicas: int = 1  # async: rollout actors per policy
    # async: a group may be sampled at most this many learner versions behind the version that
    # consumes it (rollouts wait for newer weights; the learner drops older groups)
    max_staleness: int = 1
    # Write each learner step's metrics as TensorBoard scalars under
    # `<run dir>/tensorboard/<policy>/` (`mrl_actors.report.tensorboard`); the log holds them
    # either way.
    tensorboard: bool = False
    # Tracking tools that also get each policy's hyperparameters and learner-step scalars,
    # followed from the log (`mrl_actors.report.reporters`): any of "tensorboard" (as
    # `tensorboard = true`), "wandb", "mlflow", "trackio" (pip extras of the same names).
    # `mrl report RUN --to NAME` sends a finished run the same way.
    report_to: tuple[str, ...] = ()
    # How `mrl run` hosts the policies: "one" process for all (the default), or "per_policy":
    # each policy in an `mrl-node --policies NAME` process of its own, against the run's server,
    # so one policy's threads, memory traffic and interpreter lock do not slow the others.
    processes: Literal["one", "per_policy"] = "one"
    # Fix the C heap's mmap threshold of every process of the run at this many MiB (0: glibc's
    # dynamic default; at most 32): blocks at or above it are unmapped when freed, so a learner
    # step of real size does not leave its resident set at the heap's worst fragmentation, for
    # some time spent faulting pages in (`mrl_actors.models.heap`).
    malloc_mmap_threshold_mib: int = 0

    def __post_init__(self) -> None:
        check_name(self)
        check_probe("probe", self.probe)
        check_int(self, "seed", 0, 2**63 - 1)
        check_int(self, "steps", 1, MAX_STEPS)
        check_int(self, "prompts_per_step", 1, 100_000)
        check_int(self, "group_size", 1, 4096)
        check_int(self, "eval_every", 1, MAX_STEPS)
        check_int(self, "eval_size", 1, 1_000_000)
        check_int(self, "checkpoint_every", 1, MAX_STEPS)
        check_int(self, "rollout_replicas", 1, 1024)
        check_int(self, "max_staleness", 0, MAX_STEPS)
        check_int(self, "malloc_mmap_threshold_mib", 0, 32)
        check_report_to("report_to", self.report_to)


class TinySpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Build a small random-weight model of the real architecture instead of loading weights."""

    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    # Supervised steps on the task's target texts before RL: exactly this many, or, with a
    # target or a patience below, at most this many (`actors.warmstart.StopRule`).
    warm_start_steps: int = 300
    warm_start_lr: float = 3e-3
    # Stop the warm start once its train accuracy (greedy exact match under teacher forcing,
    # on `warm_start_check_size` fixed train problems, every `warm_start_check_every` steps)
    # reaches this; None: no target. A start stopped on a target varies far less across seeds
    # and machines than one stopped after a fixed number of steps.
    warm_start_target: float | None = None
    # Stop on a plateau: for this many checks in a row that accuracy has not risen more than
    # `warm_start_min_delta` above its best, nor the loss fallen more than that share below
    # its best; 0: no plateau rule.
    warm_start_patience: int = 0
    warm_start_min_delta: float = 0.01
    warm_start_check_every: int = 50
    warm_start_check_size: int = 128
    # Warm-start on these parts of the task only (`tasks.parts`, e.g. ["add"] of a task with
    # `parts = "op"`); empty: on all of it. RL and evaluation always use the whole task.
    warm_start_parts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_int(self, "hidden_size", 2, 65_536)
        check_int(self, "layers", 1, 1024)
        check_int(self, "heads", 1, 1024)
        check_int(self, "warm_start_steps", 0, 1_000_000)
        check_float(self, "warm_start_lr", gt=0, le=1)
        if self.warm_start_target is not None:
            check_float(self, "warm_start_target", gt=0, le=1)
        check_int(self, "warm_start_patience", 0, 1_000_000)
        check_float(self, "warm_start_min_delta", ge=0, le=1)
        check_int(self, "warm_start_check_every", 1, 1_000_000)
        check_int(self, "warm_start_check_size", 1, 100_000)
        # The tiny model has as many key/value heads as query heads, each hidden_size / heads
        # wide; rotary embeddings (Llama, Qwen) rotate head dimensions in pairs.
        if self.hidden_size % (2 * self.heads):
            fail("hidden_size", f"a multiple of 2 x heads ({2 * self.heads})", self.hidden_size)


class PolicySpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One policy: its model, tokenizer, engine and learner."""

    name: str  # the subject token of its events
    # A local directory (config, tokenizer, and weights unless `tiny` is set), a hub id, or a
    # built-in family made by the project ("builtin:gpt2-bpe", "builtin:llama-sp"; needs `tiny`).
    # Relative paths are resolved against the spec file's directory.
    model: str
    tiny: TinySpec | None = None  # set: random-weight tiny model of `model`'s architecture
    engine: EngineConfig = EngineConfig()
    grpo: GRPOConfig = GRPOConfig()
    chat_template: bool = False  # render prompts with the tokenizer's chat template
    # Weights, optimizer state and checkpoints in this dtype: "auto" is float32 on a CPU slot
    # and bfloat16 on a GPU slot (`mrl_actors.run.placement.torch_dtype`).
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Ranks of the policy's learner (`mode = "async"`): N > 1 runs it as N torch.distributed
    # processes with FSDP2 (gloo on CPU, NCCL on CUDA) on one node's N learner slots, splitting
    # each step's `grpo.grad_accum` micro-batches between them (`mrl_actors.grpo.distributed`).
    learner_slots: int = 1
    # CPU threads of each process hosting this policy (split between its learner ranks);
    # 0: the machine's cores shared evenly between the spec's policies.
    threads: int = 0

    def __post_init__(self) -> None:
        check_name(self)
        check_int(self, "learner_slots", 1, 1024)
        check_int(self, "threads", 0, 4096)
        if not self.model:
            fail("model", "a directory or a hub id", self.model)
        if (
            self.grpo.loss_type == "dr_grpo"
            and self.grpo.max_completion_length != self.engine.sampling.max_new_tokens
        ):
            fail(
                "grpo.max_completion_length",
                f"equal to engine.sampling.max_new_tokens ({self.engine.sampling.max_new_tokens}): "
                "dr_grpo normalises by it",
                self.grpo.max_completion_length,
            )
        if self.engine.sampling.temperature != self.grpo.temperature:
            fail(
                "engine.sampling.temperature",
                f"equal to grpo.temperature ({self.grpo.temperature}): behaviour and learner "
                "log-probs must be at the same temperature",
                self.engine.sampling.temperature,
            )


class ServerSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the log lives. Credentials never go here: use MRL_NATS_* environment variables."""

    url: str = ""  # empty: start an embedded nats-server in the run directory
    # JetStream fsync policy of the embedded server: "2m" (nats default) or "always" (see README).
    sync_interval: str = "2m"
    replicas: int = 1  # stream replicas (needs a cluster of at least this many servers)
    # Size limits of the run's stream, set when it is created; a full stream refuses new events
    # (the run stops with an error and can be resumed with larger limits), it never drops old
    # ones. max_bytes bounds the blob buckets too, separately (each policy's gets an equal
    # share); JetStream reserves both up front against its store limit (75% of the free disk),
    # so 8 GiB each needs ~22 GiB free.
    # -1 (or 0 for max_age_s): no limit.
    max_bytes: int = 8 * 1024**3
    max_msgs: int = -1
    max_age_s: float = 0.0  # events older than this are deleted: keep 0 to be able to resume

    def __post_init__(self) -> None:
        if "@" in self.url:
            raise ValueError(
                "url must not carry credentials (the spec is stored in the run's log): "
                "use MRL_NATS_TOKEN / MRL_NATS_USER / MRL_NATS_PASSWORD / MRL_NATS_CREDS"
            )
        check_int(self, "replicas", 1, 5)  # JetStream keeps at most 5 replicas of a stream
        if self.replicas > 1 and not self.url:
            fail("replicas", "1 without a `url`: the embedded server is one server", self.replicas)
        check_duration("sync_interval", self.sync_interval, always=True)
        if self.max_bytes == 0 or self.max_bytes < -1:
            fail("max_bytes", "positive, or -1 for no limit", self.max_bytes)
        if self.max_msgs == 0 or self.max_msgs < -1:
            fail("max_msgs", "positive, or -1 for no limit", self.max_msgs)
        check_float(self, "max_age_s", ge=0.0)


class THLSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How peer completions cross tokenizers (see README, THL)."""

    # How a span's summed peer log-prob is spread over the receiver's tokens of that span:
    # "uniform" (equal shares) or "last" (all on the span's last token, zeros before it).
    logprob_rule: Literal["uniform", "last"] = "uniform"
    # The residual budget a transfer must fit to be used; over it, the probe drops it and counts it.
    budget: ResidualBudget = ResidualBudget()


class PlacedSlot(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One slot of one node given to one policy's actor, e.g. node "n1", slot "cpu:0"."""

    node: str  # the `mrl-node --node` name
    slot: str  # "cuda:N" (GPU N of that node) or "cpu:N" (its N-th CPU slot)
    policy: str
    role: Literal["learner", "rollout"] = "learner"  # a lockstep policy is one learner actor

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,128}", self.node):
            fail("node", "1 to 128 letters, digits, '_' or '-'", self.node)
        if not re.fullmatch(r"(cpu|cuda):[0-9]{1,4}", self.slot):
            fail("slot", "'cuda:N' or 'cpu:N'", self.slot)


class PlacementSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which node's slot hosts which policy's actor: written once as `SlotsAssigned` epoch 1.

    Empty (the default): `mrl run` and `mrl-node` host every policy on the local node.
    """

    slots: list[PlacedSlot] = []
    # "static": `slots` hold for the whole run. "mwra": the allocator (one per run, on a node
    # that holds its lease) assigns the slots of the nodes that join, starting from `slots` if
    # given, and moves rollout slots between policies as the `[mwra]` table asks (mode "async").
    allocator: Literal["static", "mwra"] = "static"
    # With `allocator = "mwra"`, the rollout slots of the one node `mrl run` hosts the run on,
    # besides a slot per learner rank (an `mrl-node` offers its `--slots` instead): MWRA gives
    # them out and moves them between the policies. 0: `run.rollout_replicas` per policy, the
    # actors of a static run; at least one per policy. CPU slots share the machine's cores: a
    # slot is an actor, not a core.
    local_rollout_slots: int = 0

    def __post_init__(self) -> None:
        check_int(self, "local_rollout_slots", 0, 1024)

    @property
    def assigned(self) -> bool:
        """Nodes host what `SlotsAssigned` events give them (not every policy locally)."""
        return bool(self.slots) or self.allocator == "mwra"


class RunSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    run: RunSection
    task: TaskConfig = TaskConfig()
    probes: ProbesConfig = ProbesConfig()
    thl: THLSection = THLSection()
    server: ServerSection = ServerSection()
    placement: PlacementSection = PlacementSection()
    mwra: MwraConfig = MwraConfig()  # the allocator's knobs (with `placement.allocator = "mwra"`)
    weights: WeightsConfig = WeightsConfig()  # how weights versions travel (docs/weights.md)
    policies: list[PolicySpec]

    def __post_init__(self) -> None:
        names = [p.name for p in self.policies]
        if not names:
            fail("policies", "at least one [[policies]] entry", names)
        if len(set(names)) != len(names):
            fail("policies", "uniquely named", names)
        for i, name in enumerate(names):
            if name in RESERVED_SOURCES:
                fail(f"policies[{i}].name", f"not one of {sorted(RESERVED_SOURCES)}", name)
        if self.placement.allocator == "mwra" and self.run.mode != "async":
            fail("placement.allocator", "'static' unless run.mode = 'async'", "mwra")
        if self.placement.allocator == "mwra" and self.run.processes != "one":
            # a process per policy hosts that policy, not what the allocator assigns
            fail("run.processes", "'one' with placement.allocator = 'mwra'", self.run.processes)
        if 0 < self.placement.local_rollout_slots < len(self.policies):
            fail(
                "placement.local_rollout_slots",
                f"at least {len(self.policies)}: one per policy",
                self.placement.local_rollout_slots,
            )
        slots = {p.name: p.learner_slots for p in self.policies}
        for name, n in self.mwra.learner_slots.items():
            if n != slots.get(name, n):  # the policy's learner has as many ranks as slots
                fail(f"mwra.learner_slots.{name}", f"the policy's learner_slots ({slots[name]})", n)
        for i, p in enumerate(self.policies):
            if p.learner_slots > 1 and self.run.mode != "async":
                fail(f"policies[{i}].learner_slots", "1 unless run.mode = 'async'", p.learner_slots)
        if (
            self.run.mode == "async"
            and self.run.probe != "independent"
            and self.run.max_staleness > self.probes.sharing.max_staleness
        ):
            fail(
                "run.max_staleness",
                f"at most probes.sharing.max_staleness ({self.probes.sharing.max_staleness}): "
                "a group sampled within the run's bound must be fresh enough for the probe",
                self.run.max_staleness,
            )
        placed = set()
        for i, ps in enumerate(self.placement.slots):
            if ps.policy not in names:
                fail(f"placement.slots[{i}].policy", f"one of {names}", ps.policy)
            if (ps.node, ps.slot) in placed:
                fail(f"placement.slots[{i}].slot", "given to one actor only", ps.slot)
            placed.add((ps.node, ps.slot))
        for name in names if self.placement.slots else ():
            learners = [s for s in self.placement.slots if s.policy == name and s.role == "learner"]
            if len(learners) != slots[name] or len({s.node for s in learners}) != 1:
                # a learner's ranks are one unit: all its slots on one node
                fail(
                    "placement.slots",
                    f"{slots[name]} learner slot(s) for policy {name!r}, all on one node",
                    learners,
                )
            rollouts = [s for s in self.placement.slots if s.policy == name and s.role == "rollout"]
            static = self.placement.allocator == "static"
            if self.run.mode == "async" and static and len(rollouts) != self.run.rollout_replicas:
                # each rollout slot is one replica: a missing one leaves its share of the prompt
                # batches unsampled (the learner would wait forever), an extra one has no share
                fail(
                    "placement.slots",
                    f"{self.run.rollout_replicas} rollout slots for policy {name!r}, one per "
                    "run.rollout_replicas (mode = 'async')",
                    rollouts,
                )
        samples = self.run.prompts_per_step * self.run.group_size
        for i, p in enumerate(self.policies):
            if p.grpo.loss_type != "dapo" and samples % p.grpo.grad_accum:
                fail(
                    f"policies[{i}].grpo.grad_accum",
                    f"a divisor of the {samples} samples per step (prompts_per_step x "
                    f"group_size): loss_type {p.grpo.loss_type!r} needs equal micro-batches",
                    p.grpo.grad_accum,
                )

    def local_slot_count(self) -> int:
        """The CPU slots `mrl run` offers the allocator on one machine: one per learner rank
        and `placement.local_rollout_slots` (or `run.rollout_replicas` per policy)."""
        rollouts = self.placement.local_rollout_slots or (
            len(self.policies) * self.run.rollout_replicas
        )
        return sum(p.learner_slots for p in self.policies) + rollouts

    def mwra_config(self) -> MwraConfig:
        """`[mwra]` with every policy's `learner_slots` (the allocator places them as units)."""
        slots = {**self.mwra.learner_slots, **{p.name: p.learner_slots for p in self.policies}}
        return msgspec.structs.replace(self.mwra, learner_slots=slots)

    def with_probe(self, probe: ProbeName, *, seed: int | None = None, name: str = "") -> RunSpec:
        run = msgspec.structs.replace(
            self.run,
            probe=probe,
            seed=self.run.seed if seed is None else seed,
            name=name or self.run.name,
        )
        return msgspec.structs.replace(self, run=run)


def load_spec(path: str | Path) -> tuple[RunSpec, str]:
    """Read and check a spec file; returns the spec (model paths resolved) and its text."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the spec: {exc.strerror}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}: {data[exc.start : exc.start + 1]!r})"
        ) from exc
    return parse_spec(text, source=str(path), base_dir=path.parent), text


def parse_spec(
    text: str, *, source: str = "<spec>", base_dir: Path | None = None, mode: str = ""
) -> RunSpec:
    """Decode and check a spec's text; every failure is a ConfigError naming `source` and field.

    `mode`: the mode a run recorded (`RunStarted.run_mode`), for a text that leaves `[run] mode`
    out: such a text meant lockstep before async became the default.
    """
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses once per nested array or inline table
        raise ConfigError(f"{source}: arrays or tables nested too deeply to be a spec") from exc
    if mode and isinstance(raw.get("run"), dict):
        raw["run"].setdefault("mode", mode)
    try:
        spec = msgspec.convert(raw, RunSpec)
        check_finite_tree(raw)  # and every float the fields' own checks do not bound
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_where(str(exc))}") from exc
    except (ValueError, TypeError, RecursionError) as exc:  # checks outside msgspec's reach
        raise ConfigError(f"{source}: {exc}") from exc
    for i, p in enumerate(spec.policies):
        if is_builtin(p.model):
            try:
                builtin_name(p.model)
            except ConfigError as exc:
                raise ConfigError(f"{source}: policies[{i}].model: {exc}") from exc
            if p.tiny is None:
                raise ConfigError(
                    f"{source}: policies[{i}].model: {p.model!r} has no weights: set `tiny` "
                    "(a random-weight tiny model of its architecture, warm-started)"
                )
    if base_dir is not None:
        spec = msgspec.structs.replace(
            spec, policies=[_resolve_model(p, base_dir) for p in spec.policies]
        )
    _check_vllm_heads(spec, source)
    return spec


def _check_vllm_heads(spec: RunSpec, source: str) -> None:
    """A vLLM policy's head size is one vLLM's CPU kernels take, unless every slot the
    placement gives it is a GPU (`rollout.heads`); models not on disk yet are checked when their
    engine is built."""
    for i, p in enumerate(spec.policies):
        if p.engine.kind != "vllm":
            continue
        slots = [s.slot for s in spec.placement.slots if s.policy == p.name]
        on_cpu = not slots or any(s.startswith("cpu:") for s in slots)
        tiny = (p.tiny.hidden_size, p.tiny.heads) if p.tiny is not None else None
        check_head_dim(
            model_head_dim(p.model, tiny), on_cpu=on_cpu, where=f"{source}: policies[{i}].engine"
        )


def effective_toml(spec: RunSpec) -> str:
    """The spec as TOML, every field spelled out: what a run directory keeps for `--resume`.

    Overrides (`--probe`, `--steps`, `--compare`'s probe and seed) are in it as values, and model
    directories are absolute, so the file means the same run wherever the directory sits. Built-in
    names and hub ids stay as they are.
    """
    policies = []
    for p in spec.policies:
        path = Path(p.model)
        if not is_builtin(p.model) and (path.is_absolute() or path.exists()):
            p = msgspec.structs.replace(p, model=str(path.resolve()))
        policies.append(p)
    spec = msgspec.structs.replace(spec, policies=policies)
    text = msgspec.toml.encode(_drop_none(msgspec.to_builtins(spec))).decode("utf-8")
    if parse_spec(text, source="<effective spec>") != spec:  # a field TOML cannot say
        raise ConfigError("the spec does not survive a TOML round trip; report this as a bug")
    return text


def _drop_none(obj: Any) -> Any:
    """TOML has no null: an unset optional field is left out (its default is None)."""
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_none(v) for v in obj]
    return obj


def _where(message: str) -> str:
    """msgspec says "... - at `$.policies[1].grpo`"; say it as "policies[1].grpo.lr: ...".

    A Struct's own check says "lr: must be ..." (see `mrl_actors.checks`); its field joins the
    path. An unknown key is named in full, so a typo reads as the field it is.
    """
    m = re.search(r"^(.*) - at `\$\.?(.*)`$", message, re.DOTALL)
    what, path = (m.group(1), m.group(2)) if m else (message, "")  # no path: the top level
    named = re.fullmatch(r"Object (contains unknown|missing required) field `(.*)`", what)
    if named:
        where = f"{path}.{named.group(2)}" if path else named.group(2)
        if named.group(1) == "missing required":
            return f"{where}: required, and missing"
        return f"{where}: unknown field (a typo? every field: docs/grpo-and-probes.md#the-spec)"
    field = re.match(r"^([A-Za-z_][\w.\[\]]*): (.*)$", what, re.DOTALL)
    if field:
        where = f"{path}.{field.group(1)}" if path else field.group(1)
        return f"{where}: {field.group(2)}"
    return f"{path or '(top level)'}: {what}"


def _resolve_model(p: PolicySpec, base: Path) -> PolicySpec:
    if is_builtin(p.model):
        return p  # made by the project, wherever the spec sits
    candidate = (base / p.model).resolve()
    if p.model.startswith((".", "/")) or candidate.exists():
        return msgspec.structs.replace(p, model=str(candidate))
    return p  # a hub id; loaded only where the network allows
