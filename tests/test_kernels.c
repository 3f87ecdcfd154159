/*
 * test_kernels.c - every kernel table this CPU can run, against the scalar
 * reference.
 *
 * What must match how:
 *   - elementwise ops (axpy, f32_to_f16, dequantize_row) and the activation
 *     quantizers: bit for bit (NaN matches any NaN);
 *   - dot products: within a named relative tolerance of the sum of the
 *     absolute terms, since only the float summation order may differ;
 *   - the reference integer dot products themselves: against a double
 *     dot of the dequantized weights and dequantized activations (the
 *     integer formula), and against the unquantized activations within the
 *     bound the quantization step gives;
 *   - gemm tiles: bit for bit against vec_dot of the same table, on shapes
 *     whose rows and tokens are not multiples of the tile, with nothing
 *     written outside the n_rows x n_tok outputs;
 *   - op_matmul: fast route against direct vec_dot calls, thread count
 *     independence, and against the reference (float) route within the
 *     activation quantization error.
 * Shapes cover one block, several blocks, odd float lengths with tails,
 * large magnitudes, zeros, rounding ties, NaN and inf where defined.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "model/ops.h"
#include "quant/quant.h"
#include "test.h"
#include "threadpool.h"

/* Relative tolerances, of sum |w_i x_i|, for a dot product whose terms are
 * summed in another order: n terms in float can drift by about n * 2^-24
 * of that sum in the worst case; the rows here have at most ~2000 terms,
 * and lane-wise summing keeps the real drift far smaller. */
#define TOL_DOT_F32 2e-6   /* dot_f32, dot_f16_f32, F32/F16/BF16 vec_dot */
#define TOL_DOT_QUANT 2e-6 /* integer vec_dot: float terms once per block */
/* The reference integer dot against a double evaluation of the same
 * formula: per-block scale products rounded to float, one add per block. */
#define TOL_DOT_FORMULA 2e-6

/* ---- Random data --------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint32_t rnd_u32(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* Uniform in [-1, 1). */
static float rnd_f(void) { return (float)((double)rnd_u32() / 2147483648.0 - 1.0); }

/* Roughly normal, unit variance (sum of four uniforms). */
static float rnd_n(void) { return (rnd_f() + rnd_f() + rnd_f() + rnd_f()) * 0.866f; }

static int same_float(float a, float b) {
    if (isnan(a) && isnan(b)) return 1;
    return memcmp(&a, &b, sizeof a) == 0;
}

/* ---- Weight rows of every type ------------------------------------------ */

static const uint32_t quant_types[] = {
    LMOE_DTYPE_Q4_0, LMOE_DTYPE_Q4_1, LMOE_DTYPE_Q5_0, LMOE_DTYPE_Q5_1, LMOE_DTYPE_Q8_0,
    LMOE_DTYPE_Q2_K, LMOE_DTYPE_Q3_K, LMOE_DTYPE_Q4_K, LMOE_DTYPE_Q5_K, LMOE_DTYPE_Q6_K,
};
static const uint32_t float_types[] = {LMOE_DTYPE_F32, LMOE_DTYPE_F16, LMOE_DTYPE_BF16};
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static void put_f16(uint8_t *p, float v) {
    lmoe_f16 h = lmoe_f32_to_f16(v);
    memcpy(p, &h, sizeof h);
}

/* Byte offsets of the f16 scale fields of a block (-1 ends the list). */
static void scale_offsets(uint32_t type, int off[3]) {
    off[0] = off[1] = off[2] = -1;
    switch (type) {
    case LMOE_DTYPE_Q4_0: case LMOE_DTYPE_Q5_0: case LMOE_DTYPE_Q8_0: off[0] = 0; break;
    case LMOE_DTYPE_Q4_1: case LMOE_DTYPE_Q5_1: case LMOE_DTYPE_Q4_K: case LMOE_DTYPE_Q5_K:
        off[0] = 0, off[1] = 2; break;
    case LMOE_DTYPE_Q2_K: off[0] = 80, off[1] = 82; break;
    case LMOE_DTYPE_Q3_K: off[0] = 108; break;
    case LMOE_DTYPE_Q6_K: off[0] = 208; break;
    default: break;
    }
}

