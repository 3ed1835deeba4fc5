#!/usr/bin/env python3
"""ngemb's embedding forward against PyTorch, back to back: bench_embedding, then torch_embedding.py, repeated.

    python bench/anchors/compare_embedding.py build/bench/bench_embedding
    python bench/anchors/compare_embedding.py build/bench/bench_embedding --shapes decode_B1,decode_B64 --rounds 3 \
        --torch-paths official_fp32,sglang_fp32 --out /tmp/anchor-run

Run with the Python that has torch (its interpreter also runs torch_embedding.py; --python picks another). Each round
runs bench_embedding (--benchmark_format=json, only the library benchmarks of the chosen shapes: BM_{shape} is the
fp32-W_cat forward, BM_{shape}_<suffix> every other weight variant, e.g. _bf16 or _fp8; _naive and _gather are
skipped) and then torch_embedding.py on the same shapes. The two programs never run at once: each holds ~7.2 GB of
tables. A ratio compares the two programs of the same round; with several rounds the table gives the range of the
per-round figures, so a round disturbed by other work on the machine shows as a wide range rather than a wrong
number.

Table (tokens/s): per shape, ngemb per weight variant, the best PyTorch path of the round (and which one), and
ngemb / best PyTorch per variant. --out DIR keeps every round's raw outputs (bench_embedding JSON, torch JSON lines).
"""
import argparse
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPES = ["decode_B1", "decode_B16", "decode_B64", "decode_B256", "prefill_4x1024"]
SKIPPED = ("naive", "gather")


def log(message):
    print(message, file=sys.stderr, flush=True)


def library_benchmarks(binary, shapes):
    """{name: (shape, variant)} of the library benchmarks for `shapes` (variant "fp32" for the suffix-less one)."""
    listing = subprocess.run([binary, "--benchmark_list_tests", "--benchmark_filter=^BM_"], check=True,
                             capture_output=True, text=True).stdout.split()
    chosen = {}
    for entry in listing:
        name = entry.split("/")[0]
        for shape in shapes:
            match = re.fullmatch(f"BM_{shape}(?:_([A-Za-z0-9]+))?", name)
            if match and match.group(1) not in SKIPPED:
                chosen[name] = (shape, match.group(1) or "fp32")
    missing = [shape for shape in shapes if not any(s == shape for s, _ in chosen.values())]
    if missing:
        raise SystemExit(f"{binary} has no benchmark for {', '.join(missing)}")
    return chosen


def run_bench(binary, chosen):
    """{(shape, variant): tokens/s} from one bench_embedding run."""
    # Google Benchmark's POSIX regex: names are matched with their "/real_time" suffix, so "^(a|b)/" is exact.
    names = "|".join(re.escape(name) for name in chosen)
    output = subprocess.run([binary, "--benchmark_format=json", f"--benchmark_filter=^({names})/"], check=True,
                            capture_output=True, text=True).stdout
    results = {}
    for entry in json.loads(output)["benchmarks"]:
        name = entry["name"].split("/")[0]
        if entry.get("run_type", "iteration") == "iteration" and name in chosen:
            results[chosen[name]] = entry["tokens_per_second"]
    return results, output


def run_torch(python, shapes, paths, max_call_seconds, threads):
    """{shape: {path: tokens/s}} from one torch_embedding.py run."""
    command = [python, os.path.join(HERE, "torch_embedding.py"), "--shapes", ",".join(shapes),
               "--max-call-seconds", max_call_seconds, "--threads", threads]
    if paths:
        command += ["--paths", paths]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    results = {}
    for line in output.splitlines():
        record = json.loads(line)
        results.setdefault(record["shape"], {})[record["path"]] = record["tokens_per_second"]  # None: not timed
    return results, output


def best_path(figures):
    timed = {path: value for path, value in figures.items() if value is not None}
    if not timed:
        raise SystemExit("torch_embedding.py timed no path of a shape (raise --max-call-seconds?)")
    return max(timed, key=timed.get)


def span(values, digits):
    """"a" or "lo-hi" of the rounds' figures."""
    low, high = min(values), max(values)
    text = f"{low:.{digits}f}"
    return text if f"{high:.{digits}f}" == text else f"{text}-{high:.{digits}f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bench_embedding", help="path of the bench_embedding binary")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated, of " + ", ".join(SHAPES))
    parser.add_argument("--rounds", type=int, default=2, help="bench then torch, this many times (default 2)")
    parser.add_argument("--torch-paths", default="", help="torch_embedding.py --paths (default: all)")
    parser.add_argument("--max-call-seconds", default="20", help="torch_embedding.py --max-call-seconds")
    parser.add_argument("--torch-threads", default=str(os.cpu_count()), help="torch_embedding.py --threads")
    parser.add_argument("--python", default=sys.executable, help="interpreter with torch for torch_embedding.py")
    parser.add_argument("--out", help="folder for every round's raw outputs")
    args = parser.parse_args()
    shapes = args.shapes.split(",")
    if any(shape not in SHAPES for shape in shapes):
        parser.error(f"--shapes: each of {', '.join(SHAPES)}")

    chosen = library_benchmarks(args.bench_embedding, shapes)
    variants = sorted({variant for _, variant in chosen.values()}, key=lambda v: (v != "fp32", v))
    rounds = []
    for index in range(args.rounds):
        log(f"round {index + 1}/{args.rounds}: bench_embedding ({', '.join(sorted(chosen))})")
        bench, bench_raw = run_bench(args.bench_embedding, chosen)
        log(f"round {index + 1}/{args.rounds}: torch_embedding.py")
        torch_results, torch_raw = run_torch(args.python, shapes, args.torch_paths, args.max_call_seconds,
                                             args.torch_threads)
        rounds.append((bench, torch_results))
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            with open(os.path.join(args.out, f"bench_embedding.{index + 1}.json"), "w") as handle:
                handle.write(bench_raw)
            with open(os.path.join(args.out, f"torch_embedding.{index + 1}.jsonl"), "w") as handle:
                handle.write(torch_raw)

    header = (["shape"] + [f"ngemb {v}" for v in variants] + ["best PyTorch", "PyTorch path"] +
              [f"{v} / PyTorch" for v in variants])
    rows = []
    for shape in shapes:
        best = [t[shape][best_path(t[shape])] for _, t in rounds]
        winners = sorted({best_path(t[shape]) for _, t in rounds})
        row = [shape]
        for variant in variants:
            row.append(span([b[(shape, variant)] for b, _ in rounds], 0) if (shape, variant) in rounds[0][0] else "-")
        row += [span(best, 0), ", ".join(winners)]
        for variant in variants:
            if (shape, variant) in rounds[0][0]:
                row.append(span([b[(shape, variant)] / p for (b, _), p in zip(rounds, best)], 2))
            else:
                row.append("-")
        rows.append(row)
    print(f"tokens/s, {args.rounds} round(s) of bench_embedding then torch_embedding.py; ranges over the rounds")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    paths = sorted({path for _, t in rounds for shape in shapes for path in t[shape]})
    print("\nevery PyTorch path, tokens/s")
    print("| shape | " + " | ".join(paths) + " |")
    print("|" + "---|" * (len(paths) + 1))
    for shape in shapes:
        figures = []
        for path in paths:
            values = [t[shape].get(path) for _, t in rounds]
            figures.append("not timed" if None in values else span(values, 0))
        print(f"| {shape} | " + " | ".join(figures) + " |")


if __name__ == "__main__":
    main()
