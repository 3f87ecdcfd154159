/*
 * quant_ref.c - the reference meaning of every GGUF tensor type we read.
 *
 * Each dequantizer here is the format specification in code: plain scalar C,
 * one block at a time, in the same float operation order as ggml's reference
 * routines (ggml-quants.c) and gguf-py's numpy versions, so that results are
 * bit-identical to both. tests/test_quant.c checks that against goldens made
 * by tools/make_quant_goldens.py. Faster paths in src/kernels/ are tested
 * against these routines, never the other way round.
 *
 * Alignment. Blocks are read straight out of an mmap'd file. A tensor's data
 * starts on a 32-byte boundary, but we assume nothing about where a block
 * lies: every multi-byte field (the f16 and f32 scales) is read with memcpy
 * at its offsetof() position, so a block at any byte address is fine and
 * UBSan has nothing to object to. The block structs in quant.h are used only
 * for their sizes and field offsets, never dereferenced.
 *
 * Float order. Where a value is d * q + m, the product is exact in float for
 * every format (an f16 mantissa times a small integer), so whether a compiler
 * fuses multiply and add cannot change a result.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "quant/quant.h"

/* ---- Helpers for reading fields at any alignment ---------------------- */

/* The f16 at byte offset off of block b, as float. */
static float read_f16(const uint8_t *b, size_t off) {
    lmoe_f16 h;
    memcpy(&h, b + off, sizeof h);
    return lmoe_f16_to_f32(h);
}

/* The f32 at byte offset off of block b. */
static float read_f32(const uint8_t *b, size_t off) {
    float f;
    memcpy(&f, b + off, sizeof f);
    return f;
}

/* ---- Float types: one element per "block" ----------------------------- */

/* F32: 4 bytes per element, IEEE binary32, little-endian. */
static void dequantize_f32(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

/* F16: 2 bytes per element, IEEE binary16. */
static void dequantize_f16(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) dst[i] = read_f16(p, (size_t)i * 2);
}

/* BF16: 2 bytes per element, the top half of a binary32. */
static void dequantize_bf16(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
        lmoe_bf16 h;
        memcpy(&h, p + i * 2, sizeof h);
        dst[i] = lmoe_bf16_to_f32(h);
    }
}

/* ---- Legacy quants: blocks of 32 -------------------------------------- */

/*
 * Q4_0 (18 bytes): f16 d, then 16 bytes of 4-bit codes. Byte j holds
 * element j in its low nibble and element j + 16 in its high nibble.
 * Value = (q - 8) * d, so codes 0..15 map to -8d .. 7d.
 */
static void dequantize_q4_0(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / LMOE_QK; i++, b += sizeof(struct lmoe_block_q4_0)) {
        const float d = read_f16(b, offsetof(struct lmoe_block_q4_0, d));
        const uint8_t *qs = b + offsetof(struct lmoe_block_q4_0, qs);
        float *y = dst + i * LMOE_QK;
        for (int j = 0; j < LMOE_QK / 2; j++) {
            y[j] = (float)((qs[j] & 0x0F) - 8) * d;
            y[j + LMOE_QK / 2] = (float)((qs[j] >> 4) - 8) * d;
        }
    }
}

/*
 * Q4_1 (20 bytes): f16 d, f16 m, 16 bytes of 4-bit codes packed as in Q4_0.
 * Value = q * d + m (an unsigned code with an offset instead of a bias).
 */
static void dequantize_q4_1(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / LMOE_QK; i++, b += sizeof(struct lmoe_block_q4_1)) {
        const float d = read_f16(b, offsetof(struct lmoe_block_q4_1, d));
        const float m = read_f16(b, offsetof(struct lmoe_block_q4_1, m));
        const uint8_t *qs = b + offsetof(struct lmoe_block_q4_1, qs);
        float *y = dst + i * LMOE_QK;
        for (int j = 0; j < LMOE_QK / 2; j++) {
            y[j] = (float)(qs[j] & 0x0F) * d + m;
            y[j + LMOE_QK / 2] = (float)(qs[j] >> 4) * d + m;
        }
    }
}

/* Bit j of the little-endian 32-bit word qh[0..3]: the fifth bit of element j. */
static int q5_high_bit(const uint8_t *qh, int j) {
    return (qh[j / 8] >> (j % 8)) & 1;
}

