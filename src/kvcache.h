/*
 * kvcache.h - KV cache storage of a context (internal).
 *
 * A context keeps two parts per layer and position: "k" and "v". Plain
 * attention stores per-head keys and values there; MLA stores the
 * normalised latent (kv_lora_rank) in k and the roped shared key (qk_rope)
 * in v. Each part has its own element type: F32, F16 (the default) or
 * Q8_0 (8-bit, one f16 scale per 32 values; only where the row and every
 * head slice are whole blocks, else that part falls back to F16).
 */
#ifndef LMOE_KVCACHE_H
#define LMOE_KVCACHE_H

#include <stddef.h>

struct lmoe_ctx;

struct lmoe_kv_part {
    void *base;       /* n_layer * n_ctx rows */
    int type;         /* enum lmoe_dtype: F32, F16 or Q8_0 */
    int n_elem;       /* elements per row */
    size_t row_bytes;
};

/* Chooses the part types for kv_type (enum lmoe_kv_type) and allocates
 * both parts of c (c->n_ctx and the model's sizes must be set). head_elems
 * is the smallest slice attention addresses inside a row (head_dim for
 * plain attention, the whole row for MLA). */
int lmoe_kv_alloc(struct lmoe_ctx *c, int kv_type, int k_elems, int v_elems, int k_head, int v_head);
void lmoe_kv_free(struct lmoe_ctx *c);

/* Writes the row of layer il at position pos from n_elem floats. */
void lmoe_kv_store(const struct lmoe_ctx *c, const struct lmoe_kv_part *p, int il, int pos, const float *src);

/* dot(row[off .. off+n), q) and y += a * row[off .. off+n) */
float lmoe_kv_dot(const struct lmoe_ctx *c, const struct lmoe_kv_part *p, int il, int pos, int off,
                  const float *q, int n);
void lmoe_kv_axpy(const struct lmoe_ctx *c, const struct lmoe_kv_part *p, int il, int pos, int off, float a,
                  float *y, int n);

#endif
