/*
 * x86_avx2.c - the AVX2 (+FMA, F16C) kernel table.
 *
 * Built with -mavx2 -mfma -mf16c (the Makefile's ISA_FLAGS_x86_avx2) and
 * entered only after dispatch.c has seen those features at run time.
 * Compiled without them (another architecture, or a build that does not
 * pass per-file flags), the file defines an empty table that dispatch.c
 * skips.
 *
 * What each kernel must equal is in ref.c and quant_dot.c:
 *   - quantize_act, axpy_f32, axpy_f16, f32_to_f16 and dequantize_row give
 *     the reference's bits exactly (same float operations, elementwise);
 *   - the dot products compute the same integers per block, but sum the
 *     float terms in 8 (or 32) lanes, then across lanes, so they differ
 *     from the reference by rounding only (tests/test_kernels.c bounds it).
 *
 * All loads are unaligned (_mm256_loadu_*, memcpy for scalars): weight
 * blocks sit at any byte address inside a tensor, activation blocks at
 * multiples of 34 or 292 bytes.
 */
#include <string.h>

#include "kernels/kernels.h"
#include "quant/quant.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

/* ---- Small helpers ----------------------------------------------------- */

static inline float ld_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return _cvtsh_ss(h);
}

static inline float ld_f32(const uint8_t *p) {
    float f;
    memcpy(&f, p, sizeof f);
    return f;
}

static inline __m256i ld256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
static inline __m128i ld128(const void *p) { return _mm_loadu_si128((const __m128i *)p); }

/* Sum of the 8 lanes, in a fixed order (so results are reproducible). */
static inline float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 8 int32 lanes, each the sum of 4 adjacent products u[i] * s[i] (u
 * unsigned bytes, s signed). maddubs saturates its int16 pair sums, which
 * no caller reaches: every u here is at most 128 and every s at most 127
 * in magnitude, so a pair is at most 32512. */
static inline __m256i dot_u8s8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* As dot_u8s8 for two signed vectors: move x's sign onto y, so |x| can go
 * in the unsigned operand (|-128| = 128 still fits a byte). y must not
 * hold -128, which the activation quantizers never write. */
static inline __m256i dot_s8s8(__m256i x, __m256i y) {
    return dot_u8s8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

/* The 32 4-bit codes of a legacy block's 16 bytes: low nibbles are
 * elements 0..15, high nibbles 16..31. */
static inline __m256i nibbles32(const uint8_t *qs) {
    const __m128i b = ld128(qs);
    const __m256i v = _mm256_set_m128i(_mm_srli_epi16(b, 4), b);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

/* Byte j = 0xFF if bit j of the little-endian 32-bit word at qh is set:
 * spread byte j/8 of the word to byte j, then test bit j%8. */
static inline __m256i bits32(const uint8_t *qh) {
    uint32_t w;
    memcpy(&w, qh, sizeof w);
    const __m256i spread = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                             0x0101010101010101, 0x0000000000000000);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)w), spread);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

/* [a x 8 | b x 8] as int16: one scale for each 16-element half of a
 * 32-element maddubs result. */
static inline __m256i scales2(int a, int b) {
    return _mm256_set_m128i(_mm_set1_epi16((short)b), _mm_set1_epi16((short)a));
}

/* ---- Float kernels ----------------------------------------------------- */

/* Four accumulators of 8 lanes: enough independent FMAs to cover their
 * latency; then single vectors, then a scalar tail for n % 8. `a` is taken
 * as bytes because vec_dot passes weight rows at any address. */
