/*
 * test_kvpool.c - the paged KV pool: pages are taken as a timeline grows
 * and returned on truncate, reset and close; a full pool fails an eval
 * cleanly; and a context whose rows are scattered over many pages, shared
 * with a neighbour that keeps growing and shrinking, gets exactly the
 * logits of a context with its own contiguous cache; a prefix copied
 * from one context to another continues with the same logits.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "leanmoe.h"
#include "test.h"

enum { N_PROMPT = 70, N_DECODE = 30, N_ALL = N_PROMPT + N_DECODE };

static int n_free(lmoe_kv_pool *p) {
    struct lmoe_kv_pool_info in;
    lmoe_kv_pool_info(p, &in);
    return in.n_free;
}

static int32_t tok_at(int i, int n_vocab) { return (int32_t)((i * 37 + 11) % n_vocab); }

/* The logits of every position of the test timeline: the prompt in one
 * eval (all rows), then one decode step per token. */
static void run_alone(lmoe_engine *e, int kv_type, float *out) {
    int n_vocab = lmoe_engine_n_vocab(e);
    int32_t toks[N_ALL];
    for (int i = 0; i < N_ALL; i++) toks[i] = tok_at(i, n_vocab);
    lmoe_ctx *c;
    struct lmoe_ctx_options o = {.n_ctx = 128, .kv_type = kv_type};
    CHECK(lmoe_ctx_open(&c, e, &o) == 0);
    CHECK(lmoe_ctx_eval(c, toks, N_PROMPT, out, 1) == 0);
    for (int i = N_PROMPT; i < N_ALL; i++) CHECK(lmoe_ctx_eval(c, &toks[i], 1, out + (size_t)i * n_vocab, 0) == 0);
    lmoe_ctx_close(c);
}

/* A pool of n_pages 4-token pages and two contexts drawing from it. */
static lmoe_kv_pool *open_two(lmoe_engine *e, int n_pages, int kv_type, int n_ctx, lmoe_ctx **a, lmoe_ctx **b) {
    lmoe_kv_pool *p;
    struct lmoe_kv_pool_options po = {.n_pages = n_pages, .page_tokens = 4, .kv_type = kv_type};
    CHECK(lmoe_kv_pool_open(&p, e, &po) == 0);
    struct lmoe_ctx_options o = {.n_ctx = n_ctx, .pool = p};
    CHECK(lmoe_ctx_open(a, e, &o) == 0);
    CHECK(lmoe_ctx_open(b, e, &o) == 0);
    return p;
}

/* The same timeline in a pool of 4-token pages, fed in chunks of 7 while
 * a filler context takes and returns pages in between, so the pages of
 * the timeline are neither consecutive nor in order. */
static void run_paged(lmoe_engine *e, int kv_type, float *out) {
    int n_vocab = lmoe_engine_n_vocab(e);
    int32_t toks[N_ALL], fill[64];
    for (int i = 0; i < N_ALL; i++) toks[i] = tok_at(i, n_vocab);
    for (int i = 0; i < 64; i++) fill[i] = (int32_t)((i * 13 + 5) % n_vocab);
    lmoe_ctx *c, *f;
    lmoe_kv_pool *p = open_two(e, 64, kv_type, 128, &c, &f);
    for (int at = 0, round = 0; at < N_ALL; round++) {
        int n = at < N_PROMPT ? (N_PROMPT - at < 7 ? N_PROMPT - at : 7) : 1;
        /* The filler grows by 5 and every third round falls back, freeing
         * pages that the timeline then takes. */
        if (lmoe_ctx_n_past(f) + 5 > 60) lmoe_ctx_reset(f);
        CHECK(lmoe_ctx_eval(f, fill + lmoe_ctx_n_past(f), 5, NULL, 0) == 0);
        if (round % 3 == 2) lmoe_ctx_truncate(f, lmoe_ctx_n_past(f) / 3);
        CHECK(lmoe_ctx_eval(c, toks + at, n, out + (size_t)at * n_vocab, at < N_PROMPT) == 0);
        at += n;
    }
    CHECK(n_free(p) == 64 - (N_ALL + 3) / 4 - (lmoe_ctx_n_past(f) + 3) / 4);
    lmoe_ctx_close(c);
    lmoe_ctx_close(f);
    CHECK(n_free(p) == 64);
    lmoe_kv_pool_close(p);
}

static void check_same_logits(lmoe_engine *e, const char *name, int kv_type) {
    size_t n = (size_t)N_ALL * (size_t)lmoe_engine_n_vocab(e);
    float *a = calloc(n, sizeof(float)), *b = calloc(n, sizeof(float));
    run_alone(e, kv_type, a);
    run_paged(e, kv_type, b);
    CHECKF(!memcmp(a, b, sizeof(float) * n), "%s kv %d: paged logits differ from the contiguous cache's", name,
           kv_type);
    free(a);
    free(b);
}

