/*
 * jinja_lib.c - the Jinja library a chat template can call: filters, tests,
 * globals (range, namespace, dict, raise_exception, strftime_now) and the
 * methods of strings, lists, dicts and the loop variable.
 *
 * Each behaves as its jinja2 or Python counterpart, as far as templates can
 * tell, except that map, select, reject, unique and items return lists
 * where jinja2 returns generators (the same once iterated or piped to
 * list, but a generator prints as its repr and is always true); tojson is transformers' override (json.dumps with ensure_ascii off
 * and no HTML escaping). Strings count, index and case-map in code points
 * (utf8proc's simple case mapping).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "jinja_impl.h"

/* jinja2's sandbox refuses longer ranges. */
#define JINJA_MAX_RANGE 100000

static int is_num_t(struct jv v) { return v.t == JV_BOOL || v.t == JV_INT || v.t == JV_FLOAT; }

static struct jv arg(const struct jargs *a, int pos, const char *name, struct jv def) {
    struct jv *v = jargs_get(a, pos, name);
    return v ? *v : def;
}

static struct jstr str_of(struct jrender *r, struct jv v) { return jv_to_str(r, v); }

static struct jstr need_str(struct jrender *r, struct jv v, const char *what) {
    if (v.t != JV_STR) jinja_fail(r, "%s expects a string, got '%s'", what, jv_type_name(v));
    return v.u.s;
}

static int64_t need_int(struct jrender *r, struct jv v, const char *what) {
    if (v.t != JV_INT && v.t != JV_BOOL) jinja_fail(r, "%s expects an integer, got '%s'", what, jv_type_name(v));
    return v.u.i;
}

/* ---- Code points ------------------------------------------------------- */

static void put_cp(struct jrender *r, struct jbuf *b, uint32_t c) {
    uint8_t tmp[4];
    utf8proc_ssize_t k = utf8proc_encode_char((utf8proc_int32_t)c, tmp);
    if (k <= 0) {
        tmp[0] = (uint8_t)c; /* a stray byte decoded as itself */
        k = 1;
    }
    jbuf_put(r, b, (const char *)tmp, (size_t)k);
}

static uint32_t lower_cp(uint32_t c) { return c < 0x110000 ? (uint32_t)utf8proc_tolower((utf8proc_int32_t)c) : c; }
static uint32_t upper_cp(uint32_t c) { return c < 0x110000 ? (uint32_t)utf8proc_toupper((utf8proc_int32_t)c) : c; }
static int cat(uint32_t c) { return c < 0x110000 ? (int)utf8proc_category((utf8proc_int32_t)c) : 0; }
static int is_alpha(uint32_t c) {
    int k = cat(c);
    return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}
