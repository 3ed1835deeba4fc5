#!/usr/bin/python3
"""Independent PyTorch (float64) reference for whole ngemb models: causal_lm over shortcut and pre-norm blocks.

Regenerate (from the repository root, Debian's python3 with python3-torch and numpy):

    /usr/bin/python3 tests/reference/model_reference.py     # rewrites tests/reference/model/

Each case folder holds config.json, model.safetensors (random fp32 weights under the HF LongCat names of
include/ngemb/model/causal_lm.hpp) and expected.json:
    {"sequences": [[tokens], ...]                  a ragged batch, each sequence its own stream from position 0,
     "logits": [[V] per token in batch order],      every token's next-token logits,
     "max_new_tokens": n, "greedy": [[n tokens] per sequence]}   greedy continuations of each sequence.
The math follows /work/shared/SPEC.md literally and recomputes every sequence from scratch (no caches):
  embedding  e = (E_0[x] + sum_i W_i E_i[id_i]) / (1 + T) with the exact ids of SPEC §2 (ngram_embedding_reference),
  RMSNorm    x / sqrt(mean(x^2) + eps) * w,
  attention  GQA, RoPE in the Llama rotate-half convention (inv_freq_j = theta^(-2j/d)), causal, scale 1/sqrt(d),
  SwiGLU     W_down (SiLU(W_gate x) * (W_up x)),
  MoE        softmax router over E routed + Z zero experts, selection by s + b, weights s_e * scale,
             y = sum_routed s_e FFN_e(x) + sum_zero s_e x,
  shortcut   h += attn0(in0 h); u = post0 h; s = moe(u); h += ffn0(u); h += attn1(in1 h); h += ffn1(post1 h) + s,
  pre-norm   h += attn(in h); h += moe(post h),
  logits     lm_head(RMSNorm(h)).
Seeds are re-drawn until every router's k-th and (k+1)-th selection keys differ by > 1e-5 and every greedy step's
two best logits by > 1e-3, so fp32 evaluation cannot pick differently from this float64 reference.
"""
import json
import math
import os
import shutil
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ngram_embedding_reference as emb  # noqa: E402  (ids, tensor encoding, safetensors writer)

OUT_DIR = os.path.join(HERE, "model")
ROUTER_MARGIN = 1e-5
GREEDY_MARGIN = 1e-3


def rms_norm(x, w, eps):
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * w


