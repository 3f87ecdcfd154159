/*
 * scheduler.c - continuous batching: one thread owns the engine and runs
 * every request in slots, one lmoe_ctx each.
 *
 * Each iteration of the loop (1) admits queued jobs into free slots, (2)
 * drops cancelled jobs, and (3) runs one lmoe_batch_eval with one decode
 * token for every slot that is generating plus at most PREFILL_BUDGET
 * prompt tokens, shared oldest-first among slots still reading their
 * prompt. Capping the prefill per step is what keeps streams flowing: a long
 * prompt joining costs each running stream a few small steps, never one
 * long stall. lmoe_batch_eval gives each sequence the logits it would get
 * alone, so batching never changes an answer.
 *
 * A slot keeps the token ids its KV cache holds after its job ends. A new
 * job goes to the free slot whose cache shares the longest prefix with its
 * prompt; the context is truncated to that prefix and only the rest is
 * evaluated (at least one token, for fresh logits). If a busy slot's cache
 * shares a longer prefix (the same system prompt, requests arriving
 * together), its KV rows are copied instead (lmoe_ctx_copy_prefix).
 *
 * KV memory is one pool of pages (lmoe_kv_pool) that every slot's context
 * draws from, so one long sequence may use what short ones leave. A job is
 * admitted only when the pool can promise it every page it may need
 * (prompt plus max_tokens, at most the slot context): pages not yet taken
 * by running jobs are reserved for them, and caches of idle slots are
 * dropped, least recently used first, to make room. A job that cannot be
 * promised its pages waits in the queue, so a running sequence never finds
 * the pool empty.
 *
 * Cost: each step's wall time is split equally among the sequences in it;
 * a job's share, times the hourly price, is its cost.
 *
 * Locks: s->mu guards the queue and the stats mirror; j->mu guards a job's
 * output and flags. The order is s->mu then j->mu. Slots themselves are
 * touched only by the scheduler thread.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server.h"

/* Prompt tokens per step, over all prefilling slots: one micro-batch of the
 * engine, so a step with prefill costs about one prompt chunk. */
#define PREFILL_BUDGET 64
/* Slots smaller than this cannot hold a useful prompt and answer. */
#define MIN_SLOT_CTX 8

enum { CANCEL_CLIENT = 1, CANCEL_SHUTDOWN = 2 };

struct slot {
    lmoe_ctx *ctx;
    int32_t *cache; /* ids of the tokens in ctx's KV cache, n_cache of them */
    int n_cache;
    uint64_t last_used; /* to spread new prompts over idle slots */

    struct srv_job *job; /* NULL when free */
    int reserved;        /* positions promised to the job (its pages are held for it) */
    uint64_t admitted;   /* admission order: prefill is served oldest first */
    int prefilling;      /* prompt tokens remain to evaluate */
    int n_fed;           /* prompt tokens in the cache so far */
    int n_gen;
    int32_t next; /* the last sampled token, evaluated by the next step */
    lmoe_sampler *smp;
    float *logits, *raw; /* raw: untouched copy for logprobs */

    lmoe_text_stream ts;
    char *pend; /* generated text not yet released: it may begin a stop string */
    size_t pend_len, pend_cap;
    struct srv_token_lp *lps; /* logprobs of tokens not yet released */
    int n_lps, cap_lps;

    double t_admit, t_first, t_last;
    double engine_s;
};

struct srv_sched {
    lmoe_engine *e;
    const struct srv_options *o;
    struct srv_metrics *m;
    int n_vocab, n_slots, slot_n_ctx;
    double kv_bpt;
    lmoe_kv_pool *pool;
    struct lmoe_kv_pool_info pool_info; /* its fixed sizes */
    struct slot *slots;
    uint64_t clock;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct srv_job **queue; /* FIFO, q_len of q_cap */
    int q_len, q_cap;
    int refusing, cancel_all, quit;
    int n_active; /* mirror for stats, under mu */
    long kv_used; /* mirror for stats, under mu */
    pthread_t thread;
    int thread_started;

    /* One step's arguments to lmoe_batch_eval, sized for every slot. */
    lmoe_ctx **b_ctx;
    const int32_t **b_tok;
    int *b_n;
    float **b_logits;
    struct slot **b_slot;
};

