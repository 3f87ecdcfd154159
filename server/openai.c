/*
 * openai.c - the OpenAI wire format: request bodies of /v1/chat/completions
 * and /v1/completions into jobs, and jobs into responses, stream chunks and
 * errors. JSON goes through jansson only.
 *
 * Validation is strict about types and ranges (a wrong type is a 400 naming
 * the field, never a silent default) and lenient about fields we do not use
 * (user, logit_bias, ...), which are ignored as OpenAI-compatible servers
 * commonly do. A null value means the field is absent.
 */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server.h"

/* Limits that keep one request from occupying memory out of proportion. */
#define MAX_MESSAGES            4096
#define MAX_COMPLETION_LOGPROBS 5 /* OpenAI's limit for /v1/completions */

/* ---- Errors ------------------------------------------------------------ */

static int bad(struct srv_error *err, const char *param, const char *code, const char *fmt, ...) {
    err->status = 400;
    err->type = "invalid_request_error";
    err->param = param;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

char *oai_error_json(const struct srv_error *err) {
    json_t *o = json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message", err->message, "type",
                          err->type ? err->type : "invalid_request_error", "param", err->param, "code", err->code);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

/* ---- Field readers: absent or null leaves *out unchanged --------------- */

static json_t *field(json_t *req, const char *key) {
    json_t *v = json_object_get(req, key);
    return v && !json_is_null(v) ? v : NULL;
}

static int get_real(json_t *req, const char *key, double lo, double hi, double *out, struct srv_error *err) {
    json_t *v = field(req, key);
    if (!v) return 0;
    if (!json_is_number(v)) return bad(err, key, NULL, "'%s' must be a number", key);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) return bad(err, key, NULL, "'%s' must be from %g to %g, got %g", key, lo, hi, x);
    *out = x;
    return 0;
}

static int get_int(json_t *req, const char *key, double lo, double hi, long long *out, struct srv_error *err) {
    json_t *v = field(req, key);
    if (!v) return 0;
    double x = json_is_integer(v) ? (double)json_integer_value(v) : json_is_real(v) ? json_real_value(v) : NAN;
    if (x != floor(x)) return bad(err, key, NULL, "'%s' must be an integer", key);
    if (!(x >= lo && x <= hi)) return bad(err, key, NULL, "'%s' must be from %.0f to %.0f", key, lo, hi);
    *out = json_is_integer(v) ? json_integer_value(v) : (long long)x;
    return 0;
}

static int get_bool(json_t *req, const char *key, int *out, struct srv_error *err) {
    json_t *v = field(req, key);
    if (!v) return 0;
    if (!json_is_boolean(v)) return bad(err, key, NULL, "'%s' must be true or false", key);
    *out = json_is_true(v);
    return 0;
}

/* stop: one string or an array of up to SRV_MAX_STOP non-empty strings. */
static int get_stop(json_t *req, struct srv_job *j, struct srv_error *err) {
    json_t *v = field(req, "stop");
    if (!v) return 0;
    json_t *one[1] = {v};
    json_t **items = one;
    size_t n = 1;
    if (json_is_array(v)) {
        n = json_array_size(v);
        if (n > SRV_MAX_STOP) return bad(err, "stop", NULL, "'stop' takes at most %d strings", SRV_MAX_STOP);
        items = NULL;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *s = items ? items[i] : json_array_get(v, i);
        if (!json_is_string(s) || json_string_length(s) == 0)
            return bad(err, "stop", NULL, "'stop' must be a non-empty string or an array of them");
        if (!(j->stop[j->n_stop] = strdup(json_string_value(s)))) return bad(err, "stop", NULL, "out of memory");
        j->n_stop++;
    }
    return 0;
}

/* ---- Prompts ----------------------------------------------------------- */

static int tokenize(const struct srv *srv, const char *text, size_t len, int add_bos, struct srv_job *j,
                    const char *param, struct srv_error *err) {
    char msg[256];
    if (lmoe_tokenize(srv->e, text, len, add_bos, 1, &j->prompt, &j->n_prompt, msg, sizeof msg))
        return bad(err, param, NULL, "cannot tokenize '%s': %s", param, msg);
    return 0;
}

/* A message's content: a string, or an array of {"type":"text"} parts,
 * joined. Owned: free(). */
