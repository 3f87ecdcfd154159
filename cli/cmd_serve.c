/*
 * cmd_serve.c - `leanmoe serve`: an OpenAI-compatible HTTP server over one
 * model (server/). This file only turns options into srv_options, opens the
 * model and turns SIGTERM/SIGINT into a drain; the server does the rest.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "server.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

/* The id /v1/models reports: the file name without directory or .gguf. */
static void model_id(const struct args *a, char *out, size_t len) {
    if (!a->model) {
        snprintf(out, len, "leanmoe-tiny");
        return;
    }
    const char *base = strrchr(a->model, '/');
    base = base ? base + 1 : a->model;
    size_t n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".gguf")) n -= 5;
    snprintf(out, len, "%.*s", (int)n, base);
}

int cmd_serve(const struct args *a) {
    char id[256];
    model_id(a, id, sizeof id);
    const char *delay = getenv("LEANMOE_SERVE_STEP_DELAY_MS");
    struct srv_options o = {
        .host = a->host,
        .port = a->port,
        .parallel = a->parallel,
        .kv_pool_mb = a->kv_pool_mb,
        .n_ctx = a->n_ctx,
        .kv_type = a->kv_type,
        .api_key = a->api_key,
        .usd_per_hour = a->usd_per_hour > 0 ? a->usd_per_hour : 0.10,
        .max_body = (size_t)a->max_body,
        .max_queue = a->max_queue,
        .grace_seconds = a->grace_seconds,
        .step_delay_ms = delay ? atoi(delay) : 0,
        .model_id = id,
    };
    /* A handler that only sets a flag is safe in any thread; the server
     * polls it (a signal during loading makes it stop right after).
     * SIGPIPE would kill the process on a write to a client that has gone,
     * which is an ordinary event for a server. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    lmoe_engine *e = cli_open_model(a, 1, 0);
    if (!e) return 1;
    int rc = srv_run(e, &o, &stop_requested);
    lmoe_engine_close(e);
    return rc ? 1 : 0;
}
