/*
 * model.h - the typed weights and hyperparameters of one architecture, and
 * the forward step that runs them.
 *
 * Vocabulary used everywhere: n_embd (hidden size), n_head / n_head_kv,
 * n_expert / n_expert_used / n_expert_shared, n_ff (dense FFN width),
 * n_ff_exp (one expert's width), kv_lora_rank / q_lora_rank (MLA), n_rot
 * (rotary dims). A weight matrix is a view into the mapped file with ne[0]
 * = input columns and ne[1] = output rows; expert tensors add ne[2] = expert.
 */
#ifndef LMOE_MODEL_H
#define LMOE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "format/gguf.h"

enum lmoe_arch {
    LMOE_ARCH_LLAMA,     /* dense, and Mixtral-style MoE */
    LMOE_ARCH_QWEN2,     /* dense, q/k/v biases */
    LMOE_ARCH_QWEN3,     /* dense, per-head q/k RMS norm */
    LMOE_ARCH_QWEN3MOE,  /* qwen3 attention + softmax top-k MoE */
    LMOE_ARCH_DEEPSEEK2, /* MLA + DeepSeek MoE (V2, V2-Lite, V3, R1, Kimi-K2) */
};

/* How the rotary embedding pairs dimensions. */
enum lmoe_rope_mode {
    LMOE_ROPE_NORM = 0, /* adjacent pairs (2i, 2i+1): llama (after the
                           converter's permutation), deepseek2 */
    LMOE_ROPE_NEOX = 2, /* halves (i, i + n_rot/2): qwen families */
};

enum lmoe_gating { LMOE_GATING_SOFTMAX = 1, LMOE_GATING_SIGMOID = 2 };

/* A tensor as the model uses it: a view, never a copy. */
struct lmoe_tensor {
    const void *data; /* NULL when the tensor is absent */
    uint32_t type;    /* enum lmoe_dtype */
    int64_t ne[4];
    size_t row_bytes; /* bytes of one row of ne[0] elements */
    /* Checkpoints opened as published (format/safetensors.h); zero for
     * GGUF files. expert_data: expert e's [ne[1]][ne[0]] matrix starts at
     * expert_data[e] instead of data + e * ne[1] * row_bytes. FP8 block
     * types (quant.h): block_scale holds [ceil(ne[1]/128)][n_col_blocks]
     * scales (expert_scale[e] per expert with expert_data), and
     * scale_row0 is the first row of a row view within the scaled matrix. */
    const void *const *expert_data;
    const float *block_scale;
    const float *const *expert_scale;
    int64_t n_col_blocks;
    int64_t scale_row0;
};

/* The first byte of expert e's matrix (e = 0 for a 2-D tensor). */
static inline const uint8_t *lmoe_tensor_matrix(const struct lmoe_tensor *t, int e) {
    if (t->expert_data) return (const uint8_t *)t->expert_data[e];
    return (const uint8_t *)t->data + (size_t)e * (size_t)t->ne[1] * t->row_bytes;
}

struct lmoe_hparams {
    enum lmoe_arch arch;
    int n_layer, n_embd, n_vocab, n_ctx_train;
    int n_head, n_head_kv, head_dim_k, head_dim_v; /* plain attention */
    int n_ff;                                      /* dense FFN width */
    float rms_eps;
    /* rotary embedding */
    int n_rot;
    enum lmoe_rope_mode rope_mode;
    float rope_base;
    int rope_yarn;            /* 1: YaRN frequency blend */
    float rope_scale;         /* context scaling factor (1 = none) */
    int rope_orig_ctx;        /* context the model was trained with */
    float yarn_beta_fast, yarn_beta_slow;
    float rope_mag;           /* multiplies cos and sin (YaRN attention factor) */
    float kq_scale;           /* scale of q.k before softmax */
    /* mixture of experts */
    int n_expert, n_expert_used, n_expert_shared, n_ff_exp;
    int n_layer_dense_lead;   /* leading layers with a dense FFN */
    enum lmoe_gating gating;
    int expert_norm;          /* renormalise the selected weights to sum 1 */
    float expert_scale;       /* routed scaling factor */
    int n_group, n_group_used;/* group-limited top-k (1 group = off) */
    /* multi-head latent attention (deepseek2) */
    int q_lora_rank, kv_lora_rank, qk_nope, qk_rope, v_head_dim;
};

struct lmoe_layer {
    struct lmoe_tensor attn_norm, ffn_norm;
    /* plain attention */
    struct lmoe_tensor wq, wk, wv, wo, bq, bk, bv, q_norm, k_norm;
    /* MLA: q through a low-rank bottleneck (q_lora) or directly (wq) */
    struct lmoe_tensor wq_a, q_a_norm, wq_b;
    struct lmoe_tensor wkv_a_mqa; /* [n_embd] -> [kv_lora_rank + qk_rope] */
    struct lmoe_tensor kv_a_norm;
    struct lmoe_tensor wkv_b;     /* joined form [kv_lora] -> n_head*(nope+v) */
    struct lmoe_tensor wk_b;      /* split form: [nope] -> [kv_lora] per head */
    struct lmoe_tensor wv_b;      /* split form: [kv_lora] -> [v] per head */
    /* dense FFN */
    struct lmoe_tensor ffn_gate, ffn_up, ffn_down;
    /* MoE */
    int is_moe;
    struct lmoe_tensor gate_inp, exp_probs_b;
    struct lmoe_tensor gate_exps, up_exps, down_exps;
    struct lmoe_tensor gate_shexp, up_shexp, down_shexp;
};

struct lmoe_model {
    struct lmoe_hparams hp;
    char arch_name[32];
    struct lmoe_tensor tok_embd, output_norm, output;
    struct lmoe_layer *layers;
};

/* Reads hyperparameters and binds every tensor, checking names and shapes.
 * On failure returns a negative code with one line in err. */
int lmoe_model_load(struct lmoe_model *m, const struct gguf_file *f, char *err,
                    size_t errlen);
void lmoe_model_free(struct lmoe_model *m);

/* Parameters of the model, parameters used per token (all shared weights
 * plus n_expert_used of the routed experts), and the bytes of weights one
 * decode step reads (the same, in their stored types). */
void lmoe_model_count_params(const struct lmoe_model *m, uint64_t *total,
                             uint64_t *active, uint64_t *bytes_active);

#endif