/* Page accounting and exhaustion in a pool of 4 pages of 4 tokens. */
static void check_accounting(lmoe_engine *e) {
    int n_vocab = lmoe_engine_n_vocab(e);
    int32_t toks[16];
    for (int i = 0; i < 16; i++) toks[i] = tok_at(i, n_vocab);
    lmoe_ctx *x, *y;
    lmoe_kv_pool *p = open_two(e, 4, LMOE_KV_F16, 64, &x, &y);
    CHECK(n_free(p) == 4); /* nothing is taken before it is needed */
    CHECK(lmoe_ctx_eval(x, toks, 10, NULL, 0) == 0);
    CHECK(n_free(p) == 1);
    /* Y needs 2 pages, 1 is left: refused, nothing evaluated or taken. */
    CHECK(lmoe_ctx_eval(y, toks, 8, NULL, 0) == LMOE_ERR_KV_FULL);
    CHECK(lmoe_ctx_n_past(y) == 0 && n_free(p) == 1);
    CHECKF(strstr(lmoe_ctx_error(y), "KV pool") != NULL, "message: %s", lmoe_ctx_error(y));
    CHECK(!strcmp(lmoe_strerror(LMOE_ERR_KV_FULL), "KV pool full"));
    /* In one batch, X's page is given back when Y's cannot be had. */
    lmoe_ctx *both[2] = {x, y};
    const int32_t *bt[2] = {toks, toks};
    int bn[2] = {4, 8};
    float *no[2] = {NULL, NULL};
    CHECK(lmoe_batch_eval(both, bt, bn, no, 0, 2) == LMOE_ERR_KV_FULL);
    CHECK(lmoe_ctx_n_past(x) == 10 && lmoe_ctx_n_past(y) == 0 && n_free(p) == 1);
    /* Within a page nothing is taken; truncation returns whole pages. */
    CHECK(lmoe_ctx_eval(x, toks, 2, NULL, 0) == 0 && n_free(p) == 1);
    CHECK(lmoe_ctx_truncate(x, 3) == 0 && n_free(p) == 3);
    CHECK(lmoe_ctx_eval(y, toks, 8, NULL, 0) == 0 && n_free(p) == 1);
    /* One context may take the whole pool when the other lets go. */
    lmoe_ctx_reset(y);
    CHECK(n_free(p) == 3);
    CHECK(lmoe_ctx_eval(x, toks, 13, NULL, 0) == 0 && n_free(p) == 0);
    CHECK(lmoe_ctx_eval(x, toks, 1, NULL, 0) == LMOE_ERR_KV_FULL);
    lmoe_ctx_close(x);
    CHECK(n_free(p) == 4);
    lmoe_ctx_close(y);
    /* Bad options. */
    lmoe_kv_pool *bad;
    struct lmoe_kv_pool_options b1 = {.n_pages = 4, .page_tokens = 3}, b2 = {.n_pages = 0};
    CHECK(lmoe_kv_pool_open(&bad, e, &b1) == LMOE_ERR_ARG && bad == NULL);
    CHECK(lmoe_kv_pool_open(&bad, e, &b2) == LMOE_ERR_ARG && bad == NULL);
    CHECK(lmoe_kv_page_bytes(e, 3, LMOE_KV_F16) == 0);
    struct lmoe_model_info mi;
    CHECK(lmoe_engine_info(e, &mi) == 0);
    CHECK(lmoe_kv_page_bytes(e, 16, LMOE_KV_F16) == 16 * mi.kv_bytes_per_token);
    struct lmoe_kv_pool_info in;
    lmoe_kv_pool_info(p, &in);
    CHECK(in.n_pages == 4 && in.page_tokens == 4 && in.page_bytes == 4 * mi.kv_bytes_per_token);
    lmoe_kv_pool_close(p);
    lmoe_kv_pool_close(NULL);
}

/* A prefix copied from another context: the source's rows are scattered
 * over 4-token pages (it grew beside a filler); the copy goes into a
 * context of the same pool and into one with its own cache, and both then
 * continue the timeline with exactly run_alone's logits. Bad calls leave
 * an error and an empty destination. */