/* ---- Jobs -------------------------------------------------------------- */

struct srv_job *srv_job_new(enum srv_kind kind) {
    struct srv_job *j = calloc(1, sizeof(*j));
    if (!j) return NULL;
    j->kind = kind;
    j->refs = 1;
    j->max_tokens = -1;
    pthread_mutex_init(&j->mu, NULL);
    /* Waiters time out on the monotonic clock, immune to clock changes. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->cv, &ca);
    pthread_condattr_destroy(&ca);
    return j;
}

void srv_job_ref(struct srv_job *j) {
    pthread_mutex_lock(&j->mu);
    j->refs++;
    pthread_mutex_unlock(&j->mu);
}

void srv_job_unref(struct srv_job *j) {
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left) return;
    for (struct srv_piece *p = j->head, *next; p; p = next) {
        next = p->next;
        free(p->text);
        free(p->lp);
        free(p);
    }
    for (int i = 0; i < j->n_stop; i++) free(j->stop[i]);
    free(j->prompt);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

void srv_job_cancel(struct srv_job *j) {
    pthread_mutex_lock(&j->mu);
    if (!j->cancelled) j->cancelled = CANCEL_CLIENT;
    pthread_mutex_unlock(&j->mu);
}

static int job_cancelled(struct srv_job *j) {
    pthread_mutex_lock(&j->mu);
    int c = j->cancelled;
    pthread_mutex_unlock(&j->mu);
    return c;
}

/* Ends a job: results become visible to its HTTP thread, which is woken.
 * reason NULL means failure with status and msg. Drops the scheduler's
 * reference. */
static void job_end(struct srv_job *j, const char *reason, int status, const char *msg) {
    pthread_mutex_lock(&j->mu);
    j->finished = 1;
    j->finish_reason = reason;
    if (!reason) {
        j->error_status = status;
        snprintf(j->error, sizeof j->error, "%s", msg);
    }
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    srv_job_unref(j);
}

static void job_end_cancelled(struct srv_job *j, int why) {
    if (why == CANCEL_SHUTDOWN)
        job_end(j, NULL, 503, "the server is shutting down");
    else
        job_end(j, NULL, 499, "the client closed the connection");
}

/* ---- Output: stop strings and pieces ----------------------------------- */

/* How much of the held text can be released. A stop string found anywhere
 * ends the text right before it (*hit = 1). Otherwise, unless final, the
 * longest tail that could still grow into a stop string is held back. */
static size_t releasable(const struct srv_job *j, const char *buf, size_t len, int final, int *hit) {
    size_t cut = len;
    *hit = 0;
    if (len == 0) return 0; /* buf may be NULL */
    for (int i = 0; i < j->n_stop; i++) {
        const char *at = memmem(buf, len, j->stop[i], strlen(j->stop[i]));
        if (at && (size_t)(at - buf) < cut) {
            cut = (size_t)(at - buf);
            *hit = 1;
        }
    }
    if (*hit || final) return cut;
    size_t safe = len;
    for (int i = 0; i < j->n_stop; i++) {
        size_t k = strlen(j->stop[i]);
        for (size_t t = k - 1; t > 0; t--)
            if (t <= len && !memcmp(buf + len - t, j->stop[i], t)) {
                if (len - t < safe) safe = len - t;
                break;
            }
    }
    return safe;
}

/* Moves the first n bytes of held text, and every held logprob, into a new
 * piece of the job. Returns -1 when out of memory. */
static int release(struct slot *sl, size_t n) {
    if (n == 0 && sl->n_lps == 0) return 0;
    struct srv_piece *p = calloc(1, sizeof(*p));
    if (!p || !(p->text = malloc(n + 1))) {
        free(p);
        return -1;
    }
    if (n) memcpy(p->text, sl->pend, n); /* pend is NULL until the first text */
    p->text[n] = 0;
    p->len = n;
    if (sl->n_lps) {
        if (!(p->lp = malloc(sizeof(*p->lp) * (size_t)sl->n_lps))) {
            free(p->text);
            free(p);
            return -1;
        }
        memcpy(p->lp, sl->lps, sizeof(*p->lp) * (size_t)sl->n_lps);
        p->n_lp = sl->n_lps;
        sl->n_lps = 0;
    }
    if (n) memmove(sl->pend, sl->pend + n, sl->pend_len - n);
    sl->pend_len -= n;
    struct srv_job *j = sl->job;
    pthread_mutex_lock(&j->mu);
    if (j->tail)
        j->tail->next = p;
    else
        j->head = p;
    j->tail = p;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return 0;
}

static int pend_append(struct slot *sl, const char *s, size_t n) {
    if (n == 0) return 0; /* pend may still be NULL */
    if (sl->pend_len + n > sl->pend_cap) {
        size_t cap = (sl->pend_len + n) * 2 + 64;
        char *p = realloc(sl->pend, cap);
        if (!p) return -1;
        sl->pend = p;
        sl->pend_cap = cap;
    }
    memcpy(sl->pend + sl->pend_len, s, n);
    sl->pend_len += n;
    return 0;
}

/* ---- Slots ------------------------------------------------------------- */

/* Frees the slot after its job ended; the KV cache and its ids stay for
 * prefix reuse. */
static void slot_clear(struct srv_sched *s, struct slot *sl) {
    lmoe_sampler_close(sl->smp);
    sl->smp = NULL;
    sl->job = NULL;
    sl->n_lps = 0;
    sl->pend_len = 0;
    sl->last_used = ++s->clock;
}

/* Ends the slot's job normally (reason "stop" or "length"), releasing the
 * text still held; or, with reason NULL, as a failure. */
static void slot_finish(struct srv_sched *s, struct slot *sl, const char *reason, int status, const char *msg) {
    struct srv_job *j = sl->job;
    double now = srv_now();
    if (reason) {
        char tail[16];
        size_t k = lmoe_text_stream_flush(&sl->ts, tail);
        int hit;
        if (pend_append(sl, tail, k) == 0) release(sl, releasable(j, sl->pend, sl->pend_len, 1, &hit));
    }
    j->n_gen = sl->n_gen;
    j->prompt_ms = ((sl->t_first ? sl->t_first : now) - sl->t_admit) * 1e3;
    j->decode_ms = sl->t_first ? (now - sl->t_first) * 1e3 : 0;
    j->engine_s = sl->engine_s;
    srv_metrics_tokens(s->m, 0, sl->n_gen, 0);
    job_end(j, reason, status, msg);
    slot_clear(s, sl);
}

static int common_prefix(const int32_t *a, int na, const int32_t *b, int nb) {
    int k = 0;
    while (k < na && k < nb && a[k] == b[k]) k++;
    return k;
}

static int pages_for(const struct srv_sched *s, int tokens) {
    return (tokens + s->pool_info.page_tokens - 1) / s->pool_info.page_tokens;
}

/* Positions a job may fill: its prompt and every token it may generate. */
static int job_extent(const struct srv_sched *s, const struct srv_job *j) {
    long n = (long)j->n_prompt + (j->max_tokens > 0 ? j->max_tokens : s->slot_n_ctx);
    return n < s->slot_n_ctx ? (int)n : s->slot_n_ctx;
}

/* Free pages not promised to a running job. */
static int pages_unpromised(struct srv_sched *s) {
    struct lmoe_kv_pool_info in;
    lmoe_kv_pool_info(s->pool, &in);
    int n = in.n_free;
    for (int i = 0; i < s->n_slots; i++) {
        const struct slot *sl = &s->slots[i];
        if (sl->job) n -= pages_for(s, sl->reserved) - pages_for(s, sl->n_cache);
    }
    return n;
}

/* Whether job j, kept prefix `keep` in slot `to`, can be promised its
 * pages; drops idle slots' caches (least recently used first, never to's)
 * until it can, or none is left. */
static int make_room(struct srv_sched *s, struct slot *to, const struct srv_job *j, int keep) {
    int need = pages_for(s, job_extent(s, j)) - pages_for(s, keep);
    for (;;) {
        if (pages_unpromised(s) >= need) return 1;
        struct slot *lru = NULL;
        for (int i = 0; i < s->n_slots; i++) {
            struct slot *sl = &s->slots[i];
            if (sl != to && !sl->job && sl->n_cache > 0 && (!lru || sl->last_used < lru->last_used)) lru = sl;
        }
        if (!lru) return 0;
        lmoe_ctx_reset(lru->ctx);
        lru->n_cache = 0;
    }
}

/* Puts job j into free slot sl, reusing the longest cached prefix. Returns
 * -1 (job failed) when the sampler cannot be made. Under s->mu. */
static int slot_start(struct srv_sched *s, struct slot *sl, struct srv_job *j) {
    int keep = common_prefix(sl->cache, sl->n_cache, j->prompt, j->n_prompt - 1);
    lmoe_ctx_truncate(sl->ctx, keep);
    sl->n_cache = keep;
    /* Another slot (running, or admitted this round) may hold a longer
     * prefix: copying its KV rows is far cheaper than computing them. The
     * pages fit: make_room promised this job its whole extent. */
    const struct slot *donor = NULL;
    int donor_len = keep;
    for (int i = 0; i < s->n_slots; i++) {
        const struct slot *d = &s->slots[i];
        int len = d == sl ? 0 : common_prefix(d->cache, d->n_cache, j->prompt, j->n_prompt - 1);
        if (len > donor_len) donor = d, donor_len = len;
    }
    if (donor) {
        if (lmoe_ctx_copy_prefix(sl->ctx, donor->ctx, donor_len) == 0) {
            memcpy(sl->cache, donor->cache, sizeof(int32_t) * (size_t)donor_len);
            keep = sl->n_cache = donor_len;
        } else {
            keep = sl->n_cache = 0; /* dst was emptied; compute the prompt */
        }
    }
    sl->reserved = job_extent(s, j);
    if (lmoe_sampler_open(&sl->smp, &j->sampling, s->n_vocab)) {
        job_end(j, NULL, 500, "out of memory for a sampler");
        return -1;
    }
    for (int i = 0; i < j->n_prompt; i++) lmoe_sampler_accept(sl->smp, j->prompt[i]);
    sl->job = j;
    sl->admitted = ++s->clock;
    sl->prefilling = 1;
    sl->n_fed = keep;
    sl->n_gen = 0;
    sl->ts = (lmoe_text_stream){{0}, 0};
    sl->pend_len = 0;
    sl->n_lps = 0;
    sl->t_admit = srv_now();
    sl->t_first = sl->t_last = 0;
    sl->engine_s = 0;
    j->n_cached = keep;
    srv_metrics_tokens(s->m, j->n_prompt, 0, keep);
    return 0;
}

/* Admits queued jobs, oldest first, each into the free slot with the
 * longest common prefix (ties: the least recently used). Cancelled jobs
 * waiting in the queue are ended here. Under s->mu. */
static void admit(struct srv_sched *s) {
    int w = 0;
    for (int i = 0; i < s->q_len; i++) {
        int why = job_cancelled(s->queue[i]);
        if (why)
            job_end_cancelled(s->queue[i], why);
        else
            s->queue[w++] = s->queue[i];
    }
    s->q_len = w;
    while (s->q_len > 0) {
        struct srv_job *j = s->queue[0];
        struct slot *best = NULL;
        int best_len = -1;
        for (int i = 0; i < s->n_slots; i++) {
            struct slot *sl = &s->slots[i];
            if (sl->job) continue;
            int len = common_prefix(sl->cache, sl->n_cache, j->prompt, j->n_prompt - 1);
            if (len > best_len || (len == best_len && sl->last_used < best->last_used)) {
                best = sl;
                best_len = len;
            }
        }
        if (!best) break;
        /* The oldest job waits for pages; later ones wait behind it, so a
         * long request is not starved by short ones. */
        if (!make_room(s, best, j, best_len < 0 ? 0 : best_len)) break;
        memmove(s->queue, s->queue + 1, sizeof(*s->queue) * (size_t)(s->q_len - 1));
        s->q_len--;
        slot_start(s, best, j);
    }
}

/* ---- Sampling one token ------------------------------------------------ */

/* The chosen token's log-probability and the k most likely tokens, from
 * the softmax of the raw logits (before penalties and temperature), as
 * OpenAI reports them. Ties go to the lower id. */
static void token_logprobs(const float *raw, int n_vocab, int32_t tok, int k, struct srv_token_lp *out) {
    float mx = -INFINITY;
    for (int v = 0; v < n_vocab; v++)
        if (raw[v] > mx) mx = raw[v];
    double sum = 0;
    for (int v = 0; v < n_vocab; v++) sum += exp((double)raw[v] - mx);
    double lse = mx + log(sum);
    out->tok = (struct srv_logprob){tok, (float)(raw[tok] - lse)};
    out->n_top = 0;
    for (int v = 0; v < n_vocab && k > 0; v++) {
        int n = out->n_top;
        if (n == k && !(raw[v] > raw[out->top[n - 1].id])) continue;
        int at = n < k ? n : k - 1;
        while (at > 0 && raw[v] > raw[out->top[at - 1].id]) {
            out->top[at] = out->top[at - 1];
            at--;
        }
        out->top[at].id = v;
        if (n < k) out->n_top++;
    }
    for (int i = 0; i < out->n_top; i++) out->top[i].logprob = (float)(raw[out->top[i].id] - lse);
}

/* The slot has fresh logits: sample a token, turn it into text, apply stop
 * strings and limits, and release what the client may see. */
static void on_logits(struct srv_sched *s, struct slot *sl) {
    struct srv_job *j = sl->job;
    if (j->logprobs) memcpy(sl->raw, sl->logits, sizeof(float) * (size_t)s->n_vocab);
    int32_t tok = lmoe_sampler_sample(sl->smp, sl->logits);
    lmoe_sampler_accept(sl->smp, tok);
    double now = srv_now();
    if (!sl->t_first) {
        sl->t_first = now;
        srv_metrics_ttft(s->m, now - j->t_submit);
    } else {
        srv_metrics_tpot(s->m, now - sl->t_last);
    }
    sl->t_last = now;
    if (!j->ignore_eos && lmoe_token_is_eog(s->e, tok)) {
        slot_finish(s, sl, "stop", 0, NULL);
        return;
    }
    sl->n_gen++;
    int oom = 0;
    if (j->logprobs) {
        if (sl->n_lps == sl->cap_lps) {
            int cap = sl->cap_lps * 2 + 8;
            struct srv_token_lp *p = realloc(sl->lps, sizeof(*p) * (size_t)cap);
            if (p) sl->lps = p, sl->cap_lps = cap;
        }
        if (sl->n_lps < sl->cap_lps)
            token_logprobs(sl->raw, s->n_vocab, tok, j->top_logprobs, &sl->lps[sl->n_lps++]);
        else
            oom = 1;
    }
    /* Control tokens (chat markers) are not text. */
    if (!lmoe_token_is_control(s->e, tok)) {
        char bytes[256], chars[3 * (256 + 4)];
        int nb = lmoe_token_bytes(s->e, tok, bytes, sizeof bytes);
        if (nb > (int)sizeof bytes) nb = (int)sizeof bytes;
        if (nb > 0) oom |= pend_append(sl, chars, lmoe_text_stream_push(&sl->ts, bytes, (size_t)nb, chars));
    }
    int hit;
    size_t n = releasable(j, sl->pend, sl->pend_len, 0, &hit);
    oom |= release(sl, n);
    if (oom) {
        slot_finish(s, sl, NULL, 500, "out of memory while generating");
    } else if (hit) {
        sl->ts = (lmoe_text_stream){{0}, 0}; /* the rest of the text is dropped */
        sl->pend_len = 0;
        slot_finish(s, sl, "stop", 0, NULL);
    } else if ((j->max_tokens > 0 && sl->n_gen >= j->max_tokens) || sl->n_cache >= s->slot_n_ctx) {
        slot_finish(s, sl, "length", 0, NULL);
    } else {
        sl->next = tok;
    }
}

/* ---- The step ---------------------------------------------------------- */

/* Runs one batched forward step over every busy slot. */
static void step(struct srv_sched *s) {
    int n = 0, budget = PREFILL_BUDGET;
    for (int i = 0; i < s->n_slots; i++) {
        struct slot *sl = &s->slots[i];
        if (!sl->job || sl->prefilling) continue;
        s->b_ctx[n] = sl->ctx;
        s->b_tok[n] = &sl->next;
        s->b_n[n] = 1;
        s->b_logits[n] = sl->logits;
        s->b_slot[n++] = sl;
    }
    /* Prefill, oldest admission first, until the budget is spent. */
    for (;;) {
        struct slot *oldest = NULL;
        for (int i = 0; i < s->n_slots; i++) {
            struct slot *sl = &s->slots[i];
            int queued = 0;
            for (int k = 0; k < n; k++) queued |= s->b_slot[k] == sl;
            if (sl->job && sl->prefilling && !queued && (!oldest || sl->admitted < oldest->admitted)) oldest = sl;
        }
        if (!oldest || budget == 0) break;
        int left = oldest->job->n_prompt - oldest->n_fed, chunk = left < budget ? left : budget;
        s->b_ctx[n] = oldest->ctx;
        s->b_tok[n] = oldest->job->prompt + oldest->n_fed;
        s->b_n[n] = chunk;
        s->b_logits[n] = chunk == left ? oldest->logits : NULL;
        s->b_slot[n++] = oldest;
        budget -= chunk;
    }
    if (n == 0) return;
    double t0 = srv_now();
    int rc = lmoe_batch_eval(s->b_ctx, (const int32_t *const *)s->b_tok, s->b_n, s->b_logits, 0, n);
    double share = (srv_now() - t0) / n;
    srv_metrics_step(s->m);
    for (int i = 0; i < n; i++) {
        struct slot *sl = s->b_slot[i];
        if (rc) {
            /* Nothing was evaluated; the cache may still be trusted, but a
             * failed step is rare enough to start those slots afresh. */
            char msg[256];
            snprintf(msg, sizeof msg, "engine: %s", lmoe_ctx_error(sl->ctx));
            lmoe_ctx_reset(sl->ctx);
            sl->n_cache = 0;
            slot_finish(s, sl, NULL, 500, msg);
            continue;
        }
        sl->engine_s += share;
        memcpy(sl->cache + sl->n_cache, s->b_tok[i], sizeof(int32_t) * (size_t)s->b_n[i]);
        sl->n_cache += s->b_n[i];
        if (sl->prefilling) {
            sl->n_fed += s->b_n[i];
            if (sl->n_fed < sl->job->n_prompt) continue;
            sl->prefilling = 0;
        }
        on_logits(s, sl);
    }
}

/* Finishes jobs whose client left or that shutdown cancelled. */
static void drop_cancelled(struct srv_sched *s) {
    for (int i = 0; i < s->n_slots; i++) {
        struct slot *sl = &s->slots[i];
        int why = sl->job ? job_cancelled(sl->job) : 0;
        if (!why) continue;
        slot_finish(s, sl, NULL, why == CANCEL_SHUTDOWN ? 503 : 499,
                    why == CANCEL_SHUTDOWN ? "the server is shutting down" : "the client closed the connection");
    }
}

static int n_busy(const struct srv_sched *s) {
    int n = 0;
    for (int i = 0; i < s->n_slots; i++) n += s->slots[i].job != NULL;
    return n;
}

static void *sched_main(void *arg) {
    struct srv_sched *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        for (;;) {
            if (s->cancel_all) {
                for (int i = 0; i < s->q_len; i++) {
                    pthread_mutex_lock(&s->queue[i]->mu);
                    s->queue[i]->cancelled = CANCEL_SHUTDOWN;
                    pthread_mutex_unlock(&s->queue[i]->mu);
                }
                for (int i = 0; i < s->n_slots; i++)
                    if (s->slots[i].job) {
                        pthread_mutex_lock(&s->slots[i].job->mu);
                        s->slots[i].job->cancelled = CANCEL_SHUTDOWN;
                        pthread_mutex_unlock(&s->slots[i].job->mu);
                    }
            }
            admit(s);
            s->n_active = n_busy(s);
            if (s->n_active) break;
            if (s->quit) {
                pthread_mutex_unlock(&s->mu);
                return NULL;
            }
            pthread_cond_wait(&s->cv, &s->mu);
        }
        pthread_mutex_unlock(&s->mu);
        drop_cancelled(s);
        step(s);
        long used = 0;
        for (int i = 0; i < s->n_slots; i++) used += s->slots[i].n_cache;
        pthread_mutex_lock(&s->mu);
        s->kv_used = used;
        s->n_active = n_busy(s);
        pthread_mutex_unlock(&s->mu);
        if (s->o->step_delay_ms > 0) {
            struct timespec ts = {s->o->step_delay_ms / 1000, (long)(s->o->step_delay_ms % 1000) * 1000000L};
            while (nanosleep(&ts, &ts) && errno == EINTR) {
            }
        }
    }
}

