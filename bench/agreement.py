#!/usr/bin/env python3
"""Agreement of leanmoe with llama.cpp on the same GGUF files: top-1 agreement
and mean KL divergence per position, each engine with its default settings
(F16 KV cache, its own matrix kernels).

For every model listed in tests/golden/models/MANIFEST.txt, a 64-token
sequence (the golden prompt, then seeded random ids) runs through
`build/leanmoe logits` and through llama.cpp's library via the ctypes
bindings of the llama-cpp-python source package; KL(llama.cpp || leanmoe)
is computed from the softmax of each row.

    python3 bench/agreement.py --llama-lib /path/to/llama.cpp/build/bin \
        --bindings /path/to/llama_cpp_python-0.3.36 [--threads 2] [--markdown]

Needs numpy and the bindings' own Python dependencies (diskcache, jinja2).
"""
import argparse
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "models")


def manifest():
    with open(os.path.join(GOLDEN, "MANIFEST.txt")) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                parts = line.split(None, 4)
                yield parts[0], parts[1], parts[4].strip() if len(parts) > 4 else ""


def ref_ids(ref):
    with open(os.path.join(GOLDEN, ref), "rb") as f:
        b = f.read(16)
        n_ids, n_vocab, _ = struct.unpack_from("<III", b, 4)
        ids = list(struct.unpack(f"<{n_ids}i", f.read(4 * n_ids)))
    return ids, n_vocab


def leanmoe_logits(model, ids, n_vocab, threads):
    with tempfile.NamedTemporaryFile(suffix=".f32") as out:
        subprocess.run([os.path.join(ROOT, "build", "leanmoe"), "logits", "-m", model, "-t", str(threads),
                        "--ids", ",".join(map(str, ids)), "-o", out.name], check=True)
        return np.fromfile(out.name, dtype="<f4").reshape(len(ids), n_vocab)


def llamacpp_logits(llama_cpp, model, ids, threads):
    llm = llama_cpp.Llama(model_path=model, n_ctx=len(ids) + 8, n_batch=512, logits_all=True,
                          n_threads=threads, n_threads_batch=threads, verbose=False, seed=0)
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-lib", required=True, help="folder with libllama.so")
    ap.add_argument("--bindings", required=True, help="llama-cpp-python source folder (holds llama_cpp/)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    os.environ["LLAMA_CPP_LIB_PATH"] = a.llama_lib
    sys.path.insert(0, a.bindings)
    import llama_cpp  # noqa: E402

    rng = np.random.default_rng(0)
    rows = []
    for gguf, ref, desc in manifest():
        model = os.path.normpath(os.path.join(GOLDEN, gguf))
        ids, n_vocab = ref_ids(ref)
        ids = ids + rng.integers(1, n_vocab, a.tokens - len(ids)).tolist()
        try:
            ours = leanmoe_logits(model, ids, n_vocab, a.threads)
            theirs = llamacpp_logits(llama_cpp, model, ids, a.threads)
        except Exception as e:  # a file llama.cpp cannot load is reported, not fatal
            rows.append((gguf, None, None, None, str(e).splitlines()[0][:60]))
            continue
        lp, lq = log_softmax(theirs), log_softmax(ours)
        kl = (np.exp(lp) * (lp - lq)).sum(axis=1)
        top1 = (theirs.argmax(1) == ours.argmax(1)).mean()
        rows.append((gguf, top1, kl.mean(), kl.max(), ""))
    if a.markdown:
        print("| file | top-1 agreement | mean KL | max KL |")
        print("|---|---|---|---|")
    for gguf, top1, klm, klx, note in rows:
        if top1 is None:
            print(f"| {gguf} | - | - | - ({note}) |" if a.markdown else f"{gguf:24s} not loaded by llama.cpp: {note}")
        elif a.markdown:
            print(f"| {gguf} | {100 * top1:.1f}% | {klm:.2e} | {klx:.2e} |")
        else:
            print(f"{gguf:24s} top-1 {100 * top1:5.1f}%  mean KL {klm:.2e}  max KL {klx:.2e}")


if __name__ == "__main__":
    main()
