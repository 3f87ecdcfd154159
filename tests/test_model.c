/*
 * test_model.c - leanmoe's logits against an independent implementation.
 *
 * tests/golden/models/MANIFEST.txt lists tiny models converted to GGUF by
 * llama.cpp's converter and, for each, a reference made by Hugging Face
 * transformers (tools/make_model_goldens.py): the logits of every position
 * of a prompt and the greedy continuation. Each case checks
 *   - the prompt path (one batch) and the decode path (one token at a time)
 *     against the reference: max |diff| <= rel_tol * max |logit|, with an
 *     F32 KV cache, and a looser bound with the default F16 cache;
 *   - that both paths agree with each other;
 *   - that greedy decoding reproduces the reference tokens exactly;
 *   - that the result does not depend on the thread count.
 * Also: stories260K, a real trained model, must tell its known story.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "leanmoe.h"
#include "format/gguf.h"
#include "golden_ref.h"
#include "test.h"

/* The F16 cache rounds every cached element to 11 significant bits; on
 * these random-weight models that moves logits by well under 1%. */
#define F16_KV_REL_TOL 1e-2

static lmoe_engine *open_golden(const char *gguf, const char *isa, int threads) {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/golden/models/%s", LMOE_TEST_DIR, gguf);
    struct lmoe_engine_options eo = {.n_threads = threads, .isa = isa};
    lmoe_engine *e;
    if (lmoe_engine_open(&e, path, &eo, err, sizeof err)) {
        CHECKF(0, "%s: %s", gguf, err);
        return NULL;
    }
    return e;
}

/* The 8-bit KV cache rounds cached latents to 1/254 of their block's
 * range: a little coarser than F16, still far below a token flip. */
#define Q8_KV_MAX_MEDIAN_KL 0.01

static void check_case(const char *gguf, const char *refname, double tol, int greedy, const char *desc) {
    char path[1024];
    struct ref r;
    snprintf(path, sizeof path, "%s/golden/models/%s", LMOE_TEST_DIR, refname);
    int ok = ref_load(path, &r) == 0;
    CHECKF(ok, "%s: cannot read reference", refname);
    if (!ok) return;
    /* The reference kernels: float activations, the exact computation. */
    lmoe_engine *e = open_golden(gguf, "ref", 2);
    if (!e) { free(r.buf); return; }
    CHECKF(lmoe_engine_n_vocab(e) == (int)r.n_vocab, "%s: n_vocab %d, reference %u", gguf,
           lmoe_engine_n_vocab(e), r.n_vocab);
    size_t n = (size_t)r.n_ids * r.n_vocab;
    float *batch = malloc(n * sizeof(float)), *dec = malloc(n * sizeof(float)), *f16 = malloc(n * sizeof(float));
    lmoe_ctx *c = NULL;
    CHECK(run_prompt(e, LMOE_KV_F32, &r, 0, batch, NULL) == 0);
    CHECK(run_prompt(e, LMOE_KV_F32, &r, 1, dec, &c) == 0);
    CHECK(run_prompt(e, LMOE_KV_F16, &r, 0, f16, NULL) == 0);
    double eb = rel_err(batch, r.logits, n), ed = rel_err(dec, r.logits, n), eh = rel_err(f16, r.logits, n);
    /* The 8-bit cache: close in distribution to the exact logits. */
    double kl8 = 0, top8 = 1;
    CHECK(run_prompt(e, LMOE_KV_Q8, &r, 0, f16, NULL) == 0);
    kl_top1(f16, r.logits, (int)r.n_ids, (int)r.n_vocab, &kl8, &top8);
    CHECKF(kl8 <= Q8_KV_MAX_MEDIAN_KL && top8 >= FAST_MIN_TOP1, "%s: q8 kv cache: median KL %.3g, top-1 %.0f%%",
           gguf, kl8, 100 * top8);
    CHECKF(eb <= tol, "%s (%s): prompt path rel err %.3g > %.3g", gguf, desc, eb, tol);
    CHECKF(ed <= tol, "%s (%s): decode path rel err %.3g > %.3g", gguf, desc, ed, tol);
    CHECKF(eh <= F16_KV_REL_TOL, "%s: f16 kv cache rel err %.3g > %.3g", gguf, eh, F16_KV_REL_TOL);
    CHECKF(rel_err(dec, batch, n) <= 1e-4, "%s: prompt and decode paths differ by %.3g", gguf,
           rel_err(dec, batch, n));
    /* Greedy continuation through the decode path. */
    if (greedy && c) {
        float *row = malloc(r.n_vocab * sizeof(float));
        int32_t tok = argmax(dec + (size_t)(r.n_ids - 1) * r.n_vocab, (int)r.n_vocab);
        uint32_t same = 0;
        for (uint32_t i = 0; i < r.n_gen; i++) {
            if (tok != r.gen[i]) break;
            same++;
            if (i + 1 < r.n_gen && lmoe_ctx_eval(c, &tok, 1, row, 0)) break;
            tok = argmax(row, (int)r.n_vocab);
        }
        CHECKF(same == r.n_gen, "%s: greedy continuation matches %u of %u tokens", gguf, same, r.n_gen);
        free(row);
    }
    lmoe_ctx_close(c);
    lmoe_engine_close(e);
    /* The fast kernels of this CPU: close to the reference, and the same
     * bits whatever the thread count (no cross-thread sums). */
    double kl = 0, top1 = 1, ef = 0;
    if ((e = open_golden(gguf, NULL, 2))) {
        CHECK(run_prompt(e, LMOE_KV_F16, &r, 0, batch, NULL) == 0);
        kl_top1(batch, r.logits, (int)r.n_ids, (int)r.n_vocab, &kl, &top1);
        ef = rel_err(batch, r.logits, n);
        CHECKF(kl <= FAST_MAX_MEDIAN_KL && top1 >= FAST_MIN_TOP1,
               "%s: fast kernels: median KL %.3g (max %.3g), top-1 %.0f%% (min %.0f%%)", gguf, kl, FAST_MAX_MEDIAN_KL,
               100 * top1, 100 * FAST_MIN_TOP1);
        lmoe_engine_close(e);
    }
    if ((e = open_golden(gguf, NULL, 1))) {
        CHECK(run_prompt(e, LMOE_KV_F16, &r, 0, dec, NULL) == 0);
        CHECKF(memcmp(dec, batch, n * sizeof(float)) == 0, "%s: 1 and 2 threads differ", gguf);
        lmoe_engine_close(e);
    }
    if (getenv("LMOE_TEST_VERBOSE"))
        fprintf(stderr, "  %-18s ref: prompt %.1e decode %.1e f16kv %.1e q8kv KL %.1e | fast: rel %.1e KL %.1e top1 %3.0f%%\n",
                gguf, eb, ed, eh, kl8, ef, kl, 100 * top1);
    free(batch);
    free(dec);
    free(f16);
    free(r.buf);
}

