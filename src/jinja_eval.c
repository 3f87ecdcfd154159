/*
 * jinja_eval.c - renders a parsed Jinja template (jinja.h): values with
 * Python's semantics, scopes, statements and the render entry point.
 *
 * Values are small structs passed by value; strings, lists and dicts live in
 * the render's arena (or point into the template or the variables' JSON),
 * and nothing is freed until the render ends. Errors longjmp to
 * lmoe_jinja_render, which frees the arena, the output and the JSON.
 *
 * Scoping is jinja2's: a for loop's body gets a fresh scope each iteration
 * (so "set" inside a loop does not leak out, which is why templates use
 * namespace()), "if" does not make one, and a macro runs in a scope above
 * the template's top level, which it sees as it is when the macro is called.
 */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "jinja_impl.h"
#include "leanmoe.h"

/* C recursion allowed across expressions, statements and value walks
 * (repr, equality, tojson): deep enough for any real template, shallow
 * enough for an 8 MiB stack under sanitizers. */
#define JINJA_MAX_NEST 1000

struct jscope {
    struct jscope *parent;
    struct jdict vars;
};

/* ---- Failure and memory ------------------------------------------------ */

_Noreturn void jinja_fail(struct jrender *r, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (char *c = msg; *c; c++)
        if (*c == '\n' || *c == '\r') *c = ' '; /* one line, whatever raise_exception says */
    lmoe_errf(r->err, r->errlen, LMOE_ERR_FORMAT, "jinja: line %d: %s", r->line, msg);
    r->code = LMOE_ERR_FORMAT;
    longjmp(r->jmp, 1);
}

void *jinja_alloc(struct jrender *r, size_t n) {
    void *p = jarena_alloc(&r->arena, n);
    if (p) return p;
    if (n >= r->lim.max_memory || r->arena.used + n + ((size_t)64 << 10) > r->lim.max_memory)
        jinja_fail(r, "the template needs more than %zu bytes of memory", r->lim.max_memory);
    lmoe_errf(r->err, r->errlen, LMOE_ERR_NOMEM, "jinja: out of memory");
    r->code = LMOE_ERR_NOMEM;
    longjmp(r->jmp, 1);
}

void jinja_enter(struct jrender *r) {
    if (++r->nest > JINJA_MAX_NEST) jinja_fail(r, "the template nests too deeply");
}

static void step(struct jrender *r) {
    if (++r->steps > r->lim.max_steps)
        jinja_fail(r, "the template ran more than %" PRIu64 " steps", r->lim.max_steps);
}

/* ---- Output buffers ---------------------------------------------------- */

void jbuf_put(struct jrender *r, struct jbuf *b, const char *p, size_t n) {
    if (!n) return;
    if (n > r->lim.max_output || b->n + n > r->lim.max_output)
        jinja_fail(r, "the output exceeds %zu bytes", r->lim.max_output);
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        if (cap < 256) cap = 256;
        char *q;
        if (b->heap) {
            q = realloc(b->p, cap);
            if (!q) {
                lmoe_errf(r->err, r->errlen, LMOE_ERR_NOMEM, "jinja: out of memory");
                r->code = LMOE_ERR_NOMEM;
                longjmp(r->jmp, 1);
            }
        } else {
            q = jinja_alloc(r, cap);
            if (b->n) memcpy(q, b->p, b->n);
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = 0;
}

void jbuf_puts(struct jrender *r, struct jbuf *b, const char *s) { jbuf_put(r, b, s, strlen(s)); }

/* ---- Values ------------------------------------------------------------ */

struct jv jv_undef(struct jstr name) {
    struct jv v = {.t = JV_UNDEF};
    v.u.s = name;
    return v;
}
struct jv jv_none(void) { return (struct jv){.t = JV_NONE}; }
struct jv jv_bool(int b) {
    struct jv v = {.t = JV_BOOL};
    v.u.i = b != 0;
    return v;
}
struct jv jv_int(int64_t i) {
    struct jv v = {.t = JV_INT};
    v.u.i = i;
    return v;
}
struct jv jv_float(double f) {
    struct jv v = {.t = JV_FLOAT};
    v.u.f = f;
    return v;
}
struct jv jv_str(const char *p, size_t n) {
    struct jv v = {.t = JV_STR};
    v.u.s = (struct jstr){p, n};
    return v;
}
struct jv jv_cstr(const char *s) { return jv_str(s, strlen(s)); }

struct jv jv_newlist(struct jrender *r, size_t cap) {
    struct jv v = {.t = JV_LIST};
    v.u.l = jinja_alloc(r, sizeof *v.u.l);
    if (cap) {
        if (cap > r->lim.max_memory / sizeof(struct jv)) jinja_fail(r, "a list is too large");
        v.u.l->v = jinja_alloc(r, cap * sizeof(struct jv));
        v.u.l->cap = cap;
    }
    return v;
}

void jv_push(struct jrender *r, struct jv *list, struct jv item) {
    struct jlist *l = list->u.l;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        if (cap > r->lim.max_memory / sizeof(struct jv)) jinja_fail(r, "a list is too large");
        struct jv *v = jinja_alloc(r, cap * sizeof *v);
        if (l->n) memcpy(v, l->v, l->n * sizeof *v);
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = item;
}

struct jv jv_newdict(struct jrender *r, size_t cap) {
    struct jv v = {.t = JV_DICT};
    v.u.d = jinja_alloc(r, sizeof *v.u.d);
    if (cap) {
        if (cap > r->lim.max_memory / sizeof(struct jv)) jinja_fail(r, "a dict is too large");
        v.u.d->k = jinja_alloc(r, cap * sizeof(struct jv));
        v.u.d->v = jinja_alloc(r, cap * sizeof(struct jv));
        v.u.d->cap = cap;
    }
    return v;
}

static int is_num(struct jv v) { return v.t == JV_BOOL || v.t == JV_INT || v.t == JV_FLOAT; }
static double num(struct jv v) { return v.t == JV_FLOAT ? v.u.f : (double)v.u.i; }

/* Keys compare as Python's dict does: 1, 1.0 and True are one key. */
static int key_eq(struct jv a, struct jv b) {
    if (a.t == JV_STR && b.t == JV_STR) return a.u.s.n == b.u.s.n && !memcmp(a.u.s.p, b.u.s.p, a.u.s.n);
    if (is_num(a) && is_num(b)) return num(a) == num(b);
    if (a.t == JV_NONE && b.t == JV_NONE) return 1;
    if (a.t == JV_LIST && b.t == JV_LIST && a.tuple && b.tuple && a.u.l->n == b.u.l->n) {
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!key_eq(a.u.l->v[i], b.u.l->v[i])) return 0;
        return 1;
    }
    return 0;
}

