/*
 * quant.h - how numbers are stored: the tensor types of GGUF files.
 *
 * The enum values are the ones GGUF files carry on disk (ggml's type ids), so
 * a tensor's type field maps onto this enum without translation. Each block
 * type has a struct whose layout is the on-disk layout byte for byte, with a
 * static_assert on its size; quant_ref.c holds the plain scalar routines that
 * define what the bytes mean. Every faster path is tested against those.
 */
#ifndef LMOE_QUANT_H
#define LMOE_QUANT_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

/* GGUF tensor types. Values are fixed by the file format and only grow. */
enum lmoe_dtype {
    LMOE_DTYPE_F32 = 0,
    LMOE_DTYPE_F16 = 1,
    LMOE_DTYPE_Q4_0 = 2,
    LMOE_DTYPE_Q4_1 = 3,
    LMOE_DTYPE_Q5_0 = 6,
    LMOE_DTYPE_Q5_1 = 7,
    LMOE_DTYPE_Q8_0 = 8,
    LMOE_DTYPE_Q8_1 = 9,
    LMOE_DTYPE_Q2_K = 10,
    LMOE_DTYPE_Q3_K = 11,
    LMOE_DTYPE_Q4_K = 12,
    LMOE_DTYPE_Q5_K = 13,
    LMOE_DTYPE_Q6_K = 14,
    LMOE_DTYPE_Q8_K = 15,
    LMOE_DTYPE_BF16 = 30,
    LMOE_DTYPE_COUNT = 40, /* upper bound of the GGUF ids we know by name */
    /* Internal types, never written to a GGUF file (ids GGUF does not use):
     * FP8 weights as DeepSeek and Qwen publish them, one byte an element
     * plus one f32 scale per 128 x 128 block kept beside the tensor (struct
     * lmoe_tensor's block_scale). See "FP8 weights" below. */
    LMOE_DTYPE_F8_E4M3_B128 = 100,
    LMOE_DTYPE_F8_E5M2_B128 = 101,
};

/* Elements per block of the K-quants ("super-block"). */
#define LMOE_QK_K 256
/* Elements per block of the legacy quants Q4_0 .. Q8_1. */
#define LMOE_QK 32

typedef uint16_t lmoe_f16;  /* IEEE binary16 bits */
typedef uint16_t lmoe_bf16; /* bfloat16 bits */

/* Q4_0: 32 weights = d * (q - 8), q in 0..15; low nibbles are elements 0..15. */
struct lmoe_block_q4_0 { lmoe_f16 d; uint8_t qs[LMOE_QK / 2]; };
static_assert(sizeof(struct lmoe_block_q4_0) == 18, "q4_0 block size");

/* Q4_1: 32 weights = d * q + m. */
struct lmoe_block_q4_1 { lmoe_f16 d, m; uint8_t qs[LMOE_QK / 2]; };
static_assert(sizeof(struct lmoe_block_q4_1) == 20, "q4_1 block size");

/* Q5_0: 32 weights = d * (q - 16); the fifth bit of element j is bit j of qh. */
struct lmoe_block_q5_0 { lmoe_f16 d; uint8_t qh[4]; uint8_t qs[LMOE_QK / 2]; };
static_assert(sizeof(struct lmoe_block_q5_0) == 22, "q5_0 block size");

/* Q5_1: 32 weights = d * q + m, 5-bit q as in Q5_0. */
struct lmoe_block_q5_1 { lmoe_f16 d, m; uint8_t qh[4]; uint8_t qs[LMOE_QK / 2]; };
static_assert(sizeof(struct lmoe_block_q5_1) == 24, "q5_1 block size");

/* Q8_0: 32 weights = d * q, q signed 8-bit. */
struct lmoe_block_q8_0 { lmoe_f16 d; int8_t qs[LMOE_QK]; };
static_assert(sizeof(struct lmoe_block_q8_0) == 34, "q8_0 block size");

/* Q8_1: as Q8_0 plus s = d * sum(qs); used for activations only. */
struct lmoe_block_q8_1 { lmoe_f16 d, s; int8_t qs[LMOE_QK]; };
static_assert(sizeof(struct lmoe_block_q8_1) == 36, "q8_1 block size");

/* Q2_K: 16 groups of 16; 4-bit scale and 4-bit min per group, 2-bit q. */
struct lmoe_block_q2_k {
    uint8_t scales[LMOE_QK_K / 16]; /* low nibble scale, high nibble min */
    uint8_t qs[LMOE_QK_K / 4];
    lmoe_f16 d, dmin;
};
static_assert(sizeof(struct lmoe_block_q2_k) == 84, "q2_k block size");

/* Q3_K: 16 groups of 16; 6-bit scales, 3-bit q (2 low bits + hmask bit). */
struct lmoe_block_q3_k {
    uint8_t hmask[LMOE_QK_K / 8];
    uint8_t qs[LMOE_QK_K / 4];
    uint8_t scales[12];
    lmoe_f16 d;
};
static_assert(sizeof(struct lmoe_block_q3_k) == 110, "q3_k block size");

