/*
 * tokenizer.c - the vocabulary, added tokens, and the model-independent half
 * of encoding and decoding.
 *
 * Open copies the token texts out of the GGUF into one buffer and indexes
 * them with a hash table, so encoding never scans the vocabulary. Encoding
 * validates UTF-8, cuts the text at added tokens (leftmost-longest, through a
 * byte trie), and hands each stretch in between to tokenizer_bpe.c or
 * tokenizer_spm.c. Decoding maps one token back to the bytes it stands for;
 * the UTF-8 stream at the end of this file turns those into printable text.
 */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "format/gguf.h"
#include "leanmoe.h"
#include "tokenizer_impl.h"

/* ---- vocabulary -------------------------------------------------------- */

/* FNV-1a: token texts are short, and this is simple and good enough for an
 * open-addressing table kept at most half full. */
static uint32_t tok_hash(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

int32_t lmoe_tok_lookup(const struct lmoe_tokenizer *t, const char *s, size_t n) {
    uint32_t h = tok_hash(s, n);
    for (uint32_t i = h & t->map_mask;; i = (i + 1) & t->map_mask) {
        int32_t slot = t->map[i];
        if (slot == 0) return -1;
        int32_t id = slot - 1;
        if (t->hash[id] == h && t->len[id] == n && memcmp(t->text + t->off[id], s, n) == 0)
            return id;
    }
}

/* Inserts id; an earlier id with the same text is replaced (later wins). */
static void tok_insert(struct lmoe_tokenizer *t, int32_t id) {
    const char *s = t->text + t->off[id];
    uint32_t n = t->len[id], h = t->hash[id];
    for (uint32_t i = h & t->map_mask;; i = (i + 1) & t->map_mask) {
        int32_t slot = t->map[i];
        if (slot == 0 || (t->hash[slot - 1] == h && t->len[slot - 1] == n &&
                          memcmp(t->text + t->off[slot - 1], s, n) == 0)) {
            t->map[i] = id + 1;
            return;
        }
    }
}

int lmoe_ids_push(struct lmoe_ids *ids, int32_t id) {
    if (ids->n == ids->cap) {
        int cap = ids->cap ? ids->cap * 2 : 64;
        int32_t *v = realloc(ids->v, (size_t)cap * sizeof(*v));
        if (!v) return LMOE_ERR_NOMEM;
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return 0;
}

/* Reads an optional array of numbers (scores, types) of at least n items;
 * *kv_out is NULL when the key is absent. */
static int get_num_array(const struct gguf_file *f, const char *key, int n,
                         const struct gguf_kv **kv_out, char *err, size_t errlen) {
    const struct gguf_kv *kv = gguf_find_kv(f, key);
    *kv_out = NULL;
    if (!kv) return 0;
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type == GGUF_TYPE_STRING ||
        kv->arr_type == GGUF_TYPE_ARRAY)
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "tokenizer: %s is not an array of numbers",
                         key);
    if (kv->arr_n < (uint64_t)n)
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "tokenizer: %s has %llu entries, vocab has %d",
                         key, (unsigned long long)kv->arr_n, n);
    *kv_out = kv;
    return 0;
}