/*
 * Q5_0 (22 bytes): f16 d, 4 bytes qh, 16 bytes of low nibbles packed as in
 * Q4_0. Element j's 5-bit code is its nibble plus (bit j of qh) << 4, with
 * qh read as a little-endian u32. Value = (q - 16) * d.
 */
static void dequantize_q5_0(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / LMOE_QK; i++, b += sizeof(struct lmoe_block_q5_0)) {
        const float d = read_f16(b, offsetof(struct lmoe_block_q5_0, d));
        const uint8_t *qh = b + offsetof(struct lmoe_block_q5_0, qh);
        const uint8_t *qs = b + offsetof(struct lmoe_block_q5_0, qs);
        float *y = dst + i * LMOE_QK;
        for (int j = 0; j < LMOE_QK / 2; j++) {
            const int lo = (qs[j] & 0x0F) | (q5_high_bit(qh, j) << 4);
            const int hi = (qs[j] >> 4) | (q5_high_bit(qh, j + LMOE_QK / 2) << 4);
            y[j] = (float)(lo - 16) * d;
            y[j + LMOE_QK / 2] = (float)(hi - 16) * d;
        }
    }
}

/*
 * Q5_1 (24 bytes): f16 d, f16 m, 4 bytes qh, 16 bytes of nibbles; the 5-bit
 * code is built as in Q5_0. Value = q * d + m.
 */
static void dequantize_q5_1(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / LMOE_QK; i++, b += sizeof(struct lmoe_block_q5_1)) {
        const float d = read_f16(b, offsetof(struct lmoe_block_q5_1, d));
        const float m = read_f16(b, offsetof(struct lmoe_block_q5_1, m));
        const uint8_t *qh = b + offsetof(struct lmoe_block_q5_1, qh);
        const uint8_t *qs = b + offsetof(struct lmoe_block_q5_1, qs);
        float *y = dst + i * LMOE_QK;
        for (int j = 0; j < LMOE_QK / 2; j++) {
            const int lo = (qs[j] & 0x0F) | (q5_high_bit(qh, j) << 4);
            const int hi = (qs[j] >> 4) | (q5_high_bit(qh, j + LMOE_QK / 2) << 4);
            y[j] = (float)lo * d + m;
            y[j + LMOE_QK / 2] = (float)hi * d + m;
        }
    }
}

/* Q8_0 (34 bytes): f16 d, 32 signed bytes. Value = q * d. */
static void dequantize_q8_0(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / LMOE_QK; i++, b += sizeof(struct lmoe_block_q8_0)) {
        const float d = read_f16(b, offsetof(struct lmoe_block_q8_0, d));
        const int8_t *qs = (const int8_t *)(b + offsetof(struct lmoe_block_q8_0, qs));
        for (int j = 0; j < LMOE_QK; j++) dst[i * LMOE_QK + j] = (float)qs[j] * d;
    }
}

/*
 * Q8_1 (36 bytes): f16 d, f16 s, 32 signed bytes. Value = q * d; s caches
 * d * sum(q) for dot products against Q4_1/Q5_1 and plays no part here.
 */
static void dequantize_q8_1(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / LMOE_QK; i++, b += sizeof(struct lmoe_block_q8_1)) {
        const float d = read_f16(b, offsetof(struct lmoe_block_q8_1, d));
        const int8_t *qs = (const int8_t *)(b + offsetof(struct lmoe_block_q8_1, qs));
        for (int j = 0; j < LMOE_QK; j++) dst[i * LMOE_QK + j] = (float)qs[j] * d;
    }
}

/* ---- K-quants: super-blocks of 256 ------------------------------------ */

/*
 * Q2_K (84 bytes): 16 scale bytes, 64 bytes of 2-bit codes, f16 d, f16 dmin.
 * Element e belongs to group e / 16; scale byte g has the group's 4-bit scale
 * in its low nibble and 4-bit min in its high nibble. The codes run in two
 * halves of 128 elements, each using 32 bytes of qs: element
 * half*128 + k*32 + l is bits 2k..2k+1 of qs[half*32 + l].
 * Value = (d * scale) * q - (dmin * min).
 */
