/*
 * kernels.h - the innermost loops, one table per instruction set.
 *
 * ref.c holds the scalar reference of every op, always built; faster
 * versions for one ISA live in their own file and are checked against it
 * (tests/test_kernels.c). Model code calls through the table only.
 */
#ifndef LMOE_KERNELS_H
#define LMOE_KERNELS_H

#include <stdint.h>

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
};

/* The scalar reference table. */
extern const struct lmoe_kernels lmoe_kernels_ref;

/* The table for this CPU: the best ISA it supports, unless the environment
 * variable LMOE_ISA names another ("ref"). Constant; safe to share. */
const struct lmoe_kernels *lmoe_kernels_pick(void);

#endif
