/*
 * ops.c - forward-step operations shared by every architecture.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "leanmoe.h"
#include "model/ops.h"
#include "model/ops_fp8.h"
#include "quant/quant.h"

struct matmul_job {
    struct lmoe_compute *c;
    const uint8_t *w; /* first row of the expert's matrix */
    size_t row_bytes;
    uint32_t type;
    int n_in, n_out, T, ldx, ldy;
    const float *x;
    float *y;
    /* quantized route: activation row t is act + t * act_stride bytes */
    lmoe_vec_dot_fn dot;
    lmoe_gemm_fn gemm; /* multi-token tiles, when the table has them */
    const uint8_t *act;
    size_t act_stride;
};

/* Rows are handed to threads in units of this many, the row count of the
 * kernels' gemm tiles, so that no tile is split between two chunks. */
#define MATMUL_ROW_UNIT 4

/* Rows [r0, r1): decode each weight row once (F32 rows are used in place),
 * then one dot product per token. The reference route. */
static void matmul_rows(void *arg, int r0, int r1, int ith) {
    struct matmul_job *j = arg;
    const struct lmoe_kernels *k = j->c->k;
    float *buf = j->c->row_scratch + (size_t)ith * (size_t)j->c->max_cols;
    for (int r = r0; r < r1; r++) {
        const void *row = j->w + (size_t)r * j->row_bytes;
        const float *wr = row;
        if (j->type != LMOE_DTYPE_F32) {
            k->dequantize_row(j->type, row, buf, j->n_in);
            wr = buf;
        }
        for (int t = 0; t < j->T; t++)
            j->y[(size_t)t * j->ldy + r] = k->dot_f32(wr, j->x + (size_t)t * j->ldx, j->n_in);
    }
}

/* Rows [r0, r1) by vec_dot against the prepared activation rows. Tokens
 * are the inner loop so that one weight row, read from memory once, stays
 * in L1 while every token uses it. */
static void matmul_rows_vec_dot(void *arg, int r0, int r1, int ith) {
    (void)ith;
    struct matmul_job *j = arg;
    for (int r = r0; r < r1; r++) {
        const void *row = j->w + (size_t)r * j->row_bytes;
        for (int t = 0; t < j->T; t++)
            j->y[(size_t)t * j->ldy + r] = j->dot(j->n_in, row, j->act + (size_t)t * j->act_stride);
    }
}

/* Row units [u0, u1) by the table's gemm: each weight block is read once
 * for up to four tokens (see lmoe_gemm_fn), with the same bits per output
 * as vec_dot, so it serves T = 1 too. */
static void matmul_units_gemm(void *arg, int u0, int u1, int ith) {
    (void)ith;
    struct matmul_job *j = arg;
    int r0 = u0 * MATMUL_ROW_UNIT, r1 = u1 * MATMUL_ROW_UNIT;
    if (r1 > j->n_out) r1 = j->n_out;
    j->gemm(j->n_in, r1 - r0, j->T, j->w + (size_t)r0 * j->row_bytes, j->row_bytes, j->act, j->act_stride,
            j->y + r0, (size_t)j->ldy);
}

/* Activation rows [t0, t1) quantized into the scratch. */
static void quantize_rows(void *arg, int t0, int t1, int ith) {
    (void)ith;
    struct matmul_job *j = arg;
    uint32_t act_type = lmoe_vec_dot_act_type(j->type);
    uint8_t *dst = j->c->act_scratch;
    for (int t = t0; t < t1; t++)
        j->c->k->quantize_act(act_type, j->x + (size_t)t * j->ldx, dst + (size_t)t * j->act_stride, j->n_in);
}

int op_compute_open(struct lmoe_compute *c, const struct lmoe_kernels *k, int n_threads, int max_cols) {
    memset(c, 0, sizeof(*c));
    c->k = k;
    c->max_cols = max_cols;
    c->pool = lmoe_pool_open(n_threads);
    c->row_scratch = malloc(sizeof(float) * (size_t)(n_threads > 0 ? n_threads : 1) * (size_t)max_cols);
    c->act_scratch_bytes = op_matmul_scratch_bytes(max_cols);
    c->act_scratch = malloc(c->act_scratch_bytes);
    if (c->pool && c->row_scratch && c->act_scratch) return 0;
    op_compute_close(c);
    return LMOE_ERR_NOMEM;
}

