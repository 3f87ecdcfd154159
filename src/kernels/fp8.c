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
#include <string.h>

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
/* Software prefetch distance of the weight streams, in bytes. */
#define FP8_PREFETCH 512

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

/* 32 FP8 bytes widened to four vectors of 8 floats (e4m3: times 2^-8). */
#define AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) static inline
AVX2_INLINE void widen32(__m256i b, int e4m3, __m256 *f0, __m256 *f1, __m256 *f2, __m256 *f3) {
    __m256i h0, h1;
    if (e4m3) {
        h0 = halves_e4m3(_mm256_castsi256_si128(b));
        h1 = halves_e4m3(_mm256_extracti128_si256(b, 1));
    } else {
        h0 = halves_e5m2(_mm256_castsi256_si128(b));
        h1 = halves_e5m2(_mm256_extracti128_si256(b, 1));
    }
    *f0 = _mm256_cvtph_ps(_mm256_castsi256_si128(h0));
    *f1 = _mm256_cvtph_ps(_mm256_extracti128_si256(h0, 1));
    *f2 = _mm256_cvtph_ps(_mm256_castsi256_si128(h1));
    *f3 = _mm256_cvtph_ps(_mm256_extracti128_si256(h1, 1));
}

/* One row: per block, four accumulators over 32-byte steps, then a scalar
 * tail for a partial last block. e4m3 is a constant in each caller, so the
 * format choice and the NaN watch compile away where unused. The NaN watch
 * ORs a byte compare into one register: two instructions per 32 bytes. */
AVX2_INLINE float dot_avx2(const uint8_t *w, const float *scale, const float *x, int n, int e4m3, int *saw_nan) {
    __m256 total = _mm256_setzero_ps();
    __m256i nan = _mm256_setzero_si256();
    const __m256i low7 = _mm256_set1_epi8(0x7f);
    const float mul = e4m3 ? 256.0f : 1.0f;
    float tail_total = 0.0f;
    for (int b = 0; b * LMOE_FP8_BLOCK < n; b++) {
        int c = b * LMOE_FP8_BLOCK, c1 = c + LMOE_FP8_BLOCK < n ? c + LMOE_FP8_BLOCK : n;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
               a3 = _mm256_setzero_ps();
        for (; c + 32 <= c1; c += 32) {
            _mm_prefetch((const char *)w + c + FP8_PREFETCH, _MM_HINT_T0);
            __m256i bytes = _mm256_loadu_si256((const __m256i *)(w + c));
            if (e4m3) nan = _mm256_or_si256(nan, _mm256_cmpeq_epi8(_mm256_and_si256(bytes, low7), low7));
            __m256 f0, f1, f2, f3;
            widen32(bytes, e4m3, &f0, &f1, &f2, &f3);
            a0 = _mm256_fmadd_ps(f0, _mm256_loadu_ps(x + c), a0);
            a1 = _mm256_fmadd_ps(f1, _mm256_loadu_ps(x + c + 8), a1);
            a2 = _mm256_fmadd_ps(f2, _mm256_loadu_ps(x + c + 16), a2);
            a3 = _mm256_fmadd_ps(f3, _mm256_loadu_ps(x + c + 24), a3);
        }
        float rest = 0.0f;
        for (; c < c1; c++) rest += (e4m3 ? lmoe_f8_e4m3_to_f32(w[c]) : lmoe_f8_e5m2_to_f32(w[c])) * x[c];
        __m256 acc = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
        total = _mm256_fmadd_ps(acc, _mm256_set1_ps(scale[b] * mul), total);
        tail_total += rest * scale[b];
    }
    *saw_nan = !_mm256_testz_si256(nan, nan);
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

/* ---- AVX-512 (F, BW, VL) ------------------------------------------------
 *
 * The same widening on 32 bytes at once: one sign extension to 32 halves,
 * two conversions of 16 halves each. Port 5 does half the shuffling work of
 * the AVX2 loop per element, which is what bounds both. Several tokens go
 * through gemm4 (below); row keeps the AVX2 widening. */

#define AVX512_INLINE __attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c"), always_inline)) static inline
/* Row and token loops of at most 4 must be straight-line code so that
 * their vectors stay in registers. */
#define UNROLL4 _Pragma("GCC unroll 4")

/* 32 FP8 bytes as 32 halves (e4m3: the value times 2^-8), with a bit set
 * in *nan for each E4M3 NaN byte. */
AVX512_INLINE __m512i halves32(__m256i bytes, int e4m3, __mmask32 *nan) {
    if (!e4m3) return _mm512_slli_epi16(_mm512_cvtepu8_epi16(bytes), 8);
    const __m256i low7 = _mm256_set1_epi8(0x7f);
    *nan |= _mm256_cmpeq_epi8_mask(_mm256_and_si256(bytes, low7), low7);
    return _mm512_and_si512(_mm512_slli_epi16(_mm512_cvtepi8_epi16(bytes), 7), _mm512_set1_epi16((short)0xBF80));
}

AVX512_INLINE float dot_avx512(const uint8_t *w, const float *scale, const float *x, int n, int e4m3,
                               int *saw_nan) {
    __m512 total = _mm512_setzero_ps();
    __mmask32 nan = 0;
    const float mul = e4m3 ? 256.0f : 1.0f;
    float tail_total = 0.0f;
    for (int b = 0; b * LMOE_FP8_BLOCK < n; b++) {
        int c = b * LMOE_FP8_BLOCK, c1 = c + LMOE_FP8_BLOCK < n ? c + LMOE_FP8_BLOCK : n;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        for (; c + 32 <= c1; c += 32) {
            /* Rows are short streams the hardware prefetchers learn too
             * late (as in x86_avx512.c): ask FP8_PREFETCH bytes ahead. A
             * prefetch past the end of the weights does not fault. */
            _mm_prefetch((const char *)w + c + FP8_PREFETCH, _MM_HINT_T0);
            __m256i bytes = _mm256_loadu_si256((const __m256i *)(w + c));
            const __m512i h = halves32(bytes, e4m3, &nan);
            a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), _mm512_loadu_ps(x + c), a0);
            a1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)), _mm512_loadu_ps(x + c + 16), a1);
        }
        float rest = 0.0f;
        for (; c < c1; c++) rest += (e4m3 ? lmoe_f8_e4m3_to_f32(w[c]) : lmoe_f8_e5m2_to_f32(w[c])) * x[c];
        total = _mm512_fmadd_ps(_mm512_add_ps(a0, a1), _mm512_set1_ps(scale[b] * mul), total);
        tail_total += rest * scale[b];
    }
    *saw_nan = nan != 0;
    return _mm512_reduce_add_ps(total) + tail_total;
}

