#!/usr/bin/env python3
"""Write tests/golden/quant/<type>.bin: raw GGUF blocks and what they mean.

For each tensor type that src/quant/quant_ref.c dequantizes, this writes a few
blocks of bytes and the float32 values that gguf-py's
``gguf.quants.dequantize`` produces for them. tests/test_quant.c dequantizes
the same bytes and requires bit-identical floats (NaN matches any NaN).

Which gguf-py: the copy vendored with llama.cpp at
ext/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py (version 0.19.0) is put
first on sys.path; if it is missing, the pip ``gguf`` package (also 0.19.0
here) is used. The script prints which one it loaded.

gguf-py has no dequantizer for q8_1 and q8_K (activation-only types), so their
expected values come from the two-line numpy formula below (q * d), written
from ggml's definition; they check the byte layout, not an independent
implementation.

Blocks. Every multi-byte field is little-endian. For each type: a few blocks
of random bytes whose f16 (or f32) scale fields are replaced by sane finite
values in [-2, 2], then edge blocks: all zero; all-0xFF payload with a
positive scale; all-0x00 and all-0x80 payloads with a negative scale; a
subnormal scale; an infinite scale (which gives inf and NaN values). The
float types get random values plus zeros, subnormals, infinities and NaNs.

File layout (all little-endian):
    offset 0   4 bytes  magic b"LMQG"
    offset 4   u32      GGUF type id (ggml_type)
    offset 8   u32      n_elements
    offset 12  u32      n_bytes (= n_elements / block_size * type_size)
    offset 16  n_bytes  the raw blocks
    then       n_elements float32: the expected values

Run from the repository root:
    /work/venv/bin/python tools/make_quant_goldens.py
Deterministic: numpy default_rng seeded with SEED below.
"""

import os
import struct
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENDORED = os.path.normpath(
    os.path.join(ROOT, "..", "ext", "llama_cpp_python-0.3.36", "vendor", "llama.cpp", "gguf-py"))
for candidate in (VENDORED, "/work/ext/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py"):
    if os.path.isdir(candidate):
        sys.path.insert(0, candidate)
        break

import gguf  # noqa: E402
from gguf import GGMLQuantizationType as T  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

SEED = 20240611
OUT_DIR = os.path.join(ROOT, "tests", "golden", "quant")

# name -> (type, block_size, type_size, offsets of f16 fields, offsets of f32 fields,
#          number of random blocks). Field offsets match the structs in quant.h.
TYPES = {
    "f32": (T.F32, 1, 4, [], [], 0),
    "f16": (T.F16, 1, 2, [], [], 0),
    "bf16": (T.BF16, 1, 2, [], [], 0),
    "q4_0": (T.Q4_0, 32, 18, [0], [], 8),
    "q4_1": (T.Q4_1, 32, 20, [0, 2], [], 8),
    "q5_0": (T.Q5_0, 32, 22, [0], [], 8),
    "q5_1": (T.Q5_1, 32, 24, [0, 2], [], 8),
    "q8_0": (T.Q8_0, 32, 34, [0], [], 8),
    "q8_1": (T.Q8_1, 32, 36, [0, 2], [], 8),
    "q2_K": (T.Q2_K, 256, 84, [80, 82], [], 4),
    "q3_K": (T.Q3_K, 256, 110, [108], [], 4),
    "q4_K": (T.Q4_K, 256, 144, [0, 2], [], 4),
    "q5_K": (T.Q5_K, 256, 176, [0, 2], [], 4),
    "q6_K": (T.Q6_K, 256, 210, [208], [], 4),
    "q8_K": (T.Q8_K, 256, 292, [], [0], 4),
}


def f16_bytes(x):
    return np.array([x], dtype="<f2").tobytes()


def f32_bytes(x):
    return np.array([x], dtype="<f4").tobytes()


