/*
 * threadpool.c - worker threads and a parallel-for over item ranges.
 *
 * A job is published by bumping `generation` under the mutex and
 * broadcasting; workers spin briefly on the generation before sleeping on
 * the condition variable, because decode steps arrive microseconds apart
 * and a futex wake-up per step would dominate small matrix products.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "threadpool.h"

struct lmoe_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake, done_cv;
    atomic_int generation; /* bumped once per job */
    atomic_int next;       /* next unclaimed item */
    atomic_int active;     /* workers still inside the current job */
    int stop;
    /* the current job */
    lmoe_range_fn fn;
    void *arg;
    int n, chunk;
};

struct worker_arg {
    struct lmoe_pool *p;
    int ith;
};

/* Claims chunks until the range is exhausted. */
static void run_chunks(struct lmoe_pool *p, int ith) {
    for (;;) {
        int b = atomic_fetch_add(&p->next, p->chunk);
        if (b >= p->n) break;
        int e = b + p->chunk < p->n ? b + p->chunk : p->n;
        p->fn(p->arg, b, e, ith);
    }
}

static void *worker_main(void *varg) {
    struct worker_arg *wa = varg;
    struct lmoe_pool *p = wa->p;
    int ith = wa->ith;
    free(wa);
    int seen = 0;
    for (;;) {
        /* Spin a little: the next job usually comes right away. */
        int spins = 0;
        while (atomic_load_explicit(&p->generation, memory_order_acquire) == seen &&
               spins < 20000) {
            spins++;
            if ((spins & 255) == 0) sched_yield();
        }
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->generation) == seen && !p->stop)
            pthread_cond_wait(&p->wake, &p->mu);
        int stop = p->stop;
        seen = atomic_load(&p->generation);
        pthread_mutex_unlock(&p->mu);
        if (stop) break;
        run_chunks(p, ith);
        if (atomic_fetch_sub(&p->active, 1) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

struct lmoe_pool *lmoe_pool_open(int n_threads) {
    struct lmoe_pool *p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->n_threads = n_threads < 1 ? 1 : n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    if (p->n_threads == 1) return p;
    p->threads = calloc((size_t)p->n_threads, sizeof(pthread_t));
    if (!p->threads) { free(p); return NULL; }
    for (int i = 1; i < p->n_threads; i++) {
        struct worker_arg *wa = malloc(sizeof(*wa));
        if (!wa || pthread_create(&p->threads[i], NULL, worker_main, wa ? (wa->p = p, wa->ith = i, wa) : NULL)) {
            free(wa);
            p->n_threads = i; /* close joins only the started ones */
            lmoe_pool_close(p);
            return NULL;
        }
    }
    return p;
}

void lmoe_pool_close(struct lmoe_pool *p) {
    if (!p) return;
    if (p->threads) {
        pthread_mutex_lock(&p->mu);
        p->stop = 1;
        atomic_fetch_add(&p->generation, 1);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
        for (int i = 1; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
        free(p->threads);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done_cv);
    free(p);
}

int lmoe_pool_n_threads(const struct lmoe_pool *p) { return p->n_threads; }

void lmoe_pool_for(struct lmoe_pool *p, int n, int min_chunk, lmoe_range_fn fn,
                   void *arg) {
    if (n <= 0) return;
    if (min_chunk < 1) min_chunk = 1;
    /* A few chunks per thread balance uneven rows without much contention. */
    int chunk = (n + p->n_threads * 4 - 1) / (p->n_threads * 4);
    if (chunk < min_chunk) chunk = min_chunk;
    if (p->n_threads == 1 || chunk >= n) {
        fn(arg, 0, n, 0);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->chunk = chunk;
    atomic_store(&p->next, 0);
    atomic_store(&p->active, p->n_threads - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_chunks(p, 0);
    /* Wait for the workers: spin first, then sleep. */
    for (int spins = 0; atomic_load(&p->active) > 0 && spins < 100000; spins++)
        if ((spins & 255) == 0) sched_yield();
    pthread_mutex_lock(&p->mu);
    while (atomic_load(&p->active) > 0) pthread_cond_wait(&p->done_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

int lmoe_physical_cores(void) {
    /* Count distinct (physical id, core id) pairs in /proc/cpuinfo; fall
     * back to the online CPU count. */
    FILE *f = fopen("/proc/cpuinfo", "r");
    int n = 0;
    if (f) {
        char line[256];
        int phys = 0, seen[1024][2], n_seen = 0;
        while (fgets(line, sizeof line, f)) {
            int v;
            if (sscanf(line, "physical id : %d", &v) == 1) phys = v;
            else if (sscanf(line, "core id : %d", &v) == 1) {
                int dup = 0;
                for (int i = 0; i < n_seen; i++)
                    if (seen[i][0] == phys && seen[i][1] == v) dup = 1;
                if (!dup && n_seen < 1024) { seen[n_seen][0] = phys; seen[n_seen][1] = v; n_seen++; }
            }
        }
        fclose(f);
        n = n_seen;
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (n <= 0 || (online > 0 && n > online)) n = online > 0 ? (int)online : 1;
    return n;
}
