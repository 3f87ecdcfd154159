/*
 * jinja_parse.c - Jinja2 template text to a syntax tree (jinja.h).
 *
 * The lexer follows jinja2's lexer.py rule for rule, with the settings
 * transformers uses (trim_blocks, lstrip_blocks): newlines are normalised to
 * "\n" and one trailing newline is dropped; "{%-" strips all whitespace
 * before a tag and "-%}" all after it; lstrip_blocks removes the spaces that
 * start a line before "{%" or "{#"; trim_blocks eats the newline after "%}"
 * or "#}"; "+" turns either off. The parser follows parser.py's precedence:
 * condexpr, or, and, not, comparisons, + -, ~, * / // %, **, unary, then
 * postfix (.attr, [item], call) and filters and tests, which bind tighter
 * than any binary operator ("messages|length - 1").
 *
 * Errors longjmp back to lmoe_jinja_parse with one line naming the line of
 * the template; the tree lives in the template's arena, freed as a whole.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "jinja_impl.h"
#include "leanmoe.h"

/* Bounds the parser's own recursion ("((((..." or "not not not ..."). */
#define JPARSE_MAX_DEPTH 200

/* ---- Arena ------------------------------------------------------------- */

struct jarena_chunk {
    struct jarena_chunk *next;
    size_t size, used;
    max_align_t data[];
};

#define JARENA_CHUNK ((size_t)64 << 10)