static void dequantize_q2_k(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / LMOE_QK_K; i++, b += sizeof(struct lmoe_block_q2_k)) {
        const float d = read_f16(b, offsetof(struct lmoe_block_q2_k, d));
        const float dmin = read_f16(b, offsetof(struct lmoe_block_q2_k, dmin));
        const uint8_t *sc = b + offsetof(struct lmoe_block_q2_k, scales);
        const uint8_t *qs = b + offsetof(struct lmoe_block_q2_k, qs);
        float *y = dst + i * LMOE_QK_K;
        for (int e = 0; e < LMOE_QK_K; e++) {
            const int half = e / 128, k = (e % 128) / 32, l = e % 32;
            const int q = (qs[half * 32 + l] >> (2 * k)) & 3;
            const float dl = d * (float)(sc[e / 16] & 0x0F);
            const float ml = dmin * (float)(sc[e / 16] >> 4);
            y[e] = dl * (float)q - ml;
        }
    }
}

/*
 * The 6-bit signed scale of group g (0..15) of a Q3_K block. Bytes 0..7 hold
 * the low 4 bits: groups 0..7 in their low nibbles, groups 8..15 in their
 * high nibbles. Bytes 8..11 hold the top 2 bits: group g uses bits
 * 2*(g/4)..2*(g/4)+1 of byte 8 + g%4. The 6-bit value is biased by 32.
 */