static int is_cased(uint32_t c) {
    int k = cat(c);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT;
}
static int is_digit(uint32_t c) { return cat(c) == UTF8PROC_CATEGORY_ND; }
static int is_numeric(uint32_t c) {
    int k = cat(c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

/* mode: 'l' lower, 'u' upper, 'c' capitalize, 't' Python's str.title(). */
static struct jv case_map(struct jrender *r, struct jstr s, int mode) {
    struct jbuf b = {0};
    int first = 1, prev_cased = 0;
    for (size_t i = 0; i < s.n;) {
        uint32_t c = jinja_utf8_next(s.p, s.n, &i);
        uint32_t o = c;
        if (mode == 'l') o = lower_cp(c);
        else if (mode == 'u') o = upper_cp(c);
        else if (mode == 'c') o = first ? upper_cp(c) : lower_cp(c);
        else if (mode == 't') o = prev_cased ? lower_cp(c) : upper_cp(c);
        prev_cased = is_cased(c);
        first = 0;
        /* The full mappings Python applies where the simple one differs. */
        static const struct { uint32_t c; const char *up; } full[] = {
            {0xdf, "SS"}, {0xfb00, "FF"}, {0xfb01, "FI"}, {0xfb02, "FL"}, {0xfb03, "FFI"}, {0xfb04, "FFL"},
            {0xfb05, "ST"}, {0xfb06, "ST"}};
        int done = 0;
        for (size_t k = 0; mode == 'u' && k < sizeof full / sizeof full[0] && !done; k++)
            if (c == full[k].c) {
                jbuf_puts(r, &b, full[k].up);
                done = 1;
            }
        if (mode == 'l' && c == 0x130) { /* İ -> i + combining dot above */
            jbuf_puts(r, &b, "i\xcc\x87");
            done = 1;
        }
        if (!done) put_cp(r, &b, o);
    }
    return jv_str(b.p ? b.p : "", b.n);
}

static int all_cps(struct jstr s, int (*pred)(uint32_t)) {
    if (!s.n) return 0;
    for (size_t i = 0; i < s.n;)
        if (!pred(jinja_utf8_next(s.p, s.n, &i))) return 0;
    return 1;
}
static int is_alnum(uint32_t c) { return is_alpha(c) || is_numeric(c); }
static int is_space_cp(uint32_t c) { return jinja_is_space(c); }

/* Python's islower (want_upper 0) / isupper (1). */
static int case_test(struct jstr s, int want_upper) {
    int cased = 0;
    for (size_t i = 0; i < s.n;) {
        uint32_t c = jinja_utf8_next(s.p, s.n, &i);
        int k = cat(c);
        if (k == UTF8PROC_CATEGORY_LT) return 0;
        if (k == UTF8PROC_CATEGORY_LU) {
            if (!want_upper) return 0;
            cased = 1;
        } else if (k == UTF8PROC_CATEGORY_LL) {
            if (want_upper) return 0;
            cased = 1;
        }
    }
    return cased;
}

static int in_chars(uint32_t c, const struct jstr *chars) {
    if (!chars) return jinja_is_space(c);
    for (size_t i = 0; i < chars->n;)
        if (jinja_utf8_next(chars->p, chars->n, &i) == c) return 1;
    return 0;
}

/* str.strip family: which 1 = left, 2 = right, 3 = both. */
static struct jv strip(struct jstr s, const struct jstr *chars, int which) {
    size_t a = 0, b = s.n;
    if (which & 1)
        while (a < b) {
            size_t k = a;
            if (!in_chars(jinja_utf8_next(s.p, b, &k), chars)) break;
            a = k;
        }
    if (which & 2)
        while (b > a) {
            size_t st = b - 1;
            while (st > a && ((unsigned char)s.p[st] & 0xc0) == 0x80 && b - st < 4) st--;
            size_t k = st;
            uint32_t c = jinja_utf8_next(s.p, b, &k);
            if (k != b) { st = b - 1; c = (unsigned char)s.p[st]; }
            if (!in_chars(c, chars)) break;
            b = st;
        }
    return jv_str(s.p + a, b - a);
}

static struct jv strip_args(struct jrender *r, struct jstr s, const struct jargs *a, int which) {
    struct jv c = arg(a, 0, "chars", jv_none());
    if (c.t == JV_NONE || c.t == JV_UNDEF) return strip(s, NULL, which);
    struct jstr cs = need_str(r, c, "strip");
    return strip(s, &cs, which);
}

static const char *find_bytes(const char *h, size_t hn, const char *n, size_t nn) {
    if (nn == 0) return h;
    for (size_t i = 0; i + nn <= hn; i++)
        if (h[i] == n[0] && !memcmp(h + i, n, nn)) return h + i;
    return NULL;
}

static const char *rfind_bytes(const char *h, size_t hn, const char *n, size_t nn) {
    if (nn > hn) return NULL;
    for (size_t i = hn - nn + 1; i-- > 0;)
        if (!memcmp(h + i, n, nn)) return h + i;
    return NULL;
}

static int64_t cp_index(struct jstr s, size_t byte) {
    int64_t k = 0;
    for (size_t i = 0; i < byte && i < s.n;) {
        jinja_utf8_next(s.p, s.n, &i);
        k++;
    }
    return k;
}

/* str.split / str.rsplit. */
static struct jv split(struct jrender *r, struct jstr s, const struct jargs *a, int right) {
    struct jv sepv = arg(a, 0, "sep", jv_none());
    int64_t max = need_int(r, arg(a, 1, "maxsplit", jv_int(-1)), "split");
    struct jv out = jv_newlist(r, 0);
    if (sepv.t == JV_NONE) { /* runs of whitespace; no empty strings */
        struct jv parts = jv_newlist(r, 0);
        size_t i = 0;
        if (!right) {
            while (i < s.n) {
                size_t k = i;
                while (k < s.n) { size_t t = k; if (!jinja_is_space(jinja_utf8_next(s.p, s.n, &t))) break; k = t; }
                if (k >= s.n) break;
                if (max >= 0 && (int64_t)parts.u.l->n >= max) {
                    jv_push(r, &parts, jv_str(s.p + k, s.n - k)); /* the rest, as is */
                    return parts;
                }
                size_t e = k;
                while (e < s.n) { size_t t = e; if (jinja_is_space(jinja_utf8_next(s.p, s.n, &t))) break; e = t; }
                jv_push(r, &parts, jv_str(s.p + k, e - k));
                i = e;
            }
            return parts;
        }
        /* rsplit(None): split all, then rejoin the leading ones past maxsplit */
        struct jargs none = {0};
        struct jv all = split(r, s, &none, 0);
        size_t n = all.u.l->n;
        if (max < 0 || (size_t)max >= n) return all;
        size_t keep = n - (size_t)max; /* the first `keep` words stay together */
        const struct jstr last = all.u.l->v[keep - 1].u.s; /* the rest keeps its leading space */
        jv_push(r, &out, jv_str(s.p, (size_t)(last.p + last.n - s.p)));
        for (size_t j = keep; j < n; j++) jv_push(r, &out, all.u.l->v[j]);
        return out;
    }
    struct jstr sep = need_str(r, sepv, "split");
    if (!sep.n) jinja_fail(r, "empty separator");
    if (!right) {
        size_t i = 0;
        int64_t done = 0;
        for (;;) {
            const char *hit = (max < 0 || done < max) ? find_bytes(s.p + i, s.n - i, sep.p, sep.n) : NULL;
            if (!hit) break;
            jv_push(r, &out, jv_str(s.p + i, (size_t)(hit - (s.p + i))));
            i = (size_t)(hit - s.p) + sep.n;
            done++;
        }
        jv_push(r, &out, jv_str(s.p + i, s.n - i));
        return out;
    }
    struct jv rev = jv_newlist(r, 0);
    size_t end = s.n;
    int64_t done = 0;
    for (;;) {
        const char *hit = (max < 0 || done < max) ? rfind_bytes(s.p, end, sep.p, sep.n) : NULL;
        if (!hit) break;
        size_t at = (size_t)(hit - s.p);
        jv_push(r, &rev, jv_str(s.p + at + sep.n, end - at - sep.n));
        end = at;
        done++;
    }
    jv_push(r, &rev, jv_str(s.p, end));
    for (size_t j = rev.u.l->n; j-- > 0;) jv_push(r, &out, rev.u.l->v[j]);
    return out;
}

static struct jv replace(struct jrender *r, struct jstr s, struct jstr old, struct jstr new, int64_t count) {
    struct jbuf b = {0};
    int64_t done = 0;
    if (!old.n) {
        for (size_t i = 0; i <= s.n;) {
            if (count < 0 || done < count) {
                jbuf_put(r, &b, new.p, new.n);
                done++;
            }
            if (i == s.n) break;
            size_t st = i;
            jinja_utf8_next(s.p, s.n, &i);
            jbuf_put(r, &b, s.p + st, i - st);
        }
        return jv_str(b.p ? b.p : "", b.n);
    }
    size_t i = 0;
    for (;;) {
        const char *hit = (count < 0 || done < count) ? find_bytes(s.p + i, s.n - i, old.p, old.n) : NULL;
        if (!hit) break;
        jbuf_put(r, &b, s.p + i, (size_t)(hit - (s.p + i)));
        jbuf_put(r, &b, new.p, new.n);
        i = (size_t)(hit - s.p) + old.n;
        done++;
    }
    if (!done) return jv_str(s.p, s.n);
    jbuf_put(r, &b, s.p + i, s.n - i);
    return jv_str(b.p ? b.p : "", b.n);
}

/* Line ends as str.splitlines() knows them: the length of the break at
 * s[i] (0: none). */
static size_t line_break(struct jstr s, size_t i) {
    unsigned char c = (unsigned char)s.p[i];
    if (c == '\r') return i + 1 < s.n && s.p[i + 1] == '\n' ? 2 : 1;
    if (c == '\n' || c == '\v' || c == '\f' || (c >= 0x1c && c <= 0x1e)) return 1;
    size_t k = i;
    uint32_t cp = jinja_utf8_next(s.p, s.n, &k);
    if (cp == 0x85 || cp == 0x2028 || cp == 0x2029) return k - i;
    return 0;
}

static struct jv splitlines(struct jrender *r, struct jstr s, int keepends) {
    struct jv out = jv_newlist(r, 0);
    size_t st = 0;
    for (size_t i = 0; i < s.n;) {
        size_t k = line_break(s, i);
        if (!k) {
            i++;
            continue;
        }
        jv_push(r, &out, jv_str(s.p + st, (keepends ? i + k : i) - st));
        i += k;
        st = i;
    }
    if (st < s.n) jv_push(r, &out, jv_str(s.p + st, s.n - st));
    return out;
}

/* ---- JSON (json.dumps) ------------------------------------------------- */

struct json_opts {
    int ensure_ascii, sort_keys, indent_on;
    struct jstr indent, item_sep, key_sep;
};

static void json_str(struct jrender *r, struct jbuf *b, struct jstr s, int ascii) {
    jbuf_put(r, b, "\"", 1);
    for (size_t i = 0; i < s.n;) {
        size_t st = i;
        uint32_t c = jinja_utf8_next(s.p, s.n, &i);
        char esc[16];
        switch (c) {
        case '"': jbuf_puts(r, b, "\\\""); continue;
        case '\\': jbuf_puts(r, b, "\\\\"); continue;
        case '\n': jbuf_puts(r, b, "\\n"); continue;
        case '\r': jbuf_puts(r, b, "\\r"); continue;
        case '\t': jbuf_puts(r, b, "\\t"); continue;
        case '\b': jbuf_puts(r, b, "\\b"); continue;
        case '\f': jbuf_puts(r, b, "\\f"); continue;
        }
        if (c < 0x20 || (ascii && c >= 0x7f)) {
            if (c >= 0x10000) {
                uint32_t v = c - 0x10000;
                snprintf(esc, sizeof esc, "\\u%04x\\u%04x", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
            } else {
                snprintf(esc, sizeof esc, "\\u%04x", c);
            }
            jbuf_puts(r, b, esc);
        } else {
            jbuf_put(r, b, s.p + st, i - st);
        }
    }
    jbuf_put(r, b, "\"", 1);
}

static void json_float(struct jrender *r, struct jbuf *b, double f) {
    char tmp[64];
    if (isnan(f)) jbuf_puts(r, b, "NaN");
    else if (isinf(f)) jbuf_puts(r, b, f < 0 ? "-Infinity" : "Infinity");
    else {
        jinja_float_repr(f, tmp, sizeof tmp);
        jbuf_puts(r, b, tmp);
    }
}

static void json_newline(struct jrender *r, struct jbuf *b, const struct json_opts *o, int level) {
    jbuf_put(r, b, "\n", 1);
    for (int i = 0; i < level; i++) jbuf_put(r, b, o->indent.p, o->indent.n);
}

static void json_key(struct jrender *r, struct jbuf *b, struct jv k, const struct json_opts *o) {
    char tmp[64];
    switch (k.t) {
    case JV_STR: json_str(r, b, k.u.s, o->ensure_ascii); return;
    case JV_BOOL: jbuf_puts(r, b, k.u.i ? "\"true\"" : "\"false\""); return;
    case JV_NONE: jbuf_puts(r, b, "\"null\""); return;
    case JV_INT: snprintf(tmp, sizeof tmp, "\"%lld\"", (long long)k.u.i); jbuf_puts(r, b, tmp); return;
    case JV_FLOAT:
        jbuf_put(r, b, "\"", 1);
        json_float(r, b, k.u.f);
        jbuf_put(r, b, "\"", 1);
        return;
    default: jinja_fail(r, "keys must be str, int, float, bool or None, not %s", jv_type_name(k));
    }
}

/* Stable merge sort of n values by cmp (which may fail). */
typedef int (*jcmp)(struct jrender *r, const struct jv *a, const struct jv *b, const void *ctx);
static void sort_values(struct jrender *r, struct jv *v, size_t n, jcmp cmp, const void *ctx) {
    if (n < 2) return;
    struct jv *tmp = jinja_alloc(r, n * sizeof *tmp);
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) tmp[k++] = cmp(r, &v[j], &v[i], ctx) < 0 ? v[j++] : v[i++];
            while (i < mid) tmp[k++] = v[i++];
            while (j < hi) tmp[k++] = v[j++];
        }
        memcpy(v, tmp, n * sizeof *v);
    }
}

