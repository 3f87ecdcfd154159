/*
 * cmd_synth.c - `leanmoe synth`: a GGUF file shaped exactly like a real MoE
 * checkpoint, filled with random weights.
 *
 *   leanmoe synth --model deepseek-v2-lite --type q4_k_m -o v2lite.gguf
 *
 * Real checkpoints cannot be downloaded here, but decode speed depends on
 * tensor shapes and types, not on values. This writes the tensor names,
 * shapes and metadata keys that llama.cpp's converter writes for the named
 * model, the per-tensor type mix llama-quantize picks for the named type,
 * and a synthetic SentencePiece vocabulary of the model's size, so llama.cpp
 * and leanmoe both load the file and can be timed on it.
 *
 * Values: quantized blocks get random codes and a fixed scale chosen so the
 * dequantized weights have a standard deviation near 0.02 (what trained
 * projection weights have); norm weights are near 1, the F32 router near
 * 0.02, the routing bias near 0. Nothing is quantized from floats: bytes
 * come from a counter-based generator (splitmix64 of the position), 8 bytes
 * per call, so making a 10 GB file costs less than writing it, and the
 * bytes depend only on the seed, the tensor's name and the position.
 *
 * This command reaches below leanmoe.h, to the GGUF writer and the block
 * layouts: it is a file tool, not an engine client.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "format/gguf_write.h"
#include "quant/quant.h"

/* Standard deviation of the synthetic projection weights. */
#define SYNTH_WEIGHT_STD 0.02f
/* Half-width of a uniform distribution with that standard deviation. */
#define SYNTH_WEIGHT_HALF (SYNTH_WEIGHT_STD * 1.7320508f)
/* Norm weights: uniform in 1 +- this. */
#define SYNTH_NORM_HALF 0.1f
/* Routing bias (exp_probs_b): uniform in +- this. */
#define SYNTH_BIAS_HALF 0.01f
/* Default seed, so two runs write the same file. */
#define SYNTH_DEFAULT_SEED 1

/* ---- Model shapes (from the published config.json files) ---- */

enum synth_arch { ARCH_DEEPSEEK2, ARCH_QWEN3MOE };

struct synth_model {
    const char *cli_name, *general_name;
    enum synth_arch arch;
    int n_layer, n_layer_default; /* published depth; what --layers defaults to */
    int n_embd, n_ff, n_ff_exp, n_head, n_head_kv, n_vocab, n_ctx;
    int n_expert, n_expert_used, n_expert_shared, n_dense_lead;
    int n_group, n_group_used, gating_func; /* gating: 1 softmax, 2 sigmoid */
    int q_lora, kv_lora, qk_nope, qk_rope, v_head; /* deepseek2 MLA */
    int head_dim;                                   /* qwen3moe */
    float rope_theta, rms_eps;
    float yarn_factor, yarn_beta_fast, yarn_beta_slow, yarn_log_mul; /* 0: no YaRN */
    int yarn_orig_ctx;
    float expert_weights_scale; /* 0: key not written */
    int expert_weights_norm;    /* 1: key written as true */
    int has_exp_probs_b;
};

