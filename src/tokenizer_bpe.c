/*
 * tokenizer_bpe.c - byte-level BPE ("gpt2" in GGUF): pre-tokenizer regexes,
 * GPT-2's byte-to-character map, and the merge loop.
 *
 * The pre-tokenizer splits text into pieces that BPE never merges across.
 * Each name in tokenizer.ggml.pre stands for a sequence of regexes, as in HF
 * tokenizers' Sequence of Split(behavior "Isolated") pre-tokenizers: the
 * first regex cuts the text into matches and the gaps between them, the next
 * regex cuts each of those pieces again, and so on. A regex only sees its own
 * piece, so lookaheads and $ stop at the piece's end. The sequences are
 * those of llama.cpp's llama-vocab.cpp and of the models' tokenizer.json
 * files, run with PCRE2 (UTF + UCP) where llama.cpp uses its own engine.
 *
 * One deliberate rewrite: \s. HF runs these patterns with Oniguruma, whose
 * \s is the Unicode White_Space property; PCRE2's UCP \s also matches U+180E.
 * So every \s below is the explicit White_Space class WS.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "format/gguf.h"
#include "leanmoe.h"
#include "tokenizer_impl.h"

/* Unicode White_Space, as a character-class body. */
#define WS "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}" \
           "\\x{202F}\\x{205F}\\x{3000}"
#define S "[" WS "]"
#define NS "[^" WS "]"

/* GPT-2's ByteLevel regex (tokenizer.json of GPT-2 and many since). */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|" \
                S "+(?!" NS ")|" S "+"
/* Llama 3 (and Qwen2 with \p{N} single digits): contractions any case,
 * letters with one leading non-letter, digit groups, punctuation runs with
 * trailing newlines, newline runs, then other whitespace. */
#define RE_LLAMA3_HEAD "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
#define RE_LLAMA3_TAIL "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|" S "*[\\r\\n]+|" S "+(?!" NS ")|" S "+"

/* DeepSeek LLM's letter class: Latin, Greek, Cyrillic, Armenian, Georgian,
 * Cherokee and other cased scripts (from its tokenizer.json). */
#define DS_LETTERS \
    "A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}" \
    "\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}" \
    "\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}" \
    "\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}" \
    "\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}" \
    "\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}" \
    "\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}" \
    "\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}" \
    "\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}" \
    "\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}" \
    "\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}" \
    "\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}" \
    "\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}" \
    "\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}" \
    "\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}" \
    "\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}" \
    "\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}" \
    "\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}"
/* [一-龥ࠀ-一가-퟿] as DeepSeek writes it: CJK ideographs, everything from
 * U+0800 up to them, and Hangul syllables. */
#define DS_CJK "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+"

struct pre_def {
    const char *names; /* NUL-separated aliases, ending with an empty one */
    int ignore_merges; /* HF's BPE ignore_merges (Llama 3) */
    int add_bos;       /* llama.cpp's add_bos default for these */
    const char *re[LMOE_TOK_MAX_REGEX];
};

static const struct pre_def pre_defs[] = {
    {"default\0", 0, 0,
     {"[\\p{P}\\$\\+<=>\\^~\\|]+",
      "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|" S "+(?!" NS ")",
      "\\p{N}+", "[0-9][0-9][0-9]"}},
    {"gpt-2\0", 0, 0, {RE_GPT2}},
    {"llama3\0llama-v3\0llama-bpe\0", 1, 1, {RE_LLAMA3_HEAD "\\p{N}{1,3}" RE_LLAMA3_TAIL}},
    {"qwen2\0deepseek-r1-qwen\0", 0, 0, {RE_LLAMA3_HEAD "\\p{N}" RE_LLAMA3_TAIL}},
    {"deepseek-llm\0", 0, 0,
     {"[\\r\\n]", S "?[" DS_LETTERS "]+", S "?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+", S "+$", DS_CJK,
      "\\p{N}+"}},
    {"deepseek-coder\0", 0, 0, {"[\\r\\n]", S "?\\p{L}+", S "?\\p{P}+", DS_CJK, "\\p{N}"}},
    /* joyai-llm: a tokenizer that hashes like DeepSeek-V3's; llama.cpp gives
     * it the same regexes. */
    {"deepseek-v3\0joyai-llm\0", 0, 0,
     {"\\p{N}{1,3}", "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}"
      "\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|" S "*[\\r\\n]+|" S "+(?!" NS ")|" S "+"}},
};

