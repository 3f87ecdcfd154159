/*
 * test_hf.c - checkpoints opened as published: safetensors folders.
 *
 * tests/golden/hf/MANIFEST.txt lists tiny sharded checkpoints (F32, BF16
 * and DeepSeek-style FP8 of four architectures) and transformers' logits
 * for each (tools/make_hf_goldens.py). Checked here:
 *   - the logits of every checkpoint with the reference kernels, prompt and
 *     decode paths, against 1e-3 as the GGUF goldens are; greedy tokens;
 *     the fast kernels close in distribution and independent of threads;
 *   - `leanmoe convert` output loads and gives the same logits; a Q4_K_M
 *     convert picks the tensor types `quantize Q4_K_M` picks; an SPM-style
 *     tokenizer.json is written as a "llama" vocabulary that encodes its
 *     cases to HF's ids;
 *   - FP8: conversions of all 256 codes, the fast kernels against the
 *     scalar reference (partial blocks, NaN codes);
 *   - the safetensors reader on hostile headers, and bad folders (missing
 *     shard, truncated header, overlapping or out-of-range offsets, a
 *     shape that disagrees with config.json, an unknown architecture):
 *     one error line each, and the fuzz seeds replayed.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "format/gguf.h"
#include "format/safetensors.h"
#include "kernels/fp8.h"
#include "leanmoe.h"
#include "quant/quant.h"
#include "tokenizer.h"
#include "golden_ref.h"
#include "test.h"

#ifndef LMOE_BUILD_DIR
#define LMOE_BUILD_DIR "build"
#endif

#define HF_DIR LMOE_TEST_DIR "/golden/hf"

static lmoe_engine *open_model(const char *path, const char *isa, int threads) {
    char err[512];
    struct lmoe_engine_options eo = {.n_threads = threads, .isa = isa};
    lmoe_engine *e;
    if (lmoe_engine_open(&e, path, &eo, err, sizeof err)) {
        CHECKF(0, "%s: %s", path, err);
        return NULL;
    }
    return e;
}

/* The reference-kernel logits of model `path` against r: prompt and decode
 * paths within tol, greedy continuation exact. */
static void check_ref_logits(const char *path, const struct ref *r, double tol, int greedy) {
    lmoe_engine *e = open_model(path, "ref", 2);
    if (!e) return;
    CHECKF(lmoe_engine_n_vocab(e) == (int)r->n_vocab, "%s: n_vocab %d, reference %u", path, lmoe_engine_n_vocab(e),
           r->n_vocab);
    size_t n = (size_t)r->n_ids * r->n_vocab;
    float *batch = malloc(n * sizeof(float)), *dec = malloc(n * sizeof(float));
    lmoe_ctx *c = NULL;
    CHECK(run_prompt(e, LMOE_KV_F32, r, 0, batch, NULL) == 0);
    CHECK(run_prompt(e, LMOE_KV_F32, r, 1, dec, &c) == 0);
    double eb = rel_err(batch, r->logits, n), ed = rel_err(dec, r->logits, n);
    CHECKF(eb <= tol, "%s: prompt path rel err %.3g > %.3g", path, eb, tol);
    CHECKF(ed <= tol, "%s: decode path rel err %.3g > %.3g", path, ed, tol);
    if (greedy && c) {
        float *row = malloc(r->n_vocab * sizeof(float));
        int32_t tok = argmax(dec + (size_t)(r->n_ids - 1) * r->n_vocab, (int)r->n_vocab);
        uint32_t same = 0;
        for (uint32_t i = 0; i < r->n_gen; i++) {
            if (tok != r->gen[i]) break;
            same++;
            if (i + 1 < r->n_gen && lmoe_ctx_eval(c, &tok, 1, row, 0)) break;
            tok = argmax(row, (int)r->n_vocab);
        }
        CHECKF(same == r->n_gen, "%s: greedy continuation matches %u of %u tokens", path, same, r->n_gen);
        free(row);
    }
    if (getenv("LMOE_TEST_VERBOSE")) fprintf(stderr, "  %-40s ref: prompt %.1e decode %.1e\n", path, eb, ed);
    lmoe_ctx_close(c);
    lmoe_engine_close(e);
    free(batch);
    free(dec);
}

/* The fast kernels: close in distribution, the same bits for 1 and 2
 * threads. */
