#!/usr/bin/env python3
"""Write tests/golden/quantize/: what `leanmoe quantize` must produce.

quantize.bin: bytes and error sizes of the row quantizers (below).
types.txt: the tensor types llama-quantize chooses for two golden models
(tests/golden/models/{ds3,llama}-f32.gguf) under each file type in
TYPE_FTYPES, one line "model ftype tensor type" per tensor, read from the
files /work/ext/llama.cpp-build/bin/llama-quantize writes, and one line
"model ftype =file SIZE FNV1A64" with the size and FNV-1a 64-bit hash of
the whole file. The test runs `leanmoe quantize` on the same models and
requires the same types; these small models only get legacy and float
types (their 64-wide rows make K types fall back), so it also requires the
very same file, byte for byte.

tests/test_quantize.c quantizes the same floats with src/quant/quantize.c and
checks two things against this file:

1. Legacy types (q4_0, q4_1, q5_0, q5_1, q8_0): the bytes must be identical to
   gguf-py's ``gguf.quants.quantize`` (numpy, written to match ggml's
   reference quantizers). Input: the Gaussian rows below plus edge blocks.
2. Every type: the RMSE of quantize -> dequantize on the Gaussian rows must be
   within a per-type factor of ggml's own quantizer's RMSE on the same rows.
   ggml's bytes come from ``ggml_quantize_chunk`` in the libggml-base.so that
   llama-quantize uses (loaded with ctypes; without an imatrix it runs ggml's
   reference quantizers, exactly what llama-quantize writes), dequantized
   with gguf-py. If the library is missing the RMSE is written as NaN and the
   test only checks its absolute bounds.

Which gguf-py: the copy vendored with llama.cpp
(ext/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py) first, else the pip
package. The script prints both versions it used.

Inputs (seed SEED, numpy default_rng):
  gauss: N_ROWS rows of 256 float32 from N(0, 1) scaled per row by a factor
         in [0.01, 2] (weights of trained layers span such ranges).
  edge:  blocks of 32 exercising the rounding rules: all zero; constant;
         one nonzero; equal-magnitude opposite extremes (the first one
         wins); values at exact half steps; tiny (f16-subnormal) values;
         large (1e4) values; all negative; all positive.

File layout (little-endian):
  magic b"LMQZ"
  u32 n_gauss, f32[n_gauss]
  u32 n_edge,  f32[n_edge]
  u32 n_types, then per type:
    u32 ggml type id
    f32 ggml RMSE on gauss (NaN when not measured)
    u32 n_bytes, bytes: gguf-py's quantization of gauss ++ edge
                       (n_bytes = 0 for types gguf-py cannot quantize)

Run from the repository root:
    /work/venv/bin/python tools/make_quantize_goldens.py
"""

import ctypes
import os
import struct
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENDORED = os.path.join(os.path.dirname(ROOT), "ext", "llama_cpp_python-0.3.36", "vendor", "llama.cpp", "gguf-py")
if os.path.isdir(VENDORED):
    sys.path.insert(0, VENDORED)
import gguf  # noqa: E402
from gguf import GGMLQuantizationType as T  # noqa: E402

GGML_LIB = os.path.join(os.path.dirname(ROOT), "ext", "llama.cpp-build", "bin", "libggml-base.so")
OUT = os.path.join(ROOT, "tests", "golden", "quantize", "quantize.bin")
TYPES_OUT = os.path.join(ROOT, "tests", "golden", "quantize", "types.txt")
LLAMA_QUANTIZE = os.path.join(os.path.dirname(ROOT), "ext", "llama.cpp-build", "bin", "llama-quantize")
TYPE_MODELS = ["ds3-f32", "llama-f32"]
TYPE_FTYPES = ["Q4_0", "Q8_0", "Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K"]
SEED = 20250117
N_ROWS = 24

LEGACY = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
KQUANT = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]


