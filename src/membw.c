/*
 * membw.c - how fast this machine reads memory, for the decode roofline.
 *
 * Decode reads every active weight once per token, so its speed limit is
 * bytes_per_token / read bandwidth. The probe streams a buffer much larger
 * than the caches through the fastest dot-product kernel (each thread its
 * own slice, as decode does) and keeps the best of several passes.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels.h"
#include "leanmoe.h"

struct probe {
    const float *p;
    size_t n;
    const struct lmoe_kernels *k;
    volatile float sink;
};

static void *probe_main(void *arg) {
    struct probe *pr = arg;
    float s = 0;
    /* dot(x, x): one stream from memory, the second load hits L1. */
    for (size_t at = 0; at < pr->n; at += 1 << 20) {
        size_t n = pr->n - at < (1 << 20) ? pr->n - at : (1 << 20);
        s += pr->k->dot_f32(pr->p + at, pr->p + at, (int)n);
    }
    pr->sink = s;
    return NULL;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double lmoe_measure_read_bandwidth(int n_threads, size_t bytes) {
    if (n_threads < 1) n_threads = 1;
    size_t n = bytes / sizeof(float);
    float *buf = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    pthread_t *th = malloc(sizeof(pthread_t) * (size_t)n_threads);
    struct probe *pr = calloc((size_t)n_threads, sizeof(struct probe));
    if (!buf || !th || !pr) {
        free(buf), free(th), free(pr);
        return 0;
    }
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 7) * 0.125f; /* map every page */
    const struct lmoe_kernels *k = lmoe_kernels_pick();
    double best = 0;
    for (int pass = 0; pass < 5; pass++) {
        size_t per = n / (size_t)n_threads;
        int started = 0;
        /* Thread start-up (tens of microseconds) is noise next to reading
         * a gigabyte, so the clock simply brackets create and join. */
        double t0 = now();
        for (int t = 0; t < n_threads; t++) {
            pr[t] = (struct probe){buf + (size_t)t * per, per, k, 0};
            if (pthread_create(&th[t], NULL, probe_main, &pr[t])) break;
            started++;
        }
        for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
        double dt = now() - t0;
        double gbps = (double)(per * (size_t)started * sizeof(float)) / dt / 1e9;
        if (gbps > best) best = gbps;
    }
    free(buf);
    free(th);
    free(pr);
    return best;
}
