/*
 * cmd_perplexity.c - `leanmoe perplexity`: how well a model predicts a text,
 * measured exactly as llama.cpp's llama-perplexity measures it, so the two
 * programs' numbers can be compared.
 *
 *   leanmoe perplexity -m model.gguf -f wiki.test.raw [-c 512] [--chunks K]
 *   leanmoe perplexity -m f16.gguf -f wiki.test.raw --kl-base base.bin --save-logits
 *   leanmoe perplexity -m q4_k_m.gguf --kl-base base.bin
 *
 * Perplexity (llama-perplexity's default mode). The text loses one trailing
 * newline (as llama.cpp's -f does) and is tokenized whole, with BOS in front
 * when the model adds one and without parsing special tokens. It is cut into
 * chunks of n_ctx tokens (-c, default 512; leftover tokens are dropped),
 * at most --chunks of them. Each chunk is evaluated in a fresh context, its
 * first token replaced by BOS when the model adds one. Only the second half
 * is scored: position i in [n_ctx/2, n_ctx-2] contributes -log p(token i+1)
 * from the logits at i, so every scored token has at least n_ctx/2 tokens of
 * context. After each chunk the running PPL = exp(mean NLL) is printed as
 * "[k]ppl,", and at the end "Final estimate: PPL = P +/- U" with U =
 * P * sqrt(var(NLL) / (count - 1)), llama.cpp's first-order error.
 *
 * KL divergence (llama-perplexity's --kl-divergence-base/--kl-divergence).
 * With --kl-base FILE --save-logits the run also writes, per scored token,
 * the base model's log-probabilities; with --kl-base FILE alone another
 * model (a quantized one, say) is run on the same tokens (taken from the
 * file, so -f is not needed) and compared: PPL of both, their ratio, mean
 * KL(base || model), the RMS of the change in the probability of the right
 * token (dp), and how often both models rank the same token first ("same
 * top p"), each with its uncertainty, per chunk and at the end, in
 * llama.cpp's layout.
 *
 * The file is llama.cpp's own format, so llama-perplexity can read what we
 * write and we can read what it writes (all little-endian):
 *
 *   char[8]  "_logits_"
 *   u32      n_ctx
 *   i32      n_vocab
 *   i32      n_chunk
 *   i32      tokens[n_chunk * n_ctx]    the text's tokens (before any BOS
 *                                       replacement)
 *   then per chunk, per scored position (n_ctx - 1 - n_ctx/2 of them), a
 *   row of nv = 2 * ((n_vocab + 1) / 2) + 4 uint16:
 *     f32 scale, f32 min_log_prob       (the first 4 uint16)
 *     u16 q[n_vocab] (+ one pad u16 when n_vocab is odd)
 *   where log p(i) = scale * q[i] + min_log_prob. Log-probabilities are
 *   clipped 16 below the top one (q = 0 there) and the rest quantized
 *   uniformly to 16 bits: a step of at most 16/65535 = 2.4e-4 nats.
 *   Size: 2 * nv bytes per scored token, e.g. 200 KB for a 102400-token
 *   vocabulary, 51 MB per 512-token chunk; small vocabularies are cheap.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

/* llama-perplexity's default context for perplexity. */
#define PPL_DEFAULT_N_CTX 512
/* Log-probabilities more than this far below the top are clipped in the
 * base file (and ignored in the KL sum): exp(-16) = 1.1e-7. */
#define PPL_LOGPROB_RANGE 16.0f
/* Bound on the logits buffer: rows of n_vocab floats, 64 Mi floats. */
#define PPL_MAX_BUF_FLOATS ((size_t)64 << 20)

static const char LOGITS_MAGIC[8] = {'_', 'l', 'o', 'g', 'i', 't', 's', '_'};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Round to nearest, ties to even (|v| well inside int range here). */
static int nearest_int(float v) { return (int)lrintf(v); }

/* ---- Evaluating one chunk ----------------------------------------------- */

