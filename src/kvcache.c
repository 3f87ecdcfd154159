/*
 * kvcache.c - storage of the KV cache rows in F32, F16 or 8-bit blocks.
 *
 * The 8-bit form halves the F16 cache again (34 bytes per 32 values): one
 * f16 scale d = max|x| / 127 per block and round-to-nearest codes, the
 * Q8_0 layout of the weights. Attention reads it through dot and axpy on
 * whole blocks, so a head slice must start and end on a block boundary.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
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

int lmoe_kv_alloc(struct lmoe_ctx *c, int kv_type, int k_elems, int v_elems, int k_head, int v_head) {
    size_t rows = (size_t)c->e->model.hp.n_layer * (size_t)c->n_ctx;
    struct lmoe_kv_part *parts[2] = {&c->k, &c->v};
    int elems[2] = {k_elems, v_elems}, heads[2] = {k_head, v_head};
    for (int i = 0; i < 2; i++) {
        struct lmoe_kv_part *p = parts[i];
        p->type = part_type(kv_type, elems[i], heads[i]);
        p->n_elem = elems[i];
        p->row_bytes = bytes_of(p->type, elems[i]);
        p->base = calloc(rows, p->row_bytes ? p->row_bytes : 1);
        if (!p->base) return -1;
    }
    return 0;
}

void lmoe_kv_free(struct lmoe_ctx *c) {
    free(c->k.base);
    free(c->v.base);
    c->k.base = c->v.base = NULL;
}

static uint8_t *row_at(const struct lmoe_ctx *c, const struct lmoe_kv_part *p, int il, int pos) {
    return (uint8_t *)p->base + ((size_t)il * (size_t)c->n_ctx + (size_t)pos) * p->row_bytes;
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
