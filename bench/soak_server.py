#!/usr/bin/env python3
"""Soak test of `leanmoe serve`: many clients for a long time, answers checked.

What it does: starts `leanmoe serve` on 127.0.0.1 (the built-in model unless
-m is given), asks each prompt of a fixed set once, alone, for its greedy
answer, then runs --clients threads for --duration seconds. Each client
loops: it picks a prompt, an endpoint (chat or completions) and a mode
(streaming or not), and either reads the whole answer, which must equal the
solo answer byte for byte, or hangs up early at a random moment (about one
request in five). Meanwhile it samples the server's resident memory
(VmRSS in /proc/PID/status) every --rss-every seconds. The server's KV
pool is kept small (--kv-pages), so requests also wait for pages and idle
caches are dropped to make room.

It reports requests finished, wrong answers, errors, early disconnects, and
the RSS trend: first and last sample, the peak, and the least-squares slope
over the second half of the run (a leak shows as a steady positive slope;
warm-up growth is in the first half). At the end the server must be idle
(no active sequence, nothing queued) and exit 0 on SIGTERM. The exit status
is 1 on any wrong answer, error or unclean end.

    python3 bench/soak_server.py --duration 600            # built-in model, 8 clients
    python3 bench/soak_server.py -m model.gguf --duration 60 --clients 4 --parallel 2

Standard library only; all traffic goes to 127.0.0.1; every loop is bounded
by the deadline and every socket has a timeout.
"""
import argparse
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TIMEOUT = 120

PROMPTS = ["ROMEO:", "JULIET:\nO Romeo, Romeo", "First Citizen:\nBefore we proceed", "KING HENRY:", "To be, or not",
           "MENENIUS:\nWhat work's, my countrymen", "Nurse:\nFaith, I can tell", "The king is dead",
           "HAMLET:\nWhat a piece of work", "LADY MACBETH:\nOut, damned spot", "Second Servant:",
           "GLOUCESTER:\nNow is the winter of our discontent", "A", "Where is the duke?",
           "CORIOLANUS:\nYou common cry of curs!", "BENVOLIO:\nHere comes the furious Tybalt"]


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def body_of(i, kind, max_tokens, stream):
    b = {"max_tokens": max_tokens, "temperature": 0, "stream": stream}
    if kind == "chat":
        b["messages"] = [{"role": "user", "content": PROMPTS[i]}]
    else:
        b["prompt"] = PROMPTS[i]
    return json.dumps(b).encode()


def path_of(kind):
    return "/v1/chat/completions" if kind == "chat" else "/v1/completions"


def text_of(kind, choice):
    if kind == "chat":
        return (choice.get("delta") or choice.get("message") or {}).get("content") or ""
    return choice.get("text") or ""