static void check_fast_logits(const char *path, const struct ref *r) {
    size_t n = (size_t)r->n_ids * r->n_vocab;
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    lmoe_engine *e;
    if ((e = open_model(path, NULL, 2))) {
        CHECK(run_prompt(e, LMOE_KV_F32, r, 0, a, NULL) == 0);
        double kl, top1;
        kl_top1(a, r->logits, (int)r->n_ids, (int)r->n_vocab, &kl, &top1);
        CHECKF(kl <= FAST_MAX_MEDIAN_KL && top1 >= FAST_MIN_TOP1, "%s: fast kernels: median KL %.3g, top-1 %.0f%%",
               path, kl, 100 * top1);
        /* decode steps (T = 1, the fused FP8 dot) agree with the prompt */
        CHECK(run_prompt(e, LMOE_KV_F32, r, 1, b, NULL) == 0);
        kl_top1(b, r->logits, (int)r->n_ids, (int)r->n_vocab, &kl, &top1);
        CHECKF(kl <= FAST_MAX_MEDIAN_KL && top1 >= FAST_MIN_TOP1, "%s: fast decode: median KL %.3g, top-1 %.0f%%",
               path, kl, 100 * top1);
        lmoe_engine_close(e);
    }
    if ((e = open_model(path, NULL, 1))) {
        CHECK(run_prompt(e, LMOE_KV_F32, r, 0, b, NULL) == 0);
        CHECKF(!memcmp(a, b, n * sizeof(float)), "%s: 1 and 2 threads differ", path);
        lmoe_engine_close(e);
    }
    free(a);
    free(b);
}

/* Runs `leanmoe-san ARGS` with stderr into errbuf; returns the exit status. */
static int run_cli(const char *args, char *errbuf, size_t errlen) {
    char cmd[2048], e[64];
    snprintf(e, sizeof e, "/tmp/lmoe_hf_err_%d", (int)getpid());
    snprintf(cmd, sizeof cmd, "%s/leanmoe-san %s >/dev/null 2>%s", LMOE_BUILD_DIR, args, e);
    int st = system(cmd);
    size_t n;
    char *b = test_read_file(e, &n);
    snprintf(errbuf, errlen, "%s", b ? b : "");
    free(b);
    remove(e);
    return st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

/* `leanmoe convert DIR OUT --type T` loads in leanmoe with the same
 * logits (within tol for a lossless type, in distribution for Q8_0). */
static void check_convert(const char *dir, const struct ref *r, double tol) {
    static const char *const types[] = {"f32", "bf16", "q8_0"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        /* bf16 of an f32 model rounds weights: only F32 is exact. */
        if (i > 0 && !strstr(dir, "-fp8") && !strstr(dir, "-bf16")) continue;
        if (i == 1 && strstr(dir, "-fp8")) continue;
        char out[512], args[2048], err[1024];
        snprintf(out, sizeof out, "%s/hf_convert_%d.gguf", LMOE_BUILD_DIR, (int)getpid());
        snprintf(args, sizeof args, "convert %s %s --type %s", dir, out, types[i]);
        int rc = run_cli(args, err, sizeof err);
        CHECKF(rc == 0, "leanmoe %s: exit %d: %s", args, rc, err);
        if (rc) continue;
        if (!strcmp(types[i], "q8_0")) check_fast_logits(out, r);
        else check_ref_logits(out, r, tol, 1);
        remove(out);
    }
}

static void check_manifest(void) {
    FILE *f = fopen(HF_DIR "/MANIFEST.txt", "r");
    CHECKF(f != NULL, "cannot open %s/MANIFEST.txt", HF_DIR);
    if (!f) return;
    char line[1024];
    int cases = 0;
    while (fgets(line, sizeof line, f)) {
        char dir[256], refname[256], path[1024], rpath[1024];
        double tol;
        int greedy;
        if (line[0] == '#' || sscanf(line, "%255s %255s %lf %d", dir, refname, &tol, &greedy) < 4) continue;
        snprintf(path, sizeof path, "%s/%s", HF_DIR, dir);
        snprintf(rpath, sizeof rpath, "%s/%s", HF_DIR, refname);
        struct ref r;
        int ok = ref_load(rpath, &r) == 0;
        CHECKF(ok, "%s: cannot read reference", rpath);
        if (!ok) continue;
        check_ref_logits(path, &r, tol, greedy);
        check_fast_logits(path, &r);
        check_convert(path, &r, tol);
        free(r.buf);
        cases++;
    }
    fclose(f);
    CHECKF(cases >= 12, "only %d hf cases in the manifest", cases);
}

/* ---- FP8 numbers and kernels ------------------------------------------- */

static void check_fp8_convert(void) {
    int bad = 0;
    for (int b = 0; b < 256; b++) {
        int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
        float want = e == 0 ? ldexpf((float)m, -9) : ldexpf(1.0f + m / 8.0f, e - 7);
        if (s) want = -want;
        float got = lmoe_f8_e4m3_to_f32((uint8_t)b);
        if ((b & 0x7f) == 0x7f) bad += !isnan(got);
        else bad += got != want || signbit(got) != signbit(want) || lmoe_f32_to_f8_e4m3(got) != b;
        int e5 = (b >> 2) & 31, m5 = b & 3;
        float w5 = e5 == 0 ? ldexpf((float)m5, -16) : e5 == 31 ? (m5 ? NAN : INFINITY) : ldexpf(1.0f + m5 / 4.0f, e5 - 15);
        if (s) w5 = -w5;
        float g5 = lmoe_f8_e5m2_to_f32((uint8_t)b);
        bad += isnan(w5) ? !isnan(g5) : g5 != w5;
    }
    CHECKF(bad == 0, "%d fp8 codes convert wrongly", bad);
    /* Rounding: ties to even, saturation, subnormals. */
    CHECK(lmoe_f32_to_f8_e4m3(1000.0f) == 0x7e && lmoe_f32_to_f8_e4m3(-1000.0f) == 0xfe);
    CHECK(lmoe_f32_to_f8_e4m3(1.0625f) == 0x38);          /* tie between 1 and 1.125: even (1) */
    CHECK(lmoe_f32_to_f8_e4m3(1.1875f) == 0x3a);          /* tie between 1.125 and 1.25: even (1.25) */
    CHECK(lmoe_f32_to_f8_e4m3(ldexpf(1.5f, -9)) == 0x02); /* 1.5 units: even (2) */
    CHECK(lmoe_f32_to_f8_e4m3(ldexpf(7.5f, -9)) == 0x08); /* rounds up into the normals */
    CHECK(lmoe_f32_to_f8_e4m3(NAN) == 0x7f);
}

static uint32_t rng_u32(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*s >> 33);
}

