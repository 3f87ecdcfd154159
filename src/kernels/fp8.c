/*
 * fp8.c - FP8 block-scaled rows: the scalar reference and an AVX2 path.
 *
 * The AVX2 path widens FP8 through IEEE halves with one shift and a mask,
 * then F16C converts eight halves to floats at once:
 *   E5M2 is the top byte of a half: h = b << 8, exactly.
 *   E4M3 (bias 7) placed in a half's exponent and mantissa fields
 *        (h = (b & 0x7f) << 7, sign to bit 15) reads as the value times
 *        2^-8, subnormals included (both formats' subnormals scale by the
 *        same power of two), so the block scale is multiplied by 256.
 *        E4M3's NaN (S.1111.111) would read as a finite number: the loop
 *        notes any 0x7f/0xff byte and such a row is redone by the reference.
 * The file is compiled without ISA flags; the AVX2 functions carry a target
 * attribute and are reached only after the CPU check of dispatch.c.
 */
#include <math.h>
#include <stddef.h>

#include "kernels/fp8.h"
#include "kernels/kernels.h"
#include "quant/quant.h"

/* ---- Reference --------------------------------------------------------- */

static float dot_ref(uint32_t type, const uint8_t *w, const float *scale, const float *x, int n) {
    float total = 0.0f;
    for (int b = 0; b * LMOE_FP8_BLOCK < n; b++) {
        int c0 = b * LMOE_FP8_BLOCK, c1 = c0 + LMOE_FP8_BLOCK < n ? c0 + LMOE_FP8_BLOCK : n;
        float sum = 0.0f;
        for (int c = c0; c < c1; c++)
            sum += (type == LMOE_DTYPE_F8_E5M2_B128 ? lmoe_f8_e5m2_to_f32(w[c]) : lmoe_f8_e4m3_to_f32(w[c])) * x[c];
        total += sum * scale[b];
    }
    return total;
}

static float dot_e4m3_ref(const uint8_t *w, const float *scale, const float *x, int n) {
    return dot_ref(LMOE_DTYPE_F8_E4M3_B128, w, scale, x, n);
}
static float dot_e5m2_ref(const uint8_t *w, const float *scale, const float *x, int n) {
    return dot_ref(LMOE_DTYPE_F8_E5M2_B128, w, scale, x, n);
}
static void row_e4m3_ref(const uint8_t *w, const float *scale, float *dst, int n) {
    lmoe_dequantize_row_fp8(LMOE_DTYPE_F8_E4M3_B128, w, scale, 0, 0, dst, n);
}
static void row_e5m2_ref(const uint8_t *w, const float *scale, float *dst, int n) {
    lmoe_dequantize_row_fp8(LMOE_DTYPE_F8_E5M2_B128, w, scale, 0, 0, dst, n);
}

const struct lmoe_fp8_kernels lmoe_fp8_kernels_ref = {
    .name = "ref",
    .dot_e4m3 = dot_e4m3_ref,
    .dot_e5m2 = dot_e5m2_ref,
    .row_e4m3 = row_e4m3_ref,
    .row_e5m2 = row_e5m2_ref,
};

/* ---- AVX2 + FMA + F16C --------------------------------------------------- */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))

/* 16 FP8 bytes as 16 halves (e4m3: the value times 2^-8). */
AVX2 static inline __m256i halves_e4m3(__m128i b) {
    return _mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(b), 7), _mm256_set1_epi16((short)0xBF80));
}
AVX2 static inline __m256i halves_e5m2(__m128i b) { return _mm256_slli_epi16(_mm256_cvtepu8_epi16(b), 8); }

/* Nonzero lanes where a byte is E4M3's NaN. */
AVX2 static inline __m128i nan_e4m3(__m128i b) {
    return _mm_cmpeq_epi8(_mm_and_si128(b, _mm_set1_epi8(0x7f)), _mm_set1_epi8(0x7f));
}

AVX2 static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One row: per block, four accumulators over 32-byte steps, then a 16-byte
 * step and a scalar tail for a partial last block. e4m3 selects the format
 * at compile time (the function is instantiated twice). */
