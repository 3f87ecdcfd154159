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

static int max3(int a, int b, int c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

void lmoe_scratch_free(struct lmoe_scratch *s) {
    void *p[] = {s->tok_ctx, s->tok_pos, s->x, s->xn, s->attn_out, s->ffn_out, s->q, s->k, s->v, s->heads,
                 s->qa, s->kva, s->q_abs, s->lat, s->att, s->router, s->sel_w, s->gather, s->gate, s->up,
                 s->down, s->logits, s->sel_ids, s->expert_tok};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
    memset(s, 0, sizeof(*s));
}

/* Sizes every buffer for LMOE_N_BATCH tokens at first use; afterwards only
 * the attention weights grow, with the longest context. */
int lmoe_scratch_reserve(struct lmoe_engine *e, int n_ctx) {
    struct lmoe_scratch *s = &e->s;
    size_t n_threads = (size_t)lmoe_engine_n_threads(e);
    if (s->n_batch && n_ctx <= s->n_ctx_max) return 0;
    if (s->n_batch) {
        float *att = realloc(s->att, sizeof(float) * n_threads * (size_t)n_ctx);
        if (!att) return LMOE_ERR_NOMEM;
        s->att = att;
        s->n_ctx_max = n_ctx;
        return 0;
    }
    const struct lmoe_hparams *hp = &e->model.hp;
    size_t B = LMOE_N_BATCH, E = (size_t)hp->n_embd;
    int nh = hp->n_head, mla = hp->arch == LMOE_ARCH_DEEPSEEK2;
    size_t q_w = (size_t)nh * (mla ? hp->qk_nope + hp->qk_rope : hp->head_dim_k);
    size_t kv_w = (size_t)hp->n_head_kv * (size_t)(hp->head_dim_k > hp->head_dim_v ? hp->head_dim_k : hp->head_dim_v);
    size_t heads_w = (size_t)nh * (size_t)hp->head_dim_v;
    size_t lat_w = (size_t)nh * (size_t)hp->kv_lora_rank;
    int n_ff = max3(hp->n_ff, hp->n_ff_exp, hp->n_ff_exp * hp->n_expert_shared);
    size_t ne = hp->n_expert > 0 ? (size_t)hp->n_expert : 1, k = hp->n_expert_used > 0 ? (size_t)hp->n_expert_used : 1;
    float **bufs[] = {&s->x, &s->xn, &s->attn_out, &s->ffn_out, &s->q, &s->k, &s->v, &s->heads, &s->qa, &s->kva,
                      &s->q_abs, &s->lat, &s->att, &s->router, &s->sel_w, &s->gather, &s->gate, &s->up, &s->down, &s->logits};
    size_t sizes[] = {B * E, B * E, B * E, B * E, B * q_w, B * kv_w, B * kv_w, B * heads_w,
                      B * (size_t)(hp->q_lora_rank + 1), B * (size_t)(hp->kv_lora_rank + hp->qk_rope + 1),
                      B * lat_w + 1, B * lat_w + 1, n_threads * (size_t)n_ctx, B * ne, B * k,
                      B * E, B * (size_t)n_ff, B * (size_t)n_ff, B * E, (size_t)LMOE_N_OUT * (size_t)hp->n_vocab};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (!(*bufs[i] = malloc(sizeof(float) * (sizes[i] ? sizes[i] : 1)))) goto oom;
    if (!(s->sel_ids = malloc(sizeof(int) * B * k)) || !(s->expert_tok = malloc(sizeof(int) * B)) ||
        !(s->tok_ctx = malloc(sizeof(*s->tok_ctx) * B)) || !(s->tok_pos = malloc(sizeof(int) * B)))
        goto oom;
    s->n_batch = (int)B;
    s->n_ctx_max = n_ctx;
    return 0;
oom:
    lmoe_scratch_free(s);
    return LMOE_ERR_NOMEM;
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
    c->pool = opt ? opt->pool : NULL;
    if ((!c->pool && c->kv_type != LMOE_KV_F16 && c->kv_type != LMOE_KV_F32 && c->kv_type != LMOE_KV_Q8) ||
        (c->pool && c->pool->e != e) || c->n_ctx > (1 << 30)) {
        free(c);
        return LMOE_ERR_ARG;
    }
    int rc = 0;
    if (!c->pool) {
        /* One page of the next power of two: rows of a layer are contiguous,
         * and calloc leaves the unused tail unbacked. */
        int sh = 0;
        while ((1 << sh) < c->n_ctx) sh++;
        rc = lmoe_kv_pool_make(&c->own_pool, e, 1, sh, c->kv_type);
        c->pool = c->own_pool;
    }
    if (!rc) {
        c->kv_type = c->pool->kv_type;
        c->k = c->pool->k;
        c->v = c->pool->v;
        c->page_shift = c->pool->page_shift;
        c->n_layer = c->pool->n_layer;
        size_t n_table = ((size_t)c->n_ctx + (size_t)c->pool->page_tokens - 1) >> c->page_shift;
        if (!(c->pages = malloc(sizeof(int) * n_table))) rc = LMOE_ERR_NOMEM;
    }
    pthread_mutex_lock(&e->step_lock);
    if (!rc) rc = lmoe_scratch_reserve(e, c->n_ctx);
    pthread_mutex_unlock(&e->step_lock);
    if (rc) {
        lmoe_ctx_close(c);
        return LMOE_ERR_NOMEM;
    }
    *out = c;
    return 0;
}

void lmoe_ctx_close(lmoe_ctx *c) {
    if (!c) return;
    if (c->pages) lmoe_kv_shrink(c, 0);
    free(c->pages);
    lmoe_kv_pool_close(c->own_pool);
    free(c);
}

int lmoe_ctx_n_past(const lmoe_ctx *c) { return c->n_past; }
int lmoe_ctx_n_ctx(const lmoe_ctx *c) { return c->n_ctx; }

void lmoe_ctx_reset(lmoe_ctx *c) {
    c->n_past = 0;
    lmoe_kv_shrink(c, 0);
}

int lmoe_ctx_truncate(lmoe_ctx *c, int n) {
    if (n < 0 || n > c->n_past) return LMOE_ERR_ARG;
    c->n_past = n; /* later rows are overwritten as new tokens arrive */
    lmoe_kv_shrink(c, n);
    return 0;
}
int lmoe_ctx_copy_prefix(lmoe_ctx *dst, const lmoe_ctx *src, int n) {
    if (!dst || !src) return LMOE_ERR_ARG;
    if (dst == src || dst->e != src->e || dst->k.type != src->k.type || dst->v.type != src->v.type)
        return lmoe_errf(dst->err, sizeof dst->err, LMOE_ERR_ARG,
                         "copy_prefix: the contexts differ in engine or KV layout");
    if (n < 0 || n > src->n_past)
        return lmoe_errf(dst->err, sizeof dst->err, LMOE_ERR_ARG, "copy_prefix: %d tokens asked, the source holds %d",
                         n, src->n_past);
    lmoe_ctx_reset(dst);
    if (n > dst->n_ctx)
        return lmoe_errf(dst->err, sizeof dst->err, LMOE_ERR_CTX_FULL,
                         "copy_prefix: %d tokens do not fit a context of %d", n, dst->n_ctx);
    int rc = lmoe_kv_grow(dst, n);
    if (rc) return rc;
    lmoe_kv_copy_rows(dst, src, n);
    dst->n_past = n;
    return 0;
}

const char *lmoe_ctx_error(const lmoe_ctx *c) { return c->err; }

int lmoe_ctx_eval(lmoe_ctx *c, const int32_t *tokens, int n, float *logits, int all_rows) {
    const int32_t *toks[1] = {tokens};
    float *outs[1] = {logits};
    return lmoe_batch_eval(&c, toks, &n, outs, all_rows, 1);
}

/* Checks one sequence's tokens against its context; message into c->err. */
static int check_tokens(lmoe_ctx *c, const int32_t *tokens, int n) {
    int n_vocab = c->e->model.hp.n_vocab;
    if (n <= 0 || !tokens) return lmoe_errf(c->err, sizeof c->err, LMOE_ERR_ARG, "eval: no tokens given");
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            return lmoe_errf(c->err, sizeof c->err, LMOE_ERR_ARG,
                             "eval: token id %d is outside the vocabulary (0..%d)", tokens[i], n_vocab - 1);
    if (n > c->n_ctx - c->n_past)
        return lmoe_errf(c->err, sizeof c->err, LMOE_ERR_CTX_FULL,
                         "eval: %d tokens do not fit: %d of %d context positions are used", n, c->n_past,
                         c->n_ctx);
    return 0;
}

int lmoe_batch_eval(lmoe_ctx **ctxs, const int32_t *const *tokens, const int *n, float **logits, int all_rows,
                    int n_seq) {
    if (n_seq <= 0) return LMOE_ERR_ARG;
    struct lmoe_engine *e = ctxs[0]->e;
    for (int i = 0; i < n_seq; i++) {
        if (ctxs[i]->e != e) return LMOE_ERR_ARG;
        for (int j = 0; j < i; j++)
            if (ctxs[j] == ctxs[i])
                return lmoe_errf(ctxs[i]->err, sizeof ctxs[i]->err, LMOE_ERR_ARG, "eval: a context appears twice");
        int rc = check_tokens(ctxs[i], tokens[i], n[i]);
        if (rc) return rc;
    }
    /* Pages for every new position, all or none: on a full pool the pages
     * just taken go back and nothing is evaluated. */
    for (int i = 0; i < n_seq; i++) {
        int rc = lmoe_kv_grow(ctxs[i], ctxs[i]->n_past + n[i]);
        if (rc) {
            for (int j = 0; j <= i; j++) lmoe_kv_shrink(ctxs[j], ctxs[j]->n_past);
            return rc;
        }
    }
    int n_vocab = e->model.hp.n_vocab;
    pthread_mutex_lock(&e->step_lock);
    struct lmoe_scratch *s = &e->s;
    int32_t step_tok[LMOE_N_BATCH];
    int out_rows[LMOE_N_BATCH];
    float *out_dst[LMOE_N_BATCH];
    int rc = 0, seq = 0, at = 0;
    /* Fill micro-batches with the sequences' tokens in order; a sequence may
     * span several steps. */
    while (seq < n_seq && !rc) {
        int T = 0, n_out = 0;
        while (seq < n_seq && T < s->n_batch) {
            lmoe_ctx *c = ctxs[seq];
            int take = n[seq] - at < s->n_batch - T ? n[seq] - at : s->n_batch - T;
            for (int i = 0; i < take; i++, T++) {
                int idx = at + i;
                step_tok[T] = tokens[seq][idx];
                s->tok_ctx[T] = c;
                s->tok_pos[T] = c->n_past + idx;
                if (logits[seq] && (all_rows || idx == n[seq] - 1)) {
                    out_rows[n_out] = T;
                    out_dst[n_out++] = logits[seq] + (all_rows ? (size_t)idx * n_vocab : 0);
                }
            }
            at += take;
            if (at == n[seq]) { seq++; at = 0; }
        }
        rc = lmoe_forward(e, step_tok, T, out_dst, out_rows, n_out);
    }
    if (!rc)
        for (int i = 0; i < n_seq; i++) ctxs[i]->n_past += n[i];
    pthread_mutex_unlock(&e->step_lock);
    return rc;
}