/* Receives the logits of scored row i (position first + i). */
typedef void (*row_fn)(void *arg, int i, const float *logits);

struct evaluator {
    lmoe_engine *e;
    lmoe_ctx *c;
    int n_vocab, n_ctx, first, add_bos;
    int32_t bos;
    int32_t *chunk; /* n_ctx tokens, first replaced by BOS */
    float *buf;     /* buf_rows rows of n_vocab logits */
    int buf_rows;
};

/* Runs one chunk of n_ctx tokens in a fresh timeline and hands each scored
 * row's logits to fn. The first half runs without logits; the last token
 * is not run at all, since no scored row depends on it (attention is
 * causal). Returns 0 or prints the engine's error and returns -1. */
static int eval_chunk(struct evaluator *ev, const int32_t *tokens, row_fn fn, void *arg) {
    memcpy(ev->chunk, tokens, sizeof(int32_t) * (size_t)ev->n_ctx);
    if (ev->add_bos) ev->chunk[0] = ev->bos;
    lmoe_ctx_reset(ev->c);
    int rc = lmoe_ctx_eval(ev->c, ev->chunk, ev->first, NULL, 0);
    for (int p = ev->first; !rc && p < ev->n_ctx - 1; p += ev->buf_rows) {
        const int n = ev->n_ctx - 1 - p < ev->buf_rows ? ev->n_ctx - 1 - p : ev->buf_rows;
        rc = lmoe_ctx_eval(ev->c, ev->chunk + p, n, ev->buf, 1);
        for (int k = 0; !rc && k < n; k++) fn(arg, p - ev->first + k, ev->buf + (size_t)k * (size_t)ev->n_vocab);
    }
    if (rc) {
        fprintf(stderr, "leanmoe: %s\n", lmoe_ctx_error(ev->c));
        return -1;
    }
    return 0;
}

/* Opens the context and buffers for chunks of n_ctx tokens. */
static int evaluator_open(struct evaluator *ev, lmoe_engine *e, const struct args *a, int n_ctx) {
    memset(ev, 0, sizeof *ev);
    ev->e = e;
    ev->n_vocab = lmoe_engine_n_vocab(e);
    ev->n_ctx = n_ctx;
    ev->first = n_ctx / 2;
    /* Does the model want BOS? Tokenizing nothing with add_bos tells. */
    int32_t *ids = NULL;
    int n = 0;
    char err[256];
    if (lmoe_tokenize(e, "", 0, 1, 0, &ids, &n, err, sizeof err)) {
        fprintf(stderr, "leanmoe: %s\n", err);
        return -1;
    }
    ev->add_bos = n == 1;
    ev->bos = n == 1 ? ids[0] : -1;
    free(ids);
    struct lmoe_ctx_options co = {.n_ctx = n_ctx, .kv_type = a->kv_type};
    if (lmoe_ctx_open(&ev->c, e, &co)) {
        fprintf(stderr, "leanmoe: cannot open a context of %d tokens\n", n_ctx);
        return -1;
    }
    const int scored = n_ctx - 1 - ev->first;
    size_t rows = PPL_MAX_BUF_FLOATS / (size_t)ev->n_vocab;
    ev->buf_rows = rows < 1 ? 1 : rows > (size_t)scored ? scored : (int)rows;
    ev->chunk = malloc(sizeof(int32_t) * (size_t)n_ctx);
    ev->buf = malloc(sizeof(float) * (size_t)ev->buf_rows * (size_t)ev->n_vocab);
    if (!ev->chunk || !ev->buf) {
        fprintf(stderr, "leanmoe: out of memory for %d rows of logits\n", ev->buf_rows);
        return -1;
    }
    return 0;
}

static void evaluator_close(struct evaluator *ev) {
    lmoe_ctx_close(ev->c);
    free(ev->chunk);
    free(ev->buf);
}

/* ---- Perplexity (and saving the base log-probabilities) ------------------ */

