"""The typed experience events of the SEE, and the one decoder that reads them.

Every fact that matters in a run is one of these frozen, tagged, versioned Structs. Nothing else in
the codebase builds or parses raw payloads: writers call `encode`, readers call `decode`.

Schema evolution follows msgspec's rules: a new field gets a default; a field never changes type;
a breaking change gets a new tag (`Name.v2`) and an upcast from the old one in `UPCASTS`.

Arrays (token ids, log-probs, rewards) travel as packed little-endian int32/float32 bytes: about
10x smaller and faster to encode than lists. `pack_*` builds them, the `*_array()` accessors read
them back as read-only numpy views.

Event ids are deterministic (`event_id(...)`): the same logical fact always gets the same id, which
the log sends as `Nats-Msg-Id`, so a retried publish is stored once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

import msgspec
import numpy as np

from mrl_actors.errors import EventDecodeError

# Hard bound on one encoded event; the log stores anything larger in the blob store (claim-check).
MAX_EVENT_BYTES = 64 * 1024 * 1024

# Ranges every reader gets from the one decoder (an out-of-range value is an `EventDecodeError`,
# so a dead letter): counters are non-negative and below 2**63 (no writer ever needs more, and
# an int64 column or a JSON reader holds them exactly), lists are bounded, metrics are finite.
MAX_COUNT = 2**63
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT - 1)]
# A version or step that may be absent: -1 says "none" (a full weights version has no base).
OptionalCount = Annotated[int, msgspec.Meta(ge=-1, le=MAX_COUNT - 1)]
Finite = Annotated[float, msgspec.Meta(ge=-1.7976931348623157e308, le=1.7976931348623157e308)]
MAX_COMPLETIONS = 4096  # completions in one group
MAX_CONSUMED = 1_000_000  # stream sequences one learner step consumed
MAX_ASSIGNMENTS = 16_384  # slots in one assignment (MWRA lists every slot of every live node)
MAX_METRICS = 1024  # entries of a metrics map
MAX_LIST = 4096  # any other list (probes, devices)

_I32 = np.dtype("<i4")
_F32 = np.dtype("<f4")


# --------------------------------------------------------------------------- packed arrays


def pack_i32(values: Sequence[int] | np.ndarray) -> bytes:
    """Token ids as packed little-endian int32 bytes."""
    return np.ascontiguousarray(values, dtype=_I32).tobytes()


def pack_f32(values: Sequence[float] | np.ndarray) -> bytes:
    """Log-probs or rewards as packed little-endian float32 bytes."""
    return np.ascontiguousarray(values, dtype=_F32).tobytes()


def unpack_i32(data: bytes) -> np.ndarray:
    """Read-only int32 view of packed bytes: `[n]`."""
    if len(data) % 4:
        raise _error("schema", f"packed int32 array has {len(data)} bytes, not a multiple of 4")
    return np.frombuffer(data, dtype=_I32)


def unpack_f32(data: bytes) -> np.ndarray:
    """Read-only float32 view of packed bytes: `[n]`."""
    if len(data) % 4:
        raise _error("schema", f"packed float32 array has {len(data)} bytes, not a multiple of 4")
    return np.frombuffer(data, dtype=_F32)


def _check_packed(name: str, data: bytes) -> None:
    # ValueError (not EventDecodeError): msgspec turns it into a ValidationError while decoding.
    if len(data) % 4:
        raise ValueError(f"{name} has {len(data)} bytes, not a multiple of 4 (packed 32-bit)")


def _check_finite(name: str, data: bytes) -> None:
    _check_packed(name, data)
    arr = np.frombuffer(data, dtype=_F32)
    if arr.size and not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name}[{bad}] is {arr[bad]!r}; arrays must be finite")


def _check_completions(completions: Sequence[Completion]) -> None:
    """Validate the completions an event carries: packed lengths, finite log-probs and reward.

    One joined numpy check per event instead of one per completion (which cost ~6 µs apiece,
    most of the decode time of a rollout group); the slow loop runs only to name the culprit.
    """
    for i, c in enumerate(completions):
        n_ids = len(c.token_ids)
        if n_ids % 4 or n_ids != len(c.logprobs) or not math.isfinite(c.reward):
            _check_packed(f"completions[{i}].token_ids", c.token_ids)
            if n_ids != len(c.logprobs):
                raise ValueError(
                    f"completions[{i}]: token_ids has {n_ids // 4} entries "
                    f"but logprobs has {len(c.logprobs) // 4}"
                )
            _check_number(f"completions[{i}].reward", c.reward)
    if not completions:
        return
    try:
        _check_finite("logprobs", b"".join(c.logprobs for c in completions))
    except ValueError:
        for i, c in enumerate(completions):
            _check_finite(f"completions[{i}].logprobs", c.logprobs)
        raise


def _check_number(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} is {value!r}; must be finite")


def event_id(kind: str, run: str, source: str, *key: object) -> str:
    """The deterministic id of a logical fact, e.g. `event_id("rollout", run, "qwen", 3, "p17")`."""
    return "/".join([run, kind, source, *(str(k) for k in key)])


# --------------------------------------------------------------------------- base


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Fields every event carries.

    `source` is the policy or node that wrote it; it is also the last token of the subject
    `mrl.<run>.<kind>.<source>`. `time_ns` is wall-clock and never part of the id.
    """

    KIND: ClassVar[str] = "event"

    run: str
    source: str
    event_id: str
    time_ns: Count = 0

    def subject(self, prefix: str = "mrl") -> str:
        return f"{prefix}.{self.run}.{self.KIND}.{self.source}"


