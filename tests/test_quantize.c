/*
 * test_quantize.c - the quantizers (src/quant/quantize.c) and the two
 * quality tools built on them, `leanmoe quantize` and `leanmoe perplexity`.
 *
 *  - Legacy types give the bytes gguf-py gives (golden quantize.bin, made by
 *    tools/make_quantize_goldens.py), on Gaussian rows and edge blocks.
 *  - Every type's RMSE on those Gaussian rows is within RMSE_FACTOR of
 *    ggml's own quantizer (the RMSE recorded in the golden), and its
 *    relative RMSE on fresh random data is below a per-type bound; zero
 *    and constant blocks come back exactly.
 *  - `leanmoe quantize` picks llama-quantize's type for every tensor of two
 *    golden models under seven file types (golden types.txt), copies the
 *    metadata and sets general.file_type; with only legacy and float types
 *    in play (these models' rows are too short for K types) the whole
 *    file equals llama-quantize's, byte for byte.
 *  - A model quantized to Q8_0 / Q4_0 gives logits close to its F32 file.
 *  - `leanmoe perplexity` prints the PPL computed here from lmoe_ctx_eval
 *    logits, and its KL mode gives 0 against itself and a small positive
 *    value for a Q8_0 copy.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "format/gguf.h"
#include "leanmoe.h"
#include "quant/quant.h"
#include "test.h"

#ifndef LMOE_BUILD_DIR
#define LMOE_BUILD_DIR "build"
#endif

/* K-quant RMSE may exceed ggml's by at most this factor (legacy types must
 * match it exactly, being the same bytes). */
#define RMSE_FACTOR 1.10

/* Logits of a quantized model against its F32 file, as RMS(diff) /
 * RMS(logits) over all positions of a prompt. Loose on purpose:
 *  - ds3-f32 (tests/golden/models) has random weights, so nothing in it is
 *    redundant and rounding moves every logit: measured 0.032 for Q8_0 and
 *    0.40 for Q4_0, and llama.cpp on the same files agrees (KL divergence
 *    0.05 and 62% top-1 agreement for Q4_0 of llama-f32, in both engines).
 *  - stories260K (../shared/data, trained) shows what quantization does to
 *    a real model: measured 0.006 (Q8_0) and 0.036 (Q4_0).
 * The bounds are 1.6 to 2 times the measurements. */
static const struct {
    const char *model; /* relative to LMOE_TEST_DIR, or to LMOE_SHARED_DIR */
    int shared;
    double q8_0, q4_0;
} logit_cases[] = {
    {"/golden/models/ds3-f32.gguf", 0, 0.06, 0.7},
    {"/models/stories260K.gguf", 1, 0.01, 0.06},
};

/* ---- Helpers ---------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static double rng_uniform(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static float rng_gauss(void) {
    double u = rng_uniform(), v = rng_uniform();
    if (u < 1e-300) u = 1e-300;
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* Quantizes then dequantizes n floats; returns the RMSE (or -1). */
static double round_trip(uint32_t type, const float *x, float *y, int64_t n) {
    const int64_t bytes = lmoe_dtype_row_size(type, n);
    uint8_t *q = malloc((size_t)(bytes > 0 ? bytes : 1));
    double rmse = -1;
    if (q && lmoe_quantize(type, x, q, n) == bytes) {
        lmoe_dtype_get(type)->dequantize(q, y, n);
        double s = 0;
        for (int64_t i = 0; i < n; i++) s += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
        rmse = sqrt(s / (double)n);
    }
    free(q);
    return rmse;
}

/* Runs `leanmoe-san ARGS`, capturing stdout (and stderr) into out;
 * returns the exit status, or -1. */
