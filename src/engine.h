/*
 * engine.h - what lives behind the public handles (internal).
 */
#ifndef LMOE_ENGINE_H
#define LMOE_ENGINE_H

#include <pthread.h>

#include "format/gguf.h"
#include "leanmoe.h"
#include "model/model.h"
#include "model/ops.h"

struct lmoe_engine {
    struct gguf_file *gguf; /* owns the mapping every tensor points into */
    struct lmoe_model model;
    struct lmoe_compute compute;
    float *rope_freqs; /* n_rot/2 */
    char name[128];    /* general.name, for display */
    struct lmoe_tokenizer *tok; /* NULL when the file has no vocabulary */
    int chat_format;            /* enum lmoe_chat_format */
    int vocab_only;
    char tok_err[256];          /* why tok is NULL */
    /* One forward step at a time: the pool and row scratch are shared by
     * every context of the engine. */
    pthread_mutex_t step_lock;
};

/* Scratch for one micro-batch of up to n_batch tokens, sized at ctx open. */
struct lmoe_scratch {
    float *x, *xn, *attn_out, *ffn_out; /* [n_batch][n_embd] */
    float *q, *k, *v, *heads;           /* attention inputs and per-head outputs */
    float *qa, *kva, *q_abs, *lat;      /* MLA intermediates */
    float *att;                         /* n_threads * n_ctx attention weights */
    float *router;                      /* [n_batch][n_expert] */
    int *sel_ids;                       /* [n_batch][n_expert_used] */
    float *sel_w;
    int *expert_tok;                    /* token list of one expert */
    float *gather, *gate, *up, *down;   /* FFN work rows */
    float *logits;                      /* [n_batch][n_vocab] */
};

struct lmoe_ctx {
    lmoe_engine *e;
    int n_ctx, n_past, n_batch, kv_type;
    /* KV cache, one block per layer of n_ctx rows. Plain attention keeps
     * k (n_head_kv * head_dim_k) and v rows; MLA keeps the normalised latent
     * (kv_lora_rank) in k and the roped shared key (qk_rope) in v. */
    void *kv_k, *kv_v;
    int k_row, v_row; /* elements per token per layer */
    struct lmoe_scratch s;
    char err[256];
};

/* Runs T <= n_batch tokens at positions n_past.. and writes logits rows
 * (every row if all_rows, else the last) into out, if not NULL. */
int lmoe_forward(struct lmoe_ctx *c, const int32_t *tokens, int T, float *out,
                 int all_rows);

#endif
