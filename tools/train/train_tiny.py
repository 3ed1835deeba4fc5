#!/usr/bin/env python3
"""Trains tiny-longcat: LongCat-Flash-Lite's architecture scaled down to ~4.4M parameters, on bytes of Python source.

Pinned: torch 2.15.0, transformers 5.23.0, safetensors 0.8.0, numpy 2.4.6 (PyPI wheels, CPU). Run by hand from the
repository root, never by the test command:

    python3 tools/train/train_tiny.py --variant ngram   --out models/tiny-longcat        # the shipped model
    python3 tools/train/train_tiny.py --variant vanilla --out /tmp/tiny-longcat-vanilla  # the comparison

Architecture (the released layout, model_type "longcat_flash_ngram"): transformers' own LongcatFlashModel (shortcut
layers with two MLA sublayers, two dense SwiGLU sublayers and a MoE with zero experts, the selection bias
e_score_correction_bias and routed_scaling_factor) fed `inputs_embeds` from the n-gram embedding of SPEC §3
(written here, exact ids of SPEC §2: N=4, K=4, T=12 sub-tables of d=floor(H/T) rows, m_i = trunc(r*V + 2i + 1), so
never a multiple of V), plus the one-layer MTP module under the released `model.mtp.*` names (the wiring of
include/ngemb/model/mtp.hpp), trained on the next-next token. The vanilla variant ("longcat_flash") moves the n-gram
parameters into more routed experts (parameter-matched within one expert) and has a plain embedding.

Tokens: bytes 0..255, BOS 256, EOS 257, PAD 258 (include/ngemb/text/byte_tokenizer.hpp).

Corpus: every `*.py` file under /usr/lib/python3.11 (Debian's libpython3.11-minimal and -stdlib, Python 3.11.2 on
the machine that trained the shipped model; dist-packages and site-packages excluded), as bytes. A file is in the
validation split when zlib.crc32 of its path relative to that folder (UTF-8) is 0 mod 32, else in the training
split. Training stream: each training file in sorted path order as [BOS] + bytes + [EOS], concatenated; a batch
is random windows of CONTEXT + 1 tokens of it. The validation text (the validation files' bytes concatenated in
sorted path order) is written to tests/reference/tiny_longcat/validation.txt and is what every check reads.

Selection bias: aux-loss-free balancing (DeepSeek-V3, LongCat-Flash): after each step every router's bias moves by
BIAS_RATE towards equal load over all its experts, zero experts included.

Validation bits per byte (the protocol of ngemb's `generate --score`, include/ngemb/model/score.hpp): tokens
[BOS] + bytes; windows of CONTEXT inputs starting at 0, CONTEXT, 2*CONTEXT, ..., each scored as its own sequence
from position 0 (empty n-gram look-back); nats summed over every byte, divided by bytes * ln 2. The final figure is
computed with the shipped weights (bf16) in fp32, as ngemb computes it.

Outputs in --out: config.json, model.safetensors (every tensor bf16, as the released model), metrics.json.
For the ngram variant, also the goldens in tests/reference/tiny_longcat/ (see write_goldens).
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time
import zlib

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import LongcatFlashConfig, LongcatFlashForCausalLM
from transformers.models.longcat_flash import modeling_longcat_flash as lcf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import ngram_embedding_reference as emb  # noqa: E402  (exact SPEC §2 ids, to check the vectorised ones)

VERSIONS = {"torch": "2.15.0", "transformers": "5.23.0", "safetensors": "0.8.0", "numpy": "2.4.6"}
GOLDEN_DIR = os.path.join(ROOT, "tests", "reference", "tiny_longcat")
CORPUS_ROOT = "/usr/lib/python3.11"
VALIDATION_MODULUS = 32
BOS, EOS, PAD, VOCAB = 256, 257, 258, 259
CONTEXT = 512
MTP_WEIGHT = 0.3
BIAS_RATE = 1e-3

ARCHITECTURE = dict(vocab_size=VOCAB, hidden_size=192, num_layers=2, num_attention_heads=4, ffn_hidden_size=256,
                    q_lora_rank=96, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16, head_dim=16,
                    v_head_dim=32, n_routed_experts=16, zero_expert_num=8, moe_topk=4, expert_ffn_hidden_size=96,
                    routed_scaling_factor=2.0, rms_norm_eps=1e-5, max_position_embeddings=CONTEXT,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, bos_token_id=BOS,
                    eos_token_id=EOS, pad_token_id=PAD, tie_word_embeddings=False, attention_bias=False)
NGRAM = {"emb_neighbor_num": 4, "emb_split_num": 4, "ngram_vocab_size_ratio": 24}


# ----------------------------------------------------------------------------------------------------------------
# Corpus
# ----------------------------------------------------------------------------------------------------------------

def corpus_files(root):
    """Sorted relative paths of the corpus' .py files."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(s for s in subfolders if s not in ("dist-packages", "site-packages"))
        found += [os.path.relpath(os.path.join(folder, f), root) for f in files if f.endswith(".py")]
    return sorted(found)