static float dot_f32_bytes(const uint8_t *a, const float *b, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int i = 0;
#define LDA(i) _mm256_loadu_ps((const float *)(const void *)(a + 4 * (i)))
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(LDA(i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(LDA(i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(LDA(i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(LDA(i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(LDA(i), _mm256_loadu_ps(b + i), s0);
#undef LDA
    float tail = 0;
    for (; i < n; i++) tail += ld_f32(a + 4 * i) * b[i];
    return hsum_ps(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3))) + tail;
}

static float dot_f32_avx2(const float *a, const float *b, int n) {
    return dot_f32_bytes((const uint8_t *)a, b, n);
}

/* Multiply then add, unfused, so each y[i] has the reference's bits. */
static void axpy_f32_avx2(float *y, float a, const float *x, int n) {
    const __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(va, _mm256_loadu_ps(x + i))));
    for (; i < n; i++) y[i] += a * x[i];
}

static inline __m256 ld_f16x8(const void *p) { return _mm256_cvtph_ps(ld128(p)); }

/* As dot_f32_bytes, for n halves at any address. */
static float dot_f16_bytes(const uint8_t *a, const float *b, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(ld_f16x8(a + 2 * i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(ld_f16x8(a + 2 * i + 16), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(ld_f16x8(a + 2 * i + 32), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(ld_f16x8(a + 2 * i + 48), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(ld_f16x8(a + 2 * i), _mm256_loadu_ps(b + i), s0);
    float tail = 0;
    for (; i < n; i++) tail += ld_f16(a + 2 * i) * b[i];
    return hsum_ps(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3))) + tail;
}

static float dot_f16_f32_avx2(const uint16_t *a, const float *b, int n) {
    return dot_f16_bytes((const uint8_t *)a, b, n);
}

static void axpy_f16_avx2(float *y, float a, const uint16_t *x, int n) {
    const __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(va, ld_f16x8(x + i))));
    for (; i < n; i++) y[i] += a * _cvtsh_ss(x[i]);
}

/* F16C rounds to nearest even and keeps NaNs quiet, as lmoe_f32_to_f16. */
static void f32_to_f16_avx2(uint16_t *dst, const float *src, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = lmoe_f32_to_f16(src[i]);
}

/* 8 bf16 at p widened to f32: the bits move to the top half. */
static inline __m256 ld_bf16x8(const uint8_t *p) {
    const __m256i v = _mm256_cvtepu16_epi32(ld128(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

static void dequantize_row_avx2(uint32_t type, const void *row, float *dst, int n) {
    const uint8_t *p = row;
    int i = 0;
    if (type == LMOE_DTYPE_F32) {
        memcpy(dst, row, sizeof(float) * (size_t)n);
    } else if (type == LMOE_DTYPE_F16) {
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(ld128(p + 2 * i)));
        for (; i < n; i++) dst[i] = ld_f16(p + 2 * i);
    } else if (type == LMOE_DTYPE_BF16) {
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, ld_bf16x8(p + 2 * i));
        for (; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, sizeof h);
            dst[i] = lmoe_bf16_to_f32(h);
        }
    } else {
        lmoe_kernels_ref.dequantize_row(type, row, dst, n);
    }
}

/* Float weights against f32 activations (vec_dot entries). */
static float vec_dot_f32(int n, const void *w, const void *x) { return dot_f32_bytes(w, x, n); }

static float vec_dot_f16(int n, const void *w, const void *x) { return dot_f16_bytes(w, x, n); }

static float vec_dot_bf16(int n, const void *w_row, const void *act) {
    const uint8_t *w = w_row;
    const float *x = act;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(ld_bf16x8(w + 2 * i), _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(ld_bf16x8(w + 2 * i + 16), _mm256_loadu_ps(x + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(ld_bf16x8(w + 2 * i), _mm256_loadu_ps(x + i), s0);
    float tail = 0;
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, w + 2 * i, sizeof h);
        tail += lmoe_bf16_to_f32(h) * x[i];
    }
    return hsum_ps(_mm256_add_ps(s0, s1)) + tail;
}

/* ---- Activation quantizers (bit-identical to quant_dot.c) ------------- */

static inline __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

static inline float hmax_ps(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* roundf (ties away from zero) as int32, 0 where |v| >= 128 or NaN, as
 * quant_dot.c's round_away_i8: truncate, then step one away from zero when
 * the dropped fraction (exact in float) is at least a half. */
static inline __m256i round_away_i32(__m256 v) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
    const __m256 step = _mm256_or_ps(_mm256_and_ps(v, sign), _mm256_set1_ps(1.0f));
    const __m256 up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    const __m256 r = _mm256_add_ps(t, _mm256_and_ps(up, step));
    const __m256 ok = _mm256_cmp_ps(abs_ps(v), _mm256_set1_ps(128.0f), _CMP_LT_OQ);
    return _mm256_cvttps_epi32(_mm256_and_ps(r, ok));
}

/* 32 int32 codes (in 4 vectors, each within int8 range) to 32 bytes in
 * order: the packs work per 128-bit lane, the permute undoes that. */
static inline __m256i pack32(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static void quantize_q8_0_avx2(const float *x, uint8_t *b, int n) {
    for (int i = 0; i < n / LMOE_QK; i++, x += LMOE_QK, b += sizeof(struct lmoe_block_q8_0)) {
        __m256 v[4];
        for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(x + 8 * k);
        const float amax = hmax_ps(_mm256_max_ps(_mm256_max_ps(abs_ps(v[0]), abs_ps(v[1])),
                                                 _mm256_max_ps(abs_ps(v[2]), abs_ps(v[3]))));
        const float d = amax / 127.0f;
        const __m256 id = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
        const uint16_t dh = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        memcpy(b + offsetof(struct lmoe_block_q8_0, d), &dh, sizeof dh);
        __m256i q[4];
        for (int k = 0; k < 4; k++) q[k] = round_away_i32(_mm256_mul_ps(v[k], id));
        _mm256_storeu_si256((__m256i *)(b + offsetof(struct lmoe_block_q8_0, qs)), pack32(q[0], q[1], q[2], q[3]));
    }
}

/* Nearest-even as int32 clamped to +-127, 0 where |v| >= 2^22 or NaN, as
 * quant_dot.c's nearest_even plus the clamp. */
static inline __m256i nearest_even_i32(__m256 v) {
    const __m256 r = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 ok = _mm256_cmp_ps(abs_ps(v), _mm256_set1_ps(4194304.0f), _CMP_LT_OQ);
    const __m256i q = _mm256_cvttps_epi32(_mm256_and_ps(r, ok));
    return _mm256_max_epi32(_mm256_min_epi32(q, _mm256_set1_epi32(127)), _mm256_set1_epi32(-127));
}

static void quantize_q8_K_avx2(const float *x, uint8_t *b, int n) {
    for (int i = 0; i < n / LMOE_QK_K; i++, x += LMOE_QK_K, b += sizeof(struct lmoe_block_q8_k)) {
        int8_t *qs = (int8_t *)(b + offsetof(struct lmoe_block_q8_k, qs));
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < LMOE_QK_K; j += 8) m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(x + j)));
        const float amax = hmax_ps(m);
        float d = 0.0f;
        int16_t bsums[LMOE_QK_K / 16] = {0};
        if (amax == 0.0f) {
            memset(qs, 0, LMOE_QK_K);
        } else {
            /* The reference keeps the sign of the first element of largest
             * magnitude; find it 8 lanes at a time. */
            float max = amax;
            for (int j = 0; j < LMOE_QK_K; j += 8) {
                const __m256 v = _mm256_loadu_ps(x + j);
                const int hit = _mm256_movemask_ps(_mm256_cmp_ps(abs_ps(v), _mm256_set1_ps(amax), _CMP_EQ_OQ));
                if (hit) {
                    max = x[j + __builtin_ctz((unsigned)hit)];
                    break;
                }
            }
            const float iscale = -127.0f / max;
            const __m256 vs = _mm256_set1_ps(iscale);
            for (int j = 0; j < LMOE_QK_K; j += 32) {
                __m256i q[4];
                for (int k = 0; k < 4; k++)
                    q[k] = nearest_even_i32(_mm256_mul_ps(_mm256_loadu_ps(x + j + 8 * k), vs));
                _mm256_storeu_si256((__m256i *)(qs + j), pack32(q[0], q[1], q[2], q[3]));
            }
            /* Once per 256 activations, against a whole weight matrix per
             * use: the plain loop is fast enough. */
            for (int j = 0; j < LMOE_QK_K; j++) bsums[j / 16] = (int16_t)(bsums[j / 16] + qs[j]);
            d = 1.0f / iscale;
        }
        memcpy(b + offsetof(struct lmoe_block_q8_k, d), &d, sizeof d);
        memcpy(b + offsetof(struct lmoe_block_q8_k, bsums), bsums, sizeof bsums);
    }
}

static void quantize_act_avx2(uint32_t act_type, const float *x, void *dst, int n) {
    if (act_type == LMOE_DTYPE_Q8_0) quantize_q8_0_avx2(x, dst, n);
    else if (act_type == LMOE_DTYPE_Q8_K) quantize_q8_K_avx2(x, dst, n);
}

/* ---- Legacy 32-blocks x Q8_0 -------------------------------------------
 * One block per iteration: 32 codes are one 256-bit register, and the
 * block's int32 partial sums are scaled into an 8-lane float accumulator
 * with a single FMA. */

#define Q8_0_BYTES sizeof(struct lmoe_block_q8_0)

/* One block's contribution added into acc, per type. */
static inline __m256 blk_q4_0(const uint8_t *w, const uint8_t *a, __m256 acc) {
    const __m256i q = _mm256_sub_epi8(nibbles32(w + 2), _mm256_set1_epi8(8));
    const __m256i p = dot_s8s8(q, ld256(a + 2));
    return _mm256_fmadd_ps(_mm256_set1_ps(ld_f16(w) * ld_f16(a)), _mm256_cvtepi32_ps(p), acc);
}

/* The min term needs the block's sum of activation codes: one more
 * maddubs against ones. */
static inline __m256 blk_q4_1(const uint8_t *w, const uint8_t *a, __m256 acc) {
    const __m256i y = ld256(a + 2);
    const __m256i p = dot_u8s8(nibbles32(w + 4), y);
    const __m256i s = dot_u8s8(_mm256_set1_epi8(1), y);
    const float da = ld_f16(a);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(ld_f16(w) * da), _mm256_cvtepi32_ps(p), acc);
    return _mm256_fmadd_ps(_mm256_set1_ps(ld_f16(w + 2) * da), _mm256_cvtepi32_ps(s), acc);
}

/* Q5_0 codes minus 16: a clear fifth bit makes the nibble negative, which
 * in two's complement is the nibble with the top four bits set. */
static inline __m256 blk_q5_0(const uint8_t *w, const uint8_t *a, __m256 acc) {
    const __m256i neg = _mm256_andnot_si256(bits32(w + 2), _mm256_set1_epi8((char)0xF0));
    const __m256i q = _mm256_or_si256(nibbles32(w + 6), neg);
    const __m256i p = dot_s8s8(q, ld256(a + 2));
    return _mm256_fmadd_ps(_mm256_set1_ps(ld_f16(w) * ld_f16(a)), _mm256_cvtepi32_ps(p), acc);
}

static inline __m256 blk_q5_1(const uint8_t *w, const uint8_t *a, __m256 acc) {
    const __m256i hi = _mm256_and_si256(bits32(w + 4), _mm256_set1_epi8(0x10));
    const __m256i q = _mm256_or_si256(nibbles32(w + 8), hi);
    const __m256i y = ld256(a + 2);
    const __m256i p = dot_u8s8(q, y);
    const __m256i s = dot_u8s8(_mm256_set1_epi8(1), y);
    const float da = ld_f16(a);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(ld_f16(w) * da), _mm256_cvtepi32_ps(p), acc);
    return _mm256_fmadd_ps(_mm256_set1_ps(ld_f16(w + 2) * da), _mm256_cvtepi32_ps(s), acc);
}

static inline __m256 blk_q8_0(const uint8_t *w, const uint8_t *a, __m256 acc) {
    const __m256i p = dot_s8s8(ld256(w + 2), ld256(a + 2));
    return _mm256_fmadd_ps(_mm256_set1_ps(ld_f16(w) * ld_f16(a)), _mm256_cvtepi32_ps(p), acc);
}

/* Two blocks per iteration into two accumulators, so that two FMA chains
 * overlap instead of one block waiting on the previous one's add. */
#define LEGACY_DOT(name, blk, wbytes)                                             \
    static float name(int n, const void *w_row, const void *act) {                \
        const uint8_t *w = w_row, *a = act;                                       \
        __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;                           \
        const int nb = n / LMOE_QK;                                               \
        int i = 0;                                                                \
        for (; i + 2 <= nb; i += 2, w += 2 * (wbytes), a += 2 * Q8_0_BYTES) {     \
            acc0 = blk(w, a, acc0);                                               \
            acc1 = blk(w + (wbytes), a + Q8_0_BYTES, acc1);                       \
        }                                                                         \
        if (i < nb) acc0 = blk(w, a, acc0);                                       \
        return hsum_ps(_mm256_add_ps(acc0, acc1));                                \
    }

LEGACY_DOT(vec_dot_q4_0, blk_q4_0, sizeof(struct lmoe_block_q4_0))
LEGACY_DOT(vec_dot_q4_1, blk_q4_1, sizeof(struct lmoe_block_q4_1))
LEGACY_DOT(vec_dot_q5_0, blk_q5_0, sizeof(struct lmoe_block_q5_0))
LEGACY_DOT(vec_dot_q5_1, blk_q5_1, sizeof(struct lmoe_block_q5_1))
LEGACY_DOT(vec_dot_q8_0, blk_q8_0, sizeof(struct lmoe_block_q8_0))

/* ---- K-quants x Q8_K ---------------------------------------------------
 * One 256-element super-block per iteration. Inside it everything stays
 * in int32 lanes (scales applied with madd on the int16 maddubs sums);
 * one FMA per super-block moves the sum into the float accumulator. */

#define Q8_K_BYTES sizeof(struct lmoe_block_q8_k)

/* Q4_K/Q5_K: the 8 scales and 8 mins of the 12 packed bytes at once (the
 * layout is in quant_ref.c's k4_scale_min), with 32-bit word operations:
 * words w0 = bytes 0..3, w1 = 4..7, w2 = 8..11. */
static inline void k4_unpack(const uint8_t *s, uint8_t sc[8], uint8_t mn[8]) {
    uint32_t w0, w1, w2;
    memcpy(&w0, s, 4), memcpy(&w1, s + 4, 4), memcpy(&w2, s + 8, 4);
    const uint32_t sc03 = w0 & 0x3F3F3F3F, mn03 = w1 & 0x3F3F3F3F;
    const uint32_t sc47 = (w2 & 0x0F0F0F0F) | (((w0 >> 6) & 0x03030303) << 4);
    const uint32_t mn47 = ((w2 >> 4) & 0x0F0F0F0F) | (((w1 >> 6) & 0x03030303) << 4);
    memcpy(sc, &sc03, 4), memcpy(sc + 4, &sc47, 4);
    memcpy(mn, &mn03, 4), memcpy(mn + 4, &mn47, 4);
}

/* Q3_K: the 16 signed scales of the 12 packed bytes (layout in quant_ref.c's
 * q3_k_scale): low nibbles from bytes 0..7, top two bits from 8..11. */
static inline void q3_unpack(const uint8_t *s, int16_t sc[16]) {
    uint32_t w0, w1, w2;
    memcpy(&w0, s, 4), memcpy(&w1, s + 4, 4), memcpy(&w2, s + 8, 4);
    const uint32_t m4 = 0x0F0F0F0F, m2 = 0x03030303;
    uint32_t v[4] = {
        (w0 & m4) | ((w2 & m2) << 4),
        (w1 & m4) | (((w2 >> 2) & m2) << 4),
        ((w0 >> 4) & m4) | (((w2 >> 4) & m2) << 4),
        ((w1 >> 4) & m4) | (((w2 >> 6) & m2) << 4),
    };
    uint8_t b[16];
    memcpy(b, v, sizeof b);
    for (int g = 0; g < 16; g++) sc[g] = (int16_t)(b[g] - 32);
}
#define Q8_K_QS offsetof(struct lmoe_block_q8_k, qs)
#define Q8_K_BSUMS offsetof(struct lmoe_block_q8_k, bsums)

static float vec_dot_q2_K(int n, const void *w_row, const void *act) {
    const uint8_t *w = w_row, *a = act;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / LMOE_QK_K; i++, w += sizeof(struct lmoe_block_q2_k), a += Q8_K_BYTES) {
        const uint8_t *sc = w + offsetof(struct lmoe_block_q2_k, scales);
        const uint8_t *qs = w + offsetof(struct lmoe_block_q2_k, qs);
        const uint8_t *aq = a + Q8_K_QS;
        __m256i isum = _mm256_setzero_si256();
        /* element half*128 + k*32 + l: bits 2k of qs[half*32 + l]; the 32
         * elements of one k are the groups half*8 + 2k and the next */
        for (int half = 0; half < 2; half++) {
            const __m256i qv = ld256(qs + 32 * half);
            for (int k = 0; k < 4; k++) {
                const __m256i q = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * k), _mm256_set1_epi8(3));
                const __m256i p = _mm256_maddubs_epi16(q, ld256(aq + 128 * half + 32 * k));
                const int g = half * 8 + 2 * k;
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, scales2(sc[g] & 0x0F, sc[g + 1] & 0x0F)));
            }
        }
        /* mins: sum_g (sc_g >> 4) * bsum_g */
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(ld128(sc), 4), _mm_set1_epi8(0x0F)));
        const __m256i msum = _mm256_madd_epi16(ld256(a + Q8_K_BSUMS), mins);
        const float da = ld_f32(a);
        const float d = ld_f16(w + offsetof(struct lmoe_block_q2_k, d)) * da;
        const float dmin = ld_f16(w + offsetof(struct lmoe_block_q2_k, dmin)) * da;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum), acc);
        acc = _mm256_fnmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(msum), acc);
    }
    return hsum_ps(acc);
}

