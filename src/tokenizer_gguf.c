/*
 * tokenizer_gguf.c - a tokenizer read from tokenizer.json written as the
 * tokenizer.* keys of a GGUF file, as llama.cpp's convert_hf_to_gguf.py
 * writes them for a byte-level BPE vocabulary (its _set_vocab_gpt2), so that
 * llama.cpp and leanmoe's GGUF reader both load the vocabulary:
 *
 *   tokenizer.ggml.model        "gpt2"
 *   tokenizer.ggml.pre          the name llama.cpp gives the pre-tokenizer's
 *                               regex sequence (tokenizer_bpe.c's table); the
 *                               converter finds it by hashing token ids of a
 *                               probe text, we by comparing the regexes
 *   tokenizer.ggml.tokens       n_vocab texts: the vocabulary and added tokens
 *                               at their ids, "[PAD<id>]" in the gaps
 *   tokenizer.ggml.token_type   NORMAL; added tokens CONTROL when marked
 *                               special or when they look special (<|..|>,
 *                               <｜..｜>, ...), else USER_DEFINED; UNUSED gaps
 *   tokenizer.ggml.merges       "left right" in rank order
 *   tokenizer.ggml.*_token_id, add_bos/eos/sep_token, tokenizer.chat_template,
 *                               normalizer.lowercase: as gguf-py's
 *                               SpecialVocab derives them (tokenizer_json.c)
 *
 * Not done: SentencePiece-style tokenizer.json (the converter's "llama" path
 * needs scores from tokenizer.model), the converter's re-encoding of added
 * tokens marked normalized=false (a no-op for byte-level vocabularies), and
 * named chat templates beside the default one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "format/gguf_write.h"
#include "leanmoe.h"
#include "tokenizer_impl.h"

/* gguf-py's key for each role's id; NULL where it writes none (cls). */
static const char *const role_id_keys[LMOE_TOK_N_ROLES] = {
    "tokenizer.ggml.bos_token_id",       "tokenizer.ggml.eos_token_id",     "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.padding_token_id", NULL,
    "tokenizer.ggml.mask_token_id",      "tokenizer.ggml.eot_token_id",     "tokenizer.ggml.eom_token_id",
};
/* ... and for add_<role>_token, which it writes for bos, eos and sep only. */
static const char *const role_add_keys[LMOE_TOK_N_ROLES] = {
    "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token", NULL, "tokenizer.ggml.add_sep_token",
};

static int ends_with(const char *s, size_t n, const char *suffix) {
    size_t k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

static int starts_with(const char *s, size_t n, const char *prefix) {
    size_t k = strlen(prefix);
    return n >= k && memcmp(s, prefix, k) == 0;
}

/* The converter's does_token_look_special: added tokens that some models
 * fail to mark special but that are control tokens all the same. */
static int looks_special(const char *s, size_t n) {
    static const char *const exact[] = {"<pad>", "<mask>", "<2mass>", "[@BOS@]"};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (n == strlen(exact[i]) && !memcmp(s, exact[i], n)) return 1;
    if (starts_with(s, n, "<|") && ends_with(s, n, "|>")) return 1;
    if (starts_with(s, n, "<\xef\xbd\x9c") && ends_with(s, n, "\xef\xbd\x9c>")) return 1; /* <｜ ｜> */
    return starts_with(s, n, "<unused") && ends_with(s, n, ">");
}

/* A copy of s[0..n) with every `from` replaced by `to` (malloc'd). */
static char *replace_all(const char *s, size_t n, const char *from, const char *to) {
    size_t nf = strlen(from), nt = strlen(to), k = 0;
    char *out = malloc(n * (nt > nf ? nt : nf) + 1);
    if (!out) return NULL;
    for (size_t i = 0; i < n;) {
        if (i + nf <= n && !memcmp(s + i, from, nf)) {
            memcpy(out + k, to, nt);
            k += nt;
            i += nf;
        } else {
            out[k++] = s[i++];
        }
    }
    out[k] = 0;
    return out;
}

/* Tokens and types, padded to n_vocab. USER_DEFINED texts get their ▁
 * turned back into spaces, as the converter does for Gemma's. */
static int write_tokens(const struct lmoe_tokenizer *t, struct gguf_writer *w, int n_vocab) {
    char **texts = calloc((size_t)n_vocab, sizeof(*texts));
    int32_t *types = malloc((size_t)n_vocab * sizeof(*types));
    int rc = texts && types ? 0 : LMOE_ERR_NOMEM;
    for (int id = 0; rc == 0 && id < n_vocab; id++) {
        const char *s = id < t->n_vocab ? t->text + t->off[id] : NULL;
        size_t n = id < t->n_vocab ? t->len[id] : 0;
        int type = id < t->n_vocab ? t->type[id] : LMOE_TOKEN_TYPE_UNDEFINED;
        if (type == LMOE_TOKEN_TYPE_UNDEFINED) { /* an id nothing names */
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%d]", id);
            texts[id] = strdup(pad);
            types[id] = LMOE_TOKEN_TYPE_UNUSED;
        } else if (type == LMOE_TOKEN_TYPE_USER_DEFINED && !looks_special(s, n)) {
            texts[id] = replace_all(s, n, "\xe2\x96\x81", " ");
            types[id] = LMOE_TOKEN_TYPE_USER_DEFINED;
        } else {
            texts[id] = strndup(s, n);
            types[id] = type == LMOE_TOKEN_TYPE_USER_DEFINED ? LMOE_TOKEN_TYPE_CONTROL : type;
        }
        if (!texts[id]) rc = LMOE_ERR_NOMEM;
    }
    if (rc == 0) rc = gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)texts, (uint64_t)n_vocab);
    if (rc == 0) rc = gguf_writer_set_arr_num(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, (uint64_t)n_vocab);
    for (int id = 0; texts && id < n_vocab; id++) free(texts[id]);
    free(texts);
    free(types);
    return rc;
}

