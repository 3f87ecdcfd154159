#!/usr/bin/env python3
"""Make the tiny Hugging Face checkpoints and golden logits under tests/golden/hf/.

What it makes
-------------
For each of four tiny random-weight transformers models (seeded) three
checkpoint folders, each sharded (>= 2 safetensors files plus
model.safetensors.index.json, the published layout with one tensor per expert):

  <name>-f32    every tensor float32, as save_pretrained writes it
  <name>-bf16   every tensor bfloat16
  <name>-fp8    DeepSeek-style FP8: every linear weight of the layers (not the
                embeddings, the output head or the MoE router) as F8_E4M3 with
                a float32 <weight>_scale_inv of one scale per 128x128 block
                (scale_inv = amax(block) / 448, q = float8_e4m3fn(w / scale_inv),
                rounded to nearest even by torch), the rest bfloat16, and
                quantization_config {quant_method fp8, fmt e4m3,
                weight_block_size [128, 128]} in config.json. Some dims exceed
                128 and are not multiples of it, so blocks are partial.

  name      HF class               what it exercises
  ds3       DeepseekV3ForCausalLM  MLA with q_lora, sigmoid + bias group-limited
                                   routing, shared expert, first_k_dense_replace,
                                   YaRN; config.json rewritten in the published
                                   style (rope_theta + rope_scaling {type: yarn})
                                   with num_nextn_predict_layers 1 and an MTP
                                   layer's tensors (model.layers.2.*) that must be
                                   ignored
  ds2lite   DeepseekV2ForCausalLM  no q_lora, softmax greedy routing, 2 shared
                                   experts, YaRN (transformers 5 rope_parameters)
  qwen3moe  Qwen3MoeForCausalLM    softmax top-k renormalised, q/k norms, GQA,
                                   head_dim 40 (q rows 160: two row blocks)
  llama     LlamaForCausalLM       dense GQA, un-permuted q/k (NEOX rotation),
                                   tied embeddings (no lm_head)

ds3-f32 and llama-f32 also hold a tiny byte-level BPE tokenizer.json (320
tokens, trained on tinyshakespeare as tools/make_model_goldens.py does).

References (<name>-<type>.ref, the LMRF layout of tools/make_model_goldens.py):
the logits at every position of an 8-token prompt and the 32-token greedy
continuation, computed by transformers in float32 (eager attention) on the
checkpoint's own weights: the original float32 model for -f32, and for -bf16
and -fp8 a model loaded from the dequantized weights (bf16 -> f32; fp8 * scale
in f32). The prompt is chosen per file with the margins of
make_model_goldens.pick_prompt (greedy top-2 > 1e-3 * max|logit|, routing
> 1e-4). MANIFEST.txt: "<folder> <ref> <rel_tol> <greedy 0|1> <description>".

Command line (from the repository root, about a minute on 2 cores):
  /work/venv/bin/python tools/make_hf_goldens.py [--out tests/golden/hf]
Deterministic: same inputs -> the same files.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import make_model_goldens as mmg  # noqa: E402

VOCAB = 320
mmg.VOCAB = VOCAB  # pick_prompt, write_ref and make_tokenizer read it
FP8_MAX = 448.0
BLOCK = 128
SHARDS = 3
F32_TOL = 1e-3
log = logging.getLogger("make_hf_goldens")


def yarn(mscale):
    return {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
            "original_max_position_embeddings": 64, "beta_fast": 32.0,
            "beta_slow": 1.0, "mscale": mscale, "mscale_all_dim": mscale}


def specs():
    common = dict(vocab_size=VOCAB, max_position_embeddings=256, rms_norm_eps=1e-6,
                  initializer_range=0.15, tie_word_embeddings=False,
                  bos_token_id=0, eos_token_id=0, pad_token_id=None)
    ds = dict(common, hidden_size=64, intermediate_size=200, moe_intermediate_size=32,
              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
              kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
              n_routed_experts=8, num_experts_per_tok=2, first_k_dense_replace=1)
    return {
        "ds3": ("DeepseekV3", dict(ds, q_lora_rank=48, n_shared_experts=1, n_group=4, topk_group=2,
                                   norm_topk_prob=True, routed_scaling_factor=2.5, num_mtp_layers=0,
                                   scoring_func="sigmoid", topk_method="noaux_tc", rope_interleave=True,
                                   rope_parameters=yarn(1.0)),
                2001, 1, "DeepSeek-V3 style: MLA q_lora, sigmoid+bias group routing, YaRN, MTP layer ignored"),
        "ds2lite": ("DeepseekV2", dict(ds, moe_intermediate_size=16, q_lora_rank=None, n_shared_experts=2,
                                       n_group=1, topk_group=1, topk_method="greedy", norm_topk_prob=False,
                                       routed_scaling_factor=1.0, scoring_func="softmax",
                                       rope_parameters=yarn(0.707)),
                    2002, 1, "DeepSeek-V2-Lite style: MLA no q_lora, softmax greedy routing, YaRN"),
        "qwen3moe": ("Qwen3Moe", dict(common, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=40,
                                      rope_theta=10000.0, moe_intermediate_size=16, num_experts=8,
                                      num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1,
                                      mlp_only_layers=[]),
                     2003, 1, "Qwen3-MoE: softmax top-k renormalised, q/k norm, GQA"),
        "llama": ("Llama", dict(common, hidden_size=64, intermediate_size=200, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=10000.0,
                                tie_word_embeddings=True),
                  2004, 1, "Llama dense GQA, NEOX rope on un-permuted q/k, tied embeddings"),
    }


def load_dir(d: Path):
    from safetensors.torch import load_file
    sd = {}
    for f in sorted(d.glob("*.safetensors")):
        sd.update(load_file(str(f)))
    return sd


def fp8_eligible(name, t):
    return (t.dim() == 2 and name.endswith(".weight") and name.startswith("model.layers.")
            and "norm" not in name and not name.endswith("mlp.gate.weight")
            and not name.endswith("block_sparse_moe.gate.weight"))


def quantize_fp8(w):
    """(float8_e4m3fn codes, f32 scale_inv [ceil(r/128), ceil(c/128)], dequantized f32)."""
    import torch
    w = w.float()
    r, c = w.shape
    rb, cb = -(-r // BLOCK), -(-c // BLOCK)
    scale = torch.empty(rb, cb, dtype=torch.float32)
    q = torch.empty(r, c, dtype=torch.float8_e4m3fn)
    deq = torch.empty(r, c, dtype=torch.float32)
    for i in range(rb):
        for j in range(cb):
            blk = w[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK]
            amax = blk.abs().max()
            s = (amax / FP8_MAX) if amax > 0 else torch.tensor(1.0)
            s = s.to(torch.float32)
            qb = (blk / s).to(torch.float8_e4m3fn)
            scale[i, j] = s
            q[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK] = qb
            deq[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK] = qb.float() * s
    return q, scale, deq


def write_sharded(d: Path, tensors: dict, config: dict, n_shards=SHARDS):
    """tensors (name -> torch tensor) as n_shards safetensors + index.json, in name order."""
    from safetensors.torch import save_file
    d.mkdir(parents=True)
    names = sorted(tensors)
    sizes = [tensors[n].numel() * tensors[n].element_size() for n in names]
    total = sum(sizes)
    per = total / n_shards
    shards, cur, acc = [], [], 0
    for n, s in zip(names, sizes):
        if cur and acc + s > per * (len(shards) + 1) and len(shards) < n_shards - 1:
            shards.append(cur)
            cur = []
        cur.append(n)
        acc += s
    shards.append(cur)
    weight_map = {}
    for i, group in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: tensors[n].contiguous() for n in group}, str(d / fn), metadata={"format": "pt"})
        for n in group:
            weight_map[n] = fn
    assert len(shards) >= 2
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    (d / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def published_style(cfg: dict):
    """transformers 5's rope_parameters -> the rope_theta + rope_scaling of published configs."""
    rp = cfg.pop("rope_parameters", None)
    if rp:
        cfg["rope_theta"] = rp.get("rope_theta", 10000.0)
        if rp.get("rope_type", "default") != "default":
            sc = {k: v for k, v in rp.items() if k not in ("rope_theta", "rope_type")}
            sc["type"] = rp["rope_type"]
            cfg["rope_scaling"] = sc
    return cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "tests/golden/hf")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    mmg.log.setLevel(logging.WARNING)
    import torch
    import transformers
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()

    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tmp = Path(tempfile.mkdtemp(prefix="leanmoe_hf_goldens_"))
    tok_dir = tmp / "_tokenizer"
    tok_dir.mkdir()
    mmg.make_tokenizer(tok_dir)

    manifest = []
    for name, spec in specs().items():
        kind, cfg_kw, wseed, pseed, desc = spec
        log.info("== %s", name)
        Cfg, Model = mmg.hf_classes(kind)
        cfg = Cfg(**cfg_kw)
        cfg._attn_implementation = "eager"
        torch.manual_seed(wseed)
        model = Model(cfg).eval()
        mmg.randomize(model, wseed)
        saved = tmp / name
        model.save_pretrained(str(saved))
        published = load_dir(saved)          # per-expert names, float32
        config = json.loads((saved / "config.json").read_text())
        if name == "ds3":
            config = published_style(config)
            config["num_nextn_predict_layers"] = 1
            # an MTP module past num_hidden_layers: the engine must skip it
            g = torch.Generator().manual_seed(7)
            for n, shape in [("enorm.weight", (64,)), ("eh_proj.weight", (64, 128)),
                             ("self_attn.q_a_proj.weight", (48, 64))]:
                published[f"model.layers.2.{n}"] = torch.randn(shape, generator=g)

        for dtype in ("f32", "bf16", "fp8"):
            tensors, deq = {}, {}
            c = dict(config)
            for n, t in published.items():
                if dtype == "f32":
                    tensors[n] = t
                    deq[n] = t
                elif dtype == "bf16" or not fp8_eligible(n, t):
                    tensors[n] = t.to(torch.bfloat16)
                    deq[n] = tensors[n].float()
                else:
                    q, s, d = quantize_fp8(t)
                    tensors[n] = q
                    tensors[n + "_scale_inv"] = s
                    deq[n] = d
            if dtype != "f32":
                c["dtype"] = c["torch_dtype"] = "bfloat16"
            if dtype == "fp8":
                c["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3",
                                            "quant_method": "fp8", "weight_block_size": [BLOCK, BLOCK]}
            folder = out / f"{name}-{dtype}"
            write_sharded(folder, tensors, c)
            if dtype == "f32" and name in ("ds3", "llama"):
                for f in ("tokenizer.json", "tokenizer_config.json"):
                    shutil.copy(tok_dir / f, folder / f)
            # the reference: the HF model on exactly these weights
            if dtype == "f32":
                m2 = model
            else:
                dq = tmp / f"{name}-{dtype}-deq"
                from safetensors.torch import save_file
                dq.mkdir()
                save_file({n: v.contiguous() for n, v in deq.items() if not n.startswith("model.layers.2.")
                           or kind != "DeepseekV3"}, str(dq / "model.safetensors"))
                shutil.copy(saved / "config.json", dq / "config.json")
                m2 = Model.from_pretrained(str(dq), dtype=torch.float32, attn_implementation="eager").eval()
                # every weight was loaded (none left at a random init)
                for k, v in m2.state_dict().items():
                    ref = model.state_dict()[k]
                    assert v.shape == ref.shape, k
                    rel = ((v - ref).abs().max() / ref.abs().max().clamp(min=1e-30)).item()
                    assert rel < 0.1, (k, rel)
            seed, ids, ((logits, gen, gm, rm),) = mmg.pick_prompt([(folder.name, m2)], spec, pseed)
            log.info("  %s: prompt seed %d, min greedy margin %.2e, routing margin %.2e", folder.name, seed,
                     min(gm), rm)
            ref = out / f"{name}-{dtype}.ref"
            mmg.write_ref(ref, ids, logits, gen)
            what = {"f32": "float32", "bf16": "bfloat16; ref = float32 math on the bf16 weights",
                    "fp8": "FP8 e4m3 128x128 blocks; ref = float32 math on the dequantized weights"}[dtype]
            manifest.append(f"{folder.name} {ref.name} {F32_TOL:g} 1 {desc}; {what}")
    (out / "MANIFEST.txt").write_text(
        "# <folder> <ref> <rel_tol on max|diff|/max|logit|> <greedy_must_match> <description>\n"
        "# made by tools/make_hf_goldens.py\n" + "\n".join(manifest) + "\n")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"total bytes under {out}: {total}")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