struct jv *jv_dict_get(struct jrender *r, const struct jdict *d, struct jv k) {
    (void)r;
    for (size_t i = 0; i < d->n; i++)
        if (key_eq(d->k[i], k)) return &d->v[i];
    return NULL;
}

void jv_dict_set(struct jrender *r, struct jdict *d, struct jv k, struct jv v) {
    if (k.t == JV_LIST && !k.tuple) jinja_fail(r, "unhashable type: 'list'");
    if (k.t == JV_DICT || k.t == JV_NS) jinja_fail(r, "unhashable type: 'dict'");
    struct jv *at = jv_dict_get(r, d, k);
    if (at) {
        *at = v;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        struct jv *nk = jinja_alloc(r, cap * sizeof *nk), *nv = jinja_alloc(r, cap * sizeof *nv);
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof *nk);
            memcpy(nv, d->v, d->n * sizeof *nv);
        }
        d->k = nk;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = k;
    d->v[d->n++] = v;
}

const char *jv_type_name(struct jv v) {
    switch (v.t) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return v.tuple ? "tuple" : "list";
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    case JV_MACRO: return "Macro";
    case JV_FUNC: return "builtin_function_or_method";
    case JV_METHOD: return "builtin_function_or_method";
    case JV_LOOP: return "LoopContext";
    }
    return "object";
}

int jv_truthy(struct jv v) {
    switch (v.t) {
    case JV_UNDEF: case JV_NONE: return 0;
    case JV_BOOL: case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0;
    case JV_STR: return v.u.s.n != 0;
    case JV_LIST: return v.u.l->n != 0;
    case JV_DICT: return v.u.d->n != 0;
    default: return 1;
    }
}

static _Noreturn void fail_undef(struct jrender *r, struct jv v) {
    if (v.u.s.n) jinja_fail(r, "'%.*s' is undefined", (int)(v.u.s.n > 60 ? 60 : v.u.s.n), v.u.s.p);
    jinja_fail(r, "a value is undefined");
}

int jv_equal(struct jrender *r, struct jv a, struct jv b) {
    if (is_num(a) && is_num(b)) {
        if (a.t != JV_FLOAT && b.t != JV_FLOAT) return a.u.i == b.u.i;
        return num(a) == num(b);
    }
    if (a.t != b.t) return 0;
    switch (a.t) {
    case JV_UNDEF: case JV_NONE: return 1;
    case JV_STR: return a.u.s.n == b.u.s.n && !memcmp(a.u.s.p, b.u.s.p, a.u.s.n);
    case JV_LIST: {
        if (a.tuple != b.tuple || a.u.l->n != b.u.l->n) return 0;
        jinja_enter(r);
        int eq = 1;
        for (size_t i = 0; eq && i < a.u.l->n; i++) eq = jv_equal(r, a.u.l->v[i], b.u.l->v[i]);
        jinja_leave(r);
        return eq;
    }
    case JV_DICT: {
        if (a.u.d->n != b.u.d->n) return 0;
        jinja_enter(r);
        int eq = 1;
        for (size_t i = 0; eq && i < a.u.d->n; i++) {
            struct jv *w = jv_dict_get(r, b.u.d, a.u.d->k[i]);
            eq = w && jv_equal(r, a.u.d->v[i], *w);
        }
        jinja_leave(r);
        return eq;
    }
    case JV_NS: return a.u.d == b.u.d;
    case JV_MACRO: return a.u.m == b.u.m;
    case JV_FUNC: return a.u.i == b.u.i;
    case JV_LOOP: return a.u.lp == b.u.lp;
    default: return 0;
    }
}

int jv_compare(struct jrender *r, struct jv a, struct jv b) {
    if (a.t == JV_UNDEF) fail_undef(r, a);
    if (b.t == JV_UNDEF) fail_undef(r, b);
    if (is_num(a) && is_num(b)) {
        if (a.t != JV_FLOAT && b.t != JV_FLOAT) return (a.u.i > b.u.i) - (a.u.i < b.u.i);
        double x = num(a), y = num(b);
        return (x > y) - (x < y);
    }
    if (a.t == JV_STR && b.t == JV_STR) {
        size_t n = a.u.s.n < b.u.s.n ? a.u.s.n : b.u.s.n;
        int c = memcmp(a.u.s.p, b.u.s.p, n);
        if (c) return c < 0 ? -1 : 1;
        return (a.u.s.n > b.u.s.n) - (a.u.s.n < b.u.s.n);
    }
    if (a.t == JV_LIST && b.t == JV_LIST && a.tuple == b.tuple) {
        jinja_enter(r);
        size_t n = a.u.l->n < b.u.l->n ? a.u.l->n : b.u.l->n;
        for (size_t i = 0; i < n; i++) {
            if (jv_equal(r, a.u.l->v[i], b.u.l->v[i])) continue;
            int c = jv_compare(r, a.u.l->v[i], b.u.l->v[i]);
            jinja_leave(r);
            return c;
        }
        jinja_leave(r);
        return (a.u.l->n > b.u.l->n) - (a.u.l->n < b.u.l->n);
    }
    jinja_fail(r, "'<' not supported between instances of '%s' and '%s'", jv_type_name(a), jv_type_name(b));
}

/* ---- Printing ---------------------------------------------------------- */