static int run_cli(const char *args, char *out, size_t outlen) {
    char cmd[4096], o[96];
    snprintf(o, sizeof o, "/tmp/lmoe_quantize_out_%d", (int)getpid());
    snprintf(cmd, sizeof cmd, "%s/leanmoe-san %s >%s 2>&1", LMOE_BUILD_DIR, args, o);
    const int st = system(cmd);
    size_t n;
    char *b = test_read_file(o, &n);
    snprintf(out, outlen, "%s", b ? b : "");
    free(b);
    remove(o);
    return st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

static void tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/test_quantize_%ld_%s", LMOE_BUILD_DIR, (long)getpid(), name);
}

/* ---- Row quantizers against the golden ------------------------------------ */

static void check_golden(void) {
    size_t size;
    uint8_t *b = test_read_file(LMOE_TEST_DIR "/golden/quantize/quantize.bin", &size);
    CHECKF(b && size > 12 && !memcmp(b, "LMQZ", 4), "golden/quantize/quantize.bin missing or bad");
    if (!b || size < 12) {
        free(b);
        return;
    }
    size_t off = 4;
    uint32_t n_gauss, n_edge, n_types;
    memcpy(&n_gauss, b + off, 4);
    off += 4;
    float *all = malloc(sizeof(float) * (n_gauss + 4096)), *y = malloc(sizeof(float) * (n_gauss + 4096));
    memcpy(all, b + off, 4 * (size_t)n_gauss);
    off += 4 * (size_t)n_gauss;
    memcpy(&n_edge, b + off, 4);
    off += 4;
    CHECK(n_edge <= 4096);
    memcpy(all + n_gauss, b + off, 4 * (size_t)n_edge);
    off += 4 * (size_t)n_edge;
    memcpy(&n_types, b + off, 4);
    off += 4;
    double rms = 0;
    for (uint32_t i = 0; i < n_gauss; i++) rms += (double)all[i] * all[i];
    rms = sqrt(rms / n_gauss);
    int n_legacy = 0, n_k = 0;
    for (uint32_t t = 0; t < n_types && off + 12 <= size; t++) {
        uint32_t type, nbytes;
        float ggml_rmse;
        memcpy(&type, b + off, 4);
        memcpy(&ggml_rmse, b + off + 4, 4);
        memcpy(&nbytes, b + off + 8, 4);
        off += 12;
        const char *name = lmoe_dtype_get(type) ? lmoe_dtype_get(type)->name : "?";
        if (nbytes) { /* gguf-py's bytes for gauss ++ edge */
            const int64_t n = (int64_t)n_gauss + n_edge;
            const int64_t want = lmoe_dtype_row_size(type, n);
            uint8_t *q = malloc((size_t)want + 1);
            CHECKF(want == (int64_t)nbytes, "%s: golden has %u bytes, expected %lld", name, nbytes, (long long)want);
            CHECKF(lmoe_quantize(type, all, q + 1, n) == want, "%s: lmoe_quantize", name); /* odd address */
            int64_t first = -1;
            for (int64_t i = 0; i < want && want == (int64_t)nbytes && first < 0; i++)
                if (q[1 + i] != b[off + i]) first = i;
            CHECKF(first < 0, "%s: byte %lld differs from gguf-py (block %lld): %02x vs %02x", name, (long long)first,
                   (long long)(first / lmoe_dtype_get(type)->type_size), first >= 0 ? q[1 + first] : 0,
                   first >= 0 ? b[off + first] : 0);
            free(q);
            n_legacy++;
        } else {
            n_k++;
        }
        /* The error on the Gaussian rows, against ggml's. */
        const double rmse = round_trip(type, all, y, n_gauss);
        if (!isnan(ggml_rmse))
            CHECKF(rmse >= 0 && rmse <= RMSE_FACTOR * ggml_rmse, "%s: RMSE %.6f, ggml %.6f (ratio %.3f > %.2f)", name,
                   rmse, ggml_rmse, rmse / ggml_rmse, RMSE_FACTOR);
        if (getenv("LMOE_TEST_VERBOSE"))
            fprintf(stderr, "quantize %-5s rmse %.6f (%.4f of rms) ggml %.6f ratio %.4f\n", name, rmse, rmse / rms,
                    ggml_rmse, rmse / ggml_rmse);
        off += nbytes;
    }
    CHECKF(n_legacy == 5 && n_k == 5 && off == size, "golden: %d legacy, %d K types, %zu of %zu bytes read", n_legacy,
           n_k, off, size);
    free(all);
    free(y);
    free(b);
}

