#!/usr/bin/env python3
"""Check `leanmoe convert` output with llama.cpp itself: tokenization and generation.

For each case below, a tiny checkpoint folder is assembled from one of the
committed test checkpoints (tests/golden/hf/<base>: config.json + sharded
safetensors) and a real tokenizer (tokenizer.json, tokenizer_config.json):
the token embedding (and lm_head, when the base has one) is replaced by
random F16 rows of the tokenizer's vocabulary size and config.json's
vocab_size is set to match; every other tensor is kept as it is. Then:

  1. `leanmoe convert DIR OUT.gguf --type T` (default q8_0);
  2. llama-server loads OUT.gguf, and POST /tokenize (add_special false,
     parse_special true) must give exactly the expected ids for every test
     string of the case (the .inp/.out pairs below);
  3. llama-server's POST /completion generates 8 tokens, and llama-cli
     (-st, one turn) loads the file and generates; both must succeed.

Cases (expected ids made by HF tokenizers or llama.cpp, see their READMEs):
  deepseek-v3  tests/golden/hf/ds3-f32 (DeepseekV3ForCausalLM, MLA) with
               ../shared/data/tokenizers/deepseek-v3 (vocab 129280 as the
               published config; ids past the tokenizer become [PAD<i>]);
               ids: deepseek-v3.inp/.out beside the tokenizer
  qwen3        tests/golden/hf/qwen3moe-f32 (Qwen3MoeForCausalLM) with
               ../shared/data/tokenizers/qwen3 (vocab 151936); ids:
               llama.cpp's ggml-vocab-qwen2.gguf.inp with
               tests/golden/tokenizer/qwen3.out
  llama-spm    tests/golden/hf/llama-f32 (LlamaForCausalLM) with the
               SentencePiece-style tests/golden/tokenizer/spm-legacy
               tokenizer.json (byte fallback, 543 tokens); ids: its cases.*

Nothing here is needed by `make test`; it needs only Python 3, numpy and a
llama.cpp build (llama-server, llama-cli). Run from the repository root:

    python3 tools/check_convert_llamacpp.py [--llama-bin DIR] [--type q4_k_m]

It prints one line per case and exits non-zero if any id or run differs.
"""

import argparse
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
GOLDEN = os.path.join(ROOT, "tests", "golden")
SEPARATOR = "\n__ggml_vocab_test__\n"

CASES = [
    # name, base checkpoint, tokenizer folder, vocab size, .inp, .out
    ("deepseek-v3", "ds3-f32", os.path.join(SHARED, "tokenizers", "deepseek-v3"), 129280,
     os.path.join(SHARED, "tokenizers", "deepseek-v3", "deepseek-v3.inp"),
     os.path.join(SHARED, "tokenizers", "deepseek-v3", "deepseek-v3.out")),
    ("qwen3", "qwen3moe-f32", os.path.join(SHARED, "tokenizers", "qwen3"), 151936,
     os.path.join(SHARED, "tokenizers", "llama.cpp", "ggml-vocab-qwen2.gguf.inp"),
     os.path.join(GOLDEN, "tokenizer", "qwen3.out")),
    ("llama-spm", "llama-f32", os.path.join(GOLDEN, "tokenizer", "spm-legacy"), 543,
     os.path.join(GOLDEN, "tokenizer", "spm-legacy", "cases.inp"),
     os.path.join(GOLDEN, "tokenizer", "spm-legacy", "cases.out")),
]

ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64, "I32": np.int32,
             "F8_E4M3": np.uint8, "U8": np.uint8}


def read_safetensors(path):
    """{name: (dtype string, shape, raw bytes)} in file order."""
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
        data = fh.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = (info["dtype"], info["shape"], data[a:b])
    return out


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(h)))
        fh.write(h)
        for b in blobs:
            fh.write(b)


