#!/usr/bin/env python3
"""Make the vocab-only GGUFs and expected ids that tests/test_tokenizer.c uses.

Two outputs:

1. build/vocab/<name>.gguf (gitignored, not committed: 6-12 MB each). Vocab-only
   GGUFs written by llama.cpp's own converter, convert_hf_to_gguf.py
   --vocab-only, from the HF tokenizer.json files in ../shared/data/tokenizers:
       qwen3.gguf        from tokenizers/qwen3        (Qwen3ForCausalLM,
                                                      tokenizer.ggml.pre "qwen2")
       deepseek-v3.gguf  from tokenizers/deepseek-v3  (DeepseekV3ForCausalLM,
                                                      tokenizer.ggml.pre "deepseek-v3")
   The converter needs a model directory, so each is staged in a temporary
   directory holding tokenizer.json, tokenizer_config.json and a minimal
   config.json (the architecture plus the few hyperparameters the converter
   reads before it writes the vocabulary). No weights are involved.

2. tests/golden/tokenizer/qwen3.out (committed, small): one line per case of
   the llama.cpp test strings (ggml-vocab-qwen2.gguf.inp), the ids that the HF
   `tokenizers` package gives with add_special_tokens=False. This is a second,
   independent reference beside llama.cpp's ggml-vocab-qwen2.gguf.out; the
   script checks that the two agree and says so.

The C test uses build/vocab/*.gguf when present and prints "skipped" when not.

Dependencies: transformers, tokenizers, numpy (and jinja2, pyyaml,
sentencepiece that the converter pulls in), plus the gguf-py vendored with
llama.cpp. convert_hf_to_gguf.py imports torch at top level, but its
--vocab-only path never calls it: where torch is not installed (CI), this
script puts a stub module named torch on the converter's path, and the
output is byte-identical to a run with the real torch (checked here with
the /work/venv torch 2.15). Run from the repository root:
    /work/venv/bin/python tools/make_vocab_goldens.py [--llama-cpp DIR] [--shared DIR]
Deterministic: the converter and the tokenizer have no randomness, and the
staging directory is named after the vocab (the converter derives
general.name from it).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_LLAMA_CPP = "/work/ext/llama_cpp_python-0.3.36/vendor/llama.cpp"
DEFAULT_SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
SEPARATOR = "\n__ggml_vocab_test__\n"

# Just enough hyperparameters for the converter's model classes to initialise;
# with --vocab-only none of them reach the file except as metadata.
COMMON_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "torch_dtype": "bfloat16",
}

VOCABS = [
    # name, shared-data folder, tokenizer.ggml.pre to force (None: the
    # converter's choice), architecture, model_type, vocab_size, extra config
    ("qwen3", "qwen3", None, "Qwen3ForCausalLM", "qwen3", 151936, {"head_dim": 32}),
    ("deepseek-v3", "deepseek-v3", "deepseek-v3", "DeepseekV3ForCausalLM", "deepseek_v3", 129280, {
        "moe_intermediate_size": 32, "n_routed_experts": 4, "n_shared_experts": 1,
        "num_experts_per_tok": 2, "first_k_dense_replace": 1, "kv_lora_rank": 16,
        "q_lora_rank": 16, "qk_nope_head_dim": 16, "qk_rope_head_dim": 16,
        "v_head_dim": 16, "n_group": 1, "topk_group": 1, "routed_scaling_factor": 1.0,
        "scoring_func": "sigmoid", "topk_method": "noaux_tc", "norm_topk_prob": True,
    }),
]


TORCH_STUB = """# Stand-in for torch, for convert_hf_to_gguf.py --vocab-only, which imports
# torch but does not use it on that path. Every attribute is a dummy.
import sys, types
from unittest import mock
class _Stub(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = mock.MagicMock(name="torch." + name)
        setattr(self, name, value)
        return value
sys.modules[__name__].__class__ = _Stub
__version__ = "0.0+stub"
"""


def torch_missing():
    try:
        import torch  # noqa: F401
        return False
    except ImportError:
        return True


def make_gguf(llama_cpp, shared, out_dir, stub_dir, name, folder, pre, arch, model_type,
              vocab_size, extra):
    """Stage a model directory and run convert_hf_to_gguf.py --vocab-only on it.

    The converter names the pre-tokenizer by hashing what the tokenizer does to
    a fixed text. The DeepSeek-V3 tokenizer.json in shared/data (an npm copy)
    hashes like JoyAI-LLM's, so the converter writes "joyai-llm"; llama.cpp
    maps both names to the same regexes. Real DeepSeek-V3 GGUFs say
    "deepseek-v3", so for that one the name is rewritten with gguf-py's
    gguf_new_metadata.py --pre-tokenizer, and the test exercises the name that
    production files carry."""
    src = os.path.join(shared, "tokenizers", folder)
    out = os.path.join(out_dir, name + ".gguf")
    with tempfile.TemporaryDirectory() as top:
        tmp = os.path.join(top, name)  # general.name comes from this name
        os.mkdir(tmp)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(src, f), tmp)
        config = dict(COMMON_CONFIG, architectures=[arch], model_type=model_type,
                      vocab_size=vocab_size, **extra)
        with open(os.path.join(tmp, "config.json"), "w") as fh:
            json.dump(config, fh, indent=1)
        env = dict(os.environ)
        paths = ([stub_dir] if stub_dir else []) + [os.path.join(llama_cpp, "gguf-py")]
        env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
        raw = os.path.join(tmp, "raw.gguf") if pre else out
        cmd = [sys.executable, os.path.join(llama_cpp, "convert_hf_to_gguf.py"),
               "--vocab-only", "--outfile", raw, tmp]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, env=env)
        if pre:
            cmd = [sys.executable, os.path.join(llama_cpp, "gguf-py", "gguf", "scripts",
                                                "gguf_new_metadata.py"),
                   "--pre-tokenizer", pre, "--force", raw, out]
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, env=env)
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")
    return out


def read_cases(path):
    with open(path, encoding="utf-8", newline="") as fh:
        text = fh.read()
    cases = text.split(SEPARATOR)
    if cases and cases[-1] == "":
        cases.pop()
    return cases


def make_qwen3_out(shared):
    """Encode the llama.cpp test strings with HF tokenizers; write and cross-check."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(shared, "tokenizers", "qwen3", "tokenizer.json"))
    inp = os.path.join(shared, "tokenizers", "llama.cpp", "ggml-vocab-qwen2.gguf.inp")
    cases = read_cases(inp)
    # llama.cpp's .out format: each id preceded by one space, empty line for no ids.
    lines = ["".join(" %d" % i for i in tok.encode(c, add_special_tokens=False).ids) for c in cases]
    out_dir = os.path.join(ROOT, "tests", "golden", "tokenizer")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, "qwen3.out")
    with open(out, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {out} ({len(lines)} cases)")
    ref = os.path.join(shared, "tokenizers", "llama.cpp", "ggml-vocab-qwen2.gguf.out")
    with open(ref, encoding="utf-8") as fh:
        ref_lines = fh.read().split("\n")[: len(lines)]
    same = sum(a.split() == b.split() for a, b in zip(lines, ref_lines))
    print(f"qwen3 (HF tokenizers) vs llama.cpp qwen2 .out: {same}/{len(lines)} cases identical")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-cpp", default=DEFAULT_LLAMA_CPP, help="llama.cpp source tree")
    ap.add_argument("--shared", default=DEFAULT_SHARED, help="the shared data folder")
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "vocab"), help="where the GGUFs go")
    ap.add_argument("--torch-stub", action="store_true",
                    help="use the torch stub even where torch is installed")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as stub_top:
        stub_dir = None
        if args.torch_stub or torch_missing():
            stub_dir = stub_top
            os.mkdir(os.path.join(stub_dir, "torch"))
            with open(os.path.join(stub_dir, "torch", "__init__.py"), "w") as fh:
                fh.write(TORCH_STUB)
            print("torch: using a stub (the --vocab-only path does not need torch)")
        for v in VOCABS:
            make_gguf(args.llama_cpp, args.shared, args.out, stub_dir, *v)
    make_qwen3_out(args.shared)


if __name__ == "__main__":
    main()