def make_block(type_size, f16_offs, f32_offs, payload, scales):
    """A block of `payload` bytes (an int pattern or a bytes object) with its
    scale fields set to `scales` (a list of floats, or raw bytes objects)."""
    blk = bytearray(payload if isinstance(payload, bytes) else bytes([payload]) * type_size)
    fields = [(o, 2) for o in f16_offs] + [(o, 4) for o in f32_offs]
    for (off, size), s in zip(fields, scales):
        raw = s if isinstance(s, bytes) else (f16_bytes(s) if size == 2 else f32_bytes(s))
        blk[off:off + size] = raw
    return bytes(blk)


def quant_blocks(rng, type_size, f16_offs, f32_offs, n_random):
    n_fields = len(f16_offs) + len(f32_offs)
    blocks = []
    for _ in range(n_random):
        payload = rng.integers(0, 256, type_size, dtype=np.uint8).tobytes()
        blocks.append(make_block(type_size, f16_offs, f32_offs, payload,
                                 list(rng.uniform(-2, 2, n_fields))))
    rand = lambda: rng.integers(0, 256, type_size, dtype=np.uint8).tobytes()  # noqa: E731
    edges = [
        (0x00, [0.0] * n_fields),                    # zero scale, zero codes
        (0xFF, [2.0] + [1.0] * (n_fields - 1)),      # max codes, max scales
        (0x00, [-2.0] + [-1.0] * (n_fields - 1)),    # min codes, negative d
        (0x80, [-1.5] + [0.5] * (n_fields - 1)),     # signed -128 / mid codes
        (rand(), [-0.75] * n_fields),                # negative d, random codes
        (rand(), [b"\x01\x00" if o in f16_offs else 1e-40 for o in f16_offs + f32_offs]),  # subnormal
        (rand(), [float("inf")] + [-2.0] * (n_fields - 1)),  # inf scale: inf, NaN
    ]
    for payload, scales in edges:
        blocks.append(make_block(type_size, f16_offs, f32_offs, payload, scales))
    return b"".join(blocks)


def float_values(rng, name):
    """Raw bytes of 256 elements of a float type, with special values."""
    if name == "f32":
        v = rng.normal(0, 10, 256).astype("<f4")
        v[:8] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-40, 3.4028235e38]
        return v.tobytes()
    bits = rng.integers(0, 65536, 256, dtype=np.uint16)  # every class, NaNs included
    bits[:8] = [0x0000, 0x8000, 0x0001, 0x83FF, 0x7C00, 0xFC00, 0x7E00, 0x7C01]
    return bits.astype("<u2").tobytes()


def expected(name, qtype, raw):
    data = np.frombuffer(raw, dtype=np.uint8).copy()
    with np.errstate(all="ignore"):
        if name == "q8_1":   # f16 d, f16 s, 32 x int8
            b = data.reshape(-1, 36)
            d = b[:, 0:2].copy().view("<f2").astype(np.float32)
            return (b[:, 4:].view(np.int8).astype(np.float32) * d).ravel()
        if name == "q8_K":   # f32 d, 256 x int8, 16 x int16
            b = data.reshape(-1, 292)
            d = b[:, 0:4].copy().view("<f4").astype(np.float32)
            return (b[:, 4:260].view(np.int8).astype(np.float32) * d).ravel()
        return np.asarray(dequantize(data, qtype), dtype=np.float32).ravel()


def main():
    rng = np.random.default_rng(SEED)
    os.makedirs(OUT_DIR, exist_ok=True)
    print(f"gguf-py from {os.path.dirname(gguf.__file__)}")
    total = 0
    for name, (qtype, bs, ts, f16_offs, f32_offs, n_random) in TYPES.items():
        if bs == 1:
            raw = float_values(rng, name)
        else:
            raw = quant_blocks(rng, ts, f16_offs, f32_offs, n_random)
        n_el = len(raw) // ts * bs
        vals = expected(name, qtype, raw)
        assert vals.size == n_el and vals.dtype == np.float32, name
        blob = b"LMQG" + struct.pack("<III", int(qtype), n_el, len(raw)) + raw
        blob += vals.astype("<f4").tobytes()
        path = os.path.join(OUT_DIR, f"{name}.bin")
        with open(path, "wb") as f:
            f.write(blob)
        total += len(blob)
        print(f"{path}: {n_el} elements, {len(blob)} bytes")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
