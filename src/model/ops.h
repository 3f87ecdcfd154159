/*
 * ops.h - the operations a forward step is made of: matrix products over
 * quantized weights (threaded over output rows), norms, rotary embedding,
 * softmax. Model code is a list of calls to these.
 */
#ifndef LMOE_OPS_H
#define LMOE_OPS_H

#include "kernels/kernels.h"
#include "model/model.h"
#include "threadpool.h"

/* Activation rows op_matmul quantizes at once; a call with more tokens
 * goes through them in chunks of this many. */
#define LMOE_MATMUL_ACT_ROWS 64

/* What an op needs to run: threads, kernels and per-thread row scratch. */
struct lmoe_compute {
    struct lmoe_pool *pool;
    const struct lmoe_kernels *k;
    float *row_scratch; /* n_threads * max_cols floats */
    int max_cols;
    /* op_matmul's quantized activations: LMOE_MATMUL_ACT_ROWS rows of
     * max_cols, op_matmul_scratch_bytes(max_cols) bytes. Like row_scratch
     * it is the engine's, used by one forward step at a time. */
    void *act_scratch;
    size_t act_scratch_bytes;
};

/* Starts the pool and allocates both scratches for weights of up to
 * max_cols columns. 0, or LMOE_ERR_NOMEM with nothing left allocated.
 * close frees what open made; a zeroed struct closes safely. */
int op_compute_open(struct lmoe_compute *c, const struct lmoe_kernels *k, int n_threads, int max_cols);
void op_compute_close(struct lmoe_compute *c);

/* Bytes of act_scratch for rows of up to max_cols elements. */
size_t op_matmul_scratch_bytes(int max_cols);

/* y[t][r] = sum_i W[r][i] * x[t][i] for t < T and every output row r of W
 * (of expert `expert` when W is 3-D). x rows are ldx floats apart, y rows
 * ldy. With a table whose quantized_matmul is set and a W type it has a
 * vec_dot for, the x rows are quantized once (Q8_0/Q8_K) and each weight
 * row is multiplied with them by integer dot products (through the table's
 * gemm tiles where it has them, which give vec_dot's bits); float weights
 * take x as it is. Matrices of less than about 128 KB of work run on the
 * calling thread, bigger ones are split over the pool in chunks of whole
 * 4-row tiles. Otherwise (LMOE_ISA=ref) each weight row is decoded to
 * floats once and used for all T tokens. Either way each y element is
 * written by one thread, so results do not depend on the thread count. */
void op_matmul(struct lmoe_compute *c, const struct lmoe_tensor *W, int expert,
               const float *x, int ldx, int T, float *y, int ldy);

/* dst = row `row` of W (expert `expert`), as floats. */
void op_get_row(struct lmoe_compute *c, const struct lmoe_tensor *W, int expert,
                int row, float *dst);

/* y = x / rms(x) * w, over n floats; y may equal x. w may be NULL (= 1). */
void op_rmsnorm(float *y, const float *x, const float *w, int n, float eps);

/* Softmax of x in place. */
void op_softmax(float *x, int n);

/* x * sigmoid(x) */
float op_silu(float x);

/* The n_rot/2 rotary frequencies of a model, YaRN blend included. */
void op_rope_freqs(const struct lmoe_hparams *hp, float *inv_freq);

/* Rotates the first n_rot dims of v for position pos, as adjacent pairs
 * (NORM) or as halves (NEOX), scaling cos and sin by mag. */
void op_rope(float *v, int n_rot, int pos, enum lmoe_rope_mode mode,
             const float *inv_freq, float mag);

#endif