static int cmp_keys(struct jrender *r, const struct jv *a, const struct jv *b, const void *ctx) {
    const struct jdict *d = ctx;
    return jv_compare(r, d->k[a->u.i], d->k[b->u.i]);
}

static void json_value(struct jrender *r, struct jbuf *b, struct jv v, const struct json_opts *o, int level) {
    char tmp[64];
    switch (v.t) {
    case JV_NONE: jbuf_puts(r, b, "null"); return;
    case JV_BOOL: jbuf_puts(r, b, v.u.i ? "true" : "false"); return;
    case JV_INT: snprintf(tmp, sizeof tmp, "%lld", (long long)v.u.i); jbuf_puts(r, b, tmp); return;
    case JV_FLOAT: json_float(r, b, v.u.f); return;
    case JV_STR: json_str(r, b, v.u.s, o->ensure_ascii); return;
    case JV_LIST:
        if (!v.u.l->n) {
            jbuf_puts(r, b, "[]");
            return;
        }
        jinja_enter(r);
        jbuf_put(r, b, "[", 1);
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) jbuf_put(r, b, o->item_sep.p, o->item_sep.n);
            if (o->indent_on) json_newline(r, b, o, level + 1);
            json_value(r, b, v.u.l->v[i], o, level + 1);
        }
        if (o->indent_on) json_newline(r, b, o, level);
        jbuf_put(r, b, "]", 1);
        jinja_leave(r);
        return;
    case JV_DICT: {
        const struct jdict *d = v.u.d;
        if (!d->n) {
            jbuf_puts(r, b, "{}");
            return;
        }
        jinja_enter(r);
        struct jv *order = jinja_alloc(r, d->n * sizeof *order);
        for (size_t i = 0; i < d->n; i++) order[i] = jv_int((int64_t)i);
        if (o->sort_keys) sort_values(r, order, d->n, cmp_keys, d);
        jbuf_put(r, b, "{", 1);
        for (size_t i = 0; i < d->n; i++) {
            size_t k = (size_t)order[i].u.i;
            if (i) jbuf_put(r, b, o->item_sep.p, o->item_sep.n);
            if (o->indent_on) json_newline(r, b, o, level + 1);
            json_key(r, b, d->k[k], o);
            jbuf_put(r, b, o->key_sep.p, o->key_sep.n);
            json_value(r, b, d->v[k], o, level + 1);
        }
        if (o->indent_on) json_newline(r, b, o, level);
        jbuf_put(r, b, "}", 1);
        jinja_leave(r);
        return;
    }
    default: jinja_fail(r, "Object of type %s is not JSON serializable", jv_type_name(v));
    }
}

static struct jv tojson(struct jrender *r, struct jv v, const struct jargs *a) {
    struct json_opts o = {0};
    o.ensure_ascii = jv_truthy(arg(a, 0, "ensure_ascii", jv_bool(0)));
    struct jv ind = arg(a, 1, "indent", jv_none());
    struct jv seps = arg(a, 2, "separators", jv_none());
    o.sort_keys = jv_truthy(arg(a, 3, "sort_keys", jv_bool(0)));
    if (ind.t == JV_INT || ind.t == JV_BOOL) {
        o.indent_on = 1;
        int64_t n = ind.u.i < 0 ? 0 : ind.u.i > 64 ? 64 : ind.u.i;
        char *sp = jinja_alloc(r, (size_t)n + 1);
        memset(sp, ' ', (size_t)n);
        o.indent = (struct jstr){sp, (size_t)n};
    } else if (ind.t == JV_STR) {
        o.indent_on = 1;
        o.indent = ind.u.s;
    } else if (ind.t != JV_NONE && ind.t != JV_UNDEF) {
        jinja_fail(r, "tojson: indent must be an integer or a string");
    }
    o.item_sep = o.indent_on ? (struct jstr){",", 1} : (struct jstr){", ", 2};
    o.key_sep = (struct jstr){": ", 2};
    if (seps.t == JV_LIST) {
        if (seps.u.l->n != 2 || seps.u.l->v[0].t != JV_STR || seps.u.l->v[1].t != JV_STR)
            jinja_fail(r, "tojson: separators must be two strings");
        o.item_sep = seps.u.l->v[0].u.s;
        o.key_sep = seps.u.l->v[1].u.s;
    }
    struct jbuf b = {0};
    json_value(r, &b, v, &o, 0);
    return jv_str(b.p ? b.p : "", b.n);
}

/* ---- Filters ----------------------------------------------------------- */

static struct jv join_items(struct jrender *r, struct jlist *l, struct jstr sep) {
    struct jbuf b = {0};
    for (size_t i = 0; i < l->n; i++) {
        if (i) jbuf_put(r, &b, sep.p, sep.n);
        struct jstr s = str_of(r, l->v[i]);
        jbuf_put(r, &b, s.p, s.n);
    }
    return jv_str(b.p ? b.p : "", b.n);
}

