#!/usr/bin/env python3
"""PyTorch anchor for bench/embedding: the n-gram embedding forward in PyTorch at bench_embedding's shape.

Run by hand (never by ctest), with PyPI torch, from the repository root:

    python bench/anchors/torch_embedding.py                 # every shape, every path; JSON lines on stdout
    python bench/anchors/torch_embedding.py --shapes decode_B1,prefill_4x1024 --paths sglang,sglang_fp32

Shape (bench/embedding_setup.hpp): LongCat-Flash-Lite's H = 3072, N = 4, K = 4 (T = 12 sub-tables), d = 256,
V = 131072, eos = 2, bf16 sub-tables of m_i = 2^20 + 2i + 1 rows plus the bf16 base table [V x H] (7.2 GB in all,
random values). Batches: decode_B{1,16,64,256} (B sequences of one new token with 3 look-back tokens each) and
prefill_4x1024 (4 sequences of 1024 tokens, no look-back). Every call takes the next batch of a pool of >= 32768
random tokens (~3% EOS, fixed seed), so, as in the C++ benchmark, the rows a call reads are not in a cache.

Paths, each the whole forward from token windows to the [n x H] embedding, hash included (in torch ops, SPEC §2:
look-back 0 before the stream start and at or before an EOS strictly before the token):
  official  the HF `NgramEmbedding` module's ops (meituan-longcat's modeling_longcat_ngram.py, as ported op for op in
            mlx-lm's longcat_flash_ngram): the look-back shifted once per distance, then for each sub-table i its ids
            (multiply-add of the shifted tokens with V^j mod m_i, then mod m_i), its nn.Embedding lookup and its
            nn.Linear post_proj [H x d], added into the running sum that starts at the base row; finally / (1 + T).
  sglang    SGLang's `NgramEmbedding.forward` (sgl-project/sglang, python/sglang/srt/layers/n_gram_embedding.py;
            vLLM's `embed_batched` in vllm/model_executor/models/longcat_flash_ngram.py is the same): all T ids at
            once ([n x T] ids into ONE concatenated table, offset by the exclusive sums of m_i; SGLang computes them
            in its compute_n_gram_ids kernel, here the same integer math in torch ops), one lookup of [T x n] ids,
            one torch.bmm with the stacked projections [T x d x H] into rows 1..T of a [1+T x n x H] buffer whose
            row 0 is the base row, then .mean(0).
  Both in bf16 as the modules run (bf16 weights, bf16 activations), and each as `{path}_fp32`: the same ops with the
  bf16 tables, the looked-up rows widened to fp32 and the projections widened once at load. On a CPU without
  AVX512-BF16 / AMX, PyTorch's bf16 matmul falls back to a scalar kernel (pytorch/pytorch#146508: 40-500x slower
  than fp32 on AVX2 machines), so there the fp32 variants are what a PyTorch user would run, and the fair anchor.
The official path's per-table nn.Embedding weights are views into the concatenated table, so the tables are held
once (7.2 GB).

Timing: torch.set_num_threads(os.cpu_count()) (or --threads), torch.inference_mode(); per path and shape a warm-up of
>= 0.2 s, then the median over repetitions (7; 3 when a call takes over 0.5 s; 1 over 5 s) of back-to-back calls
taking >= 0.1 s each. Before timing, each shape checks: the torch hash equals
tests/reference/ngram_embedding_reference.py's exact ids on its first sequences, and every timed path's output is
within bf16 rounding of an fp32 forward.

A path whose call the check estimates at over --max-call-seconds (default 20) is not timed: bf16 on an AVX2 CPU, where
SGLang's bf16 prefill takes minutes a call.

Output: one JSON object per line on stdout,
    {"path": "official", "shape": "decode_B1", "tokens": 1, "tokens_per_second": ..., "seconds_per_call": ...,
     "repetitions": 7, "threads": 2, "torch": "2.15.0"}
or, for a path not timed, {"path": ..., "shape": ..., "tokens": ..., "tokens_per_second": null, "skipped": "..."};
progress on stderr.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "reference"))
import ngram_embedding_reference as reference  # noqa: E402  (exact SPEC §2 ids, to check the torch hash)

# bench/embedding_setup.hpp's bench_config(): Lite with m_base = 2^20.
V, H, N, K, EOS = 131072, 3072, 4, 4, 2
T = K * (N - 1)
D = H // T
M_BASE = 1 << 20
CONFIG = {"vocab_size": V, "hidden_size": H, "emb_neighbor_num": N, "emb_split_num": K, "eos_token_id": EOS,
          "m_base": M_BASE}
MODULI = reference.moduli(CONFIG)
# (name, sequences, new tokens per sequence, look-back tokens per sequence), as embedding_setup.hpp's `shapes`.
SHAPES = [("decode_B1", 1, 1, 3), ("decode_B16", 16, 1, 3), ("decode_B64", 64, 1, 3), ("decode_B256", 256, 1, 3),
          ("prefill_4x1024", 4, 1024, 0)]
POOL_TOKENS = 32768
PATHS = ("official", "sglang", "official_fp32", "sglang_fp32")


def log(message):
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Hash (SPEC §2) in torch ops, on [B, L] windows: each row one sequence from its stream start (look-back included).
# ----------------------------------------------------------------------------------------------------------------

def powers():
    """[T, N] int64: V^j mod m_i for j < n_i (order of table i), else 0."""
    table = torch.zeros(T, N, dtype=torch.int64)
    for i, m in enumerate(MODULI):
        w = 1
        table[i, 0] = 1
        for j in range(1, i // K + 2):
            w = w * V % m
            table[i, j] = w
    return table


def shifted_lookback(windows):
    """[N-1, B, L]: the token j = 1..N-1 positions back, 0 before the row's start and at or before an EOS strictly
    before the position (the official module's EOS-aware shift)."""
    B, L = windows.shape
    pos = torch.arange(L).expand(B, L)
    eos_at = torch.where(windows == EOS, pos, torch.full_like(pos, -1))
    cut = torch.cat([torch.full((B, 1), -1, dtype=torch.int64), torch.cummax(eos_at, dim=1).values[:, :-1]], dim=1)
    shifted = []
    for j in range(1, N):
        back = F.pad(windows[:, :-j], (j, 0)) if j < L else torch.zeros_like(windows)
        shifted.append(torch.where(pos - j > cut, back, torch.zeros_like(back)))
    return torch.stack(shifted)


class Model:
    """Random bf16 tables and projections at the bench shape, and the two forwards."""

    def __init__(self, seed):
        generator = torch.Generator().manual_seed(seed)
        self.offsets = [0]
        for m in MODULI:
            self.offsets.append(self.offsets[-1] + m)
        # Tables: one concatenated [sum m_i x d] (SGLang's oe_embeder), filled by tiling a random block (random
        # values everywhere, at memory speed rather than the generator's); the official path's E_i are views.
        self.tables = torch.empty(self.offsets[-1], D, dtype=torch.bfloat16)
        block = torch.empty(1 << 16, D).uniform_(-1, 1, generator=generator).to(torch.bfloat16)
        for start in range(0, self.offsets[-1], block.shape[0]):
            rows = min(block.shape[0], self.offsets[-1] - start)
            self.tables[start:start + rows].copy_(block[:rows])
        self.embedders = [self.tables[self.offsets[i]:self.offsets[i + 1]] for i in range(T)]
        self.base = torch.empty(V, H).uniform_(-1, 1, generator=generator).to(torch.bfloat16)
        scale = 1 / math.sqrt(T * D)
        post_projs = [torch.empty(H, D).uniform_(-scale, scale, generator=generator).to(torch.bfloat16)
                      for _ in range(T)]  # nn.Linear(d, H).weight
        # The _fp32 paths' weights: the same bf16 values widened once, at load.
        self.post_projs = {dtype: [w.to(dtype) for w in post_projs] for dtype in (torch.bfloat16, torch.float32)}
        self.oe_projection = {dtype: torch.stack([w.t() for w in ws]).contiguous()  # [T, d, H]
                              for dtype, ws in self.post_projs.items()}
        self.powers = powers()
        self.moduli = torch.tensor(MODULI, dtype=torch.int64)
        self.exclusive_sums = torch.tensor(self.offsets[:-1], dtype=torch.int64)
        self.vocab_mods = [[int(w) for w in self.powers[i, 1:i // K + 2]] for i in range(T)]

    def official(self, windows, length, dtype):
        """windows [B, C+L] -> [B*L, H] in `dtype`, the HF module's op sequence."""
        shifted = shifted_lookback(windows)
        tokens = windows[:, -length:]
        post_projs = self.post_projs[dtype]
        x = F.embedding(tokens, self.base).to(dtype)
        for i in range(T):
            ngram_ids = windows
            for j, w in enumerate(self.vocab_mods[i]):
                ngram_ids = ngram_ids + shifted[j] * w
            ids = (ngram_ids % MODULI[i])[:, -length:]
            x = x + F.linear(F.embedding(ids, self.embedders[i]).to(dtype), post_projs[i])
        return (x / (1 + T)).reshape(-1, H)

    def global_ids(self, windows, length):
        """[B*L, T] ids into the concatenated table, as SGLang's compute_n_gram_ids writes them."""
        shifted = shifted_lookback(windows)[:, :, -length:]  # [N-1, B, L]
        acc = windows[:, -length:].unsqueeze(-1) * self.powers[:, 0]
        for j in range(1, N):
            acc = acc + shifted[j - 1].unsqueeze(-1) * self.powers[:, j]
        return (acc % self.moduli + self.exclusive_sums).reshape(-1, T)

    def sglang(self, windows, length, dtype):
        """windows [B, C+L] -> [B*L, H] in `dtype`, SGLang's op sequence."""
        ids = self.global_ids(windows, length)
        tokens = windows[:, -length:].reshape(-1)
        hidden = torch.empty(T + 1, tokens.shape[0], H, dtype=dtype)
        hidden[0] = F.embedding(tokens, self.base)
        rows = F.embedding(ids.permute(1, 0).contiguous(), self.tables).to(dtype)  # [T, n, d]
        torch.bmm(rows, self.oe_projection[dtype], out=hidden[1:])
        return hidden.mean(dim=0)

    def forward(self, path, windows, length):
        module, _, compute = path.partition("_")
        return getattr(self, module)(windows, length, torch.float32 if compute == "fp32" else torch.bfloat16)

    def reference(self, windows, length):
        """fp32 forward of the same stored values (the check's yardstick)."""
        ids = self.global_ids(windows, length)
        tokens = windows[:, -length:].reshape(-1)
        out = F.embedding(tokens, self.base).float()
        for i in range(T):
            out += F.embedding(ids[:, i], self.tables).float() @ self.post_projs[torch.float32][i].t()
        return out / (1 + T)


# ----------------------------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------------------------

def random_windows(sequences, width, seed):
    """[sequences, width] random tokens in [eos+1, V) with ~3% EOS (0, the look-back padding value, never occurs)."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(EOS + 1, V, (sequences, width), generator=generator)
    eos = torch.rand(sequences, width, generator=generator) < 0.03
    return torch.where(eos, torch.full_like(tokens, EOS), tokens)


def batches(shape, seed):
    """The pool of one shape as a list of [B, C+L] window tensors."""
    _, sequences, length, context = shape
    count = max(1, -(-POOL_TOKENS // (sequences * length)))
    pool = random_windows(sequences * count, context + length, seed)
    return [pool[b * sequences:(b + 1) * sequences].contiguous() for b in range(count)]


def check(model, shape, pool, paths):
    """Checks the hash and every path; returns each path's estimated seconds per call."""
    name, sequences, length, context = shape
    # The hash: exact ids of the reference on the first sequences (each row is one stream, look-back included).
    first = pool[0][:4]
    ids = model.global_ids(first, length) - model.exclusive_sums
    expected = []
    for row in first.tolist():
        expected.extend(reference.stream_ids(CONFIG, row, len(row) - length))
    if ids.tolist() != expected:
        raise SystemExit(f"{name}: the torch hash differs from tests/reference/ngram_embedding_reference.py")
    # The forwards: within bf16 rounding of an fp32 forward, on at most 256 tokens of the first batch (a prefill's
    # first 256 positions are a prefill of their own: no id depends on a later token).
    checked = min(length, 256)
    windows = pool[0][:max(1, 256 // checked), :context + checked]
    truth = model.reference(windows, checked)
    largest = truth.abs().max().item()
    seconds = {}
    for path in paths:
        start = time.perf_counter()
        out = model.forward(path, windows, checked).float()
        seconds[path] = (time.perf_counter() - start) * sequences * length / (windows.shape[0] * checked)
        error = (out - truth).abs().max().item()
        if not math.isfinite(error) or error > 2e-2 * largest:
            raise SystemExit(f"{name}: {path} differs from the fp32 forward by {error} (max |value| {largest})")
    return seconds  # per call of the shape, estimated from the check's (a first call: an overestimate)


def median_seconds(run):
    """Median seconds per call (see the top of the file)."""
    warm = 0.0
    while warm < 0.2:
        start = time.perf_counter()
        run()
        once = time.perf_counter() - start
        warm += once
    per_repetition = max(1, math.ceil(0.1 / once))
    repetitions = []
    for _ in range(7 if once < 0.5 else 3 if once < 5 else 1):
        start = time.perf_counter()
        for _ in range(per_repetition):
            run()
        repetitions.append((time.perf_counter() - start) / per_repetition)
    return statistics.median(repetitions), len(repetitions)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default=",".join(s[0] for s in SHAPES), help="comma-separated shape names")
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated, of " + ", ".join(PATHS))
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: os.cpu_count())")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--max-call-seconds", type=float, default=20,
                        help="skip a path whose call is estimated (from the check) to take longer (default 20)")
    args = parser.parse_args()
    wanted = args.shapes.split(",")
    paths = args.paths.split(",")
    unknown = [s for s in wanted if s not in [shape[0] for shape in SHAPES]] + [p for p in paths if p not in PATHS]
    if unknown:
        parser.error(f"unknown shape or path: {', '.join(unknown)}")

    threads = args.threads
    torch.set_num_threads(threads)
    with torch.inference_mode():
        start = time.perf_counter()
        model = Model(args.seed)
        log(f"tables built in {time.perf_counter() - start:.1f} s ({threads} threads, torch {torch.__version__})")
        for index, shape in enumerate(SHAPES):
            name, sequences, length, _ = shape
            if name not in wanted:
                continue
            pool = batches(shape, args.seed + 1 + index)
            estimates = check(model, shape, pool, paths)
            for path in paths:
                record = {"path": path, "shape": name, "tokens": sequences * length}
                if estimates[path] > args.max_call_seconds:
                    print(json.dumps({**record, "tokens_per_second": None,
                                      "skipped": f"estimated {estimates[path]:.0f} s per call"}), flush=True)
                    log(f"{name:16s} {path:13s} skipped: estimated {estimates[path]:.0f} s per call")
                    continue
                cursor = [0]

                def run():
                    windows = pool[cursor[0]]
                    cursor[0] = (cursor[0] + 1) % len(pool)
                    model.forward(path, windows, length)

                seconds, repetitions = median_seconds(run)
                tokens = sequences * length
                print(json.dumps({**record, "tokens_per_second": tokens / seconds, "seconds_per_call": seconds,
                                  "repetitions": repetitions, "threads": threads,
                                  "torch": torch.__version__.split("+")[0]}), flush=True)
                log(f"{name:16s} {path:13s} {tokens / seconds:12.1f} tokens/s")


if __name__ == "__main__":
    main()