static const struct synth_model MODELS[] = {
    /* deepseek-ai/DeepSeek-V2-Lite: 15.7B total, 2.4B active. MLA without
     * query compression; softmax over 64 routed experts, greedy top-6. */
    {.cli_name = "deepseek-v2-lite", .general_name = "DeepSeek V2 Lite", .arch = ARCH_DEEPSEEK2,
     .n_layer = 27, .n_layer_default = 27, .n_embd = 2048, .n_ff = 10944, .n_ff_exp = 1408,
     .n_head = 16, .n_head_kv = 1, .n_vocab = 102400, .n_ctx = 163840,
     .n_expert = 64, .n_expert_used = 6, .n_expert_shared = 2, .n_dense_lead = 1,
     .n_group = 1, .n_group_used = 1, .gating_func = 1,
     .q_lora = 0, .kv_lora = 512, .qk_nope = 128, .qk_rope = 64, .v_head = 128,
     .rope_theta = 10000.0f, .rms_eps = 1e-6f,
     .yarn_factor = 40.0f, .yarn_beta_fast = 32.0f, .yarn_beta_slow = 1.0f,
     .yarn_log_mul = 0.0707f, .yarn_orig_ctx = 4096,
     .expert_weights_scale = 1.0f, .expert_weights_norm = 0, .has_exp_probs_b = 0},
    /* Qwen/Qwen3-30B-A3B: 30.5B total, 3.3B active. GQA 32/4 with q/k
     * norm; softmax top-8 of 128 experts, renormalised (implied by the
     * architecture, no key). */
    {.cli_name = "qwen3-30b-a3b", .general_name = "Qwen3 30B A3B", .arch = ARCH_QWEN3MOE,
     .n_layer = 48, .n_layer_default = 48, .n_embd = 2048, .n_ff = 6144, .n_ff_exp = 768,
     .n_head = 32, .n_head_kv = 4, .n_vocab = 151936, .n_ctx = 40960,
     .n_expert = 128, .n_expert_used = 8, .head_dim = 128,
     .rope_theta = 1000000.0f, .rms_eps = 1e-6f},
    /* deepseek-ai/DeepSeek-V3 (and R1) per-layer shapes; 61 layers
     * published, 5 by default so the file fits in memory. Sigmoid scores
     * plus a bias, 8 groups of 32 experts, top-4 groups, top-8 experts. */
    {.cli_name = "deepseek-v3", .general_name = "DeepSeek V3", .arch = ARCH_DEEPSEEK2,
     .n_layer = 61, .n_layer_default = 5, .n_embd = 7168, .n_ff = 18432, .n_ff_exp = 2048,
     .n_head = 128, .n_head_kv = 1, .n_vocab = 129280, .n_ctx = 163840,
     .n_expert = 256, .n_expert_used = 8, .n_expert_shared = 1, .n_dense_lead = 3,
     .n_group = 8, .n_group_used = 4, .gating_func = 2,
     .q_lora = 1536, .kv_lora = 512, .qk_nope = 128, .qk_rope = 64, .v_head = 128,
     .rope_theta = 10000.0f, .rms_eps = 1e-6f,
     .yarn_factor = 40.0f, .yarn_beta_fast = 32.0f, .yarn_beta_slow = 1.0f,
     .yarn_log_mul = 0.1f, .yarn_orig_ctx = 4096,
     .expert_weights_scale = 2.5f, .expert_weights_norm = 1, .has_exp_probs_b = 1},
};

/* ---- Output types: llama.cpp's file types and their default tensor type ---- */

struct synth_ftype {
    const char *cli_name;
    uint32_t file_type; /* general.file_type (enum llama_ftype) */
    uint32_t base;      /* type of a quantizable tensor before the rules */
};

static const struct synth_ftype FTYPES[] = {
    {"f32", 0, LMOE_DTYPE_F32},   {"f16", 1, LMOE_DTYPE_F16},   {"q4_0", 2, LMOE_DTYPE_Q4_0},
    {"q8_0", 7, LMOE_DTYPE_Q8_0}, {"q4_k_m", 15, LMOE_DTYPE_Q4_K}, {"bf16", 32, LMOE_DTYPE_BF16},
};
#define FTYPE_Q4_K_M 15

/* ---- The tensor plan ---- */

enum synth_init { INIT_WEIGHT, INIT_NORM, INIT_BIAS };

struct synth_tensor {
    char name[64];
    int n_dims, layer; /* layer -1: not in a block */
    int64_t ne[3];
    enum synth_init init;
    uint32_t type;
    uint64_t key; /* generator key: seed and name */
};

struct synth_plan {
    const struct synth_model *m;
    const struct synth_ftype *ft;
    int n_layer;
    struct synth_tensor *t;
    int n, cap;
    uint64_t seed;
    /* Float types draw 16 random bits per element through these tables. */
    uint16_t f16_tab[65536], bf16_tab[65536];
    uint64_t done, total; /* bytes filled, for progress */
    int last_pct, progress; /* progress: stderr is a terminal */
};

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t name_hash(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

static int add(struct synth_plan *p, enum synth_init init, int layer, int n_dims, int64_t ne0, int64_t ne1,
               int64_t ne2, const char *fmt_name) {
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 256;
        struct synth_tensor *t = realloc(p->t, (size_t)cap * sizeof(*t));
        if (!t) return -1;
        p->t = t;
        p->cap = cap;
    }
    struct synth_tensor *t = &p->t[p->n++];
    memset(t, 0, sizeof *t);
    if (layer >= 0) snprintf(t->name, sizeof t->name, "blk.%d.%s", layer, fmt_name);
    else snprintf(t->name, sizeof t->name, "%s", fmt_name);
    t->layer = layer;
    t->n_dims = n_dims;
    t->ne[0] = ne0, t->ne[1] = ne1, t->ne[2] = ne2;
    t->init = init;
    t->key = splitmix64(p->seed ^ name_hash(t->name));
    return 0;
}