/* An attribute path "a.b.0" of v, as jinja's make_attrgetter. */
static struct jv attr_path(struct jrender *r, struct jv v, struct jv path) {
    if (path.t == JV_INT) return jv_getitem(r, v, path);
    struct jstr p = need_str(r, path, "attribute");
    size_t st = 0;
    for (size_t i = 0; i <= p.n; i++) {
        if (i < p.n && p.p[i] != '.') continue;
        struct jstr part = {p.p + st, i - st};
        int digits = part.n > 0;
        int64_t idx = 0;
        for (size_t k = 0; k < part.n && digits; k++) {
            digits = part.p[k] >= '0' && part.p[k] <= '9' && idx < 1000000000;
            idx = idx * 10 + (part.p[k] - '0');
        }
        v = digits ? jv_getitem(r, v, jv_int(idx)) : jv_getitem(r, v, jv_str(part.p, part.n));
        st = i + 1;
    }
    return v;
}

struct sort_ctx {
    int case_sensitive;
    struct jv attribute; /* JV_NONE: the value itself */
    int by_value;        /* dictsort: compare item[1] */
};

static struct jv sort_key(struct jrender *r, struct jv v, const struct sort_ctx *c) {
    if (c->attribute.t != JV_NONE) v = attr_path(r, v, c->attribute);
    if (!c->case_sensitive && v.t == JV_STR) v = case_map(r, v.u.s, 'l');
    return v;
}

static int cmp_sort(struct jrender *r, const struct jv *a, const struct jv *b, const void *ctx) {
    const struct sort_ctx *c = ctx;
    struct jv x = *a, y = *b;
    if (c->by_value >= 0 && x.t == JV_LIST && x.u.l->n == 2 && y.t == JV_LIST && y.u.l->n == 2) {
        x = x.u.l->v[c->by_value];
        y = y.u.l->v[c->by_value];
    }
    return jv_compare(r, sort_key(r, x, c), sort_key(r, y, c));
}

static struct jv copy_list(struct jrender *r, struct jlist *l) {
    struct jv out = jv_newlist(r, l->n);
    for (size_t i = 0; i < l->n; i++) jv_push(r, &out, l->v[i]);
    return out;
}

static struct jv items_of(struct jrender *r, struct jv v) {
    if (v.t == JV_UNDEF) return jv_newlist(r, 0);
    if (v.t != JV_DICT) jinja_fail(r, "items expects a mapping, got '%s'", jv_type_name(v));
    struct jv out = jv_newlist(r, v.u.d->n);
    for (size_t i = 0; i < v.u.d->n; i++) {
        struct jv pair = jv_newlist(r, 2);
        pair.tuple = 1;
        jv_push(r, &pair, v.u.d->k[i]);
        jv_push(r, &pair, v.u.d->v[i]);
        jv_push(r, &out, pair);
    }
    return out;
}

static double to_float(struct jrender *r, struct jv v, int *ok) {
    *ok = 1;
    if (v.t == JV_FLOAT) return v.u.f;
    if (v.t == JV_INT || v.t == JV_BOOL) return (double)v.u.i;
    if (v.t == JV_STR) {
        char *buf = jinja_alloc(r, v.u.s.n + 1);
        size_t k = 0;
        struct jv t = strip(v.u.s, NULL, 3);
        for (size_t i = 0; i < t.u.s.n; i++)
            if (t.u.s.p[i] != '_') buf[k++] = t.u.s.p[i];
        buf[k] = 0;
        char *end;
        double f = strtod(buf, &end);
        if (k && *end == 0 && !(k > 1 && (buf[0] == '0') && (buf[1] == 'x' || buf[1] == 'X'))) return f;
    }
    *ok = 0;
    return 0;
}

static struct jv f_int(struct jrender *r, struct jv v, const struct jargs *a) {
    if (v.t == JV_UNDEF) jinja_fail(r, "cannot convert an undefined value to int");
    struct jv def = arg(a, 0, "default", jv_int(0));
    int64_t base = need_int(r, arg(a, 1, "base", jv_int(10)), "int");
    if (v.t == JV_INT) return v;
    if (v.t == JV_BOOL) return jv_int(v.u.i);
    if (v.t == JV_STR) {
        struct jstr s = strip(v.u.s, NULL, 3).u.s;
        size_t i = 0;
        int neg = 0;
        if (i < s.n && (s.p[i] == '+' || s.p[i] == '-')) neg = s.p[i++] == '-';
        if (base == 16 && i + 1 < s.n && s.p[i] == '0' && (s.p[i + 1] | 32) == 'x') i += 2;
        else if (base == 8 && i + 1 < s.n && s.p[i] == '0' && (s.p[i + 1] | 32) == 'o') i += 2;
        else if (base == 2 && i + 1 < s.n && s.p[i] == '0' && (s.p[i + 1] | 32) == 'b') i += 2;
        uint64_t acc = 0;
        int ok = i < s.n && base >= 2 && base <= 36;
        for (; ok && i < s.n; i++) {
            char c = s.p[i];
            if (c == '_' && i + 1 < s.n && s.p[i + 1] != '_' && i > 0) continue;
            int d = c >= '0' && c <= '9' ? c - '0' : (c | 32) >= 'a' && (c | 32) <= 'z' ? (c | 32) - 'a' + 10 : 99;
            if (d >= base || acc > (uint64_t)INT64_MAX / (uint64_t)base) ok = 0;
            else acc = acc * (uint64_t)base + (uint64_t)d;
            if (acc > (uint64_t)INT64_MAX) ok = 0;
        }
        if (ok) return jv_int(neg ? -(int64_t)acc : (int64_t)acc);
    }
    int ok;
    double f = to_float(r, v, &ok);
    if (ok && isfinite(f) && f > -9.2e18 && f < 9.2e18) return jv_int((int64_t)f);
    return def;
}

static struct jv f_round(struct jrender *r, struct jv v, const struct jargs *a) {
    int64_t prec = need_int(r, arg(a, 0, "precision", jv_int(0)), "round");
    struct jv mv = arg(a, 1, "method", jv_cstr("common"));
    struct jstr method = need_str(r, mv, "round");
    if (!is_num_t(v)) jinja_fail(r, "round expects a number, got '%s'", jv_type_name(v));
    if (prec < 0 || prec > 20) jinja_fail(r, "round: precision %lld is not supported", (long long)prec);
    double x = v.t == JV_FLOAT ? v.u.f : (double)v.u.i;
    if (jstr_eq(method, "common")) {
        if (v.t != JV_FLOAT) return jv_int(v.u.i);
        if (!isfinite(x)) return v;
        char buf[400];
        snprintf(buf, sizeof buf, "%.*f", (int)prec, x);
        return jv_float(strtod(buf, NULL));
    }
    double m = pow(10.0, (double)prec);
    if (jstr_eq(method, "ceil")) return jv_float(ceil(x * m) / m);
    if (jstr_eq(method, "floor")) return jv_float(floor(x * m) / m);
    jinja_fail(r, "method must be common, ceil or floor");
}

