/*
 * x86_avx512.c - the AVX-512 kernel table (F, BW, VL, DQ, VNNI).
 *
 * Built with the Makefile's ISA_FLAGS_x86_avx512 and entered only after
 * dispatch.c has seen those features (VNNI included) at run time. Built
 * without them, the file defines an empty table that dispatch.c skips.
 *
 * The point of this table is the quantized matrix product, for one token
 * (decode) and for many (prompt processing), through gemm tiles of R
 * weight rows x T tokens (4 x 4, 4 x 2, 4 x 1; "items" i = r * T + t). A
 * row's block is unpacked once and used for T tokens, a token's block is
 * loaded once for R rows. The value of an item never depends on the tile
 * it was computed in, so gemm results equal vec_dot's bit for bit
 * (op_matmul's batched == solo guarantee, checked by test_kernels.c):
 *
 *   - K-quants (Q4_K, Q5_K, Q6_K): per super-block, each item's integer
 *     sum is computed in vector lanes (vpmaddubsw, then vpdpwssd to apply
 *     the 6/8-bit group scales), a reduction network turns the R*T lane
 *     vectors into one vector whose lane i is item i's exact sum, and the
 *     float part runs one lane per item in the reference's order
 *     (quant_dot.c): sum = sum + ((d_w * d_a) * isum - (dmin_w * d_a) *
 *     msum), unfused. With a compiler that does not contract floats (gcc
 *     -std=c11), this even equals the reference (test_kernels.c checks it).
 *     One token (vec_dot) does not use a 1 x 1 tile: it takes 8 super-
 *     blocks per step (then 4, 2, 1), one reduction network for their 8
 *     isum and 8 msum vectors, the 8 float terms t_b = (d*da)*isum -
 *     (dmin*da)*msum in 8 lanes with the same unfused operations, then
 *     sum += t_b one lane at a time in block order: the same bits, with
 *     the scale decoding done in vector registers (see "One token").
 *   - Legacy 32-blocks (Q8_0, Q4_0, Q5_0): too little work per block to
 *     pay for a reduction per block, so they keep x86_avx2.c's order (two
 *     8-lane accumulators, one FMA per block) and vec_dot is AVX2's; see
 *     the section below.
 *   - One token (decode) runs vec_dot row after row rather than a 4 x 1
 *     tile: a tile reads four rows as four short interleaved streams, and
 *     measured from memory that was up to twice as slow as one stream.
 *
 * Rows at the edges of a matrix (n_rows or n_tok not a multiple of the
 * tile) are handled by pointing the missing rows or tokens of the tile at
 * the last real one: the duplicates compute the same values and are not
 * stored. Only items' own values are ever written.
 *
 * Entries this file does not speed up (Q2_K, Q3_K, Q4_1, Q5_1, the legacy
 * vec_dot, float-weight vec_dot, the activation quantizers, dequantize_row
 * for quantized types) call the AVX2 table's, which dispatch.c guarantees
 * is usable whenever this one is. Float kernels here: dot_f32, axpy_f32,
 * dot_f16_f32, axpy_f16, f32_to_f16, and f16/bf16 dequantize_row; the
 * axpy, conversion and dequantize results are the reference's bits, the
 * dots differ from it in summation order only. (No vdpbf16ps: it rounds
 * its inputs' products to bf16 pairs, which the f32 tolerance of the tests
 * does not allow.)
 *
 * All loads are unaligned: weight blocks sit at any byte address.
 */
#include <string.h>

#include "kernels/kernels.h"
#include "quant/quant.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__) && \
    defined(__AVX512VNNI__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

/* The bit-identity argument above needs every float multiply and add to
 * round on its own; gcc in ISO mode never fuses them, clang may within an
 * expression unless told not to. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#define ALWAYS_INLINE static inline __attribute__((always_inline))
/* Loops over a tile's rows, tokens or items have constant trip counts of
 * at most 16 and must become straight-line code, so that their vectors
 * live in registers; -O2 does not unroll them by itself. */
#define UNROLL _Pragma("GCC unroll 16")

/* ---- Small helpers ----------------------------------------------------- */

static inline uint16_t ld_u16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return h;
}

static inline float ld_f16(const uint8_t *p) { return _cvtsh_ss(ld_u16(p)); }

static inline float ld_f32(const uint8_t *p) {
    float f;
    memcpy(&f, p, sizeof f);
    return f;
}

static inline __m128i ld128(const void *p) { return _mm_loadu_si128((const __m128i *)p); }
static inline __m256i ld256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
static inline __m512i ld512(const void *p) { return _mm512_loadu_si512(p); }

/* Prefetch the bytes [p, p + len) of weights that a tile will read later.
 * A 4-row tile reads its rows as four short interleaved streams (a row is
 * 1 to 12 KB), which the hardware prefetchers barely learn before a row
 * ends. So each block step of a tile's first token group asks for the
 * same block of the next tile's rows (pf bytes ahead: the rows are
 * contiguous), a distance that covers memory latency; a 1 x 1 tile asks
 * for its own row 512 bytes ahead. */
static inline void prefetch_block(const uint8_t *p, size_t len) {
    for (size_t o = 0; o < len; o += 64) _mm_prefetch((const char *)p + o, _MM_HINT_T0);
    _mm_prefetch((const char *)p + len - 1, _MM_HINT_T0);
}

/* The four f16 at p[0], p[stride], ... (R of them; the rest 0) as floats. */
ALWAYS_INLINE __m128 ld_f16x4(const uint8_t *const *p, int R, size_t off) {
    if (R == 1) return _mm_set_ss(ld_f16(p[0] + off));
    const __m128i h = _mm_setr_epi16((short)ld_u16(p[0] + off), (short)ld_u16(p[1] + off), (short)ld_u16(p[2] + off),
                                     (short)ld_u16(p[3] + off), 0, 0, 0, 0);
    return _mm_cvtph_ps(h);
}

ALWAYS_INLINE __m128 ld_f32x4(const uint8_t *const *p, int R, size_t off) {
    if (R == 1) return _mm_set_ss(ld_f32(p[0] + off));
    return _mm_setr_ps(ld_f32(p[0] + off), ld_f32(p[1] + off), ld_f32(p[2] + off), ld_f32(p[3] + off));
}

/* Item lanes from a value per row (v[r] to lanes r*T .. r*T+T-1) and from
 * a value per token (v[t] to lanes t, T+t, ...). */
ALWAYS_INLINE __m512 per_row(__m128 v, int T) {
    if (T == 1) return _mm512_zextps128_ps512(v);
    const __m512i idx = T == 2 ? _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0)
                               : _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    return _mm512_permutexvar_ps(idx, _mm512_zextps128_ps512(v));
}