/* Q4_K: 8 groups of 32; 6-bit scales and mins packed in 12 bytes, 4-bit q. */
struct lmoe_block_q4_k {
    lmoe_f16 d, dmin;
    uint8_t scales[12];
    uint8_t qs[LMOE_QK_K / 2];
};
static_assert(sizeof(struct lmoe_block_q4_k) == 144, "q4_k block size");

/* Q5_K: as Q4_K plus one high bit per weight in qh. */
struct lmoe_block_q5_k {
    lmoe_f16 d, dmin;
    uint8_t scales[12];
    uint8_t qh[LMOE_QK_K / 8];
    uint8_t qs[LMOE_QK_K / 2];
};
static_assert(sizeof(struct lmoe_block_q5_k) == 176, "q5_k block size");

/* Q6_K: 16 groups of 16; signed 8-bit scales, 6-bit q (4 low + 2 high bits). */
struct lmoe_block_q6_k {
    uint8_t ql[LMOE_QK_K / 2];
    uint8_t qh[LMOE_QK_K / 4];
    int8_t scales[LMOE_QK_K / 16];
    lmoe_f16 d;
};
static_assert(sizeof(struct lmoe_block_q6_k) == 210, "q6_k block size");

/* Q8_K: activations for K-quant dot products; float scale, sums per 16. */
struct lmoe_block_q8_k {
    float d;
    int8_t qs[LMOE_QK_K];
    int16_t bsums[LMOE_QK_K / 16];
};
static_assert(sizeof(struct lmoe_block_q8_k) == 292, "q8_k block size");

/* Turns n elements (a multiple of the block size) of one type into floats. */
typedef void (*lmoe_dequantize_fn)(const void *src, float *dst, int64_t n);

/* What the rest of the engine needs to know about a tensor type. */
struct lmoe_dtype_traits {
    const char *name;        /* as llama.cpp prints it: "q4_K", "bf16" */
    int block_size;          /* elements per block (1 for float types) */
    int type_size;           /* bytes per block */
    lmoe_dequantize_fn dequantize; /* NULL: a type we can hold but not compute */
};

/* Traits of a type id, or NULL for an id we do not know. Constant table. */
const struct lmoe_dtype_traits *lmoe_dtype_get(uint32_t type);

/* Bytes taken by n elements of type, or -1 if n is not a whole number of
 * blocks or the type is unknown. */
int64_t lmoe_dtype_row_size(uint32_t type, int64_t n);

/* Reference dot product of n elements of a row of `type` with floats x:
 * dequantize block by block, then multiply-add in float order 0..n-1. */
float lmoe_dot_ref(uint32_t type, const void *row, const float *x, int64_t n);

/* Half and bfloat16 conversions (convert.c). Exact, round to nearest even. */
float lmoe_f16_to_f32(lmoe_f16 h);
lmoe_f16 lmoe_f32_to_f16(float f);
float lmoe_bf16_to_f32(lmoe_bf16 h);
lmoe_bf16 lmoe_f32_to_bf16(float f);


/* ---- Integer dot products against quantized activations (quant_dot.c) ----
 *
 * A quantized weight row is multiplied by an activation row that has been
 * quantized to 8 bits in blocks of the same length, so the inner loop is an
 * integer dot product and floats appear once per block:
 *
 *   dot = sum over blocks b of  d_w[b] * d_a[b] * isum[b]  (+ min terms)
 *
 * The legacy 32-blocks (Q4_0 .. Q8_0) pair with Q8_0 activations; Q4_1 and
 * Q5_1 take their min term from the exact integer sum of the activation
 * codes (instead of ggml's Q8_1, whose f16 s field would round it). The
 * K-quants pair with Q8_K (256-blocks, f32 scale, sums of each 16 codes).
 * Float weights (F32, F16, BF16) keep f32 activations and a float dot.
 *
 * Activations must be finite; for a non-finite input the codes are
 * unspecified (but no undefined behaviour). These scalar routines are the
 * reference the SIMD versions in src/kernels/ are tested against.
 */

/* The activation type weight type w_type is multiplied with:
 * LMOE_DTYPE_Q8_0, LMOE_DTYPE_Q8_K, LMOE_DTYPE_F32, or LMOE_DTYPE_COUNT when
 * the type has no dot product here. */
uint32_t lmoe_vec_dot_act_type(uint32_t w_type);

/* Bytes one activation row of n elements takes when quantized for w_type
 * (n a multiple of w_type's block size); 0 when w_type has no dot. */
size_t lmoe_vec_dot_act_bytes(uint32_t w_type, int64_t n);

/* Q8_0 activations, n a multiple of 32: d = amax / 127 stored as f16,
 * q = roundf(x / d) (ties away from zero, with 1/d taken from the f32 d),
 * as ggml's quantize_row_q8_0_ref. */
void lmoe_quantize_row_q8_0(const float *x, void *dst, int64_t n);

/* Q8_K activations, n a multiple of 256: d = max / -127 where max is the
 * element of largest magnitude (sign kept, first one on ties), q rounded to
 * nearest even, bsums the sums of each 16 codes; as ggml's
 * quantize_row_q8_K_ref. */