void jinja_float_repr(double f, char *out, size_t n) {
    if (isnan(f)) { snprintf(out, n, "nan"); return; }
    if (isinf(f)) { snprintf(out, n, f < 0 ? "-inf" : "inf"); return; }
    if (f == 0) { snprintf(out, n, signbit(f) ? "-0.0" : "0.0"); return; }
    char buf[48];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, f);
        if (strtod(buf, NULL) == f) break;
    }
    /* buf: [-]d[.ddd]e[+-]xx */
    const char *s = buf;
    int neg = *s == '-';
    if (neg) s++;
    char dig[24];
    int nd = 0;
    for (; *s && *s != 'e'; s++)
        if (*s >= '0' && *s <= '9' && nd < 20) dig[nd++] = *s;
    int exp = *s == 'e' ? atoi(s + 1) : 0;
    while (nd > 1 && dig[nd - 1] == '0') nd--;
    char res[64];
    int k = 0;
    if (neg) res[k++] = '-';
    if (exp >= -4 && exp < 16) {
        if (exp >= 0) {
            for (int i = 0; i <= exp; i++) res[k++] = i < nd ? dig[i] : '0';
            res[k++] = '.';
            if (nd > exp + 1)
                for (int i = exp + 1; i < nd; i++) res[k++] = dig[i];
            else
                res[k++] = '0';
        } else {
            res[k++] = '0';
            res[k++] = '.';
            for (int i = 0; i < -exp - 1; i++) res[k++] = '0';
            for (int i = 0; i < nd; i++) res[k++] = dig[i];
        }
        res[k] = 0;
    } else {
        res[k++] = dig[0];
        if (nd > 1) {
            res[k++] = '.';
            for (int i = 1; i < nd; i++) res[k++] = dig[i];
        }
        snprintf(res + k, sizeof res - (size_t)k, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
    snprintf(out, n, "%s", res);
}

static void repr_str(struct jrender *r, struct jbuf *b, struct jstr s) {
    int has_sq = memchr(s.p, '\'', s.n) != NULL, has_dq = memchr(s.p, '"', s.n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    jbuf_put(r, b, &q, 1);
    for (size_t i = 0; i < s.n;) {
        size_t st = i;
        uint32_t c = jinja_utf8_next(s.p, s.n, &i);
        char esc[12];
        if (c == '\\' || c == (uint32_t)q) {
            esc[0] = '\\';
            esc[1] = (char)c;
            jbuf_put(r, b, esc, 2);
        } else if (c == '\n') {
            jbuf_puts(r, b, "\\n");
        } else if (c == '\r') {
            jbuf_puts(r, b, "\\r");
        } else if (c == '\t') {
            jbuf_puts(r, b, "\\t");
        } else if (c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0xa0) || c == 0xad) {
            snprintf(esc, sizeof esc, "\\x%02x", c);
            jbuf_puts(r, b, esc);
        } else {
            jbuf_put(r, b, s.p + st, i - st);
        }
    }
    jbuf_put(r, b, &q, 1);
}

static void put_scalar(struct jrender *r, struct jbuf *b, struct jv v) {
    char tmp[64];
    switch (v.t) {
    case JV_NONE: jbuf_puts(r, b, "None"); break;
    case JV_BOOL: jbuf_puts(r, b, v.u.i ? "True" : "False"); break;
    case JV_INT: snprintf(tmp, sizeof tmp, "%" PRId64, v.u.i); jbuf_puts(r, b, tmp); break;
    case JV_FLOAT: jinja_float_repr(v.u.f, tmp, sizeof tmp); jbuf_puts(r, b, tmp); break;
    case JV_MACRO:
        jbuf_puts(r, b, "<Macro '");
        jbuf_put(r, b, v.u.m->name.p, v.u.m->name.n);
        jbuf_puts(r, b, "'>");
        break;
    case JV_FUNC: jbuf_puts(r, b, "<built-in function>"); break;
    case JV_METHOD: jbuf_puts(r, b, "<built-in method>"); break;
    case JV_LOOP: jbuf_puts(r, b, "<LoopContext>"); break;
    default: break;
    }
}

void jv_repr(struct jrender *r, struct jbuf *b, struct jv v) {
    jinja_enter(r);
    switch (v.t) {
    case JV_UNDEF: jbuf_puts(r, b, "Undefined"); break;
    case JV_STR: repr_str(r, b, v.u.s); break;
    case JV_LIST:
        jbuf_puts(r, b, v.tuple ? "(" : "[");
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) jbuf_puts(r, b, ", ");
            jv_repr(r, b, v.u.l->v[i]);
        }
        jbuf_puts(r, b, v.tuple ? (v.u.l->n == 1 ? ",)" : ")") : "]");
        break;
    case JV_NS: jbuf_puts(r, b, "<Namespace ");
        /* fall through */
    case JV_DICT:
        jbuf_puts(r, b, "{");
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (i) jbuf_puts(r, b, ", ");
            jv_repr(r, b, v.u.d->k[i]);
            jbuf_puts(r, b, ": ");
            jv_repr(r, b, v.u.d->v[i]);
        }
        jbuf_puts(r, b, v.t == JV_NS ? "}>" : "}");
        break;
    default: put_scalar(r, b, v);
    }
    jinja_leave(r);
}

struct jstr jv_to_str(struct jrender *r, struct jv v) {
    if (v.t == JV_STR) return v.u.s;
    if (v.t == JV_UNDEF) return (struct jstr){"", 0};
    struct jbuf b = {0};
    if (v.t == JV_LIST || v.t == JV_DICT || v.t == JV_NS) jv_repr(r, &b, v);
    else put_scalar(r, &b, v);
    return (struct jstr){b.p ? b.p : "", b.n};
}

/* ---- Containers -------------------------------------------------------- */

static size_t utf8_count(struct jstr s) {
    size_t n = 0;
    for (size_t i = 0; i < s.n;) {
        jinja_utf8_next(s.p, s.n, &i);
        n++;
    }
    return n;
}

/* Byte offsets of each code point of s, plus s.n at the end; NULL when s
 * is ASCII (then offsets are the indices). */
static size_t *cp_offsets(struct jrender *r, struct jstr s, size_t *count) {
    int ascii = 1;
    for (size_t i = 0; i < s.n && ascii; i++) ascii = (unsigned char)s.p[i] < 0x80;
    if (ascii) {
        *count = s.n;
        return NULL;
    }
    size_t n = utf8_count(s), k = 0;
    size_t *off = jinja_alloc(r, (n + 1) * sizeof *off);
    for (size_t i = 0; i < s.n;) {
        off[k++] = i;
        jinja_utf8_next(s.p, s.n, &i);
    }
    off[k] = s.n;
    *count = n;
    return off;
}

size_t jv_length(struct jrender *r, struct jv v) {
    switch (v.t) {
    case JV_UNDEF: return 0;
    case JV_STR: return utf8_count(v.u.s);
    case JV_LIST: return v.u.l->n;
    case JV_DICT: case JV_NS: return v.u.d->n;
    default: jinja_fail(r, "object of type '%s' has no len()", jv_type_name(v));
    }
}