/* Copies texts, scores and types, and builds the text -> id table. */
static int load_vocab(struct lmoe_tokenizer *t, const struct gguf_file *f, char *err,
                      size_t errlen) {
    const struct gguf_kv *kv = gguf_find_kv(f, "tokenizer.ggml.tokens");
    if (!kv) return lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "tokenizer: no tokenizer.ggml.tokens");
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type != GGUF_TYPE_STRING)
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT,
                         "tokenizer: tokenizer.ggml.tokens is not an array of strings");
    if (kv->arr_n == 0 || kv->arr_n > (uint64_t)INT32_MAX / 4)
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "tokenizer: %llu tokens",
                         (unsigned long long)kv->arr_n);
    int n = (int)kv->arr_n;
    t->n_vocab = n;

    size_t total = 0;
    for (int i = 0; i < n; i++) total += gguf_arr_str(kv, (uint64_t)i).len + 1;
    if (total > UINT32_MAX)
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "tokenizer: token texts total %zu bytes",
                         total);
    t->text = malloc(total);
    t->off = malloc((size_t)n * sizeof(*t->off));
    t->len = malloc((size_t)n * sizeof(*t->len));
    t->type = malloc((size_t)n);
    t->score = calloc((size_t)n, sizeof(*t->score));
    if (!t->text || !t->off || !t->len || !t->type || !t->score)
        return lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "tokenizer: out of memory for %d tokens", n);

    const struct gguf_kv *scores, *types;
    int rc = get_num_array(f, "tokenizer.ggml.scores", n, &scores, err, errlen);
    if (rc == 0) rc = get_num_array(f, "tokenizer.ggml.token_type", n, &types, err, errlen);
    if (rc) return rc;

    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        struct gguf_str s = gguf_arr_str(kv, (uint64_t)i);
        memcpy(t->text + pos, s.ptr, s.len);
        t->text[pos + s.len] = 0;
        t->off[i] = (uint32_t)pos;
        t->len[i] = (uint32_t)s.len;
        pos += s.len + 1;
        t->score[i] = scores ? (float)gguf_arr_num(scores, (uint64_t)i) : 0.0f;
        double ty = types ? gguf_arr_num(types, (uint64_t)i) : LMOE_TOKEN_TYPE_NORMAL;
        t->type[i] = ty >= 0 && ty <= LMOE_TOKEN_TYPE_BYTE ? (uint8_t)ty : LMOE_TOKEN_TYPE_UNDEFINED;
    }
    return 0;
}

static int build_trie(struct lmoe_tokenizer *t, char *err, size_t errlen);

int lmoe_tok_index(struct lmoe_tokenizer *t, char *err, size_t errlen) {
    int n = t->n_vocab;
    uint32_t cap = 1;
    while (cap < 2u * (uint32_t)n) cap <<= 1;
    t->hash = malloc((size_t)n * sizeof(*t->hash));
    t->map = calloc(cap, sizeof(*t->map));
    if (!t->hash || !t->map)
        return lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "tokenizer: out of memory for %d tokens", n);
    t->map_mask = cap - 1;
    for (int i = 0; i < n; i++) {
        t->hash[i] = tok_hash(t->text + t->off[i], t->len[i]);
        /* Empty texts can never be produced by encoding; llama.cpp renames
         * them, we just leave them out of the table. */
        if (t->len[i]) tok_insert(t, i);
    }
    return build_trie(t, err, errlen);
}

/* ---- added tokens ------------------------------------------------------- */

static int32_t trie_new(struct lmoe_tokenizer *t, uint8_t byte) {
    if (t->n_trie == t->cap_trie) {
        int32_t cap = t->cap_trie ? t->cap_trie * 2 : 256;
        struct lmoe_tok_trie *p = realloc(t->trie, (size_t)cap * sizeof(*p));
        if (!p) return -1;
        t->trie = p;
        t->cap_trie = cap;
    }
    struct lmoe_tok_trie *nd = &t->trie[t->n_trie];
    nd->child = nd->sibling = nd->id = -1;
    nd->byte = byte;
    nd->always = 0;
    return t->n_trie++;
}

/* Adds every CONTROL, USER_DEFINED and UNKNOWN token whose text is valid
 * UTF-8 (so that a match always starts and ends on character boundaries). */
static int build_trie(struct lmoe_tokenizer *t, char *err, size_t errlen) {
    for (int b = 0; b < 256; b++) t->trie_root[b] = -1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        int ty = t->type[id];
        if (ty != LMOE_TOKEN_TYPE_CONTROL && ty != LMOE_TOKEN_TYPE_USER_DEFINED &&
            ty != LMOE_TOKEN_TYPE_UNKNOWN)
            continue;
        const uint8_t *s = (const uint8_t *)t->text + t->off[id];
        uint32_t n = t->len[id];
        if (n == 0 || lmoe_utf8_valid_prefix((const char *)s, n) != n) continue;
        int32_t node = t->trie_root[s[0]];
        if (node < 0) {
            if ((node = trie_new(t, s[0])) < 0) goto oom;
            t->trie_root[s[0]] = node;
        }
        for (uint32_t i = 1; i < n; i++) {
            int32_t c = t->trie[node].child;
            while (c >= 0 && t->trie[c].byte != s[i]) c = t->trie[c].sibling;
            if (c < 0) {
                if ((c = trie_new(t, s[i])) < 0) goto oom;
                t->trie[c].sibling = t->trie[node].child;
                t->trie[node].child = c;
            }
            node = c;
        }
        t->trie[node].id = id;
        t->trie[node].always = ty == LMOE_TOKEN_TYPE_USER_DEFINED;
    }
    return 0;