static void check_fp8_kernels(void) {
    const struct lmoe_fp8_kernels *fast = lmoe_fp8_kernels_best(), *ref = &lmoe_fp8_kernels_ref;
    static const int ns[] = {1, 15, 16, 17, 31, 32, 33, 127, 128, 129, 200, 256, 300, 1000};
    uint64_t seed = 42;
    int bad_row = 0, bad_dot = 0;
    double worst = 0;
    for (int nan_case = 0; nan_case < 2; nan_case++)
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            int n = ns[k], nb = (n + 127) / 128;
            uint8_t w[1000];
            float x[1000], scale[8], a[1000], b[1000];
            for (int i = 0; i < n; i++) {
                w[i] = (uint8_t)rng_u32(&seed);
                if ((w[i] & 0x7f) == 0x7f) w[i] ^= 1; /* no NaN unless asked */
                x[i] = (float)((int)(rng_u32(&seed) % 2001) - 1000) / 500.0f;
            }
            if (nan_case) w[n / 2] = 0xff;
            for (int i = 0; i < nb; i++) scale[i] = ldexpf(1.0f + (float)(rng_u32(&seed) % 100) / 100.0f, -8);
            for (int e5 = 0; e5 < 2; e5++) {
                (e5 ? fast->row_e5m2 : fast->row_e4m3)(w, scale, a, n);
                (e5 ? ref->row_e5m2 : ref->row_e4m3)(w, scale, b, n);
                for (int i = 0; i < n; i++)
                    bad_row += !(a[i] == b[i] || (isnan(a[i]) && isnan(b[i])));
                /* E5M2 codes include inf/NaN; only finite rows compare. */
                int finite = 1;
                for (int i = 0; i < n; i++) finite &= isfinite(b[i]);
                float fd = (e5 ? fast->dot_e5m2 : fast->dot_e4m3)(w, scale, x, n);
                float rd = (e5 ? ref->dot_e5m2 : ref->dot_e4m3)(w, scale, x, n);
                if (!finite) {
                    bad_dot += isfinite(fd) != isfinite(rd);
                    continue;
                }
                double mag = 0;
                for (int i = 0; i < n; i++) mag += fabs((double)b[i] * x[i]);
                double err = fabs((double)fd - rd) / (mag > 0 ? mag : 1);
                if (err > worst) worst = err;
                bad_dot += err > 1e-5;
            }
        }
    /* Four rows at once give each row's dot bit for bit. */
    int bad4 = 0;
    for (size_t k = 0; fast->dot4_e4m3 && k < sizeof ns / sizeof ns[0]; k++) {
        int n = ns[k];
        static uint8_t w4[4 * 1000];
        float x[1000], scale[8], y4[4];
        for (int i = 0; i < 4 * n; i++) w4[i] = (uint8_t)(rng_u32(&seed) & 0xbf);
        for (int i = 0; i < n; i++) x[i] = (float)((int)(rng_u32(&seed) % 2001) - 1000) / 500.0f;
        for (int i = 0; i < 8; i++) scale[i] = 0.01f * (float)(i + 1);
        for (int e5 = 0; e5 < 2; e5++) {
            (e5 ? fast->dot4_e5m2 : fast->dot4_e4m3)(w4, (size_t)n, scale, x, n, y4);
            for (int r = 0; r < 4; r++)
                bad4 += y4[r] != (e5 ? fast->dot_e5m2 : fast->dot_e4m3)(w4 + (size_t)r * n, scale, x, n);
        }
    }
    CHECKF(bad4 == 0, "fp8 %s dot4: %d rows differ from dot", fast->name, bad4);

    /* Several tokens: gemm4 against the reference row times x, summed in
     * double; edge column counts, 1..4 rows, token counts across a group
     * of four, and a NaN code (the row's dots NaN, the others not). */
    int bad_g = 0, ran_g = 0;
    double worst_g = 0;
    for (size_t k = 0; fast->gemm4_e4m3 && k < sizeof ns / sizeof ns[0]; k++)
        for (int nr = 1; nr <= 4; nr++)
            for (int T = 1; T <= 9; T += 2) {
                int n = ns[k];
                static uint8_t wg[4 * 1000];
                static float xg[9 * 1001], yg[9 * 5], rowg[1000];
                float scale[4][8];
                const uint8_t *wp[4];
                const float *sp[4];
                for (int i = 0; i < 4 * n; i++) {
                    wg[i] = (uint8_t)rng_u32(&seed);
                    if ((wg[i] & 0x7f) == 0x7f) wg[i] ^= 1;
                }
                int nan_row = (k + (size_t)T) % 3 == 0 ? nr - 1 : -1;
                if (nan_row >= 0) wg[(size_t)nan_row * n + n / 2] = 0x7f;
                for (int i = 0; i < T * 1001; i++) xg[i] = (float)((int)(rng_u32(&seed) % 2001) - 1000) / 500.0f;
                for (int r = 0; r < 4; r++) {
                    for (int i = 0; i < 8; i++) scale[r][i] = ldexpf(1.0f + (float)(rng_u32(&seed) % 100) / 100.0f, -8);
                    wp[r] = wg + (size_t)r * n;
                    sp[r] = scale[r];
                }
                for (int e5 = 0; e5 < 2; e5++) {
                    for (int i = 0; i < 9 * 5; i++) yg[i] = -12345.0f;
                    (e5 ? fast->gemm4_e5m2 : fast->gemm4_e4m3)(wp, sp, nr, xg, 1001, T, n, yg, 5);
                    ran_g++;
                    for (int t = 0; t < T; t++) {
                        bad_g += yg[t * 5 + nr] != -12345.0f; /* nothing past nr rows */
                        for (int r = 0; r < nr; r++) {
                            (e5 ? ref->row_e5m2 : ref->row_e4m3)(wp[r], sp[r], rowg, n);
                            double sum = 0, mag = 0;
                            for (int i = 0; i < n; i++) {
                                sum += (double)rowg[i] * xg[t * 1001 + i];
                                mag += fabs((double)rowg[i] * xg[t * 1001 + i]);
                            }
                            float got = yg[t * 5 + r];
                            if (isnan(sum) || isinf(sum) || !isfinite(mag)) {
                                bad_g += isfinite(got);
                                continue;
                            }
                            double err = fabs((double)got - sum) / (mag > 0 ? mag : 1);
                            if (err > worst_g) worst_g = err;
                            bad_g += !(err <= 1e-5);
                        }
                    }
                }
            }
    if (fast->gemm4_e4m3) {
        CHECKF(ran_g > 0 && bad_g == 0, "fp8 %s gemm4: %d of %d products differ from the reference (worst rel %.3g)",
               fast->name, bad_g, ran_g, worst_g);
    }
    CHECKF(bad_row == 0, "fp8 %s rows: %d elements differ from the reference", fast->name, bad_row);
    CHECKF(bad_dot == 0, "fp8 %s dots: %d differ from the reference (worst rel %.3g)", fast->name, bad_dot, worst);
}

