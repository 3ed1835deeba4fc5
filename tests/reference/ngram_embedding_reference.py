#!/usr/bin/env python3
"""Independent reference generator for the LongCat n-gram embedding forward (golden data for the C++ tests).

Regenerate (from the repository root, Debian's python with numpy only; no torch, no safetensors package):

    /usr/bin/python3 tests/reference/ngram_embedding_reference.py           # rewrites tests/reference/embedding/
    /usr/bin/python3 tests/reference/ngram_embedding_reference.py --check   # re-verifies the folder, writes nothing

Generation is deterministic (fixed seeds): running it twice gives byte-identical files. Every generation run ends
with the same verification that --check does.

Follows /work/shared/SPEC.md sections 1-4 literally and shares no code with the C++ library:
  * T = K*(N-1) sub-tables, i = (n-2)*K + k; d = floor(H/T); m_i = trunc(r*V + 2i + 1) in double precision, or
    m_base + 2i + 1 when the config gives "m_base".
  * ids: id_i(p) = (t_0 + sum_{j=1..n-1} t_j * (V^j mod m_i)) mod m_i with exact Python ints; look-back before the
    stream start is 0; an EOS strictly before p cuts the look-back (it and everything before contribute 0); an EOS as
    current token hashes with its full look-back.
  * n = sum_{i<T} W_i @ E_i[id_i(p)], W_i stored [H, d] (Linear weight), E_i stored [m_i, d], E_0 [V, H]:
        none:        e = (E_0[x_p] + n) / (1 + T)
        sqrt_hidden: e = (E_0[x_p] + sqrt(H) * n) / (1 + T)
        layer_norm:  e = (E_0[x_p] + LN(n)) / (1 + T), LN(n) = (n - mean) / sqrt(var + eps) * gamma + beta,
                     population variance over H, eps = 1e-5, gamma/beta = model.ngram_embeddings.norm.{weight,bias}.
  * PLNE (per-layer n-gram embedding): layer l has its own E_i^(l) [m_i, d] and W_i^(l) [F, d];
        e^(l) = (sum_i W_i^(l) E_i^(l)[id_i]) / T,   y^(l) = W_d^(l) (SiLU(W_a^(l) x) * e^(l)),  SiLU(z) = z/(1+e^-z),
    W_a = model.layers.{l}.ngram_ffn.gate_proj.weight [F, H], W_d = model.layers.{l}.ngram_ffn.down_proj.weight [H, F].
All math is float64 on the *stored* values: bf16 tables are random float32 rounded to bf16 (round to nearest even on
the bit pattern) and the decoded bf16 values are used; fp16 tables are numpy float16.

Output: tests/reference/embedding/<case>/ with config.json, the checkpoint (model.safetensors, or shards
model-0000k-of-0000K.safetensors + model.safetensors.index.json) and expected.json:
    {"sequences": [[tokens], ...] (ragged batch, each sequence hashed on its own, no context),
     "ids": [[T ids] per token, flattened in batch order],
     "outputs": {"none": [[H] per token], "sqrt_hidden": [...], "layer_norm": [...]}, "layer_norm_eps": 1e-5}
For the plne case "outputs" is replaced by "inputs" ([[H] per token], float32-representable x) and
"plne": [{"embedding": [[F] per token], "ffn": [[H] per token]} per layer].
f32_single also holds cli_input.txt / cli_expected.txt for the `ngram_embed --checkpoint DIR` example: a line is
"context | tokens" (or just tokens); every current token prints its H "none" values ('%.17g', single spaces), and
every line ends with a blank line.
"""
import json
import math
import os
import shutil
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "embedding")
LN_EPS = 1e-5
MODES = ("none", "sqrt_hidden", "layer_norm")


# ----------------------------------------------------------------------------------------------------------------
# Hash (SPEC §1-2), exact Python ints
# ----------------------------------------------------------------------------------------------------------------

def moduli(cfg):
    V, N, K = cfg["vocab_size"], cfg["emb_neighbor_num"], cfg["emb_split_num"]
    T = K * (N - 1)
    if "m_base" in cfg:
        return [int(cfg["m_base"]) + 2 * i + 1 for i in range(T)]
    return [int(float(cfg["ngram_vocab_size_ratio"]) * V + 2 * i + 1) for i in range(T)]