void op_compute_close(struct lmoe_compute *c) {
    lmoe_pool_close(c->pool);
    free(c->row_scratch);
    free(c->act_scratch);
    memset(c, 0, sizeof(*c));
}

size_t op_matmul_scratch_bytes(int max_cols) {
    /* Q8_K takes the most bytes per element (292 per 256, against Q8_0's
     * 34 per 32), so rows rounded up to 256 elements bound both. */
    int64_t n = ((int64_t)max_cols + LMOE_QK_K - 1) / LMOE_QK_K * LMOE_QK_K;
    return (size_t)LMOE_MATMUL_ACT_ROWS * (size_t)lmoe_dtype_row_size(LMOE_DTYPE_Q8_K, n);
}

/* Smallest share of a matrix product worth handing to another thread, in
 * bytes of weights times tokens: claiming a chunk costs an atomic add on a
 * shared line, and waking a sleeping worker a few microseconds, so a
 * matrix whose whole product is below this (per-head MLA matrices, 512 x
 * 128 in Q5_0, about 45 KB) runs on the calling thread alone, and bigger
 * ones are cut into chunks no smaller than this. About 10 microseconds of
 * work at one core's share of the memory bandwidth. */
#define MATMUL_MIN_CHUNK_BYTES (128 * 1024)

/* Items per chunk for n items of item_cost bytes each: at least
 * MATMUL_MIN_CHUNK_BYTES, so small matrices stay on one thread. */
static int min_chunk_items(int n, size_t item_cost) {
    size_t c = item_cost ? (MATMUL_MIN_CHUNK_BYTES + item_cost - 1) / item_cost : (size_t)n;
    return c > (size_t)n ? n : (int)c;
}

void op_matmul(struct lmoe_compute *c, const struct lmoe_tensor *W, int expert,
               const float *x, int ldx, int T, float *y, int ldy) {
    if (op_is_fp8(W)) {
        op_matmul_fp8(c, W, expert, x, ldx, T, y, ldy);
        return;
    }
    int n_out = (int)W->ne[1];
    struct matmul_job j = {
        .c = c,
        .w = lmoe_tensor_matrix(W, expert),
        .row_bytes = W->row_bytes,
        .type = W->type,
        .n_in = (int)W->ne[0],
        .n_out = n_out,
        .T = T, .ldx = ldx, .ldy = ldy, .x = x, .y = y,
    };
    j.dot = c->k->quantized_matmul && W->type < LMOE_DTYPE_COUNT ? c->k->vec_dot[W->type] : NULL;
    j.gemm = j.dot ? c->k->gemm[W->type] : NULL;
    uint32_t act_type = lmoe_vec_dot_act_type(W->type);
    size_t act_bytes = lmoe_vec_dot_act_bytes(W->type, j.n_in);
    /* What one row costs, in weight bytes streamed per token batch; the
     * reference route decodes rows, which costs about 4 bytes per element. */
    size_t row_cost = W->row_bytes * (size_t)(T < LMOE_MATMUL_ACT_ROWS ? T : LMOE_MATMUL_ACT_ROWS);
    if (j.dot && act_type == LMOE_DTYPE_F32) {
        /* Float weights: the f32 activations as they are. */
        j.act = (const uint8_t *)x;
        j.act_stride = (size_t)ldx * sizeof(float);
        lmoe_pool_for(c->pool, n_out, min_chunk_items(n_out, row_cost), matmul_rows_vec_dot, &j);
        return;
    }
    if (!j.dot || !act_bytes || act_bytes * LMOE_MATMUL_ACT_ROWS > c->act_scratch_bytes) {
        row_cost = (size_t)j.n_in * 4 * (size_t)T;
        lmoe_pool_for(c->pool, n_out, min_chunk_items(n_out, row_cost), matmul_rows, &j);
        return;
    }
    /* Quantized route, up to LMOE_MATMUL_ACT_ROWS tokens at a time: each
     * activation row is quantized once, by one thread, then shared by
     * every weight row. */
    j.act = c->act_scratch;
    j.act_stride = act_bytes;
    int n_units = (n_out + MATMUL_ROW_UNIT - 1) / MATMUL_ROW_UNIT;
    for (int t0 = 0; t0 < T; t0 += LMOE_MATMUL_ACT_ROWS) {
        j.T = T - t0 < LMOE_MATMUL_ACT_ROWS ? T - t0 : LMOE_MATMUL_ACT_ROWS;
        j.x = x + (size_t)t0 * (size_t)ldx;
        j.y = y + (size_t)t0 * (size_t)ldy;
        if (j.T >= 4) lmoe_pool_for(c->pool, j.T, 2, quantize_rows, &j);
        else quantize_rows(&j, 0, j.T, 0);
        if (j.gemm)
            lmoe_pool_for(c->pool, n_units, min_chunk_items(n_units, row_cost * MATMUL_ROW_UNIT), matmul_units_gemm,
                          &j);
        else
            lmoe_pool_for(c->pool, n_out, min_chunk_items(n_out, row_cost), matmul_rows_vec_dot, &j);
    }
}