/* ---- The safetensors reader on crafted headers -------------------------- */

/* A file: 8-byte length, the header, then `data` bytes of zeros. */
static uint8_t *make_st(const char *header, size_t data, size_t *size) {
    size_t n = strlen(header);
    *size = 8 + n + data;
    uint8_t *b = calloc(1, *size);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(b + 8, header, n);
    return b;
}

/* Parses a crafted file; returns the code, message in err. */
static int parse_st(const char *header, size_t data, char *err, size_t errlen) {
    size_t size;
    uint8_t *b = make_st(header, data, &size);
    struct st_file *f;
    err[0] = 0;
    int rc = st_parse(&f, b, size, "t.safetensors", err, errlen);
    if (!rc) st_close(f);
    free(b);
    return rc;
}

static void check_st_parser(void) {
    char err[512];
    int rc = parse_st("{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],"
                      "\"data_offsets\":[0,24]},\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]}}",
                      32, err, sizeof err);
    CHECKF(rc == 0, "good file: %s", err);
    static const struct {
        const char *header, *expect;
        size_t data;
    } bad[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", "data ends at byte 24", 16},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", "need 24", 32},
        {"{\"a\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", "need 12", 32},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],"
         "\"data_offsets\":[4,12]}}", "overlap", 16},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", "bad data_offsets", 16},
        {"{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", "unknown dtype", 16},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", "not a size", 16},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4611686018427387904],\"data_offsets\":[0,8]}}",
         "need", 16},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
         "\"data_offsets\":[8,16]}}", "JSON", 16},
        {"[1,2]", "not an object", 0},
        {"{\"a\":", "JSON", 0},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", "data_offsets", 16},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rc = parse_st(bad[i].header, bad[i].data, err, sizeof err);
        CHECKF(rc == LMOE_ERR_FORMAT && strstr(err, bad[i].expect) && !strchr(err, '\n'), "case %zu: rc %d '%s'", i,
               rc, err);
    }
    /* A header length past the end, and a file too short for one. */
    uint8_t b[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};
    struct st_file *f;
    rc = st_parse(&f, b, sizeof b, "t", err, sizeof err);
    CHECKF(rc == LMOE_ERR_FORMAT && strstr(err, "past the end"), "long header: '%s'", err);
    rc = st_parse(&f, b, 4, "t", err, sizeof err);
    CHECKF(rc == LMOE_ERR_FORMAT && strstr(err, "too short"), "short file: '%s'", err);
}