struct jlist *jv_iterate(struct jrender *r, struct jv v) {
    switch (v.t) {
    case JV_UNDEF: return jv_newlist(r, 0).u.l;
    case JV_LIST: return v.u.l;
    case JV_DICT: {
        struct jv l = jv_newlist(r, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++) jv_push(r, &l, v.u.d->k[i]);
        return l.u.l;
    }
    case JV_STR: {
        size_t n;
        size_t *off = cp_offsets(r, v.u.s, &n);
        struct jv l = jv_newlist(r, n);
        for (size_t i = 0; i < n; i++)
            jv_push(r, &l, off ? jv_str(v.u.s.p + off[i], off[i + 1] - off[i]) : jv_str(v.u.s.p + i, 1));
        return l.u.l;
    }
    default: jinja_fail(r, "'%s' object is not iterable", jv_type_name(v));
    }
}

static struct jv method_value(struct jrender *r, struct jv obj, struct jstr name) {
    struct jv v = {.t = JV_METHOD};
    v.u.bm = jinja_alloc(r, sizeof *v.u.bm);
    v.u.bm->self = obj;
    v.u.bm->name = name;
    return v;
}

static struct jv loop_attr(struct jrender *r, struct jv obj, struct jstr name) {
    const struct jloop *lp = obj.u.lp;
    int64_t n = (int64_t)lp->items->n, i = lp->index0;
    if (jstr_eq(name, "index")) return jv_int(i + 1);
    if (jstr_eq(name, "index0")) return jv_int(i);
    if (jstr_eq(name, "revindex")) return jv_int(n - i);
    if (jstr_eq(name, "revindex0")) return jv_int(n - i - 1);
    if (jstr_eq(name, "first")) return jv_bool(i == 0);
    if (jstr_eq(name, "last")) return jv_bool(i == n - 1);
    if (jstr_eq(name, "length")) return jv_int(n);
    if (jstr_eq(name, "depth")) return jv_int(1);
    if (jstr_eq(name, "depth0")) return jv_int(0);
    if (jstr_eq(name, "previtem"))
        return i > 0 ? lp->items->v[i - 1] : jv_undef((struct jstr){"there is no previous item", 25});
    if (jstr_eq(name, "nextitem"))
        return i + 1 < n ? lp->items->v[i + 1] : jv_undef((struct jstr){"there is no next item", 21});
    if (jstr_eq(name, "cycle")) return method_value(r, obj, name);
    return jv_undef(name);
}

struct jv jv_getattr(struct jrender *r, struct jv obj, struct jstr name) {
    if (obj.t == JV_UNDEF) fail_undef(r, obj);
    if (name.n && name.p[0] == '_') return jv_undef(name); /* the sandbox hides these */
    if (obj.t == JV_LOOP) return loop_attr(r, obj, name);
    if (jinja_has_method(obj, name)) return method_value(r, obj, name);
    if (obj.t == JV_DICT || obj.t == JV_NS) {
        struct jv *v = jv_dict_get(r, obj.u.d, jv_str(name.p, name.n));
        if (v) return *v;
    }
    return jv_undef(name);
}

struct jv jv_getitem(struct jrender *r, struct jv obj, struct jv key) {
    if (obj.t == JV_UNDEF) fail_undef(r, obj);
    if ((obj.t == JV_LIST || obj.t == JV_STR) && (key.t == JV_INT || key.t == JV_BOOL)) {
        int64_t i = key.u.i;
        if (obj.t == JV_LIST) {
            int64_t n = (int64_t)obj.u.l->n;
            if (i < 0) i += n;
            return i >= 0 && i < n ? obj.u.l->v[i] : jv_undef((struct jstr){"list index out of range", 23});
        }
        size_t n;
        size_t *off = cp_offsets(r, obj.u.s, &n);
        if (i < 0) i += (int64_t)n;
        if (i < 0 || i >= (int64_t)n) return jv_undef((struct jstr){"string index out of range", 25});
        return off ? jv_str(obj.u.s.p + off[i], off[i + 1] - off[i]) : jv_str(obj.u.s.p + i, 1);
    }
    if (obj.t == JV_DICT || obj.t == JV_NS) {
        struct jv *v = jv_dict_get(r, obj.u.d, key);
        if (v) return *v;
    }
    if (key.t == JV_STR) {
        if (obj.t == JV_DICT || obj.t == JV_NS) {
            if (jinja_has_method(obj, key.u.s)) return method_value(r, obj, key.u.s);
            return jv_undef(key.u.s);
        }
        return jv_getattr(r, obj, key.u.s);
    }
    return jv_undef((struct jstr){"no such item", 12});
}

/* Python's slice.indices() then the items it picks. */
static struct jv slice(struct jrender *r, struct jv obj, struct jv *parts) {
    int64_t v[3];
    int have[3];
    for (int i = 0; i < 3; i++) {
        have[i] = parts[i].t != JV_NONE && parts[i].t != JV_UNDEF;
        if (have[i] && parts[i].t != JV_INT && parts[i].t != JV_BOOL)
            jinja_fail(r, "slice indices must be integers or None");
        v[i] = have[i] ? parts[i].u.i : 0;
    }
    int64_t st = have[2] ? v[2] : 1;
    if (st == 0) jinja_fail(r, "slice step cannot be zero");
    if (st == INT64_MIN) st = -INT64_MAX;
    size_t count;
    size_t *off = NULL;
    if (obj.t == JV_STR) off = cp_offsets(r, obj.u.s, &count);
    else if (obj.t == JV_LIST) count = obj.u.l->n;
    else if (obj.t == JV_UNDEF) fail_undef(r, obj);
    else jinja_fail(r, "'%s' object is not subscriptable", jv_type_name(obj)); /* slices subscript directly */
    int64_t n = (int64_t)count;
    int64_t lo = st < 0 ? -1 : 0, hi = st < 0 ? n - 1 : n;
    int64_t a = have[0] ? v[0] : (st < 0 ? hi : lo), b = have[1] ? v[1] : (st < 0 ? lo : hi);
    if (have[0]) {
        if (a < 0) a = a + n < lo ? lo : a + n;
        else if (a > hi) a = hi;
    }
    if (have[1]) {
        if (b < 0) b = b + n < lo ? lo : b + n;
        else if (b > hi) b = hi;
    }
    if (obj.t == JV_STR) {
        if (st == 1) {
            if (b <= a) return jv_str("", 0);
            size_t x = off ? off[a] : (size_t)a, y = off ? off[b] : (size_t)b;
            return jv_str(obj.u.s.p + x, y - x);
        }
        struct jbuf buf = {0};
        for (int64_t i = a; st > 0 ? i < b : i > b; i += st) {
            size_t x = off ? off[i] : (size_t)i, y = off ? off[i + 1] : (size_t)i + 1;
            jbuf_put(r, &buf, obj.u.s.p + x, y - x);
            if ((st > 0 && i > INT64_MAX - st) || (st < 0 && i < INT64_MIN - st)) break;
        }
        return jv_str(buf.p ? buf.p : "", buf.n);
    }
    struct jv l = jv_newlist(r, 0);
    l.tuple = obj.tuple;
    for (int64_t i = a; st > 0 ? i < b : i > b; i += st) {
        jv_push(r, &l, obj.u.l->v[i]);
        if ((st > 0 && i > INT64_MAX - st) || (st < 0 && i < INT64_MIN - st)) break;
    }
    return l;
}