void *jarena_alloc(struct jarena *a, size_t n) {
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (n == 0) n = sizeof(max_align_t);
    struct jarena_chunk *c = a->head;
    if (!c || c->size - c->used < n) {
        size_t size = n > JARENA_CHUNK / 4 ? n : JARENA_CHUNK;
        if (n > SIZE_MAX / 2 || (a->limit && a->used + size + sizeof *c > a->limit)) return NULL;
        c = malloc(sizeof *c + size);
        if (!c) return NULL;
        c->size = size;
        c->used = 0;
        a->used += size + sizeof *c;
        if (size == n && a->head) { /* a big block: keep filling the current chunk */
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

void jarena_free(struct jarena *a) {
    for (struct jarena_chunk *c = a->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    a->head = NULL;
    a->used = 0;
}

/* ---- Strings ----------------------------------------------------------- */

int jstr_eq(struct jstr a, const char *s) {
    size_t k = strlen(s);
    return a.n == k && memcmp(a.p, s, k) == 0;
}

int jinja_is_space(uint32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
           c == 0x3000;
}

uint32_t jinja_utf8_next(const char *s, size_t n, size_t *i) {
    const unsigned char *u = (const unsigned char *)s;
    size_t k = *i;
    uint32_t c = u[k];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len <= 1 || k + (size_t)len > n) {
        *i = k + 1;
        return c;
    }
    uint32_t cp = c & (0x7f >> len);
    for (int j = 1; j < len; j++) {
        if ((u[k + j] & 0xc0) != 0x80) {
            *i = k + 1;
            return c;
        }
        cp = cp << 6 | (u[k + j] & 0x3f);
    }
    *i = k + (size_t)len;
    return cp;
}

/* Length of s[0..n) without trailing Python whitespace (str.rstrip()). */
static size_t rstrip_len(const char *s, size_t n) {
    while (n > 0) {
        size_t st = n - 1;
        while (st > 0 && n - st < 4 && ((unsigned char)s[st] & 0xc0) == 0x80) st--;
        size_t i = st;
        uint32_t c = jinja_utf8_next(s, n, &i);
        if (i != n) { st = n - 1; c = (unsigned char)s[st]; } /* not one whole character */
        if (!jinja_is_space(c)) break;
        n = st;
    }
    return n;
}

/* Bytes of Python whitespace at s[i..n). */
static size_t space_run(const char *s, size_t n, size_t i) {
    size_t at = i;
    while (at < n) {
        size_t k = at;
        if (!jinja_is_space(jinja_utf8_next(s, n, &k))) break;
        at = k;
    }
    return at - i;
}

/* ---- Lexer ------------------------------------------------------------- */

enum { TK_EOF, TK_DATA, TK_VAR_BEGIN, TK_VAR_END, TK_BLOCK_BEGIN, TK_BLOCK_END, TK_NAME, TK_STRING,
       TK_INT, TK_FLOAT, TK_OP };
/* Two-character operators; one-character ones are their own character. */
enum { OP_FLOORDIV = 128, OP_POW, OP_EQ, OP_NE, OP_GE, OP_LE };

struct tok {
    uint8_t t, op;
    int line;
    struct jstr s; /* text (TK_DATA, TK_NAME, decoded TK_STRING) */
    int64_t i;
    double f;
};

struct jparser {
    struct lmoe_jinja *t;
    struct tok *toks;
    size_t n, cap, pos;
    int depth, loops;
    char *err;
    size_t errlen;
    int code;
    jmp_buf jmp;
};

__attribute__((format(printf, 3, 4))) static _Noreturn void perr(struct jparser *p, int line,
                                                                 const char *fmt, ...) {
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lmoe_errf(p->err, p->errlen, LMOE_ERR_FORMAT, "jinja: line %d: %s", line, msg);
    p->code = LMOE_ERR_FORMAT;
    longjmp(p->jmp, 1);
}

static _Noreturn void pnomem(struct jparser *p) {
    lmoe_errf(p->err, p->errlen, LMOE_ERR_NOMEM, "jinja: out of memory");
    p->code = LMOE_ERR_NOMEM;
    longjmp(p->jmp, 1);
}

static void *palloc(struct jparser *p, size_t n) {
    void *q = jarena_alloc(&p->t->arena, n);
    if (!q) pnomem(p);
    return q;
}

static struct tok *push_tok(struct jparser *p, int type, int line) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        struct tok *t = realloc(p->toks, cap * sizeof *t);
        if (!t) pnomem(p);
        p->toks = t;
        p->cap = cap;
    }
    struct tok *t = &p->toks[p->n++];
    memset(t, 0, sizeof *t);
    t->t = (uint8_t)type;
    t->line = line;
    return t;
}

static int count_nl(const char *s, size_t n) {
    int k = 0;
    for (size_t i = 0; i < n; i++) k += s[i] == '\n';
    return k;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static size_t put_utf8(char *o, uint32_t c) {
    if (c < 0x80) { o[0] = (char)c; return 1; }
    if (c < 0x800) { o[0] = (char)(0xc0 | c >> 6); o[1] = (char)(0x80 | (c & 0x3f)); return 2; }
    if (c < 0x10000) {
        o[0] = (char)(0xe0 | c >> 12); o[1] = (char)(0x80 | ((c >> 6) & 0x3f)); o[2] = (char)(0x80 | (c & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | c >> 18); o[1] = (char)(0x80 | ((c >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3f)); o[3] = (char)(0x80 | (c & 0x3f));
    return 4;
}

/* Decodes a string literal's body as Python's unicode-escape does. */
static struct jstr unescape(struct jparser *p, const char *s, size_t n, int line) {
    char *o = palloc(p, n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 >= n) { o[k++] = s[i]; continue; }
        char c = s[++i];
        switch (c) {
        case '\n': break; /* line continuation */
        case '\\': o[k++] = '\\'; break;
        case '\'': o[k++] = '\''; break;
        case '"': o[k++] = '"'; break;
        case 'a': o[k++] = '\a'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'n': o[k++] = '\n'; break;
        case 'r': o[k++] = '\r'; break;
        case 't': o[k++] = '\t'; break;
        case 'v': o[k++] = '\v'; break;
        case 'x': case 'u': case 'U': {
            int want = c == 'x' ? 2 : c == 'u' ? 4 : 8;
            uint32_t v = 0;
            for (int j = 0; j < want; j++) {
                int h = i + 1 + (size_t)j < n ? hexval((unsigned char)s[i + 1 + j]) : -1;
                if (h < 0) perr(p, line, "truncated \\%c escape in a string", c);
                v = v << 4 | (uint32_t)h;
            }
            if (v > 0x10ffff || (v >= 0xd800 && v < 0xe000))
                perr(p, line, "string escape \\%c names no character", c);
            i += (size_t)want;
            k += put_utf8(o + k, v); /* at most want + 2 bytes: fits */
            break;
        }
        case 'N': perr(p, line, "\\N{...} escapes are not supported");
        default:
            if (c >= '0' && c <= '7') {
                uint32_t v = (uint32_t)(c - '0');
                for (int j = 0; j < 2 && i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '7'; j++)
                    v = v * 8 + (uint32_t)(s[++i] - '0');
                k += put_utf8(o + k, v); /* v < 512: at most 2 bytes for up to 4 input bytes */
            } else {
                o[k++] = '\\';
                o[k++] = c;
            }
        }
    }
    return (struct jstr){o, k};
}

/* Number literals, as lexer.py's float_re and integer_re. Returns the
 * length matched (0: none). */
static size_t digits_us(const char *s, size_t n, size_t i) { /* (\d+_)*\d+ */
    size_t at = i;
    if (at >= n || s[at] < '0' || s[at] > '9') return 0;
    for (;;) {
        while (at < n && s[at] >= '0' && s[at] <= '9') at++;
        if (at + 1 < n && s[at] == '_' && s[at + 1] >= '0' && s[at + 1] <= '9') { at++; continue; }
        return at - i;
    }
}

static size_t match_float(const char *s, size_t n, size_t i) {
    if (i > 0 && s[i - 1] == '.') return 0;
    size_t a = digits_us(s, n, i);
    if (!a) return 0;
    size_t at = i + a, frac = 0;
    if (at < n && s[at] == '.') frac = digits_us(s, n, at + 1);
    size_t e = at + (frac ? frac + 1 : 0);
    if (e < n && (s[e] == 'e' || s[e] == 'E')) {
        size_t x = e + 1;
        if (x < n && (s[x] == '+' || s[x] == '-')) x++;
        size_t d = digits_us(s, n, x);
        if (d) return x + d - i;
    }
    return frac ? at + 1 + frac - i : 0;
}

static size_t match_int(const char *s, size_t n, size_t i, int *base) {
    *base = 10;
    if (s[i] == '0' && i + 1 < n && strchr("bBoOxX", s[i + 1]) && s[i + 1]) {
        int b = (s[i + 1] | 32) == 'b' ? 2 : (s[i + 1] | 32) == 'o' ? 8 : 16;
        size_t at = i + 2;
        for (;;) {
            size_t x = at < n && s[at] == '_' ? at + 1 : at;
            int h = x < n ? hexval((unsigned char)s[x]) : -1;
            if (h < 0 || h >= b) break;
            at = x + 1;
        }
        if (at > i + 2) { *base = b; return at - i; }
    }
    if (s[i] == '0') {
        size_t at = i + 1;
        for (;;) {
            size_t x = at < n && s[at] == '_' ? at + 1 : at;
            if (x < n && s[x] == '0') at = x + 1; else break;
        }
        return at - i;
    }
    if (s[i] >= '1' && s[i] <= '9') {
        size_t at = i + 1;
        for (;;) {
            size_t x = at < n && s[at] == '_' ? at + 1 : at;
            if (x < n && s[x] >= '0' && s[x] <= '9') at = x + 1; else break;
        }
        return at - i;
    }
    return 0;
}

/* Lexes one tag's inside, from *pos up to and including its end ("%}" or
 * "}}" with their whitespace control), pushing tokens. Returns whether the
 * end swallowed a newline (lexer.py's line_starting). */
static int lex_tag(struct jparser *p, const char *s, size_t n, size_t *pos, int *line, int block) {
    char stack[JPARSE_MAX_DEPTH];
    int depth = 0;
    size_t i = *pos;
    for (;;) {
        if (i >= n) perr(p, *line, "unexpected end of template inside a %s", block ? "block tag" : "{{ }}");
        char c = s[i];
        /* The end of the tag, only when brackets balance. */
        if (depth == 0) {
            char close = block ? '%' : '}';
            size_t e = 0;
            int strip = 0, plus = 0;
            if (c == '-' && i + 2 < n && s[i + 1] == close && s[i + 2] == '}') e = 3, strip = 1;
            else if (block && c == '+' && i + 2 < n && s[i + 1] == '%' && s[i + 2] == '}') e = 3, plus = 1;
            else if (c == close && i + 1 < n && s[i + 1] == '}') e = 2;
            if (e) {
                push_tok(p, block ? TK_BLOCK_END : TK_VAR_END, *line);
                i += e;
                int nl = 0;
                if (strip) {
                    size_t w = space_run(s, n, i);
                    *line += count_nl(s + i, w);
                    nl = w > 0 && s[i + w - 1] == '\n';
                    i += w;
                } else if (block && !plus && i < n && s[i] == '\n') { /* trim_blocks */
                    i++;
                    (*line)++;
                    nl = 1;
                }
                *pos = i;
                return nl;
            }
        }
        size_t w = space_run(s, n, i);
        if (w) {
            *line += count_nl(s + i, w);
            i += w;
            continue;
        }
        size_t k;
        int base;
        if ((k = match_float(s, n, i))) {
            char buf[64];
            size_t m = 0;
            for (size_t j = i; j < i + k && m + 1 < sizeof buf; j++)
                if (s[j] != '_') buf[m++] = s[j];
            buf[m] = 0;
            push_tok(p, TK_FLOAT, *line)->f = strtod(buf, NULL);
            i += k;
        } else if ((k = match_int(s, n, i, &base))) {
            uint64_t v = 0;
            size_t j = i + (base != 10 ? 2 : 0);
            for (; j < i + k; j++) {
                if (s[j] == '_') continue;
                uint64_t d = (uint64_t)hexval((unsigned char)s[j]);
                if (v > (UINT64_MAX - d) / (uint64_t)base || v * (uint64_t)base + d > (uint64_t)INT64_MAX)
                    perr(p, *line, "integer literal too large");
                v = v * (uint64_t)base + d;
            }
            push_tok(p, TK_INT, *line)->i = (int64_t)v;
            i += k;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
            size_t j = i;
            while (j < n && ((s[j] >= 'a' && s[j] <= 'z') || (s[j] >= 'A' && s[j] <= 'Z') || s[j] == '_' ||
                             (s[j] >= '0' && s[j] <= '9')))
                j++;
            push_tok(p, TK_NAME, *line)->s = (struct jstr){s + i, j - i};
            i = j;
        } else if (c == '\'' || c == '"') {
            size_t j = i + 1;
            while (j < n && s[j] != c) j += s[j] == '\\' ? 2 : 1;
            if (j >= n) perr(p, *line, "unterminated string");
            struct tok *t = push_tok(p, TK_STRING, *line);
            t->s = unescape(p, s + i + 1, j - i - 1, *line);
            *line += count_nl(s + i, j - i);
            i = j + 1;
        } else {
            static const struct { const char *text; int op; } two[] = {
                {"//", OP_FLOORDIV}, {"**", OP_POW}, {"==", OP_EQ}, {"!=", OP_NE}, {">=", OP_GE}, {"<=", OP_LE}};
            int op = 0;
            for (size_t m = 0; m < sizeof two / sizeof two[0] && !op; m++)
                if (i + 1 < n && s[i] == two[m].text[0] && s[i + 1] == two[m].text[1]) op = two[m].op;
            if (op) {
                i += 2;
            } else if (c && strchr("+-/*%~[](){}><=.:|,;", c)) {
                op = c;
                i++;
                if (c == '(' || c == '[' || c == '{') {
                    if (depth == (int)sizeof stack) perr(p, *line, "brackets nested too deeply");
                    stack[depth++] = c == '(' ? ')' : c == '[' ? ']' : '}';
                } else if (c == ')' || c == ']' || c == '}') {
                    if (depth == 0) perr(p, *line, "unexpected '%c'", c);
                    if (stack[--depth] != c) perr(p, *line, "unexpected '%c', expected '%c'", c, stack[depth]);
                }
            } else {
                perr(p, *line, "unexpected character '%c'", c >= 32 && c < 127 ? c : '?');
            }
            push_tok(p, TK_OP, *line)->op = (uint8_t)op;
        }
    }
}

/* Applies the whitespace rules for text before a tag opened with sign
 * ('-', '+' or 0); returns the length of text kept. */
static size_t before_tag(const char *text, size_t n, int sign, int is_var, int line_starting) {
    if (sign == '-') return rstrip_len(text, n);
    if (sign == '+' || is_var) return n;
    size_t l = n;
    while (l > 0 && text[l - 1] != '\n') l--;
    if (l == 0 && !line_starting) return n;
    if (l < n && space_run(text, n, l) == n - l) return l;
    return n;
}

/* Matches "{%[-+]?\s*NAME\s*(-%}\s*|+%}|%}\n?)" at s[i]; returns the length
 * (0: no match), its sign, and whether its end strips or keeps a newline. */
static size_t match_named_tag(const char *s, size_t n, size_t i, const char *name, int *sign, int allow_plus_end,
                              int trim) {
    if (i + 2 > n || s[i] != '{' || s[i + 1] != '%') return 0;
    size_t at = i + 2;
    *sign = at < n && (s[at] == '-' || s[at] == '+') ? s[at++] : 0;
    at += space_run(s, n, at);
    size_t k = strlen(name);
    if (at + k > n || memcmp(s + at, name, k)) return 0;
    at += k;
    at += space_run(s, n, at);
    if (at + 3 <= n && s[at] == '-' && s[at + 1] == '%' && s[at + 2] == '}') {
        at += 3;
        return at + space_run(s, n, at) - i;
    }
    if (allow_plus_end && at + 3 <= n && s[at] == '+' && s[at + 1] == '%' && s[at + 2] == '}') return at + 3 - i;
    if (at + 2 <= n && s[at] == '%' && s[at + 1] == '}') {
        at += 2;
        if (trim && at < n && s[at] == '\n') at++;
        return at - i;
    }
    return 0;
}

static void push_data(struct jparser *p, const char *s, size_t n, int line) {
    if (n) push_tok(p, TK_DATA, line)->s = (struct jstr){s, n};
}

static void lex(struct jparser *p, const char *s, size_t n) {
    size_t i = 0;
    int line = 1, line_starting = 1;
    while (i < n) {
        /* The next tag opener. */
        size_t j = i;
        while (j + 1 < n && !(s[j] == '{' && (s[j + 1] == '{' || s[j + 1] == '%' || s[j + 1] == '#'))) j++;
        if (j + 1 >= n) {
            push_data(p, s + i, n - i, line);
            return;
        }
        char kind = s[j + 1];
        int sign = j + 2 < n && (s[j + 2] == '-' || s[j + 2] == '+') ? s[j + 2] : 0;
        int rsign;
        size_t raw = kind == '%' ? match_named_tag(s, n, j, "raw", &rsign, 0, 0) : 0;
        size_t keep = before_tag(s + i, j - i, sign, kind == '{', line_starting);
        push_data(p, s + i, keep, line);
        line += count_nl(s + i, j - i);
        if (raw) {
            line += count_nl(s + j, raw);
            int nl = s[j + raw - 1] == '\n';
            size_t b = j + raw, e = b, len = 0;
            int esign = 0;
            while (e < n && !(len = match_named_tag(s, n, e, "endraw", &esign, 1, 1))) e++;
            if (e >= n) perr(p, line, "missing end of raw directive");
            push_data(p, s + b, before_tag(s + b, e - b, esign, 0, nl), line);
            line += count_nl(s + b, e + len - b);
            line_starting = s[e + len - 1] == '\n';
            i = e + len;
            continue;
        }
        i = j + 2 + (sign ? 1 : 0);
        if (kind == '#') {
            size_t e = i;
            for (;; e++) {
                if (e + 1 >= n) perr(p, line, "missing end of comment tag");
                if ((s[e] == '-' || s[e] == '+') && e + 2 < n && s[e + 1] == '#' && s[e + 2] == '}') break;
                if (s[e] == '#' && s[e + 1] == '}') break;
            }
            size_t after = e + (s[e] == '#' ? 2 : 3);
            if (s[e] == '-') after += space_run(s, n, after);
            else if (s[e] == '#' && after < n && s[after] == '\n') after++;
            line += count_nl(s + i, after - i);
            line_starting = s[after - 1] == '\n';
            i = after;
            continue;
        }
        push_tok(p, kind == '%' ? TK_BLOCK_BEGIN : TK_VAR_BEGIN, line);
        line_starting = lex_tag(p, s, n, &i, &line, kind == '%');
    }
}

/* ---- Parser ------------------------------------------------------------ */

static struct tok *cur(struct jparser *p) { return &p->toks[p->pos]; }
static struct tok *peek(struct jparser *p, int k) {
    return p->pos + (size_t)k < p->n ? &p->toks[p->pos + (size_t)k] : &p->toks[p->n - 1];
}
static void next(struct jparser *p) {
    if (p->pos + 1 < p->n) p->pos++;
}
static int is_op(struct jparser *p, int op) { return cur(p)->t == TK_OP && cur(p)->op == op; }
static int is_name(struct jparser *p, const char *name) {
    return cur(p)->t == TK_NAME && jstr_eq(cur(p)->s, name);
}
static int skip_op(struct jparser *p, int op) {
    if (!is_op(p, op)) return 0;
    next(p);
    return 1;
}
static int skip_name(struct jparser *p, const char *name) {
    if (!is_name(p, name)) return 0;
    next(p);
    return 1;
}

static const char *tok_desc(const struct tok *t, char *buf, size_t n) {
    switch (t->t) {
    case TK_EOF: return "end of template";
    case TK_DATA: return "template text";
    case TK_VAR_BEGIN: return "'{{'";
    case TK_VAR_END: return "'}}'";
    case TK_BLOCK_BEGIN: return "'{%'";
    case TK_BLOCK_END: return "'%}'";
    case TK_NAME: snprintf(buf, n, "'%.*s'", (int)(t->s.n > 40 ? 40 : t->s.n), t->s.p); return buf;
    case TK_STRING: return "a string";
    case TK_INT: case TK_FLOAT: return "a number";
    }
    if (t->op >= 128) {
        static const char *two[] = {"//", "**", "==", "!=", ">=", "<="};
        snprintf(buf, n, "'%s'", two[t->op - 128]);
    } else {
        snprintf(buf, n, "'%c'", t->op);
    }
    return buf;
}

static _Noreturn void unexpected(struct jparser *p, const char *want) {
    char buf[64];
    perr(p, cur(p)->line, "expected %s, got %s", want, tok_desc(cur(p), buf, sizeof buf));
}

static void expect_op(struct jparser *p, int op, const char *desc) {
    if (!skip_op(p, op)) unexpected(p, desc);
}
static void expect_type(struct jparser *p, int type, const char *desc) {
    if (cur(p)->t != type) unexpected(p, desc);
    next(p);
}

static struct jnode *mk(struct jparser *p, int kind, int line, int n) {
    struct jnode *x = palloc(p, sizeof *x);
    x->kind = (uint8_t)kind;
    x->line = line;
    x->n = n;
    if (n) x->kids = palloc(p, sizeof(struct jnode *) * (size_t)n);
    return x;
}

/* Growing kid lists, kept in the arena (doubling wastes at most half). */
struct kidvec {
    struct jnode **v;
    struct jstr *kw;
    int n, cap;
};
static void kv_push(struct jparser *p, struct kidvec *k, struct jnode *x, struct jstr kw) {
    if (k->n == k->cap) {
        int cap = k->cap ? k->cap * 2 : 4;
        if (cap > 1 << 24) perr(p, x ? x->line : 0, "too many items");
        struct jnode **v = palloc(p, sizeof *v * (size_t)cap);
        struct jstr *w = palloc(p, sizeof *w * (size_t)cap);
        if (k->n) {
            memcpy(v, k->v, sizeof *v * (size_t)k->n);
            memcpy(w, k->kw, sizeof *w * (size_t)k->n);
        }
        k->v = v;
        k->kw = w;
        k->cap = cap;
    }
    k->kw[k->n] = kw;
    k->v[k->n++] = x;
}
static void kv_attach(struct jnode *x, struct kidvec *k, int with_kw) {
    x->n = k->n;
    x->kids = k->v;
    if (with_kw) x->kw = k->kw;
}

static void enter(struct jparser *p) {
    if (++p->depth > JPARSE_MAX_DEPTH) perr(p, cur(p)->line, "expression nested too deeply");
}

static struct jnode *parse_expr(struct jparser *p, int with_cond);
static struct jnode *parse_tuple(struct jparser *p, int with_cond, int simplified, const char *end_name);
static struct jnode *parse_unary(struct jparser *p, int with_filter);
static struct jnode *parse_primary(struct jparser *p);

static struct jnode *lit(struct jparser *p, int line, struct jv v) {
    struct jnode *x = mk(p, JN_LIT, line, 0);
    x->lit = v;
    return x;
}

/* (args): positional, then name=value; *args and **kwargs are refused. */
static void parse_call_args(struct jparser *p, struct kidvec *k) {
    expect_op(p, '(', "'('");
    int kw_seen = 0;
    while (!is_op(p, ')')) {
        if (is_op(p, '*') || is_op(p, OP_POW)) perr(p, cur(p)->line, "*args and **kwargs are not supported");
        struct jstr kw = {NULL, 0};
        if (cur(p)->t == TK_NAME && peek(p, 1)->t == TK_OP && peek(p, 1)->op == '=') {
            kw = cur(p)->s;
            next(p);
            next(p);
            kw_seen = 1;
        } else if (kw_seen) {
            perr(p, cur(p)->line, "positional argument after a keyword argument");
        }
        kv_push(p, k, parse_expr(p, 1), kw);
        if (!skip_op(p, ',')) break;
    }
    expect_op(p, ')', "')'");
}

static struct jnode *parse_filter(struct jparser *p, struct jnode *subject) {
    int line = cur(p)->line;
    if (cur(p)->t != TK_NAME) unexpected(p, "a filter name");
    struct jstr name = cur(p)->s;
    next(p);
    if (!jinja_has_filter(name)) perr(p, line, "unknown filter '%.*s'", (int)(name.n > 40 ? 40 : name.n), name.p);
    struct kidvec k = {0};
    kv_push(p, &k, subject, (struct jstr){NULL, 0});
    if (is_op(p, '(')) parse_call_args(p, &k);
    struct jnode *x = mk(p, JN_FILTER, line, 0);
    kv_attach(x, &k, 1);
    x->name = name;
    return x;
}

static struct jnode *parse_test(struct jparser *p, struct jnode *subject) {
    int line = cur(p)->line;
    next(p); /* is */
    int neg = skip_name(p, "not");
    if (cur(p)->t != TK_NAME) unexpected(p, "a test name");
    struct jstr name = cur(p)->s;
    next(p);
    if (!jinja_has_test(name)) perr(p, line, "unknown test '%.*s'", (int)(name.n > 40 ? 40 : name.n), name.p);
    struct kidvec k = {0};
    kv_push(p, &k, subject, (struct jstr){NULL, 0});
    struct tok *t = cur(p);
    if (is_op(p, '(')) {
        parse_call_args(p, &k);
    } else if ((t->t == TK_NAME || t->t == TK_STRING || t->t == TK_INT || t->t == TK_FLOAT ||
                (t->t == TK_OP && (t->op == '(' || t->op == '[' || t->op == '{'))) &&
               !is_name(p, "else") && !is_name(p, "or") && !is_name(p, "and")) {
        if (is_name(p, "is")) perr(p, t->line, "tests cannot be chained with 'is'");
        enter(p);
        struct jnode *arg = parse_primary(p);
        /* postfix on the argument */
        for (;;) {
            int l = cur(p)->line;
            if (skip_op(p, '.')) {
                if (cur(p)->t == TK_NAME) {
                    struct jnode *a = mk(p, JN_ATTR, l, 1);
                    a->kids[0] = arg;
                    a->name = cur(p)->s;
                    next(p);
                    arg = a;
                } else if (cur(p)->t == TK_INT) {
                    struct jnode *a = mk(p, JN_ITEM, l, 2);
                    a->kids[0] = arg;
                    a->kids[1] = lit(p, l, jv_int(cur(p)->i));
                    next(p);
                    arg = a;
                } else {
                    unexpected(p, "an attribute name");
                }
            } else {
                break;
            }
        }
        p->depth--;
        kv_push(p, &k, arg, (struct jstr){NULL, 0});
    }
    struct jnode *x = mk(p, JN_TEST, line, 0);
    kv_attach(x, &k, 1);
    x->name = name;
    x->op = (uint8_t)neg;
    return x;
}

/* [a], [a:b], [a:b:c] after the subject. */
static struct jnode *parse_subscript(struct jparser *p, struct jnode *subject) {
    int line = cur(p)->line;
    next(p); /* [ */
    struct jnode *parts[3] = {NULL, NULL, NULL};
    int slice = 0;
    if (!is_op(p, ':')) parts[0] = parse_expr(p, 1);
    if (skip_op(p, ':')) {
        slice = 1;
        if (!is_op(p, ']') && !is_op(p, ':')) parts[1] = parse_expr(p, 1);
        if (skip_op(p, ':') && !is_op(p, ']')) parts[2] = parse_expr(p, 1);
    } else if (is_op(p, ',')) {
        perr(p, line, "tuple subscripts are not supported");
    }
    expect_op(p, ']', "']'");
    if (!slice) {
        struct jnode *x = mk(p, JN_ITEM, line, 2);
        x->kids[0] = subject;
        x->kids[1] = parts[0];
        return x;
    }
    struct jnode *x = mk(p, JN_SLICE, line, 4);
    x->kids[0] = subject;
    for (int i = 0; i < 3; i++) x->kids[i + 1] = parts[i];
    return x;
}

static struct jnode *parse_postfix(struct jparser *p, struct jnode *x) {
    for (;;) {
        int line = cur(p)->line;
        if (is_op(p, '.')) {
            next(p);
            if (cur(p)->t == TK_NAME) {
                struct jnode *a = mk(p, JN_ATTR, line, 1);
                a->kids[0] = x;
                a->name = cur(p)->s;
                next(p);
                x = a;
            } else if (cur(p)->t == TK_INT) {
                struct jnode *a = mk(p, JN_ITEM, line, 2);
                a->kids[0] = x;
                a->kids[1] = lit(p, line, jv_int(cur(p)->i));
                next(p);
                x = a;
            } else {
                unexpected(p, "an attribute name");
            }
        } else if (is_op(p, '[')) {
            x = parse_subscript(p, x);
        } else if (is_op(p, '(')) {
            struct kidvec k = {0};
            kv_push(p, &k, x, (struct jstr){NULL, 0});
            parse_call_args(p, &k);
            struct jnode *c = mk(p, JN_CALL, line, 0);
            kv_attach(c, &k, 1);
            x = c;
        } else {
            return x;
        }
    }
}

static struct jnode *parse_filter_expr(struct jparser *p, struct jnode *x) {
    for (;;) {
        if (skip_op(p, '|')) {
            x = parse_filter(p, x);
        } else if (is_name(p, "is")) {
            x = parse_test(p, x);
        } else if (is_op(p, '(')) {
            int line = cur(p)->line;
            struct kidvec k = {0};
            kv_push(p, &k, x, (struct jstr){NULL, 0});
            parse_call_args(p, &k);
            x = mk(p, JN_CALL, line, 0);
            kv_attach(x, &k, 1);
        } else {
            return x;
        }
    }
}

static struct jnode *parse_primary(struct jparser *p) {
    struct tok *t = cur(p);
    int line = t->line;
    if (t->t == TK_NAME) {
        struct jstr s = t->s;
        next(p);
        if (jstr_eq(s, "true") || jstr_eq(s, "True")) return lit(p, line, jv_bool(1));
        if (jstr_eq(s, "false") || jstr_eq(s, "False")) return lit(p, line, jv_bool(0));
        if (jstr_eq(s, "none") || jstr_eq(s, "None")) return lit(p, line, jv_none());
        struct jnode *x = mk(p, JN_NAME, line, 0);
        x->name = s;
        return x;
    }
    if (t->t == TK_STRING) {
        struct jstr s = t->s;
        next(p);
        if (cur(p)->t == TK_STRING) { /* adjacent literals concatenate */
            size_t total = s.n;
            size_t k = p->pos;
            while (k < p->n && p->toks[k].t == TK_STRING) total += p->toks[k++].s.n;
            char *buf = palloc(p, total + 1);
            memcpy(buf, s.p, s.n);
            size_t at = s.n;
            while (cur(p)->t == TK_STRING) {
                memcpy(buf + at, cur(p)->s.p, cur(p)->s.n);
                at += cur(p)->s.n;
                next(p);
            }
            s = (struct jstr){buf, total};
        }
        return lit(p, line, jv_str(s.p, s.n));
    }
    if (t->t == TK_INT) {
        next(p);
        return lit(p, line, jv_int(t->i));
    }
    if (t->t == TK_FLOAT) {
        next(p);
        return lit(p, line, jv_float(t->f));
    }
    if (is_op(p, '(')) {
        next(p);
        enter(p);
        struct jnode *x = parse_tuple(p, 1, 0, NULL);
        p->depth--;
        expect_op(p, ')', "')'");
        return x;
    }
    if (is_op(p, '[')) {
        next(p);
        enter(p);
        struct kidvec k = {0};
        while (!is_op(p, ']')) {
            kv_push(p, &k, parse_expr(p, 1), (struct jstr){NULL, 0});
            if (!skip_op(p, ',')) break;
        }
        expect_op(p, ']', "']'");
        p->depth--;
        struct jnode *x = mk(p, JN_LIST, line, 0);
        kv_attach(x, &k, 0);
        return x;
    }
    if (is_op(p, '{')) {
        next(p);
        enter(p);
        struct kidvec k = {0};
        while (!is_op(p, '}')) {
            kv_push(p, &k, parse_expr(p, 1), (struct jstr){NULL, 0});
            expect_op(p, ':', "':'");
            kv_push(p, &k, parse_expr(p, 1), (struct jstr){NULL, 0});
            if (!skip_op(p, ',')) break;
        }
        expect_op(p, '}', "'}'");
        p->depth--;
        struct jnode *x = mk(p, JN_DICT, line, 0);
        kv_attach(x, &k, 0);
        return x;
    }
    unexpected(p, "an expression");
}

static struct jnode *parse_unary(struct jparser *p, int with_filter) {
    int line = cur(p)->line;
    struct jnode *x;
    if (is_op(p, '-') || is_op(p, '+')) {
        int neg = cur(p)->op == '-';
        next(p);
        enter(p);
        struct jnode *a = parse_unary(p, 0);
        p->depth--;
        x = mk(p, neg ? JN_NEG : JN_POS, line, 1);
        x->kids[0] = a;
    } else {
        x = parse_primary(p);
    }
    x = parse_postfix(p, x);
    if (with_filter) x = parse_filter_expr(p, x);
    return x;
}

static struct jnode *bin(struct jparser *p, int kind, int op, struct jnode *a, struct jnode *b) {
    struct jnode *x = mk(p, kind, a->line, 2);
    x->op = (uint8_t)op;
    x->kids[0] = a;
    x->kids[1] = b;
    return x;
}

static struct jnode *parse_pow(struct jparser *p) {
    struct jnode *x = parse_unary(p, 1);
    while (skip_op(p, OP_POW)) x = bin(p, JN_BIN, JOP_POW, x, parse_unary(p, 1));
    return x;
}

static struct jnode *parse_math2(struct jparser *p) {
    struct jnode *x = parse_pow(p);
    for (;;) {
        int op = is_op(p, '*') ? JOP_MUL : is_op(p, '/') ? JOP_DIV : is_op(p, OP_FLOORDIV) ? JOP_FLOORDIV
               : is_op(p, '%') ? JOP_MOD : 0;
        if (!op) return x;
        next(p);
        x = bin(p, JN_BIN, op, x, parse_pow(p));
    }
}

static struct jnode *parse_concat(struct jparser *p) {
    struct jnode *x = parse_math2(p);
    while (skip_op(p, '~')) x = bin(p, JN_BIN, JOP_CONCAT, x, parse_math2(p));
    return x;
}

static struct jnode *parse_math1(struct jparser *p) {
    struct jnode *x = parse_concat(p);
    for (;;) {
        int op = is_op(p, '+') ? JOP_ADD : is_op(p, '-') ? JOP_SUB : 0;
        if (!op) return x;
        next(p);
        x = bin(p, JN_BIN, op, x, parse_concat(p));
    }
}

static struct jnode *parse_compare(struct jparser *p) {
    struct jnode *first = parse_math1(p);
    struct kidvec k = {0};
    uint8_t ops[64];
    int n_ops = 0;
    for (;;) {
        int op = is_op(p, OP_EQ) ? JOP_EQ : is_op(p, OP_NE) ? JOP_NE : is_op(p, '<') ? JOP_LT
               : is_op(p, OP_LE) ? JOP_LE : is_op(p, '>') ? JOP_GT : is_op(p, OP_GE) ? JOP_GE : 0;
        if (op) {
            next(p);
        } else if (is_name(p, "in")) {
            next(p);
            op = JOP_IN;
        } else if (is_name(p, "not") && peek(p, 1)->t == TK_NAME && jstr_eq(peek(p, 1)->s, "in")) {
            next(p);
            next(p);
            op = JOP_NOTIN;
        } else {
            break;
        }
        if (n_ops == (int)sizeof ops) perr(p, cur(p)->line, "too many chained comparisons");
        if (k.n == 0) kv_push(p, &k, first, (struct jstr){NULL, 0});
        ops[n_ops++] = (uint8_t)op;
        kv_push(p, &k, parse_math1(p), (struct jstr){NULL, 0});
    }
    if (!n_ops) return first;
    struct jnode *x = mk(p, JN_CMP, first->line, 0);
    kv_attach(x, &k, 0);
    x->ops = palloc(p, (size_t)n_ops);
    memcpy(x->ops, ops, (size_t)n_ops);
    return x;
}

static struct jnode *parse_not(struct jparser *p) {
    if (is_name(p, "not")) {
        int line = cur(p)->line;
        next(p);
        enter(p);
        struct jnode *a = parse_not(p);
        p->depth--;
        struct jnode *x = mk(p, JN_NOT, line, 1);
        x->kids[0] = a;
        return x;
    }
    return parse_compare(p);
}

static struct jnode *parse_and(struct jparser *p) {
    struct jnode *x = parse_not(p);
    while (skip_name(p, "and")) x = bin(p, JN_AND, 0, x, parse_not(p));
    return x;
}

static struct jnode *parse_or(struct jparser *p) {
    struct jnode *x = parse_and(p);
    while (skip_name(p, "or")) x = bin(p, JN_OR, 0, x, parse_and(p));
    return x;
}

static struct jnode *parse_expr(struct jparser *p, int with_cond) {
    enter(p);
    struct jnode *x = parse_or(p);
    while (with_cond && is_name(p, "if")) {
        next(p);
        struct jnode *c = mk(p, JN_COND, x->line, 3);
        c->kids[0] = x;
        c->kids[1] = parse_or(p);
        if (skip_name(p, "else")) c->kids[2] = parse_expr(p, 1);
        x = c;
    }
    p->depth--;
    return x;
}

static int tuple_end(struct jparser *p, const char *end_name) {
    struct tok *t = cur(p);
    return t->t == TK_VAR_END || t->t == TK_BLOCK_END || (t->t == TK_OP && t->op == ')') ||
           (end_name && is_name(p, end_name));
}

/* Comma-separated expressions: one alone is itself, more (or a trailing
 * comma) a tuple. simplified: primaries only (assignment targets). */
static struct jnode *parse_tuple(struct jparser *p, int with_cond, int simplified, const char *end_name) {
    int line = cur(p)->line;
    struct kidvec k = {0};
    int is_tuple = 0;
    for (;;) {
        if (k.n) expect_op(p, ',', "','");
        if (tuple_end(p, end_name)) break;
        kv_push(p, &k, simplified ? parse_primary(p) : parse_expr(p, with_cond), (struct jstr){NULL, 0});
        if (is_op(p, ',')) is_tuple = 1;
        else break;
    }
    if (!is_tuple) {
        if (k.n) return k.v[0];
        if (!(cur(p)->t == TK_OP && cur(p)->op == ')')) unexpected(p, "an expression");
    }
    struct jnode *x = mk(p, JN_TUPLE, line, 0);
    kv_attach(x, &k, 0);
    return x;
}

/* ---- Statements -------------------------------------------------------- */

static struct jnode *parse_body(struct jparser *p, const char *const *ends, int *which);

static void end_block(struct jparser *p) { expect_type(p, TK_BLOCK_END, "'%}'"); }

static void check_target(struct jparser *p, struct jnode *t) {
    if (t->kind == JN_NAME) {
        if (jstr_eq(t->name, "loop") || jstr_eq(t->name, "true") || jstr_eq(t->name, "false") ||
            jstr_eq(t->name, "none"))
            perr(p, t->line, "cannot assign to '%.*s'", (int)t->name.n, t->name.p);
        return;
    }
    if (t->kind == JN_TUPLE) {
        for (int i = 0; i < t->n; i++)
            if (t->kids[i]->kind != JN_NAME) perr(p, t->line, "can only assign to names");
        for (int i = 0; i < t->n; i++) check_target(p, t->kids[i]);
        return;
    }
    perr(p, t->line, "cannot assign to this expression");
}

static struct jnode *parse_if(struct jparser *p, int line) {
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    struct jnode *x = mk(p, JN_IF, line, 3);
    x->kids[0] = parse_tuple(p, 0, 0, NULL);
    end_block(p);
    int which;
    x->kids[1] = parse_body(p, ends, &which);
    int l = cur(p)->line;
    next(p);
    if (which == 0) {
        enter(p);
        x->kids[2] = parse_if(p, l);
        p->depth--;
    } else if (which == 1) {
        static const char *const endif[] = {"endif", NULL};
        end_block(p);
        x->kids[2] = parse_body(p, endif, &which);
        next(p);
        end_block(p);
    } else {
        end_block(p);
    }
    return x;
}

static struct jnode *parse_for(struct jparser *p, int line) {
    struct jnode *x = mk(p, JN_FOR, line, 5);
    x->kids[0] = parse_tuple(p, 1, 1, "in");
    check_target(p, x->kids[0]);
    if (!skip_name(p, "in")) unexpected(p, "'in'");
    x->kids[1] = parse_tuple(p, 0, 0, "recursive");
    if (skip_name(p, "if")) x->kids[2] = parse_expr(p, 1);
    if (is_name(p, "recursive")) perr(p, line, "recursive loops are not supported");
    end_block(p);
    static const char *const ends[] = {"endfor", "else", NULL};
    int which;
    p->loops++;
    x->kids[3] = parse_body(p, ends, &which);
    p->loops--;
    next(p);
    end_block(p);
    if (which == 1) {
        static const char *const endfor[] = {"endfor", NULL};
        x->kids[4] = parse_body(p, endfor, &which);
        next(p);
        end_block(p);
    }
    return x;
}

static struct jnode *parse_set(struct jparser *p, int line) {
    struct jnode *target;
    if (cur(p)->t == TK_NAME && peek(p, 1)->t == TK_OP && peek(p, 1)->op == '.') {
        target = mk(p, JN_ATTR, line, 1);
        target->kids[0] = mk(p, JN_NAME, line, 0);
        target->kids[0]->name = cur(p)->s;
        next(p);
        next(p);
        if (cur(p)->t != TK_NAME) unexpected(p, "an attribute name");
        target->name = cur(p)->s;
        next(p);
    } else {
        target = parse_tuple(p, 1, 1, NULL);
        check_target(p, target);
    }
    if (skip_op(p, '=')) {
        struct jnode *x = mk(p, JN_SET, line, 2);
        x->kids[0] = target;
        x->kids[1] = parse_tuple(p, 1, 0, NULL);
        end_block(p);
        return x;
    }
    if (is_op(p, '|')) perr(p, line, "filters on set blocks are not supported");
    end_block(p);
    static const char *const ends[] = {"endset", NULL};
    int which;
    struct jnode *x = mk(p, JN_SETBLOCK, line, 2);
    x->kids[0] = target;
    x->kids[1] = parse_body(p, ends, &which);
    next(p);
    end_block(p);
    return x;
}

static struct jnode *parse_macro(struct jparser *p, int line) {
    if (cur(p)->t != TK_NAME) unexpected(p, "a macro name");
    struct jnode *x = mk(p, JN_MACRO, line, 0);
    x->name = cur(p)->s;
    next(p);
    struct kidvec k = {0};
    kv_push(p, &k, NULL, (struct jstr){NULL, 0}); /* the body, below */
    expect_op(p, '(', "'('");
    int defaults = 0;
    while (!is_op(p, ')')) {
        if (cur(p)->t != TK_NAME) unexpected(p, "a parameter name");
        struct jnode *param = mk(p, JN_NAME, cur(p)->line, 0);
        param->name = cur(p)->s;
        check_target(p, param);
        next(p);
        struct jnode *def = NULL;
        if (skip_op(p, '=')) {
            def = parse_expr(p, 1);
            defaults = 1;
        } else if (defaults) {
            perr(p, param->line, "parameter without a default after one with a default");
        }
        kv_push(p, &k, param, (struct jstr){NULL, 0});
        kv_push(p, &k, def, (struct jstr){NULL, 0});
        if (!skip_op(p, ',')) break;
    }
    expect_op(p, ')', "')'");
    end_block(p);
    static const char *const ends[] = {"endmacro", NULL};
    int which, loops = p->loops;
    p->loops = 0;
    k.v[0] = parse_body(p, ends, &which);
    p->loops = loops;
    next(p);
    if (cur(p)->t == TK_NAME) next(p); /* {% endmacro name %} */
    end_block(p);
    kv_attach(x, &k, 0);
    return x;
}

/* One statement after "{%". */
static struct jnode *parse_statement(struct jparser *p) {
    int line = cur(p)->line;
    if (cur(p)->t != TK_NAME) unexpected(p, "a tag name");
    struct jstr name = cur(p)->s;
    next(p);
    enter(p);
    struct jnode *x;
    if (jstr_eq(name, "if")) {
        x = parse_if(p, line);
    } else if (jstr_eq(name, "for")) {
        x = parse_for(p, line);
    } else if (jstr_eq(name, "set")) {
        x = parse_set(p, line);
    } else if (jstr_eq(name, "macro")) {
        x = parse_macro(p, line);
    } else if (jstr_eq(name, "break") || jstr_eq(name, "continue")) {
        if (!p->loops) perr(p, line, "'%.*s' outside of a loop", (int)name.n, name.p);
        x = mk(p, jstr_eq(name, "break") ? JN_BREAK : JN_CONTINUE, line, 0);
        end_block(p);
    } else if (jstr_eq(name, "generation")) { /* transformers' tag: renders its body */
        end_block(p);
        static const char *const ends[] = {"endgeneration", NULL};
        int which;
        x = parse_body(p, ends, &which);
        next(p);
        end_block(p);
    } else {
        perr(p, line, "unknown or unsupported tag '%.*s'", (int)(name.n > 40 ? 40 : name.n), name.p);
    }
    p->depth--;
    return x;
}

/* Statements up to one of ends (NULL-terminated list, or NULL at top
 * level). Stops with cur() on the end tag's name; *which is its index. */
static struct jnode *parse_body(struct jparser *p, const char *const *ends, int *which) {
    struct kidvec k = {0};
    int line = cur(p)->line;
    for (;;) {
        struct tok *t = cur(p);
        if (t->t == TK_EOF) {
            if (!ends) break;
            perr(p, t->line, "unexpected end of template, expected '%s'", ends[0]);
        }
        if (t->t == TK_DATA) {
            struct jnode *x = mk(p, JN_TEXT, t->line, 0);
            x->name = t->s;
            kv_push(p, &k, x, (struct jstr){NULL, 0});
            next(p);
        } else if (t->t == TK_VAR_BEGIN) {
            next(p);
            struct jnode *x = mk(p, JN_OUTPUT, t->line, 1);
            x->kids[0] = parse_tuple(p, 1, 0, NULL);
            expect_type(p, TK_VAR_END, "'}}'");
            kv_push(p, &k, x, (struct jstr){NULL, 0});
        } else if (t->t == TK_BLOCK_BEGIN) {
            next(p);
            if (ends && cur(p)->t == TK_NAME)
                for (int i = 0; ends[i]; i++)
                    if (jstr_eq(cur(p)->s, ends[i])) {
                        *which = i;
                        goto done;
                    }
            if (cur(p)->t == TK_NAME && cur(p)->s.n > 3 && !memcmp(cur(p)->s.p, "end", 3))
                perr(p, cur(p)->line, "unexpected '%.*s'", (int)(cur(p)->s.n > 40 ? 40 : cur(p)->s.n),
                     cur(p)->s.p);
            if (cur(p)->t == TK_NAME && (jstr_eq(cur(p)->s, "else") || jstr_eq(cur(p)->s, "elif")))
                perr(p, cur(p)->line, "unexpected '%.*s'", (int)cur(p)->s.n, cur(p)->s.p);
            kv_push(p, &k, parse_statement(p), (struct jstr){NULL, 0});
        } else {
            unexpected(p, "template text or a tag");
        }
    }
done:;
    struct jnode *body = mk(p, JN_BODY, line, 0);
    kv_attach(body, &k, 0);
    return body;
}

/* ---- Entry points ------------------------------------------------------ */

int lmoe_jinja_parse(struct lmoe_jinja **out, const char *src, size_t len, char *err, size_t errlen) {
    *out = NULL;
    struct lmoe_jinja *t = calloc(1, sizeof *t);
    char *s = t ? malloc(len + 1) : NULL;
    if (!s) {
        free(t);
        return lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "jinja: out of memory");
    }
    /* Newlines to "\n", and one trailing newline dropped (lexer.py). */
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            s[n++] = src[i];
        }
    }
    if (n && s[n - 1] == '\n') n--;
    s[n] = 0;
    t->src = s;
    struct jparser *p = calloc(1, sizeof *p);
    if (!p) {
        free(s);
        free(t);
        return lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "jinja: out of memory");
    }
    p->t = t;
    p->err = err;
    p->errlen = errlen;
    if (setjmp(p->jmp)) {
        int code = p->code;
        free(p->toks);
        free(p);
        lmoe_jinja_free(t);
        return code;
    }
    lex(p, s, n);
    push_tok(p, TK_EOF, 0)->line = p->n > 1 ? p->toks[p->n - 2].line : 1;
    t->root = parse_body(p, NULL, NULL);
    free(p->toks);
    free(p);
    *out = t;
    return 0;
}

void lmoe_jinja_free(struct lmoe_jinja *t) {
    if (!t) return;
    jarena_free(&t->arena);
    free(t->src);
    free(t);
}
