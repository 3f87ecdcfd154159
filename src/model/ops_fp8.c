/*
 * ops_fp8.c - matrix products over FP8 weights with 128 x 128 block scales,
 * straight from the published bytes (no load-time dequantization).
 *
 * A row r of the matrix uses block row r / 128 of the scales; for a row view
 * (attention.c's slices of DeepSeek's joined kv_b) the scale row is counted
 * from the original matrix, scale_row0 + r. Threading follows op_matmul:
 * rows are split between workers, each output written by one of them.
 */
#include <stddef.h>

#include "kernels/fp8.h"
#include "model/ops_fp8.h"
#include "quant/quant.h"

/* Smallest share of a product worth another thread, in weight bytes times
 * tokens (as MATMUL_MIN_CHUNK_BYTES in ops.c). */
#define FP8_MIN_CHUNK_BYTES (128 * 1024)

struct fp8_job {
    struct lmoe_compute *c;
    const struct lmoe_fp8_kernels *fk; /* NULL: the reference route */
    uint32_t type;
    const uint8_t *w;   /* the expert's first row */
    const float *scale; /* the expert's scales */
    int64_t n_col_blocks, row0;
    int n_in, T, ldx, ldy;
    const float *x;
    float *y;
};

/* The scales of row r (block-row base). */
static const float *row_scales(const struct fp8_job *j, int r) {
    return j->scale + (j->row0 + r) / LMOE_FP8_BLOCK * j->n_col_blocks;
}

static void fp8_rows(void *arg, int r0, int r1, int ith) {
    struct fp8_job *j = arg;
    float *buf = j->c->row_scratch + (size_t)ith * (size_t)j->c->max_cols;
    int e5 = j->type == LMOE_DTYPE_F8_E5M2_B128;
    lmoe_fp8_dot4_fn dot4 = j->fk && j->T == 1 ? (e5 ? j->fk->dot4_e5m2 : j->fk->dot4_e4m3) : NULL;
    lmoe_fp8_gemm4_fn gemm4 = j->fk && j->T > 1 ? (e5 ? j->fk->gemm4_e5m2 : j->fk->gemm4_e4m3) : NULL;
    if (gemm4) {
        /* Several tokens: four rows at a time meet every token in registers. */
        for (int r = r0; r < r1; r += 4) {
            const int nr = r1 - r < 4 ? r1 - r : 4;
            const uint8_t *w[4];
            const float *s[4];
            for (int k = 0; k < nr; k++) {
                w[k] = j->w + (size_t)(r + k) * (size_t)j->n_in;
                s[k] = row_scales(j, r + k);
            }
            gemm4(w, s, nr, j->x, (size_t)j->ldx, j->T, j->n_in, j->y + r, (size_t)j->ldy);
        }
        return;
    }
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = j->w + (size_t)r * (size_t)j->n_in;
        const float *s = row_scales(j, r);
        if (dot4 && r + 4 <= r1 && (j->row0 + r) / LMOE_FP8_BLOCK == (j->row0 + r + 3) / LMOE_FP8_BLOCK) {
            /* Four rows of one block row at once (same results as dot). */
            dot4(row, (size_t)j->n_in, s, j->x, j->n_in, j->y + r);
            r += 3;
            continue;
        }
        if (j->fk && j->T == 1) {
            /* Decode: the row is read once, so fuse widening and dot. */
            j->y[r] = (e5 ? j->fk->dot_e5m2 : j->fk->dot_e4m3)(row, s, j->x, j->n_in);
            continue;
        }
        if (j->fk) (e5 ? j->fk->row_e5m2 : j->fk->row_e4m3)(row, s, buf, j->n_in);
        else lmoe_dequantize_row_fp8(j->type, row, j->scale, j->n_col_blocks, j->row0 + r, buf, j->n_in);
        for (int t = 0; t < j->T; t++)
            j->y[(size_t)t * j->ldy + r] = j->c->k->dot_f32(buf, j->x + (size_t)t * j->ldx, j->n_in);
    }
}

/* The job for expert `expert` of W. */
static struct fp8_job fp8_job_for(struct lmoe_compute *c, const struct lmoe_tensor *W, int expert) {
    int64_t n_row_blocks = (W->ne[1] + LMOE_FP8_BLOCK - 1) / LMOE_FP8_BLOCK;
    struct fp8_job j = {
        .c = c,
        .fk = c->k->quantized_matmul ? lmoe_fp8_kernels_for(c->k) : NULL,
        .type = W->type,
        .w = lmoe_tensor_matrix(W, expert),
        .scale = W->expert_scale ? W->expert_scale[expert]
                                 : W->block_scale + (size_t)expert * (size_t)(n_row_blocks * W->n_col_blocks),
        .n_col_blocks = W->n_col_blocks,
        .row0 = W->scale_row0,
        .n_in = (int)W->ne[0],
    };
    return j;
}

void op_matmul_fp8(struct lmoe_compute *c, const struct lmoe_tensor *W, int expert, const float *x, int ldx,
                   int T, float *y, int ldy) {
    struct fp8_job j = fp8_job_for(c, W, expert);
    j.T = T;
    j.ldx = ldx;
    j.ldy = ldy;
    j.x = x;
    j.y = y;
    int n_out = (int)W->ne[1];
    size_t row_cost = (size_t)j.n_in * (size_t)(T < 64 ? T : 64);
    size_t chunk = row_cost ? (FP8_MIN_CHUNK_BYTES + row_cost - 1) / row_cost : (size_t)n_out;
    lmoe_pool_for(c->pool, n_out, chunk > (size_t)n_out ? n_out : (int)chunk, fp8_rows, &j);
}

void op_get_row_fp8(struct lmoe_compute *c, const struct lmoe_tensor *W, int expert, int row, float *dst) {
    struct fp8_job j = fp8_job_for(c, W, expert);
    const uint8_t *p = j.w + (size_t)row * (size_t)j.n_in;
    if (j.fk)
        (j.type == LMOE_DTYPE_F8_E5M2_B128 ? j.fk->row_e5m2 : j.fk->row_e4m3)(p, row_scales(&j, row), dst, j.n_in);
    else
        lmoe_dequantize_row_fp8(j.type, p, j.scale, j.n_col_blocks, j.row0 + row, dst, j.n_in);
}
