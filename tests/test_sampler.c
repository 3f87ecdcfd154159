/*
 * test_sampler.c - token choice: greedy, seeded repeatability, each filter,
 * penalties, and that draws follow the softmax distribution.
 */
#include <math.h>
#include <string.h>

#include "leanmoe.h"
#include "test.h"

static struct lmoe_sampler_options plain(float temp) {
    struct lmoe_sampler_options o = LMOE_SAMPLER_DEFAULTS;
    o.temperature = temp;
    o.top_k = 0;
    o.top_p = 1.0f;
    o.min_p = 0.0f;
    return o;
}

static int32_t draw(lmoe_sampler *s, const float *logits, int n) {
    float tmp[64];
    memcpy(tmp, logits, sizeof(float) * (size_t)n);
    return lmoe_sampler_sample(s, tmp);
}

void test_sampler(void) {
    enum { N = 8 };
    const float logits[N] = {0.5f, 2.0f, -1.0f, 1.5f, 2.0f, 0.0f, -3.0f, 1.0f};
    lmoe_sampler *s;
    struct lmoe_sampler_options o = plain(0);
    CHECK(lmoe_sampler_open(&s, &o, N) == 0);
    CHECK(draw(s, logits, N) == 1); /* greedy, tie goes to the lower id */
    lmoe_sampler_close(s);

    /* Same seed, same sequence; another seed, another sequence. */
    int32_t a[32], b[32], c[32];
    o = plain(1.0f);
    o.seed = 42;
    lmoe_sampler_open(&s, &o, N);
    for (int i = 0; i < 32; i++) a[i] = draw(s, logits, N);
    lmoe_sampler_close(s);
    lmoe_sampler_open(&s, &o, N);
    for (int i = 0; i < 32; i++) b[i] = draw(s, logits, N);
    lmoe_sampler_close(s);
    o.seed = 43;
    lmoe_sampler_open(&s, &o, N);
    for (int i = 0; i < 32; i++) c[i] = draw(s, logits, N);
    lmoe_sampler_close(s);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);

    /* Frequencies follow softmax(logits / T) within a loose bound. */
    o = plain(0.7f);
    o.seed = 7;
    lmoe_sampler_open(&s, &o, N);
    int hist[N] = {0}, draws = 20000;
    for (int i = 0; i < draws; i++) hist[draw(s, logits, N)]++;
    lmoe_sampler_close(s);
    double z = 0, p[N];
    for (int i = 0; i < N; i++) z += exp(logits[i] / 0.7);
    for (int i = 0; i < N; i++) {
        p[i] = exp(logits[i] / 0.7) / z;
        double sd = sqrt(draws * p[i] * (1 - p[i])) + 1;
        CHECKF(fabs(hist[i] - draws * p[i]) < 5 * sd, "token %d drawn %d times, expected %.0f", i, hist[i],
               draws * p[i]);
    }

    /* top-k 2 keeps only the two best (ids 1 and 4). */
    o = plain(5.0f);
    o.top_k = 2;
    lmoe_sampler_open(&s, &o, N);
    int only = 1;
    for (int i = 0; i < 500; i++) { int t = draw(s, logits, N); only &= t == 1 || t == 4; }
    lmoe_sampler_close(s);
    CHECK(only);
    /* top-p: at T=1 ids 1 and 4 hold 0.59 of the mass; p = 0.4 keeps just those two. */
    o = plain(1.0f);
    o.top_p = 0.4f;
    lmoe_sampler_open(&s, &o, N);
    only = 1;
    for (int i = 0; i < 500; i++) { int t = draw(s, logits, N); only &= t == 1 || t == 4; }
    lmoe_sampler_close(s);
    CHECK(only);
    /* min-p 0.5 keeps tokens within a factor 2 of the best: ids 1, 4, 3. */
    o = plain(1.0f);
    o.min_p = 0.5f;
    lmoe_sampler_open(&s, &o, N);
    only = 1;
    for (int i = 0; i < 500; i++) { int t = draw(s, logits, N); only &= t == 1 || t == 4 || t == 3; }
    lmoe_sampler_close(s);
    CHECK(only);

    /* Penalties: a seen token with a positive logit is divided, a negative
     * one multiplied; presence and frequency subtract. */
    o = plain(0);
    o.repeat_penalty = 2.0f;
    o.frequency_penalty = 0.25f;
    o.presence_penalty = 0.5f;
    o.repeat_last_n = 4;
    lmoe_sampler_open(&s, &o, N);
    float l[N];
    memcpy(l, logits, sizeof l);
    lmoe_sampler_accept(s, 1);
    lmoe_sampler_accept(s, 1);
    lmoe_sampler_accept(s, 2);
    CHECK(lmoe_sampler_sample(s, l) == 4);
    CHECKF(fabsf(l[1] - (1.0f - 0.5f - 0.5f)) < 1e-6f, "penalised logit %g", l[1]);
    CHECKF(fabsf(l[2] - (-2.0f - 0.25f - 0.5f)) < 1e-6f, "penalised logit %g", l[2]);
    CHECK(l[4] == 2.0f);
    /* The window forgets: after 4 more tokens, id 1 is no longer penalised. */
    for (int i = 0; i < 4; i++) lmoe_sampler_accept(s, 5);
    memcpy(l, logits, sizeof l);
    lmoe_sampler_sample(s, l);
    CHECK(l[1] == 2.0f);
    lmoe_sampler_close(s);
    CHECK(lmoe_sampler_open(&s, NULL, 0) == LMOE_ERR_ARG);
}
