"""The `[weights]` table of a spec: how a learner's versions travel to its rollout actors.

Imports nothing heavy (the spec module imports it). What each transport costs, measured, is in
docs/weights.md.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from mrl_actors.checks import check_int, fail

Transport = Literal["object", "dir", "mmap"]


class WeightsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where weights versions are stored, how, and for how long."""

    # "object": the run's JetStream object store (replicated with the log; any host reads it).
    # "dir": files under `dir`, a directory every host of the run mounts (NFS, a cluster FS).
    # "mmap": files under `dir` (default `<run dir>/weights`) on one host, which every local
    # rollout actor memory-maps: one copy in the page cache, however many readers.
    store: Transport = "object"
    # "dir": required, absolute, the same path on every host; "mmap": default <run dir>/weights
    dir: str = ""
    # Every version is a delta against the last full one (XOR of the bytes, compressed), with a
    # full version every `full_every` versions (version 0 is always full); 1: every version
    # full. A reader loads at most two blobs, so a late joiner loads in bounded time.
    full_every: int = 1
    # Versions kept in the store: the newest `keep`, version 0 (a restarted learner on another
    # host starts from it), the newest checkpoint's, and the full versions those need. 0 keeps
    # every version. A rollout actor at most `run.max_staleness` versions behind still finds
    # its own, so keep it above that.
    keep: int = 0

    def __post_init__(self) -> None:
        check_int(self, "full_every", 1, 1_000_000)
        check_int(self, "keep", 0, 1_000_000)
        if self.store == "dir" and not self.dir:
            fail("dir", "a directory every host of the run mounts (store = 'dir')", self.dir)
        if self.dir and not self.dir.startswith("/"):
            fail("dir", "an absolute path (the same on every host)", self.dir)
