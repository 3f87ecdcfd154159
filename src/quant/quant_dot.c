/*
 * quant_dot.c - reference activation quantizers and integer dot products.
 *
 * A matrix-vector product over quantized weights is cheapest when the
 * activation row is quantized once to 8 bits in blocks matching the
 * weights', so that each block's work is an integer dot product and only
 * one float multiply-add per block remains (see the section comment in
 * quant.h). This file defines those products in plain scalar C, block by
 * block in index order, with the float operations in a fixed order; the
 * SIMD versions in src/kernels/ compute the same integers and differ only
 * in the order the per-block float terms are added.
 *
 * The integer sums cannot overflow: the largest is Q6_K's, at most
 * 16 groups * 128 (scale) * 16 * 32 * 127 = 1.3e8 < 2^31.
 *
 * Alignment: as in quant_ref.c, multi-byte fields are read with memcpy, so
 * rows and activation blocks may start at any byte address.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "quant/quant.h"

static float read_f16(const uint8_t *b, size_t off) {
    lmoe_f16 h;
    memcpy(&h, b + off, sizeof h);
    return lmoe_f16_to_f32(h);
}

static float read_f32(const uint8_t *b, size_t off) {
    float f;
    memcpy(&f, b + off, sizeof f);
    return f;
}

/* ---- Which activation goes with which weight -------------------------- */

uint32_t lmoe_vec_dot_act_type(uint32_t w_type) {
    switch (w_type) {
    case LMOE_DTYPE_Q4_0: case LMOE_DTYPE_Q4_1: case LMOE_DTYPE_Q5_0:
    case LMOE_DTYPE_Q5_1: case LMOE_DTYPE_Q8_0:
        return LMOE_DTYPE_Q8_0;
    case LMOE_DTYPE_Q2_K: case LMOE_DTYPE_Q3_K: case LMOE_DTYPE_Q4_K:
    case LMOE_DTYPE_Q5_K: case LMOE_DTYPE_Q6_K:
        return LMOE_DTYPE_Q8_K;
    case LMOE_DTYPE_F32: case LMOE_DTYPE_F16: case LMOE_DTYPE_BF16:
        return LMOE_DTYPE_F32;
    default:
        return LMOE_DTYPE_COUNT;
    }
}

size_t lmoe_vec_dot_act_bytes(uint32_t w_type, int64_t n) {
    const uint32_t a = lmoe_vec_dot_act_type(w_type);
    if (a == LMOE_DTYPE_COUNT) return 0;
    const int64_t bytes = lmoe_dtype_row_size(a, n);
    return bytes < 0 ? 0 : (size_t)bytes;
}

/* ---- Activation quantizers -------------------------------------------- */

/* roundf to an int8 code; |v| <= 127 for finite activations, and anything
 * else (inf, NaN, which a finite row cannot produce) becomes 0 instead of
 * an undefined conversion. */
static int8_t round_away_i8(float v) {
    if (!(fabsf(v) < 128.0f)) return 0;
    return (int8_t)roundf(v);
}

void lmoe_quantize_row_q8_0(const float *x, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / LMOE_QK; i++, x += LMOE_QK, b += sizeof(struct lmoe_block_q8_0)) {
        float amax = 0.0f;
        for (int j = 0; j < LMOE_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const lmoe_f16 dh = lmoe_f32_to_f16(d);
        memcpy(b + offsetof(struct lmoe_block_q8_0, d), &dh, sizeof dh);
        int8_t *qs = (int8_t *)(b + offsetof(struct lmoe_block_q8_0, qs));
        for (int j = 0; j < LMOE_QK; j++) qs[j] = round_away_i8(x[j] * id);
    }
}

/* Rounds to nearest, ties to even, by adding 1.5 * 2^23: the sum's last
 * mantissa bit is then the units digit (ggml's nearest_int). Exact for
 * |v| < 2^22; Q8_K codes are within +-127.5. Out of range (or NaN): 0. */