/* ---- Round trips on fresh data ------------------------------------------ */

static const struct {
    uint32_t type;
    double rel_rmse; /* bound on the mean over rows of RMSE / RMS(row) */
} round_trip_bounds[] = {
    /* measured 0.0054 0.0182 0.0364 0.0380 0.0427 0.0721 0.0784 0.0846
     * 0.1525 0.2991 0.0002 0.0017; the bounds leave about 10% */
    {LMOE_DTYPE_Q8_0, 0.006}, {LMOE_DTYPE_Q6_K, 0.020}, {LMOE_DTYPE_Q5_K, 0.040}, {LMOE_DTYPE_Q5_1, 0.042},
    {LMOE_DTYPE_Q5_0, 0.047}, {LMOE_DTYPE_Q4_K, 0.079}, {LMOE_DTYPE_Q4_1, 0.086}, {LMOE_DTYPE_Q4_0, 0.093},
    {LMOE_DTYPE_Q3_K, 0.168}, {LMOE_DTYPE_Q2_K, 0.33},  {LMOE_DTYPE_F16, 0.0003}, {LMOE_DTYPE_BF16, 0.002},
    {LMOE_DTYPE_F32, 0.0},
};

static void check_round_trips(void) {
    enum { N = 64 * LMOE_QK_K };
    float *x = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N);
    for (size_t k = 0; k < sizeof round_trip_bounds / sizeof round_trip_bounds[0]; k++) {
        const uint32_t type = round_trip_bounds[k].type;
        const char *name = lmoe_dtype_get(type)->name;
        CHECK(lmoe_quantize_supported(type));
        /* Gaussian rows with a different scale every 256 values. */
        double rms = 0;
        for (int i = 0; i < N; i++) {
            const float s = (float)pow(10.0, -3.0 + 3.0 * ((i / LMOE_QK_K) % 7) / 6.0);
            x[i] = s * rng_gauss();
        }
        for (int i = 0; i < N; i++) rms += (double)x[i] * x[i];
        rms = sqrt(rms / N);
        /* relative to each block's own scale: normalise the error per row */
        double rel = 0;
        for (int r = 0; r < N / LMOE_QK_K; r++) {
            const float *xr = x + r * LMOE_QK_K;
            double rr = 0;
            for (int i = 0; i < LMOE_QK_K; i++) rr += (double)xr[i] * xr[i];
            const double e = round_trip(type, xr, y, LMOE_QK_K);
            rel += e / sqrt(rr / LMOE_QK_K);
        }
        rel /= N / LMOE_QK_K;
        if (getenv("LMOE_TEST_VERBOSE")) fprintf(stderr, "round trip %-5s relative RMSE %.4f\n", name, rel);
        CHECKF(rel <= round_trip_bounds[k].rel_rmse, "%s: relative RMSE %.5f > %.5f", name, rel,
               round_trip_bounds[k].rel_rmse);
        /* Zero blocks come back exactly; constant ones within the f16
         * rounding of their scale (0.375 itself is exact in f16 and bf16). */
        for (int i = 0; i < LMOE_QK_K; i++) x[i] = 0.0f;
        for (int i = LMOE_QK_K; i < 2 * LMOE_QK_K; i++) x[i] = 0.375f;
        for (int i = 2 * LMOE_QK_K; i < 3 * LMOE_QK_K; i++) x[i] = -0.375f;
        round_trip(type, x, y, 3 * LMOE_QK_K);
        int zero = 1, constant = 1;
        for (int i = 0; i < LMOE_QK_K; i++) zero &= y[i] == 0.0f;
        for (int i = LMOE_QK_K; i < 3 * LMOE_QK_K; i++) constant &= fabsf(y[i] - x[i]) <= 2e-3f * 0.375f;
        CHECKF(zero, "%s: a zero block does not come back as zeros", name);
        CHECKF(constant, "%s: constant blocks are off by more than 0.2%%", name);
        /* Tiny and huge magnitudes stay finite and relative. */
        for (int i = 0; i < LMOE_QK_K; i++) x[i] = 1e-3f * rng_gauss();
        for (int i = LMOE_QK_K; i < 2 * LMOE_QK_K; i++) x[i] = 1e3f * rng_gauss();
        round_trip(type, x, y, 2 * LMOE_QK_K);
        int finite = 1;
        for (int i = 0; i < 2 * LMOE_QK_K; i++)
            finite &= isfinite(y[i]) && fabsf(y[i] - x[i]) <= 0.5f * fabsf(x[i]) + (i < LMOE_QK_K ? 2e-3f : 2e3f);
        CHECKF(finite, "%s: small/large blocks", name);
    }
    /* What there is no quantizer for, and lengths that are not whole blocks. */
    CHECK(!lmoe_quantize_supported(LMOE_DTYPE_Q8_K) && !lmoe_quantize_supported(LMOE_DTYPE_Q8_1));
    CHECK(lmoe_quantize(LMOE_DTYPE_Q8_K, x, y, LMOE_QK_K) == -1);
    CHECK(lmoe_quantize(LMOE_DTYPE_Q4_K, x, y, 32) == -1);
    CHECK(lmoe_quantize(LMOE_DTYPE_Q4_0, x, y, 33) == -1);
    CHECK(lmoe_quantize(LMOE_DTYPE_Q4_0, x, y, 64) == 36);
    free(x);
    free(y);
}

