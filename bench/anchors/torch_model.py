#!/usr/bin/env python3
"""Whole-model anchor for bench/model: transformers' LongcatFlashForCausalLM on models/tiny-longcat, decode, prefill.

Run by hand (never by ctest), with PyPI torch and transformers (the versions tools/train/train_tiny.py pins), from
the repository root:

    python bench/anchors/torch_model.py                           # every shape, bf16 and fp32; JSON lines on stdout
    python bench/anchors/torch_model.py --shapes tiny_decode/1 --dtypes float32

The model: transformers 5.23 has LongcatFlashForCausalLM (shortcut layers, MLA, zero-expert MoE) but no n-gram
embedding and no `longcat_flash_ngram` model type, so the checkpoint's config.json does not load through
AutoModel. The torch model is therefore the one tools/train/train_tiny.py trained and checks ngemb against
(`reload`): transformers' own LongcatFlashForCausalLM, with the shipped weights, fed `inputs_embeds` from the
script's NgramEmbedding (SPEC §3 with the exact ids of SPEC §2; the sub-tables' projections as one concatenated
W_cat Linear, which is the official module's sum of T per-table Linears in one GEMM). Attention: eager. The MTP
module is loaded but not run (bench_model's decode does not run it either).

Shapes, as bench/model.cpp's tiny benchmarks (its prompts are slices of tests/reference/tiny_longcat/validation.txt
at random offsets; here too, from another generator):
  tiny_decode/{1,8}  B sequences holding 256 tokens take one new token each (last-token logits) through the KV cache
                     (transformers' DynamicCache, holding MLA's latent rows) and the n-gram look-back (the last 3
                     tokens of each sequence); the sequences restart (untimed prefill) when they would pass 320
                     tokens, so the context stays within 256..320 as in bench_model;
  tiny_prefill/4     4 sequences of 256 tokens from an empty cache (last-token logits).
Per dtype (--dtypes): bfloat16 (the weights as shipped; activations bf16, as transformers runs a bf16 model) and
float32 (the bf16 weights widened once). On a CPU without AVX512-BF16 / AMX, PyTorch's bf16 matmul is a scalar
fallback (pytorch/pytorch#146508), so there float32 is the PyTorch run a user would choose.

Threads (--threads): each shape is timed with torch.set_num_threads(os.cpu_count()) and with 1 thread, as paths
`transformers_{dtype}_{threads}t`: a decode step of this small model is hundreds of small ops, and with two threads
each op's parallel region waits for both; on a machine where other jobs take a core that wait costs more than the
op (measured on the loaded 2-core development machine: 17 ms a step with 1 thread, 120-230 ms with 2).

Timing: torch.inference_mode(). Decode: a warm-up of 4 steps, then the median over 7 repetitions of 16 consecutive
steps' mean step time; tokens/s = B / step time. Prefill: warm-up >= 0.2 s, then the median of 7 (3 when a call takes
over 0.5 s) repetitions. Checks first: in fp32, the logits of the golden prompts
(tests/reference/tiny_longcat/, float64 logits of the same weights) within 1e-3; in every dtype, a decode step's
logits equal a cache-free forward of the whole sequence within the dtype's rounding.

Output: one JSON object per line on stdout,
    {"path": "transformers_bfloat16_2t", "shape": "tiny_decode/1", "tokens_per_second": ..., "seconds_per_call": ...,
     "threads": 2, "torch": "2.15.0", "transformers": "5.23.0"}
progress on stderr.
"""
import argparse
import json
import math
import os
import random
import statistics
import sys
import time

import safetensors.torch
import torch
import transformers
from transformers import DynamicCache

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
import train_tiny  # noqa: E402  (the torch model ngemb's tiny-longcat checks are against)

MODEL_DIR = os.path.join(ROOT, "models", "tiny-longcat")
GOLDEN_DIR = os.path.join(ROOT, "tests", "reference", "tiny_longcat")
CONTEXT = 256
REGROWTH = 64
LOOKBACK = 3  # N - 1 tokens of n-gram look-back
SHAPES = [("tiny_decode/1", "decode", 1), ("tiny_decode/8", "decode", 8), ("tiny_prefill/4", "prefill", 4)]
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def log(message):
    print(message, file=sys.stderr, flush=True)


def load(dtype):
    model = train_tiny.reload("ngram", 0, MODEL_DIR, dtype)  # the seed only fills what the checkpoint replaces
    model.lm.set_attn_implementation("eager")
    assert model.lm.config._attn_implementation == "eager"
    return model


def prompts(count, length, seed):
    """`count` slices of `length` tokens of the validation text (bytes, as byte_tokenizer encodes them)."""
    with open(os.path.join(GOLDEN_DIR, "validation.txt"), "rb") as handle:
        data = handle.read()
    generator = random.Random(seed)
    starts = [generator.randrange(len(data) - length) for _ in range(count)]
    return torch.tensor([list(data[s:s + length]) for s in starts], dtype=torch.int64)


