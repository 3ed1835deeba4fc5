#!/usr/bin/python3
"""Independent reference for ngemb's top-k routers (SPEC §6), in float64 with numpy.

Writes tests/reference/router/golden.json: for each case the router options, the classifier W_r [E+Z, H], optional
classifier and selection biases, inputs x [tokens, H] (all float32-representable) and the expected chosen experts
(descending s + b, ties to the lowest index) and weights (s_e, optionally renormalised over the k chosen, times
routed_scaling_factor). Random cases keep a margin between the k-th and (k+1)-th key so fp32 evaluation cannot
reorder them; the `ties` case duplicates classifier rows so keys tie exactly.

Regenerate: /usr/bin/python3 tests/reference/router_reference.py
"""
import json
import os

import numpy as np


def route(x, w, classifier_bias, selection_bias, scoring, k, normalize, scale):
    logits = x.astype(np.float64) @ w.astype(np.float64).T
    if classifier_bias is not None:
        logits = logits + classifier_bias
    if scoring == "softmax":
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        scores = shifted / shifted.sum(axis=1, keepdims=True)
    else:
        scores = 1.0 / (1.0 + np.exp(-logits))
    keys = scores + (selection_bias if selection_bias is not None else 0.0)
    chosen, weights, margins = [], [], []
    for token in range(x.shape[0]):
        order = sorted(range(keys.shape[1]), key=lambda e: (-keys[token, e], e))
        top = order[:k]
        picked = scores[token, top]
        if normalize:
            picked = picked / picked.sum()
        chosen.append(top)
        weights.append([float(v) for v in picked * scale])
        if k < keys.shape[1]:
            margins.append(keys[token, order[k - 1]] - keys[token, order[k]])
    return chosen, weights, min(margins) if margins else 1.0


def f32(values):
    return np.asarray(values, dtype=np.float32)


def make_case(name, rng, routed, zero, k, hidden, tokens, scoring, normalize, scale, classifier_bias, selection_bias,
              ties=False):
    while True:
        w = f32(rng.normal(0.0, 1.0 / np.sqrt(hidden), size=(routed + zero, hidden)))
        if ties:
            w[3] = w[1]
            w[routed + 1] = w[0]
            w[5] = w[2]
        x = f32(rng.normal(0.0, 1.0, size=(tokens, hidden)))
        cb = f32(rng.normal(0.0, 0.1, size=routed + zero)) if classifier_bias else None
        sb = f32(rng.normal(0.0, 0.05, size=routed + zero)) if selection_bias else None
        chosen, weights, margin = route(x, w, cb, sb, scoring, k, normalize, scale)
        if ties or margin > 1e-4:
            break
    case = {
        "name": name, "scoring": scoring, "routed_experts": routed, "zero_experts": zero, "top_k": k,
        "normalize_top_k": normalize, "routed_scaling_factor": scale, "hidden": hidden,
        "classifier": [float(v) for v in w.ravel()], "x": [float(v) for v in x.ravel()],
        "chosen": chosen, "weights": weights,
    }
    if cb is not None:
        case["classifier_bias"] = [float(v) for v in cb]
    if sb is not None:
        case["selection_bias"] = [float(v) for v in sb]
    return case


def main():
    rng = np.random.default_rng(20261128)
    cases = [
        make_case("softmax_plain", rng, 16, 0, 4, 24, 9, "softmax", False, 1.0, False, False),
        make_case("softmax_zero_experts_bias_scaled", rng, 24, 8, 6, 32, 17, "softmax", False, 6.0, False, True),
        make_case("softmax_normalized_classifier_bias", rng, 12, 4, 3, 16, 11, "softmax", True, 2.5, True, True),
        make_case("sigmoid_normalized", rng, 20, 6, 5, 20, 13, "sigmoid", True, 1.5, False, True),
        make_case("all_experts_chosen", rng, 5, 2, 7, 8, 4, "softmax", False, 1.0, False, False),
        make_case("ties", rng, 8, 4, 12, 12, 6, "softmax", False, 1.0, False, False, ties=True),
    ]
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "router")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "golden.json"), "w") as out:
        json.dump({"cases": cases}, out)
        out.write("\n")


if __name__ == "__main__":
    main()