void op_get_row(struct lmoe_compute *c, const struct lmoe_tensor *W, int expert,
                int row, float *dst) {
    if (op_is_fp8(W)) {
        op_get_row_fp8(c, W, expert, row, dst);
        return;
    }
    const uint8_t *p = lmoe_tensor_matrix(W, expert) + (size_t)row * W->row_bytes;
    c->k->dequantize_row(W->type, p, dst, (int)W->ne[0]);
}

void op_rmsnorm(float *y, const float *x, const float *w, int n, float eps) {
    double ss = 0; /* double: the mean of squares of 7168 values loses bits in float */
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) y[i] = x[i] * scale * (w ? w[i] : 1.0f);
}

void op_softmax(float *x, int n) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

float op_silu(float x) { return x / (1.0f + expf(-x)); }

void op_rope_freqs(const struct lmoe_hparams *hp, float *inv_freq) {
    int half = hp->n_rot / 2;
    double base = hp->rope_base, s = hp->rope_scale;
    /* YaRN keeps high frequencies (dims below `low`) as they are, divides
     * low frequencies (dims above `high`) by the scale, and blends linearly
     * in between; low/high are the dims whose wavelength fits beta_fast and
     * beta_slow rotations into the original context. */
    double low = 0, high = 0;
    if (hp->rope_yarn) {
        double n = hp->n_rot, ctx = hp->rope_orig_ctx;
        low = floor(n * log(ctx / (hp->yarn_beta_fast * 2 * M_PI)) / (2 * log(base)));
        high = ceil(n * log(ctx / (hp->yarn_beta_slow * 2 * M_PI)) / (2 * log(base)));
        if (low < 0) low = 0;
        if (high > n - 1) high = n - 1;
        if (low == high) high += 0.001;
    }
    for (int i = 0; i < half; i++) {
        float pos_freq = (float)pow(base, (double)(2 * i) / hp->n_rot);
        float extrap = 1.0f / pos_freq, interp = 1.0f / ((float)s * pos_freq);
        if (hp->rope_yarn) {
            double ramp = (i - low) / (high - low);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            float keep = (float)(1.0 - ramp); /* share of the unscaled frequency */
            inv_freq[i] = interp * (1 - keep) + extrap * keep;
        } else {
            inv_freq[i] = s != 1.0 ? interp : extrap;
        }
    }
}

void op_rope(float *v, int n_rot, int pos, enum lmoe_rope_mode mode,
             const float *inv_freq, float mag) {
    int half = n_rot / 2;
    for (int i = 0; i < half; i++) {
        float theta = (float)pos * inv_freq[i];
        float cs = cosf(theta) * mag, sn = sinf(theta) * mag;
        int a = mode == LMOE_ROPE_NEOX ? i : 2 * i;
        int b = mode == LMOE_ROPE_NEOX ? i + half : 2 * i + 1;
        float x0 = v[a], x1 = v[b];
        v[a] = x0 * cs - x1 * sn;
        v[b] = x0 * sn + x1 * cs;
    }
}