/* ---- `leanmoe quantize`: per-tensor types ----------------------------------- */

/* Compares the types of the file `leanmoe quantize` makes from model under
 * ftype with the lines of types.txt for that pair. */
static void check_types_of(const char *types_txt, const char *model, const char *ftype) {
    char out_path[512], args[2048], out[8192], err[256];
    tmp_path(out_path, sizeof out_path, "types.gguf");
    snprintf(args, sizeof args, "quantize %s/golden/models/%s.gguf %s %s -t 2", LMOE_TEST_DIR, model, out_path, ftype);
    int rc = run_cli(args, out, sizeof out);
    CHECKF(rc == 0, "%s %s: exit %d: %s", model, ftype, rc, out);
    struct gguf_file *f = NULL;
    if (rc || gguf_open(&f, out_path, err, sizeof err)) {
        CHECKF(0, "%s %s: output unreadable", model, ftype);
        remove(out_path);
        return;
    }
    int n_lines = 0, n_same = 0;
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s %s ", model, ftype);
    for (const char *line = types_txt; *line;
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : line + strlen(line)) {
        if (strncmp(line, prefix, strlen(prefix))) continue;
        char tname[256], tt[32];
        if (sscanf(line + strlen(prefix), "%255s %31s", tname, tt) != 2) continue;
        if (!strcmp(tname, "=file")) { /* the whole file: size and FNV-1a 64 */
            unsigned long long want_size = 0, want_hash = 0;
            sscanf(line + strlen(prefix), "=file %llu %llx", &want_size, &want_hash);
            size_t size = 0;
            uint8_t *bytes = test_read_file(out_path, &size);
            uint64_t h = 0xCBF29CE484222325ull;
            for (size_t i = 0; bytes && i < size; i++) h = (h ^ bytes[i]) * 0x100000001B3ull;
            CHECKF(bytes && size == want_size && h == want_hash,
                   "%s %s: file differs from llama-quantize's (%zu bytes, hash %016llx; want %llu, %016llx)", model,
                   ftype, size, (unsigned long long)h, want_size, want_hash);
            free(bytes);
            continue;
        }
        n_lines++;
        const struct gguf_tensor *t = gguf_find_tensor(f, tname);
        const char *got = t && lmoe_dtype_get(t->type) ? lmoe_dtype_get(t->type)->name : "missing";
        if (!strcmp(got, tt))
            n_same++;
        else
            CHECKF(0, "%s %s %s: llama-quantize %s, leanmoe %s", model, ftype, tname, tt, got);
    }
    CHECKF(n_lines > 0 && n_same == n_lines && (uint64_t)n_lines == f->n_tensors, "%s %s: %d of %d types agree", model,
           ftype, n_same, n_lines);
    /* File type and copied metadata. */
    uint32_t ft = 0, qv = 0;
    CHECK(!gguf_get_u32(f, "general.file_type", &ft, err, sizeof err));
    CHECK(!gguf_get_u32(f, "general.quantization_version", &qv, err, sizeof err) && qv == 2);
    static const struct {
        const char *name;
        uint32_t id;
    } ids[] = {{"Q4_0", 2}, {"Q8_0", 7}, {"Q2_K", 10}, {"Q3_K_M", 12}, {"Q4_K_M", 15}, {"Q5_K_M", 17}, {"Q6_K", 18}};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (!strcmp(ids[i].name, ftype))
            CHECKF(ft == ids[i].id, "%s: general.file_type %u, want %u", ftype, ft, ids[i].id);
    struct gguf_str arch;
    CHECK(!gguf_get_str(f, "general.architecture", &arch, err, sizeof err) && arch.len > 0);
    CHECK(gguf_find_kv(f, "tokenizer.ggml.tokens") != NULL);
    gguf_close(f);
    remove(out_path);
}

