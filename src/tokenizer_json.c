/*
 * tokenizer_json.c - Hugging Face tokenizer.json (and tokenizer_config.json)
 * into the same handle the GGUF loader builds.
 *
 * A tokenizer.json describes a pipeline: a normalizer rewrites the text, a
 * pre-tokenizer cuts it into pieces, the BPE model merges each piece, and a
 * decoder turns tokens back into text. We read the parts that the supported
 * model families use and refuse the rest with LMOE_ERR_UNSUPPORTED naming the
 * part, so that a tokenizer is never silently run differently:
 *
 *   normalizer     NFC, NFD, NFKC, NFKD (utf8proc), Prepend, Replace,
 *                  Lowercase, Strip, Sequence
 *   pre_tokenizer  Split (Regex or String; every behavior, invert),
 *                  ByteLevel (add_prefix_space, use_regex -> GPT-2's regex),
 *                  Metaspace (replacement, prepend_scheme, split), Digits,
 *                  Whitespace, WhitespaceSplit, Sequence
 *   model          BPE: vocab, merges ("a b" or ["a", "b"]), byte_fallback,
 *                  ignore_merges, unk_token, fuse_unk
 *   decoder        ByteLevel -> byte-level stand-ins; Metaspace, or
 *                  Replace("▁", " ") + ByteFallback + Fuse + Strip -> ▁ and
 *                  <0xNN> as in SentencePiece (tokenizer.c decodes both)
 *
 * The regexes in tokenizer.json are Oniguruma syntax (what tokenizers runs);
 * PCRE2 reads them as they are except \s and \S, which become the explicit
 * White_Space class for the reason given in tokenizer_bpe.c.
 *
 * Added tokens are matched in the raw text by tokenizer.c's trie, like the
 * GGUF ones; their lstrip/rstrip/single_word/normalized flags are not used
 * (none of the supported tokenizers sets the first three).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "error.h"
#include "leanmoe.h"
#include "tokenizer_impl.h"

/* Unicode White_Space, as in tokenizer_bpe.c. */
#define WS_BODY "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
/* GPT-2's pattern, as tokenizers' ByteLevel(use_regex=true) has it. */
static const char gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
#define META "\xe2\x96\x81" /* U+2581, SentencePiece's space */

enum norm_kind { NORM_NFC, NORM_NFD, NORM_NFKC, NORM_NFKD, NORM_PREPEND, NORM_REPLACE, NORM_LOWER, NORM_STRIP };

struct norm {
    int kind;
    char *text;        /* Prepend's text, Replace's content */
    size_t n_text;
    pcre2_code *re;    /* Replace's pattern */
    int left, right;   /* Strip */
};

/* HF's SplitDelimiterBehavior. */
enum split_behavior { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS };

enum step_kind { STEP_SPLIT, STEP_PREFIX_SPACE, STEP_METASPACE };

struct step {
    int kind;
    pcre2_code *re; /* SPLIT */
    int behavior, invert;
    char *repl;     /* METASPACE: the replacement character's UTF-8 */
    size_t n_repl;
    int prepend;    /* METASPACE: 0 never, 1 first, 2 always */
    int split;
};

struct lmoe_tok_json {
    struct norm *norms;
    int n_norms;
    struct step *steps;
    int n_steps;
    int byte_level;    /* a ByteLevel pre-tokenizer: BPE starts from bytes */
    int byte_fallback; /* unknown characters become <0xNN> tokens */
    int fuse_unk;
    char *chat_template;
};

/* ---- building the pipeline ---------------------------------------------- */

struct jctx {
    const char *path;
    char *err;
    size_t errlen;
};

static int unsupported(struct jctx *c, const char *what, const char *name) {
    return lmoe_errf(c->err, c->errlen, LMOE_ERR_UNSUPPORTED, "%s: %s '%.64s' is not supported",
                     c->path, what, name ? name : "?");
}

static int bad(struct jctx *c, const char *what) {
    return lmoe_errf(c->err, c->errlen, LMOE_ERR_FORMAT, "%s: %s", c->path, what);
}

static const char *jstr(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int jbool(const json_t *o, const char *key, int dflt) {
    const json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* Rewrites an Oniguruma pattern for PCRE2: \s and \S become the explicit
 * White_Space class (inside a class \s becomes the class body; \S there is
 * left to PCRE2, which differs only on U+180E). Returns a malloc'd string. */
static char *translate_regex(const char *re, size_t n) {
    size_t cap = n * 8 + sizeof(WS_BODY) * 4 + 16, k = 0;
    /* Each \s grows by at most sizeof(WS_BODY) + 3. */
    for (size_t i = 0; i + 1 < n; i++)
        if (re[i] == '\\') cap += sizeof(WS_BODY) + 4;
    char *out = malloc(cap);
    if (!out) return NULL;
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = re[i];
        if (ch == '\\' && i + 1 < n) {
            char nx = re[i + 1];
            if (nx == 's' || (nx == 'S' && !in_class)) {
                const char *open = in_class ? "" : nx == 's' ? "[" : "[^";
                k += (size_t)sprintf(out + k, "%s%s%s", open, WS_BODY, in_class ? "" : "]");
            } else {
                out[k++] = ch;
                out[k++] = nx;
            }
            i++;
            continue;
        }
        if (!in_class && ch == '[') {
            in_class = 1;
            out[k++] = ch;
            /* A ']' right after '[' or '[^' is a literal. */
            if (i + 1 < n && re[i + 1] == '^') out[k++] = re[++i];
            if (i + 1 < n && re[i + 1] == ']') out[k++] = re[++i];
            continue;
        }
        if (in_class && ch == ']') in_class = 0;
        out[k++] = ch;
    }
    out[k] = 0;
    return out;
}

/* Compiles a tokenizer.json pattern object {"Regex": ...} or {"String": ...}. */
static int compile_pattern(struct jctx *c, const json_t *pat, pcre2_code **out) {
    const char *rx = jstr(pat, "Regex"), *lit = jstr(pat, "String");
    if (!rx && !lit) return bad(c, "a pattern is neither {\"Regex\"} nor {\"String\"}");
    const json_t *v = json_object_get(pat, rx ? "Regex" : "String");
    size_t n = json_string_length(v);
    char *src = rx ? translate_regex(rx, n) : NULL;
    if (rx && !src) return lmoe_errf(c->err, c->errlen, LMOE_ERR_NOMEM, "tokenizer: out of memory");
    int code;
    PCRE2_SIZE at;
    *out = pcre2_compile((PCRE2_SPTR)(rx ? src : lit), rx ? PCRE2_ZERO_TERMINATED : n,
                         PCRE2_UTF | (rx ? PCRE2_UCP : PCRE2_LITERAL), &code, &at, NULL);
    free(src);
    if (!*out) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof(msg));
        return lmoe_errf(c->err, c->errlen, LMOE_ERR_UNSUPPORTED, "%s: regex /%.80s/: %s at %zu",
                         c->path, rx ? rx : lit, (const char *)msg, (size_t)at);
    }
    (void)pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE);
    return 0;
}