oom:
    return lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "tokenizer: out of memory for added tokens");
}

/* The longest added token at s[0..n) allowed by parse_special; its length
 * goes to *len. -1 if none. */
static int32_t trie_match(const struct lmoe_tokenizer *t, const uint8_t *s, size_t n,
                          int parse_special, size_t *len) {
    int32_t best = -1;
    int32_t node = t->trie_root[s[0]];
    for (size_t i = 1; node >= 0; i++) {
        const struct lmoe_tok_trie *nd = &t->trie[node];
        if (nd->id >= 0 && (parse_special || nd->always)) {
            best = nd->id;
            *len = i;
        }
        if (i == n) break;
        int32_t c = nd->child;
        while (c >= 0 && t->trie[c].byte != s[i]) c = t->trie[c].sibling;
        node = c;
    }
    return best;
}

/* ---- open and close ----------------------------------------------------- */

/* Reads an optional token id key; out of range or absent leaves *id alone. */
static void get_id(const struct gguf_file *f, const char *key, int n_vocab, int32_t *id) {
    uint32_t v;
    if (gguf_find_kv(f, key) && gguf_get_u32(f, key, &v, NULL, 0) == 0 && v < (uint32_t)n_vocab)
        *id = (int32_t)v;
}

static void get_flag(const struct gguf_file *f, const char *key, int *flag) {
    int v;
    if (gguf_find_kv(f, key) && gguf_get_bool(f, key, &v, NULL, 0) == 0) *flag = v != 0;
}

/* Texts that mark the end of a turn, for vocabularies without an
 * eot_token_id key (the list llama.cpp uses), in order of preference. */
static const char *const eot_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]",
    "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>", /* DeepSeek */
    "<end_of_utterance>",
};

void lmoe_tok_guess_eot(struct lmoe_tokenizer *t) {
    for (size_t i = 0; t->eot < 0 && i < sizeof(eot_texts) / sizeof(eot_texts[0]); i++)
        t->eot = lmoe_tok_lookup(t, eot_texts[i], strlen(eot_texts[i]));
}

int lmoe_tokenizer_open(struct lmoe_tokenizer **out, const struct gguf_file *f, char *err,
                        size_t errlen) {
    *out = NULL;
    struct gguf_str model;
    int rc = gguf_get_str(f, "tokenizer.ggml.model", &model, err, errlen);
    if (rc) return rc;
    struct lmoe_tokenizer *t = calloc(1, sizeof(*t));
    if (!t) return lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "tokenizer: out of memory");
    t->bos = t->eos = t->eot = t->unk = -1;
    if (model.len == 4 && memcmp(model.ptr, "gpt2", 4) == 0) {
        t->model = LMOE_TOKENIZER_BPE;
    } else if (model.len == 5 && memcmp(model.ptr, "llama", 5) == 0) {
        t->model = LMOE_TOKENIZER_SPM;
        t->bos = 1; /* llama.cpp's SPM defaults, overridden by the keys below */
        t->eos = 2;
        t->unk = 0;
        t->add_bos = 1;
        t->add_space_prefix = 1;
    } else {
        rc = lmoe_errf(err, errlen, LMOE_ERR_UNSUPPORTED,
                       "tokenizer: model '%.*s' is not supported (gpt2, llama)",
                       (int)(model.len > 64 ? 64 : model.len), model.ptr);
        goto fail;
    }
    if ((rc = load_vocab(t, f, err, errlen)) != 0) goto fail;
    if (t->bos >= t->n_vocab) t->bos = -1;
    if (t->eos >= t->n_vocab) t->eos = -1;
    if (t->unk >= t->n_vocab) t->unk = -1;
    if ((rc = lmoe_tok_index(t, err, errlen)) != 0) goto fail;
    rc = t->model == LMOE_TOKENIZER_BPE ? lmoe_tok_bpe_init(t, f, err, errlen)
                                        : lmoe_tok_spm_init(t, err, errlen);
    if (rc) goto fail;

    get_id(f, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos);
    get_id(f, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos);
    get_id(f, "tokenizer.ggml.unknown_token_id", t->n_vocab, &t->unk);
    get_id(f, "tokenizer.ggml.eot_token_id", t->n_vocab, &t->eot);
    lmoe_tok_guess_eot(t);
    get_flag(f, "tokenizer.ggml.add_bos_token", &t->add_bos);
    get_flag(f, "tokenizer.ggml.add_eos_token", &t->add_eos);
    if (t->model == LMOE_TOKENIZER_SPM)
        get_flag(f, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix);
    *out = t;
    return 0;
