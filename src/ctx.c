/*
 * ctx.c - lmoe_ctx: one token timeline with its KV cache and scratch.
 *
 * Everything a step needs is allocated here, at open, for micro-batches of
 * up to n_batch tokens; longer prompts run as several micro-batches. A step
 * allocates nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "error.h"

/* Prompt tokens per forward step: bounds scratch memory while letting each
 * decoded weight row serve many tokens. */
#define LMOE_N_BATCH 64

static int max3(int a, int b, int c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

static int alloc_scratch(struct lmoe_ctx *c) {
    const struct lmoe_hparams *hp = &c->e->model.hp;
    size_t B = (size_t)c->n_batch, E = (size_t)hp->n_embd;
    int nh = hp->n_head, mla = hp->arch == LMOE_ARCH_DEEPSEEK2;
    size_t q_w = (size_t)nh * (mla ? hp->qk_nope + hp->qk_rope : hp->head_dim_k);
    size_t kv_w = (size_t)hp->n_head_kv * (size_t)(hp->head_dim_k > hp->head_dim_v ? hp->head_dim_k : hp->head_dim_v);
    size_t heads_w = (size_t)nh * (size_t)hp->head_dim_v;
    size_t lat_w = (size_t)nh * (size_t)hp->kv_lora_rank;
    int n_ff = max3(hp->n_ff, hp->n_ff_exp, hp->n_ff_exp * hp->n_expert_shared);
    int ne = hp->n_expert > 0 ? hp->n_expert : 1, k = hp->n_expert_used > 0 ? hp->n_expert_used : 1;
    struct lmoe_scratch *s = &c->s;
    float **bufs[] = {&s->x, &s->xn, &s->attn_out, &s->ffn_out, &s->q, &s->k, &s->v, &s->heads,
                      &s->qa, &s->kva, &s->q_abs, &s->lat, &s->att, &s->router, &s->sel_w,
                      &s->gather, &s->gate, &s->up, &s->down, &s->logits};
    size_t sizes[] = {B * E, B * E, B * E, B * E, B * q_w, B * kv_w, B * kv_w, B * heads_w,
                      B * (size_t)(hp->q_lora_rank + 1), B * (size_t)(hp->kv_lora_rank + hp->qk_rope + 1),
                      B * lat_w + 1, B * lat_w + 1,
                      (size_t)lmoe_engine_n_threads(c->e) * (size_t)c->n_ctx, B * ne, B * k,
                      B * E, B * (size_t)n_ff, B * (size_t)n_ff, B * E, B * (size_t)hp->n_vocab};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (!(*bufs[i] = malloc(sizeof(float) * (sizes[i] ? sizes[i] : 1)))) return LMOE_ERR_NOMEM;
    if (!(s->sel_ids = malloc(sizeof(int) * B * k)) || !(s->expert_tok = malloc(sizeof(int) * B)))
        return LMOE_ERR_NOMEM;
    return 0;
}

static void free_scratch(struct lmoe_scratch *s) {
    void *p[] = {s->x, s->xn, s->attn_out, s->ffn_out, s->q, s->k, s->v, s->heads, s->qa,
                 s->kva, s->q_abs, s->lat, s->att, s->router, s->sel_w, s->gather, s->gate,
                 s->up, s->down, s->logits, s->sel_ids, s->expert_tok};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
}

int lmoe_ctx_open(lmoe_ctx **out, lmoe_engine *e, const struct lmoe_ctx_options *opt) {
    *out = NULL;
    const struct lmoe_hparams *hp = &e->model.hp;
    if (e->vocab_only) return LMOE_ERR_ARG; /* no weights to run */
    struct lmoe_ctx *c = calloc(1, sizeof(*c));
    if (!c) return LMOE_ERR_NOMEM;
    c->e = e;
    c->n_ctx = opt && opt->n_ctx > 0 ? opt->n_ctx
                                     : (hp->n_ctx_train < LMOE_DEFAULT_N_CTX ? hp->n_ctx_train : LMOE_DEFAULT_N_CTX);
    c->kv_type = opt ? opt->kv_type : LMOE_KV_F16;
    if (c->kv_type != LMOE_KV_F16 && c->kv_type != LMOE_KV_F32) {
        free(c);
        return LMOE_ERR_ARG;
    }
    c->n_batch = LMOE_N_BATCH;
    if (hp->arch == LMOE_ARCH_DEEPSEEK2) {
        c->k_row = hp->kv_lora_rank;
        c->v_row = hp->qk_rope;
    } else {
        c->k_row = hp->n_head_kv * hp->head_dim_k;
        c->v_row = hp->n_head_kv * hp->head_dim_v;
    }
    size_t esz = c->kv_type == LMOE_KV_F16 ? 2 : 4;
    size_t rows = (size_t)hp->n_layer * (size_t)c->n_ctx;
    c->kv_k = calloc(rows, (size_t)c->k_row * esz);
    c->kv_v = calloc(rows, (size_t)c->v_row * esz);
    if (!c->kv_k || !c->kv_v || alloc_scratch(c)) {
        lmoe_ctx_close(c);
        return LMOE_ERR_NOMEM;
    }
    *out = c;
    return 0;
}

void lmoe_ctx_close(lmoe_ctx *c) {
    if (!c) return;
    free(c->kv_k);
    free(c->kv_v);
    free_scratch(&c->s);
    free(c);
}

int lmoe_ctx_n_past(const lmoe_ctx *c) { return c->n_past; }
int lmoe_ctx_n_ctx(const lmoe_ctx *c) { return c->n_ctx; }
void lmoe_ctx_reset(lmoe_ctx *c) { c->n_past = 0; }

int lmoe_ctx_truncate(lmoe_ctx *c, int n) {
    if (n < 0 || n > c->n_past) return LMOE_ERR_ARG;
    c->n_past = n; /* later rows are overwritten as new tokens arrive */
    return 0;
}
const char *lmoe_ctx_error(const lmoe_ctx *c) { return c->err; }

int lmoe_ctx_eval(lmoe_ctx *c, const int32_t *tokens, int n, float *logits, int all_rows) {
    int n_vocab = c->e->model.hp.n_vocab;
    if (n <= 0 || !tokens)
        return lmoe_errf(c->err, sizeof c->err, LMOE_ERR_ARG, "eval: no tokens given");
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            return lmoe_errf(c->err, sizeof c->err, LMOE_ERR_ARG,
                             "eval: token id %d is outside the vocabulary (0..%d)", tokens[i], n_vocab - 1);
    if (n > c->n_ctx - c->n_past)
        return lmoe_errf(c->err, sizeof c->err, LMOE_ERR_CTX_FULL,
                         "eval: %d tokens do not fit: %d of %d context positions are used",
                         n, c->n_past, c->n_ctx);
    pthread_mutex_lock(&c->e->step_lock);
    int rc = 0;
    for (int done = 0; done < n && !rc; done += c->n_batch) {
        int T = n - done < c->n_batch ? n - done : c->n_batch;
        int last = done + T == n;
        float *dst = NULL;
        if (logits && all_rows) dst = logits + (size_t)done * n_vocab;
        else if (logits && last) dst = logits;
        rc = lmoe_forward(c, tokens + done, T, dst, all_rows);
    }
    pthread_mutex_unlock(&c->e->step_lock);
    return rc;
}