void lmoe_quantize_row_q8_K(const float *x, void *dst, int64_t n);

/* Dot products of a row of n weights with a row of n activations of type
 * lmoe_vec_dot_act_type(w). Rows may start at any byte address. */
typedef float (*lmoe_vec_dot_fn)(int n, const void *w_row, const void *act);

float lmoe_vec_dot_q4_0_q8(int n, const void *w_row, const void *act);
float lmoe_vec_dot_q4_1_q8(int n, const void *w_row, const void *act);
float lmoe_vec_dot_q5_0_q8(int n, const void *w_row, const void *act);
float lmoe_vec_dot_q5_1_q8(int n, const void *w_row, const void *act);
float lmoe_vec_dot_q8_0_q8(int n, const void *w_row, const void *act);
float lmoe_vec_dot_q2_K_q8(int n, const void *w_row, const void *act);
float lmoe_vec_dot_q3_K_q8(int n, const void *w_row, const void *act);
float lmoe_vec_dot_q4_K_q8(int n, const void *w_row, const void *act);
float lmoe_vec_dot_q5_K_q8(int n, const void *w_row, const void *act);
float lmoe_vec_dot_q6_K_q8(int n, const void *w_row, const void *act);
/* Float weights with f32 activations: eight partial sums in lane order, as
 * the dot_f32 reference kernel, for any n. */
float lmoe_vec_dot_f32_f32(int n, const void *w_row, const void *act);
float lmoe_vec_dot_f16_f32(int n, const void *w_row, const void *act);
float lmoe_vec_dot_bf16_f32(int n, const void *w_row, const void *act);

/* The reference dot of w_type (one of the above), or NULL. */
lmoe_vec_dot_fn lmoe_vec_dot_ref(uint32_t w_type);

/* The 6-bit scale and min of group g (0..7) of a Q4_K/Q5_K block's 12
 * packed scale bytes, and the signed scale of group g (0..15) of a Q3_K
 * block: shared by the reference and SIMD dot products. */
void lmoe_k4_scale_min(const uint8_t *scales, int g, int *scale, int *min);
int lmoe_q3_k_scale(const uint8_t *scales, int g);

/* ---- Quantizers: floats to blocks (quantize.c) ----------------------------
 *
 * Legacy types (Q4_0 .. Q8_0) round to nearest exactly as ggml's reference
 * quantizers and gguf-py do (identical bytes); K-quants (Q2_K .. Q6_K)
 * search each group's scale and min (see quantize.c), so their bytes are
 * leanmoe's own, with errors of the size llama-quantize's have. Every block
 * is independent of the others. Inputs should be finite.
 */

/* 1 if lmoe_quantize can produce type: F32, F16, BF16, Q4_0, Q4_1, Q5_0,
 * Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K. */
int lmoe_quantize_supported(uint32_t type);

/* Quantizes n floats (a whole number of type's blocks) into dst; returns
 * the bytes written, or -1 for an unsupported type or a bad n. */
int64_t lmoe_quantize(uint32_t type, const float *x, void *dst, int64_t n);

/* ---- FP8 weights with 128 x 128 block scales (fp8.c, convert.c) ----------
 *
 * A matrix of n_rows x n_cols bytes (row-major, one FP8 element each) and
 * a row-major [ceil(n_rows / 128)][ceil(n_cols / 128)] array of f32 scales
 * (DeepSeek's weight_scale_inv): element (r, c) is
 *
 *   f8(w[r][c]) * scale[(r / 128) * n_col_blocks + c / 128]
 *
 * and the last row and column blocks may be partial. The traits of these
 * types give one byte per element (so row sizes work as for any type) and
 * an unscaled dequantizer; the scaled reference is
 * lmoe_dequantize_row_fp8, and model code reaches them through
 * op_matmul / op_get_row only.
 */
#define LMOE_FP8_BLOCK 128

/* Exact conversions of the OCP FP8 formats. E4M3 ("e4m3fn"): bias 7, no
 * infinities, S.1111.111 is NaN, largest finite 448. E5M2: bias 15, the top
 * byte of an IEEE half, with infinities and NaNs. */
float lmoe_f8_e4m3_to_f32(uint8_t b);
float lmoe_f8_e5m2_to_f32(uint8_t b);
/* Rounds to nearest even; values beyond the largest finite (448) saturate
 * to +-448; NaN gives 0x7F. For writing test models. */
uint8_t lmoe_f32_to_f8_e4m3(float f);

/* Traits of the two internal FP8 types (NULL for any other id). */
const struct lmoe_dtype_traits *lmoe_fp8_traits(uint32_t type);

/* dst[0..n) = row r of an FP8 block-scaled matrix of type (one of the two
 * above) whose scales start at scale with n_col_blocks per block row; row
 * points at the row's first byte. The reference the kernels are tested
 * against: each element is f8 * scale, rounded once to f32. */
void lmoe_dequantize_row_fp8(uint32_t type, const uint8_t *row, const float *scale, int64_t n_col_blocks,
                             int64_t r, float *dst, int64_t n);

#endif