struct ppl_state {
    const int32_t *targets; /* targets[i]: the token row i predicts */
    int n_vocab;
    double nll, nll2;
    int count;
    /* saving: one row of nv uint16 per scored token */
    FILE *save;
    uint16_t *row;
    int nv, failed;
};

/* -log p(target) from one row of logits; the max is subtracted before exp
 * and the sum of exps kept in double, as llama-perplexity does. */
static void ppl_row(void *arg, int i, const float *logits) {
    struct ppl_state *s = arg;
    const int n = s->n_vocab, tok = s->targets[i];
    float max = logits[0], min = logits[0];
    for (int k = 1; k < n; k++) {
        max = fmaxf(max, logits[k]);
        min = fminf(min, logits[k]);
    }
    double sum = 0.0;
    for (int k = 0; k < n; k++) sum += expf(logits[k] - max);
    double v;
    if (!s->save) {
        v = -((double)(logits[tok] - max) - log(sum));
    } else {
        /* The row of the base file (see the header comment). */
        const float lse = (float)log(sum);
        min = fmaxf(min, max - PPL_LOGPROB_RANGE);
        const float min_log_prob = min - max - lse;
        const float scale = (max - min) / 65535.0f;
        memcpy(s->row, &scale, sizeof scale);
        memcpy(s->row + 2, &min_log_prob, sizeof min_log_prob);
        uint16_t *q = s->row + 4;
        memset(q, 0, sizeof(uint16_t) * (size_t)(s->nv - 4));
        if (scale > 0.0f) {
            const float inv = 1.0f / scale;
            for (int k = 0; k < n; k++) q[k] = logits[k] > min ? (uint16_t)nearest_int(inv * (logits[k] - min)) : 0;
        }
        if (fwrite(s->row, sizeof(uint16_t), (size_t)s->nv, s->save) != (size_t)s->nv) s->failed = 1;
        v = max + lse - logits[tok];
    }
    s->nll += v;
    s->nll2 += v * v;
    s->count++;
}

/* Reads and tokenizes -f, as llama-perplexity does. */
static int32_t *read_tokens(lmoe_engine *e, const char *path, int *n) {
    size_t len;
    char *text = cli_read_file(path, &len);
    if (!text) return NULL;
    if (len > 0 && text[len - 1] == '\n') text[--len] = 0;
    int32_t *ids = NULL;
    char err[256];
    fprintf(stderr, "perplexity: tokenizing the input ..\n");
    const double t0 = now_s();
    int rc = lmoe_tokenize(e, text, len, 1, 0, &ids, n, err, sizeof err);
    free(text);
    if (rc) {
        fprintf(stderr, "leanmoe: %s\n", err);
        return NULL;
    }
    fprintf(stderr, "perplexity: tokenization took %g ms\n", 1e3 * (now_s() - t0));
    return ids;
}