static const struct pre_def *find_pre(const char *name) {
    for (size_t i = 0; i < sizeof(pre_defs) / sizeof(pre_defs[0]); i++)
        for (const char *a = pre_defs[i].names; *a; a += strlen(a) + 1)
            if (strcmp(a, name) == 0) return &pre_defs[i];
    return NULL;
}

/* ---- GPT-2 byte map ---------------------------------------------------- */

/* GPT-2 shows each byte as a printable character: bytes that are printable
 * Latin-1 (! to ~, ¡ to ¬, ® to ÿ) stand for themselves, and the other 68
 * (0x00-0x20, 0x7f-0xa0, 0xad) take U+0100.. in byte order. */
static uint32_t byte_to_cp(uint8_t b) {
    if (b <= 0x20) return 0x100 + b;
    if (b >= 0x7f && b <= 0xa0) return 0x100 + 33 + (b - 0x7f);
    if (b == 0xad) return 0x100 + 67;
    return b;
}

/* The inverse: the byte behind code point cp, or -1. */
static int cp_to_byte(uint32_t cp) {
    if (cp < 0x100) return byte_to_cp((uint8_t)cp) == cp ? (int)cp : -1;
    uint32_t k = cp - 0x100;
    if (k < 33) return (int)k;
    if (k < 67) return (int)(0x7f + k - 33);
    return k == 67 ? 0xad : -1;
}

/* UTF-8 of a code point below U+0800 (all the map needs). */
static size_t cp_utf8(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

size_t lmoe_tok_bpe_unmap(const char *piece, size_t n, char *buf, size_t buflen) {
    const uint8_t *p = (const uint8_t *)piece;
    size_t pos = 0;
    for (size_t i = 0; i < n;) {
        /* Stand-ins are all below U+0800: one or two bytes. */
        int b = -1;
        size_t k = 1;
        if (p[i] < 0x80) {
            b = cp_to_byte(p[i]);
        } else if ((p[i] & 0xe0) == 0xc0 && i + 1 < n) {
            b = cp_to_byte(((uint32_t)(p[i] & 0x1f) << 6) | (p[i + 1] & 0x3f));
            k = 2;
        }
        if (b >= 0) {
            if (pos < buflen) buf[pos] = (char)b;
            pos++;
        } else {
            /* Not a stand-in (a vocabulary with raw characters): copy the
             * whole character through unchanged. */
            if (p[i] >= 0xc0) k = p[i] >= 0xf0 ? 4 : p[i] >= 0xe0 ? 3 : 2;
            if (k > n - i) k = n - i;
            for (size_t j = 0; j < k; j++, pos++)
                if (pos < buflen) buf[pos] = (char)p[i + j];
        }
        i += k;
    }
    return pos;
}

/* ---- merges ------------------------------------------------------------ */

static uint32_t pair_hash(uint64_t key) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (uint32_t)key;
}

/* The merge of (a, b): its rank, and the merged token in *res. -1 if none. */
static int32_t merge_find(const struct lmoe_tokenizer *t, int32_t a, int32_t b, int32_t *res) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint32_t i = pair_hash(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        if (t->merge_key[i] == UINT64_MAX) return -1;
        if (t->merge_key[i] == key) {
            *res = t->merge_id[i];
            return t->merge_rank[i];
        }
    }
}

int lmoe_tok_bpe_merges_alloc(struct lmoe_tokenizer *t, size_t n_merges) {
    uint32_t cap = 16;
    while (cap < 2 * (uint64_t)n_merges) cap <<= 1;
    t->merge_key = malloc(cap * sizeof(*t->merge_key));
    t->merge_rank = malloc(cap * sizeof(*t->merge_rank));
    t->merge_id = malloc(cap * sizeof(*t->merge_id));
    if (!t->merge_key || !t->merge_rank || !t->merge_id) return LMOE_ERR_NOMEM;
    memset(t->merge_key, 0xff, cap * sizeof(*t->merge_key));
    t->merge_mask = cap - 1;
    return 0;
}

int lmoe_tok_bpe_merge_add(struct lmoe_tokenizer *t, const char *a, size_t na, const char *b,
                           size_t nb, int32_t rank) {
    int32_t ia = lmoe_tok_lookup(t, a, na), ib = lmoe_tok_lookup(t, b, nb);
    if (ia < 0 || ib < 0) return 0;
    char small[256], *joined = na + nb <= sizeof small ? small : malloc(na + nb);
    if (!joined) return LMOE_ERR_NOMEM;
    memcpy(joined, a, na);
    memcpy(joined + na, b, nb);
    int32_t res = lmoe_tok_lookup(t, joined, na + nb);
    if (joined != small) free(joined);
    if (res < 0) return 0;
    uint64_t key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
    uint32_t i = pair_hash(key) & t->merge_mask;
    while (t->merge_key[i] != UINT64_MAX && t->merge_key[i] != key) i = (i + 1) & t->merge_mask;
    if (t->merge_key[i] == key) return 0;
    t->merge_key[i] = key;
    t->merge_rank[i] = rank;
    t->merge_id[i] = res;
    return 0;
}

