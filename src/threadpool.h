/*
 * threadpool.h - persistent worker threads and a parallel-for.
 *
 * Decode runs hundreds of small parallel steps per token, so workers stay
 * alive between steps and wait on a generation counter instead of being
 * created per call. Work is a range [0, n) split into chunks that workers
 * claim with an atomic counter; the calling thread works too.
 */
#ifndef LMOE_THREADPOOL_H
#define LMOE_THREADPOOL_H

struct lmoe_pool;

/* fn(arg, begin, end, thread_index) processes items [begin, end). */
typedef void (*lmoe_range_fn)(void *arg, int begin, int end, int ith);

/* Starts n_threads - 1 workers (the caller is thread 0). Returns NULL on
 * failure. n_threads <= 1 gives a pool that runs everything inline. */
struct lmoe_pool *lmoe_pool_open(int n_threads);
void lmoe_pool_close(struct lmoe_pool *p);
int lmoe_pool_n_threads(const struct lmoe_pool *p);

/* Runs fn over [0, n) in chunks of at least min_chunk items and returns when
 * every chunk is done. Not reentrant: one parallel-for at a time per pool. */
void lmoe_pool_for(struct lmoe_pool *p, int n, int min_chunk, lmoe_range_fn fn,
                   void *arg);

/* Physical cores of this machine (best effort; at least 1). */
int lmoe_physical_cores(void);

#endif
