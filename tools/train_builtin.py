#!/usr/bin/env python3
"""Train leanmoe's built-in model (models/leanmoe-tiny.gguf) and make its golden.

What it makes
-------------
A tiny DeepSeek-V3-style model (transformers' own DeepseekV3ForCausalLM: MLA
latent attention with a q LoRA, a dense first layer, then MoE layers with one
shared expert and sigmoid-scored, bias-corrected, group-limited top-2 routing)
trained from scratch on Tiny Shakespeare (public domain) for a fixed wall-clock
budget, with its own byte-level BPE tokenizer. Then:

  1. the HF checkpoint (+ tokenizer) is saved to a temp dir outside the repo
     (--ckpt, default /tmp/leanmoe_builtin_ckpt);
  2. llama.cpp's convert_hf_to_gguf.py converts it (--outtype, default f16; f16 weights keep
     leanmoe on float32 activations, so its logits can be held to 1e-3)
     to models/leanmoe-tiny.gguf, with the pre-tokenizer name forced to
     "gpt-2" (the tokenizer uses the GPT-2 split regex);
  3. tests/golden/models/builtin.ref is written: float32 transformers logits
     at every position of a short Shakespeare-like prompt and the 32-token
     greedy continuation, computed from the GGUF's *dequantized* weights
     (tools/make_model_goldens.py's read_gguf/gguf_to_hf/reference), so the
     C test compares leanmoe with the training framework on the same numbers;
  4. greedy and sampled 200-token samples are printed.

Tokenizer: tokenizers' BPE trained on the training split, vocab --vocab
(default 2048) including "<|begin_of_text|>" (id 0, BOS, added to every
sequence) and "<|end_of_text|>" (id 1, EOS); ByteLevel(add_prefix_space=False,
use_regex=True) pre-tokenizer (the GPT-2 regex) and ByteLevel decoder.

Training: the last 5% of the text (by characters) is held out for validation.
Each training sequence is BOS + a random window of --seq-len - 1 tokens.
AdamW (betas 0.9/0.95, weight decay 0.1 on matrices), linear warmup then
cosine decay to 10% of --lr, gradient clipping 1.0. The e_score_correction_bias
of each router (a buffer HF never trains) is updated DeepSeek-V3 style
(aux-loss-free load balancing): after every step, bias += --bias-rate *
sign(mean load - load of the expert) over that step's tokens.

With --minutes (default), training stops when the wall-clock budget is spent
and the cosine runs over elapsed time / budget, so the step count depends on
the machine's speed and load (it is printed). With --steps N the cosine runs
over N steps instead (no clock; seeded and repeatable on one machine).

Command line (from the repository root):
  /work/venv/bin/python tools/train_builtin.py [--minutes 15] [--steps N]
      [--seed 1234] [--outtype f16] [--out models/leanmoe-tiny.gguf]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import os

# several processes share the cores: busy-waiting OpenMP threads make every
# torch op stall behind a descheduled sibling (10x slower steps), so sleep instead
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import make_model_goldens as mg  # noqa: E402

CORPUS = Path("/work/shared/data/corpora/tinyshakespeare.txt")
BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"

# candidate prompts for the golden; the first whose greedy/routing margins are
# clear is used (an independent float32 implementation must not flip a choice)
PROMPTS = [
    "KING HENRY:\nNow, good my lord, what news from France?",
    "ROMEO:\nO gentle night, lend me thy quiet hand.",
    "First Citizen:\nWhat say you to the king, my masters?",
    "DUKE VINCENTIO:\nCome hither, sirrah; what is thy name?",
    "JULIET:\nAy me, what tidings bring'st thou, gentle nurse?",
    "GLOUCESTER:\nNow is the winter of our discontent",
]


def model_config(vocab):
    return dict(
        vocab_size=vocab, hidden_size=256, intermediate_size=640, moe_intermediate_size=160,
        num_hidden_layers=4, first_k_dense_replace=1,
        num_attention_heads=8, num_key_value_heads=8,
        q_lora_rank=128, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
        n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, n_group=4, topk_group=2,
        norm_topk_prob=True, routed_scaling_factor=1.5,
        scoring_func="sigmoid", topk_method="noaux_tc", num_mtp_layers=0,
        rope_interleave=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        max_position_embeddings=2048, rms_norm_eps=1e-6, initializer_range=0.02,
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=1, pad_token_id=None,
        attention_dropout=0.0,
    )


def make_tokenizer(text, vocab, out_dir: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    lines = text.splitlines(keepends=True)
    tok.train_from_iterator(["".join(lines[i:i + 64]) for i in range(0, len(lines), 64)], trainer=trainer)
    assert tok.get_vocab_size() == vocab, tok.get_vocab_size()
    assert tok.token_to_id(BOS) == 0 and tok.token_to_id(EOS) == 1
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=None)
    fast.save_pretrained(str(out_dir))
    # the converter's SpecialVocab reads add_bos_token/add_eos_token from here
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(add_bos_token=True, add_eos_token=False, bos_token=BOS, eos_token=EOS)
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return tok


def encode(tok, s):
    return tok.encode(s).ids


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=15.0, help="training wall-clock budget")
    ap.add_argument("--steps", type=int, default=0, help="fixed step count (overrides --minutes)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--bias-rate", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--outtype", default="f16")
    ap.add_argument("--out", type=Path, default=REPO / "models/leanmoe-tiny.gguf")
    ap.add_argument("--ref", type=Path, default=REPO / "tests/golden/models/builtin.ref")
    ap.add_argument("--ckpt", type=Path, default=Path("/tmp/leanmoe_builtin_ckpt"))
    ap.add_argument("--llama-cpp", type=Path, default=mg.DEFAULT_LLAMA_CPP)
    ap.add_argument("--skip-train", action="store_true", help="reuse the checkpoint in --ckpt")
    args = ap.parse_args()

    mg.setup_paths(args.llama_cpp)
    import torch
    import transformers
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}", flush=True)

    text = CORPUS.read_text(encoding="utf-8")
    n_val = len(text) // 20
    cut = text.rfind("\n\n", 0, len(text) - n_val) + 2   # split at a speech boundary
    train_text, val_text = text[:cut], text[cut:]

    ckpt = args.ckpt
    if not args.skip_train:
        torch.manual_seed(args.seed)
        np.random.seed(args.seed)
        if ckpt.exists():
            shutil.rmtree(ckpt)
        ckpt.mkdir(parents=True)
        t0 = time.time()
        tok = make_tokenizer(train_text, args.vocab, ckpt)
        train_ids = torch.tensor(encode(tok, train_text), dtype=torch.long)
        val_ids = torch.tensor(encode(tok, val_text), dtype=torch.long)
        print(f"tokenizer: vocab {args.vocab}, train {len(train_text)} chars -> {len(train_ids)} tokens, "
              f"val {len(val_text)} chars -> {len(val_ids)} tokens ({time.time() - t0:.1f}s)", flush=True)

        cfg = DeepseekV3Config(**model_config(args.vocab))
        cfg._attn_implementation = "sdpa"
        model = DeepseekV3ForCausalLM(cfg)
        n_params = sum(p.numel() for p in model.parameters())
        n_embed = model.model.embed_tokens.weight.numel() + model.lm_head.weight.numel()
        print(f"parameters: {n_params} ({n_params - n_embed} without embeddings/output)", flush=True)

        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=args.lr, betas=(0.9, 0.95), eps=1e-8)

        # expert load counting for the aux-loss-free bias update
        routers = [m for n, m in model.named_modules() if n.endswith("mlp.gate") and hasattr(m, "e_score_correction_bias")]
        loads = [torch.zeros(cfg.n_routed_experts) for _ in routers]

        def mk_hook(i):
            def hook(_m, _inp, out):
                idx = out[2]
                loads[i] += torch.bincount(idx.reshape(-1), minlength=cfg.n_routed_experts).float()
            return hook
        for i, r in enumerate(routers):
            r.register_forward_hook(mk_hook(i))

        gen = torch.Generator().manual_seed(args.seed)
        L = args.seq_len

        def batch(ids, bs, g):
            starts = torch.randint(0, len(ids) - L, (bs,), generator=g)
            x = torch.stack([ids[s:s + L - 1] for s in starts.tolist()])
            x = torch.cat([torch.zeros(bs, 1, dtype=torch.long), x], dim=1)       # BOS first
            y = torch.stack([ids[s:s + L] for s in starts.tolist()])               # next tokens
            return x, y

        vg = torch.Generator().manual_seed(args.seed + 1)
        val_batches = [batch(val_ids, args.batch, vg) for _ in range(8)]

        def evaluate():
            model.eval()
            with torch.no_grad():
                tot = 0.0
                for x, y in val_batches:
                    lg = model(x).logits
                    tot += torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), y.reshape(-1)).item()
            model.train()
            return tot / len(val_batches)

        def lr_at(step, progress):
            """linear warmup over --warmup steps, then cosine to 10% over progress 0..1"""
            if step < args.warmup:
                return args.lr * (step + 1) / args.warmup
            return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

        budget = args.minutes * 60.0
        total = args.steps

        def progress(step):
            # with --steps the schedule runs over steps, otherwise over the wall-clock budget
            return step / total if total > 0 else (time.time() - t_start) / budget

        def done(step):
            return step >= total if total > 0 else time.time() - t_start >= budget

        model.train()
        t_start = time.time()
        step = 0
        ema = None
        history = []
        while not done(step):
            lr = lr_at(step, progress(step))
            for gp in opt.param_groups:
                gp["lr"] = lr
            x, y = batch(train_ids, args.batch, gen)
            for ld in loads:
                ld.zero_()
            lg = model(x).logits
            loss = torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                for r, ld in zip(routers, loads):
                    r.e_score_correction_bias += args.bias_rate * torch.sign(ld.mean() - ld)
            lv = loss.item()
            ema = lv if ema is None else 0.95 * ema + 0.05 * lv
            step += 1
            if step % args.eval_every == 0:
                vl = evaluate()
                el = time.time() - t_start
                history.append((step, round(el, 1), lv, ema, vl))
                print(f"step {step:5d} lr {lr:.2e} loss {lv:.4f} (ema {ema:.4f}) "
                      f"val {vl:.4f}  {el / 60:.1f} min", flush=True)
        train_time = time.time() - t_start
        last_loads = [(ld / ld.sum()).tolist() for ld in loads]
        final_val = evaluate()
        # final training loss: mean over 8 fresh training batches with the final weights
        model.eval()
        tg = torch.Generator().manual_seed(args.seed + 2)
        with torch.no_grad():
            tl = []
            for _ in range(8):
                x, y = batch(train_ids, args.batch, tg)
                lg = model(x).logits
                tl.append(torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), y.reshape(-1)).item())
        final_train = sum(tl) / len(tl)
        print(f"trained {step} steps ({step * args.batch * args.seq_len} tokens) in {train_time:.0f}s "
              f"({train_time / 60:.1f} min); final train loss {final_train:.4f}, val loss {final_val:.4f} "
              f"(nats/token)", flush=True)
        print("router biases:", [[round(v, 3) for v in r.e_score_correction_bias.tolist()] for r in routers])
        print("expert load fractions (last step):", [[round(v, 3) for v in ld] for ld in last_loads])
        model.config._attn_implementation = "eager"
        model.save_pretrained(str(ckpt))
        (ckpt / "train_summary.json").write_text(json.dumps(dict(
            args={k: str(v) for k, v in vars(args).items()}, steps=step, train_seconds=train_time,
            final_train_loss=final_train, final_val_loss=final_val, params=n_params, router_bias=[r.e_score_correction_bias.tolist() for r in routers], history=history), indent=1))

    # ---------------------------------------------------------------- convert
    args.out.parent.mkdir(parents=True, exist_ok=True)
    mg.convert(ckpt, args.out, args.outtype, "gpt-2", "leanmoe-tiny")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)", flush=True)

    # ---------------------------------------------------------------- reference from the GGUF
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    cfg = DeepseekV3Config.from_pretrained(str(ckpt))
    cfg._attn_implementation = "eager"
    trained = DeepseekV3ForCausalLM.from_pretrained(str(ckpt), config=cfg, dtype=torch.float32).eval()
    tens, types, kv = mg.read_gguf(args.out)
    for k in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.pre"):
        print(f"  {k} = {kv.get(k)}")
    model = DeepseekV3ForCausalLM(cfg).eval()
    model.load_state_dict(mg.gguf_to_hf(model, tens, kv["general.architecture"], cfg), strict=True)
    # the HF forward of the dequantized model, on exactly the buffers the GGUF holds
    spec = ("DeepseekV3", None, None, None, None)
    mg.VOCAB = cfg.vocab_size          # write_ref checks the row width against this
    chosen = None
    for text_p in PROMPTS:
        ids = [0] + encode(tok, text_p)
        logits, gen, gm, rm, cons = mg.reference(model, spec, ids)
        ok = cons and min(gm) > mg.GREEDY_REL_MARGIN and rm > mg.ROUTE_MARGIN
        print(f"  prompt {text_p!r}: {len(ids)} ids, min greedy margin {min(gm):.2e}, "
              f"routing margin {rm:.2e}, consistent {cons} -> {'ok' if ok else 'rejected'}", flush=True)
        if ok:
            chosen = (text_p, ids, logits, gen)
            break
    if chosen is None:
        raise RuntimeError("no prompt with clear margins")
    text_p, ids, logits, gen = chosen
    mg.write_ref(args.ref, ids, logits, gen)
    with torch.no_grad():
        o = trained(torch.tensor([ids])).logits[0].float().numpy()
    print(f"wrote {args.ref}: prompt {text_p!r}\n  ids {ids}\n  greedy {gen}\n  "
          f"-> {tok.decode(gen)!r}\n  {args.outtype} vs trained f32 weights: max rel logit diff "
          f"{np.abs(o - logits).max() / np.abs(o).max():.3e}", flush=True)

    # ---------------------------------------------------------------- samples
    torch.manual_seed(args.seed)
    prompt = [0] + encode(tok, "ROMEO:")
    inp = torch.tensor([prompt])
    with torch.no_grad():
        g1 = model.generate(inp, attention_mask=torch.ones_like(inp), max_new_tokens=200, do_sample=False,
                            eos_token_id=None, pad_token_id=1)
        g2 = model.generate(inp, attention_mask=torch.ones_like(inp), max_new_tokens=200, do_sample=True,
                            temperature=0.8, top_k=0, top_p=1.0, eos_token_id=None, pad_token_id=1)
    print("=== greedy sample (GGUF weights, prompt 'ROMEO:') ===")
    print(tok.decode(g1[0].tolist()[1:]))
    print("=== sampled, temperature 0.8, seed %d ===" % args.seed)
    print(tok.decode(g2[0].tolist()[1:]))


if __name__ == "__main__":
    main()