struct merge {
    int32_t rank, left, right;
};

static int by_rank(const void *a, const void *b) {
    const struct merge *x = a, *y = b;
    return (x->rank > y->rank) - (x->rank < y->rank);
}

/* The merge table back in rank order, "left right", a space inside a part
 * written as U+0120 as gguf-py does for ["a", "b"] pairs. */
static int write_merges(const struct lmoe_tokenizer *t, struct gguf_writer *w) {
    size_t n = 0, cap = (size_t)t->merge_mask + 1;
    struct merge *m = malloc(cap * sizeof(*m));
    if (!m) return LMOE_ERR_NOMEM;
    for (size_t i = 0; i < cap; i++)
        if (t->merge_key[i] != UINT64_MAX)
            m[n++] = (struct merge){t->merge_rank[i], (int32_t)(t->merge_key[i] >> 32), (int32_t)(uint32_t)t->merge_key[i]};
    qsort(m, n, sizeof(*m), by_rank);
    char **texts = calloc(n + 1, sizeof(*texts));
    int rc = texts ? 0 : LMOE_ERR_NOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char *a = replace_all(t->text + t->off[m[i].left], t->len[m[i].left], " ", "\xc4\xa0");
        char *b = replace_all(t->text + t->off[m[i].right], t->len[m[i].right], " ", "\xc4\xa0");
        size_t na = a ? strlen(a) : 0, nb = b ? strlen(b) : 0;
        if (a && b && (texts[i] = malloc(na + nb + 2))) {
            memcpy(texts[i], a, na);
            texts[i][na] = ' ';
            memcpy(texts[i] + na + 1, b, nb + 1);
        } else {
            rc = LMOE_ERR_NOMEM;
        }
        free(a);
        free(b);
    }
    if (rc == 0) rc = gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)texts, n);
    for (size_t i = 0; texts && i < n; i++) free(texts[i]);
    free(texts);
    free(m);
    return rc;
}

int lmoe_tokenizer_write_gguf(const struct lmoe_tokenizer *t, struct gguf_writer *w, int n_vocab, char *err,
                              size_t errlen) {
    const struct lmoe_tok_gguf_keys *k = lmoe_tok_json_gguf_keys(t);
    const char *pre = lmoe_tok_json_pre_name(t);
    if (!k || t->model != LMOE_TOKENIZER_BPE)
        return lmoe_errf(err, errlen, LMOE_ERR_UNSUPPORTED,
                         "tokenizer: only a byte-level BPE tokenizer.json is written to GGUF yet");
    if (!pre)
        return lmoe_errf(err, errlen, LMOE_ERR_UNSUPPORTED,
                         "tokenizer: the pre-tokenizer of tokenizer.json is none llama.cpp names (known: gpt-2, "
                         "llama-bpe, qwen2, deepseek-llm, deepseek-coder, deepseek-v3)");
    if (n_vocab < t->n_vocab)
        return lmoe_errf(err, errlen, LMOE_ERR_ARG, "tokenizer: %d tokens, but the model has %d embedding rows",
                         t->n_vocab, n_vocab);
    int rc = gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    if (rc == 0) rc = gguf_writer_set_str(w, "tokenizer.ggml.pre", pre);
    if (rc == 0) rc = write_tokens(t, w, n_vocab);
    if (rc == 0) rc = write_merges(t, w);
    for (int r = 0; rc == 0 && r < LMOE_TOK_N_ROLES; r++)
        if (role_id_keys[r] && k->id[r] >= 0) rc = gguf_writer_set_u32(w, role_id_keys[r], (uint32_t)k->id[r]);
    for (int r = 0; rc == 0 && r < LMOE_TOK_N_ROLES; r++)
        if (role_add_keys[r] && k->add[r] >= 0) rc = gguf_writer_set_bool(w, role_add_keys[r], k->add[r]);
    const char *tmpl = lmoe_tokenizer_chat_template(t);
    if (rc == 0 && tmpl) rc = gguf_writer_set_str(w, "tokenizer.chat_template", tmpl);
    if (rc == 0 && k->lowercase) rc = gguf_writer_set_bool(w, "tokenizer.ggml.normalizer.lowercase", 1);
    if (rc) return lmoe_errf(err, errlen, rc, "tokenizer: %s", gguf_writer_error(w));
    return 0;
}
