#!/usr/bin/python3
"""Independent float64 reference (PyTorch) for ngemb's model layers: RMSNorm, RoPE, GQA/MHA causal self-attention and
the LM head.

The functions below are importable (a whole-model reference builds on them); every tensor argument is a float64
torch tensor and weights use the PyTorch Linear layout [out, in]:
  rms_norm(x, weight, eps)                       x [..., H]
  apply_rope(x, positions, theta)                x [tokens, heads, head_dim], positions [tokens] (HF Llama rotate_half)
  causal_attention(x, wq, wk, wv, wo, heads, kv_heads, head_dim, theta)
                                                 one whole sequence x [T, H] at positions 0..T-1 -> [T, H]
  lm_head(x, norm_weight, eps, weight)           x [tokens, H] -> logits [tokens, V]

Running it writes tests/reference/attention/:
  model.safetensors  F32 weights under HF names: the two attention cases' {q,k,v,o}_proj.weight under their prefixes,
                     model.norm.weight and lm_head.weight
  golden.json        inputs (float32-representable) and float64 expected outputs: an rms_norm case (weight inline),
                     the lm_head case, and the attention cases "mha" and "gqa". An attention case lists per sequence
                     its input rows, and a schedule of ragged steps (which sequences, how many new tokens each): a
                     prefill, two decode steps (one sequence idle in the second), then a chunk continuing after the
                     cached tokens. Its expected rows are full causal attention recomputed over each whole sequence,
                     so a cached, stepwise run must reproduce them row by row.
Inputs are random with magnitudes in [0.1, 1] times a scale, never zero.

Regenerate: /usr/bin/python3 tests/reference/attention_reference.py
"""
import json
import math
import os
import struct

import numpy as np
import torch


def rms_norm(x, weight, eps):
    """x / sqrt(mean(x^2) + eps) * weight over the last dimension."""
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * weight


def apply_rope(x, positions, theta):
    """Rotates dimension i < d/2 with i + d/2 by angle position * theta^(-2i/d) (HF Llama rotate_half)."""
    head_dim = x.shape[-1]
    half = head_dim // 2
    inverse_frequency = theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / head_dim)
    angles = positions.to(torch.float64)[:, None] * inverse_frequency[None, :]  # [tokens, d/2]
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1)[:, None, :]
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1)[:, None, :]
    rotated_half = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated_half * sin


def causal_attention(x, wq, wk, wv, wo, heads, kv_heads, head_dim, theta):
    """Self-attention over one whole sequence at positions 0..T-1: query head h reads kv head h // (heads/kv_heads)
    (HF repeat_kv), scale 1/sqrt(head_dim), causal mask, no biases."""
    tokens = x.shape[0]
    positions = torch.arange(tokens)
    q = apply_rope((x @ wq.T).reshape(tokens, heads, head_dim), positions, theta)
    k = apply_rope((x @ wk.T).reshape(tokens, kv_heads, head_dim), positions, theta)
    v = (x @ wv.T).reshape(tokens, kv_heads, head_dim)
    group = heads // kv_heads
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(head_dim)
    future = torch.triu(torch.ones(tokens, tokens, dtype=torch.bool), diagonal=1)
    probabilities = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    context = torch.einsum("hts,shd->thd", probabilities, v).reshape(tokens, heads * head_dim)
    return context @ wo.T


def lm_head(x, norm_weight, eps, weight):
    """Final RMSNorm then logits = W norm(x)."""
    return rms_norm(x, norm_weight, eps) @ weight.T


def random_f32(rng, shape, scale=1.0):
    """float32-representable values with |v| in [0.1, 1] * scale and a random sign (never zero), as float64."""
    magnitude = rng.uniform(0.1, 1.0, size=shape) * scale
    sign = rng.choice([-1.0, 1.0], size=shape)
    return torch.from_numpy((magnitude * sign).astype(np.float32).astype(np.float64))


def flat(t):
    return [float(v) for v in t.reshape(-1)]