/* n elements of random weights of `type` into row: random code bytes (so
 * every bit pattern of codes and packed scales occurs, -128 included) and
 * sane f16 scales; float types get normal values scaled by `mag`. */
static void random_row(uint32_t type, uint8_t *row, int n, float mag) {
    const struct lmoe_dtype_traits *t = lmoe_dtype_get(type);
    if (type == LMOE_DTYPE_F32 || type == LMOE_DTYPE_F16 || type == LMOE_DTYPE_BF16) {
        for (int i = 0; i < n; i++) {
            float v = rnd_n() * mag;
            if (type == LMOE_DTYPE_F32) memcpy(row + 4 * i, &v, 4);
            else if (type == LMOE_DTYPE_F16) put_f16(row + 2 * i, v);
            else {
                lmoe_bf16 h = lmoe_f32_to_bf16(v);
                memcpy(row + 2 * i, &h, 2);
            }
        }
        return;
    }
    int nb = n / t->block_size, off[3];
    scale_offsets(type, off);
    for (int b = 0; b < nb; b++) {
        uint8_t *blk = row + (size_t)b * (size_t)t->type_size;
        for (int i = 0; i < t->type_size; i++) blk[i] = (uint8_t)rnd_u32();
        for (int k = 0; k < 3 && off[k] >= 0; k++) put_f16(blk + off[k], (0.01f + fabsf(rnd_f())) * 0.05f * mag);
    }
}

/* Activations: kind 0 normal, 1 large (1e4), 2 all zero, 3 a single
 * nonzero per block, 4 rounding ties (x / step is k + 1/2 exactly), 5 tiny
 * (1e-30), 6 mixed block magnitudes. */
#define N_ACT_KINDS 7
static void random_act(float *x, int n, int kind) {
    for (int i = 0; i < n; i++) {
        switch (kind) {
        case 0: x[i] = rnd_n(); break;
        case 1: x[i] = rnd_n() * 1e4f; break;
        case 2: x[i] = 0.0f; break;
        case 3: x[i] = i % 32 == 7 ? rnd_n() : 0.0f; break;
        /* amax 127 (or -127) per block makes the step 1, so halves tie */
        case 4: x[i] = i % 32 == 0 ? (i % 64 ? 127.0f : -127.0f) : (float)((int)(rnd_u32() % 254) - 127) + 0.5f; break;
        case 5: x[i] = rnd_n() * 1e-30f; break;
        default: x[i] = rnd_n() * powf(10.0f, (float)((i / 32) % 7) - 3.0f); break;
        }
    }
    if (kind == 4)
        for (int i = 0; i < n; i++)
            if (i % 32 != 0 && fabsf(x[i]) > 126.5f) x[i] = 0.5f;
}

/* ---- The tables under test ---------------------------------------------- */

static const struct lmoe_kernels *tables[3];
static int n_tables;

static void find_tables(void) {
    static const char *const names[] = {"ref", "avx2", "avx512"};
    n_tables = 0;
    for (size_t i = 0; i < N_OF(names); i++) {
        const struct lmoe_kernels *k = lmoe_kernels_have(names[i]);
        if (k) tables[n_tables++] = k;
        else fprintf(stderr, "  kernels: %s not available on this CPU or build, skipped\n", names[i]);
    }
}

/* ---- Float kernels ------------------------------------------------------- */

static const int float_lengths[] = {1, 3, 7, 8, 16, 31, 33, 64, 100, 1000};

/* kind 0 normal, 1 large, 2 with an inf, 3 with a NaN */
static void fill_floats(float *x, int n, int kind) {
    for (int i = 0; i < n; i++) x[i] = kind == 1 ? rnd_n() * 3e4f : rnd_n();
    if (kind == 2) x[n / 2] = INFINITY;
    if (kind == 3) x[n - 1] = NAN;
}

/* Dot products: same NaN/inf-ness, and finite results within tol of
 * sum |a_i b_i|. */
static void check_dot(const char *what, const char *isa, int n, int kind, float got, float want, double abs_sum,
                      double tol) {
    if (!isfinite(want) || !isfinite(got)) {
        CHECKF(same_float(got, want), "%s %s n=%d kind=%d: %g, ref %g", what, isa, n, kind, got, want);
        return;
    }
    double err = fabs((double)got - (double)want);
    CHECKF(err <= tol * abs_sum + 1e-30, "%s %s n=%d kind=%d: %.9g, ref %.9g, diff %.3g > %.3g * %.3g", what, isa,
           n, kind, got, want, err, tol, abs_sum);
}