/* Q3_K codes q = u - 4 with u = low bits | high bit << 2 in 0..7, so
 * sum sc q a = sum sc u a - 4 sum_g sc_g bsum_g: unsigned maddubs again. */
static float vec_dot_q3_K(int n, const void *w_row, const void *act) {
    const uint8_t *w = w_row, *a = act;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / LMOE_QK_K; i++, w += sizeof(struct lmoe_block_q3_k), a += Q8_K_BYTES) {
        const uint8_t *hmask = w + offsetof(struct lmoe_block_q3_k, hmask);
        const uint8_t *qs = w + offsetof(struct lmoe_block_q3_k, qs);
        const uint8_t *scales = w + offsetof(struct lmoe_block_q3_k, scales);
        const uint8_t *aq = a + Q8_K_QS;
        int16_t sc[16];
        q3_unpack(scales, sc);
        const __m256i hm = ld256(hmask);
        __m256i isum = _mm256_setzero_si256();
        for (int half = 0; half < 2; half++) {
            const __m256i qv = ld256(qs + 32 * half);
            for (int k = 0; k < 4; k++) {
                const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * k), _mm256_set1_epi8(3));
                const __m256i hb = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * half + k), _mm256_set1_epi8(1));
                const __m256i u = _mm256_or_si256(lo, _mm256_slli_epi16(hb, 2));
                const __m256i p = _mm256_maddubs_epi16(u, ld256(aq + 128 * half + 32 * k));
                const int g = half * 8 + 2 * k;
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, scales2(sc[g], sc[g + 1])));
            }
        }
        const __m256i bias = _mm256_madd_epi16(ld256(a + Q8_K_BSUMS), ld256(sc));
        isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(bias, 2));
        const float d = ld_f16(w + offsetof(struct lmoe_block_q3_k, d)) * ld_f32(a);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum), acc);
    }
    return hsum_ps(acc);
}