/* ---- Operators --------------------------------------------------------- */

static _Noreturn void bad_operands(struct jrender *r, const char *op, struct jv a, struct jv b) {
    if (a.t == JV_UNDEF) fail_undef(r, a);
    if (b.t == JV_UNDEF) fail_undef(r, b);
    jinja_fail(r, "unsupported operand type(s) for %s: '%s' and '%s'", op, jv_type_name(a), jv_type_name(b));
}

static struct jv repeat(struct jrender *r, struct jv seq, int64_t times) {
    if (times <= 0) return seq.t == JV_STR ? jv_str("", 0) : jv_newlist(r, 0);
    if (seq.t == JV_STR) {
        if (seq.u.s.n && (uint64_t)times > r->lim.max_memory / seq.u.s.n)
            jinja_fail(r, "a repeated string is too large");
        struct jbuf b = {0};
        for (int64_t i = 0; i < times; i++) jbuf_put(r, &b, seq.u.s.p, seq.u.s.n);
        return jv_str(b.p ? b.p : "", b.n);
    }
    if (seq.u.l->n && (uint64_t)times > r->lim.max_memory / sizeof(struct jv) / seq.u.l->n)
        jinja_fail(r, "a repeated list is too large");
    struct jv l = jv_newlist(r, seq.u.l->n * (size_t)times);
    l.tuple = seq.tuple;
    for (int64_t i = 0; i < times; i++)
        for (size_t j = 0; j < seq.u.l->n; j++) jv_push(r, &l, seq.u.l->v[j]);
    return l;
}

static struct jv ipow(struct jrender *r, int64_t a, int64_t b) {
    if (b < 0) {
        if (a == 0) jinja_fail(r, "0.0 cannot be raised to a negative power");
        return jv_float(pow((double)a, (double)b));
    }
    int64_t res = 1;
    while (b) {
        if (b & 1 && __builtin_mul_overflow(res, a, &res)) jinja_fail(r, "integer overflow");
        b >>= 1;
        if (b && __builtin_mul_overflow(a, a, &a)) jinja_fail(r, "integer overflow");
    }
    return jv_int(res);
}

static struct jv arith(struct jrender *r, int op, struct jv a, struct jv b) {
    static const char *names[] = {"", "+", "-", "*", "/", "//", "%", "**"};
    if (op == JOP_ADD && a.t == JV_STR && b.t == JV_STR) {
        if (!a.u.s.n) return b;
        if (!b.u.s.n) return a;
        size_t n = a.u.s.n + b.u.s.n;
        if (n > r->lim.max_output + r->lim.max_memory) jinja_fail(r, "a string is too large");
        char *p = jinja_alloc(r, n + 1);
        memcpy(p, a.u.s.p, a.u.s.n);
        memcpy(p + a.u.s.n, b.u.s.p, b.u.s.n);
        return jv_str(p, n);
    }
    if (op == JOP_ADD && a.t == JV_LIST && b.t == JV_LIST && a.tuple == b.tuple) {
        struct jv l = jv_newlist(r, a.u.l->n + b.u.l->n);
        l.tuple = a.tuple;
        for (size_t i = 0; i < a.u.l->n; i++) jv_push(r, &l, a.u.l->v[i]);
        for (size_t i = 0; i < b.u.l->n; i++) jv_push(r, &l, b.u.l->v[i]);
        return l;
    }
    if (op == JOP_MUL && (a.t == JV_STR || a.t == JV_LIST) && (b.t == JV_INT || b.t == JV_BOOL))
        return repeat(r, a, b.u.i);
    if (op == JOP_MUL && (b.t == JV_STR || b.t == JV_LIST) && (a.t == JV_INT || a.t == JV_BOOL))
        return repeat(r, b, a.u.i);
    if (op == JOP_MOD && a.t == JV_STR) jinja_fail(r, "string formatting with %% is not supported");
    if (!is_num(a) || !is_num(b)) bad_operands(r, names[op], a, b);
    if (a.t != JV_FLOAT && b.t != JV_FLOAT) {
        int64_t x = a.u.i, y = b.u.i, z;
        switch (op) {
        case JOP_ADD: if (__builtin_add_overflow(x, y, &z)) jinja_fail(r, "integer overflow"); return jv_int(z);
        case JOP_SUB: if (__builtin_sub_overflow(x, y, &z)) jinja_fail(r, "integer overflow"); return jv_int(z);
        case JOP_MUL: if (__builtin_mul_overflow(x, y, &z)) jinja_fail(r, "integer overflow"); return jv_int(z);
        case JOP_DIV:
            if (y == 0) jinja_fail(r, "division by zero");
            return jv_float((double)x / (double)y);
        case JOP_FLOORDIV: case JOP_MOD: {
            if (y == 0) jinja_fail(r, "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1) {
                if (op == JOP_MOD) return jv_int(0);
                jinja_fail(r, "integer overflow");
            }
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) {
                q--;
                m += y;
            }
            return jv_int(op == JOP_MOD ? m : q);
        }
        case JOP_POW: return ipow(r, x, y);
        }
    }
    double x = num(a), y = num(b);
    switch (op) {
    case JOP_ADD: return jv_float(x + y);
    case JOP_SUB: return jv_float(x - y);
    case JOP_MUL: return jv_float(x * y);
    case JOP_DIV:
        if (y == 0) jinja_fail(r, "float division by zero");
        return jv_float(x / y);
    case JOP_FLOORDIV: case JOP_MOD: {
        if (y == 0) jinja_fail(r, "float modulo");
        /* CPython's float_divmod */
        double m = fmod(x, y), d = (x - m) / y;
        if (m != 0) {
            if ((y < 0) != (m < 0)) {
                m += y;
                d -= 1.0;
            }
        } else {
            m = copysign(0.0, y);
        }
        if (op == JOP_MOD) return jv_float(m);
        if (d != 0) {
            double f = floor(d);
            if (d - f > 0.5) f += 1.0;
            d = f;
        } else {
            d = copysign(0.0, x / y);
        }
        return jv_float(d);
    }
    case JOP_POW:
        if (x == 0 && y < 0) jinja_fail(r, "0.0 cannot be raised to a negative power");
        if (x < 0 && y != floor(y)) jinja_fail(r, "a negative number raised to a fractional power");
        return jv_float(pow(x, y));
    }
    jinja_fail(r, "bad operator");
}

