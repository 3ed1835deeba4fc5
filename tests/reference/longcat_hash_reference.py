#!/usr/bin/env python3
"""Independent reference generator for the LongCat n-gram hash (golden ids for the C++ tests).

Follows /work/shared/SPEC.md sections 1 and 2 literally and shares no code with the C++ library:
  * T = K*(N-1) sub-tables, i = (n-2)*K + k for order n in 2..N and split k in 0..K-1.
  * m_i = trunc(r*V + 2*i + 1) evaluated in double precision (Python float), or m_base + 2*i + 1 for an integer m_base.
  * w_{i,0} = 1, w_{i,j} = V^j mod m_i by repeated multiply-mod (exact Python ints), j = 1..n-1.
  * id_i(p) = (t_0 + sum_{j=1..n-1} t_j * w_{i,j}) mod m_i, exact Python ints (no floats in the hash).
  * Stream = context + tokens; ids are emitted only for `tokens`. Look-back before the stream start is 0.
  * EOS / ignored token strictly before p cuts the look-back: it and everything before contribute 0.
    An EOS as current token hashes normally; an ignored current token gets all T ids = 0.
numpy is used only for the random generator. Run with /usr/bin/python3; writes longcat_hash_golden.json next to it.
"""
import json
import os

import numpy as np


def moduli(V, N, K, ratio=None, m_base=None):
    assert (ratio is None) != (m_base is None)
    T = K * (N - 1)
    if ratio is not None:
        return [int(float(ratio) * V + 2 * i + 1) for i in range(T)]  # double precision, then truncation
    return [int(m_base) + 2 * i + 1 for i in range(T)]


def weights(V, N, K, mods):
    """w[i] = [1, V mod m_i, V^2 mod m_i, ...] with n entries, n the order of sub-table i."""
    w = []
    for n in range(2, N + 1):
        for k in range(K):
            m = mods[(n - 2) * K + k]
            row = [1]
            for _ in range(1, n):
                row.append(row[-1] * V % m)
            w.append(row)
    return w


def hash_ids(V, N, K, mods, eos, ignored, context, tokens):
    w = weights(V, N, K, mods)
    T = len(mods)
    ignored = set(ignored)
    stream = list(context) + list(tokens)
    for t in stream:
        assert 0 <= t < V, "token out of range"
    out = []
    cut = -1  # index of the most recent EOS/ignored token strictly before the current position
    for p in range(len(stream)):
        cur = stream[p]
        if p >= len(context):
            if cur in ignored:
                out.append([0] * T)
            else:
                ids = []
                for i in range(T):
                    n = i // K + 2
                    acc = cur
                    for j in range(1, n):
                        q = p - j
                        t_j = stream[q] if (q >= 0 and q > cut) else 0
                        acc += t_j * w[i][j]
                    ids.append(acc % mods[i])
                out.append(ids)
        if (eos is not None and cur == eos) or cur in ignored:
            cut = p
    return out


def make_case(name, V, H, N, K, eos, seqs, ratio=None, m_base=None, ignored=()):
    T = K * (N - 1)
    assert H >= T
    mods = moduli(V, N, K, ratio, m_base)
    for m in mods:
        assert 0 < m < 2 ** 32 and m % V != 0, (name, m)
    seqs = seqs + extreme_seqs(V)
    out = []
    for ctx, toks in seqs:
        ctx, toks = [int(t) for t in ctx], [int(t) for t in toks]
        ids = hash_ids(V, N, K, mods, eos, ignored, ctx, toks)
        for row in ids:
            assert len(row) == T and all(0 <= x < m for x, m in zip(row, mods))
        out.append({"context": ctx, "tokens": toks, "ids": ids})
    return {"name": name, "vocab_size": V, "hidden_size": H,
            "ratio": None if ratio is None else float(ratio), "m_base": m_base, "n": N, "k": K,
            "eos": eos, "ignored": sorted(int(t) for t in ignored), "moduli": mods, "sequences": out}


def extreme_seqs(V):
    return [([], [V - 1] * 24), ([V - 1] * 5, [V - 1] * 3), ([], [0] * 12),
            ([], [0, V - 1, 0, 0, V - 1, V - 1, 0, V - 1, 0, 0, 0, V - 1])]


def random_seqs(rng, V, count, sprinkle=(), prob=0.15, with_context=True):
    """Random sequences of mixed lengths 0..40; tokens in `sprinkle` replace random positions with probability prob."""
    seqs = []
    for s in range(count):
        L = int(rng.integers(0, 41))
        toks = rng.integers(0, V, size=L).tolist()
        ctx = rng.integers(0, V, size=int(rng.integers(1, 9))).tolist() if with_context and s % 3 == 2 else []
        for arr in (toks, ctx):
            for q in range(len(arr)):
                if sprinkle and rng.random() < prob:
                    arr[q] = int(sprinkle[int(rng.integers(0, len(sprinkle)))])
        seqs.append((ctx, toks))
    return seqs


