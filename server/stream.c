/*
 * stream.c - Server-Sent Events for "stream": true.
 *
 * libmicrohttpd pulls the body through srv_stream_read, on the
 * connection's own thread (the daemon runs a thread per connection), so the
 * reader may block until the scheduler releases more output. Each released
 * piece becomes one `data: {chunk}\n\n` event; the end is the closing chunk
 * with the finish reason, the usage chunk if asked for, and `data: [DONE]`.
 *
 * Cancellation: while it waits, the reader watches the client's socket and
 * ends the response with an error as soon as the peer hangs up; a failed
 * write makes libmicrohttpd close the connection. Either way the response
 * is destroyed and srv_stream_free cancels the job, which frees its slot at
 * the scheduler's next step.
 */
#include <errno.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server.h"

/* How often a waiting reader looks at the client's socket. */
#define POLL_MS 50

struct srv_stream {
    struct srv *srv;
    struct srv_job *j;
    int fd;
    const struct srv_piece *seen; /* the last piece turned into an event */
    char *buf;                    /* events not yet handed to libmicrohttpd */
    size_t len, off, cap;
    int opened; /* the opening chunk is out */
    int done;   /* [DONE] is in buf */
};

struct srv_stream *srv_stream_new(struct srv *srv, struct srv_job *j, int fd) {
    struct srv_stream *st = calloc(1, sizeof(*st));
    if (!st) return NULL;
    st->srv = srv;
    st->j = j;
    st->fd = fd;
    srv_job_ref(j);
    return st;
}

void srv_stream_free(void *cls) {
    struct srv_stream *st = cls;
    srv_job_cancel(st->j); /* no effect once it finished */
    srv_job_unref(st->j);
    free(st->buf);
    free(st);
}

/* Appends `data: <json>\n\n`; takes ownership of json. -1 when out of
 * memory (json NULL counts as that). */
static int event(struct srv_stream *st, char *json) {
    if (!json) return -1;
    size_t n = strlen(json), need = st->len + n + 8;
    if (need > st->cap) {
        char *p = realloc(st->buf, need * 2);
        if (!p) {
            free(json);
            return -1;
        }
        st->buf = p;
        st->cap = need * 2;
    }
    memcpy(st->buf + st->len, "data: ", 6);
    memcpy(st->buf + st->len + 6, json, n);
    memcpy(st->buf + st->len + 6 + n, "\n\n", 2);
    st->len += n + 8;
    free(json);
    return 0;
}

/* Waits for output and formats it into buf. -1: the client left or memory
 * ran out; the response ends with an error. */
static int fill(struct srv_stream *st) {
    struct srv_job *j = st->j;
    st->len = st->off = 0;
    if (!st->opened) {
        st->opened = 1;
        /* The chat role chunk goes out at once, so clients see the stream
         * start even while the request waits for a slot. */
        if (j->kind == SRV_CHAT) return event(st, oai_chunk(st->srv, j, NULL, 0));
    }
    pthread_mutex_lock(&j->mu);
    const struct srv_piece *first;
    while (!(first = st->seen ? st->seen->next : j->head) && !j->finished) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += POLL_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
        if (!j->finished && srv_client_gone(st->fd)) {
            pthread_mutex_unlock(&j->mu);
            srv_job_cancel(j);
            return -1;
        }
    }
    const struct srv_piece *last = j->tail;
    int finished = j->finished;
    pthread_mutex_unlock(&j->mu);
    /* Pieces are immutable once linked, so they are read without the lock. */
    for (const struct srv_piece *p = first; p; p = p->next) {
        if (event(st, oai_chunk(st->srv, j, p, 0))) return -1;
        st->seen = p;
        if (p == last) break;
    }
    if (!finished) return 0;
    if (j->finish_reason) {
        if (event(st, oai_chunk(st->srv, j, NULL, 1))) return -1;
        if (j->include_usage && event(st, oai_usage_chunk(st->srv, j))) return -1;
    } else {
        struct srv_error err = {.status = j->error_status, .type = "server_error"};
        snprintf(err.message, sizeof err.message, "%s", j->error);
        if (event(st, oai_error_json(&err))) return -1;
    }
    if (event(st, strdup("[DONE]"))) return -1;
    st->done = 1;
    return 0;
}

ssize_t srv_stream_read(void *cls, uint64_t pos, char *out, size_t max) {
    (void)pos; /* the stream is read in order */
    struct srv_stream *st = cls;
    while (st->off == st->len) {
        if (st->done) return MHD_CONTENT_READER_END_OF_STREAM;
        if (fill(st)) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = st->len - st->off < max ? st->len - st->off : max;
    memcpy(out, st->buf + st->off, n);
    st->off += n;
    return (ssize_t)n;
}
