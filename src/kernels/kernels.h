/*
 * kernels.h - the innermost loops, one table per instruction set.
 *
 * ref.c holds the scalar reference of every op, always built; faster
 * versions for one ISA live in their own file and are checked against it
 * (tests/test_kernels.c). Model code calls through the table only.
 */
#ifndef LMOE_KERNELS_H
#define LMOE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "quant/quant.h"

/*
 * A tile of a quantized matrix product, for prompt processing: weight rows
 * [0, n_rows) (w_row_bytes apart, n elements each) times activation rows
 * [0, n_tok) (act_row_bytes apart, quantized as for vec_dot):
 *
 *   y[t * ldy + r] = vec_dot[type](n, w + r * w_row_bytes, act + t * act_row_bytes)
 *
 * bit for bit, for every r and t: a gemm reads each weight block once for
 * several tokens, but computes each output exactly as vec_dot would, so
 * results do not depend on how many tokens are batched or how rows are
 * split between threads.
 */
typedef void (*lmoe_gemm_fn)(int n, int n_rows, int n_tok, const void *w, size_t w_row_bytes, const void *act,
                             size_t act_row_bytes, float *y, size_t ldy);

struct lmoe_kernels {
    const char *name;
    /* sum_i a[i] * b[i] over n floats */
    float (*dot_f32)(const float *a, const float *b, int n);
    /* y[i] += a * x[i] */
    void (*axpy_f32)(float *y, float a, const float *x, int n);
    /* sum_i a[i] * b[i] where a is n IEEE halves (KV cache rows) */
    float (*dot_f16_f32)(const uint16_t *a, const float *b, int n);
    /* y[i] += a * x[i] where x is n IEEE halves */
    void (*axpy_f16)(float *y, float a, const uint16_t *x, int n);
    /* dst[i] = half(src[i]), round to nearest even */
    void (*f32_to_f16)(uint16_t *dst, const float *src, int n);
    /* dst[0..n) = the n elements of a row of `type` (enum lmoe_dtype) */
    void (*dequantize_row)(uint32_t type, const void *row, float *dst, int n);

    /*
     * Integer matrix-vector products (the contract is in quant.h, "Integer
     * dot products"). A weight row of type w is multiplied by an activation
     * row quantized once per matmul call to lmoe_vec_dot_act_type(w):
     *
     *   quantize_act(LMOE_DTYPE_Q8_0 or _Q8_K, x[n], dst, n)
     *   y = vec_dot[w](n, w_row, dst)
     *
     * vec_dot is indexed by weight type; a NULL entry is a type without a
     * dot product (op_matmul then decodes rows to floats). F32, F16 and BF16
     * entries take the f32 activations as they are. quantize_act writes
     * bit-identical codes on every ISA; vec_dot results differ between ISAs
     * only in the order per-block float terms are summed.
     */
    void (*quantize_act)(uint32_t act_type, const float *x, void *dst, int n);
    lmoe_vec_dot_fn vec_dot[LMOE_DTYPE_COUNT];
    /* Multi-token products by weight type (see lmoe_gemm_fn); NULL where a
     * table has none, and op_matmul then calls vec_dot per row and token. */
    lmoe_gemm_fn gemm[LMOE_DTYPE_COUNT];
    /* 1: op_matmul quantizes activations and calls vec_dot (the fast
     * route). 0: it decodes each weight row with dequantize_row and calls
     * dot_f32, the reference route the model goldens were made against. */
    int quantized_matmul;
};

/* The scalar reference table. */
extern const struct lmoe_kernels lmoe_kernels_ref;

/* The AVX2 (+FMA, F16C) and AVX-512 (F, BW, VL, DQ, VNNI) tables, built on x86-64
 * only; use them only when lmoe_kernels_have() says the CPU can. */
extern const struct lmoe_kernels lmoe_kernels_avx2;
extern const struct lmoe_kernels lmoe_kernels_avx512;

/* The table named "ref", "avx2" or "avx512" if this build has it and this
 * CPU can run it, else NULL. */
const struct lmoe_kernels *lmoe_kernels_have(const char *name);

/* The table for this CPU: the best ISA it supports, unless the environment
 * variable LMOE_ISA names another (ref, avx2, avx512); a named ISA the CPU
 * lacks gives the best available. Constant; safe to share. */
const struct lmoe_kernels *lmoe_kernels_pick(void);

#endif