static int nearest_even(float v) {
    if (!(fabsf(v) < 4194304.0f)) return 0;
    const float s = v + 12582912.0f;
    int32_t u;
    memcpy(&u, &s, sizeof u);
    return (u & 0x007FFFFF) - 0x00400000;
}

void lmoe_quantize_row_q8_K(const float *x, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / LMOE_QK_K; i++, x += LMOE_QK_K, b += sizeof(struct lmoe_block_q8_k)) {
        int8_t *qs = (int8_t *)(b + offsetof(struct lmoe_block_q8_k, qs));
        float amax = 0.0f, max = 0.0f; /* max keeps its sign: d is negative when it is */
        for (int j = 0; j < LMOE_QK_K; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        float d = 0.0f;
        int16_t bsums[LMOE_QK_K / 16] = {0};
        if (amax == 0.0f) {
            memset(qs, 0, LMOE_QK_K);
        } else {
            const float iscale = -127.0f / max;
            for (int j = 0; j < LMOE_QK_K; j++) {
                const int v = nearest_even(iscale * x[j]);
                qs[j] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
            }
            for (int j = 0; j < LMOE_QK_K; j++) bsums[j / 16] = (int16_t)(bsums[j / 16] + qs[j]);
            d = 1.0f / iscale;
        }
        memcpy(b + offsetof(struct lmoe_block_q8_k, d), &d, sizeof d);
        memcpy(b + offsetof(struct lmoe_block_q8_k, bsums), bsums, sizeof bsums);
    }
}

/* ---- Scale unpacking shared with the SIMD paths ------------------------ */

/* Same packing as quant_ref.c's k4_scale_min (documented there). */
void lmoe_k4_scale_min(const uint8_t *s, int g, int *scale, int *min) {
    if (g < 4) {
        *scale = s[g] & 63;
        *min = s[g + 4] & 63;
    } else {
        *scale = (s[g + 4] & 0x0F) | ((s[g - 4] >> 6) << 4);
        *min = (s[g + 4] >> 4) | ((s[g] >> 6) << 4);
    }
}

