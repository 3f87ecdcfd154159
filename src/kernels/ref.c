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

const struct lmoe_kernels lmoe_kernels_ref = {
    .name = "ref",
    .dot_f32 = dot_f32_ref,
    .axpy_f32 = axpy_f32_ref,
    .dot_f16_f32 = dot_f16_f32_ref,
    .axpy_f16 = axpy_f16_ref,
    .f32_to_f16 = f32_to_f16_ref,
    .dequantize_row = dequantize_row_ref,
};
