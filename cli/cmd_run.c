/*
 * cmd_run.c - `leanmoe run` (one prompt, streamed continuation) and
 * `leanmoe chat` (an interactive conversation in the model's chat format).
 *
 * Only generated text goes to stdout, as it is produced, in whole UTF-8
 * characters; statistics go to stderr. A chat keeps its conversation in
 * the KV cache: each turn re-renders the conversation, finds how much of it
 * the cache already holds, and evaluates only the rest.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Text that has been generated but not printed yet, held back while it
 * could still become a stop string. */
struct out_text {
    char *buf;
    size_t len, cap;
};

static int out_append(struct out_text *o, const char *s, size_t n) {
    if (o->len + n + 1 > o->cap) {
        size_t cap = (o->len + n + 1) * 2;
        char *p = realloc(o->buf, cap);
        if (!p) return -1;
        o->buf = p;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = 0;
    return 0;
}

/* Prints what can no longer be part of a stop string; returns 1 when a stop
 * string was found (text before it printed, the rest dropped). */
static int out_flush(struct out_text *o, const struct args *a, struct out_text *reply, int final) {
    size_t safe = o->len, cut = o->len;
    int stopped = 0;
    for (int i = 0; i < a->n_stop; i++) {
        char *hit = strstr(o->buf ? o->buf : "", a->stop[i]);
        if (hit && (size_t)(hit - o->buf) < cut) { cut = (size_t)(hit - o->buf); stopped = 1; }
    }
    if (stopped) safe = cut;
    else if (!final)
        /* Hold back the longest tail that begins some stop string. */
        for (int i = 0; i < a->n_stop; i++) {
            size_t k = strlen(a->stop[i]);
            for (size_t t = k - 1; t > 0; t--)
                if (t <= o->len && !memcmp(o->buf + o->len - t, a->stop[i], t)) {
                    if (o->len - t < safe) safe = o->len - t;
                    break;
                }
        }
    fwrite(o->buf, 1, safe, stdout);
    fflush(stdout);
    if (reply) out_append(reply, o->buf, safe);
    memmove(o->buf, o->buf + safe, o->len - safe);
    o->len -= safe;
    if (o->buf) o->buf[o->len] = 0;
    return stopped;
}

struct gen_stats {
    int n_prompt, n_gen;
    double t_prompt, t_gen;
};

/* Samples up to n_predict tokens after the logits of the last evaluated
 * token, printing them. Stops at an end-of-generation token (unless
 * --ignore-eos), a stop string, or a full context. The reply text (printed
 * part) is appended to reply when not NULL. */
static int generate(lmoe_engine *e, lmoe_ctx *c, lmoe_sampler *smp, float *logits, const struct args *a,
                    struct out_text *reply, struct gen_stats *st, int32_t *evaluated) {
    lmoe_text_stream ts = {{0}, 0};
    struct out_text pending = {0};
    char bytes[256], chars[3 * (256 + 4)];
    int rc = 0, stopped = 0;
    double t0 = now();
    for (int i = 0; a->n_predict < 0 || i < a->n_predict; i++) {
        int32_t tok = lmoe_sampler_sample(smp, logits);
        lmoe_sampler_accept(smp, tok);
        if (!a->ignore_eos && lmoe_token_is_eog(e, tok)) break;
        /* Control tokens (chat markers) are not text to show. */
        if (!lmoe_token_is_control(e, tok)) {
            int nb = lmoe_token_bytes(e, tok, bytes, sizeof bytes);
            if (nb > (int)sizeof bytes) nb = (int)sizeof bytes;
            if (nb > 0) {
                size_t k = lmoe_text_stream_push(&ts, bytes, (size_t)nb, chars);
                out_append(&pending, chars, k);
                if ((stopped = out_flush(&pending, a, reply, 0))) {
                    st->n_gen++;
                    break;
                }
            }
        }
        st->n_gen++;
        if (lmoe_ctx_n_past(c) >= lmoe_ctx_n_ctx(c)) {
            fprintf(stderr, "\nleanmoe: context full (%d tokens); stopping\n", lmoe_ctx_n_ctx(c));
            break;
        }
        if (lmoe_ctx_eval(c, &tok, 1, logits, 0)) {
            fprintf(stderr, "\nleanmoe: %s\n", lmoe_ctx_error(c));
            rc = 1;
            break;
        }
        if (evaluated) evaluated[lmoe_ctx_n_past(c) - 1] = tok;
    }
    if (!stopped) {
        size_t k = lmoe_text_stream_flush(&ts, chars);
        out_append(&pending, chars, k);
        out_flush(&pending, a, reply, 1);
    }
    free(pending.buf);
    st->t_gen += now() - t0;
    return rc;
}

static void print_stats(const struct gen_stats *st, const struct args *a) {
    fprintf(stderr, "\nleanmoe: prompt %d tokens in %.3f s (%.1f tok/s); generated %d tokens in %.3f s (%.1f tok/s); seed %llu\n",
            st->n_prompt, st->t_prompt, st->t_prompt > 0 ? st->n_prompt / st->t_prompt : 0.0, st->n_gen,
            st->t_gen, st->t_gen > 0 ? st->n_gen / st->t_gen : 0.0, (unsigned long long)a->sampling.seed);
}

/* Opens the model, a context and a sampler for run and chat. */
static int setup(const struct args *a, lmoe_engine **e, lmoe_ctx **c, lmoe_sampler **s, float **logits) {
    if (!(*e = cli_open_model(a, 1, 0))) return -1;
    struct lmoe_ctx_options co = {.n_ctx = a->n_ctx, .kv_type = a->kv_type};
    int n_vocab = lmoe_engine_n_vocab(*e);
    if (lmoe_ctx_open(c, *e, &co) || lmoe_sampler_open(s, &a->sampling, n_vocab) ||
        !(*logits = malloc(sizeof(float) * (size_t)n_vocab))) {
        fprintf(stderr, "leanmoe: out of memory for a %d-token context\n", a->n_ctx);
        return -1;
    }
    return 0;
}

int cmd_run(const struct args *a) {
    size_t len = 0;
    char *file_text = NULL;
    const char *prompt = a->prompt ? a->prompt : a->text;
    if (a->prompt_file) {
        if (!(file_text = cli_read_file(a->prompt_file, &len))) return 1;
        prompt = file_text;
    } else if (!prompt) {
        fprintf(stderr, "leanmoe: run needs a prompt (-p TEXT or -f FILE)\n");
        return 1;
    } else {
        len = strlen(prompt);
    }
    lmoe_engine *e = NULL;
    lmoe_ctx *c = NULL;
    lmoe_sampler *smp = NULL;
    float *logits = NULL;
    int32_t *ids = NULL;
    int n = 0, rc = 1;
    char err[256];
    struct gen_stats st = {0};
    if (setup(a, &e, &c, &smp, &logits)) goto done;
    if (lmoe_tokenize(e, prompt, len, 1, 0, &ids, &n, err, sizeof err)) {
        fprintf(stderr, "leanmoe: %s\n", err);
        goto done;
    }
    /* An empty prompt starts from BOS alone; without BOS there is nothing
     * to continue. */
    if (n == 0) {
        fprintf(stderr, "leanmoe: the prompt is empty and the model has no BOS token to start from\n");
        goto done;
    }
    if (n >= lmoe_ctx_n_ctx(c)) {
        fprintf(stderr, "leanmoe: the prompt has %d tokens; the context holds %d (raise it with --ctx)\n", n,
                lmoe_ctx_n_ctx(c));
        goto done;
    }
    for (int i = 0; i < n; i++) lmoe_sampler_accept(smp, ids[i]);
    double t0 = now();
    if (lmoe_ctx_eval(c, ids, n, logits, 0)) {
        fprintf(stderr, "leanmoe: %s\n", lmoe_ctx_error(c));
        goto done;
    }
    st.n_prompt = n;
    st.t_prompt = now() - t0;
    rc = generate(e, c, smp, logits, a, NULL, &st, NULL);
    printf("\n");
    print_stats(&st, a);
done:
    free(ids);
    free(logits);
    free(file_text);
    lmoe_sampler_close(smp);
    lmoe_ctx_close(c);
    lmoe_engine_close(e);
    return rc;
}

/* Reads one line from stdin into a growing buffer; NULL at end of input. */
static char *read_line(char **buf, size_t *cap) {
    size_t n = 0;
    int ch;
    while ((ch = getchar()) != EOF && ch != '\n') {
        if (n + 2 > *cap) {
            char *p = realloc(*buf, *cap = *cap ? *cap * 2 : 256);
            if (!p) return NULL;
            *buf = p;
        }
        (*buf)[n++] = (char)ch;
    }
    if (ch == EOF && n == 0) return NULL;
    if (!*buf && !(*buf = malloc(*cap = 1))) return NULL;
    (*buf)[n] = 0;
    return *buf;
}

int cmd_chat(const struct args *a) {
    lmoe_engine *e = NULL;
    lmoe_ctx *c = NULL;
    lmoe_sampler *smp = NULL;
    float *logits = NULL;
    int rc = 1, n_msgs = 0, cap_msgs = 0, n_cached = 0;
    struct lmoe_chat_msg *msgs = NULL;
    int32_t *cached = NULL; /* the tokens now in the KV cache */
    char *line = NULL, err[256];
    size_t line_cap = 0;
    if (setup(a, &e, &c, &smp, &logits)) goto done;
    if (!(cached = malloc(sizeof(int32_t) * (size_t)lmoe_ctx_n_ctx(c)))) goto done;
    fprintf(stderr, "leanmoe chat (%s format); /reset starts over, /exit or end of input quits\n",
            lmoe_chat_format(e));
    if (a->system) {
        msgs = malloc(sizeof(*msgs) * (size_t)(cap_msgs = 16));
        if (!msgs) goto done;
        msgs[n_msgs++] = (struct lmoe_chat_msg){"system", strdup(a->system)};
    }
    for (;;) {
        fprintf(stderr, "> ");
        if (!read_line(&line, &line_cap) || !strcmp(line, "/exit")) break;
        if (!strcmp(line, "/reset")) {
            for (int i = 0; i < n_msgs; i++)
                if (strcmp(msgs[i].role, "system")) free((char *)msgs[i].content), msgs[i].content = NULL;
            n_msgs = a->system ? 1 : 0;
            n_cached = 0;
            lmoe_ctx_reset(c);
            lmoe_sampler_reset(smp);
            continue;
        }
        if (!line[0]) continue;
        if (n_msgs + 2 > cap_msgs) {
            struct lmoe_chat_msg *p = realloc(msgs, sizeof(*msgs) * (size_t)(cap_msgs = cap_msgs * 2 + 16));
            if (!p) goto done;
            msgs = p;
        }
        msgs[n_msgs++] = (struct lmoe_chat_msg){"user", strdup(line)};
        char *text = lmoe_chat_render(e, msgs, n_msgs, 1);
        int32_t *ids;
        int n;
        if (!text || lmoe_tokenize(e, text, strlen(text), 0, 1, &ids, &n, err, sizeof err)) {
            fprintf(stderr, "leanmoe: %s\n", text ? err : "out of memory");
            free(text);
            goto done;
        }
        free(text);
        if (n >= lmoe_ctx_n_ctx(c)) {
            fprintf(stderr, "leanmoe: the conversation no longer fits the %d-token context; /reset\n",
                    lmoe_ctx_n_ctx(c));
            free(ids);
            free((char *)msgs[--n_msgs].content);
            continue;
        }
        /* Reuse the cached prefix; always evaluate at least one token to
         * get fresh logits. */
        int keep = 0;
        while (keep < n_cached && keep < n - 1 && cached[keep] == ids[keep]) keep++;
        lmoe_ctx_truncate(c, keep);
        struct gen_stats st = {.n_prompt = n - keep};
        double t0 = now();
        if (lmoe_ctx_eval(c, ids + keep, n - keep, logits, 0)) {
            fprintf(stderr, "leanmoe: %s\n", lmoe_ctx_error(c));
            free(ids);
            goto done;
        }
        st.t_prompt = now() - t0;
        memcpy(cached, ids, sizeof(int32_t) * (size_t)n);
        free(ids);
        struct out_text reply = {0};
        generate(e, c, smp, logits, a, &reply, &st, cached);
        printf("\n");
        print_stats(&st, a);
        n_cached = lmoe_ctx_n_past(c); /* prompt + reply tokens, in order */
        msgs[n_msgs++] = (struct lmoe_chat_msg){"assistant", reply.buf ? reply.buf : strdup("")};
    }
    rc = 0;
done:
    for (int i = 0; i < n_msgs; i++) free((char *)msgs[i].content);
    free(msgs);
    free(cached);
    free(line);
    free(logits);
    lmoe_sampler_close(smp);
    lmoe_ctx_close(c);
    lmoe_engine_close(e);
    return rc;
}