ALWAYS_INLINE __m512 per_tok(__m128 v, int T) {
    if (T == 1) return _mm512_set1_ps(_mm_cvtss_f32(v));
    if (T == 2) return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0),
                                             _mm512_zextps128_ps512(v));
    return _mm512_broadcast_f32x4(v);
}

/* ---- The reduction network --------------------------------------------
 * v[0..N) are N items' 8 int32 partial sums; the result's lane i is the
 * sum of v[i] (N = 1, 4, 8 or 16; other lanes unspecified). Integer adds are
 * exact, so the grouping does not change any value. Each level adds
 * neighbours after an unpack, halving the vectors and interleaving the
 * items, so 16 items cost 41 instructions rather than 16 horizontal sums
 * of 6 each. */
ALWAYS_INLINE __m512i reduce_items(const __m256i *v, int N) {
    if (N == 1) {
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v[0]), _mm256_extracti128_si256(v[0], 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
        return _mm512_zextsi128_si512(s);
    }
    /* level 1: pairs (a, b) -> per 128-bit half [a0+a2, b0+b2, a1+a3, b1+b3] */
    __m256i s1[8];
    UNROLL
    for (int i = 0; i < N / 2; i++)
        s1[i] = _mm256_add_epi32(_mm256_unpacklo_epi32(v[2 * i], v[2 * i + 1]),
                                 _mm256_unpackhi_epi32(v[2 * i], v[2 * i + 1]));
    /* level 2: per 128-bit half, the four items 4i..4i+3 summed */
    __m256i s2[4];
    UNROLL
    for (int i = 0; i < N / 4; i++)
        s2[i] = _mm256_add_epi32(_mm256_unpacklo_epi64(s1[2 * i], s1[2 * i + 1]),
                                 _mm256_unpackhi_epi64(s1[2 * i], s1[2 * i + 1]));
    if (N == 4)
        return _mm512_zextsi128_si512(
            _mm_add_epi32(_mm256_castsi256_si128(s2[0]), _mm256_extracti128_si256(s2[0], 1)));
    if (N == 8)
        return _mm512_zextsi256_si512(_mm256_add_epi32(_mm256_permute2x128_si256(s2[0], s2[1], 0x20),
                                                       _mm256_permute2x128_si256(s2[0], s2[1], 0x31)));
    /* level 3: low halves of s2[0..3] plus high halves, lanes in item order */
    const __m512i p = _mm512_inserti64x4(_mm512_castsi256_si512(s2[0]), s2[1], 1);
    const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(s2[2]), s2[3], 1);
    return _mm512_add_epi32(_mm512_shuffle_i32x4(p, q, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i32x4(p, q, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* 16 int32 lanes folded to 8 (for the 512-bit integer sums of K-quants). */
static inline __m256i fold512(__m512i v) {
    return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

/* ---- The float step, per item, in quant_dot.c's order ----------------- */

/* sum + (dw * da) * isum */
static inline __m512 fstep(__m512 sum, __m512 dw, __m512 da, __m512i isum) {
    const __m512 s = _mm512_mul_ps(dw, da);
    return _mm512_add_ps(sum, _mm512_mul_ps(s, _mm512_cvtepi32_ps(isum)));
}

/* sum + ((d * da) * isum - (dmin * da) * msum) */
static inline __m512 fstep_min(__m512 sum, __m512 d, __m512 dmin, __m512 da, __m512i isum, __m512i msum) {
    const __m512 t1 = _mm512_mul_ps(_mm512_mul_ps(d, da), _mm512_cvtepi32_ps(isum));
    const __m512 t2 = _mm512_mul_ps(_mm512_mul_ps(dmin, da), _mm512_cvtepi32_ps(msum));
    return _mm512_add_ps(sum, _mm512_sub_ps(t1, t2));
}

/* Scalar twins for 1 x 1 tiles (vec_dot): the same operations, so the same
 * bits as a lane of the vector versions. */
static inline float fstep1(float sum, float dw, float da, int32_t isum) {
    const float s = dw * da;
    const float t = s * (float)isum;
    return sum + t;
}

static inline float fstep1_min(float sum, float d, float dmin, float da, int32_t isum, int32_t msum) {
    const float s1 = d * da, s2 = dmin * da;
    const float t1 = s1 * (float)isum, t2 = s2 * (float)msum;
    const float t = t1 - t2;
    return sum + t;
}

/* ---- Legacy 32-blocks x Q8_0 (Q8_0, Q4_0, Q5_0) -----------------------
 * These keep the AVX2 table's float order instead of the reference's, so
 * that one-token products can use the AVX2 vec_dot, which streams a row
 * at a time and keeps up with memory where a per-block reduction would
 * not (a 32-block carries too little work to hide one). That order, per
 * (row, token): 8-lane accumulators acc0 (even blocks) and acc1 (odd
 * blocks), acc = fma(d_w * d_a, (float)lane, acc) with lane j the exact
 * sum of elements 4j..4j+3's products, then hsum(acc0 + acc1) in
 * x86_avx2.c's hsum_ps order. A tile item keeps [acc0 | acc1] in one
 * 512-bit register and takes two blocks per step, so it performs the
 * same fused multiply-adds on the same values: gemm == vec_dot, bit for
 * bit (tests/test_kernels.c checks it).
 *
 * The integer lanes come from one vpdpbusd per two blocks and item. It
 * multiplies unsigned by signed bytes, so the weight codes are made
 * unsigned (Q8_0: q + 128; Q4_0, Q5_0: the stored codes, without their -8
 * or -16 offset) and the offset comes back as -offset * sum(a) over the
 * lane's four activations, computed once per token and used as the
 * accumulator's start. Activations are within +-127 (quant.h). */

#define Q8_0_BYTES 34

/* The unsigned codes of one weight block, 32 bytes in element order. */
static inline __m256i codes_q8_0(const uint8_t *b) {
    return _mm256_xor_si256(ld256(b + 2), _mm256_set1_epi8((char)0x80));
}

static inline __m256i nibbles32(const uint8_t *qs) {
    const __m128i b = ld128(qs);
    const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(b), _mm_srli_epi16(b, 4), 1);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

static inline __m256i codes_q4_0(const uint8_t *b) { return nibbles32(b + 2); }

/* Q5_0: bit j of the 32-bit qh word is the fifth bit of element j. */
static inline __m256i codes_q5_0(const uint8_t *b) {
    uint32_t qh;
    memcpy(&qh, b + 2, sizeof qh);
    const __m256i lo = nibbles32(b + 6);
    return _mm256_mask_add_epi8(lo, (__mmask32)qh, lo, _mm256_set1_epi8(0x10));
}

static inline __m512i join256(__m256i lo, __m256i hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* [x(p0) x 8 | x(p1) x 8] for the f16 scales at p0, p1. */
static inline __m512 f16_pair(const uint8_t *p0, const uint8_t *p1) {
    return _mm512_insertf32x8(_mm512_set1_ps(ld_f16(p0)), _mm256_set1_ps(ld_f16(p1)), 1);
}

/* x86_avx2.c's hsum_ps of acc0 + acc1. */
static inline float hsum_pair(__m512 acc) {
    const __m256 v = _mm256_add_ps(_mm512_castps512_ps256(acc), _mm512_extractf32x8_ps(acc, 1));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* A legacy tile (R rows x T tokens, T > 1): `codes` unpacks a block, `off`
 * is the code offset (128, 8 or 16), bb the block bytes; out[r * T + t]. */
ALWAYS_INLINE void tile_legacy(int n, int R, int T, const uint8_t *const *wr, const uint8_t *const *at, float *out,
                               size_t pf, __m256i (*codes)(const uint8_t *), int off, size_t bb) {
    const int nb = n / LMOE_QK;
    const __m512i voff = _mm512_set1_epi8((char)off);
    __m512 acc[16];
    UNROLL
    for (int i = 0; i < R * T; i++) acc[i] = _mm512_setzero_ps();
    /* Two blocks per step for the whole tile: R code vectors and T
     * activation vectors (registers, once unrolled) make R * T vpdpbusd,
     * each followed by its item's one conversion and FMA. */
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        const size_t wo = (size_t)b * bb, ao = (size_t)b * Q8_0_BYTES;
        __m512i w[4], init[4], a[4];
        __m512 dw[4], da[4];
        UNROLL
        for (int r = 0; r < R; r++) {
            if (pf) _mm_prefetch((const char *)wr[r] + wo + pf, _MM_HINT_T0);
            w[r] = join256(codes(wr[r] + wo), codes(wr[r] + wo + bb));
            dw[r] = f16_pair(wr[r] + wo, wr[r] + wo + bb);
        }
        UNROLL
        for (int t = 0; t < T; t++) {
            a[t] = join256(ld256(at[t] + ao + 2), ld256(at[t] + ao + Q8_0_BYTES + 2));
            init[t] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), voff, a[t]));
            da[t] = f16_pair(at[t] + ao, at[t] + ao + Q8_0_BYTES);
        }
        UNROLL
        for (int r = 0; r < R; r++)
            UNROLL
            for (int t = 0; t < T; t++) {
                const __m512i v = _mm512_dpbusd_epi32(init[t], w[r], a[t]);
                acc[r * T + t] = _mm512_fmadd_ps(_mm512_mul_ps(dw[r], da[t]), _mm512_cvtepi32_ps(v), acc[r * T + t]);
            }
    }
    if (b < nb) {
        /* an odd last block goes to acc0, the low half */
        const size_t wo = (size_t)b * bb, ao = (size_t)b * Q8_0_BYTES;
        UNROLL
        for (int r = 0; r < R; r++) {
            const __m256i w = codes(wr[r] + wo);
            const float dw = ld_f16(wr[r] + wo);
            UNROLL
            for (int t = 0; t < T; t++) {
                const __m256i a = ld256(at[t] + ao + 2);
                const __m256i init = _mm256_sub_epi32(_mm256_setzero_si256(),
                                                      _mm256_dpbusd_epi32(_mm256_setzero_si256(),
                                                                          _mm512_castsi512_si256(voff), a));
                const __m256i v = _mm256_dpbusd_epi32(init, w, a);
                const __m256 lo = _mm256_fmadd_ps(_mm256_set1_ps(dw * ld_f16(at[t] + ao)), _mm256_cvtepi32_ps(v),
                                                  _mm512_castps512_ps256(acc[r * T + t]));
                acc[r * T + t] = _mm512_insertf32x8(acc[r * T + t], lo, 0);
            }
        }
    }
    UNROLL
    for (int i = 0; i < R * T; i++) out[i] = hsum_pair(acc[i]);
}

/* ---- K-quants x Q8_K (Q4_K, Q5_K, Q6_K) --------------------------------
 * A 256-element super-block is four 64-byte vectors of unsigned codes in
 * element order, each against 64 activation codes: vpmaddubsw gives int16
 * sums of adjacent pairs (at most 2 * 63 * 127, no saturation), vpdpwssd
 * multiplies them by the group scales (int16 lanes) and accumulates int32.
 * Only the four vectors and their scales depend on the type. */

#define Q8_K_BYTES sizeof(struct lmoe_block_q8_k)
#define Q8_K_QS offsetof(struct lmoe_block_q8_k, qs)
#define Q8_K_BSUMS offsetof(struct lmoe_block_q8_k, bsums)

/* One row's super-block, unpacked. */
struct ksb {
    __m512i q[4];  /* codes, elements 64c .. 64c + 63 in q[c] */
    __m512i sc[4]; /* int16 scale per maddubs lane of q[c] */
    __m256i mn;    /* Q4_K/Q5_K: int32 lanes (min_g, 0) as int16 pairs; Q6_K: 16 int16 scales */
};

/* Q4_K/Q5_K: the 8 6-bit scales and mins of the 12 packed bytes (layout in
 * quant_ref.c's k4_scale_min), with 32-bit word operations. */
static inline void k4_unpack(const uint8_t *s, uint8_t sc[8], uint8_t mn[8]) {
    uint32_t w0, w1, w2;
    memcpy(&w0, s, 4), memcpy(&w1, s + 4, 4), memcpy(&w2, s + 8, 4);
    const uint32_t sc03 = w0 & 0x3F3F3F3F, mn03 = w1 & 0x3F3F3F3F;
    const uint32_t sc47 = (w2 & 0x0F0F0F0F) | (((w0 >> 6) & 0x03030303) << 4);
    const uint32_t mn47 = ((w2 >> 4) & 0x0F0F0F0F) | (((w1 >> 6) & 0x03030303) << 4);
    memcpy(sc, &sc03, 4), memcpy(sc + 4, &sc47, 4);
    memcpy(mn, &mn03, 4), memcpy(mn + 4, &mn47, 4);
}

/* Q4_K/Q5_K: q[c] holds group 2c (low nibbles of qs[32c..]) in its low 32
 * bytes and group 2c + 1 (high nibbles) in its high 32; the scale vector
 * repeats sc[2c] over the low 16 int16 lanes and sc[2c + 1] over the high.
 * With qh (Q5_K), bit g of qh[l] is the fifth bit of group g's element l. */
static inline void unpack_k45(const uint8_t *b, size_t qh_off, size_t qs_off, struct ksb *k) {
    uint8_t sc[8], mn[8];
    k4_unpack(b + 4, sc, mn);
    uint64_t sc64, mn64;
    memcpy(&sc64, sc, 8), memcpy(&mn64, mn, 8);
    const __m512i sc16 = _mm512_zextsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc64)));
    k->mn = _mm256_cvtepu16_epi32(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn64)));
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m512i qh2 = qh_off ? _mm512_broadcast_i64x4(ld256(b + qh_off)) : _mm512_setzero_si512();
    UNROLL
    for (int c = 0; c < 4; c++) {
        const __m256i q = ld256(b + qs_off + 32 * c);
        __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 4), 1);
        v = _mm512_and_si512(v, low4);
        if (qh_off) {
            /* bit 2c of qh for the low half, bit 2c + 1 for the high */
            const __m512i sel = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << (2 * c))),
                                                   _mm256_set1_epi8((char)(1 << (2 * c + 1))), 1);
            v = _mm512_mask_add_epi8(v, _mm512_test_epi8_mask(qh2, sel), v, _mm512_set1_epi8(0x10));
        }
        k->q[c] = v;
        const __m512i idx = _mm512_inserti64x4(_mm512_set1_epi16((short)(2 * c)), _mm256_set1_epi16((short)(2 * c + 1)), 1);
        k->sc[c] = _mm512_permutexvar_epi16(idx, sc16);
    }
}