class Runner:
    """B sequences through the model with a KV cache: prefill, then one token per step."""

    def __init__(self, model):
        self.model = model

    def prefill(self, tokens):
        self.history = tokens
        self.cache = DynamicCache(config=self.model.lm.config)
        embeds = self.model.ngram(tokens)
        return self.model.lm(inputs_embeds=embeds, past_key_values=self.cache, use_cache=True,
                             logits_to_keep=1).logits[:, -1]

    def step(self, next_tokens):
        """next_tokens [B, 1]: its n-gram ids need only the last LOOKBACK tokens of each sequence."""
        self.history = torch.cat([self.history, next_tokens], dim=1)
        embeds = self.model.ngram(self.history[:, -(LOOKBACK + 1):])[:, -1:]
        return self.model.lm(inputs_embeds=embeds, past_key_values=self.cache, use_cache=True,
                             logits_to_keep=1).logits[:, -1]


def check(model, dtype):
    if dtype == torch.float32:  # the load: golden logits of the same weights (float64), as tests/presets.cpp checks
        with open(os.path.join(GOLDEN_DIR, "expected.json")) as handle:
            cases = json.load(handle)["cases"]
        golden = safetensors.torch.load_file(os.path.join(GOLDEN_DIR, "logits.safetensors"))
        for index, case in enumerate(cases):
            logits = model.logits(torch.tensor([case["prompt"]]))[0]
            error = (logits - golden[f"logits.{index}"]).abs().max().item()
            if not error <= 1e-3:
                raise SystemExit(f"float32 logits of golden case {index} differ by {error} (tolerance 1e-3)")
    # The cache and the look-back: a decode step equals the cache-free forward of the whole sequences.
    tokens = prompts(2, CONTEXT + 1, 3)
    runner = Runner(model)
    runner.prefill(tokens[:, :-1])
    stepped = runner.step(tokens[:, -1:]).float()
    whole = model.logits(tokens)[:, -1].float()
    error = (stepped - whole).abs().max().item()
    tolerance = (5e-2 if dtype == torch.bfloat16 else 1e-4) * whole.abs().max().item()
    if not error <= tolerance:
        raise SystemExit(f"{dtype}: a decode step's logits differ from the cache-free forward by {error}")


def median_seconds(run):
    """Median seconds per call: warm-up >= 0.2 s, then 7 (3 over 0.5 s a call) repetitions of >= 0.1 s."""
    warm = 0.0
    while warm < 0.2:
        start = time.perf_counter()
        run()
        once = time.perf_counter() - start
        warm += once
    calls = max(1, math.ceil(0.1 / once))
    repetitions = []
    for _ in range(7 if once < 0.5 else 3):
        start = time.perf_counter()
        for _ in range(calls):
            run()
        repetitions.append((time.perf_counter() - start) / calls)
    return statistics.median(repetitions)


def decode_seconds(model, sequences):
    """Median step time of B sequences at 256..320 cached tokens (see the top of the file)."""
    tokens = prompts(sequences, CONTEXT + 1, 7)
    prompt, next_tokens = tokens[:, :-1], tokens[:, -1:]
    runner = Runner(model)
    steps = 16

    def restart():
        runner.prefill(prompt)

    restart()
    for _ in range(4):
        runner.step(next_tokens)
    repetitions = []
    for _ in range(7):
        if runner.history.shape[1] + steps > CONTEXT + REGROWTH:
            restart()
        start = time.perf_counter()
        for _ in range(steps):
            runner.step(next_tokens)
        repetitions.append((time.perf_counter() - start) / steps)
    return statistics.median(repetitions)


def measure(model, kind, sequences):
    """(seconds per call, tokens per call) of one shape."""
    if kind == "decode":
        return decode_seconds(model, sequences), sequences
    prompt = prompts(sequences, CONTEXT, 9)
    runner = Runner(model)
    return median_seconds(lambda: runner.prefill(prompt)), sequences * CONTEXT


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default=",".join(s[0] for s in SHAPES), help="comma-separated shape names")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated, of " + ", ".join(DTYPES))
    parser.add_argument("--threads", default=f"{os.cpu_count()},1",
                        help="comma-separated torch thread counts, each timed (default: os.cpu_count() and 1)")
    args = parser.parse_args()
    wanted = args.shapes.split(",")
    dtypes = args.dtypes.split(",")
    unknown = [s for s in wanted if s not in [shape[0] for shape in SHAPES]] + [d for d in dtypes if d not in DTYPES]
    if unknown:
        parser.error(f"unknown shape or dtype: {', '.join(unknown)}")
    thread_counts = list(dict.fromkeys(int(t) for t in args.threads.split(",")))

    versions = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__}
    with torch.inference_mode():
        for name in dtypes:
            torch.set_num_threads(thread_counts[0])
            model = load(DTYPES[name])
            check(model, DTYPES[name])
            for shape, kind, sequences in SHAPES:
                if shape not in wanted:
                    continue
                for threads in thread_counts:
                    torch.set_num_threads(threads)
                    seconds, tokens = measure(model, kind, sequences)
                    path = f"transformers_{name}_{threads}t"
                    print(json.dumps({"path": path, "shape": shape, "tokens_per_second": tokens / seconds,
                                      "seconds_per_call": seconds, "threads": threads, **versions}), flush=True)
                    log(f"{shape:16s} {path:26s} {tokens / seconds:10.1f} tokens/s")


if __name__ == "__main__":
    main()