fail:
    lmoe_tokenizer_close(t);
    return rc;
}

void lmoe_tokenizer_close(struct lmoe_tokenizer *t) {
    if (!t) return;
    lmoe_tok_bpe_free(t); /* regexes and merges; none for GGUF SPM */
    lmoe_tok_json_free(t->json);
    free(t->text);
    free(t->off);
    free(t->len);
    free(t->hash);
    free(t->type);
    free(t->score);
    free(t->map);
    free(t->trie);
    free(t);
}

/* ---- encode ------------------------------------------------------------- */

/* Encodes one stretch of text without added tokens; at_start says whether it
 * begins the whole text (tokenizer.json's Metaspace prepend_scheme "first"). */
static int encode_raw(const struct lmoe_tokenizer *t, const char *s, size_t n, int after_special,
                      int at_start, struct lmoe_ids *ids, char *err, size_t errlen) {
    if (t->json) return lmoe_tok_json_encode(t, s, n, at_start, ids, err, errlen);
    if (t->model == LMOE_TOKENIZER_BPE) return lmoe_tok_bpe_encode(t, s, n, ids, err, errlen);
    /* llama.cpp prepends the space at the start and after every added token. */
    return lmoe_tok_spm_encode(t, s, n, t->add_space_prefix && after_special, ids, err, errlen);
}

int lmoe_tokenizer_encode(const struct lmoe_tokenizer *t, const char *text, size_t len,
                          int parse_special, int32_t **ids_out, int *n_out, char *err,
                          size_t errlen) {
    *ids_out = NULL;
    *n_out = 0;
    if (len && !text) return lmoe_errf(err, errlen, LMOE_ERR_ARG, "tokenizer: text is NULL");
    if (len > (size_t)INT32_MAX / 4)
        return lmoe_errf(err, errlen, LMOE_ERR_ARG, "tokenizer: text of %zu bytes is too long", len);
    size_t valid = lmoe_utf8_valid_prefix(text, len);
    if (valid != len)
        return lmoe_errf(err, errlen, LMOE_ERR_ARG,
                         "tokenizer: invalid UTF-8 at byte %zu of %zu (0x%02x)", valid, len,
                         (unsigned)(uint8_t)text[valid]);

    struct lmoe_ids ids = {0};
    int rc = 0;
    const uint8_t *s = (const uint8_t *)text;
    size_t raw = 0; /* start of the text not yet encoded */
    int after_special = 1;
    for (size_t i = 0; i < len && rc == 0;) {
        size_t mlen = 0;
        int32_t id = t->trie_root[s[i]] >= 0 ? trie_match(t, s + i, len - i, parse_special, &mlen)
                                              : -1;
        if (id < 0) {
            i++;
            continue;
        }
        if (i > raw) rc = encode_raw(t, text + raw, i - raw, after_special, raw == 0, &ids, err, errlen);
        if (rc == 0) rc = lmoe_ids_push(&ids, id);
        i += mlen;
        raw = i;
        after_special = 1;
    }
    if (rc == 0 && raw < len)
        rc = encode_raw(t, text + raw, len - raw, after_special, raw == 0, &ids, err, errlen);
    if (rc == 0 && !ids.v && !(ids.v = malloc(sizeof(int32_t)))) rc = LMOE_ERR_NOMEM;
    if (rc) {
        free(ids.v);
        if (rc == LMOE_ERR_NOMEM) lmoe_errf(err, errlen, rc, "tokenizer: out of memory");
        return rc;
    }
    *ids_out = ids.v;
    *n_out = ids.n;
    return 0;
}