/* Q6_K: half h (elements 128h..) is ql[64h..64h+64) and qh[32h..32h+32):
 * its rows k = 0..3 of 32 take the low nibbles of ql's first and second 32
 * bytes (k = 0, 1), then the high nibbles (k = 2, 3), and bits 2k, 2k+1 of
 * qh. So q[2h] is low nibbles of the 64 ql bytes with qh bits 0-1 / 2-3,
 * q[2h + 1] high nibbles with bits 4-5 / 6-7. Groups are 16 elements,
 * 8 maddubs lanes, so q[j]'s scale vector has sc[4j .. 4j+3] 8 lanes each. */
static const int16_t lane_div8[32] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                      2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};

static inline void unpack_q6_K(const uint8_t *b, struct ksb *k) {
    const uint8_t *ql = b + offsetof(struct lmoe_block_q6_k, ql), *qh = b + offsetof(struct lmoe_block_q6_k, qh);
    const __m512i low4 = _mm512_set1_epi8(0x0F), low2 = _mm512_set1_epi8(3);
    UNROLL
    for (int h = 0; h < 2; h++) {
        const __m512i l = ld512(ql + 64 * h);
        const __m256i hv = ld256(qh + 32 * h);
        const __m512i h2 = _mm512_inserti64x4(_mm512_castsi256_si512(hv), _mm256_srli_epi16(hv, 2), 1);
        const __m512i hb0 = _mm512_slli_epi16(_mm512_and_si512(h2, low2), 4);
        const __m512i hb1 = _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(h2, 4), low2), 4);
        k->q[2 * h] = _mm512_or_si512(_mm512_and_si512(l, low4), hb0);
        k->q[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), low4), hb1);
    }
    const __m256i sc16 = _mm256_cvtepi8_epi16(ld128(b + offsetof(struct lmoe_block_q6_k, scales)));
    k->mn = sc16;
    const __m512i sc = _mm512_castsi256_si512(sc16);
    UNROLL
    for (int j = 0; j < 4; j++) {
        /* lane i (0..31) takes scale 4j + i / 8 */
        const __m512i id = _mm512_add_epi16(_mm512_set1_epi16((short)(4 * j)), ld512(lane_div8));
        k->sc[j] = _mm512_permutexvar_epi16(id, sc);
    }
}