def is_validation(relative_path):
    return zlib.crc32(relative_path.encode("utf-8")) % VALIDATION_MODULUS == 0


def read_corpus(root):
    train, validation = [], []
    for path in corpus_files(root):
        with open(os.path.join(root, path), "rb") as fh:
            (validation if is_validation(path) else train).append((path, fh.read()))
    return train, validation


def training_stream(files):
    tokens = []
    for _, data in files:
        tokens.append(BOS)
        tokens.extend(data)
        tokens.append(EOS)
    return torch.tensor(tokens, dtype=torch.int64)


# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------

class NgramEmbedding(nn.Module):
    """SPEC §3: e = (E_0[x_p] + W_cat [E_0[id_0] .. E_{T-1}[id_{T-1}]]) / (1 + T), ids of SPEC §2 per window."""

    def __init__(self, cfg, base):
        super().__init__()
        self.cfg = cfg
        N, K, H, V = cfg["emb_neighbor_num"], cfg["emb_split_num"], cfg["hidden_size"], cfg["vocab_size"]
        self.N, self.K, self.T = N, K, K * (N - 1)
        self.d = H // self.T
        self.base = base  # the model's embed_tokens (E_0)
        self.moduli = emb.moduli(cfg)
        self.embedders = nn.ModuleList(nn.Embedding(m, self.d) for m in self.moduli)
        self.post_proj = nn.Linear(self.T * self.d, H, bias=False)  # W_cat = [W_0 | ... | W_{T-1}]
        powers = torch.zeros(self.T, N, dtype=torch.int64)  # V^j mod m_i for j < n (order n of table i), else 0
        for i, m in enumerate(self.moduli):
            w = 1
            for j in range(1, i // K + 2):
                w = w * V % m
                powers[i, j] = w
        self.register_buffer("powers", powers, persistent=False)
        self.register_buffer("modulus", torch.tensor(self.moduli, dtype=torch.int64), persistent=False)
        for table in self.embedders:
            nn.init.normal_(table.weight, std=1.0)
        nn.init.normal_(base.weight, std=1.0)

    def ids(self, tokens):
        """[B, L] windows (each from position 0) -> [B, L, T] ids."""
        B, L = tokens.shape
        pos = torch.arange(L).expand(B, L)
        eos_at = torch.where(tokens == self.cfg["eos_token_id"], pos, torch.full_like(pos, -1))
        last_eos = torch.cummax(eos_at, dim=1).values
        cut = torch.cat([torch.full((B, 1), -1, dtype=torch.int64), last_eos[:, :-1]], dim=1)  # EOS strictly before
        acc = tokens.unsqueeze(-1).expand(B, L, self.T).clone()
        for j in range(1, self.N):
            back = torch.cat([torch.zeros((B, j), dtype=torch.int64), tokens[:, :-j]], dim=1)
            back = torch.where(pos - j > cut, back, torch.zeros_like(back))
            acc = acc + back.unsqueeze(-1) * self.powers[:, j]
        return acc % self.modulus

    def forward(self, tokens):
        ids = self.ids(tokens)
        rows = torch.cat([table(ids[..., i]) for i, table in enumerate(self.embedders)], dim=-1)
        return (self.base(tokens) + self.post_proj(rows)) / (1 + self.T)

    def tensors(self):
        named = {f"model.ngram_embeddings.embedders.{i}.weight": t.weight for i, t in enumerate(self.embedders)}
        for i in range(self.T):
            named[f"model.ngram_embeddings.post_projs.{i}.weight"] = self.post_proj.weight[:, i * self.d:(i + 1) * self.d]
        return named

    def load(self, tensors):
        with torch.no_grad():
            for i, t in enumerate(self.embedders):
                t.weight.copy_(tensors[f"model.ngram_embeddings.embedders.{i}.weight"])
            self.post_proj.weight.copy_(torch.cat(
                [tensors[f"model.ngram_embeddings.post_projs.{i}.weight"] for i in range(self.T)], dim=1))


class MTP(nn.Module):
    """LongCat's MTP module (include/ngemb/model/mtp.hpp): row t of h (the target's final-normed row) and token
    t+1 give a row whose lm_head logits predict token t+2."""

    def __init__(self, config):
        super().__init__()
        H, eps = config.hidden_size, config.rms_norm_eps
        self.embed_tokens = nn.Embedding(config.vocab_size, H)
        self.enorm = lcf.LongcatFlashRMSNorm(H, eps=eps)
        self.hnorm = lcf.LongcatFlashRMSNorm(H, eps=eps)
        self.eh_proj = nn.Linear(2 * H, H, bias=False)
        self.input_layernorm = lcf.LongcatFlashRMSNorm(H, eps=eps)
        self.self_attn = lcf.LongcatFlashMLA(config, layer_idx=0)
        self.post_attention_layernorm = lcf.LongcatFlashRMSNorm(H, eps=eps)
        self.mlp = lcf.LongcatFlashMLP(config, intermediate_size=config.ffn_hidden_size)
        self.norm = lcf.LongcatFlashRMSNorm(H, eps=eps)
        nn.init.normal_(self.embed_tokens.weight, std=1.0)

    def forward(self, hidden, next_tokens, position_embeddings):
        x = self.eh_proj(torch.cat([self.enorm(self.embed_tokens(next_tokens)), self.hnorm(hidden)], dim=-1))
        x = x + self.self_attn(self.input_layernorm(x), position_embeddings, None)[0]
        x = x + self.mlp(self.post_attention_layernorm(x))
        return self.norm(x)

    RENAMES = {"enorm.weight": "layers.0.enorm.m.weight", "hnorm.weight": "layers.0.hnorm.m.weight",
               "eh_proj.weight": "layers.0.eh_proj.weight", "input_layernorm.weight": "layers.0.input_layernorm.weight",
               "post_attention_layernorm.weight": "layers.0.post_attention_layernorm.weight"}

    def released_name(self, name):
        if name in self.RENAMES:
            return "model.mtp." + self.RENAMES[name]
        if name.startswith("self_attn."):
            return "model.mtp.layers.0." + name
        if name.startswith("mlp."):
            return "model.mtp.layers.0.transformer_layer." + name
        return "model.mtp." + name  # embed_tokens.weight, norm.weight

    def tensors(self):
        return {self.released_name(name): p for name, p in self.state_dict().items()}

    def load(self, tensors):
        self.load_state_dict({name: tensors[self.released_name(name)] for name in self.state_dict()})


class TinyLongcat(nn.Module):
    def __init__(self, variant, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.variant = variant
        fields = dict(ARCHITECTURE)
        if variant == "vanilla":
            fields["n_routed_experts"] += vanilla_extra_experts()
        config = LongcatFlashConfig(**fields)
        config._attn_implementation = "sdpa"
        self.config = config
        self.lm = LongcatFlashForCausalLM(config)
        self.ngram = None
        if variant == "ngram":
            cfg = dict(NGRAM, vocab_size=VOCAB, hidden_size=config.hidden_size, eos_token_id=EOS)
            self.ngram = NgramEmbedding(cfg, self.lm.model.embed_tokens)
        self.mtp = MTP(config)

    def embed(self, tokens):
        return self.lm.model.embed_tokens(tokens) if self.ngram is None else self.ngram(tokens)

    def hidden(self, tokens):
        """The target's final-normed rows [B, L, H]."""
        return self.lm.model(inputs_embeds=self.embed(tokens)).last_hidden_state

    def logits(self, tokens):
        return self.lm.lm_head(self.hidden(tokens))

    def losses(self, window):
        """Next-token and next-next-token (MTP) cross entropy of [B, L+1] windows."""
        inputs, targets = window[:, :-1], window[:, 1:]
        hidden = self.hidden(inputs)
        main = F.cross_entropy(self.lm.lm_head(hidden).flatten(0, 1).float(), targets.flatten())
        L = inputs.shape[1]
        positions = torch.arange(L - 1).unsqueeze(0)
        rope = self.lm.model.rotary_emb(hidden, positions)
        out = self.mtp(hidden[:, :-1], inputs[:, 1:], rope)
        mtp = F.cross_entropy(self.lm.lm_head(out).flatten(0, 1).float(), targets[:, 1:].flatten())
        return main, mtp

    def routers(self):
        return [m for m in self.lm.modules() if isinstance(m, lcf.LongcatFlashTopkRouter)]

    def checkpoint_tensors(self, folder):
        """Every tensor under its released name, as save_pretrained names the transformers part (per expert)."""
        self.lm.save_pretrained(folder, safe_serialization=True)
        path = os.path.join(folder, "model.safetensors")
        tensors = safetensors.torch.load_file(path)
        os.remove(path)
        routed = self.config.n_routed_experts
        # transformers keeps gate/up rows for the zero experts, which nothing reads: the released layout has none
        tensors = {n: t for n, t in tensors.items()
                   if not (".mlp.experts." in n and int(n.split(".mlp.experts.")[1].split(".")[0]) >= routed)}
        if self.ngram is not None:
            tensors.update(self.ngram.tensors())
        tensors.update(self.mtp.tensors())
        return {n: t.detach().to(torch.bfloat16).contiguous() for n, t in tensors.items()}


def vanilla_extra_experts():
    """Routed experts that hold the n-gram embedding's parameters (tables and W_cat), spread over the layers."""
    H, T = ARCHITECTURE["hidden_size"], NGRAM["emb_split_num"] * (NGRAM["emb_neighbor_num"] - 1)
    cfg = dict(NGRAM, vocab_size=VOCAB)
    d = H // T
    ngram_parameters = sum(m * d for m in emb.moduli(cfg)) + H * T * d
    per_expert = 3 * H * ARCHITECTURE["expert_ffn_hidden_size"] + H  # gate, up, down and its router row
    return round(ngram_parameters / (ARCHITECTURE["num_layers"] * per_expert))


def parameter_count(tensors):
    return sum(t.numel() for t in tensors.values())


# ----------------------------------------------------------------------------------------------------------------
# Training and evaluation
# ----------------------------------------------------------------------------------------------------------------

class LoadRecorder:
    """Counts each router's choices over a step, for the selection-bias update."""

    def __init__(self, routers):
        self.routers = routers
        self.counts = [torch.zeros(r.n_routed_experts) for r in routers]
        for i, r in enumerate(routers):
            r.register_forward_hook(lambda module, args, out, i=i: self.record(i, out[2]))

    def record(self, i, indices):
        if torch.is_grad_enabled():
            self.counts[i] += torch.bincount(indices.flatten(), minlength=len(self.counts[i])).float()

    @torch.no_grad()
    def update_biases(self):
        for r, counts in zip(self.routers, self.counts):
            r.e_score_correction_bias += BIAS_RATE * torch.sign(counts.mean() - counts)
            counts.zero_()


def score_text(model, data, batch=16):
    """The validation protocol (module docstring): (nats, bytes) of one byte string, computed in model's dtype."""
    tokens = torch.tensor([BOS] + list(data), dtype=torch.int64)
    L = len(data)
    starts = list(range(0, L, CONTEXT))
    nats = 0.0
    full = [s for s in starts if s + CONTEXT <= L]
    with torch.no_grad():
        for b in range(0, len(full), batch):
            windows = torch.stack([tokens[s:s + CONTEXT + 1] for s in full[b:b + batch]])
            logp = torch.log_softmax(model.logits(windows[:, :-1]).double(), dim=-1)
            nats -= float(logp.gather(-1, windows[:, 1:].unsqueeze(-1)).sum())
        for s in starts[len(full):]:
            window = tokens[s:].unsqueeze(0)
            logp = torch.log_softmax(model.logits(window[:, :-1]).double(), dim=-1)
            nats -= float(logp.gather(-1, window[:, 1:].unsqueeze(-1)).sum())
    return nats, L


def bits_per_byte(nats, count):
    return nats / (count * math.log(2))


def learning_rate(step, steps, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model, stream, args, validation_sample):
    generator = torch.Generator().manual_seed(args.seed + 1)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95))
    recorder = LoadRecorder(model.routers())
    log = []
    start = time.time()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
        offsets = torch.randint(0, len(stream) - CONTEXT - 1, (args.batch,), generator=generator)
        windows = torch.stack([stream[o:o + CONTEXT + 1] for o in offsets.tolist()])
        model.train()
        main, mtp = model.losses(windows)
        loss = main + MTP_WEIGHT * mtp
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        recorder.update_biases()
        if step % args.log_every == 0 or step + 1 == args.steps:
            model.eval()
            nats, count = score_text(model, validation_sample)
            entry = {"step": step, "train_loss": float(main), "train_mtp_loss": float(mtp),
                     "validation_bpb_sample": bits_per_byte(nats, count), "seconds": time.time() - start}
            log.append(entry)
            print(json.dumps(entry), flush=True)
    return log


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint, reload, goldens
# ----------------------------------------------------------------------------------------------------------------