static int contains(struct jrender *r, struct jv container, struct jv item) {
    switch (container.t) {
    case JV_UNDEF: return 0;
    case JV_STR:
        if (item.t != JV_STR)
            jinja_fail(r, "'in <string>' requires string as left operand, not %s", jv_type_name(item));
        if (!item.u.s.n) return 1;
        for (size_t i = 0; i + item.u.s.n <= container.u.s.n; i++)
            if (!memcmp(container.u.s.p + i, item.u.s.p, item.u.s.n)) return 1;
        return 0;
    case JV_LIST:
        for (size_t i = 0; i < container.u.l->n; i++)
            if (jv_equal(r, container.u.l->v[i], item)) return 1;
        return 0;
    case JV_DICT: case JV_NS: return jv_dict_get(r, container.u.d, item) != NULL;
    default: jinja_fail(r, "argument of type '%s' is not iterable", jv_type_name(container));
    }
}

static int compare_op(struct jrender *r, int op, struct jv a, struct jv b) {
    switch (op) {
    case JOP_EQ: return jv_equal(r, a, b);
    case JOP_NE: return !jv_equal(r, a, b);
    case JOP_LT: return jv_compare(r, a, b) < 0;
    case JOP_LE: return jv_compare(r, a, b) <= 0;
    case JOP_GT: return jv_compare(r, a, b) > 0;
    case JOP_GE: return jv_compare(r, a, b) >= 0;
    case JOP_IN: return contains(r, b, a);
    case JOP_NOTIN: return !contains(r, b, a);
    }
    return 0;
}

/* ---- Scopes ------------------------------------------------------------ */

static struct jv lookup(struct jrender *r, struct jstr name) {
    struct jv key = jv_str(name.p, name.n);
    for (struct jscope *s = r->scope; s; s = s->parent) {
        struct jv *v = jv_dict_get(r, &s->vars, key);
        if (v) return *v;
    }
    struct jv g = jinja_global(name);
    return g.t == JV_UNDEF ? jv_undef(name) : g;
}

static void assign(struct jrender *r, struct jstr name, struct jv v) {
    jv_dict_set(r, &r->scope->vars, jv_str(name.p, name.n), v);
}

static struct jscope *new_scope(struct jrender *r, struct jscope *parent) {
    struct jscope *s = jinja_alloc(r, sizeof *s);
    s->parent = parent;
    return s;
}

/* ---- Expressions ------------------------------------------------------- */

static struct jv eval(struct jrender *r, const struct jnode *x);

static void eval_args(struct jrender *r, const struct jnode *x, struct jargs *a) {
    a->n = x->n - 1;
    a->v = a->n ? jinja_alloc(r, sizeof *a->v * (size_t)a->n) : NULL;
    a->kw = x->kw ? x->kw + 1 : NULL;
    for (int i = 0; i < a->n; i++) a->v[i] = eval(r, x->kids[i + 1]);
}

struct jv *jargs_get(const struct jargs *a, int pos, const char *name) {
    int n_pos = 0;
    while (n_pos < a->n && (!a->kw || a->kw[n_pos].n == 0)) n_pos++;
    if (pos >= 0 && pos < n_pos) return &a->v[pos];
    if (name && a->kw)
        for (int i = n_pos; i < a->n; i++)
            if (jstr_eq(a->kw[i], name)) return &a->v[i];
    return NULL;
}

static struct jv call(struct jrender *r, struct jv f, const struct jargs *a) {
    switch (f.t) {
    case JV_MACRO: return jinja_call_macro(r, f.u.m, a);
    case JV_FUNC: return jinja_call_func(r, f, a);
    case JV_METHOD: return jinja_call_method(r, f.u.bm, a);
    case JV_UNDEF: fail_undef(r, f);
    default: jinja_fail(r, "'%s' object is not callable", jv_type_name(f));
    }
}

static struct jv eval_inner(struct jrender *r, const struct jnode *x) {
    switch (x->kind) {
    case JN_LIT: return x->lit;
    case JN_NAME: return lookup(r, x->name);
    case JN_LIST: case JN_TUPLE: {
        struct jv l = jv_newlist(r, (size_t)x->n);
        l.tuple = x->kind == JN_TUPLE;
        for (int i = 0; i < x->n; i++) jv_push(r, &l, eval(r, x->kids[i]));
        return l;
    }
    case JN_DICT: {
        struct jv d = jv_newdict(r, (size_t)x->n / 2);
        for (int i = 0; i + 1 < x->n; i += 2) {
            struct jv k = eval(r, x->kids[i]);
            jv_dict_set(r, d.u.d, k, eval(r, x->kids[i + 1]));
        }
        return d;
    }
    case JN_ATTR: return jv_getattr(r, eval(r, x->kids[0]), x->name);
    case JN_ITEM: {
        struct jv obj = eval(r, x->kids[0]);
        return jv_getitem(r, obj, eval(r, x->kids[1]));
    }
    case JN_SLICE: {
        struct jv obj = eval(r, x->kids[0]), parts[3];
        for (int i = 0; i < 3; i++) parts[i] = x->kids[i + 1] ? eval(r, x->kids[i + 1]) : jv_none();
        return slice(r, obj, parts);
    }
    case JN_CALL: {
        struct jv f = eval(r, x->kids[0]);
        struct jargs a;
        eval_args(r, x, &a);
        r->line = x->line;
        return call(r, f, &a);
    }
    case JN_FILTER: case JN_TEST: {
        struct jv v = eval(r, x->kids[0]);
        struct jargs a;
        eval_args(r, x, &a);
        r->line = x->line;
        if (x->kind == JN_FILTER) return jinja_filter(r, x->name, v, &a);
        return jv_bool(jinja_test(r, x->name, v, &a) != (x->op != 0));
    }
    case JN_NOT: return jv_bool(!jv_truthy(eval(r, x->kids[0])));
    case JN_NEG: case JN_POS: {
        struct jv v = eval(r, x->kids[0]);
        if (v.t == JV_UNDEF) fail_undef(r, v);
        if (!is_num(v)) jinja_fail(r, "bad operand type for unary %c: '%s'", x->kind == JN_NEG ? '-' : '+',
                                   jv_type_name(v));
        if (x->kind == JN_POS) return v.t == JV_BOOL ? jv_int(v.u.i) : v;
        if (v.t == JV_FLOAT) return jv_float(-v.u.f);
        if (v.u.i == INT64_MIN) jinja_fail(r, "integer overflow");
        return jv_int(-v.u.i);
    }
    case JN_BIN: {
        struct jv a = eval(r, x->kids[0]), b = eval(r, x->kids[1]);
        r->line = x->line;
        if (x->op == JOP_CONCAT) {
            struct jstr sa = jv_to_str(r, a), sb = jv_to_str(r, b);
            return arith(r, JOP_ADD, jv_str(sa.p, sa.n), jv_str(sb.p, sb.n));
        }
        return arith(r, x->op, a, b);
    }
    case JN_CMP: {
        struct jv a = eval(r, x->kids[0]);
        for (int i = 1; i < x->n; i++) {
            struct jv b = eval(r, x->kids[i]);
            r->line = x->line;
            if (!compare_op(r, x->ops[i - 1], a, b)) return jv_bool(0);
            a = b;
        }
        return jv_bool(1);
    }
    case JN_AND: {
        struct jv a = eval(r, x->kids[0]);
        return jv_truthy(a) ? eval(r, x->kids[1]) : a;
    }
    case JN_OR: {
        struct jv a = eval(r, x->kids[0]);
        return jv_truthy(a) ? a : eval(r, x->kids[1]);
    }
    case JN_COND:
        if (jv_truthy(eval(r, x->kids[1]))) return eval(r, x->kids[0]);
        return x->kids[2] ? eval(r, x->kids[2]) : jv_undef((struct jstr){"the inline if has no else", 26});
    }
    jinja_fail(r, "unexpected node");
}