/* Elementwise results: bit for bit; prints the first mismatches. */
static void check_same(const char *what, const char *isa, int n, const float *got, const float *want) {
    int bad = 0;
    double maxd = 0;
    for (int i = 0; i < n; i++)
        if (!same_float(got[i], want[i])) {
            if (bad < 3) fprintf(stderr, "  %s %s n=%d [%d]: %.9g, ref %.9g\n", what, isa, n, i, got[i], want[i]);
            bad++;
            double d = fabs((double)got[i] - want[i]);
            if (d > maxd) maxd = d;
        }
    CHECKF(bad == 0, "%s %s n=%d: %d of %d differ, max diff %.3g", what, isa, n, bad, n, maxd);
}

static void test_float_kernels(const struct lmoe_kernels *k) {
    const struct lmoe_kernels *r = &lmoe_kernels_ref;
    enum { MAXN = 1000 };
    float *a = malloc(sizeof(float) * MAXN), *b = malloc(sizeof(float) * MAXN);
    float *y0 = malloc(sizeof(float) * MAXN), *y1 = malloc(sizeof(float) * MAXN);
    uint16_t *h = malloc(sizeof(uint16_t) * MAXN), *h1 = malloc(sizeof(uint16_t) * MAXN);
    for (size_t li = 0; li < N_OF(float_lengths); li++) {
        int n = float_lengths[li];
        for (int kind = 0; kind < 4; kind++) {
            fill_floats(a, n, kind);
            fill_floats(b, n, 0);
            double abs_sum = 0;
            for (int i = 0; i < n; i++) abs_sum += fabs((double)a[i] * b[i]);
            check_dot("dot_f32", k->name, n, kind, k->dot_f32(a, b, n), r->dot_f32(a, b, n), abs_sum, TOL_DOT_F32);

            for (int i = 0; i < n; i++) y0[i] = y1[i] = b[i];
            k->axpy_f32(y1, 0.37f, a, n);
            r->axpy_f32(y0, 0.37f, a, n);
            check_same("axpy_f32", k->name, n, y1, y0);

            r->f32_to_f16(h, a, n);
            k->f32_to_f16(h1, a, n);
            int same16 = 0;
            for (int i = 0; i < n; i++) same16 += h[i] == h1[i];
            CHECKF(same16 == n, "f32_to_f16 %s n=%d kind=%d: %d of %d differ", k->name, n, kind, n - same16, n);

            abs_sum = 0;
            for (int i = 0; i < n; i++) abs_sum += fabs((double)lmoe_f16_to_f32(h[i]) * b[i]);
            check_dot("dot_f16_f32", k->name, n, kind, k->dot_f16_f32(h, b, n), r->dot_f16_f32(h, b, n), abs_sum,
                      TOL_DOT_F32);

            for (int i = 0; i < n; i++) y0[i] = y1[i] = b[i];
            k->axpy_f16(y1, -1.5f, h, n);
            r->axpy_f16(y0, -1.5f, h, n);
            check_same("axpy_f16", k->name, n, y1, y0);

            /* float rows through dequantize_row and vec_dot (row at an odd
             * address to exercise unaligned loads) */
            for (size_t ti = 0; ti < N_OF(float_types); ti++) {
                uint32_t type = float_types[ti];
                uint8_t *row = malloc(4 * (size_t)n + 1);
                random_row(type, row + 1, n, kind == 1 ? 3e4f : 1.0f);
                if (kind >= 2 && type == LMOE_DTYPE_F32) memcpy(row + 1, a, 4 * (size_t)n);
                r->dequantize_row(type, row + 1, y0, n);
                k->dequantize_row(type, row + 1, y1, n);
                check_same(lmoe_dtype_get(type)->name, k->name, n, y1, y0);
                abs_sum = 0;
                for (int i = 0; i < n; i++) abs_sum += fabs((double)y0[i] * b[i]);
                float want = r->vec_dot[type](n, row + 1, b);
                check_dot(lmoe_dtype_get(type)->name, k->name, n, kind, k->vec_dot[type](n, row + 1, b), want,
                          abs_sum, TOL_DOT_F32);
                /* the reference's float vec_dot is dot_f32 on the decoded row */
                CHECKF(same_float(want, r->dot_f32(y0, b, n)), "vec_dot %s ref differs from dot_f32 n=%d",
                       lmoe_dtype_get(type)->name, n);
                free(row);
            }
        }
    }
    free(a), free(b), free(y0), free(y1), free(h), free(h1);
}