def write_checkpoint(model, out):
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tensors = model.checkpoint_tensors(tmp)
        with open(os.path.join(tmp, "config.json")) as fh:
            config = json.load(fh)
    if model.ngram is not None:
        config.update(NGRAM)
        config["model_type"] = "longcat_flash_ngram"
        config["architectures"] = ["LongcatFlashNgramForCausalLM"]
    config["torch_dtype"] = "bfloat16"
    config.pop("dtype", None)
    safetensors.torch.save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    emb.write_text(os.path.join(out, "config.json"), json.dumps(config, indent=2) + "\n")
    return tensors


def load_released(lm, tensors):
    """Loads transformers' model from released-layout tensors: per-expert gate/up/down packed back into
    gate_up_proj / down_proj (the zero experts' unused gate/up rows stay as they are); every other name 1:1. Every
    tensor outside model.ngram_embeddings / model.mtp must be consumed."""
    state, used = {}, set()
    for name, current in lm.state_dict().items():
        if name.endswith(".mlp.experts.gate_up_proj") or name.endswith(".mlp.experts.down_proj"):
            prefix = name.rsplit(".", 1)[0]
            packed = current.clone()
            for e in range(lm.config.n_routed_experts):
                parts = ["gate_proj", "up_proj"] if name.endswith("gate_up_proj") else ["down_proj"]
                names = [f"{prefix}.{e}.{part}.weight" for part in parts]
                packed[e] = torch.cat([tensors[n] for n in names], dim=0)
                used.update(names)
            state[name] = packed
        else:
            state[name] = tensors[name]
            used.add(name)
    lm.load_state_dict(state)
    left = [n for n in tensors if n not in used and not n.startswith(("model.ngram_embeddings.", "model.mtp."))]
    assert not left, f"checkpoint tensors nothing reads: {left}"


