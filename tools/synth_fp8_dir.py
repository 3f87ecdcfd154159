#!/usr/bin/env python3
"""Write a DeepSeek-V3-shaped FP8 checkpoint folder with random weights, for timing.

Every matrix of the layers is F8_E4M3 with a float32 weight_scale_inv per
128x128 block (as deepseek-ai/DeepSeek-V3 publishes it); embeddings, output
head and router are bfloat16, norms bfloat16, the routing bias float32. Per-
matrix shapes are V3's (hidden 7168, MLA q_lora 1536 / kv_lora 512, 128 heads,
dense FFN 18432, expert FFN 2048); depth, expert count and vocabulary are
options so the folder fits on a small machine. Decode reads n_expert_used (8)
experts per MoE layer whatever the expert count, so time per token does not
depend on it. One shard per layer plus model.safetensors.index.json.

FP8 codes are random bytes with bit 6 cleared (|value| <= 1.875, never the
NaN code); scales 0.01. Compare with the same weights as Q8_0:

  python3 tools/synth_fp8_dir.py /tmp/v3fp8 --layers 4 --experts 64   # needs numpy
  build/leanmoe convert /tmp/v3fp8 /tmp/v3-q8_0.gguf --type q8_0
  build/leanmoe bench -m /tmp/v3fp8 ; build/leanmoe bench -m /tmp/v3-q8_0.gguf
"""
import argparse
import json
import struct
from pathlib import Path

import numpy as np

H, QL, KVL, NOPE, ROPE, VH, NH, FF, FFE = 7168, 1536, 512, 128, 64, 128, 128, 18432, 2048


def tensors_of_layer(il, dense, n_expert):
    p = f"model.layers.{il}."
    t = [(p + "input_layernorm.weight", "BF16", (H,)), (p + "post_attention_layernorm.weight", "BF16", (H,)),
         (p + "self_attn.q_a_proj.weight", "F8", (QL, H)), (p + "self_attn.q_a_layernorm.weight", "BF16", (QL,)),
         (p + "self_attn.q_b_proj.weight", "F8", (NH * (NOPE + ROPE), QL)),
         (p + "self_attn.kv_a_proj_with_mqa.weight", "F8", (KVL + ROPE, H)),
         (p + "self_attn.kv_a_layernorm.weight", "BF16", (KVL,)),
         (p + "self_attn.kv_b_proj.weight", "F8", (NH * (NOPE + VH), KVL)),
         (p + "self_attn.o_proj.weight", "F8", (H, NH * VH))]
    if dense:
        t += [(p + "mlp.gate_proj.weight", "F8", (FF, H)), (p + "mlp.up_proj.weight", "F8", (FF, H)),
              (p + "mlp.down_proj.weight", "F8", (H, FF))]
    else:
        t += [(p + "mlp.gate.weight", "BF16", (n_expert, H)), (p + "mlp.gate.e_score_correction_bias", "F32", (n_expert,))]
        for e in range(n_expert):
            q = f"{p}mlp.experts.{e}."
            t += [(q + "gate_proj.weight", "F8", (FFE, H)), (q + "up_proj.weight", "F8", (FFE, H)),
                  (q + "down_proj.weight", "F8", (H, FFE))]
        q = p + "mlp.shared_experts."
        t += [(q + "gate_proj.weight", "F8", (FFE, H)), (q + "up_proj.weight", "F8", (FFE, H)),
              (q + "down_proj.weight", "F8", (H, FFE))]
    return t


def data_of(rng, kind, shape):
    n = int(np.prod(shape))
    if kind == "F8":
        return (rng.integers(0, 256, n, dtype=np.uint8) & 0xBF).tobytes()
    if kind == "SCALE":
        return np.full(n, 0.01, dtype="<f4").tobytes()
    if kind == "F32":
        return (rng.standard_normal(n).astype("<f4") * 0.01).tobytes()
    # bf16: norms near 1, matrices ~0.02
    v = (1.0 + 0.1 * rng.standard_normal(n)) if len(shape) == 1 else 0.02 * rng.standard_normal(n)
    return (v.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()


def write_shard(path, entries, rng):
    header, off, items = {}, 0, []
    for name, kind, shape in entries:
        specs = [(name, kind, shape)]
        if kind == "F8":
            specs.append((name + "_scale_inv", "SCALE", (-(-shape[0] // 128), -(-shape[1] // 128))))
        for n, k, s in specs:
            dt = {"F8": "F8_E4M3", "SCALE": "F32", "F32": "F32", "BF16": "BF16"}[k]
            size = int(np.prod(s)) * {"F8_E4M3": 1, "F32": 4, "BF16": 2}[dt]
            header[n] = {"dtype": dt, "shape": list(s), "data_offsets": [off, off + size]}
            items.append((k, s))
            off += size
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb)
        for k, s in items:
            f.write(data_of(rng, k, s))
    return list(header)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dense", type=int, default=3)
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=129280)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    wm = {}
    n_shards = a.layers + 1
    shards = [[("model.embed_tokens.weight", "BF16", (a.vocab, H)), ("model.norm.weight", "BF16", (H,)),
               ("lm_head.weight", "BF16", (a.vocab, H))]]
    shards += [tensors_of_layer(il, il < a.dense, a.experts) for il in range(a.layers)]
    for i, entries in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        for n in write_shard(a.out / fn, entries, rng):
            wm[n] = fn
        print("wrote", fn)
    (a.out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    cfg = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "vocab_size": a.vocab,
           "hidden_size": H, "intermediate_size": FF, "moe_intermediate_size": FFE, "num_hidden_layers": a.layers,
           "num_attention_heads": NH, "num_key_value_heads": NH, "n_shared_experts": 1,
           "n_routed_experts": a.experts, "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4,
           "routed_scaling_factor": 2.5, "norm_topk_prob": True, "scoring_func": "sigmoid",
           "topk_method": "noaux_tc", "first_k_dense_replace": a.dense, "q_lora_rank": QL, "kv_lora_rank": KVL,
           "qk_nope_head_dim": NOPE, "qk_rope_head_dim": ROPE, "v_head_dim": VH, "max_position_embeddings": 163840,
           "rms_norm_eps": 1e-6, "rope_theta": 10000,
           "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                            "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
           "num_nextn_predict_layers": 0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
           "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                   "weight_block_size": [128, 128]}}
    (a.out / "config.json").write_text(json.dumps(cfg, indent=2))


if __name__ == "__main__":
    main()
