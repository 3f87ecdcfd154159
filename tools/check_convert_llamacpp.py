#!/usr/bin/env python3
"""Check that llama.cpp reads the vocabulary `leanmoe convert` writes.

For each tokenizer in ../shared/data/tokenizers that has expected ids
(DeepSeek-V3; Qwen3, whose base vocabulary is Qwen2's, so llama.cpp's own
ggml-vocab-qwen2.gguf.out applies), this script:

1. stages a tiny Hugging Face checkpoint folder: the tokenizer.json and
   tokenizer_config.json as they are, a config.json for a one-layer
   Qwen3ForCausalLM (hidden size 16) whose vocab_size covers the tokenizer,
   and a model.safetensors of random F16 weights (seeded, so the folder is
   the same on every run). The architecture carries no vocabulary of its
   own: llama.cpp's converter writes the vocabulary of either tokenizer the
   same way (_set_vocab_gpt2) whatever the model;
2. converts it with `build/leanmoe convert DIR OUT.gguf`;
3. starts llama-server on the file and sends every test string to POST
   /tokenize (add_special false, as the expected ids were made), comparing
   the ids exactly, and checks that /detokenize gives the string back;
4. runs llama-cli for one single-turn chat (the file's chat template, greedy,
   8 tokens) and checks that it loads the file and generates.

It prints one line per tokenizer and exits nonzero on any mismatch.
Needs only the Python standard library and llama.cpp's tools. Run from the
repository root after `make`:
    python3 tools/check_convert_llamacpp.py [--llama-bin DIR] [--shared DIR] [--keep DIR]
"""

import argparse
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
DEFAULT_BIN = "/work/ext/llama.cpp-build/bin"
SEPARATOR = "\n__ggml_vocab_test__\n"

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN = 16, 2, 1, 8, 32

# name, tokenizer folder, .inp, .out (relative to shared), config vocab_size
CASES = [
    ("deepseek-v3", "tokenizers/deepseek-v3", "tokenizers/deepseek-v3/deepseek-v3.inp",
     "tokenizers/deepseek-v3/deepseek-v3.out", 129280),
    ("qwen3", "tokenizers/qwen3", "tokenizers/llama.cpp/ggml-vocab-qwen2.gguf.inp",
     "tokenizers/llama.cpp/ggml-vocab-qwen2.gguf.out", 151936),
]


def f16_bytes(values):
    return struct.pack("<%de" % len(values), *values)


def write_safetensors(path, tensors):
    """tensors: list of (name, shape, F16 bytes), written in that order."""
    header, offset = {}, 0
    for name, shape, data in tensors:
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for _, _, data in tensors:
            fh.write(data)


def stage_folder(dst, tokenizer_dir, vocab_size):
    rng = random.Random(7)

    def mat(rows, cols, std=0.05):
        return f16_bytes([rng.gauss(0.0, std) for _ in range(rows * cols)])

    def ones(n):
        return f16_bytes([1.0] * n)

    L = "model.layers.0."
    tensors = [
        ("model.embed_tokens.weight", [vocab_size, HIDDEN], mat(vocab_size, HIDDEN)),
        (L + "input_layernorm.weight", [HIDDEN], ones(HIDDEN)),
        (L + "self_attn.q_proj.weight", [HEADS * HEAD_DIM, HIDDEN], mat(HEADS * HEAD_DIM, HIDDEN)),
        (L + "self_attn.k_proj.weight", [KV_HEADS * HEAD_DIM, HIDDEN], mat(KV_HEADS * HEAD_DIM, HIDDEN)),
        (L + "self_attn.v_proj.weight", [KV_HEADS * HEAD_DIM, HIDDEN], mat(KV_HEADS * HEAD_DIM, HIDDEN)),
        (L + "self_attn.o_proj.weight", [HIDDEN, HEADS * HEAD_DIM], mat(HIDDEN, HEADS * HEAD_DIM)),
        (L + "self_attn.q_norm.weight", [HEAD_DIM], ones(HEAD_DIM)),
        (L + "self_attn.k_norm.weight", [HEAD_DIM], ones(HEAD_DIM)),
        (L + "post_attention_layernorm.weight", [HIDDEN], ones(HIDDEN)),
        (L + "mlp.gate_proj.weight", [FFN, HIDDEN], mat(FFN, HIDDEN)),
        (L + "mlp.up_proj.weight", [FFN, HIDDEN], mat(FFN, HIDDEN)),
        (L + "mlp.down_proj.weight", [HIDDEN, FFN], mat(HIDDEN, FFN)),
        ("model.norm.weight", [HIDDEN], ones(HIDDEN)),
    ]
    os.makedirs(dst, exist_ok=True)
    write_safetensors(os.path.join(dst, "model.safetensors"), tensors)
    config = {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": HIDDEN,
        "intermediate_size": FFN, "num_hidden_layers": 1, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": True,
        "torch_dtype": "float16", "vocab_size": vocab_size, "hidden_act": "silu",
    }
    with open(os.path.join(dst, "config.json"), "w") as fh:
        json.dump(config, fh, indent=1)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tokenizer_dir, f), dst)