static int run_perplexity(const struct args *a, lmoe_engine *e) {
    const int n_ctx = a->n_ctx > 0 ? a->n_ctx : PPL_DEFAULT_N_CTX;
    if (n_ctx < 4) {
        fprintf(stderr, "leanmoe: perplexity needs -c of at least 4\n");
        return 1;
    }
    if (!a->prompt_file) {
        fprintf(stderr, "leanmoe: perplexity needs the text: -f FILE\n");
        return 1;
    }
    int n_tokens = 0;
    int32_t *tokens = read_tokens(e, a->prompt_file, &n_tokens);
    if (!tokens) return 1;
    int rc = 1;
    struct evaluator ev;
    struct ppl_state s = {0};
    if (n_tokens < 2 * n_ctx) {
        fprintf(stderr, "leanmoe: perplexity needs at least %d tokens for a context of %d; the text has %d\n",
                2 * n_ctx, n_ctx, n_tokens);
        free(tokens);
        return 1;
    }
    int n_chunk = n_tokens / n_ctx;
    if (a->ppl_chunks > 0 && a->ppl_chunks < n_chunk) n_chunk = a->ppl_chunks;
    if (evaluator_open(&ev, e, a, n_ctx)) goto done;
    s.n_vocab = ev.n_vocab;
    if (a->kl_base) {
        s.save = fopen(a->kl_base, "wb");
        s.nv = 2 * ((ev.n_vocab + 1) / 2) + 4;
        s.row = malloc(sizeof(uint16_t) * (size_t)s.nv);
        if (!s.save || !s.row) {
            fprintf(stderr, "leanmoe: cannot write '%s'\n", a->kl_base);
            goto done;
        }
        const uint32_t h_ctx = (uint32_t)n_ctx;
        const int32_t h_vocab = ev.n_vocab, h_chunk = n_chunk;
        fwrite(LOGITS_MAGIC, 1, sizeof LOGITS_MAGIC, s.save);
        fwrite(&h_ctx, sizeof h_ctx, 1, s.save);
        fwrite(&h_vocab, sizeof h_vocab, 1, s.save);
        fwrite(&h_chunk, sizeof h_chunk, 1, s.save);
        fwrite(tokens, sizeof(int32_t), (size_t)n_chunk * (size_t)n_ctx, s.save);
        fprintf(stderr, "perplexity: saving log-probabilities to %s\n", a->kl_base);
    }
    fprintf(stderr, "perplexity: calculating perplexity over %d chunks, n_ctx=%d, batch_size=%d, n_seq=1\n", n_chunk,
            n_ctx, n_ctx);
    for (int i = 0; i < n_chunk; i++) {
        const double t0 = now_s();
        s.targets = tokens + (size_t)i * n_ctx + ev.first + 1;
        if (eval_chunk(&ev, tokens + (size_t)i * n_ctx, ppl_row, &s)) goto done;
        if (i == 0)
            fprintf(stderr, "perplexity: %.2f seconds per pass - ETA %.2f minutes\n", now_s() - t0,
                    (now_s() - t0) * n_chunk / 60.0);
        printf("[%d]%.4lf,", i + 1, exp(s.nll / s.count));
        fflush(stdout);
    }
    printf("\n");
    const double mean = s.nll / s.count, ppl = exp(mean);
    const double var = s.nll2 / s.count - mean * mean;
    if (var > 0)
        printf("Final estimate: PPL = %.4lf +/- %.5lf\n", ppl, sqrt(var / (s.count - 1)) * ppl);
    else
        fprintf(stderr, "leanmoe: unexpected negative variance of log(prob)\n");
    if (s.save && (s.failed || ferror(s.save))) {
        fprintf(stderr, "leanmoe: writing '%s' failed\n", a->kl_base);
        goto done;
    }
    rc = 0;
done:
    if (s.save && fclose(s.save) && !rc) {
        fprintf(stderr, "leanmoe: writing '%s' failed\n", a->kl_base);
        rc = 1;
    }
    free(s.row);
    evaluator_close(&ev);
    free(tokens);
    return rc;
}

/* ---- KL divergence against a saved base ------------------------------------ */

struct kld_state {
    const int32_t *targets;
    uint16_t *base; /* the chunk's base rows, nv uint16 each */
    int n_vocab, nv;
    double sum_nll, sum_nll2, sum_nll_base, sum_nll_base2, sum_nll_nll_base;
    double sum_kld, sum_kld2, sum_p_diff, sum_p_diff2, sum_p_diff4;
    float max_p_diff;
    long n_same_top, count;
    float *kld_values, *p_diff_values; /* one per scored token, all chunks */
};

/* Compares one row of logits with its base row: KL(base || model) over the
 * tokens the base gives more than exp(-16), NLL of both, top-1 agreement. */
