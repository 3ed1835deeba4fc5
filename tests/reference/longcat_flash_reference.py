#!/usr/bin/env python3
"""Goldens for LongCat-Flash (MLA, YaRN, zero experts, shortcut layers) computed by transformers itself.

Pinned: torch 2.15.0, transformers 5.23.0, safetensors 0.8.0, numpy 2.4.6 (PyPI wheels; CPU is enough). Run by hand
from the repository root, never by the test command:

    python3 tests/reference/longcat_flash_reference.py      # rewrites tests/reference/longcat_flash/

Each case builds a tiny random `LongcatFlashForCausalLM` (fp32, seeded), saves it with `save_pretrained`
(safetensors) and records what the model computes. Output tests/reference/longcat_flash/<case>/:
    config.json, model.safetensors   as save_pretrained wrote them (n-gram cases: plus the n-gram fields and tensors)
    expected.json
      "sequences": [[tokens] x 3]                   ragged prompts, each its own sequence from position 0
      "logits": [[V] per prompt token]              every token's next-token logits, batch order
      "chunks": [[chunk sizes] per sequence]        a chunked prefill whose every-token logits equal "logits"
      "decode_tokens": [[tokens] per sequence]      fed one per step after each whole prompt
      "decode_logits": [[V] per step]               sequence-major: sequence 0's steps, then sequence 1's, ...
      "max_new_tokens": 8, "greedy": [[8 tokens] per sequence]
      "seed", "min_router_margin", "min_greedy_margin", "versions"
Logits are the fp32 values transformers computed, written in their shortest fp32 form.

Paths: prefill (use_cache=False), chunked prefill, decode steps and greedy steps all run transformers' own
DynamicCache path; every cached logit row is checked here against a cache-free prefill of the same tokens (1e-5
relative to the row's largest |logit|), and greedy is checked against `generate()` where transformers can run it.

Weights are re-drawn after transformers' init, which sets RMSNorm weights to 1 and e_score_correction_bias to 0
and would hide a missing norm or bias: norms 1 + N(0, 0.1), biases N(0, 0.1), linears N(0, 1/fan_in), embedding
N(0, 1). Seeds are re-drawn until every greedy step's two best logits differ by > 1e-3 and every router's k-th and
(k+1)-th selection keys by > 1e-5, so an fp32 engine cannot pick a different token or expert.

Where transformers 5.23 cannot express a config, this script patches it (the patches are class swaps installed
before any model is built; each is checked to change nothing where transformers already defines the behaviour):
  * q_lora_rank null: LongcatFlashMLA always builds q_a_proj/q_a_layernorm/q_b_proj (and divides by q_lora_rank).
    MLA below builds DeepSeek-V3's single `q_proj` [heads*qk_head_dim x H] (no bias, as DeepseekV3Attention) and
    feeds it through the unchanged transformers forward, whose query is q_b_proj(q_a_layernorm(q_a_proj(x))):
    q_a_proj is q_proj and the other two are identities, kept out of the module registry so the checkpoint holds
    `q_proj.weight` only. Without a LoRA there is no q LoRA scale (1.0), as SGLang and vLLM, which fold
    sqrt(H/q_lora_rank) into q_a_layernorm, would have it.
  * norm_topk_prob: transformers' router ignores it. Router divides the chosen weights by their sum before
    routed_scaling_factor when config.norm_topk_prob is true (SPEC §6, ngemb's router_options::normalize_top_k).
  * router_bias: transformers creates classifier.bias but its F.linear drops it. Router adds it to the logits
    before the softmax, as the official LongCat code and SGLang do (their classifier is a Linear with that bias).
  * Router also records each token's selection-key margin.
N-gram cases (model_type "longcat_flash_ngram"): transformers has no n-gram embedding; the model is fed
inputs_embeds from SPEC §3 written out here, e = (E_0[x_p] + W_cat [E_0..E_{T-1} rows]) / (1 + T), with the exact
ids of SPEC §2 (ngram_embedding_reference.stream_ids), tables m_i = trunc(r*V + 2i + 1), d = floor(H/T); decode and
greedy steps hash each new token with its look-back in the whole stream. The tables and projections are added to
the saved checkpoint as model.ngram_embeddings.{embedders,post_projs}.{i}.weight with the config's n-gram fields.
"""
import json
import math
import os
import shutil
import sys
import tempfile

import numpy as np
import safetensors.torch
import torch
import transformers
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import DynamicCache, LongcatFlashConfig, LongcatFlashForCausalLM
from transformers.models.longcat_flash import modeling_longcat_flash as lcf

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ngram_embedding_reference as emb  # noqa: E402  (exact n-gram ids, the house JSON layout)