/* The tensors of one block, as llama.cpp's loader creates them. */
static int plan_layer(struct synth_plan *p, int il) {
    const struct synth_model *m = p->m;
    const int64_t E = m->n_embd;
    int rc = 0;
    rc |= add(p, INIT_NORM, il, 1, E, 1, 1, "attn_norm.weight");
    rc |= add(p, INIT_NORM, il, 1, E, 1, 1, "ffn_norm.weight");
    if (m->arch == ARCH_DEEPSEEK2) {
        const int64_t H = m->n_head, qk = m->qk_nope + m->qk_rope;
        if (m->q_lora > 0) {
            rc |= add(p, INIT_NORM, il, 1, m->q_lora, 1, 1, "attn_q_a_norm.weight");
            rc |= add(p, INIT_WEIGHT, il, 2, E, m->q_lora, 1, "attn_q_a.weight");
            rc |= add(p, INIT_WEIGHT, il, 2, m->q_lora, H * qk, 1, "attn_q_b.weight");
        } else {
            rc |= add(p, INIT_WEIGHT, il, 2, E, H * qk, 1, "attn_q.weight");
        }
        rc |= add(p, INIT_NORM, il, 1, m->kv_lora, 1, 1, "attn_kv_a_norm.weight");
        rc |= add(p, INIT_WEIGHT, il, 2, E, m->kv_lora + m->qk_rope, 1, "attn_kv_a_mqa.weight");
        rc |= add(p, INIT_WEIGHT, il, 3, m->qk_nope, m->kv_lora, H, "attn_k_b.weight");
        rc |= add(p, INIT_WEIGHT, il, 3, m->kv_lora, m->v_head, H, "attn_v_b.weight");
        rc |= add(p, INIT_WEIGHT, il, 2, H * m->v_head, E, 1, "attn_output.weight");
    } else {
        const int64_t D = m->head_dim;
        rc |= add(p, INIT_NORM, il, 1, D, 1, 1, "attn_q_norm.weight");
        rc |= add(p, INIT_NORM, il, 1, D, 1, 1, "attn_k_norm.weight");
        rc |= add(p, INIT_WEIGHT, il, 2, E, m->n_head * D, 1, "attn_q.weight");
        rc |= add(p, INIT_WEIGHT, il, 2, E, m->n_head_kv * D, 1, "attn_k.weight");
        rc |= add(p, INIT_WEIGHT, il, 2, E, m->n_head_kv * D, 1, "attn_v.weight");
        rc |= add(p, INIT_WEIGHT, il, 2, m->n_head * D, E, 1, "attn_output.weight");
    }
    if (il < m->n_dense_lead) {
        rc |= add(p, INIT_WEIGHT, il, 2, E, m->n_ff, 1, "ffn_gate.weight");
        rc |= add(p, INIT_WEIGHT, il, 2, E, m->n_ff, 1, "ffn_up.weight");
        rc |= add(p, INIT_WEIGHT, il, 2, m->n_ff, E, 1, "ffn_down.weight");
        return rc;
    }
    const int64_t X = m->n_expert, F = m->n_ff_exp;
    rc |= add(p, INIT_WEIGHT, il, 2, E, X, 1, "ffn_gate_inp.weight");
    if (m->has_exp_probs_b) rc |= add(p, INIT_BIAS, il, 1, X, 1, 1, "exp_probs_b.bias");
    rc |= add(p, INIT_WEIGHT, il, 3, E, F, X, "ffn_gate_exps.weight");
    rc |= add(p, INIT_WEIGHT, il, 3, E, F, X, "ffn_up_exps.weight");
    rc |= add(p, INIT_WEIGHT, il, 3, F, E, X, "ffn_down_exps.weight");
    if (m->n_expert_shared > 0) {
        const int64_t S = F * m->n_expert_shared;
        rc |= add(p, INIT_WEIGHT, il, 2, E, S, 1, "ffn_gate_shexp.weight");
        rc |= add(p, INIT_WEIGHT, il, 2, E, S, 1, "ffn_up_shexp.weight");
        rc |= add(p, INIT_WEIGHT, il, 2, S, E, 1, "ffn_down_shexp.weight");
    }
    return rc;
}

/* llama-quantize's file order: tensors outside blocks first, then block by
 * block in numeric order, by name within each (its weight_name_comparer). */
static int cmp_tensor(const void *x, const void *y) {
    const struct synth_tensor *a = x, *b = y;
    if (a->layer != b->layer) return a->layer < b->layer ? -1 : 1;
    return strcmp(a->name, b->name);
}

/* ---- Per-tensor types: llama-quantize's rules for these architectures ---- */

/* Which tensors llama-quantize (and the converter) keep in F32: 1-D ones,
 * norms, the expert router, and names not ending in "weight". */
static int quantizable(const struct synth_tensor *t) {
    size_t n = strlen(t->name);
    return t->n_dims >= 2 && n >= 6 && !strcmp(t->name + n - 6, "weight") && !strstr(t->name, "_norm.weight") &&
           !strstr(t->name, "ffn_gate_inp.weight");
}

/* llama-quantize's use_more_bits: the first and last eighth of the layers
 * and every third layer in between get more bits. */