static void kld_row(void *arg, int i, const float *logits) {
    struct kld_state *s = arg;
    const int n = s->n_vocab, tok = s->targets[i];
    const uint16_t *row = s->base + (size_t)i * (size_t)s->nv;
    float max = logits[0];
    int imax = 0;
    for (int k = 1; k < n; k++)
        if (logits[k] > max) max = logits[k], imax = k;
    double sum = 0.0;
    for (int k = 0; k < n; k++) sum += expf(logits[k] - max);
    const float lse = (float)log(sum);
    float scale, min_log_prob;
    memcpy(&scale, row, sizeof scale);
    memcpy(&min_log_prob, row + 2, sizeof min_log_prob);
    const uint16_t *q = row + 4;
    const float nll = max + lse - logits[tok];
    const float nll_base = -(scale * q[tok] + min_log_prob);
    s->sum_nll += nll;
    s->sum_nll2 += (double)nll * nll;
    s->sum_nll_base += nll_base;
    s->sum_nll_base2 += (double)nll_base * nll_base;
    s->sum_nll_nll_base += (double)nll * nll_base;
    const float norm = max + lse; /* log p(k) = logits[k] - norm */
    double kl = 0.0;
    int imax_base = 0;
    float top_base = 0.0f;
    for (int k = 0; k < n; k++) {
        const float lb = scale * q[k] + min_log_prob;
        if (k == 0 || lb > top_base) top_base = lb, imax_base = k;
        if (lb > -PPL_LOGPROB_RANGE) kl += expf(lb) * (lb - logits[k] + norm);
    }
    s->sum_kld += kl;
    s->sum_kld2 += kl * kl;
    s->n_same_top += imax == imax_base;
    const float p_diff = expf(-nll) - expf(-nll_base);
    s->sum_p_diff += p_diff;
    const double d2 = (double)p_diff * p_diff;
    s->sum_p_diff2 += d2;
    s->sum_p_diff4 += d2 * d2;
    s->max_p_diff = fmaxf(s->max_p_diff, fabsf(p_diff));
    s->kld_values[s->count] = (float)kl;
    s->p_diff_values[s->count] = p_diff;
    s->count++;
}

/* Mean of a sample from its sums, and the standard error of that mean
 * (0 for fewer than 11 values, as llama.cpp reports). */
static void mean_unc(double sum, double sum2, long n, double *mean, double *unc) {
    *mean = n > 0 ? sum / n : 0.0;
    double v = n > 0 ? sum2 / n - *mean * *mean : 0.0;
    *unc = v > 0 && n > 10 ? sqrt(v / (n - 1)) : 0.0;
}

/* Uncertainty of sqrt(m) given that of m (first order), and of a
 * proportion p over n samples; 0 where llama.cpp's formulas divide by 0. */
static double rms_unc(double m, double m_unc) { return m > 0 ? 0.5 / sqrt(m) * m_unc : 0.0; }
static double top_unc(double p, long n) { return n > 1 ? sqrt(p * (1 - p) / (n - 1)) : 0.0; }

static double covariance(double sa, double sb, double sab, long n) {
    if (n < 10) return 0.0;
    return (sab / n - (sa / n) * (sb / n)) / (n - 1);
}

static int cmp_float(const void *x, const void *y) {
    const float a = *(const float *)x, b = *(const float *)y;
    return (a > b) - (a < b);
}

/* Linear interpolation between order statistics of a sorted array. */
static float percentile(const float *v, long n, float fraction) {
    if (fraction <= 0) return v[0];
    if (fraction >= 1) return v[n - 1];
    float p = fraction * (float)(n - 1);
    const long ip = (long)p;
    p -= (float)ip;
    return (1 - p) * v[ip] + p * v[ip + 1 < n ? ip + 1 : n - 1];
}

static float median(const float *v, long n) { return n % 2 ? v[n / 2] : 0.5f * (v[n / 2] + v[n / 2 - 1]); }

