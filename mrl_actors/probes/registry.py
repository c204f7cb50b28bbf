"""Every sharing probe, declared once: what it reads from peers, its options, its function.

A probe is a module with a pure `build(prompts, ctx, options) -> ProbeBatch` (see `common.py`)
and one entry here; everything else is derived from this table: the names a spec's `run.probe`
and the CLI's `--probe` accept, the `[probes.<name>]` table of a spec (`ProbesConfig`), which
peer events an actor folds and waits for, and the dispatch of `build_batch`. Imports without
torch (the builders are named, and imported on first use), so specs load without it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from mrl_actors.checks import fail
from mrl_actors.probes.config import PRPConfig, SGTConfig, SharingConfig, SharingOnly, XGRPOConfig


@dataclass(frozen=True)
class Probe:
    peer_kind: str | None  # the event KIND it reads from peers (None: it shares nothing)
    options: type[msgspec.Struct] | None  # its `[probes.<name>]` table, if it has options
    build: str  # "module:function" of its `build(prompts, ctx[, options])`
    summary: str  # one line, for `--help` and the docs


PROBES: dict[str, Probe] = {
    "independent": Probe(
        None, None, "mrl_actors.probes.independent:build", "plain GRPO, nothing shared"
    ),
    "prp": Probe(
        "rollout", PRPConfig, "mrl_actors.probes.prp:build", "peer rollouts join the group"
    ),
    "xgrpo": Probe(
        "reward", XGRPOConfig, "mrl_actors.probes.xgrpo:build", "pooled rewards set the baseline"
    ),
    "sgt": Probe(
        "success", SGTConfig, "mrl_actors.probes.sgt:build", "verified successes rescue failures"
    ),
}

PROBE_NAMES: tuple[str, ...] = tuple(PROBES)
PEER_KIND: dict[str, str | None] = {name: p.peer_kind for name, p in PROBES.items()}


def builder(name: str) -> Callable[..., Any]:
    """The probe's `build` function (imports its module, and so torch, on first use)."""
    module, _, func = PROBES[name].build.partition(":")
    fn: Callable[..., Any] = getattr(importlib.import_module(module), func)
    return fn


def _options_for(self: Any, probe: str) -> dict[str, object]:
    """The resolved options that apply to `probe`, for `PolicyRegistered.options`."""
    out: dict[str, object] = {"sharing": msgspec.to_builtins(self.sharing)}
    if PROBES[probe].options is not None:
        out[probe] = msgspec.to_builtins(getattr(self, probe))
    return out


if TYPE_CHECKING:

    class ProbesConfig(SharingOnly, frozen=True, kw_only=True):
        """`[probes]`: `sharing`, and `[probes.<name>]` for each probe with options."""

        def __init__(self, *, sharing: SharingConfig = ..., **options: msgspec.Struct) -> None: ...

        def options_for(self, probe: str) -> dict[str, object]: ...

        def __getattr__(self, probe: str) -> Any: ...

else:
    ProbesConfig = msgspec.defstruct(
        "ProbesConfig",
        [(n, p.options, p.options()) for n, p in PROBES.items() if p.options is not None],
        bases=(SharingOnly,),
        namespace={"options_for": _options_for, "__doc__": "`[probes]`: every probe's options."},
        module=__name__,
        frozen=True,
        kw_only=True,
        forbid_unknown_fields=True,
    )


def check_probe(field: str, name: str) -> str:
    """`name` if it is a registered probe, else a `ConfigError` listing them."""
    if name not in PROBES:
        fail(field, f"one of {', '.join(PROBES)}", name)
    return name