# --------------------------------------------------------------------------- nested records


class Completion(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One sampled completion with its behaviour trace and its verdict.

    It is validated by the event that carries it (`_check_completions`: packed lengths, finite
    log-probs and reward), once per event rather than once per completion: on rollout-sized
    groups the per-object checks were most of the decode time. `gc=False`: it holds only
    bytes, str, float and bool, so it can never be part of a reference cycle.
    """

    token_ids: bytes  # packed int32 [C]: the ids the policy sampled (may be non-canonical)
    logprobs: bytes  # packed float32 [C]: behaviour log-probs at the sampling temperature
    text: str
    finish_reason: str  # "stop" | "length" | "eos"
    reward: float
    success: bool
    verdict: str = ""  # the verifier's reason, short

    def token_ids_array(self) -> np.ndarray:
        return unpack_i32(self.token_ids)

    def logprobs_array(self) -> np.ndarray:
        return unpack_f32(self.logprobs)


class ConsumedEvent(msgspec.Struct, frozen=True, array_like=True):
    """A stream sequence a learner step consumed, with the id of the event stored there."""

    seq: Count
    event_id: str


SlotKey = tuple[str, int]  # a slot of the run: (node, slot index on that node)


class SlotAssignment(msgspec.Struct, frozen=True, kw_only=True):
    node: str
    slot: Count  # GPU index on that node (or a CPU slot number)
    policy: str
    role: Literal["rollout", "learner"]


class BlobRef(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Claim-check for a payload stored outside the stream; the hash is checked on read.

    Fields added after release have defaults and are left out when default (`omit_defaults`),
    so released refs keep their exact bytes."""

    # "object": the run's JetStream object store; "zarr": a zarr directory (claim-check);
    # "dir" / "mmap": weights files in the spec's `[weights] dir` (models.transport_files)
    store: Literal["object", "zarr", "dir", "mmap"]
    key: str
    sha256: str
    size: Count
    # "object": the policy whose own bucket `MRL_<run>_BLOBS_<writer>` holds it (only that
    # policy's users may write there: `mrl_actors.see.auth`); "" names the run's one shared
    # bucket `MRL_<run>_BLOBS` of runs written before each policy had its own
    writer: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{0,128}$")] = ""


# --------------------------------------------------------------------------- events


class RunStarted(Event, frozen=True, kw_only=True, omit_defaults=True, tag="RunStarted.v1"):
    # Fields added after release have defaults and are left out when default
    # (`omit_defaults`), so released events keep their exact bytes.
    KIND: ClassVar[str] = "run"
    spec_toml: str  # the full experiment spec as it was run
    seed: Count
    code_version: str  # package version plus git revision where known
    probes: Annotated[list[str], msgspec.Meta(max_length=MAX_LIST)] = []
    # The run's `[run] mode` as it ran ("lockstep" or "async"). The spec text may leave it out,
    # and what that means changed: lockstep was the default when this field did not exist yet,
    # async since. "" (a log written before the field): lockstep (`run_mode`).
    mode: Annotated[str, msgspec.Meta(max_length=16)] = ""

    @property
    def run_mode(self) -> str:
        """The mode the run used: the field, or lockstep for a log written before it."""
        return self.mode or "lockstep"


class PolicyRegistered(Event, frozen=True, kw_only=True, tag="PolicyRegistered.v1"):
    KIND: ClassVar[str] = "policy"
    policy: str
    family: str  # gpt2, llama, mistral, qwen2, ...
    model_path: str
    tokenizer_fingerprint: str
    probe: str  # independent | prp | xgrpo | sgt
    engine: str = "hf"  # hf | vllm
    options: dict[str, Any] = {}  # the probe's and learner's resolved options, for the record


class RolloutGroupCompleted(Event, frozen=True, kw_only=True, tag="RolloutGroupCompleted.v1"):
    KIND: ClassVar[str] = "rollout"
    policy: str
    policy_version: Count  # learner steps taken when these were sampled
    prompt_id: str
    prompt_text: str
    prompt_token_ids: bytes = b""  # packed int32 [P], as the policy rendered the prompt
    temperature: float = 1.0
    tokenizer_fingerprint: str = ""
    completions: Annotated[list[Completion], msgspec.Meta(max_length=MAX_COMPLETIONS)]

    def __post_init__(self) -> None:
        _check_number("temperature", self.temperature)
        _check_packed("prompt_token_ids", self.prompt_token_ids)
        _check_completions(self.completions)

    def rewards_array(self) -> np.ndarray:
        """`[G]` float32 rewards in completion order."""
        return np.array([c.reward for c in self.completions], dtype=np.float32)


class RewardSummary(Event, frozen=True, kw_only=True, tag="RewardSummary.v1"):
    KIND: ClassVar[str] = "reward"
    policy: str
    policy_version: Count
    prompt_id: str
    rewards: bytes  # packed float32 [G]: every reward of the group (XGRPO pools these)
    success_rate: float

    def __post_init__(self) -> None:
        _check_finite("rewards", self.rewards)
        _check_number("success_rate", self.success_rate)

    def rewards_array(self) -> np.ndarray:
        return unpack_f32(self.rewards)


class SuccessVerified(Event, frozen=True, kw_only=True, tag="SuccessVerified.v1"):
    KIND: ClassVar[str] = "success"
    policy: str
    policy_version: Count
    prompt_id: str
    prompt_text: str
    completion_index: Count  # position in the RolloutGroupCompleted it came from
    completion: Completion
    tokenizer_fingerprint: str = ""

    def __post_init__(self) -> None:
        _check_completions([self.completion])


class LearnerStepCompleted(Event, frozen=True, kw_only=True, tag="LearnerStepCompleted.v1"):
    KIND: ClassVar[str] = "learner"
    policy: str
    step: Count  # 1-based; equals the policy version after this step
    probe: str
    # every stream sequence whose event fed this step, in order
    consumed: Annotated[list[ConsumedEvent], msgspec.Meta(max_length=MAX_CONSUMED)]
    weights_sha256: str  # checksum of the weights after the step
    metrics: Annotated[dict[str, Finite], msgspec.Meta(max_length=MAX_METRICS)] = {}


class CheckpointSaved(Event, frozen=True, kw_only=True, tag="CheckpointSaved.v1"):
    KIND: ClassVar[str] = "checkpoint"
    policy: str
    step: Count
    path: str  # a directory `from_pretrained` loads (safetensors)
    weights_sha256: str


class ThroughputReported(Event, frozen=True, kw_only=True, tag="ThroughputReported.v1"):
    KIND: ClassVar[str] = "throughput"
    node: str
    policy: str
    role: Literal["rollout", "learner"]
    window_s: Finite
    tokens_per_s: Finite
    samples_per_s: Finite
    step_time_s: Finite = 0.0


class SlotsAssigned(Event, frozen=True, kw_only=True, omit_defaults=True, tag="SlotsAssigned.v1"):
    """Which (policy, role) each slot of each node serves from this epoch on.

    Fields at their default are left out of the wire form, so `seen_seq` (added later) leaves
    the bytes of an assignment without it as they were.
    """

    KIND: ClassVar[str] = "slots"
    epoch: Count  # increases with every new assignment
    assignments: Annotated[list[SlotAssignment], msgspec.Meta(max_length=MAX_ASSIGNMENTS)]
    reason: str = ""
    # The last stream sequence the allocator had folded when it decided (0 for the spec's own
    # placement): replaying exactly that prefix of the log must give the same decision.
    seen_seq: Count = 0


class NodeJoined(Event, frozen=True, kw_only=True, tag="NodeJoined.v1"):
    KIND: ClassVar[str] = "node"
    node: str
    host: str
    pid: Count
    slots: Count  # GPUs (or CPU slots) the node offers
    devices: Annotated[list[str], msgspec.Meta(max_length=MAX_LIST)] = []


class NodeLeft(Event, frozen=True, kw_only=True, tag="NodeLeft.v1"):
    KIND: ClassVar[str] = "node"
    node: str
    reason: str


class RunFinished(Event, frozen=True, kw_only=True, tag="RunFinished.v1"):
    KIND: ClassVar[str] = "run"
    status: Literal["completed", "failed", "stopped"]
    summary: dict[str, Any] = {}


class DeadLettered(Event, frozen=True, kw_only=True, tag="DeadLettered.v1"):
    """A message that could not be applied, kept with the reason; the consumer went on."""

    KIND: ClassVar[str] = "deadletter"
    original_subject: str
    original_seq: Count
    # garbage | unknown_tag | schema | oversized | non_finite | blob_hash | blob_missing |
    # identity (a payload naming another writer) | lost (a sequence the server no longer has) |
    # apply
    error: str
    reason: str
    raw_prefix: bytes = b""  # at most the first 4 KiB of the offending payload
    raw_size: Count = 0


class BlobPointer(Event, frozen=True, kw_only=True, tag="BlobPointer.v1"):
    """Stands in the stream for an event too large for it; log reads resolve it transparently."""

    KIND: ClassVar[str] = "blob"
    kind: str  # the KIND of the event stored in the blob
    ref: BlobRef


class NodeHeartbeat(Event, frozen=True, kw_only=True, tag="NodeHeartbeat.v1"):
    """A node says it is alive, once per liveness interval; MWRA reassigns a silent node's slots."""

    KIND: ClassVar[str] = "node"
    node: str
    slots: Count  # slots the node offers now
    epoch: Count = 0  # the newest `SlotsAssigned.epoch` the node has applied


class SlotMoveMeasured(Event, frozen=True, kw_only=True, tag="SlotMoveMeasured.v1"):
    """How long one slot was out of work while it switched policy or role (MWRA's cost gate)."""

    KIND: ClassVar[str] = "slots"
    node: str
    slot: Count
    epoch: Count  # the assignment that caused the move
    from_policy: str
    to_policy: str
    seconds: float

    def __post_init__(self) -> None:
        _check_number("seconds", self.seconds)


class LearnerStepTimed(Event, frozen=True, kw_only=True, tag="LearnerStepTimed.v1"):
    """Where a learner step's time went and what was waiting for it, next to its completion.

    MWRA's inputs at the weight-version boundary: how long the learner waited for groups, how
    long it computed, how many samples a step takes, the backlog it left, and the staleness of
    what it consumed.
    """

    KIND: ClassVar[str] = "learner"
    policy: str
    step: Count  # the version this step produced (as in `LearnerStepCompleted.step`)
    wait_s: float  # seconds the learner waited for enough groups before this step
    compute_s: float  # seconds from its inputs being there to its weights published
    samples: Count  # completions consumed by the step
    pending_groups: Count  # groups of this policy still unconsumed after the step
    staleness: float = 0.0  # mean learner versions between sampling and consumption

    def __post_init__(self) -> None:
        for name in ("wait_s", "compute_s", "staleness"):
            _check_number(name, getattr(self, name))


class WeightsPublished(
    Event, frozen=True, kw_only=True, omit_defaults=True, tag="WeightsPublished.v1"
):
    """A learner's weights at one version, bytes in the run's blob store (claim-check).

    Rollout actors on any host load a version by this event: they fetch `blob` (its sha256 is
    checked by the store), load it and check `weights_sha256` (the checksum of the loaded
    model, as in `LearnerStepCompleted`) before sampling with it. One per policy and version;
    version 0 is the start.
    """

    # Fields added after release have defaults and are left out when default
    # (`omit_defaults`), so released events keep their exact bytes.
    KIND: ClassVar[str] = "weights"
    policy: str
    version: Count  # learner steps taken (0: the starting weights)
    weights_sha256: str  # `models.weights_sha256` of the model holding these weights
    blob: BlobRef  # safetensors bytes of the state dict, or a delta against `base`
    # A delta version (`models.delta`): `blob` holds the XOR of this state's bytes with those
    # of full version `base_version`, whose blob is `base`. -1 (and no base): `blob` is full.
    base_version: OptionalCount = -1
    base: BlobRef | None = None
    # sha256 of this version's full safetensors bytes (a delta's reconstruction is checked
    # against it before loading); "" in events written before deltas: `blob.sha256`.
    state_sha256: str = ""

    def __post_init__(self) -> None:
        if (self.base_version >= 0) != (self.base is not None):
            raise ValueError("a delta needs both base_version and base; a full version neither")
        if self.base is not None and not self.state_sha256:
            raise ValueError("a delta version needs state_sha256 (its full state's hash)")


class CheckpointStored(
    Event, frozen=True, kw_only=True, omit_defaults=True, tag="CheckpointStored.v1"
):
    """A learner's full state at `step` in the run's blob store: a learner restarts from it.

    Weights and AdamW state (the GRPO step draws no random numbers, and the data position is
    the log itself: the sequences its steps consumed), so a learner on any host resumes here
    and replays only the log's tail.
    """

    KIND: ClassVar[str] = "checkpoint"
    policy: str
    step: Count
    weights_sha256: str
    weights: BlobRef  # safetensors bytes of the state dict (the same blob as its weights event)
    optimizer: BlobRef  # `torch.save` bytes of the optimizer's state dict (tensors only)
    # when `weights` is a delta (its weights event's `base`, `state_sha256`): its base's blob
    weights_base: BlobRef | None = None
    weights_state_sha256: str = ""


AnyEvent = (
    RunStarted
    | PolicyRegistered
    | RolloutGroupCompleted
    | RewardSummary
    | SuccessVerified
    | LearnerStepCompleted
    | CheckpointSaved
    | ThroughputReported
    | SlotsAssigned
    | NodeJoined
    | NodeLeft
    | RunFinished
    | DeadLettered
    | BlobPointer
    | NodeHeartbeat
    | SlotMoveMeasured
    | LearnerStepTimed
    | WeightsPublished
    | CheckpointStored
)

EVENT_TYPES: tuple[type[Event], ...] = AnyEvent.__args__
KINDS: frozenset[str] = frozenset(t.KIND for t in EVENT_TYPES)


# --------------------------------------------------------------------------- writers

WriterRole = Literal["policy", "node", "coordinator"]

# The role whose user writes each kind of event, declared once: `mrl_actors.see.auth` grants
# publish rights from it, writers resume their subjects from it. `policy`: a policy's own user
# (or the node hosting it), on `mrl.<run>.<kind>.<policy>`; `node`: a node user, on its own
# node subject, its slot moves and MWRA's decisions; `coordinator`: the run's start events
# (admin, or the first node to start the run). A `BlobPointer` (kind `blob`) travels on the
# subject of the event it stands for, so it has no writer of its own.
WRITER_ROLES: dict[str, WriterRole] = {
    "rollout": "policy",
    "reward": "policy",
    "success": "policy",
    "learner": "policy",
    "checkpoint": "policy",
    "throughput": "policy",
    "weights": "policy",
    "deadletter": "policy",
    "node": "node",
    "slots": "node",
    "run": "coordinator",
    "policy": "coordinator",
}


def kinds_written_by(role: WriterRole) -> tuple[str, ...]:
    """The event kinds `role` writes, in declaration order."""
    return tuple(k for k, r in WRITER_ROLES.items() if r == role)


_POLICY_NAMED = (
    PolicyRegistered,
    RolloutGroupCompleted,
    RewardSummary,
    SuccessVerified,
    LearnerStepCompleted,
    CheckpointSaved,
    ThroughputReported,
    LearnerStepTimed,
    WeightsPublished,
    CheckpointStored,
)
_NODE_NAMED = (NodeJoined, NodeLeft, NodeHeartbeat, SlotMoveMeasured)


def identity_error(event: Event) -> str | None:
    """Why `event`'s payload names a writer other than its subject's source; None if it does not.

    Identity comes from the authenticated subject (`source`, the last token, which the server
    lets only its own user write), never from a payload field: a policy or node named in the
    payload must be that source. (`ThroughputReported.node` cannot be bound to a subject, so
    no fold takes liveness from it.)
    """
    if isinstance(event, _POLICY_NAMED) and event.policy != event.source:
        return f"{type(event).__name__} names policy {event.policy!r} on {event.source!r}'s subject"
    if isinstance(event, _NODE_NAMED) and event.node != event.source:
        return f"{type(event).__name__} names node {event.node!r} on {event.source!r}'s subject"
    for ref in _refs(event):  # a policy's blobs are in its own bucket (or the shared, older one)
        if ref is not None and ref.writer not in ("", event.source):
            return (
                f"{type(event).__name__} names a blob in {ref.writer!r}'s bucket on "
                f"{event.source!r}'s subject"
            )
    return None


def _refs(event: Event) -> tuple[BlobRef | None, ...]:
    if isinstance(event, WeightsPublished):
        return (event.blob, event.base)
    if isinstance(event, CheckpointStored):
        return (event.weights, event.optimizer, event.weights_base)
    if isinstance(event, BlobPointer):
        return (event.ref,)
    return ()


# --------------------------------------------------------------------------- upcasts


# Older tags mapped to a function from the old payload (as builtins) to the current one.
# RolloutGroupCompleted.v0 had `model` instead of `policy` and no `tokenizer_fingerprint`.
def _rollout_v0_to_v1(obj: dict[str, Any]) -> dict[str, Any]:
    obj = dict(obj)
    obj["type"] = "RolloutGroupCompleted.v1"
    obj["policy"] = obj.pop("model")
    obj.setdefault("tokenizer_fingerprint", "")
    return obj


UPCASTS: dict[str, Any] = {"RolloutGroupCompleted.v0": _rollout_v0_to_v1}


# --------------------------------------------------------------------------- codec

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[AnyEvent] = msgspec.msgpack.Decoder(AnyEvent)
_raw_decoder = msgspec.msgpack.Decoder()
_KNOWN_TAGS = frozenset(msgspec.inspect.type_info(t).tag for t in EVENT_TYPES)  # type: ignore[attr-defined]


def encode(event: Event) -> bytes:
    """The wire form of an event (msgpack)."""
    return _encoder.encode(event)


def encode_into(event: Event, buf: bytearray) -> None:
    """The wire form of an event written into `buf`, which is resized to fit it exactly.

    A writer that reuses one buffer skips the growing and copying a fresh `bytes` goes through
    for a large event (a rollout group of tens of KiB): a few microseconds instead of tens.
    """
    _encoder.encode_into(event, buf)


def decode(data: bytes, *, max_bytes: int = MAX_EVENT_BYTES) -> AnyEvent:
    """Decode one event, upcasting older versions; raise `EventDecodeError` with the reason.

    Total over bytes: whatever the input, the only exception that leaves is `EventDecodeError`
    (its `kind` attribute is one of the `DeadLettered.error` values), so a reader can always
    dead-letter a message and go on. msgspec reports bad UTF-8 as `UnicodeDecodeError`, checks
    in `__post_init__` as `ValidationError`, deep nesting as `RecursionError`; an upcast can
    fail in any way its old payload allows. All of them end here.
    """
    try:
        size = len(data)
    except TypeError as exc:
        raise _error("garbage", f"payload is a {type(data).__name__}, not bytes") from exc
    if size > max_bytes:
        raise _error("oversized", f"payload is {size} bytes, limit {max_bytes}")
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as exc:
        return _decode_slow(data, exc)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _error("garbage", f"not a msgpack event: {exc}") from exc
    except RecursionError as exc:
        raise _error("garbage", "not a msgpack event: nested too deeply") from exc
    except Exception as exc:  # untrusted bytes: any other failure is still a bad message
        raise _error("garbage", f"not a msgpack event: {type(exc).__name__}: {exc}") from exc


def _decode_slow(data: bytes, first: msgspec.ValidationError) -> AnyEvent:
    """Second look at a payload the typed decoder refused: upcast, or classify the failure."""
    try:
        raw = _raw_decoder.decode(data)
    except Exception as exc:  # the typed decoder parsed it, but stay total
        raise _error("garbage", f"not a msgpack event: {type(exc).__name__}: {exc}") from exc
    tag = raw.get("type") if isinstance(raw, dict) else None
    if isinstance(tag, str) and tag in UPCASTS:
        try:
            return msgspec.convert(UPCASTS[tag](raw), AnyEvent)
        except Exception as exc:  # an old payload of any shape: missing keys, wrong types
            raise _error("schema", f"upcast of {tag} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(tag, str) or tag not in _KNOWN_TAGS:
        raise _error("unknown_tag", f"unknown event tag {_short(tag)}") from first
    kind = "non_finite" if "must be finite" in str(first) else "schema"
    raise _error(kind, f"{tag}: {first}") from first


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error(kind: str, message: str) -> EventDecodeError:
    err = EventDecodeError(message)
    err.kind = kind  # type: ignore[attr-defined]
    return err


def json_schema() -> dict[str, Any]:
    """JSON Schema of every current event (what `schemas/events.schema.json` holds)."""
    return msgspec.json.schema(AnyEvent)


_PACKED = {
    "token_ids": unpack_i32,
    "prompt_token_ids": unpack_i32,
    "logprobs": unpack_f32,
    "rewards": unpack_f32,
}


def to_builtins(event: Event) -> Any:
    """JSON-ready form: packed arrays become lists of numbers, other bytes become hex."""
    return _unpack_for_json(msgspec.to_builtins(event, builtin_types=(bytes,)))


def _unpack_for_json(obj: Any, key: str = "") -> Any:
    if isinstance(obj, dict):
        return {k: _unpack_for_json(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack_for_json(v, key) for v in obj]
    if isinstance(obj, bytes):
        unpack = _PACKED.get(key)
        return unpack(obj).tolist() if unpack else obj.hex()
    return obj