def reload(variant, seed, out, dtype):
    """The shipped folder as a model: its bf16 values widened to dtype."""
    model = TinyLongcat(variant, seed)
    tensors = {n: t.to(dtype) for n, t in safetensors.torch.load_file(os.path.join(out, "model.safetensors")).items()}
    model.to(dtype)
    load_released(model.lm, tensors)
    if model.ngram is not None:
        model.ngram.load(tensors)
    model.mtp.load(tensors)
    return model.eval()


class MarginRouter:
    """Records every router's k-th minus (k+1)-th selection key (a margin too small would let an fp32 engine pick
    another expert than the float64 reference)."""

    def __init__(self, routers):
        self.margins = []
        for r in routers:
            r.register_forward_hook(self.record)

    def record(self, module, args, out):
        scores = out[0].softmax(dim=-1)
        keys = torch.sort(scores + module.e_score_correction_bias.unsqueeze(0), dim=-1, descending=True).values
        self.margins.extend((keys[:, module.top_k - 1] - keys[:, module.top_k]).tolist())


DEMO_PROMPT = b"def fibonacci("  # README's first command
PROMPT_BYTES = 48
GREEDY_BYTES = 64
# An fp32 forward's selection keys differ from float64's by up to 7.2e-7 here (measured on nine prompts): a margin
# 7x that keeps an fp32 engine on the reference's experts.
ROUTER_MARGIN = 5e-6
GREEDY_MARGIN = 1e-3


