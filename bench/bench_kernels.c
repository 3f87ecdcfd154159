/*
 * bench_kernels.c - matrix product speed of every weight type on every
 * kernel table this CPU can run, on one thread and through the pool.
 *
 *   make build/liblmoe.a
 *   gcc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc bench/bench_kernels.c build/liblmoe.a \
 *       -lpcre2-8 -lm -lpthread -o build/bench_kernels
 *   build/bench_kernels [rows cols [threads]]   (default 4096 4096 2)
 *
 * What it times, each figure the best of several passes:
 *
 *   1. matvec: y = W x for one token, W rows x cols of one type (random
 *      codes, sane scales), larger than the caches, through op_matmul
 *      exactly as decode calls it (x quantized once, inside the time).
 *      Routes: "ref-float" (LMOE_ISA=ref: decode rows to floats, dot_f32)
 *      and each table's own, on 1 thread and on `threads` through the
 *      pool. GB/s is weight bytes over time, to compare with the machine's
 *      read bandwidth; "x1t" is the pool's speed-up over one thread.
 *   2. decode shapes: the matrices one DeepSeek-V2-Lite decode step runs
 *      hundreds of times (an expert's 1408 x 2048 gate, its 2048 x 1408
 *      down, a 512 x 128 per-head MLA matrix), in microseconds per call on
 *      1 thread and through the pool: small ones should not pay for waking
 *      workers, large ones should run close to twice as fast.
 *   3. prompt tiles: y = W X for 64 tokens (one op_matmul chunk of
 *      activation rows), in GMAC/s (multiply-adds per second), through the
 *      table's gemm and, for comparison, through vec_dot per row and token
 *      (the same table with its gemm entries removed).
 *
 * The last column of 1 is a checksum of y, to keep the work observable (it
 * differs between routes by the activation quantization error).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels.h"
#include "model/ops.h"
#include "quant/quant.h"
#include "threadpool.h"

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double now(void) { return clock_s(CLOCK_MONOTONIC); }

static uint64_t rng = 88172645463325252ULL;
static uint32_t rnd(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float rndf(void) { return (float)rnd() / 4294967296.0f * 2.0f - 1.0f; }

/* Random codes with f16 scales of about 0.01 at the scale offsets. */
static void fill(uint32_t type, uint8_t *w, size_t bytes, size_t n_elems) {
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)rnd();
    const struct lmoe_dtype_traits *t = lmoe_dtype_get(type);
    if (type == LMOE_DTYPE_F32) {
        for (size_t i = 0; i < n_elems; i++) {
            float v = rndf();
            memcpy(w + 4 * i, &v, 4);
        }
        return;
    }
    if (type == LMOE_DTYPE_F16 || type == LMOE_DTYPE_BF16) {
        for (size_t i = 0; i < n_elems; i++) {
            uint16_t h = type == LMOE_DTYPE_F16 ? lmoe_f32_to_f16(rndf()) : lmoe_f32_to_bf16(rndf());
            memcpy(w + 2 * i, &h, 2);
        }
        return;
    }
    int off[2] = {-1, -1};
    switch (type) {
    case LMOE_DTYPE_Q2_K: off[0] = 80, off[1] = 82; break;
    case LMOE_DTYPE_Q3_K: off[0] = 108; break;
    case LMOE_DTYPE_Q6_K: off[0] = 208; break;
    case LMOE_DTYPE_Q4_1: case LMOE_DTYPE_Q5_1: case LMOE_DTYPE_Q4_K: case LMOE_DTYPE_Q5_K:
        off[0] = 0, off[1] = 2; break;
    default: off[0] = 0; break;
    }
    uint16_t h = lmoe_f32_to_f16(0.01f);
    for (size_t b = 0; b < bytes / (size_t)t->type_size; b++)
        for (int k = 0; k < 2; k++)
            if (off[k] >= 0) memcpy(w + b * (size_t)t->type_size + off[k], &h, 2);
}

/* An op_matmul environment: pool, table, scratch. */
struct env {
    struct lmoe_compute c;
};

static void env_open(struct env *e, const struct lmoe_kernels *k, int n_threads, int max_cols) {
    op_compute_open(&e->c, k, n_threads, max_cols);
}

static void env_close(struct env *e) { op_compute_close(&e->c); }

/* A weight matrix of `type`, rows x cols, random. */
static struct lmoe_tensor make_matrix(uint32_t type, int rows, int cols) {
    struct lmoe_tensor W = {.type = type, .ne = {cols, rows, 1, 1}};
    W.row_bytes = (size_t)lmoe_dtype_row_size(type, cols);
    size_t bytes = W.row_bytes * (size_t)rows;
    uint8_t *w = malloc(bytes);
    fill(type, w, bytes, (size_t)rows * (size_t)cols);
    W.data = w;
    return W;
}

