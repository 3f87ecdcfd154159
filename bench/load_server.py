#!/usr/bin/env python3
"""Load test of `leanmoe serve`, optionally beside llama.cpp's llama-server.

What it times: for each concurrency C (default 1, 4, 8, 16) it starts the
server with --parallel C on the model file, then runs C client threads that
each stream R completions (fixed prompt, temperature 0, ignore_eos, so every
request generates exactly --max-tokens tokens). It reports

  agg tok/s     completion tokens of all requests / wall time of the level
  tpot p50/p99  gaps between consecutive streamed chunks, all streams pooled
                (one chunk is one token unless a UTF-8 character or a held-back
                stop string spans tokens)
  ttft p50      request sent -> first content chunk

With --llama-server PATH the same levels run against llama-server
(`--parallel C`, the same model, threads and per-slot context) in the same
run, and a ratio column compares the two. Without it, only leanmoe runs and
the script says so. Standard library only; all traffic goes to 127.0.0.1.

    python3 bench/load_server.py -m tests/golden/models/ds3-q8_0.gguf
    python3 bench/load_server.py -m model.gguf --llama-server ../llama.cpp/build/bin/llama-server \
        --levels 1,4 --requests 4 --max-tokens 64 --csv bench/results/serve.csv
"""
import argparse
import http.client
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port, proc, log, timeout):
    """Polls GET /health until 200 (llama-server answers 503 while loading)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited: " + open(log.name, errors="replace").read()[-2000:])
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server not healthy after %d s" % timeout)


class Server:
    """A server process on 127.0.0.1; kind is "leanmoe" or "llama"."""

    def __init__(self, kind, binary, model, parallel, threads, ctx_per_slot):
        self.kind = kind
        self.log = tempfile.NamedTemporaryFile(prefix="lmoe_load_", suffix=".log", delete=False)
        if kind == "leanmoe":
            cmd = [binary, "serve", "-m", model, "--host", "127.0.0.1", "--port", "0", "--parallel",
                   str(parallel), "-c", str(ctx_per_slot), "--max-queue", str(max(64, parallel * 4))]
            if threads:
                cmd += ["-t", str(threads)]
        else:
            self.port = free_port()
            # llama-server splits -c over its slots.
            cmd = [binary, "-m", model, "--host", "127.0.0.1", "--port", str(self.port), "--parallel",
                   str(parallel), "-c", str(ctx_per_slot * parallel)]
            if threads:
                cmd += ["-t", str(threads)]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        if kind == "leanmoe":
            deadline = time.time() + 120
            self.port = None
            while self.port is None and time.time() < deadline and self.proc.poll() is None:
                m = re.search(r"http://127\.0\.0\.1:(\d+)", open(self.log.name, errors="replace").read())
                self.port = int(m.group(1)) if m else None
                time.sleep(0.05)
            if self.port is None:
                self.stop()
                raise RuntimeError("leanmoe serve did not start: " + open(self.log.name).read()[-2000:])
        try:
            wait_healthy(self.port, self.proc, self.log, 300)
        except Exception:
            self.stop()
            raise

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.unlink(self.log.name)


def one_request(port, body, out):
    """Streams one completion; appends (ttft, [gaps], tokens, t_end) to out."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError("HTTP %d: %r" % (r.status, r.read()[:300]))
    times, usage = [], None
    while True:
        line = r.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        data = line[6:]
        if data == b"[DONE]":
            break
        ev = json.loads(data)
        if ev.get("usage"):
            usage = ev["usage"]
        if any(c.get("text") for c in ev.get("choices", [])):
            times.append(time.perf_counter())
    conn.close()
    n = usage["completion_tokens"] if usage else len(times)
    gaps = [b - a for a, b in zip(times, times[1:])]
    out.append((times[0] - t0 if times else float("nan"), gaps, n))