static void print_kld_chunk(const struct kld_state *s, int chunk) {
    double lp, lpu, lb, lbu, kl, klu, mse, mseu;
    mean_unc(s->sum_nll, s->sum_nll2, s->count, &lp, &lpu);
    mean_unc(s->sum_nll_base, s->sum_nll_base2, s->count, &lb, &lbu);
    const double cov = covariance(s->sum_nll, s->sum_nll_base, s->sum_nll_nll_base, s->count);
    mean_unc(s->sum_kld, s->sum_kld2, s->count, &kl, &klu);
    mean_unc(s->sum_p_diff2, s->sum_p_diff4, s->count, &mse, &mseu);
    const double top = (double)s->n_same_top / s->count;
    printf("%4d    %9.4lf ± %9.4lf    %10.5lf ± %10.5lf    %10.5lf ± %10.5lf    %6.3lf ± %6.3lf %%    %6.3lf ± %6.3lf "
           "%%\n",
           chunk, exp(lp), exp(lp) * lpu, lp - lb, sqrt(lpu * lpu + lbu * lbu - 2.0 * cov), kl, klu, 100.0 * sqrt(mse),
           100.0 * rms_unc(mse, mseu), 100.0 * top, 100.0 * top_unc(top, s->count));
}

static void print_kld_final(struct kld_state *s) {
    double lp, lpu, lb, lbu, kl, klu, pd, pdu, mse, mseu;
    mean_unc(s->sum_nll, s->sum_nll2, s->count, &lp, &lpu);
    mean_unc(s->sum_nll_base, s->sum_nll_base2, s->count, &lb, &lbu);
    const double cov = covariance(s->sum_nll, s->sum_nll_base, s->sum_nll_nll_base, s->count);
    const double ppl = exp(lp), ppl_u = ppl * lpu, ppl_b = exp(lb), ppl_bu = ppl_b * lbu;
    const double lr = lp - lb, lr_u = sqrt(lpu * lpu + lbu * lbu - 2.0 * cov);
    printf("====== Perplexity statistics ======\n");
    printf("Mean PPL(Q)                   : %10.6lf ± %10.6lf\n", ppl, ppl_u);
    printf("Mean PPL(base)                : %10.6lf ± %10.6lf\n", ppl_b, ppl_bu);
    printf("Cor(ln(PPL(Q)), ln(PPL(base))): %6.2lf%%\n", 100.0 * cov / (lpu * lbu));
    printf("Mean ln(PPL(Q)/PPL(base))     : %10.6lf ± %10.6lf\n", lr, lr_u);
    printf("Mean PPL(Q)/PPL(base)         : %10.6lf ± %10.6lf\n", exp(lr), exp(lr) * lr_u);
    printf("Mean PPL(Q)-PPL(base)         : %10.6lf ± %10.6lf\n", ppl - ppl_b,
           sqrt(ppl_u * ppl_u + ppl_bu * ppl_bu - 2.0 * ppl * ppl_b * cov));
    printf("\n====== KL divergence statistics ======\n");
    mean_unc(s->sum_kld, s->sum_kld2, s->count, &kl, &klu);
    const long n = s->count;
    float *k = s->kld_values, *d = s->p_diff_values;
    qsort(k, (size_t)n, sizeof(float), cmp_float);
    qsort(d, (size_t)n, sizeof(float), cmp_float);
    printf("Mean    KLD: %10.6lf ± %10.6lf\n", kl, klu);
    printf("Maximum KLD: %10.6f\n", k[n - 1]);
    static const struct {
        const char *label;
        float f;
    } kp[] = {{"99.9%   KLD", 0.999f}, {"99.0%   KLD", 0.990f}, {"95.0%   KLD", 0.950f}, {"90.0%   KLD", 0.900f}};
    for (size_t i = 0; i < sizeof kp / sizeof kp[0]; i++)
        printf("%s: %10.6f\n", kp[i].label, percentile(k, n, kp[i].f));
    printf("Median  KLD: %10.6f\n", median(k, n));
    static const struct {
        const char *label;
        float f;
    } kl_lo[] = {{"10.0%   KLD", 0.100f}, {" 5.0%   KLD", 0.050f}, {" 1.0%   KLD", 0.010f}, {" 0.1%   KLD", 0.001f}};
    for (size_t i = 0; i < sizeof kl_lo / sizeof kl_lo[0]; i++)
        printf("%s: %10.6f\n", kl_lo[i].label, percentile(k, n, kl_lo[i].f));
    printf("Minimum KLD: %10.6f\n", k[0]);
    printf("\n====== Token probability statistics ======\n");
    mean_unc(s->sum_p_diff, s->sum_p_diff2, s->count, &pd, &pdu);
    printf("Mean    Δp: %6.3lf ± %5.3lf %%\n", 100.0 * pd, 100.0 * pdu);
    printf("Maximum Δp: %6.3lf%%\n", 100.0 * d[n - 1]);
    static const struct {
        const char *label;
        float f;
    } dp_hi[] = {{"99.9%   Δp", 0.999f},
                 {"99.0%   Δp", 0.990f},
                 {"95.0%   Δp", 0.950f},
                 {"90.0%   Δp", 0.900f},
                 {"75.0%   Δp", 0.750f}};
    for (size_t i = 0; i < sizeof dp_hi / sizeof dp_hi[0]; i++)
        printf("%s: %6.3lf%%\n", dp_hi[i].label, 100.0 * percentile(d, n, dp_hi[i].f));
    printf("Median  Δp: %6.3lf%%\n", 100.0 * median(d, n));
    static const struct {
        const char *label;
        float f;
    } dp_lo[] = {{"25.0%   Δp", 0.250f},
                 {"10.0%   Δp", 0.100f},
                 {" 5.0%   Δp", 0.050f},
                 {" 1.0%   Δp", 0.010f},
                 {" 0.1%   Δp", 0.001f}};
    for (size_t i = 0; i < sizeof dp_lo / sizeof dp_lo[0]; i++)
        printf("%s: %6.3lf%%\n", dp_lo[i].label, 100.0 * percentile(d, n, dp_lo[i].f));
    printf("Minimum Δp: %6.3lf%%\n", 100.0 * d[0]);
    mean_unc(s->sum_p_diff2, s->sum_p_diff4, s->count, &mse, &mseu);
    printf("RMS Δp    : %6.3lf ± %5.3lf %%\n", 100.0 * sqrt(mse), 100.0 * rms_unc(mse, mseu));
    const double top = (double)s->n_same_top / n;
    printf("Same top p: %6.3lf ± %5.3lf %%\n", 100.0 * top, 100.0 * top_unc(top, n));
}

