/*
 * http.c - the listener: libmicrohttpd with one thread per connection,
 * routes, limits, authentication, and the server's start and drain.
 *
 * A thread per connection lets handlers block: a non-streaming request
 * waits on its job's condition variable, a streaming one in the content
 * reader (stream.c). Both poll the client's socket while they wait, so a
 * client that disconnects frees its slot within a few tens of
 * milliseconds. libmicrohttpd bounds what a hostile client can hold: header
 * memory per connection, idle time, and the number of connections; bodies
 * are bounded here (--max-body).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server.h"

#define CONNECTION_LIMIT     256u        /* threads, at most: one per connection */
#define CONNECTION_TIMEOUT_S 30u         /* an idle or stalled client is dropped */
#define HEADER_MEMORY        (64u << 10) /* headers beyond this get 431 from libmicrohttpd */
#define WAIT_POLL_MS         50          /* how often a waiting handler checks its client */
#define FLUSH_WAIT_S         2.0         /* at shutdown, time for final bytes to reach clients */

double srv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int srv_client_gone(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (fd < 0 || poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL)) return 1;
    if (p.revents & POLLIN) {
        /* Readable without a hang-up flag: a pipelined request, or EOF on
         * kernels that do not report RDHUP. Peek to tell them apart. */
        char c;
        ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    }
    return 0;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- Routes ------------------------------------------------------------ */

enum route { R_HEALTH, R_MODELS, R_METRICS, R_CHAT, R_COMPLETIONS, N_ROUTES };

static const struct {
    const char *path, *method;
} routes[N_ROUTES] = {
    [R_HEALTH] = {"/health", "GET"},
    [R_MODELS] = {"/v1/models", "GET"},
    [R_METRICS] = {"/metrics", "GET"},
    [R_CHAT] = {"/v1/chat/completions", "POST"},
    [R_COMPLETIONS] = {"/v1/completions", "POST"},
};

/* What one request keeps between libmicrohttpd's calls. */
struct req {
    int route;  /* -1: unknown path */
    char *body; /* POST body so far, NUL-terminated */
    size_t len, cap;
};

static const char *endpoint_name(int route) { return route >= 0 ? routes[route].path : "other"; }

/* Queues a response with body (owned, freed by libmicrohttpd) and counts
 * it. A NULL body (out of memory) becomes a bare 500. */
static enum MHD_Result respond(struct MHD_Connection *c, struct srv *srv, int route, int status, char *body,
                               const char *content_type, const char *retry_after) {
    if (!body) {
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        body = strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,"
                      "\"code\":null}}");
        content_type = "application/json";
    }
    struct MHD_Response *r = body ? MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE) : NULL;
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (retry_after) MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, retry_after);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, routes[route].method);
    if (status == MHD_HTTP_UNAUTHORIZED) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    srv_metrics_request(&srv->metrics, endpoint_name(route), status);
    return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *c, struct srv *srv, int route, int status, const char *type,
                                  const char *code, const char *message) {
    struct srv_error err = {.status = status, .type = type, .code = code};
    snprintf(err.message, sizeof err.message, "%s", message);
    return respond(c, srv, route, status, oai_error_json(&err), "application/json",
                   status == MHD_HTTP_TOO_MANY_REQUESTS || status == MHD_HTTP_SERVICE_UNAVAILABLE ? "1" : NULL);
}

/* Compares in time independent of where the strings differ. */
static int same_secret(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    unsigned char d = na != nb;
    for (size_t i = 0; i < nb; i++) d |= (unsigned char)(a[i % (na ? na : 1)] ^ b[i]);
    return d == 0;
}

static int authorized(struct MHD_Connection *c, const struct srv *srv) {
    if (!srv->o->api_key) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7)) return 0;
    h += 7;
    while (*h == ' ') h++;
    return same_secret(h, srv->o->api_key);
}

static int client_fd(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? (int)ci->connect_fd : -1;
}

/* ---- Generation handlers ----------------------------------------------- */

/* Waits for a non-streaming job to finish, watching the client. Returns 0
 * when it finished, -1 when the client left (the job is then cancelled). */
static int wait_job(struct srv_job *j, int fd) {
    pthread_mutex_lock(&j->mu);
    while (!j->finished) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += WAIT_POLL_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
        if (!j->finished && srv_client_gone(fd)) {
            pthread_mutex_unlock(&j->mu);
            srv_job_cancel(j);
            return -1;
        }
    }
    pthread_mutex_unlock(&j->mu);
    return 0;
}

