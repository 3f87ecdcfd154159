/*
 * test_quant.c - the reference dequantizers and conversions against gguf-py.
 *
 * Goldens in tests/golden/quant/ (tools/make_quant_goldens.py) hold raw
 * blocks and the floats gguf-py's dequantize gives for them; ours must match
 * bit for bit, with any NaN matching any NaN. Each golden is also decoded
 * from a deliberately odd address, since blocks in an mmap'd file need not
 * be aligned. The half and bfloat16 conversions are checked over all 65536
 * inputs and at every rounding boundary.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "quant/quant.h"
#include "test.h"

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Same bits, or both NaN. */
static int same_float(float a, float b) {
    return (isnan(a) && isnan(b)) || bits_of(a) == bits_of(b);
}

static uint32_t read_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Index of the first element where got and want differ, or -1. */
static int64_t first_mismatch(const float *got, const uint8_t *want_bytes, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float w;
        memcpy(&w, want_bytes + i * 4, 4);
        if (!same_float(got[i], w)) return i;
    }
    return -1;
}

/*
 * One golden: header "LMQG", u32 type, u32 n_elements, u32 n_bytes, the
 * blocks, then n_elements expected floats. Checks the header against the
 * traits table, dequantizes at two alignments, and checks lmoe_dot_ref.
 */
static void check_golden(const char *name, uint32_t want_type) {
    char path[512];
    snprintf(path, sizeof path, "%s/golden/quant/%s.bin", LMOE_TEST_DIR, name);
    size_t size = 0;
    uint8_t *file = test_read_file(path, &size);
    CHECKF(file != NULL, "cannot read %s", path);
    if (!file) return;
    const struct lmoe_dtype_traits *t = lmoe_dtype_get(want_type);
    const int header_ok = size >= 16 && memcmp(file, "LMQG", 4) == 0;
    const uint32_t type = header_ok ? read_u32(file + 4) : 0;
    const int64_t n = header_ok ? read_u32(file + 8) : 0;
    const int64_t n_bytes = header_ok ? read_u32(file + 12) : 0;
    CHECKF(header_ok && type == want_type && (int64_t)size == 16 + n_bytes + 4 * n,
           "%s: bad header or size %zu", name, size);
    CHECKF(t && t->dequantize && strcmp(t->name, name) == 0, "%s: traits", name);
    CHECKF(lmoe_dtype_row_size(type, n) == n_bytes, "%s: row size %lld for %lld elements",
           name, (long long)lmoe_dtype_row_size(type, n), (long long)n);
    if (!header_ok || type != want_type || (int64_t)size != 16 + n_bytes + 4 * n || !t ||
        !t->dequantize || lmoe_dtype_row_size(type, n) != n_bytes) {
        free(file);
        return;
    }
    const uint8_t *want = file + 16 + n_bytes;

    /* Straight from the file buffer, then copied to an odd address. */
    float *got = malloc((size_t)n * sizeof(float));
    uint8_t *odd = malloc((size_t)n_bytes + 1);
    t->dequantize(file + 16, got, n);
    int64_t bad = first_mismatch(got, want, n);
    float w = 0;
    if (bad >= 0) memcpy(&w, want + bad * 4, 4);
    CHECKF(bad < 0, "%s: element %lld is %a (0x%08x), gguf-py says %a (0x%08x)", name,
           (long long)bad, bad >= 0 ? got[bad] : 0.0, bad >= 0 ? bits_of(got[bad]) : 0u, w,
           bits_of(w));
    memcpy(odd + 1, file + 16, (size_t)n_bytes);
    memset(got, 0, (size_t)n * sizeof(float));
    t->dequantize(odd + 1, got, n);
    CHECKF(first_mismatch(got, want, n) < 0, "%s: differs when read at an odd address", name);

    /* lmoe_dot_ref is dequantize-then-dot in index order: over the whole
     * row, and chunk by chunk (a block, or 32 floats) so that a NaN in the
     * edge blocks does not hide a wrong sum in the others. */
    float *x = malloc((size_t)n * sizeof(float));
    uint32_t seed = 12345;
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)(seed >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
    }
    const int64_t chunk = t->block_size > 1 ? t->block_size : 32;
    const int64_t chunk_bytes = lmoe_dtype_row_size(type, chunk);
    int bad_dot = 0;
    float want_dot = 0.0f;
    for (int64_t c = 0; c < n; c += chunk) {
        float part = 0.0f;
        for (int64_t i = c; i < c + chunk; i++) part += got[i] * x[i];
        const float dot = lmoe_dot_ref(type, odd + 1 + c / chunk * chunk_bytes, x + c, chunk);
        bad_dot += !same_float(dot, part);
    }
    for (int64_t i = 0; i < n; i++) want_dot += got[i] * x[i];
    CHECKF(bad_dot == 0, "%s: %d chunks' dot products differ", name, bad_dot);
    CHECKF(same_float(lmoe_dot_ref(type, odd + 1, x, n), want_dot), "%s: dot over the row", name);
    /* A length that is not a whole number of blocks gives NaN. */
    if (t->block_size > 1) CHECK(isnan(lmoe_dot_ref(type, file + 16, x, t->block_size - 1)));

    free(x);
    free(odd);
    free(got);
    free(file);
}