def run_level(port, streams, requests, max_tokens, prompt):
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
                       "stream": True, "stream_options": {"include_usage": True}}).encode()
    results, errors = [], []

    def client():
        for _ in range(requests):
            try:
                one_request(port, body, results)
            except Exception as e:  # counted, reported
                errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(streams)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    tokens = sum(r[2] for r in results)
    gaps = sorted(g for r in results for g in r[1])
    ttfts = [r[0] for r in results if r[0] == r[0]]

    def pct(xs, q):
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3 if xs else float("nan")

    return {"requests": len(results), "errors": len(errors), "tokens": tokens, "wall_s": wall,
            "tok_s": tokens / wall if wall > 0 else 0.0, "tpot_p50_ms": pct(gaps, 0.50),
            "tpot_p99_ms": pct(gaps, 0.99), "ttft_p50_ms": statistics.median(ttfts) * 1e3 if ttfts else float("nan"),
            "first_error": errors[0] if errors else ""}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=os.path.join(ROOT, "tests", "golden", "models", "ds3-q8_0.gguf"))
    ap.add_argument("--leanmoe", default=os.path.join(ROOT, "build", "leanmoe"))
    ap.add_argument("--llama-server", default=None, help="path to llama.cpp's llama-server binary")
    ap.add_argument("--levels", default="1,4,8,16", help="concurrent streams, comma-separated")
    ap.add_argument("--requests", type=int, default=3, help="requests per stream and level")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt", default="Once upon a time, in a land far away,")
    ap.add_argument("-t", "--threads", type=int, default=0, help="threads for both servers (0: their default)")
    ap.add_argument("--ctx", type=int, default=512, help="context per slot for both servers")
    ap.add_argument("--csv", default=None, help="append rows to this CSV file")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",") if x]
    servers = [("leanmoe", args.leanmoe)]
    if args.llama_server:
        if os.access(args.llama_server, os.X_OK):
            servers.append(("llama", args.llama_server))
        else:
            print("llama-server: %s is not an executable; running leanmoe only" % args.llama_server)
    else:
        print("llama-server: not given (--llama-server PATH); running leanmoe only")
    print("model %s, %d requests/stream, %d tokens each, machine %s (%d cpus)" %
          (args.model, args.requests, args.max_tokens, platform.machine(), os.cpu_count()))
    rows = []
    for level in levels:
        for kind, binary in servers:
            try:
                srv = Server(kind, binary, args.model, level, args.threads, args.ctx)
            except Exception as e:
                print("%-8s C=%-3d could not start: %s" % (kind, level, e))
                continue
            try:
                run_level(srv.port, 1, 1, 4, args.prompt)  # warm-up
                r = run_level(srv.port, level, args.requests, args.max_tokens, args.prompt)
            finally:
                srv.stop()
            r.update(server=kind, streams=level)
            rows.append(r)
    print("\n%-8s %4s %5s %7s %8s %10s %9s %9s %9s %7s" % ("server", "C", "reqs", "tokens", "wall_s", "agg_tok/s",
                                                          "tpot_p50", "tpot_p99", "ttft_p50", "vs_llama"))
    for r in rows:
        ref = [x for x in rows if x["server"] == "llama" and x["streams"] == r["streams"]]
        ratio = "%.2fx" % (r["tok_s"] / ref[0]["tok_s"]) if ref and ref[0]["tok_s"] and r["server"] == "leanmoe" \
            else ""
        print("%-8s %4d %5d %7d %8.2f %10.1f %7.2fms %7.2fms %7.1fms %7s" % (
            r["server"], r["streams"], r["requests"], r["tokens"], r["wall_s"], r["tok_s"], r["tpot_p50_ms"],
            r["tpot_p99_ms"], r["ttft_p50_ms"], ratio))
        if r["errors"]:
            print("         %d errors, first: %s" % (r["errors"], r["first_error"]))
    if args.csv:
        new = not os.path.exists(args.csv)
        with open(args.csv, "a") as f:
            if new:
                f.write("server,model,streams,requests,tokens,wall_s,tok_s,tpot_p50_ms,tpot_p99_ms,ttft_p50_ms\n")
            for r in rows:
                f.write("%s,%s,%d,%d,%d,%.3f,%.2f,%.3f,%.3f,%.2f\n" % (
                    r["server"], os.path.basename(args.model), r["streams"], r["requests"], r["tokens"],
                    r["wall_s"], r["tok_s"], r["tpot_p50_ms"], r["tpot_p99_ms"], r["ttft_p50_ms"]))
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
