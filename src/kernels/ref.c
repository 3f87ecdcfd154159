/*
 * ref.c - scalar reference kernels. Plain C, no intrinsics: the definition
 * every faster path is tested against.
 */
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "quant/quant.h"

/* Eight partial sums: a fixed, documented summation order that compilers
 * can keep in vector registers without -ffast-math. */
static float dot_f32_ref(const float *a, const float *b, int n) {
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) s[k] += a[i + k] * b[i + k];
    float tail = 0;
    for (; i < n; i++) tail += a[i] * b[i];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7])) + tail;
}

static void axpy_f32_ref(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

static float dot_f16_f32_ref(const uint16_t *a, const float *b, int n) {
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) s[k] += lmoe_f16_to_f32(a[i + k]) * b[i + k];
    float tail = 0;
    for (; i < n; i++) tail += lmoe_f16_to_f32(a[i]) * b[i];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7])) + tail;
}

static void axpy_f16_ref(float *y, float a, const uint16_t *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * lmoe_f16_to_f32(x[i]);
}

static void f32_to_f16_ref(uint16_t *dst, const float *src, int n) {
    for (int i = 0; i < n; i++) dst[i] = lmoe_f32_to_f16(src[i]);
}

static void dequantize_row_ref(uint32_t type, const void *row, float *dst, int n) {
    if (type == LMOE_DTYPE_F32) {
        memcpy(dst, row, sizeof(float) * (size_t)n);
        return;
    }
    lmoe_dtype_get(type)->dequantize(row, dst, n);
}

/* Q8_0 or Q8_K activations (lmoe_vec_dot_act_type); other types are not
 * activation formats and leave dst alone. */
static void quantize_act_ref(uint32_t act_type, const float *x, void *dst, int n) {
    if (act_type == LMOE_DTYPE_Q8_0) lmoe_quantize_row_q8_0(x, dst, n);
    else if (act_type == LMOE_DTYPE_Q8_K) lmoe_quantize_row_q8_K(x, dst, n);
}

/* The reference vec_dot entries (quant_dot.c), by weight type. */
#define VEC_DOT_REF_ENTRIES                             \
    [LMOE_DTYPE_F32] = lmoe_vec_dot_f32_f32,            \
    [LMOE_DTYPE_F16] = lmoe_vec_dot_f16_f32,            \
    [LMOE_DTYPE_BF16] = lmoe_vec_dot_bf16_f32,          \
    [LMOE_DTYPE_Q4_0] = lmoe_vec_dot_q4_0_q8,           \
    [LMOE_DTYPE_Q4_1] = lmoe_vec_dot_q4_1_q8,           \
    [LMOE_DTYPE_Q5_0] = lmoe_vec_dot_q5_0_q8,           \
    [LMOE_DTYPE_Q5_1] = lmoe_vec_dot_q5_1_q8,           \
    [LMOE_DTYPE_Q8_0] = lmoe_vec_dot_q8_0_q8,           \
    [LMOE_DTYPE_Q2_K] = lmoe_vec_dot_q2_K_q8,           \
    [LMOE_DTYPE_Q3_K] = lmoe_vec_dot_q3_K_q8,           \
    [LMOE_DTYPE_Q4_K] = lmoe_vec_dot_q4_K_q8,           \
    [LMOE_DTYPE_Q5_K] = lmoe_vec_dot_q5_K_q8,           \
    [LMOE_DTYPE_Q6_K] = lmoe_vec_dot_q6_K_q8

/* quantized_matmul stays 0: with LMOE_ISA=ref, op_matmul takes the float
 * route the model goldens were made with. The integer entries are here so
 * tests can compare every ISA's against them. */
const struct lmoe_kernels lmoe_kernels_ref = {
    .name = "ref",
    .dot_f32 = dot_f32_ref,
    .axpy_f32 = axpy_f32_ref,
    .dot_f16_f32 = dot_f16_f32_ref,
    .axpy_f16 = axpy_f16_ref,
    .f32_to_f16 = f32_to_f16_ref,
    .dequantize_row = dequantize_row_ref,
    .quantize_act = quantize_act_ref,
    .vec_dot = {VEC_DOT_REF_ENTRIES},
    .quantized_matmul = 0,
};