/* stories260K (trained llama, shared/data) from BOS alone must continue with
 * the text recorded in shared/data/PROVENANCE.md. */
static void check_stories(void) {
    static const char *expect =
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
        "park. One day, she saw a big, red ball. She wanted to play with it, but it was too high";
    char path[1024], err[512], text[1024] = "";
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", LMOE_SHARED_DIR);
    lmoe_engine *e;
    struct gguf_file *g;
    if (lmoe_engine_open(&e, path, NULL, err, sizeof err) || gguf_open(&g, path, err, sizeof err)) {
        CHECKF(0, "stories260K: %s", err);
        return;
    }
    const struct gguf_kv *toks = gguf_find_kv(g, "tokenizer.ggml.tokens");
    lmoe_ctx *c;
    CHECK(lmoe_ctx_open(&c, e, NULL) == 0);
    float logits[512];
    int32_t tok = 1; /* BOS */
    size_t at = 0;
    for (int i = 0; i < 60 && toks; i++) {
        if (lmoe_ctx_eval(c, &tok, 1, logits, 0)) break;
        tok = argmax(logits, 512);
        struct gguf_str s = gguf_arr_str(toks, (uint64_t)tok);
        for (uint64_t j = 0; j < s.len && at + 4 < sizeof text; j++) {
            /* SentencePiece marks spaces with U+2581 (e2 96 81). */
            if (j + 2 < s.len && !memcmp(s.ptr + j, "\xe2\x96\x81", 3)) { text[at++] = ' '; j += 2; }
            else text[at++] = s.ptr[j];
        }
        text[at] = 0;
    }
    CHECKF(!strcmp(text + (text[0] == ' '), expect), "stories260K greedy text: '%s'", text);
    lmoe_ctx_close(c);
    gguf_close(g);
    lmoe_engine_close(e);
}

/* Several contexts evaluated in one batched step get exactly the logits
 * they get alone: prompts of different lengths (one longer than a
 * micro-batch), then joint decode steps. */