static int compile_builtin(struct jctx *c, const char *re, pcre2_code **out) {
    json_t *pat = json_pack("{ss}", "Regex", re);
    if (!pat) return lmoe_errf(c->err, c->errlen, LMOE_ERR_NOMEM, "tokenizer: out of memory");
    int rc = compile_pattern(c, pat, out);
    json_decref(pat);
    return rc;
}

static void *grow_array(void *p, int n, size_t size) {
    return realloc(p, (size_t)(n + 1) * size);
}

static int add_norm(struct lmoe_tok_json *j, struct jctx *c, const json_t *nz, int depth) {
    if (json_is_null(nz) || !nz) return 0;
    const char *type = jstr(nz, "type");
    if (!type) return bad(c, "normalizer without a type");
    if (!strcmp(type, "Sequence")) {
        if (depth > 8) return bad(c, "normalizers nested too deeply");
        const json_t *list = json_object_get(nz, "normalizers");
        size_t i;
        const json_t *it;
        json_array_foreach(list, i, it) {
            int rc = add_norm(j, c, it, depth + 1);
            if (rc) return rc;
        }
        return 0;
    }
    struct norm nm = {0};
    if (!strcmp(type, "NFC")) nm.kind = NORM_NFC;
    else if (!strcmp(type, "NFD")) nm.kind = NORM_NFD;
    else if (!strcmp(type, "NFKC")) nm.kind = NORM_NFKC;
    else if (!strcmp(type, "NFKD")) nm.kind = NORM_NFKD;
    else if (!strcmp(type, "Lowercase")) nm.kind = NORM_LOWER;
    else if (!strcmp(type, "Strip")) {
        nm.kind = NORM_STRIP;
        nm.left = jbool(nz, "strip_left", 1);
        nm.right = jbool(nz, "strip_right", 1);
    } else if (!strcmp(type, "Prepend") || !strcmp(type, "Replace")) {
        const char *key = type[0] == 'P' ? "prepend" : "content";
        const json_t *v = json_object_get(nz, key);
        if (!json_is_string(v)) return bad(c, "Prepend/Replace normalizer without its text");
        nm.kind = type[0] == 'P' ? NORM_PREPEND : NORM_REPLACE;
        nm.n_text = json_string_length(v);
        if (!(nm.text = malloc(nm.n_text + 1))) return LMOE_ERR_NOMEM;
        memcpy(nm.text, json_string_value(v), nm.n_text + 1);
        if (nm.kind == NORM_REPLACE) {
            int rc = compile_pattern(c, json_object_get(nz, "pattern"), &nm.re);
            if (rc) {
                free(nm.text);
                return rc;
            }
        }
    } else {
        return unsupported(c, "normalizer", type);
    }
    struct norm *p = grow_array(j->norms, j->n_norms, sizeof(*p));
    if (!p) {
        free(nm.text);
        pcre2_code_free(nm.re);
        return LMOE_ERR_NOMEM;
    }
    j->norms = p;
    j->norms[j->n_norms++] = nm;
    return 0;
}

static int push_step(struct lmoe_tok_json *j, struct step st) {
    struct step *p = grow_array(j->steps, j->n_steps, sizeof(*p));
    if (!p) {
        pcre2_code_free(st.re);
        free(st.repl);
        return LMOE_ERR_NOMEM;
    }
    j->steps = p;
    j->steps[j->n_steps++] = st;
    return 0;
}

static int split_step(struct lmoe_tok_json *j, struct jctx *c, const char *re, int behavior,
                      int invert) {
    struct step st = {STEP_SPLIT, NULL, behavior, invert, NULL, 0, 0, 0};
    int rc = compile_builtin(c, re, &st.re);
    return rc ? rc : push_step(j, st);
}