def lite_seqs(rng, V, E):
    r = lambda L: rng.integers(3, V - 1, size=L).tolist()  # noqa: E731  (random non-special tokens)
    a, b, c, d, e, f, g = r(7)
    return [
        ([], [0, a, V - 1, b, 0, V - 1, c, d]),          # token 0 and V-1 present
        ([], [E, a, b, c, d]),                            # EOS at window position 0
        ([], [a, E, b, c, d, e]),                         # EOS at position 1
        ([], [a, b, E, c, d, e]),                         # EOS at position 2
        ([], [a, b, c, E, d, e, f]),                      # EOS at position 3
        ([], [a, E, E, b, c, E, E, E, d, e]),             # consecutive EOS
        ([], [a, b, c, d, E]),                            # EOS as last token
        ([], [E]), ([], [a]), ([], [a, b]), ([], [a, b, c]),  # shorter than N
        ([a, E, b], [c, d, e, f]),                        # EOS inside the context
        ([a, b, c, d, e, f, g], [a, b, c, d]),            # context longer than N-1
        ([a], [b, c, d, e]),                              # context shorter than N-1
        ([a, b, E], [c, d, e, f]),                        # context ending in EOS
        ([E], [E, a, b]),                                 # context is a single EOS
        ([a, b, c], []),                                  # empty tokens with context
        ([], []),                                         # empty everything
    ] + random_seqs(rng, V, 30, sprinkle=[E])


def ignored_seqs(rng, V, E, ign):
    r = lambda L: rng.integers(6, V - 1, size=L).tolist()  # noqa: E731
    a, b, c, d, e = r(5)
    i0, i5, im = ign
    return [
        ([], [i0, a, b, c, d]), ([], [a, i5, b, c, d, e]), ([], [a, b, im, c, d]),   # ignored as current token
        ([], [a, b, c, d, im]), ([], [i0, i5, im, a, b]),                            # ignored last / consecutive
        ([a, i5, b], [c, d, e]), ([a, b, i0], [c, d, e, a]), ([im], [a, b, c]),      # ignored in context
        ([], [a, E, i5, b, c]), ([], [a, i0, E, b, c, d]), ([], [E, im, E, a, b]),   # next to EOS
        ([a, E], [i5, b, c, d]), ([i0, E], [a, b, c]), ([a, b, c], [i0]),
    ] + random_seqs(rng, V, 30, sprinkle=[E, i0, i5, im], prob=0.2)


def main():
    rng = np.random.default_rng(20240601)
    V, H, E = 131072, 3072, 2
    lite_m = moduli(V, 4, 4, ratio=78)
    assert lite_m[0] == 10223617, lite_m[0]
    cases = [
        make_case("lite_eos", V, H, 4, 4, E, lite_seqs(rng, V, E), ratio=78),
        make_case("lite_no_eos", V, H, 4, 4, None, lite_seqs(rng, V, E), ratio=78),
        make_case("n2_k1_v50", 50, 16, 2, 1, 7, random_seqs(rng, 50, 12, sprinkle=[7]), ratio=3),
        make_case("n3_k2_v1000_ratio5.5", 1000, 64, 3, 2, 1, random_seqs(rng, 1000, 12, sprinkle=[1]), ratio=5.5),
        make_case("n5_k3_v32000", 32000, 1536, 5, 3, 2, random_seqs(rng, 32000, 14, sprinkle=[2]), ratio=10),
        make_case("n6_k2_v100000_no_eos", 100000, 1280, 6, 2, None, random_seqs(rng, 100000, 12), ratio=20),
        make_case("m_base_v151936", 151936, 2048, 4, 2, 151643,
                  random_seqs(rng, 151936, 12, sprinkle=[151643]), m_base=151936 * 40),
        make_case("large_v2p24_ratio200", 16777216, 1024, 3, 2, 2,
                  random_seqs(rng, 16777216, 12, sprinkle=[2], prob=0.05), ratio=200),
        make_case("lite_ignored", V, H, 4, 4, E, ignored_seqs(rng, V, E, [0, 5, V - 1]), ratio=78,
                  ignored=[0, 5, V - 1]),
    ]
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "longcat_hash_golden.json")
    with open(path, "w") as fh:
        fh.write('{"generator": "longcat_hash_reference.py", "cases": [\n')
        fh.write(",\n".join(json.dumps(c, separators=(",", ":")) for c in cases))
        fh.write("\n]}\n")
    total = 0
    for c in cases:
        n_tok = sum(len(s["tokens"]) for s in c["sequences"])
        total += n_tok
        print(f"{c['name']}: {len(c['sequences'])} sequences, {n_tok} tokens, T={len(c['moduli'])}, "
              f"m_0={c['moduli'][0]}")
    print(f"total token rows: {total}; wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