OUT_DIR = os.path.join(HERE, "longcat_flash")
VERSIONS = {"torch": "2.15.0", "transformers": "5.23.0", "safetensors": "0.8.0", "numpy": "2.4.6"}
ROUTER_MARGIN = 1e-5
GREEDY_MARGIN = 1e-3
CACHE_TOLERANCE = 1e-5  # cached paths against a cache-free prefill, relative to the row's largest |logit|
MAX_NEW_TOKENS = 8
CHUNKS = [[4, 3, 2], [1, 1], [3, 3]]  # the chunked prefill of the three prompts (lengths 9, 2, 6)
DECODE_STEPS = 3


# ----------------------------------------------------------------------------------------------------------------
# The patches (see the docstring)
# ----------------------------------------------------------------------------------------------------------------

ORIGINAL_MLA, ORIGINAL_ROUTER = lcf.LongcatFlashMLA, lcf.LongcatFlashTopkRouter


@strict
class Config(LongcatFlashConfig):
    q_lora_rank: int | None = 1536  # transformers' config types it int: null must be allowed


class MLA(ORIGINAL_MLA):
    def __init__(self, config, layer_idx):
        if config.q_lora_rank is not None:
            super().__init__(config, layer_idx)
            return
        config.q_lora_rank = config.hidden_size  # any size: lets the parent build, its q LoRA is replaced below
        try:
            super().__init__(config, layer_idx)
        finally:
            config.q_lora_rank = None
        del self.q_a_proj, self.q_a_layernorm, self.q_b_proj
        self.q_lora_rank = None
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.qk_head_dim, bias=False)
        object.__setattr__(self, "q_a_proj", self.q_proj)  # unregistered aliases: the state dict keeps q_proj
        object.__setattr__(self, "q_a_layernorm", nn.Identity())
        object.__setattr__(self, "q_b_proj", nn.Identity())
        self.mla_scale_q_lora = 1.0


class Router(ORIGINAL_ROUTER):
    margins = []  # every token's k-th minus (k+1)-th selection key, all routers, since the last reset

    def __init__(self, config):
        super().__init__(config)
        self.normalize = bool(getattr(config, "norm_topk_prob", False))

    def forward(self, hidden_states):
        hidden_states = hidden_states.view(-1, self.hidden_dim)
        bias = None if self.classifier.bias is None else self.classifier.bias.type(torch.float32)
        router_logits = nn.functional.linear(hidden_states.type(torch.float32),
                                             self.classifier.weight.type(torch.float32), bias)
        scores = router_logits.softmax(dim=-1)
        keys = torch.sort(scores + self.e_score_correction_bias.unsqueeze(0), dim=-1, descending=True).values
        Router.margins.extend((keys[:, self.top_k - 1] - keys[:, self.top_k]).tolist())
        topk_indices = self.get_topk_indices(scores)
        topk_weights = scores.gather(1, topk_indices)
        if self.normalize:
            topk_weights = topk_weights / topk_weights.sum(dim=-1, keepdim=True)
        topk_weights = topk_weights * self.routed_scaling_factor
        return router_logits, topk_weights.to(router_logits.dtype), topk_indices


def install_patches(on):
    lcf.LongcatFlashMLA = MLA if on else ORIGINAL_MLA
    lcf.LongcatFlashTopkRouter = Router if on else ORIGINAL_ROUTER
    LongcatFlashForCausalLM.config_class = Config if on else LongcatFlashConfig


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------

def make_config(case):
    fields = dict(vocab_size=64, hidden_size=32, num_layers=2, num_attention_heads=4, ffn_hidden_size=16,
                  q_lora_rank=10, kv_lora_rank=12, qk_nope_head_dim=6, qk_rope_head_dim=8, head_dim=8, v_head_dim=4,
                  n_routed_experts=4, zero_expert_num=2, moe_topk=2, expert_ffn_hidden_size=8,
                  routed_scaling_factor=2.5, rms_norm_eps=1e-5, max_position_embeddings=64,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, eos_token_id=2, bos_token_id=1)
    fields.update(case.get("config", {}))
    config = Config(**fields)
    config._attn_implementation = "eager"
    return config


def randomize(model, generator):
    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=generator, dtype=torch.float32) * std + mean

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(normal(p.shape, 0.1))
            elif p.dim() == 1:  # RMSNorm weights
                p.copy_(normal(p.shape, 0.1, 1.0))
            elif name.endswith("embed_tokens.weight"):
                p.copy_(normal(p.shape, 1.0))
            else:  # [out, in] or the experts' packed [experts, out, in]
                p.copy_(normal(p.shape, 1.0 / math.sqrt(p.shape[-1])))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(normal(b.shape, 0.1))