static int add_pre(struct lmoe_tok_json *j, struct jctx *c, const json_t *pt, int depth) {
    if (json_is_null(pt) || !pt) return 0;
    const char *type = jstr(pt, "type");
    if (!type) return bad(c, "pre_tokenizer without a type");
    if (j->byte_level) return unsupported(c, "pre-tokenizer after ByteLevel", type);
    if (!strcmp(type, "Sequence")) {
        if (depth > 8) return bad(c, "pre-tokenizers nested too deeply");
        size_t i;
        const json_t *it;
        json_array_foreach(json_object_get(pt, "pretokenizers"), i, it) {
            int rc = add_pre(j, c, it, depth + 1);
            if (rc) return rc;
        }
        return 0;
    }
    if (!strcmp(type, "Split")) {
        static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious",
                                            "MergedWithNext", "Contiguous"};
        const char *b = jstr(pt, "behavior");
        struct step st = {STEP_SPLIT, NULL, -1, jbool(pt, "invert", 0), NULL, 0, 0, 0};
        for (int i = 0; b && i < 5; i++)
            if (!strcmp(b, names[i])) st.behavior = i;
        if (st.behavior < 0) return unsupported(c, "Split behavior", b);
        int rc = compile_pattern(c, json_object_get(pt, "pattern"), &st.re);
        return rc ? rc : push_step(j, st);
    }
    if (!strcmp(type, "ByteLevel")) {
        int rc = 0;
        if (jbool(pt, "add_prefix_space", 1)) {
            struct step st = {STEP_PREFIX_SPACE, NULL, 0, 0, NULL, 0, 0, 0};
            rc = push_step(j, st);
        }
        if (rc == 0 && jbool(pt, "use_regex", 1)) rc = split_step(j, c, gpt2_regex, SPLIT_ISOLATED, 0);
        j->byte_level = 1;
        return rc;
    }
    if (!strcmp(type, "Digits"))
        return split_step(j, c, jbool(pt, "individual_digits", 0) ? "\\p{N}" : "\\p{N}+",
                          SPLIT_ISOLATED, 0);
    if (!strcmp(type, "Whitespace")) return split_step(j, c, "\\w+|[^\\w\\s]+", SPLIT_REMOVED, 1);
    if (!strcmp(type, "WhitespaceSplit")) return split_step(j, c, "\\s+", SPLIT_REMOVED, 0);
    if (!strcmp(type, "Metaspace")) {
        const char *r = jstr(pt, "replacement");
        const char *scheme = jstr(pt, "prepend_scheme");
        struct step st = {STEP_METASPACE, NULL, 0, 0, NULL, 0, 2, jbool(pt, "split", 1)};
        if (!r) r = META;
        if (scheme) {
            if (!strcmp(scheme, "never")) st.prepend = 0;
            else if (!strcmp(scheme, "first")) st.prepend = 1;
            else if (!strcmp(scheme, "always")) st.prepend = 2;
            else return unsupported(c, "Metaspace prepend_scheme", scheme);
        } else if (!jbool(pt, "add_prefix_space", 1)) {
            st.prepend = 0; /* files from before prepend_scheme */
        }
        st.n_repl = strlen(r);
        if (st.n_repl == 0 || lmoe_utf8_valid_prefix(r, st.n_repl) != st.n_repl)
            return bad(c, "Metaspace replacement is not one character");
        if (!(st.repl = malloc(st.n_repl + 1))) return LMOE_ERR_NOMEM;
        memcpy(st.repl, r, st.n_repl + 1);
        return push_step(j, st);
    }
    return unsupported(c, "pre-tokenizer", type);
}

/* The decoder decides how a token becomes bytes: 1 byte-level, 0 SPM-style
 * (▁ and <0xNN>), -1 unknown. */
static int decoder_kind(struct jctx *c, const json_t *d, int depth) {
    if (!d || json_is_null(d) || depth > 8) return -1;
    const char *type = jstr(d, "type");
    if (!type) return -1;
    if (!strcmp(type, "ByteLevel")) return 1;
    if (!strcmp(type, "Metaspace") || !strcmp(type, "ByteFallback")) return 0;
    if (!strcmp(type, "Replace")) {
        const char *from = jstr(json_object_get(d, "pattern"), "String"), *to = jstr(d, "content");
        return from && to && !strcmp(from, META) && !strcmp(to, " ") ? 0 : -1;
    }
    if (!strcmp(type, "Sequence")) {
        int kind = -1;
        size_t i;
        const json_t *it;
        json_array_foreach(json_object_get(d, "decoders"), i, it) {
            int k = decoder_kind(c, it, depth + 1);
            if (k >= 0) kind = k;
        }
        return kind;
    }
    return -1; /* Fuse, Strip and the like change no single token's bytes */
}

void lmoe_tok_json_free(struct lmoe_tok_json *j) {
    if (!j) return;
    for (int i = 0; i < j->n_norms; i++) {
        free(j->norms[i].text);
        pcre2_code_free(j->norms[i].re);
    }
    for (int i = 0; i < j->n_steps; i++) {
        pcre2_code_free(j->steps[i].re);
        free(j->steps[i].repl);
    }
    free(j->norms);
    free(j->steps);
    free(j->chat_template);
    free(j);
}

/* ---- vocabulary --------------------------------------------------------- */