AVX2 static inline float dot_avx2(const uint8_t *w, const float *scale, const float *x, int n, int e4m3,
                                  int *saw_nan) {
    __m256 total = _mm256_setzero_ps();
    __m128i nan = _mm_setzero_si128();
    const float mul = e4m3 ? 256.0f : 1.0f;
    float tail_total = 0.0f;
    for (int b = 0; b * LMOE_FP8_BLOCK < n; b++) {
        int c = b * LMOE_FP8_BLOCK, c1 = c + LMOE_FP8_BLOCK < n ? c + LMOE_FP8_BLOCK : n;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
               a3 = _mm256_setzero_ps();
        for (; c + 32 <= c1; c += 32) {
            __m128i b0 = _mm_loadu_si128((const __m128i *)(w + c)), b1 = _mm_loadu_si128((const __m128i *)(w + c + 16));
            __m256i h0 = e4m3 ? halves_e4m3(b0) : halves_e5m2(b0), h1 = e4m3 ? halves_e4m3(b1) : halves_e5m2(b1);
            if (e4m3) nan = _mm_or_si128(nan, _mm_or_si128(nan_e4m3(b0), nan_e4m3(b1)));
            a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h0)), _mm256_loadu_ps(x + c), a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h0, 1)), _mm256_loadu_ps(x + c + 8), a1);
            a2 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h1)), _mm256_loadu_ps(x + c + 16), a2);
            a3 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h1, 1)), _mm256_loadu_ps(x + c + 24), a3);
        }
        for (; c + 16 <= c1; c += 16) {
            __m128i b0 = _mm_loadu_si128((const __m128i *)(w + c));
            __m256i h0 = e4m3 ? halves_e4m3(b0) : halves_e5m2(b0);
            if (e4m3) nan = _mm_or_si128(nan, nan_e4m3(b0));
            a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h0)), _mm256_loadu_ps(x + c), a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h0, 1)), _mm256_loadu_ps(x + c + 8), a1);
        }
        float rest = 0.0f;
        for (; c < c1; c++)
            rest += (e4m3 ? lmoe_f8_e4m3_to_f32(w[c]) : lmoe_f8_e5m2_to_f32(w[c])) * x[c];
        __m256 acc = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
        total = _mm256_fmadd_ps(acc, _mm256_set1_ps(scale[b] * mul), total);
        tail_total += rest * scale[b];
    }
    *saw_nan = !_mm_testz_si128(nan, nan);
    return hsum(total) + tail_total;
}

AVX2 static float dot_e4m3_avx2(const uint8_t *w, const float *scale, const float *x, int n) {
    int saw_nan;
    float r = dot_avx2(w, scale, x, n, 1, &saw_nan);
    return saw_nan ? dot_e4m3_ref(w, scale, x, n) : r;
}

AVX2 static float dot_e5m2_avx2(const uint8_t *w, const float *scale, const float *x, int n) {
    int saw_nan;
    return dot_avx2(w, scale, x, n, 0, &saw_nan);
}

/* Rows: the same widening, each element times its block's scale (one
 * rounding, the same bits as the reference). */
AVX2 static inline void row_avx2(const uint8_t *w, const float *scale, float *dst, int n, int e4m3) {
    __m128i nan = _mm_setzero_si128();
    for (int b = 0; b * LMOE_FP8_BLOCK < n; b++) {
        int c = b * LMOE_FP8_BLOCK, c1 = c + LMOE_FP8_BLOCK < n ? c + LMOE_FP8_BLOCK : n;
        __m256 s = _mm256_set1_ps(scale[b] * (e4m3 ? 256.0f : 1.0f));
        for (; c + 16 <= c1; c += 16) {
            __m128i b0 = _mm_loadu_si128((const __m128i *)(w + c));
            __m256i h0 = e4m3 ? halves_e4m3(b0) : halves_e5m2(b0);
            if (e4m3) nan = _mm_or_si128(nan, nan_e4m3(b0));
            _mm256_storeu_ps(dst + c, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h0)), s));
            _mm256_storeu_ps(dst + c + 8, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h0, 1)), s));
        }
        for (; c < c1; c++) dst[c] = (e4m3 ? lmoe_f8_e4m3_to_f32(w[c]) : lmoe_f8_e5m2_to_f32(w[c])) * scale[b];
    }
    if (!_mm_testz_si128(nan, nan)) row_e4m3_ref(w, scale, dst, n);
}

AVX2 static void row_e4m3_avx2(const uint8_t *w, const float *scale, float *dst, int n) {
    row_avx2(w, scale, dst, n, 1);
}
AVX2 static void row_e5m2_avx2(const uint8_t *w, const float *scale, float *dst, int n) {
    row_avx2(w, scale, dst, n, 0);
}

static const struct lmoe_fp8_kernels fp8_avx2 = {
    .name = "avx2",
    .dot_e4m3 = dot_e4m3_avx2,
    .dot_e5m2 = dot_e5m2_avx2,
    .row_e4m3 = row_e4m3_avx2,
    .row_e5m2 = row_e5m2_avx2,
};

const struct lmoe_fp8_kernels *lmoe_fp8_kernels_best(void) {
    /* The same check as the AVX2 kernel table's (AVX2, FMA, F16C). */
    if (lmoe_kernels_have("avx2")) return &fp8_avx2;
    return &lmoe_fp8_kernels_ref;
}
#else
const struct lmoe_fp8_kernels *lmoe_fp8_kernels_best(void) { return &lmoe_fp8_kernels_ref; }
#endif