/* ---- Open, close, submit ------------------------------------------------ */

struct srv_sched *srv_sched_open(lmoe_engine *e, const struct srv_options *o, struct srv_metrics *m) {
    struct lmoe_model_info info;
    if (lmoe_engine_info(e, &info)) {
        fprintf(stderr, "leanmoe: serve: cannot read the model's info\n");
        return NULL;
    }
    struct srv_sched *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->e = e;
    s->o = o;
    s->m = m;
    s->n_vocab = lmoe_engine_n_vocab(e);
    s->n_slots = o->parallel;
    /* The pool: --kv-pool-mb, or enough for every slot to hold -c tokens
     * (default min(model context, 4096)). A slot's context is capped by the
     * model's, by -c when given, and by the pool; not by a share of it. */
    size_t page_bytes = lmoe_kv_page_bytes(e, LMOE_DEFAULT_PAGE_TOKENS, o->kv_type);
    s->kv_bpt = (double)page_bytes / LMOE_DEFAULT_PAGE_TOKENS;
    int model_ctx = info.context_length > 0 ? info.context_length : LMOE_DEFAULT_N_CTX;
    int want = o->n_ctx > 0 ? o->n_ctx : (model_ctx < LMOE_DEFAULT_N_CTX ? model_ctx : LMOE_DEFAULT_N_CTX);
    double pool = o->kv_pool_mb > 0 ? o->kv_pool_mb * 1048576.0 : (double)s->n_slots * want * s->kv_bpt;
    double n_pages = page_bytes ? floor(pool / (double)page_bytes) : 0;
    if (n_pages > (1 << 30)) n_pages = 1 << 30;
    double pool_tokens = n_pages * LMOE_DEFAULT_PAGE_TOKENS;
    int cap = o->n_ctx > 0 && o->n_ctx < model_ctx ? o->n_ctx : model_ctx;
    s->slot_n_ctx = pool_tokens < cap ? (int)pool_tokens : cap;
    if (s->slot_n_ctx < MIN_SLOT_CTX) {
        fprintf(stderr, "leanmoe: serve: a %.3g MB KV pool holds %d tokens; at least %d are needed\n",
                pool / 1048576.0, s->slot_n_ctx, MIN_SLOT_CTX);
        free(s);
        return NULL;
    }
    struct lmoe_kv_pool_options po = {.n_pages = (int)n_pages, .page_tokens = LMOE_DEFAULT_PAGE_TOKENS,
                                      .kv_type = o->kv_type};
    if (lmoe_kv_pool_open(&s->pool, e, &po)) {
        fprintf(stderr, "leanmoe: serve: out of memory for a %.3g MB KV pool\n", pool / 1048576.0);
        free(s);
        return NULL;
    }
    lmoe_kv_pool_info(s->pool, &s->pool_info);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->q_cap = o->max_queue;
    s->queue = calloc((size_t)s->q_cap + 1, sizeof(*s->queue));
    s->slots = calloc((size_t)s->n_slots, sizeof(*s->slots));
    s->b_ctx = calloc((size_t)s->n_slots, sizeof(*s->b_ctx));
    s->b_tok = calloc((size_t)s->n_slots, sizeof(*s->b_tok));
    s->b_n = calloc((size_t)s->n_slots, sizeof(*s->b_n));
    s->b_logits = calloc((size_t)s->n_slots, sizeof(*s->b_logits));
    s->b_slot = calloc((size_t)s->n_slots, sizeof(*s->b_slot));
    int ok = s->queue && s->slots && s->b_ctx && s->b_tok && s->b_n && s->b_logits && s->b_slot;
    struct lmoe_ctx_options co = {.n_ctx = s->slot_n_ctx, .kv_type = o->kv_type, .pool = s->pool};
    for (int i = 0; ok && i < s->n_slots; i++) {
        struct slot *sl = &s->slots[i];
        ok = !lmoe_ctx_open(&sl->ctx, e, &co) && (sl->cache = malloc(sizeof(int32_t) * (size_t)s->slot_n_ctx)) &&
             (sl->logits = malloc(sizeof(float) * (size_t)s->n_vocab)) &&
             (sl->raw = malloc(sizeof(float) * (size_t)s->n_vocab));
    }
    if (ok && pthread_create(&s->thread, NULL, sched_main, s) == 0) {
        s->thread_started = 1;
        return s;
    }
    fprintf(stderr, "leanmoe: serve: out of memory for %d slots of %d tokens\n", s->n_slots, s->slot_n_ctx);
    srv_sched_close(s);
    return NULL;
}

