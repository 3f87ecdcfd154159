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
#include "model/ops_fp8.h"
#include "quant/quant.h"

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


/* ---- decode: every selected expert in two pool jobs ----------------------
 *
 * A decode step's MoE layer is small matrices: with one token, each of the
 * k selected experts and the shared expert is three products of a few MB,
 * and running them one op_matmul at a time costs two pool round trips each
 * (about 20 per layer, 500 per token on DeepSeek-V2-Lite), with both cores
 * idling at every join. For a few tokens the layer instead runs as
 *   job 1: gate and up rows of every (expert, token) pair, one item list;
 *   job 2: down rows of the output, each item summing all experts' shares.
 * Each output element is computed by the same kernel calls and summed in
 * the same order as lmoe_ffn_moe's per-expert route (shared expert first,
 * then experts by id, tokens in order), so both routes give the same bits
 * and a sequence decodes the same alone or batched. */

/* Tokens up to which the fused route is taken; above it (prompts) the
 * per-expert route reads each expert once for many tokens anyway. */
#define MOE_FUSED_MAX_T 1
/* Output rows per work item: a multiple of the gemm tiles' 4 rows. */
#define MOE_FUSED_ROWS 16

struct fused_slot {
    const struct lmoe_tensor *gate, *up, *down;
    int expert;      /* index into the 3-D tensors; 0 for the shared expert */
    int n_ff, n;     /* hidden width; tokens routed here */
    int first;       /* their entries start at s->expert_tok[first] */
    size_t h_off;    /* this slot's hidden rows start at gate/up + h_off */
    size_t qh_off;   /* and their quantized form at qh + qh_off */
    size_t qh_bytes; /* bytes of one quantized hidden row */
    int units0;      /* first job-1 item of this slot */
    int shared;      /* 1: the shared expert (weight 1, stored not added) */
};

struct fused_job {
    struct lmoe_engine *e;
    struct fused_slot *slots;
    int n_slots, k;
    const uint8_t *qx; /* quantized xn rows */
    size_t qx_bytes;
    uint8_t *qh;       /* quantized hidden rows */
};

static void fused_matmul(const struct lmoe_kernels *kt, const struct lmoe_tensor *W, int expert, int r0, int r1,
                         const void *act, float *y) {
    const uint8_t *w = lmoe_tensor_matrix(W, expert) + (size_t)r0 * W->row_bytes;
    int n = (int)W->ne[0];
    lmoe_gemm_fn gemm = kt->gemm[W->type];
    if (gemm) {
        gemm(n, r1 - r0, 1, w, W->row_bytes, act, 0, y, 0);
        return;
    }
    lmoe_vec_dot_fn dot = kt->vec_dot[W->type];
    for (int r = 0; r < r1 - r0; r++) y[r] = dot(n, w + (size_t)r * W->row_bytes, act);
}

/* Job 1 items: per slot, MOE_FUSED_ROWS-row units of gate then of up. */
static void fused_gate_up(void *arg, int i0, int i1, int ith) {
    (void)ith;
    struct fused_job *j = arg;
    struct lmoe_scratch *s = &j->e->s;
    const struct lmoe_kernels *kt = j->e->compute.k;
    int si = 0;
    for (int i = i0; i < i1; i++) {
        while (si + 1 < j->n_slots && j->slots[si + 1].units0 <= i) si++;
        const struct fused_slot *sl = &j->slots[si];
        int per = (sl->n_ff + MOE_FUSED_ROWS - 1) / MOE_FUSED_ROWS, u = i - sl->units0;
        int is_up = u >= per;
        int r0 = (is_up ? u - per : u) * MOE_FUSED_ROWS;
        int r1 = r0 + MOE_FUSED_ROWS < sl->n_ff ? r0 + MOE_FUSED_ROWS : sl->n_ff;
        float *out = (is_up ? s->up : s->gate) + sl->h_off;
        for (int m = 0; m < sl->n; m++) {
            int t = sl->shared ? m : s->expert_tok[sl->first + m] / j->k;
            fused_matmul(kt, is_up ? sl->up : sl->gate, sl->expert, r0, r1, j->qx + (size_t)t * j->qx_bytes,
                         out + (size_t)m * sl->n_ff + r0);
        }
    }
}

