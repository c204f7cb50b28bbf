"""`LogConfig`: a run's stream settings (limits, replication, blob store), apart from the code
that opens the stream, so that specs, tools and the server config can name them without nats."""

from __future__ import annotations

from typing import Literal

import msgspec

from mrl_actors.events import MAX_EVENT_BYTES


class LogConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Stream settings of a run; every field is recorded nowhere secret (no credentials here)."""

    prefix: str = "mrl"  # first subject token
    replicas: int = 1  # 3 on a cluster: survives one server loss, costs 3x disk and a RAFT round
    storage: Literal["file", "memory"] = "file"
    # Size limits, set when the stream is created (and raised on a later open that asks for
    # more). A full stream refuses new events (discard "new"): it never drops old ones, which
    # a resume replays. max_bytes also bounds the blob buckets, separately: each policy's
    # bucket holds an equal share of it.
    max_age_s: float = 0.0  # 0 keeps events forever (a run's log is its record)
    max_bytes: int = -1  # -1: unlimited
    max_msgs: int = -1
    duplicate_window_s: float = 120.0  # a retried publish within this window is stored once
    blob_store: Literal["object", "zarr"] = "object"
    blob_dir: str = ""  # directory of the zarr blob store
    inline_limit: int = 0  # bytes; 0 = the server's max_payload minus 8 KiB of headroom
    max_event_bytes: int = MAX_EVENT_BYTES  # larger events (inline or in a blob) are refused
    ack_timeout_s: float = 30.0  # how long a publish may wait for its ack