static void test_goldens(void) {
    static const struct {
        const char *name;
        uint32_t type;
    } goldens[] = {
        {"f32", LMOE_DTYPE_F32},   {"f16", LMOE_DTYPE_F16},   {"bf16", LMOE_DTYPE_BF16},
        {"q4_0", LMOE_DTYPE_Q4_0}, {"q4_1", LMOE_DTYPE_Q4_1}, {"q5_0", LMOE_DTYPE_Q5_0},
        {"q5_1", LMOE_DTYPE_Q5_1}, {"q8_0", LMOE_DTYPE_Q8_0}, {"q8_1", LMOE_DTYPE_Q8_1},
        {"q2_K", LMOE_DTYPE_Q2_K}, {"q3_K", LMOE_DTYPE_Q3_K}, {"q4_K", LMOE_DTYPE_Q4_K},
        {"q5_K", LMOE_DTYPE_Q5_K}, {"q6_K", LMOE_DTYPE_Q6_K}, {"q8_K", LMOE_DTYPE_Q8_K},
    };
    for (size_t i = 0; i < sizeof goldens / sizeof goldens[0]; i++)
        check_golden(goldens[i].name, goldens[i].type);
}

/* Type ids, names, sizes, and row sizes for whole and partial blocks. */
static void test_traits(void) {
    CHECK(lmoe_dtype_get(4) == NULL); /* Q4_2, removed from ggml */
    CHECK(lmoe_dtype_get(5) == NULL);
    CHECK(lmoe_dtype_get(16) == NULL); /* IQ2_XXS: known to ggml, not to us */
    CHECK(lmoe_dtype_get(LMOE_DTYPE_COUNT) == NULL);
    CHECK(lmoe_dtype_get(UINT32_MAX) == NULL);
    CHECK(lmoe_dtype_row_size(16, 256) == -1);
    CHECK(lmoe_dtype_row_size(UINT32_MAX, 0) == -1);

    const struct lmoe_dtype_traits *q4k = lmoe_dtype_get(LMOE_DTYPE_Q4_K);
    CHECK(q4k && strcmp(q4k->name, "q4_K") == 0 && q4k->block_size == 256 && q4k->type_size == 144);
    const struct lmoe_dtype_traits *bf = lmoe_dtype_get(LMOE_DTYPE_BF16);
    CHECK(bf && strcmp(bf->name, "bf16") == 0 && bf->block_size == 1 && bf->type_size == 2);

    CHECK(lmoe_dtype_row_size(LMOE_DTYPE_F32, 7) == 28);
    CHECK(lmoe_dtype_row_size(LMOE_DTYPE_F16, 0) == 0);
    CHECK(lmoe_dtype_row_size(LMOE_DTYPE_F16, -1) == -1);
    CHECK(lmoe_dtype_row_size(LMOE_DTYPE_Q4_0, 4096) == 4096 / 32 * 18);
    CHECK(lmoe_dtype_row_size(LMOE_DTYPE_Q4_0, 33) == -1);
    CHECK(lmoe_dtype_row_size(LMOE_DTYPE_Q8_0, 64) == 68);
    CHECK(lmoe_dtype_row_size(LMOE_DTYPE_Q4_K, 7168) == 28 * 144);
    CHECK(lmoe_dtype_row_size(LMOE_DTYPE_Q4_K, 7168 + 32) == -1);
    CHECK(lmoe_dtype_row_size(LMOE_DTYPE_Q6_K, 128) == -1);
    CHECK(lmoe_dtype_row_size(LMOE_DTYPE_Q2_K, 256) == 84);
    CHECK(lmoe_dtype_row_size(LMOE_DTYPE_Q8_K, 512) == 584);
    CHECK(lmoe_dtype_row_size(LMOE_DTYPE_F32, INT64_MAX) == -1); /* overflow */

    /* Every known id: a name, a block size that divides into whole rows,
     * and a dequantizer. */
    int n_known = 0;
    for (uint32_t id = 0; id < LMOE_DTYPE_COUNT; id++) {
        const struct lmoe_dtype_traits *t = lmoe_dtype_get(id);
        if (!t) continue;
        n_known++;
        CHECKF(t->name && t->block_size > 0 && t->type_size > 0 && t->dequantize, "type %u", id);
        CHECKF(lmoe_dtype_row_size(id, t->block_size) == t->type_size, "type %u", id);
    }
    CHECK(n_known == 15);
    CHECK(isnan(lmoe_dot_ref(16, "", NULL, 0)));
}