/* Reads tokenizer.ggml.merges: "left right" strings in rank order. Stored by
 * token ids, as HF's BPE model keeps them; a merge whose parts or result are
 * not tokens can never apply and is skipped, and a repeated pair keeps its
 * first (lowest) rank, as in llama.cpp. */
static int load_merges(struct lmoe_tokenizer *t, const struct gguf_file *f, char *err,
                       size_t errlen) {
    const struct gguf_kv *kv = gguf_find_kv(f, "tokenizer.ggml.merges");
    if (!kv) return lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "tokenizer: gpt2 model without tokenizer.ggml.merges");
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type != GGUF_TYPE_STRING)
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT,
                         "tokenizer: tokenizer.ggml.merges is not an array of strings");
    if (kv->arr_n > (uint64_t)INT32_MAX / 4)
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "tokenizer: %llu merges",
                         (unsigned long long)kv->arr_n);
    if (lmoe_tok_bpe_merges_alloc(t, (size_t)kv->arr_n)) goto oom;
    for (uint64_t r = 0; r < kv->arr_n; r++) {
        struct gguf_str s = gguf_arr_str(kv, r);
        /* The separator is the first space after the first byte, so a left
         * part may itself be a space. */
        const char *sp = s.len > 1 ? memchr(s.ptr + 1, ' ', s.len - 1) : NULL;
        if (!sp) continue;
        size_t na = (size_t)(sp - s.ptr);
        if (lmoe_tok_bpe_merge_add(t, s.ptr, na, sp + 1, s.len - na - 1, (int32_t)r)) goto oom;
    }
    return 0;
oom:
    return lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "tokenizer: out of memory for merges");
}

/* ---- open -------------------------------------------------------------- */

int lmoe_tok_bpe_init(struct lmoe_tokenizer *t, const struct gguf_file *f, char *err,
                      size_t errlen) {
    const struct gguf_kv *kv = gguf_find_kv(f, "tokenizer.ggml.pre");
    if (!kv) {
        strcpy(t->pre, "default"); /* llama.cpp warns and does the same */
    } else if (kv->type != GGUF_TYPE_STRING) {
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "tokenizer: tokenizer.ggml.pre is not a string");
    } else {
        size_t n = kv->v.str.len < sizeof(t->pre) - 1 ? kv->v.str.len : sizeof(t->pre) - 1;
        memcpy(t->pre, kv->v.str.ptr, n);
        t->pre[n] = 0;
    }
    const struct pre_def *def = find_pre(t->pre);
    if (!def || strlen(t->pre) != (kv ? kv->v.str.len : 7))
        return lmoe_errf(err, errlen, LMOE_ERR_UNSUPPORTED,
                         "tokenizer: pre-tokenizer '%s' is not supported (default, gpt-2, llama-bpe, "
                         "qwen2, deepseek-llm, deepseek-coder, deepseek-v3)",
                         t->pre);
    t->ignore_merges = def->ignore_merges;
    t->add_bos = def->add_bos;

    for (int i = 0; i < LMOE_TOK_MAX_REGEX && def->re[i]; i++) {
        int code;
        PCRE2_SIZE at;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)def->re[i], PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP, &code, &at, NULL);
        if (!re) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(code, msg, sizeof(msg));
            return lmoe_errf(err, errlen, LMOE_ERR_UNSUPPORTED,
                             "tokenizer: pre-tokenizer '%s' regex %d: %s at %zu", t->pre, i,
                             (const char *)msg, (size_t)at);
        }
        /* JIT makes matching several times faster; without it (no JIT in
         * this PCRE2 build) the interpreter gives the same results. */
        (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
        t->re[t->n_re++] = re;
    }

    lmoe_tok_bpe_byte_ids(t);
    return load_merges(t, f, err, errlen);
}

void lmoe_tok_bpe_byte_ids(struct lmoe_tokenizer *t) {
    for (int b = 0; b < 256; b++) {
        char u[2];
        size_t n = cp_utf8(byte_to_cp((uint8_t)b), u);
        t->byte_id[b] = lmoe_tok_lookup(t, u, n);
    }
}