def write_safetensors(path, tensors):
    """F32 tensors {name: float64 tensor holding float32 values} as one safetensors file (header padded to 8)."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"))
    text += " " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)))
        out.write(text.encode())
        for data in blobs:
            out.write(data)


# Ragged steps over three sequences: (sequence order, new tokens of each).
STEPS = [
    ([0, 1, 2], [5, 1, 3]),  # prefill
    ([2, 0, 1], [1, 1, 1]),  # decode, in another order
    ([0, 1, 2], [1, 0, 1]),  # decode with sequence 1 idle
    ([1, 2, 0], [4, 3, 2]),  # chunked prefill continuing after the cached tokens
]


def attention_case(rng, name, prefix, hidden, heads, kv_heads, head_dim, theta, tensors):
    scale = 1.0 / math.sqrt(hidden)
    weights = {
        "q_proj": random_f32(rng, (heads * head_dim, hidden), scale),
        "k_proj": random_f32(rng, (kv_heads * head_dim, hidden), scale),
        "v_proj": random_f32(rng, (kv_heads * head_dim, hidden), scale),
        "o_proj": random_f32(rng, (hidden, heads * head_dim), 1.0 / math.sqrt(heads * head_dim)),
    }
    for projection, w in weights.items():
        tensors[f"{prefix}.{projection}.weight"] = w
    lengths = [0, 0, 0]
    for order, sizes in STEPS:
        for sequence, size in zip(order, sizes):
            lengths[sequence] += size
    sequences = [random_f32(rng, (length, hidden)) for length in lengths]
    expected = [causal_attention(x, weights["q_proj"], weights["k_proj"], weights["v_proj"], weights["o_proj"],
                                 heads, kv_heads, head_dim, theta) for x in sequences]
    return {
        "name": name, "prefix": prefix, "hidden": hidden, "heads": heads, "kv_heads": kv_heads,
        "head_dim": head_dim, "rope_theta": theta,
        "steps": [{"sequences": order, "sizes": sizes} for order, sizes in STEPS],
        "sequences": [flat(x) for x in sequences],
        "expected": [flat(y) for y in expected],
    }


def main():
    rng = np.random.default_rng(20261128)
    tensors = {}
    golden = {}

    hidden, eps = 40, 1e-5
    weight = random_f32(rng, (hidden,), 2.0)
    # Rows of ordinary, large and tiny magnitude: the tiny row's mean square is near eps, so eps's place matters.
    x = torch.cat([random_f32(rng, (4, hidden)), random_f32(rng, (1, hidden), 1e3), random_f32(rng, (1, hidden), 3e-3)])
    golden["rms_norm"] = {"hidden": hidden, "eps": eps, "weight": flat(weight), "x": flat(x),
                          "expected": flat(rms_norm(x, weight, eps))}

    golden["attention"] = [
        attention_case(rng, "mha", "model.layers.0.self_attn.0", 24, 3, 3, 8, 10000.0, tensors),
        attention_case(rng, "gqa", "model.layers.1.self_attn.1", 32, 4, 2, 12, 500000.0, tensors),
    ]

    hidden, vocab, eps = 32, 50, 1e-6
    norm_weight = random_f32(rng, (hidden,), 2.0)
    head_weight = random_f32(rng, (vocab, hidden), 1.0 / math.sqrt(hidden))
    x = random_f32(rng, (5, hidden), 3.0)
    tensors["model.norm.weight"] = norm_weight
    tensors["lm_head.weight"] = head_weight
    golden["lm_head"] = {"hidden": hidden, "vocab": vocab, "eps": eps, "x": flat(x),
                         "expected": flat(lm_head(x, norm_weight, eps, head_weight))}

    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "attention")
    os.makedirs(folder, exist_ok=True)
    write_safetensors(os.path.join(folder, "model.safetensors"), tensors)
    with open(os.path.join(folder, "golden.json"), "w") as out:
        json.dump(golden, out)
        out.write("\n")


if __name__ == "__main__":
    main()
