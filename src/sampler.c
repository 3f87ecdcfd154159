/*
 * sampler.c - choosing the next token from logits.
 *
 * Order, as in Hugging Face's generate(): repetition / presence / frequency
 * penalties on the logits, then temperature, then top-k, top-p (nucleus)
 * and min-p filters on the probabilities, then one draw from a seeded
 * generator. Temperature 0 (or below) is greedy: the arg-max, ties to the
 * lowest id. The same seed and inputs give the same tokens on every run.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "leanmoe.h"

struct lmoe_sampler {
    struct lmoe_sampler_options o;
    int n_vocab;
    uint64_t rng;
    int32_t *history; /* ring of the last repeat_last_n accepted tokens */
    int n_hist, hist_at;
    int *counts;      /* occurrences of each id in the ring */
    struct cand { int32_t id; float p; } *cands;
};

/* splitmix64: small, fast, and good enough to draw tokens. */
static uint64_t next_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double next_unit(uint64_t *s) { return (double)(next_u64(s) >> 11) * (1.0 / 9007199254740992.0); }

int lmoe_sampler_open(lmoe_sampler **out, const struct lmoe_sampler_options *opt, int n_vocab) {
    *out = NULL;
    if (n_vocab <= 0) return LMOE_ERR_ARG;
    struct lmoe_sampler *s = calloc(1, sizeof(*s));
    if (!s) return LMOE_ERR_NOMEM;
    struct lmoe_sampler_options def = LMOE_SAMPLER_DEFAULTS;
    s->o = opt ? *opt : def;
    if (s->o.repeat_last_n < 0) s->o.repeat_last_n = 0;
    s->n_vocab = n_vocab;
    s->rng = s->o.seed;
    s->history = malloc(sizeof(int32_t) * (size_t)(s->o.repeat_last_n + 1));
    s->counts = calloc((size_t)n_vocab, sizeof(int));
    s->cands = malloc(sizeof(*s->cands) * (size_t)n_vocab);
    if (!s->history || !s->counts || !s->cands) {
        lmoe_sampler_close(s);
        return LMOE_ERR_NOMEM;
    }
    *out = s;
    return 0;
}

void lmoe_sampler_close(lmoe_sampler *s) {
    if (!s) return;
    free(s->history);
    free(s->counts);
    free(s->cands);
    free(s);
}

void lmoe_sampler_reset(lmoe_sampler *s) {
    s->n_hist = s->hist_at = 0;
    memset(s->counts, 0, sizeof(int) * (size_t)s->n_vocab);
}

void lmoe_sampler_accept(lmoe_sampler *s, int32_t token) {
    if (token < 0 || token >= s->n_vocab || s->o.repeat_last_n == 0) return;
    if (s->n_hist == s->o.repeat_last_n) { /* drop the oldest */
        s->counts[s->history[s->hist_at]]--;
        s->n_hist--;
    }
    s->history[s->hist_at] = token;
    s->hist_at = (s->hist_at + 1) % s->o.repeat_last_n;
    s->n_hist++;
    s->counts[token]++;
}

static int by_p_desc(const void *a, const void *b) {
    const struct cand *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Moves the k most likely candidates to the front (in any order) by
 * quickselect: O(n) where a full sort of a 128k vocabulary is O(n log n). */
static void select_top(struct cand *c, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        struct cand pivot = c[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (by_p_desc(&c[i], &pivot) < 0) i++;
            while (by_p_desc(&c[j], &pivot) > 0) j--;
            if (i <= j) {
                struct cand t = c[i];
                c[i++] = c[j];
                c[j--] = t;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

int32_t lmoe_sampler_sample(lmoe_sampler *s, float *logits) {
    const struct lmoe_sampler_options *o = &s->o;
    int n = s->n_vocab;
    /* Penalties touch only the tokens seen recently. */
    if (s->n_hist && (o->repeat_penalty != 1.0f || o->presence_penalty != 0 || o->frequency_penalty != 0)) {
        for (int i = 0; i < s->n_hist; i++) {
            int32_t t = s->history[i];
            if (s->counts[t] < 0) continue; /* marked: done already */
            float *l = &logits[t];
            if (o->repeat_penalty != 1.0f) *l = *l > 0 ? *l / o->repeat_penalty : *l * o->repeat_penalty;
            *l -= (float)s->counts[t] * o->frequency_penalty + o->presence_penalty;
            s->counts[t] = -s->counts[t] - 1;
        }
        for (int i = 0; i < s->n_hist; i++)
            if (s->counts[s->history[i]] < 0) s->counts[s->history[i]] = -s->counts[s->history[i]] - 1;
    }
    if (o->temperature <= 0) {
        int best = 0;
        for (int i = 1; i < n; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        float p = expf((logits[i] - mx) / o->temperature);
        s->cands[i] = (struct cand){i, p};
        sum += p;
    }
    int m = n;
    /* Filters need the candidates by falling probability; top-k first
     * narrows what is sorted. */
    if (o->top_k > 0 && o->top_k < m) {
        select_top(s->cands, m, o->top_k);
        m = o->top_k;
    }
    qsort(s->cands, (size_t)m, sizeof(*s->cands), by_p_desc);
    sum = 0;
    for (int i = 0; i < m; i++) sum += s->cands[i].p;
    if (o->top_p > 0 && o->top_p < 1) {
        double acc = 0;
        for (int i = 0; i < m; i++) {
            acc += s->cands[i].p / sum;
            if (acc >= o->top_p) { m = i + 1; break; }
        }
    }
    if (o->min_p > 0) {
        float floor_p = s->cands[0].p * o->min_p;
        int keep = 1;
        while (keep < m && s->cands[keep].p >= floor_p) keep++;
        m = keep;
    }
    sum = 0;
    for (int i = 0; i < m; i++) sum += s->cands[i].p;
    double r = next_unit(&s->rng) * sum, acc = 0;
    for (int i = 0; i < m; i++) {
        acc += s->cands[i].p;
        if (r < acc) return s->cands[i].id;
    }
    return s->cands[m - 1].id;
}