/* Best time of op_matmul(W, x[T]) over at least 3 passes and min_s seconds.
 * On one thread it is the thread's CPU time, which other processes on a
 * shared machine do not inflate; through the pool it has to be wall time. */
static double best_time(struct env *e, const struct lmoe_tensor *W, const float *x, int T, float *y, double min_s) {
    double best = 1e30, spent = 0;
    const clockid_t id = lmoe_pool_n_threads(e->c.pool) == 1 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC;
    for (int p = 0; p < 3 || (spent < min_s && p < 2000); p++) {
        double t0 = clock_s(id);
        op_matmul(&e->c, W, 0, x, (int)W->ne[0], T, y, (int)W->ne[1]);
        double t = clock_s(id) - t0;
        spent += t;
        if (t < best) best = t;
    }
    return best;
}

static const char *const isas[] = {"ref", "avx2", "avx512"};
#define N_ISAS 3

static void bench_matvec(int rows, int cols, int threads) {
    static const uint32_t types[] = {LMOE_DTYPE_F32,  LMOE_DTYPE_F16,  LMOE_DTYPE_BF16, LMOE_DTYPE_Q8_0,
                                     LMOE_DTYPE_Q4_0, LMOE_DTYPE_Q4_1, LMOE_DTYPE_Q5_0, LMOE_DTYPE_Q5_1,
                                     LMOE_DTYPE_Q2_K, LMOE_DTYPE_Q3_K, LMOE_DTYPE_Q4_K, LMOE_DTYPE_Q5_K,
                                     LMOE_DTYPE_Q6_K};
    float *x = malloc(sizeof(float) * (size_t)cols), *y = malloc(sizeof(float) * (size_t)rows);
    for (int i = 0; i < cols; i++) x[i] = rndf();
    printf("1. matvec %d x %d (op_matmul, T = 1), best of passes\n", rows, cols);
    printf("%-6s %-10s %8s %10s %9s %10s %9s %5s %14s\n", "type", "route", "MB", "ns/row", "GB/s", "ns/row", "GB/s",
           "x1t", "checksum");
    printf("%-6s %-10s %8s %20s %26s\n", "", "", "", "1 thread", "pool");
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        uint32_t type = types[ti];
        struct lmoe_tensor W = make_matrix(type, rows, cols);
        double bytes = (double)W.row_bytes * rows;
        for (int v = -1; v < N_ISAS; v++) {
            /* v = -1: the reference float route; then each table's own */
            const struct lmoe_kernels *k = lmoe_kernels_have(v < 0 ? "ref" : isas[v]);
            if (!k) continue;
            struct lmoe_kernels fast = *k;
            fast.quantized_matmul = v >= 0;
            struct env e1, en;
            env_open(&e1, &fast, 1, cols), env_open(&en, &fast, threads, cols);
            double t1 = best_time(&e1, &W, x, 1, y, 0.3), tn = best_time(&en, &W, x, 1, y, 0.3);
            double sum = 0;
            for (int r = 0; r < rows; r++) sum += y[r];
            printf("%-6s %-10s %8.1f %10.1f %9.2f %10.1f %9.2f %5.2f %14.6g\n", lmoe_dtype_get(type)->name,
                   v < 0 ? "ref-float" : isas[v], bytes / 1e6, t1 * 1e9 / rows, bytes / t1 / 1e9, tn * 1e9 / rows,
                   bytes / tn / 1e9, t1 / tn, sum);
            env_close(&e1), env_close(&en);
        }
        free((void *)W.data);
    }
    free(x), free(y);
}

