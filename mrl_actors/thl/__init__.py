"""THL, the tokenizer heterogeneity layer: a peer's rollout in the receiver's vocabulary.

Modules, in the order data flows through them:

- `bytes_table`: `Vocab`, `load_vocab` and `with_roles`, the exact bytes of every token id, cached
  by fingerprint;
- `traces`: `transfer` / `transfer_many` (peer ids and traces -> receiver ids and traces) and
  `render_prompt` (a prompt in the receiver's own format);
- `batch`: the fast path of `transfer_many` over flat arrays (input checks; `flat` holds its two
  halves, before and after the receiver's encoding) and `lazy` (the batch's `Transfer`s, made
  when read); `exact` is a token-hash exactness check the fast path no longer uses (one byte
  comparison measured cheaper);
- `align`: co-terminating byte spans for a whole batch, vectorized;
- `residual`: `Residual` per sequence, `ResidualBudget`, `aggregate` for the run report;
- `baselines`: a MinED-style edit-distance DTW aligner and a pure-Python two-pointer aligner, for
  the benchmark (`tools/bench_thl.py`) and for cross-checking in tests.

See DESIGN.md section 4, decision 4, and the README section on the THL.
"""

from mrl_actors.thl.bytes_table import Vocab, load_vocab, with_roles
from mrl_actors.thl.residual import Residual, ResidualBudget, aggregate
from mrl_actors.thl.traces import Transfer, render_prompt, transfer, transfer_many

__all__ = [
    "Residual",
    "ResidualBudget",
    "Transfer",
    "Vocab",
    "aggregate",
    "load_vocab",
    "render_prompt",
    "transfer",
    "transfer_many",
    "with_roles",
]
