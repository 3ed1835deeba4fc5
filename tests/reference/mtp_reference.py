#!/usr/bin/python3
"""Independent PyTorch (float64) reference for LongCat's MTP module (include/ngemb/model/mtp.hpp).

Regenerate (from the repository root; torch and numpy, e.g. /work/tmp/venv/bin/python):

    python3 tests/reference/mtp_reference.py     # rewrites tests/reference/mtp/

The module takes the sizes of the "shortcut" case of model_reference.py (tests/reference/model/shortcut/config.json)
with the GQA attention and SwiGLU of that reference, and random fp32 weights (none zero) under the released
checkpoint names (model.mtp.embed_tokens, model.mtp.layers.0.{enorm.m, hnorm.m, eh_proj, input_layernorm,
self_attn, post_attention_layernorm, transformer_layer.mlp}, model.mtp.norm). The wiring is SGLang's
LongcatFlashModelNextN.forward (and vLLM's LongCatMultiTokenPredictorLayer.forward), per sequence from position 0:
    x   = eh_proj(cat(enorm(E[token_{t+1}]), hnorm(h_t)))
    x  += attn(input_layernorm(x));  x += swiglu(post_attention_layernorm(x))
    out = norm(x)
The folder holds mtp.safetensors and expected.json:
    {"tokens": [[tokens], ...]    a ragged batch: row t of a sequence embeds tokens[t] (the token at t+1),
     "hidden": [[H] per row]       the h_t rows (random, the role of the target's final-normed rows), batch order,
     "out":    [[H] per row]}      the module's output rows, batch order.
"""
import json
import os
import shutil
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import model_reference as ref  # noqa: E402  (rms_norm, attention, swiglu, weight_maker)
import ngram_embedding_reference as emb  # noqa: E402  (tensor encoding, safetensors writer, json)

OUT_DIR = os.path.join(HERE, "mtp")
PREFIX = "model.mtp"
LAYER = PREFIX + ".layers.0"


def make_weights(cfg, seed):
    m = ref.weight_maker(seed)
    H, V = cfg["hidden_size"], cfg["vocab_size"]
    heads, kv_heads, hd, width = (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"],
                                  cfg["ffn_hidden_size"])
    w = {"embed": m.normal(PREFIX + ".embed_tokens.weight", (V, H), 1.0),
         "enorm": m.norm(LAYER + ".enorm.m.weight", H),
         "hnorm": m.norm(LAYER + ".hnorm.m.weight", H),
         "eh_proj": m.linear(LAYER + ".eh_proj.weight", H, 2 * H),
         "input_norm": m.norm(LAYER + ".input_layernorm.weight", H),
         "attn": {"q": m.linear(LAYER + ".self_attn.q_proj.weight", heads * hd, H),
                  "k": m.linear(LAYER + ".self_attn.k_proj.weight", kv_heads * hd, H),
                  "v": m.linear(LAYER + ".self_attn.v_proj.weight", kv_heads * hd, H),
                  "o": m.linear(LAYER + ".self_attn.o_proj.weight", H, heads * hd)},
         "post_norm": m.norm(LAYER + ".post_attention_layernorm.weight", H),
         "ffn": {"gate": m.linear(LAYER + ".transformer_layer.mlp.gate_proj.weight", width, H),
                 "up": m.linear(LAYER + ".transformer_layer.mlp.up_proj.weight", width, H),
                 "down": m.linear(LAYER + ".transformer_layer.mlp.down_proj.weight", H, width)},
         "final_norm": m.norm(PREFIX + ".norm.weight", H)}
    return w, m.tensors


def mtp_rows(tokens, hidden, w, cfg):
    """One sequence: tokens [T] (each the token after its hidden row's position), hidden [T, H] -> out [T, H]."""
    eps = cfg["rms_norm_eps"]
    joined = torch.cat([ref.rms_norm(w["embed"][tokens], w["enorm"], eps), ref.rms_norm(hidden, w["hnorm"], eps)],
                       dim=-1)
    x = joined @ w["eh_proj"].T
    x = x + ref.attention(ref.rms_norm(x, w["input_norm"], eps), w["attn"], cfg)
    x = x + ref.swiglu(ref.rms_norm(x, w["post_norm"], eps), w["ffn"])
    return ref.rms_norm(x, w["final_norm"], eps)


def main():
    torch.set_default_dtype(torch.float64)
    with open(os.path.join(HERE, "model", "shortcut", "config.json")) as fh:
        cfg = json.load(fh)
    w, tensors = make_weights(cfg, 3000)
    rng = np.random.default_rng(3001)
    sequences = [[17, 2, 40, 96, 11, 3, 58], [60], [9, 9, 30, 2, 77]]
    hidden = [torch.tensor(rng.normal(0.0, 1.0, size=(len(s), cfg["hidden_size"])).astype(np.float32),
                           dtype=torch.float64) for s in sequences]
    out = [mtp_rows(torch.tensor(s), h, w, cfg) for s, h in zip(sequences, hidden)]
    if os.path.isdir(OUT_DIR):
        shutil.rmtree(OUT_DIR)
    os.makedirs(OUT_DIR)
    emb.write_safetensors(os.path.join(OUT_DIR, "mtp.safetensors"), tensors)
    expected = {"tokens": sequences,
                "hidden": [[float(v) for v in row] for rows in hidden for row in rows],
                "out": [[float(v) for v in row] for rows in out for row in rows]}
    emb.write_text(os.path.join(OUT_DIR, "expected.json"), emb.dump_json(expected) + "\n")


if __name__ == "__main__":
    main()