static enum MHD_Result generate(struct MHD_Connection *c, struct srv *srv, struct req *rq) {
    enum srv_kind kind = rq->route == R_CHAT ? SRV_CHAT : SRV_COMPLETION;
    struct srv_job *j = srv_job_new(kind);
    struct srv_error err;
    if (!j) return respond(c, srv, rq->route, 500, NULL, NULL, NULL);
    if (oai_parse_request(srv, kind, rq->body ? rq->body : "", rq->len, j, &err)) {
        srv_job_unref(j);
        return respond(c, srv, rq->route, err.status, oai_error_json(&err), "application/json", NULL);
    }
    j->t_submit = srv_now();
    int rc = srv_sched_submit(srv->sched, j);
    if (rc != SRV_SUBMIT_OK) {
        srv_job_unref(j);
        if (rc == SRV_SUBMIT_FULL)
            return send_error(c, srv, rq->route, MHD_HTTP_TOO_MANY_REQUESTS, "rate_limit_error", "queue_full",
                              "the server is busy: every slot is taken and the queue is full; retry later");
        return send_error(c, srv, rq->route, MHD_HTTP_SERVICE_UNAVAILABLE, "server_error", "shutting_down",
                          "the server is shutting down");
    }
    int fd = client_fd(c);
    if (j->stream) {
        struct srv_stream *st = srv_stream_new(srv, j, fd);
        struct MHD_Response *r =
            st ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, srv_stream_read, st, srv_stream_free) : NULL;
        srv_job_unref(j); /* the stream holds its own reference */
        if (!r) {
            if (st) srv_stream_free(st);
            return respond(c, srv, rq->route, 500, NULL, NULL, NULL);
        }
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        srv_metrics_request(&srv->metrics, endpoint_name(rq->route), MHD_HTTP_OK);
        return ret;
    }
    if (wait_job(j, fd)) {
        srv_job_unref(j);
        srv_metrics_request(&srv->metrics, endpoint_name(rq->route), 499);
        return MHD_NO; /* nobody to answer: close the connection */
    }
    enum MHD_Result ret;
    if (j->finish_reason)
        ret = respond(c, srv, rq->route, MHD_HTTP_OK, oai_response(srv, j), "application/json", NULL);
    else
        ret = send_error(c, srv, rq->route, j->error_status, "server_error", NULL, j->error);
    srv_job_unref(j);
    return ret;
}

/* ---- libmicrohttpd callbacks ------------------------------------------- */

/* Everything that can be refused before the body is read: unknown path,
 * missing key, wrong method, a declared body over the limit. Returns 1
 * when a response was queued (*ret set). */
static int refuse_early(struct MHD_Connection *c, struct srv *srv, struct req *rq, const char *method,
                        enum MHD_Result *ret) {
    int status = 0;
    const char *type = "invalid_request_error", *code = NULL;
    char msg[160];
    const char *len = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (rq->route < 0) {
        status = MHD_HTTP_NOT_FOUND, type = "not_found_error", code = "unknown_url";
        snprintf(msg, sizeof msg, "no such endpoint");
    } else if (rq->route != R_HEALTH && !authorized(c, srv)) {
        status = MHD_HTTP_UNAUTHORIZED, type = "authentication_error", code = "invalid_api_key";
        snprintf(msg, sizeof msg, "a valid API key is required: 'Authorization: Bearer KEY'");
    } else if (strcmp(method, routes[rq->route].method) &&
               !(strcmp(method, "HEAD") == 0 && strcmp(routes[rq->route].method, "GET") == 0)) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED, code = "method_not_allowed";
        snprintf(msg, sizeof msg, "%s takes %s, not %.16s", routes[rq->route].path, routes[rq->route].method, method);
    } else if (len && strtoull(len, NULL, 10) > srv->o->max_body) {
        status = MHD_HTTP_CONTENT_TOO_LARGE, code = "request_too_large";
        snprintf(msg, sizeof msg, "the request body is larger than %zu bytes", srv->o->max_body);
    }
    if (!status) return 0;
    *ret = send_error(c, srv, rq->route, status, type, code, msg);
    return 1;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    struct srv *srv = cls;
    struct req *rq = *con_cls;
    if (!rq) {
        if (!(rq = calloc(1, sizeof(*rq)))) return MHD_NO;
        *con_cls = rq;
        atomic_fetch_add(&srv->in_flight, 1);
        rq->route = -1;
        for (int i = 0; i < N_ROUTES; i++)
            if (!strcmp(url, routes[i].path)) rq->route = i;
        enum MHD_Result ret;
        return refuse_early(c, srv, rq, method, &ret) ? ret : MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        /* A chunked body has no declared length; past the limit the only
         * bounded answer is to drop the connection. */
        if (rq->len + n > srv->o->max_body) {
            srv_metrics_request(&srv->metrics, endpoint_name(rq->route), MHD_HTTP_CONTENT_TOO_LARGE);
            return MHD_NO;
        }
        if (rq->len + n + 1 > rq->cap) {
            size_t cap = (rq->len + n + 1) * 2;
            if (cap > srv->o->max_body + 1) cap = srv->o->max_body + 1;
            char *p = realloc(rq->body, cap);
            if (!p) return MHD_NO;
            rq->body = p;
            rq->cap = cap;
        }
        memcpy(rq->body + rq->len, upload, n);
        rq->len += n;
        rq->body[rq->len] = 0;
        return MHD_YES;
    }
    switch (rq->route) {
    case R_HEALTH:
        if (atomic_load(&srv->stopping))
            return respond(c, srv, rq->route, MHD_HTTP_SERVICE_UNAVAILABLE, strdup("{\"status\":\"stopping\"}"),
                           "application/json", NULL);
        return respond(c, srv, rq->route, MHD_HTTP_OK, strdup("{\"status\":\"ok\"}"), "application/json", NULL);
    case R_MODELS:
        return respond(c, srv, rq->route, MHD_HTTP_OK, oai_models(srv), "application/json", NULL);
    case R_METRICS: {
        struct srv_sched_stats st;
        srv_sched_stats(srv->sched, &st);
        return respond(c, srv, rq->route, MHD_HTTP_OK, srv_metrics_render(&srv->metrics, &st),
                       "text/plain; version=0.0.4; charset=utf-8", NULL);
    }
    default:
        return generate(c, srv, rq);
    }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)c, (void)toe;
    struct srv *srv = cls;
    struct req *rq = *con_cls;
    if (!rq) return;
    free(rq->body);
    free(rq);
    *con_cls = NULL;
    atomic_fetch_sub(&srv->in_flight, 1);
}

