/*
 * forward.c - one forward step over a micro-batch: embed, then per layer
 * norm -> attention -> residual -> norm -> FFN or MoE -> residual, then the
 * output head. The same code runs a prompt (many tokens of one context), a
 * decode step (one token), and a batch of several contexts' tokens at once:
 * every weight matrix is read once per step, whoever the tokens belong to.
 */
#include <string.h>

#include "engine.h"
#include "model/attention.h"
#include "model/moe.h"

int lmoe_forward(struct lmoe_engine *e, const int32_t *tokens, int T, float *const *out, const int *out_rows,
                 int n_out) {
    const struct lmoe_model *m = &e->model;
    const struct lmoe_hparams *hp = &m->hp;
    struct lmoe_compute *cp = &e->compute;
    struct lmoe_scratch *s = &e->s;
    int n_embd = hp->n_embd;
    for (int t = 0; t < T; t++) op_get_row(cp, &m->tok_embd, 0, tokens[t], s->x + (size_t)t * n_embd);
    for (int il = 0; il < hp->n_layer; il++) {
        const struct lmoe_layer *L = &m->layers[il];
        for (int t = 0; t < T; t++)
            op_rmsnorm(s->xn + (size_t)t * n_embd, s->x + (size_t)t * n_embd, L->attn_norm.data, n_embd,
                       hp->rms_eps);
        if (hp->arch == LMOE_ARCH_DEEPSEEK2) lmoe_attention_mla(e, il, T);
        else lmoe_attention_gqa(e, il, T);
        for (size_t i = 0; i < (size_t)T * n_embd; i++) s->x[i] += s->attn_out[i];
        for (int t = 0; t < T; t++)
            op_rmsnorm(s->xn + (size_t)t * n_embd, s->x + (size_t)t * n_embd, L->ffn_norm.data, n_embd,
                       hp->rms_eps);
        if (L->is_moe) lmoe_ffn_moe(e, il, T);
        else lmoe_ffn_dense(e, il, T);
        for (size_t i = 0; i < (size_t)T * n_embd; i++) s->x[i] += s->ffn_out[i];
    }
    if (!out || n_out == 0) return 0;
    /* Only the rows asked for go through the output head, the largest
     * matrix of small models; in groups of LMOE_N_OUT rows, so the logits
     * scratch stays small when a whole prompt's rows are wanted. */
    for (int g = 0; g < n_out; g += LMOE_N_OUT) {
        int k = n_out - g < LMOE_N_OUT ? n_out - g : LMOE_N_OUT;
        for (int i = 0; i < k; i++)
            op_rmsnorm(s->xn + (size_t)i * n_embd, s->x + (size_t)out_rows[g + i] * n_embd, m->output_norm.data,
                       n_embd, hp->rms_eps);
        op_matmul(cp, &m->output, 0, s->xn, n_embd, k, s->logits, hp->n_vocab);
        for (int i = 0; i < k; i++)
            memcpy(out[g + i], s->logits + (size_t)i * hp->n_vocab, sizeof(float) * (size_t)hp->n_vocab);
    }
    return 0;
}