/* Job 2 items: MOE_FUSED_ROWS-row units of the output, all slots each. */
static void fused_down(void *arg, int i0, int i1, int ith) {
    struct fused_job *j = arg;
    struct lmoe_scratch *s = &j->e->s;
    const struct lmoe_kernels *kt = j->e->compute.k;
    int n_embd = j->e->model.hp.n_embd;
    float *tmp = j->e->compute.row_scratch + (size_t)ith * (size_t)j->e->compute.max_cols;
    for (int i = i0; i < i1; i++) {
        int r0 = i * MOE_FUSED_ROWS, r1 = r0 + MOE_FUSED_ROWS < n_embd ? r0 + MOE_FUSED_ROWS : n_embd;
        for (int si = 0; si < j->n_slots; si++) {
            const struct fused_slot *sl = &j->slots[si];
            for (int m = 0; m < sl->n; m++) {
                int entry = sl->shared ? -1 : s->expert_tok[sl->first + m];
                int t = sl->shared ? m : entry / j->k;
                fused_matmul(kt, sl->down, sl->expert, r0, r1, j->qh + sl->qh_off + (size_t)m * sl->qh_bytes, tmp);
                float *y = s->ffn_out + (size_t)t * n_embd + r0;
                if (sl->shared) memcpy(y, tmp, sizeof(float) * (size_t)(r1 - r0));
                else kt->axpy_f32(y, s->sel_w[entry], tmp, r1 - r0);
            }
        }
    }
}

/* Whether W can go through the fused route: integer dot products against
 * activations of act_type. */
static int fused_ok(const struct lmoe_kernels *kt, const struct lmoe_tensor *W) {
    return W->data && !op_is_fp8(W) && W->type < LMOE_DTYPE_COUNT && kt->vec_dot[W->type] &&
           lmoe_vec_dot_act_type(W->type) != LMOE_DTYPE_F32;
}

/* The routed and shared experts of T tokens whose routing is in
 * s->sel_ids / sel_w, added into s->ffn_out. Returns 0, or -1 (nothing
 * written) when a tensor type or a buffer size rules the route out. */