static int use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

static int block_of(uint32_t type) { return lmoe_dtype_get(type)->block_size; }

/* A row length the chosen type cannot hold falls back, as in llama-quantize's
 * tensor_type_fallback: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K
 * -> Q4_0, and to F16 when even the 32-block type does not fit. */
static uint32_t fallback(uint32_t type, int64_t ne0) {
    if (ne0 % block_of(type) == 0) return type;
    switch (type) {
    case LMOE_DTYPE_Q4_K: type = LMOE_DTYPE_Q5_0; break;
    case LMOE_DTYPE_Q5_K: type = LMOE_DTYPE_Q5_1; break;
    case LMOE_DTYPE_Q6_K: type = LMOE_DTYPE_Q8_0; break;
    case LMOE_DTYPE_Q2_K: case LMOE_DTYPE_Q3_K: type = LMOE_DTYPE_Q4_0; break;
    default: break;
    }
    return ne0 % block_of(type) == 0 ? type : LMOE_DTYPE_F16;
}

/* The type llama-quantize gives tensor t for this file type. Only the
 * rules that can fire for Q4_0, Q8_0 and Q4_K_M on deepseek2 and qwen3moe
 * are here (none of the 8-expert or Falcon special cases). *i_attn_v counts
 * attn_v tensors in file order, as llama-quantize's i_attention_wv. */
static uint32_t pick_type(const struct synth_plan *p, const struct synth_tensor *t, int *i_attn_v, int n_attn_v) {
    if (!quantizable(t)) return LMOE_DTYPE_F32;
    uint32_t type = p->ft->base;
    if (block_of(type) == 1) return type; /* F32, F16, BF16: the converter's type, no rules */
    int q4km = p->ft->file_type == FTYPE_Q4_K_M;
    if (!strcmp(t->name, "output.weight")) {
        /* Q6_K unless the type is Q8_0 already, Q8_0 if rows don't fit. */
        if (t->ne[0] % block_of(type)) type = LMOE_DTYPE_Q8_0;
        else if (type != LMOE_DTYPE_Q8_0) type = LMOE_DTYPE_Q6_K;
    } else if (strstr(t->name, "attn_v.weight")) {
        if (q4km && use_more_bits(*i_attn_v, n_attn_v)) type = LMOE_DTYPE_Q6_K;
        ++*i_attn_v;
    } else if (strstr(t->name, "ffn_down") && t->layer >= 0) {
        /* Experts, shared experts and dense FFN alike, by block index. */
        if (q4km && use_more_bits(t->layer, p->n_layer)) type = LMOE_DTYPE_Q6_K;
    }
    return fallback(type, t->ne[0]);
}

static int plan_build(struct synth_plan *p) {
    const struct synth_model *m = p->m;
    int rc = add(p, INIT_WEIGHT, -1, 2, m->n_embd, m->n_vocab, 1, "token_embd.weight");
    rc |= add(p, INIT_NORM, -1, 1, m->n_embd, 1, 1, "output_norm.weight");
    rc |= add(p, INIT_WEIGHT, -1, 2, m->n_embd, m->n_vocab, 1, "output.weight");
    for (int il = 0; il < p->n_layer && !rc; il++) rc |= plan_layer(p, il);
    if (rc) return -1;
    qsort(p->t, (size_t)p->n, sizeof *p->t, cmp_tensor);
    int n_attn_v = 0, i_attn_v = 0;
    for (int i = 0; i < p->n; i++) n_attn_v += strstr(p->t[i].name, "attn_v.weight") != NULL;
    for (int i = 0; i < p->n; i++) p->t[i].type = pick_type(p, &p->t[i], &i_attn_v, n_attn_v);
    return 0;
}

/* ---- Filling: random codes, fixed scales ---- */

/* Random bytes of a tensor at byte positions [off, off + n): word j of the
 * tensor is splitmix64(key + j), so any range can be made on its own. */
static void rand_bytes(uint64_t key, uint64_t off, uint8_t *d, size_t n) {
    uint64_t j = off >> 3;
    unsigned skip = (unsigned)(off & 7);
    if (skip) {
        uint64_t r = splitmix64(key + j++);
        size_t k = 8 - skip < n ? 8 - skip : n;
        memcpy(d, (uint8_t *)&r + skip, k);
        d += k, n -= k;
    }
    for (; n >= 8; d += 8, n -= 8) {
        uint64_t r = splitmix64(key + j++);
        memcpy(d, &r, 8);
    }
    if (n) {
        uint64_t r = splitmix64(key + j);
        memcpy(d, &r, n);
    }
}