def make_inputs():
    rng = np.random.default_rng(SEED)
    scales = np.exp(rng.uniform(np.log(0.01), np.log(2.0), size=(N_ROWS, 1)))
    gauss = (rng.standard_normal((N_ROWS, 256)) * scales).astype(np.float32).reshape(-1)
    edge = []
    edge.append(np.zeros(32))
    edge.append(np.full(32, 0.375))
    b = np.zeros(32); b[7] = -1.5; edge.append(b)
    b = rng.standard_normal(32) * 0.1; b[3] = 1.0; b[20] = -1.0; edge.append(b)
    b = rng.standard_normal(32) * 0.1; b[5] = -2.0; b[9] = 2.0; edge.append(b)
    edge.append(np.arange(32) * 0.0625 - 1.0)  # exact half steps for q4 grids
    edge.append(np.arange(32) * 0.125 - 2.0)
    edge.append(rng.standard_normal(32) * 1e-6)
    edge.append(rng.standard_normal(32) * 1e4)
    edge.append(-np.abs(rng.standard_normal(32)))
    edge.append(np.abs(rng.standard_normal(32)) + 0.5)
    edge = np.concatenate(edge).astype(np.float32)
    return gauss, edge


def ggml_rmse(lib, qtype, x):
    """RMSE of ggml's quantizer on x (rows of 256), or NaN without the library."""
    if lib is None:
        return float("nan")
    n_per_row = 256
    nrows = x.size // n_per_row
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    dst = np.zeros(nrows * n_per_row // block * size, dtype=np.uint8)
    src = np.ascontiguousarray(x, dtype=np.float32)
    lib.ggml_quantize_chunk(int(qtype), src.ctypes.data_as(ctypes.c_void_p), dst.ctypes.data_as(ctypes.c_void_p),
                            ctypes.c_int64(0), ctypes.c_int64(nrows), ctypes.c_int64(n_per_row), None)
    y = gguf.quants.dequantize(dst, qtype).reshape(-1)
    return float(np.sqrt(np.mean((y.astype(np.float64) - src.astype(np.float64)) ** 2)))


def write_types():
    """types.txt from llama-quantize's output files (skipped without it)."""
    import subprocess
    import tempfile
    if not os.path.exists(LLAMA_QUANTIZE):
        print("no", LLAMA_QUANTIZE, "- types.txt not written")
        return
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.dirname(LLAMA_QUANTIZE))
    lines = ["# model ftype tensor type: llama-quantize's choices (tools/make_quantize_goldens.py)"]
    with tempfile.TemporaryDirectory() as tmp:
        for model in TYPE_MODELS:
            src = os.path.join(ROOT, "tests", "golden", "models", model + ".gguf")
            for ft in TYPE_FTYPES:
                dst = os.path.join(tmp, f"{model}-{ft}.gguf")
                subprocess.run([LLAMA_QUANTIZE, src, dst, ft], env=env, check=True, capture_output=True)
                data = open(dst, "rb").read()
                h = 0xCBF29CE484222325
                for byte in data:
                    h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
                lines.append(f"{model} {ft} =file {len(data)} {h:016x}")
                r = gguf.GGUFReader(dst)
                for t in r.tensors:
                    lines.append(f"{model} {ft} {t.name} {t.tensor_type.name.lower().replace('_k', '_K')}")
    with open(TYPES_OUT, "w") as f:
        f.write("\n".join(lines) + "\n")
    n_files = sum(" =file " in line for line in lines)
    print(f"wrote {TYPES_OUT} ({n_files} files, {len(lines) - 1 - n_files} tensors)")


def main():
    print("gguf-py from", os.path.dirname(gguf.__file__))
    gauss, edge = make_inputs()
    lib = None
    if os.path.exists(GGML_LIB):
        lib = ctypes.CDLL(GGML_LIB)
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        print("ggml from", GGML_LIB)
    else:
        print("no", GGML_LIB, "- RMSE references written as NaN")
    out = bytearray(b"LMQZ")
    out += struct.pack("<I", gauss.size) + gauss.tobytes()
    out += struct.pack("<I", edge.size) + edge.tobytes()
    types = LEGACY + KQUANT
    out += struct.pack("<I", len(types))
    for t in types:
        rmse = ggml_rmse(lib, t, gauss)
        if t in LEGACY:
            q = gguf.quants.quantize(np.concatenate([gauss, edge]), t).tobytes()
        else:
            q = b""
        out += struct.pack("<IfI", int(t), rmse, len(q)) + q
        print(f"{t.name:5s} ggml rmse {rmse:.6f}  golden bytes {len(q)}")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "wb") as f:
        f.write(out)
    print(f"wrote {OUT} ({len(out)} bytes)")
    write_types()


if __name__ == "__main__":
    main()