/* ---- decode ------------------------------------------------------------- */

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Copies what fits of src to buf at *pos and advances *pos by n anyway. */
static void put(char *buf, size_t buflen, size_t *pos, const char *src, size_t n) {
    if (*pos < buflen) memcpy(buf + *pos, src, n < buflen - *pos ? n : buflen - *pos);
    *pos += n;
}

int lmoe_tokenizer_decode(const struct lmoe_tokenizer *t, int32_t id, char *buf, size_t buflen) {
    if (id < 0 || id >= t->n_vocab) return LMOE_ERR_ARG;
    const char *p = t->text + t->off[id];
    size_t n = t->len[id], pos = 0;
    int ty = t->type[id];
    if (ty == LMOE_TOKEN_TYPE_CONTROL || ty == LMOE_TOKEN_TYPE_USER_DEFINED) {
        put(buf, buflen, &pos, p, n);
    } else if (t->model == LMOE_TOKENIZER_BPE) {
        pos = lmoe_tok_bpe_unmap(p, n, buf, buflen);
    } else if (n == 6 && p[0] == '<' && p[1] == '0' && p[2] == 'x' && p[5] == '>' &&
               hexval(p[3]) >= 0 && hexval(p[4]) >= 0 &&
               (ty == LMOE_TOKEN_TYPE_BYTE || ty == LMOE_TOKEN_TYPE_UNDEFINED)) {
        char b = (char)(hexval(p[3]) * 16 + hexval(p[4]));
        put(buf, buflen, &pos, &b, 1);
    } else {
        /* SPM: U+2581 (e2 96 81) stands for a space. */
        size_t i = 0, run = 0;
        for (; i + 2 < n; i++) {
            if ((uint8_t)p[i] == 0xe2 && (uint8_t)p[i + 1] == 0x96 && (uint8_t)p[i + 2] == 0x81) {
                put(buf, buflen, &pos, p + run, i - run);
                put(buf, buflen, &pos, " ", 1);
                i += 2;
                run = i + 1;
            }
        }
        put(buf, buflen, &pos, p + run, n - run);
    }
    return pos > INT32_MAX ? LMOE_ERR_FORMAT : (int)pos;
}

/* ---- accessors ---------------------------------------------------------- */

const char *lmoe_tokenizer_piece(const struct lmoe_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) return NULL;
    if (len) *len = t->len[id];
    return t->text + t->off[id];
}

int lmoe_tokenizer_n_vocab(const struct lmoe_tokenizer *t) { return t->n_vocab; }
int lmoe_tokenizer_model(const struct lmoe_tokenizer *t) { return t->model; }
int32_t lmoe_tokenizer_bos(const struct lmoe_tokenizer *t) { return t->bos; }
int32_t lmoe_tokenizer_eos(const struct lmoe_tokenizer *t) { return t->eos; }
int32_t lmoe_tokenizer_eot(const struct lmoe_tokenizer *t) { return t->eot; }
int32_t lmoe_tokenizer_unk(const struct lmoe_tokenizer *t) { return t->unk; }
int lmoe_tokenizer_add_bos(const struct lmoe_tokenizer *t) { return t->add_bos; }
int lmoe_tokenizer_add_eos(const struct lmoe_tokenizer *t) { return t->add_eos; }
int lmoe_tokenizer_add_space_prefix(const struct lmoe_tokenizer *t) { return t->add_space_prefix; }
const char *lmoe_tokenizer_pre(const struct lmoe_tokenizer *t) { return t->pre; }

int lmoe_tokenizer_token_type(const struct lmoe_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab ? t->type[id] : LMOE_TOKEN_TYPE_UNDEFINED;
}

