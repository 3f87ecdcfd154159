/*
 * bench_kernels.c - single-thread matrix-vector speed of every weight type
 * on every kernel table this CPU can run.
 *
 *   make build/liblmoe.a
 *   gcc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc bench/bench_kernels.c build/liblmoe.a \
 *       -lpcre2-8 -lm -lpthread -o build/bench_kernels
 *   build/bench_kernels [rows cols]          (default 4096 4096)
 *
 * What it times: y = W x for one token, W a rows x cols matrix of one type
 * (random codes, sane scales), on one thread, the way op_matmul does it:
 *   - "ref-float": the reference route (LMOE_ISA=ref): decode each row to
 *     floats with dequantize_row, then dot_f32;
 *   - "<isa>": the quantized route of that table: quantize x once
 *     (included in the time), then vec_dot per row.
 * Each figure is the best of several passes over the whole matrix, which
 * is larger than the caches, so GB/s (weight bytes / time) compares with
 * the memory bandwidth of one core. The last column is a checksum of y, to
 * keep the work observable (it differs between routes by the activation
 * quantization error).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels.h"
#include "quant/quant.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 88172645463325252ULL;
static uint32_t rnd(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float rndf(void) { return (float)rnd() / 4294967296.0f * 2.0f - 1.0f; }

/* Random codes with f16 scales of about 0.01 at the scale offsets. */
static void fill(uint32_t type, uint8_t *w, size_t bytes, int n_elems) {
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)rnd();
    const struct lmoe_dtype_traits *t = lmoe_dtype_get(type);
    if (type == LMOE_DTYPE_F32) {
        for (int i = 0; i < n_elems; i++) {
            float v = rndf();
            memcpy(w + 4 * (size_t)i, &v, 4);
        }
        return;
    }
    if (type == LMOE_DTYPE_F16 || type == LMOE_DTYPE_BF16) {
        for (int i = 0; i < n_elems; i++) {
            uint16_t h = type == LMOE_DTYPE_F16 ? lmoe_f32_to_f16(rndf()) : lmoe_f32_to_bf16(rndf());
            memcpy(w + 2 * (size_t)i, &h, 2);
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

/* One pass of y = W x; returns seconds. */
static double pass(const struct lmoe_kernels *k, int float_route, uint32_t type, const uint8_t *w, size_t row_bytes,
                   int rows, int cols, const float *x, float *buf, uint8_t *act, float *y) {
    double t0 = now();
    if (float_route) {
        for (int r = 0; r < rows; r++) {
            k->dequantize_row(type, w + (size_t)r * row_bytes, buf, cols);
            y[r] = k->dot_f32(buf, x, cols);
        }
    } else {
        uint32_t at = lmoe_vec_dot_act_type(type);
        const void *a = x;
        if (at != LMOE_DTYPE_F32) {
            k->quantize_act(at, x, act, cols);
            a = act;
        }
        lmoe_vec_dot_fn dot = k->vec_dot[type];
        for (int r = 0; r < rows; r++) y[r] = dot(cols, w + (size_t)r * row_bytes, a);
    }
    return now() - t0;
}

int main(int argc, char **argv) {
    int rows = argc > 2 ? atoi(argv[1]) : 4096, cols = argc > 2 ? atoi(argv[2]) : 4096;
    if (rows <= 0 || cols <= 0 || cols % 256) {
        fprintf(stderr, "usage: bench_kernels [rows cols], cols a multiple of 256\n");
        return 1;
    }
    static const uint32_t types[] = {LMOE_DTYPE_F32,  LMOE_DTYPE_F16,  LMOE_DTYPE_BF16, LMOE_DTYPE_Q8_0,
                                     LMOE_DTYPE_Q4_0, LMOE_DTYPE_Q4_1, LMOE_DTYPE_Q5_0, LMOE_DTYPE_Q5_1,
                                     LMOE_DTYPE_Q2_K, LMOE_DTYPE_Q3_K, LMOE_DTYPE_Q4_K, LMOE_DTYPE_Q5_K,
                                     LMOE_DTYPE_Q6_K};
    const char *isas[] = {"ref", "avx2", "avx512"};
    float *x = malloc(sizeof(float) * (size_t)cols), *buf = malloc(sizeof(float) * (size_t)cols);
    float *y = malloc(sizeof(float) * (size_t)rows);
    uint8_t *act = malloc((size_t)lmoe_dtype_row_size(LMOE_DTYPE_Q8_K, cols) + 64);
    for (int i = 0; i < cols; i++) x[i] = rndf();
    printf("matvec %d x %d, 1 thread, best of passes\n", rows, cols);
    printf("%-6s %-10s %10s %10s %9s %14s\n", "type", "route", "MB", "ns/row", "GB/s", "checksum");
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        uint32_t type = types[ti];
        size_t row_bytes = (size_t)lmoe_dtype_row_size(type, cols), bytes = row_bytes * (size_t)rows;
        uint8_t *w = malloc(bytes);
        fill(type, w, bytes, rows * cols);
        double ref_t = 0;
        for (int v = -1; v < (int)(sizeof isas / sizeof isas[0]); v++) {
            /* v = -1: the reference float route; then each table's own */
            const struct lmoe_kernels *k = lmoe_kernels_have(v < 0 ? "ref" : isas[v]);
            if (!k) continue;
            char route[16];
            snprintf(route, sizeof route, "%s", v < 0 ? "ref-float" : isas[v]);
            double best = 1e30;
            /* at least 3 passes and about 0.3 s */
            double spent = 0;
            for (int p = 0; p < 3 || (spent < 0.3 && p < 50); p++) {
                double t = pass(k, v < 0, type, w, row_bytes, rows, cols, x, buf, act, y);
                spent += t;
                if (t < best) best = t;
            }
            double sum = 0;
            for (int r = 0; r < rows; r++) sum += y[r];
            if (v < 0) ref_t = best;
            printf("%-6s %-10s %10.1f %10.1f %9.2f %14.6g   x%.1f\n", lmoe_dtype_get(type)->name, route, bytes / 1e6,
                   best * 1e9 / rows, bytes / best / 1e9, sum, ref_t / best);
        }
        free(w);
    }
    free(x), free(buf), free(y), free(act);
    return 0;
}