/* Puts each vocab entry and added token at its id. */
static int load_vocab(struct lmoe_tokenizer *t, struct jctx *c, const json_t *vocab,
                      const json_t *added) {
    if (!json_is_object(vocab)) return bad(c, "model.vocab is not an object");
    if (added && !json_is_array(added)) return bad(c, "added_tokens is not an array");
    size_t n_entries = json_object_size(vocab) + json_array_size(added);
    if (n_entries == 0) return bad(c, "the vocabulary is empty");
    json_int_t max_id = -1;
    const char *key;
    const json_t *v;
    size_t i;
    json_object_foreach((json_t *)vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0) return bad(c, "a vocab id is not a non-negative integer");
        if (json_integer_value(v) > max_id) max_id = json_integer_value(v);
    }
    json_array_foreach(added, i, v) {
        const json_t *id = json_object_get(v, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || !json_is_string(json_object_get(v, "content")))
            return bad(c, "an added token lacks a non-negative id or its content");
        if (json_integer_value(id) > max_id) max_id = json_integer_value(id);
    }
    /* Ids may leave gaps, but not so many that a hostile file makes us
     * allocate for billions of tokens. */
    if (max_id >= INT32_MAX / 4 || (size_t)max_id > 4 * n_entries + 1024)
        return bad(c, "token ids are far larger than the vocabulary");
    int n = (int)max_id + 1;
    t->n_vocab = n;
    const char **texts = calloc((size_t)n, sizeof(*texts));
    size_t *lens = calloc((size_t)n, sizeof(*lens));
    t->off = malloc((size_t)n * sizeof(*t->off));
    t->len = malloc((size_t)n * sizeof(*t->len));
    t->type = calloc((size_t)n, 1);
    t->score = calloc((size_t)n, sizeof(*t->score));
    int rc = 0;
    if (!texts || !lens || !t->off || !t->len || !t->type || !t->score) {
        rc = LMOE_ERR_NOMEM;
        goto done;
    }
    json_object_foreach((json_t *)vocab, key, v) {
        int id = (int)json_integer_value(v);
        texts[id] = key;
        lens[id] = strlen(key); /* jansson keys cannot hold NUL */
        t->type[id] = LMOE_TOKEN_TYPE_NORMAL;
    }
    json_array_foreach(added, i, v) {
        int id = (int)json_integer_value(json_object_get(v, "id"));
        const json_t *s = json_object_get(v, "content");
        texts[id] = json_string_value(s);
        lens[id] = json_string_length(s);
        t->type[id] = jbool(v, "special", 0) ? LMOE_TOKEN_TYPE_CONTROL : LMOE_TOKEN_TYPE_USER_DEFINED;
    }
    size_t total = 0;
    for (int id = 0; id < n; id++) total += lens[id] + 1;
    if (total > UINT32_MAX) {
        rc = bad(c, "token texts are too long");
        goto done;
    }
    if (!(t->text = malloc(total))) {
        rc = LMOE_ERR_NOMEM;
        goto done;
    }
    size_t pos = 0;
    for (int id = 0; id < n; id++) {
        if (lens[id]) memcpy(t->text + pos, texts[id], lens[id]);
        t->text[pos + lens[id]] = 0;
        t->off[id] = (uint32_t)pos;
        t->len[id] = (uint32_t)lens[id];
        pos += lens[id] + 1;
    }
done:
    free(texts);
    free(lens);
    if (rc == LMOE_ERR_NOMEM) rc = lmoe_errf(c->err, c->errlen, rc, "tokenizer: out of memory for %d tokens", n);
    return rc;
}

/* Merges in rank order: "a b" strings (split at the first space after the
 * first byte, as the GGUF reader does) or ["a", "b"] pairs. */
static int load_merges(struct lmoe_tokenizer *t, struct jctx *c, const json_t *merges) {
    if (merges && !json_is_array(merges)) return bad(c, "model.merges is not an array");
    size_t n = json_array_size(merges);
    if (n > (size_t)INT32_MAX / 4) return bad(c, "too many merges");
    if (lmoe_tok_bpe_merges_alloc(t, n)) return LMOE_ERR_NOMEM;
    size_t r;
    const json_t *m;
    json_array_foreach(merges, r, m) {
        const char *a, *b;
        size_t na, nb;
        if (json_is_string(m)) {
            const char *s = json_string_value(m);
            size_t len = json_string_length(m);
            const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
            if (!sp) continue;
            a = s;
            na = (size_t)(sp - s);
            b = sp + 1;
            nb = len - na - 1;
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0));
            na = json_string_length(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            nb = json_string_length(json_array_get(m, 1));
        } else {
            return bad(c, "a merge is neither \"a b\" nor [\"a\", \"b\"]");
        }
        if (lmoe_tok_bpe_merge_add(t, a, na, b, nb, (int32_t)r)) return LMOE_ERR_NOMEM;
    }
    return 0;
}

/* Byte-fallback tokens <0xNN>: typed BYTE, and byte_id[] points at them. */
static void mark_byte_tokens(struct lmoe_tokenizer *t) {
    static const char hexd[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; b++) {
        char hex[6] = {'<', '0', 'x', hexd[b >> 4], hexd[b & 15], '>'};
        int32_t id = lmoe_tok_lookup(t, hex, 6);
        t->byte_id[b] = id;
        if (id >= 0 && t->type[id] == LMOE_TOKEN_TYPE_NORMAL) t->type[id] = LMOE_TOKEN_TYPE_BYTE;
    }
}

/* A token given as "text" or {"content": "text"} (tokenizer_config.json's
 * bos_token etc.): its id, or -1. *found says whether the key was there. */
static int32_t config_token(const struct lmoe_tokenizer *t, const json_t *cfg, const char *key,
                            int *found) {
    const json_t *v = json_object_get(cfg, key);
    *found = v != NULL;
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v)) return -1;
    return lmoe_tok_lookup(t, json_string_value(v), json_string_length(v));
}

/* The post-processor's TemplateProcessing says which special tokens wrap a
 * single sequence: the defaults for bos/add_bos and eos/add_eos. */