/* Four rows (row_bytes apart, sharing one block row of scales) against
 * one x: each x vector is loaded once for four rows, and four independent
 * byte streams keep more loads in flight than one. Same sums per row as
 * dot_avx512 (same order), so results equal it bit for bit. */
AVX512_INLINE void dot4_avx512(const uint8_t *w, size_t row_bytes, const float *scale, const float *x, int n,
                               float *y, int e4m3, int *saw_nan) {
    __m512 total[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    float tail_total[4] = {0, 0, 0, 0};
    __mmask32 nan = 0;
    const float mul = e4m3 ? 256.0f : 1.0f;
    for (int b = 0; b * LMOE_FP8_BLOCK < n; b++) {
        int c0 = b * LMOE_FP8_BLOCK, c1 = c0 + LMOE_FP8_BLOCK < n ? c0 + LMOE_FP8_BLOCK : n, c = c0;
        __m512 a0[4], a1[4];
        for (int k = 0; k < 4; k++) a0[k] = a1[k] = _mm512_setzero_ps();
        for (; c + 32 <= c1; c += 32) {
            __m512 x0 = _mm512_loadu_ps(x + c), x1 = _mm512_loadu_ps(x + c + 16);
            for (int k = 0; k < 4; k++) {
                _mm_prefetch((const char *)w + (size_t)k * row_bytes + c + FP8_PREFETCH, _MM_HINT_T0);
                __m256i bytes = _mm256_loadu_si256((const __m256i *)(w + (size_t)k * row_bytes + c));
                const __m512i h = halves32(bytes, e4m3, &nan);
                a0[k] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), x0, a0[k]);
                a1[k] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)), x1, a1[k]);
            }
        }
        __m512 s = _mm512_set1_ps(scale[b] * mul);
        for (int k = 0; k < 4; k++) {
            total[k] = _mm512_fmadd_ps(_mm512_add_ps(a0[k], a1[k]), s, total[k]);
            if (c < c1) {
                const uint8_t *wk = w + (size_t)k * row_bytes;
                float rest = 0.0f;
                for (int j = c; j < c1; j++)
                    rest += (e4m3 ? lmoe_f8_e4m3_to_f32(wk[j]) : lmoe_f8_e5m2_to_f32(wk[j])) * x[j];
                tail_total[k] += rest * scale[b];
            }
        }
    }
    *saw_nan = nan != 0;
    for (int k = 0; k < 4; k++) y[k] = _mm512_reduce_add_ps(total[k]) + tail_total[k];
}

__attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c"))) static void
dot4_e4m3_avx512(const uint8_t *w, size_t row_bytes, const float *scale, const float *x, int n, float *y) {
    int saw_nan;
    dot4_avx512(w, row_bytes, scale, x, n, y, 1, &saw_nan);
    if (saw_nan)
        for (int k = 0; k < 4; k++) y[k] = dot_e4m3_ref(w + (size_t)k * row_bytes, scale, x, n);
}

__attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c"))) static void
dot4_e5m2_avx512(const uint8_t *w, size_t row_bytes, const float *scale, const float *x, int n, float *y) {
    int saw_nan;
    dot4_avx512(w, row_bytes, scale, x, n, y, 0, &saw_nan);
}

__attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c"))) static float
dot_e4m3_avx512(const uint8_t *w, const float *scale, const float *x, int n) {
    int saw_nan;
    float r = dot_avx512(w, scale, x, n, 1, &saw_nan);
    return saw_nan ? dot_e4m3_ref(w, scale, x, n) : r;
}

__attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c"))) static float
dot_e5m2_avx512(const uint8_t *w, const float *scale, const float *x, int n) {
    int saw_nan;
    return dot_avx512(w, scale, x, n, 0, &saw_nan);
}

/* Several tokens (prompt processing), up to 4 rows x 4 tokens a pass: 32
 * columns of each row are widened in registers and multiplied by their
 * block's scale (the dequantized values, the bits row_avx2 writes), then
 * each token's 32 activations meet the four rows, 8 FMAs per two x loads.
 * Registers: 16 accumulators, 8 weight vectors, 2 of x. A 32-column step
 * never crosses a 128-block. E4M3's NaN code makes a row's every dot NaN,
 * as in the reference (NaN times anything), so such rows are only noted. */
AVX512_INLINE void gemm4_tile(const uint8_t *const *wr, const float *const *sr, const float *x, size_t ldx,
                              const int T, int n, float out[4][4], int e4m3, __mmask32 nan[4]) {
    __m512 acc[4][4];
    UNROLL4
    for (int r = 0; r < 4; r++)
        UNROLL4
        for (int t = 0; t < 4; t++) acc[r][t] = _mm512_setzero_ps();
    const float mul = e4m3 ? 256.0f : 1.0f;
    int c = 0;
    for (; c + 32 <= n; c += 32) {
        const int b = c / LMOE_FP8_BLOCK;
        __m512 w0[4], w1[4];
        UNROLL4
        for (int r = 0; r < 4; r++) {
            _mm_prefetch((const char *)wr[r] + c + FP8_PREFETCH, _MM_HINT_T0);
            const __m256i bytes = _mm256_loadu_si256((const __m256i *)(wr[r] + c));
            const __m512i h = halves32(bytes, e4m3, &nan[r]);
            const __m512 s = _mm512_set1_ps(sr[r][b] * mul);
            w0[r] = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), s);
            w1[r] = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)), s);
        }
        UNROLL4
        for (int t = 0; t < T; t++) {
            const __m512 x0 = _mm512_loadu_ps(x + (size_t)t * ldx + c), x1 = _mm512_loadu_ps(x + (size_t)t * ldx + c + 16);
            UNROLL4
            for (int r = 0; r < 4; r++) {
                acc[r][t] = _mm512_fmadd_ps(w0[r], x0, acc[r][t]);
                acc[r][t] = _mm512_fmadd_ps(w1[r], x1, acc[r][t]);
            }
        }
    }
    UNROLL4
    for (int r = 0; r < 4; r++)
        UNROLL4
        for (int t = 0; t < T; t++) out[r][t] = _mm512_reduce_add_ps(acc[r][t]);
    for (; c < n; c++)
        for (int r = 0; r < 4; r++) {
            const float v = (e4m3 ? lmoe_f8_e4m3_to_f32(wr[r][c]) : lmoe_f8_e5m2_to_f32(wr[r][c])) *
                            sr[r][c / LMOE_FP8_BLOCK];
            for (int t = 0; t < T; t++) out[r][t] += v * x[(size_t)t * ldx + c];
        }
}