void srv_sched_close(struct srv_sched *s) {
    if (!s) return;
    if (s->thread_started) {
        pthread_mutex_lock(&s->mu);
        s->quit = s->cancel_all = s->refusing = 1;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    for (int i = 0; s->slots && i < s->n_slots; i++) {
        struct slot *sl = &s->slots[i];
        lmoe_ctx_close(sl->ctx);
        lmoe_sampler_close(sl->smp);
        free(sl->cache);
        free(sl->logits);
        free(sl->raw);
        free(sl->pend);
        free(sl->lps);
    }
    for (int i = 0; i < s->q_len; i++) job_end_cancelled(s->queue[i], CANCEL_SHUTDOWN);
    lmoe_kv_pool_close(s->pool);
    free(s->slots);
    free(s->queue);
    free(s->b_ctx);
    free(s->b_tok);
    free(s->b_n);
    free(s->b_logits);
    free(s->b_slot);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

int srv_sched_submit(struct srv_sched *s, struct srv_job *j) {
    pthread_mutex_lock(&s->mu);
    int rc = s->refusing ? SRV_SUBMIT_STOPPING : s->q_len >= s->q_cap ? SRV_SUBMIT_FULL : SRV_SUBMIT_OK;
    if (rc == SRV_SUBMIT_OK) {
        srv_job_ref(j);
        s->queue[s->q_len++] = j;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int srv_sched_slot_n_ctx(const struct srv_sched *s) { return s->slot_n_ctx; }

void srv_sched_stats(struct srv_sched *s, struct srv_sched_stats *out) {
    pthread_mutex_lock(&s->mu);
    out->queue_depth = s->q_len;
    out->active = s->n_active;
    out->kv_used_tokens = s->kv_used;
    pthread_mutex_unlock(&s->mu);
    out->n_slots = s->n_slots;
    out->slot_n_ctx = s->slot_n_ctx;
    struct lmoe_kv_pool_info in;
    lmoe_kv_pool_info(s->pool, &in);
    out->kv_capacity_tokens = (long)in.n_pages * in.page_tokens;
    out->kv_bytes_per_token = s->kv_bpt;
    out->kv_pages = in.n_pages;
    out->kv_pages_used = in.n_pages - in.n_free;
    out->kv_page_tokens = in.page_tokens;
}

void srv_sched_stop_accepting(struct srv_sched *s) {
    pthread_mutex_lock(&s->mu);
    s->refusing = 1;
    pthread_mutex_unlock(&s->mu);
}

int srv_sched_idle(struct srv_sched *s) {
    pthread_mutex_lock(&s->mu);
    int idle = s->q_len == 0 && s->n_active == 0;
    pthread_mutex_unlock(&s->mu);
    return idle;
}

void srv_sched_cancel_all(struct srv_sched *s) {
    pthread_mutex_lock(&s->mu);
    s->cancel_all = s->refusing = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}