/* ---- Bad folders ------------------------------------------------------- */

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, n, f);
        fclose(f);
    }
}

/* A scratch folder holding symlinks to src's files, config.json replaced
 * (if cfg_from/cfg_to are given, by the original with that text swapped). */
static void make_folder(const char *dst, const char *src, const char *skip, const char *cfg_from,
                        const char *cfg_to) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && for f in '%s'/*; do ln -s \"$f\" '%s'/; done", dst,
             dst, src, dst);
    CHECK(system(cmd) == 0);
    char path[1024];
    if (skip) {
        snprintf(path, sizeof path, "%s/%s", dst, skip);
        remove(path);
    }
    if (cfg_from) {
        char spath[1024];
        snprintf(spath, sizeof spath, "%s/config.json", src);
        size_t n;
        char *cfg = test_read_file(spath, &n);
        char *at = cfg ? strstr(cfg, cfg_from) : NULL;
        CHECKF(at != NULL, "config of %s lacks '%s'", src, cfg_from);
        if (!at) { free(cfg); return; }
        size_t out_n = n - strlen(cfg_from) + strlen(cfg_to);
        char *out = malloc(out_n + 1);
        memcpy(out, cfg, (size_t)(at - cfg));
        strcpy(out + (at - cfg), cfg_to);
        strcat(out, at + strlen(cfg_from));
        snprintf(path, sizeof path, "%s/config.json", dst);
        remove(path);
        write_file(path, out, strlen(out));
        free(out);
        free(cfg);
    }
}

/* Opening dir fails with code and a one-line message containing expect. */
static void expect_open_error(const char *dir, int code, const char *expect, const char *what) {
    char err[1024] = "";
    lmoe_engine *e = NULL;
    int rc = lmoe_engine_open(&e, dir, NULL, err, sizeof err);
    CHECKF(rc == code && !e && strstr(err, expect) && !strchr(err, '\n'), "%s: rc %d (want %d) '%s'", what, rc, code,
           err);
    lmoe_engine_close(e);
    /* The program says the same in one line and exits nonzero. */
    char args[1200], cli_err[1024];
    snprintf(args, sizeof args, "info -m %s", dir);
    int st = run_cli(args, cli_err, sizeof cli_err);
    const char *nl = strchr(cli_err, '\n');
    CHECKF(st == 1 && nl && !nl[1] && strstr(cli_err, expect), "%s: leanmoe info: exit %d '%s'", what, st, cli_err);
}

