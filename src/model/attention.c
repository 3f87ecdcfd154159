/*
 * attention.c - self-attention with the KV cache: grouped-query attention
 * for the llama/qwen families and Multi-head Latent Attention for deepseek2.
 *
 * MLA keeps only the compressed latent c (kv_lora_rank floats, after its
 * RMS norm) and the shared roped key k_pe (qk_rope floats) per token. Decode
 * never expands them into per-head keys and values: with W_k, W_v the
 * per-head up-projections in kv_b,
 *     q_nope . (W_k c) = (W_k^T q_nope) . c      (q is "absorbed")
 *     sum_j p_j W_v c_j = W_v (sum_j p_j c_j)     (v after the weighted sum)
 * so each head attends in latent space and is projected once at the end.
 */
#include <math.h>
#include <string.h>

#include "engine.h"
#include "model/attention.h"
#include "quant/quant.h"

/* ---- grouped-query attention --------------------------------------------- */

struct att_job {
    struct lmoe_engine *e;
    int il;
};

/* Items are (token, head) pairs: softmax(q.K^T * scale) V over the cache of
 * the token's own context, positions 0..pos. */
static void gqa_heads(void *arg, int i0, int i1, int ith) {
    struct att_job *j = arg;
    struct lmoe_scratch *s = &j->e->s;
    const struct lmoe_hparams *hp = &j->e->model.hp;
    int hd = hp->head_dim_k, hv = hp->head_dim_v, group = hp->n_head / hp->n_head_kv;
    float *att = s->att + (size_t)ith * (size_t)s->n_ctx_max;
    for (int i = i0; i < i1; i++) {
        int t = i / hp->n_head, h = i % hp->n_head, kvh = h / group, n = s->tok_pos[t] + 1;
        const struct lmoe_ctx *c = s->tok_ctx[t];
        const float *q = s->q + (size_t)t * hp->n_head * hd + (size_t)h * hd;
        for (int p = 0; p < n; p++) att[p] = lmoe_kv_dot(c, &c->k, j->il, p, kvh * hd, q, hd) * hp->kq_scale;
        op_softmax(att, n);
        float *out = s->heads + (size_t)t * hp->n_head * hv + (size_t)h * hv;
        memset(out, 0, sizeof(float) * (size_t)hv);
        for (int p = 0; p < n; p++) lmoe_kv_axpy(c, &c->v, j->il, p, kvh * hv, att[p], out, hv);
    }
}

void lmoe_attention_gqa(struct lmoe_engine *e, int il, int T) {
    const struct lmoe_hparams *hp = &e->model.hp;
    const struct lmoe_layer *L = &e->model.layers[il];
    struct lmoe_compute *cp = &e->compute;
    struct lmoe_scratch *s = &e->s;
    int hd = hp->head_dim_k, hv = hp->head_dim_v;
    int nq = hp->n_head * hd, nk = hp->n_head_kv * hd, nv = hp->n_head_kv * hv;
    op_matmul(cp, &L->wq, 0, s->xn, hp->n_embd, T, s->q, nq);
    op_matmul(cp, &L->wk, 0, s->xn, hp->n_embd, T, s->k, nk);
    op_matmul(cp, &L->wv, 0, s->xn, hp->n_embd, T, s->v, nv);
    for (int t = 0; t < T; t++) {
        float *q = s->q + (size_t)t * nq, *k = s->k + (size_t)t * nk, *v = s->v + (size_t)t * nv;
        int pos = s->tok_pos[t];
        if (L->bq.data) for (int i = 0; i < nq; i++) q[i] += ((const float *)L->bq.data)[i];
        if (L->bk.data) for (int i = 0; i < nk; i++) k[i] += ((const float *)L->bk.data)[i];
        if (L->bv.data) for (int i = 0; i < nv; i++) v[i] += ((const float *)L->bv.data)[i];
        for (int h = 0; h < hp->n_head; h++) {
            if (L->q_norm.data) op_rmsnorm(q + h * hd, q + h * hd, L->q_norm.data, hd, hp->rms_eps);
            op_rope(q + h * hd, hp->n_rot, pos, hp->rope_mode, e->rope_freqs, hp->rope_mag);
        }
        for (int h = 0; h < hp->n_head_kv; h++) {
            if (L->k_norm.data) op_rmsnorm(k + h * hd, k + h * hd, L->k_norm.data, hd, hp->rms_eps);
            op_rope(k + h * hd, hp->n_rot, pos, hp->rope_mode, e->rope_freqs, hp->rope_mag);
        }
        const struct lmoe_ctx *c = s->tok_ctx[t];
        lmoe_kv_store(c, &c->k, il, pos, k);
        lmoe_kv_store(c, &c->v, il, pos, v);
    }
    struct att_job j = {e, il};
    lmoe_pool_for(cp->pool, T * hp->n_head, 1, gqa_heads, &j);
    op_matmul(cp, &L->wo, 0, s->heads, hp->n_head * hv, T, s->attn_out, hp->n_embd);
}