class ngram_embedding:
    """SPEC §3 over the model's own E_0, with T random sub-tables and projections."""

    def __init__(self, cfg, base, generator):
        self.cfg = cfg
        N, K, H = cfg["emb_neighbor_num"], cfg["emb_split_num"], cfg["hidden_size"]
        self.T = K * (N - 1)
        d = H // self.T
        self.base = base
        self.tables = [torch.randn((m, d), generator=generator) for m in emb.moduli(cfg)]
        self.projs = [torch.randn((H, d), generator=generator) / math.sqrt(d) for _ in range(self.T)]
        self.float64 = {"base": base.double().numpy(), "tables": [t.double().numpy() for t in self.tables],
                        "projs": [w.double().numpy() for w in self.projs]}

    def rows(self, stream, first):
        """inputs_embeds [1, len(stream) - first, H] (fp32) of positions first.. of the token stream."""
        w_cat = torch.cat(self.projs, dim=1).double()  # [H, T*d]: one GEMM for all sub-tables
        out = []
        for p, ids in zip(range(first, len(stream)), emb.stream_ids(self.cfg, stream, first)):
            g = torch.cat([self.tables[i][ids[i]] for i in range(self.T)]).double()
            e = (self.base[stream[p]].double() + w_cat @ g) / (1 + self.T)
            plain = emb.embed_row(self.cfg, self.float64, stream[p], ids, "none")
            assert np.allclose(e.numpy(), plain, rtol=1e-12, atol=1e-12)  # the per-table sum of SPEC §3
            out.append(e.float())
        return torch.stack(out).unsqueeze(0)

    def tensors(self):
        named = {f"model.ngram_embeddings.embedders.{i}.weight": t for i, t in enumerate(self.tables)}
        named.update({f"model.ngram_embeddings.post_projs.{i}.weight": w for i, w in enumerate(self.projs)})
        return named


class runner:
    """Forward passes of one model over token streams (plain: input_ids; n-gram: inputs_embeds)."""

    def __init__(self, model, ngram):
        self.model, self.ngram = model, ngram

    def logits(self, stream, first=0, cache=None):
        """Logits [len(stream) - first, V] of positions first.. given a cache holding positions < first."""
        kwargs = {"use_cache": cache is not None, "past_key_values": cache}
        if cache is not None:
            assert cache.get_seq_length() == first
        with torch.no_grad():
            if self.ngram is None:
                out = self.model(input_ids=torch.tensor([stream[first:]]), **kwargs)
            else:
                out = self.model(inputs_embeds=self.ngram.rows(stream, first), **kwargs)
        return out.logits[0].float()


def close(a, b):
    scale = max(float(b.abs().max()), 1.0)
    return float((a - b).abs().max()) <= CACHE_TOLERANCE * scale


def record(run, prompts, decode_tokens):
    """Everything expected.json holds, each cached path checked against a cache-free prefill."""
    full = [run.logits(p) for p in prompts]
    for p, chunks, rows in zip(prompts, CHUNKS, full):  # chunked prefill through the cache
        cache, at = DynamicCache(config=run.model.config), 0
        for size in chunks:
            assert close(run.logits(p[:at + size], at, cache), rows[at:at + size])
            at += size
        assert at == len(p)
    decode = []
    for p, tokens in zip(prompts, decode_tokens):
        cache = DynamicCache(config=run.model.config)
        run.logits(p, 0, cache)
        stream = list(p)
        for t in tokens:
            stream.append(t)
            decode.append(run.logits(stream, len(stream) - 1, cache)[0])
        assert close(torch.stack(decode[-len(tokens):]), run.logits(stream)[len(p):])
    greedy, greedy_margins = [], []
    for p in prompts:
        cache = DynamicCache(config=run.model.config)
        row = run.logits(p, 0, cache)[-1]
        stream = list(p)
        for step in range(MAX_NEW_TOKENS):
            top = torch.topk(row, 2).values
            greedy_margins.append(float(top[0] - top[1]))
            stream.append(int(torch.argmax(row)))
            if step + 1 < MAX_NEW_TOKENS:
                row = run.logits(stream, len(stream) - 1, cache)[0]
        assert run.logits(stream)[len(p) - 1:-1].argmax(-1).tolist() == stream[len(p):]
        greedy.append(stream[len(p):])
    return {"logits": torch.cat(full), "decode_logits": torch.stack(decode), "greedy": greedy,
            "min_greedy_margin": min(greedy_margins)}


# ----------------------------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------------------------