static void check_bad_folders(void) {
    char dir[512], path[1024];
    const char *src = HF_DIR "/ds3-f32";
    snprintf(dir, sizeof dir, "%s/hf_bad_%d", LMOE_BUILD_DIR, (int)getpid());
    make_folder(dir, src, "model-00002-of-00003.safetensors", NULL, NULL);
    expect_open_error(dir, LMOE_ERR_IO, "model-00002-of-00003.safetensors", "missing shard");
    make_folder(dir, src, NULL, "DeepseekV3ForCausalLM", "FooForCausalLM");
    expect_open_error(dir, LMOE_ERR_UNSUPPORTED, "FooForCausalLM", "unknown architecture");
    make_folder(dir, src, NULL, "\"kv_lora_rank\": 32", "\"kv_lora_rank\": 24");
    expect_open_error(dir, LMOE_ERR_FORMAT, "attn_kv_a_mqa", "shape disagrees with config.json");
    make_folder(dir, src, NULL, "\"hidden_size\": 64", "\"hidden_size\": \"64\"");
    expect_open_error(dir, LMOE_ERR_FORMAT, "hidden_size", "mistyped config field");
    make_folder(dir, src, "config.json", NULL, NULL);
    expect_open_error(dir, LMOE_ERR_IO, "config.json", "no config.json");
    /* A shard replaced by crafted files. */
    static const struct {
        const char *header, *expect, *what;
        size_t data;
    } shards[] = {
        {NULL, "past the end", "header length past the end", 0},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},\"y\":{\"dtype\":\"F32\",\"shape\":[4],"
         "\"data_offsets\":[8,24]}}", "overlap", "overlapping offsets", 24},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", "data ends", "out-of-range offsets", 8},
        {"{\"x\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,16]}}", "need 8", "dtype disagrees with size",
         16},
    };
    for (size_t i = 0; i < sizeof shards / sizeof shards[0]; i++) {
        make_folder(dir, src, "model-00002-of-00003.safetensors", NULL, NULL);
        snprintf(path, sizeof path, "%s/model-00002-of-00003.safetensors", dir);
        size_t n;
        uint8_t *b;
        if (shards[i].header) {
            b = make_st(shards[i].header, shards[i].data, &n);
        } else {
            n = 64;
            b = calloc(1, n);
            b[0] = 0x00, b[1] = 0x10; /* 4096 > 56 */
        }
        write_file(path, b, n);
        free(b);
        expect_open_error(dir, LMOE_ERR_FORMAT, shards[i].expect, shards[i].what);
    }
    /* A dtype the config's quantization cannot compute: an FP8 model whose
     * scales do not fit the weight. */
    make_folder(dir, HF_DIR "/ds3-fp8", NULL, "\"weight_block_size\": [\n      128,\n      128\n    ]",
                "\"weight_block_size\": [64, 64]");
    expect_open_error(dir, LMOE_ERR_UNSUPPORTED, "weight_block_size", "other fp8 block size");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

/* A folder's tokenizer: the one with tokenizer.json encodes text; the one
 * without loads its weights and reports no vocabulary only for text. */
static void check_folder_text(void) {
    char err[512];
    lmoe_engine *e;
    if (lmoe_engine_open(&e, HF_DIR "/llama-fp8", NULL, err, sizeof err) == 0) {
        int32_t *ids = NULL;
        int n = 0;
        int rc = lmoe_tokenize(e, "hi", 2, 0, 0, &ids, &n, err, sizeof err);
        CHECKF(rc == LMOE_ERR_UNSUPPORTED, "tokenize without a vocabulary: %d '%s'", rc, err);
        free(ids);
        lmoe_engine_close(e);
    } else {
        CHECKF(0, "llama-fp8: %s", err);
    }
    if (lmoe_engine_open(&e, HF_DIR "/llama-f32", NULL, err, sizeof err) == 0) {
        int32_t *ids = NULL;
        int n = 0;
        int rc = lmoe_tokenize(e, "First Citizen:", 14, 0, 0, &ids, &n, err, sizeof err);
        CHECKF(rc == 0 && n > 0 && n < 14, "tokenize with tokenizer.json: %d n=%d '%s'", rc, n, err);
        free(ids);
        lmoe_engine_close(e);
    } else {
        CHECKF(0, "llama-f32: %s", err);
    }
}

/* The fuzz seeds parse or fail cleanly (ASan watches). */
static void check_fuzz_seeds(void) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "ls %s/fuzz/safetensors_seeds 2>/dev/null", LMOE_TEST_DIR);
    FILE *p = popen(cmd, "r");
    char name[512];
    int n = 0;
    while (p && fgets(name, sizeof name, p)) {
        name[strcspn(name, "\n")] = 0;
        char path[1024], err[256];
        snprintf(path, sizeof path, "%s/fuzz/safetensors_seeds/%s", LMOE_TEST_DIR, name);
        size_t size;
        uint8_t *b = test_read_file(path, &size);
        struct st_file *f;
        if (b && !st_parse(&f, b, size, name, err, sizeof err)) st_close(f);
        free(b);
        n++;
    }
    if (p) pclose(p);
    CHECKF(n >= 3, "only %d safetensors fuzz seeds", n);
}