/* ---- Activation quantizers ----------------------------------------------- */

static void test_quantize_act(const struct lmoe_kernels *k) {
    static const int lengths[] = {256, 512, 1024 + 256};
    static const uint32_t acts[] = {LMOE_DTYPE_Q8_0, LMOE_DTYPE_Q8_K};
    float *x = malloc(sizeof(float) * 2048);
    uint8_t *q0 = malloc(4096), *q1 = malloc(4096);
    for (size_t ai = 0; ai < N_OF(acts); ai++)
        for (size_t li = 0; li < N_OF(lengths); li++)
            for (int kind = 0; kind < N_ACT_KINDS; kind++) {
                int n = lengths[li];
                random_act(x, n, kind);
                size_t bytes = (size_t)lmoe_dtype_row_size(acts[ai], n);
                memset(q0, 0xAA, bytes + 1);
                memset(q1, 0x55, bytes + 1);
                /* odd destination: activation blocks sit at any address */
                lmoe_kernels_ref.quantize_act(acts[ai], x, q0 + 1, n);
                k->quantize_act(acts[ai], x, q1 + 1, n);
                int diff = -1;
                for (size_t i = 0; i < bytes && diff < 0; i++)
                    if (q0[1 + i] != q1[1 + i]) diff = (int)i;
                CHECKF(diff < 0, "quantize %s %s n=%d kind=%d: first differing byte %d", lmoe_dtype_get(acts[ai])->name,
                       k->name, n, kind, diff);
            }
    free(x), free(q0), free(q1);
}

/* The reference quantizers' meaning: each dequantized activation within
 * half a step of the input (the step the scale defines, plus for Q8_0 the
 * rounding of the scale to f16), ties rounded as documented, and Q8_K's
 * bsums the sums of its codes. */
static void test_quantize_ref(void) {
    float *x = malloc(sizeof(float) * 512), *xq = malloc(sizeof(float) * 512);
    uint8_t *q = malloc(4096);
    for (int kind = 0; kind < N_ACT_KINDS; kind++) {
        random_act(x, 512, kind);
        /* Q8_0 */
        lmoe_quantize_row_q8_0(x, q, 512);
        lmoe_dtype_get(LMOE_DTYPE_Q8_0)->dequantize(q, xq, 512);
        int bad = 0;
        for (int b = 0; b < 512 / 32; b++) {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
            /* the codes use the f32 step, the decoding its f16 rounding
             * (0 below the f16 range) */
            double step = amax / 127.0, d16 = lmoe_f16_to_f32(lmoe_f32_to_f16(amax / 127.0f));
            double bound = 0.5 * step * (1 + 1e-6) + 127 * fabs(step - d16);
            for (int j = 0; j < 32; j++) bad += fabs((double)x[b * 32 + j] - xq[b * 32 + j]) > bound;
        }
        CHECKF(bad == 0, "q8_0 kind %d: %d activations beyond half a step", kind, bad);
        /* Q8_K */
        lmoe_quantize_row_q8_K(x, q, 512);
        lmoe_dtype_get(LMOE_DTYPE_Q8_K)->dequantize(q, xq, 512);
        bad = 0;
        int bad_sums = 0;
        for (int b = 0; b < 2; b++) {
            const uint8_t *blk = q + b * sizeof(struct lmoe_block_q8_k);
            float amax = 0;
            for (int j = 0; j < 256; j++) amax = fmaxf(amax, fabsf(x[b * 256 + j]));
            double bound = 0.5 * amax / 127.0 * (1 + 1e-5);
            for (int j = 0; j < 256; j++) bad += fabs((double)x[b * 256 + j] - xq[b * 256 + j]) > bound;
            int16_t bs[16];
            memcpy(bs, blk + offsetof(struct lmoe_block_q8_k, bsums), sizeof bs);
            const int8_t *qs = (const int8_t *)(blk + offsetof(struct lmoe_block_q8_k, qs));
            for (int g = 0; g < 16; g++) {
                int s = 0;
                for (int j = 0; j < 16; j++) s += qs[g * 16 + j];
                bad_sums += s != bs[g];
            }
        }
        CHECKF(bad == 0, "q8_K kind %d: %d activations beyond half a step", kind, bad);
        CHECKF(bad_sums == 0, "q8_K kind %d: %d bsums wrong", kind, bad_sums);
    }
    /* ties: roundf for Q8_0 (2.5 -> 3, -2.5 -> -3), nearest even for Q8_K
     * (scale -127 / max: x = -2.5 with max 127 -> 2.5 * ... see below) */
    float t[256] = {0};
    t[0] = 127.0f, t[1] = 2.5f, t[2] = -2.5f, t[3] = 3.5f;
    lmoe_quantize_row_q8_0(t, q, 32);
    const int8_t *c = (const int8_t *)(q + 2);
    CHECKF(c[1] == 3 && c[2] == -3 && c[3] == 4, "q8_0 ties: %d %d %d", c[1], c[2], c[3]);
    t[0] = -127.0f; /* iscale = 1: codes are x rounded to even */
    lmoe_quantize_row_q8_K(t, q, 256);
    c = (const int8_t *)(q + 4);
    CHECKF(c[0] == -127 && c[1] == 2 && c[2] == -2 && c[3] == 4, "q8_K ties: %d %d %d %d", c[0], c[1], c[2], c[3]);
    free(x), free(xq), free(q);
}

