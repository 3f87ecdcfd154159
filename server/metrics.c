/*
 * metrics.c - the numbers GET /metrics reports, in Prometheus text format.
 *
 * Counters and histograms live in one struct behind one mutex: they are
 * touched a few times per request and once per token, far below the cost of
 * a forward step, so a lock is simpler than atomics and cannot tear a
 * histogram between its buckets and its sum. Gauges (queue depth, active
 * sequences, KV use) are not stored here; the scheduler reports them at
 * scrape time.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

/* Time to first token spans queueing and prefill: milliseconds to seconds. */
static const double ttft_bounds[SRV_N_TTFT_BUCKETS - 1] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
/* Time per output token: one batched step, sub-millisecond on tiny models. */
static const double tpot_bounds[SRV_N_TPOT_BUCKETS - 1] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                           0.05,   0.1,   0.25,   0.5,   1};

void srv_metrics_init(struct srv_metrics *m) {
    memset(m, 0, sizeof(*m));
    pthread_mutex_init(&m->mu, NULL);
    m->ttft.bounds = ttft_bounds;
    m->ttft.n_bounds = SRV_N_TTFT_BUCKETS - 1;
    m->tpot.bounds = tpot_bounds;
    m->tpot.n_bounds = SRV_N_TPOT_BUCKETS - 1;
}

void srv_metrics_destroy(struct srv_metrics *m) { pthread_mutex_destroy(&m->mu); }

/* endpoint must be a static string (a route name); unknown paths are all
 * counted as "other" so a scanner cannot grow the table. */
void srv_metrics_request(struct srv_metrics *m, const char *endpoint, int status) {
    pthread_mutex_lock(&m->mu);
    int i = 0;
    while (i < m->n_requests_rows && (m->requests[i].status != status || strcmp(m->requests[i].endpoint, endpoint)))
        i++;
    if (i == m->n_requests_rows && i < SRV_MAX_STATUS_ROWS) {
        m->requests[i].endpoint = endpoint;
        m->requests[i].status = status;
        m->n_requests_rows++;
    }
    if (i < SRV_MAX_STATUS_ROWS) m->requests[i].n++;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_tokens(struct srv_metrics *m, int prompt, int generated, int prefix_hits) {
    pthread_mutex_lock(&m->mu);
    m->prompt_tokens += (uint64_t)prompt;
    m->generated_tokens += (uint64_t)generated;
    m->prefix_hit_tokens += (uint64_t)prefix_hits;
    pthread_mutex_unlock(&m->mu);
}

static void observe(struct srv_metrics *m, struct srv_histogram *h, double v) {
    pthread_mutex_lock(&m->mu);
    int b = 0;
    while (b < h->n_bounds && v > h->bounds[b]) b++;
    h->counts[b]++;
    h->sum += v;
    h->n++;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_ttft(struct srv_metrics *m, double seconds) { observe(m, &m->ttft, seconds); }
void srv_metrics_tpot(struct srv_metrics *m, double seconds) { observe(m, &m->tpot, seconds); }

/* A growing text buffer; on allocation failure it stays NULL and the
 * scrape answers 500. */
struct text {
    char *buf;
    size_t len, cap;
};

static void put(struct text *t, const char *fmt, ...) {
    va_list ap;
    for (int tries = 0; t->buf && tries < 2; tries++) {
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = (t->len + (size_t)n + 1) * 2;
        char *p = realloc(t->buf, cap);
        if (!p) {
            free(t->buf);
            t->buf = NULL;
            return;
        }
        t->buf = p;
        t->cap = cap;
    }
}

static void put_histogram(struct text *t, const char *name, const char *help, const struct srv_histogram *h) {
    put(t, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int b = 0; b < h->n_bounds; b++) {
        cum += h->counts[b];
        put(t, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[b], (unsigned long long)cum);
    }
    cum += h->counts[h->n_bounds];
    put(t, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, (unsigned long long)cum, name, h->sum,
        name, (unsigned long long)h->n);
}

static void put_value(struct text *t, const char *name, const char *type, const char *help, double v) {
    put(t, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

char *srv_metrics_render(struct srv_metrics *m, const struct srv_sched_stats *st) {
    struct text t = {malloc(4096), 0, 4096};
    pthread_mutex_lock(&m->mu);
    put(&t, "# HELP leanmoe_requests_total HTTP requests answered, by endpoint and status.\n"
            "# TYPE leanmoe_requests_total counter\n");
    for (int i = 0; i < m->n_requests_rows; i++)
        put(&t, "leanmoe_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n", m->requests[i].endpoint,
            m->requests[i].status, (unsigned long long)m->requests[i].n);
    put_value(&t, "leanmoe_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.",
              (double)m->prompt_tokens);
    put_value(&t, "leanmoe_generation_tokens_total", "counter", "Tokens generated.", (double)m->generated_tokens);
    put_value(&t, "leanmoe_prefix_cache_hit_tokens_total", "counter",
              "Prompt tokens reused from a slot's KV cache instead of evaluated.", (double)m->prefix_hit_tokens);
    put_value(&t, "leanmoe_steps_total", "counter", "Batched forward steps run.", (double)m->steps);
    put_histogram(&t, "leanmoe_time_to_first_token_seconds", "From request arrival to its first token.", &m->ttft);
    put_histogram(&t, "leanmoe_time_per_output_token_seconds", "Time between consecutive tokens of a sequence.",
                  &m->tpot);
    pthread_mutex_unlock(&m->mu);
    put_value(&t, "leanmoe_queue_depth", "gauge", "Requests waiting for a slot.", st->queue_depth);
    put_value(&t, "leanmoe_active_sequences", "gauge", "Sequences in prefill or decode.", st->active);
    put_value(&t, "leanmoe_slots", "gauge", "Slots (--parallel).", st->n_slots);
    put_value(&t, "leanmoe_kv_cache_used_tokens", "gauge", "Tokens held in the slots' KV caches.",
              (double)st->kv_used_tokens);
    put_value(&t, "leanmoe_kv_cache_capacity_tokens", "gauge", "Tokens the KV pool can hold.",
              (double)st->kv_capacity_tokens);
    put_value(&t, "leanmoe_kv_pool_pages", "gauge", "Pages in the KV pool.", st->kv_pages);
    put_value(&t, "leanmoe_kv_pool_pages_used", "gauge", "Pages held by the slots' caches.", st->kv_pages_used);
    put_value(&t, "leanmoe_kv_pool_page_tokens", "gauge", "Positions per page.", st->kv_page_tokens);
    put_value(&t, "leanmoe_kv_cache_used_bytes", "gauge", "Bytes of KV cache in use.",
              (double)st->kv_used_tokens * st->kv_bytes_per_token);
    put_value(&t, "leanmoe_kv_cache_usage_ratio", "gauge", "Pool pages used over pages.",
              st->kv_pages ? (double)st->kv_pages_used / (double)st->kv_pages : 0.0);
    return t.buf;
}

void srv_metrics_step(struct srv_metrics *m) {
    pthread_mutex_lock(&m->mu);
    m->steps++;
    pthread_mutex_unlock(&m->mu);
}
