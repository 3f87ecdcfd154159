/*
 * kvcache.c - storage of the KV cache rows in F32, F16 or 8-bit blocks.
 *
 * The 8-bit form halves the F16 cache again (34 bytes per 32 values): one
 * f16 scale d = max|x| / 127 per block and round-to-nearest codes, the
 * Q8_0 layout of the weights. Attention reads it through dot and axpy on
 * whole blocks, so a head slice must start and end on a block boundary.
 *
 * Also the page pool (kvcache.h): a pool allocates all its pages at open,
 * and contexts take and return page ids from its free stack, so growing a
 * timeline during decode allocates nothing.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "error.h"
#include "kvcache.h"
#include "quant/quant.h"

static size_t bytes_of(int type, int n) {
    return type == LMOE_DTYPE_Q8_0 ? (size_t)n / LMOE_QK * sizeof(struct lmoe_block_q8_0)
                                   : (size_t)n * (type == LMOE_DTYPE_F16 ? 2 : 4);
}

/* The element type of a part: Q8_0 only when every slice is whole blocks. */
static int part_type(int kv_type, int n_elem, int head) {
    if (kv_type == LMOE_KV_F32) return LMOE_DTYPE_F32;
    if (kv_type == LMOE_KV_Q8 && n_elem % LMOE_QK == 0 && head % LMOE_QK == 0) return LMOE_DTYPE_Q8_0;
    return LMOE_DTYPE_F16;
}

/* Row sizes of the two parts: MLA keeps the latent and the roped key,
 * plain attention per-head keys and values. heads[] is the smallest slice
 * attention addresses inside a row. */
static void part_shapes(const struct lmoe_hparams *hp, int elems[2], int heads[2]) {
    if (hp->arch == LMOE_ARCH_DEEPSEEK2) {
        elems[0] = heads[0] = hp->kv_lora_rank;
        elems[1] = heads[1] = hp->qk_rope;
    } else {
        elems[0] = hp->n_head_kv * hp->head_dim_k;
        elems[1] = hp->n_head_kv * hp->head_dim_v;
        heads[0] = hp->head_dim_k;
        heads[1] = hp->head_dim_v;
    }
}

static int shift_of(int page_tokens) {
    int sh = 0;
    while (sh < 30 && (1 << sh) < page_tokens) sh++;
    return (1 << sh) == page_tokens ? sh : -1;
}

size_t lmoe_kv_page_bytes(const lmoe_engine *e, int page_tokens, int kv_type) {
    if (e->vocab_only || page_tokens <= 0 || shift_of(page_tokens) < 0) return 0;
    const struct lmoe_hparams *hp = &e->model.hp;
    int elems[2], heads[2];
    part_shapes(hp, elems, heads);
    size_t row = bytes_of(part_type(kv_type, elems[0], heads[0]), elems[0]) +
                 bytes_of(part_type(kv_type, elems[1], heads[1]), elems[1]);
    return row * (size_t)hp->n_layer * (size_t)page_tokens;
}