static struct jv f_indent(struct jrender *r, struct jv v, const struct jargs *a) {
    struct jstr s = need_str(r, v, "indent");
    struct jv w = arg(a, 0, "width", jv_int(4));
    int first = jv_truthy(arg(a, 1, "first", jv_bool(0))), blank = jv_truthy(arg(a, 2, "blank", jv_bool(0)));
    struct jstr ind;
    if (w.t == JV_STR) {
        ind = w.u.s;
    } else {
        int64_t n = need_int(r, w, "indent");
        n = n < 0 ? 0 : n > 1024 ? 1024 : n;
        char *sp = jinja_alloc(r, (size_t)n + 1);
        memset(sp, ' ', (size_t)n);
        ind = (struct jstr){sp, (size_t)n};
    }
    /* s + "\n", split into lines (the trailing newline makes no extra line) */
    struct jbuf tmp = {0};
    jbuf_put(r, &tmp, s.p, s.n);
    jbuf_put(r, &tmp, "\n", 1);
    struct jv lines = splitlines(r, (struct jstr){tmp.p, tmp.n}, 0);
    struct jbuf b = {0};
    if (first) jbuf_put(r, &b, ind.p, ind.n);
    for (size_t i = 0; i < lines.u.l->n; i++) {
        struct jstr line = lines.u.l->v[i].u.s;
        if (i) {
            jbuf_put(r, &b, "\n", 1);
            if (blank || line.n) jbuf_put(r, &b, ind.p, ind.n);
        }
        jbuf_put(r, &b, line.p, line.n);
    }
    return jv_str(b.p ? b.p : "", b.n);
}

static struct jv f_title(struct jrender *r, struct jstr s) {
    /* jinja's title: split on runs of [-\s({[<], capitalize each piece */
    struct jbuf b = {0};
    int start = 1;
    for (size_t i = 0; i < s.n;) {
        uint32_t c = jinja_utf8_next(s.p, s.n, &i);
        int sep = jinja_is_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
        if (sep) {
            put_cp(r, &b, c);
            start = 1;
        } else {
            put_cp(r, &b, start ? upper_cp(c) : lower_cp(c));
            start = 0;
        }
    }
    return jv_str(b.p ? b.p : "", b.n);
}

static struct jv f_escape(struct jrender *r, struct jstr s) {
    struct jbuf b = {0};
    for (size_t i = 0; i < s.n; i++) {
        const char *e = NULL;
        switch (s.p[i]) {
        case '&': e = "&amp;"; break;
        case '<': e = "&lt;"; break;
        case '>': e = "&gt;"; break;
        case '"': e = "&#34;"; break;
        case '\'': e = "&#39;"; break;
        }
        if (e) jbuf_puts(r, &b, e);
        else jbuf_put(r, &b, s.p + i, 1);
    }
    return jv_str(b.p ? b.p : "", b.n);
}

/* select/reject (attr 0) and selectattr/rejectattr (attr 1). */
static struct jv f_select(struct jrender *r, struct jv v, const struct jargs *a, int keep, int attr) {
    struct jlist *items = jv_iterate(r, v);
    struct jv attribute = jv_none();
    int k = 0;
    if (attr) {
        if (a->n < 1) jinja_fail(r, "selectattr needs an attribute");
        attribute = a->v[k++];
    }
    struct jstr test = {NULL, 0};
    if (k < a->n) test = need_str(r, a->v[k++], "select");
    if (test.n && !jinja_has_test(test)) jinja_fail(r, "unknown test '%.*s'", (int)test.n, test.p);
    struct jargs rest = {a->n - k, a->v ? a->v + k : NULL, a->kw ? a->kw + k : NULL};
    struct jv out = jv_newlist(r, 0);
    for (size_t i = 0; i < items->n; i++) {
        struct jv x = attr ? attr_path(r, items->v[i], attribute) : items->v[i];
        int t = test.n ? jinja_test(r, test, x, &rest) : jv_truthy(x);
        if (t == keep) jv_push(r, &out, items->v[i]);
    }
    return out;
}

static struct jv f_map(struct jrender *r, struct jv v, const struct jargs *a) {
    struct jlist *items = jv_iterate(r, v);
    struct jv out = jv_newlist(r, items->n);
    struct jv *attribute = jargs_get(a, -1, "attribute");
    if (attribute) {
        struct jv *def = jargs_get(a, -1, "default");
        for (size_t i = 0; i < items->n; i++) {
            struct jv x = attr_path(r, items->v[i], *attribute);
            jv_push(r, &out, x.t == JV_UNDEF && def ? *def : x);
        }
        return out;
    }
    if (a->n < 1) jinja_fail(r, "map needs a filter name or attribute=");
    struct jstr name = need_str(r, a->v[0], "map");
    if (!jinja_has_filter(name)) jinja_fail(r, "unknown filter '%.*s'", (int)name.n, name.p);
    struct jargs rest = {a->n - 1, a->v + 1, a->kw ? a->kw + 1 : NULL};
    for (size_t i = 0; i < items->n; i++) jv_push(r, &out, jinja_filter(r, name, items->v[i], &rest));
    return out;
}

static struct jv f_minmax(struct jrender *r, struct jv v, const struct jargs *a, int want_max) {
    struct jlist *items = jv_iterate(r, v);
    struct sort_ctx c = {jv_truthy(arg(a, 0, "case_sensitive", jv_bool(0))), arg(a, 1, "attribute", jv_none()), -1};
    if (!items->n) return jv_undef((struct jstr){"no items", 8});
    struct jv best = items->v[0];
    for (size_t i = 1; i < items->n; i++) {
        int cmp = cmp_sort(r, &items->v[i], &best, &c);
        if (want_max ? cmp > 0 : cmp < 0) best = items->v[i];
    }
    return best;
}

static struct jv f_unique(struct jrender *r, struct jv v, const struct jargs *a) {
    struct jlist *items = jv_iterate(r, v);
    struct sort_ctx c = {jv_truthy(arg(a, 0, "case_sensitive", jv_bool(0))), arg(a, 1, "attribute", jv_none()), -1};
    struct jv out = jv_newlist(r, 0), seen = jv_newlist(r, 0);
    for (size_t i = 0; i < items->n; i++) {
        struct jv k = sort_key(r, items->v[i], &c);
        int dup = 0;
        for (size_t j = 0; j < seen.u.l->n && !dup; j++) dup = jv_equal(r, seen.u.l->v[j], k);
        if (dup) continue;
        jv_push(r, &seen, k);
        jv_push(r, &out, items->v[i]);
    }
    return out;
}

static struct jv f_sum(struct jrender *r, struct jv v, const struct jargs *a) {
    struct jlist *items = jv_iterate(r, v);
    struct jv attribute = arg(a, 0, "attribute", jv_none());
    struct jv acc = arg(a, 1, "start", jv_int(0));
    for (size_t i = 0; i < items->n; i++) {
        struct jv x = attribute.t != JV_NONE ? attr_path(r, items->v[i], attribute) : items->v[i];
        if (!is_num_t(acc) || !is_num_t(x))
            jinja_fail(r, "unsupported operand type(s) for +: '%s' and '%s'", jv_type_name(acc), jv_type_name(x));
        if (acc.t == JV_FLOAT || x.t == JV_FLOAT) {
            acc = jv_float((acc.t == JV_FLOAT ? acc.u.f : (double)acc.u.i) + (x.t == JV_FLOAT ? x.u.f : (double)x.u.i));
        } else {
            int64_t z;
            if (__builtin_add_overflow(acc.u.i, x.u.i, &z)) jinja_fail(r, "integer overflow");
            acc = jv_int(z);
        }
    }
    return acc;
}

static struct jv f_wordcount(struct jstr s) {
    int64_t n = 0;
    int in = 0;
    for (size_t i = 0; i < s.n;) {
        uint32_t c = jinja_utf8_next(s.p, s.n, &i);
        int w = c == '_' || is_alnum(c);
        if (w && !in) n++;
        in = w;
    }
    return jv_int(n);
}