/* sum over the super-block of scale * code * a, as 8 int32 lanes. */
static inline __m256i k_isum(const struct ksb *k, const uint8_t *aq) {
    __m512i s = _mm512_setzero_si512();
    UNROLL
    for (int c = 0; c < 4; c++) s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(k->q[c], ld512(aq + 64 * c)), k->sc[c]);
    return fold512(s);
}

/* Q4_K/Q5_K tile: items' isum, and msum = sum_g min_g * (bsum_2g +
 * bsum_2g+1), the latter as vpmaddwd of (min, 0) pairs against the pair
 * sums (within +-4064, so their low int16 halves are the values). */
ALWAYS_INLINE void tile_k45(int n, int R, int T, const uint8_t *const *wr, const uint8_t *const *at, float *out,
                            size_t pf, size_t bb, size_t qh_off, size_t qs_off) {
    const int nb = n / LMOE_QK_K;
    __m512 acc = _mm512_setzero_ps();
    float acc1 = 0.0f;
    /* One super-block per step: each row is unpacked once (16 vectors of
     * codes and scales for 4 rows) and used by the T tokens, whose 64-byte
     * activation vectors are memory operands, read once per row. */
    for (int b = 0; b < nb; b++) {
        const size_t wo = (size_t)b * bb, ao = (size_t)b * Q8_K_BYTES;
        struct ksb k[4];
        __m256i pb[4], v[16], m[16];
        UNROLL
        for (int r = 0; r < R; r++) {
            if (pf) prefetch_block(wr[r] + wo + pf, bb);
            unpack_k45(wr[r] + wo, qh_off, qs_off, &k[r]);
        }
        UNROLL
        for (int t = 0; t < T; t++) pb[t] = _mm256_madd_epi16(ld256(at[t] + ao + Q8_K_BSUMS), _mm256_set1_epi16(1));
        UNROLL
        for (int r = 0; r < R; r++)
            UNROLL
            for (int t = 0; t < T; t++) {
                v[r * T + t] = k_isum(&k[r], at[t] + ao + Q8_K_QS);
                m[r * T + t] = _mm256_madd_epi16(k[r].mn, pb[t]);
            }
        const __m512i isum = reduce_items(v, R * T), msum = reduce_items(m, R * T);
        if (R * T == 1) {
            acc1 = fstep1_min(acc1, ld_f16(wr[0] + wo), ld_f16(wr[0] + wo + 2), ld_f32(at[0] + ao),
                              _mm512_cvtsi512_si32(isum), _mm512_cvtsi512_si32(msum));
        } else {
            const __m512 d = per_row(ld_f16x4(wr, R, wo), T), dmin = per_row(ld_f16x4(wr, R, wo + 2), T);
            acc = fstep_min(acc, d, dmin, per_tok(ld_f32x4(at, T, ao), T), isum, msum);
        }
    }
    if (R * T == 1) out[0] = acc1;
    else _mm512_mask_storeu_ps(out, (__mmask16)((1u << (R * T)) - 1), acc);
}