size_t lmoe_tok_bpe_map(const char *s, size_t n, char *out) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += cp_utf8(byte_to_cp((uint8_t)s[i]), out + m);
    return m;
}

void lmoe_tok_bpe_free(struct lmoe_tokenizer *t) {
    for (int i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
    free(t->merge_key);
    free(t->merge_rank);
    free(t->merge_id);
}

/* ---- encode ------------------------------------------------------------ */

struct span {
    uint32_t off, len;
};

struct sym {
    int32_t id;
    int32_t prev, next; /* -1 at the ends */
    int32_t dead;       /* merged into its left neighbour */
};

struct cand {
    int32_t rank, left; /* the pair (left, next of left) */
    int32_t a, b, res;  /* the ids it joins, to spot a stale entry */
};

/* Scratch for one encode call; the handle itself stays read-only. */
struct bpe_work {
    struct span *spans, *next;
    size_t n_spans, n_next, cap_spans, cap_next;
    struct sym *syms;
    struct cand *heap;
    size_t cap_syms, cap_heap, n_heap;
    char *mapped;
    size_t cap_mapped;
    pcre2_match_data *md;
};

static int grow(void **p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * size);
    if (!q) return LMOE_ERR_NOMEM;
    *p = q;
    *cap = c;
    return 0;
}

static int push_span(struct bpe_work *w, uint32_t off, uint32_t len) {
    if (grow((void **)&w->next, &w->cap_next, w->n_next + 1, sizeof(struct span)))
        return LMOE_ERR_NOMEM;
    w->next[w->n_next].off = off;
    w->next[w->n_next++].len = len;
    return 0;
}

/* Cuts every span by regex re into matches and the gaps between them. */
static int split(struct bpe_work *w, const pcre2_code *re, const char *text, char *err,
                 size_t errlen) {
    w->n_next = 0;
    for (size_t k = 0; k < w->n_spans; k++) {
        const char *s = text + w->spans[k].off;
        size_t n = w->spans[k].len, pos = 0, last = 0;
        while (pos < n) {
            int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, w->md, NULL);
            if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* deep backtracking: the interpreter */
                rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                                 w->md, NULL);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                PCRE2_UCHAR msg[160];
                pcre2_get_error_message(rc, msg, sizeof(msg));
                return lmoe_errf(err, errlen, rc == PCRE2_ERROR_NOMEMORY ? LMOE_ERR_NOMEM : LMOE_ERR_ARG,
                                 "tokenizer: pre-tokenizer regex failed: %s", (const char *)msg);
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
            size_t ms = ov[0], me = ov[1];
            if (me == ms) { /* an empty match cuts nothing: step one character */
                pos = ms + 1;
                while (pos < n && ((uint8_t)s[pos] & 0xc0) == 0x80) pos++;
                continue;
            }
            uint32_t base = w->spans[k].off;
            if (ms > last && push_span(w, base + (uint32_t)last, (uint32_t)(ms - last)))
                return LMOE_ERR_NOMEM;
            if (push_span(w, base + (uint32_t)ms, (uint32_t)(me - ms))) return LMOE_ERR_NOMEM;
            last = pos = me;
        }
        if (last < n && push_span(w, w->spans[k].off + (uint32_t)last, (uint32_t)(n - last)))
            return LMOE_ERR_NOMEM;
    }
    struct span *tmp = w->spans; /* the new spans become the current ones */
    w->spans = w->next;
    w->next = tmp;
    size_t c = w->cap_spans;
    w->cap_spans = w->cap_next;
    w->cap_next = c;
    w->n_spans = w->n_next;
    return 0;
}

/* Binary min-heap on (rank, left): the lowest rank merges first, and of two
 * equal pairs the leftmost, as HF and llama.cpp do. */
static int cand_less(const struct cand *x, const struct cand *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->left < y->left);
}

static void heap_push(struct bpe_work *w, struct cand c) {
    size_t i = w->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = c;
}