/* ---- Integer dot products ------------------------------------------------ */

static void test_vec_dot(const struct lmoe_kernels *k) {
    static const int blocks_legacy[] = {1, 2, 3, 7, 64};
    /* 15 and 27: the AVX-512 one-token K-quant dot takes 8, 4, 2, 1 blocks at a time */
    static const int blocks_k[] = {1, 2, 3, 8, 15, 27};
    enum { MAXN = 27 * 256 };
    float *x = malloc(sizeof(float) * MAXN), *xq = malloc(sizeof(float) * MAXN), *wf = malloc(sizeof(float) * MAXN);
    uint8_t *row = malloc(8192), *act = malloc(8192);
    int worst_printed = 0;
    for (size_t ti = 0; ti < N_OF(quant_types); ti++) {
        uint32_t type = quant_types[ti];
        const struct lmoe_dtype_traits *tr = lmoe_dtype_get(type);
        int is_k = tr->block_size == LMOE_QK_K;
        const int *blocks = is_k ? blocks_k : blocks_legacy;
        int n_blocks = is_k ? (int)N_OF(blocks_k) : (int)N_OF(blocks_legacy);
        uint32_t at = lmoe_vec_dot_act_type(type);
        CHECK(at == (is_k ? LMOE_DTYPE_Q8_K : LMOE_DTYPE_Q8_0));
        for (int bi = 0; bi < n_blocks; bi++)
            for (int kind = 0; kind < N_ACT_KINDS; kind++)
                for (int rep = 0; rep < 3; rep++) {
                    int n = blocks[bi] * tr->block_size;
                    random_row(type, row + 1, n, 1.0f);
                    random_act(x, n, kind);
                    lmoe_kernels_ref.quantize_act(at, x, act + 3, n);
                    tr->dequantize(row + 1, wf, n);
                    lmoe_dtype_get(at)->dequantize(act + 3, xq, n);
                    double exact = 0, abs_sum = 0, err_bound = 0, unq = 0;
                    for (int i = 0; i < n; i++) {
                        exact += (double)wf[i] * xq[i];
                        abs_sum += fabs((double)wf[i] * xq[i]);
                        unq += (double)wf[i] * x[i];
                        err_bound += fabs((double)wf[i]) * fabs((double)x[i] - xq[i]);
                    }
                    float want = lmoe_vec_dot_ref(type)(n, row + 1, act + 3);
                    CHECK(k->vec_dot[type] != NULL);
                    if (!k->vec_dot[type]) continue;
                    float got = k->vec_dot[type](n, row + 1, act + 3);
                    if (k == &lmoe_kernels_ref) {
                        /* the integer formula is the dot of the decoded rows;
                         * Q4_1/Q5_1/K mins make d*q + m round in float, so
                         * allow a little more than the summation error */
                        double e = fabs(want - exact);
                        CHECKF(e <= TOL_DOT_FORMULA * abs_sum + 1e-6 * fabs(exact) + 1e-37,
                               "vec_dot_ref %s n=%d kind=%d: %.9g, double formula %.9g (diff %.3g, scale %.3g)",
                               tr->name, n, kind, want, exact, e, abs_sum);
                        /* and close to the unquantized dot */
                        e = fabs(want - unq);
                        CHECKF(e <= err_bound * (1 + 1e-5) + 2e-5 * abs_sum + 1e-37,
                               "vec_dot_ref %s n=%d kind=%d: %.9g vs unquantized %.9g beyond bound %.3g", tr->name, n,
                               kind, want, unq, err_bound);
                    } else {
                        double e = fabs((double)got - want);
                        int ok = e <= TOL_DOT_QUANT * abs_sum + 1e-37;
                        CHECKF(ok, "vec_dot %s %s n=%d kind=%d: %.9g, ref %.9g, diff %.3g (scale %.3g)", tr->name,
                               k->name, n, kind, got, want, e, abs_sum);
                        if (!ok && worst_printed++ < 3) fprintf(stderr, "  (first failures shown only)\n");
                        /* AVX-512's Q4_K, Q5_K, Q6_K dots keep the reference's order (x86_avx512.c) */
                        if ((type == LMOE_DTYPE_Q4_K || type == LMOE_DTYPE_Q5_K || type == LMOE_DTYPE_Q6_K) &&
                            strcmp(k->name, "avx512") == 0)
                            CHECKF(same_float(got, want), "vec_dot %s avx512 n=%d kind=%d: %.9g, not the ref's %.9g",
                                   tr->name, n, kind, got, want);
                    }
                }
    }
    free(x), free(xq), free(wf), free(row), free(act);
}