/* Q6_K tile: codes are q + 32, so isum = sum sc q a - 32 sum_g sc_g bsum_g. */
ALWAYS_INLINE void tile_q6_K(int n, int R, int T, const uint8_t *const *wr, const uint8_t *const *at, float *out,
                             size_t pf) {
    const int nb = n / LMOE_QK_K;
    const size_t bb = sizeof(struct lmoe_block_q6_k), doff = offsetof(struct lmoe_block_q6_k, d);
    __m512 acc = _mm512_setzero_ps();
    float acc1 = 0.0f;
    /* As tile_k45: rows unpacked once per super-block, tokens streamed. */
    for (int b = 0; b < nb; b++) {
        const size_t wo = (size_t)b * bb, ao = (size_t)b * Q8_K_BYTES;
        struct ksb k[4];
        __m256i bs[4], v[16];
        UNROLL
        for (int r = 0; r < R; r++) {
            if (pf) prefetch_block(wr[r] + wo + pf, bb);
            unpack_q6_K(wr[r] + wo, &k[r]);
        }
        UNROLL
        for (int t = 0; t < T; t++) bs[t] = ld256(at[t] + ao + Q8_K_BSUMS);
        UNROLL
        for (int r = 0; r < R; r++)
            UNROLL
            for (int t = 0; t < T; t++) {
                const __m256i bias = _mm256_madd_epi16(k[r].mn, bs[t]);
                v[r * T + t] = _mm256_sub_epi32(k_isum(&k[r], at[t] + ao + Q8_K_QS), _mm256_slli_epi32(bias, 5));
            }
        const __m512i isum = reduce_items(v, R * T);
        if (R * T == 1) {
            acc1 = fstep1(acc1, ld_f16(wr[0] + wo + doff), ld_f32(at[0] + ao), _mm512_cvtsi512_si32(isum));
        } else {
            const __m512 d = per_row(ld_f16x4(wr, R, wo + doff), T);
            acc = fstep(acc, d, per_tok(ld_f32x4(at, T, ao), T), isum);
        }
    }
    if (R * T == 1) out[0] = acc1;
    else _mm512_mask_storeu_ps(out, (__mmask16)((1u << (R * T)) - 1), acc);
}

/* ---- One token (vec_dot), K-quants: several super-blocks per step ------
 * A 1 x 1 tile pays, per super-block, a reduction network (for one item),
 * scalar loads and conversions of its scales and a scalar float step, and
 * that made it instruction-bound well below memory speed. These loops take
 * G super-blocks (8, then 4, 2, 1 for the rest) at a time: each block's
 * integer sums are computed in lanes as before (the same exact integers,
 * only grouped differently), then one reduction network turns the G isum
 * and G msum lane vectors into one vector, block b's isum in lane b and
 * its msum in lane G + b, the G float terms t_b = (d_b * d_a) * isum_b -
 * (dmin_b * d_a) * msum_b are computed one per lane with the same unfused
 * multiplies and subtract as fstep1_min, and they are added into the
 * scalar sum one at a time in block order. So the result is the 1 x 1
 * tile's (and the reference's) bits.
 *
 * The unpacking is cheaper too: the 12 scale bytes are decoded with a few
 * 128-bit word operations instead of scalar code, each 64-byte load of qs
 * gives two code vectors (low nibbles: groups 2c, 2c + 2 of the block's
 * first or second half; high nibbles: 2c + 1, 2c + 3), matched by
 * activation halves loaded as 32-byte pieces, and the group scale vectors
 * are byte shuffles of one broadcast register. */

/* The scales and mins of a Q4_K/Q5_K block at b (16 bytes: d, dmin, then
 * the 12 packed bytes), as bytes: sc[0..7] then mn[0..7]. The dwords w0,
 * w1, w2 of the packed bytes give sc0-3 = w0 & 63, mn0-3 = w1 & 63,
 * sc4-7 = (w2 & 15) | (w0 >> 6) << 4, mn4-7 = (w2 >> 4 & 15) | (w1 >> 6)
 * << 4, bytewise (k4_unpack). */
static inline __m128i k4_scales16(const uint8_t *b) {
    const __m128i w = ld128(b); /* [d dmin, w0, w1, w2] */
    const __m128i lo =
        _mm_and_si128(_mm_srlv_epi32(_mm_shuffle_epi32(w, _MM_SHUFFLE(3, 2, 3, 1)), _mm_setr_epi32(0, 0, 0, 4)),
                      _mm_setr_epi32(0x3F3F3F3F, 0x0F0F0F0F, 0x3F3F3F3F, 0x0F0F0F0F));
    const __m128i hi = _mm_and_si128(_mm_srli_epi32(_mm_shuffle_epi32(w, _MM_SHUFFLE(2, 2, 1, 1)), 2),
                                     _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
    return _mm_or_si128(lo, hi);
}

/* Byte-shuffle controls (per 128-bit lane) that spread byte i of a
 * register over int16 lanes, zero-extended. */
#define SPREAD_LO(i) (char)0x80, (char)(i) /* _mm512_set_epi8 order: high byte first */
#define SPREAD8(i)                                                                                                     \
    SPREAD_LO(i), SPREAD_LO(i), SPREAD_LO(i), SPREAD_LO(i), SPREAD_LO(i), SPREAD_LO(i), SPREAD_LO(i), SPREAD_LO(i)

/* One Q4_K/Q5_K block b against the Q8_K block a: isum (8 int32 lanes to be
 * summed) and msum (likewise). */
ALWAYS_INLINE void k45_one(const uint8_t *b, const uint8_t *a, size_t qh_off, size_t qs_off, __m256i *isum,
                           __m256i *msum) {
    const __m128i sm = k4_scales16(b);
    const __m512i s4 = _mm512_broadcast_i32x4(sm);
    /* code vector c pairs groups (gl, gl + 2) with gl = 4 (c / 2) + c % 2 */
    const __m512i sc[4] = {
        _mm512_shuffle_epi8(s4, _mm512_set_epi8(SPREAD8(2), SPREAD8(2), SPREAD8(0), SPREAD8(0))),
        _mm512_shuffle_epi8(s4, _mm512_set_epi8(SPREAD8(3), SPREAD8(3), SPREAD8(1), SPREAD8(1))),
        _mm512_shuffle_epi8(s4, _mm512_set_epi8(SPREAD8(6), SPREAD8(6), SPREAD8(4), SPREAD8(4))),
        _mm512_shuffle_epi8(s4, _mm512_set_epi8(SPREAD8(7), SPREAD8(7), SPREAD8(5), SPREAD8(5))),
    };
    /* int16 lane j of the bsums times mn[j / 2]: lane 0 .. 7 of the low
     * 128 bits take mn0 .. mn3, of the high mn4 .. mn7 */
    const __m256i mnd = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(sm),
                                            _mm256_setr_epi8(8, -128, 8, -128, 9, -128, 9, -128, 10, -128, 10, -128, 11,
                                                             -128, 11, -128, 12, -128, 12, -128, 13, -128, 13, -128, 14,
                                                             -128, 14, -128, 15, -128, 15, -128));
    *msum = _mm256_madd_epi16(ld256(a + Q8_K_BSUMS), mnd);
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const uint8_t *qs = b + qs_off, *aq = a + Q8_K_QS;
    __m512i q[4];
    UNROLL
    for (int h = 0; h < 2; h++) {
        const __m512i z = ld512(qs + 64 * h);
        q[2 * h] = _mm512_and_si512(z, low4);
        q[2 * h + 1] = _mm512_and_si512(_mm512_srli_epi16(z, 4), low4);
    }
    if (qh_off) {
        /* bit g of qh[l] is the fifth bit of group g's element l: move bit
         * gl (low half) or gl + 2 (high half) to bit 4 with a 16-bit left
         * shift (bits 0..3 of a byte stay within it), after a right shift
         * by 4 for the second half's groups 4..7 */
        const __m512i h0 = _mm512_broadcast_i64x4(ld256(b + qh_off)), h1 = _mm512_srli_epi16(h0, 4);
        const __m512i bit4 = _mm512_set1_epi8(0x10);
        const __m512i sh0 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
        const __m512i sh1 = _mm512_inserti64x4(_mm512_set1_epi16(3), _mm256_set1_epi16(1), 1);
        /* q | (e & 0x10) */
        q[0] = _mm512_ternarylogic_epi32(q[0], _mm512_sllv_epi16(h0, sh0), bit4, 0xF8);
        q[1] = _mm512_ternarylogic_epi32(q[1], _mm512_sllv_epi16(h0, sh1), bit4, 0xF8);
        q[2] = _mm512_ternarylogic_epi32(q[2], _mm512_sllv_epi16(h1, sh0), bit4, 0xF8);
        q[3] = _mm512_ternarylogic_epi32(q[3], _mm512_sllv_epi16(h1, sh1), bit4, 0xF8);
    }
    __m512i s = _mm512_setzero_si512();
    UNROLL
    for (int c = 0; c < 4; c++) {
        const int gl = 4 * (c / 2) + c % 2;
        const __m512i av = _mm512_inserti64x4(_mm512_castsi256_si512(ld256(aq + 32 * gl)), ld256(aq + 32 * gl + 64), 1);
        s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(q[c], av), sc[c]);
    }
    *isum = fold512(s);
}