def ask(port, i, kind, max_tokens, stream, hang_up_after=None):
    """One request. Returns ("ok", text), ("gone", None) after an early
    hang-up, or ("error", description)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("POST", path_of(kind), body=body_of(i, kind, max_tokens, stream),
                     headers={"Content-Type": "application/json"})
        if hang_up_after is not None and not stream:
            time.sleep(hang_up_after)  # the request is running; leave
            return ("gone", None)
        r = conn.getresponse()
        if r.status != 200:
            return ("error", "HTTP %d: %r" % (r.status, r.read()[:200]))
        if not stream:
            return ("ok", text_of(kind, json.loads(r.read())["choices"][0]))
        parts, events = [], 0
        while True:
            line = r.readline()
            if not line:
                return ("error", "stream ended without [DONE]")
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            if line[6:] == b"[DONE]":
                return ("ok", "".join(parts))
            events += 1
            if hang_up_after is not None and events > hang_up_after:
                return ("gone", None)
            for c in json.loads(line[6:]).get("choices", []):
                parts.append(text_of(kind, c))
    except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
        return ("error", repr(e))
    finally:
        conn.close()


def metrics(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(leanmoe_\w+) (\S+)$", text, re.M)}


def slope_kb_per_min(samples):
    """Least-squares slope of (t, kb) samples, in KB per minute."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mk = sum(k for _, k in samples) / n
    den = sum((t - mt) ** 2 for t, _ in samples)
    return sum((t - mt) * (k - mk) for t, k in samples) / den * 60 if den else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=None, help="model file (default: the built-in model)")
    ap.add_argument("--leanmoe", default=os.path.join(ROOT, "build", "leanmoe"))
    ap.add_argument("--duration", type=float, default=600, help="seconds of load")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--parallel", type=int, default=4, help="server slots")
    ap.add_argument("--kv-pages", type=int, default=12,
                    help="server KV pool in 16-token pages; small, so that requests wait for pages (0: the "
                         "server's default)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=48, help="longest answer asked for")
    ap.add_argument("--rss-every", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    log = tempfile.NamedTemporaryFile(prefix="lmoe_soak_", suffix=".log", delete=False)
    cmd = [args.leanmoe, "serve", "--host", "127.0.0.1", "--port", "0", "--parallel", str(args.parallel),
           "-t", str(args.threads), "--max-queue", str(max(64, args.clients * 4))]
    if args.model:
        cmd += ["-m", args.model]
    if args.kv_pages:
        info = subprocess.run([args.leanmoe, "info", "--json"] + (["-m", args.model] if args.model else []),
                              capture_output=True, text=True, timeout=300)
        bpt = json.loads(info.stdout)["kv_bytes_per_token"]
        cmd += ["--kv-pool-mb", "%.6f" % ((args.kv_pages + 0.5) * 16 * bpt / 1048576.0)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    port, deadline = None, time.time() + 300
    while port is None and time.time() < deadline and proc.poll() is None:
        m = re.search(r"http://127\.0\.0\.1:(\d+)", open(log.name, errors="replace").read())
        port = int(m.group(1)) if m else None
        time.sleep(0.05)
    if port is None:
        proc.kill()
        print("server did not start: " + open(log.name, errors="replace").read()[-2000:])
        return 1
    print("server: %s" % open(log.name, errors="replace").read().strip().splitlines()[0])
    print("command: %s" % " ".join(cmd))

    rng = random.Random(args.seed)
    # Every (prompt, endpoint) pair has a fixed length, so its answer is fixed.
    cases = [(i, kind, rng.randint(4, args.max_tokens)) for i in range(len(PROMPTS)) for kind in ("chat", "completion")]
    solo = {}
    for i, kind, n in cases:
        st, text = ask(port, i, kind, n, False)
        if st != "ok":
            print("solo request failed: %s" % text)
            proc.kill()
            return 1
        solo[(i, kind)] = text

    counts = {"ok": 0, "wrong": 0, "error": 0, "gone": 0}
    first = {"wrong": None, "error": None}
    lock = threading.Lock()
    t_end = time.time() + args.duration

    def client(seed):
        r = random.Random(seed)
        while time.time() < t_end:
            i, kind, n = r.choice(cases)
            stream = r.random() < 0.5
            hang = None
            if r.random() < 0.2:
                hang = r.randint(0, 6) if stream else r.uniform(0.0, 0.3)
            st, text = ask(port, i, kind, n, stream, hang)
            if st == "ok" and text != solo[(i, kind)]:
                st, text = "wrong", "prompt %d %s: %r != solo %r" % (i, kind, text, solo[(i, kind)])
            with lock:
                counts[st] += 1
                if st in first and first[st] is None:
                    first[st] = text

    samples = []
    peaks = {"leanmoe_kv_pool_pages_used": 0, "leanmoe_queue_depth": 0, "leanmoe_active_sequences": 0}
    t0 = time.time()

    def sampler():
        while time.time() < t_end:
            samples.append((time.time() - t0, rss_kb(proc.pid)))
            next_rss = time.time() + args.rss_every
            while time.time() < min(next_rss, t_end):
                try:
                    mv = metrics(port)
                    for k in peaks:
                        peaks[k] = max(peaks[k], mv.get(k, 0))
                except (OSError, http.client.HTTPException):
                    pass
                time.sleep(0.2)

    threads = [threading.Thread(target=client, args=(args.seed * 1000 + k,)) for k in range(args.clients)]
    threads.append(threading.Thread(target=sampler))
    for th in threads:
        th.start()
    for th in threads:
        th.join(args.duration + TIMEOUT * 2)
    samples.append((time.time() - t0, rss_kb(proc.pid)))

    # Idle once the clients are gone: hang-ups have freed their slots.
    idle, m = False, {}
    for _ in range(100):
        m = metrics(port)
        if m.get("leanmoe_active_sequences") == 0 and m.get("leanmoe_queue_depth") == 0:
            idle = True
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = None
    os.unlink(log.name)

    half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    peak = max(k for _, k in samples)
    total = sum(counts.values())
    print("duration %.0f s, %d clients, %d slots, model %s" % (
        samples[-1][0], args.clients, args.parallel, args.model or "built-in (models/leanmoe-tiny.gguf)"))
    print("requests %d: %d answers equal to solo, %d wrong, %d errors, %d early disconnects" % (
        total, counts["ok"], counts["wrong"], counts["error"], counts["gone"]))
    print("generated tokens %d in %d steps, prefix-cache hits %d tokens; KV pool pages in use at the end %d of %d" % (
        m.get("leanmoe_generation_tokens_total", 0), m.get("leanmoe_steps_total", 0),
        m.get("leanmoe_prefix_cache_hit_tokens_total", 0),
        m.get("leanmoe_kv_pool_pages_used", -1), m.get("leanmoe_kv_pool_pages", -1)))
    print("peaks: %d KV pages used, %d sequences active, %d requests queued" % (
        peaks["leanmoe_kv_pool_pages_used"], peaks["leanmoe_active_sequences"], peaks["leanmoe_queue_depth"]))
    print("VmRSS: first %.1f MB, last %.1f MB, peak %.1f MB, %d samples; second-half slope %+.1f KB/min" % (
        samples[0][1] / 1024, samples[-1][1] / 1024, peak / 1024, len(samples), slope_kb_per_min(half)))
    print("end: idle %s, exit status %r" % (idle, code))
    for k in ("wrong", "error"):
        if first[k]:
            print("first %s: %s" % (k, first[k]))
    return 0 if counts["wrong"] == 0 and counts["error"] == 0 and idle and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