AVX512_INLINE void gemm4_avx512(const uint8_t *const *w, const float *const *scale, int nr, const float *x,
                                size_t ldx, int T, int n, float *y, size_t ldy, int e4m3) {
    const uint8_t *wr[4];
    const float *sr[4];
    for (int r = 0; r < 4; r++) {
        /* missing rows repeat the last real one; their sums are not stored */
        wr[r] = w[r < nr ? r : nr - 1];
        sr[r] = scale[r < nr ? r : nr - 1];
    }
    __mmask32 nan[4] = {0, 0, 0, 0};
    for (int t0 = 0; t0 < T; t0 += 4) {
        const int nt = T - t0 < 4 ? T - t0 : 4;
        const float *xt = x + (size_t)t0 * ldx;
        float out[4][4];
        switch (nt) {
        case 1: gemm4_tile(wr, sr, xt, ldx, 1, n, out, e4m3, nan); break;
        case 2: gemm4_tile(wr, sr, xt, ldx, 2, n, out, e4m3, nan); break;
        case 3: gemm4_tile(wr, sr, xt, ldx, 3, n, out, e4m3, nan); break;
        default: gemm4_tile(wr, sr, xt, ldx, 4, n, out, e4m3, nan); break;
        }
        for (int r = 0; r < nr; r++)
            for (int t = 0; t < nt; t++) y[(size_t)(t0 + t) * ldy + (size_t)r] = nan[r] ? NAN : out[r][t];
    }
}

__attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c"))) static void
gemm4_e4m3_avx512(const uint8_t *const *w, const float *const *scale, int nr, const float *x, size_t ldx, int T,
                  int n, float *y, size_t ldy) {
    gemm4_avx512(w, scale, nr, x, ldx, T, n, y, ldy, 1);
}

__attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c"))) static void
gemm4_e5m2_avx512(const uint8_t *const *w, const float *const *scale, int nr, const float *x, size_t ldx, int T,
                  int n, float *y, size_t ldy) {
    gemm4_avx512(w, scale, nr, x, ldx, T, n, y, ldy, 0);
}

static const struct lmoe_fp8_kernels fp8_avx512 = {
    .name = "avx512",
    .dot_e4m3 = dot_e4m3_avx512,
    .dot_e5m2 = dot_e5m2_avx512,
    .dot4_e4m3 = dot4_e4m3_avx512,
    .dot4_e5m2 = dot4_e5m2_avx512,
    .gemm4_e4m3 = gemm4_e4m3_avx512,
    .gemm4_e5m2 = gemm4_e5m2_avx512,
    .row_e4m3 = row_e4m3_avx2,
    .row_e5m2 = row_e5m2_avx2,
};

const struct lmoe_fp8_kernels *lmoe_fp8_kernels_best(void) {
    if (lmoe_kernels_have("avx512")) return &fp8_avx512;
    /* The same checks as the kernel tables' (dispatch.c). */
    if (lmoe_kernels_have("avx2")) return &fp8_avx2;
    return &lmoe_fp8_kernels_ref;
}

const struct lmoe_fp8_kernels *lmoe_fp8_kernels_for(const struct lmoe_kernels *k) {
    /* Those tables exist only where dispatch.c found AVX2, FMA and F16C. */
    if (k && !strcmp(k->name, "avx512")) return &fp8_avx512;
    if (k && !strcmp(k->name, "avx2")) return &fp8_avx2;
    return &lmoe_fp8_kernels_ref;
}
#else
const struct lmoe_fp8_kernels *lmoe_fp8_kernels_best(void) { return &lmoe_fp8_kernels_ref; }
const struct lmoe_fp8_kernels *lmoe_fp8_kernels_for(const struct lmoe_kernels *k) {
    (void)k;
    return &lmoe_fp8_kernels_ref;
}
#endif
