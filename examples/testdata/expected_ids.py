#!/usr/bin/env python3
"""Writes the expected stdout of the ngram_ids CLI tests, computed from SPEC §1-2 with no code from the library.

Run with /usr/bin/python3 from any folder; it rewrites the *_expected.txt files next to it.
  m_i = trunc(r*V + 2i + 1) in double precision; w_{i,j} = V^j mod m_i by repeated multiply-mod;
  id_i(p) = (t_0 + sum_{j=1..n-1} t_j * w_{i,j}) mod m_i with exact integers, order n = i // K + 2;
  look-back before the stream start, or at and before an EOS strictly before p, is 0.
A line is "context | tokens" (or just tokens); each token of `tokens` prints its T ids, each line ends with a blank line.
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def ids_of_line(V, r, N, K, eos, line):
    parts = line.split("|")
    context = [int(t) for t in parts[0].split()] if len(parts) == 2 else []
    tokens = [int(t) for t in parts[-1].split()]
    T = K * (N - 1)
    mods = [int(float(r) * V + 2 * i + 1) for i in range(T)]
    stream = context + tokens
    rows = []
    for p in range(len(context), len(stream)):
        ids = []
        for i in range(T):
            n = i // K + 2
            total, weight = stream[p], 1
            for j in range(1, n):
                weight = weight * V % mods[i]
                q = p - j
                if q < 0 or stream[q] == eos:
                    break
                total += stream[q] * weight
            ids.append(total % mods[i])
        rows.append(ids)
    return rows


def expected_output(V, r, N, K, eos, input_text):
    out = []
    for line in input_text.split("\n") if not input_text.endswith("\n") else input_text[:-1].split("\n"):
        for ids in ids_of_line(V, r, N, K, eos, line):
            out.append(" ".join(str(i) for i in ids) + "\n")
        out.append("\n")
    return "".join(out)


def write(name, text):
    with open(os.path.join(HERE, name), "w", newline="\n") as f:
        f.write(text)


def read(name):
    with open(os.path.join(HERE, name), newline="") as f:
        return f.read()


lite = (131072, 78.0, 4, 4, 2)
assert ids_of_line(*lite, "5 7")[1][0] == (7 + 5 * 131072) % 10223617 == 655367  # SPEC's worked example
write("lite_expected.txt", expected_output(*lite, read("lite_input.txt")))
write("bad_token_expected.txt", expected_output(*lite, "5 7\n"))  # only the line before the bad one

config = json.loads(read("config.json"))
eos = config["eos_token_id"]
small = (config["vocab_size"], config["ngram_vocab_size_ratio"], config["emb_neighbor_num"], config["emb_split_num"],
         eos[0] if isinstance(eos, list) else eos)
write("config_expected.txt", expected_output(*small, read("config_input.txt")))