static void check_quantize_types(void) {
    char *types = test_read_file(LMOE_TEST_DIR "/golden/quantize/types.txt", NULL);
    CHECKF(types != NULL, "golden/quantize/types.txt missing");
    if (!types) return;
    static const char *const models[] = {"ds3-f32", "llama-f32"};
    static const char *const fts[] = {"Q4_0", "Q8_0", "Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K"};
    for (size_t m = 0; m < 2; m++)
        for (size_t k = 0; k < sizeof fts / sizeof fts[0]; k++) check_types_of(types, models[m], fts[k]);
    free(types);
    /* Refusals: one line each, nonzero exit. */
    char out[4096], args[1024], path[512];
    tmp_path(path, sizeof path, "refused.gguf");
    snprintf(args, sizeof args, "quantize %s/golden/models/llama-f32.gguf %s Q7_X", LMOE_TEST_DIR, path);
    CHECKF(run_cli(args, out, sizeof out) == 1 && strstr(out, "unknown quantization type"), "bad type: %s", out);
    snprintf(args, sizeof args, "quantize %s/golden/models/ds3-q8_0.gguf %s Q4_0", LMOE_TEST_DIR, path);
    CHECKF(run_cli(args, out, sizeof out) == 1 && strstr(out, "requantizing"), "requantize: %s", out);
    CHECKF(access(path, F_OK) != 0, "a refused run left %s", path);
}

/* ---- Quantized models still compute the same function -------------------- */

/* Logits of every position of a fixed prompt. Owned by the caller. */
static float *prompt_logits(const char *path, const int32_t *ids, int n, int *n_vocab) {
    lmoe_engine *e;
    lmoe_ctx *c;
    char err[512];
    struct lmoe_engine_options eo = {.n_threads = 2};
    if (lmoe_engine_open(&e, path, &eo, err, sizeof err)) {
        CHECKF(0, "open %s: %s", path, err);
        return NULL;
    }
    struct lmoe_ctx_options co = {.n_ctx = 64, .kv_type = LMOE_KV_F32};
    float *logits = NULL;
    if (!lmoe_ctx_open(&c, e, &co)) {
        *n_vocab = lmoe_engine_n_vocab(e);
        logits = malloc(sizeof(float) * (size_t)n * (size_t)*n_vocab);
        if (lmoe_ctx_eval(c, ids, n, logits, 1)) {
            free(logits);
            logits = NULL;
        }
        lmoe_ctx_close(c);
    }
    lmoe_engine_close(e);
    return logits;
}