/* Q4_K and Q5_K (qh_off 0 for Q4_K): 32 bytes of qs hold the groups 2c
 * (low nibbles) and 2c + 1 (high nibbles); the fifth bit of group g is bit
 * g of each qh byte, shifted down one step per group. The min term is 8
 * multiplies per super-block, done in scalar. */
static inline float dot_k45_avx2(int n, const uint8_t *w, const uint8_t *a, size_t block_bytes,
                                 size_t sc_off, size_t qh_off, size_t qs_off) {
    const __m256i low4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    __m256 acc = _mm256_setzero_ps();
    float mins = 0.0f;
    for (int i = 0; i < n / LMOE_QK_K; i++, w += block_bytes, a += Q8_K_BYTES) {
        const uint8_t *qs = w + qs_off, *aq = a + Q8_K_QS;
        uint8_t sc[8], mn[8];
        k4_unpack(w + sc_off, sc, mn);
        int16_t bs[16];
        memcpy(bs, a + Q8_K_BSUMS, sizeof bs);
        int msum = 0;
        for (int g = 0; g < 8; g++) msum += mn[g] * (bs[2 * g] + bs[2 * g + 1]);
        __m256i hb = qh_off ? ld256(w + qh_off) : _mm256_setzero_si256();
        __m256i isum = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            const __m256i q = ld256(qs + 32 * c);
            __m256i lo = _mm256_and_si256(q, low4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
            if (qh_off) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 1), one), 4));
                hb = _mm256_srli_epi16(hb, 2);
            }
            const __m256i plo = _mm256_maddubs_epi16(lo, ld256(aq + 64 * c));
            const __m256i phi = _mm256_maddubs_epi16(hi, ld256(aq + 64 * c + 32));
            isum = _mm256_add_epi32(isum, _mm256_madd_epi16(plo, _mm256_set1_epi16((short)sc[2 * c])));
            isum = _mm256_add_epi32(isum, _mm256_madd_epi16(phi, _mm256_set1_epi16((short)sc[2 * c + 1])));
        }
        const float da = ld_f32(a);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(ld_f16(w) * da), _mm256_cvtepi32_ps(isum), acc);
        mins += ld_f16(w + 2) * da * (float)msum;
    }
    return hsum_ps(acc) - mins;
}