def read_cases(inp, out):
    with open(inp, encoding="utf-8", newline="") as fh:
        texts = fh.read().split(SEPARATOR)
    if texts and texts[-1] == "":
        texts.pop()
    with open(out, encoding="utf-8") as fh:
        ids = [[int(x) for x in line.split()] for line in fh.read().split("\n")]
    return texts, ids[: len(texts)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def check_server(bin_dir, gguf, texts, expected):
    port = free_port()
    log = open(gguf + ".server.log", "w")
    srv = subprocess.Popen([os.path.join(bin_dir, "llama-server"), "-m", gguf, "--port", str(port),
                            "-c", "512", "-t", "2", "--host", "127.0.0.1"], stdout=log, stderr=log)
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if srv.poll() is not None:
                raise RuntimeError(f"llama-server exited {srv.returncode}; see {gguf}.server.log")
            time.sleep(0.2)
        same = roundtrip = 0
        for i, (text, want) in enumerate(zip(texts, expected)):
            got = post(port, "/tokenize", {"content": text, "add_special": False})["tokens"]
            if got == want:
                same += 1
            else:
                print(f"  case {i} {text!r}: llama.cpp {got} expected {want}")
            back = post(port, "/detokenize", {"tokens": got})["content"]
            roundtrip += back == text
        return same, roundtrip
    finally:
        srv.terminate()
        srv.wait()
        log.close()


def check_cli(bin_dir, gguf):
    cmd = [os.path.join(bin_dir, "llama-cli"), "-m", gguf, "-p", "Hello", "-n", "8", "-st",
           "--temp", "0", "-t", "2", "-c", "256"]
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    return r.returncode == 0, r.stdout + r.stderr


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-bin", default=DEFAULT_BIN)
    ap.add_argument("--shared", default=DEFAULT_SHARED)
    ap.add_argument("--leanmoe", default=os.path.join(ROOT, "build", "leanmoe"))
    ap.add_argument("--keep", help="stage folders and GGUFs here and keep them")
    args = ap.parse_args()
    top = args.keep or tempfile.mkdtemp(prefix="lmoe_convert_check_")
    failed = 0
    for name, tok, inp, out, vocab_size in CASES:
        folder = os.path.join(top, name)
        gguf = os.path.join(top, name + ".gguf")
        stage_folder(folder, os.path.join(args.shared, tok), vocab_size)
        subprocess.run([args.leanmoe, "convert", folder, gguf], check=True)
        texts, expected = read_cases(os.path.join(args.shared, inp), os.path.join(args.shared, out))
        same, roundtrip = check_server(args.llama_bin, gguf, texts, expected)
        ok_cli, cli_out = check_cli(args.llama_bin, gguf)
        print(f"{name}: llama-server /tokenize {same}/{len(texts)} cases exact, /detokenize "
              f"{roundtrip}/{len(texts)} round trips, llama-cli generation {'ok' if ok_cli else 'FAILED'}")
        if not ok_cli:
            print(cli_out[-2000:])
        failed += (same != len(texts)) + (not ok_cli)
    if not args.keep:
        shutil.rmtree(top)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
