#!/usr/bin/env python3
"""Black-box tests of `leanmoe serve`.

Starts the server on 127.0.0.1 (port 0: the server picks a free one and
prints it) on a tiny model, drives it with the official `openai` client and
with raw HTTP, and ends by printing "N passed, N failed" (", N skipped" when
the openai package is missing: those tests are skipped, never passed).

    python3 tests/server/test_server.py --leanmoe build/leanmoe-san

Every connection goes to 127.0.0.1, every request has a timeout, and the
number of requests is fixed, so the run is bounded in count and time.
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
import traceback

try:
    import openai
except ImportError:  # the openai-client tests are skipped, not passed
    openai = None

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KEY = "sk-test-key"
TIMEOUT = 30  # seconds, for any one request


# ---- A server process ------------------------------------------------------


class Server:
    """One `leanmoe serve` process; its stderr goes to a temporary file."""

    def __init__(self, binary, model, extra=(), env=None):
        self.log = tempfile.NamedTemporaryFile(prefix="lmoe_serve_", suffix=".log", delete=False)
        cmd = [binary, "serve", "-m", model, "--host", "127.0.0.1", "--port", "0", "-t", "1"] + list(extra)
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log, env=full_env)
        self.port = None
        deadline = time.time() + 60
        while time.time() < deadline and self.proc.poll() is None:
            m = re.search(r"http://127\.0\.0\.1:(\d+)", self.stderr())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.05)
        if self.port is None:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("server did not start: " + self.stderr()[-2000:])

    def stderr(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def stop(self, timeout=30):
        """SIGTERM, then the exit status (None if it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def sanitizer_report(self):
        """What AddressSanitizer or UBSan said, if anything."""
        log = self.stderr()
        for mark in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "WARNING: ThreadSanitizer", "runtime error:"):
            at = log.find(mark)
            if at >= 0:
                return log[max(0, at - 200):at + 3000]
        return None

    def close(self):
        """Stops the server; raises if a sanitizer reported anything."""
        self.stop()
        report = self.sanitizer_report()
        os.unlink(self.log.name)
        if report:
            raise AssertionError("sanitizer report:\n" + report)


# ---- HTTP helpers ------------------------------------------------------------