static void read_post_processor(struct lmoe_tokenizer *t, const json_t *pp, int depth) {
    const char *type = jstr(pp, "type");
    if (!type || depth > 8) return;
    if (!strcmp(type, "Sequence")) {
        size_t i;
        const json_t *it;
        json_array_foreach(json_object_get(pp, "processors"), i, it) read_post_processor(t, it, depth + 1);
        return;
    }
    if (strcmp(type, "TemplateProcessing") != 0) return;
    const json_t *single = json_object_get(pp, "single");
    size_t n = json_array_size(single);
    for (size_t i = 0; i < n; i += n - 1 ? n - 1 : 1) {
        const json_t *sp = json_object_get(json_array_get(single, i), "SpecialToken");
        const json_t *id = json_object_get(sp, "id");
        int32_t tok = json_is_string(id) ? lmoe_tok_lookup(t, json_string_value(id), json_string_length(id)) : -1;
        if (tok >= 0 && i == 0) {
            t->bos = tok;
            t->add_bos = 1;
        } else if (tok >= 0) {
            t->eos = tok;
            t->add_eos = 1;
        }
    }
}

static void read_config(struct lmoe_tokenizer *t, const json_t *cfg) {
    int found;
    int32_t id = config_token(t, cfg, "bos_token", &found);
    if (found) t->bos = id;
    id = config_token(t, cfg, "eos_token", &found);
    if (found) t->eos = id;
    id = config_token(t, cfg, "unk_token", &found);
    if (found && id >= 0) t->unk = id;
    t->add_bos = jbool(cfg, "add_bos_token", t->add_bos);
    t->add_eos = jbool(cfg, "add_eos_token", t->add_eos);
    /* The chat template: a string, or a list of {name, template} of which
     * transformers uses "default". */
    const json_t *ct = json_object_get(cfg, "chat_template");
    const char *tmpl = json_is_string(ct) ? json_string_value(ct) : NULL;
    size_t i;
    const json_t *it;
    if (json_is_array(ct)) json_array_foreach(ct, i, it) {
            const char *name = jstr(it, "name");
            if (name && !strcmp(name, "default")) tmpl = jstr(it, "template");
        }
    if (tmpl) t->json->chat_template = strdup(tmpl);
}

/* path is tokenizer.json or a folder holding it; the config is its sibling. */
static void sibling_paths(const char *path, char *json_path, char *cfg_path, size_t n) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(json_path, n, "%s/tokenizer.json", path);
        snprintf(cfg_path, n, "%s/tokenizer_config.json", path);
        return;
    }
    snprintf(json_path, n, "%s", path);
    const char *slash = strrchr(path, '/');
    int dir = slash ? (int)(slash - path) : 0;
    if (slash) snprintf(cfg_path, n, "%.*s/tokenizer_config.json", dir, path);
    else snprintf(cfg_path, n, "tokenizer_config.json");
}

static json_t *read_json(const char *path, char *err, size_t errlen, int *rc) {
    json_error_t je;
    json_t *root = json_load_file(path, JSON_ALLOW_NUL, &je);
    *rc = 0;
    if (!root) {
        FILE *f = fopen(path, "rb");
        if (f) fclose(f);
        *rc = lmoe_errf(err, errlen, f ? LMOE_ERR_FORMAT : LMOE_ERR_IO, "%s: %s (line %d)", path,
                        f ? je.text : "cannot be read", je.line);
    } else if (!json_is_object(root)) {
        *rc = lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "%s: not a JSON object", path);
        json_decref(root);
        root = NULL;
    }
    return root;
}

int lmoe_tokenizer_open_json(struct lmoe_tokenizer **out, const char *path, char *err, size_t errlen) {
    *out = NULL;
    char json_path[4096], cfg_path[4096];
    sibling_paths(path, json_path, cfg_path, sizeof json_path);
    int rc;
    json_t *root = read_json(json_path, err, errlen, &rc), *cfg = NULL;
    if (!root) return rc;
    struct jctx c = {json_path, err, errlen};
    struct lmoe_tokenizer *t = calloc(1, sizeof(*t));
    if (t) t->json = calloc(1, sizeof(*t->json));
    if (!t || !t->json) {
        rc = lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "tokenizer: out of memory");
        goto fail;
    }
    t->bos = t->eos = t->eot = t->unk = -1;
    snprintf(t->pre, sizeof t->pre, "tokenizer.json");

    const json_t *model = json_object_get(root, "model");
    const char *mtype = jstr(model, "type");
    if (!json_is_object(model)) {
        rc = bad(&c, "no model object");
        goto fail;
    }
    if (mtype && strcmp(mtype, "BPE") != 0) {
        rc = unsupported(&c, "model", mtype);
        goto fail;
    }
    const char *prefix = jstr(model, "continuing_subword_prefix"), *suffix = jstr(model, "end_of_word_suffix");
    if ((prefix && *prefix) || (suffix && *suffix)) {
        rc = unsupported(&c, "BPE subword prefix/suffix", *prefix ? prefix : suffix);
        goto fail;
    }
    if ((rc = load_vocab(t, &c, json_object_get(model, "vocab"), json_object_get(root, "added_tokens"))))
        goto fail;
    if ((rc = lmoe_tok_index(t, err, errlen))) goto fail;
    if ((rc = load_merges(t, &c, json_object_get(model, "merges")))) {
        if (rc == LMOE_ERR_NOMEM) lmoe_errf(err, errlen, rc, "tokenizer: out of memory for merges");
        goto fail;
    }
    struct lmoe_tok_json *j = t->json;
    j->byte_fallback = jbool(model, "byte_fallback", 0);
    j->fuse_unk = jbool(model, "fuse_unk", 0);
    t->ignore_merges = jbool(model, "ignore_merges", 0);
    const json_t *unk = json_object_get(model, "unk_token");
    if (json_is_string(unk)) t->unk = lmoe_tok_lookup(t, json_string_value(unk), json_string_length(unk));

    if ((rc = add_norm(j, &c, json_object_get(root, "normalizer"), 0)) ||
        (rc = add_pre(j, &c, json_object_get(root, "pre_tokenizer"), 0))) {
        if (rc == LMOE_ERR_NOMEM) lmoe_errf(err, errlen, rc, "tokenizer: out of memory");
        goto fail;
    }
    int dec = decoder_kind(&c, json_object_get(root, "decoder"), 0);
    if (dec < 0) dec = j->byte_level;
    t->model = dec ? LMOE_TOKENIZER_BPE : LMOE_TOKENIZER_SPM;
    if (j->byte_level) lmoe_tok_bpe_byte_ids(t);
    else mark_byte_tokens(t);

    read_post_processor(t, json_object_get(root, "post_processor"), 0);
    int crc = 0;
    cfg = read_json(cfg_path, NULL, 0, &crc);
    if (cfg) read_config(t, cfg);
    lmoe_tok_guess_eot(t);
    json_decref(root);
    json_decref(cfg);
    *out = t;
    return 0;