/* f16: widening is exact and narrowing gives the same half back for every
 * non-NaN half; NaN stays NaN both ways. Then the rounding boundaries. */
static void test_f16(void) {
    int bad_roundtrip = 0, bad_nan = 0, bad_order = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = lmoe_f16_to_f32((lmoe_f16)h);
        const int is_nan = (h & 0x7C00) == 0x7C00 && (h & 0x3FF);
        if (is_nan) {
            const lmoe_f16 back = lmoe_f32_to_f16(f);
            bad_nan += !isnan(f) || !((back & 0x7C00) == 0x7C00 && (back & 0x3FF));
            bad_nan += (back & 0x8000) != (h & 0x8000); /* sign kept */
            continue;
        }
        bad_roundtrip += lmoe_f32_to_f16(f) != h;
        /* Positive finite halves increase with their bits; check each one
         * against a value computed independently. */
        if (h < 0x7C00) {
            const int e = (int)(h >> 10), m = (int)(h & 0x3FF);
            const float want = e ? ldexpf((float)(m + 1024), e - 25) : ldexpf((float)m, -24);
            bad_order += bits_of(f) != bits_of(want);
        }
    }
    CHECKF(bad_roundtrip == 0, "%d halves do not round-trip", bad_roundtrip);
    CHECKF(bad_nan == 0, "%d NaN halves mishandled", bad_nan);
    CHECKF(bad_order == 0, "%d halves widen to the wrong value", bad_order);

    /* Between consecutive positive halves a < b: the midpoint goes to the one
     * with the even mantissa, one f32 ulp either side goes to the nearer. */
    int bad_round = 0;
    for (uint32_t h = 0; h < 0x7BFF; h++) {
        const float a = lmoe_f16_to_f32((lmoe_f16)h), b = lmoe_f16_to_f32((lmoe_f16)(h + 1));
        const float mid = a + (b - a) / 2; /* exact: a few more bits than a half */
        const lmoe_f16 even = (h & 1) ? (lmoe_f16)(h + 1) : (lmoe_f16)h;
        bad_round += lmoe_f32_to_f16(mid) != even;
        bad_round += lmoe_f32_to_f16(nextafterf(mid, 0.0f)) != h;
        bad_round += lmoe_f32_to_f16(nextafterf(mid, INFINITY)) != h + 1;
        bad_round += lmoe_f32_to_f16(-mid) != (even | 0x8000);
    }
    CHECKF(bad_round == 0, "%d f32->f16 rounding cases wrong", bad_round);

    CHECK(lmoe_f32_to_f16(65504.0f) == 0x7BFF);
    CHECK(lmoe_f32_to_f16(65519.996f) == 0x7BFF);
    CHECK(lmoe_f32_to_f16(65520.0f) == 0x7C00); /* tie to even: infinity */
    CHECK(lmoe_f32_to_f16(1e10f) == 0x7C00);
    CHECK(lmoe_f32_to_f16(-INFINITY) == 0xFC00);
    CHECK(lmoe_f32_to_f16(0x1p-25f) == 0x0000);         /* tie to even: zero */
    CHECK(lmoe_f32_to_f16(0x1.000002p-25f) == 0x0001);  /* just above the tie */
    CHECK(lmoe_f32_to_f16(0x1.8p-24f) == 0x0002);       /* 1.5 ulps: tie to even 2 */
    CHECK(lmoe_f32_to_f16(-0x1p-30f) == 0x8000);        /* underflow keeps the sign */
    CHECK(lmoe_f32_to_f16(0x1.ff8p-15f) == 0x03FF);     /* largest subnormal */
    CHECK(lmoe_f32_to_f16(0x1.ffcp-15f) == 0x0400);     /* tie: up to the smallest normal */
    CHECK(lmoe_f32_to_f16(1.0f) == 0x3C00);
    CHECK(lmoe_f32_to_f16(float_of(0x7FC00000)) == 0x7E00);
    CHECK(lmoe_f32_to_f16(float_of(0x7F800001)) == 0x7E00); /* payload lost below, still NaN */
    CHECK(lmoe_f32_to_f16(float_of(0xFFA00000)) == 0xFF00); /* signalling: quieted, payload kept */
}