/* ---- Multi-token tiles ------------------------------------------------------ */

/* gemm must give vec_dot's bits for every (row, token), whatever the tile
 * a row or token falls in: ragged row and token counts, weight rows and
 * activation rows at odd addresses and strides, y with padding that must
 * stay untouched. */
static void test_gemm(const struct lmoe_kernels *k) {
    static const int rows[] = {1, 2, 3, 4, 5, 7, 8, 13};
    static const int toks[] = {1, 2, 3, 4, 5, 6, 9};
    for (size_t ti = 0; ti < N_OF(quant_types); ti++) {
        uint32_t type = quant_types[ti];
        if (!k->gemm[type]) continue;
        const struct lmoe_dtype_traits *tr = lmoe_dtype_get(type);
        uint32_t at = lmoe_vec_dot_act_type(type);
        static const int nbks[] = {1, 3, 15};
        for (size_t ni = 0; ni < N_OF(nbks); ni++) {
            const int nbk = nbks[ni];
            /* 1, 3 or 15 K-blocks (15: the one-token dot's 8 + 4 + 2 + 1); 5, 15 or 75 legacy */
            int n = nbk * (tr->block_size == 32 ? 5 : 1) * tr->block_size;
            size_t wrb = (size_t)lmoe_dtype_row_size(type, n) + 3, arb = (size_t)lmoe_dtype_row_size(at, n) + 5;
            uint8_t *w = malloc(wrb * 13 + 1), *act = malloc(arb * 9 + 1);
            float *x = malloc(sizeof(float) * (size_t)n);
            for (int r = 0; r < 13; r++) random_row(type, w + 1 + wrb * (size_t)r, n, 1.0f);
            for (int t = 0; t < 9; t++) {
                random_act(x, n, t % N_ACT_KINDS);
                k->quantize_act(at, x, act + 1 + arb * (size_t)t, n);
            }
            for (size_t ri = 0; ri < N_OF(rows); ri++)
                for (size_t tj = 0; tj < N_OF(toks); tj++) {
                    int nr = rows[ri], nt = toks[tj], ldy = nr + 2;
                    float y[9 * 15];
                    for (int i = 0; i < 9 * 15; i++) y[i] = -3.0f;
                    k->gemm[type](n, nr, nt, w + 1, wrb, act + 1, arb, y, (size_t)ldy);
                    int bad = 0, bad_pad = 0;
                    for (int t = 0; t < nt; t++) {
                        for (int r = 0; r < nr; r++) {
                            float want = k->vec_dot[type](n, w + 1 + wrb * (size_t)r, act + 1 + arb * (size_t)t);
                            if (!same_float(y[t * ldy + r], want)) {
                                if (bad < 3)
                                    fprintf(stderr, "  gemm %s %s n=%d %dx%d [r%d t%d]: %.9g, vec_dot %.9g\n", tr->name,
                                            k->name, n, nr, nt, r, t, y[t * ldy + r], want);
                                bad++;
                            }
                        }
                        for (int r = nr; r < ldy; r++) bad_pad += y[t * ldy + r] != -3.0f;
                    }
                    for (int i = nt * ldy; i < 9 * 15; i++) bad_pad += y[i] != -3.0f;
                    CHECKF(bad == 0, "gemm %s %s n=%d rows=%d toks=%d: %d outputs differ from vec_dot", tr->name,
                           k->name, n, nr, nt, bad);
                    CHECKF(bad_pad == 0, "gemm %s %s n=%d rows=%d toks=%d: wrote %d elements outside", tr->name,
                           k->name, n, nr, nt, bad_pad);
                }
            free(w), free(act), free(x);
        }
    }
    /* the AVX-512 table has tiles for these (tests would skip a NULL) */
    if (strcmp(k->name, "avx512") == 0)
        CHECK(k->gemm[LMOE_DTYPE_Q8_0] && k->gemm[LMOE_DTYPE_Q4_0] && k->gemm[LMOE_DTYPE_Q5_0] &&
              k->gemm[LMOE_DTYPE_Q4_K] && k->gemm[LMOE_DTYPE_Q5_K] && k->gemm[LMOE_DTYPE_Q6_K]);
}