static char *message_text(json_t *content, struct srv_error *err) {
    if (!content) return strdup("");
    if (json_is_string(content)) return strdup(json_string_value(content));
    if (!json_is_array(content)) {
        bad(err, "messages", NULL, "message content must be a string or an array of text parts");
        return NULL;
    }
    size_t len = 0, i;
    json_t *part;
    json_array_foreach(content, i, part) {
        json_t *text = json_object_get(part, "text");
        const char *type = json_string_value(json_object_get(part, "type"));
        if (!type || strcmp(type, "text") || !json_is_string(text)) {
            bad(err, "messages", NULL, "only text content parts are supported");
            return NULL;
        }
        len += json_string_length(text);
    }
    char *out = malloc(len + 1);
    if (!out) return NULL;
    len = 0;
    json_array_foreach(content, i, part) {
        json_t *text = json_object_get(part, "text");
        memcpy(out + len, json_string_value(text), json_string_length(text));
        len += json_string_length(text);
    }
    out[len] = 0;
    return out;
}

/* messages -> the model's chat format, assistant header appended -> ids. */
static int parse_messages(const struct srv *srv, json_t *req, struct srv_job *j, struct srv_error *err) {
    json_t *msgs = field(req, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return bad(err, "messages", NULL, "'messages' must be a non-empty array");
    size_t n = json_array_size(msgs);
    if (n > MAX_MESSAGES) return bad(err, "messages", NULL, "at most %d messages", MAX_MESSAGES);
    struct lmoe_chat_msg *cm = calloc(n, sizeof(*cm));
    if (!cm) return bad(err, "messages", NULL, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        json_t *m = json_array_get(msgs, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!json_is_object(m) || !role) {
            rc = bad(err, "messages", NULL, "messages[%zu] needs a string 'role'", i);
        } else if (!strcmp(role, "developer")) {
            cm[i].role = "system"; /* OpenAI's newer name for the system role */
        } else if (!strcmp(role, "system") || !strcmp(role, "user") || !strcmp(role, "assistant")) {
            cm[i].role = role;
        } else {
            rc = bad(err, "messages", NULL, "messages[%zu]: role '%.40s' is not supported", i, role);
        }
        if (!rc && !(cm[i].content = message_text(field(m, "content"), err)))
            rc = err->status ? -1 : bad(err, "messages", NULL, "out of memory");
    }
    char *text = rc ? NULL : lmoe_chat_render(srv->e, cm, (int)n, 1);
    if (!rc && !text) rc = bad(err, "messages", NULL, "cannot render the conversation");
    if (!rc) rc = tokenize(srv, text, strlen(text), 0, j, "messages", err);
    free(text);
    for (size_t i = 0; i < n; i++) free((char *)cm[i].content);
    free(cm);
    return rc;
}

/* prompt: a string, an array of token ids, or a one-element array of
 * either. Several prompts per request are refused. */
static int parse_prompt(const struct srv *srv, json_t *req, struct srv_job *j, struct srv_error *err) {
    json_t *p = field(req, "prompt");
    if (json_is_array(p) && json_array_size(p) == 1 &&
        (json_is_string(json_array_get(p, 0)) || json_is_array(json_array_get(p, 0))))
        p = json_array_get(p, 0);
    if (json_is_string(p)) return tokenize(srv, json_string_value(p), json_string_length(p), 1, j, "prompt", err);
    if (!json_is_array(p)) return bad(err, "prompt", NULL, "'prompt' must be a string or an array of token ids");
    size_t n = json_array_size(p);
    int n_vocab = lmoe_engine_n_vocab(srv->e);
    if (!(j->prompt = malloc(sizeof(int32_t) * (n ? n : 1)))) return bad(err, "prompt", NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *id = json_array_get(p, i);
        if (!json_is_integer(id)) return bad(err, "prompt", NULL, "only one prompt per request is supported");
        if (json_integer_value(id) < 0 || json_integer_value(id) >= n_vocab)
            return bad(err, "prompt", NULL, "token id %lld is outside the vocabulary (0..%d)",
                       (long long)json_integer_value(id), n_vocab - 1);
        j->prompt[i] = (int32_t)json_integer_value(id);
    }
    j->n_prompt = (int)n;
    return 0;
}

/* ---- Requests ---------------------------------------------------------- */

/* Sampling fields with OpenAI's defaults: temperature 1, no filters. */
static int parse_sampling(const struct srv *srv, json_t *req, struct srv_job *j, struct srv_error *err) {
    static atomic_uint_fast64_t counter;
    double temp = 1, top_p = 1, min_p = 0, pres = 0, freq = 0;
    long long top_k = 0, seed = -1;
    int seeded = field(req, "seed") != NULL;
    if (get_real(req, "temperature", 0, 2, &temp, err) || get_real(req, "top_p", 0, 1, &top_p, err) ||
        get_real(req, "min_p", 0, 1, &min_p, err) || get_int(req, "top_k", 0, 1e9, &top_k, err) ||
        get_real(req, "presence_penalty", -2, 2, &pres, err) || get_real(req, "frequency_penalty", -2, 2, &freq, err) ||
        get_int(req, "seed", -9223372036854775807.0, 9223372036854775807.0, &seed, err))
        return -1;
    struct lmoe_sampler_options so = LMOE_SAMPLER_DEFAULTS;
    so.temperature = (float)temp;
    so.top_p = (float)top_p;
    so.min_p = (float)min_p;
    so.top_k = top_k > lmoe_engine_n_vocab(srv->e) ? 0 : (int)top_k;
    so.presence_penalty = (float)pres;
    so.frequency_penalty = (float)freq;
    so.repeat_penalty = 1;
    /* Without a seed, every request draws differently. */
    so.seed = seeded ? (uint64_t)seed
                     : ((uint64_t)time(NULL) << 20) ^ (uint64_t)atomic_fetch_add(&counter, 1) * 0x9e3779b97f4a7c15ull;
    j->sampling = so;
    return 0;
}

static int parse_logprobs(json_t *req, struct srv_job *j, struct srv_error *err) {
    long long k = -1;
    if (j->kind == SRV_CHAT) {
        int on = 0;
        if (get_bool(req, "logprobs", &on, err) || get_int(req, "top_logprobs", 0, SRV_MAX_TOP_LOGPROBS, &k, err))
            return -1;
        if (k >= 0 && !on) return bad(err, "top_logprobs", NULL, "'top_logprobs' needs 'logprobs': true");
        j->logprobs = on;
        j->top_logprobs = k > 0 ? (int)k : 0;
        return 0;
    }
    /* /v1/completions: logprobs is the number of alternatives, 0 to 5. */
    if (get_int(req, "logprobs", 0, MAX_COMPLETION_LOGPROBS, &k, err)) return -1;
    j->logprobs = k >= 0;
    j->top_logprobs = k > 0 ? (int)k : 0;
    return 0;
}

/* Request id: unique within the process and unlikely to repeat across runs. */
static void make_id(struct srv_job *j) {
    static atomic_uint_fast64_t counter;
    uint64_t z = ((uint64_t)time(NULL) << 24) + (uint64_t)atomic_fetch_add(&counter, 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull; /* splitmix64's finaliser */
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    snprintf(j->id, sizeof j->id, "%s-%016llx", j->kind == SRV_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)(z ^ (z >> 31)));
}

int oai_parse_request(const struct srv *srv, enum srv_kind kind, const char *body, size_t len, struct srv_job *j,
                      struct srv_error *err) {
    memset(err, 0, sizeof(*err));
    json_error_t jerr;
    json_t *req = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!req)
        return bad(err, NULL, "invalid_json", "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                   jerr.text);
    int rc = -1;
    long long max_tokens = -1, n = 1;
    int include_usage = 0, tools = json_array_size(field(req, "tools")) > 0, echo = 0;
    json_t *so = field(req, "stream_options");
    if (!json_is_object(req)) {
        bad(err, NULL, NULL, "the request body must be a JSON object");
    } else if (field(req, "model") && !json_is_string(field(req, "model"))) {
        bad(err, "model", NULL, "'model' must be a string");
    } else if (tools) {
        bad(err, "tools", NULL, "tools are not supported");
    } else if (so && !json_is_object(so)) {
        bad(err, "stream_options", NULL, "'stream_options' must be an object");
    } else if (!get_bool(req, "stream", &j->stream, err) && !get_bool(so, "include_usage", &include_usage, err) &&
               !get_bool(req, "ignore_eos", &j->ignore_eos, err) && !get_bool(req, "echo", &echo, err) &&
               !get_int(req, "n", 1, 1, &n, err) && !get_int(req, "max_tokens", 1, 1e9, &max_tokens, err) &&
               !get_int(req, "max_completion_tokens", 1, 1e9, &max_tokens, err) && !parse_sampling(srv, req, j, err) &&
               !parse_logprobs(req, j, err) && !get_stop(req, j, err)) {
        if (echo)
            bad(err, "echo", NULL, "'echo' is not supported");
        else if (kind == SRV_CHAT)
            rc = parse_messages(srv, req, j, err);
        else
            rc = parse_prompt(srv, req, j, err);
    }
    json_decref(req);
    if (rc) return -1;
    const char *param = kind == SRV_CHAT ? "messages" : "prompt";
    int n_ctx = srv_sched_slot_n_ctx(srv->sched);
    if (j->n_prompt == 0) return bad(err, param, NULL, "the prompt is empty");
    if (j->n_prompt >= n_ctx)
        return bad(err, param, "context_length_exceeded",
                   "the prompt has %d tokens; this server's context holds %d, and at least one must be left to "
                   "generate",
                   j->n_prompt, n_ctx);
    j->kind = kind;
    j->include_usage = j->stream && include_usage;
    j->max_tokens = (int)max_tokens;
    j->created = (long)time(NULL);
    make_id(j);
    return 0;
}

/* ---- Responses --------------------------------------------------------- */

/* jansson refuses NaN and infinities; OpenAI writes -9999 for "impossible". */
static json_t *lp_real(float x) { return json_real(isfinite(x) ? x : -9999.0); }

/* A token's text as valid UTF-8 (broken bytes become U+FFFD), and its raw
 * bytes. */
static json_t *token_text(const struct srv *srv, int32_t id, json_t **bytes) {
    char raw[256], text[3 * (256 + 4) + 8];
    int nb = lmoe_token_bytes(srv->e, id, raw, sizeof raw);
    if (nb < 0) nb = 0;
    if (nb > (int)sizeof raw) nb = (int)sizeof raw;
    lmoe_text_stream ts = {{0}, 0};
    size_t k = lmoe_text_stream_push(&ts, raw, (size_t)nb, text);
    k += lmoe_text_stream_flush(&ts, text + k);
    if (bytes) {
        *bytes = json_array();
        for (int i = 0; i < nb; i++) json_array_append_new(*bytes, json_integer((unsigned char)raw[i]));
    }
    return json_stringn(text, k);
}

/* Appends one token to chat logprobs content. */
static void chat_lp(const struct srv *srv, json_t *content, const struct srv_token_lp *t) {
    json_t *bytes, *top = json_array();
    json_t *tok = token_text(srv, t->tok.id, &bytes);
    for (int i = 0; i < t->n_top; i++) {
        json_t *b, *s = token_text(srv, t->top[i].id, &b);
        json_array_append_new(
            top, json_pack("{s:o, s:o, s:o}", "token", s, "logprob", lp_real(t->top[i].logprob), "bytes", b));
    }
    json_array_append_new(content, json_pack("{s:o, s:o, s:o, s:o}", "token", tok, "logprob", lp_real(t->tok.logprob),
                                             "bytes", bytes, "top_logprobs", top));
}

/* Appends one token to the four parallel arrays of completions logprobs. */
static void completion_lp(const struct srv *srv, json_t *lp, const struct srv_token_lp *t, size_t *offset) {
    json_t *tok = token_text(srv, t->tok.id, NULL), *top = json_object();
    for (int i = 0; i < t->n_top; i++) {
        json_t *s = token_text(srv, t->top[i].id, NULL);
        if (s) json_object_set_new(top, json_string_value(s), lp_real(t->top[i].logprob));
        json_decref(s);
    }
    json_array_append_new(json_object_get(lp, "text_offset"), json_integer((json_int_t)*offset));
    *offset += tok ? json_string_length(tok) : 0;
    json_array_append_new(json_object_get(lp, "tokens"), tok);
    json_array_append_new(json_object_get(lp, "token_logprobs"), lp_real(t->tok.logprob));
    json_array_append_new(json_object_get(lp, "top_logprobs"), top);
}

/* The logprobs object for the pieces first..last (inclusive), or null when
 * not asked for. It never reads last->next: while the job runs, the
 * scheduler may be writing it. */
static json_t *logprobs_json(const struct srv *srv, struct srv_job *j, const struct srv_piece *first,
                             const struct srv_piece *last) {
    if (!j->logprobs) return json_null();
    json_t *lp = j->kind == SRV_CHAT
                     ? json_pack("{s:[], s:n}", "content", "refusal")
                     : json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs", "top_logprobs", "text_offset");
    for (const struct srv_piece *p = first; p; p = p == last ? NULL : p->next)
        for (int i = 0; i < p->n_lp; i++) {
            if (j->kind == SRV_CHAT)
                chat_lp(srv, json_object_get(lp, "content"), &p->lp[i]);
            else
                completion_lp(srv, lp, &p->lp[i], &j->text_offset);
        }
    return lp;
}

static json_t *usage_json(const struct srv_job *j) {
    return json_pack("{s:i, s:i, s:i, s:{s:i}}", "prompt_tokens", j->n_prompt, "completion_tokens", j->n_gen,
                     "total_tokens", j->n_prompt + j->n_gen, "prompt_tokens_details", "cached_tokens", j->n_cached);
}

/* What the request cost: its times and its share of the machine. */
static json_t *cost_json(const struct srv *srv, const struct srv_job *j) {
    double tps = j->decode_ms > 0 ? j->n_gen / (j->decode_ms / 1e3) : 0;
    return json_pack("{s:f, s:f, s:f, s:f, s:f}", "prompt_ms", j->prompt_ms, "decode_ms", j->decode_ms, "tokens_per_s",
                     tps, "engine_s", j->engine_s, "cost_usd", j->engine_s * srv->o->usd_per_hour / 3600.0);
}

static char *dump(json_t *o) {
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

char *oai_response(const struct srv *srv, struct srv_job *j) {
    size_t len = 0;
    for (const struct srv_piece *p = j->head; p; p = p->next) len += p->len;
    char *text = malloc(len + 1);
    if (!text) return NULL;
    len = 0;
    for (const struct srv_piece *p = j->head; p; p = p->next) {
        memcpy(text + len, p->text, p->len);
        len += p->len;
    }
    json_t *choice =
        j->kind == SRV_CHAT
            ? json_pack("{s:i, s:{s:s, s:s%}, s:o, s:s}", "index", 0, "message", "role", "assistant", "content", text,
                        len, "logprobs", logprobs_json(srv, j, j->head, j->tail), "finish_reason", j->finish_reason)
            : json_pack("{s:i, s:s%, s:o, s:s}", "index", 0, "text", text, len, "logprobs",
                        logprobs_json(srv, j, j->head, j->tail), "finish_reason", j->finish_reason);
    free(text);
    return dump(json_pack("{s:s, s:s, s:I, s:s, s:s, s:[o], s:o, s:o}", "id", j->id, "object",
                          j->kind == SRV_CHAT ? "chat.completion" : "text_completion", "created",
                          (json_int_t)j->created, "model", srv->o->model_id, "system_fingerprint", "leanmoe", "choices",
                          choice, "usage", usage_json(j), "leanmoe", cost_json(srv, j)));
}

char *oai_chunk(const struct srv *srv, struct srv_job *j, const struct srv_piece *p, int final) {
    json_t *choice;
    const char *reason = final ? (j->finish_reason ? j->finish_reason : "stop") : NULL;
    json_t *lp = p ? logprobs_json(srv, j, p, p) : json_null();
    if (j->kind == SRV_CHAT) {
        json_t *delta = final ? json_object()
                        : p   ? json_pack("{s:s%}", "content", p->text, p->len)
                              : json_pack("{s:s, s:s}", "role", "assistant", "content", "");
        choice =
            json_pack("{s:i, s:o, s:o, s:s?}", "index", 0, "delta", delta, "logprobs", lp, "finish_reason", reason);
    } else {
        choice = json_pack("{s:i, s:s%, s:o, s:s?}", "index", 0, "text", p ? p->text : "", p ? p->len : 0, "logprobs",
                           lp, "finish_reason", reason);
    }
    json_t *o =
        json_pack("{s:s, s:s, s:I, s:s, s:s, s:[o]}", "id", j->id, "object",
                  j->kind == SRV_CHAT ? "chat.completion.chunk" : "text_completion", "created", (json_int_t)j->created,
                  "model", srv->o->model_id, "system_fingerprint", "leanmoe", "choices", choice);
    if (o && j->include_usage) json_object_set_new(o, "usage", json_null());
    if (o && final) json_object_set_new(o, "leanmoe", cost_json(srv, j));
    return dump(o);
}

char *oai_usage_chunk(const struct srv *srv, struct srv_job *j) {
    return dump(json_pack("{s:s, s:s, s:I, s:s, s:s, s:[], s:o, s:o}", "id", j->id, "object",
                          j->kind == SRV_CHAT ? "chat.completion.chunk" : "text_completion", "created",
                          (json_int_t)j->created, "model", srv->o->model_id, "system_fingerprint", "leanmoe", "choices",
                          "usage", usage_json(j), "leanmoe", cost_json(srv, j)));
}

char *oai_models(const struct srv *srv) {
    return dump(json_pack("{s:s, s:[{s:s, s:s, s:I, s:s}]}", "object", "list", "data", "id", srv->o->model_id, "object",
                          "model", "created", (json_int_t)srv->started, "owned_by", "leanmoe"));
}