static struct jv f_reverse(struct jrender *r, struct jv v) {
    if (v.t == JV_STR) {
        struct jlist *cps = jv_iterate(r, v);
        struct jbuf b = {0};
        for (size_t i = cps->n; i-- > 0;) jbuf_put(r, &b, cps->v[i].u.s.p, cps->v[i].u.s.n);
        return jv_str(b.p ? b.p : "", b.n);
    }
    struct jlist *items = jv_iterate(r, v);
    struct jv out = jv_newlist(r, items->n);
    for (size_t i = items->n; i-- > 0;) jv_push(r, &out, items->v[i]);
    return out;
}

static struct jv f_dictsort(struct jrender *r, struct jv v, const struct jargs *a) {
    struct sort_ctx c = {jv_truthy(arg(a, 0, "case_sensitive", jv_bool(0))), jv_none(), 0};
    struct jv by = arg(a, 1, "by", jv_cstr("key"));
    if (jstr_eq(need_str(r, by, "dictsort"), "value")) c.by_value = 1;
    else if (!jstr_eq(by.u.s, "key")) jinja_fail(r, "You can only sort by either \"key\" or \"value\"");
    struct jv out = items_of(r, v);
    sort_values(r, out.u.l->v, out.u.l->n, cmp_sort, &c);
    if (jv_truthy(arg(a, 2, "reverse", jv_bool(0)))) return f_reverse(r, out);
    return out;
}

static struct jv f_sort(struct jrender *r, struct jv v, const struct jargs *a) {
    struct sort_ctx c = {jv_truthy(arg(a, 1, "case_sensitive", jv_bool(0))), arg(a, 2, "attribute", jv_none()), -1};
    struct jv out = copy_list(r, jv_iterate(r, v));
    sort_values(r, out.u.l->v, out.u.l->n, cmp_sort, &c);
    if (jv_truthy(arg(a, 0, "reverse", jv_bool(0)))) {
        /* sorted(reverse=True) keeps equal items in their order */
        struct jv rev = jv_newlist(r, out.u.l->n);
        size_t n = out.u.l->n, i = n;
        while (i > 0) {
            size_t j = i - 1;
            while (j > 0 && cmp_sort(r, &out.u.l->v[j - 1], &out.u.l->v[i - 1], &c) == 0) j--;
            for (size_t k = j; k < i; k++) jv_push(r, &rev, out.u.l->v[k]);
            i = j;
        }
        return rev;
    }
    return out;
}

static const char *const filter_names[] = {
    "abs", "attr", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float",
    "indent", "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min", "reject",
    "rejectattr", "replace", "reverse", "round", "safe", "select", "selectattr", "sort", "string", "sum",
    "title", "tojson", "trim", "unique", "upper", "wordcount", NULL};

static int in_names(const char *const *names, struct jstr s) {
    for (int i = 0; names[i]; i++)
        if (jstr_eq(s, names[i])) return 1;
    return 0;
}

int jinja_has_filter(struct jstr name) { return in_names(filter_names, name); }

struct jv jinja_filter(struct jrender *r, struct jstr name, struct jv v, const struct jargs *a) {
#define IS(s) jstr_eq(name, s)
    if (IS("default") || IS("d")) {
        struct jv def = arg(a, 0, "default_value", jv_str("", 0));
        int boolean = jv_truthy(arg(a, 1, "boolean", jv_bool(0)));
        return v.t == JV_UNDEF || (boolean && !jv_truthy(v)) ? def : v;
    }
    if (IS("length") || IS("count")) return jv_int((int64_t)jv_length(r, v));
    if (IS("tojson")) return tojson(r, v, a);
    if (IS("trim")) return strip_args(r, str_of(r, v), a, 3);
    if (IS("string")) return jv_str(str_of(r, v).p, str_of(r, v).n);
    if (IS("safe")) return v.t == JV_STR ? v : jv_str(str_of(r, v).p, str_of(r, v).n);
    if (IS("lower")) return case_map(r, str_of(r, v), 'l');
    if (IS("upper")) return case_map(r, str_of(r, v), 'u');
    if (IS("capitalize")) return case_map(r, str_of(r, v), 'c');
    if (IS("title")) return f_title(r, str_of(r, v));
    if (IS("escape") || IS("e")) return f_escape(r, str_of(r, v));
    if (IS("wordcount")) return f_wordcount(str_of(r, v));
    if (IS("join")) {
        struct jlist *items = jv_iterate(r, v);
        struct jstr sep = need_str(r, arg(a, 0, "d", jv_str("", 0)), "join");
        struct jv *attribute = jargs_get(a, 1, "attribute");
        if (attribute) {
            struct jv m = jv_newlist(r, items->n);
            for (size_t i = 0; i < items->n; i++) jv_push(r, &m, attr_path(r, items->v[i], *attribute));
            items = m.u.l;
        }
        return join_items(r, items, sep);
    }
    if (IS("first")) {
        struct jlist *items = jv_iterate(r, v);
        return items->n ? items->v[0] : jv_undef((struct jstr){"no first item", 13});
    }
    if (IS("last")) {
        struct jlist *items = jv_iterate(r, v);
        return items->n ? items->v[items->n - 1] : jv_undef((struct jstr){"no last item", 12});
    }
    if (IS("list")) return copy_list(r, jv_iterate(r, v));
    if (IS("items")) return items_of(r, v);
    if (IS("reverse")) return f_reverse(r, v);
    if (IS("replace")) {
        struct jstr s = str_of(r, v);
        struct jstr old = str_of(r, arg(a, 0, "old", jv_str("", 0))), new = str_of(r, arg(a, 1, "new", jv_str("", 0)));
        struct jv c = arg(a, 2, "count", jv_none());
        return replace(r, s, old, new, c.t == JV_NONE ? -1 : need_int(r, c, "replace"));
    }
    if (IS("abs")) {
        if (v.t == JV_FLOAT) return jv_float(fabs(v.u.f));
        int64_t i = need_int(r, v, "abs");
        if (i == INT64_MIN) jinja_fail(r, "integer overflow");
        return jv_int(i < 0 ? -i : i);
    }
    if (IS("int")) return f_int(r, v, a);
    if (IS("float")) {
        if (v.t == JV_UNDEF) jinja_fail(r, "cannot convert an undefined value to float");
        int ok;
        double f = to_float(r, v, &ok);
        return ok ? jv_float(f) : arg(a, 0, "default", jv_float(0.0));
    }
    if (IS("round")) return f_round(r, v, a);
    if (IS("indent")) return f_indent(r, v, a);
    if (IS("map")) return f_map(r, v, a);
    if (IS("select")) return f_select(r, v, a, 1, 0);
    if (IS("reject")) return f_select(r, v, a, 0, 0);
    if (IS("selectattr")) return f_select(r, v, a, 1, 1);
    if (IS("rejectattr")) return f_select(r, v, a, 0, 1);
    if (IS("max")) return f_minmax(r, v, a, 1);
    if (IS("min")) return f_minmax(r, v, a, 0);
    if (IS("unique")) return f_unique(r, v, a);
    if (IS("sum")) return f_sum(r, v, a);
    if (IS("sort")) return f_sort(r, v, a);
    if (IS("dictsort")) return f_dictsort(r, v, a);
    if (IS("attr")) return jv_getattr(r, v, need_str(r, arg(a, 0, "name", jv_none()), "attr"));
#undef IS
    jinja_fail(r, "unknown filter '%.*s'", (int)name.n, name.p);
}

/* ---- Tests ------------------------------------------------------------- */