static float vec_dot_q4_K(int n, const void *w_row, const void *act) {
    return dot_k45_avx2(n, w_row, act, sizeof(struct lmoe_block_q4_k), offsetof(struct lmoe_block_q4_k, scales),
                        0, offsetof(struct lmoe_block_q4_k, qs));
}

static float vec_dot_q5_K(int n, const void *w_row, const void *act) {
    return dot_k45_avx2(n, w_row, act, sizeof(struct lmoe_block_q5_k), offsetof(struct lmoe_block_q5_k, scales),
                        offsetof(struct lmoe_block_q5_k, qh), offsetof(struct lmoe_block_q5_k, qs));
}

/* Q6_K: unsigned 6-bit codes into maddubs, then the bias of 32 removed
 * as 32 * sum_g sc_g bsum_g. Each half of 128 elements reads 64 bytes of
 * ql and 32 of qh; its four 32-element rows k are the groups 2k, 2k + 1. */
static float vec_dot_q6_K(int n, const void *w_row, const void *act) {
    const uint8_t *w = w_row, *a = act;
    const __m256i low4 = _mm256_set1_epi8(0x0F), low2 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / LMOE_QK_K; i++, w += sizeof(struct lmoe_block_q6_k), a += Q8_K_BYTES) {
        const uint8_t *ql = w + offsetof(struct lmoe_block_q6_k, ql);
        const uint8_t *qh = w + offsetof(struct lmoe_block_q6_k, qh);
        const int8_t *sc = (const int8_t *)(w + offsetof(struct lmoe_block_q6_k, scales));
        const uint8_t *aq = a + Q8_K_QS;
        __m256i isum = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i l0 = ld256(ql + 64 * h), l1 = ld256(ql + 64 * h + 32), hv = ld256(qh + 32 * h);
            __m256i q[4];
            q[0] = _mm256_and_si256(l0, low4);
            q[1] = _mm256_and_si256(l1, low4);
            q[2] = _mm256_and_si256(_mm256_srli_epi16(l0, 4), low4);
            q[3] = _mm256_and_si256(_mm256_srli_epi16(l1, 4), low4);
            for (int k = 0; k < 4; k++) {
                const __m256i hi2 = _mm256_and_si256(_mm256_srli_epi16(hv, 2 * k), low2);
                const __m256i u = _mm256_or_si256(q[k], _mm256_slli_epi16(hi2, 4));
                const __m256i p = _mm256_maddubs_epi16(u, ld256(aq + 128 * h + 32 * k));
                const int g = 8 * h + 2 * k;
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, scales2(sc[g], sc[g + 1])));
            }
        }
        const __m256i sc16 = _mm256_cvtepi8_epi16(ld128(sc));
        const __m256i bias = _mm256_madd_epi16(ld256(a + Q8_K_BSUMS), sc16);
        isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(bias, 5));
        const float d = ld_f16(w + offsetof(struct lmoe_block_q6_k, d)) * ld_f32(a);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum), acc);
    }
    return hsum_ps(acc);
}

