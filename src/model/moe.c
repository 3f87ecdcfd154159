/*
 * moe.c - feed-forward blocks: the dense SwiGLU FFN and the mixture of
 * experts (router, group-limited top-k, routed and shared experts).
 *
 * A micro-batch's tokens are grouped by expert, so each selected expert's
 * weights are decoded once per batch rather than once per token.
 */
#include <math.h>
#include <string.h>

#include "engine.h"
#include "model/moe.h"

/* out[t] = down(silu(gate x[t]) * up x[t]) for T rows of x. */
static void swiglu(struct lmoe_engine *e, const struct lmoe_tensor *gate, const struct lmoe_tensor *up,
                   const struct lmoe_tensor *down, int expert, const float *x, int T, float *out) {
    struct lmoe_compute *cp = &e->compute;
    struct lmoe_scratch *s = &e->s;
    int n_embd = e->model.hp.n_embd, n_ff = (int)gate->ne[1];
    op_matmul(cp, gate, expert, x, n_embd, T, s->gate, n_ff);
    op_matmul(cp, up, expert, x, n_embd, T, s->up, n_ff);
    for (size_t i = 0; i < (size_t)T * n_ff; i++) s->gate[i] = op_silu(s->gate[i]) * s->up[i];
    op_matmul(cp, down, expert, s->gate, n_ff, T, out, n_embd);
}

void lmoe_ffn_dense(struct lmoe_engine *e, int il, int T) {
    const struct lmoe_layer *L = &e->model.layers[il];
    swiglu(e, &L->ffn_gate, &L->ffn_up, &L->ffn_down, 0, e->s.xn, T, e->s.ffn_out);
}

/* Chooses n_expert_used experts for one token from router logits, filling
 * ids and weights. The selection score is the gate probability plus the
 * optional per-expert bias (DeepSeek-V3); the weight is the probability
 * without the bias. With groups, only experts in the best n_group_used
 * groups compete: a group scores its best expert under softmax gating
 * (DeepSeek-V2) and the sum of its best two under sigmoid gating (V3). */
static void route_token(const struct lmoe_hparams *hp, const float *bias, float *logits,
                        int *ids, float *w) {
    int ne = hp->n_expert, k = hp->n_expert_used;
    float prob[ne], sel[ne];
    if (hp->gating == LMOE_GATING_SIGMOID)
        for (int e = 0; e < ne; e++) prob[e] = 1.0f / (1.0f + expf(-logits[e]));
    else {
        memcpy(prob, logits, sizeof prob);
        op_softmax(prob, ne);
    }
    for (int e = 0; e < ne; e++) sel[e] = prob[e] + (bias ? bias[e] : 0.0f);
    if (hp->n_group > 1 && hp->n_group_used < hp->n_group) {
        int per = ne / hp->n_group, ng = hp->n_group;
        float gscore[ng];
        for (int g = 0; g < ng; g++) {
            float b1 = -INFINITY, b2 = -INFINITY;
            for (int e = g * per; e < (g + 1) * per; e++) {
                if (sel[e] > b1) { b2 = b1; b1 = sel[e]; }
                else if (sel[e] > b2) b2 = sel[e];
            }
            gscore[g] = hp->gating == LMOE_GATING_SIGMOID && per > 1 ? b1 + b2 : b1;
        }
        int keep[ng];
        memset(keep, 0, sizeof keep);
        for (int n = 0; n < hp->n_group_used; n++) {
            int best = -1;
            for (int g = 0; g < ng; g++)
                if (!keep[g] && (best < 0 || gscore[g] > gscore[best])) best = g;
            keep[best] = 1;
        }
        for (int e = 0; e < ne; e++)
            if (!keep[e / per]) sel[e] = -INFINITY;
    }
    /* Top-k by repeated selection: k is small (2..8) next to n_expert. */
    double sum = 0;
    for (int n = 0; n < k; n++) {
        int best = -1;
        for (int e = 0; e < ne; e++)
            if (sel[e] != -INFINITY && (best < 0 || sel[e] > sel[best])) best = e;
        if (best < 0) best = 0; /* unreachable: the loader checks k fits */
        ids[n] = best;
        w[n] = prob[best];
        sum += prob[best];
        sel[best] = -INFINITY;
    }
    for (int n = 0; n < k; n++) {
        if (hp->expert_norm) w[n] = (float)(w[n] / (sum + 1e-20));
        w[n] *= hp->expert_scale;
    }
}

void lmoe_ffn_moe(struct lmoe_engine *e, int il, int T) {
    const struct lmoe_hparams *hp = &e->model.hp;
    const struct lmoe_layer *L = &e->model.layers[il];
    struct lmoe_scratch *s = &e->s;
    int ne = hp->n_expert, k = hp->n_expert_used, n_embd = hp->n_embd;
    op_matmul(&e->compute, &L->gate_inp, 0, s->xn, n_embd, T, s->router, ne);
    for (int t = 0; t < T; t++)
        route_token(hp, L->exp_probs_b.data, s->router + (size_t)t * ne, s->sel_ids + (size_t)t * k,
                    s->sel_w + (size_t)t * k);
    /* Shared experts (or nothing) first, then each routed expert adds its
     * weighted output for the tokens that chose it. */
    if (L->gate_shexp.data)
        swiglu(e, &L->gate_shexp, &L->up_shexp, &L->down_shexp, 0, s->xn, T, s->ffn_out);
    else
        memset(s->ffn_out, 0, sizeof(float) * (size_t)T * n_embd);
    for (int x = 0; x < ne; x++) {
        int n = 0;
        for (int t = 0; t < T; t++)
            for (int j = 0; j < k; j++)
                if (s->sel_ids[t * k + j] == x) {
                    s->expert_tok[n] = t * k + j;
                    memcpy(s->gather + (size_t)n * n_embd, s->xn + (size_t)t * n_embd, sizeof(float) * (size_t)n_embd);
                    n++;
                }
        if (!n) continue; /* unselected experts are never read */
        swiglu(e, &L->gate_exps, &L->up_exps, &L->down_exps, x, s->gather, n, s->down);
        for (int i = 0; i < n; i++) {
            int t = s->expert_tok[i] / k;
            e->compute.k->axpy_f32(s->ffn_out + (size_t)t * n_embd, s->sel_w[s->expert_tok[i]],
                                   s->down + (size_t)i * n_embd, n_embd);
        }
    }
}
