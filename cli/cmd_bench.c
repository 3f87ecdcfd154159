/*
 * cmd_bench.c - `leanmoe bench`: prompt processing (pp512) and decode
 * (tg128) speed, the decode roofline of this machine, peak memory and the
 * cost of a million generated tokens.
 *
 * What is timed: pp = one lmoe_ctx_eval of N random tokens into an empty
 * context (logits of the last row only, as a generation's prompt); tg = N
 * single-token decode steps from an empty context, as llama-bench's tgN.
 * Each is repeated (-r, default 3) and the best run is reported, because
 * the machine is noisy and the best run is the least disturbed one.
 * Roofline: weight bytes one decode step reads (shared weights + the
 * selected experts, in their stored types) over the read bandwidth that
 * lmoe_measure_read_bandwidth finds with the same thread count.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli.h"

/* A typical on-demand price of a 2-vCPU x86 cloud instance (e.g. AWS
 * c7i.large, about $0.09/hour in 2025), rounded. */
#define DEFAULT_USD_PER_HOUR 0.10

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int cmd_bench(const struct args *a) {
    int pp = a->bench_pp > 0 ? a->bench_pp : 512, tg = a->bench_tg > 0 ? a->bench_tg : 128;
    int reps = a->bench_reps > 0 ? a->bench_reps : 3;
    double usd_per_hour = a->usd_per_hour > 0 ? a->usd_per_hour : DEFAULT_USD_PER_HOUR;
    lmoe_engine *e = cli_open_model(a, 1, 0);
    if (!e) return 1;
    struct lmoe_model_info mi;
    lmoe_engine_info(e, &mi);
    int n_vocab = lmoe_engine_n_vocab(e), rc = 1;
    lmoe_ctx *c = NULL;
    struct lmoe_ctx_options co = {.n_ctx = (pp > tg ? pp : tg) + 8, .kv_type = a->kv_type};
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)(pp > tg ? pp : tg));
    float *logits = malloc(sizeof(float) * (size_t)n_vocab);
    if (!toks || !logits || lmoe_ctx_open(&c, e, &co)) {
        fprintf(stderr, "leanmoe: out of memory for the benchmark context\n");
        goto done;
    }
    uint64_t rng = 12345;
    for (int i = 0; i < (pp > tg ? pp : tg); i++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        toks[i] = (int32_t)((rng >> 33) % (uint64_t)n_vocab);
    }
    double best_pp = 0, best_tg = 0;
    for (int r = 0; r < reps; r++) {
        lmoe_ctx_reset(c);
        double t0 = now();
        if (lmoe_ctx_eval(c, toks, pp, logits, 0)) goto eval_failed;
        double tps = pp / (now() - t0);
        if (tps > best_pp) best_pp = tps;
        lmoe_ctx_reset(c);
        t0 = now();
        for (int i = 0; i < tg; i++)
            if (lmoe_ctx_eval(c, &toks[i], 1, logits, 0)) goto eval_failed;
        tps = tg / (now() - t0);
        if (tps > best_tg) best_tg = tps;
    }
    /* Peak memory before the bandwidth probe allocates its gigabyte. */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss = (double)ru.ru_maxrss * 1024.0;
    int n_threads = lmoe_engine_n_threads(e);
    double gbps = lmoe_measure_read_bandwidth(n_threads, (size_t)1 << 30);
    double roof = gbps > 0 ? gbps * 1e9 / (double)mi.bytes_per_token : 0;
    double usd_per_mtok = usd_per_hour / 3600.0 / best_tg * 1e6;
    if (a->json) {
        printf("{\"model\": \"%s\", \"architecture\": \"%s\", \"threads\": %d, \"pp_tokens\": %d, \"tg_tokens\": %d, "
               "\"pp512_tps\": %.3f, \"tg128_tps\": %.3f, \"bytes_per_token\": %llu, \"read_gbps\": %.2f, "
               "\"roofline_tg_tps\": %.3f, \"roofline_pct\": %.2f, \"peak_rss_bytes\": %.0f, "
               "\"usd_per_hour\": %.4f, \"usd_per_mtok\": %.4f}\n",
               a->model ? a->model : "built-in", mi.architecture, n_threads, pp, tg, best_pp, best_tg,
               (unsigned long long)mi.bytes_per_token, gbps, roof, roof > 0 ? 100 * best_tg / roof : 0, rss,
               usd_per_hour, usd_per_mtok);
    } else {
        printf("model          %s (%s, %.2f GB of weights)\n", a->model ? a->model : "built-in", mi.architecture,
               mi.weight_bytes / 1e9);
        printf("threads        %d\n", n_threads);
        printf("pp%-4d         %.2f tokens/s (best of %d)\n", pp, best_pp, reps);
        printf("tg%-4d         %.2f tokens/s (best of %d)\n", tg, best_tg, reps);
        printf("roofline       %.2f tokens/s: %.1f MB read per token at %.1f GB/s; reached %.1f%%\n", roof,
               mi.bytes_per_token / 1e6, gbps, roof > 0 ? 100 * best_tg / roof : 0);
        printf("peak memory    %.1f MiB resident\n", rss / 1048576.0);
        printf("cost           $%.4f per million generated tokens at $%.2f/hour\n", usd_per_mtok, usd_per_hour);
    }
    rc = 0;
    goto done;
eval_failed:
    fprintf(stderr, "leanmoe: %s\n", lmoe_ctx_error(c));
done:
    lmoe_ctx_close(c);
    lmoe_engine_close(e);
    free(toks);
    free(logits);
    return rc;
}