static void check_copy_prefix(lmoe_engine *e, const char *name, int kv_type, const float *alone) {
    int n_vocab = lmoe_engine_n_vocab(e);
    int32_t toks[N_ALL], fill[8];
    for (int i = 0; i < N_ALL; i++) toks[i] = tok_at(i, n_vocab);
    for (int i = 0; i < 8; i++) fill[i] = (int32_t)((i * 13 + 5) % n_vocab);
    lmoe_ctx *src, *f;
    lmoe_kv_pool *p = open_two(e, 64, kv_type, 128, &src, &f);
    for (int at = 0; at < N_PROMPT; at += 10) {
        CHECK(lmoe_ctx_eval(f, fill, 3, NULL, 0) == 0);
        CHECK(lmoe_ctx_eval(src, toks + at, 10, NULL, 0) == 0);
    }
    lmoe_ctx_close(f);
    lmoe_ctx *same, *own;
    struct lmoe_ctx_options in_pool = {.n_ctx = 128, .pool = p}, alone_opt = {.n_ctx = N_ALL, .kv_type = kv_type};
    CHECK(lmoe_ctx_open(&same, e, &in_pool) == 0);
    CHECK(lmoe_ctx_open(&own, e, &alone_opt) == 0);
    CHECK(lmoe_ctx_eval(same, fill, 5, NULL, 0) == 0); /* forgotten by the copy */
    float *row = malloc(sizeof(float) * (size_t)n_vocab);
    lmoe_ctx *dst[2] = {same, own};
    for (int d = 0; d < 2; d++) {
        int rc = lmoe_ctx_copy_prefix(dst[d], src, N_PROMPT - 1);
        CHECKF(rc == 0, "%s: copy_prefix: %s", name, lmoe_ctx_error(dst[d]));
        CHECK(lmoe_ctx_n_past(dst[d]) == N_PROMPT - 1);
        int bad = 0;
        for (int i = N_PROMPT - 1; i < N_ALL && rc == 0; i++) {
            CHECK(lmoe_ctx_eval(dst[d], &toks[i], 1, row, 0) == 0);
            bad += memcmp(row, alone + (size_t)i * n_vocab, sizeof(float) * (size_t)n_vocab) != 0;
        }
        CHECKF(bad == 0, "%s kv %d: %d positions after a copied prefix (%s) differ", name, kv_type, bad,
               d ? "own cache" : "same pool");
    }
    /* the source's pages stay its own: it still continues correctly */
    CHECK(lmoe_ctx_eval(src, &toks[N_PROMPT], 1, row, 0) == 0);
    CHECK(!memcmp(row, alone + (size_t)N_PROMPT * n_vocab, sizeof(float) * (size_t)n_vocab));
    /* more than the source holds, itself, a prefix that does not fit */
    CHECK(lmoe_ctx_copy_prefix(same, src, N_PROMPT + 2) == LMOE_ERR_ARG && strstr(lmoe_ctx_error(same), "holds"));
    CHECK(lmoe_ctx_n_past(same) == N_ALL); /* an argument error leaves dst as it was */
    CHECK(lmoe_ctx_copy_prefix(src, src, 3) == LMOE_ERR_ARG);
    CHECK(lmoe_ctx_copy_prefix(own, same, 0) == 0 && lmoe_ctx_n_past(own) == 0);
    lmoe_ctx *tiny;
    struct lmoe_ctx_options tiny_opt = {.n_ctx = 16, .kv_type = kv_type};
    CHECK(lmoe_ctx_open(&tiny, e, &tiny_opt) == 0);
    CHECK(lmoe_ctx_copy_prefix(tiny, src, 40) == LMOE_ERR_CTX_FULL && lmoe_ctx_n_past(tiny) == 0);
    if (kv_type != LMOE_KV_F32) {
        lmoe_ctx *other;
        struct lmoe_ctx_options f32_opt = {.n_ctx = 128, .kv_type = LMOE_KV_F32};
        CHECK(lmoe_ctx_open(&other, e, &f32_opt) == 0);
        CHECK(lmoe_ctx_copy_prefix(other, src, 3) == LMOE_ERR_ARG && strstr(lmoe_ctx_error(other), "KV"));
        lmoe_ctx_close(other);
    }
    free(row);
    lmoe_ctx_close(tiny);
    lmoe_ctx_close(same);
    lmoe_ctx_close(own);
    lmoe_ctx_close(src);
    CHECK(n_free(p) == 64);
    lmoe_kv_pool_close(p);
}

void test_kvpool(void) {
    const char *models[] = {"ds3-q8_0.gguf", "qwen3moe-f32.gguf"};
    for (int m = 0; m < 2; m++) {
        char path[1024], err[512];
        snprintf(path, sizeof path, "%s/golden/models/%s", LMOE_TEST_DIR, models[m]);
        lmoe_engine *e;
        struct lmoe_engine_options eo = {.n_threads = 2};
        if (lmoe_engine_open(&e, path, &eo, err, sizeof err)) {
            CHECKF(0, "%s: %s", models[m], err);
            continue;
        }
        check_same_logits(e, models[m], LMOE_KV_F16);
        check_same_logits(e, models[m], LMOE_KV_Q8);
        {
            size_t n = (size_t)N_ALL * (size_t)lmoe_engine_n_vocab(e);
            float *alone = calloc(n, sizeof(float));
            for (int kv = 0; kv < 2; kv++) {
                int kv_type = kv ? LMOE_KV_Q8 : LMOE_KV_F16;
                run_alone(e, kv_type, alone);
                check_copy_prefix(e, models[m], kv_type, alone);
            }
            free(alone);
        }
        if (m == 0) check_accounting(e);
        lmoe_engine_close(e);
    }
}