CASES = [
    # (a) plain embedding, q LoRA, default RoPE, zero experts, norm_topk_prob absent (as transformers saves it)
    {"name": "plain", "seed": 1100},
    # (b) q_lora_rank null: a single q_proj; norm_topk_prob written as false
    {"name": "q_proj", "seed": 1200, "config": {"q_lora_rank": None, "norm_topk_prob": False}},
    # (c) YaRN in rope_parameters, every field given (truncate false: a fractional ramp), norm_topk_prob true (e)
    {"name": "yarn", "seed": 1300,
     "config": {"norm_topk_prob": True, "max_position_embeddings": 256,
                "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                    "original_max_position_embeddings": 64, "beta_fast": 3.0, "beta_slow": 0.05,
                                    "mscale": 0.9, "mscale_all_dim": 0.7, "truncate": False}}},
    # (c) YaRN in the old spelling (top-level rope_theta, rope_scaling with "type"), rewritten after saving
    {"name": "yarn_rope_scaling", "seed": 1400, "old_rope_spelling": True,
     "config": {"max_position_embeddings": 80,
                "rope_parameters": {"rope_type": "yarn", "rope_theta": 20000.0, "factor": 2.5,
                                    "original_max_position_embeddings": 32, "beta_fast": 1.0, "beta_slow": 0.25,
                                    "mscale": 1.2, "mscale_all_dim": 0.5}}},
    # (f) attention_bias (q_a_proj, kv_a_proj_with_mqa, o_proj) and a router classifier bias
    {"name": "attention_bias", "seed": 1500, "config": {"attention_bias": True, "router_bias": True}},
    # (d) n-gram embedding N=3, K=2: T=4 tables of d=8, m_i = 97 + 2i
    {"name": "ngram_n3k2", "seed": 1600, "ngram": {"emb_neighbor_num": 3, "emb_split_num": 2,
                                                   "ngram_vocab_size_ratio": 1.5}},
    # (d) n-gram N=4, K=3: T=9 tables of d=floor(32/9)=3 (H not a multiple of T), m_i = trunc(2.3*64 + 2i + 1),
    # with YaRN and norm_topk_prob true (e): LongCat-Flash-Lite's layout in small
    {"name": "ngram_n4k3", "seed": 1700, "ngram": {"emb_neighbor_num": 4, "emb_split_num": 3,
                                                   "ngram_vocab_size_ratio": 2.3},
     "config": {"norm_topk_prob": True, "max_position_embeddings": 256,
                "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                    "original_max_position_embeddings": 64, "beta_fast": 1.0, "beta_slow": 0.25,
                                    "mscale": 1.0, "mscale_all_dim": 0.8}}},
]


def prompts_for(seed, V, eos):
    """Lengths 9, 2, 6; an EOS inside the first (it cuts the n-gram look-back), tokens 0 and V-1 present."""
    rng = np.random.default_rng(seed)
    r = lambda n: [int(t) for t in rng.integers(3, V - 1, size=n)]  # noqa: E731  (ordinary tokens)
    a = r(9)
    a[3], a[6] = eos, 0
    b = r(2)
    b[1] = V - 1
    prompts = [a, b, r(6)]
    decode = [r(DECODE_STEPS) for _ in prompts]
    decode[2][1] = eos
    return prompts, decode


def build(case, seed):
    torch.manual_seed(seed)
    config = make_config(case)
    model = LongcatFlashForCausalLM(config).eval()
    generator = torch.Generator().manual_seed(seed)
    randomize(model, generator)
    ngram = None
    if "ngram" in case:
        cfg = dict(case["ngram"], vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                   eos_token_id=config.eos_token_id)
        ngram = ngram_embedding(cfg, model.model.embed_tokens.weight.detach().clone(), generator)
    return model, ngram


def save(case, model, ngram, folder):
    model.save_pretrained(folder, safe_serialization=True)
    path = os.path.join(folder, "config.json")
    with open(path) as fh:
        config = json.load(fh)
    if ngram is not None:
        config["model_type"] = "longcat_flash_ngram"
        config["architectures"] = ["LongcatFlashNgramForCausalLM"]
        config.update(case["ngram"])
        weights = os.path.join(folder, "model.safetensors")
        tensors = safetensors.torch.load_file(weights)
        tensors.update({name: t.contiguous() for name, t in ngram.tensors().items()})
        safetensors.torch.save_file(tensors, weights, metadata={"format": "pt"})
    if case.get("old_rope_spelling"):
        rope = dict(config.pop("rope_parameters"))
        config["rope_theta"] = rope.pop("rope_theta")
        config["rope_scaling"] = {"type": rope.pop("rope_type"), **rope}
    emb.write_text(path, json.dumps(config, indent=2) + "\n")