/* ---- multi-head latent attention ----------------------------------------- */

/* A view of rows [r0, r0 + n) of a 2-D weight. */
static struct lmoe_tensor row_view(const struct lmoe_tensor *w, int r0, int n) {
    struct lmoe_tensor v = *w;
    v.data = (const uint8_t *)w->data + (size_t)r0 * w->row_bytes;
    v.ne[1] = n;
    v.scale_row0 = w->scale_row0 + r0; /* FP8 block scales stay with the rows */
    return v;
}

/* Items are (token, head) pairs. Scores come from the absorbed query
 * against the latent plus the rope part against the shared key; the output
 * is the attention-weighted latent, projected by W_v afterwards. */
static void mla_heads(void *arg, int i0, int i1, int ith) {
    struct att_job *j = arg;
    struct lmoe_scratch *s = &j->e->s;
    const struct lmoe_hparams *hp = &j->e->model.hp;
    int nh = hp->n_head, r = hp->kv_lora_rank, qk = hp->qk_nope + hp->qk_rope;
    float *att = s->att + (size_t)ith * (size_t)s->n_ctx_max;
    for (int i = i0; i < i1; i++) {
        int t = i / nh, h = i % nh, n = s->tok_pos[t] + 1;
        const struct lmoe_ctx *c = s->tok_ctx[t];
        const float *q_abs = s->q_abs + ((size_t)t * nh + h) * r;
        const float *q_pe = s->q + (size_t)t * nh * qk + (size_t)h * qk + hp->qk_nope;
        for (int p = 0; p < n; p++)
            att[p] = (lmoe_kv_dot(c, &c->k, j->il, p, 0, q_abs, r) +
                      lmoe_kv_dot(c, &c->v, j->il, p, 0, q_pe, hp->qk_rope)) * hp->kq_scale;
        op_softmax(att, n);
        float *lat = s->lat + ((size_t)t * nh + h) * r;
        memset(lat, 0, sizeof(float) * (size_t)r);
        for (int p = 0; p < n; p++) lmoe_kv_axpy(c, &c->k, j->il, p, 0, att[p], lat, r);
    }
}

/* q_abs[t][h] = W_k_h^T q_nope[t][h] from the joined kv_b, whose rows
 * h*(nope+v) .. +nope are W_k_h: a weighted sum of those rows. */
