#!/usr/bin/env python3
"""ngemb's whole model against transformers, back to back: bench_model's tiny benchmarks, then torch_model.py.

    python bench/anchors/compare_model.py build/bench/bench_model
    python bench/anchors/compare_model.py build/bench/bench_model --rounds 3 --dtypes float32 --out /tmp/anchor-model

Run with the Python that has torch and transformers (--python picks another for torch_model.py). Each round runs
bench_model (--benchmark_format=json, the tiny_* benchmarks torch_model.py also measures: tiny_decode/1,
tiny_decode/8, tiny_prefill/4, counter tokens_per_second) and then torch_model.py (transformers'
LongcatFlashForCausalLM on the same models/tiny-longcat, eager attention, per --dtypes and --threads). A ratio
compares the two programs of the same round, ngemb against the best transformers run; with several rounds the table
gives the range of the per-round figures.
--out DIR keeps every round's raw outputs.
"""
import argparse
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPES = ["tiny_decode/1", "tiny_decode/8", "tiny_prefill/4"]  # torch_model.py's


def log(message):
    print(message, file=sys.stderr, flush=True)


def run_bench(binary, shapes):
    """{shape: tokens/s} from one bench_model run."""
    names = "|".join(re.escape(shape) for shape in shapes)
    output = subprocess.run([binary, "--benchmark_format=json", f"--benchmark_filter=^({names})$"], check=True,
                            capture_output=True, text=True).stdout
    results = {entry["name"]: entry["tokens_per_second"] for entry in json.loads(output)["benchmarks"]
               if entry.get("run_type", "iteration") == "iteration"}
    missing = [shape for shape in shapes if shape not in results]
    if missing:
        raise SystemExit(f"{binary} reported no {', '.join(missing)}")
    return results, output


def run_torch(python, shapes, dtypes, threads):
    """{shape: {path: tokens/s}} from one torch_model.py run."""
    command = [python, os.path.join(HERE, "torch_model.py"), "--shapes", ",".join(shapes), "--dtypes", dtypes,
               "--threads", threads]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    results = {}
    for line in output.splitlines():
        record = json.loads(line)
        results.setdefault(record["shape"], {})[record["path"]] = record["tokens_per_second"]
    return results, output


def span(values, digits):
    """"a" or "lo-hi" of the rounds' figures."""
    low, high = min(values), max(values)
    text = f"{low:.{digits}f}"
    return text if f"{high:.{digits}f}" == text else f"{text}-{high:.{digits}f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bench_model", help="path of the bench_model binary")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated, of " + ", ".join(SHAPES))
    parser.add_argument("--rounds", type=int, default=2, help="bench then torch, this many times (default 2)")
    parser.add_argument("--dtypes", default="bfloat16,float32", help="torch_model.py --dtypes")
    parser.add_argument("--threads", default=f"{os.cpu_count()},1", help="torch_model.py --threads")
    parser.add_argument("--python", default=sys.executable, help="interpreter with torch for torch_model.py")
    parser.add_argument("--out", help="folder for every round's raw outputs")
    args = parser.parse_args()
    shapes = args.shapes.split(",")
    if any(shape not in SHAPES for shape in shapes):
        parser.error(f"--shapes: each of {', '.join(SHAPES)}")

    rounds = []
    for index in range(args.rounds):
        log(f"round {index + 1}/{args.rounds}: bench_model")
        bench, bench_raw = run_bench(args.bench_model, shapes)
        log(f"round {index + 1}/{args.rounds}: torch_model.py")
        torch_results, torch_raw = run_torch(args.python, shapes, args.dtypes, args.threads)
        rounds.append((bench, torch_results))
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            with open(os.path.join(args.out, f"bench_model.{index + 1}.json"), "w") as handle:
                handle.write(bench_raw)
            with open(os.path.join(args.out, f"torch_model.{index + 1}.jsonl"), "w") as handle:
                handle.write(torch_raw)

    paths = sorted({path for _, t in rounds for shape in shapes for path in t[shape]})
    print(f"tokens/s, {args.rounds} round(s) of bench_model then torch_model.py; ranges over the rounds")
    header = ["shape", "ngemb"] + paths + ["ngemb / best transformers"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for shape in shapes:
        row = [shape, span([b[shape] for b, _ in rounds], 1)]
        row += [span([t[shape][path] for _, t in rounds], 1) for path in paths]
        row.append(span([b[shape] / max(t[shape].values()) for b, t in rounds], 2))
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
