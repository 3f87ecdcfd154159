/*
 * text.c - the public text interface: tokenize, token bytes, streaming
 * UTF-8 and chat rendering, on top of tokenizer.c, chat.c and jinja.c (the
 * model's own chat template, with the hand-written format as fallback).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "engine.h"
#include "error.h"
#include "jinja.h"
#include "tokenizer.h"

static int no_vocab(const lmoe_engine *e, char *err, size_t errlen) {
    return lmoe_errf(err, errlen, LMOE_ERR_UNSUPPORTED, "%s", e->tok_err);
}

int lmoe_tokenize(const lmoe_engine *e, const char *text, size_t len, int add_bos, int parse_special,
                  int32_t **ids, int *n, char *err, size_t errlen) {
    *ids = NULL;
    *n = 0;
    if (!e->tok) return no_vocab(e, err, errlen);
    int32_t *raw;
    int n_raw;
    int rc = lmoe_tokenizer_encode(e->tok, text, len, parse_special, &raw, &n_raw, err, errlen);
    if (rc) return rc;
    int32_t bos = lmoe_tokenizer_bos(e->tok);
    if (!add_bos || bos < 0 || !lmoe_tokenizer_add_bos(e->tok)) {
        *ids = raw;
        *n = n_raw;
        return 0;
    }
    int32_t *with = malloc(sizeof(int32_t) * (size_t)(n_raw + 1));
    if (!with) {
        free(raw);
        return lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "tokenize: out of memory");
    }
    with[0] = bos;
    memcpy(with + 1, raw, sizeof(int32_t) * (size_t)n_raw);
    free(raw);
    *ids = with;
    *n = n_raw + 1;
    return 0;
}

int lmoe_token_bytes(const lmoe_engine *e, int32_t id, char *buf, size_t buflen) {
    return e->tok ? lmoe_tokenizer_decode(e->tok, id, buf, buflen) : LMOE_ERR_UNSUPPORTED;
}

const char *lmoe_token_piece(const lmoe_engine *e, int32_t id) {
    return e->tok ? lmoe_tokenizer_piece(e->tok, id, NULL) : NULL;
}

int32_t lmoe_token_bos(const lmoe_engine *e) { return e->tok ? lmoe_tokenizer_bos(e->tok) : -1; }
int32_t lmoe_token_eos(const lmoe_engine *e) { return e->tok ? lmoe_tokenizer_eos(e->tok) : -1; }
int32_t lmoe_token_eot(const lmoe_engine *e) { return e->tok ? lmoe_tokenizer_eot(e->tok) : -1; }

int lmoe_token_is_control(const lmoe_engine *e, int32_t id) {
    return e->tok ? lmoe_tokenizer_is_control(e->tok, id) : 0;
}

int lmoe_token_is_eog(const lmoe_engine *e, int32_t id) {
    return id >= 0 && (id == lmoe_token_eos(e) || id == lmoe_token_eot(e));
}

/* The public stream mirrors the internal one field for field; copy in and
 * out rather than cast, so the two types never alias. */
_Static_assert(sizeof(lmoe_text_stream) == sizeof(struct lmoe_utf8_stream), "stream layouts");

size_t lmoe_text_stream_push(lmoe_text_stream *s, const char *in, size_t n, char *out) {
    struct lmoe_utf8_stream u;
    memcpy(u.pend, s->pend, 4);
    u.n_pend = s->n_pend;
    size_t k = lmoe_utf8_stream_push(&u, in, n, out);
    memcpy(s->pend, u.pend, 4);
    s->n_pend = u.n_pend;
    return k;
}

size_t lmoe_text_stream_flush(lmoe_text_stream *s, char *out) {
    struct lmoe_utf8_stream u;
    memcpy(u.pend, s->pend, 4);
    u.n_pend = s->n_pend;
    size_t k = lmoe_utf8_stream_flush(&u, out);
    s->n_pend = 0;
    return k;
}

const char *lmoe_chat_format(const lmoe_engine *e) {
    return e->chat_jinja ? "template" : lmoe_chat_format_name(e->chat_format);
}

/* The text of a special token, for templates that write BOS/EOS as text;
 * "" when the vocabulary has none. */
static const char *special_text(const lmoe_engine *e, int32_t id) {
    const char *p = id >= 0 && e->tok ? lmoe_tokenizer_piece(e->tok, id, NULL) : NULL;
    return p ? p : "";
}

/* Renders msgs with the model's own template, with the variables that
 * apply_chat_template passes (messages, add_generation_prompt, bos_token,
 * eos_token). NULL when t fails on them (a template may raise_exception on
 * a role it does not take) or a text is not UTF-8. */
static char *template_render(const lmoe_engine *e, const struct lmoe_jinja *t, const struct lmoe_chat_msg *msgs,
                             int n, int add_assistant) {
    json_t *vars = json_object(), *list = json_array();
    int ok = vars && list && !json_object_set_new(vars, "messages", list);
    if (!ok) json_decref(list);
    for (int i = 0; ok && i < n; i++) {
        json_t *m = json_object();
        ok = m && !json_array_append_new(list, m) && msgs[i].role &&
             !json_object_set_new(m, "role", json_string(msgs[i].role)) &&
             !json_object_set_new(m, "content", msgs[i].content ? json_string(msgs[i].content) : json_null());
    }
    ok = ok && !json_object_set_new(vars, "add_generation_prompt", json_boolean(add_assistant)) &&
         !json_object_set_new(vars, "bos_token", json_string(special_text(e, lmoe_token_bos(e)))) &&
         !json_object_set_new(vars, "eos_token", json_string(special_text(e, lmoe_token_eos(e))));
    char *js = ok ? json_dumps(vars, JSON_COMPACT) : NULL;
    json_decref(vars);
    char *out = NULL, err[256];
    if (js && lmoe_jinja_render(t, js, strlen(js), NULL, &out, NULL, err, sizeof err)) out = NULL;
    free(js);
    return out;
}

void lmoe_chat_template_load(struct lmoe_engine *e) {
    lmoe_jinja_free(e->chat_jinja);
    e->chat_jinja = NULL;
    char err[256];
    struct lmoe_jinja *t;
    if (!e->chat_template || lmoe_jinja_parse(&t, e->chat_template, e->chat_template_len, err, sizeof err)) return;
    /* Keep it only if it takes a plain conversation. */
    static const struct lmoe_chat_msg probe[] = {{"user", "Hi"}};
    char *text = template_render(e, t, probe, 1, 1);
    if (text) e->chat_jinja = t;
    else lmoe_jinja_free(t);
    free(text);
}

char *lmoe_chat_render(const lmoe_engine *e, const struct lmoe_chat_msg *msgs, int n, int add_assistant) {
    /* As apply_chat_template: BOS is part of the rendered text. */
    char *text = e->chat_jinja ? template_render(e, e->chat_jinja, msgs, n, add_assistant) : NULL;
    if (text) return text;
    return lmoe_chat_format_render(e->chat_format, msgs, n, add_assistant, special_text(e, lmoe_token_bos(e)),
                                   special_text(e, lmoe_token_eos(e)));
}