fail:
    json_decref(root);
    lmoe_tokenizer_close(t);
    return rc;
}

const char *lmoe_tokenizer_chat_template(const struct lmoe_tokenizer *t) {
    return t && t->json ? t->json->chat_template : NULL;
}

/* ---- encode --------------------------------------------------------------- */

/* Pieces of text: spans of one buffer. first marks a piece that starts at
 * the very beginning of the input (Metaspace's prepend_scheme "first"). */
struct piece {
    size_t off, len;
    int first;
};

struct pieces {
    char *s;
    size_t n, cap;
    struct piece *p;
    size_t np, capp;
};

static int pieces_bytes(struct pieces *b, const char *s, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        char *q = realloc(b->s, cap);
        if (!q) return LMOE_ERR_NOMEM;
        b->s = q;
        b->cap = cap;
    }
    if (n) memcpy(b->s + b->n, s, n);
    b->n += n;
    return 0;
}

/* Appends a piece made of the bytes s[0..n) (which may be b's own old
 * storage: callers pass pointers into the other buffer). */
static int pieces_add(struct pieces *b, const char *s, size_t n, int first) {
    if (n == 0) return 0;
    if (b->np == b->capp) {
        size_t cap = b->capp ? b->capp * 2 : 64;
        struct piece *q = realloc(b->p, cap * sizeof(*q));
        if (!q) return LMOE_ERR_NOMEM;
        b->p = q;
        b->capp = cap;
    }
    size_t off = b->n;
    if (pieces_bytes(b, s, n)) return LMOE_ERR_NOMEM;
    b->p[b->np].off = off;
    b->p[b->np].len = n;
    b->p[b->np++].first = first;
    return 0;
}

/* Extends the last piece by n more bytes. */
static int pieces_extend(struct pieces *b, const char *s, size_t n) {
    if (pieces_bytes(b, s, n)) return LMOE_ERR_NOMEM;
    b->p[b->np - 1].len += n;
    return 0;
}

/* Runs re over s[0..n): the matches (non-empty) in *ms as start/end pairs. */
struct matches {
    size_t *v, n, cap;
};

static int find_matches(const pcre2_code *re, const char *s, size_t n, pcre2_match_data *md,
                        struct matches *m, char *err, size_t errlen) {
    m->n = 0;
    for (size_t pos = 0; pos < n;) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof(msg));
            return lmoe_errf(err, errlen, rc == PCRE2_ERROR_NOMEMORY ? LMOE_ERR_NOMEM : LMOE_ERR_ARG,
                             "tokenizer: pre-tokenizer regex failed: %s", (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[1] == ov[0]) { /* an empty match cuts nothing: step one character */
            pos = ov[0] + 1;
            while (pos < n && ((uint8_t)s[pos] & 0xc0) == 0x80) pos++;
            continue;
        }
        if (m->n + 2 > m->cap) {
            size_t cap = m->cap ? m->cap * 2 : 64;
            size_t *q = realloc(m->v, cap * sizeof(*q));
            if (!q) return LMOE_ERR_NOMEM;
            m->v = q;
            m->cap = cap;
        }
        m->v[m->n++] = ov[0];
        m->v[m->n++] = ov[1];
        pos = ov[1];
    }
    return 0;
}

/* Cuts piece s[0..n) at the matches m by behavior, as tokenizers'
 * NormalizedString::split: segments alternate between gaps and matches
 * (invert swaps the two), then are kept, dropped or joined. */
