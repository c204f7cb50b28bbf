"""Benchmark the THL against a MinED-style DTW aligner and a pure-Python two-pointer aligner.

    python tools/bench_thl.py [--models ../shared/models] [--seqs 1000] [--dtw-seqs 3]

For each ordered pair of real tokenizers: the peer's "sampled" ids are its own encoding of a
mixed-corpus document (prose, code, math, several scripts, emoji; generated here, nothing is
downloaded) cut to 512 tokens, EOS excluded. It measures, in one process:

- end to end: `transfer_many` (bytes, receiver encoding, alignment, log-prob/mask/advantage/
  reward transfer, residuals) in batches, sequences per second; and, for scale, the receiver's
  own `encode_batch_fast` of the same texts alone (the floor no THL can go under);
- alignment alone, given both sides' byte lengths: `align.align` over the batch, the two-pointer
  aligner per sequence, and the DTW aligner on `--dtw-seqs` sequences (its per-sequence rate is
  extrapolated from that subset, as the table says);

then prints one table per pair with the residual figures.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from mrl_actors.thl import Vocab, aggregate, load_vocab, transfer_many  # noqa: E402
from mrl_actors.thl.align import align  # noqa: E402
from mrl_actors.thl.baselines import dtw_align, two_pointer_spans  # noqa: E402
from mrl_actors.thl.residual import format_table  # noqa: E402

MODELS = ("gpt2", "llama2-7b", "mistral-7b", "qwen1.5-1.8b")

PROSE = [
    "The committee met on Tuesday to review the proposal, and after a long discussion it agreed "
    "that the budget for the next quarter should be reduced by twelve percent.",
    "She walked along the river until the lights of the town disappeared behind the hills; "
    'then she sat down, opened her notebook, and wrote: "Nothing here is what it seems."',
    "Reinforcement learning from verifiable rewards trains a policy to produce answers that a "
    "checker accepts, which avoids the cost of a learned reward model.",
    "In 1969, two astronauts landed on the Moon — a distance of about 384,400 km — while a third "
    "orbited above them in the command module.",
    "Don't forget: the meeting's at 9:30 a.m., room B-12 (second floor), and we're bringing "
    "coffee & pastries for everyone!!",
]
CODE = [
    "def fib(n: int) -> int:\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
    "    return a\n",
    "for (int i = 0; i < n; ++i) {\n\tif (arr[i] > max) { max = arr[i]; }\n}\n",
    "SELECT name, COUNT(*) AS n FROM users WHERE age >= 18 GROUP BY name ORDER BY n DESC;\n",
    "const sum = xs.reduce((acc, x) => acc + x, 0);\nconsole.log(`total: ${sum}`);\n",
    '    if __name__ == "__main__":\n        main(sys.argv[1:])  # entry point\n',
]
MATH = [
    "Let $f(x) = x^2 + 3x - 4$. Then $f'(x) = 2x + 3$, and $f(x) = 0$ when $x = 1$ or $x = -4$.",
    "We have \\frac{a}{b} + \\frac{c}{d} = \\frac{ad + bc}{bd}, so the answer is \\boxed{17}.",
    "The sum $\\sum_{k=1}^{n} k^2 = \\frac{n(n+1)(2n+1)}{6}$ holds for all $n \\ge 1$.",
    "Solve 3x + 7 = 22: subtract 7 to get 3x = 15, then x = 5. Check: 3*5 + 7 = 22. ✓",
    "∀ε>0 ∃δ>0: |x−a|<δ ⇒ |f(x)−f(a)|<ε, hence f is continuous at a; ∫₀¹ x² dx = 1/3.",
]
SCRIPTS = [
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "東京は日本の首都であり、世界最大の都市圏の一つです。ひらがなとカタカナも使います。",
    "Москва — столица России, крупнейший по численности населения город страны.",
    "القاهرة هي عاصمة جمهورية مصر العربية وأكبر مدنها.",
    "नई दिल्ली भारत की राजधानी है और यह एक बड़ा शहर है।",
    "서울은 대한민국의 수도이며 가장 큰 도시입니다.",
    "Ελληνικά: η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "Emoji: 🙂🚀🎉 👩‍💻 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 and café, naïve, Zürich.",
]
FRAGMENTS = PROSE + CODE + MATH + SCRIPTS


def make_corpus(n_docs: int, seed: int = 0) -> list[str]:
    """Mixed documents of ~40 fragments each (long enough for 512 tokens in every tokenizer)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        parts = [rng.choice(FRAGMENTS) for _ in range(40)]
        seps = [rng.choice([" ", "\n", "\n\n", "  "]) for _ in parts]
        docs.append("".join(p + s for p, s in zip(parts, seps, strict=True)))
    return docs


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def time_paired(
    src: Vocab,
    dst: Vocab,
    ids: list[np.ndarray],
    lps: list[np.ndarray],
    masks: list[np.ndarray],
    texts: list[str],
    batch: int,
    repeats: int,
) -> tuple[list[float], list[float], list[Any]]:
    """Seconds per repeat of the THL end to end and of the receiver's encode alone, paired.

    One untimed warm-up batch of each first (byte and hash tables, caches, the allocator); then
    each repeat times both arms batch by batch, their order alternating, so that a machine whose
    load drifts slows both alike. Every `Transfer` is read inside the clock, as a consumer would.
    """
    spans = [(k, min(k + batch, len(ids))) for k in range(0, len(ids), batch)]

    def thl(lo: int, hi: int) -> list[Any]:
        got = transfer_many(
            src,
            dst,
            ids[lo:hi],
            logprobs=lps[lo:hi],
            loss_mask=masks[lo:hi],
            advantages=[0.5] * (hi - lo),
        )
        return list(got)

    def encode(lo: int, hi: int) -> None:
        dst.continuation.encode_batch_fast(texts[lo:hi], add_special_tokens=False)

    thl(*spans[0])
    encode(*spans[0])
    e2e_s: list[float] = []
    enc_s: list[float] = []
    out: list[Any] = []
    for rep in range(repeats):
        t_e2e = t_enc = 0.0
        out = []
        for j, (lo, hi) in enumerate(spans):
            for arm in ("thl", "enc") if (rep + j) % 2 == 0 else ("enc", "thl"):
                t0 = time.perf_counter()
                if arm == "thl":
                    got = thl(lo, hi)
                    t_e2e += time.perf_counter() - t0
                    out.extend(got)
                else:
                    encode(lo, hi)
                    t_enc += time.perf_counter() - t0
        e2e_s.append(t_e2e)
        enc_s.append(t_enc)
    return e2e_s, enc_s, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=str(ROOT.parent / "shared" / "models"))
    ap.add_argument("--seqs", type=int, default=1000, help="sequences per pair")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--dtw-seqs", type=int, default=2, help="DTW runs on this many sequences")
    ap.add_argument("--repeats", type=int, default=3, help="paired repeats (median taken)")
    ap.add_argument("--pairs", default="", help="comma list like gpt2:qwen1.5-1.8b (default: all)")
    args = ap.parse_args()
    docs = make_corpus(args.seqs, seed=0)
    pairs = [(a, b) for a in MODELS for b in MODELS if a != b]
    if args.pairs:
        pairs = [(p.split(":")[0], p.split(":")[1]) for p in args.pairs.split(",")]
    vocabs = {m: load_vocab(Path(args.models) / m) for m in sorted({x for p in pairs for x in p})}
    print(
        f"# THL benchmark: {args.seqs} sequences of {args.tokens} peer tokens per pair, "
        f"batch {args.batch}, cpu count {os.cpu_count()}, load avg {os.getloadavg()[0]:.2f}"
    )
    summary: list[str] = []
    failed: list[str] = []
    for a, b in pairs:
        src, dst = vocabs[a], vocabs[b]
        encs = src.continuation.encode_batch_fast(docs, add_special_tokens=False)
        ids = [np.asarray(e.ids[: args.tokens], dtype=np.int32) for e in encs]
        rng = np.random.default_rng(0)
        lps: list[np.ndarray] = [-np.asarray(rng.exponential(1.0, size=x.shape[0])) for x in ids]
        masks = [np.ones(x.shape[0], dtype=bool) for x in ids]
        # The receiver's own batch encoding of the same texts: the floor under the end to end.
        texts = [src.ids_to_bytes(x).decode("utf-8", "ignore") for x in ids]
        e2e_s, enc_s, out = time_paired(src, dst, ids, lps, masks, texts, args.batch, args.repeats)
        # What was measured happened: every sequence came out, with its traces.
        if len(out) != len(ids) or any(t.logprobs is None for t in out):
            failed.append(f"{a} -> {b}: {len(out)} transfers for {len(ids)} sequences")
        ratios = [enc / e2e for enc, e2e in zip(enc_s, e2e_s, strict=True)]  # e2e rate / encode
        ratio = statistics.median(ratios)
        e2e = statistics.median(e2e_s)
        t_enc = statistics.median(enc_s)
        drift = max(
            abs(float(t.logprobs.sum()) - float(lp.sum())) / max(1.0, abs(float(lp.sum())))
            for t, lp in zip(out, lps, strict=True)
            if t.logprobs is not None
        )
        # Alignment alone, from byte lengths on both sides.
        src_lens = [src.lengths[x] for x in ids]
        dst_lens = [dst.lengths[t.ids[t.ids != dst.eos_id]] for t in out]
        totals = np.asarray([int(x.sum()) for x in src_lens])
        base = np.concatenate([[0], np.cumsum(totals + 1)[:-1]])
        src_e = np.concatenate([base[i] + np.cumsum(x) for i, x in enumerate(src_lens)])
        dst_e = np.concatenate(
            [base[i] + np.minimum(np.cumsum(x), totals[i]) for i, x in enumerate(dst_lens)]
        )
        t0 = time.perf_counter()
        align(src_e, dst_e, base, base + totals)
        t_align = time.perf_counter() - t0
        sl = [x.tolist() for x in src_lens]
        dl = [x.tolist() for x in dst_lens]
        t0 = time.perf_counter()
        for x, y in zip(sl, dl, strict=True):
            two_pointer_spans(x, y)
        t_two = time.perf_counter() - t0
        n_dtw = max(1, min(args.dtw_seqs, len(ids)))
        st = [[src.token_bytes(int(t)).decode("utf-8", "replace") for t in x] for x in ids[:n_dtw]]
        dt = [
            [dst.token_bytes(int(t)).decode("utf-8", "replace") for t in o.ids] for o in out[:n_dtw]
        ]
        t0 = time.perf_counter()
        for x, y in zip(st, dt, strict=True):
            dtw_align(x, y)
        t_dtw = time.perf_counter() - t0
        agg = aggregate([t.residual for t in out], [t.rejected for t in out])
        r_align = rate(len(ids), t_align)
        r_dtw = rate(n_dtw, t_dtw)
        print(f"\n## {a} -> {b}")
        print(f"| {'method':<44} | {'seq/s':>12} | {'x DTW':>10} |")
        print(f"|{'-' * 46}|{'-' * 14}|{'-' * 12}|")
        verdict = "yes" if ratio >= 0.8 else "NO"
        print(
            f"end to end / receiver encode: median {ratio:.2f} over {len(ratios)} paired repeats "
            f"(min {min(ratios):.2f}, max {max(ratios):.2f}); >= 0.8: {verdict}"
        )
        rows = [
            ("THL end to end (incl. receiver encode)", rate(len(ids), e2e)),
            ("  of which: receiver encode_batch alone", rate(len(ids), t_enc)),
            ("THL alignment alone (numpy, batched)", r_align),
            ("two-pointer alignment (pure Python)", rate(len(ids), t_two)),
            (f"MinED-style DTW (on {n_dtw} seqs, extrapolated)", r_dtw),
        ]
        for name, r in rows:
            print(f"| {name:<44} | {r:>12.1f} | {r / r_dtw:>10.0f} |")
        print(f"max relative log-prob sum drift: {drift:.1e}")
        print(format_table(agg))
        summary.append(
            f"| {a + ' -> ' + b:<28} | {rows[0][1]:>7.0f} | {rows[1][1]:>7.0f} | {ratio:>5.2f} "
            f"| {min(ratios):.2f}-{max(ratios):.2f} | {r_align:>7.0f} "
            f"| {rows[3][1]:>7.0f} | {r_dtw:>5.1f} | {rows[0][1] / r_dtw:>6.0f} "
            f"| {agg['exact_share']:>5.3f} | {agg['one_to_one_share']:>5.3f} "
            f"| {agg['nm_byte_share']:>5.3f} | {agg['longest_span_bytes']:>4.0f} |"
        )
    print(f"\n## Summary (seq/s; load avg now {os.getloadavg()[0]:.2f}; DTW extrapolated)")
    print(
        f"| {'pair':<28} | {'e2e':>7} | {'encode':>7} | {'ratio':>5} | {'spread':>9} "
        f"| {'align':>7} | {'2-ptr':>7} | {'DTW':>5} "
        f"| {'e2e/DTW':>6} | {'exact':>5} | {'1:1':>5} | {'n:m B':>5} | {'span':>4} |"
    )
    for line in summary:
        print(line)
    if failed:
        print("\nFAILED: the benchmark did not measure what it says:\n" + "\n".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