static void check_batching(const char *gguf) {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/golden/models/%s", LMOE_TEST_DIR, gguf);
    lmoe_engine *e;
    struct lmoe_engine_options eo = {.n_threads = 2};
    if (lmoe_engine_open(&e, path, &eo, err, sizeof err)) {
        CHECKF(0, "%s: %s", gguf, err);
        return;
    }
    enum { NS = 3, MAXP = 100, STEPS = 4 };
    int n_vocab = lmoe_engine_n_vocab(e), lens[NS] = {5, 1, 90};
    int32_t prompts[NS][MAXP];
    for (int i = 0; i < NS; i++)
        for (int j = 0; j < lens[i]; j++) prompts[i][j] = (int32_t)((i * 131 + j * 17 + 3) % n_vocab);
    float *alone = malloc(sizeof(float) * (size_t)NS * (STEPS + 1) * n_vocab);
    float *together = malloc(sizeof(float) * (size_t)NS * (STEPS + 1) * n_vocab);
    /* Alone: each context by itself; decode tokens are fixed, not sampled. */
    for (int i = 0; i < NS; i++) {
        lmoe_ctx *c;
        struct lmoe_ctx_options o = {.n_ctx = 128, .kv_type = LMOE_KV_F16};
        CHECK(lmoe_ctx_open(&c, e, &o) == 0);
        CHECK(lmoe_ctx_eval(c, prompts[i], lens[i], alone + (size_t)i * (STEPS + 1) * n_vocab, 0) == 0);
        for (int st = 0; st < STEPS; st++) {
            int32_t tok = (int32_t)((st * 7 + i) % n_vocab);
            CHECK(lmoe_ctx_eval(c, &tok, 1, alone + ((size_t)i * (STEPS + 1) + st + 1) * n_vocab, 0) == 0);
        }
        lmoe_ctx_close(c);
    }
    lmoe_ctx *cs[NS];
    for (int i = 0; i < NS; i++) {
        struct lmoe_ctx_options o = {.n_ctx = 128, .kv_type = LMOE_KV_F16};
        CHECK(lmoe_ctx_open(&cs[i], e, &o) == 0);
    }
    const int32_t *toks[NS];
    float *outs[NS];
    for (int i = 0; i < NS; i++) {
        toks[i] = prompts[i];
        outs[i] = together + (size_t)i * (STEPS + 1) * n_vocab;
    }
    CHECK(lmoe_batch_eval(cs, toks, lens, outs, 0, NS) == 0);
    for (int st = 0; st < STEPS; st++) {
        int32_t tk[NS];
        int ones[NS];
        for (int i = 0; i < NS; i++) {
            tk[i] = (int32_t)((st * 7 + i) % n_vocab);
            toks[i] = &tk[i];
            ones[i] = 1;
            outs[i] = together + ((size_t)i * (STEPS + 1) + st + 1) * n_vocab;
        }
        CHECK(lmoe_batch_eval(cs, toks, ones, outs, 0, NS) == 0);
    }
    CHECKF(!memcmp(alone, together, sizeof(float) * (size_t)NS * (STEPS + 1) * n_vocab),
           "%s: batched logits differ from solo logits", gguf);
    /* A context twice in one batch is refused. */
    lmoe_ctx *dup[2] = {cs[0], cs[0]};
    int one[2] = {1, 1};
    int32_t t0 = 0;
    const int32_t *dt[2] = {&t0, &t0};
    float *no[2] = {NULL, NULL};
    CHECK(lmoe_batch_eval(dup, dt, one, no, 0, 2) == LMOE_ERR_ARG);
    for (int i = 0; i < NS; i++) lmoe_ctx_close(cs[i]);
    lmoe_engine_close(e);
    free(alone);
    free(together);
}

void test_model(void) {
    check_stories();
    /* Solo decode steps take moe.c's fused expert route and 3-token
     * batched steps its per-expert route, so these also hold the two
     * routes to the same bits (q4_K_M mixes activation types). */
    check_batching("ds3-q8_0.gguf");
    check_batching("ds3q-q4_K_M.gguf");
    check_batching("qwen3moe-f32.gguf");
    char path[1024];
    snprintf(path, sizeof path, "%s/golden/models/MANIFEST.txt", LMOE_TEST_DIR);
    FILE *f = fopen(path, "r");
    CHECKF(f != NULL, "cannot open %s", path);
    if (!f) return;
    char line[1024];
    int cases = 0;
    while (fgets(line, sizeof line, f)) {
        char gguf[256], ref[256], desc[512] = "";
        double tol;
        int greedy;
        if (line[0] == '#' || sscanf(line, "%255s %255s %lf %d %511[^\n]", gguf, ref, &tol, &greedy, desc) < 4)
            continue;
        check_case(gguf, ref, tol, greedy, desc);
        cases++;
    }
    fclose(f);
    CHECKF(cases >= 8, "only %d model cases in the manifest", cases);
}