static void bench_decode_shapes(int threads) {
    static const struct {
        const char *what;
        uint32_t type;
        int rows, cols;
    } shapes[] = {
        {"expert gate q4_K", LMOE_DTYPE_Q4_K, 1408, 2048},
        {"expert down q8_0", LMOE_DTYPE_Q8_0, 2048, 1408},
        {"expert down q5_0", LMOE_DTYPE_Q5_0, 2048, 1408},
        {"expert gate q8_0", LMOE_DTYPE_Q8_0, 1408, 2048},
        {"attn_q q4_K", LMOE_DTYPE_Q4_K, 3072, 2048},
        {"mla k_b q5_0", LMOE_DTYPE_Q5_0, 512, 128},
        {"mla v_b q4_K", LMOE_DTYPE_Q4_K, 128, 512},
        {"mla v_b q8_0", LMOE_DTYPE_Q8_0, 128, 512},
    };
    const struct lmoe_kernels *k = lmoe_kernels_pick();
    printf("\n2. decode shapes (op_matmul, T = 1, %s table), microseconds per call\n", k->name);
    printf("%-18s %11s %9s %9s %9s %5s\n", "matrix", "rows x cols", "KB", "1 thread", "pool", "x1t");
    /* Many distinct copies of a matrix, used in turn, so that each call
     * reads from memory as in decode rather than from the cache. */
    enum { COPIES = 64 };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        struct lmoe_tensor W[COPIES];
        for (int c = 0; c < COPIES; c++) W[c] = make_matrix(shapes[i].type, shapes[i].rows, shapes[i].cols);
        float *x = malloc(sizeof(float) * (size_t)shapes[i].cols), *y = malloc(sizeof(float) * (size_t)shapes[i].rows);
        for (int c = 0; c < shapes[i].cols; c++) x[c] = rndf();
        double t[2];
        for (int m = 0; m < 2; m++) {
            struct env e;
            env_open(&e, k, m ? threads : 1, shapes[i].cols);
            double best = 1e30;
            for (int rep = 0; rep < 20; rep++) {
                double t0 = now();
                for (int c = 0; c < COPIES; c++) op_matmul(&e.c, &W[c], 0, x, shapes[i].cols, 1, y, shapes[i].rows);
                double dt = (now() - t0) / COPIES;
                if (dt < best) best = dt;
            }
            t[m] = best;
            env_close(&e);
        }
        printf("%-18s %5d x %-5d %9.1f %9.2f %9.2f %5.2f\n", shapes[i].what, shapes[i].rows, shapes[i].cols,
               (double)W[0].row_bytes * shapes[i].rows / 1024, t[0] * 1e6, t[1] * 1e6, t[0] / t[1]);
        for (int c = 0; c < COPIES; c++) free((void *)W[c].data);
        free(x), free(y);
    }
}

static void bench_tiles(int threads) {
    static const uint32_t types[] = {LMOE_DTYPE_Q8_0, LMOE_DTYPE_Q4_0, LMOE_DTYPE_Q5_0,
                                     LMOE_DTYPE_Q4_K, LMOE_DTYPE_Q5_K, LMOE_DTYPE_Q6_K};
    const int rows = 256, cols = 2048, T = 64; /* short passes: some run undisturbed */
    float *x = malloc(sizeof(float) * (size_t)cols * T), *y = malloc(sizeof(float) * (size_t)rows * T);
    for (int i = 0; i < cols * T; i++) x[i] = rndf();
    printf("\n3. prompt tiles: %d x %d times %d tokens (op_matmul), GMAC/s (1 thread: CPU time)\n", rows, cols, T);
    printf("%-6s %-8s %10s %10s %10s %10s\n", "type", "table", "vec_dot", "gemm", "gemm pool", "x vec_dot");
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        struct lmoe_tensor W = make_matrix(types[ti], rows, cols);
        for (int v = 1; v < N_ISAS; v++) {
            const struct lmoe_kernels *k = lmoe_kernels_have(isas[v]);
            if (!k) continue;
            struct lmoe_kernels plain = *k;
            memset(plain.gemm, 0, sizeof plain.gemm);
            struct env ep, e1, en;
            env_open(&ep, &plain, 1, cols), env_open(&e1, k, 1, cols), env_open(&en, k, threads, cols);
            double macs = (double)rows * cols * T;
            double tp = best_time(&ep, &W, x, T, y, 0.5), t1 = best_time(&e1, &W, x, T, y, 0.5);
            double tn = best_time(&en, &W, x, T, y, 0.5);
            printf("%-6s %-8s %10.1f %10.1f %10.1f %10.2f\n", lmoe_dtype_get(types[ti])->name, isas[v], macs / tp / 1e9,
                   macs / t1 / 1e9, macs / tn / 1e9, tp / t1);
            env_close(&ep), env_close(&e1), env_close(&en);
        }
        free((void *)W.data);
    }
    free(x), free(y);
}

int main(int argc, char **argv) {
    int rows = argc > 2 ? atoi(argv[1]) : 4096, cols = argc > 2 ? atoi(argv[2]) : 4096;
    int threads = argc > 3 ? atoi(argv[3]) : 2;
    if (rows <= 0 || cols <= 0 || cols % 256 || threads < 1) {
        fprintf(stderr, "usage: bench_kernels [rows cols [threads]], cols a multiple of 256\n");
        return 1;
    }
    const char *only = getenv("BENCH_ONLY"); /* "1", "2" or "3": one section */
    if (!only || strchr(only, '1')) bench_matvec(rows, cols, threads);
    if (!only || strchr(only, '2')) bench_decode_shapes(threads);
    if (!only || strchr(only, '3')) bench_tiles(threads);
    return 0;
}