def make_folder(dst, base, tok_dir, vocab, seed):
    """The base checkpoint with its embedding rows resized to `vocab`."""
    src = os.path.join(GOLDEN, "hf", base)
    os.makedirs(dst)
    rng = np.random.default_rng(seed)
    with open(os.path.join(src, "config.json")) as fh:
        config = json.load(fh)
    config["vocab_size"] = vocab
    with open(os.path.join(dst, "config.json"), "w") as fh:
        json.dump(config, fh, indent=1)
    for f in sorted(os.listdir(src)):
        if f.endswith(".safetensors"):
            t = read_safetensors(os.path.join(src, f))
            for name in ("model.embed_tokens.weight", "lm_head.weight"):
                if name in t:
                    hidden = t[name][1][1]
                    rows = (rng.standard_normal((vocab, hidden)) * 0.05).astype(np.float16)
                    t[name] = ("F16", [vocab, hidden], rows.tobytes())
            write_safetensors(os.path.join(dst, f), t)
        elif f == "model.safetensors.index.json":
            shutil.copy(os.path.join(src, f), dst)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(tok_dir, f)):
            shutil.copy(os.path.join(tok_dir, f), dst)


def read_cases(inp, out):
    with open(inp, encoding="utf-8", newline="") as fh:
        cases = fh.read().split(SEPARATOR)
    if cases and cases[-1] == "":
        cases.pop()
    with open(out, encoding="utf-8") as fh:
        want = [[int(x) for x in line.split()] for line in fh.read().split("\n")]
    return cases, want[: len(cases)]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def with_server(bin_dir, gguf, fn):
    port = free_port()
    log = open(gguf + ".server.log", "w")
    p = subprocess.Popen([os.path.join(bin_dir, "llama-server"), "-m", gguf, "--host", "127.0.0.1", "--port",
                          str(port), "-c", "256", "-t", "2", "-np", "1"], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            if p.poll() is not None:
                raise RuntimeError(f"llama-server exited {p.returncode}; see {gguf}.server.log")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except Exception:
                time.sleep(0.2)
        else:
            raise RuntimeError("llama-server did not become healthy")
        return fn(port)
    finally:
        p.terminate()
        p.wait(timeout=30)
        log.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--leanmoe", default=os.path.join(ROOT, "build", "leanmoe"))
    ap.add_argument("--llama-bin", default="/work/ext/llama.cpp-build/bin", help="llama.cpp's bin folder")
    ap.add_argument("--type", default="q8_0", help="leanmoe convert --type")
    ap.add_argument("--keep", help="keep the folders and files here instead of a temporary directory")
    args = ap.parse_args()
    top = args.keep or tempfile.mkdtemp(prefix="lmoe_convert_check_")
    failed = 0
    try:
        for i, (name, base, tok_dir, vocab, inp, out) in enumerate(CASES):
            folder = os.path.join(top, name)
            if os.path.exists(folder):
                shutil.rmtree(folder)
            make_folder(folder, base, tok_dir, vocab, seed=1000 + i)
            gguf = os.path.join(top, f"{name}-{args.type}.gguf")
            r = subprocess.run([args.leanmoe, "convert", folder, gguf, "--type", args.type], capture_output=True,
                               text=True)
            if r.returncode:
                print(f"{name}: convert failed: {r.stderr.strip()}")
                failed += 1
                continue
            cases, want = read_cases(inp, out)

            def check(port):
                good, bad = 0, []
                for k, (text, ids) in enumerate(zip(cases, want)):
                    got = post(port, "/tokenize", {"content": text, "add_special": False,
                                                   "parse_special": True})["tokens"]
                    if got == ids:
                        good += 1
                    else:
                        bad.append(k)
                gen = post(port, "/completion", {"prompt": "Hello", "n_predict": 8, "temperature": 0})
                return good, bad, gen.get("tokens_predicted", 0)

            good, bad, n_gen = with_server(args.llama_bin, gguf, check)
            cli = subprocess.run([os.path.join(args.llama_bin, "llama-cli"), "-m", gguf, "-p", "Hello", "-n", "8",
                                  "--temp", "0", "-t", "2", "-c", "256", "-st"], stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=300)
            cli_ok = cli.returncode == 0 and "Generation:" in cli.stdout + cli.stderr
            ok = not bad and n_gen == 8 and cli_ok
            failed += not ok
            print(f"{name}: llama.cpp tokenizes {good}/{len(cases)} test strings to the expected ids"
                  f"{' (differ: cases ' + str(bad) + ')' if bad else ''}; llama-server generated {n_gen}/8"
                  f" tokens; llama-cli {'generated' if cli_ok else 'FAILED (exit %d)' % cli.returncode}"
                  f" [{args.type}, {os.path.getsize(gguf)} bytes]")
    finally:
        if not args.keep:
            shutil.rmtree(top, ignore_errors=True)
    print("all cases pass" if not failed else f"{failed} case(s) FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