/* ---- The matmul driver --------------------------------------------------- */

struct mm_env {
    struct lmoe_compute c;
};

static void mm_open(struct mm_env *e, const struct lmoe_kernels *k, int n_threads, int max_cols) {
    op_compute_open(&e->c, k, n_threads, max_cols);
}

static void mm_close(struct mm_env *e) { op_compute_close(&e->c); }

static void test_matmul(const struct lmoe_kernels *k) {
    static const uint32_t types[] = {LMOE_DTYPE_F32, LMOE_DTYPE_F16, LMOE_DTYPE_BF16, LMOE_DTYPE_Q4_0,
                                     LMOE_DTYPE_Q4_1, LMOE_DTYPE_Q5_0, LMOE_DTYPE_Q5_1, LMOE_DTYPE_Q8_0,
                                     LMOE_DTYPE_Q2_K, LMOE_DTYPE_Q3_K, LMOE_DTYPE_Q4_K, LMOE_DTYPE_Q5_K,
                                     LMOE_DTYPE_Q6_K};
    static const int Ts[] = {1, 5, 70}; /* 70: more than one chunk of activation rows */
    const int n_out = 101, n_expert = 2, ldy = n_out + 3; /* 101: threaded at T = 70, ragged tiles */
    /* the same table, with the fast route switched on: the driver must
     * then equal direct vec_dot calls */
    struct lmoe_kernels fast = *k;
    fast.quantized_matmul = 1;
    for (size_t ti = 0; ti < N_OF(types); ti++) {
        uint32_t type = types[ti];
        const struct lmoe_dtype_traits *tr = lmoe_dtype_get(type);
        int n_in = tr->block_size == 1 ? 33 : tr->block_size == 32 ? 160 : 512;
        int ldx = n_in + 5;
        struct lmoe_tensor W = {.type = type, .ne = {n_in, n_out, n_expert, 1}};
        W.row_bytes = (size_t)lmoe_dtype_row_size(type, n_in);
        uint8_t *data = malloc(W.row_bytes * (size_t)(n_out * n_expert));
        for (int r = 0; r < n_out * n_expert; r++) random_row(type, data + W.row_bytes * (size_t)r, n_in, 1.0f);
        W.data = data;
        float *x = malloc(sizeof(float) * (size_t)(70 * ldx));
        float *y_ref = malloc(sizeof(float) * (size_t)(70 * ldy)), *y1 = malloc(sizeof(float) * (size_t)(70 * ldy));
        float *y2 = malloc(sizeof(float) * (size_t)(70 * ldy)), *wrow = malloc(sizeof(float) * (size_t)n_in);
        uint8_t *act = malloc(4096);
        for (int i = 0; i < 70 * ldx; i++) x[i] = rnd_n();
        struct mm_env ref, one, two;
        mm_open(&ref, &lmoe_kernels_ref, 2, n_in + 7);
        mm_open(&one, &fast, 1, n_in + 7);
        mm_open(&two, &fast, 2, n_in + 7);
        for (size_t tj = 0; tj < N_OF(Ts); tj++) {
            int T = Ts[tj];
            for (int i = 0; i < 70 * ldy; i++) y_ref[i] = y1[i] = y2[i] = -7.0f;
            op_matmul(&ref.c, &W, 1, x, ldx, T, y_ref, ldy);
            op_matmul(&one.c, &W, 1, x, ldx, T, y1, ldy);
            op_matmul(&two.c, &W, 1, x, ldx, T, y2, ldy);
            CHECKF(memcmp(y1, y2, sizeof(float) * (size_t)(70 * ldy)) == 0, "matmul %s %s T=%d: 1 and 2 threads differ",
                   tr->name, k->name, T);
            int bad_direct = 0, bad_ref = 0, bad_pad = 0;
            double worst = 0;
            uint32_t at = lmoe_vec_dot_act_type(type);
            for (int t = 0; t < T; t++) {
                const float *xt = x + (size_t)t * ldx;
                const void *a = xt;
                if (at != LMOE_DTYPE_F32) {
                    k->quantize_act(at, xt, act, n_in);
                    a = act;
                }
                for (int r = 0; r < n_out; r++) {
                    const uint8_t *row = data + W.row_bytes * (size_t)(n_out + r);
                    float direct = k->vec_dot[type](n_in, row, a);
                    bad_direct += !same_float(direct, y1[t * ldy + r]);
                    /* against the float route: the activation quantization
                     * error, at most sum |w| * step / 2 per output */
                    tr->dequantize(row, wrow, n_in);
                    double bound = 0, abs_sum = 0;
                    for (int i = 0; i < n_in; i++) abs_sum += fabs((double)wrow[i] * xt[i]);
                    if (at != LMOE_DTYPE_F32) {
                        int bs = at == LMOE_DTYPE_Q8_0 ? 32 : 256;
                        for (int b0 = 0; b0 < n_in; b0 += bs) {
                            float amax = 0;
                            for (int i = b0; i < b0 + bs; i++) amax = fmaxf(amax, fabsf(xt[i]));
                            for (int i = b0; i < b0 + bs; i++) bound += fabs((double)wrow[i]) * amax / 127.0 * 0.52;
                        }
                    }
                    double e = fabs((double)y1[t * ldy + r] - y_ref[t * ldy + r]);
                    if (e > worst) worst = e;
                    bad_ref += e > bound + TOL_DOT_F32 * abs_sum;
                }
                for (int r = n_out; r < ldy; r++) bad_pad += y1[t * ldy + r] != -7.0f;
            }
            CHECKF(bad_direct == 0, "matmul %s %s T=%d: %d outputs differ from vec_dot", tr->name, k->name, T,
                   bad_direct);
            CHECKF(bad_ref == 0, "matmul %s %s T=%d: %d outputs beyond the quantization bound (max diff %.3g)",
                   tr->name, k->name, T, bad_ref, worst);
            CHECKF(bad_pad == 0, "matmul %s %s T=%d: wrote %d elements past n_out", tr->name, k->name, T, bad_pad);
        }
        mm_close(&ref), mm_close(&one), mm_close(&two);
        free(data), free(x), free(y_ref), free(y1), free(y2), free(wrow), free(act);
    }
}

void test_kernels(void) {
    find_tables();
    CHECK(n_tables >= 1 && tables[0] == &lmoe_kernels_ref);
    CHECK(lmoe_kernels_pick() != NULL);
    test_quantize_ref();
    for (int i = 0; i < n_tables; i++) {
        const struct lmoe_kernels *k = tables[i];
        test_float_kernels(k);
        test_quantize_act(k);
        test_vec_dot(k);
        test_gemm(k);
        test_matmul(k);
    }
}
