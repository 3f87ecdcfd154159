/*
 * golden_ref.c - .ref files and logit comparisons (see golden_ref.h).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "golden_ref.h"
#include "test.h"

int ref_load(const char *path, struct ref *r) {
    size_t size;
    uint8_t *b = test_read_file(path, &size);
    if (!b || size < 16 || memcmp(b, "LMRF", 4)) {
        free(b);
        return -1;
    }
    memcpy(&r->n_ids, b + 4, 4);
    memcpy(&r->n_vocab, b + 8, 4);
    memcpy(&r->n_gen, b + 12, 4);
    size_t need = 16 + 4 * ((size_t)r->n_ids + (size_t)r->n_ids * r->n_vocab + r->n_gen);
    if (need != size) {
        free(b);
        return -1;
    }
    r->buf = b;
    r->ids = (int32_t *)(b + 16);
    r->logits = (float *)(r->ids + r->n_ids);
    r->gen = (int32_t *)(r->logits + (size_t)r->n_ids * r->n_vocab);
    return 0;
}

double rel_err(const float *a, const float *b, size_t n) {
    double md = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= md)) md = d; /* NaN propagates as failure */
        if (fabs(b[i]) > mx) mx = fabs(b[i]);
    }
    return mx > 0 ? md / mx : md;
}

int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

void kl_top1(const float *got, const float *ref, int n_pos, int n_vocab, double *kl, double *top1) {
    double *per = malloc(sizeof(double) * (size_t)(n_pos > 0 ? n_pos : 1));
    int same = 0;
    for (int p = 0; p < n_pos; p++) {
        const float *a = ref + (size_t)p * n_vocab, *b = got + (size_t)p * n_vocab;
        double ma = a[0], mb = b[0], za = 0, zb = 0, k = 0;
        for (int i = 1; i < n_vocab; i++) {
            if (a[i] > ma) ma = a[i];
            if (b[i] > mb) mb = b[i];
        }
        for (int i = 0; i < n_vocab; i++) {
            za += exp(a[i] - ma);
            zb += exp(b[i] - mb);
        }
        for (int i = 0; i < n_vocab; i++) {
            double la = a[i] - ma - log(za), lb = b[i] - mb - log(zb);
            k += exp(la) * (la - lb);
        }
        per[p] = k;
        same += argmax(a, n_vocab) == argmax(b, n_vocab);
    }
    qsort(per, (size_t)n_pos, sizeof(double), cmp_double);
    *kl = n_pos <= 0 ? 0 : n_pos % 2 ? per[n_pos / 2] : 0.5 * (per[n_pos / 2 - 1] + per[n_pos / 2]);
    *top1 = n_pos > 0 ? (double)same / n_pos : 1;
    free(per);
}

int run_prompt(lmoe_engine *e, int kv_type, const struct ref *r, int decode, float *rows, lmoe_ctx **keep) {
    lmoe_ctx *c;
    struct lmoe_ctx_options o = {.n_ctx = (int)(r->n_ids + r->n_gen + 1), .kv_type = kv_type};
    if (lmoe_ctx_open(&c, e, &o)) return -1;
    int rc = 0;
    if (decode)
        for (uint32_t i = 0; i < r->n_ids && !rc; i++)
            rc = lmoe_ctx_eval(c, r->ids + i, 1, rows + (size_t)i * r->n_vocab, 0);
    else
        rc = lmoe_ctx_eval(c, r->ids, (int)r->n_ids, rows, 1);
    if (keep && !rc) *keep = c;
    else lmoe_ctx_close(c);
    return rc;
}