static double rms_rel(const float *a, const float *ref, size_t n) {
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
        r += (double)ref[i] * ref[i];
    }
    return r > 0 ? sqrt(d / r) : sqrt(d);
}

static void check_quantized_logits(void) {
    static const int32_t ids[] = {1, 17, 300, 42, 9, 511, 128, 64, 7, 250, 33, 480, 2, 99, 5, 401};
    const int n = (int)(sizeof ids / sizeof ids[0]);
    for (size_t m = 0; m < sizeof logit_cases / sizeof logit_cases[0]; m++) {
        char src[1024];
        snprintf(src, sizeof src, "%s%s", logit_cases[m].shared ? LMOE_SHARED_DIR : LMOE_TEST_DIR,
                 logit_cases[m].model);
        if (access(src, R_OK) != 0) {
            fprintf(stderr, "quantize: %s not found, its logit check skipped\n", src);
            continue;
        }
        int n_vocab = 0, nv2 = 0;
        float *ref = prompt_logits(src, ids, n, &n_vocab);
        CHECK(ref != NULL);
        double err[2] = {-1, -1};
        const char *types[2] = {"Q8_0", "Q4_0"};
        const double tol[2] = {logit_cases[m].q8_0, logit_cases[m].q4_0};
        for (int k = 0; ref && k < 2; k++) {
            char path[512], args[2048], out[8192];
            tmp_path(path, sizeof path, "logits.gguf");
            snprintf(args, sizeof args, "quantize %s %s %s", src, path, types[k]);
            CHECKF(run_cli(args, out, sizeof out) == 0, "%s: %s", types[k], out);
            float *q = prompt_logits(path, ids, n, &nv2);
            if (q && nv2 == n_vocab) err[k] = rms_rel(q, ref, (size_t)n * n_vocab);
            if (getenv("LMOE_TEST_VERBOSE"))
                fprintf(stderr, "%s %s logits: rms diff %.4f of rms\n", src, types[k], err[k]);
            CHECKF(err[k] > 0 && err[k] <= tol[k], "%s %s: logits differ by %.4f of their RMS (bound %.3f)", src,
                   types[k], err[k], tol[k]);
            free(q);
            remove(path);
        }
        CHECKF(err[0] < err[1], "%s: Q8_0 (%.4f) should be closer than Q4_0 (%.4f)", src, err[0], err[1]);
        free(ref);
    }
}

/* ---- `leanmoe perplexity` against logits computed here -------------------- */

/* English words, repeated with variation, for a tokenizer of any vocab. */
static char *make_text(int n_words) {
    static const char *const words[] = {"the",    "cat",   "sat", "on",      "a",     "mat",  "and",
                                        "looked", "at",    "sky", "while",   "birds", "sang", "over",
                                        "quiet",  "river", "in",  "morning", "light", "."};
    char *t = malloc((size_t)n_words * 10 + 2);
    size_t len = 0;
    uint64_t s = 12345;
    for (int i = 0; i < n_words; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        len += (size_t)sprintf(t + len, "%s%s", i ? " " : "", words[(s >> 33) % 20]);
    }
    t[len++] = '\n';
    t[len] = 0;
    return t;
}

/* Parses the number after `key` in s (last occurrence); NAN if absent. */
static double number_after(const char *s, const char *key) {
    const char *p = NULL;
    for (const char *q = strstr(s, key); q; q = strstr(q + 1, key)) p = q;
    return p ? strtod(p + strlen(key), NULL) : NAN;
}

/* The perplexity llama-perplexity defines, computed from whole-chunk
 * logits: BOS over each chunk's first token when the model adds one, the
 * second half of every chunk scored. */