static int split_by(struct pieces *out, const char *s, size_t n, int first, const struct matches *m,
                    int behavior, int invert) {
    int prev_match = 0, any = 0;
    size_t at = 0;
    for (size_t k = 0; k <= m->n; k += 2) {
        /* Up to two segments per round: the gap before match k/2, then it. */
        for (int part = 0; part < 2; part++) {
            size_t a, e;
            int is_match;
            if (part == 0) {
                a = at;
                e = k < m->n ? m->v[k] : n;
                is_match = 0;
            } else {
                if (k >= m->n) break;
                a = m->v[k];
                e = m->v[k + 1];
                is_match = 1;
                at = e;
            }
            if (a == e) continue;
            if (invert) is_match = !is_match;
            int rc = 0, f = first && a == 0;
            switch (behavior) {
            case SPLIT_REMOVED:
                if (!is_match) rc = pieces_add(out, s + a, e - a, f);
                break;
            case SPLIT_ISOLATED: rc = pieces_add(out, s + a, e - a, f); break;
            case SPLIT_MERGED_PREV:
                if (is_match && !prev_match && any) rc = pieces_extend(out, s + a, e - a);
                else rc = pieces_add(out, s + a, e - a, f);
                break;
            case SPLIT_MERGED_NEXT:
                /* A match starts a new piece that the next gap joins. */
                if (!is_match && prev_match) rc = pieces_extend(out, s + a, e - a);
                else rc = pieces_add(out, s + a, e - a, f);
                break;
            case SPLIT_CONTIGUOUS:
                if (any && is_match == prev_match) rc = pieces_extend(out, s + a, e - a);
                else rc = pieces_add(out, s + a, e - a, f);
                break;
            }
            if (rc) return rc;
            prev_match = is_match;
            any = 1;
        }
    }
    return 0;
}

/* One normalizer over the whole string in *cur, result in *nxt. */
static int normalize(const struct norm *nm, struct pieces *cur, struct pieces *nxt,
                     pcre2_match_data *md, struct matches *m, char *err, size_t errlen) {
    const char *s = cur->s;
    size_t n = cur->n;
    int rc = 0;
    nxt->n = 0;
    switch (nm->kind) {
    case NORM_NFC: case NORM_NFD: case NORM_NFKC: case NORM_NFKD: {
        static const int flags[] = {UTF8PROC_COMPOSE, UTF8PROC_DECOMPOSE,
                                    UTF8PROC_COMPOSE | UTF8PROC_COMPAT, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT};
        if (n == 0) return 0;
        utf8proc_uint8_t *dst = NULL;
        utf8proc_ssize_t k = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                          (utf8proc_option_t)(UTF8PROC_STABLE | flags[nm->kind]));
        if (k < 0) {
            return lmoe_errf(err, errlen, k == UTF8PROC_ERROR_NOMEM ? LMOE_ERR_NOMEM : LMOE_ERR_ARG,
                             "tokenizer: normalizer: %s", utf8proc_errmsg(k));
        }
        rc = pieces_bytes(nxt, (const char *)dst, (size_t)k);
        free(dst);
        return rc;
    }
    case NORM_PREPEND:
        if (n && (rc = pieces_bytes(nxt, nm->text, nm->n_text))) return rc;
        return pieces_bytes(nxt, s, n);
    case NORM_REPLACE: {
        if ((rc = find_matches(nm->re, s, n, md, m, err, errlen))) return rc;
        size_t at = 0;
        for (size_t k = 0; k < m->n && rc == 0; k += 2) {
            rc = pieces_bytes(nxt, s + at, m->v[k] - at);
            if (rc == 0) rc = pieces_bytes(nxt, nm->text, nm->n_text);
            at = m->v[k + 1];
        }
        return rc ? rc : pieces_bytes(nxt, s + at, n - at);
    }
    case NORM_LOWER:
        for (size_t i = 0; i < n && rc == 0;) {
            utf8proc_int32_t cp;
            utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
            if (k <= 0) return lmoe_errf(err, errlen, LMOE_ERR_ARG, "tokenizer: invalid UTF-8");
            utf8proc_uint8_t u[4];
            utf8proc_ssize_t w = utf8proc_encode_char(utf8proc_tolower(cp), u);
            rc = pieces_bytes(nxt, (const char *)u, (size_t)w);
            i += (size_t)k;
        }
        return rc;
    case NORM_STRIP: {
        size_t a = 0, e = n;
        while (nm->left && a < e) {
            utf8proc_int32_t cp;
            utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + a, (utf8proc_ssize_t)(e - a), &cp);
            if (k <= 0 || !(utf8proc_category(cp) == UTF8PROC_CATEGORY_ZS || (cp >= 9 && cp <= 13) ||
                            cp == 0x85 || cp == 0x2028 || cp == 0x2029))
                break;
            a += (size_t)k;
        }
        while (nm->right && e > a) {
            size_t b = e - 1;
            while (b > a && ((uint8_t)s[b] & 0xc0) == 0x80) b--;
            utf8proc_int32_t cp;
            utf8proc_iterate((const utf8proc_uint8_t *)s + b, (utf8proc_ssize_t)(e - b), &cp);
            if (!(utf8proc_category(cp) == UTF8PROC_CATEGORY_ZS || (cp >= 9 && cp <= 13) || cp == 0x85 ||
                  cp == 0x2028 || cp == 0x2029))
                break;
            e = b;
        }
        return pieces_bytes(nxt, s + a, e - a);
    }
    }
    return 0;
}

/* Metaspace on one piece: spaces -> replacement, the prepend, the split. */
static int metaspace(const struct step *st, struct pieces *out, const char *s, size_t n, int first,
                     struct pieces *tmp) {
    tmp->n = 0;
    int rc = 0;
    int starts = n >= st->n_repl && memcmp(s, st->repl, st->n_repl) == 0;
    if (!starts && n && s[0] == ' ') starts = 1; /* it will be the replacement */
    if (!starts && (st->prepend == 2 || (st->prepend == 1 && first)))
        rc = pieces_bytes(tmp, st->repl, st->n_repl);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = s[i] == ' ' ? pieces_bytes(tmp, st->repl, st->n_repl) : pieces_bytes(tmp, s + i, 1);
    if (rc) return rc;
    if (!st->split) return pieces_add(out, tmp->s, tmp->n, first);
    /* MergedWithNext on each replacement character. */
    size_t start = 0;
    for (size_t i = 0; i + st->n_repl <= tmp->n; i++) {
        if (i > start && memcmp(tmp->s + i, st->repl, st->n_repl) == 0) {
            if ((rc = pieces_add(out, tmp->s + start, i - start, first && start == 0))) return rc;
            start = i;
        }
    }
    return pieces_add(out, tmp->s + start, tmp->n - start, first && start == 0);
}

