/*
 * forward.c - one forward step over a micro-batch: embed, then per layer
 * norm -> attention -> residual -> norm -> FFN or MoE -> residual, then the
 * output head. The same code runs a prompt (T > 1) and a decode step (T = 1).
 */
#include <string.h>

#include "engine.h"
#include "model/attention.h"
#include "model/moe.h"

int lmoe_forward(struct lmoe_ctx *c, const int32_t *tokens, int T, float *out, int all_rows) {
    struct lmoe_engine *e = c->e;
    const struct lmoe_model *m = &e->model;
    const struct lmoe_hparams *hp = &m->hp;
    struct lmoe_compute *cp = &e->compute;
    int n_embd = hp->n_embd, pos0 = c->n_past;
    for (int t = 0; t < T; t++)
        op_get_row(cp, &m->tok_embd, 0, tokens[t], c->s.x + (size_t)t * n_embd);
    for (int il = 0; il < hp->n_layer; il++) {
        const struct lmoe_layer *L = &m->layers[il];
        for (int t = 0; t < T; t++)
            op_rmsnorm(c->s.xn + (size_t)t * n_embd, c->s.x + (size_t)t * n_embd, L->attn_norm.data,
                       n_embd, hp->rms_eps);
        if (hp->arch == LMOE_ARCH_DEEPSEEK2) lmoe_attention_mla(c, il, T, pos0);
        else lmoe_attention_gqa(c, il, T, pos0);
        for (size_t i = 0; i < (size_t)T * n_embd; i++) c->s.x[i] += c->s.attn_out[i];
        for (int t = 0; t < T; t++)
            op_rmsnorm(c->s.xn + (size_t)t * n_embd, c->s.x + (size_t)t * n_embd, L->ffn_norm.data,
                       n_embd, hp->rms_eps);
        if (L->is_moe) lmoe_ffn_moe(c, il, T);
        else lmoe_ffn_dense(c, il, T);
        for (size_t i = 0; i < (size_t)T * n_embd; i++) c->s.x[i] += c->s.ffn_out[i];
    }
    c->n_past += T;
    if (!out) return 0;
    /* Only the rows asked for go through the output head, the largest
     * matrix of small models. */
    int first = all_rows ? 0 : T - 1, n = T - first;
    for (int t = first; t < T; t++)
        op_rmsnorm(c->s.xn + (size_t)(t - first) * n_embd, c->s.x + (size_t)t * n_embd,
                   m->output_norm.data, n_embd, hp->rms_eps);
    op_matmul(cp, &m->output, 0, c->s.xn, n_embd, n, out, hp->n_vocab);
    return 0;
}