static double expected_ppl(const char *model, const char *text, int n_ctx, int max_chunks, int *n_chunks) {
    lmoe_engine *e;
    char err[512];
    struct lmoe_engine_options eo = {.n_threads = 2};
    if (lmoe_engine_open(&e, model, &eo, err, sizeof err)) return NAN;
    int32_t *ids = NULL, *bos = NULL;
    int n = 0, nb = 0;
    size_t len = strlen(text);
    if (len && text[len - 1] == '\n') len--;
    lmoe_tokenize(e, text, len, 1, 0, &ids, &n, err, sizeof err);
    lmoe_tokenize(e, "", 0, 1, 0, &bos, &nb, err, sizeof err);
    const int n_vocab = lmoe_engine_n_vocab(e);
    int chunks = n / n_ctx;
    if (max_chunks > 0 && chunks > max_chunks) chunks = max_chunks;
    *n_chunks = chunks;
    struct lmoe_ctx_options co = {.n_ctx = n_ctx, .kv_type = LMOE_KV_F16};
    lmoe_ctx *c;
    double nll = 0;
    long count = 0;
    float *logits = malloc(sizeof(float) * (size_t)n_ctx * (size_t)n_vocab);
    int32_t *chunk = malloc(sizeof(int32_t) * (size_t)n_ctx);
    if (ids && logits && chunk && !lmoe_ctx_open(&c, e, &co)) {
        for (int k = 0; k < chunks; k++) {
            memcpy(chunk, ids + (size_t)k * n_ctx, sizeof(int32_t) * (size_t)n_ctx);
            if (nb == 1) chunk[0] = bos[0];
            lmoe_ctx_reset(c);
            if (lmoe_ctx_eval(c, chunk, n_ctx, logits, 1)) break;
            for (int p = n_ctx / 2; p < n_ctx - 1; p++) {
                const float *l = logits + (size_t)p * n_vocab;
                double mx = l[0], sum = 0;
                for (int v = 1; v < n_vocab; v++) mx = fmax(mx, l[v]);
                for (int v = 0; v < n_vocab; v++) sum += exp(l[v] - mx);
                nll += -(l[ids[(size_t)k * n_ctx + p + 1]] - mx - log(sum));
                count++;
            }
        }
        lmoe_ctx_close(c);
    }
    free(chunk);
    free(logits);
    free(ids);
    free(bos);
    lmoe_engine_close(e);
    return count ? exp(nll / count) : NAN;
}