def request(port, method, path, body=None, headers=None, key=KEY, timeout=TIMEOUT):
    """One request on a fresh connection; returns (status, headers, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"Content-Type": "application/json"}
    if key:
        h["Authorization"] = "Bearer " + key
    h.update(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    try:
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def post(port, path, body, **kw):
    status, headers, data = request(port, "POST", path, body, **kw)
    try:
        return status, headers, json.loads(data)
    except ValueError:
        return status, headers, data


def sse_events(resp, stop_after=None):
    """Reads `data: ...` events from a streaming response; yields the parsed
    JSON (or the string "[DONE]")."""
    n = 0
    while True:
        line = resp.readline()  # through http.client, which undoes the chunking
        if not line:
            return
        line = line.rstrip(b"\r\n")
        if not line.startswith(b"data: "):
            continue
        data = line[6:]
        if data == b"[DONE]":
            yield "[DONE]"
            return
        yield json.loads(data)
        n += 1
        if stop_after is not None and n >= stop_after:
            return


def stream(port, path, body, stop_after=None):
    """A streaming request; returns (status, events). With stop_after, the
    client hangs up after that many events."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    body = dict(body, stream=True)
    conn.request("POST", path, body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json", "Authorization": "Bearer " + KEY})
    r = conn.getresponse()
    try:
        if r.status != 200:
            return r.status, [json.loads(r.read())]
        return r.status, list(sse_events(r, stop_after))
    finally:
        conn.close()


def stream_text(events, kind):
    """The text a stream carried, its finish reason, and its usage chunk."""
    text, reason, usage = "", None, None
    for e in events:
        if e == "[DONE]":
            continue
        if "error" in e:
            raise AssertionError("stream error: %r" % e)
        if e.get("usage"):
            usage = e["usage"]
        for c in e["choices"]:
            text += (c["delta"].get("content") or "") if kind == "chat" else c["text"]
            reason = c["finish_reason"] or reason
    return text, reason, usage


def metrics(port):
    status, _, data = request(port, "GET", "/metrics")
    assert status == 200, status
    values = {}
    for line in data.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, v = line.rpartition(" ")
            values[name] = float(v)
    return data.decode(), values


def chat_body(text, **kw):
    return dict({"model": "m", "messages": [{"role": "user", "content": text}]}, **kw)


def completion_body(text, **kw):
    return dict({"model": "m", "prompt": text}, **kw)


def check(cond, msg="check failed"):
    if not cond:
        raise AssertionError(msg)


# ---- Tests on the main server ---------------------------------------------------


def test_health(t):
    status, _, data = request(t.port, "GET", "/health", key=None)
    check(status == 200 and json.loads(data)["status"] == "ok", (status, data))


def test_models(t):
    status, _, data = request(t.port, "GET", "/v1/models")
    d = json.loads(data)
    check(status == 200 and d["object"] == "list" and d["data"][0]["id"] == t.model_id, d)


def client(t):
    return openai.OpenAI(base_url="http://127.0.0.1:%d/v1" % t.port, api_key=KEY, max_retries=0, timeout=TIMEOUT)


def check_cost(extra, usage_tokens):
    lm = extra["leanmoe"]
    for k in ("prompt_ms", "decode_ms", "tokens_per_s", "cost_usd"):
        check(isinstance(lm[k], (int, float)) and lm[k] >= 0, "leanmoe.%s: %r" % (k, lm))
    check(lm["cost_usd"] > 0, lm)
    # cost = engine seconds x $0.10 per hour (the default price)
    check(abs(lm["cost_usd"] - lm["engine_s"] * 0.10 / 3600) < 1e-12, lm)
    check(lm["engine_s"] <= (lm["prompt_ms"] + lm["decode_ms"]) / 1e3 + 0.05, lm)


def test_openai_chat(t):
    c = client(t)
    r = c.chat.completions.create(model=t.model_id, messages=[{"role": "user", "content": "Tell me a story."}],
                                  max_tokens=12, temperature=0)
    ch = r.choices[0]
    check(r.object == "chat.completion" and ch.message.role == "assistant", r)
    check(isinstance(ch.message.content, str) and ch.finish_reason in ("stop", "length"), r)
    u = r.usage
    check(u.prompt_tokens > 0 and u.total_tokens == u.prompt_tokens + u.completion_tokens, u)
    check(u.completion_tokens <= 12 and (ch.finish_reason == "stop" or u.completion_tokens == 12), u)
    check_cost(r.model_extra, u)
    # The same request streamed gives the same text, and the usage chunk.
    s = c.chat.completions.create(model=t.model_id, messages=[{"role": "user", "content": "Tell me a story."}],
                                  max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True})
    text, reason, usage = "", None, None
    for chunk in s:
        if chunk.usage:
            usage = chunk.usage
        for cc in chunk.choices:
            text += cc.delta.content or ""
            reason = cc.finish_reason or reason
    check(text == ch.message.content and reason == ch.finish_reason, (text, ch.message.content))
    check(usage is not None and usage.completion_tokens == u.completion_tokens, usage)


def test_openai_completions(t):
    c = client(t)
    r = c.completions.create(model=t.model_id, prompt="Once upon a time", max_tokens=10, temperature=0)
    check(r.object == "text_completion" and isinstance(r.choices[0].text, str), r)
    check(r.usage.completion_tokens <= 10, r.usage)
    check_cost(r.model_extra, r.usage)
    s = c.completions.create(model=t.model_id, prompt="Once upon a time", max_tokens=10, temperature=0, stream=True)
    text = "".join(ch.choices[0].text for ch in s if ch.choices)
    check(text == r.choices[0].text, (text, r.choices[0].text))