/* bf16: the same checks; widening is a shift, narrowing rounds 16 bits. */
static void test_bf16(void) {
    int bad_roundtrip = 0, bad_nan = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = lmoe_bf16_to_f32((lmoe_bf16)h);
        bad_roundtrip += bits_of(f) != h << 16;
        if ((h & 0x7F80) == 0x7F80 && (h & 0x7F)) {
            const lmoe_bf16 back = lmoe_f32_to_bf16(f);
            bad_nan += !((back & 0x7F80) == 0x7F80 && (back & 0x7F)) || (back & 0x8000) != (h & 0x8000);
        } else {
            bad_roundtrip += lmoe_f32_to_bf16(f) != h;
        }
    }
    CHECKF(bad_roundtrip == 0, "%d bfloat16 values do not round-trip", bad_roundtrip);
    CHECKF(bad_nan == 0, "%d bfloat16 NaNs mishandled", bad_nan);

    /* The dropped 16 bits: below, at and above a half, for odd and even. */
    int bad_round = 0;
    for (uint32_t h = 0; h < 0x7F80; h += 7) {
        const uint32_t base = h << 16;
        const uint32_t up = (h & 1) ? h + 1 : h; /* where the tie goes */
        bad_round += lmoe_f32_to_bf16(float_of(base | 0x7FFF)) != h;
        bad_round += lmoe_f32_to_bf16(float_of(base | 0x8000)) != up;
        bad_round += lmoe_f32_to_bf16(float_of(base | 0x8001)) != h + 1;
        bad_round += lmoe_f32_to_bf16(float_of((base | 0x8000) | 0x80000000u)) != (up | 0x8000);
    }
    CHECKF(bad_round == 0, "%d f32->bf16 rounding cases wrong", bad_round);
    CHECK(lmoe_f32_to_bf16(float_of(0x7F7FFFFF)) == 0x7F80); /* rounds up to infinity */
    CHECK(lmoe_f32_to_bf16(INFINITY) == 0x7F80);
    CHECK(lmoe_f32_to_bf16(float_of(0x7F800001)) == 0x7FC0); /* NaN must not become inf */
    CHECK(lmoe_f32_to_bf16(float_of(0xFFFFFFFF)) == 0xFFFF);
    CHECK(lmoe_f32_to_bf16(1.0f) == 0x3F80);
}

void test_quant(void) {
    test_traits();
    test_f16();
    test_bf16();
    test_goldens();
}