/* Scales that give dequantized weights a standard deviation of
 * SYNTH_WEIGHT_STD when the codes are uniform: the root mean square of the
 * centred codes is 4.64 for 4 bits (q - 8), 9.26 for 5 bits, 73.6 for
 * signed bytes, 4.61 for Q4_K's (q - 7.5) and 18.5 for 6 bits (q - 32). */
#define Q4_0_D (SYNTH_WEIGHT_STD / 4.64f)
#define Q5_0_D (SYNTH_WEIGHT_STD / 9.26f)
#define Q8_0_D (SYNTH_WEIGHT_STD / 73.6f)
#define Q4_K_A (SYNTH_WEIGHT_STD / 4.61f) /* = d * 63 */
#define Q6_K_SCALE 16
#define Q6_K_D (SYNTH_WEIGHT_STD / (18.5f * Q6_K_SCALE))

static void set_f16(uint8_t *p, float v) {
    lmoe_f16 h = lmoe_f32_to_f16(v);
    memcpy(p, &h, 2);
}

/* Overwrites the scale fields of each block of random codes. */
static int fix_blocks(uint32_t type, uint8_t *d, size_t n) {
    size_t bs = (size_t)lmoe_dtype_get(type)->type_size;
    for (uint8_t *b = d; b < d + n; b += bs) {
        switch (type) {
        case LMOE_DTYPE_Q4_0: set_f16(b, Q4_0_D); break;
        case LMOE_DTYPE_Q5_0: set_f16(b, Q5_0_D); break;
        case LMOE_DTYPE_Q8_0: set_f16(b, Q8_0_D); break;
        case LMOE_DTYPE_Q4_K:
            /* All 6-bit scales and mins 63 (every packed byte 0xff), so a
             * weight is d*63*q - dmin*63 = A * (q - 7.5). */
            set_f16(b, Q4_K_A / 63.0f);
            set_f16(b + 2, Q4_K_A * 7.5f / 63.0f);
            memset(b + 4, 0xff, 12);
            break;
        case LMOE_DTYPE_Q6_K:
            memset(b + 192, Q6_K_SCALE, 16);
            set_f16(b + 208, Q6_K_D);
            break;
        default: return LMOE_ERR_UNSUPPORTED;
        }
    }
    return 0;
}

/* Float elements: uniform in center +- half, from 16 random bits each. */
static void fill_f32(uint64_t key, uint64_t off, float *d, size_t n, float center, float half) {
    uint16_t r[2048];
    for (size_t i = 0; i < n; i += 2048) {
        size_t k = n - i < 2048 ? n - i : 2048;
        rand_bytes(key, off / 2 + i * 2, (uint8_t *)r, k * 2);
        for (size_t j = 0; j < k; j++) d[i + j] = center + half * ((r[j] + 0.5f) / 32768.0f - 1.0f);
    }
}

static int fill(void *ctx, int64_t i, void *dst, uint64_t off, size_t n) {
    struct synth_plan *p = ctx;
    const struct synth_tensor *t = &p->t[i];
    if (t->type == LMOE_DTYPE_F32) {
        float center = t->init == INIT_NORM ? 1.0f : 0.0f;
        float half = t->init == INIT_NORM ? SYNTH_NORM_HALF : t->init == INIT_BIAS ? SYNTH_BIAS_HALF : SYNTH_WEIGHT_HALF;
        fill_f32(t->key, off, dst, n / 4, center, half);
    } else if (t->type == LMOE_DTYPE_F16 || t->type == LMOE_DTYPE_BF16) {
        const uint16_t *tab = t->type == LMOE_DTYPE_F16 ? p->f16_tab : p->bf16_tab;
        uint16_t *h = dst;
        rand_bytes(t->key, off, dst, n);
        for (size_t j = 0; j < n / 2; j++) h[j] = tab[h[j]];
    } else {
        rand_bytes(t->key, off, dst, n);
        int rc = fix_blocks(t->type, dst, n);
        if (rc) return rc;
    }
    p->done += n;
    int pct = p->total ? (int)(p->done * 100 / p->total) : 100;
    if (p->progress && pct != p->last_pct) {
        fprintf(stderr, "\rleanmoe: synth %3d%%", pct);
        fflush(stderr);
        p->last_pct = pct;
    }
    return 0;
}

/* ---- Metadata ---- */

/* gguf-py's weight-count notation: "1.5B", "16B", "236M". */
static void count_notation(char *buf, size_t n, double count) {
    const char *suffix = "K";
    double s = count * 1e-3;
    if (count > 1e12) suffix = "T", s = count * 1e-12;
    else if (count > 1e9) suffix = "B", s = count * 1e-9;
    else if (count > 1e6) suffix = "M", s = count * 1e-6;
    long r = (long)(s + 0.5);
    int digits = r >= 100 ? 3 : r >= 10 ? 2 : r >= 1 ? 1 : 0;
    int fix = digits < 2 ? 2 - digits : 0;
    snprintf(buf, n, "%.*f%s", fix, s, suffix);
}