static void absorb_joined(struct lmoe_engine *e, const struct lmoe_layer *L, int T) {
    const struct lmoe_hparams *hp = &e->model.hp;
    struct lmoe_compute *cp = &e->compute;
    struct lmoe_scratch *s = &e->s;
    int nh = hp->n_head, r = hp->kv_lora_rank, qk = hp->qk_nope + hp->qk_rope;
    float *row = cp->row_scratch; /* single-threaded here: thread 0's slot */
    memset(s->q_abs, 0, sizeof(float) * (size_t)T * nh * r);
    for (int h = 0; h < nh; h++)
        for (int i = 0; i < hp->qk_nope; i++) {
            op_get_row(cp, &L->wkv_b, 0, h * (hp->qk_nope + hp->v_head_dim) + i, row);
            for (int t = 0; t < T; t++)
                cp->k->axpy_f32(s->q_abs + ((size_t)t * nh + h) * r, s->q[(size_t)t * nh * qk + (size_t)h * qk + i],
                                row, r);
        }
}

void lmoe_attention_mla(struct lmoe_engine *e, int il, int T) {
    const struct lmoe_hparams *hp = &e->model.hp;
    const struct lmoe_layer *L = &e->model.layers[il];
    struct lmoe_compute *cp = &e->compute;
    struct lmoe_scratch *s = &e->s;
    int nh = hp->n_head, r = hp->kv_lora_rank, qk = hp->qk_nope + hp->qk_rope, vd = hp->v_head_dim;
    if (hp->q_lora_rank > 0) {
        op_matmul(cp, &L->wq_a, 0, s->xn, hp->n_embd, T, s->qa, hp->q_lora_rank);
        for (int t = 0; t < T; t++)
            op_rmsnorm(s->qa + (size_t)t * hp->q_lora_rank, s->qa + (size_t)t * hp->q_lora_rank, L->q_a_norm.data,
                       hp->q_lora_rank, hp->rms_eps);
        op_matmul(cp, &L->wq_b, 0, s->qa, hp->q_lora_rank, T, s->q, nh * qk);
    } else {
        op_matmul(cp, &L->wq, 0, s->xn, hp->n_embd, T, s->q, nh * qk);
    }
    op_matmul(cp, &L->wkv_a_mqa, 0, s->xn, hp->n_embd, T, s->kva, r + hp->qk_rope);
    for (int t = 0; t < T; t++) {
        float *kva = s->kva + (size_t)t * (r + hp->qk_rope);
        int pos = s->tok_pos[t];
        op_rmsnorm(kva, kva, L->kv_a_norm.data, r, hp->rms_eps);
        op_rope(kva + r, hp->qk_rope, pos, LMOE_ROPE_NORM, e->rope_freqs, hp->rope_mag);
        for (int h = 0; h < nh; h++)
            op_rope(s->q + (size_t)t * nh * qk + (size_t)h * qk + hp->qk_nope, hp->qk_rope, pos, LMOE_ROPE_NORM,
                    e->rope_freqs, hp->rope_mag);
        const struct lmoe_ctx *c = s->tok_ctx[t];
        lmoe_kv_store(c, &c->k, il, pos, kva);
        lmoe_kv_store(c, &c->v, il, pos, kva + r);
    }
    /* Absorb W_k into the query. */
    if (L->wk_b.data) {
        for (int h = 0; h < nh; h++)
            op_matmul(cp, &L->wk_b, h, s->q + (size_t)h * qk, nh * qk, T, s->q_abs + (size_t)h * r, nh * r);
    } else {
        absorb_joined(e, L, T);
    }
    struct att_job j = {e, il};
    lmoe_pool_for(cp->pool, T * nh, 1, mla_heads, &j);
    /* Project each head's latent through W_v. */
    for (int h = 0; h < nh; h++) {
        float *out = s->heads + (size_t)h * vd;
        const float *lat = s->lat + (size_t)h * r;
        if (L->wv_b.data) {
            op_matmul(cp, &L->wv_b, h, lat, nh * r, T, out, nh * vd);
        } else {
            struct lmoe_tensor wv = row_view(&L->wkv_b, h * (hp->qk_nope + vd) + hp->qk_nope, vd);
            op_matmul(cp, &wv, 0, lat, nh * r, T, out, nh * vd);
        }
    }
    op_matmul(cp, &L->wo, 0, s->heads, nh * vd, T, s->attn_out, hp->n_embd);
}
