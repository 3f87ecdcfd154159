/*
 * server.h - what the files of `leanmoe serve` share. The server is four
 * parts, one file each, joined by a "job" (one generation request):
 *
 *   http.c       libmicrohttpd: routes, limits, auth, request bodies; one
 *                thread per connection, so a handler may block on its job.
 *   openai.c     request JSON -> job, job -> response JSON (jansson).
 *   stream.c     SSE: turns a job's output into `data: {...}` chunks as the
 *                scheduler releases it.
 *   scheduler.c  one thread that owns the engine: slots, the bounded queue,
 *                batched steps, prefix reuse, sampling, stop strings, cost.
 *   metrics.c    counters and histograms for GET /metrics.
 *
 * A job is shared by an HTTP thread and the scheduler thread and counted
 * by references; its output is an append-only list of pieces guarded by
 * the job's mutex. Like cli/, the server sees the library only through
 * leanmoe.h.
 */
#ifndef LMOE_SERVER_H
#define LMOE_SERVER_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "leanmoe.h"

/* ---- Options (cmd_serve.c fills them) ---------------------------------- */

struct srv_options {
    const char *host;     /* address to listen on, e.g. "127.0.0.1" */
    int port;             /* 0 = any free port (printed at start) */
    int parallel;         /* slots: sequences decoded together */
    double kv_pool_mb;    /* KV pool shared by all slots; 0 = parallel x n_ctx (or min(model's, 4096)) tokens */
    int n_ctx;            /* -c: most tokens of one sequence; 0 = the model's (and the pool's) limit */
    int kv_type;          /* enum lmoe_kv_type */
    const char *api_key;  /* NULL = no auth */
    double usd_per_hour;  /* price of the machine, for the cost field */
    size_t max_body;      /* request bodies above this get 413 */
    int max_queue;        /* waiting requests above this get 429 */
    int grace_seconds;    /* on SIGTERM: how long in-flight requests may finish */
    int step_delay_ms;    /* test hook (LEANMOE_SERVE_STEP_DELAY_MS): sleep after each step */
    const char *model_id; /* the name /v1/models reports */
};

/* Runs the server until *stop becomes nonzero (set by a signal handler),
 * then drains: stops accepting, lets running requests finish for up to
 * grace_seconds, cancels the rest. Returns 0, or -1 with a message on
 * stderr if it could not start. */
int srv_run(lmoe_engine *e, const struct srv_options *o, volatile sig_atomic_t *stop);

/* ---- Jobs -------------------------------------------------------------- */

#define SRV_MAX_STOP         8
#define SRV_MAX_TOP_LOGPROBS 20

enum srv_kind { SRV_CHAT = 0, SRV_COMPLETION = 1 };

struct srv_logprob {
    int32_t id;
    float logprob; /* natural log of the softmax of the raw logits */
};

/* One generated token's probability, with the most likely alternatives. */
struct srv_token_lp {
    struct srv_logprob tok;
    int n_top;
    struct srv_logprob top[SRV_MAX_TOP_LOGPROBS];
};

/* Output released by the scheduler: text that can no longer be part of a
 * stop string (whole UTF-8 characters), and the tokens sampled since the
 * previous piece. Immutable once appended. */
struct srv_piece {
    char *text;
    size_t len;
    int n_lp;
    struct srv_token_lp *lp; /* n_lp entries when logprobs were asked for */
    struct srv_piece *next;
};

struct srv_job {
    /* The request, written by the HTTP thread before submit, then read-only. */
    enum srv_kind kind;
    char id[48];
    long created;
    int stream, include_usage;
    int32_t *prompt;
    int n_prompt;
    int max_tokens; /* -1: until end of generation or a full context */
    int ignore_eos;
    struct lmoe_sampler_options sampling;
    char *stop[SRV_MAX_STOP];
    int n_stop;
    int logprobs;     /* 1: report the chosen token's logprob */
    int top_logprobs; /* alternatives per token, <= SRV_MAX_TOP_LOGPROBS */
    double t_submit;  /* monotonic seconds */

    /* Shared state, under mu; cv is signalled whenever it changes. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    struct srv_piece *head, *tail;
    int cancelled;             /* the client went away or the server is stopping */
    int finished;              /* no more pieces will come */
    const char *finish_reason; /* "stop", "length", or NULL after an error */
    char error[256];           /* set when the job failed */
    int error_status;          /* HTTP status for that error */

    /* Results, written by the scheduler before finished is set. */
    int n_cached;     /* prompt tokens found in the slot's cache */
    int n_gen;        /* completion tokens */
    double prompt_ms; /* admission to first logits */
    double decode_ms; /* first logits to the end */
    double engine_s;  /* its share of the batched steps it was in */

    /* Only the one HTTP thread that answers the job touches this. */
    size_t text_offset; /* completions logprobs: text bytes reported so far */
};

/* A job with one reference (the caller's); NULL if out of memory. */
struct srv_job *srv_job_new(enum srv_kind kind);
void srv_job_ref(struct srv_job *j);
void srv_job_unref(struct srv_job *j); /* frees at zero */
/* Asks the scheduler to drop the job; it finishes soon after. */
void srv_job_cancel(struct srv_job *j);

/* ---- Metrics ----------------------------------------------------------- */