static uint64_t n_elements(const struct synth_tensor *t) { return (uint64_t)t->ne[0] * t->ne[1] * t->ne[2]; }

/* A SentencePiece ("llama") vocabulary of exactly n_vocab pieces: <unk>,
 * <s>, </s>, the 256 byte pieces <0x00>..<0xFF> (type 6), the printable
 * ASCII characters, "▁", then "▁a", "▁b", ... "▁aa", ... as filler, with
 * falling scores so longer pieces are not preferred blindly. */
static int write_vocab(struct gguf_writer *w, int n_vocab) {
    char **tok = calloc((size_t)n_vocab, sizeof *tok);
    float *score = calloc((size_t)n_vocab, sizeof *score);
    int32_t *type = calloc((size_t)n_vocab, sizeof *type);
    char *text = malloc((size_t)n_vocab * 16);
    int rc = LMOE_ERR_NOMEM;
    if (!tok || !score || !type || !text) goto out;
    for (int i = 0; i < n_vocab; i++) {
        char *s = text + (size_t)i * 16;
        tok[i] = s;
        type[i] = 1; /* normal */
        score[i] = 0.0f;
        if (i == 0) strcpy(s, "<unk>"), type[i] = 2;
        else if (i == 1) strcpy(s, "<s>"), type[i] = 3;
        else if (i == 2) strcpy(s, "</s>"), type[i] = 3;
        else if (i < 3 + 256) snprintf(s, 16, "<0x%02X>", i - 3), type[i] = 6;
        else {
            int k = i - 259;
            score[i] = -(float)k;
            if (k < 94) {
                s[0] = (char)('!' + k), s[1] = 0;
            } else if (k == 94) {
                strcpy(s, "\xe2\x96\x81");
            } else {
                /* Bijective base 26 of k - 94: a..z, aa..zz, aaa... */
                char word[12];
                int len = 0;
                for (long x = k - 94; x > 0; x = (x - 1) / 26) word[len++] = (char)('a' + (x - 1) % 26);
                strcpy(s, "\xe2\x96\x81");
                for (int j = 0; j < len; j++) s[3 + j] = word[len - 1 - j];
                s[3 + len] = 0;
            }
        }
    }
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_set_str(w, "tokenizer.ggml.pre", "default");
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tok, (uint64_t)n_vocab);
    gguf_writer_set_arr_num(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, score, (uint64_t)n_vocab);
    gguf_writer_set_arr_num(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, type, (uint64_t)n_vocab);
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 1);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", 0);
    rc = gguf_writer_status(w);
out:
    free(tok);
    free(score);
    free(type);
    free(text);
    return rc;
}

