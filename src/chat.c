/*
 * chat.c - the chat formats of the supported families.
 *
 * Each format is written out by hand from its template's output, as
 * transformers' apply_chat_template renders it: the byte-exact prompt
 * matters, because a model trained on "<|im_start|>user\n" answers worse to
 * anything else. Special tokens appear as their text; the caller encodes the
 * result with special-token parsing on.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "leanmoe.h"

struct buf {
    char *p;
    size_t n, cap;
    int oom;
};

static void put(struct buf *b, const char *s) {
    size_t k = strlen(s);
    if (b->oom) return;
    if (b->n + k + 1 > b->cap) {
        size_t cap = (b->n + k + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) { b->oom = 1; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, k + 1);
    b->n += k;
}

/* Appends s without leading and trailing whitespace, as Jinja's trim. */
static void put_trimmed(struct buf *b, const char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f' || *s == '\v') s++;
    size_t n = strlen(s);
    while (n && strchr(" \t\n\r\f\v", s[n - 1])) n--;
    char tmp[256];
    for (size_t at = 0; at < n;) { /* in pieces: put() takes NUL-terminated text */
        size_t k = n - at < sizeof tmp - 1 ? n - at : sizeof tmp - 1;
        memcpy(tmp, s + at, k);
        tmp[k] = 0;
        put(b, tmp);
        at += k;
    }
}

static int has(const char *t, size_t len, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; t && i + k <= len; i++)
        if (!memcmp(t + i, needle, k)) return 1;
    return 0;
}

enum lmoe_chat_format lmoe_chat_detect(const char *t, size_t len, const char *arch) {
    if (has(t, len, "<|im_start|>")) return LMOE_CHAT_CHATML;
    if (has(t, len, "<\xef\xbd\x9c" "User\xef\xbd\x9c>")) return LMOE_CHAT_DEEPSEEK3; /* <｜User｜> */
    if (has(t, len, "<|start_header_id|>")) return LMOE_CHAT_LLAMA3;
    if (has(t, len, "[INST]")) return LMOE_CHAT_MISTRAL;
    if (has(t, len, "User: ") && has(t, len, "Assistant:")) return LMOE_CHAT_DEEPSEEK2;
    if (t && len) return LMOE_CHAT_PLAIN;
    /* No template in the file: the family's usual format. */
    if (arch && (!strcmp(arch, "qwen2") || !strcmp(arch, "qwen3") || !strcmp(arch, "qwen3moe")))
        return LMOE_CHAT_CHATML;
    return LMOE_CHAT_PLAIN;
}

const char *lmoe_chat_format_name(enum lmoe_chat_format f) {
    static const char *names[] = {"plain", "deepseek2", "deepseek3", "chatml", "llama3", "mistral"};
    return (unsigned)f < sizeof names / sizeof names[0] ? names[f] : "unknown";
}

static int is(const struct lmoe_chat_msg *m, const char *role) { return !strcmp(m->role, role); }

char *lmoe_chat_format_render(enum lmoe_chat_format f, const struct lmoe_chat_msg *msgs, int n,
                              int add_assistant, const char *bos, const char *eos) {
    struct buf b = {0};
    put(&b, "");
    switch (f) {
    case LMOE_CHAT_CHATML:
        for (int i = 0; i < n; i++) {
            put(&b, "<|im_start|>");
            put(&b, msgs[i].role);
            put(&b, "\n");
            put(&b, msgs[i].content);
            put(&b, "<|im_end|>\n");
        }
        if (add_assistant) put(&b, "<|im_start|>assistant\n");
        break;
    case LMOE_CHAT_DEEPSEEK3:
        /* System prompts go first, without a header; each assistant turn
         * is closed by the end-of-sentence token. */
        put(&b, bos);
        for (int i = 0, first = 1; i < n; i++)
            if (is(&msgs[i], "system")) {
                if (!first) put(&b, "\n\n"); /* several system prompts join */
                put(&b, msgs[i].content);
                first = 0;
            }
        for (int i = 0; i < n; i++) {
            if (is(&msgs[i], "user")) {
                put(&b, "<\xef\xbd\x9cUser\xef\xbd\x9c>");
                put(&b, msgs[i].content);
            } else if (is(&msgs[i], "assistant")) {
                put(&b, "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>");
                put(&b, msgs[i].content);
                put(&b, eos);
            }
        }
        if (add_assistant) put(&b, "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>");
        break;
    case LMOE_CHAT_DEEPSEEK2:
        put(&b, bos);
        for (int i = 0; i < n; i++) {
            if (is(&msgs[i], "system")) {
                put(&b, msgs[i].content);
                put(&b, "\n\n");
            } else if (is(&msgs[i], "user")) {
                put(&b, "User: ");
                put(&b, msgs[i].content);
                put(&b, "\n\n");
            } else if (is(&msgs[i], "assistant")) {
                put(&b, "Assistant: ");
                put(&b, msgs[i].content);
                put(&b, eos);
            }
        }
        if (add_assistant) put(&b, "Assistant:");
        break;
    case LMOE_CHAT_LLAMA3:
        put(&b, bos);
        for (int i = 0; i < n; i++) {
            put(&b, "<|start_header_id|>");
            put(&b, msgs[i].role);
            put(&b, "<|end_header_id|>\n\n");
            put_trimmed(&b, msgs[i].content); /* the template pipes content through trim */
            put(&b, "<|eot_id|>");
        }
        if (add_assistant) put(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    case LMOE_CHAT_MISTRAL: {
        /* A system prompt is folded into the first user turn. */
        const char *sys = NULL;
        put(&b, bos);
        for (int i = 0; i < n; i++) {
            if (is(&msgs[i], "system")) sys = msgs[i].content;
            else if (is(&msgs[i], "user")) {
                put(&b, "[INST] ");
                if (sys) { put(&b, sys); put(&b, "\n\n"); sys = NULL; }
                put(&b, msgs[i].content);
                put(&b, " [/INST]");
            } else if (is(&msgs[i], "assistant")) {
                put(&b, msgs[i].content);
                put(&b, eos);
            }
        }
        break;
    }
    case LMOE_CHAT_PLAIN:
    default:
        /* No template: the conversation as a script, which suits a model
         * trained on plays as well as anything else. */
        for (int i = 0; i < n; i++) {
            put(&b, msgs[i].content);
            put(&b, "\n");
        }
        break;
    }
    if (b.oom) { free(b.p); return NULL; }
    return b.p;
}