static int q3_k_scale(const uint8_t *scales, int g) {
    const int lo = g < 8 ? scales[g] & 0x0F : scales[g - 8] >> 4;
    const int hi = (scales[8 + g % 4] >> (2 * (g / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

/*
 * Q3_K (110 bytes): 32 bytes hmask, 64 bytes of 2-bit low codes, 12 bytes of
 * packed 6-bit scales, f16 d. Element half*128 + k*32 + l takes its low two
 * bits from bits 2k..2k+1 of qs[half*32 + l] and its third bit from bit
 * half*4 + k of hmask[l]. A clear third bit means minus 4, so codes run
 * -4..3. Group e / 16 gives the scale. Value = (d * scale) * q.
 */
static void dequantize_q3_k(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / LMOE_QK_K; i++, b += sizeof(struct lmoe_block_q3_k)) {
        const float d = read_f16(b, offsetof(struct lmoe_block_q3_k, d));
        const uint8_t *hmask = b + offsetof(struct lmoe_block_q3_k, hmask);
        const uint8_t *qs = b + offsetof(struct lmoe_block_q3_k, qs);
        const uint8_t *scales = b + offsetof(struct lmoe_block_q3_k, scales);
        float *y = dst + i * LMOE_QK_K;
        for (int e = 0; e < LMOE_QK_K; e++) {
            const int half = e / 128, k = (e % 128) / 32, l = e % 32;
            const int lo = (qs[half * 32 + l] >> (2 * k)) & 3;
            const int high_set = (hmask[l] >> (half * 4 + k)) & 1;
            const int q = lo - (high_set ? 0 : 4);
            const float dl = d * (float)q3_k_scale(scales, e / 16);
            y[e] = dl * (float)q;
        }
    }
}

/*
 * The 6-bit scale and min of group g (0..7) of a Q4_K or Q5_K block, from
 * the 12 packed bytes. Groups 0..3: scale is the low 6 bits of byte g, min
 * the low 6 bits of byte g + 4. Groups 4..7: the low 4 bits of scale and
 * min are the low and high nibbles of byte g + 4, and their top 2 bits are
 * the top 2 bits of bytes g - 4 and g respectively.
 */
static void k4_scale_min(const uint8_t *s, int g, int *scale, int *min) {
    if (g < 4) {
        *scale = s[g] & 63;
        *min = s[g + 4] & 63;
    } else {
        *scale = (s[g + 4] & 0x0F) | ((s[g - 4] >> 6) << 4);
        *min = (s[g + 4] >> 4) | ((s[g] >> 6) << 4);
    }
}

/*
 * Q4_K (144 bytes): f16 d, f16 dmin, 12 bytes of packed scales and mins,
 * 128 bytes of nibbles. Eight groups of 32. Element c*64 + l (l < 32) is
 * the low nibble of qs[c*32 + l] in group 2c; element c*64 + 32 + l is its
 * high nibble, in group 2c + 1. Value = (d * scale) * q - (dmin * min).
 */
static void dequantize_q4_k(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / LMOE_QK_K; i++, b += sizeof(struct lmoe_block_q4_k)) {
        const float d = read_f16(b, offsetof(struct lmoe_block_q4_k, d));
        const float dmin = read_f16(b, offsetof(struct lmoe_block_q4_k, dmin));
        const uint8_t *scales = b + offsetof(struct lmoe_block_q4_k, scales);
        const uint8_t *qs = b + offsetof(struct lmoe_block_q4_k, qs);
        float *y = dst + i * LMOE_QK_K;
        for (int g = 0; g < 8; g++) {
            int sc, mn;
            k4_scale_min(scales, g, &sc, &mn);
            const float dl = d * (float)sc, ml = dmin * (float)mn;
            const uint8_t *q = qs + (g / 2) * 32;
            const int shift = (g % 2) * 4;
            for (int l = 0; l < 32; l++) y[g * 32 + l] = dl * (float)((q[l] >> shift) & 0x0F) - ml;
        }
    }
}

/*
 * Q5_K (176 bytes): as Q4_K with 32 bytes qh between scales and qs. The
 * fifth bit of element g*32 + l is bit g of qh[l]. Value as in Q4_K, with
 * codes 0..31.
 */
static void dequantize_q5_k(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / LMOE_QK_K; i++, b += sizeof(struct lmoe_block_q5_k)) {
        const float d = read_f16(b, offsetof(struct lmoe_block_q5_k, d));
        const float dmin = read_f16(b, offsetof(struct lmoe_block_q5_k, dmin));
        const uint8_t *scales = b + offsetof(struct lmoe_block_q5_k, scales);
        const uint8_t *qh = b + offsetof(struct lmoe_block_q5_k, qh);
        const uint8_t *qs = b + offsetof(struct lmoe_block_q5_k, qs);
        float *y = dst + i * LMOE_QK_K;
        for (int g = 0; g < 8; g++) {
            int sc, mn;
            k4_scale_min(scales, g, &sc, &mn);
            const float dl = d * (float)sc, ml = dmin * (float)mn;
            const uint8_t *q = qs + (g / 2) * 32;
            const int shift = (g % 2) * 4;
            for (int l = 0; l < 32; l++) {
                const int code = ((q[l] >> shift) & 0x0F) | (((qh[l] >> g) & 1) << 4);
                y[g * 32 + l] = dl * (float)code - ml;
            }
        }
    }
}

/*
 * Q6_K (210 bytes): 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits),
 * 16 signed 8-bit scales, f16 d. Two halves of 128; within half h, element
 * h*128 + k*32 + l (k = 0..3, l < 32) has its low nibble in
 * ql[h*64 + (k%2)*32 + l] (low nibble for k < 2, high nibble for k >= 2)
 * and its high two bits at bits 2k..2k+1 of qh[h*32 + l]. Codes 0..63 are
 * biased by 32. Group e / 16 gives the scale. Value = (d * scale) * q.
 */
static void dequantize_q6_k(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / LMOE_QK_K; i++, b += sizeof(struct lmoe_block_q6_k)) {
        const float d = read_f16(b, offsetof(struct lmoe_block_q6_k, d));
        const uint8_t *ql = b + offsetof(struct lmoe_block_q6_k, ql);
        const uint8_t *qh = b + offsetof(struct lmoe_block_q6_k, qh);
        const int8_t *scales = (const int8_t *)(b + offsetof(struct lmoe_block_q6_k, scales));
        float *y = dst + i * LMOE_QK_K;
        for (int e = 0; e < LMOE_QK_K; e++) {
            const int h = e / 128, k = (e % 128) / 32, l = e % 32;
            const int lo = (ql[h * 64 + (k % 2) * 32 + l] >> ((k / 2) * 4)) & 0x0F;
            const int hi = (qh[h * 32 + l] >> (2 * k)) & 3;
            const int q = (lo | (hi << 4)) - 32;
            y[e] = d * (float)scales[e / 16] * (float)q;
        }
    }
}

/*
 * Q8_K (292 bytes): f32 d, 256 signed bytes, 16 int16 sums of each group of
 * 16 codes (for dot products). Value = q * d.
 */
static void dequantize_q8_k(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / LMOE_QK_K; i++, b += sizeof(struct lmoe_block_q8_k)) {
        const float d = read_f32(b, offsetof(struct lmoe_block_q8_k, d));
        const int8_t *qs = (const int8_t *)(b + offsetof(struct lmoe_block_q8_k, qs));
        for (int j = 0; j < LMOE_QK_K; j++) dst[i * LMOE_QK_K + j] = (float)qs[j] * d;
    }
}

/* ---- The traits table ------------------------------------------------- */

#define TRAITS(id, nm, bs, ts, fn) [id] = {.name = nm, .block_size = bs, .type_size = ts, .dequantize = fn}

