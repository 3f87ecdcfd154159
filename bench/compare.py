#!/usr/bin/env python3
"""Side-by-side speed of leanmoe, llama.cpp and ik_llama.cpp on the same GGUF
files, thread count and machine, in one run.

For each model file, the engines take turns (leanmoe, llama.cpp, ik_llama.cpp,
then again, --rounds times), so slow drifts of a noisy machine hit all of them
alike; each engine's best round counts. Each round is one process:
`leanmoe bench --json` and `llama-bench -o json` with the same -p/-n/-t.
Prints tokens/s for pp and tg, the ratios against llama.cpp and ik_llama.cpp,
leanmoe's decode roofline percentage, and appends rows to
bench/results/<machine>.csv.

    python3 bench/compare.py --llama-bench PATH [--ik-bench PATH] -t 2 \
        --rounds 2 MODEL.gguf [MODEL.gguf ...]

Benchmark models are made by `build/leanmoe synth` (see BENCHMARKS.md); they
are GBs and never committed. Needs only the Python standard library.
"""
import argparse
import csv
import datetime
import json
import os
import platform
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_leanmoe(model, a):
    cmd = [os.path.join(ROOT, "build", "leanmoe"), "bench", "-m", model, "-t", str(a.threads),
           "--pp", str(a.pp), "--tg", str(a.tg), "-r", "1", "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    j = json.loads(out.strip().splitlines()[-1])
    return {"pp": j["pp512_tps"], "tg": j["tg128_tps"], "roof": j["roofline_tg_tps"], "rss": j["peak_rss_bytes"]}


def run_llama_bench(binary, model, a):
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.path.dirname(binary) + ":" + env.get("LD_LIBRARY_PATH", "")
    cmd = [binary, "-m", model, "-t", str(a.threads), "-p", str(a.pp), "-n", str(a.tg), "-r", "1", "-o", "json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    res = {"pp": 0.0, "tg": 0.0}
    for r in json.loads(out):
        if r.get("n_prompt", 0) > 0 and r.get("n_gen", 0) == 0:
            res["pp"] = float(r["avg_ts"])
        elif r.get("n_gen", 0) > 0 and r.get("n_prompt", 0) == 0:
            res["tg"] = float(r["avg_ts"])
    return res


def best(rounds):
    return {k: max(r[k] for r in rounds) for k in rounds[0]} if rounds else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--llama-bench", required=True)
    ap.add_argument("--ik-bench", default="")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--pp", type=int, default=512)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--machine", default=socket.gethostname().split(".")[0])
    a = ap.parse_args()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    engines = [("leanmoe", lambda m: run_leanmoe(m, a)), ("llama.cpp", lambda m: run_llama_bench(a.llama_bench, m, a))]
    if a.ik_bench:
        engines.append(("ik_llama.cpp", lambda m: run_llama_bench(a.ik_bench, m, a)))
    rows = []
    for model in a.models:
        got = {name: [] for name, _ in engines}
        for r in range(a.rounds):
            for name, fn in engines:
                try:
                    got[name].append(fn(model))
                except (subprocess.CalledProcessError, ValueError, KeyError) as e:
                    print(f"{name} failed on {model}: {e}", file=sys.stderr)
                print(f"  round {r + 1} {name}: {got[name][-1] if got[name] else 'failed'}", file=sys.stderr)
        b = {name: best(v) for name, v in got.items()}
        rows.append((os.path.basename(model), b))
    print(f"\nmachine {a.machine}, {os.cpu_count()} cpus, {a.threads} threads, commit {commit}, "
          f"pp{a.pp}/tg{a.tg}, best of {a.rounds} interleaved rounds\n")
    print("| model | engine | pp t/s | tg t/s | pp vs llama.cpp | tg vs llama.cpp | pp vs ik | tg vs ik | tg % roofline |")
    print("|---|---|---|---|---|---|---|---|---|")
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    csv_path = os.path.join(ROOT, "bench", "results", f"{a.machine}.csv")
    new = not os.path.exists(csv_path)
    with open(csv_path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["time", "commit", "machine", "threads", "model", "engine", "pp_tps", "tg_tps", "roofline_pct"])
        for model, b in rows:
            base, ik = b.get("llama.cpp"), b.get("ik_llama.cpp")
            for name, r in b.items():
                if not r:
                    continue
                def ratio(x, ref, k):
                    return f"{x[k] / ref[k]:.2f}x" if ref and ref[k] else "-"
                roof = f"{100 * r['tg'] / r['roof']:.0f}%" if "roof" in r and r["roof"] else "-"
                print(f"| {model} | {name} | {r['pp']:.2f} | {r['tg']:.2f} | {ratio(r, base, 'pp')} | "
                      f"{ratio(r, base, 'tg')} | {ratio(r, ik, 'pp')} | {ratio(r, ik, 'tg')} | {roof} |")
                w.writerow([stamp, commit, a.machine, a.threads, model, name, f"{r['pp']:.3f}", f"{r['tg']:.3f}",
                            roof.rstrip('%') if roof != '-' else ""])


if __name__ == "__main__":
    main()