/* Same packing as quant_ref.c's q3_k_scale (documented there). */
int lmoe_q3_k_scale(const uint8_t *scales, int g) {
    const int lo = g < 8 ? scales[g] & 0x0F : scales[g - 8] >> 4;
    const int hi = (scales[8 + g % 4] >> (2 * (g / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

/* ---- Legacy 32-blocks x Q8_0 ------------------------------------------ */

/* The Q8_0 activation block i: its scale and codes. */
#define ACT_Q8_0(act, i) ((const uint8_t *)(act) + (size_t)(i) * sizeof(struct lmoe_block_q8_0))
#define ACT_D(a) read_f16((a), offsetof(struct lmoe_block_q8_0, d))
#define ACT_QS(a) ((const int8_t *)((a) + offsetof(struct lmoe_block_q8_0, qs)))

/* Q4_0: sum += (d_w * d_a) * sum_j (q_j - 8) * a_j. */
float lmoe_vec_dot_q4_0_q8(int n, const void *w_row, const void *act) {
    const uint8_t *w = w_row;
    float sum = 0.0f;
    for (int i = 0; i < n / LMOE_QK; i++, w += sizeof(struct lmoe_block_q4_0)) {
        const uint8_t *a = ACT_Q8_0(act, i);
        const uint8_t *qs = w + offsetof(struct lmoe_block_q4_0, qs);
        const int8_t *aq = ACT_QS(a);
        int isum = 0;
        for (int j = 0; j < LMOE_QK / 2; j++)
            isum += ((qs[j] & 0x0F) - 8) * aq[j] + ((qs[j] >> 4) - 8) * aq[j + LMOE_QK / 2];
        sum += read_f16(w, offsetof(struct lmoe_block_q4_0, d)) * ACT_D(a) * (float)isum;
    }
    return sum;
}

/* Q4_1: value q * d + m, so a block gives d_w d_a sum q a + m d_a sum a,
 * both integer sums exact. */
float lmoe_vec_dot_q4_1_q8(int n, const void *w_row, const void *act) {
    const uint8_t *w = w_row;
    float sum = 0.0f;
    for (int i = 0; i < n / LMOE_QK; i++, w += sizeof(struct lmoe_block_q4_1)) {
        const uint8_t *a = ACT_Q8_0(act, i);
        const uint8_t *qs = w + offsetof(struct lmoe_block_q4_1, qs);
        const int8_t *aq = ACT_QS(a);
        int isum = 0, asum = 0;
        for (int j = 0; j < LMOE_QK / 2; j++) {
            isum += (qs[j] & 0x0F) * aq[j] + (qs[j] >> 4) * aq[j + LMOE_QK / 2];
            asum += aq[j] + aq[j + LMOE_QK / 2];
        }
        const float da = ACT_D(a);
        sum += read_f16(w, offsetof(struct lmoe_block_q4_1, d)) * da * (float)isum +
               read_f16(w, offsetof(struct lmoe_block_q4_1, m)) * da * (float)asum;
    }
    return sum;
}

/* The 5-bit code of element j of a Q5 block: nibble plus bit j of qh. */
static int q5_code(const uint8_t *qs, const uint8_t *qh, int j) {
    const int nib = j < LMOE_QK / 2 ? qs[j] & 0x0F : qs[j - LMOE_QK / 2] >> 4;
    return nib | (((qh[j / 8] >> (j % 8)) & 1) << 4);
}

/* Q5_0: sum += (d_w * d_a) * sum_j (q_j - 16) * a_j. */
float lmoe_vec_dot_q5_0_q8(int n, const void *w_row, const void *act) {
    const uint8_t *w = w_row;
    float sum = 0.0f;
    for (int i = 0; i < n / LMOE_QK; i++, w += sizeof(struct lmoe_block_q5_0)) {
        const uint8_t *a = ACT_Q8_0(act, i);
        const uint8_t *qh = w + offsetof(struct lmoe_block_q5_0, qh);
        const uint8_t *qs = w + offsetof(struct lmoe_block_q5_0, qs);
        const int8_t *aq = ACT_QS(a);
        int isum = 0;
        for (int j = 0; j < LMOE_QK; j++) isum += (q5_code(qs, qh, j) - 16) * aq[j];
        sum += read_f16(w, offsetof(struct lmoe_block_q5_0, d)) * ACT_D(a) * (float)isum;
    }
    return sum;
}

/* Q5_1: as Q4_1 with 5-bit codes. */
float lmoe_vec_dot_q5_1_q8(int n, const void *w_row, const void *act) {
    const uint8_t *w = w_row;
    float sum = 0.0f;
    for (int i = 0; i < n / LMOE_QK; i++, w += sizeof(struct lmoe_block_q5_1)) {
        const uint8_t *a = ACT_Q8_0(act, i);
        const uint8_t *qh = w + offsetof(struct lmoe_block_q5_1, qh);
        const uint8_t *qs = w + offsetof(struct lmoe_block_q5_1, qs);
        const int8_t *aq = ACT_QS(a);
        int isum = 0, asum = 0;
        for (int j = 0; j < LMOE_QK; j++) {
            isum += q5_code(qs, qh, j) * aq[j];
            asum += aq[j];
        }
        const float da = ACT_D(a);
        sum += read_f16(w, offsetof(struct lmoe_block_q5_1, d)) * da * (float)isum +
               read_f16(w, offsetof(struct lmoe_block_q5_1, m)) * da * (float)asum;
    }
    return sum;
}

/* Q8_0: sum += (d_w * d_a) * sum_j q_j a_j. */
float lmoe_vec_dot_q8_0_q8(int n, const void *w_row, const void *act) {
    const uint8_t *w = w_row;
    float sum = 0.0f;
    for (int i = 0; i < n / LMOE_QK; i++, w += sizeof(struct lmoe_block_q8_0)) {
        const uint8_t *a = ACT_Q8_0(act, i);
        const int8_t *qs = (const int8_t *)(w + offsetof(struct lmoe_block_q8_0, qs));
        const int8_t *aq = ACT_QS(a);
        int isum = 0;
        for (int j = 0; j < LMOE_QK; j++) isum += qs[j] * aq[j];
        sum += read_f16(w, offsetof(struct lmoe_block_q8_0, d)) * ACT_D(a) * (float)isum;
    }
    return sum;
}

/* ---- K-quants x Q8_K -------------------------------------------------- */

#define ACT_Q8_K(act, i) ((const uint8_t *)(act) + (size_t)(i) * sizeof(struct lmoe_block_q8_k))
#define ACTK_D(a) read_f32((a), offsetof(struct lmoe_block_q8_k, d))
#define ACTK_QS(a) ((const int8_t *)((a) + offsetof(struct lmoe_block_q8_k, qs)))

/* The 16 sums of 16 codes of a Q8_K block. */
static void actk_bsums(const uint8_t *a, int16_t bsums[LMOE_QK_K / 16]) {
    memcpy(bsums, a + offsetof(struct lmoe_block_q8_k, bsums), sizeof(int16_t) * (LMOE_QK_K / 16));
}

/* Q2_K: value (d sc_g) q - (dmin m_g); the min part needs only the sums
 * of each group's activation codes (bsums):
 * block = d d_a sum_g sc_g sum q a  -  dmin d_a sum_g m_g bsum_g. */
float lmoe_vec_dot_q2_K_q8(int n, const void *w_row, const void *act) {
    const uint8_t *w = w_row;
    float sum = 0.0f;
    for (int i = 0; i < n / LMOE_QK_K; i++, w += sizeof(struct lmoe_block_q2_k)) {
        const uint8_t *a = ACT_Q8_K(act, i);
        const uint8_t *sc = w + offsetof(struct lmoe_block_q2_k, scales);
        const uint8_t *qs = w + offsetof(struct lmoe_block_q2_k, qs);
        const int8_t *aq = ACTK_QS(a);
        int16_t bsums[LMOE_QK_K / 16];
        actk_bsums(a, bsums);
        int isum = 0, msum = 0;
        for (int g = 0; g < LMOE_QK_K / 16; g++) {
            int gsum = 0;
            for (int e = g * 16; e < g * 16 + 16; e++) {
                const int half = e / 128, k = (e % 128) / 32, l = e % 32;
                gsum += ((qs[half * 32 + l] >> (2 * k)) & 3) * aq[e];
            }
            isum += (sc[g] & 0x0F) * gsum;
            msum += (sc[g] >> 4) * bsums[g];
        }
        const float da = ACTK_D(a);
        sum += read_f16(w, offsetof(struct lmoe_block_q2_k, d)) * da * (float)isum -
               read_f16(w, offsetof(struct lmoe_block_q2_k, dmin)) * da * (float)msum;
    }
    return sum;
}

/* Q3_K: signed 3-bit codes -4..3 and signed 6-bit scales:
 * block = d d_a sum_g sc_g sum q a. */
float lmoe_vec_dot_q3_K_q8(int n, const void *w_row, const void *act) {
    const uint8_t *w = w_row;
    float sum = 0.0f;
    for (int i = 0; i < n / LMOE_QK_K; i++, w += sizeof(struct lmoe_block_q3_k)) {
        const uint8_t *a = ACT_Q8_K(act, i);
        const uint8_t *hmask = w + offsetof(struct lmoe_block_q3_k, hmask);
        const uint8_t *qs = w + offsetof(struct lmoe_block_q3_k, qs);
        const uint8_t *scales = w + offsetof(struct lmoe_block_q3_k, scales);
        const int8_t *aq = ACTK_QS(a);
        int isum = 0;
        for (int g = 0; g < LMOE_QK_K / 16; g++) {
            int gsum = 0;
            for (int e = g * 16; e < g * 16 + 16; e++) {
                const int half = e / 128, k = (e % 128) / 32, l = e % 32;
                const int lo = (qs[half * 32 + l] >> (2 * k)) & 3;
                const int high_set = (hmask[l] >> (half * 4 + k)) & 1;
                gsum += (lo - (high_set ? 0 : 4)) * aq[e];
            }
            isum += lmoe_q3_k_scale(scales, g) * gsum;
        }
        sum += read_f16(w, offsetof(struct lmoe_block_q3_k, d)) * ACTK_D(a) * (float)isum;
    }
    return sum;
}

/* Q4_K and Q5_K share everything but the fifth bit (qh NULL for Q4_K):
 * block = d d_a sum_g sc_g sum q a - dmin d_a sum_g m_g (bsum_2g + bsum_2g+1). */
static float dot_k45(int n, const void *w_row, const void *act, size_t block_bytes,
                     size_t off_scales, size_t off_qh, size_t off_qs) {
    const uint8_t *w = w_row;
    float sum = 0.0f;
    for (int i = 0; i < n / LMOE_QK_K; i++, w += block_bytes) {
        const uint8_t *a = ACT_Q8_K(act, i);
        const uint8_t *scales = w + off_scales, *qs = w + off_qs;
        const uint8_t *qh = off_qh ? w + off_qh : NULL;
        const int8_t *aq = ACTK_QS(a);
        int16_t bsums[LMOE_QK_K / 16];
        actk_bsums(a, bsums);
        int isum = 0, msum = 0;
        for (int g = 0; g < 8; g++) {
            int sc, mn;
            lmoe_k4_scale_min(scales, g, &sc, &mn);
            const uint8_t *q = qs + (g / 2) * 32;
            const int shift = (g % 2) * 4;
            int gsum = 0;
            for (int l = 0; l < 32; l++) {
                int code = (q[l] >> shift) & 0x0F;
                if (qh) code |= ((qh[l] >> g) & 1) << 4;
                gsum += code * aq[g * 32 + l];
            }
            isum += sc * gsum;
            msum += mn * (bsums[2 * g] + bsums[2 * g + 1]);
        }
        const float da = ACTK_D(a);
        /* d and dmin are the first two fields of both block types */
        sum += read_f16(w, 0) * da * (float)isum - read_f16(w, 2) * da * (float)msum;
    }
    return sum;
}

float lmoe_vec_dot_q4_K_q8(int n, const void *w_row, const void *act) {
    return dot_k45(n, w_row, act, sizeof(struct lmoe_block_q4_k), offsetof(struct lmoe_block_q4_k, scales),
                   0, offsetof(struct lmoe_block_q4_k, qs));
}

float lmoe_vec_dot_q5_K_q8(int n, const void *w_row, const void *act) {
    return dot_k45(n, w_row, act, sizeof(struct lmoe_block_q5_k), offsetof(struct lmoe_block_q5_k, scales),
                   offsetof(struct lmoe_block_q5_k, qh), offsetof(struct lmoe_block_q5_k, qs));
}

/* Q6_K: codes 0..63 biased by 32, signed 8-bit scales:
 * block = d d_a sum_g sc_g sum (q - 32) a. */
float lmoe_vec_dot_q6_K_q8(int n, const void *w_row, const void *act) {
    const uint8_t *w = w_row;
    float sum = 0.0f;
    for (int i = 0; i < n / LMOE_QK_K; i++, w += sizeof(struct lmoe_block_q6_k)) {
        const uint8_t *a = ACT_Q8_K(act, i);
        const uint8_t *ql = w + offsetof(struct lmoe_block_q6_k, ql);
        const uint8_t *qh = w + offsetof(struct lmoe_block_q6_k, qh);
        const int8_t *scales = (const int8_t *)(w + offsetof(struct lmoe_block_q6_k, scales));
        const int8_t *aq = ACTK_QS(a);
        int isum = 0;
        for (int g = 0; g < LMOE_QK_K / 16; g++) {
            int gsum = 0;
            for (int e = g * 16; e < g * 16 + 16; e++) {
                const int h = e / 128, k = (e % 128) / 32, l = e % 32;
                const int lo = (ql[h * 64 + (k % 2) * 32 + l] >> ((k / 2) * 4)) & 0x0F;
                const int hi = (qh[h * 32 + l] >> (2 * k)) & 3;
                gsum += ((lo | (hi << 4)) - 32) * aq[e];
            }
            isum += scales[g] * gsum;
        }
        sum += read_f16(w, offsetof(struct lmoe_block_q6_k, d)) * ACTK_D(a) * (float)isum;
    }
    return sum;
}

/* ---- Float weights x f32 activations ---------------------------------- */

/* Eight partial sums in lane order, combined pairwise: the order of the
 * dot_f32 reference kernel, so an F32 weight gives the same bits either way. */
#define FLOAT_DOT(load)                                                                   \
    do {                                                                                  \
        float s[8] = {0};                                                                 \
        int i = 0;                                                                        \
        for (; i + 8 <= n; i += 8)                                                        \
            for (int k = 0; k < 8; k++) s[k] += load(i + k) * x[i + k];                   \
        float tail = 0;                                                                   \
        for (; i < n; i++) tail += load(i) * x[i];                                        \
        return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7])) + tail; \
    } while (0)

float lmoe_vec_dot_f32_f32(int n, const void *w_row, const void *act) {
    const uint8_t *w = w_row;
    const float *x = act;
#define LOAD_F32(i) read_f32(w, (size_t)(i) * 4)
    FLOAT_DOT(LOAD_F32);
#undef LOAD_F32
}

float lmoe_vec_dot_f16_f32(int n, const void *w_row, const void *act) {
    const uint8_t *w = w_row;
    const float *x = act;
#define LOAD_F16(i) read_f16(w, (size_t)(i) * 2)
    FLOAT_DOT(LOAD_F16);
#undef LOAD_F16
}

static float read_bf16(const uint8_t *w, size_t off) {
    lmoe_bf16 h;
    memcpy(&h, w + off, sizeof h);
    return lmoe_bf16_to_f32(h);
}

float lmoe_vec_dot_bf16_f32(int n, const void *w_row, const void *act) {
    const uint8_t *w = w_row;
    const float *x = act;
#define LOAD_BF16(i) read_bf16(w, (size_t)(i) * 2)
    FLOAT_DOT(LOAD_BF16);
#undef LOAD_BF16
}

lmoe_vec_dot_fn lmoe_vec_dot_ref(uint32_t w_type) {
    switch (w_type) {
    case LMOE_DTYPE_Q4_0: return lmoe_vec_dot_q4_0_q8;
    case LMOE_DTYPE_Q4_1: return lmoe_vec_dot_q4_1_q8;
    case LMOE_DTYPE_Q5_0: return lmoe_vec_dot_q5_0_q8;
    case LMOE_DTYPE_Q5_1: return lmoe_vec_dot_q5_1_q8;
    case LMOE_DTYPE_Q8_0: return lmoe_vec_dot_q8_0_q8;
    case LMOE_DTYPE_Q2_K: return lmoe_vec_dot_q2_K_q8;
    case LMOE_DTYPE_Q3_K: return lmoe_vec_dot_q3_K_q8;
    case LMOE_DTYPE_Q4_K: return lmoe_vec_dot_q4_K_q8;
    case LMOE_DTYPE_Q5_K: return lmoe_vec_dot_q5_K_q8;
    case LMOE_DTYPE_Q6_K: return lmoe_vec_dot_q6_K_q8;
    case LMOE_DTYPE_F32: return lmoe_vec_dot_f32_f32;
    case LMOE_DTYPE_F16: return lmoe_vec_dot_f16_f32;
    case LMOE_DTYPE_BF16: return lmoe_vec_dot_bf16_f32;
    default: return NULL;
    }
}
