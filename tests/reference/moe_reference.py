#!/usr/bin/python3
"""Independent float64 PyTorch reference for ngemb's SwiGLU FFN and LongCat-Flash MoE layer (SPEC §6).

Importable: swiglu(x, gate, up, down) and moe_forward(x, classifier, classifier_bias, selection_bias, scoring, top_k,
normalize, scale, routed, zero, gate, up, down) take float64 torch tensors (biases may be None; gate/up [E, I, H],
down [E, H, I]) and return y [tokens, H] (moe_forward also returns the chosen experts [tokens, k]).

Run as a script, it writes tests/reference/moe/golden.json: SwiGLU cases with fp32 and bf16 weights and MoE cases
with zero experts, selection and classifier biases, softmax and sigmoid scoring, renormalisation on and off, fp32
and bf16 expert weights. All inputs are float32-representable random values; bf16 cases store the bf16-rounded
weights (as floats) and the expected outputs are computed from exactly those. Routing margins between the k-th and
(k+1)-th selection key exceed 1e-4 so fp32 routing cannot pick differently.

Regenerate: /usr/bin/python3 tests/reference/moe_reference.py
"""
import json
import os

import torch


def swiglu(x, gate, up, down):
    """y = W_down (SiLU(W_gate x) * (W_up x)), x [tokens, H], gate/up [I, H], down [H, I]."""
    g = x @ gate.T
    return (g * torch.sigmoid(g) * (x @ up.T)) @ down.T


def route(x, classifier, classifier_bias, selection_bias, scoring, top_k, normalize, scale):
    """Chosen experts [tokens, k] (descending s + b, ties to the lowest index), their weights, and the smallest margin
    between the k-th and (k+1)-th key."""
    logits = x @ classifier.T
    if classifier_bias is not None:
        logits = logits + classifier_bias
    scores = torch.softmax(logits, dim=1) if scoring == "softmax" else torch.sigmoid(logits)
    keys = scores + (selection_bias if selection_bias is not None else 0.0)
    chosen, weights, margin = [], [], float("inf")
    for token in range(x.shape[0]):
        order = sorted(range(keys.shape[1]), key=lambda e: (-keys[token, e].item(), e))
        top = order[:top_k]
        picked = scores[token, top]
        if normalize:
            picked = picked / picked.sum()
        chosen.append(top)
        weights.append(picked * scale)
        if top_k < keys.shape[1]:
            margin = min(margin, (keys[token, order[top_k - 1]] - keys[token, order[top_k]]).item())
    return torch.tensor(chosen, dtype=torch.int64), torch.stack(weights), margin


def moe_forward(x, classifier, classifier_bias, selection_bias, scoring, top_k, normalize, scale, routed, zero, gate,
                up, down):
    """y = sum over the top-k picks of w * FFN_e(x) (routed, e < routed) or w * x (zero experts)."""
    assert classifier.shape[0] == routed + zero
    chosen, weights, _ = route(x, classifier, classifier_bias, selection_bias, scoring, top_k, normalize, scale)
    y = torch.zeros_like(x)
    for token in range(x.shape[0]):
        row = x[token:token + 1]
        for pick in range(top_k):
            expert = chosen[token, pick].item()
            w = weights[token, pick]
            y[token] += w * (swiglu(row, gate[expert], up[expert], down[expert])[0] if expert < routed else row[0])
    return y, chosen


def f32(shape, generator, std=1.0):
    return (torch.randn(shape, generator=generator, dtype=torch.float64) * std).float().double()


def weights_of(dtype, shape, generator, std):
    values = f32(shape, generator, std)
    return values.to(torch.bfloat16).double() if dtype == "bf16" else values


def flat(tensor):
    return [float(v) for v in tensor.reshape(-1).tolist()]


def swiglu_case(name, generator, dtype, hidden, intermediate, tokens):
    gate = weights_of(dtype, (intermediate, hidden), generator, hidden ** -0.5)
    up = weights_of(dtype, (intermediate, hidden), generator, hidden ** -0.5)
    down = weights_of(dtype, (hidden, intermediate), generator, intermediate ** -0.5)
    x = f32((tokens, hidden), generator)
    return {"name": name, "weight_dtype": dtype, "hidden": hidden, "intermediate": intermediate, "x": flat(x),
            "gate": flat(gate), "up": flat(up), "down": flat(down), "y": flat(swiglu(x, gate, up, down))}


def moe_case(name, generator, dtype, routed, zero, top_k, hidden, width, tokens, scoring, normalize, scale,
             classifier_bias, selection_bias):
    experts = routed + zero
    while True:
        classifier = f32((experts, hidden), generator, hidden ** -0.5)
        cb = f32((experts,), generator, 0.1) if classifier_bias else None
        sb = f32((experts,), generator, 0.05) if selection_bias else None
        x = f32((tokens, hidden), generator)
        if route(x, classifier, cb, sb, scoring, top_k, normalize, scale)[2] > 1e-4:
            break
    gate = weights_of(dtype, (routed, width, hidden), generator, hidden ** -0.5)
    up = weights_of(dtype, (routed, width, hidden), generator, hidden ** -0.5)
    down = weights_of(dtype, (routed, hidden, width), generator, width ** -0.5)
    y, chosen = moe_forward(x, classifier, cb, sb, scoring, top_k, normalize, scale, routed, zero, gate, up, down)
    case = {"name": name, "weight_dtype": dtype, "scoring": scoring, "routed_experts": routed, "zero_experts": zero,
            "top_k": top_k, "normalize_top_k": normalize, "routed_scaling_factor": scale, "hidden": hidden,
            "expert_width": width, "classifier": flat(classifier), "x": flat(x), "gate": flat(gate), "up": flat(up),
            "down": flat(down), "chosen": chosen.tolist(), "y": flat(y)}
    if cb is not None:
        case["classifier_bias"] = flat(cb)
    if sb is not None:
        case["selection_bias"] = flat(sb)
    return case


def main():
    generator = torch.Generator().manual_seed(20261128)
    swiglu_cases = [
        swiglu_case("swiglu_f32", generator, "f32", 16, 24, 5),
        swiglu_case("swiglu_bf16", generator, "bf16", 24, 16, 7),
    ]
    moe_cases = [
        moe_case("softmax_zero_experts_selection_bias_scaled", generator, "f32", 6, 3, 3, 16, 8, 13, "softmax", False,
                 6.0, False, True),
        moe_case("sigmoid_normalized_both_biases", generator, "f32", 5, 2, 2, 12, 10, 9, "sigmoid", True, 2.5, True,
                 True),
        moe_case("softmax_normalized_bf16_idle_experts", generator, "bf16", 10, 4, 2, 16, 8, 3, "softmax", True, 1.0,
                 False, True),
        moe_case("no_zero_experts", generator, "f32", 4, 0, 2, 8, 12, 6, "softmax", False, 1.0, False, False),
    ]
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "moe")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "golden.json"), "w") as out:
        json.dump({"swiglu": swiglu_cases, "moe": moe_cases}, out)
        out.write("\n")


if __name__ == "__main__":
    main()