def rope(x, positions, theta):
    """x [T, heads, d]; Llama rotate-half: pairs (j, j + d/2) rotate by position * theta^(-2j/d)."""
    d = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angle = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    cos, sin = torch.cos(angle)[:, None, :], torch.sin(angle)[:, None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def attention(x, w, cfg):
    """Causal self-attention over one whole sequence x [T, H]."""
    T = x.shape[0]
    heads, kv_heads, d = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    positions = torch.arange(T)
    q = rope((x @ w["q"].T).view(T, heads, d), positions, cfg["rope_theta"])
    k = rope((x @ w["k"].T).view(T, kv_heads, d), positions, cfg["rope_theta"])
    v = (x @ w["v"].T).view(T, kv_heads, d)
    group = heads // kv_heads
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(d)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    scores = scores.masked_fill(mask, float("-inf"))
    out = torch.einsum("hqk,khd->qhd", torch.softmax(scores, dim=-1), v).reshape(T, heads * d)
    return out @ w["o"].T


def swiglu(x, w):
    return (torch.nn.functional.silu(x @ w["gate"].T) * (x @ w["up"].T)) @ w["down"].T


def moe(x, w, cfg, margins):
    E, Z, k = cfg["n_routed_experts"], cfg["zero_expert_num"], cfg["moe_topk"]
    scores = torch.softmax(x @ w["classifier"].T, dim=-1)
    keys = scores + w["bias"]
    y = torch.zeros_like(x)
    for t in range(x.shape[0]):
        order = sorted(range(E + Z), key=lambda e: (-float(keys[t, e]), e))
        margins.append(float(keys[t, order[k - 1]] - keys[t, order[k]]))
        picked = scores[t, order[:k]]
        if cfg["norm_topk_prob"]:
            picked = picked / picked.sum()
        for e, weight in zip(order[:k], picked * cfg["routed_scaling_factor"]):
            y[t] += weight * (swiglu(x[t:t + 1], w["experts"][e])[0] if e < E else x[t])
    return y


def block(h, w, cfg, margins):
    eps = cfg["rms_norm_eps"]
    if w["kind"] == "shortcut":
        h = h + attention(rms_norm(h, w["in"][0], eps), w["attn"][0], cfg)
        u = rms_norm(h, w["post"][0], eps)
        s = moe(u, w["moe"], cfg, margins)
        h = h + swiglu(u, w["ffn"][0])
        h = h + attention(rms_norm(h, w["in"][1], eps), w["attn"][1], cfg)
        return h + swiglu(rms_norm(h, w["post"][1], eps), w["ffn"][1]) + s
    h = h + attention(rms_norm(h, w["in"], eps), w["attn"], cfg)
    return h + moe(rms_norm(h, w["post"], eps), w["moe"], cfg, margins)


def logits_of(sequence, w, cfg, margins):
    ids = emb.stream_ids(cfg, sequence, 0)
    h = torch.tensor(np.array([emb.embed_row(cfg, w["embedding"], t, row, "none") for t, row in zip(sequence, ids)]))
    for layer in w["layers"]:
        h = block(h, layer, cfg, margins)
    return rms_norm(h, w["norm"], cfg["rms_norm_eps"]) @ w["lm_head"].T


class weight_maker:
    """Random fp32 tensors in checkpoint order; keeps the float64 values by role."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.tensors = []

    def normal(self, name, shape, std, mean=0.0):
        t = emb.make_tensor("F32", self.rng.normal(mean, std, size=shape).astype(np.float32))
        self.tensors.append((name, t))
        return torch.tensor(t["values"])

    def linear(self, name, out_features, in_features):
        return self.normal(name, (out_features, in_features), 1.0 / math.sqrt(in_features))

    def norm(self, name, hidden):
        return self.normal(name, (hidden,), 0.1, mean=1.0)


def make_weights(cfg, kind, seed):
    m = weight_maker(seed)
    H, V = cfg["hidden_size"], cfg["vocab_size"]
    T = cfg["emb_split_num"] * (cfg["emb_neighbor_num"] - 1)
    d = H // T
    heads, kv_heads, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    embedding = {"base": m.normal("model.embed_tokens.weight", (V, H), 1.0).numpy(),
                 "tables": [m.normal(f"model.ngram_embeddings.embedders.{i}.weight", (mod, d), 1.0).numpy()
                            for i, mod in enumerate(emb.moduli(cfg))],
                 "projs": [m.linear(f"model.ngram_embeddings.post_projs.{i}.weight", H, d).numpy()
                           for i in range(T)]}

    def attn(prefix):
        return {"q": m.linear(prefix + ".q_proj.weight", heads * hd, H),
                "k": m.linear(prefix + ".k_proj.weight", kv_heads * hd, H),
                "v": m.linear(prefix + ".v_proj.weight", kv_heads * hd, H),
                "o": m.linear(prefix + ".o_proj.weight", H, heads * hd)}

    def ffn(prefix, width):
        return {"gate": m.linear(prefix + ".gate_proj.weight", width, H),
                "up": m.linear(prefix + ".up_proj.weight", width, H),
                "down": m.linear(prefix + ".down_proj.weight", H, width)}

    def moe_weights(prefix):
        E, Z = cfg["n_routed_experts"], cfg["zero_expert_num"]
        return {"classifier": m.linear(prefix + ".router.classifier.weight", E + Z, H),
                "bias": m.normal(prefix + ".router.e_score_correction_bias", (E + Z,), 0.05),
                "experts": [ffn(f"{prefix}.experts.{e}", cfg["expert_ffn_hidden_size"]) for e in range(E)]}

    layers = []
    for l in range(cfg["num_layers"]):
        p = f"model.layers.{l}."
        if kind == "shortcut":
            layers.append({"kind": kind,
                           "in": [m.norm(f"{p}input_layernorm.{i}.weight", H) for i in range(2)],
                           "post": [m.norm(f"{p}post_attention_layernorm.{i}.weight", H) for i in range(2)],
                           "attn": [attn(f"{p}self_attn.{i}") for i in range(2)],
                           "ffn": [ffn(f"{p}mlps.{i}", cfg["ffn_hidden_size"]) for i in range(2)],
                           "moe": moe_weights(p + "mlp")})
        else:
            layers.append({"kind": kind, "in": m.norm(p + "input_layernorm.weight", H),
                           "post": m.norm(p + "post_attention_layernorm.weight", H),
                           "attn": attn(p + "self_attn"), "moe": moe_weights(p + "mlp")})
    weights = {"embedding": embedding, "layers": layers, "norm": m.norm("model.norm.weight", H),
               "lm_head": m.linear("lm_head.weight", V, H)}
    return weights, m.tensors


def greedy(sequence, w, cfg, steps, margins, greedy_margins):
    tokens = list(sequence)
    new = []
    for _ in range(steps):
        row = logits_of(tokens, w, cfg, margins)[-1]
        top = torch.topk(row, 2).values
        greedy_margins.append(float(top[0] - top[1]))
        nxt = int(torch.argmax(row))
        new.append(nxt)
        tokens.append(nxt)
    return new


def write_case(name, cfg, kind, sequences, steps, seed):
    for attempt in range(100):
        w, tensors = make_weights(cfg, kind, seed + attempt)
        margins, greedy_margins = [], []
        logits = [logits_of(s, w, cfg, margins) for s in sequences]
        generated = [greedy(s, w, cfg, steps, margins, greedy_margins) for s in sequences]
        if min(margins) > ROUTER_MARGIN and min(greedy_margins) > GREEDY_MARGIN:
            break
    else:
        raise RuntimeError(f"{name}: no seed gave safe margins")
    folder = os.path.join(OUT_DIR, name)
    os.makedirs(folder)
    emb.write_text(os.path.join(folder, "config.json"), json.dumps(cfg, indent=2) + "\n")
    emb.write_safetensors(os.path.join(folder, "model.safetensors"), tensors)
    expected = {"sequences": sequences,
                "logits": [[float(v) for v in row] for rows in logits for row in rows],
                "max_new_tokens": steps, "greedy": generated,
                "seed": seed + attempt, "min_router_margin": min(margins), "min_greedy_margin": min(greedy_margins)}
    emb.write_text(os.path.join(folder, "expected.json"), emb.dump_json(expected) + "\n")


def config(layers, **extra):
    cfg = {"vocab_size": 97, "hidden_size": 32, "emb_neighbor_num": 3, "emb_split_num": 2, "m_base": 61,
           "eos_token_id": 2, "num_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2,
           "head_dim": 8, "ffn_hidden_size": 48, "expert_ffn_hidden_size": 16, "n_routed_experts": 6,
           "zero_expert_num": 3, "moe_topk": 3, "routed_scaling_factor": 2.5, "norm_topk_prob": False,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64}
    cfg.update(extra)
    return cfg


def main():
    torch.set_default_dtype(torch.float64)
    if os.path.isdir(OUT_DIR):
        shutil.rmtree(OUT_DIR)
    os.makedirs(OUT_DIR)
    sequences = [[5, 17, 2, 40, 96, 11, 3], [60], [9, 9, 9, 30, 2]]
    write_case("shortcut", config(2), "shortcut", sequences, 5, 1000)
    write_case("prenorm", config(2, norm_topk_prob=True, num_key_value_heads=4), "prenorm", sequences, 5, 2000)


if __name__ == "__main__":
    main()