/* ---- convert: llama-quantize mixes and a SentencePiece-style vocabulary -- */

/* `convert --type q4_k_m` straight from the folder gives every tensor the
 * type that `convert --type f32` then `quantize Q4_K_M` gives it (the two
 * share quant/mix.c), and the file loads. */
static void check_convert_mix(void) {
    const char *dir = HF_DIR "/ds3-f32";
    char direct[512], f32[512], quant[512], args[2048], err[1024];
    snprintf(direct, sizeof direct, "%s/hf_mix_direct_%d.gguf", LMOE_BUILD_DIR, (int)getpid());
    snprintf(f32, sizeof f32, "%s/hf_mix_f32_%d.gguf", LMOE_BUILD_DIR, (int)getpid());
    snprintf(quant, sizeof quant, "%s/hf_mix_quant_%d.gguf", LMOE_BUILD_DIR, (int)getpid());
    struct lmoe_convert_options o = {.type = "Q4_K_M"};
    struct lmoe_convert_report rep;
    CHECKF(lmoe_convert(dir, direct, &o, &rep, err, sizeof err) == 0, "convert q4_k_m: %s", err);
    CHECK(rep.n_tensors > 0 && rep.n_tokens == 320 && !strcmp(rep.type, "Q4_K_M"));
    o.type = "f32";
    CHECKF(lmoe_convert(dir, f32, &o, NULL, err, sizeof err) == 0, "convert f32: %s", err);
    snprintf(args, sizeof args, "quantize %s %s Q4_K_M", f32, quant);
    CHECKF(run_cli(args, err, sizeof err) == 0, "leanmoe %s: %s", args, err);
    struct gguf_file *a = NULL, *b = NULL;
    char gerr[512];
    CHECKF(gguf_open(&a, direct, gerr, sizeof gerr) == 0, "%s", gerr);
    CHECKF(gguf_open(&b, quant, gerr, sizeof gerr) == 0, "%s", gerr);
    if (a && b) {
        int same = a->n_tensors == b->n_tensors, n_k = 0;
        for (uint64_t i = 0; same && i < a->n_tensors; i++) {
            const struct gguf_tensor *t = &a->tensors[i], *u = gguf_find_tensor(b, t->name);
            same = u && u->type == t->type;
            if (!same) fprintf(stderr, "  %s: %u, quantize gives %d\n", t->name, t->type, u ? (int)u->type : -1);
            n_k += t->type == LMOE_DTYPE_Q4_K || t->type == LMOE_DTYPE_Q6_K || t->type == LMOE_DTYPE_Q5_0;
        }
        CHECKF(same, "convert Q4_K_M and convert f32 + quantize Q4_K_M choose different tensor types");
        CHECKF(n_k > 0, "the Q4_K_M file has no Q4_K/Q6_K/Q5_0 tensor");
        uint32_t ft = 0;
        CHECK(gguf_get_u32(a, "general.file_type", &ft, NULL, 0) == 0 && ft == 15);
    }
    gguf_close(a);
    gguf_close(b);
    lmoe_engine *e = open_model(direct, NULL, 1);
    lmoe_engine_close(e);
    /* A mix name convert does not offer is refused in one line. */
    o.type = "q4_k_x";
    CHECK(lmoe_convert(dir, quant, &o, NULL, err, sizeof err) == LMOE_ERR_ARG && strstr(err, "q4_k_x") &&
          !strchr(err, '\n'));
    remove(direct);
    remove(f32);
    remove(quant);
}

#define TOK_GOLDEN LMOE_TEST_DIR "/golden/tokenizer/"

/* The ids of one line of a .out file (each after a space; a line with no
 * ids may still hold one space, which strtol must not skip past). */
static int parse_line_ids(const char *line, int32_t *ids, int max) {
    int n = 0;
    while (*line == ' ') line++;
    while (*line && *line != '\n' && n < max) {
        char *end;
        long v = strtol(line, &end, 10);
        if (end == line) break;
        ids[n++] = (int32_t)v;
        line = end;
        while (*line == ' ') line++;
    }
    return n;
}

/* A SentencePiece-style tokenizer.json (tests/golden/tokenizer/spm-legacy:
 * byte fallback, Prepend + Replace normalizer) in a Llama folder, converted
 * vocabulary-only: model "llama", <0xNN> BYTE, unk UNKNOWN, and leanmoe's
 * GGUF SentencePiece tokenizer (llama.cpp's algorithm, scores only) encodes
 * all 10 of its cases to the ids HF tokenizers gives. A DeepSeek folder
 * with the same tokenizer is refused, as the converter has no such form. */