def write_goldens(validation_files, seed, out):
    """tests/reference/tiny_longcat/: float64 logits of the shipped weights for the README's prompt and three
    validation prompts (each file's first PROMPT_BYTES bytes), the greedy continuation of each, and demo.txt (what
    `generate --prompt-text` prints of the README's prompt: the prompt and its greedy bytes up to EOS). A validation
    prompt whose router or greedy margins would let an fp32 engine choose another expert or token is skipped."""
    model = reload("ngram", seed, out, torch.float64)
    margins = MarginRouter(model.routers())
    cases, logits_rows = [], []
    candidates = [("README prompt", DEMO_PROMPT)] + [(p, d[:PROMPT_BYTES]) for p, d in validation_files
                                                     if len(d) >= PROMPT_BYTES]
    for source, text in candidates:
        if len(cases) == 4:
            break
        margins.margins = []
        prompt = [BOS] + list(text)
        with torch.no_grad():
            rows = model.logits(torch.tensor([prompt]))[0]
            stream, greedy_margins = list(prompt), []
            for _ in range(GREEDY_BYTES):
                last = model.logits(torch.tensor([stream]))[0, -1]
                top = torch.topk(last, 2).values
                greedy_margins.append(float(top[0] - top[1]))
                stream.append(int(last.argmax()))
        safe = min(margins.margins) > ROUTER_MARGIN and min(greedy_margins) > GREEDY_MARGIN
        if not safe:
            assert cases, f"the README prompt's margins are unsafe: router {min(margins.margins):.2e}, greedy " \
                          f"{min(greedy_margins):.2e}"
            print(f"golden: skipped {source} (router margin {min(margins.margins):.2e}, greedy "
                  f"{min(greedy_margins):.2e})")
            continue
        cases.append({"source": source, "prompt": prompt, "greedy": stream[len(prompt):],
                      "min_router_margin": min(margins.margins), "min_greedy_margin": min(greedy_margins)})
        logits_rows.append(rows.float())
    os.makedirs(GOLDEN_DIR, exist_ok=True)
    safetensors.torch.save_file({f"logits.{i}": r.contiguous() for i, r in enumerate(logits_rows)},
                                os.path.join(GOLDEN_DIR, "logits.safetensors"))
    expected = {"cases": cases, "versions": VERSIONS, "note": "logits.{i}: [len(prompt) x V] float64 logits "
                "rounded to fp32, of case i's prompt, computed from the shipped bf16 weights"}
    emb.write_text(os.path.join(GOLDEN_DIR, "expected.json"), emb.dump_json(expected) + "\n")
    demo = cases[0]["greedy"]
    demo = demo[:demo.index(EOS)] if EOS in demo else demo
    with open(os.path.join(GOLDEN_DIR, "demo.txt"), "wb") as fh:
        fh.write(DEMO_PROMPT + bytes(demo))
    for c in cases:
        print("golden:", c["source"], repr(bytes(t for t in c["greedy"] if t < 256).decode("utf-8", "replace")))