static int run_kld(const struct args *a, lmoe_engine *e) {
    FILE *in = fopen(a->kl_base, "rb");
    if (!in) {
        fprintf(stderr, "leanmoe: cannot read '%s'\n", a->kl_base);
        return 1;
    }
    char magic[8];
    uint32_t n_ctx = 0;
    int32_t n_vocab = 0, n_chunk = 0;
    if (fread(magic, 1, 8, in) != 8 || memcmp(magic, LOGITS_MAGIC, 8) || fread(&n_ctx, 4, 1, in) != 1 ||
        fread(&n_vocab, 4, 1, in) != 1 || fread(&n_chunk, 4, 1, in) != 1) {
        fprintf(stderr, "leanmoe: '%s' is not a file of log-probabilities (--kl-base ... --save-logits)\n", a->kl_base);
        fclose(in);
        return 1;
    }
    const int n_vocab_model = lmoe_engine_n_vocab(e);
    if (n_vocab != n_vocab_model || n_ctx < 4 || n_ctx > (1u << 24) || n_chunk < 1 || n_chunk > (1 << 24)) {
        fprintf(stderr, "leanmoe: '%s' has n_vocab %d, n_ctx %u, %d chunks; the model has n_vocab %d\n", a->kl_base,
                n_vocab, n_ctx, n_chunk, n_vocab_model);
        fclose(in);
        return 1;
    }
    if (a->n_ctx > 0 && (uint32_t)a->n_ctx != n_ctx)
        fprintf(stderr, "perplexity: using the base file's n_ctx=%u (not -c %d)\n", n_ctx, a->n_ctx);
    const int file_chunks = n_chunk;
    if (a->ppl_chunks > 0 && a->ppl_chunks < n_chunk) n_chunk = a->ppl_chunks;
    const size_t n_tok = (size_t)file_chunks * n_ctx;
    const int first = (int)n_ctx / 2, scored = (int)n_ctx - 1 - first;
    const int nv = 2 * ((n_vocab + 1) / 2) + 4;
    int rc = 1;
    struct evaluator ev;
    memset(&ev, 0, sizeof ev);
    struct kld_state s = {.n_vocab = n_vocab, .nv = nv};
    int32_t *tokens = malloc(sizeof(int32_t) * n_tok);
    s.base = malloc(sizeof(uint16_t) * (size_t)scored * (size_t)nv);
    s.kld_values = malloc(sizeof(float) * (size_t)scored * (size_t)n_chunk);
    s.p_diff_values = malloc(sizeof(float) * (size_t)scored * (size_t)n_chunk);
    if (!tokens || !s.base || !s.kld_values || !s.p_diff_values) {
        fprintf(stderr, "leanmoe: out of memory\n");
        goto done;
    }
    if (fread(tokens, sizeof(int32_t), n_tok, in) != n_tok) {
        fprintf(stderr, "leanmoe: '%s' ends inside its tokens\n", a->kl_base);
        goto done;
    }
    for (size_t i = 0; i < n_tok; i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab) {
            fprintf(stderr, "leanmoe: '%s': token %zu is %d, outside the vocabulary\n", a->kl_base, i, tokens[i]);
            goto done;
        }
    if (evaluator_open(&ev, e, a, (int)n_ctx)) goto done;
    fprintf(stderr, "kl_divergence: computing over %d chunks, n_ctx=%u, batch_size=%u, n_seq=1\n", n_chunk, n_ctx,
            n_ctx);
    for (int i = 0; i < n_chunk; i++) {
        const double t0 = now_s();
        if (fread(s.base, sizeof(uint16_t), (size_t)scored * nv, in) != (size_t)scored * nv) {
            fprintf(stderr, "leanmoe: '%s' ends inside chunk %d's log-probabilities\n", a->kl_base, i + 1);
            goto done;
        }
        s.targets = tokens + (size_t)i * n_ctx + first + 1;
        if (eval_chunk(&ev, tokens + (size_t)i * n_ctx, kld_row, &s)) goto done;
        if (i == 0) {
            fprintf(stderr, "kl_divergence: %.2f seconds per pass - ETA %.2f minutes\n", now_s() - t0,
                    (now_s() - t0) * n_chunk / 60.0);
            printf("\nchunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              "
                   "Δp RMS            Same top p\n");
        }
        print_kld_chunk(&s, i + 1);
        fflush(stdout);
    }
    printf("\n");
    if (s.count < 100) {
        fprintf(stderr, "kl_divergence: only %ld tokens scored; no summary below 100 (as llama.cpp)\n", s.count);
    } else {
        print_kld_final(&s);
    }
    rc = 0;
done:
    evaluator_close(&ev);
    free(tokens);
    free(s.base);
    free(s.kld_values);
    free(s.p_diff_values);
    fclose(in);
    return rc;
}

int cmd_perplexity(const struct args *a) {
    if (a->save_logits && !a->kl_base) {
        fprintf(stderr, "leanmoe: --save-logits needs --kl-base FILE to write to\n");
        return 1;
    }
    lmoe_engine *e = cli_open_model(a, 1, 0);
    if (!e) return 1;
    const int rc = a->kl_base && !a->save_logits ? run_kld(a, e) : run_perplexity(a, e);
    lmoe_engine_close(e);
    return rc;
}