static void check_convert_spm(void) {
    char dir[512], path[700], out[600], err[1024];
    snprintf(dir, sizeof dir, "%s/hf_spm_%d", LMOE_BUILD_DIR, (int)getpid());
    snprintf(out, sizeof out, "%s.gguf", dir);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    remove(path);
    CHECK(symlink(TOK_GOLDEN "spm-legacy/tokenizer.json", path) == 0);
    size_t n;
    char *cfg = test_read_file(HF_DIR "/llama-f32/config.json", &n);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (f && cfg) {
        /* the same config, with the tokenizer's vocabulary size */
        char *vs = strstr(cfg, "\"vocab_size\"");
        if (vs) *vs = 0;
        fprintf(f, "%s\"vocab_size\": 543\n}\n", cfg);
    }
    if (f) fclose(f);
    free(cfg);
    struct lmoe_convert_options o = {.vocab_only = 1};
    struct lmoe_convert_report rep;
    CHECKF(lmoe_convert(dir, out, &o, &rep, err, sizeof err) == 0, "convert spm: %s", err);
    CHECK(rep.n_tokens == 543 && rep.n_tensors == 0);
    struct gguf_file *g = NULL;
    struct lmoe_tokenizer *t = NULL;
    char gerr[512];
    if (gguf_open(&g, out, gerr, sizeof gerr) || lmoe_tokenizer_open(&t, g, gerr, sizeof gerr))
        CHECKF(0, "%s: %s", out, gerr);
    if (t) {
        struct gguf_str m = {"", 0};
        gguf_get_str(g, "tokenizer.ggml.model", &m, NULL, 0);
        CHECK(m.len == 5 && !memcmp(m.ptr, "llama", 5) && lmoe_tokenizer_model(t) == LMOE_TOKENIZER_SPM);
        CHECK(gguf_find_kv(g, "tokenizer.ggml.scores") != NULL && !gguf_find_kv(g, "tokenizer.ggml.merges"));
        CHECK(lmoe_tokenizer_token_type(t, 0) == LMOE_TOKEN_TYPE_UNKNOWN);
        CHECK(lmoe_tokenizer_token_type(t, 1) == LMOE_TOKEN_TYPE_CONTROL);
        int32_t nl = lmoe_tokenizer_find(t, "<0x0A>", 6);
        CHECK(nl >= 0 && lmoe_tokenizer_token_type(t, nl) == LMOE_TOKEN_TYPE_BYTE);
        char *inp = test_read_file(TOK_GOLDEN "spm-legacy/cases.inp", NULL);
        char *want_txt = test_read_file(TOK_GOLDEN "spm-legacy/cases.out", NULL);
        int good = 0, cases = 0;
        const char *line = want_txt;
        for (char *c = inp; c && line;) {
            char *sep = strstr(c, "\n__ggml_vocab_test__\n");
            if (!sep) break;
            *sep = 0;
            int32_t want[512], *ids = NULL;
            int n_want = parse_line_ids(line, want, 512), n_ids = 0;
            int same = lmoe_tokenizer_encode(t, c, strlen(c), 0, &ids, &n_ids, gerr, sizeof gerr) == 0 &&
                       n_ids == n_want && !memcmp(ids, want, (size_t)n_ids * sizeof(int32_t));
            CHECKF(same, "spm case %d (\"%.30s\") encodes to %d ids, %d expected", cases, c, n_ids, n_want);
            good += same;
            cases++;
            free(ids);
            c = sep + 21;
            line = strchr(line, '\n');
            if (line) line++;
        }
        CHECKF(cases == 10 && good == 10, "spm: %d/%d cases", good, cases);
        if (getenv("LMOE_TEST_VERBOSE")) fprintf(stderr, "  convert spm-legacy: %d/%d cases\n", good, cases);
        free(inp);
        free(want_txt);
    }
    lmoe_tokenizer_close(t);
    gguf_close(g);
    remove(out);
    /* The same tokenizer beside a DeepSeek config: no GGUF form, no file. */
    char *ds = test_read_file(HF_DIR "/ds3-f32/config.json", &n);
    f = fopen(path, "w");
    if (f && ds) fputs(ds, f);
    if (f) fclose(f);
    free(ds);
    CHECK(lmoe_convert(dir, out, &o, NULL, err, sizeof err) == LMOE_ERR_UNSUPPORTED && strstr(err, "llama"));
    struct stat st;
    CHECK(stat(out, &st) != 0);
    remove(path);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    remove(path);
    rmdir(dir);
}

void test_hf(void) {
    check_fp8_convert();
    check_fp8_kernels();
    check_st_parser();
    check_fuzz_seeds();
    check_bad_folders();
    check_folder_text();
    check_manifest();
    check_convert_mix();
    check_convert_spm();
}
