/*
 * fp8.h - inner loops for FP8 weights with 128 x 128 block scales (the
 * format is in quant/quant.h). A scalar reference and, on x86-64, an AVX2
 * version entered only after a CPU check; tests/test_hf.c holds the fast
 * one to the reference.
 */
#ifndef LMOE_KERNELS_FP8_H
#define LMOE_KERNELS_FP8_H

#include <stdint.h>

/* sum over c < n of f8(w[c]) * x[c] * scale[c / 128]: one row of a matrix
 * against f32 activations, scale pointing at the row's block-row scales.
 * Per block, a float sum of the products, then times the block's scale. */
typedef float (*lmoe_fp8_dot_fn)(const uint8_t *w, const float *scale, const float *x, int n);
/* dst[c] = f8(w[c]) * scale[c / 128] for c < n. */
typedef void (*lmoe_fp8_row_fn)(const uint8_t *w, const float *scale, float *dst, int n);

struct lmoe_fp8_kernels {
    const char *name;
    lmoe_fp8_dot_fn dot_e4m3, dot_e5m2;
    lmoe_fp8_row_fn row_e4m3, row_e5m2;
};

extern const struct lmoe_fp8_kernels lmoe_fp8_kernels_ref;

/* The fastest table this CPU runs ("avx2" where it has AVX2, FMA and F16C,
 * else the reference). Constant. */
const struct lmoe_fp8_kernels *lmoe_fp8_kernels_best(void);

#endif