static struct jv eval(struct jrender *r, const struct jnode *x) {
    step(r);
    jinja_enter(r);
    r->line = x->line;
    struct jv v = eval_inner(r, x);
    jinja_leave(r);
    return v;
}

/* ---- Statements -------------------------------------------------------- */

enum { FLOW_NEXT, FLOW_BREAK, FLOW_CONTINUE };

static int exec(struct jrender *r, const struct jnode *x);

static void output(struct jrender *r, struct jv v) {
    struct jstr s = jv_to_str(r, v);
    jbuf_put(r, r->out, s.p, s.n);
}

/* Binds a for or set target: a name, or names unpacked from an iterable. */
static void bind(struct jrender *r, const struct jnode *target, struct jv v) {
    if (target->kind == JN_NAME) {
        assign(r, target->name, v);
        return;
    }
    struct jlist *items = jv_iterate(r, v);
    if (items->n != (size_t)target->n)
        jinja_fail(r, "cannot unpack %zu values into %d names", items->n, target->n);
    for (int i = 0; i < target->n; i++) assign(r, target->kids[i]->name, items->v[i]);
}

/* Runs body with output captured; returns the text. */
static struct jstr capture(struct jrender *r, const struct jnode *body) {
    struct jbuf buf = {0}, *saved = r->out;
    r->out = &buf;
    exec(r, body);
    r->out = saved;
    return (struct jstr){buf.p ? buf.p : "", buf.n};
}

static int exec_for(struct jrender *r, const struct jnode *x) {
    struct jlist *items = jv_iterate(r, eval(r, x->kids[1]));
    struct jscope *outer = r->scope;
    if (x->kids[2]) { /* for x in seq if cond: filter first, so loop.* count what remains */
        struct jv kept = jv_newlist(r, 0);
        r->scope = new_scope(r, outer);
        for (size_t i = 0; i < items->n; i++) {
            r->scope->vars.n = 0;
            bind(r, x->kids[0], items->v[i]);
            if (jv_truthy(eval(r, x->kids[2]))) jv_push(r, &kept, items->v[i]);
        }
        r->scope = outer;
        items = kept.u.l;
    }
    struct jloop *lp = jinja_alloc(r, sizeof *lp);
    lp->items = items;
    struct jv loopv = {.t = JV_LOOP};
    loopv.u.lp = lp;
    struct jscope *s = new_scope(r, outer);
    for (size_t i = 0; i < items->n; i++) {
        step(r);
        s->vars.n = 0; /* a fresh scope each iteration, reusing its storage */
        r->scope = s;
        lp->index0 = (int64_t)i;
        assign(r, (struct jstr){"loop", 4}, loopv);
        bind(r, x->kids[0], items->v[i]);
        int flow = exec(r, x->kids[3]);
        r->scope = outer;
        if (flow == FLOW_BREAK) break;
    }
    r->scope = outer;
    if (items->n == 0 && x->kids[4]) exec(r, x->kids[4]);
    return FLOW_NEXT;
}

static void exec_set(struct jrender *r, const struct jnode *target, struct jv v) {
    if (target->kind != JN_ATTR) {
        bind(r, target, v);
        return;
    }
    struct jv ns = lookup(r, target->kids[0]->name);
    if (ns.t != JV_NS) jinja_fail(r, "cannot assign attribute on non-namespace object");
    if (target->name.n && target->name.p[0] == '_')
        jinja_fail(r, "namespaces cannot store underscore-prefixed attributes");
    jv_dict_set(r, ns.u.d, jv_str(target->name.p, target->name.n), v);
}

static int exec_inner(struct jrender *r, const struct jnode *x) {
    switch (x->kind) {
    case JN_BODY:
        for (int i = 0; i < x->n; i++) {
            int flow = exec(r, x->kids[i]);
            if (flow != FLOW_NEXT) return flow;
        }
        return FLOW_NEXT;
    case JN_TEXT: jbuf_put(r, r->out, x->name.p, x->name.n); return FLOW_NEXT;
    case JN_OUTPUT: output(r, eval(r, x->kids[0])); return FLOW_NEXT;
    case JN_IF:
        if (jv_truthy(eval(r, x->kids[0]))) return exec(r, x->kids[1]);
        return x->kids[2] ? exec(r, x->kids[2]) : FLOW_NEXT;
    case JN_FOR: return exec_for(r, x);
    case JN_SET: exec_set(r, x->kids[0], eval(r, x->kids[1])); return FLOW_NEXT;
    case JN_SETBLOCK: {
        struct jstr s = capture(r, x->kids[1]);
        exec_set(r, x->kids[0], jv_str(s.p, s.n));
        return FLOW_NEXT;
    }
    case JN_MACRO: {
        struct jv m = {.t = JV_MACRO};
        m.u.m = x;
        assign(r, x->name, m);
        return FLOW_NEXT;
    }
    case JN_BREAK: return FLOW_BREAK;
    case JN_CONTINUE: return FLOW_CONTINUE;
    }
    jinja_fail(r, "unexpected statement");
}

