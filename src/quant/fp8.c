/*
 * fp8.c - the reference meaning of FP8 weights with 128 x 128 block scales
 * (LMOE_DTYPE_F8_E4M3_B128, LMOE_DTYPE_F8_E5M2_B128; the layout is in
 * quant.h). These types exist only in memory, for checkpoints opened as
 * published: GGUF has no block-scaled FP8, so `leanmoe convert` turns them
 * into another type.
 */
#include <stddef.h>

#include "quant/quant.h"

/* Unscaled widening, for the traits table: what the bytes mean before the
 * block scale multiplies them. */
static void dequantize_f8_e4m3(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) dst[i] = lmoe_f8_e4m3_to_f32(p[i]);
}

static void dequantize_f8_e5m2(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) dst[i] = lmoe_f8_e5m2_to_f32(p[i]);
}

static const struct lmoe_dtype_traits fp8_traits[2] = {
    {.name = "f8_e4m3_b128", .block_size = 1, .type_size = 1, .dequantize = dequantize_f8_e4m3},
    {.name = "f8_e5m2_b128", .block_size = 1, .type_size = 1, .dequantize = dequantize_f8_e5m2},
};

const struct lmoe_dtype_traits *lmoe_fp8_traits(uint32_t type) {
    if (type == LMOE_DTYPE_F8_E4M3_B128) return &fp8_traits[0];
    if (type == LMOE_DTYPE_F8_E5M2_B128) return &fp8_traits[1];
    return NULL;
}

void lmoe_dequantize_row_fp8(uint32_t type, const uint8_t *row, const float *scale, int64_t n_col_blocks,
                             int64_t r, float *dst, int64_t n) {
    const float *s = scale + (r / LMOE_FP8_BLOCK) * n_col_blocks;
    for (int64_t c = 0; c < n; c++) {
        float v = type == LMOE_DTYPE_F8_E5M2_B128 ? lmoe_f8_e5m2_to_f32(row[c]) : lmoe_f8_e4m3_to_f32(row[c]);
        dst[c] = v * s[c / LMOE_FP8_BLOCK];
    }
}