/* Byte offsets of 8 consecutive blocks of s bytes. */
static inline __m256i stride8(size_t s) {
    const int i = (int)s;
    return _mm256_setr_epi32(0, i, 2 * i, 3 * i, 4 * i, 5 * i, 6 * i, 7 * i);
}

/* G consecutive blocks (G = 8, 4, 2) of one row: sum + t_0 + ... + t_G-1. */
ALWAYS_INLINE float k45_group(int G, float sum, const uint8_t *w, const uint8_t *a, size_t bb, size_t qh_off,
                              size_t qs_off) {
    __m256i v[16];
    UNROLL
    for (int i = 0; i < G; i++) {
        prefetch_block(w + (size_t)i * bb + 512, bb);
        k45_one(w + (size_t)i * bb, a + (size_t)i * Q8_K_BYTES, qh_off, qs_off, &v[i], &v[G + i]);
    }
    const __m512i r = reduce_items(v, 2 * G);
    /* dword 0 of a block is (d, dmin); only the G blocks' are read */
    const __mmask8 g = (__mmask8)((1u << G) - 1);
    const __m256i dd = _mm256_mmask_i32gather_epi32(_mm256_setzero_si256(), g, stride8(bb), w, 1);
    const __m256 d = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(dd));
    const __m256 dmin = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(_mm256_srli_epi32(dd, 16)));
    const __m256 da = _mm256_mmask_i32gather_ps(_mm256_setzero_ps(), g, stride8(Q8_K_BYTES), a, 1);
    __m256 fi, fm;
    if (G == 8) {
        fi = _mm256_cvtepi32_ps(_mm512_castsi512_si256(r));
        fm = _mm256_cvtepi32_ps(_mm512_extracti64x4_epi64(r, 1));
    } else {
        /* lanes 0..G-1 and G..2G-1 of the low 8 */
        const __m256i r8 = _mm512_castsi512_si256(r);
        fi = _mm256_cvtepi32_ps(r8);
        fm = _mm256_cvtepi32_ps(_mm256_permutevar8x32_epi32(
            r8, _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(G))));
    }
    const __m256 t1 = _mm256_mul_ps(_mm256_mul_ps(d, da), fi);
    const __m256 t2 = _mm256_mul_ps(_mm256_mul_ps(dmin, da), fm);
    float t[8];
    _mm256_storeu_ps(t, _mm256_sub_ps(t1, t2));
    UNROLL
    for (int i = 0; i < G; i++) sum += t[i];
    return sum;
}

ALWAYS_INLINE float k45_dot1(int n, const uint8_t *w, const uint8_t *a, size_t bb, size_t qh_off, size_t qs_off) {
    const int nb = n / LMOE_QK_K;
    float sum = 0.0f;
    int b = 0;
    for (; b + 8 <= nb; b += 8)
        sum = k45_group(8, sum, w + (size_t)b * bb, a + (size_t)b * Q8_K_BYTES, bb, qh_off, qs_off);
    if (b + 4 <= nb)
        sum = k45_group(4, sum, w + (size_t)b * bb, a + (size_t)b * Q8_K_BYTES, bb, qh_off, qs_off), b += 4;
    if (b + 2 <= nb)
        sum = k45_group(2, sum, w + (size_t)b * bb, a + (size_t)b * Q8_K_BYTES, bb, qh_off, qs_off), b += 2;
    if (b < nb) {
        const uint8_t *wb = w + (size_t)b * bb, *ab = a + (size_t)b * Q8_K_BYTES;
        __m256i v, m;
        k45_one(wb, ab, qh_off, qs_off, &v, &m);
        sum = fstep1_min(sum, ld_f16(wb), ld_f16(wb + 2), ld_f32(ab), _mm512_cvtsi512_si32(reduce_items(&v, 1)),
                         _mm512_cvtsi512_si32(reduce_items(&m, 1)));
    }
    return sum;
}

/* Q6_K, G blocks (G = 8 or 4) of one row: the tile's integer sums (codes
 * q + 32, so isum = sum sc q a - 32 sum_g sc_g bsum_g), one network, and
 * sum + t_0 + ... + t_G-1 with t_b = (d_b * d_a) * isum_b as in fstep1. */