/* Indexed by GGUF type id; an entry with a NULL name is an id we do not know. */
static const struct lmoe_dtype_traits dtype_traits[LMOE_DTYPE_COUNT] = {
    TRAITS(LMOE_DTYPE_F32, "f32", 1, 4, dequantize_f32),
    TRAITS(LMOE_DTYPE_F16, "f16", 1, 2, dequantize_f16),
    TRAITS(LMOE_DTYPE_Q4_0, "q4_0", LMOE_QK, sizeof(struct lmoe_block_q4_0), dequantize_q4_0),
    TRAITS(LMOE_DTYPE_Q4_1, "q4_1", LMOE_QK, sizeof(struct lmoe_block_q4_1), dequantize_q4_1),
    TRAITS(LMOE_DTYPE_Q5_0, "q5_0", LMOE_QK, sizeof(struct lmoe_block_q5_0), dequantize_q5_0),
    TRAITS(LMOE_DTYPE_Q5_1, "q5_1", LMOE_QK, sizeof(struct lmoe_block_q5_1), dequantize_q5_1),
    TRAITS(LMOE_DTYPE_Q8_0, "q8_0", LMOE_QK, sizeof(struct lmoe_block_q8_0), dequantize_q8_0),
    TRAITS(LMOE_DTYPE_Q8_1, "q8_1", LMOE_QK, sizeof(struct lmoe_block_q8_1), dequantize_q8_1),
    TRAITS(LMOE_DTYPE_Q2_K, "q2_K", LMOE_QK_K, sizeof(struct lmoe_block_q2_k), dequantize_q2_k),
    TRAITS(LMOE_DTYPE_Q3_K, "q3_K", LMOE_QK_K, sizeof(struct lmoe_block_q3_k), dequantize_q3_k),
    TRAITS(LMOE_DTYPE_Q4_K, "q4_K", LMOE_QK_K, sizeof(struct lmoe_block_q4_k), dequantize_q4_k),
    TRAITS(LMOE_DTYPE_Q5_K, "q5_K", LMOE_QK_K, sizeof(struct lmoe_block_q5_k), dequantize_q5_k),
    TRAITS(LMOE_DTYPE_Q6_K, "q6_K", LMOE_QK_K, sizeof(struct lmoe_block_q6_k), dequantize_q6_k),
    TRAITS(LMOE_DTYPE_Q8_K, "q8_K", LMOE_QK_K, sizeof(struct lmoe_block_q8_k), dequantize_q8_k),
    TRAITS(LMOE_DTYPE_BF16, "bf16", 1, 2, dequantize_bf16),
};

const struct lmoe_dtype_traits *lmoe_dtype_get(uint32_t type) {
    if (type >= LMOE_DTYPE_COUNT) return lmoe_fp8_traits(type); /* internal types, or NULL */
    if (dtype_traits[type].name == NULL) return NULL;
    return &dtype_traits[type];
}

int64_t lmoe_dtype_row_size(uint32_t type, int64_t n) {
    const struct lmoe_dtype_traits *t = lmoe_dtype_get(type);
    if (!t || n < 0 || n % t->block_size != 0) return -1;
    const int64_t n_blocks = n / t->block_size;
    if (n_blocks > INT64_MAX / t->type_size) return -1; /* would overflow */
    return n_blocks * t->type_size;
}

/*
 * Dequantizes one block at a time into a small buffer and accumulates
 * row[i] * x[i] in a single float sum, in index order, so a test can
 * reproduce the result exactly. Returns NaN for an unknown type, a type
 * without a dequantizer, or n that is not a whole number of blocks.
 */
float lmoe_dot_ref(uint32_t type, const void *row, const float *x, int64_t n) {
    const struct lmoe_dtype_traits *t = lmoe_dtype_get(type);
    if (!t || !t->dequantize || lmoe_dtype_row_size(type, n) < 0) return NAN;
    /* One block at a time; for float types take 256 elements per step. */
    const int step = t->block_size > 1 ? t->block_size : LMOE_QK_K;
    const int64_t step_bytes = lmoe_dtype_row_size(type, step);
    float buf[LMOE_QK_K];
    float sum = 0.0f;
    const uint8_t *p = row;
    for (int64_t i = 0; i < n; i += step, p += step_bytes) {
        const int64_t m = n - i < step ? n - i : step;
        t->dequantize(p, buf, m);
        for (int64_t j = 0; j < m; j++) sum += buf[j] * x[i + j];
    }
    return sum;
}