def stream_ids(cfg, stream, first):
    """T ids for every position p >= first of `stream` (positions before `first` are look-back only)."""
    V, N, K = cfg["vocab_size"], cfg["emb_neighbor_num"], cfg["emb_split_num"]
    eos = cfg.get("eos_token_id")
    mods = moduli(cfg)
    for t in stream:
        assert 0 <= t < V
    rows = []
    for p in range(first, len(stream)):
        # look-back tokens t_1..t_{N-1}: 0 before the stream start and at/before an EOS strictly before p
        back = []
        cut = False
        for j in range(1, N):
            q = p - j
            if q < 0 or cut:
                back.append(0)
                continue
            if eos is not None and stream[q] == eos:
                cut = True
                back.append(0)
                continue
            back.append(stream[q])
        ids = []
        for i in range(K * (N - 1)):
            n, m = i // K + 2, mods[i]
            acc, w = stream[p], 1
            for j in range(1, n):
                w = w * V % m  # V^j mod m_i by repeated multiply-mod
                acc += back[j - 1] * w
            ids.append(acc % m)
        rows.append(ids)
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Number formats
# ----------------------------------------------------------------------------------------------------------------

def to_bf16_bits(x32):
    """float32 array -> uint16 bf16 bit patterns, round to nearest even (finite inputs only)."""
    bits = np.ascontiguousarray(x32, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + np.uint64(0x7FFF) + ((bits >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
    return rounded.astype(np.uint16)


def bf16_bits_to_f64(bits):
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)


def make_tensor(dtype, values32):
    """(dtype tag, shape, little-endian bytes, decoded float64 values) from a float32 array."""
    values32 = np.asarray(values32, dtype=np.float32)
    if dtype == "F32":
        stored = values32.astype("<f4")
        decoded = stored.astype(np.float64)
    elif dtype == "F16":
        stored = values32.astype("<f2")
        decoded = stored.astype(np.float64)
    elif dtype == "BF16":
        stored = to_bf16_bits(values32).astype("<u2")
        decoded = bf16_bits_to_f64(stored)
    else:
        raise ValueError(dtype)
    assert np.all(np.isfinite(decoded)) and np.any(decoded != 0)
    return {"dtype": dtype, "shape": list(values32.shape), "bytes": stored.tobytes(), "values": decoded}


# ----------------------------------------------------------------------------------------------------------------
# safetensors writer and an independent reader
# ----------------------------------------------------------------------------------------------------------------

def write_safetensors(path, tensors):
    """tensors: list of (name, tensor dict) in file order; data back to back, header padded with spaces."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, t in tensors:
        header[name] = {"dtype": t["dtype"], "shape": t["shape"], "data_offsets": [offset, offset + len(t["bytes"])]}
        offset += len(t["bytes"])
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-(8 + len(text))) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for _, t in tensors:
            fh.write(t["bytes"])
    return offset


ITEM_SIZE = {"F32": 4, "F16": 2, "BF16": 2}


def read_safetensors(path):
    """name -> (dtype, shape, raw bytes, float64 values); asserts the layout rules."""
    with open(path, "rb") as fh:
        blob = fh.read()
    assert len(blob) >= 8, path
    (n,) = struct.unpack("<Q", blob[:8])
    assert (8 + n) % 8 == 0 and 8 + n <= len(blob), (path, n)
    raw_header = blob[8:8 + n]
    assert raw_header.startswith(b"{") and raw_header.rstrip(b" ").endswith(b"}"), path  # only trailing spaces
    header = json.loads(raw_header.decode("utf-8"))
    assert header.pop("__metadata__") == {"format": "pt"}, path
    data = blob[8 + n:]
    spans = []
    out = {}
    for name, entry in header.items():
        assert set(entry) == {"dtype", "shape", "data_offsets"}, (path, name)
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        count = 1
        for s in shape:
            assert isinstance(s, int) and s > 0
            count *= s
        assert end - begin == count * ITEM_SIZE[dtype], (path, name)
        spans.append((begin, end))
        raw = data[begin:end]
        if dtype == "F32":
            vals = [struct.unpack_from("<f", raw, 4 * k)[0] for k in range(count)]
        elif dtype == "F16":
            vals = [struct.unpack_from("<e", raw, 2 * k)[0] for k in range(count)]
        else:  # BF16: the upper half of a float32
            vals = [struct.unpack("<f", b"\0\0" + raw[2 * k:2 * k + 2])[0] for k in range(count)]
        out[name] = (dtype, shape, raw, np.array(vals, dtype=np.float64).reshape(shape))
    spans.sort()
    pos = 0
    for begin, end in spans:  # contiguous, no gaps or overlaps, covering the whole data section
        assert begin == pos, (path, begin, pos)
        pos = end
    assert pos == len(data), (path, pos, len(data))
    return out


def load_checkpoint(folder):
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as fh:
            idx = json.load(fh)
        files = sorted(set(idx["weight_map"].values()))
        tensors = {}
        for f in files:
            part = read_safetensors(os.path.join(folder, f))
            for name in part:
                assert idx["weight_map"][name] == f, (name, f)
            assert not set(part) & set(tensors)
            tensors.update(part)
        assert set(tensors) == set(idx["weight_map"])
        assert idx["metadata"]["total_size"] == sum(len(t[2]) for t in tensors.values())
        return tensors
    return read_safetensors(os.path.join(folder, "model.safetensors"))


# ----------------------------------------------------------------------------------------------------------------
# Forward (SPEC §3), float64
# ----------------------------------------------------------------------------------------------------------------

def ngram_sum(tables, projs, ids):
    """sum_i W_i @ E_i[id_i]: tables[i] [m_i, d], projs[i] [out, d]."""
    acc = np.zeros(projs[0].shape[0], dtype=np.float64)
    for i, row in enumerate(ids):
        acc += projs[i] @ tables[i][row]
    return acc


def embed_row(cfg, w, token, ids, mode):
    T = len(ids)
    H = cfg["hidden_size"]
    n = ngram_sum(w["tables"], w["projs"], ids)
    if mode == "sqrt_hidden":
        n = math.sqrt(H) * n
    elif mode == "layer_norm":
        mean = n.sum() / H
        var = ((n - mean) ** 2).sum() / H
        n = (n - mean) / math.sqrt(var + LN_EPS) * w["gamma"] + w["beta"]
    return (w["base"][token] + n) / (1 + T)


def silu(z):
    return z / (1.0 + np.exp(-z))


def plne_rows(w_layer, ids, x):
    T = len(ids)
    e = ngram_sum(w_layer["tables"], w_layer["projs"], ids) / T
    y = w_layer["down"] @ (silu(w_layer["gate"] @ x) * e)
    return e, y


def weights_from(cfg, tensors):
    """float64 arrays by role from name -> float64 values."""
    N, K = cfg["emb_neighbor_num"], cfg["emb_split_num"]
    T = K * (N - 1)
    if cfg.get("per_layer_ngram_embedding"):
        layers = []
        for l in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{l}."
            layers.append({"tables": [tensors[f"{p}ngram_embeddings.embedders.{i}.weight"] for i in range(T)],
                           "projs": [tensors[f"{p}ngram_embeddings.post_projs.{i}.weight"] for i in range(T)],
                           "gate": tensors[f"{p}ngram_ffn.gate_proj.weight"],
                           "down": tensors[f"{p}ngram_ffn.down_proj.weight"]})
        return {"layers": layers}
    return {"base": tensors["model.embed_tokens.weight"],
            "tables": [tensors[f"model.ngram_embeddings.embedders.{i}.weight"] for i in range(T)],
            "projs": [tensors[f"model.ngram_embeddings.post_projs.{i}.weight"] for i in range(T)],
            "gamma": tensors["model.ngram_embeddings.norm.weight"],
            "beta": tensors["model.ngram_embeddings.norm.bias"]}


def expected_for(cfg, w, sequences, inputs=None):
    ids = []
    for seq in sequences:
        ids.extend(stream_ids(cfg, seq, 0))
    tokens = [t for seq in sequences for t in seq]
    out = {"sequences": sequences, "ids": ids}
    if "layers" in w:
        out["inputs"] = [list(map(float, x)) for x in inputs]
        out["plne"] = []
        for wl in w["layers"]:
            embs, ffns = [], []
            for row, x in zip(ids, inputs):
                e, y = plne_rows(wl, row, np.asarray(x, dtype=np.float64))
                embs.append([float(v) for v in e])
                ffns.append([float(v) for v in y])
            out["plne"].append({"embedding": embs, "ffn": ffns})
    else:
        out["outputs"] = {mode: [[float(v) for v in embed_row(cfg, w, t, row, mode)] for t, row in zip(tokens, ids)]
                          for mode in MODES}
        out["layer_norm_eps"] = LN_EPS
    return out


# ----------------------------------------------------------------------------------------------------------------
# Output formatting
# ----------------------------------------------------------------------------------------------------------------

def dump_json(obj, indent=0):
    """JSON with one innermost row per line (floats as Python repr: shortest round-trip)."""
    pad = " " * indent
    if isinstance(obj, dict):
        items = [f'{pad}  {json.dumps(k)}: {dump_json(v, indent + 2).lstrip()}' for k, v in obj.items()]
        return pad + "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and obj and all(isinstance(v, (list, dict)) for v in obj):
        inner = [dump_json(v, indent + 2) for v in obj]
        return pad + "[\n" + ",\n".join(inner) + "\n" + pad + "]"
    return pad + json.dumps(obj, separators=(",", ":"))


def write_text(path, text):
    with open(path, "w", newline="\n") as fh:
        fh.write(text)


def cli_lines(text):
    return text[:-1].split("\n") if text.endswith("\n") else text.split("\n")


def cli_expected(cfg, w, input_text):
    out = []
    for line in cli_lines(input_text):
        parts = line.split("|")
        assert len(parts) <= 2
        context = [int(t) for t in parts[0].split()] if len(parts) == 2 else []
        tokens = [int(t) for t in parts[-1].split()]
        stream = context + tokens
        for t, row in zip(tokens, stream_ids(cfg, stream, len(context))):
            out.append(" ".join("%.17g" % v for v in embed_row(cfg, w, t, row, "none")) + "\n")
        out.append("\n")
    return "".join(out)


# ----------------------------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------------------------

def batch(rng, V, E):
    """A ragged batch: empty, length 1, EOS at start/middle/consecutive/end, tokens 0 and V-1, random ones.
    E is the EOS token (or, for a config without EOS, an ordinary token placed where EOS would be)."""
    r = lambda L: [int(t) for t in rng.integers(3, V - 1, size=L)]  # noqa: E731  (non-special tokens)
    a, b, c, d, e, f = r(6)
    return [
        [0, a, V - 1, b, 0, V - 1, c, d],        # tokens 0 and V-1
        [],                                       # empty sequence
        [a],                                      # length 1
        [E, a, b, c, d],                          # EOS at the start
        [a, E, b, c, d, e],                       # EOS at window position 1
        [a, b, E, c, d, e, f],                    # EOS at window position 2
        [a, E, E, b, c, E, E, E, d, e],           # consecutive EOS
        [a, b, c, d, E],                          # EOS at the end
        [E],                                      # EOS alone
        [V - 1] * 5,
        [0] * 4,
        r(int(rng.integers(9, 15))),
        [int(t) for t in rng.integers(0, V, size=12)],
    ]


def base_case(name, dtype, cfg, seed, shards):
    rng = np.random.default_rng(seed)
    V, H = cfg["vocab_size"], cfg["hidden_size"]
    T = cfg["emb_split_num"] * (cfg["emb_neighbor_num"] - 1)
    d = H // T
    mods = moduli(cfg)
    for m in mods:
        assert m % V != 0 and m > 0
    tensors = [("model.embed_tokens.weight", make_tensor(dtype, rng.normal(0, 0.5, (V, H))))]
    for i in range(T):
        tensors.append((f"model.ngram_embeddings.embedders.{i}.weight",
                        make_tensor(dtype, rng.normal(0, 1.0, (mods[i], d)))))
    for i in range(T):
        tensors.append((f"model.ngram_embeddings.post_projs.{i}.weight",
                        make_tensor(dtype, rng.normal(0, 1.0 / math.sqrt(d), (H, d)))))
    tensors.append(("model.ngram_embeddings.norm.weight", make_tensor(dtype, 1.0 + rng.normal(0, 0.1, H))))
    tensors.append(("model.ngram_embeddings.norm.bias", make_tensor(dtype, rng.normal(0, 0.05, H))))
    eos = cfg.get("eos_token_id")
    sequences = batch(rng, V, eos if eos is not None else 2)
    return {"name": name, "cfg": cfg, "tensors": tensors, "shards": shards, "sequences": sequences, "inputs": None}


def plne_case(name, cfg, seed):
    rng = np.random.default_rng(seed)
    V, H, F, L = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    T = cfg["emb_split_num"] * (cfg["emb_neighbor_num"] - 1)
    d = H // T
    mods = moduli(cfg)
    tensors = []
    for l in range(L):
        p = f"model.layers.{l}."
        for i in range(T):
            tensors.append((f"{p}ngram_embeddings.embedders.{i}.weight",
                            make_tensor("F32", rng.normal(0, 1.0, (mods[i], d)))))
        for i in range(T):
            tensors.append((f"{p}ngram_embeddings.post_projs.{i}.weight",
                            make_tensor("F32", rng.normal(0, 1.0 / math.sqrt(d), (F, d)))))
        tensors.append((f"{p}ngram_ffn.gate_proj.weight", make_tensor("F32", rng.normal(0, 1.0 / math.sqrt(H), (F, H)))))
        tensors.append((f"{p}ngram_ffn.down_proj.weight", make_tensor("F32", rng.normal(0, 1.0 / math.sqrt(F), (H, F)))))
    sequences = batch(rng, V, cfg["eos_token_id"])
    count = sum(len(s) for s in sequences)
    inputs = rng.normal(0, 1.0, (count, H)).astype(np.float32).astype(np.float64)
    return {"name": name, "cfg": cfg, "tensors": tensors, "shards": 1, "sequences": sequences, "inputs": inputs}


def cases():
    return [
        base_case("f32_single", "F32",
                  {"vocab_size": 64, "hidden_size": 48, "emb_neighbor_num": 3, "emb_split_num": 2,
                   "ngram_vocab_size_ratio": 1.5, "eos_token_id": 2, "torch_dtype": "float32"}, 101, 1),
        base_case("bf16_sharded", "BF16",
                  {"vocab_size": 50, "hidden_size": 40, "emb_neighbor_num": 4, "emb_split_num": 3,
                   "m_base": 200, "eos_token_id": 7, "torch_dtype": "bfloat16"}, 202, 3),
        base_case("f16_bigram", "F16",
                  {"vocab_size": 33, "hidden_size": 20, "emb_neighbor_num": 2, "emb_split_num": 1,
                   "ngram_vocab_size_ratio": 2.25, "torch_dtype": "float16"}, 303, 1),
        plne_case("plne",
                  {"vocab_size": 40, "hidden_size": 24, "emb_neighbor_num": 3, "emb_split_num": 2,
                   "ngram_vocab_size_ratio": 2.0, "eos_token_id": 2, "num_hidden_layers": 2,
                   "intermediate_size": 16, "per_layer_ngram_embedding": True, "torch_dtype": "float32"}, 404),
    ]


CLI_INPUT = "5 6 7 8 9\n10 2 11 | 12 13 2 14\n1 2 |\n\n0 63 | 2 2 63 0\n| 40 41 42\n"


def write_case(case):
    folder = os.path.join(OUT_DIR, case["name"])
    os.makedirs(folder)
    cfg = case["cfg"]
    write_text(os.path.join(folder, "config.json"), json.dumps(cfg, indent=2) + "\n")
    tensors = case["tensors"]
    if case["shards"] == 1:
        write_safetensors(os.path.join(folder, "model.safetensors"), tensors)
    else:
        S = case["shards"]
        total = sum(len(t["bytes"]) for _, t in tensors)
        weight_map, groups, acc = {}, [[] for _ in range(S)], 0
        for name, t in tensors:  # contiguous groups of about equal byte size
            groups[min(S - 1, acc * S // total)].append((name, t))
            acc += len(t["bytes"])
        assert all(groups)
        for k, group in enumerate(groups):
            fname = f"model-{k + 1:05d}-of-{S:05d}.safetensors"
            write_safetensors(os.path.join(folder, fname), group)
            for name, _ in group:
                weight_map[name] = fname
        write_text(os.path.join(folder, "model.safetensors.index.json"),
                   json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    w = weights_from(cfg, {name: t["values"] for name, t in tensors})
    expected = expected_for(cfg, w, case["sequences"], case["inputs"])
    write_text(os.path.join(folder, "expected.json"), dump_json(expected) + "\n")
    if case["name"] == "f32_single":
        write_text(os.path.join(folder, "cli_input.txt"), CLI_INPUT)
        write_text(os.path.join(folder, "cli_expected.txt"), cli_expected(cfg, w, CLI_INPUT))


# ----------------------------------------------------------------------------------------------------------------
# Verification
# ----------------------------------------------------------------------------------------------------------------

def check(generated=None):
    sys.path.insert(0, HERE)
    import longcat_hash_reference as lhr  # the existing independent hash reference

    names = sorted(os.listdir(OUT_DIR))
    assert names == sorted(c["name"] for c in cases()), names
    for name in names:
        folder = os.path.join(OUT_DIR, name)
        with open(os.path.join(folder, "config.json")) as fh:
            cfg = json.load(fh)
        with open(os.path.join(folder, "expected.json")) as fh:
            exp = json.load(fh)
        V, H, N, K = cfg["vocab_size"], cfg["hidden_size"], cfg["emb_neighbor_num"], cfg["emb_split_num"]
        T, d = K * (N - 1), H // (K * (N - 1))
        mods = moduli(cfg)
        parsed = load_checkpoint(folder)
        # shapes and dtypes
        want_dtype = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}[cfg["torch_dtype"]]
        plne = cfg.get("per_layer_ngram_embedding", False)
        shapes = {}
        if plne:
            F = cfg["intermediate_size"]
            for l in range(cfg["num_hidden_layers"]):
                p = f"model.layers.{l}."
                for i in range(T):
                    shapes[f"{p}ngram_embeddings.embedders.{i}.weight"] = [mods[i], d]
                    shapes[f"{p}ngram_embeddings.post_projs.{i}.weight"] = [F, d]
                shapes[f"{p}ngram_ffn.gate_proj.weight"] = [F, H]
                shapes[f"{p}ngram_ffn.down_proj.weight"] = [H, F]
        else:
            shapes["model.embed_tokens.weight"] = [V, H]
            for i in range(T):
                shapes[f"model.ngram_embeddings.embedders.{i}.weight"] = [mods[i], d]
                shapes[f"model.ngram_embeddings.post_projs.{i}.weight"] = [H, d]
            shapes["model.ngram_embeddings.norm.weight"] = [H]
            shapes["model.ngram_embeddings.norm.bias"] = [H]
        assert set(parsed) == set(shapes), (name, set(parsed) ^ set(shapes))
        for tname, (dtype, shape, raw, vals) in parsed.items():
            assert dtype == want_dtype and shape == shapes[tname], (name, tname, dtype, shape)
            assert np.all(np.isfinite(vals)) and np.any(vals != 0), (name, tname)
        if generated is not None:  # the bytes and decoded values are the ones generated
            gen = {n: t for n, t in generated[name]["tensors"]}
            for tname, (dtype, shape, raw, vals) in parsed.items():
                assert raw == gen[tname]["bytes"], (name, tname)
                assert np.array_equal(vals, gen[tname]["values"]), (name, tname)
        # ids: own hash == longcat_hash_reference.py's hash
        seqs = exp["sequences"]
        lhr_mods = lhr.moduli(V, N, K, ratio=cfg.get("ngram_vocab_size_ratio"), m_base=cfg.get("m_base"))
        assert lhr_mods == mods, name
        flat = []
        for s in seqs:
            mine = stream_ids(cfg, s, 0)
            assert mine == lhr.hash_ids(V, N, K, mods, cfg.get("eos_token_id"), (), [], s), (name, s)
            flat.extend(mine)
        assert exp["ids"] == flat, name
        assert len(flat) == sum(len(s) for s in seqs)
        for row in flat:
            assert len(row) == T and all(0 <= x < m for x, m in zip(row, mods))
        # coverage of the batch
        eos = cfg.get("eos_token_id")
        assert [] in seqs and any(len(s) == 1 for s in seqs)
        tokens = [t for s in seqs for t in s]
        assert 0 in tokens and V - 1 in tokens
        if eos is not None:
            assert any(s and s[0] == eos for s in seqs) and any(s and s[-1] == eos and len(s) > 1 for s in seqs)
            assert any(eos in s[1:-1] for s in seqs)
            assert any(s[k] == eos == s[k + 1] for s in seqs for k in range(len(s) - 1))
        # outputs recomputed from the re-read checkpoint
        w = weights_from(cfg, {n: v[3] for n, v in parsed.items()})
        again = expected_for(cfg, w, seqs, exp.get("inputs"))
        assert again == exp, name
        if plne:
            assert len(exp["plne"]) == cfg["num_hidden_layers"] and "outputs" not in exp
            x = np.array(exp["inputs"])
            assert np.array_equal(x, x.astype(np.float32).astype(np.float64))
            for layer in exp["plne"]:
                assert np.array(layer["embedding"]).shape == (len(tokens), cfg["intermediate_size"])
                assert np.array(layer["ffn"]).shape == (len(tokens), H)
        else:
            for mode in MODES:
                assert np.array(exp["outputs"][mode]).shape == (len(tokens), H)
            # the three modes differ, and "none" is the plain formula written out once more with the concatenated
            # [H, T*d] projection (SPEC's equivalent single-GEMM form)
            assert exp["outputs"]["none"] != exp["outputs"]["sqrt_hidden"] != exp["outputs"]["layer_norm"]
            w_cat = np.concatenate(w["projs"], axis=1)
            for t, row, e in zip(tokens, flat, exp["outputs"]["none"]):
                g = np.concatenate([w["tables"][i][row[i]] for i in range(T)])
                assert np.allclose((w["base"][t] + w_cat @ g) / (1 + T), e, rtol=1e-12, atol=1e-14)
        cli_in = os.path.join(folder, "cli_input.txt")
        if os.path.exists(cli_in):
            with open(cli_in, newline="") as fh:
                text = fh.read()
            with open(os.path.join(folder, "cli_expected.txt"), newline="") as fh:
                assert fh.read() == cli_expected(cfg, w, text), name
            # each current token's row equals the whole-line hash restricted to the current tokens
            lines = cli_lines(text)
            assert any("|" not in ln and ln.strip() for ln in lines) and "" in lines
            assert any(ln.strip().endswith("|") for ln in lines)
        print(f"ok {name}: {len(seqs)} sequences, {len(tokens)} tokens, T={T}, d={d}, moduli={mods}")
    print("check passed")


def main():
    if sys.argv[1:] == ["--check"]:
        check()
        return
    assert not sys.argv[1:], "usage: ngram_embedding_reference.py [--check]"
    all_cases = cases()
    if os.path.isdir(OUT_DIR):
        shutil.rmtree(OUT_DIR)
    os.makedirs(OUT_DIR)
    for case in all_cases:
        write_case(case)
    check({c["name"]: c for c in all_cases})
    total = 0
    for root, _, files in sorted(os.walk(OUT_DIR)):
        for f in sorted(files):
            total += os.path.getsize(os.path.join(root, f))
    print(f"wrote {OUT_DIR} ({total} bytes)")


if __name__ == "__main__":
    main()