static void check_perplexity(void) {
    const char *model = LMOE_TEST_DIR "/golden/models/llama-f32.gguf";
    char text_path[512], base_path[512], q8_path[512], args[4096], out[65536];
    tmp_path(text_path, sizeof text_path, "text.txt");
    tmp_path(base_path, sizeof base_path, "base.bin");
    tmp_path(q8_path, sizeof q8_path, "q8.gguf");
    char *text = make_text(700);
    FILE *f = fopen(text_path, "w");
    fputs(text, f);
    fclose(f);
    const int n_ctx = 16;
    int chunks = 0;
    const double want = expected_ppl(model, text, n_ctx, 0, &chunks);
    snprintf(args, sizeof args, "perplexity -m %s -f %s -c %d -t 2", model, text_path, n_ctx);
    int rc = run_cli(args, out, sizeof out);
    const double got = number_after(out, "Final estimate: PPL = ");
    char tag[32];
    snprintf(tag, sizeof tag, "[%d]", chunks);
    CHECKF(rc == 0 && chunks >= 15 && strstr(out, tag), "perplexity: exit %d, %d chunks: %.300s", rc, chunks, out);
    CHECKF(fabs(got - want) <= 1e-3 * want, "perplexity: printed %.4f, computed here %.4f", got, want);
    /* --chunks limits the chunks scored */
    int two = 0;
    const double want2 = expected_ppl(model, text, n_ctx, 2, &two);
    snprintf(args, sizeof args, "perplexity -m %s -f %s -c %d --chunks 2", model, text_path, n_ctx);
    rc = run_cli(args, out, sizeof out);
    const double got2 = number_after(out, "Final estimate: PPL = ");
    CHECKF(rc == 0 && !strstr(out, "[3]") && fabs(got2 - want2) <= 1e-3 * want2, "--chunks 2: %.4f vs %.4f: %.200s",
           got2, want2, out);
    /* Too little text for the context: one line, exit 1. */
    snprintf(args, sizeof args, "perplexity -m %s -f %s -c 4096", model, text_path);
    CHECKF(run_cli(args, out, sizeof out) == 1 && strstr(out, "needs at least"), "short text: %s", out);

    /* KL: save the base, then the model against itself, then a Q8_0 copy. */
    snprintf(args, sizeof args, "perplexity -m %s -f %s -c %d --kl-base %s --save-logits", model, text_path, n_ctx,
             base_path);
    rc = run_cli(args, out, sizeof out);
    CHECKF(rc == 0 && fabs(number_after(out, "Final estimate: PPL = ") - want) <= 1e-3 * want, "save: %.300s", out);
    size_t size = 0;
    uint8_t *base = test_read_file(base_path, &size);
    const size_t n_vocab = 512, nv = 2 * ((n_vocab + 1) / 2) + 4, scored = n_ctx - 1 - n_ctx / 2;
    const size_t want_size = 20 + 4 * (size_t)chunks * n_ctx + 2 * nv * scored * (size_t)chunks;
    CHECKF(base && size == want_size && !memcmp(base, "_logits_", 8), "base file: %zu bytes, want %zu", size,
           want_size);
    free(base);
    snprintf(args, sizeof args, "perplexity -m %s --kl-base %s", model, base_path);
    rc = run_cli(args, out, sizeof out);
    const double kl_self = number_after(out, "Mean    KLD: "), top_self = number_after(out, "Same top p: ");
    const double ppl_q = number_after(out, "Mean PPL(Q)                   : ");
    CHECKF(rc == 0 && fabs(kl_self) < 1e-4 && top_self == 100.0 && fabs(ppl_q - want) <= 1e-3 * want,
           "KL against itself: %g, same top %g%%, PPL %g: %.300s", kl_self, top_self, ppl_q, out);
    snprintf(args, sizeof args, "quantize %s %s Q8_0", model, q8_path);
    CHECK(run_cli(args, out, sizeof out) == 0);
    snprintf(args, sizeof args, "perplexity -m %s --kl-base %s -t 2", q8_path, base_path);
    rc = run_cli(args, out, sizeof out);
    const double kl_q8 = number_after(out, "Mean    KLD: "), top_q8 = number_after(out, "Same top p: ");
    if (getenv("LMOE_TEST_VERBOSE")) fprintf(stderr, "llama-f32 Q8_0: KLD %g, same top %g%%\n", kl_q8, top_q8);
    CHECKF(rc == 0 && kl_q8 > 1e-6 && kl_q8 < 0.01 && top_q8 > 90.0, "KL of Q8_0: %g, same top %g%%", kl_q8, top_q8);
    /* A file that is not a base, and a base for another vocabulary. */
    snprintf(args, sizeof args, "perplexity -m %s --kl-base %s", model, text_path);
    CHECKF(run_cli(args, out, sizeof out) == 1 && strstr(out, "not a file of log-probabilities"), "bad base: %s", out);
    base = test_read_file(base_path, &size);
    if (base && size > 16) {
        const int32_t other_vocab = 1000;
        memcpy(base + 12, &other_vocab, 4);
        f = fopen(base_path, "wb");
        fwrite(base, 1, size, f);
        fclose(f);
    }
    free(base);
    snprintf(args, sizeof args, "perplexity -m %s --kl-base %s", model, base_path);
    rc = run_cli(args, out, sizeof out);
    CHECKF(rc == 1 && strstr(out, "n_vocab"), "vocab mismatch: exit %d: %s", rc, out);
    remove(text_path);
    remove(base_path);
    remove(q8_path);
    free(text);
}

void test_quantize(void) {
    check_golden();
    check_round_trips();
    check_quantize_types();
    check_quantized_logits();
    check_perplexity();
}