def measure_activation(model, data):
    """Mean routed experts that compute (not zero experts) per token per MoE, over the start of the validation text."""
    real, total = [0], [0]
    routed = model.config.n_routed_experts

    def record(module, args, out):
        real[0] += int((out[2] < routed).sum())
        total[0] += out[2].shape[0]

    handles = [r.register_forward_hook(record) for r in model.routers()]
    score_text(model, data[:64 * CONTEXT])
    for h in handles:
        h.remove()
    return real[0] / total[0]


def activated_parameters(model, tensors, real_experts):
    """Parameters a token reads: everything but the tables' unused rows, the unchosen experts and the MTP."""
    cfg = model.config
    H, E = cfg.hidden_size, cfg.expert_ffn_hidden_size
    dense = sum(t.numel() for n, t in tensors.items() if not n.startswith("model.mtp.")
                and ".mlp.experts." not in n and "embedders" not in n and "embed_tokens" not in n)
    rows = H  # the token's E_0 row
    if model.ngram is not None:
        rows += model.ngram.T * model.ngram.d
    per_expert = 3 * H * E
    return {"nominal": dense + rows + cfg.num_layers * cfg.moe_topk * per_expert,
            "measured": round(dense + rows + cfg.num_layers * real_experts * per_expert)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=["ngram", "vanilla"], required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=60)
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--corpus", default=CORPUS_ROOT)
    parser.add_argument("--no-goldens", action="store_true")
    parser.add_argument("--goldens-only", action="store_true", help="rewrite the goldens of the ngram model in --out")
    args = parser.parse_args()
    installed = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
                 "safetensors": safetensors.__version__, "numpy": np.__version__}
    assert installed == VERSIONS, f"pinned {VERSIONS}, installed {installed}"
    torch.set_num_threads(args.threads)

    train_files, validation_files = read_corpus(args.corpus)
    validation_text = b"".join(data for _, data in validation_files)
    stream = training_stream(train_files)
    print(f"corpus: {len(train_files)} training files ({len(stream)} tokens), {len(validation_files)} validation "
          f"files ({len(validation_text)} bytes)")

    if args.goldens_only:
        write_goldens(validation_files, args.seed, args.out)
        return
    model = TinyLongcat(args.variant, args.seed)
    if model.ngram is not None:  # the vectorised ids are SPEC §2's
        check = torch.randint(0, VOCAB, (3, 40), generator=torch.Generator().manual_seed(7))
        check[0, 5], check[1, 0], check[2, 38] = EOS, EOS, EOS
        got = model.ngram.ids(check)
        for b in range(3):
            assert got[b].tolist() == emb.stream_ids(model.ngram.cfg, check[b].tolist(), 0)
    with torch.no_grad():  # the MTP's attention is causal (sdpa without a mask)
        hidden = torch.randn(1, 11, model.config.hidden_size)
        rope = model.lm.model.rotary_emb(hidden, torch.arange(11).unsqueeze(0))
        tokens = torch.randint(0, 256, (1, 11))
        changed = hidden.clone()
        changed[:, 8:] += 1
        assert torch.equal(model.mtp(hidden, tokens, rope)[:, :8], model.mtp(changed, tokens, rope)[:, :8])
    log = train(model, stream, args, validation_text[:16 * CONTEXT])

    tensors = write_checkpoint(model, args.out)
    shipped = reload(args.variant, args.seed, args.out, torch.float32)
    nats, count = score_text(shipped, validation_text)
    real_experts = measure_activation(shipped, validation_text)
    metrics = {"variant": args.variant, "steps": args.steps, "batch": args.batch, "context": CONTEXT,
               "tokens_seen": args.steps * args.batch * CONTEXT, "train_seconds": log[-1]["seconds"],
               "final_train_loss": log[-1]["train_loss"], "final_train_mtp_loss": log[-1]["train_mtp_loss"],
               "validation_nats": nats, "validation_bytes": count, "validation_loss": nats / count,
               "validation_bpb": bits_per_byte(nats, count), "parameters": parameter_count(tensors),
               "parameters_without_mtp": sum(t.numel() for n, t in tensors.items() if not n.startswith("model.mtp.")),
               "real_experts_per_token": real_experts,
               "activated_parameters": activated_parameters(shipped, tensors, real_experts),
               "seed": args.seed, "lr": args.lr, "warmup": args.warmup, "mtp_weight": MTP_WEIGHT,
               "bias_rate": BIAS_RATE, "corpus": args.corpus, "validation_modulus": VALIDATION_MODULUS,
               "train_files": len(train_files), "validation_files": [p for p, _ in validation_files],
               "versions": VERSIONS, "log": log}
    emb.write_text(os.path.join(args.out, "metrics.json"), json.dumps(metrics, indent=1) + "\n")
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("log", "validation_files")}, indent=1))
    if args.variant == "ngram" and not args.no_goldens:
        os.makedirs(GOLDEN_DIR, exist_ok=True)
        with open(os.path.join(GOLDEN_DIR, "validation.txt"), "wb") as fh:
            fh.write(validation_text)
        write_goldens(validation_files, args.seed, args.out)


if __name__ == "__main__":
    main()