ALWAYS_INLINE float q6k_group(int G, float sum, const uint8_t *w, const uint8_t *a) {
    const size_t bb = sizeof(struct lmoe_block_q6_k), doff = offsetof(struct lmoe_block_q6_k, d);
    __m256i v[8];
    UNROLL
    for (int i = 0; i < G; i++) {
        const uint8_t *wb = w + (size_t)i * bb, *ab = a + (size_t)i * Q8_K_BYTES;
        struct ksb k;
        prefetch_block(wb + 512, bb);
        unpack_q6_K(wb, &k);
        const __m256i bias = _mm256_madd_epi16(k.mn, ld256(ab + Q8_K_BSUMS));
        v[i] = _mm256_sub_epi32(k_isum(&k, ab + Q8_K_QS), _mm256_slli_epi32(bias, 5));
    }
    const __m256i r = _mm512_castsi512_si256(reduce_items(v, G));
    /* d is the block's last two bytes: the dword ending there (so nothing
     * past the row is read), high half */
    const __mmask8 g = (__mmask8)((1u << G) - 1);
    const __m256i dd = _mm256_mmask_i32gather_epi32(_mm256_setzero_si256(), g, stride8(bb), w + doff - 2, 1);
    const __m256 d = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(_mm256_srli_epi32(dd, 16)));
    const __m256 da = _mm256_mmask_i32gather_ps(_mm256_setzero_ps(), g, stride8(Q8_K_BYTES), a, 1);
    float t[8];
    _mm256_storeu_ps(t, _mm256_mul_ps(_mm256_mul_ps(d, da), _mm256_cvtepi32_ps(r)));
    UNROLL
    for (int i = 0; i < G; i++) sum += t[i];
    return sum;
}

static float q6k_dot1(int n, const uint8_t *w, const uint8_t *a) {
    const size_t bb = sizeof(struct lmoe_block_q6_k);
    const int nb = n / LMOE_QK_K;
    float sum = 0.0f;
    int b = 0;
    for (; b + 8 <= nb; b += 8) sum = q6k_group(8, sum, w + (size_t)b * bb, a + (size_t)b * Q8_K_BYTES);
    if (b + 4 <= nb) sum = q6k_group(4, sum, w + (size_t)b * bb, a + (size_t)b * Q8_K_BYTES), b += 4;
    /* the last 1 to 3 blocks one at a time, as the 1 x 1 tile does */
    for (; b < nb; b++) {
        const uint8_t *wb = w + (size_t)b * bb, *ab = a + (size_t)b * Q8_K_BYTES;
        struct ksb k;
        unpack_q6_K(wb, &k);
        const __m256i bias = _mm256_madd_epi16(k.mn, ld256(ab + Q8_K_BSUMS));
        const __m256i v = _mm256_sub_epi32(k_isum(&k, ab + Q8_K_QS), _mm256_slli_epi32(bias, 5));
        sum = fstep1(sum, ld_f16(wb + offsetof(struct lmoe_block_q6_k, d)), ld_f32(ab),
                     _mm512_cvtsi512_si32(reduce_items(&v, 1)));
    }
    return sum;
}

/* ---- Per-type tiles, vec_dot and gemm ---------------------------------- */

ALWAYS_INLINE void tile_q8_0(int n, int R, int T, const uint8_t *const *w, const uint8_t *const *a, float *o,
                             size_t pf) {
    tile_legacy(n, R, T, w, a, o, pf, codes_q8_0, 128, sizeof(struct lmoe_block_q8_0));
}
ALWAYS_INLINE void tile_q4_0(int n, int R, int T, const uint8_t *const *w, const uint8_t *const *a, float *o,
                             size_t pf) {
    tile_legacy(n, R, T, w, a, o, pf, codes_q4_0, 8, sizeof(struct lmoe_block_q4_0));
}
ALWAYS_INLINE void tile_q5_0(int n, int R, int T, const uint8_t *const *w, const uint8_t *const *a, float *o,
                             size_t pf) {
    tile_legacy(n, R, T, w, a, o, pf, codes_q5_0, 16, sizeof(struct lmoe_block_q5_0));
}
ALWAYS_INLINE void tile_q4_K(int n, int R, int T, const uint8_t *const *w, const uint8_t *const *a, float *o,
                             size_t pf) {
    tile_k45(n, R, T, w, a, o, pf, sizeof(struct lmoe_block_q4_k), 0, offsetof(struct lmoe_block_q4_k, qs));
}
ALWAYS_INLINE void tile_q5_K(int n, int R, int T, const uint8_t *const *w, const uint8_t *const *a, float *o,
                             size_t pf) {
    tile_k45(n, R, T, w, a, o, pf, sizeof(struct lmoe_block_q5_k), offsetof(struct lmoe_block_q5_k, qh),
             offsetof(struct lmoe_block_q5_k, qs));
}

/*
 * gemm over rows [0, n_rows) x tokens [0, n_tok): rows in groups of 4 (the
 * outer loop, so a group's weights, a few KB, stay in L1 while every token
 * passes), tokens in groups of 4, the last one or two as a 4 x 1 or 4 x 2
 * tile (a MoE expert sees a handful of a micro-batch's tokens, so ragged
 * token counts are the common case).
 * Missing rows/tokens of an edge tile repeat the last real one.
 */
#define DEFINE_GEMM(tname, tile)                                                                               \
    static void gemm_##tname(int n, int n_rows, int n_tok, const void *w, size_t w_row_bytes, const void *act, \
                             size_t act_row_bytes, float *y, size_t ldy) {                                     \
        if (n_tok == 1) {                                                                                      \
            for (int r = 0; r < n_rows; r++)                                                                   \
                y[r] = vec_dot_##tname(n, (const uint8_t *)w + (size_t)r * w_row_bytes, act);                  \
            return;                                                                                            \
        }                                                                                                      \
        for (int r0 = 0; r0 < n_rows; r0 += 4) {                                                               \
            const int nr = n_rows - r0 < 4 ? n_rows - r0 : 4;                                                  \
            const uint8_t *wr[4];                                                                              \
            for (int r = 0; r < 4; r++)                                                                        \
                wr[r] = (const uint8_t *)w + (size_t)(r0 + (r < nr ? r : nr - 1)) * w_row_bytes;               \
            for (int t0 = 0; t0 < n_tok;) {                                                                    \
                const int left = n_tok - t0, T = left <= 2 ? left : 4, nt = left < T ? left : T;               \
                const uint8_t *at[4];                                                                          \
                for (int t = 0; t < 4; t++)                                                                    \
                    at[t] = (const uint8_t *)act + (size_t)(t0 + (t < nt ? t : nt - 1)) * act_row_bytes;       \
                float o[16];                                                                                   \
                const size_t pf = t0 == 0 ? 4 * w_row_bytes : 0; /* next tile's rows, on the first pass */     \
                if (T == 1) tile(n, 4, 1, wr, at, o, pf);                                                      \
                else if (T == 2) tile(n, 4, 2, wr, at, o, pf);                                                 \
                else tile(n, 4, 4, wr, at, o, pf);                                                             \
                for (int r = 0; r < nr; r++)                                                                   \
                    for (int t = 0; t < nt; t++) y[(size_t)(t0 + t) * ldy + (size_t)(r0 + r)] = o[r * T + t];  \
                t0 += nt;                                                                                      \
            }                                                                                                  \
        }                                                                                                      \
    }