int lmoe_tokenizer_is_control(const struct lmoe_tokenizer *t, int32_t id) {
    return lmoe_tokenizer_token_type(t, id) == LMOE_TOKEN_TYPE_CONTROL;
}

int32_t lmoe_tokenizer_find(const struct lmoe_tokenizer *t, const char *text, size_t len) {
    return len ? lmoe_tok_lookup(t, text, len) : -1;
}

/* ---- UTF-8 -------------------------------------------------------------- */

/* How the character starting with byte c continues: total length and the
 * allowed range of its second byte (which is what rules out overlong forms,
 * surrogates and values above U+10FFFF). 0 length: c cannot start one. */
static int utf8_lead(uint8_t c, uint8_t *lo, uint8_t *hi) {
    *lo = 0x80;
    *hi = 0xbf;
    if (c < 0x80) return 1;
    if (c < 0xc2) return 0;
    if (c < 0xe0) return 2;
    if (c < 0xf0) {
        if (c == 0xe0) *lo = 0xa0;
        if (c == 0xed) *hi = 0x9f;
        return 3;
    }
    if (c < 0xf5) {
        if (c == 0xf0) *lo = 0x90;
        if (c == 0xf4) *hi = 0x8f;
        return 4;
    }
    return 0;
}

/* Bytes of s[0..n) that form a valid prefix of a character: 0 if s[0]
 * cannot start one; *need gets the full length it wants. */
static int utf8_partial(const uint8_t *s, size_t n, int *need) {
    uint8_t lo, hi;
    int k = utf8_lead(s[0], &lo, &hi);
    *need = k;
    if (k == 0) return 0;
    int i = 1;
    for (; i < k && (size_t)i < n; i++) {
        uint8_t b = s[i];
        if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xbf)) break;
    }
    return i;
}

size_t lmoe_utf8_valid_prefix(const char *str, size_t n) {
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) { /* ASCII runs are the common case */
            i++;
            continue;
        }
        int need, got = utf8_partial(s + i, n - i, &need);
        if (got == 0 || got < need) return i;
        i += (size_t)got;
    }
    return n;
}

static const char replacement[3] = {(char)0xef, (char)0xbf, (char)0xbd}; /* U+FFFD */

/* Consumes whole characters of s[0..n) into out; returns bytes consumed. A
 * valid but unfinished character at the end is left unconsumed. */
static size_t utf8_emit(const uint8_t *s, size_t n, char *out, size_t *k) {
    size_t i = 0;
    while (i < n) {
        int need, got = utf8_partial(s + i, n - i, &need);
        if (got == 0) { /* a byte that cannot start a character */
            memcpy(out + *k, replacement, 3);
            *k += 3;
            i++;
        } else if (got == need) {
            memcpy(out + *k, s + i, (size_t)got);
            *k += (size_t)got;
            i += (size_t)got;
        } else if (i + (size_t)got == n) {
            break; /* might still be completed by the next token */
        } else { /* a maximal invalid subpart: one U+FFFD for all of it */
            memcpy(out + *k, replacement, 3);
            *k += 3;
            i += (size_t)got;
        }
    }
    return i;
}

size_t lmoe_utf8_stream_push(struct lmoe_utf8_stream *st, const char *in, size_t n, char *out) {
    const uint8_t *s = (const uint8_t *)in;
    size_t k = 0;
    /* Finish a held character first, one byte at a time, so that the held
     * bytes never need more than their 4-byte buffer. */
    while (st->n_pend > 0 && n > 0) {
        st->pend[st->n_pend++] = *s++;
        n--;
        size_t used = utf8_emit(st->pend, (size_t)st->n_pend, out, &k);
        memmove(st->pend, st->pend + used, (size_t)st->n_pend - used);
        st->n_pend -= (int)used;
    }
    size_t used = utf8_emit(s, n, out, &k);
    memcpy(st->pend + st->n_pend, s + used, n - used); /* at most 3 bytes */
    st->n_pend += (int)(n - used);
    return k;
}

size_t lmoe_utf8_stream_flush(struct lmoe_utf8_stream *st, char *out) {
    if (st->n_pend == 0) return 0;
    st->n_pend = 0;
    memcpy(out, replacement, 3);
    return 3;
}
