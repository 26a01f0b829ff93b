#!/usr/bin/env python3
"""Compares `lstm bench` with PyTorch and ONNX Runtime on the issue-13
shapes, round by round: in each round, for each (shape, threads), ours and
both peers (`../shared/tools/bench_peers.py`) run back to back (which goes
first alternates by round), and the round's ratio is ours over the better
peer. The table gives each contender's median and the median of the
per-round ratios. On a shared VM whose speed drifts by tens of percent
within minutes, ratios of measurements taken seconds apart are what can be
compared; medians of runs minutes apart are not.

Usage (the peers need a venv with torch, onnx and onnxruntime from pip;
CI does not run this):
  cargo build --release
  python3 tools/compare_peers.py VENV [ROUNDS]   # e.g. /root/peers 5

Env: LSTM (the binary, default target/release/lstm), PEERS_TOOL (default
../shared/tools/bench_peers.py).
"""
import collections
import json
import os
import re
import statistics
import subprocess
import sys

SHAPES = {  # name: (B, n_in, H, T), as in bench_peers.py
    "b1-h256": (1, 256, 256, 200), "b16-h256": (16, 256, 256, 100),
    "b64-h256": (64, 256, 256, 100), "b64-h512": (64, 512, 512, 50),
    "b256-h512": (256, 512, 512, 25), "b32-h1024": (32, 1024, 1024, 25),
}


def main():
    venv = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    lstm = os.environ.get("LSTM", "target/release/lstm")
    tool = os.environ.get("PEERS_TOOL", os.path.join(os.path.dirname(__file__), "../../shared/tools/bench_peers.py"))
    res = collections.defaultdict(list)
    ratio = collections.defaultdict(list)
    eff = collections.defaultdict(list)
    plans = {}
    for r in range(rounds):
        for th in (1, 2):
            for name, (b, n, h, t) in SHAPES.items():
                def ours():
                    out = subprocess.run([lstm, "bench", "--batch", str(b), "--input", str(n), "--hidden", str(h),
                                          "--steps", str(t), "--threads", str(th), "--seconds", "1", "--json"],
                                         capture_output=True, text=True, check=True).stdout
                    j = json.loads(out)
                    plans[(name, th)] = j["plan"]
                    if th == 1:
                        eff[name].append(j["gflops"] / j["fma_peak_gflops"])
                    return j["sample_steps_per_s"]

                def peers():
                    out = subprocess.run([os.path.join(venv, "bin/python"), tool, "--threads", str(th),
                                          "--shapes", name, "--peers", "torch,ort"],
                                         capture_output=True, text=True, check=True).stdout
                    d = {}
                    for line in out.splitlines():
                        m = re.match(r"(\w+)\s+(\S+)\s+th=(\d+)\s+(\d+) sample-steps/s", line)
                        if m:
                            d[m[1]] = float(m[4])
                    return d
                if r % 2 == 0:
                    o, p = ours(), peers()
                else:
                    p = peers()
                    o = ours()
                res[("ours", name, th)].append(o)
                for k, v in p.items():
                    res[(k, name, th)].append(v)
                ratio[(name, th)].append(o / max(p.values()))
        print(f"round {r} done", file=sys.stderr, flush=True)
    print("| shape | threads | PyTorch | ONNX Runtime | ours | ours / best (median of rounds) | per round | % of fma-peak (1 thread) | plan |")
    print("|---|---|---|---|---|---|---|---|---|")
    for th in (1, 2):
        for name in SHAPES:
            med = {k: statistics.median(res[(k, name, th)]) for k in ("torch", "ort", "ours")}
            rr = ratio[(name, th)]
            e = ""
            if th == 1:
                e = f"{100 * statistics.median(eff[name]):.0f}% ({100 * min(eff[name]):.0f}–{100 * max(eff[name]):.0f})"
            print(f"| {name} | {th} | {med['torch'] / 1e3:.1f}k | {med['ort'] / 1e3:.1f}k | {med['ours'] / 1e3:.1f}k "
                  f"| {statistics.median(rr):.2f} | {' '.join(f'{x:.2f}' for x in rr)} | {e} | {plans[(name, th)]} |")


if __name__ == "__main__":
    main()