static const char *const test_names[] = {
    "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "even", "false", "float", "ge", "gt",
    "greaterthan", "in", "integer", "iterable", "le", "lessthan", "lower", "lt", "mapping", "ne", "none",
    "number", "odd", "sameas", "sequence", "string", "true", "undefined", "upper", NULL};

int jinja_has_test(struct jstr name) { return in_names(test_names, name); }

int jinja_test(struct jrender *r, struct jstr name, struct jv v, const struct jargs *a) {
#define IS(s) jstr_eq(name, s)
    struct jv other = arg(a, 0, NULL, jv_undef((struct jstr){"test argument", 13}));
    if (IS("defined")) return v.t != JV_UNDEF;
    if (IS("undefined")) return v.t == JV_UNDEF;
    if (IS("none")) return v.t == JV_NONE;
    if (IS("boolean")) return v.t == JV_BOOL;
    if (IS("true")) return v.t == JV_BOOL && v.u.i;
    if (IS("false")) return v.t == JV_BOOL && !v.u.i;
    if (IS("string")) return v.t == JV_STR;
    if (IS("integer")) return v.t == JV_INT;
    if (IS("float")) return v.t == JV_FLOAT;
    if (IS("number")) return is_num_t(v);
    if (IS("mapping")) return v.t == JV_DICT;
    if (IS("iterable")) return v.t == JV_LIST || v.t == JV_DICT || v.t == JV_STR || v.t == JV_UNDEF;
    if (IS("sequence")) return v.t == JV_LIST || v.t == JV_DICT || v.t == JV_STR || v.t == JV_UNDEF;
    if (IS("callable")) return v.t == JV_MACRO || v.t == JV_FUNC || v.t == JV_METHOD;
    if (IS("lower")) return case_test(str_of(r, v), 0);
    if (IS("upper")) return case_test(str_of(r, v), 1);
    if (IS("even") || IS("odd") || IS("divisibleby")) { /* value % n == 0, in Python's arithmetic */
        struct jv n = IS("divisibleby") ? other : jv_int(2);
        if (v.t == JV_UNDEF) jinja_fail(r, "an undefined value is not a number");
        if (!is_num_t(v) || !is_num_t(n))
            jinja_fail(r, "unsupported operand type(s) for %%: '%s' and '%s'", jv_type_name(v), jv_type_name(n));
        double m;
        if (v.t != JV_FLOAT && n.t != JV_FLOAT) {
            if (n.u.i == 0) jinja_fail(r, "integer division or modulo by zero");
            m = n.u.i == -1 ? 0 : (double)(v.u.i % n.u.i);
        } else {
            double x = v.t == JV_FLOAT ? v.u.f : (double)v.u.i, y = n.t == JV_FLOAT ? n.u.f : (double)n.u.i;
            if (y == 0) jinja_fail(r, "float modulo");
            m = fmod(x, y);
        }
        return (m == 0) == !IS("odd");
    }
    if (IS("eq") || IS("equalto")) return jv_equal(r, v, other);
    if (IS("ne")) return !jv_equal(r, v, other);
    if (IS("lt") || IS("lessthan")) return jv_compare(r, v, other) < 0;
    if (IS("le")) return jv_compare(r, v, other) <= 0;
    if (IS("gt") || IS("greaterthan")) return jv_compare(r, v, other) > 0;
    if (IS("ge")) return jv_compare(r, v, other) >= 0;
    if (IS("in")) {
        if (other.t == JV_STR) {
            if (v.t != JV_STR) jinja_fail(r, "'in <string>' requires string as left operand");
            return find_bytes(other.u.s.p, other.u.s.n, v.u.s.p, v.u.s.n) != NULL;
        }
        if (other.t == JV_DICT || other.t == JV_NS) return jv_dict_get(r, other.u.d, v) != NULL;
        struct jlist *items = jv_iterate(r, other);
        for (size_t i = 0; i < items->n; i++)
            if (jv_equal(r, items->v[i], v)) return 1;
        return 0;
    }
    if (IS("sameas")) {
        if (v.t != other.t) return 0;
        if (v.t == JV_NONE || v.t == JV_UNDEF) return 1;
        if (v.t == JV_BOOL) return v.u.i == other.u.i;
        if (v.t == JV_LIST) return v.u.l == other.u.l;
        if (v.t == JV_DICT || v.t == JV_NS) return v.u.d == other.u.d;
        return 0;
    }
#undef IS
    jinja_fail(r, "unknown test '%.*s'", (int)name.n, name.p);
}

/* ---- Globals ----------------------------------------------------------- */

enum { G_RANGE = 1, G_NAMESPACE, G_DICT, G_RAISE, G_STRFTIME };
static const char *const global_names[] = {"", "range", "namespace", "dict", "raise_exception", "strftime_now", NULL};

struct jv jinja_global(struct jstr name) {
    for (int i = 1; global_names[i]; i++)
        if (jstr_eq(name, global_names[i])) {
            struct jv f = {.t = JV_FUNC};
            f.u.i = i;
            return f;
        }
    return jv_undef(name);
}

/* dict(...) and namespace(...): an optional mapping, then keywords. */
static struct jv make_dict(struct jrender *r, const struct jargs *a, int ns) {
    struct jv d = jv_newdict(r, 0);
    if (ns) d.t = JV_NS;
    for (int i = 0; i < a->n; i++) {
        if (a->kw && a->kw[i].n) {
            if (ns && a->kw[i].p[0] == '_') jinja_fail(r, "namespaces cannot store underscore-prefixed attributes");
            jv_dict_set(r, d.u.d, jv_str(a->kw[i].p, a->kw[i].n), a->v[i]);
        } else if (i == 0 && (a->v[0].t == JV_DICT || a->v[0].t == JV_NS)) {
            for (size_t k = 0; k < a->v[0].u.d->n; k++) jv_dict_set(r, d.u.d, a->v[0].u.d->k[k], a->v[0].u.d->v[k]);
        } else if (i == 0 && a->v[0].t == JV_LIST) {
            for (size_t k = 0; k < a->v[0].u.l->n; k++) {
                struct jv pair = a->v[0].u.l->v[k];
                if (pair.t != JV_LIST || pair.u.l->n != 2) jinja_fail(r, "dict() needs pairs");
                jv_dict_set(r, d.u.d, pair.u.l->v[0], pair.u.l->v[1]);
            }
        } else {
            jinja_fail(r, "%s() takes at most one positional argument, a mapping", ns ? "namespace" : "dict");
        }
    }
    return d;
}

struct jv jinja_call_func(struct jrender *r, struct jv f, const struct jargs *a) {
    switch (f.u.i) {
    case G_RANGE: {
        int64_t v[3] = {0, 0, 1};
        if (a->n < 1 || a->n > 3) jinja_fail(r, "range expected 1 to 3 arguments, got %d", a->n);
        for (int i = 0; i < a->n; i++) v[i] = need_int(r, a->v[i], "range");
        if (a->n == 1) {
            v[1] = v[0];
            v[0] = 0;
        }
        if (v[2] == 0) jinja_fail(r, "range() arg 3 must not be zero");
        double count = v[2] > 0 ? ceil(((double)v[1] - (double)v[0]) / (double)v[2])
                                : ceil(((double)v[0] - (double)v[1]) / -(double)v[2]);
        if (count > JINJA_MAX_RANGE)
            jinja_fail(r, "range too big; the sandbox blocks ranges larger than %d", JINJA_MAX_RANGE);
        struct jv l = jv_newlist(r, count > 0 ? (size_t)count : 0);
        for (int64_t i = 0; i < (int64_t)count; i++) jv_push(r, &l, jv_int(v[0] + i * v[2]));
        return l;
    }
    case G_NAMESPACE: return make_dict(r, a, 1);
    case G_DICT: return make_dict(r, a, 0);
    case G_RAISE: {
        struct jstr msg = str_of(r, arg(a, 0, "message", jv_str("", 0)));
        jinja_fail(r, "%.*s", (int)(msg.n > 200 ? 200 : msg.n), msg.p);
    }
    case G_STRFTIME: {
        struct jstr fmt = need_str(r, arg(a, 0, "format", jv_none()), "strftime_now");
        char *cf = jinja_alloc(r, fmt.n + 1);
        memcpy(cf, fmt.p, fmt.n);
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        char out[256];
        size_t k = strftime(out, sizeof out, cf, &tm);
        char *res = jinja_alloc(r, k + 1);
        memcpy(res, out, k);
        return jv_str(res, k);
    }
    }
    jinja_fail(r, "not callable");
}

