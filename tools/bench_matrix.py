#!/usr/bin/env python3
"""Runs `lstm bench` over the issues' target shapes, interleaved, and prints
medians: the shared machine is noisy, so every configuration is measured in
each of ROUNDS rounds (default 3) and ratios are only meaningful within one
run. `../shared/tools/fma-peak` is printed before and after when present.

Usage:
  cargo build --release
  python3 tools/bench_matrix.py                 # the default matrix below
  python3 tools/bench_matrix.py "--batch 8 --input 7 --hidden 5 --head 3 --peephole matrix --kernel generic" ...
  ROUNDS=5 SECONDS_PER_RUN=1 python3 tools/bench_matrix.py

An argument may start with `PATH::` to run another `lstm` binary (A/B runs).
"""
import json
import os
import statistics
import subprocess
import sys

LSTM = "./target/release/lstm"
SEED = "--input 7 --hidden 5 --head 3 --peephole matrix --steps 1000"
DEFAULT = [
    # #3 fast engine (T=32, n_in = H)
    "--batch 64 --input 256 --hidden 256",
    "--batch 64 --input 512 --hidden 512",
    "--batch 256 --input 512 --hidden 512",
    "--batch 32 --input 1024 --hidden 1024",
    "--batch 16 --input 256 --hidden 256",
    "--batch 64 --input 256 --hidden 256 --threads 2",
    "--batch 1 --input 256 --hidden 256",
    "--batch 1 --input 256 --hidden 256 --threads 2",
    "--batch 64 --input 512 --hidden 512 --peephole matrix --head 256",
    "--batch 64 --input 512 --hidden 512 --isa avx2",
    "--batch 16 --input 256 --hidden 256 --subnormal",
    # #5 variants
    "--batch 64 --input 512 --hidden 512 --peephole diagonal",
    "--batch 64 --input 512 --hidden 512 --projection 256",
    # #4 specialized vs generic
    *[f"--batch {b} {SEED} --kernel {k}" for b in (1, 10) for k in ("generic", "specialized")],
    *[f"--batch {b} --input {h} --hidden {h} --steps 256 --kernel {k}"
      for h in (64, 128) for b in (1, 4, 16) for k in ("generic", "specialized")],
    *[f"--batch {b} --input {h} --hidden {h} --steps 32 --kernel {k}"
      for h in (256, 512) for b in (1, 64) for k in ("generic", "specialized")],
]


def peak():
    tool = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tools", "fma-peak")
    if os.path.exists(tool):
        print(subprocess.run([tool], capture_output=True, text=True).stdout.strip(), flush=True)


def main():
    runs = sys.argv[1:] or DEFAULT
    rounds = int(os.environ.get("ROUNDS", "3"))
    secs = os.environ.get("SECONDS_PER_RUN", "0.7")
    peak()
    res = {a: [] for a in runs}
    for _ in range(rounds):
        for a in runs:
            binary, _, args = a.rpartition("::")
            out = subprocess.check_output(
                [binary or LSTM, "bench", *args.split(), "--seconds", secs, "--json"])
            res[a].append(json.loads(out))
    for a in runs:
        ds = res[a]
        med = lambda k: statistics.median(d[k] for d in ds)
        print(f"{a:<92} {ds[0]['kernel']:<32} {ds[0]['isa']:<8}"
              f" {med('sample_steps_per_s'):>11.0f} sps {med('gflops'):6.1f} GF"
              f" {100 * med('peak_fraction'):5.1f}% {med('ns_per_step'):>12.1f} ns/step",
              flush=True)
    peak()


if __name__ == "__main__":
    main()