def short(value):
    """A logit in its shortest fp32 form (the digits that round back to the same float32)."""
    return float(str(np.float32(value)))


def rows(tensor):
    return [[short(v) for v in row] for row in tensor.tolist()]


def check_reload(case, folder, run, prompts, recorded):
    """The saved folder is the model: transformers reloads it (the old RoPE spelling included) to the same logits;
    where no patch applies, unpatched transformers gives them too."""
    with open(os.path.join(folder, "config.json")) as fh:
        config = json.load(fh)
    if run.ngram is not None:
        # transformers maps the saved per-expert tensors back by model_type: reload the copy as "longcat_flash"
        tmp = tempfile.mkdtemp()
        shutil.copy(os.path.join(folder, "model.safetensors"), tmp)
        emb.write_text(os.path.join(tmp, "config.json"), json.dumps(dict(config, model_type="longcat_flash")))
        folder = tmp
    reloaded = LongcatFlashForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    again = runner(reloaded, run.ngram)
    assert torch.equal(torch.cat([again.logits(p) for p in prompts]), recorded["logits"]), case["name"]
    patched = config["q_lora_rank"] is None or config.get("norm_topk_prob") or config.get("router_bias")
    if not patched:
        install_patches(False)
        try:
            plain = LongcatFlashForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
        finally:
            install_patches(True)
        assert torch.equal(torch.cat([runner(plain, run.ngram).logits(p) for p in prompts]), recorded["logits"])
        if run.ngram is None:  # greedy through transformers' own generate()
            for p, tokens in zip(prompts, recorded["greedy"]):
                out = plain.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                     max_new_tokens=MAX_NEW_TOKENS, do_sample=False, pad_token_id=0)
                # generate() stops after an EOS; the goldens go on (ngemb::generate without a stop token)
                new = out[0, len(p):].tolist()
                assert new == tokens[:len(new)] and (new == tokens or new[-1] == plain.config.eos_token_id)
    if run.ngram is not None:
        shutil.rmtree(folder)
    return not patched


def write_case(case):
    folder = os.path.join(OUT_DIR, case["name"])
    for attempt in range(100):
        seed = case["seed"] + attempt
        model, ngram = build(case, seed)
        prompts, decode_tokens = prompts_for(case["seed"], model.config.vocab_size, model.config.eos_token_id)
        Router.margins = []
        run = runner(model, ngram)
        recorded = record(run, prompts, decode_tokens)
        if min(Router.margins) > ROUTER_MARGIN and recorded["min_greedy_margin"] > GREEDY_MARGIN:
            break
    else:
        raise RuntimeError(f"{case['name']}: no seed gave safe margins")
    router_margin = min(Router.margins)
    os.makedirs(folder)
    save(case, model, ngram, folder)
    unpatched = check_reload(case, folder, run, prompts, recorded)
    expected = {"sequences": prompts, "logits": rows(recorded["logits"]), "chunks": CHUNKS,
                "decode_tokens": decode_tokens, "decode_logits": rows(recorded["decode_logits"]),
                "max_new_tokens": MAX_NEW_TOKENS, "greedy": recorded["greedy"], "seed": seed,
                "min_router_margin": router_margin, "min_greedy_margin": recorded["min_greedy_margin"],
                "versions": VERSIONS}
    emb.write_text(os.path.join(folder, "expected.json"), emb.dump_json(expected) + "\n")
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    rope = model.model.rotary_emb
    print(f"{case['name']}: seed {seed}, {size} bytes, router margin {router_margin:.2e}, greedy margin "
          f"{recorded['min_greedy_margin']:.2e}, max |logit| {float(recorded['logits'].abs().max()):.2f}, "
          f"inv_freq {[round(float(f), 6) for f in rope.inv_freq]}, attention factor {rope.attention_scaling:.6f}, "
          f"softmax scale {model.model.layers[0].self_attn[0].scaling:.6f}"
          + ("" if not unpatched else ", unpatched transformers agrees"))
    return size


def main():
    installed = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
                 "safetensors": safetensors.__version__, "numpy": np.__version__}
    assert installed == VERSIONS, f"pinned {VERSIONS}, installed {installed}"
    torch.set_num_threads(1)  # deterministic reductions
    install_patches(True)
    if os.path.isdir(OUT_DIR):
        shutil.rmtree(OUT_DIR)
    os.makedirs(OUT_DIR)
    total = sum(write_case(case) for case in CASES)
    print(f"wrote {OUT_DIR} ({total} bytes)")


if __name__ == "__main__":
    main()
