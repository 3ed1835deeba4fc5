#!/usr/bin/python3
"""Golden outputs of transformers' own LongcatFlashMLA for ngemb's mla_attention (tests/model.cpp).

Pinned: torch 2.15, transformers 5.23, safetensors, numpy (run by hand, not by the test command):
    /work/tmp/venv/bin/python tests/reference/mla_reference.py

Each case builds one transformers.models.longcat_flash.modeling_longcat_flash.LongcatFlashMLA from a
LongcatFlashConfig, fills every parameter with random values (never zero; norm weights in [0.5, 1.5]), runs it in
float64 over whole sequences with a causal mask and LongcatFlashRotaryEmbedding's cos/sin (eager attention), and
writes, under tests/reference/mla/:
  model.safetensors  F32 weights under HF names, prefix "model.layers.{c // 2}.self_attn.{c % 2}" for case c
  golden.json        per case: the shape fields, the schedule of ragged steps (a prompt all at once, a second
                     prompt, decode steps, one sequence idle in a step, a chunk of two), per sequence its input rows
                     (float32-representable) and the module's output rows (full causal attention of the whole
                     sequence, so a cached, stepwise run must reproduce them row by row); and the rotary module's
                     inv_freq and attention_scaling plus the MLA's softmax scaling.
Cases:
  q_lora         q_lora_rank > 0, default RoPE
  no_q_lora      q_lora_rank = 0: LongcatFlashMLA has no such path, so its q_a_proj -> q_a_layernorm -> q_b_proj
                 chain is replaced by DeepseekV3Attention's q_proj (nn.Linear without bias) and the query's LoRA
                 scaling by 1 (there is no q_lora_rank to scale by); the rest is LongcatFlashMLA unchanged
  yarn           YaRN RoPE with factor, original_max_position_embeddings, beta_fast/slow, mscale, mscale_all_dim
  bias           attention_bias = True (q_a_proj, kv_a_proj_with_mqa and o_proj biases)
"""
import json
import os

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from transformers.models.longcat_flash.configuration_longcat_flash import LongcatFlashConfig
from transformers.models.longcat_flash.modeling_longcat_flash import LongcatFlashMLA, LongcatFlashRotaryEmbedding

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "mla")

BASE = dict(hidden_size=32, num_attention_heads=4, q_lora_rank=16, kv_lora_rank=24, qk_nope_head_dim=8,
            qk_rope_head_dim=8, head_dim=8, v_head_dim=12, attention_bias=False, max_position_embeddings=4096)

CASES = [
    ("q_lora", {}, {"rope_type": "default", "rope_theta": 10000.0}),
    ("no_q_lora", {"q_lora_rank": None}, {"rope_type": "default", "rope_theta": 500.0}),
    ("yarn", {"max_position_embeddings": 256}, {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64,
                  "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 0.8}),
    ("bias", {"attention_bias": True}, {"rope_type": "default", "rope_theta": 10000.0}),
]

# (sequence, new tokens) per step: sequence 0's prompt at once with sequence 1's, decodes, an idle sequence, a chunk.
STEPS = [([0, 1], [5, 3]), ([0, 1], [1, 1]), ([0], [1]), ([1, 0], [2, 1])]
LENGTHS = [8, 6]


def random_values(generator, shape, scale):
    magnitude = torch.rand(shape, generator=generator, dtype=torch.float64) * 0.9 + 0.1
    sign = torch.where(torch.rand(shape, generator=generator, dtype=torch.float64) < 0.5, -1.0, 1.0)
    return (magnitude * sign * scale).float().double()  # float32-representable


def build(name, overrides, rope, seed):
    fields = dict(BASE)
    fields.update(overrides)
    q_lora = fields["q_lora_rank"]
    if q_lora is None:
        fields["q_lora_rank"] = 1  # a placeholder: the q chain is replaced below
    config = LongcatFlashConfig(**fields, rope_parameters=dict(rope))
    config._attn_implementation = "eager"
    module = LongcatFlashMLA(config, layer_idx=0)
    if q_lora is None:
        heads, qk = config.num_attention_heads, config.qk_head_dim
        module.q_a_proj = nn.Identity()
        module.q_a_layernorm = nn.Identity()
        module.q_b_proj = nn.Linear(config.hidden_size, heads * qk, bias=False)  # DeepseekV3Attention's q_proj
        module.mla_scale_q_lora = 1.0
    module = module.double().eval()
    generator = torch.Generator().manual_seed(seed)
    for parameter_name, parameter in module.named_parameters():
        with torch.no_grad():
            if "layernorm" in parameter_name:
                parameter.copy_((torch.rand(parameter.shape, generator=generator, dtype=torch.float64) + 0.5)
                                .float().double())
            else:
                fan_in = parameter.shape[-1] if parameter.dim() == 2 else 4
                parameter.copy_(random_values(generator, parameter.shape, 1.5 / fan_in ** 0.5))
    rotary = LongcatFlashRotaryEmbedding(config)
    return config, module, rotary, q_lora


def run(config, module, rotary, x):
    length = x.shape[0]
    positions = torch.arange(length)[None, :]
    cos, sin = rotary(x[None], positions)
    mask = torch.full((length, length), torch.finfo(torch.float64).min, dtype=torch.float64).triu(1)[None, None]
    with torch.no_grad():
        out, _ = module(x[None], (cos, sin), mask)
    return out[0]


def hf_tensors(module, prefix, q_lora):
    tensors = {}
    for parameter_name, parameter in module.named_parameters():
        hf_name = parameter_name
        if q_lora is None and parameter_name.startswith("q_b_proj."):
            hf_name = "q_proj." + parameter_name.split(".", 1)[1]
        tensors[f"{prefix}.{hf_name}"] = parameter.detach().float().contiguous()
    return tensors


def compact(values, digits):
    return [float(f"{v:.{digits}g}") for v in values]


def main():
    os.makedirs(OUT, exist_ok=True)
    tensors = {}
    cases = []
    for index, (name, overrides, rope) in enumerate(CASES):
        config, module, rotary, q_lora = build(name, overrides, rope, 100 + index)
        prefix = f"model.layers.{index // 2}.self_attn.{index % 2}"
        tensors.update(hf_tensors(module, prefix, q_lora))
        generator = torch.Generator().manual_seed(200 + index)
        sequences, expected = [], []
        for length in LENGTHS:
            x = random_values(generator, (length, config.hidden_size), 1.0)
            sequences.append(x.flatten().tolist())
            expected.append(compact(run(config, module, rotary, x).flatten().tolist(), 12))
        cases.append({
            "name": name, "prefix": prefix, "hidden": config.hidden_size, "heads": config.num_attention_heads,
            "q_lora_rank": 0 if q_lora is None else config.q_lora_rank, "kv_lora_rank": config.kv_lora_rank,
            "qk_nope_head_dim": config.qk_nope_head_dim, "qk_rope_head_dim": config.qk_rope_head_dim,
            "v_head_dim": config.v_head_dim, "attention_bias": config.attention_bias, "rope": rope,
            "steps": [{"sequences": s, "sizes": n} for s, n in STEPS],
            "sequences": sequences, "expected": expected,
            "inv_freq": rotary.inv_freq.double().tolist(), "attention_scaling": float(rotary.attention_scaling),
            "softmax_scale": float(module.scaling),
        })
    save_file(tensors, os.path.join(OUT, "model.safetensors"))
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump({"transformers": __import__("transformers").__version__, "torch": torch.__version__,
                   "cases": cases}, f, separators=(",", ":"))


if __name__ == "__main__":
    main()
