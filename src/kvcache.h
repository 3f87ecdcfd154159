/*
 * kvcache.h - KV cache storage of a context (internal).
 *
 * A context keeps two parts per layer and position: "k" and "v". Plain
 * attention stores per-head keys and values there; MLA stores the
 * normalised latent (kv_lora_rank) in k and the roped shared key (qk_rope)
 * in v. Each part has its own element type: F32, F16 (the default) or
 * Q8_0 (8-bit, one f16 scale per 32 values; only where the row and every
 * head slice are whole blocks, else that part falls back to F16).
 *
 * Rows live in pages of a pool (lmoe_kv_pool): a page holds page_tokens
 * positions of every layer, layer-major inside the page. A context's page
 * table maps position >> page_shift to a page. A context without a shared
 * pool owns a pool of one page of at least n_ctx positions, which is the
 * contiguous per-layer layout. Attention reaches rows only through the
 * functions below, so it never sees pages.
 */
#ifndef LMOE_KVCACHE_H
#define LMOE_KVCACHE_H

#include <pthread.h>
#include <stddef.h>

struct lmoe_ctx;
struct lmoe_engine;

struct lmoe_kv_part {
    void *base;       /* n_pages * n_layer * page_tokens rows */
    int type;         /* enum lmoe_dtype: F32, F16 or Q8_0 */
    int n_elem;       /* elements per row */
    size_t row_bytes;
};

struct lmoe_kv_pool {
    struct lmoe_engine *e;
    struct lmoe_kv_part k, v;
    int kv_type, n_layer, n_pages, page_tokens, page_shift;
    /* Free page ids, a stack: pages are taken in ascending order from a
     * fresh pool. Under mu, since contexts on other threads share it. */
    pthread_mutex_t mu;
    int *free_ids, n_free;
};

/* Opens a pool of n_pages pages of 1 << page_shift positions. */
int lmoe_kv_pool_make(struct lmoe_kv_pool **out, struct lmoe_engine *e, int n_pages, int page_shift, int kv_type);

/* Gives c pages for positions [0, n_tokens), taking from its pool only the
 * pages it lacks; all or nothing (LMOE_ERR_KV_FULL, message in c->err). */
int lmoe_kv_grow(struct lmoe_ctx *c, int n_tokens);
/* Returns to the pool the pages c holds beyond position n_tokens. */
void lmoe_kv_shrink(struct lmoe_ctx *c, int n_tokens);

/* Copies src's rows of positions [0, n) of every layer, both parts, into
 * dst, which holds pages for them; the same row types. */
void lmoe_kv_copy_rows(const struct lmoe_ctx *dst, const struct lmoe_ctx *src, int n);

/* Writes the row of layer il at position pos from n_elem floats. */
void lmoe_kv_store(const struct lmoe_ctx *c, const struct lmoe_kv_part *p, int il, int pos, const float *src);

/* dot(row[off .. off+n), q) and y += a * row[off .. off+n) */
float lmoe_kv_dot(const struct lmoe_ctx *c, const struct lmoe_kv_part *p, int il, int pos, int off,
                  const float *q, int n);
void lmoe_kv_axpy(const struct lmoe_ctx *c, const struct lmoe_kv_part *p, int il, int pos, int off, float a,
                  float *y, int n);

#endif