const struct lmoe_kernels lmoe_kernels_avx2 = {
    .name = "avx2",
    .dot_f32 = dot_f32_avx2,
    .axpy_f32 = axpy_f32_avx2,
    .dot_f16_f32 = dot_f16_f32_avx2,
    .axpy_f16 = axpy_f16_avx2,
    .f32_to_f16 = f32_to_f16_avx2,
    .dequantize_row = dequantize_row_avx2,
    .quantize_act = quantize_act_avx2,
    .vec_dot = {
        [LMOE_DTYPE_F32] = vec_dot_f32,
        [LMOE_DTYPE_F16] = vec_dot_f16,
        [LMOE_DTYPE_BF16] = vec_dot_bf16,
        [LMOE_DTYPE_Q4_0] = vec_dot_q4_0,
        [LMOE_DTYPE_Q4_1] = vec_dot_q4_1,
        [LMOE_DTYPE_Q5_0] = vec_dot_q5_0,
        [LMOE_DTYPE_Q5_1] = vec_dot_q5_1,
        [LMOE_DTYPE_Q8_0] = vec_dot_q8_0,
        [LMOE_DTYPE_Q2_K] = vec_dot_q2_K,
        [LMOE_DTYPE_Q3_K] = vec_dot_q3_K,
        [LMOE_DTYPE_Q4_K] = vec_dot_q4_K,
        [LMOE_DTYPE_Q5_K] = vec_dot_q5_K,
        [LMOE_DTYPE_Q6_K] = vec_dot_q6_K,
    },
    .quantized_matmul = 1,
};

#else

/* Built without the AVX2 flags: no table (dispatch.c checks .name). */
const struct lmoe_kernels lmoe_kernels_avx2 = {.name = NULL};

#endif
