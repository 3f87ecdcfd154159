/*
 * engine.h - what lives behind the public handles (internal).
 */
#ifndef LMOE_ENGINE_H
#define LMOE_ENGINE_H

#include <pthread.h>

#include "format/gguf.h"
#include "leanmoe.h"
#include "model/model.h"
#include "kvcache.h"
#include "model/ops.h"

/* Tokens per forward step: many, so that prompt processing reads each
 * weight (and each expert) once for hundreds of tokens; and output-head
 * rows computed at a time, so logits scratch stays small. */
#define LMOE_N_BATCH 512
#define LMOE_N_OUT 64

/* Scratch for one forward step of up to n_batch tokens, owned by the engine
 * (steps are serialised by step_lock). The tokens of a step may belong to
 * different contexts: that is how several sequences share each weight read. */
struct lmoe_scratch {
    int n_batch;                        /* token capacity */
    int n_ctx_max;                      /* attention-weight capacity per thread */
    struct lmoe_ctx **tok_ctx;          /* [n_batch] the timeline of each token */
    int *tok_pos;                       /* [n_batch] its position there */
    float *x, *xn, *attn_out, *ffn_out; /* [n_batch][n_embd] */
    float *q, *k, *v, *heads;           /* attention inputs and per-head outputs */
    float *qa, *kva, *q_abs, *lat;      /* MLA intermediates */
    float *att;                         /* n_threads * n_ctx_max attention weights */
    float *router;                      /* [n_batch][n_expert] */
    int *sel_ids;                       /* [n_batch][n_expert_used] */
    float *sel_w;
    int *expert_tok;                    /* token list of one expert */
    float *gather, *gate, *up, *down;   /* FFN work rows */
    float *logits;                      /* [LMOE_N_OUT][n_vocab] output rows */
};

struct lmoe_engine {
    struct gguf_file *gguf; /* owns the mapping every tensor points into */
    struct hf_model *hf;    /* a checkpoint folder: owns gguf and the shards */
    struct lmoe_model model;
    struct lmoe_compute compute;
    float *rope_freqs; /* n_rot/2 */
    char name[128];    /* general.name, for display */
    struct lmoe_tokenizer *tok; /* NULL when the file has no vocabulary */
    int chat_format;            /* enum lmoe_chat_format */
    const char *chat_template;  /* the model's Jinja template or NULL; borrowed from gguf or tok */
    size_t chat_template_len;
    struct lmoe_jinja *chat_jinja; /* chat_template parsed, when it renders a test conversation; or NULL */
    int vocab_only;
    char tok_err[256];          /* why tok is NULL */
    /* One forward step at a time: the pool and row scratch are shared by
     * every context of the engine. */
    pthread_mutex_t step_lock;
    struct lmoe_scratch s;
};

struct lmoe_ctx {
    lmoe_engine *e;
    int n_ctx, n_past, kv_type;
    /* KV cache (kvcache.h): k and v are the pool's parts; pages[i] holds
     * positions [i << page_shift, (i + 1) << page_shift), for i < n_pages. */
    struct lmoe_kv_pool *pool;
    struct lmoe_kv_pool *own_pool; /* the private pool, without a shared one */
    struct lmoe_kv_part k, v;
    int *pages, n_pages, page_shift, n_layer;
    char err[256];
};

/* Parses e->chat_template into e->chat_jinja if it renders a one-message
 * conversation without error (text.c); otherwise leaves it NULL, and chat
 * falls back to the hand-written format. Call once the vocabulary is open. */
void lmoe_chat_template_load(struct lmoe_engine *e);

/* Makes the step scratch fit contexts of n_ctx tokens (grows only). */
int lmoe_scratch_reserve(struct lmoe_engine *e, int n_ctx);
void lmoe_scratch_free(struct lmoe_scratch *s);

/* Runs the T <= n_batch tokens described by e->s.tok_ctx / tok_pos (their
 * KV rows are written at those positions) and writes the logits of the
 * n_out token indices out_rows[i] to out[i] (n_vocab floats each). The
 * caller advances each context's n_past. */
int lmoe_forward(struct lmoe_engine *e, const int32_t *tokens, int T, float *const *out,
                 const int *out_rows, int n_out);

#endif