def test_openai_logprobs(t):
    c = client(t)
    r = c.chat.completions.create(model=t.model_id, messages=[{"role": "user", "content": "Hello"}], max_tokens=6,
                                  temperature=0, logprobs=True, top_logprobs=3)
    lp = r.choices[0].logprobs.content
    check(len(lp) == r.usage.completion_tokens, (len(lp), r.usage))
    for tok in lp:
        check(tok.logprob <= 0 and len(tok.top_logprobs) == 3, tok)
        tops = [x.logprob for x in tok.top_logprobs]
        check(tops == sorted(tops, reverse=True), tops)
        # greedy with no penalties: the chosen token is the most likely one
        check(abs(tok.logprob - tops[0]) < 1e-6, (tok.logprob, tops))
        check(sum(2.718281828 ** x for x in tops) <= 1.0001, tops)
        check(tok.bytes is not None and isinstance(tok.token, str), tok)
    r = c.completions.create(model=t.model_id, prompt="Hello", max_tokens=6, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    n = r.usage.completion_tokens
    check(len(lp.tokens) == n and len(lp.token_logprobs) == n and len(lp.top_logprobs) == n, lp)
    check(all(len(d) <= 2 for d in lp.top_logprobs) and lp.text_offset == sorted(lp.text_offset), lp)


def test_openai_seed(t):
    c = client(t)
    a = c.completions.create(model=t.model_id, prompt="The cat", max_tokens=16, temperature=1.0, seed=1234)
    b = c.completions.create(model=t.model_id, prompt="The cat", max_tokens=16, temperature=1.0, seed=1234)
    check(a.choices[0].text == b.choices[0].text, (a.choices[0].text, b.choices[0].text))


def test_stop_strings(t):
    # Greedy text without a stop string, then a stop string taken from its
    # middle: the answer must end right before its first occurrence.
    for prompt in ("Once upon a time", "The king said", "Hello there", "A B C"):
        status, _, r = post(t.port, "/v1/completions", completion_body(prompt, max_tokens=30, temperature=0))
        check(status == 200, r)
        full = r["choices"][0]["text"]
        if len(full) >= 12:
            break
    else:
        raise AssertionError("no prompt gave 12 characters to cut a stop string from")
    stop = full[6:9]
    want = full[: full.index(stop)]
    status, _, r = post(t.port, "/v1/completions",
                        completion_body(prompt, max_tokens=30, temperature=0, stop=[stop, "\u2603never"]))
    check(status == 200 and r["choices"][0]["text"] == want and r["choices"][0]["finish_reason"] == "stop",
          (want, r))
    status, events = stream(t.port, "/v1/completions", completion_body(prompt, max_tokens=30, temperature=0,
                                                                       stop=stop))
    text, reason, _ = stream_text(events, "completion")
    check(status == 200 and text == want and reason == "stop" and events[-1] == "[DONE]", (text, want, reason))


def test_usage_and_prefix_cache(t):
    body = chat_body("Remember this sentence about the prefix cache and answer briefly.", max_tokens=4,
                     temperature=0)
    _, before = metrics(t.port)
    s1, _, a = post(t.port, "/v1/chat/completions", body)
    s2, _, b = post(t.port, "/v1/chat/completions", body)
    check(s1 == 200 and s2 == 200, (a, b))
    n = b["usage"]["prompt_tokens"]
    # The second request finds all of its prompt but the last token cached.
    check(b["usage"]["prompt_tokens_details"]["cached_tokens"] == n - 1, b["usage"])
    check(a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"], (a, b))
    _, after = metrics(t.port)
    hits = "leanmoe_prefix_cache_hit_tokens_total"
    check(after[hits] - before[hits] >= n - 1, (before[hits], after[hits]))


def test_prefix_from_running_slot(t):
    """A prompt that a running request's slot holds is copied from that
    slot's cache, not computed: the second request reports all but its last
    prompt token cached, and its greedy answer starts the first one's."""
    prompt = "A sentence no other test sends, so only the running slot holds it: 31 zebras."
    conn = http.client.HTTPConnection("127.0.0.1", t.port, timeout=TIMEOUT)
    body = chat_body(prompt, max_tokens=300, temperature=0, ignore_eos=True, stream=True)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json", "Authorization": "Bearer " + KEY})
    r = conn.getresponse()
    try:
        check(r.status == 200, r.status)
        events = sse_events(r)
        first = [next(events), next(events)]  # the role chunk, then a token: A is decoding
        _, m = metrics(t.port)
        active = m["leanmoe_active_sequences"]
        st, _, b = post(t.port, "/v1/chat/completions", chat_body(prompt, max_tokens=4, temperature=0))
        rest = list(events)
    finally:
        conn.close()
    check(active >= 1, "the first request was not running when the second came: %r" % active)
    check(st == 200, b)
    n = b["usage"]["prompt_tokens"]
    check(b["usage"]["prompt_tokens_details"]["cached_tokens"] == n - 1, b["usage"])
    text, _, _ = stream_text(first + rest, "chat")
    want = b["choices"][0]["message"]["content"]
    check(len(want) > 0 and text.startswith(want), (want, text[:80]))


def test_metrics(t):
    text, v = metrics(t.port)
    for name in ("leanmoe_requests_total", "leanmoe_prompt_tokens_total", "leanmoe_generation_tokens_total",
                 "leanmoe_queue_depth", "leanmoe_active_sequences", "leanmoe_kv_cache_used_tokens",
                 "leanmoe_kv_cache_usage_ratio", "leanmoe_prefix_cache_hit_tokens_total",
                 "leanmoe_time_to_first_token_seconds_bucket", "leanmoe_time_per_output_token_seconds_bucket"):
        check(name in text, "metrics lack " + name)
    check(v['leanmoe_requests_total{endpoint="/v1/chat/completions",status="200"}'] >= 1, text)
    check(v["leanmoe_time_to_first_token_seconds_count"] >= 1 and v["leanmoe_generation_tokens_total"] > 0, text)
    check(v['leanmoe_time_to_first_token_seconds_bucket{le="+Inf"}'] ==
          v["leanmoe_time_to_first_token_seconds_count"], text)


def error_of(status, want, data, etype=None):
    check(status == want, "status %d, wanted %d: %r" % (status, want, data))
    e = json.loads(data)["error"] if isinstance(data, bytes) else data["error"]
    check(set(e) >= {"message", "type", "param", "code"} and e["message"], e)
    check(etype is None or e["type"] == etype, e)
    return e


def test_errors(t):
    p = t.port
    st, h, d = request(p, "GET", "/v1/models", key=None)
    error_of(st, 401, d, "authentication_error")
    st, h, d = request(p, "GET", "/v1/models", key="wrong")
    error_of(st, 401, d, "authentication_error")
    st, h, d = request(p, "GET", "/nope")
    error_of(st, 404, d)
    st, h, d = request(p, "GET", "/v1/chat/completions")
    error_of(st, 405, d)
    check(h.get("Allow") == "POST", h)
    st, h, d = request(p, "POST", "/v1/chat/completions", b"{not json")
    error_of(st, 400, d, "invalid_request_error")
    for body, param in ((chat_body("x", temperature="hot"), "temperature"),
                        (chat_body("x", max_tokens=-1), "max_tokens"),
                        (chat_body("x", n=3), "n"),
                        (chat_body("x", stop=[""]), "stop"),
                        ({"messages": "hi"}, "messages"),
                        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages"),
                        ({"messages": [{"role": "user", "content": 5}]}, "messages"),
                        (chat_body("x", top_logprobs=3), "top_logprobs"),
                        ([1, 2, 3], None)):
        st, _, d = request(p, "POST", "/v1/chat/completions", body)
        e = error_of(st, 400, d)
        check(param is None or e["param"] == param, (param, e))
    st, _, d = request(p, "POST", "/v1/completions", completion_body([1, 2, 999999]))
    error_of(st, 400, d)
    # A prompt longer than the context.
    st, _, d = request(p, "POST", "/v1/completions", completion_body("word " * 9000, max_tokens=1))
    e = error_of(st, 400, d)
    check(e["code"] == "context_length_exceeded", e)
    # Over --max-body (64 KiB here), declared in Content-Length.
    st, _, d = request(p, "POST", "/v1/completions", completion_body("x" * 100000))
    error_of(st, 413, d)


def raw(port, data, read=True, timeout=1.0):
    """Sends bytes on a raw socket; returns what came back (possibly b'')."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while read:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def test_hostile(t):
    p = t.port
    raw(p, b"\x00\xff\xfe garbage \r\n\r\n" * 10)
    raw(p, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"A" * 200000 + b"\r\n\r\n")
    raw(p, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"prompt\":", read=False)
    raw(p, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nAuthorization: Bearer "
        + KEY.encode() + b"\r\n\r\n" + (b"10000\r\n" + b"x" * 0x10000 + b"\r\n") * 2 + b"0\r\n\r\n")
    # Deep nesting and invalid UTF-8 in JSON are 400s.
    st, _, d = request(p, "POST", "/v1/completions", b"[" * 50000)
    error_of(st, 400, d)
    st, _, d = request(p, "POST", "/v1/completions", b'{"prompt": "\xff\xfe"}')
    error_of(st, 400, d)
    st, _, d = request(p, "POST", "/v1/chat/completions", chat_body("x", stop=["a"] * 100))
    error_of(st, 400, d)
    # Mutated request bodies: any status but a crash or a 5xx. The leading
    # max_tokens is never touched, so no answer runs to the full context.
    rng = random.Random(7)
    seed_bodies = [json.dumps(dict({"max_tokens": 3}, **chat_body("hello", logprobs=True, top_logprobs=2,
                                                                  stop=["a", "b"]))),
                   json.dumps(dict({"max_tokens": 3}, **completion_body("hi", logprobs=1, seed=5, temperature=0.5,
                                                                        top_k=3, min_p=0.1, presence_penalty=1,
                                                                        stream=True)))]
    keep = len('{"max_tokens": 3, ')
    for i in range(60):
        b = bytearray(seed_bodies[i % 2].encode())
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(keep, len(b))
            op = rng.randrange(3)
            if op == 0:
                b[at] = rng.randrange(256)
            elif op == 1:
                del b[at:at + rng.randint(1, 8)]
            else:
                b[at:at] = rng.choice([b"null", b"-1", b"1e309", b"[]", b"{}", b'"', b"\\u0000", b"99999999999"])
        st, _, d = request(p, "POST", "/v1/chat/completions" if i % 2 == 0 else "/v1/completions", bytes(b))
        check(st in (200, 400), "mutated body %r gave %d: %r" % (bytes(b), st, d[:200]))
    # A half-closed socket: the request is sent, then the write side shut.
    s = socket.create_connection(("127.0.0.1", p), timeout=5)
    body = json.dumps(completion_body("hi", max_tokens=2)).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n"
              % (KEY.encode(), len(body)) + body)
    s.shutdown(socket.SHUT_WR)
    try:
        s.recv(65536)
    except OSError:
        pass
    s.close()
    # Many connections opened and dropped at once.
    socks = [socket.create_connection(("127.0.0.1", p), timeout=5) for _ in range(40)]
    for s in socks:
        s.close()
    # A slow sender holds its connection; others are served meanwhile.
    slow = socket.create_connection(("127.0.0.1", p), timeout=5)
    slow.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
    t0 = time.time()
    st, _, r = post(p, "/v1/completions", completion_body("still there?", max_tokens=3, temperature=0))
    check(st == 200 and time.time() - t0 < 10, (st, r))
    slow.sendall(b"Content-Le")
    slow.close()
    st, _, d = request(p, "GET", "/health", key=None)
    check(st == 200, st)


PROMPTS = ["Once upon a time", "The old man and the sea", "Hello", "A B C D E F G", "Tell me about the king",
           "In the beginning", "Why is the sky blue?", "1 2 3 4 5", "She opened the door",
           "the " * 40 + "end", "What is love", "Rain", "Story: " + "and then " * 20, "ZZZ", "Dear diary",
           "Write a poem about the moon"]


def test_concurrent_streams(t):
    """16 streaming clients at once on 4 slots; a few hang up early. Every
    finished greedy answer must equal the same request run alone."""
    bodies = []
    for i, p in enumerate(PROMPTS):
        if i % 2:
            bodies.append(("/v1/chat/completions", "chat", chat_body(p, max_tokens=20, temperature=0)))
        else:
            bodies.append(("/v1/completions", "completion", completion_body(p, max_tokens=20, temperature=0)))
    alone = []
    for path, kind, body in bodies:
        st, _, r = post(t.port, path, body)
        check(st == 200, r)
        c = r["choices"][0]
        alone.append(c["message"]["content"] if kind == "chat" else c["text"])
    results = [None] * len(bodies)
    quitters = {3, 7, 11, 14}
    _, before = metrics(t.port)

    def run(i):
        path, kind, body = bodies[i]
        try:
            st, events = stream(t.port, path, body, stop_after=2 if i in quitters else None)
            results[i] = (st, events)
        except Exception as e:  # reported below
            results[i] = ("exception", repr(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(bodies))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(TIMEOUT * 2)
    for i, (path, kind, body) in enumerate(bodies):
        st, events = results[i]
        check(st == 200, "client %d: %r" % (i, results[i]))
        if i in quitters:
            continue
        text, reason, _ = stream_text(events, kind)
        check(events[-1] == "[DONE]" and reason in ("stop", "length"), (i, events[-2:]))
        check(text == alone[i], "client %d: batched %r != alone %r" % (i, text, alone[i]))
    # Disconnected clients freed their slots.
    deadline = time.time() + 10
    while time.time() < deadline:
        _, v = metrics(t.port)
        if v["leanmoe_active_sequences"] == 0 and v["leanmoe_queue_depth"] == 0:
            break
        time.sleep(0.1)
    check(v["leanmoe_active_sequences"] == 0 and v["leanmoe_queue_depth"] == 0, v)
    # Sequences shared steps: fewer steps than tokens evaluated.
    steps = v["leanmoe_steps_total"] - before["leanmoe_steps_total"]
    tokens = v["leanmoe_generation_tokens_total"] - before["leanmoe_generation_tokens_total"]
    check(steps < tokens, "%d steps for %d tokens: nothing was batched" % (steps, tokens))


# ---- Tests that need their own server --------------------------------------------


def test_queue_full(t):
    """One slot, a queue of one, slow steps: a third request gets 429."""
    srv = Server(t.binary, t.model, ["--parallel", "1", "--max-queue", "1", "--api-key", KEY],
                 env={"LEANMOE_SERVE_STEP_DELAY_MS": "20"})
    try:
        long_body = completion_body("hi", max_tokens=200, temperature=0, ignore_eos=True, stream=True)
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT)
        conn.request("POST", "/v1/completions", body=json.dumps(long_body),
                     headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
        r = conn.getresponse()
        check(r.status == 200, r.status)
        next(sse_events(r))  # running in the slot now
        queued = []
        th = threading.Thread(target=lambda: queued.append(
            post(srv.port, "/v1/completions", completion_body("queued", max_tokens=2))))
        th.start()
        deadline = time.time() + 10
        while time.time() < deadline and metrics(srv.port)[1]["leanmoe_queue_depth"] < 1:
            time.sleep(0.02)
        st, h, d = request(srv.port, "POST", "/v1/completions", completion_body("third", max_tokens=2))
        e = error_of(st, 429, d)
        check(h.get("Retry-After") is not None and e["code"] == "queue_full", (h, e))
        # Hanging up frees the slot at once for the queued request; had the
        # stream gone on, that would take its 200 steps of 20 ms.
        t0 = time.time()
        conn.close()
        th.join(TIMEOUT)
        check(queued and queued[0][0] == 200, queued)
        check(time.time() - t0 < 2.0, "the queued request waited %.1f s" % (time.time() - t0))
        # The same for a non-streaming request whose client leaves.
        body = json.dumps(completion_body("hi", max_tokens=200, ignore_eos=True)).encode()
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                  b"Content-Length: %d\r\n\r\n" % (KEY.encode(), len(body)) + body)
        deadline = time.time() + 5
        while time.time() < deadline and metrics(srv.port)[1]["leanmoe_active_sequences"] < 1:
            time.sleep(0.01)
        s.close()
        t0 = time.time()
        while time.time() - t0 < 2.0 and metrics(srv.port)[1]["leanmoe_active_sequences"] > 0:
            time.sleep(0.02)
        check(metrics(srv.port)[1]["leanmoe_active_sequences"] == 0, "the slot stayed busy after a hang-up")
        check(srv.stop() == 0, "exit status")
    finally:
        srv.close()


def kv_page_mb(t, pages):
    """--kv-pool-mb for a pool of exactly `pages` 16-token F16 pages."""
    r = subprocess.run([t.binary, "info", "-m", t.model, "--json"], capture_output=True, timeout=60, text=True)
    return (pages + 0.5) * 16 * json.loads(r.stdout)["kv_bytes_per_token"] / 1048576.0


def test_kv_pool(t):
    """A pool of 7 pages of 16 tokens shared by 4 slots: one sequence may
    use far more than a quarter of it; under 8 concurrent clients, requests
    wait for pages instead of failing, and every greedy answer equals the
    same request run alone; finished work gives its pages back. A pool too
    small for any sequence, or a port in use, is a one-line error and exit
    status 1."""
    srv = Server(t.binary, t.model, ["--parallel", "4", "--kv-pool-mb", "%.6f" % kv_page_mb(t, 7),
                                     "--api-key", KEY], env={"LEANMOE_SERVE_STEP_DELAY_MS": "5"})
    try:
        _, v = metrics(srv.port)
        check(v["leanmoe_kv_pool_pages"] == 7 and v["leanmoe_kv_pool_page_tokens"] == 16, v)
        check(v["leanmoe_kv_cache_capacity_tokens"] == 112, v)
        check("4 slots, up to 112 tokens each, sharing a KV pool of 7 pages" in srv.stderr(), srv.stderr())
        st, _, d = request(srv.port, "POST", "/v1/completions", completion_body("word " * 120))
        check(error_of(st, 400, d)["code"] == "context_length_exceeded", d)
        # One sequence takes the whole pool: far beyond a 1/4 share.
        st, _, d = post(srv.port, "/v1/completions", completion_body("hi", max_tokens=1000, ignore_eos=True))
        check(st == 200 and d["choices"][0]["finish_reason"] == "length" and
              100 <= d["usage"]["total_tokens"] <= 113, d)
        # Each request may fill 2-3 pages: at most 2-3 run at once, the
        # rest wait for pages; answers equal the solo ones.
        bodies = [completion_body(p, max_tokens=24, temperature=0) for p in PROMPTS[:8]]
        alone = []
        for b in bodies:
            st, _, r = post(srv.port, "/v1/completions", b)
            check(st == 200, r)
            alone.append(r["choices"][0]["text"])
        results = [None] * len(bodies)

        def run(i):
            try:
                results[i] = post(srv.port, "/v1/completions", bodies[i])
            except Exception as e:  # reported below
                results[i] = ("exception", repr(e), None)

        peak = [0, 0, 0]  # pages used, active sequences, queue depth

        def watch():
            while any(r is None for r in results):
                _, mv = metrics(srv.port)
                for k, name in enumerate(("leanmoe_kv_pool_pages_used", "leanmoe_active_sequences",
                                          "leanmoe_queue_depth")):
                    peak[k] = max(peak[k], mv[name])
                time.sleep(0.005)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(bodies))]
        for th in threads:
            th.start()
        w = threading.Thread(target=watch)
        w.start()
        for th in threads:
            th.join(TIMEOUT * 2)
        w.join(TIMEOUT)
        for i, r in enumerate(results):
            check(r[0] == 200, "client %d: %r" % (i, r))
            check(r[2]["choices"][0]["text"] == alone[i], "client %d: %r != alone %r" % (i, r[2], alone[i]))
        # 4 free slots, but pages for at most 3 of these requests at once.
        check(1 <= peak[0] <= 7 and 2 <= peak[1] <= 3 and peak[2] >= 1, peak)
        _, v = metrics(srv.port)
        check(v["leanmoe_active_sequences"] == 0 and v["leanmoe_kv_pool_pages_used"] <= 7, v)
        check(v["leanmoe_kv_cache_usage_ratio"] == v["leanmoe_kv_pool_pages_used"] / 7, v)
        for extra in (["--kv-pool-mb", "0.0001"], ["--port", str(srv.port)]):
            r = subprocess.run([t.binary, "serve", "-m", t.model, "--host", "127.0.0.1"] +
                               (["--port", "0"] if "--port" not in extra else []) + extra,
                               capture_output=True, timeout=60, text=True)
            err = r.stderr.strip().splitlines()
            check(r.returncode == 1 and err and err[-1].startswith("leanmoe: "), (extra, r.returncode, r.stderr))
        check(srv.stop() == 0, "exit status")
    finally:
        srv.close()


def test_sigterm_grace(t):
    """SIGTERM: the running stream finishes normally, the process exits 0;
    a stream too long for the grace period is cut, and it still exits 0."""
    srv = Server(t.binary, t.model, ["--api-key", KEY, "--grace-seconds", "5"],
                 env={"LEANMOE_SERVE_STEP_DELAY_MS": "10"})
    try:
        out = []
        th = threading.Thread(target=lambda: out.append(stream(
            srv.port, "/v1/completions", completion_body("hi", max_tokens=40, temperature=0, ignore_eos=True))))
        th.start()
        deadline = time.time() + 10
        while time.time() < deadline and metrics(srv.port)[1]["leanmoe_active_sequences"] < 1:
            time.sleep(0.01)
        srv.proc.send_signal(signal.SIGTERM)
        th.join(TIMEOUT)
        check(srv.proc.wait(TIMEOUT) == 0, "exit status %r" % srv.proc.returncode)
        st, events = out[0]
        text, reason, _ = stream_text(events, "completion")
        check(st == 200 and reason == "length" and events[-1] == "[DONE]", events[-3:])
    finally:
        srv.close()
    srv = Server(t.binary, t.model, ["--api-key", KEY, "--grace-seconds", "1"],
                 env={"LEANMOE_SERVE_STEP_DELAY_MS": "20"})
    try:
        out = []
        th = threading.Thread(target=lambda: out.append(stream(
            srv.port, "/v1/completions", completion_body("hi", max_tokens=250, temperature=0, ignore_eos=True))))
        th.start()
        deadline = time.time() + 10
        while time.time() < deadline and metrics(srv.port)[1]["leanmoe_active_sequences"] < 1:
            time.sleep(0.01)
        t0 = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        check(srv.proc.wait(TIMEOUT) == 0, "exit status %r" % srv.proc.returncode)
        check(time.time() - t0 < 6, "took %.1f s to stop" % (time.time() - t0))
        th.join(TIMEOUT)
        st, events = out[0]
        check(st == 200 and any(isinstance(e, dict) and "error" in e for e in events), events[-2:])
    finally:
        srv.close()


def test_sigterm_main(t):
    check(t.server.stop() == 0, "exit status %r" % t.server.proc.returncode)


# ---- Runner -----------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--leanmoe", default=os.path.join(ROOT, "build", "leanmoe"))
    ap.add_argument("--model", default=None)
    ap.add_argument("-k", default="", help="run only tests whose name contains this")
    args = ap.parse_args()
    model = args.model or os.path.join(ROOT, "tests", "golden", "models", "ds3-q8_0.gguf")

    class T:
        pass

    t = T()
    t.binary, t.model = os.path.abspath(args.leanmoe), model
    t.model_id = os.path.basename(model)[:-5] if model.endswith(".gguf") else os.path.basename(model)
    passed = failed = skipped = 0
    try:
        t.server = Server(t.binary, model, ["--api-key", KEY, "--parallel", "4", "--max-body", "65536"])
    except Exception as e:
        print("FAIL start: %s" % e)
        print("0 passed, 1 failed")
        return 1
    t.port = t.server.port
    tests = [test_health, test_models, test_openai_chat, test_openai_completions, test_openai_logprobs,
             test_openai_seed, test_stop_strings, test_usage_and_prefix_cache, test_prefix_from_running_slot,
             test_errors, test_hostile,
             test_concurrent_streams, test_metrics, test_queue_full, test_kv_pool, test_sigterm_grace, test_sigterm_main]
    for fn in tests:
        if args.k not in fn.__name__:
            continue
        if fn.__name__.startswith("test_openai") and openai is None:
            print("skip %s: the openai package is not installed" % fn.__name__)
            skipped += 1
            continue
        t0 = time.time()
        try:
            fn(t)
            passed += 1
            print("ok   %s (%.2f s)" % (fn.__name__, time.time() - t0))
        except Exception:
            failed += 1
            print("FAIL %s\n%s" % (fn.__name__, traceback.format_exc()))
        sys.stdout.flush()
    code = t.server.stop()
    report = t.server.sanitizer_report()
    if code != 0 or report:
        failed += 1
        print("FAIL server: exit %r\n%s" % (code, report or t.server.stderr()[-4000:]))
    os.unlink(t.server.log.name)
    line = "%d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