static void on_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    fputs("leanmoe: http: ", stderr);
    vfprintf(stderr, fmt, ap);
}

/* ---- Start and drain ---------------------------------------------------- */

static struct MHD_Daemon *listen_on(struct srv *srv, int *port) {
    const struct srv_options *o = srv->o;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *ai = NULL;
    char service[16];
    snprintf(service, sizeof service, "%d", o->port);
    int gai = getaddrinfo(o->host, service, &hints, &ai);
    if (gai) {
        fprintf(stderr, "leanmoe: serve: cannot resolve '%s': %s\n", o->host, gai_strerror(gai));
        return NULL;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG | (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    struct MHD_Daemon *d =
        MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, on_log, srv,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                         MHD_OPTION_CONNECTION_TIMEOUT, CONNECTION_TIMEOUT_S, MHD_OPTION_CONNECTION_LIMIT,
                         CONNECTION_LIMIT, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HEADER_MEMORY, MHD_OPTION_END);
    int err = errno;
    freeaddrinfo(ai);
    if (!d) {
        fprintf(stderr, "leanmoe: serve: cannot listen on %s:%d: %s\n", o->host, o->port, strerror(err));
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    *port = di ? di->port : o->port;
    return d;
}

int srv_run(lmoe_engine *e, const struct srv_options *o, volatile sig_atomic_t *stop) {
    struct srv *srv = calloc(1, sizeof(*srv));
    if (!srv) return -1;
    srv->e = e;
    srv->o = o;
    srv->started = (long)time(NULL);
    atomic_init(&srv->in_flight, 0);
    atomic_init(&srv->stopping, 0);
    srv_metrics_init(&srv->metrics);
    int port = 0, rc = -1;
    struct MHD_Daemon *d = NULL;
    if (!(srv->sched = srv_sched_open(e, o, &srv->metrics)) || !(d = listen_on(srv, &port))) goto done;
    struct srv_sched_stats st;
    srv_sched_stats(srv->sched, &st);
    fprintf(stderr,
            "leanmoe: serving %s on http://%s:%d (%d slots, up to %d tokens each, sharing a KV pool of %d pages of %d "
            "tokens)\n",
            o->model_id, o->host, port, o->parallel, srv_sched_slot_n_ctx(srv->sched), st.kv_pages, st.kv_page_tokens);
    while (!*stop) sleep_ms(50);

    /* Drain: no new connections, no new jobs; running jobs get the grace
     * period, then are cancelled; then clients get a moment to receive
     * their last bytes before every connection is closed. */
    fprintf(stderr, "leanmoe: stopping; in-flight requests have %d s to finish\n", o->grace_seconds);
    atomic_store(&srv->stopping, 1);
    MHD_socket ls = MHD_quiesce_daemon(d);
    if (ls != MHD_INVALID_SOCKET) close(ls);
    srv_sched_stop_accepting(srv->sched);
    double deadline = srv_now() + o->grace_seconds;
    while (!srv_sched_idle(srv->sched) && srv_now() < deadline) sleep_ms(20);
    srv_sched_cancel_all(srv->sched);
    double flush_until = srv_now() + FLUSH_WAIT_S;
    while (atomic_load(&srv->in_flight) > 0 && srv_now() < flush_until) sleep_ms(20);
    rc = 0;
done:
    if (d) MHD_stop_daemon(d);
    srv_sched_close(srv->sched);
    srv_metrics_destroy(&srv->metrics);
    free(srv);
    return rc;
}