static struct cand heap_pop(struct bpe_work *w) {
    struct cand top = w->heap[0], last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_less(&w->heap[c + 1], &w->heap[c])) c++;
        if (!cand_less(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

static void try_pair(const struct lmoe_tokenizer *t, struct bpe_work *w, int32_t l) {
    if (l < 0) return;
    int32_t r = w->syms[l].next;
    if (r < 0 || w->syms[l].id < 0 || w->syms[r].id < 0) return;
    struct cand c = {0, l, w->syms[l].id, w->syms[r].id, -1};
    c.rank = merge_find(t, c.a, c.b, &c.res);
    if (c.rank >= 0) heap_push(w, c);
}

/* The merge loop on w->syms[0..n), whose ids are set: the lowest-ranked
 * adjacent pair is merged until no pair has a merge. The heap keeps this
 * O(n log n) per piece: every merge adds at most two candidates, and stale
 * ones are recognised on the way out by their ids. */
static int bpe_merge(const struct lmoe_tokenizer *t, struct bpe_work *w, size_t n,
                     struct lmoe_ids *out) {
    for (size_t i = 0; i < n; i++) {
        w->syms[i].prev = (int32_t)i - 1;
        w->syms[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
        w->syms[i].dead = 0;
    }
    w->n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++) try_pair(t, w, (int32_t)i);
    while (w->n_heap) {
        struct cand c = heap_pop(w);
        struct sym *l = &w->syms[c.left];
        if (l->dead || l->next < 0 || l->id != c.a || w->syms[l->next].id != c.b) continue;
        struct sym *r = &w->syms[l->next];
        l->id = c.res;
        r->dead = 1;
        l->next = r->next;
        if (r->next >= 0) w->syms[r->next].prev = c.left;
        try_pair(t, w, l->prev);
        try_pair(t, w, c.left);
    }
    /* Symbol 0 never dies (merges absorb to the left), so walk from it. A
     * byte with no token (a vocabulary missing one of the 256) is dropped,
     * as llama.cpp does. */
    for (int32_t i = 0; n && i >= 0; i = w->syms[i].next)
        if (w->syms[i].id >= 0 && lmoe_ids_push(out, w->syms[i].id)) return LMOE_ERR_NOMEM;
    return 0;
}

static int bpe_grow_syms(struct bpe_work *w, size_t n) {
    if (grow((void **)&w->syms, &w->cap_syms, n, sizeof(struct sym)) ||
        grow((void **)&w->heap, &w->cap_heap, 3 * n, sizeof(struct cand)))
        return LMOE_ERR_NOMEM;
    return 0;
}

/* BPE on one piece of n bytes, each byte starting as its own symbol. */
static int bpe_piece(const struct lmoe_tokenizer *t, struct bpe_work *w, const uint8_t *s,
                     size_t n, struct lmoe_ids *out) {
    if (n == 1) return t->byte_id[s[0]] >= 0 ? lmoe_ids_push(out, t->byte_id[s[0]]) : 0;
    if (t->ignore_merges) { /* a piece that is a token is taken whole */
        if (grow((void **)&w->mapped, &w->cap_mapped, 2 * n, 1)) return LMOE_ERR_NOMEM;
        size_t m = lmoe_tok_bpe_map((const char *)s, n, w->mapped);
        int32_t id = lmoe_tok_lookup(t, w->mapped, m);
        if (id >= 0) return lmoe_ids_push(out, id);
    }
    if (bpe_grow_syms(w, n)) return LMOE_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) w->syms[i].id = t->byte_id[s[i]];
    return bpe_merge(t, w, n, out);
}

int lmoe_tok_bpe_merge_ids(const struct lmoe_tokenizer *t, const int32_t *ids, size_t n,
                           struct lmoe_ids *out) {
    struct bpe_work w = {0};
    int rc = bpe_grow_syms(&w, n ? n : 1);
    for (size_t i = 0; rc == 0 && i < n; i++) w.syms[i].id = ids[i];
    if (rc == 0) rc = bpe_merge(t, &w, n, out);
    free(w.syms);
    free(w.heap);
    return rc;
}

int lmoe_tok_bpe_encode(const struct lmoe_tokenizer *t, const char *s, size_t n,
                        struct lmoe_ids *out, char *err, size_t errlen) {
    struct bpe_work w = {0};
    int rc = LMOE_ERR_NOMEM;
    w.md = pcre2_match_data_create(1, NULL);
    if (!w.md || grow((void **)&w.spans, &w.cap_spans, 1, sizeof(struct span))) goto done;
    w.spans[0].off = 0;
    w.spans[0].len = (uint32_t)n;
    w.n_spans = 1;
    rc = 0;
    for (int i = 0; i < t->n_re && rc == 0; i++) rc = split(&w, t->re[i], s, err, errlen);
    for (size_t k = 0; k < w.n_spans && rc == 0; k++)
        rc = bpe_piece(t, &w, (const uint8_t *)s + w.spans[k].off, w.spans[k].len, out);
done:
    if (rc == LMOE_ERR_NOMEM) lmoe_errf(err, errlen, rc, "tokenizer: out of memory");
    pcre2_match_data_free(w.md);
    free(w.spans);
    free(w.next);
    free(w.syms);
    free(w.heap);
    free(w.mapped);
    return rc;
}