static int exec(struct jrender *r, const struct jnode *x) {
    step(r);
    jinja_enter(r);
    r->line = x->line;
    int flow = exec_inner(r, x);
    jinja_leave(r);
    return flow;
}

struct jv jinja_call_macro(struct jrender *r, const struct jnode *m, const struct jargs *a) {
    if (r->macro_depth >= r->lim.max_depth)
        jinja_fail(r, "macro calls nest deeper than %d", r->lim.max_depth);
    int n_params = (m->n - 1) / 2, n_pos = 0;
    while (n_pos < a->n && (!a->kw || a->kw[n_pos].n == 0)) n_pos++;
    if (n_pos > n_params)
        jinja_fail(r, "macro '%.*s' takes not more than %d argument(s)", (int)m->name.n, m->name.p, n_params);
    for (int i = n_pos; i < a->n; i++) {
        int known = 0;
        for (int j = 0; j < n_params && !known; j++) {
            struct jstr pn = m->kids[1 + 2 * j]->name;
            known = pn.n == a->kw[i].n && !memcmp(pn.p, a->kw[i].p, pn.n);
        }
        if (!known)
            jinja_fail(r, "macro '%.*s' has no parameter '%.*s'", (int)m->name.n, m->name.p, (int)a->kw[i].n,
                       a->kw[i].p);
    }
    struct jscope *saved = r->scope;
    r->scope = new_scope(r, r->global);
    for (int j = 0; j < n_params; j++) {
        const struct jnode *param = m->kids[1 + 2 * j], *def = m->kids[2 + 2 * j];
        struct jv v;
        if (j < n_pos) {
            v = a->v[j];
        } else {
            const struct jv *kv = NULL;
            for (int i = n_pos; i < a->n && !kv; i++)
                if (a->kw[i].n == param->name.n && !memcmp(a->kw[i].p, param->name.p, param->name.n))
                    kv = &a->v[i];
            v = kv ? *kv : def ? eval(r, def) : jv_undef(param->name);
        }
        assign(r, param->name, v);
    }
    r->macro_depth++;
    struct jstr s = capture(r, m->kids[0]);
    r->macro_depth--;
    r->scope = saved;
    return jv_str(s.p, s.n);
}

/* ---- Variables from JSON ----------------------------------------------- */

static struct jv from_json(struct jrender *r, json_t *j) {
    switch (json_typeof(j)) {
    case JSON_NULL: return jv_none();
    case JSON_TRUE: return jv_bool(1);
    case JSON_FALSE: return jv_bool(0);
    case JSON_INTEGER: return jv_int((int64_t)json_integer_value(j));
    case JSON_REAL: return jv_float(json_real_value(j));
    case JSON_STRING: return jv_str(json_string_value(j), json_string_length(j));
    case JSON_ARRAY: {
        jinja_enter(r);
        struct jv l = jv_newlist(r, json_array_size(j));
        for (size_t i = 0; i < json_array_size(j); i++) jv_push(r, &l, from_json(r, json_array_get(j, i)));
        jinja_leave(r);
        return l;
    }
    case JSON_OBJECT: {
        jinja_enter(r);
        struct jv d = jv_newdict(r, json_object_size(j));
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) jv_dict_set(r, d.u.d, jv_cstr(k), from_json(r, v));
        jinja_leave(r);
        return d;
    }
    }
    return jv_none();
}

/* ---- Entry point ------------------------------------------------------- */

struct jrender_box {
    struct jrender r;
    json_t *vars;
};

int lmoe_jinja_render(const struct lmoe_jinja *t, const char *vars_json, size_t vars_len,
                      const struct lmoe_jinja_limits *lim, char **out, size_t *out_len, char *err,
                      size_t errlen) {
    *out = NULL;
    if (out_len) *out_len = 0;
    struct jrender_box *box = calloc(1, sizeof *box);
    if (!box) return lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "jinja: out of memory");
    struct jrender *r = &box->r;
    r->lim.max_output = lim && lim->max_output ? lim->max_output : LMOE_JINJA_MAX_OUTPUT;
    r->lim.max_memory = lim && lim->max_memory ? lim->max_memory : LMOE_JINJA_MAX_MEMORY;
    r->lim.max_steps = lim && lim->max_steps ? lim->max_steps : LMOE_JINJA_MAX_STEPS;
    r->lim.max_depth = lim && lim->max_depth ? lim->max_depth : LMOE_JINJA_MAX_DEPTH;
    r->arena.limit = r->lim.max_memory;
    r->err = err;
    r->errlen = errlen;
    r->main.heap = 1;
    r->out = &r->main;
    if (vars_json) {
        json_error_t je;
        box->vars = json_loadb(vars_json, vars_len, 0, &je);
        if (!box->vars || !json_is_object(box->vars)) {
            int rc = lmoe_errf(err, errlen, LMOE_ERR_ARG, "jinja: variables: %s",
                               box->vars ? "not a JSON object" : je.text);
            json_decref(box->vars);
            free(box);
            return rc;
        }
    }
    if (setjmp(r->jmp)) {
        int code = r->code;
        free(r->main.p);
        jarena_free(&r->arena);
        json_decref(box->vars);
        free(box);
        return code;
    }
    r->global = new_scope(r, NULL);
    r->scope = r->global;
    if (box->vars) {
        const char *k;
        json_t *v;
        json_object_foreach(box->vars, k, v) assign(r, (struct jstr){k, strlen(k)}, from_json(r, v));
    }
    exec(r, t->root);
    if (!r->main.p) {
        r->main.p = malloc(1);
        if (!r->main.p) {
            jarena_free(&r->arena);
            json_decref(box->vars);
            free(box);
            return lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "jinja: out of memory");
        }
        r->main.p[0] = 0;
    }
    *out = r->main.p;
    if (out_len) *out_len = r->main.n;
    jarena_free(&r->arena);
    json_decref(box->vars);
    free(box);
    return 0;
}