/* ---- Methods ----------------------------------------------------------- */

static const char *const str_methods[] = {
    "startswith", "endswith", "split", "rsplit", "strip", "lstrip", "rstrip", "lower", "upper", "title",
    "capitalize", "replace", "find", "rfind", "count", "join", "splitlines", "isdigit", "isalpha",
    "isalnum", "isspace", "islower", "isupper", NULL};
static const char *const dict_methods[] = {"items", "keys", "values", "get", NULL};
static const char *const list_methods[] = {"count", "index", NULL};

int jinja_has_method(struct jv obj, struct jstr name) {
    if (obj.t == JV_STR) return in_names(str_methods, name);
    if (obj.t == JV_DICT) return in_names(dict_methods, name);
    if (obj.t == JV_LIST) return in_names(list_methods, name);
    if (obj.t == JV_LOOP) return jstr_eq(name, "cycle");
    return 0;
}

/* startswith/endswith with a string or a tuple of strings. */
static int affix(struct jrender *r, struct jstr s, struct jv what, int end) {
    if (what.t == JV_LIST) {
        for (size_t i = 0; i < what.u.l->n; i++)
            if (affix(r, s, what.u.l->v[i], end)) return 1;
        return 0;
    }
    struct jstr w = need_str(r, what, end ? "endswith" : "startswith");
    if (w.n > s.n) return 0;
    return !memcmp(end ? s.p + s.n - w.n : s.p, w.p, w.n);
}

struct jv jinja_call_method(struct jrender *r, const struct jmethod *m, const struct jargs *a) {
    struct jstr name = m->name;
    struct jv self = m->self;
#define IS(s) jstr_eq(name, s)
    if (self.t == JV_LOOP) {
        if (a->n < 1) jinja_fail(r, "no items for cycling given");
        return a->v[self.u.lp->index0 % a->n];
    }
    if (self.t == JV_DICT) {
        struct jdict *d = self.u.d;
        if (IS("items")) return items_of(r, self);
        if (IS("keys") || IS("values")) {
            struct jv out = jv_newlist(r, d->n);
            for (size_t i = 0; i < d->n; i++) jv_push(r, &out, IS("keys") ? d->k[i] : d->v[i]);
            return out;
        }
        if (IS("get")) {
            if (a->n < 1) jinja_fail(r, "get expected at least 1 argument");
            struct jv *v = jv_dict_get(r, d, a->v[0]);
            return v ? *v : arg(a, 1, NULL, jv_none());
        }
    }
    if (self.t == JV_LIST) { /* count(x), index(x) */
        if (a->n < 1) jinja_fail(r, "%.*s takes exactly one argument", (int)name.n, name.p);
        int64_t n = 0;
        for (size_t i = 0; i < self.u.l->n; i++) {
            if (!jv_equal(r, self.u.l->v[i], a->v[0])) continue;
            if (IS("index")) return jv_int((int64_t)i);
            n++;
        }
        if (IS("index")) jinja_fail(r, "list.index(x): x not in list");
        return jv_int(n);
    }
    struct jstr s = self.u.s;
    if (IS("startswith") || IS("endswith")) {
        if (a->n < 1) jinja_fail(r, "%.*s takes at least 1 argument", (int)name.n, name.p);
        return jv_bool(affix(r, s, a->v[0], IS("endswith")));
    }
    if (IS("split")) return split(r, s, a, 0);
    if (IS("rsplit")) return split(r, s, a, 1);
    if (IS("strip")) return strip_args(r, s, a, 3);
    if (IS("lstrip")) return strip_args(r, s, a, 1);
    if (IS("rstrip")) return strip_args(r, s, a, 2);
    if (IS("lower")) return case_map(r, s, 'l');
    if (IS("upper")) return case_map(r, s, 'u');
    if (IS("title")) return case_map(r, s, 't');
    if (IS("capitalize")) return case_map(r, s, 'c');
    if (IS("replace")) {
        if (a->n < 2) jinja_fail(r, "replace expected at least 2 arguments");
        struct jv c = arg(a, 2, "count", jv_int(-1));
        return replace(r, s, need_str(r, a->v[0], "replace"), need_str(r, a->v[1], "replace"),
                       need_int(r, c, "replace"));
    }
    if (IS("find") || IS("rfind")) {
        if (a->n < 1) jinja_fail(r, "find takes at least 1 argument");
        struct jstr sub = need_str(r, a->v[0], "find");
        const char *hit = IS("find") ? find_bytes(s.p, s.n, sub.p, sub.n) : rfind_bytes(s.p, s.n, sub.p, sub.n);
        if (IS("rfind") && !sub.n) hit = s.p + s.n;
        return jv_int(hit ? cp_index(s, (size_t)(hit - s.p)) : -1);
    }
    if (IS("count")) {
        if (a->n < 1) jinja_fail(r, "count takes at least 1 argument");
        struct jstr sub = need_str(r, a->v[0], "count");
        if (!sub.n) return jv_int(cp_index(s, s.n) + 1);
        int64_t n = 0;
        for (size_t i = 0; i + sub.n <= s.n;) {
            const char *hit = find_bytes(s.p + i, s.n - i, sub.p, sub.n);
            if (!hit) break;
            n++;
            i = (size_t)(hit - s.p) + sub.n;
        }
        return jv_int(n);
    }
    if (IS("join")) {
        if (a->n < 1) jinja_fail(r, "join takes exactly one argument");
        struct jlist *items = jv_iterate(r, a->v[0]);
        for (size_t i = 0; i < items->n; i++)
            if (items->v[i].t != JV_STR)
                jinja_fail(r, "sequence item %zu: expected str instance, %s found", i, jv_type_name(items->v[i]));
        return join_items(r, items, s);
    }
    if (IS("splitlines")) return splitlines(r, s, jv_truthy(arg(a, 0, "keepends", jv_bool(0))));
    if (IS("isdigit")) return jv_bool(all_cps(s, is_digit));
    if (IS("isalpha")) return jv_bool(all_cps(s, is_alpha));
    if (IS("isalnum")) return jv_bool(all_cps(s, is_alnum));
    if (IS("isspace")) return jv_bool(all_cps(s, is_space_cp));
    if (IS("islower")) return jv_bool(case_test(s, 0));
    if (IS("isupper")) return jv_bool(case_test(s, 1));
#undef IS
    jinja_fail(r, "'%s' object has no method '%.*s'", jv_type_name(self), (int)name.n, name.p);
}
