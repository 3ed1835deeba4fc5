#!/usr/bin/env python3
"""Writes the hand-made seeds of tests/fuzz/corpus/ (small valid and near-valid inputs) and the hand-made inputs of
tests/fuzz/regressions/.

    python3 tests/fuzz/make_seeds.py            # from the repository root; rewrites the files it owns

The checkpoint harness's model seed comes from make_checkpoint_seed.cpp (the library's own writer); seeds copied
from tests/reference/ and examples/testdata/ are copied here too. Standard library only.
"""
import json
import os
import shutil
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")


def safetensors(tensors, metadata=None, pad=True, raw_header=None):
    """tensors: list of (name, dtype, shape, bytes) laid out back to back in order."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = b""
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    text = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def f32(*values):
    return struct.pack("<%df" % len(values), *values)


def write(harness, name, content):
    folder = os.path.join(CORPUS, harness)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as out:
        out.write(content if isinstance(content, bytes) else content.encode())


def copy(harness, name, source):
    folder = os.path.join(CORPUS, harness)
    os.makedirs(folder, exist_ok=True)
    shutil.copyfile(os.path.join(ROOT, source), os.path.join(folder, name))


def safetensors_seeds():
    h = "safetensors"
    write(h, "f32_2x3", safetensors([("w", "F32", [2, 3], f32(1, -2, 3.5, 0, 1e-30, -0.0))]))
    write(h, "mixed_dtypes", safetensors([
        ("a.f32", "F32", [2], f32(1.5, float("nan"))),
        ("b.bf16", "BF16", [3], struct.pack("<3H", 0x3F80, 0x7F80, 0x8001)),
        ("c.f16", "F16", [2, 1], struct.pack("<2H", 0x3C00, 0x7C01)),
        ("d.i64", "I64", [1], struct.pack("<q", -7)),
        ("e.u8", "U8", [3], b"\x01\x02\x03"),
        ("f.bool", "BOOL", [1], b"\x01"),
    ], metadata={"format": "pt"}))
    write(h, "empty_and_scalar", safetensors([
        ("empty", "F32", [0, 4], b""), ("scalar", "F32", [], f32(2.0)), ("wide", "F64", [1], struct.pack("<d", 1.0))]))
    write(h, "sub_byte", safetensors([("four", "F4", [2, 3], b"\x12\x34\x56"),
                                      ("six", "F6_E2M3", [4], b"\x01\x02\x03"),
                                      ("fp8", "F8_E4M3", [2], b"\x38\x40")]))
    write(h, "misaligned_bf16", safetensors([("byte", "U8", [1], b"\x07"), ("odd", "BF16", [2], b"\x80\x3f\x00\x40")]))
    write(h, "metadata_only", safetensors([], metadata={"total": "0"}))
    write(h, "empty_header", safetensors([], raw_header=b"{}"))
    write(h, "truncated", safetensors([("w", "F32", [4], f32(1, 2, 3, 4))])[:-3])
    write(h, "overlap", safetensors([], raw_header=json.dumps({
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}).encode()) + bytes(12))
    write(h, "shape_mismatch", safetensors([], raw_header=json.dumps({
        "a": {"dtype": "F16", "shape": [3], "data_offsets": [0, 4]}}).encode()) + bytes(4))
    write(h, "unknown_dtype", safetensors([], raw_header=json.dumps({
        "a": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}).encode()) + bytes(16))
    write(h, "huge_shape", safetensors([], raw_header=json.dumps({
        "a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}}).encode()))
    write(h, "header_too_long", struct.pack("<Q", 1 << 62) + b"{}")
    copy(h, "truncated_checkpoint", "examples/testdata/truncated_checkpoint/model.safetensors")
    copy(h, "f16_bigram", "tests/reference/embedding/f16_bigram/model.safetensors")


def index(weight_map, total_size=None):
    content = {"weight_map": weight_map}
    if total_size is not None:
        content = {"metadata": {"total_size": total_size}, **content}
    return json.dumps(content, indent=2) + "\n"


def shard_index_seeds():
    # The harness's fixed folder: model-00001-of-00002.safetensors {a, b}, model-00002-of-00002.safetensors
    # {a, c, empty}, sub/inner.safetensors {e}, and ../outside.safetensors {secret} outside the folder.
    h = "shard_index"
    one, two = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    write(h, "valid", index({"a": one, "b": one, "c": two, "empty": two}, total_size=26))
    write(h, "a_from_second", index({"a": two, "b": one}))
    write(h, "subfolder", index({"e": "sub/inner.safetensors", "c": two}))
    write(h, "empty_map", index({}))
    write(h, "escapes_parent", index({"secret": "../outside.safetensors"}))
    write(h, "escapes_inside_out", index({"secret": "sub/../../outside.safetensors"}))
    write(h, "absolute", index({"a": "/etc/passwd"}))
    write(h, "missing_shard", index({"a": "model-00003-of-00003.safetensors"}))
    write(h, "not_in_shard", index({"c": one}))
    write(h, "not_a_string", '{"weight_map": {"a": 1, "b": ["x"]}}')
    write(h, "no_weight_map", '{"metadata": {"total_size": 0}}')
    write(h, "folder_as_shard", index({"a": "sub"}))
    write(h, "index_as_shard", index({"a": "model.safetensors.index.json"}))
    copy(h, "reference_bf16_sharded", "tests/reference/embedding/bf16_sharded/model.safetensors.index.json")


TINY_MODEL = {
    "vocab_size": 16, "hidden_size": 8, "emb_neighbor_num": 3, "emb_split_num": 2, "m_base": 5,
    "eos_token_id": 2, "num_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
    "ffn_hidden_size": 8, "expert_ffn_hidden_size": 4, "n_routed_experts": 2, "zero_expert_num": 1, "moe_topk": 1,
    "routed_scaling_factor": 1.5, "norm_topk_prob": False, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
    "max_position_embeddings": 16,
}


def config_seeds():
    h = "config"
    copy(h, "hf_ngram_only", "examples/testdata/config.json")
    copy(h, "reference_shortcut", "tests/reference/model/shortcut/config.json")
    copy(h, "reference_prenorm", "tests/reference/model/prenorm/config.json")
    copy(h, "reference_plne", "tests/reference/embedding/plne/config.json")
    copy(h, "reference_f32", "tests/reference/embedding/f32_single/config.json")
    write(h, "tiny_model", json.dumps(TINY_MODEL, indent=2))
    write(h, "ratio_eos_list", json.dumps({**{k: v for k, v in TINY_MODEL.items() if k != "m_base"},
                                           "ngram_vocab_size_ratio": 2.5, "eos_token_id": [7]}))
    write(h, "defaults_only", json.dumps({k: TINY_MODEL[k] for k in (
        "vocab_size", "hidden_size", "emb_neighbor_num", "emb_split_num", "m_base", "num_layers",
        "num_attention_heads", "ffn_hidden_size", "rms_norm_eps", "rope_theta", "max_position_embeddings")}))
    write(h, "both_ratio_and_m_base", json.dumps({**TINY_MODEL, "ngram_vocab_size_ratio": 1.0}))
    write(h, "nulls", json.dumps({**TINY_MODEL, "eos_token_id": None, "head_dim": None, "moe_topk": None}))
    write(h, "lite", json.dumps({"vocab_size": 131072, "hidden_size": 3072, "emb_neighbor_num": 4,
                                 "emb_split_num": 4, "ngram_vocab_size_ratio": 78, "eos_token_id": 2}))
    write(h, "big_numbers", '{"vocab_size": 18446744073709551615, "hidden_size": 9223372036854775807, '
                            '"emb_neighbor_num": 4294967298, "emb_split_num": -1, "m_base": 9223372036854775807}')
    write(h, "float_where_int", json.dumps({**TINY_MODEL, "vocab_size": 16.0, "num_layers": 1e3}))
    write(h, "not_an_object", "[1, 2, 3]")


def read_safetensors(content):
    """(header without __metadata__, in data order) -> list of (name, dtype, shape, bytes)."""
    length = struct.unpack("<Q", content[:8])[0]
    header = json.loads(content[8:8 + length])
    header.pop("__metadata__", None)
    data = content[8 + length:]
    entries = sorted(header.items(), key=lambda item: item[1]["data_offsets"][0])
    return [(name, e["dtype"], e["shape"], data[e["data_offsets"][0]:e["data_offsets"][1]]) for name, e in entries]


def checkpoint(config, tensors):
    text = config if isinstance(config, str) else json.dumps(config, indent=2)
    return text.encode() + b"\0" + safetensors(tensors)


def checkpoint_seeds():
    # tiny_shortcut_model is written by make_checkpoint_seed.cpp (the library's own writer); the rest derive from it.
    h = "checkpoint"
    with open(os.path.join(CORPUS, h, "tiny_shortcut_model"), "rb") as seed:
        content = seed.read()
    cut = content.index(b"\0")
    config = json.loads(content[:cut])
    tensors = read_safetensors(content[cut + 1:])

    prenorm = []
    for name, dtype, shape, payload in tensors:
        if any(piece in name for piece in ("layernorm.1.", "self_attn.1.", ".mlps.")):
            continue
        for piece in ("input_layernorm", "post_attention_layernorm", "self_attn"):
            name = name.replace(piece + ".0.", piece + ".")
        prenorm.append((name, dtype, shape, payload))
    write(h, "tiny_prenorm_model", checkpoint(config, prenorm))

    ngram_fields = ("vocab_size", "hidden_size", "emb_neighbor_num", "emb_split_num", "m_base", "eos_token_id")
    embedding = [t for t in tensors if t[0].startswith(("model.embed_tokens", "model.ngram_embeddings"))]
    write(h, "embedding_only", checkpoint({k: config[k] for k in ngram_fields}, embedding))
    f32_embedding = [(n, "F32", s, p if d == "F32" else struct.pack("<%df" % (len(p) // 2), *[
        struct.unpack("<f", b"\0\0" + p[i:i + 2])[0] for i in range(0, len(p), 2)]))
        for n, d, s, p in embedding]
    write(h, "embedding_only_f32", checkpoint({k: config[k] for k in ngram_fields}, f32_embedding))
    with open(os.path.join(ROOT, "tests/reference/embedding/f16_bigram/config.json"), "rb") as text, \
            open(os.path.join(ROOT, "tests/reference/embedding/f16_bigram/model.safetensors"), "rb") as tensors_file:
        write(h, "reference_f16_bigram", text.read() + b"\0" + tensors_file.read())
    write(h, "config_only", json.dumps(config))
    # Near-valid: sizes the file does not back (a loader must refuse them before allocating), bad values.
    for name, change in (("hidden_size_2_20", {"hidden_size": 1 << 20}),
                         ("vocab_2_31", {"vocab_size": 1 << 31}),
                         ("many_layers", {"num_layers": 1 << 30}),
                         ("long_positions", {"max_position_embeddings": 1 << 40}),
                         ("many_experts", {"n_routed_experts": 1 << 30, "moe_topk": 1 << 29}),
                         ("zero_heads", {"num_attention_heads": 0}),
                         ("odd_head_dim", {"head_dim": 3}),
                         ("wide_ffn", {"ffn_hidden_size": 1 << 40, "expert_ffn_hidden_size": 1 << 40})):
        write(h, name, checkpoint({**config, **change}, tensors))
    write(h, "truncated_tensors", checkpoint(config, tensors)[:-40])
    write(h, "integer_norm", checkpoint(config, [(n, "I32" if n == "model.norm.weight" else d, s, p)
                                                 for n, d, s, p in tensors]))


def regression_seeds():
    # Hand-made regressions (tests/fuzz/regressions/, replayed once per run, never mutated): JSON nested 20000 deep,
    # which overflowed the stack when an error message printed the value with nlohmann's recursive dump().
    deep = "[" * 20000 + "]" * 20000
    folder = os.path.join(ROOT, "tests", "fuzz", "regressions")
    outputs = {
        "config/deep_nesting_dump": '{"vocab_size": ' + deep + "}",
        "safetensors/deep_nesting_dump": safetensors([], raw_header=(
            '{"w":{"dtype":"F32","shape":' + deep + ',"data_offsets":[0,0]}}').encode()),
        "shard_index/deep_nesting_dump": '{"weight_map": {"a": ' + deep + "}}",
    }
    for name, content in outputs.items():
        os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
        with open(os.path.join(folder, name), "wb") as out:
            out.write(content if isinstance(content, bytes) else content.encode())


def main():
    safetensors_seeds()
    shard_index_seeds()
    config_seeds()
    checkpoint_seeds()
    regression_seeds()


if __name__ == "__main__":
    sys.exit(main())