/* Legacy types: the AVX2 table's vec_dot, whose order their tiles keep. */
#define FROM_AVX2(tname, TYPE)                                                \
    static float vec_dot_##tname(int n, const void *w_row, const void *act) { \
        return lmoe_kernels_avx2.vec_dot[TYPE](n, w_row, act);                \
    }

FROM_AVX2(q8_0, LMOE_DTYPE_Q8_0)
FROM_AVX2(q4_0, LMOE_DTYPE_Q4_0)
FROM_AVX2(q5_0, LMOE_DTYPE_Q5_0)
static float vec_dot_q4_K(int n, const void *w_row, const void *act) {
    return k45_dot1(n, w_row, act, sizeof(struct lmoe_block_q4_k), 0, offsetof(struct lmoe_block_q4_k, qs));
}
static float vec_dot_q5_K(int n, const void *w_row, const void *act) {
    return k45_dot1(n, w_row, act, sizeof(struct lmoe_block_q5_k), offsetof(struct lmoe_block_q5_k, qh),
                    offsetof(struct lmoe_block_q5_k, qs));
}
static float vec_dot_q6_K(int n, const void *w_row, const void *act) { return q6k_dot1(n, w_row, act); }
DEFINE_GEMM(q8_0, tile_q8_0)
DEFINE_GEMM(q4_0, tile_q4_0)
DEFINE_GEMM(q5_0, tile_q5_0)
DEFINE_GEMM(q4_K, tile_q4_K)
DEFINE_GEMM(q5_K, tile_q5_K)
DEFINE_GEMM(q6_K, tile_q6_K)

/* ---- Float kernels ----------------------------------------------------- */

/* Four accumulators of 16 lanes cover the FMA latency; a masked load
 * takes the tail, so there is no scalar loop. */
static float dot_f32_avx512(const float *a, const float *b, int n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

/* Multiply then add, unfused, so each y[i] has the reference's bits. */
static void axpy_f32_avx512(float *y, float a, const float *x, int n) {
    const __m512 va = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_add_ps(_mm512_loadu_ps(y + i), _mm512_mul_ps(va, _mm512_loadu_ps(x + i))));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        const __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, y + i), _mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, x + i)));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

static inline __m512 ld_f16x16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }

static inline __m512 ld_f16x16_tail(const uint16_t *p, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

static float dot_f16_f32_avx512(const uint16_t *a, const float *b, int n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(ld_f16x16(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(ld_f16x16(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(ld_f16x16(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(ld_f16x16(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(ld_f16x16(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        s1 = _mm512_fmadd_ps(ld_f16x16_tail(a + i, m), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static void axpy_f16_avx512(float *y, float a, const uint16_t *x, int n) {
    const __m512 va = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_add_ps(_mm512_loadu_ps(y + i), _mm512_mul_ps(va, ld_f16x16(x + i))));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        const __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, y + i), _mm512_mul_ps(va, ld_f16x16_tail(x + i, m)));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

/* vcvtps2ph rounds to nearest even and keeps NaNs quiet, as lmoe_f32_to_f16. */
static void f32_to_f16_avx512(uint16_t *dst, const float *src, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm256_mask_storeu_epi16(dst + i, m, _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, src + i), _MM_FROUND_TO_NEAREST_INT));
    }
}

static void dequantize_row_avx512(uint32_t type, const void *row, float *dst, int n) {
    const uint16_t *p = row;
    int i = 0;
    if (type == LMOE_DTYPE_F16) {
        for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, ld_f16x16(p + i));
        if (i < n) {
            const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
            _mm512_mask_storeu_ps(dst + i, m, ld_f16x16_tail(p + i, m));
        }
    } else if (type == LMOE_DTYPE_BF16) {
        /* bf16 is the top half of an f32 */
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(ld256(p + i)), 16)));
        if (i < n) {
            const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
            const __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p + i));
            _mm512_mask_storeu_ps(dst + i, m, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
        }
    } else {
        lmoe_kernels_avx2.dequantize_row(type, row, dst, n);
    }
}

/* ---- Entries taken from the AVX2 table -------------------------------- */

static void quantize_act_avx512(uint32_t act_type, const float *x, void *dst, int n) {
    lmoe_kernels_avx2.quantize_act(act_type, x, dst, n);
}

FROM_AVX2(f32, LMOE_DTYPE_F32)
FROM_AVX2(f16, LMOE_DTYPE_F16)
FROM_AVX2(bf16, LMOE_DTYPE_BF16)
FROM_AVX2(q4_1, LMOE_DTYPE_Q4_1)
FROM_AVX2(q5_1, LMOE_DTYPE_Q5_1)
FROM_AVX2(q2_K, LMOE_DTYPE_Q2_K)
FROM_AVX2(q3_K, LMOE_DTYPE_Q3_K)

const struct lmoe_kernels lmoe_kernels_avx512 = {
    .name = "avx512",
    .dot_f32 = dot_f32_avx512,
    .axpy_f32 = axpy_f32_avx512,
    .dot_f16_f32 = dot_f16_f32_avx512,
    .axpy_f16 = axpy_f16_avx512,
    .f32_to_f16 = f32_to_f16_avx512,
    .dequantize_row = dequantize_row_avx512,
    .quantize_act = quantize_act_avx512,
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
    .gemm = {
        [LMOE_DTYPE_Q4_0] = gemm_q4_0,
        [LMOE_DTYPE_Q5_0] = gemm_q5_0,
        [LMOE_DTYPE_Q8_0] = gemm_q8_0,
        [LMOE_DTYPE_Q4_K] = gemm_q4_K,
        [LMOE_DTYPE_Q5_K] = gemm_q5_K,
        [LMOE_DTYPE_Q6_K] = gemm_q6_K,
    },
    .quantized_matmul = 1,
};

#else

/* Built without the AVX-512 flags: no table (dispatch.c checks .name). */
const struct lmoe_kernels lmoe_kernels_avx512 = {.name = NULL};

#endif