#define SRV_N_TTFT_BUCKETS  12
#define SRV_N_TPOT_BUCKETS  12
#define SRV_MAX_STATUS_ROWS 64

struct srv_histogram {
    const double *bounds; /* upper bounds in seconds, ascending; +Inf implied */
    int n_bounds;
    uint64_t counts[16]; /* per bucket, not cumulative; last = +Inf */
    double sum;
    uint64_t n;
};

struct srv_metrics {
    pthread_mutex_t mu;
    struct {
        const char *endpoint;
        int status;
        uint64_t n;
    } requests[SRV_MAX_STATUS_ROWS];
    int n_requests_rows;
    uint64_t prompt_tokens, generated_tokens, prefix_hit_tokens, steps;
    struct srv_histogram ttft, tpot;
};

void srv_metrics_init(struct srv_metrics *m);
void srv_metrics_destroy(struct srv_metrics *m);
void srv_metrics_request(struct srv_metrics *m, const char *endpoint, int status);
void srv_metrics_tokens(struct srv_metrics *m, int prompt, int generated, int prefix_hits);
void srv_metrics_ttft(struct srv_metrics *m, double seconds);
void srv_metrics_tpot(struct srv_metrics *m, double seconds);
void srv_metrics_step(struct srv_metrics *m);
struct srv_sched_stats;
/* The Prometheus text of m plus the scheduler's gauges. Owned: free();
 * NULL when out of memory. */
char *srv_metrics_render(struct srv_metrics *m, const struct srv_sched_stats *st);

/* ---- Scheduler --------------------------------------------------------- */

struct srv_sched;

struct srv_sched_stats {
    int queue_depth, active, n_slots, slot_n_ctx;
    long kv_used_tokens, kv_capacity_tokens; /* cached tokens, all slots; the pool's size */
    double kv_bytes_per_token;
    int kv_pages, kv_pages_used, kv_page_tokens; /* the paged pool */
};

/* Opens the KV pool, the slots (contexts drawing from it) and the thread.
 * Prints the reason to stderr and returns NULL if it cannot. */
struct srv_sched *srv_sched_open(lmoe_engine *e, const struct srv_options *o, struct srv_metrics *m);
/* Cancels whatever runs, joins the thread, frees the slots. */
void srv_sched_close(struct srv_sched *s);

enum { SRV_SUBMIT_OK = 0, SRV_SUBMIT_FULL = -1, SRV_SUBMIT_STOPPING = -2 };
/* Queues a job; the scheduler takes its own reference. */
int srv_sched_submit(struct srv_sched *s, struct srv_job *j);
int srv_sched_slot_n_ctx(const struct srv_sched *s);
void srv_sched_stats(struct srv_sched *s, struct srv_sched_stats *out);
/* Refuses new jobs from now on. */
void srv_sched_stop_accepting(struct srv_sched *s);
/* 1 when nothing is queued or running. */
int srv_sched_idle(struct srv_sched *s);
/* Cancels every queued and running job. */
void srv_sched_cancel_all(struct srv_sched *s);

/* ---- OpenAI JSON (openai.c) -------------------------------------------- */

/* Everything a handler needs to parse and answer; owned by http.c. */
struct srv {
    lmoe_engine *e;
    const struct srv_options *o;
    struct srv_sched *sched;
    struct srv_metrics metrics;
    long started;         /* unix time, for /v1/models */
    atomic_int stopping;  /* draining: /health answers 503 */
    atomic_int in_flight; /* requests between first callback and completion */
};

/* An HTTP error to send: status and the OpenAI error fields. */
struct srv_error {
    int status;
    const char *type, *param, *code;
    char message[320];
};

/* Fills a job from a request body; on a bad request returns -1 with err
 * filled (status 400 and the offending param). */
int oai_parse_request(const struct srv *srv, enum srv_kind kind, const char *body, size_t len, struct srv_job *j,
                      struct srv_error *err);
/* The whole answer of a finished job, as a JSON text. Owned: free(). */
char *oai_response(const struct srv *srv, struct srv_job *j);
/* One streaming chunk: a piece's text and logprobs (p), the role-only
 * opening chunk (p == NULL, final == 0), or the closing chunk with the
 * finish reason (final == 1). Owned: free(). */
char *oai_chunk(const struct srv *srv, struct srv_job *j, const struct srv_piece *p, int final);
/* The usage-only chunk of stream_options.include_usage. Owned: free(). */
char *oai_usage_chunk(const struct srv *srv, struct srv_job *j);
/* {"error":{...}} for err. Owned: free(). */
char *oai_error_json(const struct srv_error *err);
/* GET /v1/models. Owned: free(). */
char *oai_models(const struct srv *srv);

/* ---- SSE (stream.c) ---------------------------------------------------- */

struct srv_stream;
/* A reader over a submitted job's output for MHD's callback response; takes
 * a reference to j. fd is the client's socket, watched for hang-ups. */
struct srv_stream *srv_stream_new(struct srv *srv, struct srv_job *j, int fd);
/* libmicrohttpd's content reader and free callbacks. */
ssize_t srv_stream_read(void *cls, uint64_t pos, char *buf, size_t max);
void srv_stream_free(void *cls);

/* ---- Shared helpers (http.c) ------------------------------------------- */

double srv_now(void); /* monotonic seconds */
/* 1 when the peer of fd has closed or reset its side. */
int srv_client_gone(int fd);

#endif