void lmoe_kv_pool_close(lmoe_kv_pool *p) {
    if (!p) return;
    free(p->k.base);
    free(p->v.base);
    free(p->free_ids);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int lmoe_kv_pool_make(struct lmoe_kv_pool **out, struct lmoe_engine *e, int n_pages, int page_shift, int kv_type) {
    *out = NULL;
    const struct lmoe_hparams *hp = &e->model.hp;
    struct lmoe_kv_pool *p = calloc(1, sizeof(*p));
    if (!p) return LMOE_ERR_NOMEM;
    pthread_mutex_init(&p->mu, NULL);
    p->e = e;
    p->kv_type = kv_type;
    p->n_layer = hp->n_layer;
    p->n_pages = n_pages;
    p->page_shift = page_shift;
    p->page_tokens = 1 << page_shift;
    size_t rows = (size_t)n_pages * (size_t)hp->n_layer * (size_t)p->page_tokens;
    int elems[2], heads[2];
    part_shapes(hp, elems, heads);
    struct lmoe_kv_part *parts[2] = {&p->k, &p->v};
    for (int i = 0; i < 2; i++) {
        struct lmoe_kv_part *kp = parts[i];
        kp->type = part_type(kv_type, elems[i], heads[i]);
        kp->n_elem = elems[i];
        kp->row_bytes = bytes_of(kp->type, elems[i]);
        /* calloc: untouched pages of a large pool cost no resident memory. */
        if (!(kp->base = calloc(rows ? rows : 1, kp->row_bytes ? kp->row_bytes : 1))) goto oom;
    }
    if (!(p->free_ids = malloc(sizeof(int) * (size_t)n_pages))) goto oom;
    for (int i = 0; i < n_pages; i++) p->free_ids[i] = n_pages - 1 - i;
    p->n_free = n_pages;
    *out = p;
    return 0;
oom:
    lmoe_kv_pool_close(p);
    return LMOE_ERR_NOMEM;
}

int lmoe_kv_pool_open(lmoe_kv_pool **out, lmoe_engine *e, const struct lmoe_kv_pool_options *opt) {
    *out = NULL;
    int pt = opt && opt->page_tokens ? opt->page_tokens : LMOE_DEFAULT_PAGE_TOKENS;
    int kv_type = opt ? opt->kv_type : -1, sh = shift_of(pt);
    if (e->vocab_only || !opt || opt->n_pages <= 0 || sh < 0 ||
        (kv_type != LMOE_KV_F16 && kv_type != LMOE_KV_F32 && kv_type != LMOE_KV_Q8))
        return LMOE_ERR_ARG;
    return lmoe_kv_pool_make(out, e, opt->n_pages, sh, kv_type);
}

void lmoe_kv_pool_info(lmoe_kv_pool *p, struct lmoe_kv_pool_info *out) {
    pthread_mutex_lock(&p->mu);
    out->n_free = p->n_free;
    pthread_mutex_unlock(&p->mu);
    out->n_pages = p->n_pages;
    out->page_tokens = p->page_tokens;
    out->page_bytes = lmoe_kv_page_bytes(p->e, p->page_tokens, p->kv_type);
}

int lmoe_kv_grow(struct lmoe_ctx *c, int n_tokens) {
    struct lmoe_kv_pool *p = c->pool;
    int want = (n_tokens + p->page_tokens - 1) >> c->page_shift;
    if (want <= c->n_pages) return 0;
    pthread_mutex_lock(&p->mu);
    int need = want - c->n_pages, have = p->n_free;
    if (need <= have)
        while (c->n_pages < want) c->pages[c->n_pages++] = p->free_ids[--p->n_free];
    pthread_mutex_unlock(&p->mu);
    if (need > have)
        return lmoe_errf(c->err, sizeof c->err, LMOE_ERR_KV_FULL,
                         "eval: the KV pool has %d free pages of %d tokens; this context needs %d more", have,
                         p->page_tokens, need);
    return 0;
}

void lmoe_kv_shrink(struct lmoe_ctx *c, int n_tokens) {
    struct lmoe_kv_pool *p = c->pool;
    int keep = (n_tokens + p->page_tokens - 1) >> c->page_shift;
    if (keep >= c->n_pages) return;
    pthread_mutex_lock(&p->mu);
    while (c->n_pages > keep) p->free_ids[p->n_free++] = c->pages[--c->n_pages];
    pthread_mutex_unlock(&p->mu);
}

/* The page of pos, then the layer's run of page_tokens rows inside it. */
static uint8_t *row_at(const struct lmoe_ctx *c, const struct lmoe_kv_part *p, int il, int pos) {
    size_t page = (size_t)c->pages[pos >> c->page_shift];
    size_t in_page = (size_t)pos & (((size_t)1 << c->page_shift) - 1);
    size_t row = ((page * (size_t)c->n_layer + (size_t)il) << c->page_shift) + in_page;
    return (uint8_t *)p->base + row * p->row_bytes;
}

void lmoe_kv_copy_rows(const struct lmoe_ctx *dst, const struct lmoe_ctx *src, int n) {
    const int src_page = 1 << src->page_shift, dst_page = 1 << dst->page_shift;
    for (int il = 0; il < src->n_layer; il++)
        for (int pos = 0; pos < n;) {
            /* a layer's rows are contiguous within a page of either context */
            int run = n - pos, left_src = src_page - (pos & (src_page - 1)), left_dst = dst_page - (pos & (dst_page - 1));
            if (run > left_src) run = left_src;
            if (run > left_dst) run = left_dst;
            memcpy(row_at(dst, &dst->k, il, pos), row_at(src, &src->k, il, pos), (size_t)run * src->k.row_bytes);
            memcpy(row_at(dst, &dst->v, il, pos), row_at(src, &src->v, il, pos), (size_t)run * src->v.row_bytes);
            pos += run;
        }
}

void lmoe_kv_store(const struct lmoe_ctx *c, const struct lmoe_kv_part *p, int il, int pos, const float *src) {
    uint8_t *dst = row_at(c, p, il, pos);
    if (p->type == LMOE_DTYPE_F32) {
        memcpy(dst, src, sizeof(float) * (size_t)p->n_elem);
    } else if (p->type == LMOE_DTYPE_F16) {
        c->e->compute.k->f32_to_f16((uint16_t *)dst, src, p->n_elem);
    } else {
        for (int b = 0; b < p->n_elem / LMOE_QK; b++) {
            const float *x = src + b * LMOE_QK;
            float amax = 0;
            for (int i = 0; i < LMOE_QK; i++) amax = fmaxf(amax, fabsf(x[i]));
            float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
            struct lmoe_block_q8_0 blk;
            blk.d = lmoe_f32_to_f16(d);
            for (int i = 0; i < LMOE_QK; i++) blk.qs[i] = (int8_t)lrintf(x[i] * id);
            memcpy(dst + (size_t)b * sizeof blk, &blk, sizeof blk);
        }
    }
}

float lmoe_kv_dot(const struct lmoe_ctx *c, const struct lmoe_kv_part *p, int il, int pos, int off,
                  const float *q, int n) {
    const uint8_t *row = row_at(c, p, il, pos);
    const struct lmoe_kernels *k = c->e->compute.k;
    if (p->type == LMOE_DTYPE_F16) return k->dot_f16_f32((const uint16_t *)row + off, q, n);
    if (p->type == LMOE_DTYPE_F32) return k->dot_f32((const float *)row + off, q, n);
    /* 8-bit: integer codes times floats per block, then the block scale. */
    const struct lmoe_block_q8_0 *blk = (const struct lmoe_block_q8_0 *)row + off / LMOE_QK;
    float sum = 0;
    for (int b = 0; b < n / LMOE_QK; b++) {
        float s = 0;
        for (int i = 0; i < LMOE_QK; i++) s += (float)blk[b].qs[i] * q[b * LMOE_QK + i];
        sum += lmoe_f16_to_f32(blk[b].d) * s;
    }
    return sum;
}

void lmoe_kv_axpy(const struct lmoe_ctx *c, const struct lmoe_kv_part *p, int il, int pos, int off, float a,
                  float *y, int n) {
    const uint8_t *row = row_at(c, p, il, pos);
    const struct lmoe_kernels *k = c->e->compute.k;
    if (p->type == LMOE_DTYPE_F16) k->axpy_f16(y, a, (const uint16_t *)row + off, n);
    else if (p->type == LMOE_DTYPE_F32) k->axpy_f32(y, a, (const float *)row + off, n);
    else {
        const struct lmoe_block_q8_0 *blk = (const struct lmoe_block_q8_0 *)row + off / LMOE_QK;
        for (int b = 0; b < n / LMOE_QK; b++) {
            float ad = a * lmoe_f16_to_f32(blk[b].d);
            for (int i = 0; i < LMOE_QK; i++) y[b * LMOE_QK + i] += ad * (float)blk[b].qs[i];
        }
    }
}