/* The keys llama.cpp's converter writes, in its order. */
static void write_metadata(struct gguf_writer *w, const struct synth_plan *p, const char *size_label) {
    const struct synth_model *m = p->m;
    const char *a = m->arch == ARCH_DEEPSEEK2 ? "deepseek2" : "qwen3moe";
    char k[128];
#define KEY(s) (snprintf(k, sizeof k, "%s." s, a), k)
    gguf_writer_set_str(w, "general.architecture", a);
    gguf_writer_set_str(w, "general.type", "model");
    gguf_writer_set_str(w, "general.name", m->general_name);
    gguf_writer_set_str(w, "general.size_label", size_label);
    gguf_writer_set_u32(w, KEY("block_count"), (uint32_t)p->n_layer);
    gguf_writer_set_u32(w, KEY("context_length"), (uint32_t)m->n_ctx);
    gguf_writer_set_u32(w, KEY("embedding_length"), (uint32_t)m->n_embd);
    gguf_writer_set_u32(w, KEY("feed_forward_length"), (uint32_t)m->n_ff);
    gguf_writer_set_u32(w, KEY("attention.head_count"), (uint32_t)m->n_head);
    gguf_writer_set_u32(w, KEY("attention.head_count_kv"), (uint32_t)m->n_head_kv);
    if (m->yarn_factor > 0) {
        gguf_writer_set_str(w, KEY("rope.scaling.type"), "yarn");
        gguf_writer_set_f32(w, KEY("rope.scaling.factor"), m->yarn_factor);
        gguf_writer_set_u32(w, KEY("rope.scaling.original_context_length"), (uint32_t)m->yarn_orig_ctx);
        gguf_writer_set_f32(w, KEY("rope.scaling.yarn_beta_fast"), m->yarn_beta_fast);
        gguf_writer_set_f32(w, KEY("rope.scaling.yarn_beta_slow"), m->yarn_beta_slow);
    }
    gguf_writer_set_f32(w, KEY("rope.freq_base"), m->rope_theta);
    gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), m->rms_eps);
    gguf_writer_set_u32(w, KEY("expert_count"), (uint32_t)m->n_expert);
    gguf_writer_set_u32(w, KEY("expert_used_count"), (uint32_t)m->n_expert_used);
    if (m->arch == ARCH_DEEPSEEK2) {
        gguf_writer_set_u32(w, KEY("expert_group_count"), (uint32_t)m->n_group);
        gguf_writer_set_u32(w, KEY("expert_group_used_count"), (uint32_t)m->n_group_used);
        gguf_writer_set_u32(w, KEY("expert_gating_func"), (uint32_t)m->gating_func);
        /* MLA is stored as MQA over the latent: one kv head whose key is
         * the latent plus the rope part and whose value is the latent. */
        gguf_writer_set_u32(w, KEY("attention.key_length"), (uint32_t)(m->kv_lora + m->qk_rope));
        gguf_writer_set_u32(w, KEY("attention.value_length"), (uint32_t)m->kv_lora);
    } else {
        gguf_writer_set_u32(w, KEY("attention.key_length"), (uint32_t)m->head_dim);
        gguf_writer_set_u32(w, KEY("attention.value_length"), (uint32_t)m->head_dim);
    }
    gguf_writer_set_u32(w, "general.file_type", p->ft->file_type);
    if (m->arch == ARCH_DEEPSEEK2) {
        gguf_writer_set_u32(w, KEY("leading_dense_block_count"), (uint32_t)m->n_dense_lead);
        gguf_writer_set_u32(w, KEY("vocab_size"), (uint32_t)m->n_vocab);
        /* The converter writes no q_lora_rank for V2-Lite; llama.cpp then
         * recognises it by its 26 or 27 layers. At any other depth an
         * explicit 0 ("no query compression") keeps the file loadable. */
        if (m->q_lora > 0) gguf_writer_set_u32(w, KEY("attention.q_lora_rank"), (uint32_t)m->q_lora);
        else if (p->n_layer != 26 && p->n_layer != 27) gguf_writer_set_u32(w, KEY("attention.q_lora_rank"), 0);
        gguf_writer_set_u32(w, KEY("attention.kv_lora_rank"), (uint32_t)m->kv_lora);
        gguf_writer_set_u32(w, KEY("attention.key_length_mla"), (uint32_t)(m->qk_nope + m->qk_rope));
        gguf_writer_set_u32(w, KEY("attention.value_length_mla"), (uint32_t)m->v_head);
        gguf_writer_set_u32(w, KEY("expert_feed_forward_length"), (uint32_t)m->n_ff_exp);
        gguf_writer_set_u32(w, KEY("expert_shared_count"), (uint32_t)m->n_expert_shared);
        if (m->expert_weights_scale > 0) gguf_writer_set_f32(w, KEY("expert_weights_scale"), m->expert_weights_scale);
        if (m->expert_weights_norm) gguf_writer_set_bool(w, KEY("expert_weights_norm"), 1);
        gguf_writer_set_u32(w, KEY("rope.dimension_count"), (uint32_t)m->qk_rope);
        if (m->yarn_log_mul > 0) gguf_writer_set_f32(w, KEY("rope.scaling.yarn_log_multiplier"), m->yarn_log_mul);
    } else {
        gguf_writer_set_u32(w, KEY("expert_feed_forward_length"), (uint32_t)m->n_ff_exp);
    }
    gguf_writer_set_u32(w, "general.quantization_version", 2);
#undef KEY
}

/* ---- The command ---- */

static void print_types(const struct synth_plan *p) {
    /* One line per tensor role (the name without its block), listing the
     * types it takes and in how many blocks. */
    char seen[64][64];
    int n_seen = 0;
    for (int i = 0; i < p->n; i++) {
        const char *role = p->t[i].layer >= 0 ? strchr(p->t[i].name + 4, '.') + 1 : p->t[i].name;
        int dup = 0;
        for (int s = 0; s < n_seen && !dup; s++) dup = !strcmp(seen[s], role);
        if (dup || n_seen == 64) continue;
        snprintf(seen[n_seen++], sizeof seen[0], "%s", role);
        printf("  %-26s", role);
        uint32_t types[8];
        int counts[8], nt = 0;
        for (int j = i; j < p->n; j++) {
            const char *r = p->t[j].layer >= 0 ? strchr(p->t[j].name + 4, '.') + 1 : p->t[j].name;
            if (strcmp(r, role)) continue;
            int k = 0;
            while (k < nt && types[k] != p->t[j].type) k++;
            if (k == nt && nt < 8) types[nt] = p->t[j].type, counts[nt++] = 0;
            if (k < nt) counts[k]++;
        }
        for (int k = 0; k < nt; k++) printf(" %s x%d", lmoe_dtype_get(types[k])->name, counts[k]);
        printf("\n");
    }
}