/* The BPE model on one piece. */
static int model_piece(const struct lmoe_tokenizer *t, const char *s, size_t n, struct pieces *tmp,
                       struct lmoe_ids *out) {
    const struct lmoe_tok_json *j = t->json;
    struct lmoe_ids syms = {0};
    int rc = 0;
    if (j->byte_level) {
        if (tmp->cap < 2 * n) { /* room for the stand-ins */
            char *q = realloc(tmp->s, 2 * n);
            if (!q) return LMOE_ERR_NOMEM;
            tmp->s = q;
            tmp->cap = 2 * n;
        }
        size_t m = lmoe_tok_bpe_map(s, n, tmp->s);
        if (t->ignore_merges) {
            int32_t id = lmoe_tok_lookup(t, tmp->s, m);
            if (id >= 0) return lmoe_ids_push(out, id);
        }
        /* A byte with no token (a vocabulary missing one of the 256) is
         * dropped, as in the GGUF path. */
        for (size_t i = 0; i < n && rc == 0; i++)
            if (t->byte_id[(uint8_t)s[i]] >= 0) rc = lmoe_ids_push(&syms, t->byte_id[(uint8_t)s[i]]);
    } else {
        if (t->ignore_merges) {
            int32_t id = lmoe_tok_lookup(t, s, n);
            if (id >= 0) return lmoe_ids_push(out, id);
        }
        int prev_unk = 0;
        for (size_t i = 0; i < n && rc == 0;) {
            size_t k = 1;
            uint8_t c0 = (uint8_t)s[i];
            if (c0 >= 0xc0) k = c0 >= 0xf0 ? 4 : c0 >= 0xe0 ? 3 : 2;
            if (k > n - i) k = n - i;
            int32_t id = lmoe_tok_lookup(t, s + i, k);
            if (id >= 0) {
                rc = lmoe_ids_push(&syms, id);
                prev_unk = 0;
            } else {
                int all = j->byte_fallback;
                for (size_t b = 0; all && b < k; b++) all = t->byte_id[(uint8_t)s[i + b]] >= 0;
                if (all) {
                    for (size_t b = 0; b < k && rc == 0; b++) rc = lmoe_ids_push(&syms, t->byte_id[(uint8_t)s[i + b]]);
                    prev_unk = 0;
                } else if (t->unk >= 0 && !(j->fuse_unk && prev_unk)) {
                    rc = lmoe_ids_push(&syms, t->unk);
                    prev_unk = 1;
                }
            }
            i += k;
        }
    }
    if (rc == 0 && syms.n) rc = lmoe_tok_bpe_merge_ids(t, syms.v, (size_t)syms.n, out);
    free(syms.v);
    return rc;
}

int lmoe_tok_json_encode(const struct lmoe_tokenizer *t, const char *s, size_t n, int at_start,
                         struct lmoe_ids *out, char *err, size_t errlen) {
    const struct lmoe_tok_json *j = t->json;
    struct pieces a = {0}, b = {0}, tmp = {0};
    struct matches m = {0};
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    int rc = md ? pieces_bytes(&a, s, n) : LMOE_ERR_NOMEM;
    /* Normalizers rewrite the whole stretch. */
    for (int i = 0; i < j->n_norms && rc == 0; i++) {
        rc = normalize(&j->norms[i], &a, &b, md, &m, err, errlen);
        struct pieces x = a;
        a = b;
        b = x;
    }
    /* It becomes the one piece the pre-tokenizers start from. */
    if (rc == 0 && a.n) {
        b.n = b.np = 0;
        rc = pieces_add(&b, a.s, a.n, at_start);
        struct pieces x = a;
        a = b;
        b = x;
    } else {
        a.np = 0;
    }
    for (int i = 0; i < j->n_steps && rc == 0; i++) {
        const struct step *st = &j->steps[i];
        b.n = b.np = 0;
        for (size_t k = 0; k < a.np && rc == 0; k++) {
            const char *p = a.s + a.p[k].off;
            size_t len = a.p[k].len;
            int first = a.p[k].first;
            if (st->kind == STEP_SPLIT) {
                rc = find_matches(st->re, p, len, md, &m, err, errlen);
                if (rc == 0) rc = split_by(&b, p, len, first, &m, st->behavior, st->invert);
            } else if (st->kind == STEP_PREFIX_SPACE) {
                if (p[0] != ' ') {
                    rc = pieces_add(&b, " ", 1, first);
                    if (rc == 0) rc = pieces_extend(&b, p, len);
                } else {
                    rc = pieces_add(&b, p, len, first);
                }
            } else {
                rc = metaspace(st, &b, p, len, first, &tmp);
            }
        }
        struct pieces x = a;
        a = b;
        b = x;
    }
    for (size_t k = 0; k < a.np && rc == 0; k++) rc = model_piece(t, a.s + a.p[k].off, a.p[k].len, &tmp, out);
    if (rc == LMOE_ERR_NOMEM) lmoe_errf(err, errlen, rc, "tokenizer: out of memory");
    pcre2_match_data_free(md);
    free(a.s);
    free(a.p);
    free(b.s);
    free(b.p);
    free(tmp.s);
    free(tmp.p);
    free(m.v);
    return rc;
}