static int moe_fused(struct lmoe_engine *e, const struct lmoe_layer *L, int T) {
    const struct lmoe_hparams *hp = &e->model.hp;
    const struct lmoe_kernels *kt = e->compute.k;
    struct lmoe_scratch *s = &e->s;
    int k = hp->n_expert_used, n_embd = hp->n_embd, has_sh = L->gate_shexp.data != NULL;
    if (!kt->quantized_matmul || T > MOE_FUSED_MAX_T || T * (k + 1) > s->n_batch) return -1;
    if (!fused_ok(kt, &L->gate_exps) || !fused_ok(kt, &L->up_exps) || !fused_ok(kt, &L->down_exps)) return -1;
    uint32_t xt = lmoe_vec_dot_act_type(L->gate_exps.type);
    if (lmoe_vec_dot_act_type(L->up_exps.type) != xt) return -1;
    if (has_sh && (!fused_ok(kt, &L->gate_shexp) || !fused_ok(kt, &L->up_shexp) || !fused_ok(kt, &L->down_shexp) ||
                   lmoe_vec_dot_act_type(L->gate_shexp.type) != xt || lmoe_vec_dot_act_type(L->up_shexp.type) != xt))
        return -1;
    size_t qx_bytes = lmoe_vec_dot_act_bytes(L->gate_exps.type, n_embd);
    if (!qx_bytes || qx_bytes * (size_t)T > e->compute.act_scratch_bytes || MOE_FUSED_ROWS > e->compute.max_cols)
        return -1;

    /* Slots: the shared expert (all T tokens), then each selected expert
     * by id with the (token, choice) entries that picked it. */
    struct fused_slot slots[LMOE_N_BATCH + 1]; /* T * k + 1 at most, T * (k + 1) <= n_batch */
    int n_slots = 0, n_entries = 0, units = 0;
    size_t h_off = 0, qh_off = 0;
    int max_slots = (int)(sizeof slots / sizeof slots[0]);
    for (int x = -1; x < hp->n_expert; x++) {
        struct fused_slot sl = {0};
        if (x < 0) {
            if (!has_sh) continue;
            sl.gate = &L->gate_shexp, sl.up = &L->up_shexp, sl.down = &L->down_shexp;
            sl.n_ff = (int)L->gate_shexp.ne[1], sl.n = T, sl.shared = 1;
        } else {
            sl.gate = &L->gate_exps, sl.up = &L->up_exps, sl.down = &L->down_exps;
            sl.expert = x, sl.n_ff = (int)L->gate_exps.ne[1], sl.first = n_entries;
            for (int i = 0; i < T * k; i++)
                if (s->sel_ids[i] == x) s->expert_tok[n_entries++] = i;
            sl.n = n_entries - sl.first;
            if (!sl.n) continue;
        }
        if (n_slots == max_slots) return -1;
        sl.h_off = h_off;
        sl.qh_off = qh_off;
        sl.qh_bytes = lmoe_vec_dot_act_bytes(sl.down->type, sl.n_ff);
        sl.units0 = units;
        h_off += (size_t)sl.n * (size_t)sl.n_ff;
        qh_off += (size_t)sl.n * sl.qh_bytes;
        units += 2 * ((sl.n_ff + MOE_FUSED_ROWS - 1) / MOE_FUSED_ROWS);
        slots[n_slots++] = sl;
    }
    /* Hidden rows live in gate/up (sized for n_batch rows of the widest
     * FFN); their quantized form in the gather buffer. */
    int n_ff_max = hp->n_ff > hp->n_ff_exp ? hp->n_ff : hp->n_ff_exp;
    if (hp->n_ff_exp * hp->n_expert_shared > n_ff_max) n_ff_max = hp->n_ff_exp * hp->n_expert_shared;
    if (h_off > (size_t)s->n_batch * (size_t)n_ff_max || qh_off > sizeof(float) * (size_t)s->n_batch * n_embd)
        return -1;

    struct fused_job j = {e, slots, n_slots, k, e->compute.act_scratch, qx_bytes, (uint8_t *)s->gather};
    for (int t = 0; t < T; t++)
        kt->quantize_act(xt, s->xn + (size_t)t * n_embd, e->compute.act_scratch + (size_t)t * qx_bytes, n_embd);
    lmoe_pool_for(e->compute.pool, units, 1, fused_gate_up, &j);
    for (int si = 0; si < n_slots; si++) {
        const struct fused_slot *sl = &slots[si];
        uint32_t ht = lmoe_vec_dot_act_type(sl->down->type);
        for (int m = 0; m < sl->n; m++) {
            float *g = s->gate + sl->h_off + (size_t)m * sl->n_ff, *u = s->up + sl->h_off + (size_t)m * sl->n_ff;
            for (int i = 0; i < sl->n_ff; i++) g[i] = op_silu(g[i]) * u[i];
            kt->quantize_act(ht, g, j.qh + sl->qh_off + (size_t)m * sl->qh_bytes, sl->n_ff);
        }
    }
    if (!has_sh) memset(s->ffn_out, 0, sizeof(float) * (size_t)T * n_embd);
    lmoe_pool_for(e->compute.pool, (n_embd + MOE_FUSED_ROWS - 1) / MOE_FUSED_ROWS, 1, fused_down, &j);
    return 0;
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
    if (moe_fused(e, L, T) == 0) return;
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