int cmd_synth(const struct args *a) {
    const struct synth_model *m = NULL;
    const struct synth_ftype *ft = NULL;
    for (size_t i = 0; a->model && i < sizeof MODELS / sizeof MODELS[0]; i++)
        if (!strcmp(a->model, MODELS[i].cli_name)) m = &MODELS[i];
    for (size_t i = 0; a->synth_type && i < sizeof FTYPES / sizeof FTYPES[0]; i++)
        if (!strcmp(a->synth_type, FTYPES[i].cli_name)) ft = &FTYPES[i];
    if (!m) {
        fprintf(stderr, "leanmoe: synth needs --model deepseek-v2-lite, qwen3-30b-a3b or deepseek-v3\n");
        return 1;
    }
    if (!ft) {
        fprintf(stderr, "leanmoe: synth needs --type q8_0, q4_0, q4_k_m, bf16, f16 or f32\n");
        return 1;
    }
    if (!a->out) {
        fprintf(stderr, "leanmoe: synth needs -o FILE\n");
        return 1;
    }
    struct synth_plan *p = calloc(1, sizeof *p);
    if (!p) {
        fprintf(stderr, "leanmoe: out of memory\n");
        return 1;
    }
    p->m = m;
    p->ft = ft;
    p->n_layer = a->synth_layers > 0 ? a->synth_layers : m->n_layer_default;
    p->seed = a->seed_set ? a->sampling.seed : SYNTH_DEFAULT_SEED;
    for (int i = 0; i < 65536; i++) {
        float v = SYNTH_WEIGHT_HALF * ((i + 0.5f) / 32768.0f - 1.0f);
        p->f16_tab[i] = lmoe_f32_to_f16(v);
        p->bf16_tab[i] = lmoe_f32_to_bf16(v);
    }
    /* A model shallower than its dense lead is all dense. */
    struct synth_model shallow = *m;
    if (shallow.n_dense_lead > p->n_layer) shallow.n_dense_lead = p->n_layer;
    p->m = &shallow;
    int ret = 1;
    struct gguf_writer *w = NULL;
    if (plan_build(p) || gguf_writer_open(&w)) {
        fprintf(stderr, "leanmoe: out of memory\n");
        goto out;
    }

    /* Parameters: total, in routed experts, and active per token. */
    double total = 0, routed = 0;
    for (int i = 0; i < p->n; i++) {
        total += (double)n_elements(&p->t[i]);
        if (strstr(p->t[i].name, "_exps.")) routed += (double)n_elements(&p->t[i]);
    }
    double active = total - routed + (m->n_expert ? routed * m->n_expert_used / m->n_expert : 0);
    char label[32], tot_s[16];
    count_notation(tot_s, sizeof tot_s, total - routed + (m->n_expert ? routed / m->n_expert : 0));
    snprintf(label, sizeof label, "%dx%s", m->n_expert, tot_s);

    write_metadata(w, p, label);
    if (write_vocab(w, m->n_vocab)) {
        fprintf(stderr, "leanmoe: %s\n", gguf_writer_status(w) ? gguf_writer_error(w) : "out of memory");
        goto out;
    }
    for (int i = 0; i < p->n; i++) {
        const struct synth_tensor *t = &p->t[i];
        gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, NULL);
    }
    uint64_t size = gguf_writer_file_size(w);
    if (!size) {
        fprintf(stderr, "leanmoe: %s\n", gguf_writer_error(w));
        goto out;
    }
    p->total = size;
    p->progress = isatty(2);
    /* Published active counts leave out the embedding table (a lookup). */
    double embd = (double)m->n_embd * m->n_vocab;
    printf("synth %s (%s, %d layers) as %s: %d tensors, %.2fB parameters, %.2fB active per token "
           "(%.2fB without the embedding table), %.2f GB\n",
           m->cli_name, m->arch == ARCH_DEEPSEEK2 ? "deepseek2" : "qwen3moe", p->n_layer, ft->cli_name, p->n,
           total / 1e9, active / 1e9, (active - embd) / 1e9, (double)size / 1e9);
    print_types(p);
    fflush(stdout);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (gguf_writer_write(w, a->out, fill, p)) {
        fprintf(stderr, "\nleanmoe: %s\n", gguf_writer_error(w));
        goto out;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (p->progress) fprintf(stderr, "\r                     \r");
    printf("wrote %s: %.2f GB in %.1f s (%.0f MB/s)\n", a->out, (double)size / 1e9, secs,
           secs > 0 ? (double)size / 1e6 / secs : 0.0);
    ret = 0;
out:
    gguf_writer_close(w);
    free(p->t);
    free(p);
    return ret;
}
