/*
 * ops_fp8.h - op_matmul and op_get_row for FP8 weights with 128 x 128
 * block scales (LMOE_DTYPE_F8_E4M3_B128 / _E5M2_B128), computed from the
 * FP8 bytes as they are published; op_matmul and op_get_row (ops.c) hand
 * such tensors here.
 */
#ifndef LMOE_OPS_FP8_H
#define LMOE_OPS_FP8_H

#include "model/ops.h"

/* 1 if W is FP8 with block scales. */
static inline int op_is_fp8(const struct lmoe_tensor *W) { return W->block_scale || W->expert_scale; }

/* As op_matmul (ops.h): y[t][r] = sum_c W[r][c] * x[t][c], threaded over
 * rows, each y element written by one thread. With the reference kernels
 * (LMOE_ISA=ref) each row is dequantized to floats (f8 * scale, as the
 * goldens' float computation does) and dotted with dot_f32; otherwise one
 * token's row is a fused FP8 dot (per 128-block sums times the scale) and
 * several tokens go through the table's gemm4 (four rows in registers
 * against every token; a table without one shares a dequantized row
 * between the tokens' dot_f32). */
void op_matmul_fp8(struct lmoe_compute *c, const struct lmoe_tensor *W, int expert, const float *x, int ldx,
                   int T, float *y, int ldy);

/* dst = row `row` of W (expert `expert`) as floats. */
void op_get_row_fp8(struct lmoe_compute *c, const struct lmoe_tensor *W, int expert, int row, float *dst);

#endif
