/*
 * fp8.h - inner loops for FP8 weights with 128 x 128 block scales (the
 * format is in quant/quant.h). A scalar reference and, on x86-64, an AVX2
 * version entered only after a CPU check; tests/test_hf.c holds the fast
 * one to the reference.
 */
#ifndef LMOE_KERNELS_FP8_H
#define LMOE_KERNELS_FP8_H

#include <stddef.h>
#include <stdint.h>

/* sum over c < n of f8(w[c]) * x[c] * scale[c / 128]: one row of a matrix
 * against f32 activations, scale pointing at the row's block-row scales.
 * Per block, a float sum of the products, then times the block's scale. */
typedef float (*lmoe_fp8_dot_fn)(const uint8_t *w, const float *scale, const float *x, int n);
/* dst[c] = f8(w[c]) * scale[c / 128] for c < n. */
typedef void (*lmoe_fp8_row_fn)(const uint8_t *w, const float *scale, float *dst, int n);

/* Four dots: y[k] = dot(w + k * row_bytes, ...) for k < 4, the four rows
 * sharing one block row of scales; each y[k] equal to what dot gives. */
typedef void (*lmoe_fp8_dot4_fn)(const uint8_t *w, size_t row_bytes, const float *scale, const float *x, int n,
                                 float *y);

/* Several tokens against up to four rows: for r < nr and t < T,
 *   y[t * ldy + r] = sum_c (f8(w[r][c]) * scale[r][c / 128]) * x[t * ldx + c],
 * the products of the dequantized row (one rounding per element, as row
 * gives) summed in float in an order of the kernel's choosing: the same
 * value as row then dot_f32, up to summation order. Rows are only read
 * from w[r] for r < nr. */
typedef void (*lmoe_fp8_gemm4_fn)(const uint8_t *const *w, const float *const *scale, int nr, const float *x,
                                  size_t ldx, int T, int n, float *y, size_t ldy);

struct lmoe_fp8_kernels {
    const char *name;
    lmoe_fp8_dot_fn dot_e4m3, dot_e5m2;
    lmoe_fp8_dot4_fn dot4_e4m3, dot4_e5m2; /* NULL: call dot per row */
    lmoe_fp8_gemm4_fn gemm4_e4m3, gemm4_e5m2; /* NULL: row, then dot_f32 per token */
    lmoe_fp8_row_fn row_e4m3, row_e5m2;
};

extern const struct lmoe_fp8_kernels lmoe_fp8_kernels_ref;

/* The fastest table this CPU runs ("avx2" where it has AVX2, FMA and F16C,
 * else the reference). Constant. */
const struct lmoe_fp8_kernels *lmoe_fp8_kernels_best(void);

struct lmoe_kernels;
/* The FP8 table that goes with a kernel table (no CPU check: the avx2 and
 * avx512 tables are only handed out where AVX2, FMA and F16C exist). */
const struct lmoe_fp8_kernels *lmoe_fp8_kernels_for(const struct lmoe_kernels *k);

#endif
